//! Faults from storage, through a FUSE filesystem of our own: I/O errors on demand (EIO
//! must reach the caller on every backend while healthy files keep working) and injected
//! latency (the Linux backend's buffered path must not block the submitting thread;
//! abandoned slow operations free everything once they finish).
#![cfg(target_os = "linux")]

mod util;

use std::{
    ffi::OsStr,
    future::Future,
    path::Path,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::Context as Cx,
    time::{Duration, Instant, UNIX_EPOCH},
};

use caio::{Context, File, Implementation, OpenOptions};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use util::{backends, block_on, pattern};

const GOOD: u64 = 2;
const BAD: u64 = 3;
const SLOW: u64 = 4;
/// Slow as "slow", but read through the page cache: a read the kernel queues on a worker
/// of its own, where a cancellation can find it before it starts.
const CACHED: u64 = 5;
const NAMES: [(&str, u64); 4] = [
    ("good", GOOD),
    ("bad", BAD),
    ("slow", SLOW),
    ("cached", CACHED),
];
const SIZE: usize = 1 << 20;

#[derive(Default)]
struct Control {
    /// Reads, writes and fsyncs of "bad" fail with EIO.
    fail: AtomicBool,
    /// Every read and write of "slow" sleeps this long first.
    delay_ms: AtomicU64,
    /// Reads of "slow" wait for each other: one at a time, as on a device of one queue.
    serial: AtomicBool,
    faults: AtomicU64,
    /// Reads of "slow" that reached the filesystem.
    slow_reads: AtomicU64,
}

struct FaultFs {
    ctl: Arc<Control>,
    /// Held through a serial read's delay.
    device: Mutex<()>,
    files: Vec<Mutex<Vec<u8>>>, // by inode - 2
}

fn attr(ino: u64, size: u64) -> FileAttr {
    let dir = ino == 1;
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o755 } else { 0o644 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl FaultFs {
    fn file(&self, ino: INodeNo) -> Option<&Mutex<Vec<u8>>> {
        let i = u64::from(ino);
        (GOOD..=CACHED)
            .contains(&i)
            .then(|| &self.files[(i - GOOD) as usize])
    }

    /// The fault for an operation on `ino`, after any injected delay.
    fn fault(&self, ino: INodeNo) -> Option<Errno> {
        match u64::from(ino) {
            BAD if self.ctl.fail.load(Ordering::SeqCst) => {
                self.ctl.faults.fetch_add(1, Ordering::SeqCst);
                Some(Errno::EIO)
            }
            SLOW | CACHED => {
                let delay = Duration::from_millis(self.ctl.delay_ms.load(Ordering::SeqCst));
                let _one = self
                    .ctl
                    .serial
                    .load(Ordering::SeqCst)
                    .then(|| self.device.lock().unwrap_or_else(|p| p.into_inner()));
                std::thread::sleep(delay);
                None
            }
            _ => None,
        }
    }
}

const TTL: Duration = Duration::ZERO;

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // O_DIRECT reads submitted through kernel AIO stay asynchronous: io_submit returns
        // once the request is queued to us.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        // And io_submit does not wait for room: the kernel holds back (and blocks the
        // submitter) past this many requests to us at once.
        let _ = config.set_max_background(256);
        let _ = config.set_congestion_threshold(192);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match NAMES
            .iter()
            .find(|(n, _)| u64::from(parent) == 1 && OsStr::new(n) == name)
        {
            Some(&(_, ino)) => {
                let size = self.file(INodeNo(ino)).unwrap().lock().unwrap().len() as u64;
                reply.entry(&TTL, &attr(ino, size), Generation(0));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match (u64::from(ino), self.file(ino)) {
            (1, _) => reply.attr(&TTL, &attr(1, 0)),
            (i, Some(f)) => reply.attr(&TTL, &attr(i, f.lock().unwrap().len() as u64)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Bypass the page cache: every read and write reaches us (but for "cached").
        let flags = if u64::from(ino) == CACHED {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_DIRECT_IO
        };
        reply.opened(FileHandle(0), flags);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if matches!(u64::from(ino), SLOW | CACHED) {
            self.ctl.slow_reads.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(e) = self.fault(ino) {
            return reply.error(e);
        }
        let Some(f) = self.file(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let data = f.lock().unwrap();
        let start = (offset as usize).min(data.len());
        let end = (start + size as usize).min(data.len());
        reply.data(&data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _wflags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Some(e) = self.fault(ino) {
            return reply.error(e);
        }
        let Some(f) = self.file(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut data = f.lock().unwrap();
        let end = offset as usize + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(bytes);
        reply.written(bytes.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fault(ino) {
            Some(e) => reply.error(e),
            None => reply.ok(),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != 1 {
            return reply.error(Errno::ENOENT);
        }
        let mut entries = vec![
            (1, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
        ];
        entries.extend(NAMES.iter().map(|&(n, i)| (i, FileType::RegularFile, n)));
        for (k, (i, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), (k + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A mounted FaultFs, unmounted on drop.
struct Mounted {
    ctl: Arc<Control>,
    dir: tempfile::TempDir,
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    fn new() -> Option<Mounted> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
            eprintln!("SKIP: mounting FUSE needs root and /dev/fuse");
            return None;
        }
        let ctl = Arc::new(Control::default());
        let fs = FaultFs {
            ctl: Arc::clone(&ctl),
            device: Mutex::new(()),
            files: (0..4).map(|k| Mutex::new(pattern(SIZE, k))).collect(),
        };
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut cfg = fuser::Config::default();
        cfg.mount_options
            .push(MountOption::FSName("caio-faultfs".into()));
        cfg.n_threads = Some(8);
        match fuser::spawn_mount(fs, dir.path(), &cfg) {
            Ok(s) => Some(Mounted {
                ctl,
                dir,
                session: Some(s),
            }),
            Err(e) => {
                eprintln!("SKIP: cannot mount FUSE here: {e}");
                None
            }
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Mounted {
    /// Always unmounts, on failure too: if the filesystem is still busy (a test failed
    /// with files open), it is detached rather than left behind dead.
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(self.dir.path())
                    .status();
            }
        }
    }
}

fn open(c: &Context, p: &Path) -> File {
    block_on(
        OpenOptions::new()
            .read(true)
            .write(true)
            .context(c.clone())
            .open(p),
    )
    .unwrap()
}

#[test]
fn io_errors_reach_the_caller_and_spare_healthy_files() {
    let Some(m) = Mounted::new() else { return };
    for i in backends() {
        let c = Context::builder()
            .implementation(i)
            .max_requests(16)
            .build()
            .unwrap();
        let (good, bad) = (open(&c, &m.path("good")), open(&c, &m.path("bad")));
        m.ctl.fail.store(true, Ordering::SeqCst);
        let faults_before = m.ctl.faults.load(Ordering::SeqCst);
        block_on(async {
            // Bad and good operations in flight together.
            let bad_ops: Vec<Pin<Box<dyn Future<Output = std::io::Result<usize>> + Send>>> = vec![
                Box::pin(futures::FutureExt::map(bad.read_at(4096, 0), |r| {
                    r.map(|b| b.len())
                })),
                Box::pin(bad.write_at(vec![1u8; 4096], 8192)),
                Box::pin(futures::FutureExt::map(bad.sync_all(), |r| r.map(|()| 0))),
            ];
            let good_reads: Vec<_> = (0..8u64).map(|k| good.read_at(4096, k * 4096)).collect();
            let (bad_results, good_results) = futures::join!(
                futures::future::join_all(bad_ops),
                futures::future::join_all(good_reads)
            );
            for r in bad_results {
                assert_eq!(
                    r.unwrap_err().raw_os_error(),
                    Some(libc::EIO),
                    "{i}: the fault reaches the caller"
                );
            }
            let want = pattern(SIZE, 0);
            for (k, r) in good_results.into_iter().enumerate() {
                assert_eq!(
                    &r.unwrap()[..],
                    &want[k * 4096..(k + 1) * 4096],
                    "{i}: healthy file"
                );
            }
        });
        assert!(
            m.ctl.faults.load(Ordering::SeqCst) >= faults_before + 3,
            "{i}: faults were injected"
        );
        // Healed: the same context and file work again.
        m.ctl.fail.store(false, Ordering::SeqCst);
        assert_eq!(
            &block_on(bad.read_at(4, 0)).unwrap()[..],
            &pattern(SIZE, 1)[..4],
            "{i}: after the fault"
        );
        println!(
            "{i}: {} faults injected and reported",
            m.ctl.faults.load(Ordering::SeqCst) - faults_before
        );
        assert!(
            c.wait_idle_timeout(Duration::from_secs(10)),
            "{i}: idle before unmount"
        );
    }
}

#[test]
fn slow_storage_blocks_no_submitter_and_abandoned_operations_are_freed() {
    let Some(m) = Mounted::new() else { return };
    let delay = Duration::from_millis(400);
    m.ctl
        .delay_ms
        .store(delay.as_millis() as u64, Ordering::SeqCst);
    let impls: Vec<_> = backends()
        .into_iter()
        .filter(|&i| i != Implementation::Blocking)
        .collect();
    for i in impls {
        let c = Context::builder()
            .implementation(i)
            .max_requests(8)
            .build()
            .unwrap();
        let slow = open(&c, &m.path("slow"));
        // Submitting must not wait for the storage: every poll returns at once.
        let waker = futures::task::noop_waker();
        let mut cx = Cx::from_waker(&waker);
        let mut reads: Vec<_> = (0..8u64)
            .map(|k| Box::pin(slow.read_at(4096, k * 4096)))
            .collect();
        for _ in 0..2 {
            for r in reads.iter_mut() {
                let t = Instant::now();
                assert!(
                    r.as_mut().poll(&mut cx).is_pending(),
                    "{i}: a slow read finished at once"
                );
                assert!(
                    t.elapsed() < delay / 4,
                    "{i}: a poll blocked for {:?}",
                    t.elapsed()
                );
            }
        }
        assert_eq!(c.in_flight(), 8, "{i}: all eight are under way");
        // Abandon them all; they finish on their own and give everything back.
        drop(reads);
        let t = Instant::now();
        while c.in_flight() > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{i}: abandoned reads never finished"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // (Those not yet taken up by a worker when dropped were never started, by contract;
        // those started ran to the end.)
        // The slots came back: a full window works again, at the storage's slow pace.
        let want = pattern(SIZE, 2);
        let again: Vec<_> = (0..8u64).map(|k| slow.read_at(4096, k * 4096)).collect();
        let t = Instant::now();
        for (k, r) in block_on(futures::future::join_all(again))
            .into_iter()
            .enumerate()
        {
            assert_eq!(&r.unwrap()[..], &want[k * 4096..(k + 1) * 4096], "{i}");
        }
        assert!(t.elapsed() >= delay, "{i}: the storage really was slow");
        println!("{i}: 8 reads of {delay:?} each submitted without blocking, abandoned, freed");
        assert!(
            c.wait_idle_timeout(Duration::from_secs(10)),
            "{i}: idle before unmount"
        );
    }
    m.ctl.delay_ms.store(0, Ordering::SeqCst);
}

/// An abort handle on a read queued behind a slow one, with one worker (the kernel's for
/// uring, the pool's for the others): the read never reaches the filesystem and resolves
/// ECANCELED; on uring the kernel cancels it (`IORING_OP_ASYNC_CANCEL` takes it off the
/// kernel worker's queue) while the slow read is still under way.
#[test]
fn an_aborted_read_queued_behind_a_slow_one_never_runs() {
    let want = pattern(SIZE, CACHED - GOOD);
    behind_a_slow_read(|m, i, c, slow| {
        let before = m.ctl.slow_reads.load(Ordering::SeqCst);
        // Far apart: the first one's read-ahead does not cover the second.
        let far = SIZE as u64 / 2;
        let (first, second) = (slow.read_at(4096, 0), slow.read_at(4096, far));
        let abort = second.abort_handle();
        // Both on one thread's `block_on` (see `behind_a_slow_read`).
        let c2 = c.clone();
        let both = std::thread::spawn(move || {
            let first = async {
                let r = first.await;
                (r, Instant::now())
            };
            let second = async {
                let r = second.await;
                (r, Instant::now())
            };
            c2.block_on(futures::future::join(first, second))
        });
        let t = Instant::now();
        while !queued_behind(&m.ctl, i, c, before) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{i}: the reads never got under way"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Time for the second to reach the kernel worker's queue (or the pool's).
        std::thread::sleep(Duration::from_millis(100));
        let asked = Instant::now();
        abort.abort();
        let ((first, first_at), (second, second_at)) = both.join().unwrap();
        assert_eq!(
            second.map(|b| b.len()).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ECANCELED)),
            "{i}"
        );
        if i == Implementation::Uring {
            assert!(
                second_at < first_at,
                "{i}: the aborted read waited for the slow one before it resolved"
            );
        }
        assert!(
            first.unwrap()[..] == want[..4096],
            "{i}: the slow read's bytes"
        );
        assert_eq!(
            m.ctl.slow_reads.load(Ordering::SeqCst) - before,
            1,
            "{i}: the aborted read reached the filesystem"
        );
        let s = c.stats();
        assert!(s.cancels_asked >= 1 && s.cancels_won >= 1, "{i}: {s}");
        println!(
            "{i}: the aborted read resolved ECANCELED {:?} after the abort, the slow read {:?} \
             after it",
            second_at - asked,
            first_at - asked
        );
    });
}

/// Whether the two reads of a test below are under way: the first one reached the
/// filesystem, and on uring both came back from their `RWF_NOWAIT` attempt (sent on to
/// the kernel's workers).
fn queued_behind(ctl: &Control, i: Implementation, c: &Context, before: u64) -> bool {
    ctl.slow_reads.load(Ordering::SeqCst) > before
        && (i != Implementation::Uring || c.stats().nowait_retries >= 2)
}

/// Yields to the executor once, a millisecond later.
async fn yield_now() {
    std::thread::sleep(Duration::from_millis(1));
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Runs `test` on each backend but `blocking`, with a context of one worker (the pool's,
/// and the kernel's for io_uring), and the FUSE file "cached" open on it, whose reads take
/// 1.5 s each. The tests run both their reads under `Context::block_on` on one thread: on
/// io_uring that thread alone takes its ring's completions, so it is the one that sends
/// both reads on to the kernel's workers, its own (each submitting thread has workers of
/// its own, so a read sent on from another thread, the reaper say, would not queue behind
/// the first).
fn behind_a_slow_read(test: impl Fn(&Mounted, Implementation, &Context, File)) {
    let Some(m) = Mounted::new() else { return };
    m.ctl.delay_ms.store(1500, Ordering::SeqCst);
    for i in backends()
        .into_iter()
        .filter(|&i| i != Implementation::Blocking)
    {
        let c = Context::builder()
            .implementation(i)
            .threads(1)
            .max_requests(8)
            .build()
            .unwrap();
        let slow = open(&c, &m.path("cached"));
        test(&m, i, &c, slow);
    }
    m.ctl.delay_ms.store(0, Ordering::SeqCst);
}

/// As `an_aborted_read_queued_behind_a_slow_one_never_runs`, with the read's future
/// dropped instead of aborted: a dropped operation in flight is cancelled too, and on
/// uring it leaves flight (its slot back, ECANCELED counted) while the slow read is still
/// under way.
#[test]
fn a_dropped_read_queued_behind_a_slow_one_never_runs() {
    behind_a_slow_read(|m, i, c, slow| {
        let before = m.ctl.slow_reads.load(Ordering::SeqCst);
        let (ctl, c2) = (Arc::clone(&m.ctl), c.clone());
        // Both on one thread's `block_on` (see `behind_a_slow_read`).
        let t = std::thread::spawn(move || {
            let c = c2.clone();
            c2.block_on(async move {
                let mut first = Box::pin(slow.read_at(4096, 0));
                let mut second = Box::pin(slow.read_at(4096, SIZE as u64 / 2));
                futures::future::poll_fn(|cx| {
                    assert!(first.as_mut().poll(cx).is_pending());
                    assert!(second.as_mut().poll(cx).is_pending());
                    std::task::Poll::Ready(())
                })
                .await;
                let since = Instant::now();
                while !queued_behind(&ctl, i, &c, before) {
                    assert!(
                        since.elapsed() < Duration::from_secs(10),
                        "{i}: never under way"
                    );
                    yield_now().await;
                }
                // Time for the second to reach the kernel worker's queue (or the pool's).
                std::thread::sleep(Duration::from_millis(100));
                drop(second);
                let dropped = Instant::now();
                while c.stats().cancels_won == 0 && dropped.elapsed() < Duration::from_secs(10) {
                    yield_now().await;
                }
                let (won_after, in_flight) = (dropped.elapsed(), c.in_flight());
                (first.await, won_after, in_flight)
            })
        });
        let (first, won_after, in_flight) = t.join().unwrap();
        first.unwrap();
        let s = c.stats();
        assert!(s.cancels_asked >= 1 && s.cancels_won >= 1, "{i}: {s}");
        if i == Implementation::Uring {
            assert_eq!(
                in_flight, 1,
                "{i}: the dropped read left flight only after the slow one"
            );
        }
        assert_eq!(
            m.ctl.slow_reads.load(Ordering::SeqCst) - before,
            1,
            "{i}: the dropped read reached the filesystem"
        );
        assert!(c.wait_idle_timeout(Duration::from_secs(10)), "{i}");
        println!("{i}: the dropped read was cancelled {won_after:?} after the drop");
    });
}

#[test]
fn slow_storage_keeps_several_writes_behind() {
    // With 200 ms per write, a writer that really writes behind holds several writes at
    // once while the producer goes on.
    let Some(m) = Mounted::new() else { return };
    m.ctl.delay_ms.store(200, Ordering::SeqCst);
    for i in backends()
        .into_iter()
        .filter(|&i| i != Implementation::Blocking)
    {
        let c = Context::builder().implementation(i).build().unwrap();
        let f = open(&c, &m.path("slow"));
        let mut w = f.writer();
        let chunk = vec![7u8; caio::fs::WRITE_CHUNK];
        let mut max_in_flight = 0;
        block_on(async {
            for _ in 0..4 {
                futures::AsyncWriteExt::write_all(&mut w, &chunk)
                    .await
                    .unwrap();
                max_in_flight = max_in_flight.max(w.in_flight());
            }
            futures::AsyncWriteExt::close(&mut w).await.unwrap();
        });
        assert!(
            max_in_flight >= 2,
            "{i}: write-behind kept only {max_in_flight} in flight"
        );
        assert!(
            block_on(f.read_at(4 * caio::fs::WRITE_CHUNK, 0))
                .unwrap()
                .iter()
                .all(|&b| b == 7),
            "{i}"
        );
        println!("{i}: {max_in_flight} writes in flight behind the producer");
        assert!(
            c.wait_idle_timeout(Duration::from_secs(10)),
            "{i}: idle before unmount"
        );
    }
    m.ctl.delay_ms.store(0, Ordering::SeqCst);
}

#[test]
fn fuse_reads_under_the_linux_backend_match() {
    // Buffered reads on a FUSE file: the kernel refuses RWF_NOWAIT there and the backend
    // must hand them to its pool, with the right data.
    let Some(m) = Mounted::new() else { return };
    if !Implementation::Linux.is_available() {
        eprintln!("SKIP: no kernel AIO");
        return;
    }
    let c = Context::builder()
        .implementation(Implementation::Linux)
        .build()
        .unwrap();
    let f = open(&c, &m.path("good"));
    let all = block_on(f.read_to_vec()).unwrap();
    assert!(all == pattern(SIZE, 0));
    assert!(
        c.wait_idle_timeout(Duration::from_secs(10)),
        "idle before unmount"
    );
}

#[cfg(feature = "tokio")]
const DEPTH_CHILD: &str = "CAIO_FUSE_DEPTH_CHILD";

/// Under tokio at queue depth 32 (32 tasks, each reading in turn), the few reads the tasks
/// send in one scheduler pass are held until a batch goes in one `io_submit`: at least 8
/// on average. The file is served one read at a time, a millisecond each, so reads
/// complete one by one and deep in flight, however fast the machine runs the code; each
/// completion alone would otherwise be one `io_submit`.
#[cfg(feature = "tokio")]
#[test]
fn under_tokio_at_depth_each_io_submit_carries_a_batch() {
    if std::env::var_os(DEPTH_CHILD).is_some() {
        return;
    }
    if !Implementation::Linux.is_available() {
        eprintln!("SKIP: no kernel AIO");
        return;
    }
    if !util::has_strace() {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    for flavor in ["mt", "ct"] {
        let log = out_dir.path().join(flavor);
        // Only io_submit stops the child (--seccomp-bpf): the rest runs as it would.
        let mut cmd = util::test_command(
            "child_reads_at_depth",
            &[
                "strace",
                "-f",
                "-qq",
                "--seccomp-bpf",
                "-e",
                "trace=io_submit",
                "-o",
                log.to_str().unwrap(),
            ],
        );
        cmd.env(DEPTH_CHILD, flavor);
        let out = util::output_within(cmd, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.contains("CHILD skip") {
            eprintln!("SKIP: {stdout}");
            return;
        }
        let reads: usize = util::child_field(&stdout, "reads");
        // Each call: io_submit(ctx, n, [...]) = n.
        let text = std::fs::read_to_string(&log).unwrap();
        let sizes: Vec<usize> = util::strace_calls(&text)
            .into_iter()
            .filter(|(_, call)| call.contains("IOCB_CMD_PREAD"))
            .filter_map(|(_, call)| call.rsplit_once("= ")?.1.trim().parse().ok())
            .collect();
        let (calls, sent) = (sizes.len(), sizes.iter().sum::<usize>());
        assert_eq!(sent, reads, "{flavor}: every read went through io_submit");
        // The first 32 reads bring the depth up to 32: the batches are counted from there.
        let ramp = sizes
            .iter()
            .scan(0, |total, n| {
                *total += n;
                Some(*total)
            })
            .position(|total| total >= 32)
            .map_or(sizes.len(), |i| i + 1);
        let deep = &sizes[ramp..];
        let per_call = deep.iter().sum::<usize>() as f64 / deep.len().max(1) as f64;
        println!(
            "tokio {flavor}: {reads} reads in {calls} io_submit calls ({sizes:?}); at depth, \
             {per_call:.1} per call"
        );
        assert!(
            per_call >= 8.0,
            "tokio {flavor}: {per_call:.1} reads per io_submit at queue depth 32: {sizes:?}"
        );
    }
}

/// In the child: 32 tasks read the serial slow file with O_DIRECT, 256 reads in all.
#[cfg(feature = "tokio")]
#[test]
fn child_reads_at_depth() {
    use std::os::unix::{fs::OpenOptionsExt, io::AsRawFd};
    let Ok(flavor) = std::env::var(DEPTH_CHILD) else {
        return;
    };
    let Some(m) = Mounted::new() else {
        println!("CHILD skip: cannot mount FUSE");
        return;
    };
    m.ctl.delay_ms.store(1, Ordering::SeqCst);
    m.ctl.serial.store(true, Ordering::SeqCst);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.path("slow"))
    {
        Ok(f) => f,
        Err(e) => {
            println!("CHILD skip: no O_DIRECT on FUSE here ({e})");
            return;
        }
    };
    let fd = file.as_raw_fd();
    let ctx = Context::builder()
        .implementation(Implementation::Linux)
        .max_requests(32)
        .build()
        .unwrap();
    let rt = util::runtime(flavor == "mt");
    let (tasks, reads, size) = (32, 256, 4096);
    let expected = Arc::new(pattern(SIZE, SLOW - GOOD));
    // The tasks take reads from one count, so that all 32 stay busy until the end, however
    // the file serves them.
    let next = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (ctx, expected, next) = (ctx.clone(), Arc::clone(&expected), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if k >= reads {
                            break;
                        }
                        let off = (k * 7919 % (SIZE / size)) * size;
                        let got = ctx.read(size, fd, off as u64).await.unwrap();
                        assert!(got[..] == expected[off..off + size], "data at {off}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    });
    drop(rt);
    assert!(ctx.wait_idle_timeout(Duration::from_secs(10)), "idle");
    m.ctl.delay_ms.store(0, Ordering::SeqCst);
    println!("CHILD reads={reads} done");
}

//! `caio::fs` against `std::fs`, call for call, on the edge cases a user meets: missing
//! paths, a file where a directory is expected and the reverse, symlink loops, dangling
//! symlinks, non-UTF-8 names, and (run as `nobody`) permission denied. Each function must
//! give the same value, or the same `io::ErrorKind` and errno, on every backend, and leave
//! the same tree behind. Also: a directory of 100,000 entries is read through `read_dir`
//! in flat memory (Linux).
//!
//! On Windows (run under wine in CI) the same comparison runs without what Windows has
//! not got or wine cannot show: symlinks, non-UTF-8 names, modes and other users.

mod util;

#[cfg(unix)]
use std::{
    ffi::OsStr,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt},
    },
};
use std::{
    fmt::Debug,
    fs::Metadata,
    io,
    path::{Path, PathBuf},
};

use caio::fs;
use futures::StreamExt;
use util::{backends, block_on};

const CHILD: &str = "CAIO_PATHS_CHILD";
#[cfg(target_os = "linux")]
const BIG_DIR: &str = "CAIO_PATHS_BIG_DIR";
#[cfg(target_os = "linux")]
const BIG: usize = 100_000;

/// The same tree is laid out twice: caio works on one, std on the other.
fn lay_out(root: &Path) {
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    std::fs::write(root.join("dir/inner"), b"inner").unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    std::fs::write(root.join("file"), b"hello\n").unwrap();
    std::fs::write(root.join("bin"), [0xff, 0xfe, 0x00]).unwrap();
    std::fs::create_dir(root.join("locked")).unwrap();
    std::fs::write(root.join("locked/secret"), b"secret").unwrap();
    std::fs::write(root.join("private"), b"private").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("file", root.join("link")).unwrap();
        std::os::unix::fs::symlink("missing", root.join("dangling")).unwrap();
        std::os::unix::fs::symlink("loop2", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", root.join("loop2")).unwrap();
        std::fs::write(root.join(OsStr::from_bytes(b"name-\xff\xfe")), b"not utf-8").unwrap();
        std::fs::set_permissions(root.join("locked"), PermissionsExt::from_mode(0o700)).unwrap();
        std::fs::set_permissions(root.join("private"), PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::set_permissions(root, PermissionsExt::from_mode(0o755)).unwrap();
    }
    // Windows: the read-only attribute, its one permission.
    #[cfg(windows)]
    {
        let mut p = std::fs::metadata(root.join("private"))
            .unwrap()
            .permissions();
        p.set_readonly(true);
        std::fs::set_permissions(root.join("private"), p).unwrap();
    }
}

/// The relative paths every function is tried on.
fn cases() -> Vec<PathBuf> {
    let names: &[&[u8]] = &[
        b"missing",
        b"file",
        b"bin",
        b"dir",
        b"empty",
        b"link",
        b"dangling",
        b"loop1",
        b"file/x",
        b"dir/inner/x",
        b"loop1/x",
        b"missing/x",
        b"name-\xff\xfe",
        b"locked",
        b"locked/secret",
        b"private",
    ];
    #[cfg(unix)]
    let name = |n: &[u8]| Some(PathBuf::from(OsStr::from_bytes(n)));
    // Windows names are UTF-16: the non-UTF-8 one is not tried there.
    #[cfg(windows)]
    let name = |n: &[u8]| std::str::from_utf8(n).ok().map(PathBuf::from);
    names.iter().filter_map(|n| name(n)).collect()
}

/// What of a metadata can be compared across two trees.
fn meta_view(m: Metadata) -> (bool, bool, bool, u64, u32, u64) {
    let t = m.file_type();
    #[cfg(unix)]
    let (mode, links) = (m.mode(), m.nlink());
    #[cfg(windows)]
    let (mode, links) = (u32::from(m.permissions().readonly()), 1);
    (
        t.is_file(),
        t.is_dir(),
        t.is_symlink(),
        m.len(),
        mode,
        links,
    )
}

struct Compare {
    a: PathBuf,
    b: PathBuf,
    failures: Vec<String>,
    checked: usize,
}

impl Compare {
    fn same<T: Debug + PartialEq>(
        &mut self,
        what: String,
        got: io::Result<T>,
        want: io::Result<T>,
    ) {
        self.checked += 1;
        let ok = match (&got, &want) {
            (Ok(x), Ok(y)) => x == y,
            (Err(x), Err(y)) => (x.kind(), x.raw_os_error()) == (y.kind(), y.raw_os_error()),
            _ => false,
        };
        if !ok {
            self.failures
                .push(format!("{what}: caio {got:?}, std {want:?}"));
        }
    }

    /// Runs the read-only functions on `rel` in both trees.
    fn look(&mut self, rel: &Path) {
        let (a, b) = (self.a.join(rel), self.b.join(rel));
        let r = rel.display();
        self.same(
            format!("read({r})"),
            block_on(fs::read(&a)),
            std::fs::read(&b),
        );
        self.same(
            format!("read_to_string({r})"),
            block_on(fs::read_to_string(&a)),
            std::fs::read_to_string(&b),
        );
        self.same(
            format!("metadata({r})"),
            block_on(fs::metadata(&a)).map(meta_view),
            std::fs::metadata(&b).map(meta_view),
        );
        self.same(
            format!("symlink_metadata({r})"),
            block_on(fs::symlink_metadata(&a)).map(meta_view),
            std::fs::symlink_metadata(&b).map(meta_view),
        );
        self.same(
            format!("try_exists({r})"),
            block_on(fs::try_exists(&a)),
            b.try_exists(),
        );
        self.same(
            format!("read_link({r})"),
            block_on(fs::read_link(&a)),
            std::fs::read_link(&b),
        );
        let (ra, rb) = (self.a.clone(), self.b.clone());
        self.same(
            format!("canonicalize({r})"),
            block_on(fs::canonicalize(&a)).map(|p| p.strip_prefix(&ra).map(Path::to_path_buf)),
            std::fs::canonicalize(&b).map(|p| p.strip_prefix(&rb).map(Path::to_path_buf)),
        );
        let caio_names = block_on(async {
            let mut rd = fs::read_dir(&a).await?;
            let mut names = Vec::new();
            while let Some(e) = rd.next().await {
                let e = e?;
                let t = e.file_type().await?;
                names.push((e.file_name(), t.is_dir(), t.is_symlink()));
            }
            names.sort();
            io::Result::Ok(names)
        });
        let std_names = std::fs::read_dir(&b).and_then(|rd| {
            let mut names = Vec::new();
            for e in rd {
                let e = e?;
                let t = e.file_type()?;
                names.push((e.file_name(), t.is_dir(), t.is_symlink()));
            }
            names.sort();
            Ok(names)
        });
        self.same(format!("read_dir({r})"), caio_names, std_names);
    }

    /// Runs the functions that change the tree on `rel`, in the same order in both.
    fn change(&mut self, rel: &Path) {
        let (a, b) = (self.a.join(rel), self.b.join(rel));
        let r = rel.display();
        let with = |p: &Path, s: &str| {
            let mut o = p.as_os_str().to_owned();
            o.push(s);
            PathBuf::from(o)
        };
        #[cfg(unix)]
        let perm = || PermissionsExt::from_mode(0o751);
        // Windows has no Permissions of its own making: a read-only file's, made writable.
        #[cfg(windows)]
        #[allow(clippy::permissions_set_readonly_false)] // Windows: the attribute only
        let perm = || {
            let mut p = std::fs::metadata(self.a.join("private"))
                .unwrap()
                .permissions();
            p.set_readonly(false);
            p
        };
        self.same(
            format!("set_permissions({r})"),
            block_on(fs::set_permissions(&a, perm())),
            std::fs::set_permissions(&b, perm()),
        );
        self.same(
            format!("hard_link({r})"),
            block_on(fs::hard_link(&a, with(&a, ".hl"))),
            std::fs::hard_link(&b, with(&b, ".hl")),
        );
        self.same(
            format!("rename({r}, .mv)"),
            block_on(fs::rename(&a, with(&a, ".mv"))),
            std::fs::rename(&b, with(&b, ".mv")),
        );
        self.same(
            format!("rename(.mv, {r})"),
            block_on(fs::rename(with(&a, ".mv"), &a)),
            std::fs::rename(with(&b, ".mv"), &b),
        );
        self.same(
            format!("create_dir({r})"),
            block_on(fs::create_dir(&a)),
            std::fs::create_dir(&b),
        );
        self.same(
            format!("create_dir_all({r}/n)"),
            block_on(fs::create_dir_all(a.join("n"))),
            std::fs::create_dir_all(b.join("n")),
        );
        #[cfg(unix)]
        self.same(
            format!("symlink(to, {r})"),
            block_on(fs::symlink("to", &a)),
            std::os::unix::fs::symlink("to", &b),
        );
        // Wine's CopyFileExW reports no progress, so std's count is 0 there: on Windows
        // the results are compared without it, and the listing compares what was copied.
        #[cfg(unix)]
        let count = |r: io::Result<u64>| r;
        #[cfg(windows)]
        let count = |r: io::Result<u64>| r.map(drop);
        self.same(
            format!("copy(file, {r}.c)"),
            count(block_on(fs::copy(self.a.join("file"), with(&a, ".c")))),
            count(std::fs::copy(self.b.join("file"), with(&b, ".c"))),
        );
        self.same(
            format!("copy({r}, out)"),
            count(block_on(fs::copy(&a, self.a.join("copy-out")))),
            count(std::fs::copy(&b, self.b.join("copy-out"))),
        );
        self.same(
            format!("write({r}.w)"),
            block_on(fs::write(with(&a, ".w"), "w")),
            std::fs::write(with(&b, ".w"), "w"),
        );
        self.same(
            format!("remove_file({r})"),
            block_on(fs::remove_file(&a)),
            std::fs::remove_file(&b),
        );
        self.same(
            format!("remove_dir({r})"),
            block_on(fs::remove_dir(&a)),
            std::fs::remove_dir(&b),
        );
        self.same(
            format!("remove_dir_all({r})"),
            block_on(fs::remove_dir_all(&a)),
            std::fs::remove_dir_all(&b),
        );
    }
}

/// Every entry below `root`: relative path, type, size and mode (symlinks not followed).
fn listing(root: &Path) -> Vec<(PathBuf, bool, bool, u64, u32, Option<PathBuf>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let link = std::fs::read_link(e.path()).ok();
            if m.is_dir() {
                stack.push(e.path());
            }
            let size = if m.is_dir() { 0 } else { m.len() };
            #[cfg(unix)]
            let mode = m.mode();
            #[cfg(windows)]
            let mode = u32::from(m.permissions().readonly());
            out.push((rel, m.is_dir(), m.is_symlink(), size, mode, link));
        }
    }
    out.sort();
    out
}

/// Peak RSS (`VmHWM`) and RSS now, in KiB.
#[cfg(target_os = "linux")]
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// In the child: compares both trees under `CHILD`, reads the big directory, prints
/// `CHECKED n`, `FAIL ...` lines, and `BIG count peak_growth_kib`.
#[test]
fn child_compare() {
    let Ok(root) = std::env::var(CHILD) else {
        return;
    };
    let root = PathBuf::from(root);
    println!(); // libtest's "test child_compare ... " stays on its own line
    let mut c = Compare {
        a: root.join("a"),
        b: root.join("b"),
        failures: Vec::new(),
        checked: 0,
    };
    for rel in cases() {
        c.look(&rel);
    }
    for rel in cases() {
        c.change(&rel);
    }
    let (la, lb) = (listing(&c.a), listing(&c.b));
    if la != lb {
        c.failures.push(format!(
            "the trees differ afterwards:\ncaio {la:#?}\nstd {lb:#?}"
        ));
    }
    println!("CHECKED {}", c.checked);
    for f in &c.failures {
        println!("FAIL {f}");
    }
    #[cfg(target_os = "linux")]
    if let Ok(big) = std::env::var(BIG_DIR) {
        // Warm up: the backend's threads and a first batch.
        block_on(async {
            let mut rd = fs::read_dir(&big).await.unwrap();
            for _ in 0..1000 {
                rd.next().await.unwrap().unwrap();
            }
        });
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let (_, before) = rss_kib();
        let count = block_on(async {
            let mut rd = fs::read_dir(&big).await.unwrap();
            let mut n = 0usize;
            while let Some(e) = rd.next().await {
                assert!(e.unwrap().file_name().len() > 1);
                n += 1;
            }
            n
        });
        let (peak, _) = rss_kib();
        println!("BIG {count} {}", peak.saturating_sub(before));
    }
}

/// Runs the child on `i` over fresh trees; its output.
fn run_child(i: caio::Implementation, as_nobody: bool, big: Option<&Path>) -> String {
    // Under /tmp, so that `nobody` can reach it.
    #[cfg(unix)]
    let root = tempfile::Builder::new()
        .prefix("caio-paths-")
        .tempdir_in("/tmp")
        .unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o755)).unwrap();
    #[cfg(windows)]
    let (root, _) = (util::dir(), as_nobody);
    for side in ["a", "b"] {
        std::fs::create_dir(root.path().join(side)).unwrap();
        lay_out(&root.path().join(side));
    }
    let mut cmd = util::test_command("child_compare", &[]);
    cmd.env(CHILD, root.path()).env("CAIO_IMPL", i.as_str());
    #[cfg(target_os = "linux")]
    if let Some(b) = big {
        cmd.env(BIG_DIR, b);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = big;
    #[cfg(unix)]
    if as_nobody {
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
        std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    }
    let out = util::output_within(cmd, std::time::Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{i}: the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn check(i: caio::Implementation, who: &str, stdout: &str) {
    let checked: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHECKED "))
        .unwrap_or_else(|| panic!("{i} as {who}: no result:\n{stdout}"))
        .parse()
        .unwrap();
    let fails: Vec<_> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    eprintln!(
        "{i} as {who}: {checked} calls compared with std, {} differ",
        fails.len()
    );
    assert!(checked >= 300, "{i}: only {checked} calls compared");
    assert!(fails.is_empty(), "{i} as {who}:\n{}", fails.join("\n"));
}

#[cfg(windows)]
#[test]
fn every_function_behaves_as_std_on_every_backend() {
    for i in backends() {
        let out = run_child(i, false, None);
        check(i, "this user", &out);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn every_function_behaves_as_std_on_every_backend_and_reads_a_huge_directory_flat() {
    // The big directory is on tmpfs, where making 100,000 files takes a second.
    let big = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")))
        .unwrap();
    for k in 0..BIG {
        std::fs::File::create(big.path().join(format!("entry-{k:06}"))).unwrap();
    }
    for i in backends() {
        let out = run_child(i, false, Some(big.path()));
        check(i, "root", &out);
        let (count, growth): (usize, u64) = out
            .lines()
            .find_map(|l| l.strip_prefix("BIG "))
            .map(|l| {
                let (c, g) = l.split_once(' ').unwrap();
                (c.parse().unwrap(), g.parse().unwrap())
            })
            .unwrap();
        eprintln!("{i}: read_dir of {count} entries, peak RSS growth {growth} KiB");
        assert_eq!(count, BIG, "{i}: every entry, once");
        assert!(
            growth < 4096,
            "{i}: reading {BIG} entries grew the peak RSS by {growth} KiB"
        );
    }
}

#[cfg(unix)]
#[test]
fn permission_denied_is_the_same_as_std_for_nobody() {
    use std::process::Command;
    if !util::is_root() {
        eprintln!("SKIP: running the child as nobody needs root");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    if Command::new(&exe)
        .arg("--list")
        .uid_gid(65534)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("SKIP: nobody cannot run {}", exe.display());
        return;
    }
    for i in backends() {
        let out = run_child(i, true, None);
        check(i, "nobody", &out);
    }
}

#[cfg(unix)]
trait UidGid {
    fn uid_gid(&mut self, id: u32) -> &mut Self;
}

#[cfg(unix)]
impl UidGid for std::process::Command {
    fn uid_gid(&mut self, id: u32) -> &mut Self {
        std::os::unix::process::CommandExt::uid(self, id);
        std::os::unix::process::CommandExt::gid(self, id)
    }
}

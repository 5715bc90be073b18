//! A fast device for measuring software cost: a loop device with direct I/O over a file
//! in tmpfs (`losetup --direct-io=on`). Its latency is a memory copy, so what a
//! measurement shows is the cost of the code around each operation, where a virtio disk
//! drifts two- to three-fold from run to run. Shared by `caio bench --fast-device` and
//! `cargo bench --bench vs_fio -- --fast`.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// tmpfs's `f_type` (`TMPFS_MAGIC`).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Held while `losetup` attaches a device, and by the Ctrl-C clean-up before it looks
/// for devices to detach.
pub static ATTACHING: Mutex<()> = Mutex::new(());

/// A loop device with direct I/O over a tmpfs file; detached and removed on drop.
pub struct FastDevice {
    /// The block device, `/dev/loopN`.
    pub dev: PathBuf,
    /// The tmpfs file under it (also usable as a page-cache-only file).
    pub image: PathBuf,
}

fn is_tmpfs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statfs succeeded and filled it.
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between targets
    let t = unsafe { st.assume_init() }.f_type as i64;
    t == TMPFS_MAGIC
}

impl FastDevice {
    /// Sets one up of `size` bytes (filled with non-zero data, so reads copy real pages),
    /// or says why it cannot: not root, no tmpfs at /dev/shm, no loop module, no
    /// `losetup`, or a kernel whose loop driver refuses direct I/O.
    pub fn setup(size: u64) -> Result<FastDevice, String> {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("setting up a loop device needs root".into());
        }
        let dir = Path::new("/dev/shm");
        if !is_tmpfs(dir) {
            return Err("/dev/shm is not a tmpfs".into());
        }
        let image = Self::image_path();
        let fill = || -> std::io::Result<()> {
            let mut f = fs::File::create(&image)?;
            let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            Ok(())
        };
        if let Err(e) = fill() {
            let _ = fs::remove_file(&image);
            return Err(format!("cannot fill {}: {e}", image.display()));
        }
        // Held until losetup is done: a Ctrl-C meanwhile would otherwise look for the
        // device before it exists, and exit while losetup goes on to attach it.
        let attaching = crate::sync::lock(&ATTACHING);
        let out = Command::new("losetup")
            .args(["--direct-io=on", "--find", "--show"])
            .arg(&image)
            .output();
        drop(attaching);
        let out = match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                let _ = fs::remove_file(&image);
                return Err(format!(
                    "losetup failed (no loop module?): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) => {
                let _ = fs::remove_file(&image);
                return Err(format!("cannot run losetup: {e}"));
            }
        };
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let d = FastDevice { dev, image };
        let name = d.dev.file_name().map(|n| n.to_string_lossy().into_owned());
        let dio = name
            .and_then(|n| fs::read_to_string(format!("/sys/block/{n}/loop/dio")).ok())
            .map(|s| s.trim() == "1");
        if dio != Some(true) {
            return Err(format!(
                "{} does not do direct I/O on its backing file (this kernel's loop driver)",
                d.dev.display()
            ));
        }
        Ok(d)
    }

    /// The tmpfs file `setup` makes for this process.
    pub fn image_path() -> PathBuf {
        Path::new("/dev/shm").join(format!("caio-fast-{}.img", std::process::id()))
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        fs::metadata(&self.image).map_or(0, |m| m.len())
    }
}

impl Drop for FastDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = fs::remove_file(&self.image);
    }
}

//! A small tmpfs mounted for one test (needs root, as CI has), to run a service out of disk
//! space for real: a filler file takes every free byte, and removing it gives the space back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` at `path` (an existing, empty directory), mode 0700.
    pub fn mount(path: &Path, size_bytes: u64) -> Tmpfs {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the disk-full tests need root)",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Takes every free byte; returns how many it took.
    pub fn fill(&self) -> u64 {
        let mut file = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = vec![0xa5u8; 4096];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        // Whatever a partial block left.
        while file.write(&[0xa5]).is_ok_and(|n| n == 1) {
            written += 1;
        }
        written
    }

    /// Gives the space back.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }
}

fn libc_enospc() -> i32 {
    28
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process that still holds a file there lets go when it exits.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

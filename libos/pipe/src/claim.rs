//! Who is attached to a pipe or a fast-channel side: an open-file-description lock.
//!
//! A service that exits cleanly clears `attached_pid`, but one that is killed (SIGKILL,
//! OOM, `panic = "abort"`) cannot, and a pid says nothing across pid namespaces (a
//! container's pid 1 is not the host's). The kernel, though, drops a process's file
//! locks when it dies, in any namespace. So attaching takes a write lock on one byte of
//! the shared file (`F_OFD_SETLK`, non-blocking) and holds it while attached: a lock that
//! cannot be had means a live owner; one that can means any `attached_pid` left in the
//! header belongs to a dead process and may be taken over.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The byte each claim locks: a pipe's service side, and the two sides of a fast channel.
pub const PIPE_SLOT: u64 = 0;
pub const FC_SIDE_A_SLOT: u64 = 0;
pub const FC_SIDE_B_SLOT: u64 = 1;

/// A held claim; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct Claim {
    _file: File,
}

/// A write lock on byte `slot` (for OFD locks `l_pid` must be 0).
fn write_lock_on(slot: u64) -> libc::flock {
    // SAFETY: `flock` is plain old data; all-zero is a valid value to fill in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = slot as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Try to claim byte `slot` of `path`. `Ok(None)`: another live process holds it.
pub fn try_claim(path: &Path, slot: u64) -> io::Result<Option<Claim>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let fl = write_lock_on(slot);
    // SAFETY: a valid open fd and a pointer to an initialised flock that outlives the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(Some(Claim { _file: file }));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(None),
        _ => Err(err),
    }
}

/// True if some process holds byte `slot` of `path` (asked without taking it).
pub fn is_claimed(path: &Path, slot: u64) -> io::Result<bool> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    is_claimed_file(&file, slot)
}

/// True if some process holds byte `slot` of the open `file` (asked without taking it).
/// For an owner that must not reopen a path a tenant can replace (the master).
pub fn is_claimed_file(file: &std::fs::File, slot: u64) -> io::Result<bool> {
    let mut fl = write_lock_on(slot);
    // SAFETY: a valid open fd and a pointer to an initialised flock the kernel fills in.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_slot_until_dropped() {
        let dir = std::env::temp_dir().join(format!("dn-claim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.map");
        std::fs::write(&path, [0u8; 16]).unwrap();
        assert!(!is_claimed(&path, 0).unwrap());
        let a = try_claim(&path, 0).unwrap().expect("first claim");
        assert!(is_claimed(&path, 0).unwrap());
        assert!(!is_claimed(&path, 1).unwrap());
        // OFD locks conflict between open file descriptions, even in one process.
        assert!(try_claim(&path, 0).unwrap().is_none());
        let b = try_claim(&path, 1).unwrap().expect("another slot is free");
        drop(a);
        assert!(!is_claimed(&path, 0).unwrap());
        let a2 = try_claim(&path, 0).unwrap().expect("released on drop");
        drop((a2, b));
        assert!(try_claim(&dir.join("missing"), 0).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

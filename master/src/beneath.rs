//! Touching files inside pipe directories without following what a tenant planted there.
//!
//! A pipe directory is mounted read-write into its service's container, so anything in it
//! (the `fc/` directory, a channel file) may have been replaced by a symlink, a FIFO or a
//! directory by the time the root daemon looks. Everything here walks from a directory the
//! daemon trusts one component at a time with `O_NOFOLLOW`, and names files relative to
//! the descriptor it reached (`openat`, `linkat`, `unlinkat` never follow a final symlink),
//! so the daemon never acts outside the run directory.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

fn cname(name: &Path) -> io::Result<CString> {
    let b = name.as_os_str().as_bytes();
    if b.is_empty() || b.contains(&b'/') || b == b"." || b == b".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a single path component", name.display()),
        ));
    }
    CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn open_dir_at(dir: libc::c_int, name: &CString) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is an open directory fd (or AT_FDCWD), `name` NUL-terminated; the
    // result is checked before use.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // A symlink gives ELOOP or ENOTDIR (O_NOFOLLOW | O_DIRECTORY), as does a file.
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory (symbolic links are not followed)",
            ),
            _ => e,
        });
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open directory `root/rel` for use as a `*at` base: `root` is opened as given (it is the
/// daemon's own), each component of `rel` (plain names only) with `O_NOFOLLOW`.
pub fn open_dir(root: &Path, rel: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is NUL-terminated; the result is checked before use.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: only plain names are allowed", rel.display()),
            ));
        };
        cur = open_dir_at(cur.as_raw_fd(), &cname(Path::new(name))?)?;
    }
    Ok(cur)
}

/// Remove file `name` of `dir` (a symlink is removed itself, never its target). A missing
/// file is not an error.
pub fn unlink(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let c = cname(name)?;
    // SAFETY: `dir` is an open directory fd, `c` NUL-terminated.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e);
        }
    }
    Ok(())
}

/// Hard-link `from_dir/from` as `to_dir/to` (`linkat` without `AT_SYMLINK_FOLLOW`: a
/// symlink would be linked as itself, never resolved).
pub fn link(
    from_dir: BorrowedFd<'_>,
    from: &Path,
    to_dir: BorrowedFd<'_>,
    to: &Path,
) -> io::Result<()> {
    let (f, t) = (cname(from)?, cname(to)?);
    // SAFETY: both fds are open directories, both names NUL-terminated.
    if unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fchown` then `fchmod` on an open descriptor: how the daemon hands a file or directory
/// to a pipe's owner without going through a path a tenant could have replaced.
pub fn chown_mod(fd: BorrowedFd<'_>, (uid, gid): (u32, u32), mode: u32) -> io::Result<()> {
    // SAFETY: fchown/fchmod on a descriptor borrowed for the call.
    if unsafe {
        libc::fchown(fd.as_raw_fd(), uid, gid) != 0 || libc::fchmod(fd.as_raw_fd(), mode) != 0
    } {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_at(
    dir: BorrowedFd<'_>,
    name: &CString,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is an open directory fd, `name` NUL-terminated; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Read regular file `name` of `dir`, at most `max` bytes (more is an error): a symlink,
/// a FIFO or a device planted there is refused without blocking.
pub fn read_file(dir: BorrowedFd<'_>, name: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let fd = open_at(dir, &cname(name)?, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    let f = std::fs::File::from(fd);
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        ));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        ));
    }
    Ok(out)
}

/// Replace file `name` of `dir` atomically with `data` (a new file `name.tmp`, owned by
/// `owner` with `mode`, renamed over it): a reader sees the old file or the new one.
pub fn replace_file(
    dir: BorrowedFd<'_>,
    name: &Path,
    data: &[u8],
    owner: (u32, u32),
    mode: u32,
) -> io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let final_name = cname(name)?;
    let mut tmp_bytes = name.as_os_str().as_bytes().to_vec();
    tmp_bytes.extend_from_slice(b".tmp");
    let tmp = CString::new(tmp_bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // Whatever sits at the temporary name (a tenant's symlink) goes first: O_EXCL then
    // makes a fresh file or fails.
    // SAFETY: `dir` is an open directory fd, `tmp` NUL-terminated.
    unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
    let fd = open_at(
        dir,
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        mode,
    )?;
    chown_mod(fd.as_fd(), owner, mode)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(data)?;
    // SAFETY: both names NUL-terminated, relative to the same open directory fd;
    // renameat replaces the directory entry itself (never follows a symlink there).
    if unsafe {
        libc::renameat(
            dir.as_raw_fd(),
            tmp.as_ptr(),
            dir.as_raw_fd(),
            final_name.as_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn symlinks_are_never_followed() {
        let root = std::env::temp_dir().join(format!("dn-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/fc")).unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("a/evil")).unwrap();
        std::fs::write(root.join("outside/victim"), b"x").unwrap();

        let fc = open_dir(&root, Path::new("a/fc")).unwrap();
        let e = open_dir(&root, Path::new("a/evil")).unwrap_err();
        assert!(
            e.to_string().contains("symbolic links are not followed"),
            "{e}"
        );
        assert!(open_dir(&root, Path::new("a/../outside")).is_err());
        assert!(open_dir(&root, Path::new("/etc")).is_err());

        // A symlink planted where a file is expected is removed, not its target.
        std::os::unix::fs::symlink(root.join("outside/victim"), root.join("a/fc/b.map")).unwrap();
        unlink(fc.as_fd(), Path::new("b.map")).unwrap();
        assert!(root.join("outside/victim").exists());
        unlink(fc.as_fd(), Path::new("b.map")).unwrap(); // already gone: fine
        assert!(unlink(fc.as_fd(), Path::new("../x")).is_err());

        std::fs::write(root.join("a/fc/f"), b"y").unwrap();
        let a = open_dir(&root, Path::new("a")).unwrap();
        link(fc.as_fd(), Path::new("f"), a.as_fd(), Path::new("g")).unwrap();
        assert_eq!(std::fs::read(root.join("a/g")).unwrap(), b"y");
        let _ = std::fs::remove_dir_all(&root);
    }
}

//! `docknetctl attach NAME --pid PID`: mount a pipe directory at `/run/docknet/pipe`
//! inside the mount namespace of process PID (a container), and nowhere else.
//!
//! The pipe directory is cloned as a detached bind mount (`open_tree`) while still in
//! docknetd's namespace, then a forked child enters the target namespace (`setns`; a
//! multi-threaded process may not) and attaches it there (`move_mount`). The container
//! never needs to see the host path; other containers never see the mount.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Where a service finds its pipe inside a container.
pub const MOUNT_POINT: &str = "/run/docknet/pipe";

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn cstr(s: &[u8]) -> Result<CString, String> {
    CString::new(s).map_err(|_| "path contains a NUL byte".to_string())
}

fn ns_inode(path: &str) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// Mount `dir` at [`MOUNT_POINT`] in the mount namespace of `pid`.
pub fn attach(dir: &Path, pid: u32) -> Result<(), String> {
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns_c = cstr(ns_path.as_bytes())?;
    // Open the namespace first and check *that* fd, so a pid reused in between cannot
    // point us at another namespace.
    // SAFETY: open(2) of /proc/PID/ns/mnt, read-only.
    let nsfd = unsafe { libc::open(ns_c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if nsfd < 0 {
        return Err(format!(
            "no process {pid} (cannot open {ns_path}: {})",
            std::io::Error::last_os_error()
        ));
    }
    let nsfd = crate::nic::Fd(nsfd);
    // SAFETY: fstat into a zeroed stat we own, on an fd we own.
    let target_ns = unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        (libc::fstat(nsfd.0, &mut st) == 0).then_some(st.st_ino)
    };
    if target_ns.is_some() && target_ns == ns_inode("/proc/self/ns/mnt") {
        return Err(format!(
            "process {pid} shares docknetd's mount namespace: give the pid of a process inside the container"
        ));
    }
    let dir_c = cstr(dir.as_os_str().as_bytes())?;
    let parts: Vec<CString> = ["/run", "/run/docknet", MOUNT_POINT]
        .iter()
        .map(|p| cstr(p.as_bytes()))
        .collect::<Result<_, _>>()?;
    let empty = cstr(b"")?;
    // SAFETY: open_tree(2) with a valid NUL-terminated path; returns an fd or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            dir_c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    } as libc::c_int;
    if tree < 0 {
        return Err(format!(
            "cannot clone a mount of {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    let tree = crate::nic::Fd(tree);
    let mut report = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    let (rd, wr) = (crate::nic::Fd(report[0]), crate::nic::Fd(report[1]));
    // SAFETY: fork(2). The child only makes raw syscalls (async-signal-safe) on data
    // prepared before the fork, then _exits; it never returns into Rust code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        // In the child: report (stage, errno) through the pipe on failure.
        let fail = |stage: u8| -> ! {
            // SAFETY: errno location is thread-local and valid; write/_exit are async-signal-safe.
            unsafe {
                let e = (*libc::__errno_location()).clamp(0, 255) as u8;
                let msg = [stage, e];
                libc::write(wr.0, msg.as_ptr().cast(), 2);
                libc::_exit(1);
            }
        };
        // SAFETY: setns on an fd of a mount namespace; the child is single-threaded.
        if unsafe { libc::setns(nsfd.0, libc::CLONE_NEWNS) } != 0 {
            fail(1);
        }
        for p in &parts {
            // SAFETY: mkdir with a valid path; EEXIST is fine.
            if unsafe { libc::mkdir(p.as_ptr(), 0o755) } != 0
                && unsafe { *libc::__errno_location() } != libc::EEXIST
            {
                fail(2);
            }
        }
        let target = parts.last().expect("three parts");
        // SAFETY: move_mount(2) of the detached tree fd onto a path in this namespace.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.0,
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r != 0 {
            fail(3);
        }
        // SAFETY: leave without running any destructor or atexit handler.
        unsafe { libc::_exit(0) };
    }
    drop(wr);
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
    }
    let mut msg = [0u8; 2];
    let n = loop {
        // SAFETY: read into a 2-byte local buffer.
        let n = unsafe { libc::read(rd.0, msg.as_mut_ptr().cast(), 2) };
        if n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break n;
        }
    };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(());
    }
    let err = std::io::Error::from_raw_os_error(msg[1] as i32);
    Err(match (n, msg[0]) {
        (2, 1) => format!("cannot enter the mount namespace of process {pid}: {err}"),
        (2, 2) => format!("cannot create {MOUNT_POINT} in process {pid}'s namespace: {err}"),
        (2, 3) => {
            format!("cannot mount the pipe at {MOUNT_POINT} in process {pid}'s namespace: {err}")
        }
        _ => format!("the attach helper process failed (status {status})"),
    })
}

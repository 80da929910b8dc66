//! Helpers shared by the master's namespace-based tests.
#![allow(dead_code)]

use std::process::Command;

/// Run `ip ARGS`; one line of context on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Move the calling thread into network namespace `name` (/run/netns/NAME).
pub fn enter_netns(name: &str) -> Result<(), String> {
    let path = std::ffi::CString::new(format!("/run/netns/{name}")).map_err(|e| e.to_string())?;
    // SAFETY: open(2) with a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "open {path:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: setns on a netns fd we own; affects only the calling thread.
    let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(format!("setns {name}: {err}"));
    }
    Ok(())
}

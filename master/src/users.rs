//! Who is asking, and who owns what: the control socket's peer credentials, pipe owners,
//! the daemon's group. Names are looked up with the reentrant `getpwnam_r`/`getgrnam_r`.

use std::ffi::CString;
use std::os::fd::AsRawFd;

/// The process at the other end of a control connection (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

impl Peer {
    /// The credentials of the peer of a connected Unix socket.
    pub fn of(sock: &impl AsRawFd) -> Option<Peer> {
        // SAFETY: ucred is plain data; zeroed is valid.
        let mut c: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: a valid socket fd, a pointer to a ucred and its size.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut c as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(Peer {
            uid: c.uid,
            gid: c.gid,
            pid: c.pid,
        })
    }

    /// True for root.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// True if the peer's primary group, or one of its supplementary groups (from
    /// /proc/PID/status), is `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        if self.gid == gid {
            return true;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {} gid {} pid {}", self.uid, self.gid, self.pid)
    }
}

/// A user by name or number: `(uid, primary gid)`.
pub fn user(s: &str) -> Result<(u32, Option<u32>), String> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok((n, None));
    }
    let c = CString::new(s).map_err(|_| format!("bad user name {s:?}"))?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: passwd is plain data; zeroed is valid.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid name, struct, buffer and out-pointer for the call's duration.
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return Err(format!("no user named {s:?}"));
    }
    Ok((pw.pw_uid, Some(pw.pw_gid)))
}

/// A group by name or number.
pub fn group(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let c = CString::new(s).map_err(|_| format!("bad group name {s:?}"))?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: group is plain data; zeroed is valid.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid name, struct, buffer and out-pointer for the call's duration.
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return Err(format!("no group named {s:?}"));
    }
    Ok(gr.gr_gid)
}

/// `UID[:GID]` (names or numbers) as `(uid, gid)`; without a group, the user's primary
/// group (or the uid's number, for a uid with no passwd entry).
pub fn owner(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let (uid, primary) = user(u).map_err(|e| format!("--owner {s}: {e}"))?;
    let gid = match g {
        Some(g) => group(g).map_err(|e| format!("--owner {s}: {e}"))?,
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_by_number_and_name() {
        assert_eq!(owner("1000:1001").unwrap(), (1000, 1001));
        assert_eq!(owner("4242").unwrap(), (4242, 4242));
        assert_eq!(owner("root").unwrap(), (0, 0));
        assert_eq!(owner("0:root").unwrap(), (0, 0));
        assert!(owner("no-such-user-here").is_err());
        assert!(owner("1:no-such-group-here").is_err());
        assert_eq!(group("0").unwrap(), 0);
    }

    #[test]
    fn peer_credentials_of_a_socketpair() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = Peer::of(&a).unwrap();
        // SAFETY: getuid/getgid/getpid have no preconditions.
        let me = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
        assert_eq!((p.uid, p.gid, p.pid), me);
        assert!(p.in_group(me.1));
    }
}

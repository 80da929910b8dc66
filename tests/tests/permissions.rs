//! Who may do what (the tenant-safety issue): pipe files belong to their service's user
//! and no one else; the control socket takes root and the daemon's `--group` only and
//! tells anyone else why; a non-root service that owns its pipe attaches and echoes.
//! Needs root (to act as other users); prints why and passes otherwise.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use docknet_tests::{bin, need_root, run_with_timeout, wait_for_line, ChildGuard, Daemon, TempDir};

/// A copy of the binaries other users may run (the build tree may be private to root),
/// removed on drop.
struct PublicBins(TempDir);

impl PublicBins {
    fn new() -> PublicBins {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for b in ["docknetctl", "dn-echo"] {
            let to = dir.path().join(b);
            std::fs::copy(bin(b), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        PublicBins(dir)
    }

    /// `program` run as `uid:gid` (no supplementary groups).
    fn as_user(&self, program: &str, uid: u32, gid: u32) -> Command {
        let mut c = Command::new(self.0.path().join(program));
        c.uid(uid).gid(gid).stdin(Stdio::null());
        c
    }

    fn ctl(&self, d: &Daemon, uid: u32, gid: u32, args: &[&str]) -> Output {
        let mut c = self.as_user("docknetctl", uid, gid);
        c.arg("--run-dir").arg(&d.run_dir).args(args);
        run_with_timeout(&mut c, Duration::from_secs(15)).unwrap_or_else(|(e, _)| panic!("{e}"))
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

const NOBODY: u32 = 65534;

#[test]
fn other_users_cannot_read_pipes_or_use_the_socket() {
    if !need_root(
        "other_users_cannot_read_pipes_or_use_the_socket",
        "acts as other users",
    ) {
        return;
    }
    let bins = PublicBins::new();
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    d.ctl_ok(&["fc", "create", "a", "b"]);

    // Nothing in a pipe directory opens for another user.
    for f in ["pipe.map", "fc/b.map"] {
        let path = d.pipe_dir("a").join(f);
        let mut c = Command::new("cat");
        c.arg(&path).uid(NOBODY).gid(NOBODY).stdout(Stdio::null());
        let o =
            run_with_timeout(&mut c, Duration::from_secs(5)).unwrap_or_else(|(e, _)| panic!("{e}"));
        assert!(
            !o.status.success() && stderr(&o).contains("Permission denied"),
            "user nobody could read {}: {}",
            path.display(),
            stderr(&o)
        );
    }
    // The socket refuses, and says why.
    let o = bins.ctl(&d, NOBODY, NOBODY, &["pipe", "ls"]);
    let msg = stderr(&o);
    assert!(
        !o.status.success(),
        "user nobody used the control socket: {msg}"
    );
    assert!(
        msg.starts_with("docknetctl")
            && msg.contains("permission denied")
            && msg.contains("--group"),
        "the refusal should say what is needed: {msg}"
    );
    let o = bins.ctl(
        &d,
        NOBODY,
        NOBODY,
        &["pipe", "create", "x", "--ip", "10.88.0.9/16"],
    );
    assert!(!o.status.success(), "user nobody created a pipe");
    assert!(
        !d.ctl_ok(&["pipe", "ls"]).contains("10.88.0.9"),
        "a refused request still made a pipe"
    );
}

/// A member of the daemon's group makes a pipe, which is then theirs alone; their
/// service, not root, attaches to it and echoes; another user can neither attach to it
/// nor make pipes for others.
#[test]
fn a_group_member_owns_and_uses_its_pipe() {
    if !need_root(
        "a_group_member_owns_and_uses_its_pipe",
        "acts as other users",
    ) {
        return;
    }
    const MEMBER: u32 = 4242;
    const STRANGER: u32 = 4243;
    let bins = PublicBins::new();
    let d = Daemon::start_with(&["--group", "4242"]);
    let o = bins.ctl(
        &d,
        MEMBER,
        MEMBER,
        &["pipe", "create", "svc", "--ip", "10.88.0.9/16"],
    );
    assert!(
        o.status.success(),
        "a group member cannot create a pipe: {}",
        stderr(&o)
    );
    let ls = d.list("pipe");
    assert_eq!(
        ls[0]["owner"], "4242:4242",
        "the pipe should be the member's: {ls:?}"
    );
    let o = bins.ctl(
        &d,
        MEMBER,
        MEMBER,
        &[
            "pipe",
            "create",
            "y",
            "--ip",
            "10.88.0.10/16",
            "--owner",
            "0",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("only root may"),
        "a member made a pipe for root: {}",
        stderr(&o)
    );
    let o = bins.ctl(&d, STRANGER, STRANGER, &["pipe", "ls"]);
    assert!(!o.status.success(), "a non-member used the socket");

    // The member's service attaches to its own pipe and serves.
    let log = d.run_dir.join("member-echo.log");
    let mut c = bins.as_user("dn-echo", MEMBER, MEMBER);
    c.args(["server", "--port", "7"])
        .env("DOCKNET_PIPE", d.pipe_dir("svc"))
        .stdout(Stdio::piped());
    let (mut server, out) = ChildGuard::spawn(&mut c, "dn-echo (uid 4242)", Some(log));
    let out = out.expect("piped stdout");
    if let Err(e) = wait_for_line(out, "listening", Duration::from_secs(20)) {
        panic!(
            "the member's service did not start on its own pipe: {e} (alive: {})\n{}",
            server.alive(),
            server.log_tail()
        );
    }
    d.create_pipe("c", "10.88.0.11/16", &[]);
    d.echo_ok("c", "10.88.0.9:7", 65536, 16, Duration::from_secs(60));

    // Another user's service cannot take the pipe.
    let mut c = bins.as_user("dn-echo", STRANGER, STRANGER);
    c.args(["server", "--port", "8"])
        .env("DOCKNET_PIPE", d.pipe_dir("svc"));
    let o =
        run_with_timeout(&mut c, Duration::from_secs(10)).unwrap_or_else(|(e, _)| panic!("{e}"));
    assert_eq!(
        o.status.code(),
        Some(2),
        "a stranger attached: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).to_lowercase().contains("permission denied"),
        "the stranger should be told why: {}",
        stderr(&o)
    );
    assert!(server.alive());
}

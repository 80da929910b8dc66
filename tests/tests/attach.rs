//! `docknetctl attach NAME --pid PID` mounts a pipe inside one process's mount namespace
//! only: a service there finds it at /run/docknet/pipe and talks through it; the host's
//! mount table never shows it.

use std::process::{Command, Stdio};
use std::time::Duration;

use docknet_tests::{bin, is_root, Daemon};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mounts_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default()
}

#[test]
fn attach_mounts_the_pipe_in_one_namespace_only() {
    if !is_root() {
        eprintln!(
            "SKIPPED attach_mounts_the_pipe_in_one_namespace_only: needs root (mount namespaces)"
        );
        return;
    }
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    // A stand-in container: a process in its own (private) mount namespace.
    let holder = Kill(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare"),
    );
    let pid = holder.0.id().to_string();
    // unshare execs sleep in the new namespace: wait until its namespace differs.
    for _ in 0..100 {
        if std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
            != std::fs::read_link("/proc/self/ns/mnt").ok()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = d.ctl_ok(&["attach", "a", "--pid", &pid]);
    assert!(out.contains("/run/docknet/pipe"), "{out}");
    assert!(
        mounts_of(&pid).contains(" /run/docknet/pipe "),
        "not mounted in the target namespace:\n{}",
        mounts_of(&pid)
    );
    assert!(
        !mounts_of("self").contains(" /run/docknet/pipe "),
        "the mount leaked into the host namespace"
    );
    // A service inside that namespace uses the default DOCKNET_PIPE and serves.
    let mut server = Kill(
        Command::new("nsenter")
            .args(["--mount=/proc/".to_string() + &pid + "/ns/mnt"])
            .arg(bin("dn-echo"))
            .args(["server", "--port", "7"])
            .env_remove("DOCKNET_PIPE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("nsenter dn-echo"),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "dn-echo inside the namespace exited"
    );
    d.echo_ok("b", "10.88.0.2:7", 1460, 50, Duration::from_secs(60));
    // Errors: our own namespace (would mount on the host) and a missing process.
    let e = d.ctl_err(&["attach", "a", "--pid", &std::process::id().to_string()]);
    assert!(e.contains("shares docknetd's mount namespace"), "{e}");
    let e = d.ctl_err(&["attach", "a", "--pid", "999999999"]);
    assert!(e.contains("no process"), "{e}");
    let e = d.ctl_err(&["attach", "nope", "--pid", &pid]);
    assert!(e.contains("no pipe"), "{e}");
}

//! Services come and go: a fast-channel partner restarts mid-stream and the channel keeps
//! working; a pipe removed under a running service stops that service with a clear error.

use std::time::Duration;

use docknet_tests::{counter, Daemon};

#[test]
fn fast_channel_survives_a_partner_restart() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    d.ctl_ok(&["fc", "create", "a", "b"]);
    let mut server = d.echo_server("a", 7);
    // A long client keeps both sides of the channel busy while the server is stopped.
    let (long, _out) = d.spawn_service(
        "b",
        "dn-echo",
        &[
            "client",
            "--to",
            "10.88.0.2:7",
            "--size",
            "65536",
            "--count",
            "1000000",
            "--timeout-s",
            "5",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_timeout(Duration::from_secs(5)).is_some(),
        "server did not stop on SIGTERM"
    );
    drop(long);
    let before = d.stats(None);
    let _server2 = d.echo_server("a", 7);
    for _ in 0..3 {
        d.echo_ok("b", "10.88.0.2:7", 65536, 200, Duration::from_secs(60));
    }
    let after = d.stats(None);
    let moved = counter(&after, "b", "tx_bytes") - counter(&before, "b", "tx_bytes");
    assert!(moved < 1 << 20, "after the restart the pair talks through the master ({moved} B): the fast channel was abandoned\n{after}");
    for p in ["a", "b"] {
        assert_eq!(counter(&after, p, "ring_corrupt"), 0, "pipe {p}\n{after}");
    }
}

#[test]
fn removing_a_pipe_stops_its_service() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    let mut server = d.echo_server("a", 7);
    d.ctl_ok(&["pipe", "rm", "a"]);
    let status = server
        .wait_timeout(Duration::from_secs(5))
        .expect("service still running after pipe rm");
    assert_eq!(status.code(), Some(1), "{}", server.log_tail());
    assert!(
        server.log_tail().contains("removed the pipe"),
        "{}",
        server.log_tail()
    );
}

/// A service that dies without detaching (SIGKILL here; also an OOM kill or a panic with
/// `panic = "abort"`) leaves its pid in the pipe header, but not its claim (a file lock the
/// kernel drops at death): a new service attaches to the pipe and to the fast channel at
/// once. A second service while one runs is still refused.
#[test]
fn a_killed_service_can_be_replaced() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    d.ctl_ok(&["fc", "create", "a", "b"]);
    let mut server = d.echo_server("a", 7);
    d.echo_ok("b", "10.88.0.2:7", 1460, 10, Duration::from_secs(30));
    server.signal(libc::SIGKILL);
    assert!(
        server.wait_timeout(Duration::from_secs(5)).is_some(),
        "server survived SIGKILL"
    );
    // Its pid is still recorded (it could not detach), but nobody holds the claim.
    let ls = d.ctl_ok(&["pipe", "ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(ls.trim()).expect("pipe ls --json");
    let a = v
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "a"))
        .unwrap_or_else(|| panic!("no pipe a: {ls}"));
    assert_eq!(a["attached_pid"], server.pid(), "{ls}");
    assert_eq!(a["attached"], false, "{ls}");
    let table = d.ctl_ok(&["pipe", "ls"]);
    assert!(
        table.contains(&format!("{} (exited)", server.pid())),
        "{table}"
    );

    let before = d.stats(None);
    let _server2 = d.echo_server("a", 7);
    d.echo_ok("b", "10.88.0.2:7", 65536, 100, Duration::from_secs(60));
    let after = d.stats(None);
    let moved = counter(&after, "b", "tx_bytes") - counter(&before, "b", "tx_bytes");
    assert!(
        moved < 1 << 20,
        "the replacement did not take over the fast channel ({moved} B went through the master)\n{after}"
    );

    // While the replacement runs, a third one is refused: one line, exit 2.
    let mut cmd = std::process::Command::new(docknet_tests::bin("dn-echo"));
    cmd.args(["server", "--port", "8"])
        .env("DOCKNET_PIPE", d.pipe_dir("a"));
    let out = docknet_tests::run_with_timeout(&mut cmd, Duration::from_secs(20))
        .unwrap_or_else(|(e, _)| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("in use by another running process"),
        "stderr: {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{stderr}"
    );
}

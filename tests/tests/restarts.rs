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

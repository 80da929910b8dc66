//! TCP over a lossy path: both services drop a fraction of the frames they receive
//! (`DOCKNET_DROP_RX`, the libOS fault injector), so both directions lose segments and
//! ACKs. The streams must still come back byte-exact, through the master and over a fast
//! channel. The time limit only catches a stall (a connection that never recovers); how
//! fast recovery is gets printed, not asserted.

use std::process::Command;
use std::time::{Duration, Instant};

use docknet_tests::{bin, run_with_timeout, wait_for_line, Daemon};

/// Frames dropped on receive by each service.
const LOSS: &str = "2%";
/// A backstop only: dn-echo itself fails after 30 s without progress, which is what
/// catches a stalled connection.
const STALL_LIMIT: Duration = Duration::from_secs(240);

fn lossy_echo(d: &Daemon, client_pipe: &str, to: &str, size: usize, count: usize) {
    let (mut server, stdout) = d.spawn_service_env(
        "a",
        "dn-echo",
        &["server", "--port", "7"],
        &[("DOCKNET_DROP_RX", LOSS), ("DOCKNET_DROP_SEED", "11")],
    );
    wait_for_line(stdout, "listening", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("dn-echo server not listening: {e}\n{}", server.log_tail()));

    let (size_s, count_s) = (size.to_string(), count.to_string());
    let mut cmd = Command::new(bin("dn-echo"));
    cmd.args(["client", "--to", to, "--size", &size_s, "--count", &count_s])
        .env("DOCKNET_PIPE", d.pipe_dir(client_pipe))
        .env("DOCKNET_DROP_RX", LOSS)
        .env("DOCKNET_DROP_SEED", "12");
    let start = Instant::now();
    let out = match run_with_timeout(&mut cmd, STALL_LIMIT) {
        Ok(out) => out,
        Err((e, out)) => panic!(
            "lossy echo of {size} B x {count} stalled: {e}\nclient stderr: {}\nserver log:\n{}\ndocknetd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log_tail(),
            d.log_tail()
        ),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "lossy echo of {size} B x {count} failed ({}): stdout: {}\nstderr: {stderr}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        server.log_tail()
    );
    // The injector really dropped frames on the client side (the line the runtime prints
    // at exit: "dropped N of M received frames").
    let dropped: u64 = stderr
        .split("dropped ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no injected-loss report from the client: {stderr}"));
    assert!(dropped > 0, "the client dropped no frames: {stderr}");
    eprintln!(
        "[lossy] {size} B x {count} to {to} with {LOSS} loss each way: ok in {:.2?}; client: {}",
        start.elapsed(),
        stderr
            .lines()
            .find(|l| l.contains("injected loss"))
            .unwrap_or("")
    );

    // The server reports its own drops when it stops (SIGTERM closes cleanly).
    server.signal(libc::SIGTERM);
    server.wait_timeout(Duration::from_secs(10));
    let log = server.log_tail();
    assert!(
        log.contains("injected loss") && !log.contains("dropped 0 of"),
        "the server dropped no frames (or did not say): {log}"
    );
}

#[test]
fn tcp_recovers_from_loss_through_the_master() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    // Many small round trips (each loss costs a retransmission timeout), then a stream.
    lossy_echo(&d, "b", "10.88.0.2:7", 1460, 100);
    lossy_echo(&d, "b", "10.88.0.2:7", 16 << 20, 1);
}

#[test]
fn tcp_recovers_from_loss_over_a_fast_channel() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    d.ctl_ok(&["fc", "create", "a", "b"]);
    lossy_echo(&d, "b", "10.88.0.2:7", 16 << 20, 1);
}

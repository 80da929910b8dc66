//! TCP over a lossy path: both services drop a fraction of the frames they receive
//! (`DOCKNET_DROP_RX`, the libOS fault injector), so both directions lose segments and
//! ACKs. The streams must come back byte-exact (dn-echo verifies every byte), through the
//! master and over a fast channel, and loss must be repaired by fast recovery, not by
//! retransmission timeouts: the engines' counters (the exit report of client and server)
//! must show timeouts as at most 5% of all retransmissions. The time limit only catches a
//! stall; how fast recovery is gets printed (and measured by `docknet-bench loss`).

use std::process::Command;
use std::time::{Duration, Instant};

use docknet_tests::{bin, run_with_timeout, wait_for_line, Daemon};

/// A backstop only: dn-echo itself fails after 30 s without progress, which is what
/// catches a stalled connection.
const STALL_LIMIT: Duration = Duration::from_secs(240);

/// At most this share of all retransmissions may be timeouts.
const MAX_TIMEOUT_SHARE: f64 = 0.05;

/// The tests run one at a time: each keeps three processes spinning (master, client,
/// server), and on a 2-vCPU machine several at once leave a service descheduled for
/// longer than the 5 ms minimum RTO, a timeout no loss caused.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What one engine's exit report says about its retransmissions.
#[derive(Debug, Default, Clone, Copy)]
struct Retransmits {
    timeouts: u64,
    all: u64,
}

/// Parses the runtime's exit line "NAME: tcp retransmissions: N timeouts, N fast
/// retransmits, N partial-ack resends, N resends of lost resends, N tail probes". No
/// line means no retransmissions.
fn retransmits(log: &str) -> Retransmits {
    let Some(line) = log.lines().find(|l| l.contains("tcp retransmissions: ")) else {
        return Retransmits::default();
    };
    let counts: Vec<u64> = line
        .split("tcp retransmissions: ")
        .nth(1)
        .unwrap_or("")
        .split(", ")
        .map(|part| {
            part.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unreadable retransmission report: {line:?}"))
        })
        .collect();
    assert_eq!(
        counts.len(),
        5,
        "unexpected retransmission report: {line:?}"
    );
    Retransmits {
        timeouts: counts[0],
        all: counts.iter().sum(),
    }
}

/// Echoes `count` messages of `size` bytes from pipe `client_pipe` to the server on pipe
/// a with `loss` dropped on receive by both; returns the retransmissions of client and
/// server together.
fn lossy_echo(
    d: &Daemon,
    client_pipe: &str,
    to: &str,
    loss: &str,
    size: usize,
    count: usize,
) -> Retransmits {
    let (mut server, stdout) = d.spawn_service_env(
        "a",
        "dn-echo",
        &["server", "--port", "7"],
        &[("DOCKNET_DROP_RX", loss), ("DOCKNET_DROP_SEED", "11")],
    );
    wait_for_line(stdout, "listening", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("dn-echo server not listening: {e}\n{}", server.log_tail()));

    let (size_s, count_s) = (size.to_string(), count.to_string());
    let mut cmd = Command::new(bin("dn-echo"));
    cmd.args(["client", "--to", to, "--size", &size_s, "--count", &count_s])
        .env("DOCKNET_PIPE", d.pipe_dir(client_pipe))
        .env("DOCKNET_DROP_RX", loss)
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
    let elapsed = start.elapsed();
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

    // The server reports its own drops and retransmissions when it stops (SIGTERM closes
    // cleanly).
    server.signal(libc::SIGTERM);
    server.wait_timeout(Duration::from_secs(10));
    let log = server.log_tail();
    assert!(
        log.contains("injected loss") && !log.contains("dropped 0 of"),
        "the server dropped no frames (or did not say): {log}"
    );
    let (c, s) = (retransmits(&stderr), retransmits(&log));
    eprintln!(
        "[lossy] {size} B x {count} to {to} with {loss} loss each way: ok in {elapsed:.2?}; \
         retransmissions: client {} ({} timeouts), server {} ({} timeouts)",
        c.all, c.timeouts, s.all, s.timeouts
    );
    Retransmits {
        timeouts: c.timeouts + s.timeouts,
        all: c.all + s.all,
    }
}

/// A 64 MiB echo at `loss` (long enough that the few timeouts of the first window, before
/// a round trip is measured, do not dominate), byte-exact, with timeouts at most 5% of all retransmissions.
fn bulk_echo_recovers_without_timeouts(fast_channel: bool, loss: &str) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    if fast_channel {
        d.ctl_ok(&["fc", "create", "a", "b"]);
    }
    let r = lossy_echo(&d, "b", "10.88.0.2:7", loss, 64 << 20, 1);
    assert!(
        r.all > 0,
        "frames were dropped but neither engine retransmitted anything: {r:?}"
    );
    assert!(
        r.timeouts as f64 <= MAX_TIMEOUT_SHARE * r.all as f64,
        "at {loss} loss, {} of {} retransmissions were timeouts (more than {:.0}%): fast \
         recovery should repair nearly all losses",
        r.timeouts,
        r.all,
        MAX_TIMEOUT_SHARE * 100.0
    );
}

#[test]
fn bulk_recovers_from_1_percent_loss_through_the_master() {
    bulk_echo_recovers_without_timeouts(false, "1%");
}

#[test]
fn bulk_recovers_from_5_percent_loss_through_the_master() {
    bulk_echo_recovers_without_timeouts(false, "5%");
}

#[test]
fn bulk_recovers_from_1_percent_loss_over_a_fast_channel() {
    bulk_echo_recovers_without_timeouts(true, "1%");
}

#[test]
fn bulk_recovers_from_5_percent_loss_over_a_fast_channel() {
    bulk_echo_recovers_without_timeouts(true, "5%");
}

/// Many small round trips: a lost message or its echo is a tail loss (nothing follows it
/// to raise duplicate ACKs), repaired by the tail-loss probe or, failing that, the RTO.
/// Only completion is asserted here; the share of timeouts is printed.
#[test]
fn small_messages_recover_from_loss_through_the_master() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    lossy_echo(&d, "b", "10.88.0.2:7", "2%", 1460, 100);
}

#[test]
fn parses_the_exit_report() {
    let r = retransmits(
        "x\ndn-echo: tcp retransmissions: 2 timeouts, 14 fast retransmits, 709 partial-ack resends, 11 resends of lost resends, 56 tail probes\n",
    );
    assert_eq!((r.timeouts, r.all), (2, 792));
    let none = retransmits("dn-echo: injected loss: dropped 3 of 9 received frames");
    assert_eq!((none.timeouts, none.all), (0, 0));
}

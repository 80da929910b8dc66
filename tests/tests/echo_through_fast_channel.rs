//! Two services joined by a fast channel exchange byte-exact echo streams without the
//! master switching their data.

use std::time::Duration;

use docknet_tests::{counter, Daemon};

const MIB16: usize = 16 * 1024 * 1024;
/// What the master may still carry for the pair (ARP and the like before the FC is in
/// use): far below the ~17 MiB each way that the test moves.
const MASTER_BYTES_LIMIT: u64 = 1024 * 1024;

#[test]
fn echo_through_fast_channel() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    d.ctl_ok(&["fc", "create", "a", "b"]);
    let fc_a = d.pipe_dir("a").join("fc");
    let fc_b = d.pipe_dir("b").join("fc");
    let n = |p: &std::path::Path| std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    assert!(
        n(&fc_a) > 0 && n(&fc_b) > 0,
        "fc create left no file in {} / {}",
        fc_a.display(),
        fc_b.display()
    );

    let _server = d.echo_server("a", 7);
    let before = d.stats(None);
    for (size, count) in [(1, 20), (1460, 20), (65536, 10), (MIB16, 1)] {
        d.echo_ok("b", "10.88.0.2:7", size, count, Duration::from_secs(180));
    }
    let after = d.stats(None);

    for pipe in ["a", "b"] {
        let delta = |c| counter(&after, pipe, c) - counter(&before, pipe, c);
        let (txf, rxf, txb, rxb) = (
            delta("tx_frames"),
            delta("rx_frames"),
            delta("tx_bytes"),
            delta("rx_bytes"),
        );
        eprintln!("[stats] {pipe} (through the master): tx {txf} frames / {txb} B, rx {rxf} frames / {rxb} B");
        assert!(
            txb < MASTER_BYTES_LIMIT && rxb < MASTER_BYTES_LIMIT,
            "pipe {pipe}: the master switched {txb} B out / {rxb} B in for a fast-channel pair \
             (limit {MASTER_BYTES_LIMIT}): the fast channel is not used\n{after}"
        );
    }

    // Removing the channel falls back to the master, and echo still works.
    d.ctl_ok(&["fc", "rm", "a", "b"]);
    d.echo_ok("b", "10.88.0.2:7", 65536, 4, Duration::from_secs(60));
}

/// A fast channel's own MTU (65000 by default, above these pipes' 9000) is what its two
/// services use toward each other; removing the channel in the middle of a transfer in
/// such segments falls back to the master and the pipes' MTU (smoltcp resends what was
/// lost in pipe-sized segments), and the transfer completes byte-exact.
#[test]
fn removing_a_large_mtu_fast_channel_mid_transfer_falls_back_to_the_master() {
    const MIB: usize = 1 << 20;
    let d = Daemon::start();
    // Pipes smaller than the channel: what the channel carried must fit them after.
    d.create_pipe("a", "10.88.0.2/16", &["--mtu", "9000"]);
    d.create_pipe("b", "10.88.0.3/16", &["--mtu", "9000"]);
    d.ctl_ok(&["fc", "create", "a", "b"]);
    let fcs = d.list("fc");
    assert_eq!(fcs.len(), 1, "{fcs:?}");
    assert_eq!(fcs[0]["mtu"], 65000, "default fast-channel MTU: {fcs:?}");
    assert_eq!(d.pipe_entry("a")["mtu"], 9000);

    let _server = d.echo_server("a", 7);
    let before = d.stats(None);
    // 4 GiB each way: seconds over the channel, so it is removed well before the end. The
    // engine logs its path MTU changes at debug level.
    let (mut client, _stdout) = d.spawn_service_env(
        "b",
        "dn-echo",
        &[
            "client",
            "--to",
            "10.88.0.2:7",
            "--size",
            "1048576",
            "--count",
            "4096",
        ],
        &[("RUST_LOG", "info,docknet::engine=debug")],
    );
    std::thread::sleep(Duration::from_millis(300));
    d.ctl_ok(&["fc", "rm", "a", "b"]);
    let status = client.wait_timeout(Duration::from_secs(300));
    assert!(
        status.is_some_and(|s| s.success()),
        "dn-echo client failed after the channel was removed ({status:?}):\n{}\ndocknetd:\n{}",
        client.log_tail(),
        d.log_tail()
    );
    // It sent in the channel's MTU, then in the pipe's.
    let log = std::fs::read_to_string(client.log.as_ref().expect("client log")).unwrap();
    let big = log.find("path MTU to 10.88.0.2: 65000 (fast channel)");
    let back = log.find("path MTU to 10.88.0.2: the pipe's again");
    assert!(
        matches!((big, back), (Some(b), Some(p)) if b < p),
        "the client's log does not show the channel's MTU, then the pipe's:\n{log}"
    );
    let after = d.stats(None);
    let via_master = counter(&after, "b", "tx_bytes") - counter(&before, "b", "tx_bytes");
    eprintln!("[stats] b sent {via_master} B through the master after the channel went");
    assert!(
        via_master > 64 * MIB as u64,
        "only {via_master} B went through the master: the transfer ended before the channel \
         was removed, so the fallback was not exercised"
    );
}

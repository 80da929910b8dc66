//! Two services exchange byte-exact TCP echo streams through the master (pipe → pipe).

use std::time::Duration;

use docknet_tests::{counter, Daemon};

const MIB16: usize = 16 * 1024 * 1024;

#[test]
fn echo_through_master() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    let _server = d.echo_server("a", 7);

    let before = d.stats(None);
    for (size, count) in [(1, 20), (1460, 20), (65536, 10), (MIB16, 1)] {
        d.echo_ok("b", "10.88.0.2:7", size, count, Duration::from_secs(180));
    }
    let after = d.stats(None);

    // Every byte went b → master → a and back: each pipe carried at least 16 MiB in each
    // direction (counted from whichever side the master counts).
    for pipe in ["a", "b"] {
        let delta = |c| counter(&after, pipe, c) - counter(&before, pipe, c);
        let (txf, rxf, txb, rxb) = (
            delta("tx_frames"),
            delta("rx_frames"),
            delta("tx_bytes"),
            delta("rx_bytes"),
        );
        eprintln!("[stats] {pipe}: tx {txf} frames / {txb} B, rx {rxf} frames / {rxb} B");
        assert!(
            txf > 0 && rxf > 0,
            "pipe {pipe}: no frames counted both ways: {after}"
        );
        assert!(
            txb >= MIB16 as u64 && rxb >= MIB16 as u64,
            "pipe {pipe}: expected >= 16 MiB each way through the master, got tx {txb} B, rx {rxb} B"
        );
    }
}

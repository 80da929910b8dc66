//! A tenant flooding another tenant's service through the master must not starve that
//! service's other clients (the tenant-safety issue, item 5): the flooder's frames fill
//! the server's RX channel, and without a fair share every frame of an honest client,
//! retransmissions included, found it full and its echo stalled. Now the flooder's long
//! runs are shed once the channel is nearly full (`shed` in `stats`), and the echo
//! completes. How much the flood costs in latency is measured, not asserted:
//! `docknet-bench fairness` (docs/benchmarks.md).

use std::time::Duration;

use docknet_tests::{counter, wait_for_line, Daemon};

#[test]
fn a_flood_to_a_service_does_not_starve_its_other_clients() {
    let d = Daemon::start();
    d.create_pipe("srv", "10.93.0.2/16", &[]);
    d.create_pipe("cli", "10.93.0.3/16", &[]);
    d.create_pipe("flood", "10.93.0.4/16", &[]);
    let _server = d.echo_server("srv", 7);
    let flood_dir = d.pipe_dir("flood");
    let (_flooder, out) = d.spawn_service(
        "flood",
        "docknet-bench",
        &[
            "flood",
            "--pipe",
            flood_dir.to_str().expect("UTF-8 run dir"),
            "--kind",
            "to-server",
        ],
    );
    wait_for_line(out, "flooding", Duration::from_secs(10)).expect("flooder started");
    std::thread::sleep(Duration::from_millis(300));
    // Fails (no progress for 30 s) without the fair share.
    d.echo_ok("cli", "10.93.0.2:7", 1024, 2000, Duration::from_secs(120));
    let stats = d.stats(None);
    let shed = counter(&stats, "srv", "shed");
    eprintln!("[fairness] flooder frames shed at the server: {shed}");
    assert!(shed > 0, "the flooder was never cut: {stats}");
    assert_eq!(counter(&stats, "cli", "shed"), 0);
}

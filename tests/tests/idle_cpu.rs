//! An idle docknetd with two idle attached services uses under 2% of one core each
//! (doorbells: spin, then sleep on a futex).

use std::time::{Duration, Instant};

use docknet_tests::{clock_ticks_per_sec, cpu_ticks, Daemon};

const LIMIT: f64 = 0.02;

#[test]
fn idle_cpu() {
    let d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    d.create_pipe("c", "10.88.0.4/16", &[]);
    let sa = d.echo_server("a", 7);
    let sb = d.echo_server("b", 8);
    // Some traffic first, so everybody goes from busy back to idle.
    d.echo_ok("c", "10.88.0.2:7", 1460, 20, Duration::from_secs(60));
    d.echo_ok("c", "10.88.0.3:8", 1460, 20, Duration::from_secs(60));

    std::thread::sleep(Duration::from_secs(1));
    let procs = [
        ("docknetd", d.pid()),
        ("dn-echo server a", sa.pid()),
        ("dn-echo server b", sb.pid()),
    ];
    let t0 = Instant::now();
    let before: Vec<u64> = procs
        .iter()
        .map(|(n, p)| cpu_ticks(*p).unwrap_or_else(|| panic!("{n} (pid {p}) is gone")))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<u64> = procs
        .iter()
        .map(|(n, p)| cpu_ticks(*p).unwrap_or_else(|| panic!("{n} (pid {p}) is gone")))
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    let hz = clock_ticks_per_sec() as f64;

    let mut bad = Vec::new();
    for (i, (name, pid)) in procs.iter().enumerate() {
        let share = (after[i] - before[i]) as f64 / hz / secs;
        eprintln!(
            "[idle] {name} (pid {pid}): {:.2}% of a core over {secs:.1} s",
            share * 100.0
        );
        if share >= LIMIT {
            bad.push(format!(
                "{name} used {:.1}% of a core while idle (limit {:.0}%)",
                share * 100.0,
                LIMIT * 100.0
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("; "));
}

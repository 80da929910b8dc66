//! Many clients connect to one server at once, each from its own pipe in the server's
//! subnet. smoltcp sends at most one ARP request per second, so a server that had to ARP
//! for each new client served the N-th of N simultaneous clients after N-1 seconds; the
//! libOS now teaches smoltcp each peer's MAC from the peer's own frames (libos/src/peers.rs).
//! Checked without timing: the master counts every ARP request a pipe makes
//! (`arp_replies`), and the server must make none.

use std::process::Command;
use std::time::{Duration, Instant};

use docknet_tests::{bin, counter, run_with_timeout, Daemon};

const CLIENTS: u8 = 8;

#[test]
fn server_answers_many_new_clients_without_arp() {
    let d = Daemon::start();
    d.create_pipe("srv", "10.88.0.2/16", &[]);
    for i in 0..CLIENTS {
        d.create_pipe(&format!("c{i}"), &format!("10.88.1.{}/16", i + 10), &[]);
    }
    let _server = d.echo_server("srv", 7);

    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let dir = d.pipe_dir(&format!("c{i}"));
            std::thread::spawn(move || {
                let mut cmd = Command::new(bin("dn-echo"));
                cmd.args([
                    "client",
                    "--to",
                    "10.88.0.2:7",
                    "--size",
                    "1460",
                    "--count",
                    "10",
                ])
                .env("DOCKNET_PIPE", dir);
                let t = Instant::now();
                let out = run_with_timeout(&mut cmd, Duration::from_secs(60))
                    .unwrap_or_else(|(e, _)| panic!("client {i}: {e}"));
                (i, out, t.elapsed())
            })
        })
        .collect();
    for c in clients {
        let (i, out, took) = c.join().expect("client thread");
        assert!(
            out.status.success(),
            "client c{i} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("[clients] c{i} done in {took:.2?}");
    }
    eprintln!(
        "[clients] {CLIENTS} concurrent clients done in {:.2?}",
        start.elapsed()
    );

    let stats = d.stats(None);
    // Each client asked the master once for the server's MAC...
    for i in 0..CLIENTS {
        assert_eq!(
            counter(&stats, &format!("c{i}"), "arp_replies"),
            1,
            "client c{i}: {stats}"
        );
    }
    // ...and the server never had to ask about a client.
    assert_eq!(
        counter(&stats, "srv", "arp_replies"),
        0,
        "the server ARPed for its clients (one request per second at most in smoltcp): {stats}"
    );
}

//! Many clients connect to one server at once, each from its own pipe in the server's
//! subnet. smoltcp sends at most one ARP request per second and keeps 8 neighbours, so a
//! server that had to ARP for each new client served the N-th of N simultaneous clients
//! after N-1 seconds. Services now speak IP to smoltcp (`Medium::Ip`, libos/src/device.rs)
//! and never ARP. Checked without timing: the master counts every ARP request a pipe makes
//! (`arp_replies`), and no pipe may make one.

use std::process::Command;
use std::time::{Duration, Instant};

use docknet_tests::{bin, counter, run_with_timeout, Daemon};

/// More than smoltcp's 8-entry neighbour cache.
const CLIENTS: u8 = 16;

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
    // Neither the clients nor the server asked the master for a MAC address.
    for i in 0..CLIENTS {
        assert_eq!(
            counter(&stats, &format!("c{i}"), "arp_replies"),
            0,
            "client c{i} made ARP requests: {stats}"
        );
    }
    assert_eq!(
        counter(&stats, "srv", "arp_replies"),
        0,
        "the server ARPed for its clients (one request per second at most in smoltcp): {stats}"
    );
}

//! Many clients connect to one server at once, each from its own pipe in the server's
//! subnet. smoltcp sends at most one ARP request per second and keeps 8 neighbours, so a
//! server that had to ARP for each new client served the N-th of N simultaneous clients
//! after N-1 seconds. Services now speak IP to smoltcp (`Medium::Ip`, libos/src/device.rs)
//! and never ARP. Checked without timing: the master counts every ARP request a pipe makes
//! (`arp_replies`), and no pipe may make one.

use std::time::{Duration, Instant};

use docknet_tests::{counter, Daemon};

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
    std::thread::scope(|scope| {
        for i in 0..CLIENTS {
            let d = &d;
            scope.spawn(move || {
                let t = Instant::now();
                d.echo_ok(
                    &format!("c{i}"),
                    "10.88.0.2:7",
                    1460,
                    10,
                    Duration::from_secs(60),
                );
                eprintln!("[clients] c{i} done in {:.2?}", t.elapsed());
            });
        }
    });
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

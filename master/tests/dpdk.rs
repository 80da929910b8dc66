//! The DPDK backend against a real PMD: DPDK's `net_af_packet` driver on one end of a veth
//! pair inside a private network namespace, a raw AF_PACKET socket on the other end.
//!
//! Needs root (netns, veth, raw sockets) and the `dpdk` feature:
//! `cargo test -p docknet-master --features dpdk --test dpdk -- --nocapture`.
//! DPDK's EAL can be initialised once per process, so this file holds a single test.
#![cfg(feature = "dpdk")]

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use docknet_master::nic::dpdk::{DpdkNic, BURST};
use docknet_master::nic::Nic;
use docknet_tests::need_root;
use docknet_tests::nic::frames::{self, numbered as frame};
use docknet_tests::nic::{veth, DpdkPrefix, Netns, RawSocket};

/// The veth end the PMD opens, and the "wire" end (a raw AF_PACKET socket).
const A: &str = "dnd-a";
const B: &str = "dnd-b";

fn is_ours(f: &[u8]) -> bool {
    frames::numbered_seq(f).is_some()
}

/// The next frame of this test on the wire (not one we sent ourselves), if one arrives
/// before `deadline`.
fn wire_recv(wire: &RawSocket, buf: &mut [u8], deadline: Instant) -> Option<usize> {
    wire.recv_until(buf, deadline, |f, outgoing| !outgoing && is_ours(f))
}

/// Receive `n` test frames from the NIC (skipping anything else on the link).
fn rx_ours(nic: &mut DpdkNic, n: usize, max: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let k = nic.rx_burst(max, &mut |f| {
            if is_ours(f) {
                got.push(f.to_vec())
            }
        });
        assert!(
            k <= max.min(BURST),
            "rx_burst handed {k} frames, more than max {max}"
        );
    }
    got
}

#[test]
fn dpdk_af_packet_pmd_rx_tx() {
    if !need_root("dpdk test", "network namespace, veth, raw sockets") {
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping dpdk test: needs iproute2 (`ip`)");
        return;
    }
    // Guards: EAL's runtime directory and the namespace (with the pair) go on every exit.
    let prefix = DpdkPrefix::new();
    let ns = Netns::new("dpdk");
    veth(&ns, A, &ns, B);
    // The body runs on its own thread, which enters the namespace before EAL starts (the
    // af_packet PMD opens its socket during rte_eal_init): the harness thread stays out.
    ns.run(|| run(prefix.prefix(), A, B));
}

fn run(prefix: &str, a: &str, b: &str) {
    let wire = RawSocket::bind(b).expect("raw socket on the wire end");
    let (a_mac, _) = docknet_master::nic::iface_mac_mtu(a).expect("MAC of the DPDK end");
    let (b_mac, _) = docknet_master::nic::iface_mac_mtu(b).expect("MAC of the wire end");
    let args = format!(
        "--no-huge --no-pci -m 128 -l 0 --log-level=error --no-telemetry --no-shconf \
         --file-prefix={prefix} --vdev=net_af_packet0,iface={a}"
    );
    let cpus_before = affinity();
    let mut nic = DpdkNic::open(&args).unwrap_or_else(|e| panic!("DpdkNic::open({args}): {e}"));

    assert_eq!(
        affinity(),
        cpus_before,
        "EAL's pinning of the calling thread is undone"
    );

    // EAL is once per process.
    let again = DpdkNic::open(&args).err().expect("a second open must fail");
    assert!(again.contains("only once"), "unclear error: {again}");

    assert_eq!(nic.name(), "dpdk:net_af_packet0");
    assert_eq!(nic.mac(), a_mac, "the PMD reports the interface's MAC");
    assert_eq!(nic.max_frame(), 1514);
    assert_eq!(nic.rx_fd(), None);
    assert_eq!(nic.rx_burst(0, &mut |_| panic!("max 0 hands nothing")), 0);

    // RX: frames sent on the wire arrive byte-exact, in order, at sizes up to max_frame.
    let sizes = [60usize, 64, 100, 128, 511, 512, 1000, 1500, 1513, 1514];
    let sent: Vec<Vec<u8>> = (0..40)
        .map(|i| frame(a_mac, b_mac, i, sizes[i as usize % sizes.len()]))
        .collect();
    for f in &sent {
        wire.send(f).expect("send on the wire");
    }
    let got = rx_ours(&mut nic, sent.len(), 7);
    assert_eq!(
        got.len(),
        sent.len(),
        "received {} of {} frames",
        got.len(),
        sent.len()
    );
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g, s, "frame differs");
    }

    // TX: frames written in place arrive on the wire byte-exact; more than BURST frames
    // before a flush are flushed automatically.
    let out: Vec<Vec<u8>> = (0..(BURST as u32 + 13))
        .map(|i| frame(b_mac, a_mac, 1000 + i, sizes[i as usize % sizes.len()]))
        .collect();
    for f in &out {
        let mut called = false;
        assert!(nic.tx(f.len(), &mut |buf| {
            assert_eq!(buf.len(), f.len());
            buf.copy_from_slice(f);
            called = true;
        }));
        assert!(called);
    }
    nic.flush_tx();
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, f) in out.iter().enumerate() {
        let n = wire_recv(&wire, &mut buf, deadline)
            .unwrap_or_else(|| panic!("frame {i} of {} not on the wire", out.len()));
        assert_eq!(&buf[..n], &f[..], "frame {i} differs on the wire");
    }
    // Oversize: refused without calling fill, counted.
    let before = nic.stats().tx_dropped;
    assert!(!nic.tx(nic.max_frame() + 1, &mut |_| panic!(
        "fill called for an oversize frame"
    )));
    assert_eq!(nic.stats().tx_dropped, before + 1);

    // rte_flow: the af_packet PMD has none, so steer falls back (with a reason).
    let ip4 = Ipv4Addr::new(10, 88, 0, 2);
    let why = nic
        .try_steer(ip4)
        .expect_err("af_packet PMD has no rte_flow");
    eprintln!("steer on af_packet: {why}");
    assert!(!nic.steer(ip4));
    nic.unsteer(ip4);

    let s = nic.stats();
    assert!(s.rx_frames >= sent.len() as u64, "{s:?}");
    assert_eq!(s.tx_frames, out.len() as u64, "{s:?}");
    assert_eq!(
        s.tx_bytes,
        out.iter().map(|f| f.len() as u64).sum::<u64>(),
        "{s:?}"
    );

    latency(&mut nic, &wire, a_mac, b_mac);

    drop(nic);
    let after = DpdkNic::open(&args)
        .err()
        .expect("EAL cannot come back after cleanup");
    assert!(after.contains("only once"), "unclear error: {after}");
}

/// Ping-pong: the wire sends a frame, the NIC receives it and sends it back. Prints the
/// round trip (kernel veth + PMD both ways) and the NIC's own rx-to-tx time.
fn latency(nic: &mut DpdkNic, wire: &RawSocket, a_mac: [u8; 6], b_mac: [u8; 6]) {
    let rounds = 2000;
    let mut rtt = Vec::with_capacity(rounds);
    let mut turn = Vec::with_capacity(rounds);
    let mut buf = vec![0u8; 2048];
    for i in 0..rounds {
        let f = frame(a_mac, b_mac, 5000 + i as u32, 128);
        let t0 = Instant::now();
        wire.send(&f).expect("send on the wire");
        let deadline = t0 + Duration::from_secs(2);
        let mut echo = [0u8; 128];
        let mut got = false;
        let mut t_rx = t0;
        while !got {
            assert!(Instant::now() < deadline, "round {i}: frame lost");
            nic.rx_burst(BURST, &mut |g| {
                if g == &f[..] {
                    t_rx = Instant::now();
                    echo.copy_from_slice(g);
                    echo[..6].copy_from_slice(&b_mac);
                    echo[6..12].copy_from_slice(&a_mac);
                    got = true;
                }
            });
        }
        assert!(nic.tx(echo.len(), &mut |b| b.copy_from_slice(&echo)));
        nic.flush_tx();
        let t_tx = Instant::now();
        let n = wire_recv(wire, &mut buf, deadline).expect("echo lost");
        let t1 = Instant::now();
        assert_eq!(&buf[..n], &echo[..]);
        if i >= 100 {
            rtt.push(t1 - t0);
            turn.push(t_tx - t_rx);
        }
    }
    rtt.sort();
    turn.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    eprintln!(
        "dpdk af_packet ping-pong over veth, 128 B, {} rounds: RTT median {:?} p99 {:?}; \
         NIC rx->tx (rx_burst return to flush_tx return) median {:?} p99 {:?}",
        rtt.len(),
        pct(&rtt, 50),
        pct(&rtt, 99),
        pct(&turn, 50),
        pct(&turn, 99)
    );
}

/// The calling thread's CPU affinity, as a list of CPUs.
fn affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-parameter of the given size, for the calling thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        r,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: CPU_ISSET reads the set within its size.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

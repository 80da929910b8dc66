//! The DPDK backend against a real PMD: DPDK's `net_af_packet` driver on one end of a veth
//! pair inside a private network namespace, a raw AF_PACKET socket on the other end.
//!
//! Needs root (netns, veth, raw sockets) and the `dpdk` feature:
//! `cargo test -p docknet-master --features dpdk --test dpdk -- --nocapture`.
//! DPDK's EAL can be initialised once per process, so this file holds a single test.
#![cfg(feature = "dpdk")]

use std::net::Ipv4Addr;
use std::process::Command;

mod common;
use common::{enter_netns, ip};
use std::time::{Duration, Instant};

use docknet_master::nic::dpdk::{DpdkNic, BURST};
use docknet_master::nic::Nic;

/// A local experimental EtherType: frames of this test, nothing else uses it.
const ETHERTYPE: u16 = 0x88b5;

/// A network namespace with a veth pair `a` <-> `b`, deleted (with the pair) on drop.
struct Netns {
    name: String,
    a: String,
    b: String,
}

impl Netns {
    fn new() -> Result<Netns, String> {
        let pid = std::process::id();
        let ns = Netns {
            name: format!("dndpdk{pid}"),
            a: format!("dnda{pid}"),
            b: format!("dndb{pid}"),
        };
        ip(&["netns", "add", &ns.name])?;
        // From here on, drop deletes the namespace whatever fails next.
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])
            .args(["net.ipv6.conf.default.disable_ipv6=1"])
            .output();
        ip(&[
            "-n", &ns.name, "link", "add", &ns.a, "type", "veth", "peer", "name", &ns.b,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &ns.a, "up"])?;
        ip(&["-n", &ns.name, "link", "set", &ns.b, "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        // EAL's runtime directory for this run's --file-prefix (DpdkNic removes it when
        // empty; a failed run may leave it behind).
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.name));
    }
}

/// A raw AF_PACKET socket bound to one interface (the "wire" end of the test).
struct Raw(i32);

impl Raw {
    fn bind(iface: &str) -> Raw {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let name = std::ffi::CString::new(iface).unwrap();
        // SAFETY: NUL-terminated interface name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "no interface {iface}");
        // SAFETY: sockaddr_ll is plain data.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: bind with a properly sized sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert!(
            r == 0,
            "bind to {iface}: {}",
            std::io::Error::last_os_error()
        );
        Raw(fd)
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: send(2) of a valid buffer on our bound socket.
        let r = unsafe { libc::send(self.0, frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            r,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The next frame of this test (our EtherType, not one we sent ourselves), if one
    /// arrives before `deadline`.
    fn recv(&self, buf: &mut [u8], deadline: Instant) -> Option<usize> {
        loop {
            // SAFETY: sockaddr_ll is plain data.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: recvfrom(2) into valid buffers of the given sizes.
            let n = unsafe {
                libc::recvfrom(
                    self.0,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut sa as *mut libc::sockaddr_ll).cast(),
                    &mut sl,
                )
            };
            if n >= 14
                && sa.sll_pkttype != libc::PACKET_OUTGOING
                && buf[12..14] == ETHERTYPE.to_be_bytes()
            {
                return Some(n as usize);
            }
            if n < 0 && Instant::now() > deadline {
                return None;
            }
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: closing the fd we own.
        unsafe { libc::close(self.0) };
    }
}

/// A test frame of `len` bytes: to `dst`, from `src`, our EtherType, a sequence number,
/// then a pattern.
fn frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    let start = f.len();
    f.extend((start..len).map(|i| (i as u32 ^ seq) as u8));
    f.truncate(len);
    f
}

fn is_ours(f: &[u8]) -> bool {
    f.len() >= 14 && f[12..14] == ETHERTYPE.to_be_bytes()
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping dpdk test: needs root (network namespace, veth, raw sockets)");
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping dpdk test: needs iproute2 (`ip`)");
        return;
    }
    let ns = Netns::new().expect("create netns + veth");
    let (a, b) = (ns.a.clone(), ns.b.clone());
    // The body runs on its own thread, which enters the namespace before EAL starts (the
    // af_packet PMD opens its socket during rte_eal_init): the harness thread stays out.
    let nsname = ns.name.clone();
    let body = std::thread::spawn(move || {
        enter_netns(&nsname).expect("enter netns");
        run(&nsname, &a, &b)
    });
    let result = body.join();
    drop(ns);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn run(nsname: &str, a: &str, b: &str) {
    let wire = Raw::bind(b);
    let (a_mac, _) = docknet_master::nic::iface_mac_mtu(a).expect("MAC of the DPDK end");
    let (b_mac, _) = docknet_master::nic::iface_mac_mtu(b).expect("MAC of the wire end");
    let args = format!(
        "--no-huge --no-pci -m 128 -l 0 --log-level=error --no-telemetry --no-shconf \
         --file-prefix={nsname} --vdev=net_af_packet0,iface={a}"
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
        wire.send(f);
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
        let n = wire
            .recv(&mut buf, deadline)
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
fn latency(nic: &mut DpdkNic, wire: &Raw, a_mac: [u8; 6], b_mac: [u8; 6]) {
    let rounds = 2000;
    let mut rtt = Vec::with_capacity(rounds);
    let mut turn = Vec::with_capacity(rounds);
    let mut buf = vec![0u8; 2048];
    for i in 0..rounds {
        let f = frame(a_mac, b_mac, 5000 + i as u32, 128);
        let t0 = Instant::now();
        wire.send(&f);
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
        let n = wire.recv(&mut buf, deadline).expect("echo lost");
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

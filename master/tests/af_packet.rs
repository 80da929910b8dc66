//! The AF_PACKET backend on a real veth pair, in a network namespace of its own.
//!
//! Needs root (network namespaces, raw sockets); without it each test says why and passes.
//! Each test makes a namespace (the kit's `Netns`, deleted on every exit path) holding
//! veth [`A`] (the `AfPacketNic` end) and [`B`] (a plain AF_PACKET socket, no ring), and
//! runs its body on a thread that entered the namespace.
//!
//! `latency` prints one-way latencies (`cargo test --test af_packet -- --nocapture`).

use std::time::{Duration, Instant};

use docknet_master::nic::af_packet::{AfPacketNic, RingVersion};
use docknet_master::nic::{iface_mac_mtu, Nic};
use docknet_tests::need_root;
use docknet_tests::nic::frames::{self, numbered as frame, parse_tcp, TCP_ACK, TCP_PSH, TCP_SYN};
use docknet_tests::nic::{run_ok, serial, veth, Netns, RawSocket};

/// The veth end the `AfPacketNic` opens, and the far end.
const A: &str = "dnap-a";
const B: &str = "dnap-b";

/// The test's namespace with the veth pair [`A`] <-> [`B`]; `None` (with the reason
/// printed) if this host cannot run the test.
fn netns(test: &str) -> Option<Netns> {
    if !need_root(test, "network namespaces and raw sockets") {
        return None;
    }
    let ns = match Netns::try_new("ap") {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipping {test}: cannot make a network namespace: {e}");
            return None;
        }
    };
    veth(&ns, A, &ns, B);
    Some(ns)
}

/// A raw socket on `iface` of the calling thread's namespace: the far end (or a plain
/// socket beside the ring).
fn raw(iface: &str) -> RawSocket {
    RawSocket::bind(iface).unwrap_or_else(|e| panic!("raw socket on {iface}: {e}"))
}

/// Next test frame from `src` on `s`, spinning up to `timeout`.
fn recv_from(s: &RawSocket, src: [u8; 6], buf: &mut [u8], timeout: Duration) -> Option<usize> {
    s.recv_until(buf, Instant::now() + timeout, |f, _| is_test_frame(f, src))
}

fn is_test_frame(f: &[u8], src: [u8; 6]) -> bool {
    frames::numbered_seq(f).is_some() && f[6..12] == src
}

/// Spin on `nic.rx_burst` until a test frame from `src` arrives (or `timeout`).
fn nic_recv(nic: &mut AfPacketNic, src: [u8; 6], timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = None;
    while got.is_none() {
        nic.rx_burst(1, &mut |f: &[u8]| {
            if is_test_frame(f, src) {
                got = Some(f.to_vec());
            }
        });
        if Instant::now() > deadline {
            break;
        }
    }
    got
}

/// Frame sizes: the smallest Ethernet frame, odd and even sizes, up to MTU + 14.
fn sizes(max_frame: usize) -> Vec<usize> {
    let mut v = vec![60, 61, 64, 99, 128, 255, 512, 1000, 1024];
    v.extend([max_frame - 15, max_frame - 2, max_frame - 1, max_frame]);
    v
}

#[test]
fn receives_frames_byte_exact_and_in_order() {
    let _serial = serial();
    let Some(ns) = netns("receives_frames_byte_exact_and_in_order") else {
        return;
    };
    let (a, b) = (A, B);
    ns.run(|| {
        for v in [RingVersion::V2, RingVersion::V3] {
            receive(&ns, a, b, v);
        }
    });
}

fn receive(ns: &Netns, a: &str, b: &str, v: RingVersion) {
    {
        let mut nic = AfPacketNic::open_with(a, v).expect("open");
        let far = raw(b);
        assert_eq!(nic.max_frame(), 1514);
        assert!(nic.rx_fd().is_some());
        let dst = nic.mac();
        for (seq, &len) in sizes(nic.max_frame()).iter().enumerate() {
            let f = frame(dst, far.mac(), seq as u32, len);
            far.send(&f).expect("send");
            let got = nic_recv(&mut nic, far.mac(), Duration::from_secs(2)).expect("frame lost");
            assert_eq!(got, f, "frame of {len} bytes differs");
        }

        // 1000 frames from another thread while this one reads: all, in order. With
        // offloads the V2 ring has 512 slots of 64 KiB: a burst is kept within the ring
        // (the reader may start late).
        let slots = nic.rx_slots();
        let n: u32 = if slots == 0 {
            1000
        } else {
            1000.min(slots as u32 - 16)
        };
        let dst2 = dst;
        // A socket stays in the namespace it was made in: the sender thread needs no setns.
        let far2 = RawSocket::open(ns, b).expect("raw socket on the far end");
        let sender = std::thread::spawn(move || {
            for seq in 0..n {
                let len = 60 + (seq as usize * 37) % (1514 - 60 + 1);
                far2.send(&frame(dst2, far2.mac(), seq, len)).expect("send");
            }
        });
        let mut next = 0u32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while next < n && Instant::now() < deadline {
            nic.rx_burst(64, &mut |f: &[u8]| {
                if !is_test_frame(f, far.mac()) {
                    return;
                }
                let seq = u32::from_be_bytes([f[14], f[15], f[16], f[17]]);
                let len = 60 + (seq as usize * 37) % (1514 - 60 + 1);
                assert_eq!(seq, next, "frame out of order or lost");
                assert_eq!(
                    f,
                    &frame(dst, far.mac(), seq, len)[..],
                    "frame {seq} differs"
                );
                next += 1;
            });
        }
        sender.join().unwrap();
        assert_eq!(next, n, "only {next} of {n} frames arrived");
        let st = nic.stats();
        assert!(st.rx_frames >= n as u64 + 13, "{st:?}");
        assert_eq!(st.rx_dropped, 0, "{st:?}");
    }
}

#[test]
fn sends_frames_byte_exact_and_in_order() {
    let _serial = serial();
    let Some(ns) = netns("sends_frames_byte_exact_and_in_order") else {
        return;
    };
    let (a, b) = (A, B);
    ns.run(|| {
        for v in [RingVersion::V2, RingVersion::V3] {
            send(a, b, v);
        }
    });
}

fn send(a: &str, b: &str, v: RingVersion) {
    {
        let mut nic = AfPacketNic::open_with(a, v).expect("open");
        let far = raw(b);
        let src = nic.mac();
        let mut buf = vec![0u8; 65536];
        for (seq, &len) in sizes(nic.max_frame()).iter().enumerate() {
            let f = frame(far.mac(), src, seq as u32, len);
            assert!(nic.tx(len, &mut |d: &mut [u8]| d.copy_from_slice(&f)));
            nic.flush_tx();
            let n = recv_from(&far, src, &mut buf, Duration::from_secs(2)).expect("frame lost");
            assert_eq!(&buf[..n], &f[..], "frame of {len} bytes differs");
        }
        // Too big: refused without calling fill, and counted.
        let before = nic.stats().tx_dropped;
        assert!(!nic.tx(nic.max_frame() + 1, &mut |_: &mut [u8]| panic!(
            "fill called"
        )));
        assert_eq!(nic.stats().tx_dropped, before + 1);

        // 1000 frames in batches of 32 (one kick each): all arrive, in order.
        const N: u32 = 1000;
        let mut next_rx = 0u32;
        let mut seq = 0u32;
        while seq < N {
            for _ in 0..32 {
                if seq == N {
                    break;
                }
                let len = 60 + (seq as usize * 37) % (1514 - 60 + 1);
                let f = frame(far.mac(), src, seq, len);
                assert!(
                    nic.tx(len, &mut |d: &mut [u8]| d.copy_from_slice(&f)),
                    "ring full"
                );
                seq += 1;
            }
            nic.flush_tx();
            while next_rx < seq {
                let n = recv_from(&far, src, &mut buf, Duration::from_secs(2)).expect("frame lost");
                let s = u32::from_be_bytes([buf[14], buf[15], buf[16], buf[17]]);
                assert_eq!(s, next_rx, "frame out of order or lost");
                let len = 60 + (s as usize * 37) % (1514 - 60 + 1);
                assert_eq!(&buf[..n], &frame(far.mac(), src, s, len)[..]);
                next_rx += 1;
            }
        }
        let st = nic.stats();
        assert_eq!(st.tx_frames, N as u64 + 13, "{st:?}");

        // Filling the whole ring without a kick: the ring refuses once full, then frees
        // up after a kick.
        let slots = nic.tx_slots();
        let mut queued = 0;
        while nic.tx(60, &mut |d: &mut [u8]| {
            d.copy_from_slice(&frame(far.mac(), src, 0, 60))
        }) {
            queued += 1;
            assert!(queued <= slots);
        }
        assert_eq!(queued, slots);
        nic.flush_tx();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut ok = false;
        while !ok && Instant::now() < deadline {
            ok = nic.tx(60, &mut |d: &mut [u8]| {
                d.copy_from_slice(&frame(far.mac(), src, 0, 60))
            });
        }
        assert!(ok, "TX ring never drained");
        nic.flush_tx();
    }
}

#[test]
fn own_frames_are_not_looped_back() {
    let _serial = serial();
    let Some(ns) = netns("own_frames_are_not_looped_back") else {
        return;
    };
    let a = A;
    ns.run(|| {
        for v in [RingVersion::V2, RingVersion::V3] {
            let mut nic = AfPacketNic::open_with(a, v).expect("open");
            let src = nic.mac();
            for seq in 0..10 {
                let f = frame([0xff; 6], src, seq, 100);
                assert!(nic.tx(100, &mut |d: &mut [u8]| d.copy_from_slice(&f)));
            }
            nic.flush_tx();
            assert_eq!(nic_recv(&mut nic, src, Duration::from_millis(100)), None);
        }
    });
}

#[test]
fn open_errors_name_the_interface() {
    let e = AfPacketNic::open("dnap-nosuch0")
        .err()
        .expect("no such interface");
    assert!(e.contains("dnap-nosuch0"), "{e}");
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, v: &mut [f64]) {
    println!(
        "af-packet latency {what:>44}: p50 {:>8.1} µs  p90 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs",
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 0.99),
        pct(v, 1.0)
    );
}

/// One-way latency of a 1 KB frame: far end `send` → `rx_burst` sees it (spinning), next
/// to a plain raw socket's `recv` for comparison, and `tx`+`flush_tx` → far end `recv`.
#[test]
fn latency() {
    let _serial = serial();
    let Some(ns) = netns("latency") else { return };
    let (a, b) = (A, B);
    ns.run(|| {
        for v in [RingVersion::V2, RingVersion::V3] {
            latency_of(a, b, v);
        }
    });
}

fn latency_of(a: &str, b: &str, v: RingVersion) {
    let mut nic = AfPacketNic::open_with(a, v).expect("open");
    let far = raw(b);
    let near = raw(a);
    let dst = nic.mac();
    let n = 300;
    let mut buf = vec![0u8; 65536];
    let gap = Duration::from_micros(200);
    let (mut rx, mut plain, mut tx) = (Vec::new(), Vec::new(), Vec::new());
    for seq in 0..n {
        let f = frame(dst, far.mac(), seq, 1024);
        let t0 = Instant::now();
        far.send(&f).expect("send");
        let got = nic_recv(&mut nic, far.mac(), Duration::from_secs(1)).expect("lost");
        rx.push(t0.elapsed().as_secs_f64() * 1e6);
        assert_eq!(got, f);
        // The plain socket on the same end got it too: drain.
        while recv_from(&near, far.mac(), &mut buf, Duration::ZERO).is_some() {}
        std::thread::sleep(gap);
    }
    for seq in 0..n {
        let f = frame(dst, far.mac(), seq, 1024);
        let t0 = Instant::now();
        far.send(&f).expect("send");
        recv_from(&near, far.mac(), &mut buf, Duration::from_secs(1)).expect("lost");
        plain.push(t0.elapsed().as_secs_f64() * 1e6);
        // Drain the ring's copy.
        while nic_recv(&mut nic, far.mac(), Duration::from_millis(20)).is_some() {}
        std::thread::sleep(gap);
    }
    let src = nic.mac();
    for seq in 0..n {
        let f = frame(far.mac(), src, seq, 1024);
        let t0 = Instant::now();
        assert!(nic.tx(1024, &mut |d: &mut [u8]| d.copy_from_slice(&f)));
        nic.flush_tx();
        recv_from(&far, src, &mut buf, Duration::from_secs(1)).expect("lost");
        tx.push(t0.elapsed().as_secs_f64() * 1e6);
        std::thread::sleep(gap);
    }
    report(&format!("{v:?}: send -> rx_burst"), &mut rx);
    report("send -> recv (plain AF_PACKET socket)", &mut plain);
    report(&format!("{v:?}: tx+flush_tx -> recv"), &mut tx);
}

/// UDP sent by the kernel on the far veth end arrives with CHECKSUM_PARTIAL (no UDP
/// checksum yet); the backend completes it before handing the frame up.
#[test]
fn completes_checksums_of_kernel_frames() {
    let _serial = serial();
    let Some(ns) = netns("completes_checksums_of_kernel_frames") else {
        return;
    };
    let (a, b) = (A, B);
    ns.run(|| {
        for v in [RingVersion::V2, RingVersion::V3] {
            let mut nic = AfPacketNic::open_with(a, v).expect("open");
            let mac = nic.mac().map(|x| format!("{x:02x}")).join(":");
            ns.ip(&["addr", "replace", "10.77.0.2/24", "dev", b]);
            ns.ip(&["neigh", "replace", "10.77.0.1", "lladdr", &mac, "dev", b]);
            let near = raw(a);
            let sock = std::net::UdpSocket::bind("10.77.0.2:0").unwrap();
            let payload = vec![0x5au8; 999];
            sock.send_to(&payload, "10.77.0.1:7777").unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut seen = None;
            while seen.is_none() && Instant::now() < deadline {
                nic.rx_burst(16, &mut |f: &[u8]| {
                    if f.len() >= 42
                        && f[12..14] == [8, 0]
                        && f[23] == 17
                        && f[36..38] == 7777u16.to_be_bytes()
                    {
                        seen = Some(f.to_vec());
                    }
                });
            }
            let f = seen.expect("UDP frame not seen");
            let total = u16::from_be_bytes([f[16], f[17]]) as usize;
            assert_eq!(
                docknet_master::csum::verify(&f[14..14 + total]),
                Ok(()),
                "{v:?}"
            );
            assert_ne!(f[40..42], [0, 0], "UDP checksum left empty");
            // What a plain socket got: the same frame, with the checksum not yet filled in
            // (if the veth offloads it; show whether this run exercised the fix-up).
            let mut buf = vec![0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(1);
            let udp = |g: &[u8], _| g.len() >= 42 && g[12..14] == [8, 0] && g[23] == 17;
            if near.recv_until(&mut buf, deadline, udp).is_some() {
                let partial = docknet_master::csum::verify(&buf[14..14 + total]).is_err();
                println!("{v:?}: kernel handed the UDP frame with a partial checksum: {partial}");
                assert_eq!(buf[..40], f[..40], "only the UDP checksum may differ");
                assert_eq!(buf[42..14 + total], f[42..14 + total]);
            }
        }
    });
}

/// GSO over a real kernel TCP connection. The test plays a TCP client on the
/// `AfPacketNic` end (hand-made segments; the namespace's kernel has no address on that
/// end, so it stays out of the way) against a kernel TCP server on the far veth end:
/// - TX: the request goes out as ONE 30 000-byte GSO frame (`tx_meta` with `gso_size`
///   and `csum_partial`, the TCP checksum field holding the pseudo-header sum); the
///   server must read it byte-exact. Run twice: with the veth's offloads as they are
///   (the kernel passes the partial checksum along) and with TX checksumming off on our
///   end (`ethtool -K tx off`: the kernel segments and fills every checksum in software
///   from our pseudo-header sum, and the server's TCP verifies each: a wrong partial sum
///   loses the data).
/// - RX: the server's 40 000-byte answer (veth TSO on) arrives as GSO super-frames
///   (longer than the MTU, `gso_size` set, checksum Partial), whose bytes are checked.
#[test]
fn gso_frames_carry_a_kernel_tcp_stream_both_ways() {
    use docknet_master::nic::{CsumState, TxMeta};
    use std::io::{Read, Write};
    let _serial = serial();
    let Some(ns) = netns("gso_frames_carry_a_kernel_tcp_stream_both_ways") else {
        return;
    };
    let (a, b) = (A, B);
    ns.run(|| {
        let (me, srv) = ([10u8, 79, 0, 1], [10u8, 79, 0, 2]);
        ns.ip(&["addr", "replace", "10.79.0.2/24", "dev", b]);
        for (round, csum_off) in [false, true].into_iter().enumerate() {
            if csum_off {
                run_ok(ns.command("ethtool").args(["-K", a, "tx", "off"]), Duration::from_secs(10));
            }
            let mut nic = AfPacketNic::open_with(a, RingVersion::V2).expect("open");
            assert!(nic.offloads(), "PACKET_VNET_HDR refused by this kernel");
            assert!(nic.gso_max_frame() >= 60_000, "{}", nic.gso_max_frame());
            let mac = nic.mac();
            let smac = iface_mac_mtu(b).unwrap().0;
            let mac_s = mac.map(|x| format!("{x:02x}")).join(":");
            ns.ip(&["neigh", "replace", "10.79.0.1", "lladdr", &mac_s, "dev", b]);
            let listener = std::net::TcpListener::bind("10.79.0.2:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let request: Vec<u8> = (0..30_000u32).map(|i| (i * 7 + round as u32) as u8).collect();
            let answer: Vec<u8> = (0..40_000u32).map(|i| (i * 13 + 5) as u8).collect();
            let (req2, ans2) = (request.clone(), answer.clone());
            let server = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut got = vec![0u8; req2.len()];
                s.read_exact(&mut got).expect("server: request not read");
                assert!(got == req2, "server: request bytes differ");
                s.write_all(&ans2).unwrap();
                std::thread::sleep(Duration::from_millis(500));
            });
            let cport = 40_000 + round as u16;
            let isn = 1_000_000u32;
            // A segment of our connection (checksums for the code under test to fill).
            let segment = |seq, ack, flags, opts: &[u8], payload: &[u8]| {
                let tcp = frames::tcp_segment(cport, port, seq, ack, flags, opts, payload);
                frames::ipv4_unsummed(smac, mac, me, srv, 6, &tcp)
            };
            // MSS 1460: the server may send full-size segments.
            let syn = {
                let mut f = segment(isn, 0, TCP_SYN, &[2, 4, 5, 0xb4], &[]);
                assert!(docknet_master::csum::fill(&mut f[14..]));
                f
            };
            assert!(nic.tx(syn.len(), &mut |d: &mut [u8]| d.copy_from_slice(&syn)));
            nic.flush_tx();
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut server_isn = None;
            while server_isn.is_none() && Instant::now() < deadline {
                nic.rx_burst_meta(16, &mut |f: &[u8], _| {
                    if let Some((sp, dp, seq, ack, fl, _)) = parse_tcp(f) {
                        if (sp, dp) == (port, cport) && fl & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                            assert_eq!(ack, isn + 1);
                            server_isn = Some(seq);
                        }
                    }
                });
            }
            let server_isn = server_isn.expect("no SYN-ACK");
            // The request: one GSO frame, segments of 1460 bytes, checksum left partial.
            let mut f = segment(isn + 1, server_isn + 1, TCP_ACK | TCP_PSH, &[], &request);
            assert!(f.len() > nic.max_frame() && f.len() <= nic.gso_max_frame());
            let (l4, off) = docknet_master::csum::fill_partial(&mut f[14..]).expect("TCP");
            let meta = TxMeta {
                gso_size: Some(1460),
                csum_partial: Some(((14 + l4) as u16, off as u16)),
            };
            assert!(nic.tx_meta(f.len(), meta, &mut |d: &mut [u8]| d.copy_from_slice(&f)));
            assert!(
                !nic.tx(f.len(), &mut |_: &mut [u8]| panic!("plain tx took a GSO frame")),
                "plain tx must keep the MTU limit"
            );
            nic.flush_tx();
            // The answer: collect its bytes by sequence number until all 40 000 arrived,
            // ACKing what came so the server keeps sending.
            let mut got = vec![None::<u8>; answer.len()];
            let mut gso_frames = 0;
            let mut biggest = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut next_ack = server_isn + 1;
            while got.iter().any(Option::is_none) && Instant::now() < deadline {
                let mut acked = next_ack;
                nic.rx_burst_meta(64, &mut |f: &[u8], m| {
                    let Some((sp, dp, seq, _, _, payload)) = parse_tcp(f) else { return };
                    if (sp, dp) != (port, cport) || payload.is_empty() {
                        return;
                    }
                    if f.len() > 1514 {
                        assert!(m.gso_size > 0, "{}-byte frame without gso_size", f.len());
                        assert_eq!(m.csum, CsumState::Partial);
                        gso_frames += 1;
                    }
                    biggest = biggest.max(f.len());
                    let at = seq.wrapping_sub(server_isn + 1) as usize;
                    for (i, &byte) in payload.iter().enumerate() {
                        if let Some(slot) = got.get_mut(at + i) {
                            *slot = Some(byte);
                        }
                    }
                    let end = seq.wrapping_add(payload.len() as u32);
                    if end.wrapping_sub(acked) as i32 > 0 && seq.wrapping_sub(acked) as i32 <= 0 {
                        acked = end;
                    }
                });
                if acked != next_ack {
                    next_ack = acked;
                    let mut ack = segment(isn + 1 + request.len() as u32, next_ack, TCP_ACK, &[], &[]);
                    assert!(docknet_master::csum::fill(&mut ack[14..]));
                    assert!(nic.tx(ack.len(), &mut |d: &mut [u8]| d.copy_from_slice(&ack)));
                    nic.flush_tx();
                }
            }
            let missing = got.iter().filter(|b| b.is_none()).count();
            if missing > 0 {
                let o = ns.command("sh").arg("-c").arg(format!("nstat -az | grep -iE 'csum|InSegs|InErrs'; ip -s link show {b}; ip -s link show {a}; ethtool -k {a} | grep -E 'tx-check|segmentation'")).output().unwrap();
                println!("{}", String::from_utf8_lossy(&o.stdout));
            }
            assert_eq!(missing, 0, "round {round}: {missing} answer bytes never arrived");
            assert!(got.iter().zip(&answer).all(|(g, w)| *g == Some(*w)), "answer bytes differ");
            server.join().expect("server");
            println!(
                "round {round} (tx csum offload {}): request sent as one {}-byte GSO frame; answer in {gso_frames} GSO frames, largest {biggest} bytes",
                if csum_off { "off" } else { "on" },
                f.len()
            );
            assert!(gso_frames > 0, "the kernel's answer came in MTU-sized frames only");
        }
    });
}

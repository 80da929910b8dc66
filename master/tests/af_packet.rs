//! The AF_PACKET backend on a real veth pair, in a network namespace of its own.
//!
//! Needs root (network namespaces, raw sockets); without it each test says why and passes.
//! Each test makes namespace `dnap<pid><tag>` holding veth `dnapa<pid><tag>` (the
//! `AfPacketNic` end) and `dnapb<pid><tag>` (a plain AF_PACKET socket, no ring), runs its
//! body on a thread that entered the namespace, and deletes the namespace on every exit.
//!
//! `latency` prints one-way latencies (`cargo test --test af_packet -- --nocapture`).

use std::ffi::CString;
use std::process::Command;

mod common;
use common::{enter_netns, ip};
use std::time::{Duration, Instant};

use docknet_master::nic::af_packet::{AfPacketNic, RingVersion};
use docknet_master::nic::{iface_mac_mtu, Nic};

/// Ethertype of the test frames (IEEE local experimental), so stray frames (IPv6 router
/// solicitations and the like) are told apart.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// A namespace with a veth pair inside, deleted on drop.
struct Netns {
    name: String,
    a: String,
    b: String,
}

impl Netns {
    /// `None` (with the reason printed) if this host cannot run the test.
    fn new(tag: &str) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: needs root for network namespaces and raw sockets");
            return None;
        }
        let pid = std::process::id();
        let ns = Netns {
            name: format!("dnap{pid}{tag}"),
            a: format!("dnapa{pid}{tag}"),
            b: format!("dnapb{pid}{tag}"),
        };
        if let Err(e) = ip(&["netns", "add", &ns.name]) {
            eprintln!("skipping: cannot make a network namespace: {e}");
            return None;
        }
        // From here on, `ns` deletes the namespace on every exit path.
        let setup = [
            vec![
                "-n", &ns.name, "link", "add", &ns.a, "type", "veth", "peer", "name", &ns.b,
            ],
            vec!["-n", &ns.name, "link", "set", &ns.a, "up"],
            vec!["-n", &ns.name, "link", "set", &ns.b, "up"],
        ];
        for args in &setup {
            ip(args).expect("veth setup");
        }
        Some(ns)
    }

    /// Run `body` on a thread that entered the namespace; re-raise its panic here.
    fn run<T: Send + 'static>(&self, body: impl FnOnce(&str, &str) -> T + Send + 'static) -> T {
        let (name, a, b) = (self.name.clone(), self.a.clone(), self.b.clone());
        let h = std::thread::spawn(move || {
            enter_netns(&name).expect("enter the namespace");
            body(&a, &b)
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A plain AF_PACKET raw socket (no ring) bound to one interface: the far end.
struct RawSock {
    fd: i32,
    mac: [u8; 6],
}

impl RawSock {
    fn open(iface: &str) -> RawSock {
        let (mac, _) = iface_mac_mtu(iface).unwrap();
        let c = CString::new(iface).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        assert!(ifindex > 0);
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2).
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex;
        // SAFETY: valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let big: libc::c_int = 8 << 20;
        // SAFETY: setsockopt with an int of the size given (SO_RCVBUFFORCE: we are root).
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&big as *const libc::c_int).cast(),
                4,
            )
        };
        RawSock { fd, mac }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: sending from a live buffer of the length given.
        let r = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            r,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Next test frame from `src`, spinning up to `timeout`.
    fn recv_from(&self, src: [u8; 6], buf: &mut [u8], timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: receiving into a live buffer of the length given.
            let r =
                unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
            if r >= 0 {
                let n = r as usize;
                if n >= 14 && buf[6..12] == src && buf[12..14] == ETHERTYPE {
                    return Some(n);
                }
                continue;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::hint::spin_loop();
        }
    }
}

impl Drop for RawSock {
    fn drop(&mut self) {
        // SAFETY: closing our own fd once.
        unsafe { libc::close(self.fd) };
    }
}

/// A test frame of `len` bytes: Ethernet header, sequence number, then a pattern that
/// depends on both.
fn frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETHERTYPE);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(31).wrapping_add(seq) as u8;
    }
    f
}

fn is_test_frame(f: &[u8], src: [u8; 6]) -> bool {
    f.len() >= 18 && f[6..12] == src && f[12..14] == ETHERTYPE
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
    let Some(ns) = Netns::new("r") else { return };
    ns.run(|a, b| {
        for v in [RingVersion::V2, RingVersion::V3] {
            receive(a, b, v);
        }
    });
}

fn receive(a: &str, b: &str, v: RingVersion) {
    {
        let mut nic = AfPacketNic::open_with(a, v).expect("open");
        let far = RawSock::open(b);
        assert_eq!(nic.max_frame(), 1514);
        assert!(nic.rx_fd().is_some());
        let dst = nic.mac();
        for (seq, &len) in sizes(nic.max_frame()).iter().enumerate() {
            let f = frame(dst, far.mac, seq as u32, len);
            far.send(&f);
            let got = nic_recv(&mut nic, far.mac, Duration::from_secs(2)).expect("frame lost");
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
        let (name, bname) = (ns_of_thread(), b.to_string());
        let dst2 = dst;
        let sender = std::thread::spawn(move || {
            enter_netns(&name).expect("enter the namespace");
            let far = RawSock::open(&bname);
            for seq in 0..n {
                let len = 60 + (seq as usize * 37) % (1514 - 60 + 1);
                far.send(&frame(dst2, far.mac, seq, len));
            }
        });
        let mut next = 0u32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while next < n && Instant::now() < deadline {
            nic.rx_burst(64, &mut |f: &[u8]| {
                if !is_test_frame(f, far.mac) {
                    return;
                }
                let seq = u32::from_be_bytes([f[14], f[15], f[16], f[17]]);
                let len = 60 + (seq as usize * 37) % (1514 - 60 + 1);
                assert_eq!(seq, next, "frame out of order or lost");
                assert_eq!(f, &frame(dst, far.mac, seq, len)[..], "frame {seq} differs");
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

/// The namespace the calling thread is in, by name (for threads spawned inside `run`).
fn ns_of_thread() -> String {
    let me = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir("/run/netns").unwrap() {
        let e = e.unwrap();
        if let Ok(m) = std::fs::metadata(e.path()) {
            if m.ino() == me.ino() && m.dev() == me.dev() {
                return e.file_name().to_string_lossy().into_owned();
            }
        }
    }
    panic!("namespace not found")
}

#[test]
fn sends_frames_byte_exact_and_in_order() {
    let Some(ns) = Netns::new("t") else { return };
    ns.run(|a, b| {
        for v in [RingVersion::V2, RingVersion::V3] {
            send(a, b, v);
        }
    });
}

fn send(a: &str, b: &str, v: RingVersion) {
    {
        let mut nic = AfPacketNic::open_with(a, v).expect("open");
        let far = RawSock::open(b);
        let src = nic.mac();
        let mut buf = vec![0u8; 65536];
        for (seq, &len) in sizes(nic.max_frame()).iter().enumerate() {
            let f = frame(far.mac, src, seq as u32, len);
            assert!(nic.tx(len, &mut |d: &mut [u8]| d.copy_from_slice(&f)));
            nic.flush_tx();
            let n = far
                .recv_from(src, &mut buf, Duration::from_secs(2))
                .expect("frame lost");
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
                let f = frame(far.mac, src, seq, len);
                assert!(
                    nic.tx(len, &mut |d: &mut [u8]| d.copy_from_slice(&f)),
                    "ring full"
                );
                seq += 1;
            }
            nic.flush_tx();
            while next_rx < seq {
                let n = far
                    .recv_from(src, &mut buf, Duration::from_secs(2))
                    .expect("frame lost");
                let s = u32::from_be_bytes([buf[14], buf[15], buf[16], buf[17]]);
                assert_eq!(s, next_rx, "frame out of order or lost");
                let len = 60 + (s as usize * 37) % (1514 - 60 + 1);
                assert_eq!(&buf[..n], &frame(far.mac, src, s, len)[..]);
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
            d.copy_from_slice(&frame(far.mac, src, 0, 60))
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
                d.copy_from_slice(&frame(far.mac, src, 0, 60))
            });
        }
        assert!(ok, "TX ring never drained");
        nic.flush_tx();
    }
}

#[test]
fn own_frames_are_not_looped_back() {
    let Some(ns) = Netns::new("o") else { return };
    ns.run(|a, _b| {
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
    let Some(ns) = Netns::new("l") else { return };
    ns.run(|a, b| {
        for v in [RingVersion::V2, RingVersion::V3] {
            latency_of(a, b, v);
        }
    });
}

fn latency_of(a: &str, b: &str, v: RingVersion) {
    let mut nic = AfPacketNic::open_with(a, v).expect("open");
    let far = RawSock::open(b);
    let near = RawSock::open(a);
    let dst = nic.mac();
    let n = 300;
    let mut buf = vec![0u8; 65536];
    let gap = Duration::from_micros(200);
    let (mut rx, mut plain, mut tx) = (Vec::new(), Vec::new(), Vec::new());
    for seq in 0..n {
        let f = frame(dst, far.mac, seq, 1024);
        let t0 = Instant::now();
        far.send(&f);
        let got = nic_recv(&mut nic, far.mac, Duration::from_secs(1)).expect("lost");
        rx.push(t0.elapsed().as_secs_f64() * 1e6);
        assert_eq!(got, f);
        // The plain socket on the same end got it too: drain.
        while near.recv_from(far.mac, &mut buf, Duration::ZERO).is_some() {}
        std::thread::sleep(gap);
    }
    for seq in 0..n {
        let f = frame(dst, far.mac, seq, 1024);
        let t0 = Instant::now();
        far.send(&f);
        near.recv_from(far.mac, &mut buf, Duration::from_secs(1))
            .expect("lost");
        plain.push(t0.elapsed().as_secs_f64() * 1e6);
        // Drain the ring's copy.
        while nic_recv(&mut nic, far.mac, Duration::from_millis(20)).is_some() {}
        std::thread::sleep(gap);
    }
    let src = nic.mac();
    for seq in 0..n {
        let f = frame(far.mac, src, seq, 1024);
        let t0 = Instant::now();
        assert!(nic.tx(1024, &mut |d: &mut [u8]| d.copy_from_slice(&f)));
        nic.flush_tx();
        far.recv_from(src, &mut buf, Duration::from_secs(1))
            .expect("lost");
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
    let Some(ns) = Netns::new("c") else { return };
    ns.run(|a, b| {
        for v in [RingVersion::V2, RingVersion::V3] {
            let mut nic = AfPacketNic::open_with(a, v).expect("open");
            let mac = nic.mac().map(|x| format!("{x:02x}")).join(":");
            ip(&["addr", "replace", "10.77.0.2/24", "dev", b]).unwrap();
            ip(&["neigh", "replace", "10.77.0.1", "lladdr", &mac, "dev", b]).unwrap();
            let near = RawSock::open(a);
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
            while Instant::now() < deadline {
                // SAFETY: receiving into a live buffer of the length given.
                let r = unsafe { libc::recv(near.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if r >= 42 && buf[12..14] == [8, 0] && buf[23] == 17 {
                    let partial = docknet_master::csum::verify(&buf[14..14 + total]).is_err();
                    println!(
                        "{v:?}: kernel handed the UDP frame with a partial checksum: {partial}"
                    );
                    assert_eq!(buf[..40], f[..40], "only the UDP checksum may differ");
                    assert_eq!(buf[42..14 + total], f[42..14 + total]);
                    break;
                }
            }
        }
    });
}

/// `ethtool -K IFACE ARGS...` (in the calling thread's namespace).
fn ethtool_k(iface: &str, args: &[&str]) {
    let out = Command::new("ethtool")
        .arg("-K")
        .arg(iface)
        .args(args)
        .output()
        .expect("run ethtool");
    assert!(
        out.status.success(),
        "ethtool -K {iface} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// An Ethernet + IPv4 + TCP frame (no IP options; TCP options `opts`, a multiple of 4).
#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: u8,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let th = 20 + opts.len();
    let total = 20 + th + payload.len();
    let mut f = vec![0u8; 14 + total];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[8, 0]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.0);
    ip[16..20].copy_from_slice(&dst.0);
    let t = &mut ip[20..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((th / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t[20..th].copy_from_slice(opts);
    t[th..].copy_from_slice(payload);
    f
}

/// A received TCP/IPv4 frame: (src port, dst port, seq, ack, flags, payload).
type TcpView<'a> = (u16, u16, u32, u32, u8, &'a [u8]);

fn parse_tcp(f: &[u8]) -> Option<TcpView<'_>> {
    if f.len() < 54 || f[12..14] != [8, 0] || f[23] != 6 {
        return None;
    }
    let ihl = (f[14] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    let t = f.get(14 + ihl..14 + total)?;
    let th = (t[12] >> 4) as usize * 4;
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
        be32(&t[4..8]),
        be32(&t[8..12]),
        t[13],
        t.get(th..)?,
    ))
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
    let Some(ns) = Netns::new("g") else { return };
    ns.run(|a, b| {
        let (me, srv) = ([10u8, 79, 0, 1], [10u8, 79, 0, 2]);
        ip(&["addr", "replace", "10.79.0.2/24", "dev", b]).unwrap();
        for (round, csum_off) in [false, true].into_iter().enumerate() {
            if csum_off {
                ethtool_k(a, &["tx", "off"]);
            }
            let mut nic = AfPacketNic::open_with(a, RingVersion::V2).expect("open");
            assert!(nic.offloads(), "PACKET_VNET_HDR refused by this kernel");
            assert!(nic.gso_max_frame() >= 60_000, "{}", nic.gso_max_frame());
            let mac = nic.mac();
            let smac = iface_mac_mtu(b).unwrap().0;
            let mac_s = mac.map(|x| format!("{x:02x}")).join(":");
            ip(&["neigh", "replace", "10.79.0.1", "lladdr", &mac_s, "dev", b]).unwrap();
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
            // MSS 1460: the server may send full-size segments.
            let syn = {
                let mut f = tcp_frame(smac, mac, (me, cport), (srv, port), isn, 0, TCP_SYN, &[2, 4, 5, 0xb4], &[]);
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
            let mut f = tcp_frame(smac, mac, (me, cport), (srv, port), isn + 1, server_isn + 1, TCP_ACK | TCP_PSH, &[], &request);
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
                    let mut ack = tcp_frame(smac, mac, (me, cport), (srv, port), isn + 1 + request.len() as u32, next_ack, TCP_ACK, &[], &[]);
                    assert!(docknet_master::csum::fill(&mut ack[14..]));
                    assert!(nic.tx(ack.len(), &mut |d: &mut [u8]| d.copy_from_slice(&ack)));
                    nic.flush_tx();
                }
            }
            let missing = got.iter().filter(|b| b.is_none()).count();
            if missing > 0 {
                let o = Command::new("sh").arg("-c").arg(format!("nstat -az | grep -iE 'csum|InSegs|InErrs'; ip -s link show {b}; ip -s link show {a}; ethtool -k {a} | grep -E 'tx-check|segmentation'")).output().unwrap();
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

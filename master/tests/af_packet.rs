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

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
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
            enter(&name);
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

/// Move the calling thread into namespace `name`.
fn enter(name: &str) {
    let path = CString::new(format!("/run/netns/{name}")).unwrap();
    // SAFETY: valid C string; plain open(2).
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {name}: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a network namespace file; setns affects only this thread.
    let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {name}: {}", std::io::Error::last_os_error());
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
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

        // 1000 frames from another thread while this one reads: all, in order.
        const N: u32 = 1000;
        let (name, bname) = (ns_of_thread(), b.to_string());
        let dst2 = dst;
        let sender = std::thread::spawn(move || {
            enter(&name);
            let far = RawSock::open(&bname);
            for seq in 0..N {
                let len = 60 + (seq as usize * 37) % (1514 - 60 + 1);
                far.send(&frame(dst2, far.mac, seq, len));
            }
        });
        let mut next = 0u32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while next < N && Instant::now() < deadline {
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
        assert_eq!(next, N, "only {next} of {N} frames arrived");
        let st = nic.stats();
        assert!(st.rx_frames >= N as u64 + 13, "{st:?}");
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

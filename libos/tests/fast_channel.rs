//! Two engines in one process joined by a fast channel and nothing else: no master runs,
//! so every byte must travel over the FC (services speak IP to smoltcp: no ARP at all).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use docknet::fc::create_fc_file;
use docknet::pipe::{create_pipe_file, PipeConfig, FC_DIR};
use docknet::{Control, Engine, EngineConfig};

mod common;
use common::{pipe_config, TempDir};

fn pipe(dir: &Path, ip: Ipv4Addr, mtu: u32) -> PipeConfig {
    let cfg = pipe_config(ip, mtu, 256, docknet::abi::pipe_flags::CSUM_OFFLOAD);
    create_pipe_file(dir, &cfg).unwrap();
    cfg
}

/// Pipes a (10.88.0.2) and b (10.88.0.3) under a fresh temporary root, joined by a fast
/// channel file seen from both pipe directories. Returns (root, a, b, a's FC path).
fn fc_pair(tag: &str, nbufs: u32) -> (TempDir, PipeConfig, PipeConfig, std::path::PathBuf) {
    fc_pair_mtus(tag, nbufs, 9000, 9000)
}

/// [`fc_pair`] with pipes of IP MTU `pipe_mtu` and a channel of `fc_mtu`.
fn fc_pair_mtus(
    tag: &str,
    nbufs: u32,
    pipe_mtu: u32,
    fc_mtu: u32,
) -> (TempDir, PipeConfig, PipeConfig, std::path::PathBuf) {
    let root = TempDir::new(std::env::temp_dir().join(format!("dn-{tag}-{}", std::process::id())));
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let a = pipe(&da, Ipv4Addr::new(10, 88, 0, 2), pipe_mtu);
    let b = pipe(&db, Ipv4Addr::new(10, 88, 0, 3), pipe_mtu);
    let fc = da.join(FC_DIR).join("b.map");
    create_fc_file(&fc, (a.ipv4, a.mac), (b.ipv4, b.mac), fc_mtu, (nbufs, 0)).unwrap();
    std::fs::hard_link(&fc, db.join(FC_DIR).join("a.map")).unwrap();
    (root, a, b, fc)
}

/// An `fc_pair` with an engine attached on each side: (root, a, server on a, client on b).
fn fc_engines(tag: &str) -> (TempDir, PipeConfig, Engine, Engine) {
    fc_engines_mtus(tag, 9000, 9000)
}

/// [`fc_engines`] with pipes of IP MTU `pipe_mtu` and a channel of `fc_mtu`.
fn fc_engines_mtus(tag: &str, pipe_mtu: u32, fc_mtu: u32) -> (TempDir, PipeConfig, Engine, Engine) {
    let (root, a, _, _) = fc_pair_mtus(tag, 256, pipe_mtu, fc_mtu);
    let cfg = |side: &str| EngineConfig {
        pipe_dir: root.path().join(side),
        ..EngineConfig::from_env()
    };
    let server = Engine::attach(cfg("a")).unwrap();
    let client = Engine::attach(cfg("b")).unwrap();
    (root, a, server, client)
}

#[test]
fn tcp_echo_over_fast_channel_without_master() {
    let (root, a, server, mut client) = fc_engines("fc-test");
    assert_eq!(client.device().fc_peers().collect::<Vec<_>>(), vec![a.ipv4]);
    let (cstats, sstats) = echo_4mib(a.ipv4, server, &mut client, None);
    for (who, s) in [("client", cstats), ("server", sstats)] {
        assert_eq!(
            s.tx_pipe_frames, 0,
            "{who} sent frames to the master: {s:?}"
        );
    }
    assert!(cstats.tx_fc_frames > 100 && sstats.rx_fc_frames > 100);
    drop(root);
}

/// A fast channel whose MTU exceeds the pipes' carries segments of its own size: the
/// engines give smoltcp the channel's MTU toward the peer (`Engine::path_mtu`), which
/// advertises it in the SYN and sizes its segments by it; once the peer has gone, the
/// pipe's MTU is back.
#[test]
fn a_fast_channel_larger_than_the_pipes_carries_larger_segments() {
    let (root, a, server, mut client) = fc_engines_mtus("fc-mtu", 1500, 9000);
    client.poll();
    assert_eq!(client.path_mtu(a.ipv4), 9000);
    assert_eq!(client.path_mtu(Ipv4Addr::new(10, 88, 0, 9)), 1500);
    let (cstats, sstats) = echo_4mib(a.ipv4, server, &mut client, None);
    // 4 MiB each way: at the pipes' MTU, 2,873 data segments of 1,460 bytes; at the
    // channel's 8,960 bytes, 469, plus about as many acknowledgements.
    for (who, s) in [("client", cstats), ("server", sstats)] {
        assert_eq!(
            s.tx_pipe_frames, 0,
            "{who} sent frames to the master: {s:?}"
        );
        assert!(
            (469..2000).contains(&s.tx_fc_frames),
            "{who} sent {} frames for 4 MiB: segments were not sized by the channel's MTU",
            s.tx_fc_frames
        );
    }
    // The server's engine is gone (detached from the channel): the pipe's MTU again.
    client.poll();
    assert_eq!(client.path_mtu(a.ipv4), 1500);
    drop(root);
}

/// A large body sent with `write_static` after a copied head, handed over in parts as the
/// send buffer frees (as dn-httpd streams a big file): the client gets every byte, and
/// the body leaves in full-size segments. (That each part extends the queued slice is
/// checked in smoltcp's `send_queue` tests.)
#[test]
fn a_large_static_body_after_a_copied_head_arrives_whole_in_full_segments() {
    let (root, a, mut server, mut client) = fc_engines("fc-static");
    const HEAD: &[u8] = b"HEAD\n";
    let total = 2 << 20;
    let body: &'static [u8] = Box::leak(
        (0..total)
            .map(|i| (i * 13 + i / 509) as u8)
            .collect::<Vec<u8>>()
            .into_boxed_slice(),
    );
    let srv = std::thread::spawn(move || {
        let (mut head_sent, mut sent, mut calls) = (0, 0, 0);
        let mut closed = false;
        serve_one(&mut server, |e, id| {
            if closed {
                return if e.closing_count() == 0 {
                    Control::Exit
                } else {
                    Control::Continue
                };
            }
            if head_sent < HEAD.len() {
                head_sent += e.write(id, &HEAD[head_sent..]).unwrap();
            }
            if head_sent == HEAD.len() && sent < total {
                let n = e.write_static(id, &body[sent..]).unwrap();
                sent += n;
                calls += usize::from(n > 0);
            }
            if sent == total {
                // Graceful: the FIN follows the queued bytes; wait for it to be acknowledged.
                let _ = e.close(id);
                closed = true;
            }
            Control::Continue
        });
        (server.device().stats, calls)
    });
    let id = client.connect(SocketAddrV4::new(a.ipv4, 7)).unwrap();
    let mut got = Vec::with_capacity(HEAD.len() + total);
    let deadline = Instant::now() + Duration::from_secs(60);
    client.run(|e| {
        if Instant::now() > deadline {
            return Control::Exit;
        }
        let _ = e.recv_with(id, |d| {
            got.extend_from_slice(d);
            (d.len(), ())
        });
        if got.len() == HEAD.len() + total {
            let _ = e.close(id);
            return Control::Exit;
        }
        Control::Continue
    });
    let (sstats, calls) = srv.join().unwrap();
    assert_eq!(got.len(), HEAD.len() + total, "body incomplete");
    assert!(
        got[..HEAD.len()] == *HEAD && got[HEAD.len()..] == *body,
        "bytes differ"
    );
    assert!(
        calls > 4,
        "the body went in {calls} parts: the test needs several"
    );
    // 2 MiB in 8,960-byte segments: 235, plus the head's, the handshake's and the close.
    let segments = total.div_ceil(8960) as u64;
    assert!(
        sstats.tx_fc_frames <= segments + 20,
        "{} frames for {segments} full segments ({calls} parts)",
        sstats.tx_fc_frames
    );
    drop(root);
}

/// A segment larger than the pipe's buffers whose route guess was the pipe (the last
/// frame went there) is built aside and copied onto the channel, not dropped.
#[test]
fn a_segment_too_large_for_the_guessed_pipe_still_goes_out_on_the_channel() {
    let (root, a, server, mut client) = fc_engines_mtus("fc-mtu-guess", 1500, 9000);
    let (cstats, _) = echo_4mib(a.ipv4, server, &mut client, Some(8));
    assert!(
        cstats.tx_pipe_frames > 0,
        "no datagram went to the pipe: {cstats:?}"
    );
    assert!(
        cstats.tx_oversize_reroutes > 0,
        "no large segment followed a frame to the pipe: {cstats:?}"
    );
    assert_eq!(cstats.tx_no_buffer, 0, "{cstats:?}");
    drop(root);
}

/// Run `server` with a listener on port 7: `f` gets the first connection accepted, each
/// round, until it returns [`Control::Exit`] (or 60 s pass).
fn serve_one(server: &mut Engine, mut f: impl FnMut(&mut Engine, docknet::TcpId) -> Control) {
    let l = server.listen(7, 4).unwrap();
    let mut conn = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    server.run(|e| {
        if Instant::now() > deadline {
            return Control::Exit;
        }
        if conn.is_none() {
            conn = e.accept(l);
        }
        match conn {
            Some(id) => f(e, id),
            None => Control::Continue,
        }
    });
}

/// Echo 4 MiB from `client` to a server on `server_ip` over their fast channel (no
/// master) byte-exact, check that no fault was seen, and return the client's and the
/// server's device counters (the server's engine is dropped). With `pipe_every: Some(k)`
/// the client also sends a datagram through its pipe every k-th round (at most 100: no
/// master drains the pipe), so its route guess is often the pipe.
fn echo_4mib(
    server_ip: Ipv4Addr,
    mut server: Engine,
    client: &mut Engine,
    pipe_every: Option<usize>,
) -> (docknet::device::DeviceStats, docknet::device::DeviceStats) {
    let srv = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let (mut pending, mut start) = (0usize, 0usize);
        serve_one(&mut server, |e, id| loop {
            if start < pending {
                match e.write(id, &buf[start..pending]) {
                    Ok(n) => start += n,
                    Err(_) => return Control::Exit,
                }
                if start < pending {
                    return Control::Continue;
                }
            }
            match e.read(id, &mut buf) {
                Ok(0) => return Control::Continue,
                Ok(n) => (start, pending) = (0, n),
                Err(_) => {
                    let _ = e.close(id);
                    return Control::Exit;
                }
            }
        });
        server.device().stats
    });

    let total = 4 << 20;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let id = client.connect(SocketAddrV4::new(server_ip, 7)).unwrap();
    let udp = client.udp_bind(9).unwrap();
    let elsewhere = SocketAddrV4::new(Ipv4Addr::new(10, 88, 0, 9), 9);
    let (mut sent, mut got) = (0usize, Vec::with_capacity(total));
    let (mut rounds, mut datagrams) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    client.run(|e| {
        if Instant::now() > deadline {
            return Control::Exit;
        }
        if !e.is_established(id) {
            return Control::Continue;
        }
        rounds += 1;
        if let Some(k) = pipe_every {
            if rounds % k == 0 && datagrams < 100 && e.udp_send_to(udp, b"x", elsewhere).unwrap() {
                datagrams += 1;
            }
        }
        if sent < total {
            sent += e.write(id, &data[sent..]).unwrap();
        }
        let _ = e.recv_with(id, |d| {
            got.extend_from_slice(d);
            (d.len(), ())
        });
        if got.len() == total {
            let _ = e.close(id);
            return Control::Exit;
        }
        Control::Continue
    });
    assert_eq!(got.len(), total, "echo incomplete");
    assert!(got == data, "echoed bytes differ");
    let cstats = client.device().stats;
    let sstats = srv.join().unwrap();
    assert_eq!(client.device().faults(), 0);
    (cstats, sstats)
}

/// A second attach of a side that is in use is refused, and the refusal leaves the live
/// owner's record alone (even though, in one process, both have the same pid).
#[test]
fn a_refused_attach_leaves_the_owner_attached() {
    use docknet::fc::FcEnd;
    use docknet::pipe::AttachError;
    let (root, a, b, fc) = fc_pair("fc-claim", 64);
    let owner = FcEnd::attach(&fc, a.ipv4).unwrap();
    let peer = FcEnd::attach(&fc, b.ipv4).unwrap();
    assert!(peer.peer_attached());
    match FcEnd::attach(&fc, a.ipv4) {
        Err(AttachError::AlreadyAttached { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("side a attached twice"),
    }
    assert!(
        peer.peer_attached(),
        "the refused attach cleared the owner's record"
    );
    drop(owner);
    assert!(!peer.peer_attached(), "a clean detach clears it");
    let again = FcEnd::attach(&fc, a.ipv4).expect("free again after the owner left");
    assert!(peer.peer_attached());
    drop((again, peer));
    drop(root);
}

/// An Ethernet + IPv4 + UDP frame (checksums zero: pipes carry none).
fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let payload = 8 + 4;
    let total = (20 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x09, 0, payload as u8, 0, 0]);
    f.extend_from_slice(b"ping");
    f
}

/// The receiving libOS drops fast-channel frames whose source MAC or IPv4 address is not
/// its peer's, and counts them; once the master lets the peer forward (written into the
/// receiver's own pipe header), a foreign source IPv4 passes, a foreign MAC still not.
#[test]
fn spoofed_fast_channel_frames_are_dropped_and_counted() {
    use docknet::fc::FcEnd;
    let (root, a, b, fc) = fc_pair("fc-spoof", 64);
    let db = root.path().join("b");
    let mut rx = Engine::attach(EngineConfig {
        pipe_dir: db.clone(),
        ..EngineConfig::from_env()
    })
    .unwrap();
    let mut tx = FcEnd::attach(&fc, a.ipv4).unwrap();
    let stranger = Ipv4Addr::new(192, 0, 2, 7);
    let mut send = |f: Vec<u8>, rx: &mut Engine| {
        assert!(tx.tx.send_copy(&f));
        tx.tx.flush();
        for _ in 0..20 {
            rx.poll();
        }
        rx.device().stats
    };
    let s = send(udp_frame(a.mac, b.mac, a.ipv4, b.ipv4), &mut rx);
    assert_eq!((s.rx_fc_frames, s.rx_fc_spoofed), (1, 0), "{s:?}");
    let s = send(udp_frame(a.mac, b.mac, stranger, b.ipv4), &mut rx);
    assert_eq!(
        (s.rx_fc_frames, s.rx_fc_spoofed),
        (2, 1),
        "foreign source IP: {s:?}"
    );
    let s = send(
        udp_frame([2, 9, 9, 9, 9, 9], b.mac, a.ipv4, b.ipv4),
        &mut rx,
    );
    assert_eq!(
        (s.rx_fc_frames, s.rx_fc_spoofed),
        (3, 2),
        "foreign source MAC: {s:?}"
    );

    // The master (here: its control handle on b's pipe) lets a forward to b.
    let ctl = docknet::pipe::PipeControl::from_map(
        docknet::shm::SharedMap::open(&db.join("pipe.map")).unwrap(),
    )
    .unwrap();
    ctl.set_fc_forwarders(&[a.ipv4]);
    ctl.bump_fc_generation();
    let s = send(udp_frame(a.mac, b.mac, stranger, b.ipv4), &mut rx);
    assert_eq!(
        (s.rx_fc_frames, s.rx_fc_spoofed),
        (4, 2),
        "forwarding allowed: {s:?}"
    );
    let s = send(
        udp_frame([2, 9, 9, 9, 9, 9], b.mac, stranger, b.ipv4),
        &mut rx,
    );
    assert_eq!(
        (s.rx_fc_frames, s.rx_fc_spoofed),
        (5, 3),
        "but not another MAC: {s:?}"
    );
    // And withdrawn again.
    ctl.set_fc_forwarders(&[]);
    ctl.bump_fc_generation();
    let s = send(udp_frame(a.mac, b.mac, stranger, b.ipv4), &mut rx);
    assert_eq!(
        (s.rx_fc_frames, s.rx_fc_spoofed),
        (6, 4),
        "permission withdrawn: {s:?}"
    );
    drop((tx, rx));
    drop(root);
}

/// 200 connection requests at once against a port with an accept queue of 4 and a SYN
/// queue of 16: the requests the queues have no room for wait in the device or are
/// dropped (their clients resend the SYN), never reset; every connection is accepted in
/// the end and answers with its own bytes.
#[test]
fn a_burst_of_connections_beyond_both_queues_is_accepted_without_resets() {
    const CONNS: usize = 200;
    let (root, a, _, _) = fc_pair("fc-burst", 1024);
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let cfg = |dir: &Path| EngineConfig {
        pipe_dir: dir.to_path_buf(),
        tcp_rx_buffer: 4096,
        tcp_tx_buffer: 4096,
        tcp_syn_backlog: 16,
        tcp_rto_initial: Duration::from_millis(20),
        ..EngineConfig::from_env()
    };
    let mut server = Engine::attach(cfg(&da)).unwrap();
    let mut client = Engine::attach(cfg(&db)).unwrap();

    let srv = std::thread::spawn(move || {
        let l = server.listen(7, 4).unwrap();
        let mut conns = Vec::new();
        let mut finished = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 64];
        server.run(|e| {
            if Instant::now() > deadline {
                return Control::Exit;
            }
            // Accept slowly (one per round) so that both queues fill up.
            if let Some(id) = e.accept(l) {
                conns.push(Some(id));
            }
            // Echo what each accepted connection sends; close it at its end of stream.
            for slot in conns.iter_mut() {
                let Some(id) = *slot else { continue };
                match e.read(id, &mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        let _ = e.write(id, &buf[..n]);
                    }
                    Err(_) => {
                        let _ = e.close(id);
                        *slot = None;
                        finished += 1;
                    }
                }
            }
            if finished == CONNS {
                return Control::Exit;
            }
            Control::Continue
        });
        (conns.len(), finished, server.device().stats)
    });

    let ids: Vec<_> = (0..CONNS)
        .map(|_| client.connect(SocketAddrV4::new(a.ipv4, 7)).unwrap())
        .collect();
    let mut sent = [false; CONNS];
    let mut answered = [false; CONNS];
    let mut reset = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    client.run(|e| {
        if Instant::now() > deadline {
            return Control::Exit;
        }
        for (i, &id) in ids.iter().enumerate() {
            if answered[i] {
                continue;
            }
            if !e.is_open(id) {
                reset += 1;
                answered[i] = true;
                continue;
            }
            if !e.is_established(id) {
                continue;
            }
            let msg = format!("conn {i:03}");
            if !sent[i] {
                sent[i] = e.write(id, msg.as_bytes()).unwrap() == msg.len();
            }
            let mut buf = [0u8; 16];
            if let Ok(n) = e.read(id, &mut buf) {
                if n > 0 {
                    assert_eq!(
                        &buf[..n],
                        msg.as_bytes(),
                        "connection {i} got another's bytes"
                    );
                    answered[i] = true;
                    let _ = e.close(id);
                }
            }
        }
        if answered.iter().all(|&x| x) {
            return Control::Exit;
        }
        Control::Continue
    });
    // Let the server see the last closes.
    client.run(|e| {
        if e.closing_count() == 0 {
            Control::Exit
        } else {
            Control::Continue
        }
    });
    let (accepted, finished, sstats) = srv.join().unwrap();
    let done = answered.iter().filter(|&&x| x).count();
    assert_eq!(reset, 0, "{reset} connections were reset");
    assert_eq!(done, CONNS, "only {done} of {CONNS} connections answered");
    assert_eq!(accepted, CONNS);
    assert_eq!(
        finished, CONNS,
        "the server saw {finished} of {CONNS} connections end"
    );
    assert!(
        sstats.rx_syn_held > 0,
        "the queues never filled (no SYN held back): {sstats:?}"
    );
}

/// An app that returns `Control::Exit` with a connection still open: the engine closes it
/// (as a kernel does when a process exits), so the peer learns the connection is over
/// instead of keeping it for a process that is gone.
#[test]
fn connections_left_open_are_closed_when_the_app_exits() {
    let (root, a, mut server, mut client) = fc_engines("fc-exit");

    let srv = std::thread::spawn(move || {
        let l = server.listen(7, 4).unwrap();
        let mut conn = None;
        let mut closed_after = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut since = Instant::now();
        server.run(|e| {
            if Instant::now() > deadline {
                return Control::Exit;
            }
            if conn.is_none() {
                conn = e.accept(l);
                since = Instant::now();
            }
            let Some(id) = conn else {
                return Control::Continue;
            };
            match e.read(id, &mut [0u8; 64]) {
                Ok(_) => Control::Continue,
                Err(_) => {
                    closed_after = Some(since.elapsed());
                    Control::Exit
                }
            }
        });
        closed_after
    });

    let id = client.connect(SocketAddrV4::new(a.ipv4, 7)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    client.run(|e| {
        // Exit as soon as the connection is up, without closing it.
        if e.is_established(id) || Instant::now() > deadline {
            Control::Exit
        } else {
            Control::Continue
        }
    });
    assert!(
        !client.is_open(id),
        "the engine should have closed the connection"
    );
    let closed_after = srv.join().unwrap();
    assert!(
        closed_after.is_some(),
        "the server never saw the connection end after its client exited"
    );
    eprintln!("server saw the close after {closed_after:?}");
    drop(client);
    drop(root);
}

/// A fast channel whose peer holds every large buffer (a slow or stuck reader): frames
/// too large for a small buffer go to that peer through the master (the pipe) instead of
/// being dropped, and small ones still take the channel. No master runs here: the test
/// reads the pipe as the master would, and holds the peer's end without returning
/// anything.
#[test]
fn large_frames_detour_through_the_master_while_the_peer_holds_the_large_buffers() {
    use docknet::abi::{pipe_flags, MAX_MTU};
    use docknet::fc::FcEnd;
    use docknet::pipe::MasterPipeEnd;
    let root =
        TempDir::new(std::env::temp_dir().join(format!("dn-fc-detour-{}", std::process::id())));
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    // Two-pool pipes and channel: 64 small buffers and 4 large ones a direction.
    let two_pools = |dir: &Path, ip| {
        let cfg = PipeConfig {
            nlarge: 4,
            ..pipe_config(ip, MAX_MTU, 64, pipe_flags::CSUM_OFFLOAD)
        };
        create_pipe_file(dir, &cfg).unwrap();
        cfg
    };
    let a = two_pools(&da, Ipv4Addr::new(10, 88, 0, 2));
    let b = two_pools(&db, Ipv4Addr::new(10, 88, 0, 3));
    let fc = da.join(FC_DIR).join("b.map");
    create_fc_file(&fc, (a.ipv4, a.mac), (b.ipv4, b.mac), MAX_MTU, (64, 4)).unwrap();
    std::fs::hard_link(&fc, db.join(FC_DIR).join("a.map")).unwrap();
    let mut peer = FcEnd::attach(&db.join(FC_DIR).join("a.map"), b.ipv4).unwrap();
    let map = docknet::shm::SharedMap::open(&da.join("pipe.map")).unwrap();
    let mut master = MasterPipeEnd::new(map).unwrap();
    let mut eng = Engine::attach(EngineConfig {
        pipe_dir: da.clone(),
        ..EngineConfig::from_env()
    })
    .unwrap();
    let id = eng.udp_bind(0).unwrap();
    let to = SocketAddrV4::new(b.ipv4, 9);
    let send = |eng: &mut Engine, len: usize| {
        assert!(eng.udp_send_to(id, &vec![7u8; len], to).unwrap());
        for _ in 0..10 {
            eng.poll();
        }
    };
    // Ethernet + IPv4 + UDP headers: 42 bytes.
    for _ in 0..6 {
        send(&mut eng, 30_000);
    }
    send(&mut eng, 100);
    let s = eng.device().stats;
    assert_eq!((s.tx_fc_detours, s.tx_no_buffer), (2, 0), "{s:?}");
    // The channel got the 4 large frames its buffers hold, then the small one.
    let mut on_channel = Vec::new();
    while let Some(f) = peer.rx.recv() {
        on_channel.push(f.len);
    }
    assert_eq!(on_channel, [30_042, 30_042, 30_042, 30_042, 142]);
    // The master got the other two, addressed to it, for b.
    let mut through_master = Vec::new();
    while let Some(f) = master.tx.recv() {
        let mut head = [0u8; 34];
        assert_eq!(master.tx.copy_out(f, 0, &mut head), 34);
        assert_eq!(head[..6], docknet::abi::MASTER_MAC);
        assert_eq!(head[30..34], b.ipv4.octets());
        through_master.push(f.len);
        master.tx.give_back(f.buf);
    }
    assert_eq!(through_master, [30_042, 30_042]);
    drop((eng, peer, master));
    drop(root);
}

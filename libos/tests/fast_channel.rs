//! Two engines in one process joined by a fast channel and nothing else: no master runs,
//! so every byte must travel over the FC (services speak IP to smoltcp: no ARP at all).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use docknet::fc::create_fc_file;
use docknet::pipe::{create_pipe_file, PipeConfig, FC_DIR};
use docknet::{Control, Engine, EngineConfig};

fn pipe(dir: &Path, ip: Ipv4Addr) -> PipeConfig {
    let o = ip.octets();
    let cfg = PipeConfig {
        mac: [2, 0, o[0], o[1], o[2], o[3]],
        ipv4: ip,
        prefix_len: 16,
        gateway: Ipv4Addr::new(10, 88, 0, 1),
        mtu: 9000,
        nbufs: 256,
        flags: docknet::abi::pipe_flags::CSUM_OFFLOAD,
    };
    create_pipe_file(dir, &cfg).unwrap();
    cfg
}

/// Pipes a (10.88.0.2) and b (10.88.0.3) under a fresh temporary root, joined by a fast
/// channel file seen from both pipe directories. Returns (root, a, b, a's FC path).
fn fc_pair(
    tag: &str,
    nbufs: u32,
) -> (
    std::path::PathBuf,
    PipeConfig,
    PipeConfig,
    std::path::PathBuf,
) {
    let root = std::env::temp_dir().join(format!("dn-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (da, db) = (root.join("a"), root.join("b"));
    let a = pipe(&da, Ipv4Addr::new(10, 88, 0, 2));
    let b = pipe(&db, Ipv4Addr::new(10, 88, 0, 3));
    let fc = da.join(FC_DIR).join("b.map");
    create_fc_file(&fc, (a.ipv4, a.mac), (b.ipv4, b.mac), 9000, nbufs).unwrap();
    std::fs::hard_link(&fc, db.join(FC_DIR).join("a.map")).unwrap();
    (root, a, b, fc)
}

#[test]
fn tcp_echo_over_fast_channel_without_master() {
    let (root, a, _, _) = fc_pair("fc-test", 256);
    let (da, db) = (root.join("a"), root.join("b"));

    let cfg = |dir: &Path| EngineConfig {
        pipe_dir: dir.to_path_buf(),
        ..EngineConfig::from_env()
    };
    let mut server = Engine::attach(cfg(&da)).unwrap();
    let mut client = Engine::attach(cfg(&db)).unwrap();
    assert_eq!(client.device().fc_peers().collect::<Vec<_>>(), vec![a.ipv4]);

    let srv = std::thread::spawn(move || {
        let l = server.listen(7, 4).unwrap();
        let mut conn = None;
        let mut buf = vec![0u8; 65536];
        let (mut pending, mut start) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        server.run(|e| {
            if Instant::now() > deadline {
                return Control::Exit;
            }
            if conn.is_none() {
                conn = e.accept(l);
            }
            let Some(id) = conn else {
                return Control::Continue;
            };
            loop {
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
                        e.close(id);
                        return Control::Exit;
                    }
                }
            }
        });
        server.device().stats
    });

    let total = 4 << 20;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let id = client.connect(SocketAddrV4::new(a.ipv4, 7)).unwrap();
    let (mut sent, mut got) = (0usize, Vec::with_capacity(total));
    let deadline = Instant::now() + Duration::from_secs(60);
    client.run(|e| {
        if Instant::now() > deadline {
            return Control::Exit;
        }
        if !e.is_established(id) {
            return Control::Continue;
        }
        if sent < total {
            sent += e.write(id, &data[sent..]).unwrap();
        }
        let _ = e.recv_with(id, |d| {
            got.extend_from_slice(d);
            (d.len(), ())
        });
        if got.len() == total {
            e.close(id);
            return Control::Exit;
        }
        Control::Continue
    });
    assert_eq!(got.len(), total, "echo incomplete");
    assert!(got == data, "echoed bytes differ");
    let cstats = client.device().stats;
    let sstats = srv.join().unwrap();
    assert_eq!(
        cstats.tx_pipe_frames, 0,
        "client sent frames to the master: {cstats:?}"
    );
    assert_eq!(
        sstats.tx_pipe_frames, 0,
        "server sent frames to the master: {sstats:?}"
    );
    assert!(cstats.tx_fc_frames > 100 && sstats.rx_fc_frames > 100);
    assert_eq!(client.device().faults(), 0);
    drop(client);
    let _ = std::fs::remove_dir_all(&root);
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
    let _ = std::fs::remove_dir_all(&root);
}

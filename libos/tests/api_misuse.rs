//! Misusing the socket API is an error, not a panic: a closed id, an id whose socket was
//! freed and its slot reused, a second close, an operation after abort all give
//! `Err(NetError::BadSocket)` and leave other sockets alone. (A UDP id given where a TCP
//! one is wanted does not compile: they are different types; see the `compile_fail`
//! example on `TcpId` in the engine's docs.)

use std::net::{Ipv4Addr, SocketAddrV4};

use docknet::pipe::create_pipe_file;
use docknet::{Engine, EngineConfig, NetError};

mod common;
use common::{pipe_config, TempDir};

fn engine(tag: &str) -> (TempDir, Engine) {
    let root = TempDir::new(std::env::temp_dir().join(format!("dn-{tag}-{}", std::process::id())));
    let dir = root.path().join("p");
    let cfg = pipe_config(
        Ipv4Addr::new(10, 88, 0, 2),
        1500,
        64,
        docknet::abi::pipe_flags::CSUM_OFFLOAD,
    );
    create_pipe_file(&dir, &cfg).unwrap();
    let e = Engine::attach(EngineConfig {
        pipe_dir: dir,
        ..EngineConfig::from_env()
    })
    .unwrap();
    (root, e)
}

#[test]
fn closed_and_stale_tcp_ids_are_errors() {
    let (root, mut e) = engine("api-tcp");
    let peer = SocketAddrV4::new(Ipv4Addr::new(10, 88, 0, 3), 7);
    let a = e.connect(peer).unwrap();
    assert!(e.tcp_state(a).is_ok());
    e.close(a).unwrap();
    // Spent: every use is an error, none panics.
    let mut buf = [0u8; 16];
    assert_eq!(e.close(a), Err(NetError::BadSocket));
    assert_eq!(e.abort(a), Err(NetError::BadSocket));
    assert_eq!(e.read(a, &mut buf), Err(NetError::BadSocket));
    assert_eq!(e.write(a, b"x"), Err(NetError::BadSocket));
    assert_eq!(e.recv_with(a, |d| (d.len(), ())), Err(NetError::BadSocket));
    assert_eq!(e.send_with(a, |d| (d.len(), ())), Err(NetError::BadSocket));
    assert_eq!(e.tcp_state(a), Err(NetError::BadSocket));
    assert_eq!(e.recv_queue(a), Err(NetError::BadSocket));
    assert_eq!(e.send_capacity_left(a), Err(NetError::BadSocket));
    assert!(!e.is_established(a) && !e.is_open(a) && !e.may_send(a));

    // Freed (a connect that never got an answer closes at once) and its slot reused: the
    // old id still names nothing, the new one works.
    for _ in 0..4 {
        e.poll();
    }
    let b = e.connect(peer).unwrap();
    assert_ne!(a, b);
    assert_eq!(e.write(a, b"x"), Err(NetError::BadSocket));
    assert_eq!(e.close(a), Err(NetError::BadSocket));
    assert!(e.tcp_state(b).is_ok(), "the new socket was disturbed");
    e.abort(b).unwrap();
    assert_eq!(e.abort(b), Err(NetError::BadSocket));
    drop(e);
    drop(root);
}

#[test]
fn closed_udp_ids_are_errors() {
    let (root, mut e) = engine("api-udp");
    let u = e.udp_bind(5353).unwrap();
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 88, 0, 3), 53);
    assert_eq!(e.udp_send_to(u, b"q", to), Ok(true));
    let mut buf = [0u8; 64];
    assert_eq!(e.udp_recv_from(u, &mut buf), Ok(None));
    e.udp_close(u).unwrap();
    assert_eq!(e.udp_close(u), Err(NetError::BadSocket));
    assert_eq!(e.udp_send_to(u, b"q", to), Err(NetError::BadSocket));
    assert_eq!(e.udp_recv_from(u, &mut buf), Err(NetError::BadSocket));
    // The port is free again, and the new socket is not the old id.
    let v = e.udp_bind(5353).unwrap();
    assert_ne!(u, v);
    assert_eq!(e.udp_send_to(u, b"q", to), Err(NetError::BadSocket));
    assert_eq!(e.udp_send_to(v, b"q", to), Ok(true));
    drop(e);
    drop(root);
}

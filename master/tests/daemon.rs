//! End-to-end: run the real `docknetd`, drive it over its socket, and exchange frames
//! through its pipes from this process acting as two services.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use docknet_master::control::{request, Request, SOCKET_NAME};
use docknet_pipe::pipe::ServicePipeEnd;
use docknet_tests::nic::frames;
use docknet_tests::Daemon;
use serde_json::Value;

/// `docknetd --nic none` in a run directory of its own (the kit's [`Daemon`]: stopped and
/// removed on every exit path), started from this package's own build of it.
fn start() -> Daemon {
    let docknetd = Path::new(env!("CARGO_BIN_EXE_docknetd"));
    docknet_tests::set_bin_dir(docknetd.parent().expect("docknetd has a directory"));
    Daemon::start()
}

/// A request over the control socket (through the library, not `docknetctl`).
fn call(d: &Daemon, req: Request) -> Result<Value, String> {
    request(&d.run_dir.join(SOCKET_NAME), &req, Duration::from_secs(5)).map_err(|e| e.to_string())
}

fn create(d: &Daemon, name: &str, ip: &str) -> PathBuf {
    create_with(d, name, ip, false)
}

fn create_with(d: &Daemon, name: &str, ip: &str, forwarder: bool) -> PathBuf {
    let v = call(
        d,
        Request::PipeCreate {
            name: name.into(),
            ip: ip.into(),
            mtu: None,
            rate_mbps: None,
            forwarder,
            owner: None,
        },
    )
    .unwrap();
    PathBuf::from(v["dir"].as_str().unwrap())
}

fn stats(d: &Daemon, name: &str) -> Value {
    call(
        d,
        Request::Stats {
            name: Some(name.into()),
        },
    )
    .unwrap()[name]
        .clone()
}

/// Shutdown with `remove_all`: everything goes, the run dir included.
fn stop(mut d: Daemon) {
    call(&d, Request::Shutdown { remove_all: true }).unwrap();
    let status = d
        .wait_exit(Duration::from_secs(30))
        .expect("docknetd did not exit after shutdown");
    assert!(status.success(), "docknetd exited with {status}");
    assert!(!d.run_dir.exists(), "run dir left behind");
}

fn mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [2, 0, o[0], o[1], o[2], o[3]]
}

fn arp_request(src: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    frames::arp_request(mac(src), src.octets(), target.octets())
}

/// IPv4 protocol 253 (experimental) with `payload` counting bytes; no checksum (pipes
/// carry none).
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload).map(|i| i as u8).collect();
    frames::ipv4_unsummed(
        frames::BROADCAST,
        frames::BROADCAST,
        src.octets(),
        dst.octets(),
        253,
        &payload,
    )
}

fn send(s: &mut ServicePipeEnd, f: &[u8]) {
    assert!(s.tx.send_copy(f));
    s.tx.flush();
}

/// Wait for one frame on `s`.
fn recv(s: &mut ServicePipeEnd) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(f) = s.rx.recv() {
            let mut v = vec![0u8; f.len as usize];
            assert_eq!(s.rx.copy_out(f, 0, &mut v), v.len());
            s.rx.give_back(f.buf);
            s.rx.flush();
            return v;
        }
        assert!(Instant::now() < deadline, "no frame arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_stat(d: &Daemon, name: &str, key: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = stats(d, name)[key].as_u64().unwrap();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}.{key} = {got}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn switches_frames_between_services() {
    let d = start();
    let (ia, ib, ic) = (
        "10.88.0.2".parse().unwrap(),
        "10.88.0.3".parse().unwrap(),
        "10.88.0.4".parse().unwrap(),
    );
    let mut a = ServicePipeEnd::attach(&create(&d, "a", "10.88.0.2/16")).unwrap();
    let mut b = ServicePipeEnd::attach(&create(&d, "b", "10.88.0.3/16")).unwrap();
    create(&d, "c", "10.88.0.4/16");
    let ls = call(&d, Request::PipeLs).unwrap();
    assert_eq!(
        ls[0]["attached_pid"].as_u64(),
        Some(std::process::id() as u64)
    );
    assert_eq!(ls[0]["attached"], true, "{ls}");
    assert_eq!(ls[2]["attached"], false, "{ls}");

    // ARP for b and for the gateway.
    send(&mut a, &arp_request(ia, ib));
    let r = recv(&mut a);
    assert_eq!((&r[20..22], &r[22..28]), (&[0u8, 2][..], &mac(ib)[..]));
    send(&mut a, &arp_request(ia, "10.88.0.1".parse().unwrap()));
    assert_eq!(&recv(&mut a)[22..28], &[0x02, 0x44, 0x4e, 0, 0, 1]);

    // a -> b, both ways, after the daemon went to sleep.
    std::thread::sleep(Duration::from_millis(50));
    let f = ipv4(ia, ib, 1000);
    send(&mut a, &f);
    let got = recv(&mut b);
    assert_eq!(&got[0..6], &mac(ib));
    assert_eq!(&got[6..12], &mac(ia));
    assert_eq!(&got[12..], &f[12..]);
    send(&mut b, &ipv4(ib, ia, 10));
    assert_eq!(recv(&mut a).len(), 14 + 30);

    // Drops.
    send(&mut a, &ipv4(ia, ic, 10));
    send(&mut a, &ipv4(ib, ic, 10));
    send(&mut a, &ipv4(ia, "10.1.2.3".parse().unwrap(), 10));
    wait_stat(&d, "a", "not_attached", 1);
    wait_stat(&d, "a", "spoofed", 1);
    wait_stat(&d, "a", "no_route", 1);
    let sa = stats(&d, "a");
    assert_eq!(sa["tx_frames"], 6);
    assert_eq!(sa["arp_replies"], 2);
    assert_eq!(sa["rx_frames"], 3);
    assert_eq!(stats(&d, "b")["rx_bytes"], f.len() as u64);

    // A service that never detaches (forgotten here, its claim still held by this
    // process): rm + create with the same name/IP gives a fresh, attachable pipe.
    std::mem::forget(b);
    call(&d, Request::PipeRm { name: "b".into() }).unwrap();
    let mut b = ServicePipeEnd::attach(&create(&d, "b", "10.88.0.3/16")).unwrap();
    send(&mut a, &f);
    assert_eq!(recv(&mut b).len(), f.len());

    stop(d);
}

/// Only a pipe created `--forwarder` may send with another source address (a NAT passing
/// a client's address on); the same frame from an ordinary pipe is dropped as spoofed.
#[test]
fn only_a_forwarder_pipe_sends_with_foreign_sources() {
    let d = start();
    let (ib, iplain, client): (Ipv4Addr, Ipv4Addr, Ipv4Addr) = (
        "10.88.0.11".parse().unwrap(),
        "10.88.0.12".parse().unwrap(),
        "192.0.2.7".parse().unwrap(),
    );
    let mut nat = ServicePipeEnd::attach(&create_with(&d, "nat", "10.88.0.10/16", true)).unwrap();
    let mut b = ServicePipeEnd::attach(&create(&d, "b", "10.88.0.11/16")).unwrap();
    let mut plain = ServicePipeEnd::attach(&create(&d, "plain", "10.88.0.12/16")).unwrap();
    let ls = call(&d, Request::PipeLs).unwrap();
    let forwarder = |n: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()["forwarder"]
            .clone()
    };
    assert_eq!(
        (forwarder("nat"), forwarder("plain")),
        (true.into(), false.into())
    );

    let f = ipv4(client, ib, 100);
    send(&mut nat, &f);
    let got = recv(&mut b);
    assert_eq!(
        &got[26..30],
        &client.octets(),
        "the client's address reached b"
    );
    assert_eq!(stats(&d, "nat")["spoofed"], 0);

    send(&mut plain, &f);
    wait_stat(&d, "plain", "spoofed", 1);
    // Its own address still passes.
    send(&mut plain, &ipv4(iplain, ib, 10));
    assert_eq!(&recv(&mut b)[26..30], &iplain.octets());
    stop(d);
}

#[test]
fn survives_a_hostile_service() {
    let d = start();
    let dir = create(&d, "evil", "10.77.0.2/24");
    let map = docknet_pipe::shm::SharedMap::open(&dir.join("pipe.map")).unwrap();
    let info = docknet_pipe::pipe::read_pipe_info(&map).unwrap();
    // Garbage over the TX channel's rings, then over the whole file past the header.
    let p = map.bytes_at(info.tx.ring_off as usize, 4096).unwrap();
    // SAFETY: 4096 bytes inside the mapping.
    unsafe { std::ptr::write_bytes(p, 0x5a, 4096) };
    std::thread::sleep(Duration::from_millis(300));
    let p = map.bytes_at(4096, map.len() - 4096).unwrap();
    // SAFETY: the rest of the mapping.
    unsafe { std::ptr::write_bytes(p, 0xff, map.len() - 4096) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(call(&d, Request::Ping).unwrap(), "pong");
    assert!(stats(&d, "evil")["ring_corrupt"].as_u64().unwrap() > 0);
    call(
        &d,
        Request::PipeRm {
            name: "evil".into(),
        },
    )
    .unwrap();
    assert!(!Path::new(&dir).exists());
    stop(d);
}

//! End-to-end: run the real `docknetd`, drive it over its socket, and exchange frames
//! through its pipes from this process acting as two services.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docknet_master::control::{request, Request, SOCKET_NAME};
use docknet_pipe::pipe::ServicePipeEnd;
use serde_json::Value;

struct Daemon {
    child: Child,
    run_dir: PathBuf,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let run_dir =
            std::env::temp_dir().join(format!("dn-master-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        let child = Command::new(env!("CARGO_BIN_EXE_docknetd"))
            .arg("--run-dir")
            .arg(&run_dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn docknetd");
        let d = Daemon { child, run_dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.call(Request::Ping).is_err() {
            assert!(Instant::now() < deadline, "docknetd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn call(&self, req: Request) -> Result<Value, String> {
        request(
            &self.run_dir.join(SOCKET_NAME),
            &req,
            Duration::from_secs(5),
        )
        .map_err(|e| e.to_string())
    }

    fn create(&self, name: &str, ip: &str) -> PathBuf {
        self.create_with(name, ip, false)
    }

    fn create_with(&self, name: &str, ip: &str, forwarder: bool) -> PathBuf {
        let v = self
            .call(Request::PipeCreate {
                name: name.into(),
                ip: ip.into(),
                mtu: None,
                rate_mbps: None,
                forwarder,
                owner: None,
            })
            .unwrap();
        PathBuf::from(v["dir"].as_str().unwrap())
    }

    fn stats(&self, name: &str) -> Value {
        self.call(Request::Stats {
            name: Some(name.into()),
        })
        .unwrap()[name]
            .clone()
    }

    /// `docknetctl shutdown --remove-all`: everything goes, the run dir included.
    fn stop(mut self) {
        self.call(Request::Shutdown { remove_all: true }).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "docknetd exited with {status}");
        assert!(!self.run_dir.exists(), "run dir left behind");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            let _ = std::fs::remove_dir_all(&self.run_dir);
            return;
        }
        // A failed test: stop the daemon cleanly (it unmounts its tmpfs), then make sure.
        let _ = self.call(Request::Shutdown { remove_all: true });
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [2, 0, o[0], o[1], o[2], o[3]]
}

fn arp_request(src: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac(src));
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac(src));
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
    let mut f = vec![0xff; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + payload;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        253,
        0,
        0,
    ]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend((0..payload).map(|i| i as u8));
    f
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
        let got = d.stats(name)[key].as_u64().unwrap();
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
    let d = Daemon::start("switch");
    let (ia, ib, ic) = (
        "10.88.0.2".parse().unwrap(),
        "10.88.0.3".parse().unwrap(),
        "10.88.0.4".parse().unwrap(),
    );
    let mut a = ServicePipeEnd::attach(&d.create("a", "10.88.0.2/16")).unwrap();
    let mut b = ServicePipeEnd::attach(&d.create("b", "10.88.0.3/16")).unwrap();
    d.create("c", "10.88.0.4/16");
    let ls = d.call(Request::PipeLs).unwrap();
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
    let sa = d.stats("a");
    assert_eq!(sa["tx_frames"], 6);
    assert_eq!(sa["arp_replies"], 2);
    assert_eq!(sa["rx_frames"], 3);
    assert_eq!(d.stats("b")["rx_bytes"], f.len() as u64);

    // A service that never detaches (forgotten here, its claim still held by this
    // process): rm + create with the same name/IP gives a fresh, attachable pipe.
    std::mem::forget(b);
    d.call(Request::PipeRm { name: "b".into() }).unwrap();
    let mut b = ServicePipeEnd::attach(&d.create("b", "10.88.0.3/16")).unwrap();
    send(&mut a, &f);
    assert_eq!(recv(&mut b).len(), f.len());

    d.stop();
}

/// Only a pipe created `--forwarder` may send with another source address (a NAT passing
/// a client's address on); the same frame from an ordinary pipe is dropped as spoofed.
#[test]
fn only_a_forwarder_pipe_sends_with_foreign_sources() {
    let d = Daemon::start("forwarder");
    let (ib, iplain, client): (Ipv4Addr, Ipv4Addr, Ipv4Addr) = (
        "10.88.0.11".parse().unwrap(),
        "10.88.0.12".parse().unwrap(),
        "192.0.2.7".parse().unwrap(),
    );
    let mut nat = ServicePipeEnd::attach(&d.create_with("nat", "10.88.0.10/16", true)).unwrap();
    let mut b = ServicePipeEnd::attach(&d.create("b", "10.88.0.11/16")).unwrap();
    let mut plain = ServicePipeEnd::attach(&d.create("plain", "10.88.0.12/16")).unwrap();
    let ls = d.call(Request::PipeLs).unwrap();
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
    assert_eq!(d.stats("nat")["spoofed"], 0);

    send(&mut plain, &f);
    wait_stat(&d, "plain", "spoofed", 1);
    // Its own address still passes.
    send(&mut plain, &ipv4(iplain, ib, 10));
    assert_eq!(&recv(&mut b)[26..30], &iplain.octets());
    d.stop();
}

#[test]
fn survives_a_hostile_service() {
    let d = Daemon::start("hostile");
    let dir = d.create("evil", "10.77.0.2/24");
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
    assert_eq!(d.call(Request::Ping).unwrap(), "pong");
    assert!(d.stats("evil")["ring_corrupt"].as_u64().unwrap() > 0);
    d.call(Request::PipeRm {
        name: "evil".into(),
    })
    .unwrap();
    assert!(!Path::new(&dir).exists());
    d.stop();
}

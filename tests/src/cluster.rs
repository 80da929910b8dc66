//! Harness for the cluster tests (issue 9): `docknetd` on a TAP in a namespace of its
//! own, a cluster brought up from a file with `docknetctl cluster up`, and kernel HTTP
//! clients in that namespace (std sockets on threads that entered it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::nic::Netns;
use crate::{bin, Daemon, TempDir};

/// The VIP of the test clusters.
pub const VIP: &str = "10.88.0.100";

/// A daemon on a TAP in a namespace, and a cluster file's folder.
pub struct ClusterSite {
    /// Dropped first: stops the daemon (`shutdown --remove-all` stops the clusters).
    pub daemon: Daemon,
    pub ns: Netns,
    pub dir: TempDir,
    /// Pids seen in `cluster status`, killed on drop if something is left running.
    pids: std::sync::Mutex<Vec<u32>>,
}

impl ClusterSite {
    pub fn start() -> ClusterSite {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = Netns::new("cl");
        let tap = format!(
            "dcl{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let daemon = Daemon::start_in(ns.path(), &format!("tap:{tap}"), &[]);
        ClusterSite {
            daemon,
            ns,
            dir: TempDir::new(),
            pids: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Write `FILE.toml` with `body` (the `binary`/`image` and the rest) and run
    /// `cluster up` on it; panics with the logs if it fails.
    pub fn up(&self, file: &str, body: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, body).expect("write cluster file");
        let p = path.display().to_string();
        let out = self.daemon.ctl(&["cluster", "up", &p, "--timeout-s", "30"]);
        assert!(
            out.status.success(),
            "cluster up {file} failed: {}{}\ndocknetd log:\n{}\nmember logs:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.daemon.log_tail(),
            self.member_logs()
        );
        let st = self.status(file.trim_end_matches(".toml"));
        self.note_pids(&st);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of every process log of every cluster.
    pub fn member_logs(&self) -> String {
        let mut s = String::new();
        let dir = self.daemon.run_dir.join("clusters");
        for c in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                s += &format!(
                    "== {}\n{}\n",
                    f.path().display(),
                    crate::log_tail(&f.path())
                );
            }
        }
        s
    }

    fn note_pids(&self, st: &Value) {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        for m in members(st).iter().chain(std::iter::once(&st["nat"])) {
            if let Some(p) = m["pid"].as_u64().filter(|&p| p > 0) {
                pids.push(p as u32);
            }
        }
    }

    /// `cluster status NAME --json`.
    pub fn status(&self, name: &str) -> Value {
        let out = self.daemon.ctl_ok(&["cluster", "status", name, "--json"]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("cluster status --json is not JSON ({e}): {out}"));
        self.note_pids(&v);
        v
    }

    /// A member from `cluster status`.
    pub fn member(&self, name: &str, member: &str) -> Value {
        let st = self.status(name);
        members(&st)
            .into_iter()
            .find(|m| m["name"] == member)
            .unwrap_or_else(|| panic!("no member {member} in {st}"))
    }

    /// Poll `cluster status` until `pred` holds (or panic after `timeout`).
    pub fn wait_until(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(name);
            if pred(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {st}\ndocknetd log:\n{}",
                self.daemon.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run `body` on `threads` threads inside the namespace; results in thread order.
    pub fn clients<T: Send>(&self, threads: usize, body: impl Fn(usize) -> T + Sync) -> Vec<T> {
        self.ns.run(|| {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|i| {
                        let body = &body;
                        s.spawn(move || body(i))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("client thread"))
                    .collect()
            })
        })
    }
}

impl ClusterSite {
    /// `n` keep-alive connections to `addr` from the namespace, each with one request
    /// answered 200 (so every flow is established).
    pub fn keepalives(&self, addr: SocketAddr, n: usize) -> Vec<KeepAlive> {
        self.clients(1, |_| {
            (0..n)
                .map(|i| {
                    let mut k = KeepAlive::connect(addr, Duration::from_secs(3))
                        .unwrap_or_else(|e| panic!("keep-alive connection {i} of {n}: {e}"));
                    let o = k.get();
                    assert!(
                        matches!(o, Outcome::Status(200)),
                        "keep-alive connection {i}: {o:?}"
                    );
                    k
                })
                .collect::<Vec<_>>()
        })
        .pop()
        .expect("one client thread")
    }
}

impl Drop for ClusterSite {
    fn drop(&mut self) {
        // A daemon that died would leave its clusters' processes (their own sessions).
        let pids = self.pids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = self
            .daemon
            .try_ctl(&["shutdown", "--remove-all"], Duration::from_secs(15));
        for p in pids {
            // SAFETY: kill(2) with a pid we saw as a member; gone pids give ESRCH.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// The members array of a `cluster status --json`.
pub fn members(st: &Value) -> Vec<Value> {
    st["members"].as_array().cloned().unwrap_or_default()
}

/// The `connections` of every member, by name order.
pub fn connections(st: &Value) -> Vec<(String, u64)> {
    members(st)
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("?").to_string(),
                m["connections"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The path of a release binary, for cluster files.
pub fn bin_path(name: &str) -> String {
    let p: PathBuf = bin(name);
    p.display().to_string()
}

/// What one HTTP exchange on a new connection gave.
#[derive(Debug)]
pub enum Outcome {
    /// The status code.
    Status(u16),
    /// Connecting failed (refused: a reset answered the SYN).
    ConnectFailed(std::io::ErrorKind),
    /// The connection was reset or closed before a full answer.
    Reset,
    /// No answer within the read timeout: a hung connection.
    Hung,
}

/// `GET /` on a new connection to `addr` with `Connection: close`; the status line.
pub fn get_once(addr: SocketAddr, timeout: Duration) -> Outcome {
    let mut s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Outcome::Hung,
        Err(e) => return Outcome::ConnectFailed(e.kind()),
    };
    let _ = s.set_read_timeout(Some(timeout));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return Outcome::Reset;
    }
    read_status(&mut s, true)
}

/// Read one response's status (and, with `to_eof`, everything up to EOF).
fn read_status(s: &mut TcpStream, to_eof: bool) -> Outcome {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if !to_eof && response_complete(&buf) {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Outcome::Hung
            }
            Err(_) => return Outcome::Reset,
        }
    }
    match std::str::from_utf8(buf.get(9..12).unwrap_or(b""))
        .ok()
        .and_then(|c| c.parse().ok())
    {
        Some(code) if buf.starts_with(b"HTTP/1.") && response_complete(&buf) => {
            Outcome::Status(code)
        }
        _ => Outcome::Reset,
    }
}

/// True once `buf` holds a head and the Content-Length body after it.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    buf.len() >= end + 4 + len
}

/// A keep-alive connection for several requests.
pub struct KeepAlive(pub TcpStream);

impl KeepAlive {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<KeepAlive> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        Ok(KeepAlive(s))
    }

    /// One `GET /` on this connection.
    pub fn get(&mut self) -> Outcome {
        if self
            .0
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
            .is_err()
        {
            return Outcome::Reset;
        }
        read_status(&mut self.0, false)
    }
}

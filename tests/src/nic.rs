//! Harness for the NIC-backend tests (issue 3): network namespaces as hosts joined by
//! veth links, `docknetd` bound to a backend (TAP, AF_PACKET, DPDK), kernel clients (curl,
//! ping, the bench's verifying echo client), pcap checks, and raw Ethernet frames.
//!
//! Every namespace and process is owned by a guard that removes it on every exit path.
//! The scenarios are functions here so each backend's test file is a list of one-liners.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin, run_with_timeout, unique_tmp, wait_for_line, ChildGuard, Daemon};

/// The service pipe of a one-host topology.
pub const PIPE: &str = "a";
/// Its address (and prefix).
pub const PIPE_IP: &str = "10.88.0.2";
pub const PIPE_CIDR: &str = "10.88.0.2/16";
/// The kernel client's address on the veth (AF_PACKET/DPDK topologies).
pub const KERNEL_IP: &str = "10.88.0.100";
pub const KERNEL_CIDR: &str = "10.88.0.100/16";
/// What `dn-echo http` answers.
pub const HTTP_BODY: &str = "hello from dn-echo on DockNet\n";
/// The echo service's port.
pub const ECHO_PORT: u16 = 7;

/// Counters `docknetctl nic --json` reports under `"counters"`.
pub const NIC_COUNTERS: &[&str] = &[
    "rx_frames",
    "rx_bytes",
    "tx_frames",
    "tx_bytes",
    "delivered",
    "bad_frame",
    "bad_csum",
    "unknown_dst",
    "spoofed",
    "not_for_us",
    "unsupported",
    "pipe_full",
    "arp_answered",
    "arp_requests",
    "no_neighbor",
    "tx_dropped",
    "rx_dropped",
    "routed",
    "no_route",
];

/// Serializes the tests of one test binary: each starts its own namespaces and daemons,
/// and on a 2-core machine several 64 MiB streams at once only measure contention.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// True if the test can run (root, for network namespaces); prints why not otherwise.
pub fn need_root(test: &str) -> bool {
    crate::need_root(test, "network namespaces, TAP, raw sockets")
}

/// `<pid>x<counter>`: unique among concurrent test processes.
fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}x{n}", std::process::id())
}

/// Run a command to completion (with a timeout), panicking with its output if it hangs
/// or fails.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    match run_with_timeout(cmd, timeout) {
        Ok(out) if out.status.success() => out,
        Ok(out) => panic!(
            "{desc} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err((e, out)) => panic!(
            "{e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Run a command to completion (with a timeout): its output if it succeeded, otherwise
/// one line saying what failed (for checks that skip or fall back rather than fail).
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let desc = format!("{cmd:?}");
    match run_with_timeout(cmd, timeout) {
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => Err(format!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err((e, _)) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Hosts: network namespaces

/// A network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// A new namespace named `dnt-<pid>x<n>-<tag>` with `lo` up and IPv6 off (so no
    /// router solicitations or MLD reports land in the NIC counters).
    pub fn new(tag: &str) -> Netns {
        Self::try_new(tag).unwrap_or_else(|e| panic!("cannot make a network namespace: {e}"))
    }

    /// [`Netns::new`], or why this host cannot make a namespace (for tests that skip).
    pub fn try_new(tag: &str) -> Result<Netns, String> {
        let name = format!("dnt-{}-{tag}", unique_suffix());
        try_run(
            Command::new("ip").args(["netns", "add", &name]),
            Duration::from_secs(10),
        )?;
        // From here on, drop deletes the namespace whatever fails next.
        let ns = Netns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ns.try_ip(&["link", "set", "lo", "up"])?;
        // Best effort: without sysctl the tests still work, counters just see more noise.
        let _ = run_with_timeout(
            ns.command("sysctl").args([
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]),
            Duration::from_secs(5),
        );
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `program` run inside this namespace (network namespace only, via nsenter).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        let mut net = std::ffi::OsString::from("--net=");
        net.push(&self.path);
        c.arg(net).arg("--").arg(program);
        c
    }

    /// `ip -n NAME ARGS…`, asserted to succeed.
    pub fn ip(&self, args: &[&str]) {
        run_ok(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            Duration::from_secs(10),
        );
    }

    /// `ip -n NAME ARGS…`, or one line saying why it failed.
    pub fn try_ip(&self, args: &[&str]) -> Result<(), String> {
        try_run(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            Duration::from_secs(10),
        )
        .map(drop)
    }

    /// Move the calling thread into this namespace ([`enter_netns`]).
    pub fn enter(&self) -> io::Result<()> {
        enter_netns(&self.path)
    }

    /// Run `body` on a thread of its own that first entered this namespace (for code
    /// under test that works in "the current" namespace: sockets, NICs, DPDK's EAL),
    /// and return its result; a panic in `body` is re-raised here, so guards on this
    /// thread (this namespace among them) still clean up.
    pub fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                self.enter()
                    .unwrap_or_else(|e| panic!("entering namespace {}: {e}", self.name));
                body()
            });
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Output of `ip -n NAME ARGS…` (for failure messages).
    pub fn ip_show(&self, args: &[&str]) -> String {
        match run_with_timeout(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            Duration::from_secs(10),
        ) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err((e, _)) => e,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also destroys the veth ends and TAPs inside it.
        let _ = run_with_timeout(
            Command::new("ip").args(["netns", "del", &self.name]),
            Duration::from_secs(10),
        );
    }
}

/// Move the calling thread into the network namespace whose handle is `path` (e.g.
/// `/run/netns/NAME`). `setns` affects only this thread, and sockets and child processes
/// made by it afterwards; keep such threads short-lived ([`Netns::run`]).
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: `f` is an open namespace file; setns only changes this thread's network
    // namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A veth pair: `a_if` in namespace `a`, `b_if` in `b` (which may be `a`: both ends in
/// one namespace), both up. Created directly in the namespaces, so the names never clash
/// with other tests.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    run_ok(
        Command::new("ip").args([
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ]),
        Duration::from_secs(10),
    );
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

// ---------------------------------------------------------------------------------------
// Backends and one-host topologies

/// A NIC backend under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Tap,
    AfPacket,
    Dpdk,
}

/// A DPDK `--file-prefix` unique among concurrent test processes (`dnt<pid>x<n>`); its
/// runtime directory `/var/run/dpdk/PREFIX` (if EAL made one) is removed on drop.
pub struct DpdkPrefix {
    prefix: String,
}

impl DpdkPrefix {
    pub fn new() -> DpdkPrefix {
        DpdkPrefix {
            prefix: format!("dnt{}", unique_suffix()),
        }
    }

    /// The value for `--file-prefix=`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Default for DpdkPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DpdkPrefix {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

impl Backend {
    /// The `--nic` value for a daemon whose link is interface `iface` of its namespace;
    /// `lcore` is the DPDK main lcore (two daemons on two cores in two-host tests). Also
    /// returns DPDK's file prefix, for cleanup.
    fn nic_arg(self, iface: &str, lcore: usize) -> (String, Option<DpdkPrefix>) {
        match self {
            Backend::Tap => (format!("tap:{iface}"), None),
            Backend::AfPacket => (format!("af-packet:{iface}"), None),
            Backend::Dpdk => {
                let prefix = DpdkPrefix::new();
                let eal = format!(
                    "--no-huge --no-pci --vdev=net_af_packet0,iface={iface},framecnt=4096 -l {lcore} -m 256 \
                     --no-telemetry --no-shconf --file-prefix={} --log-level=error",
                    prefix.prefix()
                );
                (format!("dpdk:{eal}"), Some(prefix))
            }
        }
    }
}

/// What the harness turns off on the kernel's veth end `k0` (`ethtool -K k0 …`): what a
/// veth hands its peer but a physical wire never carries.
/// - TSO/GSO (both veth backends): the kernel's unsegmented GSO super-frames (up to
///   64 KiB) cross a veth as-is; a reader on `h0` gets frames larger than the MTU, which
///   docknetd drops (`rx_dropped`). A NIC segments in hardware; on a veth the sender must.
/// - TX checksumming (DPDK only): frames from the kernel carry CHECKSUM_PARTIAL (TCP/UDP
///   checksum not filled in). docknetd's own AF_PACKET backend sees
///   `TP_STATUS_CSUMNOTREADY` and completes them; DPDK's af_packet PMD (22.11) does not
///   pass that status on, so the DPDK backend sees wrong checksums (`bad_csum`).
///
/// The `*_peer_offloads_on` tests (ignored) keep the kernel's defaults and show both.
pub fn peer_offloads_off(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Tap => &[],
        Backend::AfPacket => &["tso", "off", "gso", "off"],
        Backend::Dpdk => &["tso", "off", "gso", "off", "tx", "off"],
    }
}

/// One host running docknetd with pipe [`PIPE`] = [`PIPE_CIDR`], and a kernel that
/// reaches it over the link:
/// - TAP: namespace `host` holds docknetd's TAP `dntN`; the kernel client runs there
///   (the TAP's kernel side gets the pipe subnet's gateway 10.88.0.1/16).
/// - AF_PACKET / DPDK: docknetd binds veth end `h0` in `host`; the other end `k0` =
///   [`KERNEL_CIDR`] is in namespace `kernel`, where the kernel client runs.
pub struct Site {
    /// Dropped first (fields drop in declaration order): the daemon leaves its
    /// namespace before the namespace goes.
    pub daemon: Daemon,
    _dpdk: Option<DpdkPrefix>,
    pub host: Netns,
    pub kernel: Option<Netns>,
    pub backend: Backend,
    /// The daemon's link interface (in `host`).
    pub iface: String,
}

impl Site {
    /// The topology for `backend`, with [`peer_offloads_off`] applied to `k0`.
    pub fn start(backend: Backend) -> Site {
        Self::start_with_peer_ethtool(backend, peer_offloads_off(backend))
    }

    /// The topology for `backend`; `ethtool -K k0 FEATURES…` is run on the kernel's veth
    /// end unless `features` is empty (then the kernel's defaults stay).
    pub fn start_with_peer_ethtool(backend: Backend, features: &[&str]) -> Site {
        Self::start_full(backend, features, &[])
    }

    /// [`Site::start`] with extra `docknetd` arguments (e.g. `--arp-reachable 3s`).
    pub fn start_with_daemon_args(backend: Backend, daemon_args: &[&str]) -> Site {
        Self::start_full(backend, peer_offloads_off(backend), daemon_args)
    }

    fn start_full(backend: Backend, features: &[&str], daemon_args: &[&str]) -> Site {
        let host = Netns::new("h");
        let (kernel, iface) = match backend {
            Backend::Tap => {
                static TAPS: AtomicU32 = AtomicU32::new(0);
                (None, format!("dnt{}", TAPS.fetch_add(1, Ordering::Relaxed)))
            }
            Backend::AfPacket | Backend::Dpdk => {
                let k = Netns::new("k");
                veth(&host, "h0", &k, "k0");
                k.ip(&["addr", "add", KERNEL_CIDR, "dev", "k0"]);
                if !features.is_empty() {
                    run_ok(
                        k.command("ethtool").args(["-K", "k0"]).args(features),
                        Duration::from_secs(10),
                    );
                }
                (Some(k), "h0".to_string())
            }
        };
        let (nic, dpdk) = backend.nic_arg(&iface, 0);
        let daemon = Daemon::start_in(host.path(), &nic, daemon_args);
        daemon.create_pipe(PIPE, PIPE_CIDR, &[]);
        if backend == Backend::Tap {
            let addrs = host.ip_show(&["-4", "addr", "show", "dev", &iface]);
            assert!(
                addrs.contains("10.88.0.1/16"),
                "TAP {iface} should have the gateway 10.88.0.1/16 once pipe {PIPE} exists:\n{addrs}"
            );
        }
        Site {
            daemon,
            _dpdk: dpdk,
            host,
            kernel,
            backend,
            iface,
        }
    }

    /// Where kernel clients run.
    pub fn client_ns(&self) -> &Netns {
        self.kernel.as_ref().unwrap_or(&self.host)
    }

    /// `docknetctl nic --json`, parsed.
    pub fn nic(&self) -> Value {
        self.daemon.nic_json()
    }

    /// Start `dn-echo http --port 80` on the pipe and wait until it listens.
    pub fn http_service(&self) -> ChildGuard {
        self.daemon
            .service_listening(PIPE, &["http", "--port", "80"])
    }

    /// Start `dn-echo server --port 7` on the pipe and wait until it listens.
    pub fn echo_service(&self) -> ChildGuard {
        self.daemon.echo_server(PIPE, ECHO_PORT)
    }

    /// What the client namespace's kernel says about its links and TCP sockets (drops,
    /// retransmissions, RTO), for a failure message.
    fn kernel_side_report(&self) -> String {
        let mut out = String::new();
        for args in [&["ip", "-s", "link"][..], &["ss", "-tin"][..]] {
            let mut c = self.client_ns().command(args[0]);
            c.args(&args[1..]);
            match run_with_timeout(&mut c, Duration::from_secs(5)) {
                Ok(o) => out.push_str(&String::from_utf8_lossy(&o.stdout)),
                Err((e, _)) => out.push_str(&format!("{args:?}: {e}\n")),
            }
        }
        out
    }

    /// Run a kernel client inside the client namespace to completion.
    pub fn kernel_run(&self, program: &str, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = self.client_ns().command(program);
        cmd.args(args);
        match run_with_timeout(&mut cmd, timeout) {
            Ok(o) => o,
            Err((e, o)) => panic!(
                "{e}\nstdout: {}\nstderr: {}\nNIC: {}\npipes: {}\nkernel side:\n{}\ndocknetd log:\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                self.nic(),
                self.daemon.stats(None),
                self.kernel_side_report(),
                self.daemon.log_tail()
            ),
        }
    }

    /// `curl` the HTTP service from the kernel; returns the body (asserting success).
    pub fn curl(&self) -> String {
        let url = format!("http://{PIPE_IP}/");
        let out = self.kernel_run(
            "curl",
            &["-sS", "--connect-timeout", "5", "--max-time", "10", &url],
            Duration::from_secs(15),
        );
        assert!(
            out.status.success(),
            "curl {url} from the kernel ({:?}) failed ({}): {}\nNIC: {}\ndocknetd log:\n{}",
            self.backend,
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.nic(),
            self.daemon.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The bench's verifying kernel TCP echo client against the echo service: asserts
    /// every byte came back (exit 0); returns its JSON result.
    pub fn kernel_echo(&self, size: usize, count: usize, timeout: Duration) -> Value {
        let bench = bin("docknet-bench");
        let to = format!("{PIPE_IP}:{ECHO_PORT}");
        let (size_s, count_s) = (size.to_string(), count.to_string());
        let args = [
            "kernel-echo-client",
            "--to",
            &to,
            "--size",
            &size_s,
            "--count",
            &count_s,
            "--warmup",
            "0",
            "--json",
        ];
        let start = Instant::now();
        let out = self.kernel_run(&bench.to_string_lossy(), &args, timeout);
        assert!(
            out.status.success(),
            "kernel echo client {size} B x {count} to {to} ({:?}) failed ({}):\nstdout: {}\nstderr: {}\nNIC: {}\ndocknetd log:\n{}",
            self.backend,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.nic(),
            self.daemon.log_tail()
        );
        let line = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "[kernel-echo {:?}] {size} B x {count}: ok in {:.2?}: {}",
            self.backend,
            start.elapsed(),
            line.trim()
        );
        serde_json::from_str(line.trim()).unwrap_or(Value::Null)
    }
}

impl Daemon {
    /// `docknetctl nic --json`, parsed.
    pub fn nic_json(&self) -> Value {
        let out = self.ctl_ok(&["nic", "--json"]);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("nic --json is not JSON ({e}): {out}"))
    }

    /// `docknetctl route ls --json`, parsed.
    pub fn routes_json(&self) -> Value {
        let out = self.ctl_ok(&["route", "ls", "--json"]);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("route ls --json is not JSON ({e}): {out}"))
    }

    /// The counters of the route to `cidr` in `route ls --json` (panics if there is none).
    pub fn route_counters(&self, cidr: &str) -> Value {
        let all = self.routes_json();
        all["routes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["cidr"] == cidr))
            .map(|r| r["counters"].clone())
            .unwrap_or_else(|| panic!("no route {cidr} in {all}"))
    }

    /// Start a service on `pipe` and wait for its "listening" line.
    pub fn service_listening(&self, pipe: &str, args: &[&str]) -> ChildGuard {
        let (mut g, stdout) = self.spawn_service(pipe, "dn-echo", args);
        if let Err(e) = wait_for_line(stdout, "listening", Duration::from_secs(20)) {
            let alive = g.alive();
            panic!(
                "dn-echo {args:?} on {pipe} not listening: {e}\n(alive: {alive})\nits stderr:\n{}\ndocknetd log:\n{}",
                g.log_tail(),
                self.log_tail()
            );
        }
        g
    }
}

/// Node `node`'s docknetd `d` (link address `link_ip`) routed at least `min_bytes` to
/// `cidr` over its NIC: the route's `bytes`, the NIC's `routed` at least the route's
/// frames, nothing dropped for want of a route or for a bad checksum, and it answered
/// ARP for its link address. Returns the route's counters.
pub fn assert_route_carried(
    d: &Daemon,
    node: &str,
    link_ip: &str,
    cidr: &str,
    min_bytes: u64,
) -> Value {
    let r = d.route_counters(cidr);
    let bytes = r["bytes"].as_u64().unwrap_or(0);
    assert!(
        bytes >= min_bytes,
        "node {node}: its route to {cidr} carried {bytes} bytes, expected >= {min_bytes}: {r}"
    );
    let nic = d.nic_json();
    assert!(
        nic_counter(&nic, "routed") >= r["frames"].as_u64().unwrap_or(0),
        "node {node}: NIC counter routed below the route's frames: {nic}"
    );
    assert_eq!(
        nic_counter(&nic, "no_route"),
        0,
        "node {node}: frames dropped for no route: {nic}"
    );
    assert_eq!(nic_counter(&nic, "bad_csum"), 0, "node {node}: {nic}");
    // The peer asked for our link address: we answered.
    assert!(
        nic_counter(&nic, "arp_answered") >= 1,
        "node {node}: never answered ARP for its link address: {nic}"
    );
    assert_eq!(nic["link_ip"], link_ip, "node {node}: {nic}");
    r
}

/// Two "nodes" (issue 11, part 2): network namespaces joined by a veth (`e0` on each
/// side), each with its own docknetd on its end (AF_PACKET) and its own address on the
/// wire ([`TwoNodes::LINK_IPS`]); pods of node N get addresses from
/// [`TwoNodes::POD_SUBNETS`]`[N-1]`, one /24 each of [`TwoNodes::CLUSTER_RANGE`].
/// Dropping it stops the daemons, then deletes the namespaces.
pub struct TwoNodes {
    // Fields drop in this order: the daemons before their namespaces.
    pub d1: Daemon,
    pub d2: Daemon,
    pub n1: Netns,
    pub n2: Netns,
}

impl TwoNodes {
    /// `--link-ip` of node 1 and node 2.
    pub const LINK_IPS: [&'static str; 2] = ["192.168.50.1/24", "192.168.50.2/24"];
    /// The pods' subnets of node 1 and node 2.
    pub const POD_SUBNETS: [&'static str; 2] = ["10.90.1.0/24", "10.90.2.0/24"];
    /// The cluster range both subnets are in.
    pub const CLUSTER_RANGE: &'static str = "10.90.0.0/16";

    /// The namespaces, the veth and both daemons (no routes yet).
    pub fn start() -> TwoNodes {
        let n1 = Netns::new("n1");
        let n2 = Netns::new("n2");
        veth(&n1, "e0", &n2, "e0");
        let d1 = Daemon::start_in(n1.path(), "af-packet:e0", &["--link-ip", Self::LINK_IPS[0]]);
        let d2 = Daemon::start_in(n2.path(), "af-packet:e0", &["--link-ip", Self::LINK_IPS[1]]);
        TwoNodes { d1, d2, n1, n2 }
    }

    /// `route add` on both: each node's pod subnet via the other's link address.
    pub fn add_routes(&self) {
        let hop = |i: usize| Self::LINK_IPS[i].split('/').next().unwrap();
        self.d1
            .ctl_ok(&["route", "add", Self::POD_SUBNETS[1], "via", hop(1)]);
        self.d2
            .ctl_ok(&["route", "add", Self::POD_SUBNETS[0], "via", hop(0)]);
    }

    /// Both routes carried at least `min_bytes` ([`assert_route_carried`] on each node);
    /// returns their counters (node 1's, node 2's).
    pub fn assert_routed(&self, min_bytes: u64) -> (Value, Value) {
        (
            assert_route_carried(
                &self.d1,
                "1",
                Self::LINK_IPS[0],
                Self::POD_SUBNETS[1],
                min_bytes,
            ),
            assert_route_carried(
                &self.d2,
                "2",
                Self::LINK_IPS[1],
                Self::POD_SUBNETS[0],
                min_bytes,
            ),
        )
    }

    /// Both nodes' NIC, routes and pipe counters and the tails of their logs, for
    /// failure messages (what cannot be had says why instead of panicking).
    pub fn diagnostics(&self) -> String {
        let show = |d: &Daemon, args: &[&str]| match d.try_ctl(args, crate::CTL_TIMEOUT) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => e,
        };
        let mut s = String::new();
        for (n, d) in [(1, &self.d1), (2, &self.d2)] {
            s.push_str(&format!(
                "node {n} NIC: {}\nnode {n} routes: {}\nnode {n} stats: {}\nnode {n} docknetd log:\n{}\n",
                show(d, &["nic", "--json"]),
                show(d, &["route", "ls", "--json"]),
                show(d, &["stats", "--json"]),
                d.log_tail()
            ));
        }
        s
    }
}

/// Counter `name` of a `nic --json` document (panics if missing).
pub fn nic_counter(v: &Value, name: &str) -> u64 {
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no NIC counter {name} in {v}"))
}

/// `after - before` for every NIC counter, for messages.
pub fn nic_delta(before: &Value, after: &Value) -> Vec<(&'static str, u64)> {
    NIC_COUNTERS
        .iter()
        .map(|&c| {
            (
                c,
                nic_counter(after, c).saturating_sub(nic_counter(before, c)),
            )
        })
        .filter(|&(_, d)| d != 0)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Scenarios (the issue's "done when"), shared by the backends' test files

/// curl (kernel) fetches the libOS HTTP service's reply; the body is exact.
pub fn scenario_curl(backend: Backend) {
    curl_on(Site::start(backend));
}

/// [`scenario_curl`] on a given topology.
pub fn curl_on(site: Site) {
    let backend = site.backend;
    let nic = site.nic();
    assert!(
        nic["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty() && n != "none"),
        "nic --json should name the NIC: {nic}"
    );
    for c in NIC_COUNTERS {
        nic_counter(&nic, c);
    }
    let _http = site.http_service();
    let before = site.nic();
    let body = site.curl();
    assert_eq!(body, HTTP_BODY, "HTTP body over {backend:?}");
    // A second request on a fresh connection (neighbours now cached on both sides).
    assert_eq!(
        site.curl(),
        HTTP_BODY,
        "second HTTP request over {backend:?}"
    );
    let after = site.nic();
    eprintln!(
        "[nic {backend:?}] curl x2: {:?}",
        nic_delta(&before, &after)
    );
    assert!(
        nic_counter(&after, "delivered") > nic_counter(&before, "delivered")
            && nic_counter(&after, "tx_frames") > nic_counter(&before, "tx_frames"),
        "NIC counters did not move: {after}"
    );
    assert!(
        nic_counter(&after, "arp_answered") >= 1,
        "the master should have answered the kernel's ARP for {PIPE_IP}: {after}"
    );
}

/// ping (kernel) gets ICMP echo replies from the pipe's address: at least 3 of 5.
pub fn scenario_ping(backend: Backend) {
    let site = Site::start(backend);
    // Replies come from the libOS (smoltcp), so a service must run on the pipe.
    let _echo = site.echo_service();
    let out = site.kernel_run(
        "ping",
        &["-n", "-c", "5", "-i", "0.2", "-W", "2", PIPE_IP],
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let received = text
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("transmitted, ")?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        })
        .unwrap_or(0);
    eprintln!("[ping {backend:?}] {received}/5 replies");
    assert!(
        received >= 3,
        "ping {PIPE_IP} over {backend:?}: {received} of 5 replies (need >= 3):\n{text}{}\nNIC: {}\ndocknetd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        site.nic(),
        site.daemon.log_tail()
    );
}

/// A 64 MiB TCP stream from a kernel client to `dn-echo server` comes back byte-exact.
pub fn scenario_stream_64mib(backend: Backend) {
    stream_64mib_on(Site::start(backend));
}

/// [`scenario_stream_64mib`] on a given topology.
pub fn stream_64mib_on(site: Site) {
    const MIB64: usize = 64 * 1024 * 1024;
    let backend = site.backend;
    let _echo = site.echo_service();
    site.kernel_echo(1460, 10, Duration::from_secs(30));
    let before = site.nic();
    site.kernel_echo(MIB64, 1, Duration::from_secs(120));
    let after = site.nic();
    let d = |c| nic_counter(&after, c) - nic_counter(&before, c);
    eprintln!("[nic {backend:?}] 64 MiB: {:?}", nic_delta(&before, &after));
    assert!(
        d("rx_bytes") >= MIB64 as u64 && d("tx_bytes") >= MIB64 as u64,
        "expected >= 64 MiB each way on the NIC: {:?}",
        nic_delta(&before, &after)
    );
    assert_eq!(
        d("bad_csum"),
        0,
        "checksum failures on a clean link: {after}"
    );
}

/// `docknetctl capture` records a TCP handshake with the service: tcpdump reads SYN,
/// SYN-ACK, ACK.
pub fn scenario_capture_handshake(backend: Backend) {
    let site = Site::start(backend);
    let _http = site.http_service();
    // Warm up so both sides know each other's MAC: the capture then holds just TCP.
    assert_eq!(site.curl(), HTTP_BODY);
    let file = unique_tmp().with_extension("pcap");
    struct RmFile<'a>(&'a Path);
    impl Drop for RmFile<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _rm = RmFile(&file);
    let mut child = Command::new(bin("docknetctl"))
        .arg("--run-dir")
        .arg(&site.daemon.run_dir)
        .args(["capture", PIPE, "-w"])
        .arg(&file)
        .args(["--count", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docknetctl capture");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut cap = ChildGuard {
        child,
        name: "docknetctl capture".into(),
        log: None,
    };
    if let Err(e) = wait_for_line(stderr, "capturing", Duration::from_secs(10)) {
        panic!(
            "capture did not start: {e} (alive: {})\ndocknetd log:\n{}",
            cap.alive(),
            site.daemon.log_tail()
        );
    }
    assert_eq!(site.curl(), HTTP_BODY);
    let status = cap
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
            "docknetctl capture --count 3 still running after the connection\ndocknetd log:\n{}",
            site.daemon.log_tail()
        )
        });
    assert!(status.success(), "docknetctl capture exited {status}");
    let out = run_ok(
        Command::new("tcpdump").arg("-nn").arg("-r").arg(&file),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("[capture {backend:?}]\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "expected 3 frames in the capture:\n{text}");
    let port80 = format!("{PIPE_IP}.80");
    for (line, flags, dir) in [
        (lines[0], "Flags [S],", "> "),
        (lines[1], "Flags [S.],", ""),
        (lines[2], "Flags [.],", "> "),
    ] {
        assert!(
            line.contains(" IP ") && line.contains(flags) && line.contains(&port80),
            "expected a TCP segment with {flags} to/from {port80}, got:\n{line}\nwhole capture:\n{text}"
        );
        if !dir.is_empty() {
            assert!(
                line.contains(&format!("> {port80}:")),
                "expected {flags} towards the service, got:\n{line}"
            );
        }
    }
    assert!(
        lines[1].contains(&format!("{port80} > ")),
        "SYN-ACK should come from the service: {}",
        lines[1]
    );
}

/// Two hosts (namespaces joined by a veth, a docknetd on each end): services echo each
/// other across the link, byte-exact.
pub fn scenario_two_hosts(backend: Backend) {
    assert!(
        backend != Backend::Tap,
        "two hosts are joined by a veth: af-packet or dpdk"
    );
    const MIB16: usize = 16 * 1024 * 1024;
    let h1 = Netns::new("h1");
    let h2 = Netns::new("h2");
    veth(&h1, "e0", &h2, "e0");
    let (nic1, _dpdk1) = backend.nic_arg("e0", 0);
    let (nic2, _dpdk2) = backend.nic_arg("e0", 1);
    let d1 = Daemon::start_in(h1.path(), &nic1, &[]);
    let d2 = Daemon::start_in(h2.path(), &nic2, &[]);
    d1.create_pipe("a", "10.88.1.2/16", &[]);
    d2.create_pipe("b", "10.88.2.2/16", &[]);
    let _server = d2.echo_server("b", ECHO_PORT);
    let (b1, b2) = (d1.nic_json(), d2.nic_json());
    for (size, count) in [(1, 10), (1460, 10), (65536, 10), (MIB16, 1)] {
        let (size_s, count_s) = (size.to_string(), count.to_string());
        let args = [
            "--to",
            "10.88.2.2:7",
            "--size",
            &size_s,
            "--count",
            &count_s,
        ];
        let start = Instant::now();
        let out = d1.echo_client("a", &args, Duration::from_secs(180));
        assert!(
            out.status.success(),
            "two hosts over {backend:?}: dn-echo client {args:?} on host 1 failed ({}) after {:.1?}:\nstdout: {}\nstderr: {}\nhost 1 NIC: {}\nhost 2 NIC: {}\nhost 1 pipes: {}\nhost 2 pipes: {}",
            out.status,
            start.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            d1.nic_json(),
            d2.nic_json(),
            d1.stats(None),
            d2.stats(None),
        );
        eprintln!(
            "[two hosts {backend:?}] {size} B x {count}: ok in {:.2?}",
            start.elapsed()
        );
    }
    let (a1, a2) = (d1.nic_json(), d2.nic_json());
    eprintln!("[nic {backend:?}] host 1: {:?}", nic_delta(&b1, &a1));
    eprintln!("[nic {backend:?}] host 2: {:?}", nic_delta(&b2, &a2));
    let d = |a: &Value, b: &Value, c| nic_counter(a, c) - nic_counter(b, c);
    for (host, a, b) in [("1", &a1, &b1), ("2", &a2, &b2)] {
        assert!(
            d(a, b, "tx_bytes") >= MIB16 as u64 && d(a, b, "rx_bytes") >= MIB16 as u64,
            "host {host}: expected >= 16 MiB each way on the link: {a}"
        );
        assert!(
            d(a, b, "delivered") > 0,
            "host {host}: nothing delivered: {a}"
        );
        assert_eq!(d(a, b, "bad_csum"), 0, "host {host}: bad checksums: {a}");
    }
    // On-link: host 1's master resolved 10.88.2.2 by ARP; host 2's master answered.
    assert!(
        nic_counter(&a1, "arp_requests") >= 1,
        "host 1's master sent no ARP request: {a1}"
    );
    assert!(
        nic_counter(&a2, "arp_answered") >= 1,
        "host 2's master answered no ARP request: {a2}"
    );
    drop((d1, d2));
}

/// Malformed and unwanted frames from a raw socket on the kernel's veth end are dropped
/// and counted under the right NIC counters; docknetd lives on and the service still
/// answers.
pub fn scenario_bad_input(backend: Backend) {
    use frames::*;
    assert!(
        backend != Backend::Tap,
        "the raw socket sits on the veth end k0: af-packet or dpdk"
    );
    let mut site = Site::start(backend);
    let _echo = site.echo_service();
    site.kernel_echo(1460, 5, Duration::from_secs(30));
    // The warm-up connection's teardown (a delayed ACK of its FIN, the master's ARP probe
    // of the kernel) must not land in the first case's counters: wait for a quiet link.
    let quiet_since = Instant::now();
    let mut last = site.nic();
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_millis(300)
        && quiet_since.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
        let now = site.nic();
        if nic_delta(&last, &now).iter().any(|(_, d)| *d != 0) {
            still = Instant::now();
        }
        last = now;
    }
    let raw = RawSocket::open(site.client_ns(), "k0").expect("raw socket on k0");

    let me = [10, 88, 0, 100];
    let pipe = [10, 88, 0, 2];
    let good_syn = tcp_syn(BROADCAST, me, pipe, 40000, ECHO_PORT);
    let with_total = |total: u16| {
        let mut f = good_syn.clone();
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
        fix_ip_checksum(&mut f);
        f
    };
    // (what, frame, counter it must land in)
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut truncated = eth(BROADCAST, TEST_MAC, ETHERTYPE_IPV4);
    truncated.extend_from_slice(&[0x45, 0, 0x03, 0xe8, 0, 0]); // 20 B, claims 1000
    cases.push(("truncated IPv4 (20-byte frame)", truncated, "bad_frame"));
    let mut arp = eth(BROADCAST, TEST_MAC, ETHERTYPE_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    cases.push(("truncated ARP (20-byte frame)", arp, "bad_frame"));
    cases.push((
        "IPv4 total length beyond the frame",
        with_total(40 + 100),
        "bad_frame",
    ));
    cases.push(("IPv4 total length < 20", with_total(12), "bad_frame"));
    let mut ihl = good_syn.clone();
    ihl[ETH_LEN] = 0x44;
    fix_ip_checksum(&mut ihl);
    cases.push(("IPv4 header length < 20", ihl, "bad_frame"));
    let mut bad_ip = good_syn.clone();
    bad_ip[ETH_LEN + 10] ^= 0x5a;
    cases.push(("bad IPv4 header checksum", bad_ip, "bad_csum"));
    let mut bad_tcp = good_syn.clone();
    bad_tcp[ETH_LEN + 20 + 16] ^= 0x5a;
    cases.push(("bad TCP checksum", bad_tcp, "bad_csum"));
    let mut bad_udp = udp(BROADCAST, me, pipe, 40001, 9, b"0123456789");
    bad_udp[ETH_LEN + 20 + 6] ^= 0x5a;
    cases.push(("bad UDP checksum", bad_udp, "bad_csum"));
    cases.push((
        "TCP SYN to an address with no pipe",
        tcp_syn(BROADCAST, me, [10, 88, 0, 77], 40002, ECHO_PORT),
        "unknown_dst",
    ));
    cases.push((
        "UDP to an address off every pipe subnet",
        udp(BROADCAST, me, [192, 0, 2, 1], 40003, 9, b"x"),
        "unknown_dst",
    ));
    let mut exp = eth(BROADCAST, TEST_MAC, ETHERTYPE_EXPERIMENTAL);
    exp.resize(60, 0xab);
    cases.push(("unknown EtherType 0x88b5", exp, "unsupported"));
    let mut v6 = eth(BROADCAST, TEST_MAC, 0x86dd);
    v6.resize(80, 0);
    cases.push(("IPv6 EtherType", v6, "unsupported"));
    let mut frag = udp(BROADCAST, me, pipe, 40004, 9, b"fragment");
    frag[ETH_LEN + 6] = 0x20; // MF, offset 0
    fix_ip_checksum(&mut frag);
    cases.push(("IPv4 fragment", frag, "unsupported"));
    // DPDK's af_packet PMD joins a PACKET_FANOUT group with PACKET_FANOUT_FLAG_DEFRAG: the
    // kernel holds IP fragments for reassembly and a lone fragment never reaches the PMD.
    let frag_may_vanish = backend == Backend::Dpdk;
    let mut other = good_syn.clone();
    other[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x42]);
    cases.push(("unicast to another MAC", other, "not_for_us"));
    cases.push((
        "TCP SYN claiming the pipe's own address as source",
        tcp_syn(BROADCAST, pipe, pipe, 40005, ECHO_PORT),
        "spoofed",
    ));

    // Case by case, so a failure names the frame: each must reach the NIC (rx_frames),
    // land in its counter, and deliver nothing.
    const REPEAT: u64 = 3;
    let mut failures = Vec::new();
    for (what, frame, counter) in &cases {
        let before = site.nic();
        for _ in 0..REPEAT {
            raw.send(frame)
                .unwrap_or_else(|e| panic!("sending {what} ({} B): {e}", frame.len()));
        }
        // Counters are published by the data path in batches: wait until they show up.
        let start = Instant::now();
        let after = loop {
            let now = site.nic();
            let seen = nic_counter(&now, counter) - nic_counter(&before, counter);
            if seen >= REPEAT || start.elapsed() > Duration::from_secs(2) {
                break now;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let d = |c| nic_counter(&after, c) - nic_counter(&before, c);
        let delta = nic_delta(&before, &after);
        eprintln!(
            "[bad input {backend:?}] {what} ({} B) x {REPEAT} -> {delta:?}",
            frame.len()
        );
        // Multicast noise from the kernel would land in `unsupported` too.
        let counted = if *counter == "unsupported" {
            d(counter) >= REPEAT
        } else {
            d(counter) == REPEAT
        };
        if *what == "IPv4 fragment" && frag_may_vanish && delta.is_empty() {
            eprintln!("[bad input {backend:?}] (fragments held by the kernel's defrag: not seen)");
            continue;
        }
        if !counted || d("rx_frames") < REPEAT || d("delivered") != 0 {
            failures.push(format!(
                "{what} ({} B) x {REPEAT}: expected {counter} +{REPEAT}, got {delta:?}",
                frame.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "bad frames over {backend:?} not dropped/counted as expected:\n  {}",
        failures.join("\n  ")
    );
    assert!(
        site.daemon.alive(),
        "docknetd died on bad input:\n{}",
        site.daemon.log_tail()
    );
    // The service still answers, through the same link.
    site.kernel_echo(1460, 10, Duration::from_secs(30));
    site.kernel_echo(1 << 20, 2, Duration::from_secs(60));
    assert!(site.daemon.alive(), "docknetd died");
}

// ---------------------------------------------------------------------------------------
// Raw Ethernet frames

/// An `AF_PACKET`/`SOCK_RAW` socket bound to an interface of a namespace, for sending
/// hand-made frames and, if opened to receive, seeing every frame on the interface.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
    mac: [u8; 6],
}

impl RawSocket {
    /// Open on interface `iface` of namespace `ns`, for sending only (protocol 0: it
    /// receives nothing). The socket is made by a short-lived thread that first enters
    /// `ns`; a socket stays in the namespace it was created in, so it is usable from any
    /// thread after.
    pub fn open(ns: &Netns, iface: &str) -> io::Result<RawSocket> {
        ns.run(|| Self::make(iface, false))
    }

    /// Open on interface `iface` of the calling thread's namespace (e.g. inside
    /// [`Netns::run`]), sending and receiving every frame on it (`ETH_P_ALL`, the ones
    /// this host sends included), with a large receive buffer.
    pub fn bind(iface: &str) -> io::Result<RawSocket> {
        Self::make(iface, true)
    }

    fn make(iface: &str, receive: bool) -> io::Result<RawSocket> {
        let name = CString::new(iface).map_err(io::Error::other)?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::other(format!(
                "no interface {iface}: {}",
                io::Error::last_os_error()
            )));
        }
        let proto = if receive {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0
        };
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if receive {
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: a valid sockaddr_ll of the size given; the kernel only reads it.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            // Best effort (SO_RCVBUFFORCE needs CAP_NET_ADMIN): bursts of frames wait
            // here rather than being dropped before the test reads them.
            let big: libc::c_int = 8 << 20;
            // SAFETY: setsockopt with an int of the size given.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&big as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into `ifr`,
        // a valid ifreq (the name NUL-terminated: at most IFNAMSIZ - 1 bytes, as the
        // interface exists).
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut mac = [0u8; 6];
        // SAFETY: SIOCGIFHWADDR filled in `ifru_hwaddr`.
        let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
        for (m, h) in mac.iter_mut().zip(hw) {
            *m = h as u8;
        }
        Ok(RawSocket {
            fd,
            ifindex: ifindex as i32,
            mac,
        })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Send one frame as is (destination MAC, source MAC, EtherType, payload).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        if frame.len() >= 6 {
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        }
        // SAFETY: `frame` is valid for `frame.len()` bytes and `addr` is a valid
        // sockaddr_ll whose size we pass; the kernel only reads both.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!(
                "short send: {n} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }

    /// The next frame received (sockets from [`RawSocket::bind`]), without waiting: its
    /// length on the wire (bytes past `buf.len()` are cut off) and whether this host sent
    /// it (`PACKET_OUTGOING`); `None` if no frame waits.
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<(usize, bool)> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: recvfrom(2) into a live buffer and a sockaddr_ll of the sizes given.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        (n >= 0).then_some((n as usize, sll.sll_pkttype == libc::PACKET_OUTGOING))
    }

    /// Spin until a frame for which `want(frame, outgoing)` holds is received (others are
    /// skipped), or until `deadline` has passed with no frame waiting: its length on the
    /// wire (see [`RawSocket::try_recv`]).
    pub fn recv_until(
        &self,
        buf: &mut [u8],
        deadline: Instant,
        mut want: impl FnMut(&[u8], bool) -> bool,
    ) -> Option<usize> {
        loop {
            match self.try_recv(buf) {
                Some((n, outgoing)) => {
                    if want(&buf[..n.min(buf.len())], outgoing) {
                        return Some(n);
                    }
                }
                None if Instant::now() > deadline => return None,
                None => std::hint::spin_loop(),
            }
        }
    }
}

/// Hand-built Ethernet/ARP/IPv4 frames with correct (or deliberately wrong, or no)
/// checksums, and numbered test frames.
pub mod frames {
    pub const BROADCAST: [u8; 6] = [0xff; 6];
    pub const ETHERTYPE_IPV4: u16 = 0x0800;
    pub const ETHERTYPE_ARP: u16 = 0x0806;
    /// IEEE 802 local experimental EtherType 1: frames nothing else on a link sends.
    pub const ETHERTYPE_EXPERIMENTAL: u16 = 0x88b5;
    pub const ETH_LEN: usize = 14;
    /// The source MAC of [`ipv4`] frames.
    pub const TEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    pub const TCP_FIN: u8 = 0x01;
    pub const TCP_SYN: u8 = 0x02;
    pub const TCP_RST: u8 = 0x04;
    pub const TCP_PSH: u8 = 0x08;
    pub const TCP_ACK: u8 = 0x10;

    /// RFC 1071 Internet checksum of `data` (with `acc` already summed in), ready to
    /// store big-endian.
    pub fn checksum(data: &[u8], mut acc: u32) -> u16 {
        for c in data.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// Ethernet header.
    pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(64);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// A broadcast ARP request (42 bytes) from `src_mac`/`src` asking for `target`.
    pub fn arp_request(src_mac: [u8; 6], src: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = eth(BROADCAST, src_mac, ETHERTYPE_ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    /// An Ethernet frame carrying IPv4 protocol `proto` with L4 bytes `l4` as given (no
    /// IP options, DF, TTL 64) and every checksum field left as is: the IP header's zero
    /// (for code under test to fill, or [`fix_ip_checksum`]).
    pub fn ipv4_unsummed(
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        l4: &[u8],
    ) -> Vec<u8> {
        let mut f = eth(dst_mac, src_mac, ETHERTYPE_IPV4);
        let total = 20 + l4.len();
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }

    /// An Ethernet frame from [`TEST_MAC`] carrying IPv4 protocol `proto` with L4 bytes
    /// `l4` (whose checksum field, if TCP/UDP, is filled in), all checksums correct.
    pub fn ipv4(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = ipv4_unsummed(dst_mac, TEST_MAC, src, dst, proto, l4);
        fix_ip_checksum(&mut f);
        let off = match proto {
            6 => Some(16),
            17 => Some(6),
            _ => None,
        };
        if let Some(off) = off {
            let l4 = &mut f[ETH_LEN + 20..];
            l4[off..off + 2].copy_from_slice(&[0, 0]);
            let mut c = checksum(l4, pseudo_sum(src, dst, proto, l4.len()));
            if proto == 17 && c == 0 {
                c = 0xffff;
            }
            l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
        }
        f
    }

    /// The sum of the TCP/UDP pseudo-header.
    fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> u32 {
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
        pseudo
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum()
    }

    /// A TCP segment (header with options `opts`, a multiple of 4 bytes, then `payload`):
    /// window 65535, checksum field zero ([`ipv4`] fills it in).
    pub fn tcp_segment(
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        opts: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let th = 20 + opts.len();
        let mut t = vec![0u8; th];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((th / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&65535u16.to_be_bytes());
        t[20..].copy_from_slice(opts);
        t.extend_from_slice(payload);
        t
    }

    /// A TCP SYN from `src:sport` to `dst:dport`, checksums correct.
    pub fn tcp_syn(
        dst_mac: [u8; 6],
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let tcp = tcp_segment(sport, dport, 0x0102_0304, 0, TCP_SYN, &[], &[]);
        ipv4(dst_mac, src, dst, 6, &tcp)
    }

    /// A UDP datagram with `payload`, checksums correct.
    pub fn udp(
        dst_mac: [u8; 6],
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[2..4].copy_from_slice(&dport.to_be_bytes());
        udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(payload);
        ipv4(dst_mac, src, dst, 17, &udp)
    }

    /// Recompute the IPv4 header checksum of a frame built by [`ipv4`] or
    /// [`ipv4_unsummed`] (after editing header fields), so only the intended defect
    /// remains.
    pub fn fix_ip_checksum(f: &mut [u8]) {
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
        let c = checksum(&f[ETH_LEN..ETH_LEN + 20], 0);
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_be_bytes());
    }

    /// True if every checksum of an IPv4 frame built here verifies (self-check).
    pub fn checksums_ok(f: &[u8]) -> bool {
        let ip = &f[ETH_LEN..];
        if checksum(&ip[..20], 0) != 0 {
            return false;
        }
        let src = ip[12..16].try_into().expect("4 bytes");
        let dst = ip[16..20].try_into().expect("4 bytes");
        let l4 = &ip[20..];
        checksum(l4, pseudo_sum(src, dst, ip[9], l4.len())) == 0
    }

    /// A received TCP/IPv4 frame: (src port, dst port, seq, ack, flags, payload).
    pub type TcpView<'a> = (u16, u16, u32, u32, u8, &'a [u8]);

    /// The TCP segment in an Ethernet/IPv4 frame (IP options allowed), if it is one.
    pub fn parse_tcp(f: &[u8]) -> Option<TcpView<'_>> {
        if f.len() < 54 || f[12..14] != ETHERTYPE_IPV4.to_be_bytes() || f[23] != 6 {
            return None;
        }
        let ihl = (f[14] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        let t = f.get(ETH_LEN + ihl..ETH_LEN + total)?;
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

    /// A numbered test frame of `len` (>= 18) bytes: Ethernet header with
    /// [`ETHERTYPE_EXPERIMENTAL`], `seq` (big-endian), then a pattern that depends on
    /// both the offset and `seq` (so a frame from another round or place differs).
    pub fn numbered(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
        let mut f = eth(dst, src, ETHERTYPE_EXPERIMENTAL);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend(
            (0..len.saturating_sub(18))
                .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8),
        );
        f.truncate(len);
        f
    }

    /// The sequence number of a [`numbered`] frame; `None` for any other frame.
    pub fn numbered_seq(f: &[u8]) -> Option<u32> {
        (f.len() >= 18 && f[12..14] == ETHERTYPE_EXPERIMENTAL.to_be_bytes())
            .then(|| u32::from_be_bytes([f[14], f[15], f[16], f[17]]))
    }
}

#[cfg(test)]
mod tests {
    use super::frames::*;

    #[test]
    fn internet_checksum_matches_a_known_header() {
        // The classic example header 4500 0073 0000 4000 4011 xxxx c0a8 0001 c0a8 00c7.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr, 0), 0xb861);
    }

    #[test]
    fn built_frames_verify() {
        let syn = tcp_syn(BROADCAST, [10, 88, 0, 100], [10, 88, 0, 2], 40000, 7);
        assert_eq!(syn.len(), 54);
        assert!(checksums_ok(&syn));
        let (sp, dp, seq, ack, flags, payload) = parse_tcp(&syn).expect("a TCP frame");
        assert_eq!(
            (sp, dp, seq, ack, flags),
            (40000, 7, 0x0102_0304, 0, TCP_SYN)
        );
        assert!(payload.is_empty());
        let u = udp(BROADCAST, [10, 88, 0, 100], [10, 88, 0, 2], 1, 2, b"hello");
        assert!(checksums_ok(&u));
        assert!(parse_tcp(&u).is_none());
        let mut bad = syn.clone();
        bad[ETH_LEN + 20 + 16] ^= 0x55;
        assert!(!checksums_ok(&bad));
        let mut edited = syn;
        edited[ETH_LEN + 8] = 7; // TTL
        assert!(!checksums_ok(&edited));
        fix_ip_checksum(&mut edited);
        assert!(checksums_ok(&edited));
        let seg = tcp_segment(1, 2, 3, 4, TCP_ACK | TCP_PSH, &[2, 4, 5, 0xb4], b"data");
        let data = ipv4_unsummed(BROADCAST, TEST_MAC, [1, 2, 3, 4], [5, 6, 7, 8], 6, &seg);
        assert_eq!(data.len(), 14 + 20 + 24 + 4);
        assert_eq!(data[ETH_LEN + 10..ETH_LEN + 12], [0, 0], "left unsummed");
        assert_eq!(parse_tcp(&data).unwrap().5, b"data");
    }

    #[test]
    fn arp_and_numbered_frames_are_laid_out() {
        let arp = arp_request([2, 0, 1, 2, 3, 4], [10, 0, 0, 1], [10, 0, 0, 2]);
        assert_eq!(arp.len(), 42);
        assert_eq!(arp[..6], BROADCAST);
        assert_eq!(arp[20..22], [0, 1], "request");
        assert_eq!(arp[22..28], [2, 0, 1, 2, 3, 4]);
        assert_eq!(arp[38..42], [10, 0, 0, 2]);
        for len in [18, 60, 1514] {
            let f = numbered(BROADCAST, TEST_MAC, 7, len);
            assert_eq!(f.len(), len);
            assert_eq!(numbered_seq(&f), Some(7));
            assert_ne!(f, numbered(BROADCAST, TEST_MAC, 8, len));
        }
        assert_eq!(numbered_seq(&arp), None);
    }
}

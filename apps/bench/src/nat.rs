//! The `nat` benchmark (issue 9): what `dn-nat` costs, beside what the kernel's nftables
//! DNAT costs, in one run.
//!
//! - latency added: 1 KB TCP ping-pong through the NAT minus the same ping-pong straight
//!   to a server, for DockNet through the master and over fast channels (dn-echo client
//!   and server, the server a cluster member behind dn-nat) and for the kernel (our
//!   kernel echo client and server in namespaces, a router namespace between them that
//!   forwards, and an nftables `dnat to numgen inc mod N map {...}` rule on it);
//! - requests/s: dn-loadgen → dn-nat → 2 dn-httpd members against wrk → nftables DNAT
//!   (numgen over 2 servers) → 2 nginx, one worker each.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{spread, ClusterFile, ClusterGuard};
use crate::cpu::{self, Breakdown, Watched};
use crate::docknet::{self, Daemon};
use crate::httpd::{self, HttpPoint};
use crate::netns::{self, NetnsGuard};
use crate::pingpong::{self, NamedList, NamedPath};
use crate::proc::{run_checked, ChildGuard};
use crate::report::{markdown_table, HostInfo, Skipped};
use crate::stats::PointResult;
use crate::svg;

/// One part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatPart {
    DocknetLatency,
    KernelLatency,
    DocknetRps,
    KernelRps,
}

impl NatPart {
    pub const ALL: [NatPart; 4] = [
        NatPart::DocknetLatency,
        NatPart::KernelLatency,
        NatPart::DocknetRps,
        NatPart::KernelRps,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NatPart::DocknetLatency => "docknet-latency",
            NatPart::KernelLatency => "kernel-latency",
            NatPart::DocknetRps => "docknet-rps",
            NatPart::KernelRps => "kernel-rps",
        }
    }
}

impl NamedPath for NatPart {
    const ALL: &'static [Self] = &NatPart::ALL;
    fn path_name(self) -> &'static str {
        self.name()
    }
}

/// `--parts` of `nat`.
pub type NatPartList = NamedList<NatPart>;

/// Options of `docknet-bench nat`.
#[derive(Debug, Clone)]
pub struct NatArgs {
    pub parts: Vec<NatPart>,
    pub size: usize,
    pub count: usize,
    pub warmup: usize,
    pub rounds: usize,
    pub conns: usize,
    pub seconds: u64,
    pub warmup_s: u64,
    pub out: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub httpd_bin: Option<PathBuf>,
    pub src: PathBuf,
    pub keep_run_dir: bool,
    pub command_line: String,
}

/// One round: the ping-pong straight to the server, then through the NAT.
#[derive(Debug, Clone, Serialize)]
pub struct LatRound {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<PointResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<PointResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One latency row: a way of reaching the NAT, with its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct LatRow {
    pub path: String,
    pub direct_path: String,
    pub nat_path: String,
    pub rounds: Vec<LatRound>,
    /// Where the CPU went during the last round's points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_direct: Option<Breakdown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_nat: Option<Breakdown>,
}

/// Medians over a row's complete rounds (µs, one-way).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatSummary {
    pub rounds: usize,
    pub direct_p50: f64,
    pub direct_p99: f64,
    pub nat_p50: f64,
    pub nat_p99: f64,
    /// Median over rounds of (NAT p50 − direct p50) of the same round.
    pub added_p50: f64,
    pub added_p99: f64,
    pub added_p50_each: Vec<f64>,
}

impl LatRow {
    pub fn summary(&self) -> Option<LatSummary> {
        let ok: Vec<(&PointResult, &PointResult)> = self
            .rounds
            .iter()
            .filter_map(|r| Some((r.direct.as_ref()?, r.nat.as_ref()?)))
            .collect();
        if ok.is_empty() {
            return None;
        }
        let m = |f: &dyn Fn(&(&PointResult, &PointResult)) -> f64| {
            crate::stats::median(&ok.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let added_p50_each: Vec<f64> = ok
            .iter()
            .map(|(d, n)| n.one_way_us_p50 - d.one_way_us_p50)
            .collect();
        Some(LatSummary {
            rounds: ok.len(),
            direct_p50: m(&|(d, _)| d.one_way_us_p50),
            direct_p99: m(&|(d, _)| d.one_way_us_p99),
            nat_p50: m(&|(_, n)| n.one_way_us_p50),
            nat_p99: m(&|(_, n)| n.one_way_us_p99),
            added_p50: m(&|(d, n)| n.one_way_us_p50 - d.one_way_us_p50),
            added_p99: m(&|(d, n)| n.one_way_us_p99 - d.one_way_us_p99),
            added_p50_each,
        })
    }
}

/// One requests/s point.
#[derive(Debug, Clone, Serialize)]
pub struct RpsRow {
    pub path: String,
    pub description: String,
    /// The run with the median requests/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<HttpPoint>,
    /// Every completed run's requests/s, in order.
    pub rps_each: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the CPU went in the median run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Breakdown>,
    /// Per server in the median run: (name, connections if known, share of the bytes).
    pub spread: Vec<(String, Option<u64>, f64)>,
}

/// What each part ran, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartCommands {
    pub part: String,
    pub lines: Vec<String>,
}

// --- Addresses -------------------------------------------------------------------------

/// DockNet: the echo cluster's VIP, the baseline server, the clients.
const DN_ECHO_VIP: &str = "10.88.0.100";
const DN_ECHO_SUBNET: &str = "10.88.1.0/24";
const DN_SERVER_IP: &str = "10.88.0.20";
const DN_CLIENT_MASTER_IP: &str = "10.88.0.50";
const DN_CLIENT_FC_IP: &str = "10.88.0.51";
/// DockNet: the web cluster and its load generators.
const DN_WEB_VIP: &str = "10.88.0.200";
const DN_WEB_SUBNET: &str = "10.88.2.0/24";
const DN_LOADGEN_FC_IP: &str = "10.88.0.60";
const DN_LOADGEN_MASTER_IP: &str = "10.88.0.61";

/// Kernel: client 10.77.9.2 —veth— router (10.77.9.1, VIP 10.77.9.100) —veth— servers
/// 10.77.10.2 and 10.77.11.2.
const K_CLIENT: &str = "10.77.9.2";
const K_ROUTER_C: &str = "10.77.9.1";
const K_VIP: &str = "10.77.9.100";
const K_SERVERS: [(&str, &str); 2] = [("10.77.10.2", "10.77.10.1"), ("10.77.11.2", "10.77.11.1")];
const K_ECHO_PORT: u16 = 5201;
const NFT_TABLE: &str = "dnbnat";

/// The kernel's network for `pid`: namespace names (client, router, server 1, server 2)
/// and the commands that build it (pure).
pub fn router_plan(pid: u32) -> (Vec<String>, Vec<Vec<String>>) {
    let ns: Vec<String> = ["c", "r", "s1", "s2"]
        .iter()
        .map(|s| format!("dnb{pid}n{s}"))
        .collect();
    let (c, r) = (&ns[0], &ns[1]);
    let ip = |n: &str, args: &[&str]| -> Vec<String> {
        ["ip", "-n", n]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    let mut cmds = vec![ip(r, &["link", "set", "lo", "up"])];
    let mut ends: Vec<(&String, &str, &str, &str, &str)> =
        vec![(c, "vc", K_CLIENT, K_ROUTER_C, "24")];
    for (i, (srv, gw)) in K_SERVERS.iter().enumerate() {
        ends.push((
            &ns[2 + i],
            if i == 0 { "vs1" } else { "vs2" },
            srv,
            gw,
            "24",
        ));
    }
    for (host, port, addr, gw, pfx) in ends {
        cmds.push(ip(
            host,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", r,
            ],
        ));
        cmds.push(ip(
            host,
            &["addr", "add", &format!("{addr}/{pfx}"), "dev", "eth0"],
        ));
        cmds.push(ip(r, &["addr", "add", &format!("{gw}/{pfx}"), "dev", port]));
        cmds.push(ip(host, &["link", "set", "eth0", "up"]));
        cmds.push(ip(host, &["link", "set", "lo", "up"]));
        cmds.push(ip(r, &["link", "set", port, "up"]));
        cmds.push(ip(host, &["route", "add", "default", "via", gw]));
    }
    // The VIP lives on the router's client-side port: the router answers ARP for it.
    cmds.push(ip(r, &["addr", "add", &format!("{K_VIP}/24"), "dev", "vc"]));
    cmds.push(
        [
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    (ns, cmds)
}

/// The nftables ruleset on the router: the echo port to server 1 and port 80 spread over
/// both servers, each by `numgen inc` over a map (DNAT only: the servers route their
/// answers back through the router, which un-NATs them by conntrack).
pub fn nft_ruleset() -> String {
    let (s1, s2) = (K_SERVERS[0].0, K_SERVERS[1].0);
    format!(
        "table ip {NFT_TABLE} {{
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr {K_VIP} tcp dport {K_ECHO_PORT} dnat to numgen inc mod 1 map {{ 0 : {s1} }}
\t\tip daddr {K_VIP} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : {s1}, 1 : {s2} }}
\t}}
}}
"
    )
}

/// The kernel's network, removed on drop.
struct RouterNet {
    /// client, router, server 1, server 2.
    ns: Vec<NetnsGuard>,
    /// The ruleset file.
    rules: PathBuf,
    /// What built it (for the report).
    commands: Vec<String>,
    _dir: crate::cleanup::DirGuard,
}

impl RouterNet {
    fn create(keep: bool) -> Result<RouterNet, String> {
        if let Some(r) = netns::unavailable_reason() {
            return Err(r);
        }
        if httpd::which("nft").is_none() {
            return Err(
                "nft not found (apt-get install nftables): the kernel NAT cannot be set up".into(),
            );
        }
        let (names, cmds) = router_plan(std::process::id());
        let dir = crate::cleanup::DirGuard::create(
            std::env::temp_dir().join(format!("dnbench-{}-nft", std::process::id())),
            keep,
        )
        .map_err(|e| format!("creating the nft dir: {e}"))?;
        let rules = dir.path.join("dnat.nft");
        std::fs::write(&rules, nft_ruleset()).map_err(|e| format!("writing the ruleset: {e}"))?;
        let mut ns = Vec::new();
        for n in &names {
            ns.push(NetnsGuard::create(n)?);
        }
        for c in &cmds {
            let argv: Vec<&str> = c.iter().map(String::as_str).collect();
            run_checked(&argv)?;
        }
        Ok(RouterNet {
            ns,
            rules,
            commands: names
                .iter()
                .map(|n| format!("ip netns add {n}"))
                .chain(cmds.iter().map(|c| c.join(" ")))
                .collect(),
            _dir: dir,
        })
    }

    fn client(&self) -> &str {
        &self.ns[0].name
    }
    fn router(&self) -> &str {
        &self.ns[1].name
    }
    fn server(&self, i: usize) -> &str {
        &self.ns[2 + i].name
    }

    fn nat_on(&self) -> Result<(), String> {
        let f = self.rules.to_string_lossy();
        run_checked(&["ip", "netns", "exec", self.router(), "nft", "-f", &f])
    }

    fn nat_off(&self) -> Result<(), String> {
        run_checked(&[
            "ip",
            "netns",
            "exec",
            self.router(),
            "nft",
            "delete",
            "table",
            "ip",
            NFT_TABLE,
        ])
    }

    fn describe(&self) -> String {
        format!(
            "namespaces {} (client {K_CLIENT}) —veth— {} (router: ip_forward=1, {K_ROUTER_C} and the VIP {K_VIP}) —veth— {} ({}) and {} ({})",
            self.client(),
            self.router(),
            self.server(0),
            K_SERVERS[0].0,
            self.server(1),
            K_SERVERS[1].0
        )
    }

    /// Bytes through the router's port to each server (rx + tx), from `ip -j -s link`.
    fn port_bytes(&self) -> Vec<u64> {
        ["vs1", "vs2"]
            .iter()
            .map(|dev| {
                let out = Command::new("ip")
                    .args(["-n", self.router(), "-j", "-s", "link", "show", "dev", dev])
                    .output()
                    .ok();
                out.and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                    .map_or(0, |v| {
                        let s = &v[0]["stats64"];
                        s["rx"]["bytes"].as_u64().unwrap_or(0)
                            + s["tx"]["bytes"].as_u64().unwrap_or(0)
                    })
            })
            .collect()
    }
}

// --- Shared state ----------------------------------------------------------------------

/// The docknetd both DockNet parts use, and the kernel network both kernel parts use,
/// made on first use.
struct Env {
    bins: Option<Result<docknet::Bins, String>>,
    daemon: Option<Result<Daemon, String>>,
    files: PathBuf,
    net: Option<Result<RouterNet, String>>,
}

impl Env {
    fn bins(&mut self, a: &NatArgs) -> Result<docknet::Bins, String> {
        self.bins
            .get_or_insert_with(|| docknet::find_bins(a.bin_dir.as_deref()))
            .clone()
    }

    fn daemon(&mut self, a: &NatArgs) -> Result<&mut Daemon, String> {
        let bins = self.bins(a)?;
        bins.sibling("dn-nat")?;
        let files = &mut self.files;
        self.daemon
            .get_or_insert_with(|| {
                let run = std::env::temp_dir().join(format!("dnbench-{}-nat", std::process::id()));
                let d = Daemon::start(&bins, run, a.keep_run_dir, Duration::from_secs(15))?;
                *files = d.run.path.join("files");
                std::fs::create_dir_all(&*files)
                    .map_err(|e| format!("creating {}: {e}", files.display()))?;
                Ok(d)
            })
            .as_mut()
            .map_err(|e| e.clone())
    }

    fn net(&mut self, a: &NatArgs) -> Result<&RouterNet, String> {
        self.net
            .get_or_insert_with(|| {
                let n = RouterNet::create(a.keep_run_dir)?;
                eprintln!("  network: {}", n.describe());
                Ok(n)
            })
            .as_ref()
            .map_err(|e| e.clone())
    }
}

// --- Latency ---------------------------------------------------------------------------

fn describe_point(p: &PointResult) -> String {
    format!(
        "p50 {:.2} µs, p99 {:.2} µs",
        p.one_way_us_p50, p.one_way_us_p99
    )
}

/// Runs `rounds` × (direct, NAT) with the clients `client(to)`; `check` runs after each
/// NAT point (is everything still up?).
#[allow(clippy::too_many_arguments)]
fn measure_rounds(
    a: &NatArgs,
    row: &mut LatRow,
    direct_to: &str,
    nat_to: &str,
    client: &dyn Fn(&str) -> Command,
    watched: &dyn Fn() -> Vec<Watched>,
    client_name: &str,
    check: &mut dyn FnMut() -> Result<(), String>,
    mut nat_on: impl FnMut() -> Result<(), String>,
    mut nat_off: impl FnMut() -> Result<(), String>,
) {
    let timeout = Duration::from_secs(120);
    for r in 0..a.rounds {
        let mut round = LatRound {
            direct: None,
            nat: None,
            error: None,
        };
        let point = |to: &str, what: &str| -> Result<(PointResult, Breakdown), String> {
            let s = cpu::Sampler::start(watched(), Some(client_name));
            let p = pingpong::run_point(
                &format!("{} {what} client", row.path),
                client(to),
                a.size,
                timeout,
            );
            let b = s.finish();
            Ok((p?, b))
        };
        let outcome = (|| -> Result<(), String> {
            let (d, bd) = point(direct_to, "direct")?;
            round.direct = Some(d);
            row.cpu_direct = Some(bd);
            nat_on()?;
            let n = point(nat_to, "NAT");
            let off = nat_off();
            let (n, bn) = n?;
            off?;
            round.nat = Some(n);
            row.cpu_nat = Some(bn);
            check()
        })();
        while crate::cleanup::shutting_down() {
            std::thread::park();
        }
        match (&outcome, &round.direct, &round.nat) {
            (Ok(()), Some(d), Some(n)) => eprintln!(
                "  {:<15} round {}/{}: direct {}; via NAT {}; added p50 {:.2} µs",
                row.path,
                r + 1,
                a.rounds,
                describe_point(d),
                describe_point(n),
                n.one_way_us_p50 - d.one_way_us_p50
            ),
            (Err(e), _, _) => eprintln!(
                "  {:<15} round {}/{}: FAILED: {e}",
                row.path,
                r + 1,
                a.rounds
            ),
            _ => {}
        }
        round.error = outcome.err();
        row.rounds.push(round);
    }
}

fn docknet_latency(
    a: &NatArgs,
    env: &mut Env,
    cmds: &mut PartCommands,
) -> Result<Vec<LatRow>, String> {
    let d = env.daemon(a)?;
    let files = d.run.path.join("files");
    for (p, ip) in [
        ("srv", DN_SERVER_IP),
        ("cm", DN_CLIENT_MASTER_IP),
        ("cf", DN_CLIENT_FC_IP),
    ] {
        d.ctl(&["pipe", "create", p, "--ip", &format!("{ip}/16")])?;
    }
    let dn_echo = d.bins.dn_echo.clone();
    let mut cmd = Command::new(&dn_echo);
    cmd.env("DOCKNET_PIPE", d.pipe_dir("srv"))
        .args(["server", "--port", "7"]);
    let mut server = ChildGuard::spawn("dn-echo server (direct)", cmd)?;
    server
        .wait_for_line("listening", Duration::from_secs(15))
        .map_err(|e| format!("{e}; docknetd: {}", d.stderr_tail()))?;
    let f = ClusterFile {
        name: "echo".into(),
        vip: format!("{DN_ECHO_VIP}:7"),
        replicas: 1,
        policy: "maglev".into(),
        binary: dn_echo.clone(),
        args: vec!["server".into(), "--port".into(), "7".into()],
        subnet: DN_ECHO_SUBNET.into(),
        health: r#"{ kind = "tcp", interval_ms = 200 }"#.into(),
    };
    let c = ClusterGuard::up(d, &files, &f)?;
    d.ctl(&["fc", "create", "cf", "echo"])?;
    // The direct channel at the pipes' MTU, as the NAT's channels are (a forwarder's keep
    // it): the two paths then differ by the NAT alone. The pipes have docknetd's default
    // MTU, which is also the default of a channel between two of them.
    d.ctl(&["fc", "create", "cf", "srv"])?;
    cmds.lines = vec![
        format!("docknetd --run-dir {} --nic none", d.run.path.display()),
        format!("docknetctl pipe create srv --ip {DN_SERVER_IP}/16   # the direct server"),
        format!("docknetctl pipe create cm --ip {DN_CLIENT_MASTER_IP}/16    # client through the master"),
        format!("docknetctl pipe create cf --ip {DN_CLIENT_FC_IP}/16    # client over fast channels"),
        format!("DOCKNET_PIPE={} dn-echo server --port 7 &", d.pipe_dir("srv").display()),
        format!("{}   # echo.toml:", c.up_command),
    ];
    cmds.lines
        .extend(f.to_toml().lines().map(|l| format!("#   {l}")));
    cmds.lines.extend([
        "docknetctl fc create cf echo   # client <-> NAT".to_string(),
        "docknetctl fc create cf srv   # client <-> direct server".to_string(),
        format!(
            "DOCKNET_PIPE=RUN/pipes/{{cm,cf}} dn-echo client --to {{{DN_SERVER_IP},{DN_ECHO_VIP}}}:7 --size {} --count {} --warmup {} --json",
            a.size, a.count, a.warmup
        ),
    ]);
    let dpid = d.pid();
    let server_pid = server.pid();
    let watched = || {
        let mut w = vec![Watched::one("docknetd", dpid)];
        w.extend(c.watched().unwrap_or_default());
        w.push(Watched::one("dn-echo server (direct)", server_pid));
        w
    };
    let mut rows = Vec::new();
    for (path, pipe, how) in [
        ("docknet-master", "cm", "through the master"),
        ("docknet-fc", "cf", "over fast channels"),
    ] {
        let mut row = LatRow {
            path: path.into(),
            direct_path: format!("dn-echo client → dn-echo server, {how}"),
            nat_path: if pipe == "cm" {
                "dn-echo client → docknetd → dn-nat ⇒ member (dn-echo server), fast channel NAT–member".into()
            } else {
                "dn-echo client ⇒ dn-nat ⇒ member (dn-echo server), fast channels".into()
            },
            rounds: Vec::new(),
            cpu_direct: None,
            cpu_nat: None,
        };
        let pipe_dir = d.pipe_dir(pipe);
        let client =
            |to: &str| pingpong::dn_echo_client(&dn_echo, &pipe_dir, to, a.size, a.count, a.warmup);
        let mut check = || -> Result<(), String> {
            if let Some(s) = server.exited() {
                return Err(format!(
                    "dn-echo server exited ({s}): {}",
                    server.stderr_tail.digest()
                ));
            }
            c.check()
        };
        measure_rounds(
            a,
            &mut row,
            &format!("{DN_SERVER_IP}:7"),
            &format!("{DN_ECHO_VIP}:7"),
            &client,
            &watched,
            "dn-echo client",
            &mut check,
            || Ok(()),
            || Ok(()),
        );
        rows.push(row);
    }
    let _ = d.ctl(&["fc", "rm", "cf", "echo"]);
    drop(c);
    drop(server);
    for p in ["srv", "cm", "cf"] {
        let _ = d.ctl(&["pipe", "rm", p]);
    }
    if let Some(s) = d.exited() {
        return Err(format!("docknetd exited ({s}): {}", d.stderr_tail()));
    }
    Ok(rows)
}

fn kernel_latency(
    a: &NatArgs,
    env: &mut Env,
    cmds: &mut PartCommands,
) -> Result<Vec<LatRow>, String> {
    let exe = pingpong::self_exe()?;
    let net = env.net(a)?;
    let bind = format!("{}:{K_ECHO_PORT}", K_SERVERS[0].0);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", net.server(0)]).arg(&exe).args([
        "kernel-echo-server",
        "--bind",
        &bind,
    ]);
    let mut server = ChildGuard::spawn("kernel echo server", cmd)?;
    server.wait_for_line("listening", Duration::from_secs(10))?;
    cmds.lines = vec![
        format!("# {}", net.describe()),
        format!(
            "ip netns exec {} docknet-bench kernel-echo-server --bind {bind} &",
            net.server(0)
        ),
        format!(
            "ip netns exec {} docknet-bench kernel-echo-client --to {{{bind},{K_VIP}:{K_ECHO_PORT}}} --size {} --count {} --warmup {} --json",
            net.client(),
            a.size,
            a.count,
            a.warmup
        ),
        format!(
            "ip netns exec {} nft -f dnat.nft   # before each NAT point; `nft delete table ip {NFT_TABLE}` after it",
            net.router()
        ),
    ];
    let mut row = LatRow {
        path: "kernel-nftables".into(),
        direct_path: "kernel echo client → router (forwarding) → kernel echo server".into(),
        nat_path:
            "kernel echo client → router (nftables DNAT: numgen inc mod 1 map) → kernel echo server"
                .into(),
        rounds: Vec::new(),
        cpu_direct: None,
        cpu_nat: None,
    };
    let client_ns = net.client().to_string();
    let client = |to: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &client_ns]).arg(&exe);
        pingpong::kernel_client_args(&mut c, to, a.size, a.count, a.warmup);
        c
    };
    let spid = server.pid();
    let watched = || vec![Watched::one("kernel echo server", spid)];
    let mut check = || match server.exited() {
        Some(s) => Err(format!("kernel echo server exited ({s})")),
        None => Ok(()),
    };
    measure_rounds(
        a,
        &mut row,
        &bind,
        &format!("{K_VIP}:{K_ECHO_PORT}"),
        &client,
        &watched,
        "kernel echo client",
        &mut check,
        || net.nat_on(),
        || net.nat_off(),
    );
    drop(server);
    Ok(vec![row])
}

// --- Requests/s ------------------------------------------------------------------------

fn loadgen_cmd(loadgen: &Path, pipe: &Path, url: &str, conns: usize, secs: u64) -> Command {
    let mut c = Command::new(loadgen);
    c.env("DOCKNET_PIPE", pipe).args([
        "--url",
        url,
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{secs}s"),
        "--json",
    ]);
    c
}

fn wrk_cmd(ns: &str, url: &str, conns: usize, secs: u64) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "wrk", "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .args(["--latency", url]);
    c
}

/// One measured requests/s run.
#[derive(Debug, Clone)]
pub struct RpsRun {
    pub point: HttpPoint,
    pub cpu: Option<Breakdown>,
    pub spread: Vec<(String, Option<u64>, f64)>,
}

/// The index of the run with the median requests/s (the lower one of an even count).
pub fn median_index(rps: &[f64]) -> Option<usize> {
    let mut idx: Vec<usize> = (0..rps.len()).collect();
    idx.sort_by(|&a, &b| rps[a].total_cmp(&rps[b]));
    idx.get(rps.len().saturating_sub(1) / 2).copied()
}

impl RpsRow {
    fn new(path: &str, description: &str) -> Self {
        RpsRow {
            path: path.into(),
            description: description.into(),
            result: None,
            rps_each: Vec::new(),
            error: None,
            cpu: None,
            spread: Vec::new(),
        }
    }

    /// Keeps the median run (its latency, CPU and spread) and every run's requests/s; the
    /// first error if no run completed.
    fn finish(&mut self, runs: Vec<RpsRun>, errors: Vec<String>) {
        self.rps_each = runs.iter().map(|r| r.point.rps).collect();
        if let Some(i) = median_index(&self.rps_each) {
            let r = runs[i].clone();
            self.result = Some(r.point);
            self.cpu = r.cpu;
            self.spread = r.spread;
        }
        if !errors.is_empty() {
            self.error = Some(format!(
                "{} of {} runs failed: {}",
                errors.len(),
                errors.len() + runs.len(),
                errors[0]
            ));
        }
    }
}

fn report_run(path: &str, round: usize, rounds: usize, r: &Result<RpsRun, String>, t0: Instant) {
    match r {
        Ok(r) => {
            let p = &r.point;
            eprintln!(
                "  {path:<22} round {round}/{rounds}: {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, {} errors [{:.1} s]",
                p.rps,
                p.latency_us_p50,
                p.latency_us_p99,
                p.errors,
                t0.elapsed().as_secs_f64()
            );
            if let Some(c) = &r.cpu {
                eprintln!("    cpu (cores): {}", c.line());
            }
        }
        Err(e) => eprintln!("  {path:<22} round {round}/{rounds}: FAILED: {e}"),
    }
}

fn docknet_rps(
    a: &NatArgs,
    env: &mut Env,
    httpd_bin: &Path,
    cmds: &mut PartCommands,
) -> Result<Vec<RpsRow>, String> {
    let loadgen = env.bins(a)?.sibling("dn-loadgen")?;
    let d = env.daemon(a)?;
    let files = d.run.path.join("files");
    d.ctl(&[
        "pipe",
        "create",
        "lg",
        "--ip",
        &format!("{DN_LOADGEN_FC_IP}/16"),
    ])?;
    d.ctl(&[
        "pipe",
        "create",
        "lgm",
        "--ip",
        &format!("{DN_LOADGEN_MASTER_IP}/16"),
    ])?;
    let f = ClusterFile {
        name: "web".into(),
        vip: format!("{DN_WEB_VIP}:80"),
        replicas: 2,
        policy: "maglev".into(),
        binary: httpd_bin.to_path_buf(),
        args: ["--port", "80", "--backlog", "512"]
            .map(String::from)
            .to_vec(),
        subnet: DN_WEB_SUBNET.into(),
        health: r#"{ kind = "http", path = "/", interval_ms = 200 }"#.into(),
    };
    let c = ClusterGuard::up(d, &files, &f)?;
    d.ctl(&["fc", "create", "lg", "web"])?;
    let url = format!("http://{DN_WEB_VIP}:80/");
    cmds.lines = vec![
        format!("docknetd --run-dir {} --nic none", d.run.path.display()),
        format!("docknetctl pipe create lg --ip {DN_LOADGEN_FC_IP}/16     # over a fast channel"),
        format!(
            "docknetctl pipe create lgm --ip {DN_LOADGEN_MASTER_IP}/16    # through the master"
        ),
        format!("{}   # web.toml:", c.up_command),
    ];
    cmds.lines
        .extend(f.to_toml().lines().map(|l| format!("#   {l}")));
    cmds.lines.extend([
        "docknetctl fc create lg web".to_string(),
        format!(
            "DOCKNET_PIPE=RUN/pipes/{{lg,lgm}} dn-loadgen --url {url} -c {} -d {}s --json   # each run after a {} s warm-up run",
            a.conns, a.seconds, a.warmup_s
        ),
    ]);
    let timeout = Duration::from_secs(a.seconds + a.warmup_s + 60);
    let counts = |s: &docknet_master::cluster::ClusterStatus| -> Vec<(String, u64, u64)> {
        s.members
            .iter()
            .map(|m| (m.name.clone(), m.connections, m.bytes))
            .collect()
    };
    let mut rows = Vec::new();
    for (path, pipe, description) in [
        (
            "docknet-nat-fc",
            "lg",
            "dn-loadgen ⇒ dn-nat ⇒ 2 dn-httpd (fast channels)",
        ),
        (
            "docknet-nat-master",
            "lgm",
            "dn-loadgen → docknetd → dn-nat ⇒ 2 dn-httpd",
        ),
    ] {
        let mut row = RpsRow::new(path, description);
        let pipe_dir = d.pipe_dir(pipe);
        let (mut runs, mut errors) = (Vec::new(), Vec::new());
        for round in 1..=a.rounds {
            let t0 = Instant::now();
            let r = (|| -> Result<RpsRun, String> {
                if a.warmup_s > 0 {
                    httpd::run_client(
                        "dn-loadgen (warm-up)",
                        loadgen_cmd(&loadgen, &pipe_dir, &url, a.conns, a.warmup_s),
                        timeout,
                        httpd::parse_loadgen,
                    )?;
                }
                let mut w = vec![Watched::one("docknetd", d.pid())];
                w.extend(c.watched()?);
                let before = counts(&c.status()?);
                let s = cpu::Sampler::start(w, Some("dn-loadgen"));
                let p = httpd::run_client(
                    "dn-loadgen",
                    loadgen_cmd(&loadgen, &pipe_dir, &url, a.conns, a.seconds),
                    timeout,
                    httpd::parse_loadgen,
                );
                let cpu = s.finish();
                let after = counts(&c.status()?);
                log::debug!(
                    "members (name, connections, bytes) before {before:?}, after {after:?}"
                );
                let point = p?;
                c.check()?;
                Ok(RpsRun {
                    point,
                    cpu: Some(cpu),
                    spread: spread(&before, &after)
                        .into_iter()
                        .map(|(n, c, s)| (n, Some(c), s))
                        .collect(),
                })
            })();
            while crate::cleanup::shutting_down() {
                std::thread::park();
            }
            report_run(path, round, a.rounds, &r, t0);
            match r {
                Ok(r) => runs.push(r),
                Err(e) => errors.push(e),
            }
        }
        row.finish(runs, errors);
        rows.push(row);
    }
    let _ = d.ctl(&["fc", "rm", "lg", "web"]);
    drop(c);
    for p in ["lg", "lgm"] {
        let _ = d.ctl(&["pipe", "rm", p]);
    }
    Ok(rows)
}

fn kernel_rps(a: &NatArgs, env: &mut Env, cmds: &mut PartCommands) -> Result<Vec<RpsRow>, String> {
    let nginx = httpd::which("nginx").ok_or("nginx not found (apt-get install nginx-light)")?;
    httpd::which("wrk").ok_or("wrk not found (apt-get install wrk)")?;
    let net = env.net(a)?;
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    cmds.lines = vec![format!("# {}", net.describe())];
    for (i, (ip, _)) in K_SERVERS.iter().enumerate() {
        let dir = crate::cleanup::DirGuard::create(
            std::env::temp_dir().join(format!("dnbench-{}-nginx{}", std::process::id(), i + 1)),
            a.keep_run_dir,
        )
        .map_err(|e| format!("creating nginx dir: {e}"))?;
        use std::os::unix::fs::PermissionsExt;
        for d in [&dir.path, &dir.path.join("site")] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
        std::fs::write(dir.path.join("site/index.html"), httpd::page_1k())
            .map_err(|e| format!("writing the page: {e}"))?;
        let conf = dir.path.join("nginx.conf");
        std::fs::write(&conf, httpd::nginx_conf(&dir.path, &format!("{ip}:80")))
            .map_err(|e| format!("writing nginx.conf: {e}"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", net.server(i)])
            .arg(&nginx)
            .arg("-p")
            .arg(&dir.path)
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr"]);
        cmds.lines.push(format!(
            "ip netns exec {} {} -p {d} -c {d}/nginx.conf -e stderr &   # 1 worker, on {ip}:80 (the httpd bench's nginx.conf)",
            net.server(i),
            nginx.display(),
            d = dir.path.display()
        ));
        let mut g = ChildGuard::spawn(&format!("nginx {}", i + 1), cmd)?;
        httpd::wait_http(net.client(), &format!("http://{ip}:80/"), &mut g)?;
        servers.push(g);
        dirs.push(dir);
    }
    let url = format!("http://{K_VIP}:80/");
    cmds.lines.extend([
        format!("ip netns exec {} nft -f dnat.nft", net.router()),
        format!(
            "ip netns exec {} wrk -t1 -c{} -d{}s --latency {url}   # each run after a {} s warm-up run",
            net.client(),
            a.conns,
            a.seconds,
            a.warmup_s
        ),
    ]);
    let path = "kernel-nftables-nginx";
    let mut row = RpsRow::new(
        path,
        "wrk → router (nftables DNAT, numgen inc mod 2 map) → 2 nginx, 1 worker each",
    );
    let timeout = Duration::from_secs(a.seconds + a.warmup_s + 60);
    net.nat_on()?;
    let (mut runs, mut errors) = (Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let t0 = Instant::now();
        let r = (|| -> Result<RpsRun, String> {
            if a.warmup_s > 0 {
                httpd::run_client(
                    "wrk (warm-up)",
                    wrk_cmd(net.client(), &url, a.conns, a.warmup_s),
                    timeout,
                    httpd::parse_wrk,
                )?;
            }
            let w: Vec<Watched> = servers
                .iter()
                .enumerate()
                .map(|(i, s)| Watched::tree(&format!("nginx {}", i + 1), s.pid()))
                .collect();
            let before = net.port_bytes();
            let s = cpu::Sampler::start(w, Some("wrk"));
            let p = httpd::run_client(
                "wrk",
                wrk_cmd(net.client(), &url, a.conns, a.seconds),
                timeout,
                httpd::parse_wrk,
            );
            let cpu = s.finish();
            let d: Vec<u64> = net
                .port_bytes()
                .iter()
                .zip(&before)
                .map(|(x, y)| x.saturating_sub(*y))
                .collect();
            let total: u64 = d.iter().sum();
            let point = p?;
            for (i, s) in servers.iter_mut().enumerate() {
                if let Some(st) = s.exited() {
                    return Err(format!(
                        "nginx {} exited ({st}): {}",
                        i + 1,
                        s.stderr_tail.digest()
                    ));
                }
            }
            Ok(RpsRun {
                point,
                cpu: Some(cpu),
                spread: d
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| {
                        (
                            format!("nginx {}", i + 1),
                            None,
                            if total > 0 {
                                b as f64 / total as f64
                            } else {
                                0.0
                            },
                        )
                    })
                    .collect(),
            })
        })();
        while crate::cleanup::shutting_down() {
            std::thread::park();
        }
        report_run(path, round, a.rounds, &r, t0);
        match r {
            Ok(r) => runs.push(r),
            Err(e) => errors.push(e),
        }
    }
    if let Err(e) = net.nat_off() {
        errors.push(e);
    }
    row.finish(runs, errors);
    drop(servers);
    drop(dirs);
    Ok(vec![row])
}

// --- The run and the report -------------------------------------------------------------

/// Everything measured.
pub struct Results {
    pub latency: Vec<LatRow>,
    pub rps: Vec<RpsRow>,
    pub skipped: Vec<Skipped>,
    pub commands: Vec<PartCommands>,
    /// What built the kernel's network, if it was built.
    pub network: Vec<String>,
    pub httpd_build: String,
}

/// Runs the benchmark and writes OUT/nat.{md,json,svg}.
pub fn run(a: &NatArgs) -> Result<(), String> {
    if a.seconds == 0 || a.rounds == 0 || a.count == 0 {
        return Err("--duration, --rounds and --count must be at least 1".into());
    }
    let names: Vec<&str> = a.parts.iter().map(|p| p.name()).collect();
    eprintln!(
        "nat: parts {}; latency: {} B ping-pong × {} (+{} warm-up), {} round(s) of direct then NAT; requests/s: {} connections, {} s (after {} s warm-up)",
        names.join(","),
        a.size,
        a.count,
        a.warmup,
        a.rounds,
        a.conns,
        a.seconds,
        a.warmup_s
    );
    let host = HostInfo::collect();
    let mut env = Env {
        bins: None,
        daemon: None,
        files: PathBuf::new(),
        net: None,
    };
    let mut res = Results {
        latency: Vec::new(),
        rps: Vec::new(),
        skipped: Vec::new(),
        commands: Vec::new(),
        network: Vec::new(),
        httpd_build: String::new(),
    };
    for (i, &part) in a.parts.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, a.parts.len(), part.name());
        let mut cmds = PartCommands {
            part: part.name().into(),
            lines: Vec::new(),
        };
        let r: Result<(), String> = match part {
            NatPart::DocknetLatency => {
                docknet_latency(a, &mut env, &mut cmds).map(|mut v| res.latency.append(&mut v))
            }
            NatPart::KernelLatency => {
                kernel_latency(a, &mut env, &mut cmds).map(|mut v| res.latency.append(&mut v))
            }
            NatPart::DocknetRps => httpd::httpd_binary(a.httpd_bin.as_deref(), &a.src)
                .and_then(|(bin, how)| {
                    res.httpd_build = how;
                    docknet_rps(a, &mut env, &bin, &mut cmds)
                })
                .map(|mut v| res.rps.append(&mut v)),
            NatPart::KernelRps => {
                kernel_rps(a, &mut env, &mut cmds).map(|mut v| res.rps.append(&mut v))
            }
        };
        match r {
            Ok(()) => res.commands.push(cmds),
            Err(reason) => {
                eprintln!("  skipping {}: {reason}", part.name());
                res.skipped.push(Skipped {
                    path: part.name().into(),
                    reason,
                });
            }
        }
    }
    if let Some(Ok(n)) = &env.net {
        res.network = n.commands.clone();
    }
    drop(env);
    write_outputs(a, &host, &res)
}

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

/// The latency table: direct, via the NAT, and what the NAT adds (one-way, µs).
pub fn latency_table(rows: &[LatRow]) -> String {
    let mut notes = Vec::new();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| match r.summary() {
            Some(s) => vec![
                r.path.clone(),
                f2(s.direct_p50),
                f2(s.direct_p99),
                f2(s.nat_p50),
                f2(s.nat_p99),
                format!("**{}**", f2(s.added_p50)),
                f2(s.added_p99),
                s.added_p50_each
                    .iter()
                    .map(|x| f2(*x))
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
            None => {
                let e = r
                    .rounds
                    .iter()
                    .find_map(|x| x.error.clone())
                    .unwrap_or_else(|| "no complete round".into());
                notes.push(format!("[{}] {}: {e}", notes.len() + 1, r.path));
                let mut v = vec![r.path.clone(), format!("FAILED [{}]", notes.len())];
                v.extend(std::iter::repeat_n(String::new(), 6));
                v
            }
        })
        .collect();
    let mut s = markdown_table(
        &[
            "path",
            "direct p50",
            "direct p99",
            "via NAT p50",
            "via NAT p99",
            "added p50",
            "added p99",
            "added p50 per round",
        ],
        &[false, true, true, true, true, true, true, false],
        &cells,
    );
    for r in rows {
        let failed = r.rounds.iter().filter(|x| x.error.is_some()).count();
        if failed > 0 && r.summary().is_some() {
            notes.push(format!(
                "[{}] {}: {failed} of {} rounds failed: {}",
                notes.len() + 1,
                r.path,
                r.rounds.len(),
                r.rounds
                    .iter()
                    .find_map(|x| x.error.clone())
                    .unwrap_or_default()
            ));
        }
    }
    for n in notes {
        s += &format!("\n{n}\n");
    }
    s
}

/// The requests/s table.
pub fn rps_table(rows: &[RpsRow]) -> String {
    let mut notes = Vec::new();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let spread = r
                .spread
                .iter()
                .map(|(_, c, s)| match c {
                    Some(c) => format!("{c}/{:.0}%", s * 100.0),
                    None => format!("{:.0}%", s * 100.0),
                })
                .collect::<Vec<_>>()
                .join(" ");
            let each = r
                .rps_each
                .iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut note = |e: &str| {
                notes.push(format!("[{}] {}: {e}", notes.len() + 1, r.path));
                format!(" [{}]", notes.len())
            };
            match &r.result {
                Some(p) => {
                    let mark = r.error.as_deref().map(&mut note).unwrap_or_default();
                    vec![
                        r.path.clone(),
                        format!("{:.0}{mark}", p.rps),
                        each,
                        format!("{:.1}", p.latency_us_p50),
                        format!("{:.1}", p.latency_us_p99),
                        p.errors.to_string(),
                        spread,
                    ]
                }
                None => {
                    let mark = note(r.error.as_deref().unwrap_or("failed"));
                    vec![
                        r.path.clone(),
                        format!("FAILED{mark}"),
                        each,
                        String::new(),
                        String::new(),
                        String::new(),
                        spread,
                    ]
                }
            }
        })
        .collect();
    let mut s = markdown_table(
        &[
            "path",
            "requests/s (median)",
            "each run",
            "latency p50 (µs)",
            "latency p99 (µs)",
            "errors",
            "per server: conns/bytes",
        ],
        &[false, true, false, true, true, true, false],
        &cells,
    );
    for n in notes {
        s += &format!("\n{n}\n");
    }
    s
}

fn find_lat<'a>(rows: &'a [LatRow], path: &str) -> Option<(&'a LatRow, LatSummary)> {
    rows.iter()
        .find(|r| r.path == path)
        .and_then(|r| Some((r, r.summary()?)))
}

fn find_rps<'a>(rows: &'a [RpsRow], path: &str) -> Option<&'a RpsRow> {
    rows.iter().find(|r| r.path == path && r.result.is_some())
}

/// The issue's targets, each met or not, with the CPU profile of a missed one.
pub fn targets_section(res: &Results) -> String {
    let mut s = String::new();
    for path in ["docknet-fc", "docknet-master"] {
        match find_lat(&res.latency, path) {
            Some((r, sum)) => {
                let met = sum.added_p50 <= 1.0;
                let _ = writeln!(
                    s,
                    "- (a) one-way p50 added by dn-nat, {path}: {} µs (target ≤ 1 µs; the paper measured 1.05 µs): {}",
                    f2(sum.added_p50),
                    if met { "met" } else { "**not met**" }
                );
                if !met {
                    for (what, c) in [("direct", &r.cpu_direct), ("via NAT", &r.cpu_nat)] {
                        if let Some(c) = c {
                            let _ = writeln!(
                                s,
                                "  - CPU during the last round's {what} point (cores): {}",
                                c.line()
                            );
                        }
                    }
                }
            }
            None => {
                let _ = writeln!(s, "- (a) {path}: not measured");
            }
        }
    }
    match find_lat(&res.latency, "kernel-nftables") {
        Some((_, sum)) => {
            let _ = writeln!(
                s,
                "- (b) one-way p50 added by the kernel's nftables DNAT on a forwarding router: {} µs (reported as measured)",
                f2(sum.added_p50)
            );
        }
        None => {
            let _ = writeln!(s, "- (b) kernel-nftables: not measured");
        }
    }
    match (
        find_rps(&res.rps, "docknet-nat-fc"),
        find_rps(&res.rps, "kernel-nftables-nginx"),
    ) {
        (Some(d), Some(k)) => {
            let (dp, kp) = (
                d.result.as_ref().expect("found"),
                k.result.as_ref().expect("found"),
            );
            let x = if kp.rps > 0.0 {
                dp.rps / kp.rps
            } else {
                f64::NAN
            };
            let met = x >= 3.0;
            let _ = writeln!(
                s,
                "- (c) requests/s, dn-loadgen ⇒ dn-nat ⇒ 2 dn-httpd vs wrk → nftables DNAT → 2 nginx: {:.0} vs {:.0} = **{x:.2}×** (target ≥ 3×): {}",
                dp.rps,
                kp.rps,
                if met { "met" } else { "**not met**" }
            );
            if !met {
                for r in [d, k] {
                    if let Some(c) = &r.cpu {
                        let _ = writeln!(s, "  - CPU, {} (cores): {}", r.path, c.line());
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(
                s,
                "- (c) not measured (docknet-nat-fc and kernel-nftables-nginx both needed)"
            );
        }
    }
    s
}

fn cpu_section(res: &Results) -> String {
    let mut s = String::new();
    for r in &res.latency {
        for (what, c) in [("direct", &r.cpu_direct), ("via NAT", &r.cpu_nat)] {
            if let Some(c) = c {
                let _ = writeln!(s, "- {} {what} (last round): {}", r.path, c.line());
            }
        }
    }
    for r in &res.rps {
        if let Some(c) = &r.cpu {
            let _ = writeln!(s, "- {}: {}", r.path, c.line());
        }
    }
    s
}

const NAT_TEXT: &str = "\
Latency: a 1 KB TCP ping-pong (one connection; the client writes the message, the server \
echoes it, the client reads it all back). One-way latency = RTT / 2, p50 and p99 over the \
measured messages. Each round measures the client straight to a server (direct) and then \
through the NAT to the same kind of server; added = via NAT − direct of the same round, \
and the table gives medians over the rounds.

- `docknet-master`: direct = `dn-echo client` (pipe cm) → docknetd → `dn-echo server` \
(pipe srv); via NAT = the same client → docknetd → `dn-nat` (the cluster `echo`, VIP \
10.88.0.100:7, DNAT) ⇒ fast channel ⇒ one member running `dn-echo server`, and back the \
same way.
- `docknet-fc`: the same over fast channels: client (pipe cf) ⇒ server directly, and \
client ⇒ dn-nat ⇒ member (`docknetctl fc create cf echo`; the NAT–member channel is the \
cluster's own).
- `kernel-nftables`: our kernel echo client and server (std::net, TCP_NODELAY) in \
namespaces client and server 1, a router namespace between them (veth pairs, \
ip_forward=1). Direct = the client connects to the server's address, routed by the \
router, no ruleset loaded; via NAT = the client connects to the VIP 10.77.9.100 on the \
router, where `ip daddr VIP tcp dport 5201 dnat to numgen inc mod 1 map { 0 : SERVER }` \
sends it on (the table is loaded for the NAT point only, so the direct point pays no \
conntrack).

Requests/s: HTTP/1.1 keep-alive `GET /` of the same 1024-byte page, the same connection \
count and duration, one request outstanding per connection, one client thread, each run \
after a warm-up run of the same client; each row is run once per round and the table \
gives the median run and every run's requests/s.

- `docknet-nat-fc`: `dn-loadgen` (pipe lg) ⇒ `dn-nat` (the cluster `web`, VIP \
10.88.0.200:80, Maglev) ⇒ 2 members running `dn-httpd`, every hop a fast channel.
- `docknet-nat-master`: the same with the load generator's frames switched by docknetd.
- `kernel-nftables-nginx`: `wrk -t1` in the client namespace → the router's VIP:80, \
`dnat to numgen inc mod 2 map { 0 : SERVER1, 1 : SERVER2 }` → nginx in server 1 and \
server 2, one worker each (the `httpd` bench's nginx.conf: keep-alive, sendfile, no access \
log). Like for like: two single-threaded servers on addresses of their own behind one NAT, \
one single-threaded client.

requests/s = responses completed in the measured window / its length; latency = from a \
request being queued to its response being complete (wrk's `--latency`, dn-loadgen's \
histogram). per server = connections the NAT gave each server in the measured run (dn-nat's \
counters; unknown for nftables) / its share of the bytes (dn-nat's counters; the router's \
ports to the servers for the kernel). CPU = CPU seconds per second (cores) of each process \
in the window (`/proc/PID/stat`; the client's from getrusage; preempted = involuntary \
context switches) and the split of all CPUs' time (`/proc/stat`; the kernel forwards and \
NATs in softirq).";

fn write_outputs(a: &NatArgs, host: &HostInfo, res: &Results) -> Result<(), String> {
    let lat = latency_table(&res.latency);
    let rps = rps_table(&res.rps);
    let targets = targets_section(res);
    let cpu = cpu_section(res);
    println!(
        "\nOne-way latency, µs ({} B ping-pong, medians over {} round(s))\n\n{lat}\nRequests/s ({} connections, {} s)\n\n{rps}\nTargets (issue 9)\n\n{targets}\nCPU (cores)\n\n{cpu}",
        a.size, a.rounds, a.conns, a.seconds
    );
    for k in &res.skipped {
        println!("skipped {}: {}", k.path, k.reason);
    }
    let mut md = String::new();
    md += "# dn-nat vs the kernel's nftables DNAT: latency added and requests/s\n\n";
    md += &host.md_header(&a.command_line);
    let _ = writeln!(
        md,
        "- Latency: {} B × {} messages (+{} warm-up) per point, {} round(s); requests/s: {} connections, {} s per point after a {} s warm-up",
        a.size, a.count, a.warmup, a.rounds, a.conns, a.seconds, a.warmup_s
    );
    if !res.httpd_build.is_empty() {
        let _ = writeln!(md, "- dn-httpd with the 1 KB page: `{}`", res.httpd_build);
    }
    md += &format!("\n{NAT_TEXT}\n\n![latency added and requests/s](nat.svg)\n\n");
    md += "## One-way latency (µs)\n\n";
    md += &lat;
    md += "\n## Requests/s\n\n";
    md += &rps;
    md += "\n## Targets (issue 9)\n\n";
    md += &targets;
    md += "\n## CPU in each measured window (cores)\n\n";
    md += &cpu;
    md += "\n## Command lines\n\n";
    if !res.network.is_empty() {
        md += "### The kernel's network (client, router, two servers)\n\n```sh\n";
        for l in &res.network {
            md += l;
            md += "\n";
        }
        md += "```\n\n";
    }
    for c in &res.commands {
        md += &format!("### {}\n\n```sh\n", c.part);
        for l in &c.lines {
            md += l;
            md += "\n";
        }
        md += "```\n\n";
    }
    if res.commands.iter().any(|c| c.part.starts_with("kernel")) {
        md += "dnat.nft (loaded on the router for the NAT points only):\n\n```\n";
        md += &nft_ruleset();
        md += "```\n";
    }
    if !res.skipped.is_empty() {
        md += "\n## Skipped parts\n\n";
        for k in &res.skipped {
            md += &format!("- `{}`: {}\n", k.path, k.reason);
        }
    }
    let lat_groups: Vec<svg::BarGroup> = res
        .latency
        .iter()
        .map(|r| {
            let s = r.summary();
            svg::BarGroup {
                label: r.path.clone(),
                values: vec![
                    s.as_ref().map(|s| s.direct_p50),
                    s.as_ref().map(|s| s.nat_p50),
                ],
            }
        })
        .collect();
    let rps_groups: Vec<svg::BarGroup> = res
        .rps
        .iter()
        .map(|r| svg::BarGroup {
            label: r.path.clone(),
            values: vec![r.result.as_ref().map(|p| p.rps / 1000.0)],
        })
        .collect();
    let subtitle = format!(
        "{} B ping-pong, {} round(s); HTTP {} connections, {} s · {} ({} CPUs) · Linux {} · {}",
        a.size, a.rounds, a.conns, a.seconds, host.cpu, host.ncpu, host.kernel, host.date_utc
    );
    let svg_text = svg::bar_figure(
        "dn-nat vs nftables DNAT",
        &subtitle,
        &[
            svg::BarPanel {
                title: "(a) One-way latency, p50".into(),
                y_label: "one-way latency p50 (µs)".into(),
                series: vec!["direct".into(), "via the NAT".into()],
                groups: lat_groups,
            },
            svg::BarPanel {
                title: "(b) Requests/s through the NAT, 2 servers".into(),
                y_label: "thousand requests/s".into(),
                series: vec!["requests/s".into()],
                groups: rps_groups,
            },
        ],
    );
    let json = serde_json::json!({
        "command": a.command_line,
        "date": host.date_utc,
        "kernel": host.kernel,
        "cpu": host.cpu,
        "ncpu": host.ncpu,
        "size": a.size,
        "count": a.count,
        "warmup": a.warmup,
        "rounds": a.rounds,
        "conns": a.conns,
        "seconds": a.seconds,
        "warmup_s": a.warmup_s,
        "httpd_build": res.httpd_build,
        "latency": res.latency.iter().map(|r| serde_json::json!({"row": r, "summary": r.summary()})).collect::<Vec<_>>(),
        "rps": res.rps,
        "commands": res.commands,
        "kernel_network": res.network,
        "nft_ruleset": nft_ruleset(),
        "skipped": res.skipped.iter().map(|k| serde_json::json!({"part": k.path, "reason": k.reason})).collect::<Vec<_>>(),
    });
    crate::report::write_files(&a.out, "nat", svg_text, md, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(p50: f64, p99: f64) -> PointResult {
        PointResult {
            size: 1024,
            count: 10,
            rtt_us_p50: 2.0 * p50,
            rtt_us_p99: 2.0 * p99,
            one_way_us_p50: p50,
            one_way_us_p99: p99,
            goodput_gbps: 1.0,
            elapsed_s: 1.0,
        }
    }

    fn row(path: &str, rounds: &[(f64, f64)]) -> LatRow {
        LatRow {
            path: path.into(),
            direct_path: String::new(),
            nat_path: String::new(),
            rounds: rounds
                .iter()
                .map(|&(d, n)| LatRound {
                    direct: Some(pt(d, 2.0 * d)),
                    nat: Some(pt(n, 2.0 * n)),
                    error: None,
                })
                .collect(),
            cpu_direct: None,
            cpu_nat: None,
        }
    }

    #[test]
    fn medians_and_added() {
        let r = row("docknet-fc", &[(1.0, 1.5), (2.0, 4.0), (1.2, 2.0)]);
        let s = r.summary().unwrap();
        assert_eq!(s.rounds, 3);
        assert_eq!(s.direct_p50, 1.2);
        assert_eq!(s.nat_p50, 2.0);
        // Per-round differences 0.5, 2.0, 0.8: the median is 0.8 (paired), not 2.0 − 1.2.
        assert!((s.added_p50 - 0.8).abs() < 1e-9);
        assert_eq!(s.added_p50_each.len(), 3);
        let mut failed = row("x", &[]);
        failed.rounds.push(LatRound {
            direct: None,
            nat: None,
            error: Some("boom".into()),
        });
        assert!(failed.summary().is_none());
        let t = latency_table(&[r, failed]);
        assert!(
            t.contains("**0.80**") && t.contains("FAILED [1]") && t.contains("[1] x: boom"),
            "{t}"
        );
    }

    #[test]
    fn targets() {
        let http = |rps| HttpPoint {
            requests: 1,
            duration_s: 1.0,
            rps,
            latency_us_p50: 1.0,
            latency_us_p99: 2.0,
            errors: 0,
            bytes: 0,
        };
        let rps_row = |path: &str, rps| RpsRow {
            path: path.into(),
            description: String::new(),
            result: Some(http(rps)),
            rps_each: vec![rps],
            error: None,
            cpu: None,
            spread: vec![("a".into(), Some(3), 0.5), ("b".into(), None, 0.5)],
        };
        let res = Results {
            latency: vec![
                row("docknet-fc", &[(1.0, 1.5)]),
                row("docknet-master", &[(3.0, 6.0)]),
                row("kernel-nftables", &[(20.0, 21.0)]),
            ],
            rps: vec![
                rps_row("docknet-nat-fc", 400_000.0),
                rps_row("kernel-nftables-nginx", 100_000.0),
            ],
            skipped: vec![],
            commands: vec![],
            network: vec![],
            httpd_build: String::new(),
        };
        let t = targets_section(&res);
        assert!(
            t.contains("docknet-fc: 0.50 µs") && t.contains(": met"),
            "{t}"
        );
        assert!(
            t.contains("docknet-master: 3.00 µs") && t.contains("**not met**"),
            "{t}"
        );
        assert!(
            t.contains("nftables DNAT on a forwarding router: 1.00 µs"),
            "{t}"
        );
        assert!(t.contains("**4.00×**"), "{t}");
        let r = rps_table(&res.rps);
        assert!(r.contains("3/50% 50%"), "{r}");
        assert_eq!(median_index(&[5.0, 1.0, 3.0]), Some(2));
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), Some(3));
        assert_eq!(median_index(&[]), None);
        let mut row = RpsRow::new("x", "");
        let run = |rps| RpsRun {
            point: http(rps),
            cpu: None,
            spread: vec![],
        };
        row.finish(vec![run(3.0), run(1.0), run(2.0)], vec!["boom".into()]);
        assert_eq!(row.result.as_ref().unwrap().rps, 2.0);
        assert_eq!(row.rps_each, vec![3.0, 1.0, 2.0]);
        let t = rps_table(&[row]);
        assert!(
            t.contains("2 [1]") && t.contains("3, 1, 2") && t.contains("1 of 4 runs failed: boom"),
            "{t}"
        );
    }

    #[test]
    fn kernel_plan_and_rules() {
        let (ns, cmds) = router_plan(7);
        assert_eq!(ns, ["dnb7nc", "dnb7nr", "dnb7ns1", "dnb7ns2"]);
        let has = |c: &str| cmds.iter().any(|x| x.join(" ") == c);
        assert!(has(
            "ip -n dnb7nc link add eth0 type veth peer name vc netns dnb7nr"
        ));
        assert!(has("ip -n dnb7ns2 route add default via 10.77.11.1"));
        assert!(has("ip -n dnb7nr addr add 10.77.9.100/24 dev vc"));
        assert!(has("ip netns exec dnb7nr sysctl -qw net.ipv4.ip_forward=1"));
        // Every namespace a command names is one of ours.
        for c in &cmds {
            for w in c.iter().filter(|w| w.starts_with("dnb")) {
                assert!(ns.contains(w), "{w}");
            }
        }
        let r = nft_ruleset();
        assert!(r.contains("dnat to numgen inc mod 2 map { 0 : 10.77.10.2, 1 : 10.77.11.2 }"));
        assert!(r.contains("tcp dport 5201 dnat to numgen inc mod 1 map { 0 : 10.77.10.2 }"));
        assert_eq!(r.matches('{').count(), r.matches('}').count());
    }
}

//! The `loss` benchmark (issue 10): how fast TCP recovers from random loss, DockNet beside
//! the kernel. The same message pattern on every path: one connection, COUNT sequential
//! echoes of SIZE bytes (write SIZE, read SIZE back, repeat), at several loss rates each
//! way.
//!
//! - DockNet: one `docknetd --nic none`; `dn-echo server` and `dn-echo client` on two pipes,
//!   joined by a fast channel (`docknet-fc`) or switched by the master
//!   (`docknet-master`). Loss is the libOS fault injector (`DOCKNET_DROP_RX`, on both
//!   services, a fresh `DOCKNET_DROP_SEED` for each process). A fresh server per run, so
//!   its retransmission report (printed at exit) covers that run alone.
//! - Kernel: the bench's kernel echo client and server (std::net, TCP_NODELAY) in two
//!   namespaces joined by veths to a Linux bridge, MTU as the pipes', TSO, GSO and GRO off
//!   (with them on, one drop takes a whole 64 KB super-packet); no `sch_netem` here, so an
//!   nftables rule `numgen random mod 1000 < N drop` on input in each namespace.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cleanup::DirGuard;
use crate::docknet::{self, Daemon};
use crate::netns::{self, Endpoints, Network, Topology, TopologySpec};
use crate::pingpong::{listening_addr, parse_point, self_exe, NamedList, NamedPath};
use crate::proc::{run_checked, run_with_timeout, ChildGuard};
use crate::report::{markdown_table, HostInfo};
use crate::sizes::format_size;
use crate::svg;

/// A loss rate, in frames per million (each way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LossRate(pub u32);

impl LossRate {
    /// The nftables expression that drops this share of packets (`None` for 0): per
    /// thousand when the rate is a whole number of thousandths, as the issue wrote it,
    /// else per million.
    pub fn nft_expr(self) -> Option<String> {
        match self.0 {
            0 => None,
            n if n % 1000 == 0 => Some(format!(
                "numgen random mod 1000 < {} counter drop",
                n / 1000
            )),
            n => Some(format!("numgen random mod 1000000 < {n} counter drop")),
        }
    }
}

impl fmt::Display for LossRate {
    /// `0`, `0.1%`, `1%`, `3%`, `0.0005%`: what `DOCKNET_DROP_RX` reads back exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0");
        }
        // Percent = per million / 10^4.
        let (int, frac) = (self.0 / 10_000, self.0 % 10_000);
        if frac == 0 {
            write!(f, "{int}%")
        } else {
            let digits = format!("{frac:04}");
            write!(f, "{int}.{}%", digits.trim_end_matches('0'))
        }
    }
}

impl FromStr for LossRate {
    type Err = String;
    /// As `DOCKNET_DROP_RX` reads it: a fraction (`0.01`) or a percentage (`1%`).
    fn from_str(s: &str) -> Result<Self, String> {
        ::docknet::fault::parse_rate(s).map(LossRate).map_err(|e| {
            e.to_string()
                .replace(::docknet::fault::DROP_ENV, "loss rate")
        })
    }
}

/// `--rates`: comma-separated loss rates, in the order given, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateList(pub Vec<LossRate>);

impl FromStr for RateList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let r: LossRate = part.parse()?;
            if r.0 >= 500_000 {
                return Err(format!(
                    "loss rate {part:?}: at 50% and above nothing gets through"
                ));
            }
            if !v.contains(&r) {
                v.push(r);
            }
        }
        if v.is_empty() {
            return Err("no loss rates given".into());
        }
        Ok(RateList(v))
    }
}

/// One path of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossPath {
    Kernel,
    DocknetFc,
    DocknetMaster,
}

impl LossPath {
    pub const ALL: [LossPath; 3] = [
        LossPath::Kernel,
        LossPath::DocknetFc,
        LossPath::DocknetMaster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LossPath::Kernel => "kernel-veth-bridge",
            LossPath::DocknetFc => "docknet-fc",
            LossPath::DocknetMaster => "docknet-master",
        }
    }
}

impl NamedPath for LossPath {
    const ALL: &'static [Self] = &LossPath::ALL;
    fn path_name(self) -> &'static str {
        self.name()
    }
}

/// `--paths` of `loss`.
pub type LossPathList = NamedList<LossPath>;

/// Options of `docknet-bench loss`.
#[derive(Debug, Clone)]
pub struct LossArgs {
    pub rates: Vec<LossRate>,
    pub paths: Vec<LossPath>,
    pub runs: usize,
    pub size: usize,
    pub count: usize,
    /// Unmeasured echoes on the same connection before the measured ones.
    pub warmup: usize,
    pub mtu: u32,
    pub seed: u64,
    pub timeout: Duration,
    pub out: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub keep_run_dir: bool,
    pub command_line: String,
}

/// One run of one (path, rate) cell.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub path: String,
    pub rate: String,
    pub per_million: u32,
    /// 1-based round (every round runs every rate on every path).
    pub round: usize,
    /// The COUNT echoes, from the connection being open to the last byte echoed back
    /// (the client's own measure); `None` if the run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    /// The client process from spawn to exit (start-up, connect and close included).
    pub wall_s: f64,
    /// The client's round-trip times of the measured echoes: median and 99th percentile
    /// (nearest rank: the slowest of 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_us_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_us_p99: Option<f64>,
    /// Retransmission timeouts, both ends (DockNet: the services' reports; kernel:
    /// `TcpExt.TCPTimeouts` of both namespaces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<u64>,
    /// Every retransmission, both ends (DockNet: timeouts + fast retransmits + partial-ack
    /// resends + lost resends resent + tail probes; kernel: `Tcp.RetransSegs`, segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmissions: Option<u64>,
    /// Tail-loss probes, both ends (included in `retransmissions` for DockNet; kernel:
    /// `TcpExt.TCPLossProbes`, whose timer waits at least 200 ms more when one segment is
    /// in flight, for a delayed ACK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail_probes: Option<u64>,
    /// Frames dropped on purpose, both ends (DockNet: the injector's report; kernel: the
    /// nftables rule's counters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Frames received, drops included (DockNet: the injector's report; kernel:
    /// `Ip.InReceives` of both namespaces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// The `DOCKNET_DROP_SEED`s (server, client).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// Every counter read, by name (DockNet: per end and kind; kernel: deltas).
    pub detail: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunResult {
    fn new(path: LossPath, rate: LossRate, round: usize) -> Self {
        RunResult {
            path: path.name().into(),
            rate: rate.to_string(),
            per_million: rate.0,
            round,
            elapsed_s: None,
            wall_s: 0.0,
            rtt_us_p50: None,
            rtt_us_p99: None,
            timeouts: None,
            retransmissions: None,
            tail_probes: None,
            dropped: None,
            received: None,
            seeds: Vec::new(),
            detail: BTreeMap::new(),
            error: None,
        }
    }
}

/// A libOS service's retransmission report (`NAME: tcp retransmissions: ...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retrans {
    pub timeouts: u64,
    pub fast: u64,
    pub partial: u64,
    pub lost: u64,
    pub tail: u64,
}

impl Retrans {
    pub fn total(&self) -> u64 {
        self.timeouts + self.fast + self.partial + self.lost + self.tail
    }
}

/// Parses `dn-echo: tcp retransmissions: 1 timeouts, 2 fast retransmits, 3 partial-ack
/// resends, 4 lost resends resent, 5 tail probes`.
pub fn parse_retrans(line: &str) -> Option<Retrans> {
    let (_, rest) = line.split_once("tcp retransmissions:")?;
    let mut r = Retrans::default();
    let mut seen = 0;
    for part in rest.split(',') {
        let part = part.trim();
        let (n, what) = part.split_once(' ')?;
        let n: u64 = n.parse().ok()?;
        let slot = if what.starts_with("timeouts") {
            &mut r.timeouts
        } else if what.starts_with("fast") {
            &mut r.fast
        } else if what.starts_with("partial") {
            &mut r.partial
        } else if what.starts_with("lost") {
            &mut r.lost
        } else if what.starts_with("tail") {
            &mut r.tail
        } else {
            continue;
        };
        *slot = n;
        seen += 1;
    }
    (seen > 0).then_some(r)
}

/// Parses `dn-echo: injected loss (DOCKNET_DROP_RX): dropped D of R received frames`:
/// (D, R).
pub fn parse_injected(line: &str) -> Option<(u64, u64)> {
    let (_, rest) = line.split_once("dropped ")?;
    let mut it = rest.split_whitespace();
    let d = it.next()?.parse().ok()?;
    (it.next()? == "of").then_some(())?;
    let r = it.next()?.parse().ok()?;
    Some((d, r))
}

/// What a libOS service reported at exit: retransmissions (none printed = none made) and
/// injected loss.
fn service_report(lines: &[String]) -> (Retrans, Option<(u64, u64)>) {
    let r = lines
        .iter()
        .rev()
        .find_map(|l| parse_retrans(l))
        .unwrap_or_default();
    let i = lines.iter().rev().find_map(|l| parse_injected(l));
    (r, i)
}

/// `/proc/net/snmp` or `/proc/net/netstat`: `Group.Name` → value.
pub fn parse_proc_counters(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.windows(2) {
        let (Some((g1, names)), Some((g2, values))) =
            (pair[0].split_once(':'), pair[1].split_once(':'))
        else {
            continue;
        };
        if g1 != g2
            || names
                .split_whitespace()
                .next()
                .and_then(|w| w.parse::<i64>().ok())
                .is_some()
        {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<u64>() {
                m.insert(format!("{g1}.{n}"), v);
            }
        }
    }
    m
}

/// The kernel counters the report uses (deltas over a run, both namespaces).
const KERNEL_COUNTERS: [&str; 6] = [
    "Tcp.RetransSegs",
    "TcpExt.TCPTimeouts",
    "TcpExt.TCPLossProbes",
    "TcpExt.TCPFastRetrans",
    "TcpExt.TCPSackRecovery",
    "Ip.InReceives",
];

/// Output of a short command (argv), or one line with its stderr.
fn output_of(args: &[&str]) -> Result<String, String> {
    let (prog, rest) = args.split_first().ok_or("empty command")?;
    let out = Command::new(prog)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("`{}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The nftables table the kernel path's loss lives in.
const NFT_TABLE: &str = "dnbloss";

/// The ruleset loaded (with `nft -f`) in each kernel namespace for `rate`: it replaces
/// whatever was there (and so resets the counter); for 0 it only removes the table.
pub fn nft_ruleset(rate: LossRate) -> String {
    let mut s = format!("table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n");
    if let Some(expr) = rate.nft_expr() {
        let _ = write!(
            s,
            "table inet {NFT_TABLE} {{\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\t\t{expr}\n\t}}\n}}\n"
        );
    }
    s
}

/// The packets an `nft list` output's counter counted.
pub fn parse_nft_packets(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("counter packets ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The kernel path: two namespaces on a bridge, our echo server in b.
struct KernelSide {
    net: Network,
    server: ChildGuard,
    addr: String,
    exe: PathBuf,
    rules: DirGuard,
    /// What built it, for the report.
    commands: Vec<String>,
    /// `ethtool -k` as read back on every veth end.
    offloads: Vec<String>,
}

impl KernelSide {
    fn start(a: &LossArgs) -> Result<KernelSide, String> {
        if let Some(r) = netns::unavailable_reason() {
            return Err(r);
        }
        for (tool, pkg) in [("nft", "nftables"), ("ethtool", "ethtool")] {
            if crate::httpd::which(tool).is_none() {
                return Err(format!("{tool} not found (apt-get install {pkg})"));
            }
        }
        let spec = TopologySpec {
            tag: "l".into(),
            topology: Topology::BridgeWire,
            endpoints: Endpoints::Kernel,
            ip_a: std::net::Ipv4Addr::new(10, 78, 0, 2),
            ip_b: std::net::Ipv4Addr::new(10, 78, 0, 3),
            prefix: 16,
            mtu: Some(a.mtu),
            no_tso: true,
        };
        let plan = spec.plan(std::process::id());
        let mut commands: Vec<String> = plan
            .namespaces
            .iter()
            .map(|n| format!("ip netns add {n}"))
            .chain(plan.commands.iter().map(|c| c.join(" ")))
            .collect();
        let net = Network::create(&spec)?;
        // Every veth end: (namespace, device). The plan turned TSO and GSO off; GRO too.
        let (na, nb, nbr) = (
            net.namespaces[0].name.clone(),
            net.namespaces[1].name.clone(),
            net.namespaces[2].name.clone(),
        );
        let ends = [
            (na.as_str(), "eth0"),
            (nbr.as_str(), "pa"),
            (nbr.as_str(), "pb"),
            (nb.as_str(), "eth0"),
        ];
        let mut offloads = Vec::new();
        for (ns, dev) in ends {
            let cmd = [
                "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro",
                "off",
            ];
            run_checked(&cmd)?;
            commands.push(cmd.join(" "));
            let k = output_of(&["ip", "netns", "exec", ns, "ethtool", "-k", dev])?;
            let mut seen = Vec::new();
            for feature in [
                "tcp-segmentation-offload",
                "generic-segmentation-offload",
                "generic-receive-offload",
            ] {
                let v = k
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{feature}:")))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|| "?".into());
                if !v.starts_with("off") {
                    return Err(format!("{ns}/{dev}: {feature} is {v:?} after ethtool -K"));
                }
                seen.push(format!("{feature}: {v}"));
            }
            offloads.push(format!("{ns}/{dev}: {}", seen.join(", ")));
        }
        let rules = DirGuard::create(
            std::env::temp_dir().join(format!("dnbench-{}-loss-nft", std::process::id())),
            a.keep_run_dir,
        )
        .map_err(|e| format!("creating the nft dir: {e}"))?;
        let exe = self_exe()?;
        let bind = format!("{}:5201", net.ip_b);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.end_b.ns]).arg(&exe).args([
            "kernel-echo-server",
            "--bind",
            &bind,
        ]);
        let mut server = ChildGuard::spawn("kernel echo server", cmd)?;
        let addr = listening_addr(&server.wait_for_line("listening", Duration::from_secs(10))?)?;
        Ok(KernelSide {
            net,
            server,
            addr,
            exe,
            rules,
            commands,
            offloads,
        })
    }

    fn hosts(&self) -> [String; 2] {
        [self.net.end_a.ns.clone(), self.net.end_b.ns.clone()]
    }

    /// Loads `rate`'s ruleset in both hosts (counters start from 0).
    fn set_loss(&self, rate: LossRate) -> Result<(), String> {
        let f = self.rules.path.join(format!("loss-{}.nft", rate.0));
        std::fs::write(&f, nft_ruleset(rate))
            .map_err(|e| format!("writing {}: {e}", f.display()))?;
        let f = f.to_string_lossy();
        for ns in self.hosts() {
            run_checked(&["ip", "netns", "exec", &ns, "nft", "-f", &f])?;
        }
        Ok(())
    }

    /// The counters of both hosts, summed.
    fn counters(&self) -> Result<BTreeMap<String, u64>, String> {
        let mut sum = BTreeMap::new();
        for ns in self.hosts() {
            let text = output_of(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "cat",
                "/proc/net/snmp",
                "/proc/net/netstat",
            ])?;
            for (k, v) in parse_proc_counters(&text) {
                *sum.entry(k).or_insert(0u64) += v;
            }
        }
        Ok(sum)
    }

    /// Packets the loss rules dropped in both hosts since they were loaded.
    fn dropped(&self, rate: LossRate) -> Result<u64, String> {
        if rate.0 == 0 {
            return Ok(0);
        }
        let mut n = 0;
        for ns in self.hosts() {
            let t = output_of(&[
                "ip", "netns", "exec", &ns, "nft", "list", "chain", "inet", NFT_TABLE, "input",
            ])?;
            n += parse_nft_packets(&t).ok_or_else(|| format!("no counter in {t:?}"))?;
        }
        Ok(n)
    }

    fn run(&mut self, a: &LossArgs, rate: LossRate, round: usize) -> RunResult {
        let mut r = RunResult::new(LossPath::Kernel, rate, round);
        if let Err(e) = self.run_inner(a, rate, &mut r) {
            r.error = Some(e);
            r.elapsed_s = None;
        }
        r
    }

    fn run_inner(&mut self, a: &LossArgs, rate: LossRate, r: &mut RunResult) -> Result<(), String> {
        if let Some(s) = self.server.exited() {
            return Err(format!(
                "kernel echo server exited ({s}); stderr: {}",
                self.server.stderr_tail.digest()
            ));
        }
        self.set_loss(rate)?;
        let before = self.counters()?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.net.end_a.ns])
            .arg(&self.exe)
            .args(["kernel-echo-client", "--to", &self.addr])
            .args(["--size", &a.size.to_string()])
            .args(["--count", &a.count.to_string()])
            .args(["--warmup", &a.warmup.to_string(), "--json"]);
        let t0 = Instant::now();
        let out = run_with_timeout("kernel echo client", c, a.timeout)?;
        r.wall_s = t0.elapsed().as_secs_f64();
        let after = self.counters()?;
        for k in KERNEL_COUNTERS {
            let d = after
                .get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get(k).copied().unwrap_or(0));
            r.detail.insert(k.to_string(), d);
        }
        r.timeouts = r.detail.get("TcpExt.TCPTimeouts").copied();
        r.retransmissions = r.detail.get("Tcp.RetransSegs").copied();
        r.tail_probes = r.detail.get("TcpExt.TCPLossProbes").copied();
        r.received = r.detail.get("Ip.InReceives").copied();
        r.dropped = Some(self.dropped(rate)?);
        if !out.success {
            return Err(format!(
                "kernel echo client: {}; stderr: {}",
                out.status, out.stderr_tail
            ));
        }
        let p = parse_point(&out.stdout, a.size).map_err(|e| format!("kernel echo client: {e}"))?;
        r.elapsed_s = Some(p.elapsed_s);
        r.rtt_us_p50 = Some(p.rtt_us_p50);
        r.rtt_us_p99 = Some(p.rtt_us_p99);
        Ok(())
    }
}

/// A DockNet path's two pipes: (server pipe, its address, client pipe, its address).
fn pipes(path: LossPath) -> (&'static str, &'static str, &'static str, &'static str) {
    match path {
        LossPath::DocknetFc => ("c", "10.88.0.4", "d", "10.88.0.5"),
        _ => ("a", "10.88.0.2", "b", "10.88.0.3"),
    }
}

/// The DockNet paths: one docknetd, pipes a/b (through the master) and c/d (fast channel).
struct DocknetSide {
    d: Daemon,
    next_seed: u64,
}

impl DocknetSide {
    fn start(a: &LossArgs) -> Result<DocknetSide, String> {
        let bins = docknet::find_bins(a.bin_dir.as_deref())?;
        let run = std::env::temp_dir().join(format!("dnbench-{}-loss", std::process::id()));
        let d = Daemon::start(&bins, run, a.keep_run_dir, Duration::from_secs(15))?;
        let side = DocknetSide {
            d,
            next_seed: a.seed,
        };
        for path in [LossPath::DocknetMaster, LossPath::DocknetFc] {
            if a.paths.contains(&path) {
                side.create_pipes(a, path, true)?;
            }
        }
        Ok(side)
    }

    /// Creates `path`'s pipes (both, or only the client's) and, for the fast-channel
    /// path, the channel.
    fn create_pipes(&self, a: &LossArgs, path: LossPath, both: bool) -> Result<(), String> {
        let (srv, srv_ip, cli, cli_ip) = pipes(path);
        let mtu = a.mtu.to_string();
        let mut todo = vec![(cli, cli_ip)];
        if both {
            todo.insert(0, (srv, srv_ip));
        }
        for (name, ip) in todo {
            self.d.ctl(&[
                "pipe",
                "create",
                name,
                "--ip",
                &format!("{ip}/16"),
                "--mtu",
                &mtu,
            ])?;
        }
        if path == LossPath::DocknetFc {
            // The channel gets the pipes' MTU too (its default is 65000): a loss rate is
            // per frame, so every path must cut the stream into frames of one size.
            self.d.ctl(&["fc", "create", srv, cli, "--mtu", &mtu])?;
        }
        Ok(())
    }

    /// A client that failed may leave frames behind: a fresh client pipe.
    fn recreate_client_pipe(&self, a: &LossArgs, path: LossPath) -> Result<(), String> {
        let (srv, _, cli, _) = pipes(path);
        if path == LossPath::DocknetFc {
            let _ = self.d.ctl(&["fc", "rm", srv, cli]);
        }
        self.d.ctl(&["pipe", "rm", cli])?;
        self.create_pipes(a, path, false)
    }

    fn seed(&mut self) -> u64 {
        let s = self.next_seed;
        self.next_seed = self.next_seed.wrapping_add(1);
        s
    }

    fn service(&self, pipe: &str, rate: LossRate, seed: u64) -> Command {
        let mut c = Command::new(&self.d.bins.dn_echo);
        c.env("DOCKNET_PIPE", self.d.pipe_dir(pipe));
        c.env_remove(::docknet::fault::DROP_ENV)
            .env_remove(::docknet::fault::SEED_ENV);
        if rate.0 > 0 {
            c.env(::docknet::fault::DROP_ENV, rate.to_string())
                .env(::docknet::fault::SEED_ENV, seed.to_string());
        }
        c
    }

    fn run(&mut self, a: &LossArgs, path: LossPath, rate: LossRate, round: usize) -> RunResult {
        let mut r = RunResult::new(path, rate, round);
        if let Err(e) = self.run_inner(a, path, rate, &mut r) {
            r.error = Some(e);
            r.elapsed_s = None;
            if let Err(e) = self.recreate_client_pipe(a, path) {
                log::warn!("re-creating the client pipe of {path:?}: {e}");
            }
        }
        r
    }

    fn run_inner(
        &mut self,
        a: &LossArgs,
        path: LossPath,
        rate: LossRate,
        r: &mut RunResult,
    ) -> Result<(), String> {
        if let Some(s) = self.d.exited() {
            return Err(format!(
                "docknetd exited ({s}); stderr: {}",
                self.d.stderr_tail()
            ));
        }
        let (srv, srv_ip, cli, _) = pipes(path);
        let (s_seed, c_seed) = (self.seed(), self.seed());
        if rate.0 > 0 {
            r.seeds = vec![s_seed, c_seed];
        }
        let mut cmd = self.service(srv, rate, s_seed);
        cmd.args(["server", "--port", "7"]);
        let mut server = ChildGuard::spawn(&format!("{} dn-echo server", path.name()), cmd)?;
        server
            .wait_for_line("listening", Duration::from_secs(15))
            .map_err(|e| format!("{e}; docknetd stderr: {}", self.d.stderr_tail()))?;
        let mut cmd = self.service(cli, rate, c_seed);
        cmd.args(["client", "--to", &format!("{srv_ip}:7")])
            .args(["--size", &a.size.to_string()])
            .args(["--count", &a.count.to_string()])
            .args(["--warmup", &a.warmup.to_string()])
            .args(["--timeout-s", &a.timeout.as_secs().max(1).to_string()])
            .arg("--json");
        let t0 = Instant::now();
        // dn-echo gives up by itself after --timeout-s without progress; the bench's
        // limit (a little longer) catches a client that hangs otherwise.
        let out = run_with_timeout(
            &format!("{} dn-echo client", path.name()),
            cmd,
            a.timeout + Duration::from_secs(5),
        );
        r.wall_s = t0.elapsed().as_secs_f64();
        let server_status = server.stop(Duration::from_secs(5));
        let out = out?;
        let (cr, ci) = service_report(&out.stderr_lines);
        let (sr, si) = service_report(&server.stderr_tail.lines());
        for (end, x) in [("client", cr), ("server", sr)] {
            for (k, v) in [
                ("timeouts", x.timeouts),
                ("fast_retransmits", x.fast),
                ("partial_ack_resends", x.partial),
                ("lost_resends_resent", x.lost),
                ("tail_probes", x.tail),
            ] {
                r.detail.insert(format!("{end}.{k}"), v);
            }
        }
        r.timeouts = Some(cr.timeouts + sr.timeouts);
        r.retransmissions = Some(cr.total() + sr.total());
        r.tail_probes = Some(cr.tail + sr.tail);
        if rate.0 > 0 {
            if let (Some((cd, cn)), Some((sd, sn))) = (ci, si) {
                r.dropped = Some(cd + sd);
                r.received = Some(cn + sn);
                for (k, v) in [
                    ("client.dropped", cd),
                    ("client.received", cn),
                    ("server.dropped", sd),
                    ("server.received", sn),
                ] {
                    r.detail.insert(k.into(), v);
                }
            }
        } else {
            r.dropped = Some(0);
        }
        if !out.success {
            return Err(format!(
                "dn-echo client: {}; stderr: {}; server: {}",
                out.status,
                out.stderr_tail,
                server.stderr_tail.digest()
            ));
        }
        if !server_status.is_some_and(|s| s.success()) {
            log::warn!(
                "{} dn-echo server: exit {server_status:?}; stderr: {}",
                path.name(),
                server.stderr_tail.digest()
            );
        }
        let p = parse_point(&out.stdout, a.size).map_err(|e| format!("dn-echo client: {e}"))?;
        r.elapsed_s = Some(p.elapsed_s);
        r.rtt_us_p50 = Some(p.rtt_us_p50);
        r.rtt_us_p99 = Some(p.rtt_us_p99);
        Ok(())
    }
}

/// One (path, rate) cell over all its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub path: String,
    pub rate: String,
    pub per_million: u32,
    pub runs: usize,
    /// Completed runs' times, in run order.
    pub each_s: Vec<f64>,
    pub median_s: Option<f64>,
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
    /// Kernel median ÷ this median (DockNet rows).
    pub kernel_over_this: Option<f64>,
    /// Summed over all runs (failed ones included).
    pub timeouts: u64,
    pub retransmissions: u64,
    pub tail_probes: u64,
    pub dropped: u64,
    pub received: u64,
    pub errors: Vec<String>,
}

/// The cells, rate by rate, each rate's paths in `paths` order.
pub fn cells(results: &[RunResult], rates: &[LossRate], paths: &[LossPath]) -> Vec<Cell> {
    let mut out = Vec::new();
    for &rate in rates {
        let mut kernel_med = None;
        for &path in paths {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.path == path.name() && r.per_million == rate.0)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let each_s: Vec<f64> = runs.iter().filter_map(|r| r.elapsed_s).collect();
            let med = crate::stats::median(&each_s);
            if path == LossPath::Kernel {
                kernel_med = med;
            }
            let sum = |f: fn(&RunResult) -> Option<u64>| runs.iter().filter_map(|r| f(r)).sum();
            out.push(Cell {
                path: path.name().into(),
                rate: rate.to_string(),
                per_million: rate.0,
                runs: runs.len(),
                min_s: each_s.iter().copied().reduce(f64::min),
                max_s: each_s.iter().copied().reduce(f64::max),
                median_s: med,
                each_s,
                kernel_over_this: None,
                timeouts: sum(|r| r.timeouts),
                retransmissions: sum(|r| r.retransmissions),
                tail_probes: sum(|r| r.tail_probes),
                dropped: sum(|r| r.dropped),
                received: sum(|r| r.received),
                errors: runs
                    .iter()
                    .filter_map(|r| r.error.as_ref().map(|e| format!("run {}: {e}", r.round)))
                    .collect(),
            });
        }
        for c in out.iter_mut().filter(|c| c.per_million == rate.0) {
            if c.path != LossPath::Kernel.name() {
                c.kernel_over_this = match (kernel_med, c.median_s) {
                    (Some(k), Some(d)) if d > 0.0 => Some(k / d),
                    _ => None,
                };
            }
        }
    }
    out
}

fn secs(v: f64) -> String {
    if v < 0.1 {
        format!("{v:.4}")
    } else {
        format!("{v:.3}")
    }
}

/// The results table (markdown), failed runs as footnotes.
pub fn table(cells: &[Cell]) -> String {
    let mut notes: Vec<String> = Vec::new();
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            let ok = c.each_s.len();
            let mark = if c.errors.is_empty() {
                String::new()
            } else {
                notes.push(format!(
                    "[{}] {} at {}: {} of {} runs failed — {}",
                    notes.len() + 1,
                    c.path,
                    c.rate,
                    c.errors.len(),
                    c.runs,
                    c.errors
                        .iter()
                        .map(|e| e.replace('\n', " "))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                format!(" [{}]", notes.len())
            };
            let med = c.median_s.map_or_else(|| "FAILED".to_string(), secs);
            let range = match (c.min_s, c.max_s) {
                (Some(lo), Some(hi)) => format!("{}–{}", secs(lo), secs(hi)),
                _ => "-".into(),
            };
            let ratio = if c.path == LossPath::Kernel.name() {
                "(baseline)".into()
            } else {
                c.kernel_over_this
                    .map_or_else(|| "-".into(), |x| format!("{x:.2}×"))
            };
            let dropped = if c.per_million == 0 {
                "0".into()
            } else if c.received > 0 {
                format!(
                    "{} / {} ({:.2}%)",
                    c.dropped,
                    c.received,
                    c.dropped as f64 * 100.0 / c.received as f64
                )
            } else {
                format!("{} / ?", c.dropped)
            };
            vec![
                c.rate.clone(),
                c.path.clone(),
                format!("{med}{mark}"),
                range,
                ratio,
                format!("{ok}/{}", c.runs),
                format!("{} / {}", c.timeouts, c.retransmissions),
                c.tail_probes.to_string(),
                dropped,
                c.each_s
                    .iter()
                    .map(|&x| secs(x))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    let mut s = markdown_table(
        &[
            "loss each way",
            "path",
            "median (s)",
            "min–max (s)",
            "kernel ÷ DockNet",
            "runs ok",
            "timeouts / retransmissions",
            "tail probes",
            "dropped / received frames",
            "each run (s)",
        ],
        &[
            false, false, true, true, true, true, true, true, true, false,
        ],
        &rows,
    );
    for n in notes {
        s += &format!("\n{n}");
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The issue's "Done when": every DockNet path at least as fast as the kernel (medians) at
/// every rate. One line per DockNet path, and the verdict.
pub fn verdict(cells: &[Cell], rates: &[LossRate], paths: &[LossPath]) -> String {
    let mut s = String::new();
    if !paths.contains(&LossPath::Kernel) {
        s += "- not checked: the kernel path was not run\n";
        return s;
    }
    let mut all = true;
    for &path in paths.iter().filter(|&&p| p != LossPath::Kernel) {
        let mut parts = Vec::new();
        for &rate in rates {
            let c = cells
                .iter()
                .find(|c| c.path == path.name() && c.per_million == rate.0);
            match c.and_then(|c| c.kernel_over_this) {
                Some(x) => {
                    let ok = x >= 1.0;
                    all &= ok;
                    parts.push(format!(
                        "{rate} {x:.2}× {}",
                        if ok {
                            "(at least as fast)"
                        } else {
                            "(**slower**)"
                        }
                    ));
                }
                None => {
                    all = false;
                    parts.push(format!("{rate} not measured"));
                }
            }
        }
        let _ = writeln!(
            s,
            "- {}: kernel ÷ DockNet {}",
            path.name(),
            parts.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "- target (issue 10: DockNet at least as fast as the kernel at every loss rate, medians): **{}**",
        if all { "met" } else { "not met" }
    );
    s
}

/// The kernel figures the issue quotes (a Python echo between two namespaces, MTU 9000,
/// TSO/GSO/GRO off, three runs each).
pub const ISSUE_KERNEL: &str = "0.021–0.027 s lossless, 0.033–0.256 s at 1%, 0.251–0.682 s at 3% \
(a Python echo between two namespaces, MTU 9000, TSO/GSO/GRO off, three runs each)";

fn describe(a: &LossArgs) -> String {
    let warmup = if a.warmup == 0 {
        "no warm-up (a fresh connection, the first echo measured)".to_string()
    } else {
        format!(
            "after {} unmeasured echoes on the same connection",
            a.warmup
        )
    };
    format!(
        "{} sequential echoes of {} bytes ({}) on one connection (write the message, read it \
all back, repeat), {warmup}, at each loss rate each way; {} run(s) per cell, in rounds \
(every rate on every path, then again); MTU {} on every path.",
        a.count,
        a.size,
        format_size(a.size),
        a.runs,
        a.mtu
    )
}

const PATHS_TEXT: &str = "\
- `kernel-veth-bridge`: the bench's kernel echo client (namespace a, 10.78.0.2) and echo \
server (namespace b, 10.78.0.3, port 5201), std::net with TCP_NODELAY, a thread per \
connection; a and b are joined by veth pairs to a Linux bridge in a third namespace. MTU \
on every link as the pipes'; TSO, GSO and GRO off on every veth end (with them on, one \
drop takes a whole 64 KB super-packet); loss: an nftables table `inet dnbloss` in a and b \
with `numgen random mod 1000 < N counter drop` on the input hook (N = 1, 10, 30 for 0.1%, \
1%, 3%), reloaded before each run (which zeroes its counters). Linux's minimum RTO is \
200 ms.
- `docknet-fc`: `dn-echo server --port 7` on pipe c (10.88.0.4/16) and `dn-echo client` on \
pipe d (10.88.0.5/16), joined by `docknetctl fc create c d --mtu MTU` (the pipes' MTU, not \
the channel's default 65000: loss is per frame); one `docknetd --nic none`.
- `docknet-master`: the same on pipes a (10.88.0.2/16) and b (10.88.0.3/16), every frame \
switched by docknetd.
- DockNet loss: `DOCKNET_DROP_RX=RATE` on both services (the libOS drops that share of the \
frames it receives), a fresh `DOCKNET_DROP_SEED` for every process; a fresh server per run.

time = the client's own measure of the echoes: from the connection being established to \
the last byte of the last echo back (connect and close excluded, the same for both \
clients); the table gives the median, min and max over the completed runs (median of an \
even count: the mean of the middle two). kernel ÷ DockNet = kernel median ÷ DockNet median \
at the same rate (> 1: DockNet faster). timeouts / retransmissions, summed over all runs \
and both ends: DockNet = the services' exit reports (retransmission timeouts / timeouts + \
fast retransmits + NewReno partial-ack resends + lost resends resent + tail-loss probes); \
kernel = `TcpExt.TCPTimeouts` / `Tcp.RetransSegs` (segments) of both namespaces. tail \
probes: DockNet = the services' tail-loss probes (2 × SRTT + 1 ms after the last send, \
counted among the retransmissions); kernel = `TcpExt.TCPLossProbes` (Linux waits 2 × SRTT, \
and at least 200 ms more when a single segment is in flight, for a delayed ACK: a lost last \
segment of a message costs ~200 ms without any RTO). dropped / received frames: DockNet = the injectors' reports; kernel = the nftables counters / \
`Ip.InReceives` of both namespaces.";

/// Prints the table and verdict; writes OUT/loss.{md,json,svg}.
fn write_outputs(
    a: &LossArgs,
    host: &HostInfo,
    results: &[RunResult],
    skipped: &[(String, String)],
    kernel_setup: Option<(&[String], &[String])>,
) -> Result<(), String> {
    let cells = cells(results, &a.rates, &a.paths);
    let t = table(&cells);
    let v = verdict(&cells, &a.rates, &a.paths);
    println!("\n{t}\n{v}");
    for (p, why) in skipped {
        println!("skipped {p}: {why}");
    }
    let mut md = String::new();
    md += "# Loss recovery: sequential echoes at random loss, DockNet vs the kernel\n\n";
    md += &host.md_header(&a.command_line);
    let _ = writeln!(md, "- {}", describe(a));
    let _ = writeln!(
        md,
        "- DockNet's TCP: the engine's defaults (`DOCKNET_TCP_RTO_MIN_MS`, `DOCKNET_TCP_RTO_INITIAL_MS` {})",
        match (
            std::env::var("DOCKNET_TCP_RTO_MIN_MS"),
            std::env::var("DOCKNET_TCP_RTO_INITIAL_MS")
        ) {
            (Err(_), Err(_)) => "not set".to_string(),
            (m, i) => format!(
                "set: {} / {}",
                m.unwrap_or_else(|_| "-".into()),
                i.unwrap_or_else(|_| "-".into())
            ),
        }
    );
    let _ = writeln!(md, "- The issue's kernel figures: {ISSUE_KERNEL}");
    md += "\n";
    md += PATHS_TEXT;
    md += "\n\n![echo time and kernel ÷ DockNet vs loss rate](loss.svg)\n\n## Results\n\n";
    md += &t;
    md += "\n";
    md += &v;
    for (p, why) in skipped {
        let _ = writeln!(md, "\nSkipped {p}: {why}");
    }
    if let Some((commands, offloads)) = kernel_setup {
        md += "\n## The kernel path's network\n\n```sh\n";
        for c in commands {
            md += c;
            md += "\n";
        }
        md += "```\n\nOffloads as read back (`ethtool -k`):\n\n";
        for o in offloads {
            let _ = writeln!(md, "- {o}");
        }
        md += "\nThe ruleset loaded in both hosts before each run (here for 1%; for 0 only \
the first two lines, which remove the table):\n\n```\n";
        md += &nft_ruleset(LossRate(10_000));
        md += "```\n";
    }
    // The figure: (a) median time by rate; (b) kernel ÷ DockNet by rate.
    let names: Vec<String> = a.paths.iter().map(|p| p.name().to_string()).collect();
    let find = |path: &str, rate: LossRate| {
        cells
            .iter()
            .find(|c| c.path == path && c.per_million == rate.0)
    };
    let times: Vec<svg::BarGroup> = a
        .rates
        .iter()
        .map(|&rate| svg::BarGroup {
            label: format!("loss {rate}"),
            values: names
                .iter()
                .map(|n| find(n, rate).and_then(|c| c.median_s).map(|s| s * 1000.0))
                .collect(),
        })
        .collect();
    let dn: Vec<&String> = names
        .iter()
        .filter(|n| n.as_str() != LossPath::Kernel.name())
        .collect();
    let ratios: Vec<svg::BarGroup> = a
        .rates
        .iter()
        .map(|&rate| svg::BarGroup {
            label: format!("loss {rate}"),
            values: dn
                .iter()
                .map(|n| find(n, rate).and_then(|c| c.kernel_over_this))
                .collect(),
        })
        .collect();
    let subtitle = format!(
        "{} × {} echoes, MTU {}, median of {} · {} ({} CPUs) · Linux {} · {}",
        a.count,
        format_size(a.size),
        a.mtu,
        a.runs,
        host.cpu,
        host.ncpu,
        host.kernel,
        host.date_utc
    );
    let svg_text = svg::bar_figure(
        "Loss recovery: DockNet vs the kernel",
        &subtitle,
        &[
            svg::BarPanel {
                title: format!(
                    "(a) {} × {} echo time, median",
                    a.count,
                    format_size(a.size)
                ),
                y_label: "milliseconds".into(),
                series: names.clone(),
                groups: times,
            },
            svg::BarPanel {
                title: "(b) kernel ÷ DockNet (> 1: DockNet faster)".into(),
                y_label: "kernel time ÷ DockNet time".into(),
                series: dn.iter().map(|s| s.to_string()).collect(),
                groups: ratios,
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
        "runs": a.runs,
        "mtu": a.mtu,
        "rates": a.rates.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "paths": names,
        "issue_kernel": ISSUE_KERNEL,
        "skipped": skipped.iter().map(|(p, w)| serde_json::json!({"path": p, "reason": w})).collect::<Vec<_>>(),
        "cells": cells,
        "runs_each": results,
    });
    crate::report::write_files(&a.out, "loss", svg_text, md, &json)
}

/// Runs the benchmark and writes the outputs.
pub fn run(a: &LossArgs) -> Result<(), String> {
    if a.runs == 0 || a.count == 0 || a.size == 0 || a.rates.is_empty() || a.paths.is_empty() {
        return Err("--runs, --count, --size, --rates and --paths must not be empty or 0".into());
    }
    let host = HostInfo::collect();
    eprintln!(
        "loss: paths {}; rates {}; {} run(s) per cell; {} × {} echoes, MTU {}; timeout {} s",
        a.paths
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(","),
        a.rates
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(","),
        a.runs,
        a.count,
        format_size(a.size),
        a.mtu,
        a.timeout.as_secs()
    );
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut kernel = None;
    if a.paths.contains(&LossPath::Kernel) {
        match KernelSide::start(a) {
            Ok(k) => {
                eprintln!("  kernel: {}", k.net.describe());
                kernel = Some(k);
            }
            Err(e) => {
                eprintln!("  skipping {}: {e}", LossPath::Kernel.name());
                skipped.push((LossPath::Kernel.name().into(), e));
            }
        }
    }
    let mut dn = None;
    let dn_paths: Vec<LossPath> = a
        .paths
        .iter()
        .copied()
        .filter(|&p| p != LossPath::Kernel)
        .collect();
    if !dn_paths.is_empty() {
        match DocknetSide::start(a) {
            Ok(d) => dn = Some(d),
            Err(e) => {
                for p in &dn_paths {
                    eprintln!("  skipping {}: {e}", p.name());
                    skipped.push((p.name().into(), e.clone()));
                }
            }
        }
    }
    let mut results = Vec::new();
    for round in 1..=a.runs {
        for &rate in &a.rates {
            for &path in &a.paths {
                let r = match (path, kernel.as_mut(), dn.as_mut()) {
                    (LossPath::Kernel, Some(k), _) => k.run(a, rate, round),
                    (LossPath::DocknetFc | LossPath::DocknetMaster, _, Some(d)) => {
                        d.run(a, path, rate, round)
                    }
                    _ => continue,
                };
                while crate::cleanup::shutting_down() {
                    // The signal thread is cleaning up and will exit the process.
                    std::thread::park();
                }
                match (&r.elapsed_s, &r.error) {
                    (Some(t), _) => eprintln!(
                        "  round {round}/{}  loss {:>6}  {:<18} {} s  ({} timeouts / {} retransmissions, dropped {} of {} frames)",
                        a.runs,
                        rate.to_string(),
                        path.name(),
                        secs(*t),
                        r.timeouts.map_or("?".into(), |x| x.to_string()),
                        r.retransmissions.map_or("?".into(), |x| x.to_string()),
                        r.dropped.map_or("?".into(), |x| x.to_string()),
                        r.received.map_or("?".into(), |x| x.to_string()),
                    ),
                    (None, e) => eprintln!(
                        "  round {round}/{}  loss {:>6}  {:<18} FAILED: {}",
                        a.runs,
                        rate.to_string(),
                        path.name(),
                        e.as_deref().unwrap_or("no result")
                    ),
                }
                results.push(r);
            }
        }
    }
    drop(dn);
    let setup = kernel
        .as_ref()
        .map(|k| (k.commands.clone(), k.offloads.clone()));
    drop(kernel);
    write_outputs(
        a,
        &host,
        &results,
        &skipped,
        setup.as_ref().map(|(c, o)| (c.as_slice(), o.as_slice())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_print_and_become_rules() {
        let l: RateList = "0,0.1%,1%,3%".parse().unwrap();
        assert_eq!(
            l.0,
            vec![
                LossRate(0),
                LossRate(1000),
                LossRate(10_000),
                LossRate(30_000)
            ]
        );
        let shown: Vec<String> = l.0.iter().map(|r| r.to_string()).collect();
        assert_eq!(shown, ["0", "0.1%", "1%", "3%"]);
        // What DOCKNET_DROP_RX is given reads back as the same rate.
        for r in &l.0 {
            assert_eq!(::docknet::fault::parse_rate(&r.to_string()), Ok(r.0));
        }
        assert_eq!(LossRate(5).to_string(), "0.0005%");
        assert_eq!(LossRate(125_000).to_string(), "12.5%");
        assert_eq!("0.02".parse::<LossRate>().unwrap(), LossRate(20_000));
        assert_eq!(LossRate(0).nft_expr(), None);
        assert_eq!(
            LossRate(10_000).nft_expr().unwrap(),
            "numgen random mod 1000 < 10 counter drop"
        );
        assert_eq!(
            LossRate(1000).nft_expr().unwrap(),
            "numgen random mod 1000 < 1 counter drop"
        );
        assert_eq!(
            LossRate(30_000).nft_expr().unwrap(),
            "numgen random mod 1000 < 30 counter drop"
        );
        assert_eq!(
            LossRate(1500).nft_expr().unwrap(),
            "numgen random mod 1000000 < 1500 counter drop"
        );
        assert_eq!("1%,1%".parse::<RateList>().unwrap().0.len(), 1);
        for bad in ["", "x", "60%", "1%,", "101%"] {
            if bad == "1%," {
                assert!(bad.parse::<RateList>().is_ok());
                continue;
            }
            assert!(bad.parse::<RateList>().is_err(), "{bad:?}");
        }
        let r = nft_ruleset(LossRate(10_000));
        assert!(r.starts_with("table inet dnbloss {}\ndelete table inet dnbloss\n"));
        assert!(r.contains("type filter hook input priority 0; policy accept;"));
        assert!(r.contains("numgen random mod 1000 < 10 counter drop"));
        assert_eq!(nft_ruleset(LossRate(0)).lines().count(), 2);
        assert_eq!(
            parse_nft_packets(
                "table inet dnbloss {\n chain input {\n numgen random mod 1000 < 10 counter packets 42 bytes 9000 drop\n }\n}"
            ),
            Some(42)
        );
    }

    #[test]
    fn parses_service_reports_and_kernel_counters() {
        let r = parse_retrans(
            "dn-echo: tcp retransmissions: 1 timeouts, 2 fast retransmits, 3 partial-ack resends, 4 lost resends resent, 5 tail probes",
        )
        .unwrap();
        assert_eq!(
            r,
            Retrans {
                timeouts: 1,
                fast: 2,
                partial: 3,
                lost: 4,
                tail: 5
            }
        );
        assert_eq!(r.total(), 15);
        assert_eq!(parse_retrans("dn-echo: listening on 10.0.0.1:7"), None);
        assert_eq!(
            parse_injected(
                "dn-echo: injected loss (DOCKNET_DROP_RX): dropped 12 of 1200 received frames"
            ),
            Some((12, 1200))
        );
        assert_eq!(
            parse_injected("dn-echo: dropped 3 fast-channel frames"),
            None
        );
        let lines = vec![
            "dn-echo: injected loss (DOCKNET_DROP_RX): dropped 2 of 100 received frames".to_string(),
            "dn-echo: tcp retransmissions: 0 timeouts, 2 fast retransmits, 0 partial-ack resends, 0 lost resends resent, 1 tail probes".to_string(),
        ];
        let (r, i) = service_report(&lines);
        assert_eq!((r.total(), r.timeouts, i), (3, 0, Some((2, 100))));
        assert_eq!(service_report(&[]).0, Retrans::default());
        let snmp = "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 1234\nIcmpMsg: InType3\nIcmpMsg: 5\nTcp: RtoAlgorithm RetransSegs\nTcp: 1 17\nTcpExt: TCPTimeouts TCPLossProbes\nTcpExt: 3 4\n";
        let m = parse_proc_counters(snmp);
        assert_eq!(m["Ip.InReceives"], 1234);
        assert_eq!(m["Tcp.RetransSegs"], 17);
        assert_eq!(m["TcpExt.TCPTimeouts"], 3);
        assert_eq!(m["IcmpMsg.InType3"], 5);
        assert_eq!(m.len(), 8);
    }

    fn run(path: LossPath, pm: u32, round: usize, t: Option<f64>) -> RunResult {
        let mut r = RunResult::new(path, LossRate(pm), round);
        r.elapsed_s = t;
        r.timeouts = Some(1);
        r.retransmissions = Some(10);
        r.tail_probes = Some(2);
        r.dropped = Some(5);
        r.received = Some(500);
        if t.is_none() {
            r.error = Some("timed out".into());
        }
        r
    }

    #[test]
    fn cells_table_and_verdict() {
        let rates = [LossRate(0), LossRate(10_000)];
        let paths = [
            LossPath::Kernel,
            LossPath::DocknetFc,
            LossPath::DocknetMaster,
        ];
        let results = vec![
            run(LossPath::Kernel, 0, 1, Some(0.02)),
            run(LossPath::DocknetFc, 0, 1, Some(0.01)),
            run(LossPath::DocknetMaster, 0, 1, Some(0.04)),
            run(LossPath::Kernel, 10_000, 1, Some(0.3)),
            run(LossPath::DocknetFc, 10_000, 1, Some(0.03)),
            run(LossPath::DocknetMaster, 10_000, 1, None),
            run(LossPath::Kernel, 0, 2, Some(0.03)),
            run(LossPath::DocknetFc, 0, 2, Some(0.01)),
        ];
        let c = cells(&results, &rates, &paths);
        assert_eq!(c.len(), 6);
        assert_eq!(c[0].median_s, Some(0.025));
        assert_eq!(c[0].runs, 2);
        assert_eq!(c[0].timeouts, 2);
        assert!((c[1].kernel_over_this.unwrap() - 2.5).abs() < 1e-9);
        assert!((c[2].kernel_over_this.unwrap() - 0.625).abs() < 1e-9);
        assert!((c[4].kernel_over_this.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(c[5].median_s, None);
        assert_eq!(c[5].errors.len(), 1);
        let t = table(&c);
        assert!(t.contains("| 1%"), "{t}");
        assert!(t.contains("10.00×") && t.contains("(baseline)"), "{t}");
        assert!(t.contains("FAILED [1]"), "{t}");
        assert!(
            t.contains("[1] docknet-master at 1%: 1 of 1 runs failed — run 1: timed out"),
            "{t}"
        );
        assert!(t.contains("5 / 500 (1.00%)") && t.contains("1 / 10"), "{t}");
        let v = verdict(&c, &rates, &paths);
        assert!(
            v.contains("docknet-fc: kernel ÷ DockNet 0 2.50× (at least as fast), 1% 10.00×"),
            "{v}"
        );
        assert!(
            v.contains("0 0.62× (**slower**)") && v.contains("1% not measured"),
            "{v}"
        );
        assert!(v.contains("**not met**"), "{v}");
        let ok = verdict(&c[..2], &rates[..1], &paths[..2]);
        assert!(ok.contains("**met**"), "{ok}");
        assert!(verdict(&c, &rates, &paths[1..]).contains("not checked"));
    }
}

//! The `pingpong` benchmark: runs every selected path over every size and
//! writes the table, the plot and the report.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::docknet::{self, Daemon};
use crate::netns::{self, Network};
use crate::proc::{run_with_timeout, ChildGuard};
use crate::report::{self, HostInfo, Row, Skipped};
use crate::sizes::{self, format_size};
use crate::stats::PointResult;
use crate::svg;

/// One benchmarked path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    KernelLo,
    KernelBridge,
    DocknetMaster,
    DocknetFc,
}

impl PathKind {
    pub const ALL: [PathKind; 4] = [
        PathKind::KernelLo,
        PathKind::KernelBridge,
        PathKind::DocknetMaster,
        PathKind::DocknetFc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathKind::KernelLo => "kernel-lo",
            PathKind::KernelBridge => "kernel-bridge",
            PathKind::DocknetMaster => "docknet-master",
            PathKind::DocknetFc => "docknet-fc",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scenario's set of paths, each with a command-line name.
pub trait NamedPath: Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    fn path_name(self) -> &'static str;
}

/// `--paths`: a comma-separated list of path names (of any scenario).
#[derive(Debug, Clone)]
pub struct NamedList<T>(pub Vec<T>);

impl<T: NamedPath> FromStr for NamedList<T> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named_list(s, T::ALL, T::path_name).map(NamedList)
    }
}

impl NamedPath for PathKind {
    const ALL: &'static [Self] = &PathKind::ALL;
    fn path_name(self) -> &'static str {
        self.name()
    }
}

/// `--paths` of `pingpong`.
pub type PathList = NamedList<PathKind>;

/// Parse a comma-separated list of names, each one of `all` (by `name`), without
/// duplicates, in the order given.
fn parse_named_list<T: Copy + PartialEq>(
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<Vec<T>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let k = all
            .iter()
            .copied()
            .find(|&k| name(k) == part)
            .ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|&k| name(k)).collect();
                format!("unknown path {part:?}; choose from {}", names.join(", "))
            })?;
        if !v.contains(&k) {
            v.push(k);
        }
    }
    if v.is_empty() {
        return Err("no paths given".into());
    }
    Ok(v)
}

/// `--sizes`: a comma-separated list of sizes.
#[derive(Debug, Clone)]
pub struct SizeList(pub Vec<usize>);

impl FromStr for SizeList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        sizes::parse_sizes(s).map(SizeList)
    }
}

/// The options every benchmark (`pingpong`, `interhost`) shares.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub sizes: Vec<usize>,
    pub count: Option<usize>,
    pub seconds: f64,
    pub warmup: Option<usize>,
    pub out: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub timeout: Duration,
    /// Client runs per point; the median one is reported.
    pub runs: usize,
    pub keep_run_dir: bool,
    pub command_line: String,
    /// `pipe create --mtu` for the DockNet paths' pipes (`pingpong --pipe-mtu`); `None`:
    /// docknetd's default (65000 without a NIC).
    pub pipe_mtu: Option<u32>,
}

/// Messages in the pilot run that sizes the default count.
pub const PILOT_COUNT: usize = 50;
const PILOT_WARMUP: usize = 5;

/// Measured messages for a point: `--count`, or enough for `--seconds` given
/// the time per round trip seen in the pilot run.
pub fn count_for(a: &BenchArgs, pilot_rtt_s: Option<f64>) -> usize {
    if let Some(c) = a.count {
        return c.max(1);
    }
    match pilot_rtt_s {
        Some(rtt) if rtt > 0.0 && rtt.is_finite() => {
            ((a.seconds / rtt).round() as usize).clamp(100, 1_000_000)
        }
        _ => 2000,
    }
}

/// Warm-up messages: `--warmup`, or count / 20 within 10..=1000.
pub fn warmup_for(a: &BenchArgs, count: usize) -> usize {
    a.warmup.unwrap_or_else(|| (count / 20).clamp(10, 1000))
}

/// Parses a client's stdout: the last line that is a JSON object.
pub fn parse_point(stdout: &str, size: usize) -> Result<PointResult, String> {
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("no JSON line on stdout (got {:?})", stdout.trim()))?;
    let p: PointResult =
        serde_json::from_str(line).map_err(|e| format!("bad JSON line {line:?}: {e}"))?;
    if p.size != size {
        return Err(format!(
            "client reported size {} for a {size}-byte run",
            p.size
        ));
    }
    Ok(p)
}

/// Runs one client process and turns its outcome into a point.
pub(crate) fn run_point(
    name: &str,
    cmd: Command,
    size: usize,
    timeout: Duration,
) -> Result<PointResult, String> {
    let out = run_with_timeout(name, cmd, timeout)?;
    if !out.success {
        return Err(format!(
            "{name}: {}; stderr: {}",
            out.status, out.stderr_tail
        ));
    }
    parse_point(&out.stdout, size).map_err(|e| format!("{name}: {e}"))
}

/// Measures every size with clients made by `client(size, count, warmup)`.
/// `prepare(previous_point_failed)` runs before each point: it checks that the
/// server is alive and may repair state a crashed client left behind; an
/// error fails the point without running it.
pub fn measure(
    a: &BenchArgs,
    path: &str,
    mut client: impl FnMut(usize, usize, usize) -> Command,
    mut prepare: impl FnMut(bool) -> Result<(), String>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut prev_failed = false;
    let name = format!("{path} client");
    for &size in &a.sizes {
        eprint!("  {path:<18} {:>5} B ", format_size(size));
        let t0 = Instant::now();
        let mut point = || -> Result<PointResult, String> {
            prepare(prev_failed)?;
            let pilot_rtt = if a.count.is_none() {
                let p = run_point(
                    &format!("{name} (pilot)"),
                    client(size, PILOT_COUNT, PILOT_WARMUP),
                    size,
                    a.timeout,
                )?;
                Some(p.elapsed_s / p.count.max(1) as f64)
            } else {
                None
            };
            let count = count_for(a, pilot_rtt);
            let warmup = warmup_for(a, count);
            eprint!("× {count} (+{warmup} warm-up) ... ");
            crate::stats::median_of_runs(
                a.runs,
                &name,
                ("Gbit/s", 2),
                |p: &PointResult| p.goodput_gbps,
                |label| run_point(label, client(size, count, warmup), size, a.timeout),
            )
        };
        let outcome = point();
        while crate::cleanup::shutting_down() {
            // The signal thread is cleaning up and will exit the process;
            // don't report the point it just killed.
            std::thread::park();
        }
        match &outcome {
            Ok(p) => eprintln!(
                "p50 {:.1} µs, p99 {:.1} µs, {:.3} Gbit/s [{:.1} s]",
                p.one_way_us_p50,
                p.one_way_us_p99,
                p.goodput_gbps,
                t0.elapsed().as_secs_f64()
            ),
            Err(e) => eprintln!("FAILED: {e}"),
        }
        prev_failed = outcome.is_err();
        rows.push(Row {
            path: path.to_string(),
            size,
            outcome,
        });
    }
    rows
}

/// `dn-echo client` on the pipe in `pipe`: `size`-byte ping-pong with `to`, `count`
/// measured messages after `warmup` more, one JSON result line.
pub(crate) fn dn_echo_client(
    dn_echo: &Path,
    pipe: &Path,
    to: &str,
    size: usize,
    count: usize,
    warmup: usize,
) -> Command {
    let mut c = Command::new(dn_echo);
    c.env("DOCKNET_PIPE", pipe)
        .args(["client", "--to", to])
        .args(["--size", &size.to_string()])
        .args(["--count", &count.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .arg("--json");
    c
}

pub fn self_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot locate own executable: {e}"))
}

/// Adds the kernel client's arguments to `cmd`.
pub fn kernel_client_args(cmd: &mut Command, to: &str, size: usize, count: usize, warmup: usize) {
    cmd.args(["kernel-echo-client", "--to", to])
        .args(["--size", &size.to_string()])
        .args(["--count", &count.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .arg("--json");
}

/// The address in a `listening on ADDR` line.
pub fn listening_addr(line: &str) -> Result<String, String> {
    line.rsplit(' ')
        .next()
        .filter(|s| s.parse::<std::net::SocketAddr>().is_ok())
        .map(str::to_string)
        .ok_or_else(|| format!("cannot parse server address from {line:?}"))
}

fn run_kernel_lo(a: &BenchArgs) -> Result<Vec<Row>, String> {
    let exe = self_exe()?;
    let mut cmd = Command::new(&exe);
    cmd.args(["kernel-echo-server", "--bind", "127.0.0.1:0"]);
    let mut server = ChildGuard::spawn("kernel-lo server", cmd)?;
    let addr = listening_addr(&server.wait_for_line("listening", Duration::from_secs(10))?)?;
    let rows = measure(
        a,
        PathKind::KernelLo.name(),
        |size, count, warmup| {
            let mut c = Command::new(&exe);
            kernel_client_args(&mut c, &addr, size, count, warmup);
            c
        },
        |_| match server.exited() {
            Some(s) => Err(format!("kernel echo server exited ({s})")),
            None => Ok(()),
        },
    );
    Ok(rows)
}

fn run_kernel_bridge(a: &BenchArgs) -> Result<Vec<Row>, String> {
    if let Some(reason) = netns::unavailable_reason() {
        return Err(reason);
    }
    let topo = Network::create(&netns::TopologySpec::pingpong())?;
    eprintln!("  topology: {}", topo.describe());
    let rows = measure_kernel_topology(a, PathKind::KernelBridge.name(), &topo)?;
    drop(topo);
    Ok(rows)
}

/// Kernel TCP across `topo`: our echo server in end b's namespace (port
/// 5201), clients in end a's.
pub fn measure_kernel_topology(
    a: &BenchArgs,
    name: &str,
    topo: &Network,
) -> Result<Vec<Row>, String> {
    let exe = self_exe()?;
    let bind = format!("{}:5201", topo.ip_b);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &topo.end_b.ns]).arg(&exe).args([
        "kernel-echo-server",
        "--bind",
        &bind,
    ]);
    let mut server = ChildGuard::spawn(&format!("{name} server"), cmd)?;
    let addr = listening_addr(&server.wait_for_line("listening", Duration::from_secs(10))?)?;
    let rows = measure(
        a,
        name,
        |size, count, warmup| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &topo.end_a.ns]).arg(&exe);
            kernel_client_args(&mut c, &addr, size, count, warmup);
            c
        },
        |_| match server.exited() {
            Some(s) => Err(format!("kernel echo server exited ({s})")),
            None => Ok(()),
        },
    );
    Ok(rows)
}

/// The daemon, started on first use and shared by both DockNet paths.
struct DaemonSlot {
    bins: Option<Result<docknet::Bins, String>>,
    daemon: Option<Result<Daemon, String>>,
}

impl DaemonSlot {
    fn get(&mut self, a: &BenchArgs) -> Result<&mut Daemon, String> {
        let bins = self
            .bins
            .get_or_insert_with(|| docknet::find_bins(a.bin_dir.as_deref()))
            .clone()?;
        self.daemon
            .get_or_insert_with(|| {
                let run = std::env::temp_dir().join(format!("dnbench-{}", std::process::id()));
                Daemon::start(&bins, run, a.keep_run_dir, Duration::from_secs(15))
            })
            .as_mut()
            .map_err(|e| e.clone())
    }
}

/// Pipes (server, its address, client, its address) a DockNet path uses.
fn docknet_pipes(path: PathKind) -> (&'static str, &'static str, &'static str, &'static str) {
    match path {
        PathKind::DocknetFc => ("c", "10.88.0.4", "d", "10.88.0.5"),
        _ => ("a", "10.88.0.2", "b", "10.88.0.3"),
    }
}

/// One DockNet path: its pipes made, measured, and removed again on every exit (so the
/// next round can make them again).
/// `pipe_mtu` gets the MTU docknetd gave the path's pipes (`pipe ls`), for the report.
fn run_docknet(
    a: &BenchArgs,
    path: PathKind,
    slot: &mut DaemonSlot,
    pipe_mtu: &mut Option<u64>,
) -> Result<Vec<Row>, String> {
    let d = slot.get(a)?;
    let result = measure_docknet(a, path, d, pipe_mtu);
    let (srv, _, cli, _) = docknet_pipes(path);
    let mut teardown = vec![vec!["pipe", "rm", cli], vec!["pipe", "rm", srv]];
    if path == PathKind::DocknetFc {
        teardown.insert(0, vec!["fc", "rm", srv, cli]);
    }
    for args in teardown {
        if let Err(e) = d.ctl(&args) {
            // After a failed set-up some of these were never made.
            if result.is_ok() {
                log::warn!("{path}: docknetctl {}: {e}", args.join(" "));
            } else {
                log::debug!("{path}: docknetctl {}: {e}", args.join(" "));
            }
        }
    }
    result
}

/// `docknetctl pipe create NAME --ip IP/16 [--mtu M]`.
fn create_pipe(a: &BenchArgs, d: &Daemon, name: &str, ip: &str) -> Result<(), String> {
    let cidr = format!("{ip}/16");
    let mtu = a.pipe_mtu.map(|m| m.to_string());
    let mut args = vec!["pipe", "create", name, "--ip", &cidr];
    if let Some(m) = &mtu {
        args.extend(["--mtu", m]);
    }
    d.ctl(&args).map(|_| ())
}

/// The IP MTU docknetd lists for pipe `name`.
fn listed_pipe_mtu(d: &Daemon, name: &str) -> Result<u64, String> {
    let out = d.ctl(&["pipe", "ls", "--json"])?;
    let pipes: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("pipe ls --json: {e}: {out}"))?;
    pipes
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .and_then(|p| p["mtu"].as_u64())
        .ok_or_else(|| format!("pipe ls --json lists no MTU for pipe {name}: {out}"))
}

fn measure_docknet(
    a: &BenchArgs,
    path: PathKind,
    d: &mut Daemon,
    pipe_mtu: &mut Option<u64>,
) -> Result<Vec<Row>, String> {
    let (srv, srv_ip, cli, cli_ip) = docknet_pipes(path);
    create_pipe(a, d, srv, srv_ip)?;
    create_pipe(a, d, cli, cli_ip)?;
    *pipe_mtu = Some(listed_pipe_mtu(d, srv)?);
    if path == PathKind::DocknetFc {
        d.ctl(&["fc", "create", srv, cli])?;
    }
    let mut cmd = Command::new(&d.bins.dn_echo);
    cmd.env("DOCKNET_PIPE", d.pipe_dir(srv))
        .args(["server", "--port", "7"]);
    let mut server = ChildGuard::spawn(&format!("{path} dn-echo server"), cmd)?;
    server
        .wait_for_line("listening", Duration::from_secs(15))
        .map_err(|e| format!("{e}; docknetd stderr: {}", d.stderr_tail()))?;
    let to = format!("{srv_ip}:7");
    let dn_echo = d.bins.dn_echo.clone();
    let cli_pipe = d.pipe_dir(cli);
    let rows = measure(
        a,
        path.name(),
        |size, count, warmup| dn_echo_client(&dn_echo, &cli_pipe, &to, size, count, warmup),
        |prev_failed| {
            if let Some(s) = server.exited() {
                return Err(format!(
                    "dn-echo server exited ({s}); stderr: {}",
                    server.stderr_tail.digest()
                ));
            }
            if let Some(s) = d.exited() {
                return Err(format!(
                    "docknetd exited ({s}); stderr: {}",
                    d.stderr_tail()
                ));
            }
            if prev_failed {
                // A client that crashed may leave frames behind: start on a fresh pipe.
                log::debug!("re-creating pipe {cli} after a failed client");
                if path == PathKind::DocknetFc {
                    let _ = d.ctl(&["fc", "rm", srv, cli]);
                }
                d.ctl(&["pipe", "rm", cli])?;
                create_pipe(a, d, cli, cli_ip)?;
                if path == PathKind::DocknetFc {
                    d.ctl(&["fc", "create", srv, cli])?;
                }
            }
            Ok(())
        },
    );
    // The server goes before its pipe.
    drop(server);
    Ok(rows)
}

/// What a path's run in round `round` adds: its rows; if it could not run at all, in the
/// first round `Err` (the path is skipped, with this reason), in a later one a failed
/// row for each of `sizes` (the path was measured before, so its points report it).
fn round_rows(
    round: usize,
    path: &str,
    sizes: &[usize],
    ran: Result<Vec<Row>, String>,
) -> Result<Vec<Row>, String> {
    match ran {
        Ok(v) => Ok(v),
        Err(reason) if round == 1 => Err(reason),
        Err(reason) => {
            eprintln!("  {path} failed in round {round}: {reason}");
            Ok(sizes
                .iter()
                .map(|&size| Row {
                    path: path.into(),
                    size,
                    outcome: Err(format!("round {round}: {reason}")),
                })
                .collect())
        }
    }
}

/// Issue 10's bulk targets: at 200 KB the fast channel moves at least 3× and the master
/// path at least 1.5× the kernel bridge's goodput. Decided on the median of the rounds'
/// own ratios: each round runs the bridge and DockNet within seconds of each other, so a
/// slow phase of a shared machine that spans a round cancels out (the ratios section,
/// beside it, divides the medians). A point that failed in any round is not met, as its
/// row is FAILED. `None` unless the bridge and a DockNet path were run at 200 KB.
fn bulk_targets_section(rounds: &[Vec<Row>]) -> Option<String> {
    const SIZE: usize = 200 * 1024;
    const BASE: &str = "kernel-bridge";
    /// `path`'s 200 KB point in one round.
    fn point<'r>(round: &'r [Row], path: &str) -> Option<&'r Result<PointResult, String>> {
        round
            .iter()
            .find(|r| r.path == path && r.size == SIZE)
            .map(|r| &r.outcome)
    }
    let ran = |path: &str| rounds.iter().any(|round| point(round, path).is_some());
    // The first round whose 200 KB point of `path` failed, and why.
    let failed = |path: &str| {
        rounds.iter().enumerate().find_map(|(i, round)| {
            let e = point(round, path)?.as_ref().err()?;
            // A path that failed as a whole in a later round says so already.
            Some(if e.starts_with("round ") {
                e.clone()
            } else {
                format!("round {}: {e}", i + 1)
            })
        })
    };
    let goodput =
        |round: &[Row], path: &str| point(round, path)?.as_ref().ok().map(|p| p.goodput_gbps);
    if !ran(BASE) {
        return None;
    }
    // Rounded down, so a ratio shown as 1.50× has met the target.
    let times = |x: f64| format!("{:.2}×", (x * 100.0).floor() / 100.0);
    let mut s = String::new();
    for (path, target) in [("docknet-fc", 3.0), ("docknet-master", 1.5)] {
        if !ran(path) {
            continue;
        }
        if let Some(e) = failed(path) {
            s += &format!("- {path} at 200 KB: its point failed ({e}): **not met**\n");
            continue;
        }
        if let Some(e) = failed(BASE) {
            s += &format!("- {path} at 200 KB: {BASE}'s point failed ({e}): **not decided**\n");
            continue;
        }
        let ratios: Vec<f64> = rounds
            .iter()
            .filter_map(|round| {
                let base = goodput(round, BASE).filter(|&g| g > 0.0)?;
                Some(goodput(round, path)? / base)
            })
            .collect();
        match crate::stats::median(&ratios) {
            Some(m) => {
                let each: Vec<String> = ratios.iter().map(|&x| times(x)).collect();
                s += &format!(
                    "- {path} at 200 KB, goodput ÷ {BASE}'s, per round {} = median **{}** (target ≥ {target}×): {}\n",
                    each.join(", "),
                    times(m),
                    if m >= target { "met" } else { "**not met**" }
                );
            }
            None => {
                s += &format!(
                    "- {path} at 200 KB: no round measured both it and {BASE}: **not met**\n"
                );
            }
        }
    }
    (!s.is_empty()).then(|| {
        s + "- 1 KB latency against the issue's starting commit: not decided here (it needs \
           that commit's build: the same command with `--bin-dir`, in the same sitting)\n"
    })
}

/// One row per (path, size) out of the rounds' rows: the run of median goodput, or the
/// first failure (naming the goodputs of the runs that worked). Rows keep the first
/// round's order.
fn median_rows(rounds: Vec<Vec<Row>>) -> Vec<Row> {
    let n = rounds.len();
    let mut points: Vec<(String, usize, Vec<PointResult>, Option<String>)> = Vec::new();
    for row in rounds.into_iter().flatten() {
        let i = match points
            .iter()
            .position(|(p, s, ..)| *p == row.path && *s == row.size)
        {
            Some(i) => i,
            None => {
                points.push((row.path.clone(), row.size, Vec::new(), None));
                points.len() - 1
            }
        };
        let (_, _, ok, failed) = &mut points[i];
        match row.outcome {
            Ok(p) => ok.push(p),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    points
        .into_iter()
        .map(|(path, size, ok, failed)| {
            let rates = crate::stats::keys_of(&ok, |p| p.goodput_gbps, 2);
            if n > 1 && !ok.is_empty() {
                eprintln!(
                    "  {path:<18} {:>5} B: runs {rates} Gbit/s",
                    format_size(size)
                );
            }
            let outcome = match failed {
                Some(e) if ok.is_empty() => Err(e),
                Some(e) => Err(format!("{e} (other runs: {rates} Gbit/s)")),
                None if ok.is_empty() => Err("no run".into()),
                None => Ok(crate::stats::median_run_by(ok, |p| p.goodput_gbps)),
            };
            Row {
                path,
                size,
                outcome,
            }
        })
        .collect()
}

/// Checks `--seconds` and prints the run's header line on stderr.
pub fn announce(a: &BenchArgs, bench: &str, paths: &[&str]) -> Result<(), String> {
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err(format!(
            "--seconds must be a positive number, not {}",
            a.seconds
        ));
    }
    let sizes: Vec<String> = a.sizes.iter().map(|&s| format_size(s)).collect();
    let count = match a.count {
        Some(c) => format!("{c} messages per size"),
        None => format!(
            "~{} s per size (count from a {PILOT_COUNT}-message pilot)",
            a.seconds
        ),
    };
    eprintln!(
        "{bench}: paths {}; sizes {}; {count}",
        paths.join(","),
        sizes.join(",")
    );
    Ok(())
}

/// What differs between the benchmarks' outputs.
pub struct OutputSpec<'a> {
    /// File stem: `pingpong` -> pingpong.svg/.md/.json.
    pub stem: &'a str,
    /// Markdown title and plot title.
    pub title: &'a str,
    pub plot_title: &'a str,
    /// Plot subtitle prefix (what was measured).
    pub what: &'a str,
    /// Markdown paragraph describing the paths.
    pub paths_text: &'a str,
    /// Ratio baselines, first measured one wins.
    pub baselines: &'a [&'a str],
    /// Extra markdown (and stdout) section appended after the ratios.
    pub extra: Option<(String, String)>,
    /// Extra fields for the JSON file.
    pub json_extra: serde_json::Value,
}

/// Prints the table and ratios on stdout and writes OUT/STEM.svg, .md, .json.
pub fn write_outputs(
    a: &BenchArgs,
    spec: &OutputSpec,
    host: &HostInfo,
    rows: &[Row],
    skipped: &[Skipped],
    order: &[String],
) -> Result<(), String> {
    let table = report::results_table(rows);
    println!("\n{table}");
    println!(
        "Ratios\n\n{}",
        report::ratios_section(rows, order, spec.baselines)
    );
    if let Some((heading, body)) = &spec.extra {
        println!("{heading}\n\n{body}");
    }
    for k in skipped {
        println!("skipped {}: {}", k.path, k.reason);
    }

    let md = report::markdown(&report::Report {
        title: spec.title,
        paths_text: spec.paths_text,
        svg_name: &format!("{}.svg", spec.stem),
        baselines: spec.baselines,
        extra: spec.extra.as_ref().map(|(h, b)| (h.as_str(), b.as_str())),
        command: a.command_line.clone(),
        host,
        rows,
        skipped,
        path_order: order,
    });
    let series: Vec<svg::Series> = order
        .iter()
        .filter(|p| rows.iter().any(|r| &r.path == *p))
        .map(|p| svg::Series {
            name: p.clone(),
            points: rows
                .iter()
                .filter(|r| &r.path == p)
                .filter_map(|r| r.outcome.as_ref().ok())
                .map(|o| svg::SeriesPoint {
                    x: o.size,
                    y: [o.goodput_gbps, o.one_way_us_p50],
                })
                .collect(),
        })
        .collect();
    let subtitle = format!(
        "{} · {} ({} CPUs) · Linux {} · {}",
        spec.what, host.cpu, host.ncpu, host.kernel, host.date_utc
    );
    let svg_text = svg::render(&series, spec.plot_title, &subtitle, &svg::PINGPONG_LABELS);
    let mut json = serde_json::json!({
        "command": a.command_line,
        "date": host.date_utc,
        "kernel": host.kernel,
        "cpu": host.cpu,
        "skipped": skipped.iter().map(|k| serde_json::json!({"path": k.path, "reason": k.reason})).collect::<Vec<_>>(),
        "results": rows.iter().map(|r| match &r.outcome {
            Ok(p) => serde_json::json!({"path": r.path, "size": r.size, "result": p}),
            Err(e) => serde_json::json!({"path": r.path, "size": r.size, "error": e}),
        }).collect::<Vec<_>>(),
    });
    if let (Some(obj), serde_json::Value::Object(extra)) =
        (json.as_object_mut(), spec.json_extra.clone())
    {
        obj.extend(extra);
    }
    crate::report::write_files(&a.out, spec.stem, svg_text, md, &json)
}

/// Runs the benchmark and writes the outputs. With `--runs N` the paths go in N rounds
/// (every path and size once, then again), and each point reports its median run: the
/// baseline and the DockNet paths are then measured across the same phases of a shared
/// machine, rather than the kernel's minute against DockNet's next one.
pub fn run(a: &BenchArgs, paths: &[PathKind]) -> Result<(), String> {
    let names: Vec<&str> = paths.iter().map(|p| p.name()).collect();
    announce(a, "pingpong", &names)?;
    let host = HostInfo::collect();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut slot = DaemonSlot {
        bins: None,
        daemon: None,
    };
    let rounds = a.runs.max(1);
    let mut runs: Vec<Vec<Row>> = Vec::new();
    let mut pipe_mtu = None;
    // Points that failed in a round: not run again (they report that failure).
    let mut failed: Vec<(String, usize)> = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            eprintln!("round {round} of {rounds}");
        }
        let mut rows = Vec::new();
        for (i, &path) in paths.iter().enumerate() {
            if skipped.iter().any(|k| k.path == path.name()) {
                continue;
            }
            let sizes: Vec<usize> = a
                .sizes
                .iter()
                .copied()
                .filter(|&z| !failed.contains(&(path.name().to_string(), z)))
                .collect();
            if sizes.is_empty() {
                continue;
            }
            // One run per point here: the rounds are the runs.
            let this = BenchArgs {
                sizes: sizes.clone(),
                runs: 1,
                ..a.clone()
            };
            eprintln!("[{}/{}] {path}", i + 1, paths.len());
            let r = match path {
                PathKind::KernelLo => run_kernel_lo(&this),
                PathKind::KernelBridge => run_kernel_bridge(&this),
                PathKind::DocknetMaster | PathKind::DocknetFc => {
                    run_docknet(&this, path, &mut slot, &mut pipe_mtu)
                }
            };
            let v = match round_rows(round, path.name(), &sizes, r) {
                Ok(v) => v,
                Err(reason) => {
                    eprintln!("  skipping {path}: {reason}");
                    skipped.push(Skipped {
                        path: path.name().into(),
                        reason,
                    });
                    continue;
                }
            };
            for row in &v {
                if row.outcome.is_err() {
                    failed.push((row.path.clone(), row.size));
                }
            }
            rows.extend(v);
        }
        runs.push(rows);
    }
    drop(slot);
    let targets = bulk_targets_section(&runs);
    let rows = median_rows(runs);

    let order: Vec<String> = names.iter().map(|p| p.to_string()).collect();
    let pipes = match (a.pipe_mtu, pipe_mtu) {
        (Some(m), _) => format!("pipes of IP MTU {m} (`pipe create --mtu {m}`)"),
        (None, Some(m)) => format!("pipes of docknetd's default IP MTU, {m}"),
        (None, None) => "none made".to_string(),
    };
    let paths_text = format!(
        "Paths: `kernel-lo` = kernel TCP over 127.0.0.1; `kernel-bridge` = kernel TCP \
between two network namespaces joined by veth pairs to a Linux bridge; `docknet-master` = \
DockNet, frames switched by `docknetd`; `docknet-fc` = DockNet over a fast channel (its \
own IP MTU, 65000). DockNet paths: {pipes}."
    );
    let spec = OutputSpec {
        stem: "pingpong",
        title: "TCP ping-pong: kernel vs DockNet",
        plot_title: "Kernel TCP vs DockNet: goodput and one-way latency",
        what: "TCP ping-pong, one connection, message echoed back",
        paths_text: &paths_text,
        baselines: &["kernel-bridge", "kernel-lo"],
        extra: targets.map(|t| ("Targets (issue 10)".to_string(), t)),
        json_extra: serde_json::json!({ "pipe_mtu": pipe_mtu }),
    };
    write_outputs(a, &spec, &host, &rows, &skipped, &order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BenchArgs {
        BenchArgs {
            sizes: vec![64],
            count: None,
            seconds: 1.0,
            warmup: None,
            out: PathBuf::from("/nonexistent"),
            bin_dir: None,
            timeout: Duration::from_secs(1),
            runs: 1,
            keep_run_dir: false,
            command_line: String::new(),
            pipe_mtu: None,
        }
    }

    #[test]
    fn a_path_failing_in_a_later_round_fails_its_points() {
        assert_eq!(
            round_rows(1, "p", &[64], Err("no netns".into())).unwrap_err(),
            "no netns"
        );
        let rows = round_rows(2, "p", &[64, 1024], Err("pipe exists".into())).unwrap();
        assert_eq!(rows.len(), 2);
        for (r, size) in rows.iter().zip([64, 1024]) {
            assert_eq!((r.path.as_str(), r.size), ("p", size));
            assert_eq!(r.outcome.as_ref().unwrap_err(), "round 2: pipe exists");
        }
        // With the first round's good run, the point reports the failure.
        let good = Row {
            path: "p".into(),
            size: 64,
            outcome: Ok(PointResult {
                size: 64,
                count: 1,
                rtt_us_p50: 1.0,
                rtt_us_p99: 1.0,
                one_way_us_p50: 0.5,
                one_way_us_p99: 0.5,
                goodput_gbps: 1.0,
                elapsed_s: 1.0,
            }),
        };
        let merged = median_rows(vec![vec![good], rows]);
        let e = merged[0].outcome.as_ref().unwrap_err();
        assert!(
            e.starts_with("round 2: pipe exists (other runs: 1.00"),
            "{e}"
        );
    }

    #[test]
    fn rounds_give_each_point_its_median_run() {
        let point = |gbps: f64| PointResult {
            size: 1024,
            count: 1,
            rtt_us_p50: 1.0,
            rtt_us_p99: 1.0,
            one_way_us_p50: 0.5,
            one_way_us_p99: 0.5,
            goodput_gbps: gbps,
            elapsed_s: 1.0,
        };
        let row = |path: &str, outcome: Result<PointResult, String>| Row {
            path: path.into(),
            size: 1024,
            outcome,
        };
        let rounds = vec![
            vec![row("k", Ok(point(1.0))), row("d", Ok(point(5.0)))],
            vec![row("k", Ok(point(3.0))), row("d", Err("crashed".into()))],
            vec![row("k", Ok(point(2.0))), row("d", Ok(point(6.0)))],
        ];
        let rows = median_rows(rounds);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].path, "k");
        assert_eq!(rows[0].outcome.as_ref().unwrap().goodput_gbps, 2.0);
        let e = rows[1].outcome.as_ref().unwrap_err();
        assert!(
            e.starts_with("crashed (other runs: 5.00 6.00 Gbit/s)"),
            "{e}"
        );
        // One round: the rows as they are.
        let one = median_rows(vec![vec![row("k", Ok(point(1.5)))]]);
        assert_eq!(one[0].outcome.as_ref().unwrap().goodput_gbps, 1.5);
    }

    #[test]
    fn bulk_targets_pair_the_runs_of_each_round() {
        let row = |path: &str, size: usize, gbps: Option<f64>| Row {
            path: path.into(),
            size,
            outcome: gbps
                .map(|goodput_gbps| PointResult {
                    size,
                    count: 1,
                    rtt_us_p50: 1.0,
                    rtt_us_p99: 1.0,
                    one_way_us_p50: 0.5,
                    one_way_us_p99: 0.5,
                    goodput_gbps,
                    elapsed_s: 1.0,
                })
                .ok_or_else(|| "crashed".to_string()),
        };
        let k = 200 * 1024;
        let round = |bridge: f64, fc: Option<f64>, master: f64| {
            vec![
                row("kernel-bridge", 1024, Some(0.1)),
                row("kernel-bridge", k, Some(bridge)),
                row("docknet-master", k, Some(master)),
                row("docknet-fc", k, fc),
            ]
        };
        // A slow round (the second) slows the bridge and DockNet alike.
        let rounds = vec![
            round(10.0, Some(40.0), 16.0),
            round(5.0, Some(20.0), 7.4),
            round(10.0, Some(30.0), 14.0),
        ];
        let s = bulk_targets_section(&rounds).unwrap();
        assert!(
            s.contains("- docknet-fc at 200 KB, goodput ÷ kernel-bridge's, per round 4.00×, 4.00×, 3.00× = median **4.00×** (target ≥ 3×): met"),
            "{s}"
        );
        assert!(
            s.contains(
                "per round 1.60×, 1.48×, 1.40× = median **1.48×** (target ≥ 1.5×): **not met**"
            ),
            "{s}"
        );
        assert!(s.contains("not decided here"), "{s}");
        // The fast channel's third run failed: its point is FAILED, so not met, whatever
        // the other rounds say.
        let rounds = vec![
            round(10.0, Some(40.0), 16.0),
            round(10.0, Some(40.0), 16.0),
            round(10.0, None, 16.0),
        ];
        let s = bulk_targets_section(&rounds).unwrap();
        assert!(
            s.contains("- docknet-fc at 200 KB: its point failed (round 3: crashed): **not met**"),
            "{s}"
        );
        assert!(s.contains("median **1.60×** (target ≥ 1.5×): met"), "{s}");
        // A path that failed as a whole in a later round is named once.
        let mut later = round(10.0, Some(40.0), 16.0);
        later[3].outcome = Err("round 2: pipe exists".into());
        let s = bulk_targets_section(&[round(10.0, Some(40.0), 16.0), later]).unwrap();
        assert!(s.contains("its point failed (round 2: pipe exists)"), "{s}");
        // The bridge failed: nothing to compare with.
        let mut broken = round(10.0, Some(40.0), 16.0);
        broken[1].outcome = Err("no netns".into());
        let s = bulk_targets_section(&[round(10.0, Some(40.0), 16.0), broken]).unwrap();
        assert!(
            s.contains("- docknet-master at 200 KB: kernel-bridge's point failed (round 2: no netns): **not decided**"),
            "{s}"
        );
        // A DockNet run that moved nothing counts as 0×.
        let s = bulk_targets_section(&[round(10.0, Some(0.0), 16.0)]).unwrap();
        assert!(s.contains("per round 0.00× = median **0.00×**"), "{s}");
        // Without the bridge there is nothing to decide; without DockNet nothing to say.
        assert!(bulk_targets_section(&[vec![row("docknet-fc", k, Some(4.0))]]).is_none());
        assert!(bulk_targets_section(&[vec![row("kernel-bridge", k, Some(1.0))]]).is_none());
    }

    #[test]
    fn counts_follow_pilot_or_flags() {
        let a = args();
        // 20 µs per round trip, 1 s budget -> 50000 messages, 1000 warm-up (capped).
        assert_eq!(count_for(&a, Some(20e-6)), 50_000);
        assert_eq!(warmup_for(&a, 50_000), 1000);
        // Slow path: clamped to at least 100 messages.
        assert_eq!(count_for(&a, Some(0.5)), 100);
        assert_eq!(warmup_for(&a, 100), 10);
        // Absurdly fast: capped.
        assert_eq!(count_for(&a, Some(1e-9)), 1_000_000);
        assert_eq!(count_for(&a, Some(0.0)), 2000);
        assert_eq!(count_for(&a, None), 2000);
        let a = BenchArgs {
            count: Some(5),
            warmup: Some(0),
            ..args()
        };
        assert_eq!(count_for(&a, Some(20e-6)), 5);
        assert_eq!(warmup_for(&a, 5), 0);
    }

    #[test]
    fn parses_client_output() {
        let out = "noise\n{\"size\":64,\"count\":2,\"rtt_us_p50\":1.0,\"rtt_us_p99\":2.0,\"one_way_us_p50\":0.5,\"one_way_us_p99\":1.0,\"goodput_gbps\":0.1,\"elapsed_s\":0.001}\n";
        assert_eq!(parse_point(out, 64).unwrap().count, 2);
        assert!(parse_point(out, 65).is_err());
        assert!(parse_point("nothing", 64).is_err());
        assert!(parse_point("{bad", 64).is_err());
    }

    #[test]
    fn parses_paths_and_listen_lines() {
        assert!("kernel-lo,,kernel-lo".parse::<PathList>().unwrap().0 == vec![PathKind::KernelLo]);
        assert!("".parse::<PathList>().is_err());
        assert_eq!(
            listening_addr("listening on 127.0.0.1:4242").unwrap(),
            "127.0.0.1:4242"
        );
        assert!(listening_addr("listening").is_err());
    }
}

//! Clusters run by docknetd (`docknetctl cluster up`), as the `nat` and `cluster`
//! benchmarks use them, and the `cluster` benchmark itself: requests/s of a web cluster
//! (`dn-httpd --work-us 10` members behind `dn-nat`) with 1, 2, 3, 4 members, the paper's
//! scaling figure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use docknet_master::cluster::ClusterStatus;
use docknet_master::control::Request;
use serde::Serialize;

use crate::cleanup::{self, Resource};
use crate::cpu::{self, Breakdown, Watched};
use crate::docknet::{self, Daemon};
use crate::httpd::{self, HttpPoint};
use crate::report::{markdown_table, HostInfo};
use crate::svg;

/// What a cluster file says (the keys the benchmarks set; the rest keep their defaults).
#[derive(Debug, Clone)]
pub struct ClusterFile {
    pub name: String,
    /// `A.B.C.D:PORT`.
    pub vip: String,
    pub replicas: usize,
    pub policy: String,
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub subnet: String,
    /// An inline TOML table, e.g. `{ kind = "tcp", interval_ms = 200 }`.
    pub health: String,
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o += "\\\"",
            '\\' => o += "\\\\",
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl ClusterFile {
    /// The file `docknetctl cluster up` reads.
    pub fn to_toml(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|a| toml_str(a)).collect();
        format!(
            "name = {}\nvip = {}\nreplicas = {}\npolicy = {}\nbinary = {}\nargs = [{}]\nsubnet = {}\nhealth = {}\n",
            toml_str(&self.name),
            toml_str(&self.vip),
            self.replicas,
            toml_str(&self.policy),
            toml_str(&self.binary.to_string_lossy()),
            args.join(", "),
            toml_str(&self.subnet),
            self.health
        )
    }
}

/// A cluster brought up on a bench's docknetd; `cluster down` on drop (and on a signal).
pub struct ClusterGuard {
    pub name: String,
    docknetctl: PathBuf,
    run: PathBuf,
    sock: PathBuf,
    id: u64,
    /// What ran, for the report.
    pub up_command: String,
}

impl ClusterGuard {
    /// Writes `f` to `dir/NAME.toml` and runs `docknetctl cluster up` on it (waits until
    /// the NAT and every member are healthy, at most 30 s).
    pub fn up(d: &Daemon, dir: &Path, f: &ClusterFile) -> Result<ClusterGuard, String> {
        let path = dir.join(format!("{}.toml", f.name));
        std::fs::write(&path, f.to_toml())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        // Registered first: a cluster not ready in time is left up by docknetd.
        let id = cleanup::register(Resource::Cluster {
            docknetctl: d.bins.docknetctl.clone(),
            run: d.run.path.clone(),
            name: f.name.clone(),
        });
        let g = ClusterGuard {
            name: f.name.clone(),
            docknetctl: d.bins.docknetctl.clone(),
            run: d.run.path.clone(),
            sock: d.socket_path(),
            id,
            up_command: format!("docknetctl cluster up {}", path.display()),
        };
        let p = path.to_string_lossy();
        d.ctl_timeout(
            &["cluster", "up", &p, "--timeout-s", "30"],
            Duration::from_secs(60),
        )
        .map_err(|e| format!("{e}; docknetd: {}", d.stderr_tail()))?;
        Ok(g)
    }

    /// `cluster status NAME`.
    pub fn status(&self) -> Result<ClusterStatus, String> {
        let v = docknet::request_at(
            &self.sock,
            &Request::ClusterStatus {
                name: self.name.clone(),
            },
        )?;
        serde_json::from_value(v).map_err(|e| format!("cluster status {}: {e}", self.name))
    }

    /// The NAT's and the members' processes, for [`cpu::Sampler`].
    pub fn watched(&self) -> Result<Vec<Watched>, String> {
        let s = self.status()?;
        Ok(std::iter::once(Watched::one("dn-nat", s.nat.pid))
            .chain(s.members.iter().map(|m| Watched::one(&m.name, m.pid)))
            .filter(|w| w.pid != 0)
            .collect())
    }

    /// `Err` if the NAT or a member is not running, or was restarted.
    pub fn check(&self) -> Result<(), String> {
        let s = self.status()?;
        for m in std::iter::once(&s.nat).chain(&s.members) {
            if m.state != "running" || m.restarts > 0 {
                return Err(format!(
                    "cluster {}: {} is {} ({} restarts)",
                    self.name, m.name, m.state, m.restarts
                ));
            }
        }
        Ok(())
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        cleanup::unregister(self.id);
        match cleanup::stop_cluster(&self.docknetctl, &self.run, &self.name) {
            Ok(()) => log::debug!("cluster {} down", self.name),
            Err(e) => log::warn!("{e}"),
        }
    }
}

/// `--cores`: CPU numbers, `0,1` or `0-3,6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

impl FromStr for CoreList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let num = |x: &str| {
                x.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n < 4096)
                    .ok_or_else(|| format!("bad CPU number {x:?}"))
            };
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if a > b {
                return Err(format!("bad CPU range {part:?}"));
            }
            for c in a..=b {
                if !v.contains(&c) {
                    v.push(c);
                }
            }
        }
        if v.is_empty() {
            return Err("no CPUs given".into());
        }
        Ok(CoreList(v))
    }
}

impl CoreList {
    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Where each process goes: the load generator on the first core of the list, the NAT on
/// the second, member i on the (2 + i)-th, wrapping around the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub loadgen: usize,
    pub nat: usize,
    pub members: Vec<usize>,
}

pub fn placement(cores: &[usize], members: usize) -> Placement {
    let at = |i: usize| cores[i % cores.len()];
    Placement {
        loadgen: at(0),
        nat: at(1),
        members: (0..members).map(|i| at(2 + i)).collect(),
    }
}

/// `taskset -a -p -c CORES PID` (every thread of a running process).
pub fn pin(pid: u32, cores: &str) -> Result<(), String> {
    crate::proc::run_checked(&["taskset", "-a", "-p", "-c", cores, &pid.to_string()])
}

/// The paper's web-cluster scaling (requests/s with N members / with 1).
pub const PAPER_SCALING: [(usize, f64); 4] = [(1, 1.0), (2, 1.92), (3, 2.61), (4, 3.46)];

pub fn paper_scaling(members: usize) -> Option<f64> {
    PAPER_SCALING
        .iter()
        .find(|(n, _)| *n == members)
        .map(|(_, x)| *x)
}

/// Options of `docknet-bench cluster`.
#[derive(Debug, Clone)]
pub struct ClusterArgs {
    pub members: Vec<usize>,
    pub rounds: usize,
    pub conns: usize,
    pub seconds: u64,
    pub warmup_s: u64,
    pub work_us: u64,
    pub policy: String,
    pub cores: Option<CoreList>,
    pub out: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub httpd_bin: Option<PathBuf>,
    pub src: PathBuf,
    pub keep_run_dir: bool,
    pub command_line: String,
}

/// One member count.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRow {
    pub members: usize,
    /// The run with the median requests/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<HttpPoint>,
    /// Every completed run's requests/s, round by round.
    pub rps_each: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per member: (name, connections, share of the bytes) during the measured run.
    pub spread: Vec<(String, u64, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Breakdown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

const VIP: &str = "10.89.0.100";
const LOADGEN_IP: &str = "10.89.0.50";
const SUBNET: &str = "10.89.1.0/24";

/// Members' (connections, bytes) by name, from a status.
fn member_counts(s: &ClusterStatus) -> Vec<(String, u64, u64)> {
    s.members
        .iter()
        .map(|m| (m.name.clone(), m.connections, m.bytes))
        .collect()
}

/// What each member got between two readings: (name, connections, share of the bytes).
pub fn spread(
    before: &[(String, u64, u64)],
    after: &[(String, u64, u64)],
) -> Vec<(String, u64, f64)> {
    let d: Vec<(String, u64, u64)> = after
        .iter()
        .map(|(n, c, b)| {
            let (c0, b0) = before
                .iter()
                .find(|x| &x.0 == n)
                .map_or((0, 0), |x| (x.1, x.2));
            (n.clone(), c.saturating_sub(c0), b.saturating_sub(b0))
        })
        .collect();
    let total: u64 = d.iter().map(|x| x.2).sum();
    d.into_iter()
        .map(|(n, c, b)| {
            let share = if total > 0 {
                b as f64 / total as f64
            } else {
                0.0
            };
            (n, c, share)
        })
        .collect()
}

fn loadgen_cmd(
    loadgen: &Path,
    pipe: &Path,
    url: &str,
    conns: usize,
    secs: u64,
    core: Option<usize>,
) -> Command {
    let mut c = match core {
        Some(k) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &k.to_string()]).arg(loadgen);
            c
        }
        None => Command::new(loadgen),
    };
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

/// One measured run of one member count.
#[derive(Debug, Clone)]
struct ClusterRun {
    point: HttpPoint,
    spread: Vec<(String, u64, f64)>,
    cpu: Breakdown,
}

/// What a point needs besides the options.
struct Ctx<'a> {
    a: &'a ClusterArgs,
    loadgen: &'a Path,
    httpd_bin: &'a Path,
    files: &'a Path,
    url: String,
}

impl Ctx<'_> {
    fn file(&self, n: usize) -> ClusterFile {
        ClusterFile {
            name: "web".into(),
            vip: format!("{VIP}:80"),
            replicas: n,
            policy: self.a.policy.clone(),
            binary: self.httpd_bin.to_path_buf(),
            args: vec![
                "--port".into(),
                "80".into(),
                "--backlog".into(),
                "512".into(),
                "--work-us".into(),
                self.a.work_us.to_string(),
            ],
            subnet: SUBNET.into(),
            health: r#"{ kind = "http", path = "/", interval_ms = 200 }"#.into(),
        }
    }

    /// `cluster up` with `n` members, the fast channel, pinning, a warm-up run, the
    /// measured run, `cluster down`.
    fn point(
        &self,
        d: &mut Daemon,
        n: usize,
        placement: Option<&Placement>,
    ) -> Result<ClusterRun, String> {
        let a = self.a;
        let c = ClusterGuard::up(d, self.files, &self.file(n))?;
        let r = (|| {
            d.ctl(&["fc", "create", "lg", "web"])?;
            let st = c.status()?;
            if let Some(p) = placement {
                pin(st.nat.pid, &p.nat.to_string())?;
                for (m, core) in st.members.iter().zip(&p.members) {
                    pin(m.pid, &core.to_string())?;
                }
            }
            let core = placement.map(|p| p.loadgen);
            let pipe = d.pipe_dir("lg");
            let timeout = Duration::from_secs(a.seconds + a.warmup_s + 60);
            if a.warmup_s > 0 {
                httpd::run_client(
                    "dn-loadgen (warm-up)",
                    loadgen_cmd(self.loadgen, &pipe, &self.url, a.conns, a.warmup_s, core),
                    timeout,
                    httpd::parse_loadgen,
                )?;
            }
            let mut watched = vec![Watched::one("docknetd", d.pid())];
            watched.extend(c.watched()?);
            let before = member_counts(&c.status()?);
            let sampler = cpu::Sampler::start(watched, Some("dn-loadgen"));
            let p = httpd::run_client(
                "dn-loadgen",
                loadgen_cmd(self.loadgen, &pipe, &self.url, a.conns, a.seconds, core),
                timeout,
                httpd::parse_loadgen,
            );
            let cpu = sampler.finish();
            let after = member_counts(&c.status()?);
            log::debug!("members (name, connections, bytes) before {before:?}, after {after:?}");
            let point = p?;
            c.check()?;
            if let Some(s) = d.exited() {
                return Err(format!("docknetd exited ({s}): {}", d.stderr_tail()));
            }
            Ok(ClusterRun {
                point,
                spread: spread(&before, &after),
                cpu,
            })
        })();
        let _ = d.ctl(&["fc", "rm", "lg", "web"]);
        drop(c);
        r
    }
}

/// Runs the benchmark and writes OUT/cluster.{md,json,svg}.
pub fn run(a: &ClusterArgs) -> Result<(), String> {
    if a.seconds == 0 || a.rounds == 0 {
        return Err("--duration and --rounds must be at least 1".into());
    }
    let host = HostInfo::collect();
    let bins = docknet::find_bins(a.bin_dir.as_deref())?;
    let loadgen = bins.sibling("dn-loadgen")?;
    bins.sibling("dn-nat")?;
    if a.cores.is_some() && httpd::which("taskset").is_none() {
        return Err("--cores needs taskset (util-linux)".into());
    }
    let (httpd_bin, httpd_build) = httpd::httpd_binary(a.httpd_bin.as_deref(), &a.src)?;
    eprintln!(
        "cluster: members {}; {} round(s); dn-loadgen -c {} for {} s (after {} s warm-up); dn-httpd --work-us {}; policy {}; {}",
        a.members.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
        a.rounds,
        a.conns,
        a.seconds,
        a.warmup_s,
        a.work_us,
        a.policy,
        a.cores.as_ref().map_or("not pinned".into(), |c| format!("cores {}", c.text()))
    );
    let run = std::env::temp_dir().join(format!("dnbench-{}-cluster", std::process::id()));
    let mut d = Daemon::start(&bins, run, a.keep_run_dir, Duration::from_secs(15))?;
    if let Some(c) = &a.cores {
        pin(d.pid(), &c.text())?;
    }
    // The cluster files live in the run dir (removed with it).
    let files = d.run.path.join("files");
    std::fs::create_dir_all(&files).map_err(|e| format!("creating {}: {e}", files.display()))?;
    d.ctl(&["pipe", "create", "lg", "--ip", &format!("{LOADGEN_IP}/16")])?;
    let ctx = Ctx {
        a,
        loadgen: &loadgen,
        httpd_bin: &httpd_bin,
        files: &files,
        url: format!("http://{VIP}:80/"),
    };
    let example = ctx.file(a.members.first().copied().unwrap_or(1)).to_toml();
    let mut runs: Vec<(Vec<ClusterRun>, Vec<String>)> = vec![Default::default(); a.members.len()];
    for round in 1..=a.rounds {
        for (i, &n) in a.members.iter().enumerate() {
            eprint!("  round {round}/{}: {n} member(s) ... ", a.rounds);
            let t0 = Instant::now();
            let placement = a.cores.as_ref().map(|c| placement(&c.0, n));
            let r = ctx.point(&mut d, n, placement.as_ref());
            while crate::cleanup::shutting_down() {
                std::thread::park();
            }
            match &r {
                Ok(x) => {
                    eprintln!("{}", x.point.progress(t0));
                    eprintln!("    cpu (cores): {}", x.cpu.line());
                }
                Err(e) => eprintln!("FAILED: {e}"),
            }
            match r {
                Ok(x) => runs[i].0.push(x),
                Err(e) => runs[i].1.push(e),
            }
        }
    }
    drop(d);
    let rows: Vec<ClusterRow> = a
        .members
        .iter()
        .zip(runs)
        .map(|(&n, (ok, errors))| {
            let rps_each: Vec<f64> = ok.iter().map(|r| r.point.rps).collect();
            let med = crate::nat::median_index(&rps_each).map(|i| ok[i].clone());
            ClusterRow {
                members: n,
                result: med.as_ref().map(|r| r.point.clone()),
                rps_each,
                error: (!errors.is_empty()).then(|| {
                    format!(
                        "{} of {} runs failed: {}",
                        errors.len(),
                        errors.len() + ok.len(),
                        errors[0]
                    )
                }),
                spread: med.as_ref().map(|r| r.spread.clone()).unwrap_or_default(),
                cpu: med.map(|r| r.cpu),
                placement: a.cores.as_ref().map(|c| placement(&c.0, n)),
            }
        })
        .collect();
    write_outputs(a, &host, &rows, &example, &httpd_build)
}

fn base_rps(rows: &[ClusterRow]) -> Option<f64> {
    rows.iter()
        .find(|r| r.members == 1)
        .and_then(|r| r.result.as_ref())
        .map(|p| p.rps)
        .filter(|&x| x > 0.0)
}

/// The results table with the scaling beside the paper's.
pub fn table(rows: &[ClusterRow]) -> String {
    let base = base_rps(rows);
    let mut notes = Vec::new();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let paper = paper_scaling(r.members).map_or("-".into(), |x| format!("{x:.2}×"));
            let spread = r
                .spread
                .iter()
                .map(|(_, c, s)| format!("{c}/{:.0}%", s * 100.0))
                .collect::<Vec<_>>()
                .join(" ");
            let each = r
                .rps_each
                .iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mark = match &r.error {
                Some(e) => {
                    notes.push(format!(
                        "[{}] {} member(s): {e}",
                        notes.len() + 1,
                        r.members
                    ));
                    format!(" [{}]", notes.len())
                }
                None => String::new(),
            };
            match &r.result {
                Some(p) => vec![
                    r.members.to_string(),
                    format!("{:.0}{mark}", p.rps),
                    each,
                    base.map_or("-".into(), |b| format!("{:.2}×", p.rps / b)),
                    paper,
                    format!("{:.1}", p.latency_us_p50),
                    format!("{:.1}", p.latency_us_p99),
                    p.errors.to_string(),
                    spread,
                ],
                None => vec![
                    r.members.to_string(),
                    format!("FAILED{mark}"),
                    each,
                    "-".into(),
                    paper,
                    String::new(),
                    String::new(),
                    String::new(),
                    spread,
                ],
            }
        })
        .collect();
    let mut s = markdown_table(
        &[
            "members",
            "requests/s (median)",
            "each round",
            "vs 1 member",
            "paper",
            "latency p50 (µs)",
            "latency p99 (µs)",
            "errors",
            "per member: conns/bytes",
        ],
        &[true, true, false, true, true, true, true, true, false],
        &cells,
    );
    for n in notes {
        s += &format!("\n{n}");
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn cpu_section(rows: &[ClusterRow]) -> String {
    let mut s = String::new();
    for r in rows {
        if let Some(c) = &r.cpu {
            let _ = writeln!(s, "- {} member(s): {}", r.members, c.line());
        }
        if let Some(p) = &r.placement {
            let _ = writeln!(
                s,
                "  (pinned: dn-loadgen on CPU {}, dn-nat on {}, members on {:?})",
                p.loadgen, p.nat, p.members
            );
        }
    }
    s
}

const CLUSTER_TEXT: &str = "\
A web cluster: `dn-nat` (DNAT, Maglev by default) on the VIP 10.89.0.100:80, N members \
running `dn-httpd --work-us W` (busy work per request, the paper's web cluster) and \
serving the 1024-byte page, each on its own pipe joined to the NAT by a fast channel \
(made by `docknetctl cluster up`); `dn-loadgen` (one thread, HTTP/1.1 keep-alive, C \
connections, one request outstanding per connection) on pipe lg 10.89.0.50/16, joined to \
the NAT by a fast channel. One `docknetd --nic none`; a fresh cluster per run (`cluster \
up`, a warm-up run, the measured run, `cluster down`), in rounds over the member counts \
(1, 2, 3, 4, 1, 2, 3, 4, ...): the table gives each count's median run and every round's \
requests/s.

requests/s = responses completed in the measured window / its length; latency = from a \
request being queued to its response being complete (p50, p99; dn-loadgen's histogram). \
vs 1 member = requests/s / requests/s with 1 member, beside the paper's 1.92× / 2.61× / \
3.46×. per member = connections the NAT gave each member in the measured run / its share \
of the bytes the NAT forwarded. CPU = CPU seconds per second (cores) of each process in \
the measured window (`/proc/PID/stat`; dn-loadgen's from getrusage), and the split of all \
CPUs' time (`/proc/stat`).";

fn write_outputs(
    a: &ClusterArgs,
    host: &HostInfo,
    rows: &[ClusterRow],
    example: &str,
    httpd_build: &str,
) -> Result<(), String> {
    let t = table(rows);
    let cpu = cpu_section(rows);
    println!("\n{t}\nCPU in the measured window (cores)\n\n{cpu}");
    let mut md = String::new();
    md += "# Web cluster: requests/s with 1-4 members behind dn-nat\n\n";
    md += &host.md_header(&a.command_line);
    let _ = writeln!(
        md,
        "- {} round(s) over the member counts (median reported); dn-loadgen -c {} -d {}s (after a {} s warm-up); dn-httpd --work-us {}; policy {}; {}",
        a.rounds,
        a.conns,
        a.seconds,
        a.warmup_s,
        a.work_us,
        a.policy,
        a.cores
            .as_ref()
            .map_or("not pinned (the scheduler places every process)".into(), |c| format!(
                "pinned to CPUs {} (taskset: dn-loadgen on the first, dn-nat on the second, member i on the (2+i)-th, wrapping; docknetd on all of them)",
                c.text()
            ))
    );
    if !httpd_build.is_empty() {
        let _ = writeln!(md, "- dn-httpd with the 1 KB page: `{httpd_build}`");
    }
    md += &format!("\n{CLUSTER_TEXT}\n\n![requests/s and scaling vs members](cluster.svg)\n\n");
    md += "## Results\n\n";
    md += &t;
    md += "\n## CPU in the measured window (cores)\n\n";
    md += &cpu;
    md += "\n## The cluster file (first point; `replicas` is N)\n\n```toml\n";
    md += example;
    md += "```\n";
    let base = base_rps(rows);
    let label = |n: usize| format!("{n} member{}", if n == 1 { "" } else { "s" });
    let groups: Vec<svg::BarGroup> = rows
        .iter()
        .map(|r| svg::BarGroup {
            label: label(r.members),
            values: vec![r.result.as_ref().map(|p| p.rps / 1000.0)],
        })
        .collect();
    let scaling: Vec<svg::BarGroup> = rows
        .iter()
        .map(|r| svg::BarGroup {
            label: label(r.members),
            values: vec![
                r.result.as_ref().and_then(|p| base.map(|b| p.rps / b)),
                paper_scaling(r.members),
            ],
        })
        .collect();
    let subtitle = format!(
        "dn-httpd --work-us {} behind dn-nat, dn-loadgen -c {}, {} s per point, median of {}{} · {} ({} CPUs) · {}",
        a.work_us,
        a.conns,
        a.seconds,
        a.rounds,
        a.cores.as_ref().map_or(String::new(), |c| format!(", CPUs {}", c.text())),
        host.cpu,
        host.ncpu,
        host.date_utc
    );
    let svg_text = svg::bar_figure(
        "Web cluster: requests/s vs members",
        &subtitle,
        &[
            svg::BarPanel {
                title: "(a) Throughput".into(),
                y_label: "thousand requests/s".into(),
                series: vec!["measured".into()],
                groups,
            },
            svg::BarPanel {
                title: "(b) Scaling vs 1 member".into(),
                y_label: "requests/s ÷ requests/s with 1 member".into(),
                series: vec!["measured".into(), "paper".into()],
                groups: scaling,
            },
        ],
    );
    let json = serde_json::json!({
        "command": a.command_line,
        "date": host.date_utc,
        "kernel": host.kernel,
        "cpu": host.cpu,
        "ncpu": host.ncpu,
        "rounds": a.rounds,
        "conns": a.conns,
        "seconds": a.seconds,
        "warmup_s": a.warmup_s,
        "work_us": a.work_us,
        "policy": a.policy,
        "cores": a.cores.as_ref().map(|c| c.0.clone()),
        "httpd_build": httpd_build,
        "paper_scaling": PAPER_SCALING,
        "cluster_file": example,
        "rows": rows,
    });
    crate::report::write_files(&a.out, "cluster", svg_text, md, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_file_parses_as_docknetctl_reads_it() {
        let f = ClusterFile {
            name: "web".into(),
            vip: "10.89.0.100:80".into(),
            replicas: 3,
            policy: "maglev".into(),
            binary: PathBuf::from("/bin/sh"),
            args: vec!["--work-us".into(), "10".into(), "a \"q\" \\".into()],
            subnet: "10.89.1.0/24".into(),
            health: r#"{ kind = "http", path = "/", interval_ms = 200 }"#.into(),
        };
        let text = f.to_toml();
        let spec = docknet_master::cluster::ClusterSpec::from_toml(&text, Path::new("/")).unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.vip.to_string(), "10.89.0.100");
        assert_eq!(spec.health.interval_ms, 200);
        match spec.run {
            docknet_master::cluster::MemberRun::Binary { path, args } => {
                assert_eq!(path, PathBuf::from("/bin/sh"));
                assert_eq!(args[2], "a \"q\" \\");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn core_lists_and_placement() {
        assert_eq!("0,1".parse::<CoreList>().unwrap().0, vec![0, 1]);
        assert_eq!(
            "0-3,6,2".parse::<CoreList>().unwrap().0,
            vec![0, 1, 2, 3, 6]
        );
        assert!("".parse::<CoreList>().is_err());
        assert!("3-1".parse::<CoreList>().is_err());
        assert!("x".parse::<CoreList>().is_err());
        assert_eq!(
            placement(&[0, 1], 4),
            Placement {
                loadgen: 0,
                nat: 1,
                members: vec![0, 1, 0, 1]
            }
        );
        let p = placement(&[0, 1, 2, 3, 4, 5, 6, 7], 4);
        assert_eq!((p.loadgen, p.nat, p.members), (0, 1, vec![2, 3, 4, 5]));
        assert_eq!(placement(&[5], 2).members, vec![5, 5]);
    }

    #[test]
    fn spread_and_table() {
        let before = vec![("web-1".to_string(), 10, 1000), ("web-2".to_string(), 5, 0)];
        let after = vec![
            ("web-1".to_string(), 42, 4000),
            ("web-2".to_string(), 37, 3000),
        ];
        let s = spread(&before, &after);
        assert_eq!(s[0].1, 32);
        assert!((s[0].2 - 0.5).abs() < 1e-9 && (s[1].2 - 0.5).abs() < 1e-9);
        let p = |rps| HttpPoint {
            requests: 1,
            duration_s: 1.0,
            rps,
            latency_us_p50: 10.0,
            latency_us_p99: 20.0,
            errors: 0,
            bytes: 0,
        };
        let rows = vec![
            ClusterRow {
                members: 1,
                rps_each: vec![100.0],
                result: Some(p(100.0)),
                error: None,
                spread: vec![],
                cpu: None,
                placement: None,
            },
            ClusterRow {
                members: 2,
                rps_each: vec![150.0, 140.0],
                result: Some(p(150.0)),
                error: None,
                spread: s,
                cpu: None,
                placement: None,
            },
            ClusterRow {
                members: 3,
                rps_each: vec![],
                result: None,
                error: Some("boom".into()),
                spread: vec![],
                cpu: None,
                placement: None,
            },
        ];
        let t = table(&rows);
        assert!(
            t.contains("1.50×") && t.contains("1.92×") && t.contains("32/50%"),
            "{t}"
        );
        assert!(
            t.contains("FAILED [1]") && t.contains("[1] 3 member(s): boom"),
            "{t}"
        );
    }
}

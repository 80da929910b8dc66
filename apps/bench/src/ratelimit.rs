//! The `ratelimit` benchmark: the paper's Fig. 9 on this machine. Four panels, each a
//! time series of what two senders push through the master while their pipes' limits
//! change:
//!
//! - (a) one TCP flow while its limit steps through four values;
//! - (b) a TCP flow and a UDP flow, no limit;
//! - (c) the same two, only the UDP sender limited;
//! - (d) both limited.
//!
//! The senders are `dn-echo tcp-blast` and `dn-echo udp-blast` (as fast as their pipes
//! take frames), each on its own pipe, to a `dn-echo tcp-sink` / `udp-sink` on two more
//! pipes of the same `docknetd --nic none`. What is measured is what a limit counts: the
//! bytes of the frames the master takes from a sender's pipe (`tx_bytes`), read from the
//! control socket every `--sample-ms`. Each limit is checked over the 1-second windows of
//! its stage (achieved / limit), and each change by how long after `rate set` returned
//! the sender's rate, over 5 ms windows, first stays within ±10% of the new limit.
//!
//! Limits default to fractions of what the slower sender does alone with no limit on this
//! machine (measured first), so the figure has the same shape on any host.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docknet_master::control::Request;
use serde::Serialize;
use serde_json::json;

use crate::docknet::{self, Daemon};
use crate::proc::ChildGuard;
use crate::report::{markdown_table, HostInfo};

/// Options of `docknet-bench ratelimit`.
#[derive(Debug, Clone)]
pub struct RateLimitArgs {
    /// Panel (a)'s four TCP limits, Mbit/s (default: fractions of the TCP sender's own rate).
    pub tcp_limits: Option<Vec<u64>>,
    /// The UDP limit of panels (c) and (d), Mbit/s (default: a fraction of the UDP
    /// sender's own rate).
    pub udp_limit: Option<u64>,
    /// Seconds per stage (each limit of panel (a); each of panels (b)–(d)).
    pub stage_s: u64,
    /// Interval between two readings of the counters.
    pub sample: Duration,
    /// `docknetd --rate-fine-us`, `--rate-coarse-ms` (the daemon's defaults if `None`).
    pub fine_us: Option<u64>,
    pub coarse_ms: Option<u64>,
    /// IP MTU of the four pipes.
    pub mtu: u32,
    pub out: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub keep_run_dir: bool,
    pub command_line: String,
}

/// The two senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    Tcp,
    Udp,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::Tcp => "TCP",
            Flow::Udp => "UDP",
        }
    }

    /// The sender's pipe.
    fn pipe(self) -> &'static str {
        match self {
            Flow::Tcp => "tcp-src",
            Flow::Udp => "udp-src",
        }
    }
}

const FLOWS: [Flow; 2] = [Flow::Tcp, Flow::Udp];

/// One reading of both senders' counters: seconds since the benchmark started, and
/// `tx_bytes` of the TCP and UDP senders' pipes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t: f64,
    pub bytes: [u64; 2],
}

/// Bytes a flow had sent at time `t` (linear between the readings around it).
fn bytes_at(samples: &[Sample], flow: usize, t: f64) -> Option<f64> {
    let i = samples.partition_point(|s| s.t < t);
    if i == 0 || i >= samples.len() {
        // Exactly on the first reading, or outside the readings.
        return samples
            .get(i)
            .filter(|s| (s.t - t).abs() < 1e-12)
            .map(|s| s.bytes[flow] as f64);
    }
    let (a, b) = (samples[i - 1], samples[i]);
    let span = b.t - a.t;
    let f = if span > 0.0 { (t - a.t) / span } else { 1.0 };
    Some(a.bytes[flow] as f64 + f * (b.bytes[flow] as f64 - a.bytes[flow] as f64))
}

/// A flow's rate over `[t0, t1)` in Mbit/s.
fn rate_mbps(samples: &[Sample], flow: usize, t0: f64, t1: f64) -> Option<f64> {
    let (a, b) = (bytes_at(samples, flow, t0)?, bytes_at(samples, flow, t1)?);
    Some((b - a) * 8.0 / (t1 - t0) / 1e6)
}

/// One stage of a panel: the limit of each flow (None: no limit), and whether the flow
/// runs at all.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub limits: [Option<u64>; 2],
}

/// A panel of the figure.
#[derive(Debug, Clone, Serialize)]
pub struct Panel {
    pub key: &'static str,
    pub title: String,
    pub flows: Vec<Flow>,
    pub stages: Vec<Stage>,
}

/// What a panel measured.
#[derive(Debug, Clone, Serialize)]
pub struct PanelResult {
    pub panel: Panel,
    /// Benchmark seconds at which each stage started (the limit was in place).
    pub stage_starts: Vec<f64>,
    pub end: f64,
    /// One row per (stage, flow): 1-s window rates and, for a limit change, its delay.
    pub rows: Vec<StageRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageRow {
    pub stage: usize,
    pub flow: Flow,
    pub limit_mbps: Option<u64>,
    /// Rate in each whole second of the stage, Mbit/s.
    pub windows_mbps: Vec<f64>,
    /// Largest |rate / limit - 1| over those windows, if limited.
    pub worst_error: Option<f64>,
    /// For a stage that changed this flow's limit: ms from the change until the flow's
    /// 5 ms rate is within ±10% of the new limit (None: not within 200 ms).
    pub change_delay_ms: Option<f64>,
    pub changed: bool,
}

/// Both senders' `tx_bytes`, from one `stats` answer of the daemon on `sock`.
fn tx_bytes(sock: &Path) -> Result<[u64; 2], String> {
    let v = docknet::request_at(sock, &Request::Stats { name: None })?;
    Ok(FLOWS.map(|f| v[f.pipe()]["tx_bytes"].as_u64().unwrap_or(0)))
}

/// Set or lift a limit; returns when the daemon has applied it.
fn set_limit(d: &Daemon, flow: Flow, mbps: Option<u64>) -> Result<(), String> {
    let name = flow.pipe().to_string();
    let req = match mbps {
        Some(mbps) => Request::RateSet { name, mbps },
        None => Request::RateClear { name },
    };
    d.request(&req).map(|_| ())
}

/// Reads the counters every `interval` on its own thread until stopped.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Sampler {
    fn start(sock: PathBuf, start: Instant, interval: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::with_capacity(200_000)));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let bytes = tx_bytes(&sock)?;
                let t1 = Instant::now();
                // The counters were read somewhere between sending and the answer.
                let t = (t0.duration_since(start) + t1.duration_since(start)).as_secs_f64() / 2.0;
                if let Ok(mut v) = s2.lock() {
                    v.push(Sample { t, bytes });
                }
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            Ok(())
        });
        Sampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn finish(mut self) -> Result<Vec<Sample>, String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| "sampler thread panicked".to_string())??;
        }
        Ok(self.snapshot())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The four panels of Fig. 9 with these limits.
pub fn panels(tcp_limits: &[u64], udp_limit: u64) -> Vec<Panel> {
    let tcp_both = tcp_limits[0];
    vec![
        Panel {
            key: "a",
            title: format!(
                "(a) TCP, limit {} Mbit/s",
                tcp_limits
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" → ")
            ),
            flows: vec![Flow::Tcp],
            stages: tcp_limits
                .iter()
                .map(|&l| Stage {
                    limits: [Some(l), None],
                })
                .collect(),
        },
        Panel {
            key: "b",
            title: "(b) TCP + UDP, no limit".into(),
            flows: vec![Flow::Tcp, Flow::Udp],
            stages: vec![Stage {
                limits: [None, None],
            }],
        },
        Panel {
            key: "c",
            title: format!("(c) TCP + UDP, UDP limited to {udp_limit} Mbit/s"),
            flows: vec![Flow::Tcp, Flow::Udp],
            stages: vec![Stage {
                limits: [None, Some(udp_limit)],
            }],
        },
        Panel {
            key: "d",
            title: format!("(d) TCP limited to {tcp_both}, UDP to {udp_limit} Mbit/s"),
            flows: vec![Flow::Tcp, Flow::Udp],
            stages: vec![Stage {
                limits: [Some(tcp_both), Some(udp_limit)],
            }],
        },
    ]
}

/// Rounded to two significant digits (limits a reader can repeat).
fn round_limit(x: f64) -> u64 {
    if x < 10.0 {
        return x.max(1.0).round() as u64;
    }
    let mag = 10f64.powi(x.log10().floor() as i32 - 1);
    ((x / mag).round() * mag) as u64
}

/// Analyse one panel's samples.
fn analyse(
    panel: &Panel,
    samples: &[Sample],
    stage_starts: &[f64],
    change_times: &[[Option<f64>; 2]],
    end: f64,
) -> Vec<StageRow> {
    let mut rows = Vec::new();
    for (k, stage) in panel.stages.iter().enumerate() {
        let s0 = stage_starts[k];
        let s1 = stage_starts.get(k + 1).copied().unwrap_or(end);
        for &flow in &panel.flows {
            let fi = flow as usize;
            let limit = stage.limits[fi];
            // Whole seconds of the stage: its length (a few ms more or less than planned:
            // changes are sent when due) cut in as many windows of about 1 s.
            let n = ((s1 - s0).round() as usize).max(1);
            let w = (s1 - s0) / n as f64;
            let windows: Vec<f64> = (0..n)
                .filter_map(|j| rate_mbps(samples, fi, s0 + j as f64 * w, s0 + (j + 1) as f64 * w))
                .collect();
            let worst_error = limit.and_then(|l| {
                windows
                    .iter()
                    .map(|r| (r / l as f64 - 1.0).abs())
                    .fold(None, |m: Option<f64>, e| Some(m.map_or(e, |m| m.max(e))))
            });
            let changed = change_times[k][fi].is_some() && k > 0;
            let change_delay_ms = match (change_times[k][fi], limit) {
                (Some(tc), Some(l)) if k > 0 => settle_ms(samples, fi, tc, l as f64),
                _ => None,
            };
            rows.push(StageRow {
                stage: k,
                flow,
                limit_mbps: limit,
                windows_mbps: windows,
                worst_error,
                change_delay_ms,
                changed,
            });
        }
    }
    rows
}

/// Milliseconds from `tc` to the end of the first 5 ms window (windows start every
/// 0.5 ms after `tc`) whose rate is within ±10% of `limit`, if one ends within 200 ms.
fn settle_ms(samples: &[Sample], flow: usize, tc: f64, limit: f64) -> Option<f64> {
    const WINDOW: f64 = 0.005;
    (0..400).find_map(|i| {
        let a = tc + i as f64 * 0.0005;
        let r = rate_mbps(samples, flow, a, a + WINDOW)?;
        ((r / limit - 1.0).abs() <= 0.10).then_some((a + WINDOW - tc) * 1000.0)
    })
}

/// A running sender.
fn start_sender(d: &Daemon, flow: Flow, seconds: u64) -> Result<ChildGuard, String> {
    let mut c = Command::new(&d.bins.dn_echo);
    c.env("DOCKNET_PIPE", d.pipe_dir(flow.pipe()));
    match flow {
        Flow::Tcp => c.args(["tcp-blast", "--to", "10.94.0.3:9"]),
        Flow::Udp => c.args(["udp-blast", "--to", "10.94.0.5:9", "--size", "1400"]),
    };
    c.args(["--duration-s", &seconds.to_string()]);
    let mut g = ChildGuard::spawn(&format!("{} sender", flow.name()), c)?;
    if flow == Flow::Tcp {
        g.wait_for_line("connected", Duration::from_secs(15))
            .map_err(|e| format!("{e}; docknetd: {}", d.stderr_tail()))?;
    }
    Ok(g)
}

/// What a flow does alone, unlimited, in Mbit/s of frames (median of 100 ms windows
/// over 1.5 s after a 0.5 s start).
fn solo_rate(d: &Daemon, flow: Flow) -> Result<f64, String> {
    let start = Instant::now();
    let sampler = Sampler::start(d.socket_path(), start, Duration::from_millis(5));
    let sender = start_sender(d, flow, 4)?;
    let t0 = start.elapsed().as_secs_f64() + 0.5;
    std::thread::sleep(Duration::from_millis(2000));
    drop(sender);
    let samples = sampler.finish()?;
    let mut rates: Vec<f64> = (0..15)
        .filter_map(|i| {
            let a = t0 + i as f64 * 0.1;
            rate_mbps(&samples, flow as usize, a, a + 0.1)
        })
        .collect();
    if rates.is_empty() {
        return Err(format!("{}: no readings", flow.name()));
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Panel (a)'s default limits, as fractions of the slower sender's solo rate.
pub const TCP_FRACTIONS: [f64; 4] = [0.2, 0.4, 0.1, 0.3];
/// The default UDP limit of panels (c) and (d), likewise.
pub const UDP_FRACTION: f64 = 0.25;

/// Runs the benchmark and writes OUT/ratelimit.{md,json,svg}.
pub fn run(a: &RateLimitArgs) -> Result<(), String> {
    let host = HostInfo::collect();
    let bins = docknet::find_bins(a.bin_dir.as_deref())?;
    let run = std::env::temp_dir().join(format!("dnbench-{}-rate", std::process::id()));
    let mut args: Vec<String> = vec!["--nic".into(), "none".into()];
    if let Some(f) = a.fine_us {
        args.extend(["--rate-fine-us".into(), f.to_string()]);
    }
    if let Some(c) = a.coarse_ms {
        args.extend(["--rate-coarse-ms".into(), c.to_string()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start_with(
        &bins,
        run,
        a.keep_run_dir,
        Duration::from_secs(15),
        &argv,
        None,
        "docknetd",
    )?;
    let mtu = a.mtu.to_string();
    for (name, ip) in [
        ("tcp-src", "10.94.0.2"),
        ("tcp-dst", "10.94.0.3"),
        ("udp-src", "10.94.0.4"),
        ("udp-dst", "10.94.0.5"),
    ] {
        d.ctl(&[
            "pipe",
            "create",
            name,
            "--ip",
            &format!("{ip}/16"),
            "--mtu",
            &mtu,
        ])?;
    }
    let mut sinks = Vec::new();
    for (pipe, cmd) in [("tcp-dst", "tcp-sink"), ("udp-dst", "udp-sink")] {
        let mut c = Command::new(&bins.dn_echo);
        c.env("DOCKNET_PIPE", d.pipe_dir(pipe))
            .args([cmd, "--port", "9"]);
        let mut g = ChildGuard::spawn(cmd, c)?;
        g.wait_for_line("listening", Duration::from_secs(15))
            .map_err(|e| format!("{e}; docknetd: {}", d.stderr_tail()))?;
        sinks.push(g);
    }

    // Limits scaled to this machine: fractions of what each sender does alone.
    let (tcp_limits, udp_limit, solo) = match (&a.tcp_limits, a.udp_limit) {
        (Some(t), Some(u)) => (t.clone(), u, None),
        _ => {
            eprintln!("ratelimit: measuring each sender alone, unlimited (2 s each)");
            let tcp = solo_rate(&d, Flow::Tcp)?;
            let udp = solo_rate(&d, Flow::Udp)?;
            eprintln!("  alone: TCP {tcp:.0} Mbit/s, UDP {udp:.0} Mbit/s (frames)");
            // Both senders share two cores with the master in panels (c) and (d), and
            // either alone varies from run to run: fractions of the slower one leave
            // room for both (a limit above what a sender can do shows nothing).
            let base = tcp.min(udp);
            let t = a.tcp_limits.clone().unwrap_or_else(|| {
                TCP_FRACTIONS
                    .iter()
                    .map(|f| round_limit(base * f))
                    .collect()
            });
            let u = a
                .udp_limit
                .unwrap_or_else(|| round_limit(base * UDP_FRACTION));
            (t, u, Some([tcp, udp]))
        }
    };
    let panels = panels(&tcp_limits, udp_limit);
    let start = Instant::now();
    let sampler = Sampler::start(d.socket_path(), start, a.sample);
    let now_s = || start.elapsed().as_secs_f64();
    let mut results = Vec::new();
    for panel in &panels {
        let seconds = panel.stages.len() as u64 * a.stage_s + 3;
        eprintln!("ratelimit: {}", panel.title);
        // The first stage's limits are in place before the senders start.
        for &f in &FLOWS {
            set_limit(&d, f, panel.stages[0].limits[f as usize])?;
        }
        let mut senders = Vec::new();
        for &f in &panel.flows {
            senders.push(start_sender(&d, f, seconds)?);
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut stage_starts = vec![now_s()];
        let mut change_times = vec![[None, None]];
        for (k, stage) in panel.stages.iter().enumerate().skip(1) {
            let due = stage_starts[0] + (k as u64 * a.stage_s) as f64;
            let wait = due - now_s();
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
            let mut changed = [None, None];
            for &f in &panel.flows {
                let fi = f as usize;
                if stage.limits[fi] != panel.stages[k - 1].limits[fi] {
                    set_limit(&d, f, stage.limits[fi])?;
                    changed[fi] = Some(now_s());
                }
            }
            stage_starts.push(now_s());
            change_times.push(changed);
        }
        let end = stage_starts[0] + (panel.stages.len() as u64 * a.stage_s) as f64;
        let wait = end - now_s();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait + 0.05));
        }
        for (mut s, f) in senders.into_iter().zip(&panel.flows) {
            if let Some(st) = s.exited() {
                return Err(format!(
                    "{} sender exited early ({st}): {}",
                    f.name(),
                    s.stderr_tail.digest()
                ));
            }
        }
        let samples = sampler.snapshot();
        let rows = analyse(panel, &samples, &stage_starts, &change_times, end);
        for r in &rows {
            eprintln!(
                "  stage {} {}: limit {:>6}  1-s windows {}{}",
                r.stage + 1,
                r.flow.name(),
                r.limit_mbps.map_or("none".into(), |l| l.to_string()),
                r.windows_mbps
                    .iter()
                    .map(|w| format!("{w:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.change_delay_ms
                    .map_or(String::new(), |ms| format!("; in effect after {ms:.1} ms"))
            );
        }
        results.push(PanelResult {
            panel: panel.clone(),
            stage_starts,
            end,
            rows,
        });
        std::thread::sleep(Duration::from_millis(300));
    }
    let samples = sampler.finish()?;
    drop(sinks);
    write_outputs(a, &host, &results, &samples, solo)
}

fn fmt_error(e: Option<f64>) -> String {
    e.map_or("-".into(), |e| format!("{:.1}%", e * 100.0))
}

fn table(results: &[PanelResult]) -> String {
    let mut body = Vec::new();
    for r in results {
        for row in &r.rows {
            body.push(vec![
                r.panel.key.to_string(),
                row.flow.name().to_string(),
                row.limit_mbps.map_or("none".into(), |l| l.to_string()),
                row.windows_mbps
                    .iter()
                    .map(|w| format!("{w:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt_error(row.worst_error),
                match (row.changed, row.change_delay_ms) {
                    (false, _) => "-".into(),
                    (true, Some(ms)) => format!("{ms:.1}"),
                    (true, None) => "> 200".into(),
                },
            ]);
        }
    }
    markdown_table(
        &[
            "panel",
            "flow",
            "limit (Mbit/s)",
            "achieved in each 1-s window (Mbit/s)",
            "worst error",
            "change in effect after (ms)",
        ],
        &[false, false, true, false, true, true],
        &body,
    )
}

/// 2 × 2 panels: each flow's rate over 50 ms windows, and its limit dashed.
fn plot(results: &[PanelResult], samples: &[Sample], subtitle: &str) -> String {
    let (w, h) = (1100.0, 820.0);
    let (pw, ph) = (430.0, 250.0);
    let lefts = [90.0, 630.0];
    let tops = [110.0, 470.0];
    let colors = ["#1f77b4", "#d62728"];
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="90" y="30" font-size="16" font-weight="bold">Rate limits through the master (cf. the paper's Fig. 9): frames taken per 50 ms</text>
<text x="90" y="50" fill="#555">{}</text>
<line x1="90" y1="68" x2="120" y2="68" stroke="{}" stroke-width="2"/><text x="126" y="72">TCP sender</text>
<line x1="220" y1="68" x2="250" y2="68" stroke="{}" stroke-width="2"/><text x="256" y="72">UDP sender</text>
<line x1="350" y1="68" x2="380" y2="68" stroke="#333" stroke-dasharray="5,4"/><text x="386" y="72">limit</text>
"##,
        crate::svg::esc(subtitle),
        colors[0],
        colors[1]
    );
    for (i, r) in results.iter().enumerate() {
        let (l, t) = (lefts[i % 2], tops[i / 2]);
        let (t0, t1) = (r.stage_starts[0] - 0.3, r.end);
        let span = (t1 - t0).max(0.1);
        let step = 0.05;
        let n = (span / step).floor() as usize;
        let series: Vec<(Flow, Vec<(f64, f64)>)> = r
            .panel
            .flows
            .iter()
            .map(|&f| {
                let pts = (0..n)
                    .filter_map(|j| {
                        let a = t0 + j as f64 * step;
                        rate_mbps(samples, f as usize, a, a + step).map(|v| (a + step / 2.0, v))
                    })
                    .collect();
                (f, pts)
            })
            .collect();
        let max = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.1))
            .chain(r.rows.iter().filter_map(|x| x.limit_mbps.map(|l| l as f64)))
            .fold(1.0f64, f64::max);
        let (ystep, top) = crate::svg::nice_axis(max, 5);
        let x = |s: f64| l + (s - t0) / span * pw;
        let y = |v: f64| t + ph - v.clamp(0.0, top) / top * ph;
        let _ = writeln!(
            o,
            r#"<text x="{l}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
            t - 12.0,
            crate::svg::esc(&r.panel.title)
        );
        crate::svg::y_grid(&mut o, l, pw, top, ystep, y, |v| v.to_string());
        let mut s = 0.0;
        while s <= span + 1e-9 {
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s:.0}</text>"#,
                x(t0 + s),
                t + ph + 16.0
            );
            s += if span > 8.0 { 2.0 } else { 1.0 };
        }
        let _ = writeln!(
            o,
            r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>
<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">Mbit/s (frames)</text>"##,
            l + pw / 2.0,
            t + ph + 34.0,
            l - 52.0,
            t + ph / 2.0
        );
        // Limits: one dashed segment per stage and limited flow.
        for (k, stage) in r.panel.stages.iter().enumerate() {
            let s0 = r.stage_starts[k];
            let s1 = r.stage_starts.get(k + 1).copied().unwrap_or(r.end);
            for &f in &r.panel.flows {
                if let Some(lim) = stage.limits[f as usize] {
                    let _ = writeln!(
                        o,
                        r#"<line x1="{:.1}" y1="{2:.1}" x2="{:.1}" y2="{2:.1}" stroke="{3}" stroke-dasharray="5,4" opacity="0.8"/>"#,
                        x(s0),
                        x(s1),
                        y(lim as f64),
                        colors[f as usize]
                    );
                }
            }
        }
        for (f, pts) in &series {
            let path: Vec<String> = pts
                .iter()
                .map(|(s, v)| format!("{:.1},{:.1}", x(*s), y(*v)))
                .collect();
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                colors[*f as usize],
                path.join(" ")
            );
        }
    }
    o += "</svg>\n";
    o
}

fn write_outputs(
    a: &RateLimitArgs,
    host: &HostInfo,
    results: &[PanelResult],
    samples: &[Sample],
    solo: Option<[f64; 2]>,
) -> Result<(), String> {
    let t = table(results);
    println!("\n{t}");
    let timers = format!(
        "fine timer {}, coarse timer {}",
        a.fine_us
            .map_or("10 µs (default)".into(), |v| format!("{v} µs")),
        a.coarse_ms
            .map_or("4 ms (default)".into(), |v| format!("{v} ms"))
    );
    let subtitle = format!(
        "{timers} · pipe MTU {} · {} s per stage · {} ({} CPUs) · {}",
        a.mtu, a.stage_s, host.cpu, host.ncpu, host.date_utc
    );
    let mut md = String::new();
    md += "# Rate limits: the paper's Fig. 9 on this machine\n\n";
    md += &host.md_header(&a.command_line);
    let _ = writeln!(md, "- Timers: {timers}; pipe MTU {}", a.mtu);
    if let Some([tcp, udp]) = solo {
        let _ = writeln!(
            md,
            "- Each sender alone, unlimited: TCP {tcp:.0} Mbit/s, UDP {udp:.0} Mbit/s; the \
             limits are fractions of the slower: {:?} (TCP, panel a) and {} (UDP)",
            TCP_FRACTIONS, UDP_FRACTION
        );
    }
    md += "\nSenders `dn-echo tcp-blast` (pipe tcp-src) and `dn-echo udp-blast` (udp-src, \
           1400-byte datagrams) to `dn-echo tcp-sink` / `udp-sink` on two more pipes of one \
           `docknetd --nic none`. Rates are the bytes of the frames the master takes from a \
           sender's pipe (what a limit counts), read from the control socket every ";
    let _ = write!(
        md,
        "{} ms. \"Worst error\" is the largest |achieved / limit − 1| over the whole \
         seconds of a stage; \"in effect after\" is the time from `rate set` returning to \
         the end of the first 5 ms window whose rate is within ±10% of the new limit.\n\n\
         ![rate limits](ratelimit.svg)\n\n",
        a.sample.as_secs_f64() * 1000.0
    );
    md += &t;
    let bad = check(results, 0.05, 10.0);
    let verdict = if bad.is_empty() {
        "\nEvery limit held within ±5% in every 1-s window, and every change was in effect \
         within 10 ms.\n"
            .to_string()
    } else {
        format!(
            "\nNot within ±5% / 10 ms:\n\n{}\n",
            bad.iter().map(|b| format!("- {b}\n")).collect::<String>()
        )
    };
    eprint!("{verdict}");
    md += &verdict;
    let json = json!({
        "command": a.command_line,
        "date": host.date_utc,
        "cpu": host.cpu,
        "ncpu": host.ncpu,
        "fine_us": a.fine_us,
        "coarse_ms": a.coarse_ms,
        "mtu": a.mtu,
        "stage_s": a.stage_s,
        "solo_mbps": solo,
        "panels": results,
        "samples": samples.len(),
    });
    crate::report::write_files(
        &a.out,
        "ratelimit",
        plot(results, samples, &subtitle),
        md,
        &json,
    )
}

/// True if every limit held within `tolerance` in every 1-s window and every change was
/// in effect within `max_delay_ms`; the failures otherwise.
pub fn check(results: &[PanelResult], tolerance: f64, max_delay_ms: f64) -> Vec<String> {
    let mut bad = Vec::new();
    for r in results {
        for row in &r.rows {
            if let Some(e) = row.worst_error {
                if e > tolerance {
                    bad.push(format!(
                        "panel {} stage {} {}: {} off the limit",
                        r.panel.key,
                        row.stage + 1,
                        row.flow.name(),
                        fmt_error(Some(e))
                    ));
                }
            }
            if row.changed && row.change_delay_ms.is_none_or(|d| d > max_delay_ms) {
                bad.push(format!(
                    "panel {} stage {} {}: change in effect after {}",
                    r.panel.key,
                    row.stage + 1,
                    row.flow.name(),
                    row.change_delay_ms
                        .map_or("> 200 ms".into(), |d| format!("{d:.1} ms"))
                ));
            }
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(rate_bytes_per_s: f64, until: f64, dt: f64) -> Vec<Sample> {
        (0..=((until / dt) as usize))
            .map(|i| {
                let t = i as f64 * dt;
                Sample {
                    t,
                    bytes: [(t * rate_bytes_per_s) as u64, 0],
                }
            })
            .collect()
    }

    #[test]
    fn rates_interpolate_between_readings() {
        let s = ramp(1_000_000.0, 3.0, 0.001); // 8 Mbit/s
        let r = rate_mbps(&s, 0, 0.5, 1.5).unwrap();
        assert!((r - 8.0).abs() < 0.01, "{r}");
        let r = rate_mbps(&s, 0, 0.0, 0.0105).unwrap();
        assert!((r - 8.0).abs() < 0.1, "{r}");
        assert!(rate_mbps(&s, 0, -1.0, 0.5).is_none());
        assert!(rate_mbps(&s, 0, 2.0, 3.5).is_none());
    }

    #[test]
    fn analysis_finds_errors_and_change_delays() {
        // 100 Mbit/s (12.5 MB/s) for 2 s, then 200 Mbit/s from 2.004 s on.
        let mut s = Vec::new();
        let mut bytes = 0.0;
        let dt = 0.0005;
        for i in 0..=8000 {
            let t = i as f64 * dt;
            s.push(Sample {
                t,
                bytes: [bytes as u64, 0],
            });
            bytes += if t < 2.004 { 12.5e6 } else { 25e6 } * dt;
        }
        let panel = Panel {
            key: "a",
            title: "t".into(),
            flows: vec![Flow::Tcp],
            stages: vec![
                Stage {
                    limits: [Some(100), None],
                },
                Stage {
                    limits: [Some(200), None],
                },
            ],
        };
        let rows = analyse(
            &panel,
            &s,
            &[0.0, 2.0],
            &[[None, None], [Some(2.0), None]],
            4.0,
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].windows_mbps.len(), 2);
        assert!(rows[0].worst_error.unwrap() < 0.001);
        assert!(!rows[0].changed && rows[0].change_delay_ms.is_none());
        assert!(rows[1].changed);
        // The last window of stage 2 is exact; the first lost 4 ms at half rate: -0.2%.
        let e = rows[1].worst_error.unwrap();
        assert!(e > 0.001 && e < 0.003, "{e}");
        let d = rows[1].change_delay_ms.unwrap();
        assert!((8.0..=9.5).contains(&d), "{d}");
        assert!(check(
            &[PanelResult {
                panel: panel.clone(),
                stage_starts: vec![0.0, 2.0],
                end: 4.0,
                rows: rows.clone()
            }],
            0.05,
            10.0
        )
        .is_empty());
        let bad = check(
            &[PanelResult {
                panel,
                stage_starts: vec![0.0, 2.0],
                end: 4.0,
                rows,
            }],
            0.001,
            5.0,
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
        let t = table(&[]);
        assert!(t.contains("worst error"));
    }

    #[test]
    fn limits_are_rounded_to_two_digits() {
        assert_eq!(round_limit(1234.0), 1200);
        assert_eq!(round_limit(456.7), 460);
        assert_eq!(round_limit(99.4), 99);
        assert_eq!(round_limit(3.4), 3);
        assert_eq!(round_limit(0.2), 1);
        let p = panels(&[100, 200, 50, 150], 80);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].stages.len(), 4);
        assert_eq!(p[3].stages[0].limits, [Some(100), Some(80)]);
        assert!(p[0].title.contains("100 → 200 → 50 → 150"));
    }
}

//! The `soak` benchmark: sustained wrk load through docknetd's TAP against dn-httpd, in
//! back-to-back windows, to show that throughput holds over minutes (the TAP ARP-aging
//! bug made one window in fourteen fall to a third). Each window is one wrk run; between
//! windows the NIC counters are read, so a window's drops (`no_neighbor`) and ARP traffic
//! sit next to its requests/s.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::docknet;
use crate::httpd::{self, parse_wrk, HttpPoint, TapHttpd};
use crate::proc::run_with_timeout;
use crate::report::{markdown_table, HostInfo};
use crate::svg;

/// Options of `docknet-bench soak`.
#[derive(Debug, Clone)]
pub struct SoakArgs {
    /// Whole seconds per window (wrk's -d).
    pub window: u64,
    pub windows: usize,
    pub conns: usize,
    pub threads: usize,
    /// `docknetd --arp-reachable`, if given.
    pub arp_reachable: Option<String>,
    pub out: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub httpd_bin: Option<PathBuf>,
    pub src: PathBuf,
    pub keep_run_dir: bool,
    pub command_line: String,
}

/// One window: wrk's figures and what the NIC counted meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub index: usize,
    /// Seconds from the first window's start to this one's.
    pub start_s: f64,
    pub point: Option<HttpPoint>,
    pub error: Option<String>,
    pub no_neighbor: u64,
    pub arp_requests: u64,
    pub arp_answered: u64,
}

/// What the run shows: median, worst window, and the windows under 75% of the median.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub median_rps: f64,
    pub min_rps: f64,
    pub min_over_median: f64,
    pub below_75pct: Vec<usize>,
    pub failed: Vec<usize>,
    pub no_neighbor: u64,
    pub errors: u64,
}

/// Summarize windows; a failed window counts as 0 requests/s.
pub fn summarize(w: &[Window]) -> Summary {
    let rps: Vec<f64> = w
        .iter()
        .map(|w| w.point.as_ref().map_or(0.0, |p| p.rps))
        .collect();
    let med = crate::stats::median(&rps).unwrap_or(0.0);
    let min = rps.iter().copied().fold(f64::INFINITY, f64::min);
    let min = if min.is_finite() { min } else { 0.0 };
    Summary {
        median_rps: med,
        min_rps: min,
        min_over_median: if med > 0.0 { min / med } else { 0.0 },
        below_75pct: w
            .iter()
            .zip(&rps)
            .filter(|(_, &r)| r < 0.75 * med)
            .map(|(w, _)| w.index)
            .collect(),
        failed: w
            .iter()
            .filter(|w| w.point.is_none())
            .map(|w| w.index)
            .collect(),
        no_neighbor: w.iter().map(|w| w.no_neighbor).sum(),
        errors: w
            .iter()
            .filter_map(|w| w.point.as_ref())
            .map(|p| p.errors)
            .sum(),
    }
}

fn counter(v: &Value, name: &str) -> u64 {
    v["counters"][name].as_u64().unwrap_or(0)
}

fn nic_counters(t: &TapHttpd) -> Result<Value, String> {
    let out = t.daemon.ctl(&["nic", "--json"])?;
    serde_json::from_str(out.trim()).map_err(|e| format!("nic --json: {e}: {out}"))
}

fn wrk(a: &SoakArgs, ns: &str, url: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "wrk"])
        .arg(format!("-t{}", a.threads))
        .arg(format!("-c{}", a.conns))
        .arg(format!("-d{}s", a.window))
        .args(["--latency", url]);
    c
}

/// Runs the benchmark and writes OUT/soak.{md,json,svg}.
pub fn run(a: &SoakArgs) -> Result<(), String> {
    if a.window == 0 || a.windows == 0 {
        return Err("--window and --windows must be at least 1".into());
    }
    if a.threads == 0 || a.threads > a.conns {
        return Err("--threads must be between 1 and --conns".into());
    }
    let host = HostInfo::collect();
    let bins = docknet::find_bins(a.bin_dir.as_deref())?;
    let (httpd_bin, httpd_build) = httpd::httpd_binary(a.httpd_bin.as_deref(), &a.src)?;
    let mut daemon_args = Vec::new();
    if let Some(r) = &a.arp_reachable {
        daemon_args.extend(["--arp-reachable", r.as_str()]);
    }
    let mut t = TapHttpd::start(&bins, &httpd_bin, a.keep_run_dir, "soak", &daemon_args)?;
    let (ns, url) = (t.ns.name.clone(), t.url.clone());
    eprintln!(
        "soak: {} windows of {} s, wrk -t{} -c{} through the TAP against dn-httpd",
        a.windows, a.window, a.threads, a.conns
    );
    let mut windows = Vec::with_capacity(a.windows);
    let start = Instant::now();
    let mut before = nic_counters(&t)?;
    for i in 1..=a.windows {
        if crate::cleanup::shutting_down() {
            break;
        }
        let start_s = start.elapsed().as_secs_f64();
        let outcome = t.alive().and_then(|()| {
            let out =
                run_with_timeout("wrk", wrk(a, &ns, &url), Duration::from_secs(a.window + 30))?;
            if !out.success {
                return Err(format!("wrk: {}: {}", out.status, out.stderr_tail));
            }
            parse_wrk(&out.stdout)
        });
        let after = nic_counters(&t).unwrap_or_else(|_| before.clone());
        let d = |k: &str| counter(&after, k).saturating_sub(counter(&before, k));
        let w = Window {
            index: i,
            start_s,
            no_neighbor: d("no_neighbor"),
            arp_requests: d("arp_requests"),
            arp_answered: d("arp_answered"),
            point: outcome.as_ref().ok().cloned(),
            error: outcome.err(),
        };
        match (&w.point, &w.error) {
            (Some(p), _) => eprintln!(
                "  window {i:>3}/{} at {start_s:>6.1} s: {:>9.0} req/s, p50 {:>7.1} µs, p99 {:>8.1} µs, {} errors, no_neighbor {}, arp_requests {}",
                a.windows, p.rps, p.latency_us_p50, p.latency_us_p99, p.errors, w.no_neighbor, w.arp_requests
            ),
            (None, Some(e)) => eprintln!("  window {i:>3}/{}: FAILED: {e}", a.windows),
            _ => {}
        }
        windows.push(w);
        before = after;
    }
    let summary = summarize(&windows);
    write_outputs(a, &host, &httpd_build, &t, &windows, &summary)
}

fn results_table(w: &[Window]) -> String {
    let rows: Vec<Vec<String>> = w
        .iter()
        .map(|w| {
            let (rps, p50, p99, err) = match &w.point {
                Some(p) => (
                    format!("{:.0}", p.rps),
                    format!("{:.1}", p.latency_us_p50),
                    format!("{:.1}", p.latency_us_p99),
                    p.errors.to_string(),
                ),
                None => (
                    "FAILED".into(),
                    "-".into(),
                    "-".into(),
                    w.error.clone().unwrap_or_default(),
                ),
            };
            vec![
                w.index.to_string(),
                format!("{:.0}", w.start_s),
                rps,
                p50,
                p99,
                err,
                w.no_neighbor.to_string(),
                w.arp_requests.to_string(),
                w.arp_answered.to_string(),
            ]
        })
        .collect();
    markdown_table(
        &[
            "window",
            "start (s)",
            "requests/s",
            "p50 (µs)",
            "p99 (µs)",
            "errors",
            "no_neighbor",
            "arp_requests",
            "arp_answered",
        ],
        &[true; 9],
        &rows,
    )
}

fn summary_text(s: &Summary, n: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "- median {:.0} requests/s over {n} windows; worst {:.0} ({:.2} × the median)",
        s.median_rps, s.min_rps, s.min_over_median
    );
    let _ = writeln!(
        t,
        "- windows below 75% of the median: {} {}",
        s.below_75pct.len(),
        if s.below_75pct.is_empty() {
            String::new()
        } else {
            format!("({:?})", s.below_75pct)
        }
    );
    let _ = writeln!(
        t,
        "- frames dropped for want of a neighbour (`no_neighbor`): {}; wrk errors: {}",
        s.no_neighbor, s.errors
    );
    let met = s.below_75pct.is_empty() && s.failed.is_empty() && s.no_neighbor == 0;
    let _ = writeln!(
        t,
        "- target (no window below 75% of the median, no frame dropped for want of a neighbour): {}",
        if met { "met" } else { "NOT met" }
    );
    t
}

/// Requests/s per window as bars, with the median and 75% of it as lines.
pub fn plot(w: &[Window], s: &Summary, subtitle: &str) -> String {
    const W: f64 = 900.0;
    const H: f64 = 420.0;
    const L: f64 = 80.0;
    const R: f64 = 20.0;
    const T: f64 = 70.0;
    const B: f64 = 60.0;
    let (pw, ph) = (W - L - R, H - T - B);
    let max = w
        .iter()
        .filter_map(|w| w.point.as_ref().map(|p| p.rps))
        .fold(s.median_rps, f64::max)
        .max(1.0);
    let step = svg::nice_step(max / 1000.0, 5) * 1000.0;
    let top = (max / step).ceil() * step;
    let y = |v: f64| T + ph - v / top * ph;
    let n = w.len().max(1) as f64;
    let bw = pw / n;
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{L}" y="28" font-size="16" font-weight="bold">Sustained load through the TAP: requests/s per window</text>
<text x="{L}" y="48" fill="#555">{}</text>
"##,
        svg::esc(subtitle)
    );
    svg::y_grid(&mut o, L, pw, top, step, y, |v| {
        format!("{:.0}k", v / 1000.0)
    });
    for (i, win) in w.iter().enumerate() {
        let x = L + i as f64 * bw + bw * 0.1;
        match &win.point {
            Some(p) => {
                let color = if p.rps < 0.75 * s.median_rps {
                    "#d62728"
                } else {
                    "#1f77b4"
                };
                let _ = writeln!(
                    o,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
                    y(p.rps),
                    bw * 0.8,
                    T + ph - y(p.rps)
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    r##"<text x="{:.1}" y="{:.1}" fill="#d62728" text-anchor="middle">×</text>"##,
                    x + bw * 0.4,
                    T + ph - 4.0
                );
            }
        }
        if w.len() <= 30 || i % 5 == 0 {
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + bw * 0.4,
                T + ph + 16.0,
                win.index
            );
        }
    }
    for (v, label, dash) in [
        (s.median_rps, "median", ""),
        (0.75 * s.median_rps, "75% of median", "6,4"),
    ] {
        let yy = y(v);
        let _ = writeln!(
            o,
            r#"<line x1="{L}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="black" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            L + pw,
            L + pw - 4.0,
            yy - 4.0
        );
    }
    let _ = write!(
        o,
        r#"<line x1="{L}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">window (wrk run)</text>
<text transform="translate(20,{:.1}) rotate(-90)" text-anchor="middle">requests/s</text>
</svg>
"#,
        T + ph,
        L + pw,
        T + ph,
        L + pw / 2.0,
        H - 15.0,
        T + ph / 2.0
    );
    o
}

fn write_outputs(
    a: &SoakArgs,
    host: &HostInfo,
    httpd_build: &str,
    t: &TapHttpd,
    windows: &[Window],
    s: &Summary,
) -> Result<(), String> {
    let table = results_table(windows);
    let summary = summary_text(s, windows.len());
    println!("\n{table}\n{summary}");
    let client = format!(
        "ip netns exec {} wrk -t{} -c{} -d{}s --latency {}   (once per window, back to back)",
        t.ns.name, a.threads, a.conns, a.window, t.url
    );
    let mut md = String::new();
    md += "# Sustained load: wrk through docknetd's TAP against dn-httpd\n\n";
    md += &host.md_header(&a.command_line);
    md += &format!(
        "- {} windows of {} s, back to back; the NIC counters are read between windows\n",
        windows.len(),
        a.window
    );
    md += &format!("- dn-httpd with the 1 KB page: `{httpd_build}`\n\n");
    md += "![requests/s per window](soak.svg)\n\n## Results\n\n";
    md += &table;
    md += "\n## Summary\n\n";
    md += &summary;
    md += "\n## Command lines\n\n```sh\n";
    for c in &t.setup {
        md += &format!("# {c}\n");
    }
    md += &format!("{}\n{client}\n```\n", t.server_cmd);
    let subtitle = format!(
        "wrk -t{} -c{}, {} s windows · median {:.0} req/s, worst {:.2}× · {} ({} CPUs) · {}",
        a.threads,
        a.conns,
        a.window,
        s.median_rps,
        s.min_over_median,
        host.cpu,
        host.ncpu,
        host.date_utc
    );
    let json = serde_json::json!({
        "command": a.command_line,
        "date": host.date_utc,
        "kernel": host.kernel,
        "cpu": host.cpu,
        "ncpu": host.ncpu,
        "window_s": a.window,
        "conns": a.conns,
        "threads": a.threads,
        "windows": windows,
        "summary": s,
    });
    crate::report::write_files(&a.out, "soak", plot(windows, s, &subtitle), md, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(index: usize, rps: Option<f64>) -> Window {
        Window {
            index,
            start_s: index as f64 * 10.0,
            point: rps.map(|rps| HttpPoint {
                requests: rps as u64 * 10,
                duration_s: 10.0,
                rps,
                latency_us_p50: 100.0,
                latency_us_p99: 900.0,
                errors: 0,
                bytes: 0,
            }),
            error: rps.is_none().then(|| "wrk: exit 1".to_string()),
            no_neighbor: 0,
            arp_requests: 1,
            arp_answered: 0,
        }
    }

    #[test]
    fn summary_flags_slow_and_failed_windows() {
        let w = vec![
            win(1, Some(190_000.0)),
            win(2, Some(188_000.0)),
            win(3, Some(66_000.0)),
            win(4, Some(191_000.0)),
            win(5, None),
        ];
        let s = summarize(&w);
        assert_eq!(s.median_rps, 188_000.0);
        assert_eq!(s.min_rps, 0.0);
        assert_eq!(s.below_75pct, vec![3, 5]);
        assert_eq!(s.failed, vec![5]);
        assert!(summary_text(&s, 5).contains("NOT met"));
        let ok = summarize(&w[..2]);
        assert!(ok.below_75pct.is_empty());
        assert!(summary_text(&ok, 2).contains(": met"));
    }

    #[test]
    fn plot_is_svg_with_every_window() {
        let w: Vec<Window> = (1..=18)
            .map(|i| win(i, Some(150_000.0 + i as f64)))
            .collect();
        let s = summarize(&w);
        let p = plot(&w, &s, "test <&>");
        assert!(p.starts_with("<svg") && p.trim_end().ends_with("</svg>"));
        assert_eq!(p.matches("<rect x=").count(), 18);
        assert!(p.contains("test &lt;&amp;&gt;"));
    }
}

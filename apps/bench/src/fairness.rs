//! The `fairness` benchmark: an honest pair's latency through the master while a third
//! pipe floods it (the tenant-safety issue, item 5). The master takes at most a batch of
//! frames per pipe per round, so a flooder costs the others its batch, not the switch.
//!
//! Scenarios, one after another on one docknetd: `quiet` (no flooder), then a flooder
//! service that posts frames as fast as its ring takes them: `spoofed` (IPv4 frames with
//! a source address that is not its own: dropped as spoofed), `no-route` (valid frames to
//! an address no pipe has: dropped as no_route), `to-server` (valid UDP frames to the
//! honest server's address: delivered, and dropped by its stack: the flooder's batch is
//! real work for the master and the server).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use docknet_master::control::Request;
use serde::Serialize;

use crate::docknet::{self, Daemon};
use crate::proc::ChildGuard;
use crate::report::{markdown_table, HostInfo};
use crate::stats::PointResult;

/// What a flooder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloodKind {
    /// IPv4 frames whose source is not the pipe's address.
    Spoofed,
    /// Valid IPv4 frames to an address no pipe has.
    NoRoute,
    /// Valid IPv4/UDP frames to the honest server.
    ToServer,
}

impl FloodKind {
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Spoofed => "spoofed",
            FloodKind::NoRoute => "no-route",
            FloodKind::ToServer => "to-server",
        }
    }
}

/// Addresses of the benchmark's pipes.
const SERVER: [u8; 4] = [10, 93, 0, 2];
const CLIENT: [u8; 4] = [10, 93, 0, 3];
const FLOODER: [u8; 4] = [10, 93, 0, 4];

/// An Ethernet + IPv4 + UDP frame of `len` bytes from `src` to `dst` (no checksums: pipes
/// carry none).
fn udp_frame(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(42)];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (f.len() - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&9999u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes()); // discard
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// `docknet-bench flood`: attach to the pipe in `pipe` and post `kind` frames of `size`
/// bytes as fast as the ring takes them, until SIGTERM/SIGINT; prints how many.
pub fn flood(pipe: &Path, kind: FloodKind, size: usize) -> Result<(), String> {
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }
    // SAFETY: handlers that only store to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut end = ::docknet::pipe::ServicePipeEnd::attach(pipe)
        .map_err(|e| format!("flood: {}: {e}", pipe.display()))?;
    let frame = match kind {
        FloodKind::Spoofed => udp_frame([192, 0, 2, 66], SERVER, size),
        FloodKind::NoRoute => udp_frame(FLOODER, [10, 93, 255, 254], size),
        FloodKind::ToServer => udp_frame(FLOODER, SERVER, size),
    };
    let size = frame.len().min(end.tx.buf_size());
    println!("flooding");
    let (mut sent, t0) = (0u64, Instant::now());
    while !STOP.load(Ordering::Relaxed) {
        let mut n = 0;
        while let Some(b) = end.tx.alloc(size) {
            if !end.tx.write_at(b, 0, &frame[..size]) {
                end.tx.cancel(b);
                break;
            }
            // A failed post has already returned the buffer to the free list.
            if !end.tx.post(b, size) {
                break;
            }
            n += 1;
            if n == 256 {
                break;
            }
        }
        end.tx.flush();
        // Incoming frames (none expected) must not pile up.
        while let Some(f) = end.rx.recv() {
            end.rx.give_back(f.buf);
        }
        end.rx.flush();
        sent += n;
        if n == 0 {
            std::thread::yield_now();
        }
    }
    let s = t0.elapsed().as_secs_f64();
    eprintln!(
        "flood: {sent} frames in {s:.1} s ({:.0} frames/s)",
        sent as f64 / s.max(1e-9)
    );
    Ok(())
}

/// Options of `docknet-bench fairness`.
#[derive(Debug, Clone)]
pub struct FairnessArgs {
    pub size: usize,
    pub count: usize,
    pub flood_size: usize,
    /// `docknetctl rate set flood N` before the floods (the operator's remedy today).
    pub flood_rate_mbps: Option<u64>,
    pub out: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub keep_run_dir: bool,
    pub command_line: String,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct FairRow {
    pub scenario: String,
    pub point: Option<PointResult>,
    pub error: Option<String>,
    /// Frames the master took from the flooder per second during the point.
    pub flood_frames_per_s: f64,
    /// The flooder's frames by what the master did with them.
    pub flood_spoofed: u64,
    pub flood_no_route: u64,
}

fn ip(o: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])
}

/// The flooder pipe's `tx_frames`, `spoofed` and `no_route` counters, from one `stats`
/// answer (0 for any that cannot be read).
fn flood_stats(d: &Daemon) -> [u64; 3] {
    let v = d
        .request(&Request::Stats {
            name: Some("flood".into()),
        })
        .unwrap_or_default();
    ["tx_frames", "spoofed", "no_route"].map(|k| v["flood"][k].as_u64().unwrap_or(0))
}

/// Runs the benchmark and writes OUT/fairness.{md,json,svg}.
pub fn run(a: &FairnessArgs) -> Result<(), String> {
    let host = HostInfo::collect();
    let bins = docknet::find_bins(a.bin_dir.as_deref())?;
    let run = std::env::temp_dir().join(format!("dnbench-{}-fair", std::process::id()));
    let d = Daemon::start(&bins, run, a.keep_run_dir, Duration::from_secs(15))?;
    for (name, o) in [("srv", SERVER), ("cli", CLIENT), ("flood", FLOODER)] {
        d.ctl(&["pipe", "create", name, "--ip", &format!("{}/16", ip(o))])?;
    }
    if let Some(r) = a.flood_rate_mbps {
        d.ctl(&["rate", "set", "flood", &r.to_string()])?;
    }
    let mut server_cmd = Command::new(&bins.dn_echo);
    server_cmd
        .env("DOCKNET_PIPE", d.pipe_dir("srv"))
        .args(["server", "--port", "7"]);
    let mut server = ChildGuard::spawn("dn-echo server", server_cmd)?;
    server
        .wait_for_line("listening", Duration::from_secs(15))
        .map_err(|e| format!("{e}; docknetd: {}", d.stderr_tail()))?;
    let me = crate::pingpong::self_exe()?;
    let to = format!("{}:7", ip(SERVER));
    let scenarios: [(&str, Option<FloodKind>); 4] = [
        ("quiet", None),
        ("spoofed flood", Some(FloodKind::Spoofed)),
        ("no-route flood", Some(FloodKind::NoRoute)),
        ("flood to the server", Some(FloodKind::ToServer)),
    ];
    let mut rows = Vec::new();
    eprintln!(
        "fairness: {} B ping-pong x {} between two pipes through docknetd, while a third pipe floods",
        a.size, a.count
    );
    for (name, kind) in scenarios {
        let flooder = match kind {
            Some(k) => {
                let mut c = Command::new(&me);
                c.args(["flood", "--pipe"]).arg(d.pipe_dir("flood")).args([
                    "--kind",
                    k.name(),
                    "--size",
                    &a.flood_size.to_string(),
                ]);
                let mut g = ChildGuard::spawn(&format!("flooder ({})", k.name()), c)?;
                g.wait_for_line("flooding", Duration::from_secs(10))?;
                std::thread::sleep(Duration::from_millis(200));
                Some(g)
            }
            None => None,
        };
        let before = flood_stats(&d);
        let t0 = Instant::now();
        let c = crate::pingpong::dn_echo_client(
            &bins.dn_echo,
            &d.pipe_dir("cli"),
            &to,
            a.size,
            a.count,
            (a.count / 20).max(10),
        );
        let outcome =
            crate::pingpong::run_point("dn-echo client", c, a.size, Duration::from_secs(300));
        let secs = t0.elapsed().as_secs_f64();
        let after = flood_stats(&d);
        drop(flooder);
        let row = FairRow {
            scenario: name.into(),
            flood_frames_per_s: (after[0] - before[0]) as f64 / secs.max(1e-9),
            flood_spoofed: after[1] - before[1],
            flood_no_route: after[2] - before[2],
            point: outcome.as_ref().ok().cloned(),
            error: outcome.err(),
        };
        match &row.point {
            Some(p) => eprintln!(
                "  {name:<20} p50 {:>7.1} µs  p99 {:>8.1} µs  {:.3} Gbit/s; flooder {:.0} frames/s taken",
                p.one_way_us_p50, p.one_way_us_p99, p.goodput_gbps, row.flood_frames_per_s
            ),
            None => eprintln!("  {name:<20} FAILED: {}", row.error.clone().unwrap_or_default()),
        }
        rows.push(row);
        if let Some(s) = server.exited() {
            return Err(format!("dn-echo server exited ({s})"));
        }
    }
    drop(server);
    write_outputs(a, &host, &rows)
}

fn table(rows: &[FairRow]) -> String {
    let quiet = rows
        .first()
        .and_then(|r| r.point.as_ref())
        .map(|p| p.one_way_us_p99);
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (p50, p99, gp, ratio) = match &r.point {
                Some(p) => (
                    format!("{:.1}", p.one_way_us_p50),
                    format!("{:.1}", p.one_way_us_p99),
                    format!("{:.3}", p.goodput_gbps),
                    quiet.map_or("-".into(), |q| format!("{:.2}×", p.one_way_us_p99 / q)),
                ),
                None => ("FAILED".into(), "-".into(), "-".into(), "-".into()),
            };
            vec![
                r.scenario.clone(),
                p50,
                p99,
                ratio,
                gp,
                format!("{:.0}", r.flood_frames_per_s),
                format!(
                    "spoofed {} / no_route {}",
                    r.flood_spoofed, r.flood_no_route
                ),
            ]
        })
        .collect();
    markdown_table(
        &[
            "scenario",
            "one-way p50 (µs)",
            "one-way p99 (µs)",
            "p99 vs quiet",
            "goodput (Gbit/s)",
            "flooder frames/s taken",
            "flooder frames dropped as",
        ],
        &[false, true, true, true, true, true, false],
        &body,
    )
}

/// p50 and p99 per scenario as bars.
fn plot(rows: &[FairRow], subtitle: &str) -> String {
    let (w, h, l, t, pw, ph) = (900.0, 380.0, 80.0, 70.0, 780.0, 240.0);
    let max = rows
        .iter()
        .filter_map(|r| r.point.as_ref().map(|p| p.one_way_us_p99))
        .fold(1.0f64, f64::max);
    let (step, top) = crate::svg::nice_axis(max, 5);
    let y = |v: f64| t + ph - v / top * ph;
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{l}" y="28" font-size="16" font-weight="bold">Honest pair through the master while a third pipe floods: one-way latency</text>
<text x="{l}" y="48" fill="#555">{}</text>
"##,
        crate::svg::esc(subtitle)
    );
    crate::svg::y_grid(&mut o, l, pw, top, step, y, |v| v.to_string());
    let slot = pw / rows.len().max(1) as f64;
    for (i, r) in rows.iter().enumerate() {
        let x = l + i as f64 * slot;
        if let Some(p) = &r.point {
            for (j, (val, color)) in [(p.one_way_us_p50, "#1f77b4"), (p.one_way_us_p99, "#d62728")]
                .into_iter()
                .enumerate()
            {
                let bx = x + slot * (0.2 + 0.3 * j as f64);
                let _ = writeln!(
                    o,
                    r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
                    y(val),
                    slot * 0.28,
                    t + ph - y(val)
                );
            }
        }
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + slot / 2.0,
            t + ph + 18.0,
            crate::svg::esc(&r.scenario)
        );
    }
    let _ = write!(
        o,
        r##"<text transform="translate(22,{:.1}) rotate(-90)" text-anchor="middle">one-way latency (µs)</text>
<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="#1f77b4"/><text x="{:.1}" y="{:.1}">p50</text>
<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="#d62728"/><text x="{:.1}" y="{:.1}">p99</text>
</svg>
"##,
        t + ph / 2.0,
        l + pw - 120.0,
        h - 30.0,
        l + pw - 104.0,
        h - 20.0,
        l + pw - 60.0,
        h - 30.0,
        l + pw - 44.0,
        h - 20.0
    );
    o
}

fn write_outputs(a: &FairnessArgs, host: &HostInfo, rows: &[FairRow]) -> Result<(), String> {
    let t = table(rows);
    println!("\n{t}");
    let subtitle = format!(
        "{} B ping-pong x {} · flooder frames of {} B{} · {} ({} CPUs) · {}",
        a.size,
        a.count,
        a.flood_size,
        a.flood_rate_mbps.map_or(String::new(), |r| format!(
            ", flooder limited to {r} Mbit/s"
        )),
        host.cpu,
        host.ncpu,
        host.date_utc
    );
    let mut md = String::new();
    md += "# Fairness: an honest pair through the master while a third pipe floods\n\n";
    md += &host.md_header(&a.command_line);
    md += "\n";
    md += "Pipes srv 10.93.0.2, cli 10.93.0.3, flood 10.93.0.4 on one `docknetd --nic none`; \
           `dn-echo server` on srv, `dn-echo client --to 10.93.0.2:7` on cli; the flooder \
           (`docknet-bench flood --pipe RUN/pipes/flood --kind K`) posts frames as fast as its \
           ring takes them.\n\n![latency per scenario](fairness.svg)\n\n";
    md += &t;
    let json = serde_json::json!({
        "command": a.command_line,
        "date": host.date_utc,
        "cpu": host.cpu,
        "ncpu": host.ncpu,
        "size": a.size,
        "count": a.count,
        "flood_size": a.flood_size,
        "flood_rate_mbps": a.flood_rate_mbps,
        "rows": rows,
    });
    crate::report::write_files(&a.out, "fairness", plot(rows, &subtitle), md, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_frames_are_what_they_claim() {
        let f = udp_frame(FLOODER, SERVER, 100);
        assert_eq!(f.len(), 100);
        assert_eq!(&f[26..30], &FLOODER);
        assert_eq!(&f[30..34], &SERVER);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 86);
        assert_eq!(udp_frame(FLOODER, SERVER, 10).len(), 42);
    }

    #[test]
    fn table_and_plot() {
        let p = |p99| PointResult {
            size: 1024,
            count: 10,
            rtt_us_p50: 6.0,
            rtt_us_p99: 2.0 * p99,
            one_way_us_p50: 3.0,
            one_way_us_p99: p99,
            goodput_gbps: 1.0,
            elapsed_s: 1.0,
        };
        let rows = vec![
            FairRow {
                scenario: "quiet".into(),
                point: Some(p(5.0)),
                error: None,
                flood_frames_per_s: 0.0,
                flood_spoofed: 0,
                flood_no_route: 0,
            },
            FairRow {
                scenario: "spoofed flood".into(),
                point: Some(p(10.0)),
                error: None,
                flood_frames_per_s: 1e6,
                flood_spoofed: 5,
                flood_no_route: 0,
            },
        ];
        let t = table(&rows);
        assert!(t.contains("2.00×"), "{t}");
        let s = plot(&rows, "x");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
    }
}

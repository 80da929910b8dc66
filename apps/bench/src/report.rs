//! Results table, ratios section, host facts and the markdown report.

use crate::sizes::format_size;
use crate::stats::PointResult;

/// One (path, size) point: measured, or failed with a reason.
#[derive(Debug, Clone)]
pub struct Row {
    pub path: String,
    pub size: usize,
    pub outcome: Result<PointResult, String>,
}

/// A path that was not run at all, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Renders a padded markdown table (readable as plain text too).
/// Numeric columns are right-aligned.
pub fn markdown_table(header: &[&str], right_align: &[bool], rows: &[Vec<String>]) -> String {
    let ncol = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| width(h).max(3)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(ncol) {
            w[i] = w[i].max(width(c));
        }
    }
    let pad = |s: &str, i: usize| {
        let fill = " ".repeat(w[i] - width(s));
        if right_align.get(i).copied().unwrap_or(false) {
            format!("{fill}{s}")
        } else {
            format!("{s}{fill}")
        }
    };
    let mut out = String::new();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    out += &line(header.iter().enumerate().map(|(i, h)| pad(h, i)).collect());
    out += &line(
        (0..ncol)
            .map(|i| {
                if right_align.get(i).copied().unwrap_or(false) {
                    format!("{}:", "-".repeat(w[i] - 1))
                } else {
                    "-".repeat(w[i])
                }
            })
            .collect(),
    );
    for r in rows {
        out += &line(
            (0..ncol)
                .map(|i| pad(r.get(i).map(String::as_str).unwrap_or(""), i))
                .collect(),
        );
    }
    out
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let keep: String = s.chars().skip(s.chars().count() - (max - 1)).collect();
        format!("…{keep}")
    }
}

/// The main results table followed by footnotes for failed points.
pub fn results_table(rows: &[Row]) -> String {
    let header = [
        "path",
        "size",
        "goodput (Gbit/s)",
        "one-way p50 (µs)",
        "one-way p99 (µs)",
    ];
    let mut cells = Vec::new();
    let mut notes = Vec::new();
    for r in rows {
        let size = format_size(r.size);
        match &r.outcome {
            Ok(p) => cells.push(vec![
                r.path.clone(),
                size,
                format!("{:.3}", p.goodput_gbps),
                format!("{:.1}", p.one_way_us_p50),
                format!("{:.1}", p.one_way_us_p99),
            ]),
            Err(e) => {
                notes.push(format!("{} {}: {}", r.path, size, shorten(e, 400)));
                cells.push(vec![
                    r.path.clone(),
                    size,
                    format!("FAILED [{}]", notes.len()),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
    }
    let mut out = markdown_table(&header, &[false, true, true, true, true], &cells);
    if !notes.is_empty() {
        out.push('\n');
        for (i, n) in notes.iter().enumerate() {
            out += &format!("[{}] {}\n", i + 1, n.replace('\n', " "));
        }
    }
    out
}

/// The measured size closest to `target` on a log scale.
fn nearest_size(sizes: &[usize], target: usize) -> Option<usize> {
    let t = (target as f64).ln();
    sizes.iter().copied().min_by(|a, b| {
        let da = ((*a as f64).ln() - t).abs();
        let db = ((*b as f64).ln() - t).abs();
        da.total_cmp(&db)
    })
}

fn find<'a>(rows: &'a [Row], path: &str, size: usize) -> Option<&'a PointResult> {
    rows.iter()
        .find(|r| r.path == path && r.size == size)
        .and_then(|r| r.outcome.as_ref().ok())
}

/// Ratios at 1 KB and 200 KB (or the nearest measured sizes): each path's
/// one-way p50 latency and goodput divided by the baseline path's (the first
/// of `baselines` with a measured point).
pub fn ratios_section(rows: &[Row], path_order: &[String], baselines: &[&str]) -> String {
    let mut out = String::new();
    let has_ok = |p: &str| rows.iter().any(|r| r.path == p && r.outcome.is_ok());
    let baseline = baselines.iter().copied().find(|p| has_ok(p));
    let Some(baseline) = baseline else {
        out += "No kernel path measured: no baseline for ratios.\n";
        return out;
    };
    if baseline != baselines[0] {
        out += &format!(
            "{} was not measured; ratios are relative to {baseline}.\n\n",
            baselines[0]
        );
    }
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut targets = Vec::new();
    for t in [1024usize, 200 * 1024] {
        if let Some(s) = nearest_size(&sizes, t) {
            if !targets.contains(&s) {
                targets.push(s);
            }
        }
    }
    let mut cells = Vec::new();
    for &size in &targets {
        let base = find(rows, baseline, size);
        for path in path_order {
            let Some(p) = find(rows, path, size) else {
                continue;
            };
            let (lat, gp) = match base {
                Some(b) if b.one_way_us_p50 > 0.0 && b.goodput_gbps > 0.0 => (
                    format!("{:.2}×", p.one_way_us_p50 / b.one_way_us_p50),
                    format!("{:.2}×", p.goodput_gbps / b.goodput_gbps),
                ),
                _ => ("n/a".into(), "n/a".into()),
            };
            cells.push(vec![
                format_size(size),
                path.clone(),
                format!("{:.1}", p.one_way_us_p50),
                lat,
                format!("{:.3}", p.goodput_gbps),
                gp,
            ]);
        }
    }
    out += &format!(
        "Relative to {baseline} (latency ratio < 1 = lower latency; goodput ratio > 1 = more goodput):\n\n"
    );
    out += &markdown_table(
        &[
            "size",
            "path",
            "p50 (µs)",
            "p50 vs base",
            "goodput (Gbit/s)",
            "goodput vs base",
        ],
        &[true, false, true, true, true, true],
        &cells,
    );
    out
}

/// Facts about the host for the report.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub date_utc: String,
    pub kernel: String,
    pub cpu: String,
    pub ncpu: usize,
}

impl HostInfo {
    pub fn collect() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let ncpu = std::thread::available_parallelism().map_or(0, |n| n.get());
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        HostInfo {
            date_utc: format_utc(secs),
            kernel,
            cpu,
            ncpu,
        }
    }

    /// The lines every report starts with: `- Command`, `- Date`, `- Kernel`, `- CPU`
    /// (markdown list items, each ending in a newline).
    pub fn md_header(&self, command: &str) -> String {
        format!(
            "- Command: `{command}`\n- Date: {}\n- Kernel (`uname -r`): {}\n- CPU: {} ({} CPUs)\n",
            self.date_utc, self.kernel, self.cpu, self.ncpu
        )
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from Unix seconds.
pub fn format_utc(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = makefsdata::date::utc_datetime(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Write a benchmark's outputs: OUT/STEM.svg, OUT/STEM.md and OUT/STEM.json.
pub fn write_files(
    out: &std::path::Path,
    stem: &str,
    svg: String,
    md: String,
    json: &serde_json::Value,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let json = serde_json::to_string_pretty(json).map_err(|e| format!("{stem}.json: {e}"))? + "\n";
    for (ext, text) in [("svg", svg), ("md", md), ("json", json)] {
        let p = out.join(format!("{stem}.{ext}"));
        std::fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// Quotes a command line for display (single quotes where needed).
pub fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything the markdown report needs.
pub struct Report<'a> {
    pub title: &'a str,
    pub paths_text: &'a str,
    pub svg_name: &'a str,
    pub baselines: &'a [&'a str],
    /// An extra section: heading, markdown body.
    pub extra: Option<(&'a str, &'a str)>,
    pub command: String,
    pub host: &'a HostInfo,
    pub rows: &'a [Row],
    pub skipped: &'a [Skipped],
    pub path_order: &'a [String],
}

pub const DEFINITIONS: &str = "\
One round trip: the client writes a `size`-byte message, the server echoes it, the client \
reads all `size` bytes back (and checks them, outside the timed window). One-way latency = \
RTT / 2, reported as p50 and p99 (nearest rank) over the measured messages. Goodput = \
size × count × 8 / elapsed, in Gbit/s (payload in one direction), where elapsed is the \
total time of the measured (non-warm-up) round trips.";

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s += &format!("# {}\n\n", r.title);
    s += &r.host.md_header(&r.command);
    s += "\n";
    s += &format!("{DEFINITIONS}\n\n");
    s += &format!("{}\n\n", r.paths_text);
    s += &format!(
        "![goodput and one-way latency vs message size]({})\n\n",
        r.svg_name
    );
    s += "## Results\n\n";
    s += &results_table(r.rows);
    s += "\n## Ratios\n\n";
    s += &ratios_section(r.rows, r.path_order, r.baselines);
    if let Some((heading, body)) = r.extra {
        s += &format!("\n## {heading}\n\n{body}");
    }
    if !r.skipped.is_empty() {
        s += "\n## Skipped paths\n\n";
        for k in r.skipped {
            s += &format!("- `{}`: {}\n", k.path, k.reason);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;

    fn ok(path: &str, size: usize, rtt_ns: u64) -> Row {
        Row {
            path: path.into(),
            size,
            outcome: Ok(summarize(size, &[rtt_ns; 10])),
        }
    }

    #[test]
    fn table_is_aligned_with_failures_footnoted() {
        let rows = vec![
            ok("kernel-lo", 64, 100_000),
            ok("kernel-lo", 1024, 120_000),
            Row {
                path: "docknet-fc".into(),
                size: 204800,
                outcome: Err("exit status: 1; stderr: boom".into()),
            },
        ];
        let t = results_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("| path"));
        assert!(lines[0].contains("goodput (Gbit/s)"));
        assert!(lines[0].contains("one-way p50 (µs)"));
        assert!(lines[0].contains("one-way p99 (µs)"));
        // header, separator, 3 rows: all the same display width.
        let w = lines[0].chars().count();
        for l in &lines[..5] {
            assert_eq!(l.chars().count(), w, "{l:?}");
        }
        assert!(lines[1].starts_with("| ---"));
        assert!(lines[1].contains(":|") || lines[1].contains(": |"));
        // 64-byte rows: RTT 100 µs -> one-way 50.0; goodput 64*8/100µs.
        assert!(lines[2].contains("kernel-lo"));
        assert!(lines[2].contains(" 64 |"));
        assert!(lines[2].contains("50.0"));
        assert!(lines[2].contains("0.005"));
        assert!(lines[3].contains(" 1K |"));
        assert!(lines[4].contains("FAILED [1]"));
        assert!(lines[4].contains("200K"));
        assert!(t.contains("[1] docknet-fc 200K: exit status: 1; stderr: boom"));
    }

    #[test]
    fn ratios_against_bridge() {
        let rows = vec![
            ok("kernel-bridge", 1024, 100_000),
            ok("docknet-fc", 1024, 50_000),
            ok("kernel-bridge", 204800, 1_000_000),
            ok("docknet-fc", 204800, 500_000),
        ];
        let order = vec!["kernel-bridge".to_string(), "docknet-fc".to_string()];
        let s = ratios_section(&rows, &order, &["kernel-bridge", "kernel-lo"]);
        assert!(s.contains("Relative to kernel-bridge"));
        let fc: Vec<&str> = s.lines().filter(|l| l.contains("docknet-fc")).collect();
        assert_eq!(fc.len(), 2);
        for l in fc {
            assert!(l.contains("0.50×") && l.contains("2.00×"), "{l}");
        }
    }

    #[test]
    fn ratios_fall_back_to_loopback_and_nearest_size() {
        let rows = vec![ok("kernel-lo", 1000, 100_000), ok("x", 1000, 200_000)];
        let order = vec!["kernel-lo".to_string(), "x".to_string()];
        let s = ratios_section(&rows, &order, &["kernel-bridge", "kernel-lo"]);
        assert!(s.contains("relative to kernel-lo"));
        assert!(s.contains("2.00×") && s.contains("0.50×"));
        assert!(ratios_section(&[], &order, &["kernel-lo"]).contains("no baseline"));
    }

    #[test]
    fn md_header_lines() {
        let h = HostInfo {
            date_utc: "2000-02-29 00:00:00 UTC".into(),
            kernel: "6.1.0".into(),
            cpu: "Some CPU".into(),
            ncpu: 8,
        };
        assert_eq!(
            h.md_header("bench x"),
            "- Command: `bench x`\n- Date: 2000-02-29 00:00:00 UTC\n\
             - Kernel (`uname -r`): 6.1.0\n- CPU: Some CPU (8 CPUs)\n"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn shell_quoting() {
        let a = vec![
            "bench".to_string(),
            "--sizes".into(),
            "64,1K".into(),
            "a b".into(),
            "it's".into(),
        ];
        assert_eq!(shell_join(&a), r"bench --sizes 64,1K 'a b' 'it'\''s'");
    }
}

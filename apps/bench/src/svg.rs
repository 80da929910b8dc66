//! A small hand-written SVG plot in the style of the paper's Fig. 8: two
//! panels — goodput vs message size and one-way p50 latency vs message size —
//! with a log-2 x axis, one line per path, and a shared legend.

use std::fmt::Write as _;

use crate::sizes::format_size;

/// One measured point of a series: x (log-2 axis) and the y value of each panel.
#[derive(Debug, Clone, Copy)]
pub struct SeriesPoint {
    pub x: usize,
    pub y: [f64; 2],
}

/// What the axes and panels say.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub x_label: &'a str,
    /// (panel title, y label) of panels (a) and (b).
    pub panels: [(&'a str, &'a str); 2],
}

/// The ping-pong figure: goodput and one-way p50 vs message size.
pub const PINGPONG_LABELS: Labels<'static> = Labels {
    x_label: "message size (bytes, log scale; K = 1024)",
    panels: [
        ("(a) Goodput", "goodput (Gbit/s)"),
        ("(b) One-way latency, p50", "one-way latency p50 (µs)"),
    ],
};

/// One path's line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<SeriesPoint>,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const DASHES: [&str; 6] = ["", "6,3", "", "2,3", "8,3,2,3", ""];

const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 520.0;
const PLOT_W: f64 = 410.0;
const PLOT_H: f64 = 320.0;
const PLOT_TOP: f64 = 90.0;
const PANEL_LEFT: [f64; 2] = [85.0, 635.0];

/// Horizontal grid lines with their labels (`label(v)`) at 0, `step`, 2 × `step`, ... up to
/// `top`, for a plot whose x range is `left..left + width` and whose y position of a value
/// is `y(v)`.
pub fn y_grid(
    o: &mut String,
    left: f64,
    width: f64,
    top: f64,
    step: f64,
    y: impl Fn(f64) -> f64,
    label: impl Fn(f64) -> String,
) {
    use std::fmt::Write as _;
    let mut v = 0.0;
    while v <= top + 1e-9 {
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            y(v),
            left + width,
            left - 6.0,
            y(v) + 4.0,
            label(v)
        );
        v += step;
    }
}

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// A "nice" tick step (1, 2, 2.5 or 5 × 10^k) for about `target` intervals up to `max`.
pub fn nice_step(max: f64, target: usize) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// A y axis from 0 for values up to `max`: its [`nice_step`] (about `target` steps) and
/// its top, the first multiple of the step at or above `max`.
pub fn nice_axis(max: f64, target: usize) -> (f64, f64) {
    let step = nice_step(max, target);
    (step, (max / step).ceil() * step)
}

fn fmt_tick(v: f64, step: f64) -> String {
    // As many decimals as the step needs (0.25 -> 2, 0.2 -> 1, 5 -> 0).
    let decimals = (0..6usize)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6
        })
        .unwrap_or(6);
    format!("{v:.decimals$}")
}

fn marker(out: &mut String, i: usize, x: f64, y: f64, color: &str) {
    let r = 4.0;
    match i % 4 {
        0 => {
            let _ = write!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{color}"/>"#
            );
        }
        1 => {
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{}" height="{}" fill="{color}"/>"#,
                x - r,
                y - r,
                2.0 * r,
                2.0 * r
            );
        }
        2 => {
            let _ = write!(
                out,
                r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{color}"/>"#,
                x,
                y - r - 1.0,
                x - r - 0.5,
                y + r,
                x + r + 0.5,
                y + r
            );
        }
        _ => {
            let _ = write!(
                out,
                r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{color}"/>"#,
                x,
                y - r - 1.0,
                x + r + 1.0,
                y,
                x,
                y + r + 1.0,
                x - r - 1.0,
                y
            );
        }
    }
    out.push('\n');
}

struct Axis {
    lo: f64,
    hi: f64,
}

impl Axis {
    fn frac(&self, v: f64) -> f64 {
        if self.hi > self.lo {
            (v - self.lo) / (self.hi - self.lo)
        } else {
            0.5
        }
    }
}

/// What one panel shows; `value` picks the y value of a point.
struct PanelSpec<'a> {
    idx: usize,
    title: &'a str,
    y_label: &'a str,
    x_label: &'a str,
}

/// Draws one panel.
fn panel(out: &mut String, spec: &PanelSpec, series: &[Series], x_ticks: &[usize], x_axis: &Axis) {
    let PanelSpec {
        idx,
        title,
        y_label,
        x_label,
    } = *spec;
    let value = |p: &SeriesPoint| p.y[idx];
    let left = PANEL_LEFT[idx];
    let top = PLOT_TOP;
    let ymax_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(value))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (step, ymax) = nice_axis(
        if ymax_data > 0.0 {
            ymax_data * 1.05
        } else {
            1.0
        },
        5,
    );
    let sx = |size: usize| left + x_axis.frac((size as f64).log2()) * PLOT_W;
    let sy = |v: f64| top + PLOT_H - (v / ymax).clamp(0.0, 1.0) * PLOT_H;

    let _ = writeln!(out, r#"<g class="panel" id="panel-{idx}">"#);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        left + PLOT_W / 2.0,
        top - 12.0,
        esc(title)
    );
    // Grid and y ticks.
    let mut v = 0.0;
    while v <= ymax + step * 1e-6 {
        let y = sy(v);
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0" stroke-width="1"/>"##,
            left + PLOT_W
        );
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{left:.1}" y2="{y:.1}" stroke="#000"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"##,
            left - 5.0,
            left - 8.0,
            y + 4.0,
            fmt_tick(v, step)
        );
        v += step;
    }
    // x ticks; a label that would collide with the previous one drops to a
    // second row.
    let mut prev: Option<(f64, f64, bool)> = None; // (x, half width, lowered)
    for &t in x_ticks {
        let x = sx(t);
        let label = format_size(t);
        let half = label.chars().count() as f64 * 3.6;
        let lowered = match prev {
            Some((px, ph, plow)) => !plow && x - px < ph + half + 4.0,
            None => false,
        };
        prev = Some((x, half, lowered));
        let ly = top + PLOT_H + 19.0 + if lowered { 14.0 } else { 0.0 };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0" stroke-width="1"/>"##,
            top + PLOT_H
        );
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#000"/><text x="{x:.1}" y="{ly:.1}" text-anchor="middle" font-size="12">{}</text>"##,
            top + PLOT_H,
            top + PLOT_H + 5.0,
            esc(&label)
        );
    }
    // Frame.
    let _ = writeln!(
        out,
        r##"<rect x="{left:.1}" y="{top:.1}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#000" stroke-width="1"/>"##
    );
    // Axis labels.
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{}</text>"#,
        left + PLOT_W / 2.0,
        top + PLOT_H + 50.0,
        esc(x_label)
    );
    let (lx, ly) = (left - 55.0, top + PLOT_H / 2.0);
    let _ = writeln!(
        out,
        r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
        esc(y_label)
    );
    // Lines: exactly one polyline per series (failed points are left out).
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let dash = DASHES[i % DASHES.len()];
        let mut pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| value(p).is_finite())
            .map(|p| (sx(p.x), sy(value(p))))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            out,
            r#"<polyline data-path="{}" points="{}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>"#,
            esc(&s.name),
            coords.join(" ")
        );
        for (x, y) in pts {
            marker(out, i, x, y, color);
        }
    }
    out.push_str("</g>\n");
}

fn x_ticks(sizes: &[usize]) -> Vec<usize> {
    let mut s = sizes.to_vec();
    s.sort_unstable();
    s.dedup();
    if s.len() <= 10 {
        return s;
    }
    // Too many to label: powers of 4 within the range.
    let (lo, hi) = (s[0], s[s.len() - 1]);
    let mut t = Vec::new();
    let mut v = 1usize;
    while v <= hi {
        if v >= lo {
            t.push(v);
        }
        v = v.saturating_mul(4);
    }
    t
}

/// Renders the whole figure.
pub fn render(series: &[Series], title: &str, subtitle: &str, labels: &Labels) -> String {
    let sizes: Vec<usize> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.x))
        .collect();
    let ticks = x_ticks(&sizes);
    let (lo, hi) = match (ticks.first(), ticks.last()) {
        (Some(&a), Some(&b)) if b > a => ((a as f64).log2(), (b as f64).log2()),
        (Some(&a), _) => ((a as f64).log2() - 1.0, (a as f64).log2() + 1.0),
        _ => (6.0, 19.0),
    };
    let pad = (hi - lo) * 0.04;
    let x_axis = Axis {
        lo: lo - pad,
        hi: hi + pad,
    };

    let mut out = String::new();
    out += r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    out.push('\n');
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="18" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="50" text-anchor="middle" font-size="12" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        esc(subtitle)
    );
    let specs = [0, 1].map(|idx| PanelSpec {
        idx,
        title: labels.panels[idx].0,
        y_label: labels.panels[idx].1,
        x_label: labels.x_label,
    });
    for spec in &specs {
        panel(&mut out, spec, series, &ticks, &x_axis);
    }
    // Legend: one row, centered under the panels.
    let item_w = 200.0;
    let total = item_w * series.len() as f64;
    let mut x = (WIDTH - total) / 2.0;
    let y = HEIGHT - 28.0;
    let _ = writeln!(out, r#"<g class="legend">"#);
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let dash = DASHES[i % DASHES.len()];
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"{dash_attr}/>"#,
            x + 36.0
        );
        marker(&mut out, i, x + 18.0, y, color);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="13">{}</text>"#,
            x + 44.0,
            y + 4.5,
            esc(&if s.points.is_empty() {
                format!("{} (no data)", s.name)
            } else {
                s.name.clone()
            })
        );
        x += item_w;
    }
    out += "</g>\n</svg>\n";
    out
}

/// One group of bars (a path, a member count): one value per series of its panel (`None`:
/// not measured).
#[derive(Debug, Clone)]
pub struct BarGroup {
    pub label: String,
    pub values: Vec<Option<f64>>,
}

/// One panel of a bar figure.
#[derive(Debug, Clone)]
pub struct BarPanel {
    pub title: String,
    pub y_label: String,
    /// The series (legend entries), one bar each per group.
    pub series: Vec<String>,
    pub groups: Vec<BarGroup>,
}

/// A value written above its bar: three significant digits or so.
fn bar_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Panels of grouped bars side by side (the `nat` and `cluster` figures), each with its
/// legend under it; values are written above the bars.
pub fn bar_figure(title: &str, subtitle: &str, panels: &[BarPanel]) -> String {
    let n = panels.len().max(1) as f64;
    let (top, ph) = (PLOT_TOP, PLOT_H);
    let slot_w = WIDTH / n;
    let mut o = String::new();
    o += r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    o.push('\n');
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="18" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
    let _ = writeln!(
        o,
        r##"<text x="{:.1}" y="50" text-anchor="middle" font-size="12" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        esc(subtitle)
    );
    for (pi, p) in panels.iter().enumerate() {
        let left = pi as f64 * slot_w + 85.0;
        let pw = slot_w - 85.0 - 50.0;
        let max = p
            .groups
            .iter()
            .flat_map(|g| g.values.iter().flatten())
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let (step, ymax) = nice_axis(if max > 0.0 { max * 1.12 } else { 1.0 }, 5);
        let y = |v: f64| top + ph - (v / ymax).clamp(0.0, 1.0) * ph;
        let _ = writeln!(o, r#"<g class="panel" id="panel-{pi}">"#);
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            left + pw / 2.0,
            top - 12.0,
            esc(&p.title)
        );
        y_grid(&mut o, left, pw, ymax, step, y, |v| fmt_tick(v, step));
        let _ = writeln!(
            o,
            r##"<rect x="{left:.1}" y="{top:.1}" width="{pw:.1}" height="{ph}" fill="none" stroke="#000"/>"##
        );
        let (lx, ly) = (left - 55.0, top + ph / 2.0);
        let _ = writeln!(
            o,
            r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
            esc(&p.y_label)
        );
        let gw = pw / p.groups.len().max(1) as f64;
        let ns = p.series.len().max(1) as f64;
        let bw = gw * 0.7 / ns;
        for (gi, g) in p.groups.iter().enumerate() {
            let gx = left + gi as f64 * gw;
            for (si, v) in g.values.iter().enumerate() {
                let bx = gx + gw * 0.15 + si as f64 * bw;
                let color = COLORS[si % COLORS.len()];
                match v.filter(|v| v.is_finite()) {
                    Some(v) => {
                        let _ = writeln!(
                            o,
                            r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
                            y(v),
                            bw * 0.9,
                            top + ph - y(v),
                            bx + bw * 0.45,
                            y(v) - 4.0,
                            esc(&bar_value(v))
                        );
                    }
                    None => {
                        let _ = writeln!(
                            o,
                            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#888">n/a</text>"##,
                            bx + bw * 0.45,
                            top + ph - 4.0
                        );
                    }
                }
            }
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
                gx + gw / 2.0,
                top + ph + 18.0,
                esc(&g.label)
            );
        }
        // Legend under the panel.
        let mut x = left;
        let ly = top + ph + 48.0;
        for (si, name) in p.series.iter().enumerate() {
            let color = COLORS[si % COLORS.len()];
            let _ = writeln!(
                o,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{ly:.1}" font-size="12">{}</text>"#,
                ly - 10.0,
                x + 16.0,
                esc(name)
            );
            x += 24.0 + name.chars().count() as f64 * 7.0;
        }
        o += "</g>\n";
    }
    o += "</svg>\n";
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal well-formedness check: balanced, properly nested tags, quoted
    /// attributes, no stray `<` or `&` in text.
    fn check_well_formed(xml: &str) -> Result<usize, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = 0;
        let b = xml.as_bytes();
        let mut i = 0;
        let mut seen_root = false;
        while i < b.len() {
            if b[i] == b'<' {
                let end = xml[i..].find('>').ok_or("unterminated tag")? + i;
                let tag = &xml[i + 1..end];
                if tag.starts_with('?') {
                    if !tag.ends_with('?') {
                        return Err("bad PI".into());
                    }
                } else if let Some(name) = tag.strip_prefix('/') {
                    let open = stack.pop().ok_or("close without open")?;
                    if open != name.trim() {
                        return Err(format!("</{name}> closes <{open}>"));
                    }
                } else {
                    let self_closing = tag.ends_with('/');
                    let body = tag.trim_end_matches('/');
                    let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
                    if name.is_empty() {
                        return Err("empty tag name".into());
                    }
                    if stack.is_empty() {
                        if seen_root {
                            return Err("two root elements".into());
                        }
                        seen_root = true;
                    }
                    // Attributes: name="value" pairs.
                    let attrs = &body[name.len()..];
                    if attrs.matches('"').count() % 2 != 0 {
                        return Err(format!("unbalanced quotes in <{name}>"));
                    }
                    if attrs.contains('<') {
                        return Err("'<' in attribute".into());
                    }
                    elements += 1;
                    if !self_closing {
                        stack.push(name);
                    }
                }
                i = end + 1;
            } else {
                if b[i] == b'&' {
                    let semi = xml[i..].find(';').ok_or("bare &")?;
                    let ent = &xml[i + 1..i + semi];
                    if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) {
                        return Err(format!("unknown entity &{ent};"));
                    }
                } else if b[i] == b'>' {
                    return Err("stray '>'".into());
                }
                i += 1;
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if !seen_root {
            return Err("no root element".into());
        }
        Ok(elements)
    }

    fn sample() -> Vec<Series> {
        let sizes = [64usize, 256, 1024, 4096, 16384, 65536, 204800, 409600];
        [
            "kernel-lo",
            "kernel-bridge",
            "docknet-master",
            "docknet-fc <&>",
        ]
        .iter()
        .enumerate()
        .map(|(k, name)| Series {
            name: name.to_string(),
            points: sizes
                .iter()
                .map(|&s| SeriesPoint {
                    x: s,
                    y: [
                        s as f64 / 40_000.0 * (k + 1) as f64,
                        50.0 + s as f64 / 1000.0,
                    ],
                })
                .collect(),
        })
        .collect()
    }

    #[test]
    fn svg_is_well_formed_with_one_polyline_per_path_per_panel() {
        let series = sample();
        let svg = render(&series, "Ping-pong", "host: \"x\" & y", &PINGPONG_LABELS);
        check_well_formed(&svg).unwrap();
        assert!(svg.starts_with("<?xml"));
        for panel in ["panel-0", "panel-1"] {
            let start = svg.find(&format!(r#"id="{panel}""#)).unwrap();
            let end = start + svg[start..].find("</g>").unwrap();
            let body = &svg[start..end];
            assert_eq!(body.matches("<polyline").count(), series.len());
            for s in &series {
                let attr = format!(r#"data-path="{}""#, esc(&s.name));
                assert_eq!(body.matches(&attr).count(), 1, "{attr}");
            }
        }
        assert_eq!(svg.matches("<polyline").count(), 2 * series.len());
        // Legend names every path; axes are labelled with units.
        assert!(svg.contains("docknet-fc &lt;&amp;&gt;"));
        assert!(svg.contains("goodput (Gbit/s)"));
        assert!(svg.contains("(µs)"));
        assert!(svg.contains(">200K<") && svg.contains(">64<"));
    }

    #[test]
    fn svg_handles_empty_and_single_point() {
        check_well_formed(&render(&[], "t", "s", &PINGPONG_LABELS)).unwrap();
        let one = vec![Series {
            name: "a".into(),
            points: vec![SeriesPoint {
                x: 1024,
                y: [0.5, 60.0],
            }],
        }];
        let mut two = one.clone();
        two.push(Series {
            name: "b".into(),
            points: vec![],
        });
        let svg = render(&two, "t", "s", &PINGPONG_LABELS);
        check_well_formed(&svg).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains(">b (no data)<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn checker_rejects_broken_xml() {
        assert!(check_well_formed("<a><b></a></b>").is_err());
        assert!(check_well_formed("<a>&</a>").is_err());
        assert!(check_well_formed("<a x=\"1></a>").is_err());
        assert!(check_well_formed("<a/><b/>").is_err());
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(12.0, 5), 2.5);
        assert_eq!(nice_step(300.0, 5), 100.0);
        assert_eq!(nice_step(0.9, 5), 0.2);
        assert_eq!(fmt_tick(0.4, 0.2), "0.4");
        assert_eq!(fmt_tick(0.25, 0.25), "0.25");
        assert_eq!(fmt_tick(200.0, 100.0), "200");
    }

    #[test]
    fn bar_figure_is_well_formed() {
        let panels = vec![
            BarPanel {
                title: "(a) latency".into(),
                y_label: "µs".into(),
                series: vec!["direct".into(), "via NAT <&>".into()],
                groups: vec![
                    BarGroup {
                        label: "docknet-fc".into(),
                        values: vec![Some(1.2), Some(4.1)],
                    },
                    BarGroup {
                        label: "kernel".into(),
                        values: vec![Some(24.0), None],
                    },
                ],
            },
            BarPanel {
                title: "(b) requests/s".into(),
                y_label: "thousand requests/s".into(),
                series: vec!["measured".into()],
                groups: vec![],
            },
        ];
        let svg = bar_figure("t", "s & t", &panels);
        check_well_formed(&svg).unwrap();
        assert_eq!(svg.matches("<rect").count(), 1 + 2 + 3 + 3);
        assert!(svg.contains(">4.10<") && svg.contains(">24.0<") && svg.contains(">n/a<"));
        assert!(svg.contains("via NAT &lt;&amp;&gt;"));
        check_well_formed(&bar_figure("t", "s", &[])).unwrap();
    }
}

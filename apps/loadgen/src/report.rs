//! wrk-like text output and the JSON line.

use std::time::Duration;

use crate::hist::Histogram;

/// Everything reported about a run.
pub struct Summary<'a> {
    pub requests: u64,
    pub bytes: u64,
    pub duration_s: f64,
    pub non_2xx_3xx: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub hist: &'a Histogram,
    /// Connections asked for (`-c`), and the most established at one time.
    pub connections: usize,
    pub established_peak: usize,
    /// Seconds from the start until every connection was established (`None`: never).
    pub all_established_s: Option<f64>,
}

/// A latency in ns as wrk prints it: `812.00us`, `1.25ms`, `2.00s`.
pub fn fmt_latency(ns: f64) -> String {
    let us = ns / 1000.0;
    if us < 1000.0 {
        format!("{us:.2}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// Bytes with binary units as wrk prints them: `512.00B`, `1.50KB`, `120.35MB`.
pub fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", UNITS[u])
}

/// `3s`, `500ms`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Summary<'_> {
    pub fn errors(&self) -> u64 {
        self.non_2xx_3xx + self.connect_errors + self.read_errors + self.write_errors
    }

    pub fn rps(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.requests as f64 / self.duration_s
        } else {
            0.0
        }
    }

    fn us(&self, p: f64) -> f64 {
        self.hist.percentile(p) as f64 / 1000.0
    }

    pub fn json(&self) -> String {
        serde_json::json!({
            "requests": self.requests,
            "duration_s": self.duration_s,
            "rps": self.rps(),
            "latency_us_p50": self.us(50.0),
            "latency_us_p75": self.us(75.0),
            "latency_us_p90": self.us(90.0),
            "latency_us_p99": self.us(99.0),
            "latency_us_avg": self.hist.mean() / 1000.0,
            "latency_us_stdev": self.hist.stdev() / 1000.0,
            "latency_us_max": self.hist.max() as f64 / 1000.0,
            "errors": self.errors(),
            "non_2xx_3xx": self.non_2xx_3xx,
            "connect_errors": self.connect_errors,
            "read_errors": self.read_errors,
            "write_errors": self.write_errors,
            "bytes": self.bytes,
            "connections": self.connections,
            "established_peak": self.established_peak,
            "all_established_s": self.all_established_s,
        })
        .to_string()
    }

    pub fn text(&self) -> String {
        let h = self.hist;
        let mut s = String::new();
        s += "  Thread Stats   Avg      Stdev     Max   +/- Stdev\n";
        s += &format!(
            "    Latency {:>9} {:>9} {:>9} {:>8.2}%\n",
            fmt_latency(h.mean()),
            fmt_latency(h.stdev()),
            fmt_latency(h.max() as f64),
            h.within_stdev()
        );
        s += "  Latency Distribution\n";
        for p in [50.0, 75.0, 90.0, 99.0] {
            s += &format!("     {p:.0}% {:>9}\n", fmt_latency(h.percentile(p) as f64));
        }
        s += &format!(
            "  {} requests in {:.2}s, {} read\n",
            self.requests,
            self.duration_s,
            fmt_bytes(self.bytes as f64)
        );
        if self.connect_errors + self.read_errors + self.write_errors > 0 {
            s += &format!(
                "  Socket errors: connect {}, read {}, write {}, timeout 0\n",
                self.connect_errors, self.read_errors, self.write_errors
            );
        }
        if self.non_2xx_3xx > 0 {
            s += &format!("  Non-2xx or 3xx responses: {}\n", self.non_2xx_3xx);
        }
        match self.all_established_s {
            Some(t) => {
                s += &format!(
                    "  {} connections established in {t:.2}s\n",
                    self.connections
                )
            }
            None => {
                s += &format!(
                    "  {} of {} connections established at most\n",
                    self.established_peak, self.connections
                )
            }
        }
        s += &format!("Requests/sec: {:>10.2}\n", self.rps());
        let tps = if self.duration_s > 0.0 {
            self.bytes as f64 / self.duration_s
        } else {
            0.0
        };
        s += &format!("Transfer/sec: {:>10}\n", fmt_bytes(tps));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_latency(812_000.0), "812.00us");
        assert_eq!(fmt_latency(1_250_000.0), "1.25ms");
        assert_eq!(fmt_latency(2e9), "2.00s");
        assert_eq!(fmt_bytes(512.0), "512.00B");
        assert_eq!(fmt_bytes(1536.0), "1.50KB");
        assert_eq!(fmt_bytes(3.0 * 1024.0 * 1024.0), "3.00MB");
        assert_eq!(fmt_duration(Duration::from_secs(3)), "3s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn summary_outputs() {
        let mut h = Histogram::new();
        for v in [100_000u64, 200_000, 300_000, 400_000] {
            h.record(v);
        }
        let s = Summary {
            requests: 4,
            bytes: 4 * 1300,
            duration_s: 2.0,
            non_2xx_3xx: 1,
            connect_errors: 2,
            read_errors: 0,
            write_errors: 0,
            hist: &h,
            connections: 8,
            established_peak: 8,
            all_established_s: Some(0.25),
        };
        assert_eq!(s.errors(), 3);
        assert!((s.rps() - 2.0).abs() < 1e-9);
        let j: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        for k in [
            "requests",
            "duration_s",
            "rps",
            "latency_us_p50",
            "latency_us_p99",
            "errors",
            "bytes",
        ] {
            assert!(j.get(k).is_some(), "{k}");
        }
        assert_eq!(j["requests"], 4);
        assert_eq!(j["errors"], 3);
        assert_eq!(j["bytes"], 5200);
        assert_eq!(j["connections"], 8);
        assert_eq!(j["established_peak"], 8);
        assert_eq!(j["all_established_s"], 0.25);
        assert!(
            s.text().contains("8 connections established in 0.25s"),
            "{}",
            s.text()
        );
        let never = Summary {
            established_peak: 5,
            all_established_s: None,
            ..s
        };
        assert!(never
            .text()
            .contains("5 of 8 connections established at most"));
        assert!(
            serde_json::from_str::<serde_json::Value>(&never.json()).unwrap()["all_established_s"]
                .is_null()
        );
        let p50 = j["latency_us_p50"].as_f64().unwrap();
        assert!((200.0..=204.0).contains(&p50), "{p50}");
        let t = s.text();
        assert!(t.contains("Requests/sec:       2.00"), "{t}");
        assert!(t.contains("Non-2xx or 3xx responses: 1"));
        assert!(t.contains("Socket errors: connect 2"));
        assert!(t.contains("4 requests in 2.00s, 5.08KB read"));
    }
}

//! Where the CPU went during a measurement (the "short profile" a missed target is
//! reported with): CPU time of each process involved, from `/proc/PID/stat` (utime +
//! stime, clock ticks) and their involuntary context switches (`/proc/PID/status`); the
//! CPU time of the client run to completion in the window (`getrusage(RUSAGE_CHILDREN)`:
//! the only child reaped meanwhile); and the split of all CPUs' time from `/proc/stat`
//! (user, system, softirq — where the kernel forwards and NATs packets —, idle, steal).
//! Everything is given in cores: CPU seconds / wall seconds.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

/// A process to account for.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    /// Count its descendants too (nginx's master and its worker).
    pub tree: bool,
}

impl Watched {
    pub fn one(name: &str, pid: u32) -> Self {
        Watched {
            name: name.into(),
            pid,
            tree: false,
        }
    }

    pub fn tree(name: &str, pid: u32) -> Self {
        Watched {
            name: name.into(),
            pid,
            tree: true,
        }
    }
}

/// One line of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub name: String,
    /// CPU seconds per wall second.
    pub cores: f64,
    /// Times it was preempted (involuntary context switches), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempted: Option<u64>,
}

/// What a measurement window cost, process by process and for the whole machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    pub seconds: f64,
    pub ncpu: usize,
    pub processes: Vec<Share>,
    /// `/proc/stat`'s split of all CPUs: user (with nice), system, softirq (with irq),
    /// idle (with iowait), steal.
    pub machine: Vec<Share>,
}

/// `/proc/stat`'s first line: user, nice, system, idle, iowait, irq, softirq, steal.
fn machine_ticks() -> Option<[u64; 8]> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(s.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<[u64; 8]> {
    let mut it = line.split_whitespace();
    if it.next()? != "cpu" {
        return None;
    }
    let mut v = [0u64; 8];
    for x in &mut v {
        *x = it.next()?.parse().ok()?;
    }
    Some(v)
}

/// utime + stime of `pid` in clock ticks (fields 14 and 15 of `/proc/PID/stat`) and its
/// parent's pid.
fn stat_ticks(pid: u32) -> Option<(u64, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<(u64, u32)> {
    // The command name is in parentheses and may hold anything: fields after the last ')'
    // start at field 3 (state); ppid is field 4, utime 14, stime 15.
    let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ut + st, ppid))
}

fn preemptions(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `pid` and (with `tree`) its descendants, from one scan of `/proc`.
fn with_descendants(pid: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|&(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

fn parents() -> HashMap<u32, u32> {
    let mut m = HashMap::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some((_, ppid)) = stat_ticks(pid) {
                    m.insert(pid, ppid);
                }
            }
        }
    }
    m
}

/// (ticks, preemptions) of each watched process now.
fn sample(w: &[Watched]) -> Vec<(u64, u64)> {
    let parents = if w.iter().any(|w| w.tree) {
        parents()
    } else {
        HashMap::new()
    };
    w.iter()
        .map(|w| {
            let pids = if w.tree {
                with_descendants(w.pid, &parents)
            } else {
                vec![w.pid]
            };
            pids.iter().fold((0, 0), |(t, p), &pid| {
                (
                    t + stat_ticks(pid).map_or(0, |x| x.0),
                    p + preemptions(pid).unwrap_or(0),
                )
            })
        })
        .collect()
}

/// CPU seconds of the children reaped so far (user + system).
fn children_cpu_s() -> f64 {
    // SAFETY: an all-zero rusage is valid storage; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A measurement window being accounted for.
pub struct Sampler {
    watched: Vec<Watched>,
    client: Option<String>,
    t0: Instant,
    machine: Option<[u64; 8]>,
    procs: Vec<(u64, u64)>,
    children: f64,
}

impl Sampler {
    /// Starts a window over `watched`, plus (under the name `client`) the CPU time of
    /// children reaped before [`Sampler::finish`]: the client run in the window.
    pub fn start(watched: Vec<Watched>, client: Option<&str>) -> Self {
        Sampler {
            procs: sample(&watched),
            watched,
            client: client.map(str::to_string),
            children: children_cpu_s(),
            machine: machine_ticks(),
            t0: Instant::now(),
        }
    }

    pub fn finish(self) -> Breakdown {
        let secs = self.t0.elapsed().as_secs_f64().max(1e-6);
        let tck = clk_tck();
        let now = sample(&self.watched);
        let mut processes: Vec<Share> = self
            .watched
            .iter()
            .zip(self.procs.iter().zip(&now))
            .map(|(w, (a, b))| Share {
                name: w.name.clone(),
                cores: b.0.saturating_sub(a.0) as f64 / tck / secs,
                preempted: Some(b.1.saturating_sub(a.1)),
            })
            .collect();
        if let Some(c) = &self.client {
            processes.push(Share {
                name: c.clone(),
                cores: (children_cpu_s() - self.children).max(0.0) / secs,
                preempted: None,
            });
        }
        let machine = match (self.machine, machine_ticks()) {
            (Some(a), Some(b)) => machine_split(&a, &b, tck, secs),
            _ => Vec::new(),
        };
        Breakdown {
            seconds: secs,
            ncpu: std::thread::available_parallelism().map_or(0, |n| n.get()),
            processes,
            machine,
        }
    }
}

/// The split of all CPUs between two `/proc/stat` samples.
fn machine_split(a: &[u64; 8], b: &[u64; 8], tck: f64, secs: f64) -> Vec<Share> {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| y.saturating_sub(*x) as f64 / tck / secs)
        .collect();
    // user, nice, system, idle, iowait, irq, softirq, steal
    [
        ("user", d[0] + d[1]),
        ("system", d[2]),
        ("softirq", d[5] + d[6]),
        ("idle", d[3] + d[4]),
        ("steal", d[7]),
    ]
    .into_iter()
    .map(|(n, c)| Share {
        name: n.into(),
        cores: c,
        preempted: None,
    })
    .collect()
}

impl Breakdown {
    /// One line: `dn-nat 0.62 (1200 preempted), web-1 0.45, ...; all 2 CPUs: user 1.41,
    /// system 0.30, softirq 0.12, idle 0.05, steal 0.02` (cores).
    pub fn line(&self) -> String {
        let mut s = String::new();
        for (i, p) in self.processes.iter().enumerate() {
            if i > 0 {
                s += ", ";
            }
            let _ = write!(s, "{} {:.2}", p.name, p.cores);
            if let Some(n) = p.preempted.filter(|&n| n > 0) {
                let _ = write!(s, " ({n} preempted)");
            }
        }
        if !self.machine.is_empty() {
            let _ = write!(s, "; all {} CPUs:", self.ncpu);
            for (i, m) in self.machine.iter().enumerate() {
                let _ = write!(
                    s,
                    "{} {} {:.2}",
                    if i > 0 { "," } else { "" },
                    m.name,
                    m.cores
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            parse_cpu_line("cpu  10 2 30 400 5 6 7 8 0 0"),
            Some([10, 2, 30, 400, 5, 6, 7, 8])
        );
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8"), None);
        let stat = "42 (we) ird) R 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(stat), Some((300, 7)));
        let me = stat_ticks(std::process::id()).unwrap();
        assert!(me.1 > 0);
    }

    #[test]
    fn descendants_and_split() {
        let p: HashMap<u32, u32> = [(2, 1), (3, 2), (4, 1), (5, 9)].into_iter().collect();
        let mut d = with_descendants(1, &p);
        d.sort_unstable();
        assert_eq!(d, vec![1, 2, 3, 4]);
        let m = machine_split(&[0; 8], &[100, 100, 50, 40, 10, 5, 5, 0], 100.0, 1.0);
        let get = |n: &str| m.iter().find(|s| s.name == n).unwrap().cores;
        assert_eq!(get("user"), 2.0);
        assert_eq!(get("softirq"), 0.1);
        assert_eq!(get("idle"), 0.5);
    }

    #[test]
    fn samples_this_process() {
        let s = Sampler::start(vec![Watched::one("me", std::process::id())], Some("kids"));
        let t = Instant::now();
        while t.elapsed().as_millis() < 50 {
            std::hint::black_box(0u64);
        }
        let b = s.finish();
        assert_eq!(b.processes.len(), 2);
        assert_eq!(b.processes[1].name, "kids");
        let line = b.line();
        assert!(line.starts_with("me "), "{line}");
    }
}

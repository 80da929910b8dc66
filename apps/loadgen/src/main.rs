//! dn-loadgen: an HTTP/1.1 keep-alive load generator on the DockNet libOS, like
//! `wrk -t1 -cN -dS`.
//!
//! N connections each send GET requests back to back (one outstanding request per
//! connection, or `--pipeline N`), parse every response (status line, headers,
//! Content-Length body) and measure each request's latency, from the moment the request
//! is queued on the connection to the moment its response is complete. The measured
//! window starts once every connection is established (so that it measures N connections,
//! not the handshakes; if some are still not up after `--connect-timeout-s`, it starts
//! with those that are, and says so) and lasts `--duration`; responses completed in it
//! are counted. Connections the server closes are re-opened.
//!
//! Nothing is allocated per request: each connection owns its parser (a bounded head
//! buffer) and a ring of send timestamps; latencies go into a fixed-size histogram.

mod hist;
mod http;
mod report;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clap::Parser as _;
use docknet::runtime::AppResult;
use docknet::{Control, Engine, SocketId, TcpMap};

use crate::hist::Histogram;
use crate::http::{Parser, Target};
use crate::report::Summary;

#[derive(clap::Parser, Debug)]
#[command(
    name = "dn-loadgen",
    version,
    about = "HTTP/1.1 keep-alive load generator on the DockNet libOS (like wrk -t1).\n\nThe pipe is found through DOCKNET_PIPE (a pipe directory, default /run/docknet/pipe)."
)]
struct Cli {
    /// Target, http://IPV4[:PORT][/PATH].
    #[arg(long)]
    url: Target,
    /// Connections kept open.
    #[arg(short = 'c', long = "connections", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=60000))]
    connections: u32,
    /// Duration of the measured window: seconds, or with a unit (500ms, 3s, 1m).
    #[arg(short = 'd', long = "duration", default_value = "10", value_parser = parse_duration)]
    duration: Duration,
    /// Requests outstanding per connection (1 = no pipelining).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pipeline: u32,
    /// Print one JSON line instead of the wrk-like report.
    #[arg(long)]
    json: bool,
    /// TCP receive and send buffer per connection, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    buffer: usize,
    /// Give up when no connection is established within this many seconds; also the
    /// longest wait for all of them before the measured window starts.
    #[arg(long, default_value_t = 10)]
    connect_timeout_s: u64,
    /// Most handshakes in progress at once; the other connections wait their turn (all
    /// at once overflow the server's SYN queue or a ring on the way, and every SYN lost
    /// costs its client a retransmission timeout that doubles each time).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connecting: u32,
}

/// `3`, `3s`, `500ms`, `1m`, `1.5s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 3, 3s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit {unit:?} (ms, s, m, h)")),
    };
    if !(secs > 0.0 && secs.is_finite() && secs < 1e7) {
        return Err(format!("duration must be positive, not {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() {
    let cli = Cli::parse();
    let buffer = cli.buffer.max(2048);
    std::process::exit(docknet::runtime::start(
        "dn-loadgen",
        |cfg| {
            cfg.tcp_rx_buffer = buffer;
            cfg.tcp_tx_buffer = buffer;
        },
        |e| run(e, &cli),
    ));
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting until `Instant` before (re)connecting.
    Idle(Instant),
    Connecting,
    Running,
}

/// How many ready connections ahead of the one served its state is prefetched.
const CONN_PREFETCH_AHEAD: usize = 2;

/// One connection slot; its buffers live as long as the run, across reconnects.
struct Conn {
    /// Its place in the slot table.
    slot: usize,
    id: Option<SocketId>,
    state: State,
    parser: Parser,
    /// When each outstanding request was queued, oldest first (capacity `pipeline`).
    sent_at: VecDeque<Instant>,
    /// Requests queued but not yet fully written, and how far into the first one.
    unsent: usize,
    req_off: usize,
}

/// Counters of the measured window.
#[derive(Default)]
struct Counts {
    requests: u64,
    bytes: u64,
    /// Responses with a status outside 200..=399.
    non_2xx_3xx: u64,
    connect_errors: u64,
    /// The connection closed or reset with requests outstanding, or a bad response.
    read_errors: u64,
    write_errors: u64,
}

struct Load<'a> {
    /// Every request's bytes. Static, so the engine queues them by reference: each
    /// segment is copied once, from here (in the cache) into its frame, rather than first
    /// into the connection's send buffer, which 10,000 connections keep out of the cache.
    request: &'static [u8],
    pipeline: usize,
    target: &'a Target,
    hist: Histogram,
    counts: Counts,
    /// The measured window; `None` until the first connection is up.
    window: Option<(Instant, Instant)>,
    /// A connection has been established (the window may start).
    any_established: bool,
    /// Slots of connections by id: the engine names the connections that are ready.
    by_id: TcpMap<usize>,
    /// Slots waiting (`State::Idle`) to connect.
    idle: Vec<usize>,
    /// Connections handshaking (`State::Connecting`), at most `max_connecting`.
    connecting: usize,
    max_connecting: usize,
    /// Connections established now (`State::Running`), the most at one time, and when
    /// all `-c` of them first were.
    running: usize,
    running_peak: usize,
    all_running_at: Option<Instant>,
    connections: usize,
}

impl Load<'_> {
    fn in_window(&self, t: Instant) -> bool {
        self.window.is_some_and(|(a, b)| t >= a && t < b)
    }

    fn connect(&mut self, e: &mut Engine, c: &mut Conn) {
        c.parser.reset();
        c.sent_at.clear();
        c.unsent = 0;
        c.req_off = 0;
        match e.connect(self.target.addr) {
            Ok(id) => {
                c.id = Some(id);
                c.state = State::Connecting;
                self.connecting += 1;
                self.by_id.insert(id, c.slot);
            }
            Err(err) => {
                log::warn!("connect: {err}");
                self.counts.connect_errors += 1;
                c.id = None;
                c.state = State::Idle(Instant::now() + Duration::from_millis(10));
                self.idle.push(c.slot);
            }
        }
    }

    /// Drop the connection and open a new one (after `delay`).
    fn replace(&mut self, e: &mut Engine, c: &mut Conn, delay: Duration) {
        match c.state {
            State::Connecting => self.connecting -= 1,
            State::Running => self.running -= 1,
            State::Idle(_) => {}
        }
        if let Some(id) = c.id.take() {
            let _ = e.close(id);
            self.by_id.remove(id);
        }
        c.state = State::Idle(Instant::now() + delay);
        self.idle.push(c.slot);
    }

    fn step(&mut self, e: &mut Engine, c: &mut Conn, stopping: bool) {
        match c.state {
            State::Idle(at) => {
                if !stopping && Instant::now() >= at {
                    self.connect(e, c);
                }
            }
            State::Connecting => {
                let id = c.id.expect("connecting socket");
                if e.is_established(id) {
                    c.state = State::Running;
                    self.connecting -= 1;
                    self.running += 1;
                    self.running_peak = self.running_peak.max(self.running);
                    if self.running == self.connections && self.all_running_at.is_none() {
                        self.all_running_at = Some(Instant::now());
                    }
                    self.any_established = true;
                    if self.window.is_none() {
                        return; // run() starts the window and steps again
                    }
                    self.run_conn(e, c, stopping);
                } else if !e.is_open(id) {
                    self.counts.connect_errors += 1;
                    self.replace(e, c, Duration::from_millis(10));
                }
            }
            State::Running => self.run_conn(e, c, stopping),
        }
    }

    fn run_conn(&mut self, e: &mut Engine, c: &mut Conn, stopping: bool) {
        let id = c.id.expect("running socket");
        // Responses.
        loop {
            let parser = &mut c.parser;
            let r = e.recv_with(id, |data| match parser.feed(data) {
                Ok((n, resp)) => (n, Ok((n, resp))),
                Err(err) => (0, Err(err)),
            });
            match r {
                Ok(Ok((_, Some(resp)))) => {
                    let now = Instant::now();
                    let Some(sent) = c.sent_at.pop_front() else {
                        // A response nobody asked for.
                        self.counts.read_errors += 1;
                        self.replace(e, c, Duration::ZERO);
                        return;
                    };
                    if self.in_window(now) {
                        self.hist.record(now.duration_since(sent).as_nanos() as u64);
                        self.counts.requests += 1;
                        self.counts.bytes += resp.bytes;
                        if !(200..400).contains(&resp.status) {
                            self.counts.non_2xx_3xx += 1;
                        }
                    }
                    if resp.close {
                        self.replace(e, c, Duration::ZERO);
                        return;
                    }
                }
                Ok(Ok((0, None))) => break,
                Ok(Ok((_, None))) => {}
                Ok(Err(err)) => {
                    log::debug!("bad response: {err}");
                    self.counts.read_errors += 1;
                    self.replace(e, c, Duration::ZERO);
                    return;
                }
                Err(_) => {
                    // Closed by the peer: an error only if something was pending.
                    if !c.sent_at.is_empty() {
                        self.counts.read_errors += 1;
                    }
                    self.replace(e, c, Duration::ZERO);
                    return;
                }
            }
        }
        // Requests.
        if !stopping {
            while c.sent_at.len() < self.pipeline {
                c.sent_at.push_back(Instant::now());
                c.unsent += 1;
            }
        }
        while c.unsent > 0 {
            match e.write_static(id, &self.request[c.req_off..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.req_off += n;
                    if c.req_off == self.request.len() {
                        c.req_off = 0;
                        c.unsent -= 1;
                    }
                }
                Err(_) => {
                    self.counts.write_errors += 1;
                    self.replace(e, c, Duration::ZERO);
                    return;
                }
            }
        }
    }
}

fn run(engine: &mut Engine, cli: &Cli) -> AppResult {
    // Leaked once: lives as long as the process, like the engine that sends it.
    let request: &'static [u8] = Vec::leak(http::request(&cli.url));
    let pipeline = cli.pipeline as usize;
    let n = cli.connections as usize;
    if !cli.json {
        println!(
            "Running {} test @ http://{}{}\n  1 threads and {n} connections{}",
            report::fmt_duration(cli.duration),
            cli.url.host,
            cli.url.path,
            if pipeline > 1 {
                format!(", pipeline {pipeline}")
            } else {
                String::new()
            }
        );
    }
    let mut load = Load {
        request,
        pipeline,
        target: &cli.url,
        hist: Histogram::new(),
        counts: Counts::default(),
        window: None,
        any_established: false,
        by_id: TcpMap::new(),
        idle: (0..n).collect(),
        connecting: 0,
        max_connecting: cli.max_connecting as usize,
        running: 0,
        running_peak: 0,
        all_running_at: None,
        connections: n,
    };
    let mut conns: Vec<Conn> = (0..n)
        .map(|slot| Conn {
            slot,
            id: None,
            state: State::Idle(Instant::now()),
            parser: Parser::new(),
            sent_at: VecDeque::with_capacity(pipeline),
            unsent: 0,
            req_off: 0,
        })
        .collect();
    let started = Instant::now();
    let connect_timeout = Duration::from_secs(cli.connect_timeout_s);
    let mut failure: Option<String> = None;
    let mut closing_since: Option<Instant> = None;
    let mut ready: Vec<SocketId> = Vec::new();
    engine.run(|e| {
        let now = Instant::now();
        if let Some(since) = closing_since {
            return if e.closing_count() == 0
                || now.duration_since(since) > Duration::from_millis(300)
            {
                Control::Exit
            } else {
                Control::Continue
            };
        }
        let stopping = load.window.is_some_and(|(_, end)| now >= end);
        if stopping {
            for c in &mut conns {
                if let Some(id) = c.id.take() {
                    let _ = e.close(id);
                }
            }
            closing_since = Some(now);
            return Control::Continue;
        }
        // Each round visits the slots due to connect and the connections the engine lists
        // as ready, not every connection.
        let mut i = 0;
        while i < load.idle.len() && load.connecting < load.max_connecting {
            let slot = load.idle[i];
            match conns[slot].state {
                State::Idle(at) if now < at => i += 1,
                _ => {
                    load.idle.swap_remove(i);
                    load.step(e, &mut conns[slot], false);
                }
            }
        }
        e.take_ready(&mut ready);
        // At 10,000 connections a connection's entries are out of the cache by its turn:
        // its slot number is asked for further ahead than its slot, which needs it.
        for (i, &id) in ready.iter().enumerate() {
            if let Some(&ahead) = ready.get(i + 2 * CONN_PREFETCH_AHEAD) {
                load.by_id.prefetch(ahead);
            }
            if let Some(c) = ready
                .get(i + CONN_PREFETCH_AHEAD)
                .and_then(|&ahead| load.by_id.get(ahead))
                .and_then(|&slot| conns.get(slot))
            {
                docknet::prefetch::prefetch_value(c);
            }
            if let Some(&slot) = load.by_id.get(id) {
                load.step(e, &mut conns[slot], false);
            }
        }
        ready.clear();
        if load.window.is_none() {
            let waited = now.duration_since(started) > connect_timeout;
            let all_up = load.running == n;
            if load.any_established && (all_up || waited) {
                if !all_up {
                    eprintln!(
                        "dn-loadgen: {} of {n} connections established after {}s; measuring with those (the others keep trying)",
                        load.running, cli.connect_timeout_s
                    );
                }
                let t0 = Instant::now();
                load.window = Some((t0, t0 + cli.duration));
                // Once: the established connections send their first requests.
                for c in conns.iter_mut().filter(|c| c.state == State::Running) {
                    load.step(e, c, false);
                }
            } else if waited {
                failure = Some(format!(
                    "no connection to {} established within {}s ({} connect errors)",
                    cli.url.addr, cli.connect_timeout_s, load.counts.connect_errors
                ));
                return Control::Exit;
            } else {
                e.wake_at(started + connect_timeout);
            }
        }
        // Idle conns waiting out a back-off need a timer (those waiting for a handshake to
        // finish are woken by it).
        if load.connecting < load.max_connecting {
            if let Some(at) = load
                .idle
                .iter()
                .filter_map(|&slot| match conns[slot].state {
                    State::Idle(at) => Some(at),
                    _ => None,
                })
                .min()
            {
                e.wake_at(at);
            }
        }
        if let Some((_, end)) = load.window {
            e.wake_at(end);
        }
        Control::Continue
    });
    if engine.pipe_removed() {
        return Ok(()); // the runtime reports it
    }
    if let Some(f) = failure {
        return Err(f.into());
    }
    let stopped = Instant::now();
    let elapsed = match load.window {
        Some((t0, end)) => end.min(stopped).duration_since(t0),
        None => Duration::ZERO,
    };
    let c = &load.counts;
    let s = Summary {
        requests: c.requests,
        bytes: c.bytes,
        duration_s: elapsed.as_secs_f64(),
        non_2xx_3xx: c.non_2xx_3xx,
        connect_errors: c.connect_errors,
        read_errors: c.read_errors,
        write_errors: c.write_errors,
        hist: &load.hist,
        connections: n,
        established_peak: load.running_peak,
        all_established_s: load
            .all_running_at
            .map(|t| t.duration_since(started).as_secs_f64()),
    };
    if cli.json {
        println!("{}", s.json());
    } else {
        print!("{}", s.text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "0", "-1", "3x", "s", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "dn-loadgen",
            "--url",
            "http://10.0.0.1:80/",
            "-c",
            "256",
            "-d",
            "3s",
            "--json",
        ])
        .unwrap();
        assert_eq!(c.connections, 256);
        assert_eq!(c.duration, Duration::from_secs(3));
        assert_eq!(c.pipeline, 1);
        assert!(c.json);
        assert!(Cli::try_parse_from(["dn-loadgen", "--url", "http://x/", "-c", "1"]).is_err());
        assert!(
            Cli::try_parse_from(["dn-loadgen", "--url", "http://1.1.1.1/", "-c", "0"]).is_err()
        );
    }
}

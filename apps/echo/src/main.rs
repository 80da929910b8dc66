//! dn-echo: a TCP echo server and a verifying ping-pong client on the DockNet libOS.
//!
//! The server echoes every byte of every connection. The client sends `--count` messages
//! of `--size` bytes, one at a time, reads each echo back whole, checks it byte for byte,
//! and reports goodput and round-trip percentiles.

use std::io::Write;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use docknet::runtime::AppResult;
use docknet::{Control, Engine, NetError, SocketId};

#[derive(Parser)]
#[command(
    name = "dn-echo",
    version,
    about = "TCP echo server and verifying ping-pong client on the DockNet libOS.\n\nThe pipe is found through DOCKNET_PIPE (a pipe directory, default /run/docknet/pipe)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo every byte received on every connection.
    Server {
        /// TCP port to listen on.
        #[arg(long, default_value_t = 7)]
        port: u16,
        /// Accept queue depth: connections that may wait (handshaking or established)
        /// before the server takes them.
        #[arg(long, default_value_t = 128)]
        backlog: usize,
        /// Socket buffer size per direction, bytes.
        #[arg(long, default_value_t = 1 << 20)]
        buffer: usize,
    },
    /// Answer every HTTP request with a short text page (a smoke test for curl and
    /// browsers; dn-httpd serves real sites), then close the connection.
    Http {
        /// TCP port to listen on.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// Accept queue depth: connections that may wait before the server takes them.
        #[arg(long, default_value_t = 128)]
        backlog: usize,
        /// The page's text.
        #[arg(long, default_value = "hello from dn-echo on DockNet\n")]
        body: String,
        /// Socket buffer size per direction, bytes.
        #[arg(long, default_value_t = 64 << 10)]
        buffer: usize,
    },
    /// Send messages, verify their echoes, report goodput and latency.
    Client {
        /// Server address, IP:PORT.
        #[arg(long)]
        to: SocketAddrV4,
        /// Message size in bytes (one message is one round trip).
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Measured messages.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Unmeasured messages sent first.
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// Give up when nothing moves for this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
        /// Socket buffer size per direction, bytes.
        #[arg(long, default_value_t = 1 << 20)]
        buffer: usize,
        /// Print one JSON line instead of the human summary.
        #[arg(long)]
        json: bool,
    },
    /// Send UDP datagrams to IP:PORT as fast as the pipe takes them (or at --rate-mbps)
    /// for --duration-s seconds; print what was sent each second and in all.
    UdpBlast {
        /// Destination, IP:PORT (a `dn-echo udp-sink`, or anything).
        #[arg(long)]
        to: SocketAddrV4,
        /// Datagram payload in bytes.
        #[arg(long, default_value_t = 1400)]
        size: usize,
        /// How long to send.
        #[arg(long, default_value_t = 5)]
        duration_s: u64,
        /// Pace the sending to this many Mbit/s of payload (default: as fast as it goes).
        #[arg(long)]
        rate_mbps: Option<u64>,
    },
    /// Open one TCP connection to IP:PORT and send as fast as it takes bytes for
    /// --duration-s seconds; print what was sent each second and in all.
    TcpBlast {
        /// Destination, IP:PORT (a `dn-echo tcp-sink`, or anything that reads).
        #[arg(long)]
        to: SocketAddrV4,
        /// How long to send.
        #[arg(long, default_value_t = 5)]
        duration_s: u64,
        /// Socket buffer size per direction, bytes.
        #[arg(long, default_value_t = 1 << 20)]
        buffer: usize,
    },
    /// Accept TCP connections on a port and discard what they send; print Mbit/s each
    /// second and in all.
    TcpSink {
        /// TCP port.
        #[arg(long, default_value_t = 9)]
        port: u16,
        /// Stop after this many seconds (0: on SIGTERM).
        #[arg(long, default_value_t = 0)]
        duration_s: u64,
        /// Socket buffer size per direction, bytes.
        #[arg(long, default_value_t = 1 << 20)]
        buffer: usize,
    },
    /// Count UDP datagrams arriving on a port; print Mbit/s each second and in all.
    UdpSink {
        /// UDP port.
        #[arg(long, default_value_t = 9)]
        port: u16,
        /// Stop after this many seconds (0: on SIGTERM).
        #[arg(long, default_value_t = 0)]
        duration_s: u64,
    },
    /// Answer every UDP datagram with "IP " (this service's address) followed by the
    /// datagram: behind a load balancer, the answer tells which member got it. Also
    /// accepts (and closes) TCP connections on the same port: a health-check target.
    UdpEcho {
        /// UDP port.
        #[arg(long, default_value_t = 7)]
        port: u16,
    },
}

fn main() {
    let cli = Cli::parse();
    // The TCP socket buffers; the UDP commands have no --buffer and keep 1 MiB.
    let buffer = match &cli.cmd {
        Cmd::Server { buffer, .. }
        | Cmd::Client { buffer, .. }
        | Cmd::Http { buffer, .. }
        | Cmd::TcpBlast { buffer, .. }
        | Cmd::TcpSink { buffer, .. } => *buffer,
        Cmd::UdpBlast { .. } | Cmd::UdpSink { .. } | Cmd::UdpEcho { .. } => 1 << 20,
    };
    let config = |cfg: &mut docknet::EngineConfig| {
        cfg.tcp_rx_buffer = buffer;
        cfg.tcp_tx_buffer = buffer;
    };
    std::process::exit(docknet::runtime::start("dn-echo", config, |engine| {
        run(engine, cli)
    }));
}

fn run(engine: &mut Engine, cli: Cli) -> AppResult {
    match cli.cmd {
        Cmd::Server { port, backlog, .. } => server(engine, port, backlog),
        Cmd::Http {
            port,
            backlog,
            body,
            ..
        } => http(engine, port, backlog, &body.replace("\\n", "\n")),
        Cmd::Client {
            to,
            size,
            count,
            warmup,
            timeout_s,
            json,
            ..
        } => client(
            engine,
            to,
            size,
            count,
            warmup,
            Duration::from_secs(timeout_s),
            json,
        ),
        Cmd::UdpBlast {
            to,
            size,
            duration_s,
            rate_mbps,
            ..
        } => udp_blast(engine, to, size, Duration::from_secs(duration_s), rate_mbps),
        Cmd::UdpSink {
            port, duration_s, ..
        } => udp_sink(engine, port, Duration::from_secs(duration_s)),
        Cmd::UdpEcho { port } => udp_echo(engine, port),
        Cmd::TcpBlast { to, duration_s, .. } => {
            tcp_blast(engine, to, Duration::from_secs(duration_s))
        }
        Cmd::TcpSink {
            port, duration_s, ..
        } => tcp_sink(engine, port, Duration::from_secs(duration_s)),
    }
}

/// Per-second counts: prints `t=Ns ... Mbit/s` lines and returns the totals.
struct Meter {
    start: Instant,
    window_start: Instant,
    window_bytes: u64,
    window_n: u64,
    total_bytes: u64,
    total_n: u64,
    verb: &'static str,
    /// What one `add` counts ("datagrams", "reads").
    unit: &'static str,
}

impl Meter {
    fn new(verb: &'static str, unit: &'static str) -> Meter {
        let now = Instant::now();
        Meter {
            start: now,
            window_start: now,
            window_bytes: 0,
            window_n: 0,
            total_bytes: 0,
            total_n: 0,
            verb,
            unit,
        }
    }

    fn add(&mut self, bytes: usize) {
        self.window_bytes += bytes as u64;
        self.window_n += 1;
        self.total_bytes += bytes as u64;
        self.total_n += 1;
    }

    /// Print the window if a second has passed.
    fn tick(&mut self, now: Instant) {
        let w = now.duration_since(self.window_start);
        if w >= Duration::from_secs(1) {
            println!(
                "t={:.0}s {} {} {}, {:.1} Mbit/s",
                now.duration_since(self.start).as_secs_f64(),
                self.verb,
                self.window_n,
                self.unit,
                self.window_bytes as f64 * 8.0 / w.as_secs_f64() / 1e6
            );
            let _ = std::io::stdout().flush();
            self.window_start = now;
            self.window_bytes = 0;
            self.window_n = 0;
        }
    }

    fn summary(&self) {
        let s = self.start.elapsed().as_secs_f64().max(1e-9);
        println!(
            "{} {} {}, {} B in {s:.2} s: {:.1} Mbit/s of payload",
            self.verb,
            self.total_n,
            self.unit,
            self.total_bytes,
            self.total_bytes as f64 * 8.0 / s / 1e6
        );
    }
}

fn udp_blast(
    engine: &mut Engine,
    to: SocketAddrV4,
    size: usize,
    duration: Duration,
    rate_mbps: Option<u64>,
) -> AppResult {
    if size == 0 || size > 65000 {
        return Err("--size must be 1..=65000 bytes".into());
    }
    let id = engine.udp_bind(0)?;
    let data = vec![0x5au8; size];
    let mut m = Meter::new("sent", "datagrams");
    let bytes_per_s = rate_mbps.map(|r| r as f64 * 1e6 / 8.0);
    let mut err = None;
    engine.run(|e| {
        let now = Instant::now();
        if now.duration_since(m.start) >= duration {
            return Control::Exit;
        }
        m.tick(now);
        for _ in 0..64 {
            if let Some(bps) = bytes_per_s {
                let allowed = now.duration_since(m.start).as_secs_f64() * bps;
                if m.total_bytes as f64 >= allowed {
                    break;
                }
            }
            match e.udp_send_to(id, &data, to) {
                Ok(true) => m.add(size),
                Ok(false) => break,
                Err(x) => {
                    err = Some(x);
                    return Control::Exit;
                }
            }
        }
        Control::Continue
    });
    m.summary();
    match err {
        Some(x) => Err(x.into()),
        None => Ok(()),
    }
}

fn udp_echo(engine: &mut Engine, port: u16) -> AppResult {
    let id = engine.udp_bind(port)?;
    let health = engine.listen(port, 4)?;
    println!("listening on udp port {port}");
    let _ = std::io::stdout().flush();
    let prefix = format!("{} ", engine.local_ip());
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(65536 + prefix.len());
    let mut err = None;
    engine.run(|e| {
        while let Some(c) = e.accept(health) {
            let _ = e.close(c);
        }
        loop {
            match e.udp_recv_from(id, &mut buf) {
                Ok(Some((n, from))) => {
                    out.clear();
                    out.extend_from_slice(prefix.as_bytes());
                    out.extend_from_slice(&buf[..n]);
                    if let Err(x) = e.udp_send_to(id, &out, from) {
                        err = Some(x);
                        return Control::Exit;
                    }
                }
                Ok(None) => return Control::Continue,
                Err(x) => {
                    err = Some(x);
                    return Control::Exit;
                }
            }
        }
    });
    err.map_or(Ok(()), |e| Err(e.into()))
}

fn udp_sink(engine: &mut Engine, port: u16, duration: Duration) -> AppResult {
    let id = engine.udp_bind(port)?;
    println!("listening on udp port {port}");
    let _ = std::io::stdout().flush();
    let mut m = Meter::new("received", "datagrams");
    let mut buf = vec![0u8; 65536];
    let mut err = None;
    engine.run(|e| {
        let now = Instant::now();
        if !duration.is_zero() && now.duration_since(m.start) >= duration {
            return Control::Exit;
        }
        loop {
            match e.udp_recv_from(id, &mut buf) {
                Ok(Some((n, _))) => m.add(n),
                Ok(None) => break,
                Err(x) => {
                    err = Some(x);
                    return Control::Exit;
                }
            }
        }
        m.tick(now);
        Control::Continue
    });
    m.summary();
    match err {
        Some(x) => Err(x.into()),
        None => Ok(()),
    }
}

fn tcp_blast(engine: &mut Engine, to: SocketAddrV4, duration: Duration) -> AppResult {
    let id = engine
        .connect(to)
        .map_err(|e| format!("cannot connect to {to}: {e}"))?;
    let data = vec![0x5au8; 64 * 1024];
    let mut m: Option<Meter> = None;
    let mut err: Option<String> = None;
    let connect_deadline = Instant::now() + Duration::from_secs(10);
    engine.run(|e| {
        let now = Instant::now();
        let Some(meter) = m.as_mut() else {
            if e.is_established(id) {
                println!("connected to {to}");
                let _ = std::io::stdout().flush();
                m = Some(Meter::new("sent", "writes"));
            } else if !e.is_open(id) || now > connect_deadline {
                err = Some(format!("connection to {to} refused, reset or timed out"));
                return Control::Exit;
            }
            return Control::Continue;
        };
        if now.duration_since(meter.start) >= duration {
            return Control::Exit;
        }
        meter.tick(now);
        match e.write(id, &data) {
            Ok(0) => {}
            Ok(n) => meter.add(n),
            Err(x) => {
                err = Some(format!("sending to {to}: {x}"));
                return Control::Exit;
            }
        }
        Control::Continue
    });
    if let Some(meter) = &m {
        meter.summary();
    }
    let _ = engine.abort(id);
    match err {
        Some(x) => Err(x.into()),
        None => Ok(()),
    }
}

fn tcp_sink(engine: &mut Engine, port: u16, duration: Duration) -> AppResult {
    let listener = engine
        .listen(port, 4)
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    println!("listening on tcp port {port}");
    let _ = std::io::stdout().flush();
    let mut m = Meter::new("received", "reads");
    let mut conns: Vec<SocketId> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    engine.run(|e| {
        let now = Instant::now();
        if !duration.is_zero() && now.duration_since(m.start) >= duration {
            return Control::Exit;
        }
        while let Some(id) = e.accept(listener) {
            conns.push(id);
        }
        conns.retain(|&id| loop {
            match e.read(id, &mut buf) {
                Ok(0) => return true,
                Ok(n) => m.add(n),
                Err(_) => {
                    let _ = e.close(id);
                    return false;
                }
            }
        });
        m.tick(now);
        Control::Continue
    });
    m.summary();
    Ok(())
}

fn server(engine: &mut Engine, port: u16, backlog: usize) -> AppResult {
    let listener = match engine.listen(port, backlog) {
        Ok(l) => l,
        Err(e) => {
            return Err(format!("cannot listen on port {port}: {e}").into());
        }
    };
    println!("dn-echo: listening on {}:{port}", engine.local_ip());
    let _ = std::io::stdout().flush();
    let mut conns: Vec<SocketId> = Vec::new();
    engine.run(|e| {
        while let Some(id) = e.accept(listener) {
            log::info!("connection accepted");
            conns.push(id);
        }
        conns.retain(|&id| match echo(e, id) {
            Ok(()) => true,
            Err(_) => {
                let _ = e.close(id);
                false
            }
        });
        Control::Continue
    });
    Ok(())
}

fn http(engine: &mut Engine, port: u16, backlog: usize, body: &str) -> AppResult {
    let listener = match engine.listen(port, backlog) {
        Ok(l) => l,
        Err(e) => {
            return Err(format!("cannot listen on port {port}: {e}").into());
        }
    };
    println!("dn-echo: http listening on {}:{port}", engine.local_ip());
    let _ = std::io::stdout().flush();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    // Per connection: the request bytes seen so far (only the end matters) and how much
    // of the response went out.
    let mut conns: Vec<(SocketId, Vec<u8>, Option<usize>)> = Vec::new();
    engine.run(|e| {
        while let Some(id) = e.accept(listener) {
            conns.push((id, Vec::with_capacity(1024), None));
        }
        conns.retain_mut(|(id, req, sent)| {
            if sent.is_none() {
                let mut buf = [0u8; 2048];
                match e.read(*id, &mut buf) {
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                    Err(_) => {
                        let _ = e.close(*id);
                        return false;
                    }
                }
                if req.windows(4).any(|w| w == b"\r\n\r\n") {
                    *sent = Some(0);
                } else if req.len() > 16 * 1024 {
                    let _ = e.abort(*id);
                    return false;
                } else {
                    return true;
                }
            }
            let done = sent.as_mut().expect("set above");
            match e.write(*id, &response[*done..]) {
                Ok(n) => *done += n,
                Err(_) => {
                    let _ = e.close(*id);
                    return false;
                }
            }
            if *done == response.len() {
                let _ = e.close(*id);
                return false;
            }
            true
        });
        Control::Continue
    });
    Ok(())
}

/// Move what the connection received into its send buffer, each byte copied once (from
/// the receive buffer straight into the send buffer). `Err` when it is finished.
fn echo(e: &mut Engine, id: SocketId) -> Result<(), NetError> {
    // Until nothing moves: the readable bytes or the free space may wrap around the end
    // of their ring.
    loop {
        let moved = e.recv_send_with(id, |rx, tx| {
            let n = rx.len().min(tx.len());
            tx[..n].copy_from_slice(&rx[..n]);
            (n, n, n)
        })?;
        if moved == 0 {
            return Ok(());
        }
    }
}

/// Most bytes the client queues to send per engine round: one 64 KB segment's worth, the
/// largest a fast channel or a pipe without a NIC carries, so each round sends a full
/// segment while the peer takes the one before (200 KB over a fast channel: 40-43 Gbit/s
/// with 32 KiB pieces, 46-51 with 64, 44-46 with 128, 35-40 with the whole message;
/// docs/benchmarks.md, *Two buffer pools*).
const WRITE_PIECE: usize = 64 * 1024;

/// Deterministic bytes: message `i` is `pattern[i % 256 ..][..size]`.
fn pattern(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size + 256)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

enum Phase {
    Connecting,
    Running,
    Closing,
}

fn client(
    engine: &mut Engine,
    to: SocketAddrV4,
    size: usize,
    count: u64,
    warmup: u64,
    timeout: Duration,
    json: bool,
) -> AppResult {
    if size == 0 {
        return Err("--size must be at least 1".into());
    }
    let id = match engine.connect(to) {
        Ok(id) => id,
        Err(e) => {
            return Err(format!("cannot connect to {to}: {e}").into());
        }
    };
    let pat = pattern(size);
    let total = warmup + count;
    let mut rtts: Vec<u64> = Vec::with_capacity(count as usize);
    let (mut msg, mut sent, mut got) = (0u64, 0usize, 0usize);
    let mut msg_start = Instant::now();
    let mut measure_start = Instant::now();
    let mut measure_end = Instant::now();
    let mut last_progress = Instant::now();
    let mut phase = Phase::Connecting;
    let mut failure: Option<String> = None;
    engine.run(|e| {
        // One clock read per round for progress and the timeout: a read costs about as
        // much as copying a kilobyte, and a round may move only a few.
        let round = Instant::now();
        if round.duration_since(last_progress) > timeout {
            failure = Some(format!("timed out after {}s without progress (message {msg}, sent {sent}, received {got} of {size} bytes)", timeout.as_secs()));
            return Control::Exit;
        }
        match phase {
            Phase::Connecting => {
                if e.is_established(id) {
                    phase = Phase::Running;
                    last_progress = Instant::now();
                    msg_start = Instant::now();
                    measure_start = Instant::now();
                } else if !e.is_open(id) {
                    failure = Some(format!("connection to {to} refused or reset"));
                    return Control::Exit;
                }
                Control::Continue
            }
            Phase::Running => {
                let off = (msg % 256) as usize;
                let expect = &pat[off..off + size];
                if sent < size {
                    // A piece per round, so the first segments leave while the rest is
                    // copied in (the kernel interleaves the two inside one send call).
                    let piece = &expect[sent..size.min(sent + WRITE_PIECE)];
                    match e.write(id, piece) {
                        Ok(n) => {
                            sent += n;
                            if n > 0 {
                                last_progress = round;
                            }
                        }
                        Err(err) => {
                            failure = Some(format!("send failed: {err}"));
                            return Control::Exit;
                        }
                    }
                }
                loop {
                    let r = e.recv_with(id, |data| {
                        let n = data.len().min(size - got);
                        let ok = data[..n] == expect[got..got + n];
                        (n, (n, ok))
                    });
                    match r {
                        Ok((0, _)) => break,
                        Ok((n, true)) => {
                            got += n;
                            last_progress = round;
                            if got == size {
                                break;
                            }
                        }
                        Ok((_, false)) => {
                            failure = Some(format!("message {msg}: echoed bytes differ from sent bytes near offset {got}"));
                            return Control::Exit;
                        }
                        Err(err) => {
                            failure = Some(format!("message {msg}: {err} after {got} of {size} bytes"));
                            return Control::Exit;
                        }
                    }
                }
                if got == size {
                    let now = Instant::now();
                    if msg >= warmup {
                        rtts.push(now.duration_since(msg_start).as_nanos() as u64);
                    }
                    msg += 1;
                    sent = 0;
                    got = 0;
                    msg_start = now;
                    if msg == warmup {
                        measure_start = now;
                    }
                    if msg == total {
                        measure_end = now;
                        let _ = e.close(id);
                        phase = Phase::Closing;
                        last_progress = Instant::now();
                    }
                }
                Control::Continue
            }
            Phase::Closing => {
                // Let the FIN go out (and be acknowledged) before the process exits; the
                // socket id is no longer ours to query once closed.
                if last_progress.elapsed() > Duration::from_millis(200) || e.closing_count() == 0 {
                    Control::Exit
                } else {
                    Control::Continue
                }
            }
        }
    });
    if engine.pipe_removed() {
        return Ok(()); // the runtime reports it (exit 1)
    }
    if let Some(f) = failure {
        return Err(f.into());
    }
    if msg < total {
        // The engine stopped early: SIGTERM/SIGINT. Not a result.
        return Err(format!(
            "stopped by a signal before the end (message {msg} of {total}, {got} of {size} bytes echoed)"
        )
        .into());
    }
    let elapsed = measure_end
        .saturating_duration_since(measure_start)
        .as_secs_f64()
        .max(1e-9);
    rtts.sort_unstable();
    let pct = |p: f64| -> f64 {
        if rtts.is_empty() {
            return 0.0;
        }
        let i = ((rtts.len() as f64 * p).ceil() as usize).clamp(1, rtts.len()) - 1;
        rtts[i] as f64 / 1000.0
    };
    let (p50, p99) = (pct(0.50), pct(0.99));
    let goodput = size as f64 * count as f64 * 8.0 / elapsed / 1e9;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "size": size, "count": count,
                "rtt_us_p50": p50, "rtt_us_p99": p99,
                "one_way_us_p50": p50 / 2.0, "one_way_us_p99": p99 / 2.0,
                "goodput_gbps": goodput, "elapsed_s": elapsed,
            })
        );
    } else {
        println!(
            "dn-echo: {count} x {size} B echoed and verified: goodput {goodput:.3} Gbit/s, RTT p50 {p50:.1} us p99 {p99:.1} us (one-way p50 {:.1} us)",
            p50 / 2.0
        );
    }
    Ok(())
}

//! `docknetctl`: command-line client of `docknetd`.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use docknet_master::control::{self, ClientError, FcEntry, PipeEntry, Request, SOCKET_NAME};
use docknet_master::link::{LinkSnapshot, LINK_COLUMNS};
use docknet_master::stats::{StatsSnapshot, COLUMNS};
use serde_json::Value;

/// Control the DockNet master daemon (docknetd): pipes, fast channels, rate limits, stats.
#[derive(Parser, Debug)]
#[command(name = "docknetctl", version)]
struct Args {
    /// Run directory of the daemon (its socket is RUN_DIR/docknetd.sock).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/run/docknet",
        global = true
    )]
    run_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create, remove and list pipes (one per service).
    #[command(subcommand)]
    Pipe(PipeCmd),
    /// Create, remove and list fast channels (direct links between two trusted services).
    #[command(subcommand)]
    Fc(FcCmd),
    /// Show per-pipe counters: traffic, drops by reason, shared-memory faults.
    Stats {
        /// Only this pipe.
        name: Option<String>,
        /// Print JSON (an object keyed by pipe name) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Capture what a pipe sends and receives into a pcap file (tcpdump -r, Wireshark).
    /// Stops after --count frames or on Ctrl-C.
    Capture {
        /// Pipe name.
        name: String,
        /// Output file (pcap, Ethernet link type); `-` for standard output.
        #[arg(short = 'w', long = "write", value_name = "FILE.pcap")]
        file: PathBuf,
        /// Stop after this many frames.
        #[arg(long, short = 'c')]
        count: Option<u64>,
    },
    /// Show the NIC (--nic) and its counters: traffic, drops by reason, ARP.
    Nic {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rate limits on what a pipe sends through the master (fast channels are not limited).
    #[command(subcommand)]
    Rate(RateCmd),
    /// Stop docknetd. Pipes, fast channels and their services stay (as on SIGTERM), and a
    /// docknetd started on the same run directory re-adopts them, connections included.
    Shutdown {
        /// Remove every pipe and fast channel instead (their services stop) and clean up
        /// the run directory.
        #[arg(long)]
        remove_all: bool,
    },
    /// Mount a pipe at /run/docknet/pipe inside a process's mount namespace only (e.g. a
    /// container's init); other namespaces, the host's included, do not see it.
    Attach {
        /// Pipe name.
        name: String,
        /// Any process in the target mount namespace (e.g. the container's init).
        #[arg(long)]
        pid: u32,
    },
}

#[derive(Subcommand, Debug)]
enum PipeCmd {
    /// Create a pipe; prints its directory (give it to the service as DOCKNET_PIPE).
    Create {
        /// Pipe name: 1-32 characters of A-Z a-z 0-9 _ -.
        name: String,
        /// The service's address and prefix, e.g. 10.88.0.2/16 (prefix 1-30). The first
        /// address of the subnet (here 10.88.0.1) is the master's (the gateway).
        #[arg(long, value_name = "A.B.C.D/N")]
        ip: String,
        /// IP MTU (576-65000). Default: 9000, or the NIC's MTU if that is smaller (frames
        /// that leave the host must fit the link).
        #[arg(long, value_name = "M")]
        mtu: Option<u32>,
        /// Rate limit in Mbit/s (1-1000000) on what the service sends through the master
        /// (to other pipes and the NIC), counted in whole Ethernet frames; excess frames
        /// wait in the service's ring (nothing is dropped). Fast channels bypass the
        /// master and are not limited. Default: no limit.
        #[arg(long, value_name = "R")]
        rate_mbps: Option<u64>,
        /// Let the service send with source addresses other than its own (a NAT load
        /// balancer rewriting addresses). Without it the master drops such frames as
        /// spoofed. Grant it only to services that forward for others.
        #[arg(long)]
        forwarder: bool,
        /// The user (and group) whose service uses the pipe: its directory and files
        /// become theirs and no one else's (root aside). Names or numbers, e.g. 1000:1000
        /// or www-data. Default: you; only root may name another user.
        #[arg(long, value_name = "UID[:GID]")]
        owner: Option<String>,
    },
    /// Remove a pipe and its fast channels.
    Rm {
        /// Pipe name.
        name: String,
    },
    /// List pipes.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum FcCmd {
    /// Join two pipes with a fast channel.
    ///
    /// Each side drops frames from the other whose source MAC or IPv4 address is not the
    /// other's, unless --forward lets A send B frames with any source address.
    Create {
        /// First pipe.
        a: String,
        /// Second pipe.
        b: String,
        /// A may send B frames with source addresses other than its own (A is a NAT in
        /// front of B). B may not.
        #[arg(long)]
        forward: bool,
    },
    /// Remove the fast channel between two pipes (either order).
    Rm {
        /// First pipe.
        a: String,
        /// Second pipe.
        b: String,
    },
    /// List fast channels.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RateCmd {
    /// Set or remove a pipe's rate limit (Mbit/s, or `off`).
    ///
    /// It applies at once to everything the service sends through the master (to other pipes and the NIC), counted in whole Ethernet
    /// frames; frames over the limit wait in the service's ring, so TCP slows down
    /// without losses. Fast channels bypass the master and are not limited. `pipe ls`
    /// shows the limits, `stats` counts how often a pipe was held back (`throttled`).
    Set {
        /// Pipe name.
        name: String,
        /// Limit in Mbit/s (1-1000000), or `off` to remove the limit.
        #[arg(value_name = "MBPS|off")]
        mbps: String,
    },
}

fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// `30 s`, `1.5 s`, `500 ms`.
fn human_ms(ms: u64) -> String {
    match ms {
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms if ms >= 1000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{ms} ms"),
    }
}

fn json_out(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("unexpected answer from docknetd: {e}"))
}

fn run(args: Args) -> Result<(), String> {
    let sock = args.run_dir.join(SOCKET_NAME);
    let call = |req: Request| {
        control::request(&sock, &req, Duration::from_secs(10)).map_err(|e| match e {
            ClientError::Unreachable(m) | ClientError::Remote(m) => m,
        })
    };
    match args.cmd {
        Cmd::Pipe(PipeCmd::Create {
            name,
            ip,
            mtu,
            rate_mbps,
            forwarder,
            owner,
        }) => {
            let e: PipeEntry = decode(call(Request::PipeCreate {
                name,
                ip,
                mtu,
                rate_mbps,
                forwarder,
                owner,
            })?)?;
            println!("{}", e.dir);
        }
        Cmd::Pipe(PipeCmd::Rm { name }) => {
            call(Request::PipeRm { name })?;
        }
        Cmd::Pipe(PipeCmd::Ls { json }) => {
            let v = call(Request::PipeLs)?;
            if json {
                json_out(&v);
            } else {
                let pipes: Vec<PipeEntry> = decode(v)?;
                let rows: Vec<Vec<String>> = pipes
                    .into_iter()
                    .map(|p| {
                        let rate = p
                            .rate_mbps
                            .map(|r| r.to_string())
                            .unwrap_or_else(|| "-".into());
                        vec![
                            p.name,
                            p.ip,
                            p.mac,
                            p.mtu.to_string(),
                            rate,
                            if p.forwarder { "yes" } else { "-" }.into(),
                            p.owner.unwrap_or_else(|| "-".into()),
                            match (p.attached, p.attached_pid) {
                                _ if p.broken => "BROKEN (file truncated)".into(),
                                (_, 0) => "-".into(),
                                // Died without detaching; the next service takes over.
                                (Some(false), pid) => format!("{pid} (exited)"),
                                (_, pid) => pid.to_string(),
                            },
                            p.dir,
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "IP",
                        "MAC",
                        "MTU",
                        "RATE-MBPS",
                        "FORWARDER",
                        "OWNER",
                        "ATTACHED-PID",
                        "DIR",
                    ],
                    &rows,
                );
            }
        }
        Cmd::Fc(FcCmd::Create { a, b, forward }) => {
            let e: FcEntry = decode(call(Request::FcCreate { a, b, forward })?)?;
            println!("{}", e.path);
        }
        Cmd::Fc(FcCmd::Rm { a, b }) => {
            call(Request::FcRm { a, b })?;
        }
        Cmd::Fc(FcCmd::Ls { json }) => {
            let v = call(Request::FcLs)?;
            if json {
                json_out(&v);
            } else {
                let fcs: Vec<FcEntry> = decode(v)?;
                let rows: Vec<Vec<String>> = fcs
                    .into_iter()
                    .map(|f| {
                        let fwd = if f.forward { "a->b" } else { "-" };
                        vec![f.a, f.b, f.mtu.to_string(), fwd.into(), f.path]
                    })
                    .collect();
                table(&["A", "B", "MTU", "FORWARD", "PATH"], &rows);
            }
        }
        Cmd::Stats { name, json } => {
            let v = call(Request::Stats { name })?;
            if json {
                json_out(&v);
            } else {
                let stats: std::collections::BTreeMap<String, StatsSnapshot> = decode(v)?;
                let mut header = vec!["NAME"];
                header.extend(COLUMNS.iter().copied());
                let rows: Vec<Vec<String>> = stats
                    .into_iter()
                    .map(|(n, s)| {
                        std::iter::once(n)
                            .chain(s.values().into_iter().map(|x| x.to_string()))
                            .collect()
                    })
                    .collect();
                table(&header, &rows);
            }
        }
        Cmd::Capture { name, file, count } => capture(&sock, name, &file, count)?,
        Cmd::Nic { json } => {
            let v = call(Request::Link)?;
            if json {
                json_out(&v);
            } else {
                let name = v["name"].as_str().unwrap_or("?").to_string();
                let mtu = v["mtu"].as_u64().unwrap_or(0);
                let c: LinkSnapshot = decode(v["counters"].clone())?;
                match v["arp_reachable_ms"].as_u64() {
                    // An older daemon does not say.
                    Some(ms) => println!(
                        "{name} (IP MTU {mtu}; neighbours re-validated {} after their last answer)",
                        human_ms(ms)
                    ),
                    None => println!("{name} (IP MTU {mtu})"),
                }
                let rows: Vec<Vec<String>> = LINK_COLUMNS
                    .iter()
                    .zip(c.values())
                    .map(|(k, v)| vec![k.to_string(), v.to_string()])
                    .collect();
                table(&["COUNTER", "VALUE"], &rows);
            }
        }
        Cmd::Rate(RateCmd::Set { name, mbps }) => {
            let req = match mbps.trim() {
                "off" => Request::RateClear { name: name.clone() },
                m => {
                    let mbps = m.parse::<u64>().map_err(|_| {
                        format!(
                            "invalid rate limit {m:?}: expected Mbit/s (a whole number, 1-1000000) or \"off\""
                        )
                    })?;
                    Request::RateSet {
                        name: name.clone(),
                        mbps,
                    }
                }
            };
            let v = call(req)?;
            let fcs: Vec<String> = decode(v["unlimited_fast_channels"].clone()).unwrap_or_default();
            match v["rate_mbps"].as_u64() {
                Some(m) => println!(
                    "{name}: rate limit {m} Mbit/s on what it sends through the master (fast channels are not limited)"
                ),
                None => println!("{name}: no rate limit"),
            }
            if !fcs.is_empty() {
                println!(
                    "{name}: note: its fast channels to {} bypass the master and are not limited",
                    fcs.join(", ")
                );
            }
        }
        Cmd::Shutdown { remove_all } => {
            call(Request::Shutdown { remove_all })?;
            // Wait until it is gone, so a script can start the next one right away.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while sock.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if sock.exists() {
                return Err(format!(
                    "docknetd accepted the shutdown but {} is still there after 20 s",
                    sock.display()
                ));
            }
            if remove_all {
                println!("docknetd stopped; every pipe removed");
            } else {
                println!("docknetd stopped; pipes and services left for the next docknetd");
            }
        }
        Cmd::Attach { name, pid } => {
            call(Request::Attach {
                name: name.clone(),
                pid,
            })?;
            println!("{name}: mounted at /run/docknet/pipe in the mount namespace of pid {pid}");
        }
    }
    Ok(())
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Read exactly `buf.len()` bytes, retrying on read timeouts until interrupted. False on
/// end of stream or interruption.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, String> {
    let mut got = 0;
    while got < buf.len() {
        if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        match r.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("reading the capture stream: {e}")),
        }
    }
    Ok(true)
}

fn capture(
    sock: &std::path::Path,
    name: String,
    file: &std::path::Path,
    count: Option<u64>,
) -> Result<(), String> {
    // SAFETY: installing a handler that only stores to an atomic (async-signal-safe).
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let mut s =
        UnixStream::connect(sock).map_err(|e| control::connect_error(sock, e).to_string())?;
    let mut req = serde_json::to_string(&Request::Capture {
        name: name.clone(),
        count,
    })
    .map_err(|e| e.to_string())?;
    req.push('\n');
    s.write_all(req.as_bytes())
        .map_err(|e| format!("cannot send to docknetd: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut r = std::io::BufReader::new(s);
    let mut line = Vec::new();
    loop {
        match r.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => break,
            Ok(0) => return Err("docknetd closed the connection".into()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) => return Err(format!("no answer from docknetd: {e}")),
        }
    }
    let resp: control::Response = serde_json::from_slice(&line)
        .map_err(|e| format!("malformed answer from docknetd: {e}"))?;
    if !resp.ok {
        return Err(resp.error.unwrap_or_else(|| "unknown error".into()));
    }
    let mut out: Box<dyn Write> = if file.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(file)
                .map_err(|e| format!("cannot create {}: {e}", file.display()))?,
        ))
    };
    let mut header = [0u8; 24];
    if !read_full(&mut r, &mut header)? {
        return Err("the capture stream ended before its header".into());
    }
    out.write_all(&header)
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    let mut frames = 0u64;
    let mut data = vec![0u8; 65536];
    let mut last_report = std::time::Instant::now();
    eprintln!(
        "docknetctl: capturing pipe {name} to {} (Ctrl-C to stop)",
        file.display()
    );
    loop {
        let mut rec = [0u8; 16];
        if !read_full(&mut r, &mut rec)? {
            break;
        }
        let len = u32::from_le_bytes([rec[8], rec[9], rec[10], rec[11]]) as usize;
        if len > data.len() {
            return Err(format!(
                "capture stream: record of {len} bytes is longer than the snap length"
            ));
        }
        if !read_full(&mut r, &mut data[..len])? {
            break;
        }
        out.write_all(&rec)
            .and_then(|()| out.write_all(&data[..len]))
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        frames += 1;
        if last_report.elapsed() > Duration::from_secs(1) {
            eprint!("\rdocknetctl: {frames} frames");
            last_report = std::time::Instant::now();
        }
        if count.is_some_and(|c| frames >= c) {
            break;
        }
    }
    out.flush()
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    eprintln!(
        "\rdocknetctl: {frames} frames written to {}",
        file.display()
    );
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("docknetctl: {e}");
        std::process::exit(1);
    }
}

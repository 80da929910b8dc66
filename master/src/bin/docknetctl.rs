//! `docknetctl`: command-line client of `docknetd`.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use docknet_master::cluster::natfile::STATS_EVERY_MS;
use docknet_master::cluster::spec::MAX_REPLICAS;
use docknet_master::cluster::{ClusterSpec, ClusterStatus, MemberStatus, NatMode, SpecError};
use docknet_master::control::{self, ClientError, FcEntry, PipeEntry, Request, SOCKET_NAME};
use docknet_master::link::{LinkSnapshot, LINK_COLUMNS};
use docknet_master::route::RouteInfo;
use docknet_master::stats::{StatsSnapshot, COLUMNS};
use serde_json::Value;

/// Control the DockNet master daemon (docknetd): pipes, fast channels, rate limits, stats,
/// clusters.
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
    /// Clusters: a NAT load balancer (dn-nat) on a virtual IP and members behind it,
    /// started and supervised by docknetd.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Routes to other nodes' pod subnets, over the NIC's link.
    #[command(subcommand, long_about = ROUTE_ABOUT)]
    Route(RouteCmd),
}

/// `docknetctl route --help`.
const ROUTE_ABOUT: &str = "Routes to other nodes' pod subnets, over the NIC's link.

Each node runs docknetd on its NIC with an address of its own on the wire
(docknetd --nic af-packet:IFACE --link-ip 192.168.50.1/24) and gives its pods
addresses from its own subnet of one cluster range (node 1 10.90.1.0/24, node 2
10.90.2.0/24 of 10.90.0.0/16). On node 1, `route add 10.90.2.0/24 via 192.168.50.2`
sends what its pods address to node 2's pods to node 2's docknetd (the MAC that
answers ARP for 192.168.50.2), which delivers it to the pod's pipe; node 2 needs the
route back (`route add 10.90.1.0/24 via 192.168.50.1`).

The longest matching prefix wins; local pipe subnets and the link's subnet are more
specific than any route containing them, and a route may not lie inside one. With
--link-ip, a destination outside the local subnets, the link's subnet and every route
is dropped (no_route in `docknetctl nic` and in the sender's stats). Routes are kept
in the state file: a restarted docknetd has them again.";

#[derive(Subcommand, Debug)]
enum RouteCmd {
    /// Route CIDR through next hop IP: `route add 10.90.2.0/24 via 192.168.50.2`.
    ///
    /// IP is the other node's docknetd address on the link (its --link-ip), inside this
    /// docknetd's link subnet. Refused: a malformed CIDR or one with host bits set, a next
    /// hop off the link or our own, a destination that is (inside) a local pipe subnet or
    /// the link's subnet, a duplicate (remove the old route first).
    Add {
        /// Destination, A.B.C.D/N (network address; 0.0.0.0/0 for a default route).
        #[arg(value_name = "CIDR")]
        cidr: String,
        /// The word `via`.
        #[arg(value_name = "via", value_parser = clap::builder::PossibleValuesParser::new(["via"]), hide_possible_values = true)]
        via_word: String,
        /// The next hop: the other node's docknetd address on the link (its --link-ip).
        #[arg(value_name = "IP")]
        via: String,
    },
    /// Remove the route to CIDR.
    Rm {
        /// Destination, as `route ls` shows it.
        #[arg(value_name = "CIDR")]
        cidr: String,
    },
    /// List routes: destination, next hop, and the frames sent through each (`unresolved`:
    /// frames that found the next hop's MAC unknown and waited for ARP).
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The cluster file, for `cluster up --help`.
const CLUSTER_FILE_HELP: &str = r#"The cluster file (TOML; unknown keys are errors):

  name = "web"                      # required; 1-24 of A-Z a-z 0-9 _ -
  vip = "10.88.0.100:80"            # required; A.B.C.D:PORT[/tcp|/udp], or A.B.C.D and:
  # ports = ["80", "443/tcp", "53/udp"]
  vip_prefix = 16                   # prefix of the NAT pipe's address (1-30, default 16)
  replicas = 3                      # required; 1-250, and they must fit the subnet
  subnet = "10.88.1.0/24"           # required; member addresses (the first is the gateway);
                                    # the VIP must be outside it
  binary = "target/release/dn-httpd"  # what members run, or:
  # image = "oci/web"               # an OCI layout (docknet-image) and
  # tag = "web:1"                   # the image in it
  args = ["--work-us", "10"]        # their arguments (default none)
  env = { RUST_LOG = "info" }       # extra environment (DOCKNET_PIPE is set for them)
  policy = "maglev"                 # maglev | rr | least-conn (default maglev)
  mode = "dnat"                     # dnat: members reply through the NAT (default);
                                    # fullnat: the NAT rewrites the source too
  health = { kind = "http", path = "/", port = 80, interval_ms = 1000 }
                                    # kind tcp | http (default http; 2xx/3xx is healthy),
                                    # port default: the VIP's first TCP port
  conn_capacity = 65536             # NAT connection table (16-4000000)
  weight = 1                        # member weight (1-1000)
  nat_binary = "path/to/dn-nat"     # default: dn-nat beside docknetd

Relative paths are from the file's folder; the binary or image must exist."#;

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Start the cluster a TOML file describes, and wait until it serves.
    ///
    /// docknetd creates the pipes and fast channels, starts dn-nat on the virtual IP and
    /// the members behind it, and restarts any that die. Unless --no-wait, this waits
    /// until the NAT and every member run and pass their health check (progress on
    /// stderr), then prints `cluster status`. A bad file is refused before anything
    /// starts, with its line and key (exit status 2); a cluster not ready in time is left
    /// up (exit status 1; `cluster down NAME` removes it).
    #[command(after_long_help = CLUSTER_FILE_HELP)]
    Up {
        /// The cluster file (its keys: `docknetctl cluster up --help`).
        #[arg(value_name = "FILE.toml")]
        file: PathBuf,
        /// The user (and group) the NAT and members run as, owning their pipes. Names or
        /// numbers, e.g. 1000:1000 or www-data. Default: you; only root may name another.
        #[arg(long, value_name = "UID[:GID]")]
        owner: Option<String>,
        /// Wait at most this many seconds for the cluster to be ready.
        #[arg(long, value_name = "N", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout_s: u64,
        /// Return as soon as docknetd has accepted the cluster (`cluster status` tells
        /// when it is ready).
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a cluster: its NAT and each member.
    ///
    /// One line for the NAT, then one per member: address, pid, state (starting,
    /// running, restarting, stopped), health as the NAT's checks see it (healthy,
    /// unhealthy, unknown), weight, connections the NAT sent it and those active now,
    /// bytes forwarded both ways, and how often it was restarted after dying. The NAT
    /// reports its counters every 100 ms; the command waits for its next report first
    /// (150 ms), so the counts include every connection made before it was run.
    Status {
        /// Cluster name.
        name: String,
        /// Print docknetd's JSON instead (with the NAT's own counters).
        #[arg(long)]
        json: bool,
    },
    /// List clusters.
    Ls {
        /// Print JSON (an array of names) instead.
        #[arg(long)]
        json: bool,
    },
    /// Run N members.
    ///
    /// New ones join the rotation once healthy; when shrinking, the highest-numbered
    /// ones are removed and their connections reset (drain them first to spare those).
    Scale {
        /// Cluster name.
        name: String,
        /// Number of members (1-250, within the cluster's subnet).
        #[arg(value_parser = clap::value_parser!(u32).range(1..=MAX_REPLICAS as i64))]
        replicas: u32,
    },
    /// Send a member no new connections; its established ones go on.
    ///
    /// Its weight becomes 0; `cluster weight` puts it back.
    Drain {
        /// Cluster name.
        name: String,
        /// Member name (e.g. web-2, as `cluster status` shows).
        member: String,
    },
    /// Set a member's weight: its share of new connections.
    ///
    /// A member of weight 2 gets twice the new connections of one of weight 1; 0 drains
    /// it (no new connections, established ones go on).
    Weight {
        /// Cluster name.
        name: String,
        /// Member name (e.g. web-2, as `cluster status` shows).
        member: String,
        /// 1-1000, or 0 to drain it.
        #[arg(value_parser = clap::value_parser!(u32).range(0..=1000))]
        weight: u32,
    },
    /// Stop a cluster's NAT and members and remove their pipes (their connections end).
    Down {
        /// Cluster name.
        name: String,
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
        /// IP MTU (576-65000). Default: 65000 without a NIC (`docknetd --nic none`: no
        /// frame leaves the host, and TCP between services moves 64 KB segments); with a
        /// NIC, 9000, or the NIC's MTU if that is smaller (frames that leave the host must
        /// fit the link), or with a NIC that takes GSO frames the largest it takes, up to
        /// 65000. Up to 9000 the pipe file holds 1,024 buffers of the MTU a direction (18
        /// MiB at 9000; more, smaller ones below); above, 1,024 buffers for frames up to
        /// 9000 bytes and 32 large ones for the rest (22 MiB at 65000).
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
        /// IP MTU of the channel, from the pipes' MTU up to 65000 (default 65000). Each
        /// service uses it toward the other while the channel carries their frames: TCP
        /// between them then moves up to 64 KB per segment, a fraction of the per-segment
        /// work at 9000-byte pipes. Pipes of two different MTUs, a --forwarder pipe or
        /// --forward keep the smaller pipe's MTU (the only one accepted then). Above 9000
        /// the file holds, each way, 1,024 buffers for frames up to 9000 bytes and 32
        /// large ones (22 MiB at 65000).
        #[arg(long)]
        mtu: Option<u32>,
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

/// How long a request may take (longer for `cluster up`, which starts processes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `cluster up` asks whether the cluster is ready.
const POLL: Duration = Duration::from_millis(100);

/// Send `req` to the daemon on `sock`; the error is its one-line message.
fn request(sock: &Path, req: &Request, timeout: Duration) -> Result<Value, String> {
    control::request(sock, req, timeout).map_err(|e| match e {
        ClientError::Unreachable(m) | ClientError::Remote(m) => m,
    })
}

/// Why docknetctl failed; the exit status follows the kind.
#[derive(Debug)]
enum Failure {
    /// docknetd refused the request, could not be reached or answered nonsense (1).
    Failed(String),
    /// A cluster file that cannot be read or is not valid (2, as for bad arguments:
    /// nothing was asked of docknetd). `file` as the user wrote it.
    BadFile { file: PathBuf, why: String },
    /// `cluster up` waited in vain (1); the cluster is left up. `unready`: one line per
    /// NAT or member not running and healthy.
    NotReady {
        name: String,
        waited: Duration,
        healthy: usize,
        replicas: u32,
        unready: Vec<String>,
    },
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Failure::BadFile { .. } => 2,
            Failure::Failed(_) | Failure::NotReady { .. } => 1,
        }
    }

    /// Lines to print below the message.
    fn details(&self) -> &[String] {
        match self {
            Failure::NotReady { unready, .. } => unready,
            _ => &[],
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Failed(m) => f.write_str(m),
            Failure::BadFile { file, why } => write!(f, "{}: {why}", file.display()),
            Failure::NotReady {
                name,
                waited,
                healthy,
                replicas,
                unready: _,
            } => write!(
                f,
                "{name}: not ready after {} ({healthy}/{replicas} members healthy); it stays up as it is: `docknetctl cluster down {name}` removes it",
                human_ms(waited.as_millis() as u64)
            ),
        }
    }
}

impl From<String> for Failure {
    fn from(m: String) -> Self {
        Failure::Failed(m)
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let sock = args.run_dir.join(SOCKET_NAME);
    let call = |req: Request| request(&sock, &req, REQUEST_TIMEOUT);
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
        Cmd::Fc(FcCmd::Create { a, b, forward, mtu }) => {
            let e: FcEntry = decode(call(Request::FcCreate { a, b, forward, mtu })?)?;
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
                if let Some(ip) = v["link_ip"].as_str() {
                    println!("docknetd's address on the link: {ip} (docknetctl route ls)");
                }
                let rows: Vec<Vec<String>> = LINK_COLUMNS
                    .iter()
                    .zip(c.values())
                    .map(|(k, v)| vec![k.to_string(), v.to_string()])
                    .collect();
                table(&["COUNTER", "VALUE"], &rows);
            }
        }
        Cmd::Route(RouteCmd::Add {
            cidr,
            via_word: _,
            via,
        }) => {
            call(Request::RouteAdd { cidr, via })?;
        }
        Cmd::Route(RouteCmd::Rm { cidr }) => {
            call(Request::RouteRm { cidr })?;
        }
        Cmd::Route(RouteCmd::Ls { json }) => {
            let v = call(Request::RouteLs)?;
            if json {
                json_out(&v);
            } else {
                match (v["nic"].as_str(), v["link_ip"].as_str()) {
                    (Some(nic), Some(ip)) => println!("link {nic}, docknetd's address {ip}"),
                    (Some(nic), None) => {
                        println!("link {nic}, no address (docknetd --link-ip): no routes possible")
                    }
                    _ => println!("no NIC (docknetd --nic none): no routes possible"),
                }
                let routes: Vec<RouteInfo> = decode(v["routes"].clone())?;
                let rows: Vec<Vec<String>> = routes
                    .into_iter()
                    .map(|r| {
                        vec![
                            r.cidr,
                            r.via,
                            r.counters.frames.to_string(),
                            r.counters.bytes.to_string(),
                            r.counters.unresolved.to_string(),
                        ]
                    })
                    .collect();
                table(&["DEST", "VIA", "FRAMES", "BYTES", "UNRESOLVED"], &rows);
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
                return Err(Failure::Failed(format!(
                    "docknetd accepted the shutdown but {} is still there after 20 s",
                    sock.display()
                )));
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
        Cmd::Cluster(cmd) => cluster(&sock, cmd)?,
    }
    Ok(())
}

/// Read and check a cluster file (before anything is asked of docknetd).
fn read_cluster_file(file: &Path) -> Result<ClusterSpec, Failure> {
    let bad = |why: String| Failure::BadFile {
        file: file.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(file).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let base = file.parent().unwrap_or(Path::new(""));
    ClusterSpec::from_toml(&text, base).map_err(|e: SpecError| bad(e.to_string()))
}

/// Running and passing its health checks.
fn is_ready(m: &MemberStatus) -> bool {
    m.state == "running" && m.health == "healthy"
}

fn mode_name(m: NatMode) -> &'static str {
    match m {
        NatMode::Dnat => "dnat",
        NatMode::Fullnat => "fullnat",
    }
}

/// One line on what keeps a member (or the NAT) from being ready.
fn why_unready(role: &str, m: &MemberStatus) -> String {
    let pid = match m.pid {
        0 => "no process".to_string(),
        pid => format!("pid {pid}"),
    };
    let restarts = match m.restarts {
        0 => String::new(),
        1 => ", restarted once".into(),
        n => format!(", restarted {n} times"),
    };
    format!(
        "{role} {} ({}): {}, {}, {pid}{restarts}",
        m.name, m.ip, m.state, m.health
    )
}

fn print_status(st: &ClusterStatus) {
    println!(
        "{}: vip {}, policy {}, mode {}",
        st.name,
        st.vip,
        st.policy,
        mode_name(st.mode)
    );
    let row = |role: &str, m: &MemberStatus| {
        vec![
            role.to_string(),
            m.name.clone(),
            m.ip.clone(),
            match m.pid {
                0 => "-".into(),
                pid => pid.to_string(),
            },
            m.state.clone(),
            m.health.clone(),
            m.weight.to_string(),
            m.connections.to_string(),
            m.active.to_string(),
            m.bytes.to_string(),
            m.restarts.to_string(),
        ]
    };
    let rows: Vec<Vec<String>> = std::iter::once(row("nat", &st.nat))
        .chain(st.members.iter().map(|m| row("member", m)))
        .collect();
    table(
        &[
            "ROLE",
            "NAME",
            "IP",
            "PID",
            "STATE",
            "HEALTH",
            "WEIGHT",
            "CONNECTIONS",
            "ACTIVE",
            "BYTES",
            "RESTARTS",
        ],
        &rows,
    );
}

/// Ask for cluster `name`'s status every [`POLL`] until the NAT and `replicas` members
/// run and are healthy, telling on stderr how many are whenever that changes.
fn wait_ready(
    sock: &Path,
    name: &str,
    replicas: u32,
    timeout: Duration,
) -> Result<ClusterStatus, Failure> {
    let start = Instant::now();
    let mut said = String::new();
    loop {
        let st: ClusterStatus = decode(request(
            sock,
            &Request::ClusterStatus { name: name.into() },
            REQUEST_TIMEOUT,
        )?)?;
        let healthy = st.members.iter().filter(|m| is_ready(m)).count();
        let nat_ready = is_ready(&st.nat);
        let mut progress = format!("{name}: {healthy}/{replicas} members healthy");
        if !nat_ready {
            progress += &format!(", NAT {}, {}", st.nat.state, st.nat.health);
        }
        if progress != said {
            eprintln!("{progress}");
            said = progress;
        }
        if nat_ready && healthy >= replicas as usize {
            return Ok(st);
        }
        if start.elapsed() >= timeout {
            let mut unready: Vec<String> = std::iter::once(("nat", &st.nat))
                .chain(st.members.iter().map(|m| ("member", m)))
                .filter(|(_, m)| !is_ready(m))
                .map(|(role, m)| why_unready(role, m))
                .collect();
            if st.members.len() < replicas as usize {
                unready.push(format!(
                    "{} of {replicas} members not started yet",
                    replicas as usize - st.members.len()
                ));
            }
            return Err(Failure::NotReady {
                name: name.into(),
                waited: timeout,
                healthy,
                replicas,
                unready,
            });
        }
        std::thread::sleep(POLL);
    }
}

fn cluster(sock: &Path, cmd: ClusterCmd) -> Result<(), Failure> {
    let call = |req: Request| request(sock, &req, REQUEST_TIMEOUT);
    match cmd {
        ClusterCmd::Up {
            file,
            owner,
            timeout_s,
            no_wait,
        } => {
            let spec = read_cluster_file(&file)?;
            let (name, replicas) = (spec.name.clone(), spec.replicas);
            let ports: Vec<String> = spec.ports.iter().map(|p| p.to_string()).collect();
            let vip = format!("{} ({})", spec.vip, ports.join(", "));
            // Creating the pipes and starting the processes takes docknetd a moment more
            // than other requests.
            request(
                sock,
                &Request::ClusterUp { spec, owner },
                REQUEST_TIMEOUT * 3,
            )?;
            if no_wait {
                println!(
                    "{name}: starting the NAT on {vip} and {replicas} members (`docknetctl cluster status {name}` tells when they are healthy)"
                );
                return Ok(());
            }
            let st = wait_ready(sock, &name, replicas, Duration::from_secs(timeout_s))?;
            print_status(&st);
        }
        ClusterCmd::Status { name, json } => {
            // The NAT publishes its counters within STATS_EVERY_MS of a change: wait that
            // long (and a margin) first, so the status counts the connections made before
            // it was asked for (read at once after a burst of requests, it missed the last
            // few). Here, not in docknetd, where a wait would hold the control lock.
            std::thread::sleep(Duration::from_millis(STATS_EVERY_MS + 50));
            let v = call(Request::ClusterStatus { name })?;
            if json {
                json_out(&v);
            } else {
                print_status(&decode(v)?);
            }
        }
        ClusterCmd::Ls { json } => {
            let v = call(Request::ClusterLs)?;
            if json {
                json_out(&v);
            } else {
                let names: Vec<String> = decode(v)?;
                for n in names {
                    println!("{n}");
                }
            }
        }
        ClusterCmd::Scale { name, replicas } => {
            call(Request::ClusterScale {
                name: name.clone(),
                replicas,
            })?;
            println!("{name}: scaling to {replicas} members (new ones join once healthy)");
        }
        ClusterCmd::Drain { name, member } => {
            call(Request::ClusterDrain {
                name: name.clone(),
                member: member.clone(),
            })?;
            println!("{name}: {member} drained: no new connections, established ones go on");
        }
        ClusterCmd::Weight {
            name,
            member,
            weight,
        } => {
            call(Request::ClusterWeight {
                name: name.clone(),
                member: member.clone(),
                weight,
            })?;
            if weight == 0 {
                println!("{name}: {member} weight 0: drained, established connections go on");
            } else {
                println!("{name}: {member} weight {weight}");
            }
        }
        ClusterCmd::Down { name } => {
            call(Request::ClusterDown { name: name.clone() })?;
            println!("{name}: NAT and members stopped, their pipes removed");
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
        for line in e.details() {
            eprintln!("  {line}");
        }
        std::process::exit(e.exit_code());
    }
}

//! `docknetd`: the DockNet master daemon.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The DockNet master daemon: owns the pipes and switches every frame between them.
///
/// Listens for `docknetctl` on RUN_DIR/docknetd.sock. Pipe files live in RUN_DIR/pipes
/// (a tmpfs is mounted there if it is not on one already). Stop it with SIGINT or SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "docknetd", version)]
struct Args {
    /// Run directory: control socket and pipe directories.
    #[arg(long, value_name = "DIR", default_value = "/run/docknet")]
    run_dir: PathBuf,
    /// NIC backend: none (intra-host only) | tap:NAME (a TAP interface whose kernel side
    /// gets each pipe subnet's gateway address, so the host reaches the services) |
    /// af-packet:IFACE (an existing interface, TPACKET_V2 rings) | dpdk:'EAL ARGS' (needs
    /// the `dpdk` cargo feature; e.g. dpdk:'--no-huge --no-pci --vdev=net_af_packet0,iface=veth0').
    #[arg(long, value_name = "NIC", default_value = "none")]
    nic: String,
    /// Pin the data-path thread to this CPU core.
    #[arg(long, value_name = "N")]
    core: Option<usize>,
    /// How long a neighbour's ARP answer on the NIC's link is trusted before the master
    /// re-validates it (it keeps sending to the known MAC meanwhile, as Linux does), e.g.
    /// 30s, 5s, 500ms. Probes go out a fifth of this apart (at most 1 s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    arp_reachable: Duration,
    /// A group (name or number) whose members may use the control socket besides root:
    /// the socket is 0660 root:GROUP. Members create pipes owned by themselves.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Rate limits' fine timer: every N microseconds a limited pipe earns N µs' worth of
    /// tokens (`docknetctl rate set`).
    #[arg(long, value_name = "N", default_value_t = 10)]
    rate_fine_us: u64,
    /// Rate limits' coarse timer: every M milliseconds the tokens a pipe has not spent are
    /// dropped, so a pipe that was silent cannot send more than M ms' worth at once.
    #[arg(long, value_name = "M", default_value_t = 4)]
    rate_coarse_ms: u64,
    /// docknetd's own address on the NIC's link, with the link's prefix, e.g.
    /// 192.168.50.1/24. docknetd answers ARP for it with the NIC's MAC and asks from it
    /// when resolving a next hop, so other nodes name it in `docknetctl route add CIDR via
    /// IP`; with it, a destination outside the local pipe subnets, this subnet and every
    /// route is dropped (counted as no_route) instead of being asked for on the link.
    /// Give each node its own, and not an address the kernel holds on that interface
    /// (docknetd has no IP stack: it only answers ARP for it and routes through it).
    #[arg(long, value_name = "A.B.C.D/N")]
    link_ip: Option<String>,
}

/// `30s`, `500ms`, `2m` or plain seconds; between 100 ms and one hour.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s or m)")),
    };
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("'{s}' is out of range (100ms to 1h)"));
    }
    Ok(d)
}

fn main() {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let opts = docknet_master::daemon::Options {
        run_dir: args.run_dir,
        nic: args.nic,
        core: args.core,
        neighbor_timers: docknet_master::link::NeighborTimers::with_reachable(args.arp_reachable),
        group: args.group,
        rate_timers: (args.rate_fine_us, args.rate_coarse_ms),
        link_ip: args.link_ip,
    };
    if let Err(e) = docknet_master::daemon::run(opts) {
        eprintln!("docknetd: {e}");
        std::process::exit(e.code());
    }
}

//! `docknetd`: the DockNet master daemon.

use std::path::PathBuf;

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
    /// af-packet:IFACE (an existing interface, TPACKET_V3 rings) | dpdk:'EAL ARGS' (needs
    /// the `dpdk` cargo feature; e.g. dpdk:'--no-huge --no-pci --vdev=net_af_packet0,iface=veth0').
    #[arg(long, value_name = "NIC", default_value = "none")]
    nic: String,
    /// Pin the data-path thread to this CPU core.
    #[arg(long, value_name = "N")]
    core: Option<usize>,
}

fn main() {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let opts = docknet_master::daemon::Options {
        run_dir: args.run_dir,
        nic: args.nic,
        core: args.core,
    };
    if let Err(e) = docknet_master::daemon::run(opts) {
        eprintln!("docknetd: {e}");
        std::process::exit(e.code);
    }
}

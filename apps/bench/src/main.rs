//! `docknet-bench`: benchmarks DockNet's paths against the kernel's, side by
//! side in one run. See `docknet-bench pingpong --help`.

mod cleanup;
mod docknet;
mod kernel;
mod netns;
mod pingpong;
mod proc;
mod report;
mod sizes;
mod stats;
mod svg;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::pingpong::{PathList, PingPongArgs, SizeList};

#[derive(Parser, Debug)]
#[command(
    name = "docknet-bench",
    version,
    about = "Benchmarks: DockNet paths against the kernel's, side by side in one run",
    long_about = "Benchmarks: DockNet paths against the kernel's, side by side in one run.\n\n\
Logs go to stderr through env_logger (RUST_LOG=debug for child output and setup commands)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const PINGPONG_ABOUT: &str = "\
TCP ping-pong of fixed-size messages over several paths, side by side.

Paths:
  kernel-lo       kernel TCP over loopback (127.0.0.1)
  kernel-bridge   kernel TCP between two network namespaces joined by veth pairs to a
                  Linux bridge in a third namespace (the root namespace is not touched;
                  needs root — skipped with a reason otherwise)
  docknet-master  DockNet: docknetd (--nic none) + pipes a, b; dn-echo server on a,
                  dn-echo client on b; frames switched by the master
  docknet-fc      DockNet over a fast channel: pipes c, d joined by `docknetctl fc create c d`

Definitions (identical for every path):
  round trip      the client writes a SIZE-byte message, the peer echoes it, the client
                  reads all SIZE bytes back (the kernel client checks every byte, outside
                  the timed window)
  one-way latency RTT / 2; p50 and p99 (nearest rank) over the measured messages
  goodput         SIZE × COUNT × 8 / elapsed, in Gbit/s (payload in one direction), where
                  elapsed is the total time of the measured (non-warm-up) round trips

Output: a table on stdout (path, size, goodput, one-way p50, one-way p99) and a ratios
section (1 KB and 200 KB, relative to kernel-bridge); OUT/pingpong.svg (goodput and
p50 one-way latency vs message size, log x); OUT/pingpong.md (table, command line,
date, kernel, CPU); OUT/pingpong.json (raw results). Progress goes to stderr.

A point whose client fails (non-zero exit, bad output, --timeout) is reported as FAILED
with the client's stderr digest, and the run goes on; for DockNet the client's pipe is
re-created before the next point. A path that cannot be set up is skipped with a reason.

The DockNet binaries (docknetd, docknetctl, dn-echo) are taken from the directory of this
executable unless --bin-dir is given; if they are missing, those paths are skipped.
DockNet runs use a private run dir /tmp/dnbench-PID (docknetd --run-dir ... --nic none).
Everything started (processes, namespaces dnbPIDa/dnbPIDb/dnbPIDbr, run dir) is removed
on exit, including on SIGINT/SIGTERM/SIGHUP. RUST_LOG=debug shows setup commands and
child output.
Build everything first, e.g. `cargo build --release`, then run
`target/release/docknet-bench pingpong`.";

#[derive(Subcommand, Debug)]
enum Cmd {
    /// TCP ping-pong over kernel and DockNet paths; writes a table, an SVG plot and a report.
    #[command(long_about = PINGPONG_ABOUT)]
    Pingpong(PingPongCli),

    /// (internal) Kernel TCP echo server: echoes every byte on every connection.
    #[command(hide = true)]
    KernelEchoServer {
        /// Address to listen on (port 0 = any; the chosen one is printed).
        #[arg(long)]
        bind: SocketAddr,
    },

    /// (internal) Kernel TCP ping-pong client; prints one result line.
    #[command(hide = true)]
    KernelEchoClient {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, value_parser = parse_size_arg)]
        size: usize,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        /// Print the result as one JSON line (the `dn-echo client --json` schema).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct PingPongCli {
    /// Paths to run, comma-separated, in this order.
    #[arg(
        long,
        default_value = "kernel-lo,kernel-bridge,docknet-master,docknet-fc"
    )]
    paths: PathList,

    /// Message sizes in bytes, comma-separated; K = 1024, M = 1024².
    #[arg(long, default_value = "64,256,1K,4K,16K,64K,200K,400K")]
    sizes: SizeList,

    /// Measured messages per size. Default: sized so each point takes about
    /// --seconds, from a short pilot run (50 messages) of the same client;
    /// at least 100, at most 1000000.
    #[arg(long)]
    count: Option<usize>,

    /// Target duration of one point when --count is not given.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,

    /// Warm-up messages per size, not measured. Default: count / 20, within 10..=1000.
    #[arg(long)]
    warmup: Option<usize>,

    /// Directory for pingpong.svg, pingpong.md and pingpong.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,

    /// Directory holding docknetd, docknetctl and dn-echo (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Seconds one point (one client run) may take before it is killed and marked FAILED.
    #[arg(long, default_value_t = 120)]
    timeout: u64,

    /// Keep the DockNet run directory (/tmp/dnbench-PID) for inspection.
    #[arg(long)]
    keep_run_dir: bool,
}

fn parse_size_arg(s: &str) -> Result<usize, String> {
    sizes::parse_size(s)
}

fn main() {
    let cli = Cli::parse();
    let default_level = match cli.cmd {
        Cmd::Pingpong(_) => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    let code = match cli.cmd {
        Cmd::Pingpong(p) => {
            cleanup::install_signal_thread();
            let args = PingPongArgs {
                paths: p.paths.0,
                sizes: p.sizes.0,
                count: p.count,
                seconds: p.seconds,
                warmup: p.warmup,
                out: p.out,
                bin_dir: p.bin_dir,
                timeout: Duration::from_secs(p.timeout),
                keep_run_dir: p.keep_run_dir,
                command_line: report::shell_join(&std::env::args().collect::<Vec<_>>()),
            };
            let r = pingpong::run(&args);
            cleanup::release_all();
            match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("docknet-bench: {e}");
                    1
                }
            }
        }
        Cmd::KernelEchoServer { bind } => match kernel::serve(bind) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("kernel-echo-server: {bind}: {e}");
                1
            }
        },
        Cmd::KernelEchoClient {
            to,
            size,
            count,
            warmup,
            json,
        } => {
            let params = kernel::ClientParams {
                to,
                size,
                count,
                warmup,
                connect_timeout: Duration::from_secs(10),
            };
            match kernel::run_client(&params) {
                Ok(r) if json => {
                    println!("{}", serde_json::to_string(&r).expect("serialize result"));
                    0
                }
                Ok(r) => {
                    println!(
                        "size {} count {}: one-way p50 {:.1} µs, p99 {:.1} µs, goodput {:.3} Gbit/s",
                        r.size, r.count, r.one_way_us_p50, r.one_way_us_p99, r.goodput_gbps
                    );
                    0
                }
                Err(e) => {
                    eprintln!("kernel-echo-client: {to}: {e}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pingpong::PathKind;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pingpong_defaults_parse() {
        let cli = Cli::try_parse_from(["docknet-bench", "pingpong"]).unwrap();
        let Cmd::Pingpong(p) = cli.cmd else {
            panic!("not pingpong")
        };
        assert_eq!(p.paths.0.len(), 4);
        assert_eq!(p.paths.0[1], PathKind::KernelBridge);
        assert_eq!(p.sizes.0.len(), 8);
        assert_eq!(p.sizes.0[7], 400 * 1024);
        let cli = Cli::try_parse_from([
            "docknet-bench",
            "pingpong",
            "--paths",
            "docknet-fc,kernel-lo",
            "--sizes",
            "1K,200k",
        ])
        .unwrap();
        let Cmd::Pingpong(p) = cli.cmd else {
            panic!("not pingpong")
        };
        assert_eq!(p.paths.0, vec![PathKind::DocknetFc, PathKind::KernelLo]);
        assert_eq!(p.sizes.0, vec![1024, 204800]);
        assert!(Cli::try_parse_from(["docknet-bench", "pingpong", "--paths", "bogus"]).is_err());
        assert!(Cli::try_parse_from(["docknet-bench", "pingpong", "--sizes", "1Q"]).is_err());
    }
}

//! `docknet-bench`: benchmarks DockNet's paths against the kernel's, side by
//! side in one run. See `docknet-bench pingpong --help`.

mod cleanup;
mod cluster;
mod cni;
mod cpu;
mod docknet;
mod fairness;
mod httpd;
mod interhost;
mod kernel;
mod loss;
mod nat;
mod netns;
mod pingpong;
mod proc;
mod ratelimit;
mod report;
mod sizes;
mod soak;
mod stats;
mod svg;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::interhost::HostPathList;
use crate::pingpong::{BenchArgs, PathList, SizeList};

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
                  (the channel's default IP MTU, 65000, between c and d, as the kernel
                  paths move 64 KB GSO super-packets over veth; the pipes' are docknetd's
                  default without a NIC, 65000 too, or --pipe-mtu)
  (--pipe-mtu M makes the DockNet paths' pipes with `pipe create --mtu M`)

Definitions (identical for every path):
  round trip      the client writes a SIZE-byte message, the peer echoes it, the client
                  reads all SIZE bytes back (the kernel client checks every byte, outside
                  the timed window)
  one-way latency RTT / 2; p50 and p99 (nearest rank) over the measured messages
  goodput         SIZE × COUNT × 8 / elapsed, in Gbit/s (payload in one direction), where
                  elapsed is the total time of the measured (non-warm-up) round trips

Output: a table on stdout (path, size, goodput, one-way p50, one-way p99), a ratios
section (1 KB and 200 KB, relative to kernel-bridge) and issue 10's 200 KB targets
(fast channel >= 3x, master >= 1.5x the kernel bridge's goodput; with --runs, decided
on the median of each round's own ratio); OUT/pingpong.svg (goodput and
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

const INTERHOST_ABOUT: &str = "\
TCP ping-pong between two hosts across a wire (the paper's Fig. 8a/b), several paths side by side.

The hosts are network namespaces H1 and H2. Every path gets a fresh copy of the same wire,
with the same MTU (--mtu; default the veth default, 1500) and offloads on every veth end
(veth defaults: TSO/GSO and checksum offload on, GRO off; --no-tso turns TSO/GSO off).
Needs root (and ethtool for --no-tso).

Topologies (--topology):
  containers (default)  the wire is one veth pair, H1's eth0 <-> H2's eth0 (the physical
                        link). Kernel path, as Docker's default bridge network: on each
                        host a container namespace C1 (C2) whose eth0 is a veth to br0 in
                        H1 (H2), the wire end being a port of the same br0:
                          C1 eth0 -veth- vethc1 -br0- eth0 ==wire== eth0 -br0- vethc2 -veth- eth0 C2
                        DockNet paths: docknetd on each host's wire end itself (no bridge,
                        no container veth):  H1 docknetd - eth0 ==wire== eth0 - docknetd H2
  bridge-wire           each host's eth0 is a veth to a port of br0 in a third namespace:
                        H1 eth0 -veth- br0 -veth- eth0 H2; kernel endpoints directly in
                        H1/H2 (addresses on eth0), docknetd on eth0 as above

Paths:
  kernel-veth-bridge  kernel TCP: 10.88.1.2/16 -> 10.88.2.2/16 (in C1/C2, or on H1/H2's
                      eth0 with bridge-wire); our kernel echo client on the .1.2 side,
                      echo server on the .2.2 side
  docknet-af-packet   one docknetd per host, `nsenter --net=/run/netns/H docknetd
                      --run-dir RUN --nic af-packet:eth0` (eth0 has no kernel address);
                      pipe a 10.88.1.2/16 on H1, pipe b 10.88.2.2/16 on H2 (one /16: the
                      masters answer ARP for their pipes and ask ARP on the wire);
                      dn-echo server on b, dn-echo client --to 10.88.2.2:7 on a
  docknet-dpdk        the same with --nic dpdk:'--no-huge --no-pci
                      --vdev=net_af_packet0,iface=eth0 -l N --file-prefix=... --log-level=error'
                      (H1 on lcore 0, H2 on the last CPU). Skipped with a reason when
                      docknetd was built without `--features docknet-master/dpdk`.

Definitions, count/warm-up choice and failure handling: as `pingpong` (see its --help).

Output: the table, a ratios section (1 KB and 200 KB, relative to kernel-veth-bridge) and
the issue-3 targets (DockNet one-way p50 at 1 KB >= 3x lower than the kernel path; goodput
no lower at any size) on stdout; OUT/interhost.svg, OUT/interhost.md (with the topology that
ran and its diagram), OUT/interhost.json. Progress goes to stderr. Everything started
(namespaces dnbPID{k,p,d}{h1,h2,c1,c2} or dnbPID{k,p,d}{a,b,br}, docknetd processes, run
dirs /tmp/dnbench-PID-*) is removed on exit, including on SIGINT/SIGTERM/SIGHUP.
Build first, e.g. `cargo build --release` (add `--features docknet-master/dpdk` for the
DPDK path), then run `target/release/docknet-bench interhost`.";

const HTTPD_ABOUT: &str = "\
HTTP/1.1 keep-alive load on the same 1 KB page, DockNet vs the kernel, side by side, at
several connection counts (issue 4).

Paths:
  kernel-nginx      wrk -t1 -cN in namespace A -> veth -> Linux bridge -> veth -> nginx
                    (worker_processes 1, access_log off, sendfile, keep-alive) in namespace B;
                    nginx runs from a temp dir (config, pid, temp paths), daemon off
  docknet-fc        dn-loadgen -> dn-httpd over a fast channel (docknetd --nic none, two
                    pipes, docknetctl fc create)
  docknet-master    dn-loadgen -> dn-httpd, frames switched by docknetd
  wrk-tap-dn-httpd  wrk in a namespace whose TAP is docknetd's NIC (`nsenter --net=...
                    docknetd --nic tap:dnbtap0`) -> docknetd -> dn-httpd

The page: 1024 bytes of HTML (index.html), served by nginx from a temp dir and compiled into
a dedicated dn-httpd: DN_HTTPD_SITE=/tmp/bench-httpd-target/site-1k
CARGO_TARGET_DIR=/tmp/bench-httpd-target cargo build --release -p dn-httpd, run in --src
(default: this source tree) unless --httpd-bin names a binary built that way.

Needs root, nginx and wrk (apt-get install nginx-light wrk); docknetd, docknetctl,
dn-echo and dn-loadgen next to this executable (or --bin-dir).

Output: table (path, conns, requests/s, latency p50/p99, errors), ratios against
kernel-nginx, the issue-4 target ((a) docknet-fc >= 3x kernel-nginx requests/s at 64
connections; (b) as measured) and issue 10's scaling (each DockNet path's requests/s at
the largest --conns >= 80% of those at the smallest; with --runs, the median of each
round's own ratio decides, the ratio of the two medians shown beside it) on stdout; OUT/httpd.svg (requests/s and p50 vs
connections), OUT/httpd.md (with every command line), OUT/httpd.json. Everything started
(nginx, docknetd, dn-httpd, namespaces dnbPIDh*, temp dirs /tmp/dnbench-PID-*) is
removed on exit, including on SIGINT/SIGTERM/SIGHUP.";

const NAT_ABOUT: &str = "\
What the L4 load balancer dn-nat adds, beside what the kernel's nftables DNAT adds, in one
run (issue 9). Parts (--parts), in this order by default:

  docknet-latency  1 KB TCP ping-pong, dn-echo client -> dn-echo server directly, then
                   through dn-nat to a cluster member running dn-echo server, in rounds
                   (direct, then NAT). Two rows: docknet-master (the client reaches the
                   server, or the NAT, through docknetd; NAT <-> member is the cluster's
                   fast channel) and docknet-fc (client <-> server and client <-> NAT over
                   fast channels: `docknetctl fc create cf echo`). One docknetd --nic none;
                   the NAT is the cluster `echo` (`docknetctl cluster up`, VIP
                   10.88.0.100:7, one member); the direct server is pipe srv 10.88.0.20.
  kernel-latency   the same ping-pong with the bench's kernel echo client and server
                   (std::net): namespaces client 10.77.9.2 -veth- router (ip_forward=1;
                   10.77.9.1 and the VIP 10.77.9.100) -veth- server 10.77.10.2 (and a
                   second server 10.77.11.2). Direct = client -> server routed by the
                   router, no ruleset; NAT = client -> VIP:5201 with the rule
                   `ip daddr VIP tcp dport 5201 dnat to numgen inc mod 1 map { 0 : SERVER }`
                   loaded on the router for that point only (needs root and nft:
                   apt-get install nftables; skipped with the reason otherwise).
  docknet-rps      requests/s: dn-loadgen -c C -> dn-nat (the cluster `web`, VIP
                   10.88.0.200:80, Maglev) -> 2 members running dn-httpd; rows
                   docknet-nat-fc (loadgen <-> NAT fast channel; the row the target uses)
                   and docknet-nat-master (through docknetd).
  kernel-rps       requests/s: wrk -t1 -cC in the client namespace -> VIP:80 on the router,
                   `dnat to numgen inc mod 2 map { 0 : SERVER1, 1 : SERVER2 }` -> nginx in
                   each server namespace, 1 worker each (the httpd bench's nginx.conf):
                   like for like with two single-threaded dn-httpd members and one
                   single-threaded load generator (needs nginx and wrk).

Definitions:
  one-way latency  RTT / 2 (p50, p99 over COUNT messages), as `pingpong`
  added            via NAT - direct, of the same round; the table gives medians over the
                   --rounds rounds
  requests/s       responses in the measured window / its length (each run after a warm-up
                   run of the same client); latency = request queued to response complete;
                   each row is run --rounds times and the median run is reported
  CPU              per process, CPU seconds per wall second (cores) in the measured window
                   (/proc/PID/stat; the client's from getrusage; 'preempted' = involuntary
                   context switches), and all CPUs' user/system/softirq/idle/steal
                   (/proc/stat): the profile printed beside a missed target

Targets: (a) dn-nat adds <= 1 us one-way p50 (the paper measured 1.05 us); (b) nftables'
figure as measured; (c) docknet-nat-fc >= 3x kernel-nftables-nginx requests/s.

Output: tables, targets and CPU on stdout; OUT/nat.svg (p50 direct vs via the NAT, and
requests/s), OUT/nat.md (with every command line, the cluster files and the nft ruleset),
OUT/nat.json. Progress on stderr. Needs docknetd, docknetctl, dn-echo, dn-nat and
dn-loadgen next to this executable (or --bin-dir); dn-httpd with the 1 KB page is built as
for `httpd` unless --httpd-bin. Everything started (docknetd and its clusters, servers,
nginx, namespaces dnbPIDn{c,r,s1,s2}, temp dirs /tmp/dnbench-PID-*) is removed on exit,
including on SIGINT/SIGTERM/SIGHUP.";

const CLUSTER_ABOUT: &str = "\
Requests/s of a web cluster behind dn-nat with 1, 2, 3, 4 members (the paper's scaling
figure, issue 9): members run `dn-httpd --work-us W` (busy work per request) serving the
1 KB page; dn-loadgen -c C (one thread) reaches the NAT over a fast channel.

For each member count: `docknetctl cluster up` (cluster `web`, VIP 10.89.0.100:80, subnet
10.89.1.0/24, health checks over HTTP; the NAT <-> member fast channels are the
cluster's), `docknetctl fc create lg web`, a warm-up run, the measured run, `cluster down`;
--rounds rounds over the counts (1,2,3,4, 1,2,3,4, ...), the median run of each count
reported. One docknetd --nic none for all (run dir /tmp/dnbench-PID-cluster).

--cores LIST pins with taskset: dn-loadgen on the first CPU of the list, dn-nat on the
second, member i on the (2+i)-th, wrapping around the list; docknetd (and so what it
starts, until pinned) on the whole list. So `--cores 0-5` on a 6-CPU machine gives every
process of a 4-member cluster a CPU of its own; on 2 CPUs they share.

Definitions: requests/s and latency as `httpd`; vs 1 member = requests/s / requests/s
with 1 member, printed beside the paper's 1.92x / 2.61x / 3.46x for 2 / 3 / 4 members;
per member = connections the NAT gave each member in the measured run / its share of the
bytes; CPU as `nat --help` says.

Output: the table and the CPU breakdown on stdout; OUT/cluster.svg (requests/s, and
scaling beside the paper's), OUT/cluster.md (with the cluster file), OUT/cluster.json.
Progress on stderr. Needs docknetd, docknetctl, dn-nat and dn-loadgen next to this
executable (or --bin-dir); dn-httpd with the 1 KB page is built as for `httpd` unless
--httpd-bin. Everything started (docknetd, the cluster, temp dirs) is removed on exit,
including on SIGINT/SIGTERM/SIGHUP.";

const LOSS_ABOUT: &str = "\
How fast TCP recovers from random loss (issue 10): COUNT sequential echoes of SIZE bytes on
one connection (write SIZE, read SIZE back, repeat; default 16 x 1 MiB) at each loss rate
each way, DockNet beside the kernel, in one run.

Paths:
  kernel-veth-bridge  the bench's kernel echo client and server (std::net, TCP_NODELAY) in
                      namespaces a (10.78.0.2) and b (10.78.0.3) joined by veths to a Linux
                      bridge in a third; every link at --mtu, TSO, GSO and GRO off on every
                      veth end (so one drop is one MTU-sized packet, as on the pipes). There
                      is no sch_netem here: loss is an nftables table in a and b with
                      `numgen random mod 1000 < N counter drop` on input (N = 1, 10, 30 for
                      0.1%, 1%, 3%), reloaded before each run. Needs root, nft and ethtool.
  docknet-fc          dn-echo server --port 7 on pipe c (10.88.0.4/16), dn-echo client on
                      pipe d (10.88.0.5/16), `docknetctl fc create c d`
  docknet-master      the same on pipes a (10.88.0.2/16) and b (10.88.0.3/16), through docknetd
DockNet loss: DOCKNET_DROP_RX=RATE on both services (omitted at 0), a fresh
DOCKNET_DROP_SEED per process (from --seed on); a fresh dn-echo server per run, so its
retransmission report (printed at exit) covers that run. One docknetd --nic none, run dir
/tmp/dnbench-PID-loss, pipes at --mtu.

Each cell (rate, path) runs --runs times, in rounds (every rate on every path, then again).
time = the client's own measure: connection established to the last byte of the last echo
back. The table: median, min-max, kernel / DockNet (kernel median over DockNet median: > 1
means DockNet is faster), retransmission timeouts / all retransmissions and dropped /
received frames summed over the runs, each run's time. A run that fails or stalls (killed
after --timeout seconds) is reported in the table, and the run goes on.

Output: the table and the target (DockNet at least as fast as the kernel at every rate) on
stdout; OUT/loss.svg (median time and kernel / DockNet per rate), OUT/loss.md (with the
kernel network's commands and ruleset), OUT/loss.json (every run). Progress on stderr.
Everything started (docknetd, services, namespaces dnbPIDl{a,b,br}, temp dirs) is removed on
exit, including on SIGINT/SIGTERM/SIGHUP.";

const CNI_ABOUT: &str = "\
Pod-to-pod TCP ping-pong through docknet-cni pipes vs the standard `bridge` CNI plugin,
between the same two pods' network namespaces, in one run (issue 11).

The node: network namespaces dnbPIDcpa and dnbPIDcpb (the pods) and dnbPIDcnode (the
node's, where the bridge plugin makes its bridge, so the host's namespace is not touched);
one docknetd --nic none (run dir /tmp/dnbench-PID-cni). Each pod gets two networks, as
Multus gives them, by running the plugins as a container runtime does (CNI_* environment,
configuration on stdin, CNI_PATH = this executable's directory and --cni-plugins):
  eth0  bridge + host-local 10.77.30.0/24 (isGateway, no masquerade, MTU the plugin's default)
  net1  docknet-cni + host-local 10.88.7.0/24 (a pipe, CNI 1.1.0 socketPath)
and both are deleted (DEL) at the end.

Paths:
  kernel-cni-bridge   the bench's kernel echo server on pod A's eth0 address, the kernel
                      echo client in pod B (as pingpong's kernel paths)
  docknet-cni-master  dn-echo server on pod A's pipe, dn-echo client on pod B's pipe,
                      frames switched by docknetd
  docknet-cni-fc      the same over a fast channel between the two pipes
                      (docknetctl fc create)
Every process runs in its pod's network namespace (nsenter --net).

Definitions (round trip, one-way latency, goodput, count and warm-up choice, failure
handling): as `pingpong` (see its --help).

Output: the table and a ratios section (relative to kernel-cni-bridge) on stdout;
OUT/cni.svg, OUT/cni.md (with the pods' addresses and MTUs), OUT/cni.json. Progress on
stderr. Needs root, docknetd, docknetctl, docknet-cni and dn-echo next to this executable
(or --bin-dir), and host-local and bridge (apt-get install containernetworking-plugins).
Everything started (processes, namespaces, the bridge inside the node namespace, run and
state dirs /tmp/dnbench-PID-cni*) is removed on exit, including on SIGINT/SIGTERM/SIGHUP.";

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Pod to pod through docknet-cni pipes vs the bridge CNI plugin (issue 11).
    #[command(
        long_about = CNI_ABOUT,
        mut_arg("bin_dir", |a| a.help(
            "Directory holding docknetd, docknetctl, docknet-cni and dn-echo (default: next \
             to this executable)"
        )),
        mut_arg("keep_run_dir", |a| a.help(
            "Keep the temp dirs (/tmp/dnbench-PID-cni*) for inspection"
        )),
    )]
    Cni(CniCli),

    /// Sequential 1 MiB echoes at random loss (0-3%), DockNet beside the kernel (issue 10).
    #[command(
        long_about = LOSS_ABOUT,
        mut_arg("keep_run_dir", |a| a.help(
            "Keep the temp dirs (/tmp/dnbench-PID-loss*) for inspection"
        )),
    )]
    Loss(LossCli),

    /// What dn-nat adds (latency, requests/s) beside the kernel's nftables DNAT (issue 9).
    #[command(
        long_about = NAT_ABOUT,
        mut_arg("bin_dir", |a| a.help(
            "Directory holding docknetd, docknetctl, dn-echo, dn-nat and dn-loadgen (default: \
             next to this executable)"
        )),
        mut_arg("keep_run_dir", |a| a.help(
            "Keep the temp dirs (/tmp/dnbench-PID-*) for inspection"
        )),
    )]
    Nat(NatCli),

    /// Requests/s of a dn-httpd web cluster behind dn-nat with 1-4 members (issue 9).
    #[command(
        long_about = CLUSTER_ABOUT,
        mut_arg("bin_dir", |a| a.help(
            "Directory holding docknetd, docknetctl, dn-nat and dn-loadgen (default: next to \
             this executable)"
        )),
        mut_arg("keep_run_dir", |a| a.help(
            "Keep the run directory (/tmp/dnbench-PID-cluster) for inspection"
        )),
    )]
    Cluster(ClusterCli),

    /// HTTP: dn-loadgen/wrk against dn-httpd and nginx, 1 KB page, several connection counts.
    #[command(
        long_about = HTTPD_ABOUT,
        mut_arg("bin_dir", |a| a.help(
            "Directory holding docknetd, docknetctl, dn-echo and dn-loadgen (default: next to \
             this executable)"
        )),
        mut_arg("keep_run_dir", |a| a.help(
            "Keep the temp dirs (/tmp/dnbench-PID-*) for inspection"
        )),
    )]
    Httpd(HttpdCli),

    /// TCP ping-pong over kernel and DockNet paths; writes a table, an SVG plot and a report.
    #[command(long_about = PINGPONG_ABOUT)]
    Pingpong(PingPongCli),

    /// TCP ping-pong between two netns hosts across a veth wire: kernel containers vs DockNet (af-packet, dpdk).
    #[command(long_about = INTERHOST_ABOUT)]
    Interhost(InterhostCli),

    /// Sustained wrk load through docknetd's TAP against dn-httpd, in back-to-back windows.
    #[command(
        long_about = SOAK_ABOUT,
        mut_arg("bin_dir", |a| a.help(
            "Directory holding docknetd and docknetctl (default: next to this executable)"
        )),
        mut_arg("keep_run_dir", |a| a.help(
            "Keep the temp dir (/tmp/dnbench-PID-soak) for inspection"
        )),
    )]
    Soak(SoakCli),

    /// An honest pair's latency through the master while a third pipe floods.
    #[command(
        long_about = FAIRNESS_ABOUT,
        mut_arg("keep_run_dir", |a| a.help(
            "Keep the run directory (/tmp/dnbench-PID-fair) for inspection"
        )),
    )]
    Fairness(FairnessCli),

    /// The paper's Fig. 9: a TCP and a UDP sender through the master under changing rate limits.
    #[command(
        long_about = RATELIMIT_ABOUT,
        mut_arg("keep_run_dir", |a| a.help(
            "Keep the run directory (/tmp/dnbench-PID-rate) for inspection"
        )),
    )]
    Ratelimit(RatelimitCli),

    /// (internal) Post frames into a pipe as fast as its ring takes them, until SIGTERM.
    #[command(hide = true)]
    Flood {
        /// The pipe directory to attach to.
        #[arg(long)]
        pipe: PathBuf,
        /// What to send.
        #[arg(long, value_enum)]
        kind: fairness::FloodKind,
        /// Frame size in bytes (Ethernet header included).
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },

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
struct CniCli {
    /// Paths to run, comma-separated, in this order.
    #[arg(
        long,
        default_value = "kernel-cni-bridge,docknet-cni-master,docknet-cni-fc"
    )]
    paths: cni::CniPathList,

    /// Message sizes in bytes, comma-separated; K = 1024, M = 1024².
    #[arg(long, default_value = "1K,200K")]
    sizes: SizeList,

    #[command(flatten)]
    messages: MessagesCli,

    /// Directory holding the host-local and bridge CNI plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_plugins: PathBuf,

    /// Directory for cni.svg, cni.md and cni.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,

    #[command(flatten)]
    run: RunCli,
}

#[derive(clap::Args, Debug)]
struct LossCli {
    /// Loss rates each way, comma-separated: percentages (1%) or fractions (0.01).
    #[arg(long, default_value = "0,0.1%,1%,3%")]
    rates: loss::RateList,

    /// Paths to run, comma-separated, in this order.
    #[arg(long, default_value = "kernel-veth-bridge,docknet-fc,docknet-master")]
    paths: loss::LossPathList,

    /// Runs per (rate, path); median and min-max reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: u64,

    /// Message size (K = 1024, M = 1024²).
    #[arg(long, default_value = "1M", value_parser = parse_size_arg)]
    size: usize,

    /// Sequential echoes per run, on one connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    count: u64,

    /// Unmeasured echoes first, on the same connection (default: none; the first echo of
    /// a fresh connection is measured).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    warmup: u64,

    /// IP MTU of the pipes and of every kernel link.
    #[arg(long, default_value_t = 9000, value_parser = clap::value_parser!(u32).range(576..=65000))]
    mtu: u32,

    /// First DOCKNET_DROP_SEED; every DockNet process gets the next one.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Seconds one run may take before it is stopped and reported as failed.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,

    /// Directory for loss.svg, loss.md and loss.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,

    #[command(flatten)]
    run: RunCli,
}

#[derive(clap::Args, Debug)]
struct NatCli {
    /// Parts to run, comma-separated, in this order.
    #[arg(
        long,
        default_value = "docknet-latency,kernel-latency,docknet-rps,kernel-rps"
    )]
    parts: nat::NatPartList,

    /// Ping-pong message size (K = 1024).
    #[arg(long, default_value = "1K", value_parser = parse_size_arg)]
    size: usize,

    /// Measured messages per latency point.
    #[arg(long, default_value_t = 20000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    count: u64,

    /// Warm-up messages per latency point, not measured.
    #[arg(long, default_value_t = 1000)]
    warmup: usize,

    /// Rounds per latency row (direct, then via the NAT) and runs per requests/s row;
    /// medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,

    /// HTTP connections (dn-loadgen -c, wrk -c).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10000))]
    conns: u64,

    /// Seconds per requests/s point (whole seconds, as wrk's -d).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,

    /// Seconds of warm-up run before each requests/s point (0: none).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_s: u64,

    /// Directory for nat.svg, nat.md and nat.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,

    #[command(flatten)]
    run: RunCli,

    #[command(flatten)]
    httpd: HttpdSourceCli,
}

#[derive(clap::Args, Debug)]
struct ClusterCli {
    /// Member counts, comma-separated.
    #[arg(long, default_value = "1,2,3,4", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=250))]
    members: Vec<u64>,

    /// dn-loadgen connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10000))]
    conns: u64,

    /// Rounds over the member counts (1,2,3,4, 1,2,3,4, ...); the median run of each
    /// count is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,

    /// Seconds per run (the measured run; whole seconds).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,

    /// Seconds of warm-up run before each point (0: none).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_s: u64,

    /// The members' busy work per request (dn-httpd --work-us).
    #[arg(long, default_value_t = 10)]
    work_us: u64,

    /// The NAT's policy: maglev, rr or least-conn.
    #[arg(long, default_value = "maglev")]
    policy: String,

    /// Pin with taskset: dn-loadgen on the first CPU, dn-nat on the second, member i on
    /// the (2+i)-th, wrapping around the list (e.g. 0,1 or 0-5). Default: not pinned.
    #[arg(long, value_name = "LIST")]
    cores: Option<cluster::CoreList>,

    /// Directory for cluster.svg, cluster.md and cluster.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,

    #[command(flatten)]
    run: RunCli,

    #[command(flatten)]
    httpd: HttpdSourceCli,
}

#[derive(clap::Args, Debug)]
struct PingPongCli {
    /// Paths to run, comma-separated, in this order.
    #[arg(
        long,
        default_value = "kernel-lo,kernel-bridge,docknet-master,docknet-fc"
    )]
    paths: PathList,

    /// IP MTU of the DockNet paths' pipes (`pipe create --mtu`, 576-65000). Default:
    /// docknetd's (65000 without a NIC: TCP through the master moves 64 KB segments, as
    /// the kernel paths' GSO super-packets and a fast channel's do). `--pipe-mtu 9000`
    /// measures 9000-byte pipes, the default with a NIC.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u32).range(576..=65000))]
    pipe_mtu: Option<u32>,

    #[command(flatten)]
    common: CommonCli,
}

#[derive(clap::Args, Debug)]
struct InterhostCli {
    /// Paths to run, comma-separated, in this order.
    #[arg(
        long,
        default_value = "kernel-veth-bridge,docknet-af-packet,docknet-dpdk"
    )]
    paths: HostPathList,

    /// The network: `containers` (the wire is one veth between the hosts; kernel
    /// endpoints in containers on a bridge in each host, DockNet on the wire ends)
    /// or `bridge-wire` (each host a veth to a bridge in a third namespace).
    #[arg(long, default_value = "containers")]
    topology: netns::Topology,

    /// MTU of every link (every veth end and bridge), for every path.
    /// Default: the veth default, 1500. DockNet pipes follow the NIC's MTU.
    #[arg(long, value_parser = clap::value_parser!(u32).range(576..=65000))]
    mtu: Option<u32>,

    /// Turn TSO and GSO off on every veth end (every path), so the kernel puts
    /// MTU-sized frames on the wire as DockNet does. By default veth's TSO/GSO stay
    /// on: the kernel then moves up to 64 KB per skb across veths and bridges.
    #[arg(long)]
    no_tso: bool,

    #[command(flatten)]
    common: CommonCli,
}

#[derive(clap::Args, Debug)]
struct HttpdCli {
    /// Paths to run, comma-separated, in this order.
    #[arg(
        long,
        default_value = "kernel-nginx,docknet-fc,docknet-master,wrk-tap-dn-httpd"
    )]
    paths: httpd::HttpPathList,

    /// Connection counts, comma-separated.
    #[arg(long, default_value = "1,16,64,256")]
    conns: httpd::ConnList,

    /// Seconds per point (one client run; whole seconds, as wrk's -d).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,

    /// Client runs per point against the same server, in rounds (every connection count
    /// once, then again), so a slow phase of a shared machine hits every count alike; the
    /// point reported is the run of median requests/s (its latencies too), and every
    /// run's rate is printed. The scaling target is decided on the median of the
    /// rounds' own ratios (largest ÷ smallest count, two runs seconds apart). On a shared
    /// VM runs of one point differ by up to 2× at 10,000 connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    runs: u32,

    /// Directory for httpd.svg, httpd.md and httpd.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,

    #[command(flatten)]
    run: RunCli,

    #[command(flatten)]
    httpd: HttpdSourceCli,
}

const SOAK_ABOUT: &str = "\
Sustained HTTP load through docknetd's TAP backend against dn-httpd (the default NIC of a
host that reaches its services from the kernel): wrk -tT -cC in a namespace whose TAP is
docknetd's NIC, run back to back for --windows windows of --window seconds. Between windows
the NIC counters are read, so each window's requests/s sits beside what the master dropped
for want of a neighbour (`no_neighbor`) and the ARP it sent and answered. The default, 18
windows of 10 s, spans six of the master's 30 s ARP trust periods and the kernel's own.

Target: no window below 75% of the median, and nothing dropped for want of a neighbour.

Needs root and wrk (apt-get install wrk); docknetd and docknetctl next to this executable
(or --bin-dir); dn-httpd is built with the 1 KB page as for `httpd` unless --httpd-bin.
Output: a table and a summary on stdout; OUT/soak.svg (requests/s per window, the median
and 75% of it), OUT/soak.md (with the command lines), OUT/soak.json. Progress goes to
stderr. Everything started (docknetd, dn-httpd, namespace dnbPIDsoak, run dir
/tmp/dnbench-PID-soak) is removed on exit, including on SIGINT/SIGTERM/SIGHUP.";

const FAIRNESS_ABOUT: &str = "\
An honest pair's one-way latency through docknetd while a third pipe floods it (the
master takes at most one batch of frames per pipe per round, so a flooder should cost the
others no more than that batch). One docknetd --nic none, pipes srv/cli/flood
(10.93.0.2-4); dn-echo server on srv, dn-echo client (SIZE-byte ping-pong, COUNT
messages) on cli, in four scenarios: quiet; a flooder posting spoofed frames (dropped as
spoofed); frames to an address no pipe has (dropped as no_route); UDP frames to the
server (delivered: real work for the master and the server).

Output: a table (p50, p99, p99 against quiet, goodput, the flooder's frames/s taken and
what became of them) on stdout; OUT/fairness.svg, OUT/fairness.md, OUT/fairness.json.
Needs docknetd, docknetctl and dn-echo next to this executable (or --bin-dir).";

const RATELIMIT_ABOUT: &str = "\
The paper's Fig. 9 on this machine: per-pipe rate limits (docknetd's fine timer adds
tokens, its coarse timer drops the unspent ones) on two senders through the master. One
docknetd --nic none with four pipes (10.94.0.2-5, MTU --mtu): dn-echo tcp-blast and
udp-blast (1400-byte datagrams) send as fast as their pipes take frames to dn-echo
tcp-sink and udp-sink. Panels: (a) TCP alone while its limit steps through four values;
(b) TCP + UDP, no limit; (c) only UDP limited; (d) both limited. Limits default to
fractions of what the slower sender does alone here (measured first), or --tcp-limits and
--udp-limit.

Rates are the bytes of the frames the master takes from each sender's pipe (what a limit
counts), read from the control socket every --sample-ms. Each limit is checked over the
whole seconds of its stage (target: within ±5%), each change by the time from `rate set`
returning until the sender's rate over 5 ms windows is within ±10% of the new limit
(target: 10 ms).

Output: a table and a verdict on stdout; OUT/ratelimit.svg (the four panels: rate per 50
ms and the limits), OUT/ratelimit.md (with the command line), OUT/ratelimit.json. Needs
docknetd, docknetctl and dn-echo next to this executable (or --bin-dir).";

#[derive(clap::Args, Debug)]
struct FairnessCli {
    /// Ping-pong message size (K = 1024).
    #[arg(long, default_value = "1K", value_parser = parse_size_arg)]
    size: usize,
    /// Measured messages per scenario.
    #[arg(long, default_value_t = 20000)]
    count: usize,
    /// Size of the flooder's frames (bytes, Ethernet header included).
    #[arg(long, default_value_t = 1024)]
    flood_size: usize,
    /// Limit the flooder with `docknetctl rate set flood N` (Mbit/s) first.
    #[arg(long, value_name = "N")]
    flood_rate_mbps: Option<u64>,
    /// Directory for fairness.svg, fairness.md and fairness.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
    #[command(flatten)]
    run: RunCli,
}

#[derive(clap::Args, Debug)]
struct RatelimitCli {
    /// Panel (a)'s four TCP limits in Mbit/s, e.g. 300,600,150,450 (panel (d) uses the
    /// first). Default: 0.2, 0.4, 0.1 and 0.3 × what the slower sender does alone.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "MBPS,MBPS,MBPS,MBPS",
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    tcp_limits: Option<Vec<u64>>,
    /// UDP limit of panels (c) and (d), Mbit/s. Default: 0.25 × what the slower sender
    /// does alone.
    #[arg(long, value_name = "MBPS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    udp_limit: Option<u64>,
    /// Seconds per stage (each limit of panel (a); each of panels (b)-(d)).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    stage_s: u64,
    /// Milliseconds between two readings of the senders' counters.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    sample_ms: u64,
    /// docknetd --rate-fine-us (default: the daemon's, 10).
    #[arg(long, value_name = "N")]
    rate_fine_us: Option<u64>,
    /// docknetd --rate-coarse-ms (default: the daemon's, 4).
    #[arg(long, value_name = "M")]
    rate_coarse_ms: Option<u64>,
    /// IP MTU of the pipes (1500: frames as on an Ethernet wire, fine-grained rates).
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Directory for ratelimit.svg, ratelimit.md and ratelimit.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
    #[command(flatten)]
    run: RunCli,
}

#[derive(clap::Args, Debug)]
struct SoakCli {
    /// Seconds per window (one wrk run).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    window: u64,

    /// Number of windows, back to back.
    #[arg(long, default_value_t = 18, value_parser = clap::value_parser!(u64).range(1..=10000))]
    windows: u64,

    /// wrk connections.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10000))]
    conns: u64,

    /// wrk threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,

    /// Pass `--arp-reachable DURATION` to docknetd (default: docknetd's, 30 s).
    #[arg(long, value_name = "DURATION")]
    arp_reachable: Option<String>,

    /// Directory for soak.svg, soak.md and soak.json.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,

    #[command(flatten)]
    run: RunCli,

    #[command(flatten)]
    httpd: HttpdSourceCli,
}

/// Where the DockNet binaries are and whether to keep what a run leaves in /tmp, for every
/// benchmark (`httpd`, `soak`, `fairness` and `ratelimit` name their own binaries and
/// directories in the help: `mut_arg` on their subcommand).
#[derive(clap::Args, Debug)]
struct RunCli {
    /// Directory holding docknetd, docknetctl and dn-echo (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Keep the DockNet run directories (/tmp/dnbench-PID*) for inspection.
    #[arg(long)]
    keep_run_dir: bool,
}

/// Where `httpd` and `soak` get the dn-httpd serving the 1 KB page.
#[derive(clap::Args, Debug)]
struct HttpdSourceCli {
    /// A dn-httpd built with DN_HTTPD_SITE=/tmp/bench-httpd-target/site-1k (default:
    /// build it now).
    #[arg(long)]
    httpd_bin: Option<PathBuf>,

    /// Workspace to build dn-httpd from (default: the tree this bench was built from).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))]
    src: PathBuf,
}

/// How many messages a ping-pong point sends, and how long it may take (`pingpong`,
/// `interhost`, `cni`).
#[derive(clap::Args, Debug)]
struct MessagesCli {
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

    /// Seconds one point (one client run) may take before it is killed and marked FAILED.
    #[arg(long, default_value_t = 120)]
    timeout: u64,

    /// Client runs per point (each a fresh client process); the point reported is the run
    /// of median goodput (its latencies too), and every run's goodput is printed.
    /// `pingpong` runs them in rounds (every path and size once, each after its own
    /// pilot, then again), so the baseline and DockNet meet the same phases of a shared
    /// machine, and decides its targets on the median of each round's own ratio; `interhost` and `cni` one point after the other, after one pilot. On a
    /// shared VM runs of one point differ by up to 2×, so comparisons want an odd number
    /// above 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    runs: u32,
}

impl MessagesCli {
    fn bench_args(
        self,
        sizes: SizeList,
        out: PathBuf,
        run: RunCli,
        command_line: String,
    ) -> BenchArgs {
        BenchArgs {
            sizes: sizes.0,
            count: self.count,
            seconds: self.seconds,
            warmup: self.warmup,
            out,
            bin_dir: run.bin_dir,
            timeout: Duration::from_secs(self.timeout),
            runs: self.runs as usize,
            keep_run_dir: run.keep_run_dir,
            command_line,
            pipe_mtu: None,
        }
    }
}

/// Options shared by `pingpong` and `interhost`.
#[derive(clap::Args, Debug)]
struct CommonCli {
    /// Message sizes in bytes, comma-separated; K = 1024, M = 1024².
    #[arg(long, default_value = "64,256,1K,4K,16K,64K,200K,400K")]
    sizes: SizeList,

    #[command(flatten)]
    messages: MessagesCli,

    /// Directory for the .svg, .md and .json outputs.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,

    #[command(flatten)]
    run: RunCli,
}

impl CommonCli {
    fn into_args(self, command_line: String) -> BenchArgs {
        self.messages
            .bench_args(self.sizes, self.out, self.run, command_line)
    }
}

/// Runs a benchmark with signal handling and cleanup; the exit code.
fn bench(f: impl FnOnce() -> Result<(), String>) -> i32 {
    cleanup::install_signal_thread();
    let r = f();
    cleanup::release_all();
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("docknet-bench: {e}");
            1
        }
    }
}

fn parse_size_arg(s: &str) -> Result<usize, String> {
    sizes::parse_size(s)
}

fn main() {
    let cli = Cli::parse();
    let default_level = match cli.cmd {
        Cmd::Pingpong(_)
        | Cmd::Interhost(_)
        | Cmd::Httpd(_)
        | Cmd::Soak(_)
        | Cmd::Fairness(_)
        | Cmd::Ratelimit(_)
        | Cmd::Nat(_)
        | Cmd::Cluster(_)
        | Cmd::Loss(_)
        | Cmd::Cni(_) => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    // What the reports record as the command.
    let command_line = report::shell_join(&std::env::args().collect::<Vec<_>>());
    let code = match cli.cmd {
        Cmd::Cni(c) => {
            let ca = cni::CniArgs {
                bench: c.messages.bench_args(c.sizes, c.out, c.run, command_line),
                paths: c.paths.0,
                plugins: c.cni_plugins,
            };
            bench(|| cni::run(&ca))
        }
        Cmd::Pingpong(p) => {
            let paths = p.paths.0;
            let args = BenchArgs {
                pipe_mtu: p.pipe_mtu,
                ..p.common.into_args(command_line)
            };
            bench(|| pingpong::run(&args, &paths))
        }
        Cmd::Interhost(p) => {
            let ia = interhost::InterhostArgs {
                paths: p.paths.0,
                topology: p.topology,
                mtu: p.mtu,
                no_tso: p.no_tso,
            };
            let args = p.common.into_args(command_line);
            bench(|| interhost::run(&args, &ia))
        }
        Cmd::Httpd(h) => {
            let ha = httpd::HttpdArgs {
                paths: h.paths.0,
                conns: h.conns.0,
                seconds: h.duration,
                runs: h.runs as usize,
                out: h.out,
                bin_dir: h.run.bin_dir,
                httpd_bin: h.httpd.httpd_bin,
                src: h.httpd.src,
                keep_run_dir: h.run.keep_run_dir,
                command_line,
            };
            bench(|| httpd::run(&ha))
        }
        Cmd::Nat(c) => {
            let na = nat::NatArgs {
                parts: c.parts.0,
                size: c.size,
                count: c.count as usize,
                warmup: c.warmup,
                rounds: c.rounds as usize,
                conns: c.conns as usize,
                seconds: c.duration,
                warmup_s: c.warmup_s,
                out: c.out,
                bin_dir: c.run.bin_dir,
                httpd_bin: c.httpd.httpd_bin,
                src: c.httpd.src,
                keep_run_dir: c.run.keep_run_dir,
                command_line,
            };
            bench(|| nat::run(&na))
        }
        Cmd::Loss(c) => {
            let la = loss::LossArgs {
                rates: c.rates.0,
                paths: c.paths.0,
                runs: c.runs as usize,
                size: c.size,
                count: c.count as usize,
                warmup: c.warmup as usize,
                mtu: c.mtu,
                seed: c.seed,
                timeout: Duration::from_secs(c.timeout),
                out: c.out,
                bin_dir: c.run.bin_dir,
                keep_run_dir: c.run.keep_run_dir,
                command_line,
            };
            bench(|| loss::run(&la))
        }
        Cmd::Cluster(c) => {
            let ca = cluster::ClusterArgs {
                members: c.members.iter().map(|&n| n as usize).collect(),
                rounds: c.rounds as usize,
                conns: c.conns as usize,
                seconds: c.duration,
                warmup_s: c.warmup_s,
                work_us: c.work_us,
                policy: c.policy,
                cores: c.cores,
                out: c.out,
                bin_dir: c.run.bin_dir,
                httpd_bin: c.httpd.httpd_bin,
                src: c.httpd.src,
                keep_run_dir: c.run.keep_run_dir,
                command_line,
            };
            bench(|| cluster::run(&ca))
        }
        Cmd::Soak(c) => {
            let sa = soak::SoakArgs {
                window: c.window,
                windows: c.windows as usize,
                conns: c.conns as usize,
                threads: c.threads as usize,
                arp_reachable: c.arp_reachable,
                out: c.out,
                bin_dir: c.run.bin_dir,
                httpd_bin: c.httpd.httpd_bin,
                src: c.httpd.src,
                keep_run_dir: c.run.keep_run_dir,
                command_line,
            };
            bench(|| soak::run(&sa))
        }
        Cmd::Fairness(c) => {
            let fa = fairness::FairnessArgs {
                size: c.size,
                count: c.count,
                flood_size: c.flood_size,
                flood_rate_mbps: c.flood_rate_mbps,
                out: c.out,
                bin_dir: c.run.bin_dir,
                keep_run_dir: c.run.keep_run_dir,
                command_line,
            };
            bench(|| fairness::run(&fa))
        }
        Cmd::Ratelimit(c) if c.tcp_limits.as_ref().is_some_and(|l| l.len() != 4) => {
            eprintln!(
                "docknet-bench ratelimit: --tcp-limits takes four limits (Mbit/s), e.g. 300,600,150,450"
            );
            2
        }
        Cmd::Ratelimit(c) => {
            let ra = ratelimit::RateLimitArgs {
                tcp_limits: c.tcp_limits,
                udp_limit: c.udp_limit,
                stage_s: c.stage_s,
                sample: Duration::from_millis(c.sample_ms),
                fine_us: c.rate_fine_us,
                coarse_ms: c.rate_coarse_ms,
                mtu: c.mtu,
                out: c.out,
                bin_dir: c.run.bin_dir,
                keep_run_dir: c.run.keep_run_dir,
                command_line,
            };
            bench(|| ratelimit::run(&ra))
        }
        Cmd::Flood { pipe, kind, size } => match fairness::flood(&pipe, kind, size) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
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
        assert_eq!(p.common.sizes.0.len(), 8);
        assert_eq!(p.common.sizes.0[7], 400 * 1024);
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
        assert_eq!(p.common.sizes.0, vec![1024, 204800]);
        assert!(Cli::try_parse_from(["docknet-bench", "pingpong", "--paths", "bogus"]).is_err());
        assert!(Cli::try_parse_from(["docknet-bench", "pingpong", "--sizes", "1Q"]).is_err());
    }

    #[test]
    fn nat_and_cluster_defaults_parse() {
        let cli = Cli::try_parse_from(["docknet-bench", "nat"]).unwrap();
        let Cmd::Nat(n) = cli.cmd else {
            panic!("not nat")
        };
        assert_eq!(n.parts.0, nat::NatPart::ALL.to_vec());
        assert_eq!((n.size, n.count, n.rounds, n.conns), (1024, 20000, 3, 64));
        let cli =
            Cli::try_parse_from(["docknet-bench", "nat", "--parts", "kernel-rps,docknet-rps"])
                .unwrap();
        let Cmd::Nat(n) = cli.cmd else {
            panic!("not nat")
        };
        assert_eq!(
            n.parts.0,
            vec![nat::NatPart::KernelRps, nat::NatPart::DocknetRps]
        );
        assert!(Cli::try_parse_from(["docknet-bench", "nat", "--parts", "x"]).is_err());
        let cli = Cli::try_parse_from(["docknet-bench", "cluster"]).unwrap();
        let Cmd::Cluster(c) = cli.cmd else {
            panic!("not cluster")
        };
        assert_eq!(c.members, vec![1, 2, 3, 4]);
        assert_eq!((c.work_us, c.duration, c.rounds), (10, 3, 3));
        assert!(c.cores.is_none());
        let cli = Cli::try_parse_from([
            "docknet-bench",
            "cluster",
            "--cores",
            "0,1",
            "--members",
            "2,4",
        ])
        .unwrap();
        let Cmd::Cluster(c) = cli.cmd else {
            panic!("not cluster")
        };
        assert_eq!(c.cores.unwrap().0, vec![0, 1]);
        assert_eq!(c.members, vec![2, 4]);
        assert!(Cli::try_parse_from(["docknet-bench", "cluster", "--members", "0"]).is_err());
    }

    #[test]
    fn cni_defaults_parse() {
        let cli = Cli::try_parse_from(["docknet-bench", "cni"]).unwrap();
        let Cmd::Cni(c) = cli.cmd else {
            panic!("not cni")
        };
        assert_eq!(c.paths.0, cni::CniPath::ALL.to_vec());
        assert_eq!(c.sizes.0, vec![1024, 200 * 1024]);
        assert_eq!(c.cni_plugins, PathBuf::from("/usr/lib/cni"));
        assert!(Cli::try_parse_from(["docknet-bench", "cni", "--paths", "kernel-lo"]).is_err());
    }

    #[test]
    fn loss_defaults_parse() {
        use crate::loss::{LossPath, LossRate};
        let cli = Cli::try_parse_from(["docknet-bench", "loss"]).unwrap();
        let Cmd::Loss(l) = cli.cmd else {
            panic!("not loss")
        };
        assert_eq!(
            l.rates.0,
            vec![
                LossRate(0),
                LossRate(1000),
                LossRate(10_000),
                LossRate(30_000)
            ]
        );
        assert_eq!(l.paths.0, LossPath::ALL.to_vec());
        assert_eq!((l.runs, l.size, l.count, l.mtu), (5, 1 << 20, 16, 9000));
        assert_eq!((l.timeout, l.warmup), (120, 0));
        assert_eq!(l.out, PathBuf::from("docs/bench"));
        let cli = Cli::try_parse_from([
            "docknet-bench",
            "loss",
            "--rates",
            "2%,0.005",
            "--paths",
            "docknet-fc,kernel-veth-bridge",
            "--runs",
            "1",
            "--size",
            "64K",
            "--bin-dir",
            "/x",
        ])
        .unwrap();
        let Cmd::Loss(l) = cli.cmd else {
            panic!("not loss")
        };
        assert_eq!(l.rates.0, vec![LossRate(20_000), LossRate(5000)]);
        assert_eq!(l.paths.0, vec![LossPath::DocknetFc, LossPath::Kernel]);
        assert_eq!((l.runs, l.size), (1, 65536));
        assert_eq!(l.run.bin_dir, Some(PathBuf::from("/x")));
        for bad in [
            &["--rates", "lots"][..],
            &["--rates", "75%"],
            &["--paths", "kernel-lo"],
            &["--runs", "0"],
            &["--mtu", "100"],
        ] {
            let mut argv = vec!["docknet-bench", "loss"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interhost_defaults_parse() {
        use crate::interhost::HostPath;
        let cli = Cli::try_parse_from(["docknet-bench", "interhost"]).unwrap();
        let Cmd::Interhost(p) = cli.cmd else {
            panic!("not interhost")
        };
        assert_eq!(p.paths.0, HostPath::ALL.to_vec());
        assert_eq!(p.topology, netns::Topology::Containers);
        assert_eq!(p.mtu, None);
        assert!(!p.no_tso);
        assert_eq!(p.common.sizes.0.len(), 8);
        assert_eq!(p.common.out, PathBuf::from("docs/bench"));
        let cli = Cli::try_parse_from([
            "docknet-bench",
            "interhost",
            "--paths",
            "docknet-af-packet",
            "--mtu",
            "9000",
            "--sizes",
            "1K",
            "--no-tso",
            "--topology",
            "bridge-wire",
        ])
        .unwrap();
        let Cmd::Interhost(p) = cli.cmd else {
            panic!("not interhost")
        };
        assert_eq!(p.paths.0, vec![HostPath::DocknetAfPacket]);
        assert_eq!(p.mtu, Some(9000));
        assert!(p.no_tso);
        assert_eq!(p.topology, netns::Topology::BridgeWire);
        assert!(Cli::try_parse_from(["docknet-bench", "interhost", "--topology", "x"]).is_err());
        assert!(Cli::try_parse_from(["docknet-bench", "interhost", "--mtu", "100"]).is_err());
        assert!(
            Cli::try_parse_from(["docknet-bench", "interhost", "--paths", "kernel-lo"]).is_err()
        );
    }
}

//! The `interhost` benchmark (the paper's Fig. 8a/b): TCP ping-pong between
//! two "hosts" — network namespaces H1 and H2 — across one "wire". Every path
//! gets a fresh copy of the same wire, with the same MTU and offloads on its
//! veth ends. Two topologies ([`Topology`], `--topology`):
//!
//! `containers` (the default): the wire is one veth pair H1:eth0 — H2:eth0.
//!
//! ```text
//!   kernel:   C1 eth0 ─veth─ vethc1 ┐                      ┌ vethc2 ─veth─ eth0 C2
//!                             H1 br0 ┴ eth0 ══wire══ eth0 ┴ br0 H2
//!   DockNet:        H1 docknetd ─ eth0 ══wire══ eth0 ─ docknetd H2
//! ```
//!
//! - `kernel-veth-bridge`: what containers get from Docker's default bridge
//!   network, on each host: container C1 (C2) has eth0 10.88.1.2/16
//!   (10.88.2.2/16), a veth to br0 in H1 (H2); the wire end is also a port of
//!   that br0, so both containers share one L2 segment. Kernel client in C1,
//!   server in C2.
//! - `docknet-af-packet`: `docknetd --nic af-packet:eth0` in each host
//!   (entered with `nsenter --net`) on the wire end itself — no bridge, no
//!   container veth; pipe `a` 10.88.1.2/16 on H1, pipe `b` 10.88.2.2/16 on H2;
//!   `dn-echo server` on b, client on a.
//! - `docknet-dpdk`: the same with `--nic dpdk:'... --vdev=net_af_packet0,iface=eth0 ...'`.
//!
//! `bridge-wire`: each host's eth0 is a veth to a port of br0 in a third
//! namespace BR (H1 —veth— br0 —veth— H2); the kernel endpoints sit directly
//! in H1/H2 (addresses on eth0), DockNet binds eth0 as above.

use std::fmt;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use crate::docknet::{self, Bins, Daemon};
use crate::netns::{self, Endpoints, Network, Topology, TopologySpec};
use crate::pingpong::{self, BenchArgs, OutputSpec};
use crate::proc::{run_with_timeout, ChildGuard};
use crate::report::{self, HostInfo, Row, Skipped};
use crate::sizes::format_size;

/// One inter-host path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPath {
    KernelVethBridge,
    DocknetAfPacket,
    DocknetDpdk,
}

impl HostPath {
    pub const ALL: [HostPath; 3] = [
        HostPath::KernelVethBridge,
        HostPath::DocknetAfPacket,
        HostPath::DocknetDpdk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HostPath::KernelVethBridge => "kernel-veth-bridge",
            HostPath::DocknetAfPacket => "docknet-af-packet",
            HostPath::DocknetDpdk => "docknet-dpdk",
        }
    }

    /// Short tag in namespace and run-dir names.
    fn tag(self) -> &'static str {
        match self {
            HostPath::KernelVethBridge => "k",
            HostPath::DocknetAfPacket => "p",
            HostPath::DocknetDpdk => "d",
        }
    }
}

impl fmt::Display for HostPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl crate::pingpong::NamedPath for HostPath {
    const ALL: &'static [Self] = &HostPath::ALL;
    fn path_name(self) -> &'static str {
        self.name()
    }
}

/// `--paths` of `interhost`.
pub type HostPathList = crate::pingpong::NamedList<HostPath>;

/// Host addresses (the same for every path).
pub const IP_H1: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 2);
pub const IP_H2: Ipv4Addr = Ipv4Addr::new(10, 88, 2, 2);
pub const PREFIX: u8 = 16;
/// The TCP port of the DockNet echo server.
const DN_PORT: u16 = 7;

/// The kernel path, the reference for ratios and targets.
pub const KERNEL: &str = "kernel-veth-bridge";

/// What `docknetd` says when it lacks the `dpdk` feature.
const NO_DPDK_FEATURE: &str = "built without the `dpdk` cargo feature";

fn topology_spec(
    path: HostPath,
    topology: Topology,
    mtu: Option<u32>,
    no_tso: bool,
) -> TopologySpec {
    TopologySpec {
        tag: path.tag().into(),
        topology,
        endpoints: match path {
            HostPath::KernelVethBridge => Endpoints::Kernel,
            _ => Endpoints::Userspace,
        },
        ip_a: IP_H1,
        ip_b: IP_H2,
        prefix: PREFIX,
        mtu,
        no_tso,
    }
}

/// The `--nic` argument of host `host` (1 or 2) for a DockNet path whose
/// wire end is `dev`.
/// DPDK: the af_packet PMD on `dev`, no hugepages or PCI; H1's EAL main lcore
/// is CPU 0 and H2's CPU `ncpu - 1` (so two masters don't share a core when
/// there are two); a unique file prefix per process.
pub fn nic_spec(path: HostPath, dev: &str, host: u8, pid: u32, ncpu: usize) -> String {
    match path {
        HostPath::DocknetDpdk => {
            let lcore = if host == 1 { 0 } else { ncpu.max(1) - 1 };
            format!(
                "dpdk:--no-huge --no-pci --vdev=net_af_packet0,iface={dev},framecnt=4096 -l {lcore} \
                 --file-prefix=dnb{pid}h{host} --log-level=error"
            )
        }
        _ => format!("af-packet:{dev}"),
    }
}

/// Renders a chain of boxes `(namespace, text)` as two lines: the texts
/// joined, and above them each namespace label at the start of its text
/// (empty label = a link between boxes).
fn render_chain(segments: &[(&str, String)]) -> String {
    let (mut top, mut bottom) = (String::new(), String::new());
    for (label, text) in segments {
        let at = bottom.chars().count();
        if !label.is_empty() {
            let len = top.chars().count();
            if len < at {
                top.push_str(&" ".repeat(at - len));
            } else if len > 0 {
                top.push(' ');
            }
            top.push_str(label);
        }
        bottom.push_str(text);
    }
    format!("{}\n{}\n", top.trim_end(), bottom)
}

/// The ASCII diagram of `topology` for the report: the kernel path and the
/// DockNet paths, with the wire's MTU.
pub fn diagram(topology: Topology, mtu: u32) -> String {
    let (a, b) = (format!("{IP_H1}/{PREFIX}"), format!("{IP_H2}/{PREFIX}"));
    let dn_a = format!("pipe a {a} - docknetd - eth0");
    let dn_b = format!("eth0 - docknetd - pipe b {b}");
    let (kernel, docknet) = match topology {
        Topology::Containers => {
            let wire = format!(" ==wire: veth, MTU {mtu}== ");
            (
                render_chain(&[
                    ("C1", format!("eth0 {a}")),
                    ("", " --veth-- ".into()),
                    ("H1", "vethc1 - br0 - eth0".into()),
                    ("", wire.clone()),
                    ("H2", "eth0 - br0 - vethc2".into()),
                    ("", " --veth-- ".into()),
                    ("C2", format!("eth0 {b}")),
                ]),
                render_chain(&[("H1", dn_a), ("", wire), ("H2", dn_b)]),
            )
        }
        Topology::BridgeWire => {
            let veth = format!(" --veth, MTU {mtu}-- ");
            let br = ("BR", "pa - br0 - pb".to_string());
            (
                render_chain(&[
                    ("H1", format!("eth0 {a}")),
                    ("", veth.clone()),
                    br.clone(),
                    ("", veth.clone()),
                    ("H2", format!("eth0 {b}")),
                ]),
                render_chain(&[
                    ("H1", dn_a),
                    ("", veth.clone()),
                    br,
                    ("", veth),
                    ("H2", dn_b),
                ]),
            )
        }
    };
    format!(
        "{KERNEL} (client left, server right):\n{kernel}\n\
         docknet-af-packet, docknet-dpdk (client left, server right):\n{docknet}"
    )
}

/// The report's paragraphs on the topology and the paths.
fn paths_text(ia: &InterhostArgs, mtu: u32) -> String {
    let offloads = if ia.no_tso {
        "TSO/GSO turned off on every veth end (--no-tso), GRO off"
    } else {
        "every veth keeps its default offloads (TSO/GSO and checksum offload on, GRO off)"
    };
    let mtu_text = match ia.mtu {
        Some(m) => format!("MTU {m} (--mtu) on every link"),
        None => format!("MTU {mtu} (the veth default) on every link"),
    };
    let t = ia.topology;
    let (shape, kernel) = match t {
        Topology::Containers => (
            "Two hosts = network namespaces H1 and H2; the wire = one veth pair between them \
(H1's eth0 — H2's eth0).",
            "`kernel-veth-bridge` = what containers get from Docker's default bridge network on \
each host: container namespace C1 (C2) whose eth0 10.88.1.2/16 (10.88.2.2/16) is a veth to \
Linux bridge br0 in H1 (H2); the host's wire end is also a port of that br0, so both containers \
share one L2 segment. Kernel TCP client in C1, echo server in C2: \
veth → bridge → wire → bridge → veth. `docknet-af-packet` = one `docknetd --nic af-packet:eth0` \
per host directly on the wire end (the master owns the NIC: no bridge, no container veth; \
started with `nsenter --net`), pipe a 10.88.1.2/16 on H1, pipe b 10.88.2.2/16 on H2, \
`dn-echo client` on a to `dn-echo server` on b.",
        ),
        Topology::BridgeWire => (
            "Two hosts = network namespaces H1 and H2; the wire = each host's eth0 is a veth whose \
peer is a port of Linux bridge br0 in a third namespace BR (H1 — veth — br0 — veth — H2).",
            "`kernel-veth-bridge` = kernel TCP, 10.88.1.2/16 on H1's eth0 to 10.88.2.2/16 on H2's \
(no containers). `docknet-af-packet` = one `docknetd --nic af-packet:eth0` per host (started \
with `nsenter --net`), pipe a 10.88.1.2/16 on H1, pipe b 10.88.2.2/16 on H2, `dn-echo client` \
on a to `dn-echo server` on b.",
        ),
    };
    format!(
        "Topology: **{t}** (`--topology {t}`{}). {shape} Every path gets a fresh copy of the same \
wire with the same settings: {mtu_text}; {offloads}.\n\n```text\n{}```\n\n{kernel} \
`docknet-dpdk` = the same with `--nic dpdk:'--no-huge --no-pci \
--vdev=net_af_packet0,iface=eth0 -l N ...'` (the af_packet PMD reports no partial checksums; \
DockNet ↔ DockNet frames carry full checksums, filled in by the master, so the wire's checksum \
offload is left as it is).",
        if t == Topology::Containers {
            ", the default"
        } else {
            ""
        },
        diagram(t, mtu)
    )
}

fn run_kernel(a: &BenchArgs, ia: &InterhostArgs) -> Result<Vec<Row>, String> {
    let path = HostPath::KernelVethBridge;
    let topo = Network::create(&topology_spec(path, ia.topology, ia.mtu, ia.no_tso))?;
    eprintln!("  topology: {}", topo.describe());
    let rows = pingpong::measure_kernel_topology(a, path.name(), &topo)?;
    drop(topo);
    Ok(rows)
}

/// One `dn-echo client` command on pipe dir `pipe`.
fn dn_client(
    bins: &Bins,
    pipe: &std::path::Path,
    size: usize,
    count: usize,
    warmup: usize,
) -> Command {
    let mut c = Command::new(&bins.dn_echo);
    c.env("DOCKNET_PIPE", pipe)
        .args(["client", "--to", &format!("{IP_H2}:{DN_PORT}")])
        .args(["--size", &size.to_string()])
        .args(["--count", &count.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .arg("--json");
    c
}

fn run_docknet(
    a: &BenchArgs,
    path: HostPath,
    ia: &InterhostArgs,
    bins: &Bins,
) -> Result<Vec<Row>, String> {
    let pid = std::process::id();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let topo = Network::create(&topology_spec(path, ia.topology, ia.mtu, ia.no_tso))?;
    eprintln!("  topology: {}", topo.describe());
    let start = |host: u8, ns: &str, dev: &str| {
        let nic = nic_spec(path, dev, host, pid, ncpu);
        eprintln!("  H{host}: nsenter --net=/run/netns/{ns} docknetd --nic {nic}");
        let run = std::env::temp_dir().join(format!("dnbench-{pid}-{}{host}", path.tag()));
        Daemon::start_with(
            bins,
            run,
            a.keep_run_dir,
            Duration::from_secs(30),
            &["--nic", &nic],
            Some(ns),
            &format!("docknetd H{host}"),
        )
        .map_err(|e| {
            if e.contains(NO_DPDK_FEATURE) {
                "docknetd built without --features docknet-master/dpdk \
                 (cargo build --release --features docknet-master/dpdk)"
                    .to_string()
            } else {
                e
            }
        })
    };
    let mut h1 = start(1, &topo.end_a.ns, &topo.end_a.dev)?;
    let mut h2 = start(2, &topo.end_b.ns, &topo.end_b.dev)?;
    let ip_a = format!("{IP_H1}/{PREFIX}");
    h1.ctl(&["pipe", "create", "a", "--ip", &ip_a])?;
    h2.ctl(&["pipe", "create", "b", "--ip", &format!("{IP_H2}/{PREFIX}")])?;
    let mut cmd = Command::new(&bins.dn_echo);
    cmd.env("DOCKNET_PIPE", h2.pipe_dir("b"))
        .args(["server", "--port", &DN_PORT.to_string()]);
    let mut server = ChildGuard::spawn(&format!("{path} dn-echo server"), cmd)?;
    server
        .wait_for_line("listening", Duration::from_secs(15))
        .map_err(|e| format!("{e}; docknetd H2 stderr: {}", h2.stderr_tail()))?;
    let cli_pipe = h1.pipe_dir("a");
    // One short exchange first: if the wire does not work (ARP, addresses),
    // say so now instead of timing out at every size.
    let probe = run_with_timeout(
        &format!("{path} probe"),
        dn_client(bins, &cli_pipe, 64, 3, 0),
        Duration::from_secs(20),
    )?;
    if !probe.success {
        return Err(format!(
            "no echo across the wire ({}): client stderr: {}; H1 stats: {}; H2 stats: {}",
            probe.status,
            probe.stderr_tail,
            h1.ctl(&["stats", "--json"]).unwrap_or_else(|e| e).trim(),
            h2.ctl(&["stats", "--json"]).unwrap_or_else(|e| e).trim()
        ));
    }
    let rows = pingpong::measure(
        a,
        path.name(),
        |size, count, warmup| dn_client(bins, &cli_pipe, size, count, warmup),
        |prev_failed| {
            if let Some(s) = server.exited() {
                return Err(format!(
                    "dn-echo server exited ({s}); stderr: {}",
                    server.stderr_tail.digest()
                ));
            }
            for (h, d) in [("H1", &mut h1), ("H2", &mut h2)] {
                if let Some(s) = d.exited() {
                    return Err(format!(
                        "docknetd {h} exited ({s}); stderr: {}",
                        d.stderr_tail()
                    ));
                }
            }
            if prev_failed {
                // A client that crashed may leave frames behind: start on a fresh pipe.
                log::debug!("re-creating pipe a after a failed client");
                h1.ctl(&["pipe", "rm", "a"])?;
                h1.ctl(&["pipe", "create", "a", "--ip", &ip_a])?;
            }
            Ok(())
        },
    );
    for (h, d) in [("H1", &h1), ("H2", &h2)] {
        if let Ok(s) = d.ctl(&["stats", "--json"]) {
            log::debug!("{path} {h} stats: {}", s.trim());
        }
    }
    // Stop in order: service, masters, then the wire.
    drop(server);
    drop(h1);
    drop(h2);
    drop(topo);
    Ok(rows)
}

/// The issue-3 targets for each DockNet path against [`KERNEL`]: one-way p50
/// at 1 KB at least 3× lower; goodput no lower at any measured size.
/// A markdown table; "-" where a point is missing.
pub fn targets_section(rows: &[Row], order: &[String]) -> String {
    let find = |path: &str, size: usize| {
        rows.iter()
            .find(|r| r.path == path && r.size == size)
            .and_then(|r| r.outcome.as_ref().ok())
    };
    let mut cells = Vec::new();
    for path in order.iter().filter(|p| p.as_str() != KERNEL) {
        if !rows.iter().any(|r| &r.path == path) {
            continue;
        }
        let lat = match (find(path, 1024), find(KERNEL, 1024)) {
            (Some(d), Some(k)) if d.one_way_us_p50 > 0.0 => {
                let x = k.one_way_us_p50 / d.one_way_us_p50;
                let how = if x >= 1.0 {
                    format!("{x:.2}× lower")
                } else {
                    format!("{:.2}× higher", 1.0 / x)
                };
                vec![
                    format!(
                        "{:.1} vs {:.1} µs: {how}",
                        d.one_way_us_p50, k.one_way_us_p50
                    ),
                    if x >= 3.0 { "met" } else { "NOT met" }.into(),
                ]
            }
            _ => vec!["1K not measured on both paths".into(), "-".into()],
        };
        cells.push(
            [
                vec![
                    path.clone(),
                    format!("one-way p50 at 1K ≥ 3× lower than {KERNEL}"),
                ],
                lat,
            ]
            .concat(),
        );
        let mut sizes: Vec<usize> = rows
            .iter()
            .filter(|r| &r.path == path)
            .map(|r| r.size)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut compared = 0;
        let mut lower = Vec::new();
        let mut worst: Option<(f64, usize)> = None;
        for &size in &sizes {
            if let (Some(d), Some(k)) = (find(path, size), find(KERNEL, size)) {
                if k.goodput_gbps <= 0.0 {
                    continue;
                }
                compared += 1;
                let x = d.goodput_gbps / k.goodput_gbps;
                if worst.is_none_or(|(w, _)| x < w) {
                    worst = Some((x, size));
                }
                if x < 1.0 {
                    lower.push(format!("{} ({x:.2}×)", format_size(size)));
                }
            }
        }
        let gp = match worst {
            None => vec!["no size measured on both paths".into(), "-".into()],
            Some((w, s)) if lower.is_empty() => vec![
                format!(
                    "{compared} sizes; lowest ratio {w:.2}× at {}",
                    format_size(s)
                ),
                "met".into(),
            ],
            Some(_) => vec![
                format!("{compared} sizes; lower at {}", lower.join(", ")),
                "NOT met".into(),
            ],
        };
        cells.push(
            [
                vec![path.clone(), format!("goodput ≥ {KERNEL} at every size")],
                gp,
            ]
            .concat(),
        );
    }
    if cells.is_empty() {
        return "No DockNet path measured.\n".into();
    }
    report::markdown_table(
        &["path", "target", "measured", "result"],
        &[false, false, false, false],
        &cells,
    )
}

/// Everything `interhost` needs beyond the common options.
#[derive(Debug, Clone)]
pub struct InterhostArgs {
    pub paths: Vec<HostPath>,
    /// The shape of the network (`--topology`).
    pub topology: Topology,
    /// MTU of every link of the wire (`None` = the veth default, 1500).
    pub mtu: Option<u32>,
    /// TSO/GSO off on every veth end.
    pub no_tso: bool,
}

/// Runs the benchmark and writes the outputs.
pub fn run(a: &BenchArgs, ia: &InterhostArgs) -> Result<(), String> {
    let names: Vec<&str> = ia.paths.iter().map(|p| p.name()).collect();
    pingpong::announce(a, "interhost", &names)?;
    let host = HostInfo::collect();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for (i, &path) in ia.paths.iter().enumerate() {
        eprintln!("[{}/{}] {path}", i + 1, ia.paths.len());
        let r = netns::unavailable_reason()
            .map_or(Ok(()), Err)
            .and_then(|()| match path {
                HostPath::KernelVethBridge => run_kernel(a, ia),
                _ => {
                    let bins = docknet::find_bins(a.bin_dir.as_deref())?;
                    run_docknet(a, path, ia, &bins)
                }
            });
        match r {
            Ok(mut v) => rows.append(&mut v),
            Err(reason) => {
                eprintln!("  skipping {path}: {reason}");
                skipped.push(Skipped {
                    path: path.name().into(),
                    reason,
                });
            }
        }
    }
    let order: Vec<String> = names.iter().map(|p| p.to_string()).collect();
    let mtu = ia.mtu.unwrap_or(1500);
    let paths_text = paths_text(ia, mtu);
    let spec = OutputSpec {
        stem: "interhost",
        title: "Inter-host TCP ping-pong: kernel vs DockNet",
        plot_title: "Inter-host: kernel TCP vs DockNet, goodput and one-way latency",
        what: &format!(
            "TCP ping-pong between two netns hosts, topology {}, MTU {mtu}{}",
            ia.topology,
            if ia.no_tso { ", TSO/GSO off" } else { "" }
        ),
        paths_text: &paths_text,
        baselines: &[KERNEL],
        extra: Some(("Targets (issue 3)".into(), targets_section(&rows, &order))),
        json_extra: serde_json::json!({
            "topology": ia.topology.name(),
            "mtu": mtu,
            "no_tso": ia.no_tso,
        }),
    };
    pingpong::write_outputs(a, &spec, &host, &rows, &skipped, &order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;

    fn ok(path: &str, size: usize, rtt_ns: u64) -> Row {
        Row {
            path: path.into(),
            size,
            outcome: Ok(summarize(size, &[rtt_ns; 10])),
        }
    }

    #[test]
    fn parses_paths() {
        let l: HostPathList = "docknet-dpdk, kernel-veth-bridge,docknet-dpdk"
            .parse()
            .unwrap();
        assert_eq!(l.0, vec![HostPath::DocknetDpdk, HostPath::KernelVethBridge]);
        assert!("".parse::<HostPathList>().is_err());
        let e = "kernel-lo".parse::<HostPathList>().unwrap_err();
        assert!(e.contains("docknet-af-packet"), "{e}");
    }

    #[test]
    fn nic_specs() {
        assert_eq!(
            nic_spec(HostPath::DocknetAfPacket, "eth0", 1, 9, 2),
            "af-packet:eth0"
        );
        let d1 = nic_spec(HostPath::DocknetDpdk, "eth0", 1, 9, 2);
        let d2 = nic_spec(HostPath::DocknetDpdk, "eth0", 2, 9, 2);
        assert!(d1.starts_with(
            "dpdk:--no-huge --no-pci --vdev=net_af_packet0,iface=eth0,framecnt=4096 -l 0 "
        ));
        assert!(d1.contains("--file-prefix=dnb9h1"));
        assert!(d2.contains(" -l 1 ") && d2.contains("--file-prefix=dnb9h2"));
        assert!(!d1.contains("--in-memory"));
        // One CPU: both on core 0.
        assert!(nic_spec(HostPath::DocknetDpdk, "eth0", 2, 9, 1).contains(" -l 0 "));
        assert!(nic_spec(HostPath::DocknetDpdk, "wire", 2, 9, 1).contains("iface=wire,"));
    }

    #[test]
    fn topology_specs_per_path() {
        for topology in Topology::ALL {
            let k = topology_spec(HostPath::KernelVethBridge, topology, Some(9000), true);
            let d = topology_spec(HostPath::DocknetAfPacket, topology, Some(9000), true);
            let p = topology_spec(HostPath::DocknetDpdk, topology, Some(9000), true);
            assert_eq!(k.endpoints, Endpoints::Kernel);
            assert_eq!(d.endpoints, Endpoints::Userspace);
            assert_eq!(p.endpoints, Endpoints::Userspace);
            assert_eq!(
                (k.topology, k.ip_a, k.ip_b, k.prefix, k.mtu, k.no_tso),
                (d.topology, d.ip_a, d.ip_b, d.prefix, d.mtu, d.no_tso)
            );
            // Fresh, distinct namespaces per path.
            assert_ne!(k.names(1)[0], d.names(1)[0]);
            assert_ne!(p.names(1)[0], d.names(1)[0]);
        }
        // The default: kernel in containers C1/C2, DockNet on the hosts' wire ends.
        let k = topology_spec(
            HostPath::KernelVethBridge,
            Topology::Containers,
            None,
            false,
        )
        .plan(4);
        let d = topology_spec(HostPath::DocknetAfPacket, Topology::Containers, None, false).plan(4);
        assert_eq!(k.end_a.ns, "dnb4kc1");
        assert_eq!(k.end_b.ns, "dnb4kc2");
        assert_eq!(k.wire_a.ns, "dnb4kh1");
        assert_eq!(
            (d.end_a.ns.as_str(), d.end_a.dev.as_str()),
            ("dnb4ph1", "eth0")
        );
        assert_eq!(d.end_b, d.wire_b);
    }

    #[test]
    fn chain_labels_sit_above_their_boxes() {
        let c = render_chain(&[
            ("H1", "eth0".into()),
            ("", " == ".into()),
            ("H2", "eth0".into()),
        ]);
        assert_eq!(c, "H1      H2\neth0 == eth0\n");
        // A label longer than its box still gets a space before the next one.
        let c = render_chain(&[("LONGLABEL", "x".into()), ("B", "y".into())]);
        assert_eq!(c.lines().next(), Some("LONGLABEL B"));
    }

    #[test]
    fn diagrams_name_the_topology_parts() {
        let c = diagram(Topology::Containers, 1500);
        for part in [
            "C1",
            "C2",
            "vethc1 - br0 - eth0",
            "==wire: veth, MTU 1500==",
            "eth0 10.88.2.2/16",
            "pipe a 10.88.1.2/16 - docknetd - eth0",
        ] {
            assert!(c.contains(part), "{part}: {c}");
        }
        assert!(!c.contains("BR"));
        assert!(c.is_ascii(), "{c}");
        // Labels line up with their boxes.
        let lines: Vec<&str> = c.lines().collect();
        let i = lines.iter().position(|l| l.starts_with("C1")).unwrap();
        assert_eq!(lines[i].find("C2"), lines[i + 1].rfind("eth0 10.88.2.2"));
        assert_eq!(lines[i].find("H1"), lines[i + 1].find("vethc1"));
        let b = diagram(Topology::BridgeWire, 9000);
        assert!(
            b.contains("pa - br0 - pb") && b.contains("--veth, MTU 9000--"),
            "{b}"
        );
        assert!(!b.contains("C1") && !b.contains("wire"), "{b}");
        assert!(b.is_ascii());
    }

    #[test]
    fn report_text_says_which_topology_ran() {
        let ia = |topology| InterhostArgs {
            paths: HostPath::ALL.to_vec(),
            topology,
            mtu: None,
            no_tso: false,
        };
        let t = paths_text(&ia(Topology::Containers), 1500);
        assert!(t.starts_with("Topology: **containers** (`--topology containers`, the default)."));
        assert!(t.contains("```text\n") && t.contains("vethc2"), "{t}");
        let t = paths_text(&ia(Topology::BridgeWire), 1500);
        assert!(t.starts_with("Topology: **bridge-wire** (`--topology bridge-wire`)."));
        assert!(t.contains("pa - br0 - pb"), "{t}");
    }

    #[test]
    fn targets_met_and_missed() {
        let order: Vec<String> = ["kernel-veth-bridge", "docknet-af-packet", "docknet-dpdk"]
            .map(String::from)
            .to_vec();
        let rows = vec![
            ok(KERNEL, 1024, 60_000),
            ok(KERNEL, 204800, 400_000),
            // af-packet: 4× lower at 1K, faster at 200K: both met.
            ok("docknet-af-packet", 1024, 15_000),
            ok("docknet-af-packet", 204800, 200_000),
            // dpdk: 2× lower at 1K, slower at 200K: both missed.
            ok("docknet-dpdk", 1024, 30_000),
            ok("docknet-dpdk", 204800, 800_000),
        ];
        let t = targets_section(&rows, &order);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2 + 4, "{t}");
        assert!(lines[2].contains("docknet-af-packet") && lines[2].contains("4.00× lower"));
        assert!(lines[2].contains("| met ") && !lines[2].contains("NOT"));
        assert!(lines[3].contains("lowest ratio 2.00× at 200K") && lines[3].contains("| met "));
        assert!(lines[4].contains("2.00× lower") && lines[4].contains("NOT met"));
        let slow = vec![ok(KERNEL, 1024, 10_000), ok("docknet-dpdk", 1024, 40_000)];
        assert!(targets_section(&slow, &order).contains("20.0 vs 5.0 µs: 4.00× higher"));
        assert!(lines[5].contains("lower at 200K (0.50×)") && lines[5].contains("NOT met"));

        // No kernel at 1K; a failed DockNet point is not compared.
        let rows = vec![
            ok(KERNEL, 64, 60_000),
            ok("docknet-af-packet", 64, 15_000),
            Row {
                path: "docknet-af-packet".into(),
                size: 1024,
                outcome: Err("boom".into()),
            },
        ];
        let t = targets_section(&rows, &order);
        assert!(t.contains("1K not measured"), "{t}");
        assert!(t.contains("1 sizes; lowest ratio 4.00× at 64"), "{t}");
        assert!(!t.contains("docknet-dpdk"));
        assert!(targets_section(&[ok(KERNEL, 64, 1)], &order).contains("No DockNet path"));
    }
}

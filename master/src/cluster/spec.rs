//! What a cluster is made of, as `docknetctl cluster up FILE.toml` sends it to `docknetd`
//! (paths already made absolute against the file's folder).
//!
//! Parsing the file (`ClusterSpec::from_toml`) lives here too, so the CLI and the tests
//! read files the same way.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The transport of a VIP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

/// One port the VIP serves (`80`, `80/tcp`, `53/udp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VipPort {
    pub port: u16,
    pub proto: Proto,
}

/// How the members run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MemberRun {
    /// A process: this binary with these arguments, `DOCKNET_PIPE` set to its pipe.
    Binary { path: PathBuf, args: Vec<String> },
    /// A runc container from a `docknet-image` OCI layout, the pipe mounted at
    /// `/run/docknet/pipe`.
    Image {
        dir: PathBuf,
        tag: String,
        args: Vec<String>,
    },
}

/// How the NAT checks a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    pub kind: HealthKind,
    /// Path of the HTTP GET (`kind = "http"`).
    pub path: String,
    /// Port checked; default: the first TCP port of the VIP.
    pub port: Option<u16>,
    /// A check every this many ms; a member that fails one leaves the rotation.
    pub interval_ms: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// A TCP connect that completes.
    Tcp,
    /// An HTTP GET answered with a 2xx or 3xx status.
    Http,
}

/// Where a backend's replies go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatMode {
    /// Destination rewritten; the member sees the client's address and replies through
    /// the NAT (its default route is the fast channel to the NAT).
    Dnat,
    /// Source rewritten too (to the NAT's address and a port of its own): for members
    /// that cannot route through the NAT.
    Fullnat,
}

/// A cluster: `dn-nat` on the VIP and `replicas` members behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// 1-24 characters of A-Z a-z 0-9 _ - (the NAT's pipe is named so; members NAME-1 ..).
    pub name: String,
    pub vip: Ipv4Addr,
    /// Prefix of the NAT pipe's address (default 16).
    pub vip_prefix: u8,
    pub ports: Vec<VipPort>,
    pub replicas: u32,
    /// `maglev`, `rr` or `least-conn`.
    pub policy: String,
    pub run: MemberRun,
    /// Member addresses come from here (`A.B.C.D/N`; the first address is the gateway).
    pub subnet: String,
    pub health: HealthSpec,
    pub mode: NatMode,
    /// Connection-table capacity of the NAT.
    pub conn_capacity: u32,
    /// Member weight when none is set (1-1000).
    pub weight: u32,
    /// The `dn-nat` binary; default: `dn-nat` beside `docknetd`.
    pub nat_binary: Option<PathBuf>,
    /// Extra environment for the members (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

/// What the NAT reports about one member (read from its stats file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatBackendStats {
    pub name: String,
    pub healthy: bool,
    pub weight: u32,
    /// Flows in the NAT's table now.
    pub active: u64,
    /// Flows the NAT sent it since the NAT started.
    pub connections: u64,
    /// Bytes the NAT forwarded for it, both ways.
    pub bytes: u64,
}

/// A member as `cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    pub ip: String,
    /// 0 while not running.
    pub pid: u32,
    /// `starting`, `running`, `restarting`, `stopped`.
    pub state: String,
    /// `healthy`, `unhealthy`, `unknown` (the NAT has not said yet).
    pub health: String,
    pub weight: u32,
    pub connections: u64,
    pub active: u64,
    pub bytes: u64,
    /// Times the supervisor restarted it after it died.
    pub restarts: u64,
}

/// `cluster status NAME --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    /// `A.B.C.D:PORT[/udp]`, comma-separated.
    pub vip: String,
    pub policy: String,
    pub mode: NatMode,
    pub nat: MemberStatus,
    pub members: Vec<MemberStatus>,
    /// The NAT's own counters (connection table, drops by reason), as it wrote them.
    pub nat_counters: serde_json::Value,
}

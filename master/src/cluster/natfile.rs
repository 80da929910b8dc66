//! The two files through which `docknetd` and a cluster's `dn-nat` talk, both in the
//! NAT's pipe directory (so a NAT in a container sees them at `/run/docknet/pipe`):
//!
//! - [`NAT_CONFIG_FILE`] (written by `docknetd`, replaced atomically): the VIP's ports,
//!   the policy, health checks and the backends with their weights. `dn-nat` looks at it
//!   every [`CONFIG_POLL_MS`] and applies a change live.
//! - [`NAT_STATS_FILE`] (written by `dn-nat`, replaced atomically): what the NAT sees per
//!   backend (health, connections, bytes) and its own counters, rewritten within
//!   [`STATS_EVERY_MS`] of a change. `docknetd` reads it for `cluster status`; it is the
//!   tenant's file, so it is read with a size limit and without following links, and a
//!   bad one only makes the status "unknown".
//!
//! Plain JSON, so `dn-nat` can also run alone with a hand-written config.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::spec::{HealthSpec, NatBackendStats, NatMode, VipPort};

/// The NAT's configuration, in its pipe directory.
pub const NAT_CONFIG_FILE: &str = "nat.json";
/// The NAT's report, in its pipe directory.
pub const NAT_STATS_FILE: &str = "nat-stats.json";
/// How often `dn-nat` looks for a new configuration (ms).
pub const CONFIG_POLL_MS: u64 = 50;
/// How often `dn-nat` rewrites its stats file if anything changed (ms): what it reports
/// is at most this old.
pub const STATS_EVERY_MS: u64 = 100;
/// Longest stats file `docknetd` reads.
pub const MAX_STATS_BYTES: u64 = 1 << 20;

/// One backend in the NAT's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatBackend {
    pub name: String,
    pub ip: Ipv4Addr,
    /// 0: drained (no new flows; established ones go on).
    pub weight: u32,
    /// False when the supervisor knows the member is not running: it leaves the rotation
    /// at once and its flows are reset, without waiting for a health check to fail.
    #[serde(default = "yes")]
    pub up: bool,
}

fn yes() -> bool {
    true
}

/// `nat.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// Bumped by the writer on every change; echoed in the stats once applied.
    pub generation: u64,
    pub ports: Vec<VipPort>,
    /// `maglev`, `rr`, `least-conn`.
    pub policy: String,
    pub mode: NatMode,
    pub conn_capacity: u32,
    pub health: HealthSpec,
    pub backends: Vec<NatBackend>,
}

/// `nat-stats.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatStats {
    pub pid: u32,
    /// The configuration generation in force.
    pub generation: u64,
    pub uptime_ms: u64,
    /// Flows in the table now, and its capacity.
    pub flows: u64,
    pub capacity: u64,
    /// Counters by name: forwarded frames each way, refusals, drops by reason.
    pub counters: BTreeMap<String, u64>,
    pub backends: Vec<NatBackendStats>,
}

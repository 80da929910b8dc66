//! The control protocol: one JSON object per line each way, shared by `docknetd` and
//! `docknetctl`. A request is e.g.
//! `{"cmd":"pipe_create","name":"a","ip":"10.88.0.2/16","mtu":9000}`; the answer is
//! `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A request on the control socket.
// `ClusterUp` carries a whole `ClusterSpec` (~300 bytes) inline: a request is made once
// per line read and never stored in bulk, so the size does not matter, and boxing it
// would change the type both sides of the cluster work are written against.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check; answers `"pong"`.
    Ping,
    /// Create a pipe. `ip` is `A.B.C.D/N`.
    PipeCreate {
        name: String,
        ip: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
        /// Rate limit in Mbit/s (1..=[`crate::rate::MAX_RATE_MBPS`]) on what the pipe sends through
        /// the master; none by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_mbps: Option<u64>,
        /// The pipe may send with source addresses other than its own (a NAT).
        #[serde(default, skip_serializing_if = "is_false")]
        forwarder: bool,
        /// `UID[:GID]` (names or numbers) owning the pipe's directory and files, the only
        /// user (besides root) who can open them. Default: the user who asks; only root
        /// may name another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Remove a pipe (and its fast channels).
    PipeRm { name: String },
    /// List pipes.
    PipeLs,
    /// Join two pipes with a fast channel.
    FcCreate {
        a: String,
        b: String,
        /// `a` may send `b` frames with source addresses other than its own (a NAT in
        /// front of `b`); `b` may not.
        #[serde(default, skip_serializing_if = "is_false")]
        forward: bool,
        /// IP MTU of the channel (default [`crate::control::DEFAULT_FC_MTU`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
    },
    /// Remove the fast channel between two pipes.
    FcRm { a: String, b: String },
    /// List fast channels.
    FcLs,
    /// Counters of one pipe or all.
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Set a pipe's rate limit in Mbit/s (1..=[`crate::rate::MAX_RATE_MBPS`]): the master takes the
    /// frames the pipe sends (to other pipes and the NIC) no faster. Fast channels bypass
    /// the master and are not limited.
    RateSet { name: String, mbps: u64 },
    /// Remove a pipe's rate limit.
    RateClear { name: String },
    /// Mount a pipe into a process's mount namespace at `/run/docknet/pipe`.
    Attach { name: String, pid: u32 },
    /// Stop docknetd. Without `remove_all` (as on SIGTERM) pipes, fast channels and their
    /// services stay, for a docknetd started on the same run directory to re-adopt; with
    /// it, every pipe is removed (its service stops) and the run directory cleaned up.
    Shutdown {
        #[serde(default, skip_serializing_if = "is_false")]
        remove_all: bool,
    },
    /// The NIC's name and counters.
    Link,
    /// Stream a pcap of what pipe `name` sends and receives (after the response line),
    /// until `count` frames or the client hangs up.
    Capture {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// Bring up a cluster: pipes, fast channels, `dn-nat` and the members, supervised.
    /// Returns at once; `cluster_status` tells when the members are healthy.
    ClusterUp {
        spec: crate::cluster::ClusterSpec,
        /// `UID[:GID]` the NAT and members run as (and own their pipes). Default: the
        /// user who asks; only root may name another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// A cluster's NAT and members (`crate::cluster::ClusterStatus`).
    ClusterStatus { name: String },
    /// Names of the clusters.
    ClusterLs,
    /// Run `replicas` members: new ones join once healthy; the highest-numbered ones
    /// are removed (their connections reset).
    ClusterScale { name: String, replicas: u32 },
    /// Send a member no new connections; its established ones go on.
    ClusterDrain { name: String, member: String },
    /// Set a member's weight (0 = drain).
    ClusterWeight {
        name: String,
        member: String,
        weight: u32,
    },
    /// Stop the NAT and the members, remove their pipes.
    ClusterDown { name: String },
    /// Route `cidr` (`A.B.C.D/N`, another node's pod subnet) through `via`: that node's
    /// docknetd on the wire (its `--link-ip` address).
    RouteAdd { cidr: String, via: String },
    /// Remove the route to `cidr`.
    RouteRm { cidr: String },
    /// The routes, this docknetd's link address and their counters.
    RouteLs,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn from_result(r: Result<Value, String>) -> Self {
        match r {
            Ok(data) => Response {
                ok: true,
                data: Some(data),
                error: None,
            },
            Err(e) => Response {
                ok: false,
                data: None,
                error: Some(e),
            },
        }
    }
}

/// Parse one request line. The error is one line, fit to send back.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let line = line.trim();
    if line.is_empty() {
        return Err("empty request".into());
    }
    let v: Value =
        serde_json::from_str(line).map_err(|e| format!("malformed request (not JSON): {e}"))?;
    if !v.is_object() {
        return Err("malformed request: expected a JSON object with a \"cmd\" field".into());
    }
    match v.get("cmd") {
        Some(Value::String(_)) => {}
        Some(_) => return Err("malformed request: \"cmd\" must be a string".into()),
        None => return Err("malformed request: missing \"cmd\" field".into()),
    }
    serde_json::from_value(v).map_err(|e| format!("bad request: {e}"))
}

/// A pipe as `pipe ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeEntry {
    pub name: String,
    /// `A.B.C.D/N`.
    pub ip: String,
    pub gateway: String,
    pub mac: String,
    pub mtu: u32,
    /// Rate limit (Mbit/s) on what the pipe sends through the master; `None`: unlimited.
    pub rate_mbps: Option<u64>,
    /// Pid of the attached service, 0 when none (as the service wrote it; a service that
    /// died without detaching leaves its pid here, with `attached` false).
    pub attached_pid: u32,
    /// A live process holds the pipe's claim (a file lock, `docknet_pipe::claim`); `None` from
    /// a daemon too old to say.
    #[serde(default)]
    pub attached: Option<bool>,
    /// The pipe directory (what a service gets as `DOCKNET_PIPE`).
    pub dir: String,
    /// Its file was shrunk under the master: quarantined, nothing is switched for it
    /// (`false` from a daemon too old to say).
    #[serde(default)]
    pub broken: bool,
    /// May send with source addresses other than its own (`pipe create --forwarder`).
    #[serde(default)]
    pub forwarder: bool,
    /// `UID:GID` owning its directory and files (`None` from an older daemon).
    #[serde(default)]
    pub owner: Option<String>,
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A fast channel as `fc ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FcEntry {
    pub a: String,
    pub b: String,
    pub mtu: u32,
    pub path: String,
    /// `a` may send `b` frames with foreign source addresses (`fc create --forward`).
    #[serde(default)]
    pub forward: bool,
}

//! What a cluster is made of, as `docknetctl cluster up FILE.toml` sends it to `docknetd`
//! (paths already made absolute against the file's folder).
//!
//! Parsing the file (`ClusterSpec::from_toml`) lives here too, so the CLI and the tests
//! read files the same way.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use crate::net;

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

// --- The cluster file -------------------------------------------------------------------

/// Longest cluster name: members are pipes named `NAME-1` .. `NAME-250`, and a pipe name
/// has at most [`net::MAX_NAME_LEN`] (32) characters.
pub const MAX_NAME_LEN: usize = 24;
/// Most members a cluster runs (`replicas`).
pub const MAX_REPLICAS: u32 = 250;
/// Prefix of the NAT pipe's address when the file gives no `vip_prefix`.
pub const DEFAULT_VIP_PREFIX: u8 = 16;
/// Connection-table capacity of the NAT when the file gives no `conn_capacity`.
pub const DEFAULT_CONN_CAPACITY: u32 = 65536;
/// Range of `conn_capacity`.
pub const CONN_CAPACITY: RangeInclusive<i64> = 16..=4_000_000;
/// Range of member weights (`weight`; `cluster weight` also takes 0, to drain).
pub const WEIGHT: RangeInclusive<i64> = 1..=1000;
/// Health checks every this many ms when the file does not say.
pub const DEFAULT_INTERVAL_MS: u32 = 1000;
/// Range of `health.interval_ms`.
pub const INTERVAL_MS: RangeInclusive<i64> = 10..=60_000;
/// The balancing policies `dn-nat` knows; the first is the default.
pub const POLICIES: [&str; 3] = ["maglev", "rr", "least-conn"];
/// Set by docknetd for each member (its own pipe): a file may not override it.
const RESERVED_ENV: &str = "DOCKNET_PIPE";

/// Why a cluster file was refused. Each is one line naming the key and the line of the
/// file it is on (where there is one), for the CLI to print after the file's name:
/// `web.toml: line 4: key "replicas": 0 is out of range (1..=250)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// Not TOML (or a key given twice). `line`: where the parser stopped, when it says.
    Syntax {
        line: Option<usize>,
        message: String,
    },
    /// A key the format does not have: refused, so that a typo is not silently ignored.
    /// `hint`: the known key it probably meant.
    UnknownKey {
        line: usize,
        key: String,
        hint: Option<String>,
    },
    /// A value of the wrong type, out of range or malformed.
    BadValue {
        line: usize,
        key: String,
        why: String,
    },
    /// A required key is absent; `why` says what to write when the key alone does not.
    Missing { key: String, why: Option<String> },
    /// Two keys that exclude each other are both given (`key` on `line` is the later).
    Conflict {
        line: usize,
        key: String,
        other: String,
        other_line: usize,
    },
    /// A path (made absolute) that does not name what it should.
    BadPath {
        line: usize,
        key: String,
        path: PathBuf,
        why: String,
    },
}

impl SpecError {
    /// The line of the file the error is on (1-based), if it is on one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SpecError::Syntax { line, .. } => *line,
            SpecError::Missing { .. } => None,
            SpecError::UnknownKey { line, .. }
            | SpecError::BadValue { line, .. }
            | SpecError::Conflict { line, .. }
            | SpecError::BadPath { line, .. } => Some(*line),
        }
    }

    /// The key the error is about (`health.path`, `env.RUST_LOG` inside tables).
    pub fn key(&self) -> Option<&str> {
        match self {
            SpecError::Syntax { .. } => None,
            SpecError::UnknownKey { key, .. }
            | SpecError::BadValue { key, .. }
            | SpecError::Missing { key, .. }
            | SpecError::Conflict { key, .. }
            | SpecError::BadPath { key, .. } => Some(key),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Syntax {
                line: Some(line),
                message,
            } => write!(f, "line {line}: TOML syntax error: {message}"),
            SpecError::Syntax {
                line: None,
                message,
            } => write!(f, "TOML syntax error: {message}"),
            SpecError::UnknownKey { line, key, hint } => {
                write!(f, "line {line}: unknown key {key:?}")?;
                match hint {
                    Some(h) => write!(f, " (did you mean {h:?}?)"),
                    None => Ok(()),
                }
            }
            SpecError::BadValue { line, key, why } => write!(f, "line {line}: key {key:?}: {why}"),
            SpecError::Missing { key, why: None } => write!(f, "missing key {key:?}"),
            SpecError::Missing {
                key,
                why: Some(why),
            } => write!(f, "missing key {key:?}: {why}"),
            SpecError::Conflict {
                line,
                key,
                other,
                other_line,
            } => write!(
                f,
                "line {line}: key {key:?}: not allowed together with {other:?} (line {other_line}); give one of them"
            ),
            SpecError::BadPath {
                line,
                key,
                path,
                why,
            } => write!(f, "line {line}: key {key:?}: {} {why}", path.display()),
        }
    }
}

impl std::error::Error for SpecError {}

/// Check a cluster name: 1 to [`MAX_NAME_LEN`] characters of A-Z a-z 0-9 _ -.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok) {
        return Err(format!(
            "{name:?} is not a valid cluster name (1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ -)"
        ));
    }
    Ok(())
}

impl fmt::Display for VipPort {
    /// `80/tcp`, `53/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{}/{proto}", self.port)
    }
}

impl std::str::FromStr for VipPort {
    type Err = String;

    /// `80` (TCP), `80/tcp` or `53/udp`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port (PORT, PORT/tcp or PORT/udp, PORT 1-65535)");
        let (port, proto) = match s.split_once('/') {
            None => (s, Proto::Tcp),
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => return Err(bad()),
        };
        // Digits only: `parse` would also take `+80`.
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match port.parse::<u16>() {
            Ok(port) if port != 0 => Ok(VipPort { port, proto }),
            _ => Err(bad()),
        }
    }
}

/// The keys of a cluster file (for "did you mean").
const KEYS: [&str; 17] = [
    "name",
    "vip",
    "vip_prefix",
    "ports",
    "replicas",
    "policy",
    "binary",
    "image",
    "tag",
    "args",
    "subnet",
    "health",
    "mode",
    "conn_capacity",
    "weight",
    "nat_binary",
    "env",
];
/// The keys of its `health` table.
const HEALTH_KEYS: [&str; 4] = ["kind", "path", "port", "interval_ms"];

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// A value and the line of the file it came from, for errors found only once the whole
/// file is read (a VIP inside the subnet, too many replicas for it).
struct At<T> {
    v: T,
    line: usize,
}

/// The `health` table as written.
#[derive(Default)]
struct RawHealth {
    kind: Option<HealthKind>,
    path: Option<At<String>>,
    port: Option<u16>,
    interval_ms: Option<u32>,
}

/// A cluster file's keys as read, before the checks that involve several of them.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    /// The address, and the port if the VIP names one.
    vip: Option<At<(Ipv4Addr, Option<VipPort>)>>,
    vip_prefix: Option<u8>,
    ports: Option<At<Vec<VipPort>>>,
    replicas: Option<At<u32>>,
    policy: Option<String>,
    binary: Option<At<PathBuf>>,
    image: Option<At<PathBuf>>,
    tag: Option<At<String>>,
    args: Vec<String>,
    /// Network address and prefix.
    subnet: Option<At<(Ipv4Addr, u8)>>,
    health: Option<RawHealth>,
    mode: Option<NatMode>,
    conn_capacity: Option<u32>,
    weight: Option<u32>,
    nat_binary: Option<At<PathBuf>>,
    env: Vec<(String, String)>,
}

/// The text of a cluster file, to turn byte offsets into line numbers, and the readers
/// of its values, whose errors name the key and the value's line.
struct Doc<'t> {
    text: &'t str,
    /// The file's folder, absolute, against which relative paths are resolved.
    base: &'t Path,
}

impl Doc<'_> {
    /// 1-based line of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    fn line_of<T>(&self, s: &Spanned<T>) -> usize {
        self.line(s.span().start)
    }

    fn bad(&self, key: &str, v: &Value, why: impl Into<String>) -> SpecError {
        SpecError::BadValue {
            line: self.line_of(v),
            key: key.to_string(),
            why: why.into(),
        }
    }

    fn wrong_type(&self, key: &str, v: &Value, want: &str) -> SpecError {
        let found = match v.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.bad(key, v, format!("expected {want}, found {found}"))
    }

    fn unknown(&self, k: &Key, table: &str, known: &[&str]) -> SpecError {
        let name: &str = k.get_ref();
        let hint = known
            .iter()
            .map(|c| (edit_distance(c, name), *c))
            .filter(|&(d, _)| d <= 2 && d < name.len())
            .min()
            .map(|(_, c)| format!("{table}{c}"));
        SpecError::UnknownKey {
            line: self.line_of(k),
            key: format!("{table}{name}"),
            hint,
        }
    }

    /// A string; NUL characters are refused (nothing here may contain one: paths,
    /// arguments and environment reach `execve`).
    fn string<'v>(&self, key: &str, v: &'v Value) -> Result<&'v str, SpecError> {
        match v.get_ref() {
            DeValue::String(s) if s.contains('\0') => {
                Err(self.bad(key, v, "contains a NUL character"))
            }
            DeValue::String(s) => Ok(s.as_ref()),
            _ => Err(self.wrong_type(key, v, "a string")),
        }
    }

    fn int(&self, key: &str, v: &Value, range: RangeInclusive<i64>) -> Result<i64, SpecError> {
        let DeValue::Integer(i) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "an integer"));
        };
        match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(self.bad(
                key,
                v,
                format!("{i} is out of range ({}..={})", range.start(), range.end()),
            )),
        }
    }

    fn table<'v, 'i>(&self, key: &str, v: &'v Value<'i>) -> Result<&'v DeTable<'i>, SpecError> {
        match v.get_ref() {
            DeValue::Table(t) => Ok(t),
            _ => Err(self.wrong_type(key, v, "a table")),
        }
    }

    fn array<'v, 'i>(&self, key: &str, v: &'v Value<'i>) -> Result<&'v [Value<'i>], SpecError> {
        match v.get_ref() {
            DeValue::Array(a) => Ok(a),
            _ => Err(self.wrong_type(key, v, "an array")),
        }
    }

    /// One of `choices` (a string), mapped to its value.
    fn choice<T: Copy>(&self, key: &str, v: &Value, choices: &[(&str, T)]) -> Result<T, SpecError> {
        let s = self.string(key, v)?;
        match choices.iter().find(|(c, _)| *c == s) {
            Some(&(_, t)) => Ok(t),
            None => {
                let names: Vec<&str> = choices.iter().map(|(c, _)| *c).collect();
                Err(self.bad(key, v, format!("{s:?} is not one of {}", names.join(", "))))
            }
        }
    }

    /// A path, made absolute against the file's folder (docknetd runs elsewhere).
    fn path(&self, key: &str, v: &Value) -> Result<At<PathBuf>, SpecError> {
        let s = self.string(key, v)?;
        if s.is_empty() {
            return Err(self.bad(key, v, "is empty"));
        }
        let joined = self.base.join(s);
        let path = std::path::absolute(&joined).map_err(|e| SpecError::BadPath {
            line: self.line_of(v),
            key: key.to_string(),
            path: joined.clone(),
            why: format!("cannot be made absolute ({e})"),
        })?;
        Ok(At {
            v: path,
            line: self.line_of(v),
        })
    }

    /// `A.B.C.D`, `A.B.C.D:PORT` or `A.B.C.D:PORT/PROTO`.
    fn vip(&self, key: &str, v: &Value) -> Result<(Ipv4Addr, Option<VipPort>), SpecError> {
        let s = self.string(key, v)?;
        let (ip, port) = match s.split_once(':') {
            Some((ip, port)) => (ip, Some(port)),
            None => (s, None),
        };
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            self.bad(
                key,
                v,
                format!("{s:?} is not A.B.C.D, A.B.C.D:PORT or A.B.C.D:PORT/udp (IPv4)"),
            )
        })?;
        let port = port
            .map(str::parse::<VipPort>)
            .transpose()
            .map_err(|e| self.bad(key, v, e))?;
        Ok((ip, port))
    }

    /// `["80", "443/tcp", "53/udp"]` (bare integers are TCP ports).
    fn ports(&self, key: &str, v: &Value) -> Result<Vec<VipPort>, SpecError> {
        let items = self.array(key, v)?;
        if items.is_empty() {
            return Err(self.bad(key, v, "lists no port"));
        }
        let mut ports = Vec::with_capacity(items.len());
        for item in items {
            let p = match item.get_ref() {
                DeValue::String(s) => s.parse::<VipPort>().map_err(|e| self.bad(key, item, e))?,
                DeValue::Integer(_) => VipPort {
                    port: self.int(key, item, 1..=65535)? as u16,
                    proto: Proto::Tcp,
                },
                _ => {
                    return Err(self.wrong_type(
                        key,
                        item,
                        "a port (\"80\", \"443/tcp\", \"53/udp\")",
                    ))
                }
            };
            if ports.contains(&p) {
                return Err(self.bad(key, item, format!("{p} is listed twice")));
            }
            ports.push(p);
        }
        Ok(ports)
    }

    /// `A.B.C.D/N`: a network address (host bits zero) whose member addresses are usable.
    fn subnet(&self, key: &str, v: &Value) -> Result<(Ipv4Addr, u8), SpecError> {
        let s = self.string(key, v)?;
        let (ip, prefix) = net::parse_cidr(s).map_err(|e| self.bad(key, v, e))?;
        let mask = net::netmask(prefix);
        let network = u32::from(ip) & mask;
        if network != u32::from(ip) {
            // Refused rather than guessed: 10.88.1.5/24 may be a typo for another subnet.
            return Err(self.bad(
                key,
                v,
                format!(
                    "{s:?} is not a network address (the network of {ip}/{prefix} is {}/{prefix})",
                    Ipv4Addr::from(network)
                ),
            ));
        }
        // Members get the addresses after the gateway, up to the one before broadcast:
        // the first and the last must be ordinary unicast hosts (not in 224.0.0.0/3).
        for a in [network + 2, (network | !mask) - 1] {
            net::validate_host_addr(Ipv4Addr::from(a), prefix)
                .map_err(|e| self.bad(key, v, format!("no member addresses in {s}: {e}")))?;
        }
        Ok((ip, prefix))
    }

    fn health(&self, key: &str, v: &Value) -> Result<RawHealth, SpecError> {
        let mut h = RawHealth::default();
        for (k, v) in in_file_order(self.table(key, v)?) {
            let name = format!("{key}.{}", k.get_ref());
            match k.get_ref().as_ref() {
                "kind" => {
                    let kinds = [("tcp", HealthKind::Tcp), ("http", HealthKind::Http)];
                    h.kind = Some(self.choice(&name, v, &kinds)?);
                }
                "path" => {
                    let p = self.string(&name, v)?;
                    if !p.starts_with('/') {
                        return Err(self.bad(&name, v, format!("{p:?} must start with '/'")));
                    }
                    // It goes into the request line of an HTTP GET as it is.
                    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        return Err(self.bad(
                            &name,
                            v,
                            format!("{p:?} contains spaces or control characters"),
                        ));
                    }
                    h.path = Some(At {
                        v: p.to_string(),
                        line: self.line_of(v),
                    });
                }
                "port" => h.port = Some(self.int(&name, v, 1..=65535)? as u16),
                "interval_ms" => h.interval_ms = Some(self.int(&name, v, INTERVAL_MS)? as u32),
                _ => return Err(self.unknown(k, "health.", &HEALTH_KEYS)),
            }
        }
        Ok(h)
    }

    /// A table of strings: extra environment for the members.
    fn env(&self, key: &str, v: &Value) -> Result<Vec<(String, String)>, SpecError> {
        let mut env = Vec::new();
        for (k, v) in in_file_order(self.table(key, v)?) {
            let var: &str = k.get_ref();
            let name = format!("{key}.{var}");
            let bad_key = |why: &str| SpecError::BadValue {
                line: self.line_of(k),
                key: name.clone(),
                why: why.to_string(),
            };
            if var.is_empty() || var.contains(['=', '\0']) {
                return Err(bad_key("not a variable name (empty, or with '=' or NUL)"));
            }
            if var == RESERVED_ENV {
                return Err(bad_key("set by docknetd for each member (its own pipe)"));
            }
            env.push((var.to_string(), self.string(&name, v)?.to_string()));
        }
        Ok(env)
    }
}

/// A table's entries in the order of the file (the table keeps them sorted by name), so
/// that of several errors the first one in the file is reported.
fn in_file_order<'v, 'i>(t: &'v DeTable<'i>) -> Vec<(&'v Key<'i>, &'v Value<'i>)> {
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// Levenshtein distance, for "did you mean" on unknown keys (short strings only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The parser's messages may span lines (TOML's `Display` draws the source); keep one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Check that `at` (key `key`) is an executable file.
fn check_executable(key: &str, at: &At<PathBuf>) -> Result<(), SpecError> {
    let bad = |why: String| SpecError::BadPath {
        line: at.line,
        key: key.to_string(),
        path: at.v.clone(),
        why,
    };
    let m = std::fs::metadata(&at.v).map_err(|e| bad(io_why(&e)))?;
    if !m.is_file() {
        return Err(bad("is not a file".into()));
    }
    if m.permissions().mode() & 0o111 == 0 {
        return Err(bad("is not executable".into()));
    }
    Ok(())
}

/// Check that `at` (key `image`) is an OCI image layout (as `docknet-image` writes).
fn check_image(key: &str, at: &At<PathBuf>) -> Result<(), SpecError> {
    let bad = |why: String| SpecError::BadPath {
        line: at.line,
        key: key.to_string(),
        path: at.v.clone(),
        why,
    };
    let m = std::fs::metadata(&at.v).map_err(|e| bad(io_why(&e)))?;
    if !m.is_dir() {
        return Err(bad("is not a directory (an OCI image layout)".into()));
    }
    if !at.v.join("index.json").is_file() {
        return Err(bad(
            "is not an OCI image layout (no index.json; docknet-image makes one)".into(),
        ));
    }
    Ok(())
}

fn io_why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        _ => format!("cannot be read ({e})"),
    }
}

impl ClusterSpec {
    /// Read a cluster file (`text`, from the folder `base_dir`, against which relative
    /// paths are made absolute). Unknown keys are errors; every error is one line naming
    /// the key and its line (see [`SpecError`]). The binary or image (and `nat_binary`)
    /// must exist: better said now than by a supervisor restarting members in a loop.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<ClusterSpec, SpecError> {
        // `Path::new("web.toml").parent()` is "", which `absolute` refuses: it means here.
        let base = if base_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base_dir
        };
        let doc = Doc { text, base };
        let top = DeTable::parse(text).map_err(|e| {
            let mut message = one_line(e.message());
            // What the parser tripped on, when short: the key of "duplicate key".
            let at = e.span().and_then(|s| text.get(s)).unwrap_or("");
            if !at.trim().is_empty() && at.len() <= 40 && !at.contains('\n') {
                message.push_str(&format!(" (at {at:?})"));
            }
            SpecError::Syntax {
                line: e.span().map(|s| doc.line(s.start)),
                message,
            }
        })?;
        let mut f = Fields::default();
        for (k, v) in in_file_order(top.get_ref()) {
            let key: &str = k.get_ref();
            let line = doc.line_of(k);
            match key {
                "name" => {
                    let s = doc.string(key, v)?;
                    validate_name(s).map_err(|e| doc.bad(key, v, e))?;
                    f.name = Some(s.to_string());
                }
                "vip" => {
                    f.vip = Some(At {
                        v: doc.vip(key, v)?,
                        line,
                    })
                }
                "vip_prefix" => f.vip_prefix = Some(doc.int(key, v, 1..=30)? as u8),
                "ports" => {
                    f.ports = Some(At {
                        v: doc.ports(key, v)?,
                        line,
                    })
                }
                "replicas" => {
                    f.replicas = Some(At {
                        v: doc.int(key, v, 1..=i64::from(MAX_REPLICAS))? as u32,
                        line,
                    })
                }
                "policy" => {
                    let choices = POLICIES.map(|p| (p, p));
                    f.policy = Some(doc.choice(key, v, &choices)?.to_string());
                }
                "binary" => f.binary = Some(doc.path(key, v)?),
                "image" => f.image = Some(doc.path(key, v)?),
                "tag" => {
                    let t = doc.string(key, v)?;
                    if t.is_empty() {
                        return Err(doc.bad(key, v, "is empty"));
                    }
                    f.tag = Some(At {
                        v: t.to_string(),
                        line,
                    });
                }
                "args" => {
                    f.args = doc
                        .array(key, v)?
                        .iter()
                        .map(|a| doc.string(key, a).map(str::to_string))
                        .collect::<Result<_, _>>()?
                }
                "subnet" => {
                    f.subnet = Some(At {
                        v: doc.subnet(key, v)?,
                        line,
                    })
                }
                "health" => f.health = Some(doc.health(key, v)?),
                "mode" => {
                    let modes = [("dnat", NatMode::Dnat), ("fullnat", NatMode::Fullnat)];
                    f.mode = Some(doc.choice(key, v, &modes)?);
                }
                "conn_capacity" => f.conn_capacity = Some(doc.int(key, v, CONN_CAPACITY)? as u32),
                "weight" => f.weight = Some(doc.int(key, v, WEIGHT)? as u32),
                "nat_binary" => f.nat_binary = Some(doc.path(key, v)?),
                "env" => f.env = doc.env(key, v)?,
                _ => return Err(doc.unknown(k, "", &KEYS)),
            }
        }
        f.finish()
    }
}

impl Fields {
    /// The checks that involve several keys, the defaults, and last the files named
    /// (so that a file with a typo is not reported as a missing binary).
    fn finish(self) -> Result<ClusterSpec, SpecError> {
        let missing = |key: &str| SpecError::Missing {
            key: key.to_string(),
            why: None,
        };
        let name = self.name.ok_or_else(|| missing("name"))?;
        let vip = self.vip.ok_or_else(|| missing("vip"))?;
        let replicas = self.replicas.ok_or_else(|| missing("replicas"))?;
        let subnet = self.subnet.ok_or_else(|| missing("subnet"))?;
        let (vip_ip, vip_port) = vip.v;

        // What the members run: a binary, or an image with its tag.
        let run = match (&self.binary, &self.image) {
            (Some(b), Some(i)) => {
                let ((key, line), (other, other_line)) = if b.line >= i.line {
                    (("binary", b.line), ("image", i.line))
                } else {
                    (("image", i.line), ("binary", b.line))
                };
                return Err(SpecError::Conflict {
                    line,
                    key: key.into(),
                    other: other.into(),
                    other_line,
                });
            }
            (None, None) => {
                return Err(SpecError::Missing {
                    key: "binary".into(),
                    why: Some(
                        "give binary = \"PATH\", or image = \"DIR\" with tag = \"NAME:TAG\"".into(),
                    ),
                })
            }
            (Some(b), None) => {
                if let Some(t) = &self.tag {
                    return Err(SpecError::BadValue {
                        line: t.line,
                        key: "tag".into(),
                        why: "only goes with image = \"DIR\" (members run the binary)".into(),
                    });
                }
                MemberRun::Binary {
                    path: b.v.clone(),
                    args: self.args,
                }
            }
            (None, Some(i)) => {
                let tag = self.tag.ok_or_else(|| SpecError::Missing {
                    key: "tag".into(),
                    why: Some(
                        "an image needs tag = \"NAME:TAG\" (which image of the layout)".into(),
                    ),
                })?;
                MemberRun::Image {
                    dir: i.v.clone(),
                    tag: tag.v,
                    args: self.args,
                }
            }
        };

        // The VIP's ports: in `vip`, or in `ports`, not both.
        let ports = match (vip_port, self.ports) {
            (Some(_), Some(p)) => {
                return Err(SpecError::BadValue {
                    line: p.line,
                    key: "ports".into(),
                    why: format!(
                        "vip (line {}) names a port already; give vip = \"A.B.C.D\" with ports, or vip = \"A.B.C.D:PORT\" alone",
                        vip.line
                    ),
                })
            }
            (Some(p), None) => vec![p],
            (None, Some(p)) => p.v,
            (None, None) => {
                return Err(SpecError::Missing {
                    key: "ports".into(),
                    why: Some(format!(
                        "vip (line {}) has no port: write vip = \"{vip_ip}:PORT\", or ports = [\"80\", \"53/udp\"]",
                        vip.line
                    )),
                })
            }
        };

        // The VIP is the NAT pipe's address: a host of its /vip_prefix.
        let vip_prefix = self.vip_prefix.unwrap_or(DEFAULT_VIP_PREFIX);
        net::validate_host_addr(vip_ip, vip_prefix).map_err(|e| {
            let from = if self.vip_prefix.is_none() {
                " (the NAT's pipe is a /16 unless vip_prefix says otherwise)"
            } else {
                ""
            };
            SpecError::BadValue {
                line: vip.line,
                key: "vip".into(),
                why: format!("{e}{from}"),
            }
        })?;
        let (net_ip, prefix) = subnet.v;
        let mask = net::netmask(prefix);
        if u32::from(vip_ip) & mask == u32::from(net_ip) {
            return Err(SpecError::BadValue {
                line: vip.line,
                key: "vip".into(),
                why: format!(
                    "{vip_ip} is inside the member subnet {net_ip}/{prefix} (line {}); the VIP must be outside it",
                    subnet.line
                ),
            });
        }
        // All but the network, broadcast and gateway addresses.
        let room = (1u64 << (32 - prefix)) - 3;
        if u64::from(replicas.v) > room {
            return Err(SpecError::BadValue {
                line: replicas.line,
                key: "replicas".into(),
                why: format!(
                    "{} members do not fit in subnet {net_ip}/{prefix} (line {}): it has {room} member addresses besides the gateway",
                    replicas.v, subnet.line
                ),
            });
        }

        let raw = self.health.unwrap_or_default();
        let kind = raw.kind.unwrap_or(HealthKind::Http);
        if let (HealthKind::Tcp, Some(p)) = (kind, &raw.path) {
            return Err(SpecError::BadValue {
                line: p.line,
                key: "health.path".into(),
                why: "only goes with kind = \"http\"".into(),
            });
        }
        if raw.port.is_none() && !ports.iter().any(|p| p.proto == Proto::Tcp) {
            return Err(SpecError::Missing {
                key: "health.port".into(),
                why: Some(
                    "the VIP has no TCP port to check members on; give health = { port = N }"
                        .into(),
                ),
            });
        }
        let health = HealthSpec {
            kind,
            path: raw.path.map(|p| p.v).unwrap_or_else(|| "/".into()),
            port: raw.port,
            interval_ms: raw.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS),
        };

        if let Some(b) = &self.binary {
            check_executable("binary", b)?;
        }
        if let Some(i) = &self.image {
            check_image("image", i)?;
        }
        if let Some(n) = &self.nat_binary {
            check_executable("nat_binary", n)?;
        }

        Ok(ClusterSpec {
            name,
            vip: vip_ip,
            vip_prefix,
            ports,
            replicas: replicas.v,
            policy: self.policy.unwrap_or_else(|| POLICIES[0].into()),
            run,
            subnet: format!("{net_ip}/{prefix}"),
            health,
            mode: self.mode.unwrap_or(NatMode::Dnat),
            conn_capacity: self.conn_capacity.unwrap_or(DEFAULT_CONN_CAPACITY),
            weight: self.weight.unwrap_or(1),
            nat_binary: self.nat_binary.map(|n| n.v),
            env: self.env,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with what cluster files name: `target/release/dn-httpd` and `dn-nat`
    /// (executable), `plain` (not executable), `oci/web/index.json` (an image layout).
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("dn-spec-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("target/release")).unwrap();
            std::fs::create_dir_all(d.join("oci/web")).unwrap();
            std::fs::write(d.join("oci/web/index.json"), "{}").unwrap();
            for (f, mode) in [
                ("target/release/dn-httpd", 0o755),
                ("dn-nat", 0o755),
                ("plain", 0o644),
            ] {
                std::fs::write(d.join(f), "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
            }
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const EXAMPLE: &str = r#"name = "web"
vip = "10.88.0.100:80"
vip_prefix = 16
replicas = 3
policy = "maglev"
binary = "target/release/dn-httpd"
args = ["--work-us", "10"]
subnet = "10.88.1.0/24"
health = { kind = "http", path = "/", interval_ms = 200 }
mode = "dnat"
conn_capacity = 65_536
weight = 1
nat_binary = "dn-nat"
env = { RUST_LOG = "info" }
"#;

    /// The error for `text` (from `dir`), checked to be one line.
    fn err_in(dir: &Dir, text: &str) -> SpecError {
        let e = ClusterSpec::from_toml(text, &dir.0).expect_err(text);
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "not one line: {msg:?}");
        e
    }

    /// `text` with its line starting `key =` replaced by `line` (or dropped if empty).
    fn with(key: &str, line: &str) -> String {
        let mut found = false;
        let out: Vec<&str> = EXAMPLE
            .lines()
            .filter_map(|l| {
                if l.starts_with(&format!("{key} =")) {
                    found = true;
                    (!line.is_empty()).then_some(line)
                } else {
                    Some(l)
                }
            })
            .collect();
        assert!(found, "no key {key} in the example");
        out.join("\n") + "\n"
    }

    #[track_caller]
    fn expect(e: SpecError, line: Option<usize>, msg: &str) {
        assert_eq!(e.to_string(), msg, "{e:?}");
        assert_eq!(e.line(), line, "{e:?}");
    }

    #[test]
    fn the_example_parses() {
        let d = Dir::new("example");
        let s = ClusterSpec::from_toml(EXAMPLE, &d.0).unwrap();
        assert_eq!(
            s,
            ClusterSpec {
                name: "web".into(),
                vip: Ipv4Addr::new(10, 88, 0, 100),
                vip_prefix: 16,
                ports: vec![VipPort {
                    port: 80,
                    proto: Proto::Tcp
                }],
                replicas: 3,
                policy: "maglev".into(),
                run: MemberRun::Binary {
                    path: d.0.join("target/release/dn-httpd"),
                    args: vec!["--work-us".into(), "10".into()],
                },
                subnet: "10.88.1.0/24".into(),
                health: HealthSpec {
                    kind: HealthKind::Http,
                    path: "/".into(),
                    port: None,
                    interval_ms: 200,
                },
                mode: NatMode::Dnat,
                conn_capacity: 65536,
                weight: 1,
                nat_binary: Some(d.0.join("dn-nat")),
                env: vec![("RUST_LOG".into(), "info".into())],
            }
        );
        // It goes to docknetd as JSON and comes back the same.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ClusterSpec>(&json).unwrap(), s);
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let d = Dir::new("defaults");
        let s = ClusterSpec::from_toml(
            "name = \"a\"\nvip = \"10.88.0.100:8080/tcp\"\nreplicas = 1\nsubnet = \"10.88.1.0/24\"\nbinary = \"dn-nat\"\n",
            &d.0,
        )
        .unwrap();
        assert_eq!(s.vip_prefix, 16);
        assert_eq!(s.policy, "maglev");
        assert_eq!(s.mode, NatMode::Dnat);
        assert_eq!(s.conn_capacity, DEFAULT_CONN_CAPACITY);
        assert_eq!(s.weight, 1);
        assert_eq!(s.nat_binary, None);
        assert!(s.env.is_empty());
        assert_eq!(
            s.health,
            HealthSpec {
                kind: HealthKind::Http,
                path: "/".into(),
                port: None,
                interval_ms: DEFAULT_INTERVAL_MS,
            }
        );
        assert_eq!(
            s.run,
            MemberRun::Binary {
                path: d.0.join("dn-nat"),
                args: vec![]
            }
        );
    }

    #[test]
    fn ports_list_tables_and_images() {
        let d = Dir::new("ports");
        let text = with(
            "vip",
            "vip = \"10.88.0.100\"\nports = [\"80\", \"443/tcp\", \"53/udp\", 8080]",
        );
        let text = text.replace(
            "binary = \"target/release/dn-httpd\"",
            "image = \"oci/web\"\ntag = \"web:1\"",
        );
        // A `[health]` section instead of the inline table (last: it takes the keys below it).
        let text = text.replace(
            "health = { kind = \"http\", path = \"/\", interval_ms = 200 }\n",
            "",
        ) + "[health]\nkind = \"tcp\"\nport = 443\n";
        let s = ClusterSpec::from_toml(&text, &d.0).unwrap();
        let p = |port, proto| VipPort { port, proto };
        assert_eq!(
            s.ports,
            vec![
                p(80, Proto::Tcp),
                p(443, Proto::Tcp),
                p(53, Proto::Udp),
                p(8080, Proto::Tcp)
            ]
        );
        assert_eq!(
            s.run,
            MemberRun::Image {
                dir: d.0.join("oci/web"),
                tag: "web:1".into(),
                args: vec!["--work-us".into(), "10".into()],
            }
        );
        assert_eq!(s.health.kind, HealthKind::Tcp);
        assert_eq!(s.health.port, Some(443));
        assert_eq!(s.health.interval_ms, DEFAULT_INTERVAL_MS);
    }

    #[test]
    fn relative_paths_are_from_the_files_folder() {
        let d = Dir::new("paths");
        // An absolute path stays as it is; `..` is kept (no symlinks resolved).
        let abs = d.0.join("dn-nat");
        let text = with(
            "binary",
            &format!("binary = {:?}", abs.display().to_string()),
        );
        let text = text.replace(
            "nat_binary = \"dn-nat\"",
            "nat_binary = \"target/../dn-nat\"",
        );
        let s = ClusterSpec::from_toml(&text, &d.0).unwrap();
        assert!(matches!(&s.run, MemberRun::Binary { path, .. } if *path == abs));
        assert_eq!(s.nat_binary, Some(d.0.join("target/../dn-nat")));
        // From a relative folder the paths still come out absolute (docknetd runs elsewhere).
        let cwd = std::env::current_dir().unwrap();
        let s = ClusterSpec::from_toml(
            &with(
                "binary",
                &format!("binary = {:?}", abs.display().to_string()),
            ),
            Path::new(""),
        );
        // The nat_binary "dn-nat" is not in the test's working directory.
        let e = s.unwrap_err();
        expect(
            e,
            Some(13),
            &format!(
                "line 13: key \"nat_binary\": {} does not exist",
                cwd.join("dn-nat").display()
            ),
        );
        // A binary that is missing, not a file, not executable; an image without index.json.
        for (line, want) in [
            (
                "binary = \"target/release/dn-httpdd\"",
                "target/release/dn-httpdd does not exist",
            ),
            ("binary = \"target\"", "target is not a file"),
            ("binary = \"plain\"", "plain is not executable"),
        ] {
            let e = err_in(&d, &with("binary", line));
            let (file, why) = want.split_once(' ').unwrap();
            expect(
                e,
                Some(6),
                &format!("line 6: key \"binary\": {} {why}", d.0.join(file).display()),
            );
        }
        let e = err_in(&d, &with("binary", "image = \"target\"\ntag = \"web:1\""));
        expect(
            e,
            Some(6),
            &format!(
                "line 6: key \"image\": {} is not an OCI image layout (no index.json; docknet-image makes one)",
                d.0.join("target").display()
            ),
        );
    }

    #[test]
    fn bad_files_name_the_key_and_line() {
        let d = Dir::new("bad");
        let cases: Vec<(String, Option<usize>, &str)> = vec![
            // Syntax: the line where the parser stopped.
            (
                with("replicas", "replicas = = 3"),
                Some(4),
                "line 4: TOML syntax error:",
            ),
            (
                with("policy", "policy = \"maglev"),
                Some(5),
                "line 5: TOML syntax error:",
            ),
            (
                with("weight", "weight = 1\nname = \"again\""),
                Some(13),
                "line 13: TOML syntax error: duplicate key (at \"name\")",
            ),
            (
                with("replicas", "replica = 3"),
                Some(4),
                "line 4: unknown key \"replica\" (did you mean \"replicas\"?)",
            ),
            (
                with("weight", "weight = 1\n[extra]\nx = 1"),
                Some(13),
                "line 13: unknown key \"extra\"",
            ),
            (
                with(
                    "health",
                    "health = { kind = \"http\",\n  pth = \"/\" }",
                ),
                Some(10),
                "line 10: unknown key \"health.pth\" (did you mean \"health.path\"?)",
            ),
            (
                with("vip", "vip = \"10.88.0.300:80\""),
                Some(2),
                "line 2: key \"vip\": \"10.88.0.300:80\" is not A.B.C.D, A.B.C.D:PORT or A.B.C.D:PORT/udp (IPv4)",
            ),
            (
                with("vip", "vip = \"10.88.0.100:80/sctp\""),
                Some(2),
                "line 2: key \"vip\": \"80/sctp\" is not a port (PORT, PORT/tcp or PORT/udp, PORT 1-65535)",
            ),
            (
                with("vip", "vip = \"10.88.0.100:0\""),
                Some(2),
                "line 2: key \"vip\": \"0\" is not a port (PORT, PORT/tcp or PORT/udp, PORT 1-65535)",
            ),
            (
                with("vip", "vip = \"10.88.255.255:80\""),
                Some(2),
                "line 2: key \"vip\": 10.88.255.255 is the broadcast address of 10.88.0.0/16",
            ),
            (
                with("vip", "vip = \"10.88.0.0:80\"").replace("vip_prefix = 16\n", ""),
                Some(2),
                "line 2: key \"vip\": 10.88.0.0 is the network address of 10.88.0.0/16 (the NAT's pipe is a /16 unless vip_prefix says otherwise)",
            ),
            (
                with("vip", "vip = \"10.88.1.7:80\""),
                Some(2),
                "line 2: key \"vip\": 10.88.1.7 is inside the member subnet 10.88.1.0/24 (line 8); the VIP must be outside it",
            ),
            (
                with("vip", "vip = 80"),
                Some(2),
                "line 2: key \"vip\": expected a string, found an integer",
            ),
            (
                with("vip", "vip = \"10.88.0.100\""),
                None,
                "missing key \"ports\": vip (line 2) has no port: write vip = \"10.88.0.100:PORT\", or ports = [\"80\", \"53/udp\"]",
            ),
            (
                with("vip", "vip = \"10.88.0.100:80\"\nports = [\"81\"]"),
                Some(3),
                "line 3: key \"ports\": vip (line 2) names a port already; give vip = \"A.B.C.D\" with ports, or vip = \"A.B.C.D:PORT\" alone",
            ),
            (
                with("vip", "vip = \"10.88.0.100\"\nports = [\n  \"53/udp\",\n  \"53/udp\",\n]"),
                Some(5),
                "line 5: key \"ports\": 53/udp is listed twice",
            ),
            (
                with("vip", "vip = \"10.88.0.100\"\nports = [\"53/udp\"]"),
                None,
                "missing key \"health.port\": the VIP has no TCP port to check members on; give health = { port = N }",
            ),
            (
                with("vip", "vip = \"10.88.0.100\"\nports = []"),
                Some(3),
                "line 3: key \"ports\": lists no port",
            ),
            (
                with("replicas", "replicas = 0"),
                Some(4),
                "line 4: key \"replicas\": 0 is out of range (1..=250)",
            ),
            (
                with("replicas", "replicas = -1"),
                Some(4),
                "line 4: key \"replicas\": -1 is out of range (1..=250)",
            ),
            (
                with("replicas", "replicas = 99999999999999999999999"),
                Some(4),
                "line 4: key \"replicas\": 99999999999999999999999 is out of range (1..=250)",
            ),
            (
                with("replicas", "replicas = 3.0"),
                Some(4),
                "line 4: key \"replicas\": expected an integer, found a float",
            ),
            (
                with("replicas", "replicas = 6").replace("10.88.1.0/24", "10.88.1.0/29"),
                Some(4),
                "line 4: key \"replicas\": 6 members do not fit in subnet 10.88.1.0/29 (line 8): it has 5 member addresses besides the gateway",
            ),
            (
                with("binary", "binary = \"target/release/dn-httpd\"\nimage = \"oci/web\""),
                Some(7),
                "line 7: key \"image\": not allowed together with \"binary\" (line 6); give one of them",
            ),
            (
                with("binary", ""),
                None,
                "missing key \"binary\": give binary = \"PATH\", or image = \"DIR\" with tag = \"NAME:TAG\"",
            ),
            (
                with("binary", "image = \"oci/web\""),
                None,
                "missing key \"tag\": an image needs tag = \"NAME:TAG\" (which image of the layout)",
            ),
            (
                with("binary", "binary = \"target/release/dn-httpd\"\ntag = \"web:1\""),
                Some(7),
                "line 7: key \"tag\": only goes with image = \"DIR\" (members run the binary)",
            ),
            (
                with("policy", "policy = \"random\""),
                Some(5),
                "line 5: key \"policy\": \"random\" is not one of maglev, rr, least-conn",
            ),
            (
                with("mode", "mode = \"snat\""),
                Some(10),
                "line 10: key \"mode\": \"snat\" is not one of dnat, fullnat",
            ),
            (
                with("name", "name = \"my web\""),
                Some(1),
                "line 1: key \"name\": \"my web\" is not a valid cluster name (1 to 24 characters of A-Z a-z 0-9 _ -)",
            ),
            (
                with("name", "name = \"abcdefghijklmnopqrstuvwxy\""),
                Some(1),
                "line 1: key \"name\": \"abcdefghijklmnopqrstuvwxy\" is not a valid cluster name (1 to 24 characters of A-Z a-z 0-9 _ -)",
            ),
            (with("name", ""), None, "missing key \"name\""),
            (with("vip", ""), None, "missing key \"vip\""),
            (with("replicas", ""), None, "missing key \"replicas\""),
            (with("subnet", ""), None, "missing key \"subnet\""),
            (
                with("subnet", "subnet = \"10.88.1.5/24\""),
                Some(8),
                "line 8: key \"subnet\": \"10.88.1.5/24\" is not a network address (the network of 10.88.1.5/24 is 10.88.1.0/24)",
            ),
            (
                with("subnet", "subnet = \"10.88.1.0/31\""),
                Some(8),
                "line 8: key \"subnet\": invalid address \"10.88.1.0/31\": prefix length must be 1..=30, got 31",
            ),
            (
                with("subnet", "subnet = \"224.0.0.0/24\""),
                Some(8),
                "line 8: key \"subnet\": no member addresses in 224.0.0.0/24: 224.0.0.2 is not a unicast host address",
            ),
            (
                with("health", "health = { path = \"index.html\" }"),
                Some(9),
                "line 9: key \"health.path\": \"index.html\" must start with '/'",
            ),
            (
                with("health", "health = { kind = \"tcp\", path = \"/\" }"),
                Some(9),
                "line 9: key \"health.path\": only goes with kind = \"http\"",
            ),
            (
                with("health", "health = { interval_ms = 5 }"),
                Some(9),
                "line 9: key \"health.interval_ms\": 5 is out of range (10..=60000)",
            ),
            (
                with("health", "health = { kind = \"icmp\" }"),
                Some(9),
                "line 9: key \"health.kind\": \"icmp\" is not one of tcp, http",
            ),
            (
                with("health", "health = \"http\""),
                Some(9),
                "line 9: key \"health\": expected a table, found a string",
            ),
            (
                with("conn_capacity", "conn_capacity = 8"),
                Some(11),
                "line 11: key \"conn_capacity\": 8 is out of range (16..=4000000)",
            ),
            (
                with("weight", "weight = 0x3e9"),
                Some(12),
                "line 12: key \"weight\": 0x3e9 is out of range (1..=1000)",
            ),
            (
                with("args", "args = [\"--work-us\", 10]"),
                Some(7),
                "line 7: key \"args\": expected a string, found an integer",
            ),
            (
                with("env", "env = { DOCKNET_PIPE = \"/tmp/x\" }"),
                Some(14),
                "line 14: key \"env.DOCKNET_PIPE\": set by docknetd for each member (its own pipe)",
            ),
            (
                with("env", "env = { RUST_LOG = 1 }"),
                Some(14),
                "line 14: key \"env.RUST_LOG\": expected a string, found an integer",
            ),
            (
                with("nat_binary", "nat_binary = \"\""),
                Some(13),
                "line 13: key \"nat_binary\": is empty",
            ),
            (
                with("args", "args = [\"a\\u0000b\"]"),
                Some(7),
                "line 7: key \"args\": contains a NUL character",
            ),
        ];
        for (text, line, want) in cases {
            let e = err_in(&d, &text);
            let msg = e.to_string();
            assert!(msg.starts_with(want), "{text}\n got: {msg}\nwant: {want}");
            if !matches!(e, SpecError::Syntax { .. }) {
                assert_eq!(msg, want, "{text}");
            }
            assert_eq!(e.line(), line, "{text}\n{msg}");
        }
        // Of two errors, the first in the file.
        let text = with("weight", "wieght = 1").replace("policy = \"maglev\"", "policy = \"x\"");
        expect(
            err_in(&d, &text),
            Some(5),
            "line 5: key \"policy\": \"x\" is not one of maglev, rr, least-conn",
        );
    }

    #[test]
    fn vip_ports_parse_and_print() {
        for (s, port, proto) in [
            ("80", 80, Proto::Tcp),
            ("443/tcp", 443, Proto::Tcp),
            ("53/udp", 53, Proto::Udp),
            ("65535", 65535, Proto::Tcp),
        ] {
            let p: VipPort = s.parse().unwrap();
            assert_eq!(p, VipPort { port, proto });
            assert_eq!(p.to_string().parse::<VipPort>(), Ok(p));
        }
        for bad in [
            "", "0", "+80", "65536", "80/", "80/TCP", "/udp", "8 0", "80/udp/x",
        ] {
            assert!(bad.parse::<VipPort>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "web", "web_1-x", "abcdefghijklmnopqrstuvwx"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "abcdefghijklmnopqrstuvwxy"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}

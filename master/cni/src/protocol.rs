//! The CNI protocol as `docknet-cni` speaks it (spec 1.1.0, and the result formats of
//! 1.0.0 and 0.4.0): the versions, the error object and its well-known codes, the
//! success result and its conversion between versions, the VERSION answer, and the
//! environment variables and `CNI_ARGS` a runtime passes. Everything on the wire is here,
//! as serde types; what the commands do is in [`crate::plugin`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A CNI specification version this plugin speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// Results carry `ips[].version`; CHECK and `prevResult` on DEL exist; no STATUS/GC.
    V0_4_0,
    /// `ips[].version` gone; interfaces are `name`, `mac`, `sandbox`.
    V1_0_0,
    /// Adds STATUS and GC, `interfaces[].mtu`/`socketPath`/`pciID` and route attributes.
    V1_1_0,
}

/// What VERSION answers, lowest first.
pub const SUPPORTED: [Version; 3] = [Version::V0_4_0, Version::V1_0_0, Version::V1_1_0];

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        SUPPORTED.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// The newest version: what errors say when the input names none we know.
    pub fn latest() -> Version {
        Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CNI's well-known error codes (spec section 5, "Error") and this plugin's own (100+).
pub mod code {
    /// The configuration's `cniVersion` is not one this plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field of the network configuration is not supported (the message names it).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container is unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A required environment variable is missing or invalid (the message names it).
    pub const INVALID_ENV: u32 = 4;
    /// Reading the configuration, or another local I/O, failed.
    pub const IO_FAILURE: u32 = 5;
    /// The configuration (or a result) is not valid JSON of the expected shape.
    pub const DECODE_FAILURE: u32 = 6;
    /// The network configuration is invalid.
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition (docknetd not answering): retry later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD (docknetd unreachable, IPAM not there).
    pub const NOT_AVAILABLE: u32 = 50;
    /// docknetd refused a request (a name or address taken, a bad owner, ...).
    pub const DOCKNETD_REFUSED: u32 = 100;
    /// CHECK: the attachment is missing or differs from `prevResult`.
    pub const CHECK_FAILED: u32 = 101;
    /// The delegated IPAM plugin failed without a CNI error of its own.
    pub const IPAM_FAILED: u32 = 102;
    /// ADD for an attachment (container id + interface name) that exists already.
    pub const ATTACHMENT_EXISTS: u32 = 103;
}

/// A CNI error: printed on stdout as `{"cniVersion","code","msg","details"}`, exit 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// The longer story (may be empty).
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object as the spec lays it out, in `version`'s terms.
    pub fn to_json(&self, version: &str) -> Value {
        serde_json::json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

/// An error object another plugin (the delegated IPAM) printed.
#[derive(Debug, Deserialize)]
pub struct ForeignError {
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// The answer to VERSION.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

impl VersionResult {
    /// Ours, echoing the version the runtime asked with.
    pub fn ours(asked: &str) -> VersionResult {
        VersionResult {
            cni_version: asked.to_string(),
            supported_versions: SUPPORTED.iter().map(|v| v.as_str().to_string()).collect(),
        }
    }
}

fn is_empty<T>(v: &[T]) -> bool {
    v.is_empty()
}

/// One interface of a result. The 1.1.0 fields are dropped when converting to older
/// versions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0: for a DockNet pipe, its directory (what a service gets as `DOCKNET_PIPE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// 1.1.0.
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// One address of a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"`: in 0.4.0 results only (read and ignored, written for 0.4.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation, e.g. `10.88.5.2/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces` (absent in a delegated IPAM's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result. The attributes after `gw` are 1.1.0's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

/// DNS settings of a result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// An ADD result (also a `prevResult`, and, without `interfaces`, a delegated IPAM's
/// result). Held in 1.1.0's terms; [`SuccessResult::converted`] writes it for a version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuccessResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

impl SuccessResult {
    /// Read a result (a `prevResult`, an IPAM's answer) given in any version we speak.
    /// `what` names it in the error (e.g. "prevResult").
    pub fn from_value(v: &Value, what: &str) -> Result<SuccessResult, CniError> {
        let mut r: SuccessResult = serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(code::DECODE_FAILURE, format!("cannot decode {what}: {e}"))
        })?;
        if r.dns.as_ref().is_some_and(Dns::is_empty) {
            r.dns = None;
        }
        for ip in &r.ips {
            parse_cidr_any(&ip.address).map_err(|e| {
                CniError::new(
                    code::DECODE_FAILURE,
                    format!("cannot decode {what}: ips[].address: {e}"),
                )
            })?;
        }
        Ok(r)
    }

    /// This result in `version`'s format: `cniVersion` set, fields the version does not
    /// have dropped (0.4.0 and 1.0.0 have no interface MTU, socket path, PCI id or route
    /// attributes), `ips[].version` written for 0.4.0 only.
    pub fn converted(&self, version: Version) -> SuccessResult {
        let mut r = self.clone();
        r.cni_version = version.to_string();
        if version < Version::V1_1_0 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for rt in &mut r.routes {
                rt.mtu = None;
                rt.advmss = None;
                rt.priority = None;
                rt.table = None;
                rt.scope = None;
            }
        }
        for ip in &mut r.ips {
            ip.version = if version == Version::V0_4_0 {
                match parse_cidr_any(&ip.address) {
                    Ok((IpAddr::V6(_), _)) => Some("6".into()),
                    _ => Some("4".into()),
                }
            } else {
                None
            };
        }
        r
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a SuccessResult always serializes")
    }
}

/// `A/N` for IPv4 or IPv6.
pub fn parse_cidr_any(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not in CIDR notation (ADDRESS/PREFIX)"))?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} in {s:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = n
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("{n:?} in {s:?} is not a prefix length 0..={max}"))?;
    Ok((addr, prefix))
}

/// The CNI operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// The environment a runtime runs a plugin with (spec section 2, "Parameters").
#[derive(Clone, Debug, Default)]
pub struct CniEnv {
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS` as given.
    pub args: Option<String>,
    /// `CNI_PATH`, split.
    pub path: Vec<String>,
}

impl CniEnv {
    /// From the process environment (empty variables count as missing).
    pub fn from_process() -> CniEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        CniEnv {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// `CNI_CONTAINERID`, required and valid: starts with an alphanumeric character,
    /// then alphanumerics, `_`, `.` or `-`.
    pub fn container_id(&self) -> Result<&str, CniError> {
        let id = self.container_id.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "CNI_CONTAINERID is missing (required for this command)",
            )
        })?;
        let mut chars = id.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_CONTAINERID {id:?} is invalid: it must start with a letter or digit, followed by letters, digits, _ . -"),
            ));
        }
        Ok(id)
    }

    /// `CNI_IFNAME`, required: 1-15 characters (a Linux interface name), no `/`, `:` or
    /// white space.
    pub fn ifname(&self) -> Result<&str, CniError> {
        let name = self.ifname.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "CNI_IFNAME is missing (required for this command)",
            )
        })?;
        if name.len() > 15
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_IFNAME {name:?} is invalid: 1-15 characters, none of / : or white space"
                ),
            ));
        }
        Ok(name)
    }

    /// `CNI_NETNS`, required.
    pub fn netns(&self) -> Result<&str, CniError> {
        self.netns.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "CNI_NETNS is missing (required for this command)",
            )
        })
    }

    /// `CNI_ARGS` as key/value pairs (`K1=V1;K2=V2`).
    pub fn args(&self) -> Result<BTreeMap<String, String>, CniError> {
        parse_cni_args(self.args.as_deref().unwrap_or(""))
    }
}

/// `CNI_ARGS`: `K1=V1;K2=V2`, empty pairs allowed; a pair without `=` is an error.
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
            )
        })?;
        if k.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {pair:?} has an empty key"),
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_order() {
        for v in SUPPORTED {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::parse("0.3.1"), None);
        assert_eq!(Version::parse("2.0.0"), None);
        assert!(Version::V0_4_0 < Version::V1_0_0 && Version::V1_0_0 < Version::V1_1_0);
    }

    fn sample() -> SuccessResult {
        SuccessResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "net1".into(),
                mac: Some("02:00:0a:58:05:02".into()),
                mtu: Some(9000),
                sandbox: Some("/run/netns/x".into()),
                socket_path: Some("/run/docknet/pipes/cni-x".into()),
                pci_id: None,
            }],
            ips: vec![
                IpConfig {
                    version: None,
                    address: "10.88.5.2/24".into(),
                    gateway: Some("10.88.5.1".into()),
                    interface: Some(0),
                },
                IpConfig {
                    version: None,
                    address: "fd00::2/64".into(),
                    gateway: None,
                    interface: Some(0),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.88.5.1".into()),
                mtu: Some(1500),
                priority: Some(5),
                ..Route::default()
            }],
            dns: None,
        }
    }

    #[test]
    fn conversion_drops_what_older_versions_lack() {
        let r = sample();
        let v11 = r.converted(Version::V1_1_0).to_json();
        assert_eq!(
            v11["interfaces"][0]["socketPath"],
            "/run/docknet/pipes/cni-x"
        );
        assert_eq!(v11["interfaces"][0]["mtu"], 9000);
        assert_eq!(v11["routes"][0]["priority"], 5);
        assert!(v11["ips"][0].get("version").is_none());

        let v10 = r.converted(Version::V1_0_0).to_json();
        assert_eq!(v10["cniVersion"], "1.0.0");
        assert!(v10["interfaces"][0].get("socketPath").is_none());
        assert!(v10["interfaces"][0].get("mtu").is_none());
        assert!(v10["routes"][0].get("priority").is_none());
        assert_eq!(v10["routes"][0]["gw"], "10.88.5.1");
        assert!(v10["ips"][0].get("version").is_none());

        let v04 = r.converted(Version::V0_4_0).to_json();
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert_eq!(v04["ips"][0]["interface"], 0);
        // And back: a 0.4.0 prevResult reads as the same result.
        let back = SuccessResult::from_value(&v04, "prevResult").unwrap();
        assert_eq!(
            back.converted(Version::V1_0_0),
            r.converted(Version::V1_0_0)
        );
    }

    #[test]
    fn bad_prev_result_is_a_decode_error() {
        let e =
            SuccessResult::from_value(&serde_json::json!({"ips": 3}), "prevResult").unwrap_err();
        assert_eq!(e.code, code::DECODE_FAILURE);
        let e = SuccessResult::from_value(
            &serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]}),
            "prevResult",
        )
        .unwrap_err();
        assert_eq!(e.code, code::DECODE_FAILURE);
        assert!(e.msg.contains("ips[].address"), "{e}");
    }

    #[test]
    fn cni_args() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web-1;;X=a=b").unwrap();
        assert_eq!(a["K8S_POD_NAME"], "web-1");
        assert_eq!(a["X"], "a=b");
        assert_eq!(
            parse_cni_args("novalue").unwrap_err().code,
            code::INVALID_ENV
        );
        assert_eq!(parse_cni_args("=v").unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn env_validation() {
        let mut env = CniEnv {
            container_id: Some("abc-1.2_x".into()),
            ifname: Some("net1".into()),
            ..CniEnv::default()
        };
        assert_eq!(env.container_id().unwrap(), "abc-1.2_x");
        assert_eq!(env.ifname().unwrap(), "net1");
        assert_eq!(env.netns().unwrap_err().code, code::INVALID_ENV);
        env.container_id = Some("-bad".into());
        assert!(env
            .container_id()
            .unwrap_err()
            .msg
            .contains("CNI_CONTAINERID"));
        env.container_id = None;
        assert!(env
            .container_id()
            .unwrap_err()
            .msg
            .contains("CNI_CONTAINERID"));
        env.ifname = Some("a/b".into());
        assert!(env.ifname().unwrap_err().msg.contains("CNI_IFNAME"));
        env.ifname = Some("sixteen-chars-xx".into());
        assert!(env.ifname().is_err());
    }
}

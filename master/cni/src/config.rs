//! The network configuration a runtime gives `docknet-cni` on stdin: CNI's fields plus
//! ours (`runDir`, `stateDir`, `owner`, `mtu`, `forwarder`), read from the raw JSON so that the
//! IPAM plugin gets the whole configuration, as delegation requires.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::protocol::{code, CniError, SuccessResult, Version};

/// Where `docknetd` runs unless the configuration says `"runDir"`.
pub const DEFAULT_RUN_DIR: &str = "/run/docknet";
/// Where attachments are recorded unless the configuration says `"stateDir"`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/docknet";
/// The `CNI_ARGS` key that names the pipe's owner (over the configuration's `"owner"`).
pub const OWNER_ARG: &str = "DOCKNET_OWNER";
/// The `CNI_ARGS` key that makes the pipe a forwarder (over the configuration's
/// `"forwarder"` and `args.cni.forwarder`): `true`/`1` or `false`/`0`.
pub const FORWARDER_ARG: &str = "DOCKNET_FORWARDER";

/// The typed part of the configuration.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    #[serde(default)]
    ipam: Option<Ipam>,
    #[serde(default)]
    run_dir: Option<PathBuf>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    forwarder: Option<bool>,
    #[serde(default)]
    args: Option<ConfArgs>,
}

/// `args` (CNI's CONVENTIONS.md "args in network config"; Multus writes a network
/// selection's `cni-args` to `args.cni`): only `forwarder` is ours, the rest (host-local's
/// `ips`) is left to the IPAM plugin.
#[derive(Debug, Deserialize)]
struct ConfArgs {
    #[serde(default)]
    cni: Option<CniConfArgs>,
}

#[derive(Debug, Deserialize)]
struct CniConfArgs {
    #[serde(default)]
    forwarder: Option<bool>,
}

/// The `ipam` section: only its `type` is ours to read; the rest is the IPAM plugin's.
#[derive(Debug, Deserialize)]
struct Ipam {
    #[serde(rename = "type")]
    plugin_type: String,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A decoded network configuration.
#[derive(Debug)]
pub struct NetConf {
    /// The configuration as given (for the IPAM plugin).
    pub raw: Value,
    pub version: Version,
    /// The network's name (`name`).
    pub network: String,
    /// `ipam.type`, if there is an `ipam` section.
    pub ipam_type: Option<String>,
    /// docknetd's run directory.
    pub run_dir: PathBuf,
    /// Where attachments are recorded: `STATE_DIR/NETWORK/PIPE.json`.
    pub state_dir: PathBuf,
    /// `UID[:GID]` owning the pipes (CNI_ARGS `DOCKNET_OWNER` wins).
    pub owner: Option<String>,
    /// IP MTU of the pipes (docknetd's default when absent).
    pub mtu: Option<u32>,
    /// Make the pipes forwarders (may send with foreign source addresses, as a dn-nat in
    /// DNAT mode must): `args.cni.forwarder`, else `forwarder`, else false (CNI_ARGS
    /// `DOCKNET_FORWARDER` wins over both).
    pub forwarder: bool,
}

/// The `cniVersion` of a configuration, if it has a string one.
pub fn version_of(raw: &Value) -> Option<&str> {
    raw.get("cniVersion").and_then(Value::as_str)
}

/// Decode stdin: JSON (code 6), an object with a `cniVersion` we speak (codes 7, 1).
pub fn decode_json(stdin: &[u8]) -> Result<Value, CniError> {
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            format!("the network configuration on stdin is not JSON: {e}"),
        )
    })?;
    if !raw.is_object() {
        return Err(CniError::new(
            code::DECODE_FAILURE,
            "the network configuration on stdin is not a JSON object",
        ));
    }
    Ok(raw)
}

/// The configuration's version, which must be one we speak.
pub fn version(raw: &Value) -> Result<Version, CniError> {
    let v = match raw.get("cniVersion") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("cniVersion must be a string, not {other}"),
            ))
        }
        None => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "the network configuration has no cniVersion",
            ))
        }
    };
    Version::parse(v).ok_or_else(|| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CNI version {v:?} is not supported"),
        )
        .with_details(format!(
            "docknet-cni speaks {}",
            crate::protocol::SUPPORTED.map(|v| v.as_str()).join(", ")
        ))
    })
}

impl NetConf {
    /// Decode a configuration already known to be a JSON object of version `version`.
    pub fn from_value(raw: Value, version: Version) -> Result<NetConf, CniError> {
        let f: Fields = serde_json::from_value(raw.clone()).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("invalid network configuration: {e}"),
            )
        })?;
        let name_ok = f
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && f.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("invalid network name {:?}: it must start with a letter or digit, followed by letters, digits, _ . -", f.name),
            ));
        }
        if f.plugin_type.is_empty() {
            return Err(CniError::new(code::INVALID_CONFIG, "\"type\" is empty"));
        }
        if let Some(ipam) = &f.ipam {
            if ipam.plugin_type.is_empty() || ipam.plugin_type.contains('/') {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "ipam.type {:?} must be a plugin name (no /)",
                        ipam.plugin_type
                    ),
                ));
            }
        }
        for (key, dir) in [("runDir", &f.run_dir), ("stateDir", &f.state_dir)] {
            if let Some(d) = dir {
                if !d.is_absolute() {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("{key} {:?} must be an absolute path", d.display()),
                    ));
                }
            }
        }
        if let Some(o) = &f.owner {
            check_owner(o, "owner")?;
        }
        Ok(NetConf {
            version,
            network: f.name,
            ipam_type: f.ipam.map(|i| i.plugin_type),
            run_dir: f.run_dir.unwrap_or_else(|| DEFAULT_RUN_DIR.into()),
            state_dir: f.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            owner: f.owner,
            mtu: f.mtu,
            forwarder: f
                .args
                .and_then(|a| a.cni)
                .and_then(|c| c.forwarder)
                .or(f.forwarder)
                .unwrap_or(false),
            raw,
        })
    }

    /// `ipam.type`, required for this command.
    pub fn ipam_type(&self) -> Result<&str, CniError> {
        self.ipam_type.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "the network configuration has no \"ipam\" section (docknet-cni takes its addresses from an IPAM plugin, e.g. {\"type\": \"host-local\", \"subnet\": \"10.88.5.0/24\"})",
            )
        })
    }

    /// `prevResult`, if any.
    pub fn prev_result(&self) -> Result<Option<SuccessResult>, CniError> {
        match self.raw.get("prevResult") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => SuccessResult::from_value(v, "prevResult").map(Some),
        }
    }

    /// GC's list of attachments still valid: `cni.dev/valid-attachments` (or the
    /// `cni.dev/attachments` that the 1.1.0 spec text named; libcni sends both). `null`
    /// is an empty list; no list at all is an invalid GC request.
    pub fn valid_attachments(&self) -> Result<Vec<ValidAttachment>, CniError> {
        let v = ["cni.dev/valid-attachments", "cni.dev/attachments"]
            .iter()
            .find_map(|k| self.raw.get(*k).map(|v| (*k, v)));
        match v {
            None => Err(CniError::new(
                code::INVALID_CONFIG,
                "GC needs cni.dev/valid-attachments in the configuration",
            )),
            Some((_, Value::Null)) => Ok(Vec::new()),
            Some((k, v)) => serde_json::from_value(v.clone()).map_err(|e| {
                CniError::new(code::DECODE_FAILURE, format!("cannot decode {k}: {e}"))
            }),
        }
    }

    /// The configuration for the delegated IPAM plugin: the whole of ours, with
    /// `cniVersion` 1.0.0 (the newest Debian 12's `host-local` speaks, and a result
    /// format every version we speak can be made from), and `prevResult` (if any) in
    /// 1.0.0's terms.
    pub fn for_ipam(&self) -> Result<Value, CniError> {
        let mut c = self.raw.clone();
        let obj = c.as_object_mut().expect("checked to be an object");
        obj.insert("cniVersion".into(), Version::V1_0_0.as_str().into());
        if let Some(prev) = self.prev_result()? {
            obj.insert(
                "prevResult".into(),
                prev.converted(Version::V1_0_0).to_json(),
            );
        }
        for k in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            obj.remove(k);
        }
        Ok(c)
    }
}

/// `UID[:GID]` (numbers or names) as docknetd takes it.
pub fn check_owner(o: &str, source: &str) -> Result<(), CniError> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    let ok = match o.split_once(':') {
        Some((u, g)) => part_ok(u) && part_ok(g),
        None => part_ok(o),
    };
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_CONFIG,
            format!("{source} {o:?} is not UID[:GID] (numbers or names)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> Result<NetConf, CniError> {
        let ver = version(&v)?;
        NetConf::from_value(v, ver)
    }

    #[test]
    fn defaults_and_fields() {
        let c = conf(
            json!({"cniVersion": "1.1.0", "name": "dn", "type": "docknet-cni",
            "ipam": {"type": "host-local", "subnet": "10.88.5.0/24"}, "owner": "1000:1000"}),
        )
        .unwrap();
        assert_eq!(c.run_dir, PathBuf::from(DEFAULT_RUN_DIR));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.ipam_type().unwrap(), "host-local");
        assert_eq!(c.owner.as_deref(), Some("1000:1000"));
        let ipam = c.for_ipam().unwrap();
        assert_eq!(ipam["cniVersion"], "1.0.0");
        assert_eq!(ipam["ipam"]["subnet"], "10.88.5.0/24");
    }

    #[test]
    fn forwarder_from_the_key_or_args_cni() {
        let base = json!({"cniVersion": "1.1.0", "name": "dn", "type": "x"});
        assert!(!conf(base.clone()).unwrap().forwarder);
        let mut c = base.clone();
        c["forwarder"] = true.into();
        assert!(conf(c.clone()).unwrap().forwarder);
        // Multus's cni-args land in args.cni and win over the key.
        c["args"] = json!({"cni": {"forwarder": false, "ips": ["10.88.5.9/24"]}});
        assert!(!conf(c.clone()).unwrap().forwarder);
        let mut c = base.clone();
        c["args"] = json!({"cni": {"forwarder": true}});
        assert!(conf(c).unwrap().forwarder);
        let mut c = base;
        c["forwarder"] = "yes".into();
        let e = conf(c).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("invalid"), "{e}");
    }

    #[test]
    fn errors_have_the_right_codes() {
        assert_eq!(
            decode_json(b"{not json").unwrap_err().code,
            code::DECODE_FAILURE
        );
        assert_eq!(decode_json(b"[1]").unwrap_err().code, code::DECODE_FAILURE);
        let e = conf(json!({"cniVersion": "0.3.1", "name": "dn", "type": "x"})).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = conf(json!({"name": "dn", "type": "x"})).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e = conf(json!({"cniVersion": "1.1.0", "type": "x"})).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("name"), "{e}");
        let e = conf(json!({"cniVersion": "1.1.0", "name": "dn", "type": "x", "runDir": "rel"}))
            .unwrap_err();
        assert!(e.msg.contains("runDir"), "{e}");
        let e = conf(json!({"cniVersion": "1.1.0", "name": "dn", "type": "x", "owner": "a b"}))
            .unwrap_err();
        assert!(e.msg.contains("owner"), "{e}");
        let c = conf(json!({"cniVersion": "1.1.0", "name": "dn", "type": "x"})).unwrap();
        assert_eq!(c.ipam_type().unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn valid_attachments_both_keys_and_null() {
        let c = conf(json!({"cniVersion": "1.1.0", "name": "dn", "type": "x",
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "net1"}]}))
        .unwrap();
        assert_eq!(
            c.valid_attachments().unwrap(),
            vec![ValidAttachment {
                container_id: "a".into(),
                ifname: "net1".into()
            }]
        );
        let c = conf(json!({"cniVersion": "1.1.0", "name": "dn", "type": "x",
            "cni.dev/attachments": null}))
        .unwrap();
        assert!(c.valid_attachments().unwrap().is_empty());
        let c = conf(json!({"cniVersion": "1.1.0", "name": "dn", "type": "x"})).unwrap();
        assert_eq!(
            c.valid_attachments().unwrap_err().code,
            code::INVALID_CONFIG
        );
    }
}

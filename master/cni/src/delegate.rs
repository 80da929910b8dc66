//! Running a delegated plugin (the IPAM, spec section 4): found on `CNI_PATH`, run with
//! our environment (the command and, for GC's clean-ups, the attachment's variables
//! replaced), the configuration on its stdin, its stderr passed through to ours, its
//! result or CNI error read from its stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde_json::Value;

use crate::protocol::{code, CniError, Command, ForeignError, SuccessResult, VersionResult};

/// The attachment a delegated call is about (`CNI_CONTAINERID`, `CNI_IFNAME`, ...).
#[derive(Clone, Debug, Default)]
pub struct AttachmentEnv {
    pub container_id: Option<String>,
    pub ifname: Option<String>,
    pub netns: Option<String>,
    pub args: Option<String>,
}

/// `plugin` on `cni_path` (the first directory that has an executable of that name).
pub fn find(plugin: &str, cni_path: &[String]) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt;
    if cni_path.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_PATH is missing: cannot find the IPAM plugin {plugin:?}"),
        ));
    }
    for dir in cni_path {
        let p = Path::new(dir).join(plugin);
        if let Ok(md) = std::fs::metadata(&p) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(CniError::new(
        code::INVALID_CONFIG,
        format!(
            "IPAM plugin {plugin:?} not found in CNI_PATH ({})",
            cni_path.join(":")
        ),
    ))
}

/// `CNI_ARGS` for a delegated plugin: with `IgnoreUnknown=1` added unless the runtime set
/// `IgnoreUnknown` itself. The args are meant for every plugin of the chain (Kubernetes
/// runtimes pass `K8S_POD_NAME` and the like), and `host-local` refuses keys it does not
/// know unless told to ignore them (CNI's CONVENTIONS.md); containerd adds it, a
/// runtime that forgets would otherwise make every ADD fail.
pub fn ignore_unknown(args: &str) -> String {
    let has = args
        .split(';')
        .any(|kv| kv.split('=').next() == Some("IgnoreUnknown"));
    if has || args.is_empty() {
        args.to_string()
    } else {
        format!("IgnoreUnknown=1;{args}")
    }
}

/// Run `plugin` with `CNI_COMMAND=command` and `conf` on stdin; its stdout.
pub fn run(
    plugin: &Path,
    command: Command,
    att: &AttachmentEnv,
    conf: &Value,
) -> Result<Vec<u8>, CniError> {
    let name = plugin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = Process::new(plugin);
    cmd.env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let args = att.args.as_deref().map(ignore_unknown);
    for (var, val) in [
        ("CNI_CONTAINERID", &att.container_id),
        ("CNI_IFNAME", &att.ifname),
        ("CNI_NETNS", &att.netns),
        ("CNI_ARGS", &args),
    ] {
        match val {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    log::debug!("{} {}: {conf}", name, command.as_str());
    let mut child = cmd.spawn().map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("cannot run IPAM plugin {}: {e}", plugin.display()),
        )
    })?;
    let body = serde_json::to_vec(conf).expect("a JSON value always serializes");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A plugin that exits without reading its stdin closes the pipe: its exit status and
    // output say why, so a failed write is not the error to report.
    let _ = stdin.write_all(&body);
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("cannot wait for IPAM plugin {}: {e}", plugin.display()),
        )
    })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(match serde_json::from_slice::<ForeignError>(&out.stdout) {
        Ok(fe) => CniError::new(
            fe.code,
            format!("IPAM plugin {name} ({}): {}", command.as_str(), fe.msg),
        )
        .with_details(fe.details),
        Err(_) => CniError::new(
            code::IPAM_FAILED,
            format!(
                "IPAM plugin {name} ({}) failed ({}): {}",
                command.as_str(),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        ),
    })
}

/// Run `plugin` for ADD and read its (abbreviated) result.
pub fn add(plugin: &Path, att: &AttachmentEnv, conf: &Value) -> Result<SuccessResult, CniError> {
    let out = run(plugin, Command::Add, att, conf)?;
    let v: Value = serde_json::from_slice(&out).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            format!("the IPAM plugin's ADD result is not JSON: {e}"),
        )
    })?;
    SuccessResult::from_value(&v, "the IPAM plugin's ADD result")
}

/// Whether `plugin` says it speaks CNI 1.1.0 (and so knows STATUS and GC).
pub fn speaks_1_1(plugin: &Path) -> bool {
    let conf = serde_json::json!({"cniVersion": "1.1.0"});
    match run(plugin, Command::Version, &AttachmentEnv::default(), &conf) {
        Ok(out) => serde_json::from_slice::<VersionResult>(&out)
            .map(|v| v.supported_versions.iter().any(|s| s == "1.1.0"))
            .unwrap_or(false),
        Err(e) => {
            log::warn!("VERSION of {}: {e}", plugin.display());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_unknown_is_added_once() {
        assert_eq!(ignore_unknown(""), "");
        assert_eq!(
            ignore_unknown("K8S_POD_NAME=a"),
            "IgnoreUnknown=1;K8S_POD_NAME=a"
        );
        assert_eq!(
            ignore_unknown("IgnoreUnknown=true;A=b"),
            "IgnoreUnknown=true;A=b"
        );
        assert_eq!(ignore_unknown("A=b;IgnoreUnknown=1"), "A=b;IgnoreUnknown=1");
    }
}

//! `docknet-cni`: a CNI plugin (spec 1.1.0; results also for 1.0.0 and 0.4.0) that gives
//! each pod attachment a DockNet pipe made by `docknetd`, with its address from a
//! delegated IPAM plugin (`host-local`).
//!
//! - [`protocol`]: the wire: versions, errors and their codes, results, environment.
//! - [`config`]: the network configuration on stdin.
//! - [`delegate`]: running the IPAM plugin.
//! - [`state`]: pipe names and the per-attachment records.
//! - [`plugin`]: what each command does.
//! - [`main_with`]: the whole invocation, from environment and stdin to output and exit
//!   status (the binary is a call of it).

#![forbid(unsafe_code)]

pub mod config;
pub mod delegate;
pub mod plugin;
pub mod protocol;
pub mod state;

use serde_json::Value;

use protocol::{code, CniEnv, CniError, Command, VersionResult};

/// What an invocation prints on stdout (nothing for DEL, CHECK, GC, STATUS) and its exit
/// status (0, or 1 with the error object printed).
pub struct Outcome {
    pub stdout: Option<Value>,
    pub status: i32,
}

/// Handle one invocation: `command` is `CNI_COMMAND` (if set), `stdin` what came on stdin
/// (or why it could not be read).
pub fn main_with(command: Option<&str>, env: &CniEnv, stdin: std::io::Result<Vec<u8>>) -> Outcome {
    let raw = stdin
        .as_ref()
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let version = plugin::error_version(raw.as_ref());
    match invoke(command, env, stdin) {
        Ok(stdout) => Outcome { stdout, status: 0 },
        Err(e) => {
            log::error!("{} failed: {e}", command.unwrap_or("(no CNI_COMMAND)"));
            Outcome {
                stdout: Some(e.to_json(&version)),
                status: 1,
            }
        }
    }
}

fn invoke(
    command: Option<&str>,
    env: &CniEnv,
    stdin: std::io::Result<Vec<u8>>,
) -> Result<Option<Value>, CniError> {
    let command = match command {
        None => {
            return Err(CniError::new(
                code::INVALID_ENV,
                "CNI_COMMAND is missing (ADD, DEL, CHECK, STATUS, GC or VERSION)",
            ))
        }
        Some(c) => Command::parse(c).ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("CNI_COMMAND {c:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
            )
        })?,
    };
    let stdin = stdin.map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("cannot read the network configuration from stdin: {e}"),
        )
    })?;
    if command == Command::Version {
        // VERSION is how a runtime learns what we speak: any cniVersion it asks with is
        // echoed, and no input at all is fine.
        let asked = if stdin.iter().all(u8::is_ascii_whitespace) {
            protocol::Version::latest().to_string()
        } else {
            let raw = config::decode_json(&stdin)?;
            match raw.get("cniVersion") {
                Some(Value::String(s)) => s.clone(),
                None => protocol::Version::latest().to_string(),
                Some(other) => {
                    return Err(CniError::new(
                        code::DECODE_FAILURE,
                        format!("cniVersion must be a string, not {other}"),
                    ))
                }
            }
        };
        let v = serde_json::to_value(VersionResult::ours(&asked)).expect("serializes");
        return Ok(Some(v));
    }
    let raw = config::decode_json(&stdin)?;
    let version = config::version(&raw)?;
    if plugin::needs_1_1(command) && version < protocol::Version::V1_1_0 {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{} is a CNI 1.1.0 command; the configuration is version {version}",
                command.as_str()
            ),
        ));
    }
    let conf = config::NetConf::from_value(raw, version)?;
    plugin::run(command, env, &conf)
}

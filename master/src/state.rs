//! What `docknetd` must remember across its own restart: the pipes and fast channels it
//! made and their settings, in `RUN_DIR/docknetd.state.json` (mode 0600), rewritten whole
//! (write to a temporary file, then rename) after every change. A `docknetd` started on
//! the same run directory re-adopts them from it (see `Control::readopt`); the files
//! themselves, and the services using them, never stopped.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file's name in the run directory.
pub const STATE_FILE: &str = "docknetd.state.json";
/// The format this daemon writes and reads.
pub const STATE_VERSION: u32 = 1;

/// One pipe, as `pipe create` made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPipe {
    pub name: String,
    /// `A.B.C.D/N`.
    pub ip: String,
    pub mtu: u32,
    #[serde(default)]
    pub rate_mbps: Option<u64>,
    #[serde(default)]
    pub forwarder: bool,
    /// (uid, gid) owning its files.
    #[serde(default)]
    pub owner: (u32, u32),
}

/// One fast channel, as `fc create` made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFc {
    pub a: String,
    pub b: String,
    #[serde(default)]
    pub forward: bool,
    /// The channel's IP MTU (none in files of daemons before `fc create --mtu`: the
    /// smaller pipe's).
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// One route, as `route add` made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRoute {
    /// `A.B.C.D/N`.
    pub cidr: String,
    pub via: String,
}

/// Everything in the state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub pipes: Vec<SavedPipe>,
    pub fcs: Vec<SavedFc>,
    /// Clusters and their processes (none in files of older daemons).
    #[serde(default)]
    pub clusters: Vec<crate::control::clusters::SavedCluster>,
    /// Routes to other nodes' subnets (none in files of older daemons).
    #[serde(default)]
    pub routes: Vec<SavedRoute>,
}

/// Why the state file could not be read.
#[derive(Debug)]
pub enum StateError {
    Read(PathBuf, std::io::Error),
    Parse(PathBuf, serde_json::Error),
    Version(PathBuf, u32),
    Write(PathBuf, std::io::Error),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            StateError::Parse(p, e) => {
                write!(f, "{} is not a docknetd state file: {e}", p.display())
            }
            StateError::Version(p, v) => write!(
                f,
                "{} has format version {v}; this docknetd reads version {STATE_VERSION}",
                p.display()
            ),
            StateError::Write(p, e) => write!(f, "cannot write {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for StateError {}

/// The state file of `run_dir`, or `Ok(None)` if there is none.
pub fn load(run_dir: &Path) -> Result<Option<SavedState>, StateError> {
    let path = run_dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Read(path, e)),
    };
    let s: SavedState =
        serde_json::from_str(&text).map_err(|e| StateError::Parse(path.clone(), e))?;
    if s.version != STATE_VERSION {
        return Err(StateError::Version(path, s.version));
    }
    Ok(Some(s))
}

/// Write `state` as `run_dir`'s state file, atomically.
pub fn save(run_dir: &Path, state: &SavedState) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = run_dir.join(STATE_FILE);
    let tmp = run_dir.join(format!("{STATE_FILE}.tmp"));
    let body = serde_json::to_vec_pretty(state).unwrap_or_default();
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| StateError::Write(path, e))
}

/// Remove `run_dir`'s state file (nothing to re-adopt any more).
pub fn remove(run_dir: &Path) {
    let _ = std::fs::remove_file(run_dir.join(STATE_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("dn-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_none());
        let s = SavedState {
            version: STATE_VERSION,
            pipes: vec![SavedPipe {
                name: "a".into(),
                ip: "10.88.0.2/16".into(),
                mtu: 9000,
                rate_mbps: Some(100),
                forwarder: true,
                owner: (1000, 1000),
            }],
            fcs: vec![SavedFc {
                a: "a".into(),
                b: "b".into(),
                forward: false,
                mtu: Some(65000),
            }],
            clusters: Vec::new(),
            routes: vec![SavedRoute {
                cidr: "10.90.2.0/24".into(),
                via: "192.168.50.2".into(),
            }],
        };
        save(&dir, &s).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(s));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.join(STATE_FILE), "{ not json").unwrap();
        assert!(matches!(load(&dir), Err(StateError::Parse(..))));
        std::fs::write(
            dir.join(STATE_FILE),
            r#"{"version":99,"pipes":[],"fcs":[]}"#,
        )
        .unwrap();
        let e = load(&dir).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
        remove(&dir);
        assert!(load(&dir).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

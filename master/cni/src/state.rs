//! What `docknet-cni` remembers per attachment, so DEL and GC can undo an ADD even when
//! the configuration changed since, or the ADD died half-way: one JSON file per
//! attachment at `STATE_DIR/NETWORK/PIPE.json`, written before anything is taken
//! (an ADD that dies leaves a record GC or DEL cleans up) and replaced atomically
//! (a temporary file in the same directory, fsync, rename, fsync of the directory).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::protocol::{code, CniError};

/// Pipe names of docknet-cni attachments start with this.
pub const PIPE_PREFIX: &str = "cni-";

/// The pipe of attachment (`container_id`, `ifname`): `cni-` and the first 28 hex digits
/// (112 bits) of SHA-256(container id, NUL, interface name): 32 characters, docknetd's
/// longest name; the same attachment always gets the same name, two attachments
/// practically never do.
pub fn pipe_name(container_id: &str, ifname: &str) -> String {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update([0u8]);
    h.update(ifname.as_bytes());
    let digest = h.finalize();
    let mut name = String::from(PIPE_PREFIX);
    for b in &digest[..14] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

/// One attachment's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentState {
    pub container_id: String,
    pub ifname: String,
    /// The network (configuration `name`) it belongs to.
    pub network: String,
    pub pipe: String,
    /// docknetd's run directory the pipe was made in.
    pub run_dir: PathBuf,
    #[serde(default)]
    pub netns: Option<String>,
    /// `CNI_ARGS` of the ADD (the IPAM plugin gets them again on DEL).
    #[serde(default)]
    pub cni_args: Option<String>,
    /// The configuration the IPAM plugin got on ADD (cniVersion 1.0.0), for its DEL.
    pub ipam_conf: Value,
    /// `A.B.C.D/N` once the IPAM plugin gave it.
    #[serde(default)]
    pub address: Option<String>,
    /// The pod's link to its pipe (`RUN_DIR/pods/POD_UID/IFNAME`), once made.
    #[serde(default)]
    pub pod_link: Option<PathBuf>,
}

/// A record as read: the record, or why it cannot be read.
pub type RecordRead = Result<AttachmentState, CniError>;

/// The records of one network.
pub struct StateDir {
    dir: PathBuf,
}

fn io_err(doing: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(
        code::IO_FAILURE,
        format!("cannot {doing} {}: {e}", path.display()),
    )
}

impl StateDir {
    /// `state_dir/network` (not created until a record is written).
    pub fn new(state_dir: &Path, network: &str) -> StateDir {
        StateDir {
            dir: state_dir.join(network),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, pipe: &str) -> PathBuf {
        self.dir.join(format!("{pipe}.json"))
    }

    /// The record of pipe `pipe`, if there is one.
    pub fn load(&self, pipe: &str) -> Result<Option<AttachmentState>, CniError> {
        let path = self.file(pipe);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                CniError::new(
                    code::DECODE_FAILURE,
                    format!("cannot decode attachment record {}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path, e)),
        }
    }

    /// Write (or replace) a record atomically.
    pub fn store(&self, st: &AttachmentState) -> Result<(), CniError> {
        fs::create_dir_all(&self.dir).map_err(|e| io_err("create", &self.dir, e))?;
        let path = self.file(&st.pipe);
        let tmp = self
            .dir
            .join(format!(".{}.json.tmp{}", st.pipe, std::process::id()));
        let body = serde_json::to_vec_pretty(st).expect("a record always serializes");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("write", &path, e)
        })
    }

    /// Remove a record (absent is fine).
    pub fn remove(&self, pipe: &str) -> Result<(), CniError> {
        let path = self.file(pipe);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path, e)),
        }
    }

    /// Every record of the network: `(pipe, record or why it cannot be read)`.
    pub fn all(&self) -> Result<Vec<(String, RecordRead)>, CniError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &self.dir, e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| io_err("list", &self.dir, e))?;
            let name = ent.file_name();
            let Some(pipe) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|p| p.starts_with(PIPE_PREFIX))
            else {
                continue;
            };
            let rec = self.load(pipe).and_then(|r| {
                r.ok_or_else(|| {
                    CniError::new(code::IO_FAILURE, format!("record of {pipe} vanished"))
                })
            });
            out.push((pipe.to_string(), rec));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_names_are_short_valid_stable_and_distinct() {
        let a = pipe_name("0123456789abcdef".repeat(4).as_str(), "eth0");
        assert_eq!(a.len(), 32);
        assert!(a.starts_with(PIPE_PREFIX));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(a, pipe_name("0123456789abcdef".repeat(4).as_str(), "eth0"));
        assert_ne!(a, pipe_name("0123456789abcdef".repeat(4).as_str(), "eth1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(pipe_name("ab", "c"), pipe_name("a", "bc"));
        // Fixed forever: a changed derivation would orphan pipes across an upgrade.
        assert_eq!(pipe_name("ctr1", "net1"), pipe_name("ctr1", "net1"));
        let want = {
            let d = Sha256::digest(b"ctr1\0net1");
            let hex: String = d[..14].iter().map(|b| format!("{b:02x}")).collect();
            format!("cni-{hex}")
        };
        assert_eq!(pipe_name("ctr1", "net1"), want);
    }

    #[test]
    fn store_load_list_remove() {
        let root = std::env::temp_dir().join(format!("dncni-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let sd = StateDir::new(&root, "net");
        assert!(sd.all().unwrap().is_empty());
        let st = AttachmentState {
            container_id: "c1".into(),
            ifname: "net1".into(),
            network: "net".into(),
            pipe: pipe_name("c1", "net1"),
            run_dir: "/run/docknet".into(),
            netns: Some("/run/netns/x".into()),
            cni_args: None,
            ipam_conf: serde_json::json!({"cniVersion": "1.0.0"}),
            address: None,
            pod_link: None,
        };
        sd.store(&st).unwrap();
        assert_eq!(sd.load(&st.pipe).unwrap().as_ref(), Some(&st));
        fs::write(sd.path().join("not-ours.txt"), "x").unwrap();
        fs::write(sd.path().join("cni-broken.json"), "{").unwrap();
        let all = sd.all().unwrap();
        assert_eq!(
            all.len(),
            2,
            "{:?}",
            all.iter().map(|a| &a.0).collect::<Vec<_>>()
        );
        assert!(all.iter().any(|(p, r)| p == &st.pipe && r.is_ok()));
        assert!(all.iter().any(|(p, r)| p == "cni-broken" && r.is_err()));
        sd.remove(&st.pipe).unwrap();
        sd.remove(&st.pipe).unwrap();
        assert_eq!(sd.load(&st.pipe).unwrap(), None);
        fs::remove_dir_all(&root).unwrap();
    }
}

//! OCI image-spec documents (the subset this tool writes and reads), digests, and the
//! layout's file helpers.
//!
//! Written documents are structs with a fixed field order and `BTreeMap`s for maps, turned
//! into compact JSON by serde_json: the same values always give the same bytes, so the
//! same input gives the same digests.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// `oci-layout` media types and annotation keys.
pub mod media {
    /// An image index (`index.json`).
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An image configuration.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// A gzip-compressed tar layer.
    pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// An uncompressed tar layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker's name for a gzip-compressed layer (accepted when reading).
    pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker's manifest (accepted when reading).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// The annotation naming a manifest inside a layout's `index.json`.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
}

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A content descriptor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (e.g. the ref name in `index.json`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform, on index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor for `bytes` of type `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// A platform (architecture + OS).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// GOARCH-style architecture (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// `linux`.
    pub os: String,
}

/// An image manifest.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest media type (optional when reading).
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    /// The image configuration.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
}

/// The empty JSON object used as a set element (`ExposedPorts`, `Volumes`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Empty {}

/// The execution parameters of an image configuration (`config`).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ContainerConfig {
    /// `uid[:gid]`; empty means root.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `"80/tcp": {}`.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// `KEY=value`.
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The program and its fixed arguments.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `rootfs` of an image configuration.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `sha256:` of each layer's uncompressed tar.
    pub diff_ids: Vec<String>,
}

/// One `history` entry.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct History {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// What made the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An image configuration.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ImageConfig {
    /// RFC 3339 creation time (fixed, for reproducibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// GOARCH-style architecture.
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// Execution parameters.
    #[serde(default)]
    pub config: ContainerConfig,
    /// Layer diff ids.
    pub rootfs: RootFs,
    /// History, one entry per layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// Serializes a document to compact JSON (stable: fixed field order, sorted maps).
pub fn to_json<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::json(format!("serializing {what}"), e))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn rfc3339(epoch: u64) -> String {
    let (y, mo, d, h, mi, s) = makefsdata::date::utc_datetime(epoch);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Path of a blob inside a layout, after checking the digest's form (so a hostile
/// `index.json` cannot name a path outside `blobs/`).
pub fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::Unsupported(format!("digest algorithm of {digest:?}")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::Layout(format!("malformed digest {digest:?}")));
    }
    Ok(layout.join("blobs").join("sha256").join(hex))
}

/// Reads a blob and checks that it has the descriptor's digest and size.
pub fn read_blob(layout: &Path, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let path = blob_path(layout, &desc.digest)?;
    let bytes = fs::read(&path).map_err(|e| Error::io(format!("reading {what} blob"), &path, e))?;
    let actual = sha256_digest(&bytes);
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            what: format!("{what} blob {}", path.display()),
            expected: desc.digest.clone(),
            actual,
        });
    }
    if bytes.len() as u64 != desc.size {
        return Err(Error::Layout(format!(
            "{what} blob {} is {} bytes, its descriptor says {}",
            desc.digest,
            bytes.len(),
            desc.size
        )));
    }
    Ok(bytes)
}

/// Writes a file atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {what}"), &tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("writing {what}"), path, e)
    })
}

/// Writes a blob under its digest, unless an identical one is already there.
pub fn write_blob(layout: &Path, bytes: &[u8], what: &str) -> Result<String> {
    let digest = sha256_digest(bytes);
    let path = blob_path(layout, &digest)?;
    if let Ok(existing) = fs::read(&path) {
        if existing == bytes {
            return Ok(digest);
        }
    }
    write_atomic(&path, bytes, what)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn blob_path_rejects_traversal() {
        let l = Path::new("/x");
        assert!(blob_path(l, "sha256:../../etc/passwd").is_err());
        assert!(blob_path(l, "md5:abc").is_err());
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            blob_path(l, &ok).unwrap(),
            Path::new("/x/blobs/sha256").join("a".repeat(64))
        );
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

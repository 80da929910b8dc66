//! `docknet-image build`: a static binary → a reproducible `FROM scratch` OCI image layout.
//!
//! The one layer holds `/<name>` (the binary, 0755, root:root) and the empty directories
//! `/run`, `/run/docknet`, `/run/docknet/pipe` (where the DockPipe is bind-mounted).
//! Every byte is a function of the binary, the name, the tag, the ports and the timestamp
//! (`SOURCE_DATE_EPOCH`, default 0): tar entries sorted, fixed mtimes, numeric owners
//! only, gzip without name or time, JSON with fixed field order.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};

use crate::elf;
use crate::error::{Error, Result};
use crate::oci::{self, media, ContainerConfig, Descriptor, Empty, History, ImageConfig, Manifest};

/// Where the DockPipe is mounted inside a container (and what `DOCKNET_PIPE` says).
pub const PIPE_MOUNT: &str = "/run/docknet/pipe";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The (static) binary to pack.
    pub binary: PathBuf,
    /// The ref name written into `index.json` (`NAME:TAG`).
    pub tag: String,
    /// The layout directory (created if missing; an existing layout gets the tag added).
    pub out: PathBuf,
    /// Exposed ports (`80`, `80/tcp`, `53/udp`).
    pub ports: Vec<String>,
    /// File name of the binary inside the image (default: the binary's file name).
    pub name: Option<String>,
    /// Timestamp for mtimes and `created` (seconds since the epoch).
    pub source_date_epoch: u64,
    /// Architecture override (default: from the ELF header, else the build host).
    pub architecture: Option<String>,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// Digest of the manifest (the image's identity).
    pub manifest_digest: String,
    /// Size of the manifest.
    pub manifest_size: u64,
    /// Digest of the config.
    pub config_digest: String,
    /// Size of the config.
    pub config_size: u64,
    /// Digest of the compressed layer.
    pub layer_digest: String,
    /// Size of the compressed layer.
    pub layer_size: u64,
    /// Size of the uncompressed layer tar.
    pub layer_tar_size: u64,
    /// diff_id (digest of the uncompressed tar).
    pub diff_id: String,
    /// Size of the binary.
    pub binary_size: u64,
    /// Path of the binary inside the image (`/name`).
    pub entrypoint: String,
    /// Architecture written into the config.
    pub architecture: String,
    /// Size of `index.json` + `oci-layout` as written.
    pub layout_files_size: u64,
    /// Warnings worth showing to the user (e.g. a dynamically linked binary).
    pub warnings: Vec<String>,
}

impl BuildReport {
    /// Bytes of this image's blobs (manifest + config + layer).
    pub fn blob_bytes(&self) -> u64 {
        self.manifest_size + self.config_size + self.layer_size
    }

    /// Everything this image adds on top of the binary, counting the *uncompressed* layer
    /// (tar headers and padding) plus manifest, config, `index.json` and `oci-layout`: an
    /// upper bound that does not depend on how well the binary compresses.
    pub fn overhead_uncompressed(&self) -> u64 {
        (self.layer_tar_size - self.binary_size)
            + self.manifest_size
            + self.config_size
            + self.layout_files_size
    }

    /// Size on disk of the whole layout (blobs + `index.json` + `oci-layout`) minus the
    /// binary's size; negative when gzip saves more than the metadata costs.
    pub fn overhead_on_disk(&self) -> i64 {
        (self.blob_bytes() + self.layout_files_size) as i64 - self.binary_size as i64
    }
}

/// Reads `SOURCE_DATE_EPOCH` (0 when unset or empty).
pub fn source_date_epoch_from_env() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            Error::InvalidArgument(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a non-negative whole number of seconds"
            ))
        }),
        _ => Ok(0),
    }
}

/// Checks a ref name (`NAME:TAG`) against the OCI layout grammar for
/// `org.opencontainers.image.ref.name`: components of alphanumerics joined by `-._:@+`
/// or `--`, separated by `/`.
pub fn validate_ref_name(tag: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidArgument(format!("tag {tag:?}: {why}")));
    if tag.is_empty() {
        return bad("empty");
    }
    if tag.len() > 255 {
        return bad("longer than 255 bytes");
    }
    for component in tag.split('/') {
        if component.is_empty() {
            return bad("empty path component");
        }
        let bytes = component.as_bytes();
        if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
            return bad("each component must start and end with a letter or digit");
        }
        let mut prev_sep = false;
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_alphanumeric() {
                prev_sep = false;
            } else if matches!(c, b'.' | b'_' | b':' | b'@' | b'+' | b'-') {
                let double_dash = c == b'-' && bytes.get(i + 1) == Some(&b'-');
                if prev_sep {
                    return bad("two separators in a row");
                }
                if double_dash {
                    i += 1;
                }
                prev_sep = true;
            } else {
                return bad(
                    "only letters, digits, '/', and the separators - . _ : @ + are allowed",
                );
            }
            i += 1;
        }
    }
    Ok(())
}

/// Normalizes a port spec: `80` → `80/tcp`, `53/udp` stays.
pub fn normalize_port(spec: &str) -> Result<String> {
    let (num, proto) = match spec.split_once('/') {
        Some((n, p)) => (n, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    let port: u16 = num.parse().map_err(|_| {
        Error::InvalidArgument(format!("port {spec:?}: expected N or N/tcp|udp|sctp"))
    })?;
    if port == 0 {
        return Err(Error::InvalidArgument(format!(
            "port {spec:?}: 0 is not a port"
        )));
    }
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Error::InvalidArgument(format!(
            "port {spec:?}: protocol must be tcp, udp or sctp"
        )));
    }
    Ok(format!("{port}/{proto}"))
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name != "run"
        && !name.contains('/')
        && !name.contains('\0')
        && !name.starts_with(".wh.");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "name {name:?}: the binary's name in the image must be one path component \
             of at most 100 bytes, not \"run\", \".\", \"..\" or a whiteout"
        )))
    }
}

/// Builds the uncompressed layer tar: sorted entries, fixed mtime, numeric owners only.
pub fn layer_tar(name: &str, binary: &[u8], mtime: u64) -> Result<Vec<u8>> {
    enum Kind<'a> {
        Dir,
        File(&'a [u8]),
    }
    let file_path = name.to_string();
    let mut entries: Vec<(String, Kind)> = vec![
        (file_path, Kind::File(binary)),
        ("run/".into(), Kind::Dir),
        ("run/docknet/".into(), Kind::Dir),
        ("run/docknet/pipe/".into(), Kind::Dir),
    ];
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    let tar_err = |e: std::io::Error| Error::io("building the layer tar for", name, e);
    let mut builder = tar::Builder::new(Vec::with_capacity(binary.len() + 8192));
    for (path, kind) in &entries {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).map_err(tar_err)?;
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_mode(0o755);
        let data: &[u8] = match kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                &[]
            }
            Kind::File(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                bytes
            }
        };
        header.set_cksum();
        builder.append(&header, data).map_err(tar_err)?;
    }
    builder.into_inner().map_err(tar_err)
}

/// Compresses deterministically: no file name, mtime 0, OS "unknown", fixed level.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let gz_err = |e: std::io::Error| Error::io("compressing the layer", "(memory)", e);
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::with_capacity(bytes.len() / 2), Compression::best());
    enc.write_all(bytes).map_err(gz_err)?;
    enc.finish().map_err(gz_err)
}

/// Builds the image and writes (or adds it to) the layout at `opts.out`.
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    validate_ref_name(&opts.tag)?;
    let meta =
        fs::metadata(&opts.binary).map_err(|e| Error::io("reading the binary", &opts.binary, e))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "binary {} is not a regular file",
            opts.binary.display()
        )));
    }
    let binary =
        fs::read(&opts.binary).map_err(|e| Error::io("reading the binary", &opts.binary, e))?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => opts
            .binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".into()),
    };
    validate_name(&name)?;
    let mut ports = BTreeMap::new();
    for p in &opts.ports {
        ports.insert(normalize_port(p)?, Empty {});
    }

    let mut warnings = Vec::new();
    let elf = elf::inspect(&binary);
    match &elf {
        None => warnings.push(format!(
            "{} is not an ELF executable; a FROM scratch image can only run a static ELF binary",
            opts.binary.display()
        )),
        Some(info) if info.dynamic => warnings.push(format!(
            "{} is dynamically linked (has PT_INTERP); it will not start in a FROM scratch \
             image, which has no dynamic loader or libc",
            opts.binary.display()
        )),
        Some(_) => {}
    }
    let architecture = match (
        &opts.architecture,
        elf.as_ref().and_then(|i| i.architecture),
    ) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => a.to_string(),
        (None, None) => elf::host_architecture().to_string(),
    };

    // Layer.
    let tar = layer_tar(&name, &binary, opts.source_date_epoch)?;
    let diff_id = oci::sha256_digest(&tar);
    let layer = gzip(&tar)?;
    let layer_desc = Descriptor::of(media::LAYER_TAR_GZIP, &layer);

    // Config.
    let created = oci::rfc3339(opts.source_date_epoch);
    let entrypoint = format!("/{name}");
    let config = ImageConfig {
        created: Some(created.clone()),
        architecture: architecture.clone(),
        os: "linux".into(),
        config: ContainerConfig {
            user: None,
            exposed_ports: if ports.is_empty() { None } else { Some(ports) },
            env: Some(vec![
                format!("DOCKNET_PIPE={PIPE_MOUNT}"),
                "PATH=/".to_string(),
            ]),
            entrypoint: Some(vec![entrypoint.clone()]),
            cmd: None,
            working_dir: Some("/".into()),
            labels: None,
        },
        rootfs: oci::RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id.clone()],
        },
        history: vec![History {
            created: Some(created),
            created_by: Some(format!(
                "docknet-image build ({entrypoint}, mount point {PIPE_MOUNT})"
            )),
            comment: Some("FROM scratch".into()),
        }],
    };
    let config_json = oci::to_json("the image config", &config)?;
    let config_desc = Descriptor::of(media::CONFIG, &config_json);

    // Manifest.
    let manifest = Manifest {
        schema_version: 2,
        media_type: media::MANIFEST.into(),
        config: config_desc.clone(),
        layers: vec![layer_desc.clone()],
    };
    let manifest_json = oci::to_json("the manifest", &manifest)?;
    let mut manifest_desc = Descriptor::of(media::MANIFEST, &manifest_json);
    manifest_desc
        .annotations
        .insert(media::REF_NAME.into(), opts.tag.clone());
    manifest_desc.platform = Some(oci::Platform {
        architecture: architecture.clone(),
        os: "linux".into(),
    });

    let layout_files_size = write_layout(
        &opts.out,
        &[
            (&layer, "layer"),
            (&config_json, "config"),
            (&manifest_json, "manifest"),
        ],
        manifest_desc.clone(),
        &opts.tag,
    )?;

    Ok(BuildReport {
        manifest_digest: manifest_desc.digest,
        manifest_size: manifest_desc.size,
        config_digest: config_desc.digest,
        config_size: config_desc.size,
        layer_digest: layer_desc.digest,
        layer_size: layer_desc.size,
        layer_tar_size: tar.len() as u64,
        diff_id,
        binary_size: binary.len() as u64,
        entrypoint,
        architecture,
        layout_files_size,
        warnings,
    })
}

/// Writes blobs, `oci-layout` and `index.json` (adding `desc` under `tag`, replacing an
/// entry with the same tag). Returns the size of `index.json` + `oci-layout`.
fn write_layout(out: &Path, blobs: &[(&[u8], &str)], desc: Descriptor, tag: &str) -> Result<u64> {
    let layout_file = out.join("oci-layout");
    let index_file = out.join("index.json");
    let mut manifests: Vec<serde_json::Value> = Vec::new();
    if out.exists() {
        if !out.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "--out {} exists and is not a directory",
                out.display()
            )));
        }
        if layout_file.exists() {
            let text = fs::read(&layout_file).map_err(|e| Error::io("reading", &layout_file, e))?;
            let v: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| Error::json(format!("parsing {}", layout_file.display()), e))?;
            if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                return Err(Error::Layout(format!(
                    "{} is not imageLayoutVersion 1.0.0",
                    layout_file.display()
                )));
            }
            if index_file.exists() {
                let text =
                    fs::read(&index_file).map_err(|e| Error::io("reading", &index_file, e))?;
                let index: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|e| Error::json(format!("parsing {}", index_file.display()), e))?;
                if let Some(list) = index.get("manifests").and_then(|m| m.as_array()) {
                    manifests = list.clone();
                }
            }
        } else {
            let mut rd = fs::read_dir(out).map_err(|e| Error::io("listing", out, e))?;
            if rd.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "--out {} is neither empty nor an OCI image layout (no oci-layout file)",
                    out.display()
                )));
            }
        }
    }
    let blob_dir = out.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(|e| Error::io("creating", &blob_dir, e))?;
    for (bytes, what) in blobs {
        oci::write_blob(out, bytes, what)?;
    }
    oci::write_atomic(&layout_file, oci::OCI_LAYOUT, "oci-layout")?;

    let ref_of = |v: &serde_json::Value| -> Option<String> {
        v.get("annotations")?
            .get(media::REF_NAME)?
            .as_str()
            .map(str::to_string)
    };
    manifests.retain(|m| ref_of(m).as_deref() != Some(tag));
    manifests
        .push(serde_json::to_value(&desc).map_err(|e| Error::json("serializing a descriptor", e))?);
    // Stable order: by ref name, untagged entries last in their original order.
    manifests.sort_by(|a, b| match (ref_of(a), ref_of(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": manifests,
    });
    let index_json = oci::to_json("index.json", &index)?;
    oci::write_atomic(&index_file, &index_json, "index.json")?;
    Ok((index_json.len() + oci::OCI_LAYOUT.len()) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names() {
        for ok in [
            "dn-httpd:latest",
            "a",
            "x/y:1.0",
            "a--b",
            "v1.2.3",
            "name@x+y",
        ] {
            validate_ref_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", ":x", "x:", "a..b", "a b", "a//b", "-a", "a/", "ü"] {
            assert!(validate_ref_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(normalize_port("80").unwrap(), "80/tcp");
        assert_eq!(normalize_port("53/UDP").unwrap(), "53/udp");
        assert!(normalize_port("0").is_err());
        assert!(normalize_port("70000").is_err());
        assert!(normalize_port("80/icmp").is_err());
        assert!(normalize_port("http").is_err());
    }

    #[test]
    fn names() {
        validate_name("dn-httpd").unwrap();
        for bad in ["", ".", "..", "run", "a/b", ".wh.x"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tar_is_sorted_fixed_and_deterministic() {
        let bin = b"\x7fELF-not-really".to_vec();
        let a = layer_tar("zz-app", &bin, 1234).unwrap();
        let b = layer_tar("zz-app", &bin, 1234).unwrap();
        assert_eq!(a, b);
        let mut ar = tar::Archive::new(&a[..]);
        let mut paths = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 1234);
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            assert_eq!(h.mode().unwrap(), 0o755);
            assert_eq!(h.username_bytes(), Some(&[][..]));
            assert_eq!(h.groupname_bytes(), Some(&[][..]));
            paths.push(String::from_utf8(h.path_bytes().to_vec()).unwrap());
        }
        assert_eq!(
            paths,
            ["run/", "run/docknet/", "run/docknet/pipe/", "zz-app"]
        );
    }

    #[test]
    fn gzip_header_has_no_time_or_name() {
        let gz = gzip(b"hello hello hello").unwrap();
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(gz[3] & 0x08, 0, "FNAME flag set");
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "mtime set");
        assert_eq!(gz[9], 255);
        assert_eq!(gz, gzip(b"hello hello hello").unwrap());
    }
}

//! `docknet-image runc-bundle`: an image from a layout → a runc bundle (`rootfs/` +
//! `config.json`) whose DockPipe directory is bind-mounted at `/run/docknet/pipe` when
//! the container starts, in the container's own mount namespace only.
//!
//! The container gets new mount, pid, ipc, uts, cgroup and network namespaces (the
//! service talks through shared memory only, so its network namespace stays empty), no
//! capabilities, `noNewPrivileges`, and a read-only root file system.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::image::PIPE_MOUNT;
use crate::oci::{self, media, Descriptor, ImageConfig, Manifest};

/// What to make.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// The OCI image layout directory.
    pub image: PathBuf,
    /// The ref name in `index.json` (optional when the layout holds one image).
    pub tag: Option<String>,
    /// The pipe directory to bind-mount at `/run/docknet/pipe` (none: the mount point
    /// stays an empty directory of the read-only image).
    pub pipe: Option<PathBuf>,
    /// The bundle directory to create (must not exist, or be empty).
    pub out: PathBuf,
    /// Hostname inside the container.
    pub hostname: String,
    /// Extra `KEY=value` environment (replaces the image's value for the same key).
    pub env: Vec<String>,
    /// `uid:gid` to run as (default: the image's numeric `User`, else 0:0).
    pub user: Option<String>,
    /// Arguments after the entrypoint (replace the image's `Cmd`).
    pub args: Vec<String>,
}

/// What was made.
#[derive(Debug, Clone)]
pub struct BundleReport {
    /// The manifest used.
    pub manifest_digest: String,
    /// `process.args` written to config.json.
    pub args: Vec<String>,
    /// The pipe directory mounted (canonical host path), if any.
    pub pipe: Option<PathBuf>,
    /// Number of layers applied.
    pub layers: usize,
}

/// Finds the manifest descriptor for `tag` in the layout's `index.json`.
pub fn find_manifest(layout: &Path, tag: Option<&str>) -> Result<Descriptor> {
    let index_path = layout.join("index.json");
    let text =
        fs::read(&index_path).map_err(|e| Error::io("reading the image index", &index_path, e))?;
    let index: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::json(format!("parsing {}", index_path.display()), e))?;
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Layout(format!("{} has no manifests", index_path.display())))?;
    let mut descs = Vec::new();
    for v in list {
        let d: Descriptor = serde_json::from_value(v.clone()).map_err(|e| {
            Error::json(
                format!("parsing a descriptor in {}", index_path.display()),
                e,
            )
        })?;
        descs.push(d);
    }
    let tags: Vec<String> = descs
        .iter()
        .filter_map(|d| d.annotations.get(media::REF_NAME).cloned())
        .collect();
    let found = match tag {
        Some(t) => descs
            .into_iter()
            .find(|d| d.annotations.get(media::REF_NAME).map(String::as_str) == Some(t)),
        None if descs.len() == 1 => descs.into_iter().next(),
        None => {
            return Err(Error::InvalidArgument(format!(
                "{} holds {} images; choose one with --tag (tags: {})",
                layout.display(),
                descs.len(),
                tags.join(", ")
            )))
        }
    };
    let desc = found.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "no image tagged {:?} in {} (tags: {})",
            tag.unwrap_or_default(),
            layout.display(),
            if tags.is_empty() {
                "none".into()
            } else {
                tags.join(", ")
            }
        ))
    })?;
    if desc.media_type != media::MANIFEST && desc.media_type != media::DOCKER_MANIFEST {
        return Err(Error::Unsupported(format!(
            "index entry of media type {} (only single-platform image manifests)",
            desc.media_type
        )));
    }
    Ok(desc)
}

/// Reads the manifest and config of `tag` from a layout, checking digests.
pub fn read_image(layout: &Path, tag: Option<&str>) -> Result<(Descriptor, Manifest, ImageConfig)> {
    let desc = find_manifest(layout, tag)?;
    let bytes = oci::read_blob(layout, &desc, "manifest")?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::json("parsing the manifest", e))?;
    if manifest.schema_version != 2 {
        return Err(Error::Unsupported(format!(
            "manifest schemaVersion {}",
            manifest.schema_version
        )));
    }
    let cbytes = oci::read_blob(layout, &manifest.config, "config")?;
    let config: ImageConfig =
        serde_json::from_slice(&cbytes).map_err(|e| Error::json("parsing the image config", e))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::Layout(format!(
            "the config lists {} diff_ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    Ok((desc, manifest, config))
}

/// Joins a tar path under `root` if it stays inside (no `..`, no absolute escapes).
fn safe_join(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Layout(format!(
                    "layer entry {} escapes the root file system",
                    path.display()
                )))
            }
        }
    }
    // Refuse to follow symlinks in the parents (a layer could point them outside).
    let mut cur = root.to_path_buf();
    if let Some(parent) = out.strip_prefix(root).ok().and_then(Path::parent) {
        for c in parent.components() {
            cur.push(c);
            if let Ok(m) = fs::symlink_metadata(&cur) {
                if m.file_type().is_symlink() {
                    return Err(Error::Unsupported(format!(
                        "layer entry {} lies under a symbolic link",
                        path.display()
                    )));
                }
            }
        }
    }
    Ok(out)
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Applies one uncompressed layer tar onto `rootfs` (with OCI whiteouts).
fn apply_layer(rootfs: &Path, tar_bytes: &[u8], what: &str) -> Result<()> {
    let tar_err = |e: std::io::Error| Error::io(format!("unpacking {what} into"), rootfs, e);
    let mut archive = tar::Archive::new(tar_bytes);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(running_as_root());
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let path = entry.path().map_err(tar_err)?.into_owned();
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name == ".wh..wh..opq" {
            let dir = safe_join(rootfs, path.parent().unwrap_or(Path::new("")))?;
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    remove_any(&e.path())
                        .map_err(|e| Error::io("applying a whiteout in", &dir, e))?;
                }
            }
            continue;
        }
        if let Some(target) = file_name.strip_prefix(".wh.") {
            let victim = safe_join(rootfs, &path.with_file_name(target))?;
            remove_any(&victim).map_err(|e| Error::io("applying a whiteout to", &victim, e))?;
            continue;
        }
        safe_join(rootfs, &path)?;
        entry.unpack_in(rootfs).map_err(tar_err)?;
    }
    Ok(())
}

fn parse_user(spec: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::InvalidArgument(format!(
            "user {spec:?}: expected numeric UID or UID:GID (a scratch image has no /etc/passwd)"
        ))
    };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid: u32 = u.parse().map_err(|_| bad())?;
    let gid: u32 = match g {
        Some(g) => g.parse().map_err(|_| bad())?,
        None => uid,
    };
    Ok((uid, gid))
}

/// The runc `config.json` for an image config and the options (pure function; tested).
pub fn runtime_spec(
    config: &ImageConfig,
    opts: &BundleOptions,
    pipe: Option<&Path>,
) -> Result<Value> {
    let c = &config.config;
    let mut args: Vec<String> = c.entrypoint.clone().unwrap_or_default();
    if opts.args.is_empty() {
        args.extend(c.cmd.clone().unwrap_or_default());
    } else {
        args.extend(opts.args.iter().cloned());
    }
    if args.is_empty() {
        return Err(Error::Layout(
            "the image has neither Entrypoint nor Cmd, and no arguments were given".into(),
        ));
    }

    // Environment: image first, then overrides by key; DOCKNET_PIPE always points at the
    // mount point.
    let mut env: Vec<String> = c.env.clone().unwrap_or_default();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    if !c
        .env
        .as_ref()
        .is_some_and(|e| e.iter().any(|v| v.starts_with("DOCKNET_PIPE=")))
    {
        set(format!("DOCKNET_PIPE={PIPE_MOUNT}"));
    }
    for kv in &opts.env {
        if !kv.contains('=') || kv.starts_with('=') {
            return Err(Error::InvalidArgument(format!(
                "env {kv:?}: expected KEY=value"
            )));
        }
        set(kv.clone());
    }

    let (uid, gid) = match (&opts.user, &c.user) {
        (Some(u), _) => parse_user(u)?,
        (None, Some(u)) if !u.is_empty() => parse_user(u)?,
        _ => (0, 0),
    };
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| w.starts_with('/'))
        .unwrap_or_else(|| "/".into());

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    if let Some(p) = pipe {
        mounts.push(json!({
            "destination": PIPE_MOUNT,
            "type": "bind",
            "source": p.to_string_lossy(),
            "options": ["rbind", "rw", "rprivate", "nosuid", "nodev", "noexec"],
        }));
    }
    let empty: [&str; 0] = [];
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": empty, "effective": empty, "inheritable": empty,
                "permitted": empty, "ambient": empty,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": opts.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"},
            ],
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }))
}

/// Unpacks the image into `opts.out/rootfs` and writes `opts.out/config.json`.
pub fn runc_bundle(opts: &BundleOptions) -> Result<BundleReport> {
    let (desc, manifest, config) = read_image(&opts.image, opts.tag.as_deref())?;
    let pipe = match &opts.pipe {
        Some(p) => {
            let canon =
                fs::canonicalize(p).map_err(|e| Error::io("resolving the pipe directory", p, e))?;
            if !canon.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "pipe {} is not a directory",
                    p.display()
                )));
            }
            Some(canon)
        }
        None => None,
    };
    let spec = runtime_spec(&config, opts, pipe.as_deref())?;

    if opts.out.exists() {
        let mut rd = fs::read_dir(&opts.out).map_err(|e| Error::io("listing", &opts.out, e))?;
        if rd.next().is_some() {
            return Err(Error::InvalidArgument(format!(
                "--out {} exists and is not empty",
                opts.out.display()
            )));
        }
    }
    let rootfs = opts.out.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(|e| Error::io("creating", &rootfs, e))?;

    for (i, layer) in manifest.layers.iter().enumerate() {
        let what = format!("layer {i}");
        let blob = oci::read_blob(&opts.image, layer, &what)?;
        let tar_bytes = match layer.media_type.as_str() {
            media::LAYER_TAR_GZIP | media::DOCKER_LAYER_TAR_GZIP => {
                let mut out = Vec::with_capacity(blob.len() * 2);
                GzDecoder::new(&blob[..])
                    .read_to_end(&mut out)
                    .map_err(|e| Error::io(format!("decompressing {what}"), &opts.image, e))?;
                out
            }
            media::LAYER_TAR => blob,
            other => return Err(Error::Unsupported(format!("{what} of media type {other}"))),
        };
        let actual = oci::sha256_digest(&tar_bytes);
        if actual != config.rootfs.diff_ids[i] {
            return Err(Error::DigestMismatch {
                what: format!("{what} (uncompressed)"),
                expected: config.rootfs.diff_ids[i].clone(),
                actual,
            });
        }
        apply_layer(&rootfs, &tar_bytes, &what)?;
    }
    // The mount point must exist: the root file system is read-only at run time.
    let mount_point = rootfs.join(PIPE_MOUNT.trim_start_matches('/'));
    fs::create_dir_all(&mount_point).map_err(|e| Error::io("creating", &mount_point, e))?;

    let config_path = opts.out.join("config.json");
    let text =
        serde_json::to_vec_pretty(&spec).map_err(|e| Error::json("writing config.json", e))?;
    oci::write_atomic(&config_path, &text, "config.json")?;

    let args = spec["process"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(BundleReport {
        manifest_digest: desc.digest,
        args,
        pipe,
        layers: manifest.layers.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{ContainerConfig, RootFs};

    fn cfg() -> ImageConfig {
        ImageConfig {
            created: None,
            architecture: "amd64".into(),
            os: "linux".into(),
            config: ContainerConfig {
                entrypoint: Some(vec!["/app".into()]),
                cmd: Some(vec!["--default".into()]),
                env: Some(vec![
                    "DOCKNET_PIPE=/run/docknet/pipe".into(),
                    "PATH=/".into(),
                ]),
                ..Default::default()
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![],
            },
            history: vec![],
        }
    }

    fn opts() -> BundleOptions {
        BundleOptions {
            image: "img".into(),
            tag: None,
            pipe: None,
            out: "b".into(),
            hostname: "svc".into(),
            env: vec![],
            user: None,
            args: vec![],
        }
    }

    #[test]
    fn spec_with_pipe() {
        let mut o = opts();
        o.args = vec!["--port".into(), "8080".into()];
        o.env = vec!["PATH=/bin".into(), "RUST_LOG=info".into()];
        let s = runtime_spec(&cfg(), &o, Some(Path::new("/run/docknet/pipes/a"))).unwrap();
        assert_eq!(s["process"]["args"], json!(["/app", "--port", "8080"]));
        assert_eq!(
            s["process"]["env"],
            json!([
                "DOCKNET_PIPE=/run/docknet/pipe",
                "PATH=/bin",
                "RUST_LOG=info"
            ])
        );
        assert_eq!(s["root"]["readonly"], json!(true));
        assert_eq!(s["process"]["capabilities"]["bounding"], json!([]));
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for t in ["pid", "network", "ipc", "uts", "mount"] {
            assert!(ns.contains(&t), "{t} namespace missing");
        }
        let pipe_mount = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == PIPE_MOUNT)
            .unwrap();
        assert_eq!(pipe_mount["source"], "/run/docknet/pipes/a");
        let o = pipe_mount["options"].as_array().unwrap();
        for want in ["rbind", "rw", "rprivate"] {
            assert!(o.contains(&json!(want)));
        }
    }

    #[test]
    fn spec_without_pipe_and_default_cmd() {
        let s = runtime_spec(&cfg(), &opts(), None).unwrap();
        assert_eq!(s["process"]["args"], json!(["/app", "--default"]));
        assert!(!s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == PIPE_MOUNT));
        assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
    }

    #[test]
    fn users_and_bad_env() {
        assert_eq!(parse_user("1000").unwrap(), (1000, 1000));
        assert_eq!(parse_user("1:2").unwrap(), (1, 2));
        assert!(parse_user("nobody").is_err());
        let mut o = opts();
        o.env = vec!["NOEQUALS".into()];
        assert!(runtime_spec(&cfg(), &o, None).is_err());
    }

    #[test]
    fn safe_join_rejects_escape() {
        let root = Path::new("/nonexistent-root");
        assert!(safe_join(root, Path::new("../etc")).is_err());
        assert_eq!(
            safe_join(root, Path::new("/run/x")).unwrap(),
            Path::new("/nonexistent-root/run/x")
        );
    }
}

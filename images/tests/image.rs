//! End-to-end tests of `docknet-image`: build an image from a small static binary, check
//! it is reproducible and small, validate it with `skopeo inspect` and `umoci unpack`,
//! and run it under `runc` with and without a pipe mounted.
//!
//! Tests that need skopeo, umoci or runc print why and return when the tool is missing
//! (CI installs them: `apt-get install skopeo umoci runc`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_docknet-image");
const TAG: &str = "probe:latest";

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("docknet-image-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// The static probe binary (compiled once per test run).
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        // One fixed directory (nothing piles up across runs); compile under a unique name
        // and rename, so concurrent test processes never see a half-written binary.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docknet-image-probe");
        fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe.rs");
        let out = dir.join("probe");
        let tmp = dir.join(format!("probe.tmp.{}", std::process::id()));
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let st = Command::new(rustc)
            .args(["--edition", "2021", "-C", "target-feature=+crt-static"])
            .args(["-O", "-C", "strip=symbols", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("running rustc");
        assert!(
            st.success(),
            "compiling the static probe failed (is libc6-dev installed?)"
        );
        fs::rename(&tmp, &out).unwrap();
        out
    })
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn skip_without(tool: &str) -> bool {
    if have(tool) {
        false
    } else {
        eprintln!("SKIPPED: `{tool}` is not installed (apt-get install {tool})");
        true
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn build(out: &Path, extra: &[&str]) -> String {
    let o = run_ok(
        Command::new(BIN)
            .args(["build", "--binary"])
            .arg(probe())
            .args(["--tag", TAG, "--out"])
            .arg(out)
            .args(extra)
            .env_remove("SOURCE_DATE_EPOCH"),
    );
    String::from_utf8(o.stdout).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let b = fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    assert_eq!(sha(&b), digest, "blob content does not match its name");
    b
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Every file of a directory tree, relative path → bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// (manifest digest, manifest, config) of TAG.
fn image(layout: &Path) -> (String, Value, Value) {
    let index = json(&fs::read(layout.join("index.json")).unwrap());
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == TAG)
        .expect("tag in index.json")
        .clone();
    let digest = desc["digest"].as_str().unwrap().to_string();
    let manifest = json(&blob(layout, &digest));
    let config = json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    (digest, manifest, config)
}

#[test]
fn layout_is_complete_reproducible_and_small() {
    let t = tmpdir();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    let summary = build(&a, &["--port", "80"]);
    build(&b, &[]);
    // Same input, byte-identical layouts (the tmp dir names differ, the bytes must not).
    assert_eq!(tree(&a), tree(&b), "two builds of the same binary differ");

    // A different timestamp gives a different, but again reproducible, image.
    run_ok(
        Command::new(BIN)
            .args(["build", "--binary"])
            .arg(probe())
            .args(["--tag", TAG, "--out"])
            .arg(&c)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let (da, manifest, config) = image(&a);
    let (dc, _, config_c) = image(&c);
    assert_ne!(da, dc);
    assert_eq!(config_c["created"], "2023-11-14T22:13:20Z");
    assert!(
        summary.contains(&da),
        "summary line lacks the digest: {summary}"
    );

    // Layout files.
    assert_eq!(
        fs::read_to_string(a.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = json(&fs::read(a.join("index.json")).unwrap());
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["manifests"][0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    // Manifest and config.
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(config["architecture"], host_arch());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/probe"])
    );
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["DOCKNET_PIPE=/run/docknet/pipe", "PATH=/"])
    );
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"80/tcp": {}})
    );
    assert_eq!(config["history"][0]["created"], "1970-01-01T00:00:00Z");

    // The layer: deterministic gzip, diff_id = sha256 of the uncompressed tar, sorted
    // entries with fixed mtime and numeric owners only.
    let layer = blob(&a, layers[0]["digest"].as_str().unwrap());
    assert_eq!(layers[0]["size"], layer.len() as u64);
    assert_eq!(&layer[4..8], &[0, 0, 0, 0], "gzip mtime is set");
    assert_eq!(layer[3] & 0x08, 0, "gzip carries a file name");
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&layer[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], sha(&tar_bytes));
    let binary = fs::read(probe()).unwrap();
    let mut entries = Vec::new();
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = String::from_utf8(h.path_bytes().to_vec()).unwrap();
        assert_eq!(h.mtime().unwrap(), 0, "{path}");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
        assert_eq!(h.username_bytes(), Some(&b""[..]), "{path}");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "{path}");
        assert_eq!(h.mode().unwrap(), 0o755, "{path}");
        if path == "probe" {
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            assert!(content == binary, "binary in the layer differs");
        }
        entries.push(path);
    }
    assert_eq!(
        entries,
        ["probe", "run/", "run/docknet/", "run/docknet/pipe/"]
    );

    // Size: at most 64 KiB on top of the binary, whichever way it is counted.
    let total: u64 = tree(&a).values().map(|v| v.len() as u64).sum();
    let metadata = total - layer.len() as u64;
    let tar_overhead = tar_bytes.len() as u64 - binary.len() as u64;
    eprintln!(
        "SIZES: binary {} B; layer {} B gzip / {} B tar; manifest+config+index+oci-layout {} B; \
         layout total {} B (= binary {:+} B); uncompressed overhead {} B",
        binary.len(),
        layer.len(),
        tar_bytes.len(),
        metadata,
        total,
        total as i64 - binary.len() as i64,
        tar_overhead + metadata,
    );
    assert!(total <= binary.len() as u64 + 64 * 1024);
    assert!(tar_overhead + metadata <= 64 * 1024);
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn second_tag_is_added_and_same_tag_replaced() {
    let t = tmpdir();
    let out = t.path().join("img");
    build(&out, &[]);
    run_ok(
        Command::new(BIN)
            .args(["build", "--binary"])
            .arg(probe())
            .args([
                "--tag", "probe:v2", "--name", "app", "--port", "53/udp", "-q", "--out",
            ])
            .arg(&out),
    );
    build(&out, &[]); // the same tag again: replaced, not duplicated
    let index = json(&fs::read(out.join("index.json")).unwrap());
    let tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(tags, ["probe:latest", "probe:v2"]);
    if !skip_without("umoci") {
        let o = run_ok(Command::new("umoci").args(["ls", "--layout"]).arg(&out));
        let listed = String::from_utf8(o.stdout).unwrap();
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            ["probe:latest", "probe:v2"]
        );
    }
}

#[test]
fn skopeo_inspect_reads_the_image() {
    if skip_without("skopeo") {
        return;
    }
    let t = tmpdir();
    let out = t.path().join("img");
    build(&out, &["--port", "8080"]);
    let (digest, manifest, _) = image(&out);
    let reference = format!("oci:{}:{TAG}", out.display());
    let o = run_ok(Command::new("skopeo").args(["inspect", &reference]));
    let v = json(&o.stdout);
    assert_eq!(v["Digest"], digest.as_str());
    assert_eq!(v["Architecture"], host_arch());
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Created"], "1970-01-01T00:00:00Z");
    assert_eq!(
        v["Layers"],
        serde_json::json!([manifest["layers"][0]["digest"]])
    );
    assert_eq!(
        v["Env"],
        serde_json::json!(["DOCKNET_PIPE=/run/docknet/pipe", "PATH=/"])
    );
    let o = run_ok(Command::new("skopeo").args(["inspect", "--config", &reference]));
    let c = json(&o.stdout);
    assert_eq!(c["config"]["Entrypoint"], serde_json::json!(["/probe"]));
    assert_eq!(
        c["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    let o = run_ok(Command::new("skopeo").args(["inspect", "--raw", &reference]));
    assert_eq!(sha(&o.stdout), digest, "skopeo's raw manifest differs");
}

fn rootfs_listing(rootfs: &Path) -> Vec<String> {
    tree(rootfs).into_keys().collect()
}

#[test]
fn umoci_unpack_gives_exactly_the_binary_and_mount_point() {
    if skip_without("umoci") {
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: umoci unpack without --rootless needs root");
        return;
    }
    let t = tmpdir();
    let out = t.path().join("img");
    build(&out, &[]);
    let bundle = t.path().join("umoci-bundle");
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{TAG}", out.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let want = ["probe", "run/", "run/docknet/", "run/docknet/pipe/"];
    assert_eq!(rootfs_listing(&rootfs), want);
    let m = fs::metadata(rootfs.join("probe")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    assert_eq!((m.uid(), m.gid()), (0, 0));
    assert!(fs::read(rootfs.join("probe")).unwrap() == fs::read(probe()).unwrap());
    // umoci's generated runtime config runs our entrypoint with our env.
    let cfg = json(&fs::read(bundle.join("config.json")).unwrap());
    assert_eq!(cfg["process"]["args"], serde_json::json!(["/probe"]));
    assert!(cfg["process"]["env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("DOCKNET_PIPE=/run/docknet/pipe")));

    // Our own unpacker gives the same tree.
    let ours = t.path().join("our-bundle");
    run_ok(
        Command::new(BIN)
            .args(["runc-bundle", "-q", "--image"])
            .arg(&out)
            .arg("--out")
            .arg(&ours),
    );
    assert_eq!(tree(&ours.join("rootfs")), tree(&rootfs));
}

/// Runs `runc run` with a deadline; returns stdout. Cleans the container up.
fn runc_run(bundle: &Path, id: &str) -> String {
    let mut child = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning runc");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = Command::new("runc").args(["delete", "-f", id]).status();
            panic!("runc run {id} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = Command::new("runc")
        .args(["delete", "-f", id])
        .stderr(Stdio::null())
        .status();
    assert!(
        status.success(),
        "runc run {id}: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

#[test]
fn runc_runs_the_image_with_only_its_own_pipe() {
    if skip_without("runc") {
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: running runc containers needs root");
        return;
    }
    let t = tmpdir();
    let out = t.path().join("img");
    build(&out, &[]);
    let pipe = t.path().join("pipe-a");
    fs::create_dir(&pipe).unwrap();
    fs::write(pipe.join("marker"), "secret-a\n").unwrap();
    let id = std::process::id();

    // Container A: pipe granted. It sees the pipe's files, can write into the pipe, and
    // cannot write to its read-only root.
    let bundle_a = t.path().join("bundle-a");
    run_ok(
        Command::new(BIN)
            .args(["runc-bundle", "-q", "--image"])
            .arg(&out)
            .args(["--tag", TAG, "--pipe"])
            .arg(&pipe)
            .arg("--out")
            .arg(&bundle_a)
            .args([
                "--",
                "/run/docknet/pipe/marker",
                "write:/run/docknet/pipe/from-a",
                "write:/scratch-file",
            ]),
    );
    let spec = json(&fs::read(bundle_a.join("config.json")).unwrap());
    assert_eq!(
        spec["process"]["capabilities"]["effective"],
        serde_json::json!([])
    );
    let a = runc_run(&bundle_a, &format!("docknet-image-test-a-{id}"));
    eprintln!("container A:\n{a}");
    assert!(a.contains("pipe=/run/docknet/pipe entries=[marker]"), "{a}");
    assert!(
        a.contains("open /run/docknet/pipe/marker: ok secret-a"),
        "{a}"
    );
    assert!(a.contains("write /run/docknet/pipe/from-a: ok"), "{a}");
    assert!(
        a.contains("write /scratch-file: err"),
        "root fs is writable: {a}"
    );
    assert_eq!(
        fs::read_to_string(pipe.join("from-a")).unwrap(),
        "from-container\n"
    );

    // Container B, same image, no pipe granted: its mount point is empty, and neither
    // the mount-point path nor the host path of A's pipe opens.
    let bundle_b = t.path().join("bundle-b");
    let host_marker = fs::canonicalize(pipe.join("marker")).unwrap();
    run_ok(
        Command::new(BIN)
            .args(["runc-bundle", "-q", "--image"])
            .arg(&out)
            .arg("--out")
            .arg(&bundle_b)
            .arg("--")
            .arg("/run/docknet/pipe/marker")
            .arg(&host_marker),
    );
    let b = runc_run(&bundle_b, &format!("docknet-image-test-b-{id}"));
    eprintln!("container B:\n{b}");
    assert!(b.contains("pipe=/run/docknet/pipe entries=[]"), "{b}");
    assert!(b.contains("open /run/docknet/pipe/marker: err"), "{b}");
    assert!(
        b.contains(&format!("open {}: err", host_marker.display())),
        "{b}"
    );
    assert!(!b.contains("secret-a"), "{b}");
}

#[test]
fn cli_errors_are_one_line_and_nonzero() {
    let t = tmpdir();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "build",
            "--binary",
            "/nonexistent/bin",
            "--tag",
            "a:b",
            "--out",
        ]
        .into_iter()
        .map(String::from)
        .chain([t.path().join("x").display().to_string()])
        .collect(),
        vec![
            "build",
            "--binary",
            "/proc/self/exe",
            "--tag",
            "bad tag",
            "--out",
            "/tmp/never",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        vec![
            "runc-bundle",
            "--image",
            "/nonexistent/layout",
            "--out",
            "/tmp/never-bundle",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    ];
    for args in cases {
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("docknet-image: error: "), "{args:?}: {err}");
    }
    // A non-empty directory that is not a layout is refused, and left alone.
    let d = t.path().join("notalayout");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("keep"), "x").unwrap();
    let o = Command::new(BIN)
        .args(["build", "--binary"])
        .arg(probe())
        .args(["--tag", TAG, "--out"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
}

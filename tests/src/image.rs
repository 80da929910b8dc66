//! Images for the container tests: a service (dn-httpd, dn-echo) as a minimal static
//! binary and an OCI layout of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bin;
use crate::nic::run_ok;

/// The workspace's root folder.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// Build dn-httpd with `linker/build-minimal.sh` and return the binary's path (from
/// cargo's JSON messages, so any target dir works).
pub fn build_minimal_httpd() -> PathBuf {
    build_minimal("dn-httpd")
}

/// Build the service `package` (whose binary has the same name: `dn-httpd`, `dn-echo`)
/// as a minimal static binary with `linker/build-minimal.sh`, for a `FROM scratch`
/// image; returns the binary's path (from cargo's JSON messages, so any target dir works).
pub fn build_minimal(package: &str) -> PathBuf {
    let ws = workspace();
    let start = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.current_dir(&ws)
        .arg(ws.join("linker/build-minimal.sh"))
        .args(["-p", package, "--message-format=json-render-diagnostics"]);
    let out = run_ok(&mut cmd, Duration::from_secs(30 * 60));
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == package)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| {
            panic!(
                "build-minimal.sh -p {package} printed no executable:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("[image] built {} in {:.1?}", exe.display(), start.elapsed());
    exe
}

/// `docknet-image build --binary BINARY --tag TAG --out LAYOUT`; panics on failure.
pub fn build_image(binary: &Path, tag: &str, layout: &Path) {
    run_ok(
        Command::new(bin("docknet-image"))
            .arg("build")
            .arg("--binary")
            .arg(binary)
            .args(["--tag", tag, "--out"])
            .arg(layout),
        Duration::from_secs(120),
    );
}

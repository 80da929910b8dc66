//! A service started without a usable pipe says so in one line and exits 2.

use std::process::Command;
use std::time::Duration;

use docknet_tests::{bin, run_with_timeout, unique_tmp};

#[test]
fn missing_pipe_is_a_clear_error() {
    let dir = unique_tmp().join("pipes").join("nope");
    let mut cmd = Command::new(bin("dn-echo"));
    cmd.args([
        "client",
        "--to",
        "10.88.0.2:7",
        "--size",
        "10",
        "--count",
        "1",
    ])
    .env("DOCKNET_PIPE", &dir);
    let out =
        run_with_timeout(&mut cmd, Duration::from_secs(20)).unwrap_or_else(|(e, _)| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {}; stderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr:?}");
    assert!(
        lines[0].contains(&*dir.to_string_lossy()),
        "error does not name {}: {}",
        dir.display(),
        lines[0]
    );
    assert!(!stderr.contains("panicked"), "dn-echo panicked: {stderr}");
}

#[test]
fn bad_fault_injection_setting_is_a_clear_error() {
    // Checked before the pipe: a typo in a test's loss setting must not run silently.
    let mut cmd = Command::new(bin("dn-echo"));
    cmd.args(["server", "--port", "7"])
        .env("DOCKNET_PIPE", unique_tmp().join("unused"))
        .env("DOCKNET_DROP_RX", "five percent");
    let out =
        run_with_timeout(&mut cmd, Duration::from_secs(20)).unwrap_or_else(|(e, _)| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr:?}");
    assert!(
        lines[0].contains("DOCKNET_DROP_RX") && lines[0].contains("five percent"),
        "error does not name the setting and its value: {}",
        lines[0]
    );
}

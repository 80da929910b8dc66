//! dn-loadgen against dn-httpd through the master: with `--max-connecting` it opens its
//! connections a few handshakes at a time, reports when all were up, and refuses a limit
//! of 0.

use std::time::Duration;

use docknet_tests::{bin, wait_for_line, Daemon};
use serde_json::Value;

#[test]
fn loadgen_refuses_a_handshake_limit_of_zero() {
    let out = std::process::Command::new(bin("dn-loadgen"))
        .args(["--url", "http://10.0.0.1/", "--max-connecting", "0"])
        .output()
        .expect("run dn-loadgen");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--max-connecting"), "{err}");
}

#[test]
fn loadgen_paced_handshakes_establish_every_connection() {
    const CONNS: u64 = 300;
    let d = Daemon::start();
    d.create_pipe("srv", "10.88.0.2/16", &[]);
    d.create_pipe("cli", "10.88.0.3/16", &[]);
    let (httpd, stdout) = d.spawn_service("srv", "dn-httpd", &["--port", "80"]);
    wait_for_line(stdout, "listening", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("dn-httpd not listening: {e}\n{}", httpd.log_tail()));
    let conns = CONNS.to_string();
    let out = d.run_on(
        "cli",
        "dn-loadgen",
        &[
            "--url",
            "http://10.88.0.2/",
            "-c",
            &conns,
            "--max-connecting",
            "8",
            "-d",
            "1s",
            "--json",
        ],
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dn-loadgen failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_str(text.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("dn-loadgen --json ({e}): {text}"));
    eprintln!("[loadgen] {j}");
    assert_eq!(j["errors"].as_u64(), Some(0), "{j}");
    assert_eq!(j["connections"].as_u64(), Some(CONNS), "{j}");
    assert_eq!(j["established_peak"].as_u64(), Some(CONNS), "{j}");
    let all = j["all_established_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("{j}"));
    assert!(all > 0.0 && all < 30.0, "{j}");
    assert!(j["requests"].as_u64().unwrap_or(0) >= CONNS, "{j}");
}

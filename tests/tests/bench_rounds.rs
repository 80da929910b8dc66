//! `docknet-bench pingpong` and `httpd` with `--runs 2` end to end, made small: every
//! path and size (or connection count) is measured in two rounds, and each point reports
//! one of its runs (the median). Exercises what rounds need: DockNet paths leave the
//! daemon as they found it (their pipes removed), so the next round can make them again;
//! the kernel-bridge path makes its namespaces anew each round. How fast is measured in
//! docs/benchmarks.md, not asserted. Needs root (namespaces, the pipe tmpfs); prints why
//! and passes otherwise.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str], out: &std::path::Path) -> (Value, String) {
    let run = Command::new(docknet_tests::bin("docknet-bench"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run docknet-bench");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        run.status.success(),
        "docknet-bench {args:?} failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(!stdout.contains("FAILED"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("skipped"), "{stdout}\n{stderr}");
    let stem = args[0];
    let json = std::fs::read_to_string(out.join(format!("{stem}.json")))
        .unwrap_or_else(|e| panic!("read {stem}.json: {e}"));
    (serde_json::from_str(&json).expect("JSON report"), stderr)
}

#[test]
fn pingpong_runs_in_rounds() {
    let test = "pingpong_runs_in_rounds";
    if !docknet_tests::need_root(test, "network namespaces and the pipe tmpfs") {
        return;
    }
    let dir = docknet_tests::TempDir::new();
    let (json, stderr) = bench(
        &[
            "pingpong",
            "--paths",
            "kernel-bridge,docknet-master,docknet-fc",
            "--sizes",
            "1K,200K",
            "--count",
            "200",
            "--runs",
            "2",
            "--pipe-mtu",
            "16000",
        ],
        dir.path(),
    );
    assert!(stderr.contains("round 2 of 2"), "{stderr}");
    // Every path once per round, in order, then again.
    let order: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("/3] "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "kernel-bridge",
            "docknet-master",
            "docknet-fc",
            "kernel-bridge",
            "docknet-master",
            "docknet-fc"
        ],
        "{stderr}"
    );
    let results = json["results"].as_array().expect("results");
    assert_eq!(results.len(), 6, "{json}");
    for path in ["kernel-bridge", "docknet-master", "docknet-fc"] {
        for size in ["1K", "200K"] {
            // Both rounds' goodputs are listed, then one row per point.
            let listed = stderr
                .lines()
                .filter(|l| l.contains(path) && l.contains(&format!(" {size} B: runs ")))
                .collect::<Vec<_>>();
            assert_eq!(listed.len(), 1, "{path} {size}:\n{stderr}");
            assert_eq!(
                listed[0]
                    .split(" runs ")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .count(),
                3, // two rates and the unit
                "{}",
                listed[0]
            );
        }
    }
    // Issue 10's bulk targets pair each round's DockNet run with its bridge run.
    let md = std::fs::read_to_string(dir.path().join("pingpong.md")).expect("pingpong.md");
    assert!(md.contains("DockNet paths: pipes of IP MTU 16000"), "{md}");
    // What docknetd lists for the pipes it made, not what was asked.
    assert_eq!(json["pipe_mtu"], 16000, "{json}");
    for path in ["docknet-fc", "docknet-master"] {
        let line = md
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "- {path} at 200 KB, goodput ÷ kernel-bridge's, per round "
                ))
            })
            .unwrap_or_else(|| panic!("no {path} target line:\n{md}"));
        let rounds = line
            .split(" per round ")
            .nth(1)
            .unwrap()
            .split(" = median ")
            .next()
            .unwrap();
        assert_eq!(rounds.split(", ").count(), 2, "{line}");
    }
    for r in results {
        assert!(
            r["result"]["goodput_gbps"]
                .as_f64()
                .is_some_and(|g| g > 0.0),
            "{r}"
        );
    }
}

#[test]
fn httpd_runs_in_rounds() {
    let test = "httpd_runs_in_rounds";
    if !docknet_tests::need_root(test, "the pipe tmpfs") {
        return;
    }
    let httpd = docknet_tests::bin("dn-httpd");
    let dir = docknet_tests::TempDir::new();
    let (json, stderr) = bench(
        &[
            "httpd",
            "--paths",
            "docknet-fc",
            "--conns",
            "16,64",
            "--duration",
            "1",
            "--runs",
            "2",
            "--httpd-bin",
            httpd.to_str().expect("utf-8 path"),
        ],
        dir.path(),
    );
    // Rounds: 16, 64, 16, 64.
    let order: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("conns, run "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(order, ["16", "64", "16", "64"], "{stderr}");
    let results = json["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{json}");
    for r in results {
        assert!(r["result"]["rps"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
    let md = std::fs::read_to_string(dir.path().join("httpd.md")).expect("httpd.md");
    assert!(md.contains("Runs per point: 2 in rounds"), "{md}");
    assert!(md.contains("## Scaling (issue 10)"), "{md}");
    assert!(md.contains("- docknet-fc: 64 connections"), "{md}");
    // The verdict is the median of the two rounds' own ratios.
    let line = md
        .lines()
        .find(|l| l.starts_with("- docknet-fc: 64 connections"))
        .unwrap();
    let rounds = line
        .split("; per round ")
        .nth(1)
        .expect("per-round ratios")
        .split(" = median **")
        .next()
        .unwrap();
    assert_eq!(rounds.split(", ").count(), 2, "{line}");
}

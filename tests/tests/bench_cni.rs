//! `docknet-bench cni` (issue 11) end to end, made small: two pods' namespaces get a pipe
//! from docknet-cni and an eth0 from Debian's bridge plugin; 1 KB and 200 KB ping-pong
//! (200 messages each) over the bridge, through the master and over a fast channel.
//! Checks that every point completes, the report is written and nothing is left behind
//! (namespaces, run and state directories); how fast is measured, not asserted
//! (docs/benchmarks.md, *Pod to pod*). Needs root and /usr/lib/cni/{host-local,bridge};
//! prints why and passes otherwise.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn cni_bench_runs_every_path_and_cleans_up() {
    let test = "cni_bench_runs_every_path_and_cleans_up";
    if !docknet_tests::need_root(test, "network namespaces, docknetd's tmpfs") {
        return;
    }
    for p in ["host-local", "bridge"] {
        if !Path::new("/usr/lib/cni").join(p).exists() {
            eprintln!(
                "skipping {test}: /usr/lib/cni/{p} missing (apt-get install containernetworking-plugins)"
            );
            return;
        }
    }
    let dir = docknet_tests::TempDir::new();
    let child = Command::new(docknet_tests::bin("docknet-bench"))
        .args([
            "cni",
            "--count",
            "200",
            "--warmup",
            "20",
            "--timeout",
            "60",
            "--out",
        ])
        .arg(dir.path())
        .spawn()
        .expect("run docknet-bench cni");
    let pid = child.id();
    let out = child
        .wait_with_output()
        .expect("wait for docknet-bench cni");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "docknet-bench cni failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("FAILED"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("skipped"), "{stdout}\n{stderr}");
    for f in ["cni.md", "cni.svg", "cni.json"] {
        assert!(dir.path().join(f).is_file(), "{f} not written");
    }
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("cni.json")).expect("read cni.json"),
    )
    .expect("cni.json is JSON");
    let results = json["results"].as_array().expect("results");
    let mut seen = Vec::new();
    for r in results {
        let p = &r["result"];
        assert!(p["goodput_gbps"].as_f64().is_some_and(|g| g > 0.0), "{r}");
        assert!(p["one_way_us_p50"].as_f64().is_some_and(|l| l > 0.0), "{r}");
        seen.push(format!("{} {}", r["path"].as_str().unwrap(), r["size"]));
    }
    assert_eq!(
        seen,
        [
            "kernel-cni-bridge 1024",
            "kernel-cni-bridge 204800",
            "docknet-cni-master 1024",
            "docknet-cni-master 204800",
            "docknet-cni-fc 1024",
            "docknet-cni-fc 204800"
        ],
        "{json}"
    );
    // Nothing of this run is left: its namespaces, run and state directories.
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let prefix = format!("dnb{pid}c");
    let listed = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !listed.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left: {listed}"
    );
    for d in [
        format!("dnbench-{pid}-cni"),
        format!("dnbench-{pid}-cni-state"),
    ] {
        assert!(
            !std::env::temp_dir().join(&d).exists(),
            "/tmp/{d} left behind"
        );
    }
}

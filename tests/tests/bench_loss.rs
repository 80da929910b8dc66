//! `docknet-bench loss` (issue 10) end to end, made small: one run of 4 × 1 MiB echoes
//! at 0 and 1% loss on every path (kernel over veth + bridge with nftables drops, DockNet
//! over a fast channel and through the master with `DOCKNET_DROP_RX`). Checks that every
//! cell completes and the report is written; how fast is measured, not asserted
//! (docs/benchmarks.md, *Loss recovery*). Needs root (namespaces), nft and ethtool;
//! prints why and passes otherwise.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn loss_bench_runs_every_path_and_writes_its_report() {
    let test = "loss_bench_runs_every_path_and_writes_its_report";
    if !docknet_tests::need_root(test, "network namespaces for the kernel path") {
        return;
    }
    for (tool, pkg) in [("nft", "nftables"), ("ethtool", "ethtool")] {
        if !on_path(tool) {
            eprintln!("skipping {test}: {tool} not installed (apt-get install {pkg})");
            return;
        }
    }
    let dir = docknet_tests::TempDir::new();
    let out = Command::new(docknet_tests::bin("docknet-bench"))
        .args([
            "loss",
            "--runs",
            "1",
            "--rates",
            "0,1%",
            "--size",
            "1M",
            "--count",
            "4",
            "--timeout",
            "60",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("run docknet-bench loss");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docknet-bench loss failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("skipped"), "{stdout}\n{stderr}");
    for f in ["loss.md", "loss.svg", "loss.json"] {
        assert!(Path::new(&dir.path().join(f)).is_file(), "{f} not written");
    }
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("loss.json")).expect("read loss.json"),
    )
    .expect("loss.json is JSON");
    let cells = json["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 6, "{json}");
    for c in cells {
        assert!(c["median_s"].as_f64().is_some_and(|t| t > 0.0), "{c}");
        if c["rate"] == "1%" {
            // Loss was injected on every path (about 1% of the frames; at least one).
            assert!(c["dropped"].as_u64().is_some_and(|d| d > 0), "{c}");
            assert!(c["received"].as_u64().is_some_and(|r| r > 0), "{c}");
        } else {
            assert_eq!(c["dropped"], 0, "{c}");
        }
    }
}

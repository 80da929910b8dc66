//! Headless Chromium (Debian's `chromium`, issue 4) loads the sample site from dn-httpd
//! through docknetd's TAP: the page's script runs and fetches data.json, every asset is
//! requested (seen on the TAP with tcpdump), and a 1024x768 screenshot is taken and
//! checked (valid PNG, not blank). With DOCKNET_SAVE_SCREENSHOT=1 the screenshot is
//! also written to docs/screenshots/sample-site.png.
//! Needs root (network namespaces, TAP) and chromium; prints why and passes otherwise.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use docknet_tests::httpd::{decode_png, find, HttpdSite};
use docknet_tests::{nic, run_with_timeout, ChildGuard, TempDir};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[test]
fn chromium_loads_the_sample_site_with_all_assets() {
    let _serial = nic::serial();
    if !nic::need_root("chromium_loads_the_sample_site_with_all_assets") {
        return;
    }
    let Some(chrome) = chromium() else {
        eprintln!("SKIPPED chromium_loads_the_sample_site_with_all_assets: chromium missing (apt-get install chromium)");
        return;
    };
    let tmp = TempDir::new();
    let mut s = HttpdSite::start(&[]);
    let ns = s.ns();
    let url = s.url("/");

    // Watch the TAP: the pcap holds every request Chromium made.
    let pcap = tmp.path().join("tap.pcap");
    let mut dump = ns.command("tcpdump");
    dump.args(["-i", &s.site.iface, "-U", "-s", "0", "-n", "-w"])
        .arg(&pcap)
        .arg("tcp port 80")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let tcpdump = ChildGuard {
        child: dump.spawn().expect("spawn tcpdump"),
        name: "tcpdump".into(),
        log: None,
    };
    std::thread::sleep(Duration::from_millis(500)); // let it open the interface

    let run_chrome = |profile: &str, extra: &[&str]| {
        let dir = tmp.path().join(profile);
        std::fs::create_dir_all(&dir).expect("profile dir");
        let mut cmd = ns.command(chrome);
        cmd.env("HOME", &dir)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1024,768",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .args(extra)
            .arg(&url);
        match run_with_timeout(&mut cmd, Duration::from_secs(90)) {
            Ok(o) => o,
            Err((e, o)) => panic!(
                "{e}\nstdout: {}\nstderr: {}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                s.logs()
            ),
        }
    };

    // The DOM after the scripts ran: app.js marked the page and loaded data.json.
    let out = run_chrome("dom", &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("DockNet sample site"),
        "chromium --dump-dom failed ({}):\n{dom}\nstderr: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    assert!(
        dom.contains("JavaScript loaded."),
        "app.js did not run (no \"JavaScript loaded.\"):\n{dom}"
    );
    assert!(
        dom.contains("data.json loaded: hello from dn-httpd"),
        "data.json was not fetched by the page:\n{dom}"
    );
    eprintln!("[browser] DOM: app.js ran and data.json loaded");

    // The screenshot.
    let png_path = tmp.path().join("sample-site.png");
    let shot = format!("--screenshot={}", png_path.display());
    let out = run_chrome("shot", &[&shot]);
    let png = std::fs::read(&png_path).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}); chromium exited {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let img = decode_png(&png).unwrap_or_else(|e| panic!("screenshot is not a valid PNG: {e}"));
    assert_eq!(
        (img.width, img.height),
        (1024, 768),
        "screenshot size {}x{}",
        img.width,
        img.height
    );
    let colors: HashSet<[u8; 4]> = img.rgba.iter().copied().collect();
    assert!(
        colors.len() > 16,
        "the screenshot looks blank: {} distinct colours",
        colors.len()
    );
    eprintln!(
        "[browser] screenshot {}x{}, {} B, {} distinct colours",
        img.width,
        img.height,
        png.len(),
        colors.len()
    );

    // Every asset went over the wire.
    drop(tcpdump_stop(tcpdump));
    let cap = std::fs::read(&pcap).expect("read pcap");
    for path in [
        "/",
        "/style.css",
        "/app.js",
        "/logo.svg",
        "/pattern.png",
        "/data.json",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\n");
        assert!(
            find(&cap, req.as_bytes()).is_some(),
            "Chromium never requested {path} (no {req:?} on the TAP)"
        );
    }
    assert!(
        find(&cap, b"HTTP/1.1 404").is_none() || find(&cap, b"GET /favicon.ico").is_some(),
        "a 404 other than /favicon.ico was served"
    );
    eprintln!("[browser] every asset was requested on the TAP");

    if std::env::var_os("DOCKNET_SAVE_SCREENSHOT").is_some_and(|v| v == "1") {
        let dst = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots/sample-site.png");
        std::fs::create_dir_all(dst.parent().unwrap()).expect("mkdir docs/screenshots");
        std::fs::copy(&png_path, &dst).expect("copy screenshot");
        eprintln!("[browser] saved {}", dst.display());
    }
    assert!(s.httpd_alive(), "dn-httpd exited:\n{}", s.logs());
}

/// Stop tcpdump with SIGINT so it flushes the pcap, then reap it.
fn tcpdump_stop(mut g: ChildGuard) -> ChildGuard {
    std::thread::sleep(Duration::from_millis(300));
    g.signal(libc::SIGINT);
    let _ = g.wait_timeout(Duration::from_secs(5));
    g
}

//! Generates modules from `sample-site/`, compiles them with rustc (`RUSTC` or `rustc` on
//! PATH), runs a small program that looks paths up, and checks what it got back.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use makefsdata::{Options, Site};

const SDE: u64 = 1_700_000_000;

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-site")
}

fn opts() -> Options {
    Options {
        source_date_epoch: Some(SDE),
        ..Options::default()
    }
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())
}

const MAIN: &str = r#"
mod site {
    include!(concat!(env!("OUT_DIR"), "/site.rs"));
}

use std::fmt::Write as _;

fn dump(out: &str, n: usize, f: &site::File) -> String {
    let mut line = format!(
        "{} {} {} dir_index={}",
        f.path, f.status, f.content_type, f.is_dir_index
    );
    let vs = [Some(&f.identity), f.gzip.as_ref(), f.br.as_ref()];
    for v in vs.into_iter().flatten() {
        std::fs::write(format!("{out}/{n}.{}", v.encoding), v.body).unwrap();
        std::fs::write(format!("{out}/{n}.{}.hdr", v.encoding), v.header).unwrap();
        write!(line, " {}={}", v.encoding, v.etag).unwrap();
        // The built-in whole response: what a server assembles for a keep-alive GET.
        let ranges: &[u8] = if f.status == 200 { b"Accept-Ranges: bytes\r\n" } else { b"" };
        let whole = [v.header, ranges, b"\r\n", v.body].concat();
        assert_eq!(v.response, whole.as_slice(), "{} {}", f.path, v.encoding);
    }
    line
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap();
    assert!(site::FILES.windows(2).all(|w| w[0].path < w[1].path));
    for (n, p) in args.enumerate() {
        match site::lookup(&p) {
            Some(f) => println!("{p} => {}", dump(&out, n, f)),
            None => println!("{p} => none is_dir={}", site::is_dir(&p)),
        }
    }
    let nf = site::NOT_FOUND.expect("404 page");
    println!("NOT_FOUND => {}", dump(&out, 999, nf));
    let f = site::lookup("/style.css").unwrap();
    let best = if f.br.is_some() { "br" } else { "gzip" };
    assert_eq!(f.select(true, true).encoding, best);
    assert_eq!(f.select(true, false).encoding, "gzip");
    assert_eq!(f.select(false, false).encoding, "identity");
    assert_eq!(f.body(), f.identity.body);
}
"#;

const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/style.css",
    "/app.js",
    "/logo.svg",
    "/pattern.png",
    "/data.json",
    "/404.html",
    "/docs/",
    "/docs/index.html",
    "/docs",
    "/nope",
    "/docs/nope/",
    "/style.css?v=3",
    "",
    "/index.htm",
    "/index.html/",
];

/// Compiles `dir/main.rs` with OUT_DIR=`dir`, runs it, and returns its stdout lines.
fn compile_and_run(dir: &Path) -> Vec<String> {
    fs::write(dir.join("main.rs"), MAIN).unwrap();
    let exe = dir.join("main");
    let st = Command::new(rustc())
        .args([
            "--edition",
            "2021",
            "-D",
            "warnings",
            "-C",
            "opt-level=0",
            "-o",
        ])
        .arg(&exe)
        .arg(dir.join("main.rs"))
        .env("OUT_DIR", dir)
        .status()
        .expect("run rustc");
    assert!(st.success(), "rustc failed on the generated module");
    let bodies = dir.join("bodies");
    fs::create_dir_all(&bodies).unwrap();
    let out = Command::new(&exe)
        .arg(&bodies)
        .args(PATHS)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn check(dir: &Path, lines: &[String]) {
    let line = |p: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{p} => ")))
            .unwrap_or_else(|| panic!("no line for {p:?}: {lines:#?}"))
            .clone()
    };
    assert!(line("/").starts_with("/ => /index.html 200 text/html; charset=utf-8 dir_index=true"));
    assert!(line("/docs/").starts_with("/docs/ => /docs/index.html 200"));
    assert!(line("/style.css?v=3").starts_with("/style.css?v=3 => /style.css 200 text/css"));
    assert!(line("/pattern.png").contains("image/png"));
    assert!(!line("/pattern.png").contains("gzip="));
    assert!(line("/style.css").contains(" gzip=\""));
    assert_eq!(
        line("/style.css").contains(" br=\""),
        cfg!(feature = "brotli")
    );
    assert_eq!(line("/docs"), "/docs => none is_dir=true");
    assert_eq!(line("/nope"), "/nope => none is_dir=false");
    assert_eq!(line("/docs/nope/"), "/docs/nope/ => none is_dir=false");
    assert_eq!(line(""), " => none is_dir=false");
    assert_eq!(line("/index.htm"), "/index.htm => none is_dir=false");
    assert_eq!(line("/index.html/"), "/index.html/ => none is_dir=false");
    assert!(line("NOT_FOUND").starts_with("NOT_FOUND => /404.html 404"));

    // Bodies equal the source files; compressed variants decompress to them.
    let bodies = dir.join("bodies");
    for (n, p) in PATHS.iter().enumerate() {
        let id = bodies.join(format!("{n}.identity"));
        if !id.exists() {
            continue;
        }
        let path = line(p).split(' ').nth(2).unwrap().to_string();
        let src = fs::read(sample().join(&path[1..])).unwrap();
        assert_eq!(fs::read(&id).unwrap(), src, "{p}");
        let hdr =
            String::from_utf8(fs::read(bodies.join(format!("{n}.identity.hdr"))).unwrap()).unwrap();
        assert!(hdr.starts_with("HTTP/1.1 200 OK\r\n"), "{hdr}");
        assert!(hdr.contains(&format!("\r\nContent-Length: {}\r\n", src.len())));
        assert!(hdr.contains("\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"));
        assert!(hdr.ends_with("\r\n") && !hdr.ends_with("\r\n\r\n"));
        let gz = bodies.join(format!("{n}.gzip"));
        if gz.exists() {
            let z = fs::read(&gz).unwrap();
            assert!(z.len() < src.len());
            let mut d = Vec::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_end(&mut d)
                .unwrap();
            assert_eq!(d, src, "{p} gzip");
            let h = fs::read_to_string(bodies.join(format!("{n}.gzip.hdr"))).unwrap();
            assert!(h.contains(&format!("\r\nContent-Length: {}\r\n", z.len())));
            assert!(h.contains("\r\nContent-Encoding: gzip\r\n"));
        }
        let br = bodies.join(format!("{n}.br"));
        if br.exists() {
            let z = fs::read(&br).unwrap();
            assert!(z.len() < src.len());
            let mut d = Vec::new();
            brotli::BrotliDecompress(&mut &z[..], &mut d).unwrap();
            assert_eq!(d, src, "{p} br");
        }
    }
    let nf = fs::read_to_string(bodies.join("999.identity.hdr")).unwrap();
    assert!(nf.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nf}");
    assert_eq!(
        fs::read(bodies.join("999.identity")).unwrap(),
        fs::read(sample().join("404.html")).unwrap()
    );
}

#[test]
fn blob_module_compiles_and_serves_the_sample_site() {
    let d = tempfile::tempdir().unwrap();
    let site = Site::scan_with(sample(), &opts()).unwrap();
    site.write_files(d.path().join("site.rs")).unwrap();
    let lines = compile_and_run(d.path());
    check(d.path(), &lines);
}

#[test]
fn inline_module_compiles_and_serves_the_sample_site() {
    let d = tempfile::tempdir().unwrap();
    let site = Site::scan_with(sample(), &opts()).unwrap();
    let mut rs = Vec::new();
    site.write_rust(&mut rs).unwrap();
    assert!(!String::from_utf8_lossy(&rs).contains("include_bytes"));
    fs::write(d.path().join("site.rs"), rs).unwrap();
    let lines = compile_and_run(d.path());
    check(d.path(), &lines);
}

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_makefsdata"));
    c.env("SOURCE_DATE_EPOCH", SDE.to_string());
    c
}

#[test]
fn cli_is_deterministic_and_prints_a_summary() {
    let d = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for name in ["a", "b"] {
        let dir = d.path().join(name);
        fs::create_dir(&dir).unwrap();
        let out = cli()
            .arg(sample())
            .arg("-o")
            .arg(dir.join("site.rs"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("makefsdata: 8 files, "), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        outs.push((
            fs::read(dir.join("site.rs")).unwrap(),
            fs::read(dir.join("site.bin")).unwrap(),
        ));
    }
    assert_eq!(outs[0], outs[1]);

    // The library and the CLI agree.
    let site = Site::scan_with(sample(), &opts()).unwrap();
    let (mut rs, mut blob) = (Vec::new(), Vec::new());
    site.write_rust_with_blob(&mut rs, &mut blob, "site.bin")
        .unwrap();
    assert_eq!(outs[0], (rs, blob));

    // --inline writes one file.
    let one = d.path().join("one.rs");
    let st = cli()
        .arg(sample())
        .args(["--inline", "-q", "-o"])
        .arg(&one)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(one.exists() && !d.path().join("one.bin").exists());
}

#[test]
fn cli_errors_are_one_line_and_non_zero() {
    let d = tempfile::tempdir().unwrap();
    let out = cli()
        .arg(d.path().join("missing"))
        .arg("-o")
        .arg(d.path().join("x.rs"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("makefsdata: error: cannot open "), "{err}");
    assert!(err.contains("missing"), "{err}");

    let out = cli()
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .arg(sample())
        .arg("-o")
        .arg(d.path().join("x.rs"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("SOURCE_DATE_EPOCH"), "{err}");
}

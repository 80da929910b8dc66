use super::*;
use std::io::Read;
use std::time::{Duration, SystemTime};

fn opts(sde: Option<u64>) -> Options {
    Options {
        source_date_epoch: sde,
        ..Options::default()
    }
}

fn site_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::write(
        p.join("index.html"),
        "<!doctype html><title>t</title>".repeat(20),
    )
    .unwrap();
    fs::write(
        p.join("404.html"),
        "<!doctype html><h1>Not found</h1>".repeat(5),
    )
    .unwrap();
    fs::write(p.join("style.css"), "body { color: red; }\n".repeat(30)).unwrap();
    fs::write(p.join("tiny.txt"), "x").unwrap();
    fs::write(p.join("img.png"), vec![7u8; 500]).unwrap();
    fs::write(p.join(".hidden"), "secret").unwrap();
    fs::create_dir(p.join(".git")).unwrap();
    fs::write(p.join(".git/config"), "x").unwrap();
    fs::create_dir_all(p.join("docs/api")).unwrap();
    fs::write(p.join("docs/index.html"), "<p>docs</p>").unwrap();
    fs::write(p.join("docs/api/x.json"), "{\"a\": [1, 2, 3]}").unwrap();
    d
}

fn gen(dir: &Path, o: &Options) -> Vec<u8> {
    let mut v = Vec::new();
    Site::scan_with(dir, o).unwrap().write_rust(&mut v).unwrap();
    v
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn scan_lists_sorted_paths_and_skips_hidden() {
    let d = site_dir();
    let site = Site::scan_with(d.path(), &opts(Some(0))).unwrap();
    let paths: Vec<_> = site.files().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/404.html",
            "/docs/api/x.json",
            "/docs/index.html",
            "/img.png",
            "/index.html",
            "/style.css",
            "/tiny.txt"
        ]
    );
    let mut o = opts(Some(0));
    o.include_hidden = true;
    let site = Site::scan_with(d.path(), &o).unwrap();
    let paths: Vec<_> = site.files().iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"/.hidden"));
    assert!(paths.contains(&"/.git/config"));
}

#[test]
fn header_bytes_exact() {
    let d = site_dir();
    let site = Site::scan_with(d.path(), &opts(Some(784_111_777))).unwrap();
    let tiny = site.files().iter().find(|e| e.path == "/tiny.txt").unwrap();
    assert!(tiny.gzip.is_none() && tiny.br.is_none());
    let tag = &tiny.identity.etag;
    assert_eq!(tag.len(), 34);
    assert_eq!(
        String::from_utf8(tiny.identity.header.clone()).unwrap(),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 1\r\n\
             ETag: {tag}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Cache-Control: public, max-age=3600\r\n"
        )
    );

    let css = site
        .files()
        .iter()
        .find(|e| e.path == "/style.css")
        .unwrap();
    let gz = css.gzip.as_ref().unwrap();
    let t = css.identity.etag.trim_matches('"');
    assert_eq!(gz.etag, format!("\"{t}-gz\""));
    assert_eq!(
        String::from_utf8(gz.header.clone()).unwrap(),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/css; charset=utf-8\r\nContent-Length: {}\r\n\
             ETag: \"{t}-gz\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Cache-Control: public, max-age=3600\r\nContent-Encoding: gzip\r\n\
             Vary: Accept-Encoding\r\n",
            gz.body.len()
        )
    );
    // The identity header of a negotiated file carries Vary too.
    let id = String::from_utf8(css.identity.header.clone()).unwrap();
    assert!(id.ends_with("Vary: Accept-Encoding\r\n"), "{id}");
    assert!(!id.contains("Content-Encoding"));

    let html = site
        .files()
        .iter()
        .find(|e| e.path == "/index.html")
        .unwrap();
    assert_eq!(html.cache_control, "no-cache");
    assert!(html.is_dir_index);
}

#[test]
fn etag_is_sha256_prefix() {
    use sha2::Digest;
    let d = site_dir();
    let site = Site::scan_with(d.path(), &opts(Some(0))).unwrap();
    let e = site.files().iter().find(|e| e.path == "/tiny.txt").unwrap();
    let h = hex(&sha2::Sha256::digest(b"x"));
    assert_eq!(e.identity.etag, format!("\"{}\"", &h[..32]));
}

#[test]
fn variants_roundtrip_and_are_smaller() {
    let d = site_dir();
    let site = Site::scan_with(d.path(), &opts(Some(0))).unwrap();
    for e in site.files() {
        if let Some(g) = &e.gzip {
            assert!(g.body.len() < e.identity.body.len());
            assert_eq!(gunzip(&g.body), e.identity.body, "{}", e.path);
            // Deterministic header: mtime 0, no name, OS unknown.
            assert_eq!(&g.body[3..10], &[0, 0, 0, 0, 0, 2, 255]);
        }
        #[cfg(feature = "brotli")]
        if let Some(b) = &e.br {
            assert!(b.body.len() < e.identity.body.len());
            let mut out = Vec::new();
            brotli::BrotliDecompress(&mut &b.body[..], &mut out).unwrap();
            assert_eq!(out, e.identity.body, "{}", e.path);
        }
    }
    let by = |p: &str| site.files().iter().find(|e| e.path == p).unwrap();
    assert!(by("/style.css").gzip.is_some());
    #[cfg(feature = "brotli")]
    assert!(by("/style.css").br.is_some());
    // Compressible (500 equal bytes) but PNG: never compressed.
    assert!(by("/img.png").gzip.is_none() && by("/img.png").br.is_none());
    // Too small to gain.
    assert!(by("/tiny.txt").gzip.is_none());
}

#[test]
fn not_found_page() {
    let d = site_dir();
    let site = Site::scan_with(d.path(), &opts(Some(0))).unwrap();
    let nf = site.not_found().unwrap();
    assert_eq!(nf.status, 404);
    let h = String::from_utf8(nf.identity.header.clone()).unwrap();
    assert!(h.starts_with("HTTP/1.1 404 Not Found\r\n"), "{h}");
    assert!(!h.contains("ETag") && !h.contains("Last-Modified"));
    assert!(h.contains("Cache-Control: no-cache\r\n"));
    // /404.html itself is an ordinary 200 file.
    let page = site.files().iter().find(|e| e.path == "/404.html").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.identity.body, nf.identity.body);

    fs::remove_file(d.path().join("404.html")).unwrap();
    let site = Site::scan_with(d.path(), &opts(Some(0))).unwrap();
    assert!(site.not_found().is_none());
}

#[test]
fn deterministic_output() {
    let d = site_dir();
    let a = gen(d.path(), &opts(None));
    let b = gen(d.path(), &opts(None));
    assert_eq!(a, b);

    // Blob mode too.
    let site = Site::scan_with(d.path(), &opts(None)).unwrap();
    let (mut r1, mut b1, mut r2, mut b2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    site.write_rust_with_blob(&mut r1, &mut b1, "x.bin")
        .unwrap();
    let site = Site::scan_with(d.path(), &opts(None)).unwrap();
    site.write_rust_with_blob(&mut r2, &mut b2, "x.bin")
        .unwrap();
    assert_eq!((r1, b1), (r2, b2));
}

#[test]
fn source_date_epoch_overrides_mtimes() {
    let d1 = site_dir();
    let d2 = site_dir();
    let f = fs::File::options()
        .write(true)
        .open(d2.path().join("style.css"))
        .unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);
    assert_ne!(gen(d1.path(), &opts(None)), gen(d2.path(), &opts(None)));
    assert_eq!(
        gen(d1.path(), &opts(Some(1_700_000_000))),
        gen(d2.path(), &opts(Some(1_700_000_000)))
    );
    let site = Site::scan_with(d2.path(), &opts(None)).unwrap();
    let css = site
        .files()
        .iter()
        .find(|e| e.path == "/style.css")
        .unwrap();
    assert_eq!(css.mtime, 1_000_000);
    assert_eq!(css.last_modified, "Mon, 12 Jan 1970 13:46:40 GMT");
}

#[test]
fn errors_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope");
    let e = Site::scan_with(&missing, &opts(None)).unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
    assert!(e.to_string().contains("nope"), "{e}");

    let file = d.path().join("f.txt");
    fs::write(&file, "x").unwrap();
    let e = Site::scan_with(&file, &opts(None)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: not a directory", file.display())
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_name_is_rejected() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"bad\xffname.txt");
    fs::write(d.path().join(name), "x").unwrap();
    let e = Site::scan_with(d.path(), &opts(None)).unwrap_err();
    assert!(matches!(e, Error::NonUtf8Path(_)), "{e:?}");
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
}

#[cfg(unix)]
#[test]
fn symlink_loop_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("a")).unwrap();
    std::os::unix::fs::symlink("..", d.path().join("a/up")).unwrap();
    let e = Site::scan_with(d.path(), &opts(None)).unwrap_err();
    assert!(matches!(e, Error::SymlinkLoop(_)), "{e:?}");
}

#[test]
fn inputs_cover_dirs_and_files() {
    let d = site_dir();
    let site = Site::scan_with(d.path(), &opts(None)).unwrap();
    let inputs = site.inputs();
    assert!(inputs.contains(&d.path().to_path_buf()));
    assert!(inputs.contains(&d.path().join("docs/api")));
    assert!(inputs.contains(&d.path().join("docs/api/x.json")));
    assert!(!inputs.contains(&d.path().join(".hidden")));
}

#[test]
fn stats_add_up() {
    let d = site_dir();
    let site = Site::scan_with(d.path(), &opts(None)).unwrap();
    let s = site.stats();
    assert_eq!(s.files, 7);
    let total: u64 = site
        .files()
        .iter()
        .map(|e| e.identity.body.len() as u64)
        .sum();
    assert_eq!(s.bytes, total);
    assert!(s.gzip_files >= 3);
}

#[test]
fn write_files_writes_rs_and_blob() {
    let d = site_dir();
    let out = tempfile::tempdir().unwrap();
    let site = Site::scan_with(d.path(), &opts(Some(0))).unwrap();
    let rs = out.path().join("gen/site.rs");
    let blob = site.write_files(&rs).unwrap();
    assert_eq!(blob, out.path().join("gen/site.bin"));
    let text = fs::read_to_string(&rs).unwrap();
    assert!(text.contains("include_bytes!(\"site.bin\")"));
    let b = fs::read(&blob).unwrap();
    assert!(!b.is_empty());
}

#[test]
fn build_writes_module_and_returns_stats() {
    let d = site_dir();
    let out = tempfile::tempdir().unwrap();
    let rs = out.path().join("site.rs");
    let stats = build_with(d.path(), &rs, &opts(Some(0))).unwrap();
    assert_eq!(stats.files, 7);
    assert!(rs.exists() && out.path().join("site.bin").exists());
    // Unchanged output is not rewritten (keeps mtimes, so nothing rebuilds).
    let t = fs::metadata(&rs).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    build_with(d.path(), &rs, &opts(Some(0))).unwrap();
    assert_eq!(fs::metadata(&rs).unwrap().modified().unwrap(), t);
}

#[test]
fn whole_responses_for_small_bodies_only() {
    let d = site_dir();
    fs::write(d.path().join("big.bin"), vec![1u8; RESPONSE_MAX_BODY + 1]).unwrap();
    fs::write(d.path().join("edge.bin"), vec![2u8; RESPONSE_MAX_BODY]).unwrap();
    let site = Site::scan_with(d.path(), &opts(Some(784_111_777))).unwrap();
    let file = |p: &str| site.files().iter().find(|e| e.path == p).unwrap();
    let tiny = &file("/tiny.txt").identity;
    let mut want = tiny.header.clone();
    want.extend_from_slice(b"Accept-Ranges: bytes\r\n\r\nx");
    assert_eq!(full_response(200, tiny), Some(want));
    assert!(full_response(200, &file("/edge.bin").identity).is_some());
    assert_eq!(full_response(200, &file("/big.bin").identity), None);
    // A 404 does not offer ranges.
    let nf = &site.not_found().unwrap().identity;
    let mut want = nf.header.clone();
    want.extend_from_slice(b"\r\n");
    want.extend_from_slice(&nf.body);
    assert_eq!(full_response(404, nf), Some(want));
    // The generated module holds them (and only one copy of each).
    let src = String::from_utf8(gen(d.path(), &opts(Some(784_111_777)))).unwrap();
    assert_eq!(src.matches("response: &[]").count(), 1, "big.bin only");
}

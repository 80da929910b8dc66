//! dn-httpd (issue 4) over the TAP backend: the host kernel, in the namespace holding
//! docknetd's TAP, fetches the compiled-in sample site with curl: every file byte-equal
//! to its source, gzip negotiation, ETag → 304, HEAD, ranges (206/416), and the site's
//! 404 page; and methods it does not serve (POST, PUT, DELETE) are answered 405 with
//! `Allow`, their bodies (Content-Length or chunked, up to 100,000 bytes) skipped so a
//! pipelined GET after them is served on the same connection.
//! Needs root (network namespaces, TAP); prints why and passes otherwise.

use docknet_tests::httpd::{curl_i, curl_raw, gunzip, site_file, site_files, HttpdSite};
use docknet_tests::nic;

#[test]
fn httpd_serves_the_sample_site_over_tap() {
    let _serial = nic::serial();
    if !nic::need_root("httpd_serves_the_sample_site_over_tap") {
        return;
    }
    let mut s = HttpdSite::start(&[]);
    let ns = s.ns();

    // (a) Every file (and the directory indexes) byte-equal to its source.
    let files = site_files();
    for (path, file) in &files {
        let want = std::fs::read(file).expect("read site file");
        let r = curl_i(ns, &[&s.url(path)]);
        assert_eq!(r.status, 200, "GET {path}: {}\n{}", r.head_text(), s.logs());
        assert!(
            r.body == want,
            "GET {path}: body differs from {} ({} bytes vs {})\n{}",
            file.display(),
            r.body.len(),
            want.len(),
            r.head_text()
        );
        assert_eq!(
            r.header("content-length"),
            Some(want.len().to_string().as_str()),
            "GET {path}: {}",
            r.head_text()
        );
        assert!(r.header("etag").is_some(), "GET {path}: no ETag");
        assert!(
            r.header("content-type").is_some(),
            "GET {path}: no Content-Type"
        );
        eprintln!(
            "[httpd] GET {path}: 200, {} bytes, {}",
            r.body.len(),
            r.header("content-type").unwrap_or("")
        );
    }
    // Content types of a few well-known files.
    for (path, ct) in [
        ("/", "text/html"),
        ("/style.css", "text/css"),
        ("/app.js", "javascript"),
        ("/data.json", "application/json"),
        ("/logo.svg", "image/svg+xml"),
        ("/pattern.png", "image/png"),
    ] {
        let r = curl_i(ns, &["-I", &s.url(path)]);
        let got = r.header("content-type").unwrap_or("");
        assert!(
            got.contains(ct),
            "HEAD {path}: Content-Type {got:?}, expected {ct}"
        );
    }

    // (b) gzip for the text assets: the gunzipped bytes equal the source.
    for rel in ["style.css", "app.js"] {
        let want = site_file(rel);
        let url = s.url(&format!("/{rel}"));
        let r = curl_i(ns, &["-H", "Accept-Encoding: gzip", &url]);
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert_eq!(
            r.header("content-encoding"),
            Some("gzip"),
            "GET /{rel} with Accept-Encoding: gzip:\n{}",
            r.head_text()
        );
        assert!(
            r.header("vary")
                .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
            "gzip response without Vary: Accept-Encoding:\n{}",
            r.head_text()
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert!(r.body.len() < want.len(), "gzip variant is not smaller");
        assert!(
            gunzip(&r.body) == want,
            "gunzipped /{rel} differs from the source"
        );
        // curl --compressed: whatever it negotiated, it decodes to the source.
        let c = curl_i(ns, &["--compressed", &url]);
        assert_eq!(c.status, 200);
        assert!(
            c.body == want,
            "curl --compressed /{rel} (Content-Encoding {:?}) differs from the source",
            c.header("content-encoding")
        );
        eprintln!(
            "[httpd] /{rel}: gzip {} of {} bytes; --compressed got {:?}",
            r.body.len(),
            want.len(),
            c.header("content-encoding")
        );
    }
    // An image is served as-is even when gzip is accepted.
    let r = curl_i(ns, &["-H", "Accept-Encoding: gzip", &s.url("/pattern.png")]);
    assert_eq!(r.header("content-encoding"), None, "{}", r.head_text());
    assert!(r.body == site_file("pattern.png"));

    // (c) ETag → 304 without a body (identity and gzip representations).
    for (path, enc) in [("/", None), ("/style.css", Some("gzip"))] {
        let mut args: Vec<&str> = Vec::new();
        let hdr = enc.map(|e| format!("Accept-Encoding: {e}"));
        if let Some(h) = &hdr {
            args.extend(["-H", h.as_str()]);
        }
        let url = s.url(path);
        let mut first_args = args.clone();
        first_args.push(&url);
        let first = curl_i(ns, &first_args);
        let etag = first
            .header("etag")
            .unwrap_or_else(|| panic!("GET {path}: no ETag:\n{}", first.head_text()))
            .to_string();
        let inm = format!("If-None-Match: {etag}");
        let mut second_args = args.clone();
        second_args.extend(["-H", inm.as_str(), &url]);
        let second = curl_i(ns, &second_args);
        assert_eq!(
            second.status,
            304,
            "GET {path} with {inm}:\n{}",
            second.head_text()
        );
        assert!(second.body.is_empty(), "304 with a body: {:?}", second.body);
        assert_eq!(second.header("etag"), Some(etag.as_str()));
        // A different tag gets the full body again.
        let third = curl_i(ns, &["-H", "If-None-Match: \"nope\"", &url]);
        assert_eq!(third.status, 200);
        eprintln!("[httpd] {path} ({enc:?}): ETag {etag} → 304");
    }

    // (d) HEAD: the headers (Content-Length = file size), no body.
    for (path, file) in &files {
        let size = std::fs::metadata(file).expect("stat").len();
        let r = curl_i(ns, &["-I", &s.url(path)]);
        assert_eq!(r.status, 200, "HEAD {path}: {}", r.head_text());
        assert_eq!(
            r.header("content-length"),
            Some(size.to_string().as_str()),
            "HEAD {path}:\n{}",
            r.head_text()
        );
        assert!(r.body.is_empty(), "HEAD {path} returned a body");
        assert!(r.header("etag").is_some());
    }
    // curl -I does not read a body; check on the wire too that none follows (a raw
    // keep-alive connection: HEAD then GET, the GET's response must come right after).
    {
        use docknet_tests::httpd::{connect_in, read_reply};
        use std::io::Write;
        use std::time::Duration;
        let mut c = connect_in(ns, s.addr(), Duration::from_secs(5)).expect("connect");
        c.write_all(b"HEAD /data.json HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let r = read_reply(&mut c, 1, false, true, Duration::from_secs(5));
        assert_eq!(r.statuses(), [200], "{:?}", r);
        c.write_all(b"GET /data.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("write");
        let g = read_reply(&mut c, 1, true, false, Duration::from_secs(5));
        assert_eq!(g.statuses(), [200], "HEAD left bytes behind? {:?}", g);
        assert!(g.responses[0].body == site_file("data.json"));
        assert!(g.closed);
    }

    // (e) Ranges.
    let png = site_file("pattern.png");
    let len = png.len();
    for (range, a, b) in [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, len - 1),
        ("bytes=-50", len - 50, len - 1),
        (&format!("bytes=10-{}", len + 1000)[..], 10, len - 1),
    ] {
        let r = curl_i(
            ns,
            &["-H", &format!("Range: {range}"), &s.url("/pattern.png")],
        );
        assert_eq!(r.status, 206, "Range {range}:\n{}", r.head_text());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{b}/{len}").as_str()),
            "Range {range}"
        );
        assert!(r.body == png[a..=b], "Range {range}: wrong bytes");
    }
    let r = curl_i(ns, &["-H", "Range: bytes=999999-", &s.url("/pattern.png")]);
    assert_eq!(r.status, 416, "{}", r.head_text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // curl's own -r option, on a compressible file: ranges apply to the identity bytes.
    let css = site_file("style.css");
    let out = curl_raw(ns, &["-r", "5-24", &s.url("/style.css")]);
    assert!(out.status.success());
    assert!(
        out.stdout == css[5..=24],
        "curl -r 5-24 got {:?}",
        out.stdout
    );

    // (f) A missing path: 404 with the site's 404.html.
    let r = curl_i(ns, &[&s.url("/no/such/page.html")]);
    assert_eq!(r.status, 404, "{}", r.head_text());
    assert!(
        r.body == site_file("404.html"),
        "404 body is not 404.html: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    // A directory without its slash is redirected.
    let r = curl_i(ns, &[&s.url("/docs")]);
    assert_eq!(r.status, 301, "{}", r.head_text());
    assert_eq!(r.header("location"), Some("/docs/"));

    // (g) A keep-alive HTTP/1.1 GET is answered with the response built in at compile
    // time (sent without copying); it must be byte for byte what the server assembles
    // for the same GET with `Connection: close`, less that line. Three pipelined on one
    // connection (several pre-built responses queued in one socket at once), for every
    // file, its gzip variant and the 404 page.
    {
        use docknet_tests::httpd::{exchange, find, lossy, parse_response};
        use std::time::Duration;
        let mut cases: Vec<(String, &str)> = files.iter().map(|(p, _)| (p.clone(), "")).collect();
        cases.push(("/style.css".into(), "Accept-Encoding: gzip\r\n"));
        cases.push(("/no/such/page.html".into(), ""));
        for (path, extra) in &cases {
            let get = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}");
            let request = format!("{get}\r\n{get}\r\n{get}Connection: close\r\n\r\n");
            let r = exchange(
                ns,
                s.addr(),
                request.as_bytes(),
                3,
                true,
                Duration::from_secs(5),
            );
            assert_eq!(r.responses.len(), 3, "GET {path} x3: {:?}", r.statuses());
            let mut raw: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            while let Some((_, n)) = parse_response(&r.bytes[at..], false) {
                raw.push(&r.bytes[at..at + n]);
                at += n;
            }
            let line: &[u8] = b"Connection: close\r\n";
            let cut = find(raw[2], line).expect("the last response says Connection: close");
            let assembled = [&raw[2][..cut], &raw[2][cut + line.len()..]].concat();
            let head = |b: &[u8]| lossy(&b[..find(b, b"\r\n\r\n").map_or(b.len(), |e| e + 4)]);
            for (i, built) in raw[..2].iter().enumerate() {
                assert!(
                    *built == assembled,
                    "GET {path} {extra:?} #{i}: pre-built response differs ({} vs {} bytes):\n{}---\n{}",
                    built.len(),
                    assembled.len(),
                    head(built),
                    head(&assembled)
                );
            }
            assert!(r.closed, "GET {path}: not closed after Connection: close");
        }
        eprintln!(
            "[httpd] pre-built responses equal assembled ones ({} cases)",
            cases.len()
        );
    }

    assert!(s.httpd_alive(), "dn-httpd exited:\n{}", s.logs());
}

/// A request for `method` with a body of `size` bytes (Content-Length, or chunked in
/// pieces of at most 4000 bytes with an extension and a trailer), then a pipelined GET.
fn refused_then_get(method: &str, size: usize, chunked: bool) -> Vec<u8> {
    let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req = Vec::new();
    if chunked {
        req.extend_from_slice(
            format!("{method} /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                .as_bytes(),
        );
        for piece in body.chunks(4000) {
            req.extend_from_slice(format!("{:x};n=1\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    } else {
        req.extend_from_slice(
            format!("{method} /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n")
                .as_bytes(),
        );
        req.extend_from_slice(&body);
    }
    req.extend_from_slice(b"GET /data.json HTTP/1.1\r\nHost: t\r\n\r\n");
    req
}

#[test]
fn httpd_answers_other_methods_405_and_stays_in_step() {
    use docknet_tests::httpd::{connect_in, lossy, read_reply, Reply};
    use std::io::Write;
    use std::time::{Duration, Instant};

    let _serial = nic::serial();
    if !nic::need_root("httpd_answers_other_methods_405_and_stays_in_step") {
        return;
    }
    // A receive buffer smaller than the largest body: it must be skipped as it streams.
    let mut s = HttpdSite::start(&["--rx-buffer", "16384"]);
    let ns = s.ns();
    let data = site_file("data.json");
    let check = |what: &str, r: &Reply, pairs: usize| {
        let want: Vec<u16> = [405, 200].repeat(pairs);
        assert_eq!(
            r.statuses(),
            want,
            "{what}: received {}\n{}",
            lossy(&r.bytes),
            s.logs()
        );
        for pair in r.responses.chunks(2) {
            let (refused, got) = (&pair[0], &pair[1]);
            assert_eq!(
                refused.status_line, "HTTP/1.1 405 Method Not Allowed",
                "{what}"
            );
            assert_eq!(refused.header("allow"), Some("GET, HEAD"), "{what}");
            assert_eq!(
                refused.header("connection"),
                None,
                "{what}: the 405 should keep the connection"
            );
            assert!(got.body == data, "{what}: the GET's body differs");
        }
        assert!(!r.closed, "{what}: the server closed the connection");
    };

    // Each refused request and its GET in one write, on a new connection.
    let mut everything = Vec::new();
    let mut pairs = 0;
    for chunked in [false, true] {
        for method in ["POST", "PUT", "DELETE"] {
            for size in [0, 3, 100_000] {
                let what = format!(
                    "{method} with {size} bytes ({})",
                    if chunked { "chunked" } else { "Content-Length" }
                );
                let req = refused_then_get(method, size, chunked);
                everything.extend_from_slice(&req);
                pairs += 1;
                let start = Instant::now();
                let mut c = connect_in(ns, s.addr(), Duration::from_secs(5)).expect("connect");
                let _ = c.set_nodelay(true);
                c.write_all(&req)
                    .unwrap_or_else(|e| panic!("{what}: write: {e}\n{}", s.logs()));
                let r = read_reply(&mut c, 2, false, false, Duration::from_secs(10));
                check(&what, &r, 1);
                eprintln!("[httpd] {what} + GET: 405, 200 in {:.0?}", start.elapsed());
            }
        }
    }
    // All eighteen back to back on one connection, in one write.
    let mut c = connect_in(ns, s.addr(), Duration::from_secs(5)).expect("connect");
    c.write_all(&everything).expect("write");
    let r = read_reply(&mut c, 2 * pairs, false, false, Duration::from_secs(20));
    check("all on one connection", &r, pairs);
    eprintln!(
        "[httpd] {pairs} refused requests ({} bytes) and their GETs on one connection: ok",
        everything.len()
    );

    // Connection: close on the refused request: 405, its body read, then closed.
    let mut c = connect_in(ns, s.addr(), Duration::from_secs(5)).expect("connect");
    let mut req =
        b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n"
            .to_vec();
    req.resize(req.len() + 100_000, b'z');
    c.write_all(&req).expect("write");
    let r = read_reply(&mut c, 1, true, false, Duration::from_secs(10));
    assert_eq!(r.statuses(), [405], "{}", lossy(&r.bytes));
    assert_eq!(r.responses[0].header("connection"), Some("close"));
    assert!(r.closed, "Connection: close should close after the 405");
    // Broken chunked framing after the 405: the connection is closed, the bytes after
    // it are not taken for a request.
    let mut c = connect_in(ns, s.addr(), Duration::from_secs(5)).expect("connect");
    c.write_all(
        b"PUT / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\nGET /data.json HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .expect("write");
    let r = read_reply(&mut c, 1, true, false, Duration::from_secs(10));
    assert_eq!(r.statuses(), [405], "{}", lossy(&r.bytes));
    assert!(r.closed, "broken chunked framing should close");
    eprintln!("[httpd] Connection: close and broken chunked framing: 405, closed");

    assert!(s.httpd_alive(), "dn-httpd exited:\n{}", s.logs());
}

//! HTTP/1.1 request parsing for dn-httpd: no allocation, bounded, total (never panics).
//!
//! `parse` looks at the bytes received so far on a connection and answers either
//! "need more bytes", a parsed request (with how many bytes it used, so pipelined requests
//! follow), or the error status to answer before closing.

/// Limits on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request target (URI), bytes: longer → 414.
    pub max_target: usize,
    /// Largest request head (request line + headers), bytes: larger → 431.
    pub max_head: usize,
    /// Most header fields: more → 431.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_target: 2048,
            max_head: 8192,
            max_headers: 64,
        }
    }
}

/// Request methods we serve; anything else is answered 405.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// A requested byte range (`Range: bytes=...`), before it is applied to a file length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=first-last` (last inclusive) or `bytes=first-` (last = None).
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// The inclusive byte interval this range selects in a body of `len` bytes, or `None`
    /// if it is unsatisfiable (→ 416).
    pub fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            RangeSpec::From { first, last } => {
                if first >= len {
                    return None;
                }
                let last = last.map_or(len - 1, |l| l.min(len - 1));
                (last >= first).then_some((first, last))
            }
            RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(n) => (len > 0).then(|| (len.saturating_sub(n), len - 1)),
        }
    }
}

/// A parsed request. Borrowed slices point into the connection's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path, without query string or fragment.
    pub path: &'a str,
    /// HTTP/1.0 (false) or HTTP/1.1 (true).
    pub http11: bool,
    /// The client wants the connection kept open after this response.
    pub keep_alive: bool,
    pub accepts_gzip: bool,
    pub accepts_br: bool,
    /// Raw `If-None-Match` value.
    pub if_none_match: Option<&'a [u8]>,
    /// A single byte range; `None` also for multi-range or unparsable Range headers
    /// (the full body is served then, as RFC 9110 allows).
    pub range: Option<RangeSpec>,
    /// Raw `If-Range` value: a range applies only if it matches the ETag.
    pub if_range: Option<&'a [u8]>,
}

/// Outcome of looking at the buffered bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// The head is incomplete; read more (the caller enforces `max_head` meanwhile via
    /// `parse`'s own check).
    Incomplete,
    /// A complete request that used `len` bytes of the buffer.
    Done { req: Request<'a>, len: usize },
    /// Answer with this status and close the connection.
    Error(u16),
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn eq_ignore_case(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn has_token(list: &[u8], token: &str) -> bool {
    list.split(|&b| b == b',').any(|item| {
        let item = trim(item);
        let name = item.split(|&b| b == b';').next().unwrap_or(&[]);
        if !eq_ignore_case(trim(name), token) {
            return false;
        }
        // `;q=0` means "not acceptable".
        !item.split(|&b| b == b';').skip(1).any(|p| {
            let p = trim(p);
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case(b"q=")
                && trim(&p[2..]).iter().all(|&c| c == b'0' || c == b'.')
        })
    })
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn parse_range(v: &[u8]) -> Option<RangeSpec> {
    let v = trim(v);
    let spec = v.strip_prefix(b"bytes=")?;
    if spec.contains(&b',') {
        return None; // multiple ranges: serve the whole body
    }
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (a, b) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    if a.is_empty() {
        return Some(RangeSpec::Suffix(parse_u64(b)?));
    }
    let first = parse_u64(a)?;
    let last = if b.is_empty() {
        None
    } else {
        Some(parse_u64(b)?)
    };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    Some(RangeSpec::From { first, last })
}

/// Percent-decoding is not done: paths are matched as sent, and anything outside the
/// safe set (or a `..` segment) is refused with 400/404 by the caller. This keeps the
/// parser allocation-free.
fn path_ok(p: &[u8]) -> bool {
    p.first() == Some(&b'/')
        && p.iter().all(|&c| c.is_ascii_graphic())
        && !p.split(|&c| c == b'/').any(|seg| seg == b"..")
}

/// Parse one request from the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parse<'a> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.contains(&0) {
            return Parse::Error(400);
        }
        if buf.len() > limits.max_head {
            // Tell a too-long request line (414) from too-large headers (431).
            let line_end = buf.windows(2).position(|w| w == b"\r\n");
            return Parse::Error(if line_end.is_none_or(|e| e > limits.max_target + 16) {
                414
            } else {
                431
            });
        }
        return Parse::Incomplete;
    };
    let head = &buf[..end];
    let len = end + 4;
    if head.contains(&0) {
        return Parse::Error(400);
    }
    // Bare CR or bare LF: a front end that splits lines differently would see other
    // requests than we do (RFC 9112 §2.2), so refuse them.
    let bare_cr =
        head.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n') || head.last() == Some(&b'\r');
    let bare_lf =
        head.first() == Some(&b'\n') || head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r');
    if bare_cr || bare_lf {
        return Parse::Error(400);
    }
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or(&[]);
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parse::Error(400);
    };
    if target.len() > limits.max_target {
        return Parse::Error(414);
    }
    if head.len() > limits.max_head {
        return Parse::Error(431);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        v if v.starts_with(b"HTTP/") => return Parse::Error(505),
        _ => return Parse::Error(400),
    };
    if method.is_empty() || !method.iter().all(|c| c.is_ascii_uppercase() || *c == b'-') {
        return Parse::Error(400);
    }
    let path_end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let path = &target[..path_end];
    if !path_ok(path) {
        return Parse::Error(400);
    }
    let mut req = Request {
        method: Method::Get,
        path: std::str::from_utf8(path).unwrap_or("/"),
        http11,
        keep_alive: http11,
        accepts_gzip: false,
        accepts_br: false,
        if_none_match: None,
        range: None,
        if_range: None,
    };
    let mut n = 0;
    let mut host = false;
    for line in lines {
        n += 1;
        if n > limits.max_headers {
            return Parse::Error(431);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parse::Error(400);
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || name.iter().any(|&c| c == b' ' || c == b'\t') {
            return Parse::Error(400); // no whitespace before the colon (RFC 9112 §5.1)
        }
        match name.to_ascii_lowercase().as_slice() {
            b"host" => {
                if host {
                    return Parse::Error(400); // RFC 9112 §3.2: exactly one Host
                }
                host = true;
            }
            b"connection" => {
                if has_token(value, "close") {
                    req.keep_alive = false;
                } else if has_token(value, "keep-alive") {
                    req.keep_alive = true;
                }
            }
            b"accept-encoding" => {
                req.accepts_gzip = has_token(value, "gzip");
                req.accepts_br = has_token(value, "br");
            }
            b"if-none-match" => req.if_none_match = Some(value),
            b"range" => req.range = parse_range(value),
            b"if-range" => req.if_range = Some(value),
            b"content-length" => match parse_u64(value) {
                Some(0) => {}
                Some(_) => return Parse::Error(413), // GET/HEAD carry no body here
                None => return Parse::Error(400),
            },
            b"transfer-encoding" => return Parse::Error(413),
            _ => {}
        }
    }
    if http11 && !host {
        return Parse::Error(400); // RFC 9112 §3.2: HTTP/1.1 requests carry Host
    }
    req.method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => return Parse::Error(405),
    };
    Parse::Done { req, len }
}

/// True if an `If-None-Match` value matches `etag` (weak comparison; `*` matches).
pub fn etag_matches(if_none_match: &[u8], etag: &str) -> bool {
    fn strip(t: &[u8]) -> &[u8] {
        let t = trim(t);
        t.strip_prefix(b"W/").unwrap_or(t)
    }
    let want = strip(etag.as_bytes());
    trim(if_none_match) == b"*"
        || if_none_match
            .split(|&b| b == b',')
            .any(|t| strip(t) == want)
}

/// Reason phrase of the statuses dn-httpd sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parse<'_> {
        parse(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn parses_a_simple_get_and_pipelines() {
        let two = "GET /a.css?x=1 HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip, br;q=0\r\n\r\nHEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        let Parse::Done { req, len } = p(two) else {
            panic!()
        };
        assert_eq!(
            (
                req.method,
                req.path,
                req.keep_alive,
                req.accepts_gzip,
                req.accepts_br
            ),
            (Method::Get, "/a.css", true, true, false)
        );
        let Parse::Done { req, len: len2 } = parse(&two.as_bytes()[len..], &Limits::default())
        else {
            panic!()
        };
        assert_eq!(
            (req.method, req.path, req.keep_alive),
            (Method::Head, "/", false)
        );
        assert_eq!(len + len2, two.len());
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        assert_eq!(p("GET / HTTP/1.1\r\nHost: h\r\n"), Parse::Incomplete);
        assert_eq!(p(""), Parse::Incomplete);
    }

    #[test]
    fn errors_get_the_right_status() {
        assert_eq!(p("POST / HTTP/1.1\r\nHost: h\r\n\r\n"), Parse::Error(405));
        assert_eq!(p("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), Parse::Error(505));
        assert_eq!(p("GET / FOO\r\n\r\n"), Parse::Error(400));
        assert_eq!(p("GET /\r\n\r\n"), Parse::Error(400));
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Parse::Error(400), "no Host");
        assert_eq!(p("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), Parse::Error(400));
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: h\r\nX: y\rContent-Length: 30\r\n\r\n"),
            Parse::Error(400),
            "bare CR"
        );
        assert_eq!(
            p("GET / HTTP/1.1\nHost: h\r\n\r\n"),
            Parse::Error(400),
            "bare LF"
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n"),
            Parse::Error(400),
            "two Hosts"
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: h\r\nbroken\r\n\r\n"),
            Parse::Error(400)
        );
        assert_eq!(
            p("GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n"),
            Parse::Error(400)
        );
        assert_eq!(
            p("GET /../etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n"),
            Parse::Error(400)
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"),
            Parse::Error(413)
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parse::Error(413)
        );
        let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(3000));
        assert_eq!(p(&long), Parse::Error(414));
        let long_unfinished = format!("GET /{}", "a".repeat(9000));
        assert_eq!(p(&long_unfinished), Parse::Error(414));
        let big = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n", "b".repeat(9000));
        assert_eq!(p(&big), Parse::Error(431));
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(
            p(&format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n")),
            Parse::Error(431)
        );
    }

    #[test]
    fn ranges() {
        let r = |v: &str| parse_range(v.as_bytes());
        assert_eq!(
            r("bytes=0-99"),
            Some(RangeSpec::From {
                first: 0,
                last: Some(99)
            })
        );
        assert_eq!(
            r("bytes=100-"),
            Some(RangeSpec::From {
                first: 100,
                last: None
            })
        );
        assert_eq!(r("bytes=-5"), Some(RangeSpec::Suffix(5)));
        assert_eq!(r("bytes=5-1"), None);
        assert_eq!(r("bytes=0-1,5-9"), None);
        assert_eq!(r("items=0-1"), None);
        assert_eq!(r("bytes=x-1"), None);
        assert_eq!(
            RangeSpec::From {
                first: 0,
                last: Some(99)
            }
            .resolve(50),
            Some((0, 49))
        );
        assert_eq!(
            RangeSpec::From {
                first: 50,
                last: None
            }
            .resolve(50),
            None
        );
        assert_eq!(RangeSpec::Suffix(10).resolve(4), Some((0, 3)));
        assert_eq!(RangeSpec::Suffix(0).resolve(4), None);
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches(b"\"abc\"", "\"abc\""));
        assert!(etag_matches(b"W/\"abc\", \"x\"", "\"abc\""));
        assert!(etag_matches(b"*", "\"abc\""));
        assert!(!etag_matches(b"\"abd\"", "\"abc\""));
    }

    #[test]
    fn never_panics_on_junk() {
        let mut x: u64 = 1;
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let alphabet = b"GET HEAD / HTTP/1.1\r\n:Host:Range: bytes=-0,9\0\xff\t";
            buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            if buf.len() > 300 {
                buf.clear();
            }
            let _ = parse(&buf, &Limits::default());
        }
    }
}

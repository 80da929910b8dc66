//! HTTP/1.1 request parsing for dn-httpd: no allocation, bounded, total (never panics).
//!
//! `parse` looks at the bytes received so far on a connection and answers either
//! "need more bytes", a parsed request (with how many bytes it used, so pipelined requests
//! follow), a request whose method we do not serve (405, with how its body is framed), or
//! the error status to answer before closing. [`BodySkip`] then steps over such a body
//! (Content-Length or chunked) in whatever pieces it arrives, keeping nothing, so the
//! next pipelined request is found.

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

/// Request methods we serve; anything else is answered 405 with `Allow:` [`ALLOW`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// The methods we serve, as the `Allow` header of a 405 lists them.
pub const ALLOW: &str = "GET, HEAD";

/// How the body of a request is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body: neither Content-Length (or `Content-Length: 0`) nor Transfer-Encoding.
    None,
    /// `Content-Length: n`, n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked` (chunked the last coding).
    Chunked,
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
    /// A well-formed request for a method we do not serve: answer 405 with `Allow`, then
    /// skip its `body` (after the `len` bytes of the head) and go on with the next
    /// request, or close if `keep_alive` is false.
    NotAllowed {
        len: usize,
        body: Body,
        keep_alive: bool,
        http11: bool,
        /// `Expect: 100-continue` on an HTTP/1.1 request: the client may be holding the
        /// body back until it hears from us.
        expect_continue: bool,
    },
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

/// What one pass over a request's bytes found, up to the end of its head.
struct HeadScan {
    /// Where the head ends: the offset of the first `\r\n\r\n`.
    end: Option<usize>,
    /// A NUL byte in the head (or anywhere in `buf`, when the head is not complete).
    nul: bool,
    /// A CR not followed by LF, or an LF not preceded by CR, in the head.
    bare: bool,
}

/// One pass over `buf` up to the end of the head (four passes before: the end, NULs,
/// bare CRs, bare LFs; they were the most of dn-httpd's parsing time).
fn scan_head(buf: &[u8]) -> HeadScan {
    let (mut nul, mut bare) = (false, false);
    for (i, &b) in buf.iter().enumerate() {
        match b {
            0 => nul = true,
            b'\r' if buf.get(i + 1).is_some_and(|&n| n != b'\n') => bare = true,
            b'\n' => {
                if i == 0 || buf[i - 1] != b'\r' {
                    bare = true;
                } else if i >= 3 && &buf[i - 3..i - 1] == b"\r\n" {
                    return HeadScan {
                        end: Some(i - 3),
                        nul,
                        bare,
                    };
                }
            }
            _ => {}
        }
    }
    HeadScan {
        end: None,
        nul,
        bare,
    }
}

/// Parse one request from the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parse<'a> {
    let scan = scan_head(buf);
    let Some(end) = scan.end else {
        if scan.nul {
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
    // A NUL; a bare CR or bare LF: a front end that splits lines differently would see
    // other requests than we do (RFC 9112 §2.2), so refuse them.
    if scan.nul || scan.bare {
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
    let served = match method {
        b"GET" => Some(Method::Get),
        b"HEAD" => Some(Method::Head),
        _ => None,
    };
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
    let mut content_length: Option<u64> = None;
    // Transfer-Encoding (methods we do not serve only): seen at all, chunked the last
    // coding so far, a coding after chunked (or chunked twice).
    let (mut te, mut te_chunked, mut te_bad) = (false, false, false);
    let mut expect_continue = false;
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
        let is = |h: &str| eq_ignore_case(name, h);
        if is("host") {
            if host {
                return Parse::Error(400); // RFC 9112 §3.2: exactly one Host
            }
            host = true;
        } else if is("connection") {
            if has_token(value, "close") {
                req.keep_alive = false;
            } else if has_token(value, "keep-alive") {
                req.keep_alive = true;
            }
        } else if is("accept-encoding") {
            req.accepts_gzip = has_token(value, "gzip");
            req.accepts_br = has_token(value, "br");
        } else if is("if-none-match") {
            req.if_none_match = Some(value);
        } else if is("range") {
            req.range = parse_range(value);
        } else if is("if-range") {
            req.if_range = Some(value);
        } else if is("content-length") {
            match parse_u64(value) {
                // GET/HEAD carry no body here.
                Some(l) if l > 0 && served.is_some() => return Parse::Error(413),
                // Two lengths that differ: the framing is ambiguous (RFC 9112 §6.3).
                Some(l) if content_length.is_some_and(|c| c != l) => return Parse::Error(400),
                Some(l) => content_length = Some(l),
                None => return Parse::Error(400),
            }
        } else if is("transfer-encoding") {
            if served.is_some() {
                return Parse::Error(413);
            }
            te = true;
            for coding in value.split(|&b| b == b',').map(trim) {
                if coding.is_empty() {
                    continue;
                }
                te_bad |= te_chunked; // nothing may follow chunked
                te_chunked = eq_ignore_case(coding, "chunked");
            }
        } else if is("expect") {
            expect_continue |= has_token(value, "100-continue");
        }
    }
    if http11 && !host {
        return Parse::Error(400); // RFC 9112 §3.2: HTTP/1.1 requests carry Host
    }
    if let Some(m) = served {
        req.method = m;
        return Parse::Done { req, len };
    }
    // A method we do not serve: its body must be skipped, so its framing must be sure.
    let body = if te {
        // Chunked must be the last coding; Transfer-Encoding with Content-Length, or in
        // an HTTP/1.0 request, is faulty framing (RFC 9112 §6.1, §6.3): 400 and close.
        if !te_chunked || te_bad || content_length.is_some() || !http11 {
            return Parse::Error(400);
        }
        Body::Chunked
    } else {
        match content_length {
            Some(l) if l > 0 => Body::Length(l),
            _ => Body::None,
        }
    };
    Parse::NotAllowed {
        len,
        body,
        keep_alive: req.keep_alive,
        http11,
        // A server must ignore the expectation in an HTTP/1.0 request (RFC 9110 §10.1.1).
        expect_continue: expect_continue && http11,
    }
}

/// The longest chunk-size line (size and extensions) [`BodySkip`] accepts, bytes.
pub const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section [`BodySkip`] accepts, bytes.
pub const MAX_TRAILERS: usize = 8192;

/// Steps over a request body without keeping it: fed the bytes that follow the head, in
/// any pieces, it says how many of them belong to the body, so the rest is the next
/// request. Fixed size, no allocation; chunked framing is checked strictly (CRLF line
/// ends, hex sizes that fit in 64 bits, bounded chunk-size lines and trailers), and
/// anything else is [`BadChunk`]: the caller cannot tell where the next request starts
/// and must close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodySkip {
    state: Skip,
    /// Body bytes left (Content-Length), or the chunk size being read / data left of it.
    n: u64,
    /// Bytes of the current chunk-size line, or of the trailer section.
    line: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// Content-Length: `n` bytes left.
    Length,
    /// chunk-size hex digits (`line` of them so far).
    Size,
    /// After the size: BWS and chunk extensions, up to CR.
    Ext,
    /// LF ending the chunk-size line.
    SizeLf,
    /// Chunk data: `n` bytes left.
    Data,
    /// CR, LF after the chunk data.
    DataCr,
    DataLf,
    /// Start of a trailer line, or CR of the final empty line.
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    TrailerLf,
    /// LF of the final empty line.
    EndLf,
    Done,
}

/// Chunked framing that cannot be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadChunk;

impl BodySkip {
    /// A skipper for `body`; `None` if there is nothing to skip.
    pub fn new(body: Body) -> Option<BodySkip> {
        let (state, n) = match body {
            Body::None | Body::Length(0) => return None,
            Body::Length(n) => (Skip::Length, n),
            Body::Chunked => (Skip::Size, 0),
        };
        Some(BodySkip { state, n, line: 0 })
    }

    /// True once the whole body has gone by.
    pub fn done(&self) -> bool {
        self.state == Skip::Done
    }

    /// Consume body bytes from the start of `data`: returns how many belong to the body
    /// (all of `data` unless the body ends inside it; 0 once done).
    pub fn skip(&mut self, data: &[u8]) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                Skip::Done => break,
                Skip::Length | Skip::Data => {
                    let k = self.n.min((data.len() - i) as u64);
                    i += k as usize;
                    self.n -= k;
                    if self.n == 0 {
                        self.state = if self.state == Skip::Length {
                            Skip::Done
                        } else {
                            Skip::DataCr
                        };
                    }
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            // Field and extension text: no control characters but HTAB (obs-text is fine).
            let text = b == b'\t' || (b >= b' ' && b != 0x7f);
            self.state = match (self.state, b) {
                (Skip::Size, _) if b.is_ascii_hexdigit() => {
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.n = self
                        .n
                        .checked_mul(16)
                        .and_then(|n| n.checked_add(d))
                        .ok_or(BadChunk)?;
                    self.line += 1;
                    Skip::Size
                }
                (Skip::Size, b';' | b' ' | b'\t') if self.line > 0 => {
                    self.line += 1;
                    Skip::Ext
                }
                (Skip::Size | Skip::Ext, b'\r') if self.line > 0 => Skip::SizeLf,
                (Skip::Ext, _) if text => {
                    self.line += 1;
                    Skip::Ext
                }
                (Skip::SizeLf, b'\n') => {
                    self.line = 0;
                    if self.n == 0 {
                        Skip::TrailerStart // last-chunk
                    } else {
                        Skip::Data
                    }
                }
                (Skip::DataCr, b'\r') => Skip::DataLf,
                (Skip::DataLf, b'\n') => Skip::Size,
                (Skip::TrailerStart, b'\r') => Skip::EndLf,
                (Skip::TrailerStart | Skip::Trailer, _) if text => {
                    self.line += 1;
                    Skip::Trailer
                }
                (Skip::Trailer, b'\r') => Skip::TrailerLf,
                (Skip::TrailerLf, b'\n') => Skip::TrailerStart,
                (Skip::EndLf, b'\n') => Skip::Done,
                _ => return Err(BadChunk),
            };
            let limit = match self.state {
                Skip::Size | Skip::Ext => MAX_CHUNK_LINE,
                Skip::Trailer => MAX_TRAILERS,
                _ => usize::MAX,
            };
            if self.line > limit {
                return Err(BadChunk);
            }
        }
        Ok(i)
    }
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

    /// `scan_head` against the four passes it replaced, on random bytes rich in CR, LF
    /// and NUL (and whole requests with them spliced in).
    #[test]
    fn head_scan_matches_the_separate_passes() {
        fn reference(buf: &[u8]) -> (Option<usize>, bool, bool) {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return (None, buf.contains(&0), false);
            };
            let head = &buf[..end];
            let bare_cr = head.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
                || head.last() == Some(&b'\r');
            let bare_lf = head.first() == Some(&b'\n')
                || head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r');
            (Some(end), head.contains(&0), bare_cr || bare_lf)
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"\r\n\0a :";
        let base = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        for case in 0..300_000 {
            let mut buf: Vec<u8> = if case % 2 == 0 {
                Vec::new()
            } else {
                base.to_vec()
            };
            let n = (next() % 24) as usize;
            for _ in 0..n {
                let b = alphabet[(next() % alphabet.len() as u64) as usize];
                let at = (next() as usize) % (buf.len() + 1);
                buf.insert(at, b);
            }
            let s = scan_head(&buf);
            let got = (s.end, s.nul, if s.end.is_some() { s.bare } else { false });
            assert_eq!(got, reference(&buf), "{buf:?}");
        }
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
        assert!(matches!(
            p("POST / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Parse::NotAllowed { .. }
        ));
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

    /// The NotAllowed outcome's framing, or the error status.
    fn refused(s: &str) -> Result<(Body, bool, bool), u16> {
        match p(s) {
            Parse::NotAllowed {
                body,
                keep_alive,
                expect_continue,
                len,
                ..
            } => {
                assert_eq!(
                    &s.as_bytes()[len - 4..len],
                    b"\r\n\r\n",
                    "len ends the head"
                );
                Ok((body, keep_alive, expect_continue))
            }
            Parse::Error(status) => Err(status),
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn methods_we_do_not_serve_are_refused_whatever_the_body() {
        for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "X-CUSTOM"] {
            let r = |h: &str| refused(&format!("{m} /x HTTP/1.1\r\nHost: h\r\n{h}\r\n"));
            assert_eq!(r(""), Ok((Body::None, true, false)), "{m}");
            assert_eq!(r("Content-Length: 0\r\n"), Ok((Body::None, true, false)));
            assert_eq!(
                r("Content-Length: 3\r\n"),
                Ok((Body::Length(3), true, false))
            );
            assert_eq!(
                r("Content-Length: 100000\r\n"),
                Ok((Body::Length(100_000), true, false))
            );
            assert_eq!(
                r("Content-Length: 9999999999999999999\r\n"),
                Ok((Body::Length(9_999_999_999_999_999_999), true, false))
            );
            // The same length twice is one length; two different ones are ambiguous.
            assert_eq!(
                r("Content-Length: 3\r\nContent-Length: 3\r\n"),
                Ok((Body::Length(3), true, false))
            );
            assert_eq!(r("Content-Length: 3\r\nContent-Length: 4\r\n"), Err(400));
            assert_eq!(r("Content-Length: 3, 3\r\n"), Err(400));
            assert_eq!(r("Content-Length: -1\r\n"), Err(400));
            assert_eq!(r("Content-Length: 99999999999999999999\r\n"), Err(400));
            for te in [
                "chunked",
                "Chunked",
                "gzip, chunked",
                "gzip,chunked",
                " chunked ,",
            ] {
                assert_eq!(
                    r(&format!("Transfer-Encoding: {te}\r\n")),
                    Ok((Body::Chunked, true, false)),
                    "{m} TE {te:?}"
                );
            }
            assert_eq!(
                r("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
                Ok((Body::Chunked, true, false))
            );
            // Chunked not last, twice, or absent; with Content-Length: faulty framing.
            for te in [
                "gzip",
                "",
                "chunked, gzip",
                "chunked, chunked",
                "chunked;x=1",
                "identity",
            ] {
                assert_eq!(
                    r(&format!("Transfer-Encoding: {te}\r\n")),
                    Err(400),
                    "{m} TE {te:?}"
                );
            }
            assert_eq!(
                r("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
                Err(400)
            );
            assert_eq!(
                r("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
                Err(400)
            );
            assert_eq!(
                r("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
                Err(400)
            );
            // Connection and Expect are reported; the body is what it is.
            assert_eq!(
                r("Content-Length: 3\r\nConnection: close\r\n"),
                Ok((Body::Length(3), false, false))
            );
            assert_eq!(
                r("Content-Length: 3\r\nExpect: 100-continue\r\n"),
                Ok((Body::Length(3), true, true))
            );
            // The head's own errors come first.
            assert_eq!(r("Content-Length: 3\r\nbroken\r\n"), Err(400));
            assert_eq!(
                refused(&format!("{m} / HTTP/1.1\r\nContent-Length: 3\r\n\r\n")),
                Err(400),
                "no Host"
            );
            assert_eq!(
                refused(&format!("{m} /../x HTTP/1.1\r\nHost: h\r\n\r\n")),
                Err(400)
            );
        }
        // HTTP/1.0: keep-alive only if asked for; Expect ignored; Transfer-Encoding is
        // faulty framing there.
        let r10 = |h: &str| refused(&format!("POST / HTTP/1.0\r\n{h}\r\n"));
        assert_eq!(
            r10("Content-Length: 3\r\n"),
            Ok((Body::Length(3), false, false))
        );
        assert_eq!(
            r10("Content-Length: 3\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"),
            Ok((Body::Length(3), true, false))
        );
        assert_eq!(r10("Transfer-Encoding: chunked\r\n"), Err(400));
        // GET and HEAD still carry no body: 413 and close, as before.
        for m in ["GET", "HEAD"] {
            let r = |h: &str| p_owned(&format!("{m} / HTTP/1.1\r\nHost: h\r\n{h}\r\n"));
            assert_eq!(r("Content-Length: 3\r\n"), Some(413));
            assert_eq!(r("Transfer-Encoding: chunked\r\n"), Some(413));
            assert_eq!(r("Content-Length: x\r\n"), Some(400));
            assert_eq!(r("Content-Length: 0\r\nContent-Length: 0\r\n"), None);
        }
    }

    /// The error status of a request, or None if it parsed as a served request.
    fn p_owned(s: &str) -> Option<u16> {
        match p(s) {
            Parse::Error(status) => Some(status),
            Parse::Done { .. } => None,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    /// Feed `data` to a skipper in pieces of `step` bytes; returns the bytes the body
    /// took, or the error, and checks that nothing is taken once done.
    fn skip_in_pieces(body: Body, data: &[u8], step: usize) -> Result<usize, BadChunk> {
        let mut s = BodySkip::new(body).expect("a body to skip");
        let mut used = 0;
        for piece in data.chunks(step) {
            let n = s.skip(piece)?;
            assert!(n <= piece.len());
            used += n;
            if s.done() {
                assert_eq!(s.skip(piece), Ok(0), "done takes nothing more");
                return Ok(used);
            }
            assert_eq!(n, piece.len(), "not done yet, so the whole piece is body");
        }
        Ok(used)
    }

    #[test]
    fn body_skip_by_content_length() {
        assert_eq!(BodySkip::new(Body::None), None);
        assert_eq!(BodySkip::new(Body::Length(0)), None);
        let next = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        for len in [1usize, 3, 4096, 100_000] {
            let mut data = vec![b'x'; len];
            data.extend_from_slice(next);
            for step in [1, 3, 1000, 16 * 1024, data.len()] {
                if len == 100_000 && step < 1000 {
                    continue;
                }
                assert_eq!(
                    skip_in_pieces(Body::Length(len as u64), &data, step),
                    Ok(len),
                    "len {len}, step {step}"
                );
            }
        }
        // Unfinished: takes everything, not done.
        let mut s = BodySkip::new(Body::Length(10)).unwrap();
        assert_eq!(s.skip(b"12345"), Ok(5));
        assert!(!s.done());
        assert_eq!(s.skip(b""), Ok(0));
        assert_eq!(s.skip(b"6789"), Ok(4));
        assert!(!s.done());
        assert_eq!(s.skip(b"0GET"), Ok(1));
        assert!(s.done());
    }

    #[test]
    fn body_skip_chunked() {
        let next = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let big = "y".repeat(100_000);
        let bodies: Vec<String> = vec![
            "0\r\n\r\n".into(),
            "3\r\nabc\r\n0\r\n\r\n".into(),
            "3;name=value; x = \"q\"\r\nabc\r\n0\r\n\r\n".into(),
            "3 ;x\r\nabc\r\n000\r\nTrailer: yes\r\nOther:\tx\r\n\r\n".into(),
            "A\r\n0123456789\r\nf\r\n0123456789abcde\r\n0;last\r\n\r\n".into(),
            // The body's data may look like framing or like a request.
            {
                let tricky = "\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
                format!("{:x}\r\n{tricky}\r\n0\r\n\r\n", tricky.len())
            },
            format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()),
            format!(
                "000000000000000000003\r\nabc\r\n{:X}\r\n{big}\r\n0\r\n\r\n",
                big.len()
            ),
        ];
        for body in &bodies {
            let mut data = body.as_bytes().to_vec();
            data.extend_from_slice(next);
            let steps: &[usize] = if data.len() > 1000 {
                &[997, 4096, usize::MAX]
            } else {
                &[1, 2, 3, 5, 7, usize::MAX]
            };
            for &step in steps {
                assert_eq!(
                    skip_in_pieces(Body::Chunked, &data, step.min(data.len())),
                    Ok(body.len()),
                    "{:?} in pieces of {step}",
                    &body[..body.len().min(60)]
                );
            }
        }
        // Unfinished chunked bodies are not done.
        for cut in [
            "",
            "3",
            "3\r",
            "3\r\nab",
            "3\r\nabc\r",
            "0\r\n",
            "0\r\nT: v\r\n",
        ] {
            let mut s = BodySkip::new(Body::Chunked).unwrap();
            assert_eq!(s.skip(cut.as_bytes()), Ok(cut.len()), "{cut:?}");
            assert!(!s.done(), "{cut:?}");
        }
    }

    #[test]
    fn body_skip_refuses_broken_chunked_framing() {
        let long_ext = format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_TRAILERS));
        let many_digits = format!("{}3\r\nabc\r\n0\r\n\r\n", "0".repeat(MAX_CHUNK_LINE));
        for bad in [
            "\r\n",                       // no size
            ";x\r\n",                     // extension without a size
            "g\r\n",                      // not hex
            "-3\r\n",                     // not hex
            "0x3\r\nabc\r\n0\r\n\r\n",    // not hex
            "3\nabc\r\n0\r\n\r\n",        // bare LF after the size
            "3\r\rabc",                   // CR CR
            "3\r\nabcd\r\n0\r\n\r\n",     // data longer than the size
            "3\r\nabc\n0\r\n\r\n",        // bare LF after the data
            "3\r\nabc0\r\n\r\n",          // no CRLF after the data
            "3;a\nb\r\nabc\r\n0\r\n\r\n", // LF inside an extension
            "3;a\0b\r\nabc\r\n0\r\n\r\n", // NUL inside an extension
            "0\r\nX: y\n\r\n",            // bare LF in a trailer
            "0\r\nX: \0\r\n\r\n",         // NUL in a trailer
            "0\r\n\r\r",                  // CR CR at the end
            "0\r\n\n",                    // bare LF at the end
            "10000000000000000\r\n",      // more than 64 bits
            "ffffffffffffffff0\r\n",      // more than 64 bits
            &long_ext,
            &long_trailer,
            &many_digits,
        ] {
            for step in [1, bad.len().max(1)] {
                assert_eq!(
                    skip_in_pieces(Body::Chunked, bad.as_bytes(), step),
                    Err(BadChunk),
                    "{:?} in pieces of {step}",
                    &bad[..bad.len().min(40)]
                );
            }
        }
        // At the limits, still fine.
        let ext = format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE - 2));
        assert_eq!(
            skip_in_pieces(Body::Chunked, ext.as_bytes(), 7),
            Ok(ext.len())
        );
        let max = "ffffffffffffffff\r\n";
        let mut s = BodySkip::new(Body::Chunked).unwrap();
        assert_eq!(s.skip(max.as_bytes()), Ok(max.len()));
        assert_eq!(s.skip(&[b'z'; 1000]), Ok(1000));
        assert!(!s.done());
    }

    /// What a connection saw, request by request.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Served(Method, String),
        Refused(Body),
        Error(u16),
        /// Broken body framing: the connection is closed.
        Closed,
    }

    /// dn-httpd's input handling, without the network: `stream` arrives in pieces of
    /// `step` bytes into a buffer that, as in the server, only holds unparsed head bytes
    /// (bodies go by without being stored); returns what was seen and the largest the
    /// buffer got.
    fn serve_stream(stream: &[u8], step: usize) -> (Vec<Seen>, usize) {
        let limits = Limits::default();
        let mut inbuf: Vec<u8> = Vec::new();
        let mut skip: Option<BodySkip> = None;
        let mut seen = Vec::new();
        let mut most = 0;
        let mut pieces = stream.chunks(step);
        loop {
            if let Some(s) = &mut skip {
                let skipped = if inbuf.is_empty() {
                    let Some(piece) = pieces.next() else {
                        return (seen, most);
                    };
                    s.skip(piece).inspect(|&n| {
                        // The rest of a socket read stays for the next request.
                        inbuf.extend_from_slice(&piece[n..]);
                        most = most.max(inbuf.len());
                    })
                } else {
                    s.skip(&inbuf).inspect(|&n| {
                        inbuf.drain(..n);
                    })
                };
                if skipped.is_err() {
                    seen.push(Seen::Closed);
                    return (seen, most);
                }
                if s.done() {
                    skip = None;
                }
                continue;
            }
            let used = match parse(&inbuf, &limits) {
                Parse::Done { req, len } => {
                    seen.push(Seen::Served(req.method, req.path.to_string()));
                    Some(len)
                }
                Parse::NotAllowed { len, body, .. } => {
                    seen.push(Seen::Refused(body));
                    skip = BodySkip::new(body);
                    Some(len)
                }
                Parse::Error(status) => {
                    seen.push(Seen::Error(status));
                    return (seen, most);
                }
                Parse::Incomplete => None,
            };
            if let Some(len) = used {
                inbuf.drain(..len);
                continue;
            }
            match pieces.next() {
                Some(p) => inbuf.extend_from_slice(p),
                None => return (seen, most),
            }
            most = most.max(inbuf.len());
        }
    }

    #[test]
    fn refused_requests_stay_in_step_with_the_next_one() {
        let get = "GET /after HTTP/1.1\r\nHost: h\r\n\r\n";
        for method in ["POST", "PUT", "DELETE"] {
            for size in [0usize, 3, 100_000] {
                let data = "d".repeat(size);
                let by_length = format!(
                    "{method} / HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n{data}{get}"
                );
                let chunked = if size == 0 {
                    format!("{method} / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{get}")
                } else {
                    format!(
                        "{method} / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{:x};e=1\r\n{data}\r\n0\r\nT: x\r\n\r\n{get}",
                        size
                    )
                };
                let length_body = if size == 0 {
                    Body::None
                } else {
                    Body::Length(size as u64)
                };
                for (stream, body) in [(by_length, length_body), (chunked, Body::Chunked)] {
                    for step in [1, 7, 1460, 4096, 16 * 1024] {
                        if stream.len() > 50_000 && step < 1000 {
                            continue;
                        }
                        let (seen, most) = serve_stream(stream.as_bytes(), step);
                        assert_eq!(
                            seen,
                            [
                                Seen::Refused(body),
                                Seen::Served(Method::Get, "/after".into())
                            ],
                            "{method} {size} {body:?} in pieces of {step}"
                        );
                        // Bodies are not buffered: the buffer holds at most a head and
                        // one read.
                        assert!(
                            most <= 200 + step,
                            "{method} {size} {body:?}, pieces of {step}: buffer grew to {most}"
                        );
                    }
                }
            }
        }
        // Broken chunked framing ends the connection; the bytes after it are not taken
        // for a request.
        let (seen, _) = serve_stream(
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n{get}").as_bytes(),
            5,
        );
        assert_eq!(seen, [Seen::Refused(Body::Chunked), Seen::Closed]);
        // A body that looks like a request is skipped, not served.
        let sneaky = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{get}{get}",
            get.len()
        );
        let (seen, _) = serve_stream(sneaky.as_bytes(), 3);
        assert_eq!(
            seen,
            [
                Seen::Refused(Body::Length(get.len() as u64)),
                Seen::Served(Method::Get, "/after".into())
            ]
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

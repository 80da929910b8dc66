//! The HTTP/1.1 side of the load generator: the target URL, the request bytes, and an
//! incremental response parser that keeps only the response head (bounded, in a buffer
//! owned by the connection and reused) and counts body bytes without copying them.

use std::net::{Ipv4Addr, SocketAddrV4};

/// `http://IP[:PORT][/path]` (the libOS has no resolver: IPv4 literals only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddrV4,
    /// Request target, starting with `/`.
    pub path: String,
    /// `Host` header value (`IP` or `IP:PORT`).
    pub host: String,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let (ip, port) = match authority.rsplit_once(':') {
            Some((ip, port)) => (
                ip,
                port.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("{url:?}: bad port {port:?}"))?,
            ),
            None => (authority, 80),
        };
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{url:?}: the host must be an IPv4 address, not {ip:?}"))?;
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("{url:?}: the path holds spaces or control bytes"));
        }
        let host = if port == 80 {
            ip.to_string()
        } else {
            format!("{ip}:{port}")
        };
        Ok(Target {
            addr: SocketAddrV4::new(ip, port),
            path,
            host,
        })
    }
}

/// The GET request sent over and over (keep-alive is HTTP/1.1's default).
pub fn request(t: &Target) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dn-loadgen\r\n\r\n",
        t.path, t.host
    )
    .into_bytes()
}

/// Largest response head accepted.
pub const MAX_HEAD: usize = 8192;

/// The end of a head (SIMD search: a byte loop here was a third of dn-loadgen's time).
static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));

/// Why a response could not be parsed (the connection is then dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not `HTTP/1.x NNN ...`.
    StatusLine,
    /// A bad or repeated Content-Length.
    ContentLength,
    /// Neither Content-Length nor a status without a body (chunked and read-to-close
    /// bodies are not supported).
    NoLength,
    /// The head exceeds [`MAX_HEAD`].
    HeadTooLarge,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ParseError::StatusLine => "bad status line",
            ParseError::ContentLength => "bad Content-Length",
            ParseError::NoLength => "response without Content-Length",
            ParseError::HeadTooLarge => "response head too large",
        })
    }
}

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Head + body bytes.
    pub bytes: u64,
    /// The server will close the connection after it (`Connection: close`).
    pub close: bool,
}

/// What the head said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: u64,
    pub close: bool,
}

/// Parse a complete response head (ending in CRLF CRLF).
pub fn parse_head(head: &[u8]) -> Result<Head, ParseError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().ok_or(ParseError::StatusLine)?;
    let rest = status_line
        .strip_prefix(b"HTTP/1.")
        .filter(|r| r.len() >= 5 && r[0].is_ascii_digit() && r[1] == b' ')
        .ok_or(ParseError::StatusLine)?;
    let code = &rest[2..5];
    if !code.iter().all(u8::is_ascii_digit) || rest.get(5).is_some_and(|&b| b != b' ') {
        return Err(ParseError::StatusLine);
    }
    let status = code.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
    let http10 = rest[0] == b'0';
    let mut content_length: Option<u64> = None;
    let mut close = http10;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() || value.is_empty() || value.len() > 18 {
                return Err(ParseError::ContentLength);
            }
            if !value.iter().all(u8::is_ascii_digit) {
                return Err(ParseError::ContentLength);
            }
            content_length = Some(
                value
                    .iter()
                    .fold(0u64, |a, &d| a * 10 + u64::from(d - b'0')),
            );
        } else if name.eq_ignore_ascii_case(b"connection") {
            for tok in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if tok.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(ParseError::NoLength);
        }
    }
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let content_length = match content_length {
        _ if no_body => 0,
        Some(n) => n,
        None => return Err(ParseError::NoLength),
    };
    Ok(Head {
        status,
        content_length,
        close,
    })
}

/// Incremental response parser; one per connection, reused for every response.
pub struct Parser {
    head: Vec<u8>,
    /// Body bytes still to come; `None` while reading a head.
    body_left: Option<u64>,
    current: Head,
    bytes: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    pub fn new() -> Self {
        Parser {
            // Grows only for a head split over reads (rare).
            head: Vec::new(),
            body_left: None,
            current: Head {
                status: 0,
                content_length: 0,
                close: false,
            },
            bytes: 0,
        }
    }

    /// Forget a partial response (the connection is being replaced).
    pub fn reset(&mut self) {
        self.head.clear();
        self.body_left = None;
        self.bytes = 0;
    }

    /// Feed received bytes. Returns how many were used and the response they completed,
    /// if any; call again with the rest (pipelined responses). Never consumes bytes past
    /// the end of a response.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Response>), ParseError> {
        let mut used = 0;
        if self.body_left.is_none() {
            // (bytes of this read used, length of the head)
            let (head_used, head_len) = if self.head.is_empty() {
                // The usual case: the whole head arrived in one piece. It is parsed where
                // it lies; nothing is copied (at 10,000 connections a copy into each
                // connection's own buffer would be a cold write per response).
                let limit = data.len().min(MAX_HEAD);
                match HEAD_END.find(&data[..limit]) {
                    Some(p) => {
                        let end = p + 4;
                        self.current = parse_head(&data[..end])?;
                        (end, end)
                    }
                    None if limit == MAX_HEAD => return Err(ParseError::HeadTooLarge),
                    None => {
                        self.head.extend_from_slice(data);
                        return Ok((data.len(), None));
                    }
                }
            } else {
                // A head split over several reads: gathered in `head`.
                let old = self.head.len();
                let take = data.len().min(MAX_HEAD - old);
                self.head.extend_from_slice(&data[..take]);
                let from = old.saturating_sub(3);
                match HEAD_END.find(&self.head[from..]) {
                    Some(p) => {
                        let end = from + p + 4;
                        let head = parse_head(&self.head[..end]);
                        self.head.clear();
                        self.current = head?;
                        (end - old, end)
                    }
                    None if self.head.len() >= MAX_HEAD => return Err(ParseError::HeadTooLarge),
                    None => return Ok((take, None)),
                }
            };
            used = head_used;
            self.bytes = head_len as u64;
            self.body_left = Some(self.current.content_length);
        }
        let left = self.body_left.as_mut().expect("in a body");
        let n = (*left).min((data.len() - used) as u64);
        *left -= n;
        used += n as usize;
        self.bytes += n;
        if *left > 0 {
            return Ok((used, None));
        }
        self.body_left = None;
        let r = Response {
            status: self.current.status,
            bytes: self.bytes,
            close: self.current.close,
        };
        self.bytes = 0;
        Ok((used, Some(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t: Target = "http://10.0.0.2:8080/index.html".parse().unwrap();
        assert_eq!(t.addr, "10.0.0.2:8080".parse().unwrap());
        assert_eq!(t.path, "/index.html");
        assert_eq!(t.host, "10.0.0.2:8080");
        let t: Target = "http://10.0.0.2".parse().unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        assert_eq!(t.host, "10.0.0.2");
        let t: Target = "http://10.0.0.2:81?x=1".parse().unwrap();
        assert_eq!(t.path, "/?x=1");
        for bad in [
            "https://10.0.0.2/",
            "http://example.com/",
            "http://10.0.0.2:0/",
            "http://10.0.0.2:99999/",
            "http://10.0.0.2/a b",
            "10.0.0.2:80",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        let req = request(&"http://1.2.3.4:8080/x".parse().unwrap());
        assert_eq!(
            req,
            b"GET /x HTTP/1.1\r\nHost: 1.2.3.4:8080\r\nUser-Agent: dn-loadgen\r\n\r\n"
        );
    }

    #[test]
    fn heads() {
        let h =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nServer: x\r\n\r\n").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                content_length: 1024,
                close: false
            }
        );
        let h = parse_head(
            b"HTTP/1.1 404 Not Found\r\ncontent-length:  7 \r\nConnection: Close\r\n\r\n",
        )
        .unwrap();
        assert_eq!((h.status, h.content_length, h.close), (404, 7, true));
        // HTTP/1.0 closes unless keep-alive is said.
        assert!(
            parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .close
        );
        assert!(
            !parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .close
        );
        // No body for 304/204 even without a length.
        assert_eq!(
            parse_head(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
                .unwrap()
                .content_length,
            0
        );
        // Reason phrase may be empty.
        assert_eq!(
            parse_head(b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .status,
            200
        );
        for (bad, err) in [
            (&b"HTTP/2 200 OK\r\n\r\n"[..], ParseError::StatusLine),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", ParseError::StatusLine),
            (b"HTTP/1.1 2000 OK\r\n\r\n", ParseError::StatusLine),
            (b"HTTP/1.1 200 OK\r\n\r\n", ParseError::NoLength),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                ParseError::NoLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ParseError::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                ParseError::ContentLength,
            ),
        ] {
            assert_eq!(
                parse_head(bad),
                Err(err),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn response(status: u16, body: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    }

    /// Feeds `stream` in pieces of `chunk` bytes; returns the responses.
    fn run(stream: &[u8], chunk: usize) -> Result<Vec<Response>, ParseError> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut off = 0;
            while off < piece.len() {
                let (n, r) = p.feed(&piece[off..])?;
                assert!(n > 0 || r.is_some(), "no progress");
                off += n;
                out.extend(r);
            }
        }
        Ok(out)
    }

    #[test]
    fn pipelined_responses_any_split() {
        let body = vec![b'x'; 1024];
        let parts = [
            response(200, &body),
            response(404, b"nope"),
            b"HTTP/1.1 304 Not Modified\r\n\r\n".to_vec(),
            response(200, b""),
        ];
        let want: Vec<(u16, u64)> = [200, 404, 304, 200]
            .into_iter()
            .zip(parts.iter().map(|p| p.len() as u64))
            .collect();
        assert_eq!(want[0].1, 40 + 1024);
        let stream = parts.concat();
        for chunk in [1, 2, 3, 4, 5, 7, 64, 1000, 1100, stream.len()] {
            let rs = run(&stream, chunk).unwrap();
            let got: Vec<(u16, u64)> = rs.iter().map(|r| (r.status, r.bytes)).collect();
            assert_eq!(got, want, "chunk {chunk}");
            assert_eq!(rs.iter().map(|r| r.bytes).sum::<u64>(), stream.len() as u64);
        }
    }

    #[test]
    fn oversized_and_bad_heads_fail() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(run(&big, 100), Err(ParseError::HeadTooLarge));
        assert_eq!(
            run(b"HTTP/1.1 200 OK\r\n\r\n", 3),
            Err(ParseError::NoLength)
        );
        // After a reset the parser starts over.
        let mut p = Parser::new();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap();
        p.reset();
        let r201 = response(201, b"ab");
        let (n, r) = p.feed(&r201).unwrap();
        assert_eq!(n, r201.len());
        assert_eq!(r.unwrap().status, 201);
    }
}

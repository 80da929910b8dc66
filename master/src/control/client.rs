//! The control socket's client side (`docknetctl`, and a new `docknetd` asking whether
//! another one runs).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{Request, Response};

/// Why a client request failed.
#[derive(Debug)]
pub enum ClientError {
    /// No daemon answers on the socket.
    Unreachable(String),
    /// The daemon answered with an error.
    Remote(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(s) | ClientError::Remote(s) => f.write_str(s),
        }
    }
}

/// Why connecting to the control socket `sock` failed, in words a user can act on.
pub fn connect_error(sock: &Path, e: std::io::Error) -> ClientError {
    let dir = sock.parent().unwrap_or(sock).display();
    let why = match e.raw_os_error() {
        Some(libc::ENOENT) => format!(
            "docknetd is not running on {dir} (no socket {}); start it with docknetd --run-dir {dir}",
            sock.display()
        ),
        Some(libc::ECONNREFUSED) => format!(
            "docknetd is not running on {dir} (nobody listens on {})",
            sock.display()
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied on {}: only root and the group docknetd was started with (--group) may use it",
            sock.display()
        ),
        _ => format!("cannot reach docknetd at {}: is it running? ({e})", sock.display()),
    };
    ClientError::Unreachable(why)
}

/// Send one request to the daemon listening on `sock` and return its `data`.
pub fn request(sock: &Path, req: &Request, timeout: Duration) -> Result<Value, ClientError> {
    let unreachable = |e: std::io::Error| {
        ClientError::Unreachable(format!(
            "cannot reach docknetd at {}: is it running? ({e})",
            sock.display()
        ))
    };
    let mut s = UnixStream::connect(sock).map_err(|e| connect_error(sock, e))?;
    s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    s.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    let mut line = serde_json::to_string(req)
        .map_err(|e| ClientError::Remote(format!("cannot encode request: {e}")))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| {
        ClientError::Unreachable(format!(
            "cannot send to docknetd at {}: {e}",
            sock.display()
        ))
    })?;
    let mut resp = String::new();
    BufReader::new(s).read_line(&mut resp).map_err(|e| {
        ClientError::Unreachable(format!(
            "no answer from docknetd at {}: {e}",
            sock.display()
        ))
    })?;
    if resp.is_empty() {
        return Err(ClientError::Unreachable(format!(
            "docknetd at {} closed the connection",
            sock.display()
        )));
    }
    let r: Response = serde_json::from_str(&resp)
        .map_err(|e| ClientError::Remote(format!("malformed answer from docknetd: {e}")))?;
    if r.ok {
        Ok(r.data.unwrap_or(Value::Null))
    } else {
        Err(ClientError::Remote(
            r.error.unwrap_or_else(|| "unknown error".into()),
        ))
    }
}

//! The control socket's server: one thread per connection, each request checked against
//! the peer's credentials and answered under the control lock.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;

use super::{parse_request, Control, ControlError, Request, Response, IDLE_TIMEOUT, MAX_LINE};
use crate::users::Peer;

/// Lock the control state, recovering from a poisoned lock (a panicking connection thread
/// must not take the daemon down).
pub fn lock(ctl: &Mutex<Control>) -> MutexGuard<'_, Control> {
    ctl.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answer one request line.
pub fn answer(ctl: &Mutex<Control>, line: &str, peer: Option<Peer>) -> Response {
    let r = parse_request(line)
        .map_err(ControlError::BadRequest)
        .and_then(|req| {
            log::debug!("request from {peer:?}: {req:?}");
            let mut c = lock(ctl);
            match peer {
                Some(p) if c.allows(&p) => c.handle_from(req, Some(p)),
                Some(p) => {
                    log::warn!("control: refused a request from {p} (not root, not in the daemon's group)");
                    Err(ControlError::Denied(format!(
                        "permission denied: uid {} may not drive docknetd (root, or the group given to docknetd --group)",
                        p.uid
                    )))
                }
                None => Err(ControlError::Denied(
                    "permission denied: cannot tell who is asking (no SO_PEERCRED)".into(),
                )),
            }
        });
    if let Err(e) = &r {
        log::info!("request failed: {e}");
    }
    Response::from_result(r.map_err(|e| e.to_string()))
}

fn serve_conn(stream: UnixStream, ctl: Arc<Mutex<Control>>) {
    let peer = Peer::of(&stream);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) => return,
            Ok(n) => n,
            Err(_) => return, // timeout or reset: drop the client
        };
        let resp = if n > MAX_LINE {
            Response::from_result(Err(format!("request longer than {MAX_LINE} bytes")))
        } else {
            match std::str::from_utf8(&buf) {
                Ok(s) if s.trim().is_empty() => continue,
                Ok(s) if s.contains("\"capture\"") => {
                    if let Ok(Request::Capture { name, count }) = parse_request(s) {
                        let _ = out.set_write_timeout(Some(Duration::from_secs(30)));
                        serve_capture(&ctl, &name, count, out);
                        return;
                    }
                    answer(&ctl, s, peer)
                }
                Ok(s) => answer(&ctl, s, peer),
                Err(_) => Response::from_result(Err("malformed request: not UTF-8".into())),
            }
        };
        let mut line = serde_json::to_string(&resp)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"internal error"}"#.into());
        line.push('\n');
        let written = out.write_all(line.as_bytes()).is_ok();
        if lock(&ctl).exit_request().is_some() {
            // `docknetctl shutdown`: answered; now the same stop as on SIGTERM (the main
            // thread waits for it), told why through `exit_request`.
            // SAFETY: kill(2) on our own pid with a valid signal number.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            return;
        }
        if !written || n > MAX_LINE {
            return;
        }
    }
}

/// Answer a capture request: a response line, then a pcap stream until the count is
/// reached, the client hangs up, or the pipe goes away.
fn serve_capture(ctl: &Arc<Mutex<Control>>, name: &str, count: Option<u64>, out: UnixStream) {
    let reader = {
        let c = lock(ctl);
        match c.capture_start(name) {
            Ok(r) => r,
            Err(e) => {
                let mut line = serde_json::to_string(&Response::from_result(Err(e.to_string())))
                    .unwrap_or_default();
                line.push('\n');
                let _ = (&out).write_all(line.as_bytes());
                return;
            }
        }
    };
    let (slot, id, reader) = reader;
    let mut w = std::io::BufWriter::new(&out);
    let mut line = serde_json::to_string(&Response::from_result(Ok(json!({ "linktype": 1 }))))
        .unwrap_or_default();
    line.push('\n');
    let ok =
        w.write_all(line.as_bytes()).is_ok() && w.write_all(&crate::capture::pcap_header()).is_ok();
    if ok {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&out);
        let (n, end) = reader.pump(&mut w, count, || {
            // The client never sends after its request: end-of-file means it hung up.
            let mut b = [0u8; 1];
            // SAFETY: recv into a 1-byte local buffer on our own open socket; MSG_PEEK
            // leaves data queued, MSG_DONTWAIT never blocks.
            let r = unsafe {
                libc::recv(
                    fd,
                    b.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            r != 0
        });
        drop(w);
        log::info!("capture of pipe {name}: {n} frames ({end:?})");
    }
    let c = lock(ctl);
    c.capture_stop(slot, id);
}

/// Accept connections until `stop` is set (the caller then shuts the listener down to
/// wake `accept`). One thread per connection.
pub fn serve(listener: UnixListener, ctl: Arc<Mutex<Control>>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        match conn {
            Ok(stream) => {
                let ctl = ctl.clone();
                if let Err(e) = std::thread::Builder::new()
                    .name("docknetd-conn".into())
                    .spawn(move || serve_conn(stream, ctl))
                {
                    log::warn!("cannot spawn a connection thread: {e}");
                }
            }
            Err(e) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                log::warn!("accept on the control socket: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    log::debug!("control: accept loop stopped");
}

//! Child processes: spawning with captured output, waiting for a ready line,
//! running one-shot clients with a timeout, and guards that always kill.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cleanup::{self, Resource};

const TAIL_LINES: usize = 20;

/// The last lines a stream produced, plus the first Rust panic message
/// (kept even when a long backtrace pushes it out of the tail).
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<TailInner>>);

#[derive(Default)]
struct TailInner {
    lines: VecDeque<String>,
    /// The first "panicked at" line and the message line after it.
    panic: Vec<String>,
}

impl Tail {
    fn push(&self, line: String) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if (t.panic.len() == 1 && !line.trim().is_empty())
            || (t.panic.is_empty() && line.contains("panicked at"))
        {
            t.panic.push(line.trim().to_string());
        }
        if t.lines.len() == TAIL_LINES {
            t.lines.pop_front();
        }
        t.lines.push_back(line);
    }

    /// The last lines (at most 20), oldest first.
    pub fn lines(&self) -> Vec<String> {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.lines.iter().cloned().collect()
    }

    /// A one-line digest for error reports: a Rust panic's location and
    /// message if there is one, else the last few non-empty lines, joined
    /// with " | " and cut to a few hundred characters.
    pub fn digest(&self) -> String {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !t.panic.is_empty() {
            let p: Vec<&str> = t.panic.iter().map(String::as_str).collect();
            return digest_lines(&p);
        }
        let lines: Vec<&str> = t
            .lines
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        digest_lines(&lines)
    }
}

fn digest_lines(lines: &[&str]) -> String {
    let picked: Vec<&str> = match lines.iter().position(|l| l.contains("panicked at")) {
        Some(i) => lines[i..].iter().take(2).copied().collect(),
        None => lines[lines.len().saturating_sub(3)..].to_vec(),
    };
    let s = picked.join(" | ");
    if s.chars().count() > 300 {
        let cut: String = s.chars().take(299).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// Reads `r` line by line in a thread: each line goes to the tail, to the log
/// (debug, tagged with `tag`) and, if given, to `tx`.
fn pump<R: Read + Send + 'static>(
    r: R,
    tag: String,
    tail: Tail,
    tx: Option<mpsc::Sender<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    log::debug!("[{tag}] {line}");
                    if let Some(tx) = &tx {
                        let _ = tx.send(line.clone());
                    }
                    tail.push(line);
                }
            }
        }
    })
}

/// A long-running child (server, daemon): SIGTERM then SIGKILL on drop.
pub struct ChildGuard {
    pub name: String,
    child: Child,
    id: u64,
    stdout_lines: mpsc::Receiver<String>,
    pub stderr_tail: Tail,
    pub stdout_tail: Tail,
    /// The thread reading stderr (joined by [`ChildGuard::stop`]).
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(name: &str, cmd: Command) -> Result<Self, String> {
        let (mut child, id) = spawn_captured(name, cmd)?;
        let (tx, rx) = mpsc::channel();
        let stdout_tail = Tail::default();
        let stderr_tail = Tail::default();
        if let Some(out) = child.stdout.take() {
            pump(out, format!("{name} out"), stdout_tail.clone(), Some(tx));
        }
        let stderr_reader = child
            .stderr
            .take()
            .map(|err| pump(err, format!("{name} err"), stderr_tail.clone(), None));
        log::debug!("{name}: started pid {}", child.id());
        Ok(ChildGuard {
            name: name.to_string(),
            child,
            id,
            stdout_lines: rx,
            stderr_tail,
            stdout_tail,
            stderr_reader,
        })
    }

    /// Waits until a stdout line contains `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{}: no line containing {needle:?} within {:?}; stdout: {}; stderr: {}",
                    self.name,
                    timeout,
                    self.stdout_tail.digest(),
                    self.stderr_tail.digest()
                ));
            }
            match self
                .stdout_lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting or gone.
                    std::thread::sleep(Duration::from_millis(50));
                    let status = self.child.try_wait().ok().flatten();
                    return Err(format!(
                        "{}: exited ({}) before printing {needle:?}; stderr: {}",
                        self.name,
                        status.map_or("still running".into(), |s| s.to_string()),
                        self.stderr_tail.digest()
                    ));
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{}: exited ({status}) before printing {needle:?}; stderr: {}",
                    self.name,
                    self.stderr_tail.digest()
                ));
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the child already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl ChildGuard {
    /// SIGTERM, up to `grace` to exit, then SIGKILL; its exit status.
    fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Some(s) = self.child.try_wait().ok().flatten() {
            return Some(s);
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own not-yet-reaped child (positive pid).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().ok().flatten() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        log::warn!("{}: did not exit on SIGTERM, killing", self.name);
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Stops the child as drop does (SIGTERM, then SIGKILL after `grace`) and waits (at
    /// most a second) until its stderr is read to the end, so that [`Self::stderr_tail`]
    /// holds what it printed on the way out. Its exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let status = self.terminate(grace);
        if let Some(h) = self.stderr_reader.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(2));
        cleanup::unregister(self.id);
        log::debug!("{}: stopped", self.name);
    }
}

/// What a finished one-shot command produced.
pub struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr_tail: String,
    /// Its last stderr lines (at most 20), oldest first.
    pub stderr_lines: Vec<String>,
}

/// Spawns `cmd` (stdin null, stdout/stderr piped, signals unblocked) and registers it for
/// cleanup. Returns the child and its cleanup id.
fn spawn_captured(name: &str, mut cmd: Command) -> Result<(std::process::Child, u64), String> {
    cleanup::unblock_signals_in_child(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| format!("{name}: spawn {:?}: {e}", cmd.get_program()))?;
    let id = cleanup::register(Resource::Process(child.id()));
    Ok((child, id))
}

/// Runs `cmd` to completion with captured output; kills it after `timeout`.
pub fn run_with_timeout(name: &str, cmd: Command, timeout: Duration) -> Result<Output, String> {
    let (mut child, id) = spawn_captured(name, cmd)?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_tail = Tail::default();
    let err_thread = child
        .stderr
        .take()
        .map(|e| pump(e, format!("{name} err"), err_tail.clone(), None));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                log::warn!("{name}: wait: {e}");
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    };
    cleanup::unregister(id);
    let stdout = out_thread.join().unwrap_or_default();
    if let Some(t) = err_thread {
        let _ = t.join();
    }
    let success = !timed_out && status.is_some_and(|s| s.success());
    let status = if timed_out {
        format!("timed out after {timeout:?}")
    } else {
        status.map_or("unknown status".into(), |s| s.to_string())
    };
    Ok(Output {
        success,
        status,
        stdout,
        stderr_tail: err_tail.digest(),
        stderr_lines: err_tail.lines(),
    })
}

/// Runs a short setup command (e.g. `ip ...`); error = one line with its stderr.
pub fn run_checked(args: &[&str]) -> Result<(), String> {
    let (prog, rest) = args.split_first().ok_or("empty command")?;
    log::debug!("run: {}", args.join(" "));
    let out = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_prefers_panic_message() {
        let lines = [
            "log line",
            "thread 'main' panicked at src/x.rs:1:2:",
            "handle does not refer to a valid socket",
            "stack backtrace:",
            "0: foo",
        ];
        assert_eq!(
            digest_lines(&lines),
            "thread 'main' panicked at src/x.rs:1:2: | handle does not refer to a valid socket"
        );
        assert_eq!(digest_lines(&["a", "b", "c", "d"]), "b | c | d");
        assert_eq!(digest_lines(&[]), "");
        let tail = Tail::default();
        tail.push("thread 'main' panicked at a.rs:1:1:".into());
        tail.push("boom".into());
        for i in 0..50 {
            tail.push(format!("  {i}: frame"));
        }
        assert_eq!(tail.digest(), "thread 'main' panicked at a.rs:1:1: | boom");
        let long = "x".repeat(1000);
        assert_eq!(digest_lines(&[&long]).chars().count(), 300);
    }
}

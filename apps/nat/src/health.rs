//! Health checks: the NAT's own TCP connections (through its libOS stack, beside the
//! forwarding path) to each backend, every interval: a TCP connect, or an HTTP GET that
//! must be answered 2xx/3xx.
//!
//! A backend that passes one check joins the rotation; one that fails [`FALL`] in a row
//! leaves it (one failure could be a full listen queue under load, which resets a SYN; a
//! member that died is taken out at once by the supervisor instead, see
//! `NatBackend::up`). A check that has not succeeded within its timeout fails.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use docknet::{Engine, TcpId};
use docknet_master::cluster::{HealthKind, HealthSpec};

/// Failed checks in a row that take a backend out of the rotation.
pub const FALL: u32 = 3;

/// One backend's checks.
#[derive(Default)]
struct Probe {
    next_due: Option<Instant>,
    inflight: Option<Inflight>,
    fails: u32,
    /// The last verdict (None before the first).
    healthy: Option<bool>,
}

struct Inflight {
    id: TcpId,
    deadline: Instant,
    sent: bool,
    /// The first bytes of the answer ("HTTP/1.1 200").
    got: [u8; 12],
    len: usize,
}

/// The checker: one probe per backend slot.
pub struct HealthChecker {
    spec: HealthSpec,
    port: u16,
    probes: Vec<Probe>,
    request: Vec<u8>,
}

/// A verdict that changed: backend slot, healthy now or not.
pub type Transition = (u16, bool);

impl HealthChecker {
    pub fn new(spec: HealthSpec, port: u16) -> Self {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: dn-nat\r\nUser-Agent: dn-nat-health\r\nConnection: close\r\n\r\n",
            spec.path
        )
        .into_bytes();
        HealthChecker {
            spec,
            port,
            probes: Vec::new(),
            request,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.spec.interval_ms.max(10)))
    }

    /// How long a check may take: twice the interval, between 100 ms and 2 s.
    fn timeout(&self) -> Duration {
        (self.interval() * 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// True while a check is open (it needs a look every round).
    pub fn inflight(&self) -> bool {
        self.probes.iter().any(|p| p.inflight.is_some())
    }

    /// Forget slot `idx` (its backend was removed); an open check is aborted.
    pub fn forget(&mut self, e: &mut Engine, idx: u16) {
        if let Some(p) = self.probes.get_mut(usize::from(idx)) {
            if let Some(f) = p.inflight.take() {
                let _ = e.abort(f.id);
            }
            *p = Probe::default();
        }
    }

    /// Check now (a new or restarted backend).
    pub fn check_soon(&mut self, idx: u16) {
        if let Some(p) = self.probes.get_mut(usize::from(idx)) {
            p.next_due = None;
        }
    }

    /// Advance every probe; `targets` are the backends (slot, address) to check.
    /// Verdicts that changed go to `out`. Returns when the checker next needs a round.
    pub fn tick(
        &mut self,
        e: &mut Engine,
        targets: impl Iterator<Item = (u16, std::net::Ipv4Addr)>,
        now: Instant,
        out: &mut Vec<Transition>,
    ) -> Instant {
        let mut next = now + self.interval();
        let (interval, timeout) = (self.interval(), self.timeout());
        for (idx, ip) in targets {
            let i = usize::from(idx);
            if self.probes.len() <= i {
                self.probes.resize_with(i + 1, Probe::default);
            }
            let request = &self.request;
            let kind = self.spec.kind;
            let p = &mut self.probes[i];
            let mut verdict = None;
            if let Some(f) = p.inflight.as_mut() {
                verdict = advance(e, f, kind, request, now);
                if verdict.is_none() && now >= f.deadline {
                    verdict = Some(false);
                }
                if verdict.is_some() {
                    if let Some(f) = p.inflight.take() {
                        let _ = e.abort(f.id);
                    }
                }
            }
            if let Some(ok) = verdict {
                let was = p.healthy;
                if ok {
                    p.fails = 0;
                    p.healthy = Some(true);
                } else {
                    p.fails += 1;
                    if p.fails >= FALL || was.is_none() {
                        p.healthy = Some(false);
                    }
                }
                if p.healthy != was {
                    if let Some(h) = p.healthy {
                        out.push((idx, h));
                    }
                }
            }
            if p.inflight.is_none() && p.next_due.is_none_or(|d| d <= now) {
                if let Ok(id) = e.connect(SocketAddrV4::new(ip, self.port)) {
                    p.inflight = Some(Inflight {
                        id,
                        deadline: now + timeout,
                        sent: false,
                        got: [0; 12],
                        len: 0,
                    });
                }
                p.next_due = Some(now + interval);
            }
            if let Some(f) = &p.inflight {
                // Poll an open check every round it may progress; wake for its deadline.
                next = next.min(f.deadline);
            }
            if let Some(d) = p.next_due {
                next = next.min(d);
            }
        }
        next
    }
}

/// Move an open check along; `Some(verdict)` once it is decided.
fn advance(
    e: &mut Engine,
    f: &mut Inflight,
    kind: HealthKind,
    request: &[u8],
    _now: Instant,
) -> Option<bool> {
    if !e.is_established(f.id) {
        // Connecting still, or refused/reset (closed): decided by the state.
        return if e.is_open(f.id) || f.sent {
            if f.sent {
                read_status(e, f)
            } else {
                None
            }
        } else {
            Some(false)
        };
    }
    match kind {
        HealthKind::Tcp => Some(true),
        HealthKind::Http => {
            if !f.sent {
                match e.write(f.id, request) {
                    Ok(n) if n == request.len() => f.sent = true,
                    Ok(_) => return Some(false), // a fresh socket takes 100 bytes
                    Err(_) => return Some(false),
                }
            }
            read_status(e, f)
        }
    }
}

/// Read the status line's first 12 bytes; 2xx and 3xx pass.
fn read_status(e: &mut Engine, f: &mut Inflight) -> Option<bool> {
    loop {
        if f.len == f.got.len() {
            let ok = f.got.starts_with(b"HTTP/1.") && matches!(f.got[9], b'2' | b'3');
            return Some(ok);
        }
        match e.read(f.id, &mut f.got[f.len..]) {
            Ok(0) => return None,
            Ok(n) => f.len += n,
            Err(_) => return Some(false),
        }
    }
}

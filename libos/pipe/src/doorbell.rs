//! Doorbells: spin, then sleep on a futex in shared memory; producers wake sleepers.
//!
//! See [`crate::abi::Doorbell`] for the protocol. A consumer may watch several doorbells at
//! once (its pipe and each fast channel): it sleeps on all of them with `futex_waitv`
//! (Linux 5.16+), so a wake-up from any producer ends the sleep.

use core::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::Duration;

use crate::abi::Doorbell;

/// Wake the consumer behind `bell` if it sleeps. Call after publishing to its ring.
/// A null `bell` means nobody sleeps on this ring: nothing to do.
///
/// # Safety
/// `bell` must point into a live shared mapping (it may be written by a peer at any time;
/// only atomic operations are used on it).
pub unsafe fn ring(bell: *const Doorbell) {
    if bell.is_null() {
        return;
    }
    fence(Ordering::SeqCst);
    // SAFETY: caller guarantees `bell` is in a live mapping; fields are atomics.
    let bell = unsafe { &*bell };
    if bell.sleeping.load(Ordering::Relaxed) != 0 {
        bell.wake.fetch_add(1, Ordering::Release);
        futex_wake(&bell.wake);
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32 address; no memory is written by the
    // kernel. Not FUTEX_PRIVATE: the word is shared between processes.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Set once `futex_waitv` turned out to be missing; sleeps then use a fallback.
static NO_WAITV: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The most doorbells one sleep can watch (the kernel's `FUTEX_WAITV_MAX`).
pub const MAX_BELLS: usize = 128;

#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

const FUTEX2_SIZE_U32: u32 = 0x02;
const SYS_FUTEX_WAITV: libc::c_long = 449;

impl Doorbell {
    /// [`ring`] through a reference (which is live by definition).
    pub fn ring(&self) {
        // SAFETY: a reference points at a live Doorbell.
        unsafe { ring(self) }
    }
}

/// A doorbell that stays valid as long as the handle lives: one in a shared mapping (which
/// the handle keeps mapped) or one in private memory. What the master sleeps on, so it
/// holds no raw pointer.
#[derive(Clone)]
pub struct BellHandle {
    bell: *const Doorbell,
    _owner: BellOwner,
}

#[derive(Clone)]
enum BellOwner {
    Map {
        _map: std::sync::Arc<crate::shm::SharedMap>,
    },
    Private {
        _bell: std::sync::Arc<Doorbell>,
    },
}

// SAFETY: the pointer is into memory `_owner` keeps alive; only atomics are used on it.
unsafe impl Send for BellHandle {}

impl BellHandle {
    /// A doorbell in private memory.
    pub fn private(bell: std::sync::Arc<Doorbell>) -> Self {
        BellHandle {
            bell: std::sync::Arc::as_ptr(&bell),
            _owner: BellOwner::Private { _bell: bell },
        }
    }

    /// A doorbell at `bell` inside `map`.
    ///
    /// # Safety
    /// `bell` must point at a `Doorbell` inside `map`.
    pub(crate) unsafe fn in_map(
        map: std::sync::Arc<crate::shm::SharedMap>,
        bell: *const Doorbell,
    ) -> Self {
        BellHandle {
            bell,
            _owner: BellOwner::Map { _map: map },
        }
    }

    /// Ring it (wake whoever sleeps on it).
    pub fn ring(&self) {
        // SAFETY: the handle keeps the bell's memory alive.
        unsafe { ring(self.bell) }
    }
}

/// A consumer's sleep over a set of doorbells. Reused across sleeps: no allocation after
/// the first.
#[derive(Default)]
pub struct Sleeper {
    bells: Vec<*const Doorbell>,
    waiters: Vec<FutexWaitv>,
    /// Handles given to [`Sleeper::prepare_handles`], kept until `wait`/`cancel` so the
    /// bells stay mapped.
    held: Vec<BellHandle>,
}

// SAFETY: the raw pointers point into shared mappings owned by the same engine; the
// Sleeper is only used by that engine's thread.
unsafe impl Send for Sleeper {}

impl Sleeper {
    /// Announce sleep on `bells` (at most [`MAX_BELLS`]; extra ones are ignored and the
    /// sleep should then be short). After this, re-check every ring; if work appeared call
    /// [`Sleeper::cancel`], otherwise [`Sleeper::wait`].
    ///
    /// # Safety
    /// Every pointer must point into a mapping that stays live until `wait`/`cancel`.
    pub unsafe fn prepare(&mut self, bells: impl IntoIterator<Item = *const Doorbell>) {
        self.bells.clear();
        self.waiters.clear();
        for b in bells.into_iter().take(MAX_BELLS) {
            // SAFETY: caller guarantees liveness.
            let bell = unsafe { &*b };
            let seen = bell.wake.load(Ordering::Acquire);
            bell.sleeping.store(1, Ordering::Relaxed);
            self.bells.push(b);
            self.waiters.push(FutexWaitv {
                val: seen as u64,
                uaddr: bell.wake.as_ptr() as u64,
                flags: FUTEX2_SIZE_U32,
                reserved: 0,
            });
        }
        fence(Ordering::SeqCst);
    }

    /// [`prepare`](Self::prepare) on doorbells the sleeper keeps alive itself (it holds
    /// the handles until `wait`/`cancel`): no safety contract for the caller.
    pub fn prepare_handles(&mut self, bells: impl IntoIterator<Item = BellHandle>) {
        self.held.clear();
        self.held.extend(bells.into_iter().take(MAX_BELLS));
        let held = std::mem::take(&mut self.held);
        // SAFETY: every bell is kept alive by its handle, held in `self.held` until
        // `wait`/`cancel` clear it.
        unsafe { self.prepare(held.iter().map(|h| h.bell)) };
        self.held = held;
    }

    /// Sleep until a watched doorbell rings or `timeout` passes, then clear `sleeping`.
    pub fn wait(&mut self, timeout: Duration) {
        if !self.waiters.is_empty() {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes the timespec we pass.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
            let total = now.tv_nsec as u64 + timeout.subsec_nanos() as u64;
            let deadline = libc::timespec {
                tv_sec: now.tv_sec
                    + timeout.as_secs().min(i32::MAX as u64) as i64
                    + (total / 1_000_000_000) as i64,
                tv_nsec: (total % 1_000_000_000) as i64,
            };
            if !NO_WAITV.load(Ordering::Relaxed) {
                // SAFETY: `waiters` holds valid futex_waitv entries for live u32 words; the
                // kernel only reads them and the absolute deadline.
                let r = unsafe {
                    libc::syscall(
                        SYS_FUTEX_WAITV,
                        self.waiters.as_ptr(),
                        self.waiters.len() as u32,
                        0u32,
                        &deadline as *const libc::timespec,
                        libc::CLOCK_MONOTONIC,
                    )
                };
                let err = std::io::Error::last_os_error().raw_os_error();
                if r < 0 && matches!(err, Some(libc::ENOSYS) | Some(libc::EPERM)) {
                    NO_WAITV.store(true, Ordering::Relaxed);
                    log::warn!("futex_waitv is unavailable (Linux < 5.16 or a seccomp filter): sleeping in 1 ms slices on one doorbell");
                } else {
                    self.cancel();
                    return;
                }
            }
            // Fallback: wait on the first doorbell only, briefly, so the others are
            // noticed within a millisecond.
            let w = &self.waiters[0];
            let slice = libc::timespec {
                tv_sec: 0,
                tv_nsec: timeout.as_nanos().min(1_000_000) as i64,
            };
            // SAFETY: FUTEX_WAIT on a live u32 word with a relative timeout we own.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    w.uaddr as *const u32,
                    libc::FUTEX_WAIT,
                    w.val as u32,
                    &slice as *const libc::timespec,
                    0usize,
                    0u32,
                );
            }
        } else {
            std::thread::sleep(timeout);
        }
        self.cancel();
    }

    /// Leave the sleeping state without waiting.
    pub fn cancel(&mut self) {
        for &b in &self.bells {
            // SAFETY: liveness guaranteed by the `prepare` contract.
            unsafe { &*b }.sleeping.store(0, Ordering::Relaxed);
        }
        self.bells.clear();
        self.waiters.clear();
        self.held.clear();
    }
}

/// Spin-then-sleep policy for an engine loop.
#[derive(Clone, Copy, Debug)]
pub struct IdlePolicy {
    /// How long to keep polling with no work before sleeping. The VM's futex wake-ups cost
    /// tens of µs, so a short spin saves latency on ping-pong traffic.
    pub spin: Duration,
    /// Longest single sleep (control changes and timers are noticed at least this often).
    pub max_sleep: Duration,
    /// While spinning, yield the core every this many idle rounds: with more busy threads
    /// than cores the thread holding our next frame may be queued behind us, but yielding
    /// on every round turns into context-switch churn.
    pub yield_every: u32,
    /// How long after a round that received from a fast channel to spin without
    /// yielding. A fast-channel partner runs on the other core, not behind us, and its
    /// answer usually comes within microseconds; a yield (a system call, longer in a VM)
    /// that is under way when it comes delays it. 1 KB ping-pong over a fast channel:
    /// one-way p50 1.9–2.0 µs yielding at once, 1.1–1.3 µs with 2 µs of this. Frames
    /// through the master do not start it: there a third busy thread (docknetd) may need
    /// our core, and a pure spin raised that path's p50 from 5.8 to 6.9 µs.
    pub fc_spin: Duration,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            spin: Duration::from_micros(200),
            max_sleep: Duration::from_millis(100),
            yield_every: 1,
            fc_spin: Duration::from_micros(2),
        }
    }
}

impl IdlePolicy {
    /// The default, with `DOCKNET_SPIN_US`, `DOCKNET_YIELD_EVERY` and
    /// `DOCKNET_FC_SPIN_US` applied if set.
    pub fn from_env() -> Self {
        let mut p = IdlePolicy::default();
        if let Some(us) = std::env::var("DOCKNET_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            p.spin = Duration::from_micros(us);
        }
        if let Some(n) = std::env::var("DOCKNET_YIELD_EVERY")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            p.yield_every = n.max(1);
        }
        if let Some(us) = std::env::var("DOCKNET_FC_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            // Never longer than the whole spin: past it the engine sleeps anyway.
            p.fc_spin = Duration::from_micros(us).min(p.spin);
        }
        p
    }

    /// Called once per idle round while spinning: yields every `yield_every` rounds.
    pub fn spin_once(&self, rounds: &mut u32) {
        *rounds = rounds.wrapping_add(1);
        if (*rounds).is_multiple_of(self.yield_every) {
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
}

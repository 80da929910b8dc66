//! Surviving a peer that shrinks a shared file under us.
//!
//! A pipe or fast-channel file is a tmpfs file a tenant can `truncate`: every access to the
//! mapped pages past the new end then raises SIGBUS, which by default kills the process —
//! `docknetd` (every tenant's network) or a fast channel's peer. The kernel gives no way to
//! forbid the shrink on a plain tmpfs file (seals exist only for memfds), so, as Wayland
//! compositors do for client shm pools, we catch the signal:
//!
//! - every [`crate::shm::SharedMap`] registers its address range here ([`register`]);
//! - a SIGBUS whose faulting address lies in a registered range is answered by mapping
//!   private anonymous zero pages over the *whole* range (`MAP_FIXED`) and marking it
//!   broken; the faulting instruction then re-runs on the zeros and the process goes on;
//! - the owner of the mapping sees [`is_broken`] and quarantines it (the master stops
//!   switching that pipe and shows it as broken; a libOS stops using that fast channel);
//! - a SIGBUS anywhere else goes to the handler that was there before (Rust's stack-overflow
//!   handler, or the default action), so real bugs still crash as before.
//!
//! The handler only reads atomics from a fixed table and calls `mmap`: async-signal-safe,
//! no allocation, no lock. Zeros are a valid state for everything in a pipe (empty rings,
//! zero-length descriptors are refused), so code that was mid-copy finishes harmlessly.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// Most mappings guarded at once in one process (a master with this many pipes and
/// channels; more are mapped unguarded, with a warning).
pub const MAX_GUARDED: usize = 8192;

/// A `len` value that marks a slot being filled (not yet matched by the handler).
const CLAIMED: usize = usize::MAX;

struct Range {
    start: AtomicUsize,
    /// 0: free; [`CLAIMED`]: being registered; else the mapping's length.
    len: AtomicUsize,
    broken: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // used only to initialise the array
const FREE: Range = Range {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    broken: AtomicBool::new(false),
};

static RANGES: [Range; MAX_GUARDED] = [FREE; MAX_GUARDED];
/// Mappings replaced by zeros since start (for logs and stats).
static QUARANTINED: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
/// The SIGBUS action before ours, for faults that are not ours. Written once, before our
/// handler is installed, and only read afterwards.
static mut PREVIOUS: core::mem::MaybeUninit<libc::sigaction> = core::mem::MaybeUninit::uninit();

/// A registered range (its slot). Unregisters nothing by itself: call [`unregister`]
/// before unmapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardId(usize);

/// Guard `len` bytes mapped at `start`: a SIGBUS inside turns them into zeros instead of
/// killing the process. `None` if the table is full (the mapping stays unguarded).
pub fn register(start: *mut u8, len: usize) -> Option<GuardId> {
    if len == 0 {
        return None;
    }
    install();
    for (i, r) in RANGES.iter().enumerate() {
        if r.len
            .compare_exchange(0, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            r.broken.store(false, Ordering::Relaxed);
            r.start.store(start as usize, Ordering::Relaxed);
            r.len.store(len, Ordering::Release);
            return Some(GuardId(i));
        }
    }
    log::warn!("more than {MAX_GUARDED} shared mappings: this one is not guarded against SIGBUS");
    None
}

/// Stop guarding (call before the range is unmapped).
pub fn unregister(id: GuardId) {
    if let Some(r) = RANGES.get(id.0) {
        r.len.store(CLAIMED, Ordering::Release);
        r.start.store(0, Ordering::Relaxed);
        r.broken.store(false, Ordering::Relaxed);
        r.len.store(0, Ordering::Release);
    }
}

/// True once a SIGBUS replaced the range with zeros (its file was shrunk under us).
pub fn is_broken(id: GuardId) -> bool {
    RANGES
        .get(id.0)
        .is_some_and(|r| r.broken.load(Ordering::Acquire))
}

/// How many mappings this process has quarantined since it started.
pub fn quarantined() -> usize {
    QUARANTINED.load(Ordering::Relaxed)
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sigaction is plain data; zeroed is a valid initial value.
        let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
        act.sa_sigaction = on_sigbus as *const () as usize;
        // SA_ONSTACK: Rust's main and spawned threads have an alternate stack for its own
        // SIGSEGV/SIGBUS handler; SA_NODEFER is not needed (we never fault inside).
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `act.sa_mask` is a valid sigset to initialise.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: `PREVIOUS` is written here, once, before the handler that reads it is
        // installed (by the same sigaction call, which stores the old action first), and
        // never written again.
        let rc = unsafe {
            libc::sigaction(
                libc::SIGBUS,
                &act,
                core::ptr::addr_of_mut!(PREVIOUS).cast::<libc::sigaction>(),
            )
        };
        if rc != 0 {
            log::warn!(
                "cannot install the SIGBUS guard: {}; a peer that truncates a shared file can kill this process",
                std::io::Error::last_os_error()
            );
        }
    });
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for r in RANGES.iter() {
        let len = r.len.load(Ordering::Acquire);
        if len == 0 || len == CLAIMED {
            continue;
        }
        let start = r.start.load(Ordering::Relaxed);
        if addr < start || addr - start >= len {
            continue;
        }
        // SAFETY: [start, start + len) is a live mapping of ours (registered by a
        // SharedMap, unregistered before it is unmapped); replacing it in place with
        // private anonymous memory keeps every pointer into it valid (now zeros).
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            r.broken.store(true, Ordering::Release);
            QUARANTINED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        break;
    }
    // Not ours: what would have happened without us.
    // SAFETY: PREVIOUS was initialised before this handler was installed (see install).
    let prev = unsafe {
        core::ptr::addr_of!(PREVIOUS)
            .cast::<libc::sigaction>()
            .read()
    };
    let h = prev.sa_sigaction;
    if h == libc::SIG_IGN {
        return;
    }
    if h != libc::SIG_DFL && prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO handler has this signature; we pass what we were given.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(h) };
        f(sig, info, ctx);
        return;
    }
    if h != libc::SIG_DFL {
        // SAFETY: a plain handler takes the signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(h) };
        f(sig);
        return;
    }
    // Default: restore it and return; the faulting access re-runs and the kernel applies
    // SIGBUS's default action (core dump), as it would have without us.
    // SAFETY: sigaction with a zeroed (SIG_DFL) action is always valid.
    unsafe {
        let mut dfl: libc::sigaction = core::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, core::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file shrunk under its mapping: the read that would raise SIGBUS returns zeros and
    /// the range is marked broken; other mappings are untouched.
    #[test]
    fn a_truncated_mapping_turns_into_zeros() {
        let dir = std::env::temp_dir().join(format!("dn-sigbus-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mk = |name: &str| {
            let p = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            f.write_all(&[7u8; 8192]).unwrap();
            (p, f)
        };
        let (pa, fa) = mk("a");
        let (_pb, fb) = mk("b");
        let a = memmap2::MmapRaw::map_raw(&fa).unwrap();
        let b = memmap2::MmapRaw::map_raw(&fb).unwrap();
        let ga = register(a.as_mut_ptr(), a.len()).unwrap();
        let gb = register(b.as_mut_ptr(), b.len()).unwrap();
        // SAFETY: inside the 8192-byte mapping.
        assert_eq!(unsafe { a.as_ptr().add(4096).read_volatile() }, 7);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&pa)
            .unwrap()
            .set_len(0)
            .unwrap();
        // SAFETY: inside the mapping; the page is past the file's new end (SIGBUS, caught).
        let v = unsafe { a.as_ptr().add(4096).read_volatile() };
        assert_eq!(v, 0);
        assert!(is_broken(ga));
        assert!(!is_broken(gb));
        // SAFETY: inside b's mapping, whose file is intact.
        assert_eq!(unsafe { b.as_ptr().add(4096).read_volatile() }, 7);
        // Writes work too (private zeros).
        // SAFETY: inside a's (replaced) mapping.
        unsafe { a.as_mut_ptr().write_volatile(1) };
        unregister(ga);
        unregister(gb);
        assert!(!is_broken(ga));
        drop((a, b));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Fuzzing what reads shared memory a peer can write (the tenant-safety issue, item 10):
//! the pipe and fast-channel header parsers, and a channel reader (the master's view of a
//! service's TX ring, a service's view of its fast-channel peer's ring) while a second
//! thread scribbles over the rings, descriptors and buffers. No nightly toolchain here, so
//! no cargo-fuzz: proptest, structure-aware (start from a valid file, then mutate), with
//! shrinking, run for a bounded time per target.
//!
//! `DOCKNET_FUZZ_SECS` sets the time per target (default 5 s, what CI runs). A failure
//! prints its round's seed; `DOCKNET_FUZZ_SEED=SEED` runs that one round again (same
//! cases, same shrinking; the scribbling thread's timing still varies).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docknet::abi::{ChannelGeometry, ChannelLayout, HEADER_SIZE, MAX_MTU};
use docknet::channel::{ChannelFaults, ChannelReceiver, ChannelSender, RxFrame};
use docknet::fc::{create_fc_file, FcEnd};
use docknet::pipe::{create_pipe_file, read_pipe_info, MasterPipeEnd, PipeConfig, PIPE_FILE};
use docknet::shm::SharedMap;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

mod common;
use common::TempDir;

fn fuzz_secs() -> u64 {
    std::env::var("DOCKNET_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// `DOCKNET_FUZZ_SEED`: a seed printed by a failure (decimal or `0x` hex).
fn fixed_seed() -> Option<u64> {
    let v = std::env::var("DOCKNET_FUZZ_SEED").ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("DOCKNET_FUZZ_SEED={v:?}: {e}")))
}

/// Run `test` on values of `strategy` until the time is up, in rounds of 32 cases with a
/// fresh seed each (printed on failure, after shrinking); with `DOCKNET_FUZZ_SEED`, one
/// round with that seed.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let fixed = fixed_seed();
    let secs = if fixed.is_some() { 0 } else { fuzz_secs() };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut rounds, mut cases) = (0u64, 0u64);
    while rounds == 0 || Instant::now() < deadline {
        let round_seed = fixed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ rounds.rotate_left(32)
        });
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&round_seed.to_le_bytes());
        let config = Config {
            cases: 32,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("[fuzz] {name}: {e}\n(again: DOCKNET_FUZZ_SEED={round_seed:#x})");
        }
        rounds += 1;
        cases += 32;
    }
    match fixed {
        Some(s) => eprintln!("[fuzz] {name}: {cases} cases with seed {s:#x}, no failure"),
        None => eprintln!("[fuzz] {name}: {cases} cases in {secs} s, no failure"),
    }
}

/// A scratch directory in /dev/shm (else the temp dir), removed when the test ends.
fn scratch(tag: &str) -> TempDir {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    TempDir::new(base.join(format!(
        "dn-fuzz-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    )))
}

/// The pipe every fuzzed pipe file starts from: one pool of 1500-byte buffers, or
/// (`two_pools`) small buffers and a few large ones at MTU 65000.
fn fuzz_pipe(two_pools: bool) -> PipeConfig {
    let ip = std::net::Ipv4Addr::new(10, 88, 0, 2);
    if two_pools {
        PipeConfig {
            nlarge: 4,
            ..common::pipe_config(ip, MAX_MTU, 64, 0)
        }
    } else {
        common::pipe_config(ip, 1500, 64, 0)
    }
}

/// Buffers per direction of the fuzzed fast-channel files (small, large).
fn fc_pools(two_pools: bool) -> (u32, (u32, u32)) {
    if two_pools {
        (MAX_MTU, (64, 4))
    } else {
        (1500, (64, 0))
    }
}

/// True if frame `f`, found at address `p`, starts at the beginning of the buffer its
/// descriptor names in `l`'s area (mapped at `base`) and fits it: what every frame handed
/// out must be.
fn in_its_buffer(l: &ChannelLayout, base: usize, p: usize, f: RxFrame) -> bool {
    l.buffer(f.buf)
        .is_some_and(|(off, size)| p as u64 == base as u64 + off && f.len <= size)
}

/// Byte writes into a file: (offset, value); offsets mostly in the header page, where the
/// parser looks, some anywhere.
fn mutations(file_len: usize) -> impl Strategy<Value = Vec<(usize, u8)>> {
    let header = (0..HEADER_SIZE.min(512), any::<u8>());
    let anywhere = (0..file_len.max(1), any::<u8>());
    proptest::collection::vec(prop_oneof![4 => header, 1 => anywhere], 1..48)
}

fn apply(path: &std::path::Path, muts: &[(usize, u8)], new_len: Option<u64>) {
    let mut bytes = std::fs::read(path).unwrap();
    for &(at, v) in muts {
        if at < bytes.len() {
            bytes[at] = v;
        }
    }
    std::fs::write(path, &bytes).unwrap();
    if let Some(len) = new_len {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }
}

#[test]
fn pipe_header_parser() {
    let tmp = scratch("pipe");
    let dir = tmp.path();
    let full = {
        let m = create_pipe_file(&dir.join("p"), &fuzz_pipe(true)).unwrap();
        m.len()
    };
    let _ = std::fs::remove_dir_all(dir.join("p"));
    let lens = prop_oneof![
        3 => Just(None),
        1 => (0..(full as u64 * 2)).prop_map(Some),
    ];
    let case = (mutations(full), lens, any::<bool>());
    fuzz("pipe header", case, |(muts, len, two_pools)| {
        let d = dir.join("p");
        let _ = std::fs::remove_dir_all(&d);
        drop(create_pipe_file(&d, &fuzz_pipe(two_pools)).unwrap());
        let file = d.join(PIPE_FILE);
        apply(&file, &muts, len);
        let map = SharedMap::open(&file).unwrap();
        let size = map.len() as u64;
        if let Ok(info) = read_pipe_info(&map) {
            for l in [&info.rx, &info.tx] {
                let end = l.buf_off + l.buf_area_bytes();
                prop_assert!(end <= size, "a layout past the file end passed: {l:?}");
            }
            prop_assert!(!info.rx.overlaps(&info.tx), "overlapping channels passed");
            let tx_layout = info.tx;
            // Where the mapping puts the TX buffer area (it stays mapped there).
            let base = map.bytes_at(tx_layout.buf_off as usize, 0).unwrap() as usize;
            // The master's end over it: channels usable without panics.
            if let Ok(mut end) = MasterPipeEnd::new(map) {
                for _ in 0..8 {
                    if let Some(f) = end.tx.recv() {
                        prop_assert!(f.len as usize <= end.tx.buf_size());
                        let p = end.tx.frame_ptr(f) as usize;
                        prop_assert!(
                            in_its_buffer(&tx_layout, base, p, f),
                            "frame {f:?} not inside one buffer of {tx_layout:?}"
                        );
                        end.tx.give_back(f.buf);
                    }
                }
                end.tx.flush();
            }
        }
        Ok(())
    });
}

#[test]
fn fast_channel_header_parser() {
    let tmp = scratch("fc");
    let dir = tmp.path();
    let a = (std::net::Ipv4Addr::new(10, 88, 0, 2), [2, 0, 10, 88, 0, 2]);
    let b = (std::net::Ipv4Addr::new(10, 88, 0, 3), [2, 0, 10, 88, 0, 3]);
    let (mtu, pools) = fc_pools(true);
    let full = create_fc_file(&dir.join("probe.map"), a, b, mtu, pools)
        .unwrap()
        .len();
    let _ = std::fs::remove_file(dir.join("probe.map"));
    let lens = prop_oneof![3 => Just(None), 1 => (0..(full as u64 * 2)).prop_map(Some)];
    fuzz(
        "fast-channel header",
        (mutations(full), lens, any::<bool>(), any::<bool>()),
        |(muts, len, side_a, two_pools)| {
            let file = dir.join("c.map");
            let _ = std::fs::remove_file(&file);
            let (mtu, pools) = fc_pools(two_pools);
            drop(create_fc_file(&file, a, b, mtu, pools).unwrap());
            apply(&file, &muts, len);
            let me = if side_a { a.0 } else { b.0 };
            if let Ok(mut end) = FcEnd::attach(&file, me) {
                for _ in 0..8 {
                    if let Some(f) = end.rx.recv() {
                        prop_assert!(f.len as usize <= end.rx.buf_size());
                        end.rx.give_back(f.buf);
                    }
                }
                end.rx.flush();
            }
            Ok(())
        },
    );
}

/// A tiny PRNG for the scribbling thread (seeded by the case).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A reader and a sender on one channel while another thread writes garbage into its
/// ring indices, descriptors and return ring as fast as it can: every frame handed out
/// lies inside the buffer area, nothing panics, the faults are counted.
#[test]
fn channel_reader_under_concurrent_scribbling() {
    let tmp = scratch("race");
    let dir = tmp.path();
    fuzz(
        "channel under a racing writer",
        (any::<u64>(), 50usize..400, any::<bool>()),
        |(seed, rounds, two_pools)| {
            let geo = if two_pools {
                ChannelGeometry::two_pools(MAX_MTU, 64, 4)
            } else {
                ChannelGeometry::for_mtu(1500, 64)
            };
            let (layout, end) = geo.layout_at(HEADER_SIZE);
            let file = dir.join("ch");
            let _ = std::fs::remove_file(&file);
            let map = Arc::new(SharedMap::create(&file, end).unwrap());
            let faults = Arc::new(ChannelFaults::default());
            // SAFETY (test): `map` outlives both ends (held until the end of the case); no bells.
            let mut tx =
                unsafe { ChannelSender::new(&map, &layout, std::ptr::null(), faults.clone()) }
                    .unwrap();
            // SAFETY (test): as above.
            let mut rx =
                unsafe { ChannelReceiver::new(&map, &layout, std::ptr::null(), faults.clone()) }
                    .unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let scribbler = {
                let (map, stop) = (map.clone(), stop.clone());
                let ring_bytes = docknet::abi::ring_bytes(layout.ring_size);
                let regions = [
                    (layout.ring_off as usize, ring_bytes),
                    (layout.ret_off as usize, ring_bytes),
                    (layout.buf_off as usize, layout.buf_area_bytes() as usize),
                ];
                std::thread::spawn(move || {
                    let mut r = XorShift(seed | 1);
                    while !stop.load(Ordering::Relaxed) {
                        let (off, len) = regions[(r.next() % 3) as usize];
                        let at = off + (r.next() as usize % (len / 4)) * 4;
                        if let Some(p) = map.ptr_at::<core::sync::atomic::AtomicU32>(at) {
                            // SAFETY: an aligned u32 inside the mapping, written atomically.
                            unsafe { &*p }.store(r.next() as u32, Ordering::Relaxed);
                        }
                        if r.next().is_multiple_of(64) {
                            std::thread::yield_now();
                        }
                    }
                })
            };
            let base = map.bytes_at(layout.buf_off as usize, 0).unwrap() as usize;
            let area = layout.buf_area_bytes() as usize;
            let mut out = vec![0u8; layout.max_frame() as usize];
            let mut failure = None;
            for i in 0..rounds {
                // Every fifth frame of a two-pool channel is too large for a small buffer.
                let len = if two_pools && i % 5 == 0 {
                    9100 + (i * 97) % 50_000
                } else {
                    60 + (i % 1400)
                };
                if let Some(b) = tx.alloc(len) {
                    if tx.size_of(b) < len {
                        failure = Some(format!("buffer {b} too small for {len} bytes"));
                    }
                    // SAFETY: a buffer allocated for `len` bytes (checked just above).
                    unsafe {
                        std::ptr::write_bytes(tx.buf_ptr(b), i as u8, len.min(tx.size_of(b)))
                    };
                    tx.post(b, len.min(tx.size_of(b)));
                }
                tx.flush();
                tx.reclaim();
                while let Some(f) = rx.recv() {
                    let p = rx.frame_ptr(f) as usize;
                    let n = f.len as usize;
                    if p < base
                        || p + n > base + area
                        || n > out.len()
                        || !in_its_buffer(&layout, base, p, f)
                    {
                        failure = Some(format!("frame outside one buffer: {p:#x}+{n}"));
                    }
                    // SAFETY: checked just above to lie inside the buffer area.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            p as *const u8,
                            out.as_mut_ptr(),
                            n.min(out.len()),
                        )
                    };
                    rx.give_back(f.buf);
                }
                rx.flush();
            }
            stop.store(true, Ordering::Relaxed);
            scribbler.join().unwrap();
            prop_assert!(failure.is_none(), "{failure:?}");
            Ok(())
        },
    );
}

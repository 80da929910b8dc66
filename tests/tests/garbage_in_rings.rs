//! A hostile "service" writes garbage into its pipe's rings, buffers and doorbell while
//! the master keeps serving an honest pair of services; the master counts the drops.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docknet::abi::{ChannelLayout, Desc, Doorbell, PipeHeader, RingIndices};
use docknet::pipe::{read_pipe_info, PipeInfo};
use docknet::shm::SharedMap;
use docknet_tests::nic::frames;
use docknet_tests::{counter, counter_in, pipe_stats, Daemon, XorShift, COUNTERS};

const SEED: u64 = 0x00D0_C4E7_5EED;
/// How long the hostile writer (and the honest echo rounds beside it) run at least.
const GARBAGE_FOR: Duration = Duration::from_secs(3);

/// Raw view of one ring in the hostile pipe.
#[derive(Clone, Copy)]
struct Ring {
    idx: *const RingIndices,
    entries: *mut Desc,
    size: u32,
}

impl Ring {
    fn new(map: &SharedMap, l: &ChannelLayout, off: u64) -> Ring {
        let bytes = docknet::abi::ring_bytes(l.ring_size);
        map.bytes_at(off as usize, bytes)
            .expect("ring inside the file");
        let idx = map
            .ptr_at::<RingIndices>(off as usize)
            .expect("ring indices inside the file");
        // SAFETY: the whole ring (indices + entries) lies in the mapping (checked above).
        let entries =
            unsafe { (idx as *mut u8).add(core::mem::size_of::<RingIndices>()) } as *mut Desc;
        Ring {
            idx,
            entries,
            size: l.ring_size,
        }
    }
    fn prod(&self) -> &AtomicU32 {
        // SAFETY: `idx` is inside the live mapping (constructor); the field is atomic.
        unsafe { &(*self.idx).prod }
    }
    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &(*self.idx).cons }
    }
    /// Free slots for a producer at `mine` (0 if the consumer looks impossibly far away).
    fn room(&self, mine: u32) -> u32 {
        self.size
            .saturating_sub(mine.wrapping_sub(self.cons().load(Ordering::Acquire)))
    }
    fn write(&self, i: u32, d: Desc) {
        // SAFETY: the slot index is masked below `size`, inside the entries array; the
        // memory is shared plain memory, so a volatile write is all that is needed.
        unsafe {
            self.entries
                .add((i & (self.size - 1)) as usize)
                .write_volatile(d)
        }
    }
    fn read(&self, i: u32) -> Desc {
        // SAFETY: as in `write`.
        unsafe {
            self.entries
                .add((i & (self.size - 1)) as usize)
                .read_volatile()
        }
    }
}

/// Bring our private producer index level with the consumer's published index if the
/// consumer got ahead of us (after we lied about our index and it read stale slots).
fn resync(mine: &mut u32, theirs: u32) {
    if theirs.wrapping_sub(*mine) < (1 << 31) {
        *mine = theirs;
    }
}

struct Frames {
    x: PipeInfo,
    a_mac: [u8; 6],
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
}

impl Frames {
    /// IPv4 from the hostile pipe to a's MAC (header checksum right, payload as is).
    fn ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = frames::ipv4_unsummed(
            self.a_mac,
            self.x.mac,
            src.octets(),
            dst.octets(),
            proto,
            payload,
        );
        frames::fix_ip_checksum(&mut f);
        f
    }

    fn arp_request(&self, target: Ipv4Addr) -> Vec<u8> {
        frames::arp_request(self.x.mac, self.x.ipv4.octets(), target.octets())
    }

    /// One hostile frame of a random kind, at most `max` bytes.
    fn make(&self, rng: &mut XorShift, max: usize, out: &mut Vec<u8>) {
        out.clear();
        let mut payload = vec![0u8; 8 + rng.below(200) as usize];
        rng.fill(&mut payload);
        match rng.below(9) {
            // Random bytes.
            0 => {
                out.resize(1 + rng.below(max as u64) as usize, 0);
                rng.fill(out);
            }
            // Shorter than an Ethernet header.
            1 => {
                out.resize(1 + rng.below(13) as usize, 0);
                rng.fill(out);
            }
            // Bogus IPv4 header: wrong version, short IHL, lying length, or truncated.
            2 => {
                *out = self.ipv4(self.x.ipv4, self.a_ip, 17, &payload);
                match rng.below(4) {
                    0 => out[14] = 0x65,
                    1 => out[14] = 0x42,
                    2 => out[16..18].copy_from_slice(&0xfff0u16.to_be_bytes()),
                    _ => out.truncate(14 + rng.below(20) as usize),
                }
            }
            // Spoofed source IP (the honest neighbour's, or random) towards a.
            3 => {
                let src = if rng.one_in(2) {
                    self.b_ip
                } else {
                    Ipv4Addr::from(rng.next_u32() | 0x0100_0000)
                };
                let src = if src == self.x.ipv4 { self.b_ip } else { src };
                let proto = if rng.one_in(2) { 6 } else { 17 };
                *out = self.ipv4(src, self.a_ip, proto, &payload);
            }
            // Nobody has this address (inside and outside the subnet).
            4 => {
                let dst = if rng.one_in(2) {
                    Ipv4Addr::new(10, 88, 200, 201)
                } else {
                    Ipv4Addr::new(192, 0, 2, 1)
                };
                *out = self.ipv4(self.x.ipv4, dst, 17, &payload);
            }
            // ARP for an unknown address, and for a known one (the master answers on our
            // RX ring, whose consumer index we also garble).
            5 => *out = self.arp_request(Ipv4Addr::new(10, 88, 201, 202)),
            6 => {
                *out = self.arp_request(if rng.one_in(2) {
                    self.a_ip
                } else {
                    self.x.gateway
                })
            }
            // Not IPv4/ARP.
            7 => {
                *out = frames::eth(self.a_mac, self.x.mac, 0x86dd);
                out.extend_from_slice(&payload);
            }
            // Garbled ARP.
            _ => {
                *out = self.arp_request(self.a_ip);
                let i = 14 + rng.below(28) as usize;
                out[i] ^= 0xff;
                out.truncate(14 + rng.below(28) as usize);
            }
        }
        out.truncate(max);
    }
}

struct Hostile {
    _map: SharedMap,
    hdr: *mut PipeHeader,
    tx_ring: Ring,
    tx_ret: Ring,
    rx_ring: Ring,
    rx_fill: Ring,
    tx_bufs: *mut u8,
    tx: ChannelLayout,
    rx: ChannelLayout,
    bell: *const Doorbell,
}

impl Hostile {
    fn attach(map: SharedMap, info: &PipeInfo) -> Hostile {
        let hdr = map.ptr_at::<PipeHeader>(0).expect("header");
        let tx_bufs = map
            .bytes_at(
                info.tx.buf_off as usize,
                info.tx.nbufs as usize * info.tx.buf_size as usize,
            )
            .expect("tx buffers in file");
        Hostile {
            hdr,
            tx_ring: Ring::new(&map, &info.tx, info.tx.ring_off),
            tx_ret: Ring::new(&map, &info.tx, info.tx.ret_off),
            rx_ring: Ring::new(&map, &info.rx, info.rx.ring_off),
            rx_fill: Ring::new(&map, &info.rx, info.rx.ret_off),
            tx_bufs,
            tx: info.tx,
            rx: info.rx,
            // SAFETY: the header lies in the mapping (ptr_at).
            bell: unsafe { core::ptr::addr_of!((*hdr).master_bell) },
            _map: map,
        }
    }

    fn attached_pid(&self) -> &AtomicU32 {
        // SAFETY: header inside the live mapping; atomic field.
        unsafe { &(*self.hdr).attached_pid }
    }

    fn ring_bell(&self) {
        // SAFETY: the bell is inside the live mapping held by `self`.
        unsafe { docknet::doorbell::ring(self.bell) }
    }

    fn write_buf(&self, buf: u32, bytes: &[u8]) {
        assert!(buf < self.tx.nbufs && bytes.len() <= self.tx.buf_size as usize);
        // SAFETY: `buf < nbufs` and `bytes` fits one buffer, so the write stays inside the
        // TX buffer area of the mapping; the area is shared plain memory (the master may
        // read it concurrently: that is the torn write this test wants).
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.tx_bufs.add(buf as usize * self.tx.buf_size as usize),
                bytes.len(),
            )
        }
    }

    /// Keep writing garbage until `stop`; returns the number of operations done.
    fn run(&self, frames: &Frames, stop: &AtomicBool, min: Duration) -> u64 {
        let mut rng = XorShift::new(SEED);
        let (mut tx_prod, mut fill_prod) = (
            self.tx_ring.prod().load(Ordering::Relaxed),
            self.rx_fill.prod().load(Ordering::Relaxed),
        );
        let mut frame = Vec::new();
        let mut scratch = vec![0u8; self.tx.buf_size as usize];
        let start = Instant::now();
        let mut ops = 0u64;
        while !(stop.load(Ordering::Relaxed) && start.elapsed() >= min) {
            ops += 1;
            match rng.below(20) {
                // Post a batch of descriptors on TX: mostly real frames (hostile ones),
                // some with out-of-range buffer indices or lengths.
                0..=9 => {
                    resync(&mut tx_prod, self.tx_ring.cons().load(Ordering::Acquire));
                    let room = self.tx_ring.room(tx_prod).min(32);
                    for _ in 0..rng.below(u64::from(room) + 1) as u32 {
                        let buf = match rng.below(10) {
                            0 | 1 => rng.next_u32() | self.tx.nbufs,
                            // The pool of large buffers (default pipes have one) and just
                            // past its end, with any of the lengths below.
                            2 => self.tx.nbufs + rng.below(u64::from(self.tx.nlarge) + 2) as u32,
                            _ => rng.below(u64::from(self.tx.nbufs)) as u32,
                        };
                        let len = match rng.below(8) {
                            0 => 0,
                            1 => self.tx.buf_size + 1 + rng.below(1 << 20) as u32,
                            2 => rng.next_u32(),
                            _ => {
                                frames.make(&mut rng, self.tx.buf_size as usize, &mut frame);
                                if buf < self.tx.nbufs {
                                    self.write_buf(buf, &frame);
                                }
                                frame.len() as u32
                            }
                        };
                        self.tx_ring.write(
                            tx_prod,
                            Desc {
                                buf,
                                len,
                                flags: rng.next_u32(),
                                _reserved: rng.next_u32(),
                            },
                        );
                        tx_prod = tx_prod.wrapping_add(1);
                    }
                    self.tx_ring.prod().store(tx_prod, Ordering::Release);
                }
                // Lie about the TX producer index: far ahead, behind, or slightly ahead
                // (stale slots get read); then tell the truth again.
                10 => {
                    let lie = match rng.below(3) {
                        0 => {
                            tx_prod.wrapping_add(self.tx_ring.size + 1 + rng.below(1 << 30) as u32)
                        }
                        1 => tx_prod.wrapping_sub(1 + rng.below(1000) as u32),
                        _ => rng.next_u32(),
                    };
                    self.tx_ring.prod().store(lie, Ordering::Release);
                    self.ring_bell();
                    std::thread::sleep(Duration::from_micros(rng.below(300)));
                    self.tx_ring.prod().store(tx_prod, Ordering::Release);
                }
                // Garbage on the fill ring (RX buffers handed back): indices out of range,
                // never lent, or returned twice; sometimes a lying producer index.
                11 | 12 => {
                    resync(&mut fill_prod, self.rx_fill.cons().load(Ordering::Acquire));
                    let room = self.rx_fill.room(fill_prod).min(16);
                    for _ in 0..rng.below(u64::from(room) + 1) {
                        let buf = if rng.one_in(2) {
                            rng.next_u32()
                        } else {
                            rng.below(u64::from(self.rx.nbufs + self.rx.nlarge)) as u32
                        };
                        self.rx_fill.write(
                            fill_prod,
                            Desc {
                                buf,
                                len: rng.next_u32(),
                                ..Default::default()
                            },
                        );
                        fill_prod = fill_prod.wrapping_add(1);
                    }
                    if rng.one_in(3) {
                        self.rx_fill.prod().store(
                            fill_prod.wrapping_add(self.rx_fill.size * 4 + rng.below(99) as u32),
                            Ordering::Release,
                        );
                        self.ring_bell();
                        std::thread::sleep(Duration::from_micros(rng.below(300)));
                    }
                    self.rx_fill.prod().store(fill_prod, Ordering::Release);
                }
                // Consume the RX ring: honestly (returning the real buffers), or with a
                // garbage consumer index.
                13 | 14 => {
                    let prod = self.rx_ring.prod().load(Ordering::Acquire);
                    if rng.one_in(3) {
                        self.rx_ring.cons().store(rng.next_u32(), Ordering::Release);
                    } else {
                        let mut c = self.rx_ring.cons().load(Ordering::Acquire);
                        let n = prod.wrapping_sub(c).min(self.rx_ring.size);
                        resync(&mut fill_prod, self.rx_fill.cons().load(Ordering::Acquire));
                        let room = self.rx_fill.room(fill_prod);
                        for _ in 0..n.min(room) {
                            let d = self.rx_ring.read(c);
                            self.rx_fill.write(
                                fill_prod,
                                Desc {
                                    buf: d.buf,
                                    ..Default::default()
                                },
                            );
                            fill_prod = fill_prod.wrapping_add(1);
                            c = c.wrapping_add(1);
                        }
                        self.rx_ring.cons().store(prod, Ordering::Release);
                        self.rx_fill.prod().store(fill_prod, Ordering::Release);
                    }
                }
                // Completion ring: consume honestly, or write a garbage consumer index.
                15 | 16 => {
                    let v = if rng.one_in(3) {
                        rng.next_u32()
                    } else {
                        self.tx_ret.prod().load(Ordering::Acquire)
                    };
                    self.tx_ret.cons().store(v, Ordering::Release);
                }
                // Torn writes: random bytes over random TX buffers (possibly in flight).
                17 | 18 => {
                    let buf = rng.below(u64::from(self.tx.nbufs)) as u32;
                    let n = 1 + rng.below(scratch.len() as u64) as usize;
                    rng.fill(&mut scratch[..n]);
                    self.write_buf(buf, &scratch[..n]);
                }
                // Garbage in the master's doorbell words.
                _ => {
                    // SAFETY: bell inside the live mapping; atomic fields.
                    let bell = unsafe { &*self.bell };
                    bell.sleeping.store(rng.next_u32(), Ordering::Relaxed);
                    bell.wake.store(rng.next_u32(), Ordering::Relaxed);
                }
            }
            self.ring_bell();
            if ops & 7 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        ops
    }
}

// SAFETY: the raw pointers point into `_map`, which the struct owns; only one thread
// uses a `Hostile` at a time.
unsafe impl Send for Hostile {}

#[test]
fn garbage_in_rings() {
    let mut d = Daemon::start();
    d.create_pipe("a", "10.88.0.2/16", &[]);
    d.create_pipe("b", "10.88.0.3/16", &[]);
    d.create_pipe("x", "10.88.0.66/16", &[]);
    let _server = d.echo_server("a", 7);

    let open = |p: &str| SharedMap::open(&d.pipe_dir(p).join("pipe.map")).expect("map pipe file");
    let a_info = read_pipe_info(&open("a")).expect("a's header");
    let b_info = read_pipe_info(&open("b")).expect("b's header");
    let x_map = open("x");
    let x_info = read_pipe_info(&x_map).expect("x's header");
    // Default pipes without a NIC have large buffers too: their indices get garbage too.
    assert!(x_info.tx.nlarge > 0 && x_info.rx.nlarge > 0, "{x_info:?}");
    let hostile = Hostile::attach(x_map, &x_info);
    let me = std::process::id();
    assert_eq!(
        hostile
            .attached_pid()
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire),
        Ok(0),
        "claim pipe x"
    );
    let frames = Frames {
        x: x_info,
        a_mac: a_info.mac,
        a_ip: a_info.ipv4,
        b_ip: b_info.ipv4,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let garbage = std::thread::spawn(move || {
        let ops = hostile.run(&frames, &stop2, GARBAGE_FOR);
        hostile.attached_pid().store(0, Ordering::Release);
        ops
    });

    // The honest pair keeps echoing through the master, round after round, for as long
    // as x misbehaves.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        let mut rounds = 0;
        while rounds == 0 || start.elapsed() < GARBAGE_FOR {
            d.echo_ok("b", "10.88.0.2:7", 65536, 50, Duration::from_secs(120));
            d.echo_ok("b", "10.88.0.2:7", 16 << 20, 1, Duration::from_secs(180));
            rounds += 1;
        }
        eprintln!("[garbage] {rounds} rounds of 64 KiB x 50 + 16 MiB echoed while x misbehaved");
    }));
    stop.store(true, Ordering::Relaxed);
    let ops = garbage.join().expect("garbage thread");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    eprintln!("[garbage] {ops} hostile operations on pipe x");

    assert!(d.alive(), "docknetd died:\n{}", d.log_tail());
    let ls = d.ctl_ok(&["pipe", "ls"]);
    assert!(
        ls.contains('x') && ls.contains('a'),
        "pipe ls lost pipes: {ls}"
    );

    let stats = d.stats(Some("x"));
    let xs = pipe_stats(&stats, "x").unwrap_or_else(|| panic!("no stats for x: {stats}"));
    let summary: Vec<String> = COUNTERS
        .iter()
        .map(|c| {
            format!(
                "{c}={}",
                counter_in(xs, c).map_or("-".into(), |n| n.to_string())
            )
        })
        .collect();
    eprintln!("[garbage] stats x: {}", summary.join(" "));
    // Every kind of garbage written above must have been seen and counted.
    for c in [
        "bad_desc",
        "bad_return",
        "ring_corrupt",
        "bad_frame",
        "spoofed",
        "no_route",
        "arp_unknown",
        "unsupported",
    ] {
        assert!(
            counter(&stats, "x", c) > 0,
            "counter {c} of the hostile pipe stayed 0: {xs}"
        );
    }
    let all = d.stats(None);
    for p in ["a", "b"] {
        let faults: u64 = ["bad_desc", "bad_return", "ring_corrupt"]
            .iter()
            .map(|c| counter(&all, p, c))
            .sum();
        eprintln!("[garbage] honest pipe {p}: {faults} ring faults");
        assert_eq!(faults, 0, "honest pipe {p} shows ring faults: {all}");
    }

    // The hostile pipe can be removed and the master still serves the honest pair.
    d.ctl_ok(&["pipe", "rm", "x"]);
    d.echo_ok("b", "10.88.0.2:7", 1460, 10, Duration::from_secs(60));
    assert!(
        d.alive(),
        "docknetd died after pipe rm x:\n{}",
        d.log_tail()
    );
}

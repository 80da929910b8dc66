//! The data path: one thread that moves every frame between pipes.
//!
//! It owns every [`MasterPipeEnd`] (in a `Vec` indexed by slot) and an IPv4 → slot map,
//! both changed only by [`DpMsg`] messages from the control plane. Per frame there is no
//! allocation, no syscall and no lock: a header copy, a classification, at most one
//! `memcpy` into the destination's buffer.
//!
//! When a whole round finds nothing it spins for [`IdlePolicy::spin`], then sleeps on every
//! pipe's master doorbell plus a private control doorbell (rung by the control plane after
//! each message), so an idle daemon uses ~0% CPU and config changes apply at once.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docknet::abi::Doorbell;
use docknet::channel::{ChannelSender, RxFrame};
use docknet::doorbell::{IdlePolicy, Sleeper, MAX_BELLS};
use docknet::pipe::{MasterPipeEnd, PipeControl};

use crate::net::{self, Verdict, ARP_FRAME_LEN, HDR_COPY, MASTER_MAC};
use crate::stats::{Counters, PipeStats};

/// Most frames taken from one pipe per round (keeps one busy pipe from starving others).
pub const BATCH: usize = 64;

/// A configuration change for the data path.
pub enum DpMsg {
    /// Start switching a pipe in `slot` (the control plane picks free slots).
    Add {
        slot: usize,
        end: Box<MasterPipeEnd>,
        stats: Arc<PipeStats>,
    },
    /// Stop switching the pipe in `slot` and drop its end; `done` is signalled afterwards.
    Remove {
        slot: usize,
        done: Option<std::sync::mpsc::SyncSender<()>>,
    },
    /// Leave the loop.
    Shutdown,
}

struct Slot {
    end: MasterPipeEnd,
    /// Header handle made once (`MasterPipeEnd::attached_pid` clones an `Arc` per call).
    control: PipeControl,
    stats: Arc<PipeStats>,
    local: Counters,
    dirty: bool,
    ip: u32,
    mac: [u8; 6],
    gateway: u32,
}

/// The switch state owned by the data-path thread.
pub struct Switch {
    slots: Vec<Option<Slot>>,
    by_ip: HashMap<u32, usize>,
    /// Gateway address → number of pipes using it.
    gateways: HashMap<u32, u32>,
    msgs: Receiver<DpMsg>,
    bell: Arc<Doorbell>,
    sleeper: Sleeper,
    bells: Vec<*const Doorbell>,
    idle: IdlePolicy,
}

// SAFETY: the raw doorbell pointers in `bells` point into pipe mappings owned by `slots`
// (or into the `bell` Arc) and are only used by the thread that owns the Switch.
unsafe impl Send for Switch {}

/// Copy `frame` into a new buffer of `tx` and post it. False if no buffer/slot is free.
fn send_bytes(tx: &mut ChannelSender, frame: &[u8]) -> bool {
    tx.send_copy(frame)
}

impl Switch {
    /// A switch fed by `msgs`; the control plane rings `bell` after each message.
    pub fn new(msgs: Receiver<DpMsg>, bell: Arc<Doorbell>) -> Self {
        Switch {
            slots: Vec::new(),
            by_ip: HashMap::new(),
            gateways: HashMap::new(),
            msgs,
            bell,
            sleeper: Sleeper::default(),
            bells: Vec::new(),
            idle: IdlePolicy::default(),
        }
    }

    /// Number of pipes being switched.
    pub fn pipes(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Apply one message. Returns false on shutdown.
    fn handle(&mut self, msg: DpMsg) -> bool {
        match msg {
            DpMsg::Add { slot, end, stats } => {
                self.remove(slot);
                let end = *end;
                let ip = u32::from(end.info.ipv4);
                let gateway = u32::from(end.info.gateway);
                let mac = end.info.mac;
                if self.slots.len() <= slot {
                    self.slots.resize_with(slot + 1, || None);
                }
                let local = stats.load();
                let control = end.control();
                self.slots[slot] = Some(Slot {
                    end,
                    control,
                    stats,
                    local,
                    dirty: false,
                    ip,
                    mac,
                    gateway,
                });
                self.by_ip.insert(ip, slot);
                *self.gateways.entry(gateway).or_insert(0) += 1;
                log::debug!(
                    "data path: pipe slot {slot} added ({})",
                    std::net::Ipv4Addr::from(ip)
                );
            }
            DpMsg::Remove { slot, done } => {
                self.remove(slot);
                if let Some(done) = done {
                    let _ = done.try_send(());
                }
            }
            DpMsg::Shutdown => return false,
        }
        true
    }

    fn remove(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if self.by_ip.get(&s.ip) == Some(&slot) {
            self.by_ip.remove(&s.ip);
        }
        if let Some(n) = self.gateways.get_mut(&s.gateway) {
            *n -= 1;
            if *n == 0 {
                self.gateways.remove(&s.gateway);
            }
        }
        s.stats.publish(&s.local);
        log::debug!("data path: pipe slot {slot} removed");
    }

    /// Apply every queued message. Returns false on shutdown (or if the control plane is gone).
    pub fn poll_control(&mut self) -> bool {
        loop {
            match self.msgs.try_recv() {
                Ok(msg) => {
                    if !self.handle(msg) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// One pass over every pipe: up to [`BATCH`] frames each, then flush. Returns the
    /// number of frames taken.
    pub fn round(&mut self) -> usize {
        let mut total = 0;
        for i in 0..self.slots.len() {
            for _ in 0..BATCH {
                let Some(src) = self.slots[i].as_mut() else {
                    break;
                };
                let Some(frame) = src.end.tx.recv() else {
                    break;
                };
                self.process(i, frame);
                if let Some(src) = self.slots[i].as_mut() {
                    src.end.tx.give_back(frame.buf);
                }
                total += 1;
            }
        }
        for s in self.slots.iter_mut().flatten() {
            s.end.tx.flush();
            s.end.rx.flush();
            if s.dirty {
                s.stats.publish(&s.local);
                s.dirty = false;
            }
        }
        total
    }

    /// Switch one frame taken from slot `i`'s TX channel (the caller gives its buffer back).
    fn process(&mut self, i: usize, frame: RxFrame) {
        let slots = &mut self.slots;
        let Some(src) = slots[i].as_mut() else { return };
        let len = frame.len as usize;
        let ptr = src.end.tx.frame_ptr(frame);
        let mut hdr = [0u8; HDR_COPY];
        // SAFETY: `ptr` is the start of a validated buffer of buf_size >= MIN_BUF_SIZE (640)
        // bytes and we copy at most min(len, 42) of them into a private array. The bytes
        // may change under us; we decide only on this copy.
        unsafe { core::ptr::copy_nonoverlapping(ptr, hdr.as_mut_ptr(), len.min(HDR_COPY)) };
        src.local.tx_frames += 1;
        src.local.tx_bytes += len as u64;
        src.dirty = true;
        let (src_ip, src_mac) = (src.ip, src.mac);

        match net::classify(&hdr, len, src_ip) {
            Verdict::Drop(why) => {
                let c = &mut src.local;
                match why {
                    net::Drop::BadFrame => c.bad_frame += 1,
                    net::Drop::ArpOp | net::Drop::Unsupported => c.unsupported += 1,
                    net::Drop::Spoofed => c.spoofed += 1,
                }
            }
            Verdict::ArpRequest {
                sender_mac,
                sender_ip,
                target_ip,
            } => {
                let answer_mac = match self.by_ip.get(&target_ip) {
                    Some(&d) => slots.get(d).and_then(Option::as_ref).map(|d| d.mac),
                    None if self.gateways.contains_key(&target_ip) => Some(MASTER_MAC),
                    None => None,
                };
                let Some(src) = slots[i].as_mut() else { return };
                let Some(answer_mac) = answer_mac else {
                    src.local.arp_unknown += 1;
                    return;
                };
                let mut reply = [0u8; ARP_FRAME_LEN];
                net::build_arp_reply(
                    &mut reply, src_mac, answer_mac, target_ip, sender_mac, sender_ip,
                );
                if send_bytes(&mut src.end.rx, &reply) {
                    src.local.arp_replies += 1;
                    src.local.rx_frames += 1;
                    src.local.rx_bytes += ARP_FRAME_LEN as u64;
                } else {
                    src.local.rx_full += 1;
                }
            }
            Verdict::Ipv4 { dst, frame_len } => {
                let Some(&d) = self.by_ip.get(&dst) else {
                    src.local.no_route += 1;
                    return;
                };
                let Some(dslot) = slots.get_mut(d).and_then(Option::as_mut) else {
                    if let Some(src) = slots[i].as_mut() {
                        src.local.no_route += 1;
                    }
                    return;
                };
                let verdict = deliver(dslot, ptr, &hdr, frame_len, src_mac);
                if let Some(src) = slots[i].as_mut() {
                    match verdict {
                        Delivery::Ok | Delivery::RxFull => {}
                        Delivery::NotAttached => src.local.not_attached += 1,
                        Delivery::TooBig => src.local.too_big += 1,
                    }
                }
            }
        }
    }

    /// Run until [`DpMsg::Shutdown`] (or until the control plane drops its sender).
    pub fn run(&mut self) {
        let mut last_work = Instant::now();
        loop {
            if !self.poll_control() {
                break;
            }
            if self.round() > 0 {
                last_work = Instant::now();
                continue;
            }
            if last_work.elapsed() < self.idle.spin {
                // Yield while spinning: with more busy threads than cores, the service
                // that will hand us the next frame may be queued behind us.
                std::thread::yield_now();
                continue;
            }
            if !self.sleep() {
                break;
            }
        }
        // Publish final counters.
        for s in self.slots.iter_mut().flatten() {
            s.stats.publish(&s.local);
        }
        log::debug!("data path: stopped");
    }

    /// Sleep on every doorbell until one rings (or the longest sleep passes). Returns false
    /// if a shutdown message arrived meanwhile.
    fn sleep(&mut self) -> bool {
        self.bells.clear();
        self.bells.push(Arc::as_ptr(&self.bell));
        for s in self.slots.iter().flatten() {
            self.bells.push(s.end.master_bell());
        }
        let timeout = if self.bells.len() > MAX_BELLS {
            Duration::from_millis(1)
        } else {
            self.idle.max_sleep
        };
        // SAFETY: every bell is in a mapping owned by a slot (or in our Arc), and no slot is
        // removed before `wait`/`cancel` below returns (only this thread changes slots).
        unsafe { self.sleeper.prepare(self.bells.iter().copied()) };
        let mut work = false;
        for s in self.slots.iter_mut().flatten() {
            if s.end.tx.has_work() {
                work = true;
                break;
            }
        }
        if work {
            self.sleeper.cancel();
            return true;
        }
        match self.msgs.try_recv() {
            Ok(msg) => {
                self.sleeper.cancel();
                self.handle(msg)
            }
            Err(TryRecvError::Disconnected) => {
                self.sleeper.cancel();
                false
            }
            Err(TryRecvError::Empty) => {
                self.sleeper.wait(timeout);
                true
            }
        }
    }
}

enum Delivery {
    Ok,
    NotAttached,
    TooBig,
    RxFull,
}

/// Copy an IPv4 frame (`frame_len` bytes at `src`, already classified on `hdr`) into the
/// destination pipe's RX channel, with Ethernet addresses set to the destination's MAC and
/// the sender's MAC, and the validated IPv4 header prefix rewritten from `hdr` (so a sender
/// racing on its buffer cannot change the checked source address).
fn deliver(
    dst: &mut Slot,
    src: *const u8,
    hdr: &[u8; HDR_COPY],
    frame_len: usize,
    src_mac: [u8; 6],
) -> Delivery {
    if dst.control.attached_pid() == 0 {
        return Delivery::NotAttached;
    }
    if frame_len > dst.end.rx.buf_size() {
        return Delivery::TooBig;
    }
    let Some(buf) = dst.end.rx.alloc() else {
        dst.local.rx_full += 1;
        dst.dirty = true;
        return Delivery::RxFull;
    };
    let out = dst.end.rx.buf_ptr(buf);
    let mut head = [0u8; net::IPV4_MIN_FRAME_LEN];
    head.copy_from_slice(&hdr[..net::IPV4_MIN_FRAME_LEN]);
    head[0..6].copy_from_slice(&dst.mac);
    head[6..12].copy_from_slice(&src_mac);
    // SAFETY: `src` points at a validated source buffer holding at least `frame_len` bytes
    // (frame_len <= the descriptor's length <= its buf_size, checked by classify and recv);
    // `out` is a buffer we own of buf_size >= frame_len bytes (checked above), in a
    // different buffer area, so the ranges do not overlap. frame_len >= 34 = head.len().
    unsafe {
        core::ptr::copy_nonoverlapping(src, out, frame_len);
        core::ptr::copy_nonoverlapping(head.as_ptr(), out, head.len());
    }
    if dst.end.rx.post(buf, frame_len) {
        dst.local.rx_frames += 1;
        dst.local.rx_bytes += frame_len as u64;
        dst.dirty = true;
        Delivery::Ok
    } else {
        dst.local.rx_full += 1;
        dst.dirty = true;
        Delivery::RxFull
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::{arp_request, ipv4_frame};
    use crate::net::{gateway_of, mac_for_ip};
    use docknet::abi::pipe_flags;
    use docknet::pipe::{create_pipe_file, PipeConfig, ServicePipeEnd};
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::sync::mpsc;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let base = if std::path::Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let p = base.join(format!("dn-master-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl std::ops::Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Rig {
        _dir: TempDir,
        sw: Switch,
        tx: mpsc::Sender<DpMsg>,
        dirs: Vec<PathBuf>,
        stats: Vec<Arc<PipeStats>>,
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn rig(tag: &str, ips: &[(&str, u32)]) -> Rig {
        let dir = TempDir::new(tag);
        let (tx, rx) = mpsc::channel();
        let mut sw = Switch::new(rx, Arc::new(Doorbell::new()));
        let mut dirs = Vec::new();
        let mut stats = Vec::new();
        for (slot, (a, mtu)) in ips.iter().enumerate() {
            let a = ip(a);
            let d = dir.0.join(format!("p{slot}"));
            std::fs::create_dir_all(&d).unwrap();
            let cfg = PipeConfig {
                mac: mac_for_ip(a),
                ipv4: a,
                prefix_len: 16,
                gateway: gateway_of(a, 16),
                mtu: *mtu,
                nbufs: 64,
                flags: pipe_flags::CSUM_OFFLOAD,
            };
            let end = MasterPipeEnd::new(create_pipe_file(&d, &cfg).unwrap()).unwrap();
            let st = Arc::new(PipeStats::default());
            tx.send(DpMsg::Add {
                slot,
                end: Box::new(end),
                stats: st.clone(),
            })
            .unwrap();
            dirs.push(d);
            stats.push(st);
        }
        assert!(sw.poll_control());
        assert_eq!(sw.pipes(), ips.len());
        Rig {
            _dir: dir,
            sw,
            tx,
            dirs,
            stats,
        }
    }

    fn send(s: &mut ServicePipeEnd, f: &[u8]) {
        assert!(s.tx.send_copy(f));
        s.tx.flush();
    }

    fn recv_all(s: &mut ServicePipeEnd) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = s.rx.recv() {
            let p = s.rx.frame_ptr(f);
            // SAFETY: test: validated frame of f.len bytes.
            out.push(unsafe { std::slice::from_raw_parts(p, f.len as usize) }.to_vec());
            s.rx.give_back(f.buf);
        }
        s.rx.flush();
        out
    }

    #[test]
    fn arp_replies_for_pipes_and_gateway() {
        let mut r = rig("arp", &[("10.88.0.2", 9000), ("10.88.0.3", 9000)]);
        let mut a = ServicePipeEnd::attach(&r.dirs[0]).unwrap();
        let me = ip("10.88.0.2");
        send(&mut a, &arp_request(mac_for_ip(me), me, ip("10.88.0.3")));
        send(&mut a, &arp_request(mac_for_ip(me), me, ip("10.88.0.1")));
        send(&mut a, &arp_request(mac_for_ip(me), me, ip("10.88.0.77")));
        assert_eq!(r.sw.round(), 3);
        let got = recv_all(&mut a);
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0][22..28], &mac_for_ip(ip("10.88.0.3")));
        assert_eq!(&got[0][28..32], &[10, 88, 0, 3]);
        assert_eq!(&got[0][0..6], &mac_for_ip(me));
        assert_eq!(&got[1][22..28], &MASTER_MAC);
        let s = r.stats[0].load();
        assert_eq!(
            (s.arp_replies, s.arp_unknown, s.tx_frames, s.rx_frames),
            (2, 1, 3, 2)
        );
    }

    #[test]
    fn ipv4_switching_and_drops() {
        let mut r = rig(
            "ip",
            &[
                ("10.88.0.2", 9000),
                ("10.88.0.3", 1500),
                ("10.88.0.4", 9000),
            ],
        );
        let mut a = ServicePipeEnd::attach(&r.dirs[0]).unwrap();
        let mut b = ServicePipeEnd::attach(&r.dirs[1]).unwrap();
        let (ia, ib) = (ip("10.88.0.2"), ip("10.88.0.3"));
        let f = ipv4_frame(ia, ib, 1000);
        send(&mut a, &f);
        send(&mut a, &ipv4_frame(ip("10.88.0.9"), ib, 10)); // spoofed
        send(&mut a, &ipv4_frame(ia, ip("10.99.0.1"), 10)); // no route
        send(&mut a, &ipv4_frame(ia, ip("10.88.0.4"), 10)); // not attached
        send(&mut a, &ipv4_frame(ia, ib, 3000)); // too big for b's MTU 1500
        send(&mut a, &f[..20]); // bad frame
        send(&mut a, &f[..10]); // bad frame (< 14)
        let mut v6 = f.clone();
        v6[12] = 0x86;
        v6[13] = 0xdd;
        send(&mut a, &v6);
        assert_eq!(r.sw.round(), 8);
        let got = recv_all(&mut b);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][0..6], &mac_for_ip(ib));
        assert_eq!(&got[0][6..12], &mac_for_ip(ia));
        assert_eq!(&got[0][12..], &f[12..]);
        let sa = r.stats[0].load();
        assert_eq!(sa.tx_frames, 8);
        assert_eq!(
            (
                sa.spoofed,
                sa.no_route,
                sa.not_attached,
                sa.too_big,
                sa.bad_frame,
                sa.unsupported
            ),
            (1, 1, 1, 1, 2, 1)
        );
        let sb = r.stats[1].load();
        assert_eq!((sb.rx_frames, sb.rx_bytes), (1, f.len() as u64));

        // Fill b's RX channel (64 buffers): the rest are rx_full on b.
        for _ in 0..3 {
            for _ in 0..40 {
                assert!(a.tx.send_copy(&ipv4_frame(ia, ib, 10)));
            }
            a.tx.flush();
            while r.sw.round() > 0 {}
        }
        let sb = r.stats[1].load();
        assert_eq!(sb.rx_frames, 1 + 64);
        assert_eq!(sb.rx_full, 120 - 64);

        // Removing b: frames to it are no_route now.
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        r.tx.send(DpMsg::Remove {
            slot: 1,
            done: Some(done_tx),
        })
        .unwrap();
        assert!(r.sw.poll_control());
        done_rx.recv().unwrap();
        send(&mut a, &ipv4_frame(ia, ib, 10));
        r.sw.round();
        assert_eq!(r.stats[0].load().no_route, 2);
        r.tx.send(DpMsg::Shutdown).unwrap();
        assert!(!r.sw.poll_control());
    }

    #[test]
    fn garbage_rings_are_counted_not_fatal() {
        let mut r = rig("garbage", &[("10.88.0.2", 1500)]);
        let faults = r.sw.slots[0].as_ref().unwrap().end.faults.clone();
        // Scribble over the whole TX ring area of the pipe, as a hostile service could.
        let map = docknet::shm::SharedMap::open(&r.dirs[0].join("pipe.map")).unwrap();
        let info = docknet::pipe::read_pipe_info(&map).unwrap();
        let p = map.bytes_at(info.tx.ring_off as usize, 4096).unwrap();
        // SAFETY: test: 4096 bytes inside the mapping.
        unsafe { std::ptr::write_bytes(p, 0xa5, 4096) };
        for _ in 0..10 {
            assert_eq!(r.sw.round(), 0);
        }
        assert_eq!(
            faults
                .ring_corrupt
                .load(std::sync::atomic::Ordering::Relaxed),
            10
        );
        r.tx.send(DpMsg::Shutdown).unwrap();
        r.sw.run();
    }
}

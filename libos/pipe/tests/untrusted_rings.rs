//! Property tests: whatever a peer writes into a channel's shared memory, the other side
//! never panics, never hands out a frame outside its buffer area, and counts the faults.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use docknet_pipe::abi::{
    ChannelGeometry, ChannelLayout, Desc, RingIndices, HEADER_SIZE, MAX_MTU, SMALL_POOL_MTU,
};
use docknet_pipe::channel::{ChannelFaults, ChannelReceiver, ChannelSender};
use docknet_pipe::shm::SharedMap;
use proptest::prelude::*;

/// A garbage write into the channel: (which region, offset within it, value).
#[derive(Debug, Clone)]
enum Scribble {
    RingProd(u32),
    RingCons(u32),
    RetProd(u32),
    RetCons(u32),
    RingEntry(u32, Desc),
    RetEntry(u32, Desc),
}

fn scribble() -> impl Strategy<Value = Scribble> {
    let desc = (any::<u32>(), any::<u32>()).prop_map(|(buf, len)| Desc {
        buf: buf % 600,
        len: len % 70000,
        ..Default::default()
    });
    let wild = (any::<u32>(), any::<u32>()).prop_map(|(buf, len)| Desc {
        buf,
        len,
        ..Default::default()
    });
    prop_oneof![
        any::<u32>().prop_map(Scribble::RingProd),
        any::<u32>().prop_map(Scribble::RingCons),
        any::<u32>().prop_map(Scribble::RetProd),
        any::<u32>().prop_map(Scribble::RetCons),
        (any::<u32>(), desc.clone()).prop_map(|(i, d)| Scribble::RingEntry(i, d)),
        (any::<u32>(), wild).prop_map(|(i, d)| Scribble::RingEntry(i, d)),
        (any::<u32>(), desc).prop_map(|(i, d)| Scribble::RetEntry(i, d)),
    ]
}

/// One channel of `nbufs` 1500-byte buffers in a fresh mapping (its file already
/// unlinked), with both ends and their fault counters. The ends point into `map`: when
/// destructuring, bind it first (a binding, not `..` or `_`, which would unmap it at
/// once; first, so it is dropped after them).
struct Channel {
    map: SharedMap,
    layout: ChannelLayout,
    faults: Arc<ChannelFaults>,
    tx: ChannelSender,
    rx: ChannelReceiver,
}

fn channel(tag: &str, nbufs: u32) -> Channel {
    channel_of(tag, ChannelGeometry::for_mtu(1500, nbufs))
}

/// A channel of two pools: 64 small buffers (frames up to 9000 bytes) and 4 large ones
/// (65000).
fn two_pool_channel(tag: &str) -> Channel {
    channel_of(tag, ChannelGeometry::two_pools(MAX_MTU, 64, 4))
}

fn channel_of(tag: &str, geo: ChannelGeometry) -> Channel {
    let (layout, end) = geo.layout_at(HEADER_SIZE);
    let path = std::env::temp_dir().join(format!(
        "dn-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&path);
    let map = SharedMap::create(&path, end).unwrap();
    std::fs::remove_file(&path).unwrap();
    let faults = Arc::new(ChannelFaults::default());
    // SAFETY (test): `map` is moved into the same `Channel` as both ends and dropped
    // after them (moving a `SharedMap` does not move its mapping); no bells.
    let tx =
        unsafe { ChannelSender::new(&map, &layout, std::ptr::null(), faults.clone()) }.unwrap();
    // SAFETY (test): as above.
    let rx =
        unsafe { ChannelReceiver::new(&map, &layout, std::ptr::null(), faults.clone()) }.unwrap();
    Channel {
        map,
        layout,
        faults,
        tx,
        rx,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn garbage_never_escapes_the_buffer_area(
        ops in proptest::collection::vec((scribble(), 0u8..5), 1..200),
        two_pools in any::<bool>(),
    ) {
        let Channel { map, layout, mut tx, mut rx, .. } = if two_pools {
            two_pool_channel("prop2")
        } else {
            channel("prop", 64)
        };
        let max_frame = layout.max_frame() as usize;
        let ring = map.ptr_at::<RingIndices>(layout.ring_off as usize).unwrap();
        let ret = map.ptr_at::<RingIndices>(layout.ret_off as usize).unwrap();
        let entry = |r: *mut RingIndices, i: u32| -> *mut Desc {
            // SAFETY (test): entries follow the indices; i masked to the ring size.
            unsafe { (r as *mut u8).add(128).cast::<Desc>().add((i % layout.ring_size) as usize) }
        };
        let area = (layout.buf_off as usize, (layout.buf_off + layout.buf_area_bytes()) as usize);
        for (op, action) in ops {
            // SAFETY (test): all pointers are inside the mapping; atomics for indices.
            unsafe {
                match op {
                    Scribble::RingProd(v) => (*ring).prod.store(v, Relaxed),
                    Scribble::RingCons(v) => (*ring).cons.store(v, Relaxed),
                    Scribble::RetProd(v) => (*ret).prod.store(v, Relaxed),
                    Scribble::RetCons(v) => (*ret).cons.store(v, Relaxed),
                    Scribble::RingEntry(i, d) => entry(ring, i).write_volatile(d),
                    Scribble::RetEntry(i, d) => entry(ret, i).write_volatile(d),
                }
            }
            match action {
                0 => { tx.send_copy(&[0xab; 100]); tx.flush(); }
                1 => {
                    // A look ahead reads no more than a buffer, whatever the ring says,
                    // and what it sees first is what `recv` then takes (when valid).
                    let mut ahead = vec![0u8; max_frame + 100];
                    for k in 1..80 {
                        prop_assert!(rx.peek_head(k, &mut ahead) <= max_frame);
                    }
                    let first = rx.peek_head(0, &mut ahead);
                    prop_assert!(first <= max_frame);
                    let mut taken = vec![0u8; max_frame];
                    let mut checked_first = first == 0;
                    while let Some(f) = rx.recv() {
                        if !checked_first {
                            let n = rx.copy_out(f, 0, &mut taken);
                            prop_assert_eq!(n, first);
                            prop_assert_eq!(&taken[..n], &ahead[..n]);
                            checked_first = true;
                        }
                        let start = rx.frame_ptr(f) as usize - map.ptr_at::<u8>(0).unwrap() as usize;
                        prop_assert!(start >= area.0 && start + f.len as usize <= area.1);
                        // At the start of the buffer its descriptor names, and inside it.
                        let (off, size) = layout.buffer(f.buf).expect("a buffer of the channel");
                        prop_assert_eq!(start as u64, layout.buf_off + off, "{:?}", f);
                        prop_assert!(f.len <= size, "{:?}", f);
                        rx.give_back(f.buf);
                    }
                    rx.flush();
                }
                2 => tx.reclaim(),
                3 => { let _ = tx.alloc(100).map(|b| tx.cancel(b)); }
                _ => { tx.send_copy(&vec![0xcd; 20_000]); tx.flush(); }
            }
        }
    }
}

#[test]
fn double_return_is_refused_and_counted() {
    let Channel {
        map: _map,
        faults,
        mut tx,
        mut rx,
        ..
    } = channel("dbl", 8);
    assert!(tx.send_copy(b"hello, frame"));
    tx.flush();
    let f = rx.recv().unwrap();
    rx.give_back(f.buf);
    rx.give_back(f.buf); // a lying receiver returns it twice
    rx.give_back(7); // and one it never got
    rx.flush();
    tx.reclaim();
    assert_eq!(faults.bad_return.load(Relaxed), 2);
    // Exactly 8 buffers can be allocated: no duplicate entered the free list.
    let mut n = 0;
    while tx.alloc(100).is_some() {
        n += 1;
    }
    assert_eq!(n, 8);
}

#[test]
fn two_pools_give_each_frame_a_buffer_of_its_size() {
    let Channel {
        map: _map,
        layout,
        faults,
        mut tx,
        mut rx,
    } = two_pool_channel("pools");
    // A 9000-byte packet's frame fits a small buffer and takes one; a frame larger
    // than a small buffer takes a large one.
    let s = tx.alloc(SMALL_POOL_MTU as usize + 14).unwrap();
    assert!(s < layout.nbufs);
    let l = tx.alloc(layout.buf_size as usize + 1).unwrap();
    assert!(l >= layout.nbufs && l < layout.nbufs + layout.nlarge);
    assert_eq!(tx.size_of(l), layout.large_size as usize);
    assert!(
        tx.alloc(layout.large_size as usize + 1).is_none(),
        "no buffer holds it"
    );
    tx.cancel(s);
    tx.cancel(l);
    // The large pool runs dry on its own: the small one is untouched.
    let large: Vec<u32> = (0..4).map(|_| tx.alloc(30_000).unwrap()).collect();
    assert!(!tx.has_free_for(30_000));
    assert!(tx.alloc(30_000).is_none());
    assert!(tx.has_free_for(100) && tx.has_free(64));
    for (i, &b) in large.iter().enumerate() {
        let frame = vec![i as u8 + 1; 30_000 + i];
        assert!(tx.write_at(b, 0, &frame));
        assert!(tx.post(b, frame.len()));
    }
    tx.flush();
    // The receiver sees them whole, in their large buffers, and returns them.
    for i in 0..4 {
        let f = rx.recv().unwrap();
        assert_eq!(f.len as usize, 30_000 + i);
        let mut out = vec![0; f.len as usize];
        assert_eq!(rx.copy_out(f, 0, &mut out), out.len());
        assert!(out.iter().all(|&b| b == i as u8 + 1));
        rx.give_back(f.buf);
    }
    rx.flush();
    assert!(
        tx.has_free_for(30_000),
        "returned large buffers are free again"
    );
    let mut n = 0;
    while tx.alloc(30_000).is_some() {
        n += 1;
    }
    assert_eq!(n, 4, "each large buffer back once");
    assert_eq!(faults.bad_return.load(Relaxed), 0);
}

#[test]
fn each_pool_is_nearly_full_on_its_own() {
    let Channel {
        map: _map, mut tx, ..
    } = two_pool_channel("share");
    // Large buffers all lent: large frames find the pool nearly full, small ones do not.
    let large: Vec<u32> = (0..4).map(|_| tx.alloc(30_000).unwrap()).collect();
    assert!(tx.is_large_frame(30_000) && !tx.is_large_frame(100));
    assert!(!tx.has_share_free(30_000, 4));
    assert!(tx.has_share_free(100, 4));
    for b in large {
        tx.cancel(b);
    }
    // 49 of 64 small buffers lent: fewer than a quarter free for small frames only.
    let small: Vec<u32> = (0..49).map(|_| tx.alloc(100).unwrap()).collect();
    assert!(!tx.has_share_free(100, 4));
    assert!(tx.has_share_free(30_000, 4));
    tx.cancel(small[0]);
    assert!(tx.has_share_free(100, 4), "16 of 64 free is a quarter");
    assert!(!tx.has_share_free(70_000, 4), "no pool holds it");
}

#[test]
fn a_large_frame_in_a_small_buffer_is_refused() {
    let Channel {
        map,
        layout,
        faults,
        mut tx,
        mut rx,
    } = two_pool_channel("forged");
    // The sender (a peer we do not trust) names a small buffer with a large buffer's
    // length: refused, counted, and the buffer goes back.
    let b = tx.alloc(100).unwrap();
    assert!(tx.post(b, 100));
    tx.flush();
    let ring = map.ptr_at::<RingIndices>(layout.ring_off as usize).unwrap();
    // SAFETY (test): the first entry follows the indices inside the mapping.
    unsafe {
        (ring as *mut u8)
            .add(128)
            .cast::<Desc>()
            .write_volatile(Desc {
                buf: b,
                len: layout.buf_size + 1,
                ..Default::default()
            })
    };
    assert!(rx.recv().is_none());
    assert_eq!(faults.bad_desc.load(Relaxed), 1);
    rx.flush();
    tx.reclaim();
    assert!(tx.alloc(100).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    /// The master's copying API never reaches outside a buffer, whatever indices, offsets
    /// and lengths it is given (a forged `RxFrame` included): it copies what lies inside
    /// and reports how much, or refuses.
    #[test]
    fn copies_stay_inside_their_buffer(
        buf in 0u32..80,
        len in 0u32..5000,
        offset in 0usize..5000,
        n in 0usize..5000,
    ) {
        let Channel { map: _map, layout, mut tx, rx, .. } = channel("copy", 64);
        let (nbufs, size) = (layout.nbufs, layout.buf_size as usize);
        let src = vec![7u8; n];
        let fits = buf < nbufs && offset + n <= size;
        prop_assert_eq!(tx.write_at(buf, offset, &src), fits);
        let mut out = vec![0u8; n];
        let got = tx.read_back(buf, offset, &mut out);
        if buf < nbufs && offset <= size {
            prop_assert_eq!(got, n.min(size - offset));
        } else {
            prop_assert_eq!(got, 0);
        }
        let f = docknet_pipe::channel::RxFrame { buf, len };
        let got = rx.copy_out(f, offset, &mut out);
        let want = n.min((len as usize).saturating_sub(offset));
        if buf < nbufs && offset + want <= size {
            prop_assert_eq!(got, want);
        } else {
            prop_assert_eq!(got, 0);
        }
        let ok = docknet_pipe::channel::copy_frame(&rx, f, n, &mut tx, buf % nbufs);
        prop_assert_eq!(ok, buf < nbufs && n <= len as usize && n <= size);
    }
}

#[test]
fn a_sender_whose_receiver_keeps_up_cycles_through_few_buffers() {
    let Channel {
        map: _map,
        mut tx,
        mut rx,
        ..
    } = channel("hot", 1024);
    let mut used = std::collections::BTreeSet::new();
    for _ in 0..5000 {
        assert!(tx.send_copy(&[7; 1000]));
        tx.flush();
        let f = rx.recv().expect("posted");
        used.insert(f.buf);
        rx.give_back(f.buf);
        rx.flush();
    }
    // Returned buffers come back into use while still warm: a few hundred kilobytes of
    // them, not all 1024 (which a sender reclaiming only when out of buffers walks).
    assert!(used.len() <= 256, "{} distinct buffers used", used.len());
}

#[test]
fn taking_the_next_buffer_ahead_changes_none_of_its_bytes() {
    // `alloc` starts taking the buffer on top of the free stack for writing
    // (`prefetchw`, where the processor has it): a hint that must leave every byte as it
    // was, in every buffer of both pools.
    let Channel {
        map: _map, mut tx, ..
    } = two_pool_channel("ahead");
    let pattern = |b: u32, size: usize| -> Vec<u8> {
        (0..size).map(|i| (b as usize * 31 + i * 7) as u8).collect()
    };
    let mut all = Vec::new();
    for len in [100, 60_000] {
        while let Some(b) = tx.alloc(len) {
            assert!(tx.write_at(b, 0, &pattern(b, tx.size_of(b))));
            all.push(b);
        }
    }
    assert_eq!(all.len(), 64 + 4, "every buffer of both pools");
    for &b in all.iter().rev() {
        tx.cancel(b);
    }
    // Every buffer again, each alloc taking the next one ahead, for frames of the
    // buffer's whole size.
    for size in [tx.size_of(0), tx.size_of(64)] {
        while let Some(b) = tx.alloc(size) {
            let mut back = vec![0; tx.size_of(b)];
            assert_eq!(tx.read_back(b, 0, &mut back), back.len());
            assert!(back == pattern(b, back.len()), "buffer {b} changed");
        }
    }
}

#[test]
fn taking_buffers_ahead_in_a_truncated_file_raises_no_fault() {
    // A tenant may shrink its pipe file under the master, whose senders take buffers
    // ahead too: a prefetch into pages past the end of the file must not raise SIGBUS
    // (which the guard would turn into a broken mapping) or fault at all.
    let Channel {
        map,
        layout,
        mut tx,
        faults,
        ..
    } = two_pool_channel("ahead-trunc");
    map.file().set_len(HEADER_SIZE as u64).unwrap();
    // Every buffer of both pools, each alloc taking the next one ahead; no more (an
    // alloc that finds its stack empty reads the return ring, in the truncated part).
    let small = layout.buf_size as usize;
    for (len, count) in [(small, 64), (small + 1, 4)] {
        for i in 0..count {
            assert!(tx.alloc(len).is_some(), "buffer {i} of {count}");
        }
    }
    assert!(!map.is_broken(), "no access past the end of the file");
    assert_eq!(faults.ring_corrupt.load(Relaxed), 0);
}

#[test]
fn peek_head_looks_ahead_without_taking() {
    let Channel {
        map: _map,
        mut tx,
        mut rx,
        ..
    } = channel("peek", 8);
    let mut head = [0u8; 4];
    assert_eq!(rx.peek_head(0, &mut head), 0);
    assert!(tx.send_copy(b"one frame"));
    assert!(tx.send_copy(b"two"));
    tx.flush();
    assert_eq!(rx.peek_head(0, &mut head), 4);
    assert_eq!(&head, b"one ");
    let mut long = [0u8; 16];
    assert_eq!(
        rx.peek_head(1, &mut long),
        3,
        "no more than the frame holds"
    );
    assert_eq!(&long[..3], b"two");
    assert_eq!(rx.peek_head(2, &mut head), 0);
    // Peeking took nothing.
    assert_eq!(rx.recv().unwrap().len, 9);
    assert_eq!(rx.peek_head(0, &mut head), 3);
    assert_eq!(rx.recv().unwrap().len, 3);
    assert!(rx.recv().is_none());
}

//! Property tests: whatever a peer writes into a channel's shared memory, the other side
//! never panics, never hands out a frame outside its buffer area, and counts the faults.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use docknet_pipe::abi::{ChannelGeometry, ChannelLayout, Desc, RingIndices, HEADER_SIZE};
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
        len: len % 20000,
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
    let geo = ChannelGeometry::for_mtu(1500, nbufs);
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
    fn garbage_never_escapes_the_buffer_area(ops in proptest::collection::vec((scribble(), 0u8..4), 1..200)) {
        let Channel { map, layout, mut tx, mut rx, .. } = channel("prop", 64);
        let ring = map.ptr_at::<RingIndices>(layout.ring_off as usize).unwrap();
        let ret = map.ptr_at::<RingIndices>(layout.ret_off as usize).unwrap();
        let entry = |r: *mut RingIndices, i: u32| -> *mut Desc {
            // SAFETY (test): entries follow the indices; i masked to the ring size.
            unsafe { (r as *mut u8).add(128).cast::<Desc>().add((i % layout.ring_size) as usize) }
        };
        let area = (layout.buf_off as usize, layout.buf_off as usize + (layout.nbufs * layout.buf_size) as usize);
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
                    let mut ahead = vec![0u8; layout.buf_size as usize + 100];
                    for k in 1..80 {
                        prop_assert!(rx.peek_head(k, &mut ahead) <= layout.buf_size as usize);
                    }
                    let first = rx.peek_head(0, &mut ahead);
                    prop_assert!(first <= layout.buf_size as usize);
                    let mut taken = vec![0u8; layout.buf_size as usize];
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
                        prop_assert!(f.len as usize <= layout.buf_size as usize);
                        rx.give_back(f.buf);
                    }
                    rx.flush();
                }
                2 => tx.reclaim(),
                _ => { let _ = tx.alloc().map(|b| tx.cancel(b)); }
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
    while tx.alloc().is_some() {
        n += 1;
    }
    assert_eq!(n, 8);
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

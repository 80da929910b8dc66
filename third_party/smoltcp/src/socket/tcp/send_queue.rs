//! DockNet patch (PATCHES.md (20)): a TCP send queue whose octets are either copied into
//! the socket's ring buffer or borrowed from `'static` memory.
//!
//! The queue is one stream of octets, in the order they were queued: runs of ring octets
//! and static slices. Each static slice (a [`Piece`]) records how many ring octets come
//! before it (after the previous piece); ring octets after the last piece are the rest of
//! the ring. A segment is cut from one run only ([`SendQueue::get_allocated`] returns a
//! contiguous slice, as the ring does at its wrap), so a server that sends a whole
//! response as one static slice sends it in full-size segments, copied once, from memory
//! every connection shares, into the outgoing packet.
//!
//! Static octets count toward the buffer's capacity, as copied ones do, so the window the
//! application sees is the same either way. At most [`MAX_PIECES`] static slices are
//! queued at a time (no allocation); [`SendQueue::enqueue_static`] queues nothing when
//! they are all in use, and the caller copies instead. A slice that continues the last
//! one queued (the rest of a large body, handed over as room frees) extends it, so a
//! body of any size takes one piece and leaves in full-size segments. With no static
//! slice queued every call is the ring's own (except that a closure of
//! `enqueue_many_with` claiming more octets than it was given is clamped, not a panic).

use crate::storage::RingBuffer;

/// Static slices queued at a time.
pub(crate) const MAX_PIECES: usize = 4;

/// A queued static slice: `whole[start..end]`.
#[derive(Clone, Copy)]
struct Piece {
    /// Ring octets queued before this slice (after the previous piece).
    ring_before: usize,
    /// The slice the caller passed (its tail beyond `end` was not queued, for want of
    /// room; a later call that passes that tail extends this piece).
    whole: &'static [u8],
    /// The first octet not yet acknowledged.
    start: usize,
    /// The end of what is queued.
    end: usize,
}

impl Piece {
    /// The queued octets not yet acknowledged.
    fn data(&self) -> &'static [u8] {
        &self.whole[self.start..self.end]
    }
}

impl core::fmt::Debug for Piece {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Piece({} ring octets, then {} static)", self.ring_before, self.end - self.start)
    }
}

const NO_PIECE: Piece = Piece {
    ring_before: 0,
    whole: &[],
    start: 0,
    end: 0,
};

#[derive(Debug)]
pub(crate) struct SendQueue<'a> {
    ring: RingBuffer<'a, u8>,
    /// `pieces[..count]`, oldest first; none is empty.
    pieces: [Piece; MAX_PIECES],
    count: usize,
    /// Sum of `data().len()` over the pieces.
    static_len: usize,
    /// Sum of `ring_before` over the pieces.
    ring_before_pieces: usize,
}

impl<'a> SendQueue<'a> {
    pub(crate) fn new(ring: RingBuffer<'a, u8>) -> Self {
        SendQueue {
            ring,
            pieces: [NO_PIECE; MAX_PIECES],
            count: 0,
            static_len: 0,
            ring_before_pieces: 0,
        }
    }

    /// The ring, for another socket (static slices are forgotten).
    pub(crate) fn into_ring(self) -> RingBuffer<'a, u8> {
        self.ring
    }

    pub(crate) fn clear(&mut self) {
        self.ring.clear();
        self.pieces = [NO_PIECE; MAX_PIECES];
        self.count = 0;
        self.static_len = 0;
        self.ring_before_pieces = 0;
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Octets queued, copied and static.
    pub(crate) fn len(&self) -> usize {
        self.ring.len() + self.static_len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.capacity()
    }

    /// Octets that may still be queued.
    fn room(&self) -> usize {
        self.capacity().saturating_sub(self.len())
    }

    /// As `RingBuffer::enqueue_many_with`, within the room left by static octets.
    pub(crate) fn enqueue_many_with<'b, R, F>(&'b mut self, f: F) -> (usize, R)
    where
        F: FnOnce(&'b mut [u8]) -> (usize, R),
    {
        let room = self.room();
        self.ring.enqueue_many_with(|free| {
            let n = free.len().min(room);
            let (size, result) = f(free.split_at_mut(n).0);
            (size.min(n), result)
        })
    }

    /// As `RingBuffer::enqueue_slice`, within the room left by static octets.
    pub(crate) fn enqueue_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.ring.enqueue_slice(&data[..n])
    }

    /// Queue (a prefix of) `data` without copying it: as many octets as there is room
    /// for, or none if `MAX_PIECES` static slices are queued already and `data` does not
    /// continue the last of them.
    pub(crate) fn enqueue_static(&mut self, data: &'static [u8]) -> usize {
        let n = data.len().min(self.room());
        if n == 0 {
            return 0;
        }
        let ring_before = self.ring.len() - self.ring_before_pieces;
        if ring_before == 0 && self.count > 0 {
            let last = &mut self.pieces[self.count - 1];
            let rest = &last.whole[last.end..];
            if !rest.is_empty() && data.as_ptr() == rest.as_ptr() && n <= rest.len() {
                last.end += n;
                self.static_len += n;
                return n;
            }
        }
        if self.count == MAX_PIECES {
            return 0;
        }
        self.pieces[self.count] = Piece {
            ring_before,
            whole: data,
            start: 0,
            end: n,
        };
        self.count += 1;
        self.static_len += n;
        self.ring_before_pieces += ring_before;
        n
    }

    /// At most `size` queued octets from `offset` on, contiguous (fewer at the end of a
    /// run, or at the ring's wrap); empty past the end.
    pub(crate) fn get_allocated(&self, offset: usize, size: usize) -> &[u8] {
        let (mut pos, mut ring_pos) = (0, 0);
        for p in &self.pieces[..self.count] {
            if offset < pos + p.ring_before {
                let skip = offset - pos;
                return self
                    .ring
                    .get_allocated(ring_pos + skip, size.min(p.ring_before - skip));
            }
            pos += p.ring_before;
            ring_pos += p.ring_before;
            let data = p.data();
            if offset < pos + data.len() {
                let rest = &data[offset - pos..];
                return &rest[..size.min(rest.len())];
            }
            pos += data.len();
        }
        self.ring.get_allocated(ring_pos + (offset - pos), size)
    }

    /// Drop the first `count` octets (acknowledged).
    ///
    /// # Panics
    /// If fewer are queued, as `RingBuffer::dequeue_allocated`.
    pub(crate) fn dequeue_allocated(&mut self, count: usize) {
        assert!(count <= self.len());
        let mut left = count;
        while left > 0 && self.count > 0 {
            let p = &mut self.pieces[0];
            let from_ring = left.min(p.ring_before);
            self.ring.dequeue_allocated(from_ring);
            p.ring_before -= from_ring;
            self.ring_before_pieces -= from_ring;
            left -= from_ring;
            let from_static = left.min(p.end - p.start);
            p.start += from_static;
            self.static_len -= from_static;
            left -= from_static;
            if p.ring_before == 0 && p.start == p.end {
                self.pieces.copy_within(1..self.count, 0);
                self.count -= 1;
                self.pieces[self.count] = NO_PIECE;
            }
        }
        self.ring.dequeue_allocated(left);
    }

    #[cfg(test)]
    pub(crate) fn dequeue_many(&mut self, size: usize) -> &mut [u8] {
        assert_eq!(self.count, 0, "test helper for copied octets only");
        self.ring.dequeue_many(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn queue(capacity: usize) -> SendQueue<'static> {
        SendQueue::new(RingBuffer::new(vec![0u8; capacity]))
    }

    /// Everything queued from `offset` on, read the way `dispatch` reads it.
    fn read_all(q: &SendQueue, mut offset: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let s = q.get_allocated(offset, 5);
            if s.is_empty() {
                return out;
            }
            out.extend_from_slice(s);
            offset += s.len();
        }
    }

    #[test]
    fn copied_and_static_octets_form_one_stream() {
        static A: &[u8] = b"static-one";
        static B: &[u8] = b"STATIC-TWO";
        let mut q = queue(64);
        assert_eq!(q.enqueue_slice(b"head1:"), 6);
        assert_eq!(q.enqueue_static(A), A.len());
        assert_eq!(q.enqueue_static(B), B.len());
        assert_eq!(q.enqueue_slice(b"|tail"), 5);
        let want = b"head1:static-oneSTATIC-TWO|tail".to_vec();
        assert_eq!(q.len(), want.len());
        assert_eq!(read_all(&q, 0), want);
        for ack in [1, 5, 3, 7, 2, 9, 4] {
            let done = want.len() - q.len();
            q.dequeue_allocated(ack.min(q.len()));
            let done = done + ack.min(want.len() - done);
            assert_eq!(read_all(&q, 0), want[done..], "after {done}");
        }
        assert!(q.is_empty());
        assert_eq!(q.count, 0);
        assert_eq!((q.static_len, q.ring_before_pieces), (0, 0));
    }

    #[test]
    fn static_octets_take_room_and_pieces_are_bounded() {
        static DATA: &[u8] = &[7u8; 40];
        let mut q = queue(64);
        assert_eq!(q.enqueue_static(DATA), 40);
        assert_eq!(q.enqueue_slice(&[1u8; 40]), 24, "static octets take room");
        assert!(q.is_full());
        assert_eq!(q.enqueue_static(DATA), 0);
        let (n, ()) = q.enqueue_many_with(|free| (free.len(), ()));
        assert_eq!(n, 0, "the ring's own free space is not room");
        q.dequeue_allocated(64);
        for _ in 0..MAX_PIECES {
            assert_eq!(q.enqueue_static(&DATA[..1]), 1);
        }
        assert_eq!(q.enqueue_static(DATA), 0, "pieces are all in use");
        assert_eq!(q.enqueue_slice(b"ab"), 2, "copying still works");
        assert_eq!(read_all(&q, 0), [7, 7, 7, 7, b'a', b'b']);
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.enqueue_static(DATA), 40);
    }

    #[test]
    fn the_rest_of_a_slice_extends_its_piece() {
        static BODY: [u8; 100] = {
            let mut b = [0u8; 100];
            let mut i = 0;
            while i < 100 {
                b[i] = i as u8;
                i += 1;
            }
            b
        };
        let mut q = queue(30);
        let mut sent = 0;
        let mut acked = 0;
        let mut out = Vec::new();
        while acked < BODY.len() {
            sent += q.enqueue_static(&BODY[sent..]);
            assert_eq!(q.count, 1, "one piece for the whole body");
            // The peer acknowledges what it got, a segment of up to 25 octets at a time.
            let seg = q.get_allocated(0, 25);
            out.extend_from_slice(seg);
            let n = seg.len();
            q.dequeue_allocated(n);
            acked += n;
        }
        assert_eq!(out, BODY);
        assert!(q.is_empty());
        // Not a continuation: another piece (a different slice, or ring octets between).
        static OTHER: &[u8] = b"other";
        assert_eq!(q.enqueue_static(&BODY[..10]), 10);
        assert_eq!(q.enqueue_static(OTHER), 5);
        assert_eq!(q.enqueue_static(&BODY[10..20]), 10, "not after the last piece");
        assert_eq!(q.count, 3);
        q.clear();
        assert_eq!(q.enqueue_static(&BODY), 30, "room for 30");
        q.dequeue_allocated(20);
        assert_eq!(q.enqueue_slice(b"x"), 1);
        assert_eq!(q.enqueue_static(&BODY[30..]), 19);
        assert_eq!(q.count, 2, "ring octets between: a new piece");
        let mut all = BODY[20..30].to_vec();
        all.push(b'x');
        all.extend_from_slice(&BODY[30..49]);
        assert_eq!(read_all(&q, 0), all);
    }

    #[test]
    fn a_prefix_is_queued_when_room_is_short() {
        static DATA: &[u8] = b"0123456789";
        let mut q = queue(8);
        assert_eq!(q.enqueue_slice(b"xyz"), 3);
        assert_eq!(q.enqueue_static(DATA), 5);
        assert_eq!(read_all(&q, 0), b"xyz01234");
        assert_eq!(q.get_allocated(3, 100), b"01234", "a slice ends with its run");
        assert_eq!(q.get_allocated(1, 100), b"yz", "and so does a ring run");
        assert!(q.get_allocated(8, 100).is_empty());
        assert!(q.get_allocated(50, 100).is_empty());
    }

    #[test]
    fn matches_a_plain_byte_queue() {
        // Random operations against a model: the queued stream and its length.
        static POOL: [u8; 256] = {
            let mut p = [0u8; 256];
            let mut i = 0;
            while i < 256 {
                p[i] = i as u8;
                i += 1;
            }
            p
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut q = queue(100);
        let mut model: Vec<u8> = Vec::new();
        // The rest of the last static slice that did not fit.
        let mut rest: &'static [u8] = &[];
        for _ in 0..20_000 {
            match rand(5) {
                0 => {
                    let (a, n) = (rand(256), rand(40));
                    let data = &POOL[a..(a + n).min(256)];
                    let got = q.enqueue_static(data);
                    model.extend_from_slice(&data[..got]);
                    rest = &data[got..];
                }
                4 => {
                    let got = q.enqueue_static(rest);
                    model.extend_from_slice(&rest[..got]);
                    rest = &rest[got..];
                }
                1 => {
                    let data: Vec<u8> = (0..rand(40)).map(|_| rand(256) as u8).collect();
                    let got = q.enqueue_slice(&data);
                    model.extend_from_slice(&data[..got]);
                }
                2 => {
                    let n = rand(model.len() + 1);
                    q.dequeue_allocated(n);
                    model.drain(..n);
                }
                _ => {
                    let (off, size) = (rand(model.len() + 2), rand(60));
                    let got = q.get_allocated(off, size);
                    let want = &model[off.min(model.len())..(off + size).min(model.len())];
                    assert!(want.starts_with(got), "a prefix of what is queued there");
                    assert!(!got.is_empty() || want.is_empty() || size == 0);
                }
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(read_all(&q, 0), model);
        }
    }
}

//! Recycled TCP socket buffers.
//!
//! A socket's receive and send buffers are large (256 KiB each by default) and fresh
//! memory is mapped lazily: the first pass of a connection's data through them takes a
//! page fault per 4 KiB, which made a fresh connection's first megabyte several times
//! slower than the next (and a static musl binary gives every freed buffer back to the
//! kernel, so each connection started cold). The pool hands out buffers whose pages are
//! already mapped: a few written at start-up, and those of closed sockets, kept for the
//! next one.

use smoltcp::socket::tcp;
use smoltcp::storage::RingBuffer;

/// Spare receive/send buffer pairs for new TCP sockets.
pub struct SocketBufferPool {
    rx_size: usize,
    tx_size: usize,
    /// Spare pairs, at most `keep`.
    spare: Vec<(Vec<u8>, Vec<u8>)>,
    keep: usize,
}

impl SocketBufferPool {
    /// A pool of buffers of `rx_size` and `tx_size` bytes keeping up to `keep` spare
    /// pairs, all `keep` made (and their pages mapped) now.
    pub fn new(rx_size: usize, tx_size: usize, keep: usize) -> Self {
        let mut pool = SocketBufferPool {
            rx_size,
            tx_size,
            spare: Vec::with_capacity(keep),
            keep,
        };
        for _ in 0..keep {
            pool.spare.push((written(rx_size), written(tx_size)));
        }
        pool
    }

    /// Buffers for a new socket: spare ones if any, else new ones (mapped as used).
    pub fn take(&mut self) -> (tcp::SocketBuffer<'static>, tcp::SocketBuffer<'static>) {
        let (rx, tx) = self
            .spare
            .pop()
            .unwrap_or_else(|| (vec![0; self.rx_size], vec![0; self.tx_size]));
        (RingBuffer::new(rx), RingBuffer::new(tx))
    }

    /// Keep a freed socket's buffers for the next socket, if there is room and they are
    /// this pool's size; otherwise they are freed.
    pub fn recycle(&mut self, socket: tcp::Socket<'static>) {
        if self.spare.len() >= self.keep {
            return;
        }
        let (rx, tx) = socket.into_buffers();
        let owned = |b: tcp::SocketBuffer<'static>| match b.into_storage() {
            managed::ManagedSlice::Owned(v) => Some(v),
            managed::ManagedSlice::Borrowed(_) => None,
        };
        if let (Some(rx), Some(tx)) = (owned(rx), owned(tx)) {
            if rx.len() == self.rx_size && tx.len() == self.tx_size {
                self.spare.push((rx, tx));
            }
        }
    }

    /// Spare pairs held now.
    pub fn spare(&self) -> usize {
        self.spare.len()
    }
}

/// `size` bytes whose pages are mapped: written with a non-zero byte, since zeroed
/// memory may come from the allocator as lazily mapped zero pages.
fn written(size: usize) -> Vec<u8> {
    vec![0xa5; size]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(pool: &mut SocketBufferPool) -> tcp::Socket<'static> {
        let (rx, tx) = pool.take();
        tcp::Socket::new(rx, tx)
    }

    #[test]
    fn spares_made_at_start_then_recycled_up_to_keep() {
        let mut pool = SocketBufferPool::new(4096, 8192, 2);
        assert_eq!(pool.spare(), 2);
        let a = socket(&mut pool);
        let b = socket(&mut pool);
        let c = socket(&mut pool); // beyond the spares: fresh buffers
        assert_eq!(pool.spare(), 0);
        assert_eq!(c.recv_capacity(), 4096);
        assert_eq!(c.send_capacity(), 8192);
        pool.recycle(a);
        pool.recycle(b);
        pool.recycle(c); // no room: freed
        assert_eq!(pool.spare(), 2);
    }

    #[test]
    fn recycled_buffers_start_empty() {
        let mut pool = SocketBufferPool::new(4096, 4096, 1);
        let s = socket(&mut pool);
        pool.recycle(s);
        assert_eq!(pool.spare(), 1);
        let s = socket(&mut pool);
        assert_eq!(s.recv_capacity(), 4096);
        assert_eq!(s.recv_queue(), 0);
        assert_eq!(s.send_queue(), 0);
    }

    #[test]
    fn buffers_of_another_size_are_not_kept() {
        let mut pool = SocketBufferPool::new(4096, 4096, 1);
        let _ = pool.take();
        let odd = tcp::Socket::new(RingBuffer::new(vec![0; 100]), RingBuffer::new(vec![0; 100]));
        pool.recycle(odd);
        assert_eq!(pool.spare(), 0);
    }
}

//! Packet capture of one pipe (`docknetctl capture`): tcpdump cannot see kernel-bypass
//! traffic, so the data path copies what a pipe sends and receives to a pcap stream.
//!
//! The data path holds a [`CaptureTap`]: a pool of buffers made once, handed back and forth
//! with the connection thread over two bounded channels, so capturing allocates nothing per
//! frame. When the reader falls behind, frames are skipped and counted, never queued
//! without bound.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest frame kept whole (longer ones are truncated, with their original length noted).
pub const SNAPLEN: usize = 65535;
/// Buffers in flight between the data path and the writer.
const POOL: usize = 256;

/// One captured frame.
pub struct Captured {
    pub buf: Vec<u8>,
    pub len: usize,
    pub orig_len: usize,
    pub ts: Duration,
}

/// The data path's end.
pub struct CaptureTap {
    /// Which capture session this is (so stopping one never stops another).
    pub id: u64,
    free: Receiver<Vec<u8>>,
    full: SyncSender<Captured>,
    /// Frames skipped because the writer was behind.
    pub skipped: u64,
}

/// The writer's end.
pub struct CaptureReader {
    free: SyncSender<Vec<u8>>,
    full: Receiver<Captured>,
}

/// A connected tap and reader with a pool of buffers.
pub fn pair(id: u64) -> (CaptureTap, CaptureReader) {
    let (free_tx, free_rx) = sync_channel(POOL);
    let (full_tx, full_rx) = sync_channel(POOL);
    for _ in 0..POOL {
        let _ = free_tx.try_send(vec![0; SNAPLEN]);
    }
    (
        CaptureTap {
            id,
            free: free_rx,
            full: full_tx,
            skipped: 0,
        },
        CaptureReader {
            free: free_tx,
            full: full_rx,
        },
    )
}

impl CaptureTap {
    /// Record a frame of `len` bytes that `fill` copies into the buffer it is given
    /// (`min(len, SNAPLEN)` bytes; it returns how many it wrote). The frame may live in
    /// shared memory: `fill` copies it out, the tap never reads it in place.
    pub fn record_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) {
        let mut buf = match self.free.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => {
                self.skipped += 1;
                return;
            }
        };
        let n = len.min(buf.len());
        let n = fill(&mut buf[..n]).min(n);
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if self
            .full
            .try_send(Captured {
                buf,
                len: n,
                orig_len: len,
                ts,
            })
            .is_err()
        {
            self.skipped += 1;
        }
    }

    /// Copy a frame in private memory into the stream.
    pub fn record(&mut self, frame: &[u8]) {
        self.record_with(frame.len(), |b| {
            b.copy_from_slice(&frame[..b.len()]);
            b.len()
        })
    }
}

/// The pcap global header (microsecond timestamps, Ethernet link type).
pub fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&(SNAPLEN as u32).to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    h
}

/// A pcap record header.
pub fn record_header(ts: Duration, len: usize, orig_len: usize) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(ts.as_secs() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&ts.subsec_micros().to_le_bytes());
    h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(orig_len as u32).to_le_bytes());
    h
}

/// Why a capture stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// `count` frames were written.
    Count,
    /// The data path dropped the tap (pipe removed, daemon stopping).
    TapGone,
    /// Writing failed (the client went away).
    Closed,
    /// `keep_going` said stop.
    Stopped,
}

impl CaptureReader {
    /// Write records to `out` until `count` frames (if given) or an end. `keep_going` is
    /// asked a few times a second (e.g. to notice a client that hung up).
    pub fn pump(
        &self,
        out: &mut dyn Write,
        count: Option<u64>,
        mut keep_going: impl FnMut() -> bool,
    ) -> (u64, End) {
        let mut n = 0u64;
        loop {
            if count.is_some_and(|c| n >= c) {
                let _ = out.flush();
                return (n, End::Count);
            }
            match self.full.recv_timeout(Duration::from_millis(200)) {
                Ok(c) => {
                    let ok = out
                        .write_all(&record_header(c.ts, c.len, c.orig_len))
                        .is_ok()
                        && out.write_all(&c.buf[..c.len]).is_ok();
                    let _ = self.free.try_send(c.buf);
                    if !ok {
                        return (n, End::Closed);
                    }
                    n += 1;
                    if n.is_multiple_of(64) && out.flush().is_err() {
                        return (n, End::Closed);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if out.flush().is_err() {
                        return (n, End::Closed);
                    }
                    if !keep_going() {
                        return (n, End::Stopped);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return (n, End::TapGone),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_flow_through_the_pool_and_back() {
        let (mut tap, reader) = pair(1);
        for i in 0..10u8 {
            tap.record(&[i; 60]);
        }
        let mut out = Vec::new();
        let (n, end) = reader.pump(&mut out, Some(10), || true);
        assert_eq!((n, end), (10, End::Count));
        assert_eq!(out.len(), 10 * (16 + 60));
        assert_eq!(&out[8..12], &60u32.to_le_bytes());
        // More than the pool without a reader: the excess is skipped, not queued.
        for _ in 0..POOL + 5 {
            tap.record(&[0; 10]);
        }
        assert_eq!(tap.skipped, 5);
        drop(tap);
        let (n, end) = reader.pump(&mut std::io::sink(), None, || true);
        assert_eq!((n, end), (POOL as u64, End::TapGone));
    }
}

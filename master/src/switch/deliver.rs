//! Frames entering a pipe: one copy into the destination's RX channel, from another pipe
//! or from the NIC, within the destination's fair share.

use super::*;

/// Copy a verified frame from the NIC into a pipe's RX channel (Ethernet destination set
/// to the pipe's MAC). False if the pipe is not attached or has no room.
pub(super) fn deliver_from_link(dst: &mut Slot, frame: &[u8], round: u64) -> bool {
    if dst.broken || dst.control.attached_pid() == 0 || frame.len() > dst.end.rx.buf_size() {
        return false;
    }
    let reserve = dst.end.rx.nbufs() / RESERVE_DIV;
    let rx = &mut dst.end.rx;
    if dst.share.shed(FROM_LINK, round, || !rx.has_free(reserve)) {
        dst.local.shed += 1;
        dst.dirty = true;
        return false;
    }
    let Some(buf) = dst.end.rx.alloc() else {
        dst.local.rx_full += 1;
        dst.dirty = true;
        return false;
    };
    // Fits: frame.len() <= buf_size was checked above.
    dst.end.rx.write_at(buf, 0, frame);
    dst.end.rx.write_at(buf, 0, &dst.mac);
    if let Some(cap) = dst.capture.as_mut() {
        let rx = &dst.end.rx;
        cap.record_with(frame.len(), |b| rx.read_back(buf, 0, b));
    }
    if dst.end.rx.post(buf, frame.len()) {
        dst.local.rx_frames += 1;
        dst.local.rx_bytes += frame.len() as u64;
        dst.dirty = true;
        true
    } else {
        dst.local.rx_full += 1;
        dst.dirty = true;
        false
    }
}

/// Where the bytes of a frame being delivered are: in a pipe's TX buffer (shared memory:
/// copied, never read in place) or in the switch's private memory.
pub(super) enum FrameSource<'a> {
    Shared(&'a ChannelReceiver, RxFrame),
    Private(&'a [u8]),
}

impl FrameSource<'_> {
    /// Copy the frame's bytes from `offset` into `dst`; returns how many.
    pub(super) fn copy_out(&self, offset: usize, dst: &mut [u8]) -> usize {
        match self {
            FrameSource::Shared(rx, f) => rx.copy_out(*f, offset, dst),
            FrameSource::Private(b) => {
                let b = b.get(offset..).unwrap_or_default();
                let n = dst.len().min(b.len());
                dst[..n].copy_from_slice(&b[..n]);
                n
            }
        }
    }

    /// Copy the frame's first `len` bytes into buffer `buf` of `to` (allocated, not
    /// posted).
    fn copy_into(&self, len: usize, to: &mut ChannelSender, buf: u32) -> bool {
        match self {
            FrameSource::Shared(rx, f) => channel::copy_frame(rx, *f, len, to, buf),
            FrameSource::Private(b) => b.get(..len).is_some_and(|b| to.write_at(buf, 0, b)),
        }
    }
}

pub(super) enum Delivery {
    Ok,
    NotAttached,
    TooBig,
    RxFull,
}

/// Copy an IPv4 frame (`frame_len` bytes from `src`, already classified on `hdr`) into the
/// destination pipe's RX channel, with Ethernet addresses set to the destination's MAC and
/// the sender's MAC, and the validated IPv4 header prefix rewritten from `hdr` (so a sender
/// racing on its buffer cannot change the checked source address).
pub(super) fn deliver(
    dst: &mut Slot,
    (from, round): (usize, u64),
    src: FrameSource<'_>,
    hdr: &[u8; HDR_COPY],
    frame_len: usize,
    src_mac: [u8; 6],
) -> Delivery {
    // A quarantined pipe counts as one with no service: its memory reaches no one.
    if dst.broken || dst.control.attached_pid() == 0 {
        return Delivery::NotAttached;
    }
    if frame_len > dst.end.rx.buf_size() {
        return Delivery::TooBig;
    }
    let reserve = dst.end.rx.nbufs() / RESERVE_DIV;
    let rx = &mut dst.end.rx;
    if dst.share.shed(from, round, || !rx.has_free(reserve)) {
        dst.local.shed += 1;
        dst.dirty = true;
        return Delivery::RxFull;
    }
    let Some(buf) = dst.end.rx.alloc() else {
        dst.local.rx_full += 1;
        dst.dirty = true;
        return Delivery::RxFull;
    };
    let mut head = [0u8; net::IPV4_MIN_FRAME_LEN];
    head.copy_from_slice(&hdr[..net::IPV4_MIN_FRAME_LEN]);
    head[0..6].copy_from_slice(&dst.mac);
    head[6..12].copy_from_slice(&src_mac);
    // frame_len (the classified length, <= the frame's) fits the buffer (checked above) and
    // is >= 34 = head.len(): the copy and the header written over it both succeed.
    if !src.copy_into(frame_len, &mut dst.end.rx, buf) || !dst.end.rx.write_at(buf, 0, &head) {
        dst.end.rx.cancel(buf);
        return Delivery::TooBig;
    }
    if let Some(cap) = dst.capture.as_mut() {
        let rx = &dst.end.rx;
        cap.record_with(frame_len, |b| rx.read_back(buf, 0, b));
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

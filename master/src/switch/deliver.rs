//! Frames entering a pipe: one copy into the destination's RX channel, from another pipe
//! or from the NIC, within the destination's fair share.

use super::*;

/// Copy a verified frame from the NIC into a pipe's RX channel (Ethernet destination set
/// to the pipe's MAC). False if the pipe is not attached or has no room.
pub(super) fn deliver_from_link(dst: &mut Slot, frame: &[u8], round: u64) -> bool {
    let mac = dst.mac;
    let write =
        |rx: &mut ChannelSender, buf| rx.write_at(buf, 0, frame) && rx.write_at(buf, 0, &mac);
    matches!(
        deliver_into(dst, (FROM_LINK, round, Hold::Never), frame.len(), write),
        Delivery::Ok
    )
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

/// Whether a pipe-to-pipe frame that finds no free buffer may wait (see
/// [`super::MAX_HOLD`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hold {
    /// Dropped at once (frames from the NIC).
    Never,
    /// Left to the caller ([`Delivery::Held`]), unless the destination is stalled.
    Allowed,
    /// It waited for [`super::MAX_HOLD`]: dropped, and the destination is stalled.
    Expired,
}

pub(super) enum Delivery {
    Ok,
    NotAttached,
    TooBig,
    /// Dropped for lack of room (counted as `rx_full` or `shed`).
    RxFull,
    /// No free buffer, and the caller may hold the frame: nothing counted.
    Held,
}

/// Copy an IPv4 frame (`frame_len` bytes from `src`, already classified on `hdr`) into the
/// destination pipe's RX channel, with Ethernet addresses set to the destination's MAC and
/// the sender's MAC, and the validated IPv4 header prefix rewritten from `hdr` (so a sender
/// racing on its buffer cannot change the checked source address). `hold` says whether a
/// frame that finds no free buffer may wait.
pub(super) fn deliver(
    dst: &mut Slot,
    (from, round, hold): (usize, u64, Hold),
    src: FrameSource<'_>,
    hdr: &[u8; HDR_COPY],
    frame_len: usize,
    src_mac: [u8; 6],
) -> Delivery {
    let mut head = [0u8; net::IPV4_MIN_FRAME_LEN];
    head.copy_from_slice(&hdr[..net::IPV4_MIN_FRAME_LEN]);
    head[0..6].copy_from_slice(&dst.mac);
    head[6..12].copy_from_slice(&src_mac);
    // frame_len (the classified length, <= the frame's) is >= 34 = head.len(): the header
    // is written over the copy.
    let write = |rx: &mut ChannelSender, buf| {
        src.copy_into(frame_len, rx, buf) && rx.write_at(buf, 0, &head)
    };
    deliver_into(dst, (from, round, hold), frame_len, write)
}

/// The one way into a pipe's RX channel: the pipe must be attached and not quarantined,
/// the frame must fit its buffers and `from` must be within its fair share; then a buffer
/// is allocated, `write` fills its first `len` bytes, the frame is captured if someone
/// watches and posted, and the pipe's counters follow.
fn deliver_into(
    dst: &mut Slot,
    (from, round, hold): (usize, u64, Hold),
    len: usize,
    write: impl FnOnce(&mut ChannelSender, u32) -> bool,
) -> Delivery {
    // A quarantined pipe counts as one with no service: its memory reaches no one.
    if dst.broken || dst.control.attached_pid() == 0 {
        return Delivery::NotAttached;
    }
    if len > dst.end.rx.buf_size() {
        return Delivery::TooBig;
    }
    // Shares and stalls are per pool: a frame that needs a large buffer is not held up
    // by a full small pool, nor let through by a small pool with room.
    let pool = usize::from(dst.end.rx.is_large_frame(len));
    let rx = &mut dst.end.rx;
    if dst
        .share
        .shed(from, round, || !rx.has_share_free(len, RESERVE_DIV))
    {
        dst.local.shed += 1;
        dst.dirty = true;
        return Delivery::RxFull;
    }
    let Some(buf) = dst.end.rx.alloc(len) else {
        match hold {
            // A stalled pipe (one that let a frame wait out its hold) makes no one wait
            // again until it takes a frame: a service that stops reading delays the
            // traffic of its senders once, not frame after frame.
            Hold::Allowed if !dst.stalled[pool] => return Delivery::Held,
            Hold::Expired => dst.stalled[pool] = true,
            _ => {}
        }
        dst.local.rx_full += 1;
        dst.dirty = true;
        return Delivery::RxFull;
    };
    if !write(&mut dst.end.rx, buf) {
        dst.end.rx.cancel(buf);
        return Delivery::TooBig;
    }
    if let Some(cap) = dst.capture.as_mut() {
        let rx = &dst.end.rx;
        cap.record_with(len, |b| rx.read_back(buf, 0, b));
    }
    if dst.end.rx.post(buf, len) {
        // Stalled until it has drained to a quarter free: a reader that frees a buffer
        // now and then must not make each frame to it wait out a hold.
        if dst.stalled[pool] && dst.end.rx.has_share_free(len, RESERVE_DIV) {
            dst.stalled[pool] = false;
        }
        dst.local.rx_frames += 1;
        dst.local.rx_bytes += len as u64;
        dst.dirty = true;
        Delivery::Ok
    } else {
        dst.local.rx_full += 1;
        dst.dirty = true;
        Delivery::RxFull
    }
}

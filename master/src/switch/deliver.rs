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
    let out = dst.end.rx.buf_ptr(buf);
    // SAFETY: `out` is a buffer we own of buf_size >= frame.len() bytes (checked above);
    // `frame` is private NIC memory, not the pipe's.
    unsafe {
        core::ptr::copy_nonoverlapping(frame.as_ptr(), out, frame.len());
        core::ptr::copy_nonoverlapping(dst.mac.as_ptr(), out, 6);
    }
    if let Some(cap) = dst.capture.as_mut() {
        // SAFETY: `out` holds the frame.len() bytes just written.
        unsafe { cap.record_raw(out, frame.len()) };
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

pub(super) enum Delivery {
    Ok,
    NotAttached,
    TooBig,
    RxFull,
}

/// Copy an IPv4 frame (`frame_len` bytes at `src`, already classified on `hdr`) into the
/// destination pipe's RX channel, with Ethernet addresses set to the destination's MAC and
/// the sender's MAC, and the validated IPv4 header prefix rewritten from `hdr` (so a sender
/// racing on its buffer cannot change the checked source address).
pub(super) fn deliver(
    dst: &mut Slot,
    (from, round): (usize, u64),
    src: *const u8,
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
    if let Some(cap) = dst.capture.as_mut() {
        // SAFETY: `out` holds the frame_len bytes just written.
        unsafe { cap.record_raw(out, frame_len) };
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

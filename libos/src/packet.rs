//! The packet API: for apps that forward frames (a NAT, a load balancer) beside the TCP
//! engine in the same service.
//!
//! The app installs a filter ([`Engine::set_packet_filter`]); every received IPv4 frame
//! (from the pipe or a fast channel) is offered to it, as a private copy of its first
//! [`FILTER_HEAD`](crate::device::FILTER_HEAD) bytes. Frames it claims wait, in their
//! senders' shared buffers, for the app; the rest go to smoltcp as before (the service's
//! own connections: a NAT's health checks). In its round the app calls
//! [`Engine::packets`] and, for each frame, reads a snapshot of its head, then forwards
//! it (one copy, into a buffer of the channel toward the new destination, where the app
//! rewrites it in place), sends extra frames it builds (a TCP reset), or drops it. No
//! allocation per frame; the batch holds at most [`APP_BATCH`](crate::device::APP_BATCH)
//! frames, and a full batch pauses receiving until the app has handled it.
//!
//! Where a frame goes is decided by its destination address as for the TCP stack: a
//! fast channel to that address if one is up, else the master.

use std::net::Ipv4Addr;

use crate::channel::RxFrame;
use crate::device::{PipeDevice, Route};
use crate::engine::Engine;

/// One received frame the app's filter claimed, and the means to send frames.
///
/// The frame is given back to its sender (dropped) when the app's handler returns
/// without forwarding it.
pub struct PacketIo<'a> {
    dev: &'a mut PipeDevice,
    cur: Option<(Route, RxFrame)>,
}

impl PacketIo<'_> {
    /// Length of the current frame (Ethernet header included); 0 once it was forwarded
    /// or dropped.
    pub fn len(&self) -> usize {
        self.cur.map_or(0, |(_, f)| f.len as usize)
    }

    /// True once the current frame was forwarded or dropped.
    pub fn is_empty(&self) -> bool {
        self.cur.is_none()
    }

    /// True if the current frame came over a fast channel (not through the master).
    pub fn from_fast_channel(&self) -> bool {
        matches!(self.cur, Some((Route::Fc(_), _)))
    }

    /// Copy the first `out.len()` bytes of the current frame into `out` (a snapshot the
    /// sender cannot change); returns how many were copied.
    pub fn read_head(&self, out: &mut [u8]) -> usize {
        match self.cur {
            Some(f) => self.dev.copy_frame_out(f, out),
            None => 0,
        }
    }

    /// Forward the current frame toward `to`: it is copied once into a buffer of that
    /// channel, `rewrite` edits the copy (the whole frame, Ethernet header first; the
    /// device writes the MAC addresses afterwards), and it is sent. False if no buffer
    /// was free (the frame is dropped) or the frame was handled already.
    pub fn forward(&mut self, to: Ipv4Addr, rewrite: impl FnOnce(&mut [u8])) -> bool {
        match self.cur.take() {
            Some(f) => self.dev.forward_frame(f, to, rewrite),
            None => false,
        }
    }

    /// Drop the current frame (its buffer goes back to the sender).
    pub fn drop_frame(&mut self) {
        if let Some(f) = self.cur.take() {
            self.dev.give_back(f);
        }
    }

    /// Build and send a new frame of `len` bytes toward `to` (e.g. a TCP reset):
    /// `build` writes it from the EtherType on (the device writes the MAC addresses).
    /// False if no buffer was free.
    pub fn send(&mut self, to: Ipv4Addr, len: usize, build: impl FnOnce(&mut [u8])) -> bool {
        self.dev.send_built(to, len, build)
    }

    /// Send a frame built outside a packet handler (see [`Engine::send_frame`]).
    fn new(dev: &mut PipeDevice) -> PacketIo<'_> {
        PacketIo { dev, cur: None }
    }
}

impl Engine {
    /// Send the received frames `filter` claims to the app's forwarding path
    /// ([`Engine::packets`]) instead of the TCP/IP stack. `filter` sees a private copy of
    /// the frame's first bytes (Ethernet, IPv4 and the ports) and must be cheap: it runs
    /// once per received frame. Calling it again replaces the filter (e.g. when the
    /// app's configuration changed).
    pub fn set_packet_filter(&mut self, filter: impl FnMut(&[u8]) -> bool + Send + 'static) {
        self.device_mut().set_packet_filter(Box::new(filter));
    }

    /// Frames claimed by the filter and not handled yet.
    pub fn packets_waiting(&self) -> usize {
        self.device().app_rx.len()
    }

    /// Hand each claimed frame, oldest first, to `handler`, which forwards it, drops it,
    /// or sends frames of its own. A frame the handler leaves alone is dropped. What is
    /// sent goes out at the end of the round.
    pub fn packets(&mut self, mut handler: impl FnMut(&mut PacketIo<'_>)) {
        let dev = self.device_mut();
        while let Some(f) = dev.app_rx.pop_front() {
            let mut io = PacketIo { dev, cur: Some(f) };
            handler(&mut io);
            io.drop_frame();
        }
    }

    /// Build and send a frame outside [`Engine::packets`] (e.g. resets for the flows of
    /// a backend that died): as [`PacketIo::send`].
    pub fn send_frame(&mut self, to: Ipv4Addr, len: usize, build: impl FnOnce(&mut [u8])) -> bool {
        PacketIo::new(self.device_mut()).send(to, len, build)
    }
}

//! Per-pipe counters, written by the data path and read by the control plane.
//!
//! The data path keeps plain `u64` sums ([`Counters`]) per pipe and, at the end of a round
//! in which a pipe saw traffic, stores them into the shared [`PipeStats`] (it is the only
//! writer, so plain Relaxed stores suffice: no read-modify-write on the hot path).

use std::sync::atomic::{AtomicU64, Ordering};

use docknet_pipe::channel::ChannelFaults;
use serde::Serialize;

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// The data path's private running totals for one pipe.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters { $($(#[$m])* pub $name: u64,)* }

        /// The shared copy of [`Counters`] the control plane reads.
        #[derive(Debug, Default)]
        pub struct PipeStats { $($(#[$m])* pub $name: AtomicU64,)* }

        impl PipeStats {
            /// Publish the data path's totals (single writer: plain stores).
            pub fn publish(&self, c: &Counters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
            }

            /// Read the counters.
            pub fn load(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        /// Column names of [`StatsSnapshot`], in table order.
        pub const COLUMNS: &[&str] = &[$(stringify!($name),)* "bad_desc", "bad_return", "ring_corrupt"];

        impl StatsSnapshot {
            /// Values in [`COLUMNS`] order.
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name,)* self.bad_desc, self.bad_return, self.ring_corrupt]
            }

            fn from_parts(c: Counters, faults: &ChannelFaults) -> Self {
                StatsSnapshot {
                    $($name: c.$name,)*
                    bad_desc: faults.bad_desc.load(Ordering::Relaxed),
                    bad_return: faults.bad_return.load(Ordering::Relaxed),
                    ring_corrupt: faults.ring_corrupt.load(Ordering::Relaxed),
                }
            }
        }

        /// One pipe's counters as reported by `docknetctl stats`.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct StatsSnapshot {
            $($(#[$m])* pub $name: u64,)*
            /// Descriptors from the service with a bad buffer index or length.
            pub bad_desc: u64,
            /// Bad buffer indices the service returned on its fill ring.
            pub bad_return: u64,
            /// Times the service wrote an impossible ring index.
            pub ring_corrupt: u64,
        }
    };
}

counters! {
    /// Frames the service sent (taken from its TX ring).
    tx_frames,
    /// Bytes the service sent.
    tx_bytes,
    /// Frames delivered to the service (posted on its RX ring).
    rx_frames,
    /// Bytes delivered to the service.
    rx_bytes,
    /// ARP replies the master sent to this service.
    arp_replies,
    /// Dropped: too short or malformed ARP/IPv4 header.
    bad_frame,
    /// Dropped: ARP request for an address nobody has.
    arp_unknown,
    /// Dropped: IPv4 source is not the pipe's address.
    spoofed,
    /// Dropped: no pipe has the destination address.
    no_route,
    /// Dropped: the destination pipe has no service attached.
    not_attached,
    /// Dropped: no free buffer or ring slot on this pipe's RX channel (counted on the destination).
    rx_full,
    /// Dropped: frame larger than the destination's buffers.
    too_big,
    /// Dropped: not ARP or IPv4 (or an ARP operation other than request).
    unsupported,
    /// 1 if the NIC steers this pipe's frames in hardware (DPDK rte_flow), else 0.
    steered_hw,
    /// Times the pipe's rate limit held its frames back (the master stopped taking them
    /// until tokens were due; nothing is dropped). 0 for a pipe without a limit.
    throttled,
    /// 1 once the pipe's file was shrunk under the master (its SIGBUS caught): the pipe is
    /// quarantined, nothing more is switched to or from it; `pipe rm` it.
    broken,
    /// Dropped (counted on the destination): frames from one source beyond its share of
    /// this pipe's nearly full RX channel, so that other sources still get through.
    shed,
}

/// A snapshot of one pipe's counters and its channel faults.
pub fn snapshot(stats: &PipeStats, faults: &ChannelFaults) -> StatsSnapshot {
    StatsSnapshot::from_parts(stats.load(), faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_snapshot() {
        let s = PipeStats::default();
        let c = Counters {
            tx_frames: 3,
            rx_full: 2,
            ..Default::default()
        };
        s.publish(&c);
        let f = ChannelFaults::default();
        f.bad_desc.store(7, Ordering::Relaxed);
        let snap = snapshot(&s, &f);
        assert_eq!(snap.tx_frames, 3);
        assert_eq!(snap.rx_full, 2);
        assert_eq!(snap.bad_desc, 7);
        assert_eq!(snap.values().len(), COLUMNS.len());
        let j = serde_json::to_value(&snap).unwrap();
        for c in COLUMNS {
            assert!(j.get(c).is_some(), "{c}");
        }
    }
}

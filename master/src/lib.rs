//! DockNet master: the `docknetd` daemon and the `docknetctl` client.
//!
//! - [`net`]: address validation, MAC derivation, frame classification, ARP replies.
//! - [`rate`]: token buckets for per-pipe rate limits (used by the switch).
//! - [`stats`]: per-pipe counters shared between the data path and the control plane.
//! - [`switch`]: the data-path thread (pipe ↔ pipe switching, idle sleep on doorbells).
//!   It has no `unsafe` code: tenant memory is reached only through `docknet-pipe`'s
//!   copying API (`copy_out`, `write_at`, `copy_frame`), never as a reference.
//! - [`control`]: the JSON-lines control protocol, pipe/fast-channel state, socket server
//!   and client.
//! - [`daemon`]: run directory, tmpfs, stale state, threads and signals.
//! - [`link`]: the NIC's counters and the neighbour (ARP) table; [`nic`]: the backends.
//! - [`route`]: routes to other nodes' subnets (`docknetctl route`), looked up by the
//!   switch.
//! - [`state`]: what a restarted daemon re-adopts (the state file).
//! - [`beneath`]: touching files in pipe directories without following what a tenant
//!   planted there.

pub mod attach;
pub mod beneath;
#[forbid(unsafe_code)]
pub mod capture;
pub mod cluster;
pub mod control;
pub mod csum;
pub mod daemon;
#[forbid(unsafe_code)]
pub mod link;
pub mod net;
pub mod nic;
#[forbid(unsafe_code)]
pub mod rate;
#[forbid(unsafe_code)]
pub mod route;
pub mod state;
pub mod stats;
#[forbid(unsafe_code)]
pub mod switch;
pub mod users;

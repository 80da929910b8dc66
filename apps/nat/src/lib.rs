//! dn-nat: an L4 load balancer for DockNet. Clients talk to one virtual IP (the VIP); the
//! NAT picks a backend for each new flow, rewrites the destination of the client's packets
//! to that backend and the source of the backend's replies back to the VIP.
//!
//! This library is the pure, testable core, free of I/O and clocks (time comes in as
//! milliseconds):
//!
//! - [`maglev`]: Maglev consistent hashing, so a flow keeps its backend across NAT restarts
//!   and most flows keep theirs when the backend set changes;
//! - [`backends`]: the backend set and the choice policies (Maglev, weighted round robin,
//!   least connections);
//! - [`conntrack`]: the fixed-capacity connection table (flow → backend, TCP state,
//!   timeouts), which never allocates after construction;
//! - [`packet`]: parsing and in-place rewriting of Ethernet/IPv4/TCP|UDP frames with
//!   incremental checksum updates, and building TCP resets.
//!
//! Nothing here panics on any packet bytes, and no `unsafe` is used.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backends;
pub mod conntrack;
pub mod maglev;
pub mod packet;

//! The NAT's data path: frames to the VIP go to a backend, the backend's replies go back
//! to the client, both rewritten in the one copy the packet API makes.
//!
//! - DNAT: the destination becomes the backend (same port); the backend sees the
//!   client's address and replies through us (its default route is the fast channel to
//!   the NAT); the reply's source becomes the VIP again.
//! - Full NAT: the source also becomes the VIP with a port of ours
//!   ([`FULLNAT_PORT_BASE`] plus the flow's slot in the table), so the reply comes back
//!   to us by ordinary routing and its destination port names its flow without a second
//!   table.

use std::net::Ipv4Addr;

use dn_nat::backends::BackendSet;
use dn_nat::conntrack::{ConnTable, Flow, FlowKey, FlowState};
use dn_nat::maglev::flow_hash;
use dn_nat::packet::{self, tcp_flags, Malformed, Parsed};
use docknet::PacketIo;
use docknet_master::cluster::{NatMode, Proto, VipPort};

/// First port of the ports the NAT uses as a source in full-NAT mode (below the libOS's
/// ephemeral ports, which its health checks use).
pub const FULLNAT_PORT_BASE: u32 = 1024;
/// Most flows in full-NAT mode (one source port each, below the ephemeral range).
pub const FULLNAT_MAX_FLOWS: u32 = 49152 - FULLNAT_PORT_BASE;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Length of the reset frames the NAT builds.
pub const RST_FRAME_LEN: usize = 54;

/// What the NAT counts (shown in its stats file under these names).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Frames from clients forwarded to a backend.
    pub to_backend: u64,
    /// Backend replies forwarded to the client.
    pub to_client: u64,
    /// New flows refused because the connection table was full (TCP: reset sent).
    pub refused_table_full: u64,
    /// New flows with no backend to take them (none healthy with weight > 0).
    pub refused_no_backend: u64,
    /// TCP segments of no known flow that were not a SYN (reset sent).
    pub no_flow: u64,
    /// Frames that were not well-formed IPv4 TCP/UDP.
    pub malformed: u64,
    /// IPv4 fragments (the NAT needs the ports of every frame; fragments are dropped).
    pub fragments: u64,
    /// Replies from an address that is not the flow's backend.
    pub wrong_backend: u64,
    /// Frames claimed but neither to the VIP nor from a backend.
    pub not_ours: u64,
    /// Frames dropped for lack of a buffer on the way out.
    pub tx_no_buffer: u64,
    /// Resets the NAT sent (table full, no flow, a backend gone).
    pub resets_sent: u64,
    /// Flows removed after their timeout.
    pub expired: u64,
    /// Flows reset because their backend died, failed its health checks or was removed.
    pub reset_backend_gone: u64,
}

impl Counters {
    pub fn named(&self) -> [(&'static str, u64); 13] {
        [
            ("to_backend", self.to_backend),
            ("to_client", self.to_client),
            ("refused_table_full", self.refused_table_full),
            ("refused_no_backend", self.refused_no_backend),
            ("no_flow", self.no_flow),
            ("malformed", self.malformed),
            ("fragments", self.fragments),
            ("wrong_backend", self.wrong_backend),
            ("not_ours", self.not_ours),
            ("tx_no_buffer", self.tx_no_buffer),
            ("resets_sent", self.resets_sent),
            ("expired", self.expired),
            ("reset_backend_gone", self.reset_backend_gone),
        ]
    }
}

/// Which received frames are the NAT's (the rest go to its TCP stack: health checks).
#[derive(Clone, Debug)]
pub struct Claim {
    pub vip: u32,
    pub ports: Vec<VipPort>,
    /// Full NAT: replies come to the VIP on ports [base, base + flows).
    pub fullnat_ports: Option<(u32, u32)>,
}

impl Claim {
    /// True if the frame whose head is `h` (Ethernet onward) is for the forwarding path:
    /// anything not addressed to the VIP (a backend's reply in DNAT mode), and to the VIP
    /// a served port, a full-NAT port, a fragment or a malformed header.
    pub fn claims(&self, h: &[u8]) -> bool {
        const IP: usize = 14;
        if h.len() < IP + 20 {
            return false;
        }
        let dst = u32::from_be_bytes([h[IP + 16], h[IP + 17], h[IP + 18], h[IP + 19]]);
        if dst != self.vip {
            return true;
        }
        let ihl = usize::from(h[IP] & 0x0f) * 4;
        if h[IP] >> 4 != 4 || ihl < 20 {
            return true; // malformed: counted and dropped by the NAT
        }
        let frag = u16::from_be_bytes([h[IP + 6], h[IP + 7]]);
        if frag & 0x3fff != 0 {
            return true; // a fragment (MF or an offset)
        }
        let proto = match h[IP + 9] {
            IPPROTO_TCP => Proto::Tcp,
            IPPROTO_UDP => Proto::Udp,
            _ => return false, // ICMP (ping the VIP) and the rest: the stack's
        };
        let l4 = IP + ihl;
        if h.len() < l4 + 4 {
            return true; // too short for ports: malformed
        }
        let dport = u16::from_be_bytes([h[l4 + 2], h[l4 + 3]]);
        if self
            .ports
            .iter()
            .any(|p| p.port == dport && p.proto == proto)
        {
            return true;
        }
        matches!(self.fullnat_ports, Some((base, n)) if (base..base + n).contains(&u32::from(dport)))
    }
}

/// The NAT: backends, the connection table, counters.
pub struct Nat {
    pub claim: Claim,
    pub mode: NatMode,
    pub backends: BackendSet,
    pub table: ConnTable,
    pub counters: Counters,
}

impl Nat {
    fn served(&self, proto: u8, port: u16) -> bool {
        let proto = match proto {
            IPPROTO_TCP => Proto::Tcp,
            IPPROTO_UDP => Proto::Udp,
            _ => return false,
        };
        self.claim
            .ports
            .iter()
            .any(|p| p.port == port && p.proto == proto)
    }

    /// Handle one claimed frame.
    pub fn handle(&mut self, io: &mut PacketIo<'_>, now_ms: u64) {
        // Ethernet, the longest IPv4 header, the longest TCP header's first 60 bytes.
        let mut head = [0u8; 14 + 60 + 60];
        let n = io.read_head(&mut head);
        let p = match packet::parse_head(&head[..n], io.len()) {
            Ok(p) => p,
            Err(Malformed::Fragment) => {
                self.counters.fragments += 1;
                return io.drop_frame();
            }
            Err(_) => {
                self.counters.malformed += 1;
                return io.drop_frame();
            }
        };
        let vip = self.claim.vip;
        if p.dst == vip && self.served(p.proto, p.dport) {
            self.client_frame(io, &p, now_ms);
        } else if p.dst == vip {
            match self.claim.fullnat_ports {
                Some((base, n)) if (base..base + n).contains(&u32::from(p.dport)) => {
                    self.fullnat_reply(io, &p, u32::from(p.dport) - base, now_ms)
                }
                _ => {
                    self.counters.not_ours += 1;
                    io.drop_frame();
                }
            }
        } else {
            self.dnat_reply(io, &p, now_ms);
        }
    }

    fn client_frame(&mut self, io: &mut PacketIo<'_>, p: &Parsed, now_ms: u64) {
        let key = FlowKey {
            proto: p.proto,
            client_ip: p.src,
            client_port: p.sport,
            vip_port: p.dport,
        };
        let tcp = p.proto == IPPROTO_TCP;
        let syn = tcp && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        let mut found = self.table.lookup(&key);
        if let Some(s) = found {
            // A SYN on the ports of a flow that closed (the client reused its port
            // while we still remember the old flow): a new connection, chosen anew.
            if syn
                && self
                    .table
                    .get(s)
                    .is_some_and(|f| f.state == FlowState::Closing)
            {
                self.forget(s);
                found = None;
            }
        }
        let slot = match found {
            Some(s) => s,
            None => {
                if tcp && p.tcp_flags & tcp_flags::RST != 0 {
                    return io.drop_frame();
                }
                if tcp && !syn {
                    // Not a SYN of a flow we do not know (ours expired, or the NAT was
                    // restarted): tell the client at once rather than leave it hanging.
                    self.counters.no_flow += 1;
                    self.reset_client(io, p);
                    return io.drop_frame();
                }
                let hash = flow_hash(p.proto, p.src, p.sport, p.dport);
                let Some(b) = self.backends.pick(hash) else {
                    self.counters.refused_no_backend += 1;
                    if tcp {
                        self.reset_client(io, p);
                    }
                    return io.drop_frame();
                };
                if self.mode == NatMode::Fullnat && self.table.len() as u32 >= FULLNAT_MAX_FLOWS {
                    self.counters.refused_table_full += 1;
                    if tcp {
                        self.reset_client(io, p);
                    }
                    return io.drop_frame();
                }
                match self.table.insert(key, b, now_ms) {
                    Ok(s) => {
                        if let Some(be) = self.backends.get_mut(b) {
                            be.active += 1;
                            be.total += 1;
                        }
                        s
                    }
                    Err(_) => {
                        self.counters.refused_table_full += 1;
                        if tcp {
                            self.reset_client(io, p);
                        }
                        return io.drop_frame();
                    }
                }
            }
        };
        if tcp {
            self.table
                .observe_tcp(slot, p.tcp_flags, true, p.ack, now_ms);
        } else {
            self.table.touch(slot, now_ms);
        }
        let Some(flow) = self.table.get(slot) else {
            return io.drop_frame();
        };
        let bidx = flow.backend;
        let Some(backend) = self.backends.get_mut(bidx) else {
            return io.drop_frame();
        };
        let bip = u32::from(backend.ip);
        backend.bytes += io.len() as u64;
        backend.packets += 1;
        let fullnat = self.mode == NatMode::Fullnat;
        let vip = self.claim.vip;
        let nat_port = (FULLNAT_PORT_BASE + slot) as u16;
        let sent = io.forward(Ipv4Addr::from(bip), |f| {
            if fullnat {
                packet::rewrite_src(f, p, vip, nat_port);
            }
            packet::rewrite_dst(f, p, bip, p.dport);
        });
        if sent {
            self.counters.to_backend += 1;
        } else {
            self.counters.tx_no_buffer += 1;
        }
        if tcp && p.tcp_flags & tcp_flags::RST != 0 {
            self.forget(slot);
        }
    }

    /// A DNAT backend's reply: (proto, dst, dport, sport) names the flow.
    fn dnat_reply(&mut self, io: &mut PacketIo<'_>, p: &Parsed, now_ms: u64) {
        let key = FlowKey {
            proto: p.proto,
            client_ip: p.dst,
            client_port: p.dport,
            vip_port: p.sport,
        };
        let Some(slot) = self.table.lookup(&key) else {
            self.counters.not_ours += 1;
            return io.drop_frame();
        };
        self.reply_to_client(io, p, slot, now_ms);
    }

    /// A full-NAT backend's reply: its destination port names the flow's slot.
    fn fullnat_reply(&mut self, io: &mut PacketIo<'_>, p: &Parsed, slot: u32, now_ms: u64) {
        match self.table.get(slot) {
            Some(f) if f.key.proto == p.proto && f.key.vip_port == p.sport => {}
            _ => {
                self.counters.not_ours += 1;
                return io.drop_frame();
            }
        }
        self.reply_to_client(io, p, slot, now_ms);
    }

    fn reply_to_client(&mut self, io: &mut PacketIo<'_>, p: &Parsed, slot: u32, now_ms: u64) {
        let Some(flow) = self.table.get(slot) else {
            return io.drop_frame();
        };
        let key = flow.key;
        let bidx = flow.backend;
        match self.backends.get_mut(bidx) {
            Some(b) if u32::from(b.ip) == p.src => {
                b.bytes += io.len() as u64;
                b.packets += 1;
            }
            _ => {
                self.counters.wrong_backend += 1;
                return io.drop_frame();
            }
        }
        let tcp = p.proto == IPPROTO_TCP;
        if tcp {
            self.table
                .observe_tcp(slot, p.tcp_flags, false, p.ack, now_ms);
        } else {
            self.table.touch(slot, now_ms);
        }
        let vip = self.claim.vip;
        let fullnat = self.mode == NatMode::Fullnat;
        let sent = io.forward(Ipv4Addr::from(key.client_ip), |f| {
            packet::rewrite_src(f, p, vip, key.vip_port);
            if fullnat {
                packet::rewrite_dst(f, p, key.client_ip, key.client_port);
            }
        });
        if sent {
            self.counters.to_client += 1;
        } else {
            self.counters.tx_no_buffer += 1;
        }
        if tcp && p.tcp_flags & tcp_flags::RST != 0 {
            self.forget(slot);
        }
    }

    /// Remove a flow now (a reset went through).
    fn forget(&mut self, slot: u32) {
        if let Some(f) = self.table.remove(slot) {
            if let Some(b) = self.backends.get_mut(f.backend) {
                b.active = b.active.saturating_sub(1);
            }
        }
    }

    /// Answer a client's segment with a reset from the VIP (RFC 9293 3.10.7.1: with the
    /// segment's ACK number as our sequence number, or acknowledging it if it had none).
    fn reset_client(&mut self, io: &mut PacketIo<'_>, p: &Parsed) {
        let (seq, ack) = if p.tcp_flags & tcp_flags::ACK != 0 {
            (p.ack, None)
        } else {
            let len = p.payload_len as u32
                + u32::from(p.tcp_flags & tcp_flags::SYN != 0)
                + u32::from(p.tcp_flags & tcp_flags::FIN != 0);
            (0, Some(p.seq.wrapping_add(len)))
        };
        let (src, dst) = ((p.dst, p.dport), (p.src, p.sport));
        let sent = io.send(Ipv4Addr::from(p.src), RST_FRAME_LEN, |f| {
            let _ = packet::write_tcp_rst(f, src, dst, seq, ack);
        });
        if sent {
            self.counters.resets_sent += 1;
        } else {
            self.counters.tx_no_buffer += 1;
        }
    }

    /// Remove every flow of backend `idx` (it died, failed its checks or was removed);
    /// returns the TCP flows' clients to reset: (client ip, client port, VIP port,
    /// sequence number the client expects).
    pub fn drop_backend_flows(&mut self, idx: u16, out: &mut Vec<(u32, u16, u16, u32)>) {
        let mut n = 0u64;
        self.table.drain_backend(idx, |f: &Flow| {
            n += 1;
            if f.key.proto == IPPROTO_TCP && f.state != FlowState::Closing {
                out.push((
                    f.key.client_ip,
                    f.key.client_port,
                    f.key.vip_port,
                    f.last_client_ack,
                ));
            }
        });
        self.counters.reset_backend_gone += n;
        if let Some(b) = self.backends.get_mut(idx) {
            b.active = 0;
        }
    }

    /// Expire idle flows, looking at up to `budget` slots.
    pub fn expire(&mut self, now_ms: u64, budget: usize) {
        let backends = &mut self.backends;
        let mut n = 0u64;
        self.table.expire(now_ms, budget, |f: &Flow| {
            n += 1;
            if let Some(b) = backends.get_mut(f.backend) {
                b.active = b.active.saturating_sub(1);
            }
        });
        self.counters.expired += n;
    }
}

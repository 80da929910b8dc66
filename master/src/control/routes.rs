//! Routes in the control plane: `route add CIDR via IP`, `route rm CIDR`, `route ls`.
//!
//! A route sends what this node's pipes address to another node's pod subnet to that
//! node's docknetd on the wire (`via`: the address it was given with `--link-ip`, for
//! which it answers ARP with its NIC's MAC). Checked here: there is a NIC and a link
//! address, the next hop is on the link and not us, the destination is no subnet this
//! node serves itself (a pipe subnet, the link's subnet) nor inside one, no duplicate.
//! The data path gets the whole table anew after each change ([`DpMsg::SetRoutes`]).

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{Control, ControlError};
use crate::route::{
    self, Prefix, RouteEntry, RouteError, RouteInfo, RouteStats, RouteTable, MAX_ROUTES,
};
use crate::state::SavedRoute;
use crate::switch::DpMsg;

/// One route the control plane keeps.
pub(super) struct RouteRec {
    pub(super) via: Ipv4Addr,
    /// Shared with the data path's table (kept across table replacements).
    pub(super) stats: Arc<RouteStats>,
}

impl Control {
    /// Check route `dest via via` against the link and the local subnets.
    fn check_route(&self, dest: Prefix, via: Ipv4Addr) -> Result<(), RouteError> {
        let link = self.link.as_ref().ok_or(RouteError::NoNic)?;
        let (link_ip, link_prefix) = link.ip.ok_or_else(|| RouteError::NoLinkAddress {
            nic: link.name.clone(),
        })?;
        let link_net = Prefix::of(u32::from(link_ip), link_prefix);
        let v = u32::from(via);
        if !link_net.contains(v) {
            return Err(RouteError::ViaOffLink {
                via,
                link: link_net,
                nic: link.name.clone(),
            });
        }
        if v == u32::from(link_ip) {
            return Err(RouteError::ViaIsUs { via });
        }
        let host_bits = !crate::net::netmask(link_prefix);
        if v & host_bits == 0 || v & host_bits == host_bits {
            return Err(RouteError::BadVia {
                via: via.to_string(),
                why: format!("it is the network or broadcast address of the link {link_net}"),
            });
        }
        if let Some(r) = self.routes.get(&dest) {
            return Err(RouteError::Duplicate {
                cidr: dest,
                via: r.via,
            });
        }
        if link_net.covers(&dest) {
            return Err(RouteError::Local {
                cidr: dest,
                what: format!("the link's subnet {link_net} (--link-ip)"),
            });
        }
        for (name, p) in &self.pipes {
            let net = Prefix::of(u32::from(p.ip), p.prefix_len);
            if net.covers(&dest) {
                return Err(RouteError::Local {
                    cidr: dest,
                    what: format!("pipe {name:?}'s subnet {net}"),
                });
            }
        }
        if self.routes.len() >= MAX_ROUTES {
            return Err(RouteError::Full);
        }
        Ok(())
    }

    /// A new pipe's subnet must not contain a route's destination (that node's addresses
    /// would be both here and there); the converse, a route containing the subnet (a
    /// summary or default route), is fine: the pipe subnet is more specific.
    pub(super) fn check_pipe_against_routes(
        &self,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), ControlError> {
        let net = Prefix::of(u32::from(ip), prefix_len);
        match self.routes.iter().find(|(dest, _)| net.covers(dest)) {
            Some((dest, r)) => Err(ControlError::Conflict(format!(
                "subnet {net} of {ip}/{prefix_len} contains route {dest} via {} (another node's subnet): pick another subnet, or remove the route first (docknetctl route rm {dest})",
                r.via
            ))),
            None => Ok(()),
        }
    }

    /// Hand the data path a table of every route.
    fn push_routes(&self) -> Result<(), ControlError> {
        let entries = self
            .routes
            .iter()
            .map(|(dest, r)| RouteEntry::new(*dest, r.via, r.stats.clone()))
            .collect();
        self.tell_dp(DpMsg::SetRoutes {
            table: Box::new(RouteTable::new(entries)),
        })
    }

    /// `route add CIDR via IP`.
    pub(super) fn route_add(&mut self, cidr: &str, via: &str) -> Result<Value, ControlError> {
        let dest = route::parse_prefix(cidr)?;
        let via = route::parse_via(via)?;
        self.check_route(dest, via)?;
        self.routes.insert(
            dest,
            RouteRec {
                via,
                stats: Arc::new(RouteStats::default()),
            },
        );
        if let Err(e) = self.push_routes() {
            self.routes.remove(&dest);
            return Err(e);
        }
        log::info!("route {dest} via {via}: added");
        Ok(json!({ "cidr": dest.to_string(), "via": via.to_string() }))
    }

    /// `route rm CIDR`.
    pub(super) fn route_rm(&mut self, cidr: &str) -> Result<Value, ControlError> {
        let dest = route::parse_prefix(cidr)?;
        let Some(rec) = self.routes.remove(&dest) else {
            return Err(RouteError::NoSuchRoute { cidr: dest }.into());
        };
        self.push_routes()?;
        log::info!("route {dest} via {}: removed", rec.via);
        Ok(json!({ "removed": dest.to_string(), "via": rec.via.to_string() }))
    }

    /// `route ls`: the link, its address and every route with its counters.
    pub(super) fn route_ls(&self) -> Value {
        let routes: Vec<RouteInfo> = self
            .routes
            .iter()
            .map(|(dest, r)| RouteInfo {
                cidr: dest.to_string(),
                via: r.via.to_string(),
                counters: r.stats.load(),
            })
            .collect();
        json!({
            "nic": self.link.as_ref().map(|l| l.name.clone()),
            "link_ip": self
                .link
                .as_ref()
                .and_then(|l| l.ip)
                .map(|(a, p)| format!("{a}/{p}")),
            "routes": routes,
        })
    }

    /// The routes for the state file.
    pub(super) fn saved_routes(&self) -> Vec<SavedRoute> {
        self.routes
            .iter()
            .map(|(dest, r)| SavedRoute {
                cidr: dest.to_string(),
                via: r.via.to_string(),
            })
            .collect()
    }

    /// Routes an earlier docknetd on this run directory had (after its pipes were
    /// re-adopted). One that no longer fits (another `--link-ip`, no NIC) is dropped with
    /// an error in the log naming it.
    pub(super) fn routes_readopt(&mut self, saved: &[SavedRoute]) {
        for r in saved {
            match self.route_add(&r.cidr, &r.via) {
                Ok(_) => log::info!("route {} via {}: restored", r.cidr, r.via),
                Err(e) => log::error!(
                    "route {} via {}: cannot restore it, dropped: {e}",
                    r.cidr,
                    r.via
                ),
            }
        }
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

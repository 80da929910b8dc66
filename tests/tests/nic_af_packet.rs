//! The AF_PACKET backend (issue 3): docknetd binds veth end h0 in namespace H; the kernel
//! in namespace K (k0 = 10.88.0.100/16) reaches a libOS service with curl, ping and a
//! 64 MiB verified TCP stream. Needs root; prints why and passes otherwise.

use docknet_tests::nic::{self, Backend};

#[test]
fn af_packet_curl_gets_the_http_reply() {
    let _serial = nic::serial();
    if nic::need_root("af_packet_curl_gets_the_http_reply") {
        nic::scenario_curl(Backend::AfPacket);
    }
}

#[test]
fn af_packet_ping_gets_echo_replies() {
    let _serial = nic::serial();
    if nic::need_root("af_packet_ping_gets_echo_replies") {
        nic::scenario_ping(Backend::AfPacket);
    }
}

#[test]
fn af_packet_64mib_stream_is_byte_exact() {
    let _serial = nic::serial();
    if nic::need_root("af_packet_64mib_stream_is_byte_exact") {
        nic::scenario_stream_64mib(Backend::AfPacket);
    }
}

/// With the kernel's default offloads on the veth peer k0 (TSO/GSO on), the kernel sends
/// GSO super-frames (e.g. 7354 B) across the veth; the AF_PACKET backend takes them whole
/// through its virtio-net header (PACKET_VNET_HDR) and the stream stays byte-exact.
#[test]
fn af_packet_64mib_stream_peer_offloads_on() {
    let _serial = nic::serial();
    if nic::need_root("af_packet_64mib_stream_peer_offloads_on") {
        nic::stream_64mib_on(nic::Site::start_with_peer_ethtool(Backend::AfPacket, &[]));
    }
}

//! `docknetctl capture` (issue 3): a pcap of what a pipe sends and receives shows a TCP
//! handshake from the host kernel (SYN, SYN-ACK, ACK) as tcpdump reads it. Over the TAP
//! backend and the AF_PACKET backend. Needs root.

use docknet_tests::nic::{self, Backend};

#[test]
fn capture_shows_the_handshake_over_tap() {
    let _serial = nic::serial();
    if nic::need_root("capture_shows_the_handshake_over_tap") {
        nic::scenario_capture_handshake(Backend::Tap);
    }
}

#[test]
fn capture_shows_the_handshake_over_af_packet() {
    let _serial = nic::serial();
    if nic::need_root("capture_shows_the_handshake_over_af_packet") {
        nic::scenario_capture_handshake(Backend::AfPacket);
    }
}

//! Bad input on the link (issue 3): a raw AF_PACKET socket on the kernel's veth end sends
//! truncated frames, bad IPv4/TCP/UDP checksums, impossible lengths, fragments, frames
//! for addresses with no pipe, for another MAC, and unknown EtherTypes to an AF_PACKET
//! docknetd. Each is dropped and counted under its NIC counter (bad_frame, bad_csum,
//! unknown_dst, unsupported, not_for_us), nothing is delivered, docknetd lives, and the
//! service still answers. Needs root.

use docknet_tests::nic::{self, Backend};

#[test]
fn bad_frames_are_counted_and_survived_af_packet() {
    let _serial = nic::serial();
    if nic::need_root("bad_frames_are_counted_and_survived_af_packet") {
        nic::scenario_bad_input(Backend::AfPacket);
    }
}

//! The TAP backend (issue 3): the host kernel, in the namespace that holds docknetd's
//! TAP, reaches a libOS service with curl, ping and a 64 MiB verified TCP stream.
//! Needs root (network namespaces, TAP); prints why and passes otherwise.

use docknet_tests::nic::{self, Backend};

#[test]
fn tap_curl_gets_the_http_reply() {
    let _serial = nic::serial();
    if nic::need_root("tap_curl_gets_the_http_reply") {
        nic::scenario_curl(Backend::Tap);
    }
}

#[test]
fn tap_ping_gets_echo_replies() {
    let _serial = nic::serial();
    if nic::need_root("tap_ping_gets_echo_replies") {
        nic::scenario_ping(Backend::Tap);
    }
}

#[test]
fn tap_64mib_stream_is_byte_exact() {
    let _serial = nic::serial();
    if nic::need_root("tap_64mib_stream_is_byte_exact") {
        nic::scenario_stream_64mib(Backend::Tap);
    }
}

//! Every SIP message from the trunk passes `inspect` before the SIP stack sees it: arbitrary
//! bytes from an allowed and from a foreign source must never panic.
#![no_main]

use std::net::SocketAddr;

use klausur_sip::driver::sip::inspect::{inspect, stream_frame, InspectPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = InspectPolicy {
        allow: vec!["127.0.0.1/32".parse().expect("net")],
        local_names: vec!["gateway.example".into()],
        local_ips: vec!["127.0.0.1".parse().expect("ip")],
        any_local_ip: false,
    };
    for source in ["127.0.0.1:5060", "192.0.2.7:5060"] {
        let source: SocketAddr = source.parse().expect("addr");
        let _ = inspect(data, source, &policy);
    }
    let _ = stream_frame(data);
});

//! SDP bodies of INVITEs and ACKs: parsing arbitrary bytes must never panic.
#![no_main]

use klausur_sip::driver::sip::sdp::parse_remote_sdp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_remote_sdp(data);
});

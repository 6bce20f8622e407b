//! RFC 9605 Appendix C test vectors for AES_128_GCM_SHA256_128 (see tests/vectors/rfc9605.json
//! for their source), run through `klausur_e2ee::rfc9605`, the runner the wasm build uses too.

use klausur_e2ee::rfc9605::{run, RFC9605_VECTORS};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(RFC9605_VECTORS).expect("vectors parse")
}

#[test]
fn header_vectors_pass() {
    let r = run(RFC9605_VECTORS).expect("parse");
    assert!(r.header_passed > 100);
    assert_eq!(r.header_failed, 0, "{:?}", r.failures);
}

#[test]
fn aes_128_gcm_sha256_128_vector_passes() {
    let r = run(RFC9605_VECTORS).expect("parse");
    assert_eq!(r.sframe_passed, 1);
    assert_eq!(r.sframe_failed, 0, "{:?}", r.failures);
}

fn flip_hex_byte(s: &str, idx: usize) -> String {
    let mut b = hex::decode(s).expect("hex");
    let i = idx % b.len();
    b[i] ^= 0x01;
    hex::encode(b)
}

/// Runs the vectors with one field of one vector altered; returns how many failed.
fn failures_with(section: &str, index: usize, field: &str, byte: usize) -> u32 {
    let mut v = vectors();
    let old = v[section][index][field]
        .as_str()
        .expect("hex field")
        .to_owned();
    v[section][index][field] = flip_hex_byte(&old, byte).into();
    run(&v.to_string()).expect("parse").failed
}

/// Negative control: altered expectations must make the check fail.
#[test]
fn altered_vectors_fail() {
    let ct_len = hex::decode(vectors()["sframe"][0]["ct"].as_str().expect("ct"))
        .expect("hex")
        .len();
    for idx in [0, 5, ct_len / 2, ct_len - 1] {
        assert_eq!(
            failures_with("sframe", 0, "ct", idx),
            1,
            "flipped ct byte {idx} not detected"
        );
    }
    assert_eq!(failures_with("sframe", 0, "sframe_key", 3), 1);
    assert_eq!(failures_with("sframe", 0, "pt", 0), 1);
    assert_eq!(failures_with("sframe", 0, "metadata", 0), 1);
    assert_eq!(failures_with("header", 40, "encoded", 1), 1);
}

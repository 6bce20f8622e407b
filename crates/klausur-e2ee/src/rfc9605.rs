//! RFC 9605 Appendix C test vectors (AES_128_GCM_SHA256_128), one runner for the native tests
//! (`tests/rfc9605_vectors.rs`) and for WebAssembly (`klausur-e2ee-wasm`).
//!
//! Checks: header encoding/decoding of every header vector; for the SFrame vector the key
//! schedule (labels, secret, key, salt, and `frame::derive_key_material`, the keys handed to the
//! browser's WebCrypto), nonce, AAD, encryption through the `sframe` crate with
//! the vector's KID/CTR, and decryption of the vector's ciphertext.

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sframe::{
    crypto::{get_hkdf_key_expand_label, get_hkdf_salt_expand_label},
    frame::{EncryptedFrameView, MediaFrameView, SingleUseCounter},
    header::SframeHeader,
    key::{DecryptionKey, EncryptionKey},
    CipherSuite,
};
use sha2::Sha256;

/// The vector file (tests/vectors/rfc9605.json, with its source), embedded.
pub const RFC9605_VECTORS: &str = include_str!("../tests/vectors/rfc9605.json");

#[derive(Deserialize)]
struct Vectors {
    header: Vec<HeaderVector>,
    sframe: Vec<SframeVector>,
}

#[derive(Deserialize)]
struct HeaderVector {
    kid: u64,
    ctr: u64,
    encoded: String,
}

#[derive(Deserialize)]
struct SframeVector {
    cipher_suite: u16,
    kid: u64,
    ctr: u64,
    base_key: String,
    sframe_key_label: String,
    sframe_salt_label: String,
    sframe_secret: String,
    sframe_key: String,
    sframe_salt: String,
    metadata: String,
    nonce: String,
    aad: String,
    pt: String,
    ct: String,
}

/// Outcome of a vector run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VectorReport {
    /// Header vectors that passed.
    pub header_passed: u32,
    /// Header vectors that failed.
    pub header_failed: u32,
    /// SFrame (cipher suite 0x0004) vectors that passed.
    pub sframe_passed: u32,
    /// SFrame vectors that failed.
    pub sframe_failed: u32,
    /// Total passed.
    pub passed: u32,
    /// Total failed.
    pub failed: u32,
    /// One line per failure: which vector and the first mismatch.
    pub failures: Vec<String>,
}

fn h(s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|e| format!("bad hex: {e}"))
}

fn eq(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: got {}, want {}",
            hex::encode(got),
            hex::encode(want)
        ))
    }
}

fn check_header(v: &HeaderVector) -> Result<(), String> {
    let header = SframeHeader::new(v.kid, v.ctr);
    let mut buf = vec![0u8; header.len()];
    header.serialize(&mut buf).map_err(|e| e.to_string())?;
    let encoded = h(&v.encoded)?;
    eq("header encoding", &buf, &encoded)?;
    let parsed = SframeHeader::deserialize(&encoded).map_err(|e| e.to_string())?;
    if parsed.key_id() != v.kid || parsed.counter() != v.ctr {
        return Err("header decoding".into());
    }
    Ok(())
}

fn check_sframe(v: &SframeVector) -> Result<(), String> {
    if v.cipher_suite != 4 {
        return Err("not cipher suite 0x0004".into());
    }
    let suite = CipherSuite::AesGcm128Sha256;
    let base_key = h(&v.base_key)?;

    // Key schedule, RFC 9605 section 4.4.2.
    eq(
        "sframe_key_label",
        &get_hkdf_key_expand_label(v.kid, suite),
        &h(&v.sframe_key_label)?,
    )?;
    eq(
        "sframe_salt_label",
        &get_hkdf_salt_expand_label(v.kid, suite),
        &h(&v.sframe_salt_label)?,
    )?;
    let (prk, hk) = Hkdf::<Sha256>::extract(Some(&[]), &base_key);
    eq("sframe_secret", &prk, &h(&v.sframe_secret)?)?;
    let mut key = [0u8; 16];
    hk.expand(&h(&v.sframe_key_label)?, &mut key)
        .map_err(|e| e.to_string())?;
    eq("sframe_key", &key, &h(&v.sframe_key)?)?;
    let mut salt = [0u8; 12];
    hk.expand(&h(&v.sframe_salt_label)?, &mut salt)
        .map_err(|e| e.to_string())?;
    eq("sframe_salt", &salt, &h(&v.sframe_salt)?)?;
    // The key material handed to an outside cipher (the browser's WebCrypto).
    let (outside_key, outside_salt) = crate::frame::derive_key_material(v.kid, &base_key);
    eq(
        "outside sframe_key",
        outside_key.as_slice(),
        &h(&v.sframe_key)?,
    )?;
    eq(
        "outside sframe_salt",
        outside_salt.as_slice(),
        &h(&v.sframe_salt)?,
    )?;

    // Nonce and AAD, RFC 9605 section 4.4.3.
    let mut nonce = salt;
    for (n, c) in nonce[4..].iter_mut().zip(v.ctr.to_be_bytes()) {
        *n ^= c;
    }
    eq("nonce", &nonce, &h(&v.nonce)?)?;
    let header = SframeHeader::new(v.kid, v.ctr);
    let mut aad = vec![0u8; header.len()];
    header.serialize(&mut aad).map_err(|e| e.to_string())?;
    let metadata = h(&v.metadata)?;
    aad.extend_from_slice(&metadata);
    eq("aad", &aad, &h(&v.aad)?)?;

    // Encryption through the sframe crate with the vector's KID and CTR.
    let pt = h(&v.pt)?;
    let ct = h(&v.ct)?;
    let enc_key = EncryptionKey::derive_from(suite, v.kid, &base_key).map_err(|e| e.to_string())?;
    let mut counter = SingleUseCounter::new(v.ctr);
    let frame = MediaFrameView::try_with_meta_data(&mut counter, &pt, &metadata)
        .map_err(|e| e.to_string())?;
    let encrypted = frame.encrypt(&enc_key).map_err(|e| e.to_string())?;
    eq("ct", encrypted.sframe_cipher_text(), &ct)?;

    // The same frame through klausur's own frame cipher (frame.rs `seal`, used by
    // `FrameCrypto::encrypt`): metadata || ct || len(metadata).
    let mut k = [0u8; 16];
    k.copy_from_slice(&key);
    let own = crate::frame::seal_with_key(&k, &salt, v.kid, v.ctr, &metadata, &pt)
        .map_err(|e| e.to_string())?;
    if own.len() != metadata.len() + ct.len() + 1 || own.last() != Some(&(metadata.len() as u8)) {
        return Err("frame.rs seal: layout".into());
    }
    eq("frame.rs seal ct", &own[metadata.len()..own.len() - 1], &ct)?;

    // Decryption of the vector's ciphertext.
    let dec_key = DecryptionKey::derive_from(suite, v.kid, &base_key).map_err(|e| e.to_string())?;
    let view = EncryptedFrameView::try_with_meta_data(&ct, &metadata).map_err(|e| e.to_string())?;
    let decrypted = view.decrypt(&dec_key).map_err(|e| e.to_string())?;
    eq("pt", decrypted.payload(), &pt)?;
    Ok(())
}

/// Runs every vector in `json` (the format of `rfc9605.json`). `Err` only if the JSON does
/// not parse; individual failures are counted and described in the report.
pub fn run(json: &str) -> Result<VectorReport, String> {
    let v: Vectors = serde_json::from_str(json).map_err(|e| format!("vector JSON: {e}"))?;
    let mut r = VectorReport::default();
    for (i, hv) in v.header.iter().enumerate() {
        match check_header(hv) {
            Ok(()) => r.header_passed += 1,
            Err(e) => {
                r.header_failed += 1;
                r.failures
                    .push(format!("header[{i}] (kid {}, ctr {}): {e}", hv.kid, hv.ctr));
            }
        }
    }
    for (i, sv) in v.sframe.iter().enumerate() {
        match check_sframe(sv) {
            Ok(()) => r.sframe_passed += 1,
            Err(e) => {
                r.sframe_failed += 1;
                r.failures
                    .push(format!("sframe[{i}] (kid {}, ctr {}): {e}", sv.kid, sv.ctr));
            }
        }
    }
    r.passed = r.header_passed + r.sframe_passed;
    r.failed = r.header_failed + r.sframe_failed;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_vectors_pass() {
        let r = run(RFC9605_VECTORS).expect("parse");
        assert_eq!(r.failed, 0, "{:?}", r.failures);
        assert!(r.header_passed > 100);
        assert_eq!(r.sframe_passed, 1);
    }

    #[test]
    fn corrupted_vector_fails() {
        let mut v: serde_json::Value = serde_json::from_str(RFC9605_VECTORS).expect("json");
        let ct = v["sframe"][0]["ct"].as_str().expect("ct").to_owned();
        let last = if ct.ends_with('0') { "1" } else { "0" };
        v["sframe"][0]["ct"] = format!("{}{last}", &ct[..ct.len() - 1]).into();
        let r = run(&v.to_string()).expect("parse");
        assert_eq!(r.sframe_failed, 1);
        assert_eq!(r.failed, 1);
    }
}

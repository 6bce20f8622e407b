//! RFC 9605 Appendix C test vectors for AES_128_GCM_SHA256_128 (see tests/vectors/rfc9605.json
//! for their source), run through the `sframe` crate's public API and, for the key schedule,
//! through HKDF-SHA256 directly.

use hkdf::Hkdf;
use serde::Deserialize;
use sframe::{
    crypto::{get_hkdf_key_expand_label, get_hkdf_salt_expand_label},
    frame::{EncryptedFrameView, MediaFrameView, SingleUseCounter},
    header::SframeHeader,
    key::{DecryptionKey, EncryptionKey},
    CipherSuite,
};
use sha2::Sha256;

const VECTORS: &str = include_str!("vectors/rfc9605.json");

#[derive(Deserialize, Clone)]
struct Vectors {
    header: Vec<HeaderVector>,
    sframe: Vec<SframeVector>,
}

#[derive(Deserialize, Clone)]
struct HeaderVector {
    kid: u64,
    ctr: u64,
    encoded: String,
}

#[derive(Deserialize, Clone)]
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

fn load() -> Vectors {
    serde_json::from_str(VECTORS).expect("vectors parse")
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
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
    eq("header encoding", &buf, &h(&v.encoded))?;
    let parsed = SframeHeader::deserialize(h(&v.encoded)).map_err(|e| e.to_string())?;
    if parsed.key_id() != v.kid || parsed.counter() != v.ctr {
        return Err("header decoding".into());
    }
    Ok(())
}

/// Checks one AES_128_GCM_SHA256_128 vector; `Err` names the first mismatch.
fn check_sframe(v: &SframeVector) -> Result<(), String> {
    if v.cipher_suite != 4 {
        return Err("not cipher suite 0x0004".into());
    }
    let suite = CipherSuite::AesGcm128Sha256;
    let base_key = h(&v.base_key);

    // Key schedule, RFC 9605 section 4.4.2.
    eq(
        "sframe_key_label",
        &get_hkdf_key_expand_label(v.kid, suite),
        &h(&v.sframe_key_label),
    )?;
    eq(
        "sframe_salt_label",
        &get_hkdf_salt_expand_label(v.kid, suite),
        &h(&v.sframe_salt_label),
    )?;
    let (prk, hk) = Hkdf::<Sha256>::extract(Some(&[]), &base_key);
    eq("sframe_secret", &prk, &h(&v.sframe_secret))?;
    let mut key = [0u8; 16];
    hk.expand(&h(&v.sframe_key_label), &mut key)
        .map_err(|e| e.to_string())?;
    eq("sframe_key", &key, &h(&v.sframe_key))?;
    let mut salt = [0u8; 12];
    hk.expand(&h(&v.sframe_salt_label), &mut salt)
        .map_err(|e| e.to_string())?;
    eq("sframe_salt", &salt, &h(&v.sframe_salt))?;

    // Nonce and AAD, RFC 9605 section 4.4.3.
    let mut nonce = salt;
    for (n, c) in nonce[4..].iter_mut().zip(v.ctr.to_be_bytes()) {
        *n ^= c;
    }
    eq("nonce", &nonce, &h(&v.nonce))?;
    let header = SframeHeader::new(v.kid, v.ctr);
    let mut aad = vec![0u8; header.len()];
    header.serialize(&mut aad).map_err(|e| e.to_string())?;
    aad.extend_from_slice(&h(&v.metadata));
    eq("aad", &aad, &h(&v.aad))?;

    // Encryption through the sframe crate with the vector's KID and CTR.
    let metadata = h(&v.metadata);
    let pt = h(&v.pt);
    let enc_key = EncryptionKey::derive_from(suite, v.kid, &base_key).map_err(|e| e.to_string())?;
    let mut counter = SingleUseCounter::new(v.ctr);
    let frame = MediaFrameView::try_with_meta_data(&mut counter, &pt, &metadata)
        .map_err(|e| e.to_string())?;
    let encrypted = frame.encrypt(&enc_key).map_err(|e| e.to_string())?;
    eq("ct", encrypted.sframe_cipher_text(), &h(&v.ct))?;

    // Decryption of the vector's ciphertext.
    let ct = h(&v.ct);
    let dec_key = DecryptionKey::derive_from(suite, v.kid, &base_key).map_err(|e| e.to_string())?;
    let view = EncryptedFrameView::try_with_meta_data(&ct, &metadata).map_err(|e| e.to_string())?;
    let decrypted = view.decrypt(&dec_key).map_err(|e| e.to_string())?;
    eq("pt", decrypted.payload(), &pt)?;
    Ok(())
}

#[test]
fn header_vectors_pass() {
    let v = load();
    assert!(v.header.len() > 100);
    for hv in &v.header {
        check_header(hv).expect("header vector");
    }
}

#[test]
fn aes_128_gcm_sha256_128_vector_passes() {
    let v = load();
    assert_eq!(v.sframe.len(), 1);
    check_sframe(&v.sframe[0]).expect("sframe vector");
}

fn flip_hex_byte(s: &str, idx: usize) -> String {
    let mut b = h(s);
    let i = idx % b.len();
    b[i] ^= 0x01;
    hex::encode(b)
}

/// Negative control: altered expectations must make the check fail.
#[test]
fn altered_vectors_fail() {
    let v = load().sframe[0].clone();
    let ct_len = h(&v.ct).len();
    for idx in [0, 5, ct_len / 2, ct_len - 1] {
        let mut bad = v.clone();
        bad.ct = flip_hex_byte(&v.ct, idx);
        assert!(
            check_sframe(&bad).is_err(),
            "flipped ct byte {idx} not detected"
        );
    }
    let mut bad = v.clone();
    bad.sframe_key = flip_hex_byte(&v.sframe_key, 3);
    assert!(check_sframe(&bad).is_err());
    let mut bad = v.clone();
    bad.pt = flip_hex_byte(&v.pt, 0);
    assert!(check_sframe(&bad).is_err());
    let mut bad = v.clone();
    bad.metadata = flip_hex_byte(&v.metadata, 0);
    assert!(check_sframe(&bad).is_err());
    let mut bad = load().header[40].clone();
    bad.encoded = flip_hex_byte(&bad.encoded, 1);
    assert!(check_header(&bad).is_err());
}

//! Continuity proofs: a device key vouching for the key that replaces it.
//!
//! A browser tab whose connection broke joins again with a new device key (keys are never
//! carried across a reconnect). For a guest a moderator let in from the lobby, that moderator's
//! client should add the returning guest again without asking, but only the same browser tab,
//! never someone the server passes off as them. So the tab's previous device key, still held by
//! its old encryption worker, signs the new key:
//!
//! ```text
//! signature = Ed25519-Sign(previous_key, "klausur-continuity-v1" || u32 len || meeting_id || new_key)
//! ```
//!
//! (integers big-endian; the new key is its 32 bytes). The moderator's client remembers the
//! device keys of the guests it added from the lobby and adds a joiner whose credential binds
//! `new_key` only if the proof verifies under one of them and the name is the same. The server
//! relays the proof and cannot make one: it never holds a device key.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

const DOMAIN: &[u8] = b"klausur-continuity-v1";

fn message(meeting_id: &str, new_key: &VerifyingKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 4 + meeting_id.len() + 32);
    m.extend_from_slice(DOMAIN);
    // Meeting ids are short; a length beyond u32 cannot occur in memory on wasm32 anyway.
    m.extend_from_slice(&(meeting_id.len() as u32).to_be_bytes());
    m.extend_from_slice(meeting_id.as_bytes());
    m.extend_from_slice(new_key.as_bytes());
    m
}

/// The previous device key's signature over `new_key` in the meeting `meeting_id`.
pub fn sign_continuity(
    previous: &SigningKey,
    meeting_id: &str,
    new_key: &VerifyingKey,
) -> [u8; 64] {
    previous.sign(&message(meeting_id, new_key)).to_bytes()
}

/// Whether `signature` is `previous`'s continuity proof for `new_key` in `meeting_id` (strict
/// Ed25519 verification: no malleable or small-order encodings).
pub fn verify_continuity(
    previous: &VerifyingKey,
    meeting_id: &str,
    new_key: &VerifyingKey,
    signature: &[u8],
) -> bool {
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    previous
        .verify_strict(&message(meeting_id, new_key), &sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_proof_verifies_only_for_its_keys_and_meeting() {
        let (old, new, other) = (key(1), key(2), key(3));
        let sig = sign_continuity(&old, "m1", &new.verifying_key());
        let verifies = |signer: &SigningKey, meeting: &str, next: &SigningKey, sig: &[u8]| {
            verify_continuity(&signer.verifying_key(), meeting, &next.verifying_key(), sig)
        };
        assert!(verifies(&old, "m1", &new, &sig));
        // Negative controls: another signer, another successor, another meeting, a changed or
        // truncated signature.
        assert!(!verifies(&other, "m1", &new, &sig));
        assert!(!verifies(&old, "m1", &other, &sig));
        assert!(!verifies(&old, "m2", &new, &sig));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!verifies(&old, "m1", &new, &bad));
        assert!(!verifies(&old, "m1", &new, &sig[..63]));
        // The new key cannot vouch for itself in the old key's name.
        let selfmade = sign_continuity(&new, "m1", &new.verifying_key());
        assert!(!verifies(&old, "m1", &new, &selfmade));
    }

    #[test]
    fn the_meeting_id_is_length_prefixed() {
        // "m1" + key vs "m" + "1"-prefixed key bytes cannot collide: the length is signed.
        assert_ne!(
            message("m1", &key(2).verifying_key()),
            message("m", &key(2).verifying_key())
        );
    }
}

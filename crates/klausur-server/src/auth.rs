//! Passwords, session and invitation tokens, login rate limiting.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults, OWASP-recommended
//! parameters). Session and invitation tokens are 256 random bits; only their SHA-256 is
//! stored, so a copy of the database does not let anyone log in or join.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Minimum length of a new password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;

pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks `password` against a stored hash; a malformed hash counts as a mismatch.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A dummy verification so that an unknown user name costs the same time as a wrong password.
pub fn burn_password_time(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("klausur-timing-equaliser").unwrap_or_default());
    let _ = verify_password(password, hash);
}

/// A new random token (256 bits, URL-safe base64 without padding).
pub fn new_token() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// A readable one-time password for the first administrator.
pub fn new_one_time_password() -> Zeroizing<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Zeroizing::new(
        bytes
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect(),
    )
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A short random id for meetings (unguessable enough to not be enumerable: 80 bits).
pub fn new_meeting_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Counts failed logins per user name and per client address in a sliding window.
#[derive(Debug)]
pub struct LoginLimiter {
    max: u32,
    window: Duration,
    failures: HashMap<String, (u32, Instant)>,
}

impl LoginLimiter {
    pub fn new(max_per_window: u32, window: Duration) -> Self {
        LoginLimiter {
            max: max_per_window,
            window,
            failures: HashMap::new(),
        }
    }

    /// Whether another attempt for these keys is allowed now.
    pub fn allowed(&mut self, now: Instant, keys: &[String]) -> bool {
        self.failures
            .retain(|_, (_, start)| now.duration_since(*start) < self.window);
        keys.iter().all(|k| {
            self.failures
                .get(k)
                .is_none_or(|(count, _)| *count < self.limit_for(k))
        })
    }

    /// Keys starting with `ip:` allow ten times as many failures: many people can share one
    /// address (an office behind NAT), while a single account is protected tightly.
    fn limit_for(&self, key: &str) -> u32 {
        if key.starts_with("ip:") {
            self.max.saturating_mul(10)
        } else {
            self.max
        }
    }

    pub fn record_failure(&mut self, now: Instant, keys: &[String]) {
        for k in keys {
            let e = self.failures.entry(k.clone()).or_insert((0, now));
            e.0 += 1;
        }
    }

    pub fn record_success(&mut self, keys: &[String]) {
        for k in keys {
            self.failures.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_roundtrip_and_mismatch() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token();
        let b = new_token();
        assert_ne!(*a, *b);
        assert_eq!(a.len(), 43); // 256 bits
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(new_meeting_id().len(), 16);
    }

    #[test]
    fn limiter_blocks_after_max_failures_and_recovers() {
        let mut l = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let keys = vec!["user:ada".to_string()];
        for _ in 0..3 {
            assert!(l.allowed(t0, &keys));
            l.record_failure(t0, &keys);
        }
        assert!(!l.allowed(t0, &keys));
        assert!(l.allowed(t0, &["user:bob".to_string()]));
        assert!(l.allowed(t0 + Duration::from_secs(61), &keys));
        let ip = vec!["ip:127.0.0.1".to_string()];
        for _ in 0..29 {
            l.record_failure(t0, &ip);
        }
        assert!(l.allowed(t0, &ip));
        l.record_failure(t0, &ip);
        assert!(!l.allowed(t0, &ip));
    }
}

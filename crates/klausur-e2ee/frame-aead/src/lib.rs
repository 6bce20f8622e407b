//! AES-128-GCM (SFrame's AES_128_GCM_SHA256_128) for klausur-e2ee's frame cipher.
//!
//! Why a crate of its own: the WebAssembly build (`crates/klausur-e2ee-wasm/build.sh`) compiles
//! the cipher crates at opt-level 3 and everything else for size. Generic code is compiled in
//! the crate that instantiates it, so AES-GCM called from klausur-e2ee would be compiled for
//! size there (about 2.5 times slower per frame), and klausur-e2ee at opt-level 3 would grow the
//! module by about 270 KB. The non-generic, never-inlined functions here instantiate AES-GCM in
//! this crate, which build.sh compiles for speed.

use aes_gcm::{
    aead::{AeadInOut, KeyInit, Tag},
    Aes128Gcm,
};

/// Key length (`Nk`).
pub const KEY_LEN: usize = 16;
/// Nonce length (`Nn`).
pub const NONCE_LEN: usize = 12;
/// Tag length (`Nt`).
pub const TAG_LEN: usize = 16;

/// AES-128-GCM with its key schedule made once. Zeroized on drop.
#[derive(Clone)]
pub struct FrameAead(Aes128Gcm);

impl std::fmt::Debug for FrameAead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameAead")
    }
}

/// Authentication failed (or the input was too long for AES-GCM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

impl FrameAead {
    /// The cipher of `key`.
    #[inline(never)]
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self(Aes128Gcm::new(&(*key).into()))
    }

    /// Encrypts `buf` in place; returns the tag.
    #[inline(never)]
    pub fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        let tag = self
            .0
            .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
            .map_err(|_| AeadError)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts `buf` in place if `tag` authenticates it with `aad`; on error `buf` holds no
    /// plaintext that may be used.
    #[inline(never)]
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        let tag = Tag::<Aes128Gcm>::from(*tag);
        self.0
            .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &tag)
            .map_err(|_| AeadError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_a_changed_byte() {
        let a = FrameAead::new(&[7; KEY_LEN]);
        let mut buf = *b"frame payload";
        let tag = a.seal(&[1; NONCE_LEN], b"aad", &mut buf).expect("seal");
        assert_ne!(&buf, b"frame payload");
        let sealed = buf;
        a.open(&[1; NONCE_LEN], b"aad", &mut buf, &tag)
            .expect("open");
        assert_eq!(&buf, b"frame payload");
        let mut bad = sealed;
        bad[0] ^= 1;
        assert_eq!(
            a.open(&[1; NONCE_LEN], b"aad", &mut bad, &tag),
            Err(AeadError)
        );
        let mut again = sealed;
        assert_eq!(
            a.open(&[1; NONCE_LEN], b"AAD", &mut again, &tag),
            Err(AeadError)
        );
    }
}

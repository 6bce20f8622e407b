//! SFrame (RFC 9605) media frame protection with keys from MLS (RFC 9605 section 5.2).
//!
//! # Keys
//!
//! Per MLS epoch every member exports `base_key = MLS-Exporter("SFrame 1.0 Base Key", "", 16)`
//! (16 = `Nk` of AES_128_GCM_SHA256_128). Each (sender, stream) gets its own key id (KID), and
//! RFC 9605 section 4.4.2 derives `sframe_key`/`sframe_salt` from `base_key` with the KID in the
//! HKDF labels, so every sender and every stream of a sender has distinct keys and nonces.
//!
//! # Key id layout
//!
//! `KID = (stream << (S + E)) | (leaf_index << E) | (epoch mod 2^E)` with `E = 4`
//! ([`EPOCH_BITS`]) and `S = 12` ([`INDEX_BITS`]), i.e. RFC 9605 section 5.2's
//! `context_id` is the [`StreamId`]:
//!
//! ```text
//!  bits 63..16        15..4              3..0
//! +-----------------+------------------+---------------+
//! | stream (48 bit) | MLS leaf (12 bit)| epoch (4 bit) |
//! +-----------------+------------------+---------------+
//! ```
//!
//! Groups may therefore have at most 4096 leaves. With `E = 4` a receiver can tell apart 16
//! consecutive epochs; it never holds more than the current epoch and
//! [`MAX_PREVIOUS_EPOCHS`] previous ones, so the 4 low bits are unambiguous. Audio of leaf 0..15
//! fits a 1-byte KID.
//!
//! # Frame layout
//!
//! ```text
//! clear_header (0..=255 bytes) || SFrame header || ciphertext || tag (16) || u8 len(clear_header)
//! ```
//!
//! The clear header bytes (the codec header the RTP packetizer needs) are SFrame metadata:
//! authenticated as AAD (`aad = sframe_header || clear_header`), not encrypted. The trailing
//! length byte is not covered by the tag, but changing it moves the split between metadata and
//! SFrame header, so authentication then fails.
//!
//! # Grace period
//!
//! When a new epoch is installed, the previous epoch's receive keys stay usable for
//! `grace` (default 5 s, [`DEFAULT_GRACE`]) so frames in flight still decrypt; after
//! `installed_at + grace` they are dropped (zeroized). Sending always uses the newest epoch.
//!
//! # Limits
//!
//! All members share one base key per epoch, so SFrame does not authenticate *which member*
//! sent a frame: a malicious member could send under another member's KID. No replay window is
//! kept (a replayed frame decrypts again).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use sframe::{
    frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter},
    header::SframeHeader,
    key::{DecryptionKey, EncryptionKey},
    CipherSuite,
};
use zeroize::Zeroizing;

use crate::error::FrameError;

/// SFrame cipher suite used: AES_128_GCM_SHA256_128 (0x0004).
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
/// Length of the exported base key (`Nk`).
pub const BASE_KEY_LEN: usize = 16;
/// MLS exporter label for the base key (RFC 9605 section 5.2).
pub const BASE_KEY_LABEL: &str = "SFrame 1.0 Base Key";
/// `E`: low epoch bits in the KID.
pub const EPOCH_BITS: u32 = 4;
/// `S`: leaf index bits in the KID.
pub const INDEX_BITS: u32 = 12;
/// Maximum number of previous epochs whose receive keys are kept during their grace period.
pub const MAX_PREVIOUS_EPOCHS: usize = 3;
/// Default grace period for previous-epoch receive keys.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

const STREAM_BITS: u32 = 64 - INDEX_BITS - EPOCH_BITS;
const MAX_CLEAR_HEADER: usize = 255;

/// Identifies one media stream of a sender (the KID's context id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// Microphone audio.
    pub const AUDIO: Self = Self(0);
    /// Camera video.
    pub const CAMERA: Self = Self(1);
    /// Screen share video.
    pub const SCREEN: Self = Self(2);
}

/// The three fields of a KID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyIdParts {
    /// Stream (context id).
    pub stream: StreamId,
    /// Sender's MLS leaf index.
    pub leaf_index: u32,
    /// Low [`EPOCH_BITS`] of the MLS epoch.
    pub epoch_low: u8,
}

/// Builds a KID; fails if the stream or leaf index does not fit.
pub fn encode_kid(stream: StreamId, leaf_index: u32, epoch: u64) -> Result<u64, FrameError> {
    if stream.0 >> STREAM_BITS != 0 {
        return Err(FrameError::KeyIdOverflow("stream id"));
    }
    if u64::from(leaf_index) >> INDEX_BITS != 0 {
        return Err(FrameError::KeyIdOverflow("leaf index"));
    }
    let epoch_mask = (1u64 << EPOCH_BITS) - 1;
    Ok((stream.0 << (INDEX_BITS + EPOCH_BITS))
        | (u64::from(leaf_index) << EPOCH_BITS)
        | (epoch & epoch_mask))
}

/// Splits a KID into its fields.
pub fn decode_kid(kid: u64) -> KeyIdParts {
    let index_mask = (1u64 << INDEX_BITS) - 1;
    let epoch_mask = (1u64 << EPOCH_BITS) - 1;
    KeyIdParts {
        stream: StreamId(kid >> (INDEX_BITS + EPOCH_BITS)),
        // Masked to 12 bits, always fits.
        leaf_index: ((kid >> EPOCH_BITS) & index_mask) as u32,
        epoch_low: (kid & epoch_mask) as u8,
    }
}

/// A successfully decrypted frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptedFrame {
    /// Sender's MLS leaf index (as claimed by the KID; see the module's limits).
    pub sender: u32,
    /// Stream of the sender.
    pub stream: StreamId,
    /// MLS epoch the frame was encrypted in.
    pub epoch: u64,
    /// The authenticated clear header bytes.
    pub clear_header: Vec<u8>,
    /// The decrypted payload.
    pub payload: Vec<u8>,
}

struct EpochKeys {
    epoch: u64,
    base_key: Zeroizing<Vec<u8>>,
    members: HashSet<u32>,
    recv: HashMap<u64, DecryptionKey>,
    /// `None` for the current epoch; for previous ones, when they are dropped.
    expires_at: Option<Duration>,
}

struct SendStream {
    key: EncryptionKey,
    counter: MonotonicCounter,
}

/// Per-epoch SFrame contexts of one member: sending keys of the current epoch and receive keys
/// of the current and (for a grace period) previous epochs. Sans-IO: time is an argument.
pub struct FrameCrypto {
    grace: Duration,
    own_leaf: Option<u32>,
    current: Option<EpochKeys>,
    previous: VecDeque<EpochKeys>,
    send: HashMap<StreamId, SendStream>,
}

impl Default for FrameCrypto {
    fn default() -> Self {
        Self::new(DEFAULT_GRACE)
    }
}

impl std::fmt::Debug for FrameCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCrypto")
            .field("grace", &self.grace)
            .field("own_leaf", &self.own_leaf)
            .field("epoch", &self.current.as_ref().map(|e| e.epoch))
            .field(
                "previous_epochs",
                &self.previous.iter().map(|e| e.epoch).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl FrameCrypto {
    /// Empty context with the given grace period for previous-epoch receive keys.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            own_leaf: None,
            current: None,
            previous: VecDeque::new(),
            send: HashMap::new(),
        }
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Installs the keys of a new epoch at `now`. `base_key` is the MLS exporter output,
    /// `members` the leaf indices of the epoch's roster, `own_leaf` this member's leaf.
    /// The former current epoch stays decryptable until `now + grace`.
    pub fn install_epoch(
        &mut self,
        epoch: u64,
        base_key: Zeroizing<Vec<u8>>,
        own_leaf: u32,
        members: impl IntoIterator<Item = u32>,
        now: Duration,
    ) {
        self.handle_timeout(now);
        if let Some(mut old) = self.current.take() {
            old.expires_at = Some(now.saturating_add(self.grace));
            self.previous.push_back(old);
            while self.previous.len() > MAX_PREVIOUS_EPOCHS {
                self.previous.pop_front();
            }
        }
        // Never keep two contexts whose low epoch bits collide.
        let mask = (1u64 << EPOCH_BITS) - 1;
        self.previous.retain(|p| p.epoch & mask != epoch & mask);
        self.send.clear();
        self.own_leaf = Some(own_leaf);
        self.current = Some(EpochKeys {
            epoch,
            base_key,
            members: members.into_iter().collect(),
            recv: HashMap::new(),
            expires_at: None,
        });
    }

    /// Drops every key immediately (e.g. after being removed from the group).
    pub fn clear(&mut self) {
        self.current = None;
        self.previous.clear();
        self.send.clear();
        self.own_leaf = None;
    }

    /// Current epoch, if any keys are installed.
    pub fn epoch(&self) -> Option<u64> {
        self.current.as_ref().map(|e| e.epoch)
    }

    /// Epochs whose receive keys are currently held (current first).
    pub fn held_epochs(&self) -> Vec<u64> {
        self.current
            .iter()
            .chain(self.previous.iter().rev())
            .map(|e| e.epoch)
            .collect()
    }

    /// When [`Self::handle_timeout`] next has something to drop.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.previous.iter().filter_map(|e| e.expires_at).min()
    }

    /// Drops previous-epoch keys whose grace period ended at or before `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.previous
            .retain(|e| e.expires_at.is_some_and(|t| now < t));
    }

    /// Encrypts one frame of `stream` with the current epoch's key.
    pub fn encrypt(
        &mut self,
        stream: StreamId,
        clear_header: &[u8],
        payload: &[u8],
    ) -> Result<Vec<u8>, FrameError> {
        if clear_header.len() > MAX_CLEAR_HEADER {
            return Err(FrameError::ClearHeaderTooLong(clear_header.len()));
        }
        let current = self.current.as_ref().ok_or(FrameError::NoKeys)?;
        let own_leaf = self.own_leaf.ok_or(FrameError::NoKeys)?;
        let send = match self.send.entry(stream) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let kid = encode_kid(stream, own_leaf, current.epoch)?;
                let key = EncryptionKey::derive_from(CIPHER_SUITE, kid, &*current.base_key)
                    .map_err(|e| FrameError::Internal(e.to_string()))?;
                v.insert(SendStream {
                    key,
                    counter: MonotonicCounter::default(),
                })
            }
        };
        let media = MediaFrameView::try_with_meta_data(&mut send.counter, &payload, &clear_header)
            .map_err(|_| FrameError::CounterExhausted)?;
        let encrypted = media
            .encrypt(&send.key)
            .map_err(|e| FrameError::Internal(e.to_string()))?;
        let sframe = encrypted.sframe_cipher_text();
        let mut out = Vec::with_capacity(clear_header.len() + sframe.len() + 1);
        out.extend_from_slice(clear_header);
        out.extend_from_slice(sframe);
        // Checked above: at most 255.
        out.push(clear_header.len() as u8);
        Ok(out)
    }

    /// Decrypts one frame at time `now`. Previous-epoch keys past their grace period are dropped
    /// first. Never panics on any input.
    pub fn decrypt(&mut self, frame: &[u8], now: Duration) -> Result<DecryptedFrame, FrameError> {
        self.handle_timeout(now);
        let (&clear_len, rest) = frame.split_last().ok_or(FrameError::Malformed)?;
        let clear_len = usize::from(clear_len);
        if rest.len() < clear_len {
            return Err(FrameError::Malformed);
        }
        let (clear_header, sframe_bytes) = rest.split_at(clear_len);
        let header = SframeHeader::deserialize(sframe_bytes).map_err(|_| FrameError::Malformed)?;
        let kid = header.key_id();
        let parts = decode_kid(kid);
        let mask = (1u64 << EPOCH_BITS) - 1;
        let ctx = self
            .current
            .iter_mut()
            .chain(self.previous.iter_mut())
            .find(|e| e.epoch & mask == u64::from(parts.epoch_low))
            .ok_or(FrameError::UnknownKey(kid))?;
        if !ctx.members.contains(&parts.leaf_index) {
            return Err(FrameError::UnknownKey(kid));
        }
        let view = EncryptedFrameView::try_with_meta_data(sframe_bytes, clear_header)
            .map_err(|_| FrameError::Malformed)?;
        let derived;
        let key = match ctx.recv.get(&kid) {
            Some(k) => k,
            None => {
                derived = DecryptionKey::derive_from(CIPHER_SUITE, kid, &*ctx.base_key)
                    .map_err(|e| FrameError::Internal(e.to_string()))?;
                &derived
            }
        };
        let media = view.decrypt(key).map_err(|_| FrameError::Authentication)?;
        let out = DecryptedFrame {
            sender: parts.leaf_index,
            stream: parts.stream,
            epoch: ctx.epoch,
            clear_header: media.meta_data().to_vec(),
            payload: media.payload().to_vec(),
        };
        if !ctx.recv.contains_key(&kid) {
            // Only keys of authenticated frames are cached, so forged KIDs cannot grow the map.
            let k = DecryptionKey::derive_from(CIPHER_SUITE, kid, &*ctx.base_key)
                .map_err(|e| FrameError::Internal(e.to_string()))?;
            ctx.recv.insert(kid, k);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_roundtrip() {
        let kid = encode_kid(StreamId::SCREEN, 4095, 0x1234_5677).expect("fits");
        let p = decode_kid(kid);
        assert_eq!(p.stream, StreamId::SCREEN);
        assert_eq!(p.leaf_index, 4095);
        assert_eq!(p.epoch_low, 7);
        assert_eq!(encode_kid(StreamId::AUDIO, 3, 5).expect("fits"), 0x35);
        assert!(encode_kid(StreamId::AUDIO, 4096, 0).is_err());
        assert!(encode_kid(StreamId(1 << 48), 0, 0).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut fc = FrameCrypto::default();
        fc.install_epoch(1, Zeroizing::new(vec![1; 16]), 0, [0, 1], Duration::ZERO);
        for len in 0..64usize {
            for fill in [0u8, 0xff, 0x10, 0x80] {
                let buf = vec![fill; len];
                let _ = fc.decrypt(&buf, Duration::ZERO);
            }
        }
        let f = fc.encrypt(StreamId::AUDIO, b"hd", b"payload").expect("enc");
        let d = fc.decrypt(&f, Duration::ZERO).expect("dec");
        assert_eq!(d.payload, b"payload");
        assert_eq!(d.clear_header, b"hd");
    }
}

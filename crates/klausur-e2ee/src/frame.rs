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
//! # Replay window
//!
//! Each epoch's receive context keeps one sliding window of frame counters per KID, i.e. per
//! sender and stream, and per *receive context* the caller names ([`FrameCrypto::decrypt_in`]:
//! the browser's receiver transform, i.e. the track the frame came in on; [`FrameCrypto::decrypt`]
//! uses one context for everything) (RFC 9605 section 9.3; `sframe`'s
//! `ReplayAttackProtectionStore`, which screens the header before decryption and records the
//! counter only once the frame authenticated, so forged headers cannot move a window). A frame whose counter was already
//! accepted ([`FrameError::Replayed`]), or that lies [`REPLAY_WINDOW`] or more counters behind
//! the newest one accepted for its KID ([`FrameError::TooOld`]), is refused and counted
//! ([`FrameCrypto::replays_dropped`]); a frame that arrives late but inside the window
//! decrypts. A sender's counter starts at 0 in every epoch, and every epoch has its own
//! windows, which go with its keys.
//!
//! [`REPLAY_WINDOW`] is 1024 frames: a frame completed late by a NACK retransmission, a video
//! burst, or simulcast layers interleaving on one counter lag the newest frame by tens of
//! counters at most (60 frames per second times a one-second repair), so real reordering is
//! never dropped; a frame 1024 counters old (17 s of 60 fps video, 20 s of audio) is no longer
//! playable anyway. Each window costs 128 bytes.
//!
//! Why per receive context: every member can make frames under every other member's KID (see
//! "Limits"). With one window per KID for all tracks, a member could send, on its own track,
//! one frame under another member's KID with a counter far ahead, and every receiver would
//! then drop that member's genuine frames as too old until the next epoch. Per context, frames
//! on one track cannot move the windows of another. What this gives up: the media server,
//! which routes every track, could play a frame once more on another track, which its routing
//! lets it do with the original anyway.
//!
//! # Key material for an outside cipher
//!
//! The browser encrypts frames with its own AES-GCM (WebCrypto) instead of this crate's
//! software AES. The key schedule, the frame counters, the replay windows and the membership
//! check stay here; the caller gets only what the cipher needs, per KID
//! ([`FrameCrypto::send_key`], [`FrameCrypto::receive_key`]: `sframe_key` and `sframe_salt`),
//! and asks per frame:
//!
//! - sending: [`FrameCrypto::reserve_counter`] hands out the next counter of the stream's one
//!   counter (the same one [`FrameCrypto::encrypt`] uses), only for the current epoch's keys
//!   (named by their [`FrameKeyMaterial::generation`], unique per installed epoch, so not even a
//!   group left and joined again with the same epoch number matches), so a counter is never
//!   used twice under one key, whichever cipher encrypts;
//! - receiving: [`FrameCrypto::screen_frame`] before decrypting (the KID's epoch is held, its
//!   leaf is in that epoch's roster, the replay window of the receive context does not refuse
//!   the counter) and [`FrameCrypto::accept_frame`] once the frame authenticated (the same
//!   checks again, then the counter is recorded), exactly as [`FrameCrypto::decrypt_in`] screens
//!   and records.
//!
//! The caller builds the SFrame header, nonce (`sframe_salt XOR counter`) and AAD
//! (`sframe_header || clear_header`) itself (RFC 9605 section 4.4.3); the wire format is the
//! same. Counters and KIDs handed out this way stay below 2^53 ([`MAX_OUTSIDE_VALUE`]) so they
//! are exact JavaScript numbers.
//!
//! # Limits
//!
//! All members share one base key per epoch, so SFrame does not authenticate *which member*
//! sent a frame: every member can derive every other member's keys, so a malicious member can
//! send under another member's KID (RFC 9605 section 9; docs/e2ee.md, "What a member can
//! do"). The replay window stops a replay of frames already received, not such a
//! forgery.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use klausur_frame_aead::FrameAead;
use sframe::{
    frame::{
        validation::{
            FrameValidation, ReplayAttackProtectionError, ReplayAttackProtectionStore, Tolerance,
            UnvalidatedFrame,
        },
        FrameCounter, MonotonicCounter,
    },
    header::SframeHeader,
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
/// How many frame counters behind the newest accepted one a frame of the same KID may be and
/// still be accepted (once); see the module docs, "Replay window".
pub const REPLAY_WINDOW: usize = 1024;

/// The largest counter or KID handed to an outside cipher ([`FrameCrypto::reserve_counter`] and
/// friends): 2^53 - 1, the largest integer a JavaScript number holds exactly.
pub const MAX_OUTSIDE_VALUE: u64 = (1 << 53) - 1;
/// Length of `sframe_key` of AES_128_GCM_SHA256_128.
pub const KEY_LEN: usize = 16;
/// Length of `sframe_salt` (`Nn`).
pub const SALT_LEN: usize = 12;

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

/// One KID's key material for an outside frame cipher (see the module docs, "Key material for
/// an outside cipher"). Zeroized on drop.
pub struct FrameKeyMaterial {
    /// The full MLS epoch the key belongs to.
    pub epoch: u64,
    /// Which installation of that epoch's keys this is (unique in the process, never reused,
    /// also not across [`FrameCrypto`] instances): a cache of key material keyed by it can
    /// never hold a key of an earlier group that had the same epoch number.
    pub generation: u64,
    /// The KID.
    pub kid: u64,
    /// `sframe_key` (RFC 9605 section 4.4.2).
    pub key: Zeroizing<[u8; KEY_LEN]>,
    /// `sframe_salt`.
    pub salt: Zeroizing<[u8; SALT_LEN]>,
}

impl std::fmt::Debug for FrameKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameKeyMaterial")
            .field("epoch", &self.epoch)
            .field("generation", &self.generation)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// `sframe_key` and `sframe_salt` of `kid` from an epoch's `base_key` (RFC 9605 section 4.4.2,
/// cipher suite AES_128_GCM_SHA256_128): the same keys the `sframe` crate derives.
pub fn derive_key_material(
    kid: u64,
    base_key: &[u8],
) -> (Zeroizing<[u8; KEY_LEN]>, Zeroizing<[u8; SALT_LEN]>) {
    let (_, hk) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(&[]), base_key);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let mut salt = Zeroizing::new([0u8; SALT_LEN]);
    // 16 and 12 bytes are far below HKDF-SHA256's limit of 255 * 32: expand cannot fail.
    let _ = hk.expand(
        &sframe::crypto::get_hkdf_key_expand_label(kid, CIPHER_SUITE),
        key.as_mut_slice(),
    );
    let _ = hk.expand(
        &sframe::crypto::get_hkdf_salt_expand_label(kid, CIPHER_SUITE),
        salt.as_mut_slice(),
    );
    (key, salt)
}

fn replay_error(
    e: ReplayAttackProtectionError,
    kid: u64,
    counter: u64,
    dropped: &mut u64,
) -> FrameError {
    match e {
        ReplayAttackProtectionError::DuplicatedFrame { .. } => {
            *dropped += 1;
            FrameError::Replayed { kid, counter }
        }
        ReplayAttackProtectionError::CounterTooOld { .. } => {
            *dropped += 1;
            FrameError::TooOld { kid, counter }
        }
        // A store tracks each KID with its own window: no mismatch can occur.
        ReplayAttackProtectionError::KeyIdMismatch { .. } => FrameError::Authentication,
    }
}

/// Source of [`EpochKeys::generation`]: unique per installed epoch in the whole process.
static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What [`FrameCrypto::decrypt_joined`] tells besides the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptedMeta {
    /// Sender's MLS leaf index (as claimed by the KID; see the module's limits).
    pub sender: u32,
    /// Stream of the sender.
    pub stream: StreamId,
    /// MLS epoch the frame was encrypted in.
    pub epoch: u64,
    /// Length of the authenticated clear header at the start of the frame.
    pub clear_len: usize,
}

struct EpochKeys {
    epoch: u64,
    /// Unique per installation (see [`FrameKeyMaterial::generation`]).
    generation: u64,
    base_key: Zeroizing<Vec<u8>>,
    members: HashSet<u32>,
    recv: HashMap<u64, (FrameAead, Zeroizing<[u8; SALT_LEN]>)>,
    /// Per receive context, one replay window per KID that delivered an authentic frame in
    /// this epoch. Contexts are named by the local caller, never by a peer.
    replay: HashMap<u64, ReplayAttackProtectionStore>,
    /// `None` for the current epoch; for previous ones, when they are dropped.
    expires_at: Option<Duration>,
}

struct SendStream {
    kid: u64,
    /// AES-128-GCM with this KID's `sframe_key`, its key schedule made once per epoch.
    cipher: FrameAead,
    salt: Zeroizing<[u8; SALT_LEN]>,
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
    /// Frames refused by a replay window so far.
    replays_dropped: u64,
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
            replays_dropped: 0,
        }
    }

    /// How many frames a replay window refused so far ([`FrameError::Replayed`] and
    /// [`FrameError::TooOld`]), for diagnostics.
    pub fn replays_dropped(&self) -> u64 {
        self.replays_dropped
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
            generation: NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            base_key,
            members: members.into_iter().collect(),
            recv: HashMap::new(),
            replay: HashMap::new(),
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
        let send = self.send_stream(stream)?;
        let counter = send
            .counter
            .try_next()
            .map_err(|_| FrameError::CounterExhausted)?;
        seal(
            &send.cipher,
            &send.salt,
            send.kid,
            counter,
            clear_header,
            payload,
        )
    }

    /// The current epoch's send context of `stream`, created on first use.
    fn send_stream(&mut self, stream: StreamId) -> Result<&mut SendStream, FrameError> {
        let current = self.current.as_ref().ok_or(FrameError::NoKeys)?;
        let own_leaf = self.own_leaf.ok_or(FrameError::NoKeys)?;
        Ok(match self.send.entry(stream) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let kid = encode_kid(stream, own_leaf, current.epoch)?;
                let (cipher, salt) = frame_cipher(kid, &current.base_key);
                v.insert(SendStream {
                    kid,
                    cipher,
                    salt,
                    counter: MonotonicCounter::default(),
                })
            }
        })
    }

    /// The current epoch's key material for sending on `stream` with an outside cipher (module
    /// docs, "Key material for an outside cipher"). Every frame's counter then comes from
    /// [`Self::reserve_counter`]. A new epoch makes it stale.
    pub fn send_key(&mut self, stream: StreamId) -> Result<FrameKeyMaterial, FrameError> {
        let kid = self.send_stream(stream)?.kid;
        let current = self.current.as_ref().ok_or(FrameError::NoKeys)?;
        let (key, salt) = derive_key_material(kid, &current.base_key);
        Ok(FrameKeyMaterial {
            epoch: current.epoch,
            generation: current.generation,
            kid,
            key,
            salt,
        })
    }

    /// The next frame counter of `stream` for a frame an outside cipher encrypts with the key
    /// of [`Self::send_key`] of `generation`. Fails ([`FrameError::NoKeys`]) if those keys are
    /// no longer the current epoch's: the caller then gets the new key. The counter is the one
    /// [`Self::encrypt`] uses, so no counter is ever used twice under one key.
    pub fn reserve_counter(
        &mut self,
        stream: StreamId,
        generation: u64,
    ) -> Result<u64, FrameError> {
        if self.current.as_ref().map(|c| c.generation) != Some(generation) {
            return Err(FrameError::NoKeys);
        }
        let send = self.send_stream(stream)?;
        if send.counter.current() > MAX_OUTSIDE_VALUE {
            return Err(FrameError::CounterExhausted);
        }
        send.counter
            .try_next()
            .map_err(|_| FrameError::CounterExhausted)
    }

    /// The held epoch context for `kid` whose roster has the KID's leaf, after dropping
    /// expired epochs at `now`.
    fn receive_context(&mut self, kid: u64, now: Duration) -> Result<&mut EpochKeys, FrameError> {
        self.handle_timeout(now);
        epoch_for(&mut self.current, &mut self.previous, kid)
    }

    /// Key material to decrypt frames of `kid` with an outside cipher, if `kid`'s epoch is
    /// held at `now` and its leaf is in that epoch's roster ([`FrameError::UnknownKey`]
    /// otherwise). Valid while [`Self::screen_frame`] returns its generation for the KID.
    pub fn receive_key(&mut self, kid: u64, now: Duration) -> Result<FrameKeyMaterial, FrameError> {
        let ctx = self.receive_context(kid, now)?;
        let (key, salt) = derive_key_material(kid, &ctx.base_key);
        Ok(FrameKeyMaterial {
            epoch: ctx.epoch,
            generation: ctx.generation,
            kid,
            key,
            salt,
        })
    }

    /// Before an outside cipher decrypts a frame with header (`kid`, `counter`) that came in on
    /// receive context `context`: checks as [`Self::decrypt_in`] does before decrypting (the
    /// KID's epoch is held at `now`, its leaf is in that epoch's roster, the context's replay
    /// window does not refuse the counter) and returns the generation
    /// ([`FrameKeyMaterial::generation`]) whose key to use. Records nothing.
    pub fn screen_frame(
        &mut self,
        context: u64,
        kid: u64,
        counter: u64,
        now: Duration,
    ) -> Result<u64, FrameError> {
        let ctx = self.receive_context(kid, now)?;
        let generation = ctx.generation;
        let screened = match ctx.replay.get(&context) {
            Some(w) => w
                .screen(UnvalidatedFrame::new(&SframeHeader::new(kid, counter), &[]))
                .map(|_| ()),
            None => Ok(()),
        };
        screened.map_err(|e| replay_error(e, kid, counter, &mut self.replays_dropped))?;
        Ok(generation)
    }

    /// After an outside cipher authenticated a frame (`kid`, `counter`) of context `context`
    /// with the key of `generation`: the same checks as [`Self::screen_frame`] (now also that
    /// the KID still means those keys), then the counter is recorded in the replay window. An
    /// error means: drop the frame.
    pub fn accept_frame(
        &mut self,
        context: u64,
        kid: u64,
        generation: u64,
        counter: u64,
        now: Duration,
    ) -> Result<(), FrameError> {
        let ctx = self.receive_context(kid, now)?;
        if ctx.generation != generation {
            return Err(FrameError::UnknownKey(kid));
        }
        let window = ctx
            .replay
            .entry(context)
            .or_insert_with(|| ReplayAttackProtectionStore::new(Tolerance::new(REPLAY_WINDOW)));
        match window.screen(UnvalidatedFrame::new(&SframeHeader::new(kid, counter), &[])) {
            Ok(token) => {
                window.record(token);
                Ok(())
            }
            Err(e) => Err(replay_error(e, kid, counter, &mut self.replays_dropped)),
        }
    }

    /// Decrypts one frame at time `now`, with one replay window per KID for all frames (see
    /// [`Self::decrypt_in`]).
    pub fn decrypt(&mut self, frame: &[u8], now: Duration) -> Result<DecryptedFrame, FrameError> {
        self.decrypt_in(0, frame, now)
    }

    /// Decrypts one frame that came in on receive context `context` (the caller's name for the
    /// track or transform it came in on) at time `now`. Previous-epoch keys past their grace
    /// period are dropped first. A frame the replay window of its KID in this context refuses
    /// is an error ([`FrameError::Replayed`], [`FrameError::TooOld`]) and counted. Never panics
    /// on any input.
    pub fn decrypt_in(
        &mut self,
        context: u64,
        frame: &[u8],
        now: Duration,
    ) -> Result<DecryptedFrame, FrameError> {
        let (meta, mut data) = self.decrypt_joined(context, frame, now)?;
        let payload = data.split_off(meta.clear_len);
        Ok(DecryptedFrame {
            sender: meta.sender,
            stream: meta.stream,
            epoch: meta.epoch,
            clear_header: data,
            payload,
        })
    }

    /// [`Self::decrypt_in`] with the clear header and the payload in one buffer, as the frame
    /// was before encryption (what the browser passes on: one copy less).
    pub fn decrypt_joined(
        &mut self,
        context: u64,
        frame: &[u8],
        now: Duration,
    ) -> Result<(DecryptedMeta, Vec<u8>), FrameError> {
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
        // The epochs are borrowed apart from the replay counter, which an error below counts.
        let ctx = epoch_for(&mut self.current, &mut self.previous, kid)?;
        let header_len = header_len(sframe_bytes).ok_or(FrameError::Malformed)?;
        let (header_bytes, sealed) = sframe_bytes.split_at(header_len);
        if sealed.len() < TAG_LEN {
            return Err(FrameError::Malformed);
        }
        let counter = header.counter();
        let window = ctx
            .replay
            .entry(context)
            // REPLAY_WINDOW is a constant within Tolerance's range (1 ..= 2^63 - 1).
            .or_insert_with(|| ReplayAttackProtectionStore::new(Tolerance::new(REPLAY_WINDOW)));
        // Screened before decryption, recorded only once the frame authenticated, so forged
        // headers cannot move the window.
        let token = window
            .screen(UnvalidatedFrame::new(&header, clear_header))
            .map_err(|e| replay_error(e, kid, counter, &mut self.replays_dropped))?;
        let derived;
        let (cipher, salt) = match ctx.recv.get(&kid) {
            Some((c, s)) => (c, s),
            None => {
                derived = frame_cipher(kid, &ctx.base_key);
                (&derived.0, &derived.1)
            }
        };
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut aad = Vec::with_capacity(header_len + clear_header.len());
        aad.extend_from_slice(header_bytes);
        aad.extend_from_slice(clear_header);
        let clear_len = clear_header.len();
        let mut data = Vec::with_capacity(clear_len + ciphertext.len());
        data.extend_from_slice(clear_header);
        data.extend_from_slice(ciphertext);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| FrameError::Malformed)?;
        cipher
            .open(&nonce(salt, counter), &aad, &mut data[clear_len..], tag)
            .map_err(|_| FrameError::Authentication)?;
        window.record(token);
        if !ctx.recv.contains_key(&kid) {
            // Only keys of authenticated frames are cached, so forged KIDs cannot grow the map.
            ctx.recv.insert(kid, frame_cipher(kid, &ctx.base_key));
        }
        Ok((
            DecryptedMeta {
                sender: parts.leaf_index,
                stream: parts.stream,
                epoch: ctx.epoch,
                clear_len,
            },
            data,
        ))
    }
}

use klausur_frame_aead::TAG_LEN;

/// Of the held epochs (`current`, then `previous`), the one whose low epoch bits `kid` names,
/// if its roster has the KID's leaf ([`FrameError::UnknownKey`] otherwise). A free function over
/// the two fields, so callers can hold the result while using the rest of [`FrameCrypto`].
fn epoch_for<'a>(
    current: &'a mut Option<EpochKeys>,
    previous: &'a mut VecDeque<EpochKeys>,
    kid: u64,
) -> Result<&'a mut EpochKeys, FrameError> {
    let parts = decode_kid(kid);
    let mask = (1u64 << EPOCH_BITS) - 1;
    let ctx = current
        .iter_mut()
        .chain(previous.iter_mut())
        .find(|e| e.epoch & mask == u64::from(parts.epoch_low))
        .ok_or(FrameError::UnknownKey(kid))?;
    if !ctx.members.contains(&parts.leaf_index) {
        return Err(FrameError::UnknownKey(kid));
    }
    Ok(ctx)
}

/// The length of the SFrame header at the start of `bytes` as its config byte says (RFC 9605
/// section 4.3), or `None` if `bytes` is shorter.
fn header_len(bytes: &[u8]) -> Option<usize> {
    let cfg = *bytes.first()?;
    let k = if cfg & 0x80 != 0 {
        usize::from((cfg >> 4) & 7) + 1
    } else {
        0
    };
    let c = if cfg & 0x08 != 0 {
        usize::from(cfg & 7) + 1
    } else {
        0
    };
    let len = 1 + k + c;
    (bytes.len() >= len).then_some(len)
}

/// The AES-GCM nonce: `sframe_salt` XOR the counter, big-endian (RFC 9605 section 4.4.3).
fn nonce(salt: &[u8; SALT_LEN], counter: u64) -> [u8; SALT_LEN] {
    let mut n = *salt;
    for (b, c) in n[SALT_LEN - 8..].iter_mut().zip(counter.to_be_bytes()) {
        *b ^= c;
    }
    n
}

/// The cipher (key schedule done once) and salt of `kid` in an epoch with `base_key`.
fn frame_cipher(kid: u64, base_key: &[u8]) -> (FrameAead, Zeroizing<[u8; SALT_LEN]>) {
    let (key, salt) = derive_key_material(kid, base_key);
    (FrameAead::new(&key), salt)
}

/// One protected frame: `clear_header || SFrame header || ciphertext || tag || u8
/// len(clear_header)` with AAD `SFrame header || clear_header` (RFC 9605 section 4.4.3). The
/// clear header is at most 255 bytes (checked by the callers).
pub(crate) fn seal(
    cipher: &FrameAead,
    salt: &[u8; SALT_LEN],
    kid: u64,
    counter: u64,
    clear_header: &[u8],
    payload: &[u8],
) -> Result<Vec<u8>, FrameError> {
    let header = SframeHeader::new(kid, counter);
    let hl = header.len();
    let cl = clear_header.len();
    let mut out = Vec::with_capacity(cl + hl + payload.len() + TAG_LEN + 1);
    out.extend_from_slice(clear_header);
    out.resize(cl + hl, 0);
    // The buffer has exactly the header's length: serializing cannot fail.
    let _ = header.serialize(&mut out[cl..]);
    let mut aad = Vec::with_capacity(hl + cl);
    aad.extend_from_slice(&out[cl..]);
    aad.extend_from_slice(clear_header);
    out.extend_from_slice(payload);
    // AES-GCM refuses only plaintexts over 2^36 bytes; frames are far smaller.
    let tag = cipher
        .seal(&nonce(salt, counter), &aad, &mut out[cl + hl..])
        .map_err(|_| FrameError::Internal("AES-GCM refused the frame".into()))?;
    out.extend_from_slice(&tag);
    // At most 255 (see above).
    out.push(cl as u8);
    Ok(out)
}

/// [`seal`] with a raw `sframe_key`, for the RFC 9605 vector check (rfc9605.rs).
pub(crate) fn seal_with_key(
    key: &[u8; KEY_LEN],
    salt: &[u8; SALT_LEN],
    kid: u64,
    counter: u64,
    clear_header: &[u8],
    payload: &[u8],
) -> Result<Vec<u8>, FrameError> {
    seal(
        &FrameAead::new(key),
        salt,
        kid,
        counter,
        clear_header,
        payload,
    )
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

    /// Two members' frame contexts of one epoch (the same base key): `a` at leaf 0 sends.
    fn pair() -> (FrameCrypto, FrameCrypto) {
        let mut a = FrameCrypto::default();
        let mut b = FrameCrypto::default();
        a.install_epoch(3, Zeroizing::new(vec![7; 16]), 0, [0, 1], Duration::ZERO);
        b.install_epoch(3, Zeroizing::new(vec![7; 16]), 1, [0, 1], Duration::ZERO);
        (a, b)
    }

    fn frames(a: &mut FrameCrypto, stream: StreamId, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                a.encrypt(stream, b"", format!("frame {i}").as_bytes())
                    .expect("enc")
            })
            .collect()
    }

    #[test]
    fn a_replayed_frame_is_dropped_and_counted() {
        let (mut a, mut b) = pair();
        let f = frames(&mut a, StreamId::CAMERA, 3);
        assert_eq!(
            b.decrypt(&f[0], Duration::ZERO).expect("first").payload,
            b"frame 0"
        );
        assert_eq!(b.replays_dropped(), 0);
        // The same frame again, now and after later frames: refused, counted.
        assert!(matches!(
            b.decrypt(&f[0], Duration::ZERO),
            Err(FrameError::Replayed { counter: 0, .. })
        ));
        b.decrypt(&f[1], Duration::ZERO).expect("next");
        b.decrypt(&f[2], Duration::ZERO).expect("next");
        assert!(matches!(
            b.decrypt(&f[1], Duration::ZERO),
            Err(FrameError::Replayed { counter: 1, .. })
        ));
        assert_eq!(b.replays_dropped(), 2);
        // The window is per KID: the same counter of another stream, or of another sender, is
        // a different frame.
        let audio = a.encrypt(StreamId::AUDIO, b"", b"audio 0").expect("enc");
        assert_eq!(
            b.decrypt(&audio, Duration::ZERO).expect("audio").payload,
            b"audio 0"
        );
        let from_b = b.encrypt(StreamId::CAMERA, b"", b"from b").expect("enc");
        assert_eq!(
            a.decrypt(&from_b, Duration::ZERO).expect("b's").payload,
            b"from b"
        );
    }

    #[test]
    fn frames_reordered_within_the_window_decrypt_once() {
        let (mut a, mut b) = pair();
        let f = frames(&mut a, StreamId::CAMERA, 200);
        // A video burst whose frames 10..=60 were completed late by retransmissions: the newer
        // frames come first, the older ones after them, each still accepted once.
        for (i, frame) in f.iter().enumerate().skip(61) {
            b.decrypt(frame, Duration::ZERO)
                .unwrap_or_else(|e| panic!("frame {i}: {e}"));
        }
        for (i, frame) in f.iter().enumerate().take(61).skip(10).rev() {
            let d = b
                .decrypt(frame, Duration::ZERO)
                .unwrap_or_else(|e| panic!("late frame {i}: {e}"));
            assert_eq!(d.payload, format!("frame {i}").as_bytes());
        }
        for frame in &f[10..=60] {
            assert!(matches!(
                b.decrypt(frame, Duration::ZERO),
                Err(FrameError::Replayed { .. })
            ));
        }
        // Frames 0..10 never came; one arriving now is inside the window and decrypts.
        b.decrypt(&f[5], Duration::ZERO)
            .expect("late, in the window");
        assert_eq!(b.replays_dropped(), 51);
    }

    #[test]
    fn a_frame_older_than_the_window_is_dropped() {
        let (mut a, mut b) = pair();
        let f = frames(&mut a, StreamId::AUDIO, REPLAY_WINDOW + 2);
        b.decrypt(&f[0], Duration::ZERO).expect("first");
        // The newest accepted frame is REPLAY_WINDOW + 1 counters ahead of frame 1.
        b.decrypt(&f[REPLAY_WINDOW + 1], Duration::ZERO)
            .expect("newest");
        assert!(matches!(
            b.decrypt(&f[1], Duration::ZERO),
            Err(FrameError::TooOld { counter: 1, .. })
        ));
        // The oldest counter still inside the window (newest - REPLAY_WINDOW + 1) decrypts.
        b.decrypt(&f[2], Duration::ZERO).expect("at the edge");
        assert_eq!(b.replays_dropped(), 1);
    }

    #[test]
    fn frames_on_one_track_do_not_move_another_tracks_window() {
        let (mut a, mut b) = pair();
        let f = frames(&mut a, StreamId::CAMERA, 3);
        // A member (it holds the base key) makes a frame under a's KID with a counter far
        // ahead and sends it on its own track (context 2); a's genuine frames on a's track
        // (context 1) still decrypt.
        let mut forger = FrameCrypto::default();
        forger.install_epoch(3, Zeroizing::new(vec![7; 16]), 0, [0, 1], Duration::ZERO);
        let forged = frames(&mut forger, StreamId::CAMERA, 5000).split_off(4999);
        b.decrypt_in(2, &forged[0], Duration::ZERO)
            .expect("a valid key");
        for (i, frame) in f.iter().enumerate() {
            assert_eq!(
                b.decrypt_in(1, frame, Duration::ZERO)
                    .expect("genuine")
                    .payload,
                format!("frame {i}").as_bytes()
            );
        }
        // Within one context, a replay is refused.
        assert!(matches!(
            b.decrypt_in(1, &f[0], Duration::ZERO),
            Err(FrameError::Replayed { .. })
        ));
        // Negative control: in one shared context the forged frame pushes the window on and
        // the genuine frames are dropped as too old.
        let (_, mut c) = pair();
        c.decrypt(&forged[0], Duration::ZERO).expect("a valid key");
        assert!(matches!(
            c.decrypt(&f[0], Duration::ZERO),
            Err(FrameError::TooOld { .. })
        ));
    }

    #[test]
    fn outside_cipher_counters_are_the_streams_one_counter() {
        let (mut a, _) = pair();
        let k = a.send_key(StreamId::CAMERA).expect("key");
        let g = k.generation;
        assert_eq!(k.epoch, 3);
        assert_eq!(k.kid, encode_kid(StreamId::CAMERA, 0, 3).expect("kid"));
        let (key, salt) = derive_key_material(k.kid, &[7; 16]);
        assert_eq!(*k.key, *key);
        assert_eq!(*k.salt, *salt);
        // Handed-out counters and the crate's own encryption share one counter per key.
        assert_eq!(a.reserve_counter(StreamId::CAMERA, g), Ok(0));
        assert_eq!(a.reserve_counter(StreamId::CAMERA, g), Ok(1));
        let f = a.encrypt(StreamId::CAMERA, b"", b"x").expect("enc");
        let header = SframeHeader::deserialize(&f[..f.len() - 1]).expect("header");
        assert_eq!(header.counter(), 2);
        assert_eq!(a.reserve_counter(StreamId::CAMERA, g), Ok(3));
        // Streams count on their own; stale keys get no counter, not even when a new group
        // reaches the same epoch number.
        assert_eq!(a.reserve_counter(StreamId::AUDIO, g), Ok(0));
        a.install_epoch(4, Zeroizing::new(vec![8; 16]), 0, [0, 1], Duration::ZERO);
        assert_eq!(
            a.reserve_counter(StreamId::CAMERA, g),
            Err(FrameError::NoKeys)
        );
        let g4 = a.send_key(StreamId::CAMERA).expect("key").generation;
        assert_ne!(g4, g);
        assert_eq!(a.reserve_counter(StreamId::CAMERA, g4), Ok(0));
        a.clear();
        assert_eq!(a.send_key(StreamId::CAMERA).err(), Some(FrameError::NoKeys));
        a.install_epoch(3, Zeroizing::new(vec![9; 16]), 0, [0, 1], Duration::ZERO);
        assert_eq!(
            a.reserve_counter(StreamId::CAMERA, g),
            Err(FrameError::NoKeys)
        );
        let again = a.send_key(StreamId::CAMERA).expect("key");
        assert_eq!(again.epoch, 3);
        assert_ne!(again.generation, g);
    }

    #[test]
    fn outside_cipher_frames_are_screened_and_recorded_like_decrypt() {
        let (mut a, mut b) = pair();
        let f = frames(&mut a, StreamId::CAMERA, 2);
        let kid = encode_kid(StreamId::CAMERA, 0, 3).expect("kid");
        let k = b.receive_key(kid, Duration::ZERO).expect("key");
        assert_eq!(k.epoch, 3);
        let g = k.generation;
        assert_eq!(b.screen_frame(1, kid, 0, Duration::ZERO), Ok(g));
        b.accept_frame(1, kid, g, 0, Duration::ZERO).expect("first");
        // The same counter again: refused before and after decryption, in that context only.
        assert_eq!(
            b.screen_frame(1, kid, 0, Duration::ZERO),
            Err(FrameError::Replayed { kid, counter: 0 })
        );
        assert_eq!(
            b.accept_frame(1, kid, g, 0, Duration::ZERO),
            Err(FrameError::Replayed { kid, counter: 0 })
        );
        assert_eq!(b.replays_dropped(), 2);
        assert_eq!(b.screen_frame(2, kid, 0, Duration::ZERO), Ok(g));
        // One window with the crate's own decryption: frame 0 was accepted above.
        assert!(matches!(
            b.decrypt_in(1, &f[0], Duration::ZERO),
            Err(FrameError::Replayed { .. })
        ));
        b.decrypt_in(1, &f[1], Duration::ZERO).expect("frame 1");
        assert!(matches!(
            b.accept_frame(1, kid, g, 1, Duration::ZERO),
            Err(FrameError::Replayed { .. })
        ));
        // A leaf not in the epoch's roster, an epoch not held, keys that are not the KID's:
        // no key, no frame.
        let stranger = encode_kid(StreamId::CAMERA, 7, 3).expect("kid");
        assert_eq!(
            b.receive_key(stranger, Duration::ZERO).err(),
            Some(FrameError::UnknownKey(stranger))
        );
        assert_eq!(
            b.screen_frame(1, stranger, 5, Duration::ZERO),
            Err(FrameError::UnknownKey(stranger))
        );
        let other_epoch = encode_kid(StreamId::CAMERA, 0, 5).expect("kid");
        assert_eq!(
            b.screen_frame(1, other_epoch, 5, Duration::ZERO),
            Err(FrameError::UnknownKey(other_epoch))
        );
        assert_eq!(
            b.accept_frame(1, kid, g + 1000, 5, Duration::ZERO),
            Err(FrameError::UnknownKey(kid))
        );
        // After the grace period the old epoch's keys are gone for the outside cipher too.
        b.install_epoch(4, Zeroizing::new(vec![8; 16]), 1, [0, 1], Duration::ZERO);
        assert_eq!(b.screen_frame(1, kid, 9, Duration::from_secs(1)), Ok(g));
        assert_eq!(
            b.accept_frame(1, kid, g, 9, DEFAULT_GRACE),
            Err(FrameError::UnknownKey(kid))
        );
    }

    #[test]
    fn a_forged_header_does_not_move_the_window() {
        let (mut a, mut b) = pair();
        let f = frames(&mut a, StreamId::CAMERA, 2);
        // A frame claiming a far-ahead counter that does not authenticate is dropped without
        // being recorded: the genuine frames after it still decrypt.
        let forged = {
            let header = SframeHeader::new(encode_kid(StreamId::CAMERA, 0, 3).expect("kid"), 5000);
            let mut buf = vec![0u8; header.len()];
            header.serialize(&mut buf).expect("header");
            buf.extend_from_slice(&[0u8; 40]);
            buf.push(0);
            buf
        };
        assert_eq!(
            b.decrypt(&forged, Duration::ZERO),
            Err(FrameError::Authentication)
        );
        b.decrypt(&f[0], Duration::ZERO).expect("genuine");
        b.decrypt(&f[1], Duration::ZERO).expect("genuine");
        assert_eq!(b.replays_dropped(), 0);
    }
}

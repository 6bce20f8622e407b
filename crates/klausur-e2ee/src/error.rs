//! Typed errors, kept apart by who is at fault: the caller (misuse), a peer (bad input), or this
//! crate and its dependencies (internal).

use thiserror::Error;

/// Why a credential was not accepted. Shown to the user as a warning ("a participant the group
/// does not vouch for was refused").
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialError {
    /// The bytes are not a canonical encoding of a [`crate::SignedCredential`].
    #[error("credential is malformed: {0}")]
    Malformed(&'static str),
    /// The MLS credential is not of klausur's credential type.
    #[error("credential type {0} is not the klausur identity credential")]
    WrongType(u16),
    /// The signature does not verify under the trusted identity CA key.
    #[error("credential is not signed by the trusted identity CA")]
    BadSignature,
    /// `now` is before `not_before`.
    #[error("credential is not valid yet")]
    NotYetValid,
    /// `now` is at or after `not_after`.
    #[error("credential has expired")]
    Expired,
    /// The MLS leaf is signed with a key other than the device key the credential binds.
    #[error("the MLS leaf key does not match the device key in the credential")]
    DeviceKeyMismatch,
    /// The caller's own policy refused it (e.g. not on the meeting's invitation list).
    #[error("credential refused by policy: {0}")]
    Policy(String),
}

/// Errors of the SFrame layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Caller misuse: no epoch installed yet (not in a group).
    #[error("no frame keys: not a member of a group")]
    NoKeys,
    /// Caller misuse: the clear header is longer than 255 bytes.
    #[error("clear header too long ({0} bytes, at most 255)")]
    ClearHeaderTooLong(usize),
    /// Caller misuse or exhausted space: the stream id or own leaf index does not fit the key id.
    #[error("value does not fit into the key id layout: {0}")]
    KeyIdOverflow(&'static str),
    /// The frame counter of a stream is exhausted in this epoch (rekey needed).
    #[error("frame counter exhausted")]
    CounterExhausted,
    /// Peer input: the frame is too short or its SFrame header does not parse.
    #[error("malformed frame")]
    Malformed,
    /// Peer input: no key for the frame's key id (unknown epoch, expired grace period, or a
    /// sender that is not in the roster of that epoch).
    #[error("no key for key id {0:#x}")]
    UnknownKey(u64),
    /// Peer input: authentication failed (tampered frame or wrong key).
    #[error("frame failed to authenticate")]
    Authentication,
    /// Peer input: a frame with this counter was already accepted for this key id (a replay,
    /// or the same frame delivered twice).
    #[error("replayed frame: counter {counter} of key id {kid:#x} was already accepted")]
    Replayed {
        /// The frame's key id.
        kid: u64,
        /// The frame's counter.
        counter: u64,
    },
    /// Peer input: the frame's counter lies a replay window or more behind the newest frame
    /// accepted for this key id (see `frame::REPLAY_WINDOW`).
    #[error("frame too old: counter {counter} of key id {kid:#x} lies outside the replay window")]
    TooOld {
        /// The frame's key id.
        kid: u64,
        /// The frame's counter.
        counter: u64,
    },
    /// Internal: the SFrame library failed in an unexpected way.
    #[error("internal SFrame error: {0}")]
    Internal(String),
}

/// Errors of [`crate::Member`].
#[derive(Debug, Error)]
pub enum E2eeError {
    /// Caller misuse (wrong state, bad argument).
    #[error("misuse: {0}")]
    Misuse(&'static str),
    /// A credential failed verification. `leaf_index` is the leaf it would have occupied, if
    /// known. Nothing was committed or merged: the local state is unchanged.
    #[error("credential rejected: {reason}")]
    CredentialRejected {
        /// Leaf index the member has or would have, where known.
        leaf_index: Option<u32>,
        /// Why.
        reason: CredentialError,
    },
    /// Peer input that is malformed or fails MLS validation.
    #[error("invalid peer message: {0}")]
    PeerInput(String),
    /// A valid MLS message this crate refuses on principle (external commit, standalone
    /// proposal, a commit not sent by a member).
    #[error("refused: {0}")]
    Refused(&'static str),
    /// SFrame layer error.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Internal error in this crate or openmls (a bug, not the peer's or caller's fault).
    #[error("internal error: {0}")]
    Internal(String),
}

pub(crate) fn internal(e: impl std::fmt::Display) -> E2eeError {
    E2eeError::Internal(e.to_string())
}

pub(crate) fn peer(e: impl std::fmt::Display) -> E2eeError {
    E2eeError::PeerInput(e.to_string())
}

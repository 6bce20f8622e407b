//! klausur's end-to-end encryption core: MLS group state (openmls, RFC 9420), SFrame media
//! keys (RFC 9605) and identity credentials. No I/O, no clock: time is always an argument
//! (`now`, a [`std::time::Duration`] since the Unix epoch). Builds natively and for
//! `wasm32-unknown-unknown`.
//!
//! # Sans-IO contract
//!
//! One [`Member`] per device and meeting, owned by one task (in the browser: the dedicated
//! worker), mutated through `&mut self`. The caller moves bytes between it and the delivery
//! service (DS); this crate never sends anything itself.
//!
//! | caller does | crate call | caller then |
//! |---|---|---|
//! | starts a device | [`Member::new`] (credential from the [`IdentityCa`], device key, verifier) | |
//! | wants to be admitted | [`Member::key_package`] | sends the bytes to the DS |
//! | opens a meeting | [`Member::create_group`] | |
//! | decides whether to admit a joiner | [`Member::verify_key_package`] → the verified [`Credential`] | applies its admission policy |
//! | admits joiners (lobby / invitation) | [`Member::add`] (several key packages, one commit) | sends commit + Welcome to the DS |
//! | removes members | [`Member::remove`] | sends the commit |
//! | got a renewed credential (before the current one expires) | [`Member::renew_credential`] | sends the commit |
//! | every [`LEAF_UPDATE_INTERVAL`] ([`Member::leaf_update_due`]) | [`Member::update_own_leaf`] | sends the commit |
//! | DS confirms own commit won the epoch | [`Member::merge_pending_commit`] | shows the [`EpochChange`] |
//! | DS says another commit won | [`Member::discard_pending_commit`], then processes that commit | |
//! | receives a handshake message | [`Member::process_message`] → [`Event`] | shows join/leave notices, new security code; on [`E2eeError::CredentialRejected`] a warning |
//! | receives a Welcome | [`Member::join_from_welcome`] | |
//! | DS voided the commit it made or joined by | [`Member::reset`] | sends a new key package |
//! | outgoing media frame | [`Member::encrypt_frame`] | |
//! | incoming media frame | [`Member::decrypt_frame`] | drops and counts the frame on error |
//! | frames through an outside cipher (the browser's WebCrypto) | [`Member::frame_send_key`] + [`Member::reserve_frame_counter`]; [`Member::frame_receive_key`] + [`Member::screen_frame`] + [`Member::accept_frame`] | builds header, nonce and AAD itself ([`frame`], "Key material for an outside cipher") |
//! | sends a chat message | [`Member::encrypt_application`] | sends the bytes to the DS (current epoch only) |
//! | receives a chat message | [`Member::process_message`] → [`Event::Application`] (sender leaf, plaintext) | shows it under the sender's credential name |
//! | timer at [`Member::poll_timeout`] | [`Member::handle_timeout`] | |
//! | became a member (created the group or joined) | [`Member::sign_leaf_claim`] (and, as the creator, [`Member::group_info`]) | sends the claim to the DS (`mls_member`) |
//!
//! The delivery service (the server, never a member) follows the group's public state with a
//! [`PublicTree`]: from the creator's `GroupInfo`, then every commit it accepts (commits are
//! MLS `PublicMessage`s, [`WIRE_FORMAT_POLICY`]). With it the DS checks that a leaf claim is
//! signed by that leaf's device key, that a commit comes from the leaf its sender claims, and
//! which leaves a commit removes, without holding any group secret.
//!
//! Each epoch change installs new frame keys at once ([`frame`] module docs: KID layout, frame
//! layout, grace period). Every credential is checked before it enters the group: klausur
//! credential type, strict decoding, the credential's device key equals the MLS leaf's
//! signature key, and the caller's [`CredentialVerifier`] (normally [`CaVerifier`]: CA
//! signature and validity window at `now`). Commits not sent by a member (external commits),
//! and standalone proposals, are refused, so the DS cannot add anyone.
//!
//! The participant list is [`Member::roster`]; the security code is [`security_code`] over
//! the MLS epoch authenticator and changes with every epoch.
//!
//! # Secrets
//!
//! The device and CA signing keys (ed25519-dalek), the exported SFrame base keys and the SFrame
//! key material are zeroized on drop. openmls keeps its own state in its in-memory storage
//! provider, which this crate does not control.
//!
//! openmls itself reads the system clock for key package lifetimes (via `web-time` on wasm).

#![warn(missing_docs)]

mod continuity;
mod error;
pub mod frame;
mod identity;
mod member;
mod public;
pub mod rfc9605;

pub use continuity::{sign_continuity, verify_continuity};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{CredentialError, E2eeError, FrameError};
pub use frame::{DecryptedFrame, DecryptedMeta, FrameCrypto, FrameKeyMaterial, StreamId};
pub use identity::{
    CaVerifier, Credential, CredentialVerifier, IdentityCa, ParticipantKind, SignedCredential,
    KLAUSUR_CREDENTIAL_TYPE,
};
pub use member::{
    leaf_claim_payload, security_code, CommitOutput, EpochChange, Event, Member, MemberConfig,
    RosterEntry, APPLICATION_PADDING, LEAF_UPDATE_INTERVAL, MLS_CIPHERSUITE, WIRE_FORMAT_POLICY,
};
pub use public::{CheckedCommit, LeafIdentity, PublicTree, TreeSnapshot};

//! WebAssembly (wasm-bindgen) bindings of [`klausur_e2ee`] for the browser's dedicated
//! encryption worker. Build: `crates/klausur-e2ee-wasm/build.sh`.
//!
//! # Conventions (JS side)
//!
//! - Byte strings are `Uint8Array` in both directions.
//! - Time (`now`) is milliseconds since the Unix epoch, as `Date.now()` returns it.
//! - Epochs, stream ids and leaf indices are plain numbers.
//! - Errors are thrown as JS `Error`s whose `name` says who is at fault
//!   (`Misuse`, `CredentialRejected`, `PeerInput`, `Refused`, `FrameError`, `Internal`,
//!   `InvalidArgument`) and whose `message` is the Rust error's text. `CredentialRejected`
//!   errors also carry `leafIndex` (number or `undefined`); a `FrameError` for a frame the
//!   replay window refused (replayed, or too old) carries `replay: true`. Peer input never
//!   panics.
//! - Events, roster entries and epoch changes are plain objects (see [`WasmMember`]):
//!   `{ leafIndex, userId, displayName, kind, devicePublicKey (hex), notBefore, notAfter }`
//!   for a roster entry; `{ type: "epochChanged", epoch, committer, added: [entry], removed:
//!   [entry], securityCode }`, `{ type: "removed", by }`, `{ type: "application", sender, data }`,
//!   `{ type: "ignored" }` for events.
//!
//! The device signing key and all MLS/SFrame secrets stay in wasm memory; only the bytes a
//! caller passes in (e.g. the signing key at construction) cross the boundary.

use std::time::Duration;

use js_sys::{Object, Reflect, Uint8Array};
use klausur_e2ee::{
    CaVerifier, CommitOutput, Credential, E2eeError, EpochChange, Event, FrameError,
    FrameKeyMaterial, IdentityCa, Member, MemberConfig, ParticipantKind, RosterEntry,
    SignedCredential, SigningKey, StreamId, VerifyingKey,
};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

use klausur_e2ee::rfc9605;

// ---------------------------------------------------------------------------------------------
// Errors and conversions

fn js_error(name: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name(name);
    e.into()
}

fn invalid(message: &str) -> JsValue {
    js_error("InvalidArgument", message)
}

fn e2ee_error(e: E2eeError) -> JsValue {
    let name = match &e {
        E2eeError::Misuse(_) => "Misuse",
        E2eeError::CredentialRejected { .. } => "CredentialRejected",
        E2eeError::PeerInput(_) => "PeerInput",
        E2eeError::Refused(_) => "Refused",
        E2eeError::Frame(_) => "FrameError",
        E2eeError::Internal(_) => "Internal",
    };
    let err = js_error(name, &e.to_string());
    // Setting a property on a fresh Error object cannot fail.
    match e {
        E2eeError::CredentialRejected {
            leaf_index: Some(i),
            ..
        } => {
            let _ = Reflect::set(&err, &"leafIndex".into(), &i.into());
        }
        E2eeError::Frame(FrameError::Replayed { .. } | FrameError::TooOld { .. }) => {
            let _ = Reflect::set(&err, &"replay".into(), &true.into());
        }
        _ => {}
    }
    err
}

/// `Date.now()` milliseconds to a time since the Unix epoch.
fn ms(now: f64) -> Result<Duration, JsValue> {
    if !now.is_finite() || now < 0.0 {
        return Err(invalid(
            "now must be a finite, non-negative number of milliseconds",
        ));
    }
    // Truncation to whole milliseconds is intended; f64 -> u64 saturates.
    Ok(Duration::from_millis(now as u64))
}

/// A JS number that is a non-negative safe integer, as `u64`.
fn safe_integer(n: f64) -> Option<u64> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    ((0.0..=MAX_SAFE).contains(&n) && n.fract() == 0.0).then_some(n as u64)
}

fn stream_id(stream: f64) -> Result<StreamId, JsValue> {
    safe_integer(stream)
        .map(StreamId)
        .ok_or_else(|| invalid("stream must be a non-negative integer"))
}

/// A non-negative safe integer argument named `what`.
fn value(n: f64, what: &str) -> Result<u64, JsValue> {
    safe_integer(n)
        .ok_or_else(|| invalid(&format!("{what} must be a non-negative integer below 2^53")))
}

/// `{ epoch, generation, kid, key, salt }` of frame key material (see `frameSendKey`).
fn key_material_js(m: &FrameKeyMaterial) -> Result<JsValue, JsValue> {
    let obj = Object::new();
    // Epochs and our KIDs stay far below 2^53.
    set(&obj, "epoch", &(m.epoch as f64).into())?;
    set(&obj, "generation", &(m.generation as f64).into())?;
    set(&obj, "kid", &(m.kid as f64).into())?;
    set(&obj, "key", &Uint8Array::from(m.key.as_slice()).into())?;
    set(&obj, "salt", &Uint8Array::from(m.salt.as_slice()).into())?;
    Ok(obj.into())
}

fn key32(bytes: &[u8], what: &str) -> Result<Zeroizing<[u8; 32]>, JsValue> {
    let mut k = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(invalid(&format!("{what} must be 32 bytes")));
    }
    k.copy_from_slice(bytes);
    Ok(k)
}

fn verifying_key(bytes: &[u8], what: &str) -> Result<VerifyingKey, JsValue> {
    VerifyingKey::from_bytes(&*key32(bytes, what)?)
        .map_err(|_| invalid(&format!("{what} is not a valid Ed25519 public key")))
}

fn to_js(v: &Value) -> Result<JsValue, JsValue> {
    js_sys::JSON::parse(&v.to_string())
}

fn set(obj: &Object, key: &str, value: &JsValue) -> Result<(), JsValue> {
    Reflect::set(obj, &key.into(), value).map(|_| ())
}

fn credential_json(c: &Credential) -> Value {
    let kind = match c.kind {
        ParticipantKind::Staff => "staff",
        ParticipantKind::InvitedGuest => "invited_guest",
        ParticipantKind::Guest => "guest",
        ParticipantKind::PhoneGateway => "phone_gateway",
    };
    json!({
        "userId": c.user_id,
        "displayName": c.display_name,
        "kind": kind,
        "devicePublicKey": hex::encode(c.device_public_key),
        "notBefore": c.not_before,
        "notAfter": c.not_after,
    })
}

fn entry_json(e: &RosterEntry) -> Value {
    let mut v = credential_json(&e.credential);
    v["leafIndex"] = e.leaf_index.into();
    v
}

fn change_json(c: &EpochChange) -> Value {
    json!({
        "type": "epochChanged",
        "epoch": c.epoch,
        "committer": c.committer,
        "added": c.added.iter().map(entry_json).collect::<Vec<_>>(),
        "removed": c.removed.iter().map(entry_json).collect::<Vec<_>>(),
        "securityCode": c.security_code,
    })
}

fn commit_js(out: CommitOutput) -> Result<JsValue, JsValue> {
    let obj = Object::new();
    set(
        &obj,
        "commit",
        &Uint8Array::from(out.commit.as_slice()).into(),
    )?;
    let welcome = match out.welcome {
        Some(w) => Uint8Array::from(w.as_slice()).into(),
        None => JsValue::NULL,
    };
    set(&obj, "welcome", &welcome)?;
    Ok(obj.into())
}

fn parse_kind(kind: &str) -> Result<ParticipantKind, JsValue> {
    Ok(match kind {
        "staff" => ParticipantKind::Staff,
        "invited_guest" => ParticipantKind::InvitedGuest,
        "guest" => ParticipantKind::Guest,
        "phone_gateway" => ParticipantKind::PhoneGateway,
        _ => {
            return Err(invalid(
                "kind must be staff, invited_guest, guest or phone_gateway",
            ))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Panics

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

/// Runs when the module is instantiated: panics (bugs; never expected) are logged with their
/// message to `console.error` before the wasm trap. A minimal `console_error_panic_hook`.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("klausur-e2ee-wasm panicked: {info}"));
    }));
}

// ---------------------------------------------------------------------------------------------
// Free functions

/// Runs the RFC 9605 test vectors inside this module. Without an argument the embedded
/// vectors (klausur-e2ee's `tests/vectors/rfc9605.json`) are used; pass a JSON string of the
/// same format to check other (e.g. deliberately corrupted) vectors. Returns
/// `{ passed, failed, header_passed, header_failed, sframe_passed, sframe_failed, failures }`.
#[wasm_bindgen(js_name = runRfc9605Vectors)]
pub fn run_rfc9605_vectors(json: Option<String>) -> Result<JsValue, JsValue> {
    let report = rfc9605::run(json.as_deref().unwrap_or(rfc9605::RFC9605_VECTORS))
        .map_err(|e| invalid(&e))?;
    let v = serde_json::to_value(&report).map_err(|e| js_error("Internal", &e.to_string()))?;
    to_js(&v)
}

/// The embedded RFC 9605 vector JSON (e.g. to corrupt a copy for a negative control).
#[wasm_bindgen(js_name = rfc9605VectorsJson)]
pub fn rfc9605_vectors_json() -> String {
    rfc9605::RFC9605_VECTORS.to_owned()
}

/// A fresh Ed25519 device signing key (32 secret bytes from the platform CSPRNG).
#[wasm_bindgen(js_name = generateSigningKey)]
pub fn generate_signing_key() -> Result<Vec<u8>, JsValue> {
    let mut k = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(k.as_mut_slice())
        .map_err(|e| js_error("Internal", &format!("random source: {e}")))?;
    Ok(k.to_vec())
}

/// The 32-byte public key of a 32-byte Ed25519 signing key.
#[wasm_bindgen(js_name = signingKeyPublic)]
pub fn signing_key_public(signing_key: &[u8]) -> Result<Vec<u8>, JsValue> {
    let sk = SigningKey::from_bytes(&*key32(signing_key, "signing key")?);
    Ok(sk.verifying_key().to_bytes().to_vec())
}

/// The continuity proof (64 bytes) of the device key `signingKey` for its successor
/// `newPublicKey` in the meeting `meetingId` (see `klausur_e2ee::sign_continuity`).
#[wasm_bindgen(js_name = continuitySign)]
pub fn continuity_sign(
    signing_key: &[u8],
    meeting_id: &str,
    new_public_key: &[u8],
) -> Result<Vec<u8>, JsValue> {
    let sk = SigningKey::from_bytes(&*key32(signing_key, "signing key")?);
    let new = verifying_key(new_public_key, "new public key")?;
    Ok(klausur_e2ee::sign_continuity(&sk, meeting_id, &new).to_vec())
}

/// Whether `signature` is `previousKey`'s continuity proof for `newPublicKey` in `meetingId`
/// (see `klausur_e2ee::verify_continuity`). False for malformed keys or signatures.
#[wasm_bindgen(js_name = continuityVerify)]
pub fn continuity_verify(
    previous_key: &[u8],
    meeting_id: &str,
    new_public_key: &[u8],
    signature: &[u8],
) -> bool {
    match (
        verifying_key(previous_key, "previous key"),
        verifying_key(new_public_key, "new public key"),
    ) {
        (Ok(prev), Ok(new)) => klausur_e2ee::verify_continuity(&prev, meeting_id, &new, signature),
        _ => false,
    }
}

/// Issues a signed credential (bytes as carried in MLS). For tests and tools: the browser
/// never holds the identity CA key. Times are seconds since the Unix epoch; `kind` is
/// `staff`, `invited_guest`, `guest` or `phone_gateway`.
#[wasm_bindgen(js_name = issueCredential)]
pub fn issue_credential(
    ca_signing_key: &[u8],
    user_id: &str,
    display_name: &str,
    kind: &str,
    device_public_key: &[u8],
    not_before: f64,
    not_after: f64,
) -> Result<Vec<u8>, JsValue> {
    let ca = IdentityCa::new(SigningKey::from_bytes(&*key32(ca_signing_key, "CA key")?));
    let dev = verifying_key(device_public_key, "device public key")?;
    let secs = |t: f64| {
        if t.is_finite() && t >= 0.0 && t.fract() == 0.0 {
            Ok(t as u64)
        } else {
            Err(invalid(
                "validity times must be non-negative integers (seconds)",
            ))
        }
    };
    let sc = ca
        .issue(
            user_id,
            display_name,
            parse_kind(kind)?,
            &dev,
            secs(not_before)?,
            secs(not_after)?,
        )
        .map_err(|e| invalid(&e.to_string()))?;
    sc.to_bytes().map_err(|e| invalid(&e.to_string()))
}

/// Decodes a signed credential (without verifying it) into
/// `{ userId, displayName, kind, devicePublicKey, notBefore, notAfter }`.
#[wasm_bindgen(js_name = credentialInfo)]
pub fn credential_info(signed_credential: &[u8]) -> Result<JsValue, JsValue> {
    let sc =
        SignedCredential::from_bytes(signed_credential).map_err(|e| invalid(&e.to_string()))?;
    to_js(&credential_json(&sc.credential))
}

/// The meeting security code for an epoch authenticator (see `klausur_e2ee::security_code`).
#[wasm_bindgen(js_name = securityCode)]
pub fn security_code(epoch_authenticator: &[u8]) -> String {
    klausur_e2ee::security_code(epoch_authenticator)
}

// ---------------------------------------------------------------------------------------------
// Member

/// One device in one meeting: [`klausur_e2ee::Member`] for JS. See the crate docs of
/// `klausur-e2ee` for the call sequence (sans-IO: the worker moves the bytes).
#[wasm_bindgen]
pub struct WasmMember {
    inner: Member,
}

#[wasm_bindgen]
impl WasmMember {
    /// `signedCredential`: the CA-issued credential bytes, which must bind this device key.
    /// `deviceSigningKey`: 32 bytes (Ed25519 secret). `caPublicKey`: 32 bytes; every other
    /// member's credential must be signed by it and be valid at the time of the check.
    /// `frameGraceMs`: how long previous-epoch receive keys stay usable (default 5000).
    #[wasm_bindgen(constructor)]
    pub fn new(
        signed_credential: &[u8],
        device_signing_key: &[u8],
        ca_public_key: &[u8],
        frame_grace_ms: Option<f64>,
    ) -> Result<WasmMember, JsValue> {
        let credential = SignedCredential::from_bytes(signed_credential)
            .map_err(|e| invalid(&format!("signed credential: {e}")))?;
        let signing_key =
            SigningKey::from_bytes(&*key32(device_signing_key, "device signing key")?);
        let verifier = CaVerifier {
            ca_public_key: verifying_key(ca_public_key, "CA public key")?,
        };
        let mut config = MemberConfig::default();
        if let Some(g) = frame_grace_ms {
            config.frame_grace = ms(g)?;
        }
        let inner = Member::new(credential, signing_key, verifier, config).map_err(e2ee_error)?;
        Ok(Self { inner })
    }

    /// A fresh key package (bytes for the delivery service). Join with `joinFromWelcome` on
    /// this same instance.
    #[wasm_bindgen(js_name = keyPackage)]
    pub fn key_package(&self) -> Result<Vec<u8>, JsValue> {
        self.inner.key_package().map_err(e2ee_error)
    }

    /// Checks a joiner's key package as `add` would (MLS validation, CA-signed credential valid
    /// at `now`, device key bound to the leaf) without committing, and returns the verified
    /// claims `{ userId, displayName, kind, devicePublicKey, notBefore, notAfter }` for an
    /// admission decision. Throws `CredentialRejected` or `PeerInput`. Needs no group.
    #[wasm_bindgen(js_name = verifyKeyPackage)]
    pub fn verify_key_package(&self, key_package: &[u8], now: f64) -> Result<JsValue, JsValue> {
        let c = self
            .inner
            .verify_key_package(key_package, ms(now)?)
            .map_err(e2ee_error)?;
        to_js(&credential_json(&c))
    }

    /// The group's GroupInfo with its ratchet tree (bytes, public), signed by this device: sent
    /// by the group's creator with its leaf claim, so the server can follow the group's public
    /// state.
    #[wasm_bindgen(js_name = groupInfo)]
    pub fn group_info(&self) -> Result<Vec<u8>, JsValue> {
        self.inner.group_info().map_err(e2ee_error)
    }

    /// This device's leaf claim for `participantId`: its signature (64 bytes) over the group
    /// id, epoch, own leaf and the participant id, sent with `mls_member`.
    #[wasm_bindgen(js_name = signLeafClaim)]
    pub fn sign_leaf_claim(&self, participant_id: &str) -> Result<Vec<u8>, JsValue> {
        self.inner
            .sign_leaf_claim(participant_id)
            .map_err(e2ee_error)
    }

    /// How many frames the replay windows refused so far (replayed or too old).
    #[wasm_bindgen(js_name = replaysDropped)]
    pub fn replays_dropped(&self) -> f64 {
        self.inner.frames().replays_dropped() as f64
    }

    /// Creates a new group (epoch 0) with this device as its only member.
    #[wasm_bindgen(js_name = createGroup)]
    pub fn create_group(&mut self, group_id: &[u8], now: f64) -> Result<(), JsValue> {
        self.inner
            .create_group(group_id, ms(now)?)
            .map_err(e2ee_error)
    }

    /// Adds joiners in one commit: `keyPackages` is an array of `Uint8Array`. Every credential
    /// is verified first. Returns `{ commit, welcome }`; the commit stays pending until
    /// `mergePendingCommit` / `discardPendingCommit`.
    pub fn add(&mut self, key_packages: Vec<Uint8Array>, now: f64) -> Result<JsValue, JsValue> {
        let kps: Vec<Vec<u8>> = key_packages.iter().map(Uint8Array::to_vec).collect();
        let out = self.inner.add(&kps, ms(now)?).map_err(e2ee_error)?;
        commit_js(out)
    }

    /// Removes members by leaf index in one commit. Returns `{ commit, welcome: null }`.
    pub fn remove(&mut self, leaf_indices: Vec<u32>) -> Result<JsValue, JsValue> {
        let out = self.inner.remove(&leaf_indices).map_err(e2ee_error)?;
        commit_js(out)
    }

    /// Commits a fresh own leaf (post-compromise security). Returns `{ commit, welcome: null }`.
    #[wasm_bindgen(js_name = updateOwnLeaf)]
    pub fn update_own_leaf(&mut self) -> Result<JsValue, JsValue> {
        let out = self.inner.update_own_leaf().map_err(e2ee_error)?;
        commit_js(out)
    }

    /// Commits an update of the own leaf carrying a renewed credential (same user id, display
    /// name, kind and device key; from the identity CA before the current one expires).
    /// Returns `{ commit, welcome: null }`; pending until merged or discarded.
    #[wasm_bindgen(js_name = renewCredential)]
    pub fn renew_credential(&mut self, signed_credential: &[u8]) -> Result<JsValue, JsValue> {
        let credential = SignedCredential::from_bytes(signed_credential)
            .map_err(|e| invalid(&format!("signed credential: {e}")))?;
        let out = self
            .inner
            .renew_credential(credential)
            .map_err(e2ee_error)?;
        commit_js(out)
    }

    /// This device's own credential claims `{ userId, displayName, kind, devicePublicKey,
    /// notBefore, notAfter }` (the renewed one once its commit is merged).
    #[wasm_bindgen(js_name = ownCredential)]
    pub fn own_credential(&self) -> Result<JsValue, JsValue> {
        to_js(&credential_json(&self.inner.credential().credential))
    }

    /// Whether the periodic own-leaf update (15 min) is due.
    #[wasm_bindgen(js_name = leafUpdateDue)]
    pub fn leaf_update_due(&self, now: f64) -> Result<bool, JsValue> {
        Ok(self.inner.leaf_update_due(ms(now)?))
    }

    /// Applies this device's pending commit (the delivery service accepted it). Returns the
    /// `epochChanged` event.
    #[wasm_bindgen(js_name = mergePendingCommit)]
    pub fn merge_pending_commit(&mut self, now: f64) -> Result<JsValue, JsValue> {
        let change = self
            .inner
            .merge_pending_commit(ms(now)?)
            .map_err(e2ee_error)?;
        to_js(&change_json(&change))
    }

    /// Forgets the group (MLS state and frame keys), keeping the device key and credential;
    /// send a new `keyPackage()` afterwards. For a commit the delivery service voided.
    pub fn reset(&mut self) -> Result<(), JsValue> {
        self.inner.reset().map_err(e2ee_error)
    }

    /// Drops this device's pending commit (another commit won the epoch).
    #[wasm_bindgen(js_name = discardPendingCommit)]
    pub fn discard_pending_commit(&mut self) -> Result<(), JsValue> {
        self.inner.discard_pending_commit().map_err(e2ee_error)
    }

    /// Handles one MLS message from the delivery service; returns an event object (see the
    /// module docs). Throws `CredentialRejected` (show a warning; nothing was merged),
    /// `PeerInput` or `Refused` for bad or unacceptable messages.
    #[wasm_bindgen(js_name = processMessage)]
    pub fn process_message(&mut self, message: &[u8], now: f64) -> Result<JsValue, JsValue> {
        match self
            .inner
            .process_message(message, ms(now)?)
            .map_err(e2ee_error)?
        {
            Event::EpochChanged(c) => to_js(&change_json(&c)),
            Event::Removed { by } => to_js(&json!({ "type": "removed", "by": by })),
            Event::Application { sender, data } => {
                let obj = Object::new();
                set(&obj, "type", &"application".into())?;
                set(&obj, "sender", &sender.into())?;
                set(&obj, "data", &Uint8Array::from(data.as_slice()).into())?;
                Ok(obj.into())
            }
            Event::Ignored => to_js(&json!({ "type": "ignored" })),
        }
    }

    /// Joins a group from a Welcome addressed to a key package of this instance; every
    /// member's credential is verified first.
    #[wasm_bindgen(js_name = joinFromWelcome)]
    pub fn join_from_welcome(&mut self, welcome: &[u8], now: f64) -> Result<(), JsValue> {
        self.inner
            .join_from_welcome(welcome, ms(now)?)
            .map_err(e2ee_error)
    }

    /// Whether this device is in a group.
    #[wasm_bindgen(getter, js_name = inGroup)]
    pub fn in_group(&self) -> bool {
        self.inner.in_group()
    }

    /// Own leaf index.
    #[wasm_bindgen(js_name = leafIndex)]
    pub fn leaf_index(&self) -> Result<u32, JsValue> {
        self.inner.leaf_index().map_err(e2ee_error)
    }

    /// Current MLS epoch.
    pub fn epoch(&self) -> Result<f64, JsValue> {
        // Epochs stay far below 2^53.
        Ok(self.inner.epoch().map_err(e2ee_error)? as f64)
    }

    /// The roster (array of entries, by leaf index), from MLS.
    pub fn roster(&self) -> Result<JsValue, JsValue> {
        let r = self.inner.roster().map_err(e2ee_error)?;
        to_js(&Value::Array(r.iter().map(entry_json).collect()))
    }

    /// The roster as a JSON string.
    #[wasm_bindgen(js_name = rosterJson)]
    pub fn roster_json(&self) -> Result<String, JsValue> {
        let r = self.inner.roster().map_err(e2ee_error)?;
        Ok(Value::Array(r.iter().map(entry_json).collect()).to_string())
    }

    /// The meeting security code of the current epoch (five groups of five digits).
    #[wasm_bindgen(js_name = securityCode)]
    pub fn security_code(&self) -> Result<String, JsValue> {
        self.inner.security_code().map_err(e2ee_error)
    }

    /// The MLS epoch authenticator of the current epoch.
    #[wasm_bindgen(js_name = epochAuthenticator)]
    pub fn epoch_authenticator(&self) -> Result<Vec<u8>, JsValue> {
        self.inner.epoch_authenticator().map_err(e2ee_error)
    }

    /// Encrypts `data` as an MLS application message of the current epoch (end-to-end
    /// encrypted chat) for the delivery service. Members get it from `processMessage` as
    /// `{ type: "application", sender, data }`.
    #[wasm_bindgen(js_name = encryptApplication)]
    pub fn encrypt_application(&mut self, data: &[u8]) -> Result<Vec<u8>, JsValue> {
        self.inner.encrypt_application(data).map_err(e2ee_error)
    }

    /// Decrypts a chat message from the delivery service: `{ sender, data }`. Only MLS
    /// application messages are accepted; a commit passed here is refused (`Refused`) and not
    /// merged.
    #[wasm_bindgen(js_name = decryptApplication)]
    pub fn decrypt_application(&mut self, message: &[u8]) -> Result<JsValue, JsValue> {
        let (sender, data) = self
            .inner
            .decrypt_application(message)
            .map_err(e2ee_error)?;
        let obj = Object::new();
        set(&obj, "sender", &sender.into())?;
        set(&obj, "data", &Uint8Array::from(data.as_slice()).into())?;
        Ok(obj.into())
    }

    /// Encrypts one media frame of `stream`: the first `clearHeaderLen` bytes of `frame`
    /// (at most 255) stay in clear and are authenticated. Returns the protected frame.
    #[wasm_bindgen(js_name = encryptFrame)]
    pub fn encrypt_frame(
        &mut self,
        stream: f64,
        clear_header_len: usize,
        frame: &[u8],
    ) -> Result<Vec<u8>, JsValue> {
        if clear_header_len > frame.len() {
            return Err(invalid("clearHeaderLen is longer than the frame"));
        }
        let (header, payload) = frame.split_at(clear_header_len);
        self.inner
            .encrypt_frame(stream_id(stream)?, header, payload)
            .map_err(e2ee_error)
    }

    /// Decrypts one protected frame. Returns `{ sender, stream, epoch, clearHeaderLen, data }`
    /// where `data` is the original frame (clear header followed by the payload). Throws a
    /// `FrameError` for frames to drop (malformed, unknown key, failed authentication, and with
    /// `replay: true` a frame the replay window refused). `context` names the track the frame
    /// came in on (the receiver transform's id): replay windows are kept per context (default
    /// 0), so frames on one track cannot make another's look old.
    #[wasm_bindgen(js_name = decryptFrame)]
    pub fn decrypt_frame(
        &mut self,
        frame: &[u8],
        now: f64,
        context: Option<f64>,
    ) -> Result<JsValue, JsValue> {
        let context = match context {
            None => 0,
            Some(c) => {
                safe_integer(c).ok_or_else(|| invalid("context must be a non-negative integer"))?
            }
        };
        let d = self
            .inner
            .decrypt_frame_in(context, frame, ms(now)?)
            .map_err(e2ee_error)?;
        let mut data = d.clear_header;
        let clear_header_len = data.len();
        data.extend_from_slice(&d.payload);
        let obj = Object::new();
        set(&obj, "sender", &d.sender.into())?;
        // Stream ids and epochs stay far below 2^53.
        set(&obj, "stream", &(d.stream.0 as f64).into())?;
        set(&obj, "epoch", &(d.epoch as f64).into())?;
        set(&obj, "clearHeaderLen", &(clear_header_len as u32).into())?;
        set(&obj, "data", &Uint8Array::from(data.as_slice()).into())?;
        Ok(obj.into())
    }

    /// Key material to encrypt frames of `stream` with the browser's own AES-GCM (WebCrypto):
    /// `{ epoch, generation, kid, key (16 bytes), salt (12 bytes) }` of the current epoch
    /// (`generation` names this installation of the epoch's keys, unique in the module). Import `key`
    /// as a non-extractable key at once and zero the array; take each frame's counter from
    /// `reserveFrameCounter`. Throws a `FrameError` without keys.
    #[wasm_bindgen(js_name = frameSendKey)]
    pub fn frame_send_key(&mut self, stream: f64) -> Result<JsValue, JsValue> {
        let m = self
            .inner
            .frame_send_key(stream_id(stream)?)
            .map_err(e2ee_error)?;
        key_material_js(&m)
    }

    /// The next frame counter of `stream` for a frame encrypted with `frameSendKey`'s key of
    /// `generation` (the counter `encryptFrame` also uses: none is used twice). Throws a
    /// `FrameError` if those keys are no longer current (get the new key) or without keys.
    #[wasm_bindgen(js_name = reserveFrameCounter)]
    pub fn reserve_frame_counter(&mut self, stream: f64, generation: f64) -> Result<f64, JsValue> {
        let c = self
            .inner
            .reserve_frame_counter(stream_id(stream)?, value(generation, "generation")?)
            .map_err(e2ee_error)?;
        // At most 2^53 - 1 (klausur_e2ee::frame::MAX_OUTSIDE_VALUE): exact.
        Ok(c as f64)
    }

    /// Key material to decrypt frames of key id `kid` with WebCrypto: `{ epoch, generation,
    /// kid, key, salt }`, if the KID's epoch is held at `now` and its leaf is in that epoch's
    /// roster (else a `FrameError`). Valid while `screenFrame` returns its `generation`.
    #[wasm_bindgen(js_name = frameReceiveKey)]
    pub fn frame_receive_key(&mut self, kid: f64, now: f64) -> Result<JsValue, JsValue> {
        let m = self
            .inner
            .frame_receive_key(value(kid, "kid")?, ms(now)?)
            .map_err(e2ee_error)?;
        key_material_js(&m)
    }

    /// Before decrypting a frame (`kid`, `counter`) of receive context `context` with
    /// WebCrypto: the checks `decryptFrame` makes first (epoch held, sender leaf in its
    /// roster, the context's replay window). Returns the generation whose key to use; throws a
    /// `FrameError` (with `replay: true` for a refused counter) for a frame to drop.
    #[wasm_bindgen(js_name = screenFrame)]
    pub fn screen_frame(
        &mut self,
        context: f64,
        kid: f64,
        counter: f64,
        now: f64,
    ) -> Result<f64, JsValue> {
        let e = self
            .inner
            .screen_frame(
                value(context, "context")?,
                value(kid, "kid")?,
                value(counter, "counter")?,
                ms(now)?,
            )
            .map_err(e2ee_error)?;
        // Generations count installed epochs: far below 2^53.
        Ok(e as f64)
    }

    /// After WebCrypto authenticated a frame (`kid`, `counter`) of `context` with the key of
    /// `generation`: the same checks again, then the counter is recorded. Throws a
    /// `FrameError` (with `replay: true` for a refused counter) for a frame to drop.
    #[wasm_bindgen(js_name = acceptFrame)]
    pub fn accept_frame(
        &mut self,
        context: f64,
        kid: f64,
        generation: f64,
        counter: f64,
        now: f64,
    ) -> Result<(), JsValue> {
        self.inner
            .accept_frame(
                value(context, "context")?,
                value(kid, "kid")?,
                value(generation, "generation")?,
                value(counter, "counter")?,
                ms(now)?,
            )
            .map_err(e2ee_error)
    }

    /// `decryptFrame` returning only `data` (the frame as it was before encryption), without
    /// the result object: the worker's per-frame call. The sender is the leaf of the frame's
    /// key id, which authenticated with it.
    #[wasm_bindgen(js_name = decryptFrameData)]
    pub fn decrypt_frame_data(
        &mut self,
        frame: &[u8],
        now: f64,
        context: f64,
    ) -> Result<Vec<u8>, JsValue> {
        let (_, data) = self
            .inner
            .decrypt_frame_joined(value(context, "context")?, frame, ms(now)?)
            .map_err(e2ee_error)?;
        Ok(data)
    }

    /// When (ms since the Unix epoch) `handleTimeout` next has old keys to drop, or `undefined`.
    #[wasm_bindgen(js_name = pollTimeout)]
    pub fn poll_timeout(&self) -> Option<f64> {
        self.inner.poll_timeout().map(|d| d.as_millis() as f64)
    }

    /// Drops previous-epoch frame keys whose grace period has ended.
    #[wasm_bindgen(js_name = handleTimeout)]
    pub fn handle_timeout(&mut self, now: f64) -> Result<(), JsValue> {
        self.inner.handle_timeout(ms(now)?);
        Ok(())
    }
}

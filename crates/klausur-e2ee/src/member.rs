//! One device's membership in a meeting's MLS group, and the SFrame keys derived from it.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use openmls::prelude::{
    tls_codec::{Deserialize as _, Serialize as _},
    Capabilities, Ciphersuite, Credential as MlsCredential, CredentialType, CredentialWithKey,
    Extension, Extensions, GroupId, KeyPackage, KeyPackageIn, LeafNodeIndex, LeafNodeParameters,
    MlsGroup, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent,
    ProtocolVersion, RequiredCapabilitiesExtension, Sender, SignaturePublicKey, StagedCommit,
    StagedWelcome, WireFormatPolicy, PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
};
use openmls::prelude::{OpenMlsProvider as _, SignatureScheme};
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::signatures::{Signer, SignerError};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{internal, peer, CredentialError, E2eeError};
use crate::frame::{
    DecryptedFrame, DecryptedMeta, FrameCrypto, FrameKeyMaterial, StreamId, BASE_KEY_LABEL,
    BASE_KEY_LEN, DEFAULT_GRACE,
};
use crate::identity::{Credential, CredentialVerifier, SignedCredential, KLAUSUR_CREDENTIAL_TYPE};

/// The MLS ciphersuite of every klausur group.
pub const MLS_CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Application messages (chat) are padded to a multiple of this many bytes, so the delivery
/// service sees lengths only in steps of it.
pub const APPLICATION_PADDING: usize = 64;

/// Each member should update its own leaf at least this often (DESIGN.md section 4).
pub const LEAF_UPDATE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Handshake messages (commits) are MLS `PublicMessage`s, sent and accepted: the delivery
/// service follows the group's public state with them ([`crate::PublicTree`]: the ratchet
/// tree, whose leaf holds which credential) and checks leaf claims and commits against it.
/// A commit reveals nothing secret (its path secrets are encrypted to the members); the
/// server learns who commits which change to the membership, which it knows anyway. Chat
/// (application messages) is always a `PrivateMessage`, whatever this policy says. A
/// handshake as `PrivateMessage`, which the delivery service could not have followed, is
/// refused.
pub const WIRE_FORMAT_POLICY: WireFormatPolicy = PURE_PLAINTEXT_WIRE_FORMAT_POLICY;

/// Settings of a [`Member`].
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// How long receive keys of a previous epoch stay usable after an epoch change.
    pub frame_grace: Duration,
}

impl Default for MemberConfig {
    fn default() -> Self {
        Self {
            frame_grace: DEFAULT_GRACE,
        }
    }
}

/// A roster entry: an MLS leaf and the verified credential in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    /// MLS leaf index (the SFrame "member index").
    pub leaf_index: u32,
    /// The credential claims (verified when the member was accepted).
    pub credential: Credential,
}

/// What an epoch change did, computed by comparing the roster before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochChange {
    /// The new epoch.
    pub epoch: u64,
    /// Leaf index of the member who committed.
    pub committer: u32,
    /// Members that joined.
    pub added: Vec<RosterEntry>,
    /// Members that left or were removed.
    pub removed: Vec<RosterEntry>,
    /// The new meeting security code.
    pub security_code: String,
}

/// Result of [`Member::process_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A commit was verified and merged; frame keys of the new epoch are installed.
    EpochChanged(EpochChange),
    /// This member was removed by the commit; all frame keys were dropped.
    Removed {
        /// Leaf index of the member who removed us.
        by: u32,
    },
    /// An MLS application message (klausur's end-to-end encrypted chat; see
    /// [`Member::encrypt_application`]).
    Application {
        /// Leaf index of the member who sent it (its credential is in [`Member::roster`]).
        sender: u32,
        /// The plaintext.
        data: Vec<u8>,
    },
    /// The delivery service echoed a message of our own that needs no action (call
    /// [`Member::merge_pending_commit`] when the DS confirms an own commit).
    Ignored,
}

/// Output of a commit-producing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutput {
    /// The commit, to send to the delivery service.
    pub commit: Vec<u8>,
    /// The Welcome for joiners, if the commit adds anyone.
    pub welcome: Option<Vec<u8>>,
}

struct DeviceSigner(SigningKey);

impl Signer for DeviceSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_bytes().to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// One device in one meeting. See the crate docs for the sans-IO contract.
pub struct Member {
    provider: OpenMlsRustCrypto,
    signer: DeviceSigner,
    own: SignedCredential,
    verifier: Box<dyn CredentialVerifier + Send>,
    group: Option<MlsGroup>,
    frames: FrameCrypto,
    last_own_leaf_update: Option<Duration>,
    /// A renewed credential carried by the pending commit (see [`Member::renew_credential`]).
    pending_credential: Option<SignedCredential>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("user_id", &self.own.credential.user_id)
            .field("epoch", &self.group.as_ref().map(|g| g.epoch().as_u64()))
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

fn capabilities() -> Capabilities {
    Capabilities::builder()
        .ciphersuites(vec![MLS_CIPHERSUITE])
        .credentials(vec![CredentialType::Other(KLAUSUR_CREDENTIAL_TYPE)])
        .build()
}

/// Derives the meeting security code from an epoch authenticator.
///
/// `h = SHA-256("klausur security code v1" || epoch_authenticator)`; for `i` in `0..5` the
/// group is `u32::from_be_bytes(h[4i..4i+4]) mod 100000`, zero-padded to 5 digits; groups are
/// joined with single spaces, e.g. `"01234 56789 00017 99999 31415"` (about 83 bits).
pub fn security_code(epoch_authenticator: &[u8]) -> String {
    let h = Sha256::new()
        .chain_update(b"klausur security code v1")
        .chain_update(epoch_authenticator)
        .finalize();
    h.chunks_exact(4)
        .take(5)
        .map(|c| {
            let v = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            format!("{:05}", v % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The bytes a leaf claim signs ([`Member::sign_leaf_claim`]):
/// `"klausur-leaf-claim-v1" || u32 len || group id || u64 epoch || u32 leaf || u32 len ||
/// participant id` (big-endian). The label keeps it apart from every MLS signature (those
/// start with a length-prefixed `"MLS 1.0 "` label) and from continuity proofs.
pub fn leaf_claim_payload(
    group_id: &[u8],
    epoch: u64,
    leaf_index: u32,
    participant_id: &str,
) -> Result<Vec<u8>, E2eeError> {
    let len = |n: usize| {
        u32::try_from(n)
            .map(u32::to_be_bytes)
            .map_err(|_| E2eeError::Misuse("leaf claim field too long"))
    };
    let mut out = Vec::with_capacity(64 + group_id.len() + participant_id.len());
    out.extend_from_slice(b"klausur-leaf-claim-v1");
    out.extend_from_slice(&len(group_id.len())?);
    out.extend_from_slice(group_id);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&leaf_index.to_be_bytes());
    out.extend_from_slice(&len(participant_id.len())?);
    out.extend_from_slice(participant_id.as_bytes());
    Ok(out)
}

impl Member {
    /// Creates a device identity. `credential` must bind `signing_key`'s public key; `verifier`
    /// decides about every other member's credential.
    pub fn new(
        credential: SignedCredential,
        signing_key: SigningKey,
        verifier: impl CredentialVerifier + Send + 'static,
        config: MemberConfig,
    ) -> Result<Self, E2eeError> {
        if credential.credential.device_public_key != signing_key.verifying_key().to_bytes() {
            return Err(E2eeError::Misuse(
                "credential does not bind this device's signing key",
            ));
        }
        Ok(Self {
            provider: OpenMlsRustCrypto::default(),
            signer: DeviceSigner(signing_key),
            own: credential,
            verifier: Box::new(verifier),
            group: None,
            frames: FrameCrypto::new(config.frame_grace),
            last_own_leaf_update: None,
            pending_credential: None,
        })
    }

    fn credential_with_key(&self) -> Result<CredentialWithKey, E2eeError> {
        let bytes = self.own.to_bytes().map_err(internal)?;
        Ok(CredentialWithKey {
            credential: MlsCredential::new(CredentialType::Other(KLAUSUR_CREDENTIAL_TYPE), bytes),
            signature_key: SignaturePublicKey::from(
                self.signer.0.verifying_key().to_bytes().to_vec(),
            ),
        })
    }

    fn group(&self) -> Result<&MlsGroup, E2eeError> {
        self.group
            .as_ref()
            .ok_or(E2eeError::Misuse("not a member of a group"))
    }

    /// Checks one leaf's credential: klausur type, strict decoding, device key binding, and the
    /// caller's verifier.
    fn verify_leaf(
        &self,
        credential: &MlsCredential,
        signature_key: &[u8],
        leaf_index: Option<u32>,
        now: Duration,
    ) -> Result<SignedCredential, E2eeError> {
        let reject = |reason| E2eeError::CredentialRejected { leaf_index, reason };
        let ty = u16::from(credential.credential_type());
        if ty != KLAUSUR_CREDENTIAL_TYPE {
            return Err(reject(CredentialError::WrongType(ty)));
        }
        let sc = SignedCredential::from_bytes(credential.serialized_content()).map_err(reject)?;
        if sc.credential.device_public_key.as_slice() != signature_key {
            return Err(reject(CredentialError::DeviceKeyMismatch));
        }
        self.verifier.verify(&sc, now).map_err(reject)?;
        Ok(sc)
    }

    /// A fresh key package (TLS-serialized `KeyPackage`) to hand to the delivery service, so a
    /// member can add this device. Its private keys stay in this `Member`; join with
    /// [`Self::join_from_welcome`] on the same instance.
    pub fn key_package(&self) -> Result<Vec<u8>, E2eeError> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(capabilities())
            .build(
                MLS_CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential_with_key()?,
            )
            .map_err(internal)?;
        bundle
            .key_package()
            .tls_serialize_detached()
            .map_err(internal)
    }

    /// Creates a new group (epoch 0) with this device as its only member.
    pub fn create_group(&mut self, group_id: &[u8], now: Duration) -> Result<(), E2eeError> {
        if self.group.is_some() {
            return Err(E2eeError::Misuse("already in a group"));
        }
        let required = Extensions::single(Extension::RequiredCapabilities(
            RequiredCapabilitiesExtension::new(
                &[],
                &[],
                &[CredentialType::Other(KLAUSUR_CREDENTIAL_TYPE)],
            ),
        ))
        .map_err(internal)?;
        let group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(group_id))
            .ciphersuite(MLS_CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .with_wire_format_policy(WIRE_FORMAT_POLICY)
            .padding_size(APPLICATION_PADDING)
            .with_capabilities(capabilities())
            .with_group_context_extensions(required)
            .build(&self.provider, &self.signer, self.credential_with_key()?)
            .map_err(internal)?;
        self.group = Some(group);
        self.last_own_leaf_update = Some(now);
        self.install_epoch(now)
    }

    fn install_epoch(&mut self, now: Duration) -> Result<(), E2eeError> {
        let g = self.group()?;
        let base = Zeroizing::new(
            g.export_secret(self.provider.crypto(), BASE_KEY_LABEL, b"", BASE_KEY_LEN)
                .map_err(internal)?,
        );
        let epoch = g.epoch().as_u64();
        let own = g.own_leaf_index().u32();
        let members: Vec<u32> = g.members().map(|m| m.index.u32()).collect();
        self.frames.install_epoch(epoch, base, own, members, now);
        Ok(())
    }

    /// Parses, validates and verifies one joiner's key package.
    fn checked_key_package(
        &self,
        bytes: &[u8],
        now: Duration,
    ) -> Result<(KeyPackage, SignedCredential), E2eeError> {
        let kp = KeyPackageIn::tls_deserialize_exact(bytes)
            .map_err(peer)?
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(peer)?;
        let leaf = kp.leaf_node();
        let sc = self.verify_leaf(
            leaf.credential(),
            leaf.signature_key().as_slice(),
            None,
            now,
        )?;
        Ok((kp, sc))
    }

    /// Parses, validates and verifies key packages of joiners.
    fn checked_key_packages(
        &self,
        key_packages: &[Vec<u8>],
        now: Duration,
    ) -> Result<Vec<KeyPackage>, E2eeError> {
        key_packages
            .iter()
            .map(|bytes| Ok(self.checked_key_package(bytes, now)?.0))
            .collect()
    }

    /// Checks a joiner's key package exactly as [`Self::add`] would (MLS validation, klausur
    /// credential type, device key bound to the leaf, the verifier at `now`) without committing
    /// anything, and returns the verified credential claims, so the caller can apply its
    /// admission policy (user id, kind, display name) before adding. Does not need a group.
    pub fn verify_key_package(&self, bytes: &[u8], now: Duration) -> Result<Credential, E2eeError> {
        Ok(self.checked_key_package(bytes, now)?.1.credential)
    }

    /// Adds joiners (all in one commit). Every key package's credential is verified first;
    /// if any fails, nothing is committed. The commit stays pending until
    /// [`Self::merge_pending_commit`] (DS accepted it) or [`Self::discard_pending_commit`].
    pub fn add(
        &mut self,
        key_packages: &[Vec<u8>],
        now: Duration,
    ) -> Result<CommitOutput, E2eeError> {
        if key_packages.is_empty() {
            return Err(E2eeError::Misuse("no key packages"));
        }
        let kps = self.checked_key_packages(key_packages, now)?;
        let g = self
            .group
            .as_mut()
            .ok_or(E2eeError::Misuse("not a member of a group"))?;
        let (commit, welcome, _group_info) = g
            .add_members(&self.provider, &self.signer, &kps)
            .map_err(internal)?;
        Ok(CommitOutput {
            commit: commit.to_bytes().map_err(internal)?,
            welcome: Some(welcome.to_bytes().map_err(internal)?),
        })
    }

    /// Removes members by leaf index (one commit). Pending until merged.
    pub fn remove(&mut self, leaf_indices: &[u32]) -> Result<CommitOutput, E2eeError> {
        let g = self
            .group
            .as_mut()
            .ok_or(E2eeError::Misuse("not a member of a group"))?;
        if leaf_indices.is_empty() {
            return Err(E2eeError::Misuse("no members to remove"));
        }
        if leaf_indices.contains(&g.own_leaf_index().u32()) {
            return Err(E2eeError::Misuse("cannot remove own leaf"));
        }
        for &i in leaf_indices {
            if g.member(LeafNodeIndex::new(i)).is_none() {
                return Err(E2eeError::Misuse("no member at that leaf index"));
            }
        }
        let idx: Vec<LeafNodeIndex> = leaf_indices
            .iter()
            .map(|&i| LeafNodeIndex::new(i))
            .collect();
        let (commit, welcome, _gi) = g
            .remove_members(&self.provider, &self.signer, &idx)
            .map_err(internal)?;
        Ok(CommitOutput {
            commit: commit.to_bytes().map_err(internal)?,
            welcome: welcome
                .map(|w| w.to_bytes())
                .transpose()
                .map_err(internal)?,
        })
    }

    /// Commits a fresh leaf (new HPKE key, path secrets) for post-compromise security. Pending
    /// until merged.
    pub fn update_own_leaf(&mut self) -> Result<CommitOutput, E2eeError> {
        let g = self
            .group
            .as_mut()
            .ok_or(E2eeError::Misuse("not a member of a group"))?;
        let bundle = g
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .map_err(internal)?;
        let (commit, _welcome, _gi) = bundle.into_contents();
        Ok(CommitOutput {
            commit: commit.to_bytes().map_err(internal)?,
            welcome: None,
        })
    }

    /// Commits an update of this device's own leaf that carries `credential`, a renewed
    /// credential (same user id, display name and kind, same device key) issued before the
    /// current one expires. Credentials are short-lived; members refuse commits and Welcomes
    /// that carry an expired one, so every member renews before `not_after`. Pending until
    /// merged; on merge the new credential becomes this device's.
    pub fn renew_credential(
        &mut self,
        credential: SignedCredential,
    ) -> Result<CommitOutput, E2eeError> {
        self.renew_credential_inner(credential, true)
    }

    /// `check_identity: false` only in tests (a client that tries to change its identity).
    fn renew_credential_inner(
        &mut self,
        credential: SignedCredential,
        check_identity: bool,
    ) -> Result<CommitOutput, E2eeError> {
        let (a, b) = (&self.own.credential, &credential.credential);
        if b.device_public_key != self.signer.0.verifying_key().to_bytes() {
            return Err(E2eeError::Misuse(
                "credential does not bind this device's signing key",
            ));
        }
        if check_identity
            && (a.user_id != b.user_id || a.display_name != b.display_name || a.kind != b.kind)
        {
            return Err(E2eeError::Misuse(
                "a renewed credential must keep user id, display name and kind",
            ));
        }
        let bytes = credential.to_bytes().map_err(internal)?;
        let cwk = CredentialWithKey {
            credential: MlsCredential::new(CredentialType::Other(KLAUSUR_CREDENTIAL_TYPE), bytes),
            signature_key: SignaturePublicKey::from(
                self.signer.0.verifying_key().to_bytes().to_vec(),
            ),
        };
        let g = self
            .group
            .as_mut()
            .ok_or(E2eeError::Misuse("not a member of a group"))?;
        let params = LeafNodeParameters::builder()
            .with_credential_with_key(cwk)
            .build();
        let bundle = g
            .self_update(&self.provider, &self.signer, params)
            .map_err(internal)?;
        let (commit, _welcome, _gi) = bundle.into_contents();
        self.pending_credential = Some(credential);
        Ok(CommitOutput {
            commit: commit.to_bytes().map_err(internal)?,
            welcome: None,
        })
    }

    /// Whether [`LEAF_UPDATE_INTERVAL`] has passed since this device last refreshed its leaf.
    pub fn leaf_update_due(&self, now: Duration) -> bool {
        self.group.is_some()
            && self
                .last_own_leaf_update
                .is_none_or(|t| now.saturating_sub(t) >= LEAF_UPDATE_INTERVAL)
    }

    fn roster_map(&self) -> BTreeMap<u32, (Vec<u8>, Credential)> {
        let Some(g) = self.group.as_ref() else {
            return BTreeMap::new();
        };
        g.members()
            .filter_map(|m| {
                let sc = SignedCredential::from_bytes(m.credential.serialized_content()).ok()?;
                Some((m.index.u32(), (m.signature_key, sc.credential)))
            })
            .collect()
    }

    fn diff(
        &self,
        before: BTreeMap<u32, (Vec<u8>, Credential)>,
        committer: u32,
    ) -> Result<EpochChange, E2eeError> {
        let after = self.roster_map();
        let entry = |(i, (_, c)): (&u32, &(Vec<u8>, Credential))| RosterEntry {
            leaf_index: *i,
            credential: c.clone(),
        };
        let added = after
            .iter()
            .filter(|(i, (k, _))| before.get(i).is_none_or(|(bk, _)| bk != k))
            .map(entry)
            .collect();
        let removed = before
            .iter()
            .filter(|(i, (k, _))| after.get(i).is_none_or(|(ak, _)| ak != k))
            .map(entry)
            .collect();
        Ok(EpochChange {
            epoch: self.epoch()?,
            committer,
            added,
            removed,
            security_code: self.security_code()?,
        })
    }

    /// Applies this device's pending commit once the delivery service confirmed it won the
    /// epoch, and installs the new epoch's frame keys.
    pub fn merge_pending_commit(&mut self, now: Duration) -> Result<EpochChange, E2eeError> {
        let before = self.roster_map();
        let g = self
            .group
            .as_mut()
            .ok_or(E2eeError::Misuse("not a member of a group"))?;
        if g.pending_commit().is_none() {
            return Err(E2eeError::Misuse("no pending commit"));
        }
        let own = g.own_leaf_index().u32();
        let own_path = g
            .pending_commit()
            .and_then(StagedCommit::update_path_leaf_node)
            .is_some();
        g.merge_pending_commit(&self.provider).map_err(internal)?;
        let renewed = self.pending_credential.take();
        if own_path {
            self.last_own_leaf_update = Some(now);
            if let Some(c) = renewed {
                self.own = c;
            }
        }
        self.install_epoch(now)?;
        self.diff(before, own)
    }

    /// Drops this device's pending commit (another commit won the epoch at the DS).
    pub fn discard_pending_commit(&mut self) -> Result<(), E2eeError> {
        self.pending_credential = None;
        let g = self
            .group
            .as_mut()
            .ok_or(E2eeError::Misuse("not a member of a group"))?;
        g.clear_pending_commit(self.provider.storage())
            .map_err(internal)
    }

    /// A member may refresh its leaf and renew its credential, but not change who it is: the
    /// new credential must name the same user id, display name and kind as the leaf's current
    /// one.
    fn check_same_identity(
        &self,
        leaf_index: u32,
        new: &SignedCredential,
    ) -> Result<(), E2eeError> {
        let reject = |reason| E2eeError::CredentialRejected {
            leaf_index: Some(leaf_index),
            reason,
        };
        let current = self
            .group()?
            .member(LeafNodeIndex::new(leaf_index))
            .ok_or_else(|| reject(CredentialError::Malformed("no member at that leaf")))?;
        let current = SignedCredential::from_bytes(current.serialized_content()).map_err(reject)?;
        let (a, b) = (&current.credential, &new.credential);
        if a.user_id != b.user_id || a.display_name != b.display_name || a.kind != b.kind {
            return Err(reject(CredentialError::Policy(
                "a member's leaf update changes its identity".into(),
            )));
        }
        Ok(())
    }

    fn check_staged(
        &self,
        staged: &StagedCommit,
        committer: u32,
        now: Duration,
    ) -> Result<(), E2eeError> {
        for add in staged.add_proposals() {
            let leaf = add.add_proposal().key_package().leaf_node();
            self.verify_leaf(
                leaf.credential(),
                leaf.signature_key().as_slice(),
                None,
                now,
            )?;
        }
        for upd in staged.update_proposals() {
            let leaf = upd.update_proposal().leaf_node();
            let idx = match upd.sender() {
                Sender::Member(i) => Some(i.u32()),
                _ => None,
            };
            let sc =
                self.verify_leaf(leaf.credential(), leaf.signature_key().as_slice(), idx, now)?;
            if let Some(i) = idx {
                self.check_same_identity(i, &sc)?;
            }
        }
        if let Some(leaf) = staged.update_path_leaf_node() {
            let sc = self.verify_leaf(
                leaf.credential(),
                leaf.signature_key().as_slice(),
                Some(committer),
                now,
            )?;
            self.check_same_identity(committer, &sc)?;
        }
        Ok(())
    }

    /// Decodes and processes (verifies, decrypts) one handshake or application message, which
    /// must come from a member; returns its sender's leaf index and its content, of which
    /// nothing is merged yet.
    fn process_from_member(
        &mut self,
        bytes: &[u8],
    ) -> Result<(u32, ProcessedMessageContent), E2eeError> {
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(peer)?;
        let pm = msg
            .try_into_protocol_message()
            .map_err(|_| E2eeError::Refused("not an MLS handshake or application message"))?;
        let g = self
            .group
            .as_mut()
            .ok_or(E2eeError::Misuse("not a member of a group"))?;
        let processed = g.process_message(&self.provider, pm).map_err(peer)?;
        let sender = match processed.sender() {
            Sender::Member(i) => i.u32(),
            _ => return Err(E2eeError::Refused("message not sent by a group member")),
        };
        Ok((sender, processed.into_content()))
    }

    /// Handles one MLS message from the delivery service.
    ///
    /// Commits are accepted only from members; every credential they bring in (Adds, Updates,
    /// the committer's new leaf) is verified before merging. On
    /// [`E2eeError::CredentialRejected`] nothing is merged (this device stays in the old epoch;
    /// show the warning). Standalone and external proposals and external commits are refused:
    /// only a member's commit can change the group.
    pub fn process_message(&mut self, bytes: &[u8], now: Duration) -> Result<Event, E2eeError> {
        let before = self.roster_map();
        let (committer, content) = self.process_from_member(bytes)?;
        match content {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                self.check_staged(&staged, committer, now)?;
                let self_removed = staged.self_removed();
                let g = self
                    .group
                    .as_mut()
                    .ok_or(E2eeError::Misuse("not a member of a group"))?;
                g.merge_staged_commit(&self.provider, *staged)
                    .map_err(internal)?;
                if self_removed {
                    self.frames.clear();
                    self.group = None;
                    return Ok(Event::Removed { by: committer });
                }
                self.install_epoch(now)?;
                Ok(Event::EpochChanged(self.diff(before, committer)?))
            }
            ProcessedMessageContent::OwnPendingCommit => {
                Ok(Event::EpochChanged(self.merge_pending_commit(now)?))
            }
            ProcessedMessageContent::ApplicationMessage(m) => Ok(Event::Application {
                sender: committer,
                data: m.into_bytes(),
            }),
            ProcessedMessageContent::ProposalMessage(_)
            | ProcessedMessageContent::ExternalJoinProposalMessage(_) => Err(E2eeError::Refused(
                "standalone proposals are not accepted; members send commits",
            )),
            #[allow(unreachable_patterns)]
            _ => Ok(Event::Ignored),
        }
    }

    /// Decrypts a chat message: like [`Self::process_message`], but only an application message
    /// is accepted. A commit (or anything else) is refused *without* being merged, so a
    /// delivery service cannot slip a handshake past the ordered commit path by calling it
    /// chat. Returns the sender's leaf index and the plaintext.
    pub fn decrypt_application(&mut self, bytes: &[u8]) -> Result<(u32, Vec<u8>), E2eeError> {
        match self.process_from_member(bytes)? {
            (sender, ProcessedMessageContent::ApplicationMessage(m)) => {
                Ok((sender, m.into_bytes()))
            }
            _ => Err(E2eeError::Refused(
                "not an application message (handshakes go through process_message)",
            )),
        }
    }

    /// Joins a group from a Welcome addressed to a key package of this instance. Every member's
    /// credential in the group is verified before the group is accepted.
    pub fn join_from_welcome(&mut self, welcome: &[u8], now: Duration) -> Result<(), E2eeError> {
        if self.group.is_some() {
            return Err(E2eeError::Misuse("already in a group"));
        }
        let msg = MlsMessageIn::tls_deserialize_exact(welcome).map_err(peer)?;
        let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
            return Err(E2eeError::PeerInput("not a Welcome message".into()));
        };
        let cfg = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(WIRE_FORMAT_POLICY)
            .padding_size(APPLICATION_PADDING)
            .build();
        let staged =
            StagedWelcome::new_from_welcome(&self.provider, &cfg, welcome, None).map_err(peer)?;
        for m in staged.members() {
            self.verify_leaf(&m.credential, &m.signature_key, Some(m.index.u32()), now)?;
        }
        let group = staged.into_group(&self.provider).map_err(peer)?;
        self.group = Some(group);
        self.last_own_leaf_update = Some(now);
        self.install_epoch(now)
    }

    /// Leaves the group state behind without a commit: its MLS state (deleted from the storage
    /// provider) and all frame keys are gone, the device key and credential stay. For a device
    /// whose last epoch the others never reached (the delivery service voided the commit it made
    /// or joined by): it then sends a fresh [`Self::key_package`] to be added again.
    pub fn reset(&mut self) -> Result<(), E2eeError> {
        self.pending_credential = None;
        self.frames.clear();
        if let Some(mut g) = self.group.take() {
            g.delete(self.provider.storage()).map_err(internal)?;
        }
        Ok(())
    }

    /// The group's `GroupInfo` of the current epoch with its ratchet tree (a TLS-serialized
    /// `MLSMessage`), signed by this device: what the delivery service needs to start following
    /// the group's public state ([`crate::PublicTree::from_group_info`]). The creator sends it
    /// with its first leaf claim. Public data: the tree's credentials and public keys.
    pub fn group_info(&self) -> Result<Vec<u8>, E2eeError> {
        let g = self.group()?;
        g.export_group_info(self.provider.crypto(), &self.signer, true)
            .map_err(internal)?
            .to_bytes()
            .map_err(internal)
    }

    /// This device's leaf claim for participant `participant_id` (the server's id for this
    /// connection): an Ed25519 signature by the device key over the current group id, epoch
    /// and own leaf index and the participant id ([`leaf_claim_payload`]), sent with
    /// `mls_member`. The delivery service verifies it against the key of that leaf in the
    /// group's public tree, so no participant can claim a leaf it does not hold.
    pub fn sign_leaf_claim(&self, participant_id: &str) -> Result<Vec<u8>, E2eeError> {
        let g = self.group()?;
        let payload = leaf_claim_payload(
            g.group_id().as_slice(),
            g.epoch().as_u64(),
            g.own_leaf_index().u32(),
            participant_id,
        )?;
        Ok(self.signer.0.sign(&payload).to_bytes().to_vec())
    }

    /// Whether this device is currently in a group.
    pub fn in_group(&self) -> bool {
        self.group.is_some()
    }

    /// This device's own credential.
    pub fn credential(&self) -> &SignedCredential {
        &self.own
    }

    /// Own leaf index in the group.
    pub fn leaf_index(&self) -> Result<u32, E2eeError> {
        Ok(self.group()?.own_leaf_index().u32())
    }

    /// The group's members with their verified credentials, by leaf index.
    pub fn roster(&self) -> Result<Vec<RosterEntry>, E2eeError> {
        self.group()?
            .members()
            .map(|m| {
                let sc = SignedCredential::from_bytes(m.credential.serialized_content())
                    .map_err(internal)?;
                Ok(RosterEntry {
                    leaf_index: m.index.u32(),
                    credential: sc.credential,
                })
            })
            .collect()
    }

    /// Current MLS epoch.
    pub fn epoch(&self) -> Result<u64, E2eeError> {
        Ok(self.group()?.epoch().as_u64())
    }

    /// The MLS epoch authenticator of the current epoch (equal for all members in the epoch).
    pub fn epoch_authenticator(&self) -> Result<Vec<u8>, E2eeError> {
        Ok(self.group()?.epoch_authenticator().as_slice().to_vec())
    }

    /// The meeting security code of the current epoch, see [`security_code`].
    pub fn security_code(&self) -> Result<String, E2eeError> {
        Ok(security_code(&self.epoch_authenticator()?))
    }

    /// Encrypts `data` as an MLS application message (a `PrivateMessage`, TLS-serialized) of
    /// the current epoch, signed by this device: klausur's end-to-end encrypted chat. Members
    /// get `data` and this device's leaf index from [`Member::process_message`]
    /// ([`Event::Application`]); the sender cannot decrypt its own message. No keys of past
    /// epochs are kept, so a receiver must still be in this epoch: the delivery service relays
    /// application messages of the current epoch only.
    pub fn encrypt_application(&mut self, data: &[u8]) -> Result<Vec<u8>, E2eeError> {
        let g = self
            .group
            .as_mut()
            .ok_or(E2eeError::Misuse("not a member of a group"))?;
        let msg = g
            .create_message(&self.provider, &self.signer, data)
            .map_err(internal)?;
        msg.tls_serialize_detached().map_err(internal)
    }

    /// Encrypts one media frame of `stream` with the current epoch's keys.
    pub fn encrypt_frame(
        &mut self,
        stream: StreamId,
        clear_header: &[u8],
        payload: &[u8],
    ) -> Result<Vec<u8>, E2eeError> {
        Ok(self.frames.encrypt(stream, clear_header, payload)?)
    }

    /// Decrypts one media frame at `now` (one replay window per sender and stream for all
    /// frames; see [`Self::decrypt_frame_in`]).
    pub fn decrypt_frame(
        &mut self,
        frame: &[u8],
        now: Duration,
    ) -> Result<DecryptedFrame, E2eeError> {
        Ok(self.frames.decrypt(frame, now)?)
    }

    /// Decrypts one media frame that came in on receive context `context` (the caller's name
    /// for the track it came in on) at `now`: replay windows are kept per context, so frames on
    /// one track cannot make another track's frames look old ([`crate::frame`], "Replay
    /// window").
    pub fn decrypt_frame_in(
        &mut self,
        context: u64,
        frame: &[u8],
        now: Duration,
    ) -> Result<DecryptedFrame, E2eeError> {
        Ok(self.frames.decrypt_in(context, frame, now)?)
    }

    /// When [`Self::handle_timeout`] next has keys to drop.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.frames.poll_timeout()
    }

    /// Drops previous-epoch frame keys whose grace period has ended.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.frames.handle_timeout(now);
    }

    /// [`Self::decrypt_frame_in`] with the clear header and the payload in one buffer
    /// ([`FrameCrypto::decrypt_joined`]).
    pub fn decrypt_frame_joined(
        &mut self,
        context: u64,
        frame: &[u8],
        now: Duration,
    ) -> Result<(DecryptedMeta, Vec<u8>), E2eeError> {
        Ok(self.frames.decrypt_joined(context, frame, now)?)
    }

    /// Key material to send frames of `stream` with an outside cipher (the browser's
    /// WebCrypto); see [`crate::frame`], "Key material for an outside cipher".
    pub fn frame_send_key(&mut self, stream: StreamId) -> Result<FrameKeyMaterial, E2eeError> {
        Ok(self.frames.send_key(stream)?)
    }

    /// The next counter of `stream` for a frame an outside cipher encrypts with the key of
    /// `generation` ([`FrameCrypto::reserve_counter`]).
    pub fn reserve_frame_counter(
        &mut self,
        stream: StreamId,
        generation: u64,
    ) -> Result<u64, E2eeError> {
        Ok(self.frames.reserve_counter(stream, generation)?)
    }

    /// Key material to decrypt frames of `kid` with an outside cipher
    /// ([`FrameCrypto::receive_key`]).
    pub fn frame_receive_key(
        &mut self,
        kid: u64,
        now: Duration,
    ) -> Result<FrameKeyMaterial, E2eeError> {
        Ok(self.frames.receive_key(kid, now)?)
    }

    /// Checks a frame before an outside cipher decrypts it; returns the generation whose key to use
    /// ([`FrameCrypto::screen_frame`]).
    pub fn screen_frame(
        &mut self,
        context: u64,
        kid: u64,
        counter: u64,
        now: Duration,
    ) -> Result<u64, E2eeError> {
        Ok(self.frames.screen_frame(context, kid, counter, now)?)
    }

    /// Records a frame an outside cipher authenticated, or refuses it
    /// ([`FrameCrypto::accept_frame`]).
    pub fn accept_frame(
        &mut self,
        context: u64,
        kid: u64,
        generation: u64,
        counter: u64,
        now: Duration,
    ) -> Result<(), E2eeError> {
        Ok(self
            .frames
            .accept_frame(context, kid, generation, counter, now)?)
    }

    /// The frame crypto state (read-only), e.g. for diagnostics.
    pub fn frames(&self) -> &FrameCrypto {
        &self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CaVerifier, IdentityCa, ParticipantKind};

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> Duration {
        Duration::from_secs(T0 + secs)
    }

    fn cred(ca: &IdentityCa, name: &str, seed: u8, nb: u64, na: u64) -> SignedCredential {
        let dev = SigningKey::from_bytes(&[seed; 32]).verifying_key();
        ca.issue(name, name, ParticipantKind::Staff, &dev, T0 + nb, T0 + na)
            .expect("issue")
    }

    fn member(ca: &IdentityCa, name: &str, seed: u8, nb: u64, na: u64) -> Member {
        let verifier = CaVerifier {
            ca_public_key: ca.public_key(),
        };
        Member::new(
            cred(ca, name, seed, nb, na),
            SigningKey::from_bytes(&[seed; 32]),
            verifier,
            MemberConfig::default(),
        )
        .expect("member")
    }

    fn epoch_change(ev: Event) -> EpochChange {
        match ev {
            Event::EpochChanged(c) => c,
            other => panic!("expected an epoch change, got {other:?}"),
        }
    }

    #[test]
    fn renewed_credentials_keep_a_long_meeting_going() {
        let ca = IdentityCa::new(SigningKey::from_bytes(&[1; 32]));
        // Credentials valid for one hour from T0.
        let mut a = member(&ca, "ann", 10, 0, 3600);
        let mut b = member(&ca, "ben", 11, 0, 3600);
        a.create_group(b"long", at(1)).expect("create");
        let out = a.add(&[b.key_package().expect("kp")], at(1)).expect("add");
        a.merge_pending_commit(at(1)).expect("merge");
        b.join_from_welcome(&out.welcome.expect("welcome"), at(1))
            .expect("join");

        // Without renewal, a leaf update after expiry is refused by the other member.
        let out = a.update_own_leaf().expect("update");
        match b.process_message(&out.commit, at(3700)) {
            Err(E2eeError::CredentialRejected { reason, .. }) => {
                assert_eq!(reason, CredentialError::Expired)
            }
            other => panic!("expected rejection, got {other:?}"),
        }
        a.discard_pending_commit().expect("discard");

        // Renewal before expiry: both renew; afterwards updates and joins work past the first
        // hour.
        let renew = |m: &mut Member, other: &mut Member, name: &str, seed: u8| {
            // Refused: another identity, another device key.
            assert!(matches!(
                m.renew_credential(cred(&ca, "eve", seed, 3000, 7200)),
                Err(E2eeError::Misuse(_))
            ));
            assert!(matches!(
                m.renew_credential(cred(&ca, name, 99, 3000, 7200)),
                Err(E2eeError::Misuse(_))
            ));
            let out = m
                .renew_credential(cred(&ca, name, seed, 3000, 7200))
                .expect("renew");
            m.merge_pending_commit(at(3100)).expect("merge");
            let ch = epoch_change(other.process_message(&out.commit, at(3100)).expect("ok"));
            assert!(ch.added.is_empty() && ch.removed.is_empty());
            assert_eq!(m.credential().credential.not_after, T0 + 7200);
        };
        renew(&mut a, &mut b, "ann", 10);
        renew(&mut b, &mut a, "ben", 11);
        assert_eq!(
            a.security_code().expect("code"),
            b.security_code().expect("code")
        );
        let out = a.update_own_leaf().expect("update");
        a.merge_pending_commit(at(3700)).expect("merge");
        epoch_change(b.process_message(&out.commit, at(3700)).expect("accepted"));
        let mut c = member(&ca, "cem", 12, 3600, 7200);
        let out = b
            .add(&[c.key_package().expect("kp")], at(3700))
            .expect("add");
        b.merge_pending_commit(at(3700)).expect("merge");
        epoch_change(a.process_message(&out.commit, at(3700)).expect("accepted"));
        c.join_from_welcome(&out.welcome.expect("welcome"), at(3700))
            .expect("the joiner accepts the renewed credentials");
        assert_eq!(
            c.security_code().expect("code"),
            a.security_code().expect("code")
        );

        // A member cannot change who it is with a leaf update (a CA-signed credential for
        // another identity and its own device key): every other member refuses the commit.
        let epoch = a.epoch().expect("epoch");
        let out = c
            .renew_credential_inner(cred(&ca, "mallory", 12, 3600, 7200), false)
            .expect("commit");
        for m in [&mut a, &mut b] {
            match m.process_message(&out.commit, at(3800)) {
                Err(E2eeError::CredentialRejected {
                    reason: CredentialError::Policy(_),
                    leaf_index: Some(2),
                }) => {}
                other => panic!("expected rejection, got {other:?}"),
            }
            assert_eq!(m.epoch().expect("epoch"), epoch);
        }
    }
}

//! The delivery service's view of a meeting's MLS group: its public state (ratchet tree and
//! group context), followed without any secret from the creator's `GroupInfo` and from every
//! commit, so that the server can check a *leaf claim* (which participant holds which leaf)
//! and a *commit* (who sends it, whom it removes, whom it adds) against the group itself
//! instead of taking a participant's word.
//!
//! The work is openmls' [`PublicGroup`], made for a delivery service that follows a group: it
//! verifies the `GroupInfo` signature and the whole tree (tree hash,
//! parent hashes, every leaf's signature) when it starts, and for every commit the sender's
//! signature, the proposals and the update path, exactly as members do, short of what needs
//! the group's secrets (the membership tag, the confirmation tag, the encrypted path secrets).
//! This needs commits as MLS `PublicMessage`s ([`crate::WIRE_FORMAT_POLICY`]).
//!
//! What it cannot know: whether the members will accept a commit it accepted (a commit can
//! carry a credential that is not the CA's, or path secrets that do not decrypt; members
//! check those), so a commit it merged can still be voided: [`PublicTree::snapshot`] before
//! merging and [`PublicTree::restore`] undo it. Credentials are read from the tree as they
//! stand; their CA signature is the members' to verify.
//!
//! Sans-IO: no clock (openmls checks leaf lifetimes against the system clock when the view
//! starts), no network; the caller feeds bytes in the order the delivery service accepted them.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use openmls::prelude::{
    tls_codec::{Deserialize as _, Serialize as _},
    LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProposalStore,
    PublicGroup, Sender, StagedCommit,
};
use openmls_rust_crypto::{MemoryStorage, RustCrypto};

use crate::error::{internal, peer, E2eeError};
use crate::identity::{Credential, SignedCredential, KLAUSUR_CREDENTIAL_TYPE};
use crate::member::{leaf_claim_payload, MLS_CIPHERSUITE};

/// A leaf of the public tree and the identity in it: the leaf's signature key (the device key)
/// and the klausur credential it carries, as the tree holds them (the CA signature is not
/// checked here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafIdentity {
    /// The leaf index.
    pub leaf_index: u32,
    /// The leaf's signature key: the device key of the member there.
    pub device_key: [u8; 32],
    /// The credential in the leaf (bound to `device_key`).
    pub credential: Credential,
}

/// A commit that verified against the public state, not merged yet ([`PublicTree::check_commit`]).
pub struct CheckedCommit {
    staged: StagedCommit,
    /// The leaf of the member who sent it.
    pub sender: u32,
    /// Leaves the commit removes.
    pub removed: Vec<u32>,
    /// The key packages the commit adds, TLS-encoded (as joiners sent them to the delivery
    /// service).
    pub added: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CheckedCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedCommit")
            .field("sender", &self.sender)
            .field("removed", &self.removed)
            .field("added", &self.added.len())
            .finish_non_exhaustive()
    }
}

/// The public state before a commit was merged, to undo it ([`PublicTree::restore`]).
pub struct TreeSnapshot {
    values: HashMap<Vec<u8>, Vec<u8>>,
    epoch: u64,
}

impl std::fmt::Debug for TreeSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeSnapshot")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// The public state of one group, as the delivery service follows it. See the module docs.
pub struct PublicTree {
    crypto: RustCrypto,
    storage: MemoryStorage,
    group: PublicGroup,
}

impl std::fmt::Debug for PublicTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicTree")
            .field("epoch", &self.epoch())
            .field("members", &self.group.members().count())
            .finish_non_exhaustive()
    }
}

fn device_key(signature_key: &[u8]) -> Result<[u8; 32], E2eeError> {
    signature_key
        .try_into()
        .map_err(|_| E2eeError::PeerInput("a leaf's signature key is not 32 bytes".into()))
}

impl PublicTree {
    /// Starts following a group from a `GroupInfo` with its ratchet tree (a TLS-encoded
    /// `MLSMessage`, [`crate::Member::group_info`]) for the group `group_id`. Verifies the
    /// `GroupInfo` signature and the tree; refuses another group, ciphersuite, or a tree
    /// without the ratchet tree extension.
    pub fn from_group_info(bytes: &[u8], group_id: &[u8]) -> Result<Self, E2eeError> {
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(peer)?;
        let MlsMessageBodyIn::GroupInfo(info) = msg.extract() else {
            return Err(E2eeError::PeerInput("not a GroupInfo message".into()));
        };
        if info.group_id().as_slice() != group_id {
            return Err(E2eeError::PeerInput(
                "the GroupInfo is for another group".into(),
            ));
        }
        if info.ciphersuite() != MLS_CIPHERSUITE {
            return Err(E2eeError::PeerInput(
                "the GroupInfo uses another ciphersuite".into(),
            ));
        }
        let tree = info
            .extensions()
            .ratchet_tree()
            .ok_or_else(|| E2eeError::PeerInput("the GroupInfo carries no ratchet tree".into()))?
            .ratchet_tree()
            .clone();
        let crypto = RustCrypto::default();
        let storage = MemoryStorage::default();
        let (group, _) =
            PublicGroup::from_external(&crypto, &storage, tree, info, ProposalStore::default())
                .map_err(peer)?;
        Ok(Self {
            crypto,
            storage,
            group,
        })
    }

    /// The group's current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// The group id.
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id().as_slice()
    }

    /// The occupied leaves, ascending.
    pub fn leaves(&self) -> Vec<u32> {
        self.group.members().map(|m| m.index.u32()).collect()
    }

    /// The identity at `leaf`, if it is occupied by a leaf with a klausur credential bound to
    /// its signature key (anything else is an error: members would not have accepted it).
    pub fn leaf(&self, leaf: u32) -> Result<LeafIdentity, E2eeError> {
        let node = self
            .group
            .leaf(LeafNodeIndex::new(leaf))
            .ok_or_else(|| E2eeError::PeerInput(format!("leaf {leaf} is empty")))?;
        let key = device_key(node.signature_key().as_slice())?;
        let cred = node.credential();
        if u16::from(cred.credential_type()) != KLAUSUR_CREDENTIAL_TYPE {
            return Err(E2eeError::PeerInput(format!(
                "leaf {leaf} does not hold a klausur credential"
            )));
        }
        let sc = SignedCredential::from_bytes(cred.serialized_content())
            .map_err(|e| E2eeError::PeerInput(format!("leaf {leaf}: {e}")))?;
        if sc.credential.device_public_key != key {
            return Err(E2eeError::PeerInput(format!(
                "leaf {leaf}: the credential binds another device key"
            )));
        }
        Ok(LeafIdentity {
            leaf_index: leaf,
            device_key: key,
            credential: sc.credential,
        })
    }

    /// Checks a leaf claim ([`crate::Member::sign_leaf_claim`]): `signature` must verify under
    /// the device key now at `leaf` over this group's id, `epoch`, `leaf` and
    /// `participant_id`, and `epoch` must not be ahead of the group. Returns the identity at
    /// the leaf. Only the holder of the leaf's device key can make a claim that passes.
    pub fn verify_leaf_claim(
        &self,
        leaf: u32,
        epoch: u64,
        participant_id: &str,
        signature: &[u8],
    ) -> Result<LeafIdentity, E2eeError> {
        if epoch > self.epoch() {
            return Err(E2eeError::PeerInput(format!(
                "the claim names epoch {epoch}, the group is at {}",
                self.epoch()
            )));
        }
        let identity = self.leaf(leaf)?;
        let key = VerifyingKey::from_bytes(&identity.device_key).map_err(peer)?;
        let sig = Signature::from_slice(signature).map_err(peer)?;
        let payload = leaf_claim_payload(self.group_id(), epoch, leaf, participant_id)?;
        key.verify(&payload, &sig).map_err(|_| {
            E2eeError::PeerInput(format!(
                "the claim is not signed by the device key of leaf {leaf}"
            ))
        })?;
        Ok(identity)
    }

    /// Verifies a commit (a TLS-encoded `MLSMessage` holding a `PublicMessage`) against the
    /// current public state without changing it: it must be a commit of this group and epoch,
    /// sent by a member and signed by that member's leaf, with valid proposals and path.
    pub fn check_commit(&self, bytes: &[u8]) -> Result<CheckedCommit, E2eeError> {
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(peer)?;
        let pm = msg
            .try_into_protocol_message()
            .map_err(|_| E2eeError::Refused("not an MLS handshake message"))?;
        let processed = self.group.process_message(&self.crypto, pm).map_err(peer)?;
        let sender = match processed.sender() {
            Sender::Member(i) => i.u32(),
            _ => return Err(E2eeError::Refused("commit not sent by a group member")),
        };
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(E2eeError::Refused(
                "not a commit (standalone proposals are not accepted)",
            ));
        };
        let removed = staged
            .remove_proposals()
            .map(|r| r.remove_proposal().removed().u32())
            .collect();
        let added = staged
            .add_proposals()
            .map(|a| a.add_proposal().key_package().tls_serialize_detached())
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        Ok(CheckedCommit {
            staged: *staged,
            sender,
            removed,
            added,
        })
    }

    /// The state now, to undo the next merge with [`Self::restore`].
    pub fn snapshot(&self) -> Result<TreeSnapshot, E2eeError> {
        let values = self
            .storage
            .values
            .read()
            .map_err(|_| E2eeError::Internal("public tree storage poisoned".into()))?
            .clone();
        Ok(TreeSnapshot {
            values,
            epoch: self.epoch(),
        })
    }

    /// Applies a checked commit: the group moves to the next epoch.
    pub fn merge(&mut self, commit: CheckedCommit) -> Result<(), E2eeError> {
        self.group
            .merge_commit(&self.storage, commit.staged)
            .map_err(internal)
    }

    /// Goes back to the state of `snapshot` (a commit the members could not process was
    /// voided).
    pub fn restore(&mut self, snapshot: TreeSnapshot) -> Result<(), E2eeError> {
        {
            let mut values = self
                .storage
                .values
                .write()
                .map_err(|_| E2eeError::Internal("public tree storage poisoned".into()))?;
            *values = snapshot.values;
        }
        let group = PublicGroup::load(&self.storage, self.group.group_id())
            .map_err(internal)?
            .ok_or_else(|| E2eeError::Internal("the snapshot holds no group".into()))?;
        if group.group_context().epoch().as_u64() != snapshot.epoch {
            return Err(E2eeError::Internal("the snapshot's epoch differs".into()));
        }
        self.group = group;
        Ok(())
    }
}

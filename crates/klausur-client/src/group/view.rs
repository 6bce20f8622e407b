//! The participant list matched with the MLS roster (the browser's verification view, from
//! mls.ts): which participant claims which leaf, and what does not add up.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use klausur_e2ee::{ParticipantKind as CredentialKind, RosterEntry};
use klausur_proto::{Participant, ParticipantId, ParticipantKind};

use super::{GroupClient, GRACE, UNCLAIMED_GRACE};

/// A discrepancy between the server's participant list and the group's roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationFlag {
    /// The server announces a participant whose client is not in the group (after [`GRACE`]).
    /// It receives no keys, but the server says it is there.
    NotInGroup,
    /// A member of the group that no server participant claims (after [`UNCLAIMED_GRACE`]). It can
    /// decrypt everything; members remove such leaves.
    NotAnnounced,
    /// The server's name, kind or credential user id for the participant claiming this leaf
    /// differs from the credential (a claim on someone else's leaf), or several participants
    /// claim the same leaf.
    Mismatch,
}

/// One member of the roster, matched with the server participant claiming its leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterView {
    /// The leaf and its verified credential (what the identity CA vouches for).
    pub entry: RosterEntry,
    /// This client's own leaf.
    pub own: bool,
    /// The participant claiming the leaf (for the own leaf: this client's participant id).
    pub participant_id: Option<ParticipantId>,
    /// The server's display name for that participant.
    pub server_display_name: Option<String>,
    pub flags: Vec<VerificationFlag>,
}

/// A participant the server announces that is not (or not yet) in the roster, or that claims a
/// leaf another participant claims first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsiderView {
    pub participant_id: ParticipantId,
    /// The server's word only: no credential vouches for it.
    pub display_name: String,
    pub kind: ParticipantKind,
    pub claimed_leaf: Option<u32>,
    /// Empty during the grace period, then [`VerificationFlag::NotInGroup`] (or
    /// [`VerificationFlag::Mismatch`] for a second claim on a member's leaf).
    pub flags: Vec<VerificationFlag>,
}

/// The roster and the participants outside it, with their flags. Empty while not a member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    pub roster: Vec<RosterView>,
    pub outsiders: Vec<OutsiderView>,
}

impl Verification {
    /// Whether anything is flagged.
    pub fn has_discrepancy(&self) -> bool {
        self.roster.iter().any(|r| !r.flags.is_empty())
            || self.outsiders.iter().any(|o| !o.flags.is_empty())
    }
}

/// The credential kind's wire name.
pub(crate) fn kind_name(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Staff => "staff",
        CredentialKind::InvitedGuest => "invited_guest",
        CredentialKind::Guest => "guest",
        CredentialKind::PhoneGateway => "phone_gateway",
    }
}

/// Whether `p`'s leaf claim is valid for the roster entry `e`: `p` claims `e`'s leaf, and the
/// leaf's credential names `p`'s `credential_user_id` (what the server checked `p` to be) and
/// kind. Only a valid claim makes a leaf go when its participant leaves (module docs of
/// `group`, "Removals"); the server's relaying a claim is not enough.
pub fn valid_claim(p: &Participant, e: &RosterEntry) -> bool {
    p.leaf == Some(e.leaf_index)
        && p.credential_user_id.as_deref() == Some(e.credential.user_id.as_str())
        && same_kind(p.kind, e.credential.kind)
}

fn same_kind(server: ParticipantKind, credential: CredentialKind) -> bool {
    matches!(
        (server, credential),
        (ParticipantKind::Staff, CredentialKind::Staff)
            | (ParticipantKind::InvitedGuest, CredentialKind::InvitedGuest)
            | (ParticipantKind::Guest, CredentialKind::Guest)
            | (ParticipantKind::PhoneGateway, CredentialKind::PhoneGateway)
    )
}

pub(super) fn verification(g: &GroupClient, now: Duration) -> Verification {
    let Some(own_leaf) = g.own_leaf() else {
        return Verification::default();
    };
    let self_id = g.self_id.as_deref();
    let now = now.max(g.now);
    let mut claimants: HashMap<u32, Vec<&Participant>> = HashMap::new();
    for p in &g.participants {
        if Some(p.id.as_str()) == self_id {
            continue;
        }
        if let Some(leaf) = p.leaf {
            claimants.entry(leaf).or_default().push(p);
        }
    }
    // A valid claim comes first: that participant is the leaf's, any other claimant an
    // outsider flagged as a mismatch.
    for e in &g.roster {
        if let Some(list) = claimants.get_mut(&e.leaf_index) {
            list.sort_by_key(|p| !valid_claim(p, e));
        }
    }
    let roster = g
        .roster
        .iter()
        .map(|e| {
            let own = e.leaf_index == own_leaf;
            let p = if own {
                g.participants
                    .iter()
                    .find(|q| Some(q.id.as_str()) == self_id)
            } else {
                claimants
                    .get(&e.leaf_index)
                    .and_then(|list| list.first().copied())
            };
            let mut flags = Vec::new();
            if p.is_none() && !own {
                let since = g.unclaimed_since.get(&e.leaf_index);
                if since.is_some_and(|s| now.saturating_sub(*s) > UNCLAIMED_GRACE) {
                    flags.push(VerificationFlag::NotAnnounced);
                }
            }
            let several = !own && claimants.get(&e.leaf_index).is_some_and(|l| l.len() > 1);
            if let Some(p) = p {
                if p.display_name != e.credential.display_name
                    || (!own && !valid_claim(p, e))
                    || !same_kind(p.kind, e.credential.kind)
                    || several
                {
                    flags.push(VerificationFlag::Mismatch);
                }
            }
            RosterView {
                entry: e.clone(),
                own,
                participant_id: if own {
                    self_id.map(str::to_string)
                } else {
                    p.map(|p| p.id.clone())
                },
                server_display_name: p.map(|p| p.display_name.clone()),
                flags,
            }
        })
        .collect();
    let roster_leaves: HashSet<u32> = g.roster.iter().map(|e| e.leaf_index).collect();
    let mut outsiders = Vec::new();
    for p in &g.participants {
        if Some(p.id.as_str()) == self_id {
            continue;
        }
        let in_roster = p.leaf.is_some_and(|l| roster_leaves.contains(&l));
        let first = p
            .leaf
            .and_then(|l| claimants.get(&l))
            .and_then(|list| list.first());
        if in_roster && first.is_some_and(|f| f.id == p.id) {
            continue;
        }
        let mut flags = Vec::new();
        if in_roster {
            // A second claim on a member's leaf.
            flags.push(VerificationFlag::Mismatch);
        } else if g
            .outsider_since
            .get(&p.id)
            .is_some_and(|s| now.saturating_sub(*s) > GRACE)
        {
            flags.push(VerificationFlag::NotInGroup);
        }
        outsiders.push(OutsiderView {
            participant_id: p.id.clone(),
            display_name: p.display_name.clone(),
            kind: p.kind,
            claimed_leaf: p.leaf,
            flags,
        });
    }
    Verification { roster, outsiders }
}

//! A participant's id on the wire: `p<peer>`, where the peer is the media layer's
//! [`PeerId`]. Shared by the actor and the delivery ordering, below both.

use klausur_room::PeerId;

/// The id that clients see for `peer`.
pub fn participant_id(peer: PeerId) -> String {
    format!("p{peer}")
}

/// The peer of a participant id, or `None` if `id` is not one.
pub fn parse_participant_id(id: &str) -> Option<PeerId> {
    id.strip_prefix('p')?.parse().ok()
}

//! The offer/answer bookkeeping of a participant that is always the offerer (klausur's
//! browsers and native clients): at most one offer in flight, a request to renegotiate while one
//! is out is remembered, and a renegotiation without local changes repeats the last offer.

use str0m::change::{SdpOffer, SdpPendingOffer};

/// Where a participant's offer/answer exchange with the server stands, and what to send
/// when the server asks for an offer (`renegotiate`). Used by [`crate::session::Session`] and
/// by the benchmark's participants.
#[derive(Default)]
pub struct OfferState {
    /// The new offer that is out, to accept its answer with.
    pub pending: Option<SdpPendingOffer>,
    /// The last offer sent, for re-offers that change nothing on this side (see
    /// [`OfferState::offer_to_send`]).
    pub last_offer: Option<String>,
    /// A repeated offer is out: its answer only matters for the server's slot assignments.
    pub repeat_pending: bool,
    /// The server asked for an offer while one was out: send another after its answer.
    pub again: bool,
}

impl OfferState {
    /// Whether an offer may go out now. While one is out (new or repeated) it may not, and the
    /// request is remembered in `again` instead, for when the answer arrives.
    pub fn may_offer(&mut self) -> bool {
        if self.pending.is_some() || self.repeat_pending {
            self.again = true;
            return false;
        }
        self.again = false;
        true
    }

    /// The offer to send, given what str0m's `SdpApi::apply` yielded: a new offer, which is
    /// then pending and remembered; or, when there was nothing to add here, the last offer
    /// again. The server asked for an offer because it assigns new tracks to free recvonly
    /// slots when it answers one; a browser's createOffer always yields an offer, str0m's
    /// yields none without changes, so the last one goes out again and its answer, which
    /// changes nothing negotiated, is not applied (see [`OfferState::answer_to_repeat`]).
    /// `None` before anything was offered.
    pub fn offer_to_send(
        &mut self,
        applied: Option<(SdpOffer, SdpPendingOffer)>,
    ) -> Option<String> {
        match applied {
            Some((offer, pending)) => {
                let sdp = offer.to_sdp_string();
                self.pending = Some(pending);
                self.last_offer = Some(sdp.clone());
                Some(sdp)
            }
            None => {
                let sdp = self.last_offer.clone()?;
                self.repeat_pending = true;
                Some(sdp)
            }
        }
    }

    /// An answer arrived. If a repeated offer is out, the answer is its: it is done, and the
    /// result says whether the server asked for an offer meanwhile (then one goes out now).
    /// `None` if the answer is for the pending new offer.
    pub fn answer_to_repeat(&mut self) -> Option<bool> {
        if !self.repeat_pending {
            return None;
        }
        self.repeat_pending = false;
        Some(self.again)
    }

    /// The server rejected the offer that is out: no answer is coming, the next may go out.
    pub fn rejected(&mut self) {
        self.pending = None;
        self.repeat_pending = false;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use str0m::change::SdpOffer;
    use str0m::media::{Direction, MediaKind};
    use str0m::Rtc;

    use super::OfferState;

    /// A speaker asked to renegotiate when a later speaker joins has nothing to add (its
    /// recvonly slots are there), so str0m's `apply` yields no offer; the server only assigns
    /// the new tracks when it answers an offer, so the last offer must go out again, as a
    /// browser's createOffer would. Without the repeat that speaker never got the later
    /// speaker's media (town hall lost exactly 1/149 of its packets). A request while the repeat
    /// is out must be remembered, not dropped.
    #[test]
    fn a_renegotiation_without_local_changes_repeats_the_last_offer(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let now = Instant::now();
        let mut rtc = Rtc::builder().build(now);
        let mut server = Rtc::builder().build(now);
        let mut state = OfferState::default();
        // Nothing offered yet and nothing to offer: nothing to send.
        assert!(state.may_offer());
        assert_eq!(state.offer_to_send(rtc.sdp_api().apply()), None);
        assert!(state.may_offer(), "no offer is out");

        // Join: a new offer goes out.
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let first = state
            .offer_to_send(api.apply())
            .ok_or("a new offer must be sent")?;
        // The server asks for an offer while it is out: remembered for after the answer.
        assert!(!state.may_offer(), "only one offer may be out");
        assert!(
            state.again,
            "a request while an offer is out must be remembered"
        );
        assert_eq!(
            state.answer_to_repeat(),
            None,
            "the answer is for the new offer"
        );
        let pending = state.pending.take().ok_or("the new offer is pending")?;
        let answer = server
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&first)?)?;
        rtc.sdp_api().accept_answer(pending, answer)?;

        // The remembered request: nothing changed here, so str0m yields no offer ...
        assert!(state.may_offer());
        let applied = rtc.sdp_api().apply();
        assert!(applied.is_none(), "str0m offers nothing without changes");
        // ... and the last offer goes out again.
        let repeat = state.offer_to_send(applied);
        assert!(
            repeat.is_some(),
            "asked for an offer without local changes, the last offer must be sent again"
        );
        assert!(
            repeat == Some(first.clone()),
            "the repeat is the last offer"
        );
        // Another request while the repeat is out: remembered, and repeated after its answer.
        assert!(
            !state.may_offer(),
            "only one offer may be out, repeated or not"
        );
        assert_eq!(
            state.answer_to_repeat(),
            Some(true),
            "a request while a repeated offer is out must lead to another offer after its answer"
        );
        assert!(state.may_offer());
        let repeat = state.offer_to_send(rtc.sdp_api().apply());
        assert!(
            repeat == Some(first),
            "the second request must repeat the last offer too"
        );
        // Its answer asks for nothing more, and the next request may go out at once.
        assert_eq!(state.answer_to_repeat(), Some(false));
        assert_eq!(state.answer_to_repeat(), None, "no repeat is out any more");
        assert!(state.may_offer());

        // A rejected offer leaves no answer coming: the next may go out.
        assert!(state.offer_to_send(None).is_some());
        assert!(!state.may_offer());
        state.rejected();
        assert!(
            state.may_offer(),
            "after a rejection the next offer may go out"
        );
        Ok(())
    }
}

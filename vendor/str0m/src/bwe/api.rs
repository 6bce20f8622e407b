//! Bandwidth estimation.

use std::time::Instant;

use crate::poll::RtcMut;
use crate::{Rtc, rtp_::Mid};

pub use crate::rtp_::Bitrate;

#[derive(Debug, PartialEq)]
#[non_exhaustive]
/// Bandwidth estimation kind.
pub enum BweKind {
    /// Transport wide congestion control.
    ///
    /// Emits the current estimate with `can_probe: true` when probing becomes
    /// available, initially using the configured starting bitrate. Estimate
    /// updates follow while probing is available. On loss of probing capability,
    /// emits the last reported estimate once with `can_probe: false`, then
    /// suppresses updates until probing becomes available again.
    Twcc {
        /// Estimated available bitrate. Initially this is the configured starting bitrate.
        /// When probing becomes unavailable, this retains the last estimate.
        estimate: Bitrate,
        /// Whether the local BWE can currently probe for capacity.
        ///
        /// Requires BWE to be enabled, SRTP keys, and a sending media section
        /// supporting TWCC feedback and the transport sequence extension.
        /// This does not guarantee that feedback is arriving.
        can_probe: bool,
    },
    /// REMB (Receiver Estimated Maximum Bitrate)
    Remb {
        /// Bitrate reported by the remote receiver.
        estimate: Bitrate,
        /// Media section associated with the report.
        mid: Mid,
    },
}

/// klausur patch: what the remote side's TWCC feedback reported, counted since the start.
///
/// For an application that probes with media and must tell whether the link carried what it
/// sent: between two readings, the bytes reported over the span of their send times is the rate
/// sent, and the bytes received over the span of their receive times is the rate the link
/// delivered. A bottleneck spreads packets out to its own rate whether its queue grows or drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Payload bytes of the packets the remote side reported on, received or lost.
    pub reported_bytes: u64,
    /// Of those, the payload bytes it received.
    pub received_bytes: u64,
    /// The latest send time of a reported packet.
    pub last_sent: Option<Instant>,
    /// The latest time the remote side received a reported packet (its clock, as an `Instant`:
    /// only differences between these readings mean anything).
    pub last_received: Option<Instant>,
    /// How many probe results the feedback gave (a probe train's cluster gives one with every
    /// report that adds packets of it: [`Bwe::probe_train`]).
    pub probe_results: u64,
    /// The latest probe result (bit/s): what the link carried of a probe, at most its target.
    pub probe_bitrate: u64,
}

/// Access to the Bandwidth Estimate subsystem.
///
// The inner `RtcMut` arms the readiness on mutable deref only; see `crate::poll`.
pub struct Bwe<'a>(pub(crate) RtcMut<'a>);

impl<'a> Bwe<'a> {
    pub(crate) fn new(rtc: &'a mut Rtc) -> Self {
        Bwe(RtcMut::new(rtc))
    }

    /// Configure the minimum transmit bitrate and desired bandwidth.
    ///
    /// `minimum` is the total outgoing rate to sustain with media and padding. When
    /// media sends less, padding fills the gap, capped by the current bandwidth
    /// estimate. Padding is suppressed during overuse and requires an active sending
    /// media section with TWCC feedback and a usable padding source. This is not guaranteed bandwidth.
    /// The automatic 50 kbit/s padding target remains a floor, even with a zero
    /// minimum, and is also capped by the estimate. The minimum is clamped to
    /// `desired`; it does not force a probe or raise the estimate.
    ///
    /// `desired` is the bitrate you would like to eventually send at. BWE tries to
    /// discover this capacity through probing. It is not a hard ceiling: probes
    /// may exceed it, and the network may not sustain it. Allocate media using the
    /// estimates from [`Event::EgressBitrateEstimate`][crate::Event::EgressBitrateEstimate].
    ///
    /// Increasing the desired bitrate above the current estimate can trigger an allocation
    /// probe, whether or not the application is currently sending below its estimated capacity.
    /// Initial probing and congestion conditions can suppress this probe. Repeating or reducing
    /// the desired bitrate does not request an allocation probe.
    ///
    /// An SFU can set `minimum` to the rate needed to start its next video layer,
    /// and `desired` to the rate needed for its preferred quality. As the estimate
    /// grows, more padding is allowed until media can take its place. Lower the
    /// minimum when sustained traffic is no longer wanted.
    ///
    /// This only has an effect when BWE is enabled via
    /// [`RtcConfig::enable_bwe`][crate::RtcConfig::enable_bwe]. Both rates are retained
    /// across [`reset`][Self::reset].
    ///
    /// # Example
    ///
    /// ```
    /// # use str0m::{Rtc, bwe::Bitrate};
    /// # let mut rtc = Rtc::builder().enable_bwe(Some(Bitrate::kbps(300))).build(std::time::Instant::now());
    /// // Sustain traffic toward the next layer while probing for the preferred rate.
    /// rtc.bwe().set_bitrate(Bitrate::kbps(800), Bitrate::mbps(3));
    /// ```
    pub fn set_bitrate(&mut self, minimum: Bitrate, desired: Bitrate) {
        let mut m = self.0.mutate();
        m.session.set_bwe_bitrate(minimum, desired);
        // Reconfiguring BWE only re-arms the estimator/pacer timers; any probing
        // padding is produced later from the timeout path, so no event is queued.
        m.no_events();
    }

    /// klausur patch: what TWCC feedback reported so far ([`Delivery`]); all zero while BWE
    /// is off or before any feedback.
    pub fn delivery(&self) -> Delivery {
        self.0.session.bwe_delivery()
    }

    /// klausur patch: sends a probe train when BWE runs unpaced
    /// ([`RtcConfig::set_bwe_unpaced`][crate::RtcConfig::set_bwe_unpaced]): a few padding
    /// packets (resends of cached packets where the send stream has RTX, else blank padding)
    /// spaced at `target` (from the first: a late one makes the next due at once), 30 ms of it
    /// and at least 5 packets. The estimator measures it as a paced probe (the lesser of the
    /// rates sent and received); the result, at most `target`, is the application's to read
    /// ([`Delivery::probe_results`], [`Delivery::probe_bitrate`]) and does not set the
    /// estimate. A bottleneck below `target` spreads the packets out to its own rate, so it is
    /// seen without sending more than a short train. Returns false when no train can be sent
    /// (BWE not unpaced, no SRTP keys yet, or no send stream that can pad); a train replaces
    /// one still going.
    pub fn probe_train(&mut self, target: Bitrate) -> bool {
        let mut m = self.0.mutate();
        m.no_events();
        m.session.request_probe_train(target)
    }

    /// Reset the BWE with a new init_bitrate
    ///
    /// This discards the current estimator state and starts estimation again
    /// from `init_bitrate`. Normal transitions from audio-only to video sending
    /// do not require a reset: with TWCC negotiated, probing can discover
    /// capacity before video starts. The desired bitrate controls the capacity
    /// the estimator attempts to discover.
    pub fn reset(&mut self, init_bitrate: Bitrate) {
        let mut m = self.0.mutate();
        m.session.reset_bwe(init_bitrate);
        // Resetting the estimator moves no output, only timers.
        m.no_events();
    }
}

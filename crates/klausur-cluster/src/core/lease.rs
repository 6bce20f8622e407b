//! The time rules of node keys and meeting leases, and the state machine a node keeps per
//! meeting it serves.
//!
//! # Contract of [`LeaseTimer`]
//!
//! A node serves a meeting only while it holds the meeting's lease. It creates a
//! [`LeaseTimer`] when Redis confirmed the lease (acquired, or adopted after another node
//! placed the meeting on it), passing the instant the confirming request was **sent**. Then:
//!
//! * [`LeaseTimer::poll`] at any time: [`LeaseAction::Renew`] means "send a renewal now"
//!   (the timer notes the instant as the request's send time); [`LeaseAction::Wait`] says
//!   until when nothing is due; [`LeaseAction::Stop`] means the lease is lost and the node
//!   must stop serving the meeting at once (close its participants' connections; they come
//!   back through placement, to whichever node holds the lease next).
//! * [`LeaseTimer::handle_renew`] with what the renewal brought: Redis renewed it (or had
//!   forgotten it and took it back for us, [`RenewResult::Reacquired`]), another node holds
//!   it ([`RenewResult::TakenOver`]: lost at once), or Redis could not be asked
//!   ([`RenewResult::Unreachable`]: retried soon).
//!
//! The lease is taken to hold until the send time of the last confirmed request plus the TTL,
//! less a safety margin: Redis starts the TTL when it executes the command, which is after it
//! was sent, so the key lives at least that long and no other node can acquire it before the
//! node has stopped. If no renewal is confirmed by then (Redis unreachable, or a renewal that
//! never answers), the lease is lost ([`LossReason::Unconfirmed`]) even though nobody else may
//! hold it yet: a node cannot tell "Redis is down for everybody" from "I alone am cut off
//! while another node takes my meetings over", and two nodes serving one meeting would split
//! it in two.

use std::time::{Duration, Instant};

/// The shortest TTL accepted (node keys and leases): renewals every third of it must be
/// possible over a network.
pub const MIN_TTL: Duration = Duration::from_millis(300);
/// The longest TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// Why a TTL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("a TTL is between {MIN_TTL:?} and {MAX_TTL:?}, not {0:?}")]
    OutOfRange(Duration),
}

/// How long node keys and leases live without renewal, and what follows from that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    node_ttl: Duration,
    lease_ttl: Duration,
}

impl Default for Timing {
    /// Ten seconds each: a dead node's meetings move within about ten seconds, and a Redis
    /// restart of a few seconds does not end any meeting.
    fn default() -> Self {
        Self {
            node_ttl: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

impl Timing {
    /// TTLs are kept in whole milliseconds (what `PX` takes).
    pub fn new(node_ttl: Duration, lease_ttl: Duration) -> Result<Self, TimingError> {
        for ttl in [node_ttl, lease_ttl] {
            if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
                return Err(TimingError::OutOfRange(ttl));
            }
        }
        let ms = |d: Duration| Duration::from_millis(d.as_millis() as u64);
        Ok(Self {
            node_ttl: ms(node_ttl),
            lease_ttl: ms(lease_ttl),
        })
    }

    /// How long a node key lives after a heartbeat.
    pub fn node_ttl(&self) -> Duration {
        self.node_ttl
    }

    /// How long a lease lives after it was acquired or renewed.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// How much longer a placement waits on a Redis that has run for only `uptime`, if at all.
    /// A Redis without persistence comes back from a restart empty: every running meeting's
    /// lease is gone until its owner's next renewal (within [`Timing::renew_every`], or
    /// [`Timing::retry_every`] after failed ones) takes it back, and a node that placed one of
    /// those meetings meanwhile would take it from its owner and break it up. So a meeting
    /// without a lease is placed only once Redis has run for a lease TTL, by when every live
    /// owner has renewed. (On a cluster's very first start this delays the first placements by
    /// at most the same.)
    pub fn settling(&self, uptime: Duration) -> Option<Duration> {
        (uptime < self.lease_ttl).then(|| self.lease_ttl - uptime)
    }

    /// How often a node writes its heartbeat: three tries before its key expires.
    pub fn heartbeat_every(&self) -> Duration {
        self.node_ttl / 3
    }

    /// How often a held lease is renewed: a third of its TTL.
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// How soon a renewal that could not reach Redis is tried again.
    pub fn retry_every(&self) -> Duration {
        self.lease_ttl / 10
    }

    /// How much earlier than Redis a node gives its lease up (clock rates differ a little).
    pub fn safety_margin(&self) -> Duration {
        self.lease_ttl / 10
    }

    /// The longest a single Redis request may take before it counts as unreachable: a
    /// renewal that hangs must not outlive the lease it renews.
    pub fn request_timeout(&self) -> Duration {
        self.lease_ttl.min(self.node_ttl) / 4
    }
}

/// What a renewal brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewResult {
    /// The lease was still ours; its TTL starts again.
    Renewed,
    /// Redis no longer had the lease (restarted empty, flushed) and nobody else had taken it:
    /// it is ours again with a full TTL.
    Reacquired,
    /// Another node holds it now.
    TakenOver,
    /// Redis could not be asked (down, unreachable, no answer in time).
    Unreachable,
}

/// Why a node must stop serving a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// Another node holds the lease.
    TakenOver,
    /// No renewal was confirmed within the lease's TTL.
    Unconfirmed,
    /// The node released it itself (the meeting ended here).
    Released,
}

/// What the driver has to do for one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Send a renewal now, then report its result with [`LeaseTimer::handle_renew`].
    Renew,
    /// Nothing is due before this instant (poll again then, or on a result).
    Wait(Instant),
    /// The lease is lost: stop serving the meeting.
    Stop(LossReason),
}

/// The state of one held lease in the node that holds it. See the module docs.
#[derive(Debug, Clone)]
pub struct LeaseTimer {
    timing: Timing,
    /// Until when the lease is known to be held (last confirmed send time + TTL − margin).
    held_until: Instant,
    /// When the next renewal is due.
    next_renew: Instant,
    /// The send time of a renewal that has not been answered yet.
    in_flight: Option<Instant>,
    lost: Option<LossReason>,
}

impl LeaseTimer {
    /// A lease that Redis confirmed for a request sent at `sent_at`.
    pub fn new(timing: Timing, sent_at: Instant) -> Self {
        Self {
            timing,
            held_until: sent_at + timing.lease_ttl() - timing.safety_margin(),
            next_renew: sent_at + timing.renew_every(),
            in_flight: None,
            lost: None,
        }
    }

    /// Whether the node may serve the meeting at `now`.
    pub fn is_held(&self, now: Instant) -> bool {
        self.lost.is_none() && now < self.held_until
    }

    /// Until when the lease is known to be held (if it is not lost before).
    pub fn held_until(&self) -> Instant {
        self.held_until
    }

    /// Why the lease was lost, if it was.
    pub fn lost(&self) -> Option<LossReason> {
        self.lost
    }

    /// What is due at `now`. A returned [`LeaseAction::Renew`] is taken as sent at `now`.
    pub fn poll(&mut self, now: Instant) -> LeaseAction {
        if let Some(reason) = self.lost {
            return LeaseAction::Stop(reason);
        }
        if now >= self.held_until {
            self.lost = Some(LossReason::Unconfirmed);
            return LeaseAction::Stop(LossReason::Unconfirmed);
        }
        if self.in_flight.is_some() {
            // The driver's request timeout is shorter than the lease: its answer (or its
            // failure) comes before `held_until`; if it never does, the lease runs out.
            return LeaseAction::Wait(self.held_until);
        }
        if now >= self.next_renew {
            self.in_flight = Some(now);
            return LeaseAction::Renew;
        }
        LeaseAction::Wait(self.next_renew.min(self.held_until))
    }

    /// The result of the renewal [`LeaseTimer::poll`] asked for, arrived at `now`.
    /// A result with no renewal in flight (a caller's mistake) only counts if it says the
    /// lease was taken over: its send time is unknown, so it extends nothing.
    pub fn handle_renew(&mut self, now: Instant, result: RenewResult) {
        let sent_at = self.in_flight.take();
        if self.lost.is_some() {
            return;
        }
        match (result, sent_at) {
            (RenewResult::TakenOver, _) => self.lost = Some(LossReason::TakenOver),
            (RenewResult::Renewed | RenewResult::Reacquired, Some(sent_at)) => {
                let until = sent_at + self.timing.lease_ttl() - self.timing.safety_margin();
                // A confirmation that comes after the lease ran out locally does not revive
                // it: the node has stopped (or must), and it was told so by `poll`.
                if now < self.held_until {
                    self.held_until = self.held_until.max(until);
                }
                self.next_renew = sent_at + self.timing.renew_every();
            }
            (RenewResult::Unreachable, Some(_)) => {
                self.next_renew = now + self.timing.retry_every();
            }
            (_, None) => {}
        }
    }

    /// The node released the lease itself.
    pub fn handle_released(&mut self) {
        self.in_flight = None;
        if self.lost.is_none() {
            self.lost = Some(LossReason::Released);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_waits_until_redis_has_run_for_a_lease_ttl() {
        let t = Timing::new(ms(2_000), ms(5_000)).expect("timing");
        assert_eq!(t.settling(ms(0)), Some(ms(5_000)));
        assert_eq!(t.settling(ms(4_000)), Some(ms(1_000)));
        assert_eq!(t.settling(ms(5_000)), None);
        assert_eq!(t.settling(Duration::from_secs(86_400)), None);
        // Every owner renews (or retries) well within that time.
        assert!(t.renew_every() + t.request_timeout() < t.lease_ttl());
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing() -> Timing {
        // 3 s TTL: renew every 1 s, retry every 300 ms, margin 300 ms.
        Timing::new(ms(3000), ms(3000)).expect("timing")
    }

    #[test]
    fn timing_derives_its_intervals() {
        let t = timing();
        assert_eq!(t.renew_every(), ms(1000));
        assert_eq!(t.heartbeat_every(), ms(1000));
        assert_eq!(t.retry_every(), ms(300));
        assert_eq!(t.safety_margin(), ms(300));
        assert_eq!(t.request_timeout(), ms(750));
        let d = Timing::default();
        assert_eq!((d.node_ttl(), d.lease_ttl()), (ms(10_000), ms(10_000)));
    }

    #[test]
    fn timing_refuses_ttls_out_of_range_and_rounds_to_ms() {
        assert_eq!(
            Timing::new(ms(299), ms(1000)),
            Err(TimingError::OutOfRange(ms(299)))
        );
        let hour_and_a_bit = MAX_TTL + ms(1);
        assert_eq!(
            Timing::new(ms(1000), hour_and_a_bit),
            Err(TimingError::OutOfRange(hour_and_a_bit))
        );
        let t = Timing::new(Duration::from_micros(1_500_700), ms(1000)).expect("ok");
        assert_eq!(t.node_ttl(), ms(1500));
    }

    #[test]
    fn renews_every_third_of_the_ttl_and_stays_held() {
        let t0 = Instant::now();
        let mut l = LeaseTimer::new(timing(), t0);
        assert_eq!(l.poll(t0), LeaseAction::Wait(t0 + ms(1000)));
        assert_eq!(l.poll(t0 + ms(999)), LeaseAction::Wait(t0 + ms(1000)));
        for round in 1..=20u64 {
            let now = t0 + ms(1000 * round);
            assert_eq!(l.poll(now), LeaseAction::Renew, "round {round}");
            // While the renewal is under way nothing else is asked for.
            assert_eq!(l.poll(now + ms(10)), LeaseAction::Wait(l.held_until()));
            l.handle_renew(now + ms(20), RenewResult::Renewed);
            assert!(l.is_held(now + ms(20)));
            assert_eq!(l.held_until(), now + ms(2700));
        }
    }

    #[test]
    fn the_held_time_counts_from_the_send_time_not_the_answer() {
        let t0 = Instant::now();
        let mut l = LeaseTimer::new(timing(), t0);
        assert_eq!(l.poll(t0 + ms(1000)), LeaseAction::Renew);
        // A slow answer: the lease is held until send time + TTL − margin all the same.
        l.handle_renew(t0 + ms(1600), RenewResult::Renewed);
        assert_eq!(l.held_until(), t0 + ms(3700));
        assert_eq!(l.poll(t0 + ms(1700)), LeaseAction::Wait(t0 + ms(2000)));
    }

    #[test]
    fn taken_over_means_stop_at_once() {
        let t0 = Instant::now();
        let mut l = LeaseTimer::new(timing(), t0);
        assert_eq!(l.poll(t0 + ms(1000)), LeaseAction::Renew);
        l.handle_renew(t0 + ms(1010), RenewResult::TakenOver);
        assert!(!l.is_held(t0 + ms(1010)));
        assert_eq!(l.lost(), Some(LossReason::TakenOver));
        assert_eq!(
            l.poll(t0 + ms(1011)),
            LeaseAction::Stop(LossReason::TakenOver)
        );
        // A later good answer changes nothing.
        l.handle_renew(t0 + ms(1020), RenewResult::Renewed);
        assert_eq!(
            l.poll(t0 + ms(1030)),
            LeaseAction::Stop(LossReason::TakenOver)
        );
    }

    #[test]
    fn unreachable_redis_is_retried_until_the_ttl_runs_out() {
        let t0 = Instant::now();
        let mut l = LeaseTimer::new(timing(), t0);
        let mut now = t0 + ms(1000);
        let mut tries = 0;
        loop {
            match l.poll(now) {
                LeaseAction::Renew => {
                    tries += 1;
                    l.handle_renew(now + ms(5), RenewResult::Unreachable);
                    now += ms(5);
                }
                LeaseAction::Wait(until) => {
                    assert!(until > now);
                    now = until;
                }
                LeaseAction::Stop(reason) => {
                    assert_eq!(reason, LossReason::Unconfirmed);
                    break;
                }
            }
            assert!(now < t0 + ms(10_000), "never stopped");
        }
        // Stopped at send time + TTL − margin, after several tries.
        assert_eq!(now, t0 + ms(2700));
        assert!(tries >= 5, "{tries} tries");
        assert!(!l.is_held(now));
    }

    #[test]
    fn a_short_outage_is_bridged() {
        let t0 = Instant::now();
        let mut l = LeaseTimer::new(timing(), t0);
        assert_eq!(l.poll(t0 + ms(1000)), LeaseAction::Renew);
        l.handle_renew(t0 + ms(1000), RenewResult::Unreachable);
        assert_eq!(l.poll(t0 + ms(1100)), LeaseAction::Wait(t0 + ms(1300)));
        assert_eq!(l.poll(t0 + ms(1300)), LeaseAction::Renew);
        // Redis is back, empty: the lease is taken back for us.
        l.handle_renew(t0 + ms(1310), RenewResult::Reacquired);
        assert!(l.is_held(t0 + ms(3000)));
        assert_eq!(l.held_until(), t0 + ms(4000));
    }

    #[test]
    fn a_hanging_renewal_cannot_keep_the_lease() {
        let t0 = Instant::now();
        let mut l = LeaseTimer::new(timing(), t0);
        assert_eq!(l.poll(t0 + ms(1000)), LeaseAction::Renew);
        assert_eq!(l.poll(t0 + ms(2699)), LeaseAction::Wait(t0 + ms(2700)));
        assert_eq!(
            l.poll(t0 + ms(2700)),
            LeaseAction::Stop(LossReason::Unconfirmed)
        );
        // The confirmation that finally comes does not revive it.
        l.handle_renew(t0 + ms(2800), RenewResult::Renewed);
        assert!(!l.is_held(t0 + ms(2801)));
    }

    #[test]
    fn a_result_without_a_request_extends_nothing() {
        let t0 = Instant::now();
        let mut l = LeaseTimer::new(timing(), t0);
        l.handle_renew(t0 + ms(500), RenewResult::Renewed);
        assert_eq!(l.held_until(), t0 + ms(2700));
        l.handle_renew(t0 + ms(600), RenewResult::TakenOver);
        assert_eq!(l.lost(), Some(LossReason::TakenOver));
    }

    #[test]
    fn released_is_final() {
        let t0 = Instant::now();
        let mut l = LeaseTimer::new(timing(), t0);
        l.handle_released();
        assert_eq!(l.poll(t0), LeaseAction::Stop(LossReason::Released));
        assert!(!l.is_held(t0));
    }
}

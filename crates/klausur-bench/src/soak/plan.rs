//! Who joins which meeting when, and leaves when, during a soak round: a pure function of the
//! [`PlanSpec`] (seeded, no clock).
//!
//! The participants are `participants` *places*, spread round robin over the meetings (place
//! `p` is in meeting `p mod meetings`, so meeting sizes differ by at most one). Each place is
//! held by one visit at a time: a participant joins, stays a while drawn from
//! [`PlanSpec::stay`], leaves, and after a gap drawn from [`PlanSpec::gap`] a new participant
//! joins in its place, until the round ends; whoever is still there leaves at its end. The
//! first visits of all places start spread over [`PlanSpec::ramp`] (a morning's meetings begin
//! within minutes, not in one instant).
//!
//! So the count of participants present never exceeds `participants` (nor a meeting's its
//! place count), every visit lasts at least the shortest stay, and the number of visits is
//! bounded: at most `duration / stay.0 + 1` per place, and [`MAX_VISITS`] in all.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Most participants present at a time.
pub const MAX_PARTICIPANTS: usize = 500;
/// Longest round.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most visits in a round (each needs its own invitation and participant index).
pub const MAX_VISITS: usize = 20_000;
/// Shortest stay accepted: joining, connecting and exchanging media take a few seconds.
pub const MIN_STAY: Duration = Duration::from_secs(2);
/// Shortest gap accepted between a leave and the next join in the same place (the server has
/// taken the leave before the place's next participant arrives).
pub const MIN_GAP: Duration = Duration::from_millis(500);

/// What a round looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSpec {
    /// Places (participants present at most at a time).
    pub participants: usize,
    pub meetings: usize,
    /// Length of the round: every visit ends by then.
    pub duration: Duration,
    /// The places' first joins are spread over this long from the start.
    pub ramp: Duration,
    /// Shortest and longest stay of a visit.
    pub stay: (Duration, Duration),
    /// Shortest and longest gap between a leave and the next join in the same place.
    pub gap: (Duration, Duration),
    pub seed: u64,
}

/// One participant's visit: in `meeting`, from `join` to `leave` (offsets from the round's
/// start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit {
    pub place: usize,
    pub meeting: usize,
    pub join: Duration,
    pub leave: Duration,
}

/// A [`PlanSpec`] out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("participants must be 1 to {MAX_PARTICIPANTS}")]
    Participants,
    #[error("meetings must be 1 to the number of participants")]
    Meetings,
    #[error("the round must last at least the shortest stay and at most {} s", MAX_DURATION.as_secs())]
    Duration,
    #[error("the ramp must be shorter than the round")]
    Ramp,
    #[error("stays must be at least {} s, the shortest no longer than the longest", MIN_STAY.as_secs())]
    Stay,
    #[error("gaps must be at least {} ms, the shortest no longer than the longest", MIN_GAP.as_millis())]
    Gap,
    #[error("the round would have more than {MAX_VISITS} visits; make stays longer")]
    TooManyVisits,
}

impl PlanSpec {
    /// Checks the bounds.
    pub fn check(&self) -> Result<(), PlanError> {
        if !(1..=MAX_PARTICIPANTS).contains(&self.participants) {
            return Err(PlanError::Participants);
        }
        if !(1..=self.participants).contains(&self.meetings) {
            return Err(PlanError::Meetings);
        }
        let (stay_min, stay_max) = self.stay;
        if stay_min < MIN_STAY || stay_min > stay_max {
            return Err(PlanError::Stay);
        }
        if self.duration < stay_min || self.duration > MAX_DURATION {
            return Err(PlanError::Duration);
        }
        if self.ramp >= self.duration {
            return Err(PlanError::Ramp);
        }
        if self.gap.0 < MIN_GAP || self.gap.0 > self.gap.1 {
            return Err(PlanError::Gap);
        }
        // Every visit but a place's last lasts a full shortest stay plus a shortest gap.
        let per_place = self.duration.as_secs_f64() / (stay_min + self.gap.0).as_secs_f64() + 1.0;
        if per_place * self.participants as f64 > MAX_VISITS as f64 {
            return Err(PlanError::TooManyVisits);
        }
        Ok(())
    }

    /// Places in meeting `m`.
    pub fn meeting_size(&self, m: usize) -> usize {
        if m >= self.meetings {
            return 0;
        }
        self.participants / self.meetings + usize::from(m < self.participants % self.meetings)
    }
}

/// A uniform draw from `[lo, hi]`.
fn draw(rng: &mut StdRng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    lo + (hi - lo).mul_f64(rng.gen::<f64>())
}

/// The visits of every place, each place's in order (see the module docs).
pub fn plan(spec: &PlanSpec) -> Result<Vec<Vec<Visit>>, PlanError> {
    spec.check()?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let n = spec.participants;
    let mut places = Vec::with_capacity(n);
    let mut total = 0usize;
    // Bounded: each visit moves the place's clock by at least the shortest stay.
    let per_place = (spec.duration.as_secs_f64() / spec.stay.0.as_secs_f64()).ceil() as usize + 1;
    for place in 0..n {
        let meeting = place % spec.meetings;
        let mut visits = Vec::new();
        // Place p's first join is in the p-th of n equal slices of the ramp.
        let slice = spec.ramp.as_secs_f64() / n as f64;
        let mut join = Duration::from_secs_f64(slice * (place as f64 + rng.gen::<f64>()));
        for _ in 0..per_place {
            if join + spec.stay.0 > spec.duration {
                break;
            }
            let leave = (join + draw(&mut rng, spec.stay)).min(spec.duration);
            visits.push(Visit {
                place,
                meeting,
                join,
                leave,
            });
            join = leave + draw(&mut rng, spec.gap);
        }
        total += visits.len();
        if total > MAX_VISITS {
            return Err(PlanError::TooManyVisits);
        }
        places.push(visits);
    }
    Ok(places)
}

#[cfg(test)]
/// Participants present at `t` (a visit counts from its join, inclusive, to its leave,
/// exclusive), in all meetings or in `meeting` only.
pub fn present(places: &[Vec<Visit>], t: Duration, meeting: Option<usize>) -> usize {
    places
        .iter()
        .flatten()
        .filter(|v| meeting.is_none_or(|m| v.meeting == m))
        .filter(|v| v.join <= t && t < v.leave)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn spec() -> PlanSpec {
        PlanSpec {
            participants: 200,
            meetings: 40,
            duration: secs(300),
            ramp: secs(20),
            stay: (secs(20), secs(100)),
            gap: (secs(1), secs(10)),
            seed: 19,
        }
    }

    #[test]
    fn places_churn_within_their_bounds() -> Result<(), PlanError> {
        let s = spec();
        let places = plan(&s)?;
        assert_eq!(places.len(), 200);
        let visits: Vec<&Visit> = places.iter().flatten().collect();
        // About 300 s / (60 s mean stay + 5.5 s mean gap) per place, plus the last.
        assert!((800..1300).contains(&visits.len()), "{}", visits.len());
        for (p, place) in places.iter().enumerate() {
            assert!(!place.is_empty(), "place {p}");
            // The p-th slice of the 20 s ramp.
            let first = place[0].join.as_secs_f64();
            assert!(
                (p as f64 * 0.1..(p + 1) as f64 * 0.1).contains(&first),
                "{p}: {first}"
            );
            for v in place {
                assert_eq!((v.place, v.meeting), (p, p % 40));
                assert!(v.leave <= s.duration);
                assert!(v.leave - v.join >= s.stay.0, "{v:?}");
                assert!(v.leave - v.join <= s.stay.1, "{v:?}");
            }
            for w in place.windows(2) {
                let gap = w[1].join - w[0].leave;
                assert!(gap >= s.gap.0 && gap <= s.gap.1, "{w:?}");
            }
        }
        // Everyone has left at the end; the count never exceeds the places, in all and per
        // meeting, and stays near them once the ramp is over.
        assert_eq!(present(&places, s.duration, None), 0);
        for ms in (0..300_000).step_by(250) {
            let t = Duration::from_millis(ms);
            let all = present(&places, t, None);
            assert!(all <= 200, "{all} at {ms} ms");
            if t >= secs(25) && t < secs(280) {
                assert!(all >= 150, "{all} at {ms} ms");
            }
            for m in [0, 17, 39] {
                assert!(present(&places, t, Some(m)) <= 5);
            }
        }
        // Stays and gaps vary: not all visits of a place are the same.
        let stays: std::collections::BTreeSet<u128> = visits
            .iter()
            .map(|v| (v.leave - v.join).as_millis())
            .collect();
        assert!(stays.len() > 500);
        Ok(())
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() -> Result<(), PlanError> {
        assert_eq!(plan(&spec())?, plan(&spec())?);
        let other = PlanSpec { seed: 20, ..spec() };
        assert_ne!(plan(&spec())?, plan(&other)?);
        Ok(())
    }

    #[test]
    fn meetings_share_the_places_evenly() -> Result<(), PlanError> {
        let s = PlanSpec {
            participants: 23,
            meetings: 5,
            ..spec()
        };
        assert_eq!(
            (0..6).map(|m| s.meeting_size(m)).collect::<Vec<_>>(),
            [5, 5, 5, 4, 4, 0]
        );
        let places = plan(&s)?;
        for m in 0..5 {
            let in_m = places.iter().filter(|p| p[0].meeting == m).count();
            assert_eq!(in_m, s.meeting_size(m));
        }
        Ok(())
    }

    #[test]
    fn a_short_round_ends_every_stay_at_its_end() -> Result<(), PlanError> {
        // The quick mode: 20 places, 30 s.
        let s = PlanSpec {
            participants: 20,
            meetings: 4,
            duration: secs(30),
            ramp: secs(10),
            stay: (secs(5), secs(10)),
            gap: (secs(1), secs(1)),
            seed: 1,
        };
        let places = plan(&s)?;
        for place in &places {
            let last = place.last().expect("a visit");
            // No room for another shortest stay after the last leave.
            assert!(last.leave + s.gap.1 + s.stay.0 > s.duration, "{place:?}");
            assert!(place.len() >= 2, "{place:?}");
        }
        assert_eq!(present(&places, s.duration, None), 0);
        Ok(())
    }

    #[test]
    fn out_of_bounds_specs_are_refused() {
        let bad = [
            (
                PlanSpec {
                    participants: 0,
                    ..spec()
                },
                PlanError::Participants,
            ),
            (
                PlanSpec {
                    participants: MAX_PARTICIPANTS + 1,
                    ..spec()
                },
                PlanError::Participants,
            ),
            (
                PlanSpec {
                    meetings: 0,
                    ..spec()
                },
                PlanError::Meetings,
            ),
            (
                PlanSpec {
                    meetings: 201,
                    ..spec()
                },
                PlanError::Meetings,
            ),
            (
                PlanSpec {
                    stay: (secs(1), secs(10)),
                    ..spec()
                },
                PlanError::Stay,
            ),
            (
                PlanSpec {
                    stay: (secs(30), secs(20)),
                    ..spec()
                },
                PlanError::Stay,
            ),
            (
                PlanSpec {
                    duration: secs(10),
                    ramp: secs(5),
                    ..spec()
                },
                PlanError::Duration,
            ),
            (
                PlanSpec {
                    duration: MAX_DURATION + secs(1),
                    ..spec()
                },
                PlanError::Duration,
            ),
            (
                PlanSpec {
                    ramp: secs(300),
                    ..spec()
                },
                PlanError::Ramp,
            ),
            (
                PlanSpec {
                    gap: (Duration::from_millis(100), secs(1)),
                    ..spec()
                },
                PlanError::Gap,
            ),
            (
                PlanSpec {
                    participants: 500,
                    meetings: 100,
                    duration: MAX_DURATION,
                    stay: (MIN_STAY, MIN_STAY),
                    gap: (MIN_GAP, MIN_GAP),
                    ..spec()
                },
                PlanError::TooManyVisits,
            ),
        ];
        for (s, want) in bad {
            assert_eq!(plan(&s), Err(want.clone()), "{s:?}");
        }
        assert!(plan(&spec()).is_ok());
    }
}

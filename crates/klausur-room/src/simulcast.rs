//! Simulcast building blocks, sans-IO: reading and rewriting the VP8 payload descriptor, and
//! choosing which layer of a simulcast camera a subscriber gets.
//!
//! The VP8 payload descriptor (RFC 7741, section 4.2) and the first byte of the VP8 frame tag
//! are codec framing that stays in clear under SFrame (see `docs/e2ee.md`): a forwarder reads
//! them to find keyframes (where a subscriber may switch layers) and rewrites the picture ID
//! and TL0PICIDX so the receiver sees one continuous stream across switches. Nothing here
//! reads or changes a byte after the frame tag's first byte.

use std::time::{Duration, Instant};

pub use str0m::bwe::Delivery;

/// What the forwarder needs from one VP8 RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// First packet of a keyframe (start of partition 0 with the frame tag's P bit 0).
    pub keyframe_start: bool,
    /// The picture ID and its width (7 or 15 bits), with its offset in the payload.
    pub picture_id: Option<(u16, PictureIdWidth, usize)>,
    /// The TL0PICIDX and its offset in the payload.
    pub tl0picidx: Option<(u8, usize)>,
    /// Offset of the VP8 payload (the frame tag on a partition start) after the descriptor.
    pub frame_start: usize,
}

impl Vp8Descriptor {
    /// Width and height of a keyframe, from the clear header at the start of its first packet
    /// (frame tag, start code `9d 01 2a`, 14-bit width and height, RFC 6386 section 9.1);
    /// `None` for any other packet or a header that does not check out.
    pub fn keyframe_size(&self, payload: &[u8]) -> Option<(u32, u32)> {
        if !self.keyframe_start {
            return None;
        }
        let h = payload.get(self.frame_start..self.frame_start + 10)?;
        if h[3..6] != [0x9d, 0x01, 0x2a] {
            return None;
        }
        let width = u32::from(u16::from_le_bytes([h[6], h[7]]) & 0x3fff);
        let height = u32::from(u16::from_le_bytes([h[8], h[9]]) & 0x3fff);
        Some((width, height))
    }
}

/// Width of the picture ID field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureIdWidth {
    Bits7,
    Bits15,
}

impl PictureIdWidth {
    fn modulus(self) -> u32 {
        match self {
            PictureIdWidth::Bits7 => 1 << 7,
            PictureIdWidth::Bits15 => 1 << 15,
        }
    }
}

/// Parses the VP8 payload descriptor at the start of `payload`; `None` if it is truncated.
pub fn parse_vp8(payload: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *payload.first()?;
    let extended = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    let mut at = 1;
    let mut picture_id = None;
    let mut tl0picidx = None;
    if extended {
        let x = *payload.get(at)?;
        at += 1;
        let (i, l, t, k) = (x & 0x80 != 0, x & 0x40 != 0, x & 0x20 != 0, x & 0x10 != 0);
        if i {
            let p0 = *payload.get(at)?;
            if p0 & 0x80 != 0 {
                let p1 = *payload.get(at + 1)?;
                let id = (u16::from(p0 & 0x7f) << 8) | u16::from(p1);
                picture_id = Some((id, PictureIdWidth::Bits15, at));
                at += 2;
            } else {
                picture_id = Some((u16::from(p0), PictureIdWidth::Bits7, at));
                at += 1;
            }
        }
        if l {
            tl0picidx = Some((*payload.get(at)?, at));
            at += 1;
        }
        if t || k {
            payload.get(at)?;
            at += 1;
        }
    }
    let keyframe_start = start
        && partition == 0
        && match payload.get(at) {
            Some(tag) => tag & 0x01 == 0,
            None => false,
        };
    Some(Vp8Descriptor {
        keyframe_start,
        picture_id,
        tl0picidx,
        frame_start: at,
    })
}

/// Picture ID and TL0PICIDX rewriting of one subscriber slot, so that the receiver sees one
/// continuous VP8 stream when the slot switches between simulcast layers (each layer numbers
/// its pictures independently).
#[derive(Debug, Default, Clone)]
pub struct Vp8Rewrite {
    /// Output minus input picture ID (mod 2^15) of the current layer.
    pid_delta: Option<u16>,
    /// Output minus input TL0PICIDX (mod 256) of the current layer.
    tl0_delta: Option<u8>,
    /// Newest output picture ID and TL0PICIDX.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8Rewrite {
    /// Starts a new input stream (a layer switch): the next picture continues after the last
    /// one sent.
    pub fn restart(&mut self) {
        self.pid_delta = None;
        self.tl0_delta = None;
    }

    /// Rewrites the descriptor of `payload` in place (as parsed into `d`).
    pub fn rewrite(&mut self, payload: &mut [u8], d: &Vp8Descriptor) {
        if let Some((id, width, at)) = d.picture_id {
            let m = width.modulus();
            let delta = *self.pid_delta.get_or_insert_with(|| match self.last_pid {
                Some(last) => {
                    ((u32::from(last) + 1 + (1 << 15) - u32::from(id)) % (1 << 15)) as u16
                }
                None => 0,
            });
            let out = ((u32::from(id) + u32::from(delta)) % m) as u16;
            let full = ((u32::from(id) + u32::from(delta)) % (1 << 15)) as u16;
            match width {
                PictureIdWidth::Bits15 => {
                    if let Some(b) = payload.get_mut(at..at + 2) {
                        b[0] = 0x80 | (out >> 8) as u8;
                        b[1] = out as u8;
                    }
                }
                PictureIdWidth::Bits7 => {
                    if let Some(b) = payload.get_mut(at) {
                        *b = out as u8 & 0x7f;
                    }
                }
            }
            if self.last_pid.is_none_or(|last| newer15(full, last)) {
                self.last_pid = Some(full);
            }
        }
        if let Some((idx, at)) = d.tl0picidx {
            let delta = *self.tl0_delta.get_or_insert_with(|| match self.last_tl0 {
                Some(last) => last.wrapping_add(1).wrapping_sub(idx),
                None => 0,
            });
            let out = idx.wrapping_add(delta);
            if let Some(b) = payload.get_mut(at) {
                *b = out;
            }
            if self
                .last_tl0
                .is_none_or(|last| (out.wrapping_sub(last) as i8) > 0)
            {
                self.last_tl0 = Some(out);
            }
        }
    }
}

fn newer15(a: u16, b: u16) -> bool {
    let d = (u32::from(a) + (1 << 15) - u32::from(b)) % (1 << 15);
    d != 0 && d < (1 << 14)
}

/// One layer of a simulcast camera as the room sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Frame height in pixels (0: not known yet).
    pub height: u32,
    /// Measured bitrate of the layer in bit/s (0: not known yet).
    pub bitrate: u64,
}

/// Fraction above a layer's bitrate the estimate must reach before switching up to it, in
/// percent (hysteresis: a switch down happens as soon as the estimate is below the bitrate).
pub const UP_MARGIN_PERCENT: u64 = 25;

/// Chooses the layer (index into `layers`, ordered low to high) for a subscriber that shows
/// the video `want_height` pixels tall, within `budget` bit/s, currently receiving `current`.
///
/// The size bound: the smallest layer at least 80 % of `want_height` tall (a 400-pixel tile
/// takes a 360-pixel layer, a 500-pixel tile the 720-pixel one; a layer of unknown height
/// counts as tall enough). The budget bound: the highest layer whose bitrate fits,
/// switching up only with [`UP_MARGIN_PERCENT`] headroom. The lowest layer is always allowed
/// (`None` only if `layers` is empty); pausing video entirely is the caller's choice.
pub fn choose_layer(
    layers: &[LayerInfo],
    want_height: u32,
    budget: u64,
    current: Option<usize>,
) -> Option<usize> {
    if layers.is_empty() {
        return None;
    }
    let top = layers.len() - 1;
    // Size: the smallest layer at least 80 % as tall as wanted; unknown heights count as fit.
    let by_size = layers
        .iter()
        .position(|l| l.height == 0 || u64::from(l.height) * 5 >= u64::from(want_height) * 4)
        .unwrap_or(top);
    // Budget, with hysteresis against the current layer.
    let mut by_budget = 0;
    for (i, l) in layers.iter().enumerate() {
        let need = if current.is_some_and(|c| i <= c) {
            l.bitrate
        } else {
            l.bitrate + l.bitrate * UP_MARGIN_PERCENT / 100
        };
        if need <= budget {
            by_budget = i;
        } else {
            break;
        }
    }
    Some(by_size.min(by_budget))
}

/// A video track competing for a subscriber's bandwidth in [`allocate`].
#[derive(Debug, Clone)]
pub struct VideoDemand {
    /// Screen shares are served before cameras.
    pub screen: bool,
    pub layers: Vec<LayerInfo>,
    pub want_height: u32,
    pub current: Option<usize>,
}

/// Splits a subscriber's estimated bandwidth `estimate` (bit/s) over its video tracks: audio
/// (`audio` bit/s) is taken off first and never dropped, then screen shares, each given the
/// layer [`choose_layer`] picks within what is left. Then cameras: first every camera its
/// lowest layer, in order, while it fits; then, in rounds, each camera one layer up (towards
/// the size its tile wants, with [`UP_MARGIN_PERCENT`] headroom for a layer above the current
/// one) while the budget allows, so that a short budget gives every tile a smaller picture
/// instead of the first tiles a large one and the others none. A track gets `None` (paused)
/// only if not even its lowest layer fits what is left, except that the first video always
/// gets at least its lowest layer (a subscriber is never left without any picture while one
/// exists).
pub fn allocate(estimate: u64, audio: u64, demands: &[VideoDemand]) -> Vec<Option<usize>> {
    let mut left = estimate.saturating_sub(audio);
    let mut out = vec![None; demands.len()];
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&i| !demands[i].screen);
    let mut first = true;
    // Cameras, with the layer the tile's size asks for (the most an upgrade gives them).
    let mut cameras = Vec::new();
    for i in order {
        let d = &demands[i];
        let Some(lowest) = d.layers.first() else {
            continue;
        };
        if lowest.bitrate > left && !first {
            continue;
        }
        first = false;
        if d.screen {
            let choice = choose_layer(&d.layers, d.want_height, left, d.current);
            if let Some(c) = choice {
                left = left.saturating_sub(d.layers[c].bitrate);
            }
            out[i] = choice;
        } else {
            left = left.saturating_sub(lowest.bitrate);
            out[i] = Some(0);
            let cap = choose_layer(&d.layers, d.want_height, u64::MAX, None).unwrap_or(0);
            cameras.push((i, cap));
        }
    }
    // Upgrades, one layer per camera and round, up to the layer the tile's size asks for.
    loop {
        let mut raised = false;
        for &(i, cap) in &cameras {
            let d = &demands[i];
            let Some(at) = out[i] else {
                continue;
            };
            let next = at + 1;
            if next > cap {
                continue;
            }
            let (now_rate, next_rate) = (d.layers[at].bitrate, d.layers[next].bitrate);
            let check = if d.current.is_some_and(|c| next <= c) {
                next_rate
            } else {
                next_rate + next_rate * UP_MARGIN_PERCENT / 100
            };
            if check.saturating_sub(now_rate) <= left {
                left = left.saturating_sub(next_rate.saturating_sub(now_rate));
                out[i] = Some(next);
                raised = true;
            }
        }
        if !raised {
            return out;
        }
    }
}

/// What the cheapest single step up from `choices` (an [`allocate`] result for `demands`)
/// would need, bit/s: audio and the chosen layers, plus for the one track that is cheapest to
/// raise the next layer towards `bests` (the layer its tile's size asks for) with
/// [`UP_MARGIN_PERCENT`] headroom, in place of its current one. `None` when no track can go up.
///
/// A probe tests this, one step at a time: a probe for every tile's next layer at once would
/// fail on a link that has room for one of them, and leave them all where they are. Given this
/// budget, [`allocate`] raises exactly such a track (the first in its order of those that
/// cost no more).
pub fn next_step(
    audio: u64,
    demands: &[VideoDemand],
    choices: &[Option<usize>],
    bests: &[Option<usize>],
) -> Option<u64> {
    let mut chosen = audio;
    let mut cheapest: Option<u64> = None;
    for ((d, &choice), &best) in demands.iter().zip(choices).zip(bests) {
        let have = choice
            .and_then(|c| d.layers.get(c))
            .map_or(0, |l| l.bitrate);
        chosen = chosen.saturating_add(have);
        let up = match (choice, best) {
            (Some(c), Some(b)) if c < b => c + 1,
            (None, Some(_)) => 0,
            _ => continue,
        };
        let Some(l) = d.layers.get(up) else {
            continue;
        };
        let need = l.bitrate + l.bitrate * UP_MARGIN_PERCENT / 100;
        let step = need.saturating_sub(have);
        cheapest = Some(cheapest.map_or(step, |c| c.min(step)));
    }
    cheapest.map(|c| chosen.saturating_add(c))
}

/// How long a subscriber is given a higher bitrate than its estimate on trial ([`MediaProbe`]).
pub const TRIAL: Duration = Duration::from_millis(2500);
/// The part of [`TRIAL`] a higher layer's keyframe may take to come without shortening the
/// trial ([`MediaProbe::switched`]).
pub const TRIAL_WAIT_KEYFRAME: Duration = Duration::from_millis(500);
/// Wait before the first trial, and after a trial that held.
pub const TRIAL_WAIT: Duration = Duration::from_secs(4);
/// Longest wait after failed trials (each failure triples the wait).
pub const TRIAL_WAIT_MAX: Duration = Duration::from_secs(120);
/// Longest wait after failed probe trains (each failure doubles the wait): a train costs the
/// link a few kilobytes, a media trial a second of overload, so trains may come more often,
/// and a link that widens, or a loaded receiver whose late timestamps failed a train, gets
/// its higher layer sooner.
pub const TRAIN_WAIT_MAX: Duration = Duration::from_secs(30);
/// A trial holds only if the link delivered at least this share (percent) of the rate sent from
/// the subscriber's first switch to the trial's layer on ([`MediaProbe::switched`]), or of the
/// trial's rate if that is less: the switch's keyframe burst, sent at once, makes what was sent
/// count more than the trial asks for while it waits in a bottleneck's queue; a link that
/// delivers the trial's rate meanwhile carries it.
pub const DELIVERED_PERCENT: u64 = 85;
/// The least span of receive times over which a trial's delivery is judged (on a bottleneck
/// whose queue holds the switch's keyframe, that is a measure of what the link delivers).
pub const MEASURE_MIN: Duration = Duration::from_millis(300);
/// A trial tests the link only if at least this share (percent) of its rate was sent after
/// the switch (the rate counts the margin for switching up and the audio reserve, so
/// what is sent stays below it); one that sent less (the higher layer's keyframe never came)
/// proves nothing and counts as failed.
pub const TESTED_PERCENT: u64 = 60;
/// After a failed trial, how long the budget stays at least what was sent before it (plus a
/// tenth): the trial's own overload made the estimate back off, and below that rate the
/// subscriber's lowest camera layer would pause; with only audio left to measure, the estimate
/// could not climb back by itself.
pub const RECOVER: Duration = Duration::from_secs(5);
/// How long the estimate may stay below what is sent at a proven rate without growing before
/// the rate counts as not carried after all.
pub const STALL: Duration = Duration::from_secs(3);
/// A probe train is sent at this multiple of the rate it tests: on a link with room to spare
/// its packets arrive about as fast as they were sent, and a loaded receiver's timing noise
/// (a packet handled 50 ms late stretches a 30 ms train to 80) must still leave the result above
/// the rate tested; a narrower link spreads them to its own rate whatever the multiple.
pub const TRAIN_FACTOR: u64 = 3;
/// How long after a probe train's first result its later ones (of its later packets) are
/// waited for before it is judged.
pub const TRAIN_SETTLE: Duration = Duration::from_millis(300);
/// The longest wait for a probe train's result.
pub const TRAIN_WAIT: Duration = Duration::from_millis(1500);

/// Probing for more bandwidth, for a subscriber whose bandwidth estimator does not probe by
/// itself: with a short probe train first, then, where no train can tell, with media.
///
/// A probe train ([`str0m::bwe::Bwe::probe_train`]) is a few padding packets (resends of
/// cached video packets) spaced at [`TRAIN_FACTOR`] times the rate to test, about 30 ms of
/// them: a bottleneck below that spreads them out to its own rate, which the estimator reads
/// from the TWCC feedback (the train's packets and the media that arrived between them, which
/// shared the bottleneck with them). If the result reaches [`DELIVERED_PERCENT`] of the rate
/// tested, the rate counts as proven at once (as with a media trial that held, below); if not, the probe
/// failed, and the link has been loaded with the train only, a few kilobytes, instead of a
/// higher layer for a second or more. Feedback without a result (the train's packets were lost
/// or their times too disturbed to measure) proves nothing either way: the next train comes
/// after the usual wait. Only where no train can go out (no send stream that can pad) or no
/// feedback comes does the room try media:
///
/// A delay- and loss-based estimate (str0m's, as libwebrtc's) grows only to 1.5 times what is
/// acknowledged, and gradually: a subscriber receiving the low layer of a camera looks the same
/// whether its link carries 300 kbit/s or 30 Mbit/s, and once the estimate has backed off (a
/// loaded machine's delay spikes suffice) it cannot climb past that by itself. So from time to
/// time the room tries the next layer up ("trial"): for [`TRIAL`] the budget is what that layer
/// needs. The estimator tells how it went, not by reaching the new rate (it cannot in 2.5 s)
/// but by its direction:
/// - it backs off (falls below 90 % of its highest value since it last backed off): congestion;
/// - over the trial it grew: the link carried more than before, and the trial's rate counts as
///   proven; it stays the budget until congestion, or until the estimate, below what is sent,
///   has not grown for [`STALL`] (an estimate that has backed off before does not fall again
///   when more is sent than the link carries; it stops growing);
/// - it did not grow: the trial failed.
///
/// The estimate can grow though the link cannot carry the trial's rate: when the trial begins
/// while the estimate is still climbing towards what the link carries (the lower layers leave
/// it headroom), it goes on climbing for a while as a bottleneck queue fills. So a trial holds
/// only if, besides, the link delivered at least [`DELIVERED_PERCENT`] of the rate sent after
/// the subscriber's slot switched to the trial's layer (of the trial's rate, if less), both
/// taken from the subscriber's TWCC feedback ([`Delivery`]): the bytes reported on over the
/// span of their send times against the bytes received over the span of their receive times.
/// A bottleneck delivers at its own rate whether its queue grows or drops. A trial that did not
/// send near its rate ([`TESTED_PERCENT`]) proves nothing; one clearly not carried ends early. Without feedback (no estimator of the room's
/// own) the estimate alone decides. After a failed trial the budget keeps what was sent before
/// it for [`RECOVER`].
///
/// After a failed trial (or a proven rate that stalled) the next probe waits three times longer
/// (up to [`TRIAL_WAIT_MAX`]); after a failed train, twice as long (up to [`TRAIN_WAIT_MAX`]).
#[derive(Debug, Clone)]
pub struct MediaProbe {
    /// A rate carried without congestion (bit/s), cleared at the first sign of congestion.
    proven: u64,
    /// The running probe train.
    train: Option<Train>,
    /// The subscriber's transport's latest reading ([`MediaProbe::observe`]).
    latest: Delivery,
    /// The highest estimate since the estimate last backed off.
    peak: u64,
    /// Since when more is sent (at a proven rate) than the estimate, which has not grown since.
    behind_since: Option<Instant>,
    /// The latest estimate.
    estimate: u64,
    /// The running trial.
    trial: Option<Trial>,
    /// What was being sent at the latest [`MediaProbe::budget`] (bit/s).
    sending: u64,
    /// After a failed trial: until when the budget stays at least this ([`RECOVER`]).
    floor: Option<(Instant, u64)>,
    next_try: Option<Instant>,
    wait: Duration,
    /// Media trials begun.
    trials: u64,
}

/// A probe train sent, its result awaited.
#[derive(Debug, Clone, Copy)]
struct Train {
    /// The rate it tests (bit/s; it is sent at [`TRAIN_FACTOR`] times that).
    rate: u64,
    began: Instant,
    /// The transport's reading when it began.
    before: Delivery,
    /// What was being sent when it began (bit/s).
    sending: u64,
    /// When its first result came, and the latest result (bit/s).
    result: Option<(Instant, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Trial {
    until: Instant,
    rate: u64,
    /// The estimate when it began.
    from: u64,
    /// What was being sent when it began (bit/s).
    before: u64,
    /// When a subscriber slot first switched to a layer of the trial ([`MediaProbe::switched`]).
    switched: Option<Instant>,
    /// The subscriber's transport's reading when delivery began to count (the first after the
    /// switch).
    settled: Option<Delivery>,
    /// Its latest reading.
    latest: Delivery,
}

impl Trial {
    /// Whether the subscriber received enough of what was sent after the trial settled; `None`
    /// when there is nothing to judge by (no acknowledgements, or no time measured).
    fn carried(&self) -> Option<bool> {
        if self.switched.is_none() && self.latest.last_sent.is_some() {
            // With feedback, but the trial's layer never came: nothing was tested.
            return Some(false);
        }
        let (sent, delivered) = self.delivery()?;
        let tested = sent * 100 >= self.rate * TESTED_PERCENT;
        Some(tested && delivered_enough(sent.min(self.rate), delivered))
    }

    /// Whether the link is shown not to carry what was sent, or the trial's rate if less
    /// (however little was sent): the trial can end at once.
    fn overloaded(&self) -> bool {
        self.delivery()
            .is_some_and(|(sent, delivered)| !delivered_enough(sent.min(self.rate), delivered))
    }

    /// The rate sent and the rate delivered (bit/s) of the packets reported on since the trial
    /// settled; `None` before their receive times span [`MEASURE_MIN`].
    fn delivery(&self) -> Option<(u64, u64)> {
        let (a, b) = (self.settled?, self.latest);
        let sent_ms = b
            .last_sent?
            .saturating_duration_since(a.last_sent?)
            .as_millis() as u64;
        let received_ms = b
            .last_received?
            .saturating_duration_since(a.last_received?)
            .as_millis() as u64;
        if received_ms < MEASURE_MIN.as_millis() as u64 || sent_ms == 0 {
            return None;
        }
        let bits = |x: u64, y: u64| x.saturating_sub(y).saturating_mul(8000);
        let sent = bits(b.reported_bytes, a.reported_bytes) / sent_ms;
        let delivered = bits(b.received_bytes, a.received_bytes) / received_ms;
        Some((sent, delivered))
    }
}

/// Whether at least [`DELIVERED_PERCENT`] of the rate `sent` was `delivered` (bit/s).
fn delivered_enough(sent: u64, delivered: u64) -> bool {
    delivered * 100 >= sent * DELIVERED_PERCENT
}

impl Default for MediaProbe {
    fn default() -> Self {
        MediaProbe {
            proven: 0,
            train: None,
            latest: Delivery::default(),
            peak: 0,
            behind_since: None,
            estimate: 0,
            trial: None,
            sending: 0,
            floor: None,
            next_try: None,
            wait: TRIAL_WAIT,
            trials: 0,
        }
    }
}

impl MediaProbe {
    /// Notes what the subscriber's transport reports (call before [`MediaProbe::budget`]): a
    /// running trial is judged by it as well as by the estimate.
    pub fn observe(&mut self, now: Instant, delivery: Delivery) {
        self.latest = delivery;
        if let Some(t) = &mut self.train {
            if delivery.probe_results > t.before.probe_results {
                let first = t.result.map_or(now, |(at, _)| at);
                t.result = Some((first, delivery.probe_bitrate));
            }
        }
        let Some(t) = &mut self.trial else {
            return;
        };
        t.latest = delivery;
        if t.settled.is_none() {
            if t.switched.is_some() {
                t.settled = Some(delivery);
            }
        } else if t.overloaded() {
            // Clearly not carried: end the trial now rather than overload the link longer (one
            // that sent too little to test anything runs to its end: its layer may yet come).
            t.until = t.until.min(now);
        }
    }

    /// The budget to allocate with: the estimate, or more while a trial runs or a trial's rate
    /// has been carried. `sending`: what the subscriber is being sent now (bit/s).
    pub fn budget(&mut self, now: Instant, estimate: u64, sending: u64) -> u64 {
        self.estimate = estimate;
        self.sending = sending;
        let backed_off = estimate < self.peak / 10 * 9;
        let grew = estimate > self.peak;
        if backed_off || grew {
            self.peak = estimate;
        }
        let behind = self.proven > estimate && sending > estimate;
        if !behind || grew {
            self.behind_since = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(now);
        }
        let stalled = self
            .behind_since
            .is_some_and(|t| now.saturating_duration_since(t) >= STALL);
        if backed_off || stalled {
            if self.proven > 0 {
                tracing::debug!(self.proven, estimate, stalled, "probed rate dropped");
            }
            self.proven = 0;
            self.behind_since = None;
            if let Some(t) = self.trial.take() {
                tracing::debug!(
                    rate = t.rate,
                    from = t.from,
                    estimate,
                    "media probe backed off"
                );
                self.failed(now, t.before, 3, TRIAL_WAIT_MAX);
            } else if stalled {
                self.wait = (self.wait * 3).min(TRIAL_WAIT_MAX);
            }
            self.next_try = Some(now + self.wait);
        } else if let Some(t) = self.trial {
            if now >= t.until {
                self.trial = None;
                let carried = t.carried();
                tracing::debug!(
                    rate = t.rate,
                    from = t.from,
                    peak = self.peak,
                    delivery = ?t.delivery(),
                    ?carried,
                    "media probe ended"
                );
                if self.peak > t.from && carried != Some(false) {
                    self.proven = t.rate;
                    self.wait = TRIAL_WAIT;
                    self.behind_since = None;
                } else {
                    self.failed(now, t.before, 3, TRIAL_WAIT_MAX);
                }
                self.next_try = Some(now + self.wait);
            }
        }
        // A train is judged by its result, also when its queueing made the estimate back off.
        if let Some(t) = self.train {
            self.judge_train(now, t);
        }
        if self
            .floor
            .is_some_and(|(until, rate)| now >= until || estimate >= rate)
        {
            self.floor = None;
        }
        let trial = self.trial.map_or(0, |t| t.rate);
        let floor = self.floor.map_or(0, |(_, rate)| rate);
        estimate.max(self.proven).max(trial).max(floor)
    }

    /// After a failed train or trial: the next one waits `factor` times longer (up to `max`),
    /// and the budget keeps what was sent before it (`before`, bit/s), and a tenth, for
    /// [`RECOVER`].
    fn failed(&mut self, now: Instant, before: u64, factor: u32, max: Duration) {
        self.wait = (self.wait * factor).min(max.max(self.wait));
        self.floor = Some((now + RECOVER, before + before / 10));
    }

    /// A probe train that has a result, or has waited long enough for one, is judged: proven,
    /// failed, or (no feedback at all) left to a media trial.
    fn judge_train(&mut self, now: Instant, t: Train) {
        let settled = t
            .result
            .is_some_and(|(first, _)| now >= first + TRAIN_SETTLE);
        if !settled && now < t.began + TRAIN_WAIT {
            return;
        }
        self.train = None;
        let result = t.result.map(|(_, r)| r);
        tracing::debug!(
            rate = t.rate,
            ?result,
            estimate = self.estimate,
            "probe train ended"
        );
        match result {
            Some(r) if delivered_enough(t.rate, r) => {
                self.proven = t.rate;
                self.wait = TRIAL_WAIT;
                self.behind_since = None;
            }
            None if self.latest.last_sent == t.before.last_sent => {
                // No feedback since: nothing to judge by but the estimate, under media.
                self.start_trial(now, t.rate);
                return;
            }
            // Feedback, but no valid result: the train's packets were lost, or their times
            // were too disturbed to measure. It cost the link next to nothing: the next one
            // comes after the usual wait.
            None => {}
            Some(_) => self.failed(now, t.sending, 2, TRAIN_WAIT_MAX),
        }
        self.next_try = Some(now + self.wait);
    }

    /// After an allocation within `budget`: `next_step` is what taking one layer more would
    /// need (bit/s). When a probe is due, returns the rate at which to send a probe train
    /// ([`TRAIN_FACTOR`] times `next_step`): the caller sends one, or tells
    /// [`MediaProbe::no_train`] that it cannot.
    pub fn consider(&mut self, now: Instant, budget: u64, next_step: u64) -> Option<u64> {
        if next_step <= budget || self.trying() {
            return None;
        }
        match self.next_try {
            None => self.next_try = Some(now + self.wait),
            Some(t) if now >= t => {
                tracing::debug!(
                    rate = next_step,
                    estimate = self.estimate,
                    "probe train began"
                );
                self.train = Some(Train {
                    rate: next_step,
                    began: now,
                    before: self.latest,
                    sending: self.sending,
                    result: None,
                });
                return Some(next_step.saturating_mul(TRAIN_FACTOR));
            }
            Some(_) => {}
        }
        None
    }

    /// No probe train could be sent for the one [`MediaProbe::consider`] asked for: the
    /// higher layer is tried with media instead.
    pub fn no_train(&mut self, now: Instant) {
        if let Some(t) = self.train.take() {
            self.start_trial(now, t.rate);
        }
    }

    fn start_trial(&mut self, now: Instant, rate: u64) {
        tracing::debug!(rate, estimate = self.estimate, "media probe began");
        self.trials += 1;
        self.trial = Some(Trial {
            until: now + TRIAL,
            rate,
            from: self.estimate,
            before: self.sending,
            settled: None,
            switched: None,
            latest: Delivery::default(),
        });
    }

    /// A subscriber slot switched to a higher layer during a trial (at its keyframe): delivery
    /// counts from the first such switch on, and the trial runs at least
    /// [`TRIAL`] minus [`TRIAL_WAIT_KEYFRAME`] from it (the keyframe may come late).
    pub fn switched(&mut self, now: Instant) {
        if let Some(t) = &mut self.trial {
            if t.switched.is_none() {
                t.switched = Some(now);
                t.until = t.until.max(now + TRIAL - TRIAL_WAIT_KEYFRAME);
            }
        }
    }

    /// How many media trials began.
    pub fn trials(&self) -> u64 {
        self.trials
    }

    /// Whether a probe train or a trial is running.
    pub fn trying(&self) -> bool {
        self.train.is_some() || self.trial.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`MediaProbe::consider`] where no probe train can go out: a due probe is tried with
    /// media.
    fn consider_media(p: &mut MediaProbe, now: Instant, budget: u64, next_step: u64) {
        if p.consider(now, budget, next_step).is_some() {
            p.no_train(now);
        }
    }

    /// X=1, I=1 (15-bit), L=1, T=1; S=1, PID=0; frame tag byte.
    fn packet(pid: u16, tl0: u8, start: bool, key: bool) -> Vec<u8> {
        let b0 = 0x80 | if start { 0x10 } else { 0 };
        vec![
            b0,
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            0x40,
            if key { 0x10 } else { 0x11 },
            0xaa,
            0xbb,
        ]
    }

    #[test]
    fn parses_keyframe_start_and_fields() {
        let d = parse_vp8(&packet(0x1234, 7, true, true)).expect("descriptor");
        assert!(d.keyframe_start);
        assert_eq!(d.picture_id, Some((0x1234, PictureIdWidth::Bits15, 2)));
        assert_eq!(d.tl0picidx, Some((7, 4)));
        assert!(
            !parse_vp8(&packet(1, 7, true, false))
                .expect("descriptor")
                .keyframe_start
        );
        assert!(
            !parse_vp8(&packet(1, 7, false, true))
                .expect("descriptor")
                .keyframe_start
        );
        // Minimal descriptor (no X): byte 0 then the frame tag.
        assert!(parse_vp8(&[0x10, 0x00]).expect("descriptor").keyframe_start);
        assert!(!parse_vp8(&[0x10, 0x01]).expect("descriptor").keyframe_start);
        // 7-bit picture ID.
        let d = parse_vp8(&[0x90, 0x80, 0x05, 0x00]).expect("descriptor");
        assert_eq!(d.picture_id, Some((5, PictureIdWidth::Bits7, 2)));
        assert!(d.keyframe_start);
    }

    #[test]
    fn media_probe_tries_higher_and_backs_off_after_congestion() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = MediaProbe::default();
        // Estimate 300 kbit/s, 240 kbit/s sent: no trial before the first wait.
        assert_eq!(p.budget(t0, 300_000, 240_000), 300_000);
        consider_media(&mut p, t0, 300_000, 700_000);
        assert!(!p.trying());
        let t1 = t0 + TRIAL_WAIT;
        assert_eq!(p.budget(t1, 300_000, 240_000), 300_000);
        consider_media(&mut p, t1, 300_000, 700_000);
        assert!(p.trying());
        // During the trial the budget is the next step's, though the estimate lags far behind
        // what is sent: that is no congestion.
        assert_eq!(p.budget(t1 + ms(500), 310_000, 700_000), 700_000);
        assert!(p.trying());
        // Congestion: the estimator backs off. The trial failed; the next one waits three times
        // as long. Meanwhile the budget stays what was sent before the trial, and a tenth,
        // though the estimate is below it, for at most RECOVER.
        let t2 = t1 + ms(1000);
        assert_eq!(p.budget(t2, 250_000, 700_000), 264_000);
        assert!(!p.trying());
        assert_eq!(p.budget(t2 + ms(1000), 255_000, 240_000), 264_000);
        assert_eq!(p.budget(t2 + RECOVER, 255_000, 240_000), 255_000);
        consider_media(&mut p, t2 + TRIAL_WAIT, 250_000, 700_000);
        assert!(!p.trying(), "waits longer after a failure");
        let t3 = t2 + TRIAL_WAIT * 3;
        consider_media(&mut p, t3, 250_000, 700_000);
        assert!(p.trying());
        // An estimate that neither backs off nor grows over the trial (an overloaded link, the
        // estimate already low): failed, and the wait triples again.
        assert_eq!(p.budget(t3 + ms(1000), 250_000, 700_000), 700_000);
        assert_eq!(p.budget(t3 + TRIAL, 250_000, 700_000), 264_000);
        assert!(!p.trying());
        // The estimate back at what was sent before ends the floor early.
        assert_eq!(p.budget(t3 + TRIAL + ms(500), 265_000, 240_000), 265_000);
        assert_eq!(p.budget(t3 + TRIAL + ms(1000), 250_000, 240_000), 250_000);
        consider_media(&mut p, t3 + TRIAL + TRIAL_WAIT * 3, 250_000, 700_000);
        assert!(!p.trying(), "waits nine times as long after two failures");
        let t4 = t3 + TRIAL + TRIAL_WAIT * 9;
        consider_media(&mut p, t4, 250_000, 700_000);
        assert!(p.trying());
        // This one holds (the estimate grows, never falls): its rate stays the budget while the
        // estimate keeps growing towards it ...
        assert_eq!(p.budget(t4 + ms(1000), 270_000, 700_000), 700_000);
        let t5 = t4 + TRIAL;
        assert_eq!(p.budget(t5, 290_000, 700_000), 700_000);
        assert!(!p.trying());
        assert_eq!(p.budget(t5 + ms(2000), 400_000, 700_000), 700_000);
        assert_eq!(p.budget(t5 + ms(4000), 800_000, 700_000), 800_000);
        assert_eq!(
            p.budget(t5 + ms(4500), 750_000, 700_000),
            750_000,
            "a small dip is no congestion"
        );
        assert_eq!(
            p.budget(t5 + ms(5000), 500_000, 700_000),
            500_000,
            "congestion clears it"
        );

        // A proven rate the estimate stops growing towards while it is sent is cleared after
        // STALL; while less is sent (a smaller tile), it stays.
        let mut s = MediaProbe::default();
        s.budget(t0, 300_000, 700_000);
        consider_media(&mut s, t0, 300_000, 700_000);
        consider_media(&mut s, t0 + TRIAL_WAIT, 300_000, 700_000);
        assert!(s.trying());
        let t6 = t0 + TRIAL_WAIT + TRIAL;
        assert_eq!(s.budget(t6, 320_000, 700_000), 700_000);
        assert_eq!(s.budget(t6 + ms(1000), 330_000, 700_000), 700_000);
        assert_eq!(
            s.budget(t6 + ms(1000) + STALL * 2, 330_000, 200_000),
            700_000
        );
        assert_eq!(
            s.budget(t6 + ms(2000) + STALL * 2, 330_000, 700_000),
            700_000
        );
        let t7 = t6 + ms(2000) + STALL * 3;
        assert_eq!(s.budget(t7 - ms(1), 330_000, 700_000), 700_000);
        assert_eq!(s.budget(t7, 330_000, 700_000), 330_000, "stalled");
        consider_media(&mut s, t7 + TRIAL_WAIT, 330_000, 700_000);
        assert!(!s.trying(), "a stalled rate counts as a failure");

        // Nothing more wanted: no trial.
        let mut q = MediaProbe::default();
        consider_media(&mut q, t0, 1_000_000, 700_000);
        consider_media(&mut q, t0 + TRIAL_WAIT * 2, 1_000_000, 700_000);
        assert!(!q.trying());
    }

    #[test]
    fn a_probe_train_proves_a_rate_or_fails_without_a_media_trial() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let t1 = t0 + TRIAL_WAIT;
        // Feedback so far, before the train.
        let before = Delivery {
            reported_bytes: 1_000_000,
            received_bytes: 990_000,
            last_sent: Some(t0),
            last_received: Some(t0 + ms(20)),
            probe_results: 3,
            probe_bitrate: 123_000,
        };
        // At t1 a train is due: 250 kbit/s sent, 700 kbit/s wanted; it goes at three times that.
        let sent = || {
            let mut p = MediaProbe::default();
            p.observe(t0, before);
            p.budget(t0, 280_000, 250_000);
            assert_eq!(p.consider(t0, 280_000, 700_000), None, "not yet due");
            p.budget(t1, 280_000, 250_000);
            assert_eq!(p.consider(t1, 280_000, 700_000), Some(2_100_000));
            assert!(p.trying());
            assert_eq!(p.consider(t1, 280_000, 700_000), None, "one at a time");
            p
        };
        // Its result comes 200 ms later (feedback on what was sent since, too).
        // Judged with the estimate at `estimate`.
        let with_result = |bitrate: u64, estimate: u64| {
            let mut p = sent();
            let after = Delivery {
                reported_bytes: before.reported_bytes + 10_000,
                received_bytes: before.received_bytes + 10_000,
                last_sent: Some(t1 + ms(100)),
                last_received: Some(t1 + ms(130)),
                probe_results: before.probe_results + 1,
                probe_bitrate: bitrate,
            };
            p.observe(t1 + ms(200), after);
            // Judged once later results had their time.
            assert_eq!(p.budget(t1 + ms(200), 280_000, 250_000), 280_000);
            assert!(p.trying());
            let end = t1 + ms(200) + TRAIN_SETTLE;
            p.observe(end, after);
            (p.budget(end, estimate, 250_000), p, end)
        };

        // The link carried more than the rate: proven at once, no media trial.
        let (budget, p, _) = with_result(1_350_000, 280_000);
        assert_eq!(budget, 700_000);
        assert!(!p.trying());

        // A 300 kbit/s bottleneck spread the train out: failed, the budget stays the estimate,
        // nothing was tried with media, and the next train waits twice as long.
        let (budget, mut p, end) = with_result(285_000, 280_000);
        assert_eq!(budget, 280_000);
        assert!(!p.trying());
        // Where the train's queueing made the estimate back off, for RECOVER the budget keeps
        // what was sent before it (and a tenth), as after a failed media trial.
        let (budget, mut q, _) = with_result(285_000, 150_000);
        assert_eq!(budget, 275_000);
        assert_eq!(q.budget(end + RECOVER, 150_000, 250_000), 150_000);
        assert_eq!(
            p.consider(end + TRIAL_WAIT * 2 - ms(1), 280_000, 700_000),
            None
        );
        assert_eq!(
            p.consider(end + TRIAL_WAIT * 2, 280_000, 700_000),
            Some(2_100_000)
        );
        // Trains that keep failing come at least every TRAIN_WAIT_MAX.
        let mut at = end + TRIAL_WAIT * 2;
        for _ in 0..5 {
            p.observe(
                at + ms(200),
                Delivery {
                    probe_results: p.latest.probe_results + 1,
                    probe_bitrate: 285_000,
                    last_sent: Some(at + ms(100)),
                    ..p.latest
                },
            );
            at += ms(200) + TRAIN_SETTLE;
            p.budget(at, 280_000, 250_000);
            assert!(!p.trying());
            at = p.next_try.expect("next train");
            assert!(p.consider(at, 280_000, 700_000).is_some());
        }
        assert_eq!(p.wait, TRAIN_WAIT_MAX);

        // Feedback came, but no result (the train's packets were lost): nothing proven, the
        // next train after the usual wait (not three times as long).
        let mut p = sent();
        let later = Delivery {
            last_sent: Some(t1 + ms(300)),
            last_received: Some(t1 + ms(330)),
            ..before
        };
        p.observe(t1 + ms(400), later);
        assert!(p.trying());
        p.observe(t1 + TRAIN_WAIT, later);
        assert_eq!(p.budget(t1 + TRAIN_WAIT, 280_000, 250_000), 280_000);
        assert!(!p.trying());
        assert_eq!(p.consider(t1 + TRAIN_WAIT * 2, 280_000, 700_000), None);
        assert_eq!(
            p.consider(t1 + TRAIN_WAIT + TRIAL_WAIT, 280_000, 700_000),
            Some(2_100_000)
        );

        // No feedback at all: the rate is tried with media, judged by the estimate.
        let mut p = sent();
        p.observe(t1 + TRAIN_WAIT - ms(1), before);
        assert_eq!(p.budget(t1 + TRAIN_WAIT - ms(1), 280_000, 250_000), 280_000);
        p.observe(t1 + TRAIN_WAIT, before);
        assert_eq!(p.budget(t1 + TRAIN_WAIT, 280_000, 250_000), 700_000);
        assert!(p.trying());

        // No train could go out: the media trial begins at once.
        let mut p = sent();
        p.no_train(t1);
        assert_eq!(p.budget(t1, 280_000, 250_000), 700_000);
    }

    #[test]
    fn media_probe_holds_only_if_the_link_delivered_the_trial_rate() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let t1 = t0 + TRIAL_WAIT;
        // A probe whose trial of 400 kbit/s begins at t1, 250 kbit/s sent before it; its layer
        // not yet switched to (`begun`), or switched to at once (`started`).
        let begun = || {
            let mut p = MediaProbe::default();
            p.budget(t0, 280_000, 250_000);
            consider_media(&mut p, t0, 280_000, 400_000);
            p.budget(t1, 280_000, 250_000);
            consider_media(&mut p, t1, 280_000, 400_000);
            assert!(p.trying());
            p
        };
        let started = || {
            let mut p = begun();
            p.switched(t1);
            p
        };
        // TWCC feedback at `at` ms into the trial, on what was sent until 100 ms before: sent at
        // `sent` bit/s, of which the link delivered `delivered` bit/s (the rest dropped).
        let reading = |at: u64, sent: u64, delivered: u64| Delivery {
            reported_bytes: 1_000_000 + sent * (at - 100) / 8000,
            received_bytes: 900_000 + delivered * (at - 100) / 8000,
            last_sent: Some(t1 + ms(at - 100)),
            last_received: Some(t1 + ms(at - 80)),
            ..Default::default()
        };
        // The estimate grows all through the trial (it began while the estimate still climbed).
        let after_trial = |delivered: Option<u64>| -> u64 {
            let mut p = started();
            for i in 1..=5u64 {
                let at = 500 * i;
                p.observe(
                    t1 + ms(at),
                    delivered.map_or(Delivery::default(), |d| reading(at, 400_000, d)),
                );
                p.budget(t1 + ms(at), 280_000 + 5_000 * i, 400_000);
            }
            assert!(!p.trying());
            p.budget(t1 + TRIAL + ms(500), 305_000, 400_000)
        };
        assert_eq!(
            after_trial(Some(390_000)),
            400_000,
            "delivered: the rate holds"
        );
        assert_eq!(
            after_trial(Some(300_000)),
            305_000,
            "a bottleneck of 300 kbit/s: failed though the estimate grew"
        );
        assert_eq!(
            after_trial(None),
            400_000,
            "no feedback: the estimate alone decides"
        );

        // 200 kbit/s sent, all of it delivered, the estimate growing: nothing tested, whether the
        // higher layer came but sent little, or never came (no switch).
        for mut p in [started(), begun()] {
            for i in 1..=5u64 {
                let at = 500 * i;
                p.observe(t1 + ms(at), reading(at, 200_000, 200_000));
                p.budget(t1 + ms(at), 280_000 + 5_000 * i, 200_000);
            }
            assert!(!p.trying());
            assert_eq!(p.budget(t1 + TRIAL + ms(500), 305_000, 200_000), 305_000);
        }

        // The switch's keyframe burst still waits in a bottleneck's queue when delivery begins to
        // count (2 Mbit/s sent, 300 kbit/s arrived); after it, 400 sent and 390 delivered: what
        // was sent counts at most at the trial's rate, so the trial holds.
        let mut p = started();
        let burst = Delivery {
            reported_bytes: 1_000_000 + 2_000_000 * 400 / 8000,
            received_bytes: 900_000 + 300_000 * 400 / 8000,
            last_sent: Some(t1 + ms(400)),
            last_received: Some(t1 + ms(420)),
            ..Default::default()
        };
        let before = Delivery {
            reported_bytes: 1_000_000,
            received_bytes: 900_000,
            last_sent: Some(t1),
            last_received: Some(t1 + ms(20)),
            ..Default::default()
        };
        p.observe(t1 + ms(100), before);
        p.observe(t1 + ms(420), burst);
        let end = Delivery {
            reported_bytes: burst.reported_bytes + 400_000 * 1500 / 8000,
            received_bytes: burst.received_bytes + 390_000 * 1500 / 8000,
            last_sent: Some(t1 + ms(1900)),
            last_received: Some(t1 + ms(1920)),
            ..Default::default()
        };
        p.observe(t1 + TRIAL, end);
        p.budget(t1 + TRIAL - ms(1), 290_000, 400_000);
        assert_eq!(p.budget(t1 + TRIAL, 300_000, 400_000), 400_000);

        // Clearly not carried (400 kbit/s sent, 250 delivered): the trial ends as soon as what
        // was reported after it settled spans MEASURE_MIN, not at its full length.
        let mut p = started();
        p.observe(t1 + ms(1), reading(500, 400_000, 250_000));
        p.observe(t1 + ms(700), reading(700, 400_000, 250_000));
        assert_eq!(p.budget(t1 + ms(700), 290_000, 400_000), 400_000);
        assert!(p.trying(), "200 ms reported: too little to judge");
        p.observe(t1 + ms(800), reading(800, 400_000, 250_000));
        assert_eq!(p.budget(t1 + ms(800), 300_000, 400_000), 300_000);
        assert!(!p.trying());
        // A keyframe burst on a link of 1 Mbit/s (2 Mbit/s sent over the first 300 ms): it
        // delivers more than the trial's 400 kbit/s, so it is not overloaded, though it delivers
        // only half of what was sent.
        let mut p = started();
        p.observe(t1 + ms(1), reading(100, 0, 0));
        p.observe(t1 + ms(400), reading(400, 2_000_000, 1_000_000));
        assert_eq!(p.budget(t1 + ms(400), 290_000, 400_000), 400_000);
        assert!(
            p.trying(),
            "a link faster than the trial's rate is not overloaded"
        );
        // Too little sent to test anything, but all of it delivered: no early end (the layer
        // may yet come); judged at the end.
        let mut p = started();
        p.observe(t1 + ms(1), reading(500, 150_000, 150_000));
        p.observe(t1 + ms(1000), reading(1000, 150_000, 150_000));
        p.budget(t1 + ms(1000), 290_000, 200_000);
        assert!(p.trying());

        // A keyframe that comes late lengthens the trial: switched 1.5 s in, it runs until
        // 2 s after that ([`TRIAL`] less [`TRIAL_WAIT_KEYFRAME`]).
        let mut p = begun();
        p.switched(t1 + ms(1500));
        p.budget(t1 + TRIAL + ms(100), 290_000, 400_000);
        assert!(p.trying(), "still running after TRIAL from its start");
        p.budget(t1 + ms(3500), 290_000, 400_000);
        assert!(!p.trying());
    }

    #[test]
    fn keyframe_size_from_the_clear_header() {
        // Descriptor (X, I 15-bit, S) then a keyframe's frame tag, start code, 640x360.
        let mut p = vec![0x90, 0x80, 0x81, 0x02];
        p.extend_from_slice(&[
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0xff,
        ]);
        let d = parse_vp8(&p).expect("descriptor");
        assert_eq!(d.frame_start, 4);
        assert_eq!(d.keyframe_size(&p), Some((640, 360)));
        // Not a start code, truncated, a delta frame: no size.
        let mut bad = p.clone();
        bad[7] = 0x9c;
        assert_eq!(parse_vp8(&bad).and_then(|d| d.keyframe_size(&bad)), None);
        assert_eq!(
            parse_vp8(&p[..12]).and_then(|d| d.keyframe_size(&p[..12])),
            None
        );
        let mut delta = p.clone();
        delta[4] = 0x11;
        assert_eq!(
            parse_vp8(&delta).and_then(|d| d.keyframe_size(&delta)),
            None
        );
    }

    #[test]
    fn truncated_input_never_panics() {
        let full = packet(0x1234, 7, true, true);
        for n in 0..full.len() {
            let _ = parse_vp8(&full[..n]);
        }
        assert_eq!(parse_vp8(&[]), None);
        assert_eq!(parse_vp8(&[0x80]), None);
        // Frame tag missing: parsed, but not a keyframe.
        assert!(!parse_vp8(&full[..6]).expect("descriptor").keyframe_start);
    }

    #[test]
    fn rewrite_continues_across_switch() {
        let mut r = Vp8Rewrite::default();
        let mut out = Vec::new();
        for (pid, tl0) in [(100u16, 10u8), (101, 10), (102, 11)] {
            let mut p = packet(pid, tl0, true, false);
            let d = parse_vp8(&p).expect("descriptor");
            r.rewrite(&mut p, &d);
            out.push(parse_vp8(&p).expect("descriptor"));
        }
        assert_eq!(out[2].picture_id.expect("picture id").0, 102);
        // Switch to a layer numbering from 30000 (wraps beyond 2^15) with TL0PICIDX 250.
        r.restart();
        for (pid, tl0) in [(32767u16, 250u8), (0, 251)] {
            let mut p = packet(pid, tl0, true, true);
            let d = parse_vp8(&p).expect("descriptor");
            r.rewrite(&mut p, &d);
            out.push(parse_vp8(&p).expect("descriptor"));
        }
        assert_eq!(out[3].picture_id.expect("picture id").0, 103);
        assert_eq!(out[3].tl0picidx.expect("tl0picidx").0, 12);
        assert_eq!(out[4].picture_id.expect("picture id").0, 104);
        assert_eq!(out[4].tl0picidx.expect("tl0picidx").0, 13);
        // The frame tag and what follows are untouched.
        let mut p = packet(5, 1, true, true);
        let d = parse_vp8(&p).expect("descriptor");
        r.rewrite(&mut p, &d);
        assert_eq!(&p[6..], &[0x10, 0xaa, 0xbb]);
    }

    fn layers() -> Vec<LayerInfo> {
        vec![
            LayerInfo {
                height: 180,
                bitrate: 150_000,
            },
            LayerInfo {
                height: 360,
                bitrate: 500_000,
            },
            LayerInfo {
                height: 720,
                bitrate: 1_500_000,
            },
        ]
    }

    #[test]
    fn size_picks_smallest_layer_at_least_80_percent_as_tall() {
        let l = layers();
        assert_eq!(choose_layer(&l, 720, u64::MAX, None), Some(2));
        assert_eq!(choose_layer(&l, 450, u64::MAX, None), Some(1));
        assert_eq!(choose_layer(&l, 451, u64::MAX, None), Some(2));
        assert_eq!(choose_layer(&l, 1080, u64::MAX, None), Some(2));
        assert_eq!(choose_layer(&l, 225, u64::MAX, None), Some(0));
        assert_eq!(choose_layer(&l, 360, u64::MAX, None), Some(1));
        assert_eq!(choose_layer(&l, 2000, u64::MAX, None), Some(2));
        assert_eq!(choose_layer(&[], 720, u64::MAX, None), None);
    }

    #[test]
    fn budget_has_hysteresis() {
        let l = layers();
        // 300 kbit/s: only the low layer.
        assert_eq!(choose_layer(&l, 1080, 300_000, None), Some(0));
        // 550 kbit/s fits layer 1 but not with the up margin: stay low when coming from low...
        assert_eq!(choose_layer(&l, 1080, 550_000, Some(0)), Some(0));
        // ...but keep layer 1 when already on it.
        assert_eq!(choose_layer(&l, 1080, 550_000, Some(1)), Some(1));
        assert_eq!(choose_layer(&l, 1080, 700_000, Some(0)), Some(1));
        // Below the bitrate: switch down at once.
        assert_eq!(choose_layer(&l, 1080, 450_000, Some(1)), Some(0));
    }

    #[test]
    fn allocate_serves_audio_then_screen_then_cameras() {
        let cam = VideoDemand {
            screen: false,
            layers: layers(),
            want_height: 1080,
            current: None,
        };
        let screen = VideoDemand {
            screen: true,
            layers: vec![LayerInfo {
                height: 1080,
                bitrate: 1_000_000,
            }],
            want_height: 1080,
            current: Some(0),
        };
        // 1.15 Mbit/s minus 50 kbit/s audio: the screen fits, the camera's low layer does not.
        assert_eq!(
            allocate(1_150_000, 50_000, &[cam.clone(), screen.clone()]),
            vec![None, Some(0)]
        );
        // Plenty: both, the camera at its top layer.
        assert_eq!(
            allocate(10_000_000, 50_000, &[cam.clone(), screen]),
            vec![Some(2), Some(0)]
        );
        // Short even for one low layer: the first video still gets its lowest layer.
        assert_eq!(
            allocate(100_000, 50_000, &[cam.clone(), cam]),
            vec![Some(0), None]
        );
    }

    #[test]
    fn the_next_step_is_one_track_up_the_cheapest() {
        let cam = |want_height, current| VideoDemand {
            screen: false,
            layers: layers(),
            want_height,
            current,
        };
        let demands = [cam(720, Some(0)), cam(360, Some(0)), cam(180, Some(0))];
        let bests: Vec<_> = demands
            .iter()
            .map(|d| choose_layer(&d.layers, d.want_height, u64::MAX, None))
            .collect();
        assert_eq!(bests, vec![Some(2), Some(1), Some(0)]);
        // 900 kbit/s for 50 kbit/s of audio: every camera its low layer, none more.
        let choices = allocate(900_000, 50_000, &demands);
        assert_eq!(choices, vec![Some(0); 3]);
        // One camera's 360-pixel layer with its margin (625 kbit/s) in place of its low one
        // (150): not both cameras' (which would need 950 kbit/s more).
        let step = next_step(50_000, &demands, &choices, &bests).expect("a step up");
        assert_eq!(step, 50_000 + 3 * 150_000 + 625_000 - 150_000);
        // That budget raises exactly one camera.
        let raised = allocate(step, 50_000, &demands);
        assert_eq!(raised, vec![Some(1), Some(0), Some(0)]);
        // From there the cheapest step is the second camera's 360-pixel layer, not the first
        // camera's 720-pixel one.
        let step2 = next_step(50_000, &demands, &raised, &bests).expect("a step up");
        assert_eq!(step2, 50_000 + 500_000 + 2 * 150_000 + 625_000 - 150_000);
        assert_eq!(
            allocate(step2, 50_000, &demands),
            vec![Some(1), Some(1), Some(0)]
        );
        // A paused camera's step is its low layer; at their best, nothing is left to probe.
        assert_eq!(
            next_step(50_000, &demands[..1], &[None], &bests[..1]),
            Some(50_000 + 187_500)
        );
        assert_eq!(
            next_step(50_000, &demands, &bests, &bests),
            None,
            "every tile at the layer its size asks for"
        );
    }

    #[test]
    fn a_short_budget_gives_every_camera_a_smaller_layer_before_any_a_large_one() {
        let cam = |current| VideoDemand {
            screen: false,
            layers: layers(),
            want_height: 720,
            current,
        };
        // Nine large tiles, 5 Mbit/s for video: not nine 1.5 Mbit/s layers, and not three of
        // them with six tiles paused, but every tile the 500 kbit/s layer.
        let nine = vec![cam(None); 9];
        assert_eq!(allocate(5_050_000, 50_000, &nine), vec![Some(1); 9]);
        // With 2.5 Mbit/s more, two of them (in order) go up to the top layer.
        assert_eq!(
            allocate(7_550_000, 50_000, &nine),
            [vec![Some(2); 2], vec![Some(1); 7]].concat()
        );
        // 1 Mbit/s: six low layers fit, the rest are paused.
        assert_eq!(
            allocate(1_000_000, 50_000, &nine),
            [vec![Some(0); 6], vec![None; 3]].concat()
        );
        // Already on the middle layer, it stays there without the headroom needed to go up.
        assert_eq!(allocate(550_000, 50_000, &[cam(Some(1))]), vec![Some(1)]);
        assert_eq!(allocate(550_000, 50_000, &[cam(None)]), vec![Some(0)]);
        // A small tile never gets more than its size needs, however much bandwidth there is.
        let small = VideoDemand {
            want_height: 180,
            ..cam(None)
        };
        assert_eq!(allocate(100_000_000, 50_000, &[small]), vec![Some(0)]);
    }
}

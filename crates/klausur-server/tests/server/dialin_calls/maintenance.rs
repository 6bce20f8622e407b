//! A telephone caller in a meeting when the server is taken out of service gently (a drain,
//! docs/operations.md "Stopping gently"): the caller hears the maintenance notice, in the
//! gateway's own voice prompt, once. baresip is the caller and records what it hears; the
//! notice is found in the recording by the shape of its loudness over time (the speech of the
//! built-in prompt, which G.711 and baresip's jitter buffer leave recognisable), and not found
//! in what the caller heard before (the voice menu's other prompts). The server side of the
//! drain (SIGTERM, the drain time, the stop) is tested with the real binary in `drain.rs`; here
//! the announcement is made as the drain makes it, on the server's meeting registry.

use std::time::{Duration, Instant};

use klausur_proto::SecurityProfile;
use klausur_sip::core::prompts::{Language, Prompt, PromptSet};

use super::{baresip_calls, dial, meeting_with_max};

/// Samples per envelope window: 10 ms at 8 kHz.
const WINDOW: usize = 80;

/// The loudness of `samples` over time: the RMS of every 10 ms window.
fn envelope(samples: &[i16]) -> Vec<f64> {
    samples
        .chunks_exact(WINDOW)
        .map(|w| (w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / WINDOW as f64).sqrt())
        .collect()
}

/// Pearson correlation of two equally long series (0 when either is flat).
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma).powi(2);
        bb += (y - mb).powi(2);
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// How well `clip` is found anywhere in `heard`: the best correlation of the clip's envelope
/// with a stretch of the recording's envelope as long as it (0 when the recording is shorter),
/// and the sample where that stretch starts.
fn find(heard: &[i16], clip: &[i16]) -> (f64, usize) {
    let (h, c) = (envelope(heard), envelope(clip));
    if c.is_empty() || h.len() < c.len() {
        return (0.0, 0);
    }
    (0..=h.len() - c.len())
        .map(|at| (correlation(&h[at..at + c.len()], &c), at * WINDOW))
        .fold((0.0, 0), |best, m| if m.0 > best.0 { m } else { best })
}

fn best_match(heard: &[i16], clip: &[i16]) -> f64 {
    find(heard, clip).0
}

#[test]
fn the_matcher_finds_a_clip_and_tells_prompts_apart() {
    let set = PromptSet::builtin(Language::De).expect("prompts");
    let (notice, joined) = (set.clip(Prompt::Maintenance), set.clip(Prompt::Joined));
    // The notice inside silence and another prompt, shifted by half a window and a little
    // quieter, as a recording would have it.
    let mut heard: Vec<i16> = vec![0; 8000 + WINDOW / 2];
    heard.extend_from_slice(joined.samples());
    heard.extend(notice.samples().iter().map(|&x| x / 2));
    heard.extend(std::iter::repeat_n(0, 4000));
    assert!(best_match(&heard, notice.samples()) > 0.95);
    // Other prompts are not taken for it.
    let without: Vec<i16> = heard[..8000 + WINDOW / 2 + joined.samples().len()].to_vec();
    for other in [
        Prompt::Joined,
        Prompt::Welcome,
        Prompt::EnterPin,
        Prompt::Removed,
    ] {
        let mut h = without.clone();
        h.extend_from_slice(set.clip(other).samples());
        let m = best_match(&h, notice.samples());
        eprintln!("{other:?} against the notice: {m:.3}");
        assert!(m < 0.6, "{other:?} matched the notice at {m:.2}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hears_the_maintenance_notice_once() {
    let d = dial().await;
    let (_, number, mut max, pins) = meeting_with_max(
        &d,
        "dialmeetdrain001",
        SecurityProfile::Internal,
        &["Erika Musterfrau"],
    )
    .await;
    let phone = baresip_calls(&d, "erika", 1000.0, format!("{number}#{}#", pins[0])).await;
    max.caller_in_group().await;
    // The prompt that says the caller is in (15 s) first; the meeting is silent after it.
    max.run_for(Duration::from_secs(17)).await;
    let set = PromptSet::builtin(Language::De).expect("prompts");
    let notice = set.clip(Prompt::Maintenance);

    let mark = phone.recorded().len();
    d.srv
        .state
        .registry
        .announce_maintenance(Instant::now() + Duration::from_secs(600))
        .await;
    // A second announcement (a meeting told again, a caller who rejoins) is not played again.
    max.run_for(notice.duration() / 2).await;
    d.srv
        .state
        .registry
        .announce_maintenance(Instant::now() + Duration::from_secs(600))
        .await;
    max.run_for(notice.duration() * 2 + Duration::from_secs(2))
        .await;
    let heard = tokio::task::spawn_blocking(move || {
        phone.hangup();
        let heard = phone.heard();
        (heard, phone)
    })
    .await
    .expect("baresip");
    let (heard, phone) = heard;
    assert!(
        mark > 8000 * 20 && heard.len() > mark + notice.samples().len(),
        "baresip recorded {} samples, {mark} before the announcement: {}",
        heard.len(),
        phone.log()
    );
    let (before, after) = heard.split_at(mark);
    let (found, at) = find(after, notice.samples());
    let earlier = best_match(before, notice.samples());
    assert!(
        found > 0.85,
        "the caller heard the maintenance notice (match {found:.2}; before the announcement \
         {earlier:.2})"
    );
    assert!(
        earlier < 0.6,
        "nothing like the notice before the announcement (match {earlier:.2})"
    );
    assert!(
        at < 8000 * 2,
        "the notice came {} ms after the announcement",
        at / 8
    );
    // Once: in what the caller heard after it (at least as long as the notice), nothing like it.
    let rest = &after[at + notice.samples().len()..];
    assert!(
        rest.len() >= notice.samples().len(),
        "{} samples after the notice",
        rest.len()
    );
    let again = best_match(rest, notice.samples());
    eprintln!(
        "maintenance notice: match {found:.3} at {} ms after the announcement; before it \
         {earlier:.3}, after it {again:.3}",
        at / 8
    );
    assert!(
        again < 0.6,
        "the notice was played again (match {again:.2})"
    );
}

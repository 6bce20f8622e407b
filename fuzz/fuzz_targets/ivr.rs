//! The voice menu driven by arbitrary sequences of inputs and time steps: it never panics, never
//! asks the server more than three times, hangs up at most once and says nothing after that.
#![no_main]

use std::time::{Duration, Instant};

use klausur_sip::core::ivr::{CheckResult, Digit, Input, Ivr, MeetingEvent, Output};
use libfuzzer_sys::fuzz_target;

#[rustfmt::skip]
const DIGITS: [Digit; 16] = [
    Digit::D0, Digit::D1, Digit::D2, Digit::D3, Digit::D4, Digit::D5, Digit::D6, Digit::D7,
    Digit::D8, Digit::D9, Digit::Star, Digit::Hash, Digit::A, Digit::B, Digit::C, Digit::D,
];

fn check(b: u8) -> CheckResult {
    match b % 7 {
        0 => CheckResult::Admit {
            invitee: "E".into(),
            meeting_title: "T".into(),
        },
        1 => CheckResult::Wrong,
        2 => CheckResult::NotAllowed,
        3 => CheckResult::NotYet,
        4 => CheckResult::Ended,
        5 => CheckResult::Throttled,
        _ => CheckResult::Unreachable,
    }
}

fn meeting(b: u8) -> MeetingEvent {
    match b % 10 {
        0 => MeetingEvent::Lobby,
        1 => MeetingEvent::Joined,
        2 => MeetingEvent::MutedByModerator,
        3 => MeetingEvent::ModeratorMuteLifted,
        4 => MeetingEvent::HandLoweredByModerator,
        5 => MeetingEvent::Removed,
        6 => MeetingEvent::Denied,
        7 => MeetingEvent::Ended,
        8 => MeetingEvent::Interrupted,
        _ => MeetingEvent::ConnectionLost,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut ivr = Ivr::new(now);
    let (mut checks, mut hangups) = (0u32, 0u32);
    for pair in data.chunks(2) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        match op % 6 {
            0 => ivr.handle_input(now, Input::Digit(DIGITS[usize::from(arg % 16)])),
            1 => ivr.handle_input(now, Input::PromptsDone),
            2 => ivr.handle_input(now, Input::Check(check(arg))),
            3 => ivr.handle_input(now, Input::Meeting(meeting(arg))),
            4 => {
                now += Duration::from_millis(u64::from(arg) * 250);
                ivr.handle_timeout(now);
            }
            _ => {
                if let Some(t) = ivr.poll_timeout() {
                    now = now.max(t);
                    ivr.handle_timeout(now);
                }
            }
        }
        while let Some(out) = ivr.poll_output() {
            assert_eq!(hangups, 0, "output after the hangup: {out:?}");
            match out {
                Output::Check { .. } => checks += 1,
                Output::Hangup(_) => hangups += 1,
                _ => {}
            }
        }
        assert!(checks <= 3, "more than three checks");
    }
});

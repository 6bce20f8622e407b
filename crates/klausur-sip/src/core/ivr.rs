//! The voice menu of one call: meeting number and PIN entry, the server's check, the lobby,
//! and the caller's keys in the meeting. Sans-IO: it never touches a socket, a timer or the
//! clock; it is fed inputs with the current time and hands back outputs.
//!
//! # Contract
//!
//! [`Ivr`] follows the same loop as str0m's `Rtc`:
//!
//! 1. Feed it what happened with [`Ivr::handle_input`]`(now, input)`: a DTMF [`Digit`], "the
//!    prompts queued so far have finished playing" ([`Input::PromptsDone`], from
//!    [`PromptPlayer::poll_finished`](super::prompts::PromptPlayer::poll_finished)), the
//!    server's answer to a check ([`CheckResult`]) or news from the meeting ([`MeetingEvent`]).
//! 2. Drain [`Ivr::poll_output`] until it returns `None` and carry each [`Output`] out: queue a
//!    prompt, flush the prompt queue, ask the server, join the meeting, set the own mute or hand,
//!    hang up.
//! 3. Ask [`Ivr::poll_timeout`] when it next needs the time, and call [`Ivr::handle_timeout`]
//!    `(now)` once that instant has come (earlier is harmless). `None` means "only inputs can
//!    change anything".
//!
//! The call starts in [`Ivr::new`], which already queues the greeting; once [`Output::Hangup`]
//! has been returned the menu is over and ignores everything. Inputs that do not fit the
//! current state (a check answer nobody waits for any more, a meeting event before the caller
//! was admitted, a digit during a closing prompt) are ignored, so a confused driver or a caller
//! hammering keys cannot drive it into a wrong state, and nothing here panics.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use klausur_sip::core::ivr::{Digit, Input, Ivr, Output};
//!
//! let mut now = Instant::now();
//! let mut ivr = Ivr::new(now);
//! let mut keys = "12345678#87654321#".chars();
//! loop {
//!     while let Some(output) = ivr.poll_output() {
//!         match output {
//!             Output::Play(_prompt) => { /* PromptPlayer::play */ }
//!             Output::StopPrompts => { /* PromptPlayer::flush */ }
//!             Output::Check { meeting_number, pin } => {
//!                 // POST /api/dialin/calls with pin.expose(); here: stop the example.
//!                 assert_eq!(meeting_number, "12345678");
//!                 assert_eq!(pin.expose(), "87654321");
//!                 return;
//!             }
//!             _ => {}
//!         }
//!     }
//!     // The driver would wait for a digit, the player's "finished", or the timeout.
//!     now += Duration::from_millis(300);
//!     match keys.next().and_then(Digit::from_char) {
//!         Some(digit) => ivr.handle_input(now, Input::Digit(digit)),
//!         None => ivr.handle_timeout(now),
//!     }
//! }
//! ```
//!
//! # The menu
//!
//! The call opens with [`Prompt::Welcome`] and [`Prompt::EnterMeetingNumber`]. The caller types
//! the meeting number, then (after [`Prompt::EnterPin`]) the personal PIN, each ended by `#`.
//!
//! - **Barge-in.** A key typed while menu prompts play stops them ([`Output::StopPrompts`]) and
//!   counts as input. Keys `A`-`D` are ignored altogether.
//! - **`*`** throws away what was typed for the current entry and plays its prompt again.
//! - **`#`** ends the entry. An empty entry counts as "nothing typed".
//! - **At most [`MAX_DIGITS`] (16) digits** per entry (the server's limit); further digits are
//!   ignored, so the entry that `#` ends is the first 16 digits.
//! - **Inter-digit timeout.** [`INTER_DIGIT_TIMEOUT`] (5 s) after the last digit of a non-empty
//!   entry, the entry ends as if `#` had been typed (callers forget `#`).
//! - **Nothing typed.** [`FIRST_DIGIT_TIMEOUT`] (10 s) after the entry's prompt finished without
//!   a digit, the prompt is played again, at most [`NO_INPUT_REPROMPTS`] (2) times in a row;
//!   the next silence ends the call with [`Prompt::NoInput`]. A digit resets the count.
//! - **Overall deadline.** [`MENU_DEADLINE`] (2 minutes) after the call started, a caller still
//!   in the menu hears [`Prompt::TimeUp`] and the call ends. The deadline does not cut a check
//!   short; if it has passed when a check is answered `wrong`, the call ends with
//!   [`Prompt::TimeUp`] instead of another try.
//!
//! # The check
//!
//! After the PIN, [`Output::Check`] carries the meeting number and the [`Pin`] (zeroized on
//! drop; its `Debug` is redacted, so PINs never reach a log). Keys are ignored until the answer:
//!
//! - `admit` → [`Output::Join`]; the caller waits (silently) for the meeting.
//! - `wrong` → counts a try: [`Prompt::WrongEntry`] (which never says whether the number or the
//!   PIN was wrong) and the menu starts again at the meeting number; the
//!   [`MAX_TRIES`]th (3rd) wrong answer plays [`Prompt::TooManyTries`] and hangs up, so no
//!   fourth check is ever sent.
//! - `not_allowed`, `not_yet`, `ended`, `throttled` → their prompt, then hang up, at once
//!   (whatever try it was).
//! - `unreachable` (or no answer within [`CHECK_TIMEOUT`], 60 s; the server delays answers by at
//!   most 30 s) → [`Prompt::TechnicalError`], then hang up.
//!
//! # The meeting
//!
//! After [`Output::Join`] the driver reports [`MeetingEvent::Lobby`] or [`MeetingEvent::Joined`]
//! within [`JOIN_TIMEOUT`] (30 s), else the call ends with [`Prompt::TechnicalError`].
//!
//! - **Lobby.** [`Prompt::WaitForModerator`] plays, and again [`LOBBY_REPEAT`] (30 s) after each
//!   time it finished, until the caller is admitted or declined. Keys are ignored.
//! - **Joined.** [`Prompt::Joined`] says that the phone leg is not end-to-end encrypted and
//!   everyone sees it, and explains the keys. The caller starts unmuted, hand down.
//! - **Keys.** `*` then `6` within [`STAR_TIMEOUT`] (3 s) toggles the own mute
//!   ([`Output::SetMuted`], confirmed by [`Prompt::Muted`] / [`Prompt::Unmuted`]); `*` then `9`
//!   raises or lowers the hand ([`Output::RaiseHand`], [`Prompt::HandRaised`] /
//!   [`Prompt::HandLowered`]). Any other key after `*`, or the timeout, cancels the `*`. Prompts
//!   in the meeting are not interrupted by keys; confirmations queue behind them.
//! - **Moderator mute.** [`MeetingEvent::MutedByModerator`] mutes the caller's own microphone too
//!   ([`Output::SetMuted`]`(true)` if it was on) and plays [`Prompt::MutedByModerator`]; while it
//!   lasts, `*6` does not unmute and plays [`Prompt::CannotUnmute`]. When a moderator lifts it
//!   ([`MeetingEvent::ModeratorMuteLifted`], [`Prompt::ModeratorMuteLifted`]) the caller stays
//!   muted and may unmute with `*6`, as in the browser. A moderator mute reported before the
//!   caller is in the meeting (a reconnect) is announced right after [`Prompt::Joined`].
//! - **Hand lowered by a moderator** → [`Prompt::HandLoweredByModerator`]; the next `*9` raises it.
//! - **Maintenance.** [`MeetingEvent::Maintenance`] (the server is being taken out of service and
//!   lets the meeting finish) in the lobby or the meeting plays [`Prompt::Maintenance`] (a long
//!   meeting may be interrupted; call again then), once per call.
//! - **Interrupted.** [`MeetingEvent::Interrupted`] (the connection to the meeting broke, nobody
//!   ended the call) in the lobby or the meeting plays [`Prompt::Reconnecting`] and, after
//!   [`REJOIN_FIRST_DELAY`], asks for [`Output::Rejoin`]: the same ticket, a new meeting client.
//!   An attempt that fails (another `Interrupted`, or no lobby or join within [`JOIN_TIMEOUT`])
//!   is followed by the next after twice the wait, up to [`MAX_REJOINS`] attempts (about 15 s);
//!   then the call ends with [`Prompt::ConnectionLost`]. Back in the meeting, the caller hears
//!   [`Prompt::Reconnected`] (not the whole welcome again) and gets their own mute and raised
//!   hand back ([`Output::SetMuted`], [`Output::RaiseHand`]); keys wait meanwhile. The next
//!   interruption has all attempts again.
//!
//! # Hanging up
//!
//! Every end of the call plays a prompt that says why ([`HangupReason::prompt`]; a prompt still
//! playing is flushed first), and [`Output::Hangup`] follows only after [`Input::PromptsDone`],
//! or after [`FINAL_PROMPT_LIMIT`] (30 s) if the player never reports it. The meeting ends the
//! call by [`MeetingEvent::Removed`], [`MeetingEvent::Denied`], [`MeetingEvent::Ended`] and
//! [`MeetingEvent::ConnectionLost`] (or interruptions that outlast [`MAX_REJOINS`] attempts),
//! accepted from [`Output::Join`] on. When the caller hangs up,
//! the driver simply drops the [`Ivr`].

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::prompts::Prompt;

/// Most digits of one entry (meeting number or PIN).
pub const MAX_DIGITS: usize = 16;
/// Silence after an entry's prompt before it is repeated.
pub const FIRST_DIGIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after the last digit of an entry that ends it (as `#` would).
pub const INTER_DIGIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an entry's prompt is repeated when nothing is typed before the call ends.
pub const NO_INPUT_REPROMPTS: u32 = 2;
/// Time from the start of the call after which a caller still in the menu is hung up on.
pub const MENU_DEADLINE: Duration = Duration::from_secs(120);
/// Entries the server may answer `wrong` per call.
pub const MAX_TRIES: u32 = 3;
/// Longest wait for the server's answer to a check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait after [`Output::Join`] for the meeting to report the lobby or the join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence in the lobby between two waiting prompts.
pub const LOBBY_REPEAT: Duration = Duration::from_secs(30);
/// Time after `*` in the meeting within which `6` or `9` must follow.
pub const STAR_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the closing prompt to finish before hanging up anyway.
pub const FINAL_PROMPT_LIMIT: Duration = Duration::from_secs(30);
/// Attempts to get back into the meeting after one interruption.
pub const MAX_REJOINS: u32 = 5;
/// Wait before each attempt: 0.5 s, then doubling (0.5, 1, 2, 4, 8 s: about 15 s in all).
pub const REJOIN_FIRST_DELAY: Duration = Duration::from_millis(500);

/// A DTMF key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digit {
    D0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    /// `*`
    Star,
    /// `#`
    Hash,
    A,
    B,
    C,
    D,
}

impl Digit {
    /// The key for `'0'`-`'9'`, `'*'`, `'#'`, `'A'`-`'D'` (also lower case); `None` otherwise.
    pub fn from_char(c: char) -> Option<Digit> {
        Some(match c {
            '0' => Digit::D0,
            '1' => Digit::D1,
            '2' => Digit::D2,
            '3' => Digit::D3,
            '4' => Digit::D4,
            '5' => Digit::D5,
            '6' => Digit::D6,
            '7' => Digit::D7,
            '8' => Digit::D8,
            '9' => Digit::D9,
            '*' => Digit::Star,
            '#' => Digit::Hash,
            'A' | 'a' => Digit::A,
            'B' | 'b' => Digit::B,
            'C' | 'c' => Digit::C,
            'D' | 'd' => Digit::D,
            _ => return None,
        })
    }

    /// The key as a character (`'0'`-`'9'`, `'*'`, `'#'`, `'A'`-`'D'`).
    pub fn to_char(self) -> char {
        match self {
            Digit::D0 => '0',
            Digit::D1 => '1',
            Digit::D2 => '2',
            Digit::D3 => '3',
            Digit::D4 => '4',
            Digit::D5 => '5',
            Digit::D6 => '6',
            Digit::D7 => '7',
            Digit::D8 => '8',
            Digit::D9 => '9',
            Digit::Star => '*',
            Digit::Hash => '#',
            Digit::A => 'A',
            Digit::B => 'B',
            Digit::C => 'C',
            Digit::D => 'D',
        }
    }

    fn is_decimal(self) -> bool {
        self.to_char().is_ascii_digit()
    }
}

/// A caller's PIN: zeroized when dropped; its `Debug` never shows the digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// A PIN from its digits.
    pub fn new(digits: impl Into<String>) -> Pin {
        Pin(Zeroizing::new(digits.into()))
    }

    /// The digits, for the request to the server (and nothing else).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// The server's answer to a check (`POST /api/dialin/calls`), or that there was none.
#[derive(Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Admitted as this invitee to this meeting.
    Admit {
        invitee: String,
        meeting_title: String,
    },
    /// Unknown number, wrong PIN, or an invitation no longer valid (the server does not say).
    Wrong,
    /// The meeting's profile refuses dial-in.
    NotAllowed,
    /// Too early.
    NotYet,
    /// The meeting has ended.
    Ended,
    /// Too many failures for this number or source.
    Throttled,
    /// No usable answer (network, HTTP error, malformed answer).
    Unreachable,
}

impl fmt::Debug for CheckResult {
    // The invitee's name and the meeting's title are personal data: not in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckResult::Admit { .. } => "Admit { .. }",
            CheckResult::Wrong => "Wrong",
            CheckResult::NotAllowed => "NotAllowed",
            CheckResult::NotYet => "NotYet",
            CheckResult::Ended => "Ended",
            CheckResult::Throttled => "Throttled",
            CheckResult::Unreachable => "Unreachable",
        })
    }
}

/// News from the meeting the caller was admitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeetingEvent {
    /// The caller waits in the lobby.
    Lobby,
    /// The caller is in the meeting.
    Joined,
    /// A moderator muted the caller.
    MutedByModerator,
    /// A moderator lifted that mute.
    ModeratorMuteLifted,
    /// A moderator lowered the caller's hand.
    HandLoweredByModerator,
    /// A moderator removed the caller.
    Removed,
    /// A moderator declined the caller in the lobby.
    Denied,
    /// The meeting ended.
    Ended,
    /// The connection to the meeting broke without anyone ending the call (the network between
    /// gateway and server, a server restart): the menu tries to get back in
    /// ([`Output::Rejoin`]).
    Interrupted,
    /// The gateway lost the meeting for good (the server refused the caller's ticket).
    ConnectionLost,
    /// The server that runs the meeting is being taken out of service: it lets the meeting
    /// finish, and interrupts it if it goes on too long.
    Maintenance,
}

/// What happened on the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The caller typed a key.
    Digit(Digit),
    /// Everything queued by [`Output::Play`] so far has been played.
    PromptsDone,
    /// The server answered the last [`Output::Check`].
    Check(CheckResult),
    /// News from the meeting.
    Meeting(MeetingEvent),
}

/// Why the menu hangs up (each has its own prompt, [`HangupReason::prompt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HangupReason {
    /// The third entry was wrong.
    TooManyTries,
    /// The server throttles this number or source.
    Throttled,
    /// The meeting's profile refuses dial-in.
    NotAllowed,
    /// The meeting has not started yet.
    NotYet,
    /// The meeting has ended.
    MeetingEnded,
    /// Nothing was typed, after re-prompting.
    NoInput,
    /// The menu's overall deadline passed.
    TimeUp,
    /// A moderator removed the caller.
    Removed,
    /// A moderator declined the caller.
    Denied,
    /// The gateway lost the meeting.
    ConnectionLost,
    /// The server could not be asked, or the meeting could not be joined.
    TechnicalError,
}

impl HangupReason {
    /// The prompt played before hanging up for this reason.
    pub fn prompt(self) -> Prompt {
        match self {
            HangupReason::TooManyTries => Prompt::TooManyTries,
            HangupReason::Throttled => Prompt::Throttled,
            HangupReason::NotAllowed => Prompt::NotAllowed,
            HangupReason::NotYet => Prompt::NotYet,
            HangupReason::MeetingEnded => Prompt::MeetingEnded,
            HangupReason::NoInput => Prompt::NoInput,
            HangupReason::TimeUp => Prompt::TimeUp,
            HangupReason::Removed => Prompt::Removed,
            HangupReason::Denied => Prompt::Denied,
            HangupReason::ConnectionLost => Prompt::ConnectionLost,
            HangupReason::TechnicalError => Prompt::TechnicalError,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue this prompt after those already queued.
    Play(Prompt),
    /// Drop every queued prompt, also the one playing (barge-in, or a more urgent prompt).
    StopPrompts,
    /// Ask the server whether this meeting number and PIN admit the caller, then report the
    /// answer as [`Input::Check`].
    Check { meeting_number: String, pin: Pin },
    /// Join the meeting with the ticket of the last check; report [`Input::Meeting`] events.
    Join,
    /// The connection to the meeting broke: drop what is left of it and join again with the
    /// same ticket (a new meeting client), as for [`Output::Join`].
    Rejoin,
    /// Mute (`true`) or unmute the caller's audio towards the meeting and announce it.
    SetMuted(bool),
    /// Raise (`true`) or lower the caller's hand.
    RaiseHand(bool),
    /// End the call (the prompt saying why has been played).
    Hangup(HangupReason),
}

/// Which entry the menu collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    MeetingNumber,
    Pin,
}

impl Step {
    fn prompt(self) -> Prompt {
        match self {
            Step::MeetingNumber => Prompt::EnterMeetingNumber,
            Step::Pin => Prompt::EnterPin,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting an entry; `timer` is the first-digit or inter-digit timeout.
    Menu { step: Step, timer: Option<Instant> },
    /// Waiting for the server's answer.
    Checking { deadline: Instant },
    /// Waiting for the meeting to report lobby or join.
    Joining { deadline: Instant },
    /// In the lobby; the waiting prompt plays again at `repeat_at`.
    Lobby { repeat_at: Option<Instant> },
    /// In the meeting; `star` is until when a `*` waits for its second key.
    InMeeting { star: Option<Instant> },
    /// The connection broke; the next attempt to get back in is at `at`.
    Reconnecting { at: Instant },
    /// The closing prompt plays; then hang up.
    Ending {
        reason: HangupReason,
        deadline: Instant,
    },
    /// Hung up.
    Done,
}

/// The digits typed so far (zeroized when dropped or cleared; `Debug` shows only the count).
#[derive(Default)]
struct Entry(Zeroizing<String>);

impl Entry {
    fn take(&mut self) -> Zeroizing<String> {
        std::mem::take(&mut self.0)
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry({} digits)", self.0.len())
    }
}

/// The voice menu of one call (see the module docs).
pub struct Ivr {
    phase: Phase,
    outputs: VecDeque<Output>,
    /// Prompts were queued and their end not yet reported (nor flushed).
    prompts_pending: bool,
    menu_deadline: Instant,
    /// Checks answered `wrong`.
    tries: u32,
    /// Silences in a row in the menu.
    silences: u32,
    entry: Entry,
    /// The meeting number, while the PIN is entered.
    meeting_number: String,
    /// Invitee and meeting title from the `admit` answer.
    admitted: Option<(String, String)>,
    self_muted: bool,
    moderator_muted: bool,
    hand_raised: bool,
    /// Attempts made to get back in since the connection broke; `None` while it holds.
    rejoins: Option<u32>,
    /// The caller has been in the meeting (heard [`Prompt::Joined`]).
    ever_joined: bool,
    /// The caller heard [`Prompt::Maintenance`] (once per call).
    maintenance_told: bool,
}

impl fmt::Debug for Ivr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ivr")
            .field("phase", &self.phase)
            .field("prompts_pending", &self.prompts_pending)
            .field("tries", &self.tries)
            .field("silences", &self.silences)
            .field("entry", &self.entry)
            .field("admitted", &self.admitted.is_some())
            .field("self_muted", &self.self_muted)
            .field("moderator_muted", &self.moderator_muted)
            .field("hand_raised", &self.hand_raised)
            .finish_non_exhaustive()
    }
}

impl Ivr {
    /// A new call, answered at `now`: queues the greeting and the meeting number prompt.
    pub fn new(now: Instant) -> Ivr {
        let mut ivr = Ivr {
            phase: Phase::Menu {
                step: Step::MeetingNumber,
                timer: None,
            },
            outputs: VecDeque::new(),
            prompts_pending: false,
            menu_deadline: now + MENU_DEADLINE,
            tries: 0,
            silences: 0,
            entry: Entry::default(),
            meeting_number: String::new(),
            admitted: None,
            self_muted: false,
            moderator_muted: false,
            hand_raised: false,
            rejoins: None,
            ever_joined: false,
            maintenance_told: false,
        };
        ivr.play(Prompt::Welcome);
        ivr.play(Prompt::EnterMeetingNumber);
        ivr
    }

    /// Feeds what happened at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Digit(digit) => self.on_digit(now, digit),
            Input::PromptsDone => self.on_prompts_done(now),
            Input::Check(result) => self.on_check(now, result),
            Input::Meeting(event) => self.on_meeting(now, event),
        }
    }

    /// Lets time pass up to `now`: fires every timeout due by then.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Each firing either ends a wait or moves to a state whose timeouts lie in the future;
        // the bound only guards against a mistake turning into a busy loop.
        for _ in 0..8 {
            match self.poll_timeout() {
                Some(at) if at <= now => self.fire(now),
                _ => return,
            }
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Ivr::handle_timeout`] should next be called; `None` if only inputs matter now.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Menu { timer, .. } => Some(match timer {
                Some(t) => t.min(self.menu_deadline),
                None => self.menu_deadline,
            }),
            Phase::Checking { deadline }
            | Phase::Joining { deadline }
            | Phase::Ending { deadline, .. } => Some(deadline),
            Phase::Lobby { repeat_at } => repeat_at,
            Phase::InMeeting { star } => star,
            Phase::Reconnecting { at } => Some(at),
            Phase::Done => None,
        }
    }

    /// Whether the call has been hung up (no further outputs will come).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The invitee's name and the meeting's title once the server admitted the caller.
    pub fn admitted(&self) -> Option<(&str, &str)> {
        self.admitted
            .as_ref()
            .map(|(invitee, title)| (invitee.as_str(), title.as_str()))
    }

    /// Checks answered `wrong` so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Whether the caller's own microphone is muted.
    pub fn is_muted(&self) -> bool {
        self.self_muted
    }

    /// Whether a moderator has muted the caller.
    pub fn is_muted_by_moderator(&self) -> bool {
        self.moderator_muted
    }

    /// Whether the caller's hand is raised.
    pub fn is_hand_raised(&self) -> bool {
        self.hand_raised
    }

    fn play(&mut self, prompt: Prompt) {
        self.outputs.push_back(Output::Play(prompt));
        self.prompts_pending = true;
    }

    fn stop_prompts(&mut self) {
        if self.prompts_pending {
            self.outputs.push_back(Output::StopPrompts);
            self.prompts_pending = false;
        }
    }

    /// Plays the reason's prompt (after flushing what plays) and hangs up once it finished.
    fn end(&mut self, now: Instant, reason: HangupReason) {
        self.entry = Entry::default();
        self.meeting_number.clear();
        self.stop_prompts();
        self.play(reason.prompt());
        self.phase = Phase::Ending {
            reason,
            deadline: now + FINAL_PROMPT_LIMIT,
        };
    }

    fn hang_up(&mut self, reason: HangupReason) {
        self.outputs.push_back(Output::Hangup(reason));
        self.phase = Phase::Done;
    }

    /// Starts collecting `step` after playing `prompts`.
    fn start_entry(&mut self, step: Step, prompts: &[Prompt]) {
        self.entry = Entry::default();
        self.phase = Phase::Menu { step, timer: None };
        for &prompt in prompts {
            self.play(prompt);
        }
    }

    fn set_menu_timer(&mut self, at: Option<Instant>) {
        if let Phase::Menu { timer, .. } = &mut self.phase {
            *timer = at;
        }
    }

    fn on_digit(&mut self, now: Instant, digit: Digit) {
        match self.phase {
            Phase::Menu { step, .. } => self.menu_digit(now, step, digit),
            Phase::InMeeting { star } => self.meeting_digit(now, star, digit),
            _ => {}
        }
    }

    fn menu_digit(&mut self, now: Instant, step: Step, digit: Digit) {
        if matches!(digit, Digit::A | Digit::B | Digit::C | Digit::D) {
            return;
        }
        self.stop_prompts();
        match digit {
            Digit::Star => self.start_entry(step, &[step.prompt()]),
            Digit::Hash => self.finish_entry(now, step),
            _ if digit.is_decimal() => {
                self.silences = 0;
                if self.entry.0.len() < MAX_DIGITS {
                    self.entry.0.push(digit.to_char());
                    self.set_menu_timer(Some(now + INTER_DIGIT_TIMEOUT));
                }
            }
            _ => {}
        }
    }

    /// The entry of `step` is complete (`#` or the inter-digit timeout).
    fn finish_entry(&mut self, now: Instant, step: Step) {
        if self.entry.0.is_empty() {
            self.no_input(now, step);
            return;
        }
        match step {
            Step::MeetingNumber => {
                self.meeting_number = self.entry.take().to_string();
                self.start_entry(Step::Pin, &[Prompt::EnterPin]);
            }
            Step::Pin => {
                let pin = Pin(self.entry.take());
                let meeting_number = std::mem::take(&mut self.meeting_number);
                self.outputs.push_back(Output::Check {
                    meeting_number,
                    pin,
                });
                self.phase = Phase::Checking {
                    deadline: now + CHECK_TIMEOUT,
                };
            }
        }
    }

    fn no_input(&mut self, now: Instant, step: Step) {
        self.silences += 1;
        if self.silences > NO_INPUT_REPROMPTS {
            self.end(now, HangupReason::NoInput);
        } else {
            self.start_entry(step, &[step.prompt()]);
        }
    }

    fn meeting_digit(&mut self, now: Instant, star: Option<Instant>, digit: Digit) {
        let armed = star.is_some_and(|until| now <= until);
        let mut next_star = None;
        match digit {
            Digit::Star => next_star = Some(now + STAR_TIMEOUT),
            Digit::D6 if armed => self.toggle_mute(),
            Digit::D9 if armed => self.toggle_hand(),
            _ => {}
        }
        if let Phase::InMeeting { star } = &mut self.phase {
            *star = next_star;
        }
    }

    fn toggle_mute(&mut self) {
        if !self.self_muted {
            self.self_muted = true;
            self.outputs.push_back(Output::SetMuted(true));
            self.play(Prompt::Muted);
        } else if self.moderator_muted {
            self.play(Prompt::CannotUnmute);
        } else {
            self.self_muted = false;
            self.outputs.push_back(Output::SetMuted(false));
            self.play(Prompt::Unmuted);
        }
    }

    fn toggle_hand(&mut self) {
        self.hand_raised = !self.hand_raised;
        self.outputs.push_back(Output::RaiseHand(self.hand_raised));
        self.play(if self.hand_raised {
            Prompt::HandRaised
        } else {
            Prompt::HandLowered
        });
    }

    fn on_prompts_done(&mut self, now: Instant) {
        if !self.prompts_pending {
            return;
        }
        self.prompts_pending = false;
        match self.phase {
            Phase::Menu { timer: None, .. } if self.entry.0.is_empty() => {
                self.set_menu_timer(Some(now + FIRST_DIGIT_TIMEOUT));
            }
            Phase::Lobby { .. } => {
                self.phase = Phase::Lobby {
                    repeat_at: Some(now + LOBBY_REPEAT),
                };
            }
            Phase::Ending { reason, .. } => self.hang_up(reason),
            _ => {}
        }
    }

    fn on_check(&mut self, now: Instant, result: CheckResult) {
        if !matches!(self.phase, Phase::Checking { .. }) {
            return;
        }
        match result {
            CheckResult::Admit {
                invitee,
                meeting_title,
            } => {
                self.admitted = Some((invitee, meeting_title));
                self.outputs.push_back(Output::Join);
                self.phase = Phase::Joining {
                    deadline: now + JOIN_TIMEOUT,
                };
            }
            CheckResult::Wrong => {
                self.tries += 1;
                if self.tries >= MAX_TRIES {
                    self.end(now, HangupReason::TooManyTries);
                } else if now >= self.menu_deadline {
                    self.end(now, HangupReason::TimeUp);
                } else {
                    self.silences = 0;
                    self.start_entry(
                        Step::MeetingNumber,
                        &[Prompt::WrongEntry, Prompt::EnterMeetingNumber],
                    );
                }
            }
            CheckResult::NotAllowed => self.end(now, HangupReason::NotAllowed),
            CheckResult::NotYet => self.end(now, HangupReason::NotYet),
            CheckResult::Ended => self.end(now, HangupReason::MeetingEnded),
            CheckResult::Throttled => self.end(now, HangupReason::Throttled),
            CheckResult::Unreachable => self.end(now, HangupReason::TechnicalError),
        }
    }

    fn on_meeting(&mut self, now: Instant, event: MeetingEvent) {
        let in_meeting = matches!(self.phase, Phase::InMeeting { .. });
        let admitted = matches!(
            self.phase,
            Phase::Joining { .. }
                | Phase::Lobby { .. }
                | Phase::InMeeting { .. }
                | Phase::Reconnecting { .. }
        );
        if !admitted {
            return;
        }
        match event {
            MeetingEvent::Lobby => {
                if matches!(self.phase, Phase::Joining { .. }) {
                    self.phase = Phase::Lobby { repeat_at: None };
                    self.play(Prompt::WaitForModerator);
                }
            }
            MeetingEvent::Joined => {
                if matches!(self.phase, Phase::Joining { .. } | Phase::Lobby { .. }) {
                    self.stop_prompts();
                    self.phase = Phase::InMeeting { star: None };
                    let back = self.rejoins.take().is_some() && self.ever_joined;
                    self.ever_joined = true;
                    if back {
                        // Back after an interruption: the caller's own mute and hand as before.
                        self.play(Prompt::Reconnected);
                        if self.self_muted {
                            self.outputs.push_back(Output::SetMuted(true));
                        }
                        if self.hand_raised {
                            self.outputs.push_back(Output::RaiseHand(true));
                        }
                    } else {
                        self.play(Prompt::Joined);
                    }
                    // Muted by a moderator before (kept by the server across a reconnect).
                    if self.moderator_muted {
                        self.play(Prompt::MutedByModerator);
                    }
                }
            }
            MeetingEvent::MutedByModerator => {
                if !self.moderator_muted {
                    self.moderator_muted = true;
                    if !self.self_muted {
                        self.self_muted = true;
                        self.outputs.push_back(Output::SetMuted(true));
                    }
                    if in_meeting {
                        self.play(Prompt::MutedByModerator);
                    }
                }
            }
            MeetingEvent::ModeratorMuteLifted => {
                if self.moderator_muted {
                    self.moderator_muted = false;
                    if in_meeting {
                        self.play(Prompt::ModeratorMuteLifted);
                    }
                }
            }
            MeetingEvent::HandLoweredByModerator => {
                if self.hand_raised {
                    self.hand_raised = false;
                    if in_meeting {
                        self.play(Prompt::HandLoweredByModerator);
                    }
                }
            }
            MeetingEvent::Removed => self.end(now, HangupReason::Removed),
            MeetingEvent::Denied => self.end(now, HangupReason::Denied),
            MeetingEvent::Ended => self.end(now, HangupReason::MeetingEnded),
            MeetingEvent::Interrupted => {
                if !matches!(self.phase, Phase::Reconnecting { .. }) {
                    self.interrupted(now);
                }
            }
            MeetingEvent::ConnectionLost => self.end(now, HangupReason::ConnectionLost),
            MeetingEvent::Maintenance => {
                let waiting = matches!(self.phase, Phase::Lobby { .. });
                if (in_meeting || waiting) && !self.maintenance_told {
                    self.maintenance_told = true;
                    self.play(Prompt::Maintenance);
                }
            }
        }
    }

    /// The connection to the meeting broke (or an attempt to get back failed): wait, then try
    /// again, until [`MAX_REJOINS`] attempts have failed.
    fn interrupted(&mut self, now: Instant) {
        let made = self.rejoins.unwrap_or(0);
        if made >= MAX_REJOINS {
            self.rejoins = None;
            self.end(now, HangupReason::ConnectionLost);
            return;
        }
        if made == 0 {
            self.stop_prompts();
            self.play(Prompt::Reconnecting);
        }
        self.rejoins = Some(made);
        self.phase = Phase::Reconnecting {
            at: now + REJOIN_FIRST_DELAY * 2u32.saturating_pow(made),
        };
    }

    /// One due timeout.
    fn fire(&mut self, now: Instant) {
        match self.phase {
            Phase::Menu { step, timer } => {
                if now >= self.menu_deadline {
                    self.end(now, HangupReason::TimeUp);
                } else if timer.is_some_and(|t| t <= now) {
                    self.set_menu_timer(None);
                    // Silence after the prompt, or after the last digit of an entry.
                    self.finish_entry(now, step);
                }
            }
            Phase::Joining { .. } if self.rejoins.is_some() => self.interrupted(now),
            Phase::Checking { .. } | Phase::Joining { .. } => {
                self.end(now, HangupReason::TechnicalError);
            }
            Phase::Reconnecting { .. } => {
                self.rejoins = Some(self.rejoins.unwrap_or(0) + 1);
                self.outputs.push_back(Output::Rejoin);
                self.phase = Phase::Joining {
                    deadline: now + JOIN_TIMEOUT,
                };
            }
            Phase::Lobby { .. } => {
                self.phase = Phase::Lobby { repeat_at: None };
                self.play(Prompt::WaitForModerator);
            }
            Phase::InMeeting { .. } => self.phase = Phase::InMeeting { star: None },
            Phase::Ending { reason, .. } => self.hang_up(reason),
            Phase::Done => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;

    const NUMBER: &str = "12345678";
    const PIN: &str = "90909090";
    /// Time between two keys of the simulated caller.
    const KEY_GAP: Duration = Duration::from_millis(300);

    /// A call in simulated time.
    struct Call {
        ivr: Ivr,
        now: Instant,
        start: Instant,
    }

    impl Call {
        fn new() -> (Call, Vec<Output>) {
            let start = Instant::now();
            let mut call = Call {
                ivr: Ivr::new(start),
                now: start,
                start,
            };
            let out = call.drain();
            (call, out)
        }

        fn drain(&mut self) -> Vec<Output> {
            std::iter::from_fn(|| self.ivr.poll_output()).collect()
        }

        fn input(&mut self, input: Input) -> Vec<Output> {
            self.ivr.handle_input(self.now, input);
            self.drain()
        }

        fn done(&mut self) -> Vec<Output> {
            self.input(Input::PromptsDone)
        }

        fn check(&mut self, result: CheckResult) -> Vec<Output> {
            self.input(Input::Check(result))
        }

        fn meeting(&mut self, event: MeetingEvent) -> Vec<Output> {
            self.input(Input::Meeting(event))
        }

        /// Types `keys`, KEY_GAP apart (timeouts in the gaps fire), returning all outputs.
        fn keys(&mut self, keys: &str) -> Vec<Output> {
            let mut out = Vec::new();
            for (i, c) in keys.chars().enumerate() {
                if i > 0 {
                    out.extend(self.advance(KEY_GAP));
                }
                out.extend(self.input(Input::Digit(Digit::from_char(c).unwrap())));
            }
            out
        }

        /// Lets `d` pass, firing each timeout at its instant.
        fn advance(&mut self, d: Duration) -> Vec<Output> {
            let target = self.now + d;
            let mut out = Vec::new();
            while let Some(at) = self.ivr.poll_timeout().filter(|at| *at <= target) {
                self.now = self.now.max(at);
                self.ivr.handle_timeout(self.now);
                out.extend(self.drain());
            }
            self.now = target;
            out
        }

        fn elapsed(&self) -> Duration {
            self.now - self.start
        }

        /// From the start to the check: greeting done, number and PIN typed.
        fn to_check(number: &str, pin: &str) -> Call {
            let (mut call, _) = Call::new();
            call.done();
            assert_eq!(call.keys(&format!("{number}#")), [play(Prompt::EnterPin)]);
            call.done();
            let out = call.keys(&format!("{pin}#"));
            assert_eq!(out, [check_output(number, pin)]);
            call
        }

        fn joined() -> Call {
            let mut call = Call::to_check(NUMBER, PIN);
            assert_eq!(call.check(admit()), [Output::Join]);
            assert_eq!(call.meeting(MeetingEvent::Joined), [play(Prompt::Joined)]);
            assert!(call.done().is_empty());
            call
        }
    }

    fn play(prompt: Prompt) -> Output {
        Output::Play(prompt)
    }

    fn check_output(number: &str, pin: &str) -> Output {
        Output::Check {
            meeting_number: number.to_string(),
            pin: Pin::new(pin),
        }
    }

    fn admit() -> CheckResult {
        CheckResult::Admit {
            invitee: "Erika Musterfrau".into(),
            meeting_title: "Ratssitzung".into(),
        }
    }

    fn checks(out: &[Output]) -> usize {
        out.iter()
            .filter(|o| matches!(o, Output::Check { .. }))
            .count()
    }

    #[test]
    fn happy_path_to_joined() {
        let (mut call, out) = Call::new();
        assert_eq!(
            out,
            [play(Prompt::Welcome), play(Prompt::EnterMeetingNumber)]
        );
        assert!(call.done().is_empty());
        assert_eq!(call.keys("12345678#"), [play(Prompt::EnterPin)]);
        assert!(call.done().is_empty());
        assert_eq!(call.keys("90909090#"), [check_output(NUMBER, PIN)]);
        // Waiting for the server: keys do nothing, the only timeout is the check's.
        assert!(call.keys("1#*").is_empty());
        assert_eq!(
            call.ivr.poll_timeout(),
            Some(call.now - 2 * KEY_GAP + CHECK_TIMEOUT)
        );
        assert_eq!(call.check(admit()), [Output::Join]);
        assert_eq!(
            call.ivr.admitted(),
            Some(("Erika Musterfrau", "Ratssitzung"))
        );
        assert_eq!(call.meeting(MeetingEvent::Joined), [play(Prompt::Joined)]);
        assert!(call.done().is_empty());
        assert_eq!(call.ivr.poll_timeout(), None);
        assert!(call.advance(Duration::from_secs(3600)).is_empty());
        assert!(!call.ivr.is_done());
        assert!(!call.ivr.is_muted() && !call.ivr.is_hand_raised());
    }

    #[test]
    fn lobby_prompt_repeats_until_joined() {
        let mut call = Call::to_check(NUMBER, PIN);
        assert_eq!(call.check(admit()), [Output::Join]);
        assert_eq!(
            call.meeting(MeetingEvent::Lobby),
            [play(Prompt::WaitForModerator)]
        );
        // No repeat while the prompt plays, however long.
        assert!(call.advance(Duration::from_secs(60)).is_empty());
        assert!(call.done().is_empty());
        for _ in 0..3 {
            assert!(call
                .advance(LOBBY_REPEAT - Duration::from_millis(1))
                .is_empty());
            assert_eq!(
                call.advance(Duration::from_millis(1)),
                [play(Prompt::WaitForModerator)]
            );
            assert!(call.done().is_empty());
        }
        // Keys in the lobby do nothing.
        assert!(call.keys("*6*9").is_empty());
        // Admitted while the prompt plays: it stops, the joined prompt follows.
        call.advance(LOBBY_REPEAT);
        assert_eq!(
            call.meeting(MeetingEvent::Joined),
            [Output::StopPrompts, play(Prompt::Joined)]
        );
        assert!(call.done().is_empty());
        assert!(call.advance(LOBBY_REPEAT * 3).is_empty());
    }

    #[test]
    fn three_wrong_entries_hang_up_without_a_fourth_check() {
        let (mut call, _) = Call::new();
        call.done();
        let mut all = Vec::new();
        for attempt in 1..=MAX_TRIES {
            all.extend(call.keys("12345678#"));
            call.done();
            all.extend(call.keys("11111111#"));
            let out = call.check(CheckResult::Wrong);
            assert_eq!(call.ivr.tries(), attempt);
            if attempt < MAX_TRIES {
                // Never says which of the two was wrong; starts again at the number.
                assert_eq!(
                    out,
                    [play(Prompt::WrongEntry), play(Prompt::EnterMeetingNumber)]
                );
                call.done();
            } else {
                assert_eq!(out, [play(Prompt::TooManyTries)]);
            }
        }
        assert_eq!(checks(&all), 3);
        // The closing prompt plays; keys and a stray answer change nothing.
        let mut after = call.keys("12345678#11111111#");
        after.extend(call.check(CheckResult::Wrong));
        after.extend(call.check(admit()));
        assert!(after.is_empty(), "{after:?}");
        assert_eq!(call.done(), [Output::Hangup(HangupReason::TooManyTries)]);
        assert!(call.ivr.is_done());
        let mut after = call.keys("12345678#11111111#");
        after.extend(call.done());
        after.extend(call.advance(Duration::from_secs(600)));
        assert!(after.is_empty(), "{after:?}");
        assert_eq!(call.ivr.poll_timeout(), None);
    }

    #[test]
    fn a_wrong_entry_then_success() {
        let mut call = Call::to_check(NUMBER, "11111111");
        call.check(CheckResult::Wrong);
        call.done();
        call.keys(&format!("{NUMBER}#"));
        call.done();
        assert_eq!(call.keys(&format!("{PIN}#")), [check_output(NUMBER, PIN)]);
        assert_eq!(call.check(admit()), [Output::Join]);
        assert_eq!(call.ivr.tries(), 1);
    }

    #[test]
    fn a_key_interrupts_menu_prompts() {
        let (mut call, _) = Call::new();
        // Typing during the greeting stops it, and the digit counts.
        assert_eq!(call.keys("1"), [Output::StopPrompts]);
        // A late "finished" from the flushed queue is ignored.
        assert!(call.done().is_empty());
        assert_eq!(call.keys("2345678#"), [play(Prompt::EnterPin)]);
        // The PIN prompt is interrupted too.
        assert_eq!(call.keys("9"), [Output::StopPrompts]);
        assert_eq!(call.keys("0909090#"), [check_output(NUMBER, PIN)]);
        // After a wrong answer, the two prompts are interrupted by one key.
        assert_eq!(
            call.check(CheckResult::Wrong),
            [play(Prompt::WrongEntry), play(Prompt::EnterMeetingNumber)]
        );
        assert_eq!(call.keys("1"), [Output::StopPrompts]);
        // Keys A-D neither interrupt nor count.
        assert_eq!(call.keys("2345678#"), [play(Prompt::EnterPin)]);
        assert!(call.keys("ABCD").is_empty());
        assert_eq!(call.keys("9"), [Output::StopPrompts]);
        assert_eq!(call.keys("0909090#"), [check_output(NUMBER, PIN)]);
    }

    #[test]
    fn star_restarts_the_entry() {
        let (mut call, _) = Call::new();
        call.done();
        assert_eq!(call.keys("9999*"), [play(Prompt::EnterMeetingNumber)]);
        call.done();
        assert_eq!(call.keys(&format!("{NUMBER}#")), [play(Prompt::EnterPin)]);
        call.done();
        // '*' in the PIN restarts only the PIN, with its own prompt.
        assert_eq!(call.keys("123*"), [play(Prompt::EnterPin)]);
        // '*' while that prompt plays interrupts it and plays it again from the start.
        assert_eq!(
            call.keys("*"),
            [Output::StopPrompts, play(Prompt::EnterPin)]
        );
        call.done();
        assert_eq!(call.keys(&format!("{PIN}#")), [check_output(NUMBER, PIN)]);
    }

    #[test]
    fn digits_beyond_sixteen_are_ignored() {
        let (mut call, _) = Call::new();
        call.done();
        let twenty = "12345678901234567890";
        assert_eq!(call.keys(&format!("{twenty}#")), [play(Prompt::EnterPin)]);
        call.done();
        assert_eq!(
            call.keys(&format!("{twenty}#")),
            [check_output(&twenty[..16], &twenty[..16])]
        );
    }

    #[test]
    fn silence_reprompts_twice_then_hangs_up() {
        let (mut call, _) = Call::new();
        // While the greeting plays, no first-digit timeout runs.
        assert!(call.advance(Duration::from_secs(30)).is_empty());
        call.done();
        for _ in 0..NO_INPUT_REPROMPTS {
            assert!(call
                .advance(FIRST_DIGIT_TIMEOUT - Duration::from_millis(1))
                .is_empty());
            assert_eq!(
                call.advance(Duration::from_millis(1)),
                [play(Prompt::EnterMeetingNumber)]
            );
            assert!(call.advance(Duration::from_secs(15)).is_empty());
            call.done();
        }
        assert_eq!(call.advance(FIRST_DIGIT_TIMEOUT), [play(Prompt::NoInput)]);
        // Hang up only once the prompt has played.
        assert!(call.advance(Duration::from_secs(5)).is_empty());
        assert_eq!(call.done(), [Output::Hangup(HangupReason::NoInput)]);
    }

    #[test]
    fn a_digit_resets_the_silence_count() {
        let (mut call, _) = Call::new();
        call.done();
        assert_eq!(
            call.advance(FIRST_DIGIT_TIMEOUT),
            [play(Prompt::EnterMeetingNumber)]
        );
        call.done();
        assert_eq!(
            call.advance(FIRST_DIGIT_TIMEOUT),
            [play(Prompt::EnterMeetingNumber)]
        );
        call.done();
        assert_eq!(call.keys(&format!("{NUMBER}#")), [play(Prompt::EnterPin)]);
        call.done();
        // The PIN step gets its own two re-prompts.
        for _ in 0..NO_INPUT_REPROMPTS {
            assert_eq!(call.advance(FIRST_DIGIT_TIMEOUT), [play(Prompt::EnterPin)]);
            call.done();
        }
        assert_eq!(call.advance(FIRST_DIGIT_TIMEOUT), [play(Prompt::NoInput)]);
    }

    #[test]
    fn hash_on_an_empty_entry_counts_as_silence() {
        let (mut call, _) = Call::new();
        call.done();
        assert_eq!(call.keys("#"), [play(Prompt::EnterMeetingNumber)]);
        call.done();
        assert_eq!(call.keys("#"), [play(Prompt::EnterMeetingNumber)]);
        call.done();
        assert_eq!(call.keys("#"), [play(Prompt::NoInput)]);
        assert_eq!(call.done(), [Output::Hangup(HangupReason::NoInput)]);
    }

    #[test]
    fn inter_digit_timeout_ends_the_entry() {
        let (mut call, _) = Call::new();
        call.done();
        assert!(call.keys(NUMBER).is_empty());
        assert!(call
            .advance(INTER_DIGIT_TIMEOUT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            call.advance(Duration::from_millis(1)),
            [play(Prompt::EnterPin)]
        );
        call.done();
        assert!(call.keys(PIN).is_empty());
        assert_eq!(
            call.advance(INTER_DIGIT_TIMEOUT),
            [check_output(NUMBER, PIN)]
        );
    }

    #[test]
    fn the_menu_has_an_overall_deadline() {
        let (mut call, _) = Call::new();
        call.done();
        // A caller who keeps starting over never gets past the deadline.
        let out = loop {
            let out = call.keys("12*");
            if out != [play(Prompt::EnterMeetingNumber)] {
                break out;
            }
            let out = call.advance(Duration::from_secs(1));
            if !out.is_empty() {
                break out;
            }
            call.done();
        };
        // (The deadline came while the restarted prompt played, so it was flushed.)
        assert_eq!(out, [Output::StopPrompts, play(Prompt::TimeUp)]);
        assert!(call.elapsed() >= MENU_DEADLINE);
        assert!(call.elapsed() < MENU_DEADLINE + Duration::from_secs(2));
        assert!(call.keys("1#").is_empty());
        assert_eq!(call.done(), [Output::Hangup(HangupReason::TimeUp)]);
    }

    #[test]
    fn the_deadline_does_not_cut_a_check_but_ends_after_a_wrong_answer() {
        // A check sent shortly before the menu's deadline, answered after it.
        let late_check = || {
            let (mut call, _) = Call::new();
            call.now += MENU_DEADLINE - Duration::from_secs(10);
            call.done();
            call.keys(&format!("{NUMBER}#"));
            call.done();
            assert_eq!(call.keys(&format!("{PIN}#")), [check_output(NUMBER, PIN)]);
            assert!(call.advance(Duration::from_secs(20)).is_empty());
            assert!(call.elapsed() > MENU_DEADLINE);
            call
        };
        let mut call = late_check();
        assert_eq!(call.check(CheckResult::Wrong), [play(Prompt::TimeUp)]);
        assert_eq!(call.done(), [Output::Hangup(HangupReason::TimeUp)]);
        // An admit after the deadline still joins.
        let mut call = late_check();
        assert_eq!(call.check(admit()), [Output::Join]);
    }

    #[test]
    fn every_refusal_plays_its_prompt_then_hangs_up() {
        for (result, reason) in [
            (CheckResult::NotAllowed, HangupReason::NotAllowed),
            (CheckResult::NotYet, HangupReason::NotYet),
            (CheckResult::Ended, HangupReason::MeetingEnded),
            (CheckResult::Throttled, HangupReason::Throttled),
            (CheckResult::Unreachable, HangupReason::TechnicalError),
        ] {
            let mut call = Call::to_check(NUMBER, PIN);
            assert_eq!(call.check(result.clone()), [play(reason.prompt())]);
            assert!(call.advance(Duration::from_secs(10)).is_empty());
            assert!(call.keys("1234#").is_empty());
            assert_eq!(call.done(), [Output::Hangup(reason)], "{result:?}");
        }
        // Throttled ends the call at once, also after a wrong try.
        let mut call = Call::to_check(NUMBER, PIN);
        call.check(CheckResult::Wrong);
        call.done();
        call.keys(&format!("{NUMBER}#{PIN}#"));
        assert_eq!(
            call.check(CheckResult::Throttled),
            [play(Prompt::Throttled)]
        );
    }

    #[test]
    fn prompt_texts_name_the_reasons() {
        use crate::core::prompts::Language;
        assert!(Prompt::NotAllowed
            .text(Language::En)
            .contains("end-to-end encrypted participation in the browser"));
        assert!(Prompt::TechnicalError
            .text(Language::En)
            .contains("technical problem"));
    }

    #[test]
    fn no_answer_to_a_check_is_a_technical_error() {
        let mut call = Call::to_check(NUMBER, PIN);
        assert!(call
            .advance(CHECK_TIMEOUT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            call.advance(Duration::from_millis(1)),
            [play(Prompt::TechnicalError)]
        );
        // A late answer is ignored.
        assert!(call.check(admit()).is_empty());
        assert_eq!(call.done(), [Output::Hangup(HangupReason::TechnicalError)]);
    }

    #[test]
    fn no_news_from_the_meeting_is_a_technical_error() {
        let mut call = Call::to_check(NUMBER, PIN);
        assert_eq!(call.check(admit()), [Output::Join]);
        assert_eq!(call.advance(JOIN_TIMEOUT), [play(Prompt::TechnicalError)]);
        assert!(call.meeting(MeetingEvent::Joined).is_empty());
        assert_eq!(call.done(), [Output::Hangup(HangupReason::TechnicalError)]);
    }

    #[test]
    fn a_closing_prompt_that_never_finishes_still_hangs_up() {
        let mut call = Call::joined();
        assert_eq!(call.meeting(MeetingEvent::Removed), [play(Prompt::Removed)]);
        assert!(call
            .advance(FINAL_PROMPT_LIMIT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            call.advance(Duration::from_millis(1)),
            [Output::Hangup(HangupReason::Removed)]
        );
        assert!(call.done().is_empty());
    }

    #[test]
    fn star_six_toggles_the_mute() {
        let mut call = Call::joined();
        assert_eq!(
            call.keys("*6"),
            [Output::SetMuted(true), play(Prompt::Muted)]
        );
        assert!(call.ivr.is_muted());
        call.done();
        assert_eq!(
            call.keys("*6"),
            [Output::SetMuted(false), play(Prompt::Unmuted)]
        );
        assert!(!call.ivr.is_muted());
        // Confirmations queue behind a prompt still playing; keys do not flush them.
        assert_eq!(
            call.keys("*6"),
            [Output::SetMuted(true), play(Prompt::Muted)]
        );
    }

    #[test]
    fn star_nine_toggles_the_hand() {
        let mut call = Call::joined();
        assert_eq!(
            call.keys("*9"),
            [Output::RaiseHand(true), play(Prompt::HandRaised)]
        );
        assert!(call.ivr.is_hand_raised());
        call.done();
        assert_eq!(
            call.keys("*9"),
            [Output::RaiseHand(false), play(Prompt::HandLowered)]
        );
        assert!(!call.ivr.is_hand_raised());
    }

    #[test]
    fn meeting_keys_need_a_recent_star() {
        let mut call = Call::joined();
        // Without '*', after another key, or too late: nothing.
        assert!(call.keys("6969").is_empty());
        assert!(call.keys("*16*#9*A6").is_empty());
        assert!(call.keys("*").is_empty());
        assert!(call.advance(STAR_TIMEOUT).is_empty());
        assert_eq!(call.ivr.poll_timeout(), None);
        assert!(call.keys("6").is_empty());
        // '*' twice: the second arms again.
        assert_eq!(
            call.keys("**9"),
            [Output::RaiseHand(true), play(Prompt::HandRaised)]
        );
        // The star is used up by the action.
        assert!(call.keys("9").is_empty());
        // Just inside the window.
        call.keys("*");
        call.advance(STAR_TIMEOUT - Duration::from_millis(1));
        assert_eq!(
            call.keys("6"),
            [Output::SetMuted(true), play(Prompt::Muted)]
        );
    }

    #[test]
    fn moderator_mute_refuses_self_unmute() {
        let mut call = Call::joined();
        assert_eq!(
            call.meeting(MeetingEvent::MutedByModerator),
            [Output::SetMuted(true), play(Prompt::MutedByModerator)]
        );
        assert!(call.ivr.is_muted() && call.ivr.is_muted_by_moderator());
        call.done();
        // *6 does not unmute: only the refusal plays.
        assert_eq!(call.keys("*6"), [play(Prompt::CannotUnmute)]);
        assert_eq!(call.keys("*6"), [play(Prompt::CannotUnmute)]);
        assert!(call.ivr.is_muted());
        // A repeated event changes nothing.
        assert!(call.meeting(MeetingEvent::MutedByModerator).is_empty());
        // Lifted: still muted, and now *6 unmutes.
        assert_eq!(
            call.meeting(MeetingEvent::ModeratorMuteLifted),
            [play(Prompt::ModeratorMuteLifted)]
        );
        assert!(call.ivr.is_muted() && !call.ivr.is_muted_by_moderator());
        assert!(call.meeting(MeetingEvent::ModeratorMuteLifted).is_empty());
        assert_eq!(
            call.keys("*6"),
            [Output::SetMuted(false), play(Prompt::Unmuted)]
        );
    }

    #[test]
    fn moderator_mute_of_a_self_muted_caller_and_before_the_join() {
        let mut call = Call::joined();
        call.keys("*6");
        assert_eq!(
            call.meeting(MeetingEvent::MutedByModerator),
            [play(Prompt::MutedByModerator)]
        );

        // Muted by a moderator before the join (a reconnect): announced after the join.
        let mut call = Call::to_check(NUMBER, PIN);
        call.check(admit());
        assert_eq!(
            call.meeting(MeetingEvent::MutedByModerator),
            [Output::SetMuted(true)]
        );
        assert_eq!(
            call.meeting(MeetingEvent::Joined),
            [play(Prompt::Joined), play(Prompt::MutedByModerator)]
        );
        assert_eq!(call.keys("*6"), [play(Prompt::CannotUnmute)]);
    }

    #[test]
    fn moderator_lowers_the_hand() {
        let mut call = Call::joined();
        // Not raised: nothing to say.
        assert!(call
            .meeting(MeetingEvent::HandLoweredByModerator)
            .is_empty());
        call.keys("*9");
        assert_eq!(
            call.meeting(MeetingEvent::HandLoweredByModerator),
            [play(Prompt::HandLoweredByModerator)]
        );
        assert!(!call.ivr.is_hand_raised());
        // The next *9 raises it again.
        assert_eq!(
            call.keys("*9"),
            [Output::RaiseHand(true), play(Prompt::HandRaised)]
        );
    }

    #[test]
    fn a_server_being_taken_out_of_service_is_announced_once() {
        let mut call = Call::joined();
        assert_eq!(
            call.meeting(MeetingEvent::Maintenance),
            [play(Prompt::Maintenance)]
        );
        call.done();
        // Told again (after a reconnect to the same server): said once is enough.
        assert!(call.meeting(MeetingEvent::Maintenance).is_empty());
        // The keys still work.
        assert_eq!(
            call.keys("*6"),
            [Output::SetMuted(true), play(Prompt::Muted)]
        );

        // In the lobby too, after the lobby's own prompt.
        let mut call = Call::to_check(NUMBER, PIN);
        assert_eq!(call.check(admit()), [Output::Join]);
        assert_eq!(
            call.meeting(MeetingEvent::Lobby),
            [play(Prompt::WaitForModerator)]
        );
        assert_eq!(
            call.meeting(MeetingEvent::Maintenance),
            [play(Prompt::Maintenance)]
        );
    }

    #[test]
    fn the_meeting_ends_the_call_after_the_prompt() {
        for (event, reason) in [
            (MeetingEvent::Removed, HangupReason::Removed),
            (MeetingEvent::Denied, HangupReason::Denied),
            (MeetingEvent::Ended, HangupReason::MeetingEnded),
            (MeetingEvent::ConnectionLost, HangupReason::ConnectionLost),
        ] {
            // In the meeting, with a prompt playing: it is flushed first.
            let mut call = Call::joined();
            call.keys("*9");
            assert_eq!(
                call.meeting(event),
                [Output::StopPrompts, play(reason.prompt())],
                "{event:?}"
            );
            // Keys, further events and time short of the limit do not hang up early.
            assert!(call.keys("*6*9").is_empty());
            assert!(call.meeting(MeetingEvent::Joined).is_empty());
            assert!(call.meeting(MeetingEvent::Removed).is_empty());
            assert!(call.advance(Duration::from_secs(10)).is_empty());
            assert_eq!(call.done(), [Output::Hangup(reason)], "{event:?}");
            assert!(call.ivr.is_done());

            // From the lobby, while the waiting prompt plays.
            let mut call = Call::to_check(NUMBER, PIN);
            call.check(admit());
            call.meeting(MeetingEvent::Lobby);
            assert_eq!(
                call.meeting(event),
                [Output::StopPrompts, play(reason.prompt())],
                "{event:?}"
            );
            assert_eq!(call.done(), [Output::Hangup(reason)], "{event:?}");
        }
        // Denied from the lobby, with nothing playing.
        let mut call = Call::to_check(NUMBER, PIN);
        call.check(admit());
        call.meeting(MeetingEvent::Lobby);
        call.done();
        assert_eq!(call.meeting(MeetingEvent::Denied), [play(Prompt::Denied)]);
        assert_eq!(call.done(), [Output::Hangup(HangupReason::Denied)]);
    }

    #[test]
    fn meeting_events_before_the_admission_are_ignored() {
        let (mut call, _) = Call::new();
        for event in [
            MeetingEvent::Lobby,
            MeetingEvent::Joined,
            MeetingEvent::MutedByModerator,
            MeetingEvent::Removed,
            MeetingEvent::ConnectionLost,
        ] {
            assert!(call.meeting(event).is_empty());
        }
        let mut call = Call::to_check(NUMBER, PIN);
        assert!(call.meeting(MeetingEvent::Joined).is_empty());
        assert_eq!(call.check(CheckResult::Wrong).len(), 2);
    }

    #[test]
    fn the_pin_never_shows_in_debug_output() {
        let output = check_output(NUMBER, PIN);
        let text = format!("{output:?}");
        assert!(!text.contains(PIN), "{text}");
        assert!(!text.contains('9') && !text.contains('0'), "{text}");
        // Negative control: the meeting number is not secret and does show.
        assert!(text.contains(NUMBER), "{text}");
        assert_eq!(format!("{:?}", Pin::new(PIN)), "Pin(<redacted>)");
        assert_eq!(Pin::new(PIN).expose(), PIN);

        // Nor does the menu's state while the PIN is typed.
        let (mut call, _) = Call::new();
        call.done();
        call.keys(&format!("{NUMBER}#"));
        call.done();
        call.keys("909090");
        let text = format!("{:?}", call.ivr);
        assert!(!text.contains("909090"), "{text}");
        assert!(text.contains("6 digits"), "{text}");

        // Nor the invitee's name in an admit.
        let text = format!("{:?}", Input::Check(admit()));
        assert!(!text.contains("Erika"), "{text}");
    }

    #[test]
    fn digits_round_trip_through_chars() {
        for c in "0123456789*#ABCD".chars() {
            assert_eq!(Digit::from_char(c).map(Digit::to_char), Some(c));
        }
        assert_eq!(Digit::from_char('a'), Some(Digit::A));
        assert_eq!(Digit::from_char('E'), None);
        assert_eq!(Digit::from_char(' '), None);
    }

    /// A small deterministic generator (xorshift64*), so the run below is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn an_interrupted_meeting_is_joined_again_with_mute_and_hand_kept() {
        let mut call = Call::joined();
        assert_eq!(
            call.keys("*6"),
            [Output::SetMuted(true), play(Prompt::Muted)]
        );
        assert_eq!(
            call.keys("*9"),
            [Output::RaiseHand(true), play(Prompt::HandRaised)]
        );
        call.done();
        assert_eq!(
            call.meeting(MeetingEvent::Interrupted),
            [play(Prompt::Reconnecting)]
        );
        let first_attempt = call.now + REJOIN_FIRST_DELAY;
        // A second report of the same break changes nothing; keys wait.
        assert!(call.meeting(MeetingEvent::Interrupted).is_empty());
        assert!(call.keys("*6").is_empty());
        assert_eq!(call.ivr.poll_timeout(), Some(first_attempt));
        assert_eq!(call.advance(first_attempt - call.now), [Output::Rejoin]);
        assert_eq!(
            call.meeting(MeetingEvent::Joined),
            [
                Output::StopPrompts,
                play(Prompt::Reconnected),
                Output::SetMuted(true),
                Output::RaiseHand(true),
            ]
        );
        assert!(call.ivr.is_muted());
        call.done();
        // In the meeting again: keys work as before.
        assert_eq!(
            call.keys("*6"),
            [Output::SetMuted(false), play(Prompt::Unmuted)]
        );
    }

    #[test]
    fn failed_attempts_wait_longer_each_time_then_the_call_ends() {
        let mut call = Call::joined();
        call.meeting(MeetingEvent::Interrupted);
        call.done();
        let mut waits = Vec::new();
        let mut last = Vec::new();
        for attempt in 0..MAX_REJOINS {
            let wait = call.ivr.poll_timeout().expect("a retry is due") - call.now;
            waits.push(wait);
            assert_eq!(call.advance(wait), [Output::Rejoin], "attempt {attempt}");
            // Alternately: the new client fails at once, or nothing happens until the join
            // times out (no "technical error" either way).
            last = if attempt % 2 == 0 {
                call.meeting(MeetingEvent::Interrupted)
            } else {
                call.advance(JOIN_TIMEOUT)
            };
            if attempt + 1 < MAX_REJOINS {
                assert!(last.is_empty(), "attempt {attempt}: {last:?}");
            }
        }
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000]
                .map(Duration::from_millis)
                .to_vec()
        );
        // The last attempt failed: the call ends, saying the connection is lost.
        assert_eq!(last, [play(Prompt::ConnectionLost)]);
        assert_eq!(call.done(), [Output::Hangup(HangupReason::ConnectionLost)]);
    }

    #[test]
    fn a_refusal_while_getting_back_ends_the_call_and_the_lobby_may_come_between() {
        // The server refuses the ticket (it restarted): no further attempts.
        let mut call = Call::joined();
        call.meeting(MeetingEvent::Interrupted);
        call.advance(REJOIN_FIRST_DELAY);
        let out = call.meeting(MeetingEvent::ConnectionLost);
        assert!(out.contains(&play(Prompt::ConnectionLost)), "{out:?}");
        assert_eq!(call.done(), [Output::Hangup(HangupReason::ConnectionLost)]);

        // Back through the lobby (the meeting was locked meanwhile): the waiting prompt, then
        // "back in the meeting".
        let mut call = Call::joined();
        call.meeting(MeetingEvent::Interrupted);
        call.advance(REJOIN_FIRST_DELAY);
        assert_eq!(
            call.meeting(MeetingEvent::Lobby),
            [play(Prompt::WaitForModerator)]
        );
        assert_eq!(
            call.meeting(MeetingEvent::Joined),
            [Output::StopPrompts, play(Prompt::Reconnected)]
        );

        // Interrupted while waiting in the lobby for the first time: after getting back, the
        // caller hears the full welcome to the meeting, not "back in".
        let mut call = Call::to_check(NUMBER, PIN);
        assert_eq!(call.check(admit()), [Output::Join]);
        call.meeting(MeetingEvent::Lobby);
        call.meeting(MeetingEvent::Interrupted);
        assert_eq!(call.advance(REJOIN_FIRST_DELAY), [Output::Rejoin]);
        let out = call.meeting(MeetingEvent::Joined);
        assert!(out.contains(&play(Prompt::Joined)), "{out:?}");
    }

    #[test]
    fn random_inputs_keep_the_rules() {
        const KEYS: &str = "0123456789*#ABCD";
        let results = [
            admit(),
            CheckResult::Wrong,
            CheckResult::Wrong,
            CheckResult::Wrong,
            CheckResult::NotAllowed,
            CheckResult::NotYet,
            CheckResult::Ended,
            CheckResult::Throttled,
            CheckResult::Unreachable,
        ];
        let events = [
            MeetingEvent::Lobby,
            MeetingEvent::Joined,
            MeetingEvent::MutedByModerator,
            MeetingEvent::ModeratorMuteLifted,
            MeetingEvent::HandLoweredByModerator,
            MeetingEvent::Removed,
            MeetingEvent::Denied,
            MeetingEvent::Ended,
            MeetingEvent::Interrupted,
            MeetingEvent::ConnectionLost,
            MeetingEvent::Maintenance,
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for run in 0..2000 {
            let (mut call, mut all) = Call::new();
            for _ in 0..300 {
                let out = match rng.below(10) {
                    0..=4 => {
                        let i = rng.below(KEYS.len() as u64) as usize;
                        call.keys(&KEYS[i..=i])
                    }
                    5 | 6 => call.done(),
                    7 => call.check(results[rng.below(results.len() as u64) as usize].clone()),
                    8 => call.meeting(events[rng.below(events.len() as u64) as usize]),
                    _ => call.advance(Duration::from_millis(rng.below(40_000))),
                };
                all.extend(out);
            }
            all.extend(call.advance(Duration::from_secs(3600)));
            all.extend(call.done());
            all.extend(call.advance(Duration::from_secs(3600)));

            assert!(checks(&all) <= MAX_TRIES as usize, "run {run}: {all:?}");
            let hangups: Vec<usize> = all
                .iter()
                .enumerate()
                .filter(|(_, o)| matches!(o, Output::Hangup(_)))
                .map(|(i, _)| i)
                .collect();
            assert!(hangups.len() <= 1, "run {run}: {all:?}");
            if let Some(&at) = hangups.first() {
                // Nothing after the hangup, and the last prompt before it says why.
                assert_eq!(at, all.len() - 1, "run {run}: {all:?}");
                let Some(Output::Hangup(reason)) = all.last() else {
                    unreachable!()
                };
                let last_play = all.iter().rev().find_map(|o| match o {
                    Output::Play(p) => Some(*p),
                    _ => None,
                });
                assert_eq!(last_play, Some(reason.prompt()), "run {run}: {all:?}");
                assert!(call.ivr.is_done());
            }
            // Mute and hand outputs alternate consistently with the state.
            let last_mute = all.iter().rev().find_map(|o| match o {
                Output::SetMuted(m) => Some(*m),
                _ => None,
            });
            assert_eq!(last_mute.unwrap_or(false), call.ivr.is_muted(), "run {run}");
            if call.ivr.is_muted_by_moderator() {
                assert!(call.ivr.is_muted(), "run {run}");
            }
        }
    }
}

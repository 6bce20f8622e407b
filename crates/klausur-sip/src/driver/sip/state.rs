//! State shared by the endpoint's transports, layers and call tasks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ezk_sip_ua::dialog::DialogKey;
use tokio::sync::{watch, Notify};

use super::digest::DigestServer;
use super::limits::{PerSourceLimiter, TokenBucket};
use super::Limits;

/// A counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of what the endpoint did, for monitoring and tests.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) dropped: Counter,
    pub(crate) not_allowed: Counter,
    pub(crate) stateless_replies: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) auth_challenges: Counter,
    pub(crate) auth_failures: Counter,
    pub(crate) busy: Counter,
    pub(crate) calls_offered: Counter,
    pub(crate) calls_answered: Counter,
}

/// A snapshot of the endpoint's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SipStats {
    /// Messages dropped without an answer (garbage, broken, over the message rate).
    pub dropped: u64,
    /// Messages and connections from sources outside the allow list.
    pub not_allowed: u64,
    /// Requests answered right away without a transaction (400, 403, 404, 405, 415, 420, 488, 501).
    pub stateless_replies: u64,
    /// INVITEs answered 503 for exceeding the per-source rate.
    pub rate_limited: u64,
    /// 401 challenges sent.
    pub auth_challenges: u64,
    /// INVITEs refused for wrong credentials (403).
    pub auth_failures: u64,
    /// INVITEs refused for the concurrent-call limit (486) or a full queue (503).
    pub busy: u64,
    /// Calls handed to the application as [`IncomingCall`].
    pub calls_offered: u64,
    /// Calls established (ACK received).
    pub calls_answered: u64,
    /// Calls now in progress (offered or established).
    pub active_calls: u64,
}

pub(crate) struct EndpointState {
    pub(crate) limits: Limits,
    origin: Instant,
    pub(crate) invite_limiter: Mutex<PerSourceLimiter>,
    pub(crate) message_limiter: Mutex<PerSourceLimiter>,
    pub(crate) reply_limiter: Mutex<TokenBucket>,
    pub(crate) digest: Option<Mutex<DigestServer>>,
    active_calls: AtomicUsize,
    dialogs: Mutex<HashMap<DialogKey, (u32, Arc<Notify>)>>,
    shutdown: watch::Sender<bool>,
    next_id: AtomicU64,
    pub(crate) stats: Stats,
}

impl EndpointState {
    pub(crate) fn new(limits: Limits, digest: Option<DigestServer>) -> EndpointState {
        let per_minute = f64::from(limits.invites_per_source_per_minute);
        EndpointState {
            invite_limiter: Mutex::new(PerSourceLimiter::new(
                limits.invite_burst,
                per_minute / 60.0,
                10_000,
            )),
            message_limiter: Mutex::new(PerSourceLimiter::new(
                limits.messages_per_source_per_second.saturating_mul(2),
                f64::from(limits.messages_per_source_per_second),
                10_000,
            )),
            reply_limiter: Mutex::new(TokenBucket::new(50, 20.0, Duration::ZERO)),
            limits,
            origin: Instant::now(),
            digest: digest.map(Mutex::new),
            active_calls: AtomicUsize::new(0),
            dialogs: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
            next_id: AtomicU64::new(1),
            stats: Stats::default(),
        }
    }

    /// Monotonic time since the endpoint started (the sans-IO parts take it as argument).
    pub(crate) fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn decision_timeout(&self) -> Duration {
        self.limits.decision_timeout
    }

    pub(crate) fn max_call_duration(&self) -> Duration {
        self.limits.max_call_duration
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Ends all calls (BYE) and stops handing out new ones.
    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A place for one more call, or `None` at the limit.
    pub(crate) fn acquire_call(self: &Arc<Self>) -> Option<CallSlot> {
        let max = self.limits.max_calls;
        self.active_calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(CallSlot {
            state: self.clone(),
        })
    }

    /// Starts tracking the CSeq of a dialog whose INVITE had `cseq`.
    pub(crate) fn track_dialog(self: &Arc<Self>, key: DialogKey, cseq: u32) -> DialogTrack {
        let remote_bye = Arc::new(Notify::new());
        if let Ok(mut dialogs) = self.dialogs.lock() {
            dialogs.insert(key.clone(), (cseq, remote_bye.clone()));
        }
        DialogTrack {
            state: self.clone(),
            key,
            remote_bye,
        }
    }

    /// For an in-dialog request: may it go on? A request more than one above the highest
    /// CSeq seen (RFC 3261 allows gaps) would wait in ezk's dialog backlog forever, so it is
    /// refused, except a BYE, which ends the call here. Requests for dialogs we do not track
    /// pass (ezk answers 481).
    pub(crate) fn check_dialog_cseq(&self, key: &DialogKey, cseq: u32) -> CseqCheck {
        let Ok(mut dialogs) = self.dialogs.lock() else {
            return CseqCheck::Refuse;
        };
        match dialogs.get_mut(key) {
            None => CseqCheck::Pass,
            Some((highest, remote_bye)) => {
                if cseq > highest.saturating_add(1) {
                    CseqCheck::Gap(remote_bye.clone())
                } else {
                    *highest = (*highest).max(cseq);
                    CseqCheck::Pass
                }
            }
        }
    }

    pub(crate) fn active_calls(&self) -> usize {
        self.active_calls.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> SipStats {
        let s = &self.stats;
        SipStats {
            dropped: s.dropped.get(),
            not_allowed: s.not_allowed.get(),
            stateless_replies: s.stateless_replies.get(),
            rate_limited: s.rate_limited.get(),
            auth_challenges: s.auth_challenges.get(),
            auth_failures: s.auth_failures.get(),
            busy: s.busy.get(),
            calls_offered: s.calls_offered.get(),
            calls_answered: s.calls_answered.get(),
            active_calls: self.active_calls() as u64,
        }
    }

    /// Whether a source may send one more message now (all messages, before the stack).
    pub(crate) fn message_allowed(&self, ip: IpAddr) -> bool {
        let now = self.now();
        self.message_limiter
            .lock()
            .map(|mut l| l.take(ip, now).is_ok())
            .unwrap_or(false)
    }

    /// Whether one more stateless reply to a stranger may be sent now (global).
    pub(crate) fn stranger_reply_allowed(&self) -> bool {
        let now = self.now();
        self.reply_limiter
            .lock()
            .map(|mut l| l.take(now).is_ok())
            .unwrap_or(false)
    }
}

/// One of the `max_calls` places; freed on drop.
pub(crate) struct CallSlot {
    state: Arc<EndpointState>,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.state.active_calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What to do with an in-dialog request, by its CSeq.
pub(crate) enum CseqCheck {
    Pass,
    Refuse,
    /// A gap: refuse it, or for a BYE answer it and wake the call with this.
    Gap(Arc<Notify>),
}

/// CSeq tracking of one dialog; removed on drop.
pub(crate) struct DialogTrack {
    state: Arc<EndpointState>,
    key: DialogKey,
    /// Notified when a BYE ended the call outside ezk's dialog (after a CSeq gap).
    pub(crate) remote_bye: Arc<Notify>,
}

impl Drop for DialogTrack {
    fn drop(&mut self) {
        if let Ok(mut dialogs) = self.state.dialogs.lock() {
            dialogs.remove(&self.key);
        }
    }
}

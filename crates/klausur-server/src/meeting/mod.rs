//! The meeting layer: the meeting's rules as a sans-IO core ([`rules`]), the async driver
//! that runs one per meeting ([`actor`]), the registry of running meetings ([`Registry`]), the
//! MLS delivery ordering ([`delivery`]), the participant ids on the wire ([`ids`]) and the one
//! conversion of a refusal into a WebSocket `error` message ([`signaling_error`]).
//!
//! May call `media` (rooms and peers, through its handle), `admission` (the standing a join
//! arrives with), `config`, `turn` (credentials in `joined`), `auth`, `audit` and
//! `storage_fault`; never the HTTP layer, the state or the server. Inside: `rules` and
//! `delivery` are pure (time is an argument, outputs are values); only `actor` awaits.
//!
//! Admission policy is decided before a join reaches the meeting (see [`Standing`], computed
//! from the database by the WebSocket handler); the rules apply the meeting's live state
//! (locked or not) and carry out moderation. One task per running meeting owns its state and
//! is reached only through its command channel (no locks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use klausur_store::Store;

use tokio::sync::mpsc;

mod actor;
pub mod delivery;
pub mod ids;
pub mod rules;
pub mod signaling_error;

use crate::audit::Audit;
use crate::media::{MediaCmd, MediaHandle};

pub use crate::admission::{MeetingSeed, Pass, Standing};
pub use crate::config::CLIENT_QUEUE;
pub use ids::{parse_participant_id, participant_id};
pub use rules::{LOBBY_NOTICE_INTERVAL, MAX_LOBBY, PASS_GRACE, PASS_LIFETIME};

#[cfg(feature = "test-hooks")]
pub use actor::Forgery;
pub use actor::{JoinRequest, MeetingCmd};

/// The running meetings of this server.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<String, mpsc::Sender<MeetingCmd>>>>,
    next_room: Arc<AtomicU64>,
    media: MediaHandle,
    store: Store,
    audit: Audit,
    turn: Option<Arc<crate::turn::TurnConfig>>,
    /// When the server stops at the latest, once it is being taken out of service
    /// ([`Registry::announce_maintenance`]); meetings started afterwards are told too.
    maintenance: Arc<Mutex<Option<Instant>>>,
}

impl Registry {
    /// `turn`: the TURN server every participant gets credentials for in `joined`.
    pub fn new(
        media: MediaHandle,
        store: Store,
        audit: Audit,
        turn: Option<Arc<crate::turn::TurnConfig>>,
    ) -> Self {
        Registry {
            inner: Arc::default(),
            next_room: Arc::new(AtomicU64::new(1)),
            media,
            store,
            audit,
            turn,
            maintenance: Arc::default(),
        }
    }

    /// The running actor of a meeting, started if needed.
    pub fn get_or_start(&self, seed: &MeetingSeed) -> mpsc::Sender<MeetingCmd> {
        self.start_or_get(seed).0
    }

    /// The running actor of a meeting, started if needed, and whether it was started now.
    pub fn start_or_get(&self, seed: &MeetingSeed) -> (mpsc::Sender<MeetingCmd>, bool) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&seed.id) {
            if !tx.is_closed() {
                return (tx.clone(), false);
            }
        }
        let (tx, rx) = mpsc::channel(1024);
        let key = self.next_room.fetch_add(1, Ordering::Relaxed);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        self.media.send(MediaCmd::OpenRoom {
            room: key,
            events: ev_tx,
        });
        let deps = actor::Deps {
            media: self.media.clone(),
            store: self.store.clone(),
            audit: self.audit.clone(),
            turn: self.turn.clone(),
            maintenance: *self.maintenance.lock().unwrap_or_else(|p| p.into_inner()),
            on_close: {
                let registry = self.clone();
                let id = seed.id.clone();
                Box::new(move || registry.remove_if(&id, |tx| tx.is_closed()))
            },
        };
        tokio::spawn(actor::run(seed.clone(), key, deps, rx, ev_rx));
        map.insert(seed.id.clone(), tx.clone());
        (tx, true)
    }

    /// Removes a meeting's entry if it is still `tx` (the actor is ending).
    fn remove_if(&self, id: &str, tx_closed_check: impl Fn(&mpsc::Sender<MeetingCmd>) -> bool) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(id).is_some_and(tx_closed_check) {
            map.remove(id);
        }
    }

    /// Tells every meeting that the server shuts down.
    pub async fn shutdown_all(&self) {
        let senders: Vec<_> = {
            let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        for tx in senders {
            let _ = tx.send(MeetingCmd::Shutdown).await;
        }
    }

    /// The server is being taken out of service and stops at the latest at `at`: every running
    /// meeting tells its participants (`maintenance`), and every meeting started from now on.
    pub async fn announce_maintenance(&self, at: Instant) {
        let senders: Vec<_> = {
            *self.maintenance.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
            let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        for tx in senders {
            let _ = tx.send(MeetingCmd::Maintenance(at)).await;
        }
    }

    /// Whether the server is being taken out of service ([`Registry::announce_maintenance`]).
    pub fn draining(&self) -> bool {
        self.maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The actor of a running meeting.
    pub fn running_actor(&self, id: &str) -> Option<mpsc::Sender<MeetingCmd>> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).filter(|tx| !tx.is_closed()).cloned()
    }

    pub fn running(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_roundtrip() {
        assert_eq!(participant_id(7), "p7");
        assert_eq!(parse_participant_id("p7"), Some(7));
        assert_eq!(parse_participant_id("7"), None);
        assert_eq!(parse_participant_id("px"), None);
    }
}

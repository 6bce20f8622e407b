//! The live meeting WebSockets, in the server state: how many each client address has open,
//! and whose session each was opened with.
//!
//! - **Per address**: at most `[server] max_websockets_per_address` at once per client address
//!   (`http::client_addr`; IPv6 per /64, as one host usually has a whole /64); the next
//!   upgrade is refused with 429 before it happens. Connections over the in-process dial-in
//!   gateway's own loopback listener are not counted (it opens one per call).
//! - **Per session**: a connection opened with a valid session cookie is registered with that
//!   session and its account. Logging out ends the session's connections
//!   ([`Connections::end_session`]); disabling an account or changing its password ends the
//!   account's ([`Connections::end_user`]). An ended connection's reader stops at once (whatever
//!   the client sends afterwards is not read), and the meeting sees the participant leave as
//!   after a broken connection.
//!
//! These endings reach the connections of this process. A connection opened with a session also
//! looks every `ws_session_check` whether its session is still valid (`http::ws`), which
//! catches what happened elsewhere: `klausur user disable` run as a separate process, or the
//! session's expiry.
//!
//! A connection is registered before its upgrade and checked against a session looked up just
//! before; a session ended in between would leave a connection that no ending reaches. So every
//! ending bumps a generation counter and notes it for the account, and registering with a
//! session of an account that had an ending since the lookup is refused ([`Refused::Stale`]):
//! the caller looks the session up again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Whose session a connection was opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user_id: i64,
    /// The session's id hash (as stored).
    pub session: String,
}

/// Why a connection was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The client address has `max_websockets_per_address` open.
    #[error("too many connections from this address")]
    TooMany,
    /// A session ended since the owner's session was looked up: look it up again.
    #[error("a session ended meanwhile")]
    Stale,
}

/// The registry (cheap to clone; one per server).
#[derive(Debug, Clone)]
pub struct Connections {
    inner: Arc<Mutex<Inner>>,
    max_per_address: u32,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    generation: u64,
    /// The generation of each account's last ending (one entry per account that had one).
    ended: HashMap<i64, u64>,
    per_address: HashMap<IpAddr, u32>,
    live: HashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    owner: Option<Owner>,
    end: Option<oneshot::Sender<()>>,
}

/// The key an address counts under: IPv4 as it is, IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl Connections {
    pub fn new(max_per_address: u32) -> Self {
        Connections {
            inner: Arc::default(),
            max_per_address,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The current generation: read it before looking up the session a connection is opened
    /// with, and pass it to [`Connections::open`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Registers a connection from `client` (`None`: not counted against any address) opened
    /// with `owner`'s session, looked up when the generation was `seen`.
    pub fn open(
        &self,
        client: Option<IpAddr>,
        owner: Option<Owner>,
        seen: u64,
    ) -> Result<Live, Refused> {
        let mut inner = self.lock();
        let key = client.map(address_key);
        if let Some(key) = key {
            if inner.per_address.get(&key).copied().unwrap_or(0) >= self.max_per_address {
                return Err(Refused::TooMany);
            }
        }
        if let Some(o) = &owner {
            if inner.ended.get(&o.user_id).is_some_and(|g| *g > seen) {
                return Err(Refused::Stale);
            }
        }
        if let Some(key) = key {
            *inner.per_address.entry(key).or_insert(0) += 1;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (end, ended) = oneshot::channel();
        inner.live.insert(
            id,
            Entry {
                owner: owner.clone(),
                end: Some(end),
            },
        );
        Ok(Live {
            id,
            key,
            owner,
            inner: self.inner.clone(),
            ended,
        })
    }

    /// Ends the connections opened with the session `session` of the account `user_id`
    /// (logout); how many.
    pub fn end_session(&self, user_id: i64, session: &str) -> usize {
        self.end(user_id, |o| o.session == session)
    }

    /// Ends the connections of the account `user_id` (disabled, password changed), except those
    /// of the session `except`; how many.
    pub fn end_user(&self, user_id: i64, except: Option<&str>) -> usize {
        self.end(user_id, |o| Some(o.session.as_str()) != except)
    }

    fn end(&self, user_id: i64, matches: impl Fn(&Owner) -> bool) -> usize {
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.ended.insert(user_id, generation);
        let matches = |o: &Owner| o.user_id == user_id && matches(o);
        let mut ended = 0;
        for entry in inner.live.values_mut() {
            if entry.owner.as_ref().is_some_and(&matches) {
                if let Some(end) = entry.end.take() {
                    let _ = end.send(());
                    ended += 1;
                }
            }
        }
        ended
    }

    /// Connections open now from `client` (its address key).
    pub fn open_from(&self, client: IpAddr) -> u32 {
        self.lock()
            .per_address
            .get(&address_key(client))
            .copied()
            .unwrap_or(0)
    }

    /// Connections registered now.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // The data stays consistent under every panic-free path; a poisoned lock is taken as is.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered connection; unregistered when dropped.
#[derive(Debug)]
pub struct Live {
    id: u64,
    key: Option<IpAddr>,
    owner: Option<Owner>,
    inner: Arc<Mutex<Inner>>,
    ended: oneshot::Receiver<()>,
}

impl Live {
    /// Whose session the connection was opened with, if any.
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }

    /// Completes when the connection's session or account has been ended (see the module
    /// documentation); cancel-safe.
    pub async fn ended(&mut self) {
        let _ = (&mut self.ended).await;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        inner.live.remove(&self.id);
        if let Some(key) = self.key {
            if let Some(n) = inner.per_address.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    inner.per_address.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn owner(user_id: i64, session: &str) -> Option<Owner> {
        Some(Owner {
            user_id,
            session: session.into(),
        })
    }

    #[test]
    fn an_address_has_at_most_its_cap_open() {
        let c = Connections::new(2);
        let a = ip("192.0.2.1");
        let first = c.open(Some(a), None, 0).expect("first");
        let _second = c.open(Some(a), None, 0).expect("second");
        assert_eq!(c.open(Some(a), None, 0).err(), Some(Refused::TooMany));
        assert!(
            c.open(Some(ip("192.0.2.2")), None, 0).is_ok(),
            "another address"
        );
        assert!(c.open(None, None, 0).is_ok(), "not counted");
        drop(first);
        assert_eq!(c.open_from(a), 1);
        assert!(c.open(Some(a), None, 0).is_ok(), "a closed one makes room");
        // IPv6 counts per /64.
        let _v6 = c.open(Some(ip("2001:db8::1")), None, 0).expect("v6");
        let _v6b = c.open(Some(ip("2001:db8::2")), None, 0).expect("v6");
        assert_eq!(
            c.open(Some(ip("2001:db8::3")), None, 0).err(),
            Some(Refused::TooMany)
        );
        assert!(c.open(Some(ip("2001:db8:0:1::1")), None, 0).is_ok());
    }

    #[tokio::test]
    async fn endings_reach_their_connections_only() {
        let c = Connections::new(100);
        let g = c.generation();
        let mut ada_a = c.open(None, owner(1, "a"), g).expect("open");
        let mut ada_b = c.open(None, owner(1, "b"), g).expect("open");
        let mut bob = c.open(None, owner(2, "c"), g).expect("open");
        let mut guest = c.open(None, None, g).expect("open");
        let ended = |l: &mut Live| l.ended.try_recv().is_ok();

        assert_eq!(c.end_session(1, "a"), 1);
        assert!(ended(&mut ada_a));
        assert!(!ended(&mut ada_b) && !ended(&mut bob) && !ended(&mut guest));

        assert_eq!(c.end_user(1, Some("b")), 0, "the changing session stays");
        assert!(!ended(&mut ada_b));
        assert_eq!(c.end_user(1, None), 1);
        assert!(ended(&mut ada_b));
        assert!(!ended(&mut bob) && !ended(&mut guest));
        use futures::FutureExt;
        assert!(bob.ended().now_or_never().is_none(), "still open");
    }

    #[test]
    fn a_session_looked_up_before_an_ending_is_looked_up_again() {
        let c = Connections::new(100);
        let seen = c.generation();
        c.end_session(1, "elsewhere");
        assert_eq!(
            c.open(None, owner(1, "a"), seen).err(),
            Some(Refused::Stale)
        );
        // Another account's ending does not matter.
        assert!(c.open(None, owner(2, "b"), seen).is_ok());
        assert!(
            c.open(None, None, seen).is_ok(),
            "no session: nothing to end"
        );
        assert!(c.open(None, owner(1, "a"), c.generation()).is_ok());
        assert!(c.is_empty(), "all were dropped");
    }
}

//! This node as one of several (`[cluster]`, docs/cluster.md): its heartbeat, where a join
//! goes, and the lease that keeps each of its meetings here.
//!
//! The rules (which node, when a lease counts as held) are `klausur-cluster`'s sans-IO core;
//! this module is the server's driver for them:
//!
//! - [`ClusterNode::heartbeat_forever`] publishes the node's load every third of the node TTL;
//! - [`ClusterNode::place`] answers, for a join that admission has let in, whether the meeting
//!   runs here ([`Where::Here`], with the lease when it was just placed here) or on another
//!   node ([`Where::There`], its URL: the client is redirected). A meeting still leased to a
//!   node whose heartbeat is gone (it died) is waited for until its lease runs out, and then
//!   placed anew, so that a participant coming back from a failed node lands in one attempt;
//! - [`ClusterNode::keep`] renews a meeting's lease while its actor runs, releases it when the
//!   actor ends, and ends the meeting here ([`MeetingCmd::Shutdown`]: participants join again
//!   through placement) when the lease is lost: taken over, or not confirmed in time.
//!
//! - [`ClusterNode::drain`] publishes at once that the node drains (taken out of service, its
//!   meetings let finish: what the registry says since `announce_maintenance`), so new
//!   meetings go to other nodes; every heartbeat says so from then on.
//!
//! - [`ClusterNode::share_ticket`] and [`ClusterNode::shared_ticket`] hand a telephone call's
//!   ticket from the node whose gateway took the call to the node that runs its meeting.
//!
//! May call `config`, `admission` (its error type), `dialin` (the ticket), `meeting` and
//! `media`; the HTTP layer calls it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use klausur_cluster::{
    Cluster, Lease, LeaseAction, LeaseTimer, Load, MeetingId, Node, RenewResult, Settings,
};
use tokio::sync::mpsc;

use crate::admission::AdmissionError;
use crate::config::ClusterConfig;
use crate::dialin::{PinKey, Ticket, TICKET_LIFETIME};
use crate::media::MediaHandle;
use crate::meeting::{MeetingCmd, Registry};

/// The kind of shared value a dial-in ticket is in Redis.
const TICKET: &str = "ticket";

/// The label of a shared ticket's seal (see [`PinKey::seal`]).
const TICKET_SEAL: &str = "cluster-ticket";

/// The CA certificates (PEM) in `path`, for `cluster.redis_ca_cert`, checked as every CA file
/// klausur trusts is ([`klausur_client::driver::read_ca_file`]).
fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, String> {
    klausur_client::driver::read_ca_file(path)
        .map(|(pem, _)| pem)
        .map_err(|e| format!("cluster.redis_ca_cert: {e}"))
}

/// How often a join for a meeting whose owner died asks again whether its lease ran out.
const MOVING_POLL: Duration = Duration::from_millis(200);

/// Over how long the joins that waited for a restarted Redis ([`klausur_cluster::Error::Settling`])
/// place their meetings.
const SETTLED_SPREAD: Duration = Duration::from_millis(500);

/// Where a join goes.
#[derive(Debug)]
pub enum Where {
    /// The meeting runs on this node, under this lease, placed or picked up just now (its actor
    /// is started with a keeper of it, [`ClusterNode::keep`]).
    Here(Lease),
    /// The meeting runs on the node at this base URL.
    There(String),
}

/// This node's handle on the cluster.
pub struct ClusterNode {
    cluster: Cluster,
    config: ClusterConfig,
    /// Set by [`ClusterNode::leave`]: no heartbeat is written any more. Held while a heartbeat
    /// is written, so that none lands after the key was deleted.
    leaving: tokio::sync::Mutex<bool>,
    /// Lease keepers running (see [`ClusterNode::wait_released`]).
    keepers: std::sync::atomic::AtomicUsize,
    /// Whether the last heartbeat was written (for monitoring; false before the first one).
    heartbeat_ok: std::sync::atomic::AtomicBool,
    /// Whether the last heartbeat failed (an outage is logged once, and its end).
    failing: std::sync::atomic::AtomicBool,
}

impl ClusterNode {
    /// Connects to the cluster's Redis as node `config.node_id`, announcing `media` (its media
    /// workers' addresses). Fails with a message naming the Redis (never its password).
    pub async fn connect(
        config: &ClusterConfig,
        media: Vec<std::net::SocketAddr>,
    ) -> Result<Arc<Self>, String> {
        let node = Node::new(config.node_id.clone(), config.node_url.clone(), media)
            .map_err(|e| format!("cluster.node_url: {e}"))?;
        let keys = klausur_cluster::Keys::new(config.prefix.clone())
            .map_err(|e| format!("cluster.prefix: {e}"))?;
        let tls_roots = match &config.redis_ca_cert {
            Some(path) => Some(read_ca(path)?),
            None => None,
        };
        let settings = Settings {
            keys,
            timing: config.timing,
            tls_roots,
            settle: true,
        };
        let cluster = Cluster::connect_with(&config.redis_url, node, settings)
            .await
            .map_err(|e| {
                let e = e.to_string();
                let hint = if e.contains("certificate") {
                    " (over rediss://, Redis's certificate must be signed by the CA in \
                     cluster.redis_ca_cert, or by one the system trusts if that is not set)"
                } else {
                    ""
                };
                format!("cannot reach Redis at {}: {e}{hint}", config.redis_summary)
            })?;
        Ok(Arc::new(Self {
            cluster,
            config: config.clone(),
            leaving: tokio::sync::Mutex::new(false),
            keepers: std::sync::atomic::AtomicUsize::new(0),
            heartbeat_ok: std::sync::atomic::AtomicBool::new(false),
            failing: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Refuses to run beside nodes that hold other keys: every node must sign credentials with
    /// the same identity CA (`ca_public_key`, hex) and check phone PINs with the same dial-in
    /// PIN key (`pin_check`: a keyed hash that shows nothing of the key), or members would be
    /// refused after a move and PINs made on one node would not open on another. The first
    /// node to start records both in Redis; a node that differs says which key and stops.
    pub async fn check_same_keys(
        &self,
        ca_public_key: &str,
        pin_check: &str,
    ) -> Result<(), String> {
        let ours = format!("ca={ca_public_key} pin={pin_check}");
        let stored = self
            .cluster
            .agree(&ours)
            .await
            .map_err(|e| format!("cannot reach Redis at {}: {e}", self.config.redis_summary))?;
        if stored == ours {
            return Ok(());
        }
        let field = |text: &str, name: &str| {
            text.split(' ')
                .find_map(|f| f.strip_prefix(name))
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let mut wrong = Vec::new();
        if field(&stored, "ca=") != ca_public_key {
            wrong.push(format!(
                "its identity CA (public key {ca_public_key}) is not the other nodes' (public \
                 key {}): give every node the same identity.ca_key_file (copy identity-ca.key) \
                 or the same remote CA",
                field(&stored, "ca=")
            ));
        }
        if field(&stored, "pin=") != pin_check {
            wrong.push(
                "its dial-in PIN key is not the other nodes': copy dialin-pin.key from the data \
                 directory of the first node"
                    .to_string(),
            );
        }
        Err(format!(
            "this node cannot join the cluster: {}",
            wrong.join("; and ")
        ))
    }

    /// Shares a dial-in call's ticket with the other nodes for its lifetime, under the SHA-256
    /// of the ticket (the ticket itself, the gateway's secret, never reaches Redis): the node
    /// that runs the call's meeting takes its join. A failure is logged; the call can still join
    /// a meeting on this node.
    ///
    /// The record is sealed with the PIN key every node holds (`key`): someone who can write
    /// Redis cannot make a ticket that lets a caller in.
    pub async fn share_ticket(&self, token: &str, ticket: &Ticket, key: &PinKey) {
        let digest = crate::auth::token_hash(token);
        let record = serde_json::json!({
            "v": 1,
            "invitation_id": ticket.invitation_id,
            "meeting_id": ticket.meeting_id,
            "number_suffix": ticket.number_suffix,
        })
        .to_string();
        let value = format!(
            "{} {record}",
            key.seal(TICKET_SEAL, &format!("{digest}:{record}"))
        );
        let shared = self
            .cluster
            .share(TICKET, &digest, &value, TICKET_LIFETIME)
            .await;
        if let Err(e) = shared {
            tracing::warn!("cannot share a dial-in ticket with the other nodes: {e}");
        }
    }

    /// A dial-in ticket another node issued, if it is valid and sealed with `key`.
    pub async fn shared_ticket(&self, token: &str, key: &PinKey) -> Option<Ticket> {
        let digest = crate::auth::token_hash(token);
        let raw = match self.cluster.shared(TICKET, &digest).await {
            Ok(v) => v?,
            Err(e) => {
                tracing::warn!("cannot look up a dial-in ticket in Redis: {e}");
                return None;
            }
        };
        let sealed = raw.split_once(' ').filter(|(seal, record)| {
            let want = key.seal(TICKET_SEAL, &format!("{digest}:{record}"));
            bool::from(subtle::ConstantTimeEq::ct_eq(
                want.as_bytes(),
                seal.as_bytes(),
            ))
        });
        let ticket = sealed
            .and_then(|(_, record)| serde_json::from_str::<serde_json::Value>(record).ok())
            .filter(|v| v["v"] == 1)
            .and_then(|v| {
                Some(Ticket {
                    invitation_id: v["invitation_id"].as_i64()?,
                    meeting_id: v["meeting_id"].as_str()?.to_string(),
                    number_suffix: match &v["number_suffix"] {
                        serde_json::Value::Null => None,
                        s => Some(s.as_str()?.to_string()),
                    },
                })
            });
        if ticket.is_none() {
            tracing::warn!(
                "a dial-in ticket in Redis without this cluster's seal, or not klausur's: refused"
            );
        }
        ticket
    }

    /// Forgets a shared dial-in ticket (the call is over); whether it was there.
    pub async fn void_ticket(&self, token: &str) -> bool {
        self.cluster
            .forget(TICKET, &crate::auth::token_hash(token))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("cannot forget a dial-in ticket in Redis: {e}");
                false
            })
    }

    pub fn node_id(&self) -> &str {
        self.config.node_id.as_str()
    }

    /// Writes the heartbeat with this node's load now and every third of the node TTL, for as
    /// long as the node runs. A failed heartbeat is logged (once per outage) and tried again
    /// at the next tick.
    pub async fn heartbeat_forever(self: Arc<Self>, registry: Registry, media: MediaHandle) {
        let mut tick = tokio::time::interval(self.config.timing.heartbeat_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.beat(&registry, &media).await {
                return;
            }
        }
    }

    /// Writes one heartbeat with this node's load now; false once the node has left.
    async fn beat(&self, registry: &Registry, media: &MediaHandle) -> bool {
        use std::sync::atomic::Ordering;
        let peers: usize = media.worker_stats().await.iter().map(|w| w.peers).sum();
        let load = Load {
            meetings: u32::try_from(registry.running()).unwrap_or(u32::MAX),
            participants: u32::try_from(peers).unwrap_or(u32::MAX),
            capacity: self.config.capacity,
            draining: registry.draining(),
        };
        let leaving = self.leaving.lock().await;
        if *leaving {
            return false;
        }
        let written = self.cluster.heartbeat(load).await;
        drop(leaving);
        self.heartbeat_ok.store(written.is_ok(), Ordering::Relaxed);
        let was_failing = self.failing.swap(written.is_err(), Ordering::AcqRel);
        match written {
            Ok(()) if was_failing => {
                tracing::info!(redis = %self.config.redis_summary, "heartbeat written again");
            }
            Err(e) if !was_failing => {
                tracing::error!(
                    redis = %self.config.redis_summary,
                    "cannot write this node's heartbeat: {e}"
                );
            }
            _ => {}
        }
        true
    }

    /// This node is being taken out of service (`registry` drains: call it after
    /// [`Registry::announce_maintenance`]): writes a heartbeat now that says so, instead of
    /// waiting for the next, so that it gets no new meeting while another node takes them; the
    /// meetings it runs stay.
    pub async fn drain(&self, registry: &Registry, media: &MediaHandle) {
        self.beat(registry, media).await;
    }

    /// Whether this node's last heartbeat reached Redis (false before the first one).
    pub fn heartbeat_ok(&self) -> bool {
        self.heartbeat_ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The meetings whose leases this node keeps now (the meetings running here).
    pub fn leases_kept(&self) -> usize {
        self.keepers.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Removes this node's heartbeat for good (an orderly shutdown): no new meeting is placed
    /// here.
    pub async fn leave(&self) {
        let mut leaving = self.leaving.lock().await;
        *leaving = true;
        if let Err(e) = self.cluster.leave().await {
            tracing::warn!("cannot remove this node's heartbeat: {e}");
        }
    }

    /// Where the join for `meeting_id` goes (see the module docs). Waits while the meeting is
    /// leased to a node that is gone, or Redis has just (re)started, at most the lease TTL and
    /// a second and a half.
    pub async fn place(&self, meeting_id: &str) -> Result<Where, AdmissionError> {
        let meeting = MeetingId::new(meeting_id)
            .map_err(|e| AdmissionError::Internal(format!("meeting id not placeable: {e}")))?;
        let deadline = tokio::time::Instant::now()
            + self.config.timing.lease_ttl()
            + Duration::from_secs(1)
            + SETTLED_SPREAD;
        loop {
            let mut pause = MOVING_POLL;
            match self.cluster.place(&meeting).await {
                Ok(placement) if placement.owner == self.config.node_id => {
                    if let Some(lease) = placement.lease {
                        return Ok(Where::Here(lease));
                    }
                    match self.cluster.adopt(&meeting).await {
                        Ok(Some(lease)) => return Ok(Where::Here(lease)),
                        // The lease changed hands between the two reads: place again.
                        Ok(None) => {}
                        Err(e) => tracing::warn!("cannot pick up a meeting's lease: {e}"),
                    }
                }
                Ok(placement) => {
                    if let Some(node) = placement.node {
                        return Ok(Where::There(node.http_url().to_string()));
                    }
                    // Leased to a node whose heartbeat is gone: it died, and its lease runs
                    // out soon.
                }
                // Redis has just come back: the meeting may run on a node that has not yet
                // taken its lease back; wait for that. The joins waiting meanwhile try again
                // spread over a moment, not all at once, so that each placement sees the ones
                // before it and the meetings spread over the nodes.
                Err(klausur_cluster::Error::Settling { wait, .. }) => {
                    use rand::Rng;
                    pause = wait + rand::thread_rng().gen_range(Duration::ZERO..SETTLED_SPREAD);
                }
                Err(e) => {
                    tracing::warn!(redis = %self.config.redis_summary, "cannot place a meeting: {e}");
                    return Err(AdmissionError::ClusterUnavailable(
                        "the meeting cannot be placed on a node right now (the cluster's Redis \
                         does not answer); try again in a few seconds"
                            .into(),
                    ));
                }
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(AdmissionError::ClusterUnavailable(
                    "the meeting is moving to another node; try again in a few seconds".into(),
                ));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Keeps `lease` while the meeting's actor (`actor`) runs: renews it, releases it when the
    /// actor ends, and ends the meeting on this node when the lease is lost.
    pub fn keep(self: &Arc<Self>, lease: Lease, actor: mpsc::Sender<MeetingCmd>) {
        use std::sync::atomic::Ordering;
        let node = self.clone();
        node.keepers.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            node.keep_lease(lease, actor).await;
            node.keepers.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// At shutdown, after every meeting was told to end: waits (at most `limit`) until their
    /// keepers have released the leases, so the meetings move at once.
    pub async fn wait_released(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.keepers.load(std::sync::atomic::Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn keep_lease(&self, mut lease: Lease, actor: mpsc::Sender<MeetingCmd>) {
        let timing = self.config.timing;
        let mut timer = LeaseTimer::new(timing, lease.sent_at());
        loop {
            match timer.poll(Instant::now()) {
                LeaseAction::Renew => {
                    let result = self.cluster.renew_result(&mut lease).await;
                    if result == RenewResult::TakenOver {
                        // Placed here again under a new lease (after Redis forgot the old one
                        // and another node placed the meeting here): carry on with that one.
                        if let Ok(Some(again)) = self.cluster.adopt(lease.meeting()).await {
                            lease = again;
                            timer = LeaseTimer::new(timing, lease.sent_at());
                            continue;
                        }
                    }
                    if result == RenewResult::Reacquired {
                        tracing::info!("took a meeting's lease back after Redis had lost it");
                    }
                    timer.handle_renew(Instant::now(), result);
                }
                LeaseAction::Wait(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until.into()) => {}
                        () = actor.closed() => {
                            timer.handle_released();
                            if let Err(e) = self.cluster.release(&lease).await {
                                tracing::warn!("cannot release a meeting's lease: {e}");
                            }
                            return;
                        }
                    }
                }
                LeaseAction::Stop(reason) => {
                    if actor.is_closed() {
                        return;
                    }
                    tracing::warn!(
                        ?reason,
                        "this node lost a meeting's lease: ending it here; its participants \
                         join again on the node that holds it"
                    );
                    let _ = actor.send(MeetingCmd::Shutdown).await;
                    return;
                }
            }
        }
    }
}

//! Shared server state handed to every HTTP handler: the wiring of the layers below (store,
//! audit trail, meetings, media, identity, dial-in, limits, live connections).
//!
//! May call every layer below the HTTP layer; the HTTP layer and the top (server, command line)
//! call it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use klausur_store::Store;

use crate::admission::InvitationGuard;
use crate::audit::Audit;
use crate::auth::{LoginLimiter, PasswordPool};
use crate::cluster::ClusterNode;
use crate::config::Config;
use crate::connections::Connections;
use crate::dialin::DialIn;
use crate::identity::{self, IdentityIssuer, IssueLimiter};
use crate::media::MediaHandle;
use crate::meeting::Registry;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub store: Store,
    /// Writes the audit trail ([`crate::audit`]).
    pub audit: Audit,
    pub registry: Registry,
    pub media: MediaHandle,
    pub login_limiter: Mutex<LoginLimiter>,
    /// Who signs identity credentials: the server's own CA key (zeroized on drop) or a remote
    /// CA service.
    pub identity: IdentityIssuer,
    pub guest_credential_limiter: Mutex<IssueLimiter>,
    /// Telephone dial-in: the PIN key, the gateway tokens, tickets and throttle. What a gateway
    /// in this process needs: [`DialIn::gateway_setup`] (the validated `[dialin]`
    /// configuration, this server's own base URL and the in-process gateway token).
    pub dialin: DialIn,
    /// Password hashing and checking, off the async workers ([`PasswordPool`]).
    pub passwords: PasswordPool,
    /// The live meeting WebSockets: per client address and per session ([`Connections`]).
    pub connections: Connections,
    /// This node's place in a cluster (`[cluster]`); `None` for a single node.
    pub cluster: Option<Arc<ClusterNode>>,
    /// The monitoring endpoint's token and counters ([`Metrics`]).
    pub metrics: Metrics,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// The one guard that failed invitation-token lookups count against, wherever a token is
    /// presented (a handle; see `admission::InvitationGuard`).
    pub fn invitation_guard(&self) -> InvitationGuard {
        match self.guest_credential_limiter.lock() {
            Ok(l) => l.invitations(),
            // A panic elsewhere while holding the lock leaves the budgets intact.
            Err(poisoned) => poisoned.into_inner().invitations(),
        }
    }

    /// `identity` is an [`IdentityIssuer`] or a local `IdentityCa`; `dialin` from
    /// [`DialIn::load`] (or [`DialIn::new`] with an in-memory key, in tests).
    pub fn new(
        config: Config,
        store: Store,
        media: MediaHandle,
        identity: impl Into<IdentityIssuer>,
        dialin: DialIn,
    ) -> Self {
        let audit = Audit::new(store.clone());
        let registry = Registry::new(
            media.clone(),
            store.clone(),
            audit.clone(),
            config.turn.clone(),
        );
        let limiter = LoginLimiter::new(
            config.login_attempts_per_15min,
            Duration::from_secs(15 * 60),
        );
        let guest_credential_limiter = identity::guest_limiter(&config);
        let passwords = PasswordPool::new(config.password_workers, config.password_queue);
        let connections = Connections::new(config.max_websockets_per_address);
        AppState {
            inner: Arc::new(Inner {
                config,
                store,
                audit,
                registry,
                media,
                login_limiter: Mutex::new(limiter),
                identity: identity.into(),
                guest_credential_limiter,
                dialin,
                passwords,
                connections,
                cluster: None,
                metrics: Metrics::default(),
            }),
        }
    }

    /// The state of one node of a cluster: [`AppState::new`] with the node's cluster handle.
    pub fn new_in_cluster(
        config: Config,
        store: Store,
        media: MediaHandle,
        identity: impl Into<IdentityIssuer>,
        dialin: DialIn,
        cluster: Arc<ClusterNode>,
    ) -> Self {
        let mut state = Self::new(config, store, media, identity, dialin);
        if let Some(inner) = Arc::get_mut(&mut state.inner) {
            inner.cluster = Some(cluster);
        }
        state
    }
}

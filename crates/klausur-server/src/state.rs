//! Shared server state handed to every HTTP handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use klausur_store::Store;

use crate::auth::LoginLimiter;
use crate::config::Config;
use crate::media::MediaHandle;
use crate::meeting::Registry;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub registry: Registry,
    pub media: MediaHandle,
    pub login_limiter: Mutex<LoginLimiter>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    pub fn new(config: Config, store: Store, media: MediaHandle) -> Self {
        let registry = Registry::new(media.clone(), store.clone());
        let limiter = LoginLimiter::new(
            config.login_attempts_per_15min,
            Duration::from_secs(15 * 60),
        );
        AppState {
            inner: Arc::new(Inner {
                config,
                store,
                registry,
                media,
                login_limiter: Mutex::new(limiter),
            }),
        }
    }
}

//! Passwords, session and invitation tokens, login rate limiting.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults, OWASP-recommended
//! parameters). Session and invitation tokens are 256 random bits; only their SHA-256 is
//! stored, so a copy of the database does not let anyone log in or join.
//!
//! argon2 costs tens of milliseconds of a core by design. The server never runs it on the
//! async worker threads, where it would hold up signaling for everyone (144 logins per second
//! once delayed a WebSocket ping to 121 ms): [`PasswordPool`] runs it on tokio's blocking pool,
//! at most one job per core at once, with a bounded queue in front, so a flood of logins waits
//! its turn, and beyond the queue is answered "busy, try again" instead of waiting without end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Minimum length of a new password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;

pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks `password` against a stored hash; a malformed hash counts as a mismatch.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A dummy verification so that an unknown user name costs the same time as a wrong password.
pub fn burn_password_time(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("klausur-timing-equaliser").unwrap_or_default());
    let _ = verify_password(password, hash);
}

/// Runs password work (argon2: [`hash_password`], [`verify_password`],
/// [`burn_password_time`]) on tokio's blocking pool: at most `workers` jobs at once (a
/// semaphore), at most `queue` more waiting for one; a job beyond that is refused with
/// [`PoolError::Busy`] at once. A job whose caller went away still finishes (and holds its
/// place until then), so a flood cannot get more than `workers` cores by dropping requests.
#[derive(Debug, Clone)]
pub struct PasswordPool {
    permits: Arc<tokio::sync::Semaphore>,
    queue: usize,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

/// Why password work did not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// Every worker is busy and the queue is full.
    #[error("the server is busy checking passwords; try again in a moment")]
    Busy,
    /// The job panicked or the runtime is shutting down.
    #[error("password work failed")]
    Failed,
}

/// Counts itself in a counter while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PasswordPool {
    /// `workers` jobs at once (at least one), `queue` waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        PasswordPool {
            permits: Arc::new(tokio::sync::Semaphore::new(workers.max(1))),
            queue,
            waiting: Arc::new(AtomicUsize::new(0)),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Jobs waiting for a worker now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Runs `job` on the blocking pool when a worker is free; waits in the queue for one, or
    /// is refused with [`PoolError::Busy`] when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(PoolError::Failed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Take a place in the queue, if there is one (checked and taken at once).
                let taken = self
                    .waiting
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < self.queue).then_some(n + 1)
                    });
                if taken.is_err() {
                    return Err(PoolError::Busy);
                }
                let place = Counted(self.waiting.clone());
                let permit = self.permits.clone().acquire_owned().await;
                drop(place);
                permit.map_err(|_| PoolError::Failed)?
            }
        };
        let running = Counted::new(&self.running);
        tokio::task::spawn_blocking(move || {
            let out = job();
            drop((permit, running));
            out
        })
        .await
        .map_err(|_| PoolError::Failed)
    }

    /// [`hash_password`] on the pool.
    pub async fn hash(&self, password: &str) -> Result<String, PoolError> {
        let password = Zeroizing::new(password.to_string());
        self.run(move || hash_password(&password))
            .await?
            .map_err(|e| {
                tracing::error!("password hashing failed: {e}");
                PoolError::Failed
            })
    }

    /// [`verify_password`] on the pool.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, PoolError> {
        let password = Zeroizing::new(password.to_string());
        let hash = hash.to_string();
        self.run(move || verify_password(&password, &hash)).await
    }

    /// [`burn_password_time`] on the pool.
    pub async fn burn(&self, password: &str) -> Result<(), PoolError> {
        let password = Zeroizing::new(password.to_string());
        self.run(move || burn_password_time(&password)).await
    }
}

/// A new random token (256 bits, URL-safe base64 without padding).
pub fn new_token() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// A readable one-time password for the first administrator.
pub fn new_one_time_password() -> Zeroizing<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Zeroizing::new(
        bytes
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect(),
    )
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(token_digest(token))
}

/// The SHA-256 digest a secret token (a service's bearer token) is kept and compared as.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` is the token whose digest is `expected`, in constant time in the
/// token's content.
pub fn token_matches(expected: &[u8; 32], presented: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(expected.ct_eq(&token_digest(presented)))
}

/// The token of an `Authorization` header value `Bearer <token>`, trimmed; `None` for any other
/// value or none.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization?.strip_prefix("Bearer ").map(str::trim)
}

/// A short random id for meetings (unguessable enough to not be enumerable: 80 bits).
pub fn new_meeting_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Counts failed password checks in a window, per account *and* address (`user:<name>|<ip>`)
/// and per address (`ip:<ip>`), so that guesses from one address end there: nobody can lock an
/// account for its owner from somewhere else (the owner's own address stays open), and one
/// address cannot spray guesses over many accounts.
///
/// An attempt is counted when it begins ([`LoginLimiter::begin`], which refuses when a key is
/// at its limit), not when the slow password check has failed: so concurrent guesses cannot
/// slip past the limit while earlier ones are still being checked. A success takes its
/// attempt back ([`LoginLimiter::succeeded`]) and clears the account-and-address count.
///
/// The map is bounded ([`LoginLimiter::MAX_KEYS`]): beyond it, the entries whose window began
/// first are forgotten, so invented user names cannot grow memory without end.
#[derive(Debug)]
pub struct LoginLimiter {
    max: u32,
    window: Duration,
    failures: HashMap<String, (u32, Instant)>,
}

/// The keys of one password check: the account at this address, and the address.
pub fn login_keys(username: &str, ip: std::net::IpAddr) -> Vec<String> {
    vec![format!("user:{username}|{ip}"), format!("ip:{ip}")]
}

impl LoginLimiter {
    /// Keys kept at most.
    pub const MAX_KEYS: usize = 100_000;

    pub fn new(max_per_window: u32, window: Duration) -> Self {
        LoginLimiter {
            max: max_per_window,
            window,
            failures: HashMap::new(),
        }
    }

    /// Keys starting with `ip:` allow ten times as many failures: many people can share one
    /// address (an office behind NAT), while an account at one address is protected tightly.
    fn limit_for(&self, key: &str) -> u32 {
        if key.starts_with("ip:") {
            self.max.saturating_mul(10)
        } else {
            self.max
        }
    }

    /// Begins an attempt for these keys at `now`: counts it and returns true, or returns false
    /// (and counts nothing) when a key is at its limit.
    pub fn begin(&mut self, now: Instant, keys: &[String]) -> bool {
        let window = self.window;
        let expired = |start: &Instant| now.duration_since(*start) >= window;
        let allowed = keys.iter().all(|k| {
            self.failures
                .get(k)
                .is_none_or(|(count, start)| expired(start) || *count < self.limit_for(k))
        });
        if allowed {
            for k in keys {
                let e = self.failures.entry(k.clone()).or_insert((0, now));
                if expired(&e.1) {
                    *e = (0, now);
                }
                e.0 += 1;
            }
            self.bound(now);
        }
        allowed
    }

    /// The attempt begun for these keys succeeded: the account at this address starts afresh,
    /// and the address gets its attempt back.
    pub fn succeeded(&mut self, keys: &[String]) {
        for k in keys {
            if k.starts_with("ip:") {
                if let Some(e) = self.failures.get_mut(k) {
                    e.0 = e.0.saturating_sub(1);
                }
            } else {
                self.failures.remove(k);
            }
        }
    }

    /// The attempt begun for these keys was not made after all (the server was too busy to
    /// check the password): each key gets it back.
    pub fn abandoned(&mut self, keys: &[String]) {
        for k in keys {
            if let Some(e) = self.failures.get_mut(k) {
                e.0 = e.0.saturating_sub(1);
            }
        }
    }

    /// Keys currently held (expired ones included until the map is pruned).
    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    /// Keeps the map within [`LoginLimiter::MAX_KEYS`]: expired entries go first, then the
    /// oldest tenth (so a flood of invented names sorts once per ten thousand, not every time).
    fn bound(&mut self, now: Instant) {
        if self.failures.len() <= Self::MAX_KEYS {
            return;
        }
        let window = self.window;
        self.failures
            .retain(|_, (_, start)| now.duration_since(*start) < window);
        if self.failures.len() <= Self::MAX_KEYS * 9 / 10 {
            return;
        }
        let mut starts: Vec<Instant> = self.failures.values().map(|(_, s)| *s).collect();
        starts.sort_unstable();
        if let Some(cut) = starts
            .get(self.failures.len() - Self::MAX_KEYS * 9 / 10)
            .copied()
        {
            self.failures.retain(|_, (_, s)| *s >= cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_hash() {
        let hash: [u8; 32] = Sha256::digest(b"correct-token").into();
        assert!(token_matches(&hash, "correct-token"));
        assert!(!token_matches(&hash, "correct-tokeN"));
        assert!(!token_matches(&hash, ""));
    }

    #[test]
    fn only_a_bearer_header_holds_a_token() {
        assert_eq!(bearer(Some("Bearer abc ")), Some("abc"));
        assert_eq!(bearer(Some("Bearer ")), Some(""));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("abc")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn password_roundtrip_and_mismatch() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token();
        let b = new_token();
        assert_ne!(*a, *b);
        assert_eq!(a.len(), 43); // 256 bits
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(new_meeting_id().len(), 16);
    }

    #[test]
    fn limiter_counts_per_account_and_address_and_per_address() {
        let mut l = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let a: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        let b: std::net::IpAddr = "10.0.0.2".parse().expect("ip");
        let ada_a = login_keys("ada", a);
        for _ in 0..3 {
            assert!(l.begin(t0, &ada_a));
        }
        assert!(!l.begin(t0, &ada_a), "ada from a: locked");
        assert!(l.begin(t0, &login_keys("ada", b)), "ada from b: open");
        assert!(l.begin(t0, &login_keys("bob", a)), "bob from a: open");
        assert!(
            l.begin(t0 + Duration::from_secs(61), &ada_a),
            "the window ends"
        );
        // A success clears the account at this address and gives the address its attempt back.
        let mut l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            assert!(l.begin(t0, &ada_a));
        }
        l.succeeded(&ada_a);
        for _ in 0..3 {
            assert!(l.begin(t0, &ada_a));
        }
        // One address: ten times the limit over all accounts.
        let mut l = LoginLimiter::new(3, Duration::from_secs(60));
        let mut allowed = 0;
        for n in 0..100 {
            if l.begin(t0, &login_keys(&format!("user{n}"), a)) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 30);
    }

    #[test]
    fn an_abandoned_attempt_is_given_back() {
        let mut l = LoginLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        let keys = login_keys("ada", "10.0.0.1".parse().expect("ip"));
        assert!(l.begin(t0, &keys));
        l.abandoned(&keys);
        assert!(l.begin(t0, &keys));
        assert!(l.begin(t0, &keys));
        assert!(!l.begin(t0, &keys), "two real attempts use the limit");
    }

    /// Waits (bounded) until `cond` holds.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen within 5 s");
    }

    #[tokio::test]
    async fn the_pool_runs_its_workers_queues_the_next_and_refuses_beyond() {
        let pool = PasswordPool::new(1, 1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let holder = tokio::spawn(async move { p.run(move || held.recv().is_ok()).await });
        eventually("the first job runs", || pool.running() == 1).await;
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.run(|| 7).await });
        eventually("the second job waits", || pool.waiting() == 1).await;
        assert_eq!(
            pool.run(|| 8).await,
            Err(PoolError::Busy),
            "the queue is full"
        );
        release.send(()).expect("release");
        assert_eq!(holder.await.expect("task"), Ok(true));
        assert_eq!(queued.await.expect("task"), Ok(7));
        assert_eq!((pool.running(), pool.waiting()), (0, 0));
        // Free again: a job runs at once.
        assert_eq!(pool.run(|| 9).await, Ok(9));
        let h = pool.hash("correct horse battery").await.expect("hash");
        assert_eq!(pool.verify("correct horse battery", &h).await, Ok(true));
        assert_eq!(pool.verify("correct horse batterx", &h).await, Ok(false));
        assert_eq!(pool.burn("x").await, Ok(()));
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_leaves_the_queue() {
        let pool = PasswordPool::new(1, 1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let holder = tokio::spawn(async move { p.run(move || held.recv().is_ok()).await });
        eventually("the first job runs", || pool.running() == 1).await;
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.run(|| 7).await });
        eventually("the second job waits", || pool.waiting() == 1).await;
        queued.abort();
        eventually("the queue empties", || pool.waiting() == 0).await;
        release.send(()).expect("release");
        assert_eq!(holder.await.expect("task"), Ok(true));
    }

    #[test]
    fn limiter_memory_is_bounded() {
        let mut l = LoginLimiter::new(10, Duration::from_secs(900));
        let t0 = Instant::now();
        for n in 0..(LoginLimiter::MAX_KEYS + 5_000) as u32 {
            let ip = std::net::IpAddr::from(n.to_be_bytes());
            l.begin(
                t0 + Duration::from_micros(u64::from(n)),
                &login_keys("x", ip),
            );
        }
        assert!(l.len() <= LoginLimiter::MAX_KEYS, "{}", l.len());
    }
}

//! Rate limits, sans-IO: token buckets per source address, with time as an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// A token bucket: `capacity` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(capacity: u32, per_second: f64, now: Duration) -> TokenBucket {
        let capacity = f64::from(capacity.max(1));
        TokenBucket {
            capacity,
            per_second: per_second.max(0.0),
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Takes a token: `Ok(())`, or `Err(wait)` with the time until one is there.
    pub fn take(&mut self, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.per_second > 0.0 {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    /// Whether the bucket is full again (it can be forgotten).
    fn is_full(&mut self, now: Duration) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// One token bucket per source IP address, forgetting buckets that refilled.
#[derive(Debug)]
pub struct PerSourceLimiter {
    capacity: u32,
    per_second: f64,
    buckets: HashMap<IpAddr, TokenBucket>,
    last_sweep: Duration,
    max_sources: usize,
}

impl PerSourceLimiter {
    /// `capacity` is the burst, `per_second` the sustained rate per source; at most
    /// `max_sources` addresses are tracked (beyond that, unknown sources are refused until
    /// buckets refill and are forgotten).
    pub fn new(capacity: u32, per_second: f64, max_sources: usize) -> PerSourceLimiter {
        PerSourceLimiter {
            capacity,
            per_second,
            buckets: HashMap::new(),
            last_sweep: Duration::ZERO,
            max_sources: max_sources.max(1),
        }
    }

    /// Takes a token for `source`: `Ok(())` or `Err(wait)`.
    pub fn take(&mut self, source: IpAddr, now: Duration) -> Result<(), Duration> {
        if now.saturating_sub(self.last_sweep) >= Duration::from_secs(10) {
            self.last_sweep = now;
            self.buckets.retain(|_, b| !b.is_full(now));
        }
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            return Err(Duration::from_secs(10));
        }
        let (capacity, per_second) = (self.capacity, self.per_second);
        self.buckets
            .entry(source)
            .or_insert_with(|| TokenBucket::new(capacity, per_second, now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(3, 0.5, s(0.0));
        assert!(b.take(s(0.0)).is_ok());
        assert!(b.take(s(0.0)).is_ok());
        assert!(b.take(s(0.0)).is_ok());
        let wait = b.take(s(0.0)).expect_err("empty");
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-6);
        assert!(b.take(s(1.0)).is_err());
        assert!(b.take(s(2.0)).is_ok());
        assert!(b.take(s(2.0)).is_err());
        // Time going backwards does not add tokens.
        assert!(b.take(s(1.0)).is_err());
    }

    #[test]
    fn per_source_is_separate_and_bounded() {
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let c: IpAddr = "192.0.2.3".parse().expect("ip");
        let mut l = PerSourceLimiter::new(1, 1.0, 2);
        assert!(l.take(a, s(0.0)).is_ok());
        assert!(l.take(a, s(0.0)).is_err());
        assert!(l.take(b, s(0.0)).is_ok());
        // A third source does not fit while the others are tracked...
        assert!(l.take(c, s(0.5)).is_err());
        // ...but does once their buckets refilled and were swept.
        assert!(l.take(c, s(20.0)).is_ok());
        assert!(l.take(a, s(20.0)).is_ok());
    }
}

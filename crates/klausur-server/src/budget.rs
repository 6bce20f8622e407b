//! Per-address budgets: how many events (guest credentials, failed lookups) one client
//! address may cause in a window. Sans-IO: the caller passes the time. Used by admission (failed
//! invitation lookups) and by the identity routes (guest credentials).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Counts events per client address in fixed windows: at most `max` per address and window.
/// IPv6 addresses count per /64 (one household or host usually has a whole /64). Sans-IO: the
/// caller passes the time.
#[derive(Debug)]
pub struct AddressBudget {
    max: u32,
    window: Duration,
    counts: HashMap<IpAddr, (u32, Instant)>,
}

/// More distinct addresses than this in one window are refused rather than remembered.
const LIMITER_MAX_ADDRESSES: usize = 100_000;

impl AddressBudget {
    pub fn new(max_per_window: u32, window: Duration) -> Self {
        AddressBudget {
            max: max_per_window,
            window,
            counts: HashMap::new(),
        }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }

    /// Counts one event for `ip`; false (and not counted) if its budget for the window is spent.
    pub fn try_take(&mut self, now: Instant, ip: IpAddr) -> bool {
        let window = self.window;
        self.counts
            .retain(|_, (_, start)| now.duration_since(*start) < window);
        let key = Self::key(ip);
        if !self.counts.contains_key(&key) && self.counts.len() >= LIMITER_MAX_ADDRESSES {
            return false;
        }
        let entry = self.counts.entry(key).or_insert((0, now));
        if entry.0 >= self.max {
            return false;
        }
        entry.0 += 1;
        true
    }
}

//! RTP ports from the configured range: an even port for RTP and the odd one above it for
//! RTCP (RFC 3550 11), both bound on the RTP address; released when the [`RtpPort`] drops.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// Errors of the RTP port allocator.
#[derive(Debug, thiserror::Error)]
pub enum RtpPortError {
    #[error("the RTP port range {0:?} holds no even port with its odd neighbour")]
    InvalidRange(RangeInclusive<u16>),
    #[error("no free RTP port pair in {0:?}")]
    Exhausted(RangeInclusive<u16>),
    #[error("RTP socket: {0}")]
    Io(#[from] io::Error),
}

struct Inner {
    ip: IpAddr,
    first: u16,
    last: u16,
    state: Mutex<AllocState>,
}

struct AllocState {
    in_use: BTreeSet<u16>,
    next: u16,
}

/// Hands out RTP/RTCP socket pairs. Cheap to clone.
#[derive(Clone)]
pub struct RtpPortAllocator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RtpPortAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RtpPortAllocator({}:{}-{})",
            self.inner.ip, self.inner.first, self.inner.last
        )
    }
}

impl RtpPortAllocator {
    /// An allocator for even ports in `ports` (the odd port above each is its RTCP port) on
    /// `ip`.
    pub fn new(ip: IpAddr, ports: RangeInclusive<u16>) -> Result<RtpPortAllocator, RtpPortError> {
        let first = ports.start().saturating_add(ports.start() % 2);
        let last = *ports.end();
        if first == 0 || first >= last {
            return Err(RtpPortError::InvalidRange(ports));
        }
        Ok(RtpPortAllocator {
            inner: Arc::new(Inner {
                ip,
                first,
                last,
                state: Mutex::new(AllocState {
                    in_use: BTreeSet::new(),
                    next: first,
                }),
            }),
        })
    }

    /// The address RTP sockets are bound on.
    pub fn ip(&self) -> IpAddr {
        self.inner.ip
    }

    /// Port pairs handed out and not yet dropped.
    pub fn in_use(&self) -> usize {
        self.inner.state.lock().map(|s| s.in_use.len()).unwrap_or(0)
    }

    /// Binds the next free pair, round robin through the range (ports in use by others are
    /// skipped). Needs a tokio runtime.
    pub fn allocate(&self) -> Result<RtpPort, RtpPortError> {
        let inner = &self.inner;
        let range = inner.first..=inner.last;
        let pairs = usize::from((inner.last - inner.first).div_ceil(2));
        let mut state = inner
            .state
            .lock()
            .map_err(|_| RtpPortError::Exhausted(range.clone()))?;
        for _ in 0..pairs {
            let port = state.next;
            state.next = match port.checked_add(2) {
                Some(next) if next < inner.last => next,
                _ => inner.first,
            };
            if state.in_use.contains(&port) {
                continue;
            }
            let Some(rtcp_port) = port.checked_add(1) else {
                continue;
            };
            let Ok(rtp) = bind(SocketAddr::new(inner.ip, port)) else {
                continue;
            };
            let Ok(rtcp) = bind(SocketAddr::new(inner.ip, rtcp_port)) else {
                continue;
            };
            state.in_use.insert(port);
            return Ok(RtpPort {
                rtp: UdpSocket::from_std(rtp)?,
                rtcp: UdpSocket::from_std(rtcp)?,
                addr: SocketAddr::new(inner.ip, port),
                allocator: self.inner.clone(),
            });
        }
        Err(RtpPortError::Exhausted(range))
    }
}

fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A bound RTP/RTCP socket pair; the ports return to the allocator on drop.
pub struct RtpPort {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    addr: SocketAddr,
    allocator: Arc<Inner>,
}

impl std::fmt::Debug for RtpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtpPort({})", self.addr)
    }
}

impl RtpPort {
    /// The RTP address (what goes into our SDP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The RTP socket (even port).
    pub fn rtp(&self) -> &UdpSocket {
        &self.rtp
    }

    /// The RTCP socket (the odd port above).
    pub fn rtcp(&self) -> &UdpSocket {
        &self.rtcp
    }
}

impl Drop for RtpPort {
    fn drop(&mut self) {
        if let Ok(mut state) = self.allocator.state.lock() {
            state.in_use.remove(&self.addr.port());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_even_base() -> u16 {
        // Find four consecutive free ports starting at an even one.
        for _ in 0..50 {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let port = probe.local_addr().expect("addr").port();
            drop(probe);
            let base = port - port % 2;
            if base > 1024 && base < 65000 {
                return base;
            }
        }
        40_000
    }

    #[tokio::test]
    async fn allocates_even_pairs_and_releases() {
        let base = free_even_base();
        let alloc = RtpPortAllocator::new("127.0.0.1".parse().expect("ip"), base..=base + 3)
            .expect("range");
        let a = alloc.allocate().expect("first pair");
        let b = alloc.allocate().expect("second pair");
        assert_eq!(a.local_addr().port() % 2, 0);
        assert_eq!(b.local_addr().port() % 2, 0);
        assert_ne!(a.local_addr(), b.local_addr());
        assert_eq!(
            a.rtcp().local_addr().expect("rtcp").port(),
            a.local_addr().port() + 1
        );
        assert_eq!(alloc.in_use(), 2);
        assert!(matches!(alloc.allocate(), Err(RtpPortError::Exhausted(_))));
        let freed = a.local_addr();
        drop(a);
        assert_eq!(alloc.in_use(), 1);
        let c = alloc.allocate().expect("freed pair again");
        assert_eq!(c.local_addr(), freed);
        drop((b, c));
        assert_eq!(alloc.in_use(), 0);
    }

    #[test]
    fn rejects_ranges_without_a_pair() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(RtpPortAllocator::new(ip, 20001..=20001).is_err());
        assert!(RtpPortAllocator::new(ip, 20000..=20000).is_err());
        assert!(RtpPortAllocator::new(ip, 0..=1).is_err());
        assert!(RtpPortAllocator::new(ip, 20001..=20003).is_ok());
    }
}

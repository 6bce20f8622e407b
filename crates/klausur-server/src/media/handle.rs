//! The handle the signaling side talks to the media workers through: it starts them, places
//! each room on the least-loaded one, and sends every command of a room to the worker that
//! owns it (a command channel plus an eventfd per worker). Nothing here is on the packet path.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use klausur_proto::SendSource;
use klausur_room::{Answer, PeerId, RoomConfig};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::oneshot;

use super::cmd::{Load, MediaCmd, MediaStats, RoomKey};
use super::{socket, worker};

/// Most media workers (`media.workers`).
pub const MAX_WORKERS: usize = 64;

/// How the media plane is set up (`[media]` of the configuration).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The first worker's address; worker `i` listens on the port after it by `i` (with
    /// port 0, each worker on a free port of its own).
    pub listen: SocketAddr,
    /// The address announced as host candidate (with each worker's port).
    pub public_ip: IpAddr,
    /// An IPv6 address announced beside an IPv4 `public_ip` (dual stack: `listen` on `[::]`).
    pub public_ipv6: Option<IpAddr>,
    /// ICE-TCP: each worker also listens on TCP on its UDP port number.
    pub tcp: bool,
    /// Media workers (threads, each with its own port): 1 to [`MAX_WORKERS`].
    pub workers: usize,
    /// Every room's configuration.
    pub room: RoomConfig,
}

impl MediaConfig {
    /// One worker on `listen`, the rooms' default configuration.
    pub fn single(listen: SocketAddr, public_ip: IpAddr, tcp: bool) -> Self {
        MediaConfig {
            listen,
            public_ip,
            public_ipv6: None,
            tcp,
            workers: 1,
            room: RoomConfig::default(),
        }
    }
}

/// The signaling side's handle on the media workers.
#[derive(Clone)]
pub struct MediaHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    workers: Vec<WorkerLink>,
    /// Which worker each open room is placed on.
    placement: Mutex<HashMap<RoomKey, usize>>,
}

/// The handle's side of one worker.
struct WorkerLink {
    /// Taken in `drop`, so the worker sees the channel closed when woken.
    tx: Option<std::sync::mpsc::Sender<MediaCmd>>,
    wake: Arc<EventFd>,
    load: Arc<Load>,
    /// The worker's UDP address.
    addr: SocketAddr,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // The last handle is gone: wake each worker so it sees the closed channel and stops.
        for link in &mut self.workers {
            drop(link.tx.take());
            let _ = link.wake.write(1);
        }
    }
}

/// The worker for a new room: the one with the fewest peers, then the fewest rooms, then the
/// first. `load` holds each worker's (peers, rooms).
pub(super) fn least_loaded(load: &[(usize, usize)]) -> usize {
    load.iter()
        .enumerate()
        .min_by_key(|(i, l)| (l.0, l.1, *i))
        .map_or(0, |(i, _)| i)
}

impl MediaHandle {
    pub fn send(&self, cmd: MediaCmd) {
        let Some(room) = cmd.room() else {
            // Commands for every worker go through `stats`.
            return;
        };
        let at = {
            let mut placement = self
                .inner
                .placement
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match &cmd {
                MediaCmd::OpenRoom { .. } => {
                    let mut load: Vec<(usize, usize)> = self
                        .inner
                        .workers
                        .iter()
                        .map(|w| (w.load.peers.load(Ordering::Relaxed), 0))
                        .collect();
                    for &w in placement.values() {
                        if let Some(l) = load.get_mut(w) {
                            l.1 += 1;
                        }
                    }
                    let at = least_loaded(&load);
                    placement.insert(room, at);
                    at
                }
                MediaCmd::CloseRoom { .. } => placement.remove(&room).unwrap_or(0),
                // A room never opened: the first worker answers that it is not open.
                _ => placement.get(&room).copied().unwrap_or(0),
            }
        };
        self.send_to(at, cmd);
    }

    fn send_to(&self, worker: usize, cmd: MediaCmd) {
        let Some(link) = self.inner.workers.get(worker) else {
            return;
        };
        // A worker only stops at shutdown; a lost command then does not matter.
        if let Some(tx) = &link.tx {
            if tx.send(cmd).is_ok() {
                let _ = link.wake.write(1);
            }
        }
    }

    pub async fn add_peer(&self, room: RoomKey, peer: PeerId) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.send(MediaCmd::AddPeer { room, peer, reply });
        rx.await.map_err(|_| "media worker stopped".to_string())?
    }

    /// Parses the offer on the blocking pool (most of an offer's cost, kept off the threads
    /// that forward media), then has the room's worker accept it.
    pub async fn offer(
        &self,
        room: RoomKey,
        peer: PeerId,
        sdp: String,
        sources: Vec<SendSource>,
    ) -> Result<Answer, String> {
        let offer = tokio::task::spawn_blocking(move || klausur_room::parse_offer(&sdp))
            .await
            .map_err(|_| "the offer could not be parsed".to_string())?
            .map_err(|e| e.to_string())?;
        let (reply, rx) = oneshot::channel();
        self.send(MediaCmd::Offer {
            room,
            peer,
            offer,
            sources,
            reply,
        });
        rx.await.map_err(|_| "media worker stopped".to_string())?
    }

    /// Each worker's counters, in worker order (a worker that does not answer counts zeros).
    pub async fn worker_stats(&self) -> Vec<MediaStats> {
        let mut replies = Vec::with_capacity(self.inner.workers.len());
        for i in 0..self.inner.workers.len() {
            let (reply, rx) = oneshot::channel();
            self.send_to(i, MediaCmd::Stats { reply });
            replies.push(rx);
        }
        let mut stats = Vec::with_capacity(replies.len());
        for rx in replies {
            stats.push(rx.await.unwrap_or_default());
        }
        stats
    }

    /// The counters summed over all workers.
    pub async fn stats(&self) -> MediaStats {
        MediaStats::total(&self.worker_stats().await)
    }

    /// The workers' UDP addresses, in worker order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.inner.workers.iter().map(|w| w.addr).collect()
    }

    /// The worker a room is placed on (`None`: not open).
    pub fn worker_of(&self, room: RoomKey) -> Option<usize> {
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&room)
            .copied()
    }
}

/// Binds every worker's sockets and starts the workers (threads `klausur-media-<i>`).
/// Returns the handle and the workers' UDP addresses. Nothing is started unless every worker's
/// sockets could be bound.
pub async fn start(config: MediaConfig) -> std::io::Result<(MediaHandle, Vec<SocketAddr>)> {
    let workers = config.workers;
    if workers == 0 || workers > MAX_WORKERS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("media workers must be 1 to {MAX_WORKERS}, not {workers}"),
        ));
    }
    let mut bound = Vec::with_capacity(workers);
    for i in 0..workers {
        let listen = if config.listen.port() == 0 {
            config.listen
        } else {
            let port = u16::try_from(usize::from(config.listen.port()) + i).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{workers} media workers need the ports {} to {}: beyond 65535",
                        config.listen.port(),
                        usize::from(config.listen.port()) + workers - 1
                    ),
                )
            })?;
            SocketAddr::new(config.listen.ip(), port)
        };
        let b = socket::open(listen, config.tcp).map_err(|e| {
            std::io::Error::new(e.kind(), format!("media worker {i} on {listen}: {e}"))
        })?;
        bound.push(b);
    }
    let mut links = Vec::with_capacity(workers);
    for (index, b) in bound.into_iter().enumerate() {
        let addr = b.socket.local_addr()?;
        let wake = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(std::io::Error::from)?,
        );
        let load = Arc::new(Load::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let setup = worker::Setup {
            index,
            room_config: config.room.clone(),
            bound: b,
            candidate: SocketAddr::new(config.public_ip, addr.port()),
            candidate6: config
                .public_ipv6
                .map(|ip| SocketAddr::new(ip, addr.port())),
            wake: wake.clone(),
            load: load.clone(),
        };
        std::thread::Builder::new()
            .name(format!("klausur-media-{index}"))
            .spawn(move || worker::supervise(setup, rx))?;
        links.push(WorkerLink {
            tx: Some(tx),
            wake,
            load,
            addr,
        });
    }
    let addrs = links.iter().map(|l| l.addr).collect();
    let handle = MediaHandle {
        inner: Arc::new(HandleInner {
            workers: links,
            placement: Mutex::new(HashMap::new()),
        }),
    };
    Ok((handle, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_goes_to_the_worker_with_the_fewest_peers_then_rooms() {
        assert_eq!(least_loaded(&[(0, 0)]), 0);
        assert_eq!(least_loaded(&[(0, 0), (0, 0)]), 0);
        assert_eq!(least_loaded(&[(0, 1), (0, 0)]), 1);
        assert_eq!(least_loaded(&[(3, 1), (2, 5)]), 1);
        assert_eq!(least_loaded(&[(2, 1), (2, 5), (2, 1)]), 0);
        assert_eq!(least_loaded(&[]), 0);
    }
}

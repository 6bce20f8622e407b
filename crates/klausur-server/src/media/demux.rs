//! The demultiplexer of a media worker: which room and peer a packet belongs to.
//!
//! A new peer's first packet is a STUN binding request whose USERNAME starts with the local
//! ICE ufrag the room core handed out; after that the remote address (or the ICE-TCP
//! connection) is known. The route of an address is learned only from a request whose
//! integrity verified with the peer's ICE password (the worker asks the room, then calls
//! [`Routes::learn`]): the ICE username travels in the clear, and a forged request must not
//! make the worker hand that source's packets to the peer.
//!
//! Plain maps, no I/O and no time: each worker owns one for the rooms placed on it.

use std::collections::HashMap;
use std::net::SocketAddr;

use klausur_room::PeerId;

use super::cmd::RoomKey;

/// A room and one of its peers.
pub(super) type Route = (RoomKey, PeerId);

/// Where a packet goes ([`Routes::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Target {
    pub route: Route,
    /// A STUN request naming this peer from a source not yet known as the peer's: if its
    /// integrity verifies, the source becomes the peer's ([`Routes::learn`]).
    pub may_learn: bool,
}

/// The routes of one worker's peers.
#[derive(Default)]
pub(super) struct Routes {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, Route>,
    ufrag_of: HashMap<Route, String>,
}

impl Routes {
    /// A peer added to a room, with the local ICE ufrag the room handed out for it.
    pub fn add_peer(&mut self, route: Route, ufrag: String) {
        self.by_ufrag.insert(ufrag.clone(), route);
        self.ufrag_of.insert(route, ufrag);
    }

    /// The route a UDP datagram from `source` has so far.
    pub fn of_address(&self, source: &SocketAddr) -> Option<Route> {
        self.by_addr.get(source).copied()
    }

    /// Where a packet whose source's route so far is `known` goes: a STUN binding request by
    /// its ICE username (cheap to rule out for RTP: the first two bytes differ), everything
    /// else by `known`. `None`: nobody's.
    pub fn target(&self, contents: &[u8], known: Option<Route>) -> Option<Target> {
        match klausur_room::stun_local_ufrag(contents) {
            Some(ufrag) => self.by_ufrag.get(&ufrag).map(|&route| Target {
                route,
                may_learn: known != Some(route),
            }),
            None => known.map(|route| Target {
                route,
                may_learn: false,
            }),
        }
    }

    /// `source`'s UDP datagrams belong to `route` from now on (its request verified).
    pub fn learn(&mut self, source: SocketAddr, route: Route) {
        self.by_addr.insert(source, route);
    }

    /// Forgets a peer's ufrag and addresses.
    pub fn forget_peer(&mut self, route: Route) {
        if let Some(ufrag) = self.ufrag_of.remove(&route) {
            self.by_ufrag.remove(&ufrag);
        }
        self.by_addr.retain(|_, r| *r != route);
    }

    /// Forgets every peer of a room.
    pub fn forget_room(&mut self, room: RoomKey) {
        self.by_addr.retain(|_, (k, _)| *k != room);
        self.by_ufrag.retain(|_, (k, _)| *k != room);
        self.ufrag_of.retain(|(k, _), _| *k != room);
    }

    /// The peers of a room that have routes.
    pub fn peers_of(&self, room: RoomKey) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .ufrag_of
            .keys()
            .filter(|(k, _)| *k == room)
            .map(|(_, p)| *p)
            .collect();
        peers.sort_unstable();
        peers
    }

    /// Peers with routes, over all rooms.
    pub fn peer_count(&self) -> usize {
        self.ufrag_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request whose USERNAME is `username` (no integrity: the room checks
    /// that, not the demultiplexer).
    fn binding_request(username: &str) -> Vec<u8> {
        let name = username.as_bytes();
        let padded = name.len().div_ceil(4) * 4;
        let mut m = Vec::new();
        m.extend_from_slice(&0x0001u16.to_be_bytes());
        m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        m.extend_from_slice(&[7u8; 12]);
        m.extend_from_slice(&0x0006u16.to_be_bytes());
        m.extend_from_slice(&(name.len() as u16).to_be_bytes());
        m.extend_from_slice(name);
        m.resize(20 + 4 + padded, 0);
        m
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn requests_route_by_ufrag_and_other_packets_by_their_source() {
        let mut routes = Routes::default();
        routes.add_peer((1, 7), "aaaa".into());
        routes.add_peer((2, 7), "bbbb".into());
        let request = binding_request("bbbb:remote");
        // A request for a known ufrag from a new source: routed, and may teach the source.
        assert_eq!(
            routes.target(&request, None),
            Some(Target {
                route: (2, 7),
                may_learn: true
            })
        );
        // Unknown ufrag: nobody's, whatever the source was known as.
        assert_eq!(
            routes.target(&binding_request("zzzz:remote"), Some((1, 7))),
            None
        );
        // RTP from an unknown source: nobody's; from a learned one: its peer's.
        let rtp = [0x80u8, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(routes.target(&rtp, routes.of_address(&addr(5000))), None);
        routes.learn(addr(5000), (2, 7));
        assert_eq!(
            routes.target(&rtp, routes.of_address(&addr(5000))),
            Some(Target {
                route: (2, 7),
                may_learn: false
            })
        );
        // The learned source's requests for its own peer teach nothing new.
        assert_eq!(
            routes.target(&request, routes.of_address(&addr(5000))),
            Some(Target {
                route: (2, 7),
                may_learn: false
            })
        );
        assert_eq!(routes.peer_count(), 2);
        assert_eq!(routes.peers_of(2), vec![7]);
    }

    #[test]
    fn a_forgotten_peer_or_room_routes_nothing() {
        let mut routes = Routes::default();
        routes.add_peer((1, 1), "aaaa".into());
        routes.add_peer((1, 2), "cccc".into());
        routes.add_peer((2, 1), "bbbb".into());
        routes.learn(addr(1), (1, 1));
        routes.learn(addr(2), (1, 2));
        routes.learn(addr(3), (2, 1));
        routes.forget_peer((1, 1));
        assert_eq!(routes.target(&binding_request("aaaa:x"), None), None);
        assert_eq!(routes.of_address(&addr(1)), None);
        assert_eq!(routes.of_address(&addr(2)), Some((1, 2)));
        routes.forget_room(1);
        assert_eq!(routes.of_address(&addr(2)), None);
        assert_eq!(routes.target(&binding_request("cccc:x"), None), None);
        assert!(routes.peers_of(1).is_empty());
        // The other room keeps its routes.
        assert_eq!(routes.of_address(&addr(3)), Some((2, 1)));
        assert_eq!(routes.peers_of(2), vec![1]);
        assert_eq!(routes.peer_count(), 1);
    }
}

//! The client address of a request: whom the per-address limits count (login tries, guest
//! credentials, invitation-token guesses, meeting WebSockets).
//!
//! It is the TCP peer, unless that peer is one of the operator's trusted proxies
//! (`[server] trusted_proxies`): then it is the right-most address of `X-Forwarded-For` that is
//! not itself a trusted proxy. Everything left of that address was written by the client and is
//! never looked at, so a client cannot choose its own address by sending the header: a proxy
//! appends the address it saw. A header that cannot be read where it matters (an entry that is
//! not an IP address, an empty entry, too many trusted hops) is not trusted: the request counts
//! for the peer, the proxy itself. Without trusted proxies (the default) the header is ignored.
//!
//! Only `X-Forwarded-For` is read (every common proxy writes it; RFC 7239's `Forwarded` is not).
//! Addresses are compared in canonical form (`::ffff:192.0.2.1` is `192.0.2.1`).
//!
//! The rule is the pure function [`client_ip`]; [`ClientIp`] is the extractor handlers use.
//! Parsing by hand: the header is a comma-separated list of IP addresses, which the standard
//! library's `IpAddr` parser reads; no crate adds anything here.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::config::TrustedProxies;
use crate::http::http_error::{ApiError, Refusal};
use crate::state::AppState;

/// The header a proxy appends the address it saw to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// At most this many entries of `X-Forwarded-For` are read from the right; a chain of more
/// trusted proxies than this is not trusted.
pub const MAX_FORWARDED_HOPS: usize = 16;

/// The client address of a request from `peer` with these headers (see the module
/// documentation): `peer` unless it is a trusted proxy, else the right-most `X-Forwarded-For`
/// entry that is not a trusted proxy (or the left-most entry when all of them are). Always in
/// canonical form.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    forwarded_client(headers, trusted).unwrap_or(peer)
}

/// The client address that `X-Forwarded-For` names behind trusted proxies, or `None` (no
/// header, or one that cannot be trusted).
fn forwarded_client(headers: &HeaderMap, trusted: &TrustedProxies) -> Option<IpAddr> {
    // Several header lines are one list, in order. Read as bytes: what the client wrote on the
    // left may be anything, and only the entries up to the client's are looked at.
    let lines: Vec<&[u8]> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if lines.is_empty() {
        return None;
    }
    let mut last = None;
    let entries = lines
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(|b| *b == b','));
    for (n, entry) in entries.enumerate() {
        if n >= MAX_FORWARDED_HOPS {
            return None;
        }
        let entry = std::str::from_utf8(entry).ok()?;
        let ip = parse_entry(entry.trim())?.to_canonical();
        if !trusted.contains(ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    last
}

/// One entry: an IP address, an IPv6 address in brackets, or either with a port (some proxies
/// write one).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The client address of the request ([`client_ip`] with the server's trusted proxies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| {
                tracing::error!("a request without its peer address (served without ConnectInfo)");
                Refusal::Internal
            })?;
        Ok(ClientIp(client_ip(
            peer.ip(),
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            list.iter()
                .map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .expect("net")
                })
                .collect(),
        )
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["198.51.100.7"]), &none),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t = trusted(&["127.0.0.1"]);
        assert_eq!(
            client_ip(ip("127.0.0.2"), &xff(&["198.51.100.7"]), &t),
            ip("127.0.0.2")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_entry_is_the_client() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        assert_eq!(
            client_ip(peer, &xff(&["198.51.100.7"]), &t),
            ip("198.51.100.7")
        );
        // What the client wrote itself (left of what the proxy appended) does not count.
        assert_eq!(
            client_ip(peer, &xff(&["203.0.113.1, 198.51.100.7"]), &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(peer, &xff(&["garbage", "198.51.100.7"]), &t),
            ip("198.51.100.7")
        );
        // Trusted hops on the right are skipped.
        assert_eq!(
            client_ip(peer, &xff(&["198.51.100.7, 10.1.2.3"]), &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(peer, &xff(&["198.51.100.7", "10.1.2.3 , 10.0.0.9"]), &t),
            ip("198.51.100.7")
        );
        // Only trusted hops: the left-most is the client.
        assert_eq!(
            client_ip(peer, &xff(&["10.9.9.9, 10.1.2.3"]), &t),
            ip("10.9.9.9")
        );
        // IPv6, with brackets or a port, and mapped IPv4.
        assert_eq!(
            client_ip(peer, &xff(&["[2001:db8::1]"]), &t),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(peer, &xff(&["198.51.100.7:4711"]), &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &xff(&["::ffff:198.51.100.7"]), &t),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn no_or_malformed_header_counts_for_the_proxy() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        assert_eq!(client_ip(peer, &HeaderMap::new(), &t), peer);
        for bad in [
            "",
            "not-an-ip",
            "198.51.100.7,",
            "198.51.100.7, 10.0.0.1, x",
        ] {
            assert_eq!(client_ip(peer, &xff(&[bad]), &t), peer, "{bad:?}");
        }
        let many = vec!["10.0.0.1"; MAX_FORWARDED_HOPS + 1].join(",");
        assert_eq!(client_ip(peer, &xff(&[&many]), &t), peer);
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.\xff").expect("value"),
        );
        assert_eq!(client_ip(peer, &h, &t), peer);
        // Bytes the client wrote on the left do not matter.
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.7").expect("value"),
        );
        assert_eq!(client_ip(peer, &h, &t), ip("198.51.100.7"));
    }
}

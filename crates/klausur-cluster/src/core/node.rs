//! A node as the others see it: who it is, where browsers reach it, and how busy it is.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ids::NodeId;

/// The longest HTTP base URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The most media addresses a node may announce (one per media worker).
pub const MAX_MEDIA_ADDRS: usize = 256;

/// Why a node description is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("a node's HTTP base URL starts with http:// or https:// and has a host")]
    BadUrl,
    #[error("a node's HTTP base URL is at most {MAX_URL_LEN} characters long")]
    UrlTooLong,
    #[error("a node's HTTP base URL must not contain spaces or control characters")]
    UrlCharacters,
    #[error("a node announces at most {MAX_MEDIA_ADDRS} media addresses, this one {0}")]
    TooManyMediaAddrs(usize),
}

/// One node: its id, the base URL browsers and other nodes reach its HTTP and WebSocket side
/// at (what a redirect points to), and a summary of its media addresses (the UDP address of
/// each media worker, as browsers see them). Valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    id: NodeId,
    http_url: String,
    media: Vec<SocketAddr>,
}

impl Node {
    pub fn new(
        id: NodeId,
        http_url: impl Into<String>,
        media: Vec<SocketAddr>,
    ) -> Result<Self, NodeError> {
        let http_url = http_url.into();
        if http_url.len() > MAX_URL_LEN {
            return Err(NodeError::UrlTooLong);
        }
        if http_url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(NodeError::UrlCharacters);
        }
        let rest = http_url
            .strip_prefix("https://")
            .or_else(|| http_url.strip_prefix("http://"))
            .ok_or(NodeError::BadUrl)?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(NodeError::BadUrl);
        }
        if media.len() > MAX_MEDIA_ADDRS {
            return Err(NodeError::TooManyMediaAddrs(media.len()));
        }
        Ok(Self {
            id,
            http_url,
            media,
        })
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    pub fn http_url(&self) -> &str {
        &self.http_url
    }

    pub fn media(&self) -> &[SocketAddr] {
        &self.media
    }
}

/// How busy a node is, as it publishes it with every heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Meetings the node runs.
    pub meetings: u32,
    /// Participants connected to those meetings.
    pub participants: u32,
    /// How many participants the node is meant to carry (its operator's sizing), if said.
    /// A node at or above it is chosen for a new meeting only when every node is.
    pub capacity: Option<u32>,
    /// The node is being taken out of service (its operator stopped it and it lets its
    /// meetings finish): it gets a new meeting only when every node is. Absent in the records
    /// of releases before it (read as false).
    #[serde(default)]
    pub draining: bool,
}

impl Load {
    /// Whether the node carries as many participants as its capacity says it should.
    pub fn is_full(&self) -> bool {
        self.capacity.is_some_and(|c| self.participants >= c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeId {
        NodeId::new("n1").expect("id")
    }

    #[test]
    fn accepts_http_and_https_base_urls() {
        for url in [
            "https://a.example",
            "http://127.0.0.1:8080",
            "https://a.example/klausur",
        ] {
            let n =
                Node::new(id(), url, vec!["192.0.2.1:40000".parse().expect("addr")]).expect(url);
            assert_eq!(n.http_url(), url);
            assert_eq!(n.media().len(), 1);
        }
    }

    #[test]
    fn refuses_bad_urls() {
        for (url, e) in [
            ("ftp://a", NodeError::BadUrl),
            ("a.example", NodeError::BadUrl),
            ("https://", NodeError::BadUrl),
            ("https:///path", NodeError::BadUrl),
            ("https://a b", NodeError::UrlCharacters),
            ("https://a\r\nX: y", NodeError::UrlCharacters),
        ] {
            assert_eq!(Node::new(id(), url, vec![]), Err(e), "{url:?}");
        }
        let long = format!("https://{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(Node::new(id(), long, vec![]), Err(NodeError::UrlTooLong));
    }

    #[test]
    fn refuses_too_many_media_addresses() {
        let addrs = vec!["192.0.2.1:1".parse().expect("addr"); MAX_MEDIA_ADDRS + 1];
        assert_eq!(
            Node::new(id(), "https://a", addrs),
            Err(NodeError::TooManyMediaAddrs(MAX_MEDIA_ADDRS + 1))
        );
    }

    #[test]
    fn full_only_with_a_capacity_reached() {
        let mut l = Load {
            meetings: 1,
            participants: 10,
            capacity: None,
            draining: false,
        };
        assert!(!l.is_full());
        l.capacity = Some(11);
        assert!(!l.is_full());
        l.capacity = Some(10);
        assert!(l.is_full());
    }
}

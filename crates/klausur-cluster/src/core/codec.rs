//! The Redis keys the cluster uses and the values stored under them.
//!
//! Keys, under a prefix (default `klausur`, so that one Redis can serve other programs, or
//! several test clusters, side by side):
//!
//! | key                        | value                    | TTL                      |
//! |----------------------------|--------------------------|--------------------------|
//! | `<prefix>:node:<node id>`  | [`NodeRecord`] as JSON   | node TTL, set per beat   |
//! | `<prefix>:lease:<meeting>` | [`LeaseRecord`] as JSON  | lease TTL, set per renew |
//!
//! Every value is a JSON object with `"v": 1`. A reader refuses a value it cannot trust
//! (not JSON, another version, an id that is not valid, a node key whose value names another
//! node, anything too long) with a [`DecodeError`]; nothing that Redis returns can make it
//! panic. Fields a reader does not know are ignored (a later release may add one, for nodes
//! of the older release beside it during an upgrade); a change of meaning gets `"v": 2`, and
//! nodes of the old version report those values as [`DecodeError::Version`] instead of
//! misreading them.

use serde::{Deserialize, Serialize};

use super::ids::{IdError, MeetingId, NodeId};
use super::node::{Load, Node};

/// The version of the values this code writes and reads.
pub const VERSION: u32 = 1;
/// The longest value accepted from Redis.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// The longest key prefix accepted.
pub const MAX_PREFIX_LEN: usize = 64;

/// Why a prefix is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("a key prefix is 1 to {MAX_PREFIX_LEN} ASCII letters, digits, '.', '_', '-' and ':'")]
    Invalid,
}

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            prefix: "klausur".to_owned(),
        }
    }
}

impl Keys {
    /// Keys under `prefix` (no glob characters, so patterns built on it match only ours).
    pub fn new(prefix: impl Into<String>) -> Result<Self, PrefixError> {
        let prefix = prefix.into();
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
        if ok {
            Ok(Self { prefix })
        } else {
            Err(PrefixError::Invalid)
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of a node's heartbeat.
    pub fn node(&self, id: &NodeId) -> String {
        format!("{}:node:{id}", self.prefix)
    }

    /// The `SCAN … MATCH` pattern of every node key.
    pub fn node_pattern(&self) -> String {
        format!("{}:node:*", self.prefix)
    }

    /// The node id in a node key, if `key` is one.
    pub fn node_id_of(&self, key: &str) -> Option<Result<NodeId, IdError>> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":node:")?;
        Some(NodeId::new(rest))
    }

    /// The key of a meeting's lease.
    pub fn lease(&self, meeting: &MeetingId) -> String {
        format!("{}:lease:{meeting}", self.prefix)
    }

    /// The `SCAN … MATCH` pattern of every lease key.
    pub fn lease_pattern(&self) -> String {
        format!("{}:lease:*", self.prefix)
    }

    /// The key of a value shared between nodes for a while (see [`crate::Cluster::share`]):
    /// `<prefix>:<kind>:<digest>`, `None` unless `kind` is lower-case letters and `digest` 64
    /// lower-case hex digits (a SHA-256), so that no key can pose as a node or a lease.
    pub fn shared_value(&self, kind: &str, digest: &str) -> Option<String> {
        let kind_ok = !kind.is_empty()
            && kind.len() <= 16
            && kind.bytes().all(|b| b.is_ascii_lowercase())
            && !matches!(kind, "node" | "lease" | "shared");
        let digest_ok = digest.len() == 64
            && digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (kind_ok && digest_ok).then(|| format!("{}:{kind}:{digest}", self.prefix))
    }

    /// The key of the fingerprint every node must share (see [`crate::Cluster::agree`]).
    pub fn shared(&self) -> String {
        format!("{}:shared", self.prefix)
    }
}

/// Why a value read from Redis is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the value is {0} bytes long, more than klausur ever writes")]
    TooLong(usize),
    #[error("the value is not a JSON object klausur wrote: {0}")]
    NotJson(String),
    #[error("the value has version {0}, this node reads version {VERSION}")]
    Version(u64),
    #[error("the value is not valid: {0}")]
    Invalid(String),
    #[error("the value under node key {key:?} describes node {found:?}")]
    WrongNode { key: String, found: String },
}

/// First step of every read: the length, JSON, and the version, before the rest is parsed.
fn versioned<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, DecodeError> {
    if raw.len() > MAX_VALUE_LEN {
        return Err(DecodeError::TooLong(raw.len()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Some(obj) = value.as_object() else {
        return Err(DecodeError::NotJson("not an object".to_owned()));
    };
    match obj.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => return Err(DecodeError::Version(v)),
        None => return Err(DecodeError::Invalid("no version field \"v\"".to_owned())),
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// What a node's key holds: the node and its load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: Node,
    pub load: Load,
}

#[derive(Serialize, Deserialize)]
struct NodeWire {
    v: u32,
    id: NodeId,
    http_url: String,
    media: Vec<std::net::SocketAddr>,
    load: Load,
}

impl NodeRecord {
    pub fn encode(&self) -> String {
        let wire = NodeWire {
            v: VERSION,
            id: self.node.id().clone(),
            http_url: self.node.http_url().to_owned(),
            media: self.node.media().to_vec(),
            load: self.load,
        };
        // A struct of strings, numbers and addresses always serializes.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads the value of node key `key` (`keys` tells which node the key is for).
    pub fn decode(keys: &Keys, key: &str, raw: &[u8]) -> Result<Self, DecodeError> {
        let wire: NodeWire = versioned(raw)?;
        let node = Node::new(wire.id, wire.http_url, wire.media)
            .map_err(|e| DecodeError::Invalid(e.to_string()))?;
        match keys.node_id_of(key) {
            Some(Ok(id)) if id == *node.id() => Ok(Self {
                node,
                load: wire.load,
            }),
            _ => Err(DecodeError::WrongNode {
                key: key.to_owned(),
                found: node.id().to_string(),
            }),
        }
    }
}

/// What a meeting's lease holds: the node that owns the meeting, and a token drawn afresh
/// for every acquisition. Renewing and releasing compare the whole stored value, so a node
/// renews only the acquisition it holds, never one that came after it (its own included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    v: u32,
    pub node: NodeId,
    pub token: String,
}

/// The token length in hex digits (128 random bits).
pub const TOKEN_HEX_LEN: usize = 32;

impl LeaseRecord {
    /// A new lease for `node` with `token` (hex, [`TOKEN_HEX_LEN`] digits: the driver draws
    /// 16 random bytes).
    pub fn new(node: NodeId, token: String) -> Self {
        Self {
            v: VERSION,
            node,
            token,
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(raw: &[u8]) -> Result<Self, DecodeError> {
        let rec: Self = versioned(raw)?;
        if rec.token.len() != TOKEN_HEX_LEN || !rec.token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DecodeError::Invalid(format!(
                "a lease token is {TOKEN_HEX_LEN} hex digits"
            )));
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Node {
        Node::new(
            NodeId::new(id).expect("id"),
            "https://n.example:8443",
            vec!["192.0.2.7:40000".parse().expect("addr")],
        )
        .expect("node")
    }

    fn token() -> String {
        "0123456789abcdef0123456789ABCDEF".to_owned()
    }

    #[test]
    fn keys_under_their_prefix() {
        let k = Keys::new("klausur:test-1").expect("prefix");
        let n = NodeId::new("a").expect("id");
        let m = MeetingId::new("m-1").expect("id");
        assert_eq!(k.node(&n), "klausur:test-1:node:a");
        assert_eq!(k.lease(&m), "klausur:test-1:lease:m-1");
        assert_eq!(k.node_pattern(), "klausur:test-1:node:*");
        assert_eq!(k.lease_pattern(), "klausur:test-1:lease:*");
        assert_eq!(k.node_id_of("klausur:test-1:node:a"), Some(Ok(n)));
        assert_eq!(k.node_id_of("klausur:test-1:lease:a"), None);
        assert_eq!(k.node_id_of("other:node:a"), None);
        assert!(matches!(
            k.node_id_of("klausur:test-1:node:a:b"),
            Some(Err(_))
        ));
        assert_eq!(Keys::default().prefix(), "klausur");
        let digest = "ab".repeat(32);
        assert_eq!(
            k.shared_value("ticket", &digest),
            Some(format!("klausur:test-1:ticket:{digest}"))
        );
        for (kind, d) in [
            ("node", digest.as_str()),
            ("lease", &digest),
            ("shared", &digest),
            ("Ticket", &digest),
            ("ticket", &digest[..63]),
            ("ticket", &"AB".repeat(32)),
            ("ticket", "*"),
        ] {
            assert_eq!(k.shared_value(kind, d), None, "{kind} {d}");
        }
        for bad in ["", "a*", "a b", "[x]", &"p".repeat(65)] {
            assert_eq!(Keys::new(bad), Err(PrefixError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn node_record_round_trip() {
        let keys = Keys::default();
        let rec = NodeRecord {
            node: node("a"),
            load: Load {
                meetings: 3,
                participants: 17,
                capacity: Some(200),
                draining: true,
            },
        };
        let text = rec.encode();
        assert!(text.starts_with("{\"v\":1,"), "{text}");
        let back = NodeRecord::decode(&keys, "klausur:node:a", text.as_bytes()).expect("decode");
        assert_eq!(back, rec);
    }

    #[test]
    fn a_record_from_before_draining_reads_as_not_draining() {
        // What a node of the release before `draining` writes, during a rolling upgrade.
        let keys = Keys::default();
        let old = r#"{"v":1,"id":"a","http_url":"https://meet.example/node/a","media":[],"load":{"meetings":2,"participants":9,"capacity":null}}"#;
        let rec = NodeRecord::decode(&keys, "klausur:node:a", old.as_bytes()).expect("decode");
        assert_eq!(
            rec.load,
            Load {
                meetings: 2,
                participants: 9,
                capacity: None,
                draining: false,
            }
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let keys = Keys::default();
        let rec = NodeRecord {
            node: node("a"),
            load: Load::default(),
        };
        let text = rec.encode().replace("{\"v\":1,", "{\"v\":1,\"later\":[1],");
        assert_eq!(
            NodeRecord::decode(&keys, "klausur:node:a", text.as_bytes()),
            Ok(rec)
        );
    }

    #[test]
    fn node_record_must_match_its_key() {
        let keys = Keys::default();
        let text = NodeRecord {
            node: node("a"),
            load: Load::default(),
        }
        .encode();
        let err = NodeRecord::decode(&keys, "klausur:node:b", text.as_bytes()).expect_err("wrong");
        assert!(matches!(err, DecodeError::WrongNode { .. }), "{err}");
    }

    #[test]
    fn malformed_node_values_are_refused_with_a_reason() {
        let keys = Keys::default();
        let key = "klausur:node:a";
        let good = NodeRecord {
            node: node("a"),
            load: Load::default(),
        }
        .encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "NotJson"),
            (b"garbage".to_vec(), "NotJson"),
            (vec![0xff, 0xfe, 0x00], "NotJson"),
            (b"[1,2]".to_vec(), "NotJson"),
            (b"{}".to_vec(), "Invalid"),
            (good.replace("\"v\":1", "\"v\":2").into_bytes(), "Version"),
            (
                good.replace("\"v\":1", "\"v\":\"1\"").into_bytes(),
                "Invalid",
            ),
            (
                good.replace("\"id\":\"a\"", "\"id\":\"a:b\"").into_bytes(),
                "Invalid",
            ),
            (
                good.replace("https://n.example:8443", "javascript:x")
                    .into_bytes(),
                "Invalid",
            ),
            (
                good.replace("192.0.2.7:40000", "nowhere").into_bytes(),
                "Invalid",
            ),
            (
                good.replace("\"meetings\":0", "\"meetings\":-1")
                    .into_bytes(),
                "Invalid",
            ),
            (
                good.replace("\"meetings\":0", "\"meetings\":1e99")
                    .into_bytes(),
                "Invalid",
            ),
            (vec![b' '; MAX_VALUE_LEN + 1], "TooLong"),
        ];
        for (raw, want) in cases {
            let err = NodeRecord::decode(&keys, key, &raw).expect_err("refused");
            let got = format!("{err:?}");
            assert!(
                got.starts_with(want),
                "{:?}: {got}",
                String::from_utf8_lossy(&raw)
            );
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn lease_record_round_trip_and_refusals() {
        let rec = LeaseRecord::new(NodeId::new("b").expect("id"), token());
        let text = rec.encode();
        assert!(text.starts_with("{\"v\":1,"), "{text}");
        assert_eq!(LeaseRecord::decode(text.as_bytes()), Ok(rec));
        for raw in [
            "b".to_owned(),
            "{\"v\":1,\"node\":\"b\"}".to_owned(),
            "{\"v\":1,\"node\":\"b\",\"token\":\"short\"}".to_owned(),
            format!(
                "{{\"v\":1,\"node\":\"b\",\"token\":\"{}\"}}",
                "z".repeat(32)
            ),
            format!("{{\"v\":1,\"node\":\"*\",\"token\":\"{}\"}}", token()),
            format!("{{\"v\":7,\"node\":\"b\",\"token\":\"{}\"}}", token()),
        ] {
            assert!(LeaseRecord::decode(raw.as_bytes()).is_err(), "{raw}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap sweep over short inputs and mutations of valid ones.
        let keys = Keys::default();
        let good = NodeRecord {
            node: node("a"),
            load: Load::default(),
        }
        .encode()
        .into_bytes();
        let lease = LeaseRecord::new(NodeId::new("a").expect("id"), token())
            .encode()
            .into_bytes();
        for base in [&good, &lease] {
            for i in 0..base.len() {
                for b in [0u8, b'"', b'{', b'}', b'1', 0xff] {
                    let mut m = base.clone();
                    m[i] = b;
                    let _ = NodeRecord::decode(&keys, "klausur:node:a", &m);
                    let _ = LeaseRecord::decode(&m);
                    let _ = NodeRecord::decode(&keys, "klausur:node:a", &m[..i]);
                    let _ = LeaseRecord::decode(&m[..i]);
                }
            }
        }
    }
}

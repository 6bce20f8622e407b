//! The two names the cluster keys things by: a node's id and a meeting's id.
//!
//! Both become part of Redis keys (`<prefix>:node:<id>`, `<prefix>:lease:<meeting>`), and node
//! keys are found again with `SCAN … MATCH <prefix>:node:*`. So both are restricted to ASCII
//! letters, digits, `.`, `_` and `-`, 1 to 128 characters: no `:` that would make one key look
//! like another, no glob characters (`*`, `?`, `[`) that would widen a `MATCH`, nothing that
//! needs quoting in a log line. klausur's meeting ids (random URL-safe text) and node names
//! (a host name, say) fit.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Why a text is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id must not be empty")]
    Empty,
    #[error("an id is at most {MAX_ID_LEN} characters long, this one has {0}")]
    TooLong(usize),
    #[error("an id consists of ASCII letters, digits, '.', '_' and '-' only; found {0:?}")]
    BadCharacter(char),
}

fn check(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(IdError::BadCharacter(c)),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id, if `s` is a valid one.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        /// Checked on the way in: a value read from Redis with a bad id is refused.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The name of one node (one `klausur serve` process), unique in the cluster.
    NodeId
);
id_type!(
    /// A meeting's id, as the store knows it.
    MeetingId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for s in [
            "a",
            "node-1",
            "host.example.org",
            "AbC_09-x.y",
            &"x".repeat(128),
        ] {
            assert_eq!(NodeId::new(s).expect(s).as_str(), s);
            assert_eq!(MeetingId::new(s).expect(s).to_string(), s);
        }
    }

    #[test]
    fn refuses_what_would_confuse_keys_or_patterns() {
        assert_eq!(NodeId::new(""), Err(IdError::Empty));
        assert_eq!(NodeId::new("x".repeat(129)), Err(IdError::TooLong(129)));
        for (s, c) in [
            ("a:b", ':'),
            ("a*", '*'),
            ("a?", '?'),
            ("[a]", '['),
            ("a b", ' '),
            ("ä", 'ä'),
            ("a\n", '\n'),
        ] {
            assert_eq!(MeetingId::new(s), Err(IdError::BadCharacter(c)), "{s:?}");
        }
    }

    #[test]
    fn deserializing_checks_the_id() {
        let ok: NodeId = serde_json::from_str("\"n1\"").expect("valid");
        assert_eq!(ok.as_str(), "n1");
        let err = serde_json::from_str::<NodeId>("\"n:1\"").expect_err("invalid");
        assert!(err.to_string().contains("':'"), "{err}");
    }
}

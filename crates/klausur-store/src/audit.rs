//! The audit trail's records and the hash chain that makes them tamper-evident (no I/O here:
//! the queries are in `store/audit.rs`).
//!
//! # The chain
//!
//! Records are numbered `seq` = 1, 2, 3, ... without gaps. Each record holds the hash of the
//! record before it (`prev_hash`; the first record holds [`GENESIS`]) and its own `hash`, the
//! SHA-256 of a domain label and every field of the record, each field length-prefixed, the
//! details as the exact text stored. So changing any field of a record changes its hash, and a
//! record removed, inserted or moved breaks the link of the record after it. [`verify`] walks a
//! trail and names each record where this does not hold.
//!
//! When the retention period deletes the oldest records, the store keeps an [`Anchor`]: the
//! sequence number and hash of the last deleted record, and appends a record that names it.
//! The first remaining record must follow the anchor.
//!
//! # What the chain does not do
//!
//! Someone who can write the database can rewrite the whole trail and compute every hash
//! again, or cut records off its end; a chain alone cannot tell. Both are caught against a
//! copy held elsewhere: [`verify`] checks an expected [`Head`] (a record's sequence number
//! and hash noted earlier, or taken from the export in the city's log system) when one is
//! given.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record of a trail that never lost a record to retention.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Label hashed in front of every record (so a record hash is never a hash of something else).
const DOMAIN: &[u8] = b"klausur-audit-v1";

/// Who did what a record describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    /// `user`, `guest`, `lobby`, `phone`, `anonymous` or `system`.
    pub kind: String,
    /// A stable identifier within its kind: a user id, an invitation id, a guest pass id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The name shown at the time (a username or display name). Only the audit trail keeps
    /// names; the operational log does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl AuditActor {
    /// The server itself (retention, start-up).
    pub fn system() -> AuditActor {
        AuditActor {
            kind: "system".into(),
            id: None,
            name: None,
        }
    }

    /// Someone not signed in.
    pub fn anonymous() -> AuditActor {
        AuditActor {
            kind: "anonymous".into(),
            id: None,
            name: None,
        }
    }

    /// An actor of `kind` with an identifier and a name.
    pub fn new(kind: &str, id: Option<String>, name: Option<String>) -> AuditActor {
        AuditActor {
            kind: kind.into(),
            id,
            name,
        }
    }
}

/// A record to append ([`Store::append_audit`](crate::Store::append_audit)); the store gives it
/// its number and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditRecord {
    /// What happened, dotted: `login.failed`, `lobby.admitted`, `meeting.locked`, ...
    pub kind: String,
    pub actor: AuditActor,
    /// The meeting it happened in or to, if any.
    pub meeting_id: Option<String>,
    /// The network address it came from, only where the event needs one (logins, dial-in).
    pub source: Option<String>,
    /// The rest, as a JSON object: the target of an action, a reason, counts.
    pub details: serde_json::Value,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub actor: AuditActor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The details as stored (a JSON object's text); [`AuditRecord::details`] parses it.
    #[serde(rename = "details", with = "raw_json")]
    pub details_text: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The details as a JSON value (`null` if the stored text is not JSON, which
    /// [`verify`] reports as a changed record anyway).
    pub fn details(&self) -> serde_json::Value {
        serde_json::from_str(&self.details_text).unwrap_or(serde_json::Value::Null)
    }

    /// The hash this record's fields give when chained to `prev_hash`.
    pub fn computed_hash(&self) -> String {
        record_hash(
            self.seq,
            self.at.timestamp_millis(),
            &self.kind,
            &self.actor,
            self.meeting_id.as_deref(),
            self.source.as_deref(),
            &self.details_text,
            &self.prev_hash,
        )
    }
}

/// Writes the details text as JSON (not as a string) and reads it back as its exact text.
mod raw_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(text) {
            Ok(raw) => raw.serialize(s),
            // Not JSON (a tampered row): export it as a string so it is still seen.
            Err(_) => text.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(raw.get().to_owned())
    }
}

/// The last record deleted by retention: the first remaining record follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
}

/// A record's sequence number and hash noted earlier, which the trail must still contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

impl std::str::FromStr for Head {
    type Err = String;

    /// `SEQ:HASH`, as `klausur audit verify` prints it.
    fn from_str(s: &str) -> Result<Head, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("expected SEQ:HASH, got {s:?}"))?;
        let seq: i64 = seq
            .parse()
            .map_err(|_| format!("{seq:?} is not a record number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the hash must be 64 hexadecimal digits".into());
        }
        Ok(Head {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// Something [`verify`] found wrong, with the record it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The record's fields do not give its hash: it was changed after it was written.
    Changed { seq: i64 },
    /// Records between two remaining ones are gone.
    Missing { from: i64, to: i64 },
    /// The record does not hold the hash of the record before it: a record before it was
    /// removed and the numbers closed up, or records were moved or inserted.
    Unlinked { seq: i64 },
    /// The record is older than the one before it: records were reordered.
    OutOfOrder { seq: i64 },
    /// The trail does not start where it must (record 1 after [`GENESIS`], or the record after
    /// the retention anchor).
    BadStart { seq: i64, expected: i64 },
    /// The expected head is not in the trail as noted.
    HeadMismatch { seq: i64, found: Option<String> },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Changed { seq } => write!(f, "record {seq} was changed"),
            Problem::Missing { from, to } if from == to => write!(f, "record {from} is missing"),
            Problem::Missing { from, to } => write!(f, "records {from} to {to} are missing"),
            Problem::Unlinked { seq } => write!(
                f,
                "record {seq} does not follow the record before it \
                 (a record was removed, inserted or moved)"
            ),
            Problem::OutOfOrder { seq } => {
                write!(
                    f,
                    "record {seq} is older than the record before it (reordered)"
                )
            }
            Problem::BadStart { seq, expected } => write!(
                f,
                "the trail starts at record {seq} where record {expected} was expected \
                 (records at its start were removed)"
            ),
            Problem::HeadMismatch { seq, found: None } => {
                write!(
                    f,
                    "record {seq}, noted earlier, is no longer in the trail (cut off)"
                )
            }
            Problem::HeadMismatch {
                seq,
                found: Some(_),
            } => write!(
                f,
                "record {seq} no longer has the hash noted earlier (the trail was rewritten)"
            ),
        }
    }
}

/// Checks a trail incrementally, one record at a time in ascending `seq` (so a long trail is
/// read page by page).
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    prev_at: Option<DateTime<Utc>>,
    head: Option<Head>,
    head_found: Option<String>,
    problems: Vec<Problem>,
    records: u64,
    last: Option<Head>,
}

impl Verifier {
    /// A verifier for a trail that starts after `anchor` (or at the beginning), optionally
    /// checking that `head` is still in it.
    pub fn new(anchor: Option<&Anchor>, head: Option<Head>) -> Verifier {
        let (expected_seq, prev_hash) = match anchor {
            Some(a) => (a.seq.saturating_add(1), a.hash.clone()),
            None => (1, GENESIS.to_owned()),
        };
        Verifier {
            expected_seq,
            prev_hash,
            prev_at: None,
            head,
            head_found: None,
            problems: Vec::new(),
            records: 0,
            last: None,
        }
    }

    /// Checks the next record.
    pub fn push(&mut self, r: &AuditRecord) {
        let first = self.records == 0;
        self.records += 1;
        if r.computed_hash() != r.hash {
            self.problems.push(Problem::Changed { seq: r.seq });
        }
        if r.seq != self.expected_seq {
            if first {
                self.problems.push(Problem::BadStart {
                    seq: r.seq,
                    expected: self.expected_seq,
                });
            } else if r.seq > self.expected_seq {
                self.problems.push(Problem::Missing {
                    from: self.expected_seq,
                    to: r.seq.saturating_sub(1),
                });
            } else {
                self.problems.push(Problem::Unlinked { seq: r.seq });
            }
        } else if r.prev_hash != self.prev_hash {
            self.problems.push(Problem::Unlinked { seq: r.seq });
        }
        if let Some(prev_at) = self.prev_at {
            if r.at < prev_at {
                self.problems.push(Problem::OutOfOrder { seq: r.seq });
            }
        }
        if let Some(head) = &self.head {
            if head.seq == r.seq {
                self.head_found = Some(r.hash.clone());
            }
        }
        self.expected_seq = r.seq.saturating_add(1);
        self.prev_hash = r.hash.clone();
        self.prev_at = Some(r.at);
        self.last = Some(Head {
            seq: r.seq,
            hash: r.hash.clone(),
        });
    }

    /// The verdict.
    pub fn finish(mut self) -> Verdict {
        if let Some(head) = &self.head {
            match &self.head_found {
                Some(found) if *found == head.hash => {}
                found => self.problems.push(Problem::HeadMismatch {
                    seq: head.seq,
                    found: found.clone(),
                }),
            }
        }
        Verdict {
            records: self.records,
            head: self.last,
            problems: self.problems,
        }
    }
}

/// What [`Verifier`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Records checked.
    pub records: u64,
    /// The last record's number and hash (note it, to check later that nothing was cut off).
    pub head: Option<Head>,
    pub problems: Vec<Problem>,
}

impl Verdict {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies a whole trail at once (see [`Verifier`]).
pub fn verify<'a>(
    anchor: Option<&Anchor>,
    head: Option<Head>,
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Verdict {
    let mut v = Verifier::new(anchor, head);
    for r in records {
        v.push(r);
    }
    v.finish()
}

/// The hash of a record: SHA-256 over a domain label and every field, each prefixed by its
/// length (so no two different records give the same input), in lowercase hex.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_hash(
    seq: i64,
    at_ms: i64,
    kind: &str,
    actor: &AuditActor,
    meeting_id: Option<&str>,
    source: Option<&str>,
    details_text: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(DOMAIN);
    field(&seq.to_be_bytes());
    field(&at_ms.to_be_bytes());
    field(kind.as_bytes());
    field(actor.kind.as_bytes());
    optional(&mut field, actor.id.as_deref());
    optional(&mut field, actor.name.as_deref());
    optional(&mut field, meeting_id);
    optional(&mut field, source);
    field(details_text.as_bytes());
    field(prev_hash.as_bytes());
    hex::encode(h.finalize())
}

/// An optional field: a presence byte, then the value if present.
fn optional(field: &mut impl FnMut(&[u8]), value: Option<&str>) {
    match value {
        None => field(&[0]),
        Some(v) => {
            field(&[1]);
            field(v.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let at =
                    DateTime::from_timestamp_millis(1_800_000_000_000 + seq * 1000).expect("valid");
                let mut r = AuditRecord {
                    seq,
                    at,
                    kind: "test.event".into(),
                    actor: AuditActor::new("user", Some(seq.to_string()), Some("A".into())),
                    meeting_id: (seq % 2 == 0).then(|| "m1".to_owned()),
                    source: None,
                    details_text: format!("{{\"n\":{seq}}}"),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = r.computed_hash();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let c = chain(5);
        let v = verify(None, None, &c);
        assert!(v.is_intact(), "{:?}", v.problems);
        assert_eq!(v.records, 5);
        assert_eq!(v.head.as_ref().map(|h| h.seq), Some(5));
        let head = Head {
            seq: 3,
            hash: c[2].hash.clone(),
        };
        assert!(verify(None, Some(head), &c).is_intact());
    }

    #[test]
    fn a_changed_field_is_named() {
        for change in 0..5 {
            let mut c = chain(5);
            match change {
                0 => c[2].details_text = "{\"n\":33}".into(),
                1 => c[2].actor.name = Some("B".into()),
                2 => c[2].meeting_id = Some("m2".into()),
                3 => c[2].source = Some("10.0.0.1".into()),
                _ => c[2].kind = "test.other".into(),
            }
            let v = verify(None, None, &c);
            assert_eq!(
                v.problems,
                vec![Problem::Changed { seq: 3 }],
                "change {change}"
            );
        }
    }

    #[test]
    fn a_removed_record_is_named() {
        let mut c = chain(5);
        c.remove(2);
        let v = verify(None, None, &c);
        assert_eq!(v.problems, vec![Problem::Missing { from: 3, to: 3 }]);
        assert_eq!(v.problems[0].to_string(), "record 3 is missing");
    }

    #[test]
    fn a_removal_with_renumbering_breaks_the_link() {
        let mut c = chain(5);
        c.remove(2);
        // Renumber 4 and 5 to 3 and 4 and rehash them (the hash includes the number): the
        // link of the renumbered record 3 no longer holds.
        for r in &mut c[2..] {
            r.seq -= 1;
            r.hash = r.computed_hash();
        }
        let v = verify(None, None, &c);
        assert!(v.problems.contains(&Problem::Unlinked { seq: 3 }), "{v:?}");
    }

    #[test]
    fn swapped_records_are_caught() {
        let mut c = chain(5);
        // Swap the contents of 2 and 3, keeping the numbers in place.
        let (a, b) = (c[1].clone(), c[2].clone());
        c[1] = AuditRecord { seq: 2, ..b };
        c[2] = AuditRecord { seq: 3, ..a };
        let v = verify(None, None, &c);
        assert!(v.problems.contains(&Problem::Changed { seq: 2 }), "{v:?}");
        assert!(
            v.problems.contains(&Problem::OutOfOrder { seq: 3 }),
            "{v:?}"
        );
    }

    #[test]
    fn the_start_must_follow_genesis_or_the_anchor() {
        let c = chain(5);
        let v = verify(None, None, &c[2..]);
        assert_eq!(
            v.problems,
            vec![Problem::BadStart {
                seq: 3,
                expected: 1
            }]
        );
        let anchor = Anchor {
            seq: 2,
            hash: c[1].hash.clone(),
        };
        assert!(verify(Some(&anchor), None, &c[2..]).is_intact());
        let wrong = Anchor {
            seq: 2,
            hash: c[0].hash.clone(),
        };
        assert_eq!(
            verify(Some(&wrong), None, &c[2..]).problems,
            vec![Problem::Unlinked { seq: 3 }]
        );
    }

    #[test]
    fn a_cut_or_rewritten_trail_fails_against_a_noted_head() {
        let c = chain(5);
        let head = Head {
            seq: 5,
            hash: c[4].hash.clone(),
        };
        let v = verify(None, Some(head.clone()), &c[..4]);
        assert_eq!(
            v.problems,
            vec![Problem::HeadMismatch {
                seq: 5,
                found: None
            }]
        );
        // A rewritten trail (every hash computed anew over changed content) verifies on its
        // own but not against the head noted before.
        let mut rewritten = chain(5);
        let mut prev = GENESIS.to_owned();
        for r in &mut rewritten {
            r.details_text = "{}".into();
            r.prev_hash = prev.clone();
            r.hash = r.computed_hash();
            prev = r.hash.clone();
        }
        assert!(verify(None, None, &rewritten).is_intact());
        assert!(!verify(None, Some(head), &rewritten).is_intact());
    }

    #[test]
    fn extreme_record_numbers_do_not_overflow() {
        let mut c = chain(1);
        c[0].seq = i64::MAX;
        c[0].hash = c[0].computed_hash();
        let anchor = Anchor {
            seq: i64::MAX,
            hash: GENESIS.into(),
        };
        // No panic (in a debug build too), and the record is checked.
        let v = verify(Some(&anchor), None, &c);
        assert_eq!(v.records, 1);
        let mut low = chain(1);
        low[0].seq = i64::MIN;
        assert!(!verify(None, None, &low).is_intact());
    }

    #[test]
    fn heads_parse_strictly() {
        let h: Head = format!("12:{}", "AB".repeat(32)).parse().expect("valid");
        assert_eq!(h.seq, 12);
        assert_eq!(h.hash, "ab".repeat(32));
        assert!("12".parse::<Head>().is_err());
        assert!("x:00".parse::<Head>().is_err());
        assert!(format!("1:{}", "g".repeat(64)).parse::<Head>().is_err());
    }

    #[test]
    fn records_export_details_as_json_and_read_back_exactly() {
        let c = chain(1);
        let line = serde_json::to_string(&c[0]).expect("serialises");
        assert!(line.contains("\"details\":{\"n\":1}"), "{line}");
        let back: AuditRecord = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, c[0]);
        assert_eq!(back.computed_hash(), back.hash);
    }
}

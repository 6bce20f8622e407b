//! The audit trail's hash chain (`klausur_store::audit`) against arbitrary JSON Lines, as
//! `klausur audit export` writes them.
//!
//! 1. Every line is parsed as an `AuditRecord` (and as a noted head, `SEQ:HASH`); whatever
//!    parses is verified, from the start and after an anchor: never a panic, and the verdict
//!    counts every record, names the last as its head and is intact exactly when it lists no
//!    problem.
//! 2. The parsed records' contents are chained as the store chains them (numbers from 1 or
//!    after an anchor, times in milliseconds and never earlier than the record before, details
//!    as compact JSON), exported and read back: they read back unchanged and verify intact,
//!    also against a noted head.
//! 3. One byte of that export is changed, at eight places the input picks: the changed export
//!    fails to read, or reads back as the same records (white space between fields), or does
//!    not verify intact. No single changed byte goes unnoticed.
#![no_main]

#[path = "common/mod.rs"]
#[macro_use]
mod common;

use chrono::DateTime;
use klausur_store::audit::{verify, Head, Verdict, GENESIS};
use klausur_store::{Anchor, AuditRecord};
use libfuzzer_sys::fuzz_target;

/// Records chained per input (enough for every kind of link, small enough to stay fast).
const MAX_RECORDS: usize = 8;
/// Changed bytes tried per input.
const MUTATIONS: u64 = 8;

fn check_verdict(v: &Verdict, records: &[AuditRecord]) {
    assert_eq!(v.records, records.len() as u64);
    match (records.last(), &v.head) {
        (None, None) => {}
        (Some(r), Some(h)) => assert!(h.seq == r.seq && h.hash == r.hash),
        (r, h) => panic!("head {h:?} for last record {r:?}"),
    }
    assert_eq!(v.is_intact(), v.problems.is_empty());
    for p in &v.problems {
        assert!(!p.to_string().is_empty());
    }
}

/// The details text as the store writes it: compact JSON.
fn details_text(text: &str) -> String {
    let value = serde_json::from_str::<serde_json::Value>(text)
        .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()));
    serde_json::to_string(&value).expect("a JSON value serialises")
}

/// FNV-1a over the input: picks the places to change, the same for the same input.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_export(text: &str) -> Option<Vec<AuditRecord>> {
    text.split('\n')
        .map(|line| serde_json::from_str::<AuditRecord>(line).ok())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // 1. Whatever parses, verified.
    let mut parsed = Vec::new();
    let mut noted: Option<Head> = None;
    for line in text.split('\n') {
        if let Ok(r) = serde_json::from_str::<AuditRecord>(line) {
            parsed.push(r);
        } else if let Ok(h) = line.parse::<Head>() {
            noted = Some(h);
        }
    }
    check_verdict(&verify(None, None, &parsed), &parsed);
    let v = verify(None, noted.clone(), &parsed);
    trace!(
        "{} records, noted head {noted:?}: {:?}",
        parsed.len(),
        v.problems
    );
    check_verdict(&v, &parsed);
    if let Some(first) = parsed.first() {
        if let Some(seq) = first.seq.checked_sub(1) {
            let anchor = Anchor {
                seq,
                hash: first.prev_hash.clone(),
            };
            let v = verify(Some(&anchor), noted, &parsed);
            trace!("after the anchor {anchor:?}: {:?}", v.problems);
            check_verdict(&v, &parsed);
        }
    }

    // 2. The same contents, chained as the store does.
    parsed.truncate(MAX_RECORDS);
    let anchor = match parsed.first() {
        Some(first) if first.seq > 1 && first.seq < i64::MAX / 2 => Some(Anchor {
            seq: first.seq - 1,
            hash: format!("{:0>64}", format!("{:x}", first.seq)),
        }),
        _ => None,
    };
    let mut seq = anchor.as_ref().map_or(1, |a| a.seq + 1);
    let mut prev_hash = anchor
        .as_ref()
        .map_or(GENESIS.to_owned(), |a| a.hash.clone());
    let mut prev_ms = i64::MIN;
    let mut chain = Vec::new();
    for mut r in parsed {
        let ms = r.at.timestamp_millis().max(prev_ms);
        let Some(at) = DateTime::from_timestamp_millis(ms) else {
            continue;
        };
        r.seq = seq;
        r.at = at;
        r.details_text = details_text(&r.details_text);
        r.prev_hash = prev_hash.clone();
        r.hash = r.computed_hash();
        prev_hash = r.hash.clone();
        prev_ms = ms;
        seq += 1;
        chain.push(r);
    }
    if chain.is_empty() {
        return;
    }
    let head = chain.last().map(|r| Head {
        seq: r.seq,
        hash: r.hash.clone(),
    });
    let export = chain
        .iter()
        .map(|r| serde_json::to_string(r).expect("a record serialises"))
        .collect::<Vec<_>>()
        .join("\n");
    let back = read_export(&export).expect("an export reads back");
    assert_eq!(back, chain, "an export read back differs");
    let v = verify(anchor.as_ref(), head.clone(), &back);
    assert!(
        v.is_intact(),
        "a chain as the store makes it: {:?}",
        v.problems
    );
    check_verdict(&v, &back);

    // 3. One changed byte is noticed.
    let bytes = export.as_bytes();
    let mut h = fnv(data);
    for _ in 0..MUTATIONS {
        h = h.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995;
        let pos = (h % bytes.len() as u64) as usize;
        let xor = ((h >> 32) as u8).max(1);
        let mut changed = bytes.to_vec();
        changed[pos] ^= xor;
        let Ok(changed) = String::from_utf8(changed) else {
            continue; // not text: an export that does not read
        };
        let Some(records) = read_export(&changed) else {
            continue;
        };
        if records == chain {
            continue;
        }
        let v = verify(anchor.as_ref(), head.clone(), &records);
        assert!(
            !v.is_intact(),
            "byte {pos} ^ {xor:#04x} changed the trail unnoticed:\n{changed}"
        );
    }
});

//! The audit trail in a real SQLite file and a real PostgreSQL database (every test runs on
//! both, see `on_engines!`): the chain across reopening and concurrent writers, filtered reads,
//! retention, and tampering with the rows directly (each kind of tampering is named by
//! `verify_audit`; the untouched trail is the negative control).

use klausur_testbed::postgres as engines;

use chrono::{DateTime, Duration, Utc};
use engines::{Engine, TestDb};
use klausur_store::audit::{Head, Problem};
use klausur_store::{AuditActor, AuditFilter, NewAuditRecord, Store, StoreError};
use serde_json::json;

type R = Result<(), StoreError>;

fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + seconds * 1000).expect("valid timestamp")
}

fn record(kind: &str, meeting: Option<&str>, n: i64) -> NewAuditRecord {
    NewAuditRecord {
        kind: kind.into(),
        actor: AuditActor::new("user", Some(n.to_string()), Some(format!("Person {n}"))),
        meeting_id: meeting.map(str::to_owned),
        source: None,
        details: json!({ "n": n }),
    }
}

async fn fill(store: &Store, n: i64) -> R {
    for i in 1..=n {
        let kind = if i % 3 == 0 {
            "lobby.admitted"
        } else {
            "login.succeeded"
        };
        let meeting = (i % 2 == 0).then_some("m-even");
        store.append_audit(record(kind, meeting, i), t(i)).await?;
    }
    Ok(())
}

/// Runs raw SQL on the database (what someone with access to it could do).
async fn tamper(db: &TestDb, sql: &str) {
    db.raw_sql(sql).await;
}

async fn the_chain_holds_across_reopening_and_is_numbered_without_gaps(engine: Engine) -> R {
    let (store, db) = engine.fresh().await;
    fill(&store, 5).await?;
    store.close().await;
    let store = db.open().await;
    let r = store
        .append_audit(record("login.failed", None, 6), t(6))
        .await?;
    assert_eq!(r.seq, 6);
    let all = store.audit_after(0, 100).await?;
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(all[5].prev_hash, all[4].hash);
    let verdict = store.verify_audit(None).await?;
    assert!(verdict.is_intact(), "{:?}", verdict.problems);
    assert_eq!(verdict.records, 6);
    assert_eq!(verdict.head.map(|h| h.hash), Some(r.hash));
    Ok(())
}

async fn concurrent_writers_keep_one_chain(engine: Engine) -> R {
    let (store, db) = engine.fresh().await;
    // Two stores on one file (two processes: the server and the command line) and many
    // tasks each.
    let other = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.append_audit(record("login.succeeded", None, i), t(i))
                .await
        }));
    }
    for task in tasks {
        task.await.expect("task")?;
    }
    let verdict = store.verify_audit(None).await?;
    assert!(verdict.is_intact(), "{:?}", verdict.problems);
    assert_eq!(verdict.records, 40);
    Ok(())
}

async fn a_clock_stepped_back_does_not_reorder_the_trail(engine: Engine) -> R {
    let (store, _db) = engine.fresh().await;
    store.append_audit(record("a.b", None, 1), t(10)).await?;
    let r = store.append_audit(record("a.b", None, 2), t(5)).await?;
    assert_eq!(r.at, t(10));
    assert!(store.verify_audit(None).await?.is_intact());
    Ok(())
}

async fn filters_select_and_page(engine: Engine) -> R {
    let (store, _db) = engine.fresh().await;
    fill(&store, 12).await?;
    let page = |f: AuditFilter| {
        let store = store.clone();
        async move {
            let rows = store.audit_records(&f).await?;
            Ok::<_, StoreError>(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        }
    };
    let base = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    assert_eq!(page(base.clone()).await?.len(), 12);
    assert_eq!(page(base.clone()).await?[0], 12, "newest first");
    // A family of kinds and an exact kind; a prefix that is not a family matches nothing.
    let lobby = page(AuditFilter {
        kind: Some("lobby".into()),
        ..base.clone()
    })
    .await?;
    assert_eq!(lobby, [12, 9, 6, 3]);
    let exact = page(AuditFilter {
        kind: Some("lobby.admitted".into()),
        ..base.clone()
    })
    .await?;
    assert_eq!(exact, lobby);
    let partial = page(AuditFilter {
        kind: Some("lob".into()),
        ..base.clone()
    })
    .await?;
    assert!(partial.is_empty(), "{partial:?}");
    let meeting = page(AuditFilter {
        meeting_id: Some("m-even".into()),
        ..base.clone()
    })
    .await?;
    assert_eq!(meeting, [12, 10, 8, 6, 4, 2]);
    let text = page(AuditFilter {
        text: Some("person 1".into()),
        ..base.clone()
    })
    .await?;
    assert_eq!(text, [12, 11, 10, 1]);
    let window = page(AuditFilter {
        since: Some(t(3)),
        until: Some(t(6)),
        ..base.clone()
    })
    .await?;
    assert_eq!(window, [5, 4, 3]);
    let first = page(AuditFilter {
        limit: 5,
        ..base.clone()
    })
    .await?;
    assert_eq!(first, [12, 11, 10, 9, 8]);
    let next = page(AuditFilter {
        limit: 5,
        before_seq: Some(8),
        ..base.clone()
    })
    .await?;
    assert_eq!(next, [7, 6, 5, 4, 3]);
    // Filter text is data, not a pattern.
    let wild = page(AuditFilter {
        text: Some("%".into()),
        ..base
    })
    .await?;
    assert!(wild.is_empty(), "{wild:?}");
    Ok(())
}

async fn retention_deletes_the_oldest_and_records_it(engine: Engine) -> R {
    let (store, db) = engine.fresh().await;
    fill(&store, 10).await?;
    let deleted = store
        .purge_audit_before(t(5), t(100), AuditActor::system())
        .await?;
    assert_eq!(deleted, 4);
    let all = store.audit_after(0, 100).await?;
    assert_eq!(all.first().map(|r| r.seq), Some(5));
    let last = all.last().expect("records");
    assert_eq!(last.seq, 11);
    assert_eq!(last.kind, "audit.deleted");
    assert_eq!(last.details()["deleted"], 4);
    assert_eq!(last.details()["through_seq"], 4);
    let anchor = store.audit_anchor().await?.expect("anchor");
    assert_eq!(anchor.seq, 4);
    assert_eq!(last.details()["through_hash"], anchor.hash);
    assert!(store.verify_audit(None).await?.is_intact());
    // Nothing older: nothing deleted, nothing recorded.
    assert_eq!(
        store
            .purge_audit_before(t(5), t(101), AuditActor::system())
            .await?,
        0
    );
    // Everything deleted, then a new record: it follows the anchor.
    store
        .purge_audit_before(t(1000), t(102), AuditActor::system())
        .await?;
    store.append_audit(record("a.b", None, 1), t(103)).await?;
    let verdict = store.verify_audit(None).await?;
    assert!(verdict.is_intact(), "{:?}", verdict.problems);
    // Removing records at the start without moving the anchor is caught.
    tamper(
        &db,
        "DELETE FROM audit_records WHERE seq = (SELECT min(seq) FROM audit_records)",
    )
    .await;
    let verdict = store.verify_audit(None).await?;
    assert!(
        matches!(verdict.problems[..], [Problem::BadStart { .. }]),
        "{:?}",
        verdict.problems
    );
    Ok(())
}

async fn tampering_is_named(engine: Engine) -> R {
    let cases: [(&str, Problem); 5] = [
        (
            "UPDATE audit_records SET details = '{\"n\":99}' WHERE seq = 4",
            Problem::Changed { seq: 4 },
        ),
        (
            "UPDATE audit_records SET actor_name = 'Someone else' WHERE seq = 2",
            Problem::Changed { seq: 2 },
        ),
        (
            "DELETE FROM audit_records WHERE seq IN (3, 4)",
            Problem::Missing { from: 3, to: 4 },
        ),
        (
            "UPDATE audit_records SET at = at - 100000 WHERE seq = 5",
            Problem::Changed { seq: 5 },
        ),
        (
            // Move record 6 in front of record 2's place: renumber both ways.
            "UPDATE audit_records SET seq = -1 WHERE seq = 2; \
             UPDATE audit_records SET seq = 2 WHERE seq = 6; \
             UPDATE audit_records SET seq = 6 WHERE seq = -1",
            Problem::Changed { seq: 2 },
        ),
    ];
    for (sql, expected) in cases {
        let (store, db) = engine.fresh().await;
        fill(&store, 6).await?;
        let control = store.verify_audit(None).await?;
        assert!(control.is_intact(), "{:?}", control.problems);
        tamper(&db, sql).await;
        let verdict = store.verify_audit(None).await?;
        assert!(
            verdict.problems.contains(&expected),
            "{sql}: expected {expected:?} in {:?}",
            verdict.problems
        );
    }
    Ok(())
}

async fn cutting_the_end_is_caught_against_a_noted_head(engine: Engine) -> R {
    let (store, db) = engine.fresh().await;
    fill(&store, 6).await?;
    let head: Head = store.verify_audit(None).await?.head.expect("head");
    assert!(store.verify_audit(Some(head.clone())).await?.is_intact());
    tamper(&db, "DELETE FROM audit_records WHERE seq = 6").await;
    // On its own, the shorter trail looks whole; against the noted head it does not.
    assert!(store.verify_audit(None).await?.is_intact());
    let verdict = store.verify_audit(Some(head)).await?;
    assert_eq!(
        verdict.problems,
        [Problem::HeadMismatch {
            seq: 6,
            found: None
        }]
    );
    Ok(())
}

async fn the_time_filter_uses_whole_records_only(engine: Engine) -> R {
    // `since`/`until` are inclusive/exclusive bounds on the stored millisecond.
    let (store, _db) = engine.fresh().await;
    fill(&store, 3).await?;
    let rows = store
        .audit_records(&AuditFilter {
            since: Some(t(2)),
            until: Some(t(2) + Duration::milliseconds(1)),
            limit: 10,
            ..AuditFilter::default()
        })
        .await?;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [2]);
    Ok(())
}

/// Runs each named test (an `async fn(Engine) -> R`) on SQLite (a file) and on PostgreSQL.
macro_rules! on_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() -> super::R {
                    super::$name(super::Engine::SqliteFile).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> super::R {
                    super::$name(super::Engine::Postgres).await
                }
            )*
        }
    };
}

on_engines!(
    the_chain_holds_across_reopening_and_is_numbered_without_gaps,
    concurrent_writers_keep_one_chain,
    a_clock_stepped_back_does_not_reorder_the_trail,
    filters_select_and_page,
    retention_deletes_the_oldest_and_records_it,
    tampering_is_named,
    cutting_the_end_is_caught_against_a_noted_head,
    the_time_filter_uses_whole_records_only,
);

//! One store test suite, run against SQLite and against a real PostgreSQL server.

mod support;

use cordon_control_plane::store::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type Case = (&'static str, fn(Arc<dyn PolicyStore>) -> Pin<Box<dyn Future<Output = ()> + Send>>);

fn version(n: u32) -> NewVersion {
    NewVersion {
        author: format!("alice{n}"),
        created_at_ms: 1_700_000_000_000 + i64::from(n),
        reason: "apply".into(),
        message: format!("change {n}"),
        source: format!("models: [] # {n}\n"),
        content: format!("{{\"n\":{n}}}"),
        sha256: format!("{n:064x}"),
        diff: format!("-{}\n+{n}\n", n.saturating_sub(1)),
    }
}

fn key(id: &str) -> StoredKey {
    StoredKey {
        id: id.into(),
        sha256: "ab".repeat(32),
        user: "u".into(),
        team: "t".into(),
        app: Some("a".into()),
        state: KeyState::Active,
        expires_at: Some(1_900_000_000),
        created_at_ms: 5,
        created_by: "ops".into(),
    }
}

fn cases() -> Vec<Case> {
    vec![
        ("empty_store", |s| {
            Box::pin(async move {
                assert_eq!(s.latest().await.unwrap(), None);
                assert_eq!(s.latest_number().await.unwrap(), 0);
                assert!(s.history(10).await.unwrap().is_empty());
                assert!(s.keys().await.unwrap().is_empty());
            })
        }),
        ("versions_are_numbered_and_kept", |s| {
            Box::pin(async move {
                let v1 = s.append_version(0, version(1), None).await.unwrap();
                assert_eq!(v1.number, 1);
                let v2 = s.append_version(1, version(2), None).await.unwrap();
                assert_eq!(v2.number, 2);
                assert_eq!(s.latest().await.unwrap(), Some(v2.clone()));
                assert_eq!(s.latest_number().await.unwrap(), 2);
                assert_eq!(s.get(1).await.unwrap(), Some(v1.clone()));
                assert_eq!(s.get(3).await.unwrap(), None);
                let h = s.history(10).await.unwrap();
                assert_eq!(h, vec![v2.clone(), v1]);
                assert_eq!(s.history(1).await.unwrap(), vec![v2]);
            })
        }),
        ("stale_writer_gets_conflict", |s| {
            Box::pin(async move {
                s.append_version(0, version(1), None).await.unwrap();
                match s.append_version(0, version(2), None).await {
                    Err(StoreError::Conflict { expected: 0, found: 1 }) => {}
                    other => panic!("expected conflict, got {other:?}"),
                }
                assert_eq!(s.latest_number().await.unwrap(), 1);
            })
        }),
        ("key_changes_commit_with_their_version", |s| {
            Box::pin(async move {
                s.append_version(0, version(1), Some(KeyChange::Insert(key("k1")))).await.unwrap();
                assert_eq!(s.keys().await.unwrap(), vec![key("k1")]);
                s.append_version(1, version(2), Some(KeyChange::SetState("k1".into(), KeyState::Revoked))).await.unwrap();
                assert_eq!(s.keys().await.unwrap()[0].state, KeyState::Revoked);
                let mut k2 = key("k0");
                k2.app = None;
                k2.expires_at = None;
                s.append_version(2, version(3), Some(KeyChange::Insert(k2.clone()))).await.unwrap();
                let keys = s.keys().await.unwrap();
                assert_eq!(keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k0", "k1"]);
                assert_eq!(keys[0], k2);
            })
        }),
        ("failed_key_change_appends_no_version", |s| {
            Box::pin(async move {
                s.append_version(0, version(1), Some(KeyChange::Insert(key("k1")))).await.unwrap();
                match s.append_version(1, version(2), Some(KeyChange::Insert(key("k1")))).await {
                    Err(StoreError::DuplicateKey(id)) => assert_eq!(id, "k1"),
                    other => panic!("expected duplicate key, got {other:?}"),
                }
                match s.append_version(1, version(2), Some(KeyChange::SetState("nope".into(), KeyState::Revoked))).await {
                    Err(StoreError::UnknownKey(id)) => assert_eq!(id, "nope"),
                    other => panic!("expected unknown key, got {other:?}"),
                }
                assert_eq!(s.latest_number().await.unwrap(), 1);
                assert_eq!(s.keys().await.unwrap().len(), 1);
            })
        }),
        ("admin_log_appends_in_order", |s| {
            Box::pin(async move {
                let mut seqs = vec![];
                for i in 0..5 {
                    let e =
                        NewLogEntry { at_ms: i, actor: "ops".into(), action: "apply".into(), target: format!("{i}"), outcome: "ok".into() };
                    seqs.push(s.append_log(e).await.unwrap());
                }
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs increase: {seqs:?}");
                let all = s.log(0, 100).await.unwrap();
                assert_eq!(all.len(), 5);
                assert_eq!(all[2].entry.target, "2");
                let tail = s.log(seqs[2], 100).await.unwrap();
                assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs[3..].to_vec());
                assert_eq!(s.log(0, 2).await.unwrap().len(), 2);
            })
        }),
        ("concurrent_writers_never_fork_history", |s| {
            Box::pin(async move {
                // Each writer retries on conflict, as the server does; numbers must stay gap-free.
                let mut tasks = vec![];
                for w in 0..4u32 {
                    let s = Arc::clone(&s);
                    tasks.push(tokio::spawn(async move {
                        for i in 0..5u32 {
                            loop {
                                let latest = s.latest_number().await.unwrap();
                                match s.append_version(latest, version(w * 100 + i), None).await {
                                    Ok(_) => break,
                                    Err(StoreError::Conflict { .. }) => continue,
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                let h = s.history(100).await.unwrap();
                assert_eq!(h.len(), 20);
                assert_eq!(h.iter().map(|v| v.number).collect::<Vec<_>>(), (1..=20).rev().collect::<Vec<_>>());
            })
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, case)) in cases().into_iter().enumerate() {
        eprintln!("sqlite: {name}");
        let store = SqliteStore::open(&dir.path().join(format!("{i}.db"))).unwrap();
        case(Arc::new(store)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_suite() {
    let pg = support::pg::PgServer::start();
    for (i, (name, case)) in cases().into_iter().enumerate() {
        eprintln!("postgres: {name}");
        let url = pg.fresh_db(&format!("case{i}")).await;
        let store = PostgresStore::connect(&url).await.unwrap();
        case(Arc::new(store)).await;
    }
}

#[tokio::test]
async fn sqlite_history_and_log_are_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(&path).unwrap();
    store.append_version(0, version(1), None).await.unwrap();
    let e = NewLogEntry { at_ms: 1, actor: "a".into(), action: "apply".into(), target: "1".into(), outcome: "ok".into() };
    store.append_log(e).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let err = conn.execute("UPDATE versions SET content = 'x'", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(conn.execute("DELETE FROM admin_log", []).unwrap_err().to_string().contains("append-only"));
}

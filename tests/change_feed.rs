//! The PostgreSQL change feed on its own (library level, against the test server): it follows
//! notifications on `cirrus_changes`, only committed ones arrive, and after losing its
//! connection it listens again with every generation changed. Skipped (visibly) without
//! `CIRRUS_TEST_DATABASE_URL`.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use cirrus::model::TenantId;
use cirrus::storage::changes::{
    CHANNEL, ChangeFeed, Topic, listener_application_name, notify_payload,
};
use common::*;

fn unique_tenant(label: &str) -> TenantId {
    TenantId::parse(&format!("{label}-{}", uuid::Uuid::new_v4().simple())).unwrap()
}

async fn notify(db: &sqlx::PgPool, tenant: &TenantId, topic: Topic) {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(notify_payload(tenant, topic))
        .execute(db)
        .await
        .unwrap();
}

/// Waits (up to 10 s) until `ok` holds.
async fn until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn listener_pids(db: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
        .bind(listener_application_name())
        .fetch_all(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_postgres_feed_follows_commits_and_resumes_after_losing_its_connection() {
    let Some(url) = postgres_url() else {
        report_postgres_skipped();
        return;
    };
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let feed = ChangeFeed::postgres(&url, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(feed.is_live(), "listening once start-up returns");
    let (t, other) = (unique_tenant("t"), unique_tenant("other"));
    let cfg = |x: &TenantId| feed.generation(x, Topic::Configurations);
    let (t0, o0) = (cfg(&t).unwrap(), cfg(&other).unwrap());
    let k0 = feed.generation(&t, Topic::Checkins);

    // A committed notification bumps exactly its tenant and topic.
    notify(&db, &t, Topic::Configurations).await;
    until("notification", || cfg(&t) != Some(t0)).await;
    let t1 = cfg(&t).unwrap();
    assert!(t1 > t0);
    assert_eq!(cfg(&other), Some(o0));
    assert_eq!(feed.generation(&t, Topic::Checkins), k0);

    // A rolled-back one never arrives: notifications come in commit order, so once a later
    // sentinel has arrived the rolled-back one would have too.
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(notify_payload(&t, Topic::Configurations))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let sentinel = unique_tenant("sentinel");
    let s0 = cfg(&sentinel);
    notify(&db, &sentinel, Topic::Configurations).await;
    until("sentinel", || cfg(&sentinel) != s0).await;
    assert_eq!(cfg(&t), Some(t1), "a rolled-back write notified");

    // Kill the listener's session: the feed listens again on a new one, and since
    // notifications may have been lost meanwhile, every generation has changed.
    let pids = listener_pids(&db).await;
    assert_eq!(pids.len(), 1, "{pids:?}");
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pids[0])
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(killed);
    until("a new listener session", || {
        cfg(&other).is_some_and(|g| g != o0) && cfg(&t).is_some_and(|g| g != t1)
    })
    .await;
    let again = listener_pids(&db).await;
    assert!(again.len() == 1 && again[0] != pids[0], "{again:?}");
    // And it follows notifications again.
    let t2 = cfg(&t);
    notify(&db, &t, Topic::Configurations).await;
    until("notification after reconnecting", || cfg(&t) != t2).await;
    db.close().await;
}

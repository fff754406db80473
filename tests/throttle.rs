//! Throttling (graph-conventions.md §11): per tenant and per app per tenant, writes and all
//! methods; `429 TooManyRequests` with `Retry-After`; a refused request has no effect; every
//! `$batch` sub-request counts; `--throttle off` never throttles.
//!
//! The harness starts servers with `--throttle off` unless a test passes `--throttle` itself.
#[macro_use]
mod common;

use std::time::Duration;

use cirrus::auth::dev::claims_for;
use common::*;
use serde_json::{Value, json};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A delegated ReadWrite.All token for `tenant` issued to the app `appid`.
fn app_token(s: &Server, tenant: &str, appid: Option<&str>) -> String {
    let mut claims = claims_for(&request(tenant), now()).unwrap();
    claims.appid = appid.map(str::to_string);
    s.mint(&claims)
}

fn windows(name: &str) -> Value {
    json!({"@odata.type": WINDOWS, "displayName": name})
}

/// Asserts a throttling refusal; returns its Retry-After.
fn assert_throttled(r: &Res, limit_words: &str) -> u64 {
    let msg = r.assert_error(429, "TooManyRequests");
    assert!(msg.starts_with("Please retry again later."), "{msg}");
    assert!(msg.contains(limit_words), "{msg}");
    r.header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in whole seconds")
}

async fn count(s: &Server, t: &str) -> usize {
    let r = s.get(CONFIGS, t).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["value"].as_array().unwrap().len()
}

async fn the_write_over_the_limit_gets_429_and_changes_nothing() {
    let s = Server::start_with(&["--throttle", "on", "--throttle-app-writes", "3"]).await;
    let t = s.token("contoso");
    let mut ids = vec![];
    for i in 0..3 {
        ids.push(id_of(&s.create_windows(&t, &format!("c{i}")).await));
    }
    let r = s.post(CONFIGS, &t, windows("refused")).await;
    let retry = assert_throttled(
        &r,
        "3 write requests per application per tenant per 20 seconds",
    );
    assert!((1..=20).contains(&retry), "{retry}");
    // PATCH and DELETE are writes too, and refused before they run.
    let r = s
        .patch(&cfg(&ids[0]), &t, json!({"displayName": "renamed"}))
        .await;
    assert_throttled(&r, "write requests");
    let r = s.delete(&cfg(&ids[1]), &t).await;
    assert_throttled(&r, "write requests");
    // Reads still pass, and show that the refused requests had no effect.
    let list = s.get(CONFIGS, &t).await.json();
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{list}");
    assert!(!names.contains(&"refused") && !names.contains(&"renamed"));
}

async fn reads_have_their_own_limit() {
    let s = Server::start_with(&[
        "--throttle",
        "on",
        "--throttle-app-writes",
        "2",
        "--throttle-app-requests",
        "5",
    ])
    .await;
    let t = s.token("contoso");
    s.create_windows(&t, "a").await;
    s.create_windows(&t, "b").await;
    // The write budget is gone, reads are not throttled by it...
    assert_throttled(
        &s.post(CONFIGS, &t, windows("c")).await,
        "write requests per application",
    );
    for _ in 0..3 {
        assert_eq!(s.get(CONFIGS, &t).await.status, 200);
    }
    // ...but all methods (the 2 writes + 3 reads) count against the request limit.
    let r = s.get("/officeConfiguration", &t).await;
    assert_throttled(&r, "5 requests per application per tenant");
}

async fn apps_and_tenants_have_their_own_budgets() {
    let s = Server::start_with(&[
        "--throttle",
        "on",
        "--throttle-app-writes",
        "2",
        "--throttle-tenant-writes",
        "3",
    ])
    .await;
    let one = app_token(&s, "contoso", Some("11111111-1111-1111-1111-111111111111"));
    let two = app_token(&s, "contoso", Some("22222222-2222-2222-2222-222222222222"));
    let no_app = app_token(&s, "contoso", None);
    let other_tenant = app_token(&s, "fabrikam", Some("11111111-1111-1111-1111-111111111111"));

    s.create_windows(&one, "1a").await;
    s.create_windows(&one, "1b").await;
    assert_throttled(
        &s.post(CONFIGS, &one, windows("1c")).await,
        "2 write requests per application per tenant",
    );
    // Another app: its own app budget, but the tenant's 3 writes are shared.
    s.create_windows(&two, "2a").await;
    assert_throttled(
        &s.post(CONFIGS, &two, windows("2b")).await,
        "3 write requests per tenant",
    );
    assert_throttled(
        &s.post(CONFIGS, &no_app, windows("x")).await,
        "3 write requests per tenant",
    );
    // Another tenant (same app id): a budget of its own.
    s.create_windows(&other_tenant, "f1").await;
    s.create_windows(&other_tenant, "f2").await;
    assert_eq!(count(&s, &one).await, 3);
    assert_eq!(count(&s, &other_tenant).await, 2);
}

async fn tokens_without_an_app_id_share_one_bucket_per_tenant() {
    let s = Server::start_with(&["--throttle", "on", "--throttle-app-writes", "1"]).await;
    let a = app_token(&s, "contoso", None);
    let b = app_token(&s, "contoso", None);
    s.create_windows(&a, "a").await;
    assert_throttled(&s.post(CONFIGS, &b, windows("b")).await, "per application");
}

async fn every_batch_sub_request_counts() {
    let s = Server::start_with(&["--throttle", "on", "--throttle-app-writes", "3"]).await;
    let t = s.token("contoso");
    let requests: Vec<Value> = (1..=5)
        .map(|i| {
            json!({
                "id": i.to_string(),
                "method": "POST",
                "url": "/officeConfiguration/clientConfigurations",
                "headers": {"Content-Type": "application/json"},
                "body": windows(&format!("b{i}")),
            })
        })
        .collect();
    // The batch POST itself is not a write: the first three sub-requests get through.
    let r = s.post("/$batch", &t, json!({ "requests": requests })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let responses = v["responses"].as_array().unwrap();
    let statuses: Vec<u64> = responses
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 201, 201, 429, 429], "{v}");
    for refused in &responses[3..] {
        let retry = refused["headers"]["Retry-After"]
            .as_str()
            .unwrap_or_else(|| panic!("no Retry-After: {refused}"));
        assert!((1..=20).contains(&retry.parse::<u64>().unwrap()), "{retry}");
        assert_eq!(refused["body"]["error"]["code"], "TooManyRequests");
        assert!(
            refused["body"]["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Please retry again later.")
        );
    }
    assert_eq!(count(&s, &t).await, 3);
    // And the budget they used is the same one requests outside a batch use.
    assert_throttled(&s.post(CONFIGS, &t, windows("after")).await, "write");
}

async fn requests_succeed_again_once_the_window_has_passed() {
    let s = Server::start_with(&[
        "--throttle",
        "on",
        "--throttle-app-writes",
        "1",
        "--throttle-window-secs",
        "2",
    ])
    .await;
    let t = s.token("contoso");
    s.create_windows(&t, "first").await;
    let r = s.post(CONFIGS, &t, windows("refused")).await;
    let retry = assert_throttled(
        &r,
        "1 write requests per application per tenant per 2 seconds",
    );
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    s.create_windows(&t, "second").await;
    assert_eq!(count(&s, &t).await, 2);
}

async fn throttle_off_never_throttles() {
    let s = Server::start_with(&[
        "--throttle",
        "off",
        "--throttle-app-writes",
        "1",
        "--throttle-tenant-writes",
        "1",
        "--throttle-app-requests",
        "1",
        "--throttle-tenant-requests",
        "1",
    ])
    .await;
    let t = s.token("contoso");
    for i in 0..5 {
        s.create_windows(&t, &format!("c{i}")).await;
    }
    for _ in 0..5 {
        assert_eq!(s.get(CONFIGS, &t).await.status, 200);
    }
}

/// With no limits given, Intune's published ones apply: 100 writes per 20 s per app.
async fn the_defaults_are_intunes_published_limits() {
    let s = Server::start_with(&["--throttle", "on"]).await;
    let t = s.token("contoso");
    // Writes that fail (404) still count, as in Graph; they are cheap to send.
    let missing = cfg("0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01");
    for _ in 0..100 {
        let r = s.delete(&missing, &t).await;
        assert_eq!(r.status, 404, "{}", r.text);
    }
    let r = s.delete(&missing, &t).await;
    assert_throttled(
        &r,
        "100 write requests per application per tenant per 20 seconds",
    );
}

engine_tests!(
    the_write_over_the_limit_gets_429_and_changes_nothing,
    reads_have_their_own_limit,
    apps_and_tenants_have_their_own_budgets,
    tokens_without_an_app_id_share_one_bucket_per_tenant,
    every_batch_sub_request_counts,
    requests_succeed_again_once_the_window_has_passed,
    throttle_off_never_throttles,
    the_defaults_are_intunes_published_limits,
);

//! Office client check-ins and the Graph views computed from them: what is stored, the latest
//! status per (user, device), the tenant and per-configuration summaries, the 90-day window
//! (with the clock moved forward through the dev-mode test hook), the status caps, strict
//! validation, and how a Graph PATCH of the check-in properties interacts with check-ins.

#[macro_use]
mod common;

use cirrus::auth::dev::TokenRequest;
use common::*;
use serde_json::{Value, json};

const G1: &str = "11111111-1111-4111-8111-111111111111";
const CHECKINS: &str = "/cirrus/v1/client/checkins";

fn user(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn user_token(s: &Server, n: u32) -> String {
    s.token_with(TokenRequest {
        user: Some(user(n)),
        upn: Some(format!("user{n}@contoso.example")),
        scopes: Some("openid".into()),
        groups: Some(G1.into()),
        ..request("contoso")
    })
}

async fn checkin(s: &Server, token: &str, body: Value) -> Res {
    Server::finish(
        s.client
            .post(format!("{}{CHECKINS}", s.base))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

async fn report(s: &Server, token: &str, device: &str, ok: bool, applied: &[&str]) -> Value {
    let r = checkin(
        s,
        token,
        json!({
            "deviceName": device,
            "devicePlatform": "Windows",
            "devicePlatformVersion": "10.0.22631",
            "wasSuccessful": ok,
            "errorMessage": if ok { Value::Null } else { json!("policy failed to apply") },
            "appliedPolicies": applied,
            "lastTaskName": "PolicySync",
        }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()
}

fn summary(v: &Value) -> (i64, i64) {
    (
        v["succeededUserCount"].as_i64().unwrap(),
        v["failedUserCount"].as_i64().unwrap(),
    )
}

async fn tenant_view(s: &Server, admin: &str) -> (Vec<Value>, (i64, i64)) {
    let r = s.get("/officeConfiguration", admin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v: Value = r.json();
    (
        v["tenantCheckinStatuses"].as_array().unwrap().clone(),
        summary(&v["tenantUserCheckinSummary"]),
    )
}

async fn config_view(s: &Server, admin: &str, id: &str) -> (Vec<Value>, (i64, i64)) {
    let r = s.get(&cfg(id), admin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v: Value = r.json();
    (
        v["checkinStatuses"].as_array().unwrap().clone(),
        summary(&v["userCheckinSummary"]),
    )
}

async fn checkins_feed_tenant_and_configuration_views() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let a = id_of(&s.create_windows(&admin, "A").await);
    let b = id_of(
        &s.create(&admin, json!({"@odata.type": SECURITY, "displayName": "B"}))
            .await,
    );
    // Nothing reported yet: empty views, not errors.
    assert_eq!(tenant_view(&s, &admin).await, (vec![], (0, 0)));
    assert_eq!(config_view(&s, &admin, &a).await, (vec![], (0, 0)));

    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let stored = report(&s, &user_token(&s, 1), "PC-1", true, &[&a, &b]).await;
    // The server fills in who and when.
    assert_eq!(stored["userId"], user(1));
    assert_eq!(stored["userPrincipalName"], "user1@contoso.example");
    assert_eq!(stored["deviceName"], "PC-1");
    assert_eq!(
        stored["@odata.type"],
        "#microsoft.graph.officeClientCheckinStatus"
    );
    let at = time::OffsetDateTime::parse(
        stored["checkinDateTime"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(at > before && at < before + time::Duration::minutes(5));
    report(&s, &user_token(&s, 2), "PC-2", false, &[&a]).await;

    let (statuses, sum) = tenant_view(&s, &admin).await;
    assert_eq!(sum, (1, 1));
    assert_eq!(statuses.len(), 2);
    // Newest first, with every reported field.
    assert_eq!(statuses[0]["userId"], user(2));
    assert_eq!(statuses[0]["wasSuccessful"], false);
    assert_eq!(statuses[0]["errorMessage"], "policy failed to apply");
    assert_eq!(statuses[1]["appliedPolicies"], json!([a, b]));
    assert_eq!(statuses[1]["devicePlatformVersion"], "10.0.22631");
    assert_eq!(statuses[1]["lastTaskName"], "PolicySync");

    let (a_statuses, a_sum) = config_view(&s, &admin, &a).await;
    assert_eq!((a_statuses.len(), a_sum), (2, (1, 1)));
    let (b_statuses, b_sum) = config_view(&s, &admin, &b).await;
    assert_eq!((b_statuses.len(), b_sum), (1, (1, 0)));
    assert_eq!(b_statuses[0]["userId"], user(1));

    // The collection carries the same per-configuration views; $select can leave them out.
    let list: Value = s
        .get("/officeConfiguration/clientConfigurations", &admin)
        .await
        .json();
    let by_id = |id: &str| {
        list["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(summary(&by_id(&a)["userCheckinSummary"]), (1, 1));
    assert_eq!(summary(&by_id(&b)["userCheckinSummary"]), (1, 0));
    let lean: Value = s
        .get(
            "/officeConfiguration/clientConfigurations?$select=displayName",
            &admin,
        )
        .await
        .json();
    assert!(lean["value"][0].get("checkinStatuses").is_none());
    // So does $expand from the singleton.
    let expanded: Value = s
        .get("/officeConfiguration?$expand=clientConfigurations", &admin)
        .await
        .json();
    let exp_a = expanded["clientConfigurations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == a.as_str())
        .unwrap()
        .clone();
    assert_eq!(summary(&exp_a["userCheckinSummary"]), (1, 1));

    // Another tenant sees none of it.
    let other = s.token("fabrikam");
    assert_eq!(tenant_view(&s, &other).await, (vec![], (0, 0)));
}

async fn latest_status_per_user_and_device() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let u = user_token(&s, 7);
    report(&s, &u, "Laptop-7", true, &[]).await;
    // Same device (names are case-insensitive): replaces the earlier status.
    report(&s, &u, "LAPTOP-7", false, &[]).await;
    let (statuses, sum) = tenant_view(&s, &admin).await;
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0]["deviceName"], "LAPTOP-7");
    assert_eq!(sum, (0, 1));
    // A second device: two statuses, but the user counts once, by the latest check-in.
    report(&s, &u, "Desktop-7", true, &[]).await;
    let (statuses, sum) = tenant_view(&s, &admin).await;
    assert_eq!(statuses.len(), 2);
    assert_eq!(sum, (1, 0));
    report(&s, &u, "laptop-7", false, &[]).await;
    assert_eq!(tenant_view(&s, &admin).await.1, (0, 1));
}

async fn checkin_validation_is_strict_and_stores_nothing() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let u = user_token(&s, 1);
    let long = "x".repeat(257);
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "must be a JSON object"),
        (json!({"wasSuccessful": true}), "'deviceName'"),
        (json!({"deviceName": "PC"}), "'wasSuccessful'"),
        (
            json!({"deviceName": "PC", "wasSuccessful": "yes"}),
            "must be a boolean",
        ),
        (
            json!({"deviceName": 5, "wasSuccessful": true}),
            "'deviceName' must be a string",
        ),
        (
            json!({"deviceName": " ", "wasSuccessful": true}),
            "must not be empty",
        ),
        (
            json!({"deviceName": long, "wasSuccessful": true}),
            "longer than 256",
        ),
        (
            json!({"deviceName": "PC", "wasSuccessful": true, "color": "red"}),
            "'color' does not exist",
        ),
        (
            json!({"deviceName": "PC", "wasSuccessful": true, "userId": user(9)}),
            "set by the service",
        ),
        (
            json!({"deviceName": "PC", "wasSuccessful": true, "checkinDateTime": "2024-01-01T00:00:00Z"}),
            "set by the service",
        ),
        (
            json!({"deviceName": "PC", "wasSuccessful": true, "appliedPolicies": "abc"}),
            "'appliedPolicies' must be",
        ),
        (
            json!({"deviceName": "PC", "wasSuccessful": true, "appliedPolicies": ["not-a-guid"]}),
            "appliedPolicies[0]",
        ),
        (
            json!({"deviceName": "PC\u{7}", "wasSuccessful": true}),
            "control characters",
        ),
        (
            json!({"deviceName": "PC", "wasSuccessful": true, "@odata.type": "#microsoft.graph.officeUserCheckinSummary"}),
            "@odata.type",
        ),
    ];
    for (body, needle) in cases {
        let r = checkin(&s, &u, body.clone()).await;
        r.assert_error(400, "BadRequest");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let too_many: Vec<String> = (0..501)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    checkin(
        &s,
        &u,
        json!({"deviceName": "PC", "wasSuccessful": true, "appliedPolicies": too_many}),
    )
    .await
    .assert_error(400, "BadRequest");
    // Not JSON at all, and the wrong media type.
    let r = Server::finish(
        s.client
            .post(format!("{}{CHECKINS}", s.base))
            .bearer_auth(&u)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    r.assert_error(400, "BadRequest");
    let r = Server::finish(
        s.client
            .post(format!("{}{CHECKINS}", s.base))
            .bearer_auth(&u)
            .header("content-type", "text/plain")
            .body("hello"),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text);
    // Who may report: users only, authenticated.
    let app = s.token_with(TokenRequest {
        roles: Some(READ_WRITE_ALL.into()),
        ..request("contoso")
    });
    checkin(&s, &app, json!({"deviceName": "PC", "wasSuccessful": true}))
        .await
        .assert_error(403, "Forbidden");
    Server::finish(
        s.client
            .post(format!("{}{CHECKINS}", s.base))
            .json(&json!({"deviceName": "PC", "wasSuccessful": true})),
    )
    .await
    .assert_error(401, "InvalidAuthenticationToken");
    // None of the refused reports left a trace.
    assert_eq!(tenant_view(&s, &admin).await, (vec![], (0, 0)));
}

async fn unknown_and_deleted_policy_ids_are_kept_as_reported() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let a = id_of(&s.create_windows(&admin, "A").await);
    let unknown = "abcdefab-0000-4000-8000-000000000001";
    // Upper case and braces are a GUID too; stored in the canonical form, duplicates once.
    let upper = format!("{{{}}}", a.to_uppercase());
    let stored = report(&s, &user_token(&s, 1), "PC-1", true, &[&a, unknown, &upper]).await;
    assert_eq!(stored["appliedPolicies"], json!([a, unknown]));
    assert_eq!(config_view(&s, &admin, &a).await.1, (1, 0));
    // Deleting the configuration keeps the report as the device made it.
    let r = s.delete(&cfg(&a), &admin).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let (statuses, sum) = tenant_view(&s, &admin).await;
    assert_eq!(sum, (1, 0));
    assert_eq!(statuses[0]["appliedPolicies"], json!([a, unknown]));
}

async fn ninety_day_window_uses_the_server_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock-offset");
    std::fs::write(&clock, "0").unwrap();
    let s = Server::start_with(&["--clock-offset-file", clock.to_str().unwrap()]).await;
    let admin = s.token("contoso");
    let a = id_of(&s.create_windows(&admin, "A").await);
    report(&s, &user_token(&s, 1), "PC-1", true, &[&a]).await;
    std::fs::write(&clock, (60 * 86_400).to_string()).unwrap();
    report(&s, &user_token(&s, 2), "PC-2", false, &[&a]).await;
    assert_eq!(tenant_view(&s, &admin).await.1, (1, 1));
    // 89 days after the first report: both still count.
    std::fs::write(&clock, (89 * 86_400).to_string()).unwrap();
    assert_eq!(tenant_view(&s, &admin).await.1, (1, 1));
    assert_eq!(config_view(&s, &admin, &a).await.1, (1, 1));
    // 91 days after it: the first report has aged out of every view.
    std::fs::write(&clock, (91 * 86_400).to_string()).unwrap();
    let (statuses, sum) = tenant_view(&s, &admin).await;
    assert_eq!(sum, (0, 1));
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0]["userId"], user(2));
    let (a_statuses, a_sum) = config_view(&s, &admin, &a).await;
    assert_eq!((a_statuses.len(), a_sum), (1, (0, 1)));
    // A user whose latest report aged out but who reports again counts again.
    report(&s, &user_token(&s, 1), "PC-1", true, &[&a]).await;
    assert_eq!(tenant_view(&s, &admin).await.1, (1, 1));
    // 200 days on: nothing is in the window.
    std::fs::write(&clock, (200 * 86_400).to_string()).unwrap();
    assert_eq!(tenant_view(&s, &admin).await, (vec![], (0, 0)));
}

/// 130 users report at once (the group-commit path): every report is acknowledged and counted,
/// and the embedded lists stop at the documented cap of 100, newest first.
async fn status_lists_are_capped_and_summaries_count_everyone() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let a = id_of(&s.create_windows(&admin, "A").await);
    let tokens: Vec<String> = (0..130).map(|n| user_token(&s, n)).collect();
    let reports = tokens.iter().enumerate().map(|(n, t)| {
        let s = &s;
        let a = a.clone();
        async move {
            let r = checkin(
                s,
                t,
                json!({"deviceName": format!("PC-{n}"), "wasSuccessful": n % 10 != 0, "appliedPolicies": [a]}),
            )
            .await;
            assert_eq!(r.status, 201, "{}", r.text);
        }
    });
    futures::future::join_all(reports).await;
    let (statuses, sum) = tenant_view(&s, &admin).await;
    assert_eq!(statuses.len(), 100);
    assert_eq!(sum, (117, 13));
    let times: Vec<&str> = statuses
        .iter()
        .map(|v| v["checkinDateTime"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let (a_statuses, a_sum) = config_view(&s, &admin, &a).await;
    assert_eq!((a_statuses.len(), a_sum), (100, (117, 13)));

    // The cap is an operator setting.
    let small = Server::start_with(&["--checkin-status-cap", "3"]).await;
    let admin = small.token("contoso");
    for n in 0..5 {
        report(&small, &user_token(&small, n), "PC", true, &[]).await;
    }
    let (statuses, sum) = tenant_view(&small, &admin).await;
    assert_eq!((statuses.len(), sum), (3, (5, 0)));
    assert_eq!(statuses[0]["userId"], user(4));
}

async fn graph_patch_shows_until_the_next_checkin_in_scope() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let a = id_of(&s.create_windows(&admin, "A").await);
    let b = id_of(&s.create_windows(&admin, "B").await);
    report(&s, &user_token(&s, 1), "PC-1", true, &[&a]).await;

    // Tenant scope: the patched summary shows; the statuses stay as they were when patched.
    let r = s
        .patch(
            "/officeConfiguration",
            &admin,
            json!({"tenantUserCheckinSummary": {"@odata.type": "microsoft.graph.officeUserCheckinSummary", "succeededUserCount": 40, "failedUserCount": 2}}),
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text);
    let (statuses, sum) = tenant_view(&s, &admin).await;
    assert_eq!(sum, (40, 2));
    assert_eq!(statuses.len(), 1);
    // Configuration scope.
    let r = s
        .patch(
            &cfg(&a),
            &admin,
            json!({"@odata.type": WINDOWS, "userCheckinSummary": {"succeededUserCount": 9, "failedUserCount": 9}, "checkinStatuses": []}),
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text);
    assert_eq!(config_view(&s, &admin, &a).await, (vec![], (9, 9)));

    // A check-in that applied only B ends the tenant's override and B's, not A's.
    report(&s, &user_token(&s, 2), "PC-2", false, &[&b]).await;
    assert_eq!(tenant_view(&s, &admin).await.1, (1, 1));
    assert_eq!(config_view(&s, &admin, &a).await.1, (9, 9));
    assert_eq!(config_view(&s, &admin, &b).await.1, (0, 1));
    // One that applied A recomputes A.
    report(&s, &user_token(&s, 3), "PC-3", true, &[&a]).await;
    let (a_statuses, a_sum) = config_view(&s, &admin, &a).await;
    assert_eq!((a_statuses.len(), a_sum), (2, (2, 0)));
    // A PATCH of other properties leaves the computed views alone.
    s.patch(
        &cfg(&a),
        &admin,
        json!({"@odata.type": WINDOWS, "displayName": "A2"}),
    )
    .await;
    assert_eq!(config_view(&s, &admin, &a).await.1, (2, 0));
}

/// Group commit must not trade durability: the server is killed (SIGKILL) while 16 clients are
/// reporting; after a restart every acknowledged report is there.
async fn acknowledged_checkins_survive_a_crash() {
    let mut s = Server::start_with(&["--checkin-status-cap", "1000"]).await;
    let admin = s.token("contoso");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for u in 0..16u32 {
        let (client, base, token) = (s.client.clone(), s.base.clone(), user_token(&s, u));
        let (acked, stop) = (acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            for k in 0..50 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let device = format!("dev-{u}-{k}");
                let r = client
                    .post(format!("{base}{CHECKINS}"))
                    .bearer_auth(&token)
                    .json(&json!({"deviceName": device, "wasSuccessful": true}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push((user(u), device)),
                    _ => break,
                }
            }
        }));
    }
    // Let reports flow, then pull the plug mid-stream.
    for _ in 0..100 {
        if acked.lock().unwrap().len() >= 150 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    s.restart().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    futures::future::join_all(clients).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 16,
        "too few reports got through: {}",
        acked.len()
    );
    let (statuses, _) = tenant_view(&s, &admin).await;
    let stored: std::collections::HashSet<(String, String)> = statuses
        .iter()
        .map(|v| {
            (
                v["userId"].as_str().unwrap().to_string(),
                v["deviceName"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lost: Vec<_> = acked.iter().filter(|a| !stored.contains(a)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

/// Check-ins are acknowledged once logged; the log is applied to the view tables in the
/// background, without waiting for a Graph read to need them.
async fn the_checkin_log_is_applied_in_the_background() {
    let s = Server::start().await;
    let token = user_token(&s, 1);
    for d in 0..10 {
        report(&s, &token, &format!("PC-{d}"), true, &[]).await;
    }
    let mut text = String::new();
    for _ in 0..100 {
        text = s
            .client
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text
            .lines()
            .any(|l| l == "cirrus_checkins_materialized_total 10")
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the log was not applied within 10 s:\n{text}");
}

engine_tests!(
    the_checkin_log_is_applied_in_the_background,
    checkins_feed_tenant_and_configuration_views,
    latest_status_per_user_and_device,
    checkin_validation_is_strict_and_stores_nothing,
    unknown_and_deleted_policy_ids_are_kept_as_reported,
    ninety_day_window_uses_the_server_clock,
    status_lists_are_capped_and_summaries_count_everyone,
    graph_patch_shows_until_the_next_checkin_in_scope,
    acknowledged_checkins_survive_a_crash,
);

/// Two instances on one PostgreSQL: B caches its views; a check-in through A reaches them
/// (NOTIFY right after the batch commits), well before the cache's time limit.
#[tokio::test]
async fn a_checkin_through_one_instance_refreshes_the_others_views() {
    if postgres_url().is_none() {
        report_postgres_skipped();
        return;
    }
    let schema = std::sync::Arc::new(PgSchema::create().await);
    let a = Server::start_on(Some(schema.clone()), None, &[]).await;
    let b = Server::start_on(Some(schema.clone()), Some(&a), &[]).await;
    let admin = a.token("contoso");
    let c = id_of(&a.create_windows(&admin, "A").await);
    for n in 0..5u32 {
        // B computes and caches…
        assert_eq!(tenant_view(&b, &admin).await.1, (i64::from(n), 0));
        assert_eq!(config_view(&b, &admin, &c).await.1, (i64::from(n), 0));
        // …a report lands through A…
        report(&a, &user_token(&a, n), "PC", true, &[&c]).await;
        // …and B shows it within moments.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let fresh = tenant_view(&b, &admin).await.1 == (i64::from(n) + 1, 0)
                && config_view(&b, &admin, &c).await.1 == (i64::from(n) + 1, 0);
            if fresh {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "B's views stayed stale"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

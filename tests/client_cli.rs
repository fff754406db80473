//! `cirrus client …`, the Office-client simulator, run as a process against the real server:
//! `policy` prints what the server computed for the token's user, errors come out as the
//! envelope's `code: message`, `load` refuses non-loopback targets and summarises a run.
//! `checkin` and `load` report through the real `POST /cirrus/v1/client/checkins`.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use cirrus::auth::dev::TokenRequest;
use common::*;
use serde_json::{Value, json};

const G1: &str = "11111111-1111-4111-8111-111111111111";
const G2: &str = "22222222-2222-4222-8222-222222222222";
const USER: &str = "00000000-0000-4000-8000-0000000000c1";
const UPN: &str = "client@contoso.example";

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the built `cirrus` binary with `args` (no ambient CIRRUS_* settings, no backtraces).
async fn cirrus(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_cirrus"))
        .args(args)
        .env_remove("CIRRUS_URL")
        .env_remove("CIRRUS_TOKEN")
        .env_remove("CIRRUS_DATA_DIR")
        .env("RUST_BACKTRACE", "0")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("cirrus client finished within 60 s")
        .expect("run cirrus");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn user_token(s: &Server, groups: &str) -> String {
    s.token_with(TokenRequest {
        user: Some(USER.into()),
        upn: Some(UPN.into()),
        scopes: Some(READ_ALL.into()),
        groups: Some(groups.into()),
        ..request("contoso")
    })
}

/// A configuration with `{"BlockMacros":true}` assigned to `group`; returns its id.
async fn assigned_configuration(s: &Server, admin: &str, group: &str) -> String {
    let c = s
        .create(
            admin,
            json!({"@odata.type": WINDOWS, "displayName": "CLI baseline",
                   "policyPayload": b64(r#"{"BlockMacros":true}"#)}),
        )
        .await;
    let id = id_of(&c);
    let r = s
        .post(
            &format!("{}/assign", cfg(&id)),
            admin,
            json!({"officeConfigurationAssignments": [{"target": group_target(group)}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    id
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            out.stdout, out.stderr
        )
    })
}

/// The number after `requests` on the summary line that starts with `kind`.
fn summary_requests(summary: &str, kind: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} line in the summary:\n{summary}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "requests")
        .unwrap_or_else(|| panic!("no request count: {line}"));
    words[at + 1]
        .parse()
        .unwrap_or_else(|_| panic!("request count: {line}"))
}

async fn policy_prints_the_users_configuration() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let id = assigned_configuration(&s, &admin, G1).await;
    let user = user_token(&s, G1);

    let out = cirrus(&["client", "policy", "--url", &s.base, "--token", &user]).await;
    assert!(out.success, "stderr: {}", out.stderr);
    let doc = stdout_json(&out);
    assert_eq!(doc["configurations"][0]["id"], id.as_str());
    assert_eq!(doc["configurations"][0]["displayName"], "CLI baseline");
    assert_eq!(doc["policySettings"], json!({"BlockMacros": true}));
    assert_eq!(doc["userPrincipalName"], UPN);
    let etag = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .unwrap_or_else(|| panic!("no ETag on stderr: {}", out.stderr))
        .to_string();

    // The Graph base URL (as `serve` prints it) works too; the ETag round-trips to a 304.
    let beta = format!("{}/beta", s.base);
    let out = cirrus(&[
        "client",
        "policy",
        "--url",
        &beta,
        "--token",
        &user,
        "--if-none-match",
        &etag,
    ])
    .await;
    assert!(out.success, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "", "nothing on stdout for a 304");
    assert!(out.stderr.contains("not modified"), "{}", out.stderr);

    // A user in no targeted group gets the empty policy.
    let other = user_token(&s, G2);
    let out = cirrus(&["client", "policy", "--url", &s.base, "--token", &other]).await;
    assert!(out.success, "stderr: {}", out.stderr);
    assert_eq!(stdout_json(&out)["configurations"], json!([]));
}

async fn policy_with_an_application_token_fails_with_the_403_message() {
    let s = Server::start().await;
    let app = s.token_with(TokenRequest {
        roles: Some(READ_ALL.into()),
        ..request("contoso")
    });
    let out = cirrus(&["client", "policy", "--url", &s.base, "--token", &app]).await;
    assert!(!out.success, "an application token must fail");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("Forbidden: The client policy is per user")
            && out.stderr.contains("application tokens are not supported"),
        "stderr: {}",
        out.stderr
    );
    // A bad token: the 401's code and message.
    let out = cirrus(&["client", "policy", "--url", &s.base, "--token", "x.y.z"]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("InvalidAuthenticationToken: "),
        "stderr: {}",
        out.stderr
    );
}

#[tokio::test]
async fn load_refuses_a_non_loopback_url_without_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let started = Instant::now();
    let out = cirrus(&[
        "client",
        "load",
        "--url",
        "http://192.0.2.1:1",
        "--users",
        "3",
        "--groups",
        G1,
        "--data-dir",
        data,
    ])
    .await;
    assert!(!out.success);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, without trying the target"
    );
    assert!(
        out.stderr.contains("not a loopback address") && out.stderr.contains("--allow-remote"),
        "stderr: {}",
        out.stderr
    );
    assert!(!data_dir.exists(), "nothing was created for a refused run");
}

async fn load_runs_and_summarises() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    assigned_configuration(&s, &admin, G1).await;
    let data = s.data_dir.to_str().unwrap();
    let groups = format!("{G1},{G2}");
    let base = [
        "client",
        "load",
        "--url",
        &s.base,
        "--users",
        "3",
        "--devices-per-user",
        "2",
        "--groups",
        &groups,
        "--tenant",
        "contoso",
        "--data-dir",
        data,
    ];

    let mut args = base.to_vec();
    args.extend(["--duration", "2"]);
    let out = cirrus(&args).await;
    assert!(
        out.success,
        "stderr: {}\nstdout: {}",
        out.stderr, out.stdout
    );
    assert!(
        summary_requests(&out.stdout, "policy") > 0,
        "{}",
        out.stdout
    );
    // Check-ins are sent (and, while the server lacks the endpoint, counted as errors).
    assert!(
        summary_requests(&out.stdout, "checkin") > 0,
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("p50") && out.stdout.contains("p99"));
    assert!(out.stdout.lines().any(|l| l.starts_with("errors")));

    // Each device fetches the full policy once, then revalidates its ETag: 304s from then on.
    let mut args = base.to_vec();
    args.extend(["--duration", "1", "--json"]);
    let out = cirrus(&args).await;
    assert!(out.success, "stderr: {}", out.stderr);
    let summary = stdout_json(&out);
    let policy = &summary["policy"];
    assert_eq!(policy["statuses"]["200"], 6, "{summary}");
    assert!(
        policy["statuses"]["304"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert_eq!(policy["transportErrors"], 0, "{summary}");
    assert!(policy["latencyMs"]["p99"].as_f64().is_some(), "{summary}");
    assert!(summary["checkin"]["requests"].as_u64().unwrap_or(0) > 0);
}

engine_tests!(
    policy_prints_the_users_configuration,
    policy_with_an_application_token_fails_with_the_403_message,
    load_runs_and_summarises,
);

#[tokio::test]
async fn checkin_reports_and_prints_the_stored_status() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let id = assigned_configuration(&s, &admin, G1).await;
    let user = user_token(&s, G1);

    // --from-policy: fetch, apply, report the policy's configurations.
    let out = cirrus(&[
        "client",
        "checkin",
        "--url",
        &s.base,
        "--token",
        &user,
        "--device-name",
        "PC-1",
        "--from-policy",
        "--last-task-name",
        "Sync",
    ])
    .await;
    assert!(out.success, "stderr: {}", out.stderr);
    let status = stdout_json(&out);
    assert_eq!(status["deviceName"], "PC-1");
    assert_eq!(status["devicePlatform"], "Windows");
    assert_eq!(status["devicePlatformVersion"], "10.0.22631");
    assert_eq!(status["wasSuccessful"], true);
    assert_eq!(status["appliedPolicies"], json!([id]));
    assert_eq!(status["lastTaskName"], "Sync");
    assert_eq!(status["userId"], USER);
    assert_eq!(status["userPrincipalName"], UPN);
    assert!(status["checkinDateTime"].is_string(), "{status}");

    // A failed check-in with explicit policies.
    let out = cirrus(&[
        "client",
        "checkin",
        "--url",
        &s.base,
        "--token",
        &user,
        "--device-name",
        "PC-2",
        "--platform-version",
        "10.0.26100",
        "--failed",
        "--error-message",
        "0x80070005",
        "--applied",
        &id,
    ])
    .await;
    assert!(out.success, "stderr: {}", out.stderr);
    let status = stdout_json(&out);
    assert_eq!(status["wasSuccessful"], false);
    assert_eq!(status["errorMessage"], "0x80070005");
    assert_eq!(status["devicePlatformVersion"], "10.0.26100");
    assert_eq!(status["appliedPolicies"], json!([id]));

    // The server's refusal comes out as code: message.
    let out = cirrus(&[
        "client",
        "checkin",
        "--url",
        &s.base,
        "--token",
        "x.y.z",
        "--device-name",
        "PC-3",
    ])
    .await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("InvalidAuthenticationToken: "),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn load_checkins_succeed() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    assigned_configuration(&s, &admin, G1).await;
    let out = cirrus(&[
        "client",
        "load",
        "--url",
        &s.base,
        "--users",
        "3",
        "--devices-per-user",
        "2",
        "--groups",
        G1,
        "--tenant",
        "contoso",
        "--data-dir",
        s.data_dir.to_str().unwrap(),
        "--duration",
        "2",
        "--failure-rate",
        "0.5",
        "--json",
    ])
    .await;
    assert!(out.success, "stderr: {}", out.stderr);
    let summary = stdout_json(&out);
    let checkin = &summary["checkin"];
    let requests = checkin["requests"].as_u64().unwrap_or(0);
    assert!(requests > 0, "{summary}");
    // Reported failures are still accepted check-ins: every one is a 201.
    assert_eq!(checkin["statuses"], json!({"201": requests}), "{summary}");
    assert_eq!(summary["errors"], json!({}), "{summary}");
}

/// A stand-in for the check-in endpoint that checks the request against the contract
/// (`deviceName` and `wasSuccessful` required, no unknown properties) and echoes it as a 201
/// with the server-filled properties; its policy has one configuration and a fixed ETag. The
/// first check-in it sees is answered `429` with `Retry-After: 1`. It lets the simulator's
/// check-in side be tested before the real endpoint is merged.
mod stub {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use serde_json::{Value, json};

    pub const CONFIG: &str = "9c0ffee0-0000-4000-8000-000000000001";
    const ETAG: &str = "\"stub-v1\"";
    const FIELDS: [&str; 7] = [
        "deviceName",
        "devicePlatform",
        "devicePlatformVersion",
        "wasSuccessful",
        "errorMessage",
        "appliedPolicies",
        "lastTaskName",
    ];

    /// Every check-in received: when, the body, and whether it was answered 429.
    #[derive(Default)]
    pub struct Seen {
        pub checkins: Mutex<Vec<(Instant, Value, bool)>>,
    }

    pub async fn start() -> (String, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/cirrus/v1/client/policy", get(policy))
            .route("/cirrus/v1/client/checkins", post(checkin))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    fn error(status: StatusCode, code: &str, message: &str) -> Response {
        (
            status,
            axum::Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response()
    }

    fn authorised(headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7)
    }

    async fn policy(headers: HeaderMap) -> Response {
        if !authorised(&headers) {
            return error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "no token",
            );
        }
        if headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v == ETAG)
        {
            return (StatusCode::NOT_MODIFIED, [(header::ETAG, ETAG)]).into_response();
        }
        let doc = json!({"configurations": [{"id": CONFIG, "priority": 1}],
                         "policySettings": {}, "userPreferenceSettings": {}});
        (StatusCode::OK, [(header::ETAG, ETAG)], axum::Json(doc)).into_response()
    }

    async fn checkin(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: String) -> Response {
        if !authorised(&headers) {
            return error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "no token",
            );
        }
        let json_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&body) else {
            return error(StatusCode::BAD_REQUEST, "BadRequest", "not a JSON object");
        };
        if !json_type
            || map.keys().any(|k| !FIELDS.contains(&k.as_str()))
            || !map.get("deviceName").is_some_and(Value::is_string)
            || !map.get("wasSuccessful").is_some_and(Value::is_boolean)
            || map
                .get("appliedPolicies")
                .is_some_and(|a| !a.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        {
            return error(StatusCode::BAD_REQUEST, "BadRequest", "not a check-in");
        }
        let mut list = seen.checkins.lock().unwrap();
        let throttle = list.is_empty();
        list.push((Instant::now(), Value::Object(map.clone()), throttle));
        drop(list);
        if throttle {
            let mut res = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "slow down",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return res;
        }
        let mut status = map;
        status.insert("userId".into(), "stub-user".into());
        status.insert("userPrincipalName".into(), "stub@example".into());
        status.insert("checkinDateTime".into(), "2026-01-01T00:00:00Z".into());
        (StatusCode::CREATED, axum::Json(Value::Object(status))).into_response()
    }
}

#[tokio::test]
async fn checkin_sends_the_contracts_body() {
    let (url, seen) = stub::start().await;
    let args = |extra: &[&str]| {
        let mut a = vec![
            "client",
            "checkin",
            "--url",
            &url,
            "--token",
            "t",
            "--device-name",
            "PC-1",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| async move {
        cirrus(&a.iter().map(String::as_str).collect::<Vec<_>>()).await
    };
    // The stub answers its first check-in 429: the single-shot command reports it and fails.
    let out = run(args(&[])).await;
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("TooManyRequests: slow down (Retry-After: 1 s)"),
        "{}",
        out.stderr
    );
    let out = run(args(&["--from-policy", "--last-task-name", "Sync"])).await;
    assert!(out.success, "stderr: {}", out.stderr);
    let status = stdout_json(&out);
    assert_eq!(status["appliedPolicies"], json!([stub::CONFIG]));
    assert_eq!(status["userId"], "stub-user");
    let out = run(args(&[
        "--failed",
        "--error-message",
        "boom",
        "--applied",
        "a",
        "--applied",
        "b",
    ]))
    .await;
    assert!(out.success, "stderr: {}", out.stderr);
    let bodies: Vec<Value> = seen
        .checkins
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.1.clone())
        .collect();
    assert_eq!(
        bodies[1],
        json!({"deviceName": "PC-1", "devicePlatform": "Windows",
               "devicePlatformVersion": "10.0.22631", "wasSuccessful": true,
               "appliedPolicies": [stub::CONFIG], "lastTaskName": "Sync"})
    );
    assert_eq!(
        bodies[2],
        json!({"deviceName": "PC-1", "devicePlatform": "Windows",
               "devicePlatformVersion": "10.0.22631", "wasSuccessful": false,
               "errorMessage": "boom", "appliedPolicies": ["a", "b"]})
    );
    // --error-message without --failed is a usage error, caught before any request.
    let out = run(args(&["--error-message", "x"])).await;
    assert!(!out.success);
    assert_eq!(seen.checkins.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn load_reports_policies_and_honours_retry_after() {
    let (url, seen) = stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    cirrus::auth::dev::DevKey::load_or_create(dir.path()).unwrap();
    let out = cirrus(&[
        "client",
        "load",
        "--url",
        &url,
        "--users",
        "1",
        "--devices-per-user",
        "2",
        "--groups",
        G1,
        "--duration",
        "2",
        "--failure-rate",
        "0.5",
        "--json",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    assert!(out.success, "stderr: {}", out.stderr);
    let summary = stdout_json(&out);
    assert_eq!(summary["checkin"]["statuses"]["429"], 1, "{summary}");
    assert!(
        summary["checkin"]["statuses"]["201"].as_u64().unwrap_or(0) > 2,
        "{summary}"
    );
    assert_eq!(
        summary["policy"]["statuses"]["200"], 2,
        "one full fetch per device: {summary}"
    );

    let checkins = seen.checkins.lock().unwrap();
    let (throttled_at, throttled, _) = checkins[0].clone();
    let device = throttled["deviceName"].clone();
    // That device's next check-in waited out the Retry-After.
    let next = checkins[1..]
        .iter()
        .find(|c| c.1["deviceName"] == device)
        .expect("the throttled device checked in again");
    assert!(
        next.0.duration_since(throttled_at) >= Duration::from_millis(950),
        "retried after {:?}",
        next.0.duration_since(throttled_at)
    );
    let names: std::collections::HashSet<&str> = checkins
        .iter()
        .filter_map(|c| c.1["deviceName"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "two devices: {names:?}");
    let (mut ok, mut failed) = (0, 0);
    for (_, body, _) in checkins.iter() {
        assert_eq!(body["appliedPolicies"], json!([stub::CONFIG]), "{body}");
        assert_eq!(body["lastTaskName"], "Sync");
        match body["wasSuccessful"].as_bool() {
            Some(true) => {
                assert!(body.get("errorMessage").is_none(), "{body}");
                ok += 1;
            }
            _ => {
                assert!(
                    body["errorMessage"].as_str().is_some_and(|m| !m.is_empty()),
                    "{body}"
                );
                failed += 1;
            }
        }
    }
    assert!(
        ok > 0 && failed > 0,
        "both outcomes at a 0.5 failure rate: {ok} ok, {failed} failed"
    );
}

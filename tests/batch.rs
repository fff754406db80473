//! JSON batching (`POST /beta/$batch`): sub-requests go through the same routing, auth and
//! error handling as outside a batch; `dependsOn`, 424, limits and malformed batches.
#[macro_use]
mod common;

use base64::Engine as _;
use cirrus::auth::dev::TokenRequest;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const MISSING: &str = "0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01";

async fn batch(s: &Server, t: &str, requests: Value) -> Res {
    s.post("/$batch", t, json!({ "requests": requests })).await
}

/// The responses of a 200 batch, in order, after checking the ids come back as sent.
fn responses(r: &Res, ids: &[&str]) -> Vec<Value> {
    assert_eq!(r.status, 200, "batch failed: {}", r.text);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{:?}",
        r.header("content-type")
    );
    let v = r.json();
    let list = v["responses"].as_array().expect("responses").clone();
    let got: Vec<&str> = list.iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids, "{}", r.text);
    list
}

fn status(v: &Value) -> u64 {
    v["status"]
        .as_u64()
        .unwrap_or_else(|| panic!("no status: {v}"))
}

/// Asserts a sub-response is a Graph error envelope; returns the message.
fn assert_sub_error(v: &Value, status_code: u64, code: &str) -> String {
    assert_eq!(status(v), status_code, "{v}");
    assert!(
        v["headers"]["Content-Type"]
            .as_str()
            .unwrap_or_default()
            .starts_with("application/json"),
        "{v}"
    );
    let e = &v["body"]["error"];
    assert_eq!(e["code"], code, "{v}");
    let inner = &e["innerError"];
    assert!(
        inner["request-id"].is_string()
            && inner["client-request-id"].is_string()
            && inner["date"].is_string(),
        "{v}"
    );
    assert_eq!(inner["request-id"], v["headers"]["request-id"], "{v}");
    let msg = e["message"].as_str().expect("message").to_string();
    assert!(!msg.is_empty());
    msg
}

async fn mixed_batch_create_list_and_singleton() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let existing = s.create_windows(&t, "existing").await;
    let root = s.url("");
    let r = batch(
        &s,
        &t,
        json!([
            {"id": "create", "method": "POST", "url": "/officeConfiguration/clientConfigurations",
             "headers": {"Content-Type": "application/json"},
             "body": {"@odata.type": WINDOWS, "displayName": "from batch"}},
            {"id": "list", "method": "GET", "url": "officeConfiguration/clientConfigurations"},
            {"id": "singleton", "method": "get", "url": "/beta/officeConfiguration"},
            {"id": "one", "method": "GET", "url": format!("{root}{}", cfg(&id_of(&existing)))},
            {"id": "count", "method": "GET", "url": "/officeConfiguration/clientConfigurations/$count"},
        ]),
    )
    .await;
    let out = responses(&r, &["create", "list", "singleton", "one", "count"]);

    let created = &out[0];
    assert_eq!(status(created), 201, "{created}");
    assert_eq!(created["body"]["displayName"], "from batch");
    assert_eq!(created["headers"]["OData-Version"], "4.0");
    let id = created["body"]["id"].as_str().unwrap().to_string();
    let location = created["headers"]["Location"].as_str().unwrap();
    assert_eq!(location, format!("{root}{}", cfg(&id)));
    assert!(created["headers"]["ETag"].is_string(), "{created}");
    // Context URLs inside the batch point at the normal service root.
    assert_eq!(
        created["body"]["@odata.context"],
        format!("{root}/$metadata#officeConfiguration/clientConfigurations/$entity")
    );

    assert_eq!(status(&out[1]), 200);
    assert!(
        out[1]["body"]["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == existing["id"]),
        "{}",
        out[1]
    );
    assert_eq!(status(&out[2]), 200);
    assert_eq!(
        out[2]["body"]["@odata.context"],
        format!("{root}/$metadata#officeConfiguration")
    );
    assert_eq!(status(&out[3]), 200);
    assert_eq!(out[3]["body"]["displayName"], "existing");
    // A text/plain response is a string.
    assert_eq!(status(&out[4]), 200, "{}", out[4]);
    assert!(out[4]["body"].is_string(), "{}", out[4]);

    // The create really happened.
    let got = s.get(&cfg(&id), &t).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["displayName"], "from batch");
}

async fn depends_on_runs_in_order() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s.create_windows(&t, "before").await;
    let path = cfg(&id_of(&c));
    let r = batch(
        &s,
        &t,
        json!([
            {"id": "rename", "method": "PATCH", "url": path,
             "headers": {"content-type": "application/json"}, "body": {"displayName": "after"}},
            {"id": "read", "method": "GET", "url": path, "dependsOn": ["RENAME"]},
            {"id": "delete", "method": "DELETE", "url": path, "dependsOn": ["read"]},
            {"id": "gone", "method": "GET", "url": path, "dependsOn": ["delete", "rename"]},
        ]),
    )
    .await;
    let out = responses(&r, &["rename", "read", "delete", "gone"]);
    assert_eq!(status(&out[0]), 204, "{}", out[0]);
    assert!(out[0].get("body").is_none(), "204 has no body: {}", out[0]);
    assert_eq!(status(&out[1]), 200);
    assert_eq!(out[1]["body"]["displayName"], "after");
    assert_eq!(status(&out[2]), 204);
    assert!(out[2].get("body").is_none());
    assert_sub_error(&out[3], 404, "ResourceNotFound");
    s.get(&path, &t).await.assert_error(404, "ResourceNotFound");
}

async fn failed_dependency_is_424_and_not_run() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let keep = s.create_windows(&t, "keep").await;
    let r = batch(
        &s,
        &t,
        json!([
            {"id": "a", "method": "GET", "url": cfg(MISSING)},
            {"id": "b", "method": "DELETE", "url": cfg(&id_of(&keep)), "dependsOn": ["a"]},
            {"id": "c", "method": "GET", "url": CONFIGS, "dependsOn": ["b"]},
            {"id": "d", "method": "GET", "url": "officeConfiguration"},
            {"id": "e", "method": "GET", "url": CONFIGS, "dependsOn": ["d", "a"]},
            {"id": "f", "method": "GET", "url": CONFIGS, "dependsOn": ["d"]},
        ]),
    )
    .await;
    let out = responses(&r, &["a", "b", "c", "d", "e", "f"]);
    assert_sub_error(&out[0], 404, "ResourceNotFound");
    let msg = assert_sub_error(&out[1], 424, "FailedDependency");
    assert!(msg.contains("'a'") && msg.contains("404"), "{msg}");
    // Failure propagates along a chain.
    let msg = assert_sub_error(&out[2], 424, "FailedDependency");
    assert!(msg.contains("'b'"), "{msg}");
    assert_eq!(status(&out[3]), 200);
    assert_sub_error(&out[4], 424, "FailedDependency");
    assert_eq!(status(&out[5]), 200);
    // The dependent DELETE never ran.
    assert_eq!(s.get(&cfg(&id_of(&keep)), &t).await.status, 200);
}

async fn each_sub_request_is_authorised_on_its_own() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let c = s.create_windows(&admin, "existing").await;
    let reader = s.token_with(TokenRequest {
        scopes: Some(READ_ALL.into()),
        ..request("contoso")
    });
    let before = s.snapshot(&admin).await;
    let r = batch(
        &s,
        &reader,
        json!([
            {"id": "read", "method": "GET", "url": cfg(&id_of(&c))},
            {"id": "write", "method": "POST", "url": CONFIGS,
             "headers": {"Content-Type": "application/json"},
             "body": {"@odata.type": WINDOWS, "displayName": "nope"}},
            {"id": "delete", "method": "DELETE", "url": cfg(&id_of(&c))},
            // A sub-request cannot bring its own credentials.
            {"id": "sneaky", "method": "DELETE", "url": cfg(&id_of(&c)),
             "headers": {"Authorization": format!("Bearer {admin}")}},
        ]),
    )
    .await;
    let out = responses(&r, &["read", "write", "delete", "sneaky"]);
    assert_eq!(status(&out[0]), 200);
    let msg = assert_sub_error(&out[1], 403, "Forbidden");
    assert!(msg.contains(READ_WRITE_ALL), "{msg}");
    assert_sub_error(&out[2], 403, "Forbidden");
    assert_sub_error(&out[3], 403, "Forbidden");
    assert_eq!(s.snapshot(&admin).await, before);

    // Another tenant's token sees only its own tenant inside a batch too.
    let other = s.token("fabrikam");
    let r = batch(
        &s,
        &other,
        json!([{"id": "1", "method": "GET", "url": cfg(&id_of(&c))}]),
    )
    .await;
    assert_sub_error(&responses(&r, &["1"])[0], 404, "ResourceNotFound");

    // The batch itself needs a valid token.
    let r = s
        .send(
            Method::POST,
            "/$batch",
            None,
            Some(json!({"requests": [{"id": "1", "method": "GET", "url": "officeConfiguration"}]})),
        )
        .await;
    r.assert_error(401, "InvalidAuthenticationToken");
}

async fn more_than_twenty_is_400() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let make = |n: usize| -> Value {
        (0..n)
            .map(|i| {
                json!({"id": i.to_string(), "method": "POST", "url": CONFIGS,
                       "headers": {"Content-Type": "application/json"},
                       "body": {"@odata.type": WINDOWS, "displayName": format!("n{i}")}})
            })
            .collect()
    };
    let before = s.snapshot(&t).await;
    let msg = batch(&s, &t, make(21))
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("20"), "{msg}");
    assert_eq!(
        s.snapshot(&t).await,
        before,
        "nothing of a refused batch runs"
    );

    let ids: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let out = responses(&batch(&s, &t, make(20)).await, &ids);
    assert!(out.iter().all(|r| status(r) == 201));
}

async fn duplicate_ids_are_400() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let msg = batch(
        &s,
        &t,
        json!([
            {"id": "one", "method": "GET", "url": "officeConfiguration"},
            {"id": "ONE", "method": "GET", "url": "officeConfiguration"},
        ]),
    )
    .await
    .assert_error(400, "BadRequest");
    assert!(
        msg.contains("ONE") && msg.contains("case-insensitive"),
        "{msg}"
    );
}

async fn malformed_batches_are_400() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let before = s.snapshot(&t).await;
    let create = json!({"id": "ok", "method": "POST", "url": CONFIGS,
                        "headers": {"Content-Type": "application/json"},
                        "body": {"@odata.type": WINDOWS}});

    // Not JSON at all.
    let rb = s
        .req(Method::POST, "/$batch", Some(&t))
        .header("content-type", "application/json")
        .body("{\"requests\": [");
    let msg = Server::finish(rb).await.assert_error(400, "BadRequest");
    assert!(msg.contains("JSON"), "{msg}");

    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "JSON object"),
        (json!({}), "'requests'"),
        (json!({"requests": {}}), "array"),
        (json!({"requests": []}), "no requests"),
        (
            json!({"requests": [create.clone(), "x"]}),
            "not a JSON object",
        ),
        (
            json!({"requests": [create.clone(), {"method": "GET", "url": "x"}]}),
            "'id'",
        ),
        (
            json!({"requests": [create.clone(), {"id": "b", "url": "x"}]}),
            "'method'",
        ),
        (
            json!({"requests": [create.clone(), {"id": "b", "method": "TRACE", "url": "x"}]}),
            "TRACE",
        ),
        (
            json!({"requests": [create.clone(), {"id": "b", "method": "GET"}]}),
            "'url'",
        ),
        (
            json!({"requests": [create.clone(), {"id": "b", "method": "GET", "url": "https://graph.microsoft.com/beta/me"}]}),
            "service root",
        ),
        (
            json!({"requests": [create.clone(), {"id": "b", "method": "POST", "url": CONFIGS, "body": {}}]}),
            "Content-Type",
        ),
        (
            json!({"requests": [create.clone(), {"id": "b", "method": "GET", "url": "x", "headers": []}]}),
            "'headers'",
        ),
        (
            json!({"requests": [create.clone(), {"id": "b", "method": "GET", "url": "x", "dependsOn": "ok"}]}),
            "dependsOn",
        ),
    ];
    for (body, needle) in cases {
        let r = s.post("/$batch", &t, body.clone()).await;
        let msg = r.assert_error(400, "BadRequest");
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    // A batch that is not JSON by media type.
    let rb = s
        .req(Method::POST, "/$batch", Some(&t))
        .header("content-type", "text/plain")
        .body(json!({"requests": [create]}).to_string());
    Server::finish(rb)
        .await
        .assert_error(415, "UnsupportedMediaType");
    assert_eq!(
        s.snapshot(&t).await,
        before,
        "nothing of a refused batch runs"
    );
}

async fn unknown_depends_on_is_400() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let msg = batch(
        &s,
        &t,
        json!([
            {"id": "a", "method": "GET", "url": "officeConfiguration"},
            {"id": "b", "method": "GET", "url": "officeConfiguration", "dependsOn": ["a", "nope"]},
        ]),
    )
    .await
    .assert_error(400, "BadRequest");
    assert!(msg.contains("'nope'"), "{msg}");
    // Only earlier requests can be depended on, so no cycle can be written.
    let msg = batch(
        &s,
        &t,
        json!([
            {"id": "a", "method": "GET", "url": "officeConfiguration", "dependsOn": ["b"]},
            {"id": "b", "method": "GET", "url": "officeConfiguration", "dependsOn": ["a"]},
        ]),
    )
    .await
    .assert_error(400, "BadRequest");
    assert!(msg.contains("'b'"), "{msg}");
    let msg = batch(
        &s,
        &t,
        json!([{"id": "a", "method": "GET", "url": "officeConfiguration", "dependsOn": ["a"]}]),
    )
    .await
    .assert_error(400, "BadRequest");
    assert!(msg.contains("itself"), "{msg}");
}

async fn streams_travel_as_base64() {
    let s = Server::start().await;
    let t = s.token("contoso");
    // Standard base64 of this has '+', '/' and padding.
    let policy: &[u8] = br#"{"k":"~~~???>>>"}"#;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let c = s
        .create(
            &t,
            json!({"@odata.type": WINDOWS, "policyPayload": b64(policy)}),
        )
        .await;
    let path = cfg(&id_of(&c));
    let pref: &[u8] = br#"{"theme":"dark"}"#;
    let r = batch(
        &s,
        &t,
        json!([
            {"id": "get", "method": "GET", "url": format!("{path}/policyPayload/$value")},
            {"id": "put", "method": "PUT", "url": format!("{path}/userPreferencePayload"),
             "headers": {"Content-Type": "application/octet-stream"}, "body": b64(pref)},
            {"id": "back", "method": "GET", "url": format!("{path}/userPreferencePayload"), "dependsOn": ["put"]},
        ]),
    )
    .await;
    let out = responses(&r, &["get", "put", "back"]);
    assert_eq!(status(&out[0]), 200);
    assert_eq!(
        out[0]["headers"]["Content-Type"],
        "application/octet-stream"
    );
    assert_eq!(out[0]["body"], b64(policy));
    assert_eq!(status(&out[1]), 204, "{}", out[1]);
    assert_eq!(out[2]["body"], b64(pref));
    let raw = s.get(&format!("{path}/userPreferencePayload"), &t).await;
    assert_eq!(raw.text.as_bytes(), pref);
}

async fn sub_request_errors_carry_the_graph_envelope() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let rb = s
        .req(Method::POST, "/$batch", Some(&t))
        .header("client-request-id", "my-batch-1")
        .header("content-type", "application/json")
        .body(
            json!({"requests": [
                {"id": "segment", "method": "GET", "url": "/officeConfiguration/nope"},
                {"id": "missing", "method": "GET", "url": cfg(MISSING)},
                {"id": "method", "method": "DELETE", "url": CONFIGS},
                {"id": "body", "method": "POST", "url": CONFIGS,
                 "headers": {"Content-Type": "application/json"}, "body": {"@odata.type": "#microsoft.graph.user"}},
                {"id": "nested", "method": "POST", "url": "$batch",
                 "headers": {"Content-Type": "application/json"}, "body": {"requests": []}},
                {"id": "own", "method": "GET", "url": cfg(MISSING),
                 "headers": {"client-request-id": "sub-1"}},
            ]})
            .to_string(),
        );
    let r = Server::finish(rb).await;
    assert_eq!(r.header("client-request-id"), Some("my-batch-1"));
    let out = responses(
        &r,
        &["segment", "missing", "method", "body", "nested", "own"],
    );
    let msg = assert_sub_error(&out[0], 400, "BadRequest");
    assert!(msg.contains("'nope'"), "{msg}");
    assert_sub_error(&out[1], 404, "ResourceNotFound");
    assert_sub_error(&out[2], 405, "BadRequest");
    assert_eq!(out[2]["headers"]["Allow"], "GET, POST");
    assert_sub_error(&out[3], 400, "BadRequest");
    let msg = assert_sub_error(&out[4], 400, "BadRequest");
    assert!(msg.contains("nested"), "{msg}");
    for o in &out[..5] {
        assert_eq!(o["headers"]["client-request-id"], "my-batch-1", "{o}");
        assert_eq!(
            o["body"]["error"]["innerError"]["client-request-id"],
            "my-batch-1"
        );
    }
    assert_eq!(out[5]["headers"]["client-request-id"], "sub-1");
    // Every sub-request has its own request id.
    let mut ids: Vec<&str> = out
        .iter()
        .map(|o| o["headers"]["request-id"].as_str().unwrap())
        .collect();
    ids.push(r.header("request-id").unwrap());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), out.len() + 1);
}

engine_tests!(
    mixed_batch_create_list_and_singleton,
    depends_on_runs_in_order,
    failed_dependency_is_424_and_not_run,
    each_sub_request_is_authorised_on_its_own,
    more_than_twenty_is_400,
    duplicate_ids_are_400,
    malformed_batches_are_400,
    unknown_depends_on_is_400,
    streams_travel_as_base64,
    sub_request_errors_carry_the_graph_envelope,
);

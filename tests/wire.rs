//! Graph's wire shape: headers, content type, context URLs, URL forms, 400/405 for wrong
//! paths and methods, and durability across a restart.
#[macro_use]
mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const JSON_CT: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const G1: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const G2: &str = "aaaaaaaa-0000-4000-8000-000000000002";

fn assert_guid(v: Option<&str>, what: &str) {
    let v = v.unwrap_or_else(|| panic!("{what} missing"));
    assert!(
        uuid::Uuid::parse_str(v).is_ok(),
        "{what} is not a GUID: {v}"
    );
}

/// Checks the headers and `@odata.context` of an OData JSON payload.
fn assert_payload(r: &Res, what: &str, context_suffix: &str) -> Value {
    assert!(r.status.is_success(), "{what}: {} {}", r.status, r.text);
    assert_eq!(r.header("content-type"), Some(JSON_CT), "{what}");
    assert_eq!(r.header("odata-version"), Some("4.0"), "{what}");
    assert_guid(r.header("request-id"), "request-id");
    let v = r.json();
    let ctx = v["@odata.context"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no @odata.context: {v}"));
    assert!(
        ctx.starts_with("http://127.0.0.1:") && ctx.ends_with(context_suffix),
        "{what}: {ctx} does not end with {context_suffix}"
    );
    v
}

async fn every_payload_has_context_content_type_and_odata_version() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let r = s.get("/officeConfiguration", &t).await;
    assert_payload(&r, "singleton", "/beta/$metadata#officeConfiguration");
    let r = s
        .post(
            CONFIGS,
            &t,
            json!({"@odata.type": WINDOWS, "assignments": [{"target": group_target(G1)}]}),
        )
        .await;
    let c = assert_payload(
        &r,
        "create",
        "/beta/$metadata#officeConfiguration/clientConfigurations/$entity",
    );
    let id = id_of(&c);
    // A deep-inserted navigation property carries its own context.
    assert!(
        c["assignments@odata.context"]
            .as_str()
            .unwrap()
            .ends_with(&format!("clientConfigurations('{id}')/assignments")),
        "{c}"
    );
    let r = s.get(CONFIGS, &t).await;
    let list = assert_payload(
        &r,
        "list",
        "/beta/$metadata#officeConfiguration/clientConfigurations",
    );
    assert_eq!(
        list.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["@odata.context", "value"]
    );
    assert_payload(
        &s.get(&cfg(&id), &t).await,
        "get",
        "/beta/$metadata#officeConfiguration/clientConfigurations/$entity",
    );
    let r = s.get(&format!("{}/assignments", cfg(&id)), &t).await;
    let assignments = assert_payload(
        &r,
        "assignments",
        &format!("/beta/$metadata#officeConfiguration/clientConfigurations('{id}')/assignments"),
    );
    let aid = id_of(&assignments["value"][0]);
    assert_payload(
        &s.get(&format!("{}/assignments/{aid}", cfg(&id)), &t).await,
        "assignment",
        "/assignments/$entity",
    );
    assert_payload(
        &s.post(
            &format!("{}/assignments", cfg(&id)),
            &t,
            json!({"target": group_target(G2)}),
        )
        .await,
        "create assignment",
        "/assignments/$entity",
    );
    assert_payload(
        &s.post(
            &format!("{}/assign", cfg(&id)),
            &t,
            json!({"officeConfigurationAssignments": []}),
        )
        .await,
        "assign",
        "/beta/$metadata#Collection(microsoft.graph.officeClientConfigurationAssignment)",
    );
    let r = Server::finish(
        s.req(Method::PATCH, &cfg(&id), Some(&t))
            .header("content-type", "application/json")
            .header("prefer", "return=representation")
            .body(r#"{"displayName":"x"}"#),
    )
    .await;
    assert_payload(&r, "patch representation", "/clientConfigurations/$entity");

    // Errors use the same JSON content type.
    let r = s.get(&cfg(G1), &t).await;
    r.assert_error(404, "ResourceNotFound");
    assert_eq!(r.header("content-type"), Some(JSON_CT));
}

async fn context_urls_follow_the_public_host() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let r = Server::finish(
        s.req(Method::POST, CONFIGS, Some(&t))
            .header("content-type", "application/json")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "graph.contoso.example")
            .body(json!({"@odata.type": WINDOWS}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    assert_eq!(
        v["@odata.context"],
        "https://graph.contoso.example/beta/$metadata#officeConfiguration/clientConfigurations/$entity"
    );
    assert_eq!(
        r.header("location").unwrap(),
        format!(
            "https://graph.contoso.example/beta/officeConfiguration/clientConfigurations/{}",
            id_of(&v)
        )
    );
}

async fn request_ids() {
    let s = Server::start().await;
    let t = s.token("contoso");
    // Sent: echoed on success and in errors.
    let sent = "5f0e7c1a-3b5d-4e2f-9a8b-7c6d5e4f3a2b";
    let r = Server::finish(
        s.req(Method::GET, CONFIGS, Some(&t))
            .header("client-request-id", sent),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("client-request-id"), Some(sent));
    assert_guid(r.header("request-id"), "request-id");
    assert_ne!(r.header("request-id"), Some(sent));

    let r = Server::finish(
        s.req(Method::GET, &cfg(G1), Some(&t))
            .header("client-request-id", sent),
    )
    .await;
    r.assert_error(404, "ResourceNotFound");
    assert_eq!(r.header("client-request-id"), Some(sent));
    assert_eq!(r.json()["error"]["innerError"]["client-request-id"], sent);

    // Not sent: generated (Graph repeats the request-id).
    let r1 = s.get(CONFIGS, &t).await;
    let r2 = s.get(CONFIGS, &t).await;
    assert_guid(r1.header("client-request-id"), "client-request-id");
    assert_ne!(r1.header("request-id"), r2.header("request-id"));

    // On 401 too, and on responses without a body.
    let r = Server::finish(
        s.req(Method::GET, CONFIGS, None)
            .header("client-request-id", sent),
    )
    .await;
    r.assert_error(401, "InvalidAuthenticationToken");
    assert_eq!(r.header("client-request-id"), Some(sent));
    let c = s.create_windows(&t, "x").await;
    let r = s.delete(&cfg(&id_of(&c)), &t).await;
    assert_eq!(r.status, 204);
    assert_guid(r.header("request-id"), "request-id on 204");
}

async fn v1_is_a_beta_only_segment() {
    let s = Server::start().await;
    let t = s.token("contoso");
    for path in [
        "/v1.0/officeConfiguration",
        "/v1.0/officeConfiguration/clientConfigurations",
    ] {
        let r = Server::finish(s.client.get(format!("{}{path}", s.base)).bearer_auth(&t)).await;
        let msg = r.assert_error(400, "BadRequest");
        assert_eq!(
            msg,
            "Resource not found for the segment 'officeConfiguration'."
        );
    }
    let msg = s
        .get("/officeConfigurations", &t)
        .await
        .assert_error(400, "BadRequest");
    assert_eq!(
        msg,
        "Resource not found for the segment 'officeConfigurations'."
    );
}

async fn wrong_method_is_405_with_allow() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s.create_windows(&t, "x").await;
    let id = id_of(&c);
    let snap = s.snapshot(&t).await;
    let a = s
        .post(
            &format!("{}/assignments", cfg(&id)),
            &t,
            json!({"target": group_target(G1)}),
        )
        .await
        .json();
    let snap_with_assignment = s.snapshot(&t).await;
    assert_ne!(snap, snap_with_assignment);
    for (m, path, allow) in [
        (
            Method::DELETE,
            "/officeConfiguration".to_string(),
            "GET, PATCH",
        ),
        (
            Method::POST,
            "/officeConfiguration".to_string(),
            "GET, PATCH",
        ),
        (
            Method::PUT,
            "/officeConfiguration".to_string(),
            "GET, PATCH",
        ),
        (Method::DELETE, CONFIGS.to_string(), "GET, POST"),
        (Method::PATCH, CONFIGS.to_string(), "GET, POST"),
        (Method::POST, cfg(&id), "GET, PATCH, DELETE"),
        (Method::PUT, cfg(&id), "GET, PATCH, DELETE"),
        (Method::GET, format!("{}/assign", cfg(&id)), "POST"),
        (Method::GET, format!("{CONFIGS}/updatePriorities"), "POST"),
        (
            Method::DELETE,
            format!("{}/assignments", cfg(&id)),
            "GET, POST",
        ),
        (
            Method::POST,
            format!("{}/assignments/{}", cfg(&id), id_of(&a)),
            "GET, PATCH, DELETE",
        ),
        (
            Method::DELETE,
            format!("{}/policyPayload", cfg(&id)),
            "GET, PUT",
        ),
        (
            Method::PATCH,
            format!("{}/policyPayload/$value", cfg(&id)),
            "GET, PUT",
        ),
    ] {
        let r = s
            .send(
                m.clone(),
                &path,
                Some(&t),
                Some(json!({"displayName": "x"})),
            )
            .await;
        r.assert_error(405, "BadRequest");
        assert_eq!(r.header("allow"), Some(allow), "{m} {path}");
    }
    assert_eq!(s.snapshot(&t).await, snap_with_assignment);
}

async fn segments_are_case_insensitive() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s
        .create(
            &t,
            json!({"@odata.type": WINDOWS, "policyPayload": b64(r#"{"a":1}"#)}),
        )
        .await;
    let id = id_of(&c);
    let upper = id.to_uppercase();
    let r = s
        .post(
            &format!("/OFFICECONFIGURATION/CLIENTCONFIGURATIONS/{upper}/ASSIGNMENTS"),
            &t,
            json!({"target": group_target(G1)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let aid = id_of(&r.json());
    let got = Server::finish(
        s.client
            .get(format!(
                "{}/BETA/officeconfiguration/ClientConfigurations/{upper}",
                s.base
            ))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(id_of(&got.json()), id, "ids are emitted lower-case");
    let got = s
        .get(
            &format!(
                "/officeConfiguration/clientconfigurations/{id}/Assignments/{}",
                aid.to_uppercase()
            ),
            &t,
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    let raw = s
        .get(&format!("{}/POLICYPAYLOAD/$VALUE", cfg(&id)), &t)
        .await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.text, r#"{"a":1}"#);
    let r = s
        .post(
            &format!("{}/Microsoft.Graph.Assign", cfg(&id)),
            &t,
            json!({"officeConfigurationAssignments": []}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post(
            &format!("{CONFIGS}/UPDATEPRIORITIES"),
            &t,
            json!({"officeConfigurationPolicyIds": [id], "officeConfigurationPriorities": [9]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.get(&cfg(&id), &t).await.json()["priority"], 9);
    // A trailing slash names the same resource.
    let r = s.get(&format!("{}/", cfg(&id)), &t).await;
    assert_eq!(r.status, 200);
}

async fn keys_in_parentheses() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s.create_windows(&t, "parens").await;
    let id = id_of(&c);
    let a = s
        .post(
            &format!("{}/assignments", cfg(&id)),
            &t,
            json!({"target": group_target(G1)}),
        )
        .await
        .json();
    let aid = id_of(&a);
    for path in [
        format!("{CONFIGS}('{id}')"),
        format!("{CONFIGS}({id})"),
        format!("{CONFIGS}('{}')", id.to_uppercase()),
    ] {
        let r = s.get(&path, &t).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(id_of(&r.json()), id);
    }
    for path in [
        format!("{CONFIGS}('{id}')/assignments('{aid}')"),
        format!("{CONFIGS}({id})/assignments({aid})"),
        format!("{CONFIGS}/{id}/assignments('{aid}')"),
    ] {
        let r = s.get(&path, &t).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(id_of(&r.json()), aid);
    }
    // Writes through the parenthesised form.
    let r = s
        .patch(
            &format!("{CONFIGS}('{id}')"),
            &t,
            json!({"displayName": "renamed"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.get(&cfg(&id), &t).await.json()["displayName"], "renamed");
    let r = s
        .post(
            &format!("{CONFIGS}('{id}')/assign"),
            &t,
            json!({"officeConfigurationAssignments": [{"target": group_target(G2)}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.delete(&format!("{CONFIGS}('{id}')"), &t).await;
    assert_eq!(r.status, 204);
    s.get(&cfg(&id), &t)
        .await
        .assert_error(404, "ResourceNotFound");
}

async fn data_survives_a_restart() {
    let mut s = Server::start().await;
    let t = s.token("contoso");
    s.patch(
        "/officeConfiguration",
        &t,
        json!({"tenantUserCheckinSummary": {"succeededUserCount": 3, "failedUserCount": 1}}),
    )
    .await;
    let c = s
        .create(
            &t,
            json!({
                "@odata.type": SECURITY,
                "displayName": "durable",
                "priority": 42,
                "policyPayload": b64(r#"{"keep":true}"#),
                "assignments": [{"target": group_target(G1)}],
            }),
        )
        .await;
    let gone = s.create_windows(&t, "deleted before restart").await;
    assert_eq!(s.delete(&cfg(&id_of(&gone)), &t).await.status, 204);
    let other = s.token("fabrikam");
    s.create_windows(&other, "other tenant").await;
    let before = s.snapshot(&t).await;
    let before_other = s.snapshot(&other).await;
    let old_base = s.base.clone();

    s.restart().await;
    assert_ne!(s.base, old_base, "a new process on a new port");
    // Tokens minted before the restart still verify (the key is in the data directory).
    let after = s.snapshot(&t).await;
    // Context URLs carry the new port; everything else is identical.
    let normalise = |v: &Value, base: &str| -> Value {
        serde_json::from_str(&v.to_string().replace(base, "BASE")).unwrap()
    };
    assert_eq!(normalise(&after, &s.base), normalise(&before, &old_base));
    assert_eq!(
        normalise(&s.snapshot(&other).await, &s.base),
        normalise(&before_other, &old_base)
    );
    let got = s.get(&cfg(&id_of(&c)), &t).await.json();
    assert_eq!(got["displayName"], "durable");
    assert_eq!(got["priority"], 42);
    s.get(&cfg(&id_of(&gone)), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    // Next free priority continues from the stored maximum.
    let next = s.create_windows(&t, "after restart").await;
    assert_eq!(next["priority"], 43);
}

engine_tests!(
    every_payload_has_context_content_type_and_odata_version,
    context_urls_follow_the_public_host,
    request_ids,
    v1_is_a_beta_only_segment,
    wrong_method_is_405_with_allow,
    segments_are_case_insensitive,
    keys_in_parentheses,
    data_survives_a_restart,
);

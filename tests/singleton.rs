//! `GET`/`PATCH /beta/officeConfiguration`: the per-tenant singleton.
#[macro_use]
mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const SINGLETON: &str = "/officeConfiguration";

fn status(user: &str, task: Option<&str>) -> Value {
    let mut v = json!({
        "userId": user,
        "userPrincipalName": format!("{user}@contoso.example"),
        "deviceName": "DESKTOP-1",
        "devicePlatform": "Windows",
        "devicePlatformVersion": "10.0.22631",
        "wasSuccessful": true,
        "checkinDateTime": "2024-03-01T12:30:00+02:00",
        "errorMessage": null,
        "appliedPolicies": ["Baseline"],
    });
    if let Some(t) = task {
        v["lastTaskName"] = json!(t);
    }
    v
}

async fn patch_with(s: &Server, t: &str, headers: &[(&str, &str)], body: Value) -> Res {
    let mut rb = s
        .req(Method::PATCH, SINGLETON, Some(t))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    Server::finish(rb).await
}

async fn get_returns_the_bare_singleton_with_a_stable_id() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let r = s.get(SINGLETON, &t).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert!(
        v["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/beta/$metadata#officeConfiguration"),
        "{v}"
    );
    assert_eq!(v["@odata.type"], "#microsoft.graph.officeConfiguration");
    assert!(v.get("value").is_none(), "single entity must be bare: {v}");
    let id = id_of(&v);
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "id is a GUID: {id}");
    assert_eq!(v["tenantCheckinStatuses"], json!([]));
    assert_eq!(
        v["tenantUserCheckinSummary"],
        json!({"@odata.type": "#microsoft.graph.officeUserCheckinSummary", "succeededUserCount": 0, "failedUserCount": 0})
    );
    assert_eq!(r.header("etag"), v["@odata.etag"].as_str());

    // The id does not change between requests, nor after a write.
    let again = s.get(SINGLETON, &t).await.json();
    assert_eq!(id_of(&again), id);
    assert_eq!(
        s.patch(SINGLETON, &t, json!({"tenantCheckinStatuses": []}))
            .await
            .status,
        204
    );
    assert_eq!(id_of(&s.get(SINGLETON, &t).await.json()), id);
}

async fn patch_answers_204_and_persists() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let before = s.get(SINGLETON, &t).await.json();
    let r = s
        .patch(
            SINGLETON,
            &t,
            json!({
                "tenantCheckinStatuses": [status("u1", Some("Sync policies"))],
                "tenantUserCheckinSummary": {"succeededUserCount": 7, "failedUserCount": 2},
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty(), "204 has no body: {}", r.text);
    let after = s.get(SINGLETON, &t).await.json();
    assert_eq!(after["tenantUserCheckinSummary"]["succeededUserCount"], 7);
    assert_eq!(after["tenantUserCheckinSummary"]["failedUserCount"], 2);
    let st = &after["tenantCheckinStatuses"][0];
    assert_eq!(st["userId"], "u1");
    assert_eq!(st["lastTaskName"], "Sync policies");
    assert_eq!(st["appliedPolicies"], json!(["Baseline"]));
    // Edm.DateTimeOffset is written in UTC.
    assert_eq!(st["checkinDateTime"], "2024-03-01T10:30:00.0000000Z");
    assert_ne!(after["@odata.etag"], before["@odata.etag"]);
}

async fn nested_complex_values_carry_odata_type_with_hash() {
    let s = Server::start().await;
    let t = s.token("contoso");
    // Input may name the types without '#'; output always has it.
    let mut st = status("u2", None);
    st["@odata.type"] = json!("microsoft.graph.officeClientCheckinStatus");
    let r = s
        .patch(
            SINGLETON,
            &t,
            json!({
                "@odata.type": "microsoft.graph.officeConfiguration",
                "tenantCheckinStatuses": [st],
                "tenantUserCheckinSummary": {"@odata.type": "microsoft.graph.officeUserCheckinSummary", "succeededUserCount": 1, "failedUserCount": 0},
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let v = s.get(SINGLETON, &t).await.json();
    assert_eq!(v["@odata.type"], "#microsoft.graph.officeConfiguration");
    assert_eq!(
        v["tenantCheckinStatuses"][0]["@odata.type"],
        "#microsoft.graph.officeClientCheckinStatus"
    );
    assert_eq!(
        v["tenantUserCheckinSummary"]["@odata.type"],
        "#microsoft.graph.officeUserCheckinSummary"
    );
    // No lastTaskName sent: none echoed.
    assert!(v["tenantCheckinStatuses"][0].get("lastTaskName").is_none());
}

async fn prefer_return_representation_answers_200_with_the_entity() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let r = patch_with(
        &s,
        &t,
        &[("prefer", "return=representation")],
        json!({"tenantCheckinStatuses": [status("u3", Some("Apply"))]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("preference-applied"),
        Some("return=representation")
    );
    let v = r.json();
    assert!(
        v["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/beta/$metadata#officeConfiguration")
    );
    assert_eq!(v["tenantCheckinStatuses"][0]["lastTaskName"], "Apply");
    assert_eq!(r.header("etag"), v["@odata.etag"].as_str());
    // The representation is what a later read returns.
    let mut got = s.get(SINGLETON, &t).await.json();
    got.as_object_mut().unwrap().remove("@odata.context");
    let mut v = v;
    v.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(got, v);
}

async fn if_match_guards_patch() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let r = s.get(SINGLETON, &t).await;
    let old_etag = r.header("etag").unwrap().to_string();

    // The current ETag matches.
    let r = patch_with(
        &s,
        &t,
        &[("if-match", &old_etag)],
        json!({"tenantUserCheckinSummary": {"succeededUserCount": 1, "failedUserCount": 0}}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let new_etag = r.header("etag").unwrap().to_string();
    assert_ne!(new_etag, old_etag);

    // The old one no longer does: 412, nothing changed.
    let snap = s.snapshot(&t).await;
    let r = patch_with(
        &s,
        &t,
        &[("if-match", &old_etag)],
        json!({"tenantUserCheckinSummary": {"succeededUserCount": 99, "failedUserCount": 0}}),
    )
    .await;
    r.assert_error(412, "PreconditionFailed");
    assert_eq!(s.snapshot(&t).await, snap);

    // `*` matches any existing entity.
    let r = patch_with(
        &s,
        &t,
        &[("if-match", "*")],
        json!({"tenantUserCheckinSummary": {"succeededUserCount": 5, "failedUserCount": 0}}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let v = s.get(SINGLETON, &t).await.json();
    assert_eq!(v["tenantUserCheckinSummary"]["succeededUserCount"], 5);
}

async fn patch_body_id_must_match() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let v = s.get(SINGLETON, &t).await.json();
    let id = id_of(&v);
    let snap = s.snapshot(&t).await;
    let r = s
        .patch(
            SINGLETON,
            &t,
            json!({"id": "11111111-2222-3333-4444-555555555555", "tenantUserCheckinSummary": {"succeededUserCount": 3, "failedUserCount": 0}}),
        )
        .await;
    let msg = r.assert_error(400, "BadRequest");
    assert!(msg.contains("id"), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    // The same id (any case) is fine: clients round-trip GET bodies.
    let mut round_trip = v.clone();
    round_trip["id"] = json!(id.to_uppercase());
    let r = s.patch(SINGLETON, &t, round_trip).await;
    assert_eq!(r.status, 204, "{}", r.text);
}

async fn navigation_and_unknown_properties_are_refused() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let snap = s.snapshot(&t).await;
    let msg = s
        .patch(SINGLETON, &t, json!({"clientConfigurations": []}))
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("clientConfigurations"), "{msg}");
    let msg = s
        .patch(SINGLETON, &t, json!({"colour": "blue"}))
        .await
        .assert_error(400, "BadRequest");
    assert!(
        msg.contains("'colour'") && msg.contains("officeConfiguration"),
        "{msg}"
    );
    assert_eq!(s.snapshot(&t).await, snap);
}

engine_tests!(
    get_returns_the_bare_singleton_with_a_stable_id,
    patch_answers_204_and_persists,
    nested_complex_values_carry_odata_type_with_hash,
    prefer_return_representation_answers_200_with_the_entity,
    if_match_guards_patch,
    patch_body_id_must_match,
    navigation_and_unknown_properties_are_refused,
);

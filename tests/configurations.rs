#[macro_use]
mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn create_read_list_update_delete() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let created = s
        .create(&t, json!({"@odata.type": WINDOWS, "displayName": "Baseline", "description": "d", "policyPayload": b64(r#"{"a":1}"#)}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["@odata.type"], WINDOWS);
    assert_eq!(created["priority"], 1);
    assert_eq!(created["policyPayload"], b64(r#"{"a":1}"#));
    assert!(
        created["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/beta/$metadata#officeConfiguration/clientConfigurations/$entity")
    );

    let got = s
        .get(
            &format!("/officeConfiguration/clientConfigurations/{id}"),
            &t,
        )
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created);
    assert_eq!(got.header("etag"), created["@odata.etag"].as_str());

    let r = s
        .patch(
            &format!("/officeConfiguration/clientConfigurations/{id}"),
            &t,
            json!({"displayName": "Renamed"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let got = s
        .get(
            &format!("/officeConfiguration/clientConfigurations/{id}"),
            &t,
        )
        .await
        .json();
    assert_eq!(got["displayName"], "Renamed");
    assert_ne!(got["@odata.etag"], created["@odata.etag"]);

    let list = s
        .get("/officeConfiguration/clientConfigurations", &t)
        .await
        .json();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);

    assert_eq!(
        s.delete(
            &format!("/officeConfiguration/clientConfigurations/{id}"),
            &t
        )
        .await
        .status,
        204
    );
    s.get(
        &format!("/officeConfiguration/clientConfigurations/{id}"),
        &t,
    )
    .await
    .assert_error(404, "ResourceNotFound");
    s.delete(
        &format!("/officeConfiguration/clientConfigurations/{id}"),
        &t,
    )
    .await
    .assert_error(404, "ResourceNotFound");
}

async fn send_with(
    s: &Server,
    method: Method,
    path: &str,
    t: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Res {
    let mut rb = s.req(method, path, Some(t));
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    Server::finish(rb).await
}

fn priorities(list: &Value) -> Vec<i64> {
    let mut p: Vec<i64> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect();
    p.sort();
    p
}

async fn both_derived_types_round_trip() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let w = s
        .create(&t, json!({"@odata.type": WINDOWS, "displayName": "W"}))
        .await;
    // '#' is optional on input.
    let sec = s
        .create(
            &t,
            json!({"@odata.type": "microsoft.graph.windowsOfficeClientSecurityConfiguration", "displayName": "S"}),
        )
        .await;
    assert_eq!(w["@odata.type"], WINDOWS);
    assert_eq!(sec["@odata.type"], SECURITY);
    let got = s.get(&cfg(&id_of(&sec)), &t).await.json();
    assert_eq!(got["@odata.type"], SECURITY);
    assert_eq!(got["displayName"], "S");
    let list = s.get(CONFIGS, &t).await.json();
    assert!(
        list["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/beta/$metadata#officeConfiguration/clientConfigurations")
    );
    let types: Vec<(String, String)> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (id_of(c), c["@odata.type"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        types.contains(&(id_of(&w), WINDOWS.to_string())),
        "{types:?}"
    );
    assert!(
        types.contains(&(id_of(&sec), SECURITY.to_string())),
        "{types:?}"
    );
    // Every documented property is emitted, nulls included.
    for prop in [
        "id",
        "@odata.etag",
        "displayName",
        "description",
        "priority",
        "policyPayload",
        "userPreferencePayload",
        "lastModifiedDateTime",
        "checkinStatuses",
        "userCheckinSummary",
    ] {
        assert!(got.get(prop).is_some(), "missing {prop}: {got}");
    }
    assert_eq!(
        got["userCheckinSummary"]["@odata.type"],
        "#microsoft.graph.officeUserCheckinSummary"
    );
}

async fn priority_defaults_to_max_plus_one() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let a = s.create_windows(&t, "a").await;
    assert_eq!(a["priority"], 1);
    let b = s
        .create(&t, json!({"@odata.type": WINDOWS, "priority": 10}))
        .await;
    assert_eq!(b["priority"], 10);
    let c = s
        .create(&t, json!({"@odata.type": SECURITY, "priority": 5}))
        .await;
    assert_eq!(c["priority"], 5);
    // max + 1, not the lowest gap.
    let d = s.create_windows(&t, "d").await;
    assert_eq!(d["priority"], 11);
    // Explicit priorities may be zero or negative (Int32).
    let e = s
        .create(&t, json!({"@odata.type": WINDOWS, "priority": -3}))
        .await;
    assert_eq!(e["priority"], -3);
    let f = s.create_windows(&t, "f").await;
    assert_eq!(f["priority"], 12);
    let list = s.get(CONFIGS, &t).await.json();
    assert_eq!(priorities(&list), vec![-3, 1, 5, 10, 11, 12]);
}

async fn duplicate_priority_is_a_conflict() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let a = s
        .create(&t, json!({"@odata.type": WINDOWS, "priority": 3}))
        .await;
    let b = s
        .create(&t, json!({"@odata.type": WINDOWS, "priority": 4}))
        .await;
    let snap = s.snapshot(&t).await;

    let msg = s
        .post(
            CONFIGS,
            &t,
            json!({"@odata.type": SECURITY, "priority": 3, "displayName": "dup"}),
        )
        .await
        .assert_error(409, "Conflict");
    assert!(msg.contains('3'), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    let msg = s
        .patch(
            &cfg(&id_of(&b)),
            &t,
            json!({"priority": 3, "displayName": "x"}),
        )
        .await
        .assert_error(409, "Conflict");
    assert!(msg.contains('3'), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    // Re-sending a configuration's own priority is not a conflict.
    let r = s.patch(&cfg(&id_of(&a)), &t, json!({"priority": 3})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Moving to a free value is fine, and frees the old one.
    let r = s.patch(&cfg(&id_of(&b)), &t, json!({"priority": 9})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let c = s
        .create(&t, json!({"@odata.type": WINDOWS, "priority": 4}))
        .await;
    assert_eq!(c["priority"], 4);
}

async fn patch_cannot_change_the_type() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let w = s.create_windows(&t, "w").await;
    let snap = s.snapshot(&t).await;
    let msg = s
        .patch(
            &cfg(&id_of(&w)),
            &t,
            json!({"@odata.type": SECURITY, "displayName": "changed"}),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("cannot be changed"), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);
    // Naming the stored type (with or without '#') is fine.
    let r = s
        .patch(
            &cfg(&id_of(&w)),
            &t,
            json!({"@odata.type": "microsoft.graph.windowsOfficeClientConfiguration", "displayName": "same"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let got = s.get(&cfg(&id_of(&w)), &t).await.json();
    assert_eq!(got["@odata.type"], WINDOWS);
    assert_eq!(got["displayName"], "same");
}

async fn id_in_post_body_is_ignored_and_in_patch_must_match() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let wanted = "11111111-2222-3333-4444-555555555555";
    let c = s
        .create(&t, json!({"@odata.type": WINDOWS, "id": wanted}))
        .await;
    let id = id_of(&c);
    assert_ne!(id, wanted);
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    s.get(&cfg(wanted), &t)
        .await
        .assert_error(404, "ResourceNotFound");

    let snap = s.snapshot(&t).await;
    let msg = s
        .patch(&cfg(&id), &t, json!({"id": wanted, "displayName": "x"}))
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("'id'"), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);
    let r = s
        .patch(
            &cfg(&id),
            &t,
            json!({"id": id.to_uppercase(), "displayName": "y"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

async fn last_modified_is_server_maintained() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let start = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let c = s
        .create(
            &t,
            json!({"@odata.type": WINDOWS, "lastModifiedDateTime": "2001-01-01T00:00:00Z"}),
        )
        .await;
    let lm = c["lastModifiedDateTime"].as_str().unwrap().to_string();
    assert_ne!(lm, "2001-01-01T00:00:00Z");
    let parsed =
        time::OffsetDateTime::parse(&lm, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(parsed >= start, "{lm} is not the server's clock");
    // Format: UTC with seven fractional digits.
    assert!(
        lm.ends_with('Z') && lm.len() == "2024-01-01T00:00:00.0000000Z".len(),
        "{lm}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // A write of only lastModifiedDateTime is accepted, ignored as a value, and still a write.
    let r = s
        .patch(
            &cfg(&id_of(&c)),
            &t,
            json!({"lastModifiedDateTime": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let after = s.get(&cfg(&id_of(&c)), &t).await.json();
    let lm2 = after["lastModifiedDateTime"].as_str().unwrap();
    assert!(lm2 > lm.as_str(), "{lm2} should be later than {lm}");

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.patch(&cfg(&id_of(&c)), &t, json!({"description": "d"}))
        .await;
    let after2 = s.get(&cfg(&id_of(&c)), &t).await.json();
    assert!(after2["lastModifiedDateTime"].as_str().unwrap() > lm2);
    // A read does not touch it.
    let again = s.get(&cfg(&id_of(&c)), &t).await.json();
    assert_eq!(
        again["lastModifiedDateTime"],
        after2["lastModifiedDateTime"]
    );
}

async fn deep_insert_of_assignments() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let g1 = "aaaaaaaa-0000-4000-8000-000000000001";
    let g2 = "aaaaaaaa-0000-4000-8000-000000000002";
    let r = s
        .post(
            CONFIGS,
            &t,
            json!({
                "@odata.type": WINDOWS,
                "displayName": "deep",
                "assignments": [{"target": group_target(g1)}, {"target": group_target(g2)}],
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let c = r.json();
    let inline = c["assignments"].as_array().expect("assignments echoed");
    assert_eq!(inline.len(), 2);
    let list = s
        .get(&format!("{}/assignments", cfg(&id_of(&c))), &t)
        .await
        .json();
    let mut stored: Vec<(String, String)> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                id_of(a),
                a["target"]["groupId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    stored.sort();
    let mut echoed: Vec<(String, String)> = inline
        .iter()
        .map(|a| {
            (
                id_of(a),
                a["target"]["groupId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    echoed.sort();
    assert_eq!(stored, echoed);
    let mut groups: Vec<&str> = stored.iter().map(|(_, g)| g.as_str()).collect();
    groups.sort();
    assert_eq!(groups, vec![g1, g2]);
    for a in list["value"].as_array().unwrap() {
        assert_eq!(
            a["target"]["@odata.type"],
            "#microsoft.graph.officeConfigurationGroupAssignmentTarget"
        );
    }

    // A deep insert with a bad assignment creates nothing at all.
    let snap = s.snapshot(&t).await;
    let msg = s
        .post(
            CONFIGS,
            &t,
            json!({
                "@odata.type": WINDOWS,
                "assignments": [{"target": group_target(g1)}, {"target": group_target(g1)}],
            }),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains(g1), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);
    // PATCH cannot deep-update the navigation property.
    s.patch(
        &cfg(&id_of(&c)),
        &t,
        json!({"assignments": [{"target": group_target(g1)}]}),
    )
    .await
    .assert_error(400, "BadRequest");
    assert_eq!(s.snapshot(&t).await, snap);
}

async fn post_sends_location_and_return_minimal() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let r = s
        .post(
            CONFIGS,
            &t,
            json!({"@odata.type": WINDOWS, "displayName": "loc"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let c = r.json();
    let location = r.header("location").expect("Location").to_string();
    assert_eq!(location, s.url(&cfg(&id_of(&c))));
    assert_eq!(r.header("etag"), c["@odata.etag"].as_str());
    let got = Server::finish(s.client.get(&location).bearer_auth(&t)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["displayName"], "loc");

    let r = send_with(
        &s,
        Method::POST,
        CONFIGS,
        &t,
        &[("prefer", "return=minimal")],
        Some(json!({"@odata.type": SECURITY, "displayName": "minimal"})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    assert_eq!(r.header("preference-applied"), Some("return=minimal"));
    let location = r.header("location").expect("Location").to_string();
    let got = Server::finish(s.client.get(&location).bearer_auth(&t)).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json()["displayName"], "minimal");
    assert_eq!(got.json()["@odata.type"], SECURITY);
}

async fn patch_prefer_return_representation() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s.create_windows(&t, "before").await;
    let r = send_with(
        &s,
        Method::PATCH,
        &cfg(&id_of(&c)),
        &t,
        &[("prefer", "return=representation")],
        Some(json!({"displayName": "after", "description": null})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("preference-applied"),
        Some("return=representation")
    );
    let v = r.json();
    assert_eq!(v["displayName"], "after");
    assert_eq!(v["description"], Value::Null);
    assert_eq!(r.header("etag"), v["@odata.etag"].as_str());
    assert_eq!(s.get(&cfg(&id_of(&c)), &t).await.json(), v);
}

async fn if_match_on_patch_and_delete() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s.create_windows(&t, "v1").await;
    let path = cfg(&id_of(&c));
    let etag1 = c["@odata.etag"].as_str().unwrap().to_string();

    let r = send_with(
        &s,
        Method::PATCH,
        &path,
        &t,
        &[("if-match", &etag1)],
        Some(json!({"displayName": "v2"})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let etag2 = r.header("etag").unwrap().to_string();
    assert_ne!(etag1, etag2);

    let snap = s.snapshot(&t).await;
    send_with(
        &s,
        Method::PATCH,
        &path,
        &t,
        &[("if-match", &etag1)],
        Some(json!({"displayName": "lost update"})),
    )
    .await
    .assert_error(412, "PreconditionFailed");
    assert_eq!(s.snapshot(&t).await, snap);

    send_with(&s, Method::DELETE, &path, &t, &[("if-match", &etag1)], None)
        .await
        .assert_error(412, "PreconditionFailed");
    assert_eq!(s.snapshot(&t).await, snap);
    assert_eq!(s.get(&path, &t).await.status, 200);

    // `*` matches any existing entity.
    let r = send_with(
        &s,
        Method::PATCH,
        &path,
        &t,
        &[("if-match", "*")],
        Some(json!({"displayName": "v3"})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let etag3 = s.get(&path, &t).await.header("etag").unwrap().to_string();
    let r = send_with(&s, Method::DELETE, &path, &t, &[("if-match", &etag3)], None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    s.get(&path, &t).await.assert_error(404, "ResourceNotFound");

    let d = s.create_windows(&t, "star").await;
    let r = send_with(
        &s,
        Method::DELETE,
        &cfg(&id_of(&d)),
        &t,
        &[("if-match", "*")],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    s.get(&cfg(&id_of(&d)), &t)
        .await
        .assert_error(404, "ResourceNotFound");
}

async fn unknown_ids_are_404() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let missing = cfg("0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01");
    s.get(&missing, &t)
        .await
        .assert_error(404, "ResourceNotFound");
    s.patch(&missing, &t, json!({"displayName": "x"}))
        .await
        .assert_error(404, "ResourceNotFound");
    s.delete(&missing, &t)
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(s.get(CONFIGS, &t).await.json()["value"], json!([]));
}

engine_tests!(
    create_read_list_update_delete,
    both_derived_types_round_trip,
    priority_defaults_to_max_plus_one,
    duplicate_priority_is_a_conflict,
    patch_cannot_change_the_type,
    id_in_post_body_is_ignored_and_in_patch_must_match,
    last_modified_is_server_maintained,
    deep_insert_of_assignments,
    post_sends_location_and_return_minimal,
    patch_prefer_return_representation,
    if_match_on_patch_and_delete,
    unknown_ids_are_404,
);

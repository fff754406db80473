//! The assignments collection of a configuration: list, create, get, patch, delete.
#[macro_use]
mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const G1: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const G2: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const G3: &str = "aaaaaaaa-0000-4000-8000-000000000003";
const MISSING: &str = "0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01";

fn assignments(config: &str) -> String {
    format!("{}/assignments", cfg(config))
}

fn assignment(config: &str, id: &str) -> String {
    format!("{}/assignments/{id}", cfg(config))
}

async fn setup(s: &Server, t: &str) -> String {
    id_of(&s.create_windows(t, "with assignments").await)
}

async fn add(s: &Server, t: &str, config: &str, group: &str) -> Value {
    let r = s
        .post(
            &assignments(config),
            t,
            json!({"target": group_target(group)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()
}

async fn create_get_list_patch_delete() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = setup(&s, &t).await;

    let empty = s.get(&assignments(&c), &t).await;
    assert_eq!(empty.status, 200);
    let v = empty.json();
    assert_eq!(v["value"], json!([]));
    assert!(
        v["@odata.context"].as_str().unwrap().ends_with(&format!(
            "/beta/$metadata#officeConfiguration/clientConfigurations('{c}')/assignments"
        )),
        "{v}"
    );

    let r = s
        .post(&assignments(&c), &t, json!({"target": group_target(G1)}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = r.json();
    let aid = id_of(&a);
    assert!(uuid::Uuid::parse_str(&aid).is_ok());
    assert_eq!(
        r.header("location"),
        Some(s.url(&assignment(&c, &aid)).as_str())
    );
    assert_eq!(r.header("etag"), a["@odata.etag"].as_str());
    assert_eq!(
        a["@odata.type"],
        "#microsoft.graph.officeClientConfigurationAssignment"
    );
    assert_eq!(
        a["target"],
        json!({"@odata.type": "#microsoft.graph.officeConfigurationGroupAssignmentTarget", "groupId": G1})
    );
    assert!(
        a["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/assignments/$entity")
    );

    let got = s.get(&assignment(&c, &aid), &t).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), a);
    assert_eq!(got.header("etag"), a["@odata.etag"].as_str());

    let list = s.get(&assignments(&c), &t).await.json();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    assert_eq!(id_of(&list["value"][0]), aid);

    // PATCH the target; '#' is optional on input.
    let r = s
        .patch(
            &assignment(&c, &aid),
            &t,
            json!({"target": {"@odata.type": "microsoft.graph.officeConfigurationGroupAssignmentTarget", "groupId": G2}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let got = s.get(&assignment(&c, &aid), &t).await.json();
    assert_eq!(got["target"]["groupId"], G2);
    assert_ne!(got["@odata.etag"], a["@odata.etag"]);

    let r = Server::finish(
        s.req(Method::PATCH, &assignment(&c, &aid), Some(&t))
            .header("content-type", "application/json")
            .header("prefer", "return=representation")
            .body(json!({"target": group_target(G3)}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["target"]["groupId"], G3);

    let r = s.delete(&assignment(&c, &aid), &t).await;
    assert_eq!(r.status, 204, "{}", r.text);
    s.get(&assignment(&c, &aid), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(s.get(&assignments(&c), &t).await.json()["value"], json!([]));
    s.delete(&assignment(&c, &aid), &t)
        .await
        .assert_error(404, "ResourceNotFound");
}

async fn unknown_configuration_or_assignment_is_404() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = setup(&s, &t).await;
    let a = add(&s, &t, &c, G1).await;
    let aid = id_of(&a);
    let snap = s.snapshot(&t).await;

    // Unknown configuration.
    s.get(&assignments(MISSING), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    s.post(
        &assignments(MISSING),
        &t,
        json!({"target": group_target(G2)}),
    )
    .await
    .assert_error(404, "ResourceNotFound");
    s.get(&assignment(MISSING, &aid), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    s.patch(
        &assignment(MISSING, &aid),
        &t,
        json!({"target": group_target(G2)}),
    )
    .await
    .assert_error(404, "ResourceNotFound");
    s.delete(&assignment(MISSING, &aid), &t)
        .await
        .assert_error(404, "ResourceNotFound");

    // Unknown assignment under an existing configuration.
    s.get(&assignment(&c, MISSING), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    s.patch(
        &assignment(&c, MISSING),
        &t,
        json!({"target": group_target(G2)}),
    )
    .await
    .assert_error(404, "ResourceNotFound");
    s.delete(&assignment(&c, MISSING), &t)
        .await
        .assert_error(404, "ResourceNotFound");

    // An assignment addressed under another configuration does not exist there.
    let other = setup(&s, &t).await;
    let snap_with_other = s.snapshot(&t).await;
    s.get(&assignment(&other, &aid), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    s.delete(&assignment(&other, &aid), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(s.snapshot(&t).await, snap_with_other);
    assert_eq!(
        snap_with_other["assignments"][&c], snap["assignments"][&c],
        "the first configuration's assignments are untouched"
    );
}

async fn duplicate_group_is_a_conflict() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = setup(&s, &t).await;
    let a1 = add(&s, &t, &c, G1).await;
    let _a2 = add(&s, &t, &c, G2).await;
    let snap = s.snapshot(&t).await;

    let msg = s
        .post(&assignments(&c), &t, json!({"target": group_target(G1)}))
        .await
        .assert_error(409, "Conflict");
    assert!(msg.contains(G1), "{msg}");
    // The same group spelled in upper case is still the same group.
    s.post(
        &assignments(&c),
        &t,
        json!({"target": group_target(&G1.to_uppercase())}),
    )
    .await
    .assert_error(409, "Conflict");
    assert_eq!(s.snapshot(&t).await, snap);

    let msg = s
        .patch(
            &assignment(&c, &id_of(&a1)),
            &t,
            json!({"target": group_target(G2)}),
        )
        .await
        .assert_error(409, "Conflict");
    assert!(msg.contains(G2), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    // Its own group is no conflict.
    let r = s
        .patch(
            &assignment(&c, &id_of(&a1)),
            &t,
            json!({"target": group_target(G1)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // The same group on another configuration is fine.
    let other = setup(&s, &t).await;
    add(&s, &t, &other, G1).await;
}

async fn bad_assignment_bodies() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = setup(&s, &t).await;
    let a = add(&s, &t, &c, G1).await;
    let snap = s.snapshot(&t).await;

    let msg = s
        .post(&assignments(&c), &t, json!({}))
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("target"), "{msg}");
    let msg = s
        .post(
            &assignments(&c),
            &t,
            json!({"target": {"@odata.type": "#microsoft.graph.officeConfigurationGroupAssignmentTarget", "groupId": "not-a-guid"}}),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("groupId"), "{msg}");
    let msg = s
        .post(
            &assignments(&c),
            &t,
            json!({"target": {"@odata.type": "#microsoft.graph.officeConfigurationAssignmentTarget"}}),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("abstract"), "{msg}");
    let msg = s
        .patch(
            &assignment(&c, &id_of(&a)),
            &t,
            json!({"id": MISSING, "target": group_target(G2)}),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("'id'"), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);
}

async fn if_match_on_assignment_patch_and_delete() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = setup(&s, &t).await;
    let a = add(&s, &t, &c, G1).await;
    let path = assignment(&c, &id_of(&a));
    let stale = a["@odata.etag"].as_str().unwrap().to_string();
    assert_eq!(
        s.patch(&path, &t, json!({"target": group_target(G2)}))
            .await
            .status,
        204
    );
    let snap = s.snapshot(&t).await;
    Server::finish(
        s.req(Method::PATCH, &path, Some(&t))
            .header("content-type", "application/json")
            .header("if-match", &stale)
            .body(json!({"target": group_target(G3)}).to_string()),
    )
    .await
    .assert_error(412, "PreconditionFailed");
    Server::finish(
        s.req(Method::DELETE, &path, Some(&t))
            .header("if-match", &stale),
    )
    .await
    .assert_error(412, "PreconditionFailed");
    assert_eq!(s.snapshot(&t).await, snap);
    let r = Server::finish(
        s.req(Method::DELETE, &path, Some(&t))
            .header("if-match", "*"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

async fn deleting_a_configuration_deletes_its_assignments() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = setup(&s, &t).await;
    let a1 = add(&s, &t, &c, G1).await;
    let a2 = add(&s, &t, &c, G2).await;
    let keep = setup(&s, &t).await;
    let kept = add(&s, &t, &keep, G1).await;

    assert_eq!(s.delete(&cfg(&c), &t).await.status, 204);
    s.get(&assignments(&c), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    for a in [&a1, &a2] {
        s.get(&assignment(&c, &id_of(a)), &t)
            .await
            .assert_error(404, "ResourceNotFound");
    }
    // The other configuration keeps its own.
    let list = s.get(&assignments(&keep), &t).await.json();
    assert_eq!(list["value"], json!([kept_without_context(&kept)]));

    // And nothing of the deleted set survives a restart.
    let mut s = s;
    s.restart().await;
    let t = s.token("contoso");
    s.get(&assignments(&c), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    let list = s.get(&assignments(&keep), &t).await.json();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
}

fn kept_without_context(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("@odata.context");
    v
}

engine_tests!(
    create_get_list_patch_delete,
    unknown_configuration_or_assignment_is_404,
    duplicate_group_is_a_conflict,
    bad_assignment_bodies,
    if_match_on_assignment_patch_and_delete,
    deleting_a_configuration_deletes_its_assignments,
);

//! The bound actions: `assign` (per configuration) and `updatePriorities` (on the collection).
#[macro_use]
mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{Value, json};

const G1: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const G2: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const G3: &str = "aaaaaaaa-0000-4000-8000-000000000003";
const CLIENT_ID: &str = "bbbbbbbb-0000-4000-8000-0000000000b1";
const MISSING: &str = "0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01";

fn assignments(config: &str) -> String {
    format!("{}/assignments", cfg(config))
}

/// (id, groupId) pairs of a collection, sorted.
fn pairs(list: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
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
    v.sort();
    v
}

async fn priority_of(s: &Server, t: &str, id: &str) -> i64 {
    s.get(&cfg(id), t).await.json()["priority"]
        .as_i64()
        .unwrap()
}

async fn assign_replaces_the_whole_set_at_both_paths() {
    let s = Server::start().await;
    let t = s.token("contoso");
    for action in ["assign", "microsoft.graph.assign"] {
        let c = id_of(&s.create_windows(&t, action).await);
        let old = s
            .post(&assignments(&c), &t, json!({"target": group_target(G1)}))
            .await
            .json();
        let r = s
            .post(
                &format!("{}/{action}", cfg(&c)),
                &t,
                json!({"officeConfigurationAssignments": [
                    {"id": CLIENT_ID, "target": group_target(G2)},
                    {"target": group_target(G3)},
                ]}),
            )
            .await;
        assert_eq!(r.status, 200, "{action}: {}", r.text);
        let v = r.json();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            vec!["@odata.context", "value"],
            "{v}"
        );
        assert!(
            v["@odata.context"].as_str().unwrap().ends_with(
                "/beta/$metadata#Collection(microsoft.graph.officeClientConfigurationAssignment)"
            ),
            "{v}"
        );
        let returned = pairs(&v["value"]);
        assert_eq!(returned.len(), 2);
        // The client's id is kept; the other gets a fresh GUID.
        assert!(returned.contains(&(CLIENT_ID.to_string(), G2.to_string())));
        let generated = returned.iter().find(|(_, g)| g == G3).unwrap();
        assert!(uuid::Uuid::parse_str(&generated.0).is_ok());
        assert_ne!(generated.0, id_of(&old));
        for a in v["value"].as_array().unwrap() {
            assert_eq!(
                a["@odata.type"],
                "#microsoft.graph.officeClientConfigurationAssignment"
            );
            assert_eq!(
                a["target"]["@odata.type"],
                "#microsoft.graph.officeConfigurationGroupAssignmentTarget"
            );
        }
        // What was returned is what is stored: the old assignment (G1) is gone.
        let stored = s.get(&assignments(&c), &t).await.json();
        assert_eq!(pairs(&stored["value"]), returned);
        s.get(&format!("{}/{}", assignments(&c), id_of(&old)), &t)
            .await
            .assert_error(404, "ResourceNotFound");

        // An empty set clears all assignments.
        let r = s
            .post(
                &format!("{}/{action}", cfg(&c)),
                &t,
                json!({"officeConfigurationAssignments": []}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["value"], json!([]));
        assert_eq!(s.get(&assignments(&c), &t).await.json()["value"], json!([]));
    }
}

async fn assign_rejects_bad_sets_and_changes_nothing() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = id_of(&s.create_windows(&t, "c").await);
    s.post(
        &format!("{}/assign", cfg(&c)),
        &t,
        json!({"officeConfigurationAssignments": [{"target": group_target(G1)}]}),
    )
    .await;
    let snap = s.snapshot(&t).await;
    let path = format!("{}/assign", cfg(&c));

    let msg = s
        .post(
            &path,
            &t,
            json!({"officeConfigurationAssignments": [
                {"target": group_target(G2)},
                {"target": group_target(G2)},
            ]}),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains(G2), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    let msg = s
        .post(
            &path,
            &t,
            json!({"officeConfigurationAssignments": [
                {"target": group_target(G2)},
                {"id": CLIENT_ID},
            ]}),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("target"), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    let msg = s
        .post(&path, &t, json!({}))
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("officeConfigurationAssignments"), "{msg}");
    let msg = s
        .post(&path, &t, json!({"assignments": []}))
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("'assignments'"), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    s.post(
        &format!("{}/assign", cfg(MISSING)),
        &t,
        json!({"officeConfigurationAssignments": []}),
    )
    .await
    .assert_error(404, "ResourceNotFound");
    assert_eq!(s.snapshot(&t).await, snap);
}

async fn update_priorities_swaps_at_every_path() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let a = id_of(&s.create_windows(&t, "a").await);
    let b = id_of(&s.create_windows(&t, "b").await);
    assert_eq!(
        (priority_of(&s, &t, &a).await, priority_of(&s, &t, &b).await),
        (1, 2)
    );
    let mut expected = (1, 2);
    for action in [
        "updatePriorities",
        "microsoft.graph.updatePriorities",
        "microsoft.management.services.api.updatePriorities",
    ] {
        let etag_before = s.get(&cfg(&a), &t).await.json()["@odata.etag"].clone();
        expected = (expected.1, expected.0);
        let r = s
            .post(
                &format!("{CONFIGS}/{action}"),
                &t,
                json!({
                    "officeConfigurationPolicyIds": [a, b],
                    "officeConfigurationPriorities": [expected.0, expected.1],
                }),
            )
            .await;
        assert_eq!(r.status, 204, "{action}: {}", r.text);
        assert!(r.text.is_empty());
        assert_eq!(
            (priority_of(&s, &t, &a).await, priority_of(&s, &t, &b).await),
            expected,
            "{action}"
        );
        // A priority change is a write: the ETag moves.
        assert_ne!(s.get(&cfg(&a), &t).await.json()["@odata.etag"], etag_before);
    }
    // Moving one configuration to a free value.
    let r = s
        .post(
            &format!("{CONFIGS}/updatePriorities"),
            &t,
            json!({"officeConfigurationPolicyIds": [a], "officeConfigurationPriorities": [50]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(priority_of(&s, &t, &a).await, 50);
}

async fn update_priorities_is_all_or_nothing() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let a = id_of(&s.create_windows(&t, "a").await);
    let b = id_of(&s.create_windows(&t, "b").await);
    let c = id_of(&s.create_windows(&t, "c").await);
    let path = format!("{CONFIGS}/updatePriorities");
    let snap = s.snapshot(&t).await;

    // Lengths differ.
    let msg = s
        .post(
            &path,
            &t,
            json!({"officeConfigurationPolicyIds": [a, b], "officeConfigurationPriorities": [10]}),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("same length"), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    // An unknown id after valid changes: nothing is applied.
    let msg = s
        .post(
            &path,
            &t,
            json!({"officeConfigurationPolicyIds": [a, b, MISSING], "officeConfigurationPriorities": [10, 11, 12]}),
        )
        .await
        .assert_error(404, "ResourceNotFound");
    assert!(msg.contains(MISSING), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    // A result that is not unique (a moves onto c's priority, c is not moved).
    let msg = s
        .post(
            &path,
            &t,
            json!({"officeConfigurationPolicyIds": [b, a], "officeConfigurationPriorities": [20, 3]}),
        )
        .await
        .assert_error(409, "Conflict");
    assert!(msg.contains('3'), "{msg}");
    assert_eq!(s.snapshot(&t).await, snap);

    // Two ids given the same priority.
    s.post(
        &path,
        &t,
        json!({"officeConfigurationPolicyIds": [a, b], "officeConfigurationPriorities": [30, 30]}),
    )
    .await
    .assert_error(409, "Conflict");
    assert_eq!(s.snapshot(&t).await, snap);

    // Malformed parameters.
    s.post(
        &path,
        &t,
        json!({"officeConfigurationPolicyIds": [a], "officeConfigurationPriorities": [2147483648i64]}),
    )
    .await
    .assert_error(400, "BadRequest");
    s.post(&path, &t, json!({"officeConfigurationPolicyIds": [a]}))
        .await
        .assert_error(400, "BadRequest");
    assert_eq!(s.snapshot(&t).await, snap);

    // A three-way rotation that is unique only as a whole succeeds.
    let r = s
        .post(
            &path,
            &t,
            json!({"officeConfigurationPolicyIds": [a, b, c], "officeConfigurationPriorities": [2, 3, 1]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(priority_of(&s, &t, &a).await, 2);
    assert_eq!(priority_of(&s, &t, &b).await, 3);
    assert_eq!(priority_of(&s, &t, &c).await, 1);
}

async fn concurrent_creates_never_duplicate_priorities() {
    let s = Server::start().await;
    let t = s.token("contoso");
    const N: usize = 40;
    let results = futures::future::join_all((0..N).map(|i| {
        let s = &s;
        let t = &t;
        async move {
            let r = s
                .post(
                    CONFIGS,
                    t,
                    json!({"@odata.type": WINDOWS, "displayName": format!("c{i}")}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json()["priority"].as_i64().unwrap()
        }
    }))
    .await;
    let unique: HashSet<i64> = results.iter().copied().collect();
    assert_eq!(unique.len(), N, "duplicate priorities: {results:?}");
    let list = s.get(CONFIGS, &t).await.json();
    let stored: HashSet<i64> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(stored, unique);
    assert_eq!(stored, (1..=N as i64).collect());
}

async fn assign_with_an_id_used_by_another_configuration_is_not_a_server_error() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c1 = id_of(&s.create_windows(&t, "c1").await);
    let c2 = id_of(&s.create_windows(&t, "c2").await);
    let body =
        json!({"officeConfigurationAssignments": [{"id": CLIENT_ID, "target": group_target(G1)}]});
    let r = s
        .post(&format!("{}/assign", cfg(&c1)), &t, body.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let snap = s.snapshot(&t).await;
    let r = s.post(&format!("{}/assign", cfg(&c2)), &t, body).await;
    assert!(
        r.status.is_success() || r.status.is_client_error(),
        "{}",
        r.text
    );
    if r.status.is_client_error() {
        assert_eq!(s.snapshot(&t).await, snap);
    }
    // c1 keeps its assignment either way.
    let list = s.get(&assignments(&c1), &t).await.json();
    assert_eq!(
        pairs(&list["value"]),
        vec![(CLIENT_ID.to_string(), G1.to_string())]
    );
}

engine_tests!(
    assign_replaces_the_whole_set_at_both_paths,
    assign_rejects_bad_sets_and_changes_nothing,
    update_priorities_swaps_at_every_path,
    update_priorities_is_all_or_nothing,
    concurrent_creates_never_duplicate_priorities,
    assign_with_an_id_used_by_another_configuration_is_not_a_server_error,
);

//! The Office client policy endpoint: precedence, targeting, ETag/304, and that changes made
//! through Graph show up in the next policy response at once.

#[macro_use]
mod common;

use cirrus::auth::dev::TokenRequest;
use common::*;
use serde_json::{Value, json};

const G1: &str = "11111111-1111-4111-8111-111111111111";
const G2: &str = "22222222-2222-4222-8222-222222222222";
const POLICY: &str = "/cirrus/v1/client/policy";

fn user_token(s: &Server, groups: &str) -> String {
    s.token_with(TokenRequest {
        user: Some("00000000-0000-4000-8000-0000000000a7".into()),
        upn: Some("user@contoso.example".into()),
        scopes: Some("openid".into()),
        groups: Some(groups.into()),
        ..request("contoso")
    })
}

async fn policy(s: &Server, token: &str) -> Res {
    Server::finish(
        s.client
            .get(format!("{}{POLICY}", s.base))
            .bearer_auth(token),
    )
    .await
}

async fn create_assigned(
    s: &Server,
    admin: &str,
    kind: &str,
    priority: i32,
    payload: &str,
    group: &str,
) -> String {
    let c = s.create(admin, json!({"@odata.type": kind, "displayName": format!("p{priority}"), "priority": priority, "policyPayload": b64(payload)})).await;
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

async fn precedence_targeting_and_update_priorities() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let a = create_assigned(
        &s,
        &admin,
        WINDOWS,
        10,
        r#"{"shared":"from-a","onlyA":1}"#,
        G1,
    )
    .await;
    let b = create_assigned(
        &s,
        &admin,
        SECURITY,
        20,
        r#"{"shared":"from-b","onlyB":2}"#,
        G1,
    )
    .await;
    create_assigned(&s, &admin, WINDOWS, 5, r#"{"shared":"other-group"}"#, G2).await;

    let user = user_token(&s, G1);
    let r = policy(&s, &user).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let ids: Vec<&str> = v["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [a.as_str(), b.as_str()],
        "only G1's configurations, by priority"
    );
    assert_eq!(
        v["policySettings"],
        json!({"shared": "from-a", "onlyA": 1, "onlyB": 2})
    );
    assert_eq!(v["sources"]["policySettings"]["shared"], a);
    assert_eq!(v["sources"]["policySettings"]["onlyB"], b);
    assert_eq!(v["userPrincipalName"], "user@contoso.example");

    // updatePriorities flips the winner, visible in the very next response.
    let r = s.post(&format!("{CONFIGS}/updatePriorities"), &admin, json!({"officeConfigurationPolicyIds": [a, b], "officeConfigurationPriorities": [20, 10]})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let v = policy(&s, &user).await.json();
    assert_eq!(v["policySettings"]["shared"], "from-b");
    assert_eq!(v["sources"]["policySettings"]["shared"], b);
}

async fn etag_round_trip_and_changes_invalidate_it() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let id = create_assigned(&s, &admin, WINDOWS, 1, r#"{"k":1}"#, G1).await;
    let user = user_token(&s, G1);
    let first = policy(&s, &user).await;
    let etag = first.header("etag").expect("ETag").to_string();
    let again = Server::finish(
        s.client
            .get(format!("{}{POLICY}", s.base))
            .bearer_auth(&user)
            .header("if-none-match", &etag),
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.text.is_empty());
    // A change through Graph: the old ETag no longer matches.
    let r = s
        .patch(
            &cfg(&id),
            &admin,
            json!({"policyPayload": b64(r#"{"k":2}"#)}),
        )
        .await;
    assert_eq!(r.status, 204);
    let changed = Server::finish(
        s.client
            .get(format!("{}{POLICY}", s.base))
            .bearer_auth(&user)
            .header("if-none-match", &etag),
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["policySettings"]["k"], 2);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    // Deleting the configuration empties the policy.
    assert_eq!(s.delete(&cfg(&id), &admin).await.status, 204);
    let v = policy(&s, &user).await.json();
    assert_eq!(v["configurations"], json!([]));
    assert_eq!(v["policySettings"], json!({}));
}

async fn no_group_means_an_empty_policy_and_app_tokens_are_refused() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    create_assigned(&s, &admin, WINDOWS, 1, r#"{"k":1}"#, G1).await;
    let r = policy(&s, &user_token(&s, G2)).await;
    assert_eq!(r.status, 200);
    let v: Value = r.json();
    assert_eq!(v["configurations"], json!([]));
    assert_eq!(v["userPreferenceSettings"], json!({}));
    let app = s.token_with(TokenRequest {
        roles: Some(READ_ALL.into()),
        ..request("contoso")
    });
    policy(&s, &app).await.assert_error(403, "Forbidden");
    Server::finish(s.client.get(format!("{}{POLICY}", s.base)))
        .await
        .assert_error(401, "InvalidAuthenticationToken");
    // Another tenant's user sees nothing of contoso's policy.
    let other = s.token_with(TokenRequest {
        groups: Some(G1.into()),
        ..request("fabrikam")
    });
    assert_eq!(policy(&s, &other).await.json()["configurations"], json!([]));
}

const G3: &str = "33333333-3333-4333-8333-333333333333";

/// The ids of the configurations a policy response applies, in order.
fn applied(v: &Value) -> Vec<String> {
    v["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// Fetches the policy twice: the second answer comes from the compiled index, so the change
/// that follows must invalidate a warm cache to be seen.
async fn warm(s: &Server, user: &str) -> Value {
    let first = policy(s, user).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = policy(s, user).await;
    assert_eq!(
        second.text, first.text,
        "two fetches without a change differ"
    );
    assert_eq!(second.header("etag"), first.header("etag"));
    second.json()
}

/// Every kind of Graph write is reflected in the very next policy response, each made while
/// the user's policy is cached.
async fn every_graph_change_shows_in_the_next_policy_response() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let user = user_token(&s, &format!("{G1} {G2}"));
    let mut etag = String::new();
    let mut step = async |what: &str, check: &dyn Fn(&Value)| {
        let r = policy(&s, &user).await;
        assert_eq!(r.status, 200, "{what}: {}", r.text);
        check(&r.json());
        let new = r.header("etag").unwrap().to_string();
        assert_ne!(new, etag, "{what}: the ETag did not change");
        etag = new;
        warm(&s, &user).await;
    };
    step("empty tenant", &|v| {
        assert_eq!(applied(v), Vec::<String>::new())
    })
    .await;

    // Create with a deep-inserted assignment.
    let a = id_of(&s.create(&admin, json!({"@odata.type": WINDOWS, "priority": 10, "policyPayload": b64(r#"{"k":"a"}"#), "assignments": [{"target": group_target(G1)}]})).await);
    step("create", &|v| {
        assert_eq!(applied(v), [a.as_str()]);
        assert_eq!(v["policySettings"], json!({"k": "a"}));
    })
    .await;

    // An unassigned configuration changes nothing; assigning it (POST …/assignments) does.
    let b = id_of(&s.create(&admin, json!({"@odata.type": SECURITY, "priority": 20, "policyPayload": b64(r#"{"k":"b","onlyB":1}"#)})).await);
    assert_eq!(warm(&s, &user).await["policySettings"], json!({"k": "a"}));
    let r = s
        .post(
            &format!("{}/assignments", cfg(&b)),
            &admin,
            json!({"target": group_target(G2)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b_assignment = id_of(&r.json());
    step("create assignment", &|v| {
        assert_eq!(applied(v), [a.as_str(), b.as_str()]);
        assert_eq!(v["policySettings"], json!({"k": "a", "onlyB": 1}));
    })
    .await;

    // PATCH of a payload.
    let r = s
        .patch(
            &cfg(&a),
            &admin,
            json!({"policyPayload": b64(r#"{"k":"a2"}"#)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    step("PATCH policyPayload", &|v| {
        assert_eq!(v["policySettings"]["k"], "a2")
    })
    .await;

    // PUT of the raw stream.
    let r = Server::finish(
        s.req(
            reqwest::Method::PUT,
            &format!("{}/userPreferencePayload", cfg(&b)),
            Some(&admin),
        )
        .body(r#"{"pref":true}"#),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    step("PUT userPreferencePayload", &|v| {
        assert_eq!(v["userPreferenceSettings"], json!({"pref": true}));
        assert_eq!(v["sources"]["userPreferenceSettings"]["pref"], b);
    })
    .await;

    // PATCH of a priority, then updatePriorities, each flipping the winner of "k".
    let r = s.patch(&cfg(&a), &admin, json!({"priority": 30})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    step("PATCH priority", &|v| {
        assert_eq!(applied(v), [b.as_str(), a.as_str()]);
        assert_eq!(v["policySettings"]["k"], "b");
    })
    .await;
    let r = s.post(&format!("{CONFIGS}/updatePriorities"), &admin, json!({"officeConfigurationPolicyIds": [a, b], "officeConfigurationPriorities": [5, 6]})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    step("updatePriorities", &|v| {
        assert_eq!(v["policySettings"]["k"], "a2");
        assert_eq!(v["sources"]["policySettings"]["k"], a);
    })
    .await;

    // assign replaces the set: A now targets only G3, which the user is not in.
    let r = s
        .post(
            &format!("{}/assign", cfg(&a)),
            &admin,
            json!({"officeConfigurationAssignments": [{"target": group_target(G3)}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    step("assign", &|v| assert_eq!(applied(v), [b.as_str()])).await;

    // PATCH of an assignment's target moves B out of the user's groups…
    let r = s
        .patch(
            &format!("{}/assignments/{b_assignment}", cfg(&b)),
            &admin,
            json!({"target": group_target(G3)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    step("PATCH assignment", &|v| {
        assert_eq!(applied(v), Vec::<String>::new())
    })
    .await;
    // …and back.
    let r = s
        .patch(
            &format!("{}/assignments/{b_assignment}", cfg(&b)),
            &admin,
            json!({"target": group_target(G1)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    step("PATCH assignment back", &|v| {
        assert_eq!(applied(v), [b.as_str()])
    })
    .await;

    // DELETE of the assignment.
    let r = s
        .delete(&format!("{}/assignments/{b_assignment}", cfg(&b)), &admin)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    step("DELETE assignment", &|v| {
        assert_eq!(applied(v), Vec::<String>::new())
    })
    .await;

    // DELETE of a configuration (assigned again first, so deleting it shows).
    let r = s
        .post(
            &format!("{}/assign", cfg(&a)),
            &admin,
            json!({"officeConfigurationAssignments": [{"target": group_target(G2)}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    step("assign again", &|v| assert_eq!(applied(v), [a.as_str()])).await;
    assert_eq!(s.delete(&cfg(&a), &admin).await.status, 204);
    step("DELETE configuration", &|v| {
        assert_eq!(applied(v), Vec::<String>::new());
        assert_eq!(v["policySettings"], json!({}));
    })
    .await;
}

/// Users with the same groups share one cached document, but each gets their own `userId`,
/// `userPrincipalName` and ETag (and a 304 only for their own ETag).
async fn users_with_the_same_groups_get_their_own_identity_and_etag() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    create_assigned(&s, &admin, WINDOWS, 1, r#"{"k":1}"#, G1).await;
    let token = |oid: &str, upn: &str, groups: &str| {
        s.token_with(TokenRequest {
            user: Some(oid.into()),
            upn: Some(upn.into()),
            scopes: Some("openid".into()),
            groups: Some(groups.into()),
            ..request("contoso")
        })
    };
    let one = token(
        "00000000-0000-4000-8000-000000000001",
        "one@contoso.example",
        G1,
    );
    // Different groups (order, an untargeted group, upper case), the same configurations.
    let two = token(
        "00000000-0000-4000-8000-000000000002",
        "two\"quoted\"@contoso.example",
        &format!("{G2} {}", G1.to_uppercase()),
    );
    let r1 = policy(&s, &one).await;
    let r2 = policy(&s, &two).await;
    let (v1, v2) = (r1.json(), r2.json());
    assert_eq!(v1["policySettings"], json!({"k": 1}));
    assert_eq!(v1["policySettings"], v2["policySettings"]);
    assert_eq!(v1["configurations"], v2["configurations"]);
    assert_eq!(v1["userId"], "00000000-0000-4000-8000-000000000001");
    assert_eq!(v2["userId"], "00000000-0000-4000-8000-000000000002");
    assert_eq!(v2["userPrincipalName"], "two\"quoted\"@contoso.example");
    let (e1, e2) = (r1.header("etag").unwrap(), r2.header("etag").unwrap());
    assert_ne!(e1, e2);
    let conditional = |token: &str, etag: &str| {
        Server::finish(
            s.client
                .get(format!("{}{POLICY}", s.base))
                .bearer_auth(token)
                .header("if-none-match", etag),
        )
    };
    assert_eq!(conditional(&one, e1).await.status, 304);
    assert_eq!(conditional(&two, e2).await.status, 304);
    assert_eq!(conditional(&two, e1).await.status, 200);
}

engine_tests!(
    precedence_targeting_and_update_priorities,
    etag_round_trip_and_changes_invalidate_it,
    no_group_means_an_empty_policy_and_app_tokens_are_refused,
    every_graph_change_shows_in_the_next_policy_response,
    users_with_the_same_groups_get_their_own_identity_and_etag,
);

// ---- two instances on one PostgreSQL: invalidation by LISTEN/NOTIFY ----------------------

/// Two instances on one fresh schema (sharing a data directory for the dev signing key), or
/// `None` (reported) without PostgreSQL.
async fn two_instances() -> Option<(Server, Server, std::sync::Arc<PgSchema>)> {
    if postgres_url().is_none() {
        report_postgres_skipped();
        return None;
    }
    let schema = std::sync::Arc::new(PgSchema::create().await);
    let a = Server::start_on(Some(schema.clone()), None, &[]).await;
    let b = Server::start_on(Some(schema.clone()), Some(&a), &[]).await;
    Some((a, b, schema))
}

/// Fetches on `s` until `ok` holds. NOTIFY is delivered to the other instance's listener
/// asynchronously, just after the writer's commit, so the very next request may race it by a
/// fraction of a millisecond; a stale cache would never pass.
async fn eventually(s: &Server, user: &str, what: &str, ok: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = policy(s, user).await;
        assert_eq!(r.status, 200, "{what}: {}", r.text);
        let v = r.json();
        if ok(&v) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still not visible after 10 s: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_change_through_one_instance_invalidates_the_others_index() {
    let Some((a, b, _schema)) = two_instances().await else {
        return;
    };
    let admin = a.token("contoso");
    let user = user_token(&b, G1);
    let id = create_assigned(&a, &admin, WINDOWS, 1, r#"{"k":0}"#, G1).await;
    for round in 1..=20 {
        // B compiles and caches the current state…
        let before = warm(&b, &user).await;
        assert_eq!(before["policySettings"]["k"], round - 1);
        // …A changes it…
        let r = a
            .patch(
                &cfg(&id),
                &admin,
                json!({"policyPayload": b64(&format!(r#"{{"k":{round}}}"#))}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        // …and B's next answers show it.
        eventually(&b, &user, "PATCH through A", |v| {
            v["policySettings"]["k"] == round
        })
        .await;
    }
    // Assignment changes travel the same way.
    let r = a
        .post(
            &format!("{}/assign", cfg(&id)),
            &admin,
            json!({"officeConfigurationAssignments": [{"target": group_target(G2)}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    eventually(&b, &user, "assign through A", |v| {
        v["configurations"] == json!([])
    })
    .await;
}

/// The backend pids of an instance's change listener (its connection is named after the
/// instance's process id).
async fn listener_pids(admin: &sqlx::PgPool, server: &Server) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
        .bind(format!("cirrus-changes-{}", server.pid()))
        .fetch_all(admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_instance_whose_listener_is_killed_stays_correct() {
    let Some((a, b, schema)) = two_instances().await else {
        return;
    };
    let admin_db = sqlx::PgPool::connect(&schema.admin_url).await.unwrap();
    let admin = a.token("contoso");
    let user = user_token(&b, G1);
    let id = create_assigned(&a, &admin, WINDOWS, 1, r#"{"k":0}"#, G1).await;
    for round in 1..=5 {
        assert_eq!(warm(&b, &user).await["policySettings"]["k"], round - 1);
        // Kill B's listener session (as a failover or a connection reaper would) and wait
        // until it is gone: notifications sent from now until B listens again are lost.
        let pids = listener_pids(&admin_db, &b).await;
        assert_eq!(pids.len(), 1, "B listens on one connection: {pids:?}");
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(pids[0])
            .fetch_one(&admin_db)
            .await
            .unwrap();
        assert!(killed);
        let r = a
            .patch(
                &cfg(&id),
                &admin,
                json!({"policyPayload": b64(&format!(r#"{{"k":{round}}}"#))}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        // B does not serve its cached compile: while not listening it reads the database, and
        // on listening again it drops every cached generation.
        eventually(&b, &user, "change while B's listener was down", |v| {
            v["policySettings"]["k"] == round
        })
        .await;
        // B listens again, on a new connection…
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = listener_pids(&admin_db, &b).await;
            if now.len() == 1 && now[0] != pids[0] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "B never listened again"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // …and is invalidated by notifications again.
    assert_eq!(warm(&b, &user).await["policySettings"]["k"], 5);
    let r = a
        .patch(
            &cfg(&id),
            &admin,
            json!({"policyPayload": b64(r#"{"k":"after"}"#)}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    eventually(&b, &user, "change after reconnecting", |v| {
        v["policySettings"]["k"] == "after"
    })
    .await;
    admin_db.close().await;
}

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

engine_tests!(
    precedence_targeting_and_update_priorities,
    etag_round_trip_and_changes_invalidate_it,
    no_group_means_an_empty_policy_and_app_tokens_are_refused,
);

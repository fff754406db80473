//! Scale-out on PostgreSQL, for real: two `cirrus serve` processes on one database, concurrent
//! writes through both, and a database outage through a TCP proxy the test cuts. These need
//! PostgreSQL and are skipped (visibly) without `CIRRUS_TEST_DATABASE_URL`.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::ChaosProxy;
use common::*;
use serde_json::{Value, json};

/// Two instances on one fresh schema, sharing a data directory for the dev signing key.
async fn two_instances() -> Option<(Server, Server)> {
    if postgres_url().is_none() {
        report_postgres_skipped();
        return None;
    }
    let schema = Arc::new(PgSchema::create().await);
    let a = Server::start_on(Some(schema.clone()), None, &[]).await;
    let b = Server::start_on(Some(schema), Some(&a), &[]).await;
    Some((a, b))
}

/// POSTs a JSON body in its own task; the task yields the status code.
fn spawn_post(
    client: reqwest::Client,
    url: String,
    token: String,
    body: Value,
) -> tokio::task::JoinHandle<u16> {
    tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn priorities(list: &Value) -> Vec<i64> {
    list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_write_through_one_instance_is_visible_through_the_other_at_once() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let t = a.token("contoso");
    for round in 0..5 {
        let created = a.create_windows(&t, &format!("r{round}")).await;
        let id = id_of(&created);
        let seen = b.get(&cfg(&id), &t).await;
        assert_eq!(seen.status, 200, "{}", seen.text);
        assert_eq!(seen.json()["displayName"], format!("r{round}"));

        let r = b
            .patch(&cfg(&id), &t, json!({"displayName": "changed"}))
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert_eq!(a.get(&cfg(&id), &t).await.json()["displayName"], "changed");

        assert_eq!(a.delete(&cfg(&id), &t).await.status, 204);
        b.get(&cfg(&id), &t)
            .await
            .assert_error(404, "ResourceNotFound");
    }
    // The singleton is one per tenant, whichever instance creates it first.
    let sa = a.get("/officeConfiguration", &t).await.json();
    let sb = b.get("/officeConfiguration", &t).await.json();
    assert_eq!(sa["id"], sb["id"]);
}

#[tokio::test]
async fn concurrent_creates_through_two_instances_never_share_a_priority() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let t = a.token("contoso");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (url, client, t) = (
            if i % 2 == 0 {
                a.url(CONFIGS)
            } else {
                b.url(CONFIGS)
            },
            a.client.clone(),
            t.clone(),
        );
        tasks.push(spawn_post(
            client,
            url,
            t,
            json!({"@odata.type": WINDOWS, "displayName": format!("c{i}")}),
        ));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 201);
    }
    let list = a.get(CONFIGS, &t).await.json();
    let p = priorities(&list);
    assert_eq!(p.len(), 40);
    assert_eq!(
        p.iter().collect::<HashSet<_>>().len(),
        40,
        "duplicate priorities: {p:?}"
    );
}

#[tokio::test]
async fn concurrent_update_priorities_through_two_instances_stay_unique() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let t = a.token("contoso");
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(id_of(
            &a.create(&t, json!({"@odata.type": WINDOWS, "priority": i + 1}))
                .await,
        ));
    }
    // Every request is a full permutation of 1..=4 (always valid on its own) or a partial
    // update that collides unless it wins a race; none may ever leave duplicates.
    let perms = [[1, 2, 3, 4], [4, 3, 2, 1], [2, 1, 4, 3], [3, 4, 1, 2]];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let server = if i % 2 == 0 { &a } else { &b };
        let url = server.url(&format!("{CONFIGS}/updatePriorities"));
        let body = if i % 5 == 4 {
            json!({"officeConfigurationPolicyIds": [ids[0]], "officeConfigurationPriorities": [4]})
        } else {
            json!({"officeConfigurationPolicyIds": ids, "officeConfigurationPriorities": perms[i % 4]})
        };
        let (client, t) = (a.client.clone(), t.clone());
        tasks.push(spawn_post(client, url, t, body));
    }
    for task in tasks {
        let status = task.await.unwrap();
        assert!(status == 204 || status == 409, "unexpected status {status}");
    }
    let mut p = priorities(&a.get(CONFIGS, &t).await.json());
    p.sort();
    assert_eq!(
        p,
        vec![1, 2, 3, 4],
        "priorities are no longer a permutation"
    );
}

#[tokio::test]
async fn concurrent_assign_through_two_instances_never_half_applies() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let t = a.token("contoso");
    let id = id_of(&a.create_windows(&t, "target").await);
    // Ten distinct sets of five groups each.
    let sets: Vec<Vec<String>> = (0..10)
        .map(|s| {
            (0..5)
                .map(|g| format!("00000000-0000-4000-8000-{:06}{:06}", s, g))
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let server = if i % 2 == 0 { &a } else { &b };
        let url = server.url(&format!("{}/assign", cfg(&id)));
        let body = json!({"officeConfigurationAssignments": set.iter().map(|g| json!({"target": group_target(g)})).collect::<Vec<_>>()});
        let (client, t) = (a.client.clone(), t.clone());
        tasks.push(spawn_post(client, url, t, body));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let list = b.get(&format!("{}/assignments", cfg(&id)), &t).await.json();
    let groups: Vec<String> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["target"]["groupId"].as_str().unwrap().to_string())
        .collect();
    assert!(
        sets.contains(&groups),
        "the assignment set is a mix of several requests: {groups:?}"
    );
}

#[tokio::test]
async fn a_database_outage_answers_503_and_service_resumes_by_itself() {
    if postgres_url().is_none() {
        report_postgres_skipped();
        return;
    }
    let schema = Arc::new(PgSchema::create().await);
    let proxy = ChaosProxy::start(schema.host_port()).await;
    let url = schema.url_via(Some(&format!("127.0.0.1:{}", proxy.port)));
    let s = Server::start_on(Some(schema.clone()), None, &["--database-url", &url]).await;
    let t = s.token("contoso");
    let id = id_of(&s.create_windows(&t, "survives").await);
    assert_eq!(
        s.client
            .get(format!("{}/readyz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    proxy.down();
    for (method, path, body) in [
        (reqwest::Method::GET, cfg(&id), None),
        (
            reqwest::Method::GET,
            "/officeConfiguration".to_string(),
            None,
        ),
        (
            reqwest::Method::POST,
            CONFIGS.to_string(),
            Some(json!({"@odata.type": WINDOWS})),
        ),
    ] {
        let started = Instant::now();
        let r = s.send(method, &path, Some(&t), body).await;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a request hung for {:?}",
            started.elapsed()
        );
        r.assert_error(503, "ServiceUnavailable");
        assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    }
    let ready = s
        .client
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.get(&cfg(&id), &t).await;
        if r.status == 200 {
            assert_eq!(r.json()["displayName"], "survives");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service did not resume: {} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        s.client
            .get(format!("{}/readyz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Nothing was created while the database was away.
    assert_eq!(
        s.get(CONFIGS, &t).await.json()["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

//! `GET /metrics`: Prometheus text with request counts per endpoint class and the check-in
//! ingestion counters.

#[macro_use]
mod common;

use common::*;
use serde_json::json;

async fn metrics_count_requests_and_checkins() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    s.get("/officeConfiguration", &admin).await;
    s.get("/officeConfiguration/clientConfigurations/nope", &admin)
        .await;
    let r = s
        .client
        .post(format!("{}/cirrus/v1/client/checkins", s.base))
        .bearer_auth(&admin)
        .json(&json!({"deviceName": "PC", "wasSuccessful": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let has = |needle: &str| {
        assert!(
            text.lines().any(|l| l.contains(needle)),
            "{needle} missing in\n{text}"
        )
    };
    has(r#"cirrus_http_requests_total{endpoint="graph",method="GET",status="200"} "#);
    has(r#"cirrus_http_requests_total{endpoint="graph",method="GET",status="404"} "#);
    has(r#"cirrus_http_requests_total{endpoint="client_checkins",method="POST",status="201"} 1"#);
    has("cirrus_checkins_stored_total 1");
    has("cirrus_http_request_duration_seconds");
    // Raw paths never become labels.
    assert!(!text.contains("nope"));
}

engine_tests!(metrics_count_requests_and_checkins);

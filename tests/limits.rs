//! Header limits are ours, not hyper's: many headers, or large ones, get Graph's 431 envelope.

#[macro_use]
mod common;

use common::*;

async fn many_small_headers_are_fine_and_oversized_headers_get_a_graph_431() {
    let s = Server::start().await;
    let t = s.token("contoso");
    // 150 headers (more than hyper's default of 100) but well under 32 KiB: served.
    let mut rb = s.req(reqwest::Method::GET, "/officeConfiguration", Some(&t));
    for i in 0..150 {
        rb = rb.header(format!("x-small-{i}"), "v");
    }
    let r = Server::finish(rb).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // 200 headers of 200 bytes: 40 KB > 32 KiB → 431 in Graph's envelope, with a request-id.
    let mut rb = s.req(reqwest::Method::GET, "/officeConfiguration", Some(&t));
    for i in 0..200 {
        rb = rb.header(format!("x-big-{i}"), "v".repeat(200));
    }
    let r = Server::finish(rb).await;
    let msg = r.assert_error(431, "RequestHeaderFieldsTooLarge");
    assert!(msg.contains("limit"), "{msg}");
}

engine_tests!(many_small_headers_are_fine_and_oversized_headers_get_a_graph_431);

/// `--public-url` puts the configured public base into context URLs, Location and nextLinks,
/// even when the request comes in on another host.
async fn configured_public_url_wins() {
    let s = Server::start_with(&["--public-url", "https://graph.example.com/"]).await;
    let t = s.token("contoso");
    let created = s
        .post(CONFIGS, &t, serde_json::json!({"@odata.type": WINDOWS}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = id_of(&created.json());
    assert_eq!(
        created.header("location"),
        Some(
            format!("https://graph.example.com/beta/officeConfiguration/clientConfigurations/{id}")
                .as_str()
        )
    );
    s.create_windows(&t, "second").await;
    let page = s.get(&format!("{CONFIGS}?$top=1"), &t).await.json();
    assert!(
        page["@odata.context"]
            .as_str()
            .unwrap()
            .starts_with("https://graph.example.com/beta/$metadata#")
    );
    assert!(
        page["@odata.nextLink"].as_str().unwrap().starts_with(
            "https://graph.example.com/beta/officeConfiguration/clientConfigurations?"
        )
    );
}

engine_tests!(configured_public_url_wins);

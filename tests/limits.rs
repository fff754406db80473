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

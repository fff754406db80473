//! The stream properties `policyPayload` / `userPreferencePayload`: inline base64 in the entity,
//! and raw at `…/{id}/policyPayload` (and `/$value`).
#[macro_use]
mod common;

use base64::Engine as _;
use common::*;
use reqwest::Method;
use serde_json::json;

const MISSING: &str = "0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01";

/// JSON whose standard base64 contains both '+' and '/' and needs padding.
const TRICKY: &[u8] = br#"{"k":"~~~???>>>"}"#;

fn std_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn put_raw(s: &Server, t: &str, path: &str, ct: Option<&str>, body: Vec<u8>) -> Res {
    let mut rb = s.req(Method::PUT, path, Some(t)).body(body);
    if let Some(ct) = ct {
        rb = rb.header("content-type", ct);
    }
    Server::finish(rb).await
}

async fn raw_get_and_put_with_and_without_value_segment() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let policy = br#"{"settings":{"autosave":true}}"#;
    let c = s
        .create(
            &t,
            json!({"@odata.type": WINDOWS, "policyPayload": std_b64(policy)}),
        )
        .await;
    let id = id_of(&c);
    for suffix in ["policyPayload", "policyPayload/$value"] {
        let r = s.get(&format!("{}/{suffix}", cfg(&id)), &t).await;
        assert_eq!(r.status, 200, "{suffix}: {}", r.text);
        assert_eq!(r.text.as_bytes(), policy, "{suffix}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    }
    // A null payload reads as 204 No Content.
    for suffix in ["userPreferencePayload", "userPreferencePayload/$value"] {
        let r = s.get(&format!("{}/{suffix}", cfg(&id)), &t).await;
        assert_eq!(r.status, 204, "{suffix}: {}", r.text);
        assert!(r.text.is_empty());
    }

    // PUT at every path variant; each write is read back raw and inline.
    let mut etag = c["@odata.etag"].clone();
    for (n, (suffix, ct)) in [
        ("userPreferencePayload", Some("application/json")),
        (
            "userPreferencePayload/$value",
            Some("application/octet-stream"),
        ),
        ("policyPayload", None),
        ("policyPayload/$value", Some("text/plain")),
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(r#"{{"write":{n},"path":"{suffix}"}}"#).into_bytes();
        let r = put_raw(&s, &t, &format!("{}/{suffix}", cfg(&id)), ct, body.clone()).await;
        assert_eq!(r.status, 204, "{suffix}: {}", r.text);
        let property = suffix.split('/').next().unwrap();
        let raw = s.get(&format!("{}/{property}", cfg(&id)), &t).await;
        assert_eq!(raw.status, 200);
        assert_eq!(raw.text.as_bytes(), body.as_slice());
        let entity = s.get(&cfg(&id), &t).await.json();
        assert_eq!(entity[property], std_b64(&body));
        assert_ne!(entity["@odata.etag"], etag, "a PUT is a write");
        etag = entity["@odata.etag"].clone();
    }
}

async fn put_requires_a_json_object_and_changes_nothing_otherwise() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s
        .create(
            &t,
            json!({"@odata.type": WINDOWS, "policyPayload": b64(r#"{"a":1}"#)}),
        )
        .await;
    let path = format!("{}/policyPayload", cfg(&id_of(&c)));
    let snap = s.snapshot(&t).await;
    for (body, expect) in [
        (b"[1,2,3]".to_vec(), "JSON object"),
        (b"\"text\"".to_vec(), "JSON object"),
        (b"42".to_vec(), "JSON object"),
        (b"not json at all".to_vec(), "not valid JSON"),
        (b"{\"a\":".to_vec(), "not valid JSON"),
        (vec![0xff, 0xfe, 0x00], "UTF-8"),
        (Vec::new(), "JSON"),
    ] {
        let msg = put_raw(
            &s,
            &t,
            &path,
            Some("application/octet-stream"),
            body.clone(),
        )
        .await
        .assert_error(400, "BadRequest");
        assert!(
            msg.contains(expect) && msg.contains("policyPayload"),
            "{body:?}: {msg}"
        );
    }
    put_raw(&s, &t, &path, Some("image/png"), b"{}".to_vec())
        .await
        .assert_error(415, "UnsupportedMediaType");
    assert_eq!(s.snapshot(&t).await, snap);
}

async fn put_honours_if_match_and_unknown_ids() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s.create_windows(&t, "etag").await;
    let path = format!("{}/policyPayload", cfg(&id_of(&c)));
    let stale = c["@odata.etag"].as_str().unwrap().to_string();
    let r = put_raw(&s, &t, &path, None, b"{\"v\":1}".to_vec()).await;
    assert_eq!(r.status, 204);
    let snap = s.snapshot(&t).await;
    Server::finish(
        s.req(Method::PUT, &path, Some(&t))
            .header("if-match", &stale)
            .body("{\"v\":2}"),
    )
    .await
    .assert_error(412, "PreconditionFailed");
    assert_eq!(s.snapshot(&t).await, snap);

    for suffix in ["policyPayload", "userPreferencePayload/$value"] {
        let p = format!("{}/{suffix}", cfg(MISSING));
        s.get(&p, &t).await.assert_error(404, "ResourceNotFound");
        put_raw(&s, &t, &p, None, b"{}".to_vec())
            .await
            .assert_error(404, "ResourceNotFound");
    }
    assert_eq!(s.snapshot(&t).await, snap);
}

async fn inline_base64_accepts_both_alphabets_and_optional_padding() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let standard = std_b64(TRICKY);
    assert!(
        standard.contains('+') && standard.contains('/') && standard.ends_with('='),
        "test data must exercise the alphabet and padding: {standard}"
    );
    let variants = [
        standard.clone(),
        standard.trim_end_matches('=').to_string(),
        base64::engine::general_purpose::URL_SAFE.encode(TRICKY),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(TRICKY),
    ];
    for v in variants {
        let c = s
            .create(
                &t,
                json!({"@odata.type": SECURITY, "policyPayload": v, "userPreferencePayload": v}),
            )
            .await;
        // Output: standard alphabet with padding, whatever the input was.
        assert_eq!(c["policyPayload"], standard, "input {v}");
        assert_eq!(c["userPreferencePayload"], standard, "input {v}");
        let raw = s
            .get(&format!("{}/policyPayload/$value", cfg(&id_of(&c))), &t)
            .await;
        assert_eq!(raw.text.as_bytes(), TRICKY);
        // And through PATCH.
        let r = s
            .patch(&cfg(&id_of(&c)), &t, json!({"userPreferencePayload": v}))
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert_eq!(
            s.get(&cfg(&id_of(&c)), &t).await.json()["userPreferencePayload"],
            standard
        );
    }
}

async fn inline_null_clears_a_payload() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let c = s
        .create(
            &t,
            json!({"@odata.type": WINDOWS, "policyPayload": b64("{}")}),
        )
        .await;
    let r = s
        .patch(&cfg(&id_of(&c)), &t, json!({"policyPayload": null}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        s.get(&cfg(&id_of(&c)), &t).await.json()["policyPayload"],
        serde_json::Value::Null
    );
    let r = s
        .get(&format!("{}/policyPayload", cfg(&id_of(&c))), &t)
        .await;
    assert_eq!(r.status, 204);
}

engine_tests!(
    raw_get_and_put_with_and_without_value_segment,
    put_requires_a_json_object_and_changes_nothing_otherwise,
    put_honours_if_match_and_unknown_ids,
    inline_base64_accepts_both_alphabets_and_optional_padding,
    inline_null_clears_a_payload,
);

//! Every class of bad input gets 400 (or the status DESIGN.md names) with a message that says
//! what is wrong, and leaves the stored data exactly as it was.
#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const G1: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const G2: &str = "aaaaaaaa-0000-4000-8000-000000000002";

struct Fixture {
    s: Server,
    t: String,
    config: String,
    assignment: String,
    snap: Value,
}

impl Fixture {
    /// A tenant with a patched singleton, a configuration with payloads and an assignment.
    async fn new() -> Fixture {
        let s = Server::start().await;
        let t = s.token("contoso");
        let r = s
            .patch(
                "/officeConfiguration",
                &t,
                json!({"tenantUserCheckinSummary": {"succeededUserCount": 4, "failedUserCount": 1}}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let c = s
            .create(
                &t,
                json!({
                    "@odata.type": WINDOWS,
                    "displayName": "fixture",
                    "priority": 7,
                    "policyPayload": b64(r#"{"a":1}"#),
                    "assignments": [{"target": group_target(G1)}],
                }),
            )
            .await;
        let config = id_of(&c);
        let assignment = id_of(&c["assignments"][0]);
        let snap = s.snapshot(&t).await;
        Fixture {
            s,
            t,
            config,
            assignment,
            snap,
        }
    }

    /// Every JSON-body write: (method, path).
    fn json_writes(&self) -> Vec<(Method, String)> {
        let c = cfg(&self.config);
        vec![
            (Method::PATCH, "/officeConfiguration".into()),
            (Method::POST, CONFIGS.into()),
            (Method::PATCH, c.clone()),
            (Method::POST, format!("{c}/assignments")),
            (
                Method::PATCH,
                format!("{c}/assignments/{}", self.assignment),
            ),
            (Method::POST, format!("{c}/assign")),
            (Method::POST, format!("{CONFIGS}/updatePriorities")),
        ]
    }

    async fn raw(&self, method: Method, path: &str, ct: Option<&str>, body: Vec<u8>) -> Res {
        let mut rb = self.s.req(method, path, Some(&self.t)).body(body);
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        Server::finish(rb).await
    }

    /// Sends `body` as JSON to every write endpoint; each must answer `status`/`code` with a
    /// message containing every one of `needles`.
    async fn everywhere(&self, body: &[u8], status: u16, code: &str, needles: &[&str]) {
        for (m, p) in self.json_writes() {
            let msg = self
                .raw(m.clone(), &p, Some("application/json"), body.to_vec())
                .await
                .assert_error(status, code);
            for n in needles {
                assert!(msg.contains(n), "{m} {p}: '{n}' not in: {msg}");
            }
        }
        self.unchanged().await;
    }

    /// One JSON request that must fail with 400 naming `needle`.
    async fn bad(&self, method: Method, path: &str, body: Value, needle: &str) {
        let msg = self
            .raw(
                method.clone(),
                path,
                Some("application/json"),
                body.to_string().into_bytes(),
            )
            .await
            .assert_error(400, "BadRequest");
        assert!(
            msg.contains(needle),
            "{method} {path} {body}: '{needle}' not in: {msg}"
        );
    }

    async fn unchanged(&self) {
        assert_eq!(
            self.s.snapshot(&self.t).await,
            self.snap,
            "stored data changed"
        );
    }
}

async fn malformed_json() {
    let f = Fixture::new().await;
    f.everywhere(
        br#"{"displayName": "x""#,
        400,
        "BadRequest",
        &["not valid JSON"],
    )
    .await;
    f.everywhere(
        b"{'single': 'quotes'}",
        400,
        "BadRequest",
        &["not valid JSON"],
    )
    .await;
    f.everywhere(b"{} trailing", 400, "BadRequest", &["not valid JSON"])
        .await;
    f.everywhere(b"", 400, "BadRequest", &["empty"]).await;
}

async fn non_object_bodies() {
    let f = Fixture::new().await;
    for (body, what) in [
        ("[]", "an array"),
        ("[{}]", "an array"),
        ("\"text\"", "a string"),
        ("42", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ] {
        f.everywhere(body.as_bytes(), 400, "BadRequest", &["JSON object", what])
            .await;
    }
}

async fn wrong_property_types() {
    let f = Fixture::new().await;
    let c = cfg(&f.config);
    for (m, p) in [
        (Method::POST, CONFIGS.to_string()),
        (Method::PATCH, c.clone()),
    ] {
        for (prop, value) in [
            ("displayName", json!(5)),
            ("description", json!(true)),
            ("priority", json!("1")),
            ("priority", json!(1.5)),
            ("priority", json!(null)),
            ("policyPayload", json!(5)),
            ("userPreferencePayload", json!({"a": 1})),
            ("checkinStatuses", json!({})),
            ("userCheckinSummary", json!([])),
            ("id", json!(17)),
        ] {
            let mut body = json!({"@odata.type": WINDOWS});
            body[prop] = value;
            f.bad(m.clone(), &p, body, prop).await;
        }
        f.bad(m.clone(), &p, json!({"@odata.type": 5}), "@odata.type")
            .await;
    }
    let single = "/officeConfiguration";
    f.bad(
        Method::PATCH,
        single,
        json!({"tenantCheckinStatuses": "x"}),
        "tenantCheckinStatuses",
    )
    .await;
    f.bad(
        Method::PATCH,
        single,
        json!({"tenantUserCheckinSummary": {"succeededUserCount": "3"}}),
        "tenantUserCheckinSummary.succeededUserCount",
    )
    .await;
    f.bad(
        Method::PATCH,
        single,
        json!({"tenantUserCheckinSummary": {"failedUserCount": -1}}),
        "failedUserCount",
    )
    .await;
    let status =
        json!({"userId": "u", "wasSuccessful": "yes", "checkinDateTime": "2024-01-01T00:00:00Z"});
    f.bad(
        Method::PATCH,
        single,
        json!({"tenantCheckinStatuses": [status]}),
        "tenantCheckinStatuses[0].wasSuccessful",
    )
    .await;
    let status = json!({"userId": "u", "wasSuccessful": true, "checkinDateTime": "yesterday"});
    f.bad(
        Method::PATCH,
        single,
        json!({"tenantCheckinStatuses": [status]}),
        "checkinDateTime",
    )
    .await;
    let status = json!({"userId": "u", "wasSuccessful": true});
    f.bad(
        Method::PATCH,
        single,
        json!({"tenantCheckinStatuses": [status]}),
        "checkinDateTime",
    )
    .await;
    let a = format!("{c}/assignments");
    f.bad(Method::POST, &a, json!({"target": "group"}), "target")
        .await;
    f.bad(Method::POST, &a, json!({"target": null}), "target")
        .await;
    f.bad(
        Method::POST,
        &a,
        json!({"target": {"groupId": 5}}),
        "target.groupId",
    )
    .await;
    f.bad(
        Method::POST,
        &a,
        json!({"target": {"groupId": "not-a-guid"}}),
        "target.groupId",
    )
    .await;
    f.bad(
        Method::POST,
        &a,
        json!({"target": {"@odata.type": 5, "groupId": G2}}),
        "target.@odata.type",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{c}/assign"),
        json!({"officeConfigurationAssignments": {"target": group_target(G2)}}),
        "officeConfigurationAssignments",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{CONFIGS}/updatePriorities"),
        json!({"officeConfigurationPolicyIds": [5], "officeConfigurationPriorities": [1]}),
        "officeConfigurationPolicyIds[0]",
    )
    .await;
    f.unchanged().await;
}

async fn int32_overflow() {
    let f = Fixture::new().await;
    let c = cfg(&f.config);
    for v in [
        json!(2147483648i64),
        json!(-2147483649i64),
        json!(1e10),
        json!(18446744073709551615u64),
    ] {
        f.bad(
            Method::POST,
            CONFIGS,
            json!({"@odata.type": WINDOWS, "priority": v}),
            "priority",
        )
        .await;
        f.bad(Method::PATCH, &c, json!({"priority": v}), "priority")
            .await;
        f.bad(
            Method::PATCH,
            "/officeConfiguration",
            json!({"tenantUserCheckinSummary": {"succeededUserCount": v}}),
            "succeededUserCount",
        )
        .await;
        f.bad(
            Method::POST,
            &format!("{CONFIGS}/updatePriorities"),
            json!({"officeConfigurationPolicyIds": [f.config], "officeConfigurationPriorities": [v]}),
            "officeConfigurationPriorities[0]",
        )
        .await;
    }
    let msg = f
        .raw(
            Method::PATCH,
            &c,
            Some("application/json"),
            br#"{"priority": 2147483648}"#.to_vec(),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(
        msg.contains("out of range") && msg.contains("Int32"),
        "{msg}"
    );
    // The limits themselves are fine.
    let r = f.s.patch(&c, &f.t, json!({"priority": 2147483647})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(f.s.get(&c, &f.t).await.json()["priority"], 2147483647);
}

async fn unknown_properties() {
    let f = Fixture::new().await;
    let c = cfg(&f.config);
    f.bad(
        Method::POST,
        CONFIGS,
        json!({"@odata.type": WINDOWS, "colour": "red"}),
        "'colour'",
    )
    .await;
    f.bad(
        Method::POST,
        CONFIGS,
        json!({"@odata.type": SECURITY, "colour": "red"}),
        "windowsOfficeClientSecurityConfiguration",
    )
    .await;
    f.bad(
        Method::PATCH,
        &c,
        json!({"colour": "red"}),
        "windowsOfficeClientConfiguration",
    )
    .await;
    // Property names are case-sensitive.
    f.bad(
        Method::PATCH,
        &c,
        json!({"DisplayName": "x"}),
        "'DisplayName'",
    )
    .await;
    f.bad(
        Method::PATCH,
        &c,
        json!({"userCheckinSummary": {"bogus": 1}}),
        "officeUserCheckinSummary",
    )
    .await;
    f.bad(
        Method::PATCH,
        "/officeConfiguration",
        json!({"bogus": 1}),
        "'bogus'",
    )
    .await;
    let status = json!({"userId": "u", "wasSuccessful": true, "checkinDateTime": "2024-01-01T00:00:00Z", "bogus": 1});
    f.bad(
        Method::PATCH,
        "/officeConfiguration",
        json!({"tenantCheckinStatuses": [status]}),
        "officeClientCheckinStatus",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{c}/assignments"),
        json!({"target": group_target(G2), "intent": "apply"}),
        "'intent'",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{c}/assignments"),
        json!({"target": {"groupId": G2, "filterId": "x"}}),
        "'filterId'",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{c}/assign"),
        json!({"officeConfigurationAssignments": [], "extra": 1}),
        "'extra'",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{CONFIGS}/updatePriorities"),
        json!({"officeConfigurationPolicyIds": [], "officeConfigurationPriorities": [], "extra": 1}),
        "'extra'",
    )
    .await;
    f.unchanged().await;
}

async fn unknown_or_abstract_odata_type() {
    let f = Fixture::new().await;
    let c = cfg(&f.config);
    for (t, needle) in [
        ("#microsoft.graph.officeClientConfiguration", "abstract"),
        ("microsoft.graph.officeClientConfiguration", "abstract"),
        ("#microsoft.graph.user", "microsoft.graph.user"),
        ("#contoso.widget", "contoso.widget"),
        ("", "not a known type"),
    ] {
        f.bad(
            Method::POST,
            CONFIGS,
            json!({"@odata.type": t, "displayName": "x"}),
            needle,
        )
        .await;
    }
    // No type at all: the base type is abstract.
    f.bad(
        Method::POST,
        CONFIGS,
        json!({"displayName": "x"}),
        "abstract",
    )
    .await;
    f.bad(
        Method::PATCH,
        &c,
        json!({"@odata.type": "#microsoft.graph.user"}),
        "cannot be changed",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{c}/assignments"),
        json!({"target": {"@odata.type": "#microsoft.graph.officeConfigurationAssignmentTarget", "groupId": G2}}),
        "abstract",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{c}/assignments"),
        json!({"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": G2}}),
        "microsoft.graph.groupAssignmentTarget",
    )
    .await;
    f.bad(
        Method::PATCH,
        "/officeConfiguration",
        json!({"@odata.type": "#microsoft.graph.windowsOfficeClientConfiguration"}),
        "officeConfiguration",
    )
    .await;
    f.unchanged().await;
}

async fn invalid_base64_and_non_object_payloads() {
    use base64::Engine as _;
    let f = Fixture::new().await;
    let c = cfg(&f.config);
    let enc = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for (value, needle) in [
        ("<Unknown Primitive Type Edm.Stream>".to_string(), "base64"),
        ("a".to_string(), "base64"),
        ("abc!def=".to_string(), "base64"),
        (enc(b"[1,2]"), "JSON object"),
        (enc(b"\"str\""), "JSON object"),
        (enc(b"{broken"), "not valid JSON"),
        (enc(&[0xff, 0xfe, 0xfd]), "UTF-8"),
        (String::new(), "JSON"),
    ] {
        for prop in ["policyPayload", "userPreferencePayload"] {
            f.bad(
                Method::POST,
                CONFIGS,
                json!({"@odata.type": WINDOWS, prop: value}),
                needle,
            )
            .await;
            f.bad(Method::PATCH, &c, json!({prop: value}), prop).await;
        }
    }
    f.unchanged().await;
}

async fn missing_target_and_duplicate_groups() {
    let f = Fixture::new().await;
    let c = cfg(&f.config);
    f.bad(
        Method::POST,
        &format!("{c}/assignments"),
        json!({}),
        "target",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{c}/assign"),
        json!({"officeConfigurationAssignments": [{"target": group_target(G2)}, {}]}),
        "officeConfigurationAssignments[1]",
    )
    .await;
    f.bad(
        Method::POST,
        &format!("{c}/assign"),
        json!({"officeConfigurationAssignments": [{"target": group_target(G2)}, {"target": group_target(G2)}]}),
        G2,
    )
    .await;
    f.bad(
        Method::POST,
        CONFIGS,
        json!({"@odata.type": WINDOWS, "assignments": [{"target": group_target(G2)}, {"target": group_target(G2)}]}),
        G2,
    )
    .await;
    f.bad(
        Method::POST,
        CONFIGS,
        json!({"@odata.type": WINDOWS, "assignments": [{}]}),
        "target",
    )
    .await;
    f.unchanged().await;
}

async fn invalid_utf8() {
    let f = Fixture::new().await;
    f.everywhere(
        b"{\"displayName\": \"\xff\xfe\"}",
        400,
        "BadRequest",
        &["UTF-8"],
    )
    .await;
    f.everywhere(b"\xc3\x28", 400, "BadRequest", &["UTF-8"])
        .await;
}

async fn deeply_nested_json_is_refused_without_crashing() {
    let f = Fixture::new().await;
    let deep_array = "[".repeat(100_000) + &"]".repeat(100_000);
    f.everywhere(
        deep_array.as_bytes(),
        400,
        "BadRequest",
        &["nested too deeply"],
    )
    .await;
    let unterminated = "[".repeat(100_000);
    f.everywhere(unterminated.as_bytes(), 400, "BadRequest", &["nested"])
        .await;
    let deep_object = format!(
        "{{\"displayName\": {}1{}}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    f.everywhere(deep_object.as_bytes(), 400, "BadRequest", &["nested"])
        .await;
    // Stream PUTs parse their content too.
    let msg = f
        .raw(
            Method::PUT,
            &format!("{}/policyPayload", cfg(&f.config)),
            Some("application/octet-stream"),
            deep_array.into_bytes(),
        )
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("policyPayload"), "{msg}");
    // The server is still alive and serving.
    let r = f.s.get(&cfg(&f.config), &f.t).await;
    assert_eq!(r.status, 200);
    f.unchanged().await;
}

async fn hostile_ids_are_404() {
    let f = Fixture::new().await;
    let c = cfg(&f.config);
    let bad_ids = [
        "x'y",
        "'",
        "''",
        "%27%20or%201%3D1--",
        "%22quoted%22",
        "%00",
        "abc%00",
        &format!("{}%00", f.config),
        "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "%2E%2E%2F",
        "..%2F",
        "not-a-guid",
    ];
    for id in bad_ids {
        for (m, p) in [
            (Method::GET, cfg(id)),
            (Method::PATCH, cfg(id)),
            (Method::DELETE, cfg(id)),
            (Method::GET, format!("{}/assignments", cfg(id))),
            (Method::POST, format!("{}/assign", cfg(id))),
            (Method::GET, format!("{}/policyPayload", cfg(id))),
            (Method::PUT, format!("{}/policyPayload/$value", cfg(id))),
            (Method::GET, format!("{CONFIGS}('{id}')")),
            (Method::GET, format!("{c}/assignments/{id}")),
            (Method::PATCH, format!("{c}/assignments/{id}")),
            (Method::DELETE, format!("{c}/assignments/{id}")),
            (Method::GET, format!("{c}/assignments('{id}')")),
        ] {
            let body = match m {
                Method::GET | Method::DELETE => None,
                Method::PUT => Some(b"{}".to_vec()),
                _ => Some(json!({"target": group_target(G2)}).to_string().into_bytes()),
            };
            let res = match body {
                Some(b) => f.raw(m.clone(), &p, Some("application/json"), b).await,
                None => Server::finish(f.s.req(m.clone(), &p, Some(&f.t))).await,
            };
            res.assert_error(404, "ResourceNotFound");
        }
    }
    f.unchanged().await;
}

/// Sends raw bytes on a fresh connection (the `body` from a separate task, ignoring write
/// errors: the server may answer and close before it has read everything) and returns the
/// response: status line, headers and body.
async fn raw_http(s: &Server, head: &str, body: Vec<u8>) -> String {
    let addr = s.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk))
            .await
            .expect("server answered in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    writer.abort();
    String::from_utf8_lossy(&buf).into_owned()
}

fn head(f: &Fixture, method: &str, path: &str, extra: &str) -> String {
    let addr = f.s.base.trim_start_matches("http://");
    format!(
        "{method} /beta{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{extra}\r\n",
        f.t
    )
}

/// The Graph error code and message of a raw response, after checking its status.
fn raw_error(answer: &str, status: &str) -> (String, String) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    (
        v["error"]["code"].as_str().unwrap().to_string(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

async fn oversize_body_is_413() {
    let f = Fixture::new().await;
    let big = format!(
        "{{\"displayName\": \"{}\"}}",
        "x".repeat(4 * 1024 * 1024 + 1)
    )
    .into_bytes();
    let c = cfg(&f.config);
    for (m, p, ct) in [
        ("POST", CONFIGS.to_string(), "application/json"),
        ("PATCH", c.clone(), "application/json"),
        ("POST", format!("{c}/assignments"), "application/json"),
        (
            "PATCH",
            "/officeConfiguration".to_string(),
            "application/json",
        ),
        (
            "PUT",
            format!("{c}/policyPayload"),
            "application/octet-stream",
        ),
    ] {
        let h = head(
            &f,
            m,
            &p,
            &format!("Content-Type: {ct}\r\nContent-Length: {}\r\n", big.len()),
        );
        let answer = raw_http(&f.s, &h, big.clone()).await;
        let (code, msg) = raw_error(&answer, "413");
        assert_eq!(code, "RequestEntityTooLarge", "{m} {p}");
        assert!(msg.contains("4194304"), "{m} {p}: {msg}");
    }
    f.unchanged().await;
}

async fn oversize_body_is_refused_before_it_is_read() {
    let f = Fixture::new().await;
    // Announce 64 MiB and send none of it: the answer must not wait for the body.
    let h = head(
        &f,
        "POST",
        CONFIGS,
        "Content-Type: application/json\r\nContent-Length: 67108864\r\n",
    );
    let answer = raw_http(&f.s, &h, Vec::new()).await;
    assert_eq!(raw_error(&answer, "413").0, "RequestEntityTooLarge");

    // Chunked, with no Content-Length: cut off at the limit.
    let h = head(
        &f,
        "POST",
        CONFIGS,
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
    );
    let mut body = Vec::new();
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..5 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_http(&f.s, &h, body).await;
    assert_eq!(raw_error(&answer, "413").0, "RequestEntityTooLarge");
    f.unchanged().await;
}

async fn raw_dot_segments_are_404() {
    // reqwest normalises `..` and `%2E%2E` away, so these go on the wire untouched.
    let f = Fixture::new().await;
    let c = cfg(&f.config);
    for path in [
        format!("{CONFIGS}/.."),
        format!("{CONFIGS}/%2E%2E"),
        format!("{CONFIGS}/%2e%2e/officeConfiguration"),
        format!("{CONFIGS}/../../officeConfiguration"),
        format!("{c}/assignments/.."),
        format!("{c}/assignments/%2E%2E"),
    ] {
        for m in ["GET", "DELETE"] {
            let answer = raw_http(&f.s, &head(&f, m, &path, ""), Vec::new()).await;
            assert_eq!(
                raw_error(&answer, "404").0,
                "ResourceNotFound",
                "{m} {path}"
            );
        }
    }
    f.unchanged().await;
}

async fn wrong_content_type_is_415() {
    let f = Fixture::new().await;
    for ct in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for (m, p) in f.json_writes() {
            let msg = f
                .raw(m.clone(), &p, Some(ct), br#"{"displayName":"x"}"#.to_vec())
                .await
                .assert_error(415, "UnsupportedMediaType");
            assert!(msg.contains("application/json"), "{m} {p}: {msg}");
        }
    }
    // JSON with parameters is JSON.
    let r = f
        .raw(
            Method::PATCH,
            &cfg(&f.config),
            Some("application/json; charset=utf-8"),
            br#"{"displayName":"ok"}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

async fn oversize_headers_are_431() {
    let f = Fixture::new().await;
    let big = "x".repeat(33 * 1024);
    let r = Server::finish(
        f.s.req(Method::GET, &cfg(&f.config), Some(&f.t))
            .header("x-padding", &big),
    )
    .await;
    r.assert_error(431, "RequestHeaderFieldsTooLarge");
    // Many small headers count too.
    let mut rb = f.s.req(Method::PATCH, &cfg(&f.config), Some(&f.t));
    // (fewer than 100 headers: beyond that hyper itself answers 431, without the envelope)
    for i in 0..50 {
        rb = rb.header(format!("x-h{i}"), "y".repeat(700));
    }
    let r = Server::finish(
        rb.header("content-type", "application/json")
            .body(r#"{"displayName":"changed"}"#),
    )
    .await;
    r.assert_error(431, "RequestHeaderFieldsTooLarge");
    // Just under the limit is fine.
    let r = Server::finish(
        f.s.req(Method::GET, &cfg(&f.config), Some(&f.t))
            .header("x-padding", "x".repeat(30 * 1024)),
    )
    .await;
    assert_eq!(r.status, 200);
    f.unchanged().await;
}

engine_tests!(
    malformed_json,
    non_object_bodies,
    wrong_property_types,
    int32_overflow,
    unknown_properties,
    unknown_or_abstract_odata_type,
    invalid_base64_and_non_object_payloads,
    missing_target_and_duplicate_groups,
    invalid_utf8,
    deeply_nested_json_is_refused_without_crashing,
    hostile_ids_are_404,
    oversize_body_is_413,
    oversize_body_is_refused_before_it_is_read,
    raw_dot_segments_are_404,
    wrong_content_type_is_415,
    oversize_headers_are_431,
);

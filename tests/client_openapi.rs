//! The OpenAPI document of the Office client API (`GET /cirrus/v1/openapi.json`): served without
//! a token, listing exactly the client operations, and — the contract — every real response of
//! those operations validates against the schema the document gives for its status, the
//! documented check-in limits are the server's, and the rendered document is pinned by a
//! snapshot (`UPDATE_SNAPSHOTS=1 cargo test --test client_openapi` rewrites it).

#[macro_use]
mod common;

use std::collections::BTreeSet;

use cirrus::auth::dev::TokenRequest;
use common::*;
use serde_json::{Map, Value, json};

const DOC: &str = "/cirrus/v1/openapi.json";
const POLICY: &str = "/cirrus/v1/client/policy";
const CHECKINS: &str = "/cirrus/v1/client/checkins";
const G1: &str = "11111111-1111-4111-8111-111111111111";
const G2: &str = "22222222-2222-4222-8222-222222222222";
const SNAPSHOT: &str = "src/http/client_openapi.snapshot.json";

// ---- a validator for the JSON Schema subset the document uses ---------------------------------

/// Validates instances against the schemas of one OpenAPI 3.x document. It understands the
/// keywords utoipa emits for this API and refuses any other, so a new kind of constraint in the
/// document cannot pass unchecked.
struct Validator<'a> {
    doc: &'a Value,
}

/// Keywords that say nothing about validity.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

impl<'a> Validator<'a> {
    fn new(doc: &'a Value) -> Self {
        Self { doc }
    }

    fn resolve(&self, reference: &str) -> &'a Value {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
        let schema = &self.doc["components"]["schemas"][name];
        assert!(schema.is_object(), "dangling $ref {reference}");
        schema
    }

    /// The errors of `value` against `schema` (empty: valid).
    fn errors(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.check(schema, value, "$", &mut out);
        out
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
        let Some(keywords) = schema.as_object() else {
            match schema {
                Value::Bool(true) => return,
                Value::Bool(false) => {
                    out.push(format!("{at}: no value is allowed here"));
                    return;
                }
                other => panic!("not a schema at {at}: {other}"),
            }
        };
        // OpenAPI 3.0 style `nullable: true`.
        if value.is_null() && keywords.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        for (keyword, arg) in keywords {
            match keyword.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "nullable" => {}
                "$ref" => self.check(
                    self.resolve(arg.as_str().expect("$ref string")),
                    value,
                    at,
                    out,
                ),
                "type" => {
                    let types: Vec<&str> = match arg {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        other => panic!("bad type {other} at {at}"),
                    };
                    if !types.iter().any(|t| has_type(value, t)) {
                        out.push(format!("{at}: {} is not of type {types:?}", short(value)));
                    }
                }
                "enum" => {
                    if !arg.as_array().expect("enum array").contains(value) {
                        out.push(format!("{at}: {} is not one of {arg}", short(value)));
                    }
                }
                "const" => {
                    if arg != value {
                        out.push(format!("{at}: {} is not {arg}", short(value)));
                    }
                }
                "required" => {
                    if let Some(obj) = value.as_object() {
                        for name in arg.as_array().expect("required array") {
                            let name = name.as_str().expect("required name");
                            if !obj.contains_key(name) {
                                out.push(format!(
                                    "{at}: the required property '{name}' is missing"
                                ));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Some(obj) = value.as_object() {
                        let props = arg.as_object().expect("properties object");
                        for (name, v) in obj {
                            if let Some(s) = props.get(name) {
                                self.check(s, v, &format!("{at}.{name}"), out);
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(obj) = value.as_object() {
                        let declared = keywords.get("properties").and_then(Value::as_object);
                        for (name, v) in obj {
                            if declared.is_some_and(|d| d.contains_key(name)) {
                                continue;
                            }
                            match arg {
                                Value::Bool(false) => out.push(format!(
                                    "{at}: the property '{name}' is not in the document"
                                )),
                                s => self.check(s, v, &format!("{at}.{name}"), out),
                            }
                        }
                    }
                }
                "propertyNames" => {
                    if let Some(obj) = value.as_object() {
                        for name in obj.keys() {
                            self.check(arg, &json!(name), &format!("{at} (key '{name}')"), out);
                        }
                    }
                }
                "items" => {
                    if let Some(items) = value.as_array() {
                        for (i, v) in items.iter().enumerate() {
                            self.check(arg, v, &format!("{at}[{i}]"), out);
                        }
                    }
                }
                "oneOf" | "anyOf" | "allOf" => {
                    let results: Vec<Vec<String>> = arg
                        .as_array()
                        .expect("schema list")
                        .iter()
                        .map(|s| self.errors(s, value))
                        .collect();
                    let passing = results.iter().filter(|r| r.is_empty()).count();
                    let ok = match keyword.as_str() {
                        "oneOf" => passing == 1,
                        "anyOf" => passing >= 1,
                        _ => passing == results.len(),
                    };
                    if !ok {
                        out.push(format!(
                            "{at}: {keyword} failed ({passing} of {} match): {results:?}",
                            results.len()
                        ));
                    }
                }
                "maxLength" | "minLength" => {
                    if let Some(s) = value.as_str() {
                        let n = s.chars().count() as u64;
                        let limit = arg.as_u64().expect("length");
                        if (keyword == "maxLength" && n > limit)
                            || (keyword == "minLength" && n < limit)
                        {
                            out.push(format!("{at}: length {n} breaks {keyword} {limit}"));
                        }
                    }
                }
                "maxItems" | "minItems" => {
                    if let Some(items) = value.as_array() {
                        let n = items.len() as u64;
                        let limit = arg.as_u64().expect("count");
                        if (keyword == "maxItems" && n > limit)
                            || (keyword == "minItems" && n < limit)
                        {
                            out.push(format!("{at}: {n} items break {keyword} {limit}"));
                        }
                    }
                }
                "minimum" | "maximum" => {
                    if let (Some(n), Some(limit)) = (value.as_f64(), arg.as_f64())
                        && ((keyword == "minimum" && n < limit)
                            || (keyword == "maximum" && n > limit))
                    {
                        out.push(format!("{at}: {n} breaks {keyword} {limit}"));
                    }
                }
                "format" => self.check_format(arg.as_str().expect("format"), value, at, out),
                other => panic!(
                    "the test validator does not understand the keyword '{other}' (at {at}); \
                     teach it before relying on it"
                ),
            }
        }
    }

    fn check_format(&self, format: &str, value: &Value, at: &str, out: &mut Vec<String>) {
        let ok = match (format, value) {
            ("uuid", Value::String(s)) => s.len() == 36 && uuid::Uuid::parse_str(s).is_ok(),
            ("date-time", Value::String(s)) => {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .is_ok()
            }
            ("int32", Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
            ("int64", Value::Number(n)) => n.as_i64().is_some(),
            ("uuid" | "date-time" | "int32" | "int64", _) => true, // `type` judges other kinds
            (other, _) => panic!("the test validator does not know the format '{other}' ({at})"),
        };
        if !ok {
            out.push(format!("{at}: {} is not a valid {format}", short(value)));
        }
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// The operation object for `method path`.
fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the document");
    op
}

/// Checks one real response against the document: its status is documented for the operation,
/// every documented header is sent, and the body validates against the documented schema (or is
/// empty when the document gives no content). Returns the body.
fn assert_documented(doc: &Value, path: &str, method: &str, res: &Res) -> Value {
    let status = res.status.as_u16().to_string();
    let documented = &operation(doc, path, method)["responses"][&status];
    assert!(
        documented.is_object(),
        "{method} {path} answered {status}, which the document does not list; body: {}",
        res.text
    );
    if let Some(headers) = documented["headers"].as_object() {
        for name in headers.keys() {
            assert!(
                res.header(name).is_some(),
                "{method} {path} {status}: the documented header {name} is missing"
            );
        }
    }
    let Some(content) = documented["content"].as_object() else {
        assert!(
            res.text.is_empty(),
            "{method} {path} {status}: the document gives no body, got {}",
            res.text
        );
        return Value::Null;
    };
    let ct = res.header("content-type").unwrap_or_default();
    let media = ct.split(';').next().unwrap_or_default().trim();
    let schema = &content
        .get(media)
        .unwrap_or_else(|| panic!("{method} {path} {status}: content type {ct} not documented"))["schema"];
    let body = res.json();
    let errors = Validator::new(doc).errors(schema, &body);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the response does not match the document:\n  {}\nbody: {}",
        errors.join("\n  "),
        res.text
    );
    body
}

fn request_schema<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    &operation(doc, path, method)["requestBody"]["content"]["application/json"]["schema"]
}

// ---- fixtures ---------------------------------------------------------------------------------

async fn served_document(s: &Server) -> Value {
    let r = Server::finish(s.client.get(format!("{}{DOC}", s.base))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn user_token(s: &Server, groups: &str) -> String {
    s.token_with(TokenRequest {
        user: Some("00000000-0000-4000-8000-0000000000a7".into()),
        upn: Some("user@contoso.example".into()),
        scopes: Some("openid".into()),
        groups: Some(groups.into()),
        ..request("contoso")
    })
}

fn app_token(s: &Server) -> String {
    s.token_with(TokenRequest {
        roles: Some(READ_ALL.into()),
        ..request("contoso")
    })
}

async fn get_policy(s: &Server, token: Option<&str>, if_none_match: Option<&str>) -> Res {
    let mut rb = s.client.get(format!("{}{POLICY}", s.base));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(e) = if_none_match {
        rb = rb.header("if-none-match", e);
    }
    Server::finish(rb).await
}

async fn post_checkin(s: &Server, token: Option<&str>, content_type: &str, body: String) -> Res {
    let mut rb = s
        .client
        .post(format!("{}{CHECKINS}", s.base))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    Server::finish(rb).await
}

/// A check-in announcing a 64 MiB body and sending none of it, on a raw connection (the server
/// answers 413 before reading a body over its limit, which an HTTP client still sending the body
/// may see as a broken connection).
async fn oversized_checkin(s: &Server, token: &str) -> Res {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {CHECKINS} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 67108864\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the server answered in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(at)) = parsed.parse(&buf) {
            let len = parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0usize);
            if buf.len() >= at + len {
                break;
            }
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(at)) = parsed.parse(&buf) else {
        panic!("no complete response: {}", String::from_utf8_lossy(&buf));
    };
    let mut map = reqwest::header::HeaderMap::new();
    for h in parsed.headers.iter() {
        map.append(
            reqwest::header::HeaderName::from_bytes(h.name.as_bytes()).expect("header name"),
            reqwest::header::HeaderValue::from_bytes(h.value).expect("header value"),
        );
    }
    Res {
        status: reqwest::StatusCode::from_u16(parsed.code.expect("status")).expect("status"),
        headers: map,
        text: String::from_utf8_lossy(&buf[at..]).into_owned(),
    }
}

async fn checkin(s: &Server, token: &str, body: &Value) -> Res {
    post_checkin(s, Some(token), "application/json", body.to_string()).await
}

async fn create_assigned(s: &Server, admin: &str, body: Value, group: &str) -> String {
    let id = id_of(&s.create(admin, body).await);
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

/// A check-in body using every property the request schema declares.
fn full_checkin(applied: &[&str]) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.officeClientCheckinStatus",
        "deviceName": "PC-1",
        "devicePlatform": "Windows",
        "devicePlatformVersion": "10.0.22631",
        "wasSuccessful": false,
        "errorMessage": "policy failed to apply\nline two",
        "appliedPolicies": applied,
        "lastTaskName": "PolicySync",
    })
}

// ---- tests ------------------------------------------------------------------------------------

async fn document_is_served_without_a_token_and_lists_exactly_the_client_operations() {
    let s = Server::start().await;
    let r = Server::finish(s.client.get(format!("{}{DOC}", s.base))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    assert!(r.header("request-id").is_some());
    let doc = r.json();
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "cirrus Office client API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let operations: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [(POLICY, "get"), (CHECKINS, "post")]
        .into_iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    assert_eq!(operations, expected);

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"], &scheme["bearerFormat"]),
        (&json!("http"), &json!("bearer"), &json!("JWT"))
    );
    let statuses = |op: &Value| -> Vec<String> {
        op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .cloned()
            .collect()
    };
    let policy = operation(&doc, POLICY, "get");
    let checkins = operation(&doc, CHECKINS, "post");
    assert_eq!(statuses(policy), ["200", "304", "401", "403", "429", "503"]);
    assert_eq!(
        statuses(checkins),
        ["201", "400", "401", "403", "413", "415", "429", "503"]
    );
    for (op, name) in [(policy, "policy"), (checkins, "checkins")] {
        assert_eq!(op["security"], json!([{"bearer": []}]), "{name}");
        assert!(op["summary"].is_string() && op["description"].is_string());
        for (status, response) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/microsoft.graph.ODataError",
                    "{name} {status}"
                );
            }
        }
    }
    for status in ["200", "304"] {
        assert!(
            policy["responses"][status]["headers"]["ETag"].is_object(),
            "{status}"
        );
    }
    let if_none_match = policy["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "If-None-Match")
        .expect("If-None-Match");
    assert_eq!(
        (&if_none_match["in"], &if_none_match["required"]),
        (&json!("header"), &json!(false))
    );
    assert_eq!(
        request_schema(&doc, CHECKINS, "post")["$ref"],
        "#/components/schemas/ClientCheckin"
    );

    // Every documented operation is routed (401 without a token, not 404/405) ...
    get_policy(&s, None, None)
        .await
        .assert_error(401, "InvalidAuthenticationToken");
    post_checkin(&s, None, "application/json", "{}".into())
        .await
        .assert_error(401, "InvalidAuthenticationToken");
    // ... and another method on a client path is not.
    let r = Server::finish(s.client.get(format!("{}{CHECKINS}", s.base))).await;
    assert_eq!(r.status, 405, "{}", r.text);
}

/// The contract: real responses for every documented outcome we can provoke validate against
/// the served document.
async fn real_responses_validate_against_the_document() {
    let s = Server::start().await;
    let doc = served_document(&s).await;
    let admin = s.token("contoso");
    let a = create_assigned(
        &s,
        &admin,
        json!({"@odata.type": WINDOWS, "displayName": "A", "priority": 1,
               "policyPayload": b64(r#"{"shared":"from-a","n":1,"nested":{"x":[1,2]}}"#),
               "userPreferencePayload": b64(r#"{"theme":"dark"}"#)}),
        G1,
    )
    .await;
    let b = create_assigned(
        &s,
        &admin,
        json!({"@odata.type": SECURITY, "displayName": "B", "priority": 2,
               "policyPayload": b64(r#"{"shared":"from-b","flag":true,"none":null}"#)}),
        G1,
    )
    .await;
    create_assigned(
        &s,
        &admin,
        json!({"@odata.type": WINDOWS, "displayName": "other", "priority": 3,
               "policyPayload": b64(r#"{"other":1}"#)}),
        G2,
    )
    .await;
    let user = user_token(&s, G1);

    // 200: a policy with both configurations, settings of every JSON kind and their sources.
    let r = get_policy(&s, Some(&user), None).await;
    let body = assert_documented(&doc, POLICY, "get", &r);
    assert_eq!(body["configurations"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["sources"]["policySettings"]["flag"], b);
    assert_eq!(body["sources"]["userPreferenceSettings"]["theme"], a);
    // 304 with the ETag.
    let etag = r.header("etag").expect("ETag").to_string();
    let r = get_policy(&s, Some(&user), Some(&etag)).await;
    assert_eq!(r.status, 304);
    assert_documented(&doc, POLICY, "get", &r);
    // An empty policy (no targeted group) is the same shape.
    let r = get_policy(
        &s,
        Some(&user_token(&s, "33333333-3333-4333-8333-333333333333")),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_documented(&doc, POLICY, "get", &r);
    // 401, 403.
    let r = get_policy(&s, None, None).await;
    assert_eq!(r.status, 401);
    assert_documented(&doc, POLICY, "get", &r);
    let r = get_policy(&s, Some(&app_token(&s)), None).await;
    assert_eq!(r.status, 403);
    assert_documented(&doc, POLICY, "get", &r);

    // 201: every request property, validated against the request schema first.
    let v = Validator::new(&doc);
    let body_schema = request_schema(&doc, CHECKINS, "post");
    let unknown = "abcdefab-0000-4000-8000-000000000001";
    let body = full_checkin(&[&a, unknown]);
    assert_eq!(v.errors(body_schema, &body), Vec::<String>::new());
    let r = checkin(&s, &user, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let stored = assert_documented(&doc, CHECKINS, "post", &r);
    assert_eq!(stored["appliedPolicies"], json!([a, unknown]));
    // 201: only the required properties (nulls, no lastTaskName).
    let minimal = json!({"deviceName": "PC-2", "wasSuccessful": true});
    assert_eq!(v.errors(body_schema, &minimal), Vec::<String>::new());
    let r = checkin(&s, &user, &minimal).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let stored = assert_documented(&doc, CHECKINS, "post", &r);
    assert!(stored.get("lastTaskName").is_none());
    // 201 for a user whose token has no upn.
    let no_upn = s.token_with(TokenRequest {
        user: Some("00000000-0000-4000-8000-0000000000b8".into()),
        upn: None,
        groups: Some(G1.into()),
        ..request("contoso")
    });
    let r = checkin(&s, &no_upn, &minimal).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        assert_documented(&doc, CHECKINS, "post", &r)["userPrincipalName"],
        Value::Null
    );

    // 400: a body the document also rejects.
    let bad = json!({"deviceName": "PC-1", "wasSuccessful": true, "colour": "blue"});
    assert!(!v.errors(body_schema, &bad).is_empty());
    let r = checkin(&s, &user, &bad).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_documented(&doc, CHECKINS, "post", &r);
    // 401, 403, 413, 415.
    let r = post_checkin(&s, None, "application/json", minimal.to_string()).await;
    assert_eq!(r.status, 401);
    assert_documented(&doc, CHECKINS, "post", &r);
    let r = checkin(&s, &app_token(&s), &minimal).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_documented(&doc, CHECKINS, "post", &r);
    let r = oversized_checkin(&s, &user).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_documented(&doc, CHECKINS, "post", &r);
    let r = post_checkin(&s, Some(&user), "text/plain", minimal.to_string()).await;
    assert_eq!(r.status, 415, "{}", r.text);
    assert_documented(&doc, CHECKINS, "post", &r);
}

/// The limits and rules the document states for a check-in body are the server's: at each
/// documented limit the server accepts, one past it both the document and the server refuse.
async fn documented_checkin_limits_are_the_servers() {
    let s = Server::start().await;
    let doc = served_document(&s).await;
    let v = Validator::new(&doc);
    let body_schema = request_schema(&doc, CHECKINS, "post");
    let schema = v.resolve(body_schema["$ref"].as_str().expect("$ref"));
    let props = schema["properties"].as_object().expect("properties");
    let user = user_token(&s, G1);
    let base = json!({"deviceName": "PC-1", "wasSuccessful": true});
    let with = |name: &str, value: Value| -> Value {
        let mut b = base.clone();
        b[name] = value;
        b
    };
    let accepted = |body: &Value, what: &str| {
        let errors = v.errors(body_schema, body);
        assert!(
            errors.is_empty(),
            "{what}: the document refuses it: {errors:?}"
        );
    };
    let refused = |body: &Value, what: &str| {
        assert!(
            !v.errors(body_schema, body).is_empty(),
            "{what}: the document accepts it"
        );
    };

    let mut probed = 0;
    for (name, p) in props {
        if let Some(max) = p["maxLength"].as_u64() {
            // Characters, not bytes: a two-byte character at the limit is fine.
            let at = "é".repeat(max as usize);
            let over = "é".repeat(max as usize + 1);
            let body = with(name, json!(at));
            accepted(&body, name);
            let r = checkin(&s, &user, &body).await;
            assert_eq!(r.status, 201, "{name} at maxLength {max}: {}", r.text);
            let body = with(name, json!(over));
            refused(&body, name);
            let msg = checkin(&s, &user, &body)
                .await
                .assert_error(400, "BadRequest");
            assert!(msg.contains(name.as_str()), "{msg}");
            probed += 1;
        }
        if let Some(max) = p["maxItems"].as_u64() {
            let ids: Vec<String> = (0..=max)
                .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
                .collect();
            let body = with(name, json!(ids[..max as usize]));
            accepted(&body, name);
            let r = checkin(&s, &user, &body).await;
            assert_eq!(r.status, 201, "{name} at maxItems {max}: {}", r.text);
            let body = with(name, json!(ids));
            refused(&body, name);
            let msg = checkin(&s, &user, &body)
                .await
                .assert_error(400, "BadRequest");
            assert!(msg.contains(name.as_str()), "{msg}");
            probed += 1;
        }
    }
    // deviceName, devicePlatform, devicePlatformVersion, errorMessage, lastTaskName, appliedPolicies.
    assert_eq!(probed, 6, "limits probed");

    // minLength of deviceName.
    assert_eq!(props["deviceName"]["minLength"], 1);
    let body = with("deviceName", json!(""));
    refused(&body, "empty deviceName");
    checkin(&s, &user, &body)
        .await
        .assert_error(400, "BadRequest");

    // Each required property: without it both refuse.
    let required = schema["required"].as_array().expect("required");
    assert_eq!(required, &[json!("deviceName"), json!("wasSuccessful")]);
    for name in required {
        let name = name.as_str().unwrap();
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(name);
        refused(&body, name);
        let msg = checkin(&s, &user, &body)
            .await
            .assert_error(400, "BadRequest");
        assert!(msg.contains(name), "{msg}");
    }

    // Closed: an undeclared property, or one the service sets, is refused by both.
    assert_eq!(schema["additionalProperties"], false);
    for name in ["colour", "userId", "userPrincipalName", "checkinDateTime"] {
        assert!(!props.contains_key(name), "{name}");
        let body = with(name, json!("x"));
        refused(&body, name);
        let msg = checkin(&s, &user, &body)
            .await
            .assert_error(400, "BadRequest");
        assert!(msg.contains(name), "{msg}");
    }

    // Types and formats: a wrong one is refused by both; null where the document allows it is
    // accepted by both.
    for (name, wrong) in [
        ("wasSuccessful", json!("yes")),
        ("deviceName", json!(null)),
        ("devicePlatform", json!(7)),
        ("appliedPolicies", json!(["not-a-guid"])),
        (
            "appliedPolicies",
            json!("00000000-0000-4000-8000-000000000001"),
        ),
        ("@odata.type", json!("#microsoft.graph.somethingElse")),
    ] {
        let body = with(name, wrong.clone());
        refused(&body, &format!("{name} = {wrong}"));
        checkin(&s, &user, &body)
            .await
            .assert_error(400, "BadRequest");
    }
    for (name, p) in props {
        let nullable = p["type"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("null")));
        if nullable {
            let body = with(name, Value::Null);
            accepted(&body, &format!("{name} = null"));
            let r = checkin(&s, &user, &body).await;
            assert_eq!(r.status, 201, "{name} = null: {}", r.text);
        }
    }
}

/// The validator is not vacuous: drifts of every kind it must catch are caught.
#[test]
fn the_validator_catches_drift() {
    let doc = serde_json::to_value(cirrus::http::client_openapi::document()).unwrap();
    let v = Validator::new(&doc);
    let policy = json!({"$ref": "#/components/schemas/ClientPolicy"});
    let good = json!({
        "configurations": [{"id": "0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01", "@odata.type": WINDOWS, "displayName": null, "priority": 1}],
        "policySettings": {"k": [1, {"x": null}]},
        "userPreferenceSettings": {},
        "sources": {"policySettings": {"k": "0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01"}, "userPreferenceSettings": {}},
        "userId": "u",
        "userPrincipalName": null,
    });
    assert_eq!(v.errors(&policy, &good), Vec::<String>::new());
    let drift = |f: &dyn Fn(&mut Map<String, Value>)| {
        let mut bad = good.clone();
        f(bad.as_object_mut().unwrap());
        bad
    };
    for (what, bad) in [
        (
            "extra property",
            drift(&|m| {
                m.insert("extra".into(), json!(1));
            }),
        ),
        (
            "missing property",
            drift(&|m| {
                m.remove("userId");
            }),
        ),
        (
            "wrong type",
            drift(&|m| {
                m["configurations"][0]["priority"] = json!("1");
            }),
        ),
        (
            "not an int32",
            drift(&|m| {
                m["configurations"][0]["priority"] = json!(1u64 << 40);
            }),
        ),
        (
            "not a uuid",
            drift(&|m| {
                m["sources"]["policySettings"]["k"] = json!("a");
            }),
        ),
        (
            "unknown type",
            drift(&|m| {
                m["configurations"][0]["@odata.type"] = json!("#x");
            }),
        ),
        (
            "nested extra",
            drift(&|m| {
                m["sources"]["other"] = json!({});
            }),
        ),
        (
            "null where not nullable",
            drift(&|m| {
                m["policySettings"] = Value::Null;
            }),
        ),
    ] {
        assert!(!v.errors(&policy, &bad).is_empty(), "{what} went unnoticed");
    }
    let error = json!({"$ref": "#/components/schemas/microsoft.graph.ODataError"});
    let envelope = json!({"error": {"code": "BadRequest", "message": "m", "innerError": {"date": "2026-01-01T00:00:00", "request-id": "r", "client-request-id": "c"}}});
    assert_eq!(v.errors(&error, &envelope), Vec::<String>::new());
    let mut bad = envelope.clone();
    bad["error"].as_object_mut().unwrap().remove("innerError");
    assert!(!v.errors(&error, &bad).is_empty());
    let status = json!({"$ref": "#/components/schemas/microsoft.graph.officeClientCheckinStatus"});
    let stored = json!({"@odata.type": "#microsoft.graph.officeClientCheckinStatus", "userId": "u", "userPrincipalName": null,
        "deviceName": "d", "devicePlatform": null, "devicePlatformVersion": null, "wasSuccessful": true,
        "checkinDateTime": "2026-01-01T00:00:00Z", "errorMessage": null, "appliedPolicies": []});
    assert_eq!(v.errors(&status, &stored), Vec::<String>::new());
    let mut bad = stored.clone();
    bad["checkinDateTime"] = json!("yesterday");
    assert!(!v.errors(&status, &bad).is_empty());
}

/// The served document is pinned, so every change to it shows in review.
#[tokio::test]
async fn client_openapi_matches_snapshot() {
    let s = Server::start().await;
    let doc = served_document(&s).await;
    let mut rendered = serde_json::to_string_pretty(&doc).unwrap();
    rendered.push('\n');
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &rendered).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == rendered,
        "the client OpenAPI document differs from {SNAPSHOT}. If the change is intended, run\n  \
         UPDATE_SNAPSHOTS=1 cargo test --test client_openapi\nand review the diff of {SNAPSHOT}.\n\
         --- rendered ---\n{rendered}"
    );
    // What is served is what the library builds.
    assert_eq!(
        doc,
        serde_json::to_value(cirrus::http::client_openapi::document()).unwrap()
    );
}

engine_tests!(
    document_is_served_without_a_token_and_lists_exactly_the_client_operations,
    real_responses_validate_against_the_document,
    documented_checkin_limits_are_the_servers,
);

//! JSON batching (`POST /beta/$batch`, graph-conventions.md §12).
//!
//! Each sub-request becomes an `http::Request` and is sent, in process, through the same
//! [`Router`] as any other request, with the batch's `Authorization` (and `client-request-id`):
//! routing, authentication, per-operation authorisation, limits and the error envelope are
//! exactly those outside a batch. The router a batch dispatches to is the stack *without* the
//! layer that provides it, so a `$batch` inside a batch finds none and answers 400.
//!
//! Requests run one after another in request order. `dependsOn` may only name earlier
//! requests, so that order honours every dependency (and no cycle can be written); a request
//! whose dependency did not succeed is not run and gets 424.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use super::RequestIds;
use super::body::read_json;
use super::handlers::{Ctx, json_response};
use crate::error::{GraphError, GraphResult};
use crate::odata::JSON_CONTENT_TYPE;

/// Graph's limit on the number of requests in one batch.
pub const MAX_REQUESTS: usize = 20;

/// The router sub-requests are dispatched to; provided to the batch handler as a request
/// extension by [`super::router`].
#[derive(Clone)]
pub struct Dispatcher(pub Router);

/// One validated sub-request.
#[derive(Debug)]
struct SubRequest {
    id: String,
    method: Method,
    /// `/beta/...` with the query, ready for [`http::Uri`].
    uri: http::Uri,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    /// Indices of earlier requests this one depends on.
    depends_on: Vec<usize>,
}

/// Answers a `$batch` request.
pub(super) async fn run(
    ctx: &Ctx<'_>,
    extensions: &http::Extensions,
    body: Body,
) -> GraphResult<Response> {
    let Some(Dispatcher(router)) = extensions.get::<Dispatcher>() else {
        return Err(GraphError::bad_request(
            "A $batch request cannot be nested inside another batch.",
        ));
    };
    let value = read_json(ctx.headers, body, ctx.state.config.max_body_bytes).await?;
    let requests = parse(&value, &ctx.service_root)?;
    let client_request_id = extensions
        .get::<RequestIds>()
        .map(|ids| ids.client_request_id.clone());
    let inherited = inherited_headers(ctx.headers, client_request_id.as_deref());

    let mut statuses: Vec<StatusCode> = Vec::with_capacity(requests.len());
    let mut responses = Vec::with_capacity(requests.len());
    for req in requests {
        let failed = req
            .depends_on
            .iter()
            .copied()
            .find(|&d| !statuses[d].is_success());
        let (status, out) = match failed {
            Some(d) => failed_dependency(
                &req.id,
                &responses_id(&responses, d),
                statuses[d],
                client_request_id.as_deref(),
            ),
            None => execute(router, req.id.clone(), build(req, &inherited)?).await?,
        };
        statuses.push(status);
        responses.push(out);
    }
    Ok(json_response(
        StatusCode::OK,
        json!({ "responses": responses }),
    ))
}

fn responses_id(responses: &[Value], index: usize) -> String {
    responses[index]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Headers every sub-request takes from the batch request, whatever it says itself: the
/// credentials, and what decides the public URL (so context and next links inside the
/// responses point at the normal service root).
fn inherited_headers(outer: &HeaderMap, client_request_id: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in [
        header::AUTHORIZATION,
        header::HOST,
        HeaderName::from_static("x-forwarded-proto"),
        HeaderName::from_static("x-forwarded-host"),
    ] {
        for v in outer.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    if let Some(v) = client_request_id.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert("client-request-id", v);
    }
    h
}

fn build(req: SubRequest, inherited: &HeaderMap) -> GraphResult<Request<Body>> {
    let mut headers = req.headers;
    for name in inherited.keys() {
        // A sub-request may name its own client-request-id; the rest always comes from the batch.
        if name == "client-request-id" && headers.contains_key(name) {
            continue;
        }
        headers.remove(name);
        for v in inherited.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let body = match req.body {
        Some(bytes) => {
            headers.insert(header::CONTENT_LENGTH, bytes.len().into());
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let mut out = Request::builder()
        .method(req.method)
        .uri(req.uri)
        .body(body)
        .map_err(GraphError::internal)?;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Sends one sub-request through the router; returns its status and its batch response entry.
async fn execute(
    router: &Router,
    id: String,
    req: Request<Body>,
) -> GraphResult<(StatusCode, Value)> {
    let Ok(res) = router.clone().oneshot(req).await;
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(GraphError::internal)?;
    let mut out = Map::new();
    out.insert("id".into(), id.into());
    out.insert("status".into(), parts.status.as_u16().into());
    out.insert(
        "headers".into(),
        Value::Object(response_headers(&parts.headers)),
    );
    if parts.status != StatusCode::NO_CONTENT && !bytes.is_empty() {
        out.insert("body".into(), response_body(&parts.headers, &bytes));
    }
    Ok((parts.status, Value::Object(out)))
}

/// The JSON object of a sub-response's headers (framing headers left out).
fn response_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        if *name == header::CONTENT_LENGTH
            || *name == header::TRANSFER_ENCODING
            || *name == header::CONNECTION
        {
            continue;
        }
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            out.insert(display_name(name), values.join(", ").into());
        }
    }
    out
}

/// Header names as Graph spells them in batch responses.
fn display_name(name: &HeaderName) -> String {
    match name.as_str() {
        // Graph sends these in lower case.
        n @ ("request-id" | "client-request-id") => n.to_string(),
        "odata-version" => "OData-Version".into(),
        "odata-entityid" => "OData-EntityId".into(),
        "etag" => "ETag".into(),
        n => n
            .split('-')
            .map(|part| {
                let mut c = part.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaKind {
    Json,
    Text,
    Binary,
}

fn media_kind(headers: &HeaderMap) -> MediaKind {
    let mt = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mt == "application/json" || mt.ends_with("+json") {
        MediaKind::Json
    } else if mt.starts_with("text/") {
        MediaKind::Text
    } else {
        MediaKind::Binary
    }
}

/// A sub-response body as OData JSON batching represents it: JSON as JSON, text as a string,
/// anything else (streams) base64-encoded.
fn response_body(headers: &HeaderMap, bytes: &[u8]) -> Value {
    let kind = media_kind(headers);
    if kind == MediaKind::Json
        && let Ok(v) = serde_json::from_slice::<Value>(bytes)
    {
        return v;
    }
    if kind != MediaKind::Binary
        && let Ok(s) = std::str::from_utf8(bytes)
    {
        return s.into();
    }
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into()
}

/// The 424 entry of a request that was not run because a dependency failed.
fn failed_dependency(
    id: &str,
    dependency: &str,
    dependency_status: StatusCode,
    client_request_id: Option<&str>,
) -> (StatusCode, Value) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = client_request_id.unwrap_or(&request_id).to_string();
    let now = time::OffsetDateTime::now_utc();
    let date = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let status = StatusCode::FAILED_DEPENDENCY;
    let entry = json!({
        "id": id,
        "status": status.as_u16(),
        "headers": {
            "Content-Type": JSON_CONTENT_TYPE,
            "request-id": request_id,
            "client-request-id": client_request_id,
        },
        "body": {
            "error": {
                "code": "FailedDependency",
                "message": format!(
                    "The request was not run because request '{dependency}', which it depends on, failed with status {}.",
                    dependency_status.as_u16()
                ),
                "innerError": {
                    "date": date,
                    "request-id": request_id,
                    "client-request-id": client_request_id,
                }
            }
        }
    });
    (status, entry)
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation: any problem rejects the whole batch with 400.

fn bad(msg: impl Into<String>) -> GraphError {
    GraphError::bad_request(msg)
}

/// A request id for messages (ids are client text: shortened).
fn shown(id: &str) -> String {
    id.chars().take(64).collect()
}

fn parse(value: &Value, service_root: &str) -> GraphResult<Vec<SubRequest>> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad("The batch body must be a JSON object with a 'requests' array."))?;
    let requests = match obj.get("requests") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("The batch property 'requests' must be an array.")),
        None => {
            return Err(bad(
                "The batch body is missing the required property 'requests'.",
            ));
        }
    };
    if requests.is_empty() {
        return Err(bad("The batch contains no requests; send 1 to 20."));
    }
    if requests.len() > MAX_REQUESTS {
        return Err(bad(format!(
            "The batch contains {} requests; the limit is {MAX_REQUESTS}.",
            requests.len()
        )));
    }
    // Lower-cased id → index, of the requests parsed so far.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let all_ids: Vec<Option<String>> = requests
        .iter()
        .map(|r| r.get("id").and_then(Value::as_str).map(str::to_lowercase))
        .collect();
    let mut out = Vec::with_capacity(requests.len());
    for (index, raw) in requests.iter().enumerate() {
        let req = parse_one(index, raw, service_root, &seen, &all_ids)?;
        if let Some(first) = seen.insert(req.id.to_lowercase(), index) {
            return Err(bad(format!(
                "The batch contains more than one request with id '{}' (requests {} and {}; ids are compared case-insensitively).",
                shown(&req.id),
                first + 1,
                index + 1
            )));
        }
        out.push(req);
    }
    Ok(out)
}

fn parse_one(
    index: usize,
    raw: &Value,
    service_root: &str,
    earlier: &HashMap<String, usize>,
    all_ids: &[Option<String>],
) -> GraphResult<SubRequest> {
    let n = index + 1;
    let obj = raw
        .as_object()
        .ok_or_else(|| bad(format!("Batch request {n} is not a JSON object.")))?;
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(bad(format!("Batch request {n} has an empty 'id'."))),
        Some(_) => {
            return Err(bad(format!(
                "The 'id' of batch request {n} must be a string."
            )));
        }
        None => {
            return Err(bad(format!(
                "Batch request {n} is missing the required property 'id'."
            )));
        }
    };
    let who = format!("Batch request '{}'", shown(&id));
    if obj.contains_key("atomicityGroup") {
        return Err(bad(format!(
            "{who} uses 'atomicityGroup', which this server does not support."
        )));
    }

    let method = match obj.get("method") {
        Some(Value::String(s)) => {
            let upper = s.to_ascii_uppercase();
            match upper.as_str() {
                "GET" | "POST" | "PATCH" | "PUT" | "DELETE" => {
                    Method::from_bytes(upper.as_bytes()).map_err(GraphError::internal)?
                }
                _ => {
                    return Err(bad(format!(
                        "{who} has the method '{}'; use GET, POST, PATCH, PUT or DELETE.",
                        s.chars().take(20).collect::<String>()
                    )));
                }
            }
        }
        Some(_) => return Err(bad(format!("The 'method' of {who} must be a string."))),
        None => {
            return Err(bad(format!(
                "{who} is missing the required property 'method'."
            )));
        }
    };

    let uri = match obj.get("url") {
        Some(Value::String(s)) => {
            sub_uri(s, service_root).map_err(|why| bad(format!("The 'url' of {who} {why}")))?
        }
        Some(_) => return Err(bad(format!("The 'url' of {who} must be a string."))),
        None => {
            return Err(bad(format!(
                "{who} is missing the required property 'url'."
            )));
        }
    };

    let mut headers = HeaderMap::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let hn = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    bad(format!(
                        "{who} has a header with the invalid name '{}'.",
                        name.chars().take(64).collect::<String>()
                    ))
                })?;
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    _ => {
                        return Err(bad(format!(
                            "The value of header '{hn}' of {who} must be a string."
                        )));
                    }
                };
                let hv = HeaderValue::from_str(&text).map_err(|_| {
                    bad(format!(
                        "The value of header '{hn}' of {who} is not a valid header value."
                    ))
                })?;
                headers.append(hn, hv);
            }
        }
        Some(_) => {
            return Err(bad(format!(
                "The 'headers' of {who} must be a JSON object."
            )));
        }
    }
    // Framing is ours to decide.
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        headers.remove(name);
    }

    let body = match obj.get("body") {
        None | Some(Value::Null) => None,
        Some(value) => {
            if !headers.contains_key(header::CONTENT_TYPE) {
                return Err(bad(format!(
                    "{who} has a body but no Content-Type header; add one to its 'headers'."
                )));
            }
            Some(
                request_body(value, media_kind(&headers))
                    .map_err(|why| bad(format!("The 'body' of {who} {why}")))?,
            )
        }
    };

    let depends_on = match obj.get("dependsOn") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut deps = Vec::with_capacity(items.len());
            for item in items {
                let Some(dep) = item.as_str() else {
                    return Err(bad(format!(
                        "The 'dependsOn' of {who} must be an array of request ids (strings)."
                    )));
                };
                let key = dep.to_lowercase();
                if key == id.to_lowercase() {
                    return Err(bad(format!("{who} cannot depend on itself.")));
                }
                match earlier.get(&key) {
                    Some(&d) => {
                        if !deps.contains(&d) {
                            deps.push(d);
                        }
                    }
                    None if all_ids.iter().any(|i| i.as_deref() == Some(key.as_str())) => {
                        return Err(bad(format!(
                            "{who} depends on '{}', which comes after it; a request can only depend on requests listed before it.",
                            shown(dep)
                        )));
                    }
                    None => {
                        return Err(bad(format!(
                            "{who} depends on '{}', which is not the id of a request in the batch.",
                            shown(dep)
                        )));
                    }
                }
            }
            deps
        }
        Some(_) => {
            return Err(bad(format!(
                "The 'dependsOn' of {who} must be an array of request ids."
            )));
        }
    };

    Ok(SubRequest {
        id,
        method,
        uri,
        headers,
        body,
        depends_on,
    })
}

/// The bytes of a sub-request body: JSON media types take any JSON value, text types a string,
/// anything else (a stream) a base64 string.
fn request_body(value: &Value, kind: MediaKind) -> Result<Vec<u8>, &'static str> {
    match (kind, value) {
        (MediaKind::Text, Value::String(s)) => Ok(s.as_bytes().to_vec()),
        (MediaKind::Binary, Value::String(s)) => decode_base64(s).ok_or("is not valid base64."),
        _ => serde_json::to_vec(value).map_err(|_| "cannot be serialised."),
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// Turns a batch `url` into the `/beta/...` URI it names. Accepted: relative to the version
/// root (`officeConfiguration`, `/officeConfiguration?$top=5`), with the version
/// (`/beta/officeConfiguration`), or absolute on this service's root. The error completes
/// "The 'url' of … ".
fn sub_uri(url: &str, service_root: &str) -> Result<http::Uri, String> {
    if url.trim().is_empty() {
        return Err("is empty.".into());
    }
    let lower = url.to_ascii_lowercase();
    let relative: &str = if lower.starts_with("http://") || lower.starts_with("https://") {
        let root = service_root.to_ascii_lowercase();
        match lower.strip_prefix(&root) {
            Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => {
                &url[url.len() - rest.len()..]
            }
            _ => {
                return Err(format!(
                    "must be relative to the service root, or an absolute URL under {service_root}/."
                ));
            }
        }
    } else {
        let trimmed = url.strip_prefix('/').unwrap_or(url);
        let first_end = trimmed.find(['/', '?']).unwrap_or(trimmed.len());
        if trimmed[..first_end].eq_ignore_ascii_case("beta") {
            &trimmed[first_end..]
        } else {
            trimmed
        }
    };
    // A fragment never reaches a server.
    let relative = relative.split('#').next().unwrap_or_default();
    let relative = relative.strip_prefix('/').unwrap_or(relative);
    let full = format!("/beta/{relative}");
    let encoded = encode_uri(&full);
    encoded
        .parse::<http::Uri>()
        .map_err(|_| "is not a valid URL.".to_string())
}

/// Percent-encodes what clients commonly leave raw in batch URLs (spaces in `$filter`, quotes,
/// non-ASCII) but a URI cannot hold.
fn encode_uri(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_graphic()
            && !matches!(c, '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}')
        {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "http://localhost:8080/beta";

    fn uri(url: &str) -> String {
        sub_uri(url, ROOT).unwrap().to_string()
    }

    #[test]
    fn url_forms() {
        assert_eq!(uri("officeConfiguration"), "/beta/officeConfiguration");
        assert_eq!(uri("/officeConfiguration"), "/beta/officeConfiguration");
        assert_eq!(
            uri("/beta/officeConfiguration/clientConfigurations?$top=5"),
            "/beta/officeConfiguration/clientConfigurations?$top=5"
        );
        assert_eq!(uri("BETA/officeConfiguration"), "/beta/officeConfiguration");
        assert_eq!(uri("$metadata"), "/beta/$metadata");
        assert_eq!(uri("/$batch"), "/beta/$batch");
        assert_eq!(
            uri("http://LOCALHOST:8080/beta/officeConfiguration?$select=id"),
            "/beta/officeConfiguration?$select=id"
        );
        assert_eq!(
            uri("x?$filter=displayName eq 'a b'"),
            "/beta/x?$filter=displayName%20eq%20'a%20b'"
        );
        assert_eq!(uri("x#frag"), "/beta/x");
        assert!(sub_uri("https://graph.microsoft.com/beta/me", ROOT).is_err());
        assert!(sub_uri("http://localhost:8080/betax", ROOT).is_err());
        assert!(sub_uri("", ROOT).is_err());
    }

    fn ok(body: Value) -> Vec<SubRequest> {
        parse(&body, ROOT).unwrap()
    }

    fn err(body: Value) -> String {
        parse(&body, ROOT).unwrap_err().to_string()
    }

    #[test]
    fn validation() {
        let r = ok(json!({"requests": [
            {"id": "1", "method": "get", "url": "officeConfiguration"},
            {"id": "2", "method": "POST", "url": "x", "headers": {"Content-Type": "application/json"}, "body": {"a": 1}, "dependsOn": ["1"]},
            {"id": "3", "method": "PUT", "url": "x", "headers": {"content-type": "application/octet-stream"}, "body": "aGVsbG8="},
        ]}));
        assert_eq!(r[0].method, Method::GET);
        assert_eq!(r[1].depends_on, vec![0]);
        assert_eq!(r[1].body.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(r[2].body.as_deref(), Some(&b"hello"[..]));

        let one = |extra: Value| {
            let mut r = json!({"id": "a", "method": "GET", "url": "x"});
            r.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            r
        };
        assert!(err(json!({})).contains("'requests'"));
        assert!(err(json!({"requests": []})).contains("no requests"));
        assert!(err(json!({"requests": vec![one(json!({})); 21]})).contains("limit is 20"));
        assert!(
            err(json!({"requests": [one(json!({})), one(json!({"id": "A"}))]}))
                .contains("more than one request with id 'A'")
        );
        assert!(err(json!({"requests": [one(json!({"method": "HEAD"}))]})).contains("HEAD"));
        assert!(err(json!({"requests": [one(json!({"body": {}}))]})).contains("no Content-Type"));
        assert!(err(json!({"requests": [one(json!({"dependsOn": ["z"]}))]})).contains("'z'"));
        assert!(err(json!({"requests": [one(json!({"dependsOn": ["a"]}))]})).contains("itself"));
        assert!(
            err(json!({"requests": [one(json!({"dependsOn": ["b"]})), one(json!({"id": "b"}))]}))
                .contains("comes after it")
        );
        assert!(
            err(json!({"requests": [one(json!({"headers": {"content-type": "application/octet-stream"}, "body": "!!"}))]}))
                .contains("base64")
        );
        assert!(err(json!({"requests": [{"method": "GET", "url": "x"}]})).contains("'id'"));
    }

    #[test]
    fn header_names() {
        assert_eq!(display_name(&header::CONTENT_TYPE), "Content-Type");
        assert_eq!(
            display_name(&HeaderName::from_static("odata-version")),
            "OData-Version"
        );
        assert_eq!(
            display_name(&HeaderName::from_static("request-id")),
            "request-id"
        );
    }
}

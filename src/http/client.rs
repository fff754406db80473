//! The Office client API (not part of Graph), under `/cirrus/v1/client/`. Errors use the same
//! envelope as the Graph side.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use uuid::Uuid;

use super::AppState;
use super::body::read_json;
use super::client_openapi as doc;
use super::handlers::json_bytes_response;
use crate::auth::TokenKind;
use crate::domain::Reporter;
use crate::error::{GraphError, GraphResult};
use crate::model::input::parse_guid;

/// `POST /cirrus/v1/client/checkins`: stores the calling user's report for one device and
/// answers `201` with the status as stored, once it is durable.
#[utoipa::path(
    post,
    path = "/cirrus/v1/client/checkins",
    tag = "client",
    operation_id = "reportClientCheckin",
    summary = doc::CHECKINS_SUMMARY,
    description = doc::CHECKINS_DESCRIPTION,
    security(("bearer" = [])),
    params(("client-request-id" = Option<String>, Header, nullable = false, description = "Echoed in the response (at most 128 visible ASCII characters).")),
    request_body(content = doc::ClientCheckin, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (durably); the status as stored.", body = doc::OfficeClientCheckinStatus),
        (status = 400, description = "The body is not a valid check-in; the message names the property.", body = doc::ODataError),
        (status = 401, description = "No valid bearer token.", body = doc::ODataError, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "An application token, or a token without `oid`.", body = doc::ODataError),
        (status = 413, description = "The body is larger than the service's limit (4 MiB by default).", body = doc::ODataError),
        (status = 415, description = "A Content-Type other than `application/json` (or `+json`).", body = doc::ODataError),
        (status = 429, description = "Too many requests: not sent by this version (the client API is not throttled); honour `Retry-After` if a later one does.", body = doc::ODataError, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "Storage unavailable; nothing was stored. Retry after `Retry-After` seconds.", body = doc::ODataError, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    )
)]
pub async fn checkins(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match checkins_inner(&state, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn checkins_inner(state: &AppState, req: Request) -> GraphResult<Response> {
    let principal = state.auth.authenticate(req.headers()).await?;
    if principal.kind == TokenKind::Application {
        return Err(GraphError::Forbidden(
            "Check-ins are reported per user: call this with a delegated (user) token; application tokens are not supported.".into(),
        ));
    }
    let Some(user_id) = principal.object_id.as_deref() else {
        return Err(GraphError::Forbidden(
            "The token has no 'oid' claim: a check-in needs the user's object id.".into(),
        ));
    };
    let (parts, body) = req.into_parts();
    let value = read_json(&parts.headers, body, state.config.max_body_bytes).await?;
    let input = crate::model::input::client_checkin(&value)?;
    let body = state
        .service
        .record_checkin(
            Reporter {
                tenant: &principal.tenant,
                user_id,
                user_principal_name: principal.user_principal_name.as_deref(),
            },
            input,
        )
        .await?;
    Ok(json_bytes_response(StatusCode::CREATED, body))
}

/// `GET /cirrus/v1/client/policy`: the calling user's effective policy, with an `ETag` (a hash
/// of the document) and `If-None-Match` → 304.
#[utoipa::path(
    get,
    path = "/cirrus/v1/client/policy",
    tag = "client",
    operation_id = "getClientPolicy",
    summary = doc::POLICY_SUMMARY,
    description = doc::POLICY_DESCRIPTION,
    security(("bearer" = [])),
    params(
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "An `ETag` from an earlier response (or `*`); `304` while it still matches."),
        ("client-request-id" = Option<String>, Header, nullable = false, description = "Echoed in the response (at most 128 visible ASCII characters)."),
    ),
    responses(
        (status = 200, description = "The effective policy.", body = doc::ClientPolicy, headers(("ETag" = String, description = "A hash of the document (and tenant)."))),
        (status = 304, description = "Unchanged since the `ETag` sent in `If-None-Match`; no body.", headers(("ETag" = String, description = "The same ETag."))),
        (status = 401, description = "No valid bearer token.", body = doc::ODataError, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "An application token: the policy is per user.", body = doc::ODataError),
        (status = 429, description = "Too many requests: not sent by this version (the client API is not throttled); honour `Retry-After` if a later one does.", body = doc::ODataError, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "Storage unavailable. Retry after `Retry-After` seconds.", body = doc::ODataError, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    )
)]
pub async fn policy(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match policy_inner(&state, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn policy_inner(state: &AppState, req: Request) -> GraphResult<Response> {
    let principal = state.auth.authenticate(req.headers()).await?;
    if principal.kind == TokenKind::Application {
        return Err(GraphError::Forbidden(
            "The client policy is per user: call it with a delegated (user) token; application tokens are not supported.".into(),
        ));
    }
    let groups: Vec<Uuid> = principal
        .groups
        .iter()
        .filter_map(|g| parse_guid(g))
        .collect();
    // Served from the tenant's compiled policy index (src/policy/index.rs).
    let document = state
        .service
        .client_policy(&principal.tenant, &groups)
        .await?;
    let user = document.for_user(
        principal.object_id.as_deref(),
        principal.user_principal_name.as_deref(),
    );
    let etag = &user.etag;
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag.as_str() || t.trim() == "*")
        });
    let mut res = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_text_response(StatusCode::OK, user.body())
    };
    if let Ok(v) = HeaderValue::from_str(etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    Ok(res)
}

/// A JSON response from already-serialised text, with the headers `json_response` sets.
fn json_text_response(status: StatusCode, text: String) -> Response {
    let mut res = (status, text).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::odata::JSON_CONTENT_TYPE),
    );
    h.insert(
        "odata-version",
        HeaderValue::from_static(crate::odata::ODATA_VERSION),
    );
    res
}

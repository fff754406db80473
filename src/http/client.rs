//! The Office client API (not part of Graph), under `/cirrus/v1/client/`. Errors use the same
//! envelope as the Graph side.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use uuid::Uuid;

use super::AppState;
use super::body::read_json;
use super::handlers::json_response;
use crate::auth::TokenKind;
use crate::domain::Reporter;
use crate::error::{GraphError, GraphResult};
use crate::model::input::parse_guid;

/// `POST /cirrus/v1/client/checkins`: stores the calling user's report for one device and
/// answers `201` with the status as stored, once it is durable.
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
    let status = state
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
    Ok(json_response(StatusCode::CREATED, status.to_json()))
}

/// `GET /cirrus/v1/client/policy`: the calling user's effective policy, with an `ETag` (a hash
/// of the document) and `If-None-Match` → 304.
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
    let groups: HashSet<Uuid> = principal
        .groups
        .iter()
        .filter_map(|g| parse_guid(g))
        .collect();
    let svc = &state.service;
    let configurations = svc.configurations(&principal.tenant).await?;
    let ids: Vec<Uuid> = configurations.iter().map(|c| c.id).collect();
    let assignments = svc.assignments_of(&principal.tenant, &ids).await?;
    let policy = crate::policy::effective_policy(&configurations, &assignments, &groups);
    let mut body = policy.to_json();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("userId".into(), principal.object_id.clone().into());
        obj.insert(
            "userPrincipalName".into(),
            principal.user_principal_name.clone().into(),
        );
    }
    let text = body.to_string();
    let etag = format!(
        "\"{:016x}\"",
        crate::odata::paging::fnv1a(&[principal.tenant.as_str(), &text])
    );
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
        });
    let mut res = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_response(StatusCode::OK, body)
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    Ok(res)
}

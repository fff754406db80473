//! The Office client API (not part of Graph), under `/cirrus/v1/client/`. Errors use the same
//! envelope as the Graph side.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use uuid::Uuid;

use super::AppState;
use crate::auth::TokenKind;
use crate::error::{GraphError, GraphResult};
use crate::model::input::parse_guid;

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

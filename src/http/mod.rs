//! The HTTP front end: the axum server, the cross-cutting middleware (request ids, Graph's
//! error envelope, header limits, timeouts, panics) and the single Graph entry point that
//! routes, authenticates, authorises and dispatches (see [`handlers`]).

pub mod batch;
pub mod body;
pub mod client;
pub mod client_openapi;
pub mod handlers;
pub mod metrics;
mod reads;
mod render;
pub mod route;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode};
use serde_json::json;

use crate::auth::dev::DevKey;
use crate::auth::jwt::JwtVerifier;
use crate::auth::{Principal, VerifiedTokens, bearer_token};
use crate::domain::Service;
use crate::error::{ErrorInfo, GraphError, GraphResult};

/// How tokens are verified.
pub enum TokenVerifier {
    /// HS256 with the data directory's secret (`cirrus token`).
    Dev(DevKey),
    /// RS256/ES256 from an identity provider, against its JWKS.
    Jwt(Arc<JwtVerifier>),
}

pub struct Authenticator {
    verifier: TokenVerifier,
    verified: VerifiedTokens,
}

impl Authenticator {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            verifier,
            verified: VerifiedTokens::default(),
        }
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    pub async fn authenticate(&self, headers: &http::HeaderMap) -> GraphResult<Arc<Principal>> {
        let token = bearer_token(headers.get(http::header::AUTHORIZATION))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let generation = match &self.verifier {
            TokenVerifier::Dev(_) => 0,
            TokenVerifier::Jwt(v) => v.generation(),
        };
        if let Some(principal) = self.verified.get(token, now, generation) {
            return Ok(principal);
        }
        let (principal, exp) = match &self.verifier {
            TokenVerifier::Dev(key) => key.verify(token)?,
            TokenVerifier::Jwt(v) => v.verify(token).await?,
        };
        let principal = Arc::new(principal);
        self.verified
            .insert(token, &principal, exp, now, generation);
        Ok(principal)
    }
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest accepted request body (Graph's usual limit is 4 MiB).
    pub max_body_bytes: usize,
    /// Largest accepted total size of request headers.
    pub max_header_bytes: usize,
    /// A request that has not completed in this time is cut off.
    pub request_timeout: Duration,
    /// Public base URL, when the service sits behind a proxy that does not send X-Forwarded-*.
    pub public_url: Option<String>,
    /// Host used in URLs when the request has no usable Host header.
    pub fallback_host: String,
    /// Server-driven page size of collections (a client's `$top` or `odata.maxpagesize` wins).
    pub page_size: u32,
    /// Throttling limits (Intune's published ones by default).
    pub throttle: throttle::ThrottleConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            request_timeout: Duration::from_secs(60),
            public_url: None,
            fallback_host: "localhost".into(),
            page_size: crate::odata::paging::DEFAULT_PAGE_SIZE,
            throttle: throttle::ThrottleConfig::default(),
        }
    }
}

pub struct AppState {
    pub service: Service,
    pub auth: Authenticator,
    pub config: HttpConfig,
    /// Per-instance throttling counters (built from `config.throttle`).
    pub throttle: throttle::Throttle,
    /// Keeps the embedded engine's data directory locked while the server lives.
    pub _data_dir_lock: Option<crate::config::DataDirLock>,
}

/// The ids of one request, for headers and `innerError`.
#[derive(Clone, Debug)]
pub struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
}

pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.config.request_timeout;
    // The client API's routes and its OpenAPI document come from the same annotated handlers.
    let (client_routes, client_doc) = client_openapi::routes();
    let client_doc = Arc::new(client_doc);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .merge(client_routes)
        .route(
            client_openapi::PATH,
            get(move || client_openapi::serve(client_doc.clone())),
        )
        .route("/openapi/graph.json", get(openapi))
        .fallback(handlers::graph)
        .with_state(state.clone())
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(state, graph_envelope))
        .layer(axum::middleware::from_fn(metrics::track));
    // `$batch` sends its sub-requests through the same stack, without this layer (so a batch
    // inside a batch finds no dispatcher and is refused).
    app.clone().layer(axum::Extension(batch::Dispatcher(app)))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.service.store().ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => GraphError::from(e).into_response(),
    }
}

/// The OpenAPI document of the Graph API (no token needed), with the public service root.
async fn openapi(State(state): State<Arc<AppState>>, headers: http::HeaderMap) -> Response {
    let base = crate::odata::public_base(
        &headers,
        state.config.public_url.as_deref(),
        &state.config.fallback_host,
    );
    axum::Json(crate::odata::openapi::document(&format!("{base}/beta"))).into_response()
}

fn valid_client_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

/// Default `error.code` for failures produced outside our handlers (limits, timeouts, panics).
fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 => "BadRequest",
        401 => "InvalidAuthenticationToken",
        403 => "Forbidden",
        404 => "ResourceNotFound",
        408 => "RequestTimeout",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        429 => "TooManyRequests",
        431 => "RequestHeaderFieldsTooLarge",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    }
}

/// Adds `request-id`/`client-request-id` to every response and turns every error response
/// into Graph's envelope — the one place the envelope is written.
async fn graph_envelope(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    // A v4 GUID from the thread-local generator (no system call per request).
    let request_id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string();
    let client_request_id = req
        .headers()
        .get("client-request-id")
        .and_then(valid_client_request_id)
        .unwrap_or_else(|| request_id.clone());
    let ids = RequestIds {
        request_id,
        client_request_id,
    };

    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut res = if header_bytes > state.config.max_header_bytes {
        let mut r = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response();
        r.extensions_mut().insert(ErrorInfo {
            code: "RequestHeaderFieldsTooLarge",
            message: format!(
                "The request headers total {header_bytes} bytes; the limit is {} bytes.",
                state.config.max_header_bytes
            ),
        });
        r
    } else {
        req.extensions_mut().insert(ids.clone());
        next.run(req).await
    };

    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        let info = res
            .extensions_mut()
            .remove::<ErrorInfo>()
            .unwrap_or_else(|| ErrorInfo {
                code: default_code(status),
                message: match status.as_u16() {
                    405 => "Specified HTTP method is not allowed for the request target.".into(),
                    408 => "The request did not complete in time.".into(),
                    _ => status.canonical_reason().unwrap_or("Error").to_string() + ".",
                },
            });
        let date = time::OffsetDateTime::now_utc();
        let body = json!({
            "error": {
                "code": info.code,
                "message": info.message,
                "innerError": {
                    "date": format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", date.year(), u8::from(date.month()), date.day(), date.hour(), date.minute(), date.second()),
                    "request-id": ids.request_id,
                    "client-request-id": ids.client_request_id,
                }
            }
        });
        let (mut parts, _) = res.into_parts();
        parts.headers.remove(http::header::CONTENT_LENGTH);
        parts.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(crate::odata::JSON_CONTENT_TYPE),
        );
        res = Response::from_parts(parts, Body::from(body.to_string()));
    }
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ids.request_id) {
        headers.insert("request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&ids.client_request_id) {
        headers.insert("client-request-id", v);
    }
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    res
}

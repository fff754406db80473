//! One error type for everything a request can run into, and the single place that maps it to
//! Graph's status codes and `error.code` values. The JSON envelope itself (with `innerError` and
//! the request ids) is written by the HTTP layer, which knows the ids (see `http::envelope`).

use axum::response::{IntoResponse, Response};
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{0}")]
    BadRequest(String),
    /// An unknown URL segment: Graph answers 400 with this exact sentence.
    #[error("Resource not found for the segment '{0}'.")]
    UnknownSegment(String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Specified HTTP method is not allowed for the request target.")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("The request body exceeds the maximum allowed size of {0} bytes.")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("The service is temporarily unavailable. Please retry again later.")]
    Unavailable { retry_after_secs: u64 },
    /// Over a throttling limit (graph-conventions.md §11); `message` starts with Graph's
    /// "Please retry again later." and names the limit.
    #[error("{message}")]
    TooManyRequests {
        retry_after_secs: u64,
        message: String,
    },
    /// Anything unexpected: logged in full, answered with a generic message.
    #[error("An internal error occurred.")]
    Internal(#[source] anyhow::Error),
}

pub type GraphResult<T> = Result<T, GraphError>;

impl GraphError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::UnknownSegment(_) => StatusCode::BAD_REQUEST,
            Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error.code` Graph's gateway and Intune use for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::UnknownSegment(_) | Self::MethodNotAllowed { .. } => {
                "BadRequest"
            }
            Self::InvalidToken(_) => "InvalidAuthenticationToken",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound(_) => "ResourceNotFound",
            Self::Conflict(_) => "Conflict",
            Self::PreconditionFailed(_) => "PreconditionFailed",
            Self::PayloadTooLarge(_) => "RequestEntityTooLarge",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::NotImplemented(_) => "NotImplemented",
            Self::Unavailable { .. } => "ServiceUnavailable",
            Self::TooManyRequests { .. } => "TooManyRequests",
            Self::Internal(_) => "InternalServerError",
        }
    }
}

/// What the envelope writer needs; travels in the response extensions.
#[derive(Clone, Debug)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        if let Self::Internal(err) = &self {
            tracing::error!(error = ?err, "internal error");
        }
        let mut res = self.status().into_response();
        let headers = res.headers_mut();
        match &self {
            Self::MethodNotAllowed { allow } => {
                headers.insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            }
            Self::InvalidToken(msg) => {
                let desc = msg.replace(['"', '\\'], "'");
                let value = format!(
                    "Bearer realm=\"cirrus\", error=\"invalid_token\", error_description=\"{desc}\""
                );
                if let Ok(v) = http::HeaderValue::from_str(&value) {
                    headers.insert(http::header::WWW_AUTHENTICATE, v);
                }
            }
            Self::Unavailable { retry_after_secs }
            | Self::TooManyRequests {
                retry_after_secs, ..
            } => {
                headers.insert(http::header::RETRY_AFTER, (*retry_after_secs).into());
            }
            _ => {}
        }
        res.extensions_mut().insert(ErrorInfo {
            code: self.code(),
            message: self.to_string(),
        });
        res
    }
}

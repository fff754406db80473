//! Reading request bodies: size limit (413 before reading it all), media type (415),
//! UTF-8 and JSON (400). serde_json's recursion limit keeps deeply nested input from
//! overflowing the stack.

use axum::body::Body;
use http::HeaderMap;
use serde_json::Value;

use crate::error::{GraphError, GraphResult};

fn media_type(headers: &HeaderMap) -> GraphResult<Option<String>> {
    match headers.get(http::header::CONTENT_TYPE) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                GraphError::bad_request("The Content-Type header is not valid ASCII.")
            })?;
            Ok(Some(
                s.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase(),
            ))
        }
    }
}

pub async fn read_bytes(headers: &HeaderMap, body: Body, limit: usize) -> GraphResult<Vec<u8>> {
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(GraphError::PayloadTooLarge(limit));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            // The only error a fully-arrived body can give here is the length limit.
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(GraphError::PayloadTooLarge(limit))
            } else {
                Err(GraphError::bad_request(format!(
                    "The request body could not be read: {e}."
                )))
            }
        }
    }
}

/// A JSON request body: `application/json` (or no Content-Type), parsed to a value.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> GraphResult<Value> {
    if let Some(mt) = media_type(headers)?
        && mt != "application/json"
        && !mt.ends_with("+json")
    {
        return Err(GraphError::UnsupportedMediaType(format!(
            "The Content-Type '{mt}' is not supported for this request; send 'application/json'."
        )));
    }
    let bytes = read_bytes(headers, body, limit).await?;
    parse_json(&bytes)
}

pub fn parse_json(bytes: &[u8]) -> GraphResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(GraphError::bad_request(
            "The request body is empty; a JSON object is required.",
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        GraphError::bad_request(format!(
            "The request body is not valid UTF-8 (at byte {}).",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str(text).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            GraphError::bad_request("The request body is nested too deeply (more than 128 levels).")
        } else {
            GraphError::bad_request(format!("The request body is not valid JSON: {e}."))
        }
    })
}

/// A raw stream body (`PUT …/policyPayload`): octet-stream, JSON or text are accepted.
pub async fn read_stream(headers: &HeaderMap, body: Body, limit: usize) -> GraphResult<Vec<u8>> {
    if let Some(mt) = media_type(headers)?
        && !matches!(
            mt.as_str(),
            "application/octet-stream" | "application/json" | "text/plain"
        )
    {
        return Err(GraphError::UnsupportedMediaType(format!(
            "The Content-Type '{mt}' is not supported for a stream property; send 'application/octet-stream' or 'application/json'."
        )));
    }
    read_bytes(headers, body, limit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_a_clean_error() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let err = parse_json(deep.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("nested too deeply"), "{err}");
    }

    #[test]
    fn invalid_utf8_and_empty() {
        assert!(
            parse_json(b"{\"a\":\"\xff\"}")
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        assert!(parse_json(b"  ").unwrap_err().to_string().contains("empty"));
        assert!(
            parse_json(b"{")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}

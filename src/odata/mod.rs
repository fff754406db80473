//! OData wire conventions: media types, context URLs, the public service root, query options
//! and `Prefer`/`If-Match` headers.

pub mod csdl;
pub mod edm;
pub mod filter;
pub mod openapi;
pub mod paging;
pub mod query;

use http::HeaderMap;

use crate::domain::IfMatch;
use crate::error::{GraphError, GraphResult};

/// The `Content-Type` Graph sends on OData JSON payloads.
pub const JSON_CONTENT_TYPE: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
pub const ODATA_VERSION: &str = "4.0";

/// The public base URL (scheme://host[:port]) the client used: a configured public URL wins,
/// then `X-Forwarded-Proto`/`X-Forwarded-Host` from a proxy, then `Host`.
pub fn public_base(headers: &HeaderMap, configured: Option<&str>, fallback_host: &str) -> String {
    if let Some(url) = configured {
        return url.trim_end_matches('/').to_string();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or_default().trim().to_string())
            .filter(|v| valid_host(v))
    };
    let proto = header("x-forwarded-proto")
        .filter(|p| p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https"))
        .unwrap_or_else(|| "http".into())
        .to_ascii_lowercase();
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .unwrap_or_else(|| fallback_host.to_string());
    format!("{proto}://{host}")
}

/// A host[:port] we are willing to echo into URLs and headers.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

/// Builders for `@odata.context` values relative to a service root (`{base}/beta`).
pub struct Context<'a> {
    pub service_root: &'a str,
}

impl Context<'_> {
    pub fn url(&self, fragment: &str) -> String {
        format!("{}/$metadata#{fragment}", self.service_root)
    }
}

/// The system query options of one request, with or without `$`, names case-insensitive.
#[derive(Debug, Default, Clone)]
pub struct QueryOptions {
    pub options: Vec<(String, String)>,
}

const SYSTEM_OPTIONS: &[&str] = &[
    "select",
    "expand",
    "filter",
    "orderby",
    "top",
    "skip",
    "count",
    "search",
    "skiptoken",
    "format",
    "apply",
    "compute",
    "index",
    "levels",
    "schemaversion",
    "deltatoken",
    "id",
];

impl QueryOptions {
    pub fn parse(query: Option<&str>) -> GraphResult<Self> {
        let mut options: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let bare = name.strip_prefix('$').unwrap_or(&name).to_ascii_lowercase();
            if !SYSTEM_OPTIONS.contains(&bare.as_str()) {
                if name.starts_with('$') {
                    return Err(GraphError::bad_request(format!(
                        "The query parameter '{name}' is not supported."
                    )));
                }
                // Custom query options are allowed by OData and ignored here.
                continue;
            }
            if options.iter().any(|(n, _)| *n == bare) {
                return Err(GraphError::bad_request(format!(
                    "The query option '${bare}' was specified more than once; it can be specified at most once."
                )));
            }
            options.push((bare, value.into_owned()));
        }
        Ok(Self { options })
    }
}

/// Parses `If-Match` (`*` or a list of entity tags).
pub fn if_match(headers: &HeaderMap) -> GraphResult<Option<IfMatch>> {
    let Some(v) = headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| GraphError::bad_request("The If-Match header is not valid ASCII."))?
        .trim();
    if s == "*" {
        return Ok(Some(IfMatch::Any));
    }
    let tags: Vec<String> = s.split(',').map(|t| t.trim().to_string()).collect();
    for t in &tags {
        let body = t.strip_prefix("W/").unwrap_or(t);
        if body.len() < 2 || !body.starts_with('"') || !body.ends_with('"') {
            return Err(GraphError::bad_request(format!(
                "The If-Match header contains a malformed entity tag '{t}'; expected a quoted tag such as W/\"1\" or *."
            )));
        }
    }
    Ok(Some(IfMatch::Tags(tags)))
}

/// The `return=` preference of a `Prefer` header, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnPreference {
    Minimal,
    Representation,
}

pub fn return_preference(headers: &HeaderMap) -> Option<ReturnPreference> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .find_map(|p| match p.as_str() {
            "return=minimal" => Some(ReturnPreference::Minimal),
            "return=representation" => Some(ReturnPreference::Representation),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_with_and_without_dollar() {
        let q = QueryOptions::parse(Some("top=5&$Filter=a%20eq%201&custom=x")).unwrap();
        assert_eq!(
            q.options,
            vec![
                ("top".into(), "5".into()),
                ("filter".into(), "a eq 1".into())
            ]
        );
        assert!(QueryOptions::parse(Some("$top=1&top=2")).is_err());
        assert!(QueryOptions::parse(Some("$bogus=1")).is_err());
    }

    #[test]
    fn base_url_prefers_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("host", "internal:8080".parse().unwrap());
        assert_eq!(public_base(&h, None, "x"), "http://internal:8080");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "graph.example.com".parse().unwrap());
        assert_eq!(public_base(&h, None, "x"), "https://graph.example.com");
        h.insert("x-forwarded-host", "evil.com/\"><".parse().unwrap());
        assert_eq!(public_base(&h, None, "x"), "https://internal:8080");
    }

    #[test]
    fn if_match_parsing() {
        let mut h = HeaderMap::new();
        h.insert("if-match", "W/\"3\", \"4\"".parse().unwrap());
        assert_eq!(
            if_match(&h).unwrap(),
            Some(IfMatch::Tags(vec!["W/\"3\"".into(), "\"4\"".into()]))
        );
        h.insert("if-match", "3".parse().unwrap());
        assert!(if_match(&h).is_err());
    }
}

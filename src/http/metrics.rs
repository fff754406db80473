//! Prometheus metrics (DESIGN §5): `GET /metrics` in the text exposition format. Requests are
//! counted per endpoint class (never per raw path, so ids cannot blow up the label space),
//! method and status; other modules record their own counters with the `metrics` macros.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls reuse it).
pub fn install() {
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    });
}

/// `GET /metrics`.
pub async fn render() -> Response {
    let body = HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// The label for a request path: a fixed, small set.
fn endpoint(path: &str) -> &'static str {
    // Case-insensitive comparisons in place: no lowercased copy of the path per request.
    let is = |s: &str| path.eq_ignore_ascii_case(s);
    let starts = |prefix: &str| {
        path.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    if is("/cirrus/v1/client/policy") {
        "client_policy"
    } else if is("/cirrus/v1/client/checkins") {
        "client_checkins"
    } else if is("/healthz") || is("/readyz") {
        "health"
    } else if is("/metrics") {
        "metrics"
    } else if starts("/cirrus/") || starts("/openapi/") {
        "docs"
    } else if is("/beta/$batch") {
        "graph_batch"
    } else if is("/beta/$metadata") || is("/beta") || is("/beta/") {
        "graph_metadata"
    } else if starts("/beta/") {
        "graph"
    } else {
        "other"
    }
}

/// Static label values for the usual methods and statuses: no allocation per request.
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_label(s: http::StatusCode) -> metrics::SharedString {
    const KNOWN: [(u16, &str); 22] = [
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (406, "406"),
        (408, "408"),
        (409, "409"),
        (412, "412"),
        (413, "413"),
        (415, "415"),
        (424, "424"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (501, "501"),
        (503, "503"),
    ];
    match KNOWN.iter().find(|(code, _)| *code == s.as_u16()) {
        Some((_, label)) => metrics::SharedString::const_str(label),
        None => metrics::SharedString::from(s.as_u16().to_string()),
    }
}

/// Counts every request and its latency.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = endpoint(req.uri().path());
    let method = method_label(req.method());
    let res = next.run(req).await;
    let status = res.status();
    let elapsed = started.elapsed().as_secs_f64();
    HANDLES.with_borrow_mut(|handles| {
        handles
            .requests
            .entry((endpoint, method, status.as_u16()))
            .or_insert_with(|| {
                metrics::counter!("cirrus_http_requests_total", "endpoint" => endpoint, "method" => method, "status" => status_label(status))
            })
            .increment(1);
        handles
            .durations
            .entry(endpoint)
            .or_insert_with(|| {
                metrics::histogram!("cirrus_http_request_duration_seconds", "endpoint" => endpoint)
            })
            .record(elapsed);
    });
    res
}

/// The metric handles of each label set, per thread: looking a labelled metric up in the
/// registry hashes its whole key, on every request otherwise. The label sets are a closed set
/// (endpoint classes, methods, status codes), so the maps stay small.
#[derive(Default)]
struct Handles {
    requests: HashMap<(&'static str, &'static str, u16), metrics::Counter>,
    durations: HashMap<&'static str, metrics::Histogram>,
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_labels_are_the_code() {
        for code in [200u16, 204, 404, 418, 503] {
            let s = http::StatusCode::from_u16(code).unwrap();
            assert_eq!(super::status_label(s).as_ref(), code.to_string());
        }
    }

    #[test]
    fn endpoint_labels_are_a_closed_set() {
        assert_eq!(
            super::endpoint("/beta/officeConfiguration/clientConfigurations/abc"),
            "graph"
        );
        assert_eq!(super::endpoint("/beta/$batch"), "graph_batch");
        assert_eq!(
            super::endpoint("/cirrus/v1/client/checkins"),
            "client_checkins"
        );
        assert_eq!(super::endpoint("/cirrus/v1/openapi.json"), "docs");
        assert_eq!(super::endpoint("/x/y"), "other");
        assert_eq!(super::endpoint("/BETA/officeConfiguration"), "graph");
        assert_eq!(super::endpoint("/Beta/$Batch"), "graph_batch");
        assert_eq!(super::endpoint("/Cirrus/v1/Client/Policy"), "client_policy");
        assert_eq!(super::endpoint("/beta"), "graph_metadata");
        assert_eq!(super::endpoint("/beta\u{e9}x"), "other");
    }
}

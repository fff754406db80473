//! HTTP throughput/latency benchmark, in five sections, in one run:
//!
//! 1. `sqlite` — cirrus (release build, SQLite engine) against a bare axum handler that returns
//!    a fixed document of the same size, on the same workloads.
//! 2. `postgres` — the same workloads on cirrus with `--database-url`, first on one instance,
//!    then on two instances on the same database with the connections split evenly between
//!    them; reports the two-instances / one-instance throughput ratio per workload.
//! 3. `odata` — OData queries in a tenant of 10,000 configurations (SQLite): a filtered,
//!    sorted, counted page, and page 1 against page 90 of a full scan.
//! 4. `policy` — the Office client's `GET /cirrus/v1/client/policy` (issue 6) in a tenant of
//!    500 configurations (a third of them security configurations, each with a `policyPayload`
//!    of 10–20 keys out of 80 shared names and a `userPreferencePayload`) and 5,000 assignments
//!    (10 group targets per configuration out of 300 groups), seeded through the Graph API 16
//!    requests at a time, for a user in 50 of those groups: the full `200` and the `304`
//!    (`If-None-Match`) against the bare handler serving the same document, ETag and 304;
//!    target: the full fetch at ≥ 50 % of the bare handler. On SQLite, then on PostgreSQL.
//! 5. `checkins` — durable check-in ingestion (issue 6): `CIRRUS_BENCH_CHECKIN_CLIENTS`
//!    keep-alive clients, each with its own user token, `POST /cirrus/v1/client/checkins` back
//!    to back (by default every check-in for a new device of its user, naming 3 of 12
//!    configurations as applied); only `201`s count. The baseline is the single-row commit rate
//!    of the same database on the same machine, measured right before and right after: for
//!    SQLite a fresh file in a temporary directory with cirrus's settings (WAL,
//!    `synchronous=FULL`), for PostgreSQL a fresh table in the bench schema, one connection, one
//!    INSERT per transaction. Prints acknowledged check-ins/s, commits/s and their ratio
//!    (target ≥ 5×), then the check-in rows in the database against the acknowledgements (each
//!    acknowledged check-in must be stored) and the Graph `tenantUserCheckinSummary`. Then the
//!    same clients and requests against a bare axum handler that reads each check-in and
//!    answers cirrus's `201` body, storing nothing: the rate the machine's HTTP path allows
//!    (its ratio to the commit rate is the most any check-in service could reach here), the
//!    CPU per request of each, and cirrus as a share of the bare handler. On SQLite, then on
//!    PostgreSQL.
//!
//! The PostgreSQL parts are skipped, with the reason printed, when PostgreSQL is unreachable or
//! `CIRRUS_BENCH_DATABASE_URL=off`.
//!
//! Run it with `cargo bench --bench http` (about 3–4 minutes on a 2-core machine). Knobs
//! (environment variables):
//! - `CIRRUS_BENCH_SECTIONS` — which sections to run, comma-separated names from the list above
//!   (default `all`), e.g. `CIRRUS_BENCH_SECTIONS=policy,checkins`;
//! - `CIRRUS_BENCH_SECS` — measured seconds per workload and target (default 5);
//! - `CIRRUS_BENCH_WARMUP_SECS` — warm-up seconds before each measurement (default 1);
//! - `CIRRUS_BENCH_CONCURRENCY` — concurrent keep-alive connections (default 32; split
//!   round-robin across the instances in the two-instance runs); not used by `checkins`;
//! - `CIRRUS_BENCH_CLIENT_THREADS` — load-generator worker threads (default 1);
//! - `CIRRUS_BENCH_DATABASE_URL` — the PostgreSQL server (default
//!   `postgres://postgres@127.0.0.1:5432/test`; `off` skips the PostgreSQL parts);
//! - `CIRRUS_BENCH_QUERY_ITEMS` — configurations in the `odata` tenant (default 10,000);
//! - `CIRRUS_BENCH_CHECKIN_CLIENTS` — concurrent check-in clients (default 64);
//! - `CIRRUS_BENCH_CHECKIN_DEVICES` — devices per check-in client, reported in turn so that
//!   check-ins update stored rows (default 0: a new device for every check-in);
//! - `CIRRUS_BENCH_CIRRUS` — the cirrus binary to run (default: the one this build made), e.g.
//!   to compare two builds back to back.
//!
//! All servers run as separate processes on loopback: cirrus is the real `cirrus serve` binary
//! on a fresh data directory (with `--throttle off`); the bare server is this binary re-executed
//! with `CIRRUS_BENCH_BARE=<dir>`, serving the response bodies cirrus actually returned (fetched
//! first), with the same content type. On PostgreSQL each part creates a fresh schema
//! (`cirrus_bench_<random>`), passes it to cirrus through `options[search_path]` (cirrus applies
//! the migrations on start) and drops it at the end, also on panic or Ctrl-C; in section 2 the
//! second instance shares the first one's data directory, which in PostgreSQL mode holds only
//! the dev signing key, so one token is valid on both. The load generator is a minimal HTTP/1.1
//! client (one request in flight per connection, no pipelining) so that as little CPU as
//! possible is taken from the servers on a small machine.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse as _;
use axum::routing::get;
use base64::Engine as _;
use cirrus::auth::dev::{DevKey, TokenRequest, claims_for};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Set (to a directory holding the documents to serve) in the bare server's environment.
const BARE_ENV: &str = "CIRRUS_BENCH_BARE";
const SINGLETON_PATH: &str = "/beta/officeConfiguration";
const CONFIGS_PATH: &str = "/beta/officeConfiguration/clientConfigurations";
const POLICY_PATH: &str = "/cirrus/v1/client/policy";
const CHECKINS_PATH: &str = "/cirrus/v1/client/checkins";
/// How long a workload may overrun its measurement window before it is cut off.
const GRACE: Duration = Duration::from_secs(10);
/// How long a server may take to come up.
const STARTUP: Duration = Duration::from_secs(30);

fn main() {
    if let Ok(dir) = std::env::var(BARE_ENV) {
        bare_server(Path::new(&dir));
        return;
    }
    let cfg = Config::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.client_threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        // On Ctrl-C or SIGTERM, drop the run (and so its child-process guards) instead of dying
        // with the children still running.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            () = run(cfg) => {}
            _ = tokio::signal::ctrl_c() => eprintln!("interrupted; stopping the servers"),
            _ = term.recv() => eprintln!("terminated; stopping the servers"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
    secs: f64,
    warmup_secs: f64,
    concurrency: usize,
    client_threads: usize,
    /// The sections to run (`CIRRUS_BENCH_SECTIONS`), in [`SECTIONS`]' order.
    sections: Vec<&'static str>,
    /// Concurrent check-in clients (`CIRRUS_BENCH_CHECKIN_CLIENTS`).
    checkin_clients: usize,
    /// Devices per check-in client, reported in turn (`CIRRUS_BENCH_CHECKIN_DEVICES`); 0: a new
    /// device for every check-in.
    checkin_devices: u64,
}

/// Every section, in the order a run goes through them.
const SECTIONS: [&str; 5] = ["sqlite", "postgres", "odata", "policy", "checkins"];

/// Parses `CIRRUS_BENCH_SECTIONS`: a comma- or space-separated list of [`SECTIONS`] names, or
/// `all` (the default).
fn parse_sections(v: Option<&str>) -> Vec<&'static str> {
    let v = v.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("all");
    let wanted: Vec<&str> = v
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for w in &wanted {
        assert!(
            *w == "all" || SECTIONS.contains(w),
            "CIRRUS_BENCH_SECTIONS: unknown section {w:?} (known: all, {})",
            SECTIONS.join(", ")
        );
    }
    SECTIONS
        .into_iter()
        .filter(|s| wanted.iter().any(|w| *w == "all" || w == s))
        .collect()
}

impl Config {
    fn from_env() -> Config {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
                Err(_) => default,
            }
        }
        let cfg = Config {
            secs: var("CIRRUS_BENCH_SECS", 5.0),
            warmup_secs: var("CIRRUS_BENCH_WARMUP_SECS", 1.0),
            concurrency: var("CIRRUS_BENCH_CONCURRENCY", 32),
            client_threads: var("CIRRUS_BENCH_CLIENT_THREADS", 1),
            sections: parse_sections(std::env::var("CIRRUS_BENCH_SECTIONS").ok().as_deref()),
            checkin_clients: var("CIRRUS_BENCH_CHECKIN_CLIENTS", 64),
            checkin_devices: var("CIRRUS_BENCH_CHECKIN_DEVICES", 0),
        };
        assert!(cfg.secs > 0.0, "CIRRUS_BENCH_SECS must be positive");
        assert!(
            cfg.warmup_secs >= 0.0,
            "CIRRUS_BENCH_WARMUP_SECS must not be negative"
        );
        assert!(
            cfg.concurrency > 0,
            "CIRRUS_BENCH_CONCURRENCY must be positive"
        );
        assert!(
            cfg.client_threads > 0,
            "CIRRUS_BENCH_CLIENT_THREADS must be positive"
        );
        assert!(
            cfg.checkin_clients > 0,
            "CIRRUS_BENCH_CHECKIN_CLIENTS must be positive"
        );
        cfg
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Kills and reaps the child when dropped (normal exit and panics alike).
struct ChildGuard {
    child: Child,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's first stdout line (with a deadline), then keeps draining its stdout in the
/// background so that later prints never hit a closed pipe.
fn first_stdout_line(guard: &mut ChildGuard, what: &str) -> String {
    let stdout = guard.child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let res = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(res);
        let _ = io::copy(&mut reader, &mut io::sink());
    });
    match rx.recv_timeout(STARTUP) {
        Ok(Ok(line)) if !line.is_empty() => line,
        Ok(Ok(_)) => panic!("{what} exited before printing its address"),
        Ok(Err(e)) => panic!("reading {what}'s stdout: {e}"),
        Err(_) => panic!("{what} printed nothing within {STARTUP:?}"),
    }
}

fn parse_addr(line: &str, what: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| {
            let w = w.strip_prefix("http://").unwrap_or(w);
            let w = w.split('/').next().unwrap_or(w);
            w.parse::<SocketAddr>().ok()
        })
        .unwrap_or_else(|| panic!("no address in {what}'s start-up line: {line:?}"))
}

/// Starts `cirrus serve` on an ephemeral loopback port: on SQLite in `data_dir`, or on
/// PostgreSQL at `database_url` (then `data_dir` holds only the dev signing key).
fn start_cirrus(data_dir: &Path, database_url: Option<&str>) -> (ChildGuard, SocketAddr) {
    // `CIRRUS_BENCH_CIRRUS` runs another build (e.g. to compare two versions back to back).
    let exe = std::env::var_os("CIRRUS_BENCH_CIRRUS")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_cirrus").into());
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        // The load would otherwise be throttled (Intune's limits are the default).
        .arg("--throttle")
        .arg("off")
        // The engine is chosen here, not by whatever the caller's environment says.
        .env_remove("CIRRUS_DATABASE_URL")
        .env_remove("CIRRUS_SKIP_MIGRATIONS");
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cirrus");
    let mut guard = ChildGuard { child };
    // "cirrus listening on http://127.0.0.1:PORT/beta (data in ...)"
    let line = first_stdout_line(&mut guard, "cirrus");
    let addr = parse_addr(&line, "cirrus");
    (guard, addr)
}

/// Waits until `GET /healthz` answers 200.
async fn wait_healthy(addr: SocketAddr, what: &str) {
    let ready_by = Instant::now() + STARTUP;
    loop {
        let probe = once(addr, b"GET /healthz HTTP/1.1\r\nHost: cirrus\r\n\r\n").await;
        if matches!(probe, Ok((200, _, _))) {
            return;
        }
        assert!(
            Instant::now() < ready_by,
            "{what} did not become healthy: {probe:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_bare(doc_dir: &Path) -> (ChildGuard, SocketAddr) {
    let exe = std::env::current_exe().expect("current_exe");
    let child = Command::new(exe)
        .env(BARE_ENV, doc_dir)
        // The bare server exits when this pipe closes, i.e. when we die, however we die.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn bare server");
    let mut guard = ChildGuard { child };
    let line = first_stdout_line(&mut guard, "bare server");
    let addr = parse_addr(&line, "bare server");
    (guard, addr)
}

// ---------------------------------------------------------------------------------------------
// The bare server (runs in the re-executed child)

fn bare_server(dir: &Path) {
    // Watchdog: the parent holds our stdin; EOF means it is gone.
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
    // A document is served only if its files are there: `<name>.body` and
    // `<name>.content-type` (plus `<name>.etag` for the policy document).
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    let doc = |name: &str| -> Option<(Bytes, HeaderValue)> {
        let body = read(&format!("{name}.body"))?;
        let ct = read(&format!("{name}.content-type")).expect("content type of a document");
        let ct = HeaderValue::from_bytes(ct.trim_ascii()).expect("content type");
        Some((Bytes::from(body), ct))
    };

    // The same runtime shape as `cirrus serve`.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let mut app = Router::new();
        if let Some((singleton, ct)) = doc("singleton") {
            app = app.route(
                SINGLETON_PATH,
                get(move || async move { ([(header::CONTENT_TYPE, ct)], singleton) }),
            );
        }
        if let Some((config, ct)) = doc("config") {
            app = app.route(
                &format!("{CONFIGS_PATH}/{{id}}"),
                get(move || async move { ([(header::CONTENT_TYPE, ct)], config) })
                    .patch(|| async { StatusCode::NO_CONTENT }),
            );
        }
        if let Some((policy, ct)) = doc("policy") {
            let etag = read("policy.etag").expect("policy.etag");
            let etag = HeaderValue::from_bytes(etag.trim_ascii()).expect("etag");
            // What the client API does once it has the document: the ETag, and 304 for a
            // matching If-None-Match (an exact comparison is enough for the benchmark).
            app = app.route(
                POLICY_PATH,
                get(move |headers: axum::http::HeaderMap| async move {
                    if headers.get(header::IF_NONE_MATCH) == Some(&etag) {
                        (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
                    } else {
                        ([(header::CONTENT_TYPE, ct), (header::ETAG, etag)], policy).into_response()
                    }
                }),
            );
        }
        if let Some((checkin, ct)) = doc("checkin") {
            // A check-in with nothing behind it: the body read whole (as cirrus must before
            // it can answer), then cirrus's `201` body.
            app = app.route(
                CHECKINS_PATH,
                axum::routing::post(move |_body: Bytes| async move {
                    (StatusCode::CREATED, [(header::CONTENT_TYPE, ct)], checkin)
                }),
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let mut out = io::stdout();
        writeln!(out, "bare listening on http://{addr}").expect("stdout");
        out.flush().expect("stdout");
        axum::serve(listener, app).await.expect("serve");
    });
}

// ---------------------------------------------------------------------------------------------
// A minimal keep-alive HTTP/1.1 client

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

struct Resp {
    status: u16,
    head_len: usize,
    end: usize,
    chunked: bool,
    close: bool,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find_crlf(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\r\n")
}

/// Walks a chunked body; `Some(consumed)` once it is complete. Appends the data to `out` if given
/// (call it with `out` only once the body is known to be complete).
fn walk_chunked(data: &[u8], mut out: Option<&mut Vec<u8>>) -> io::Result<Option<usize>> {
    let mut pos = 0;
    loop {
        let Some(nl) = find_crlf(&data[pos..]) else {
            return Ok(None);
        };
        let line = &data[pos..pos + nl];
        let digits = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| bad("bad chunk size"))?;
        pos += nl + 2;
        if size == 0 {
            loop {
                let Some(nl) = find_crlf(&data[pos..]) else {
                    return Ok(None);
                };
                pos += nl + 2;
                if nl == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if data.len() < pos + size + 2 {
            return Ok(None);
        }
        if &data[pos + size..pos + size + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        if let Some(o) = out.as_deref_mut() {
            o.extend_from_slice(&data[pos..pos + size]);
        }
        pos += size + 2;
    }
}

impl Conn {
    async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Sends one complete request and reads its complete response into `self.buf`.
    async fn roundtrip(&mut self, req: &[u8]) -> io::Result<Resp> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let (status, head_len, framing, close) = loop {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(&self.buf).map_err(|e| bad(e.to_string()))? {
                httparse::Status::Partial => {
                    if self.buf.len() > 1024 * 1024 {
                        return Err(bad("response head too large"));
                    }
                }
                httparse::Status::Complete(head_len) => {
                    let status = r.code.unwrap_or_default();
                    if (100..200).contains(&status) {
                        return Err(bad(format!("unexpected interim response {status}")));
                    }
                    let mut framing = if status == 204 || status == 304 {
                        Framing::Empty
                    } else {
                        Framing::UntilClose
                    };
                    let mut close = r.version == Some(0);
                    for h in r.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            if matches!(framing, Framing::UntilClose) {
                                let n = std::str::from_utf8(h.value)
                                    .ok()
                                    .and_then(|s| s.trim().parse().ok())
                                    .ok_or_else(|| bad("bad content-length"))?;
                                framing = Framing::Length(n);
                            }
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            if h.value.to_ascii_lowercase().ends_with(b"chunked")
                                && !matches!(framing, Framing::Empty)
                            {
                                framing = Framing::Chunked;
                            }
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    break (status, head_len, framing, close);
                }
            }
        };
        let end = match framing {
            Framing::Empty => head_len,
            Framing::Length(n) => {
                while self.buf.len() < head_len + n {
                    if self.fill().await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                head_len + n
            }
            Framing::Chunked => loop {
                if let Some(n) = walk_chunked(&self.buf[head_len..], None)? {
                    break head_len + n;
                }
                if self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            },
            Framing::UntilClose => {
                while self.fill().await? != 0 {}
                self.buf.len()
            }
        };
        if self.buf.len() != end {
            return Err(bad("unexpected bytes after the response"));
        }
        Ok(Resp {
            status,
            head_len,
            end,
            chunked: matches!(framing, Framing::Chunked),
            close: close || matches!(framing, Framing::UntilClose),
        })
    }

    /// The decoded body of the response last read.
    fn body(&self, r: &Resp) -> Vec<u8> {
        let raw = &self.buf[r.head_len..r.end];
        if r.chunked {
            let mut out = Vec::new();
            walk_chunked(raw, Some(&mut out)).expect("chunked body");
            out
        } else {
            raw.to_vec()
        }
    }

    /// A header of the response last read.
    fn header(&self, r: &Resp, name: &str) -> Option<String> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut p = httparse::Response::new(&mut headers);
        p.parse(&self.buf[..r.head_len]).ok()?;
        p.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    }
}

/// The bytes of one request.
fn request(method: &str, addr: SocketAddr, path: &str, token: &str, body: Option<&str>) -> Vec<u8> {
    request_with(method, addr, path, token, &[], body)
}

/// The bytes of one request, with extra headers.
fn request_with(
    method: &str,
    addr: SocketAddr,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Vec<u8> {
    let mut s = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n"
    );
    for (name, value) in headers {
        s.push_str(&format!("{name}: {value}\r\n"));
    }
    match body {
        Some(b) => s.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => s.push_str("\r\n"),
    }
    s.into_bytes()
}

/// One response, read whole.
struct Reply {
    status: u16,
    content_type: Option<String>,
    etag: Option<String>,
    body: Vec<u8>,
}

/// One request on a fresh connection.
async fn exchange(addr: SocketAddr, req: &[u8]) -> io::Result<Reply> {
    let mut c = Conn::connect(addr).await?;
    let r = tokio::time::timeout(Duration::from_secs(30), c.roundtrip(req))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    Ok(Reply {
        status: r.status,
        content_type: c.header(&r, "content-type"),
        etag: c.header(&r, "etag"),
        body: c.body(&r),
    })
}

/// One request on a fresh connection: (status, content type, body).
async fn once(addr: SocketAddr, req: &[u8]) -> io::Result<(u16, Option<String>, Vec<u8>)> {
    let r = exchange(addr, req).await?;
    Ok((r.status, r.content_type, r.body))
}

/// One request that must answer `status`.
async fn expect_reply(addr: SocketAddr, req: &[u8], status: u16, what: &str) -> Reply {
    let r = exchange(addr, req)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        r.status,
        status,
        "{what}: unexpected status; body: {}",
        String::from_utf8_lossy(&r.body)
    );
    r
}

async fn expect(
    addr: SocketAddr,
    req: &[u8],
    status: u16,
    what: &str,
) -> (Option<String>, Vec<u8>) {
    let r = expect_reply(addr, req, status, what).await;
    (r.content_type, r.body)
}

// ---------------------------------------------------------------------------------------------
// Load generation

#[derive(Default)]
struct Stats {
    /// Latencies of successful requests, in microseconds.
    samples: Vec<u32>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    /// Successful responses in all, warm-up and overrun included.
    succeeded_total: u64,
}

impl Stats {
    fn error(&mut self, kind: impl Into<String>) {
        self.errors += 1;
        *self.error_kinds.entry(kind.into()).or_default() += 1;
    }
}

/// What one connection sends: the same request every time, or a new one each time.
enum Requests {
    Fixed(Arc<[u8]>),
    Each(Box<dyn FnMut() -> Vec<u8> + Send>),
}

/// One connection's loop: requests back to back until `end`, reconnecting after failures.
/// Only requests that start at or after `measure_from` are counted.
async fn drive(
    stats: &mut Stats,
    addr: SocketAddr,
    reqs: &mut Requests,
    expected: u16,
    measure_from: Instant,
    end: Instant,
) {
    while Instant::now() < end {
        let mut conn = match Conn::connect(addr).await {
            Ok(c) => c,
            Err(e) => {
                if Instant::now() >= measure_from {
                    stats.error(format!("connect: {}", e.kind()));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        loop {
            let fresh;
            let req: &[u8] = match reqs {
                Requests::Fixed(r) => r,
                Requests::Each(next) => {
                    fresh = next();
                    &fresh
                }
            };
            let t0 = Instant::now();
            if t0 >= end {
                return;
            }
            let counted = t0 >= measure_from;
            match conn.roundtrip(req).await {
                Ok(r) => {
                    if r.status == expected {
                        stats.succeeded_total += 1;
                    }
                    if counted {
                        if r.status == expected {
                            let us = t0.elapsed().as_micros();
                            stats.samples.push(u32::try_from(us).unwrap_or(u32::MAX));
                        } else {
                            stats.error(format!("status {}", r.status));
                        }
                    }
                    if r.close {
                        break;
                    }
                }
                Err(e) => {
                    if counted {
                        stats.error(format!("io: {}", e.kind()));
                    }
                    break;
                }
            }
        }
    }
}

struct Outcome {
    rps: f64,
    p50_us: u32,
    p99_us: u32,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    /// Successful requests per second through each target, in the order given to [`load`].
    per_target_rps: Vec<f64>,
    /// Successful responses in all (warm-up and overrun included).
    succeeded_total: u64,
}

/// Runs one workload for the warm-up plus the measured window, with `cfg.concurrency`
/// connections spread round-robin over `targets` (connection `i` goes to target
/// `i % targets.len()`, so two targets get half the connections each).
async fn load(cfg: &Config, targets: &[SocketAddr], w: &Workload, token: &str) -> Outcome {
    assert!(!targets.is_empty(), "no target to load");
    let headers: Vec<(&str, &str)> = w.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let reqs: Vec<Arc<[u8]>> = targets
        .iter()
        .map(|&addr| request_with(w.method, addr, &w.path, token, &headers, w.body).into())
        .collect();
    let conns = (0..cfg.concurrency)
        .map(|i| {
            let t = i % targets.len();
            (t, targets[t], Requests::Fixed(reqs[t].clone()))
        })
        .collect();
    load_conns(cfg, targets.len(), conns, w.expected).await
}

/// Runs the given connections (each `(target index, address, what it sends)`) for the warm-up
/// plus the measured window; counts responses with status `expected` as successes.
async fn load_conns(
    cfg: &Config,
    targets: usize,
    conns: Vec<(usize, SocketAddr, Requests)>,
    expected: u16,
) -> Outcome {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup_secs);
    let end = measure_from + Duration::from_secs_f64(cfg.secs);
    let deadline = tokio::time::Instant::from_std(end + GRACE);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(t, addr, mut reqs)| {
            let task = tokio::spawn(async move {
                let mut stats = Stats::default();
                let bounded = tokio::time::timeout_at(
                    deadline,
                    drive(&mut stats, addr, &mut reqs, expected, measure_from, end),
                );
                if bounded.await.is_err() {
                    stats.error("request still pending at the deadline");
                }
                stats
            });
            (t, task)
        })
        .collect();
    let mut all = Stats::default();
    let mut per_target = vec![0usize; targets];
    for (t, task) in tasks {
        let s = task.await.expect("load task panicked");
        per_target[t] += s.samples.len();
        all.samples.extend_from_slice(&s.samples);
        all.errors += s.errors;
        all.succeeded_total += s.succeeded_total;
        for (k, n) in s.error_kinds {
            *all.error_kinds.entry(k).or_default() += n;
        }
    }
    all.samples.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.samples.is_empty() {
            return 0;
        }
        let i = ((p * all.samples.len() as f64).ceil() as usize).clamp(1, all.samples.len());
        all.samples[i - 1]
    };
    Outcome {
        rps: all.samples.len() as f64 / cfg.secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors: all.errors,
        error_kinds: all.error_kinds,
        per_target_rps: per_target.iter().map(|&n| n as f64 / cfg.secs).collect(),
        succeeded_total: all.succeeded_total,
    }
}

// ---------------------------------------------------------------------------------------------
// The run

struct Workload {
    name: &'static str,
    method: &'static str,
    path: String,
    body: Option<&'static str>,
    /// Extra request headers.
    headers: Vec<(&'static str, String)>,
    expected: u16,
    is_read: bool,
    response_bytes: usize,
}

fn fmt_ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

const PATCH_BODY: &str = r#"{"description":"bench"}"#;

/// A day-long delegated token for tenant `bench`, signed with the dev key in `data_dir`.
fn mint_token(data_dir: &Path) -> String {
    mint(
        data_dir,
        &TokenRequest {
            tenant: "bench".into(),
            user: None,
            upn: Some("bench@contoso.example".into()),
            scopes: None,
            roles: None,
            groups: None,
            expires_in: 24 * 3600,
        },
    )
}

/// A token as `req` describes it, signed with the dev key in `data_dir`.
fn mint(data_dir: &Path, req: &TokenRequest) -> String {
    let key = DevKey::load_or_create(data_dir).expect("dev key");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    key.mint(&claims_for(req, now).expect("claims"))
        .expect("token")
}

/// What [`seed`] created, and cirrus's real response documents for it.
struct Seeded {
    id: String,
    item_path: String,
    singleton_ct: Option<String>,
    singleton: Vec<u8>,
    config_ct: Option<String>,
    config: Vec<u8>,
}

/// Creates one configuration through `addr`, brings it to the state the PATCH workload keeps
/// it in, and fetches the documents the read workloads will get.
async fn seed(addr: SocketAddr, token: &str) -> Seeded {
    let payload = base64::engine::general_purpose::STANDARD.encode(r#"{"bench":true,"n":1}"#);
    let create = json!({
        "@odata.type": "#microsoft.graph.windowsOfficeClientConfiguration",
        "displayName": "bench",
        "policyPayload": payload,
    })
    .to_string();
    let (_, created) = expect(
        addr,
        &request("POST", addr, CONFIGS_PATH, token, Some(&create)),
        201,
        "create configuration",
    )
    .await;
    let created: Value = serde_json::from_slice(&created).expect("created JSON");
    let id = created["id"].as_str().expect("id").to_string();
    let item_path = format!("{CONFIGS_PATH}/{id}");
    expect(
        addr,
        &request("PATCH", addr, &item_path, token, Some(PATCH_BODY)),
        204,
        "patch configuration",
    )
    .await;
    let (singleton_ct, singleton) = expect(
        addr,
        &request("GET", addr, SINGLETON_PATH, token, None),
        200,
        "get singleton",
    )
    .await;
    let (config_ct, config) = expect(
        addr,
        &request("GET", addr, &item_path, token, None),
        200,
        "get configuration",
    )
    .await;
    Seeded {
        id,
        item_path,
        singleton_ct,
        singleton,
        config_ct,
        config,
    }
}

fn workloads(s: &Seeded) -> [Workload; 3] {
    [
        Workload {
            name: "GET /officeConfiguration",
            method: "GET",
            path: SINGLETON_PATH.to_string(),
            body: None,
            headers: Vec::new(),
            expected: 200,
            is_read: true,
            response_bytes: s.singleton.len(),
        },
        Workload {
            name: "GET /clientConfigurations/{id}",
            method: "GET",
            path: s.item_path.clone(),
            body: None,
            headers: Vec::new(),
            expected: 200,
            is_read: true,
            response_bytes: s.config.len(),
        },
        Workload {
            name: "PATCH /clientConfigurations/{id}",
            method: "PATCH",
            path: s.item_path.clone(),
            body: Some(PATCH_BODY),
            headers: Vec::new(),
            expected: 204,
            is_read: false,
            response_bytes: 0,
        },
    ]
}

fn print_errors(details: Vec<String>) {
    if !details.is_empty() {
        println!("\nerrors:");
        for d in details {
            println!("{d}");
        }
    }
}

async fn run(cfg: Config) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "cirrus HTTP benchmark: {} connections, {:.1} s warm-up + {:.1} s measured per run, \
         {} load-generator thread(s), {cpus} CPU(s) visible",
        cfg.concurrency, cfg.warmup_secs, cfg.secs, cfg.client_threads,
    );
    println!("sections: {}", cfg.sections.join(", "));
    let started = Instant::now();
    for section in &cfg.sections {
        println!();
        let t0 = Instant::now();
        match *section {
            "sqlite" => sqlite_section(&cfg).await,
            "postgres" => postgres_section(&cfg, cpus).await,
            "odata" => odata_section(&cfg).await,
            "policy" => policy_section(&cfg).await,
            "checkins" => checkins_section(&cfg).await,
            other => unreachable!("unknown section {other}"),
        }
        eprintln!("section {section} took {:.0} s", t0.elapsed().as_secs_f64());
    }
    eprintln!("whole run took {:.0} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// Section 3: OData queries in a tenant with 10,000 configurations (SQLite)

/// Number of configurations in the query tenant (`CIRRUS_BENCH_QUERY_ITEMS`, default 10,000).
fn query_items() -> usize {
    std::env::var("CIRRUS_BENCH_QUERY_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Percent-encodes a `$filter`/`$orderby` value for a request line.
fn enc(v: &str) -> String {
    v.replace('%', "%25")
        .replace(' ', "%20")
        .replace('\'', "%27")
        .replace(',', "%2C")
}

async fn odata_section(cfg: &Config) {
    let n = query_items();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let (_cirrus, cirrus) = start_cirrus(&data_dir, None);
    wait_healthy(cirrus, "cirrus").await;
    let token = mint_token(&data_dir);

    // Seed n configurations through the API, 16 writers at a time.
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (next, token) = (next.clone(), token.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let kind = if i % 3 == 0 {
                        "windowsOfficeClientSecurityConfiguration"
                    } else {
                        "windowsOfficeClientConfiguration"
                    };
                    let body = json!({
                        "@odata.type": format!("#microsoft.graph.{kind}"),
                        "displayName": format!("cfg-{i:05}"),
                        "description": if i % 2 == 0 { "even" } else { "odd" },
                    })
                    .to_string();
                    expect(
                        cirrus,
                        &request("POST", cirrus, CONFIGS_PATH, &token, Some(&body)),
                        201,
                        "seed",
                    )
                    .await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("seed task");
    }
    let seeded_in = started.elapsed();

    // Walk a full scan (default order, 100 per page) to page 90 through the nextLinks.
    let prefix = format!("http://{cirrus}");
    let mut path = format!("{CONFIGS_PATH}?$top=100");
    let page1 = path.clone();
    let mut page90 = None;
    for page in 1..=90usize {
        if page == 90 {
            page90 = Some(path.clone());
            break;
        }
        let (_, body) = expect(
            cirrus,
            &request("GET", cirrus, &path, &token, None),
            200,
            "scan page",
        )
        .await;
        let v: Value = serde_json::from_slice(&body).expect("page JSON");
        match v["@odata.nextLink"].as_str() {
            Some(link) => {
                path = link
                    .strip_prefix(&prefix)
                    .expect("nextLink on our base")
                    .to_string()
            }
            None => break,
        }
    }
    let filter =
        enc("priority ge 1000 and startswith(displayName,'cfg-0') and description eq 'even'");
    let orderby = enc("displayName desc,priority");
    let query = format!("{CONFIGS_PATH}?$filter={filter}&$orderby={orderby}&$top=100&$count=true");
    let (_, qbody) = expect(
        cirrus,
        &request("GET", cirrus, &query, &token, None),
        200,
        "filtered query",
    )
    .await;
    let qv: Value = serde_json::from_slice(&qbody).expect("query JSON");

    println!("== OData queries: one tenant with {n} configurations (cirrus on SQLite) ==");
    println!(
        "seeded {n} configurations through the API in {:.1} s; the filtered query matches {} (returns {} per page)",
        seeded_in.as_secs_f64(),
        qv["@odata.count"],
        qv["value"].as_array().map_or(0, Vec::len)
    );
    let mut workloads = vec![Workload {
        name: "$filter+$orderby+$top=100",
        method: "GET",
        path: query,
        body: None,
        headers: Vec::new(),
        expected: 200,
        is_read: true,
        response_bytes: qbody.len(),
    }];
    workloads.push(Workload {
        name: "full scan, page 1",
        method: "GET",
        path: page1,
        body: None,
        headers: Vec::new(),
        expected: 200,
        is_read: true,
        response_bytes: 0,
    });
    match page90 {
        Some(p) => workloads.push(Workload {
            name: "full scan, page 90",
            method: "GET",
            path: p,
            body: None,
            headers: Vec::new(),
            expected: 200,
            is_read: true,
            response_bytes: 0,
        }),
        None => println!(
            "fewer than 90 pages: page 90 not measured (set CIRRUS_BENCH_QUERY_ITEMS >= 9000)"
        ),
    }
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>8}",
        "workload", "req/s", "p50", "p99", "errors"
    );
    println!("{}", "-".repeat(76));
    let mut outcomes = Vec::new();
    let mut details = Vec::new();
    for w in &workloads {
        eprintln!("running {} ...", w.name);
        let o = load(cfg, &[cirrus], w, &token).await;
        println!(
            "{:<34} {:>10.0} {:>10} {:>10} {:>8}",
            w.name,
            o.rps,
            fmt_ms(o.p50_us),
            fmt_ms(o.p99_us),
            o.errors
        );
        for (kind, k) in &o.error_kinds {
            details.push(format!("  {}: {k} x {kind}", w.name));
        }
        outcomes.push(o);
    }
    print_errors(details);
    if outcomes.len() == 3 && outcomes[1].p50_us > 0 && outcomes[2].rps > 0.0 {
        let latency = f64::from(outcomes[2].p50_us) / f64::from(outcomes[1].p50_us);
        let cost = outcomes[1].rps / outcomes[2].rps;
        println!(
            "\npage 90 vs page 1: p50 latency ratio {latency:.2}x, cost per request (1 / throughput) ratio {cost:.2}x"
        );
        println!(
            "target (issue 4): page 90 costs <= 1.5x page 1: {}",
            if cost <= 1.5 { "MET" } else { "NOT MET" }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Section 1: cirrus on SQLite against the bare axum handler

async fn sqlite_section(cfg: &Config) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let doc_dir = tmp.path().join("bare");
    std::fs::create_dir_all(&doc_dir).expect("doc dir");

    // Declared after `tmp`, so dropped (killed) before the directory is removed.
    let (_cirrus, cirrus) = start_cirrus(&data_dir, None);
    wait_healthy(cirrus, "cirrus").await;
    let token = mint_token(&data_dir);
    let seeded = seed(cirrus, &token).await;

    // Cirrus's real response documents, for the bare server.
    let write = |name: &str, data: &[u8]| std::fs::write(doc_dir.join(name), data).expect(name);
    write("singleton.body", &seeded.singleton);
    write(
        "singleton.content-type",
        seeded
            .singleton_ct
            .as_deref()
            .expect("singleton content type")
            .as_bytes(),
    );
    write("config.body", &seeded.config);
    write(
        "config.content-type",
        seeded
            .config_ct
            .as_deref()
            .expect("configuration content type")
            .as_bytes(),
    );

    let (_bare, bare) = start_bare(&doc_dir);
    let (_, b) = expect(
        bare,
        &request("GET", bare, SINGLETON_PATH, &token, None),
        200,
        "bare singleton",
    )
    .await;
    assert_eq!(
        b, seeded.singleton,
        "bare server serves a different document"
    );
    expect(
        bare,
        &request("PATCH", bare, &seeded.item_path, &token, Some(PATCH_BODY)),
        204,
        "bare patch",
    )
    .await;

    let workloads = workloads(&seeded);
    println!("== SQLite: cirrus vs a bare axum handler serving the same documents ==");
    println!("cirrus (SQLite) at http://{cirrus}, bare axum at http://{bare} (both loopback)");
    for w in &workloads {
        println!("  {:<34} response body {} bytes", w.name, w.response_bytes);
    }
    println!();

    let mut rows = Vec::new();
    for w in &workloads {
        let mut pair = Vec::new();
        for (target, addr) in [("cirrus", cirrus), ("bare", bare)] {
            eprintln!("running {} against {target} ...", w.name);
            pair.push((target, load(cfg, &[addr], w, &token).await));
        }
        rows.push((w, pair));
    }

    println!(
        "{:<34} {:<7} {:>10} {:>10} {:>10} {:>8} {:>12}",
        "workload", "target", "req/s", "p50", "p99", "errors", "cirrus/bare"
    );
    println!("{}", "-".repeat(97));
    let mut reads_met = true;
    let mut details = Vec::new();
    for (w, pair) in &rows {
        let ratio = if pair[1].1.rps > 0.0 {
            pair[0].1.rps / pair[1].1.rps
        } else {
            0.0
        };
        if w.is_read && ratio < 0.5 {
            reads_met = false;
        }
        for (i, (target, o)) in pair.iter().enumerate() {
            let line = format!(
                "{:<34} {:<7} {:>10.0} {:>10} {:>10} {:>8} {:>12}",
                if i == 0 { w.name } else { "" },
                target,
                o.rps,
                fmt_ms(o.p50_us),
                fmt_ms(o.p99_us),
                o.errors,
                if i == 0 {
                    format!("{:.1}%", ratio * 100.0)
                } else {
                    String::new()
                },
            );
            println!("{}", line.trim_end());
            for (kind, n) in &o.error_kinds {
                details.push(format!("  {} / {target}: {n} x {kind}", w.name));
            }
        }
    }
    print_errors(details);
    println!(
        "\ntarget (issue 2): reads at >= 50% of the bare handler's throughput: {}",
        if reads_met { "MET" } else { "NOT MET" }
    );
}

// ---------------------------------------------------------------------------------------------
// Section 2: cirrus on PostgreSQL, one instance and two instances on the same database

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long connecting to PostgreSQL (to create the schema) may take before the section is
/// skipped.
const PG_CONNECT: Duration = Duration::from_secs(5);

/// A fresh, empty schema on the benchmark's PostgreSQL server; dropped (with everything in it)
/// when the value is dropped — on normal exit, on panic and on Ctrl-C alike.
struct PgSchema {
    admin_url: String,
    name: String,
}

impl PgSchema {
    async fn create(admin_url: &str) -> Result<PgSchema, String> {
        let name = format!("cirrus_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = pg_connect(admin_url).await?;
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        created.map_err(|e| format!("cannot create schema {name}: {e}"))?;
        Ok(PgSchema {
            admin_url: admin_url.to_string(),
            name,
        })
    }

    /// The database URL whose connections use only this schema.
    fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}options[search_path]={}", self.admin_url, self.name)
    }

    /// The server's version string, for the report.
    async fn server_version(&self) -> Option<String> {
        let mut conn = pg_connect(&self.admin_url).await.ok()?;
        let v: Option<String> = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await
            .ok();
        let _ = conn.close().await;
        v
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside the benchmark's runtime (or while it unwinds): clean up on a
        // thread with a runtime of its own.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = pg_connect(&url).await?;
                let res = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE"
                )))
                .execute(&mut conn)
                .await;
                let _ = conn.close().await;
                res.map(|_| ()).map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => eprintln!("dropped schema {}", self.name),
            Ok(Err(e)) => eprintln!("could not drop schema {}: {e}", self.name),
            Err(_) => eprintln!(
                "could not drop schema {}: cleanup thread panicked",
                self.name
            ),
        }
    }
}

/// One connection to `url`, or why not (within [`PG_CONNECT`]).
async fn pg_connect(url: &str) -> Result<sqlx::PgConnection, String> {
    match tokio::time::timeout(PG_CONNECT, sqlx::PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", redact(url))),
        Err(_) => Err(format!(
            "no connection to {} within {PG_CONNECT:?}",
            redact(url)
        )),
    }
}

/// The URL without its password (if any), for printing.
fn redact(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    match rest.find('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The PostgreSQL server the benchmark uses (`CIRRUS_BENCH_DATABASE_URL`), or `None` when it is
/// set to `off`.
fn pg_admin_url() -> Option<String> {
    let url = std::env::var("CIRRUS_BENCH_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    (!url.trim().eq_ignore_ascii_case("off")).then_some(url)
}

/// A fresh schema for `what` on the benchmark's PostgreSQL server, or `None` (with the reason
/// printed) when PostgreSQL is turned off or unreachable.
async fn pg_schema(what: &str) -> Option<(String, PgSchema)> {
    let Some(admin_url) = pg_admin_url() else {
        println!("{what} skipped: CIRRUS_BENCH_DATABASE_URL=off");
        return None;
    };
    match PgSchema::create(&admin_url).await {
        Ok(s) => Some((admin_url, s)),
        Err(reason) => {
            println!("{what} skipped: {reason}");
            println!("(set CIRRUS_BENCH_DATABASE_URL to a reachable server to run it)");
            None
        }
    }
}

async fn postgres_section(cfg: &Config, cpus: usize) {
    println!("== PostgreSQL: one cirrus instance vs two instances on the same database ==");
    // Declared first, so dropped last: after both instances are killed.
    let Some((admin_url, schema)) = pg_schema("PostgreSQL section").await else {
        return;
    };
    let version = schema
        .server_version()
        .await
        .unwrap_or_else(|| "?".to_string());
    let tmp = tempfile::tempdir().expect("tempdir");
    // In PostgreSQL mode the data directory holds only the dev signing key; both instances
    // share it, so one token is good on both.
    let data_dir = tmp.path().join("data");
    let url = schema.url();

    // Instance A alone (it applies the migrations to the fresh schema on start).
    let (_a, a) = start_cirrus(&data_dir, Some(&url));
    wait_healthy(a, "cirrus instance A").await;
    let token = mint_token(&data_dir);
    let seeded = seed(a, &token).await;
    let workloads = workloads(&seeded);

    println!(
        "PostgreSQL {version} at {}, schema {}",
        redact(&admin_url),
        schema.name
    );
    println!(
        "one instance: cirrus A at http://{a}; two instances: A plus B (started afterwards on the \
         same database and data directory, i.e. the same signing key), each given half of the \
         {} connections",
        cfg.concurrency
    );
    for w in &workloads {
        println!("  {:<34} response body {} bytes", w.name, w.response_bytes);
    }

    let mut one = Vec::new();
    for w in &workloads {
        eprintln!("running {} against one PostgreSQL instance ...", w.name);
        one.push(load(cfg, &[a], w, &token).await);
    }

    let two_possible = cfg.concurrency >= 2;
    let mut two = Vec::new();
    let mut b_line = String::new();
    let _b = if two_possible {
        // Instance B: started only now, so that it took no CPU during the one-instance runs.
        let (guard, b) = start_cirrus(&data_dir, Some(&url));
        wait_healthy(b, "cirrus instance B").await;
        // A write through A is visible through B, with the same token.
        let (_, seen) = expect(
            b,
            &request("GET", b, &seeded.item_path, &token, None),
            200,
            "get configuration through instance B",
        )
        .await;
        let seen: Value = serde_json::from_slice(&seen).expect("configuration JSON");
        assert_eq!(
            seen["id"].as_str(),
            Some(seeded.id.as_str()),
            "instance B sees another configuration"
        );
        assert_eq!(seen["description"], "bench", "instance B: {seen}");
        b_line = format!("cirrus B at http://{b}");
        for w in &workloads {
            eprintln!("running {} against two PostgreSQL instances ...", w.name);
            two.push(load(cfg, &[a, b], w, &token).await);
        }
        Some(guard)
    } else {
        None
    };
    if !b_line.is_empty() {
        println!("{b_line}");
    }
    println!();

    println!(
        "{:<34} {:<12} {:>10} {:>10} {:>10} {:>8} {:>9}",
        "workload", "setup", "req/s", "p50", "p99", "errors", "two/one"
    );
    println!("{}", "-".repeat(99));
    let mut details = Vec::new();
    let mut splits = Vec::new();
    for (i, w) in workloads.iter().enumerate() {
        let o1 = &one[i];
        let mut rows = vec![("1 instance", o1, String::new())];
        if let Some(o2) = two.get(i) {
            let ratio = if o1.rps > 0.0 { o2.rps / o1.rps } else { 0.0 };
            rows.push(("2 instances", o2, format!("{ratio:.2}x")));
            let split: Vec<String> = o2
                .per_target_rps
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect();
            splits.push(format!(
                "  {:<34} A {} / B {} req/s",
                w.name, split[0], split[1]
            ));
        }
        for (j, (setup, o, ratio)) in rows.iter().enumerate() {
            let line = format!(
                "{:<34} {:<12} {:>10.0} {:>10} {:>10} {:>8} {:>9}",
                if j == 0 { w.name } else { "" },
                setup,
                o.rps,
                fmt_ms(o.p50_us),
                fmt_ms(o.p99_us),
                o.errors,
                ratio,
            );
            println!("{}", line.trim_end());
            for (kind, n) in &o.error_kinds {
                details.push(format!("  {} / {setup}: {n} x {kind}", w.name));
            }
        }
    }
    print_errors(details);
    if two_possible {
        println!("\nthroughput per instance in the two-instance runs:");
        for s in splits {
            println!("{s}");
        }
        println!(
            "\nnote: {cpus} CPU(s) are shared by both cirrus instances, PostgreSQL and the load \
             generator, so two/one here shows contention on one small machine (near or below \
             1x is expected), not the capacity of instances on separate machines."
        );
    } else {
        println!(
            "\ntwo-instance runs skipped: CIRRUS_BENCH_CONCURRENCY must be at least 2 to give \
             each instance a connection"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Sections 4 and 5: the Office client API (issue 6)

/// splitmix64: a small deterministic generator, so that every run seeds the same tenant.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// `k` distinct values below `n` (a partial Fisher–Yates shuffle).
    fn pick(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = self.between(i, n - 1);
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all
    }
}

/// The policy tenant: configurations, group targets per configuration, the group pool they
/// are drawn from, and how many of those groups the measured user is in.
const POLICY_CONFIGS: usize = 500;
const POLICY_GROUPS_PER_CONFIG: usize = 10;
const POLICY_GROUP_POOL: usize = 300;
const POLICY_USER_GROUPS: usize = 50;
/// Concurrent requests while seeding a tenant through the API.
const SEED_WRITERS: usize = 16;

fn bench_group(g: usize) -> String {
    format!("6a000000-0000-4000-8000-{g:012}")
}

const POLICY_APPS: [&str; 10] = [
    "word",
    "excel",
    "powerpoint",
    "outlook",
    "teams",
    "onenote",
    "access",
    "visio",
    "project",
    "common",
];
const POLICY_SETTINGS: [&str; 8] = [
    "autoSaveEnabled",
    "defaultFileFormat",
    "vbaMacroNotification",
    "blockMacrosFromInternet",
    "updateChannel",
    "protectedViewForInternetFiles",
    "diagnosticDataLevel",
    "connectedExperiencesEnabled",
];
const PREFERENCE_SETTINGS: [&str; 6] = [
    "theme",
    "defaultFont",
    "ribbonMode",
    "startScreenEnabled",
    "proofingLanguage",
    "autoRecoverMinutes",
];

/// A plausible value for a setting (typed by the setting, varied by the configuration).
fn setting_value(rng: &mut Rng, setting: usize) -> Value {
    match setting % 4 {
        0 => Value::Bool(rng.next().is_multiple_of(2)),
        1 => json!(rng.between(0, 4) * 5),
        2 => json!(["Current", "MonthlyEnterprise", "SemiAnnual", "Beta"][rng.between(0, 3)]),
        _ => json!({"enabled": rng.next().is_multiple_of(2), "level": rng.between(1, 3)}),
    }
}

/// A JSON object of `lo..=hi` keys drawn from `keys` (so configurations overlap on them).
fn payload_object(
    rng: &mut Rng,
    keys: &[String],
    lo: usize,
    hi: usize,
) -> serde_json::Map<String, Value> {
    let n = rng.between(lo, hi);
    rng.pick(n, keys.len())
        .into_iter()
        .map(|k| (keys[k].clone(), setting_value(rng, k)))
        .collect()
}

/// One configuration of the policy tenant, as planned before it is created.
struct PlannedConfig {
    security: bool,
    priority: i32,
    policy: serde_json::Map<String, Value>,
    preferences: serde_json::Map<String, Value>,
    groups: Vec<usize>,
}

/// The policy tenant, the same on every run: 500 configurations (every third a security
/// configuration) with unique priorities in shuffled order, 10–20 policy keys of 80 and 2–5
/// preference keys of 60, each targeted at 10 groups of 300.
fn plan_policy_tenant() -> Vec<PlannedConfig> {
    let policy_keys: Vec<String> = POLICY_APPS
        .iter()
        .flat_map(|a| POLICY_SETTINGS.iter().map(move |s| format!("{a}.{s}")))
        .collect();
    let preference_keys: Vec<String> = POLICY_APPS
        .iter()
        .flat_map(|a| PREFERENCE_SETTINGS.iter().map(move |s| format!("{a}.{s}")))
        .collect();
    let mut rng = Rng(6);
    // Unique priorities 1..=500, not in creation order.
    let priorities = rng.pick(POLICY_CONFIGS, POLICY_CONFIGS);
    (0..POLICY_CONFIGS)
        .map(|i| PlannedConfig {
            security: i % 3 == 0,
            priority: i32::try_from(priorities[i] + 1).expect("priority"),
            policy: payload_object(&mut rng, &policy_keys, 10, 20),
            preferences: payload_object(&mut rng, &preference_keys, 2, 5),
            groups: rng.pick(POLICY_GROUPS_PER_CONFIG, POLICY_GROUP_POOL),
        })
        .collect()
}

/// Creates the planned configurations and their assignments through the Graph API,
/// [`SEED_WRITERS`] requests at a time; returns the configuration ids in plan order.
async fn seed_policy_tenant(
    addr: SocketAddr,
    token: &str,
    plan: &Arc<Vec<PlannedConfig>>,
) -> Vec<String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..SEED_WRITERS)
        .map(|_| {
            let (next, token, plan) = (next.clone(), token.to_string(), plan.clone());
            tokio::spawn(async move {
                let mut made = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(p) = plan.get(i) else { break };
                    let b64 = |m: &serde_json::Map<String, Value>| {
                        base64::engine::general_purpose::STANDARD
                            .encode(Value::Object(m.clone()).to_string())
                    };
                    let kind = if p.security {
                        "windowsOfficeClientSecurityConfiguration"
                    } else {
                        "windowsOfficeClientConfiguration"
                    };
                    let body = json!({
                        "@odata.type": format!("#microsoft.graph.{kind}"),
                        "displayName": format!("policy-{i:03}"),
                        "description": "issue 6 policy benchmark",
                        "priority": p.priority,
                        "policyPayload": b64(&p.policy),
                        "userPreferencePayload": b64(&p.preferences),
                    })
                    .to_string();
                    let (_, created) = expect(
                        addr,
                        &request("POST", addr, CONFIGS_PATH, &token, Some(&body)),
                        201,
                        "seed configuration",
                    )
                    .await;
                    let created: Value = serde_json::from_slice(&created).expect("created JSON");
                    let id = created["id"].as_str().expect("id").to_string();
                    let targets: Vec<Value> = p
                        .groups
                        .iter()
                        .map(|&g| {
                            json!({"target": {
                                "@odata.type": "#microsoft.graph.officeConfigurationGroupAssignmentTarget",
                                "groupId": bench_group(g),
                            }})
                        })
                        .collect();
                    let assign = json!({ "officeConfigurationAssignments": targets }).to_string();
                    expect(
                        addr,
                        &request(
                            "POST",
                            addr,
                            &format!("{CONFIGS_PATH}/{id}/assign"),
                            &token,
                            Some(&assign),
                        ),
                        200,
                        "seed assignments",
                    )
                    .await;
                    made.push((i, id));
                }
                made
            })
        })
        .collect();
    let mut ids = vec![String::new(); plan.len()];
    for w in writers {
        for (i, id) in w.await.expect("seed task") {
            ids[i] = id;
        }
    }
    ids
}

/// What the measured user should get: the number of applicable configurations, and per
/// payload kind the number of effective keys and of key settings they merge (so how much
/// precedence had to decide).
struct ExpectedPolicy {
    configurations: usize,
    policy_keys: usize,
    policy_settings: usize,
    preference_keys: usize,
    preference_settings: usize,
}

fn expected_policy(plan: &[PlannedConfig], user_groups: usize) -> ExpectedPolicy {
    let applicable: Vec<&PlannedConfig> = plan
        .iter()
        .filter(|c| c.groups.iter().any(|&g| g < user_groups))
        .collect();
    let keys = |f: fn(&PlannedConfig) -> &serde_json::Map<String, Value>| {
        let all: std::collections::BTreeSet<&String> =
            applicable.iter().flat_map(|c| f(c).keys()).collect();
        let settings: usize = applicable.iter().map(|c| f(c).len()).sum();
        (all.len(), settings)
    };
    let (policy_keys, policy_settings) = keys(|c| &c.policy);
    let (preference_keys, preference_settings) = keys(|c| &c.preferences);
    ExpectedPolicy {
        configurations: applicable.len(),
        policy_keys,
        policy_settings,
        preference_keys,
        preference_settings,
    }
}

fn engine_name(pg: Option<&PgSchema>) -> &'static str {
    if pg.is_some() { "PostgreSQL" } else { "SQLite" }
}

async fn policy_section(cfg: &Config) {
    policy_run(cfg, None).await;
    println!();
    if let Some((_, schema)) = pg_schema("PostgreSQL policy fetch").await {
        policy_run(cfg, Some(&schema)).await;
    }
}

/// Policy fetch on one engine: cirrus against the bare handler serving the same document.
async fn policy_run(cfg: &Config, pg: Option<&PgSchema>) {
    let engine = engine_name(pg);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let doc_dir = tmp.path().join("bare");
    std::fs::create_dir_all(&doc_dir).expect("doc dir");
    let url = pg.map(PgSchema::url);
    let (_cirrus, cirrus) = start_cirrus(&data_dir, url.as_deref());
    wait_healthy(cirrus, "cirrus").await;
    let admin = mint_token(&data_dir);

    let plan = Arc::new(plan_policy_tenant());
    let started = Instant::now();
    let ids = seed_policy_tenant(cirrus, &admin, &plan).await;
    let seeded_in = started.elapsed();
    let assignments: usize = plan.iter().map(|c| c.groups.len()).sum();

    let groups: Vec<String> = (0..POLICY_USER_GROUPS).map(bench_group).collect();
    let user = mint(
        &data_dir,
        &TokenRequest {
            tenant: "bench".into(),
            user: Some("00000000-0000-4000-8000-00000000b006".into()),
            upn: Some("policy-user@contoso.example".into()),
            scopes: Some("openid".into()),
            roles: None,
            groups: Some(groups.join(" ")),
            expires_in: 24 * 3600,
        },
    );
    let full = expect_reply(
        cirrus,
        &request("GET", cirrus, POLICY_PATH, &user, None),
        200,
        "get client policy",
    )
    .await;
    let etag = full.etag.clone().expect("policy ETag");
    let content_type = full.content_type.clone().expect("policy content type");
    let doc: Value = serde_json::from_slice(&full.body).expect("policy JSON");

    // The document is what the plan says it should be.
    let want = expected_policy(&plan, POLICY_USER_GROUPS);
    let count = |v: &Value| v.as_object().map_or(0, serde_json::Map::len);
    let got_configs = doc["configurations"].as_array().map_or(0, Vec::len);
    assert_eq!(
        got_configs, want.configurations,
        "applicable configurations"
    );
    assert_eq!(
        count(&doc["policySettings"]),
        want.policy_keys,
        "policy keys"
    );
    assert_eq!(
        count(&doc["userPreferenceSettings"]),
        want.preference_keys,
        "preference keys"
    );
    // Precedence: the top configuration supplies its keys.
    let top = doc["configurations"][0]["id"].as_str().expect("top id");
    let top_plan = &plan[ids.iter().position(|id| id == top).expect("top is seeded")];
    for key in top_plan.policy.keys() {
        assert_eq!(
            doc["sources"]["policySettings"][key].as_str(),
            Some(top),
            "{key}"
        );
    }

    let not_modified = request_with(
        "GET",
        cirrus,
        POLICY_PATH,
        &user,
        &[("If-None-Match", &etag)],
        None,
    );
    expect_reply(
        cirrus,
        &not_modified,
        304,
        "client policy with If-None-Match",
    )
    .await;

    // The bare handler serves the same document, ETag and 304.
    let write = |name: &str, data: &[u8]| std::fs::write(doc_dir.join(name), data).expect(name);
    write("policy.body", &full.body);
    write("policy.content-type", content_type.as_bytes());
    write("policy.etag", etag.as_bytes());
    let (_bare, bare) = start_bare(&doc_dir);
    let b = expect_reply(
        bare,
        &request("GET", bare, POLICY_PATH, &user, None),
        200,
        "bare policy",
    )
    .await;
    assert_eq!(b.body, full.body, "bare server serves a different document");
    expect_reply(
        bare,
        &request_with(
            "GET",
            bare,
            POLICY_PATH,
            &user,
            &[("If-None-Match", &etag)],
            None,
        ),
        304,
        "bare policy 304",
    )
    .await;

    println!(
        "== Client policy fetch: GET {POLICY_PATH} (cirrus on {engine}) vs a bare axum handler =="
    );
    if let Some(schema) = pg {
        println!(
            "PostgreSQL {} at {}, schema {}",
            schema.server_version().await.unwrap_or_else(|| "?".into()),
            redact(&schema.admin_url),
            schema.name
        );
    }
    println!(
        "tenant: {} configurations ({} security), {assignments} assignments ({POLICY_GROUPS_PER_CONFIG} \
         group targets each, drawn from {POLICY_GROUP_POOL} groups), seeded through the Graph API in {:.1} s",
        plan.len(),
        plan.iter().filter(|c| c.security).count(),
        seeded_in.as_secs_f64()
    );
    println!(
        "user: delegated token with {POLICY_USER_GROUPS} of those groups; the policy applies {} \
         configurations, merging {} policy key settings into {} keys and {} preference key \
         settings into {} keys (precedence by priority)",
        want.configurations,
        want.policy_settings,
        want.policy_keys,
        want.preference_settings,
        want.preference_keys
    );
    println!(
        "response: {} bytes, ETag {etag}; cirrus at http://{cirrus}, bare axum at http://{bare} \
         (serving that document, its ETag and 304 on If-None-Match)",
        full.body.len()
    );
    println!();

    let workloads = [
        Workload {
            name: "GET /client/policy (200, full)",
            method: "GET",
            path: POLICY_PATH.to_string(),
            body: None,
            headers: Vec::new(),
            expected: 200,
            is_read: true,
            response_bytes: full.body.len(),
        },
        Workload {
            name: "GET /client/policy (304)",
            method: "GET",
            path: POLICY_PATH.to_string(),
            body: None,
            headers: vec![("If-None-Match", etag.clone())],
            expected: 304,
            is_read: true,
            response_bytes: 0,
        },
    ];
    let mut rows = Vec::new();
    for w in &workloads {
        let mut pair = Vec::new();
        for (target, addr) in [("cirrus", cirrus), ("bare", bare)] {
            eprintln!("running {} against {target} ({engine}) ...", w.name);
            pair.push((target, load(cfg, &[addr], w, &user).await));
        }
        rows.push((w, pair));
    }
    println!(
        "{:<34} {:<7} {:>10} {:>10} {:>10} {:>8} {:>12}",
        "workload", "target", "req/s", "p50", "p99", "errors", "cirrus/bare"
    );
    println!("{}", "-".repeat(97));
    let mut details = Vec::new();
    let mut full_ratio = 0.0;
    for (k, (w, pair)) in rows.iter().enumerate() {
        let ratio = if pair[1].1.rps > 0.0 {
            pair[0].1.rps / pair[1].1.rps
        } else {
            0.0
        };
        if k == 0 {
            full_ratio = ratio;
        }
        for (i, (target, o)) in pair.iter().enumerate() {
            let line = format!(
                "{:<34} {:<7} {:>10.0} {:>10} {:>10} {:>8} {:>12}",
                if i == 0 { w.name } else { "" },
                target,
                o.rps,
                fmt_ms(o.p50_us),
                fmt_ms(o.p99_us),
                o.errors,
                if i == 0 {
                    format!("{:.1}%", ratio * 100.0)
                } else {
                    String::new()
                },
            );
            println!("{}", line.trim_end());
            for (kind, n) in &o.error_kinds {
                details.push(format!("  {} / {target}: {n} x {kind}", w.name));
            }
        }
    }
    print_errors(details);
    println!(
        "\ntarget (issue 6): full policy fetch at >= 50% of the bare handler's throughput \
         ({engine}): {:.1}% — {}",
        full_ratio * 100.0,
        if full_ratio >= 0.5 { "MET" } else { "NOT MET" }
    );
}

/// Configurations in the check-in tenant; each check-in reports [`APPLIED_PER_CHECKIN`] of
/// them as applied.
const CHECKIN_CONFIGS: usize = 12;
const APPLIED_PER_CHECKIN: usize = 3;

async fn checkins_section(cfg: &Config) {
    checkins_run(cfg, None).await;
    println!();
    if let Some((_, schema)) = pg_schema("PostgreSQL check-in ingestion").await {
        checkins_run(cfg, Some(&schema)).await;
    }
}

/// The check-in request of client `client` for its device number `device`.
fn checkin_request(
    addr: SocketAddr,
    token: &str,
    client: usize,
    device: u64,
    ids: &[String],
) -> Vec<u8> {
    let pick = |k: usize| ids[(client + device as usize + k * 4) % ids.len()].as_str();
    let applied: Vec<&str> = (0..APPLIED_PER_CHECKIN).map(pick).collect();
    let ok = device % 10 != 9;
    let body = json!({
        "deviceName": format!("BENCH-{client:03}-{device:08}"),
        "devicePlatform": "Windows",
        "devicePlatformVersion": "10.0.22631",
        "wasSuccessful": ok,
        "errorMessage": if ok { Value::Null } else { json!("Policy 'common.updateChannel' failed to apply: 0x80070005") },
        "appliedPolicies": applied,
        "lastTaskName": "PolicySync",
    })
    .to_string();
    request("POST", addr, CHECKINS_PATH, token, Some(&body))
}

/// Every check-in request a client can send, built once: the body depends on the device
/// number only through its 8 digits and `device % 60` (which configurations it names and
/// whether it failed), so a request is a copy of one of 60 templates with the digits written
/// in. Building each request with `json!` cost the single-threaded load generator, which
/// shares the machine's two cores with cirrus, several microseconds per check-in.
struct CheckinTemplates {
    /// (request bytes for device `k`, offset of the device digits in them), k in 0..60.
    templates: Vec<(Vec<u8>, usize)>,
}

impl CheckinTemplates {
    const PERIOD: u64 = 60;

    fn new(addr: SocketAddr, token: &str, client: usize, ids: &[String]) -> Self {
        assert_eq!(
            Self::PERIOD % ids.len() as u64,
            0,
            "the period covers every pick"
        );
        let templates = (0..Self::PERIOD)
            .map(|k| {
                let bytes = checkin_request(addr, token, client, k, ids);
                let marker = format!("BENCH-{client:03}-{k:08}");
                let at = bytes
                    .windows(marker.len())
                    .position(|w| w == marker.as_bytes())
                    .expect("device name in the request")
                    + marker.len()
                    - 8;
                (bytes, at)
            })
            .collect();
        let this = Self { templates };
        for device in [0, 7, 59, 60, 12_345, 99_999_999] {
            assert_eq!(
                this.request(device),
                checkin_request(addr, token, client, device, ids),
                "template of device {device}"
            );
        }
        this
    }

    /// The same bytes as `checkin_request(.., device, ..)`.
    fn request(&self, device: u64) -> Vec<u8> {
        let (template, at) = &self.templates[(device % Self::PERIOD) as usize];
        let mut bytes = template.clone();
        let mut n = device % 100_000_000;
        for i in (0..8).rev() {
            bytes[at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        bytes
    }
}

/// Rows in the check-in tables (the latest reports, their applied-policy rows, and reports
/// logged but not applied to those yet), read straight from the database cirrus writes.
async fn stored_checkins(data_dir: &Path, pg: Option<&PgSchema>) -> (i64, i64, i64) {
    const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM client_checkins), (SELECT COUNT(*) FROM client_checkin_policies), (SELECT COUNT(*) FROM client_checkin_log)";
    match pg {
        Some(schema) => {
            let mut conn = pg_connect(&schema.url()).await.expect("PostgreSQL");
            let (rows, policies, mut pending): (i64, i64, i64) = sqlx::query_as(COUNTS)
                .fetch_one(&mut conn)
                .await
                .expect("count");
            // Since migration 0008 a batch per row (absent when an A/B run with
            // `CIRRUS_BENCH_CIRRUS` runs a cirrus from before it).
            let batched: bool =
                sqlx::query_scalar("SELECT to_regclass('client_checkin_log_batches') IS NOT NULL")
                    .fetch_one(&mut conn)
                    .await
                    .expect("the log's tables");
            if batched {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(SUM(reports), 0)::int8 FROM client_checkin_log_batches",
                )
                .fetch_one(&mut conn)
                .await
                .expect("count batches");
                pending += n;
            }
            let _ = conn.close().await;
            (rows, policies, pending)
        }
        None => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(data_dir.join(cirrus::config::DATABASE_FILE))
                .read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts)
                .await
                .expect("SQLite");
            let (rows, policies, mut pending): (i64, i64, i64) = sqlx::query_as(COUNTS)
                .fetch_one(&mut conn)
                .await
                .expect("count");
            // Reports logged in the check-in log's own file and not applied yet: one row per
            // batch (shard 1's mark), or, written by a cirrus from before batches (an A/B run
            // with `CIRRUS_BENCH_CIRRUS`), one row per report (shard 0's).
            let db = data_dir.join(cirrus::config::DATABASE_FILE);
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(cirrus::storage::sqlite_log::log_path(&db))
                .read_only(true);
            let mut log = sqlx::SqliteConnection::connect_with(&opts)
                .await
                .expect("check-in log file");
            let batches: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'client_checkin_log_batches')",
            )
            .fetch_one(&mut log)
            .await
            .expect("the log file's tables");
            let (shard, unapplied) = if batches {
                (
                    1,
                    "SELECT COALESCE(SUM(reports), 0) FROM client_checkin_log_batches WHERE seq > $1",
                )
            } else {
                (0, "SELECT COUNT(*) FROM client_checkin_log WHERE seq > $1")
            };
            let applied: i64 = sqlx::query_scalar(
                "SELECT COALESCE((SELECT applied_seq FROM client_checkin_log_shards WHERE shard = $1), 0)",
            )
            .bind(shard)
            .fetch_one(&mut conn)
            .await
            .expect("applied mark");
            let n: i64 = sqlx::query_scalar(unapplied)
                .bind(applied)
                .fetch_one(&mut log)
                .await
                .expect("count the log file");
            pending += n;
            let _ = log.close().await;
            let _ = conn.close().await;
            (rows, policies, pending)
        }
    }
}

/// CPU time (user + system) process `pid` has used so far, from `/proc` (Linux only).
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the `(comm)` field: state is field 3, utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In clock ticks of USER_HZ, which the kernel fixes at 100 for this interface.
    Some(Duration::from_millis(ticks * 10))
}

/// Microseconds of the CPU time from `from` to `to` per one of `n` requests.
fn micros_each(from: Duration, to: Duration, n: u64) -> f64 {
    to.saturating_sub(from).as_secs_f64() * 1e6 / n.max(1) as f64
}

/// CPU time used so far by every process named `postgres` (the local server's backends).
fn postgres_cpu_time() -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "postgres")
        })
        .filter_map(|pid| cpu_time(&pid))
        .sum()
}

/// One measured run of single-row commits: commits per second and latency.
struct Commits {
    rate: f64,
    p50_us: u32,
    p99_us: u32,
}

/// Calls `commit(n)` (one single-row transaction each) back to back for the warm-up plus the
/// measured window; counts the measured ones.
async fn commit_loop(cfg: &Config, mut commit: impl AsyncFnMut(i64)) -> Commits {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cfg.warmup_secs);
    let end = measure_from + Duration::from_secs_f64(cfg.secs);
    let mut samples: Vec<u32> = Vec::new();
    let mut n = 0i64;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        commit(n).await;
        n += 1;
        if t0 >= measure_from {
            samples.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| -> u32 {
        if samples.is_empty() {
            return 0;
        }
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[i - 1]
    };
    Commits {
        rate: samples.len() as f64 / cfg.secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// A row about the size of a check-in's.
const COMMIT_TABLE: &str = "CREATE TABLE {table} (tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, device_key TEXT NOT NULL, checkin_date_time BIGINT NOT NULL, applied_policies TEXT NOT NULL, PRIMARY KEY (tenant_id, user_id, device_key))";
const COMMIT_INSERT: &str = "INSERT INTO {table} (tenant_id, user_id, device_key, checkin_date_time, applied_policies) VALUES ($1, $2, $3, $4, $5)";
const COMMIT_APPLIED: &str = r#"["6a1e0000-0000-4000-8000-000000000001","6a1e0000-0000-4000-8000-000000000002","6a1e0000-0000-4000-8000-000000000003"]"#;

/// The single-row commit rate of the database cirrus runs on, on this machine: for SQLite a
/// fresh file in a temporary directory (next to cirrus's) opened with cirrus's settings, for
/// PostgreSQL a fresh table in the benchmark's schema; one connection, one INSERT per
/// transaction.
/// `table` names the PostgreSQL table (a fresh one per call).
async fn single_row_commits(cfg: &Config, pg: Option<&PgSchema>, table: &str) -> Commits {
    let device = |n: i64| format!("bench-{n:010}");
    let create = COMMIT_TABLE.replace("{table}", table);
    let insert = COMMIT_INSERT.replace("{table}", table);
    match pg {
        Some(schema) => {
            let mut conn = pg_connect(&schema.url()).await.expect("PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(create.as_str()))
                .execute(&mut conn)
                .await
                .expect("create table");
            let c = commit_loop(cfg, async |n| {
                sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                    .bind("bench")
                    .bind("00000000-0000-4000-8000-000000000001")
                    .bind(device(n))
                    .bind(n)
                    .bind(COMMIT_APPLIED)
                    .execute(&mut conn)
                    .await
                    .expect("insert");
            })
            .await;
            let _ = conn.close().await;
            c
        }
        None => {
            let tmp = tempfile::tempdir().expect("tempdir");
            // The settings of src/storage/sqlite.rs.
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(tmp.path().join("commits.sqlite3"))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let mut conn = sqlx::SqliteConnection::connect_with(&opts)
                .await
                .expect("SQLite");
            sqlx::query(sqlx::AssertSqlSafe(create.as_str()))
                .execute(&mut conn)
                .await
                .expect("create table");
            let c = commit_loop(cfg, async |n| {
                sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                    .bind("bench")
                    .bind("00000000-0000-4000-8000-000000000001")
                    .bind(device(n))
                    .bind(n)
                    .bind(COMMIT_APPLIED)
                    .execute(&mut conn)
                    .await
                    .expect("insert");
            })
            .await;
            let _ = conn.close().await;
            c
        }
    }
}

/// Check-in ingestion on one engine: acknowledged check-ins per second from concurrent
/// clients, against the engine's single-row commit rate.
async fn checkins_run(cfg: &Config, pg: Option<&PgSchema>) {
    let engine = engine_name(pg);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let url = pg.map(PgSchema::url);
    let (cirrus_proc, cirrus) = start_cirrus(&data_dir, url.as_deref());
    wait_healthy(cirrus, "cirrus").await;
    let admin = mint_token(&data_dir);

    // A few configurations for the check-ins to name.
    let mut ids = Vec::new();
    for i in 0..CHECKIN_CONFIGS {
        let body = json!({
            "@odata.type": "#microsoft.graph.windowsOfficeClientConfiguration",
            "displayName": format!("checkin-{i:02}"),
            "policyPayload": base64::engine::general_purpose::STANDARD.encode(format!(r#"{{"common.updateChannel":"Current","n":{i}}}"#)),
        })
        .to_string();
        let (_, created) = expect(
            cirrus,
            &request("POST", cirrus, CONFIGS_PATH, &admin, Some(&body)),
            201,
            "create configuration",
        )
        .await;
        let created: Value = serde_json::from_slice(&created).expect("created JSON");
        ids.push(created["id"].as_str().expect("id").to_string());
    }
    let ids: Arc<[String]> = ids.into();

    // One user (token) per client; by default every check-in is for a new device of that user,
    // so every acknowledged check-in must be a row of its own afterwards.
    let clients = cfg.checkin_clients;
    let tokens: Vec<String> = (0..clients)
        .map(|c| {
            mint(
                &data_dir,
                &TokenRequest {
                    tenant: "bench".into(),
                    user: Some(format!("00000000-0000-4000-8000-{:012}", 6000 + c)),
                    upn: Some(format!("client{c:03}@contoso.example")),
                    scopes: Some("openid".into()),
                    roles: None,
                    groups: Some(bench_group(c % 8)),
                    expires_in: 24 * 3600,
                },
            )
        })
        .collect();
    // The clients' connections to `addr` (cirrus, or the bare handler: the same requests).
    let conns_to = |addr: SocketAddr| -> Vec<(usize, SocketAddr, Requests)> {
        tokens
            .iter()
            .enumerate()
            .map(|(c, token)| {
                let templates = CheckinTemplates::new(addr, token, c, &ids);
                let devices = cfg.checkin_devices;
                let mut seq = 0u64;
                let next = move || {
                    seq += 1;
                    let device = if devices == 0 { seq } else { seq % devices };
                    templates.request(device)
                };
                (0, addr, Requests::Each(Box::new(next)))
            })
            .collect()
    };
    // A first check-in, to see the shape is accepted.
    let probe = {
        let probe = checkin_request(cirrus, &admin, 0, 0, &ids);
        let stored = expect_reply(cirrus, &probe, 201, "probe check-in").await;
        let v: Value = serde_json::from_slice(&stored.body).expect("check-in JSON");
        assert_eq!(v["deviceName"], "BENCH-000-00000000", "{v}");
        stored
    };

    // The single-row commit rate right before and right after the check-ins: on a shared
    // machine the storage's speed drifts, and both ends show by how much.
    eprintln!("running single-row commits on {engine} (before) ...");
    let before = single_row_commits(cfg, pg, "bench_commits_before").await;
    eprintln!("running check-ins against cirrus ({engine}) ...");
    // CPU per check-in, by process: steadier than the rate on a shared machine.
    let cirrus_pid = cirrus_proc.child.id().to_string();
    let cpu_before = (cpu_time(&cirrus_pid), postgres_cpu_time(), cpu_time("self"));
    let acked = load_conns(cfg, 1, conns_to(cirrus), 201).await;
    let cpu_after = (cpu_time(&cirrus_pid), postgres_cpu_time(), cpu_time("self"));
    // Reports are acknowledged once logged; a Graph read of the views applies whatever the
    // materializer has not yet, so it shows them all.
    let (_, _, pending) = stored_checkins(&data_dir, pg).await;
    let read_started = Instant::now();
    let (_, office) = expect(
        cirrus,
        &request("GET", cirrus, SINGLETON_PATH, &admin, None),
        200,
        "singleton",
    )
    .await;
    let read_took = read_started.elapsed();
    let office: Value = serde_json::from_slice(&office).expect("singleton JSON");
    let (rows, policy_rows, left) = stored_checkins(&data_dir, pg).await;
    let summary = &office["tenantUserCheckinSummary"];
    eprintln!("running single-row commits on {engine} (after) ...");
    let after = single_row_commits(cfg, pg, "bench_commits_after").await;

    // The same clients against a bare axum handler that reads each check-in and answers
    // cirrus's `201` body, storing nothing: the HTTP ceiling of this machine (the load
    // generator shares its cores), and its CPU per request.
    eprintln!("running check-ins against the bare handler ...");
    let doc_dir = tmp.path().join("bare");
    std::fs::create_dir_all(&doc_dir).expect("doc dir");
    std::fs::write(doc_dir.join("checkin.body"), &probe.body).expect("checkin.body");
    std::fs::write(
        doc_dir.join("checkin.content-type"),
        probe
            .content_type
            .as_deref()
            .expect("check-in content type"),
    )
    .expect("checkin.content-type");
    let (bare_proc, bare) = start_bare(&doc_dir);
    let bare_pid = bare_proc.child.id().to_string();
    let bare_cpu_before = (cpu_time(&bare_pid), cpu_time("self"));
    let bare_run = load_conns(cfg, 1, conns_to(bare), 201).await;
    let bare_cpu_after = (cpu_time(&bare_pid), cpu_time("self"));
    drop(bare_proc);

    println!(
        "== Check-in ingestion: POST {CHECKINS_PATH} from {clients} clients (cirrus on {engine}) vs single-row commits =="
    );
    match pg {
        Some(schema) => println!(
            "PostgreSQL {} at {}, schema {}; cirrus's check-in writer: 1 (its default; \
             PostgreSQL's applying is one stream too); single-row commits: a fresh table in the same schema, one connection",
            schema.server_version().await.unwrap_or_else(|| "?".into()),
            redact(&schema.admin_url),
            schema.name
        ),
        None => println!(
            "SQLite (WAL, synchronous=FULL) in a temporary directory; cirrus's check-in writer: 1 \
             (to the log's own file, applied by a connection of its own); \
             single-row commits: a fresh file in another temporary directory with cirrus's \
             settings, one connection"
        ),
    }
    let devices = match cfg.checkin_devices {
        0 => "every check-in names a new device of its user".to_string(),
        n => format!("each user reports for {n} devices in turn (updates once each was seen)"),
    };
    println!(
        "cirrus at http://{cirrus}; {clients} keep-alive connections, one user token each; \
         {devices}, and {APPLIED_PER_CHECKIN} of {CHECKIN_CONFIGS} configurations as applied; \
         only 201 responses count"
    );
    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>8}",
        "workload", "per s", "p50", "p99", "errors"
    );
    println!("{}", "-".repeat(82));
    println!(
        "{:<40} {:>10.0} {:>10} {:>10} {:>8}",
        "acknowledged check-ins (201)",
        acked.rps,
        fmt_ms(acked.p50_us),
        fmt_ms(acked.p99_us),
        acked.errors
    );
    println!(
        "{:<40} {:>10.0} {:>10} {:>10} {:>8}",
        "bare handler, no storage (201)",
        bare_run.rps,
        fmt_ms(bare_run.p50_us),
        fmt_ms(bare_run.p99_us),
        bare_run.errors
    );
    for (name, c) in [
        ("single-row commits, 1 conn. (before)", &before),
        ("single-row commits, 1 conn. (after)", &after),
    ] {
        println!(
            "{:<40} {:>10.0} {:>10} {:>10} {:>8}",
            name,
            c.rate,
            fmt_ms(c.p50_us),
            fmt_ms(c.p99_us),
            0
        );
    }
    let mut details = Vec::new();
    for (kind, n) in &acked.error_kinds {
        details.push(format!("  check-ins: {n} x {kind}"));
    }
    for (kind, n) in &bare_run.error_kinds {
        details.push(format!("  bare handler: {n} x {kind}"));
    }
    print_errors(details);
    // By default every acknowledged check-in (the probe's too) named a device of its own;
    // with devices in turn, every client has reported for each of its devices.
    let acked_all = i64::try_from(acked.succeeded_total + 1).unwrap_or(i64::MAX);
    let expected_rows = match cfg.checkin_devices {
        0 => acked_all,
        n => i64::try_from(clients as u64 * n + 1)
            .unwrap_or(i64::MAX)
            .min(acked_all),
    };
    let verdict = match rows.cmp(&expected_rows) {
        std::cmp::Ordering::Equal if cfg.checkin_devices == 0 => {
            "every acknowledged check-in is stored".to_string()
        }
        std::cmp::Ordering::Equal => {
            format!("the latest check-in of each of the {expected_rows} devices is stored")
        }
        std::cmp::Ordering::Greater => {
            "more rows than acknowledgements (responses cut off at the deadline)".to_string()
        }
        std::cmp::Ordering::Less => {
            format!(
                "{} ACKNOWLEDGED CHECK-INS ARE MISSING",
                expected_rows - rows
            )
        }
    };
    println!();
    println!(
        "stored after the run: {rows} check-in rows ({policy_rows} applied-policy rows) for \
         {acked_all} check-ins acknowledged in all (warm-up and the probe included): {verdict}"
    );
    println!(
        "at the end of the run {pending} acknowledged reports were logged but not yet applied to \
         the view tables; the Graph read of the singleton that followed applied them and took \
         {:.1} ms ({left} left after it)",
        read_took.as_secs_f64() * 1000.0
    );
    println!(
        "Graph tenantUserCheckinSummary: {} succeeded, {} failed (distinct users by their latest \
         check-in: the {clients} clients plus the probe's user)",
        summary["succeededUserCount"], summary["failedUserCount"]
    );
    if let ((Some(c0), p0, Some(l0)), (Some(c1), p1, Some(l1))) = (cpu_before, cpu_after) {
        let per = |a, b| micros_each(a, b, acked.succeeded_total);
        let (c, p, l) = (per(c0, c1), per(p0, p1), per(l0, l1));
        println!(
            "CPU per acknowledged check-in (user + system, /proc, warm-up included): cirrus \
             {c:.0} µs, PostgreSQL server processes {p:.0} µs, load generator {l:.0} µs; \
             {:.0} µs in all",
            c + p + l
        );
    }
    if let ((Some(b0), Some(l0)), (Some(b1), Some(l1))) = (bare_cpu_before, bare_cpu_after) {
        let per = |a, b| micros_each(a, b, bare_run.succeeded_total);
        let (b, l) = (per(b0, b1), per(l0, l1));
        println!(
            "CPU per request of the bare handler (same measure): bare server {b:.0} µs, load \
             generator {l:.0} µs; {:.0} µs in all",
            b + l
        );
    }
    let base = (before.rate + after.rate) / 2.0;
    let ratio = if base > 0.0 { acked.rps / base } else { 0.0 };
    let bare_ratio = if base > 0.0 { bare_run.rps / base } else { 0.0 };
    println!();
    println!(
        "acknowledged check-ins / single-row commits (mean of before and after, {base:.0}/s) \
         ({engine}): {ratio:.2}x"
    );
    println!(
        "the bare handler (no storage) / single-row commits: {bare_ratio:.2}x; cirrus at {:.1} % \
         of the bare handler",
        if bare_run.rps > 0.0 {
            100.0 * acked.rps / bare_run.rps
        } else {
            0.0
        }
    );
    println!(
        "target (issue 6): >= 5x: {}",
        if ratio >= 5.0 { "MET" } else { "NOT MET" }
    );
}

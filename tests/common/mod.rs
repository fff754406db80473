//! Black-box test harness: starts the real `cirrus serve` binary on an ephemeral loopback
//! port with a fresh data directory and talks HTTP to it — on SQLite (a real file) or on
//! PostgreSQL (a fresh schema per server, when `CIRRUS_TEST_DATABASE_URL` is set).
//!
//! Every test runs on both engines through [`engine_tests!`]: the same test body, parametrised.
#![allow(dead_code)]

pub mod proxy;

use std::sync::atomic::{AtomicBool, Ordering};

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cirrus::auth::dev::{DevKey, TokenRequest, claims_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const READ_ALL: &str = "DeviceManagementConfiguration.Read.All";
pub const READ_WRITE_ALL: &str = "DeviceManagementConfiguration.ReadWrite.All";
pub const WINDOWS: &str = "#microsoft.graph.windowsOfficeClientConfiguration";
pub const SECURITY: &str = "#microsoft.graph.windowsOfficeClientSecurityConfiguration";

/// The storage engine a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    /// Set by [`engine_tests!`] for the duration of one test.
    pub static ENGINE: Engine;
}

/// The current test's engine (SQLite outside an `engine_tests!` scope).
pub fn engine() -> Engine {
    ENGINE.try_with(|e| *e).unwrap_or(Engine::Sqlite)
}

/// The PostgreSQL server the PostgreSQL half runs against, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("CIRRUS_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Says (once per test binary, on the real stderr so `cargo test` does not swallow it) that
/// the PostgreSQL half is skipped.
pub fn report_postgres_skipped() {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::SeqCst) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** PostgreSQL half SKIPPED: CIRRUS_TEST_DATABASE_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n"
        );
    }
}

/// A fresh, empty schema on the test PostgreSQL server; dropped with the value.
pub struct PgSchema {
    pub admin_url: String,
    pub name: String,
}

impl PgSchema {
    pub async fn create() -> PgSchema {
        let admin_url = postgres_url().expect("CIRRUS_TEST_DATABASE_URL");
        let name = format!("cirrus_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("connect to CIRRUS_TEST_DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&pool)
            .await
            .expect("create schema");
        pool.close().await;
        PgSchema { admin_url, name }
    }

    /// A database URL whose connections use only this schema.
    pub fn url(&self) -> String {
        self.url_via(None)
    }

    /// The same, through another host:port (e.g. a [`proxy::ChaosProxy`]).
    pub fn url_via(&self, host_port: Option<&str>) -> String {
        let mut url = self.admin_url.clone();
        if let Some(hp) = host_port {
            let scheme_end = url.find("://").map_or(0, |i| i + 3);
            let rest = &url[scheme_end..];
            let auth_end = rest.find('@').map_or(0, |i| i + 1);
            let host_end = rest[auth_end..]
                .find(['/', '?'])
                .map_or(rest.len(), |i| auth_end + i);
            url = format!(
                "{}{}{}{}",
                &url[..scheme_end],
                &rest[..auth_end],
                hp,
                &rest[host_end..]
            );
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options[search_path]={}", self.name)
    }

    /// host:port of the admin URL.
    pub fn host_port(&self) -> String {
        let url = &self.admin_url;
        let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
        let rest = &rest[rest.find('@').map_or(0, |i| i + 1)..];
        let hp = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if hp.contains(':') {
            hp.to_string()
        } else {
            format!("{hp}:5432")
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: clean up on a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&url).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE"
                )))
                .execute(&pool)
                .await
                .ok()?;
                pool.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// Runs each listed `async fn` (no arguments) as two tests, `NAME::sqlite` and
/// `NAME::postgres`; the PostgreSQL one is skipped (visibly) without `CIRRUS_TEST_DATABASE_URL`.
#[macro_export]
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    $crate::common::ENGINE.scope($crate::common::Engine::Sqlite, super::$name()).await
                }
                #[tokio::test]
                async fn postgres() {
                    if $crate::common::postgres_url().is_none() {
                        $crate::common::report_postgres_skipped();
                        return;
                    }
                    $crate::common::ENGINE.scope($crate::common::Engine::Postgres, super::$name()).await
                }
            }
        )*
    };
}

pub struct Server {
    pub pg: Option<std::sync::Arc<PgSchema>>,
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
    key: DevKey,
    extra_args: Vec<String>,
    pub client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Res {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts a Graph error envelope with this status and code; returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "error content type {ct}"
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {}", self.text);
        let msg = v["error"]["message"].as_str().expect("message").to_string();
        assert!(!msg.is_empty());
        let inner = &v["error"]["innerError"];
        assert!(
            inner["request-id"].is_string()
                && inner["client-request-id"].is_string()
                && inner["date"].is_string(),
            "innerError: {}",
            self.text
        );
        assert_eq!(inner["request-id"].as_str(), self.header("request-id"));
        msg
    }
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra_args: &[&str]) -> Server {
        let pg = match engine() {
            Engine::Sqlite => None,
            Engine::Postgres => Some(std::sync::Arc::new(PgSchema::create().await)),
        };
        Self::start_on(pg, None, extra_args).await
    }

    /// Starts a server on an existing PostgreSQL schema (`pg`), optionally sharing another
    /// server's data directory (and so its dev signing key) — for multi-instance tests.
    pub async fn start_on(
        pg: Option<std::sync::Arc<PgSchema>>,
        share_data_dir_of: Option<&Server>,
        extra_args: &[&str],
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = match share_data_dir_of {
            Some(other) => other.data_dir.clone(),
            None => dir.path().join("data"),
        };
        let mut extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        if let Some(schema) = &pg
            && !extra_args.iter().any(|a| a == "--database-url")
        {
            extra_args.push("--database-url".into());
            extra_args.push(schema.url());
        }
        let (child, base) = spawn(&data_dir, &extra_args).await;
        let key = DevKey::load_or_create(&data_dir).expect("dev key");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let server = Server {
            pg,
            child,
            base,
            data_dir,
            _dir: dir,
            key,
            extra_args,
            client,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        for _ in 0..100 {
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become healthy");
    }

    /// Kills the server process (SIGKILL: no graceful shutdown, so only what was made durable
    /// before each acknowledgement survives) and starts a new one on the same data directory.
    /// The new process listens on a new ephemeral port; `base` is updated.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, base) = spawn(&self.data_dir, &self.extra_args).await;
        self.child = child;
        self.base = base;
        self.wait_healthy().await;
    }

    /// The server's process id (e.g. to find its connections in `pg_stat_activity`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn token_with(&self, req: TokenRequest) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.key.mint(&claims_for(&req, now).unwrap()).unwrap()
    }

    /// Signs arbitrary claims with this server's dev key.
    pub fn mint(&self, claims: &cirrus::auth::dev::Claims) -> String {
        self.key.mint(claims).unwrap()
    }

    /// A delegated ReadWrite.All token for `tenant`.
    pub fn token(&self, tenant: &str) -> String {
        self.token_with(request(tenant))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/beta{}", self.base, path)
    }

    /// A request builder for `path` (under `/beta`), with the token if given.
    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res {
        let mut rb = self.client.request(method, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        Self::finish(rb).await
    }

    pub async fn finish(rb: reqwest::RequestBuilder) -> Res {
        let r = rb.send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        Res {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Res {
        self.send(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Res {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Res {
        self.send(Method::PATCH, path, Some(token), Some(body))
            .await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Res {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a configuration; returns its JSON.
    pub async fn create(&self, token: &str, body: Value) -> Value {
        let r = self
            .post("/officeConfiguration/clientConfigurations", token, body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create failed: {}", r.text);
        r.json()
    }

    pub async fn create_windows(&self, token: &str, name: &str) -> Value {
        self.create(token, json!({"@odata.type": WINDOWS, "displayName": name}))
            .await
    }

    /// Everything the tenant has, for "stored data did not change" checks.
    pub async fn snapshot(&self, token: &str) -> Value {
        let single = self.get("/officeConfiguration", token).await.json();
        let list = self
            .get("/officeConfiguration/clientConfigurations", token)
            .await
            .json();
        let mut assignments = serde_json::Map::new();
        for c in list["value"].as_array().unwrap() {
            let id = c["id"].as_str().unwrap();
            let a = self
                .get(
                    &format!("/officeConfiguration/clientConfigurations/{id}/assignments"),
                    token,
                )
                .await
                .json();
            assignments.insert(id.to_string(), a["value"].clone());
        }
        json!({"singleton": single, "configurations": list["value"], "assignments": assignments})
    }
}

/// Starts `cirrus serve` on an ephemeral port; returns the process and its base URL.
///
/// Throttling is OFF by default here: several suites send far more than Intune's 100 writes per
/// 20 s per app (the paging tests create 250 configurations). A test that exercises throttling
/// passes `--throttle on` (and usually low limits) itself — see tests/throttle.rs.
async fn spawn(data_dir: &std::path::Path, extra_args: &[String]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cirrus"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir);
    if !extra_args.iter().any(|a| a == "--throttle") {
        cmd.arg("--throttle").arg("off");
    }
    let mut child = cmd
        .args(extra_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cirrus");
    let stdout = child.stdout.take().expect("stdout");
    // Read the first line, then keep draining stdout so later prints never hit a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let first = tokio::task::spawn_blocking(move || rx.recv().unwrap_or_default())
        .await
        .expect("join");
    // "cirrus listening on http://127.0.0.1:PORT/beta (data in ...)"
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in start-up line: {first:?}"))
        .trim_end_matches("/beta")
        .to_string();
    (child, url)
}

pub const CONFIGS: &str = "/officeConfiguration/clientConfigurations";

/// The path of one configuration.
pub fn cfg(id: &str) -> String {
    format!("{CONFIGS}/{id}")
}

/// The `id` of an entity as a string.
pub fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

pub fn request(tenant: &str) -> TokenRequest {
    TokenRequest {
        tenant: tenant.into(),
        user: None,
        upn: Some("admin@contoso.example".into()),
        scopes: None,
        roles: None,
        groups: None,
        expires_in: 3600,
    }
}

pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn group_target(group: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.officeConfigurationGroupAssignmentTarget", "groupId": group})
}

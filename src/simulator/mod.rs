//! `cirrus client …`: an Office-client simulator. `policy` and `checkin` make one request each
//! (demos, scripts, debugging a deployment); `load` drives many simulated users and devices at a
//! server the way real clients do (fetch the policy with `If-None-Match`, apply, report).
//!
//! It speaks only HTTP to the server, like a real client: nothing here reads the server's state.

pub mod load;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::{StatusCode, header};
use serde::Serialize;
use serde_json::Value;

pub const POLICY_PATH: &str = "/cirrus/v1/client/policy";
pub const CHECKINS_PATH: &str = "/cirrus/v1/client/checkins";

/// `cirrus client …`.
#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Fetch the calling user's effective policy: the document on stdout, its ETag on stderr.
    Policy {
        #[command(flatten)]
        conn: Connection,
        /// Send `If-None-Match` with this ETag (a match answers 304, "not modified").
        #[arg(long, value_name = "ETAG")]
        if_none_match: Option<String>,
    },
    /// Report one check-in (POST /cirrus/v1/client/checkins) and print the stored status.
    Checkin(CheckinArgs),
    /// Drive simulated users and devices at a server (load tests); prints a summary.
    Load(load::LoadArgs),
}

/// Where to send a single request, and as whom.
#[derive(clap::Args)]
pub struct Connection {
    /// Server root, e.g. http://127.0.0.1:8080 (a trailing /beta is ignored).
    #[arg(long, env = "CIRRUS_URL")]
    pub url: String,
    /// A delegated (user) access token, e.g. from `cirrus token --groups …`.
    #[arg(long, env = "CIRRUS_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(clap::Args)]
pub struct CheckinArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// The device's name (`deviceName`).
    #[arg(long)]
    pub device_name: String,
    /// `devicePlatform`.
    #[arg(long, default_value = "Windows")]
    pub platform: String,
    /// `devicePlatformVersion`.
    #[arg(long, default_value = "10.0.22631")]
    pub platform_version: String,
    /// Report a failed check-in (`wasSuccessful: false`).
    #[arg(long)]
    pub failed: bool,
    /// `errorMessage` of a failed check-in.
    #[arg(long, requires = "failed", value_name = "MSG")]
    pub error_message: Option<String>,
    /// `lastTaskName`.
    #[arg(long, value_name = "T")]
    pub last_task_name: Option<String>,
    /// A configuration id reported in `appliedPolicies` (repeatable).
    #[arg(long = "applied", value_name = "ID")]
    pub applied: Vec<String>,
    /// Fetch the policy first and report its configurations as `appliedPolicies`
    /// (the real client loop: fetch, apply, report).
    #[arg(long, conflicts_with = "applied")]
    pub from_policy: bool,
}

/// The check-in body (`POST /cirrus/v1/client/checkins`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkin {
    pub device_name: String,
    pub device_platform: String,
    pub device_platform_version: String,
    pub was_successful: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub applied_policies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_task_name: Option<String>,
}

/// Runs one `cirrus client` command. `default_tenant` is the tenant `load` mints tokens for
/// when `--tenant` is not given (the one `cirrus serve` prints a token for).
pub async fn run(cmd: ClientCommand, default_tenant: &str) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Policy {
            conn,
            if_none_match,
        } => policy(conn, if_none_match).await,
        ClientCommand::Checkin(args) => checkin(args).await,
        ClientCommand::Load(args) => load::run(args, default_tenant).await,
    }
}

async fn policy(conn: Connection, if_none_match: Option<String>) -> anyhow::Result<()> {
    let target = Target::parse(&conn.url)?;
    let client = http_client(1)?;
    let reply = get_policy(&client, &target, &conn.token, if_none_match.as_deref())
        .await
        .with_context(|| format!("GET {}", target.url(POLICY_PATH)))?;
    if let Some(etag) = &reply.etag {
        eprintln!("ETag: {etag}");
    }
    if reply.status == StatusCode::NOT_MODIFIED {
        eprintln!("not modified (304): the policy still matches that ETag");
        return Ok(());
    }
    anyhow::ensure!(reply.status.is_success(), "{}", reply.error_summary());
    println!("{}", serde_json::to_string_pretty(&reply.json()?)?);
    Ok(())
}

async fn checkin(args: CheckinArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.conn.url)?;
    let client = http_client(1)?;
    let token = &args.conn.token;
    let applied = if args.from_policy {
        let reply = get_policy(&client, &target, token, None)
            .await
            .with_context(|| format!("GET {}", target.url(POLICY_PATH)))?;
        anyhow::ensure!(
            reply.status.is_success(),
            "fetching the policy: {}",
            reply.error_summary()
        );
        configuration_ids(&reply.json()?)
    } else {
        args.applied
    };
    let body = Checkin {
        device_name: args.device_name,
        device_platform: args.platform,
        device_platform_version: args.platform_version,
        was_successful: !args.failed,
        error_message: args.error_message,
        applied_policies: applied,
        last_task_name: args.last_task_name,
    };
    let reply = post_checkin(&client, &target, token, &body)
        .await
        .with_context(|| format!("POST {}", target.url(CHECKINS_PATH)))?;
    anyhow::ensure!(reply.status.is_success(), "{}", reply.error_summary());
    if reply.body.is_empty() {
        eprintln!("checked in ({})", reply.status);
    } else {
        println!("{}", serde_json::to_string_pretty(&reply.json()?)?);
    }
    Ok(())
}

/// The ids of a policy document's `configurations`, in its order (highest priority first).
pub fn configuration_ids(policy: &Value) -> Vec<String> {
    policy["configurations"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A server root: `http(s)://host[:port][/prefix]`, without `/beta` or a trailing slash.
#[derive(Debug, Clone)]
pub struct Target {
    url: reqwest::Url,
    root: String,
}

impl Target {
    /// Accepts the server root or the Graph base URL (`…/beta`, as `cirrus serve` prints it).
    pub fn parse(input: &str) -> anyhow::Result<Target> {
        let mut url = reqwest::Url::parse(input.trim())
            .with_context(|| format!("--url {input:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "--url must be an http:// or https:// URL, not {input:?}"
        );
        anyhow::ensure!(
            url.host_str().is_some_and(|h| !h.is_empty()),
            "--url {input:?} has no host"
        );
        anyhow::ensure!(
            url.query().is_none() && url.fragment().is_none(),
            "--url must be the server root, without a query or fragment"
        );
        let mut path = url.path().trim_end_matches('/').to_string();
        let cut = path.len().saturating_sub("/beta".len());
        if path
            .get(cut..)
            .is_some_and(|t| t.eq_ignore_ascii_case("/beta"))
        {
            path.truncate(cut);
        }
        url.set_path(&path);
        let root = url.as_str().trim_end_matches('/').to_string();
        Ok(Target { url, root })
    }

    /// The full URL of an API path (`/cirrus/v1/…`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// True for `localhost` and loopback addresses (127.0.0.0/8, ::1, ::ffff:127.x.y.z).
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.trim_end_matches('.').eq_ignore_ascii_case("localhost") {
            return true;
        }
        match bare.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.is_loopback(),
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Err(_) => false,
        }
    }
}

/// The one HTTP client of a command; keeps up to `connections` idle connections per host.
pub fn http_client(connections: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("cirrus-client/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(connections)
        .build()
        .context("building the HTTP client")
}

/// A server's answer, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub etag: Option<String>,
    /// `Retry-After` in seconds (the form cirrus and Graph send); HTTP dates are not read.
    pub retry_after: Option<Duration>,
    pub body: bytes::Bytes,
}

impl Reply {
    pub async fn read(res: reqwest::Response) -> reqwest::Result<Reply> {
        let status = res.status();
        let text = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = text(header::ETAG);
        let retry_after = text(header::RETRY_AFTER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = res.bytes().await?;
        Ok(Reply {
            status,
            etag,
            retry_after,
            body,
        })
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the server's {} answer is not JSON: {}",
                self.status,
                snippet(&self.body)
            )
        })
    }

    /// `code: message` from a Graph error envelope; the status and the start of the body when
    /// the answer is not one (a proxy's error page, say).
    pub fn error_summary(&self) -> String {
        let envelope = serde_json::from_slice::<Value>(&self.body).ok();
        let error = envelope.as_ref().map(|v| &v["error"]);
        let mut out = match error.map(|e| (e["code"].as_str(), e["message"].as_str())) {
            Some((Some(code), Some(message))) => format!("{code}: {message}"),
            Some((Some(code), None)) => code.to_string(),
            _ => format!("HTTP {}: {}", self.status, snippet(&self.body)),
        };
        if let Some(after) = self.retry_after {
            out.push_str(&format!(" (Retry-After: {} s)", after.as_secs()));
        }
        out
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_string(),
    }
}

/// `GET /cirrus/v1/client/policy`, with `If-None-Match` when an ETag is known.
pub async fn get_policy(
    client: &reqwest::Client,
    target: &Target,
    token: &str,
    if_none_match: Option<&str>,
) -> reqwest::Result<Reply> {
    let mut req = client
        .get(target.url(POLICY_PATH))
        .bearer_auth(token)
        .header("client-request-id", uuid::Uuid::new_v4().to_string());
    if let Some(etag) = if_none_match {
        req = req.header(header::IF_NONE_MATCH, etag);
    }
    Reply::read(req.send().await?).await
}

/// `POST /cirrus/v1/client/checkins`.
pub async fn post_checkin(
    client: &reqwest::Client,
    target: &Target,
    token: &str,
    body: &Checkin,
) -> reqwest::Result<Reply> {
    let res = client
        .post(target.url(CHECKINS_PATH))
        .bearer_auth(token)
        .header("client-request-id", uuid::Uuid::new_v4().to_string())
        .json(body)
        .send()
        .await?;
    Reply::read(res).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_accepts_the_root_and_the_graph_base() {
        for (input, root) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/beta", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/beta/", "http://127.0.0.1:8080"),
            (
                "https://graph.example.com/tenant-x/BETA",
                "https://graph.example.com/tenant-x",
            ),
            (" http://localhost:1/ ", "http://localhost:1"),
        ] {
            let t = Target::parse(input).unwrap();
            assert_eq!(t.root(), root, "{input}");
        }
        assert_eq!(
            Target::parse("http://h:1/beta").unwrap().url(POLICY_PATH),
            "http://h:1/cirrus/v1/client/policy"
        );
        for bad in [
            "",
            "127.0.0.1:8080",
            "ftp://h/",
            "http://h/?x=1",
            "not a url",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://127.0.0.1:1",
            "http://127.9.8.7",
            "http://localhost:8080",
            "http://LOCALHOST.",
            "http://[::1]:8080",
            "http://[::ffff:127.0.0.1]:1",
        ] {
            assert!(Target::parse(url).unwrap().is_loopback(), "{url}");
        }
        for url in [
            "http://192.0.2.1:1",
            "http://10.0.0.1",
            "http://0.0.0.0:8080",
            "http://[::]:1",
            "http://example.com",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
        ] {
            assert!(!Target::parse(url).unwrap().is_loopback(), "{url}");
        }
    }

    #[test]
    fn error_summary_reads_the_envelope() {
        let reply = |status: u16, body: &'static str, retry: Option<u64>| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            etag: None,
            retry_after: retry.map(Duration::from_secs),
            body: bytes::Bytes::from_static(body.as_bytes()),
        };
        assert_eq!(
            reply(
                403,
                r#"{"error":{"code":"Forbidden","message":"No."}}"#,
                None
            )
            .error_summary(),
            "Forbidden: No."
        );
        assert_eq!(
            reply(
                429,
                r#"{"error":{"code":"TooManyRequests","message":"Slow down."}}"#,
                Some(7)
            )
            .error_summary(),
            "TooManyRequests: Slow down. (Retry-After: 7 s)"
        );
        assert_eq!(
            reply(502, "<html>bad gateway</html>", None).error_summary(),
            "HTTP 502 Bad Gateway: <html>bad gateway</html>"
        );
        assert_eq!(
            reply(500, "", None).error_summary(),
            "HTTP 500 Internal Server Error: (empty body)"
        );
    }

    #[test]
    fn checkin_body_matches_the_contract() {
        let body = Checkin {
            device_name: "PC-1".into(),
            device_platform: "Windows".into(),
            device_platform_version: "10.0.22631".into(),
            was_successful: true,
            error_message: None,
            applied_policies: vec!["a".into()],
            last_task_name: Some("Sync".into()),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"deviceName": "PC-1", "devicePlatform": "Windows",
                "devicePlatformVersion": "10.0.22631", "wasSuccessful": true,
                "appliedPolicies": ["a"], "lastTaskName": "Sync"})
        );
    }

    #[test]
    fn configuration_ids_in_policy_order() {
        let doc = serde_json::json!({"configurations": [{"id": "b"}, {"id": "a"}, {"x": 1}]});
        assert_eq!(configuration_ids(&doc), ["b", "a"]);
        assert!(configuration_ids(&serde_json::json!({})).is_empty());
    }
}

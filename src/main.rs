use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use cirrus::auth::dev::{DevKey, TokenRequest, claims_for};
use cirrus::config::{AuthMode, ServeConfig};
use cirrus::http::HttpConfig;

/// glibc's allocator spent about a tenth of the service's CPU under check-in load (malloc and
/// free across worker threads); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The tenant of the token `cirrus serve` prints on start.
const DEV_TENANT: &str = "00000000-0000-0000-0000-00000000c1a5";
const DEV_USER: &str = "00000000-0000-0000-0000-0000000000a1";

#[derive(Parser)]
#[command(
    name = "cirrus",
    version,
    about = "Self-hosted Microsoft Graph (beta) officeConfiguration service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "CIRRUS_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory for the database and the dev signing secret.
        #[arg(long, env = "CIRRUS_DATA_DIR", default_value = "./cirrus-data")]
        data_dir: PathBuf,
        /// Public base URL (e.g. https://graph.example.com) used in @odata.context, Location
        /// and nextLink when a proxy does not send X-Forwarded-Proto/Host.
        #[arg(long, env = "CIRRUS_PUBLIC_URL")]
        public_url: Option<String>,
        /// Database: postgres://USER@HOST/DB for the scale-out engine. Default: SQLite in the data directory.
        #[arg(long, env = "CIRRUS_DATABASE_URL")]
        database_url: Option<String>,
        /// Do not apply pending migrations on start (run `cirrus migrate` instead).
        #[arg(long, env = "CIRRUS_SKIP_MIGRATIONS")]
        skip_migrations: bool,
        /// Largest accepted request body, in bytes.
        #[arg(long, env = "CIRRUS_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Most statuses shown in tenantCheckinStatuses / checkinStatuses (newest first).
        #[arg(long, env = "CIRRUS_CHECKIN_STATUS_CAP", default_value_t = cirrus::domain::DEFAULT_STATUS_CAP,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(cirrus::domain::MAX_STATUS_CAP)))]
        checkin_status_cap: u32,
        /// Test hook (dev mode only): a file holding seconds added to the clock.
        #[arg(long, hide = true)]
        clock_offset_file: Option<PathBuf>,
        #[command(flatten)]
        throttle: ThrottleArgs,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, env = "CIRRUS_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, env = "CIRRUS_DATA_DIR", default_value = "./cirrus-data")]
        data_dir: PathBuf,
    },
    /// Print a signed dev-mode token (only the token, on stdout).
    Token {
        #[arg(long, env = "CIRRUS_DATA_DIR", default_value = "./cirrus-data")]
        data_dir: PathBuf,
        /// Tenant id (the token's `tid`).
        #[arg(long)]
        tenant: String,
        /// User object id (`oid`); random if omitted.
        #[arg(long)]
        user: Option<String>,
        /// User principal name (`upn`).
        #[arg(long)]
        upn: Option<String>,
        /// Delegated permissions (`scp`), space-separated. Default: DeviceManagementConfiguration.ReadWrite.All.
        #[arg(long)]
        scopes: Option<String>,
        /// Application permissions (`roles`), space-separated; makes an application token.
        #[arg(long)]
        roles: Option<String>,
        /// Group object ids (`groups`), space-separated.
        #[arg(long)]
        groups: Option<String>,
        /// Lifetime in seconds; negative mints an already-expired token.
        #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
        expires_in: i64,
    },
    /// Office-client simulator: fetch the policy, report a check-in, or drive load.
    Client {
        #[command(subcommand)]
        command: cirrus::simulator::ClientCommand,
    },
}

/// Identity: `dev` (zero setup) or `jwt` (production, tokens from an identity provider).
#[derive(clap::Args)]
struct AuthArgs {
    /// Identity mode: dev (HS256 tokens from `cirrus token`) or jwt (RS256/ES256 tokens from an
    /// identity provider such as Entra ID, verified against its JWKS).
    #[arg(long = "auth", env = "CIRRUS_AUTH", value_enum, default_value_t = AuthModeArg::Dev)]
    mode: AuthModeArg,
    /// jwt mode: URL of the identity provider's JWKS
    /// (Entra: https://login.microsoftonline.com/common/discovery/v2.0/keys).
    #[arg(long, env = "CIRRUS_JWKS_URL", conflicts_with = "jwks_file")]
    jwks_url: Option<String>,
    /// jwt mode: a JWKS file instead of a URL.
    #[arg(long, env = "CIRRUS_JWKS_FILE")]
    jwks_file: Option<PathBuf>,
    /// jwt mode: accepted issuer (repeatable; comma-separated in the variable); `{tenantid}`
    /// must equal the token's `tid`. Default: Entra's v1 and v2 issuers.
    #[arg(long = "issuer", env = "CIRRUS_ISSUER", value_delimiter = ',')]
    issuers: Vec<String>,
    /// jwt mode: accepted audience (repeatable; comma-separated in the variable).
    /// Default: https://graph.microsoft.com and 00000003-0000-0000-c000-000000000000.
    #[arg(long = "audience", env = "CIRRUS_AUDIENCE", value_delimiter = ',')]
    audiences: Vec<String>,
    /// jwt mode: at most one key refresh for unknown key ids per this many seconds.
    #[arg(long, env = "CIRRUS_JWKS_MIN_REFRESH_SECS", default_value_t = 30.0)]
    jwks_min_refresh_secs: f64,
    /// jwt mode: refresh the keys in the background every this many seconds (0: never).
    #[arg(long, env = "CIRRUS_JWKS_REFRESH_SECS", default_value_t = 3600.0)]
    jwks_refresh_secs: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthModeArg {
    Dev,
    Jwt,
}

impl AuthArgs {
    fn mode(self) -> anyhow::Result<AuthMode> {
        use cirrus::auth::jwt::{JwtConfig, KeySource};
        let secs = |name: &str, v: f64| {
            anyhow::ensure!(
                v.is_finite() && (0.0..=1e9).contains(&v),
                "{name} must be a number of seconds"
            );
            Ok(std::time::Duration::from_secs_f64(v))
        };
        match self.mode {
            AuthModeArg::Dev => {
                anyhow::ensure!(
                    self.jwks_url.is_none() && self.jwks_file.is_none(),
                    "--jwks-url/--jwks-file need --auth jwt"
                );
                Ok(AuthMode::Dev)
            }
            AuthModeArg::Jwt => {
                let keys = match (self.jwks_url, self.jwks_file) {
                    (Some(url), None) => KeySource::Url(url),
                    (None, Some(path)) => KeySource::File(path),
                    _ => anyhow::bail!("--auth jwt needs --jwks-url URL or --jwks-file PATH"),
                };
                let mut cfg = JwtConfig::new(keys);
                let clean = |v: Vec<String>| -> Vec<String> {
                    v.into_iter()
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                };
                let issuers = clean(self.issuers);
                if !issuers.is_empty() {
                    cfg.issuers = issuers;
                }
                let audiences = clean(self.audiences);
                if !audiences.is_empty() {
                    cfg.audiences = audiences;
                }
                cfg.min_refresh_interval =
                    secs("--jwks-min-refresh-secs", self.jwks_min_refresh_secs)?;
                let period = secs("--jwks-refresh-secs", self.jwks_refresh_secs)?;
                cfg.refresh_interval = (!period.is_zero()).then_some(period);
                Ok(AuthMode::Jwt(cfg))
            }
        }
    }
}

/// Throttling (Intune's published limits by default; per instance).
#[derive(clap::Args)]
struct ThrottleArgs {
    /// Throttle Graph requests: on|off (off for benchmarks).
    #[arg(long = "throttle", env = "CIRRUS_THROTTLE", default_value = "on",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    enabled: bool,
    /// Writes (POST/PUT/PATCH/DELETE) per window per tenant.
    #[arg(long = "throttle-tenant-writes", env = "CIRRUS_THROTTLE_TENANT_WRITES", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    tenant_writes: u32,
    /// Writes per window per app per tenant.
    #[arg(long = "throttle-app-writes", env = "CIRRUS_THROTTLE_APP_WRITES", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    app_writes: u32,
    /// Requests of any method per window per tenant.
    #[arg(long = "throttle-tenant-requests", env = "CIRRUS_THROTTLE_TENANT_REQUESTS", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..))]
    tenant_requests: u32,
    /// Requests of any method per window per app per tenant.
    #[arg(long = "throttle-app-requests", env = "CIRRUS_THROTTLE_APP_REQUESTS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    app_requests: u32,
    /// Length of the throttling window, in seconds.
    #[arg(long = "throttle-window-secs", env = "CIRRUS_THROTTLE_WINDOW_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    window_secs: u64,
}

impl ThrottleArgs {
    fn config(&self) -> cirrus::http::throttle::ThrottleConfig {
        cirrus::http::throttle::ThrottleConfig {
            enabled: self.enabled,
            tenant_writes: self.tenant_writes,
            app_writes: self.app_writes,
            tenant_requests: self.tenant_requests,
            app_requests: self.app_requests,
            window: std::time::Duration::from_secs(self.window_secs),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            public_url,
            database_url,
            skip_migrations,
            max_body_bytes,
            checkin_status_cap,
            clock_offset_file,
            throttle,
            auth,
        } => {
            init_logging();
            let cfg = ServeConfig {
                listen,
                data_dir,
                database_url,
                migrate: !skip_migrations,
                http: HttpConfig {
                    max_body_bytes,
                    public_url,
                    throttle: throttle.config(),
                    ..HttpConfig::default()
                },
                auth: auth.mode()?,
                checkins: cirrus::domain::CheckinSettings {
                    status_cap: checkin_status_cap,
                    ..Default::default()
                },
                clock_offset_file,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(cfg))
        }
        Command::Migrate {
            database_url,
            data_dir,
        } => {
            init_logging();
            let versions = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(cirrus::config::migrate(database_url.as_deref(), &data_dir))?;
            println!("migrations applied; schema versions: {versions:?}");
            Ok(())
        }
        Command::Token {
            data_dir,
            tenant,
            user,
            upn,
            scopes,
            roles,
            groups,
            expires_in,
        } => {
            let key = DevKey::load_or_create(&data_dir)?;
            let req = TokenRequest {
                tenant,
                user,
                upn,
                scopes,
                roles,
                groups,
                expires_in,
            };
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            println!("{}", key.mint(&claims_for(&req, now)?)?);
            Ok(())
        }
        Command::Client { command } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(cirrus::simulator::run(command, DEV_TENANT)),
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let state = cirrus::config::build_state(&cfg).await?;
    let (listener, addr) = cirrus::config::bind(cfg.listen).await?;
    let dev_token = match &cfg.auth {
        AuthMode::Jwt(_) => None,
        AuthMode::Dev => {
            let key = DevKey::load_or_create(&cfg.data_dir)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let req = TokenRequest {
                tenant: DEV_TENANT.into(),
                user: Some(DEV_USER.into()),
                upn: Some("admin@contoso.example".into()),
                scopes: None,
                roles: None,
                groups: None,
                expires_in: 12 * 3600,
            };
            let token = key
                .mint(&claims_for(&req, now)?)
                .context("minting the start-up token")?;
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    "dev identity mode is listening on the non-loopback address {addr}: anyone who can read {} can mint tokens",
                    cfg.data_dir.display()
                );
            }
            Some(token)
        }
    };
    // The first line names the bound address (tools and tests read the port from it).
    println!(
        "cirrus listening on http://{addr}/beta (data in {})",
        cfg.data_dir.display()
    );
    if let Some(public) = &cfg.http.public_url {
        println!("public URL: {}/beta", public.trim_end_matches('/'));
    }
    match (&cfg.auth, dev_token) {
        (AuthMode::Jwt(jwt), _) => println!(
            "identity: jwt (keys from {}; issuers {}; audiences {})",
            jwt.keys,
            jwt.issuers.join(", "),
            jwt.audiences.join(", ")
        ),
        (AuthMode::Dev, token) => {
            println!(
                "dev token (tenant {DEV_TENANT}, 12 h, DeviceManagementConfiguration.ReadWrite.All):"
            );
            println!("{}", token.unwrap_or_default());
        }
    }
    cirrus::config::serve(listener, state).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}

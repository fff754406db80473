use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use cirrus::auth::dev::{DevKey, TokenRequest, claims_for};
use cirrus::config::ServeConfig;
use cirrus::http::HttpConfig;

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
                    ..HttpConfig::default()
                },
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
    let key = DevKey::load_or_create(&cfg.data_dir)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = key
        .mint(&claims_for(
            &TokenRequest {
                tenant: DEV_TENANT.into(),
                user: Some(DEV_USER.into()),
                upn: Some("admin@contoso.example".into()),
                scopes: None,
                roles: None,
                groups: None,
                expires_in: 12 * 3600,
            },
            now,
        )?)
        .context("minting the start-up token")?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "dev identity mode is listening on the non-loopback address {addr}: anyone who can read {} can mint tokens",
            cfg.data_dir.display()
        );
    }
    // The first line names the bound address (tools and tests read the port from it).
    println!(
        "cirrus listening on http://{addr}/beta (data in {})",
        cfg.data_dir.display()
    );
    if let Some(public) = &cfg.http.public_url {
        println!("public URL: {}/beta", public.trim_end_matches('/'));
    }
    println!("dev token (tenant {DEV_TENANT}, 12 h, DeviceManagementConfiguration.ReadWrite.All):");
    println!("{token}");
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

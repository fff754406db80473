//! Start-up wiring: from a [`ServeConfig`] to a listening server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::auth::dev::DevKey;
use crate::auth::jwt::{JwtConfig, JwtVerifier};
use crate::domain::{Service, SystemClock};
use crate::http::{AppState, Authenticator, HttpConfig, TokenVerifier};
use crate::storage::Store;
use crate::storage::cache::CachedStore;
use crate::storage::changes::ChangeFeed;
use crate::storage::postgres::PostgresStore;
use crate::storage::sqlite::SqliteStore;

pub const DATABASE_FILE: &str = "cirrus.sqlite3";
pub const LOCK_FILE: &str = "cirrus.lock";

/// Holds the data directory's exclusive lock for the life of the process: the embedded engine
/// (and its in-process cache) must be the only writer of its database file.
pub struct DataDirLock(#[allow(dead_code)] std::fs::File);

pub fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<DataDirLock> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another cirrus process is serving the data directory {}; stop it or use another --data-dir",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…` for the scale-out engine; `None` (or `sqlite://PATH`) for the embedded one.
    pub database_url: Option<String>,
    /// Apply pending migrations on start.
    pub migrate: bool,
    pub http: HttpConfig,
    /// How bearer tokens are verified.
    pub auth: AuthMode,
    /// Check-in views (window, status cap) and ingestion tuning.
    pub checkins: crate::domain::CheckinSettings,
    /// Test hook (dev mode only): a file holding seconds to add to the system clock.
    pub clock_offset_file: Option<PathBuf>,
}

impl ServeConfig {
    fn clock(&self) -> Arc<dyn crate::domain::Clock> {
        match &self.clock_offset_file {
            Some(path) => Arc::new(crate::domain::OffsetFileClock::new(path.clone())),
            None => Arc::new(SystemClock),
        }
    }
}

/// The identity mode.
#[derive(Clone, Debug, Default)]
pub enum AuthMode {
    /// HS256 tokens signed with the data directory's secret (`cirrus token`); zero setup.
    #[default]
    Dev,
    /// Production: RS256/ES256 tokens from an identity provider, verified against its JWKS.
    Jwt(JwtConfig),
}

/// Which engine a configuration selects.
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    pub fn select(database_url: Option<&str>, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        match database_url {
            None => Ok(Self::Sqlite(data_dir.join(DATABASE_FILE))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_string()))
            }
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) => Ok(Self::Sqlite(PathBuf::from(path))),
                None => anyhow::bail!(
                    "unsupported database URL (expected postgres://… or sqlite://PATH)"
                ),
            },
        }
    }

    /// Opens the engine (migrations applied first if `migrate`) and the change feed its
    /// writes bump, which the caches above storage read.
    pub async fn open(&self, migrate: bool) -> anyhow::Result<(Arc<dyn Store>, Arc<ChangeFeed>)> {
        Ok(match self {
            // Only this process writes the file (the data directory is locked), so an
            // in-process cache is safe and local bumps see every change.
            Self::Sqlite(path) => {
                let changes = ChangeFeed::local();
                let store = SqliteStore::open(path, migrate)
                    .await?
                    .with_changes(changes.clone());
                (Arc::new(CachedStore::new(store)), changes)
            }
            // Other instances write too: their changes arrive by LISTEN/NOTIFY.
            Self::Postgres(url) => {
                let store = PostgresStore::connect(url, migrate, Duration::from_secs(30)).await?;
                let changes = ChangeFeed::postgres(url, Duration::from_secs(10)).await?;
                (Arc::new(store.with_changes(changes.clone())), changes)
            }
        })
    }
}

/// `cirrus migrate`: applies pending migrations and reports the applied versions.
pub async fn migrate(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Vec<i64>> {
    let db = Database::select(database_url, data_dir)?;
    let _lock = match &db {
        Database::Sqlite(_) => {
            std::fs::create_dir_all(data_dir)?;
            Some(lock_data_dir(data_dir)?)
        }
        Database::Postgres(_) => None,
    };
    db.open(true).await?;
    let migrator = match db {
        Database::Sqlite(_) => &crate::storage::sqlite::MIGRATOR,
        Database::Postgres(_) => &crate::storage::postgres::MIGRATOR,
    };
    Ok(migrator.iter().map(|m| m.version).collect())
}

/// Opens storage and identity for a data directory and builds the application state.
pub async fn build_state(cfg: &ServeConfig) -> anyhow::Result<Arc<AppState>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let db = Database::select(cfg.database_url.as_deref(), &cfg.data_dir)?;
    let lock = match db {
        Database::Sqlite(_) => Some(lock_data_dir(&cfg.data_dir)?),
        Database::Postgres(_) => None,
    };
    if cfg.clock_offset_file.is_some() && !matches!(cfg.auth, AuthMode::Dev) {
        anyhow::bail!("--clock-offset-file is a test hook and only allowed with --auth dev");
    }
    crate::http::metrics::install();
    let (store, changes) = db.open(cfg.migrate).await?;
    let verifier = match &cfg.auth {
        AuthMode::Dev => TokenVerifier::Dev(DevKey::load_or_create(&cfg.data_dir)?),
        AuthMode::Jwt(jwt) => TokenVerifier::Jwt(JwtVerifier::start(jwt.clone()).await?),
    };
    let mut http = cfg.http.clone();
    http.fallback_host = cfg.listen.to_string();
    Ok(Arc::new(AppState {
        service: Service::new(store, changes, cfg.clock(), cfg.checkins),
        auth: Authenticator::new(verifier),
        throttle: crate::http::throttle::Throttle::new(http.throttle.clone()),
        config: http,
        _data_dir_lock: lock,
    }))
}

/// Binds the listener; returns it with the address actually bound (port 0 → ephemeral).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves until ctrl-c / SIGTERM, then stops accepting and lets in-flight requests finish
/// (up to 30 s). hyper is driven directly rather than through `axum::serve` so its own header
/// limits sit above ours: oversized headers reach the envelope middleware and get a Graph 431.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let app = crate::http::router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // e.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let mut builder = Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    // A client that stalls while sending headers is cut off.
                    .header_read_timeout(Duration::from_secs(30))
                    .max_headers(1024);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within 30 s of shutdown");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

//! Start-up wiring: from a [`ServeConfig`] to a listening server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::auth::dev::DevKey;
use crate::domain::{Service, SystemClock};
use crate::http::{AppState, Authenticator, HttpConfig};
use crate::storage::cache::CachedStore;
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
    pub http: HttpConfig,
}

/// Opens storage and identity for a data directory and builds the application state.
pub async fn build_state(cfg: &ServeConfig) -> anyhow::Result<Arc<AppState>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    let store = SqliteStore::open(&cfg.data_dir.join(DATABASE_FILE), true).await?;
    let key = DevKey::load_or_create(&cfg.data_dir)?;
    let mut http = cfg.http.clone();
    http.fallback_host = cfg.listen.to_string();
    Ok(Arc::new(AppState {
        service: Service::new(Arc::new(CachedStore::new(store)), Arc::new(SystemClock)),
        auth: Authenticator::Dev(key),
        config: http,
        _data_dir_lock: Some(lock),
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

/// Serves until ctrl-c / SIGTERM, finishing in-flight requests.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> anyhow::Result<()> {
    let app = crate::http::router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")
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

//! Start-up wiring: from a [`ServeConfig`] to a listening server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::auth::dev::DevKey;
use crate::domain::{Service, SystemClock};
use crate::http::{AppState, Authenticator, HttpConfig};
use crate::storage::sqlite::SqliteStore;

pub const DATABASE_FILE: &str = "cirrus.sqlite3";

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
    let store = SqliteStore::open(&cfg.data_dir.join(DATABASE_FILE)).await?;
    let key = DevKey::load_or_create(&cfg.data_dir)?;
    let mut http = cfg.http.clone();
    http.fallback_host = cfg.listen.to_string();
    Ok(Arc::new(AppState {
        service: Service::new(Arc::new(store), Arc::new(SystemClock)),
        auth: Authenticator::Dev(key),
        config: http,
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

//! Throttling as Intune publishes it (graph-conventions.md §11, DESIGN.md §2): per tenant and per
//! app per tenant, for writes (`POST`/`PUT`/`PATCH`/`DELETE`) and for all methods, per window
//! (20 s by default). Over a limit the request is refused with `429 TooManyRequests` and a
//! `Retry-After` in whole seconds, before its handler runs, so it has no effect.
//!
//! Counters are fixed windows: each tenant and each (tenant, app) has a window that starts with
//! its first request and lasts [`ThrottleConfig::window`]; a request passes only if every counter
//! it touches (tenant requests, app requests and, for writes, tenant writes and app writes) is
//! under its limit, and then all of them are incremented together (a refused request consumes
//! no budget). `Retry-After` is the time until the exhausted window ends — when a slot frees.
//!
//! State is per instance: several instances behind a load balancer each allow the full quota
//! (fleet-wide quotas would need a shared store such as Redis or PostgreSQL counters).
//!
//! Memory stays bounded as tenants and apps come and go: an entry whose window has ended carries
//! no information (it behaves exactly like a missing one), so each shard drops expired entries
//! once per window and whenever it reaches its share of [`MAX_ENTRIES`]. If a shard is still full
//! of live entries, a new tenant or app is not tracked until room frees (fail open for that key;
//! the tenant's own limits still apply to a new app of a tracked tenant).
//!
//! The hot path takes one shard lock (the shard is chosen by tenant, so the tenant's and its
//! apps' counters sit under the same lock and are checked atomically) and allocates only when a
//! tenant or app is seen for the first time in a window.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::GraphError;

/// Intune's published limits (graph-conventions.md §11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub enabled: bool,
    /// Writes per window per tenant, across all apps.
    pub tenant_writes: u32,
    /// Writes per window per app per tenant.
    pub app_writes: u32,
    /// Requests of any method per window per tenant.
    pub tenant_requests: u32,
    /// Requests of any method per window per app per tenant.
    pub app_requests: u32,
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tenant_writes: 200,
            app_writes: 100,
            tenant_requests: 2000,
            app_requests: 1000,
            window: Duration::from_secs(20),
        }
    }
}

/// Hard cap on tracked tenants plus (tenant, app) pairs, over all shards.
pub const MAX_ENTRIES: usize = 65_536;
const SHARDS: usize = 16;
const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The bucket of tokens without an `appid`/`azp` claim.
const UNKNOWN_APP: &str = "";

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    requests: u32,
    writes: u32,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            requests: 0,
            writes: 0,
        }
    }

    fn live(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.start) < window
    }

    /// The counters as they stand at `now` (zero once the window has ended).
    fn current(&self, now: Instant, window: Duration) -> Window {
        if self.live(now, window) {
            *self
        } else {
            Window::new(now)
        }
    }
}

struct TenantEntry {
    window: Window,
    apps: HashMap<String, Window>,
}

struct Shard {
    tenants: HashMap<String, TenantEntry>,
    /// Tenants plus apps in this shard.
    entries: usize,
    last_sweep: Instant,
}

impl Shard {
    /// Drops every entry whose window has ended.
    fn sweep(&mut self, now: Instant, window: Duration) {
        let mut entries = 0;
        self.tenants.retain(|_, t| {
            t.apps.retain(|_, w| w.live(now, window));
            let keep = !t.apps.is_empty() || t.window.live(now, window);
            if keep {
                entries += 1 + t.apps.len();
            }
            keep
        });
        self.entries = entries;
        self.last_sweep = now;
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    TenantWrites,
    AppWrites,
    TenantRequests,
    AppRequests,
}

/// A refusal: which limit, and when to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub limit: Limit,
    pub limit_value: u32,
    pub window_secs: u64,
    /// Whole seconds until the exhausted window ends (at least 1).
    pub retry_after_secs: u64,
}

impl From<Throttled> for GraphError {
    fn from(t: Throttled) -> Self {
        let what = match t.limit {
            Limit::TenantWrites => "write requests per tenant",
            Limit::AppWrites => "write requests per application per tenant",
            Limit::TenantRequests => "requests per tenant",
            Limit::AppRequests => "requests per application per tenant",
        };
        GraphError::TooManyRequests {
            retry_after_secs: t.retry_after_secs,
            message: format!(
                "Please retry again later. The limit of {} {what} per {} seconds has been reached; retry after {} seconds.",
                t.limit_value, t.window_secs, t.retry_after_secs
            ),
        }
    }
}

/// Is this method counted against the write limits?
pub fn is_write(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    )
}

pub struct Throttle {
    config: ThrottleConfig,
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        let now = Instant::now();
        Self {
            config,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        tenants: HashMap::new(),
                        entries: 0,
                        last_sweep: now,
                    })
                })
                .collect(),
            hasher: Default::default(),
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Counts one request of `tenant` by `app` (`None`: the "unknown app" bucket), or refuses it.
    pub fn check(&self, tenant: &str, app: Option<&str>, write: bool) -> Result<(), Throttled> {
        if !self.config.enabled {
            return Ok(());
        }
        self.check_at(tenant, app, write, Instant::now())
    }

    fn shard(&self, tenant: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(tenant) as usize) % self.shards.len()]
    }

    fn check_at(
        &self,
        tenant: &str,
        app: Option<&str>,
        write: bool,
        now: Instant,
    ) -> Result<(), Throttled> {
        let cfg = &self.config;
        let window = cfg.window;
        let app = app.unwrap_or(UNKNOWN_APP);
        let cap = MAX_ENTRIES / self.shards.len();
        let mut shard = self.shard(tenant).lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(shard.last_sweep) >= window {
            shard.sweep(now, window);
        }

        // Current counters (without inserting anything yet: a refusal must not allocate).
        let (tenant_w, app_w) = match shard.tenants.get(tenant) {
            Some(t) => (
                t.window.current(now, window),
                t.apps
                    .get(app)
                    .map_or(Window::new(now), |w| w.current(now, window)),
            ),
            None => (Window::new(now), Window::new(now)),
        };
        let refuse = |limit: Limit, limit_value: u32, w: &Window| {
            let left = (w.start + window).saturating_duration_since(now);
            Err(Throttled {
                limit,
                limit_value,
                window_secs: window.as_secs(),
                retry_after_secs: left.as_secs_f64().ceil().max(1.0) as u64,
            })
        };
        if write && tenant_w.writes >= cfg.tenant_writes {
            return refuse(Limit::TenantWrites, cfg.tenant_writes, &tenant_w);
        }
        if write && app_w.writes >= cfg.app_writes {
            return refuse(Limit::AppWrites, cfg.app_writes, &app_w);
        }
        if tenant_w.requests >= cfg.tenant_requests {
            return refuse(Limit::TenantRequests, cfg.tenant_requests, &tenant_w);
        }
        if app_w.requests >= cfg.app_requests {
            return refuse(Limit::AppRequests, cfg.app_requests, &app_w);
        }

        let bump = |mut w: Window| {
            w.requests += 1;
            w.writes += u32::from(write);
            w
        };
        let shard = &mut *shard;
        if !shard.tenants.contains_key(tenant) {
            // Full: sweep, but at most once a second, so a shard full of live entries does not
            // cost a scan per request.
            if shard.entries >= cap
                && now.saturating_duration_since(shard.last_sweep) >= FULL_SWEEP_INTERVAL
            {
                shard.sweep(now, window);
            }
            if shard.entries + 2 > cap {
                return Ok(()); // full of live entries: not tracked (see the module docs)
            }
            shard.tenants.insert(
                tenant.to_string(),
                TenantEntry {
                    window: Window::new(now),
                    apps: HashMap::new(),
                },
            );
            shard.entries += 1;
        }
        let Some(t) = shard.tenants.get_mut(tenant) else {
            return Ok(());
        };
        t.window = bump(tenant_w);
        if let Some(w) = t.apps.get_mut(app) {
            *w = bump(app_w);
        } else if shard.entries < cap {
            t.apps.insert(app.to_string(), bump(app_w));
            shard.entries += 1;
        }
        Ok(())
    }

    /// Tracked tenants plus (tenant, app) pairs.
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).entries)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(tw: u32, aw: u32, tr: u32, ar: u32, secs: u64) -> Throttle {
        Throttle::new(ThrottleConfig {
            enabled: true,
            tenant_writes: tw,
            app_writes: aw,
            tenant_requests: tr,
            app_requests: ar,
            window: Duration::from_secs(secs),
        })
    }

    #[test]
    fn defaults_are_intunes_published_limits() {
        let c = ThrottleConfig::default();
        assert!(c.enabled);
        assert_eq!(
            (
                c.tenant_writes,
                c.app_writes,
                c.tenant_requests,
                c.app_requests
            ),
            (200, 100, 2000, 1000)
        );
        assert_eq!(c.window, Duration::from_secs(20));
    }

    #[test]
    fn nth_plus_one_write_is_refused_until_the_window_ends() {
        let t = throttle(100, 3, 100, 100, 20);
        let t0 = Instant::now();
        for _ in 0..3 {
            t.check_at("a", Some("app"), true, t0).unwrap();
        }
        let err = t
            .check_at("a", Some("app"), true, t0 + Duration::from_millis(500))
            .unwrap_err();
        assert_eq!(err.limit, Limit::AppWrites);
        assert_eq!(err.limit_value, 3);
        // 19.5 s left → 20 (whole seconds, rounded up).
        assert_eq!(err.retry_after_secs, 20);
        let err = t
            .check_at("a", Some("app"), true, t0 + Duration::from_secs(15))
            .unwrap_err();
        assert_eq!(err.retry_after_secs, 5);
        let err = t
            .check_at("a", Some("app"), true, t0 + Duration::from_millis(19_999))
            .unwrap_err();
        assert_eq!(err.retry_after_secs, 1);
        // The window has ended: a fresh budget.
        for _ in 0..3 {
            t.check_at("a", Some("app"), true, t0 + Duration::from_secs(20))
                .unwrap();
        }
        assert!(
            t.check_at("a", Some("app"), true, t0 + Duration::from_secs(21))
                .is_err()
        );
    }

    #[test]
    fn reads_have_their_own_limit_and_writes_count_as_requests() {
        let t = throttle(100, 2, 100, 5, 20);
        let now = Instant::now();
        t.check_at("a", Some("app"), true, now).unwrap();
        t.check_at("a", Some("app"), true, now).unwrap();
        // Write budget gone; reads still pass (2 writes + 3 reads = 5 requests).
        assert_eq!(
            t.check_at("a", Some("app"), true, now).unwrap_err().limit,
            Limit::AppWrites
        );
        for _ in 0..3 {
            t.check_at("a", Some("app"), false, now).unwrap();
        }
        assert_eq!(
            t.check_at("a", Some("app"), false, now).unwrap_err().limit,
            Limit::AppRequests
        );
    }

    #[test]
    fn refused_requests_consume_no_budget() {
        let t = throttle(100, 100, 100, 2, 20);
        let now = Instant::now();
        t.check_at("a", Some("x"), false, now).unwrap();
        t.check_at("a", Some("x"), false, now).unwrap();
        for _ in 0..10 {
            assert!(t.check_at("a", Some("x"), false, now).is_err());
        }
        // The tenant counted only the two that passed.
        let t2 = throttle(100, 100, 3, 100, 20);
        t2.check_at("a", Some("x"), false, now).unwrap();
        t2.check_at("a", Some("x"), false, now).unwrap();
        t2.check_at("a", Some("y"), false, now).unwrap();
        assert_eq!(
            t2.check_at("a", Some("z"), false, now).unwrap_err().limit,
            Limit::TenantRequests
        );
    }

    #[test]
    fn apps_have_their_own_budget_within_the_tenant_budget() {
        let t = throttle(5, 3, 100, 100, 20);
        let now = Instant::now();
        for _ in 0..3 {
            t.check_at("a", Some("one"), true, now).unwrap();
        }
        assert_eq!(
            t.check_at("a", Some("one"), true, now).unwrap_err().limit,
            Limit::AppWrites
        );
        // Another app of the same tenant: its own app budget, but the tenant's 5 are shared.
        t.check_at("a", Some("two"), true, now).unwrap();
        t.check_at("a", Some("two"), true, now).unwrap();
        let err = t.check_at("a", Some("two"), true, now).unwrap_err();
        assert_eq!(err.limit, Limit::TenantWrites);
        assert_eq!(err.limit_value, 5);
        // Tokens without an app id share one bucket per tenant.
        t.check_at("b", None, true, now).unwrap();
        t.check_at("b", None, true, now).unwrap();
        t.check_at("b", None, true, now).unwrap();
        assert_eq!(
            t.check_at("b", None, true, now).unwrap_err().limit,
            Limit::AppWrites
        );
        // Another tenant, same app id: a separate budget.
        t.check_at("c", Some("one"), true, now).unwrap();
    }

    #[test]
    fn disabled_never_refuses() {
        let t = Throttle::new(ThrottleConfig {
            enabled: false,
            ..throttle(1, 1, 1, 1, 20).config().clone()
        });
        for _ in 0..100 {
            t.check("a", Some("x"), true).unwrap();
        }
        assert_eq!(t.entries(), 0);
    }

    #[test]
    fn error_is_graphs_429() {
        let t = throttle(1, 1, 1, 1, 20);
        let now = Instant::now();
        t.check_at("a", None, true, now).unwrap();
        let err: GraphError = t.check_at("a", None, true, now).unwrap_err().into();
        assert_eq!(err.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.code(), "TooManyRequests");
        assert!(err.to_string().starts_with("Please retry again later."));
        let res = axum::response::IntoResponse::into_response(err);
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "20");
    }

    #[test]
    fn sweeping_keeps_the_state_bounded() {
        let t = throttle(100, 100, 100, 100, 20);
        let t0 = Instant::now();
        // Far more tenants × apps than the cap, within one window: the cap holds.
        for i in 0..(MAX_ENTRIES * 2) {
            t.check_at(&format!("tenant-{i}"), Some("app"), false, t0)
                .unwrap();
        }
        assert!(t.entries() <= MAX_ENTRIES, "{}", t.entries());
        // Tenants that come and go: once their windows end, they are swept.
        for round in 1..=5u64 {
            let now = t0 + Duration::from_secs(20 * round);
            for i in 0..1000 {
                t.check_at(&format!("r{round}-{i}"), Some("app"), false, now)
                    .unwrap();
            }
            // Each shard sweeps on its first use in a new window.
            assert!(t.entries() <= 2000 + 2 * SHARDS, "{}", t.entries());
        }
        // Many apps of one tenant are bounded too.
        let t = throttle(u32::MAX, u32::MAX, u32::MAX, u32::MAX, 20);
        for i in 0..(MAX_ENTRIES) {
            t.check_at("big", Some(&format!("app-{i}")), false, t0)
                .unwrap();
        }
        assert!(t.entries() <= MAX_ENTRIES / SHARDS);
    }
}

//! The change feed: a per-(tenant, topic) generation number that moves whenever the tenant's
//! data of that topic may have changed, so in-process caches (the compiled policy index) can
//! tell whether what they hold is still current.
//!
//! - SQLite ([`ChangeFeed::local`]): one process owns the database, so the writer bumps the
//!   generation after each commit and the feed is always live.
//! - PostgreSQL ([`ChangeFeed::postgres`]): every write transaction also runs
//!   `SELECT pg_notify('cirrus_changes', …)`, which PostgreSQL delivers to every listening
//!   session exactly when (and only if) the write commits. A listener task per instance bumps
//!   the local generation on each notification. Notifications sent while the listener is
//!   disconnected are lost, so the feed reports "not live" ([`ChangeFeed::generation`] is
//!   `None`: serve nothing from cache) until it has listened again and bumped everything.
//!
//! Generations come from one process-wide counter, so they only ever grow: a cache entry tagged
//! with a generation can be compared with the current one and never matches by accident after
//! a reset.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::model::TenantId;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Configurations, their payloads, priorities and assignments (and the singleton).
    Configurations,
    /// Client check-ins.
    Checkins,
}

impl Topic {
    fn index(self) -> usize {
        match self {
            Topic::Configurations => 0,
            Topic::Checkins => 1,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Topic::Configurations => "c",
            Topic::Checkins => "k",
        }
    }

    fn from_prefix(p: &str) -> Option<Self> {
        match p {
            "c" => Some(Topic::Configurations),
            "k" => Some(Topic::Checkins),
            _ => None,
        }
    }
}

/// The PostgreSQL notification channel every instance listens on.
pub const CHANNEL: &str = "cirrus_changes";

/// The payload of the notification for a change of `topic` in `tenant`: `c:<tenant>` or
/// `k:<tenant>` (tenant ids are short ASCII, well under PostgreSQL's 8000-byte payload limit).
pub fn notify_payload(tenant: &TenantId, topic: Topic) -> String {
    format!("{}:{}", topic.prefix(), tenant.as_str())
}

/// Parses a payload of [`notify_payload`].
fn parse_payload(payload: &str) -> Option<(TenantId, Topic)> {
    let (prefix, tenant) = payload.split_once(':')?;
    Some((TenantId::parse(tenant)?, Topic::from_prefix(prefix)?))
}

/// Bound on the tenants tracked (about 100 bytes each); past it the feed starts over with a
/// new epoch.
const MAX_TRACKED: usize = 100_000;

struct State {
    /// False while the PostgreSQL listener is not connected (changes may be missed).
    live: bool,
    /// Last generation handed out; every bump takes the next one.
    clock: u64,
    /// Generation of every tenant not in `tracked` (set by `bump_all`).
    epoch: u64,
    /// Per tenant, the generation of each topic (indexed by `Topic::index`).
    tracked: HashMap<TenantId, [u64; 2]>,
}

/// Per-(tenant, topic) generations. `Send + Sync`; cheap to query on every request.
pub struct ChangeFeed {
    state: RwLock<State>,
    max_tracked: usize,
}

impl ChangeFeed {
    fn new(live: bool, max_tracked: usize) -> Self {
        Self {
            state: RwLock::new(State {
                live,
                clock: 0,
                epoch: 0,
                tracked: HashMap::new(),
            }),
            max_tracked,
        }
    }

    /// A feed for a single process (SQLite): every write goes through this process, which
    /// bumps after committing, so the feed is always live.
    pub fn local() -> Arc<Self> {
        Arc::new(Self::new(true, MAX_TRACKED))
    }

    /// A feed fed by PostgreSQL notifications on [`CHANNEL`]: spawns the listener task (on
    /// its own connection, outside the request pool) and waits up to `wait` for it to listen,
    /// so a freshly started instance caches from its first request. Until the listener is
    /// connected the feed is not live (reads go to the database), never wrong.
    pub async fn postgres(url: &str, wait: Duration) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context as _;
        let opts: PgConnectOptions = url.parse().context("parsing the PostgreSQL URL")?;
        let feed = Arc::new(Self::new(false, MAX_TRACKED));
        let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(listen(Arc::downgrade(&feed), opts, ready_tx));
        if tokio::time::timeout(wait, ready_rx.wait_for(|ready| *ready))
            .await
            .is_err()
        {
            tracing::warn!(
                "the PostgreSQL change listener is not connected yet; policy reads are not cached until it is"
            );
        }
        Ok(feed)
    }

    /// The current generation of `(tenant, topic)`. `None` means the feed is not live right
    /// now (the PostgreSQL listener is reconnecting): callers must not serve from cache.
    pub fn generation(&self, tenant: &TenantId, topic: Topic) -> Option<u64> {
        let s = self.state.read().ok()?;
        if !s.live {
            return None;
        }
        Some(s.tracked.get(tenant).map_or(s.epoch, |g| g[topic.index()]))
    }

    /// Records a change of `(tenant, topic)` (after a local commit, or on a notification).
    pub fn bump(&self, tenant: &TenantId, topic: Topic) {
        let Ok(mut s) = self.state.write() else {
            return;
        };
        s.clock += 1;
        let (generation, epoch) = (s.clock, s.epoch);
        if let Some(g) = s.tracked.get_mut(tenant) {
            g[topic.index()] = generation;
        } else if s.tracked.len() >= self.max_tracked {
            // Over the bound: a new epoch changes every generation at once (caches refill).
            s.epoch = generation;
            s.tracked.clear();
        } else {
            let mut g = [epoch; 2];
            g[topic.index()] = generation;
            s.tracked.insert(tenant.clone(), g);
        }
    }

    /// Records that anything may have changed (e.g. notifications may have been lost).
    pub fn bump_all(&self) {
        if let Ok(mut s) = self.state.write() {
            s.clock += 1;
            s.epoch = s.clock;
            s.tracked.clear();
        }
    }

    /// Whether the feed is live (see [`ChangeFeed::generation`]).
    pub fn is_live(&self) -> bool {
        self.state.read().is_ok_and(|s| s.live)
    }

    fn set_live(&self, live: bool) {
        if let Ok(mut s) = self.state.write() {
            s.live = live;
        }
    }

    /// Everything may have changed, and the feed is live again — one step, so no reader sees
    /// "live" with a generation from before the gap.
    fn resume(&self) {
        if let Ok(mut s) = self.state.write() {
            s.clock += 1;
            s.epoch = s.clock;
            s.tracked.clear();
            s.live = true;
        }
    }

    fn apply(&self, payload: &str) {
        match parse_payload(payload) {
            Some((tenant, topic)) => self.bump(&tenant, topic),
            // Not ours to understand (e.g. a newer version's topic): assume the worst.
            None => self.bump_all(),
        }
    }
}

/// The application name of the listener's connection (visible in `pg_stat_activity`), with
/// the process id so one instance's listener can be told from another's.
pub fn listener_application_name() -> String {
    format!("cirrus-changes-{}", std::process::id())
}

/// With no notification for this long, the listener checks that its connection still works
/// (a silently dropped connection would otherwise look like a quiet database forever).
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long the heartbeat may take before the connection is given up.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect back-off bounds.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The listener task: connect, `LISTEN`, resume the feed, apply notifications; on any failure
/// mark the feed not live and start over. Ends when the feed is dropped.
async fn listen(
    feed: Weak<ChangeFeed>,
    opts: PgConnectOptions,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let opts = opts.application_name(&listener_application_name());
    let mut backoff = RETRY_MIN;
    loop {
        match connect(&opts).await {
            Ok(mut listener) => {
                let Some(f) = feed.upgrade() else { return };
                // Listening from here on: whatever changed before is covered by the new epoch.
                f.resume();
                drop(f);
                ready.send_replace(true);
                backoff = RETRY_MIN;
                let error = receive(&feed, &mut listener).await;
                let Some(f) = feed.upgrade() else { return };
                f.set_live(false);
                tracing::warn!(%error, "PostgreSQL change listener lost its connection; reconnecting (policy reads uncached meanwhile)");
            }
            Err(error) => {
                if feed.strong_count() == 0 {
                    return;
                }
                tracing::warn!(%error, "PostgreSQL change listener cannot connect; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

async fn connect(opts: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    // A pool of one connection of its own, so the listener never takes a request connection
    // and is never handed a connection another task used.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(opts.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // Reconnection is ours to do (so the feed can be resumed only once listening again).
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Applies notifications until the connection fails; returns why it stopped.
async fn receive(feed: &Weak<ChangeFeed>, listener: &mut PgListener) -> String {
    loop {
        match tokio::time::timeout(HEARTBEAT, listener.try_recv()).await {
            Ok(Ok(Some(n))) => match feed.upgrade() {
                Some(f) => f.apply(n.payload()),
                None => return "the feed was dropped".into(),
            },
            Ok(Ok(None)) => return "connection closed".into(),
            Ok(Err(e)) => return e.to_string(),
            // Quiet for a while: `try_recv` is cancel-safe, so check the connection and go on.
            // Re-issuing LISTEN is a no-op for the server and proves the session is alive.
            Err(_) => {
                let check = sqlx::query(sqlx::AssertSqlSafe(format!("LISTEN \"{CHANNEL}\"")))
                    .execute(&mut *listener);
                match tokio::time::timeout(HEARTBEAT_TIMEOUT, check).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return "heartbeat timed out".into(),
                }
                if feed.strong_count() == 0 {
                    return "the feed was dropped".into();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn bumps_move_only_the_tenant_and_topic() {
        let f = ChangeFeed::local();
        let (a, b) = (t("a"), t("b"));
        let a0 = f.generation(&a, Topic::Configurations).unwrap();
        let b0 = f.generation(&b, Topic::Configurations).unwrap();
        let k0 = f.generation(&a, Topic::Checkins).unwrap();
        f.bump(&a, Topic::Configurations);
        let a1 = f.generation(&a, Topic::Configurations).unwrap();
        assert!(a1 > a0);
        assert_eq!(f.generation(&b, Topic::Configurations), Some(b0));
        assert_eq!(f.generation(&a, Topic::Checkins), Some(k0));
        f.bump_all();
        assert!(f.generation(&a, Topic::Configurations).unwrap() > a1);
        assert!(f.generation(&b, Topic::Configurations).unwrap() > b0);
    }

    #[test]
    fn over_the_bound_every_generation_changes_and_memory_stays_bounded() {
        let f = ChangeFeed::new(true, 3);
        let tenants: Vec<_> = (0..3).map(|i| t(&format!("t{i}"))).collect();
        for x in &tenants {
            f.bump(x, Topic::Configurations);
        }
        let before: Vec<_> = tenants
            .iter()
            .map(|x| f.generation(x, Topic::Configurations))
            .collect();
        f.bump(&t("t3"), Topic::Configurations);
        for (x, g) in tenants.iter().zip(before) {
            assert_ne!(f.generation(x, Topic::Configurations), g);
        }
        assert!(f.state.read().unwrap().tracked.len() <= 3);
        // Bumping a tracked pair at the bound is not a reset.
        let f = ChangeFeed::new(true, 1);
        f.bump(&tenants[0], Topic::Configurations);
        let g1 = f.generation(&tenants[1], Topic::Configurations);
        f.bump(&tenants[0], Topic::Configurations);
        assert_eq!(f.generation(&tenants[1], Topic::Configurations), g1);
    }

    #[test]
    fn not_live_means_no_generation_and_resuming_changes_all() {
        let f = ChangeFeed::new(true, 10);
        let a = t("a");
        let g = f.generation(&a, Topic::Configurations);
        f.set_live(false);
        assert!(!f.is_live());
        assert_eq!(f.generation(&a, Topic::Configurations), None);
        f.resume();
        assert!(f.generation(&a, Topic::Configurations) > g);
    }

    #[test]
    fn payloads_round_trip_and_unknown_ones_bump_everything() {
        let a = t("Contoso-1");
        assert_eq!(notify_payload(&a, Topic::Configurations), "c:contoso-1");
        assert_eq!(notify_payload(&a, Topic::Checkins), "k:contoso-1");
        for topic in [Topic::Configurations, Topic::Checkins] {
            assert_eq!(
                parse_payload(&notify_payload(&a, topic)),
                Some((a.clone(), topic))
            );
        }
        let f = ChangeFeed::local();
        let other = t("other");
        let g = f.generation(&other, Topic::Configurations);
        f.apply("c:contoso-1");
        assert_eq!(f.generation(&other, Topic::Configurations), g);
        f.apply("x:what");
        assert_ne!(f.generation(&other, Topic::Configurations), g);
    }
}

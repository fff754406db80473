//! Group commit for client check-ins (DESIGN §4): every Office client checks in, so reports
//! are queued and written by one writer task, which takes everything queued so far as one
//! transaction. A report is acknowledged only after the transaction holding it committed, so
//! nothing acknowledged can be lost; while one batch commits the next one fills up, so the
//! commit rate of the database bounds batches per second, not reports per second.
//!
//! One writer on both engines: SQLite's log file has one writer anyway, and on PostgreSQL,
//! which could commit batches in parallel, each batch costs a statement and a commit whatever
//! its size, so one writer's larger batches cost less (64 clients on a 2-core machine, two
//! A/B pairs: 19.7 k / 19.3 k check-ins a second with two writers, 20.2 k / 20.7 k with one,
//! once batches are gathered over scheduler passes, see [`gather`]).
//!
//! A batch is appended to the check-in log (one run of consecutive pages, so a commit writes
//! little); a materializer task applies the log to the tables the views read in much larger
//! transactions, off the acknowledgement path. The views apply whatever is still pending before
//! they read, so they always include every acknowledged report. The log is kept bounded: past
//! [`IngestConfig::max_backlog`] unapplied reports, the writer waits for the materializer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::GraphError;
use crate::model::Checkin;
use crate::storage::{StorageError, Store};

/// Tuning of the ingestion pipeline.
#[derive(Clone, Copy, Debug)]
pub struct IngestConfig {
    /// Reports written in one transaction at most.
    pub max_batch: usize,
    /// Reports waiting for a writer at most; further submitters wait (backpressure).
    pub queue: usize,
    /// Logged reports this instance appended and not yet applied, at most; the writer waits for
    /// the materializer beyond that.
    pub max_backlog: usize,
    /// Log rows the materializer applies per transaction.
    pub materialize_batch: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            queue: 8192,
            max_backlog: 16_384,
            materialize_batch: 8192,
        }
    }
}

/// How a batch ended, as told to each report's submitter.
#[derive(Clone, Debug)]
enum Outcome {
    Durable,
    Unavailable(String),
    Failed(String),
}

struct Job {
    checkin: Checkin,
    done: oneshot::Sender<Outcome>,
}

pub struct CheckinIngestor {
    queue: mpsc::Sender<Job>,
}

/// How long the materializer lets reports gather before applying fewer than a batch.
const LINGER: Duration = Duration::from_millis(200);

/// What the writer and the materializer share.
struct Log {
    /// Reports appended by this instance and not yet applied (by anyone, as far as it knows).
    backlog: AtomicUsize,
    /// Wakes the materializer after a commit.
    appended: Notify,
    /// Wakes the writer waiting for the backlog to shrink.
    applied: Notify,
    max_backlog: usize,
}

impl Log {
    /// Accounts for a materializer pass that applied `n` reports of at most `batch`, begun
    /// with `before` counted; returns the reports still counted. A full pass applied `n` of
    /// them. A shorter one found the log drained up to what was committed when it began (other
    /// instances may have applied some of ours): everything counted before it is applied, and
    /// what the writer appended during it is not — forgetting those (as setting the count to 0
    /// did) let the log grow past the bound by every pass's appends (25,773 pending on
    /// PostgreSQL at the end of a benchmark run, against a bound of 16,384).
    fn passed(&self, before: usize, n: usize, batch: usize) -> usize {
        let take = if n < batch { before } else { n };
        let previous = self
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(take))
            })
            .unwrap_or_else(|b| b);
        previous.saturating_sub(take)
    }
}

impl CheckinIngestor {
    /// Starts the writer tasks (on the current tokio runtime). They stop once the ingestor is
    /// dropped and the queue is drained, so a graceful shutdown flushes every accepted report.
    pub fn start(store: Arc<dyn Store>, config: IngestConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let log = Arc::new(Log {
            backlog: AtomicUsize::new(0),
            appended: Notify::new(),
            applied: Notify::new(),
            max_backlog: config.max_backlog.max(1),
        });
        tokio::spawn(writer(
            store.clone(),
            rx,
            log.clone(),
            config.max_batch.max(1),
        ));
        tokio::spawn(materializer(
            store,
            log,
            tx.downgrade(),
            config.materialize_batch.max(1),
        ));
        Self { queue: tx }
    }

    /// Queues a report and returns once it is durably stored.
    pub async fn submit(&self, checkin: Checkin) -> Result<(), GraphError> {
        let (done, wait) = oneshot::channel();
        self.queue
            .send(Job { checkin, done })
            .await
            .map_err(|_| GraphError::Unavailable {
                retry_after_secs: 5,
            })?;
        match wait.await {
            Ok(Outcome::Durable) => Ok(()),
            Ok(Outcome::Unavailable(msg)) => {
                tracing::warn!(%msg, "check-in batch failed: storage unavailable");
                Err(GraphError::Unavailable {
                    retry_after_secs: 5,
                })
            }
            Ok(Outcome::Failed(msg)) => Err(GraphError::Internal(anyhow::anyhow!(
                "storing the check-in failed: {msg}"
            ))),
            // The writer went away (shutting down) before committing it.
            Err(_) => Err(GraphError::Unavailable {
                retry_after_secs: 5,
            }),
        }
    }
}

async fn writer(
    store: Arc<dyn Store>,
    mut queue: mpsc::Receiver<Job>,
    log: Arc<Log>,
    max_batch: usize,
) {
    loop {
        // Backpressure from the materializer: the log stays bounded.
        while log.backlog.load(Ordering::Relaxed) >= log.max_backlog {
            let applied = log.applied.notified();
            if log.backlog.load(Ordering::Relaxed) < log.max_backlog {
                break;
            }
            // Also re-checked now and then, should a wake-up be missed.
            let _ = tokio::time::timeout(Duration::from_millis(100), applied).await;
        }
        let Some(first) = queue.recv().await else {
            return;
        };
        let jobs = gather(&mut queue, first, max_batch).await;
        let (checkins, replies): (Vec<Checkin>, Vec<oneshot::Sender<Outcome>>) =
            jobs.into_iter().map(|j| (j.checkin, j.done)).unzip();
        metrics::histogram!("cirrus_checkin_batch_size").record(checkins.len() as f64);
        let outcome = match store.record_checkins(&checkins).await {
            // The store itself moves the change feed and drops stale cached entities.
            Ok(_) => {
                metrics::counter!("cirrus_checkins_stored_total").increment(checkins.len() as u64);
                let backlog = log.backlog.fetch_add(checkins.len(), Ordering::Relaxed);
                metrics::gauge!("cirrus_checkin_log_backlog")
                    .set((backlog + checkins.len()) as f64);
                log.appended.notify_one();
                Outcome::Durable
            }
            Err(StorageError::Unavailable(msg)) => {
                metrics::counter!("cirrus_checkin_batches_failed_total").increment(1);
                Outcome::Unavailable(msg)
            }
            Err(StorageError::Other(e)) => {
                metrics::counter!("cirrus_checkin_batches_failed_total").increment(1);
                tracing::error!(error = %e, "check-in batch failed");
                Outcome::Failed(e.to_string())
            }
        };
        for reply in replies {
            // The submitter may have gone (client disconnected); the report is stored anyway.
            let _ = reply.send(outcome.clone());
        }
    }
}

/// Scheduler passes a writer lets go by, with nothing new queued, before it commits a batch.
const GATHER_PASSES: usize = 2;

/// Collects a batch: `first`, then whatever is queued, up to `max_batch`; when the
/// queue runs dry, the writer yields to the runtime up to [`GATHER_PASSES`] times in a row,
/// and takes what the request tasks that ran meanwhile queued. Why: clients acknowledged
/// together come back together, their requests reaching the queue over a few scheduler
/// passes, and a writer that took only what was already queued split them — most batches
/// held a few reports, and each batch costs a statement and a commit whatever its size (on
/// PostgreSQL, 64 clients: batches of 10 on average, half of them 4 or fewer). Gathering over
/// the passes makes them about 30, for microseconds of latency: a lone report waits two
/// passes of a runtime with nothing else to do. Measured in the check-in benchmark
/// (PostgreSQL): 17.2 k → 18.5 k–19.3 k acknowledged check-ins a second, server CPU 37 →
/// 29–32 µs a check-in.
async fn gather<T>(queue: &mut mpsc::Receiver<T>, first: T, max_batch: usize) -> Vec<T> {
    let mut batch = Vec::with_capacity(max_batch.min(64));
    batch.push(first);
    let mut idle = 0;
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(item) => {
                batch.push(item);
                idle = 0;
            }
            Err(mpsc::error::TryRecvError::Empty) if idle < GATHER_PASSES => {
                idle += 1;
                tokio::task::yield_now().await;
            }
            Err(_) => break,
        }
    }
    batch
}

/// Applies the check-in log to the tables the views read, in large transactions: woken after
/// every logged batch, and once a second for rows left by a crash or by other instances. Stops
/// once the ingestor is gone; what is still logged then is applied by the next start or by the
/// next view read.
async fn materializer(
    store: Arc<dyn Store>,
    log: Arc<Log>,
    alive: mpsc::WeakSender<Job>,
    batch: usize,
) {
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), log.appended.notified()).await;
        if alive.upgrade().is_none() {
            return;
        }
        // Let a batch's worth gather first: applying many reports at once dirties each page
        // of the keyed tables once for many of them (measured on SQLite: waiting 20 ms
        // instead of 200 ms made applying cost about 40 % more per report).
        if log.backlog.load(Ordering::Relaxed) < batch {
            tokio::time::sleep(LINGER).await;
        }
        loop {
            let started = std::time::Instant::now();
            // What was counted before the pass: all of it is applied when the pass finds the
            // log drained; what the writer appends meanwhile is not.
            let before = log.backlog.load(Ordering::Relaxed);
            let result = store.materialize_checkins(batch).await;
            // Only passes that applied something: the once-a-second polls of an empty log
            // would drown the figure.
            if matches!(result, Ok(n) if n > 0) {
                metrics::histogram!("cirrus_checkin_materialize_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            match result {
                Ok(n) => {
                    metrics::counter!("cirrus_checkins_materialized_total").increment(n as u64);
                    let left = log.passed(before, n, batch);
                    metrics::gauge!("cirrus_checkin_log_backlog").set(left as f64);
                    log.applied.notify_waiters();
                    if n < batch {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "applying the check-in log failed; retrying");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TenantId;
    use crate::storage::sqlite::SqliteStore;
    use sqlx::Connection as _;
    use time::OffsetDateTime;

    fn checkin(device: &str) -> Checkin {
        Checkin::sample("contoso", device, OffsetDateTime::now_utc(), &[])
    }

    fn log_counting(backlog: usize) -> Log {
        Log {
            backlog: AtomicUsize::new(backlog),
            appended: Notify::new(),
            applied: Notify::new(),
            max_backlog: 16_384,
        }
    }

    /// A full pass takes off what it applied.
    #[test]
    fn a_full_pass_takes_off_what_it_applied() {
        let log = log_counting(20_000);
        assert_eq!(log.passed(20_000, 8192, 8192), 11_808);
    }

    /// A pass that drained the log takes off what was counted when it began, not what the writer
    /// appended meanwhile (which is still pending).
    #[test]
    fn a_draining_pass_keeps_what_was_appended_during_it() {
        let log = log_counting(3000);
        // 500 reports appended (and counted) while the pass ran.
        log.backlog.fetch_add(500, Ordering::Relaxed);
        assert_eq!(log.passed(3000, 2900, 8192), 500);
        // Another instance applied some of ours: the count still comes down to what is new.
        let log = log_counting(7000);
        assert_eq!(log.passed(7000, 10, 8192), 0);
    }

    /// Reports reaching the queue over a few scheduler passes (as requests of clients
    /// acknowledged together do) make one batch, not one each.
    #[tokio::test]
    async fn a_batch_gathers_reports_queued_over_a_few_passes() {
        let (tx, mut rx) = mpsc::channel(64);
        for i in 0..6usize {
            let tx = tx.clone();
            tokio::spawn(async move {
                for _ in 0..i {
                    tokio::task::yield_now().await;
                }
                tx.send(i).await.unwrap();
            });
        }
        let first = rx.recv().await.unwrap();
        let batch = gather(&mut rx, first, 512).await;
        assert_eq!(batch, (0..6).collect::<Vec<_>>());
        // What is queued joins `first`, and the batch ends once nothing more comes.
        tx.send(6).await.unwrap();
        assert_eq!(gather(&mut rx, 5usize, 512).await, [5, 6]);
        // A full batch goes at once; the rest waits for the next one.
        for i in 0..4 {
            tx.send(i).await.unwrap();
        }
        assert_eq!(gather(&mut rx, 9usize, 3).await, [9, 0, 1]);
    }

    /// The log is bounded: with `max_backlog` reports logged and not applied (here because
    /// another connection holds the database's write lock, so nothing can be applied), the next
    /// report is not acknowledged until applying catches up; none is lost.
    #[tokio::test]
    async fn the_writer_waits_for_the_materializer_past_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cirrus.sqlite3");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, true).await.unwrap());
        let ingestor = Arc::new(CheckinIngestor::start(
            store.clone(),
            IngestConfig {
                max_backlog: 4,
                ..IngestConfig::default()
            },
        ));
        let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut blocker)
            .await
            .unwrap();
        for d in 0..4 {
            // Logged in the log's own file: acknowledged although applying is blocked.
            tokio::time::timeout(
                Duration::from_secs(10),
                ingestor.submit(checkin(&format!("PC-{d}"))),
            )
            .await
            .expect("acknowledged while under the backlog")
            .unwrap();
        }
        let fifth = tokio::spawn({
            let ingestor = ingestor.clone();
            async move { ingestor.submit(checkin("PC-4")).await }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!fifth.is_finished(), "acknowledged past the backlog bound");
        sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), fifth)
            .await
            .expect("acknowledged once applying caught up")
            .unwrap()
            .unwrap();
        let view = store
            .tenant_checkin_view(
                &TenantId::parse("contoso").unwrap(),
                OffsetDateTime::now_utc() - time::Duration::hours(1),
                100,
            )
            .await
            .unwrap();
        assert_eq!(view.statuses.len(), 5);
    }
}

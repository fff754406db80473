//! Group commit for client check-ins (DESIGN §4): every Office client checks in, so reports
//! are queued and written by a few writer tasks, each taking everything queued so far as one
//! transaction. A report is acknowledged only after the transaction holding it committed, so
//! nothing acknowledged can be lost; while one batch commits the next one fills up, so the
//! commit rate of the database bounds batches per second, not reports per second.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::GraphError;
use crate::model::Checkin;
use crate::storage::{StorageError, Store};

/// Tuning of the ingestion pipeline.
#[derive(Clone, Copy, Debug)]
pub struct IngestConfig {
    /// Reports written in one transaction at most.
    pub max_batch: usize,
    /// Concurrent writer tasks (one is right for SQLite's single writer; PostgreSQL commits
    /// several transactions in parallel).
    pub writers: usize,
    /// Reports waiting for a writer at most; further submitters wait (backpressure).
    pub queue: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            writers: 1,
            queue: 8192,
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

impl CheckinIngestor {
    /// Starts the writer tasks (on the current tokio runtime). They stop once the ingestor is
    /// dropped and the queue is drained, so a graceful shutdown flushes every accepted report.
    pub fn start(store: Arc<dyn Store>, config: IngestConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.writers.max(1) {
            tokio::spawn(writer(store.clone(), rx.clone(), config.max_batch.max(1)));
        }
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

async fn writer(store: Arc<dyn Store>, queue: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize) {
    loop {
        let mut jobs = Vec::new();
        {
            // Holding the receiver while waiting: the other writers are committing meanwhile.
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let (checkins, replies): (Vec<Checkin>, Vec<oneshot::Sender<Outcome>>) =
            jobs.into_iter().map(|j| (j.checkin, j.done)).unzip();
        metrics::histogram!("cirrus_checkin_batch_size").record(checkins.len() as f64);
        let outcome = match store.record_checkins(&checkins).await {
            // The store itself moves the change feed and drops stale cached entities.
            Ok(_) => {
                metrics::counter!("cirrus_checkins_stored_total").increment(checkins.len() as u64);
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

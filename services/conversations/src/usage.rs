//! Usage records are written off the request path: a turn hands its record to the
//! [`UsageWriter`] and returns; a background task writes them in batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::domain::UsageRecord;
use crate::store::ConversationStore;

/// Most records written in one transaction.
const BATCH: usize = 256;
/// Longest a record waits for companions before it is written.
const LINGER: Duration = Duration::from_millis(100);

/// Hands usage records to the background writer.
#[derive(Debug, Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<UsageRecord>,
}

impl UsageWriter {
    /// Starts the writer; it drains and stops once every `UsageWriter` clone is dropped.
    pub fn start(store: Arc<dyn ConversationStore>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        (Self { tx }, tokio::spawn(run(store, rx)))
    }

    /// Queues a record. Waits only when the queue is full (back-pressure, never loss).
    pub async fn record(&self, record: UsageRecord) {
        if self.tx.send(record).await.is_err() {
            tracing::error!("usage writer has stopped; a usage record was not written");
        }
    }
}

async fn run(store: Arc<dyn ConversationStore>, mut rx: mpsc::Receiver<UsageRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(record)) => batch.push(record),
                Ok(None) | Err(_) => break,
            }
        }
        write(&*store, &mut batch).await;
    }
    tracing::debug!("usage writer drained");
}

async fn write(store: &dyn ConversationStore, batch: &mut Vec<UsageRecord>) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        match store.record_usage(batch).await {
            Ok(()) => {
                tracing::debug!(records = batch.len(), "usage records written");
                batch.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, records = batch.len(), "writing usage records failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!(records = batch.len(), "usage records dropped after repeated storage failures");
    batch.clear();
}

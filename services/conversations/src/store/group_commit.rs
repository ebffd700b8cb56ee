//! Group commit: turns that open (or close) while a statement of the same kind is running
//! wait, and go together in the next statement. One statement, one commit and one WAL flush
//! serve all of them; a turn that finds none running is not delayed. One statement of a kind
//! at a time measured best (`make bench`: allowing four gave less grouping and a higher p50),
//! and served twice the turns per second of a statement per turn.
//!
//! Each turn still gets its own answer, and its own error: when a grouped statement fails,
//! its turns run again one by one, so one turn's bad row cannot fail the others.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Most turns in one statement.
const MAX_TURNS: usize = 64;

/// One kind of write that many turns can share one statement for.
pub(super) trait Grouped: Send + Sync + 'static {
    /// One turn's part.
    type Item: Send + 'static;
    /// What one turn gets back.
    type Output: Send + 'static;
    /// What no two items of one statement may share (their conversation).
    fn key(item: &Self::Item) -> &str;
    /// Writes `items` in one statement: an output per item, in their order.
    fn write(&self, items: &[Self::Item]) -> impl Future<Output = Result<Vec<Self::Output>, sqlx::Error>> + Send;
}

type Waiter<G> = (<G as Grouped>::Item, oneshot::Sender<Result<<G as Grouped>::Output, sqlx::Error>>);

/// The queue of one kind of write, and the task that groups it.
pub(super) struct GroupCommit<G: Grouped> {
    queue: mpsc::UnboundedSender<Waiter<G>>,
}

impl<G: Grouped> std::fmt::Debug for GroupCommit<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("open", &!self.queue.is_closed()).finish()
    }
}

impl<G: Grouped> GroupCommit<G> {
    /// Starts grouping `writes`, one statement at a time (on the current runtime; the task
    /// ends when this is dropped).
    pub(super) fn start(writes: G) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(group(Arc::new(writes), waiting));
        Self { queue }
    }

    /// Writes `item` with whatever else is waiting, once the running statement is done.
    pub(super) async fn write(&self, item: G::Item) -> Result<G::Output, sqlx::Error> {
        let (done, outcome) = oneshot::channel();
        self.queue.send((item, done)).map_err(|_| sqlx::Error::PoolClosed)?;
        outcome.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn group<G: Grouped>(writes: Arc<G>, mut waiting: mpsc::UnboundedReceiver<Waiter<G>>) {
    // Turns of a conversation already in the statement being formed wait for the next one.
    let mut deferred: VecDeque<Waiter<G>> = VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(w) => w,
            None => match waiting.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let mut keys = HashSet::from([G::key(&first.0).to_owned()]);
        let mut batch = vec![first];
        let mut again = VecDeque::new();
        while batch.len() < MAX_TURNS {
            let Some(next) = deferred.pop_front().or_else(|| waiting.try_recv().ok()) else { break };
            if keys.insert(G::key(&next.0).to_owned()) {
                batch.push(next);
            } else {
                again.push_back(next);
            }
        }
        again.append(&mut deferred);
        deferred = again;
        // While it runs, more turns queue up for the next statement.
        write_batch(&writes, batch).await;
    }
}

async fn write_batch<G: Grouped>(writes: &Arc<G>, batch: Vec<Waiter<G>>) {
    let (items, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let error = match writes.write(&items).await {
        Ok(outputs) if outputs.len() == items.len() => {
            for (waiter, output) in waiters.into_iter().zip(outputs) {
                let _ = waiter.send(Ok(output));
            }
            return;
        }
        Ok(outputs) => sqlx::Error::Protocol(format!("{} rows answered for {} turns", outputs.len(), items.len())),
        Err(e) => e,
    };
    if items.len() == 1 {
        if let Some(waiter) = waiters.into_iter().next() {
            let _ = waiter.send(Err(error));
        }
        return;
    }
    tracing::debug!(%error, turns = items.len(), "a grouped write failed: its turns are written one by one");
    let mut alone = JoinSet::new();
    for (item, waiter) in items.into_iter().zip(waiters) {
        let writes = writes.clone();
        alone.spawn(async move {
            let outcome = writes.write(std::slice::from_ref(&item)).await;
            let _ = waiter.send(outcome.and_then(|mut o| o.pop().ok_or(sqlx::Error::RowNotFound)));
        });
    }
    while alone.join_next().await.is_some() {}
}

//! One turn at a time per conversation, across replicas: a lease on the conversation row,
//! taken after the in-process lock (so a replica never competes with itself), renewed while
//! the turn runs, and given back when it ends. A crashed replica's lease runs out by itself.

use std::sync::Arc;
use std::time::Duration;

use switchboard_kit::time::now_ms;
use tokio::task::JoinHandle;

use crate::domain::Principal;
use crate::store::ConversationStore;

/// How long a lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(30);
/// How often a held lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for another replica's turn.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// A held lease; given back when dropped.
pub struct TurnLease {
    store: Arc<dyn ConversationStore>,
    conversation_id: String,
    holder: String,
    renewal: JoinHandle<()>,
    released: bool,
}

/// Why no lease was had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another replica's turn took longer than the caller could wait.
    #[error("another turn of this conversation is still running")]
    Busy,
    /// The conversation is not the caller's (or does not exist).
    #[error("conversation not found")]
    NotFound,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// The terms an attempt to take a lease offers: see [`acquire`].
#[derive(Debug, Clone)]
pub struct Terms {
    /// Who takes it.
    pub holder: String,
    /// Now (Unix ms).
    pub now: i64,
    /// Until when it holds (Unix ms).
    pub until: i64,
}

/// Takes the lease of `owner`'s conversation `conversation_id` by running `attempt` (which
/// takes it on the given terms and returns `Some` with whatever else it did in the same
/// transaction, or `None` when another holder's lease runs), waiting for another replica's
/// turn to end, until `deadline` (or five minutes). Someone else's conversation is
/// [`LeaseError::NotFound`], and is never leased.
pub async fn acquire<T, F, Fut>(
    store: &Arc<dyn ConversationStore>,
    conversation_id: &str,
    owner: &Principal,
    deadline: Option<std::time::Instant>,
    mut attempt: F,
) -> Result<(TurnLease, T), LeaseError>
where
    F: FnMut(Terms) -> Fut,
    Fut: Future<Output = Result<Option<T>, sqlx::Error>>,
{
    let holder = uuid::Uuid::new_v4().to_string();
    let give_up = deadline.unwrap_or_else(|| std::time::Instant::now() + MAX_WAIT);
    let mut pause = Duration::from_millis(10);
    let taken = loop {
        let now = now_ms();
        let terms = Terms { holder: holder.clone(), now, until: now + LEASE.as_millis() as i64 };
        if let Some(taken) = attempt(terms).await? {
            break taken;
        }
        if store.get_conversation(owner, conversation_id).await?.is_none() {
            return Err(LeaseError::NotFound);
        }
        if std::time::Instant::now() + pause >= give_up {
            return Err(LeaseError::Busy);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    };
    let renewal = {
        let (store, id, owner, holder) = (store.clone(), conversation_id.to_owned(), owner.clone(), holder.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let now = now_ms();
                if let Err(e) = store.lease_turn(&id, &owner, &holder, now, now + LEASE.as_millis() as i64).await {
                    tracing::warn!(error = %e, conversation_id = %id, "cannot renew a turn lease");
                }
            }
        })
    };
    let lease = TurnLease {
        store: store.clone(),
        conversation_id: conversation_id.to_owned(),
        holder,
        renewal,
        released: false,
    };
    Ok((lease, taken))
}

impl TurnLease {
    /// Who holds it.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Notes that the lease was given back (with the turn's last write), so that dropping it
    /// writes nothing more.
    pub fn released(&mut self) {
        self.renewal.abort();
        self.released = true;
    }
}

impl Drop for TurnLease {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        let (store, id, holder) = (self.store.clone(), self.conversation_id.clone(), self.holder.clone());
        tokio::spawn(async move {
            if let Err(e) = store.release_turn(&id, &holder).await {
                tracing::warn!(error = %e, conversation_id = %id, "cannot release a turn lease; it runs out by itself");
            }
        });
    }
}

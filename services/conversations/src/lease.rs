//! One turn at a time per conversation, across replicas: a lease on the conversation row,
//! taken after the in-process lock (so a replica never competes with itself), renewed while
//! the turn runs, and given back when it ends. A crashed replica's lease runs out by itself.

use std::sync::Arc;
use std::time::Duration;

use switchboard_kit::time::now_ms;
use tokio::task::JoinHandle;

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
    owner: String,
    renewal: JoinHandle<()>,
}

/// Why no lease was had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another replica's turn took longer than the caller could wait.
    #[error("another turn of this conversation is still running")]
    Busy,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Takes the lease of `conversation_id`, waiting for another replica's turn to end, until
/// `deadline` (or five minutes).
pub async fn acquire(
    store: &Arc<dyn ConversationStore>,
    conversation_id: &str,
    deadline: Option<std::time::Instant>,
) -> Result<TurnLease, LeaseError> {
    let owner = uuid::Uuid::new_v4().to_string();
    let give_up = deadline.unwrap_or_else(|| std::time::Instant::now() + MAX_WAIT);
    let mut pause = Duration::from_millis(10);
    loop {
        let now = now_ms();
        if store.lease_turn(conversation_id, &owner, now, now + LEASE.as_millis() as i64).await? {
            break;
        }
        if std::time::Instant::now() + pause >= give_up {
            return Err(LeaseError::Busy);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    let renewal = {
        let (store, id, owner) = (store.clone(), conversation_id.to_owned(), owner.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let now = now_ms();
                if let Err(e) = store.lease_turn(&id, &owner, now, now + LEASE.as_millis() as i64).await {
                    tracing::warn!(error = %e, conversation_id = %id, "cannot renew a turn lease");
                }
            }
        })
    };
    Ok(TurnLease { store: store.clone(), conversation_id: conversation_id.to_owned(), owner, renewal })
}

impl Drop for TurnLease {
    fn drop(&mut self) {
        self.renewal.abort();
        let (store, id, owner) = (self.store.clone(), self.conversation_id.clone(), self.owner.clone());
        tokio::spawn(async move {
            if let Err(e) = store.release_turn(&id, &owner).await {
                tracing::warn!(error = %e, conversation_id = %id, "cannot release a turn lease; it runs out by itself");
            }
        });
    }
}

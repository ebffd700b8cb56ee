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

/// Takes the lease of `owner`'s conversation `conversation_id`, waiting for another
/// replica's turn to end, until `deadline` (or five minutes). Someone else's conversation is
/// [`LeaseError::NotFound`], and is never leased.
pub async fn acquire(
    store: &Arc<dyn ConversationStore>,
    conversation_id: &str,
    owner: &Principal,
    deadline: Option<std::time::Instant>,
) -> Result<TurnLease, LeaseError> {
    let holder = uuid::Uuid::new_v4().to_string();
    let give_up = deadline.unwrap_or_else(|| std::time::Instant::now() + MAX_WAIT);
    let mut pause = Duration::from_millis(10);
    loop {
        let now = now_ms();
        if store.lease_turn(conversation_id, owner, &holder, now, now + LEASE.as_millis() as i64).await? {
            break;
        }
        if store.get_conversation(owner, conversation_id).await?.is_none() {
            return Err(LeaseError::NotFound);
        }
        if std::time::Instant::now() + pause >= give_up {
            return Err(LeaseError::Busy);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
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
    Ok(TurnLease { store: store.clone(), conversation_id: conversation_id.to_owned(), holder, renewal })
}

impl Drop for TurnLease {
    fn drop(&mut self) {
        self.renewal.abort();
        let (store, id, holder) = (self.store.clone(), self.conversation_id.clone(), self.holder.clone());
        tokio::spawn(async move {
            if let Err(e) = store.release_turn(&id, &holder).await {
                tracing::warn!(error = %e, conversation_id = %id, "cannot release a turn lease; it runs out by itself");
            }
        });
    }
}

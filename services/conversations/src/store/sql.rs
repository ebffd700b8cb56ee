//! [`ConversationStore`] on SQLite and PostgreSQL. Each query is written once and runs on
//! either backend through [`db_run!`]; times are Unix ms and ids text, which both read alike.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use switchboard_kit::db::Db;
use switchboard_kit::time::now_ms;
use switchboard_kit::{db_run, db_write};

use super::group_commit::GroupCommit;
use super::pg_turns::{CloseTurns, Closing, KEPT_FOR_CLOSINGS, KEPT_FOR_OPENINGS, Kept, OpenTurns, Opening};
use super::{
    ConversationFilter, ConversationStore, NewMessage, OpenedTurn, TurnOpening, UpstreamConversation, UpstreamMessage,
};
use crate::domain::{
    Conversation, Cursor, Message, MessageOutcome, MessageStatus, Page, PageRequest, Principal, Role, UsageRecord,
    new_id,
};

/// The SQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(super) db: Db,
    /// On PostgreSQL, the group commit of turns' openings and closings (started on first use).
    turns: Arc<OnceLock<PgTurns>>,
}

#[derive(Debug)]
struct PgTurns {
    open: GroupCommit<OpenTurns>,
    close: GroupCommit<CloseTurns>,
    /// The connections they keep, to close at shutdown.
    kept: [Arc<Kept>; 2],
}

impl SqlStore {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db, turns: Arc::default() }
    }

    /// The group commit of turns on PostgreSQL; `None` on SQLite, whose one writer commits
    /// turns one at a time.
    fn pg_turns(&self) -> Option<&PgTurns> {
        let Db::Postgres(pool) = &self.db else { return None };
        Some(self.turns.get_or_init(|| {
            let (opening, closing) =
                (Arc::new(Kept::new(pool, KEPT_FOR_OPENINGS)), Arc::new(Kept::new(pool, KEPT_FOR_CLOSINGS)));
            PgTurns {
                open: GroupCommit::start(OpenTurns(opening.clone())),
                close: GroupCommit::start(CloseTurns(closing.clone())),
                kept: [opening, closing],
            }
        }))
    }

    /// Closes every connection: the turns' kept ones, then the pool's.
    pub async fn close(&self) {
        if let Some(turns) = self.turns.get() {
            for kept in &turns.kept {
                kept.close().await;
            }
        }
        self.db.close().await;
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    id: String,
    system_id: String,
    user_id: String,
    title: String,
    upstream_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    message_count: i64,
    number: Option<i64>,
}

impl From<ConversationRow> for Conversation {
    fn from(r: ConversationRow) -> Self {
        Self {
            id: r.id,
            owner: Principal { system_id: r.system_id, user_id: r.user_id },
            title: r.title,
            upstream_id: r.upstream_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            message_count: r.message_count,
            number: r.number.unwrap_or_default(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    conversation_id: String,
    role: String,
    content: String,
    status: String,
    model: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    error: String,
    created_at: i64,
    number: Option<i64>,
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Self {
        Self {
            id: r.id,
            conversation_id: r.conversation_id,
            role: Role::parse(&r.role),
            content: r.content,
            status: MessageStatus::parse(&r.status),
            model: r.model,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            error: r.error,
            created_at: r.created_at,
            number: r.number.unwrap_or_default(),
        }
    }
}

pub(super) const CONVERSATION_COLUMNS: &str =
    "id, system_id, user_id, title, upstream_id, created_at, updated_at, message_count, number";

/// A conversation by its id (`$1`), if it is the owner's (`$2` system, `$3` user). The owner is
/// compared with `IS NOT DISTINCT FROM` (the same, as both sides are never null), which no index
/// serves, so PostgreSQL finds the row by its key. Compared with `=`, the generic plan it keeps
/// after five runs, when made on tables not yet analysed, finds the row by owner instead: through
/// every conversation of theirs.
pub(super) const BY_ID_OF_OWNER: &str =
    "id = $1 AND system_id IS NOT DISTINCT FROM $2 AND user_id IS NOT DISTINCT FROM $3";

/// The query of [`SqlStore::insert_message_sql`] for message `$m`, written at `$now`.
macro_rules! insert_message {
    ($sql:expr, $m:expr, $now:expr) => {
        sqlx::query_scalar($sql)
            .bind(&$m.id)
            .bind(&$m.conversation_id)
            .bind($m.role.as_str())
            .bind(&$m.content)
            .bind($m.status.as_str())
            .bind(&$m.model)
            .bind($now)
    };
}

/// Where a lease may be taken: `owner`'s conversation `$3` (`$5`, `$6`) whose lease is free,
/// expired (before `$4`) or already held by `$1`.
const LEASABLE: &str = "WHERE id = $3 AND system_id = $5 AND user_id = $6 \
     AND (turn_lease_until IS NULL OR turn_lease_until < $4 OR turn_lease_owner = $1)";

/// Binds a lease's terms as [`LEASABLE`] and the statements around it number them: `$1` the
/// holder, `$2` the lease's end, `$3` the conversation, `$4` now, `$5` and `$6` the owner.
macro_rules! bind_lease {
    ($query:expr, $holder:expr, $until:expr, $conversation_id:expr, $now:expr, $owner:expr) => {
        $query
            .bind($holder)
            .bind($until)
            .bind($conversation_id)
            .bind($now)
            .bind(&$owner.system_id)
            .bind(&$owner.user_id)
    };
}

const FINISH_MESSAGE: &str = "UPDATE messages SET status = $1, content = $2, model = $3, prompt_tokens = $4, \
     completion_tokens = $5, error = $6, updated_at = $7 WHERE id = $8";

/// `sql` (which starts with [`FINISH_MESSAGE`]'s parameters) storing message `id`'s outcome,
/// for either backend.
fn finish_query<'q, DB: sqlx::Database>(
    sql: impl sqlx::SqlSafeStr,
    id: &'q str,
    outcome: &'q MessageOutcome,
    now: i64,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(sql)
        .bind(outcome.status.as_str())
        .bind(outcome.content.as_str())
        .bind(outcome.model.as_str())
        .bind(outcome.prompt_tokens)
        .bind(outcome.completion_tokens)
        .bind(outcome.error.as_str())
        .bind(now)
        .bind(id)
}

const RELEASE_TURN: &str =
    "UPDATE conversations SET turn_lease_owner = NULL, turn_lease_until = NULL WHERE id = $1 AND turn_lease_owner = $2";

const MESSAGE_COLUMNS: &str =
    "id, conversation_id, role, content, status, model, prompt_tokens, completion_tokens, error, created_at, number";

impl SqlStore {
    /// The `number` column and value of a new row of `table` (`conversations` or `messages`):
    /// the column's sequence on PostgreSQL, MAX + 1 on SQLite (one writer at a time, so no two
    /// rows race for a number).
    fn numbered(&self, table: &str) -> (&'static str, String) {
        match self.db {
            Db::Sqlite(_) => (", number", format!(", (SELECT COALESCE(MAX(number), 0) + 1 FROM {table})")),
            Db::Postgres(_) => ("", String::new()),
        }
    }

    /// The statement of a turn's opening that creates the conversation (`create`) or takes the
    /// lease of an existing one, answering its row: parameters as [`bind_lease!`] binds them,
    /// `$7` the new one's title.
    fn turn_conversation_sql(&self, create: bool) -> String {
        if create {
            let (column, value) = self.numbered("conversations");
            format!(
                "INSERT INTO conversations (id, system_id, user_id, title, created_at, updated_at, message_count, \
                 turn_lease_owner, turn_lease_until{column}) VALUES ($3, $5, $6, $7, $4, $4, 2, $1, $2{value}) \
                 RETURNING {CONVERSATION_COLUMNS}"
            )
        } else {
            format!(
                "UPDATE conversations SET turn_lease_owner = $1, turn_lease_until = $2, updated_at = $4, \
                 message_count = message_count + 2 {LEASABLE} RETURNING {CONVERSATION_COLUMNS}"
            )
        }
    }

    /// The insert of a message row, answering its number (bound by [`insert_message!`]).
    fn insert_message_sql(&self) -> String {
        let (column, value) = self.numbered("messages");
        format!(
            "INSERT INTO messages (id, conversation_id, role, content, status, model, created_at, updated_at{column}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7{value}) RETURNING number"
        )
    }

    /// Conversations of a tenant, of one user of it when `user_id` is given, most recently
    /// updated first (each case has its index).
    async fn list(
        &self,
        system_id: &str,
        user_id: Option<&str>,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, sqlx::Error> {
        let (before_time, before_id) = match &page.cursor {
            Some(c) => (c.time, c.id.clone()),
            None => (i64::MAX, String::new()),
        };
        // `$2` is the user, or (for the whole tenant) a condition that always holds.
        let user = if user_id.is_some() { "user_id = $2" } else { "$2 = ''" };
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE system_id = $1 AND {user} AND updated_at >= $3 AND updated_at <= $4 \
               AND (updated_at < $5 OR (updated_at = $5 AND id < $6)) \
             ORDER BY updated_at DESC, id DESC LIMIT $7"
        );
        let rows: Vec<ConversationRow> = db_run!(&self.db, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(system_id)
                .bind(user_id.unwrap_or_default())
                .bind(filter.from.unwrap_or(i64::MIN))
                .bind(filter.to.unwrap_or(i64::MAX))
                .bind(before_time)
                .bind(&before_id)
                .bind(i64::from(page.size) + 1)
                .fetch_all(pool)
                .await
        })?;
        let items = rows.into_iter().map(Conversation::from).collect();
        Ok(next_page(items, page.size, |c: &Conversation| Cursor { time: c.updated_at, id: c.id.clone() }))
    }
}

/// Most bytes of message text in one page of messages (gRPC messages end at 4 MiB).
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// How many of `items`, from the first, fit in [`MAX_PAGE_BYTES`]; at least one.
fn fitting_messages(items: &[Message]) -> usize {
    let mut bytes = 0;
    for (i, m) in items.iter().enumerate() {
        // Ids, times and the rest: a generous allowance per message.
        bytes += m.content.len() + m.error.len() + 256;
        if bytes > MAX_PAGE_BYTES {
            return i.max(1);
        }
    }
    items.len()
}

fn next_page<T>(mut items: Vec<T>, size: u32, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let next = if items.len() > size as usize {
        items.truncate(size as usize);
        items.last().map(key)
    } else {
        None
    };
    Page { items, next }
}

#[async_trait]
impl ConversationStore for SqlStore {
    async fn create_conversation(&self, owner: &Principal, title: &str) -> Result<Conversation, sqlx::Error> {
        let now = now_ms();
        let mut conversation = Conversation {
            id: new_id(),
            owner: owner.clone(),
            title: title.to_owned(),
            upstream_id: None,
            created_at: now,
            updated_at: now,
            message_count: 0,
            number: 0,
        };
        let (column, value) = self.numbered("conversations");
        let sql = format!(
            "INSERT INTO conversations (id, system_id, user_id, title, created_at, updated_at, message_count{column}) \
             VALUES ($1, $2, $3, $4, $5, $5, 0{value}) RETURNING number"
        );
        conversation.number = db_write!(&self.db, |pool| {
            sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                .bind(&conversation.id)
                .bind(&owner.system_id)
                .bind(&owner.user_id)
                .bind(title)
                .bind(now)
                .fetch_one(pool)
                .await
        })?;
        Ok(conversation)
    }

    async fn get_conversation(&self, owner: &Principal, id: &str) -> Result<Option<Conversation>, sqlx::Error> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {BY_ID_OF_OWNER}");
        let row: Option<ConversationRow> = db_run!(&self.db, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(id)
                .bind(&owner.system_id)
                .bind(&owner.user_id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }

    async fn find_conversation_by_number(&self, number: i64) -> Result<Option<Conversation>, sqlx::Error> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE number = $1");
        let row: Option<ConversationRow> = db_run!(&self.db, |pool| sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(number)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(Into::into))
    }

    async fn find_conversation(&self, id: &str) -> Result<Option<Conversation>, sqlx::Error> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1");
        let row: Option<ConversationRow> =
            db_run!(&self.db, |pool| sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(Into::into))
    }

    async fn list_conversations(
        &self,
        owner: &Principal,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, sqlx::Error> {
        self.list(&owner.system_id, Some(&owner.user_id), filter, page).await
    }

    async fn list_tenant_conversations(
        &self,
        system_id: &str,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, sqlx::Error> {
        self.list(system_id, None, filter, page).await
    }

    async fn append_messages(&self, messages: Vec<NewMessage>) -> Result<Vec<Message>, sqlx::Error> {
        let now = now_ms();
        let mut stored: Vec<Message> = messages
            .into_iter()
            .map(|m| Message {
                id: new_id(),
                conversation_id: m.conversation_id,
                role: m.role,
                content: m.content,
                status: m.status,
                model: m.model,
                prompt_tokens: 0,
                completion_tokens: 0,
                error: String::new(),
                created_at: now,
                number: 0,
            })
            .collect();
        let sql = self.insert_message_sql();
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for m in &mut stored {
                m.number = insert_message!(AssertSqlSafe(sql.as_str()), m, now).fetch_one(&mut *tx).await?;
                sqlx::query(
                    "UPDATE conversations SET updated_at = $1, message_count = message_count + 1 WHERE id = $2",
                )
                .bind(now)
                .bind(&m.conversation_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(stored)
    }

    async fn finish_message(&self, id: &str, outcome: MessageOutcome) -> Result<(), sqlx::Error> {
        let now = now_ms();
        db_write!(&self.db, |pool| finish_query(FINISH_MESSAGE, id, &outcome, now).execute(pool).await.map(|_| ()))
    }

    async fn list_messages(&self, conversation_id: &str, page: &PageRequest) -> Result<Page<Message>, sqlx::Error> {
        let (after_time, after_id) = match &page.cursor {
            Some(c) => (c.time, c.id.clone()),
            None => (i64::MIN, String::new()),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
               AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
             ORDER BY created_at, id LIMIT $4"
        );
        let rows: Vec<MessageRow> = db_run!(&self.db, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(conversation_id)
                .bind(after_time)
                .bind(&after_id)
                .bind(i64::from(page.size) + 1)
                .fetch_all(pool)
                .await
        })?;
        let mut items: Vec<Message> = rows.into_iter().map(Message::from).collect();
        let cursor = |m: &Message| Cursor { time: m.created_at, id: m.id.clone() };
        // A page also ends before it outgrows a gRPC message, however long the messages.
        let fitting = fitting_messages(&items);
        if fitting < items.len() && fitting < page.size as usize {
            items.truncate(fitting);
            let next = items.last().map(cursor);
            return Ok(Page { items, next });
        }
        Ok(next_page(items, page.size, cursor))
    }

    async fn recent_messages(&self, conversation_id: &str, limit: u32) -> Result<Vec<Message>, sqlx::Error> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND status IN ('complete', 'partial') \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows: Vec<MessageRow> = db_run!(&self.db, |pool| {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(conversation_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().rev().map(Message::from).collect())
    }

    async fn clear_history(&self, owner: &Principal) -> Result<Vec<String>, sqlx::Error> {
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // A write first: on SQLite a transaction that reads and then writes fails at once
            // (SQLITE_BUSY) when another write landed in between; one that writes first waits.
            // Finished idempotent answers hold the text of what is deleted.
            sqlx::query("DELETE FROM idempotency_keys WHERE system_id = $1 AND user_id = $2 AND status = 'complete'")
                .bind(&owner.system_id)
                .bind(&owner.user_id)
                .execute(&mut *tx)
                .await?;
            let ids: Vec<String> =
                sqlx::query_scalar("SELECT id FROM conversations WHERE system_id = $1 AND user_id = $2")
                    .bind(&owner.system_id)
                    .bind(&owner.user_id)
                    .fetch_all(&mut *tx)
                    .await?;
            sqlx::query(
                "DELETE FROM messages WHERE conversation_id IN \
                 (SELECT id FROM conversations WHERE system_id = $1 AND user_id = $2)",
            )
            .bind(&owner.system_id)
            .bind(&owner.user_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM conversations WHERE system_id = $1 AND user_id = $2")
                .bind(&owner.system_id)
                .bind(&owner.user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(ids)
        })
    }

    async fn sweep_in_progress(&self, before: i64, now: i64) -> Result<u64, sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query(
                "UPDATE messages SET status = CASE WHEN content = '' THEN 'failed' ELSE 'partial' END, \
                 error = 'interrupted: the turn did not finish (the service stopped or crashed)', updated_at = $1 \
                 WHERE status = 'in_progress' AND updated_at < $2",
            )
            .bind(now)
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
    }

    async fn link_upstream(
        &self,
        conversation_id: &str,
        upstream_conversation_id: &str,
        messages: &[(&str, String)],
    ) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE conversations SET upstream_id = $1 WHERE id = $2 AND upstream_id IS NULL")
                .bind(upstream_conversation_id)
                .bind(conversation_id)
                .execute(&mut *tx)
                .await?;
            for (message_id, upstream_id) in messages {
                sqlx::query("UPDATE messages SET upstream_id = $1 WHERE id = $2")
                    .bind(upstream_id)
                    .bind(*message_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    async fn principals(&self, system_id: Option<&str>) -> Result<Vec<Principal>, sqlx::Error> {
        let rows: Vec<(String, String)> = db_run!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT DISTINCT system_id, user_id FROM conversations WHERE ($1 = '' OR system_id = $1) \
                 ORDER BY system_id, user_id",
            )
            .bind(system_id.unwrap_or_default())
            .fetch_all(pool)
            .await
        })?;
        Ok(rows.into_iter().map(|(system_id, user_id)| Principal { system_id, user_id }).collect())
    }

    async fn upsert_upstream_conversation(
        &self,
        owner: &Principal,
        upstream: &UpstreamConversation,
    ) -> Result<(String, bool), sqlx::Error> {
        let id = new_id();
        let (column, value) = self.numbered("conversations");
        let sql = format!(
            "INSERT INTO conversations (id, system_id, user_id, title, upstream_id, created_at, updated_at, message_count{column}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0{value}) ON CONFLICT (system_id, user_id, upstream_id) DO NOTHING"
        );
        db_write!(&self.db, |pool| {
            let inserted = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(&id)
                .bind(&owner.system_id)
                .bind(&owner.user_id)
                .bind(&upstream.title)
                .bind(&upstream.id)
                .bind(upstream.created_at)
                .bind(upstream.updated_at)
                .execute(pool)
                .await?
                .rows_affected();
            let existing: String = sqlx::query_scalar(
                "SELECT id FROM conversations WHERE system_id = $1 AND user_id = $2 AND upstream_id = $3",
            )
            .bind(&owner.system_id)
            .bind(&owner.user_id)
            .bind(&upstream.id)
            .fetch_one(pool)
            .await?;
            Ok((existing, inserted == 1))
        })
    }

    async fn upsert_upstream_message(&self, conversation_id: &str, m: &UpstreamMessage) -> Result<bool, sqlx::Error> {
        let (column, value) = self.numbered("messages");
        let sql = format!(
            "INSERT INTO messages (id, conversation_id, role, content, status, model, created_at, updated_at, upstream_id{column}) \
             VALUES ($1, $2, $3, $4, 'complete', '', $5, $5, $6{value}) ON CONFLICT (conversation_id, upstream_id) DO NOTHING"
        );
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(new_id())
                .bind(conversation_id)
                .bind(m.role.as_str())
                .bind(&m.content)
                .bind(m.created_at)
                .bind(&m.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 1 {
                sqlx::query(
                    "UPDATE conversations SET message_count = message_count + 1, \
                     updated_at = CASE WHEN updated_at < $1 THEN $1 ELSE updated_at END WHERE id = $2",
                )
                .bind(m.created_at)
                .bind(conversation_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(inserted == 1)
        })
    }

    async fn lease_turn(
        &self,
        conversation_id: &str,
        owner: &Principal,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, sqlx::Error> {
        db_write!(&self.db, |pool| {
            let sql = format!("UPDATE conversations SET turn_lease_owner = $1, turn_lease_until = $2 {LEASABLE}");
            bind_lease!(sqlx::query(AssertSqlSafe(sql.as_str())), holder, until, conversation_id, now, owner)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    async fn open_turn(&self, turn: TurnOpening<'_>) -> Result<Option<OpenedTurn>, sqlx::Error> {
        let TurnOpening { owner, conversation_id, create, holder, now, until, message, model } = turn;
        let row = |role: Role, content: &str, status: MessageStatus, model: &str| Message {
            id: new_id(),
            conversation_id: conversation_id.to_owned(),
            role,
            content: content.to_owned(),
            status,
            model: model.to_owned(),
            prompt_tokens: 0,
            completion_tokens: 0,
            error: String::new(),
            created_at: now,
            number: 0,
        };
        let mut rows = [
            row(Role::User, message, MessageStatus::Complete, ""),
            row(Role::Assistant, "", MessageStatus::InProgress, model),
        ];
        if let Some(turns) = self.pg_turns() {
            let [mut user_message, mut assistant] = rows;
            let opening = Opening {
                conversation_id: conversation_id.to_owned(),
                title: create.map(str::to_owned),
                system_id: owner.system_id.clone(),
                user_id: owner.user_id.clone(),
                holder: holder.to_owned(),
                now,
                until,
                user_message_id: user_message.id.clone(),
                message: message.to_owned(),
                answer_id: assistant.id.clone(),
                model: model.to_owned(),
            };
            let Some(opened) = turns.open.write(opening).await? else { return Ok(None) };
            user_message.number = opened.user_number;
            assistant.number = opened.answer_number;
            // Returned as it was before this turn's two rows.
            let mut conversation = Conversation::from(opened.conversation);
            conversation.message_count -= 2;
            return Ok(Some(OpenedTurn { conversation, user_message, assistant }));
        }
        let conversation_sql = self.turn_conversation_sql(create.is_some());
        let message_sql = self.insert_message_sql();
        let conversation: Option<ConversationRow> = db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let mut query = bind_lease!(
                sqlx::query_as(AssertSqlSafe(conversation_sql.as_str())),
                holder,
                until,
                conversation_id,
                now,
                owner
            );
            if let Some(title) = create {
                query = query.bind(title);
            }
            let conversation: Option<ConversationRow> = query.fetch_optional(&mut *tx).await?;
            if conversation.is_none() {
                return Ok(None);
            }
            for m in &mut rows {
                m.number = insert_message!(AssertSqlSafe(message_sql.as_str()), m, now).fetch_one(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(conversation)
        })?;
        let Some(conversation) = conversation else { return Ok(None) };
        // Returned as it was before this turn's two rows.
        let mut conversation = Conversation::from(conversation);
        conversation.message_count -= 2;
        let [user_message, assistant] = rows;
        Ok(Some(OpenedTurn { conversation, user_message, assistant }))
    }

    async fn close_turn(
        &self,
        conversation_id: &str,
        message_id: &str,
        outcome: MessageOutcome,
        holder: &str,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms();
        if let Some(turns) = self.pg_turns() {
            let closing = Closing {
                conversation_id: conversation_id.to_owned(),
                message_id: message_id.to_owned(),
                outcome,
                holder: holder.to_owned(),
                now,
            };
            return turns.close.write(closing).await;
        }
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            finish_query(FINISH_MESSAGE, message_id, &outcome, now).execute(&mut *tx).await?;
            sqlx::query(RELEASE_TURN).bind(conversation_id).bind(holder).execute(&mut *tx).await?;
            tx.commit().await
        })
    }

    async fn release_turn(&self, conversation_id: &str, owner: &str) -> Result<(), sqlx::Error> {
        db_write!(&self.db, |pool| {
            sqlx::query(RELEASE_TURN).bind(conversation_id).bind(owner).execute(pool).await.map(|_| ())
        })
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), sqlx::Error> {
        if records.is_empty() {
            return Ok(());
        }
        db_write!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for r in records {
                sqlx::query(
                    "INSERT INTO usage_records (id, system_id, user_id, conversation_id, message_id, key_id, model, \
                     provider, prompt_tokens, completion_tokens, latency_ms, cost_micros, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(new_id())
                .bind(&r.owner.system_id)
                .bind(&r.owner.user_id)
                .bind(&r.conversation_id)
                .bind(&r.message_id)
                .bind(&r.key_id)
                .bind(&r.model)
                .bind(&r.provider)
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.latency_ms)
                .bind(r.cost_micros)
                .bind(r.created_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }
}

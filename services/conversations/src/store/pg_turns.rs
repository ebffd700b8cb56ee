//! Turns opened and closed on PostgreSQL, many to a statement ([`super::group_commit`]). Each
//! statement binds one array per column (`unnest`), so its text, and its prepared plan, is the
//! same however many turns it carries.
//!
//! The turns' rows end in `LIMIT` (bound to their count), which changes nothing they hold but
//! how PostgreSQL plans them: it counts an array of unknown length as 10 rows, and a `LIMIT`
//! of unknown value as a tenth of them. With one row expected, it looks rows up by index even
//! in the generic plan it keeps after five runs, and even when that plan was made while the
//! tables were empty; expecting 10, it would keep a plan that scans the whole table each time.
//! A leased conversation's owner is compared as in [`super::sql::BY_ID_OF_OWNER`], so that it
//! is found by its key, not through its owner's every conversation.
//!
//! Each kind keeps a connection of its own ([`Kept`]), outside the pool.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions as _, Connection as _};
use switchboard_kit::db::PING_WHEN_IDLE_FOR;

use super::group_commit::Grouped;
use crate::domain::MessageOutcome;

/// A turn to open: the conversation to create (`title` set) or to lease, and its two rows.
pub(super) struct Opening {
    pub conversation_id: String,
    pub title: Option<String>,
    pub system_id: String,
    pub user_id: String,
    pub holder: String,
    pub now: i64,
    pub until: i64,
    pub user_message_id: String,
    pub message: String,
    pub answer_id: String,
    pub model: String,
}

/// A conversation row with the numbers of the turn's two messages.
#[derive(sqlx::FromRow)]
pub(super) struct OpenedRow {
    #[sqlx(flatten)]
    pub conversation: super::sql::ConversationRow,
    pub user_number: i64,
    pub answer_number: i64,
    /// Which turn of the statement (from 1).
    turn: i64,
}

/// Opens turns: creates or leases each conversation, and inserts the user message and the
/// answer row (`in_progress`) of each one created or leased. A turn whose conversation is
/// leased to another holder, or is not the owner's, writes nothing and gets `None`.
pub(super) struct OpenTurns(pub std::sync::Arc<Kept>);

const OPEN_TURNS: &str = "\
WITH v AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
                       $8::text[], $9::text[], $10::text[], $11::text[])
    WITH ORDINALITY AS v (conversation_id, title, system_id, user_id, holder, now, until,
                          user_message_id, message, answer_id, model, turn)
  LIMIT $12
),
created AS (
  INSERT INTO conversations (id, system_id, user_id, title, created_at, updated_at, message_count,
                             turn_lease_owner, turn_lease_until)
  SELECT conversation_id, system_id, user_id, title, now, now, 2, holder, until
  FROM v WHERE title IS NOT NULL ORDER BY turn
  RETURNING id, system_id, user_id, title, upstream_id, created_at, updated_at, message_count, number
),
leased AS (
  UPDATE conversations c SET turn_lease_owner = v.holder, turn_lease_until = v.until, updated_at = v.now,
         message_count = c.message_count + 2
  FROM v
  WHERE v.title IS NULL AND c.id = v.conversation_id
    AND c.system_id IS NOT DISTINCT FROM v.system_id AND c.user_id IS NOT DISTINCT FROM v.user_id
    AND (c.turn_lease_until IS NULL OR c.turn_lease_until < v.now OR c.turn_lease_owner = v.holder)
  RETURNING c.id, c.system_id, c.user_id, c.title, c.upstream_id, c.created_at, c.updated_at, c.message_count,
            c.number
),
c AS (SELECT * FROM created UNION ALL SELECT * FROM leased),
m AS (
  INSERT INTO messages (id, conversation_id, role, content, status, model, created_at, updated_at)
  SELECT r.id, v.conversation_id, r.role, r.content, r.status, r.model, v.now, v.now
  FROM v JOIN c ON c.id = v.conversation_id
  CROSS JOIN LATERAL (VALUES (v.user_message_id, 'user', v.message, 'complete', '', 1),
                             (v.answer_id, 'assistant', '', 'in_progress', v.model, 2))
    AS r (id, role, content, status, model, n)
  ORDER BY v.turn, r.n
  RETURNING id, number
)
SELECT c.*, v.turn, (SELECT number FROM m WHERE m.id = v.user_message_id) AS user_number,
       (SELECT number FROM m WHERE m.id = v.answer_id) AS answer_number
FROM c JOIN v ON v.conversation_id = c.id";

impl Grouped for OpenTurns {
    type Item = Opening;
    type Output = Option<OpenedRow>;

    fn key(item: &Opening) -> &str {
        &item.conversation_id
    }

    async fn write(&self, items: &[Opening]) -> Result<Vec<Option<OpenedRow>>, sqlx::Error> {
        let column = |f: fn(&Opening) -> &str| items.iter().map(f).collect::<Vec<&str>>();
        let rows = sqlx::query_as(OPEN_TURNS)
            .bind(column(|i| &i.conversation_id))
            .bind(items.iter().map(|i| i.title.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(column(|i| &i.system_id))
            .bind(column(|i| &i.user_id))
            .bind(column(|i| &i.holder))
            .bind(items.iter().map(|i| i.now).collect::<Vec<i64>>())
            .bind(items.iter().map(|i| i.until).collect::<Vec<i64>>())
            .bind(column(|i| &i.user_message_id))
            .bind(column(|i| &i.message))
            .bind(column(|i| &i.answer_id))
            .bind(column(|i| &i.model))
            .bind(i64::try_from(items.len()).unwrap_or(i64::MAX));
        let rows: Vec<OpenedRow> = self.0.run(async |connection| rows.fetch_all(connection).await).await?;
        let mut opened: Vec<Option<OpenedRow>> = items.iter().map(|_| None).collect();
        for row in rows {
            let slot = usize::try_from(row.turn - 1).ok().and_then(|i| opened.get_mut(i));
            let Some(slot) = slot else {
                return Err(sqlx::Error::Protocol(format!("turn {} of {} answered", row.turn, items.len())));
            };
            *slot = Some(row);
        }
        Ok(opened)
    }
}

/// A turn to close: the answer's outcome, and the lease to give back if `holder` still holds it.
pub(super) struct Closing {
    pub conversation_id: String,
    pub message_id: String,
    pub outcome: MessageOutcome,
    pub holder: String,
    pub now: i64,
}

/// Closes turns: stores each answer's outcome and gives its lease back.
pub(super) struct CloseTurns(pub std::sync::Arc<Kept>);

const CLOSE_TURNS: &str = "\
WITH v AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[],
                       $8::bigint[], $9::text[], $10::text[])
    AS v (id, status, content, model, prompt_tokens, completion_tokens, error, now, conversation_id, holder)
  LIMIT $11
),
m AS (
  UPDATE messages SET status = v.status, content = v.content, model = v.model, prompt_tokens = v.prompt_tokens,
         completion_tokens = v.completion_tokens, error = v.error, updated_at = v.now
  FROM v WHERE messages.id = v.id
)
UPDATE conversations SET turn_lease_owner = NULL, turn_lease_until = NULL
FROM v WHERE conversations.id = v.conversation_id AND conversations.turn_lease_owner = v.holder";

impl Grouped for CloseTurns {
    type Item = Closing;
    type Output = ();

    fn key(item: &Closing) -> &str {
        &item.conversation_id
    }

    async fn write(&self, items: &[Closing]) -> Result<Vec<()>, sqlx::Error> {
        let column = |f: fn(&Closing) -> &str| items.iter().map(f).collect::<Vec<&str>>();
        let number = |f: fn(&Closing) -> i64| items.iter().map(f).collect::<Vec<i64>>();
        let statement = sqlx::query(CLOSE_TURNS)
            .bind(column(|i| &i.message_id))
            .bind(column(|i| i.outcome.status.as_str()))
            .bind(column(|i| &i.outcome.content))
            .bind(column(|i| &i.outcome.model))
            .bind(number(|i| i.outcome.prompt_tokens))
            .bind(number(|i| i.outcome.completion_tokens))
            .bind(column(|i| &i.outcome.error))
            .bind(number(|i| i.now))
            .bind(column(|i| &i.conversation_id))
            .bind(column(|i| &i.holder))
            .bind(i64::try_from(items.len()).unwrap_or(i64::MAX));
        self.0.run(async |connection| statement.execute(connection).await).await?;
        Ok(vec![(); items.len()])
    }
}

/// How PostgreSQL (`pg_stat_activity.application_name`) names the connection turns open on.
pub const KEPT_FOR_OPENINGS: &str = "switchboard turn openings";
/// How PostgreSQL names the connection turns close on.
pub const KEPT_FOR_CLOSINGS: &str = "switchboard turn closings";

/// Longest wait for a new connection, or for an idle one's ping, as the pool's `acquire_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept connection is replaced once this old, as the pool's `max_lifetime`.
const KEPT_AT_MOST: Duration = Duration::from_secs(30 * 60);
/// After a connect that ran out of time (a server that does not answer), statements fail at
/// once for this long instead of each waiting as long again. A refused connect (a server
/// restarting) is tried again by the next statement, so turns resume as soon as it is back.
const RETRY_CONNECT_AFTER: Duration = Duration::from_secs(1);

/// The connection one kind of grouped write keeps for itself. Its statements run one at a time,
/// so one connection serves them all. Outside the pool, it skips the round trip the pool spends
/// testing each connection it takes back (one per statement), and the turns never wait while the
/// pool opens a connection as it grows. As the pool does, it is pinged before use after sitting
/// idle ([`PING_WHEN_IDLE_FOR`]) and replaced after [`KEPT_AT_MOST`]; it is also replaced after
/// any failed statement (a server shutting down answers with an error before it goes).
pub(super) struct Kept {
    options: PgConnectOptions,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    connection: Option<Held>,
    /// Closed for good ([`Kept::close`]): no statement runs any more.
    closed: bool,
    /// When a connect last ran out of time, unless one has ended otherwise since.
    connect_hung: Option<Instant>,
}

struct Held {
    connection: PgConnection,
    opened: Instant,
    used: Instant,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept").field("application_name", &self.options.get_application_name()).finish()
    }
}

impl Kept {
    /// A connection like `pool`'s, shown to PostgreSQL (`pg_stat_activity`) as `name`; opened on
    /// first use.
    pub(super) fn new(pool: &PgPool, name: &str) -> Self {
        let options = (*pool.connect_options()).clone().application_name(name);
        Self { options, state: tokio::sync::Mutex::default() }
    }

    /// Runs `statement` on the kept connection, opening one first when none is kept.
    async fn run<T>(
        &self,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        if state.closed {
            return Err(sqlx::Error::PoolClosed);
        }
        if let Some(held) = state.connection.as_mut()
            && !Self::still_good(held).await
        {
            state.connection = None;
        }
        let held = match &mut state.connection {
            Some(held) => held,
            none => none.insert(self.connect(&mut state.connect_hung).await?),
        };
        let outcome = statement(&mut held.connection).await;
        held.used = Instant::now();
        if outcome.is_err() {
            state.connection = None;
        }
        outcome
    }

    /// Closes the kept connection, telling the server, once the running statement is done; no
    /// statement runs after.
    pub(super) async fn close(&self) {
        let mut state = self.state.lock().await;
        state.closed = true;
        if let Some(held) = state.connection.take()
            && let Err(error) = held.connection.close().await
        {
            tracing::debug!(%error, "closing a kept database connection failed");
        }
    }

    /// Whether a kept connection may serve the next statement: young enough and, when it sat
    /// idle, answering a ping in time.
    async fn still_good(held: &mut Held) -> bool {
        if held.opened.elapsed() >= KEPT_AT_MOST {
            return false;
        }
        if held.used.elapsed() < PING_WHEN_IDLE_FOR {
            return true;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, held.connection.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::info!(%error, "a kept database connection was gone; opening another");
                false
            }
            Err(_) => {
                tracing::info!("a kept database connection did not answer its ping; opening another");
                false
            }
        }
    }

    async fn connect(&self, hung: &mut Option<Instant>) -> Result<Held, sqlx::Error> {
        if hung.is_some_and(|at| at.elapsed() < RETRY_CONNECT_AFTER) {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the database did not answer a connect a moment ago",
            )));
        }
        let Ok(connected) = tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect()).await else {
            *hung = Some(Instant::now());
            return Err(sqlx::Error::PoolTimedOut);
        };
        *hung = None;
        let now = Instant::now();
        connected.map(|connection| Held { connection, opened: now, used: now })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use sqlx::Row as _;
    use switchboard_kit::db::Db;

    /// The plan PostgreSQL keeps for `statement` once it goes generic (after five runs), made
    /// while the tables are empty and never analysed, as on a new deployment: the plan that
    /// would otherwise stay until an autoanalyze.
    async fn generic_plan_on_empty_tables(statement: &str, arguments: &str) -> String {
        let test_db = switchboard_test_support::db::postgres().await;
        let db = Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
        db.migrate(&crate::MIGRATIONS).await.unwrap();
        let Db::Postgres(pool) = db else { panic!("{} is not PostgreSQL", test_db.url) };
        let mut session = pool.acquire().await.unwrap();
        let setup = format!("SET plan_cache_mode = force_generic_plan; PREPARE turns AS {statement}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup)).execute(&mut *session).await.unwrap();
        let explain = format!("EXPLAIN EXECUTE turns({arguments})");
        let lines = sqlx::raw_sql(sqlx::AssertSqlSafe(explain)).fetch_all(&mut *session).await.unwrap();
        lines.iter().map(|row| row.get::<String, _>(0)).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn opening_turns_looks_rows_up_by_key_even_in_a_plan_made_on_empty_tables() {
        let plan = generic_plan_on_empty_tables(
            super::OPEN_TURNS,
            "'{c}', '{NULL}', '{s}', '{u}', '{h}', '{1}', '{2}', '{m1}', '{hello}', '{m2}', '{gpt}', 1",
        )
        .await;
        assert!(!plan.contains("Seq Scan on conversations"), "{plan}");
        assert!(!plan.contains("Seq Scan on messages"), "{plan}");
        assert!(plan.contains("Index Scan using conversations_pkey on conversations c"), "the lease: {plan}");
    }

    #[tokio::test]
    async fn a_conversation_is_looked_up_by_key_even_in_a_plan_made_on_empty_tables() {
        use super::super::sql::{BY_ID_OF_OWNER, CONVERSATION_COLUMNS};
        let select = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {BY_ID_OF_OWNER}");
        let plan = generic_plan_on_empty_tables(&select, "'c', 's', 'u'").await;
        assert!(plan.contains("Index Scan using conversations_pkey on conversations"), "{plan}");
        assert!(plan.contains("Index Cond: (id = $1)"), "{plan}");
    }

    #[tokio::test]
    async fn closing_turns_looks_rows_up_by_key_even_in_a_plan_made_on_empty_tables() {
        let plan = generic_plan_on_empty_tables(
            super::CLOSE_TURNS,
            "'{m2}', '{complete}', '{hi}', '{gpt}', '{1}', '{2}', '{\"\"}', '{3}', '{c}', '{h}', 1",
        )
        .await;
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(plan.contains("using messages_pkey on messages"), "the answer: {plan}");
        assert!(plan.contains("using conversations_pkey on conversations"), "the lease: {plan}");
    }
}

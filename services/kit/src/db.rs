//! Database pools. `DATABASE_URL` picks the backend: `sqlite://…` (the default, a file under
//! `./data/` created on first start) or `postgres://…`. Stores hold a [`Db`] and write each
//! query once; [`db_run!`](crate::db_run) runs it against whichever pool is in use.
//!
//! Every service keeps its migrations in its own version range (auth 1xxxx, conversations
//! 2xxxx, llm-proxy 3xxxx) so several services can share one database and its migration table.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::AssertSqlSafe;
pub use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// A PostgreSQL connection idle this long is pinged before it is used again.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Default store: a SQLite file under `./data/`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/switchboard.db";

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite (embedded default).
    Sqlite(SqliteDb),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// SQLite's pools: readers run side by side (WAL), while writes queue for the one writer
/// connection in arrival order instead of polling SQLite's lock (whose back-off sleeps of
/// up to 100 ms showed as latency spikes). WAL checkpoints run in the background, off the
/// commit path.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    /// Reads (and any write not routed through [`db_write!`](crate::db_write)).
    pub readers: SqlitePool,
    /// The one connection writes take turns on.
    pub writer: SqlitePool,
}

/// Why a database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("{var}: unsupported database URL scheme (expected sqlite:// or postgres://)")]
    Scheme {
        /// Variable the URL came from.
        var: String,
    },
    /// The database could not be reached or opened.
    #[error("{var}: cannot open the database: {source}")]
    Connect {
        /// Variable the URL came from.
        var: String,
        /// Cause.
        source: sqlx::Error,
    },
    /// The data directory could not be created.
    #[error("{var}: cannot create directory {dir}: {source}")]
    Directory {
        /// Variable the URL came from.
        var: String,
        /// Directory.
        dir: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A migration failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A database URL. It may carry a password, so `Debug` prints it with the password and the
/// query (which may hold one too) masked; it dereferences to the URL itself to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL with the password of its user info and its query replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else { return "***".to_owned() };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, _)) => (rest, "?***"),
            None => (rest, ""),
        };
        // The last `@` ends the user info, whatever the password holds.
        match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                format!("{scheme}://{user}:***@{host}{query}")
            }
            None => format!("{scheme}://{rest}{query}"),
        }
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.redacted(), f)
    }
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`; the body is compiled once
/// per backend, so the same query text serves both.
#[macro_export]
macro_rules! db_run {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.readers;
                $body
            }
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// [`db_run!`] for a body that writes: on SQLite it runs on the writer connection, so writes
/// wait their turn in order. Its body must not wait for another write (there is one writer).
#[macro_export]
macro_rules! db_write {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.writer;
                $body
            }
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    /// Opens the database at `url` (`var` names the variable it came from, for errors).
    pub async fn connect(url: &str, var: &str) -> Result<Self, DbError> {
        let connect_err = |source| DbError::Connect { var: var.to_owned(), source };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit survives a power loss too, not only a crash (about 0.1 ms more per
                // commit here; `cargo run --release -p switchboard-kit --example sqlite_sync`).
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(BUSY_TIMEOUT)
                .foreign_keys(true);
            let file = options.get_filename();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                create_dir(dir, var)?;
            }
            // A file cannot drop a connection: no ping before each use (4 % of a turn's CPU).
            let readers = SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await
                .map_err(connect_err)?;
            // The writer checkpoints nothing itself; `checkpoints` does, in the background.
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .test_before_acquire(false)
                .connect_with(options.pragma("wal_autocheckpoint", "0"))
                .await
                .map_err(connect_err)?;
            tokio::spawn(checkpoints(readers.clone(), writer.clone()));
            Ok(Self::Sqlite(SqliteDb { readers, writer }))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
            // A connection in steady use is not pinged before each statement (sqlx tests every
            // connection as it goes back to the pool, and drops a broken one there); one that sat
            // idle, which a server restart or a proxy may have cut, is.
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_WHEN_IDLE_FOR
                            && let Err(error) = sqlx::Connection::ping(conn).await
                        {
                            tracing::info!(%error, "an idle database connection was gone; using another");
                            return Ok(false);
                        }
                        Ok(true)
                    })
                })
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            Ok(Self::Postgres(pool))
        } else {
            Err(DbError::Scheme { var: var.to_owned() })
        }
    }

    /// Applies a service's migrations for the backend in use. Migrations of other services
    /// sharing the database are left alone.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), DbError> {
        match self {
            Self::Sqlite(db) => migrations.for_backend(migrations.sqlite).run(&db.writer).await?,
            Self::Postgres(pool) => migrations.for_backend(migrations.postgres).run(pool).await?,
        }
        Ok(())
    }

    /// Cheap liveness probe.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        crate::db_run!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Name of the backend, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(sqlite) => {
                sqlite.writer.close().await;
                sqlite.readers.close().await;
            }
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// How long a SQLite statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Checkpoints SQLite's WAL every second until the pools close, so that commits never wait
/// for the bulk of it. First `PASSIVE`ly on a reader's connection, never waiting for, nor
/// blocking, the writer or a reader: that copies what was committed up to then. Then, if
/// anything was committed since the last time, with `RESTART` on the writer's own connection:
/// it copies the little committed meanwhile, waits for readers still on the WAL, and so lets
/// the next commit start the WAL again from its beginning. Under a steady stream of commits a
/// checkpoint beside the writer never catches up with it, and the WAL would grow without end
/// (by about 15 MB a second at 200 turns a second).
async fn checkpoints(readers: SqlitePool, writer: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut frames_before = 0;
    loop {
        every.tick().await;
        if readers.is_closed() || writer.is_closed() {
            return;
        }
        // `busy`, frames in the WAL, frames copied.
        let beside: Result<(i64, i64, i64), _> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&readers).await;
        let outcome = match beside {
            Ok((_, frames, _)) if frames > 0 && frames != frames_before => {
                frames_before = frames;
                restart_wal(&writer).await
            }
            other => other.map(drop),
        };
        if let Err(e) = outcome {
            if readers.is_closed() || writer.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "cannot checkpoint the SQLite WAL");
        }
    }
}

/// Longest the writer waits, in a `RESTART` checkpoint, for readers still on the WAL: a long
/// read must not hold the commits up. The WAL then starts again after a later checkpoint.
const RESTART_WAITS_AT_MOST_MS: u32 = 50;

/// A `RESTART` checkpoint on the writer's connection, waiting for readers only briefly.
async fn restart_wal(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut connection = writer.acquire().await?;
    sqlx::query(AssertSqlSafe(format!("PRAGMA busy_timeout = {RESTART_WAITS_AT_MOST_MS}")))
        .execute(&mut *connection)
        .await?;
    let restarted = sqlx::query("PRAGMA wal_checkpoint(RESTART)").execute(&mut *connection).await.map(drop);
    let usual = format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis());
    match sqlx::query(AssertSqlSafe(usual)).execute(&mut *connection).await {
        Ok(_) => restarted,
        // Not left with the short wait for its commits.
        Err(e) => {
            connection.close_on_drop();
            Err(e)
        }
    }
}

/// A service's migrations: one folder of those whose SQL is the same on both backends, and a
/// folder per backend only for those that must differ. Versions are unique across all three.
#[derive(Debug)]
pub struct Migrations {
    /// Applied on both backends.
    pub shared: &'static Migrator,
    /// Applied on SQLite only.
    pub sqlite: Option<&'static Migrator>,
    /// Applied on PostgreSQL only.
    pub postgres: Option<&'static Migrator>,
}

impl Migrations {
    /// The shared migrations and `specific` ones in version order, as one migrator that leaves
    /// other services' migrations in the same database alone.
    fn for_backend(&self, specific: Option<&'static Migrator>) -> Migrator {
        let all: Vec<_> = self.shared.iter().chain(specific.into_iter().flat_map(|m| m.iter())).cloned().collect();
        let mut m = Migrator::with_migrations(all);
        m.set_ignore_missing(true).set_locking(self.shared.locking);
        m
    }
}

fn create_dir(dir: &Path, var: &str) -> Result<(), DbError> {
    std::fs::create_dir_all(dir).map_err(|source| DbError::Directory {
        var: var.to_owned(),
        dir: dir.display().to_string(),
        source,
    })
}

/// True when `err` is a unique-constraint violation on the named constraint (or, on
/// SQLite, which does not name constraints, on an index covering the given column list).
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => match db.constraint() {
            Some(name) => name == constraint,
            None => true,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_print_without_their_passwords() {
        let shown = |url: &str| format!("{:?}", DatabaseUrl::from(url.to_owned()));
        assert_eq!(shown("postgres://sb:s3cret@db:5432/sb"), "\"postgres://sb:***@db:5432/sb\"");
        assert_eq!(shown("postgres://sb:p@ss/w:rd@db/sb?sslmode=require"), "\"postgres://sb:***@db/sb?***\"");
        assert_eq!(shown("postgres://db/sb?password=s3cret"), "\"postgres://db/sb?***\"");
        assert_eq!(shown("sqlite://./data/switchboard.db"), "\"sqlite://./data/switchboard.db\"");
        assert_eq!(shown("not a url with s3cret"), "\"***\"");
        assert_eq!(&*DatabaseUrl::from("postgres://sb:s3cret@db/sb".to_owned()), "postgres://sb:s3cret@db/sb");
    }
}

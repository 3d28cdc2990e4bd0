//! The service's own tables, on SQLite or PostgreSQL.
//!
//! The SQL is the same text on both (`$1` placeholders work on SQLite too);
//! `on_pool!` compiles each query once per database type.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

/// A connection pool on one of the two databases.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Whether a database URL names PostgreSQL.
pub(crate) fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// One integration row as stored: the secret columns hold sealed values (or,
/// in the plaintext baseline, the secrets themselves). The columns are read
/// as bytes so that both builds run the same SQL; `fieldseal::SealedValue` is
/// also an sqlx column type of its own (see the quickstart).
#[derive(Debug)]
pub(crate) struct StoredIntegration {
    pub(crate) id: i64,
    pub(crate) provider: String,
    pub(crate) refresh_token: Vec<u8>,
    pub(crate) api_secret: Vec<u8>,
    pub(crate) secret_hint: Vec<u8>,
    pub(crate) updated_at: i64,
}

/// The three sealed columns of one row, ready to write.
#[derive(Debug)]
pub(crate) struct SealedColumns {
    pub(crate) refresh_token: Vec<u8>,
    pub(crate) api_secret: Vec<u8>,
    pub(crate) secret_hint: Vec<u8>,
}

impl Db {
    /// Connects: a PostgreSQL URL (`postgres://…`), or a SQLite database file
    /// created if missing.
    pub(crate) async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        if is_postgres_url(url) {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Self::Postgres(pool))
        } else {
            // WAL with synchronous=NORMAL: the usual production setting for
            // SQLite behind a service (durable across process crashes).
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?;
            Ok(Self::Sqlite(pool))
        }
    }

    /// The database's name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// Creates the service's tables if they are missing.
    pub(crate) async fn migrate(&self) -> Result<(), sqlx::Error> {
        let (id, bytes) = match self {
            Self::Sqlite(_) => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
            Self::Postgres(_) => ("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BYTEA"),
        };
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS api_tokens (
                     token_hash {bytes} PRIMARY KEY,
                     tenant TEXT NOT NULL,
                     created_at BIGINT NOT NULL
                 )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS integrations (
                     id {id},
                     tenant TEXT NOT NULL,
                     provider TEXT NOT NULL,
                     refresh_token {bytes},
                     api_secret {bytes},
                     secret_hint {bytes},
                     updated_at BIGINT NOT NULL,
                     UNIQUE (tenant, provider)
                 )"
            ),
        ];
        for sql in statements {
            on_pool!(self, pool => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Checks that the database answers.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// The tenant an API token belongs to, by the token's SHA-256.
    pub(crate) async fn token_tenant(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<String>, sqlx::Error> {
        const SQL: &str = "SELECT tenant FROM api_tokens WHERE token_hash = $1";
        on_pool!(self, pool => {
            sqlx::query_scalar(SQL)
                .bind(token_hash)
                .fetch_optional(pool)
                .await
        })
    }

    /// Records a new API token (its SHA-256) for a tenant.
    pub(crate) async fn insert_token(
        &self,
        token_hash: &[u8],
        tenant: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str =
            "INSERT INTO api_tokens (token_hash, tenant, created_at) VALUES ($1, $2, $3)";
        on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(token_hash)
                .bind(tenant)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Stores an integration's secrets: creates the row (or finds it) to learn
    /// its id, asks `seal` for the sealed columns bound to that id, and writes
    /// them, in one transaction. `seal` runs inside the transaction, so it
    /// must not wait on anything (a `TenantSealer` does not).
    pub(crate) async fn upsert_integration<E>(
        &self,
        tenant: &str,
        provider: &str,
        now: i64,
        seal: impl FnOnce(i64) -> Result<SealedColumns, E>,
    ) -> Result<Result<i64, E>, sqlx::Error> {
        // The first statement writes, so that SQLite takes its write lock at
        // once instead of upgrading a read lock later (which can fail).
        const CLAIM: &str = "INSERT INTO integrations (tenant, provider, updated_at)
             VALUES ($1, $2, $3)
             ON CONFLICT (tenant, provider) DO UPDATE SET updated_at = excluded.updated_at
             RETURNING id";
        const WRITE: &str = "UPDATE integrations
             SET refresh_token = $1, api_secret = $2, secret_hint = $3
             WHERE id = $4";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(CLAIM)
                .bind(tenant)
                .bind(provider)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            let columns = match seal(id) {
                Ok(columns) => columns,
                Err(e) => return Ok(Err(e)), // the transaction rolls back
            };
            sqlx::query(WRITE)
                .bind(columns.refresh_token)
                .bind(columns.api_secret)
                .bind(columns.secret_hint)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(id))
        })
    }

    /// One tenant's integrations, by provider name.
    pub(crate) async fn integrations(
        &self,
        tenant: &str,
    ) -> Result<Vec<StoredIntegration>, sqlx::Error> {
        const SQL: &str = "SELECT id, provider, refresh_token, api_secret, secret_hint, updated_at
             FROM integrations
             WHERE tenant = $1 AND refresh_token IS NOT NULL
             ORDER BY provider";
        on_pool!(self, pool => {
            let rows = sqlx::query(SQL).bind(tenant).fetch_all(pool).await?;
            rows.iter().map(stored).collect()
        })
    }

    /// One integration of a tenant.
    pub(crate) async fn integration(
        &self,
        tenant: &str,
        provider: &str,
    ) -> Result<Option<StoredIntegration>, sqlx::Error> {
        const SQL: &str = "SELECT id, provider, refresh_token, api_secret, secret_hint, updated_at
             FROM integrations
             WHERE tenant = $1 AND provider = $2 AND refresh_token IS NOT NULL";
        on_pool!(self, pool => {
            let row = sqlx::query(SQL)
                .bind(tenant)
                .bind(provider)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(stored).transpose()
        })
    }

    /// Replaces a row's secret columns with their re-sealed forms, unless
    /// the row changed since it was read (then the newer write wins and is
    /// under the primary key already). Returns whether it wrote.
    pub(crate) async fn replace_sealed(
        &self,
        id: i64,
        old_refresh_token: &[u8],
        new: &SealedColumns,
    ) -> Result<bool, sqlx::Error> {
        const SQL: &str = "UPDATE integrations
             SET refresh_token = $1, api_secret = $2, secret_hint = $3
             WHERE id = $4 AND refresh_token = $5";
        on_pool!(self, pool => {
            let done = sqlx::query(SQL)
                .bind(&new.refresh_token)
                .bind(&new.api_secret)
                .bind(&new.secret_hint)
                .bind(id)
                .bind(old_refresh_token)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }
}

fn stored<R>(row: &R) -> Result<StoredIntegration, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredIntegration {
        id: row.try_get("id")?,
        provider: row.try_get("provider")?,
        refresh_token: row.try_get("refresh_token")?,
        api_secret: row.try_get("api_secret")?,
        secret_hint: row.try_get("secret_hint")?,
        updated_at: row.try_get("updated_at")?,
    })
}

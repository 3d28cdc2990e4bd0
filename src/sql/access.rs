//! The column jobs' database access: one pool of any supported database, and
//! dynamically shaped statements over it (the tables and columns come from the
//! operator's configuration, so rows are read by position into [`Val`]s).
//!
//! Each operation is written once, generically, and dispatched on the pool's
//! database by [`on_db!`].

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::sql::dialect::{Dialect, placeholders};

/// A pool of one of the supported databases.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    #[cfg(feature = "postgres")]
    Pg(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    My(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Lite(sqlx::SqlitePool),
}

/// An open transaction on a [`Db`].
pub(crate) enum Tx {
    #[cfg(feature = "postgres")]
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    #[cfg(feature = "mysql")]
    My(sqlx::Transaction<'static, sqlx::MySql>),
    #[cfg(feature = "sqlite")]
    Lite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

/// Runs `$body` with `$pool` bound to the pool of whichever database `$db` is.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            #[cfg(feature = "postgres")]
            Db::Pg($pool) => $body,
            #[cfg(feature = "mysql")]
            Db::My($pool) => $body,
            #[cfg(feature = "sqlite")]
            Db::Lite($pool) => $body,
        }
    };
}

macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            #[cfg(feature = "postgres")]
            Tx::Pg($conn) => $body,
            #[cfg(feature = "mysql")]
            Tx::My($conn) => $body,
            #[cfg(feature = "sqlite")]
            Tx::Lite($conn) => $body,
        }
    };
}

/// A value bound to, or read from, a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Val {
    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(v) => Some(v),
            _ => None,
        }
    }
}

/// How to read a result column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    Bytes,
}

impl Db {
    /// The pool of whichever supported database `DB` is. (`SqlDatabase` is
    /// sealed to the three, so one of the downcasts succeeds.)
    pub(crate) fn from_pool<DB: crate::sql::dialect::SqlDatabase>(
        pool: sqlx::Pool<DB>,
    ) -> Result<Self, crate::Error> {
        let pool: Box<dyn std::any::Any> = Box::new(pool);
        #[cfg(feature = "postgres")]
        let pool = match pool.downcast::<sqlx::PgPool>() {
            Ok(pool) => return Ok(Self::Pg(*pool)),
            Err(pool) => pool,
        };
        #[cfg(feature = "mysql")]
        let pool = match pool.downcast::<sqlx::MySqlPool>() {
            Ok(pool) => return Ok(Self::My(*pool)),
            Err(pool) => pool,
        };
        #[cfg(feature = "sqlite")]
        let pool = match pool.downcast::<sqlx::SqlitePool>() {
            Ok(pool) => return Ok(Self::Lite(*pool)),
            Err(pool) => pool,
        };
        drop(pool);
        Err(crate::Error::config(format!(
            "{} is not a database this build of fieldseal supports",
            DB::NAME
        )))
    }

    pub(crate) fn dialect(&self) -> Dialect {
        on_db!(self, _pool => db_dialect(_pool))
    }

    /// The database's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self.dialect() {
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL",
            Dialect::Sqlite => "SQLite",
        }
    }

    /// Runs a query and reads every row as `kinds`. `sql` uses `?` placeholders.
    pub(crate) async fn fetch(
        &self,
        sql: &str,
        binds: &[Val],
        kinds: &[Kind],
    ) -> Result<Vec<Vec<Val>>, sqlx::Error> {
        let sql = placeholders(self.dialect(), sql);
        on_db!(self, pool => fetch(pool, sql, binds, kinds).await)
    }

    /// Runs a statement and returns the number of rows it affected.
    pub(crate) async fn execute(&self, sql: &str, binds: &[Val]) -> Result<u64, sqlx::Error> {
        let sql = placeholders(self.dialect(), sql);
        on_db!(self, pool => execute(pool, sql, binds).await)
    }

    /// Begins a write transaction (on SQLite, `BEGIN IMMEDIATE`, so that two
    /// writers queue instead of deadlocking).
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            #[cfg(feature = "postgres")]
            Db::Pg(pool) => Tx::Pg(pool.begin().await?),
            #[cfg(feature = "mysql")]
            Db::My(pool) => Tx::My(pool.begin().await?),
            #[cfg(feature = "sqlite")]
            Db::Lite(pool) => Tx::Lite(pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }
}

impl Tx {
    fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Pg(_) => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            Tx::My(_) => Dialect::MySql,
            #[cfg(feature = "sqlite")]
            Tx::Lite(_) => Dialect::Sqlite,
        }
    }

    pub(crate) async fn fetch(
        &mut self,
        sql: &str,
        binds: &[Val],
        kinds: &[Kind],
    ) -> Result<Vec<Vec<Val>>, sqlx::Error> {
        let sql = placeholders(self.dialect(), sql);
        on_tx!(self, tx => fetch(&mut **tx, sql, binds, kinds).await)
    }

    pub(crate) async fn execute(&mut self, sql: &str, binds: &[Val]) -> Result<u64, sqlx::Error> {
        let sql = placeholders(self.dialect(), sql);
        on_tx!(self, tx => execute(&mut **tx, sql, binds).await)
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        on_tx!(self, tx => tx.commit().await)
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        on_tx!(self, tx => tx.rollback().await)
    }
}

fn db_dialect<DB: crate::sql::dialect::SqlDatabase>(_: &sqlx::Pool<DB>) -> Dialect {
    DB::DIALECT
}

macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bind in $binds {
            query = match bind {
                Val::Null => query.bind(None::<String>),
                Val::Int(v) => query.bind(*v),
                Val::Text(v) => query.bind(v.clone()),
                Val::Bytes(v) => query.bind(v.clone()),
            };
        }
        query
    }};
}

async fn fetch<'e, DB, E>(
    executor: E,
    sql: String,
    binds: &[Val],
    kinds: &[Kind],
) -> Result<Vec<Vec<Val>>, sqlx::Error>
where
    DB: sqlx::Database,
    E: Executor<'e, Database = DB>,
    for<'q> DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Vec<u8>: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Option<String>: Type<DB> + for<'q> Encode<'q, DB>,
{
    let query = bind_all!(sqlx::query::<DB>(AssertSqlSafe(sql)), binds);
    let rows = query.fetch_all(executor).await?;
    rows.iter()
        .map(|row| {
            kinds
                .iter()
                .enumerate()
                .map(|(i, kind)| {
                    Ok(match kind {
                        Kind::Int => row
                            .try_get::<Option<i64>, _>(i)?
                            .map_or(Val::Null, Val::Int),
                        Kind::Text => row
                            .try_get::<Option<String>, _>(i)?
                            .map_or(Val::Null, Val::Text),
                        Kind::Bytes => row
                            .try_get::<Option<Vec<u8>>, _>(i)?
                            .map_or(Val::Null, Val::Bytes),
                    })
                })
                .collect()
        })
        .collect()
}

async fn execute<'e, DB, E>(executor: E, sql: String, binds: &[Val]) -> Result<u64, sqlx::Error>
where
    DB: crate::sql::dialect::SqlDatabase,
    E: Executor<'e, Database = DB>,
    for<'q> DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB>,
    Vec<u8>: Type<DB> + for<'q> Encode<'q, DB>,
    Option<String>: Type<DB> + for<'q> Encode<'q, DB>,
{
    let query = bind_all!(sqlx::query::<DB>(AssertSqlSafe(sql)), binds);
    let result = query.execute(executor).await?;
    Ok(DB::rows_affected(&result))
}

/// `expr` converted to text.
pub(crate) fn as_text(dialect: Dialect, expr: &str) -> String {
    match dialect {
        Dialect::MySql => format!("CAST({expr} AS CHAR)"),
        Dialect::Postgres | Dialect::Sqlite => format!("CAST({expr} AS TEXT)"),
    }
}

/// `expr` as text that groups and compares byte for byte, whatever the
/// collation of the column behind it: PostgreSQL's `"C"` collation, SQLite's
/// `BINARY`, and on MySQL/MariaDB the UTF-8 bytes (read back with
/// [`Kind::Bytes`]; every `_bin` collation there is still PAD SPACE, which
/// calls `acme` and `acme ` equal).
pub(crate) fn exact_text(dialect: Dialect, expr: &str) -> String {
    match dialect {
        Dialect::MySql => format!("CAST(CONVERT({expr} USING utf8mb4) AS BINARY)"),
        Dialect::Postgres => format!("CAST({expr} AS TEXT) COLLATE \"C\""),
        Dialect::Sqlite => format!("CAST({expr} AS TEXT) COLLATE BINARY"),
    }
}

/// A tenant id read from [`exact_text`]: text, or UTF-8 bytes on MySQL.
/// `None` for NULL or bytes that are not UTF-8 (which no tenant id is).
pub(crate) fn exact_text_value(v: &Val) -> Option<String> {
    match v {
        Val::Text(t) => Some(t.clone()),
        Val::Bytes(b) => String::from_utf8(b.clone()).ok(),
        Val::Null | Val::Int(_) => None,
    }
}

/// The database's clock, in whole seconds since the Unix epoch: leases are
/// timed by the one clock every worker shares.
pub(crate) fn now(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
        Dialect::MySql => "CAST(UNIX_TIMESTAMP() AS SIGNED)",
        Dialect::Sqlite => "CAST(strftime('%s', 'now') AS INTEGER)",
    }
}

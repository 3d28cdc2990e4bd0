//! What differs between PostgreSQL, MySQL/MariaDB and SQLite.

use std::borrow::Cow;

pub(crate) use sealed::Dialect;

impl Dialect {
    /// The statement that opens a write transaction. SQLite takes its write
    /// lock up front (`BEGIN IMMEDIATE`), so two writers never deadlock.
    pub(crate) fn begin_statement(self) -> Option<&'static str> {
        match self {
            Self::Sqlite => Some("BEGIN IMMEDIATE"),
            Self::Postgres | Self::MySql => None,
        }
    }

    /// The suffix of a `SELECT` that locks the rows it reads.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres | Self::MySql => " FOR UPDATE",
        }
    }
}

mod sealed {
    #![allow(unreachable_pub)]

    /// The SQL dialect of a supported database.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Dialect {
        Postgres,
        MySql,
        Sqlite,
    }

    pub trait Backend: sqlx::Database {
        const DIALECT: super::Dialect;
        fn rows_affected(result: &Self::QueryResult) -> u64;
    }
}

/// A database fieldseal's SQL key store runs on: `sqlx::Postgres`,
/// `sqlx::MySql` or `sqlx::Sqlite`, each behind its cargo feature. Sealed.
pub trait SqlDatabase: sealed::Backend {}

#[cfg(feature = "postgres")]
impl sealed::Backend for sqlx::Postgres {
    const DIALECT: Dialect = Dialect::Postgres;
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}
#[cfg(feature = "postgres")]
impl SqlDatabase for sqlx::Postgres {}

#[cfg(feature = "mysql")]
impl sealed::Backend for sqlx::MySql {
    const DIALECT: Dialect = Dialect::MySql;
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}
#[cfg(feature = "mysql")]
impl SqlDatabase for sqlx::MySql {}

#[cfg(feature = "sqlite")]
impl sealed::Backend for sqlx::Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}
#[cfg(feature = "sqlite")]
impl SqlDatabase for sqlx::Sqlite {}

/// Replaces each `?` placeholder with `$1`, `$2`, … for PostgreSQL. A `?`
/// inside a quoted identifier (`"who?"`, as configured table and column
/// names are quoted) or a string literal (`'?'`) is left alone: a doubled
/// quote inside either is an escaped quote, not its end.
pub(crate) fn placeholders(dialect: Dialect, sql: &str) -> String {
    if dialect != Dialect::Postgres {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    // The quote character of the identifier or literal being read, if any.
    // A doubled quote closes and reopens it, which comes to the same.
    let mut quoted: Option<char> = None;
    for c in sql.chars() {
        match (quoted, c) {
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
                continue;
            }
            (None, '"' | '\'') => quoted = Some(c),
            (Some(q), c) if c == q => quoted = None,
            _ => {}
        }
        out.push(c);
    }
    out
}

fn code(err: &sqlx::Error) -> Option<Cow<'_, str>> {
    match err {
        sqlx::Error::Database(db) => db.code(),
        _ => None,
    }
}

/// A database error as fieldseal keeps it, in [`Error::Store`](crate::Error::Store)'s
/// source: its SQLSTATE code and the database's message with every quoted
/// value and hex literal cut out, and nothing else. The driver's own error
/// carries row data: PostgreSQL's detail "Failing row contains (…)" holds a
/// key row's wrapped key, MySQL names the duplicate entry, and a failed
/// conversion quotes the bytes it could not convert.
#[derive(Debug)]
pub(crate) struct DbError {
    code: Option<String>,
    message: String,
    retryable: bool,
}

impl DbError {
    pub(crate) fn new(err: &sqlx::Error) -> Self {
        let message = match err {
            sqlx::Error::Database(db) => db.message().to_string(),
            other => other.to_string(),
        };
        Self {
            code: code(err).map(Cow::into_owned),
            message: redact_values(&message),
            retryable: is_retryable(err),
        }
    }

    /// Whether the database asked for the transaction to be retried.
    pub(crate) fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} (code {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DbError {}

/// `message` without the values a database may quote in it: everything from
/// the first single quote on is cut (MySQL quotes values without escaping
/// the quotes inside them, so no pairing of quotes is safe), the contents of
/// double quotes are replaced by `…` (PostgreSQL quotes names, and some
/// values, so), and `0x…`/`\x…` hex runs are cut.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    let mut in_double = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                out.push_str("'…");
                break;
            }
            '"' if in_double => {
                in_double = false;
                out.push_str("…\"");
            }
            '"' => {
                in_double = true;
                out.push('"');
            }
            _ if in_double => {}
            '0' | '\\' if matches!(chars.peek(), Some('x' | 'X')) => {
                out.push(c);
                if let Some(x) = chars.next() {
                    out.push(x);
                }
                while chars.peek().is_some_and(char::is_ascii_hexdigit) {
                    chars.next();
                }
                out.push('…');
            }
            _ => out.push(c),
        }
    }
    if in_double {
        out.push('…');
    }
    out
}

/// Whether the database asks for the transaction to be retried: a deadlock or
/// serialization failure (PostgreSQL 40001/40P01, MySQL 1213 = SQLSTATE 40001,
/// MySQL 1205 lock wait timeout), or a busy or locked SQLite database.
pub(crate) fn is_retryable(err: &sqlx::Error) -> bool {
    let Some(code) = code(err) else {
        return false;
    };
    matches!(
        code.as_ref(),
        "40001" | "40P01" | "5" | "6" | "261" | "262" | "517" | "773"
    ) || mysql_lock_wait_timeout(err)
}

#[cfg(feature = "mysql")]
fn mysql_lock_wait_timeout(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|e| e.number() == 1205),
        _ => false,
    }
}

#[cfg(not(feature = "mysql"))]
fn mysql_lock_wait_timeout(_: &sqlx::Error) -> bool {
    false
}

/// Whether the error says a table (or schema) does not exist: the migrations
/// have not run.
pub(crate) fn is_missing_table(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("42P01" | "3F000" | "42S02"))
                || db.message().contains("no such table")
        }
        _ => false,
    }
}

/// Whether an `ALTER TABLE … ADD COLUMN` failed because the column exists
/// (PostgreSQL 42701, MySQL 1060 = 42S21, SQLite's message).
pub(crate) fn is_duplicate_column(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("42701" | "42S21"))
                || db.message().contains("duplicate column")
                || db.message().contains("Duplicate column")
        }
        _ => false,
    }
}

/// Whether an insert failed on a unique or primary key (PostgreSQL 23505,
/// MySQL 23000, SQLite 1555/2067).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(
        code(err).as_deref(),
        Some("23505" | "23000" | "1555" | "2067")
    )
}

/// Whether a migration statement failed only because another process created
/// the same object at the same moment.
pub(crate) fn is_concurrent_create(err: &sqlx::Error) -> bool {
    matches!(
        code(err).as_deref(),
        Some("23505" | "42P07" | "42P06" | "42710")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_skip_quoted_identifiers_and_literals() {
        let pg = |sql| placeholders(Dialect::Postgres, sql);
        assert_eq!(
            pg("SELECT ? FROM t WHERE a = ?"),
            "SELECT $1 FROM t WHERE a = $2"
        );
        assert_eq!(
            pg(r#"SELECT "wh?o", 'it''s ?' FROM "a""?b" WHERE x = ?"#),
            r#"SELECT "wh?o", 'it''s ?' FROM "a""?b" WHERE x = $1"#
        );
        assert_eq!(
            pg(r#"UPDATE "t?" SET "c?" = ? WHERE "k" = ?"#),
            r#"UPDATE "t?" SET "c?" = $1 WHERE "k" = $2"#
        );
        assert_eq!(placeholders(Dialect::MySql, "a = ?"), "a = ?");
    }

    #[test]
    fn database_messages_lose_their_values() {
        assert_eq!(
            redact_values("Duplicate entry 'acme-2' for key 'PRIMARY'"),
            "Duplicate entry '…"
        );
        // MySQL does not escape a quote inside a value.
        assert_eq!(
            redact_values("Duplicate entry 'a'b' for key 'k'"),
            "Duplicate entry '…"
        );
        assert_eq!(
            redact_values(r#"invalid input syntax for type uuid: "secret-value""#),
            r#"invalid input syntax for type uuid: "…""#
        );
        assert_eq!(
            redact_values("invalid byte sequence for encoding: 0xe9 0x74"),
            "invalid byte sequence for encoding: 0x… 0x…"
        );
        assert_eq!(redact_values(r"row (\x0102ff)"), r"row (\x…)");
        assert_eq!(redact_values("cut \"here"), "cut \"…");
        assert_eq!(redact_values("0 rows, x = 10"), "0 rows, x = 10");
    }
}

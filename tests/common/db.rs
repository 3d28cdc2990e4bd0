//! Throwaway databases for the SQL tests.
#![allow(dead_code, unreachable_pub)]
//!
//! PostgreSQL and MySQL/MariaDB tests read their server's address from
//! `FIELDSEAL_TEST_POSTGRES_URL` and `FIELDSEAL_TEST_MYSQL_URL`. Without the
//! variable a test prints why it is skipped and passes; with it, an unreachable
//! server fails the test. Each test gets its own schema (PostgreSQL) or
//! database (MySQL) with a random name, dropped afterwards; SQLite tests use a
//! temporary file.

use std::future::Future;

use fieldseal::SqlKeyStore;
#[cfg(feature = "mysql")]
use sqlx::{MySql, MySqlPool};
#[cfg(feature = "postgres")]
use sqlx::{PgPool, Postgres};
#[cfg(feature = "sqlite")]
use sqlx::{Sqlite, SqlitePool};

pub const POSTGRES_URL: &str = "FIELDSEAL_TEST_POSTGRES_URL";
pub const MYSQL_URL: &str = "FIELDSEAL_TEST_MYSQL_URL";

fn random_name(kind: &str) -> String {
    format!("fieldseal_test_{kind}_{:016x}", rand::random::<u64>())
}

/// The server URL from `var`, or `None` after printing why the test is skipped.
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipping: {var} is not set (set it to a server URL to run this test)");
            None
        }
    }
}

#[cfg(feature = "sqlite")]
/// Runs `test` on a fresh SQLite database file, migrated.
pub async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(SqlitePool, SqlKeyStore<Sqlite>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let pool = SqlitePool::connect(&url).await.unwrap();
    let store = SqlKeyStore::new(pool.clone());
    store.migrate().await.unwrap();
    let outcome = tokio::spawn(test(pool.clone(), store)).await;
    pool.close().await;
    drop(dir);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[cfg(feature = "postgres")]
/// Runs `test` in a fresh PostgreSQL schema (the store's tables and the test's
/// own tables live there), migrated; drops the schema afterwards.
pub async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(PgPool, SqlKeyStore<Postgres>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = server_url(POSTGRES_URL) else {
        return;
    };
    let schema = random_name("pg");
    let admin = PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_URL} is set but the server is unreachable: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let search_path = schema.clone();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .after_connect(move |conn, _| {
            let sql = format!("SET search_path TO {search_path}");
            Box::pin(async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .unwrap();
    let store = SqlKeyStore::new(pool.clone()).with_schema(&schema).unwrap();
    store.migrate().await.unwrap();
    let outcome = tokio::spawn(test(pool.clone(), store)).await;
    pool.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[cfg(feature = "postgres")]
/// A second pool on the same PostgreSQL schema: another "process".
pub async fn second_postgres_pool(first: &PgPool) -> PgPool {
    let url = std::env::var(POSTGRES_URL).unwrap();
    let search_path: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(first)
        .await
        .unwrap();
    second_postgres_pool_for(&url, &search_path).await
}

#[cfg(feature = "postgres")]
/// A pool on schema `search_path` of the server at `url`.
pub async fn second_postgres_pool_for(url: &str, search_path: &str) -> PgPool {
    let search_path = search_path.to_string();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .after_connect(move |conn, _| {
            let sql = format!("SET search_path TO {search_path}");
            Box::pin(async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .unwrap()
}

#[cfg(feature = "mysql")]
/// Runs `test` in a fresh MySQL/MariaDB database, migrated; drops it afterwards.
pub async fn with_mysql<F, Fut>(test: F)
where
    F: FnOnce(MySqlPool, SqlKeyStore<MySql>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = server_url(MYSQL_URL) else {
        return;
    };
    let database = random_name("my");
    let admin = MySqlPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{MYSQL_URL} is set but the server is unreachable: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap();
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(8)
        .connect(&mysql_url_for(&url, &database))
        .await
        .unwrap();
    let store = SqlKeyStore::new(pool.clone());
    store.migrate().await.unwrap();
    let outcome = tokio::spawn(test(pool.clone(), store)).await;
    pool.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `url` with its database replaced by `database`.
pub fn mysql_url_for(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(feature = "mysql")]
/// A second pool on the same MySQL database: another "process".
pub async fn second_mysql_pool(first: &MySqlPool) -> MySqlPool {
    let url = std::env::var(MYSQL_URL).unwrap();
    let database: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(first)
        .await
        .unwrap();
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(8)
        .connect(&mysql_url_for(&url, &database))
        .await
        .unwrap()
}

/// `?` placeholders, numbered for PostgreSQL.
pub fn pg(sql: &str) -> String {
    let mut n = 0;
    sql.chars()
        .map(|c| {
            if c == '?' {
                n += 1;
                format!("${n}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

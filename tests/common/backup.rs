//! A database whose key store can be backed up and restored: SQLite (with
//! `VACUUM INTO`) and PostgreSQL (with `pg_dump` and `psql`).
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use fieldseal::{Sealer, SealerBuilder, SqlKeyStore, provider::KeyProvider};

use super::db;

/// A database whose key store can be backed up and restored.
pub enum Db {
    Sqlite {
        dir: std::path::PathBuf,
        pool: sqlx::SqlitePool,
    },
    Postgres {
        url: String,
        schema: String,
        pool: sqlx::PgPool,
        dir: std::path::PathBuf,
    },
}

impl Db {
    /// A fresh SQLite database file `app.db` in `dir`, migrated.
    pub async fn sqlite(dir: &Path) -> Db {
        let url = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        SqlKeyStore::new(pool.clone()).migrate().await.unwrap();
        Db::Sqlite {
            dir: dir.to_path_buf(),
            pool,
        }
    }

    /// The schema `pool` (from `db::with_postgres`) works in, on a second
    /// pool; dumps go to `dir`.
    pub async fn postgres(pool: &sqlx::PgPool, dir: &Path) -> Db {
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(pool)
            .await
            .unwrap();
        Db::Postgres {
            url: std::env::var(db::POSTGRES_URL).unwrap(),
            schema,
            pool: db::second_postgres_pool(pool).await,
            dir: dir.to_path_buf(),
        }
    }

    /// A sealer builder on this database's key store.
    pub fn builder(&self, provider: impl KeyProvider + 'static) -> SealerBuilder {
        match self {
            Db::Sqlite { pool, .. } => Sealer::builder(provider, SqlKeyStore::new(pool.clone())),
            Db::Postgres { pool, schema, .. } => Sealer::builder(
                provider,
                SqlKeyStore::new(pool.clone()).with_schema(schema).unwrap(),
            ),
        }
    }

    pub async fn backup(&self, name: &str) {
        match self {
            Db::Sqlite { dir, pool } => {
                let path = dir.join(format!("{name}.db"));
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "VACUUM INTO '{}'",
                    path.display()
                )))
                .execute(pool)
                .await
                .unwrap();
            }
            Db::Postgres {
                url, schema, dir, ..
            } => {
                let status = std::process::Command::new("pg_dump")
                    .args(["--schema", schema, "--no-owner", "--file"])
                    .arg(dir.join(format!("{name}.sql")))
                    .arg(url)
                    .status()
                    .expect("pg_dump must be installed where FIELDSEAL_TEST_POSTGRES_URL is set");
                assert!(status.success());
            }
        }
    }

    /// Puts backup `name` in place of the database, as a new connection pool.
    pub async fn restore(&mut self, name: &str) {
        match self {
            Db::Sqlite { dir, pool } => {
                pool.close().await;
                let db = dir.join("app.db");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
                }
                std::fs::copy(dir.join(format!("{name}.db")), &db).unwrap();
                *pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
                    .await
                    .unwrap();
            }
            Db::Postgres {
                url,
                schema,
                pool,
                dir,
            } => {
                let fresh = db::second_postgres_pool(pool).await;
                pool.close().await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&fresh)
                    .await
                    .unwrap();
                let status = std::process::Command::new("psql")
                    .args(["--quiet", "--set", "ON_ERROR_STOP=1", "--file"])
                    .arg(dir.join(format!("{name}.sql")))
                    .arg(&*url)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("psql must be installed where FIELDSEAL_TEST_POSTGRES_URL is set");
                assert!(status.success());
                fresh.close().await;
                *pool = db::second_postgres_pool_for(url, schema).await;
            }
        }
    }
}

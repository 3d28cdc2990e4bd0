//! Sealed values in real tables, on SQLite, PostgreSQL and MySQL/MariaDB:
//! seal, insert, select, open; rows swapped by SQL; corrupted bytes; NULLs;
//! `query_as` with `#[derive(FromRow)]`; the text form in TEXT columns; and
//! the store's refusals (no migrations, a newer schema, a dropped connection).

mod common;
#[path = "common/db.rs"]
mod db;

use db::pg;

use common::{ctx, local_provider};
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{Context, Error, SealedText, SealedValue, Sealer, SqlKeyStore};

#[derive(Debug, sqlx::FromRow)]
struct Integration {
    id: i64,
    tenant: String,
    provider: String,
    refresh_token: Option<SealedValue>,
    api_secret: Option<SealedValue>,
    token_text: Option<SealedText>,
}

fn context(tenant: &str, column: &str, row: i64) -> Context {
    Context::builder(tenant, "integrations", column)
        .row(row)
        .build()
        .unwrap()
}

macro_rules! column_suite {
    ($name:ident, $with:path, $db:ty, $bytes:literal, $sql:expr) => {
        mod $name {
            use super::*;

            #[allow(clippy::redundant_closure_call)]
            fn q(sql: &str) -> sqlx::AssertSqlSafe<String> {
                sqlx::AssertSqlSafe(($sql)(sql))
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sealed_columns() {
                $with(|pool, store| async move {
                    let sealer = Sealer::builder(local_provider(), store).build();
                    sqlx::query::<$db>(q(concat!(
                        "CREATE TABLE integrations (id BIGINT NOT NULL PRIMARY KEY, ",
                        "tenant VARCHAR(255) NOT NULL, provider VARCHAR(64) NOT NULL, ",
                        "refresh_token ", $bytes, " NULL, api_secret ", $bytes, " NULL, ",
                        "token_text TEXT NULL)"
                    )))
                    .execute(&pool)
                    .await
                    .unwrap();

                    // Seal and insert: two acme rows, one globex row with no secret.
                    let rows = [(1i64, "acme", "github"), (2, "acme", "slack"), (3, "globex", "github")];
                    for (id, tenant, provider) in rows {
                        let token = format!("1//0g-refresh-{id}");
                        let refresh = sealer
                            .seal(&context(tenant, "refresh_token", id), token.as_bytes())
                            .await
                            .unwrap();
                        let secret = if id == 3 {
                            None
                        } else {
                            Some(
                                sealer
                                    .seal(&context(tenant, "api_secret", id), format!("sk_{id}").as_bytes())
                                    .await
                                    .unwrap(),
                            )
                        };
                        let text = SealedText::from(
                            sealer.seal(&context(tenant, "token_text", id), b"as text").await.unwrap(),
                        );
                        sqlx::query::<$db>(q(
                            "INSERT INTO integrations (id, tenant, provider, refresh_token, api_secret, token_text) \
                             VALUES (?, ?, ?, ?, ?, ?)",
                        ))
                        .bind(id)
                        .bind(tenant)
                        .bind(provider)
                        .bind(&refresh)
                        .bind(secret)
                        .bind(&text)
                        .execute(&pool)
                        .await
                        .unwrap();
                    }

                    // Select with query_as and open.
                    let all: Vec<Integration> = sqlx::query_as::<$db, Integration>(q(
                        "SELECT id, tenant, provider, refresh_token, api_secret, token_text \
                         FROM integrations ORDER BY id",
                    ))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    assert_eq!(all.len(), 3);
                    for row in &all {
                        let token = row.refresh_token.as_ref().unwrap();
                        let opened = sealer
                            .open(&context(&row.tenant, "refresh_token", row.id), token)
                            .await
                            .unwrap();
                        assert_eq!(
                            opened.plaintext().expose_secret(),
                            format!("1//0g-refresh-{}", row.id).as_bytes()
                        );
                        match &row.api_secret {
                            Some(secret) => {
                                let opened = sealer
                                    .open(&context(&row.tenant, "api_secret", row.id), secret)
                                    .await
                                    .unwrap();
                                assert_eq!(opened.plaintext().expose_secret(), format!("sk_{}", row.id).as_bytes());
                            }
                            None => assert_eq!(row.id, 3, "only row 3 has a NULL secret"),
                        }
                        let text = row.token_text.as_ref().unwrap();
                        assert!(sealer.open(&context(&row.tenant, "token_text", row.id), text).await.is_ok());
                        assert!(!row.provider.is_empty());
                    }
                    let raw_text: String = sqlx::query_scalar::<$db, String>(q("SELECT token_text FROM integrations WHERE id = 1"))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    assert!(raw_text.starts_with("fs:"));

                    // An attacker copies row 2's sealed token over row 1's, in SQL.
                    let row2: Vec<u8> = sqlx::query_scalar::<$db, Vec<u8>>(q("SELECT refresh_token FROM integrations WHERE id = 2"))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    let row1: Vec<u8> = sqlx::query_scalar::<$db, Vec<u8>>(q("SELECT refresh_token FROM integrations WHERE id = 1"))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    for (id, bytes) in [(1i64, &row2), (2, &row1)] {
                        sqlx::query::<$db>(q("UPDATE integrations SET refresh_token = ? WHERE id = ?"))
                            .bind(bytes.clone())
                            .bind(id)
                            .execute(&pool)
                            .await
                            .unwrap();
                    }
                    let swapped: Vec<Integration> = sqlx::query_as::<$db, Integration>(q(
                        "SELECT id, tenant, provider, refresh_token, api_secret, token_text FROM integrations WHERE id IN (1, 2) ORDER BY id",
                    ))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    for row in swapped {
                        let err = sealer
                            .open(&context(&row.tenant, "refresh_token", row.id), row.refresh_token.as_ref().unwrap())
                            .await
                            .unwrap_err();
                        assert!(matches!(err, Error::OpenFailed), "{err}");
                    }
                    // Copied across tenants: also refused.
                    sqlx::query::<$db>(q("UPDATE integrations SET refresh_token = ? WHERE id = 3"))
                        .bind(row1.clone())
                        .execute(&pool)
                        .await
                        .unwrap();
                    let stolen: SealedValue = sqlx::query_scalar::<$db, SealedValue>(q("SELECT refresh_token FROM integrations WHERE id = 3"))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    assert!(matches!(sealer.open(&context("globex", "refresh_token", 3), &stolen).await, Err(Error::OpenFailed)));

                    // Corrupted bytes: a bad header is a decode error, never a panic;
                    // a flipped body byte decodes and then fails to open.
                    let mut bad_header = row1.clone();
                    bad_header[0] = 0x07;
                    let mut bad_body = row1.clone();
                    bad_body[40] ^= 0x01;
                    for (bytes, decodes) in [
                        (bad_header, false),
                        (b"not sealed".to_vec(), false),
                        (Vec::new(), false),
                        (bad_body, true),
                    ] {
                        sqlx::query::<$db>(q("UPDATE integrations SET refresh_token = ? WHERE id = 1"))
                            .bind(bytes)
                            .execute(&pool)
                            .await
                            .unwrap();
                        let result = sqlx::query_as::<$db, Integration>(q(
                            "SELECT id, tenant, provider, refresh_token, api_secret, token_text FROM integrations WHERE id = 1",
                        ))
                        .fetch_one(&pool)
                        .await;
                        match result {
                            Ok(row) => {
                                assert!(decodes);
                                let err = sealer
                                    .open(&context("acme", "refresh_token", 1), row.refresh_token.as_ref().unwrap())
                                    .await
                                    .unwrap_err();
                                assert!(matches!(err, Error::OpenFailed), "{err}");
                            }
                            Err(err) => {
                                assert!(!decodes, "{err}");
                                assert!(matches!(err, sqlx::Error::ColumnDecode { .. }), "{err}");
                                let message = err.to_string();
                                assert!(
                                    message.contains("sealed value") || message.contains("format version"),
                                    "{message}"
                                );
                            }
                        }
                    }
                    // A TEXT column with something that is not a sealed value.
                    sqlx::query::<$db>(q("UPDATE integrations SET token_text = 'plain old token' WHERE id = 2"))
                        .execute(&pool)
                        .await
                        .unwrap();
                    let err = sqlx::query_scalar::<$db, SealedText>(q("SELECT token_text FROM integrations WHERE id = 2"))
                        .fetch_one(&pool)
                        .await
                        .unwrap_err();
                    assert!(err.to_string().contains("fs:"), "{err}");
                    // NULL decodes to None.
                    let none: Option<SealedValue> = sqlx::query_scalar::<$db, Option<SealedValue>>(q(
                        "SELECT api_secret FROM integrations WHERE id = 3",
                    ))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    assert!(none.is_none());
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn schema_problems_are_clear() {
                $with(|pool, store| async move {
                    // A newer fieldseal migrated this database.
                    sqlx::query::<$db>(q("UPDATE fieldseal_schema_version SET version = 3 WHERE id = 1"))
                        .execute(&pool)
                        .await
                        .unwrap();
                    let fresh = store.clone().with_table_prefix("fieldseal_").unwrap();
                    let sealer = Sealer::builder(local_provider(), fresh).build();
                    let err = sealer.seal(&ctx("acme", 1), b"x").await.unwrap_err();
                    assert!(
                        matches!(err, Error::Schema { found: Some(3), supported: 2, .. }),
                        "{err}"
                    );
                    assert!(err.to_string().contains("newer fieldseal"), "{err}");

                    // Tables that were never created (another prefix).
                    let other = store.clone().with_table_prefix("never_migrated_").unwrap();
                    let sealer = Sealer::builder(local_provider(), other.clone()).build();
                    let err = sealer.seal(&ctx("acme", 1), b"x").await.unwrap_err();
                    assert!(matches!(err, Error::Schema { found: None, .. }), "{err}");
                    assert!(err.to_string().contains("migrate()"), "{err}");
                    // ...until migrated, from one call.
                    other.migrate().await.unwrap();
                    other.migrate().await.unwrap();
                    assert!(sealer.seal(&ctx("acme", 1), b"x").await.is_ok());
                    let _ = pool;
                })
                .await;
            }
        }
    };
}

column_suite!(sqlite, db::with_sqlite, sqlx::Sqlite, "BLOB", |s: &str| s
    .to_string());
column_suite!(postgres, db::with_postgres, sqlx::Postgres, "BYTEA", pg);
column_suite!(mysql, db::with_mysql, sqlx::MySql, "BLOB", |s: &str| s
    .to_string());

/// A connection killed in the middle of key changes leaves the store consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_killed_mid_rotation() {
    db::with_postgres(|pool, store| async move {
        let sealer = Sealer::builder(local_provider(), store.clone()).build();
        let mut values = Vec::new();
        for t in 0..10 {
            let c = ctx(&format!("t{t}"), 1);
            values.push((c.clone(), sealer.seal(&c, b"v").await.unwrap()));
        }
        let admin = sealer.admin();
        let rotations = tokio::spawn(async move {
            for round in 0..5 {
                for t in 0..10 {
                    // Errors are expected while connections are being killed.
                    let _ = admin.rotate(&format!("t{t}")).await;
                }
                let _ = round;
            }
        });
        // Kill this test's other connections (they share its application name)
        // while the rotations run.
        let killer_pool = db::second_postgres_pool(&pool).await;
        let killer = tokio::spawn(async move {
            let mut killed = 0u64;
            for _ in 0..15 {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = current_setting('application_name') \
                     AND pid <> pg_backend_pid()) AS k",
                )
                .fetch_one(&killer_pool)
                .await
                .unwrap_or(0);
                killed += n as u64;
                tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            }
            killed
        });
        let killed = killer.await.unwrap();
        let _ = rotations.await;
        assert!(killed > 0, "no connection was killed");

        let fresh = Sealer::builder(local_provider(), store.clone()).build();
        for (c, v) in &values {
            assert!(fresh.open(c, v).await.is_ok());
            let record = fresh.admin().describe(c.tenant()).await.unwrap();
            let versions: Vec<u32> = record.keys.iter().map(|k| k.version).collect();
            let expected: Vec<u32> = (1..=record.latest_version()).collect();
            assert_eq!(versions, expected, "versions are contiguous");
        }
        let report = fresh.admin().verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        let _ = SqlKeyStore::new(pool);
    })
    .await;
}

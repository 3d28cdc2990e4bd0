//! What the benches that run on PostgreSQL share: a schema of their own, and
//! the raw AEAD floor their figures are reported against.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use sqlx::PgPool;

/// The raw AEAD floor: `times` bare AES-256-GCM seals of `len` bytes with a
/// fixed key and nonce, in place, and the time they took.
pub(crate) fn aead_floor(len: usize, times: u64) -> Duration {
    let cipher = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
    let mut buf = vec![0x5au8; len];
    let nonce = [9u8; 12];
    let start = Instant::now();
    for _ in 0..times {
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), b"", buf.as_mut_slice().into())
            .expect("seal");
        std::hint::black_box((&buf, tag));
    }
    start.elapsed()
}

/// A schema of its own on a PostgreSQL server, so that runs never collide.
pub(crate) struct PgSchema {
    /// A pool on the server itself.
    admin: PgPool,
    /// A pool whose connections have the schema as their search path.
    pub(crate) pool: PgPool,
    /// The schema's name.
    pub(crate) name: String,
}

impl PgSchema {
    /// Creates a schema with a random name on the server at `url`, and a
    /// pool of up to `connections` into it.
    pub(crate) async fn create(url: &str, connections: u32) -> Self {
        let admin = PgPool::connect(url).await.expect("postgres");
        let name = format!("fieldseal_bench_{:016x}", rand::random::<u64>());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .expect("schema");
        let search_path = name.clone();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
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
            .expect("postgres");
        Self { admin, pool, name }
    }

    /// Closes the pool and drops the schema with everything in it.
    pub(crate) async fn drop(self) {
        self.pool.close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&self.admin)
        .await
        .expect("drop");
    }
}

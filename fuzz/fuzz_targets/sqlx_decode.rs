//! The sqlx decode path over arbitrary bytes: a BLOB decodes to `SealedValue`
//! and a TEXT to `SealedText` without panicking, and what decodes is exactly
//! what was stored.
#![no_main]

use std::sync::{Mutex, OnceLock};

use fieldseal::{SealedText, SealedValue};
use libfuzzer_sys::fuzz_target;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

#[path = "common.rs"]
mod common;

fn connection() -> &'static Mutex<SqliteConnection> {
    static CONN: OnceLock<Mutex<SqliteConnection>> = OnceLock::new();
    CONN.get_or_init(|| {
        Mutex::new(
            common::runtime()
                .block_on(SqliteConnection::connect("sqlite::memory:"))
                .expect("sqlite"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let mut conn = connection().lock().expect("lock");
    common::runtime().block_on(async {
        let blob: Result<Option<SealedValue>, _> = sqlx::query_scalar("SELECT ?")
            .bind(data.to_vec())
            .fetch_one(&mut *conn)
            .await;
        if let Ok(Some(value)) = blob {
            assert_eq!(value.as_bytes(), data);
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let decoded: Result<Option<SealedText>, _> = sqlx::query_scalar("SELECT ?")
                .bind(text.to_string())
                .fetch_one(&mut *conn)
                .await;
            if let Ok(Some(value)) = decoded {
                assert_eq!(value.to_text(), text);
            }
        }
    });
});

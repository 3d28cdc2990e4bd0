//! sqlx column types for sealed values.
//!
//! [`SealedValue`](crate::SealedValue) is a column type of its own: BYTEA on
//! PostgreSQL, VARBINARY/BLOB on MySQL, BLOB on SQLite. [`SealedText`] stores the
//! text form in TEXT columns. Both check the format header when a row is
//! decoded, so a corrupted or foreign value is a decode error naming what is
//! wrong, never a panic. Nullable columns decode into `Option<_>`.
//!
//! sqlx's encode step has no keys: seal before `bind`, open after `fetch`.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn example(pool: sqlx::SqlitePool, sealer: fieldseal::Sealer) -> Result<(), Box<dyn std::error::Error>> {
//! use fieldseal::{Context, SealedValue};
//!
//! #[derive(sqlx::FromRow)]
//! struct Integration {
//!     id: i64,
//!     refresh_token: Option<SealedValue>,
//! }
//!
//! let ctx = Context::builder("acme", "integrations", "refresh_token").row(1).build()?;
//! let sealed = sealer.seal(&ctx, b"1//0g-token").await?;
//! sqlx::query("UPDATE integrations SET refresh_token = ? WHERE id = 1")
//!     .bind(&sealed)
//!     .execute(&pool)
//!     .await?;
//!
//! let row: Integration = sqlx::query_as("SELECT id, refresh_token FROM integrations WHERE id = 1")
//!     .fetch_one(&pool)
//!     .await?;
//! if let Some(token) = row.refresh_token {
//!     let opened = sealer.open(&ctx, &token).await?;
//! #   let _ = opened;
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::ops::Deref;

use crate::format::SealedValue;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

/// A sealed value in its text form (`fs:…`), as a column type for TEXT columns.
///
/// Use [`SealedValue`] itself for binary columns; use this where the column
/// must stay text (an existing TEXT column, a database without a good binary
/// type). Decoding checks the prefix and the header.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SealedText(pub SealedValue);

impl SealedText {
    /// The sealed value.
    pub fn into_inner(self) -> SealedValue {
        self.0
    }
}

impl From<SealedValue> for SealedText {
    fn from(value: SealedValue) -> Self {
        Self(value)
    }
}

impl From<SealedText> for SealedValue {
    fn from(text: SealedText) -> Self {
        text.0
    }
}

impl Deref for SealedText {
    type Target = SealedValue;

    fn deref(&self) -> &SealedValue {
        &self.0
    }
}

impl fmt::Debug for SealedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SealedText").field(&self.0).finish()
    }
}

impl fmt::Display for SealedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The decode error for a column that does not hold a fieldseal value.
fn decode_error(err: crate::Error) -> sqlx::error::BoxDynError {
    Box::new(err)
}

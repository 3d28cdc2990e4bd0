//! Retrying what the database asks to retry: a deadlock, a serialization
//! failure, a busy SQLite database.

use std::time::Duration;

use crate::error::Error;
use crate::sql::dialect::DbError;

/// The pause before retry number `attempt`: 2, 4, 8, … ms, capped, with
/// jitter so that colliding processes spread out.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(7);
    let jitter = u64::from(rand::random::<u8>()) % base.max(1);
    Duration::from_millis(base + jitter)
}

/// Whether the database asked for the transaction behind `err` to be retried
/// (a deadlock, a serialization failure, a busy SQLite database).
pub(crate) fn should_retry(err: &Error) -> bool {
    match err {
        Error::Store {
            source: Some(source),
            ..
        } => source
            .downcast_ref::<DbError>()
            .is_some_and(DbError::is_retryable),
        _ => false,
    }
}

/// A short random pause before retrying, longer with each attempt.
pub(crate) async fn pause(attempt: u32) {
    tokio::time::sleep(backoff(attempt)).await;
}

//! What the SQL key store and the column jobs share: each database's dialect
//! and error classes (`dialect`), dynamically shaped statements over a pool
//! of any of them (`access`), retrying what the database asks to retry
//! (`retry`), and SQL identifiers (`ident`).

pub(crate) mod access;
pub(crate) mod dialect;
pub(crate) mod ident;
pub(crate) mod retry;

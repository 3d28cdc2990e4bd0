#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::print_stdout,
        clippy::print_stderr,
        clippy::dbg_macro
    )
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Public modules: the names an application needs sit at the crate root
// (below); these hold the rest, by who needs them.
pub mod admin;
pub mod audit;
pub mod blind_index;
#[cfg(feature = "_sql")]
pub mod jobs;
pub mod provider;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

mod batch;
#[cfg(feature = "_sql")]
mod column;
#[cfg(feature = "testing")]
mod conformance;
mod context;
mod crypto;
mod envelope;
mod error;
mod format;
mod keys;
mod ledger;
mod sealer;
mod secret;
#[cfg(feature = "_sql")]
mod sql;
mod telemetry;
mod time;
#[cfg(test)]
mod vectors;

// What an application uses: the handles, contexts, sealed values, errors, the
// key administration handle, and the key and store it starts with.
pub use crate::{
    admin::KeyAdmin,
    context::{Context, ContextBuilder, ContextTemplate},
    error::{Error, ErrorKind, Result},
    format::{Algorithm, MAX_PLAINTEXT_LEN, OVERHEAD, SealedValue},
    provider::LocalKeyProvider,
    sealer::{Sealer, SealerBuilder, TenantSealer},
    secret::{Migrating, Opened, RootKey},
    store::MemoryKeyStore,
    time::Timestamp,
};

// The SQL key store and the column type (features `postgres`, `mysql`,
// `sqlite`).
#[cfg(feature = "_sql")]
pub use crate::{column::SealedText, store::SqlKeyStore};

/// Re-exported so that implementations of [`provider::KeyProvider`] and
/// [`store::KeyStore`] use the same attribute macro version as fieldseal.
pub use async_trait::async_trait;
/// Re-exported: opened plaintext is a [`secrecy::SecretSlice`].
pub use secrecy;

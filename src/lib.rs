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

mod admin;
mod audit;
mod batch;
mod blind_index;
#[cfg(feature = "_sql")]
mod column;
#[cfg(feature = "testing")]
mod conformance;
mod context;
mod crypto;
mod envelope;
mod error;
mod format;
#[cfg(feature = "_sql")]
mod jobs;
mod keys;
mod ledger;
mod provider;
mod sealer;
mod secret;
mod store;
mod telemetry;
mod time;
#[cfg(test)]
mod vectors;

// The public API, in full.
pub use crate::{
    // Key lifecycle operations and the audit log.
    admin::{
        ErasureReport, KeyAdmin, RewrapReport, RootKeyCheck, RootKeyFate, RootKeyRetirement,
        Rotation,
    },
    audit::{
        AUDIT_MAC_LEN, AuditAppend, AuditBreak, AuditEntry, AuditEvent, AuditReport, StateMismatch,
    },
    // Blind indexes: equality search on sealed columns.
    blind_index::{BlindIndex, BlindIndexBuilder, IndexValue, Normalizer, Search},
    // Contexts: where a value lives, bound as associated data.
    context::{Context, ContextBuilder, ContextTemplate},
    // Errors.
    error::{BoxError, Error, Result},
    // The sealed-value format.
    format::{Algorithm, MAX_PLAINTEXT_LEN, OVERHEAD, SealedValue},
    // The shred ledger: erasure that survives restores.
    ledger::{LedgerLine, LedgerReplay, ShredLedger},
    // Root key providers.
    provider::{KeyProvider, LocalKeyProvider, ProviderChain, WrapContext, WrappedKey},
    // The handles.
    sealer::{Sealer, SealerBuilder, TenantSealer},
    // Secrets.
    secret::{Migrating, Opened, RootKey, TenantKey},
    // Key stores.
    store::{
        InsertOutcome, KeyRecord, KeyState, KeyStatus, KeyStore, MemoryKeyStore, NewKeyVersion,
        StoreIdentity, StoredKey, TenantRecord,
    },
    time::Timestamp,
};

// The SQL key store and column types (features `postgres`, `mysql`, `sqlite`).
#[cfg(feature = "_sql")]
pub use crate::{
    column::SealedText,
    // Jobs over the application's sealed columns: the rotation runner's engine.
    jobs::{
        ColumnForm, ColumnSpec, ColumnUsage, Counts, JobOptions, JobReport, KeyType, Plan,
        Progress, RetireReport, RowFailure, SealedColumns, TableReport, TableSpec,
        TenantRetirement,
    },
    store::{SqlDatabase, SqlKeyStore},
};

// The conformance kit for providers and stores, and a clock tests set
// (feature `testing`).
#[cfg(feature = "testing")]
pub use crate::{
    conformance::{check_key_provider, check_key_store},
    time::ManualClock,
};

// Root keys in AWS KMS (feature `aws-kms`).
#[cfg(feature = "aws-kms")]
pub use crate::provider::{AwsKmsProvider, AwsKmsProviderBuilder};

// Root keys in a PKCS#11 token or HSM (feature `pkcs11`).
#[cfg(feature = "pkcs11")]
pub use crate::provider::{Pkcs11Provider, Pkcs11ProviderBuilder};

// Root keys in a Vault or OpenBao Transit engine (feature `vault-transit`).
#[cfg(feature = "vault-transit")]
pub use crate::provider::{VaultTransitProvider, VaultTransitProviderBuilder};

/// Re-exported so that implementations of [`KeyProvider`] and [`KeyStore`] use
/// the same attribute macro version as fieldseal.
pub use async_trait::async_trait;
/// Re-exported: opened plaintext is a [`secrecy::SecretSlice`].
pub use secrecy;

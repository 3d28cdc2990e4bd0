//! Key stores: where wrapped tenant keys, their states and the audit chain live.
//!
//! A key store never sees a key in the clear: it holds wrapped keys, states and
//! times. Every method is one atomic step, so several processes can share one
//! store: version creation is insert-if-absent on `(tenant, version)`, and state
//! changes are conditional updates.

use std::fmt;

use async_trait::async_trait;

use crate::error::Result;
use crate::provider::WrappedKey;
use crate::time::Timestamp;

mod memory;

pub use memory::MemoryKeyStore;

/// The stored state of a tenant key version.
///
/// Which version is *primary* is not stored: it is always the tenant's highest
/// version, which can be neither disabled nor destroyed. Every other active
/// version is *decrypt-only*. So a tenant always has exactly one primary, by
/// construction, and rotating is a single insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyState {
    /// Opens values (and seals them, if it is the highest version).
    Active,
    /// Refuses to open values; can be re-enabled.
    Disabled,
    /// Wrapped bytes erased; values sealed under it are gone for good.
    Destroyed,
}

impl KeyState {
    /// The name stored in SQL key stores: `active`, `disabled` or `destroyed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Destroyed => "destroyed",
        }
    }

    /// Parses [`KeyState::as_str`]'s names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "destroyed" => Some(Self::Destroyed),
            _ => None,
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored tenant key version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The version, from 1.
    pub version: u32,
    /// Its state.
    pub state: KeyState,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its state last changed (its creation time if never).
    pub state_changed_at: Timestamp,
    /// The wrapped key; `None` exactly when the state is
    /// [`Destroyed`](KeyState::Destroyed).
    pub wrapped: Option<WrappedKey>,
}

/// Everything a key store holds about one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRecord {
    /// The tenant id.
    pub tenant: String,
    /// When the tenant was shredded, if it was.
    pub shredded_at: Option<Timestamp>,
    /// Values sealed under lower versions are refused (0 or 1: no minimum).
    pub min_decryption_version: u32,
    /// Incremented by every change to the tenant or its keys, so a process can
    /// cheaply tell whether its cached keys are current.
    pub generation: u64,
    /// The key versions, in ascending order.
    pub keys: Vec<KeyRecord>,
}

impl TenantRecord {
    /// The highest version, which is the primary (0 if there are no keys).
    pub fn latest_version(&self) -> u32 {
        self.keys.last().map_or(0, |k| k.version)
    }
}

/// A key version to create.
#[derive(Clone, Debug)]
pub struct NewKeyVersion {
    /// The version: the tenant's highest version plus one (1 for a new tenant).
    pub version: u32,
    /// The wrapped key.
    pub wrapped: WrappedKey,
    /// Creation time.
    pub created_at: Timestamp,
}

/// What [`KeyStore::insert_key_version`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertOutcome {
    /// The version was created and is now the primary.
    Inserted,
    /// The version already existed (another process created it first); nothing
    /// was written. Reload to see the winner.
    AlreadyExists,
    /// The tenant is shredded; nothing was written.
    Shredded,
}

/// Stores wrapped tenant keys for every tenant.
///
/// fieldseal ships [`MemoryKeyStore`] (tests, single-process tools) and SQL
/// stores. Each method must be atomic with respect to every other process
/// using the same store.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Reads the tenant and all of its key versions in one consistent read.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) on a backend failure.
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>>;

    /// Creates `new.version` for `tenant` if, and only if, it does not exist
    /// yet, it is the tenant's highest version plus one, and the tenant is not
    /// shredded. Creates the tenant when `new.version` is 1.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) on a backend failure;
    /// [`Error::Refused`](crate::Error::Refused) if `new.version` would leave a
    /// gap.
    async fn insert_key_version(&self, tenant: &str, new: NewKeyVersion) -> Result<InsertOutcome>;

    /// Changes the state of `version` from `from` to `to`, if it is in state
    /// `from` and is not the tenant's highest version. Moving to
    /// [`Destroyed`](KeyState::Destroyed) erases the wrapped key. Returns
    /// whether the change was made.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) on a backend failure.
    async fn update_key_state(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        at: Timestamp,
    ) -> Result<bool>;
}

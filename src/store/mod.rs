//! Key stores: where wrapped tenant keys, their states and the audit chain live.
//!
//! A key store never sees a key in the clear: it holds wrapped keys, states and
//! times. Every method is one atomic step, so several processes can share one
//! store: version creation is insert-if-absent on `(tenant, version)`, and state
//! changes are conditional updates.

use std::fmt;

use async_trait::async_trait;

use crate::audit::{AUDIT_MAC_LEN, AuditAppend, AuditEntry};
use crate::error::Result;
use crate::provider::WrappedKey;
use crate::time::Timestamp;

mod memory;
#[cfg(feature = "_sql")]
pub(crate) mod sql;

pub use memory::MemoryKeyStore;
#[cfg(feature = "_sql")]
pub use sql::{SqlDatabase, SqlKeyStore};

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
#[non_exhaustive]
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
#[non_exhaustive]
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

impl KeyRecord {
    /// A key version as a store read it, its state unchanged since its
    /// creation (set [`state_changed_at`](Self::state_changed_at) if it
    /// changed since). `wrapped` is `None` exactly when `state` is
    /// [`Destroyed`](KeyState::Destroyed).
    pub fn new(
        version: u32,
        state: KeyState,
        created_at: Timestamp,
        wrapped: Option<WrappedKey>,
    ) -> Self {
        Self {
            version,
            state,
            created_at,
            state_changed_at: created_at,
            wrapped,
        }
    }
}

impl TenantRecord {
    /// A tenant as a store read it at `generation`: not shredded, no minimum
    /// decryption version and no keys until the store sets those fields from
    /// its rows.
    pub fn new(tenant: impl Into<String>, generation: u64) -> Self {
        Self {
            tenant: tenant.into(),
            shredded_at: None,
            min_decryption_version: 0,
            generation,
            keys: Vec::new(),
        }
    }

    /// The highest version, which is the primary (0 if there are no keys).
    pub fn latest_version(&self) -> u32 {
        self.keys.iter().map(|k| k.version).max().unwrap_or(0)
    }
}

/// Who a key store is. fieldseal wraps every key a store with an identity
/// holds with the store's id in the wrap context
/// ([`WrapContext::in_store`](crate::provider::WrapContext::in_store)), so a key row,
/// or the audit-chain key (and with it the whole audit chain), copied into
/// another store under the same root key does not unwrap there.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreIdentity {
    /// 1 to 64 bytes of ASCII letters, digits, `-` and `_`, unique per store
    /// and never changed (the SQL stores: 32 random hexadecimal digits, made
    /// when the store is created).
    pub id: String,
    /// Whether keys wrapped without a store in their context (by a fieldseal
    /// from before stores had identities) still unwrap. `false` for a store
    /// created with an identity; an upgraded store accepts them until
    /// [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all) has bound every
    /// key to the store and turned it off.
    pub accepts_unbound: bool,
}

impl StoreIdentity {
    /// An identity.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) for an id that is empty, longer
    /// than 64 bytes or holds anything but ASCII letters, digits, `-` and `_`.
    pub fn new(id: impl Into<String>, accepts_unbound: bool) -> Result<Self> {
        let id = id.into();
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(crate::Error::config(
                "key store id: 1 to 64 ASCII letters, digits, `-` and `_`",
            ));
        }
        Ok(Self {
            id,
            accepts_unbound,
        })
    }
}

/// A key version to create.
#[derive(Clone, Debug)]
#[non_exhaustive]
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

/// A tenant key version's effective status, derived from its stored
/// [`KeyState`] and whether it is the tenant's highest version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Seals new values and opens old ones. Exactly one per live tenant.
    Primary,
    /// Opens values sealed under it; seals nothing.
    DecryptOnly,
    /// Refuses to open; can be enabled again.
    Disabled,
    /// Gone; its values can never be opened.
    Destroyed,
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Primary => "primary",
            Self::DecryptOnly => "decrypt-only",
            Self::Disabled => "disabled",
            Self::Destroyed => "destroyed",
        })
    }
}

impl TenantRecord {
    /// The status of `version`, if the tenant has it.
    pub fn status(&self, version: u32) -> Option<KeyStatus> {
        let key = self.keys.iter().find(|k| k.version == version)?;
        Some(match key.state {
            KeyState::Destroyed => KeyStatus::Destroyed,
            KeyState::Disabled => KeyStatus::Disabled,
            KeyState::Active if version == self.latest_version() && self.shredded_at.is_none() => {
                KeyStatus::Primary
            }
            KeyState::Active => KeyStatus::DecryptOnly,
        })
    }
}

/// A page of stored key versions across all tenants, for root key rotation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredKey {
    /// The tenant.
    pub tenant: String,
    /// The version's record.
    pub key: KeyRecord,
}

impl StoredKey {
    /// Key version `key` of `tenant`, for [`KeyStore::list_wrapped_keys`].
    pub fn new(tenant: impl Into<String>, key: KeyRecord) -> Self {
        Self {
            tenant: tenant.into(),
            key,
        }
    }
}

/// Stores wrapped tenant keys for every tenant, and the audit chain.
///
/// fieldseal ships [`MemoryKeyStore`] (tests, single-process tools) and SQL
/// stores. Each method must be atomic with respect to every other process
/// using the same store: a change and its audit entry are written together or
/// not at all. Every change to a tenant increments its
/// [`generation`](TenantRecord::generation).
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Reads the tenant and all of its key versions in one consistent read.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store) on a backend failure (as for every
    /// method here).
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>>;

    /// The tenant's [`generation`](TenantRecord::generation), as cheaply as the
    /// backend allows (one indexed row).
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn tenant_generation(&self, tenant: &str) -> Result<Option<u64>>;

    /// The generations of several tenants, in the order given (`None` for a
    /// tenant the store does not know). The column jobs check every tenant
    /// of a batch with it before writing, so that they never write under a
    /// version that another process has rotated away from.
    ///
    /// The provided implementation calls
    /// [`tenant_generation`](KeyStore::tenant_generation) once per tenant;
    /// a backend that can read many rows at once should override it.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn tenant_generations(&self, tenants: &[&str]) -> Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            out.push(self.tenant_generation(tenant).await?);
        }
        Ok(out)
    }

    /// Creates `new.version` for `tenant` if, and only if, it is the tenant's
    /// highest version plus one and the tenant is not shredded (creating the
    /// tenant when `new.version` is 1), and appends `audit`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store); [`Error::Refused`](crate::Error::Refused)
    /// if `new.version` would leave a gap.
    async fn insert_key_version(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome>;

    /// Changes the state of `version` from `from` to `to` if it is in state
    /// `from`, the tenant is not shredded, and it is not the tenant's highest
    /// version; moving to [`Destroyed`](KeyState::Destroyed) erases the wrapped
    /// key. Appends `audit` if it changed. Returns whether it changed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn update_key_state(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        audit: &AuditAppend<'_>,
    ) -> Result<bool>;

    /// Sets the tenant's minimum decryption version if the tenant is live and
    /// `minimum` is at most its highest version. Appends `audit` if it changed.
    /// Returns whether it changed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn set_min_decryption_version(
        &self,
        tenant: &str,
        minimum: u32,
        audit: &AuditAppend<'_>,
    ) -> Result<bool>;

    /// Marks the tenant shredded and destroys every key version (erasing all
    /// wrapped keys), in one step. Appends `audit`. Returns `false` if the tenant
    /// does not exist or is already shredded.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn shred_tenant(&self, tenant: &str, audit: &AuditAppend<'_>) -> Result<bool>;

    /// Gives a shredded tenant a new primary key, `new.version` (its highest
    /// version plus one), and clears the shredded mark, in one step, appending
    /// `audit`: returns [`InsertOutcome::Inserted`]. If the tenant is not (or no
    /// longer) shredded — another process re-created it first — nothing is
    /// written and the result is [`InsertOutcome::AlreadyExists`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTenant`](crate::Error::UnknownTenant) if the tenant does
    /// not exist; [`Error::Refused`](crate::Error::Refused) if `new.version`
    /// would leave a gap; [`Error::Store`](crate::Error::Store).
    async fn recreate_tenant(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome>;

    /// Up to `limit` key versions that still hold a wrapped key, across all
    /// tenants, ordered by `(tenant, version)` and strictly after `after`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn list_wrapped_keys(
        &self,
        after: Option<(&str, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredKey>>;

    /// Replaces the wrapped form of a key version if it is still exactly `old`
    /// (compare-and-swap), and appends `audit`. Returns whether it was replaced.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn rewrap_key(
        &self,
        tenant: &str,
        version: u32,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool>;

    /// The wrapped audit-chain key, if one was created.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn load_audit_key(&self) -> Result<Option<WrappedKey>>;

    /// Stores the wrapped audit-chain key if there is none yet. Returns whether
    /// it was stored (`false`: another process stored one first).
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn insert_audit_key(&self, wrapped: WrappedKey) -> Result<bool>;

    /// Replaces the wrapped audit-chain key if it is still exactly `old`, and
    /// appends `audit`. Returns whether it was replaced.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn rewrap_audit_key(
        &self,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool>;

    /// Up to `limit` audit entries with `seq > after`, in order.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>>;

    /// The store's identity, if it has one.
    ///
    /// A store that returns one promises to keep
    /// [`WrappedKey::is_store_bound`] with the wrapped bytes wherever it
    /// stores them (key versions, re-wraps, the audit key) and to return it
    /// with them, and to compare it with the bytes in
    /// [`rewrap_key`](KeyStore::rewrap_key) and
    /// [`rewrap_audit_key`](KeyStore::rewrap_audit_key). The provided
    /// implementation returns `None`: keys are wrapped without a store in
    /// their context, and a store is interchangeable with any other under the
    /// same root key.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn store_identity(&self) -> Result<Option<StoreIdentity>> {
        Ok(None)
    }

    /// Stops accepting keys wrapped without the store in their context
    /// ([`StoreIdentity::accepts_unbound`] becomes `false`) once it holds none
    /// (a key written meanwhile by a process of an earlier release would
    /// never unwrap again), and appends `audit`, atomically. A store that
    /// already refuses them appends `audit` too (a store created refusing
    /// records so in its log). `true` if the store refuses them and `audit`
    /// was appended; `false` if it still holds an unbound key, or has no
    /// identity (the provided implementation), and nothing changed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn refuse_unbound_wraps(&self, audit: &AuditAppend<'_>) -> Result<bool> {
        let _ = audit;
        Ok(false)
    }

    /// Appends `audit` on its own: an event that changes nothing the store
    /// holds (a root key created or destroyed in the provider).
    ///
    /// # Errors
    ///
    /// The provided implementation refuses
    /// ([`Error::Refused`](crate::Error::Refused)): root-key epochs need a
    /// store that records them. [`Error::Store`](crate::Error::Store).
    async fn record_audit(&self, audit: &AuditAppend<'_>) -> Result<()> {
        let _ = audit;
        Err(crate::Error::refused(
            "this key store cannot record an audit entry on its own (KeyStore::record_audit), \
             which root-key epochs need",
        ))
    }

    /// The sequence number and MAC of the newest audit entry, as the store
    /// records them apart from the log (the SQL stores' head row, updated in
    /// the transaction of each append), so that
    /// [`KeyAdmin::verify_audit`](crate::KeyAdmin::verify_audit) notices a log
    /// whose newest entries were deleted, or that was wiped. `Some((0, _))`
    /// with no entry ever appended.
    ///
    /// The provided implementation returns `None`: the store keeps no record
    /// apart from the log, and a truncated tail goes unnoticed unless the
    /// application compares [`AuditReport::head`](crate::audit::AuditReport::head)
    /// with a copy kept elsewhere.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn audit_head(&self) -> Result<Option<(u64, [u8; AUDIT_MAC_LEN])>> {
        Ok(None)
    }

    /// If entry `through` still has MAC `through_mac`, deletes every entry up to
    /// and including it and appends `audit` (an `audit.pruned` entry), in one
    /// step. Returns how many entries were deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Store`](crate::Error::Store).
    async fn prune_audit(
        &self,
        through: u64,
        through_mac: &[u8; AUDIT_MAC_LEN],
        audit: &AuditAppend<'_>,
    ) -> Result<u64>;
}

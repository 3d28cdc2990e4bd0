//! The crate's one error type.

use std::fmt;
use std::path::PathBuf;

use crate::time::Timestamp;

/// A boxed error from a key provider or key store backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in fieldseal.
///
/// One variant, [`Error::OpenFailed`], is deliberately opaque: a sealed value that
/// fails authentication or the key-commitment check says nothing about which check
/// failed or why. Every other variant names what happened and what to do next.
///
/// # Security
///
/// No variant ever carries key material, plaintext, wrapped key bytes or the bytes
/// of a sealed value; only identifiers (tenant ids, key versions, root key ids),
/// lengths and times. Errors are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sealed value did not open under its key and context.
    ///
    /// The value was altered, or it was sealed for a different tenant, table,
    /// column, row or extra context than the one given to `open`. fieldseal does
    /// not say which: that would be an oracle for an attacker.
    #[error(
        "sealed value did not open: it was altered, or it was sealed for a different \
         tenant, table, column, row or context than the one given"
    )]
    OpenFailed,

    /// The bytes or text are not a well-formed sealed value.
    #[error("malformed sealed value: {reason}")]
    Malformed {
        /// What is wrong with the input (never its content).
        reason: String,
    },

    /// The sealed value declares a format version this build does not read.
    #[error(
        "sealed value has format version {version}, but this build of fieldseal reads only \
         version 1: upgrade fieldseal, or check that the column holds fieldseal values"
    )]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },

    /// The sealed value names an AEAD algorithm this build does not know.
    #[error(
        "sealed value names algorithm id {id}, which this build of fieldseal does not know \
         (1 = AES-256-GCM, 2 = ChaCha20-Poly1305): upgrade fieldseal"
    )]
    UnsupportedAlgorithm {
        /// The algorithm byte found.
        id: u8,
    },

    /// A context (tenant, table, column, row, extras) was rejected.
    #[error("invalid context: {reason}")]
    InvalidContext {
        /// Which part is invalid and why.
        reason: String,
    },

    /// A per-tenant handle was given a context for another tenant.
    #[error(
        "this handle serves tenant `{handle}`, but the context names tenant `{context}`: \
         get a handle for that tenant with `Sealer::tenant`"
    )]
    TenantMismatch {
        /// The tenant the handle serves.
        handle: String,
        /// The tenant the context names.
        context: String,
    },

    /// The plaintext is larger than a single field value may be.
    #[error("plaintext is {len} bytes; a sealed field holds at most {max} bytes")]
    PlaintextTooLarge {
        /// Length of the plaintext given.
        len: usize,
        /// The largest plaintext accepted.
        max: usize,
    },

    /// The key store has no key for this tenant.
    #[error(
        "tenant `{tenant}` has no keys in the key store: check the tenant id and that this \
         process uses the right key store; to seal for a new tenant, create it with \
         `Sealer::create_tenant` (or allow creation on first use)"
    )]
    UnknownTenant {
        /// The tenant id.
        tenant: String,
    },

    /// The tenant has no key with this version.
    #[error(
        "tenant `{tenant}` key version {version} is not known here: if another process \
         rotated the key moments ago, retry through `Sealer::open` (which reloads); otherwise \
         the value was sealed under a key this key store never held"
    )]
    UnknownKeyVersion {
        /// The tenant id.
        tenant: String,
        /// The key version the sealed value names.
        version: u32,
    },

    /// The key version that sealed the value was destroyed.
    #[error(
        "tenant `{tenant}` key version {version} was destroyed on {destroyed_at}: values \
         sealed under it can never be opened again"
    )]
    KeyDestroyed {
        /// The tenant id.
        tenant: String,
        /// The destroyed key version.
        version: u32,
        /// When it was destroyed.
        destroyed_at: Timestamp,
    },

    /// The key version that sealed the value is disabled.
    #[error(
        "tenant `{tenant}` key version {version} is disabled (since {disabled_at}): \
         re-enable it with `KeyAdmin::enable_version` to open values sealed under it"
    )]
    KeyDisabled {
        /// The tenant id.
        tenant: String,
        /// The disabled key version.
        version: u32,
        /// When it was disabled.
        disabled_at: Timestamp,
    },

    /// The value was sealed under a version below the tenant's minimum decryption version.
    #[error(
        "tenant `{tenant}` refuses key version {version}: its minimum decryption version is \
         {minimum} (lower it to open older values, or re-seal them first)"
    )]
    BelowMinimumVersion {
        /// The tenant id.
        tenant: String,
        /// The key version the sealed value names.
        version: u32,
        /// The tenant's minimum decryption version.
        minimum: u32,
    },

    /// The tenant was crypto-shredded.
    #[error(
        "tenant `{tenant}` was shredded on {shredded_at}: all of its keys are destroyed and \
         its values can never be opened again"
    )]
    TenantShredded {
        /// The tenant id.
        tenant: String,
        /// When it was shredded.
        shredded_at: Timestamp,
    },

    /// A lifecycle operation was refused because it would break a key invariant.
    ///
    /// Nothing was changed.
    #[error("{reason}")]
    Refused {
        /// What was refused and why.
        reason: String,
    },

    /// A wrapped key names a root key that the provider does not hold.
    #[error(
        "root key `{id}` is not configured in the key provider: add it (it may be an older \
         root key still needed to unwrap tenant keys)"
    )]
    RootKeyNotConfigured {
        /// The root key id.
        id: String,
    },

    /// A wrapped key did not unwrap under the root key it names.
    #[error(
        "the wrapped key for {subject} did not unwrap under root key `{root_key_id}`: the \
         root key is wrong, or the key store record was altered or copied from elsewhere"
    )]
    UnwrapFailed {
        /// What the wrapped key is (for example "tenant `acme` key version 3").
        subject: String,
        /// The root key id it names.
        root_key_id: String,
    },

    /// A tenant bound to its own root key
    /// ([`SealerBuilder::tenant_root_key`](crate::SealerBuilder::tenant_root_key))
    /// could not use it: the key was disabled, its access revoked, it is
    /// pending deletion or destroyed, or its provider is unreachable.
    ///
    /// Only that tenant is affected. Its values open again once the key is
    /// usable again (re-enabled, access restored); a destroyed key means the
    /// tenant is erased, in every backup too.
    #[error(
        "tenant `{tenant}`'s own root key `{root_key_id}` is unavailable, so its keys cannot be \
         {action}: {source}. Only this tenant is affected; its values open again once the key \
         is usable again (if the key was destroyed, the tenant is erased)"
    )]
    TenantRootKeyUnavailable {
        /// The tenant.
        tenant: String,
        /// Its root key's id.
        root_key_id: String,
        /// `"unwrapped"` or `"wrapped"`.
        action: &'static str,
        /// The provider's error.
        #[source]
        source: Box<Error>,
    },

    /// The root key provider failed (network, permissions, KMS error).
    #[error("key provider error: {message}")]
    Provider {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The key store failed (database error, lost connection).
    #[error("key store error: {message}")]
    Store {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The SQL key store's tables are missing, or were made by another fieldseal
    /// version.
    #[error("{}", schema_message(table, *found, *supported))]
    Schema {
        /// The schema-version table looked at.
        table: String,
        /// The schema version found (`None`: the tables do not exist).
        found: Option<u32>,
        /// The schema version this build reads.
        supported: u32,
    },

    /// A root key could not be loaded.
    #[error("root key from {origin}: {reason}")]
    RootKey {
        /// Where the key was to come from (a file path or an environment variable name).
        origin: String,
        /// What went wrong.
        reason: String,
        /// The underlying I/O error, if any.
        #[source]
        source: Option<std::io::Error>,
    },

    /// A root key file already exists and was not overwritten.
    #[error(
        "root key file {} already exists; fieldseal never overwrites a root key \
         (load it instead, or choose another path)",
        path.display()
    )]
    RootKeyFileExists {
        /// The path that exists.
        path: PathBuf,
    },

    /// The shred ledger could not be written or read.
    #[error("shred ledger {}: {reason}", path.display())]
    ShredLedger {
        /// The ledger's path.
        path: PathBuf,
        /// What went wrong, and what to do.
        reason: String,
        /// The underlying I/O error, if any.
        #[source]
        source: Option<std::io::Error>,
    },

    /// A configuration value is invalid.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// A blind index search would miss rows: a key version that may still
    /// hold indexed values cannot be searched.
    #[error(
        "blind index `{index}` of tenant `{tenant}` cannot be searched under key version \
         {version} ({reason}), so rows indexed under it would be missing from the result: \
         once no sealed value (and so no index value) is under version {version}, raise the tenant's minimum decryption \
         version above it (`KeyAdmin::set_min_decryption_version`), or search the other \
         versions with `TenantSealer::search_partial`"
    )]
    IncompleteSearch {
        /// The tenant id.
        tenant: String,
        /// The index name.
        index: String,
        /// The key version that cannot be searched.
        version: u32,
        /// Why: the version's destruction or disabling, with its time.
        reason: String,
    },

    /// A blind index's normaliser refused a value.
    #[error(
        "the value cannot be indexed{}: the `{normalizer}` normaliser refuses it because {reason}",
        if index.is_empty() { String::new() } else { format!(" by blind index `{index}`") }
    )]
    NotIndexable {
        /// The index name (empty when a normaliser was used on its own).
        index: String,
        /// The normaliser's id.
        normalizer: String,
        /// Why (never the value).
        reason: &'static str,
    },

    /// An opened value is not valid UTF-8 and was asked for as text.
    #[error("opened value is not valid UTF-8 (it was sealed from bytes, not text)")]
    NotUtf8,
}

fn schema_message(table: &str, found: Option<u32>, supported: u32) -> String {
    match found {
        None => format!(
            "the key store's tables do not exist (no `{table}`): run `SqlKeyStore::migrate()` \
             once before using the store"
        ),
        Some(found) if found > supported => format!(
            "the key store was migrated by a newer fieldseal (schema version {found}; this build \
             reads version {supported}): upgrade fieldseal"
        ),
        Some(found) => format!(
            "the key store has schema version {found}, but this build reads version \
             {supported}: run `SqlKeyStore::migrate()` to upgrade it"
        ),
    }
}

/// The kind of an [`Error`], as [`Error::kind`] gives it: a plain value to
/// match on, like [`std::io::ErrorKind`].
///
/// Its names ([`ErrorKind::as_str`]) are those of `docs/FORMAT.md` §"Error
/// kinds" and of the `expect` fields of the published test vectors. They
/// never carry an identifier or a secret, so they are safe as a metrics label
/// or a log field where the full message is too detailed. New kinds may be
/// added in a minor release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The value did not open under its key and context (one opaque kind, on purpose). See [`Error::OpenFailed`].
    OpenFailed,
    /// The bytes or text are not a well-formed sealed value. See [`Error::Malformed`].
    Malformed,
    /// The value declares a format version this build does not read. See [`Error::UnsupportedVersion`].
    UnsupportedVersion,
    /// The value names an AEAD algorithm this build does not know. See [`Error::UnsupportedAlgorithm`].
    UnsupportedAlgorithm,
    /// A context (tenant, table, column, row, extras) was rejected. See [`Error::InvalidContext`].
    InvalidContext,
    /// A per-tenant handle was given a context for another tenant. See [`Error::TenantMismatch`].
    TenantMismatch,
    /// The plaintext is larger than a single field value may be. See [`Error::PlaintextTooLarge`].
    PlaintextTooLarge,
    /// The key store has no key for this tenant. See [`Error::UnknownTenant`].
    UnknownTenant,
    /// The tenant has no key with this version. See [`Error::UnknownKeyVersion`].
    UnknownKeyVersion,
    /// The key version that sealed the value was destroyed. See [`Error::KeyDestroyed`].
    KeyDestroyed,
    /// The key version that sealed the value is disabled. See [`Error::KeyDisabled`].
    KeyDisabled,
    /// The value was sealed under a version below the tenant's minimum decryption version. See [`Error::BelowMinimumVersion`].
    BelowMinimumVersion,
    /// The tenant was crypto-shredded. See [`Error::TenantShredded`].
    TenantShredded,
    /// A lifecycle operation was refused because it would break a key invariant. See [`Error::Refused`].
    Refused,
    /// A wrapped key names a root key that the provider does not hold. See [`Error::RootKeyNotConfigured`].
    RootKeyNotConfigured,
    /// A wrapped key did not unwrap under the root key it names. See [`Error::UnwrapFailed`].
    UnwrapFailed,
    /// The root key provider failed (network, permissions, KMS error). See [`Error::Provider`].
    Provider,
    /// A tenant's own root key refused; only that tenant is affected. See [`Error::TenantRootKeyUnavailable`].
    TenantRootKeyUnavailable,
    /// The key store failed (database error, lost connection). See [`Error::Store`].
    Store,
    /// The SQL key store's tables are missing or of another schema version. See [`Error::Schema`].
    Schema,
    /// A root key could not be loaded. See [`Error::RootKey`].
    RootKey,
    /// A root key file already exists and was not overwritten. See [`Error::RootKeyFileExists`].
    RootKeyFileExists,
    /// A configuration value is invalid. See [`Error::Config`].
    Config,
    /// The shred ledger could not be written or read. See [`Error::ShredLedger`].
    ShredLedger,
    /// An opened value is not valid UTF-8 and was asked for as text. See [`Error::NotUtf8`].
    NotUtf8,
    /// A blind index search would miss rows. See [`Error::IncompleteSearch`].
    IncompleteSearch,
    /// A blind index's normaliser refused a value. See [`Error::NotIndexable`].
    NotIndexable,
}

impl ErrorKind {
    /// The kind's stable name, such as `open_failed` or `key_destroyed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenFailed => "open_failed",
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::InvalidContext => "invalid_context",
            Self::TenantMismatch => "tenant_mismatch",
            Self::PlaintextTooLarge => "plaintext_too_large",
            Self::UnknownTenant => "unknown_tenant",
            Self::UnknownKeyVersion => "unknown_key_version",
            Self::KeyDestroyed => "key_destroyed",
            Self::KeyDisabled => "key_disabled",
            Self::BelowMinimumVersion => "below_minimum_version",
            Self::TenantShredded => "tenant_shredded",
            Self::Refused => "refused",
            Self::RootKeyNotConfigured => "root_key_not_configured",
            Self::UnwrapFailed => "unwrap_failed",
            Self::Provider => "provider",
            Self::TenantRootKeyUnavailable => "tenant_root_key_unavailable",
            Self::Store => "store",
            Self::Schema => "schema",
            Self::RootKey => "root_key",
            Self::RootKeyFileExists => "root_key_file_exists",
            Self::Config => "config",
            Self::ShredLedger => "shred_ledger",
            Self::NotUtf8 => "not_utf8",
            Self::IncompleteSearch => "incomplete_search",
            Self::NotIndexable => "not_indexable",
        }
    }
}

/// Kinds sort by name, so reports keyed by kind list them alphabetically.
impl Ord for ErrorKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for ErrorKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// This error's kind: what a caller matches on to decide what to do,
    /// without the details the message carries.
    ///
    /// [`ErrorKind::as_str`] gives its stable name (`open_failed`,
    /// `key_destroyed`, …), safe as a metrics label or a log field.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::OpenFailed => ErrorKind::OpenFailed,
            Self::Malformed { .. } => ErrorKind::Malformed,
            Self::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            Self::UnsupportedAlgorithm { .. } => ErrorKind::UnsupportedAlgorithm,
            Self::InvalidContext { .. } => ErrorKind::InvalidContext,
            Self::TenantMismatch { .. } => ErrorKind::TenantMismatch,
            Self::PlaintextTooLarge { .. } => ErrorKind::PlaintextTooLarge,
            Self::UnknownTenant { .. } => ErrorKind::UnknownTenant,
            Self::UnknownKeyVersion { .. } => ErrorKind::UnknownKeyVersion,
            Self::KeyDestroyed { .. } => ErrorKind::KeyDestroyed,
            Self::KeyDisabled { .. } => ErrorKind::KeyDisabled,
            Self::BelowMinimumVersion { .. } => ErrorKind::BelowMinimumVersion,
            Self::TenantShredded { .. } => ErrorKind::TenantShredded,
            Self::Refused { .. } => ErrorKind::Refused,
            Self::RootKeyNotConfigured { .. } => ErrorKind::RootKeyNotConfigured,
            Self::UnwrapFailed { .. } => ErrorKind::UnwrapFailed,
            Self::Provider { .. } => ErrorKind::Provider,
            Self::TenantRootKeyUnavailable { .. } => ErrorKind::TenantRootKeyUnavailable,
            Self::Store { .. } => ErrorKind::Store,
            Self::Schema { .. } => ErrorKind::Schema,
            Self::RootKey { .. } => ErrorKind::RootKey,
            Self::RootKeyFileExists { .. } => ErrorKind::RootKeyFileExists,
            Self::Config { .. } => ErrorKind::Config,
            Self::ShredLedger { .. } => ErrorKind::ShredLedger,
            Self::NotUtf8 => ErrorKind::NotUtf8,
            Self::IncompleteSearch { .. } => ErrorKind::IncompleteSearch,
            Self::NotIndexable { .. } => ErrorKind::NotIndexable,
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed {
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_context(reason: impl Into<String>) -> Self {
        Self::InvalidContext {
            reason: reason.into(),
        }
    }

    pub(crate) fn refused(reason: impl Into<String>) -> Self {
        Self::Refused {
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::Config {
            reason: reason.into(),
        }
    }

    /// A key store failure with an underlying cause, for [`KeyStore`](crate::store::KeyStore)
    /// implementations.
    pub fn store(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Store {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A key provider failure with an underlying cause, for
    /// [`KeyProvider`](crate::provider::KeyProvider) implementations.
    pub fn provider(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Provider {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

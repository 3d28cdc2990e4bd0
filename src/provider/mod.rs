//! Root key providers: the joint where fieldseal meets a KMS or a local key file.
//!
//! A provider wraps and unwraps tenant keys under a root key (a key-encryption
//! key) that it holds. The wrap binds what the key is for — tenant and version —
//! as associated data, so a wrapped key copied to another tenant's or version's
//! record does not unwrap.

use std::fmt;

use async_trait::async_trait;

use crate::error::{Error, Result};

#[cfg(feature = "aws-kms")]
mod aws_kms;
mod chain;
mod local;
#[cfg(feature = "pkcs11")]
mod pkcs11;
#[cfg(feature = "vault-transit")]
mod vault_transit;

/// What a provider's error carries as its source.
pub use crate::error::BoxError;
/// The tenant key a provider wraps and unwraps.
pub use crate::secret::TenantKey;
#[cfg(feature = "aws-kms")]
pub use aws_kms::{AwsKmsProvider, AwsKmsProviderBuilder};
pub use chain::ProviderChain;
pub use local::LocalKeyProvider;
#[cfg(test)]
pub(crate) use local::wrap_with_nonce;
#[cfg(feature = "pkcs11")]
pub use pkcs11::{Pkcs11Provider, Pkcs11ProviderBuilder};
#[cfg(feature = "vault-transit")]
pub use vault_transit::{VaultTransitProvider, VaultTransitProviderBuilder};

/// What a wrapped key is: a tenant key (its tenant and version) or the key store's
/// audit key, and, for a key store that has an identity
/// ([`KeyStore::store_identity`](crate::store::KeyStore::store_identity)), which
/// store holds it.
///
/// Providers must bind it to the wrap — as AEAD associated data
/// ([`WrapContext::aad`]) or as a KMS encryption context
/// ([`WrapContext::fields`]) — and refuse to unwrap under any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrapContext<'a> {
    purpose: Purpose,
    tenant: &'a str,
    version: u32,
    store: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    TenantKey,
    AuditKey,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Self::TenantKey => "tenant-key",
            Self::AuditKey => "audit-key",
        }
    }
}

impl<'a> WrapContext<'a> {
    /// The context of tenant key `version` of `tenant`.
    ///
    /// fieldseal builds these itself; the constructor is public so that tests
    /// of a [`KeyProvider`] (and the published vectors) can name a context.
    pub fn tenant_key(tenant: &'a str, version: u32) -> Self {
        Self {
            purpose: Purpose::TenantKey,
            tenant,
            version,
            store: None,
        }
    }

    /// The context of version `version` of the key store's audit-chain key
    /// (fieldseal uses version 1; FORMAT.md §"The audit chain").
    pub fn audit_key(version: u32) -> Self {
        Self {
            purpose: Purpose::AuditKey,
            tenant: "",
            version,
            store: None,
        }
    }

    /// The same key, bound to the key store `store_id` too: a key wrapped so
    /// does not unwrap for another store, even one under the same root key
    /// (FORMAT.md §"Wrapped keys").
    #[must_use]
    pub fn in_store(mut self, store_id: &'a str) -> Self {
        self.store = Some(store_id);
        self
    }

    /// The key store the wrap is bound to, if any.
    pub fn store_id(&self) -> Option<&'a str> {
        self.store
    }

    /// `true` for the audit-chain key (whose tenant is empty), `false` for a
    /// tenant key.
    pub fn is_audit_key(&self) -> bool {
        self.purpose == Purpose::AuditKey
    }

    /// The tenant id (empty for the audit-chain key).
    pub fn tenant(&self) -> &'a str {
        self.tenant
    }

    /// The key version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The canonical associated-data encoding (FORMAT.md §"Wrapped keys"):
    /// `"fieldseal/v1/" || purpose || 0x00 || u32be(len(tenant)) || tenant ||
    /// u32be(version)`, where purpose is `tenant-key` or `audit-key`; bound to
    /// a store, followed by `u32be(len(store_id)) || store_id`.
    pub fn aad(&self) -> Vec<u8> {
        let label = self.purpose.label();
        let mut out = Vec::with_capacity(13 + label.len() + 9 + self.tenant.len());
        out.extend_from_slice(b"fieldseal/v1/");
        out.extend_from_slice(label.as_bytes());
        out.push(0);
        // Tenant ids are at most 255 bytes (checked by `Context`).
        out.extend_from_slice(
            &u32::try_from(self.tenant.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(self.tenant.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        if let Some(store) = self.store {
            // Store ids are at most 64 bytes (checked by `StoreIdentity`).
            out.extend_from_slice(&u32::try_from(store.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(store.as_bytes());
        }
        out
    }

    /// The same binding as string pairs, for KMS encryption contexts
    /// (FORMAT.md §"Wrapped keys"): `fieldseal:purpose`, then, for a tenant key,
    /// `fieldseal:tenant`, then `fieldseal:version`. The audit-chain key has no
    /// tenant pair: KMS encryption context values must not be empty, and the
    /// purpose already tells the two apart. Bound to a store, then
    /// `fieldseal:store`.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(4);
        out.push(("fieldseal:purpose", format!("{}/v1", self.purpose.label())));
        if self.purpose == Purpose::TenantKey {
            out.push(("fieldseal:tenant", self.tenant.to_string()));
        }
        out.push(("fieldseal:version", self.version.to_string()));
        if let Some(store) = self.store {
            out.push(("fieldseal:store", store.to_string()));
        }
        out
    }

    /// A human description for error messages: "tenant `acme` key version 3".
    pub(crate) fn describe(&self) -> String {
        match self.purpose {
            Purpose::TenantKey => format!("tenant `{}` key version {}", self.tenant, self.version),
            Purpose::AuditKey => format!("the audit-chain key version {}", self.version),
        }
    }
}

/// A tenant key wrapped under a root key: the root key's id and the provider's
/// opaque bytes.
///
/// # Security
///
/// The bytes are not secret in the way a key is (they open only with the root
/// key), but `Debug` prints only their length, and nothing in fieldseal logs them.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    root_key_id: String,
    bytes: Vec<u8>,
    store_bound: bool,
}

impl WrappedKey {
    /// A wrapped key from its root key id and provider bytes, wrapped without
    /// a store in its context.
    pub fn new(root_key_id: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            root_key_id: root_key_id.into(),
            bytes,
            store_bound: false,
        }
    }

    /// The same key, marked as wrapped with its key store in the context
    /// ([`WrapContext::in_store`]). fieldseal marks the keys it wraps so; a
    /// [`KeyStore`](crate::store::KeyStore) with an identity keeps the mark with the
    /// bytes and returns it with them.
    #[must_use]
    pub fn bound_to_store(mut self) -> Self {
        self.store_bound = true;
        self
    }

    /// Whether it was wrapped with its key store in the context.
    pub fn is_store_bound(&self) -> bool {
        self.store_bound
    }

    /// The id of the root key that wrapped it.
    pub fn root_key_id(&self) -> &str {
        &self.root_key_id
    }

    /// The provider's wrapped bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("root_key_id", &self.root_key_id)
            .field("len", &self.bytes.len())
            .field("store_bound", &self.store_bound)
            .finish()
    }
}

/// Wraps and unwraps tenant keys under root keys it holds.
///
/// A provider may hold several root keys: [`current_root_key_id`] names the one
/// that wraps new keys; the others still unwrap (this is how the root key is
/// rotated). A provider is called only on key creation, rotation and cache
/// misses, never per sealed value.
///
/// # Writing a provider
///
/// ```
/// use fieldseal::{Error, provider::{KeyProvider, TenantKey, WrapContext, WrappedKey}};
///
/// #[derive(Debug)]
/// struct MyKms { /* a client */ }
///
/// #[fieldseal::async_trait]
/// impl KeyProvider for MyKms {
///     fn current_root_key_id(&self) -> &str {
///         "my-kms-key-1"
///     }
///
///     async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
///         // Send key.expose_secret() and ctx.fields() (or ctx.aad()) to the KMS.
///         # let _ = (key, ctx);
///         # Err(Error::RootKeyNotConfigured { id: "my-kms-key-1".into() })
///     }
///
///     async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey, Error> {
///         if wrapped.root_key_id() != "my-kms-key-1" {
///             return Err(Error::RootKeyNotConfigured { id: wrapped.root_key_id().into() });
///         }
///         // Send wrapped.as_bytes() and the same ctx binding; the KMS refuses a mismatch.
///         # let _ = ctx;
///         # Err(Error::RootKeyNotConfigured { id: wrapped.root_key_id().into() })
///     }
/// }
/// ```
///
/// [`current_root_key_id`]: KeyProvider::current_root_key_id
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The id of the root key that [`wrap`](KeyProvider::wrap) uses.
    fn current_root_key_id(&self) -> &str;

    /// Every root key id this provider holds, the current one first (default:
    /// only the current one). Providers that keep previous root keys list
    /// them, so that a [`ProviderChain`] can refuse two providers that claim
    /// the same id.
    fn root_key_ids(&self) -> Vec<&str> {
        vec![self.current_root_key_id()]
    }

    /// Whether every root key this provider holds belongs to the one key
    /// store it serves (default: no). When it does (a Transit key, one per
    /// store), [`KeyAdmin::retire_root_keys`](crate::KeyAdmin::retire_root_keys)
    /// also retires unused root keys its store's audit log does not name;
    /// otherwise only those it names, since a name may be shared (an
    /// account's KMS aliases, a token's labels, a directory).
    fn root_keys_exclusive(&self) -> bool {
        false
    }

    /// Wraps `key` under the current root key, bound to `ctx`.
    ///
    /// # Errors
    ///
    /// [`Error::Provider`] if the KMS call fails.
    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey>;

    /// Unwraps `wrapped`, which must have been wrapped bound to `ctx`.
    ///
    /// # Errors
    ///
    /// [`Error::RootKeyNotConfigured`] if the
    /// provider does not hold the named root key ("not my key");
    /// [`Error::UnwrapFailed`] if it does but the bytes
    /// do not unwrap (wrong key, altered or moved record);
    /// [`Error::Provider`] if the KMS call fails.
    async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey>;

    /// Creates a root key for a new epoch in the provider's backend and
    /// returns its id. This provider goes on wrapping under its current key:
    /// a provider built afterwards (a restarted process, the runner's next
    /// command) wraps under the new one, and
    /// [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all) moves every key
    /// to it. See [`KeyAdmin::create_root_key`](crate::KeyAdmin::create_root_key).
    ///
    /// # Errors
    ///
    /// The provided implementation refuses ([`Error::Refused`]):
    /// the provider cannot create root keys, so create one in its backend and
    /// configure it as current. Provider errors.
    async fn create_root_key(&self) -> Result<String> {
        Err(crate::Error::refused(format!(
            "the key provider holding root key `{}` cannot create root keys: create one in its \
             backend and configure it as the current root key",
            self.current_root_key_id()
        )))
    }

    /// Destroys root key `id` in the provider's backend, or schedules its
    /// destruction, and returns the time from which it unwraps nothing, ever
    /// (now, or the end of the backend's deletion window). Never the current
    /// root key.
    ///
    /// # Security
    ///
    /// Every key wrapped under `id`, in the database and in every backup of
    /// it, becomes useless: call it through
    /// [`KeyAdmin::retire_root_keys`](crate::KeyAdmin::retire_root_keys), which
    /// first proves that no live key is wrapped under it and waits out the
    /// backup retention.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for the current root key, a
    /// root key this provider does not hold, or (the provided implementation)
    /// a provider that cannot destroy root keys; provider errors.
    async fn destroy_root_key(&self, id: &str) -> Result<crate::Timestamp> {
        Err(crate::Error::refused(format!(
            "the key provider holding root key `{id}` cannot destroy root keys: destroy it in \
             its backend"
        )))
    }
}

/// An epoch number as it appears in a root key's name (`<name>-e<N>`): its
/// canonical decimal form, from 1.
pub(crate) fn epoch_number(n: &str) -> Option<u32> {
    n.parse::<u32>()
        .ok()
        .filter(|v| *v > 0 && v.to_string() == n)
}

/// Checks a root key id against FORMAT.md §"Wrapped keys": 1 to 255 bytes of
/// ASCII letters, digits and `-_.:/`.
pub(crate) fn check_root_key_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "root key id {id:?} is invalid: use 1 to 255 ASCII letters, digits and `-_.:/`"
        )))
    }
}

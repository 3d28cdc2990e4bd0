//! Several providers as one: how the root key moves from one provider to another.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{KeyProvider, WrapContext, WrappedKey};
use crate::error::{Error, Result};
use crate::secret::TenantKey;

/// A chain of root key providers: the first wraps, every one unwraps the keys
/// it holds.
///
/// This is how the root key moves between providers — from a local key file
/// to AWS KMS, from one KMS to an HSM, or back — without downtime:
///
/// 1. configure every process with a chain whose first provider holds the new
///    root key and whose later providers hold the old ones;
/// 2. run [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all) with the new
///    root key id until its report is complete;
/// 3. drop the old providers from the chain.
///
/// ```
/// # fn main() -> Result<(), fieldseal::Error> {
/// use fieldseal::{LocalKeyProvider, RootKey, provider::ProviderChain};
///
/// # let kms = LocalKeyProvider::new("new-root", RootKey::generate()?)?;
/// let old = LocalKeyProvider::new("root-2025", RootKey::generate()?)?;
/// // `kms` would be an `AwsKmsProvider` or a `Pkcs11Provider`.
/// let chain = ProviderChain::new(kms).with_previous(old)?;
/// # let _ = chain;
/// # Ok(()) }
/// ```
///
/// Unwrapping asks each provider in order and moves on only when one answers
/// [`Error::RootKeyNotConfigured`] ("not my key"); any other error — an
/// unwrap that fails, a KMS that is down — is returned as it is, so a failure
/// is never hidden by a later provider.
pub struct ProviderChain {
    providers: Vec<Arc<dyn KeyProvider>>,
}

impl ProviderChain {
    /// A chain whose current provider (the one that wraps) is `current`.
    pub fn new(current: impl KeyProvider + 'static) -> Self {
        Self {
            providers: vec![Arc::new(current)],
        }
    }

    /// Adds a provider whose root keys still unwrap but never wrap.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if one of its root key ids
    /// ([`KeyProvider::root_key_ids`]) is already held by a provider in the
    /// chain: every root key needs its own id, or a wrapped key could be sent
    /// to the wrong provider.
    pub fn with_previous(self, previous: impl KeyProvider + 'static) -> Result<Self> {
        self.with_previous_shared(Arc::new(previous))
    }

    /// Adds a provider shared with other owners (for example one that also
    /// serves another [`Sealer`](crate::Sealer)).
    ///
    /// # Errors
    ///
    /// As [`ProviderChain::with_previous`].
    pub fn with_previous_shared(mut self, previous: Arc<dyn KeyProvider>) -> Result<Self> {
        for id in previous.root_key_ids() {
            if self.root_key_ids().contains(&id) {
                return Err(Error::config(format!(
                    "root key id `{id}` is held by two providers in the chain; every root key \
                     needs its own id, or a wrapped key could be sent to the wrong provider"
                )));
            }
        }
        self.providers.push(previous);
        Ok(self)
    }
}

impl fmt::Debug for ProviderChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.providers.iter()).finish()
    }
}

#[async_trait]
impl KeyProvider for ProviderChain {
    fn current_root_key_id(&self) -> &str {
        self.providers
            .first()
            .map_or("", |provider| provider.current_root_key_id())
    }

    fn root_key_ids(&self) -> Vec<&str> {
        self.providers
            .iter()
            .flat_map(|provider| provider.root_key_ids())
            .collect()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey> {
        match self.providers.first() {
            Some(provider) => provider.wrap(key, ctx).await,
            None => Err(Error::config("the provider chain is empty")),
        }
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey> {
        for provider in &self.providers {
            match provider.unwrap(wrapped, ctx).await {
                Err(Error::RootKeyNotConfigured { .. }) => continue,
                other => return other,
            }
        }
        Err(Error::RootKeyNotConfigured {
            id: wrapped.root_key_id().to_string(),
        })
    }

    /// Created by the current provider.
    async fn create_root_key(&self) -> Result<String> {
        match self.providers.first() {
            Some(provider) => provider.create_root_key().await,
            None => Err(Error::config("the provider chain is empty")),
        }
    }

    /// Destroyed by the provider that holds it.
    async fn destroy_root_key(&self, id: &str) -> Result<crate::Timestamp> {
        if id == self.current_root_key_id() {
            return Err(Error::refused(format!(
                "root key `{id}` is the current root key: it is never destroyed"
            )));
        }
        match self
            .providers
            .iter()
            .find(|provider| provider.root_key_ids().contains(&id))
        {
            Some(provider) => provider.destroy_root_key(id).await,
            None => Err(Error::refused(format!(
                "no provider in the chain holds root key `{id}`"
            ))),
        }
    }
}

/// A shared provider is a provider: the same KMS client can serve a
/// [`Sealer`](crate::Sealer), a [`ProviderChain`] and a test's call counter.
#[async_trait]
impl<P: KeyProvider + ?Sized> KeyProvider for Arc<P> {
    fn current_root_key_id(&self) -> &str {
        (**self).current_root_key_id()
    }

    fn root_key_ids(&self) -> Vec<&str> {
        (**self).root_key_ids()
    }

    fn root_keys_exclusive(&self) -> bool {
        (**self).root_keys_exclusive()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey> {
        (**self).wrap(key, ctx).await
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey> {
        (**self).unwrap(wrapped, ctx).await
    }

    async fn create_root_key(&self) -> Result<String> {
        (**self).create_root_key().await
    }

    async fn destroy_root_key(&self, id: &str) -> Result<crate::Timestamp> {
        (**self).destroy_root_key(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalKeyProvider, RootKey};

    fn local(id: &str, byte: u8) -> LocalKeyProvider {
        LocalKeyProvider::new(id, RootKey::from_bytes(&mut [byte; 32])).unwrap()
    }

    #[tokio::test]
    async fn first_wraps_all_unwrap_and_failures_are_not_hidden() {
        let old = local("old", 1);
        let key = TenantKey::from_slice(&[9u8; 32]).unwrap();
        let ctx = WrapContext::tenant_key("acme", 1);
        let under_old = old.wrap(&key, &ctx).await.unwrap();

        let chain = ProviderChain::new(local("new", 2))
            .with_previous(local("old", 1))
            .unwrap();
        assert_eq!(chain.current_root_key_id(), "new");
        let under_new = chain.wrap(&key, &ctx).await.unwrap();
        assert_eq!(under_new.root_key_id(), "new");
        for wrapped in [&under_old, &under_new] {
            let back = chain.unwrap(wrapped, &ctx).await.unwrap();
            assert_eq!(back.expose_secret(), key.expose_secret());
        }
        // Moved to another tenant: the holder's refusal is returned, not "not configured".
        let other = WrapContext::tenant_key("globex", 1);
        assert!(matches!(
            chain.unwrap(&under_old, &other).await,
            Err(Error::UnwrapFailed { .. })
        ));
        let foreign = WrappedKey::new("gone", under_old.as_bytes().to_vec());
        assert!(matches!(
            chain.unwrap(&foreign, &ctx).await,
            Err(Error::RootKeyNotConfigured { id }) if id == "gone"
        ));
        assert!(
            ProviderChain::new(local("a", 1))
                .with_previous(local("a", 2))
                .is_err()
        );
        // A previous key of one provider is the current key of another.
        let two = LocalKeyProvider::new("b", RootKey::from_bytes(&mut [3; 32]))
            .unwrap()
            .with_previous("a", RootKey::from_bytes(&mut [4; 32]))
            .unwrap();
        let err = ProviderChain::new(two)
            .with_previous(local("a", 1))
            .unwrap_err();
        assert!(
            err.to_string().contains("`a` is held by two providers"),
            "{err}"
        );
        let chain = ProviderChain::new(local("x", 1))
            .with_previous(local("y", 2))
            .unwrap();
        assert_eq!(chain.root_key_ids(), ["x", "y"]);
    }
}

//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fieldseal::{
    Context, Error, KeyProvider, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer, TenantKey,
    WrapContext, WrappedKey, async_trait,
};

/// A root key with a recognisable pattern, so tests can search output for it.
pub const MARKER_ROOT_KEY: [u8; 32] = *b"MARKER-ROOT-KEY-0123456789abcdef";

pub fn local_provider() -> LocalKeyProvider {
    LocalKeyProvider::new(
        "test-root",
        RootKey::from_bytes(&mut MARKER_ROOT_KEY.clone()),
    )
    .unwrap()
}

pub fn sealer() -> Sealer {
    Sealer::builder(local_provider(), MemoryKeyStore::new()).build()
}

pub fn ctx(tenant: &str, row: i64) -> Context {
    Context::builder(tenant, "integrations", "refresh_token")
        .row(row)
        .build()
        .unwrap()
}

/// Counts calls into a local provider, optionally slowing unwraps down so that
/// concurrent callers overlap.
#[derive(Debug, Clone)]
pub struct CountingProvider {
    inner: Arc<LocalKeyProvider>,
    pub wraps: Arc<AtomicUsize>,
    pub unwraps: Arc<AtomicUsize>,
    delay: Duration,
}

impl CountingProvider {
    pub fn new(delay: Duration) -> Self {
        Self {
            inner: Arc::new(local_provider()),
            wraps: Arc::default(),
            unwraps: Arc::default(),
            delay,
        }
    }

    pub fn wraps(&self) -> usize {
        self.wraps.load(Ordering::SeqCst)
    }

    pub fn unwraps(&self) -> usize {
        self.unwraps.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyProvider for CountingProvider {
    fn current_root_key_id(&self) -> &str {
        self.inner.current_root_key_id()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.wrap(key, ctx).await
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &WrapContext<'_>,
    ) -> Result<TenantKey, Error> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.unwrap(wrapped, ctx).await
    }
}

/// A provider that "wraps" by storing the key as is. For loading known tenant
/// keys (test vectors) into a store; never a real provider.
#[derive(Debug)]
pub struct PlainProvider;

#[async_trait]
impl KeyProvider for PlainProvider {
    fn current_root_key_id(&self) -> &str {
        "plain"
    }

    async fn wrap(&self, key: &TenantKey, _ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        Ok(WrappedKey::new("plain", key.expose_secret().to_vec()))
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        _ctx: &WrapContext<'_>,
    ) -> Result<TenantKey, Error> {
        TenantKey::from_slice(wrapped.as_bytes())
    }
}

/// A short name for an error variant, as used in `tests/vectors/v1.json`.
pub fn kind(error: &Error) -> &'static str {
    match error {
        Error::OpenFailed => "open_failed",
        Error::Malformed { .. } => "malformed",
        Error::UnsupportedVersion { .. } => "unsupported_version",
        Error::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
        Error::UnknownKeyVersion { .. } => "unknown_key_version",
        Error::UnknownTenant { .. } => "unknown_tenant",
        Error::KeyDestroyed { .. } => "key_destroyed",
        Error::KeyDisabled { .. } => "key_disabled",
        Error::TenantShredded { .. } => "tenant_shredded",
        Error::BelowMinimumVersion { .. } => "below_minimum_version",
        _ => "other",
    }
}

//! The key hierarchy at run time: tenant keys loaded from the key store,
//! unwrapped by the root key provider (or a tenant's own), cached, and
//! written back as new versions. [`Sealer`](crate::Sealer) and
//! [`KeyAdmin`](crate::KeyAdmin) both stand on one [`Keys`].
//!
//! - `mod.rs`: [`Keys`], wrapping and unwrapping (routed to a tenant's own
//!   root key), new key versions, the audit-chain key;
//! - `loader.rs`: loading a tenant's keyring from the store;
//! - `cache.rs`: the keyring cache;
//! - `keyring.rs`: one tenant's unwrapped keys, which seal and open.

mod cache;
mod keyring;
mod loader;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::audit::{AuditAppend, AuditEvent};
use crate::crypto::{HmacKey, TenantKeyDeriver};
use crate::error::{Error, Result};
use crate::format::Algorithm;
use crate::provider::{KeyProvider, WrapContext, WrappedKey};
use crate::secret::TenantKey;
use crate::store::{InsertOutcome, KeyStore, NewKeyVersion, StoreIdentity};
use crate::telemetry::{self, CacheEvent};
use crate::time::Timestamp;

pub(crate) use cache::{KeyCache, Lookup};
pub(crate) use keyring::{Keyring, Revocation, VersionEntry, VersionStatus};

/// Longest time a tenant's own root key that refused is not asked again.
const OWN_ROOT_RETRY: Duration = Duration::from_secs(5);

/// A refusal of a tenant's own root key: when, its id, what it refused and
/// the provider's message.
type OwnRootRefusal = (Instant, String, &'static str, String);

/// Shortest time between two reloads of a tenant caused by a value under a
/// key version newer than the cached primary.
pub(crate) const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// What a [`Sealer`](crate::Sealer) and its [`KeyAdmin`](crate::KeyAdmin)s share:
/// the providers, the store, the cache and the settings that govern loading.
pub(crate) struct Keys {
    pub(crate) provider: Box<dyn KeyProvider>,
    /// Tenants bound to their own root keys, and the providers holding them.
    pub(crate) tenant_roots: BTreeMap<String, Box<dyn KeyProvider>>,
    pub(crate) store: Box<dyn KeyStore>,
    pub(crate) cache: KeyCache,
    pub(crate) algorithm: Algorithm,
    pub(crate) create_tenants: bool,
    pub(crate) revalidate_after: Option<Duration>,
    pub(crate) min_audit_retention: Duration,
    /// Where shreds are recorded outside the database, if anywhere.
    pub(crate) shred_ledger: Option<crate::ledger::ShredLedger>,
    /// Whether metrics carry a `tenant` label (feature `metrics`).
    pub(crate) label_tenant: bool,
    /// The audit-chain key, unwrapped on the first key change.
    pub(crate) audit_key: tokio::sync::OnceCell<HmacKey>,
    /// The key store's identity, read on the first wrap or unwrap.
    pub(crate) store_identity: tokio::sync::OnceCell<Option<StoreIdentity>>,
    /// Set once the store was seen refusing unbound keys after the cached
    /// identity was read.
    pub(crate) unbound_refused: std::sync::atomic::AtomicBool,
    /// Bound tenants whose own root key refused a reload just now: asked
    /// again only after [`OWN_ROOT_RETRY`] (or the cache's time to live, if
    /// shorter), so that a busy tenant whose key is revoked does not turn
    /// every request into a provider call.
    pub(crate) own_root_refusals:
        std::sync::Mutex<std::collections::HashMap<String, OwnRootRefusal>>,
    pub(crate) clock: crate::time::Clock,
}

impl Keys {
    /// The time, from the sealer's clock.
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn min_audit_retention(&self) -> Duration {
        self.min_audit_retention
    }

    /// The key store's generations of `tenants` now, in one call.
    #[cfg(feature = "_sql")]
    pub(crate) async fn store_generations(&self, tenants: &[&str]) -> Result<Vec<Option<u64>>> {
        self.store.tenant_generations(tenants).await
    }

    /// The tenant's keys: cached, or loaded once for all concurrent callers.
    pub(crate) async fn keyring(&self, tenant: &str, create: bool) -> Result<Arc<Keyring>> {
        self.keyring_with(tenant, create, None, false).await
    }

    /// As [`Keys::keyring`]; `stale` is a snapshot just dropped from the cache,
    /// whose unchanged keys the reload may reuse.
    pub(crate) async fn keyring_with(
        &self,
        tenant: &str,
        create: bool,
        mut stale: Option<Arc<Keyring>>,
        force_check: bool,
    ) -> Result<Arc<Keyring>> {
        // At most one generation check, and one reload after it.
        let mut checked = false;
        loop {
            let keyring = match self.cache.lookup(tenant) {
                Lookup::Hit(keyring) => {
                    tracing::trace!(tenant, "tenant key cache hit");
                    telemetry::cache(CacheEvent::Hit);
                    keyring
                }
                Lookup::Miss { cell, previous } => {
                    telemetry::cache(if previous.is_some() {
                        CacheEvent::Expired
                    } else {
                        CacheEvent::Miss
                    });
                    let previous = previous.or(stale.take());
                    if let Some(refused) = self.recent_own_root_refusal(tenant) {
                        return Err(refused);
                    }
                    let loaded = self
                        .cache
                        .load(tenant, cell, || async move {
                            tracing::debug!(tenant, "tenant key cache miss: loading keys");
                            let loaded = self
                                .load_keyring(tenant, create, previous.as_deref(), None)
                                .await?;
                            Ok(Arc::new(loaded))
                        })
                        .await;
                    if let Err(Error::TenantRootKeyUnavailable {
                        root_key_id,
                        action,
                        source,
                        ..
                    }) = &loaded
                    {
                        let message = match &**source {
                            Error::Provider { message, .. } => message.clone(),
                            other => other.to_string(),
                        };
                        lock_refusals(&self.own_root_refusals).insert(
                            tenant.to_string(),
                            (Instant::now(), root_key_id.clone(), action, message),
                        );
                    }
                    return loaded;
                }
            };
            if checked || !(force_check || self.claim_check(&keyring)) {
                return Ok(keyring);
            }
            checked = true;
            match self.store.tenant_generation(tenant).await {
                Ok(Some(generation)) if generation == keyring.generation => {
                    telemetry::cache(CacheEvent::Revalidated("unchanged"));
                    return Ok(keyring);
                }
                Ok(_) => {
                    telemetry::cache(CacheEvent::Revalidated("changed"));
                    tracing::debug!(tenant, "tenant keys changed in the store: reloading");
                    stale = self.cache.invalidate(tenant).or(Some(keyring));
                }
                Err(err) if force_check => {
                    telemetry::cache(CacheEvent::Revalidated("failed"));
                    return Err(err);
                }
                Err(err) => {
                    // The time to live still bounds how long these keys are used.
                    telemetry::cache(CacheEvent::Revalidated("failed"));
                    tracing::warn!(tenant, error = %err, "tenant generation check failed");
                    return Ok(keyring);
                }
            }
        }
    }

    /// The refusal of `tenant`'s own root key, if it refused a reload less
    /// than [`OWN_ROOT_RETRY`] (or the cache's time to live) ago.
    fn recent_own_root_refusal(&self, tenant: &str) -> Option<Error> {
        if !self.tenant_roots.contains_key(tenant) {
            return None;
        }
        let mut refusals = lock_refusals(&self.own_root_refusals);
        let retry = OWN_ROOT_RETRY.min(self.cache.ttl());
        match refusals.get(tenant) {
            Some((at, root_key_id, action, message)) if at.elapsed() < retry => {
                Some(Error::TenantRootKeyUnavailable {
                    tenant: tenant.to_string(),
                    root_key_id: root_key_id.clone(),
                    action,
                    source: Box::new(Error::Provider {
                        message: message.clone(),
                        source: None,
                    }),
                })
            }
            Some(_) => {
                refusals.remove(tenant);
                None
            }
            None => None,
        }
    }

    /// Whether this caller should check the store's generation for `keyring`
    /// now; at most one caller per interval wins.
    fn claim_check(&self, keyring: &Keyring) -> bool {
        let Some(interval) = self.revalidate_after else {
            return false;
        };
        let interval = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let now = u64::try_from(keyring.loaded_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = keyring.last_check_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= interval
            && keyring
                .last_check_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The audit-chain key, loaded (or created) once per sealer.
    pub(crate) async fn audit_key(&self) -> Result<&HmacKey> {
        self.audit_key
            .get_or_try_init(|| async {
                let store = &self.store;
                let ctx = WrapContext::audit_key(1);
                if let Some(wrapped) = store.load_audit_key().await? {
                    let key = self.unwrap_key(&wrapped, ctx).await?;
                    return Ok(HmacKey::new(key.expose_secret()));
                }
                let key = TenantKey::generate()?;
                let wrapped = self.wrap_key(&key, ctx).await?;
                if store.insert_audit_key(wrapped).await? {
                    tracing::info!("created the audit-chain key");
                    let key = HmacKey::new(key.expose_secret());
                    // A store that refuses unbound keys from its creation
                    // says so in its log's first entry, so that accepting
                    // them later by SQL is a mismatch `verify_audit` reports.
                    if let Some(identity) = self.store_identity().await?
                        && !identity.accepts_unbound
                    {
                        let audit = AuditAppend::new(
                            &key,
                            AuditEvent::UnboundWrapsRefused,
                            "",
                            0,
                            None,
                            String::new(),
                            self.now(),
                        )?;
                        store.refuse_unbound_wraps(&audit).await?;
                    }
                    return Ok(key);
                }
                // Another process created it first: use theirs.
                let wrapped = store.load_audit_key().await?.ok_or_else(|| Error::Store {
                    message: "the key store reported an audit key but does not return it".into(),
                    source: None,
                })?;
                let key = self.unwrap_key(&wrapped, ctx).await?;
                Ok(HmacKey::new(key.expose_secret()))
            })
            .await
    }

    /// Whether `keyring` is a snapshot this sealer's cache would have
    /// reloaded by now because its tenant's own root key must be asked
    /// again (bring your own key): older than the cache's time to live.
    #[cfg(feature = "_sql")]
    pub(crate) fn own_root_snapshot_expired(&self, keyring: &Keyring) -> bool {
        self.tenant_roots.contains_key(&*keyring.tenant)
            && keyring.loaded_at.elapsed() >= self.cache.ttl()
    }

    /// The cached keys' time to live.
    #[cfg(feature = "_sql")]
    pub(crate) fn cache_ttl(&self) -> Duration {
        self.cache.ttl()
    }

    /// The key store's identity, read once per sealer.
    pub(crate) async fn store_identity(&self) -> Result<Option<&StoreIdentity>> {
        let identity = self
            .store_identity
            .get_or_try_init(|| self.store.store_identity())
            .await?;
        Ok(identity.as_ref())
    }

    /// Whether the key store still accepts keys wrapped without its id. Read
    /// again from the store while the cached identity says it does (a store
    /// stops accepting them, never starts again): a process started before
    /// `rewrap_all` refused them refuses them too, from its next load.
    async fn accepts_unbound(&self, cached: &StoreIdentity) -> Result<bool> {
        if !cached.accepts_unbound || self.unbound_refused.load(Ordering::Acquire) {
            return Ok(false);
        }
        let accepts = self
            .store
            .store_identity()
            .await?
            .is_some_and(|now| now.accepts_unbound);
        if !accepts {
            self.unbound_refused.store(true, Ordering::Release);
        }
        Ok(accepts)
    }

    /// The provider of the tenant's own root key, if `ctx` is a key of a
    /// tenant bound to one.
    pub(crate) fn own_root(&self, ctx: &WrapContext<'_>) -> Option<&dyn KeyProvider> {
        if ctx.is_audit_key() {
            return None;
        }
        self.tenant_roots
            .get(ctx.tenant())
            .map(|provider| &**provider)
    }

    /// Wraps `key` for `ctx` under the current root key (the tenant's own,
    /// if it is bound to one), bound to the key store when it has an
    /// identity (FORMAT.md §"Wrapped keys").
    pub(crate) async fn wrap_key(
        &self,
        key: &TenantKey,
        ctx: WrapContext<'_>,
    ) -> Result<WrappedKey> {
        let identity = self.store_identity().await?;
        let bound = match identity {
            Some(identity) => ctx.in_store(&identity.id),
            None => ctx,
        };
        let wrapped = match self.own_root(&ctx) {
            Some(own) => own.wrap(key, &bound).await.map_err(|e| {
                own_root_unavailable(ctx.tenant(), own.current_root_key_id(), "wrapped", e)
            })?,
            None => self.provider.wrap(key, &bound).await?,
        };
        Ok(if identity.is_some() {
            wrapped.bound_to_store()
        } else {
            wrapped
        })
    }

    /// Unwraps a key of a tenant bound to its own root key through that
    /// key's provider when it names one of its root keys; otherwise (a key
    /// wrapped before the binding) through the shared provider, and through
    /// the tenant's provider if the shared one does not hold it either (a
    /// root key the tenant's provider does not list). Any other tenant's
    /// key, and the audit-chain key, through the shared provider only.
    async fn routed_unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &WrapContext<'_>,
    ) -> Result<TenantKey> {
        let Some(own) = self.own_root(ctx) else {
            return self.provider.unwrap(wrapped, ctx).await;
        };
        if !own.root_key_ids().contains(&wrapped.root_key_id()) {
            match self.provider.unwrap(wrapped, ctx).await {
                Err(Error::RootKeyNotConfigured { .. }) => {}
                Ok(key) => {
                    tracing::warn!(
                        tenant = ctx.tenant(),
                        version = ctx.version(),
                        root_key = wrapped.root_key_id(),
                        "a key of a tenant bound to its own root key is still under a shared \
                         root key: run KeyAdmin::bind_tenant_root"
                    );
                    return Ok(key);
                }
                Err(e) => return Err(e),
            }
        }
        own.unwrap(wrapped, ctx)
            .await
            .map_err(|e| own_root_unavailable(ctx.tenant(), wrapped.root_key_id(), "unwrapped", e))
    }

    /// Unwraps `wrapped` for `ctx`: with the key store's id in the context if
    /// it is marked bound; without, only if the store has no identity or
    /// still accepts keys wrapped before it had one.
    pub(crate) async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        ctx: WrapContext<'_>,
    ) -> Result<TenantKey> {
        match (self.store_identity().await?, wrapped.is_store_bound()) {
            (Some(identity), true) => {
                self.routed_unwrap(wrapped, &ctx.in_store(&identity.id))
                    .await
            }
            (Some(identity), false) if !self.accepts_unbound(identity).await? => {
                Err(Error::UnwrapFailed {
                    subject: format!(
                        "{} (wrapped without this key store's id, which the store no longer \
                     accepts)",
                        ctx.describe()
                    ),
                    root_key_id: wrapped.root_key_id().to_string(),
                })
            }
            (None, true) => Err(Error::UnwrapFailed {
                subject: format!(
                    "{} (marked as wrapped with a key store id, but the store has none)",
                    ctx.describe()
                ),
                root_key_id: wrapped.root_key_id().to_string(),
            }),
            _ => self.routed_unwrap(wrapped, &ctx).await,
        }
    }

    /// Generates, wraps and inserts key `version` for `tenant` (recording
    /// `event`), and returns the wrapped key with its deriver. If another
    /// process created that version first, the store keeps the other key;
    /// `reusable` matches on the wrapped bytes, so the losing key is never used.
    pub(crate) async fn create_version(
        &self,
        tenant: &str,
        version: u32,
        event: AuditEvent,
        actor: Option<&str>,
    ) -> Result<(WrappedKey, TenantKeyDeriver)> {
        if event == AuditEvent::TenantCreated {
            crate::context::check_new_tenant(tenant)?;
        }
        let (new, deriver) = self.new_key_version(tenant, version).await?;
        let wrapped = new.wrapped.clone();
        self.record_own_root(tenant, version, &wrapped, actor)
            .await?;
        let audit_key = self.audit_key().await?;
        let audit = AuditAppend::new(
            audit_key,
            event,
            tenant,
            version,
            actor,
            String::new(),
            self.now(),
        )?;
        match self.store.insert_key_version(tenant, new, &audit).await? {
            InsertOutcome::Inserted => {
                tracing::info!(tenant, version, event = %event, "created tenant key");
            }
            InsertOutcome::AlreadyExists => {
                tracing::debug!(
                    tenant,
                    version,
                    "tenant key version was created concurrently"
                );
            }
            InsertOutcome::Shredded => {
                let shredded_at = self
                    .store
                    .load_tenant(tenant)
                    .await?
                    .and_then(|r| r.shredded_at)
                    .unwrap_or_else(Timestamp::now);
                return Err(Error::TenantShredded {
                    tenant: tenant.to_string(),
                    shredded_at,
                });
            }
        }
        Ok((wrapped, deriver))
    }

    /// Records, for a tenant bound to its own root key, that `wrapped` (its
    /// key `version`, not stored yet) is under it: before the key is stored,
    /// so that the audit log names every root key that ever held the
    /// tenant's keys ([`KeyAdmin::erasure_report`](crate::KeyAdmin::erasure_report)).
    pub(crate) async fn record_own_root(
        &self,
        tenant: &str,
        version: u32,
        wrapped: &WrappedKey,
        actor: Option<&str>,
    ) -> Result<()> {
        if !self.tenant_roots.contains_key(tenant) {
            return Ok(());
        }
        let audit = AuditAppend::new(
            self.audit_key().await?,
            AuditEvent::TenantRootBound,
            tenant,
            version,
            actor,
            wrapped.root_key_id().to_string(),
            self.now(),
        )?;
        self.store.record_audit(&audit).await
    }

    /// A fresh random key for `tenant` version `version`, wrapped under the
    /// current root key, and its deriver.
    pub(crate) async fn new_key_version(
        &self,
        tenant: &str,
        version: u32,
    ) -> Result<(NewKeyVersion, TenantKeyDeriver)> {
        let key = TenantKey::generate()?;
        let wrapped = self
            .wrap_key(&key, WrapContext::tenant_key(tenant, version))
            .await?;
        Ok((
            NewKeyVersion {
                version,
                wrapped,
                created_at: self.now(),
            },
            TenantKeyDeriver::new(key.expose_secret()),
        ))
    }
}

/// The refusals map, even if a thread panicked holding it (it holds no
/// invariant a panic could break).
fn lock_refusals(
    m: &std::sync::Mutex<std::collections::HashMap<String, OwnRootRefusal>>,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, OwnRootRefusal>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A provider failure of a tenant's own root key, as the error that names
/// the tenant and the key; other errors (a wrong key, an altered record) as
/// they are.
fn own_root_unavailable(tenant: &str, root_key_id: &str, action: &'static str, e: Error) -> Error {
    match e {
        Error::Provider { .. } => Error::TenantRootKeyUnavailable {
            tenant: tenant.to_string(),
            root_key_id: root_key_id.to_string(),
            action,
            source: Box::new(e),
        },
        other => other,
    }
}

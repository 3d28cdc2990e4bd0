//! The handle applications hold: one `Sealer` for every tenant.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::KeyAdmin;
use crate::audit::AuditEvent;
use crate::context::{Context, ContextTemplate};
use crate::error::{Error, Result};
use crate::format::{Algorithm, SealedValue};
use crate::keys::{KeyCache, Keyring, Keys};
use crate::provider::KeyProvider;
use crate::secret::{Migrating, Opened};
use crate::store::KeyStore;
use crate::telemetry::{self, ObservedProvider, ObservedStore};

/// Default number of tenants whose keys are cached.
const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Default time a cached tenant key stays valid.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Default youngest age of audit entries that may be pruned.
const DEFAULT_MIN_AUDIT_RETENTION: Duration = Duration::from_secs(86_400);

/// Seals and opens field values for every tenant.
///
/// Build one per process with [`Sealer::builder`], clone it freely (clones share
/// the key cache), and pass the tenant in each call's [`Context`]. The first
/// use of a tenant loads (or creates) its keys through the key store and the
/// key provider; after that its keys are cached and sealing and opening do no
/// I/O. For the tightest loops, take a [`TenantSealer`] with
/// [`Sealer::tenant`]: its `seal` and `open` are plain synchronous calls.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fieldseal::Error> {
/// use fieldseal::{Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};
/// use secrecy::ExposeSecret;
///
/// let provider = LocalKeyProvider::new("root-1", RootKey::generate()?)?;
/// let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
///
/// let ctx = Context::builder("acme", "integrations", "api_key").row(7).build()?;
/// let sealed = sealer.seal(&ctx, b"sk_live_123").await?;
/// let opened = sealer.open(&ctx, &sealed).await?;
/// assert_eq!(opened.plaintext().expose_secret(), b"sk_live_123");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sealer {
    pub(crate) keys: Arc<Keys>,
}

/// Configures a [`Sealer`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct SealerBuilder {
    provider: Box<dyn KeyProvider>,
    tenant_roots: BTreeMap<String, Box<dyn KeyProvider>>,
    store: Box<dyn KeyStore>,
    algorithm: Algorithm,
    cache_capacity: usize,
    cache_ttl: Duration,
    create_tenants: bool,
    revalidate_after: Option<Duration>,
    min_audit_retention: Duration,
    shred_ledger: Option<crate::ledger::ShredLedger>,
    label_tenant: bool,
    clock: crate::time::Clock,
}

impl SealerBuilder {
    /// Adds a `tenant` label to fieldseal's metrics (default: off).
    ///
    /// Off, every metric has a bounded set of labels (operation names and
    /// error kinds), whatever the number of tenants. On, each tenant gets its
    /// own series, and counting a seal or an open allocates the label: turn it
    /// on only for a bounded number of tenants, and only where tenant ids may
    /// appear in your metrics system.
    #[cfg(feature = "metrics")]
    pub fn metrics_tenant_label(mut self, label: bool) -> Self {
        self.label_tenant = label;
        self
    }

    /// Reads the time from `clock` instead of the system clock (feature
    /// `testing`; see [`ManualClock`](crate::testing::ManualClock)).
    ///
    /// # Security
    ///
    /// For tests only: never in a deployment.
    #[cfg(feature = "testing")]
    pub fn clock(mut self, clock: crate::time::ManualClock) -> Self {
        self.clock = crate::time::Clock::Manual(clock);
        self
    }

    /// The AEAD for new values (default AES-256-GCM). Values sealed with either
    /// algorithm always open.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// How many tenants' keys to keep cached (default 10,000; at least 1). When
    /// full, the longest-cached tenant is evicted.
    pub fn cache_capacity(mut self, tenants: usize) -> Self {
        self.cache_capacity = tenants;
        self
    }

    /// How long a tenant's cached keys are used before they are reloaded from
    /// the key store (default 5 minutes).
    ///
    /// # Security
    ///
    /// This is also how long *another* process may keep sealing with a rotated
    /// key or opening a shredded tenant's values after the change: keep it as
    /// short as your key provider's request budget allows.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Checks the key store's cheap per-tenant generation counter when a cached
    /// tenant has not been checked for `interval`, and reloads its keys if they
    /// changed (default: off, so only the cache time to live applies).
    ///
    /// This bounds how long this process keeps using keys that another process
    /// rotated, destroyed or shredded to about `interval`, for the price of one
    /// indexed read per tenant per interval. [`TenantSealer`] handles are
    /// snapshots and are not re-checked.
    pub fn revalidate_after(mut self, interval: Duration) -> Self {
        self.revalidate_after = Some(interval);
        self
    }

    /// The youngest audit entries [`KeyAdmin::prune_audit`] may delete (default
    /// one day), so that a unit mistake cannot erase recent history. Raise it to
    /// your retention policy's floor.
    pub fn min_audit_retention(mut self, minimum: Duration) -> Self {
        self.min_audit_retention = minimum;
        self
    }

    /// Records every shred in `ledger`, a file outside the database (default:
    /// none), so that a database restored from a backup can be shredded
    /// again with [`KeyAdmin::replay_shred_ledger`].
    ///
    /// # Security
    ///
    /// Without a ledger, restoring a backup taken before a shred brings the
    /// tenant back for as long as the root key that wrapped its keys exists.
    /// See [`ShredLedger`](crate::audit::ShredLedger) for where to keep it.
    pub fn shred_ledger(mut self, ledger: crate::ledger::ShredLedger) -> Self {
        self.shred_ledger = Some(ledger);
        self
    }

    /// Binds `tenant` to its own root key ("bring your own key"): `provider`
    /// holds it, for example an [`AwsKmsProvider`](crate::provider::AwsKmsProvider) on
    /// the tenant's KMS key, a Transit key or an HSM key of its own.
    ///
    /// From then on, this sealer wraps the tenant's new key versions under
    /// `provider`'s current root key, and unwraps its keys through `provider`
    /// first and the shared provider second (keys made before the binding
    /// stay under the shared root key until
    /// [`KeyAdmin::bind_tenant_root`](crate::KeyAdmin::bind_tenant_root)
    /// re-wraps them). No other tenant's key and never the audit-chain key
    /// goes to `provider`, and the shared provider never wraps this tenant's
    /// keys. One sealer serves any mix of bound and unbound tenants; a cached
    /// tenant costs no provider call, bound or not.
    ///
    /// # Security
    ///
    /// The key's owner controls the tenant's data: disabling the key or
    /// revoking fieldseal's access stops the tenant's values from opening
    /// (with [`Error::TenantRootKeyUnavailable`], in every process once its
    /// cached keys expire: see [`cache_ttl`](SealerBuilder::cache_ttl)), and
    /// restoring access restores them (a refusal is remembered for the time
    /// to live or 5 seconds, whichever is shorter, so that a busy tenant
    /// whose key is revoked is not a provider call per request); destroying the key erases the tenant,
    /// in every backup of the database too. Configure every process that
    /// serves the tenant alike, the runner included: a process without the
    /// binding cannot unwrap the tenant's keys (it never wraps them under the
    /// shared root key instead: [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all)
    /// leaves them alone), but it would create a *new* tenant of that id under
    /// the shared root key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] for a tenant id that breaks the tenant id
    /// rules; [`Error::Config`] if the tenant is already bound, or if one of
    /// `provider`'s root key ids is held by the shared provider or by
    /// another tenant's: each tenant's root key must be its own.
    pub fn tenant_root_key(
        mut self,
        tenant: &str,
        provider: impl KeyProvider + 'static,
    ) -> Result<Self> {
        check_tenant_id(tenant)?;
        if self.tenant_roots.contains_key(tenant) {
            return Err(Error::config(format!(
                "tenant `{tenant}` is bound to a root key of its own twice: bind it once"
            )));
        }
        for id in provider.root_key_ids() {
            crate::provider::check_root_key_id(id)?;
            if self.provider.root_key_ids().contains(&id) {
                return Err(Error::config(format!(
                    "tenant `{tenant}`'s own root key `{id}` is also held by the shared key \
                     provider: a tenant's root key must be its own"
                )));
            }
            if let Some((other, _)) = self
                .tenant_roots
                .iter()
                .find(|(_, p)| p.root_key_ids().contains(&id))
            {
                return Err(Error::config(format!(
                    "root key `{id}` is bound to tenants `{other}` and `{tenant}`: each \
                     tenant's root key must be its own"
                )));
            }
        }
        self.tenant_roots
            .insert(tenant.to_string(), Box::new(provider));
        Ok(self)
    }

    /// Whether sealing for a tenant with no keys creates its first key (default
    /// `true`). When `false`, such a seal fails with
    /// [`Error::UnknownTenant`] until the tenant is created with
    /// [`Sealer::create_tenant`].
    ///
    /// # Security
    ///
    /// With the default, any tenant id a caller passes gets a key: a typo
    /// (`"Acme"` for `"acme"`) seals under a new tenant whose values the real
    /// tenant never opens, and a tenant id taken from a request lets a client
    /// create keys (a KMS call and a key store row each). Take tenant ids from
    /// your own authenticated records, or turn this off and create tenants
    /// explicitly when they sign up.
    pub fn create_tenants_on_first_use(mut self, create: bool) -> Self {
        self.create_tenants = create;
        self
    }

    /// Builds the sealer.
    pub fn build(self) -> Sealer {
        Sealer {
            keys: Arc::new(Keys {
                provider: Box::new(ObservedProvider {
                    inner: self.provider,
                    label_tenant: self.label_tenant,
                }),
                tenant_roots: self
                    .tenant_roots
                    .into_iter()
                    .map(|(tenant, inner)| {
                        let observed: Box<dyn KeyProvider> = Box::new(ObservedProvider {
                            inner,
                            label_tenant: self.label_tenant,
                        });
                        (tenant, observed)
                    })
                    .collect(),
                store: Box::new(ObservedStore {
                    inner: self.store,
                    label_tenant: self.label_tenant,
                }),
                cache: KeyCache::new(self.cache_capacity, self.cache_ttl),
                algorithm: self.algorithm,
                create_tenants: self.create_tenants,
                revalidate_after: self.revalidate_after,
                min_audit_retention: self.min_audit_retention,
                shred_ledger: self.shred_ledger,
                label_tenant: self.label_tenant,
                audit_key: tokio::sync::OnceCell::new(),
                store_identity: tokio::sync::OnceCell::new(),
                unbound_refused: std::sync::atomic::AtomicBool::new(false),
                own_root_refusals: std::sync::Mutex::default(),
                clock: self.clock,
            }),
        }
    }
}

impl fmt::Debug for SealerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealerBuilder")
            .field("provider", &self.provider)
            .field("tenant_roots", &self.tenant_roots)
            .field("store", &self.store)
            .field("algorithm", &self.algorithm)
            .field("cache_capacity", &self.cache_capacity)
            .field("cache_ttl", &self.cache_ttl)
            .field("create_tenants", &self.create_tenants)
            .field("revalidate_after", &self.revalidate_after)
            .field("min_audit_retention", &self.min_audit_retention)
            .finish()
    }
}
impl Sealer {
    /// Starts configuring a sealer over a root key provider and a key store.
    pub fn builder(
        provider: impl KeyProvider + 'static,
        store: impl KeyStore + 'static,
    ) -> SealerBuilder {
        SealerBuilder {
            provider: Box::new(provider),
            tenant_roots: BTreeMap::new(),
            store: Box::new(store),
            algorithm: Algorithm::default(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_ttl: DEFAULT_CACHE_TTL,
            create_tenants: true,
            revalidate_after: None,
            min_audit_retention: DEFAULT_MIN_AUDIT_RETENTION,
            shred_ledger: None,
            label_tenant: false,
            clock: crate::time::Clock::System,
        }
    }

    /// Key lifecycle operations — rotation, destruction, shredding, root key
    /// rotation and the audit log — through this sealer's provider, store and
    /// cache.
    pub fn admin(&self) -> KeyAdmin {
        KeyAdmin::new(Arc::clone(&self.keys))
    }

    /// A synchronous sealer for one tenant, with its keys loaded (and its first
    /// key created, if it has none and the builder allows it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] for a tenant id that breaks the tenant id
    /// rules (empty, over 255 bytes, not in NFC, a control, invisible format
    /// or unassigned code point, surrounding whitespace: FORMAT.md
    /// §"Context rules"); [`Error::UnknownTenant`] if the tenant has no keys
    /// and may not be created; [`Error::TenantShredded`];
    /// [`Error::TenantRootKeyUnavailable`] if its own root key refuses; provider and store
    /// errors.
    pub async fn tenant(&self, tenant: &str) -> Result<TenantSealer> {
        check_tenant_id(tenant)?;
        let keyring = self.keys.keyring(tenant, self.keys.create_tenants).await?;
        self.handle(tenant, keyring)
    }

    /// As [`Sealer::tenant`], with the tenant's keys checked against the key
    /// store now: one small query for the tenant's generation, and a reload if
    /// its keys changed since they were cached, whatever
    /// [`SealerBuilder::revalidate_after`] says.
    ///
    /// Use it where a handle that has not yet seen another process's rotation
    /// would be wrong rather than merely stale: a uniqueness check on a blind
    /// index (FORMAT.md §"Unique values") must search under every version,
    /// the newest included.
    ///
    /// # Errors
    ///
    /// As [`Sealer::tenant`]; a failed generation check is an error here, not
    /// a warning.
    pub async fn tenant_checked(&self, tenant: &str) -> Result<TenantSealer> {
        check_tenant_id(tenant)?;
        let keyring = self
            .keys
            .keyring_with(tenant, self.keys.create_tenants, None, true)
            .await?;
        self.handle(tenant, keyring)
    }

    /// The handle on a loaded keyring, unless the tenant is shredded.
    fn handle(&self, tenant: &str, keyring: Arc<Keyring>) -> Result<TenantSealer> {
        if let Some(at) = keyring.shredded_at {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
                shredded_at: at,
            });
        }
        Ok(TenantSealer {
            keyring,
            algorithm: self.keys.algorithm,
            label_tenant: self.keys.label_tenant,
        })
    }

    /// As [`Sealer::tenant`] (creating the tenant's first key only if
    /// `create` and the builder allows it), with the tenant's keys checked
    /// against the key store now, as [`Sealer::tenant_checked`] does.
    #[cfg(feature = "_sql")]
    pub(crate) async fn tenant_checked_now(
        &self,
        tenant: &str,
        create: bool,
    ) -> Result<TenantSealer> {
        check_tenant_id(tenant)?;
        let create = create && self.keys.create_tenants;
        let mut keyring = self.keys.keyring_with(tenant, create, None, true).await?;
        // A cache miss may have joined a load that began before a change:
        // compare once more, and reload if the store moved on.
        if self.keys.store.tenant_generation(tenant).await? != Some(keyring.generation) {
            let stale = self.keys.cache.invalidate(tenant);
            keyring = self.keys.keyring_with(tenant, create, stale, false).await?;
        }
        self.handle(tenant, keyring)
    }

    /// Seals `plaintext` for the tenant, table, column and row named by `ctx`,
    /// under the tenant's primary key.
    ///
    /// # Errors
    ///
    /// [`Error::PlaintextTooLarge`]; [`Error::TenantShredded`];
    /// [`Error::UnknownTenant`] if the tenant has no keys and may not be
    /// created; [`Error::TenantRootKeyUnavailable`] if the tenant's own root
    /// key refuses; provider and store errors while loading keys.
    pub async fn seal(&self, ctx: &Context, plaintext: &[u8]) -> Result<SealedValue> {
        let result = self.seal_inner(ctx, plaintext).await;
        telemetry::sealed(&result, self.tenant_label(ctx, &result));
        result
    }

    async fn seal_inner(&self, ctx: &Context, plaintext: &[u8]) -> Result<SealedValue> {
        let plaintext = crate::envelope::Plaintext::new(plaintext)?;
        let keyring = self
            .keys
            .keyring(ctx.tenant(), self.keys.create_tenants)
            .await?;
        keyring.seal_checked(self.keys.algorithm, ctx, plaintext)
    }

    /// The tenant label for metrics, when the application opted in and the
    /// tenant is known: an id that names no tenant never becomes a series.
    fn tenant_label<'a, T>(&self, ctx: &'a Context, result: &Result<T>) -> Option<&'a str> {
        let unknown = matches!(
            result,
            Err(Error::UnknownTenant { .. } | Error::InvalidContext { .. })
        );
        (self.keys.label_tenant && !unknown).then(|| ctx.tenant())
    }

    /// Opens `sealed`, which must have been sealed with exactly this `ctx`.
    ///
    /// A value under a key version this process has not seen yet (another
    /// process rotated) reloads the tenant's keys once.
    ///
    /// # Errors
    ///
    /// [`Error::OpenFailed`] if the value was altered or belongs to another
    /// context (one opaque error, by design); [`Error::KeyDestroyed`],
    /// [`Error::KeyDisabled`], [`Error::BelowMinimumVersion`],
    /// [`Error::TenantShredded`], [`Error::UnknownTenant`],
    /// [`Error::UnknownKeyVersion`]; [`Error::TenantRootKeyUnavailable`] if
    /// the tenant's own root key refuses; provider and store errors.
    pub async fn open(&self, ctx: &Context, sealed: &SealedValue) -> Result<Opened> {
        let result = match self.fresh_keyring_for(ctx.tenant(), sealed).await {
            Ok(keyring) => keyring.open(ctx, sealed),
            Err(err) => Err(err),
        };
        telemetry::opened(&result, self.tenant_label(ctx, &result));
        result
    }

    /// Opens `sealed` and, if it was sealed under an older key version, seals
    /// its plaintext again under the tenant's primary key. Returns the new value
    /// to store, or `None` if `sealed` is already under the primary.
    ///
    /// This is lazy re-sealing: call it where values are read, write back what
    /// it returns, and old key versions empty out without a migration.
    ///
    /// # Security
    ///
    /// Write the new value back with a compare-and-swap —
    /// `UPDATE … SET col = $new WHERE id = $id AND col = $old` — not a plain
    /// `UPDATE … WHERE id = $id`: a concurrent write of a new secret between your
    /// read and your write would otherwise be replaced by the old one.
    ///
    /// # Errors
    ///
    /// As [`Sealer::open`]; `sealed` is left as it was.
    pub async fn reseal(&self, ctx: &Context, sealed: &SealedValue) -> Result<Option<SealedValue>> {
        let result = match self.fresh_keyring_for(ctx.tenant(), sealed).await {
            Ok(keyring) => keyring.reseal(self.keys.algorithm, ctx, sealed),
            Err(err) => Err(err),
        };
        telemetry::resealed(&result, self.tenant_label(ctx, &result));
        result
    }

    /// Reads a value of a TEXT column that is being migrated to fieldseal in
    /// place (`migrate` of the rotation runner): a value that starts with
    /// `fs:` is a sealed value and must open with `ctx`; any other value is
    /// plaintext from before the migration, returned as such.
    ///
    /// # Security
    ///
    /// Plaintext is unauthenticated: while this read path is in use, whoever
    /// can write the column can plant a value. Switch back to [`Sealer::open`]
    /// as soon as the migration is complete (`plan` reports no plaintext
    /// left). A value that starts with `fs:` but does not open is an error,
    /// never plaintext, so a sealed value cannot be downgraded by tampering.
    ///
    /// # Errors
    ///
    /// As [`Sealer::open`], for values starting with `fs:`.
    pub async fn open_migrating(&self, ctx: &Context, stored: &str) -> Result<Migrating> {
        if !stored.starts_with(crate::format::TEXT_PREFIX) {
            return Ok(Migrating::Legacy(secrecy::SecretString::from(stored)));
        }
        let sealed = SealedValue::from_text(stored)?;
        self.open(ctx, &sealed).await.map(Migrating::Sealed)
    }

    /// The tenant's keys, reloaded once if `sealed` names a version newer than
    /// the cached primary (another process rotated).
    async fn fresh_keyring_for(&self, tenant: &str, sealed: &SealedValue) -> Result<Arc<Keyring>> {
        let keyring = self.keys.keyring(tenant, false).await?;
        // At most one such reload per tenant per interval: the version comes
        // from untrusted bytes, and must not turn into a store read per call.
        if !keyring.has_version(sealed.key_version())
            && keyring.shredded_at.is_none()
            && sealed.key_version() > keyring.primary_version()
            && keyring.loaded_at.elapsed() >= crate::keys::MIN_RELOAD_INTERVAL
        {
            let stale = self.keys.cache.invalidate(tenant);
            return self.keys.keyring_with(tenant, false, stale, false).await;
        }
        Ok(keyring)
    }

    /// Creates a tenant's first key explicitly (for deployments that disable
    /// [`create_tenants_on_first_use`](SealerBuilder::create_tenants_on_first_use)).
    /// Does nothing if the tenant already has keys.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] for an invalid tenant id;
    /// [`Error::TenantShredded`] if the tenant was shredded;
    /// [`Error::TenantRootKeyUnavailable`] if its own root key refuses; provider and store
    /// errors.
    pub async fn create_tenant(&self, tenant: &str) -> Result<()> {
        check_tenant_id(tenant)?;
        match self.keys.store.load_tenant(tenant).await? {
            Some(record) if record.latest_version() > 0 || record.shredded_at.is_some() => {
                if let Some(at) = record.shredded_at {
                    return Err(Error::TenantShredded {
                        tenant: tenant.to_string(),
                        shredded_at: at,
                    });
                }
                Ok(())
            }
            _ => self
                .keys
                .create_version(tenant, 1, AuditEvent::TenantCreated, None)
                .await
                .map(|_| ()),
        }
    }
}

pub(crate) fn check_tenant_id(tenant: &str) -> Result<()> {
    crate::context::check_tenant(tenant)
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("provider", &self.keys.provider)
            .field("tenant_roots", &self.keys.tenant_roots.keys())
            .field("store", &self.keys.store)
            .field("algorithm", &self.keys.algorithm)
            .field("cache", &self.keys.cache)
            .finish()
    }
}

/// Seals and opens values for one tenant, synchronously, with keys already in
/// memory.
///
/// Get one from [`Sealer::tenant`]. It is a snapshot of the tenant's keys: use
/// it for a request or a batch, then drop it, so that changes are picked up.
/// Shredding the tenant and destroying a version stop it at once (when done
/// through this process); a rotation, a disabled version or a new minimum
/// decryption version take effect only in handles fetched afterwards.
///
/// # Security
///
/// A shred made through any clone of the [`Sealer`] that issued it stops this
/// handle at once. A shred made by another process stops it only when it is
/// dropped and fetched again, so do not keep one for longer than the cache time
/// to live.
#[derive(Clone)]
pub struct TenantSealer {
    pub(crate) keyring: Arc<Keyring>,
    algorithm: Algorithm,
    label_tenant: bool,
}

impl TenantSealer {
    /// The tenant this handle serves.
    pub fn tenant(&self) -> &str {
        &self.keyring.tenant
    }

    /// The key version new values are sealed under.
    pub fn primary_version(&self) -> u32 {
        self.keyring.primary_version()
    }

    /// Seals `plaintext` under the tenant's primary key. No I/O: the salt comes
    /// from the thread's user-space generator.
    ///
    /// # Errors
    ///
    /// [`Error::TenantMismatch`] if `ctx` names another tenant;
    /// [`Error::PlaintextTooLarge`]; [`Error::TenantShredded`].
    pub fn seal(&self, ctx: &Context, plaintext: &[u8]) -> Result<SealedValue> {
        let result = self.keyring.seal(self.algorithm, ctx, plaintext);
        telemetry::sealed(&result, self.tenant_label());
        result
    }

    /// The key store's generation of the tenant when these keys were read.
    #[cfg(feature = "_sql")]
    pub(crate) fn generation(&self) -> u64 {
        self.keyring.generation
    }

    pub(crate) fn tenant_label(&self) -> Option<&str> {
        self.label_tenant.then_some(&*self.keyring.tenant)
    }

    /// As [`TenantSealer::seal_row`], without counting it in the metrics.
    pub(crate) fn seal_row_uncounted(
        &self,
        template: &ContextTemplate,
        row: impl fmt::Display,
        plaintext: &[u8],
    ) -> Result<SealedValue> {
        self.keyring
            .seal_row(self.algorithm, template, row, plaintext)
    }

    /// As [`TenantSealer::open`], without counting it in the metrics (for a
    /// caller that counts the outcome itself, or not at all).
    #[cfg(feature = "_sql")]
    pub(crate) fn open_uncounted(&self, ctx: &Context, sealed: &SealedValue) -> Result<Opened> {
        self.keyring.open(ctx, sealed)
    }

    /// As [`TenantSealer::seal`], without counting it in the metrics.
    #[cfg(feature = "_sql")]
    pub(crate) fn seal_uncounted(&self, ctx: &Context, plaintext: &[u8]) -> Result<SealedValue> {
        self.keyring.seal(self.algorithm, ctx, plaintext)
    }

    /// Counts an open made with [`TenantSealer::open_uncounted`].
    #[cfg(feature = "_sql")]
    pub(crate) fn counted_open(&self, result: Result<Opened>) -> Result<Opened> {
        telemetry::opened(&result, self.tenant_label());
        result
    }

    /// Opens `sealed`, which must have been sealed with exactly this `ctx`.
    ///
    /// # Errors
    ///
    /// As [`Sealer::open`], plus [`Error::TenantMismatch`]. A value under a key
    /// version newer than this snapshot gives [`Error::UnknownKeyVersion`]:
    /// [`Sealer::open`] reloads in that case.
    pub fn open(&self, ctx: &Context, sealed: &SealedValue) -> Result<Opened> {
        let result = self.keyring.open(ctx, sealed);
        telemetry::opened(&result, self.tenant_label());
        result
    }

    /// As [`Sealer::reseal`], synchronously, with this snapshot's keys.
    ///
    /// # Errors
    ///
    /// As [`TenantSealer::open`].
    pub fn reseal(&self, ctx: &Context, sealed: &SealedValue) -> Result<Option<SealedValue>> {
        let result = self.keyring.reseal(self.algorithm, ctx, sealed);
        telemetry::resealed(&result, self.tenant_label());
        result
    }
}

impl fmt::Debug for TenantSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSealer")
            .field("tenant", &self.keyring.tenant)
            .field("primary_version", &self.keyring.primary_version())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

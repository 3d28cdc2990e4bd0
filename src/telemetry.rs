//! Metrics and tracing: what fieldseal is doing, never what it protects.
//!
//! Metrics go through the `metrics` facade (feature `metrics`); without the
//! feature every function here is empty and compiles away. The names and
//! labels are documented in docs/OBSERVABILITY.md. Labels are static names
//! (operations, error kinds), plus the tenant id only when the application
//! opts in with `SealerBuilder::metrics_tenant_label`.
//!
//! Tracing: every provider call, store call and admin operation runs in a
//! DEBUG span (`fieldseal.provider`, `fieldseal.store`, `fieldseal.admin`)
//! with the tenant and key version as fields; sealing and opening emit
//! nothing above TRACE. Fields are ids, versions, operation names and error
//! kinds: never a key, a plaintext, wrapped bytes or a sealed value.

use std::fmt;
use std::future::Future;
#[cfg(feature = "metrics")]
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument as _;

use crate::audit::{AUDIT_MAC_LEN, AuditAppend, AuditEntry};
use crate::error::Result;
use crate::provider::{KeyProvider, WrapContext, WrappedKey};
use crate::secret::TenantKey;
use crate::store::{InsertOutcome, KeyState, KeyStore, NewKeyVersion, StoredKey, TenantRecord};

/// The `outcome` label of a result: `ok`, or the error's kind.
fn outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => err.kind().as_str(),
    }
}

/// The tenant label, when the application opted in.
#[cfg(feature = "metrics")]
fn with_tenant(mut labels: Vec<::metrics::Label>, tenant: Option<&str>) -> Vec<::metrics::Label> {
    if let Some(tenant) = tenant {
        labels.push(::metrics::Label::new("tenant", tenant.to_string()));
    }
    labels
}

/// Counts a seal (`fieldseal_seals_total`, or
/// `fieldseal_seal_failures_total{kind}`).
///
/// `sealed` and `opened` are written out twice on purpose: with the metric
/// name a literal, the facade builds the key at compile time; a shared helper
/// taking the name as a value costs about 110 instructions more per call
/// (callgrind, `examples/seal_loop`).
#[inline]
pub(crate) fn sealed<T>(result: &Result<T>, tenant: Option<&str>) {
    #[cfg(feature = "metrics")]
    match result {
        // The common case names a static key: no label vector to build.
        Ok(_) => match tenant {
            None => ::metrics::counter!("fieldseal_seals_total").increment(1),
            Some(tenant) => {
                ::metrics::counter!("fieldseal_seals_total", "tenant" => tenant.to_string())
                    .increment(1);
            }
        },
        Err(err) => ::metrics::counter!(
            "fieldseal_seal_failures_total",
            with_tenant(
                vec![::metrics::Label::from_static_parts(
                    "kind",
                    err.kind().as_str()
                )],
                tenant
            )
        )
        .increment(1),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (result, tenant);
}

/// Counts an open (`fieldseal_opens_total`, or
/// `fieldseal_open_failures_total{kind}`).
#[inline]
pub(crate) fn opened<T>(result: &Result<T>, tenant: Option<&str>) {
    #[cfg(feature = "metrics")]
    match result {
        Ok(_) => match tenant {
            None => ::metrics::counter!("fieldseal_opens_total").increment(1),
            Some(tenant) => {
                ::metrics::counter!("fieldseal_opens_total", "tenant" => tenant.to_string())
                    .increment(1);
            }
        },
        Err(err) => ::metrics::counter!(
            "fieldseal_open_failures_total",
            with_tenant(
                vec![::metrics::Label::from_static_parts(
                    "kind",
                    err.kind().as_str()
                )],
                tenant
            )
        )
        .increment(1),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (result, tenant);
}

/// Counts `n` successful seals of one batch at once.
#[inline]
pub(crate) fn sealed_ok(n: u64, tenant: Option<&str>) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        match tenant {
            None => ::metrics::counter!("fieldseal_seals_total").increment(n),
            Some(tenant) => {
                ::metrics::counter!("fieldseal_seals_total", "tenant" => tenant.to_string())
                    .increment(n);
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (n, tenant);
}

/// Counts `n` successful opens of one batch at once.
#[inline]
pub(crate) fn opened_ok(n: u64, tenant: Option<&str>) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        match tenant {
            None => ::metrics::counter!("fieldseal_opens_total").increment(n),
            Some(tenant) => {
                ::metrics::counter!("fieldseal_opens_total", "tenant" => tenant.to_string())
                    .increment(n);
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (n, tenant);
}

/// Counts a re-seal (`fieldseal_reseals_total{result}`: `resealed`,
/// `current` or the error's kind).
#[inline]
pub(crate) fn resealed<T>(result: &Result<Option<T>>, tenant: Option<&str>) {
    #[cfg(feature = "metrics")]
    {
        let result = match result {
            Ok(Some(_)) => "resealed",
            Ok(None) => "current",
            Err(err) => err.kind().as_str(),
        };
        ::metrics::counter!(
            "fieldseal_reseals_total",
            with_tenant(
                vec![::metrics::Label::from_static_parts("result", result)],
                tenant
            )
        )
        .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (result, tenant);
}

/// What happened in the tenant key cache.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum CacheEvent {
    Hit,
    Miss,
    /// Dropped to stay within capacity.
    Evicted,
    /// Found past its time to live (a miss: the keys are loaded again).
    Expired,
    /// A revalidation against the store's generation: `unchanged`, `changed`
    /// or `failed`.
    Revalidated(&'static str),
}

/// Counts a cache event (`fieldseal_cache_hits_total`,
/// `fieldseal_cache_misses_total{reason}`, `fieldseal_cache_evictions_total{reason}`,
/// `fieldseal_cache_revalidations_total{result}`).
#[inline]
pub(crate) fn cache(event: CacheEvent) {
    #[cfg(feature = "metrics")]
    match event {
        CacheEvent::Hit => ::metrics::counter!("fieldseal_cache_hits_total").increment(1),
        CacheEvent::Miss => {
            ::metrics::counter!("fieldseal_cache_misses_total", "reason" => "absent").increment(1);
        }
        CacheEvent::Expired => {
            ::metrics::counter!("fieldseal_cache_misses_total", "reason" => "expired").increment(1);
        }
        CacheEvent::Evicted => {
            ::metrics::counter!("fieldseal_cache_evictions_total", "reason" => "capacity")
                .increment(1);
        }
        CacheEvent::Revalidated(result) => {
            ::metrics::counter!("fieldseal_cache_revalidations_total", "result" => result)
                .increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = event;
}

/// Runs an admin operation in a `fieldseal.admin` span and counts it
/// (`fieldseal_admin_operations_total{op, outcome}`).
pub(crate) async fn admin<T>(
    op: &'static str,
    tenant: &str,
    label_tenant: bool,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    let span = tracing::debug_span!(
        "fieldseal.admin",
        op,
        tenant,
        outcome = tracing::field::Empty
    );
    let result = operation.instrument(span.clone()).await;
    span.record("outcome", outcome(&result));
    #[cfg(feature = "metrics")]
    ::metrics::counter!(
        "fieldseal_admin_operations_total",
        with_tenant(
            vec![
                ::metrics::Label::from_static_parts("op", op),
                ::metrics::Label::from_static_parts("outcome", outcome(&result)),
            ],
            (label_tenant && !tenant.is_empty()).then_some(tenant)
        )
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = label_tenant;
    result
}

/// Times `call` in a span named `name` and records its count and latency
/// under `component` (`fieldseal_{component}_calls_total{op, outcome}`,
/// `fieldseal_{component}_call_duration_seconds{op}`).
async fn timed<T>(
    component: Component,
    op: &'static str,
    span: tracing::Span,
    tenant: Option<&str>,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    #[cfg(feature = "metrics")]
    let start = Instant::now();
    let result = call.instrument(span.clone()).await;
    span.record("outcome", outcome(&result));
    if let Err(err) = &result {
        tracing::debug!(parent: &span, kind = err.kind().as_str(), "{} {op} failed", component.name());
    }
    #[cfg(feature = "metrics")]
    {
        let (calls, duration) = match component {
            Component::Provider => (
                "fieldseal_provider_calls_total",
                "fieldseal_provider_call_duration_seconds",
            ),
            Component::Store => (
                "fieldseal_store_calls_total",
                "fieldseal_store_call_duration_seconds",
            ),
        };
        let op_label = ::metrics::Label::from_static_parts("op", op);
        ::metrics::counter!(
            calls,
            with_tenant(
                vec![
                    op_label.clone(),
                    ::metrics::Label::from_static_parts("outcome", outcome(&result)),
                ],
                tenant
            )
        )
        .increment(1);
        ::metrics::histogram!(duration, vec![op_label]).record(start.elapsed().as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = tenant;
    result
}

#[derive(Clone, Copy)]
enum Component {
    Provider,
    Store,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Self::Provider => "key provider",
            Self::Store => "key store",
        }
    }
}

/// The application's provider, observed: every call in a span, counted and
/// timed.
pub(crate) struct ObservedProvider {
    pub(crate) inner: Box<dyn KeyProvider>,
    pub(crate) label_tenant: bool,
}

impl ObservedProvider {
    fn tenant<'a>(&self, ctx: &WrapContext<'a>) -> Option<&'a str> {
        (self.label_tenant && !ctx.is_audit_key()).then(|| ctx.tenant())
    }
}

impl fmt::Debug for ObservedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

fn provider_span(op: &'static str, root_key_id: &str, ctx: &WrapContext<'_>) -> tracing::Span {
    tracing::debug_span!(
        "fieldseal.provider",
        op,
        root_key_id,
        tenant = ctx.tenant(),
        version = ctx.version(),
        audit_key = ctx.is_audit_key(),
        outcome = tracing::field::Empty,
    )
}

#[async_trait]
impl KeyProvider for ObservedProvider {
    fn current_root_key_id(&self) -> &str {
        self.inner.current_root_key_id()
    }

    fn root_key_ids(&self) -> Vec<&str> {
        self.inner.root_key_ids()
    }

    fn root_keys_exclusive(&self) -> bool {
        self.inner.root_keys_exclusive()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey> {
        let span = provider_span("wrap", self.inner.current_root_key_id(), ctx);
        let call = self.inner.wrap(key, ctx);
        timed(Component::Provider, "wrap", span, self.tenant(ctx), call).await
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey> {
        let span = provider_span("unwrap", wrapped.root_key_id(), ctx);
        let call = self.inner.unwrap(wrapped, ctx);
        timed(Component::Provider, "unwrap", span, self.tenant(ctx), call).await
    }

    async fn create_root_key(&self) -> Result<String> {
        self.inner.create_root_key().await
    }

    async fn destroy_root_key(&self, id: &str) -> Result<crate::Timestamp> {
        self.inner.destroy_root_key(id).await
    }
}

/// The application's key store, observed: every call in a span, counted and
/// timed.
pub(crate) struct ObservedStore {
    pub(crate) inner: Box<dyn KeyStore>,
    pub(crate) label_tenant: bool,
}

impl fmt::Debug for ObservedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl ObservedStore {
    async fn call<T>(
        &self,
        op: &'static str,
        tenant: &str,
        version: Option<u32>,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::debug_span!(
            "fieldseal.store",
            op,
            tenant,
            version,
            outcome = tracing::field::Empty,
        );
        let label = (self.label_tenant && !tenant.is_empty()).then_some(tenant);
        timed(Component::Store, op, span, label, call).await
    }
}

#[async_trait]
impl KeyStore for ObservedStore {
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>> {
        self.call("load_tenant", tenant, None, self.inner.load_tenant(tenant))
            .await
    }

    async fn tenant_generation(&self, tenant: &str) -> Result<Option<u64>> {
        let call = self.inner.tenant_generation(tenant);
        self.call("tenant_generation", tenant, None, call).await
    }

    async fn tenant_generations(&self, tenants: &[&str]) -> Result<Vec<Option<u64>>> {
        let call = self.inner.tenant_generations(tenants);
        self.call("tenant_generations", "", None, call).await
    }

    async fn insert_key_version(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome> {
        let version = new.version;
        let call = self.inner.insert_key_version(tenant, new, audit);
        self.call("insert_key_version", tenant, Some(version), call)
            .await
    }

    async fn update_key_state(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        let call = self
            .inner
            .update_key_state(tenant, version, from, to, audit);
        self.call("update_key_state", tenant, Some(version), call)
            .await
    }

    async fn set_min_decryption_version(
        &self,
        tenant: &str,
        minimum: u32,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        let call = self
            .inner
            .set_min_decryption_version(tenant, minimum, audit);
        self.call("set_min_decryption_version", tenant, Some(minimum), call)
            .await
    }

    async fn shred_tenant(&self, tenant: &str, audit: &AuditAppend<'_>) -> Result<bool> {
        let call = self.inner.shred_tenant(tenant, audit);
        self.call("shred_tenant", tenant, None, call).await
    }

    async fn recreate_tenant(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome> {
        let version = new.version;
        let call = self.inner.recreate_tenant(tenant, new, audit);
        self.call("recreate_tenant", tenant, Some(version), call)
            .await
    }

    async fn list_wrapped_keys(
        &self,
        after: Option<(&str, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredKey>> {
        let call = self.inner.list_wrapped_keys(after, limit);
        self.call("list_wrapped_keys", "", None, call).await
    }

    async fn rewrap_key(
        &self,
        tenant: &str,
        version: u32,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        let call = self.inner.rewrap_key(tenant, version, old, new, audit);
        self.call("rewrap_key", tenant, Some(version), call).await
    }

    async fn load_audit_key(&self) -> Result<Option<WrappedKey>> {
        let call = self.inner.load_audit_key();
        self.call("load_audit_key", "", None, call).await
    }

    async fn insert_audit_key(&self, wrapped: WrappedKey) -> Result<bool> {
        let call = self.inner.insert_audit_key(wrapped);
        self.call("insert_audit_key", "", None, call).await
    }

    async fn rewrap_audit_key(
        &self,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        let call = self.inner.rewrap_audit_key(old, new, audit);
        self.call("rewrap_audit_key", "", None, call).await
    }

    async fn store_identity(&self) -> Result<Option<crate::store::StoreIdentity>> {
        self.call("store_identity", "", None, self.inner.store_identity())
            .await
    }

    async fn record_audit(&self, audit: &AuditAppend<'_>) -> Result<()> {
        let call = self.inner.record_audit(audit);
        self.call("record_audit", "", None, call).await
    }

    async fn refuse_unbound_wraps(&self, audit: &AuditAppend<'_>) -> Result<bool> {
        let call = self.inner.refuse_unbound_wraps(audit);
        self.call("refuse_unbound_wraps", "", None, call).await
    }

    async fn audit_head(&self) -> Result<Option<(u64, [u8; AUDIT_MAC_LEN])>> {
        self.call("audit_head", "", None, self.inner.audit_head())
            .await
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let call = self.inner.audit_entries(after, limit);
        self.call("audit_entries", "", None, call).await
    }

    async fn prune_audit(
        &self,
        through: u64,
        through_mac: &[u8; AUDIT_MAC_LEN],
        audit: &AuditAppend<'_>,
    ) -> Result<u64> {
        let call = self.inner.prune_audit(through, through_mac, audit);
        self.call("prune_audit", "", None, call).await
    }
}

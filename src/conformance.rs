//! The conformance kit (feature `testing`): checks that a [`KeyProvider`] or a
//! [`KeyStore`] keeps the promises fieldseal relies on.
//!
//! Anyone who writes a provider or a store runs these in their own tests;
//! every provider and store in this crate runs them too. A check that fails
//! panics with the name of the promise it broke, so they read like assertions.
#![allow(clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::audit::{AuditAppend, AuditEntry, AuditEvent, Verifier, pruned_detail};
use crate::crypto::HmacKey;
use crate::error::Error;
use crate::provider::{KeyProvider, WrapContext, WrappedKey, check_root_key_id};
use crate::secret::TenantKey;
use crate::store::{InsertOutcome, KeyState, KeyStore, NewKeyVersion};
use crate::time::Timestamp;

/// Concurrent callers in the concurrency checks.
const RACERS: usize = 16;

/// Checks a root key provider: wrap and unwrap round trips, the binding of
/// each wrapped key to its tenant, version and purpose, tampering, foreign
/// root key ids, randomised wraps and concurrent use.
///
/// It makes a few dozen wrap and unwrap calls with throwaway keys and
/// tenants named `conformance-…`; nothing is stored. It expects randomised
/// wraps (two wraps of one key differ, so the key store does not show which
/// keys are equal) and `unwrap_failed` for a wrapped key presented under
/// another context; errors must not show the tenant key or the wrapped bytes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fieldseal::Error> {
/// use fieldseal::{LocalKeyProvider, RootKey};
///
/// let provider = LocalKeyProvider::new("root-1", RootKey::generate()?)?;
/// fieldseal::testing::check_key_provider(&provider).await;
/// # Ok(()) }
/// ```
///
/// # Panics
///
/// On the first broken promise, with a message that names it, for example
/// "KeyProvider conformance: a key wrapped for tenant `conformance-a` version 1
/// unwrapped as tenant `conformance-b` version 1".
pub async fn check_key_provider(provider: &(dyn KeyProvider + 'static)) {
    let fail = |what: String| -> ! { panic!("KeyProvider conformance: {what}") };
    let current = provider.current_root_key_id().to_string();
    if let Err(err) = check_root_key_id(&current) {
        fail(format!(
            "the current root key id is not a valid root key id: {err}"
        ));
    }
    let ids = provider.root_key_ids();
    if ids.first() != Some(&current.as_str()) {
        fail(format!(
            "root_key_ids() gives {ids:?}, which does not start with the current id `{current}`"
        ));
    }
    for id in &ids {
        if let Err(err) = check_root_key_id(id) {
            fail(format!(
                "root_key_ids() lists an invalid root key id: {err}"
            ));
        }
    }
    if ids.contains(&"conformance-unknown-root") {
        fail("the provider claims every root key id, even `conformance-unknown-root`".into());
    }

    let key = tenant_key();
    let contexts = [
        WrapContext::tenant_key("conformance-a", 1),
        WrapContext::tenant_key("conformance-a", 2),
        WrapContext::tenant_key("conformance-b", 1),
        WrapContext::tenant_key("conformance-é", u32::MAX),
        WrapContext::audit_key(1),
        // The same, bound to a key store: a wrap for one store opens in no
        // other, nor without a store.
        WrapContext::tenant_key("conformance-a", 1).in_store("0123456789abcdef0123456789abcdef"),
        WrapContext::tenant_key("conformance-a", 1).in_store("fedcba9876543210fedcba9876543210"),
        WrapContext::audit_key(1).in_store("0123456789abcdef0123456789abcdef"),
    ];
    let mut wrapped = Vec::new();
    for ctx in &contexts {
        let one = provider
            .wrap(&key, ctx)
            .await
            .unwrap_or_else(|err| fail(format!("wrapping for {} failed: {err}", ctx.describe())));
        if one.root_key_id() != current {
            fail(format!(
                "a key wrapped under current root key `{current}` names root key `{}`",
                one.root_key_id()
            ));
        }
        let back = provider
            .unwrap(&one, ctx)
            .await
            .unwrap_or_else(|err| fail(format!("unwrapping for {} failed: {err}", ctx.describe())));
        if back.expose_secret() != key.expose_secret() {
            fail(format!("{} unwrapped to another key", ctx.describe()));
        }
        wrapped.push(one);
    }

    // Bound to its context: every other context refuses it, as unwrap_failed.
    for (i, one) in wrapped.iter().enumerate() {
        for (j, other) in contexts.iter().enumerate() {
            if i == j {
                continue;
            }
            let result = provider.unwrap(one, other).await;
            if let Err(err) = &result {
                check_error_is_clean(err, &key, one);
            }
            match result {
                Err(Error::UnwrapFailed { .. }) => {}
                Ok(_) => fail(format!(
                    "a key wrapped for {} unwrapped as {}",
                    contexts_describe(&contexts, i),
                    contexts_describe(&contexts, j)
                )),
                Err(err) => fail(format!(
                    "a key wrapped for {} and unwrapped as {} failed with `{}` instead of \
                     unwrap_failed: {err}",
                    contexts_describe(&contexts, i),
                    contexts_describe(&contexts, j),
                    err.kind()
                )),
            }
        }
    }

    // Randomised: wrapping the same key twice gives different bytes, so the
    // store does not reveal which tenants share a key or which key was
    // re-wrapped to what.
    let ctx = contexts[0];
    let Some(first) = wrapped.first() else {
        fail("nothing was wrapped".into());
    };
    let again = provider
        .wrap(&key, &ctx)
        .await
        .unwrap_or_else(|err| fail(format!("wrapping twice failed: {err}")));
    if again.as_bytes() == first.as_bytes() {
        fail("two wraps of the same key under the same context are identical".into());
    }

    // Tampered bytes never unwrap: flips at the ends and the middle,
    // truncation and extension.
    let bytes = first.as_bytes();
    let mut altered: Vec<(String, Vec<u8>)> = Vec::new();
    for at in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
        let mut flipped = bytes.to_vec();
        if let Some(byte) = flipped.get_mut(at) {
            *byte ^= 0x01;
            altered.push((format!("with bit 0 of byte {at} flipped"), flipped));
        }
    }
    for len in [0, 1, bytes.len().saturating_sub(1)] {
        altered.push((
            format!("truncated to {len} bytes"),
            bytes.get(..len).unwrap_or_default().to_vec(),
        ));
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    altered.push(("with one byte appended".into(), longer));
    for (how, tampered) in altered {
        let result = provider
            .unwrap(&WrappedKey::new(current.clone(), tampered), &ctx)
            .await;
        if let Err(err) = &result {
            check_error_is_clean(err, &key, first);
        }
        match result {
            // A KMS may answer altered ciphertext with an access error.
            Err(Error::UnwrapFailed { .. } | Error::Provider { .. }) => {}
            Ok(_) => fail(format!("a wrapped key {how} still unwrapped")),
            Err(err) => fail(format!(
                "a wrapped key {how} failed with `{}` instead of unwrap_failed: {err}",
                err.kind()
            )),
        }
    }

    // "Not my key" is root_key_not_configured, naming the id.
    let foreign = WrappedKey::new("conformance-unknown-root", bytes.to_vec());
    let result = provider.unwrap(&foreign, &ctx).await;
    if let Err(err) = &result {
        check_error_is_clean(err, &key, first);
    }
    match result {
        Err(Error::RootKeyNotConfigured { id }) if id == "conformance-unknown-root" => {}
        other => fail(format!(
            "unwrapping under a root key id it does not hold gave {} instead of \
             root_key_not_configured naming that id",
            describe_result(&other)
        )),
    }

    // Debug output never shows the key.
    let debug = format!("{provider:?} {first:?}");
    if contains_key(&debug, key.expose_secret()) {
        fail("Debug output contains the tenant key".into());
    }

    // Concurrent use: many round trips at once, each to its own context.
    let mut tasks = Vec::with_capacity(RACERS * 4);
    for i in 0..RACERS * 4 {
        tasks.push(async move {
            let tenant = format!("conformance-{}", i % 8);
            let version = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let ctx = WrapContext::tenant_key(&tenant, version);
            let key = tenant_key();
            let wrapped = provider.wrap(&key, &ctx).await?;
            let back = provider.unwrap(&wrapped, &ctx).await?;
            Ok::<bool, Error>(back.expose_secret() == key.expose_secret())
        });
    }
    for result in join_all(tasks).await {
        match result {
            Ok(true) => {}
            Ok(false) => fail("a concurrent round trip returned another key".into()),
            Err(err) => fail(format!("a concurrent round trip failed: {err}")),
        }
    }
}

/// An error's Display, Debug and causes never show the tenant key or the
/// wrapped bytes.
fn check_error_is_clean(err: &Error, key: &TenantKey, wrapped: &WrappedKey) {
    let mut shown = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        shown.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    if contains_key(&shown, key.expose_secret()) {
        panic!(
            "KeyProvider conformance: an error shows the tenant key: `{}`",
            err.kind()
        );
    }
    if wrapped.as_bytes().len() >= 16 && contains_key(&shown, wrapped.as_bytes()) {
        panic!(
            "KeyProvider conformance: an error shows the wrapped key bytes: `{}`",
            err.kind()
        );
    }
}

fn contexts_describe(contexts: &[WrapContext<'_>], i: usize) -> String {
    contexts
        .get(i)
        .map_or_else(String::new, |ctx| match ctx.store_id() {
            Some(store) => format!("{} in store `{store}`", ctx.describe()),
            None => ctx.describe(),
        })
}

fn describe_result<T>(result: &Result<T, Error>) -> String {
    match result {
        Ok(_) => "success".into(),
        Err(err) => format!("`{}` ({err})", err.kind()),
    }
}

fn tenant_key() -> TenantKey {
    TenantKey::generate().unwrap_or_else(|err| panic!("conformance: no random tenant key: {err}"))
}

/// Whether `text` shows `key` raw, in hex, or in base64/base64url.
fn contains_key(text: &str, key: &[u8]) -> bool {
    use base64::Engine as _;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let forms = [
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        format!("{key:?}"),
    ];
    forms.iter().any(|form| text.contains(form.as_str()))
}

/// Runs futures concurrently on the current task and collects their outputs
/// in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    // Polled together on this task, so they need not be 'static.
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Checks a key store: create-if-absent under concurrency, conditional state
/// changes, shredding and re-creation, re-wrapping, listing, and an audit
/// chain appended once per change, in order, that verifies and prunes.
///
/// `store` must be **empty** (freshly migrated): the check reads its whole
/// audit log. Its tenants are named `conformance-…`, and it leaves behind an
/// audit key that no provider can unwrap: use a throwaway store (a fresh
/// schema, database or file). Every successful change must advance the
/// tenant's generation, and a refused one must not.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use fieldseal::MemoryKeyStore;
///
/// fieldseal::testing::check_key_store(MemoryKeyStore::new()).await;
/// # }
/// ```
///
/// # Panics
///
/// If the store is not empty, or on the first broken promise, with a message
/// that names it, for example "KeyStore conformance: 16 concurrent creations
/// of version 1 inserted 2 times (expected exactly 1)".
pub async fn check_key_store<S: KeyStore + Clone + 'static>(store: S) {
    StoreCheck::new(store).run().await;
}

/// An audit entry to be built by a racer on its own task.
struct RacerAudit {
    key: Arc<HmacKey>,
    event: AuditEvent,
    tenant: String,
    version: u32,
}

impl RacerAudit {
    fn get(&self) -> AuditAppend<'_> {
        AuditAppend::new(
            &self.key,
            self.event,
            &self.tenant,
            self.version,
            Some("conformance"),
            String::new(),
            crate::Timestamp::now(),
        )
        .unwrap_or_else(|e| fail(e))
    }
}

/// Runs racers at once: on tasks of their own, released together by a
/// barrier, on a multi-thread runtime; polled together on this task
/// otherwise.
async fn race<T, F>(racers: Vec<F>) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let handle = match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            handle
        }
        _ => return join_all(racers).await,
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(racers.len()));
    let tasks: Vec<_> = racers
        .into_iter()
        .map(|racer| {
            let barrier = Arc::clone(&barrier);
            handle.spawn(async move {
                barrier.wait().await;
                racer.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(
            task.await
                .unwrap_or_else(|err| fail(format!("a racer panicked: {err}"))),
        );
    }
    out
}

struct StoreCheck<S> {
    store: S,
    key: Arc<HmacKey>,
    /// The events appended so far, in order.
    expected: Vec<&'static str>,
}

fn fail(what: impl std::fmt::Display) -> ! {
    panic!("KeyStore conformance: {what}")
}

fn must<T>(what: &str, result: Result<T, Error>) -> T {
    result.unwrap_or_else(|err| fail(format!("{what} failed: {}", with_causes(&err))))
}

/// An error and its causes, for failure messages.
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn wrapped(tag: &str) -> WrappedKey {
    WrappedKey::new("conformance-root", tag.as_bytes().to_vec())
}

fn new_version(version: u32, tag: &str) -> NewKeyVersion {
    NewKeyVersion {
        version,
        wrapped: wrapped(tag),
        created_at: Timestamp::now(),
    }
}

impl<S: KeyStore + Clone + 'static> StoreCheck<S> {
    fn new(store: S) -> Self {
        let mut seed = [0u8; 32];
        if crate::secret::os_random(&mut seed).is_err() {
            fail("no randomness for the audit key");
        }
        Self {
            store,
            key: Arc::new(HmacKey::new(&seed)),
            expected: Vec::new(),
        }
    }

    fn audit(&self, event: AuditEvent, tenant: &str, version: u32) -> AuditAppend<'_> {
        AuditAppend::new(
            &self.key,
            event,
            tenant,
            version,
            Some("conformance"),
            String::new(),
            crate::Timestamp::now(),
        )
        .unwrap_or_else(|e| fail(e))
    }

    /// What a racer needs to build its own audit entry on another task.
    fn racer_audit(&self, event: AuditEvent, tenant: &str, version: u32) -> RacerAudit {
        RacerAudit {
            key: Arc::clone(&self.key),
            event,
            tenant: tenant.to_string(),
            version,
        }
    }

    async fn generation(&self, tenant: &str) -> u64 {
        let one = must(
            "tenant_generation",
            self.store.tenant_generation(tenant).await,
        )
        .unwrap_or_else(|| fail(format!("tenant `{tenant}` has no generation")));
        // Read with others, known and unknown, repeated and in any order,
        // through tenant_generations: the same answer for each.
        let many = must(
            "tenant_generations",
            self.store
                .tenant_generations(&["conformance-unknown", tenant, "CONFORMANCE-A", tenant])
                .await,
        );
        if many != [None, Some(one), None, Some(one)] {
            fail(format!(
                "tenant_generations gives {many:?} for [unknown, `{tenant}`, a tenant differing \
                 only by case, `{tenant}`]; tenant_generation gives {one} for `{tenant}`"
            ));
        }
        one
    }

    /// The generation after a successful change: strictly above `before`
    /// (other processes notice changes through it).
    async fn advanced(&self, tenant: &str, before: Option<u64>, change: &str) -> u64 {
        let after = self.generation(tenant).await;
        if before.is_some_and(|before| after <= before) {
            fail(format!(
                "{change} did not advance tenant `{tenant}`'s generation"
            ));
        }
        after
    }

    async fn run(mut self) {
        self.empty().await;
        self.audit_key().await;
        let t = "conformance-a";
        self.creation(t).await;
        self.state_changes(t).await;
        self.rewrap(t).await;
        self.listing(t).await;
        self.shred_and_recreate(t).await;
        self.audit_chain().await;
        self.prune().await;
        self.identity().await;
    }

    /// A store with an identity keeps it, and keeps each wrapped key's
    /// store-bound mark with its bytes: returned as stored, and compared by
    /// re-wraps.
    async fn identity(&mut self) {
        let Some(first) = must("store_identity", self.store.store_identity().await) else {
            return;
        };
        if must("store_identity", self.store.store_identity().await).as_ref() != Some(&first) {
            fail("store_identity changed between two calls");
        }
        let t = "conformance-d";
        let bound = wrapped("bound").bound_to_store();
        let audit = self.audit(AuditEvent::TenantCreated, t, 1);
        let new = NewKeyVersion {
            version: 1,
            wrapped: bound.clone(),
            created_at: Timestamp::now(),
        };
        must(
            "insert_key_version",
            self.store.insert_key_version(t, new, &audit).await,
        );
        let loaded = must("load_tenant", self.store.load_tenant(t).await)
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.wrapped);
        if loaded.as_ref().map(WrappedKey::is_store_bound) != Some(true) {
            fail("a key stored as bound to the store came back unbound (or not at all)");
        }
        let listed = must(
            "list_wrapped_keys",
            self.store.list_wrapped_keys(None, 10_000).await,
        )
        .into_iter()
        .find(|k| k.tenant == t)
        .and_then(|k| k.key.wrapped);
        if listed.as_ref().map(WrappedKey::is_store_bound) != Some(true) {
            fail("list_wrapped_keys returned a bound key unbound");
        }
        // The same bytes without the mark are another key.
        let audit = self.audit(AuditEvent::KeyRewrapped, t, 1);
        let unbound_old = wrapped("bound");
        if must(
            "rewrap_key",
            self.store
                .rewrap_key(t, 1, &unbound_old, wrapped("other"), &audit)
                .await,
        ) {
            fail("rewrap_key matched a bound key given as unbound");
        }
    }

    async fn empty(&self) {
        let entries = must("audit_entries", self.store.audit_entries(0, 1).await);
        let keys = must(
            "list_wrapped_keys",
            self.store.list_wrapped_keys(None, 1).await,
        );
        let audit_key = must("load_audit_key", self.store.load_audit_key().await);
        if !entries.is_empty() || !keys.is_empty() || audit_key.is_some() {
            fail("the store given is not empty: give the check a freshly migrated store");
        }
        if must("load_tenant", self.store.load_tenant("conformance-a").await).is_some()
            || must(
                "tenant_generation",
                self.store.tenant_generation("conformance-a").await,
            )
            .is_some()
        {
            fail("an unknown tenant loads as present");
        }
    }

    /// The audit key is inserted once, whoever races for it.
    async fn audit_key(&mut self) {
        let racers = (0..RACERS).map(|i| {
            let store = self.store.clone();
            async move { store.insert_audit_key(wrapped(&format!("audit-{i}"))).await }
        });
        let results = race(racers.collect()).await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Ok(true) => Some(i),
                Ok(false) => None,
                Err(err) => fail(format!("insert_audit_key failed: {err}")),
            })
            .collect();
        let [winner] = winners.as_slice() else {
            fail(format!(
                "{RACERS} concurrent insert_audit_key calls succeeded {} times (expected exactly 1)",
                winners.len()
            ));
        };
        let stored = must("load_audit_key", self.store.load_audit_key().await);
        if stored != Some(wrapped(&format!("audit-{winner}"))) {
            fail("load_audit_key does not return the audit key that was inserted");
        }
        // Re-wrapping the audit key is conditional on the old bytes.
        let stale = wrapped("not-the-audit-key");
        let audit = self.audit(AuditEvent::KeyRewrapped, "", 0);
        if must(
            "rewrap_audit_key",
            self.store
                .rewrap_audit_key(&stale, wrapped("audit-new"), &audit)
                .await,
        ) {
            fail("rewrap_audit_key replaced the audit key although the old bytes did not match");
        }
        let old = wrapped(&format!("audit-{winner}"));
        let audit = self.audit(AuditEvent::KeyRewrapped, "", 0);
        if !must(
            "rewrap_audit_key",
            self.store
                .rewrap_audit_key(&old, wrapped("audit-new"), &audit)
                .await,
        ) {
            fail("rewrap_audit_key with the right old bytes did not replace the audit key");
        }
        self.expected.push(AuditEvent::KeyRewrapped.as_str());
        if must("load_audit_key", self.store.load_audit_key().await) != Some(wrapped("audit-new")) {
            fail("after rewrap_audit_key, load_audit_key returns the old key");
        }
    }

    /// Version creation is insert-if-absent, one winner per version, no gaps.
    async fn creation(&mut self, t: &str) {
        let mut generation_before = 0;
        for version in [1, 2] {
            let event = if version == 1 {
                AuditEvent::TenantCreated
            } else {
                AuditEvent::KeyRotated
            };
            let racers = (0..RACERS).map(|i| {
                let store = self.store.clone();
                let audit = self.racer_audit(event, t, version);
                async move {
                    let new = new_version(version, &format!("v{version}-{i}"));
                    store
                        .insert_key_version(&audit.tenant, new, &audit.get())
                        .await
                }
            });
            let results = race(racers.collect()).await;
            let mut winners = Vec::new();
            for (i, result) in results.into_iter().enumerate() {
                match result {
                    Ok(InsertOutcome::Inserted) => winners.push(i),
                    Ok(InsertOutcome::AlreadyExists) => {}
                    Ok(other) => fail(format!("creating version {version} gave {other:?}")),
                    Err(err) => fail(format!("creating version {version} failed: {err}")),
                }
            }
            let [winner] = winners.as_slice() else {
                fail(format!(
                    "{RACERS} concurrent creations of version {version} inserted {} times \
                     (expected exactly 1)",
                    winners.len()
                ));
            };
            self.expected.push(event.as_str());
            let previous = (version > 1).then_some(generation_before);
            generation_before = self
                .advanced(t, previous, &format!("creating version {version}"))
                .await;
            let record = must("load_tenant", self.store.load_tenant(t).await)
                .unwrap_or_else(|| fail("a created tenant does not load"));
            let key = record
                .keys
                .iter()
                .find(|k| k.version == version)
                .unwrap_or_else(|| fail(format!("version {version} is missing after creation")));
            if key.state != KeyState::Active
                || key.wrapped.as_ref() != Some(&wrapped(&format!("v{version}-{winner}")))
            {
                fail(format!(
                    "version {version} does not hold the winning creation's wrapped key, active"
                ));
            }
            if record.latest_version() != version || record.keys.len() != version as usize {
                fail(format!(
                    "after creating version {version} the tenant has {:?}",
                    record.keys.iter().map(|k| k.version).collect::<Vec<_>>()
                ));
            }
        }
        let audit = self.audit(AuditEvent::KeyRotated, t, 4);
        match self
            .store
            .insert_key_version(t, new_version(4, "gap"), &audit)
            .await
        {
            Err(Error::Refused { .. }) => {}
            other => fail(format!(
                "creating version 4 after version 2 (a gap) gave {} instead of refused",
                describe_result(&other)
            )),
        }
        let audit = self.audit(AuditEvent::KeyRotated, t, 1);
        match must(
            "insert_key_version",
            self.store
                .insert_key_version(t, new_version(1, "again"), &audit)
                .await,
        ) {
            InsertOutcome::AlreadyExists => {}
            other => fail(format!("re-creating an existing version gave {other:?}")),
        }
    }

    /// State changes are compare-and-set: one winner, none on the primary,
    /// none from the wrong state; each bumps the generation.
    async fn state_changes(&mut self, t: &str) {
        let before = self.generation(t).await;
        let audit = self.audit(AuditEvent::KeyDisabled, t, 2);
        if must(
            "update_key_state",
            self.store
                .update_key_state(t, 2, KeyState::Active, KeyState::Disabled, &audit)
                .await,
        ) {
            fail("the latest (primary) version was disabled");
        }
        let racers = (0..RACERS).map(|_| {
            let store = self.store.clone();
            let audit = self.racer_audit(AuditEvent::KeyDisabled, t, 1);
            async move {
                let (from, to) = (KeyState::Active, KeyState::Disabled);
                store
                    .update_key_state(&audit.tenant, 1, from, to, &audit.get())
                    .await
            }
        });
        let won = race(racers.collect())
            .await
            .into_iter()
            .map(|r| must("update_key_state", r))
            .filter(|won| *won)
            .count();
        if won != 1 {
            fail(format!(
                "{RACERS} concurrent Active -> Disabled changes of version 1 succeeded {won} \
                 times (expected exactly 1)"
            ));
        }
        self.expected.push(AuditEvent::KeyDisabled.as_str());
        let after = self.generation(t).await;
        if after <= before {
            fail("a state change did not advance the tenant's generation");
        }
        let audit = self.audit(AuditEvent::KeyDestroyed, t, 1);
        if must(
            "update_key_state",
            self.store
                .update_key_state(t, 1, KeyState::Active, KeyState::Destroyed, &audit)
                .await,
        ) {
            fail("a change from Active succeeded on a Disabled key");
        }
        if self.generation(t).await != after {
            fail("a refused state change advanced the generation");
        }
        for (from, to, event) in [
            (KeyState::Disabled, KeyState::Active, AuditEvent::KeyEnabled),
            (
                KeyState::Active,
                KeyState::Destroyed,
                AuditEvent::KeyDestroyed,
            ),
        ] {
            let audit = self.audit(event, t, 1);
            if !must(
                "update_key_state",
                self.store.update_key_state(t, 1, from, to, &audit).await,
            ) {
                fail(format!("version 1 {from} -> {to} was refused"));
            }
            self.expected.push(event.as_str());
        }
        let record = must("load_tenant", self.store.load_tenant(t).await)
            .unwrap_or_else(|| fail("the tenant vanished"));
        let v1 = record.keys.iter().find(|k| k.version == 1);
        if !v1.is_some_and(|k| k.state == KeyState::Destroyed && k.wrapped.is_none()) {
            fail("a destroyed version still has its wrapped key (or is not destroyed)");
        }

        let audit = self.audit(AuditEvent::MinDecryptionVersionSet, t, 3);
        if must(
            "set_min_decryption_version",
            self.store.set_min_decryption_version(t, 3, &audit).await,
        ) {
            fail("the minimum decryption version was set above the latest version");
        }
        let before = self.generation(t).await;
        let audit = self.audit(AuditEvent::MinDecryptionVersionSet, t, 2);
        if !must(
            "set_min_decryption_version",
            self.store.set_min_decryption_version(t, 2, &audit).await,
        ) {
            fail("setting the minimum decryption version to the latest was refused");
        }
        self.expected
            .push(AuditEvent::MinDecryptionVersionSet.as_str());
        self.advanced(t, Some(before), "set_min_decryption_version")
            .await;
        let record = must("load_tenant", self.store.load_tenant(t).await);
        if record.map(|r| r.min_decryption_version) != Some(2) {
            fail("the minimum decryption version does not load as set");
        }
    }

    /// Re-wrapping is conditional on the old wrapped bytes.
    async fn rewrap(&mut self, t: &str) {
        let record = must("load_tenant", self.store.load_tenant(t).await)
            .unwrap_or_else(|| fail("the tenant vanished"));
        let Some(old) = record
            .keys
            .iter()
            .find(|k| k.version == 2)
            .and_then(|k| k.wrapped.clone())
        else {
            fail("version 2 has no wrapped key");
        };
        let audit = self.audit(AuditEvent::KeyRewrapped, t, 2);
        if must(
            "rewrap_key",
            self.store
                .rewrap_key(t, 2, &wrapped("stale"), wrapped("rewrapped"), &audit)
                .await,
        ) {
            fail("rewrap_key replaced a key although the old bytes did not match");
        }
        let racers = (0..RACERS).map(|i| {
            let store = self.store.clone();
            let old = old.clone();
            let audit = self.racer_audit(AuditEvent::KeyRewrapped, t, 2);
            async move {
                let new = wrapped(&format!("rewrapped-{i}"));
                store
                    .rewrap_key(&audit.tenant, 2, &old, new, &audit.get())
                    .await
            }
        });
        let won = race(racers.collect())
            .await
            .into_iter()
            .map(|r| must("rewrap_key", r))
            .filter(|won| *won)
            .count();
        if won != 1 {
            fail(format!(
                "{RACERS} concurrent re-wraps from the same old bytes succeeded {won} times \
                 (expected exactly 1)"
            ));
        }
        self.expected.push(AuditEvent::KeyRewrapped.as_str());
    }

    /// Listing pages through wrapped keys in (tenant, version) order, after
    /// the cursor, without destroyed keys.
    async fn listing(&mut self, t: &str) {
        for tenant in ["conformance-b", "conformance-c"] {
            for version in [1, 2] {
                let event = if version == 1 {
                    AuditEvent::TenantCreated
                } else {
                    AuditEvent::KeyRotated
                };
                let audit = self.audit(event, tenant, version);
                let outcome = must(
                    "insert_key_version",
                    self.store
                        .insert_key_version(tenant, new_version(version, "listed"), &audit)
                        .await,
                );
                if outcome != InsertOutcome::Inserted {
                    fail(format!(
                        "creating {tenant} version {version} gave {outcome:?}"
                    ));
                }
                self.expected.push(event.as_str());
            }
        }
        let mut seen = Vec::new();
        let mut after: Option<(String, u32)> = None;
        loop {
            let page = must(
                "list_wrapped_keys",
                self.store
                    .list_wrapped_keys(after.as_ref().map(|(t, v)| (t.as_str(), *v)), 2)
                    .await,
            );
            if page.len() > 2 {
                fail("list_wrapped_keys returned more keys than its limit");
            }
            for stored in &page {
                if stored.key.wrapped.is_none() {
                    fail("list_wrapped_keys returned a key without wrapped bytes");
                }
                seen.push((stored.tenant.clone(), stored.key.version));
            }
            match page.last() {
                Some(last) if page.len() == 2 => {
                    after = Some((last.tenant.clone(), last.key.version));
                }
                _ => break,
            }
        }
        let expected: Vec<(String, u32)> = [
            (t, 2),
            ("conformance-b", 1),
            ("conformance-b", 2),
            ("conformance-c", 1),
            ("conformance-c", 2),
        ]
        .into_iter()
        .map(|(t, v)| (t.to_string(), v))
        .collect();
        if seen != expected {
            fail(format!(
                "list_wrapped_keys paged through {seen:?}, expected {expected:?} (ordered by \
                 tenant then version, destroyed keys left out)"
            ));
        }
    }

    /// Shredding destroys every key at once; a shredded tenant refuses new
    /// versions until it is re-created, once.
    async fn shred_and_recreate(&mut self, t: &str) {
        let before = self.generation(t).await;
        let audit = self.audit(AuditEvent::TenantShredded, t, 0);
        if !must("shred_tenant", self.store.shred_tenant(t, &audit).await) {
            fail("shred_tenant refused a live tenant");
        }
        self.expected.push(AuditEvent::TenantShredded.as_str());
        let before = self.advanced(t, Some(before), "shred_tenant").await;
        let audit = self.audit(AuditEvent::TenantShredded, t, 0);
        if must("shred_tenant", self.store.shred_tenant(t, &audit).await) {
            fail("shredding a shredded tenant succeeded again");
        }
        let record = must("load_tenant", self.store.load_tenant(t).await)
            .unwrap_or_else(|| fail("a shredded tenant does not load (it must, as shredded)"));
        if record.shredded_at.is_none()
            || record
                .keys
                .iter()
                .any(|k| k.state != KeyState::Destroyed || k.wrapped.is_some())
        {
            fail("after shred_tenant a key is not destroyed, or keeps its wrapped bytes");
        }
        let audit = self.audit(AuditEvent::KeyRotated, t, 3);
        match must(
            "insert_key_version",
            self.store
                .insert_key_version(t, new_version(3, "after-shred"), &audit)
                .await,
        ) {
            InsertOutcome::Shredded => {}
            other => fail(format!(
                "creating a version of a shredded tenant gave {other:?}"
            )),
        }
        let racers = (0..RACERS).map(|i| {
            let store = self.store.clone();
            let audit = self.racer_audit(AuditEvent::TenantRecreated, t, 3);
            async move {
                let new = new_version(3, &format!("recreated-{i}"));
                store
                    .recreate_tenant(&audit.tenant, new, &audit.get())
                    .await
            }
        });
        let inserted = race(racers.collect())
            .await
            .into_iter()
            .map(|r| must("recreate_tenant", r))
            .filter(|outcome| *outcome == InsertOutcome::Inserted)
            .count();
        if inserted != 1 {
            fail(format!(
                "{RACERS} concurrent re-creations succeeded {inserted} times (expected exactly 1)"
            ));
        }
        self.expected.push(AuditEvent::TenantRecreated.as_str());
        self.advanced(t, Some(before), "recreate_tenant").await;
        let record = must("load_tenant", self.store.load_tenant(t).await)
            .unwrap_or_else(|| fail("a re-created tenant does not load"));
        if record.shredded_at.is_some() || record.latest_version() != 3 {
            fail("a re-created tenant is still shredded, or its new version is not 3");
        }
    }

    /// One entry per change, in the order the changes happened, numbered from
    /// 1 without gaps, each chained to the one before.
    async fn audit_chain(&self) -> Vec<AuditEntry> {
        let entries = must("audit_entries", self.store.audit_entries(0, 10_000).await);
        let events: Vec<&str> = entries.iter().map(|e| e.event.as_str()).collect();
        if events != self.expected {
            fail(format!(
                "the audit log holds {events:?}, expected one entry per change: {:?}",
                self.expected
            ));
        }
        let mut verifier = Verifier::new(&self.key);
        for entry in &entries {
            if !verifier.check(entry) {
                break;
            }
        }
        let report = verifier.finish();
        if let Some(broken) = &report.broken {
            fail(format!(
                "the audit chain does not verify at entry {}: {}",
                broken.seq, broken.reason
            ));
        }
        // A store that keeps a head apart from the log keeps it current.
        if let Some((seq, mac)) = must("audit_head", self.store.audit_head().await) {
            let last = entries.last().map(|e| (e.seq, e.mac));
            if last != Some((seq, mac)) {
                fail(format!(
                    "audit_head names entry {seq}, but the log's newest entry is {:?}",
                    last.map(|(seq, _)| seq)
                ));
            }
        }
        // Paging by sequence number returns the same entries.
        let page = must("audit_entries", self.store.audit_entries(2, 3).await);
        let seqs: BTreeSet<u64> = page.iter().map(|e| e.seq).collect();
        if seqs != BTreeSet::from([3, 4, 5]) {
            fail(format!(
                "audit_entries(after 2, limit 3) returned entries {seqs:?}"
            ));
        }
        entries
    }

    /// Pruning is conditional on the anchor's MAC and leaves a chain that
    /// still verifies from the anchor.
    async fn prune(&self) {
        let entries = self.audit_chain().await;
        let Some(through) = entries.get(2) else {
            fail("the audit log has fewer than 3 entries");
        };
        let audit = AuditAppend::new(
            &self.key,
            AuditEvent::AuditPruned,
            "",
            0,
            Some("conformance"),
            pruned_detail(through),
            crate::Timestamp::now(),
        )
        .unwrap_or_else(|e| fail(e));
        let wrong = [0u8; crate::audit::AUDIT_MAC_LEN];
        if must(
            "prune_audit",
            self.store.prune_audit(through.seq, &wrong, &audit).await,
        ) != 0
        {
            fail("prune_audit deleted entries although the anchor MAC did not match");
        }
        let deleted = must(
            "prune_audit",
            self.store
                .prune_audit(through.seq, &through.mac, &audit)
                .await,
        );
        if deleted != 3 {
            fail(format!(
                "prune_audit through entry 3 deleted {deleted} entries"
            ));
        }
        let left = must("audit_entries", self.store.audit_entries(0, 10_000).await);
        if left.first().map(|e| e.seq) != Some(4)
            || left.last().map(|e| e.event.as_str()) != Some(AuditEvent::AuditPruned.as_str())
        {
            fail("after pruning, the log does not start at entry 4 and end with audit.pruned");
        }
        let mut verifier = Verifier::new(&self.key);
        for entry in &left {
            verifier.note_anchor(entry);
        }
        for entry in &left {
            if !verifier.check(entry) {
                break;
            }
        }
        if let Some(broken) = verifier.finish().broken {
            fail(format!(
                "the pruned audit chain does not verify: {}",
                broken.reason
            ));
        }
    }
}

//! Root keys: re-wrapping every tenant key under the current root key, root-key epochs, tenants bound to root keys of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::report::{RewrapReport, RootKeyCheck, RootKeyRetirement, WrappedSample};
use super::{KeyAdmin, PAGE};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::provider::{WrapContext, WrappedKey};
use crate::telemetry;
use crate::time::Timestamp;

/// Whether `root_key_id` is one of the root keys of the tenant's own provider
/// in `sealer`, for the tenant key `ctx`.
pub(super) fn own_is(sealer: &Keys, ctx: &WrapContext<'_>, root_key_id: &str) -> bool {
    sealer
        .own_root(ctx)
        .is_some_and(|own| own.root_key_ids().contains(&root_key_id))
}

/// Collects, from one audit entry, the root keys it names as this store's
/// (made, restated, or re-wrapped from or to) and those it records as
/// destroyed.
pub(super) fn root_key_names(
    entry: &crate::audit::AuditEntry,
    named: &mut BTreeSet<String>,
    destroyed: &mut BTreeSet<String>,
) {
    let event = entry.event.as_str();
    if event == AuditEvent::RootKeyCreated.as_str() {
        destroyed.remove(&entry.detail);
        named.insert(entry.detail.clone());
    } else if event == AuditEvent::RootKeyNamed.as_str() {
        named.insert(entry.detail.clone());
    } else if event == AuditEvent::RootKeyDestroyed.as_str() {
        if let Some(id) = entry.detail.split(' ').next() {
            destroyed.insert(id.to_string());
        }
    } else if event == AuditEvent::KeyRewrapped.as_str()
        && let Some((from, to)) = entry.detail.split_once(" -> ")
    {
        // `<from> -> <to>`, or `audit key <from> -> <to>`.
        named.insert(from.strip_prefix("audit key ").unwrap_or(from).to_string());
        named.insert(to.to_string());
    }
}

impl KeyAdmin {
    /// Re-wraps every stored key (every tenant key version that is not
    /// destroyed, and the audit-chain key) under root key `target`, which must
    /// be the provider's current root key. Sealed values are not touched.
    ///
    /// # Security
    ///
    /// Remove the old root key only after a run whose report
    /// [`is_complete`](RewrapReport::is_complete), started after every process
    /// was reconfigured with `target` as its current key: a process still
    /// wrapping under the old key creates keys this run never saw.
    ///
    /// Resumable and idempotent: keys already under `target` are skipped, and
    /// each key is swapped atomically, so an interrupted run leaves every key
    /// under either root and every value readable (keep the old root key
    /// configured as a previous key until a run reports nothing left to do).
    ///
    /// Tenants bound to a root key of their own stay on it: with this
    /// sealer's binding ([`SealerBuilder::tenant_root_key`](crate::SealerBuilder::tenant_root_key)),
    /// their keys go to their own root key's current id instead of `target`
    /// (completing [`bind_tenant_root`](KeyAdmin::bind_tenant_root)); without
    /// it, keys under a root key the audit log records as their tenant's own
    /// (`tenant.root_bound`) are left there and counted in
    /// [`RewrapReport::own_root_keys`]: no key under a tenant's own root
    /// key is moved to the shared one. (Keys of theirs still under a shared
    /// root key, from before the binding, move to `target` as the others
    /// do.) A tenant's own key that refuses (revoked) holds back only that
    /// tenant's keys ([`RewrapReport::own_root_unavailable`]).
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if `target` is not the current root key (nothing is
    /// changed); [`Error::RootKeyNotConfigured`] if a key is under a root key the
    /// provider does not hold; [`Error::UnwrapFailed`] if a key already under
    /// `target` does not unwrap (the provider's `target` is another key than
    /// the one the store's keys were wrapped with: one such key is unwrapped
    /// to prove it); provider and store errors (the keys done so far stay
    /// done).
    pub async fn rewrap_all(&self, target: &str) -> Result<RewrapReport> {
        let label = self.keys.label_tenant;
        telemetry::admin("rewrap_all", "", label, async move {
            let inner = &self.keys;
            let current = inner.provider.current_root_key_id();
            if current != target {
                return Err(Error::refused(format!(
                    "cannot re-wrap under root key `{target}`: the key provider's current root \
                     key is `{current}`; configure `{target}` as the current root key first"
                )));
            }
            let mut report = RewrapReport::default();
            let sealer = &*self.keys;
            let bound_store = sealer.store_identity().await?.is_some();
            // Done with: under `target` and, for a store with an identity,
            // bound to it (a key wrapped before is re-wrapped with the store's
            // id in its context, under the same root key).
            let done_under = |w: &WrappedKey, target: &str| {
                w.root_key_id() == target && (w.is_store_bound() || !bound_store)
            };
            let done = |w: &WrappedKey| done_under(w, target);
            // The root keys proven by unwrapping one key already under them.
            let mut proven: BTreeSet<String> = BTreeSet::new();
            // (tenant, root key) pairs the audit log records as a tenant's
            // own root key, read when first needed.
            let mut recorded_own: Option<BTreeSet<(String, String)>> = None;
            // A key already under `target` is skipped, so a root key file
            // holding another key under the right id would pass unnoticed:
            // the first such key is unwrapped to prove `target` (and each
            // tenant's own root key).
            let mut unbound_left = false;

            let audit_key = inner.store.load_audit_key().await?;
            if let Some(old) = &audit_key
                && done(old)
            {
                drop(sealer.unwrap_key(old, WrapContext::audit_key(1)).await?);
                proven.insert(target.to_string());
            }
            if let Some(old) = audit_key
                && !done(&old)
            {
                let ctx = WrapContext::audit_key(1);
                let key = sealer.unwrap_key(&old, ctx).await?;
                let new = sealer.wrap_key(&key, ctx).await?;
                drop(key);
                let audit = self
                    .audit(
                        AuditEvent::KeyRewrapped,
                        "",
                        0,
                        format!("audit key {} -> {target}", old.root_key_id()),
                    )
                    .await?;
                report.audit_key_rewrapped =
                    inner.store.rewrap_audit_key(&old, new, &audit).await?;
                report.audit_key_skipped = !report.audit_key_rewrapped;
                unbound_left |= report.audit_key_skipped && !old.is_store_bound();
            }

            let mut after: Option<(String, u32)> = None;
            loop {
                let page = inner
                    .store
                    .list_wrapped_keys(after.as_ref().map(|(t, v)| (t.as_str(), *v)), PAGE)
                    .await?;
                let full = page.len() >= PAGE;
                for stored in page {
                    report.examined += 1;
                    after = Some((stored.tenant.clone(), stored.key.version));
                    let Some(old) = stored.key.wrapped else {
                        continue;
                    };
                    let ctx = WrapContext::tenant_key(&stored.tenant, stored.key.version);
                    // A tenant bound to its own root key goes there.
                    let own = sealer.own_root(&ctx).map(|p| p.current_root_key_id());
                    let key_target = own.unwrap_or(target);
                    if done_under(&old, key_target) {
                        if !proven.contains(key_target) {
                            match sealer.unwrap_key(&old, ctx).await {
                                Ok(key) => {
                                    drop(key);
                                    proven.insert(key_target.to_string());
                                }
                                // A revoked (or replaced) own key is proven
                                // another time; its tenant's keys wait.
                                Err(
                                    e @ (Error::TenantRootKeyUnavailable { .. }
                                    | Error::UnwrapFailed { .. }),
                                ) if own.is_some() => {
                                    tracing::warn!(
                                        tenant = %stored.tenant,
                                        error = %e,
                                        "tenant's own root key not proven"
                                    );
                                    report.own_root_unavailable += 1;
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        report.already_current += 1;
                        continue;
                    }
                    let key = match sealer.unwrap_key(&old, ctx).await {
                        Ok(key) => key,
                        // Not held here: left alone if it is its tenant's
                        // own root key (this sealer lacks the binding).
                        // (Bound or not: an earlier key of its own that this
                        // process does not hold is still not the shared
                        // root key's to move.)
                        Err(Error::RootKeyNotConfigured { id }) => {
                            if recorded_own.is_none() {
                                recorded_own = Some(self.recorded_own_roots().await?);
                            }
                            let owner = (stored.tenant.clone(), old.root_key_id().to_string());
                            if recorded_own.as_ref().is_some_and(|r| r.contains(&owner)) {
                                report.own_root_keys += 1;
                                unbound_left |= !old.is_store_bound();
                                continue;
                            }
                            return Err(Error::RootKeyNotConfigured { id });
                        }
                        // The tenant's own key is revoked, or its owner
                        // replaced it (its keys no longer unwrap under it):
                        // its keys wait, the other tenants' go on. Under a
                        // shared root key still, the run is not complete.
                        Err(e @ Error::TenantRootKeyUnavailable { .. }) => {
                            tracing::warn!(tenant = %stored.tenant, error = %e, "key left as it is");
                            report.own_root_unavailable += 1;
                            if old.root_key_id() == key_target
                                || own_is(sealer, &ctx, old.root_key_id())
                            {
                                report.own_root_keys += 1;
                            } else {
                                report.skipped += 1;
                            }
                            unbound_left |= !old.is_store_bound();
                            continue;
                        }
                        Err(e @ Error::UnwrapFailed { .. })
                            if own_is(sealer, &ctx, old.root_key_id()) =>
                        {
                            tracing::warn!(tenant = %stored.tenant, error = %e, "key left as it is");
                            report.own_root_unavailable += 1;
                            report.own_root_keys += 1;
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    match self
                        .rewrap_one(&stored.tenant, stored.key.version, &old, key, key_target)
                        .await
                    {
                        Ok(true) => report.rewrapped += 1,
                        Ok(false) => {
                            report.skipped += 1;
                            unbound_left |= !old.is_store_bound();
                        }
                        // The tenant's own key refuses to wrap: the key
                        // stays where it is (under a shared root key).
                        Err(e @ Error::TenantRootKeyUnavailable { .. }) => {
                            tracing::warn!(tenant = %stored.tenant, error = %e, "key left as it is");
                            report.own_root_unavailable += 1;
                            report.skipped += 1;
                            unbound_left |= !old.is_store_bound();
                        }
                        Err(e) => return Err(e),
                    }
                }
                if !full {
                    break;
                }
            }
            // Every key bound to the store: it stops accepting keys wrapped
            // without its id, so none copied in from another store unwraps.
            if report.is_complete()
                && !unbound_left
                && let Some(identity) = inner.store.store_identity().await?
                && identity.accepts_unbound
            {
                let audit = self
                    .audit(AuditEvent::UnboundWrapsRefused, "", 0, String::new())
                    .await?;
                report.unbound_refused = inner.store.refuse_unbound_wraps(&audit).await?;
            }
            tracing::info!(
                target,
                rewrapped = report.rewrapped,
                already_current = report.already_current,
                skipped = report.skipped,
                "root key re-wrap finished"
            );
            Ok(report)
        })
        .await
    }

    /// Moves tenant `tenant` onto the root key of its own that this sealer
    /// binds it to ([`SealerBuilder::tenant_root_key`](crate::SealerBuilder::tenant_root_key)):
    /// records the binding in the audit log (`tenant.root_bound`), then
    /// re-wraps each of its key versions that is under another root key (the
    /// shared one, or an earlier key of its own). No other tenant's key is
    /// touched, and sealed values are not.
    ///
    /// Resumable and idempotent, like [`rewrap_all`](KeyAdmin::rewrap_all):
    /// the report counts versions already under the tenant's root key as
    /// [`already_current`](RewrapReport::already_current). The tenant's
    /// values keep opening throughout.
    ///
    /// # Security
    ///
    /// Once the report [`is_complete`](RewrapReport::is_complete), the
    /// tenant's keys in the database depend on its own root key alone; keys
    /// in backups taken before stay under the shared root key until that one
    /// is retired ([`retire_root_keys`](KeyAdmin::retire_root_keys)), so the
    /// tenant's control over its data reaches its backups one backup
    /// retention after the next root-key epoch.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if this sealer does not bind the tenant to a root
    /// key of its own; [`Error::UnknownTenant`]; [`Error::TenantShredded`];
    /// [`Error::TenantRootKeyUnavailable`] if the tenant's root key cannot
    /// wrap or unwrap; [`Error::RootKeyNotConfigured`] or
    /// [`Error::UnwrapFailed`] as for [`rewrap_all`](KeyAdmin::rewrap_all);
    /// provider and store errors (the versions done so far stay done).
    pub async fn bind_tenant_root(&self, tenant: &str) -> Result<RewrapReport> {
        let label = self.keys.label_tenant;
        telemetry::admin("bind_tenant_root", tenant, label, async move {
            let sealer = &*self.keys;
            let Some(own) = sealer.tenant_roots.get(tenant) else {
                return Err(Error::refused(format!(
                    "tenant `{tenant}` is not bound to a root key of its own in this sealer: \
                     bind it with SealerBuilder::tenant_root_key first"
                )));
            };
            let target = own.current_root_key_id();
            let record = self.live(tenant).await?;
            let bound_store = sealer.store_identity().await?.is_some();
            // Recorded unless the log already has it and nothing moves.
            let moves = record.keys.iter().any(|k| {
                k.wrapped.as_ref().is_some_and(|w| {
                    w.root_key_id() != target || (bound_store && !w.is_store_bound())
                })
            });
            let pair = (tenant.to_string(), target.to_string());
            if moves || !self.recorded_own_roots().await?.contains(&pair) {
                let audit = self
                    .audit(
                        AuditEvent::TenantRootBound,
                        tenant,
                        record.latest_version(),
                        target.to_string(),
                    )
                    .await?;
                sealer.store.record_audit(&audit).await?;
            }
            let mut report = RewrapReport::default();
            let mut proven = false;
            for stored in record.keys {
                let Some(old) = stored.wrapped else { continue };
                report.examined += 1;
                let ctx = WrapContext::tenant_key(tenant, stored.version);
                if old.root_key_id() == target && (old.is_store_bound() || !bound_store) {
                    if !proven {
                        drop(sealer.unwrap_key(&old, ctx).await?);
                        proven = true;
                    }
                    report.already_current += 1;
                    continue;
                }
                let key = sealer.unwrap_key(&old, ctx).await?;
                if self
                    .rewrap_one(tenant, stored.version, &old, key, target)
                    .await?
                {
                    report.rewrapped += 1;
                } else {
                    report.skipped += 1;
                }
            }
            sealer.cache.invalidate(tenant);
            tracing::info!(
                tenant,
                root_key = target,
                rewrapped = report.rewrapped,
                already_current = report.already_current,
                skipped = report.skipped,
                "tenant bound to its own root key"
            );
            Ok(report)
        })
        .await
    }

    /// Wraps `key` (tenant `tenant` version `version`, unwrapped from `old`)
    /// again (under its tenant's root key: `target`), and swaps it in if the
    /// stored key is still `old`. Whether it was swapped.
    pub(super) async fn rewrap_one(
        &self,
        tenant: &str,
        version: u32,
        old: &WrappedKey,
        key: crate::provider::TenantKey,
        target: &str,
    ) -> Result<bool> {
        let sealer = &*self.keys;
        let new = sealer
            .wrap_key(&key, WrapContext::tenant_key(tenant, version))
            .await?;
        drop(key);
        sealer
            .record_own_root(tenant, version, &new, self.actor.as_deref())
            .await?;
        let audit = self
            .audit(
                AuditEvent::KeyRewrapped,
                tenant,
                version,
                format!("{} -> {target}", old.root_key_id()),
            )
            .await?;
        sealer
            .store
            .rewrap_key(tenant, version, old, new, &audit)
            .await
    }

    /// The (tenant, root key) pairs the verified audit log records as a
    /// tenant's own root key (`tenant.root_bound`).
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if the chain is broken (a binding past the break
    /// would go unseen); store errors.
    pub(super) async fn recorded_own_roots(&self) -> Result<BTreeSet<(String, String)>> {
        let mut out = BTreeSet::new();
        let (verifier, _) = self
            .walk_audit_with(None, &mut |e| {
                if e.event == AuditEvent::TenantRootBound.as_str() {
                    out.insert((e.tenant.clone(), e.detail.clone()));
                }
            })
            .await?;
        if let Some(broken) = verifier.finish().broken {
            return Err(Error::refused(format!(
                "the audit chain is broken at entry {} ({}), so the tenants' own root keys it \
                 records cannot be trusted: run verify_audit and investigate",
                broken.seq, broken.reason
            )));
        }
        Ok(out)
    }

    /// Proves that the provider holds the root keys the stored keys are
    /// wrapped under: for every root key id found in the store, one key
    /// wrapped under it (the audit-chain key first) is unwrapped. A key file
    /// that holds another key under the right id fails here, before any job
    /// relies on it. Reads every stored key's root key id; unwraps one key
    /// per root key id.
    ///
    /// A tenant's own root key (bring your own key) that its owner revoked,
    /// or that the audit log records as the tenant's own and this sealer
    /// does not bind, is listed in [`RootKeyCheck::own_roots_unproven`]
    /// instead of failing the check.
    ///
    /// # Errors
    ///
    /// [`Error::UnwrapFailed`] naming the key and root key id when a root key
    /// is not the one its keys were wrapped with; [`Error::RootKeyNotConfigured`]
    /// when keys are under a root key the provider does not hold; provider
    /// and store errors ([`Error::Schema`] before the store's tables exist).
    pub async fn verify_root_keys(&self) -> Result<RootKeyCheck> {
        let label = self.keys.label_tenant;
        telemetry::admin("verify_root_keys", "", label, async move {
            let mut check = RootKeyCheck::default();
            let mut recorded_own = None;
            for (root, (keys, (owner, wrapped))) in self.scan_roots().await? {
                let ctx = match &owner {
                    Some((tenant, version)) => WrapContext::tenant_key(tenant, *version),
                    None => WrapContext::audit_key(1),
                };
                match self.keys.unwrap_key(&wrapped, ctx).await {
                    Ok(key) => drop(key),
                    // A tenant's own root key its owner revoked: that
                    // tenant's matter, not the store's.
                    Err(e @ Error::TenantRootKeyUnavailable { .. }) => {
                        check.own_roots_unproven.insert(root.clone(), e.to_string());
                    }
                    Err(Error::RootKeyNotConfigured { id }) => {
                        let Some((tenant, _)) = &owner else {
                            return Err(Error::RootKeyNotConfigured { id });
                        };
                        if recorded_own.is_none() {
                            recorded_own = Some(self.recorded_own_roots().await?);
                        }
                        let pair = (tenant.clone(), root.clone());
                        if !recorded_own.as_ref().is_some_and(|r| r.contains(&pair)) {
                            return Err(Error::RootKeyNotConfigured { id });
                        }
                        check.own_roots_unproven.insert(
                            root.clone(),
                            format!(
                                "tenant `{tenant}`'s own root key, which this process does not \
                                 bind (SealerBuilder::tenant_root_key)"
                            ),
                        );
                    }
                    Err(e) => return Err(e),
                }
                check.keys_per_root.insert(root, keys);
            }
            Ok(check)
        })
        .await
    }

    /// Starts a new root-key epoch: the provider creates a new root key
    /// ([`KeyProvider::create_root_key`](crate::provider::KeyProvider::create_root_key))
    /// and the audit log records it (`root_key.created`). Returns its id.
    ///
    /// This sealer's provider keeps wrapping under the old key: build a
    /// sealer on a new provider (the runner's `rotate-root` does, then
    /// re-wraps), call [`KeyAdmin::rewrap_all`] with the new id, and restart
    /// the application's processes so they wrap under it. Once no live key
    /// is under the old root key, [`KeyAdmin::retire_root_keys`] destroys it
    /// after the backup retention.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if the provider cannot create root keys, or the
    /// store cannot record audit entries on their own; provider and store
    /// errors.
    pub async fn create_root_key(&self) -> Result<String> {
        let label = self.keys.label_tenant;
        telemetry::admin("create_root_key", "", label, async move {
            let id = self.keys.provider.create_root_key().await?;
            let audit = self
                .audit(AuditEvent::RootKeyCreated, "", 0, id.clone())
                .await?;
            self.keys.store.record_audit(&audit).await?;
            tracing::info!(root_key = %id, "root key created for a new epoch");
            Ok(id)
        })
        .await
    }

    /// Retires the root keys no live key is wrapped under, in two steps a
    /// scheduled run takes one at a time:
    ///
    /// 1. A root key other than the current one that no stored key (nor the
    ///    audit-chain key) is wrapped under is marked unused in the audit log
    ///    (`root_key.unused`): from then on no new backup holds a key wrapped
    ///    under it.
    /// 2. Once marked at least `retention` ago (your backup retention: every
    ///    backup that can hold a key wrapped under it has then expired), and
    ///    after proving again that no live key is wrapped under it, it is
    ///    destroyed in the provider
    ///    ([`KeyProvider::destroy_root_key`](crate::provider::KeyProvider::destroy_root_key))
    ///    and the log records when it stops unwrapping (`root_key.destroyed`).
    ///
    /// A key wrapped under a marked root key that comes back (a restored
    /// backup, re-wrapped since) cancels the mark: the retention starts again
    /// once it is gone. Root keys are taken oldest first. Only root keys this
    /// store's audit log names (created by [`KeyAdmin::create_root_key`],
    /// re-wrapped from or to by [`KeyAdmin::rewrap_all`], or restated by
    /// [`KeyAdmin::prune_audit`]) are retired, unless the provider's root
    /// keys are all its store's: a key the provider holds that this store
    /// never used, such as another store's epoch key under a name both
    /// match, is listed in [`RootKeyRetirement::not_this_stores`] and left
    /// alone.
    ///
    /// # Security
    ///
    /// This is what makes an erasure reach every backup: a shredded tenant's
    /// keys in a backup unwrap under a root key that no longer exists. It is
    /// also irreversible for every backup older than `retention`: a backup
    /// kept longer than `retention` loses every key wrapped under a destroyed
    /// root key.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if `retention` is shorter than the sealer's minimum
    /// audit retention (the same floor, against unit mistakes), or the audit
    /// chain is broken (nothing is destroyed); provider and store errors.
    /// A root key the provider refuses to destroy is reported in
    /// [`RootKeyRetirement::blocked`], not as an error.
    pub async fn retire_root_keys(&self, retention: Duration) -> Result<RootKeyRetirement> {
        let label = self.keys.label_tenant;
        telemetry::admin("retire_root_keys", "", label, async move {
            let minimum = self.keys.min_audit_retention();
            if retention < minimum {
                return Err(Error::refused(format!(
                    "refusing a backup retention of {}s: the minimum is {}s (a 35-day retention \
                     is `Duration::from_secs(35 * 86_400)`)",
                    retention.as_secs(),
                    minimum.as_secs()
                )));
            }
            let provider = &self.keys.provider;
            let current = provider.current_root_key_id().to_string();
            let mut candidates: Vec<String> = provider
                .root_key_ids()
                .into_iter()
                .filter(|id| *id != current)
                .map(str::to_string)
                .collect();
            // The provider lists its keys newest first.
            candidates.reverse();
            let mut report = RootKeyRetirement::default();
            if candidates.is_empty() {
                return Ok(report);
            }
            // When each root key was marked unused, from the verified log; a
            // re-wrap away from it after the mark means it was in use again.
            let mut marks: BTreeMap<String, Timestamp> = BTreeMap::new();
            let mut destroyed: BTreeSet<String> = BTreeSet::new();
            // Every root key the log says this store made or used.
            let mut named: BTreeSet<String> = BTreeSet::new();
            let mut newest = Timestamp::from_unix_seconds(i64::MIN);
            // Read before the log, as verify_audit does: a log whose newest
            // entries (a re-wrap that cancels a mark) were deleted is broken.
            let head = self.keys.store.audit_head().await?;
            let mut head_mac = None;
            let (mut verifier, _) = self
                .walk_audit_with(None, &mut |e| {
                    if head.is_some_and(|(seq, _)| seq == e.seq) {
                        head_mac = Some(e.mac);
                    }
                    newest = newest.max(e.at);
                    let event = e.event.as_str();
                    if event == AuditEvent::RootKeyUnused.as_str() {
                        marks.insert(e.detail.clone(), e.at);
                    } else if event == AuditEvent::RootKeyCreated.as_str() {
                        // An id made again starts afresh (root_key_names
                        // forgets its destruction).
                        marks.remove(&e.detail);
                    } else if event == AuditEvent::KeyRewrapped.as_str()
                        && let Some((from, _)) = e.detail.split_once(" -> ")
                    {
                        // `<from> -> <to>`, or `audit key <from> -> <to>`.
                        marks.remove(from.strip_prefix("audit key ").unwrap_or(from));
                    }
                    root_key_names(e, &mut named, &mut destroyed);
                })
                .await?;
            if let Some(head) = head {
                verifier.check_head(head, head_mac);
            }
            if let Some(broken) = verifier.finish().broken {
                return Err(Error::refused(format!(
                    "the audit chain is broken at entry {} ({}); no root key was retired",
                    broken.seq, broken.reason
                )));
            }
            // A clock behind the log's would start retentions late and end
            // them early.
            if self.keys.now() < newest {
                return Err(Error::refused(format!(
                    "this host's clock is behind the audit log's newest entry ({newest}); no \
                     root key was retired: fix the clock"
                )));
            }
            let mut in_use = self.keys_per_root().await?;
            let now = self.keys.now();
            let retention_secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
            // A provider that holds only this store's root keys (a Transit
            // key) needs no name: its versions are this store's.
            let exclusive = provider.root_keys_exclusive();
            for id in candidates {
                // Before the destroyed check: a root key destroyed and then
                // brought back (a cancelled KMS deletion, a key file restored
                // from a copy) with keys under it is shown, not skipped.
                if let Some(&keys) = in_use.get(&id) {
                    report.in_use.push((id, keys));
                    continue;
                }
                if destroyed.contains(&id) {
                    continue;
                }
                if !exclusive && !named.contains(&id) {
                    tracing::info!(
                        root_key = %id,
                        "root key not named by this store's audit log: not retired"
                    );
                    report.not_this_stores.push(id);
                    continue;
                }
                let Some(&marked) = marks.get(&id) else {
                    let audit = self
                        .audit(AuditEvent::RootKeyUnused, "", 0, id.clone())
                        .await?;
                    self.keys.store.record_audit(&audit).await?;
                    tracing::info!(root_key = %id, "root key unused: its backup retention starts");
                    report.marked_unused.push(id);
                    continue;
                };
                let due = marked.unix_seconds().saturating_add(retention_secs);
                if now.unix_seconds() < due {
                    report.waiting.push((id, Timestamp::from_unix_seconds(due)));
                    continue;
                }
                // Proved again right before: a key may have come back since.
                in_use = self.keys_per_root().await?;
                if let Some(&keys) = in_use.get(&id) {
                    report.in_use.push((id, keys));
                    continue;
                }
                match provider.destroy_root_key(&id).await {
                    Ok(gone) => {
                        let gone = self.keys.clock.on_this_clock(gone);
                        let audit = self
                            .audit(
                                AuditEvent::RootKeyDestroyed,
                                "",
                                0,
                                format!("{id} {}", gone.unix_seconds()),
                            )
                            .await?;
                        self.keys.store.record_audit(&audit).await?;
                        tracing::warn!(root_key = %id, %gone, "root key destroyed");
                        // A process still wrapping under it (not restarted
                        // since the epoch began) may have stored a key in
                        // the moment before: say so, loudly.
                        if let Some(&keys) = self.keys_per_root().await?.get(&id) {
                            return Err(Error::refused(format!(
                                "root key `{id}` was destroyed, but {keys} keys were wrapped \
                                 under it meanwhile by a process still using it as its current \
                                 root key: restore the key from a copy if you have one, restart \
                                 every process on the current epoch's key, and run rewrap-root"
                            )));
                        }
                        report.destroyed.push((id, gone));
                    }
                    Err(Error::Refused { reason }) => report.blocked.push((id, reason)),
                    Err(e) => return Err(e),
                }
            }
            Ok(report)
        })
        .await
    }

    /// How many stored keys (and the audit-chain key) are wrapped under each
    /// root key.
    pub(super) async fn keys_per_root(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .scan_roots()
            .await?
            .into_iter()
            .map(|(root, (keys, _))| (root, keys))
            .collect())
    }

    /// For each root key that stored keys are wrapped under: how many, and
    /// the first of them (the audit-chain key first; its owner `None`, a
    /// tenant key's its tenant and version).
    pub(super) async fn scan_roots(&self) -> Result<BTreeMap<String, (u64, WrappedSample)>> {
        let store = &self.keys.store;
        let mut out: BTreeMap<String, (u64, WrappedSample)> = BTreeMap::new();
        if let Some(wrapped) = store.load_audit_key().await? {
            out.insert(wrapped.root_key_id().to_string(), (1, (None, wrapped)));
        }
        let mut after: Option<(String, u32)> = None;
        loop {
            let page = store
                .list_wrapped_keys(after.as_ref().map(|(t, v)| (t.as_str(), *v)), PAGE)
                .await?;
            let full = page.len() >= PAGE;
            for stored in page {
                after = Some((stored.tenant.clone(), stored.key.version));
                let Some(wrapped) = stored.key.wrapped else {
                    continue;
                };
                out.entry(wrapped.root_key_id().to_string())
                    .or_insert_with(|| (0, (Some((stored.tenant, stored.key.version)), wrapped)))
                    .0 += 1;
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }
}

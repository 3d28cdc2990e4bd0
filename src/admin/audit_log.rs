//! The audit log: reading, verifying (the MAC chain, and the state it describes against the store) and pruning.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::replay::Replay;
use super::root_keys::root_key_names;
use super::{KeyAdmin, PAGE};
use crate::audit::{AuditEntry, AuditEvent, AuditReport, Verifier, pruned_detail};
use crate::error::{Error, Result};
use crate::telemetry;

impl KeyAdmin {
    /// Reads audit entries with sequence numbers after `after`, at most `limit`.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.keys.store.audit_entries(after, limit).await
    }

    /// Walks the whole audit chain and reports the first broken link, if any;
    /// then checks the log's newest entry against the store's own record of
    /// it ([`KeyStore::audit_head`](crate::store::KeyStore::audit_head): a deleted
    /// tail or a wiped log), and every tenant's stored keys against what the
    /// log says happened to them ([`AuditReport::mismatches`]: a key state,
    /// minimum decryption version or key row changed in the store directly).
    /// Loads every tenant the log names.
    ///
    /// # Errors
    ///
    /// Provider errors (the audit key is unwrapped through the root key
    /// provider) and store errors. A broken chain or a mismatch is not an
    /// error: it is reported in [`AuditReport::broken`] and
    /// [`AuditReport::mismatches`].
    pub async fn verify_audit(&self) -> Result<AuditReport> {
        let label = self.keys.label_tenant;
        telemetry::admin("verify_audit", "", label, async move {
            let report = self.check_audit().await?;
            if report.is_intact() {
                return Ok(report);
            }
            // The log and the tenants are read in pages, outside one
            // transaction: a prune or a key change in between can make an
            // intact store look broken. Look once more.
            self.check_audit().await
        })
        .await
    }

    pub(super) async fn check_audit(&self) -> Result<AuditReport> {
        let store = &self.keys.store;
        // Read before the log: entries appended meanwhile come after it.
        let head = store.audit_head().await?;
        let mut replay = Replay::default();
        let mut head_mac = None;
        let (verifier, _) = self
            .walk_audit_with(None, &mut |entry| {
                replay.apply(entry);
                if head.is_some_and(|(seq, _)| seq == entry.seq) {
                    head_mac = Some(entry.mac);
                }
            })
            .await?;
        let mut verifier = verifier;
        if let Some(head) = head {
            verifier.check_head(head, head_mac);
        }
        if verifier.is_broken() {
            return Ok(verifier.finish());
        }
        if verifier.last_seq() == 0 {
            // No entry ever: every key the store holds lacks one.
            replay.mark_complete();
        }
        // Every tenant the log names, and (when the log is whole) every
        // tenant the store holds keys of.
        let mut suspects: Vec<String> = replay.tenants().map(str::to_string).collect();
        if replay.is_complete() {
            for tenant in self.tenants().await? {
                if !replay.knows(&tenant) {
                    suspects.push(tenant);
                }
            }
        }
        // A tenant changed after the walk read the log disagrees with it until
        // the log's newer entries are read too: read them, verified, and look
        // at the tenants that disagreed again, until they agree or the log
        // has nothing newer.
        let mut mismatches = Vec::new();
        for round in 0..5 {
            mismatches.clear();
            for tenant in &suspects {
                let record = store.load_tenant(tenant).await?;
                mismatches.extend(replay.mismatches(tenant, record.as_ref()));
            }
            if let Some(identity) = store.store_identity().await?
                && let Some(m) = replay.store_mismatch(identity.accepts_unbound)
            {
                mismatches.push(m);
            }
            if mismatches.is_empty() || round == 4 {
                break;
            }
            let mut newer = 0;
            loop {
                let page = store.audit_entries(verifier.last_seq(), PAGE).await?;
                let full = page.len() >= PAGE;
                for entry in &page {
                    if !verifier.check(entry) {
                        return Ok(verifier.finish());
                    }
                    replay.apply(entry);
                    newer += 1;
                }
                if !full {
                    break;
                }
            }
            if newer == 0 {
                break;
            }
            suspects = mismatches.iter().map(|m| m.tenant.clone()).collect();
            suspects.sort();
            suspects.dedup();
            suspects.retain(|t| !t.is_empty());
        }
        let mut report = verifier.finish();
        report.mismatches = mismatches;
        Ok(report)
    }

    /// Verifies the chain in order, stopping at the first broken link or, with
    /// `until`, at the first entry at or after that time, calling `each` with
    /// every verified entry. Returns the verifier and the last verified entry
    /// before `until`.
    pub(super) async fn walk_audit_with(
        &self,
        until: Option<i64>,
        each: &mut (dyn FnMut(&AuditEntry) + Send),
    ) -> Result<(Verifier<'_>, Option<AuditEntry>)> {
        let store = &self.keys.store;
        let key = self.keys.audit_key().await?;
        let mut verifier = Verifier::new(key);
        // First pass: prune anchors, which come after the entries they vouch for.
        let mut after = 0;
        loop {
            let page = store.audit_entries(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            page.iter().for_each(|e| verifier.note_anchor(e));
            if page.len() < PAGE {
                break;
            }
        }
        let mut before_until = None;
        let mut after = 0;
        'walk: loop {
            let page = store.audit_entries(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = page.len() >= PAGE;
            for entry in page {
                if until.is_some_and(|t| entry.at.unix_seconds() >= t) {
                    break 'walk;
                }
                if !verifier.check(&entry) {
                    break 'walk;
                }
                each(&entry);
                before_until = Some(entry);
            }
            if !full {
                break;
            }
        }
        Ok((verifier, before_until))
    }

    /// Deletes audit entries older than `older_than` (a 90-day retention is
    /// common), recording the pruning as an entry, so the remaining chain
    /// still verifies. Returns how many entries were deleted.
    ///
    /// The entries to delete are verified first: a chain that is already
    /// broken is never pruned (that would hide the damage).
    ///
    /// What later operations read from the deleted entries is restated after
    /// the cut: the root keys they named as this store's (`root_key.named`,
    /// for [`retire_root_keys`](KeyAdmin::retire_root_keys)), the tenants'
    /// own root keys (`tenant.root_bound`, for
    /// [`erasure_report`](KeyAdmin::erasure_report) and
    /// [`rewrap_all`](KeyAdmin::rewrap_all)), and the store's refusal of
    /// keys wrapped without its id.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if `older_than` is shorter than the sealer's minimum
    /// audit retention (one day unless configured with
    /// [`SealerBuilder::min_audit_retention`](crate::SealerBuilder::min_audit_retention)
    /// — `Duration::from_secs(90)` is 90 seconds, not 90 days), or if the chain
    /// is broken before the cut-off (nothing is deleted: run
    /// [`verify_audit`](KeyAdmin::verify_audit) and investigate); provider and
    /// store errors.
    pub async fn prune_audit(&self, older_than: Duration) -> Result<u64> {
        let label = self.keys.label_tenant;
        telemetry::admin("prune_audit", "", label, async move {
            let minimum = self.keys.min_audit_retention();
            if older_than < minimum {
                return Err(Error::refused(format!(
                    "refusing to prune audit entries younger than {}s: the minimum retention is {}s \
                     (a 90-day retention is `Duration::from_secs(90 * 86_400)`)",
                    older_than.as_secs(),
                    minimum.as_secs()
                )));
            }
            let cutoff = self.keys.now()
                .unix_seconds()
                .saturating_sub(i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX));
            let mut refusal = false;
            // The root keys the pruned entries name as this store's: their
            // retirement needs the name (retire_root_keys), so it is
            // restated (before the cut).
            let mut named: BTreeSet<String> = BTreeSet::new();
            let mut destroyed: BTreeSet<String> = BTreeSet::new();
            // Tenants' own root keys: erasure_report and rewrap_all need them.
            let mut own_roots: BTreeSet<(String, u32, String)> = BTreeSet::new();
            let (verifier, through) = self
                .walk_audit_with(Some(cutoff), &mut |entry| {
                    refusal |= entry.event == AuditEvent::UnboundWrapsRefused.as_str();
                    root_key_names(entry, &mut named, &mut destroyed);
                    if entry.event == AuditEvent::TenantRootBound.as_str() {
                        own_roots.insert((
                            entry.tenant.clone(),
                            entry.version,
                            entry.detail.clone(),
                        ));
                    }
                })
                .await?;
            if let Some(broken) = verifier.finish().broken {
                return Err(Error::refused(format!(
                    "the audit chain is broken at entry {} ({}); nothing was pruned",
                    broken.seq, broken.reason
                )));
            }
            let Some(through) = through else {
                return Ok(0);
            };
            let store = &self.keys.store;
            // The entry recording that the store refuses unbound keys is
            // about to go: restate it once the cut is made, unless the store accepts
            // them again (then the log is the evidence: keep it).
            if refusal
                && let Some(identity) = store.store_identity().await?
                && identity.accepts_unbound
            {
                return Err(Error::refused(
                    "the key store accepts keys wrapped without its id again, but the audit log \
                     says it stopped: nothing was pruned (run verify_audit and investigate)",
                ));
            }
            // Restated before the cut, so that no failure in between loses
            // them (a prune that then deletes nothing leaves a repetition).
            for id in named.difference(&destroyed) {
                let audit = self
                    .audit(AuditEvent::RootKeyNamed, "", 0, id.clone())
                    .await?;
                store.record_audit(&audit).await?;
            }
            // One entry per tenant and root key, at its latest version.
            let mut latest: BTreeMap<(&str, &str), u32> = BTreeMap::new();
            for (tenant, version, id) in &own_roots {
                let v = latest.entry((tenant, id)).or_default();
                *v = (*v).max(*version);
            }
            for ((tenant, id), version) in latest {
                let audit = self
                    .audit(AuditEvent::TenantRootBound, tenant, version, id.to_string())
                    .await?;
                store.record_audit(&audit).await?;
            }
            let audit = self
                .audit(AuditEvent::AuditPruned, "", 0, pruned_detail(&through))
                .await?;
            let deleted = store.prune_audit(through.seq, &through.mac, &audit).await?;
            if refusal && deleted > 0 {
                let audit = self
                    .audit(AuditEvent::UnboundWrapsRefused, "", 0, "restated after pruning".into())
                    .await?;
                store.refuse_unbound_wraps(&audit).await?;
            }
            Ok(deleted)
        })
        .await
    }
}

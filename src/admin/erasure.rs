//! Erasing tenants: crypto-shredding, the shred ledger, and how far an erasure reaches into backups.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::KeyAdmin;
use super::report::{ErasureReport, RootKeyFate};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::ledger::{LedgerEntry, LedgerReplay, NO_STORE_ID, ShredLedger};
use crate::store::{KeyState, TenantRecord};
use crate::telemetry;
use crate::time::Timestamp;

/// The highest key version a shred of the tenant in `record` destroyed: the
/// one below its lowest version still holding a key (a re-creation after the
/// shred adds versions above), or its highest.
pub(super) fn shredded_through(record: &TenantRecord) -> u32 {
    record
        .keys
        .iter()
        .filter(|k| k.wrapped.is_some())
        .map(|k| k.version)
        .min()
        .map_or_else(|| record.latest_version(), |v| v.saturating_sub(1))
}

impl KeyAdmin {
    /// Crypto-shreds a tenant: destroys every key version (erasing every
    /// wrapped key) and marks the tenant shredded, in one step, then purges it
    /// from this process's cache. From then on every operation for the tenant
    /// fails with [`Error::TenantShredded`], and its values can never be opened.
    /// Returns when it was shredded.
    ///
    /// Other processes stop within their cache time to live (or
    /// [`revalidate_after`](crate::SealerBuilder::revalidate_after)).
    ///
    /// # Security
    ///
    /// Irreversible. Key store backups taken before this call still hold the
    /// wrapped keys: expire them on the same schedule as your erasure promise,
    /// and configure a [`ShredLedger`]
    /// ([`SealerBuilder::shred_ledger`](crate::SealerBuilder::shred_ledger)):
    /// each shred is then appended to it once committed, and
    /// [`KeyAdmin::replay_shred_ledger`] after a restore destroys the keys
    /// again.
    ///
    /// # Errors
    ///
    /// [`Error::TenantShredded`] if it already was (with a ledger, the shred's
    /// entry is appended first if the ledger lacks it);
    /// [`Error::UnknownTenant`]; [`Error::ShredLedger`] if the shred committed
    /// but its ledger entry could not be written (shred again once the file
    /// is fixed); store errors.
    pub async fn shred_tenant(&self, tenant: &str) -> Result<Timestamp> {
        let label = self.keys.label_tenant;
        telemetry::admin("shred_tenant", tenant, label, async move {
            let result = self.shred_once(tenant).await;
            if let Some(ledger) = &self.keys.shred_ledger {
                match &result {
                    Ok(at) => self.record_shred(ledger, tenant, Some(*at)).await?,
                    // Shredded before: its entry may be what is missing.
                    Err(Error::TenantShredded { .. }) => {
                        self.record_shred(ledger, tenant, None).await?;
                    }
                    Err(_) => {}
                }
            }
            result
        })
        .await
    }

    /// Appends the shred of `tenant` to `ledger`: `at` for a shred this call
    /// made, `None` for one made before (appended only if the ledger lacks
    /// it).
    pub(super) async fn record_shred(
        &self,
        ledger: &ShredLedger,
        tenant: &str,
        at: Option<Timestamp>,
    ) -> Result<()> {
        let store = &self.keys.store;
        let Some(record) = store.load_tenant(tenant).await? else {
            return Ok(());
        };
        let shredded_at = at.or(record.shredded_at).unwrap_or_else(Timestamp::now);
        let result = async {
            // The log's head right after the shred: where this store's history
            // stood, so that a replay can tell a restore of this store (whose
            // log is shorter) from another copy of it (whose log differs).
            let (head_seq, head_mac) = store.audit_head().await?.unwrap_or((0, [0; 32]));
            let entry = LedgerEntry {
                store_id: self.ledger_store_id().await?,
                at: shredded_at,
                through: shredded_through(&record),
                tenant: tenant.to_string(),
                head_seq,
                head_mac,
            };
            let key = self.keys.audit_key().await?;
            if at.is_none() && ledger.path().exists() {
                let read = ledger.read(key, &entry.store_id)?;
                if read
                    .entries
                    .iter()
                    .any(|(_, e)| e.tenant == entry.tenant && e.through >= entry.through)
                {
                    return Ok(());
                }
            }
            ledger.append(key, &entry)
        }
        .await;
        if let Err(err) = result {
            // The shred committed: say so, whatever failed.
            let reason = match &err {
                Error::ShredLedger { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            let source = match err {
                Error::ShredLedger { source, .. } => source,
                _ => None,
            };
            return Err(Error::ShredLedger {
                path: ledger.path().to_path_buf(),
                reason: format!(
                    "tenant `{tenant}` was shredded at {shredded_at}, but its entry could not \
                     be appended ({reason}): until it is, restoring a backup from before then \
                     brings the tenant back; fix the cause, then run the shred again while the \
                     tenant is still shredded (it then only appends the missing entry; never \
                     after re-creating the tenant, which would destroy its new keys)"
                ),
                source,
            });
        }
        tracing::info!(tenant, ledger = %ledger.path().display(), "shred recorded in the ledger");
        Ok(())
    }

    /// The key store id ledger entries name.
    pub(super) async fn ledger_store_id(&self) -> Result<String> {
        Ok(self
            .keys
            .store_identity()
            .await?
            .map_or_else(|| NO_STORE_ID.to_string(), |i| i.id.clone()))
    }

    /// After restoring the key store's database from a backup: destroys
    /// again the keys of every tenant `ledger` says was shredded, so the
    /// restore brings none back. Run it before anything opens a value.
    ///
    /// Each entry destroys the versions its shred destroyed (up to the
    /// highest version it names, made no later than the shred): a tenant
    /// re-created after its shred, or an id used again after the restore,
    /// keeps its newer keys. A line recorded by another copy of this store (a
    /// clone sharing the ledger, whose audit log went another way) is
    /// refused. Entries already in effect, of tenants the store
    /// does not know, or of other key stores, change nothing. Lines whose MAC
    /// does not verify under the store's audit key are refused, not applied,
    /// and listed in [`LedgerReplay::rejected`]. Running it again does
    /// nothing more.
    ///
    /// # Security
    ///
    /// A restored backup also holds keys the ledger cannot name: those of a
    /// shred whose entry was lost. Keep the ledger with its own backups, and
    /// compare the audit log's `tenant.shredded` entries with it.
    ///
    /// # Errors
    ///
    /// [`Error::ShredLedger`] if the file cannot be read or is not a shred
    /// ledger; [`Error::Refused`] if a tenant changed during the replay (run
    /// it again); provider and store errors.
    pub async fn replay_shred_ledger(&self, ledger: &ShredLedger) -> Result<LedgerReplay> {
        let label = self.keys.label_tenant;
        telemetry::admin("replay_shred_ledger", "", label, async move {
            let store = &self.keys.store;
            let key = self.keys.audit_key().await?;
            let store_id = self.ledger_store_id().await?;
            let read = ledger.read(key, &store_id)?;
            // Where this store's log stood before the replay wrote to it.
            let head = store.audit_head().await?.map_or(0, |(seq, _)| seq);
            let mut report = LedgerReplay {
                rejected: read.rejected,
                other_stores: read.other_stores,
                ..LedgerReplay::default()
            };
            for (line, entry) in read.entries {
                report.entries += 1;
                let tenant = entry.tenant.as_str();
                let Some(record) = store.load_tenant(tenant).await? else {
                    report.absent += 1;
                    continue;
                };
                // Only keys the shred destroyed: up to its highest version,
                // and made no later than the shred (a tenant id used again
                // after the restore has newer keys, which are kept).
                let pending: Vec<(u32, KeyState)> = record
                    .keys
                    .iter()
                    .filter(|k| {
                        k.version <= entry.through
                            && k.wrapped.is_some()
                            && k.created_at <= entry.at
                    })
                    .map(|k| (k.version, k.state))
                    .collect();
                if pending.is_empty() {
                    report.already += 1;
                    continue;
                }
                // A log that has the entry the shred was followed by, with
                // another MAC, is another history: a copy of this store
                // (cloned, sharing the ledger) shredded it, not this one.
                if entry.head_seq > 0 && entry.head_seq <= head {
                    let ours = store.audit_entries(entry.head_seq - 1, 1).await?;
                    if let Some(e) = ours.first().filter(|e| e.seq == entry.head_seq)
                        && !bool::from(subtle::ConstantTimeEq::ct_eq(
                            e.mac.as_slice(),
                            entry.head_mac.as_slice(),
                        ))
                    {
                        report.rejected.push(crate::ledger::LedgerLine {
                            line,
                            reason: format!(
                                "tenant `{tenant}`: this key store's audit log holds another \
                                 entry {} than the one that followed the shred, so the shred \
                                 happened in another copy of this store (a clone sharing the \
                                 ledger), or entries were written after the restore before \
                                 this replay; nothing was done for it",
                                entry.head_seq
                            ),
                        });
                        continue;
                    }
                }
                let full = record
                    .keys
                    .iter()
                    .all(|k| k.version <= entry.through && k.created_at <= entry.at);
                let detail = format!("replayed from the shred ledger: shredded at {}", entry.at);
                let changed = |what: &str| {
                    Error::refused(format!(
                        "tenant `{tenant}` changed while the shred ledger was replayed ({what}); \
                         run the replay again"
                    ))
                };
                if full {
                    // Every version it has: the shred as it was.
                    let audit = self
                        .audit(AuditEvent::TenantShredded, tenant, 0, detail)
                        .await?;
                    let at = audit.at();
                    if !store.shred_tenant(tenant, &audit).await? {
                        return Err(changed("it was shredded meanwhile"));
                    }
                    self.keys.cache.revocation(tenant).shred(at);
                } else {
                    // Re-created after its shred: only the versions shredded.
                    for (version, state) in pending {
                        let audit = self
                            .audit(AuditEvent::KeyDestroyed, tenant, version, detail.clone())
                            .await?;
                        if !store
                            .update_key_state(tenant, version, state, KeyState::Destroyed, &audit)
                            .await?
                        {
                            return Err(changed("a key version changed state"));
                        }
                    }
                }
                self.keys.cache.invalidate(tenant);
                tracing::warn!(tenant, shredded_at = %entry.at, "shred replayed from the ledger");
                if !report.shredded.iter().any(|t| t == tenant) {
                    report.shredded.push(tenant.to_string());
                }
            }
            Ok(report)
        })
        .await
    }

    /// Shreds `tenant` (see [`KeyAdmin::shred_tenant`]).
    pub(super) async fn shred_once(&self, tenant: &str) -> Result<Timestamp> {
        self.live(tenant).await?;
        let audit = self
            .audit(AuditEvent::TenantShredded, tenant, 0, String::new())
            .await?;
        let at = audit.at();
        let shredded = self.keys.store.shred_tenant(tenant, &audit).await?;
        if shredded {
            self.keys.cache.revocation(tenant).shred(at);
        }
        self.keys.cache.invalidate(tenant);
        if !shredded {
            // Another process shredded it first: stop this process's snapshots
            // too, and report it.
            let err = self.live(tenant).await.err().unwrap_or_else(|| {
                Error::refused(format!("tenant `{tenant}` changed during the shred; retry"))
            });
            if let Error::TenantShredded { shredded_at, .. } = &err {
                self.keys.cache.revocation(tenant).shred(*shredded_at);
            }
            return Err(err);
        }
        tracing::info!(tenant, "shredded tenant");
        Ok(at)
    }

    /// When tenant `tenant`, shredded, becomes unrecoverable from every
    /// backup of any age: every root key that may have wrapped one of its
    /// keys (from the verified audit log: any root key not created after the
    /// shred, including the provider's and those named by re-wrap entries),
    /// what became of each, and the date the last one was (or, given the
    /// backup `retention`, can be) destroyed. OPERATIONS.md, "Root-key
    /// epochs", gives the bound this computes.
    ///
    /// A tenant with a root key of its own (bring your own key) has it
    /// listed as [`RootKeyFate::TenantOwned`]: its owner destroys it, out of
    /// fieldseal's sight, so the report gives no date while it is listed.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTenant`]; [`Error::Refused`] if the audit chain is
    /// broken; store errors.
    pub async fn erasure_report(
        &self,
        tenant: &str,
        retention: Option<Duration>,
    ) -> Result<ErasureReport> {
        let label = self.keys.label_tenant;
        telemetry::admin("erasure_report", tenant, label, async move {
            let record = self.describe(tenant).await?;
            let mut created: BTreeMap<String, Timestamp> = BTreeMap::new();
            let mut marks: BTreeMap<String, Timestamp> = BTreeMap::new();
            let mut gone: BTreeMap<String, Timestamp> = BTreeMap::new();
            let mut seen: BTreeSet<String> = BTreeSet::new();
            let mut own: BTreeSet<String> = BTreeSet::new();
            let (verifier, _) = self
                .walk_audit_with(None, &mut |e| {
                    let event = e.event.as_str();
                    if event == AuditEvent::RootKeyCreated.as_str() {
                        created.insert(e.detail.clone(), e.at);
                        marks.remove(&e.detail);
                        gone.remove(&e.detail);
                    } else if event == AuditEvent::RootKeyUnused.as_str() {
                        marks.insert(e.detail.clone(), e.at);
                    } else if event == AuditEvent::RootKeyDestroyed.as_str() {
                        let mut parts = e.detail.split(' ');
                        if let (Some(id), Some(at)) = (parts.next(), parts.next()) {
                            let at = at.parse().map_or(e.at, Timestamp::from_unix_seconds);
                            gone.insert(id.to_string(), at);
                        }
                    } else if event == AuditEvent::KeyRewrapped.as_str()
                        && let Some((from, to)) = e.detail.split_once(" -> ")
                    {
                        let from = from.strip_prefix("audit key ").unwrap_or(from);
                        marks.remove(from);
                        if e.tenant == tenant {
                            seen.insert(from.to_string());
                            seen.insert(to.to_string());
                        }
                    } else if event == AuditEvent::TenantRootBound.as_str() && e.tenant == tenant {
                        // Its own root key: only its owner destroys it.
                        seen.insert(e.detail.clone());
                        own.insert(e.detail.clone());
                    }
                })
                .await?;
            if let Some(broken) = verifier.finish().broken {
                return Err(Error::refused(format!(
                    "the audit chain is broken at entry {} ({}): no erasure report",
                    broken.seq, broken.reason
                )));
            }
            let provider = &self.keys.provider;
            let mut ids: BTreeSet<String> = seen;
            ids.extend(provider.root_key_ids().into_iter().map(str::to_string));
            ids.extend(created.keys().cloned());
            ids.extend(gone.keys().cloned());
            let shredded_at = record.shredded_at;
            // A root key created after the shred never wrapped its keys.
            ids.retain(|id| match (shredded_at, created.get(id)) {
                (Some(shred), Some(at)) => *at <= shred,
                _ => true,
            });
            let mut root_keys = Vec::new();
            for id in ids {
                let fate = match (gone.get(&id), marks.get(&id)) {
                    (Some(&gone), _) => RootKeyFate::Destroyed { gone },
                    _ if own.contains(&id) => RootKeyFate::TenantOwned,
                    (None, Some(&since)) if id != provider.current_root_key_id() => {
                        RootKeyFate::Unused { since }
                    }
                    _ => RootKeyFate::InUse,
                };
                root_keys.push((id, fate));
            }
            let mut unrecoverable_from = None;
            let mut expected_from = None;
            if shredded_at.is_some() {
                let mut all_gone = Some(Timestamp::from_unix_seconds(i64::MIN));
                let mut all_due = Some(Timestamp::from_unix_seconds(i64::MIN));
                let retention = retention.map(|r| i64::try_from(r.as_secs()).unwrap_or(i64::MAX));
                for (_, fate) in &root_keys {
                    let (gone, due) = match fate {
                        RootKeyFate::Destroyed { gone } => (Some(*gone), Some(*gone)),
                        RootKeyFate::Unused { since } => (
                            None,
                            retention.map(|r| {
                                Timestamp::from_unix_seconds(since.unix_seconds().saturating_add(r))
                            }),
                        ),
                        RootKeyFate::InUse | RootKeyFate::TenantOwned => (None, None),
                    };
                    all_gone = all_gone.zip(gone).map(|(a, b)| a.max(b));
                    all_due = all_due.zip(due).map(|(a, b)| a.max(b));
                }
                if !root_keys.is_empty() {
                    unrecoverable_from = all_gone;
                    expected_from = all_due;
                }
            }
            Ok(ErasureReport {
                tenant: tenant.to_string(),
                shredded_at,
                root_keys,
                unrecoverable_from,
                expected_from,
            })
        })
        .await
    }
}

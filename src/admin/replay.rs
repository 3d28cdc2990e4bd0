//! Replaying the audit log: what it says happened to each tenant's keys, to
//! compare with what the key store holds.

use crate::audit::{AuditEntry, AuditEvent, StateMismatch};
use crate::store::{KeyState, TenantRecord};

/// What the audit log says about each tenant's keys, replayed from its
/// entries, to compare with what the store holds.
#[derive(Debug, Default)]
pub(super) struct Replay {
    tenants: std::collections::BTreeMap<String, Expected>,
    /// Whether the log starts at entry 1 (nothing pruned): then every tenant
    /// and every key version must have an entry that created it.
    complete: bool,
    /// Whether the store stopped accepting keys wrapped without its id.
    unbound_refused: bool,
}

#[derive(Debug, Default)]
struct Expected {
    versions: std::collections::BTreeMap<u32, KeyState>,
    min_decryption_version: Option<u32>,
    shredded: Option<bool>,
    /// Whether the entry that created the tenant is in the log.
    created: bool,
}

impl Replay {
    /// Applies one verified entry, in order.
    pub(super) fn apply(&mut self, entry: &AuditEntry) {
        if entry.seq == 1 {
            self.complete = true;
        }
        if entry.event == AuditEvent::UnboundWrapsRefused.as_str() {
            self.unbound_refused = true;
        }
        // A binding says nothing about key states; it is written before the
        // key it announces is stored, which may then fail.
        if entry.tenant.is_empty() || entry.event == AuditEvent::TenantRootBound.as_str() {
            return;
        }
        let t = self.tenants.entry(entry.tenant.clone()).or_default();
        let v = entry.version;
        match entry.event.as_str() {
            e if e == AuditEvent::TenantCreated.as_str() => {
                t.created = true;
                t.versions.insert(v, KeyState::Active);
                t.min_decryption_version = Some(0);
                t.shredded = Some(false);
            }
            e if e == AuditEvent::KeyRotated.as_str() => {
                t.versions.insert(v, KeyState::Active);
            }
            e if e == AuditEvent::KeyEnabled.as_str() => {
                t.versions.insert(v, KeyState::Active);
            }
            e if e == AuditEvent::KeyDisabled.as_str() => {
                t.versions.insert(v, KeyState::Disabled);
            }
            e if e == AuditEvent::KeyDestroyed.as_str() => {
                t.versions.insert(v, KeyState::Destroyed);
            }
            e if e == AuditEvent::MinDecryptionVersionSet.as_str() => {
                t.min_decryption_version = Some(v);
            }
            e if e == AuditEvent::TenantShredded.as_str() => {
                t.versions
                    .values_mut()
                    .for_each(|s| *s = KeyState::Destroyed);
                t.shredded = Some(true);
            }
            e if e == AuditEvent::TenantRecreated.as_str() => {
                t.versions.insert(v, KeyState::Active);
                t.shredded = Some(false);
            }
            _ => {}
        }
    }

    /// The tenants the log names.
    pub(super) fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// Whether the log names `tenant`.
    pub(super) fn knows(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    /// Whether the log starts at entry 1.
    pub(super) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Takes the log as whole (it never had an entry).
    pub(super) fn mark_complete(&mut self) {
        self.complete = true;
    }

    /// Where the store's identity disagrees with the log: a store that
    /// accepts keys wrapped without its id again after the log recorded that
    /// it stopped.
    pub(super) fn store_mismatch(&self, accepts_unbound: bool) -> Option<StateMismatch> {
        (self.unbound_refused && accepts_unbound).then(|| StateMismatch {
            tenant: String::new(),
            version: 0,
            reason: "the key store accepts keys wrapped without its id again, but the audit \
                     log says it stopped (`store.unbound_wraps_refused`): a key copied from \
                     another store would unwrap"
                .into(),
        })
    }

    /// Where the store's record of `tenant` (`None`: the store does not
    /// know it) disagrees with the log.
    pub(super) fn mismatches(
        &self,
        tenant: &str,
        record: Option<&TenantRecord>,
    ) -> Vec<StateMismatch> {
        let mut out = Vec::new();
        let mut differ = |version: u32, reason: String| {
            out.push(StateMismatch {
                tenant: tenant.to_string(),
                version,
                reason,
            });
        };
        let Some(expected) = self.tenants.get(tenant) else {
            if self.complete && record.is_some() {
                differ(
                    0,
                    "the store holds keys for it, but no audit entry created it".into(),
                );
            }
            return out;
        };
        let Some(record) = record else {
            differ(
                0,
                "the audit log records its keys, but the store has no row for it".into(),
            );
            return out;
        };
        for (version, state) in &expected.versions {
            match record.keys.iter().find(|k| k.version == *version) {
                None => differ(
                    *version,
                    "the audit log records it, but the store has no row for it (deleted)".into(),
                ),
                Some(k) if k.state != *state => differ(
                    *version,
                    format!(
                        "it is {} in the store, but the audit log says {}",
                        k.state.as_str(),
                        state.as_str()
                    ),
                ),
                Some(_) => {}
            }
        }
        if expected.created || self.complete {
            for k in &record.keys {
                if !expected.versions.contains_key(&k.version) {
                    differ(
                        k.version,
                        "the store holds it, but no audit entry created it".into(),
                    );
                }
            }
        }
        let min = expected
            .min_decryption_version
            .or((expected.created || self.complete).then_some(0));
        if let Some(min) = min
            && record.min_decryption_version != min
        {
            differ(
                0,
                format!(
                    "its minimum decryption version is {} in the store, but the audit log \
                     says {min}",
                    record.min_decryption_version
                ),
            );
        }
        if let Some(shredded) = expected.shredded
            && record.shredded_at.is_some() != shredded
        {
            differ(
                0,
                if shredded {
                    "the audit log says it was shredded, but the store says it is not".into()
                } else {
                    "the store says it was shredded, but the audit log does not".into()
                },
            );
        }
        out
    }
}

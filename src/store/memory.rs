//! An in-memory key store.

use std::collections::{BTreeMap, VecDeque};

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use subtle::ConstantTimeEq;

use super::{InsertOutcome, KeyRecord, KeyState, KeyStore, NewKeyVersion, StoredKey, TenantRecord};
use crate::audit::{AUDIT_MAC_LEN, AuditAppend, AuditEntry};
use crate::error::{Error, Result};
use crate::provider::WrappedKey;

/// A key store in process memory, for tests and short-lived tools.
///
/// Clones share the same contents, so two [`Sealer`](crate::Sealer)s built on
/// clones behave like two processes sharing one database. Each method holds
/// one lock for its whole change, so every change is atomic.
///
/// # Security
///
/// Everything is lost when the process exits — and with it every value sealed
/// under these keys. Use a SQL store for anything that must persist.
#[derive(Clone, Default)]
pub struct MemoryKeyStore {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    tenants: BTreeMap<String, TenantRecord>,
    audit_key: Option<WrappedKey>,
    audit: VecDeque<AuditEntry>,
}

impl State {
    fn append(&mut self, audit: &AuditAppend<'_>) {
        let entry = audit.link(self.audit.back().map(|e| (e.seq, &e.mac)));
        self.audit.push_back(entry);
    }
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::Store {
            message: "the in-memory key store's lock is poisoned (a thread panicked \
                      while holding it)"
                .into(),
            source: None,
        })
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tenants, entries) = self
            .lock()
            .map(|s| (s.tenants.len(), s.audit.len()))
            .unwrap_or((0, 0));
        f.debug_struct("MemoryKeyStore")
            .field("tenants", &tenants)
            .field("audit_entries", &entries)
            .finish()
    }
}

/// Appends `new` as the tenant's new primary version.
fn add_version(record: &mut TenantRecord, new: NewKeyVersion) {
    record.keys.push(KeyRecord {
        version: new.version,
        state: KeyState::Active,
        created_at: new.created_at,
        state_changed_at: new.created_at,
        wrapped: Some(new.wrapped),
    });
    record.generation += 1;
}

fn gap_error(tenant: &str, version: u32, latest: u32) -> Error {
    Error::refused(format!(
        "cannot create key version {version} of tenant `{tenant}`: its latest version is \
         {latest}, so the next one is {}",
        latest.saturating_add(1)
    ))
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>> {
        Ok(self.lock()?.tenants.get(tenant).cloned())
    }

    async fn tenant_generation(&self, tenant: &str) -> Result<Option<u64>> {
        Ok(self.lock()?.tenants.get(tenant).map(|t| t.generation))
    }

    async fn insert_key_version(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome> {
        let mut state = self.lock()?;
        let latest = match state.tenants.get(tenant) {
            Some(record) if record.shredded_at.is_some() => return Ok(InsertOutcome::Shredded),
            Some(record) => record.latest_version(),
            None => 0,
        };
        if new.version <= latest {
            return Ok(InsertOutcome::AlreadyExists);
        }
        if Some(new.version) != latest.checked_add(1) {
            return Err(gap_error(tenant, new.version, latest));
        }
        let record = state
            .tenants
            .entry(tenant.to_string())
            .or_insert_with(|| TenantRecord {
                tenant: tenant.to_string(),
                shredded_at: None,
                min_decryption_version: 0,
                generation: 0,
                keys: Vec::new(),
            });
        add_version(record, new);
        state.append(audit);
        Ok(InsertOutcome::Inserted)
    }

    async fn update_key_state(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        let mut state = self.lock()?;
        let Some(record) = state.tenants.get_mut(tenant) else {
            return Ok(false);
        };
        let latest = record.latest_version();
        if record.shredded_at.is_some() || version == latest {
            return Ok(false);
        }
        let Some(key) = record.keys.iter_mut().find(|k| k.version == version) else {
            return Ok(false);
        };
        if key.state != from {
            return Ok(false);
        }
        key.state = to;
        key.state_changed_at = audit.at();
        if to == KeyState::Destroyed {
            key.wrapped = None;
        }
        record.generation += 1;
        state.append(audit);
        Ok(true)
    }

    async fn set_min_decryption_version(
        &self,
        tenant: &str,
        minimum: u32,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        let mut state = self.lock()?;
        let Some(record) = state.tenants.get_mut(tenant) else {
            return Ok(false);
        };
        if record.shredded_at.is_some() || minimum > record.latest_version() {
            return Ok(false);
        }
        record.min_decryption_version = minimum;
        record.generation += 1;
        state.append(audit);
        Ok(true)
    }

    async fn record_audit(&self, audit: &AuditAppend<'_>) -> Result<()> {
        self.lock()?.append(audit);
        Ok(())
    }

    async fn shred_tenant(&self, tenant: &str, audit: &AuditAppend<'_>) -> Result<bool> {
        let mut state = self.lock()?;
        let Some(record) = state.tenants.get_mut(tenant) else {
            return Ok(false);
        };
        if record.shredded_at.is_some() {
            return Ok(false);
        }
        let at = audit.at();
        record.shredded_at = Some(at);
        for key in &mut record.keys {
            if key.state != KeyState::Destroyed {
                key.state = KeyState::Destroyed;
                key.state_changed_at = at;
            }
            key.wrapped = None;
        }
        record.generation += 1;
        state.append(audit);
        Ok(true)
    }

    async fn recreate_tenant(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome> {
        let mut state = self.lock()?;
        let Some(record) = state.tenants.get_mut(tenant) else {
            return Err(Error::UnknownTenant {
                tenant: tenant.to_string(),
            });
        };
        if record.shredded_at.is_none() {
            return Ok(InsertOutcome::AlreadyExists);
        }
        let latest = record.latest_version();
        if Some(new.version) != latest.checked_add(1) {
            return Err(gap_error(tenant, new.version, latest));
        }
        record.shredded_at = None;
        add_version(record, new);
        state.append(audit);
        Ok(InsertOutcome::Inserted)
    }

    async fn list_wrapped_keys(
        &self,
        after: Option<(&str, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredKey>> {
        let state = self.lock()?;
        let mut out = Vec::new();
        for (tenant, record) in &state.tenants {
            for key in &record.keys {
                let past = match after {
                    None => true,
                    Some((t, v)) => (tenant.as_str(), key.version) > (t, v),
                };
                if past && key.wrapped.is_some() {
                    out.push(StoredKey {
                        tenant: tenant.clone(),
                        key: key.clone(),
                    });
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn rewrap_key(
        &self,
        tenant: &str,
        version: u32,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        let mut state = self.lock()?;
        let Some(key) = state
            .tenants
            .get_mut(tenant)
            .and_then(|r| r.keys.iter_mut().find(|k| k.version == version))
        else {
            return Ok(false);
        };
        if key.wrapped.as_ref() != Some(old) {
            return Ok(false);
        }
        key.wrapped = Some(new);
        state.append(audit);
        Ok(true)
    }

    async fn load_audit_key(&self) -> Result<Option<WrappedKey>> {
        Ok(self.lock()?.audit_key.clone())
    }

    async fn insert_audit_key(&self, wrapped: WrappedKey) -> Result<bool> {
        let mut state = self.lock()?;
        if state.audit_key.is_some() {
            return Ok(false);
        }
        state.audit_key = Some(wrapped);
        Ok(true)
    }

    async fn rewrap_audit_key(
        &self,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        let mut state = self.lock()?;
        if state.audit_key.as_ref() != Some(old) {
            return Ok(false);
        }
        state.audit_key = Some(new);
        state.append(audit);
        Ok(true)
    }

    async fn audit_head(&self) -> Result<Option<(u64, [u8; AUDIT_MAC_LEN])>> {
        // The newest entry is never pruned: a prune appends its own entry.
        let state = self.lock()?;
        Ok(Some(
            state
                .audit
                .back()
                .map_or((0, [0; AUDIT_MAC_LEN]), |e| (e.seq, e.mac)),
        ))
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let state = self.lock()?;
        Ok(state
            .audit
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn prune_audit(
        &self,
        through: u64,
        through_mac: &[u8; AUDIT_MAC_LEN],
        audit: &AuditAppend<'_>,
    ) -> Result<u64> {
        let mut state = self.lock()?;
        let current = state.audit.iter().find(|e| e.seq == through);
        if !current.is_some_and(|e| bool::from(e.mac.ct_eq(through_mac))) {
            return Ok(0);
        }
        // The pruned entry chains from the newest entry, pruned or not.
        let entry = audit.link(state.audit.back().map(|e| (e.seq, &e.mac)));
        let before = state.audit.len();
        state.audit.retain(|e| e.seq > through);
        let deleted = before - state.audit.len();
        state.audit.push_back(entry);
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }
}

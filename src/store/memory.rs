//! An in-memory key store.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{InsertOutcome, KeyRecord, KeyState, KeyStore, NewKeyVersion, TenantRecord};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// A key store in process memory, for tests and short-lived tools.
///
/// Clones share the same contents, so two [`Sealer`](crate::Sealer)s built on
/// clones behave like two processes sharing one database.
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
    tenants: HashMap<String, TenantRecord>,
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
        let tenants = self.lock().map(|s| s.tenants.len()).unwrap_or(0);
        f.debug_struct("MemoryKeyStore")
            .field("tenants", &tenants)
            .finish()
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>> {
        Ok(self.lock()?.tenants.get(tenant).cloned())
    }

    async fn insert_key_version(&self, tenant: &str, new: NewKeyVersion) -> Result<InsertOutcome> {
        let mut state = self.lock()?;
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
        if record.shredded_at.is_some() {
            return Ok(InsertOutcome::Shredded);
        }
        let latest = record.latest_version();
        if new.version <= latest {
            return Ok(InsertOutcome::AlreadyExists);
        }
        if Some(new.version) != latest.checked_add(1) {
            return Err(Error::refused(format!(
                "cannot create key version {} of tenant `{tenant}`: its latest version is \
                 {latest}, so the next one is {}",
                new.version,
                latest.saturating_add(1)
            )));
        }
        record.keys.push(KeyRecord {
            version: new.version,
            state: KeyState::Active,
            created_at: new.created_at,
            state_changed_at: new.created_at,
            wrapped: Some(new.wrapped),
        });
        record.generation += 1;
        Ok(InsertOutcome::Inserted)
    }

    async fn update_key_state(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        at: Timestamp,
    ) -> Result<bool> {
        let mut state = self.lock()?;
        let Some(record) = state.tenants.get_mut(tenant) else {
            return Ok(false);
        };
        let latest = record.latest_version();
        let Some(key) = record.keys.iter_mut().find(|k| k.version == version) else {
            return Ok(false);
        };
        if key.state != from || version == latest {
            return Ok(false);
        }
        key.state = to;
        key.state_changed_at = at;
        if to == KeyState::Destroyed {
            key.wrapped = None;
        }
        record.generation += 1;
        Ok(true)
    }
}

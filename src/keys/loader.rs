//! Loading a tenant's keys: from the key store, each version unwrapped by
//! the provider that holds its root key, into a [`Keyring`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::audit::AuditEvent;
use crate::crypto::TenantKeyDeriver;
use crate::error::{Error, Result};
use crate::provider::{WrapContext, WrappedKey};
use crate::store::{KeyState, TenantRecord};

use super::{Keyring, Keys, Revocation, VersionEntry, VersionStatus};

impl Keys {
    /// Reads the tenant from the store (creating its first key if asked) and
    /// unwraps its usable versions, reusing keys from `previous` and `fresh`
    /// whose wrapped form did not change.
    pub(super) async fn load_keyring(
        &self,
        tenant: &str,
        create: bool,
        previous: Option<&Keyring>,
        fresh: Option<(u32, &WrappedKey, &TenantKeyDeriver)>,
    ) -> Result<Keyring> {
        let store = &self.store;
        // Taken before reading the store, so that a shred or destruction that
        // commits after this read still stops the snapshot built from it.
        let revocation = self.cache.revocation(tenant);
        let epoch = revocation.epoch();
        let record = match store.load_tenant(tenant).await? {
            Some(record) if record.latest_version() > 0 || record.shredded_at.is_some() => record,
            _ if create => {
                let (wrapped, deriver) = self
                    .create_version(tenant, 1, AuditEvent::TenantCreated, None)
                    .await?;
                let record = store
                    .load_tenant(tenant)
                    .await?
                    .ok_or_else(|| Error::Store {
                        message: format!(
                            "tenant `{tenant}` was created but the key store does not return it"
                        ),
                        source: None,
                    })?;
                return self
                    .build_keyring(
                        record,
                        previous,
                        Some((1, &wrapped, &deriver)),
                        revocation,
                        epoch,
                    )
                    .await;
            }
            _ => {
                return Err(Error::UnknownTenant {
                    tenant: tenant.to_string(),
                });
            }
        };
        self.build_keyring(record, previous, fresh, revocation, epoch)
            .await
    }

    pub(super) async fn build_keyring(
        &self,
        mut record: TenantRecord,
        previous: Option<&Keyring>,
        fresh: Option<(u32, &WrappedKey, &TenantKeyDeriver)>,
        revocation: Arc<Revocation>,
        epoch: u64,
    ) -> Result<Keyring> {
        // The primary is the highest version: do not trust the store's order.
        record.keys.sort_by_key(|k| k.version);
        if record
            .keys
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.version == b.version))
        {
            return Err(Error::Store {
                message: format!(
                    "tenant `{}` has the same key version twice in the key store",
                    record.tenant
                ),
                source: None,
            });
        }
        let tenant = record.tenant.as_str();
        let mut versions = Vec::with_capacity(record.keys.len());
        // A tenant's own root key is its owner's to revoke: a reload asks
        // each root key the tenant's keys are under once (for the newest
        // version under it), so a revocation shows within the cache's time
        // to live. The other versions reuse what the previous snapshot
        // unwrapped.
        let bound = self.tenant_roots.contains_key(tenant);
        let mut asked: BTreeSet<String> = BTreeSet::new();
        if record.shredded_at.is_none() {
            for key in record.keys.into_iter().rev() {
                let status = match (key.state, key.wrapped) {
                    (KeyState::Destroyed, _) | (_, None) => VersionStatus::Destroyed {
                        at: key.state_changed_at,
                    },
                    (KeyState::Disabled, Some(_)) => VersionStatus::Disabled {
                        since: key.state_changed_at,
                    },
                    (KeyState::Active, Some(wrapped)) => {
                        let previous =
                            previous.filter(|_| !bound || asked.contains(wrapped.root_key_id()));
                        let known = reusable(previous, fresh, key.version, &wrapped);
                        let deriver = match known {
                            Some(deriver) => deriver,
                            None => self.unwrap(tenant, key.version, &wrapped).await?,
                        };
                        if bound {
                            asked.insert(wrapped.root_key_id().to_string());
                        }
                        VersionStatus::Usable { deriver, wrapped }
                    }
                };
                versions.push(VersionEntry {
                    version: key.version,
                    status,
                });
            }
            versions.reverse();
        }
        Ok(Keyring {
            tenant: tenant.into(),
            versions,
            min_decryption_version: record.min_decryption_version,
            shredded_at: record.shredded_at,
            generation: record.generation,
            loaded_at: Instant::now(),
            last_check_ms: AtomicU64::new(0),
            revocation,
            epoch,
        })
    }

    pub(super) async fn unwrap(
        &self,
        tenant: &str,
        version: u32,
        wrapped: &WrappedKey,
    ) -> Result<TenantKeyDeriver> {
        tracing::debug!(
            tenant,
            version,
            root_key_id = wrapped.root_key_id(),
            "unwrapping tenant key"
        );
        let key = self
            .unwrap_key(wrapped, WrapContext::tenant_key(tenant, version))
            .await?;
        Ok(TenantKeyDeriver::new(key.expose_secret()))
    }
}

/// A deriver for `version` that is already unwrapped, if its wrapped form is
/// unchanged.
fn reusable(
    previous: Option<&Keyring>,
    fresh: Option<(u32, &WrappedKey, &TenantKeyDeriver)>,
    version: u32,
    wrapped: &WrappedKey,
) -> Option<TenantKeyDeriver> {
    if let Some((v, w, d)) = fresh
        && v == version
        && w == wrapped
    {
        return Some(d.clone());
    }
    previous?
        .versions
        .iter()
        .find_map(|entry| match &entry.status {
            VersionStatus::Usable {
                deriver,
                wrapped: known,
            } if entry.version == version && known == wrapped => Some(deriver.clone()),
            _ => None,
        })
}

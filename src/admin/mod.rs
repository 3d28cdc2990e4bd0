//! Key lifecycle operations: rotation, state changes, shredding, root key
//! rotation and the audit log.

use std::fmt;
use std::sync::Arc;

use crate::audit::{AuditAppend, AuditEvent};
use crate::context::check_existing_tenant;
use crate::crypto::HmacKey;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::store::TenantRecord;

mod audit_log;
mod erasure;
mod replay;
mod report;
mod root_keys;
mod tenant_keys;

pub use report::{
    ErasureReport, RewrapReport, RootKeyCheck, RootKeyFate, RootKeyRetirement, Rotation,
    RotationOutcome, ScheduledRotation,
};

/// Page size for walking key versions and audit entries.
const PAGE: usize = 500;

/// Operations on keys rather than values. Get one with [`Sealer::admin`](crate::Sealer::admin).
///
/// Every operation is one atomic step in the key store and is recorded in the
/// audit log (with the [`actor`](KeyAdmin::actor), if given). In this process
/// it takes effect at once for the [`Sealer`](crate::Sealer) (its cache entry is dropped);
/// shredding and destruction also stop every [`TenantSealer`](crate::TenantSealer)
/// handle already handed out, while other changes reach such handles only when
/// they are fetched again. Other processes see a change when their cache entry
/// for the tenant expires (the cache time to live), or sooner with
/// [`SealerBuilder::revalidate_after`](crate::SealerBuilder::revalidate_after).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fieldseal::Error> {
/// # use fieldseal::{Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};
/// # let sealer = Sealer::builder(
/// #     LocalKeyProvider::new("root-1", RootKey::generate()?)?,
/// #     MemoryKeyStore::new(),
/// # ).build();
/// # let ctx = Context::builder("acme", "integrations", "api_key").row(1).build()?;
/// let old = sealer.seal(&ctx, b"sk_live_1").await?;
///
/// let admin = sealer.admin().actor("alice@ops");
/// let rotation = admin.rotate("acme").await?;
/// assert_eq!((rotation.previous, rotation.primary), (1, 2));
///
/// // Old values still open, reported stale; re-seal them under version 2...
/// let new = sealer.reseal(&ctx, &old).await?.expect("stale");
/// assert_eq!(new.key_version(), 2);
/// // ...then version 1 can go.
/// admin.destroy_version("acme", 1).await?;
/// assert!(admin.verify_audit().await?.is_intact());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KeyAdmin {
    keys: Arc<Keys>,
    actor: Option<String>,
}

impl KeyAdmin {
    pub(crate) fn new(keys: Arc<Keys>) -> Self {
        Self { keys, actor: None }
    }

    /// Records `actor` (a person, a service account, a ticket) as the author of
    /// the operations done through this handle, in the audit log: at most 256
    /// bytes, without control characters (operations through a handle with a
    /// longer one fail with [`Error::Config`], writing nothing).
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// The tenant's stored state: every key version, its status and times.
    ///
    /// This and the other operations on an existing tenant check only the
    /// rules every stored tenant id has met (not empty, at most 255 bytes, no
    /// control character, no surrounding whitespace), so a tenant created
    /// before the Unicode rules of FORMAT.md §"Context rules" can still be
    /// described, rotated and shredded.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] for an id that breaks those rules;
    /// [`Error::UnknownTenant`]; store errors.
    pub async fn describe(&self, tenant: &str) -> Result<TenantRecord> {
        // Only the rules every stored tenant id met: an id from before the
        // Unicode rules can still be described, rotated and shredded.
        check_existing_tenant(tenant)?;
        self.keys
            .store
            .load_tenant(tenant)
            .await?
            .filter(|r| !r.keys.is_empty())
            .ok_or_else(|| Error::UnknownTenant {
                tenant: tenant.to_string(),
            })
    }

    /// Every tenant that has a key (shredded tenants have none), in order.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn tenants(&self) -> Result<Vec<String>> {
        let store = &self.keys.store;
        let mut tenants: Vec<String> = Vec::new();
        let mut after: Option<(String, u32)> = None;
        loop {
            let page = store
                .list_wrapped_keys(after.as_ref().map(|(t, v)| (t.as_str(), *v)), PAGE)
                .await?;
            let full = page.len() >= PAGE;
            for stored in &page {
                if tenants.last() != Some(&stored.tenant) {
                    tenants.push(stored.tenant.clone());
                }
            }
            match page.last() {
                Some(last) if full => after = Some((last.tenant.clone(), last.key.version)),
                _ => break,
            }
        }
        tenants.dedup();
        Ok(tenants)
    }

    /// The tenant's record, refusing shredded tenants.
    async fn live(&self, tenant: &str) -> Result<TenantRecord> {
        let record = self.describe(tenant).await?;
        if let Some(at) = record.shredded_at {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
                shredded_at: at,
            });
        }
        Ok(record)
    }

    async fn audit(
        &self,
        event: AuditEvent,
        tenant: &str,
        version: u32,
        detail: String,
    ) -> Result<AuditAppend<'_>> {
        let key: &HmacKey = self.keys.audit_key().await?;
        AuditAppend::new(
            key,
            event,
            tenant,
            version,
            self.actor.as_deref(),
            detail,
            self.keys.now(),
        )
    }
}

impl fmt::Debug for KeyAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAdmin")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};

    /// A tenant whose id met the rules of its day but not today's Unicode rules
    /// (here an invisible U+200B) can still be administered and erased, while
    /// nothing new is sealed or opened under it.
    #[tokio::test]
    async fn a_tenant_from_before_the_unicode_rules_can_be_administered() {
        let provider = LocalKeyProvider::new("root", RootKey::generate().unwrap()).unwrap();
        let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
        let old = "acme\u{200B}corp";
        // As an earlier release would have created it: straight into the
        // store, since every creation path of this one judges the id.
        let key = crate::provider::TenantKey::generate().unwrap();
        let wrapped = sealer
            .keys
            .wrap_key(&key, crate::provider::WrapContext::tenant_key(old, 1))
            .await
            .unwrap();
        let audit = crate::audit::AuditAppend::new(
            sealer.keys.audit_key().await.unwrap(),
            crate::audit::AuditEvent::TenantCreated,
            old,
            1,
            None,
            String::new(),
            crate::Timestamp::now(),
        )
        .unwrap();
        let new = crate::store::NewKeyVersion {
            version: 1,
            wrapped,
            created_at: crate::Timestamp::now(),
        };
        sealer
            .keys
            .store
            .insert_key_version(old, new, &audit)
            .await
            .unwrap();

        let err = sealer.tenant(old).await.unwrap_err();
        assert!(matches!(err, Error::InvalidContext { .. }), "{err}");
        assert!(err.to_string().contains("U+200B"), "{err}");

        let admin = sealer.admin();
        assert_eq!(admin.describe(old).await.unwrap().latest_version(), 1);
        assert_eq!(admin.tenants().await.unwrap(), vec![old.to_string()]);
        assert_eq!(admin.rotate(old).await.unwrap().primary, 2);
        admin.shred_tenant(old).await.unwrap();
        assert!(admin.tenants().await.unwrap().is_empty());
        // A shredded old-style tenant is not given a new key under that id.
        let err = admin.recreate_tenant(old).await.unwrap_err();
        assert!(matches!(err, Error::InvalidContext { .. }), "{err}");

        // Ids that no tenant could ever have are still refused everywhere.
        for bad in ["", " acme", "ac\u{7}me"] {
            let err = admin.describe(bad).await.unwrap_err();
            assert!(
                matches!(err, Error::InvalidContext { .. }),
                "{bad:?}: {err}"
            );
        }
    }
}

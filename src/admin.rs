//! Key lifecycle operations: rotation, state changes, shredding, root key
//! rotation and the audit log.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::audit::{
    AuditAppend, AuditEntry, AuditEvent, AuditReport, Replay, Verifier, pruned_detail,
};
use crate::context::{check_existing_tenant, check_new_tenant};
use crate::crypto::HmacKey;
use crate::error::{Error, Result};
use crate::ledger::{LedgerEntry, LedgerReplay, NO_STORE_ID, ShredLedger};
use crate::provider::{WrapContext, WrappedKey};
use std::sync::Arc;

use crate::keys::Keys;
use crate::store::{InsertOutcome, KeyState, TenantRecord};
use crate::telemetry;
use crate::time::Timestamp;

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

/// What [`KeyAdmin::rotate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotation {
    /// The primary version before the rotation.
    pub previous: u32,
    /// The primary version now.
    pub primary: u32,
    /// `true` if this call created the new version; `false` if a concurrent
    /// rotation (in this or another process) created it first.
    pub created: bool,
}

/// What [`KeyAdmin::retire_root_keys`] did, root key by root key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RootKeyRetirement {
    /// Root keys destroyed, and the time from which each unwraps nothing.
    pub destroyed: Vec<(String, Timestamp)>,
    /// Root keys found unused and marked so: their retention starts now.
    pub marked_unused: Vec<String>,
    /// Root keys marked unused whose retention has not passed, and when it
    /// does.
    pub waiting: Vec<(String, Timestamp)>,
    /// Root keys that live keys are still wrapped under, and how many (run
    /// [`KeyAdmin::rewrap_all`] to the current root key).
    pub in_use: Vec<(String, u64)>,
    /// Root keys the provider refused to destroy, and why.
    pub blocked: Vec<(String, String)>,
    /// Root keys the provider holds that no entry of this store's audit log
    /// names (no `root_key.created` or `root_key.named`, no re-wrap from or
    /// to it): another store's, or one this store never used. Never marked
    /// nor destroyed. Always empty for a provider whose root keys are all
    /// its store's (a Transit key).
    pub not_this_stores: Vec<String>,
}

/// What became of one root key, as [`KeyAdmin::erasure_report`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootKeyFate {
    /// Live keys may be wrapped under it (it is current, or not yet marked
    /// unused).
    InUse,
    /// Marked unused at `since`: destroyed by a `retire_root_keys` run once
    /// the backup retention has passed.
    Unused {
        /// When it was marked.
        since: Timestamp,
    },
    /// Destroyed: it unwraps nothing from `gone`.
    Destroyed {
        /// From when.
        gone: Timestamp,
    },
    /// The tenant's own root key (bring your own key): its owner destroys
    /// it, and fieldseal cannot see when, so it sets no date.
    TenantOwned,
}

/// When a shredded tenant becomes unrecoverable from every backup: see
/// [`KeyAdmin::erasure_report`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErasureReport {
    /// The tenant.
    pub tenant: String,
    /// When it was last shredded (`None`: it is not shredded).
    pub shredded_at: Option<Timestamp>,
    /// Every root key that may have wrapped one of its keys (any root key
    /// not created after the shred), and its fate.
    pub root_keys: Vec<(String, RootKeyFate)>,
    /// From when no backup of any age yields its keys: when the last of
    /// those root keys was destroyed. `None` while one still exists.
    pub unrecoverable_from: Option<Timestamp>,
    /// With a retention given and every such root key unused or destroyed:
    /// the earliest time a `retire_root_keys` run can have destroyed them
    /// all.
    pub expected_from: Option<Timestamp>,
}

/// A wrapped key and its owner (`None`: the audit-chain key).
type WrappedSample = (Option<(String, u32)>, WrappedKey);

/// What [`KeyAdmin::rewrap_all`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewrapReport {
    /// Key versions that hold a wrapped key (destroyed ones hold none).
    pub examined: u64,
    /// Key versions this call re-wrapped under the target root key.
    pub rewrapped: u64,
    /// Key versions already under the target root key, left alone.
    pub already_current: u64,
    /// Key versions that changed while this call worked on them (destroyed, or
    /// re-wrapped by another process); run again to be sure.
    pub skipped: u64,
    /// Whether the audit-chain key was re-wrapped too.
    pub audit_key_rewrapped: bool,
    /// Whether the audit-chain key changed while this call worked on it (it is
    /// then still under another root key); run again.
    pub audit_key_skipped: bool,
    /// Key versions left under a root key of their tenant's own: one this
    /// sealer does not hold (it is not configured with the tenant's
    /// binding), or one its owner revoked. They are not the shared root
    /// key's to move.
    pub own_root_keys: u64,
    /// Key versions whose tenant's own root key refused to wrap or unwrap
    /// (revoked, disabled, deleted): left as they were. Those under a shared
    /// root key are also counted in [`skipped`](RewrapReport::skipped).
    pub own_root_unavailable: u64,
    /// Whether this call made the key store stop accepting keys wrapped
    /// without its id ([`StoreIdentity::accepts_unbound`](crate::store::StoreIdentity::accepts_unbound)):
    /// every key of an upgraded store is now bound to it.
    pub unbound_refused: bool,
}

impl RewrapReport {
    /// `true` when every stored key is now under the target root key (or,
    /// for a tenant bound to a root key of its own, under that one): nothing
    /// was skipped. Only then may the old root key be removed (and only once no
    /// process is configured with it as its current key any more).
    pub fn is_complete(&self) -> bool {
        self.skipped == 0
            && !self.audit_key_skipped
            && self.rewrapped + self.already_current + self.own_root_keys == self.examined
    }
}

/// What [`KeyAdmin::verify_root_keys`] proved: the provider's root keys
/// unwrap the keys the store holds under them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RootKeyCheck {
    /// Per root key id: the stored keys wrapped under it (the audit-chain key
    /// included). One key per root key id was unwrapped to prove the root key
    /// is the one they were wrapped with.
    pub keys_per_root: std::collections::BTreeMap<String, u64>,
    /// Root keys of tenants' own (bring your own key) that could not be
    /// proven, and why: revoked or unusable (its tenant's values do not
    /// open meanwhile), or not bound in this process. Per root key id.
    pub own_roots_unproven: std::collections::BTreeMap<String, String>,
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

    /// Creates a new primary key version; the previous primary becomes
    /// decrypt-only. Values are not touched: they keep opening, reported stale,
    /// until re-sealed.
    ///
    /// Concurrent rotations of one tenant (in any number of processes) that
    /// start from the same primary create exactly one new version, and all of
    /// them report it.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTenant`]; [`Error::TenantShredded`];
    /// [`Error::UnwrapFailed`] if the provider cannot unwrap the tenant's
    /// current keys (a wrong root key); [`Error::TenantRootKeyUnavailable`]
    /// if the tenant's own root key refuses; provider and store errors. Nothing is
    /// changed on error.
    pub async fn rotate(&self, tenant: &str) -> Result<Rotation> {
        let label = self.keys.label_tenant;
        telemetry::admin("rotate", tenant, label, async move {
            let record = self.live(tenant).await?;
            // Unwrap the tenant's current keys first (usually from the cache): a
            // provider configured with the wrong root key must fail here, not
            // create a new primary that the other processes cannot unwrap.
            self.keys.keyring(tenant, false).await?;
            let previous = record.latest_version();
            let next = previous.checked_add(1).ok_or_else(|| {
                Error::refused(format!(
                    "tenant `{tenant}` has used every key version number"
                ))
            })?;
            let (new, _) = self.keys.new_key_version(tenant, next).await?;
            self.keys
                .record_own_root(tenant, next, &new.wrapped, self.actor.as_deref())
                .await?;
            let audit = self
                .audit(
                    AuditEvent::KeyRotated,
                    tenant,
                    next,
                    format!("{previous} -> {next}"),
                )
                .await?;
            let outcome = self
                .keys
                .store
                .insert_key_version(tenant, new, &audit)
                .await?;
            self.keys.cache.invalidate(tenant);
            match outcome {
                InsertOutcome::Inserted => {
                    tracing::info!(tenant, previous, primary = next, "rotated tenant key");
                    Ok(Rotation {
                        previous,
                        primary: next,
                        created: true,
                    })
                }
                InsertOutcome::AlreadyExists => {
                    let now = self.live(tenant).await?;
                    Ok(Rotation {
                        previous,
                        primary: now.latest_version(),
                        created: false,
                    })
                }
                InsertOutcome::Shredded => {
                    Err(self.live(tenant).await.err().unwrap_or_else(|| {
                        Error::refused(format!(
                            "tenant `{tenant}` was shredded during the rotation"
                        ))
                    }))
                }
            }
        })
        .await
    }

    /// Disables a key version: values under it stop opening (with
    /// [`Error::KeyDisabled`]) until it is enabled again. Disabling a disabled
    /// version does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for the primary or a destroyed version;
    /// [`Error::UnknownTenant`], [`Error::UnknownKeyVersion`],
    /// [`Error::TenantShredded`]; store errors.
    pub async fn disable_version(&self, tenant: &str, version: u32) -> Result<()> {
        let label = self.keys.label_tenant;
        telemetry::admin("disable_version", tenant, label, async move {
            self.change_state(tenant, version, KeyState::Disabled).await
        })
        .await
    }

    /// Enables a disabled key version again. Enabling an active version does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for a destroyed version; [`Error::UnknownTenant`],
    /// [`Error::UnknownKeyVersion`], [`Error::TenantShredded`]; store errors.
    pub async fn enable_version(&self, tenant: &str, version: u32) -> Result<()> {
        let label = self.keys.label_tenant;
        telemetry::admin("enable_version", tenant, label, async move {
            self.change_state(tenant, version, KeyState::Active).await
        })
        .await
    }

    /// Destroys a key version: its wrapped key is erased from the store, and
    /// values sealed under it can never be opened again (they fail with
    /// [`Error::KeyDestroyed`]). Re-seal them first.
    ///
    /// # Security
    ///
    /// Irreversible by design. Backups of the key store taken before this call
    /// still hold the wrapped key.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for the primary, or for a version already destroyed;
    /// [`Error::UnknownTenant`], [`Error::UnknownKeyVersion`],
    /// [`Error::TenantShredded`]; store errors.
    pub async fn destroy_version(&self, tenant: &str, version: u32) -> Result<()> {
        let label = self.keys.label_tenant;
        telemetry::admin("destroy_version", tenant, label, async move {
            self.change_state(tenant, version, KeyState::Destroyed)
                .await
        })
        .await
    }

    async fn change_state(&self, tenant: &str, version: u32, to: KeyState) -> Result<()> {
        let record = self.live(tenant).await?;
        let key = record
            .keys
            .iter()
            .find(|k| k.version == version)
            .ok_or_else(|| Error::UnknownKeyVersion {
                tenant: tenant.to_string(),
                version,
            })?;
        let verb = match to {
            KeyState::Active => "enable",
            KeyState::Disabled => "disable",
            KeyState::Destroyed => "destroy",
        };
        if key.state == KeyState::Destroyed {
            return Err(Error::refused(format!(
                "cannot {verb} tenant `{tenant}` key version {version}: it was already \
                 destroyed on {}",
                key.state_changed_at
            )));
        }
        if key.state == to {
            return Ok(());
        }
        if version == record.latest_version() {
            return Err(Error::refused(format!(
                "cannot {verb} tenant `{tenant}` key version {version}: it is the primary; \
                 rotate first, re-seal its values, then {verb} it"
            )));
        }
        let event = match to {
            KeyState::Active => AuditEvent::KeyEnabled,
            KeyState::Disabled => AuditEvent::KeyDisabled,
            KeyState::Destroyed => AuditEvent::KeyDestroyed,
        };
        let audit = self
            .audit(event, tenant, version, format!("{} -> {}", key.state, to))
            .await?;
        let at = audit.at();
        let changed = self
            .keys
            .store
            .update_key_state(tenant, version, key.state, to, &audit)
            .await?;
        self.keys.cache.invalidate(tenant);
        if !changed {
            return Err(Error::refused(format!(
                "tenant `{tenant}` key version {version} changed while this {verb} ran; \
                 nothing was changed: check its state and retry"
            )));
        }
        if to == KeyState::Destroyed {
            self.keys.cache.revocation(tenant).destroy(version, at);
        }
        tracing::info!(tenant, version, state = %to, "changed tenant key state");
        Ok(())
    }

    /// Refuses values sealed under versions below `minimum` (with
    /// [`Error::BelowMinimumVersion`]) while their keys still exist — a
    /// reversible way to check that nothing still needs an old version before
    /// destroying it. 0 or 1 removes the minimum.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if `minimum` is above the primary version;
    /// [`Error::UnknownTenant`], [`Error::TenantShredded`]; store errors.
    pub async fn set_min_decryption_version(&self, tenant: &str, minimum: u32) -> Result<()> {
        let label = self.keys.label_tenant;
        telemetry::admin("set_min_decryption_version", tenant, label, async move {
            let record = self.live(tenant).await?;
            let primary = record.latest_version();
            if minimum > primary {
                return Err(Error::refused(format!(
                    "cannot set tenant `{tenant}`'s minimum decryption version to {minimum}: its \
                     primary is version {primary}, and the primary must stay usable"
                )));
            }
            let audit = self
                .audit(
                    AuditEvent::MinDecryptionVersionSet,
                    tenant,
                    minimum,
                    format!("{} -> {minimum}", record.min_decryption_version),
                )
                .await?;
            let changed = self
                .keys
                .store
                .set_min_decryption_version(tenant, minimum, &audit)
                .await?;
            self.keys.cache.invalidate(tenant);
            if !changed {
                return Err(Error::refused(format!(
                    "tenant `{tenant}` changed while setting its minimum decryption version; \
                     nothing was changed: retry"
                )));
            }
            Ok(())
        })
        .await
    }

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
    async fn record_shred(
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
    async fn ledger_store_id(&self) -> Result<String> {
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
    async fn shred_once(&self, tenant: &str) -> Result<Timestamp> {
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

    /// Gives a shredded tenant a fresh key, so it can seal again. Its old values
    /// stay unreadable (their versions are destroyed). Returns the new primary
    /// version.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] if the tenant is not shredded, or if the audit log
    /// records it as bound to a root key of its own and this sealer does
    /// not bind it; [`Error::UnknownTenant`];
    /// [`Error::TenantRootKeyUnavailable`]; provider and store errors.
    pub async fn recreate_tenant(&self, tenant: &str) -> Result<u32> {
        let label = self.keys.label_tenant;
        telemetry::admin("recreate_tenant", tenant, label, async move {
            check_new_tenant(tenant)?;
            let record = self.describe(tenant).await?;
            if record.shredded_at.is_none() {
                return Err(Error::refused(format!(
                    "tenant `{tenant}` is not shredded, so there is nothing to recreate"
                )));
            }
            // A tenant of its own root key is recreated on it, never on the
            // shared one by a process that lacks its binding.
            if !self.keys.tenant_roots.contains_key(tenant) {
                let recorded = self.recorded_own_roots().await?;
                if let Some((_, id)) = recorded.iter().find(|(t, _)| t == tenant) {
                    return Err(Error::refused(format!(
                        "tenant `{tenant}` had its keys under its own root key `{id}` (audit \
                         log, tenant.root_bound): recreate it in a process that binds it with \
                         SealerBuilder::tenant_root_key, not under the shared root key"
                    )));
                }
            }
            let version = record.latest_version().saturating_add(1);
            let (new, _) = self.keys.new_key_version(tenant, version).await?;
            self.keys
                .record_own_root(tenant, version, &new.wrapped, self.actor.as_deref())
                .await?;
            let audit = self
                .audit(AuditEvent::TenantRecreated, tenant, version, String::new())
                .await?;
            let outcome = self.keys.store.recreate_tenant(tenant, new, &audit).await?;
            self.keys.cache.invalidate(tenant);
            match outcome {
                InsertOutcome::Inserted => Ok(version),
                _ => Ok(self.live(tenant).await?.latest_version()),
            }
        })
        .await
    }

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
    async fn rewrap_one(
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
    async fn recorded_own_roots(&self) -> Result<BTreeSet<(String, String)>> {
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

    /// How many stored keys (and the audit-chain key) are wrapped under each
    /// root key.
    async fn keys_per_root(&self) -> Result<BTreeMap<String, u64>> {
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
    async fn scan_roots(&self) -> Result<BTreeMap<String, (u64, WrappedSample)>> {
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

    async fn check_audit(&self) -> Result<AuditReport> {
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
    async fn walk_audit_with(
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

impl fmt::Debug for KeyAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAdmin")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// Whether `root_key_id` is one of the root keys of the tenant's own provider
/// in `sealer`, for the tenant key `ctx`.
fn own_is(sealer: &Keys, ctx: &WrapContext<'_>, root_key_id: &str) -> bool {
    sealer
        .own_root(ctx)
        .is_some_and(|own| own.root_key_ids().contains(&root_key_id))
}

/// Collects, from one audit entry, the root keys it names as this store's
/// (made, restated, or re-wrapped from or to) and those it records as
/// destroyed.
fn root_key_names(
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

/// The highest key version a shred of the tenant in `record` destroyed: the
/// one below its lowest version still holding a key (a re-creation after the
/// shred adds versions above), or its highest.
fn shredded_through(record: &TenantRecord) -> u32 {
    record
        .keys
        .iter()
        .filter(|k| k.wrapped.is_some())
        .map(|k| k.version)
        .min()
        .map_or_else(|| record.latest_version(), |v| v.saturating_sub(1))
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

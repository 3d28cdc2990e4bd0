//! A tenant's key versions: rotation, state changes, the minimum decryption version, re-creation.

use super::KeyAdmin;
use std::time::Duration;

use super::report::{Rotation, RotationOutcome, ScheduledRotation};
use crate::audit::AuditEvent;
use crate::context::check_new_tenant;
use crate::error::{Error, Result};
use crate::store::{InsertOutcome, KeyState};
use crate::telemetry;

impl KeyAdmin {
    /// Rotates `tenant` if its primary key version is at least `older_than`
    /// old (whatever its age, with `None`): the policy behind a rotation
    /// schedule such as `fieldseal rotate --all --older-than 90d`. With
    /// `dry_run`, reports what it would do and changes nothing.
    ///
    /// A refusal that concerns only this tenant (its own root key refuses, or
    /// its keys are under a root key this process does not hold) is reported
    /// as [`RotationOutcome::Refused`], so that a schedule goes on with the
    /// other tenants.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTenant`]; [`Error::TenantShredded`]; the errors of
    /// [`KeyAdmin::rotate`] other than the refusals above.
    pub async fn rotate_if_due(
        &self,
        tenant: &str,
        older_than: Option<Duration>,
        dry_run: bool,
    ) -> Result<ScheduledRotation> {
        let record = self.describe(tenant).await?;
        // A shredded tenant is never due, in a dry run as in a real one
        // (whose rotation would refuse it).
        if let Some(shredded_at) = record.shredded_at {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
                shredded_at,
            });
        }
        let primary = record.latest_version();
        let now = self.keys.now().unix_seconds();
        let age = record
            .keys
            .iter()
            .find(|k| k.version == primary)
            .map_or(0, |k| {
                now.saturating_sub(k.created_at.unix_seconds()).max(0)
            });
        let primary_age = Duration::from_secs(u64::try_from(age).unwrap_or(0));
        let outcome = if older_than.is_some_and(|limit| primary_age < limit) {
            RotationOutcome::NotDue
        } else if dry_run {
            RotationOutcome::WouldRotate
        } else {
            match self.rotate(tenant).await {
                Ok(rotation) => RotationOutcome::Rotated(rotation),
                Err(
                    e @ (Error::TenantRootKeyUnavailable { .. }
                    | Error::RootKeyNotConfigured { .. }),
                ) => RotationOutcome::Refused(e),
                Err(e) => return Err(e),
            }
        };
        Ok(ScheduledRotation {
            primary,
            primary_age,
            outcome,
        })
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

    pub(super) async fn change_state(
        &self,
        tenant: &str,
        version: u32,
        to: KeyState,
    ) -> Result<()> {
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
}

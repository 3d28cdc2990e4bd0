//! A tenant's unwrapped keys, and sealing and opening one value with them.
//!
//! A [`Keyring`] is an immutable snapshot of one tenant's key versions as the key
//! store held them when it was loaded, with each usable version's record-key
//! PRK already extracted. Sealing and opening are synchronous and allocate only
//! the output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use secrecy::ExposeSecret as _;

use std::fmt;

use crate::context::{Context, ContextTemplate};
use crate::crypto::TenantKeyDeriver;
use crate::envelope::{Plaintext, open_record, seal_record};
use crate::error::{Error, Result};
use crate::format::{Algorithm, SealedValue};
use crate::provider::WrappedKey;
use crate::secret::Opened;
use crate::time::Timestamp;

/// One key version in a keyring.
#[derive(Debug)]
pub(crate) struct VersionEntry {
    pub(crate) version: u32,
    pub(crate) status: VersionStatus,
}

/// Shredding and destruction done by this process, shared by every snapshot of
/// one tenant (old ones included) so that all of them stop at once.
///
/// Each revocation bumps `epoch`; a snapshot remembers the epoch it was loaded
/// at, so the hot path costs one atomic load until something is revoked.
#[derive(Debug, Default)]
pub(crate) struct Revocation {
    epoch: AtomicU64,
    events: Mutex<Revoked>,
}

#[derive(Debug, Default)]
struct Revoked {
    /// Epoch at which the tenant was shredded, and when.
    shredded: Option<(u64, Timestamp)>,
    /// Versions destroyed: (version, epoch, when).
    destroyed: Vec<(u32, u64, Timestamp)>,
}

impl Revocation {
    /// The current epoch, read before loading a snapshot from the store.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn record(&self, f: impl FnOnce(&mut Revoked, u64)) {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let epoch = self.epoch.load(Ordering::Acquire).saturating_add(1);
        f(&mut events, epoch);
        self.epoch.store(epoch, Ordering::Release);
    }

    /// The tenant was shredded: every snapshot loaded before now stops.
    pub(crate) fn shred(&self, at: Timestamp) {
        self.record(|events, epoch| events.shredded = Some((epoch, at)));
    }

    /// `version` was destroyed: snapshots loaded before now stop using it.
    pub(crate) fn destroy(&self, version: u32, at: Timestamp) {
        self.record(|events, epoch| events.destroyed.push((version, epoch, at)));
    }

    /// Whether anything was ever revoked (such entries are kept by the cache).
    pub(crate) fn is_used(&self) -> bool {
        self.epoch.load(Ordering::Acquire) > 0
    }

    /// The revocation that applies to a snapshot loaded at `loaded_epoch` using
    /// `version`, if any.
    fn check(&self, loaded_epoch: u64, version: Option<u32>) -> Option<Revoke> {
        if self.epoch.load(Ordering::Acquire) == loaded_epoch {
            return None;
        }
        let events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((epoch, at)) = events.shredded
            && loaded_epoch < epoch
        {
            return Some(Revoke::Shredded(at));
        }
        let version = version?;
        events
            .destroyed
            .iter()
            .find(|(v, epoch, _)| *v == version && loaded_epoch < *epoch)
            .map(|(_, _, at)| Revoke::Destroyed(*at))
    }
}

enum Revoke {
    Shredded(Timestamp),
    Destroyed(Timestamp),
}

#[derive(Debug)]
pub(crate) enum VersionStatus {
    /// Unwrapped and usable; the wrapped form is kept to recognise the same key
    /// on reload without unwrapping it again.
    Usable {
        deriver: TenantKeyDeriver,
        wrapped: WrappedKey,
    },
    Disabled {
        since: Timestamp,
    },
    Destroyed {
        at: Timestamp,
    },
}

/// A tenant's keys as loaded from the store.
#[derive(Debug)]
pub(crate) struct Keyring {
    pub(crate) tenant: Box<str>,
    /// Ascending by version; the last is the primary.
    pub(crate) versions: Vec<VersionEntry>,
    pub(crate) min_decryption_version: u32,
    pub(crate) shredded_at: Option<Timestamp>,
    /// The store's generation of the tenant when loaded (see `TenantRecord`).
    pub(crate) generation: u64,
    pub(crate) loaded_at: Instant,
    /// Milliseconds after `loaded_at` of the last generation check.
    pub(crate) last_check_ms: AtomicU64,
    /// The tenant's shared revocation state, and its epoch when this snapshot
    /// was read from the store.
    pub(crate) revocation: Arc<Revocation>,
    pub(crate) epoch: u64,
}

impl Keyring {
    fn shredded_error(&self, at: Timestamp) -> Error {
        Error::TenantShredded {
            tenant: self.tenant.to_string(),
            shredded_at: at,
        }
    }

    /// Fails if the tenant is shredded, or `version` was destroyed, since this
    /// snapshot was loaded.
    fn check_live(&self, version: Option<u32>) -> Result<()> {
        if let Some(at) = self.shredded_at {
            return Err(self.shredded_error(at));
        }
        match self.revocation.check(self.epoch, version) {
            None => Ok(()),
            Some(Revoke::Shredded(at)) => Err(self.shredded_error(at)),
            Some(Revoke::Destroyed(at)) => Err(Error::KeyDestroyed {
                tenant: self.tenant.to_string(),
                version: version.unwrap_or(0),
                destroyed_at: at,
            }),
        }
    }

    fn check_tenant(&self, tenant: &str) -> Result<()> {
        if *self.tenant != *tenant {
            return Err(Error::TenantMismatch {
                handle: self.tenant.to_string(),
                context: tenant.to_string(),
            });
        }
        Ok(())
    }

    /// The primary version and its deriver.
    pub(crate) fn primary(&self) -> Result<(u32, &TenantKeyDeriver)> {
        self.check_live(Some(self.primary_version()))?;
        match self.versions.last() {
            Some(VersionEntry {
                version,
                status: VersionStatus::Usable { deriver, .. },
                ..
            }) => Ok((*version, deriver)),
            // The store guarantees the highest version is active; a store that
            // breaks this gets a clear error rather than a wrong key.
            _ => Err(Error::Store {
                message: format!(
                    "tenant `{}` has no usable primary key (its highest key version is not \
                     active): the key store is inconsistent",
                    self.tenant
                ),
                source: None,
            }),
        }
    }

    pub(crate) fn primary_version(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }

    pub(crate) fn has_version(&self, version: u32) -> bool {
        self.versions.iter().any(|v| v.version == version)
    }

    /// Re-seals `sealed` under the primary key if it is under an older version.
    pub(crate) fn reseal(
        &self,
        algorithm: Algorithm,
        ctx: &Context,
        sealed: &SealedValue,
    ) -> Result<Option<SealedValue>> {
        let opened = self.open(ctx, sealed)?;
        if !opened.is_stale() {
            return Ok(None);
        }
        self.seal(algorithm, ctx, opened.plaintext().expose_secret())
            .map(Some)
    }

    /// The deriver for `version`, or the error that explains why it cannot open.
    pub(crate) fn deriver_for(&self, version: u32) -> Result<&TenantKeyDeriver> {
        self.check_live(Some(version))?;
        let entry = self
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::UnknownKeyVersion {
                tenant: self.tenant.to_string(),
                version,
            })?;
        match &entry.status {
            VersionStatus::Destroyed { at } => Err(Error::KeyDestroyed {
                tenant: self.tenant.to_string(),
                version,
                destroyed_at: *at,
            }),
            VersionStatus::Disabled { since } => Err(Error::KeyDisabled {
                tenant: self.tenant.to_string(),
                version,
                disabled_at: *since,
            }),
            VersionStatus::Usable { deriver, .. } => {
                if version < self.min_decryption_version {
                    return Err(Error::BelowMinimumVersion {
                        tenant: self.tenant.to_string(),
                        version,
                        minimum: self.min_decryption_version,
                    });
                }
                Ok(deriver)
            }
        }
    }

    /// Seals `plaintext` under the primary key.
    pub(crate) fn seal(
        &self,
        algorithm: Algorithm,
        ctx: &Context,
        plaintext: &[u8],
    ) -> Result<SealedValue> {
        self.seal_checked(algorithm, ctx, Plaintext::new(plaintext)?)
    }

    /// As [`Keyring::seal`], for a caller that checked the plaintext's length
    /// before it looked the keys up.
    pub(crate) fn seal_checked(
        &self,
        algorithm: Algorithm,
        ctx: &Context,
        plaintext: Plaintext<'_>,
    ) -> Result<SealedValue> {
        self.check_tenant(ctx.tenant())?;
        let (version, deriver) = self.primary()?;
        seal_record(
            deriver,
            algorithm,
            version,
            ctx.associated_data(),
            plaintext,
        )
    }

    /// Seals `plaintext` for row `row` of `template` under the primary key.
    pub(crate) fn seal_row(
        &self,
        algorithm: Algorithm,
        template: &ContextTemplate,
        row: impl fmt::Display,
        plaintext: &[u8],
    ) -> Result<SealedValue> {
        // The row id first, as a context built per row is checked before
        // anything else; then the order of `seal`.
        template.with_associated_data(row, |aad| {
            let plaintext = Plaintext::new(plaintext)?;
            self.check_tenant(template.tenant())?;
            let (version, deriver) = self.primary()?;
            seal_record(deriver, algorithm, version, aad, plaintext)
        })?
    }

    /// Opens `sealed`, reporting whether it is under an older version.
    pub(crate) fn open(&self, ctx: &Context, sealed: &SealedValue) -> Result<Opened> {
        self.check_tenant(ctx.tenant())?;
        self.open_aad(ctx.associated_data(), sealed)
    }

    /// Opens `sealed` as the value of row `row` of `template`.
    pub(crate) fn open_row(
        &self,
        template: &ContextTemplate,
        row: impl fmt::Display,
        sealed: &SealedValue,
    ) -> Result<Opened> {
        template.with_associated_data(row, |aad| {
            self.check_tenant(template.tenant())?;
            self.open_aad(aad, sealed)
        })?
    }

    fn open_aad(&self, aad: &[u8], sealed: &SealedValue) -> Result<Opened> {
        let version = sealed.key_version();
        let deriver = self.deriver_for(version)?;
        let plaintext = open_record(deriver, sealed, aad)?;
        Ok(Opened::new(
            plaintext,
            version,
            version != self.primary_version(),
        ))
    }
}

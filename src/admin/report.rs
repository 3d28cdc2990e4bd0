//! What the key administration calls report.

use std::time::Duration;

use crate::error::Error;
use crate::provider::WrappedKey;
use crate::time::Timestamp;

/// What [`KeyAdmin::rotate`](crate::KeyAdmin::rotate) did.
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

/// What [`KeyAdmin::rotate_if_due`](crate::KeyAdmin::rotate_if_due) found
/// and did for one tenant.
#[derive(Debug)]
#[non_exhaustive]
pub struct ScheduledRotation {
    /// The tenant's primary key version when it was looked at.
    pub primary: u32,
    /// How old that version was (from its creation, on the sealer's clock).
    pub primary_age: Duration,
    /// What was done.
    pub outcome: RotationOutcome,
}

/// The outcome of a scheduled rotation of one tenant.
#[derive(Debug)]
#[non_exhaustive]
pub enum RotationOutcome {
    /// The primary version is younger than the limit: nothing was done.
    NotDue,
    /// Due, and left alone because this was a dry run.
    WouldRotate,
    /// Rotated.
    Rotated(Rotation),
    /// Due, but the tenant's own root key refused
    /// ([`Error::TenantRootKeyUnavailable`](crate::Error::TenantRootKeyUnavailable)),
    /// or its keys are under a root key this process does not hold
    /// ([`Error::RootKeyNotConfigured`](crate::Error::RootKeyNotConfigured)).
    /// That is this tenant's matter: a schedule goes on with the others, and
    /// reports it.
    Refused(Error),
}

/// What [`KeyAdmin::retire_root_keys`](crate::KeyAdmin::retire_root_keys) did, root key by root key.
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
    /// [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all) to the current root key).
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

/// What became of one root key, as [`KeyAdmin::erasure_report`](crate::KeyAdmin::erasure_report) finds it.
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
/// [`KeyAdmin::erasure_report`](crate::KeyAdmin::erasure_report).
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
pub(super) type WrappedSample = (Option<(String, u32)>, WrappedKey);

/// What [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all) did.
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

/// What [`KeyAdmin::verify_root_keys`](crate::KeyAdmin::verify_root_keys) proved: the provider's root keys
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

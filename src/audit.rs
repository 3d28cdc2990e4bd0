//! The tamper-evident key audit log: an append-only chain of MACs.
//!
//! Every key event is one [`AuditEntry`]. Entry `n` carries
//! `mac_n = HMAC-SHA256(audit_key, encode(entry_n) || mac_{n-1})`, with
//! `mac_0` = 32 zero bytes. The audit key is a random key wrapped by the root
//! key provider and kept in the key store, so whoever can write the store but
//! cannot use the root key cannot compute a consistent chain: editing,
//! deleting, reordering or inserting an entry breaks a link, and
//! [`KeyAdmin::verify_audit`](crate::KeyAdmin::verify_audit) reports the first
//! broken one.
//!
//! Pruning old entries appends a `audit.pruned` entry that records the MAC of
//! the last pruned entry, so the remaining chain still verifies from its first
//! entry. Deleting the newest entries (truncating the tail) is detected against
//! the store's own record of its newest entry
//! ([`KeyStore::audit_head`](crate::store::KeyStore::audit_head)); an attacker who
//! rewrites that too is caught only by comparing [`AuditReport::head`] with a
//! copy kept elsewhere. Verification also replays what the entries say
//! happened to each tenant's keys and compares it with the store
//! ([`AuditReport::mismatches`]).

/// The shred ledger: erasure that survives restoring a backup.
pub use crate::ledger::{LedgerLine, LedgerReplay, ShredLedger};
use std::fmt;

use subtle::ConstantTimeEq;

use crate::crypto::HmacKey;
use crate::error::Error;
use crate::time::Timestamp;

/// Length of an audit MAC.
pub const AUDIT_MAC_LEN: usize = 32;

/// What happened to a key. Stored as its [`as_str`](AuditEvent::as_str) name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditEvent {
    /// A tenant's first key version was created.
    TenantCreated,
    /// A new primary key version was created.
    KeyRotated,
    /// A key version was disabled.
    KeyDisabled,
    /// A disabled key version was enabled again.
    KeyEnabled,
    /// A key version was destroyed (its wrapped bytes erased).
    KeyDestroyed,
    /// The tenant's minimum decryption version changed.
    MinDecryptionVersionSet,
    /// Every key version of a tenant was destroyed and the tenant marked shredded.
    TenantShredded,
    /// A shredded tenant was given a new key.
    TenantRecreated,
    /// A key was re-wrapped under another root key.
    KeyRewrapped,
    /// Entries up to a sequence number were pruned.
    AuditPruned,
    /// The key store stopped accepting keys wrapped without its id.
    UnboundWrapsRefused,
    /// A root key was created for a new epoch (detail: its id).
    RootKeyCreated,
    /// No live key is wrapped under a root key any more (detail: its id):
    /// backup retention for it starts.
    RootKeyUnused,
    /// A root key was destroyed in the provider (detail: its id, and when it
    /// stops unwrapping for good).
    RootKeyDestroyed,
    /// A root key this store made or used, restated after pruning removed
    /// the entries that named it (detail: its id).
    RootKeyNamed,
    /// A tenant's keys are wrapped under a root key of its own (detail: its
    /// id): recorded when such a tenant is created, re-created or rotated, and
    /// when it is bound.
    TenantRootBound,
}

impl AuditEvent {
    /// The stored name, for example `tenant_key.rotated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantCreated => "tenant.created",
            Self::KeyRotated => "tenant_key.rotated",
            Self::KeyDisabled => "tenant_key.disabled",
            Self::KeyEnabled => "tenant_key.enabled",
            Self::KeyDestroyed => "tenant_key.destroyed",
            Self::MinDecryptionVersionSet => "tenant.min_decryption_version_set",
            Self::TenantShredded => "tenant.shredded",
            Self::TenantRecreated => "tenant.recreated",
            Self::KeyRewrapped => "key.rewrapped",
            Self::AuditPruned => "audit.pruned",
            Self::UnboundWrapsRefused => "store.unbound_wraps_refused",
            Self::RootKeyCreated => "root_key.created",
            Self::RootKeyUnused => "root_key.unused",
            Self::RootKeyDestroyed => "root_key.destroyed",
            Self::RootKeyNamed => "root_key.named",
            Self::TenantRootBound => "tenant.root_bound",
        }
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the audit log, as stored.
///
/// Never holds a secret: only ids, versions, names and times.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When the event happened.
    pub at: Timestamp,
    /// The event's name ([`AuditEvent::as_str`]).
    pub event: String,
    /// The tenant, or empty for events about no tenant.
    pub tenant: String,
    /// The key version, or 0 for events about no single version.
    pub version: u32,
    /// Who asked for it (see [`KeyAdmin::actor`](crate::KeyAdmin::actor)), or empty.
    pub actor: String,
    /// Event details, for example `root-1 -> root-2`.
    pub detail: String,
    /// The chain MAC over this entry and the previous entry's MAC.
    pub mac: [u8; AUDIT_MAC_LEN],
}

impl AuditEntry {
    /// Entry `seq` as a store read it: event `event` at `at`, chained by
    /// `mac`, about no tenant, no version and no actor, with no detail until
    /// the store sets those fields from its row.
    pub fn new(
        seq: u64,
        at: Timestamp,
        event: impl Into<String>,
        mac: [u8; AUDIT_MAC_LEN],
    ) -> Self {
        Self {
            seq,
            at,
            event: event.into(),
            tenant: String::new(),
            version: 0,
            actor: String::new(),
            detail: String::new(),
            mac,
        }
    }
}

impl fmt::Debug for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditEntry")
            .field("seq", &self.seq)
            .field("at", &self.at)
            .field("event", &self.event)
            .field("tenant", &self.tenant)
            .field("version", &self.version)
            .field("actor", &self.actor)
            .field("detail", &self.detail)
            .field("mac", &hex(&self.mac))
            .finish()
    }
}

/// An event to append to the audit log, with the key that chains it.
///
/// Key store implementations receive one with each change and call
/// [`AuditAppend::link`] in the same transaction as the change, passing the
/// log's current last entry.
pub struct AuditAppend<'a> {
    key: &'a HmacKey,
    at: Timestamp,
    event: AuditEvent,
    tenant: String,
    version: u32,
    actor: String,
    detail: String,
}

/// The longest actor an audit entry records, in bytes.
pub(crate) const MAX_ACTOR_LEN: usize = 256;
/// The longest detail an audit entry records, in bytes.
const MAX_DETAIL_LEN: usize = 1024;

impl<'a> AuditAppend<'a> {
    /// # Errors
    ///
    /// [`Error::Config`] for an actor longer than [`MAX_ACTOR_LEN`] bytes or
    /// holding a control character: it is refused before anything is written,
    /// rather than stored cut (a MySQL column in a non-strict `sql_mode` cuts
    /// a long value, and the stored entry would no longer verify).
    pub(crate) fn new(
        key: &'a HmacKey,
        event: AuditEvent,
        tenant: &str,
        version: u32,
        actor: Option<&str>,
        detail: String,
        at: Timestamp,
    ) -> Result<Self, Error> {
        let actor = actor.unwrap_or_default();
        if actor.len() > MAX_ACTOR_LEN || actor.chars().any(char::is_control) {
            return Err(Error::config(format!(
                "audit actor: {} bytes{}; an actor (a person, a service account, a ticket) is \
                 at most {MAX_ACTOR_LEN} bytes, without control characters",
                actor.len(),
                if actor.chars().any(char::is_control) {
                    ", with a control character"
                } else {
                    ""
                }
            )));
        }
        if detail.len() > MAX_DETAIL_LEN {
            return Err(Error::config(format!(
                "audit detail: {} bytes; at most {MAX_DETAIL_LEN} (is a root key id that long?)",
                detail.len()
            )));
        }
        Ok(Self {
            key,
            at,
            event,
            tenant: tenant.to_string(),
            version,
            actor: actor.to_string(),
            detail,
        })
    }

    /// The event.
    pub fn event(&self) -> AuditEvent {
        self.event
    }

    /// When the event happened.
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// The entry that follows the log's last entry, given as its sequence
    /// number and MAC (`None` when the log has never had an entry).
    pub fn link(&self, previous: Option<(u64, &[u8; AUDIT_MAC_LEN])>) -> AuditEntry {
        let (seq, prev_mac) = match previous {
            Some((seq, mac)) => (seq.saturating_add(1), *mac),
            None => (1, [0u8; AUDIT_MAC_LEN]),
        };
        let mut entry = AuditEntry {
            seq,
            at: self.at,
            event: self.event.as_str().to_string(),
            tenant: self.tenant.clone(),
            version: self.version,
            actor: self.actor.clone(),
            detail: self.detail.clone(),
            mac: [0; AUDIT_MAC_LEN],
        };
        entry.mac = entry_mac(self.key, &entry, &prev_mac);
        entry
    }
}

impl fmt::Debug for AuditAppend<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditAppend")
            .field("event", &self.event)
            .field("tenant", &self.tenant)
            .field("version", &self.version)
            .field("actor", &self.actor)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

/// `HMAC(key, "fieldseal/v1/audit" || u64be(seq) || i64be(at) || lp(event) ||
/// lp(tenant) || u32be(version) || lp(actor) || lp(detail) || prev_mac)`.
pub(crate) fn entry_mac(
    key: &HmacKey,
    entry: &AuditEntry,
    prev_mac: &[u8; AUDIT_MAC_LEN],
) -> [u8; AUDIT_MAC_LEN] {
    let lp = |s: &str| {
        let mut v = Vec::with_capacity(4 + s.len());
        v.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    };
    let mac = key.mac(&[
        b"fieldseal/v1/audit",
        &entry.seq.to_be_bytes(),
        &entry.at.unix_seconds().to_be_bytes(),
        &lp(&entry.event),
        &lp(&entry.tenant),
        &entry.version.to_be_bytes(),
        &lp(&entry.actor),
        &lp(&entry.detail),
        prev_mac,
    ]);
    *mac
}

/// The detail of an `audit.pruned` entry: `through <seq> anchor <mac hex>`.
pub(crate) fn pruned_detail(through: &AuditEntry) -> String {
    format!("through {} anchor {}", through.seq, hex(&through.mac))
}

fn parse_pruned_detail(detail: &str) -> Option<(u64, [u8; AUDIT_MAC_LEN])> {
    let mut parts = detail.split(' ');
    let (Some("through"), Some(seq), Some("anchor"), Some(mac), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    // Exactly the form `pruned_detail` writes: `0` or a decimal number without
    // a sign or leading zeros, and 64 lowercase hexadecimal digits. `parse`
    // alone would also take `+2` and `02`, and `from_str_radix` uppercase.
    let canonical_seq = seq == "0"
        || (seq.bytes().all(|b| b.is_ascii_digit()) && !seq.starts_with('0') && !seq.is_empty());
    if !canonical_seq
        || mac.len() != 2 * AUDIT_MAC_LEN
        || !mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let seq = seq.parse().ok()?;
    let mut out = [0u8; AUDIT_MAC_LEN];
    for (byte, pair) in out.iter_mut().zip(mac.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some((seq, out))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A tenant whose stored keys disagree with what its audit entries say
/// happened to them: a key state, a minimum decryption version or a key row
/// changed, added or deleted in the store behind fieldseal's back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateMismatch {
    /// The tenant.
    pub tenant: String,
    /// The key version, or 0 for the tenant's own state.
    pub version: u32,
    /// What differs.
    pub reason: String,
}

/// The result of verifying the audit chain.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// How many entries were checked.
    pub entries: u64,
    /// Sequence number of the first entry present (1 unless pruned).
    pub first_seq: u64,
    /// Sequence number of the last entry.
    pub last_seq: u64,
    /// MAC of the last entry, hex-encoded: keep a copy elsewhere to detect a
    /// truncated tail later.
    pub head: String,
    /// The first broken link, if any.
    pub broken: Option<AuditBreak>,
    /// Tenants whose stored keys disagree with their audit entries (checked
    /// only when every link verified).
    pub mismatches: Vec<StateMismatch>,
}

impl AuditReport {
    /// `true` if every link verified and every tenant's stored keys agree
    /// with what the log says happened to them.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none() && self.mismatches.is_empty()
    }
}

/// Where and why the audit chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditBreak {
    /// The sequence number at which verification failed.
    pub seq: u64,
    /// What is wrong there.
    pub reason: String,
}

/// Verifies a chain of entries (ordered by `seq`, as read from the store).
pub(crate) struct Verifier<'a> {
    key: &'a HmacKey,
    /// The MAC the next entry must chain from, and its expected seq.
    prev: Option<([u8; AUDIT_MAC_LEN], u64)>,
    report: AuditReport,
    /// Anchors recorded by `audit.pruned` entries, for a chain whose start was
    /// pruned: (through seq, mac of that entry).
    anchors: Vec<(u64, [u8; AUDIT_MAC_LEN])>,
}

impl<'a> Verifier<'a> {
    /// `anchors` are the prune anchors found in the whole log (read ahead by the
    /// caller, since the prune entry comes after the entries it vouches for).
    pub(crate) fn new(key: &'a HmacKey) -> Self {
        Self {
            key,
            prev: None,
            report: AuditReport {
                entries: 0,
                first_seq: 0,
                last_seq: 0,
                head: String::new(),
                broken: None,
                mismatches: Vec::new(),
            },
            anchors: Vec::new(),
        }
    }

    /// Registers the prune anchor an entry carries, if it is an `audit.pruned`
    /// entry (a first pass over the log).
    pub(crate) fn note_anchor(&mut self, entry: &AuditEntry) {
        if entry.event == AuditEvent::AuditPruned.as_str()
            && let Some(anchor) = parse_pruned_detail(&entry.detail)
        {
            self.anchors.push(anchor);
        }
    }

    /// Checks the next entry. Returns `false` once the chain is broken.
    pub(crate) fn check(&mut self, entry: &AuditEntry) -> bool {
        if self.report.broken.is_some() {
            return false;
        }
        let (prev_mac, expected_seq) = match self.prev {
            Some(prev) => prev,
            None => {
                self.report.first_seq = entry.seq;
                if entry.seq == 1 {
                    ([0u8; AUDIT_MAC_LEN], 1)
                } else if let Some((_, mac)) = self
                    .anchors
                    .iter()
                    .find(|(through, _)| through.checked_add(1) == Some(entry.seq))
                {
                    (*mac, entry.seq)
                } else {
                    return self.fail(
                        entry.seq,
                        format!(
                            "the log starts at entry {}, but no `audit.pruned` entry records \
                             pruning through entry {}: entries were deleted",
                            entry.seq,
                            entry.seq.saturating_sub(1)
                        ),
                    );
                }
            }
        };
        if entry.seq != expected_seq {
            let reason = if entry.seq > expected_seq {
                format!(
                    "entry {expected_seq} is missing (the next entry present is {})",
                    entry.seq
                )
            } else {
                format!("entry {} appears out of order or twice", entry.seq)
            };
            return self.fail(expected_seq, reason);
        }
        let mac = entry_mac(self.key, entry, &prev_mac);
        if !bool::from(mac.ct_eq(&entry.mac)) {
            return self.fail(
                entry.seq,
                format!(
                    "entry {} does not verify: it was altered, inserted, or the entry before \
                     it was changed",
                    entry.seq
                ),
            );
        }
        self.report.entries += 1;
        self.report.last_seq = entry.seq;
        self.report.head = hex(&entry.mac);
        self.prev = Some((entry.mac, entry.seq.saturating_add(1)));
        true
    }

    fn fail(&mut self, seq: u64, reason: String) -> bool {
        self.report.broken = Some(AuditBreak { seq, reason });
        false
    }

    /// Whether a link broke.
    pub(crate) fn is_broken(&self) -> bool {
        self.report.broken.is_some()
    }

    /// The sequence number of the last entry verified (0 before any).
    pub(crate) fn last_seq(&self) -> u64 {
        self.report.last_seq
    }

    /// Checks the log against the store's head row, read before the walk:
    /// `mac` is the MAC of entry `seq` as the walk found it (`None` if the
    /// walk found no such entry).
    pub(crate) fn check_head(
        &mut self,
        head: (u64, [u8; AUDIT_MAC_LEN]),
        mac: Option<[u8; AUDIT_MAC_LEN]>,
    ) {
        let (seq, head_mac) = head;
        if self.report.broken.is_some() || seq == 0 {
            return;
        }
        // Pruned past the head read before the walk: nothing to compare.
        if self.report.entries > 0 && self.report.first_seq > seq {
            return;
        }
        match mac {
            Some(mac) if bool::from(mac.ct_eq(&head_mac)) => {}
            Some(_) => {
                self.fail(
                    seq,
                    format!(
                        "entry {seq} is not the entry the store's head row records: the log \
                         was rewritten from there"
                    ),
                );
            }
            None if self.report.entries == 0 => {
                self.fail(
                    1,
                    format!(
                        "the log is empty, but the store's head row records entry {seq}: the \
                         log was wiped"
                    ),
                );
            }
            None => {
                let last = self.report.last_seq;
                self.fail(
                    last.saturating_add(1),
                    format!(
                        "the log ends at entry {last}, but the store's head row records entry \
                         {seq}: entries {} to {seq} were deleted",
                        last.saturating_add(1)
                    ),
                );
            }
        }
    }

    pub(crate) fn finish(self) -> AuditReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruned_detail_round_trips() {
        let entry = AuditEntry {
            seq: 17,
            at: Timestamp::from_unix_seconds(1),
            event: "x".into(),
            tenant: String::new(),
            version: 0,
            actor: String::new(),
            detail: String::new(),
            mac: [0xab; 32],
        };
        assert_eq!(
            parse_pruned_detail(&pruned_detail(&entry)),
            Some((17, [0xab; 32]))
        );
        assert_eq!(parse_pruned_detail("through 1 anchor zz"), None);
        let mac = "ab".repeat(32);
        for bad in [
            format!("through +17 anchor {mac}"),
            format!("through 017 anchor {mac}"),
            format!("through  17 anchor {mac}"),
            format!("through 17 anchor {}", mac.to_uppercase()),
            format!("through 17 anchor {mac}0"),
            format!("through 17 anchor {mac} "),
            format!("through 18446744073709551616 anchor {mac}"),
        ] {
            assert_eq!(parse_pruned_detail(&bad), None, "{bad}");
        }
        assert_eq!(
            parse_pruned_detail(&format!("through 0 anchor {mac}")),
            Some((0, [0xab; 32]))
        );
        assert_eq!(parse_pruned_detail(""), None);
    }
}

//! The shred ledger: a file outside the database, appended at each shred, so
//! that a database restored from a backup taken before a shred can be
//! shredded again (FORMAT.md §"Shred ledger").
//!
//! A restored backup holds the wrapped keys of every tenant shredded since it
//! was taken, and the root key still unwraps them until it is destroyed.
//! Replaying the ledger after a restore destroys those keys again, so a
//! restore never brings a shredded tenant back, even inside the window before
//! the root key that wrapped them is gone.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::crypto::HmacKey;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// The first line of every ledger file.
const HEADER: &str = "fieldseal-shred-ledger v1";
/// The domain of an entry's MAC (the audit chain's is `fieldseal/v1/audit`).
const DOMAIN: &[u8] = b"fieldseal/v1/shred-ledger";
/// The store id written for a key store without an identity.
pub(crate) const NO_STORE_ID: &str = "-";
/// The longest line read: a 255-byte tenant id in hex and the fixed fields.
const MAX_LINE: usize = 1024;
/// The most entries a ledger is read for (each names one shred).
const MAX_ENTRIES: usize = 10_000_000;

/// A file that records every shred of a key store, outside its database.
///
/// Give it to [`SealerBuilder::shred_ledger`](crate::SealerBuilder::shred_ledger):
/// every [`KeyAdmin::shred_tenant`](crate::KeyAdmin::shred_tenant) then appends
/// one line (and syncs it to disk) once the shred has committed. After
/// restoring the database from a backup, run
/// [`KeyAdmin::replay_shred_ledger`](crate::KeyAdmin::replay_shred_ledger)
/// before anything opens a value: it destroys again the keys of every tenant
/// shredded since the backup was taken.
///
/// Each line names the key store (its identity), the tenant, when it was
/// shredded and the highest key version the shred destroyed, and carries a
/// MAC under the store's audit-chain key, so a line added or changed by
/// someone without that key is refused instead of destroying a live tenant's
/// keys. Lines of other key stores are skipped: one file may serve several.
///
/// # Security
///
/// Keep the ledger where the database's backups are not: on another volume
/// or in an object store with versioning, with its own backups. A ledger
/// restored together with the database it describes is as old as the backup
/// and misses the shreds that came after it.
#[derive(Clone, PartialEq, Eq)]
pub struct ShredLedger {
    path: PathBuf,
}

impl ShredLedger {
    /// The ledger at `path` (created, readable by its owner only, at the
    /// first shred).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the ledger is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, reason: impl Into<String>, source: Option<std::io::Error>) -> Error {
        Error::ShredLedger {
            path: self.path.clone(),
            reason: reason.into(),
            source,
        }
    }

    /// Appends `entry` and syncs the file to disk (a blocking write of one
    /// line; shreds are rare).
    pub(crate) fn append(&self, key: &HmacKey, entry: &LedgerEntry) -> Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&self.path)
            .map_err(|e| self.error("cannot be opened for appending", Some(e)))?;
        let len = file
            .metadata()
            .map_err(|e| self.error("cannot be read", Some(e)))?
            .len();
        let mut text = String::new();
        if len == 0 {
            text.push_str(HEADER);
            text.push('\n');
        } else if !self.ends_with_newline()? {
            // A line cut short by a crash stays a line of its own (refused
            // when read), and this one stays whole.
            text.push('\n');
        }
        text.push_str(&entry.line(key));
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| self.error("cannot be written", Some(e)))?;
        if len == 0 {
            // A new file's directory entry must reach the disk too.
            #[cfg(unix)]
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| self.error("its directory cannot be synced", Some(e)))?;
            }
        }
        Ok(())
    }

    fn ends_with_newline(&self) -> Result<bool> {
        use std::io::Seek;
        let mut file = std::fs::File::open(&self.path)
            .map_err(|e| self.error("cannot be opened for reading", Some(e)))?;
        let mut last = [0u8; 1];
        file.seek(std::io::SeekFrom::End(-1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(|e| self.error("cannot be read", Some(e)))?;
        Ok(last == *b"\n")
    }

    /// Reads every line: the entries of key store `store_id` whose MAC
    /// verifies under `key`, the lines refused (with their line numbers), and
    /// how many lines name other key stores.
    pub(crate) fn read(&self, key: &HmacKey, store_id: &str) -> Result<ReadLedger> {
        let file = std::fs::File::open(&self.path)
            .map_err(|e| self.error("cannot be opened for reading", Some(e)))?;
        let mut reader = BufReader::new(file);
        let mut out = ReadLedger::default();
        let mut line = Vec::new();
        let mut number = 0usize;
        loop {
            line.clear();
            // At most one byte past the longest line: a longer one is refused
            // without reading it whole.
            let read = (&mut reader)
                .take(u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| self.error("cannot be read", Some(e)))?;
            if read == 0 {
                break;
            }
            number += 1;
            if line.last() != Some(&b'\n') {
                if line.len() > MAX_LINE {
                    return Err(self.error(
                        format!(
                            "line {number} is longer than {MAX_LINE} bytes: not a shred ledger"
                        ),
                        None,
                    ));
                }
                // The last line, cut short (a crash mid-append): its shred
                // was committed, so the operator must look at it.
                if number == 1 {
                    return Err(self.error(
                        format!("its first line is not `{HEADER}`: not a shred ledger"),
                        None,
                    ));
                }
                out.rejected.push(LedgerLine {
                    line: number,
                    reason: "incomplete line (a write cut short)".into(),
                });
                break;
            }
            line.pop();
            if number == 1 {
                if line != HEADER.as_bytes() {
                    return Err(self.error(
                        format!("its first line is not `{HEADER}`: not a shred ledger"),
                        None,
                    ));
                }
                continue;
            }
            if out.entries.len() + out.rejected.len() >= MAX_ENTRIES {
                return Err(self.error(format!("more than {MAX_ENTRIES} entries"), None));
            }
            let reject = |reason: String| LedgerLine {
                line: number,
                reason,
            };
            let Ok(text) = std::str::from_utf8(&line) else {
                out.rejected.push(reject("not UTF-8".into()));
                continue;
            };
            match LedgerEntry::parse(text) {
                Err(reason) => out.rejected.push(reject(reason)),
                Ok((entry, mac)) => {
                    let verifies = bool::from(entry.mac(key).ct_eq(&mac));
                    match (entry.store_id == store_id, verifies) {
                        (true, true) => out.entries.push((number, entry)),
                        // Another store's line, under its own audit key.
                        (false, false) => out.other_stores += 1,
                        (true, false) => out.rejected.push(reject(
                            "its MAC does not verify under this key store's audit key \
                             (altered, or forged)"
                                .into(),
                        )),
                        // This store's audit key, another store id: this
                        // store's id changed since the shred (or was changed).
                        (false, true) => out.rejected.push(reject(format!(
                            "its MAC verifies under this key store's audit key but it names \
                             key store `{}`, not this store's `{store_id}`: the store's id \
                             changed since the shred (a backup from before store ids, \
                             migrated again, or an altered id); nothing was done for it",
                            entry.store_id
                        ))),
                    }
                }
            }
        }
        if number == 0 {
            return Err(self.error("is empty: not a shred ledger", None));
        }
        Ok(out)
    }
}

impl fmt::Debug for ShredLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShredLedger")
            .field("path", &self.path)
            .finish()
    }
}

/// A ledger as read: its verified entries of one store, the lines refused,
/// and how many lines name other stores.
#[derive(Debug, Default)]
pub(crate) struct ReadLedger {
    pub(crate) entries: Vec<(usize, LedgerEntry)>,
    pub(crate) rejected: Vec<LedgerLine>,
    pub(crate) other_stores: u64,
}

/// A line of a shred ledger that was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerLine {
    /// Its line number, from 1.
    pub line: usize,
    /// Why it was refused (never the line's content).
    pub reason: String,
}

/// One shred: every key version of `tenant` up to `through` created at or
/// before `at` was destroyed at `at`, in the key store `store_id`, whose audit
/// log had entry `head_seq` with MAC `head_mac` right after (0 and zeros: a
/// store that keeps no head).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LedgerEntry {
    pub(crate) store_id: String,
    pub(crate) at: Timestamp,
    pub(crate) through: u32,
    pub(crate) tenant: String,
    pub(crate) head_seq: u64,
    pub(crate) head_mac: [u8; 32],
}

impl LedgerEntry {
    /// `HMAC(audit key, "fieldseal/v1/shred-ledger" || lp(store_id) ||
    /// i64be(at) || u32be(through) || lp(tenant) || u64be(head_seq) ||
    /// head_mac)`.
    fn mac(&self, key: &HmacKey) -> [u8; 32] {
        let lp = |s: &str| {
            let mut v = Vec::with_capacity(4 + s.len());
            v.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
            v.extend_from_slice(s.as_bytes());
            v
        };
        *key.mac(&[
            DOMAIN,
            &lp(&self.store_id),
            &self.at.unix_seconds().to_be_bytes(),
            &self.through.to_be_bytes(),
            &lp(&self.tenant),
            &self.head_seq.to_be_bytes(),
            &self.head_mac,
        ])
    }

    /// `<store id> <unix seconds> <through> <tenant, hex> <head seq> <head
    /// mac, hex> <mac, hex>`.
    pub(crate) fn line(&self, key: &HmacKey) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.store_id,
            self.at.unix_seconds(),
            self.through,
            hex(self.tenant.as_bytes()),
            self.head_seq,
            hex(&self.head_mac),
            hex(&self.mac(key))
        )
    }

    /// The entry a line holds, and the MAC it carries (not yet verified).
    fn parse(text: &str) -> std::result::Result<(Self, [u8; 32]), String> {
        let fields: Vec<&str> = text.split(' ').collect();
        let [store_id, at, through, tenant, head_seq, head_mac, mac] = fields.as_slice() else {
            return Err("not seven fields separated by single spaces".into());
        };
        let valid_store = *store_id == NO_STORE_ID
            || (!store_id.is_empty()
                && store_id.len() <= 64
                && store_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        if !valid_store {
            return Err("malformed key store id".into());
        }
        let at = canonical::<i64>(at).ok_or("malformed time")?;
        let through = canonical::<u32>(through).ok_or("malformed key version")?;
        let tenant = unhex(tenant)
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|t| !t.is_empty())
            .ok_or("malformed tenant")?;
        let head_seq = canonical::<u64>(head_seq).ok_or("malformed audit entry number")?;
        let head_mac: [u8; 32] = unhex(head_mac)
            .and_then(|b| b.try_into().ok())
            .ok_or("malformed audit entry MAC")?;
        let mac: [u8; 32] = unhex(mac)
            .and_then(|b| b.try_into().ok())
            .ok_or("malformed MAC")?;
        let entry = Self {
            store_id: (*store_id).to_string(),
            at: Timestamp::from_unix_seconds(at),
            through,
            tenant,
            head_seq,
            head_mac,
        };
        Ok((entry, mac))
    }
}

/// A number in its one canonical decimal form (no sign, no leading zero).
fn canonical<T: std::str::FromStr + ToString>(s: &str) -> Option<T> {
    let n = s.parse::<T>().ok()?;
    (n.to_string() == s).then_some(n)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hexadecimal only.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| match p {
            [h, l] => Some(digit(*h)? << 4 | digit(*l)?),
            _ => None,
        })
        .collect()
}

/// What replaying a shred ledger did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerReplay {
    /// Entries read whose MAC verified.
    pub entries: u64,
    /// Tenants whose keys were destroyed again (they held keys the ledger
    /// says were shredded: the database was restored from before the shred).
    pub shredded: Vec<String>,
    /// Entries already in effect (no key they name holds a wrapped key).
    pub already: u64,
    /// Entries for tenants this key store does not know (created after the
    /// backup was taken, or never here).
    pub absent: u64,
    /// Entries of other key stores, skipped.
    pub other_stores: u64,
    /// Lines refused: nothing was done for them. Investigate each.
    pub rejected: Vec<LedgerLine>,
}

impl LedgerReplay {
    /// Whether every line of the ledger was read and applied.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LedgerEntry {
        LedgerEntry {
            store_id: "0123456789abcdef0123456789abcdef".into(),
            at: Timestamp::from_unix_seconds(1_780_000_000),
            through: 3,
            tenant: "acme café".into(),
            head_seq: 17,
            head_mac: [5; 32],
        }
    }

    const STORE: &str = "0123456789abcdef0123456789abcdef";

    /// A line as `read` judges it for this store.
    fn judge(line: &str, key: &HmacKey) -> Result<(), String> {
        let (entry, mac) = LedgerEntry::parse(line)?;
        if entry.store_id == STORE && bool::from(entry.mac(key).ct_eq(&mac)) {
            Ok(())
        } else {
            Err("MAC".into())
        }
    }

    #[test]
    fn lines_round_trip_and_every_field_is_bound() {
        let key = HmacKey::new(&[1; 32]);
        let line = entry().line(&key);
        let (parsed, _) = LedgerEntry::parse(&line).unwrap();
        assert_eq!(parsed, entry());
        assert_eq!(judge(&line, &key), Ok(()));
        // Another key refuses it.
        assert!(judge(&line, &HmacKey::new(&[2; 32])).is_err());
        // Each field changed (the MAC kept) is refused.
        let fields: Vec<&str> = line.split(' ').collect();
        let changed = [
            "fedcba9876543210fedcba9876543210",
            "1780000001",
            "4",
            "61636d65",
            "18",
            "0606060606060606060606060606060606060606060606060606060606060606",
        ];
        for (i, new) in changed.iter().enumerate() {
            let mut f = fields.clone();
            f[i] = new;
            let err = judge(&f.join(" "), &key).unwrap_err();
            assert!(err.contains("MAC"), "{err}");
        }
        // Non-canonical forms are refused before the MAC.
        for bad in [
            line.replacen(" 3 ", " 03 ", 1),
            line.replacen(" 1780000000 ", " +1780000000 ", 1),
            line.to_uppercase(),
            format!("{line} "),
            line.replacen(' ', "  ", 1),
        ] {
            assert!(LedgerEntry::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ledger_file_reads_back_with_its_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ShredLedger::new(dir.path().join("shreds.ledger"));
        let key = HmacKey::new(&[1; 32]);
        ledger.append(&key, &entry()).unwrap();
        let mut second = entry();
        second.tenant = "globex".into();
        ledger.append(&key, &second).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ledger.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let read = ledger.read(&key, STORE).unwrap();
        assert_eq!(read.entries.len(), 2);
        assert!(read.rejected.is_empty());
        // A forged line and a cut-short last line are named, not applied.
        let mut text = std::fs::read_to_string(ledger.path()).unwrap();
        text.push_str(&entry().line(&HmacKey::new(&[9; 32])));
        text.push('\n');
        text.push_str("0123");
        std::fs::write(ledger.path(), text).unwrap();
        let read = ledger.read(&key, STORE).unwrap();
        assert_eq!(read.entries.len(), 2);
        let lines: Vec<usize> = read.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![4, 5]);
        // An append after the cut-short line stays whole.
        let mut third = entry();
        third.tenant = "initech".into();
        ledger.append(&key, &third).unwrap();
        let read = ledger.read(&key, STORE).unwrap();
        assert_eq!(read.entries.len(), 3);
        assert_eq!(read.entries[2].1.tenant, "initech");
        // Not a ledger at all.
        std::fs::write(ledger.path(), "hello\n").unwrap();
        assert!(matches!(
            ledger.read(&key, STORE),
            Err(Error::ShredLedger { .. })
        ));
        std::fs::write(ledger.path(), vec![b'x'; 4096]).unwrap();
        assert!(matches!(
            ledger.read(&key, STORE),
            Err(Error::ShredLedger { .. })
        ));
    }
}

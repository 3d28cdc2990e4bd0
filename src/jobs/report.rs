//! What a job run reports: counts, failures, plans and retirements.

use crate::error::ErrorKind;
use std::collections::BTreeMap;
use std::time::Duration;

/// A row whose value could not be processed, with the reason. Never holds a
/// secret: ids, names and the error's message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RowFailure {
    /// The table.
    pub table: String,
    /// The sealed column.
    pub column: String,
    /// The row's primary key.
    pub key: String,
    /// The error kind ([`Error::kind`](crate::Error::kind)).
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
}

/// Counts of one job over one table. For a job run, these are the totals of
/// every worker of every process (read from the job tables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Values looked at (one per sealed column per row; NULLs included),
    /// each once: a range swept again adds only what it writes, finds
    /// changed or fails on.
    pub scanned: u64,
    /// Values written (in a dry run: that would be written).
    pub written: u64,
    /// Values that needed nothing.
    pub current: u64,
    /// Values the application changed between this job's read and its write:
    /// left as the application wrote them (swept again if still stale).
    pub changed: u64,
    /// Values that failed (see the failures).
    pub failed: u64,
    /// NULL values.
    pub nulls: u64,
    /// Plaintext values in a text column (not sealed yet: `migrate` seals them).
    pub legacy: u64,
    /// Sealed values of shredded tenants: erased on purpose, never re-sealed,
    /// and not failures (delete their rows when convenient). Plan, verify,
    /// re-seal and migrate count them alike. (A shredded tenant's plaintext
    /// is not erased: `migrate` reports each such value as a failure, since it
    /// cannot seal it; delete those rows.)
    pub shredded: u64,
}

impl Counts {
    pub(super) fn add(&mut self, b: &Counts) {
        self.scanned += b.scanned;
        self.written += b.written;
        self.current += b.current;
        self.changed += b.changed;
        self.failed += b.failed;
        self.nulls += b.nulls;
        self.legacy += b.legacy;
        self.shredded += b.shredded;
    }
}

/// What a job did to one table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableReport {
    /// The table.
    pub table: String,
    /// The job's id in the job table (`reseal:<table>:<tenant or *>`), and
    /// its run number; `None` for dry runs and read-only jobs.
    pub job: Option<(String, u64)>,
    /// Whether the job run is recorded complete.
    pub complete: bool,
    /// The counts.
    pub counts: Counts,
    /// Failures by error kind, as seen by this process.
    pub failures_by_kind: BTreeMap<ErrorKind, u64>,
    /// The first failures this process saw (at most 1,000).
    pub failures: Vec<RowFailure>,
}

/// What a job did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobReport {
    /// Whether nothing was written (a dry run).
    pub dry_run: bool,
    /// One report per configured table.
    pub tables: Vec<TableReport>,
}

impl JobReport {
    /// The counts over every table.
    pub fn totals(&self) -> Counts {
        let mut c = Counts::default();
        for t in &self.tables {
            c.add(&t.counts);
        }
        c
    }

    /// Failures over every table, by kind, as seen by this process.
    pub fn failures_by_kind(&self) -> BTreeMap<ErrorKind, u64> {
        let mut out = BTreeMap::new();
        for t in &self.tables {
            for (k, n) in &t.failures_by_kind {
                *out.entry(*k).or_insert(0) += n;
            }
        }
        out
    }
}

/// What one column holds for one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnUsage {
    /// Values per tenant key version.
    pub by_version: BTreeMap<u32, u64>,
    /// The tenant's primary version (0 if the key store does not know the
    /// tenant).
    pub primary: u32,
    /// Values under another version than the primary: what `reseal` writes.
    pub not_primary: u64,
    /// Plaintext values not sealed yet (text without the `fs:` prefix, or a
    /// NULL sealed column whose migration source holds a value).
    pub legacy: u64,
    /// NULL values.
    pub nulls: u64,
    /// Values that are not sealed values at all.
    pub malformed: u64,
    /// Whether the tenant is shredded: its sealed values (in
    /// [`ColumnUsage::by_version`]) never open again, and nothing is
    /// re-sealed or migrated for it.
    pub shredded: bool,
}

/// The state of the configured tables, from `plan`. Nothing is written.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// Per table, column and tenant.
    pub columns: BTreeMap<(String, String), BTreeMap<String, ColumnUsage>>,
    /// Rows per table.
    pub rows: BTreeMap<String, u64>,
    /// The estimated time of `reseal` with one worker, from a timed sample
    /// (read, re-seal, and a write in a transaction that is rolled back).
    pub estimated_reseal: Duration,
    /// The estimated time of `migrate` with one worker.
    pub estimated_migrate: Duration,
}

impl Plan {
    /// Values `reseal` would write, over every table, column and tenant.
    pub fn not_primary(&self) -> u64 {
        self.columns
            .values()
            .flat_map(BTreeMap::values)
            .map(|u| u.not_primary)
            .sum()
    }

    /// Plaintext values `migrate` would seal.
    pub fn legacy(&self) -> u64 {
        self.columns
            .values()
            .flat_map(BTreeMap::values)
            .map(|u| u.legacy)
            .sum()
    }
}

/// What `retire` did for one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantRetirement {
    /// Versions destroyed (in a dry run: that would be).
    pub destroyed: Vec<u32>,
    /// Versions kept because rows still use them: per version, the counts per
    /// `table.column`.
    pub in_use: BTreeMap<u32, BTreeMap<String, u64>>,
    /// Set when nothing was destroyed because the primary is younger than
    /// [`JobOptions::min_primary_age`](crate::jobs::JobOptions::min_primary_age): its age.
    pub primary_too_young: Option<Duration>,
    /// Values under versions that can no longer open (destroyed, or unknown
    /// to the key store): per version, the counts per `table.column`.
    pub unreadable: BTreeMap<u32, BTreeMap<String, u64>>,
    /// Jobs with a live lease that may write this tenant's rows (their ids,
    /// `reseal:<table>:<tenant or *>`): while they run, no version of the
    /// tenant is destroyed, since a batch they read before a rotation may
    /// still be committed under the version before it.
    pub jobs_running: Vec<String>,
    /// The minimum decryption version set once every older version was
    /// destroyed and no value is under a destroyed version (in a dry run:
    /// that would be), so that blind index searches stop at it instead of
    /// reporting the destroyed versions (FORMAT.md §"Searching").
    pub min_decryption_version: Option<u32>,
}

/// What `retire` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetireReport {
    /// Whether nothing was destroyed (a dry run).
    pub dry_run: bool,
    /// Per tenant with older versions.
    pub tenants: BTreeMap<String, TenantRetirement>,
}

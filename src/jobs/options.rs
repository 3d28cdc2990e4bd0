//! Options of a job run, and the progress it reports.

use super::MAX_BATCH;
use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Progress of a job, for a progress bar or log lines. Every method has an
/// empty default.
pub trait Progress: Send + Sync {
    /// Work on `table` starts; it has about `rows` rows to look at.
    fn start(&self, table: &str, rows: u64) {
        let _ = (table, rows);
    }
    /// `rows` more rows of `table` were looked at (by this process).
    fn advance(&self, table: &str, rows: u64) {
        let _ = (table, rows);
    }
    /// Work on `table` is over (for this process).
    fn finish(&self, table: &str) {
        let _ = table;
    }
}

/// Options of a job. Start from [`JobOptions::default`] and change fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct JobOptions {
    /// Only this tenant's rows (default: every tenant).
    pub tenant: Option<String>,
    /// Rows read and written per transaction (default 500, at most 10,000).
    pub batch: usize,
    /// Concurrent workers in this process (default 2). Other processes may
    /// run more on the same job.
    pub workers: usize,
    /// Rows per second this process may look at, over all its workers
    /// (default: unlimited).
    pub max_rows_per_sec: Option<u64>,
    /// Count and check what would change; write nothing.
    pub dry_run: bool,
    /// How long a claimed range stays with a worker without progress before
    /// another worker may take it over (default 30 seconds). Each committed
    /// batch renews it, so keep it well above the time of one batch.
    pub lease: Duration,
    /// Rows per leased range (default 20 batches).
    pub range_rows: Option<u64>,
    /// For `verify`: open a random sample of this many rows per table instead
    /// of every row.
    pub sample: Option<u64>,
    /// For `retire`: the youngest primary key version whose older versions
    /// may be destroyed — the cache time to live of every process that seals
    /// (default 5 minutes, the sealer's default). Until then, a process may
    /// still seal under the previous version.
    pub min_primary_age: Duration,
    /// For `retire`: raise a tenant's minimum decryption version to its
    /// lowest version left once every older version is destroyed and no
    /// configured value is under a destroyed version (default off).
    ///
    /// Blind index searches then stop at that version instead of failing
    /// with [`Error::IncompleteSearch`]. Only turn it on when the
    /// configuration lists every sealed column of the tenants and every blind
    /// index of those columns exactly as the application defines them: an
    /// index column the runner does not know keeps values under the
    /// destroyed version, which the raised minimum then hides from searches.
    pub raise_min_decryption_version: bool,
    /// Progress reports.
    pub progress: Option<Arc<dyn Progress>>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            tenant: None,
            batch: 500,
            workers: 2,
            max_rows_per_sec: None,
            dry_run: false,
            lease: Duration::from_secs(30),
            range_rows: None,
            sample: None,
            min_primary_age: Duration::from_secs(300),
            raise_min_decryption_version: false,
            progress: None,
        }
    }
}

impl fmt::Debug for JobOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobOptions")
            .field("tenant", &self.tenant)
            .field("batch", &self.batch)
            .field("workers", &self.workers)
            .field("max_rows_per_sec", &self.max_rows_per_sec)
            .field("dry_run", &self.dry_run)
            .field("lease", &self.lease)
            .field("range_rows", &self.range_rows)
            .field("sample", &self.sample)
            .field("min_primary_age", &self.min_primary_age)
            .finish_non_exhaustive()
    }
}

impl JobOptions {
    pub(super) fn check(&self) -> Result<()> {
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(Error::config(format!(
                "batch: {} rows; use 1 to {MAX_BATCH}",
                self.batch
            )));
        }
        if self.workers == 0 {
            return Err(Error::config("workers: at least 1"));
        }
        if self.max_rows_per_sec == Some(0) {
            return Err(Error::config("max_rows_per_sec: at least 1"));
        }
        if let Some(rate) = self.max_rows_per_sec {
            // The workers share the rate: one batch may wait workers × batch
            // / rate seconds for it, which must fit well inside the lease
            // that covers the batch.
            #[allow(clippy::cast_precision_loss)]
            let wait = (self.workers as f64) * (self.batch as f64) / rate as f64;
            if wait * 2.0 >= self.lease.as_secs_f64() {
                return Err(Error::config(format!(
                    "max_rows_per_sec: at {rate} rows per second shared by {} workers, a batch \
                     of {} rows may take {wait:.1} s, more than half the lease ({} s); lower \
                     the batch size or the workers, or raise the lease",
                    self.workers,
                    self.batch,
                    self.lease.as_secs()
                )));
            }
        }
        if let Some(t) = &self.tenant {
            crate::context::check_tenant(t)?;
        }
        Ok(())
    }

    pub(super) fn range_rows(&self) -> u64 {
        self.range_rows
            .unwrap_or_else(|| u64::try_from(self.batch).unwrap_or(500).saturating_mul(20))
            .max(1)
    }
}

//! Jobs over the application's sealed columns: plan, re-seal, migrate
//! plaintext, verify and retire, on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! This is the engine under the `fieldseal` command line (`fieldseal-cli`): see [`SealedColumns`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use sha2::Digest as _;

use crate::admin::KeyAdmin;
use crate::error::{Error, ErrorKind, Result};
use crate::format::SealedValue;
use crate::sealer::{Sealer, TenantSealer};
use crate::store::{KeyState, SqlDatabase, TenantRecord};
use crate::time::Timestamp;

pub(crate) mod db;
mod lease;
mod spec;
mod table;

use db::{Db, Kind, Val};
use lease::{BatchCounts, Job, JobTables, Lease, db_error};
use table::{Header, Key, Stored, Table, parse_header_prefix, parse_stored};

pub use spec::{ColumnForm, ColumnSpec, KeyType, TableSpec};

/// The most rows one batch may hold (each becomes three bound parameters of
/// one statement).
const MAX_BATCH: usize = 10_000;
/// The most parameters one compare-and-swap statement binds.
const MAX_PARAMS: usize = 30_000;
/// How many row failures a report keeps (the counts are always complete).
const MAX_FAILURES: usize = 1_000;

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
    fn check(&self) -> Result<()> {
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

    fn range_rows(&self) -> u64 {
        self.range_rows
            .unwrap_or_else(|| u64::try_from(self.batch).unwrap_or(500).saturating_mul(20))
            .max(1)
    }
}

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
    /// The error kind ([`Error::kind`]).
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
    fn add(&mut self, b: &BatchCounts) {
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
            let b = &t.counts;
            c.scanned += b.scanned;
            c.written += b.written;
            c.current += b.current;
            c.changed += b.changed;
            c.failed += b.failed;
            c.nulls += b.nulls;
            c.legacy += b.legacy;
            c.shredded += b.shredded;
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
    /// [`JobOptions::min_primary_age`]: its age.
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

/// The application's sealed columns, and the jobs that maintain them: the
/// engine of the rotation runner (the `fieldseal` command line), for services that run
/// the same jobs in a background worker of their own.
///
/// - **No lost writes.** Every row write is a compare-and-swap on the value
///   that was read: a row the application changed in between is left as the
///   application wrote it, counted as `changed`, and swept again (up to three
///   passes per range) in case it is still stale.
/// - **Any number of workers, processes and machines.** A job's work is split
///   into ranges of the table's primary key, recorded in the job tables of the
///   same database. Workers claim ranges with expiring leases (`FOR UPDATE SKIP
///   LOCKED` on PostgreSQL and MySQL 8 / MariaDB 10.6+; SQLite has one writer
///   at a time), and each batch's row writes commit in one transaction with the
///   range's progress, fenced by the lease: a worker that lost its lease writes
///   nothing more.
/// - **Resumable.** A killed worker's range is taken over when its lease
///   expires; running the job again joins the unfinished run. A finished run
///   is followed by a new one, which finds nothing left to do.
///
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn example(pool: sqlx::PgPool, sealer: fieldseal::Sealer) -> Result<(), fieldseal::Error> {
/// use fieldseal::{jobs::{ColumnForm, ColumnSpec, JobOptions, KeyType, SealedColumns, TableSpec}};
///
/// let columns = SealedColumns::new(
///     pool,
///     sealer,
///     vec![TableSpec::new("integrations", "id", KeyType::Integer)
///         .tenant_column("tenant_id")
///         .column(ColumnSpec::new("refresh_token", ColumnForm::Binary))],
/// )?;
/// columns.check().await?; // tables, columns and keys exist as configured
/// let report = columns.verify(&JobOptions::default()).await?; // recipes match
/// assert_eq!(report.totals().failed, 0);
/// let report = columns.reseal(&JobOptions::default()).await?;
/// # let _ = report; Ok(()) }
/// ```
#[derive(Clone)]
pub struct SealedColumns {
    db: Db,
    sealer: Sealer,
    tables: Vec<Arc<Table>>,
    job_tables: JobTables,
}

impl fmt::Debug for SealedColumns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedColumns")
            .field("database", &self.db.name())
            .field(
                "tables",
                &self
                    .tables
                    .iter()
                    .map(|t| t.spec.table())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobKind {
    Reseal,
    Migrate,
}

impl JobKind {
    fn name(self) -> &'static str {
        match self {
            Self::Reseal => "reseal",
            Self::Migrate => "migrate",
        }
    }
}

impl SealedColumns {
    /// The sealed columns of `tables`, in the database of `pool`, sealed and
    /// opened through `sealer`. Job progress is kept in tables
    /// `fieldseal_jobs` and `fieldseal_job_ranges`, created when a job first
    /// runs.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a specification is invalid, naming it as
    /// `tables[i].columns[j].field`.
    pub fn new<DB: SqlDatabase>(
        pool: sqlx::Pool<DB>,
        sealer: Sealer,
        tables: Vec<TableSpec>,
    ) -> Result<Self> {
        let db = Db::from_pool(pool)?;
        spec::validate(&tables, db.dialect())?;
        let dialect = db.dialect();
        Ok(Self {
            job_tables: JobTables::new(dialect, "fieldseal_", None),
            tables: tables
                .into_iter()
                .map(|t| Arc::new(Table::new(t, dialect)))
                .collect(),
            db,
            sealer,
        })
    }

    /// Names the job tables `<prefix>jobs` and `<prefix>job_ranges` (in
    /// `schema`, on PostgreSQL), for example to keep them beside the key
    /// store's tables.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] unless the prefix (1 to 32) and schema (1 to 63) are
    /// lower-case ASCII letters, digits and `_`, starting with a letter.
    pub fn with_job_tables(mut self, prefix: &str, schema: Option<&str>) -> Result<Self> {
        let ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !ok(prefix, 32) || schema.is_some_and(|s| !ok(s, 63)) {
            return Err(Error::config(
                "job table prefix and schema: use lower-case ASCII letters, digits and `_`, \
                 starting with a letter",
            ));
        }
        self.job_tables = JobTables::new(self.db.dialect(), prefix, schema);
        Ok(self)
    }

    /// Checks that every configured table, column and key exists as
    /// configured, and that each key is its table's whole primary key.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the table and what is wrong (a missing table
    /// or column, a composite or different primary key);
    /// [`Error::Store`] if the database cannot be reached.
    pub async fn check(&self) -> Result<()> {
        for (i, t) in self.tables.iter().enumerate() {
            if let Err(e) = self.db.fetch(&t.probe_sql(), &[], t.kinds()).await {
                return Err(match &e {
                    sqlx::Error::Database(_) => Error::config(format!(
                        "tables[{i}]: table `{}` or one of its configured columns does not \
                         exist or cannot be read ({} says: {})",
                        t.spec.table(),
                        self.db.name(),
                        crate::store::sql::dialect::DbError::new(&e)
                    )),
                    _ => db_error(&self.db, "reading the configured tables", e),
                });
            }
            for (j, c) in t.spec.columns.iter().enumerate() {
                let (what, column) = match &c.migrate {
                    Some(spec::Migration::From(source)) => ("migrate_from", source.as_str()),
                    Some(spec::Migration::InPlace) => ("migrate_in_place", c.column()),
                    None => continue,
                };
                if let Some(ty) = self.column_type(t, column).await?
                    && !is_text_type(self.db.dialect(), &ty)
                {
                    return Err(Error::config(format!(
                        "tables[{i}].columns[{j}].{what}: column `{column}` of `{}` is {ty}; \
                         migration reads plaintext from a text column (CHAR, VARCHAR or \
                         TEXT), so that what is sealed is exactly what the application \
                         stored",
                        t.spec.table()
                    )));
                }
            }
            let pk = self.primary_key(t).await?;
            let table = t.spec.table();
            match pk.as_slice() {
                [only] if *only == t.spec.key => {}
                [] => {
                    return Err(Error::config(format!(
                        "tables[{i}].key: table `{table}` has no primary key; the jobs need a \
                         single-column primary key to split and address rows"
                    )));
                }
                [only] => {
                    return Err(Error::config(format!(
                        "tables[{i}].key: `{}` is not the primary key of `{table}`; its \
                         primary key is `{only}`",
                        t.spec.key
                    )));
                }
                many => {
                    return Err(Error::config(format!(
                        "tables[{i}].key: `{table}` has a composite primary key ({}); only \
                         single-column keys are supported (add a unique single-column key, \
                         such as a UUID, and make it the primary key)",
                        many.join(", ")
                    )));
                }
            }
            if let Some(ty) = self.column_type(t, &t.spec.key).await?
                && let Err(why) = key_type_fits(self.db.dialect(), t.spec.key_type, &ty)
            {
                return Err(Error::config(format!(
                    "tables[{i}].key: column `{}` of `{table}` is {ty}; {why}",
                    t.spec.key
                )));
            }
        }
        Ok(())
    }

    /// The declared type of `column`, lower-cased (`None` if not found).
    async fn column_type(&self, t: &Table, column: &str) -> Result<Option<String>> {
        use crate::store::sql::dialect::Dialect;
        let table = t.spec.table();
        let (schema, name) = split_schema(table);
        let (sql, binds) = match self.db.dialect() {
            Dialect::Postgres => (
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = CAST(? AS regclass) AND attname = ? AND NOT attisdropped",
                vec![
                    Val::Text(db::quote(Dialect::Postgres, table)),
                    Val::Text(column.into()),
                ],
            ),
            Dialect::MySql => (
                "SELECT CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
                 WHERE TABLE_NAME = ? AND TABLE_SCHEMA = COALESCE(?, DATABASE()) \
                 AND COLUMN_NAME = ?",
                vec![
                    Val::Text(name.into()),
                    schema.map_or(Val::Null, |s| Val::Text(s.into())),
                    Val::Text(column.into()),
                ],
            ),
            Dialect::Sqlite => (
                "SELECT type FROM pragma_table_info(?) WHERE name = ?",
                vec![Val::Text(name.into()), Val::Text(column.into())],
            ),
        };
        let rows = self
            .db
            .fetch(sql, &binds, &[Kind::Text])
            .await
            .map_err(|e| db_error(&self.db, "reading a column's type", e))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .find_map(|v| v.as_text().map(str::to_ascii_lowercase)))
    }

    async fn primary_key(&self, t: &Table) -> Result<Vec<String>> {
        use crate::store::sql::dialect::Dialect;
        let table = t.spec.table();
        let (schema, name) = split_schema(table);
        let (sql, binds) = match self.db.dialect() {
            Dialect::Postgres => (
                "SELECT CAST(a.attname AS TEXT) FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indisprimary AND i.indrelid = CAST(? AS regclass) ORDER BY a.attnum"
                    .to_string(),
                vec![Val::Text(db::quote(Dialect::Postgres, table))],
            ),
            Dialect::MySql => (
                "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE CONSTRAINT_NAME = 'PRIMARY' AND TABLE_NAME = ? \
                 AND TABLE_SCHEMA = COALESCE(?, DATABASE()) ORDER BY ORDINAL_POSITION"
                    .to_string(),
                vec![
                    Val::Text(name.into()),
                    schema.map_or(Val::Null, |s| Val::Text(s.into())),
                ],
            ),
            Dialect::Sqlite => (
                "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk".to_string(),
                vec![Val::Text(name.into())],
            ),
        };
        let rows = self
            .db
            .fetch(&sql, &binds, &[Kind::Text])
            .await
            .map_err(|e| db_error(&self.db, "reading the table's primary key", e))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .filter_map(|v| v.as_text().map(str::to_string))
            .collect())
    }

    /// Re-seals every value that is not under its tenant's primary key
    /// version. Values under the primary are recognised by their header and
    /// not decrypted. A value that does not open (a wrong context recipe, a
    /// destroyed key) is reported and left as it was.
    ///
    /// Resumable, idempotent and safe with any number of workers in any number
    /// of processes: see [`SealedColumns`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid options; store, provider and key errors
    /// that stop the job (a failed value does not stop it: it is counted and
    /// reported). Work committed before an error stays done.
    pub async fn reseal(&self, options: &JobOptions) -> Result<JobReport> {
        self.run(JobKind::Reseal, options).await
    }

    /// Adopts fieldseal on columns that hold plaintext: seals each configured
    /// migration source into its sealed column (expand and contract), or, for
    /// text columns configured for it, the values without the `fs:` prefix in
    /// place. Tenants that have no key yet get one (if the sealer allows
    /// creation on first use).
    ///
    /// Every write is a compare-and-swap on the plaintext that was read (and,
    /// for a source column, on the sealed column still being NULL), so an
    /// application that writes meanwhile always wins.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for an in-place migration of a column that holds
    /// values starting with `fs:` that are not sealed values (nothing is
    /// written); otherwise as [`SealedColumns::reseal`].
    pub async fn migrate(&self, options: &JobOptions) -> Result<JobReport> {
        options.check()?;
        for (i, t) in self.tables.iter().enumerate() {
            for (j, c) in t.spec.columns.iter().enumerate() {
                if c.migrate.is_some() {
                    self.check_recipe(t, i, j, options.tenant.as_deref())
                        .await?;
                }
                if c.migrate != Some(spec::Migration::InPlace) {
                    continue;
                }
                let usage = self.column_usage(t, j, options.tenant.as_deref()).await?;
                let malformed: u64 = usage.values().map(|u| u.malformed).sum();
                if malformed > 0 {
                    return Err(Error::refused(format!(
                        "{}.{}: {malformed} values start with `fs:` but are not sealed \
                         values, so an in-place migration cannot tell them from sealed ones; \
                         migrate into a new column with `migrate_from` instead",
                        t.spec.table(),
                        c.column()
                    )));
                }
            }
        }
        self.run(JobKind::Migrate, options).await
    }

    /// Before `migrate` seals anything into column `j` of `t`: opens a sample
    /// (the first 64 in key order) of the values already sealed there (by the application) under
    /// the configured recipe, and refuses if any does not open. Values sealed
    /// under a wrong recipe would open for `migrate` itself but never for the
    /// application. A column with no sealed value yet cannot be checked.
    async fn check_recipe(
        &self,
        t: &Arc<Table>,
        i: usize,
        j: usize,
        tenant: Option<&str>,
    ) -> Result<()> {
        const SAMPLE: u64 = 64;
        let Some(c) = t.spec.columns.get(j) else {
            return Ok(());
        };
        let (sql, binds) = t.sealed_sample_sql(j, tenant, SAMPLE);
        let rows = self
            .db
            .fetch(&sql, &binds, t.kinds())
            .await
            .map_err(|e| db_error(&self.db, "sampling sealed values", e))?;
        let mut opened = 0u64;
        let mut failed: Vec<(String, Error)> = Vec::new();
        for row in &rows {
            let Stored::Sealed(value) = parse_stored(c.form, t.sealed(row, j)) else {
                continue;
            };
            let outcome = match t.tenant(row) {
                Some(tenant) => match self.sealer.tenant_checked_now(tenant, false).await {
                    Ok(sealer) => t
                        .context(row, j)
                        .and_then(|ctx| sealer.open_uncounted(&ctx, &value)),
                    Err(e) => Err(e),
                },
                None => Err(Error::invalid_context("the row's tenant column is NULL")),
            };
            match outcome {
                Ok(_) => opened += 1,
                Err(e) if is_fatal(&e) => return Err(e),
                // Only a value that does not open says the recipe is wrong: a
                // row whose context cannot be built (a NULL tenant or row id)
                // fails in the run itself, listed with its key.
                Err(e @ Error::OpenFailed) => {
                    let key = t.row_key(row).map(|k| k.to_text()).unwrap_or_default();
                    failed.push((key, e));
                }
                // A destroyed key or a shredded tenant says nothing about
                // the recipe.
                Err(_) => {}
            }
        }
        let Some((key, first)) = failed.first() else {
            return Ok(());
        };
        Err(Error::config(format!(
            "tables[{i}].columns[{j}]: {} of {} values already sealed in {}.{} do not open \
             under the configured context recipe (row {key}: {first}); migrate would seal \
             values the application cannot open. Run `verify`, and make the recipe \
             (table_label, column_label, row, extras) match what the application builds; \
             nothing was written",
            failed.len(),
            failed.len() as u64 + opened,
            t.spec.table(),
            c.column(),
        )))
    }

    async fn run(&self, kind: JobKind, options: &JobOptions) -> Result<JobReport> {
        options.check()?;
        let mut report = JobReport {
            dry_run: options.dry_run,
            tables: Vec::new(),
        };
        for t in &self.tables {
            if kind == JobKind::Migrate && t.spec.columns.iter().all(|c| c.migrate.is_none()) {
                continue;
            }
            report.tables.push(self.run_table(t, kind, options).await?);
        }
        Ok(report)
    }

    async fn run_table(
        &self,
        t: &Arc<Table>,
        kind: JobKind,
        options: &JobOptions,
    ) -> Result<TableReport> {
        let tenant = options.tenant.as_deref();
        let table = t.spec.table().to_string();
        if !options.dry_run
            && let Some(report) = self.nothing_to_do(t, kind, options).await?
        {
            return Ok(report);
        }
        let total = self.count(t, tenant).await?;
        let shared = Arc::new(Shared::new(options, true));
        shared.start(&table, total);
        if options.dry_run {
            // One sweep, no job, no writes.
            let w = self.worker(t, kind, options, &shared, None);
            let mut cursor = None;
            loop {
                let (rows, last) = w.fetch(cursor.as_ref(), None).await?;
                let finished = rows.len() < options.batch;
                let (_, counts) = w.process(&rows).await?;
                shared.add(&counts);
                shared.advance(&table, rows.len() as u64);
                cursor = last.or(cursor);
                if finished {
                    break;
                }
            }
            shared.finish(&table);
            return Ok(shared.report(&table, None, true));
        }

        self.job_tables.migrate(&self.db).await?;
        let bounds = lease::boundaries(&self.db, t, tenant, options.range_rows()).await?;
        let id = format!("{}:{}:{}", kind.name(), table, tenant.unwrap_or("*"));
        let fingerprint = hex(&sha2::Sha256::digest(format!("{kind:?}|{:?}", t.spec)))
            .get(..32)
            .unwrap_or_default()
            .to_string();
        let owner = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let job = Job::new(
            &self.job_tables,
            id.clone(),
            options.lease,
            owner,
            t.spec.key_type,
        )
        .start(&self.db, &fingerprint, &bounds)
        .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..options.workers {
            let mut w = self.worker(t, kind, options, &shared, Some(job.clone()));
            tasks.spawn(async move { w.run().await });
        }
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            let result = done.unwrap_or_else(|e| {
                Err(Error::Store {
                    message: format!("a job worker stopped unexpectedly: {e}"),
                    source: None,
                })
            });
            if let Err(e) = result {
                // Stop the other workers at their next batch boundary: what
                // they committed stays done.
                shared.stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
        }
        shared.finish(&table);
        if let Some(e) = first_error {
            return Err(e);
        }
        let complete = job.try_complete(&self.db).await?;
        let totals = job.totals(&self.db).await?;
        let mut report = shared.report(
            &table,
            Some((id, u64::try_from(job.run).unwrap_or(0))),
            complete,
        );
        report.counts = Counts {
            scanned: totals.scanned,
            written: totals.written,
            current: totals.current,
            changed: totals.changed,
            failed: totals.failed,
            nulls: totals.nulls,
            legacy: totals.legacy,
            shredded: totals.shredded,
        };
        Ok(report)
    }

    /// Before a job run is recorded: from the values' headers, whether it
    /// has anything to write. If not, its report (no job run: a scheduled
    /// run with nothing to do leaves no job rows). If so, the keys of a
    /// tenant it will write for are loaded first, so that a wrong root key
    /// or an unreachable provider fails the run before it records anything.
    async fn nothing_to_do(
        &self,
        t: &Arc<Table>,
        kind: JobKind,
        options: &JobOptions,
    ) -> Result<Option<TableReport>> {
        let tenant = options.tenant.as_deref();
        let mut counts = Counts::default();
        // Whether there is work, and a tenant (not shredded) it is for.
        let mut work_found = false;
        let mut first: Option<String> = None;
        for (j, c) in t.spec.columns.iter().enumerate() {
            if kind == JobKind::Migrate && c.migrate.is_none() {
                continue;
            }
            for (name, u) in self.column_usage(t, j, tenant).await? {
                let sealed: u64 = u.by_version.values().sum();
                counts.scanned += sealed + u.legacy + u.nulls + u.malformed;
                counts.nulls += u.nulls;
                counts.failed += u.malformed;
                if u.shredded {
                    // Its sealed values are erased on purpose; its plaintext
                    // is not erased at all: `migrate` reports each such value
                    // (it cannot seal it), and `reseal` counts it.
                    counts.shredded += sealed;
                    match kind {
                        JobKind::Migrate => work_found |= u.legacy > 0,
                        JobKind::Reseal => counts.legacy += u.legacy,
                    }
                    continue;
                }
                // Malformed values are work too: the job lists them.
                let work = u.malformed
                    + match kind {
                        JobKind::Reseal => {
                            counts.current += sealed - u.not_primary;
                            counts.legacy += u.legacy;
                            u.not_primary
                        }
                        JobKind::Migrate => {
                            counts.current += sealed;
                            u.legacy
                        }
                    };
                if work > 0 {
                    work_found = true;
                    first.get_or_insert(name);
                }
            }
        }
        if !work_found {
            return Ok(Some(TableReport {
                table: t.spec.table().to_string(),
                job: None,
                complete: true,
                counts,
                failures_by_kind: BTreeMap::new(),
                failures: Vec::new(),
            }));
        }
        if let Some(first) = first.filter(|f| !f.is_empty()) {
            match self
                .sealer
                .tenant_checked_now(&first, kind == JobKind::Migrate)
                .await
            {
                Err(e) if is_fatal(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(None)
    }

    fn worker(
        &self,
        t: &Arc<Table>,
        kind: JobKind,
        options: &JobOptions,
        shared: &Arc<Shared>,
        job: Option<Job>,
    ) -> Worker {
        Worker {
            db: self.db.clone(),
            sealer: self.sealer.clone(),
            table: Arc::clone(t),
            kind,
            options: options.clone(),
            shared: Arc::clone(shared),
            job,
        }
    }

    async fn count(&self, t: &Table, tenant: Option<&str>) -> Result<u64> {
        let (sql, binds) = t.count_sql(tenant);
        let rows = self
            .db
            .fetch(&sql, &binds, &[Kind::Int])
            .await
            .map_err(|e| db_error(&self.db, "counting rows", e))?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(Val::as_int)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0))
    }

    /// Opens every sealed value (or, with [`JobOptions::sample`], a random
    /// sample of rows per table) and reports those that do not open, with the
    /// reason. Writes nothing. Run it before the first `reseal` to prove the
    /// context recipes right: a wrong recipe shows as `open_failed` on every
    /// row.
    ///
    /// # Errors
    ///
    /// Store, provider and key errors that stop the check; a value that does
    /// not open is reported, not an error.
    pub async fn verify(&self, options: &JobOptions) -> Result<JobReport> {
        options.check()?;
        let mut report = JobReport {
            dry_run: true,
            tables: Vec::new(),
        };
        let tenant = options.tenant.as_deref();
        for t in &self.tables {
            let table = t.spec.table().to_string();
            let shared = Arc::new(Shared::new(options, true));
            let w = self.worker(t, JobKind::Reseal, options, &shared, None);
            if options.progress.is_some() {
                shared.start(
                    &table,
                    options.sample.unwrap_or(self.count(t, tenant).await?),
                );
            }
            let mut cursor = None;
            loop {
                let (rows, last) = match options.sample {
                    Some(n) => {
                        let (sql, binds) = t.sample_sql(tenant, n);
                        let rows = self
                            .db
                            .fetch(&sql, &binds, t.kinds())
                            .await
                            .map_err(|e| db_error(&self.db, "sampling rows", e))?;
                        (rows, None)
                    }
                    None => w.fetch(cursor.as_ref(), None).await?,
                };
                let finished = options.sample.is_some() || rows.len() < options.batch;
                let counts = w.verify_rows(&rows).await?;
                shared.add(&counts);
                shared.advance(&table, rows.len() as u64);
                cursor = last.or(cursor);
                if finished {
                    break;
                }
            }
            shared.finish(&table);
            report.tables.push(shared.report(&table, None, true));
        }
        Ok(report)
    }

    /// Per tenant, what column `j` of `t` holds, from the values' headers
    /// (nothing is decrypted).
    async fn column_usage(
        &self,
        t: &Table,
        j: usize,
        tenant: Option<&str>,
    ) -> Result<BTreeMap<String, ColumnUsage>> {
        let Some(c) = t.spec.columns.get(j) else {
            return Ok(BTreeMap::new());
        };
        let (sql, binds) = t.header_counts_sql(j, tenant);
        let rows = self
            .db
            .fetch(
                &sql,
                &binds,
                &[t.tenant_group_kind(), Kind::Bytes, Kind::Int],
            )
            .await
            .map_err(|e| db_error(&self.db, "counting values by key version", e))?;
        let mut out: BTreeMap<String, ColumnUsage> = BTreeMap::new();
        // Grouped byte for byte (`Table::tenant_group`): `acme` and `ACME`
        // are two tenants whatever the column's collation says.
        let tenant_of = |v: &Val| {
            db::exact_text_value(v)
                .or_else(|| t.fixed_tenant().map(str::to_string))
                .unwrap_or_default()
        };
        for row in rows {
            let [tenant, prefix, n] = row.as_slice() else {
                continue;
            };
            let n = n.as_int().and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
            let u = out.entry(tenant_of(tenant)).or_default();
            match prefix {
                Val::Null => u.nulls += n,
                Val::Bytes(p) => match parse_header_prefix(c.form, p) {
                    Header::Sealed(v) => *u.by_version.entry(v).or_insert(0) += n,
                    Header::Legacy => u.legacy += n,
                    Header::Malformed => u.malformed += n,
                },
                _ => u.malformed += n,
            }
        }
        if let Some((sql, binds)) = t.pending_source_sql(j, tenant) {
            let rows = self
                .db
                .fetch(&sql, &binds, &[t.tenant_group_kind(), Kind::Int])
                .await
                .map_err(|e| db_error(&self.db, "counting plaintext to migrate", e))?;
            for row in rows {
                let [tenant, n] = row.as_slice() else {
                    continue;
                };
                let n = n.as_int().and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                let u = out.entry(tenant_of(tenant)).or_default();
                u.legacy += n;
                u.nulls = u.nulls.saturating_sub(n);
            }
        }
        for (tenant, u) in &mut out {
            if tenant.is_empty() {
                continue;
            }
            u.primary = match self.sealer.admin().describe(tenant).await {
                Ok(record) if record.shredded_at.is_none() => record.latest_version(),
                Ok(_) => {
                    u.shredded = true;
                    0
                }
                // No key store tables yet (`plan` before the first `migrate`):
                // no tenant has keys.
                Err(
                    Error::UnknownTenant { .. }
                    | Error::InvalidContext { .. }
                    | Error::Schema { .. },
                ) => 0,
                Err(e) => return Err(e),
            };
            u.not_primary = if u.shredded {
                0
            } else {
                u.by_version
                    .iter()
                    .filter(|(v, _)| **v != u.primary)
                    .map(|(_, n)| n)
                    .sum()
            };
        }
        Ok(out)
    }

    /// Per table, column and tenant: values per key version, values not under
    /// the primary, plaintext still to migrate, NULLs; and an estimate of how
    /// long `reseal` and `migrate` take, from a timed sample. Reads only: the
    /// sample's writes run in a transaction that is rolled back.
    ///
    /// # Errors
    ///
    /// Store and key errors.
    pub async fn plan(&self, options: &JobOptions) -> Result<Plan> {
        options.check()?;
        let tenant = options.tenant.as_deref();
        let mut plan = Plan::default();
        let mut estimate = (0.0f64, 0.0f64);
        // Tenants migrate gives a first key: one key store transaction each,
        // about ten statements.
        let mut new_tenants = std::collections::BTreeSet::new();
        for t in &self.tables {
            let table = t.spec.table().to_string();
            let rows = self.count(t, tenant).await?;
            plan.rows.insert(table.clone(), rows);
            let mut stale = 0;
            let mut legacy = 0;
            for (j, c) in t.spec.columns.iter().enumerate() {
                let usage = self.column_usage(t, j, tenant).await?;
                stale += usage.values().map(|u| u.not_primary).sum::<u64>();
                legacy += usage.values().map(|u| u.legacy).sum::<u64>();
                new_tenants.extend(
                    usage
                        .iter()
                        .filter(|(name, u)| {
                            u.legacy > 0 && u.primary == 0 && !u.shredded && !name.is_empty()
                        })
                        .map(|(name, _)| name.clone()),
                );
                plan.columns
                    .insert((table.clone(), c.column().to_string()), usage);
            }
            let costs = self.sample_costs(t, options).await?;
            #[allow(clippy::cast_precision_loss)]
            {
                estimate.0 += costs.per_row * rows as f64 + costs.per_reseal * stale as f64;
                estimate.1 += costs.per_row * rows as f64 + costs.per_migrate * legacy as f64;
            }
        }
        if !new_tenants.is_empty() {
            let started = Instant::now();
            self.db
                .fetch("SELECT 'x'", &[], &[Kind::Text])
                .await
                .map_err(|e| db_error(&self.db, "timing a round trip", e))?;
            #[allow(clippy::cast_precision_loss)]
            {
                estimate.1 += started.elapsed().as_secs_f64() * 10.0 * new_tenants.len() as f64;
            }
        }
        plan.estimated_reseal = Duration::from_secs_f64(estimate.0.max(0.0));
        plan.estimated_migrate = Duration::from_secs_f64(estimate.1.max(0.0));
        Ok(plan)
    }

    /// Seconds per row read, per value re-sealed (opened, sealed and
    /// written) and per value migrated (sealed and written), timed on one
    /// batch of `t` whose writes are rolled back. Migration is timed with a
    /// throwaway in-memory key for each tenant (what sealing costs does not
    /// depend on the key), so it can be estimated before any tenant has keys.
    async fn sample_costs(&self, t: &Arc<Table>, options: &JobOptions) -> Result<SampleCosts> {
        let shared = Arc::new(Shared::new(options, false));
        let mut sample = options.clone();
        sample.batch = options.batch.min(500);
        let w = self.worker(t, JobKind::Reseal, &sample, &shared, None);
        let started = Instant::now();
        let (rows, _) = w.fetch(None, None).await?;
        let read = started.elapsed().as_secs_f64();
        if rows.is_empty() {
            return Ok(SampleCosts::default());
        }
        #[allow(clippy::cast_precision_loss)]
        let per_row = read / rows.len() as f64;
        // The timed writes are rolled back, which a table that does not take
        // part in transactions (a MySQL table on MyISAM, say) ignores: there
        // they are made to match no row instead (and cost a little less).
        let rolls_back = self.rolls_back(t).await?;

        // Re-seal: the values already sealed.
        let started = Instant::now();
        let mut updates: Vec<Vec<Update>> = vec![Vec::new(); t.spec.columns.len()];
        for row in &rows {
            let Some(key) = t.row_key(row) else { continue };
            for (j, c) in t.spec.columns.iter().enumerate() {
                let Stored::Sealed(value) = parse_stored(c.form, t.sealed(row, j)) else {
                    continue;
                };
                let Ok(sealer) = w.tenant_sealer(t.tenant(row), false).await else {
                    continue;
                };
                let Ok(ctx) = t.context(row, j) else { continue };
                // Re-seal costs an open and a seal whatever the version.
                // A timing sample, rolled back: not counted in the metrics.
                let Ok(opened) = sealer.open_uncounted(&ctx, &value) else {
                    continue;
                };
                let Ok(new) = sealer.seal_uncounted(&ctx, opened.plaintext().expose_secret())
                else {
                    continue;
                };
                let Ok(indexes) = index_values(&sealer, c, opened.plaintext().expose_secret())
                else {
                    continue;
                };
                if let Some(u) = updates.get_mut(j) {
                    u.push((key.clone(), c.encode(&value), c.encode(&new), indexes));
                }
            }
        }
        let per_reseal = self
            .timed_rollback(&w, &mut updates, |_| false, rolls_back, started)
            .await?;

        // Migrate: the plaintext still to seal, under throwaway keys.
        let started = Instant::now();
        let throwaway = Sealer::builder(
            crate::provider::LocalKeyProvider::new(
                "plan-sample",
                crate::secret::RootKey::generate()?,
            )?,
            crate::store::MemoryKeyStore::new(),
        )
        .build();
        let mut updates: Vec<Vec<Update>> = vec![Vec::new(); t.spec.columns.len()];
        for row in &rows {
            let Some(key) = t.row_key(row) else { continue };
            for (j, c) in t.spec.columns.iter().enumerate() {
                let plain = match (&c.migrate, parse_stored(c.form, t.sealed(row, j))) {
                    (Some(spec::Migration::InPlace), Stored::Legacy(text)) => text,
                    (Some(spec::Migration::From(_)), Stored::Null) => {
                        match t.migration_source(row, j) {
                            Some(Val::Text(text)) => text.clone(),
                            _ => continue,
                        }
                    }
                    _ => continue,
                };
                let (Some(tenant), Ok(ctx)) = (t.tenant(row), t.context(row, j)) else {
                    continue;
                };
                let Ok(sealer) = throwaway.tenant(tenant).await else {
                    continue;
                };
                let Ok(new) = sealer.seal_uncounted(&ctx, plain.as_bytes()) else {
                    continue;
                };
                let Ok(indexes) = index_values(&sealer, c, plain.as_bytes()) else {
                    continue;
                };
                if let Some(u) = updates.get_mut(j) {
                    u.push((key.clone(), Val::Text(plain), c.encode(&new), indexes));
                }
            }
        }
        let from_source = |j: usize| {
            matches!(
                t.spec.columns.get(j).and_then(|c| c.migrate.as_ref()),
                Some(spec::Migration::From(_))
            )
        };
        let per_migrate = self
            .timed_rollback(&w, &mut updates, from_source, rolls_back, started)
            .await?;
        Ok(SampleCosts {
            per_row,
            per_reseal,
            per_migrate,
        })
    }

    /// Whether a write to `t` in a transaction that is rolled back leaves
    /// nothing behind: always on PostgreSQL and SQLite; on MySQL, for InnoDB
    /// tables only.
    async fn rolls_back(&self, t: &Table) -> Result<bool> {
        use crate::store::sql::dialect::Dialect;
        if self.db.dialect() != Dialect::MySql {
            return Ok(true);
        }
        let (schema, name) = split_schema(t.spec.table());
        let rows = self
            .db
            .fetch(
                "SELECT CAST(ENGINE AS CHAR) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                &[
                    schema.map_or(Val::Null, |s| Val::Text(s.into())),
                    Val::Text(name.into()),
                ],
                &[Kind::Text],
            )
            .await
            .map_err(|e| db_error(&self.db, "reading a table's storage engine", e))?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(Val::as_text)
            .is_some_and(|engine| engine.eq_ignore_ascii_case("InnoDB")))
    }

    /// Writes `updates` in a transaction that is rolled back; returns the
    /// seconds per value since `started` (0 with no value). Unless the table
    /// `rolls_back`, each write expects a value no row holds, so that it
    /// writes nothing.
    async fn timed_rollback(
        &self,
        w: &Worker,
        updates: &mut [Vec<Update>],
        from_source: impl Fn(usize) -> bool,
        rolls_back: bool,
        started: Instant,
    ) -> Result<f64> {
        let values: usize = updates.iter().map(Vec::len).sum();
        if values == 0 {
            return Ok(0.0);
        }
        if !rolls_back {
            let mut marker = [0u8; 32];
            rand::fill(&mut marker);
            let marker = format!("fieldseal plan, matches no row: {}", hex(&marker));
            for (_, expected, _, _) in updates.iter_mut().flatten() {
                *expected = match expected {
                    Val::Bytes(_) => Val::Bytes(marker.clone().into_bytes()),
                    _ => Val::Text(marker.clone()),
                };
            }
        }
        let mut tx = self
            .db
            .begin()
            .await
            .map_err(|e| db_error(&self.db, "timing a sample write", e))?;
        for (j, u) in updates.iter().enumerate() {
            w.cas(&mut tx, j, u, from_source(j)).await?;
        }
        tx.rollback()
            .await
            .map_err(|e| db_error(&self.db, "rolling back the sample write", e))?;
        #[allow(clippy::cast_precision_loss)]
        Ok(started.elapsed().as_secs_f64() / values as f64)
    }

    /// Per tenant and key version, how many values of every configured
    /// column use it (`table.column` → count), from the values' headers.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn versions_in_use(
        &self,
        tenant: Option<&str>,
    ) -> Result<BTreeMap<String, BTreeMap<u32, BTreeMap<String, u64>>>> {
        let mut out: BTreeMap<String, BTreeMap<u32, BTreeMap<String, u64>>> = BTreeMap::new();
        for t in &self.tables {
            for (j, c) in t.spec.columns.iter().enumerate() {
                let place = format!("{}.{}", t.spec.table(), c.column());
                for (tenant, usage) in self.column_usage(t, j, tenant).await? {
                    for (version, n) in usage.by_version {
                        *out.entry(tenant.clone())
                            .or_default()
                            .entry(version)
                            .or_default()
                            .entry(place.clone())
                            .or_insert(0) += n;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Destroys the key versions that no value of any configured column uses
    /// (older than the primary, not already destroyed), for every tenant or
    /// [`JobOptions::tenant`]. Refuses, per tenant, while its primary is
    /// younger than [`JobOptions::min_primary_age`], or while a job that may
    /// write its rows holds a live lease ([`TenantRetirement::jobs_running`]);
    /// otherwise keeps every version still in use and names its counts per
    /// `table.column`.
    ///
    /// Tenant ids are matched byte for byte, whatever the tenant column's
    /// collation: `acme` and `ACME` are two tenants. Each version is counted
    /// again, for its tenant alone, just before it is destroyed.
    ///
    /// # Security
    ///
    /// Only the configured tables are counted: a version used by a table that
    /// is not configured is destroyed all the same, and its values become
    /// unreadable. Configure every table that holds sealed values.
    ///
    /// # Errors
    ///
    /// Store and provider errors; versions destroyed before an error stay
    /// destroyed.
    pub async fn retire(&self, options: &JobOptions) -> Result<RetireReport> {
        options.check()?;
        // Before counting: a job whose worker holds a live lease may commit a
        // batch sealed under a version it read before a rotation, after this
        // count. Its tenants keep every version until the job's leases end.
        let live_jobs = self.job_tables.live_jobs(&self.db).await?;
        let usage = self.versions_in_use(options.tenant.as_deref()).await?;
        let admin = self.sealer.admin().actor("fieldseal retire");
        let tenants = match &options.tenant {
            Some(t) => vec![t.clone()],
            None => admin.tenants().await?,
        };
        let mut report = RetireReport {
            dry_run: options.dry_run,
            tenants: BTreeMap::new(),
        };
        let min_age = i64::try_from(options.min_primary_age.as_secs()).unwrap_or(i64::MAX);
        for tenant in tenants {
            let record = match admin.describe(&tenant).await {
                Ok(r) if r.shredded_at.is_none() => r,
                Ok(_) | Err(Error::UnknownTenant { .. }) => continue,
                Err(e) => return Err(e),
            };
            let primary = record.latest_version();
            let used = usage.get(&tenant);
            let mut r = TenantRetirement {
                jobs_running: jobs_writing(&live_jobs, &tenant),
                ..TenantRetirement::default()
            };
            for (version, places) in used.into_iter().flatten() {
                let readable = record
                    .keys
                    .iter()
                    .any(|k| k.version == *version && k.state != KeyState::Destroyed);
                if !readable {
                    r.unreadable.insert(*version, places.clone());
                }
            }
            let older: Vec<u32> = record
                .keys
                .iter()
                .filter(|k| k.version < primary && k.state != KeyState::Destroyed)
                .map(|k| k.version)
                .collect();
            if !r.jobs_running.is_empty() {
                for version in older {
                    if let Some(places) = used.and_then(|u| u.get(&version)) {
                        r.in_use.insert(version, places.clone());
                    }
                }
                report.tenants.insert(tenant, r);
                continue;
            }
            if older.is_empty() && r.unreadable.is_empty() {
                // Nothing to destroy; versions destroyed earlier may still
                // leave the minimum behind.
                if let Some(v) = self
                    .raise_min(&admin, &tenant, &record, &r, options)
                    .await?
                {
                    r.min_decryption_version = Some(v);
                    report.tenants.insert(tenant, r);
                }
                continue;
            }
            let created = record
                .keys
                .iter()
                .find(|k| k.version == primary)
                .map_or(0, |k| k.created_at.unix_seconds());
            let age = Timestamp::now().unix_seconds().saturating_sub(created);
            for version in older {
                match used.and_then(|u| u.get(&version)) {
                    Some(places) if places.values().any(|n| *n > 0) => {
                        r.in_use.insert(version, places.clone());
                    }
                    _ if age < min_age => {
                        r.primary_too_young =
                            Some(Duration::from_secs(u64::try_from(age.max(0)).unwrap_or(0)));
                    }
                    _ => {
                        if !options.dry_run {
                            // Counted again, for this tenant and version
                            // alone, just before it goes.
                            let now = self.version_in_use_now(&tenant, version).await?;
                            if !now.is_empty() {
                                r.in_use.insert(version, now);
                                continue;
                            }
                            // And no job started meanwhile: one that read the
                            // tenant's keys before a rotation could commit a
                            // batch under this version after the count.
                            let busy =
                                jobs_writing(&self.job_tables.live_jobs(&self.db).await?, &tenant);
                            if !busy.is_empty() {
                                r.jobs_running = busy;
                                break;
                            }
                            admin.destroy_version(&tenant, version).await?;
                        }
                        r.destroyed.push(version);
                    }
                }
            }
            r.min_decryption_version = self
                .raise_min(&admin, &tenant, &record, &r, options)
                .await?;
            report.tenants.insert(tenant, r);
        }
        Ok(report)
    }
}

/// The live jobs (ids `kind:table:tenant`) that may write rows of `tenant`:
/// its own, and those over every tenant (`*`).
fn jobs_writing(live: &[String], tenant: &str) -> Vec<String> {
    live.iter()
        .filter(|id| {
            id.strip_suffix(tenant)
                .is_some_and(|rest| rest.ends_with(':'))
                || id.ends_with(":*")
        })
        .cloned()
        .collect()
}

impl SealedColumns {
    /// Values of every configured column of `tenant` (matched byte for byte)
    /// under `version`, per `table.column` with a count above zero.
    async fn version_in_use_now(
        &self,
        tenant: &str,
        version: u32,
    ) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for t in &self.tables {
            for (j, c) in t.spec.columns.iter().enumerate() {
                let (sql, binds) = t.version_count_sql(j, tenant, version);
                let rows = self
                    .db
                    .fetch(&sql, &binds, &[Kind::Int])
                    .await
                    .map_err(|e| db_error(&self.db, "counting values under a key version", e))?;
                let n = rows
                    .first()
                    .and_then(|r| r.first())
                    .and_then(Val::as_int)
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0);
                if n > 0 {
                    out.insert(format!("{}.{}", t.spec.table(), c.column()), n);
                }
            }
        }
        Ok(out)
    }

    /// With [`JobOptions::raise_min_decryption_version`]: raises the minimum
    /// decryption version to the lowest version left, when every version
    /// below it is destroyed (earlier, or by this run) and no configured value
    /// is under a destroyed version. Returns the new minimum.
    async fn raise_min(
        &self,
        admin: &KeyAdmin,
        tenant: &str,
        record: &TenantRecord,
        r: &TenantRetirement,
        options: &JobOptions,
    ) -> Result<Option<u32>> {
        if !options.raise_min_decryption_version || !r.unreadable.is_empty() {
            return Ok(None);
        }
        let lowest_left = record
            .keys
            .iter()
            .filter(|k| k.state != KeyState::Destroyed && !r.destroyed.contains(&k.version))
            .map(|k| k.version)
            .min();
        let Some(lowest) = lowest_left else {
            return Ok(None);
        };
        if options.dry_run {
            return Ok((lowest > record.min_decryption_version.max(1)).then_some(lowest));
        }
        // Read again just before writing: never lower a minimum that was
        // raised meanwhile.
        let fresh = admin.describe(tenant).await?;
        if lowest <= fresh.min_decryption_version.max(1) {
            return Ok(None);
        }
        admin.set_min_decryption_version(tenant, lowest).await?;
        Ok(Some(lowest))
    }
}

/// What a job costs per row and per value, from a timed sample.
#[derive(Clone, Copy, Debug, Default)]
struct SampleCosts {
    per_row: f64,
    per_reseal: f64,
    per_migrate: f64,
}

/// State shared by the workers of one table in this process.
/// A tenant's own root key's refusal: its id, what it refused, the
/// provider's message, and when.
type OwnRootRefusal = (String, &'static str, String, Instant);

struct Shared {
    failures: Mutex<(Vec<RowFailure>, BTreeMap<ErrorKind, u64>)>,
    local: Mutex<Counts>,
    limiter: Option<Limiter>,
    sealers: Mutex<HashMap<String, TenantSealer>>,
    /// Tenants found without keys (by a dry run, or behind a sealed value).
    absent: Mutex<std::collections::HashSet<String>>,
    /// Tenants found shredded, and when.
    shredded: Mutex<HashMap<String, Timestamp>>,
    /// Tenants whose own root key refused (revoked, disabled, deleted): its
    /// id, what it refused and why. Asked once per job, not once per row.
    own_root_refused: Mutex<HashMap<String, OwnRootRefusal>>,
    progress: Option<Arc<dyn Progress>>,
    /// The total given to the progress reports, and how much of it was shown.
    shown: Mutex<(u64, u64)>,
    /// Set when one worker failed: the others stop at their next batch
    /// boundary. (Aborting a task in the middle of a query can leave its
    /// connection out of step with the server.)
    stop: AtomicBool,
}

impl Shared {
    fn new(options: &JobOptions, limited: bool) -> Self {
        Self {
            failures: Mutex::default(),
            local: Mutex::default(),
            limiter: options
                .max_rows_per_sec
                .filter(|_| limited)
                .map(Limiter::new),
            sealers: Mutex::default(),
            absent: Mutex::default(),
            shredded: Mutex::default(),
            own_root_refused: Mutex::default(),
            stop: AtomicBool::new(false),
            progress: options.progress.clone(),
            shown: Mutex::new((0, 0)),
        }
    }

    fn add(&self, counts: &BatchCounts) {
        lock(&self.local).add(counts);
    }

    /// Progress: work on `table` starts, about `rows` rows.
    fn start(&self, table: &str, rows: u64) {
        *lock(&self.shown) = (rows, 0);
        if let Some(p) = &self.progress {
            p.start(table, rows);
        }
    }

    /// Progress: `rows` more rows looked at. Never past the total given to
    /// `start`: rows swept again (after the application changed them) or
    /// inserted since are not counted twice.
    fn advance(&self, table: &str, rows: u64) {
        let step = {
            let mut shown = lock(&self.shown);
            let step = rows.min(shown.0.saturating_sub(shown.1));
            shown.1 += step;
            step
        };
        if let (Some(p), true) = (&self.progress, step > 0) {
            p.advance(table, step);
        }
    }

    /// Progress: work on `table` is over.
    fn finish(&self, table: &str) {
        if let Some(p) = &self.progress {
            p.finish(table);
        }
    }

    fn fail(&self, table: &str, column: &str, key: Option<&Key>, error: &Error) {
        let mut f = lock(&self.failures);
        *f.1.entry(error.kind()).or_insert(0) += 1;
        if f.0.len() < MAX_FAILURES {
            f.0.push(RowFailure {
                table: table.to_string(),
                column: column.to_string(),
                key: key.map(Key::to_text).unwrap_or_default(),
                kind: error.kind(),
                message: error.to_string(),
            });
        }
    }

    fn report(&self, table: &str, job: Option<(String, u64)>, complete: bool) -> TableReport {
        let (failures, by_kind) = lock(&self.failures).clone();
        TableReport {
            table: table.to_string(),
            job,
            complete,
            counts: *lock(&self.local),
            failures_by_kind: by_kind,
            failures,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Spreads `rows` over time to stay under a rate, across all workers.
struct Limiter {
    per_row: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl Limiter {
    fn new(rate: u64) -> Self {
        Self {
            per_row: Duration::from_secs_f64(1.0 / rate.max(1) as f64),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    async fn take(&self, rows: usize) {
        let wait = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + self.per_row * u32::try_from(rows).unwrap_or(u32::MAX);
            start.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One worker on one table.
struct Worker {
    db: Db,
    sealer: Sealer,
    table: Arc<Table>,
    kind: JobKind,
    options: JobOptions,
    shared: Arc<Shared>,
    job: Option<Job>,
}

/// One value to write: the row's key, the value the write expects to find,
/// the new value, and its blind index values (one per index of the column,
/// under the new value's key version).
type Update = (Key, Val, Val, Vec<Val>);

impl Worker {
    /// Claims ranges until the run is complete.
    async fn run(&mut self) -> Result<()> {
        let Some(job) = self.job.clone() else {
            return Ok(());
        };
        // Short enough that an idle worker does not hold up the end of a run
        // for long; one indexed read per idle worker per poll.
        let poll =
            (self.options.lease / 4).clamp(Duration::from_millis(50), Duration::from_millis(250));
        // Leases this worker lost in a row without committing a batch.
        let mut lost = 0u32;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match job.claim(&self.db).await? {
                Some(lease) => {
                    if self.work(&job, lease).await? {
                        lost = 0;
                    } else {
                        lost += 1;
                        if lost >= 3 {
                            return Err(Error::refused(format!(
                                "job `{}`: this worker lost its lease {lost} times in a row \
                                 before committing a batch: a batch takes longer than the \
                                 lease ({} s); raise the lease or lower the batch size",
                                job.id,
                                self.options.lease.as_secs()
                            )));
                        }
                    }
                }
                None => {
                    if job.try_complete(&self.db).await? {
                        return Ok(());
                    }
                    // Ranges leased by other workers: wait for them to finish,
                    // or for a dead worker's lease to expire.
                    tokio::time::sleep(poll).await;
                }
            }
        }
    }

    /// Works through one leased range, batch by batch. `false` if the lease
    /// was lost before any batch was committed.
    async fn work(&mut self, job: &Job, mut lease: Lease) -> Result<bool> {
        let table = self.table.spec.table().to_string();
        let mut attempt = 0;
        let mut committed = false;
        // When the lease was last extended (claimed, renewed, or by a commit).
        let mut extended = Instant::now();
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(true);
            }
            let (rows, last) = self
                .fetch(lease.cursor.as_ref(), lease.upper.as_ref())
                .await?;
            let finished = rows.len() < self.options.batch;
            // The rate limit may have waited in `fetch`: once a third of the
            // lease has gone, renew it before the batch is worked on, so that
            // its commit finds it live.
            if extended.elapsed() * 3 >= self.options.lease {
                if !job.renew(&self.db, &lease).await? {
                    tracing::info!(job = %job.id, range = lease.idx, "lease lost before the batch");
                    return Ok(committed);
                }
                extended = Instant::now();
            }
            self.revalidate(&rows).await?;
            let (updates, counts) = self.process(&rows).await?;
            let outcome = self
                .write_batch(job, &mut lease, &updates, counts, last, finished)
                .await;
            let (done, counts) = match outcome {
                Ok(Some(written)) => written,
                // The lease expired or was taken over: nothing of the batch
                // was written, and the range is someone's (or claimable).
                Ok(None) => {
                    tracing::info!(job = %job.id, range = lease.idx, "lease lost");
                    return Ok(committed);
                }
                // A deadlock or serialization failure: nothing of the batch
                // was committed; read it again and retry.
                Err(e) if lease::should_retry(&e) && attempt < 12 => {
                    attempt += 1;
                    lease::backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            attempt = 0;
            committed = true;
            extended = Instant::now();
            self.shared.add(&counts);
            self.shared.advance(&table, rows.len() as u64);
            if done {
                return Ok(true);
            }
        }
    }

    /// One batch's transaction: the fence, the compare-and-swaps, the range's
    /// progress. `None` if the lease was lost (nothing written); otherwise
    /// whether the range is done, and the batch's final counts.
    async fn write_batch(
        &self,
        job: &Job,
        lease: &mut Lease,
        updates: &[Vec<Update>],
        mut counts: BatchCounts,
        last: Option<Key>,
        finished: bool,
    ) -> Result<Option<(bool, BatchCounts)>> {
        if lease.pass > 1 {
            // A range swept again (the application changed rows under the
            // first sweep): its values were counted then; count only what
            // this sweep writes, finds changed, or fails on.
            counts = BatchCounts {
                written: counts.written,
                changed: counts.changed,
                failed: counts.failed,
                ..BatchCounts::default()
            };
        }
        let mut tx = self
            .db
            .begin()
            .await
            .map_err(|e| db_error(&self.db, "writing a batch", e))?;
        if !job.fence(&self.db, &mut tx, lease).await? {
            tx.rollback()
                .await
                .map_err(|e| db_error(&self.db, "writing a batch", e))?;
            return Ok(None);
        }
        for (j, u) in updates.iter().enumerate() {
            let from_source = self.kind == JobKind::Migrate
                && matches!(
                    self.table
                        .spec
                        .columns
                        .get(j)
                        .and_then(|c| c.migrate.as_ref()),
                    Some(spec::Migration::From(_))
                );
            let written = self.cas(&mut tx, j, u, from_source).await?;
            counts.written += written;
            counts.changed += u.len() as u64 - written;
        }
        let cursor = last.or_else(|| lease.cursor.clone());
        // `record` moves the lease's cursor: only once the commit is through.
        let mut next = lease.clone();
        let done = job
            .record(
                &self.db,
                &mut tx,
                &mut next,
                cursor.as_ref(),
                counts,
                finished,
            )
            .await?;
        tx.commit()
            .await
            .map_err(|e| db_error(&self.db, "committing a batch", e))?;
        *lease = next;
        Ok(Some((done, counts)))
    }

    /// The next batch after `after`, up to `upto`, and the last key in it.
    async fn fetch(
        &self,
        after: Option<&Key>,
        upto: Option<&Key>,
    ) -> Result<(Vec<Vec<Val>>, Option<Key>)> {
        let (sql, binds) = self.table.batch_sql(
            after,
            upto,
            self.options.tenant.as_deref(),
            self.options.batch,
        );
        let rows = self
            .db
            .fetch(&sql, &binds, self.table.kinds())
            .await
            .map_err(|e| db_error(&self.db, "reading a batch", e))?;
        if let Some(limiter) = &self.shared.limiter {
            limiter.take(rows.len()).await;
        }
        let last = rows.last().and_then(|r| self.table.row_key(r));
        Ok((rows, last))
    }

    /// The tenant's handle, from this table's shared cache. `create`: give a
    /// tenant with no keys its first key (migrations only).
    async fn tenant_sealer(&self, tenant: Option<&str>, create: bool) -> Result<TenantSealer> {
        let tenant =
            tenant.ok_or_else(|| Error::invalid_context("the row's tenant column is NULL"))?;
        // A tenant on its own root key is asked again once its handle is
        // older than the cache's time to live, as the cache would.
        if let Some(s) = lock(&self.shared.sealers).get(tenant)
            && !self.sealer.keys.own_root_snapshot_expired(&s.keyring)
        {
            return Ok(s.clone());
        }
        // Shredded is for good: asked once per job, not once per value.
        if let Some(at) = lock(&self.shared.shredded).get(tenant) {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
                shredded_at: *at,
            });
        }
        // A tenant's own root key that refused is not asked again by this
        // job: its rows fail (listed), the other tenants' go on.
        // Until the cache's time to live has passed: the key may be back.
        if let Some((root_key_id, action, reason, at)) =
            lock(&self.shared.own_root_refused).get(tenant)
            && at.elapsed() < self.sealer.keys.cache_ttl()
        {
            return Err(Error::TenantRootKeyUnavailable {
                tenant: tenant.to_string(),
                root_key_id: root_key_id.clone(),
                action,
                source: Box::new(Error::Provider {
                    message: reason.clone(),
                    source: None,
                }),
            });
        }
        // Checked against the key store now, never a cached snapshot from
        // before the batch: the handle decides the version the batch writes.
        let s = match self.sealer.tenant_checked_now(tenant, create).await {
            Err(Error::TenantShredded { shredded_at, .. }) => {
                lock(&self.shared.shredded).insert(tenant.to_string(), shredded_at);
                return Err(Error::TenantShredded {
                    tenant: tenant.to_string(),
                    shredded_at,
                });
            }
            Err(Error::TenantRootKeyUnavailable {
                tenant,
                root_key_id,
                action,
                source,
            }) => {
                let reason = match *source {
                    Error::Provider { ref message, .. } => message.clone(),
                    ref other => other.to_string(),
                };
                lock(&self.shared.own_root_refused).insert(
                    tenant.clone(),
                    (root_key_id.clone(), action, reason, Instant::now()),
                );
                return Err(Error::TenantRootKeyUnavailable {
                    tenant,
                    root_key_id,
                    action,
                    source,
                });
            }
            other => other?,
        };
        lock(&self.shared.sealers).insert(tenant.to_string(), s.clone());
        Ok(s)
    }

    /// Before a batch is processed: drops the handles of the batch's tenants
    /// whose keys changed in the key store since they were read (one store
    /// call for all of them), so that the batch seals under each tenant's
    /// primary as of now. With the lease it holds while it writes (which
    /// `retire` respects), a job never writes under a version another
    /// process has destroyed.
    async fn revalidate(&self, rows: &[Vec<Val>]) -> Result<()> {
        let cached: Vec<(String, u64)> = {
            let sealers = lock(&self.shared.sealers);
            let mut seen = std::collections::BTreeSet::new();
            rows.iter()
                .filter_map(|row| self.table.tenant(row))
                .filter(|t| seen.insert(*t))
                .filter_map(|t| sealers.get(t).map(|s| (t.to_string(), s.generation())))
                .collect()
        };
        if cached.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = cached.iter().map(|(t, _)| t.as_str()).collect();
        let now = self.sealer.keys.store_generations(&names).await?;
        let mut sealers = lock(&self.shared.sealers);
        for ((tenant, had), now) in cached.iter().zip(now) {
            if now != Some(*had) {
                tracing::debug!(tenant, "tenant keys changed during the job: reloading");
                sealers.remove(tenant);
            }
        }
        Ok(())
    }

    /// Decides, for every value of `rows`, what to write. A failure that is
    /// about one value is counted and reported; one that is about the whole
    /// job (the key provider or store fails, a wrong root key) stops it.
    async fn process(&self, rows: &[Vec<Val>]) -> Result<(Vec<Vec<Update>>, BatchCounts)> {
        let t = &self.table;
        let mut updates: Vec<Vec<Update>> = vec![Vec::new(); t.spec.columns.len()];
        let mut counts = BatchCounts::default();
        for row in rows {
            let key = t.row_key(row);
            for (j, c) in t.spec.columns.iter().enumerate() {
                if self.kind == JobKind::Migrate && c.migrate.is_none() {
                    continue;
                }
                counts.scanned += 1;
                match self.decide(row, j).await {
                    Ok(Decision::Nothing) => counts.current += 1,
                    Ok(Decision::Null) => counts.nulls += 1,
                    Ok(Decision::Legacy) => counts.legacy += 1,
                    Ok(Decision::WouldWrite) => counts.written += 1,
                    Ok(Decision::Write(expected, new, indexes)) => match (&key, updates.get_mut(j))
                    {
                        (Some(key), Some(u)) if self.options.dry_run => {
                            let _ = (key, u, expected, new, indexes);
                            counts.written += 1;
                        }
                        (Some(key), Some(u)) => u.push((key.clone(), expected, new, indexes)),
                        _ => counts.failed += 1,
                    },
                    Ok(Decision::Shredded) => counts.shredded += 1,
                    Err(e) if is_fatal(&e) => return Err(e),
                    Err(e) => {
                        counts.failed += 1;
                        self.shared
                            .fail(t.spec.table(), c.column(), key.as_ref(), &e);
                    }
                }
            }
        }
        Ok((updates, counts))
    }

    async fn decide(&self, row: &[Val], j: usize) -> Result<Decision> {
        let t = &self.table;
        let c = t
            .spec
            .columns
            .get(j)
            .ok_or_else(|| Error::config("no such column"))?;
        let stored = parse_stored(c.form, t.sealed(row, j));
        match (self.kind, stored, &c.migrate) {
            (_, Stored::Malformed(e), _) => Err(e),
            (JobKind::Reseal, Stored::Null, _) => Ok(Decision::Null),
            (JobKind::Reseal, Stored::Legacy(_), _) => Ok(Decision::Legacy),
            (JobKind::Reseal, Stored::Sealed(value), _) => {
                let sealer = match self.tenant_sealer(t.tenant(row), false).await {
                    // Erased on purpose: not a failure, and never written.
                    Err(Error::TenantShredded { .. }) => return Ok(Decision::Shredded),
                    other => other?,
                };
                if value.key_version() == sealer.primary_version() {
                    return Ok(Decision::Nothing);
                }
                let ctx = t.context(row, j)?;
                if c.indexes.is_empty() {
                    return match sealer.reseal(&ctx, &value)? {
                        Some(new) => Ok(Decision::Write(c.encode(&value), c.encode(&new), vec![])),
                        None => Ok(Decision::Nothing),
                    };
                }
                // The index values move to the new version with the value.
                let opened = sealer.open(&ctx, &value)?;
                if !opened.is_stale() {
                    return Ok(Decision::Nothing);
                }
                let plain = opened.plaintext().expose_secret();
                let new = sealer.seal(&ctx, plain)?;
                let indexes = index_values(&sealer, c, plain)?;
                Ok(Decision::Write(c.encode(&value), c.encode(&new), indexes))
            }
            (JobKind::Migrate, Stored::Sealed(_), _) => {
                // Counted as its tenant is: shredded or not. A tenant the
                // store does not know is asked about once per job.
                let tenant = t.tenant(row);
                if tenant.is_some_and(|t| lock(&self.shared.absent).contains(t)) {
                    return Ok(Decision::Nothing);
                }
                match self.tenant_sealer(tenant, false).await {
                    Err(Error::TenantShredded { .. }) => Ok(Decision::Shredded),
                    // A dry run needs no key store tables.
                    Err(Error::Schema { .. }) if self.options.dry_run => Ok(Decision::Nothing),
                    Err(e) if is_fatal(&e) => Err(e),
                    Err(Error::UnknownTenant { .. }) => {
                        if let Some(t) = tenant {
                            lock(&self.shared.absent).insert(t.to_string());
                        }
                        Ok(Decision::Nothing)
                    }
                    _ => Ok(Decision::Nothing),
                }
            }
            // A dry run creates no tenant and seals nothing: it says what a
            // run would write, before any key store table need exist.
            (JobKind::Migrate, Stored::Legacy(_), Some(spec::Migration::InPlace))
                if self.options.dry_run =>
            {
                self.would_migrate(t.tenant(row)).await
            }
            (JobKind::Migrate, Stored::Null, Some(spec::Migration::From(_)))
                if self.options.dry_run =>
            {
                match t.migration_source(row, j) {
                    Some(Val::Text(_)) => self.would_migrate(t.tenant(row)).await,
                    _ => Ok(Decision::Null),
                }
            }
            (JobKind::Migrate, Stored::Legacy(text), Some(spec::Migration::InPlace)) => {
                let sealer = self.tenant_sealer(t.tenant(row), true).await?;
                let ctx = t.context(row, j)?;
                let new = sealer.seal(&ctx, text.as_bytes())?;
                let indexes = index_values(&sealer, c, text.as_bytes())?;
                Ok(Decision::Write(Val::Text(text), c.encode(&new), indexes))
            }
            (JobKind::Migrate, Stored::Null, Some(spec::Migration::From(_))) => {
                match t.migration_source(row, j) {
                    Some(Val::Text(plain)) => {
                        let sealer = self.tenant_sealer(t.tenant(row), true).await?;
                        let ctx = t.context(row, j)?;
                        let new = sealer.seal(&ctx, plain.as_bytes())?;
                        let indexes = index_values(&sealer, c, plain.as_bytes())?;
                        Ok(Decision::Write(
                            Val::Text(plain.clone()),
                            c.encode(&new),
                            indexes,
                        ))
                    }
                    _ => Ok(Decision::Null),
                }
            }
            (JobKind::Migrate, Stored::Legacy(_), _) => Ok(Decision::Legacy),
            (JobKind::Migrate, Stored::Null, _) => Ok(Decision::Null),
        }
    }

    /// In a dry run of `migrate`: whether a plaintext value of `tenant` would
    /// be sealed (a tenant with no keys yet would get its first key). A
    /// shredded tenant's values are not.
    async fn would_migrate(&self, tenant: Option<&str>) -> Result<Decision> {
        let tenant =
            tenant.ok_or_else(|| Error::invalid_context("the row's tenant column is NULL"))?;
        if lock(&self.shared.absent).contains(tenant) {
            return Ok(Decision::WouldWrite);
        }
        match self.tenant_sealer(Some(tenant), false).await {
            Ok(_) => Ok(Decision::WouldWrite),
            Err(Error::UnknownTenant { .. } | Error::Schema { .. }) => {
                lock(&self.shared.absent).insert(tenant.to_string());
                Ok(Decision::WouldWrite)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens every value of `rows`, counting and reporting those that fail.
    async fn verify_rows(&self, rows: &[Vec<Val>]) -> Result<BatchCounts> {
        let t = &self.table;
        let mut counts = BatchCounts::default();
        for row in rows {
            let key = t.row_key(row);
            for (j, c) in t.spec.columns.iter().enumerate() {
                counts.scanned += 1;
                let result = match parse_stored(c.form, t.sealed(row, j)) {
                    Stored::Null => {
                        counts.nulls += 1;
                        continue;
                    }
                    Stored::Legacy(_) => {
                        counts.legacy += 1;
                        continue;
                    }
                    Stored::Malformed(e) => Err(e),
                    Stored::Sealed(value) => self.open(row, j, &value).await,
                };
                match result {
                    Ok(true) => counts.current += 1,
                    Ok(false) => counts.written += 1,
                    Err(e) if is_fatal(&e) => return Err(e),
                    // A sealed value of a shredded tenant (only sealed values
                    // are opened here): erased on purpose.
                    Err(Error::TenantShredded { .. }) => counts.shredded += 1,
                    Err(e) => {
                        counts.failed += 1;
                        self.shared
                            .fail(t.spec.table(), c.column(), key.as_ref(), &e);
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Opens one value; `true` if it is under the primary version.
    async fn open(&self, row: &[Val], j: usize, value: &SealedValue) -> Result<bool> {
        let t = &self.table;
        let sealer = self.tenant_sealer(t.tenant(row), false).await?;
        let ctx = t.context(row, j)?;
        let opened = match sealer.open_uncounted(&ctx, value) {
            // A version newer than this snapshot: another process rotated.
            // `Sealer::open` reloads, and counts the one open.
            Err(Error::UnknownKeyVersion { .. }) => self.sealer.open(&ctx, value).await?,
            other => sealer.counted_open(other)?,
        };
        Ok(!opened.is_stale())
    }

    /// Writes `updates` of column `j` with one compare-and-swap statement per
    /// chunk; returns how many rows were written.
    async fn cas(
        &self,
        tx: &mut db::Tx,
        j: usize,
        updates: &[Update],
        from_source: bool,
    ) -> Result<u64> {
        let mut written = 0;
        // Three parameters per row and one per blind index, within every
        // database's limit on bound parameters (SQLite's is 32,766).
        let width = 3 + self
            .table
            .spec
            .columns
            .get(j)
            .map_or(0, |c| c.indexes.len());
        let rows = (MAX_PARAMS / width).clamp(1, MAX_BATCH);
        for chunk in updates.chunks(rows) {
            if chunk.is_empty() {
                continue;
            }
            let (sql, returning) = self.table.cas_sql(j, chunk.len(), from_source);
            let binds: Vec<Val> = chunk
                .iter()
                .flat_map(|(k, expected, new, indexes)| {
                    [k.to_val(), expected.clone(), new.clone()]
                        .into_iter()
                        .chain(indexes.iter().cloned())
                })
                .collect();
            written += if returning {
                tx.fetch(&sql, &binds, &[self.table.key_kind()])
                    .await
                    .map_err(|e| db_error(&self.db, "writing re-sealed values", e))?
                    .len() as u64
            } else {
                tx.execute(&sql, &binds)
                    .await
                    .map_err(|e| db_error(&self.db, "writing re-sealed values", e))?
            };
        }
        Ok(written)
    }
}

/// Whether an error is about the job rather than one value: the key
/// provider or store failed, or the root key is wrong. Writing on would only
/// repeat it for every row.
fn is_fatal(e: &Error) -> bool {
    matches!(
        e,
        Error::UnwrapFailed { .. }
            | Error::RootKeyNotConfigured { .. }
            | Error::Provider { .. }
            | Error::Store { .. }
            | Error::Schema { .. }
    )
}

enum Decision {
    Nothing,
    /// A dry run's answer: a run would write this value.
    WouldWrite,
    /// A sealed value of a shredded tenant: erased on purpose.
    Shredded,
    Null,
    Legacy,
    /// Write the new value (and its blind index values) where the expected
    /// one still is.
    Write(Val, Val, Vec<Val>),
}

/// The blind index values of `plaintext` for every index of column `c`,
/// under `sealer`'s primary: the version the new value is sealed under.
///
/// A value the index's normaliser refuses gets NULL: no search can find it
/// (a search refuses the same input), and refusing the row would keep its
/// old version in use forever.
fn index_values(sealer: &TenantSealer, c: &ColumnSpec, plaintext: &[u8]) -> Result<Vec<Val>> {
    c.indexes
        .iter()
        .map(|(_, index)| match sealer.blind_index(index, plaintext) {
            Ok(v) => Ok(Val::Bytes(v.as_bytes().to_vec())),
            Err(Error::NotIndexable { .. }) => Ok(Val::Null),
            Err(e) => Err(e),
        })
        .collect()
}

/// Whether a key column of declared type `ty` (lower case) can be read and
/// compared as `key_type`; if not, what to do.
fn key_type_fits(
    dialect: crate::store::sql::dialect::Dialect,
    key_type: KeyType,
    ty: &str,
) -> std::result::Result<(), &'static str> {
    use crate::store::sql::dialect::Dialect;
    let base = ty.split(['(', ' ']).next().unwrap_or(ty);
    match key_type {
        KeyType::Integer => {
            let integer = match dialect {
                Dialect::Postgres => ["smallint", "integer", "bigint"].contains(&ty),
                Dialect::MySql => [
                    "tinyint",
                    "smallint",
                    "mediumint",
                    "int",
                    "integer",
                    "bigint",
                ]
                .contains(&base),
                Dialect::Sqlite => ty.contains("int"),
            };
            if !integer {
                return Err(
                    "key type \"integer\" needs an integer column (SMALLINT, INTEGER or \
                     BIGINT; SERIAL is INTEGER); for a text or UUID key use \"text\" or \
                     \"uuid\"",
                );
            }
            if dialect == Dialect::MySql && base == "bigint" && ty.contains("unsigned") {
                return Err(
                    "BIGINT UNSIGNED keys above 2^63 - 1 have no 64-bit signed form, which the \
                     jobs read keys as; use a signed BIGINT",
                );
            }
            Ok(())
        }
        KeyType::Text if dialect == Dialect::Postgres && ty == "uuid" => {
            Err("use key type \"uuid\" for a uuid column")
        }
        KeyType::Text if is_text_type(dialect, ty) => Ok(()),
        KeyType::Text => Err(
            "key type \"text\" needs a text column (CHAR, VARCHAR or TEXT; a UUID stored as \
             text is one)",
        ),
        KeyType::Uuid if ty == "uuid" => Ok(()),
        KeyType::Uuid => Err("key type \"uuid\" is for PostgreSQL uuid columns"),
    }
}

/// Whether a column of declared type `ty` holds text.
fn is_text_type(dialect: crate::store::sql::dialect::Dialect, ty: &str) -> bool {
    if dialect == crate::store::sql::dialect::Dialect::Sqlite {
        // SQLite's type affinity rules: TEXT affinity.
        return ["char", "clob", "text"].iter().any(|t| ty.contains(t));
    }
    [
        "text",
        "character",
        "char",
        "varchar",
        "tinytext",
        "mediumtext",
        "longtext",
        "citext",
    ]
    .iter()
    .any(|t| ty == *t || ty.starts_with(&format!("{t}(")) || ty.starts_with(&format!("{t} ")))
}

/// `schema.table` as `(Some(schema), table)`; a bare name as `(None, name)`.
fn split_schema(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    }
}

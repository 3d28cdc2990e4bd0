//! Jobs over the application's sealed columns: plan, re-seal, migrate
//! plaintext, verify and retire, on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! This is the engine under the `fieldseal` command line (`fieldseal-cli`):
//! see [`SealedColumns`].

// Layout: `spec` (what the operator configures), `options` and `report`
// (what a run takes and gives back), `schema` (checks against the
// database), `run` (re-seal, migrate, verify), `plan`, `retire`, `job` (jobs
// and their key ranges, leased through the job tables), `worker` (one
// worker's rows) and `table` (one table's SQL and rows), over the pool and
// dynamically shaped statements of `crate::sql::access`.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::sealer::Sealer;
use crate::store::SqlDatabase;

mod job;
mod options;
mod plan;
mod report;
mod retire;
mod run;
mod schema;
mod spec;
mod table;
mod worker;

use crate::sql::access::Db;
use job::JobTables;
use table::Table;

pub use options::{JobOptions, Progress};
pub use report::{
    ColumnUsage, Counts, JobReport, Plan, RetireReport, RowFailure, TableReport, TenantRetirement,
};
pub use spec::{ColumnForm, ColumnSpec, KeyType, TableSpec};

/// The most rows one batch may hold (each becomes three bound parameters of
/// one statement).
const MAX_BATCH: usize = 10_000;

/// The most parameters one compare-and-swap statement binds.
const MAX_PARAMS: usize = 30_000;

/// How many row failures a report keeps (the counts are always complete).
const MAX_FAILURES: usize = 1_000;

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
}

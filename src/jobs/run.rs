//! Running a job: re-seal, migrate and verify, table by table, with workers in this process.

use super::job::{Job, db_error};
use super::options::{JobOptions, Progress};
use super::report::{Counts, JobReport, RowFailure, TableReport};
use super::table::{Key, Table};
use super::worker::{Worker, is_fatal};
use super::{JobKind, MAX_FAILURES, SealedColumns, hex, job, lock, spec};
use crate::error::{Error, ErrorKind, Result};
use crate::sealer::TenantSealer;
use crate::sql::access::{Kind, Val};
use crate::time::Timestamp;
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tenant's own root key's refusal: its id, what it refused, the
/// provider's message, and when.
pub(super) struct OwnRootRefusal {
    /// The tenant's root key.
    pub(super) root_key_id: String,
    /// What it refused (`unwrap`, `wrap`).
    pub(super) action: &'static str,
    /// The provider's message.
    pub(super) reason: String,
    /// When.
    pub(super) at: Instant,
}

/// State shared by the workers of one table in this process.
pub(super) struct Shared {
    pub(super) failures: Mutex<(Vec<RowFailure>, BTreeMap<ErrorKind, u64>)>,
    pub(super) local: Mutex<Counts>,
    pub(super) limiter: Option<Limiter>,
    pub(super) sealers: Mutex<HashMap<String, TenantSealer>>,
    /// Tenants found without keys (by a dry run, or behind a sealed value).
    pub(super) absent: Mutex<std::collections::HashSet<String>>,
    /// Tenants found shredded, and when.
    pub(super) shredded: Mutex<HashMap<String, Timestamp>>,
    /// Tenants whose own root key refused (revoked, disabled, deleted): its
    /// id, what it refused and why. Asked once per job, not once per row.
    pub(super) own_root_refused: Mutex<HashMap<String, OwnRootRefusal>>,
    pub(super) progress: Option<Arc<dyn Progress>>,
    /// The total given to the progress reports, and how much of it was shown.
    pub(super) shown: Mutex<(u64, u64)>,
    /// Set when one worker failed: the others stop at their next batch
    /// boundary. (Aborting a task in the middle of a query can leave its
    /// connection out of step with the server.)
    pub(super) stop: AtomicBool,
}

impl Shared {
    pub(super) fn new(options: &JobOptions, limited: bool) -> Self {
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

    pub(super) fn add(&self, counts: &Counts) {
        lock(&self.local).add(counts);
    }

    /// Progress: work on `table` starts, about `rows` rows.
    pub(super) fn start(&self, table: &str, rows: u64) {
        *lock(&self.shown) = (rows, 0);
        if let Some(p) = &self.progress {
            p.start(table, rows);
        }
    }

    /// Progress: `rows` more rows looked at. Never past the total given to
    /// `start`: rows swept again (after the application changed them) or
    /// inserted since are not counted twice.
    pub(super) fn advance(&self, table: &str, rows: u64) {
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
    pub(super) fn finish(&self, table: &str) {
        if let Some(p) = &self.progress {
            p.finish(table);
        }
    }

    pub(super) fn fail(&self, table: &str, column: &str, key: Option<&Key>, error: &Error) {
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

    pub(super) fn report(
        &self,
        table: &str,
        job: Option<(String, u64)>,
        complete: bool,
    ) -> TableReport {
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

/// Spreads `rows` over time to stay under a rate, across all workers.
pub(super) struct Limiter {
    pub(super) per_row: Duration,
    pub(super) next: tokio::sync::Mutex<Instant>,
}

impl Limiter {
    pub(super) fn new(rate: u64) -> Self {
        Self {
            per_row: Duration::from_secs_f64(1.0 / rate.max(1) as f64),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    pub(super) async fn take(&self, rows: usize) {
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

impl SealedColumns {
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

    pub(super) async fn run(&self, kind: JobKind, options: &JobOptions) -> Result<JobReport> {
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

    pub(super) async fn run_table(
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
        let bounds = job::boundaries(&self.db, t, tenant, options.range_rows()).await?;
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
        report.counts = totals;
        Ok(report)
    }

    /// Before a job run is recorded: from the values' headers, whether it
    /// has anything to write. If not, its report (no job run: a scheduled
    /// run with nothing to do leaves no job rows). If so, the keys of a
    /// tenant it will write for are loaded first, so that a wrong root key
    /// or an unreachable provider fails the run before it records anything.
    pub(super) async fn nothing_to_do(
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

    pub(super) fn worker(
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

    pub(super) async fn count(&self, t: &Table, tenant: Option<&str>) -> Result<u64> {
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
                        let rows = t.rows(
                            self.db
                                .fetch(&sql, &binds, t.kinds())
                                .await
                                .map_err(|e| db_error(&self.db, "sampling rows", e))?,
                        );
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
}

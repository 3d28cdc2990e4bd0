//! Jobs and their key ranges, leased to workers through the database itself.
//!
//! A job (say, "re-seal table `integrations`") is split into ranges of the
//! table's primary key, recorded in `<prefix>job_ranges` beside the job's row
//! in `<prefix>jobs`. A worker — in any process, on any machine — claims a
//! pending range, or one whose lease expired, with `FOR UPDATE SKIP LOCKED`
//! (PostgreSQL, MySQL 8, MariaDB 10.6+; SQLite has one writer at a time), and
//! gets a fencing token. Each batch of row updates commits in one transaction
//! with the range's progress, and only if the token is still the range's: a
//! worker whose lease was taken over writes nothing more. A killed worker's
//! range is taken over when its lease expires; running the command again
//! joins the unfinished job instead of starting over.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::sql::dialect::{
    DbError, Dialect, is_concurrent_create, is_duplicate_column, is_missing_table, is_retryable,
    is_unique_violation,
};

use super::report::Counts;
use super::spec::KeyType;
use super::table::{Key, Table};
use crate::sql::access::{Db, Kind, Tx, Val, now};
use crate::sql::ident::quote;
use crate::sql::retry::{pause, should_retry};

/// Times a range is swept again in one run because the application changed
/// rows under it (the rows it changed may still be stale).
pub(crate) const MAX_PASSES: i64 = 3;

/// The job tables' names.
#[derive(Clone, Debug)]
pub(crate) struct JobTables {
    jobs: String,
    ranges: String,
}

impl JobTables {
    pub(crate) fn new(dialect: Dialect, prefix: &str, schema: Option<&str>) -> Self {
        let name = |n: &str| match schema {
            Some(s) => quote(dialect, &format!("{s}.{prefix}{n}")),
            None => quote(dialect, &format!("{prefix}{n}")),
        };
        Self {
            jobs: name("jobs"),
            ranges: name("job_ranges"),
        }
    }

    /// Creates the job tables if they do not exist.
    pub(crate) async fn migrate(&self, db: &Db) -> Result<()> {
        let (id, text, int) = match db.dialect() {
            Dialect::Postgres | Dialect::Sqlite => ("TEXT", "TEXT", "BIGINT"),
            Dialect::MySql => (
                "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
                "TEXT",
                "BIGINT",
            ),
        };
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS {} (id {id} NOT NULL PRIMARY KEY, run {int} NOT NULL, \
                 fingerprint {text} NOT NULL, state {text} NOT NULL, started_at {int} NOT NULL, \
                 finished_at {int})",
                self.jobs
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (job {id} NOT NULL, run {int} NOT NULL, \
                 idx {int} NOT NULL, lower_key {text}, upper_key {text}, cursor_key {text}, \
                 state {text} NOT NULL, owner {text}, token {int} NOT NULL, \
                 lease_until {int} NOT NULL, pass {int} NOT NULL, pass_changed {int} NOT NULL, \
                 scanned {int} NOT NULL, written {int} NOT NULL, current_rows {int} NOT NULL, \
                 changed {int} NOT NULL, failed {int} NOT NULL, nulls {int} NOT NULL, \
                 legacy {int} NOT NULL, shredded {int} NOT NULL DEFAULT 0, \
                 PRIMARY KEY (job, run, idx))",
                self.ranges
            ),
        ];
        for sql in statements {
            match db.execute(&sql, &[]).await {
                Ok(_) => {}
                Err(e) if is_concurrent_create(&e) => {}
                Err(e) => return Err(db_error(db, "creating the job tables", e)),
            }
        }
        // Job tables made before ranges counted the values of shredded
        // tenants apart: add the column. Probed first, since an ALTER TABLE
        // locks the table even when it then fails.
        let probe = format!("SELECT shredded FROM {} WHERE 1 = 0", self.ranges);
        if db.fetch(&probe, &[], &[Kind::Int]).await.is_ok() {
            return Ok(());
        }
        let add = format!(
            "ALTER TABLE {} ADD COLUMN shredded {int} NOT NULL DEFAULT 0",
            self.ranges
        );
        match db.execute(&add, &[]).await {
            Ok(_) => {}
            Err(e) if is_duplicate_column(&e) || is_concurrent_create(&e) => {}
            Err(e) => return Err(db_error(db, "upgrading the job tables", e)),
        }
        Ok(())
    }
}

impl JobTables {
    /// The jobs that hold a live lease on a range: a worker of theirs may
    /// commit a batch at any moment. Locks the leased ranges' rows first
    /// (SQLite: one writer at a time), so that a batch being committed right
    /// now is over (its rows visible) before this returns. No job tables:
    /// no jobs.
    pub(crate) async fn live_jobs(&self, db: &Db) -> Result<Vec<String>> {
        let lock = match db.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres | Dialect::MySql => " FOR UPDATE",
        };
        let sql = format!(
            "SELECT job, lease_until - {} FROM {} WHERE state = 'leased'{lock}",
            now(db.dialect()),
            self.ranges
        );
        let mut attempt = 0;
        loop {
            let mut tx = db
                .begin()
                .await
                .map_err(|e| db_error(db, "reading the jobs' leases", e))?;
            let rows = match tx.fetch(&sql, &[], &[Kind::Text, Kind::Int]).await {
                Ok(rows) => rows,
                Err(e) if is_missing_table(&e) => return Ok(Vec::new()),
                Err(e) if is_retryable(&e) && attempt < 12 => {
                    attempt += 1;
                    drop(tx);
                    pause(attempt).await;
                    continue;
                }
                Err(e) => return Err(db_error(db, "reading the jobs' leases", e)),
            };
            tx.commit()
                .await
                .map_err(|e| db_error(db, "reading the jobs' leases", e))?;
            let mut jobs: Vec<String> = rows
                .iter()
                .filter_map(|r| match r.as_slice() {
                    [Val::Text(job), Val::Int(left)] if *left >= 0 => Some(job.clone()),
                    _ => None,
                })
                .collect();
            jobs.sort();
            jobs.dedup();
            return Ok(jobs);
        }
    }
}

pub(crate) fn db_error(db: &Db, what: &str, err: sqlx::Error) -> Error {
    Error::store(
        format!("{what} failed in {}", db.name()),
        DbError::new(&err),
    )
}

/// A claimed range.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) idx: i64,
    pub(crate) lower: Option<Key>,
    pub(crate) upper: Option<Key>,
    pub(crate) cursor: Option<Key>,
    pub(crate) token: i64,
    pub(crate) pass: i64,
    /// Rows the application changed under this pass so far.
    pub(crate) pass_changed: u64,
}

/// A job this process works on.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) run: i64,
    tables: JobTables,
    lease: Duration,
    owner: String,
    key_type: KeyType,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(v: &Val) -> u64 {
    v.as_int().and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

impl Job {
    /// Job `id` on `tables`, not started yet.
    pub(crate) fn new(
        tables: &JobTables,
        id: String,
        lease: Duration,
        owner: String,
        key_type: KeyType,
    ) -> Self {
        Self {
            id,
            run: 0,
            tables: tables.clone(),
            lease,
            owner,
            key_type,
        }
    }

    /// Joins the unfinished run of the job, or starts a new run with
    /// `boundaries` (computed beforehand, outside any transaction) if the last
    /// run finished or was made with another configuration.
    pub(crate) async fn start(
        mut self,
        db: &Db,
        fingerprint: &str,
        boundaries: &[Key],
    ) -> Result<Self> {
        let (tables, id) = (&self.tables, self.id.as_str());
        let lock = match db.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres | Dialect::MySql => " FOR UPDATE",
        };
        let now = now(db.dialect());
        let mut last_error = None;
        for attempt in 0..12 {
            if attempt > 0 {
                pause(attempt).await;
            }
            let attempt = Self::try_start(db, tables, id, fingerprint, boundaries, now, lock).await;
            match attempt {
                Ok(Some(run)) => {
                    self.run = run;
                    return Ok(self);
                }
                Ok(None) => {}
                Err(e) if should_retry(&e) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Error::refused(format!(
                "job `{id}` kept changing while this process tried to join it; retry"
            ))
        }))
    }

    /// One attempt of [`Job::start`]: the run joined or started, or `None` if
    /// another process created the job at the same moment.
    async fn try_start(
        db: &Db,
        tables: &JobTables,
        id: &str,
        fingerprint: &str,
        boundaries: &[Key],
        now: &str,
        lock: &str,
    ) -> Result<Option<i64>> {
        {
            let mut tx = db
                .begin()
                .await
                .map_err(|e| db_error(db, "starting a job", e))?;
            let found = tx
                .fetch(
                    &format!(
                        "SELECT run, fingerprint, state FROM {} WHERE id = ?{lock}",
                        tables.jobs
                    ),
                    &[Val::Text(id.into())],
                    &[Kind::Int, Kind::Text, Kind::Text],
                )
                .await
                .map_err(|e| db_error(db, "reading the job", e))?;
            let run = match found.first().map(Vec::as_slice) {
                Some([run, fp, state])
                    if state.as_text() == Some("running") && fp.as_text() == Some(fingerprint) =>
                {
                    tx.rollback()
                        .await
                        .map_err(|e| db_error(db, "joining a job", e))?;
                    return Ok(Some(run.as_int().unwrap_or(0)));
                }
                Some([run, _, _]) => {
                    let next = run.as_int().unwrap_or(0).saturating_add(1);
                    tx.execute(
                        &format!(
                            "UPDATE {} SET run = ?, fingerprint = ?, state = 'running', \
                             started_at = {now}, finished_at = NULL WHERE id = ?",
                            tables.jobs
                        ),
                        &[
                            Val::Int(next),
                            Val::Text(fingerprint.into()),
                            Val::Text(id.into()),
                        ],
                    )
                    .await
                    .map_err(|e| db_error(db, "starting a new run of a job", e))?;
                    next
                }
                _ => {
                    let inserted = tx
                        .execute(
                            &format!(
                                "INSERT INTO {} (id, run, fingerprint, state, started_at) \
                                 VALUES (?, 1, ?, 'running', {now})",
                                tables.jobs
                            ),
                            &[Val::Text(id.into()), Val::Text(fingerprint.into())],
                        )
                        .await;
                    match inserted {
                        Ok(_) => 1,
                        // Another process created it at the same moment: join it.
                        Err(e) if is_unique_violation(&e) => {
                            let _ = tx.rollback().await;
                            return Ok(None);
                        }
                        Err(e) => return Err(db_error(db, "creating a job", e)),
                    }
                }
            };
            insert_ranges(&mut tx, tables, id, run, boundaries)
                .await
                .map_err(|e| db_error(db, "recording the job's ranges", e))?;
            match tx.commit().await {
                Ok(()) => {
                    tracing::info!(
                        job = id,
                        run,
                        ranges = boundaries.len() + 1,
                        "started a job run"
                    );
                    Ok(Some(run))
                }
                Err(e) if is_unique_violation(&e) => Ok(None),
                Err(e) => Err(db_error(db, "starting a job", e)),
            }
        }
    }

    /// Claims a pending range, or one whose lease expired. `None`: nothing is
    /// claimable right now (or the database asked to retry: the caller does).
    pub(crate) async fn claim(&self, db: &Db) -> Result<Option<Lease>> {
        match self.try_claim(db).await {
            Err(e) if should_retry(&e) => Ok(None),
            other => other,
        }
    }

    async fn try_claim(&self, db: &Db) -> Result<Option<Lease>> {
        let dialect = db.dialect();
        let now = now(dialect);
        let lock = match dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres | Dialect::MySql => " FOR UPDATE SKIP LOCKED",
        };
        let mut tx = db
            .begin()
            .await
            .map_err(|e| db_error(db, "claiming a range", e))?;
        let rows = tx
            .fetch(
                &format!(
                    "SELECT idx, lower_key, upper_key, cursor_key, token, pass, pass_changed FROM {} \
                     WHERE job = ? AND run = ? AND (state = 'pending' OR (state = 'leased' AND \
                     lease_until < {now})) ORDER BY idx LIMIT 1{lock}",
                    self.tables.ranges
                ),
                &[Val::Text(self.id.clone()), Val::Int(self.run)],
                &[Kind::Int, Kind::Text, Kind::Text, Kind::Text, Kind::Int, Kind::Int, Kind::Int],
            )
            .await
            .map_err(|e| db_error(db, "claiming a range", e))?;
        let Some([idx, lower, upper, cursor, token, pass, pass_changed]) =
            rows.first().map(Vec::as_slice)
        else {
            tx.rollback()
                .await
                .map_err(|e| db_error(db, "claiming a range", e))?;
            return Ok(None);
        };
        let idx = idx.as_int().unwrap_or(0);
        let token = token.as_int().unwrap_or(0).saturating_add(1);
        tx.execute(
            &format!(
                "UPDATE {} SET state = 'leased', owner = ?, token = ?, lease_until = {now} + ? \
                 WHERE job = ? AND run = ? AND idx = ?",
                self.tables.ranges
            ),
            &[
                Val::Text(self.owner.clone()),
                Val::Int(token),
                Val::Int(self.lease_secs()),
                Val::Text(self.id.clone()),
                Val::Int(self.run),
                Val::Int(idx),
            ],
        )
        .await
        .map_err(|e| db_error(db, "claiming a range", e))?;
        tx.commit()
            .await
            .map_err(|e| db_error(db, "claiming a range", e))?;
        let key = |v: &Val| v.as_text().and_then(|t| Key::from_text(self.key_type, t));
        Ok(Some(Lease {
            idx,
            lower: key(lower),
            upper: key(upper),
            cursor: key(cursor),
            token,
            pass: pass.as_int().unwrap_or(1),
            pass_changed: to_u64(pass_changed),
        }))
    }

    fn lease_secs(&self) -> i64 {
        i64::try_from(self.lease.as_secs().max(1)).unwrap_or(i64::MAX)
    }

    /// In `tx`, before any row is written: extends the lease if this worker
    /// still holds it and it has not expired (locking the range's row), or
    /// reports that it lost it. An expired lease is lost even before another
    /// worker takes it over: `retire` counts only live leases as writers.
    pub(crate) async fn fence(&self, db: &Db, tx: &mut Tx, lease: &Lease) -> Result<bool> {
        let n = tx
            .execute(
                &format!(
                    "UPDATE {} SET lease_until = {now} + ? WHERE job = ? AND run = ? AND idx = ? \
                     AND token = ? AND state = 'leased' AND lease_until >= {now}",
                    self.tables.ranges,
                    now = now(db.dialect())
                ),
                &[
                    Val::Int(self.lease_secs()),
                    Val::Text(self.id.clone()),
                    Val::Int(self.run),
                    Val::Int(lease.idx),
                    Val::Int(lease.token),
                ],
            )
            .await
            .map_err(|e| db_error(db, "renewing a lease", e))?;
        Ok(n == 1)
    }

    /// Extends the lease, in a transaction of its own, if this worker still
    /// holds it and it has not expired; `false` if it lost it.
    pub(crate) async fn renew(&self, db: &Db, lease: &Lease) -> Result<bool> {
        let mut tx = db
            .begin()
            .await
            .map_err(|e| db_error(db, "renewing a lease", e))?;
        let held = self.fence(db, &mut tx, lease).await?;
        tx.commit()
            .await
            .map_err(|e| db_error(db, "renewing a lease", e))?;
        Ok(held)
    }

    /// In `tx`, after the batch's row updates: records the range's progress.
    /// `finished`: the range has no rows after `cursor`. Returns the new
    /// cursor (the range is swept again from its start when the application
    /// changed rows during this pass) and whether the range is done.
    pub(crate) async fn record(
        &self,
        db: &Db,
        tx: &mut Tx,
        lease: &mut Lease,
        cursor: Option<&Key>,
        counts: Counts,
        finished: bool,
    ) -> Result<bool> {
        let pass_changed = lease.pass_changed.saturating_add(counts.changed);
        let again = finished && pass_changed > 0 && lease.pass < MAX_PASSES;
        let done = finished && !again;
        let (next_cursor, next_pass, next_changed) = if again {
            (lease.lower.clone(), lease.pass + 1, 0)
        } else {
            (cursor.cloned(), lease.pass, pass_changed)
        };
        tx.execute(
            &format!(
                "UPDATE {} SET cursor_key = ?, pass = ?, pass_changed = ?, state = ?, \
                 scanned = scanned + ?, written = written + ?, current_rows = current_rows + ?, \
                 changed = changed + ?, failed = failed + ?, nulls = nulls + ?, \
                 legacy = legacy + ?, shredded = shredded + ? WHERE job = ? AND run = ? \
                 AND idx = ?",
                self.tables.ranges
            ),
            &[
                next_cursor
                    .as_ref()
                    .map_or(Val::Null, |k| Val::Text(k.to_text())),
                Val::Int(next_pass),
                Val::Int(to_i64(next_changed)),
                Val::Text(if done { "done" } else { "leased" }.into()),
                Val::Int(to_i64(counts.scanned)),
                Val::Int(to_i64(counts.written)),
                Val::Int(to_i64(counts.current)),
                Val::Int(to_i64(counts.changed)),
                Val::Int(to_i64(counts.failed)),
                Val::Int(to_i64(counts.nulls)),
                Val::Int(to_i64(counts.legacy)),
                Val::Int(to_i64(counts.shredded)),
                Val::Text(self.id.clone()),
                Val::Int(self.run),
                Val::Int(lease.idx),
            ],
        )
        .await
        .map_err(|e| db_error(db, "recording a range's progress", e))?;
        lease.cursor = next_cursor;
        lease.pass = next_pass;
        lease.pass_changed = next_changed;
        Ok(done)
    }

    /// Marks the run complete if every range is done. Returns `true` when the
    /// run is complete (now or before), `false` while ranges are still leased.
    pub(crate) async fn try_complete(&self, db: &Db) -> Result<bool> {
        match self.complete_if_done(db).await {
            Err(e) if should_retry(&e) => Ok(false),
            other => other,
        }
    }

    async fn complete_if_done(&self, db: &Db) -> Result<bool> {
        let open = db
            .fetch(
                &format!(
                    "SELECT COUNT(*) FROM {} WHERE job = ? AND run = ? AND state <> 'done'",
                    self.tables.ranges
                ),
                &[Val::Text(self.id.clone()), Val::Int(self.run)],
                &[Kind::Int],
            )
            .await
            .map_err(|e| db_error(db, "reading a job's ranges", e))?;
        if open.first().and_then(|r| r.first()).map_or(0, to_u64) > 0 {
            return Ok(false);
        }
        db.execute(
            &format!(
                "UPDATE {} SET state = 'complete', finished_at = {} WHERE id = ? AND run = ? \
                 AND state = 'running'",
                self.tables.jobs,
                now(db.dialect())
            ),
            &[Val::Text(self.id.clone()), Val::Int(self.run)],
        )
        .await
        .map_err(|e| db_error(db, "completing a job", e))?;
        Ok(true)
    }

    /// The run's counts so far, summed over its ranges, from every worker
    /// of every process.
    pub(crate) async fn totals(&self, db: &Db) -> Result<Counts> {
        // SUM is NUMERIC/DECIMAL on PostgreSQL and MySQL: bring it back to 64 bits.
        let int = match db.dialect() {
            Dialect::MySql => "SIGNED",
            Dialect::Postgres | Dialect::Sqlite => "BIGINT",
        };
        let sum = |e: &str| format!("CAST(COALESCE(SUM({e}), 0) AS {int})");
        let rows = db
            .fetch(
                &format!(
                    "SELECT {}, {}, {}, {}, {}, {}, {}, {} FROM {} WHERE job = ? AND run = ?",
                    sum("scanned"),
                    sum("written"),
                    sum("current_rows"),
                    sum("changed"),
                    sum("failed"),
                    sum("nulls"),
                    sum("legacy"),
                    sum("shredded"),
                    self.tables.ranges
                ),
                &[Val::Text(self.id.clone()), Val::Int(self.run)],
                &[Kind::Int; 8],
            )
            .await
            .map_err(|e| db_error(db, "reading a job's totals", e))?;
        let r = rows.first().cloned().unwrap_or_default();
        let at = |i: usize| r.get(i).map_or(0, to_u64);
        Ok(Counts {
            scanned: at(0),
            written: at(1),
            current: at(2),
            changed: at(3),
            failed: at(4),
            nulls: at(5),
            legacy: at(6),
            shredded: at(7),
        })
    }
}

async fn insert_ranges(
    tx: &mut Tx,
    tables: &JobTables,
    id: &str,
    run: i64,
    boundaries: &[Key],
) -> Result<(), sqlx::Error> {
    // Range i is (boundary[i-1], boundary[i]]; the first has no lower bound
    // and the last no upper bound, so rows inserted later are covered too.
    let mut lower: Option<&Key> = None;
    for idx in 0..=boundaries.len() {
        let upper = boundaries.get(idx);
        tx.execute(
            &format!(
                "INSERT INTO {} (job, run, idx, lower_key, upper_key, cursor_key, state, token, \
                 lease_until, pass, pass_changed, scanned, written, current_rows, changed, \
                 failed, nulls, legacy) \
                 VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0)",
                tables.ranges
            ),
            &[
                Val::Text(id.into()),
                Val::Int(run),
                Val::Int(i64::try_from(idx).unwrap_or(i64::MAX)),
                lower.map_or(Val::Null, |k| Val::Text(k.to_text())),
                upper.map_or(Val::Null, |k| Val::Text(k.to_text())),
                lower.map_or(Val::Null, |k| Val::Text(k.to_text())),
            ],
        )
        .await?;
        lower = upper;
    }
    Ok(())
}

/// Range boundaries for `table`: every `range_rows`-th key, found by walking
/// the primary key index.
pub(crate) async fn boundaries(
    db: &Db,
    table: &Table,
    tenant: Option<&str>,
    range_rows: u64,
) -> Result<Vec<Key>> {
    let mut out: Vec<Key> = Vec::new();
    loop {
        let (sql, binds) = table.boundary_sql(out.last(), tenant, range_rows);
        let rows = db
            .fetch(&sql, &binds, &[table.key_kind()])
            .await
            .map_err(|e| db_error(db, "splitting the table into ranges", e))?;
        match rows.first().and_then(|r| r.first()) {
            Some(Val::Int(v)) => out.push(Key::Int(*v)),
            Some(Val::Text(v)) => out.push(Key::Text(v.clone())),
            _ => break,
        }
    }
    Ok(out)
}

//! One worker: leases a range of rows, decides and writes each row with a compare-and-swap.

use super::job::{Job, Lease, db_error};
use super::options::JobOptions;
use super::report::Counts;
use super::run::{OwnRootRefusal, Shared};
use super::spec::ColumnSpec;
use super::table::{Key, Row, Stored, Table};
use super::{JobKind, MAX_BATCH, MAX_PARAMS, lock, spec};
use crate::error::{Error, Result};
use crate::format::SealedValue;
use crate::sealer::{Sealer, TenantSealer};
use crate::sql::access;
use crate::sql::access::{Db, Val};
use crate::sql::retry::{pause, should_retry};
use secrecy::ExposeSecret as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One worker on one table.
pub(super) struct Worker {
    pub(super) db: Db,
    pub(super) sealer: Sealer,
    pub(super) table: Arc<Table>,
    pub(super) kind: JobKind,
    pub(super) options: JobOptions,
    pub(super) shared: Arc<Shared>,
    pub(super) job: Option<Job>,
}

/// One value to write: the row's key, the value the write expects to find,
/// the new value, and its blind index values (one per index of the column,
/// under the new value's key version).
#[derive(Clone)]
pub(super) struct Update {
    /// The row's primary key.
    pub(super) key: Key,
    /// The value the row held when it was read: the write happens only if
    /// it still does.
    pub(super) expected: Val,
    /// The value to write.
    pub(super) new: Val,
    /// The column's blind index values for the new value, in the order of
    /// its configured indexes.
    pub(super) indexes: Vec<Val>,
}

impl Worker {
    /// Claims ranges until the run is complete.
    pub(super) async fn run(&mut self) -> Result<()> {
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
    pub(super) async fn work(&mut self, job: &Job, mut lease: Lease) -> Result<bool> {
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
                Err(e) if should_retry(&e) && attempt < 12 => {
                    attempt += 1;
                    pause(attempt).await;
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
    pub(super) async fn write_batch(
        &self,
        job: &Job,
        lease: &mut Lease,
        updates: &[Vec<Update>],
        mut counts: Counts,
        last: Option<Key>,
        finished: bool,
    ) -> Result<Option<(bool, Counts)>> {
        if lease.pass > 1 {
            // A range swept again (the application changed rows under the
            // first sweep): its values were counted then; count only what
            // this sweep writes, finds changed, or fails on.
            counts = Counts {
                written: counts.written,
                changed: counts.changed,
                failed: counts.failed,
                ..Counts::default()
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
    pub(super) async fn fetch(
        &self,
        after: Option<&Key>,
        upto: Option<&Key>,
    ) -> Result<(Vec<Row>, Option<Key>)> {
        let (sql, binds) = self.table.batch_sql(
            after,
            upto,
            self.options.tenant.as_deref(),
            self.options.batch,
        );
        let rows = self.table.rows(
            self.db
                .fetch(&sql, &binds, self.table.kinds())
                .await
                .map_err(|e| db_error(&self.db, "reading a batch", e))?,
        );
        if let Some(limiter) = &self.shared.limiter {
            limiter.take(rows.len()).await;
        }
        let last = rows.last().and_then(|r| r.key().cloned());
        Ok((rows, last))
    }

    /// The tenant's handle, from this table's shared cache. `create`: give a
    /// tenant with no keys its first key (migrations only).
    pub(super) async fn tenant_sealer(
        &self,
        tenant: Option<&str>,
        create: bool,
    ) -> Result<TenantSealer> {
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
        if let Some(OwnRootRefusal {
            root_key_id,
            action,
            reason,
            at,
        }) = lock(&self.shared.own_root_refused).get(tenant)
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
                    OwnRootRefusal {
                        root_key_id: root_key_id.clone(),
                        action,
                        reason,
                        at: Instant::now(),
                    },
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
    pub(super) async fn revalidate(&self, rows: &[Row]) -> Result<()> {
        let cached: Vec<(String, u64)> = {
            let sealers = lock(&self.shared.sealers);
            let mut seen = std::collections::BTreeSet::new();
            rows.iter()
                .filter_map(Row::tenant)
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
    pub(super) async fn process(&self, rows: &[Row]) -> Result<(Vec<Vec<Update>>, Counts)> {
        let t = &self.table;
        let mut updates: Vec<Vec<Update>> = vec![Vec::new(); t.spec.columns.len()];
        let mut counts = Counts::default();
        for row in rows {
            let key = row.key();
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
                    Ok(Decision::Write {
                        expected,
                        new,
                        indexes,
                    }) => match (key, updates.get_mut(j)) {
                        (Some(key), Some(u)) if self.options.dry_run => {
                            let _ = (key, u, expected, new, indexes);
                            counts.written += 1;
                        }
                        (Some(key), Some(u)) => u.push(Update {
                            key: key.clone(),
                            expected,
                            new,
                            indexes,
                        }),
                        _ => counts.failed += 1,
                    },
                    Ok(Decision::Shredded) => counts.shredded += 1,
                    Err(e) if is_fatal(&e) => return Err(e),
                    Err(e) => {
                        counts.failed += 1;
                        self.shared.fail(t.spec.table(), c.column(), key, &e);
                    }
                }
            }
        }
        Ok((updates, counts))
    }

    pub(super) async fn decide(&self, row: &Row, j: usize) -> Result<Decision> {
        let t = &self.table;
        let c = t
            .spec
            .columns
            .get(j)
            .ok_or_else(|| Error::config("no such column"))?;
        let stored = t.stored(row, j);
        match (self.kind, stored, &c.migrate) {
            (_, Stored::Malformed(e), _) => Err(e),
            (JobKind::Reseal, Stored::Null, _) => Ok(Decision::Null),
            (JobKind::Reseal, Stored::Legacy(_), _) => Ok(Decision::Legacy),
            (JobKind::Reseal, Stored::Sealed(value), _) => {
                let sealer = match self.tenant_sealer(row.tenant(), false).await {
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
                        Some(new) => Ok(Decision::Write {
                            expected: c.encode(&value),
                            new: c.encode(&new),
                            indexes: vec![],
                        }),
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
                Ok(Decision::Write {
                    expected: c.encode(&value),
                    new: c.encode(&new),
                    indexes,
                })
            }
            (JobKind::Migrate, Stored::Sealed(_), _) => {
                // Counted as its tenant is: shredded or not. A tenant the
                // store does not know is asked about once per job.
                let tenant = row.tenant();
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
                self.would_migrate(row.tenant()).await
            }
            (JobKind::Migrate, Stored::Null, Some(spec::Migration::From(_)))
                if self.options.dry_run =>
            {
                match t.migration_source(row, j) {
                    Some(Val::Text(_)) => self.would_migrate(row.tenant()).await,
                    _ => Ok(Decision::Null),
                }
            }
            (JobKind::Migrate, Stored::Legacy(text), Some(spec::Migration::InPlace)) => {
                let sealer = self.tenant_sealer(row.tenant(), true).await?;
                let ctx = t.context(row, j)?;
                let new = sealer.seal(&ctx, text.as_bytes())?;
                let indexes = index_values(&sealer, c, text.as_bytes())?;
                Ok(Decision::Write {
                    expected: Val::Text(text),
                    new: c.encode(&new),
                    indexes,
                })
            }
            (JobKind::Migrate, Stored::Null, Some(spec::Migration::From(_))) => {
                match t.migration_source(row, j) {
                    Some(Val::Text(plain)) => {
                        let sealer = self.tenant_sealer(row.tenant(), true).await?;
                        let ctx = t.context(row, j)?;
                        let new = sealer.seal(&ctx, plain.as_bytes())?;
                        let indexes = index_values(&sealer, c, plain.as_bytes())?;
                        Ok(Decision::Write {
                            expected: Val::Text(plain.clone()),
                            new: c.encode(&new),
                            indexes,
                        })
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
    pub(super) async fn would_migrate(&self, tenant: Option<&str>) -> Result<Decision> {
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
    pub(super) async fn verify_rows(&self, rows: &[Row]) -> Result<Counts> {
        let t = &self.table;
        let mut counts = Counts::default();
        for row in rows {
            let key = row.key();
            for (j, c) in t.spec.columns.iter().enumerate() {
                counts.scanned += 1;
                let result = match t.stored(row, j) {
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
                        self.shared.fail(t.spec.table(), c.column(), key, &e);
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Opens one value; `true` if it is under the primary version.
    pub(super) async fn open(&self, row: &Row, j: usize, value: &SealedValue) -> Result<bool> {
        let t = &self.table;
        let sealer = self.tenant_sealer(row.tenant(), false).await?;
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
    pub(super) async fn cas(
        &self,
        tx: &mut access::Tx,
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
                .flat_map(
                    |Update {
                         key,
                         expected,
                         new,
                         indexes,
                     }| {
                        [key.to_val(), expected.clone(), new.clone()]
                            .into_iter()
                            .chain(indexes.iter().cloned())
                    },
                )
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
pub(super) fn is_fatal(e: &Error) -> bool {
    matches!(
        e,
        Error::UnwrapFailed { .. }
            | Error::RootKeyNotConfigured { .. }
            | Error::Provider { .. }
            | Error::Store { .. }
            | Error::Schema { .. }
    )
}

pub(super) enum Decision {
    Nothing,
    /// A dry run's answer: a run would write this value.
    WouldWrite,
    /// A sealed value of a shredded tenant: erased on purpose.
    Shredded,
    Null,
    Legacy,
    /// Write `new` (and its blind index values) where `expected` still is.
    Write {
        expected: Val,
        new: Val,
        indexes: Vec<Val>,
    },
}

/// The blind index values of `plaintext` for every index of column `c`,
/// under `sealer`'s primary: the version the new value is sealed under.
///
/// A value the index's normaliser refuses gets NULL: no search can find it
/// (a search refuses the same input), and refusing the row would keep its
/// old version in use forever.
pub(super) fn index_values(
    sealer: &TenantSealer,
    c: &ColumnSpec,
    plaintext: &[u8],
) -> Result<Vec<Val>> {
    c.indexes
        .iter()
        .map(|(_, index)| match sealer.blind_index(index, plaintext) {
            Ok(v) => Ok(Val::Bytes(v.as_bytes().to_vec())),
            Err(Error::NotIndexable { .. }) => Ok(Val::Null),
            Err(e) => Err(e),
        })
        .collect()
}

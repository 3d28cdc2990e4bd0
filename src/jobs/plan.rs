//! Planning: which key versions hold values, and what a job would cost.

use super::job::db_error;
use super::options::JobOptions;
use super::report::{ColumnUsage, Plan};
use super::run::Shared;
use super::schema::split_schema;
use super::table::{Header, Stored, Table, parse_header_prefix};
use super::worker::{Update, Worker, index_values};
use super::{JobKind, SealedColumns, hex, spec};
use crate::error::{Error, Result};
use crate::sealer::Sealer;
use crate::sql::access;
use crate::sql::access::{Kind, Val};
use secrecy::ExposeSecret as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a job costs per row and per value, from a timed sample.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SampleCosts {
    pub(super) per_row: f64,
    pub(super) per_reseal: f64,
    pub(super) per_migrate: f64,
}

impl SealedColumns {
    /// Per tenant, what column `j` of `t` holds, from the values' headers
    /// (nothing is decrypted).
    pub(super) async fn column_usage(
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
            access::exact_text_value(v)
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
    pub(super) async fn sample_costs(
        &self,
        t: &Arc<Table>,
        options: &JobOptions,
    ) -> Result<SampleCosts> {
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
            let Some(key) = row.key() else { continue };
            for (j, c) in t.spec.columns.iter().enumerate() {
                let Stored::Sealed(value) = t.stored(row, j) else {
                    continue;
                };
                let Ok(sealer) = w.tenant_sealer(row.tenant(), false).await else {
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
                    u.push(Update {
                        key: key.clone(),
                        expected: c.encode(&value),
                        new: c.encode(&new),
                        indexes,
                    });
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
            let Some(key) = row.key() else { continue };
            for (j, c) in t.spec.columns.iter().enumerate() {
                let plain = match (&c.migrate, t.stored(row, j)) {
                    (Some(spec::Migration::InPlace), Stored::Legacy(text)) => text,
                    (Some(spec::Migration::From(_)), Stored::Null) => {
                        match t.migration_source(row, j) {
                            Some(Val::Text(text)) => text.clone(),
                            _ => continue,
                        }
                    }
                    _ => continue,
                };
                let (Some(tenant), Ok(ctx)) = (row.tenant(), t.context(row, j)) else {
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
                    u.push(Update {
                        key: key.clone(),
                        expected: Val::Text(plain),
                        new: c.encode(&new),
                        indexes,
                    });
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
    pub(super) async fn rolls_back(&self, t: &Table) -> Result<bool> {
        use crate::sql::dialect::Dialect;
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
    pub(super) async fn timed_rollback(
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
            for Update { expected, .. } in updates.iter_mut().flatten() {
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
}

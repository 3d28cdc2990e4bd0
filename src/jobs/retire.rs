//! Retiring key versions no configured value uses any more.

use super::SealedColumns;
use super::job::db_error;
use super::options::JobOptions;
use super::report::{RetireReport, TenantRetirement};
use crate::admin::KeyAdmin;
use crate::error::{Error, Result};
use crate::sql::access::{Kind, Val};
use crate::store::{KeyState, TenantRecord};
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// The live jobs (ids `kind:table:tenant`) that may write rows of `tenant`:
/// its own, and those over every tenant (`*`).
pub(super) fn jobs_writing(live: &[String], tenant: &str) -> Vec<String> {
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

    /// Values of every configured column of `tenant` (matched byte for byte)
    /// under `version`, per `table.column` with a count above zero.
    pub(super) async fn version_in_use_now(
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
    pub(super) async fn raise_min(
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

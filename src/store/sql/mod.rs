//! The SQL key store, on sqlx, for PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! One implementation serves the three databases; what differs between them
//! (placeholders, insert-if-absent, row locks, column types) is in
//! [`Dialect`]. Every change is one transaction that first locks the tenant's
//! row (then the audit head row), so changes to one tenant are serialized
//! across processes, and a change and its audit entry commit together.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction,
    Type,
};
use subtle::ConstantTimeEq;

use super::{
    InsertOutcome, KeyRecord, KeyState, KeyStore, NewKeyVersion, StoreIdentity, StoredKey,
    TenantRecord,
};
use crate::audit::{AUDIT_MAC_LEN, AuditAppend, AuditEntry};
use crate::error::{Error, Result};
use crate::provider::WrappedKey;
use crate::time::Timestamp;

mod statements;

pub use crate::sql::dialect::SqlDatabase;
use crate::sql::dialect::{
    DbError, is_concurrent_create, is_duplicate_column, is_missing_table, is_retryable,
    is_unique_violation,
};
use crate::sql::ident::check_own_name;
use crate::sql::retry::backoff;
use statements::Statements;

/// The schema version this build creates and reads.
pub(crate) const SCHEMA_VERSION: i64 = 2;
/// How often a transaction that hit a deadlock or serialization failure is retried.
const MAX_RETRIES: u32 = 12;

/// A key store in the application's own database.
///
/// Wrapped tenant keys, their states and the audit chain live in a handful of
/// tables (named with a configurable prefix, `fieldseal_` by default, and on
/// PostgreSQL in a configurable schema), created by [`SqlKeyStore::migrate`].
/// The store shares the application's sqlx pool.
///
/// ```no_run
/// # #[cfg(feature = "sqlite")]
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use fieldseal::{LocalKeyProvider, RootKey, Sealer, SqlKeyStore};
///
/// let pool = sqlx::SqlitePool::connect("sqlite://app.db?mode=rwc").await?;
/// let store = SqlKeyStore::new(pool);
/// store.migrate().await?; // once, at deploy time or start-up
/// let sealer = Sealer::builder(
///     LocalKeyProvider::new("root-1", RootKey::from_file("root.key")?)?,
///     store,
/// )
/// .build();
/// # let _ = sealer; Ok(()) }
/// ```
///
/// Every method is atomic across processes: version creation is an
/// insert-if-absent on the `(tenant, version)` primary key under a lock on the
/// tenant's row, state changes are conditional updates, and deadlocks or
/// serialization failures reported by the database are retried inside.
pub struct SqlKeyStore<DB: SqlDatabase> {
    pool: Pool<DB>,
    sql: Arc<Statements>,
    /// Set once the schema version was found to be this build's.
    schema_checked: Arc<AtomicBool>,
}

impl<DB: SqlDatabase> Clone for SqlKeyStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            sql: Arc::clone(&self.sql),
            schema_checked: Arc::clone(&self.schema_checked),
        }
    }
}

impl<DB: SqlDatabase> fmt::Debug for SqlKeyStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlKeyStore")
            .field("database", &DB::NAME)
            .field("tables", &self.sql.keys_table)
            .finish_non_exhaustive()
    }
}

/// A key version row: version, state, created, changed, root key id,
/// wrapped, bound (to the store).
type KeyRow = (i64, String, i64, i64, Option<String>, Option<Vec<u8>>, i64);

impl<DB: SqlDatabase> SqlKeyStore<DB> {
    /// A store on `pool`, with tables named `fieldseal_*` (in the connection's
    /// default schema).
    pub fn new(pool: Pool<DB>) -> Self {
        Self::build(pool, "fieldseal_", None)
    }

    fn build(pool: Pool<DB>, prefix: &str, schema: Option<&str>) -> Self {
        Self {
            pool,
            sql: Arc::new(Statements::new(DB::DIALECT, prefix, schema)),
            schema_checked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Names the tables `<prefix>tenants`, `<prefix>keys`, … instead of
    /// `fieldseal_tenants`, ….
    ///
    /// # Errors
    ///
    /// [`Error::Config`] unless `prefix` is 1 to 32 characters of lower-case
    /// ASCII letters, digits and `_`, starting with a letter.
    pub fn with_table_prefix(self, prefix: &str) -> Result<Self> {
        check_own_name("table prefix", prefix, 32)?;
        Ok(Self::build(self.pool, prefix, self.sql.schema.as_deref()))
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

#[cfg(feature = "postgres")]
impl SqlKeyStore<sqlx::Postgres> {
    /// Puts the tables in PostgreSQL schema `schema` (created by
    /// [`migrate`](SqlKeyStore::migrate) if missing) instead of the connection's
    /// default schema.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] unless `schema` is 1 to 63 lower-case ASCII letters,
    /// digits and `_`, starting with a letter.
    pub fn with_schema(self, schema: &str) -> Result<Self> {
        check_own_name("schema", schema, 63)?;
        let prefix = self.sql.prefix.clone();
        Ok(Self::build(self.pool, &prefix, Some(schema)))
    }
}

/// Runs a fallible database step, retrying it when the database reports a
/// deadlock, a serialization failure or a busy lock.
macro_rules! retry {
    ($self:ident, $what:expr, $step:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $step.await {
                Ok(value) => break Ok(value),
                Err(err) if attempt < MAX_RETRIES && is_retryable(&err) => {
                    attempt += 1;
                    tracing::debug!(
                        attempt,
                        error = %DbError::new(&err),
                        "retrying key store transaction"
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(err) => break Err($self.error($what, err)),
            }
        }
    }};
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn bad_row(what: String) -> Error {
    Error::Store {
        message: format!("{what} in the key store (written by a newer fieldseal, or altered?)"),
        source: None,
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn mac_from(bytes: &[u8]) -> [u8; AUDIT_MAC_LEN] {
    let mut mac = [0u8; AUDIT_MAC_LEN];
    if bytes.len() == AUDIT_MAC_LEN {
        mac.copy_from_slice(bytes);
    }
    mac
}

/// A stored key version, or an error for a row no fieldseal writes.
/// A stored wrapped key, with its `bound` column.
fn wrapped_key(root: String, bytes: Vec<u8>, bound: i64) -> WrappedKey {
    let key = WrappedKey::new(root, bytes);
    if bound != 0 {
        key.bound_to_store()
    } else {
        key
    }
}

fn key_record(tenant: &str, row: KeyRow) -> Result<KeyRecord> {
    let (version, state, created, changed, root, wrapped, bound) = row;
    let version = u32::try_from(version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| bad_row(format!("tenant `{tenant}` has key version {version}")))?;
    let state = KeyState::parse(&state).ok_or_else(|| {
        bad_row(format!(
            "tenant `{tenant}` key version {version} has an unknown state"
        ))
    })?;
    Ok(KeyRecord {
        version,
        state,
        created_at: Timestamp::from_unix_seconds(created),
        state_changed_at: Timestamp::from_unix_seconds(changed),
        wrapped: match (root, wrapped) {
            (Some(root), Some(bytes)) if state != KeyState::Destroyed => {
                Some(wrapped_key(root, bytes, bound))
            }
            _ => None,
        },
    })
}

impl<DB> SqlKeyStore<DB>
where
    DB: SqlDatabase,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Vec<u8>: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
{
    /// Creates the tables (and on PostgreSQL the schema) if they do not exist,
    /// and upgrades older fieldseal schemas. Safe to run from several processes
    /// at once, and on every start-up.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] if the database was migrated by a newer fieldseal;
    /// [`Error::Store`] if a statement fails (for example, missing privileges).
    pub async fn migrate(&self) -> Result<()> {
        for statement in self.sql.migration() {
            self.execute_ddl(statement, "creating the key store tables")
                .await?;
        }
        match self.schema_version().await? {
            // Version 1 (a store from before stores had identities): add the
            // `bound` columns, give the store an id that accepts the keys
            // already wrapped without one, then record version 2.
            Some(1) => {
                for statement in &self.sql.upgrade_to_2 {
                    self.execute_ddl(statement, "upgrading the key store tables")
                        .await?;
                }
                self.insert_identity(true).await?;
                retry!(self, "recording the key store schema version", async {
                    sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.set_schema_version)))
                        .bind(SCHEMA_VERSION)
                        .bind(1i64)
                        .execute(&self.pool)
                        .await
                        .map(|_| ())
                })?;
            }
            // A new store: its keys are bound to it from the first one.
            None => self.insert_identity(false).await?,
            Some(_) => {}
        }
        retry!(self, "recording the key store schema version", async {
            sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.insert_schema_version)))
                .bind(SCHEMA_VERSION)
                .execute(&self.pool)
                .await
                .map(|_| ())
        })?;
        retry!(self, "creating the audit head", async {
            sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.insert_audit_head)))
                .execute(&self.pool)
                .await
                .map(|_| ())
        })?;
        self.schema_checked.store(false, Ordering::Release);
        self.check_schema().await
    }

    /// Runs one idempotent DDL statement (another process may have run it,
    /// or added the column, at the same moment).
    async fn execute_ddl(&self, statement: &Arc<str>, what: &str) -> Result<()> {
        retry!(self, what, async {
            match sqlx::query::<DB>(AssertSqlSafe(Arc::clone(statement)))
                .execute(&self.pool)
                .await
            {
                Err(err) if is_concurrent_create(&err) || is_duplicate_column(&err) => Ok(()),
                other => other.map(|_| ()),
            }
        })
    }

    /// Gives the store its identity (a random id) unless it has one.
    async fn insert_identity(&self, accepts_unbound: bool) -> Result<()> {
        let mut raw = [0u8; 16];
        rand::fill(&mut raw);
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        retry!(self, "recording the key store's identity", async {
            sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.insert_store)))
                .bind(id.clone())
                .bind(i64::from(accepts_unbound))
                .execute(&self.pool)
                .await
                .map(|_| ())
        })
    }

    /// The schema version recorded in the store (`None` before `migrate`).
    async fn schema_version(&self) -> Result<Option<i64>> {
        retry!(self, "reading the key store schema version", async {
            sqlx::query_scalar::<DB, i64>(AssertSqlSafe(Arc::clone(
                &self.sql.select_schema_version,
            )))
            .fetch_optional(&self.pool)
            .await
        })
    }

    /// Checks (once, while it succeeds) that the tables exist with the schema
    /// version this build reads.
    async fn check_schema(&self) -> Result<()> {
        if self.schema_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.schema_version().await? {
            Some(SCHEMA_VERSION) => {
                self.schema_checked.store(true, Ordering::Release);
                Ok(())
            }
            found => Err(Error::Schema {
                table: self.sql.schema_table.clone(),
                found: found.map(to_u32),
                supported: to_u32(SCHEMA_VERSION),
            }),
        }
    }

    fn error(&self, what: &str, err: sqlx::Error) -> Error {
        if is_missing_table(&err) {
            return Error::Schema {
                table: self.sql.schema_table.clone(),
                found: None,
                supported: to_u32(SCHEMA_VERSION),
            };
        }
        Error::store(format!("{what} failed in {}", DB::NAME), DbError::new(&err))
    }

    async fn begin(&self) -> Result<Transaction<'static, DB>, sqlx::Error> {
        match self.sql.dialect.begin_statement() {
            Some(statement) => self.pool.begin_with(statement).await,
            None => self.pool.begin().await,
        }
    }

    /// Locks the tenant's row, creating it if `create`; returns
    /// `(shredded_at, min_decryption_version, generation)`, or `None` if absent.
    async fn lock_tenant(
        &self,
        tx: &mut Transaction<'static, DB>,
        tenant: &str,
        create: bool,
    ) -> Result<Option<(Option<i64>, i64, i64)>, sqlx::Error> {
        if create {
            sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.insert_tenant)))
                .bind(tenant.to_string())
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query_as::<DB, (Option<i64>, i64, i64)>(AssertSqlSafe(Arc::clone(
            &self.sql.lock_tenant,
        )))
        .bind(tenant.to_string())
        .fetch_optional(&mut **tx)
        .await
    }

    async fn latest_version(
        &self,
        tx: &mut Transaction<'static, DB>,
        tenant: &str,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar::<DB, i64>(AssertSqlSafe(Arc::clone(&self.sql.latest_version)))
            .bind(tenant.to_string())
            .fetch_one(&mut **tx)
            .await
    }

    async fn bump_generation(
        &self,
        tx: &mut Transaction<'static, DB>,
        tenant: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.bump_generation)))
            .bind(tenant.to_string())
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }

    /// Appends an audit entry after locking the chain head, in `tx`.
    async fn append_audit(
        &self,
        tx: &mut Transaction<'static, DB>,
        audit: &AuditAppend<'_>,
    ) -> Result<(), sqlx::Error> {
        let (seq, mac) = sqlx::query_as::<DB, (i64, Option<Vec<u8>>)>(AssertSqlSafe(
            self.sql.lock_audit_head.clone(),
        ))
        .fetch_one(&mut **tx)
        .await?;
        let previous_mac = mac.as_deref().map(mac_from);
        let previous = match (seq, &previous_mac) {
            (0, _) | (_, None) => None,
            (seq, Some(mac)) => Some((to_u64(seq), mac)),
        };
        let entry = audit.link(previous);
        self.insert_audit_entry(tx, &entry).await
    }

    async fn insert_audit_entry(
        &self,
        tx: &mut Transaction<'static, DB>,
        entry: &AuditEntry,
    ) -> Result<(), sqlx::Error> {
        let seq = i64::try_from(entry.seq).unwrap_or(i64::MAX);
        sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.insert_audit)))
            .bind(seq)
            .bind(entry.at.unix_seconds())
            .bind(entry.event.clone())
            .bind(entry.tenant.clone())
            .bind(i64::from(entry.version))
            .bind(entry.actor.clone())
            .bind(entry.detail.clone())
            .bind(entry.mac.to_vec())
            .execute(&mut **tx)
            .await?;
        sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.update_audit_head)))
            .bind(seq)
            .bind(entry.mac.to_vec())
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }

    async fn insert_key_once(
        &self,
        tenant: &str,
        new: &NewKeyVersion,
        audit: &AuditAppend<'_>,
        recreate: bool,
    ) -> Result<Result<InsertOutcome, Error>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let Some((shredded_at, _, _)) = self.lock_tenant(&mut tx, tenant, !recreate).await? else {
            return Ok(Err(Error::UnknownTenant {
                tenant: tenant.to_string(),
            }));
        };
        match (recreate, shredded_at) {
            (false, Some(_)) => return Ok(Ok(InsertOutcome::Shredded)),
            (true, None) => return Ok(Ok(InsertOutcome::AlreadyExists)),
            _ => {}
        }
        let latest = to_u32(self.latest_version(&mut tx, tenant).await?);
        if new.version <= latest {
            return Ok(Ok(InsertOutcome::AlreadyExists));
        }
        if Some(new.version) != latest.checked_add(1) {
            return Ok(Err(Error::refused(format!(
                "cannot create key version {} of tenant `{tenant}`: its latest version is \
                 {latest}, so the next one is {}",
                new.version,
                latest.saturating_add(1)
            ))));
        }
        let inserted = sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.insert_key)))
            .bind(tenant.to_string())
            .bind(i64::from(new.version))
            .bind(KeyState::Active.as_str().to_string())
            .bind(new.created_at.unix_seconds())
            .bind(new.created_at.unix_seconds())
            .bind(new.wrapped.root_key_id().to_string())
            .bind(new.wrapped.as_bytes().to_vec())
            .bind(i64::from(new.wrapped.is_store_bound()))
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&inserted) == 0 {
            return Ok(Ok(InsertOutcome::AlreadyExists));
        }
        if recreate {
            sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.unshred_tenant)))
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await?;
        }
        self.bump_generation(&mut tx, tenant).await?;
        self.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Ok(InsertOutcome::Inserted))
    }

    async fn update_state_once(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        match self.lock_tenant(&mut tx, tenant, false).await? {
            Some((None, _, _)) => {}
            _ => return Ok(false),
        }
        let latest = to_u32(self.latest_version(&mut tx, tenant).await?);
        if version == latest {
            return Ok(false);
        }
        let statement = if to == KeyState::Destroyed {
            if let Some(scrub) = &self.sql.scrub {
                sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&scrub.secure_delete)))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&scrub.zero_key)))
                    .bind(tenant.to_string())
                    .bind(i64::from(version))
                    .execute(&mut *tx)
                    .await?;
            }
            &self.sql.destroy_key
        } else {
            &self.sql.update_key_state
        };
        let updated = sqlx::query::<DB>(AssertSqlSafe(statement.clone()))
            .bind(to.as_str().to_string())
            .bind(audit.at().unix_seconds())
            .bind(tenant.to_string())
            .bind(i64::from(version))
            .bind(from.as_str().to_string())
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&updated) == 0 {
            return Ok(false);
        }
        self.bump_generation(&mut tx, tenant).await?;
        self.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        if to == KeyState::Destroyed {
            self.checkpoint().await;
        }
        Ok(true)
    }

    /// SQLite: moves the WAL's pages into the database file and truncates
    /// the WAL, so the page images from before an erasure leave it. Best
    /// effort: a reader holding an old snapshot keeps them until it is done
    /// (the next checkpoint takes them).
    async fn checkpoint(&self) {
        if let Some(scrub) = &self.sql.scrub
            && let Err(e) = sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&scrub.checkpoint)))
                .execute(&self.pool)
                .await
        {
            tracing::debug!(error = %DbError::new(&e), "WAL checkpoint after an erasure failed");
        }
    }

    async fn set_min_once(
        &self,
        tenant: &str,
        minimum: u32,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        match self.lock_tenant(&mut tx, tenant, false).await? {
            Some((None, _, _)) => {}
            _ => return Ok(false),
        }
        if minimum > to_u32(self.latest_version(&mut tx, tenant).await?) {
            return Ok(false);
        }
        sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.set_min_version)))
            .bind(i64::from(minimum))
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        self.bump_generation(&mut tx, tenant).await?;
        self.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn shred_once(&self, tenant: &str, audit: &AuditAppend<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        match self.lock_tenant(&mut tx, tenant, false).await? {
            Some((None, _, _)) => {}
            _ => return Ok(false),
        }
        let at = audit.at().unix_seconds();
        sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.shred_tenant)))
            .bind(at)
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.destroy_all_keys)))
            .bind(KeyState::Destroyed.as_str().to_string())
            .bind(at)
            .bind(tenant.to_string())
            .bind(KeyState::Destroyed.as_str().to_string())
            .execute(&mut *tx)
            .await?;
        if let Some(scrub) = &self.sql.scrub {
            sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&scrub.secure_delete)))
                .execute(&mut *tx)
                .await?;
            sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&scrub.zero_tenant)))
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.erase_all_wrapped)))
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        self.bump_generation(&mut tx, tenant).await?;
        self.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.checkpoint().await;
        Ok(true)
    }

    async fn rewrap_once(
        &self,
        tenant: &str,
        version: u32,
        old: &WrappedKey,
        new: &WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        if self.lock_tenant(&mut tx, tenant, false).await?.is_none() {
            return Ok(false);
        }
        let current = sqlx::query_as::<DB, (Option<String>, Option<Vec<u8>>, i64)>(AssertSqlSafe(
            self.sql.select_wrapped.clone(),
        ))
        .bind(tenant.to_string())
        .bind(i64::from(version))
        .fetch_optional(&mut *tx)
        .await?;
        let unchanged = matches!(
            &current,
            Some((Some(root), Some(bytes), bound))
                if root == old.root_key_id()
                    && bytes.as_slice() == old.as_bytes()
                    && (*bound != 0) == old.is_store_bound()
        );
        if !unchanged {
            return Ok(false);
        }
        sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.update_wrapped)))
            .bind(new.root_key_id().to_string())
            .bind(new.as_bytes().to_vec())
            .bind(i64::from(new.is_store_bound()))
            .bind(tenant.to_string())
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await?;
        self.bump_generation(&mut tx, tenant).await?;
        self.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rewrap_audit_key_once(
        &self,
        old: &WrappedKey,
        new: &WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.update_audit_key)))
            .bind(new.root_key_id().to_string())
            .bind(new.as_bytes().to_vec())
            .bind(i64::from(new.is_store_bound()))
            .bind(old.root_key_id().to_string())
            .bind(old.as_bytes().to_vec())
            .bind(i64::from(old.is_store_bound()))
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&updated) == 0 {
            return Ok(false);
        }
        self.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn prune_once(
        &self,
        through: u64,
        through_mac: &[u8; AUDIT_MAC_LEN],
        audit: &AuditAppend<'_>,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin().await?;
        let (head_seq, head_mac) = sqlx::query_as::<DB, (i64, Option<Vec<u8>>)>(AssertSqlSafe(
            self.sql.lock_audit_head.clone(),
        ))
        .fetch_one(&mut *tx)
        .await?;
        let through_i = i64::try_from(through).unwrap_or(i64::MAX);
        let stored: Option<Vec<u8>> = sqlx::query_scalar::<DB, Vec<u8>>(AssertSqlSafe(Arc::clone(
            &self.sql.select_audit_mac,
        )))
        .bind(through_i)
        .fetch_optional(&mut *tx)
        .await?;
        if !stored.is_some_and(|m| bool::from(m.as_slice().ct_eq(through_mac))) {
            return Ok(0);
        }
        let deleted = sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.delete_audit_through)))
            .bind(through_i)
            .execute(&mut *tx)
            .await?;
        let head_mac = head_mac.as_deref().map(mac_from);
        let previous = head_mac.as_ref().map(|mac| (to_u64(head_seq), mac));
        let entry = audit.link(previous);
        self.insert_audit_entry(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&deleted))
    }
}

#[async_trait]
impl<DB> KeyStore for SqlKeyStore<DB>
where
    DB: SqlDatabase,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Vec<u8>: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
{
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>> {
        self.check_schema().await?;
        let rows = retry!(self, "reading a tenant's keys", async {
            sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.load_tenant)))
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await
        })?;
        let mut record: Option<TenantRecord> = None;
        for row in rows {
            let get = |e: sqlx::Error| self.error("reading a tenant's keys", e);
            let shredded_at: Option<i64> = row.try_get(0).map_err(get)?;
            let min: i64 = row.try_get(1).map_err(get)?;
            let generation: i64 = row.try_get(2).map_err(get)?;
            let version: Option<i64> = row.try_get(3).map_err(get)?;
            // Out of range is an altered row, never "no minimum".
            let min = u32::try_from(min).map_err(|_| {
                bad_row(format!(
                    "tenant `{tenant}` has minimum decryption version {min}"
                ))
            })?;
            let record = record.get_or_insert_with(|| TenantRecord {
                tenant: tenant.to_string(),
                shredded_at: shredded_at.map(Timestamp::from_unix_seconds),
                min_decryption_version: min,
                generation: to_u64(generation),
                keys: Vec::new(),
            });
            let Some(version) = version else { continue };
            let key = key_record(
                tenant,
                (
                    version,
                    row.try_get(4).map_err(get)?,
                    row.try_get(5).map_err(get)?,
                    row.try_get(6).map_err(get)?,
                    row.try_get(7).map_err(get)?,
                    row.try_get(8).map_err(get)?,
                    row.try_get(9).map_err(get)?,
                ),
            )?;
            record.keys.push(key);
        }
        Ok(record)
    }

    async fn tenant_generation(&self, tenant: &str) -> Result<Option<u64>> {
        self.check_schema().await?;
        let generation = retry!(self, "reading a tenant's generation", async {
            sqlx::query_scalar::<DB, i64>(AssertSqlSafe(Arc::clone(&self.sql.select_generation)))
                .bind(tenant.to_string())
                .fetch_optional(&self.pool)
                .await
        })?;
        Ok(generation.map(to_u64))
    }

    async fn tenant_generations(&self, tenants: &[&str]) -> Result<Vec<Option<u64>>> {
        self.check_schema().await?;
        let mut found: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for chunk in tenants.chunks(statements::GENERATIONS_CHUNK) {
            let Some(first) = chunk.first() else { continue };
            let rows = retry!(self, "reading tenants' generations", async {
                let mut query = sqlx::query_as::<DB, (String, i64)>(AssertSqlSafe(Arc::clone(
                    &self.sql.select_generations,
                )));
                // Every placeholder is bound: the last chunk repeats its first id.
                for i in 0..statements::GENERATIONS_CHUNK {
                    query = query.bind(chunk.get(i).unwrap_or(first).to_string());
                }
                query.fetch_all(&self.pool).await
            })?;
            found.extend(rows.into_iter().map(|(t, g)| (t, to_u64(g))));
        }
        Ok(tenants.iter().map(|t| found.get(*t).copied()).collect())
    }

    async fn insert_key_version(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome> {
        self.check_schema().await?;
        retry!(
            self,
            "creating a tenant key version",
            self.insert_key_once(tenant, &new, audit, false)
        )?
    }

    async fn update_key_state(
        &self,
        tenant: &str,
        version: u32,
        from: KeyState,
        to: KeyState,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        self.check_schema().await?;
        retry!(
            self,
            "changing a key state",
            self.update_state_once(tenant, version, from, to, audit)
        )
    }

    async fn set_min_decryption_version(
        &self,
        tenant: &str,
        minimum: u32,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        self.check_schema().await?;
        retry!(
            self,
            "setting the minimum decryption version",
            self.set_min_once(tenant, minimum, audit)
        )
    }

    async fn shred_tenant(&self, tenant: &str, audit: &AuditAppend<'_>) -> Result<bool> {
        self.check_schema().await?;
        retry!(self, "shredding a tenant", self.shred_once(tenant, audit))
    }

    async fn recreate_tenant(
        &self,
        tenant: &str,
        new: NewKeyVersion,
        audit: &AuditAppend<'_>,
    ) -> Result<InsertOutcome> {
        self.check_schema().await?;
        retry!(
            self,
            "re-creating a tenant",
            self.insert_key_once(tenant, &new, audit, true)
        )?
    }

    async fn list_wrapped_keys(
        &self,
        after: Option<(&str, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredKey>> {
        self.check_schema().await?;
        let (tenant, version) =
            after.map_or((String::new(), -1), |(t, v)| (t.to_string(), i64::from(v)));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = retry!(self, "listing wrapped keys", async {
            sqlx::query_as::<
                DB,
                (
                    String,
                    i64,
                    String,
                    i64,
                    i64,
                    Option<String>,
                    Option<Vec<u8>>,
                    i64,
                ),
            >(AssertSqlSafe(Arc::clone(&self.sql.list_wrapped)))
            .bind(tenant.clone())
            .bind(tenant.clone())
            .bind(version)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
        })?;
        rows.into_iter()
            .map(
                |(tenant, version, state, created, changed, root, wrapped, bound)| {
                    key_record(
                        &tenant,
                        (version, state, created, changed, root, wrapped, bound),
                    )
                    .map(|key| StoredKey { tenant, key })
                },
            )
            .collect()
    }

    async fn rewrap_key(
        &self,
        tenant: &str,
        version: u32,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        self.check_schema().await?;
        retry!(
            self,
            "re-wrapping a key",
            self.rewrap_once(tenant, version, old, &new, audit)
        )
    }

    async fn load_audit_key(&self) -> Result<Option<WrappedKey>> {
        self.check_schema().await?;
        let row = retry!(self, "reading the audit key", async {
            sqlx::query_as::<DB, (String, Vec<u8>, i64)>(AssertSqlSafe(Arc::clone(
                &self.sql.select_audit_key,
            )))
            .fetch_optional(&self.pool)
            .await
        })?;
        Ok(row.map(|(root, bytes, bound)| wrapped_key(root, bytes, bound)))
    }

    async fn insert_audit_key(&self, wrapped: WrappedKey) -> Result<bool> {
        self.check_schema().await?;
        retry!(self, "storing the audit key", async {
            match sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.insert_audit_key)))
                .bind(wrapped.root_key_id().to_string())
                .bind(wrapped.as_bytes().to_vec())
                .bind(i64::from(wrapped.is_store_bound()))
                .execute(&self.pool)
                .await
            {
                Ok(_) => Ok(true),
                // Another process stored one first.
                Err(err) if is_unique_violation(&err) => Ok(false),
                Err(err) => Err(err),
            }
        })
    }

    async fn rewrap_audit_key(
        &self,
        old: &WrappedKey,
        new: WrappedKey,
        audit: &AuditAppend<'_>,
    ) -> Result<bool> {
        self.check_schema().await?;
        retry!(
            self,
            "re-wrapping the audit key",
            self.rewrap_audit_key_once(old, &new, audit)
        )
    }

    async fn store_identity(&self) -> Result<Option<StoreIdentity>> {
        self.check_schema().await?;
        let row = retry!(self, "reading the key store's identity", async {
            sqlx::query_as::<DB, (String, i64)>(AssertSqlSafe(Arc::clone(&self.sql.select_store)))
                .fetch_optional(&self.pool)
                .await
        })?;
        // `migrate` gives every store its identity: one without was altered.
        let (id, accepts) =
            row.ok_or_else(|| bad_row("the key store's identity row is missing".into()))?;
        StoreIdentity::new(id, accepts != 0)
            .map(Some)
            .map_err(|_| bad_row("the key store's identity is malformed".into()))
    }

    async fn record_audit(&self, audit: &AuditAppend<'_>) -> Result<()> {
        self.check_schema().await?;
        retry!(self, "recording an audit entry", async {
            let mut tx = self.begin().await?;
            self.append_audit(&mut tx, audit).await?;
            tx.commit().await
        })
    }

    async fn refuse_unbound_wraps(&self, audit: &AuditAppend<'_>) -> Result<bool> {
        self.check_schema().await?;
        retry!(self, "refusing unbound wrapped keys", async {
            let mut tx = self.begin().await?;
            let updated = sqlx::query::<DB>(AssertSqlSafe(Arc::clone(&self.sql.refuse_unbound)))
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&updated) == 0 {
                // Either an unbound key is still there (nothing changes), or
                // the store refused them already: a store created refusing
                // records so in its log too.
                let accepts = sqlx::query_as::<DB, (String, i64)>(AssertSqlSafe(Arc::clone(
                    &self.sql.select_store,
                )))
                .fetch_optional(&mut *tx)
                .await?
                .is_none_or(|(_, accepts)| accepts != 0);
                if accepts {
                    return Ok(false);
                }
            }
            self.append_audit(&mut tx, audit).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    async fn audit_head(&self) -> Result<Option<(u64, [u8; AUDIT_MAC_LEN])>> {
        self.check_schema().await?;
        let row = retry!(self, "reading the audit head", async {
            sqlx::query_as::<DB, (i64, Option<Vec<u8>>)>(AssertSqlSafe(Arc::clone(
                &self.sql.select_audit_head,
            )))
            .fetch_optional(&self.pool)
            .await
        })?;
        // The migration inserts the head row: a store without one was altered.
        let (seq, mac) = row.ok_or_else(|| bad_row("the audit head row is missing".into()))?;
        let seq = u64::try_from(seq)
            .map_err(|_| bad_row(format!("the audit head row names entry {seq}")))?;
        Ok(Some((
            seq,
            mac.as_deref().map_or([0; AUDIT_MAC_LEN], mac_from),
        )))
    }

    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.check_schema().await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = retry!(self, "reading the audit log", async {
            sqlx::query_as::<DB, (i64, i64, String, String, i64, String, String, Vec<u8>)>(
                AssertSqlSafe(Arc::clone(&self.sql.select_audit)),
            )
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(
                |(seq, at, event, tenant, version, actor, detail, mac)| AuditEntry {
                    seq: to_u64(seq),
                    at: Timestamp::from_unix_seconds(at),
                    event,
                    tenant,
                    version: to_u32(version),
                    actor,
                    detail,
                    mac: mac_from(&mac),
                },
            )
            .collect())
    }

    async fn prune_audit(
        &self,
        through: u64,
        through_mac: &[u8; AUDIT_MAC_LEN],
        audit: &AuditAppend<'_>,
    ) -> Result<u64> {
        self.check_schema().await?;
        retry!(
            self,
            "pruning the audit log",
            self.prune_once(through, through_mac, audit)
        )
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::SqlKeyStore;
    use crate::audit::{AuditAppend, AuditEvent};
    use crate::crypto::HmacKey;
    use crate::store::KeyStore;

    /// A store stops accepting unbound keys only once it holds none: a key
    /// written without the store's id after `rewrap_all` bound the others (by
    /// a process of an earlier release still running) is never stranded.
    #[tokio::test]
    async fn refusal_waits_for_the_last_unbound_key() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let store = SqlKeyStore::new(pool.clone());
        store.migrate().await.unwrap();
        let exec = |sql: &'static str| {
            let pool = pool.clone();
            async move { sqlx::query(sql).execute(&pool).await.unwrap() }
        };
        // As an upgraded store, with a key an old process wrote unbound.
        exec("UPDATE fieldseal_store SET accepts_unbound = 1").await;
        exec(
            "INSERT INTO fieldseal_tenants (tenant, min_decryption_version) \
             VALUES ('acme', 0)",
        )
        .await;
        exec(
            "INSERT INTO fieldseal_keys (tenant, version, state, created_at, state_changed_at, \
             root_key_id, wrapped, bound) VALUES ('acme', 1, 'active', 0, 0, 'root', x'00', 0)",
        )
        .await;
        let key = HmacKey::new(&[7; 32]);
        let audit = || {
            AuditAppend::new(
                &key,
                AuditEvent::UnboundWrapsRefused,
                "",
                0,
                None,
                String::new(),
                crate::Timestamp::now(),
            )
            .unwrap()
        };
        assert!(!store.refuse_unbound_wraps(&audit()).await.unwrap());
        let identity = store.store_identity().await.unwrap().unwrap();
        assert!(identity.accepts_unbound, "refused with an unbound key left");
        assert_eq!(store.audit_head().await.unwrap().unwrap().0, 0);
        // Bound: now it refuses, and says so in the log.
        exec("UPDATE fieldseal_keys SET bound = 1").await;
        assert!(store.refuse_unbound_wraps(&audit()).await.unwrap());
        assert!(
            !store
                .store_identity()
                .await
                .unwrap()
                .unwrap()
                .accepts_unbound
        );
        assert_eq!(store.audit_head().await.unwrap().unwrap().0, 1);
        // A store that already refuses records it again when asked (a store
        // created refusing, at its log's first entry).
        assert!(store.refuse_unbound_wraps(&audit()).await.unwrap());
        assert_eq!(store.audit_head().await.unwrap().unwrap().0, 2);
    }
}

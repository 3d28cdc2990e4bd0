//! The SQL of the key store, built once per store for its dialect and table names.

use std::sync::Arc;

use crate::sql::dialect::{Dialect, placeholders};

/// SQLite's statements for erasing wrapped keys from the file, not only from
/// their rows (see [`Statements::scrub`]).
pub(crate) struct Scrub {
    pub(crate) secure_delete: Arc<str>,
    pub(crate) zero_key: Arc<str>,
    pub(crate) zero_tenant: Arc<str>,
    pub(crate) checkpoint: Arc<str>,
}

/// How many tenants one generation query reads.
pub(crate) const GENERATIONS_CHUNK: usize = 64;

/// Every statement the store runs, with table names filled in and placeholders
/// in the dialect's form.
pub(crate) struct Statements {
    pub(crate) dialect: Dialect,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) prefix: String,
    pub(crate) schema: Option<String>,
    pub(crate) schema_table: String,
    pub(crate) keys_table: String,
    migration: Vec<Arc<str>>,
    pub(crate) insert_schema_version: Arc<str>,
    pub(crate) select_schema_version: Arc<str>,
    pub(crate) insert_audit_head: Arc<str>,
    pub(crate) insert_tenant: Arc<str>,
    pub(crate) lock_tenant: Arc<str>,
    pub(crate) latest_version: Arc<str>,
    pub(crate) bump_generation: Arc<str>,
    pub(crate) lock_audit_head: Arc<str>,
    pub(crate) select_audit_head: Arc<str>,
    pub(crate) insert_audit: Arc<str>,
    pub(crate) update_audit_head: Arc<str>,
    pub(crate) insert_key: Arc<str>,
    pub(crate) unshred_tenant: Arc<str>,
    pub(crate) update_key_state: Arc<str>,
    pub(crate) destroy_key: Arc<str>,
    pub(crate) set_min_version: Arc<str>,
    pub(crate) shred_tenant: Arc<str>,
    pub(crate) destroy_all_keys: Arc<str>,
    pub(crate) erase_all_wrapped: Arc<str>,
    /// SQLite only: statements run in a destroying transaction before the
    /// wrapped bytes are set to NULL, so that no copy of them stays in the
    /// file's free space (`secure_delete`, then zeros over the bytes in
    /// place); and the checkpoint that moves the result out of the WAL.
    pub(crate) scrub: Option<Scrub>,
    pub(crate) select_wrapped: Arc<str>,
    pub(crate) update_wrapped: Arc<str>,
    pub(crate) select_audit_mac: Arc<str>,
    pub(crate) delete_audit_through: Arc<str>,
    pub(crate) load_tenant: Arc<str>,
    pub(crate) select_generation: Arc<str>,
    /// The generations of [`GENERATIONS_CHUNK`] tenants (ids may repeat).
    pub(crate) select_generations: Arc<str>,
    pub(crate) list_wrapped: Arc<str>,
    pub(crate) select_audit_key: Arc<str>,
    pub(crate) insert_audit_key: Arc<str>,
    pub(crate) update_audit_key: Arc<str>,
    pub(crate) select_audit: Arc<str>,
    /// Schema version 2: the store's identity, and the `bound` columns.
    pub(crate) select_store: Arc<str>,
    pub(crate) insert_store: Arc<str>,
    pub(crate) refuse_unbound: Arc<str>,
    pub(crate) upgrade_to_2: Vec<Arc<str>>,
    pub(crate) set_schema_version: Arc<str>,
}

impl Statements {
    pub(crate) fn new(dialect: Dialect, prefix: &str, schema: Option<&str>) -> Self {
        let qualify = |name: &str| match schema {
            Some(schema) => format!("{schema}.{prefix}{name}"),
            None => format!("{prefix}{name}"),
        };
        let version_t = qualify("schema_version");
        let tenants = qualify("tenants");
        let keys = qualify("keys");
        let audit = qualify("audit");
        let head = qualify("audit_head");
        let audit_key = qualify("audit_key");
        let store = qualify("store");
        let lock = dialect.for_update();

        // `INSERT … unless the row exists`. On MySQL the no-op update takes the
        // row's exclusive lock directly (and, unlike INSERT IGNORE, does not
        // turn data errors into warnings); its rows_affected is not reliable,
        // so no caller reads it.
        let insert_if_absent = |table: &str, columns: &str, values: &str, key: &str| match dialect {
            Dialect::MySql => {
                let first = key.split(',').next().unwrap_or(key).trim();
                format!(
                    "INSERT INTO {table} ({columns}) VALUES ({values}) \
                     ON DUPLICATE KEY UPDATE {first} = {first}"
                )
            }
            Dialect::Postgres | Dialect::Sqlite => format!(
                "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key}) DO NOTHING"
            ),
        };

        let sql = |text: String| -> Arc<str> { Arc::from(placeholders(dialect, &text)) };

        let scrub = (dialect == Dialect::Sqlite).then(|| Scrub {
            secure_delete: sql("PRAGMA secure_delete = ON".into()),
            zero_key: sql(format!(
                "UPDATE {keys} SET wrapped = zeroblob(length(wrapped)) \
                 WHERE tenant = ? AND version = ? AND wrapped IS NOT NULL"
            )),
            zero_tenant: sql(format!(
                "UPDATE {keys} SET wrapped = zeroblob(length(wrapped)) \
                 WHERE tenant = ? AND wrapped IS NOT NULL"
            )),
            checkpoint: sql("PRAGMA wal_checkpoint(TRUNCATE)".into()),
        });

        Self {
            scrub,
            dialect,
            prefix: prefix.to_string(),
            schema: schema.map(str::to_string),
            migration: migration(
                dialect,
                schema,
                &[
                    &version_t, &tenants, &keys, &audit, &head, &audit_key, &store,
                ],
            ),
            insert_schema_version: sql(insert_if_absent(&version_t, "id, version", "1, ?", "id")),
            select_schema_version: sql(format!("SELECT version FROM {version_t} WHERE id = 1")),
            insert_audit_head: sql(insert_if_absent(&head, "id, seq, mac", "1, 0, NULL", "id")),
            insert_tenant: sql(insert_if_absent(
                &tenants,
                "tenant, shredded_at, min_decryption_version, generation",
                "?, NULL, 0, 0",
                "tenant",
            )),
            lock_tenant: sql(format!(
                "SELECT shredded_at, min_decryption_version, generation FROM {tenants} \
                 WHERE tenant = ?{lock}"
            )),
            latest_version: sql(format!(
                "SELECT COALESCE(MAX(version), 0) FROM {keys} WHERE tenant = ?"
            )),
            bump_generation: sql(format!(
                "UPDATE {tenants} SET generation = generation + 1 WHERE tenant = ?"
            )),
            lock_audit_head: sql(format!("SELECT seq, mac FROM {head} WHERE id = 1{lock}")),
            select_audit_head: sql(format!("SELECT seq, mac FROM {head} WHERE id = 1")),
            insert_audit: sql(format!(
                "INSERT INTO {audit} (seq, occurred_at, event, tenant, version, actor, detail, mac) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            )),
            update_audit_head: sql(format!("UPDATE {head} SET seq = ?, mac = ? WHERE id = 1")),
            // A plain insert: the caller holds the tenant's lock and has checked
            // the version is new, and the primary key backs that up.
            insert_key: sql(format!(
                "INSERT INTO {keys} \
                 (tenant, version, state, created_at, state_changed_at, root_key_id, wrapped, \
                 bound) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            )),
            unshred_tenant: sql(format!(
                "UPDATE {tenants} SET shredded_at = NULL WHERE tenant = ?"
            )),
            update_key_state: sql(format!(
                "UPDATE {keys} SET state = ?, state_changed_at = ? \
                 WHERE tenant = ? AND version = ? AND state = ?"
            )),
            destroy_key: sql(format!(
                "UPDATE {keys} SET state = ?, state_changed_at = ?, root_key_id = NULL, wrapped = NULL \
                 WHERE tenant = ? AND version = ? AND state = ?"
            )),
            set_min_version: sql(format!(
                "UPDATE {tenants} SET min_decryption_version = ? WHERE tenant = ?"
            )),
            shred_tenant: sql(format!(
                "UPDATE {tenants} SET shredded_at = ? WHERE tenant = ?"
            )),
            destroy_all_keys: sql(format!(
                "UPDATE {keys} SET state = ?, state_changed_at = ? WHERE tenant = ? AND state <> ?"
            )),
            erase_all_wrapped: sql(format!(
                "UPDATE {keys} SET root_key_id = NULL, wrapped = NULL WHERE tenant = ?"
            )),
            select_wrapped: sql(format!(
                "SELECT root_key_id, wrapped, bound FROM {keys} WHERE tenant = ? AND version = ?"
            )),
            update_wrapped: sql(format!(
                "UPDATE {keys} SET root_key_id = ?, wrapped = ?, bound = ? \
                 WHERE tenant = ? AND version = ?"
            )),
            select_audit_mac: sql(format!("SELECT mac FROM {audit} WHERE seq = ?")),
            delete_audit_through: sql(format!("DELETE FROM {audit} WHERE seq <= ?")),
            load_tenant: sql(format!(
                "SELECT t.shredded_at, t.min_decryption_version, t.generation, k.version, k.state, \
                 k.created_at, k.state_changed_at, k.root_key_id, k.wrapped, k.bound \
                 FROM {tenants} t LEFT JOIN {keys} k ON k.tenant = t.tenant \
                 WHERE t.tenant = ? ORDER BY k.version"
            )),
            select_generation: sql(format!("SELECT generation FROM {tenants} WHERE tenant = ?")),
            select_generations: sql(format!(
                "SELECT tenant, generation FROM {tenants} WHERE tenant IN ({})",
                vec!["?"; GENERATIONS_CHUNK].join(", ")
            )),
            list_wrapped: sql(format!(
                "SELECT tenant, version, state, created_at, state_changed_at, root_key_id, wrapped, \
                 bound FROM {keys} WHERE wrapped IS NOT NULL \
                 AND (tenant > ? OR (tenant = ? AND version > ?)) \
                 ORDER BY tenant, version LIMIT ?"
            )),
            select_audit_key: sql(format!(
                "SELECT root_key_id, wrapped, bound FROM {audit_key} WHERE id = 1"
            )),
            // A plain INSERT: the caller must learn whether its key won (a
            // unique violation says another process stored one first).
            insert_audit_key: sql(format!(
                "INSERT INTO {audit_key} (id, root_key_id, wrapped, bound) VALUES (1, ?, ?, ?)"
            )),
            update_audit_key: sql(format!(
                "UPDATE {audit_key} SET root_key_id = ?, wrapped = ?, bound = ? \
                 WHERE id = 1 AND root_key_id = ? AND wrapped = ? AND bound = ?"
            )),
            select_audit: sql(format!(
                "SELECT seq, occurred_at, event, tenant, version, actor, detail, mac FROM {audit} \
                 WHERE seq > ? ORDER BY seq LIMIT ?"
            )),
            select_store: sql(format!(
                "SELECT store_id, accepts_unbound FROM {store} WHERE id = 1"
            )),
            insert_store: sql(insert_if_absent(
                &store,
                "id, store_id, accepts_unbound",
                "1, ?, ?",
                "id",
            )),
            // Only once no unbound key is left: one written meanwhile (by a
            // process of an earlier release still running) would never
            // unwrap again.
            refuse_unbound: sql(format!(
                "UPDATE {store} SET accepts_unbound = 0 WHERE id = 1 AND accepts_unbound <> 0 \
                 AND NOT EXISTS (SELECT 1 FROM {keys} WHERE bound = 0 AND wrapped IS NOT NULL) \
                 AND NOT EXISTS (SELECT 1 FROM {audit_key} WHERE bound = 0)"
            )),
            upgrade_to_2: [&keys, &audit_key]
                .iter()
                .map(|t| {
                    let int = match dialect {
                        Dialect::Sqlite => "INTEGER",
                        Dialect::Postgres | Dialect::MySql => "BIGINT",
                    };
                    sql(format!(
                        "ALTER TABLE {t} ADD COLUMN bound {int} NOT NULL DEFAULT 0"
                    ))
                })
                .collect(),
            set_schema_version: sql(format!(
                "UPDATE {version_t} SET version = ? WHERE id = 1 AND version = ?"
            )),
            schema_table: version_t,
            keys_table: keys,
        }
    }

    /// The DDL, in order. Every statement is idempotent.
    pub(crate) fn migration(&self) -> impl Iterator<Item = &Arc<str>> {
        self.migration.iter()
    }
}

fn migration(dialect: Dialect, schema: Option<&str>, tables: &[&String; 7]) -> Vec<Arc<str>> {
    let [version_t, tenants, keys, audit, head, audit_key, store] = *tables;
    // Tenant ids compare byte for byte everywhere: MySQL needs a binary
    // collation for that (its default collations ignore case; even binary ones
    // ignore trailing spaces, which tenant ids may not have).
    let (id, text, bytes, int, small_bytes, suffix) = match dialect {
        Dialect::Postgres => ("TEXT", "TEXT", "BYTEA", "BIGINT", "BYTEA", ""),
        Dialect::MySql => (
            "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "TEXT",
            "BLOB",
            "BIGINT",
            "VARBINARY(64)",
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ),
        Dialect::Sqlite => ("TEXT", "TEXT", "BLOB", "INTEGER", "BLOB", ""),
    };
    let short = match dialect {
        Dialect::MySql => "VARCHAR(255)",
        _ => text,
    };
    let mut out = Vec::new();
    if let (Dialect::Postgres, Some(schema)) = (dialect, schema) {
        out.push(format!("CREATE SCHEMA IF NOT EXISTS {schema}"));
    }
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {version_t} (id INTEGER NOT NULL PRIMARY KEY, version {int} NOT NULL){suffix}"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {tenants} (\
         tenant {id} NOT NULL PRIMARY KEY, \
         shredded_at {int} NULL, \
         min_decryption_version {int} NOT NULL DEFAULT 0, \
         generation {int} NOT NULL DEFAULT 0){suffix}"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {keys} (\
         tenant {id} NOT NULL, \
         version {int} NOT NULL, \
         state {short} NOT NULL, \
         created_at {int} NOT NULL, \
         state_changed_at {int} NOT NULL, \
         root_key_id {short} NULL, \
         wrapped {bytes} NULL, \
         bound {int} NOT NULL DEFAULT 0, \
         PRIMARY KEY (tenant, version)){suffix}"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {audit} (\
         seq {int} NOT NULL PRIMARY KEY, \
         occurred_at {int} NOT NULL, \
         event {short} NOT NULL, \
         tenant {id} NOT NULL, \
         version {int} NOT NULL, \
         actor {text} NOT NULL, \
         detail {text} NOT NULL, \
         mac {small_bytes} NOT NULL){suffix}"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {head} (\
         id INTEGER NOT NULL PRIMARY KEY, seq {int} NOT NULL, mac {small_bytes} NULL){suffix}"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {audit_key} (\
         id INTEGER NOT NULL PRIMARY KEY, root_key_id {short} NOT NULL, wrapped {bytes} NOT NULL, \
         bound {int} NOT NULL DEFAULT 0){suffix}"
    ));
    // Schema version 2: who this store is (its keys are wrapped with its id in
    // their context), and whether keys wrapped before that still unwrap.
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {store} (\
         id INTEGER NOT NULL PRIMARY KEY, store_id {short} NOT NULL, \
         accepts_unbound {int} NOT NULL){suffix}"
    ));
    out.into_iter().map(Arc::from).collect()
}

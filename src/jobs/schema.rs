//! Checks that the configured tables, columns and keys exist with usable types.

use super::job::db_error;
use super::spec::KeyType;
use super::table::{Key, Stored, Table};
use super::worker::is_fatal;
use super::{SealedColumns, spec};
use crate::error::{Error, Result};
use crate::sql::access::{Kind, Val};
use std::sync::Arc;

/// Whether a key column of declared type `ty` (lower case) can be read and
/// compared as `key_type`; if not, what to do.
pub(super) fn key_type_fits(
    dialect: crate::sql::dialect::Dialect,
    key_type: KeyType,
    ty: &str,
) -> std::result::Result<(), &'static str> {
    use crate::sql::dialect::Dialect;
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
pub(super) fn is_text_type(dialect: crate::sql::dialect::Dialect, ty: &str) -> bool {
    if dialect == crate::sql::dialect::Dialect::Sqlite {
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
pub(super) fn split_schema(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    }
}

impl SealedColumns {
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
                        crate::sql::dialect::DbError::new(&e)
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
    pub(super) async fn column_type(&self, t: &Table, column: &str) -> Result<Option<String>> {
        use crate::sql::dialect::Dialect;
        let table = t.spec.table();
        let (schema, name) = split_schema(table);
        let (sql, binds) = match self.db.dialect() {
            Dialect::Postgres => (
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = CAST(? AS regclass) AND attname = ? AND NOT attisdropped",
                vec![
                    Val::Text(crate::sql::ident::quote(Dialect::Postgres, table)),
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

    pub(super) async fn primary_key(&self, t: &Table) -> Result<Vec<String>> {
        use crate::sql::dialect::Dialect;
        let table = t.spec.table();
        let (schema, name) = split_schema(table);
        let (sql, binds) = match self.db.dialect() {
            Dialect::Postgres => (
                "SELECT CAST(a.attname AS TEXT) FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indisprimary AND i.indrelid = CAST(? AS regclass) ORDER BY a.attnum"
                    .to_string(),
                vec![Val::Text(crate::sql::ident::quote(
                    Dialect::Postgres,
                    table,
                ))],
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

    /// Before `migrate` seals anything into column `j` of `t`: opens a sample
    /// (the first 64 in key order) of the values already sealed there (by the application) under
    /// the configured recipe, and refuses if any does not open. Values sealed
    /// under a wrong recipe would open for `migrate` itself but never for the
    /// application. A column with no sealed value yet cannot be checked.
    pub(super) async fn check_recipe(
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
        let rows = t.rows(
            self.db
                .fetch(&sql, &binds, t.kinds())
                .await
                .map_err(|e| db_error(&self.db, "sampling sealed values", e))?,
        );
        let mut opened = 0u64;
        let mut failed: Vec<(String, Error)> = Vec::new();
        for row in &rows {
            let Stored::Sealed(value) = t.stored(row, j) else {
                continue;
            };
            let outcome = match row.tenant() {
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
                    let key = row.key().map(Key::to_text).unwrap_or_default();
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
}

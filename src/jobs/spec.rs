//! Table specifications: which columns of the application's tables hold sealed
//! values, and the recipe that rebuilds each value's [`Context`].

use crate::blind_index::BlindIndex;
use crate::context::{Context, check_tenant};
use crate::error::{Error, Result};
use crate::sql::dialect::Dialect;
use crate::sql::ident::check_app_name;

/// The type of a table's primary key column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// An integer (`BIGINT`, `INTEGER`, `SERIAL`, …). The row id in contexts is
    /// its decimal text.
    Integer,
    /// A text key (`TEXT`, `VARCHAR`, `CHAR`; also a UUID stored as text).
    Text,
    /// A PostgreSQL `uuid`. The row id in contexts is its lower-case hyphenated
    /// text (`8f14e45f-ceea-467f-a8d6-8f5b8b2c1f6a`), as `uuid::Uuid` prints it.
    /// On MySQL and SQLite, store UUIDs as text and use [`KeyType::Text`].
    Uuid,
}

/// How a sealed column stores its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColumnForm {
    /// The binary form, in a `BYTEA`, `BLOB` or `VARBINARY` column
    /// ([`SealedValue`](crate::SealedValue)).
    Binary,
    /// The text form (`fs:…`), in a `TEXT` or `VARCHAR` column
    /// ([`SealedText`](crate::SealedText)).
    Text,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TenantSource {
    Column(String),
    Fixed(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RowSource {
    Key,
    Column(String),
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ExtraSource {
    Value(String),
    Column(String),
}

/// One of the application's tables with sealed columns.
///
/// ```
/// use fieldseal::{jobs::{ColumnForm, ColumnSpec, KeyType, TableSpec}};
///
/// let integrations = TableSpec::new("integrations", "id", KeyType::Integer)
///     .tenant_column("tenant_id")
///     .column(ColumnSpec::new("refresh_token", ColumnForm::Binary))
///     .column(
///         ColumnSpec::new("api_secret", ColumnForm::Text).extra_from_column("provider", "provider"),
///     );
/// # let _ = integrations;
/// ```
///
/// Names are SQL identifiers exactly as in the database catalog (they are
/// quoted, so they are case-sensitive); on PostgreSQL the table may be
/// schema-qualified (`billing.integrations`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableSpec {
    pub(crate) table: String,
    pub(crate) key: String,
    pub(crate) key_type: KeyType,
    pub(crate) tenant: Option<TenantSource>,
    pub(crate) columns: Vec<ColumnSpec>,
}

impl TableSpec {
    /// A table with primary key column `key` of type `key_type`. The key must
    /// be the table's whole primary key: composite keys are refused.
    pub fn new(table: impl Into<String>, key: impl Into<String>, key_type: KeyType) -> Self {
        Self {
            table: table.into(),
            key: key.into(),
            key_type,
            tenant: None,
            columns: Vec::new(),
        }
    }

    /// Each row's tenant id is in `column`.
    #[must_use]
    pub fn tenant_column(mut self, column: impl Into<String>) -> Self {
        self.tenant = Some(TenantSource::Column(column.into()));
        self
    }

    /// Every row of the table belongs to `tenant`.
    #[must_use]
    pub fn fixed_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(TenantSource::Fixed(tenant.into()));
        self
    }

    /// Adds a sealed column.
    #[must_use]
    pub fn column(mut self, column: ColumnSpec) -> Self {
        self.columns.push(column);
        self
    }

    /// The table's name, as given.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The label contexts use for the table unless a column says otherwise:
    /// the table name without its schema.
    fn default_label(&self) -> &str {
        self.table.rsplit('.').next().unwrap_or(&self.table)
    }
}

/// A sealed column, and how the application builds the [`Context`] of its
/// values.
///
/// By default the context is `Context::builder(tenant, <table>, <column>)
/// .row(<primary key>)`, with the table's name (without schema) and the
/// column's name as labels. Every part can be changed to match what the
/// application does; `verify` proves the recipe right before anything is
/// written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ColumnSpec {
    pub(crate) column: String,
    pub(crate) form: ColumnForm,
    pub(crate) table_label: Option<String>,
    pub(crate) column_label: Option<String>,
    pub(crate) row: RowSource,
    pub(crate) extras: Vec<(String, ExtraSource)>,
    pub(crate) migrate: Option<Migration>,
    /// Blind index columns kept beside the sealed column: (SQL column, index).
    pub(crate) indexes: Vec<(String, BlindIndex)>,
}

/// How `migrate` adopts fieldseal on a column that holds plaintext.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Migration {
    /// Seal the plaintext of this (text) column into the sealed column.
    From(String),
    /// Seal, in place, the values of this text column that are not sealed.
    InPlace,
}

impl ColumnSpec {
    /// Sealed column `column`, in `form`.
    pub fn new(column: impl Into<String>, form: ColumnForm) -> Self {
        Self {
            column: column.into(),
            form,
            table_label: None,
            column_label: None,
            row: RowSource::Key,
            extras: Vec::new(),
            migrate: None,
            indexes: Vec::new(),
        }
    }

    /// The blind index `index` of this column's values is stored in column
    /// `column` of the same row: whenever a job writes a sealed value
    /// (re-seal, migrate), it writes the value's index under the same key
    /// version in the same compare-and-swap (FORMAT.md §"Index values").
    #[must_use]
    pub fn blind_index(mut self, column: impl Into<String>, index: BlindIndex) -> Self {
        self.indexes.push((column.into(), index));
        self
    }

    /// The table label the application puts in contexts (default: the table's
    /// name without schema).
    #[must_use]
    pub fn table_label(mut self, label: impl Into<String>) -> Self {
        self.table_label = Some(label.into());
        self
    }

    /// The column label the application puts in contexts (default: the
    /// column's name).
    #[must_use]
    pub fn column_label(mut self, label: impl Into<String>) -> Self {
        self.column_label = Some(label.into());
        self
    }

    /// The row id comes from `column` instead of the primary key.
    #[must_use]
    pub fn row_from_column(mut self, column: impl Into<String>) -> Self {
        self.row = RowSource::Column(column.into());
        self
    }

    /// The application's contexts have no row id.
    #[must_use]
    pub fn without_row(mut self) -> Self {
        self.row = RowSource::None;
        self
    }

    /// Adds the extra pair `(key, value)` to every context.
    #[must_use]
    pub fn extra_value(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extras
            .push((key.into(), ExtraSource::Value(value.into())));
        self
    }

    /// Adds the extra pair `(key, <the row's value of column>)`.
    #[must_use]
    pub fn extra_from_column(mut self, key: impl Into<String>, column: impl Into<String>) -> Self {
        self.extras
            .push((key.into(), ExtraSource::Column(column.into())));
        self
    }

    /// For `migrate`: the plaintext to seal is in text column `source` (expand
    /// and contract: the application moves from `source` to this column).
    #[must_use]
    pub fn migrate_from(mut self, source: impl Into<String>) -> Self {
        self.migrate = Some(Migration::From(source.into()));
        self
    }

    /// For `migrate`: this text column holds plaintext from before fieldseal,
    /// which is sealed where it is. Values are told apart by the `fs:` prefix;
    /// see `docs/OPERATIONS.md` for when this is safe.
    #[must_use]
    pub fn migrate_in_place(mut self) -> Self {
        self.migrate = Some(Migration::InPlace);
        self
    }

    /// The column's name, as given.
    pub fn column(&self) -> &str {
        &self.column
    }
}

/// Validates the specs as a whole, before anything touches the database.
/// Messages name the offending entry as `tables[i].columns[j].field`.
pub(crate) fn validate(tables: &[TableSpec], dialect: Dialect) -> Result<()> {
    if tables.is_empty() {
        return Err(Error::config("tables: no table is configured"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, t) in tables.iter().enumerate() {
        let path = format!("tables[{i}]");
        check_app_name(&path, "table", &t.table, true)?;
        check_app_name(&path, "key", &t.key, false)?;
        if !seen.insert(t.table.as_str()) {
            return Err(Error::config(format!(
                "{path}.table: `{}` is configured twice; list all of its columns under one entry",
                t.table
            )));
        }
        if t.key_type == KeyType::Uuid && dialect != Dialect::Postgres {
            return Err(Error::config(format!(
                "{path}.key: type \"uuid\" is PostgreSQL's uuid column type; on this database \
                 UUIDs are stored as text: use type \"text\""
            )));
        }
        match &t.tenant {
            None => {
                return Err(Error::config(format!(
                    "{path}.tenant: say where each row's tenant comes from: a column, or one \
                     fixed tenant id"
                )));
            }
            Some(TenantSource::Column(c)) => check_app_name(&path, "tenant.column", c, false)?,
            Some(TenantSource::Fixed(id)) => {
                check_tenant(id).map_err(|e| Error::config(format!("{path}.tenant.fixed: {e}")))?
            }
        }
        if t.columns.is_empty() {
            return Err(Error::config(format!(
                "{path}.columns: the table has no sealed column configured"
            )));
        }
        let mut names = std::collections::HashSet::new();
        // Columns the jobs read to build contexts: never an index column.
        let mut read: std::collections::HashSet<&str> = std::collections::HashSet::new();
        if let Some(TenantSource::Column(c)) = &t.tenant {
            read.insert(c);
        }
        for c in &t.columns {
            if let RowSource::Column(r) = &c.row {
                read.insert(r);
            }
            for (_, source) in &c.extras {
                if let ExtraSource::Column(col) = source {
                    read.insert(col);
                }
            }
            if let Some(Migration::From(source)) = &c.migrate {
                read.insert(source);
            }
        }
        for (j, c) in t.columns.iter().enumerate() {
            let path = format!("{path}.columns[{j}]");
            check_app_name(&path, "column", &c.column, false)?;
            if !names.insert(c.column.as_str()) || c.column == t.key {
                return Err(Error::config(format!(
                    "{path}.column: `{}` is configured twice, or is the primary key",
                    c.column
                )));
            }
            if let RowSource::Column(r) = &c.row {
                check_app_name(&path, "row", r, false)?;
            }
            for (i, (col, _)) in c.indexes.iter().enumerate() {
                check_app_name(&path, &format!("indexes[{i}].column"), col, false)?;
                if !names.insert(col.as_str()) || *col == t.key || read.contains(col.as_str()) {
                    return Err(Error::config(format!(
                        "{path}.indexes[{i}].column: `{col}` is configured twice, or is the \
                         primary key, a sealed column, or a column contexts are read from"
                    )));
                }
            }
            for (k, source) in &c.extras {
                if let ExtraSource::Column(col) = source {
                    check_app_name(&path, &format!("extras.{k}"), col, false)?;
                }
            }
            // The labels and constant extras must make a valid context.
            let mut b = Context::builder("tenant", t.label_for(c), c.label());
            for (k, source) in &c.extras {
                b = b.extra(
                    k.clone(),
                    match source {
                        ExtraSource::Value(v) => v.as_str(),
                        ExtraSource::Column(_) => "",
                    },
                );
            }
            b.build().map_err(|e| {
                Error::config(format!("{path}: the context recipe is invalid: {e}"))
            })?;
            match &c.migrate {
                Some(Migration::InPlace) if c.form != ColumnForm::Text => {
                    return Err(Error::config(format!(
                        "{path}.migrate: in-place migration needs a text column, where sealed \
                         values are told apart from plaintext by their `fs:` prefix; for a \
                         binary column, seal into it from the plaintext column with \
                         `migrate_from`"
                    )));
                }
                Some(Migration::From(source)) => {
                    check_app_name(&path, "migrate_from", source, false)?;
                    if *source == c.column {
                        return Err(Error::config(format!(
                            "{path}.migrate_from: the source is the sealed column itself; use \
                             in-place migration for a text column"
                        )));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

impl TableSpec {
    pub(crate) fn label_for<'a>(&'a self, c: &'a ColumnSpec) -> &'a str {
        c.table_label
            .as_deref()
            .unwrap_or_else(|| self.default_label())
    }
}

impl ColumnSpec {
    pub(crate) fn label(&self) -> &str {
        self.column_label.as_deref().unwrap_or(&self.column)
    }
}

//! The SQL for one configured table, and turning its rows into contexts and
//! sealed values.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::format::{Algorithm, FORMAT_V1, SealedValue, TEXT_PREFIX};
use crate::sql::dialect::Dialect;

use super::spec::{
    ColumnForm, ColumnSpec, ExtraSource, KeyType, Migration, RowSource, TableSpec, TenantSource,
};
use crate::sql::access::{Kind, Val, as_text, exact_text};
use crate::sql::ident::quote;

/// A key value of a table (the primary key), as read and bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    Int(i64),
    Text(String),
}

impl Key {
    pub(crate) fn to_val(&self) -> Val {
        match self {
            Self::Int(v) => Val::Int(*v),
            Self::Text(v) => Val::Text(v.clone()),
        }
    }

    /// The key as stored in the job tables and as the row id of contexts.
    pub(crate) fn to_text(&self) -> String {
        match self {
            Self::Int(v) => v.to_string(),
            Self::Text(v) => v.clone(),
        }
    }

    pub(crate) fn from_text(key_type: KeyType, text: &str) -> Option<Self> {
        match key_type {
            KeyType::Integer => text.parse().ok().map(Self::Int),
            KeyType::Text | KeyType::Uuid => Some(Self::Text(text.to_string())),
        }
    }

    fn from_val(val: &Val) -> Option<Self> {
        match val {
            Val::Int(v) => Some(Self::Int(*v)),
            Val::Text(v) => Some(Self::Text(v.clone())),
            _ => None,
        }
    }
}

/// One row as a job reads it, by name: the place of each value in the
/// `SELECT` list is known only to [`Table::new`], which writes the list, and
/// [`Table::rows`], which reads it.
#[derive(Debug)]
pub(crate) struct Row {
    /// The primary key (`None` if the database gave NULL).
    key: Option<Key>,
    /// The tenant id: the table's fixed one, or its column's (`None` if NULL).
    tenant: Option<String>,
    /// The other columns the recipes read, in the order of [`Table::aux`].
    aux: Vec<Val>,
    /// Each sealed column's stored value, in the order of the spec's columns.
    values: Vec<Val>,
}

impl Row {
    /// The row's primary key.
    pub(crate) fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// The row's tenant id.
    pub(crate) fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
}

/// One configured table, with its statements prepared.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) spec: TableSpec,
    pub(crate) dialect: Dialect,
    /// The quoted table name.
    pub(crate) name: String,
    key: String,
    tenant_col: Option<String>,
    /// Other columns the recipes read (row ids, extras, migration sources),
    /// quoted, in select order.
    aux: Vec<String>,
    /// The SELECT list, and how to read it.
    select: String,
    kinds: Vec<Kind>,
}

impl Table {
    pub(crate) fn new(spec: TableSpec, dialect: Dialect) -> Self {
        let q = |n: &str| quote(dialect, n);
        let name = q(&spec.table);
        let key = q(&spec.key);
        let tenant_col = match &spec.tenant {
            Some(TenantSource::Column(c)) => Some(q(c)),
            _ => None,
        };
        let mut aux: Vec<String> = Vec::new();
        let mut add = |c: &str| {
            let c = q(c);
            if !aux.contains(&c) {
                aux.push(c);
            }
        };
        for c in &spec.columns {
            if let RowSource::Column(r) = &c.row {
                add(r);
            }
            for (_, source) in &c.extras {
                if let ExtraSource::Column(col) = source {
                    add(col);
                }
            }
            if let Some(Migration::From(source)) = &c.migrate {
                add(source);
            }
        }
        let mut select = vec![key_as_read(dialect, spec.key_type, &key)];
        let mut kinds = vec![match spec.key_type {
            KeyType::Integer => Kind::Int,
            KeyType::Text | KeyType::Uuid => Kind::Text,
        }];
        select.push(match &tenant_col {
            Some(c) => as_text(dialect, c),
            None => "NULL".into(),
        });
        kinds.push(Kind::Text);
        for a in &aux {
            select.push(as_text(dialect, a));
            kinds.push(Kind::Text);
        }
        for c in &spec.columns {
            select.push(q(&c.column));
            kinds.push(match c.form {
                ColumnForm::Binary => Kind::Bytes,
                ColumnForm::Text => Kind::Text,
            });
        }
        Self {
            select: select.join(", "),
            kinds,
            name,
            key,
            tenant_col,
            aux,
            dialect,
            spec,
        }
    }

    pub(crate) fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// The placeholder for a key value (PostgreSQL's uuid needs a cast).
    fn key_param(&self) -> &'static str {
        match self.spec.key_type {
            KeyType::Uuid => "CAST(? AS uuid)",
            KeyType::Integer | KeyType::Text => "?",
        }
    }

    /// The rows of a statement that selects this table's `SELECT` list
    /// (`batch_sql`, `sample_sql`, `sealed_sample_sql`), read as
    /// [`Table::kinds`] says: key, tenant, the other columns the recipes
    /// read, then the sealed columns.
    pub(crate) fn rows(&self, fetched: Vec<Vec<Val>>) -> Vec<Row> {
        let fixed = self.fixed_tenant();
        fetched
            .into_iter()
            .map(|row| {
                let mut vals = row.into_iter();
                let key = vals.next().as_ref().and_then(Key::from_val);
                // The tenant's place is read in every case (NULL for a
                // fixed tenant), so that the columns after it keep theirs.
                let tenant = match (fixed, vals.next()) {
                    (Some(t), _) => Some(t.to_string()),
                    (None, Some(Val::Text(t))) => Some(t),
                    (None, _) => None,
                };
                let aux = vals.by_ref().take(self.aux.len()).collect();
                Row {
                    key,
                    tenant,
                    aux,
                    values: vals.collect(),
                }
            })
            .collect()
    }

    /// `WHERE` conditions for a key range `(after, upto]` and a tenant filter,
    /// with their binds.
    fn conditions(
        &self,
        after: Option<&Key>,
        upto: Option<&Key>,
        tenant: Option<&str>,
    ) -> (String, Vec<Val>) {
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        if let Some(after) = after {
            conds.push(format!("{} > {}", self.key, self.key_param()));
            binds.push(after.to_val());
        }
        if let Some(upto) = upto {
            conds.push(format!("{} <= {}", self.key, self.key_param()));
            binds.push(upto.to_val());
        }
        if let Some(tenant) = tenant {
            match &self.tenant_col {
                Some(c) => {
                    // The first test lets an index on the column serve; the
                    // second makes it exact whatever the column's collation
                    // says (a case- or accent-insensitive one calls `acme`
                    // and `ACME` equal: two tenants).
                    conds.push(format!(
                        "{c} = ? AND {} = {}",
                        exact_text(self.dialect, c),
                        exact_text(self.dialect, "?")
                    ));
                    binds.push(Val::Text(tenant.to_string()));
                    binds.push(Val::Text(tenant.to_string()));
                }
                None if self.fixed_tenant() == Some(tenant) => {}
                None => conds.push("1 = 0".into()),
            }
        }
        let sql = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        (sql, binds)
    }

    /// The next `limit` rows after `after`, up to and including `upto`.
    pub(crate) fn batch_sql(
        &self,
        after: Option<&Key>,
        upto: Option<&Key>,
        tenant: Option<&str>,
        limit: usize,
    ) -> (String, Vec<Val>) {
        let (cond, binds) = self.conditions(after, upto, tenant);
        (
            format!(
                "SELECT {} FROM {}{cond} ORDER BY {} LIMIT {limit}",
                self.select, self.name, self.key
            ),
            binds,
        )
    }

    /// `limit` rows chosen at random.
    pub(crate) fn sample_sql(&self, tenant: Option<&str>, limit: u64) -> (String, Vec<Val>) {
        let (cond, binds) = self.conditions(None, None, tenant);
        let random = match self.dialect {
            Dialect::MySql => "RAND()",
            Dialect::Postgres | Dialect::Sqlite => "random()",
        };
        (
            format!(
                "SELECT {} FROM {}{cond} ORDER BY {random} LIMIT {limit}",
                self.select, self.name
            ),
            binds,
        )
    }

    /// The first `limit` rows, in key order (the same ones on every run, read
    /// through the primary key's index), whose column `j` holds a value that
    /// looks sealed (any bytes for a binary column, text starting with
    /// `fs:` for a text column).
    pub(crate) fn sealed_sample_sql(
        &self,
        j: usize,
        tenant: Option<&str>,
        limit: u64,
    ) -> (String, Vec<Val>) {
        let (cond, binds) = self.conditions(None, None, tenant);
        let Some(c) = self.spec.columns.get(j) else {
            return (self.probe_sql(), Vec::new());
        };
        let col = quote(self.dialect, &c.column);
        let sealed = match c.form {
            ColumnForm::Binary => format!("{col} IS NOT NULL"),
            ColumnForm::Text => format!("{col} LIKE '{TEXT_PREFIX}%'"),
        };
        let cond = if cond.is_empty() {
            format!(" WHERE {sealed}")
        } else {
            format!("{cond} AND {sealed}")
        };
        (
            format!(
                "SELECT {} FROM {}{cond} ORDER BY {} LIMIT {limit}",
                self.select, self.name, self.key
            ),
            binds,
        )
    }

    /// The key `n` rows after `after` (the next range boundary), if there is one.
    pub(crate) fn boundary_sql(
        &self,
        after: Option<&Key>,
        tenant: Option<&str>,
        n: u64,
    ) -> (String, Vec<Val>) {
        let (cond, binds) = self.conditions(after, None, tenant);
        let key = key_as_read(self.dialect, self.spec.key_type, &self.key);
        (
            format!(
                "SELECT {key} FROM {}{cond} ORDER BY {} LIMIT 1 OFFSET {}",
                self.name,
                self.key,
                n.saturating_sub(1)
            ),
            binds,
        )
    }

    /// The row's tenant id as an expression to group by and compare,
    /// byte for byte whatever the column's collation, and how to read it
    /// (see [`tenant_of_group`]).
    pub(crate) fn tenant_group(&self) -> String {
        match &self.tenant_col {
            Some(t) => exact_text(self.dialect, t),
            None => "NULL".into(),
        }
    }

    /// How to read [`Table::tenant_group`].
    pub(crate) fn tenant_group_kind(&self) -> Kind {
        match self.dialect {
            Dialect::MySql => Kind::Bytes,
            Dialect::Postgres | Dialect::Sqlite => Kind::Text,
        }
    }

    pub(crate) fn key_kind(&self) -> Kind {
        self.kinds.first().copied().unwrap_or(Kind::Text)
    }

    pub(crate) fn count_sql(&self, tenant: Option<&str>) -> (String, Vec<Val>) {
        let (cond, binds) = self.conditions(None, None, tenant);
        (format!("SELECT COUNT(*) FROM {}{cond}", self.name), binds)
    }

    /// Reads nothing, but fails if a configured table or column does not exist.
    pub(crate) fn probe_sql(&self) -> String {
        format!("SELECT {} FROM {} WHERE 1 = 0", self.select, self.name)
    }

    pub(crate) fn fixed_tenant(&self) -> Option<&str> {
        match &self.spec.tenant {
            Some(TenantSource::Fixed(t)) => Some(t),
            _ => None,
        }
    }

    fn aux_value<'a>(&self, row: &'a Row, column: &str) -> Option<&'a Val> {
        let quoted = quote(self.dialect, column);
        let i = self.aux.iter().position(|a| *a == quoted)?;
        row.aux.get(i)
    }

    /// What sealed column `j` of `row` holds.
    pub(crate) fn stored(&self, row: &Row, j: usize) -> Stored {
        match self.spec.columns.get(j) {
            Some(c) => parse_stored(c.form, row.values.get(j)),
            None => Stored::Malformed(Error::config("no such column")),
        }
    }

    /// The plaintext source of column `j`'s expand/contract migration.
    pub(crate) fn migration_source<'a>(&self, row: &'a Row, j: usize) -> Option<&'a Val> {
        match &self.spec.columns.get(j)?.migrate {
            Some(Migration::From(source)) => self.aux_value(row, source),
            _ => None,
        }
    }

    /// The context column `j`'s value in `row` was sealed with.
    pub(crate) fn context(&self, row: &Row, j: usize) -> Result<Context> {
        let c = self
            .spec
            .columns
            .get(j)
            .ok_or_else(|| Error::config("no such column"))?;
        let tenant = row
            .tenant()
            .ok_or_else(|| Error::invalid_context("the row's tenant column is NULL"))?;
        let mut b = Context::builder(tenant, self.spec.label_for(c), c.label());
        match &c.row {
            RowSource::Key => {
                let key = row
                    .key()
                    .ok_or_else(|| Error::invalid_context("the row's key is NULL"))?;
                b = b.row(key.to_text());
            }
            RowSource::Column(col) => match self.aux_value(row, col) {
                Some(Val::Text(v)) => b = b.row(v),
                _ => {
                    return Err(Error::invalid_context(format!(
                        "the row id column `{col}` is NULL"
                    )));
                }
            },
            RowSource::None => {}
        }
        for (k, source) in &c.extras {
            let value = match source {
                ExtraSource::Value(v) => v.as_str(),
                ExtraSource::Column(col) => match self.aux_value(row, col) {
                    Some(Val::Text(v)) => v.as_str(),
                    _ => {
                        return Err(Error::invalid_context(format!(
                            "the extra `{k}` comes from column `{col}`, which is NULL"
                        )));
                    }
                },
            };
            b = b.extra(k.clone(), value);
        }
        b.build()
    }

    /// The compare-and-swap that writes new values of column `j`:
    /// `(key, expected, new)` triples, one statement for all of them. A row is
    /// written only if its column still holds `expected` (or, for a migration
    /// from a source column, if the column is still NULL and the source still
    /// holds `expected`). On PostgreSQL and SQLite the statement returns the
    /// keys it wrote.
    pub(crate) fn cas_sql(&self, j: usize, n: usize, from_source: bool) -> (String, bool) {
        let Some(c) = self.spec.columns.get(j) else {
            return (String::new(), false);
        };
        let col = quote(self.dialect, &c.column);
        // The blind index columns, written with the value: `(?, ?, ?, i0, …)`.
        let index_cols: Vec<String> = c
            .indexes
            .iter()
            .map(|(name, _)| quote(self.dialect, name))
            .collect();
        let width = 3 + index_cols.len();
        let source = match (&c.migrate, from_source) {
            (Some(Migration::From(s)), true) => Some(quote(self.dialect, s)),
            _ => None,
        };
        let key_cmp = |lhs: &str, rhs: &str| match self.spec.key_type {
            KeyType::Uuid => format!("{lhs} = CAST({rhs} AS uuid)"),
            _ => format!("{lhs} = {rhs}"),
        };
        // SQLite's RETURNING names the target table's columns unqualified.
        let returning_key = |t: &str| {
            let key = match self.dialect {
                Dialect::Sqlite => self.key.clone(),
                _ => format!("{t}.{}", self.key),
            };
            key_as_read(self.dialect, self.spec.key_type, &key)
        };
        match self.dialect {
            Dialect::Postgres | Dialect::Sqlite => {
                let row = format!("({})", vec!["?"; width].join(", "));
                let rows = vec![row.as_str(); n].join(", ");
                let pg = self.dialect == Dialect::Postgres;
                let (vk, vo, vn) = if pg {
                    ("v.k", "v.o", "v.n")
                } else {
                    ("v.column1", "v.column2", "v.column3")
                };
                let index_names: Vec<String> = (0..index_cols.len())
                    .map(|i| {
                        if pg {
                            format!("v.i{i}")
                        } else {
                            format!("v.column{}", i + 4)
                        }
                    })
                    .collect();
                let alias = if pg {
                    let names: Vec<String> = ["k", "o", "n"]
                        .into_iter()
                        .map(String::from)
                        .chain((0..index_cols.len()).map(|i| format!("i{i}")))
                        .collect();
                    format!("v({})", names.join(", "))
                } else {
                    "v".to_string()
                };
                let set_indexes: String = index_cols
                    .iter()
                    .zip(&index_names)
                    .map(|(col, v)| format!(", {col} = {v}"))
                    .collect();
                let guard = match &source {
                    Some(s) => format!("t.{col} IS NULL AND t.{s} = {vo}"),
                    None => format!("t.{col} = {vo}"),
                };
                (
                    format!(
                        "UPDATE {} AS t SET {col} = {vn}{set_indexes} FROM (VALUES {rows}) AS {alias} \
                         WHERE {} AND {guard} RETURNING {}",
                        self.name,
                        key_cmp(&format!("t.{}", self.key), vk),
                        returning_key("t"),
                    ),
                    true,
                )
            }
            Dialect::MySql => {
                let first_indexes: String = (0..index_cols.len())
                    .map(|i| format!(", ? AS i{i}"))
                    .collect();
                let first = format!("SELECT ? AS k, ? AS o, ? AS n{first_indexes}");
                let mut rows = vec![first];
                rows.extend(std::iter::repeat_n(
                    format!("SELECT {}", vec!["?"; width].join(", ")),
                    n.saturating_sub(1),
                ));
                let set_indexes: String = index_cols
                    .iter()
                    .enumerate()
                    .map(|(i, col)| format!(", t.{col} = v.i{i}"))
                    .collect();
                let guard = match &source {
                    Some(s) => {
                        format!("t.{col} IS NULL AND CAST(t.{s} AS BINARY) = CAST(v.o AS BINARY)")
                    }
                    None => format!("CAST(t.{col} AS BINARY) = CAST(v.o AS BINARY)"),
                };
                (
                    format!(
                        "UPDATE {} AS t JOIN ({}) AS v ON t.{} = v.k AND {guard} SET t.{col} = v.n{set_indexes}",
                        self.name,
                        rows.join(" UNION ALL "),
                        self.key
                    ),
                    false,
                )
            }
        }
    }

    /// Per tenant, the first bytes of every value of column `j` (enough to
    /// read its format version, algorithm and key version), with counts.
    pub(crate) fn header_counts_sql(&self, j: usize, tenant: Option<&str>) -> (String, Vec<Val>) {
        let Some(c) = self.spec.columns.get(j) else {
            return (String::new(), Vec::new());
        };
        let prefix = self.prefix_expr(c);
        let tenant_expr = self.tenant_group();
        let (cond, binds) = self.conditions(None, None, tenant);
        (
            format!(
                "SELECT {tenant_expr}, {prefix}, COUNT(*) FROM {}{cond} GROUP BY {tenant_expr}, {prefix}",
                self.name
            ),
            binds,
        )
    }

    /// How many values of column `j` of `tenant` (exactly) are sealed under
    /// `version`, by either algorithm: the re-check just before `retire`
    /// destroys a version.
    pub(crate) fn version_count_sql(
        &self,
        j: usize,
        tenant: &str,
        version: u32,
    ) -> (String, Vec<Val>) {
        let Some(c) = self.spec.columns.get(j) else {
            return ("SELECT 0".into(), Vec::new());
        };
        let prefix = self.prefix_expr(c);
        let (cond, mut binds) = self.conditions(None, None, Some(tenant));
        let headers: Vec<Val> = [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305]
            .into_iter()
            .map(|a| {
                let mut header = vec![FORMAT_V1, a.id()];
                header.extend_from_slice(&version.to_be_bytes());
                match c.form {
                    ColumnForm::Binary => Val::Bytes(header),
                    ColumnForm::Text => {
                        let mut text = TEXT_PREFIX.as_bytes().to_vec();
                        text.extend_from_slice(
                            base64::Engine::encode(
                                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                                &header,
                            )
                            .as_bytes(),
                        );
                        Val::Bytes(text)
                    }
                }
            })
            .collect();
        let placeholders = vec!["?"; headers.len()].join(", ");
        binds.extend(headers);
        let cond = if cond.is_empty() {
            format!(" WHERE {prefix} IN ({placeholders})")
        } else {
            format!("{cond} AND {prefix} IN ({placeholders})")
        };
        (format!("SELECT COUNT(*) FROM {}{cond}", self.name), binds)
    }

    /// The first bytes of column `c`'s values, as bytes: enough to read a
    /// sealed value's format version, algorithm and key version (the text
    /// form: `fs:` and 8 base64url characters, 6 bytes).
    fn prefix_expr(&self, c: &ColumnSpec) -> String {
        let col = quote(self.dialect, &c.column);
        match (self.dialect, c.form) {
            (Dialect::Postgres, ColumnForm::Binary) => format!("substring({col} from 1 for 6)"),
            (Dialect::Postgres, ColumnForm::Text) => {
                format!("convert_to(substring({col} from 1 for 11), 'UTF8')")
            }
            (Dialect::MySql, ColumnForm::Binary) => format!("SUBSTRING({col}, 1, 6)"),
            (Dialect::MySql, ColumnForm::Text) => {
                format!("CAST(SUBSTRING({col}, 1, 11) AS BINARY)")
            }
            (Dialect::Sqlite, ColumnForm::Binary) => format!("CAST(substr({col}, 1, 6) AS BLOB)"),
            (Dialect::Sqlite, ColumnForm::Text) => format!("CAST(substr({col}, 1, 11) AS BLOB)"),
        }
    }

    /// Per tenant, rows of column `j` that are NULL while its migration
    /// source holds plaintext.
    pub(crate) fn pending_source_sql(
        &self,
        j: usize,
        tenant: Option<&str>,
    ) -> Option<(String, Vec<Val>)> {
        let c = self.spec.columns.get(j)?;
        let Some(Migration::From(source)) = &c.migrate else {
            return None;
        };
        let col = quote(self.dialect, &c.column);
        let source = quote(self.dialect, source);
        let tenant_expr = self.tenant_group();
        let (cond, binds) = self.conditions(None, None, tenant);
        let extra = format!("{col} IS NULL AND {source} IS NOT NULL");
        let cond = if cond.is_empty() {
            format!(" WHERE {extra}")
        } else {
            format!("{cond} AND {extra}")
        };
        Some((
            format!(
                "SELECT {tenant_expr}, COUNT(*) FROM {}{cond} GROUP BY {tenant_expr}",
                self.name
            ),
            binds,
        ))
    }
}

/// The key column as the jobs read it: any integer width as a 64-bit
/// integer, any text or uuid column as text.
fn key_as_read(dialect: Dialect, key_type: KeyType, key: &str) -> String {
    match (key_type, dialect) {
        (KeyType::Integer, Dialect::Postgres) => format!("CAST({key} AS BIGINT)"),
        (KeyType::Integer, Dialect::MySql) => format!("CAST({key} AS SIGNED)"),
        (KeyType::Integer, Dialect::Sqlite) => key.to_string(),
        (KeyType::Text | KeyType::Uuid, _) => as_text(dialect, key),
    }
}

/// What a stored value's first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A sealed value under this key version.
    Sealed(u32),
    /// Text that is not a sealed value: plaintext from before fieldseal.
    Legacy,
    /// Bytes that are not a sealed value.
    Malformed,
}

/// Reads the prefix [`Table::header_counts_sql`] returns.
pub(crate) fn parse_header_prefix(form: ColumnForm, prefix: &[u8]) -> Header {
    let bytes = match form {
        ColumnForm::Binary => prefix.to_vec(),
        ColumnForm::Text => {
            let Some(body) = prefix.strip_prefix(b"fs:") else {
                return Header::Legacy;
            };
            match base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body) {
                Ok(b) => b,
                Err(_) => return Header::Malformed,
            }
        }
    };
    match bytes.as_slice() {
        [0x01, 0x01 | 0x02, a, b, c, d] => {
            let v = u32::from_be_bytes([*a, *b, *c, *d]);
            if v == 0 {
                Header::Malformed
            } else {
                Header::Sealed(v)
            }
        }
        _ => Header::Malformed,
    }
}

/// A stored value of a sealed column, parsed.
pub(crate) enum Stored {
    Null,
    Sealed(SealedValue),
    /// Text without the `fs:` prefix (plaintext, in a column being migrated
    /// in place).
    Legacy(String),
    Malformed(Error),
}

fn parse_stored(form: ColumnForm, val: Option<&Val>) -> Stored {
    match (form, val) {
        (_, None | Some(Val::Null)) => Stored::Null,
        (ColumnForm::Binary, Some(Val::Bytes(b))) => match SealedValue::from_bytes(b.as_slice()) {
            Ok(v) => Stored::Sealed(v),
            Err(e) => Stored::Malformed(e),
        },
        (ColumnForm::Text, Some(Val::Text(t))) => {
            if !t.starts_with(crate::format::TEXT_PREFIX) {
                return Stored::Legacy(t.clone());
            }
            match SealedValue::from_text(t) {
                Ok(v) => Stored::Sealed(v),
                Err(e) => Stored::Malformed(e),
            }
        }
        _ => Stored::Malformed(Error::malformed(
            "the column holds a value of an unexpected type",
        )),
    }
}

impl ColumnSpec {
    /// The stored form of a sealed value for this column.
    pub(crate) fn encode(&self, value: &SealedValue) -> Val {
        match self.form {
            ColumnForm::Binary => Val::Bytes(value.as_bytes().to_vec()),
            ColumnForm::Text => Val::Text(value.to_text()),
        }
    }
}

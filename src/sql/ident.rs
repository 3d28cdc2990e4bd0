//! SQL identifiers: the names fieldseal gives its own tables (a strict
//! subset, so they never need quoting), the application's names it is
//! configured with (anything the database takes), and quoting those.

use crate::error::{Error, Result};
use crate::sql::dialect::Dialect;

/// Checks a name fieldseal gives its own tables or schema: 1 to `max`
/// lower-case ASCII letters, digits and `_`, starting with a letter.
pub(crate) fn check_own_name(what: &str, value: &str, max: usize) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{what} {value:?} is invalid: use 1 to {max} lower-case ASCII letters, digits and \
             `_`, starting with a letter"
        )))
    }
}

/// Checks a name of the application's (a table, `schema.table`, or a
/// column, as `dotted` says) given at `path.what` of the configuration:
/// non-empty parts, no NUL. Quoted with [`quote`] wherever it is used.
pub(crate) fn check_app_name(path: &str, what: &str, name: &str, dotted: bool) -> Result<()> {
    let bad = name.is_empty()
        || name.contains('\0')
        || name.split('.').any(str::is_empty)
        || (!dotted && name.contains('.'))
        || name.split('.').count() > 2;
    if bad {
        return Err(Error::config(format!(
            "{path}.{what}: {name:?} is not a valid {}",
            if dotted {
                "table name (`table` or `schema.table`)"
            } else {
                "column name"
            }
        )));
    }
    Ok(())
}

/// Quotes an identifier, or a `schema.table` pair, for `dialect`: double
/// quotes (PostgreSQL) or backticks (MySQL, SQLite), with the quote character
/// doubled inside. Names are therefore exact and case-sensitive. (SQLite
/// takes a double-quoted name that matches no column for a string literal;
/// a backquoted one is always a name, so a misspelt column is an error.)
pub(crate) fn quote(dialect: Dialect, name: &str) -> String {
    let q = match dialect {
        Dialect::MySql | Dialect::Sqlite => '`',
        Dialect::Postgres => '"',
    };
    name.split('.')
        .map(|part| {
            let mut out = String::with_capacity(part.len() + 2);
            out.push(q);
            for c in part.chars() {
                if c == q {
                    out.push(q);
                }
                out.push(c);
            }
            out.push(q);
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

//! The context a value is sealed in, and its canonical encoding as associated data.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// Longest tenant id, table or column name, or extra key, in bytes.
const MAX_NAME_LEN: usize = 255;
/// Longest row id or extra value, in bytes.
const MAX_VALUE_LEN: usize = 1024;
/// Most extra pairs in one context.
const MAX_EXTRAS: usize = 16;

/// Where a value lives: tenant, table, column, and ideally the row's stable id,
/// plus optional extra pairs.
///
/// The context is bound to the sealed value as AEAD associated data and is not
/// stored in it: the same context must be given to open the value, so a value
/// copied to another tenant, table, column or row does not open.
///
/// ```
/// # fn main() -> Result<(), fieldseal::Error> {
/// use fieldseal::Context;
///
/// let ctx = Context::builder("acme", "integrations", "refresh_token")
///     .row(42)
///     .extra("provider", "github")
///     .build()?;
/// assert_eq!(ctx.tenant(), "acme");
/// # Ok(()) }
/// ```
///
/// # Security
///
/// Give the row's *stable* id (a primary key that never changes), so a value
/// moved to another row fails to open. Without a row id, a value can be copied
/// between rows of the same tenant, table and column and still open. Where
/// the database assigns ids (auto-increment), generate them in the
/// application (UUIDs), or insert the row first and seal in the same
/// transaction.
///
/// Table and column are stable *labels*, compared byte for byte, not SQL
/// identifiers: `"integrations"` and `"public.integrations"` are different
/// contexts. Renaming a column in SQL must not rename its label, or every
/// value in it stops opening.
///
/// Context values are not secret: they appear in `Debug` output and error
/// messages.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Context {
    tenant: Box<str>,
    table: Box<str>,
    column: Box<str>,
    row: Option<Box<str>>,
    extras: BTreeMap<Box<str>, Box<str>>,
    /// The canonical associated-data encoding, computed once.
    encoded: Box<[u8]>,
}

impl Context {
    /// A context for a value with no row id. Prefer [`Context::builder`] with
    /// [`ContextBuilder::row`] where the row has a stable id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] if the tenant, table or column is empty or longer
    /// than 255 bytes, or the tenant id breaks the tenant id rules (see
    /// [`ContextBuilder::build`]).
    pub fn new(tenant: &str, table: &str, column: &str) -> Result<Self> {
        Self::builder(tenant, table, column).build()
    }

    /// Starts a context for `tenant`, `table` and `column`; add a row id and
    /// extras, then [`build`](ContextBuilder::build).
    pub fn builder(
        tenant: impl Into<String>,
        table: impl Into<String>,
        column: impl Into<String>,
    ) -> ContextBuilder {
        ContextBuilder {
            tenant: tenant.into(),
            table: table.into(),
            column: column.into(),
            row: None,
            extras: Vec::new(),
        }
    }

    /// The tenant id.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The column name.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The row id, if given.
    pub fn row(&self) -> Option<&str> {
        self.row.as_deref()
    }

    /// The extra pairs, sorted by key.
    pub fn extras(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extras.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The canonical encoding that is bound to sealed values as AEAD associated
    /// data (FORMAT.md §"Associated data"). Two different contexts never have
    /// the same encoding.
    pub fn associated_data(&self) -> &[u8] {
        &self.encoded
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Context");
        d.field("tenant", &self.tenant)
            .field("table", &self.table)
            .field("column", &self.column);
        if let Some(row) = &self.row {
            d.field("row", row);
        }
        if !self.extras.is_empty() {
            d.field("extras", &self.extras);
        }
        d.finish()
    }
}

/// Builds a [`Context`]; validation happens once, in [`ContextBuilder::build`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ContextBuilder {
    tenant: String,
    table: String,
    column: String,
    row: Option<String>,
    extras: Vec<(String, String)>,
}

impl ContextBuilder {
    /// Binds the row's stable id (a primary key, a UUID). Integers and strings
    /// with the same decimal text are the same row id.
    pub fn row(mut self, id: impl fmt::Display) -> Self {
        self.row = Some(id.to_string());
        self
    }

    /// Binds an extra pair (for example `("provider", "github")`). Keys must be
    /// unique; their order does not matter.
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extras.push((key.into(), value.into()));
        self
    }

    /// Validates and encodes the context.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] if the tenant, table, column or an extra key is
    /// empty or longer than 255 bytes, the row id is empty or longer than 1024
    /// bytes, an extra value is longer than 1024 bytes, an extra key repeats,
    /// there are more than 16 extras, or the tenant id breaks the tenant id
    /// rules: it must be in Unicode normalization form C, with no control (Cc),
    /// invisible format (Cf, such as U+200B) or unassigned (Cn) code points, and
    /// no leading or trailing whitespace (FORMAT.md §"Context rules").
    ///
    /// Only the tenant id is checked this way, because only it selects a key:
    /// table, column, row and extras are bound byte for byte as given, with no
    /// Unicode normalization, so a label in another form fails to open rather
    /// than opening something else.
    pub fn build(self) -> Result<Context> {
        let (tenant, table, column, extras, row) = self.checked_parts()?;
        if let Some(row) = &row {
            check_row(row)?;
        }
        let encoded = encode(&tenant, &table, &column, row.as_deref(), &extras);
        Ok(Context {
            tenant,
            table,
            column,
            row: row.map(String::into_boxed_str),
            extras,
            encoded,
        })
    }

    /// Validates and encodes everything but the row id, which each use of the
    /// template gives: see [`ContextTemplate`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] if a row id was set (the template leaves it
    /// open), and for the reasons [`ContextBuilder::build`] gives.
    pub fn template(self) -> Result<ContextTemplate> {
        if self.row.is_some() {
            return Err(Error::invalid_context(
                "a template leaves the row id open: give it with each row, not to the builder",
            ));
        }
        let (tenant, table, column, extras, _) = self.checked_parts()?;
        let mut head = encode_head(&tenant, &table, &column);
        head.push(1);
        let tail = encode_tail(&extras);
        Ok(ContextTemplate {
            tenant,
            table,
            column,
            extras,
            head: head.into_boxed_slice(),
            tail: tail.into_boxed_slice(),
        })
    }

    /// Validates tenant, table, column and extras (not the row id), and
    /// hands the parts over.
    #[allow(clippy::type_complexity)]
    fn checked_parts(
        self,
    ) -> Result<(
        Box<str>,
        Box<str>,
        Box<str>,
        BTreeMap<Box<str>, Box<str>>,
        Option<String>,
    )> {
        check_tenant(&self.tenant)?;
        check_name("table", &self.table)?;
        check_name("column", &self.column)?;
        if self.extras.len() > MAX_EXTRAS {
            return Err(Error::invalid_context(format!(
                "{} extra pairs; at most {MAX_EXTRAS} are allowed",
                self.extras.len()
            )));
        }
        let mut extras = BTreeMap::new();
        for (key, value) in self.extras {
            check_name("extra key", &key)?;
            check_len("extra value", &value, MAX_VALUE_LEN)?;
            if extras.contains_key(key.as_str()) {
                return Err(Error::invalid_context(format!(
                    "extra key `{key}` is given twice"
                )));
            }
            extras.insert(key.into_boxed_str(), value.into_boxed_str());
        }
        Ok((
            self.tenant.into_boxed_str(),
            self.table.into_boxed_str(),
            self.column.into_boxed_str(),
            extras,
            self.row,
        ))
    }
}

/// Tenant ids are identifiers (FORMAT.md §"Context rules"): besides the name
/// rules, Unicode normalization form C, no control (Cc), format (Cf) or
/// unassigned (Cn) code points, and no leading or trailing whitespace.
///
/// A tenant id selects a key, so two ids that look the same must not silently
/// name two tenants: NFD input, an invisible U+200B or a trailing space (which
/// MySQL's collations ignore) is refused with a message, never normalised into
/// some other tenant. Refusing unassigned code points keeps the verdict stable
/// when Unicode adds characters: an id accepted today stays valid and in NFC.
pub(crate) fn check_tenant(tenant: &str) -> Result<()> {
    check_existing_tenant(tenant)?;
    // Fast path, same answer: ASCII holds no Cf or Cn code point, its Cc ones
    // were refused just above, and ASCII text is always in NFC.
    if tenant.is_ascii() {
        return Ok(());
    }
    check_tenant_unicode(tenant)
}

/// The rules for a tenant that is being created (explicitly, on first use, or
/// recreated): [`check_tenant`], and no invisible code point (FORMAT.md
/// §"Context rules", rule 4). Opening and sealing for a tenant that exists
/// check only [`check_tenant`], so a tenant created before rule 4 keeps
/// working.
pub(crate) fn check_new_tenant(tenant: &str) -> Result<()> {
    check_tenant(tenant)?;
    for c in tenant.chars() {
        let cp = u32::from(c);
        if DEFAULT_IGNORABLE
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&cp))
        {
            return Err(Error::invalid_context(format!(
                "tenant id contains U+{cp:04X}, a default-ignorable code point (invisible: a \
                 variation selector, a joiner or a filler), which would make two tenant ids \
                 look the same"
            )));
        }
        if INVISIBLE_FILLERS.contains(&cp) {
            return Err(Error::invalid_context(format!(
                "tenant id contains U+{cp:04X}, which renders as blank space, so two tenant \
                 ids would look the same"
            )));
        }
    }
    Ok(())
}

/// Code points with the Unicode `Default_Ignorable_Code_Point` property
/// (DerivedCoreProperties.txt; the list has not changed since Unicode 7.0),
/// inclusive ranges. Renderers show none of them.
const DEFAULT_IGNORABLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

/// Code points that render as blank space without being `White_Space` or
/// default-ignorable: U+2800 BRAILLE PATTERN BLANK.
const INVISIBLE_FILLERS: &[u32] = &[0x2800];

/// The Unicode part of [`check_tenant`], for any text.
fn check_tenant_unicode(tenant: &str) -> Result<()> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

    for c in tenant.chars() {
        let why = match c.general_category() {
            GeneralCategory::Control => "a control character (Unicode category Cc)",
            GeneralCategory::Format => {
                "an invisible format character (Unicode category Cf), which would make two \
                 tenant ids look the same"
            }
            GeneralCategory::Unassigned => {
                "a code point that is unassigned in the Unicode version this build knows \
                 (Unicode category Cn)"
            }
            _ => continue,
        };
        return Err(Error::invalid_context(format!(
            "tenant id contains U+{:04X}, {why}",
            u32::from(c)
        )));
    }
    if !unicode_normalization::is_nfc(tenant) {
        return Err(Error::invalid_context(
            "tenant id is not in Unicode normalization form C (NFC): normalize it to NFC \
             before use, since the same name in another form would be another tenant",
        ));
    }
    Ok(())
}

/// The rules a tenant id had to meet before the Unicode rules above were
/// added: not empty, at most 255 bytes, no control character and no leading
/// or trailing whitespace. Administration of a tenant that already exists
/// (describe, rotate, disable, destroy, shred) checks only these, so a store
/// that holds an id from before the Unicode rules can still be listed and
/// erased; sealing and opening apply [`check_tenant`].
pub(crate) fn check_existing_tenant(tenant: &str) -> Result<()> {
    check_name("tenant id", tenant)?;
    if let Some(c) = tenant.chars().find(|c| c.is_control()) {
        return Err(Error::invalid_context(format!(
            "tenant id contains U+{:04X}, a control character (Unicode category Cc)",
            u32::from(c)
        )));
    }
    if tenant.trim() != tenant {
        return Err(Error::invalid_context(
            "tenant id starts or ends with whitespace",
        ));
    }
    Ok(())
}

fn check_name(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_context(format!("{what} is empty")));
    }
    check_len(what, value, MAX_NAME_LEN)
}

fn check_len(what: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::invalid_context(format!(
            "{what} is {} bytes; at most {max} are allowed",
            value.len()
        )));
    }
    Ok(())
}

/// The canonical encoding: every string is length-prefixed (u32 big-endian), in
/// a fixed order, with a presence byte for the row id and a count for the extras
/// (sorted by key). Every field's extent is determined by what precedes it, so
/// two different contexts never encode to the same bytes.
///
/// It is `head || row part || tail`: [`ContextTemplate`] keeps the head and
/// the tail and writes only the row part per value.
fn encode(
    tenant: &str,
    table: &str,
    column: &str,
    row: Option<&str>,
    extras: &BTreeMap<Box<str>, Box<str>>,
) -> Box<[u8]> {
    let head = encode_head(tenant, table, column);
    let tail = encode_tail(extras);
    let row_len = row.map_or(1, |row| 1 + 4 + row.len());
    let mut out = Vec::with_capacity(head.len() + row_len + tail.len());
    out.extend_from_slice(&head);
    match row {
        Some(row) => {
            out.push(1);
            put(&mut out, row);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&tail);
    out.into_boxed_slice()
}

/// Tenant, table and column, length-prefixed.
fn encode_head(tenant: &str, table: &str, column: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + tenant.len() + table.len() + column.len());
    put(&mut out, tenant);
    put(&mut out, table);
    put(&mut out, column);
    out
}

/// The extras' count and the pairs, sorted by key.
fn encode_tail(extras: &BTreeMap<Box<str>, Box<str>>) -> Vec<u8> {
    let len = 1 + extras
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    // At most MAX_EXTRAS (16), checked by the builder.
    out.push(u8::try_from(extras.len()).unwrap_or(u8::MAX));
    for (k, v) in extras {
        put(&mut out, k);
        put(&mut out, v);
    }
    out
}

fn put(out: &mut Vec<u8>, s: &str) {
    // Lengths are bounded by the builder's checks (<= 1024), far below u32::MAX.
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A context with everything fixed but the row id, for sealing and opening
/// many rows of one column: validated and encoded once, so that the context
/// of each row costs no heap allocation and no validation beyond the row id.
///
/// Build one with [`ContextBuilder::template`] and hand it with each row's id
/// to [`TenantSealer::open_row`](crate::TenantSealer::open_row),
/// [`open_rows`](crate::TenantSealer::open_rows) and their sealing
/// counterparts. The associated data of a row is byte for byte that of
/// `Context::builder(..)` with the same parts and `.row(id)`, so values sealed
/// either way open either way.
///
/// ```
/// # fn main() -> Result<(), fieldseal::Error> {
/// use fieldseal::Context;
///
/// let tokens = Context::builder("acme", "integrations", "refresh_token").template()?;
/// let row_7 = Context::builder("acme", "integrations", "refresh_token").row(7).build()?;
/// assert_eq!(tokens.context(7)?, row_7);
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContextTemplate {
    tenant: Box<str>,
    table: Box<str>,
    column: Box<str>,
    extras: BTreeMap<Box<str>, Box<str>>,
    /// The encoding up to the row id: tenant, table and column, then the row
    /// id's presence byte (always 1).
    head: Box<[u8]>,
    /// The encoding after the row id: the extras.
    tail: Box<[u8]>,
}

impl ContextTemplate {
    /// The tenant id.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The column name.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The extra pairs, sorted by key.
    pub fn extras(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extras.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The full [`Context`] of row `row`, for the calls that take one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContext`] if the row id is empty or longer than 1024
    /// bytes.
    pub fn context(&self, row: impl fmt::Display) -> Result<Context> {
        let mut text = String::new();
        fmt::write(&mut text, format_args!("{row}")).map_err(|_| display_failed())?;
        let row = text;
        check_row(&row)?;
        let encoded = self.with_associated_data(&row, |aad| Box::<[u8]>::from(aad))?;
        Ok(Context {
            tenant: self.tenant.clone(),
            table: self.table.clone(),
            column: self.column.clone(),
            row: Some(row.into_boxed_str()),
            extras: self.extras.clone(),
            encoded,
        })
    }

    /// Calls `f` with the associated data of row `row`, assembled on the stack
    /// when it fits (as it does for names and row ids of everyday length).
    pub(crate) fn with_associated_data<T>(
        &self,
        row: impl fmt::Display,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        let mut aad = AadBuf::new();
        aad.extend(&self.head);
        // The row id's length prefix, filled in once the id is written.
        let at = aad.len();
        aad.extend(&[0; 4]);
        let written = fmt::write(&mut aad, format_args!("{row}"));
        if aad.overflowed {
            return Err(Error::invalid_context(format!(
                "row id is longer than {MAX_VALUE_LEN} bytes"
            )));
        }
        if written.is_err() {
            return Err(display_failed());
        }
        let row_len = aad.len() - at - 4;
        if row_len == 0 {
            return Err(Error::invalid_context(EMPTY_ROW));
        }
        // At most MAX_VALUE_LEN (1024), checked by the writer.
        aad.set_u32(at, u32::try_from(row_len).unwrap_or(u32::MAX));
        aad.extend(&self.tail);
        Ok(f(aad.as_slice()))
    }
}

impl fmt::Debug for ContextTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ContextTemplate");
        d.field("tenant", &self.tenant)
            .field("table", &self.table)
            .field("column", &self.column);
        if !self.extras.is_empty() {
            d.field("extras", &self.extras);
        }
        d.finish()
    }
}

fn display_failed() -> Error {
    Error::invalid_context("row id could not be formatted (its Display implementation failed)")
}

/// Bytes of associated data kept on the stack; longer contexts spill to the heap.
const INLINE_AAD: usize = 256;

/// A byte buffer on the stack that moves to the heap past [`INLINE_AAD`], and
/// a [`fmt::Write`] sink that refuses a row id longer than the rules allow.
struct AadBuf {
    inline: [u8; INLINE_AAD],
    len: usize,
    heap: Vec<u8>,
    /// Where the row id starts, while it is being written.
    row_start: Option<usize>,
    overflowed: bool,
}

impl AadBuf {
    fn new() -> Self {
        Self {
            inline: [0; INLINE_AAD],
            len: 0,
            heap: Vec::new(),
            row_start: None,
            overflowed: false,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn extend(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if self.heap.is_empty() {
            if let Some(dst) = self.inline.get_mut(self.len..end) {
                dst.copy_from_slice(bytes);
                self.len = end;
                return;
            }
            let mut heap = Vec::with_capacity(end.max(2 * INLINE_AAD));
            heap.extend_from_slice(self.inline.get(..self.len).unwrap_or_default());
            self.heap = heap;
        }
        self.heap.extend_from_slice(bytes);
        self.len = end;
    }

    fn set_u32(&mut self, at: usize, value: u32) {
        let dst = if self.heap.is_empty() {
            self.inline.get_mut(at..at + 4)
        } else {
            self.heap.get_mut(at..at + 4)
        };
        if let Some(dst) = dst {
            dst.copy_from_slice(&value.to_be_bytes());
        }
    }

    fn as_slice(&self) -> &[u8] {
        if self.heap.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.heap
        }
    }
}

impl fmt::Write for AadBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Once refused, always refused: a Display that ignores the error and
        // writes on must not bind a shorter id than it meant.
        if self.overflowed {
            return Err(fmt::Error);
        }
        let start = *self.row_start.get_or_insert(self.len);
        if self.len - start + s.len() > MAX_VALUE_LEN {
            self.overflowed = true;
            return Err(fmt::Error);
        }
        self.extend(s.as_bytes());
        Ok(())
    }
}

/// The refusal of an empty row id, by the builder and by templates alike.
const EMPTY_ROW: &str = "row id is empty: give the row's stable id (a context built without \
     `.row(..)` has none)";

fn check_row(row: &str) -> Result<()> {
    if row.is_empty() {
        return Err(Error::invalid_context(EMPTY_ROW));
    }
    check_len("row id", row, MAX_VALUE_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(t: &str, tb: &str, c: &str) -> Context {
        Context::new(t, tb, c).unwrap()
    }

    /// The ASCII fast path of `check_tenant` gives the full check's answer:
    /// every ASCII character alone and between letters, and random ASCII ids.
    #[test]
    fn ascii_fast_path_agrees_with_the_unicode_rules() {
        let full = |t: &str| check_existing_tenant(t).and_then(|()| check_tenant_unicode(t));
        for b in 0u8..128 {
            let c = char::from(b);
            for t in [c.to_string(), format!("a{c}b")] {
                assert_eq!(check_tenant(&t).is_ok(), full(&t).is_ok(), "{t:?}");
            }
        }
        proptest::proptest!(|(t in "[\\x00-\\x7f]{1,40}")| {
            proptest::prop_assert_eq!(check_tenant(&t).is_ok(), full(&t).is_ok());
        });
    }

    #[test]
    fn length_prefixes_prevent_collisions() {
        assert_ne!(
            ctx("ab", "c", "d").associated_data(),
            ctx("a", "bc", "d").associated_data()
        );
        assert_ne!(
            ctx("a", "b", "cd").associated_data(),
            ctx("a", "bc", "d").associated_data()
        );
        let a = Context::builder("t", "x", "y")
            .extra("ab", "c")
            .build()
            .unwrap();
        let b = Context::builder("t", "x", "y")
            .extra("a", "bc")
            .build()
            .unwrap();
        assert_ne!(a.associated_data(), b.associated_data());
    }

    #[test]
    fn row_presence_is_encoded() {
        let none = ctx("t", "x", "y");
        let some = Context::builder("t", "x", "y").row("0").build().unwrap();
        assert_ne!(none.associated_data(), some.associated_data());
    }

    #[test]
    fn extras_order_does_not_matter() {
        let a = Context::builder("t", "x", "y")
            .extra("k1", "v1")
            .extra("k2", "v2")
            .build()
            .unwrap();
        let b = Context::builder("t", "x", "y")
            .extra("k2", "v2")
            .extra("k1", "v1")
            .build()
            .unwrap();
        assert_eq!(a.associated_data(), b.associated_data());
    }

    #[test]
    fn known_encoding() {
        let c = Context::builder("acme", "t", "c").row(7).build().unwrap();
        assert_eq!(
            hex::encode(c.associated_data()),
            "0000000461636d650000000174000000016301000000013700"
        );
    }

    #[test]
    fn unicode_tables_agree() {
        // The NFC and general-category tables must come from one Unicode
        // version, the one FORMAT.md names as the minimum.
        let (major, minor, _) = unicode_normalization::UNICODE_VERSION;
        let (pmajor, pminor, _) = unicode_properties::UNICODE_VERSION;
        assert_eq!((u64::from(major), u64::from(minor)), (pmajor, pminor));
        assert!(major >= 18);
    }

    #[test]
    fn rejects_empty_and_oversized() {
        for (t, tb, c) in [("", "x", "y"), ("t", "", "y"), ("t", "x", "")] {
            assert!(matches!(
                Context::new(t, tb, c),
                Err(Error::InvalidContext { .. })
            ));
        }
        for tenant in [
            "acme ",
            " acme",
            "ac\0me",
            "ac\nme",
            "acme\u{200B}",
            "\u{FEFF}acme",
            "ac\u{202E}me",
            "cafe\u{301}",
            "acme\u{0378}",
            "acme\u{FFFF}",
            "acme\u{3000}",
        ] {
            assert!(
                matches!(
                    Context::new(tenant, "x", "y"),
                    Err(Error::InvalidContext { .. })
                ),
                "{tenant:?}"
            );
        }
        for tenant in [
            "acme corp",
            "caf\u{E9}",
            "\u{1F600}",
            "\u{E000}x",
            "\u{E1}\u{302}",
        ] {
            assert!(Context::new(tenant, "x", "y").is_ok(), "{tenant:?}");
        }
        // Only the tenant id selects a key: other parts are bytes, as given.
        assert!(
            Context::builder("t", "cafe\u{301}", "\u{200B}")
                .row("x\u{FEFF}")
                .build()
                .is_ok()
        );
        let long = "x".repeat(256);
        assert!(Context::new(&long, "x", "y").is_err());
        assert!(Context::builder("t", "x", "y").row("").build().is_err());
        assert!(
            Context::builder("t", "x", "y")
                .extra("", "v")
                .build()
                .is_err()
        );
        assert!(
            Context::builder("t", "x", "y")
                .extra("k", "1")
                .extra("k", "2")
                .build()
                .is_err()
        );
        let mut b = Context::builder("t", "x", "y");
        for i in 0..17 {
            b = b.extra(format!("k{i}"), "v");
        }
        assert!(b.build().is_err());
    }
}

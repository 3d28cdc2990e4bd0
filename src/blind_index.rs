//! Blind indexes: equality search on sealed columns (FORMAT.md §"Blind indexes").
//!
//! A blind index value is a truncated HMAC-SHA256 of a normalised value, under
//! a key derived from the tenant key for one tenant, table, column and index.
//! It is stored beside the sealed value; a search computes it under every key
//! version that may still hold rows, and confirms each candidate by opening it.

use std::fmt;
use std::sync::Arc;

use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;
use unicode_normalization::UnicodeNormalization as _;
use zeroize::Zeroizing;

use crate::context::ContextTemplate;
use crate::crypto::{HmacKey, TenantKeyDeriver};
use crate::error::{Error, Result};
use crate::format::SealedValue;
use crate::sealer::TenantSealer;
use crate::secret::Opened;

/// The default length of a blind index value, in bytes.
const DEFAULT_INDEX_LEN: usize = 16;
/// The longest blind index value: a whole HMAC-SHA256 output.
const MAX_INDEX_LEN: usize = 32;
/// The longest table, column or index name, and normaliser id.
const MAX_NAME_LEN: usize = 255;
/// The prefix of a custom normaliser's id.
const CUSTOM_PREFIX: &str = "custom:";

/// A custom normalisation function: `None` refuses the value.
type CustomFn = dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync;

/// How a value is normalised before it is indexed, so that values an
/// application considers equal get equal index values.
///
/// The normaliser is part of the index key's derivation (FORMAT.md §"Blind
/// indexes"): changing it changes every index value, so choose it once per
/// index. The built-in normalisers are specified byte for byte in FORMAT.md
/// and have test vectors; a custom one is named, and its name is bound the
/// same way.
///
/// ```
/// use fieldseal::blind_index::Normalizer;
///
/// let email = Normalizer::email();
/// let a = email.normalize(b"  Alice@Example.COM ").unwrap();
/// let b = email.normalize(b"alice@example.com").unwrap();
/// use secrecy::ExposeSecret as _;
/// assert_eq!(a.expose_secret(), b.expose_secret());
/// ```
#[derive(Clone)]
pub struct Normalizer(Kind);

#[derive(Clone)]
enum Kind {
    Exact,
    Trim,
    CaseFold,
    Email,
    Custom { id: Box<str>, f: Arc<CustomFn> },
}

impl Normalizer {
    /// The bytes as given: `"Alice"` and `"alice "` are different values.
    pub fn exact() -> Self {
        Self(Kind::Exact)
    }

    /// Leading and trailing white space (the Unicode `White_Space` property)
    /// removed. Refuses input that is not UTF-8 or holds an unassigned code
    /// point.
    pub fn trim() -> Self {
        Self(Kind::Trim)
    }

    /// Trimmed, in Unicode normalization form C, and case-folded with
    /// Unicode's full default case folding (`"Straße"` and `"STRASSE "` are
    /// equal). Refuses input that is not UTF-8 or holds an unassigned code
    /// point.
    pub fn case_fold() -> Self {
        Self(Kind::CaseFold)
    }

    /// An e-mail address: trimmed, split at its last `@`; the domain (one
    /// trailing dot removed) converted by the URL Standard's *domain to
    /// ASCII* (UTS #46: lowercase, `xn--` for internationalised names, so
    /// `Bücher.example` and `xn--bcher-kva.example` are equal), and the local
    /// part in NFC with only its ASCII letters lowercased. Refuses input
    /// without a non-empty local part and a valid domain.
    ///
    /// Non-ASCII letters of the local part are not folded (`Jürgen` and
    /// `JÜRGEN` differ), and `straße.de` and `strasse.de` stay two domains,
    /// as they are two registrable names: a normaliser that merged them would
    /// let one address find another's account. Provider-specific rules (dots
    /// and `+tags` in Gmail addresses) are not applied.
    ///
    /// # Security
    ///
    /// Act on the address stored in the matching row (send a reset mail
    /// there), never on the address that was searched for: the two are equal
    /// only after normalisation.
    pub fn email() -> Self {
        Self(Kind::Email)
    }

    /// A normaliser of your own, named `name`: `f` returns the normalised
    /// bytes, or `None` to refuse a value. Its id is `custom:<name>`.
    ///
    /// # Security
    ///
    /// The name is bound into the index key: two different functions must
    /// never share a name, or their index values become comparable. `f` sees
    /// plaintext: it must not log, store or panic on it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `name` is empty or longer than 248 bytes.
    pub fn custom(
        name: &str,
        f: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Result<Self> {
        if name.is_empty() || CUSTOM_PREFIX.len() + name.len() > MAX_NAME_LEN {
            return Err(Error::Config {
                reason: format!(
                    "a custom normaliser's name must be 1 to {} bytes (it is {})",
                    MAX_NAME_LEN - CUSTOM_PREFIX.len(),
                    name.len()
                ),
            });
        }
        Ok(Self(Kind::Custom {
            id: format!("{CUSTOM_PREFIX}{name}").into_boxed_str(),
            f: Arc::new(f),
        }))
    }

    /// The id bound into the index key: `exact`, `trim`, `casefold`, `email`
    /// or `custom:<name>`.
    pub fn id(&self) -> &str {
        match &self.0 {
            Kind::Exact => "exact",
            Kind::Trim => "trim",
            Kind::CaseFold => "casefold",
            Kind::Email => "email",
            Kind::Custom { id, .. } => id,
        }
    }

    /// The normalised form of `value`, as it is indexed.
    ///
    /// # Errors
    ///
    /// [`Error::NotIndexable`] if the normaliser refuses the value (not UTF-8,
    /// not an e-mail address, or refused by a custom function). The error
    /// never contains the value.
    pub fn normalize(&self, value: &[u8]) -> Result<secrecy::SecretSlice<u8>> {
        let normalized = self
            .apply(value)
            .map_err(|reason| self.refused("", reason))?;
        Ok(normalized.to_vec().into())
    }

    fn refused(&self, index: &str, reason: &'static str) -> Error {
        Error::NotIndexable {
            index: index.to_string(),
            normalizer: self.id().to_string(),
            reason,
        }
    }

    /// FORMAT.md §"Normalisers".
    fn apply(&self, value: &[u8]) -> std::result::Result<Zeroizing<Vec<u8>>, &'static str> {
        if value.len() > crate::format::MAX_PLAINTEXT_LEN {
            // Longer than any sealed value: it could never match.
            return Err("it is longer than the largest value fieldseal seals (64 MiB)");
        }
        let text = || {
            let text = std::str::from_utf8(value).map_err(|_| "it is not valid UTF-8")?;
            check_assigned(text)?;
            Ok::<_, &'static str>(trim(text))
        };
        match &self.0 {
            Kind::Exact => Ok(Zeroizing::new(value.to_vec())),
            Kind::Trim => Ok(Zeroizing::new(text()?.as_bytes().to_vec())),
            Kind::CaseFold => Ok(Zeroizing::new(case_fold(text()?).into_bytes())),
            Kind::Email => email(text()?),
            Kind::Custom { f, .. } => f(value)
                .map(Zeroizing::new)
                .ok_or("the custom normaliser refused it"),
        }
    }
}

/// The code points of the Unicode `White_Space` property, as FORMAT.md lists
/// them (not the toolchain's tables, so that the set never moves).
fn is_white_space(c: char) -> bool {
    matches!(
        c,
        '\u{9}'..='\u{d}'
            | '\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

fn trim(text: &str) -> &str {
    text.trim_matches(is_white_space)
}

/// Unassigned code points are refused: Unicode may assign them later, with
/// case foldings and compositions that would change the normalised form.
fn check_assigned(text: &str) -> std::result::Result<(), &'static str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    if text
        .chars()
        .any(|c| c.general_category() == GeneralCategory::Unassigned)
    {
        return Err("it holds an unassigned code point (Unicode category Cn)");
    }
    Ok(())
}

/// NFC, full default case folding, NFC. The intermediate strings hold
/// plaintext and are zeroized (sized up front, so that growing them leaves no
/// copies behind; the libraries' own scratch space is not ours to clear).
fn case_fold(text: &str) -> String {
    let mut nfc = Zeroizing::new(String::with_capacity(text.len() * 3));
    nfc.extend(text.nfc());
    let folded = Zeroizing::new(
        icu_casemap::CaseMapper::new()
            .fold_string(&nfc)
            .into_owned(),
    );
    let mut out = String::with_capacity(folded.len() * 3);
    out.extend(folded.nfc());
    out
}

/// FORMAT.md §"Normalisers", `email`: the local part in NFC with its ASCII
/// letters lowercased, the domain through the URL Standard's domain to ASCII.
fn email(text: &str) -> std::result::Result<Zeroizing<Vec<u8>>, &'static str> {
    let (local, domain) = text
        .rsplit_once('@')
        .ok_or("it is not an e-mail address (it has no `@`)")?;
    if local.is_empty() {
        return Err("it is not an e-mail address (nothing before the `@`)");
    }
    if domain.is_empty() {
        return Err("it is not an e-mail address (no domain after the `@`)");
    }
    let ascii = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::URL)
        .map_err(|_| "its domain is not a valid domain name")?;
    // One trailing dot (the root), also when IDNA mapped it from U+3002 and
    // the like.
    let domain = ascii.strip_suffix('.').unwrap_or(&ascii);
    if domain.is_empty() || domain.split('.').any(str::is_empty) {
        return Err("its domain has an empty label");
    }
    let mut nfc = Zeroizing::new(String::with_capacity(local.len() * 3));
    nfc.extend(local.nfc());
    let mut out = Zeroizing::new(Vec::with_capacity(nfc.len() + 1 + domain.len()));
    out.extend(nfc.bytes().map(|b| b.to_ascii_lowercase()));
    out.push(b'@');
    out.extend_from_slice(domain.as_bytes());
    Ok(out)
}

impl fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Normalizer").field(&self.id()).finish()
    }
}

/// The definition of one blind index: which column it indexes, its name, its
/// normaliser and its length. Tenant-independent: define it once, next to the
/// table's other definitions, and use it with every tenant's
/// [`TenantSealer`].
///
/// ```
/// # fn main() -> Result<(), fieldseal::Error> {
/// use fieldseal::{blind_index::{BlindIndex, Normalizer}};
///
/// let by_email = BlindIndex::builder("users", "email", "email_idx")
///     .normalizer(Normalizer::email())
///     .build()?;
/// assert_eq!(by_email.len(), 16);
/// # Ok(()) }
/// ```
///
/// # Security
///
/// A blind index leaks, to whoever reads the database, which rows of one
/// tenant hold equal (normalised) values in this index, and so how often
/// each value occurs: enough to guess a low-entropy column (a country, a
/// status) from its frequencies. Index only values with many possible
/// values (e-mail addresses, external account ids, API key fingerprints).
/// Values of different tenants, columns or indexes are never comparable.
#[derive(Clone)]
pub struct BlindIndex {
    table: Box<str>,
    column: Box<str>,
    name: Box<str>,
    normalizer: Normalizer,
    len: u8,
}

/// Builds a [`BlindIndex`]; from [`BlindIndex::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BlindIndexBuilder {
    table: String,
    column: String,
    name: String,
    normalizer: Normalizer,
    len: usize,
}

impl BlindIndex {
    /// Starts the definition of an index named `name` on `table`.`column`,
    /// with the [`Normalizer::exact`] normaliser and 16-byte values.
    ///
    /// The table and column are labels, as in a [`Context`](crate::Context):
    /// they need not be the SQL names, but they are bound into the index key,
    /// so they must never change for an index in use.
    pub fn builder(
        table: impl Into<String>,
        column: impl Into<String>,
        name: impl Into<String>,
    ) -> BlindIndexBuilder {
        BlindIndexBuilder {
            table: table.into(),
            column: column.into(),
            name: name.into(),
            normalizer: Normalizer::exact(),
            len: DEFAULT_INDEX_LEN,
        }
    }

    /// The table label.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The column label.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The index name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The normaliser.
    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    /// The length of the index values, in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub(crate) fn normalize(&self, value: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.normalizer
            .apply(value)
            .map_err(|reason| self.normalizer.refused(&self.name, reason))
    }

    /// The HKDF info of FORMAT.md §"Blind indexes".
    pub(crate) fn key_info(&self, tenant: &str) -> Vec<u8> {
        let id = self.normalizer.id();
        let mut info = Vec::with_capacity(
            21 + tenant.len() + self.table.len() + self.column.len() + self.name.len() + id.len(),
        );
        for part in [tenant, &self.table, &self.column, &self.name, id] {
            // Each part is at most 255 bytes (checked when built).
            info.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            info.extend_from_slice(part.as_bytes());
        }
        info.push(self.len);
        info
    }

    /// The index value of an already normalised value under one key version.
    pub(crate) fn compute(
        &self,
        deriver: &TenantKeyDeriver,
        info: &[u8],
        normalized: &[u8],
        version: u32,
    ) -> IndexValue {
        let key: HmacKey = deriver.index_key(info);
        let mac = key.mac(&[normalized]);
        let mut bytes = [0u8; MAX_INDEX_LEN];
        let len = self.len();
        if let (Some(dst), Some(src)) = (bytes.get_mut(..len), mac.get(..len)) {
            dst.copy_from_slice(src);
        }
        IndexValue {
            bytes,
            len: self.len,
            version,
        }
    }
}

impl BlindIndexBuilder {
    /// The normaliser (default [`Normalizer::exact`]).
    pub fn normalizer(mut self, normalizer: Normalizer) -> Self {
        self.normalizer = normalizer;
        self
    }

    /// The length of the index values in bytes, 1 to 32 (default 16).
    ///
    /// Shorter values leak less (more values share one index value) and cost
    /// more false positives, which a search opens and discards: a tenant with
    /// `n` rows gets about `n / 2^(8 × len)` false positives per search. At 16
    /// bytes that is never; at 2 bytes, 1.5 per search among 100,000 rows.
    pub fn len(mut self, bytes: usize) -> Self {
        self.len = bytes;
        self
    }

    /// Checks the definition.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the table, column or name is empty or longer than
    /// 255 bytes, or the length is not 1 to 32.
    pub fn build(self) -> Result<BlindIndex> {
        for (what, value) in [
            ("table", &self.table),
            ("column", &self.column),
            ("name", &self.name),
        ] {
            if value.is_empty() || value.len() > MAX_NAME_LEN {
                return Err(Error::Config {
                    reason: format!(
                        "a blind index's {what} must be 1 to {MAX_NAME_LEN} bytes (it is {})",
                        value.len()
                    ),
                });
            }
        }
        let len = u8::try_from(self.len)
            .ok()
            .filter(|l| (1..=MAX_INDEX_LEN).contains(&usize::from(*l)))
            .ok_or_else(|| Error::Config {
                reason: format!(
                    "blind index `{}` has length {}: it must be 1 to {MAX_INDEX_LEN} bytes",
                    self.name, self.len
                ),
            })?;
        Ok(BlindIndex {
            table: self.table.into(),
            column: self.column.into(),
            name: self.name.into(),
            normalizer: self.normalizer,
            len,
        })
    }
}

/// Two definitions are equal when every part bound into the index key is:
/// the labels, the name, the normaliser's id and the length.
impl PartialEq for BlindIndex {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for BlindIndex {}

impl std::hash::Hash for BlindIndex {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl BlindIndex {
    fn identity(&self) -> (&str, &str, &str, &str, u8) {
        (
            &self.table,
            &self.column,
            &self.name,
            self.normalizer.id(),
            self.len,
        )
    }
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindIndex")
            .field("table", &self.table)
            .field("column", &self.column)
            .field("name", &self.name)
            .field("normalizer", &self.normalizer)
            .field("len", &self.len)
            .finish()
    }
}

/// One blind index value: the bytes to store in (or search) the index column,
/// and the tenant key version it was computed under.
///
/// Compared in constant time. `Debug` shows the version and length, never the
/// bytes (they reveal which rows hold equal values).
#[derive(Clone)]
pub struct IndexValue {
    bytes: [u8; MAX_INDEX_LEN],
    len: u8,
    version: u32,
}

impl IndexValue {
    /// The bytes to store or bind.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The tenant key version this value was computed under.
    pub fn key_version(&self) -> u32 {
        self.version
    }
}

impl AsRef<[u8]> for IndexValue {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for IndexValue {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && bool::from(self.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl Eq for IndexValue {}

impl fmt::Debug for IndexValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexValue")
            .field("key_version", &self.version)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A prepared equality search on one blind index for one tenant: the index
/// values to query for, one per key version that may hold rows (primary
/// first), and the normalised value, to confirm candidates.
///
/// From [`TenantSealer::search`]. Query the index column for any of
/// [`Search::values`] (`= ANY($1)` on PostgreSQL, `IN (…)` elsewhere, with
/// [`Search::push_values`]), then open the candidates with
/// [`TenantSealer::open_matches`], which keeps only true matches.
pub struct Search {
    index: BlindIndex,
    tenant: Box<str>,
    normalized: Zeroizing<Vec<u8>>,
    terms: Vec<IndexValue>,
    skipped: Vec<Error>,
}

impl Search {
    /// The index values, one per searchable key version, primary first.
    pub fn terms(&self) -> &[IndexValue] {
        &self.terms
    }

    /// The index values as byte vectors: bind them as one array parameter on
    /// PostgreSQL (`WHERE email_idx = ANY($2)`).
    pub fn values(&self) -> Vec<Vec<u8>> {
        self.terms.iter().map(|t| t.as_bytes().to_vec()).collect()
    }

    /// The versions this search cannot cover, each as the error that explains
    /// why ([`Error::KeyDestroyed`] or [`Error::KeyDisabled`]). Always empty
    /// for [`TenantSealer::search`], which refuses such a search;
    /// [`TenantSealer::search_partial`] lists them here.
    pub fn skipped(&self) -> &[Error] {
        &self.skipped
    }

    /// The index searched.
    pub fn index(&self) -> &BlindIndex {
        &self.index
    }

    /// Whether an opened value is a true match: its normalised form equals
    /// the searched one (compared in constant time). A value the normaliser
    /// refuses is no match.
    pub fn matches(&self, opened: &Opened) -> bool {
        match self
            .index
            .normalizer
            .apply(opened.plaintext().expose_secret())
        {
            Ok(candidate) => bool::from(candidate.as_slice().ct_eq(self.normalized.as_slice())),
            Err(_) => false,
        }
    }

    /// Appends `(v1, v2, …)` to `query`, binding each index value: for `IN`
    /// on MySQL, MariaDB and SQLite (and PostgreSQL, where `= ANY` with
    /// [`Search::values`] keeps the statement text the same for any number
    /// of versions).
    ///
    /// ```no_run
    /// # async fn f(pool: sqlx::SqlitePool, tenant: fieldseal::TenantSealer, search: fieldseal::blind_index::Search) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut query = sqlx::QueryBuilder::new("SELECT id, email FROM users WHERE tenant_id = ");
    /// query.push_bind(tenant.tenant()).push(" AND email_idx IN ");
    /// search.push_values(&mut query);
    /// let rows: Vec<(i64, fieldseal::SealedValue)> = query.build_query_as().fetch_all(&pool).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "_sql")]
    pub fn push_values<DB>(&self, query: &mut sqlx::QueryBuilder<DB>)
    where
        DB: sqlx::Database,
        for<'t> Vec<u8>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query.push("(");
        let mut values = query.separated(", ");
        for term in &self.terms {
            values.push_bind(term.as_bytes().to_vec());
        }
        values.push_unseparated(")");
    }
}

impl fmt::Debug for Search {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Search")
            .field("tenant", &self.tenant)
            .field("index", &self.index.name)
            .field("terms", &self.terms)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl TenantSealer {
    /// The value of `index` for `value` under the tenant's primary key (the
    /// version [`TenantSealer::seal`] and [`TenantSealer::seal_row`] of this
    /// same handle seal under: a handle is a snapshot of the tenant's keys, so
    /// a value and its index value made with one handle always agree). Store
    /// it in the index column beside the sealed value, and compute it again
    /// whenever the value is sealed again: an index value must always be under
    /// the key version of the sealed value beside it (FORMAT.md §"Index
    /// values"), so that retiring a version no value uses never strands an
    /// index value.
    ///
    /// # Errors
    ///
    /// [`Error::NotIndexable`] if the normaliser refuses the value;
    /// [`Error::TenantShredded`].
    pub fn blind_index(&self, index: &BlindIndex, value: &[u8]) -> Result<IndexValue> {
        let normalized = index.normalize(value)?;
        let (version, deriver) = self.keyring.primary()?;
        let info = index.key_info(&self.keyring.tenant);
        Ok(index.compute(deriver, &info, &normalized, version))
    }

    /// Prepares a search of `index` for `value`: its index value under every
    /// key version that may still hold rows, from the primary down to the
    /// tenant's minimum decryption version.
    ///
    /// # Errors
    ///
    /// [`Error::IncompleteSearch`] if a version in that range is destroyed,
    /// disabled or missing from the key store: rows indexed under it would
    /// silently be missing from the result. Once no row uses such a version, raise the minimum decryption
    /// version above it ([`KeyAdmin::set_min_decryption_version`](crate::KeyAdmin::set_min_decryption_version));
    /// or accept the gap with [`TenantSealer::search_partial`].
    /// [`Error::NotIndexable`] if the normaliser refuses the value;
    /// [`Error::TenantShredded`].
    pub fn search(&self, index: &BlindIndex, value: &[u8]) -> Result<Search> {
        let mut search = self.search_partial(index, value)?;
        // The newest version that cannot be searched: raising the minimum
        // above it closes every gap at once.
        if search.skipped.is_empty() {
            return Ok(search);
        }
        let gap = search.skipped.swap_remove(0);
        let (version, reason) = match gap {
            Error::KeyDestroyed {
                version,
                destroyed_at,
                ..
            } => (version, format!("it was destroyed on {destroyed_at}")),
            Error::KeyDisabled {
                version,
                disabled_at,
                ..
            } => (version, format!("it is disabled, since {disabled_at}")),
            Error::UnknownKeyVersion { version, .. } => (
                version,
                "the key store has no row for it, though it has newer versions (a key row \
                 was deleted outside fieldseal: restore it from a backup, or check the \
                 audit log)"
                    .to_string(),
            ),
            other => return Err(other),
        };
        Err(Error::IncompleteSearch {
            tenant: search.tenant.to_string(),
            index: index.name.to_string(),
            version,
            reason,
        })
    }

    /// As [`TenantSealer::search`], but a destroyed, disabled or missing
    /// version in range is skipped and listed in [`Search::skipped`] instead
    /// of failing.
    ///
    /// # Security
    ///
    /// Rows indexed under a skipped version are not found. Use this only
    /// where a result that may be incomplete is acceptable, and check
    /// [`Search::skipped`].
    ///
    /// # Errors
    ///
    /// As [`TenantSealer::search`], except [`Error::IncompleteSearch`].
    pub fn search_partial(&self, index: &BlindIndex, value: &[u8]) -> Result<Search> {
        let normalized = index.normalize(value)?;
        let keyring = &self.keyring;
        // The primary must be usable (and the tenant not shredded).
        keyring.primary()?;
        let info = index.key_info(&keyring.tenant);
        let mut terms = Vec::new();
        let mut skipped = Vec::new();
        // Every version number in range, not only those the store returned:
        // key rows are never deleted, so a missing one (a row deleted behind
        // the store's back) is a gap like a destroyed version, never a
        // silently shorter search.
        let primary = keyring.versions.last().map_or(0, |e| e.version);
        let lowest = keyring.min_decryption_version.max(1);
        for version in (lowest..=primary).rev() {
            match keyring.deriver_for(version) {
                Ok(deriver) => {
                    terms.push(index.compute(deriver, &info, &normalized, version));
                }
                Err(
                    e @ (Error::KeyDestroyed { .. }
                    | Error::KeyDisabled { .. }
                    | Error::UnknownKeyVersion { .. }),
                ) => {
                    skipped.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Search {
            index: index.clone(),
            tenant: keyring.tenant.clone(),
            normalized,
            terms,
            skipped,
        })
    }

    /// Opens the candidate rows a search returned and keeps the true matches,
    /// in order: rows whose index value matched by chance (a truncated index
    /// collides) or whose value changed since are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::TenantMismatch`] if the search or the template is for another
    /// tenant; the first error opening a candidate (as
    /// [`TenantSealer::open_row`] gives it): a candidate that does not open
    /// is reported, never skipped (so whoever can write rows of the table can
    /// make a search for that value fail, but never make it quietly miss a
    /// row).
    ///
    /// The template gives each candidate's context; its table and column are
    /// those of the sealed column, which need not be the index's labels.
    pub fn open_matches<R, S>(
        &self,
        search: &Search,
        template: &ContextTemplate,
        candidates: impl IntoIterator<Item = (R, S)>,
    ) -> Result<Vec<(R, Opened)>>
    where
        R: fmt::Display,
        S: std::borrow::Borrow<SealedValue>,
    {
        if *search.tenant != *self.keyring.tenant {
            return Err(Error::TenantMismatch {
                handle: self.keyring.tenant.to_string(),
                context: search.tenant.to_string(),
            });
        }
        let mut found = Vec::new();
        for (row, sealed) in candidates {
            let opened = self.open_row(template, &row, sealed.borrow())?;
            if search.matches(&opened) {
                found.push((row, opened));
            }
        }
        Ok(found)
    }
}

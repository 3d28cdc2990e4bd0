//! `fieldseal.toml`: the database, the root key, and the application's sealed
//! columns. Parsed with serde; a mistake is reported with the path of the key
//! that is wrong (`tables[1].columns[0].form: unknown variant ...`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use fieldseal::{
    LocalKeyProvider, RootKey,
    blind_index::{BlindIndex, Normalizer},
    jobs::{ColumnForm, ColumnSpec, KeyType, TableSpec},
    provider::{KeyProvider, ProviderChain},
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) database: Database,
    pub(crate) root_key: RootKeyConfig,
    /// Tenants with root keys of their own: `[tenant_root_keys.<tenant>]`,
    /// one key source each, as in `[root_key]` (an AWS KMS key by its ARN,
    /// `kms_key`, not described at start-up: a tenant's unusable key stops
    /// that tenant only). The application's processes need the same.
    #[serde(default)]
    pub(crate) tenant_root_keys: std::collections::BTreeMap<String, RootKeyConfig>,
    #[serde(default)]
    pub(crate) key_store: KeyStoreConfig,
    #[serde(default)]
    pub(crate) sealer: SealerConfig,
    #[serde(default)]
    pub(crate) jobs: JobsConfig,
    #[serde(default)]
    pub(crate) tables: Vec<Table>,
    /// The shred ledger: every `shred` is appended to it (a file kept away
    /// from the database's backups).
    pub(crate) shred_ledger: Option<PathBuf>,
    /// The directory relative paths are resolved against (the config file's).
    #[serde(skip)]
    pub(crate) base: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Database {
    /// The URL (`postgres://…`, `mysql://…`, `sqlite://…`). Prefer `url_env`
    /// for URLs with a password.
    pub(crate) url: Option<String>,
    /// The environment variable that holds the URL (default `DATABASE_URL`).
    pub(crate) url_env: Option<String>,
}

/// A root key: a local key (`id` and `file` or `env`), a directory of local
/// epoch keys (`dir`, files `<id>-e<N>.key`), an AWS KMS key (`kms_key`,
/// optionally `kms_region` and `kms_endpoint`; the key's ARN is its id), AWS
/// KMS epoch keys (`kms_epochs` instead of `kms_key`: the keys named by the
/// aliases `alias/<kms_epochs>-e<N>`, optionally `kms_deletion_window_days`),
/// a PKCS#11 key (`pkcs11_module`, `pkcs11_token`, `pkcs11_key`, and the PIN
/// from `pkcs11_pin_env`; its id is `pkcs11:` and the label; or
/// `pkcs11_epochs` instead of `pkcs11_key`: the keys labelled
/// `<pkcs11_epochs>-e<N>`) or a Vault / OpenBao Transit key (`vault_addr`, `vault_key`, optionally
/// `vault_mount`, the token from `vault_token_env`; every version Vault still
/// decrypts with is a root key, `transit:<mount>/<key>:v<n>`). The current one
/// is `[root_key]`; older ones, still unwrapping while keys are re-wrapped,
/// are `[[root_key.previous]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
// Built without `aws-kms` or `pkcs11`, their fields are parsed (so that the
// error names the missing feature) but not read.
#[cfg_attr(
    not(all(feature = "aws-kms", feature = "pkcs11", feature = "vault-transit")),
    allow(dead_code)
)]
pub(crate) struct RootKeyConfig {
    pub(crate) id: Option<String>,
    pub(crate) file: Option<PathBuf>,
    pub(crate) env: Option<String>,
    /// A directory of epoch key files `<id>-e<N>.key` (`id` names them).
    pub(crate) dir: Option<PathBuf>,
    pub(crate) kms_key: Option<String>,
    pub(crate) kms_epochs: Option<String>,
    pub(crate) kms_deletion_window_days: Option<u8>,
    pub(crate) kms_region: Option<String>,
    pub(crate) kms_endpoint: Option<String>,
    pub(crate) pkcs11_module: Option<PathBuf>,
    pub(crate) pkcs11_token: Option<String>,
    pub(crate) pkcs11_key: Option<String>,
    pub(crate) pkcs11_epochs: Option<String>,
    pub(crate) pkcs11_pin_env: Option<String>,
    pub(crate) vault_addr: Option<String>,
    pub(crate) vault_key: Option<String>,
    pub(crate) vault_mount: Option<String>,
    pub(crate) vault_token_env: Option<String>,
    #[serde(default)]
    pub(crate) previous: Vec<RootKeyConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyStoreConfig {
    pub(crate) table_prefix: Option<String>,
    pub(crate) schema: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SealerConfig {
    /// The cache time to live of the application's sealers (default 5m):
    /// `retire` destroys nothing until the primary is this old.
    #[serde(default, with = "humantime_serde_opt")]
    pub(crate) cache_ttl: Option<Duration>,
    /// `aes-256-gcm` (default) or `chacha20-poly1305`.
    pub(crate) algorithm: Option<Algorithm>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Algorithm {
    Aes256Gcm,
    Chacha20Poly1305,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsConfig {
    pub(crate) table_prefix: Option<String>,
    pub(crate) schema: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub(crate) lease: Option<Duration>,
    pub(crate) batch: Option<usize>,
    pub(crate) workers: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Table {
    pub(crate) table: String,
    pub(crate) key: KeyColumn,
    pub(crate) key_type: KeyTypeConfig,
    pub(crate) tenant_column: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) columns: Vec<Column>,
}

/// A key column, or a list of them (refused with a clear message).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum KeyColumn {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyTypeConfig {
    Integer,
    Text,
    Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Column {
    pub(crate) column: String,
    pub(crate) form: Form,
    pub(crate) table_label: Option<String>,
    pub(crate) column_label: Option<String>,
    /// The row id's column (default: the primary key), or `false` for none.
    pub(crate) row: Option<RowConfig>,
    #[serde(default)]
    pub(crate) extras: Vec<Extra>,
    pub(crate) migrate_from: Option<String>,
    #[serde(default)]
    pub(crate) migrate_in_place: bool,
    /// Blind index columns beside this sealed column, recomputed whenever a
    /// value is written.
    #[serde(default)]
    pub(crate) indexes: Vec<IndexConfig>,
}

/// `{ column = "email_idx", name = "email_idx", normalizer = "email", len = 16 }`:
/// the index's labels are the column's context labels.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IndexConfig {
    pub(crate) column: String,
    pub(crate) name: String,
    pub(crate) normalizer: NormalizerConfig,
    pub(crate) len: Option<usize>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NormalizerConfig {
    Exact,
    Trim,
    Casefold,
    Email,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Form {
    Binary,
    Text,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RowConfig {
    Column(String),
    Flag(bool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Extra {
    pub(crate) key: String,
    pub(crate) value: Option<String>,
    pub(crate) column: Option<String>,
}

/// `"90d"`, `"5m"`, `"30s"` through humantime.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{e} (write a duration such as \"30s\", \"5m\" or \"90d\")"
                ))
            })
        })
        .transpose()
    }
}

/// A configuration problem: what is wrong, and where.
#[derive(Debug)]
pub(crate) struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(feature = "aws-kms")]
async fn kms_provider(
    r: &RootKeyConfig,
) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
    let mut builder = match (&r.kms_key, &r.kms_epochs) {
        (Some(key), None) => fieldseal::provider::AwsKmsProvider::builder(key),
        (None, Some(name)) => fieldseal::provider::AwsKmsProvider::epochs(name),
        _ => return Err("give one of `kms_key` and `kms_epochs`".into()),
    };
    if let Some(days) = r.kms_deletion_window_days {
        if r.kms_epochs.is_none() {
            return Err("`kms_deletion_window_days` applies to `kms_epochs` only".into());
        }
        builder = builder.deletion_window_days(days);
    }
    if let Some(region) = &r.kms_region {
        builder = builder.region(region);
    }
    if let Some(endpoint) = &r.kms_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(Arc::new(builder.build().await?))
}

/// A tenant's own KMS key, by its ARN: built without a call to KMS.
#[cfg(feature = "aws-kms")]
async fn tenant_kms_provider(
    arn: &str,
    r: &RootKeyConfig,
) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
    let mut builder = fieldseal::provider::AwsKmsProvider::tenant_key(arn);
    if let Some(region) = &r.kms_region {
        builder = builder.region(region);
    }
    if let Some(endpoint) = &r.kms_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(Arc::new(builder.build().await?))
}

#[cfg(not(feature = "aws-kms"))]
async fn tenant_kms_provider(
    _: &str,
    _: &RootKeyConfig,
) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
    Err("this runner was built without AWS KMS support: add `--features aws-kms`".into())
}

#[cfg(not(feature = "aws-kms"))]
async fn kms_provider(
    _: &RootKeyConfig,
) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
    Err("this runner was built without AWS KMS support: add `--features aws-kms`".into())
}

/// The root key id a tenant's key source names, as near as the
/// configuration tells it (`n`: its place, for a source that names none).
fn configured_id(r: &RootKeyConfig, n: usize) -> String {
    if let Some(label) = &r.pkcs11_key {
        return format!("pkcs11:{label}");
    }
    if let Some(key) = &r.vault_key {
        let mount = r.vault_mount.as_deref().unwrap_or("transit");
        return format!("transit:{mount}/{key}");
    }
    r.id.clone()
        .unwrap_or_else(|| format!("unusable-tenant-root-{n}"))
}

/// A tenant's own root key whose provider could not be built: it refuses
/// every wrap and unwrap, with the reason, so that only its tenant fails.
#[derive(Debug)]
struct Unusable {
    id: String,
    reason: String,
}

#[fieldseal::async_trait]
impl KeyProvider for Unusable {
    fn current_root_key_id(&self) -> &str {
        &self.id
    }

    async fn wrap(
        &self,
        _: &fieldseal::provider::TenantKey,
        _: &fieldseal::provider::WrapContext<'_>,
    ) -> fieldseal::Result<fieldseal::provider::WrappedKey> {
        Err(self.refusal())
    }

    async fn unwrap(
        &self,
        _: &fieldseal::provider::WrappedKey,
        _: &fieldseal::provider::WrapContext<'_>,
    ) -> fieldseal::Result<fieldseal::provider::TenantKey> {
        Err(self.refusal())
    }
}

impl Unusable {
    fn refusal(&self) -> fieldseal::Error {
        fieldseal::Error::provider(
            format!("the provider of root key `{}` could not be built", self.id),
            self.reason.clone(),
        )
    }
}

fn err(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

impl Config {
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read the configuration {}: {e} (pass it with --config, or set \
                 FIELDSEAL_CONFIG)",
                path.display()
            ))
        })?;
        let mut config = Self::parse(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        config.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(config)
    }

    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| {
            let inner = e.to_string();
            let lines: Vec<&str> = inner.lines().filter(|l| !l.trim().is_empty()).collect();
            err(format!(
                "{} ({})",
                lines.last().copied().unwrap_or_default(),
                lines.first().copied().unwrap_or_default()
            ))
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // toml's message is "TOML parse error at line L, column C", the
            // source excerpt, then what is wrong: keep the first and the last.
            let lines: Vec<&str> = inner.lines().filter(|l| !l.trim().is_empty()).collect();
            let at = lines
                .first()
                .and_then(|l| l.strip_prefix("TOML parse error at "))
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            let what = lines.last().copied().unwrap_or_default();
            err(format!("{path}: {what}{at}"))
        })
    }

    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// The database URL, from the file or the environment; relative SQLite
    /// paths are resolved against the configuration's directory.
    pub(crate) fn database_url(&self) -> Result<String, ConfigError> {
        let url = match (&self.database.url, &self.database.url_env) {
            (Some(_), Some(_)) => {
                return Err(err("database: give `url` or `url_env`, not both"));
            }
            (Some(url), None) => url.clone(),
            (None, var) => {
                let var = var.as_deref().unwrap_or("DATABASE_URL");
                std::env::var(var).map_err(|_| {
                    err(format!(
                        "database: no `url` in the configuration and ${var} is not set"
                    ))
                })?
            }
        };
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            if rest.starts_with(":memory:") || rest.contains("mode=memory") {
                return Err(err(
                    "database.url: an in-memory SQLite database is empty for the runner; \
                     give the application's database file",
                ));
            }
            if !rest.starts_with('/') {
                return Ok(format!("sqlite://{}", self.base.join(rest).display()));
            }
            return Ok(format!("sqlite://{rest}"));
        }
        Ok(url)
    }

    /// The root key provider: the current root key first, then the previous
    /// ones, each from its own source (a key file or variable, AWS KMS, or a
    /// PKCS#11 token), checked at start-up.
    pub(crate) async fn provider(
        &self,
    ) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
        let r = &self.root_key;
        let mut chain = ProviderChain::new(self.root_provider("root_key", r).await?);
        for (i, previous) in r.previous.iter().enumerate() {
            let what = format!("root_key.previous[{i}]");
            if !previous.previous.is_empty() {
                return Err(Box::new(err(format!(
                    "{what}.previous: list every previous root key under [root_key] instead"
                ))));
            }
            let provider = self.root_provider(&what, previous).await?;
            chain = chain
                .with_previous_shared(provider)
                .map_err(|e| err(format!("{what}: {e}")))?;
        }
        Ok(Arc::new(chain))
    }

    /// The tenants bound to root keys of their own, each with its provider.
    pub(crate) async fn tenant_providers(
        &self,
    ) -> Result<Vec<(String, Arc<dyn KeyProvider>)>, Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        for (tenant, r) in &self.tenant_root_keys {
            let what = format!("tenant_root_keys.{tenant}");
            if !r.previous.is_empty()
                || r.dir.is_some()
                || r.kms_epochs.is_some()
                || r.pkcs11_epochs.is_some()
            {
                return Err(Box::new(err(format!(
                    "{what}: a tenant's own root key is one key: no `previous`, `dir`, \
                     `kms_epochs` or `pkcs11_epochs`"
                ))));
            }
            let provider = match &r.kms_key {
                Some(arn) => {
                    let others = r.id.is_some()
                        || r.file.is_some()
                        || r.env.is_some()
                        || r.pkcs11_module.is_some()
                        || r.pkcs11_key.is_some()
                        || r.vault_addr.is_some()
                        || r.vault_key.is_some()
                        || r.kms_deletion_window_days.is_some();
                    if others {
                        return Err(Box::new(err(format!(
                            "{what}: `kms_key` (the key's ARN) takes only `kms_region` and \
                             `kms_endpoint` beside it"
                        ))));
                    }
                    tenant_kms_provider(arn, r)
                        .await
                        .map_err(|e| err(format!("{what}: {e}")))?
                }
                // A key its owner deleted or locked must not stop the runner
                // for every tenant: the tenant is served by a provider that
                // refuses, with the reason.
                None => match self.root_provider(&what, r).await {
                    Ok(provider) => provider,
                    Err(e) => {
                        let id = configured_id(r, out.len());
                        eprintln!(
                            "warning: {what}: its root key is unusable ({e}); tenant {tenant}'s \
                             keys are refused as `{id}`"
                        );
                        Arc::new(Unusable {
                            id,
                            reason: e.to_string(),
                        })
                    }
                },
            };
            out.push((tenant.clone(), provider));
        }
        Ok(out)
    }

    async fn root_provider(
        &self,
        what: &str,
        r: &RootKeyConfig,
    ) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
        let fail = |message: String| -> Box<dyn std::error::Error> {
            Box::new(err(format!("{what}: {message}")))
        };
        let local = r.file.is_some() || r.env.is_some() || r.dir.is_some();
        let kms = r.kms_key.is_some() || r.kms_epochs.is_some();
        let pkcs11 =
            r.pkcs11_module.is_some() || r.pkcs11_key.is_some() || r.pkcs11_epochs.is_some();
        let vault = r.vault_addr.is_some() || r.vault_key.is_some();
        match (local, kms, pkcs11, vault) {
            (true, false, false, false) => {
                let Some(id) = &r.id else {
                    return Err(fail("a local root key needs its `id`".into()));
                };
                let key = match (&r.file, &r.env, &r.dir) {
                    (Some(file), None, None) => RootKey::from_file(self.resolve(file)),
                    (None, Some(var), None) => RootKey::from_env(var),
                    (None, None, Some(dir)) => {
                        let provider = LocalKeyProvider::from_dir(self.resolve(dir), id)
                            .map_err(|e| fail(e.to_string()))?;
                        return Ok(Arc::new(provider));
                    }
                    _ => return Err(fail("give one of `file`, `env` or `dir`".into())),
                }
                .map_err(|e| fail(e.to_string()))?;
                let provider = LocalKeyProvider::new(id, key).map_err(|e| fail(e.to_string()))?;
                Ok(Arc::new(provider))
            }
            (false, true, false, false) => {
                if r.id.is_some() {
                    return Err(fail("`id` is the KMS key's ARN; remove `id`".into()));
                }
                kms_provider(r).await.map_err(|e| fail(e.to_string()))
            }
            (false, false, true, false) => {
                if r.id.is_some() {
                    return Err(fail(
                        "`id` is `pkcs11:` and the key's label; remove `id`".into(),
                    ));
                }
                self.pkcs11_provider(r)
                    .await
                    .map_err(|e| fail(e.to_string()))
            }
            (false, false, false, true) => {
                if r.id.is_some() {
                    return Err(fail(
                        "`id` is `transit:<mount>/<key>:v<n>`, one per version; remove `id`".into(),
                    ));
                }
                vault_provider(r).await.map_err(|e| fail(e.to_string()))
            }
            _ => Err(fail(
                "give exactly one key source: `file` or `env` (with `id`), `kms_key`, \
                 `kms_epochs`, `pkcs11_module` with `pkcs11_token` and `pkcs11_key` or \
                 `pkcs11_epochs`, or `vault_addr` with `vault_key`"
                    .into(),
            )),
        }
    }

    #[cfg(feature = "pkcs11")]
    async fn pkcs11_provider(
        &self,
        r: &RootKeyConfig,
    ) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
        let (Some(module), Some(token)) = (&r.pkcs11_module, &r.pkcs11_token) else {
            return Err("a PKCS#11 root key needs `pkcs11_module` and `pkcs11_token`".into());
        };
        let builder =
            fieldseal::provider::Pkcs11Provider::builder(self.resolve(module)).token(token);
        let mut builder = match (&r.pkcs11_key, &r.pkcs11_epochs) {
            (Some(key), None) => builder.key(key),
            (None, Some(name)) => builder.epochs(name),
            _ => return Err("give one of `pkcs11_key` and `pkcs11_epochs`".into()),
        };
        if let Some(var) = &r.pkcs11_pin_env {
            builder = builder.pin_from_env(var);
        }
        Ok(Arc::new(builder.build().await?))
    }

    #[cfg(not(feature = "pkcs11"))]
    async fn pkcs11_provider(
        &self,
        _: &RootKeyConfig,
    ) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
        Err("this runner was built without PKCS#11 support: add `--features pkcs11`".into())
    }

    pub(crate) fn algorithm(&self) -> fieldseal::Algorithm {
        match self.sealer.algorithm {
            Some(Algorithm::Chacha20Poly1305) => fieldseal::Algorithm::ChaCha20Poly1305,
            _ => fieldseal::Algorithm::Aes256Gcm,
        }
    }

    /// The table specifications.
    pub(crate) fn tables(&self) -> Result<Vec<TableSpec>, ConfigError> {
        if self.tables.is_empty() {
            return Err(err(
                "tables: no table is configured (add a [[tables]] section)",
            ));
        }
        self.tables
            .iter()
            .enumerate()
            .map(|(i, t)| t.spec(i))
            .collect()
    }
}

impl Table {
    fn spec(&self, i: usize) -> Result<TableSpec, ConfigError> {
        let path = format!("tables[{i}]");
        let key = match &self.key {
            KeyColumn::One(k) => k.clone(),
            KeyColumn::Many(keys) => {
                return Err(err(format!(
                    "{path}.key: composite primary keys ({}) are not supported: the jobs \
                     address rows by one key column (add a single-column unique key, such as \
                     a UUID, and make it the primary key)",
                    keys.join(", ")
                )));
            }
        };
        let key_type = match self.key_type {
            KeyTypeConfig::Integer => KeyType::Integer,
            KeyTypeConfig::Text => KeyType::Text,
            KeyTypeConfig::Uuid => KeyType::Uuid,
        };
        let mut spec = TableSpec::new(&self.table, key, key_type);
        spec = match (&self.tenant_column, &self.tenant) {
            (Some(c), None) => spec.tenant_column(c),
            (None, Some(t)) => spec.fixed_tenant(t),
            _ => {
                return Err(err(format!(
                    "{path}: give `tenant_column` (each row's tenant is in that column) or \
                     `tenant` (one tenant for the whole table), one of them"
                )));
            }
        };
        for (j, c) in self.columns.iter().enumerate() {
            let table_label = self.table.rsplit('.').next().unwrap_or(&self.table);
            spec = spec.column(c.spec(&format!("{path}.columns[{j}]"), table_label)?);
        }
        Ok(spec)
    }
}

impl Column {
    fn spec(&self, path: &str, table_label: &str) -> Result<ColumnSpec, ConfigError> {
        let form = match self.form {
            Form::Binary => ColumnForm::Binary,
            Form::Text => ColumnForm::Text,
        };
        let mut c = ColumnSpec::new(&self.column, form);
        if let Some(l) = &self.table_label {
            c = c.table_label(l);
        }
        if let Some(l) = &self.column_label {
            c = c.column_label(l);
        }
        match &self.row {
            None | Some(RowConfig::Flag(true)) => {}
            Some(RowConfig::Flag(false)) => c = c.without_row(),
            Some(RowConfig::Column(col)) => c = c.row_from_column(col),
        }
        for (k, e) in self.extras.iter().enumerate() {
            c = match (&e.value, &e.column) {
                (Some(v), None) => c.extra_value(&e.key, v),
                (None, Some(col)) => c.extra_from_column(&e.key, col),
                _ => {
                    return Err(err(format!(
                        "{path}.extras[{k}]: give the extra's `value` or its `column`, one of them"
                    )));
                }
            };
        }
        match (&self.migrate_from, self.migrate_in_place) {
            (Some(_), true) => {
                return Err(err(format!(
                    "{path}: `migrate_from` and `migrate_in_place` exclude each other"
                )));
            }
            (Some(source), false) => c = c.migrate_from(source),
            (None, true) => c = c.migrate_in_place(),
            (None, false) => {}
        }
        for (k, index) in self.indexes.iter().enumerate() {
            let normalizer = match index.normalizer {
                NormalizerConfig::Exact => Normalizer::exact(),
                NormalizerConfig::Trim => Normalizer::trim(),
                NormalizerConfig::Casefold => Normalizer::case_fold(),
                NormalizerConfig::Email => Normalizer::email(),
            };
            let mut b = BlindIndex::builder(
                self.table_label.as_deref().unwrap_or(table_label),
                self.column_label.as_deref().unwrap_or(&self.column),
                &index.name,
            )
            .normalizer(normalizer);
            if let Some(len) = index.len {
                b = b.len(len);
            }
            let built = b
                .build()
                .map_err(|e| err(format!("{path}.indexes[{k}]: {e}")))?;
            c = c.blind_index(&index.column, built);
        }
        Ok(c)
    }
}

#[cfg(feature = "vault-transit")]
async fn vault_provider(
    r: &RootKeyConfig,
) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
    let (Some(addr), Some(key)) = (&r.vault_addr, &r.vault_key) else {
        return Err("a Vault Transit root key needs `vault_addr` and `vault_key`".into());
    };
    let var = r.vault_token_env.as_deref().unwrap_or("VAULT_TOKEN");
    let token = std::env::var(var).map_err(|_| {
        format!("the Vault token: set the environment variable {var} (`vault_token_env`)")
    })?;
    let mut builder = fieldseal::provider::VaultTransitProvider::builder(addr, key)
        .token(fieldseal::secrecy::SecretString::from(token));
    if let Some(mount) = &r.vault_mount {
        builder = builder.mount(mount);
    }
    Ok(Arc::new(builder.build().await?))
}

#[cfg(not(feature = "vault-transit"))]
async fn vault_provider(
    _: &RootKeyConfig,
) -> Result<Arc<dyn KeyProvider>, Box<dyn std::error::Error>> {
    Err(
        "this runner was built without Vault Transit support: add `--features vault-transit`"
            .into(),
    )
}

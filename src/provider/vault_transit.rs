//! The HashiCorp Vault / OpenBao Transit root key provider, over Transit's
//! HTTP API.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use super::{KeyProvider, WrapContext, WrappedKey, check_root_key_id};
use crate::error::{Error, Result};
use crate::secret::TenantKey;

/// The default time one Transit call may take.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Root keys in a HashiCorp Vault or OpenBao Transit secrets engine: tenant
/// keys are wrapped by Transit's `encrypt` and unwrapped by its `decrypt`
/// under a named Transit key, which never leaves Vault.
///
/// Every call carries the [`WrapContext`]'s associated data
/// ([`WrapContext::aad`]) as Transit's `associated_data`, so a wrapped key
/// copied to another tenant's, version's or key store's record does not
/// decrypt. The Transit key must be of type `aes256-gcm96` (the default).
///
/// ```no_run
/// # async fn run() -> Result<(), fieldseal::Error> {
/// use fieldseal::{MemoryKeyStore, Sealer, provider::VaultTransitProvider};
/// use fieldseal::secrecy::SecretString;
///
/// let token = SecretString::from(std::env::var("VAULT_TOKEN").unwrap_or_default());
/// let provider = VaultTransitProvider::builder("https://vault.internal:8200", "fieldseal-root")
///     .mount("transit")
///     .token(token)
///     .build()
///     .await?;
/// let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
/// # let _ = sealer;
/// # Ok(()) }
/// ```
///
/// **Key versions are root keys.** Transit keeps versions of a key: `rotate`
/// adds one, which then encrypts; older ones still decrypt down to the key's
/// `min_decryption_version`, and `trim` deletes those below it for good. Each
/// version is a root key of its own here, with the id
/// `transit:<mount>/<key>:v<n>`, stored beside every tenant key it wrapped:
/// [`build`](VaultTransitProviderBuilder::build) reads the key's versions,
/// the newest wraps, and every one Vault still decrypts with unwraps. After a
/// rotation in Vault, build a provider again (or restart) and run
/// [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all) to move every tenant
/// key to the new version; then raising `min_decryption_version` and
/// trimming destroys the old one, and with it every tenant key only it
/// wrapped, in every backup of the database too.
///
/// **Calls.** One `encrypt` per tenant key created or re-wrapped, one
/// `decrypt` per cache miss; never one per sealed value.
///
/// **Permissions.** `read` on `<mount>/keys/<key>`, `update` on
/// `<mount>/encrypt/<key>` and `<mount>/decrypt/<key>`; for root-key epochs
/// ([`KeyAdmin::create_root_key`](crate::KeyAdmin::create_root_key),
/// [`KeyAdmin::retire_root_keys`](crate::KeyAdmin::retire_root_keys)) also
/// `update` on `<mount>/keys/<key>/rotate`, `<mount>/keys/<key>/config` and
/// `<mount>/keys/<key>/trim`. Give each key store its own Transit key: a
/// version retired for one store would be destroyed under the others. If a
/// destruction stops between raising the minimum versions and the trim, the
/// version no longer decrypts but is not yet deleted: trim it by hand
/// (`min_available_version` = the key's `min_decryption_version`).
///
/// # Security
///
/// The Transit key stays in Vault. A tenant key is in this process's memory
/// while it is cached (zeroized on eviction); the base64 of each `encrypt`
/// request and `decrypt` response passes through the HTTP client's buffers,
/// which fieldseal cannot zeroize. The token is kept as a secret and never
/// printed. Use `https://` anywhere but loopback: the builder refuses plain
/// HTTP to any other host.
pub struct VaultTransitProvider {
    client: reqwest::Client,
    address: String,
    token: SecretString,
    namespace: Option<String>,
    mount: String,
    key: String,
    /// Versions Vault decrypts with, newest first.
    versions: Vec<u32>,
    /// Their root key ids, in the same order.
    ids: Vec<String>,
}

/// Configures a [`VaultTransitProvider`]; made by
/// [`VaultTransitProvider::builder`].
#[must_use = "call `build().await` to get a provider"]
pub struct VaultTransitProviderBuilder {
    address: String,
    key: String,
    mount: String,
    token: Option<SecretString>,
    namespace: Option<String>,
    timeout: Duration,
    ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for VaultTransitProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultTransitProviderBuilder")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl VaultTransitProvider {
    /// Starts configuring a provider on the Vault (or OpenBao) server at
    /// `address` (`https://vault.internal:8200`), whose root keys are the
    /// versions of Transit key `key`.
    pub fn builder(
        address: impl Into<String>,
        key: impl Into<String>,
    ) -> VaultTransitProviderBuilder {
        VaultTransitProviderBuilder {
            address: address.into(),
            key: key.into(),
            mount: "transit".into(),
            token: None,
            namespace: None,
            timeout: DEFAULT_TIMEOUT,
            ca_pem: None,
        }
    }

    /// The root key id of version `version`: `transit:<mount>/<key>:v<n>`.
    fn id_of(&self, version: u32) -> String {
        format!("transit:{}/{}:v{version}", self.mount, self.key)
    }

    /// The version a root key id of this provider names.
    fn version_of(&self, id: &str) -> Option<u32> {
        let prefix = format!("transit:{}/{}:v", self.mount, self.key);
        let version: u32 = id.strip_prefix(&prefix)?.parse().ok()?;
        self.versions.contains(&version).then_some(version)
    }

    fn url(&self, action: &str) -> String {
        format!(
            "{}/v1/{}/{action}/{}",
            self.address.trim_end_matches('/'),
            self.mount,
            self.key
        )
    }

    async fn call(
        &self,
        action: &str,
        body: Option<Zeroizing<String>>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.call_url(self.url(action), action, body).await
    }

    /// A call on the key itself: `keys/<key>` followed by `suffix`
    /// (`/rotate`, `/config`, `/trim`).
    async fn call_key(&self, suffix: &str, body: Zeroizing<String>) -> Result<Zeroizing<Vec<u8>>> {
        let url = format!(
            "{}/v1/{}/keys/{}{suffix}",
            self.address.trim_end_matches('/'),
            self.mount,
            self.key
        );
        self.call_url(url, suffix.trim_start_matches('/'), Some(body))
            .await
    }

    async fn call_url(
        &self,
        url: String,
        action: &str,
        body: Option<Zeroizing<String>>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut request = match &body {
            Some(_) => self.client.post(url),
            None => self.client.get(url),
        }
        .header("X-Vault-Token", self.token.expose_secret());
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.as_bytes().to_vec());
        }
        let what = format!("Vault Transit {action} on key `{}`", self.key);
        let response = request
            .send()
            .await
            .map_err(|e| Error::provider(format!("{what}: the request failed"), without_url(e)))?;
        let status = response.status();
        let body = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|e| {
                    Error::provider(format!("{what}: reading the reply failed"), without_url(e))
                })?
                .to_vec(),
        );
        if status.is_success() {
            return Ok(body);
        }
        Err(Error::Provider {
            message: format!(
                "{what} failed with HTTP {}: {}",
                status.as_u16(),
                vault_errors(&body)
            ),
            source: None,
        })
    }
}

fn provider_error(message: impl Into<String>) -> Error {
    Error::Provider {
        message: message.into(),
        source: None,
    }
}

/// A reqwest error without the URL (which holds no secret, but the error's
/// causes are printed in full elsewhere; keep them short).
fn without_url(e: reqwest::Error) -> reqwest::Error {
    e.without_url()
}

/// Whether a Transit refusal is about the key's state (deleted, or the
/// version below its minimum decryption version), not about the ciphertext.
fn key_state_refusal(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["key not found", "disallowed by policy", "too old"]
        .iter()
        .any(|m| message.contains(m))
}

/// The `errors` of a Vault error reply, joined; never the reply itself.
fn vault_errors(body: &[u8]) -> String {
    let parsed: Option<Vec<String>> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errors")?.as_array().map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e.as_str())
                    // Vault's messages name paths and causes; cut them short.
                    .map(|e| e.chars().take(200).collect())
                    .collect()
            })
        });
    match parsed {
        Some(errors) if !errors.is_empty() => errors.join("; "),
        _ => "no error message".into(),
    }
}

/// The string at `"field":"…"` of `data` in a Transit reply, without
/// copying it into a JSON value that would not be zeroized.
fn data_field<'a>(body: &'a [u8], field: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(body).ok()?;
    let data = text.find("\"data\"")?;
    let key = format!("\"{field}\"");
    let at = data + text.get(data..)?.find(&key)? + key.len();
    let rest = text.get(at..)?.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    rest.get(..end)
}

impl VaultTransitProviderBuilder {
    /// The Transit secrets engine's mount path (default `transit`).
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into().trim_matches('/').to_string();
        self
    }

    /// The Vault token (from your auth method: AppRole, Kubernetes, …).
    pub fn token(mut self, token: SecretString) -> Self {
        self.token = Some(token);
        self
    }

    /// A Vault Enterprise or OpenBao namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// How long one call may take (default 10 seconds).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A CA certificate (PEM) that Vault's TLS certificate is checked
    /// against, in addition to the system's.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Connects: reads the Transit key (it must exist and be of type
    /// `aes256-gcm96`), its versions Vault still decrypts with, and checks
    /// that an `encrypt` and `decrypt` round trip works with this token.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a missing token, a plain `http://` address to a
    /// host other than loopback, names that make an invalid root key id, or a
    /// Transit key of another type; [`Error::Provider`] if Vault cannot be
    /// reached, refuses the token, or has no such key.
    pub async fn build(self) -> Result<VaultTransitProvider> {
        let token = self
            .token
            .ok_or_else(|| Error::config("Vault Transit: give the Vault token with `token`"))?;
        let address = self.address.trim_end_matches('/').to_string();
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| {
                address
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
            });
        if !address.starts_with("https://") && !loopback {
            return Err(Error::config(format!(
                "Vault Transit address `{address}`: use https:// (plain http:// only to \
                 loopback, for tests)"
            )));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        };
        if !name_ok(&self.mount) || !name_ok(&self.key) || self.key.contains('/') {
            return Err(Error::config(
                "Vault Transit mount and key names: ASCII letters, digits, `-`, `_` and `.` \
                 (and `/` in the mount)",
            ));
        }
        check_root_key_id(&format!("transit:{}/{}:v1", self.mount, self.key))?;
        let mut client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout);
        if let Some(pem) = &self.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| {
                Error::config(format!("Vault Transit CA certificate: not PEM ({e})"))
            })?;
            client = client.add_root_certificate(cert);
        }
        let client = client
            .build()
            .map_err(|e| Error::provider("Vault Transit: building the HTTP client failed", e))?;
        let mut provider = VaultTransitProvider {
            client,
            address,
            token,
            namespace: self.namespace,
            mount: self.mount,
            key: self.key,
            versions: Vec::new(),
            ids: Vec::new(),
        };
        provider.versions = provider.read_versions().await?;
        provider.ids = provider
            .versions
            .iter()
            .map(|v| provider.id_of(*v))
            .collect();
        // A round trip with this token, before any tenant relies on it.
        let probe = TenantKey::generate()?;
        let ctx = WrapContext::tenant_key("fieldseal-provider-check", 1);
        let wrapped = provider.wrap(&probe, &ctx).await?;
        let back = provider.unwrap(&wrapped, &ctx).await?;
        if back.expose_secret() != probe.expose_secret() {
            return Err(provider_error(
                "Vault Transit: a key wrapped and unwrapped came back different",
            ));
        }
        Ok(provider)
    }
}

impl VaultTransitProvider {
    /// The key's description (`GET keys/<key>`).
    async fn describe_key(&self) -> Result<serde_json::Value> {
        let body = self.call("keys", None).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::provider("Vault Transit: the key's description is not JSON", e))
    }

    /// The key's versions Vault decrypts with, newest first.
    async fn read_versions(&self) -> Result<Vec<u32>> {
        let info = self.describe_key().await?;
        let field = |name: &str| info.get("data").and_then(|d| d.get(name));
        let ty = field("type").and_then(|t| t.as_str()).unwrap_or_default();
        if ty != "aes256-gcm96" {
            return Err(Error::config(format!(
                "Vault Transit key `{}` is of type `{ty}`; fieldseal needs `aes256-gcm96` \
                 (it binds each wrap to its context as associated data)",
                self.key
            )));
        }
        let min = field("min_decryption_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1);
        let latest = field("latest_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let mut versions: Vec<u32> = field("keys")
            .and_then(serde_json::Value::as_object)
            .map(|keys| {
                keys.keys()
                    .filter_map(|v| v.parse::<u32>().ok())
                    .filter(|v| u64::from(*v) >= min && u64::from(*v) <= latest)
                    .collect()
            })
            .unwrap_or_default();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        if versions.first().map(|v| u64::from(*v)) != Some(latest) || latest == 0 {
            return Err(provider_error(format!(
                "Vault Transit key `{}`: its description names no usable latest version",
                self.key
            )));
        }
        Ok(versions)
    }
}

impl fmt::Debug for VaultTransitProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultTransitProvider")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .field("root_key_ids", &self.root_key_ids())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeyProvider for VaultTransitProvider {
    fn current_root_key_id(&self) -> &str {
        self.ids.first().map_or("", String::as_str)
    }

    /// Every version of the Transit key is this store's: a Transit key
    /// serves one key store.
    fn root_keys_exclusive(&self) -> bool {
        true
    }

    fn root_key_ids(&self) -> Vec<&str> {
        self.ids.iter().map(String::as_str).collect()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey> {
        let version = self.versions.first().copied().unwrap_or(1);
        let body = Zeroizing::new(
            serde_json::json!({
                "plaintext": STANDARD.encode(key.expose_secret()),
                "associated_data": STANDARD.encode(ctx.aad()),
                "key_version": version,
            })
            .to_string(),
        );
        let reply = self.call("encrypt", Some(body)).await?;
        let ciphertext = data_field(&reply, "ciphertext")
            .ok_or_else(|| provider_error("Vault Transit encrypt: the reply has no ciphertext"))?;
        if !ciphertext.starts_with(&format!("vault:v{version}:")) {
            return Err(provider_error(
                "Vault Transit encrypt: the ciphertext names another key version than asked",
            ));
        }
        Ok(WrappedKey::new(
            self.id_of(version),
            ciphertext.as_bytes().to_vec(),
        ))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey> {
        let Some(version) = self.version_of(wrapped.root_key_id()) else {
            return Err(Error::RootKeyNotConfigured {
                id: wrapped.root_key_id().to_string(),
            });
        };
        let failed = || Error::UnwrapFailed {
            subject: ctx.describe(),
            root_key_id: wrapped.root_key_id().to_string(),
        };
        // The ciphertext must be of the version its root key id names.
        let ciphertext = std::str::from_utf8(wrapped.as_bytes()).map_err(|_| failed())?;
        if !ciphertext.starts_with(&format!("vault:v{version}:"))
            || ciphertext.contains(['"', '\\'])
        {
            return Err(failed());
        }
        let body = Zeroizing::new(
            serde_json::json!({
                "ciphertext": ciphertext,
                "associated_data": STANDARD.encode(ctx.aad()),
            })
            .to_string(),
        );
        let reply = match self.call("decrypt", Some(body)).await {
            Ok(reply) => reply,
            // Vault answers 400 to a ciphertext that does not authenticate;
            // also to a key that is gone or a version below the key's
            // minimum decryption version, which are the key's state, not
            // the record's (a tenant's own key revoked by its owner).
            Err(Error::Provider { message, .. })
                if message.contains("HTTP 400") && !key_state_refusal(&message) =>
            {
                return Err(failed());
            }
            Err(e) => return Err(e),
        };
        let plaintext = data_field(&reply, "plaintext").ok_or_else(failed)?;
        let bytes = Zeroizing::new(STANDARD.decode(plaintext).map_err(|_| failed())?);
        TenantKey::from_slice(&bytes).map_err(|_| failed())
    }

    /// Rotates the Transit key (`keys/<key>/rotate`): its new version is the
    /// new epoch's root key.
    async fn create_root_key(&self) -> Result<String> {
        self.call_key("/rotate", Zeroizing::new("{}".into()))
            .await?;
        let latest = self.read_versions().await?;
        latest
            .first()
            .map(|v| self.id_of(*v))
            .ok_or_else(|| provider_error("Vault Transit: no latest version after rotating"))
    }

    /// Raises the key's `min_decryption_version` (and `min_encryption_version`)
    /// past the version and trims it away (`keys/<key>/trim`): Vault deletes
    /// it for good. Only the oldest version Vault still holds: older ones go
    /// first, so each destruction takes exactly one root key.
    async fn destroy_root_key(&self, id: &str) -> Result<crate::Timestamp> {
        let Some(version) = self.version_of(id) else {
            return Err(Error::refused(format!(
                "root key `{id}` is not a version of Transit key `{}` that this provider holds",
                self.key
            )));
        };
        let info = self.describe_key().await?;
        let field = |name: &str| {
            info.get("data")
                .and_then(|d| d.get(name))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let latest = field("latest_version");
        let v = u64::from(version);
        if v >= latest {
            return Err(Error::refused(format!(
                "root key `{id}` is the current version of Transit key `{}`: it is never \
                 destroyed",
                self.key
            )));
        }
        let oldest = field("min_available_version").max(1);
        if oldest > v {
            // Trimmed already (by another process, or by hand).
            return Ok(crate::Timestamp::now());
        }
        if oldest < v {
            return Err(Error::refused(format!(
                "Transit key `{}` still holds versions older than root key `{id}`: destroy \
                 `{}` first (a trim takes every older version with it)",
                self.key,
                self.id_of(u32::try_from(oldest).unwrap_or(u32::MAX))
            )));
        }
        let keep = v + 1;
        let config = serde_json::json!({
            "min_decryption_version": field("min_decryption_version").max(keep),
            "min_encryption_version": field("min_encryption_version").max(keep),
        });
        self.call_key("/config", Zeroizing::new(config.to_string()))
            .await?;
        let trim = serde_json::json!({ "min_available_version": keep });
        self.call_key("/trim", Zeroizing::new(trim.to_string()))
            .await?;
        Ok(crate::Timestamp::now())
    }
}

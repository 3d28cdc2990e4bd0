//! The AWS KMS root key provider, on the official AWS SDK.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType};
use zeroize::Zeroizing;

use super::{KeyProvider, WrapContext, WrappedKey, check_root_key_id};
use crate::error::{Error, Result};
use crate::secret::TenantKey;

/// The default time an AWS KMS call may take, retries included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of attempts per call (the first and two retries).
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The default waiting period of a scheduled key deletion: KMS's shortest.
const DEFAULT_DELETION_WINDOW_DAYS: i32 = 7;

/// Root keys in AWS KMS: tenant keys are wrapped by `Encrypt` and unwrapped by
/// `Decrypt` under a symmetric KMS key, and the root key never leaves KMS.
///
/// Every call carries the [`WrapContext`] as the KMS *encryption context*
/// (`fieldseal:purpose`, `fieldseal:tenant`, `fieldseal:version`), so a
/// wrapped key copied to another tenant's or version's record does not
/// decrypt, and the CloudTrail entry of each call names the tenant it served.
///
/// ```no_run
/// # async fn run() -> Result<(), fieldseal::Error> {
/// use fieldseal::{MemoryKeyStore, Sealer, provider::AwsKmsProvider};
///
/// let provider = AwsKmsProvider::builder("alias/fieldseal-root")
///     // Still unwraps tenant keys wrapped before the move to the new key.
///     .previous("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
///     .region("eu-west-1")
///     .build()
///     .await?;
/// let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
/// # let _ = sealer;
/// # Ok(()) }
/// ```
///
/// **Keys.** Give each key as a key id, key ARN or alias (`alias/name` or its
/// ARN). [`build`](AwsKmsProviderBuilder::build) resolves each to its key ARN
/// with `DescribeKey` and checks that it exists, is enabled and is a symmetric
/// encryption key; the ARN is the root key id stored beside every wrapped key,
/// so moving an alias to another key later does not change which key unwraps
/// what. After moving an alias, configure the old key with
/// [`previous`](AwsKmsProviderBuilder::previous) and run
/// [`KeyAdmin::rewrap_all`](crate::KeyAdmin::rewrap_all); KMS's own automatic
/// key rotation needs none of this (the ARN stays the same).
///
/// **Calls.** One `Encrypt` per tenant key created or re-wrapped, one `Decrypt`
/// per cache miss; never one per sealed value. fieldseal generates tenant keys
/// itself and calls `Encrypt` rather than `GenerateDataKey`: both are one call,
/// and `Encrypt` also serves re-wrapping under a new root key.
///
/// **Permissions.** `kms:DescribeKey` on every configured key, `kms:Encrypt`
/// on the current key and `kms:Decrypt` on every key. A key policy can require
/// the encryption context with the `kms:EncryptionContextKeys` condition.
///
/// **Credentials and retries.** Credentials come from the AWS SDK's default
/// chain (environment, profile, web identity, container or instance role) or
/// from an [`SdkConfig`](aws_config::SdkConfig) you load yourself. Throttled
/// and transient failures are retried by the SDK's standard retry strategy
/// (exponential backoff with jitter), and every call, retries included, ends
/// within [`timeout`](AwsKmsProviderBuilder::timeout).
///
/// # Security
///
/// The root key stays in KMS. A tenant key is in this process's memory while
/// it is cached (zeroized on eviction), and the plaintext of each `Encrypt`
/// request and `Decrypt` response passes through the AWS SDK's buffers, which
/// fieldseal cannot zeroize. Errors name keys, actions and tenants, never key
/// material.
pub struct AwsKmsProvider {
    client: aws_sdk_kms::Client,
    /// Key ARNs, the current one first, with the name each was configured by.
    keys: Vec<KmsKey>,
    /// With [`AwsKmsProvider::epochs`]: the name of the epoch aliases.
    epochs: Option<String>,
    deletion_window_days: i32,
    region: String,
    timeout: Duration,
    max_attempts: u32,
}

struct KmsKey {
    configured: String,
    arn: String,
    /// The epoch whose alias (`alias/<name>-e<N>`) names the key.
    epoch: Option<u32>,
}

/// Configures an [`AwsKmsProvider`]; made by [`AwsKmsProvider::builder`].
#[must_use = "call `build().await` to get a provider"]
pub struct AwsKmsProviderBuilder {
    current: String,
    epochs: bool,
    /// A tenant's own key: not described when built.
    tenant_key: bool,
    deletion_window_days: i32,
    previous: Vec<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    sdk_config: Option<aws_config::SdkConfig>,
    timeout: Duration,
    max_attempts: u32,
}

impl AwsKmsProvider {
    /// Starts configuring a provider whose current root key is the KMS key
    /// `key` (a key id, key ARN, alias name or alias ARN).
    pub fn builder(key: impl Into<String>) -> AwsKmsProviderBuilder {
        AwsKmsProviderBuilder {
            current: key.into(),
            epochs: false,
            tenant_key: false,
            deletion_window_days: DEFAULT_DELETION_WINDOW_DAYS,
            previous: Vec::new(),
            region: None,
            endpoint_url: None,
            sdk_config: None,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Starts configuring a provider whose root keys are one KMS key per
    /// epoch, each named by the alias `alias/<name>-e<N>` (`N` from 1):
    /// [`build`](AwsKmsProviderBuilder::build) finds them with
    /// `ListAliases`, makes the highest `N` current and unwraps with the
    /// others. [`KeyProvider::create_root_key`] creates the next epoch's key
    /// and its alias; [`KeyProvider::destroy_root_key`] schedules an older
    /// one's deletion and removes its alias.
    ///
    /// Create the first epoch by hand: `aws kms create-key`, then `aws kms
    /// create-alias --alias-name alias/<name>-e1 --target-key-id <key id>`.
    /// Each next key gets the current key's key policy and the tag
    /// `fieldseal:epochs` = `name`.
    ///
    /// **Permissions**, beyond those of [`builder`](Self::builder):
    /// `kms:ListAliases`, and `kms:Encrypt`, `kms:Decrypt` and
    /// `kms:DescribeKey` on keys that do not exist yet (a `kms:ResourceAliases`
    /// condition on `alias/<name>-e*` grants them); for the runner's
    /// `rotate-root`, `kms:GetKeyPolicy`, `kms:CreateKey`, `kms:TagResource`
    /// and `kms:CreateAlias` (on the alias and the key); for `retire-root`,
    /// `kms:ScheduleKeyDeletion` and `kms:DeleteAlias`. Give only the runner
    /// the last two groups.
    ///
    /// # Security
    ///
    /// Aliases are shared by the whole account and region: give each key
    /// store its own `name`, make the first key new and for this store only,
    /// and let nobody else create aliases `alias/<name>-e<N>`. A key named so
    /// becomes current at the next start. [`KeyAdmin::retire_root_keys`]
    /// destroys only root keys this store's audit log names.
    ///
    /// [`KeyAdmin::retire_root_keys`]: crate::KeyAdmin::retire_root_keys
    pub fn epochs(name: impl Into<String>) -> AwsKmsProviderBuilder {
        let mut builder = Self::builder(name);
        builder.epochs = true;
        builder
    }

    /// Starts configuring a provider for a tenant's own KMS key ("bring your
    /// own key", for [`SealerBuilder::tenant_root_key`]): `arn` is the key's
    /// ARN (`arn:aws:kms:<region>:<account>:key/<id>`), which becomes its
    /// root key id, in its region unless
    /// [`region`](AwsKmsProviderBuilder::region) says otherwise.
    ///
    /// Unlike [`builder`](Self::builder),
    /// [`build`](AwsKmsProviderBuilder::build) does not call KMS: the key
    /// belongs to the tenant, who may have disabled it, withdrawn this
    /// process's access or scheduled its deletion, and that must stop only
    /// the tenant's values (with
    /// [`Error::TenantRootKeyUnavailable`](crate::Error::TenantRootKeyUnavailable)),
    /// never a process from starting. Nor does a process with many such
    /// tenants make a call per tenant to start. A wrong ARN shows at the
    /// tenant's first wrap or unwrap.
    ///
    /// **Permissions**: `kms:Encrypt` and `kms:Decrypt` on the key, granted
    /// by the tenant in its key policy (or a grant) to the identity this
    /// process runs as, for its account if the key is in another.
    ///
    /// [`SealerBuilder::tenant_root_key`]: crate::SealerBuilder::tenant_root_key
    pub fn tenant_key(arn: impl Into<String>) -> AwsKmsProviderBuilder {
        let mut builder = Self::builder(arn);
        builder.tenant_key = true;
        builder.region = arn_region(&builder.current).map(str::to_string);
        builder
    }

    fn held(&self, root_key_id: &str) -> Option<&KmsKey> {
        self.keys.iter().find(|key| key.arn == root_key_id)
    }

    /// The error for a failed call: what failed, on which key, and what to do.
    fn call_error<E>(
        &self,
        action: &'static str,
        key: &str,
        subject: Option<(&WrapContext<'_>, &str)>,
        err: SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let region = &self.region;
        let message = match &err {
            SdkError::TimeoutError(_) => format!(
                "AWS KMS {action} on key `{key}` did not finish within {:?} (retries \
                 included): check the network path to KMS in region {region}, or raise \
                 `AwsKmsProviderBuilder::timeout`",
                self.timeout
            ),
            SdkError::DispatchFailure(failure) if failure.is_timeout() => format!(
                "AWS KMS {action} on key `{key}` timed out connecting to KMS in region \
                 {region}: check the endpoint and the network path"
            ),
            SdkError::DispatchFailure(failure) if failure.is_io() => format!(
                "could not reach AWS KMS in region {region} for {action} on key `{key}` \
                 (connection failed): check the endpoint URL, proxy and network ({})",
                DisplayErrorContext(&err)
            ),
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => format!(
                "could not send AWS KMS {action} on key `{key}`: {} (check the AWS \
                 credentials and region this process is configured with)",
                DisplayErrorContext(&err)
            ),
            SdkError::ServiceError(_) if err.code().is_none() => format!(
                "AWS KMS {action} on key `{key}` failed: the reply could not be read as a KMS \
                 reply (check that the endpoint is AWS KMS)"
            ),
            SdkError::ServiceError(_) => {
                let code = err.code().unwrap_or("unknown");
                let detail = err.message().unwrap_or("no message");
                match code {
                    "AccessDeniedException" => format!(
                        "AWS KMS denied kms:{action} on key `{key}`: allow kms:{action} on this \
                         key for the identity this process runs as (key policy or IAM \
                         policy; the encryption context keys are fieldseal:purpose, \
                         fieldseal:tenant and fieldseal:version) — {detail}"
                    ),
                    "AlreadyExistsException" => format!(
                        "AWS KMS {action} on `{key}` failed: it already exists (another process \
                         made it at the same moment): run again — {detail}"
                    ),
                    "NotFoundException" => format!(
                        "AWS KMS key `{key}` was not found in region {region}: check the key \
                         id, ARN or alias, the region and the account — {detail}"
                    ),
                    "DisabledException" => format!(
                        "AWS KMS key `{key}` is disabled, so {action} was refused: enable it \
                         (`aws kms enable-key`), or make another key current"
                    ),
                    "KMSInvalidStateException" if self.epochs.is_some() => format!(
                        "AWS KMS key `{key}` cannot be used for {action} in its current state \
                         (pending deletion, most likely retired by retire-root): restart this \
                         process so that it loads the current epoch's key; cancel the deletion \
                         (`aws kms cancel-key-deletion`, then enable the key) only if keys are \
                         still wrapped under it, and run retire-root again afterwards — {detail}"
                    ),
                    "KMSInvalidStateException" => format!(
                        "AWS KMS key `{key}` cannot be used for {action} in its current state \
                         (pending deletion, pending import or unavailable): cancel a \
                         scheduled deletion with `aws kms cancel-key-deletion` — {detail}"
                    ),
                    "InvalidCiphertextException" | "IncorrectKeyException" => {
                        if let Some((ctx, root_key_id)) = subject {
                            return Error::UnwrapFailed {
                                subject: ctx.describe(),
                                root_key_id: root_key_id.to_string(),
                            };
                        }
                        format!("AWS KMS refused {action} on key `{key}`: {code}: {detail}")
                    }
                    "ThrottlingException" | "LimitExceededException" => format!(
                        "AWS KMS throttled {action} on key `{key}` and it still failed after \
                         {} attempts with backoff: raise the account's KMS request quota, \
                         make fewer calls (a larger `SealerBuilder::cache_ttl` and \
                         `cache_capacity`), or allow more attempts",
                        self.max_attempts
                    ),
                    "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "ExpiredTokenException"
                    | "InvalidClientTokenId"
                    | "IncompleteSignature" => format!(
                        "AWS rejected this process's credentials for kms:{action} ({code}): \
                         check the credentials the AWS SDK found (environment, profile or \
                         role) and the system clock"
                    ),
                    "KMSInternalException"
                    | "DependencyTimeoutException"
                    | "KeyUnavailableException" => format!(
                        "AWS KMS could not serve {action} on key `{key}` right now ({code}) \
                         after {} attempts: retry later",
                        self.max_attempts
                    ),
                    _ => format!("AWS KMS {action} on key `{key}` failed: {code}: {detail}"),
                }
            }
            _ => format!(
                "AWS KMS {action} on key `{key}` failed: {}",
                DisplayErrorContext(&err)
            ),
        };
        // Keep only the cause, never the raw HTTP response: a response that
        // failed to parse may be a Decrypt reply whose body holds the key.
        match err.into_source() {
            Ok(source) => Error::provider(message, source),
            Err(_) => Error::Provider {
                message,
                source: None,
            },
        }
    }
}

impl AwsKmsProviderBuilder {
    /// Adds a previous root key: it still unwraps tenant keys wrapped under it,
    /// but never wraps.
    pub fn previous(mut self, key: impl Into<String>) -> Self {
        self.previous.push(key.into());
        self
    }

    /// The AWS region of the keys (default: the SDK's region chain, such as
    /// `AWS_REGION` or the profile's region).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends requests to this endpoint instead of the region's (a VPC endpoint,
    /// or a local emulator in tests).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Uses an AWS SDK configuration the application has already loaded (its
    /// credentials, region and HTTP client) instead of loading the default one.
    /// [`region`](Self::region), [`endpoint_url`](Self::endpoint_url),
    /// [`timeout`](Self::timeout) and [`max_attempts`](Self::max_attempts)
    /// still apply on top of it.
    pub fn sdk_config(mut self, config: &aws_config::SdkConfig) -> Self {
        self.sdk_config = Some(config.clone());
        self
    }

    /// The longest one KMS call may take, retries and backoff included
    /// (default 10 s). A call that takes longer fails with an error that says so.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a call is attempted when KMS throttles it or fails
    /// transiently (default 3; at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// With [`AwsKmsProvider::epochs`]: the waiting period, in days (7 to
    /// 30; default 7, KMS's shortest), of the deletions that
    /// [`KeyProvider::destroy_root_key`] schedules. Until it ends KMS can
    /// still cancel a deletion, so it counts in the erasure bound
    /// (OPERATIONS.md §"Erasure through backups").
    pub fn deletion_window_days(mut self, days: u8) -> Self {
        self.deletion_window_days = i32::from(days);
        self
    }

    /// Loads the AWS configuration and checks every configured key with
    /// `DescribeKey` (a tenant's own key, [`AwsKmsProvider::tenant_key`],
    /// is not checked: no call is made).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a tenant's own key is not given as a key ARN, or
    /// with previous keys; if no region is configured, a key id is not a valid
    /// root key id, a key is disabled, pending deletion, not a symmetric
    /// encryption key, or configured twice; [`Error::Provider`] if KMS cannot
    /// be reached, denies `DescribeKey`, or does not know a key (each message
    /// names the key and what to fix).
    pub async fn build(self) -> Result<AwsKmsProvider> {
        let sdk_config = match self.sdk_config {
            Some(config) => config,
            // A region given (or a tenant key's, from its ARN) is not looked
            // up again.
            None => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &self.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                loader.load().await
            }
        };
        let mut config = aws_sdk_kms::config::Builder::from(&sdk_config);
        if sdk_config.behavior_version().is_none() {
            config = config.behavior_version(BehaviorVersion::latest());
        }
        let mut config = config
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(self.timeout)
                    .connect_timeout(self.timeout.min(Duration::from_secs(3)))
                    .build(),
            );
        if let Some(region) = &self.region {
            config = config.region(Region::new(region.clone()));
        }
        if let Some(url) = &self.endpoint_url {
            config = config.endpoint_url(url.clone());
        }
        let config = config.build();
        let Some(region) = config.region().map(|r| r.to_string()) else {
            return Err(Error::config(
                "no AWS region for the KMS provider: set AWS_REGION (or a profile's region), \
                 or call `AwsKmsProviderBuilder::region`",
            ));
        };
        if !(7..=30).contains(&self.deletion_window_days) {
            return Err(Error::config(format!(
                "the AWS KMS deletion window is {} days: KMS takes 7 to 30",
                self.deletion_window_days
            )));
        }
        let mut provider = AwsKmsProvider {
            client: aws_sdk_kms::Client::from_conf(config),
            keys: Vec::new(),
            epochs: None,
            deletion_window_days: self.deletion_window_days,
            region,
            timeout: self.timeout,
            max_attempts: self.max_attempts,
        };
        if self.tenant_key {
            let arn = self.current;
            check_root_key_id(&arn)?;
            if !is_key_arn(&arn) || !self.previous.is_empty() {
                return Err(Error::config(format!(
                    "`{arn}` is not an AWS KMS key ARN (arn:aws:kms:<region>:<account>:key/\
                     <id>): a tenant's own key is configured by its ARN alone"
                )));
            }
            provider.keys.push(KmsKey {
                configured: arn.clone(),
                arn,
                epoch: None,
            });
            return Ok(provider);
        }
        let mut configured = Vec::new();
        if self.epochs {
            configured = provider.epoch_keys(&self.current).await?;
            provider.epochs = Some(self.current);
        } else {
            configured.push((self.current, None));
        }
        configured.extend(self.previous.into_iter().map(|key| (key, None)));
        for (configured, epoch) in configured {
            check_root_key_id(&configured)?;
            let Some(arn) = provider.describe(&configured, epoch.is_some()).await? else {
                continue;
            };
            if let Some(known) = provider.keys.iter().find(|k| k.arn == arn) {
                return Err(Error::config(format!(
                    "AWS KMS keys `{}` and `{configured}` are the same key ({arn}); configure \
                     each key once",
                    known.configured
                )));
            }
            provider.keys.push(KmsKey {
                configured,
                arn,
                epoch,
            });
        }
        Ok(provider)
    }
}

impl AwsKmsProvider {
    /// The epoch aliases `alias/<name>-e<N>`, by `N` ascending: each alias
    /// with its epoch.
    async fn epoch_aliases(&self, name: &str) -> Result<Vec<(String, u32)>> {
        let valid = name.len() <= 200
            && !name.is_empty()
            && !name.starts_with("aws/")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b));
        if !valid {
            return Err(Error::config(format!(
                "AWS KMS epoch name {name:?} is invalid: use 1 to 200 ASCII letters, digits and \
                 `/_-`, not starting with `aws/`"
            )));
        }
        let prefix = format!("alias/{name}-e");
        let mut found = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .client
                .list_aliases()
                .set_marker(marker)
                .limit(100)
                .send()
                .await
                .map_err(|err| {
                    self.call_error("ListAliases", &format!("{prefix}<N>"), None, err)
                })?;
            for alias in page.aliases() {
                let Some(alias_name) = alias.alias_name() else {
                    continue;
                };
                if let Some(n) = alias_name
                    .strip_prefix(&prefix)
                    .and_then(super::epoch_number)
                {
                    found.push((alias_name.to_string(), n));
                }
            }
            marker = page.next_marker().map(str::to_string);
            if !page.truncated() || marker.is_none() {
                break;
            }
        }
        found.sort_by_key(|(_, n)| *n);
        Ok(found)
    }

    /// The ARN of the key `alias` names now; `None` if KMS says the alias
    /// does not exist.
    async fn alias_target(&self, alias: &str) -> Result<Option<String>> {
        match self.client.describe_key().key_id(alias).send().await {
            Ok(out) => Ok(out.key_metadata().and_then(|m| m.arn()).map(str::to_string)),
            Err(err) if err.code() == Some("NotFoundException") => Ok(None),
            Err(err) => Err(self.call_error("DescribeKey", alias, None, err)),
        }
    }

    /// The epoch keys of `name` to configure, the newest first: each alias
    /// with its epoch.
    async fn epoch_keys(&self, name: &str) -> Result<Vec<(String, Option<u32>)>> {
        let aliases = self.epoch_aliases(name).await?;
        if aliases.is_empty() {
            return Err(Error::config(format!(
                "AWS KMS has no alias `alias/{name}-e<N>` in region {}: create the first epoch's \
                 key (`aws kms create-key`) and name it `alias/{name}-e1` (`aws kms \
                 create-alias`)",
                self.region
            )));
        }
        Ok(aliases
            .into_iter()
            .rev()
            .map(|(alias, n)| (alias, Some(n)))
            .collect())
    }

    /// Resolves a configured key to its ARN and checks that it can wrap and
    /// unwrap. An epoch key other than the newest that is pending deletion
    /// is `None`: it was destroyed.
    async fn describe(&self, configured: &str, epoch: bool) -> Result<Option<String>> {
        let output = self
            .client
            .describe_key()
            .key_id(configured)
            .send()
            .await
            .map_err(|err| self.call_error("DescribeKey", configured, None, err))?;
        let Some(meta) = output.key_metadata() else {
            return Err(Error::Provider {
                message: format!("AWS KMS DescribeKey on `{configured}` returned no key metadata"),
                source: None,
            });
        };
        let arn = meta.arn().unwrap_or_default().to_string();
        check_root_key_id(&arn)?;
        match meta.key_state() {
            Some(KeyState::Enabled) | None if meta.enabled() => {}
            Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion)
                if epoch && !self.keys.is_empty() =>
            {
                let when = meta.deletion_date().map(ToString::to_string);
                tracing::warn!(
                    key = configured,
                    deletion = when.as_deref().unwrap_or("unknown"),
                    "an older epoch's root key is pending deletion: not used"
                );
                return Ok(None);
            }
            Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion) => {
                let when = meta
                    .deletion_date()
                    .map(|d| format!(" on {d}"))
                    .unwrap_or_default();
                return Err(Error::config(format!(
                    "AWS KMS key `{configured}` ({arn}) is scheduled for deletion{when}: cancel \
                     it with `aws kms cancel-key-deletion` before fieldseal uses it; tenant keys \
                     wrapped only under it become unreadable when it is deleted"
                )));
            }
            Some(state @ (KeyState::Unavailable | KeyState::Updating | KeyState::Creating)) => {
                return Err(Error::Provider {
                    message: format!(
                        "AWS KMS key `{configured}` ({arn}) is {} right now (a custom key \
                         store that is disconnected, or a key being created or updated): \
                         reconnect the key store or retry later",
                        state.as_str()
                    ),
                    source: None,
                });
            }
            state => {
                let state = state.map_or("disabled", |s| s.as_str());
                return Err(Error::config(format!(
                    "AWS KMS key `{configured}` ({arn}) is {state}, not Enabled: enable it \
                     (`aws kms enable-key`) or remove it from the provider"
                )));
            }
        }
        let symmetric = matches!(meta.key_spec(), None | Some(KeySpec::SymmetricDefault));
        let encrypts = matches!(meta.key_usage(), None | Some(KeyUsageType::EncryptDecrypt));
        if !(symmetric && encrypts) {
            return Err(Error::config(format!(
                "AWS KMS key `{configured}` ({arn}) is not a symmetric encryption key (spec {}, \
                 usage {}): fieldseal needs a SYMMETRIC_DEFAULT key with usage ENCRYPT_DECRYPT",
                meta.key_spec().map_or("unknown", |s| s.as_str()),
                meta.key_usage().map_or("unknown", |u| u.as_str()),
            )));
        }
        Ok(Some(arn))
    }
}

/// Whether `arn` is a KMS key ARN: `arn:<partition>:kms:<region>:<12-digit
/// account>:key/<key id>`, nothing more.
fn is_key_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "kms", region, account, resource] => {
            !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource
                    .strip_prefix("key/")
                    .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        }
        _ => false,
    }
}

/// The region of a KMS key ARN (`arn:<partition>:kms:<region>:…:key/…`).
fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

/// The key id in a key ARN, for `ScheduleKeyDeletion`: a deletion is only
/// ever scheduled in the key's own account, and moto (the emulator CI runs)
/// fails on ARNs there.
fn key_id_of(arn: &str) -> &str {
    arn.rsplit_once(":key/").map_or(arn, |(_, id)| id)
}

fn encryption_context(ctx: &WrapContext<'_>) -> HashMap<String, String> {
    ctx.fields()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

impl fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("current", &self.current_root_key_id())
            .field(
                "previous",
                &self.root_key_ids().get(1..).unwrap_or_default(),
            )
            .field("epochs", &self.epochs)
            .field("region", &self.region)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AwsKmsProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProviderBuilder")
            .field("current", &self.current)
            .field("epochs", &self.epochs)
            .field("tenant_key", &self.tenant_key)
            .field("deletion_window_days", &self.deletion_window_days)
            .field("previous", &self.previous)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn current_root_key_id(&self) -> &str {
        self.keys.first().map_or("", |key| key.arn.as_str())
    }

    fn root_key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.arn.as_str()).collect()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey> {
        let arn = self.current_root_key_id();
        let output = self
            .client
            .encrypt()
            .key_id(arn)
            .plaintext(Blob::new(key.expose_secret().to_vec()))
            .set_encryption_context(Some(encryption_context(ctx)))
            .send()
            .await
            .map_err(|err| self.call_error("Encrypt", arn, None, err))?;
        match output.ciphertext_blob {
            Some(blob) if !blob.as_ref().is_empty() => Ok(WrappedKey::new(arn, blob.into_inner())),
            _ => Err(Error::Provider {
                message: format!("AWS KMS Encrypt on key `{arn}` returned no ciphertext"),
                source: None,
            }),
        }
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey> {
        let Some(key) = self.held(wrapped.root_key_id()) else {
            return Err(Error::RootKeyNotConfigured {
                id: wrapped.root_key_id().to_string(),
            });
        };
        let failed = || Error::UnwrapFailed {
            subject: ctx.describe(),
            root_key_id: key.arn.clone(),
        };
        if wrapped.as_bytes().is_empty() {
            return Err(failed());
        }
        let output = self
            .client
            .decrypt()
            .key_id(&key.arn)
            .ciphertext_blob(Blob::new(wrapped.as_bytes()))
            .set_encryption_context(Some(encryption_context(ctx)))
            .send()
            .await
            .map_err(|err| self.call_error("Decrypt", &key.arn, Some((ctx, &key.arn)), err))?;
        // KMS names the key that decrypted; with `KeyId` given it can only be
        // that key, and the plaintext is 32 bytes. Anything else is a
        // misbehaving endpoint (a proxy or emulator), not an altered record.
        let misbehaved = |what: &str| Error::Provider {
            message: format!("AWS KMS Decrypt on key `{}` {what}", key.arn),
            source: None,
        };
        if output.key_id().is_some_and(|used| used != key.arn) {
            return Err(misbehaved("answered for another key"));
        }
        let plaintext = Zeroizing::new(output.plaintext.map(Blob::into_inner).unwrap_or_default());
        TenantKey::from_slice(&plaintext).map_err(|_| {
            misbehaved(&format!(
                "returned {} bytes, not a 32-byte key",
                plaintext.len()
            ))
        })
    }

    /// With [`AwsKmsProvider::epochs`]: creates a symmetric encryption key
    /// and names it `alias/<name>-e<N>`, `N` one above the highest epoch
    /// alias in KMS (`CreateKey`, `CreateAlias`); returns its ARN. A key
    /// whose alias could not be created is scheduled for deletion at once.
    async fn create_root_key(&self) -> Result<String> {
        let Some(name) = &self.epochs else {
            return Err(Error::refused(format!(
                "the AWS KMS provider of root key `{}` was configured with one key, not with \
                 epochs: build it with AwsKmsProvider::epochs(name) (keys named by the aliases \
                 alias/<name>-e<N>), or create a key and configure it as current",
                self.current_root_key_id()
            )));
        };
        let next = match self.epoch_aliases(name).await?.last() {
            Some((alias, n)) => n.checked_add(1).ok_or_else(|| {
                Error::refused(format!(
                    "alias `{alias}` takes the last epoch number: remove it to go on"
                ))
            })?,
            None => 1,
        };
        let alias = format!("alias/{name}-e{next}");
        // The new key gets the current one's key policy, so that access to
        // the root keys does not change with the epoch; a key in a custom
        // key store or a multi-Region key is not made over.
        let current = self.current_root_key_id();
        let described = self
            .client
            .describe_key()
            .key_id(current)
            .send()
            .await
            .map_err(|err| self.call_error("DescribeKey", current, None, err))?;
        let meta = described.key_metadata();
        let origin = meta.and_then(|m| m.origin());
        let kms_made = matches!(origin, None | Some(aws_sdk_kms::types::OriginType::AwsKms));
        let custom_store = meta.and_then(|m| m.custom_key_store_id()).is_some();
        if !kms_made || custom_store || meta.and_then(|m| m.multi_region()) == Some(true) {
            return Err(Error::refused(format!(
                "the current root key `{current}` is a multi-Region key, in a custom key \
                 store, or has imported key material: fieldseal does not make such keys over; \
                 create the next epoch's key as you made this one and name it `{alias}`"
            )));
        }
        let policy = self
            .client
            .get_key_policy()
            .key_id(current)
            .policy_name("default")
            .send()
            .await
            .map_err(|err| self.call_error("GetKeyPolicy", current, None, err))?;
        let mut create = self
            .client
            .create_key()
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .description(format!("fieldseal root key: epoch {next} of {name}"))
            .tags(
                aws_sdk_kms::types::Tag::builder()
                    .tag_key("fieldseal:epochs")
                    .tag_value(name.as_str())
                    .build()
                    .map_err(|e| Error::provider("building a KMS tag", e))?,
            );
        if let Some(policy) = policy.policy() {
            create = create.policy(policy);
        }
        let created = create
            .send()
            .await
            .map_err(|err| self.call_error("CreateKey", &alias, None, err))?;
        let Some(arn) = created.key_metadata().and_then(|m| m.arn()) else {
            return Err(Error::Provider {
                message: format!("AWS KMS CreateKey for `{alias}` returned no key ARN"),
                source: None,
            });
        };
        let arn = arn.to_string();
        check_root_key_id(&arn)?;
        if let Err(err) = self
            .client
            .create_alias()
            .alias_name(&alias)
            .target_key_id(&arn)
            .send()
            .await
        {
            // The alias may exist all the same (a reply lost after KMS made
            // it): then the key is named, and in use from now on. Unless KMS
            // says for sure that it names no key or another, the key stays.
            match self.alias_target(&alias).await {
                Ok(Some(target)) if target == arn => {
                    tracing::info!(alias, key = arn, "created an epoch's root key in AWS KMS");
                    return Ok(arn);
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::Provider {
                        message: format!(
                            "AWS KMS CreateAlias `{alias}` for the new key `{arn}` failed, and \
                             whether the alias exists could not be read ({e}): check with `aws \
                             kms describe-key --key-id {alias}`; if it does not name `{arn}`, \
                             schedule that key's deletion and run rotate-root again"
                        ),
                        source: None,
                    });
                }
            }
            // Nameless, the key would never be used nor found again.
            if let Err(e) = self
                .client
                .schedule_key_deletion()
                .key_id(key_id_of(&arn))
                .pending_window_in_days(DEFAULT_DELETION_WINDOW_DAYS)
                .send()
                .await
            {
                tracing::warn!(
                    key = arn,
                    error = %DisplayErrorContext(&e),
                    "could not schedule the deletion of a new key left without its alias"
                );
            }
            return Err(self.call_error("CreateAlias", &alias, None, err));
        }
        tracing::info!(alias, key = arn, "created an epoch's root key in AWS KMS");
        Ok(arn)
    }

    /// With [`AwsKmsProvider::epochs`]: schedules the deletion of an older
    /// epoch's key (`ScheduleKeyDeletion`, with the configured window) and
    /// removes its alias; returns the end of the window, from which KMS
    /// holds the key no more. A key already pending deletion returns its
    /// date. Keys configured with
    /// [`previous`](AwsKmsProviderBuilder::previous) are refused: schedule
    /// their deletion in KMS once they are out of the configuration.
    async fn destroy_root_key(&self, id: &str) -> Result<crate::Timestamp> {
        let Some(key) = self.held(id) else {
            return Err(Error::refused(format!(
                "root key `{id}` is not an AWS KMS key this provider holds"
            )));
        };
        if key.arn == self.current_root_key_id() {
            return Err(Error::refused(format!(
                "root key `{id}` is the current AWS KMS key: it is never destroyed"
            )));
        }
        let (Some(name), Some(n)) = (&self.epochs, key.epoch) else {
            return Err(Error::refused(format!(
                "AWS KMS key `{id}` is configured as a previous key, not as an epoch's key: \
                 remove it from the configuration, then schedule its deletion in KMS (`aws \
                 kms schedule-key-deletion`)"
            )));
        };
        let window = i64::from(self.deletion_window_days) * 86_400;
        let scheduled = self
            .client
            .schedule_key_deletion()
            .key_id(key_id_of(&key.arn))
            .pending_window_in_days(self.deletion_window_days)
            .send()
            .await;
        let deleted_from = match scheduled {
            Ok(out) => out.deletion_date().map(|d| d.secs()),
            Err(err) if err.code() == Some("KMSInvalidStateException") => {
                // Scheduled already (by another process): its own date.
                let described = self
                    .client
                    .describe_key()
                    .key_id(&key.arn)
                    .send()
                    .await
                    .map_err(|e| self.call_error("DescribeKey", &key.arn, None, e))?;
                let meta = described.key_metadata();
                if meta.and_then(|m| m.key_state()) != Some(&KeyState::PendingDeletion) {
                    return Err(self.call_error("ScheduleKeyDeletion", &key.arn, None, err));
                }
                meta.and_then(|m| m.deletion_date()).map(|d| d.secs())
            }
            Err(err) => return Err(self.call_error("ScheduleKeyDeletion", &key.arn, None, err)),
        };
        let alias = format!("alias/{name}-e{n}");
        if self.alias_target(&alias).await.ok().flatten().as_deref() != Some(key.arn.as_str()) {
            // Gone, moved to another key since, or unreadable: not removed
            // (a provider built later skips a key pending deletion anyway).
        } else if let Err(err) = self.client.delete_alias().alias_name(&alias).send().await
            && err.code() != Some("NotFoundException")
        {
            // The key is pending deletion: a provider built later skips it.
            tracing::warn!(
                alias,
                error = %DisplayErrorContext(&err),
                "could not remove the alias of an epoch key pending deletion"
            );
        }
        tracing::info!(
            alias,
            key = key.arn,
            "scheduled an epoch's root key for deletion"
        );
        let now = crate::Timestamp::now().unix_seconds();
        Ok(crate::Timestamp::from_unix_seconds(
            deleted_from.unwrap_or(now.saturating_add(window)),
        ))
    }
}

//! The PKCS#11 root key provider: root keys in an HSM or token, on `cryptoki`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::{KeyProvider, WrapContext, WrappedKey, check_root_key_id};
use crate::crypto::{KEY_LEN, NONCE_LEN};
use crate::error::{Error, Result};
use crate::format::TAG_LEN;
use crate::secret::{TenantKey, os_random};

/// Version byte of the wrapped-key layout (the local provider's layout).
const WRAP_V1: u8 = 0x01;
/// `version (1) || nonce (12) || encrypted key (32) || tag (16)`.
const WRAPPED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;
/// The environment variable the PIN is read from unless another is named.
const DEFAULT_PIN_ENV: &str = "FIELDSEAL_PKCS11_PIN";
/// Sessions kept open per provider unless configured otherwise.
const DEFAULT_SESSIONS: usize = 4;
/// The most sessions a provider may be configured with.
const MAX_SESSIONS: usize = 1024;
/// How long a call may wait for a session and run, unless configured otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Root keys in a PKCS#11 token: an HSM, a cloud HSM's PKCS#11 library, or
/// SoftHSM2 for development.
///
/// Each root key is an AES-256 secret key object in the token, found by its
/// label; it never leaves the token. A tenant key is wrapped inside the token
/// by `C_Encrypt` with `CKM_AES_GCM`: a fresh random 96-bit IV, the
/// [`WrapContext`] as additional authenticated data and a 128-bit tag. The
/// wrapped bytes have exactly the local provider's layout (FORMAT.md
/// §"Wrapped keys"), so the published wrapped-key vectors describe them too.
///
/// ```no_run
/// # async fn run() -> Result<(), fieldseal::Error> {
/// use fieldseal::{MemoryKeyStore, Sealer, provider::Pkcs11Provider};
///
/// // The PIN is read from FIELDSEAL_PKCS11_PIN.
/// let provider = Pkcs11Provider::builder("/usr/lib/softhsm/libsofthsm2.so")
///     .token("fieldseal")
///     .key("fieldseal-root-2026")
///     .build()
///     .await?;
/// let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
/// # let _ = sealer;
/// # Ok(()) }
/// ```
///
/// **Why `CKM_AES_GCM` and not the token's key-wrapping mechanism.** The
/// standard wrapping mechanisms (`CKM_AES_KEY_WRAP`, `CKM_AES_KEY_WRAP_PAD`,
/// RFC 3394 and 5649) take no associated data, so they cannot bind a wrapped
/// key to its tenant, version and purpose; and `C_UnwrapKey` would create the
/// tenant key as an object inside the token, while fieldseal needs the tenant
/// key in its own memory to derive a key per value. AES-GCM with the wrap
/// context as AAD binds the context, and the root key still never leaves the
/// token. The IV is chosen by the provider; every new wrap is decrypted once
/// in the token and compared with the key before it is returned, so a token
/// that silently chooses its own IV (some do in FIPS mode) fails loudly
/// instead of storing a wrap that can never be unwrapped.
///
/// **Keys.** The root key id stored beside each wrapped key is `pkcs11:` and
/// the key's label, so labels use ASCII letters, digits and `-_.:/`. The key
/// must be an AES key of 32 bytes with `CKA_SENSITIVE` true and
/// `CKA_EXTRACTABLE` false, allowed to encrypt and decrypt; for example
/// `pkcs11-tool --module … --login --keygen --key-type AES:32 --label
/// fieldseal-root-2026 --sensitive`. [`build`](Pkcs11ProviderBuilder::build)
/// checks all of this.
///
/// **Login.** PKCS#11 keeps one login per process and token. The provider logs
/// in at [`build`](Pkcs11ProviderBuilder::build), and again on a new session if
/// the token logged the process out (after a failover, say). A token this
/// process is already logged in to does not check a PIN again, so a second
/// provider built with a wrong PIN is not detected while the first is logged
/// in. A token whose PIN has one try left is refused before trying, so a
/// restart loop with a wrong PIN cannot lock it.
///
/// **Sessions.** Up to [`sessions`](Pkcs11ProviderBuilder::sessions) sessions
/// are open and at most that many calls run at once, on tokio's blocking pool
/// (they never stall the async runtime). A call that cannot get a session and
/// finish within [`timeout`](Pkcs11ProviderBuilder::timeout) fails with an
/// error that says so; the token call itself cannot be interrupted and keeps
/// its session until it returns.
///
/// # Security
///
/// The PIN is kept as a [`SecretString`] (zeroized on drop) for logging in
/// again; read from an environment variable, it also stays in the process
/// environment, which child processes inherit: prefer
/// [`pin`](Pkcs11ProviderBuilder::pin) from a secret manager. The tenant key
/// passes through the PKCS#11 library's buffers, which fieldseal cannot
/// zeroize. Errors name the module, token, labels and return codes, never the
/// PIN or key material.
pub struct Pkcs11Provider {
    inner: Arc<Inner>,
}

struct Inner {
    pkcs11: Pkcs11,
    slot: Slot,
    token: String,
    pin: SecretString,
    /// Root keys, the current one first.
    keys: Vec<HsmKey>,
    /// With [`Pkcs11ProviderBuilder::epochs`]: the name of the epoch keys.
    epochs: Option<String>,
    idle: Mutex<Vec<Session>>,
    sessions: usize,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

struct HsmKey {
    id: String,
    handle: ObjectHandle,
    /// The epoch of a key labelled `<name>-e<N>` with
    /// [`Pkcs11ProviderBuilder::epochs`].
    epoch: Option<u32>,
}

/// Configures a [`Pkcs11Provider`]; made by [`Pkcs11Provider::builder`].
#[must_use = "call `build().await` to get a provider"]
pub struct Pkcs11ProviderBuilder {
    module: PathBuf,
    token: Option<String>,
    keys: Vec<String>,
    epochs: Option<String>,
    pin: PinSource,
    sessions: usize,
    timeout: Duration,
}

enum PinSource {
    Env(String),
    Given(SecretString),
}

impl Pkcs11Provider {
    /// Starts configuring a provider on the PKCS#11 module (shared library)
    /// at `module`, such as `/usr/lib/softhsm/libsofthsm2.so`.
    pub fn builder(module: impl Into<PathBuf>) -> Pkcs11ProviderBuilder {
        Pkcs11ProviderBuilder {
            module: module.into(),
            token: None,
            keys: Vec::new(),
            epochs: None,
            pin: PinSource::Env(DEFAULT_PIN_ENV.to_string()),
            sessions: DEFAULT_SESSIONS,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs `op` on a pooled session on the blocking pool, within the
    /// provider's timeout. The permit travels with the blocking task, so a
    /// caller that gives up never lets more calls run than configured.
    async fn with_session<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> std::result::Result<T, CkError> + Send + 'static,
    {
        self.call(false, op).await
    }

    /// [`with_session`](Self::with_session) on a read-write session of its
    /// own (never pooled), for creating and destroying keys.
    async fn with_rw_session<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> std::result::Result<T, CkError> + Send + 'static,
    {
        self.call(true, op).await
    }

    async fn call<T, F>(&self, rw: bool, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> std::result::Result<T, CkError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let timeout = inner.timeout;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config("the PKCS#11 provider must be called from within a tokio runtime")
        })?;
        let call = async move {
            let permit = Arc::clone(&inner.permits)
                .acquire_owned()
                .await
                .map_err(|_| Error::config("the PKCS#11 provider was shut down"))?;
            let task = Arc::clone(&inner);
            let joined = runtime
                .spawn_blocking(move || {
                    let _permit = permit;
                    if rw { task.run_rw(op) } else { task.run(op) }
                })
                .await;
            match joined {
                Ok(result) => result,
                Err(join) => Err(Error::provider("a PKCS#11 call panicked", join)),
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Provider {
                message: format!(
                    "a PKCS#11 call on token `{}` did not get a session and finish within \
                     {timeout:?}: check the token's health and load, or raise \
                     `Pkcs11ProviderBuilder::timeout` or `sessions`",
                    self.inner.token
                ),
                source: None,
            }),
        }
    }

    fn held(&self, id: &str) -> Option<&HsmKey> {
        self.inner.keys.iter().find(|key| key.id == id)
    }
}

impl Inner {
    /// Runs `op` on a new read-write session, closed afterwards.
    fn run_rw<T>(&self, op: impl FnOnce(&Session) -> std::result::Result<T, CkError>) -> Result<T> {
        let session = self.pkcs11.open_rw_session(self.slot).map_err(|err| {
            ck_error(
                format!(
                    "could not open a read-write session on token `{}`",
                    self.token
                ),
                err,
            )
        })?;
        login(&session, &self.token, &self.pin)?;
        op(&session).map_err(|err| {
            ck_error(
                format!("PKCS#11 call on token `{}` failed", self.token),
                err,
            )
        })
    }

    /// Runs `op` on an idle session, or a new one (logged in again if the
    /// token logged the process out); returns the session to the pool unless
    /// it broke.
    fn run<T>(&self, op: impl FnOnce(&Session) -> std::result::Result<T, CkError>) -> Result<T> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let session = match pooled {
            Some(session) => session,
            None => {
                let session = self.pkcs11.open_ro_session(self.slot).map_err(|err| {
                    ck_error(
                        format!("could not open a session on token `{}`", self.token),
                        err,
                    )
                })?;
                login(&session, &self.token, &self.pin)?;
                session
            }
        };
        let result = op(&session);
        let broken = matches!(
            &result,
            Err(CkError::Pkcs11(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceRemoved
                    | RvError::DeviceError
                    | RvError::TokenNotPresent
                    | RvError::UserNotLoggedIn
                    | RvError::CryptokiNotInitialized,
                _
            ))
        );
        if !broken
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.sessions
        {
            idle.push(session);
        }
        result.map_err(|err| {
            ck_error(
                format!("PKCS#11 call on token `{}` failed", self.token),
                err,
            )
        })
    }
}

/// Logs `session`'s process in to the token (a no-op if it already is).
fn login(session: &Session, token: &str, pin: &SecretString) -> Result<()> {
    let auth = AuthPin::from(pin.expose_secret().to_string());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(Error::config(format!(
            "wrong user PIN for PKCS#11 token `{token}`: check the PIN (each wrong attempt \
             counts towards the token's lockout)"
        ))),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::config(format!(
            "the user PIN of PKCS#11 token `{token}` is locked after too many wrong attempts: \
             the security officer must reset it"
        ))),
        Err(err) => Err(ck_error(format!("logging in to token `{token}`"), err)),
    }
}

impl Pkcs11ProviderBuilder {
    /// The label of the token that holds the keys (required).
    pub fn token(mut self, label: impl Into<String>) -> Self {
        self.token = Some(label.into());
        self
    }

    /// The label of an AES-256 key in the token. The first key given is the
    /// current root key, which wraps; later ones are previous root keys, which
    /// only unwrap.
    pub fn key(mut self, label: impl Into<String>) -> Self {
        self.keys.push(label.into());
        self
    }

    /// Root keys one per epoch, instead of [`key`](Self::key): the AES-256
    /// keys labelled `<name>-e<N>` (`N` from 1) in the token, the highest `N`
    /// current, the others only unwrapping. [`KeyProvider::create_root_key`]
    /// generates the next epoch's key in the token (sensitive, never
    /// extractable); [`KeyProvider::destroy_root_key`] destroys an older one
    /// (`C_DestroyObject`). Create the first, `<name>-e1`, with the token's
    /// tools as for [`key`](Self::key). Give each key store its own name.
    ///
    /// # Security
    ///
    /// A destroyed key is gone from the token, not from the token's own
    /// backups (an HSM's backup or replica, a copy of SoftHSM's token
    /// directory): keep those no longer than the database backups. Give each
    /// key store its own `name` in a token, and let nobody else create keys
    /// labelled `<name>-e<N>`: such a key becomes current at the next start.
    /// [`KeyAdmin::retire_root_keys`](crate::KeyAdmin::retire_root_keys)
    /// destroys only root keys this store's audit log names.
    pub fn epochs(mut self, name: impl Into<String>) -> Self {
        self.epochs = Some(name.into());
        self
    }

    /// Reads the user PIN from environment variable `name` at
    /// [`build`](Self::build) (default `FIELDSEAL_PKCS11_PIN`).
    pub fn pin_from_env(mut self, name: impl Into<String>) -> Self {
        self.pin = PinSource::Env(name.into());
        self
    }

    /// Uses this user PIN (for PINs from a secret manager).
    pub fn pin(mut self, pin: SecretString) -> Self {
        self.pin = PinSource::Given(pin);
        self
    }

    /// The most sessions open and calls in flight at once (default 4, at
    /// least 1).
    pub fn sessions(mut self, sessions: usize) -> Self {
        self.sessions = sessions.clamp(1, MAX_SESSIONS);
        self
    }

    /// The longest a wrap or unwrap may wait for a session and run (default
    /// 10 s). A call that takes longer fails with an error that says so.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Loads the module, finds the token, logs in and finds every key.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming what to fix: a module that does not load, no
    /// token with the label, a PIN variable that is unset, a wrong or locked
    /// PIN, no key or several keys with a label, a key that is not AES-256,
    /// that can leave the token, or that may not encrypt and decrypt, a token
    /// without `CKM_AES_GCM`, an invalid label or a label given twice.
    pub async fn build(self) -> Result<Pkcs11Provider> {
        let Some(token) = self.token.clone() else {
            return Err(Error::config(
                "no token label for the PKCS#11 provider: call `Pkcs11ProviderBuilder::token`",
            ));
        };
        match (&self.epochs, self.keys.is_empty()) {
            (None, true) => {
                return Err(Error::config(
                    "no key label for the PKCS#11 provider: call `Pkcs11ProviderBuilder::key` \
                     with the label of the AES-256 root key",
                ));
            }
            (Some(_), false) => {
                return Err(Error::config(
                    "the PKCS#11 provider takes its keys by `key` labels or by `epochs`, not both",
                ));
            }
            (Some(name), true) => {
                check_root_key_id(&format!("pkcs11:{name}-e1")).map_err(|_| {
                    Error::config(format!(
                        "PKCS#11 epoch name {name:?} cannot name root keys: use 1 to 240 ASCII \
                         letters, digits and `-_.:/`"
                    ))
                })?;
            }
            (None, false) => {}
        }
        let mut ids = Vec::with_capacity(self.keys.len());
        for label in &self.keys {
            let id = format!("pkcs11:{label}");
            check_root_key_id(&id).map_err(|_| {
                Error::config(format!(
                    "PKCS#11 key label {label:?} cannot name a root key: use 1 to 248 ASCII \
                     letters, digits and `-_.:/`"
                ))
            })?;
            if ids.contains(&id) {
                return Err(Error::config(format!(
                    "PKCS#11 key label `{label}` is configured twice"
                )));
            }
            ids.push(id);
        }
        let pin = match self.pin {
            PinSource::Given(pin) => pin,
            PinSource::Env(name) => match std::env::var(&name) {
                Ok(pin) => SecretString::from(pin),
                Err(_) => {
                    return Err(Error::config(format!(
                        "the PKCS#11 user PIN for token `{token}` is read from environment \
                         variable {name}, which is not set (or not UTF-8)"
                    )));
                }
            },
        };
        let module = self.module;
        let labels = self.keys;
        let epochs = self.epochs;
        let (sessions, timeout) = (self.sessions, self.timeout);
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config("the PKCS#11 provider must be built within a tokio runtime")
        })?;
        runtime
            .spawn_blocking(move || {
                let keys = match epochs {
                    Some(name) => Keys::Epochs(name),
                    None => Keys::Labels(labels, ids),
                };
                open(&module, token, keys, pin, sessions, timeout)
            })
            .await
            .map_err(|join| Error::provider("opening the PKCS#11 token panicked", join))?
    }
}

/// Contexts by module path: a module is initialised once per process, and
/// providers for the same module share it (`C_Initialize` twice fails, and
/// finalising one would end every other user's sessions).
fn module_context(module: &Path) -> Result<Pkcs11> {
    // One entry per library, however its path is spelled (symlinks included).
    let canonical = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let module = canonical.as_path();
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut modules = modules
        .lock()
        .map_err(|_| Error::config("the PKCS#11 module table is poisoned"))?;
    if let Some(pkcs11) = modules.get(module) {
        return Ok(pkcs11.clone());
    }
    let pkcs11 = Pkcs11::new(module).map_err(|err| {
        Error::config(format!(
            "could not load the PKCS#11 module {}: {err}; install the HSM vendor's PKCS#11 \
             library (for SoftHSM2, the softhsm2 package) or fix the path",
            module.display()
        ))
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(err) => {
            return Err(Error::config(format!(
                "the PKCS#11 module {} failed to initialise: {err} (for SoftHSM2, check that \
                 SOFTHSM2_CONF names a readable configuration and token directory)",
                module.display()
            )));
        }
    }
    modules.insert(module.to_path_buf(), pkcs11.clone());
    Ok(pkcs11)
}

/// The root keys a provider is built with.
enum Keys {
    /// Labels, the current first, and their root key ids.
    Labels(Vec<String>, Vec<String>),
    /// Every key labelled `<name>-e<N>`.
    Epochs(String),
}

fn open(
    module: &Path,
    token: String,
    keys: Keys,
    pin: SecretString,
    sessions: usize,
    timeout: Duration,
) -> Result<Pkcs11Provider> {
    let pkcs11 = module_context(module)?;
    let mut found = Vec::new();
    let mut slot = None;
    let slots = pkcs11
        .get_slots_with_initialized_token()
        .map_err(|err| ck_error(format!("listing the slots of {}", module.display()), err))?;
    for candidate in slots {
        let info = pkcs11
            .get_token_info(candidate)
            .map_err(|err| ck_error("reading a token's information".into(), err))?;
        let label = info.label().trim_end().to_string();
        if label == token {
            if slot.is_some() {
                return Err(Error::config(format!(
                    "two tokens in PKCS#11 module {} are labelled `{token}`: give each token \
                     a label of its own",
                    module.display()
                )));
            }
            if info.user_pin_final_try() {
                return Err(Error::config(format!(
                    "the user PIN of PKCS#11 token `{token}` has one try left; fieldseal will \
                     not risk locking it: check the PIN, then log in once with the token's \
                     own tool to reset the count"
                )));
            }
            slot = Some(candidate);
        }
        found.push(label);
    }
    let Some(slot) = slot else {
        return Err(Error::config(format!(
            "no initialised token labelled `{token}` in PKCS#11 module {} (tokens found: {}): \
             check the token label, or initialise the token",
            module.display(),
            if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            }
        )));
    };
    let mechanisms = pkcs11
        .get_mechanism_list(slot)
        .map_err(|err| ck_error(format!("listing the mechanisms of token `{token}`"), err))?;
    if !mechanisms.contains(&MechanismType::AES_GCM) {
        return Err(Error::config(format!(
            "token `{token}` does not offer CKM_AES_GCM, which the PKCS#11 provider wraps with"
        )));
    }
    let session = pkcs11
        .open_ro_session(slot)
        .map_err(|err| ck_error(format!("could not open a session on token `{token}`"), err))?;
    login(&session, &token, &pin)?;
    let (configured, epochs) = match keys {
        Keys::Labels(labels, ids) => (
            labels
                .into_iter()
                .zip(ids)
                .map(|(label, id)| (label, id, None))
                .collect::<Vec<_>>(),
            None,
        ),
        Keys::Epochs(name) => {
            let found = epoch_labels(&session, &name)
                .map_err(|err| ck_error(format!("listing the keys of token `{token}`"), err))?;
            if found.is_empty() {
                return Err(Error::config(format!(
                    "no secret key labelled `{name}-e<N>` in PKCS#11 token `{token}` (or the \
                     user cannot see it): create the first epoch's AES-256 key, sensitive and \
                     not extractable, labelled `{name}-e1`"
                )));
            }
            let keys = found
                .into_iter()
                .rev()
                .map(|(n, label)| {
                    let id = format!("pkcs11:{label}");
                    (label, id, Some(n))
                })
                .collect();
            (keys, Some(name))
        }
    };
    let mut keys = Vec::with_capacity(configured.len());
    for (label, id, epoch) in configured {
        let handle = find_key(&session, &token, &label)?;
        if !probe(&session, handle) {
            return Err(Error::config(format!(
                "PKCS#11 key `{label}` in token `{token}` does not round-trip an AES-GCM \
                 encryption with the IV fieldseal gives it (the token may choose IVs itself): \
                 this token cannot serve as a fieldseal root key provider"
            )));
        }
        keys.push(HsmKey { id, handle, epoch });
    }
    Ok(Pkcs11Provider {
        inner: Arc::new(Inner {
            pkcs11,
            slot,
            token,
            pin,
            keys,
            epochs,
            idle: Mutex::new(vec![session]),
            sessions,
            permits: Arc::new(Semaphore::new(sessions)),
            timeout,
        }),
    })
}

/// The labels `<name>-e<N>` of the secret keys in the token, by `N`
/// ascending (a label twice is listed twice).
fn epoch_labels(session: &Session, name: &str) -> std::result::Result<Vec<(u32, String)>, CkError> {
    let prefix = format!("{name}-e");
    let mut found = Vec::new();
    for handle in session.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])? {
        for attribute in session.get_attributes(handle, &[AttributeType::Label])? {
            if let Attribute::Label(label) = attribute
                && let Ok(label) = String::from_utf8(label)
                && let Some(n) = label.strip_prefix(&prefix).and_then(super::epoch_number)
            {
                found.push((n, label));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `handle` still names an object labelled `label` (`false` if the
/// handle names no object any more).
fn still_labelled(
    session: &Session,
    handle: ObjectHandle,
    label: &str,
) -> std::result::Result<bool, CkError> {
    match session.get_attributes(handle, &[AttributeType::Label]) {
        Ok(attributes) => Ok(attributes
            .iter()
            .any(|a| matches!(a, Attribute::Label(l) if l.as_slice() == label.as_bytes()))),
        Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// The handles of the secret keys labelled `label`.
fn keys_labelled(
    session: &Session,
    label: &str,
) -> std::result::Result<Vec<ObjectHandle>, CkError> {
    session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
}

/// Finds the one AES key labelled `label` and checks that it can serve as a
/// root key that never leaves the token.
fn find_key(session: &Session, token: &str, label: &str) -> Result<ObjectHandle> {
    let handles = keys_labelled(session, label)
        .map_err(|err| ck_error(format!("searching token `{token}` for `{label}`"), err))?;
    let handle = match handles.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::config(format!(
                "no secret key labelled `{label}` in PKCS#11 token `{token}` (or the user \
                 cannot see it): create an AES-256 key with that label, sensitive and not \
                 extractable"
            )));
        }
        many => {
            return Err(Error::config(format!(
                "{} secret keys are labelled `{label}` in PKCS#11 token `{token}`: give the \
                 root key a label of its own",
                many.len()
            )));
        }
    };
    let attributes = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
            ],
        )
        .map_err(|err| ck_error(format!("reading the attributes of `{label}`"), err))?;
    let mut aes = false;
    let mut len = 0u64;
    let (mut sensitive, mut extractable, mut encrypt, mut decrypt) = (false, true, false, false);
    let (mut always_sensitive, mut never_extractable) = (false, false);
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(kind) => aes = kind == KeyType::AES,
            Attribute::ValueLen(value) => len = u64::from(value),
            Attribute::Sensitive(value) => sensitive = value,
            Attribute::Extractable(value) => extractable = value,
            Attribute::AlwaysSensitive(value) => always_sensitive = value,
            Attribute::NeverExtractable(value) => never_extractable = value,
            Attribute::Encrypt(value) => encrypt = value,
            Attribute::Decrypt(value) => decrypt = value,
            _ => {}
        }
    }
    let problem = if !aes || len != 32 {
        Some("is not an AES-256 key (32 bytes)")
    } else if !sensitive || extractable {
        Some(
            "can leave the token (it must have CKA_SENSITIVE true and CKA_EXTRACTABLE false, \
             so that its value can never be read or wrapped out)",
        )
    } else if !always_sensitive || !never_extractable {
        Some(
            "was once readable or extractable (CKA_ALWAYS_SENSITIVE and \
             CKA_NEVER_EXTRACTABLE must be true: generate the key in the token)",
        )
    } else if !(encrypt && decrypt) {
        Some("may not encrypt and decrypt (CKA_ENCRYPT and CKA_DECRYPT must be true)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::config(format!(
            "PKCS#11 key `{label}` in token `{token}` {problem}"
        ))),
        None => Ok(handle),
    }
}

/// Whether `key` encrypts and decrypts a probe (all zeros, fresh IV, its own
/// AAD) in `session`: tells a value that fails its tag check from a token that
/// fails every call.
fn probe(session: &Session, key: ObjectHandle) -> bool {
    const AAD: &[u8] = b"fieldseal/v1/pkcs11-probe";
    let data = [0u8; KEY_LEN];
    let mut iv = [0u8; NONCE_LEN];
    if os_random(&mut iv).is_err() {
        return false;
    }
    let tag_bits = (TAG_LEN as u64 * 8).into();
    let sealed = GcmParams::new(&mut iv, AAD, tag_bits)
        .and_then(|params| session.encrypt(&Mechanism::AesGcm(params), key, &data));
    let Ok(sealed) = sealed else {
        return false;
    };
    GcmParams::new(&mut iv, AAD, tag_bits)
        .and_then(|params| session.decrypt(&Mechanism::AesGcm(params), key, &sealed))
        .is_ok_and(|back| back == data)
}

/// The outcome of a wrap inside the token.
enum Wrapped {
    /// Ciphertext and tag, checked to decrypt back to the key.
    Verified(Vec<u8>),
    /// Not ciphertext and tag of a 32-byte key.
    BadLength(usize),
    /// Did not decrypt back with the IV that would be stored.
    Unverified,
    /// The root key's handle no longer names the object with its label.
    Gone,
}

fn ck_error(what: String, err: CkError) -> Error {
    Error::provider(format!("{what}: {err}"), err)
}

impl fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("token", &self.inner.token)
            .field("keys", &self.root_key_ids())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Pkcs11ProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11ProviderBuilder")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("keys", &self.keys)
            .field(
                "pin",
                &match &self.pin {
                    PinSource::Env(name) => format!("from environment variable {name}"),
                    PinSource::Given(_) => "given".to_string(),
                },
            )
            .field("sessions", &self.sessions)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[async_trait]
impl KeyProvider for Pkcs11Provider {
    fn current_root_key_id(&self) -> &str {
        self.inner.keys.first().map_or("", |key| key.id.as_str())
    }

    fn root_key_ids(&self) -> Vec<&str> {
        self.inner.keys.iter().map(|key| key.id.as_str()).collect()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey> {
        let Some(root) = self.inner.keys.first() else {
            return Err(Error::config("the PKCS#11 provider has no key"));
        };
        let handle = root.handle;
        // An epoch's key may have been destroyed since this provider was
        // built, and its handle given to another object: wrap only under the
        // object that still carries the label.
        let label = root.epoch.map(|_| {
            root.id
                .strip_prefix("pkcs11:")
                .unwrap_or(&root.id)
                .to_string()
        });
        let aad = ctx.aad();
        // Copied straight to the heap (one allocation, zeroized on drop).
        let plaintext = Zeroizing::new(key.expose_secret().to_vec());
        let mut iv = [0u8; NONCE_LEN];
        os_random(&mut iv)?;
        let tag_bits = (TAG_LEN as u64 * 8).into();
        let sealed = self
            .with_session(move |session| {
                if let Some(label) = label
                    && !still_labelled(session, handle, &label)?
                {
                    return Ok(Wrapped::Gone);
                }
                let mut given = iv;
                let sealed = {
                    let params = GcmParams::new(&mut given, &aad, tag_bits)?;
                    session.encrypt(&Mechanism::AesGcm(params), handle, &plaintext)?
                };
                if sealed.len() != KEY_LEN + TAG_LEN {
                    return Ok(Wrapped::BadLength(sealed.len()));
                }
                // Decrypt once with the IV that will be stored: a token that
                // used another IV is caught here, not when the key is needed.
                let mut stored = iv;
                let params = GcmParams::new(&mut stored, &aad, tag_bits)?;
                let verified = session
                    .decrypt(&Mechanism::AesGcm(params), handle, &sealed)
                    .map(Zeroizing::new)
                    .is_ok_and(|back| bool::from(back.as_slice().ct_eq(plaintext.as_slice())));
                Ok(if verified {
                    Wrapped::Verified(sealed)
                } else {
                    Wrapped::Unverified
                })
            })
            .await?;
        let token = &self.inner.token;
        let sealed = match sealed {
            Wrapped::Verified(sealed) => sealed,
            Wrapped::BadLength(len) => {
                return Err(Error::Provider {
                    message: format!(
                        "token `{token}` returned {len} bytes for an AES-GCM encryption of 32 \
                         bytes (expected {}): it may add its own IV, which fieldseal does not \
                         support",
                        KEY_LEN + TAG_LEN
                    ),
                    source: None,
                });
            }
            Wrapped::Gone => {
                return Err(Error::refused(format!(
                    "root key `{}` is no longer the key it was in token `{token}` when this \
                     process started (destroyed by retire-root, most likely): restart the \
                     process so that it loads the current epoch's key; nothing was wrapped",
                    root.id
                )));
            }
            Wrapped::Unverified => {
                return Err(Error::Provider {
                    message: format!(
                        "token `{token}` produced a wrap that does not decrypt back to the key \
                         with the IV fieldseal chose (the token may choose IVs itself); \
                         nothing was stored"
                    ),
                    source: None,
                });
            }
        };
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_V1);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(WrappedKey::new(root.id.clone(), out))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey> {
        let Some(root) = self.held(wrapped.root_key_id()) else {
            return Err(Error::RootKeyNotConfigured {
                id: wrapped.root_key_id().to_string(),
            });
        };
        let failed = || Error::UnwrapFailed {
            subject: ctx.describe(),
            root_key_id: root.id.clone(),
        };
        let bytes = wrapped.as_bytes();
        let Some((&WRAP_V1, rest)) = bytes.split_first() else {
            return Err(failed());
        };
        let Some((iv, sealed)) = rest.split_first_chunk::<NONCE_LEN>() else {
            return Err(failed());
        };
        if sealed.len() != KEY_LEN + TAG_LEN {
            return Err(failed());
        }
        let mut iv = *iv;
        let sealed = sealed.to_vec();
        let aad = ctx.aad();
        let handle = root.handle;
        let opened = self
            .with_session(move |session| {
                let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())?;
                match session.decrypt(&Mechanism::AesGcm(params), handle, &sealed) {
                    Ok(plaintext) => Ok(Some(Zeroizing::new(plaintext))),
                    // The tag did not verify: altered bytes, or another context.
                    Err(CkError::Pkcs11(
                        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                        _,
                    )) => Ok(None),
                    // Tokens differ in what they return for a failed tag check:
                    // SoftHSM2 returns CKR_GENERAL_ERROR. That code counts as
                    // this value's failure only if the key still round-trips a
                    // probe; every other code is the token's failure.
                    Err(err @ CkError::Pkcs11(RvError::GeneralError, _)) => {
                        if probe(session, handle) {
                            Ok(None)
                        } else {
                            Err(err)
                        }
                    }
                    Err(err) => Err(err),
                }
            })
            .await?;
        match opened {
            Some(plaintext) => TenantKey::from_slice(&plaintext).map_err(|_| failed()),
            None => Err(failed()),
        }
    }

    /// With [`Pkcs11ProviderBuilder::epochs`]: generates the next epoch's
    /// AES-256 key in the token (`C_GenerateKey`: a token object, private,
    /// sensitive, never extractable, for encryption and decryption),
    /// labelled `<name>-e<N>` with `N` one above the highest label in the
    /// token; returns its id, `pkcs11:<name>-e<N>`.
    async fn create_root_key(&self) -> Result<String> {
        let Some(name) = self.inner.epochs.clone() else {
            return Err(Error::refused(format!(
                "the PKCS#11 provider of root key `{}` was configured with key labels, not \
                 with epochs: build it with Pkcs11ProviderBuilder::epochs(name) (keys labelled \
                 <name>-e<N>), or generate a key in the token and configure it as current",
                self.current_root_key_id()
            )));
        };
        let token = self.inner.token.clone();
        let label = self
            .with_rw_session(move |session| {
                let next = match epoch_labels(session, &name)?.last() {
                    Some((n, _)) => n.checked_add(1),
                    None => Some(1),
                };
                let Some(next) = next else {
                    return Ok(Err(Error::refused("every epoch number is used")));
                };
                let label = format!("{name}-e{next}");
                let handle = session.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::ValueLen((KEY_LEN as u64).into()),
                        Attribute::Label(label.as_bytes().to_vec()),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        // Nothing else: no wrapping of other keys out of the
                        // token with it, no copies that would outlive its
                        // destruction, no relabelling.
                        Attribute::Wrap(false),
                        Attribute::Unwrap(false),
                        Attribute::Sign(false),
                        Attribute::Verify(false),
                        Attribute::Derive(false),
                        Attribute::Copyable(false),
                        Attribute::Modifiable(false),
                    ],
                )?;
                // Another process may have made the same epoch meanwhile: two
                // keys under one label would name no root key; take ours back.
                if keys_labelled(session, &label)?.len() > 1 {
                    session.destroy_object(handle)?;
                    return Ok(Err(Error::refused(format!(
                        "another process created root key `{label}` in PKCS#11 token `{token}` \
                         at the same moment: run again"
                    ))));
                }
                // The token made what was asked (a token may ignore an
                // attribute): else every later start would refuse it.
                if let Err(e) = find_key(session, &token, &label) {
                    session.destroy_object(handle)?;
                    return Ok(Err(e));
                }
                if !probe(session, handle) {
                    session.destroy_object(handle)?;
                    return Ok(Err(Error::refused(format!(
                        "the key token `{token}` generated as `{label}` does not round-trip an \
                         AES-GCM encryption; it was destroyed again"
                    ))));
                }
                Ok(Ok(label))
            })
            .await??;
        tracing::info!(label, "created an epoch's root key in a PKCS#11 token");
        Ok(format!("pkcs11:{label}"))
    }

    /// With [`Pkcs11ProviderBuilder::epochs`]: destroys an older epoch's key
    /// in the token (`C_DestroyObject`); returns now. A key already gone
    /// returns now too. Keys configured with
    /// [`key`](Pkcs11ProviderBuilder::key) are refused: destroy them with the
    /// token's tools once they are out of the configuration.
    async fn destroy_root_key(&self, id: &str) -> Result<crate::Timestamp> {
        let Some(key) = self.held(id) else {
            return Err(Error::refused(format!(
                "root key `{id}` is not a PKCS#11 key this provider holds"
            )));
        };
        if key.id == self.current_root_key_id() {
            return Err(Error::refused(format!(
                "root key `{id}` is the current PKCS#11 key: it is never destroyed"
            )));
        }
        if key.epoch.is_none() {
            return Err(Error::refused(format!(
                "PKCS#11 key `{id}` is configured by its label, not as an epoch's key: remove \
                 it from the configuration, then destroy it with the token's tools"
            )));
        }
        let label = id.strip_prefix("pkcs11:").unwrap_or(id).to_string();
        let held = key.handle;
        let destroyed = self
            .with_rw_session(move |session| {
                let handles = keys_labelled(session, &label)?;
                match handles.as_slice() {
                    [handle] if *handle == held => session.destroy_object(*handle)?,
                    // Another object under the label: not the key this
                    // provider holds.
                    [_] => return Ok(usize::MAX),
                    // No object under the label: destroyed already, unless
                    // the key loaded is still there under another label.
                    [] => match session.get_attributes(held, &[AttributeType::Label]) {
                        Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {}
                        _ => return Ok(usize::MAX),
                    },
                    _ => {}
                }
                Ok(handles.len())
            })
            .await?;
        if destroyed == usize::MAX {
            return Err(Error::refused(format!(
                "the key labelled `{}` in PKCS#11 token `{}` is not the one this provider \
                 loaded as `{id}`: nothing was destroyed; restart and run again",
                id.strip_prefix("pkcs11:").unwrap_or(id),
                self.inner.token
            )));
        }
        if destroyed > 1 {
            return Err(Error::refused(format!(
                "{destroyed} secret keys are labelled `{}` in PKCS#11 token `{}`: none was \
                 destroyed; find out where the others came from",
                id.strip_prefix("pkcs11:").unwrap_or(id),
                self.inner.token
            )));
        }
        tracing::info!(
            key = id,
            destroyed,
            "destroyed an epoch's root key in a PKCS#11 token"
        );
        Ok(crate::Timestamp::now())
    }
}

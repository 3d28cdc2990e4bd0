//! Types that hold secrets: root keys, tenant keys and opened plaintext.
//!
//! Each keeps its bytes in one heap allocation (so moving the value does not leave
//! copies behind), zeroizes them on drop, prints `[REDACTED]` in `Debug`, and has no
//! `Display`, `Clone` or `Serialize`.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::TryRng as _;
use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::KEY_LEN;
use crate::error::{Error, Result};

/// Fills `buf` from the operating system's random number generator.
pub(crate) fn os_random(buf: &mut [u8]) -> Result<()> {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|e| Error::Provider {
            message: "the operating system's random number generator failed".into(),
            source: Some(Box::new(e)),
        })
}

/// A 256-bit tenant key (a data key), in the clear.
///
/// fieldseal creates tenant keys itself; this type is public for
/// [`KeyProvider`](crate::provider::KeyProvider) implementations, which wrap and unwrap it.
///
/// # Security
///
/// [`TenantKey::expose_secret`] is the only way to the bytes. Hand them to a KMS
/// or an AEAD and nowhere else: never log or store them unwrapped.
pub struct TenantKey(Box<[u8; KEY_LEN]>);

impl TenantKey {
    /// A fresh random key from the operating system's generator (as fieldseal
    /// makes every tenant key; public for tests of a [`KeyProvider`](crate::provider::KeyProvider)).
    ///
    /// # Errors
    ///
    /// [`Error::Provider`] if the operating system's generator fails.
    pub fn generate() -> Result<Self> {
        let mut key = Box::new([0u8; KEY_LEN]);
        os_random(key.as_mut_slice())?;
        Ok(Self(key))
    }

    /// Takes a key from 32 bytes (for example a KMS's plaintext response).
    ///
    /// # Errors
    ///
    /// [`Error::Provider`] if `bytes` is not exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let mut key = Box::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(Error::Provider {
                message: format!(
                    "an unwrapped tenant key must be {KEY_LEN} bytes, got {}",
                    bytes.len()
                ),
                source: None,
            });
        }
        key.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
        Ok(Self(key))
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for TenantKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for TenantKey {}

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantKey([REDACTED])")
    }
}

/// A 256-bit root key for the [`LocalKeyProvider`](crate::LocalKeyProvider).
///
/// Load one from a file ([`RootKey::from_file`], created by
/// [`RootKey::create_file`]), from an environment variable holding base64
/// ([`RootKey::from_env`]), or from bytes. The file and the variable hold the
/// same thing: the standard base64 encoding of the 32 key bytes.
///
/// # Security
///
/// Whoever holds the root key can unwrap every tenant key it wrapped. Keep the
/// file readable by the service's user only (`create_file` makes it `0600`), and
/// keep a backup: losing the root key loses every value it protects.
pub struct RootKey(Box<[u8; KEY_LEN]>);

impl RootKey {
    /// A fresh random root key from the operating system's generator.
    ///
    /// # Errors
    ///
    /// [`Error::Provider`] if the operating system's generator fails.
    pub fn generate() -> Result<Self> {
        let mut key = Box::new([0u8; KEY_LEN]);
        os_random(key.as_mut_slice())?;
        Ok(Self(key))
    }

    /// Takes a root key from its 32 bytes. The caller's array is zeroized.
    pub fn from_bytes(bytes: &mut [u8; KEY_LEN]) -> Self {
        let key = Box::new(*bytes);
        bytes.zeroize();
        Self(key)
    }

    /// The most bytes [`RootKey::from_file`] reads: base64 of 32 bytes is 44
    /// characters, with room for surrounding whitespace.
    pub const MAX_FILE_LEN: usize = 256;

    /// Parses standard base64 of 32 bytes; surrounding whitespace is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::RootKey`] if the text is not base64 of exactly 32 bytes. The
    /// message never contains the text.
    pub fn from_base64(text: &str) -> Result<Self> {
        Self::parse(text, "base64 text")
    }

    fn parse(text: &str, origin: &str) -> Result<Self> {
        let bad = |reason: &str| Error::RootKey {
            origin: origin.to_string(),
            reason: reason.to_string(),
            source: None,
        };
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| bad("not valid standard base64"))?,
        );
        let mut key = Box::new([0u8; KEY_LEN]);
        if decoded.len() != KEY_LEN {
            return Err(bad("a root key is base64 of exactly 32 bytes"));
        }
        key.iter_mut()
            .zip(decoded.iter())
            .for_each(|(d, s)| *d = *s);
        Ok(Self(key))
    }

    /// Reads a root key from the environment variable `name` (standard base64).
    ///
    /// # Security
    ///
    /// The variable stays in the process environment: child processes inherit
    /// it, and `/proc/<pid>/environ` shows it to anyone who can read that.
    /// Remove it after start-up where you can, and prefer a key file or a KMS.
    ///
    /// # Errors
    ///
    /// [`Error::RootKey`] if the variable is unset, not UTF-8, or not base64 of
    /// 32 bytes.
    pub fn from_env(name: &str) -> Result<Self> {
        let origin = format!("environment variable {name}");
        let value = Zeroizing::new(std::env::var(name).map_err(|e| Error::RootKey {
            origin: origin.clone(),
            reason: match e {
                std::env::VarError::NotPresent => "the variable is not set".into(),
                std::env::VarError::NotUnicode(_) => "the value is not UTF-8".into(),
            },
            source: None,
        })?);
        Self::parse(&value, &origin)
    }

    /// Reads a root key file (standard base64 of 32 bytes, as written by
    /// [`RootKey::create_file`]).
    ///
    /// # Security
    ///
    /// On Unix the file must be accessible to its owner only (mode `0600` or
    /// `0400`, as [`RootKey::create_file`] makes it): a key file its group or
    /// anyone else can read or write is refused, whoever runs the process.
    /// At most [`RootKey::MAX_FILE_LEN`] bytes are read.
    ///
    /// # Errors
    ///
    /// [`Error::RootKey`] if the file cannot be read, is accessible to its
    /// group or others (the message names the mode and the fix), is longer
    /// than a key file can be, or does not hold base64 of 32 bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Read as _;

        let path = path.as_ref();
        let origin = format!("file {}", path.display());
        let fail = |reason: String, source: Option<std::io::Error>| Error::RootKey {
            origin: origin.clone(),
            reason,
            source,
        };
        let file =
            std::fs::File::open(path).map_err(|e| fail("cannot read the file".into(), Some(e)))?;
        // The mode of the file opened, not of whatever the path names later.
        let metadata = file
            .metadata()
            .map_err(|e| fail("cannot read the file".into(), Some(e)))?;
        if !metadata.is_file() {
            return Err(fail("not a regular file".into(), None));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(
                    format!(
                        "the file's mode is {mode:04o}: its group or others can read or write \
                         it; make it private to its owner (chmod 600; for a Kubernetes secret \
                         volume, defaultMode: 0400)"
                    ),
                    None,
                ));
            }
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(Self::MAX_FILE_LEN + 1));
        file.take(u64::try_from(Self::MAX_FILE_LEN).unwrap_or(u64::MAX) + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail("cannot read the file".into(), Some(e)))?;
        if bytes.len() > Self::MAX_FILE_LEN {
            return Err(fail(
                format!(
                    "the file is longer than {} bytes: a key file holds 44 characters of \
                     base64; is this the right file?",
                    Self::MAX_FILE_LEN
                ),
                None,
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::RootKey {
            origin: origin.clone(),
            reason: "the file is not text (it should hold base64)".into(),
            source: None,
        })?;
        Self::parse(text, &origin)
    }

    /// Generates a root key and writes it to a new file at `path`, readable and
    /// writable by the owner only (mode `0600` on Unix). Never overwrites.
    ///
    /// # Errors
    ///
    /// [`Error::RootKeyFileExists`] if `path` exists; [`Error::RootKey`] if the
    /// file cannot be created or written.
    pub fn create_file(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Write as _;

        let path = path.as_ref();
        let key = Self::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let io_err = |e: std::io::Error| Error::RootKey {
            origin: format!("file {}", path.display()),
            reason: "cannot write the new key file".into(),
            source: Some(e),
        };
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::RootKeyFileExists {
                    path: path.to_path_buf(),
                }
            } else {
                io_err(e)
            }
        })?;
        let mut text = Zeroizing::new(STANDARD.encode(key.0.as_slice()));
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(key)
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for RootKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for RootKey {}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey([REDACTED])")
    }
}

/// An opened value: the plaintext, as a secret, and which key version sealed it.
///
/// # Security
///
/// The plaintext is reached only through [`ExposeSecret`], and is zeroized when
/// this value (or the secret taken out of it) is dropped. `Debug` prints the key
/// version and staleness, never the plaintext.
pub struct Opened {
    plaintext: SecretSlice<u8>,
    key_version: u32,
    stale: bool,
}

impl Opened {
    pub(crate) fn new(plaintext: Box<[u8]>, key_version: u32, stale: bool) -> Self {
        Self {
            plaintext: SecretBox::new(plaintext),
            key_version,
            stale,
        }
    }

    /// The plaintext.
    pub fn plaintext(&self) -> &SecretSlice<u8> {
        &self.plaintext
    }

    /// The plaintext, by value.
    pub fn into_plaintext(self) -> SecretSlice<u8> {
        self.plaintext
    }

    /// The plaintext as text, for values sealed from strings (tokens, API keys).
    ///
    /// # Errors
    ///
    /// [`Error::NotUtf8`] if the plaintext is not UTF-8; the bytes are zeroized.
    pub fn into_secret_string(self) -> Result<SecretString> {
        let bytes = Zeroizing::new(self.plaintext.expose_secret().to_vec());
        match std::str::from_utf8(&bytes) {
            Ok(text) => Ok(SecretString::from(Box::<str>::from(text))),
            Err(_) => Err(Error::NotUtf8),
        }
    }

    /// The tenant key version that sealed the value.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// `true` if the value was sealed under a key version that is no longer the
    /// tenant's primary: re-seal it (see `Sealer::reseal`) to move it to the
    /// current key.
    pub fn is_stale(&self) -> bool {
        self.stale
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("plaintext", &"[REDACTED]")
            .field("key_version", &self.key_version)
            .field("stale", &self.stale)
            .finish()
    }
}

/// A value read from a TEXT column while it is migrated to fieldseal in place
/// (see [`Sealer::open_migrating`](crate::Sealer::open_migrating)): either a
/// sealed value, opened, or plaintext written before the migration.
///
/// # Security
///
/// `Debug` prints which it is, never the plaintext.
#[non_exhaustive]
pub enum Migrating {
    /// A sealed value (starting with `fs:`), opened.
    Sealed(Opened),
    /// Plaintext from before the migration.
    Legacy(SecretString),
}

impl Migrating {
    /// `true` for plaintext that is not sealed yet.
    pub fn is_legacy(&self) -> bool {
        matches!(self, Self::Legacy(_))
    }
}

/// The plaintext, whichever it was: `migrating.expose_secret()`, so that
/// reading it is as visible in a review as reading an [`Opened`] value.
impl ExposeSecret<[u8]> for Migrating {
    fn expose_secret(&self) -> &[u8] {
        match self {
            Self::Sealed(opened) => opened.plaintext().expose_secret(),
            Self::Legacy(text) => text.expose_secret().as_bytes(),
        }
    }
}

impl fmt::Debug for Migrating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sealed(opened) => f.debug_tuple("Sealed").field(opened).finish(),
            Self::Legacy(_) => f.write_str("Legacy([REDACTED])"),
        }
    }
}

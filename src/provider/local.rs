//! The local root key provider: root keys held in process memory.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rand::Rng as _;

use super::{KeyProvider, WrapContext, WrappedKey, check_root_key_id};
use crate::crypto::{self, KEY_LEN, NONCE_LEN};
use crate::error::{Error, Result};
use crate::format::Algorithm;
use crate::format::TAG_LEN;
use crate::secret::{RootKey, TenantKey};

/// Version byte of the local provider's wrapped-key layout.
const WRAP_V1: u8 = 0x01;
/// `version (1) || nonce (12) || encrypted key (32) || tag (16)`.
const WRAPPED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

/// The embedded default provider: 256-bit root keys held in this process.
///
/// One root key is *current* and wraps new tenant keys; any number of
/// *previous* root keys still unwrap, which is how the root key is rotated:
/// configure the new key as current and the old one as previous, re-wrap every
/// tenant key, then drop the old key. A tenant key is wrapped with AES-256-GCM
/// under the root key, with a random nonce and the [`WrapContext`] as
/// associated data (FORMAT.md §"Wrapped keys").
///
/// ```
/// # fn main() -> Result<(), fieldseal::Error> {
/// use fieldseal::{LocalKeyProvider, RootKey};
///
/// let provider = LocalKeyProvider::new("root-2026-11", RootKey::generate()?)?
///     .with_previous("root-2025-01", RootKey::generate()?)?;
/// # let _ = provider;
/// # Ok(()) }
/// ```
///
/// # Security
///
/// The root keys live in process memory (zeroized on drop). Prefer a KMS
/// provider where one is available: there the root key never leaves the KMS.
/// Each root key should wrap fewer than 2^32 tenant keys (AES-GCM's limit for
/// random nonces); a deployment that gets near that has other problems first.
pub struct LocalKeyProvider {
    current: String,
    /// All root keys, the current one first.
    keys: Vec<(String, RootKey)>,
    /// For [`LocalKeyProvider::from_dir`]: the directory and the name its
    /// key files start with.
    dir: Option<(PathBuf, String)>,
}

impl LocalKeyProvider {
    /// A provider whose current (and only) root key is `key`, named `id`.
    ///
    /// The id is stored beside every tenant key it wraps, so it must stay the
    /// same for as long as the key is in use.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `id` is empty, longer than 255 bytes, or has
    /// characters other than ASCII letters, digits and `-_.:/`.
    pub fn new(id: impl Into<String>, key: RootKey) -> Result<Self> {
        let id = id.into();
        check_root_key_id(&id)?;
        Ok(Self {
            current: id.clone(),
            keys: vec![(id, key)],
            dir: None,
        })
    }

    /// Adds a previous root key: it unwraps, but never wraps.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `id` is invalid (see [`LocalKeyProvider::new`]) or
    /// already configured.
    pub fn with_previous(mut self, id: impl Into<String>, key: RootKey) -> Result<Self> {
        let id = id.into();
        check_root_key_id(&id)?;
        if self.keys.iter().any(|(known, _)| *known == id) {
            return Err(Error::config(format!(
                "root key id `{id}` is configured twice; every root key needs its own id"
            )));
        }
        self.keys.push((id, key));
        Ok(self)
    }

    /// A provider whose root keys are the files `<name>-e<N>.key` in `dir`
    /// (key files as [`RootKey::from_file`] reads them), one per epoch: the
    /// highest `N` is current, the others unwrap. Its root key ids are the
    /// file names without `.key`. [`KeyProvider::create_root_key`] writes the
    /// next epoch's file; [`KeyProvider::destroy_root_key`] overwrites and
    /// removes an older one.
    ///
    /// Create the first with [`RootKey::create_file`]
    /// (`dir/<name>-e1.key`).
    ///
    /// # Errors
    ///
    /// [`Error::RootKey`] if the directory cannot be read, holds no key file
    /// of that name, or a key file is refused (see [`RootKey::from_file`]);
    /// [`Error::Config`] if `name` is not a valid root key id.
    pub fn from_dir(dir: impl AsRef<Path>, name: &str) -> Result<Self> {
        let dir = dir.as_ref();
        check_root_key_id(name)?;
        let epochs = epoch_files(dir, name)?;
        let Some(&(newest, _)) = epochs.last() else {
            return Err(Error::RootKey {
                origin: dir.display().to_string(),
                reason: format!(
                    "no root key file `{name}-e<N>.key` in the directory; create the first \
                     with RootKey::create_file(\"{}\")",
                    dir.join(format!("{name}-e1.key")).display()
                ),
                source: None,
            });
        };
        let mut keys = Vec::with_capacity(epochs.len());
        for (n, path) in epochs.iter().rev() {
            keys.push((format!("{name}-e{n}"), RootKey::from_file(path)?));
        }
        Ok(Self {
            current: format!("{name}-e{newest}"),
            keys,
            dir: Some((dir.to_path_buf(), name.to_string())),
        })
    }

    fn key(&self, id: &str) -> Option<&RootKey> {
        self.keys
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, key)| key)
    }
}

/// The epoch key files `<name>-e<N>.key` in `dir`, by `N` ascending (`N` in
/// its canonical decimal form, from 1).
fn epoch_files(dir: &Path, name: &str) -> Result<Vec<(u32, PathBuf)>> {
    let unreadable = |e: std::io::Error| Error::RootKey {
        origin: dir.display().to_string(),
        reason: "the root key directory cannot be read".into(),
        source: Some(e),
    };
    let prefix = format!("{name}-e");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let file_name = entry.file_name();
        let Some(n) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".key"))
            .and_then(super::epoch_number)
        else {
            continue;
        };
        out.push((n, entry.path()));
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// Syncs a directory, so that a file created, renamed or removed in it stays
/// so after a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The local wrapped form (FORMAT.md §"Wrapped keys"):
/// `0x01 || nonce || AES-256-GCM(root, nonce, wrap_AD, key) || tag`. Only the
/// test-vector generator chooses the nonce.
pub(crate) fn wrap_with_nonce(
    root: &RootKey,
    nonce: &[u8; NONCE_LEN],
    key: &TenantKey,
    ctx: &WrapContext<'_>,
) -> Result<Vec<u8>> {
    let mut body = zeroize::Zeroizing::new(*key.expose_secret());
    let tag = crypto::aead_seal(
        Algorithm::Aes256Gcm,
        root.expose(),
        nonce,
        &ctx.aad(),
        body.as_mut_slice(),
    )
    .map_err(|()| Error::Provider {
        message: "AES-256-GCM refused to wrap a 32-byte key".into(),
        source: None,
    })?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.push(WRAP_V1);
    out.extend_from_slice(nonce);
    out.extend_from_slice(body.as_slice());
    out.extend_from_slice(&tag);
    Ok(out)
}

impl fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("current", &self.current)
            .field(
                "previous",
                &self.root_key_ids().get(1..).unwrap_or_default(),
            )
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn current_root_key_id(&self) -> &str {
        &self.current
    }

    fn root_key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey> {
        let root = self
            .key(&self.current)
            .ok_or_else(|| Error::RootKeyNotConfigured {
                id: self.current.clone(),
            })?;
        // From a key directory: a key whose file was destroyed (by
        // `retire-root` in another process) never wraps again, though this
        // process still holds it in memory.
        if let Some((dir, _)) = &self.dir
            && !dir.join(format!("{}.key", self.current)).is_file()
        {
            return Err(Error::RootKey {
                origin: dir.display().to_string(),
                reason: format!(
                    "root key `{}`, this process's current root key, was destroyed (its file is \
                     gone): restart the process so that it loads the current epoch's key",
                    self.current
                ),
                source: None,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let bytes = wrap_with_nonce(root, &nonce, key, ctx)?;
        Ok(WrappedKey::new(self.current.clone(), bytes))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey> {
        let root = self
            .key(wrapped.root_key_id())
            .ok_or_else(|| Error::RootKeyNotConfigured {
                id: wrapped.root_key_id().to_string(),
            })?;
        let failed = || Error::UnwrapFailed {
            subject: ctx.describe(),
            root_key_id: wrapped.root_key_id().to_string(),
        };
        let bytes = wrapped.as_bytes();
        let Some((&WRAP_V1, rest)) = bytes.split_first() else {
            return Err(failed());
        };
        let Some((nonce, rest)) = rest.split_first_chunk::<NONCE_LEN>() else {
            return Err(failed());
        };
        let Some((body, tag)) = rest.split_first_chunk::<KEY_LEN>() else {
            return Err(failed());
        };
        let Ok(tag) = <&[u8; TAG_LEN]>::try_from(tag) else {
            return Err(failed());
        };
        let mut key = zeroize::Zeroizing::new(*body);
        crypto::aead_open(
            Algorithm::Aes256Gcm,
            root.expose(),
            nonce,
            &ctx.aad(),
            key.as_mut_slice(),
            tag,
        )
        .map_err(|()| failed())?;
        TenantKey::from_slice(key.as_slice())
    }

    /// With [`LocalKeyProvider::from_dir`]: writes the next epoch's key file
    /// (readable by its owner only; never over an existing file): first under
    /// a temporary name, synced, read back, then renamed into place and the
    /// directory synced, so a crash leaves either no new key or a whole one.
    async fn create_root_key(&self) -> Result<String> {
        let Some((dir, name)) = &self.dir else {
            return Err(Error::refused(format!(
                "root key `{}` was given in memory, so its provider cannot create root keys: \
                 use LocalKeyProvider::from_dir, or create a key file and configure it",
                self.current
            )));
        };
        // From the directory, not from memory: another process may have
        // created one since this provider was built.
        let next = epoch_files(dir, name)?
            .last()
            .map_or(Some(1), |(n, _)| n.checked_add(1))
            .ok_or_else(|| Error::refused("every epoch number is used"))?;
        let id = format!("{name}-e{next}");
        let path = dir.join(format!("{id}.key"));
        let temporary = dir.join(format!("{id}.key.new"));
        let failed = |e: std::io::Error| Error::RootKey {
            origin: path.display().to_string(),
            reason: "the new key file cannot be put in place".into(),
            source: Some(e),
        };
        // A temporary file left by a crash is not a key anyone used.
        let _ = std::fs::remove_file(&temporary);
        let key = RootKey::create_file(&temporary)?;
        let back = RootKey::from_file(&temporary)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            key.expose().as_slice(),
            back.expose().as_slice(),
        )) {
            return Err(Error::RootKey {
                origin: temporary.display().to_string(),
                reason: "the new key file does not read back as written".into(),
                source: None,
            });
        }
        if path.exists() {
            let _ = std::fs::remove_file(&temporary);
            return Err(Error::RootKeyFileExists { path });
        }
        std::fs::rename(&temporary, &path).map_err(failed)?;
        sync_dir(dir).map_err(failed)?;
        Ok(id)
    }

    /// With [`LocalKeyProvider::from_dir`]: only an older epoch file of this
    /// provider's name, a regular file (no link) holding the key this
    /// provider holds under that id. It is renamed away first (so no process
    /// loads it again, and a crash leaves no half-written key file), then
    /// overwritten with zeros, synced and removed. Copies elsewhere (backups
    /// of the directory, other hosts, snapshots) are yours to remove; this
    /// process's copy in memory goes when the provider is dropped.
    async fn destroy_root_key(&self, id: &str) -> Result<crate::Timestamp> {
        let Some((dir, name)) = &self.dir else {
            return Err(Error::refused(format!(
                "root key `{id}` was given in memory: there is no file to destroy"
            )));
        };
        let epochs = epoch_files(dir, name)?;
        let newest = epochs.last().map(|(n, _)| format!("{name}-e{n}"));
        if id == self.current || newest.as_deref() == Some(id) {
            return Err(Error::refused(format!(
                "root key `{id}` is the current root key: it is never destroyed"
            )));
        }
        let Some((_, path)) = epochs.iter().find(|(n, _)| format!("{name}-e{n}") == id) else {
            return Err(Error::refused(format!(
                "root key `{id}` is not one of the key files `{name}-e<N>.key` in {}",
                dir.display()
            )));
        };
        let Some(held) = self.key(id) else {
            return Err(Error::refused(format!(
                "root key `{id}` was not loaded by this provider; build it again"
            )));
        };
        let failed = |e: std::io::Error| Error::RootKey {
            origin: path.display().to_string(),
            reason: "the key file cannot be destroyed".into(),
            source: Some(e),
        };
        let meta = std::fs::symlink_metadata(path).map_err(failed)?;
        #[cfg(unix)]
        let links = std::os::unix::fs::MetadataExt::nlink(&meta);
        #[cfg(not(unix))]
        let links = 1;
        if !meta.file_type().is_file() || links != 1 {
            return Err(Error::refused(format!(
                "{} is a link, or not a regular file: destroy it by hand",
                path.display()
            )));
        }
        let on_disk = RootKey::from_file(path)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            on_disk.expose().as_slice(),
            held.expose().as_slice(),
        )) {
            return Err(Error::refused(format!(
                "{} does not hold the key this provider holds as `{id}`: nothing was destroyed",
                path.display()
            )));
        }
        let len = usize::try_from(meta.len()).unwrap_or(0);
        let doomed = dir.join(format!("{id}.key.destroyed"));
        std::fs::rename(path, &doomed).map_err(failed)?;
        sync_dir(dir).map_err(failed)?;
        {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(&doomed)
                .map_err(failed)?;
            file.write_all(&vec![0u8; len])
                .and_then(|()| file.sync_all())
                .map_err(failed)?;
        }
        std::fs::remove_file(&doomed).map_err(failed)?;
        sync_dir(dir).map_err(failed)?;
        Ok(crate::Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> LocalKeyProvider {
        LocalKeyProvider::new("k1", RootKey::from_bytes(&mut [7u8; 32])).unwrap()
    }

    #[tokio::test]
    async fn wrap_round_trips_and_binds_context() {
        let p = provider();
        let key = TenantKey::from_slice(&[9u8; 32]).unwrap();
        let ctx = WrapContext::tenant_key("acme", 1);
        let wrapped = p.wrap(&key, &ctx).await.unwrap();
        assert_eq!(wrapped.as_bytes().len(), WRAPPED_LEN);
        let back = p.unwrap(&wrapped, &ctx).await.unwrap();
        assert_eq!(back.expose_secret(), key.expose_secret());

        for other in [
            WrapContext::tenant_key("acme", 2),
            WrapContext::tenant_key("other", 1),
            WrapContext::audit_key(1),
        ] {
            assert!(matches!(
                p.unwrap(&wrapped, &other).await,
                Err(Error::UnwrapFailed { .. })
            ));
        }
    }

    #[tokio::test]
    async fn unknown_root_and_bad_bytes() {
        let p = provider();
        let ctx = WrapContext::tenant_key("acme", 1);
        let foreign = WrappedKey::new("k9", vec![1; WRAPPED_LEN]);
        assert!(matches!(
            p.unwrap(&foreign, &ctx).await,
            Err(Error::RootKeyNotConfigured { id }) if id == "k9"
        ));
        for len in [0, 1, 13, 45, WRAPPED_LEN - 1, WRAPPED_LEN + 1] {
            let bad = WrappedKey::new("k1", vec![1; len]);
            assert!(matches!(
                p.unwrap(&bad, &ctx).await,
                Err(Error::UnwrapFailed { .. })
            ));
        }
    }

    #[test]
    fn ids_are_validated() {
        let k = || RootKey::from_bytes(&mut [1u8; 32]);
        assert!(LocalKeyProvider::new("", k()).is_err());
        assert!(LocalKeyProvider::new("a b", k()).is_err());
        assert!(
            LocalKeyProvider::new("k1", k())
                .unwrap()
                .with_previous("k1", k())
                .is_err()
        );
        assert!(LocalKeyProvider::new("arn:aws/k-1_2.3", k()).is_ok());
    }
}

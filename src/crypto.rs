//! The primitive layer: HKDF-SHA256 record-key derivation and the two AEADs.
//!
//! Everything above this module deals in tenant keys, contexts and sealed values;
//! everything cryptographic goes through the handful of functions here, which is
//! also where the Wycheproof vectors are run.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::format::Algorithm;

/// Length of a tenant key, a root key and a record key.
pub(crate) const KEY_LEN: usize = 32;
/// Length of an AEAD nonce for both algorithms.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of an AEAD tag for both algorithms.
pub(crate) const TAG_LEN: usize = 16;
/// Length of the key commitment stored in a sealed value.
pub(crate) const COMMITMENT_LEN: usize = 16;
/// Bytes of HKDF output per record: key, nonce, commitment.
const OKM_LEN: usize = KEY_LEN + NONCE_LEN + COMMITMENT_LEN;

/// The HKDF-Extract salt that turns a tenant key into the record-key PRK.
///
/// Fixed and public: it separates fieldseal's use of a tenant key from any other.
pub(crate) const RECORD_PRK_SALT: &[u8] = b"fieldseal/v1/record-key";

/// An HKDF-SHA256 pseudorandom key, ready to expand.
///
/// Holds the keyed HMAC state, so HKDF-Expand costs only the compression calls for
/// its output blocks. Zeroized on drop (through `hmac`'s and `sha2`'s `zeroize`
/// features).
#[derive(Clone)]
pub(crate) struct Prk(Hkdf<Sha256>);

impl Prk {
    /// HKDF-Extract(salt, ikm).
    pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Self {
        Self(Hkdf::<Sha256>::new(Some(salt), ikm))
    }

    /// HKDF-Expand(prk, info, out.len()). Fails only if `out` is longer than
    /// 255 × 32 bytes.
    pub(crate) fn expand(&self, info: &[u8], out: &mut [u8]) -> Result<(), ()> {
        self.0.expand(info, out).map_err(|_| ())
    }
}

impl std::fmt::Debug for Prk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prk([REDACTED])")
    }
}

/// Derives per-record keys from one tenant key.
///
/// The extract step runs once per tenant key version (when it is loaded), so
/// sealing a value costs one HKDF-Expand of 60 bytes: two HMAC-SHA256 blocks.
#[derive(Clone, Debug)]
pub(crate) struct RecordKeyDeriver(Prk);

impl RecordKeyDeriver {
    pub(crate) fn new(tenant_key: &[u8; KEY_LEN]) -> Self {
        Self(Prk::extract(RECORD_PRK_SALT, tenant_key))
    }

    /// The record key, nonce and commitment for a value whose header (format
    /// version, algorithm, key version, salt) is `info`.
    pub(crate) fn derive(&self, info: &[u8]) -> RecordKey {
        let mut okm = Zeroizing::new([0u8; OKM_LEN]);
        // 60 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
        let _ = self.0.expand(info, okm.as_mut_slice());
        let mut out = RecordKey {
            key: [0; KEY_LEN],
            nonce: [0; NONCE_LEN],
            commitment: [0; COMMITMENT_LEN],
        };
        let (key, rest) = okm.split_at(KEY_LEN);
        let (nonce, commitment) = rest.split_at(NONCE_LEN);
        copy(&mut out.key, key);
        copy(&mut out.nonce, nonce);
        copy(&mut out.commitment, commitment);
        out
    }
}

/// Copies `src` into `dst` up to the shorter length (callers pass equal lengths).
fn copy(dst: &mut [u8], src: &[u8]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
}

/// The HKDF output for one record: `key (32) || nonce (12) || commitment (16)`.
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub(crate) struct RecordKey {
    pub(crate) key: [u8; KEY_LEN],
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) commitment: [u8; COMMITMENT_LEN],
}

impl RecordKey {
    /// Constant-time comparison of a stored commitment with the derived one.
    pub(crate) fn commitment_matches(&self, stored: &[u8]) -> bool {
        bool::from(self.commitment.as_slice().ct_eq(stored))
    }
}

/// AEAD-encrypts `buf` in place and returns the tag.
pub(crate) fn aead_seal(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], ()> {
    let tag = match algorithm {
        Algorithm::Aes256Gcm => Aes256Gcm::new(key.into())
            .encrypt_inout_detached(nonce.into(), aad, buf.into())
            .map_err(|_| ())?,
        Algorithm::ChaCha20Poly1305 => ChaCha20Poly1305::new(key.into())
            .encrypt_inout_detached(nonce.into(), aad, buf.into())
            .map_err(|_| ())?,
    };
    Ok(tag.into())
}

/// AEAD-decrypts `buf` in place after checking `tag`. On failure `buf` is
/// zeroed, so no partial plaintext survives.
pub(crate) fn aead_open(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), ()> {
    let result = match algorithm {
        Algorithm::Aes256Gcm => Aes256Gcm::new(key.into()).decrypt_inout_detached(
            nonce.into(),
            aad,
            (&mut *buf).into(),
            tag.into(),
        ),
        Algorithm::ChaCha20Poly1305 => ChaCha20Poly1305::new(key.into()).decrypt_inout_detached(
            nonce.into(),
            aad,
            (&mut *buf).into(),
            tag.into(),
        ),
    };
    if result.is_err() {
        zeroize::Zeroize::zeroize(buf);
        return Err(());
    }
    Ok(())
}

#[cfg(test)]
mod tests;

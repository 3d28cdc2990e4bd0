//! The primitive layer: HKDF-SHA256 record-key derivation and the two AEADs.
//!
//! Everything above this module deals in tenant keys, contexts and sealed values;
//! everything cryptographic goes through the handful of functions here, which is
//! also where the Wycheproof vectors are run.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256Enc;
use chacha20poly1305::ChaCha20Poly1305;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::format::{Algorithm, COMMITMENT_LEN, TAG_LEN};

/// AES-256-GCM over the encryption-only AES key schedule: GCM never runs the
/// block cipher backwards, so the decryption round keys would be wasted work
/// (and more key material to zeroize).
type Aes256Gcm = aes_gcm::AesGcm<Aes256Enc, U12>;

/// Length of a tenant key, a root key and a record key.
pub(crate) const KEY_LEN: usize = 32;
/// Length of an AEAD nonce for both algorithms.
pub(crate) const NONCE_LEN: usize = 12;
/// Bytes of HKDF output per record: key, nonce, commitment.
#[cfg(test)]
const OKM_LEN: usize = KEY_LEN + NONCE_LEN + COMMITMENT_LEN;

/// The HKDF-Extract salt that turns a tenant key into the record-key PRK.
///
/// Fixed and public: it separates fieldseal's use of a tenant key from any other.
pub(crate) const RECORD_PRK_SALT: &[u8] = b"fieldseal/v1/record-key";

/// The HKDF-Extract salt that turns a tenant key into the blind-index PRK: a
/// different salt, so that index keys and record keys never coincide.
pub(crate) const INDEX_PRK_SALT: &[u8] = b"fieldseal/v1/blind-index";

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
const BLOCK_LEN: usize = 64;

/// HMAC-SHA256 (RFC 2104) with the key already absorbed: the SHA-256 states
/// after the `key ^ ipad` and `key ^ opad` blocks.
///
/// Built on `sha2`'s compression function so that one MAC of a short message
/// costs exactly two compressions, with no buffer bookkeeping, and so that the
/// keyed state is 64 bytes that zeroize on drop. Checked against RFC 5869,
/// Wycheproof and the `hkdf` crate in the tests.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub(crate) struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacKey {
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut block = Zeroizing::new([0u8; BLOCK_LEN]);
        if key.len() > BLOCK_LEN {
            let digest = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(key)));
            copy(block.as_mut_slice(), digest.as_slice());
        } else {
            copy(block.as_mut_slice(), key);
        }
        block.iter_mut().for_each(|b| *b ^= 0x36);
        let mut inner = SHA256_IV;
        sha2::block_api::compress256(&mut inner, std::slice::from_ref(&*block));
        block.iter_mut().for_each(|b| *b ^= 0x36 ^ 0x5c);
        let mut outer = SHA256_IV;
        sha2::block_api::compress256(&mut outer, std::slice::from_ref(&*block));
        Self { inner, outer }
    }

    /// HMAC of the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let inner = finish_sha256(self.inner, parts);
        finish_sha256(self.outer, &[inner.as_slice()])
    }
}

/// Completes a SHA-256 computation whose state has absorbed exactly one block,
/// over the concatenation of `parts`.
fn finish_sha256(mut state: [u32; 8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut block = Zeroizing::new([0u8; BLOCK_LEN]);
    let mut used = 0;
    let mut total: u64 = BLOCK_LEN as u64;
    for part in parts {
        total = total.wrapping_add(part.len() as u64);
        let mut rest: &[u8] = part;
        while !rest.is_empty() {
            let (_, free) = block.split_at_mut(used);
            let n = free.len().min(rest.len());
            let (now, later) = rest.split_at(n);
            copy(free, now);
            used += n;
            rest = later;
            if used == BLOCK_LEN {
                sha2::block_api::compress256(&mut state, std::slice::from_ref(&*block));
                used = 0;
            }
        }
    }
    // Padding: 0x80, zeros, and the message length in bits, big-endian.
    let (_, free) = block.split_at_mut(used);
    free.fill(0);
    if let Some(first) = free.first_mut() {
        *first = 0x80;
    }
    if used + 1 > BLOCK_LEN - 8 {
        sha2::block_api::compress256(&mut state, std::slice::from_ref(&*block));
        block.fill(0);
    }
    let (_, length) = block.split_at_mut(BLOCK_LEN - 8);
    copy(length, &total.wrapping_mul(8).to_be_bytes());
    sha2::block_api::compress256(&mut state, std::slice::from_ref(&*block));
    let mut out = Zeroizing::new([0u8; 32]);
    for (chunk, word) in out.chunks_exact_mut(4).zip(state.iter()) {
        copy(chunk, &word.to_be_bytes());
    }
    zeroize::Zeroize::zeroize(&mut state);
    out
}

/// An HKDF-SHA256 pseudorandom key (RFC 5869), ready to expand.
#[derive(Clone)]
pub(crate) struct Prk(HmacKey);

impl Prk {
    /// HKDF-Extract(salt, ikm). An empty salt is the same as 32 zero bytes.
    pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Self {
        let prk = HmacKey::new(salt).mac(&[ikm]);
        Self(HmacKey::new(prk.as_slice()))
    }

    /// HKDF-Expand(prk, info, out.len()). Fails only if `out` is longer than
    /// 255 × 32 bytes. (Record keys use the specialised
    /// [`TenantKeyDeriver::derive`]; this general form checks it.)
    #[cfg(test)]
    pub(crate) fn expand(&self, info: &[u8], out: &mut [u8]) -> Result<(), ()> {
        if out.len() > 255 * 32 {
            return Err(());
        }
        let mut previous: Option<Zeroizing<[u8; 32]>> = None;
        for (counter, chunk) in (1u8..=255).zip(out.chunks_mut(32)) {
            let t = match &previous {
                Some(prev) => self.0.mac(&[prev.as_slice(), info, &[counter]]),
                None => self.0.mac(&[info, &[counter]]),
            };
            copy(chunk, t.as_slice());
            previous = Some(t);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Prk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prk([REDACTED])")
    }
}

/// Derives per-record keys and blind-index keys from one tenant key.
///
/// The extract steps run once per tenant key version (when it is loaded), so
/// sealing a value costs one HKDF-Expand of 60 bytes: two HMAC-SHA256 blocks,
/// four SHA-256 compressions.
#[derive(Clone, Debug)]
pub(crate) struct TenantKeyDeriver {
    /// HKDF-Extract(RECORD_PRK_SALT, tenant key).
    record: Prk,
    /// HKDF-Extract(INDEX_PRK_SALT, tenant key).
    index: Prk,
}

impl TenantKeyDeriver {
    pub(crate) fn new(tenant_key: &[u8; KEY_LEN]) -> Self {
        Self {
            record: Prk::extract(RECORD_PRK_SALT, tenant_key),
            index: Prk::extract(INDEX_PRK_SALT, tenant_key),
        }
    }

    /// The HMAC key of one blind index: HKDF-Expand(IPRK, info, 32), which
    /// for 32 bytes is the one block `HMAC(IPRK, info || 0x01)` (FORMAT.md
    /// §"Index values").
    pub(crate) fn index_key(&self, info: &[u8]) -> HmacKey {
        let key = self.index.0.mac(&[info, &[0x01]]);
        HmacKey::new(key.as_slice())
    }

    /// The record key, nonce and commitment for a value whose 22-byte header
    /// (format version, algorithm, key version, salt) is `info`.
    ///
    /// This is HKDF-Expand(PRK, info, 60) — `T(1) || T(2)[..28]` — written out
    /// for this one input length, so that it costs exactly four SHA-256
    /// compressions and one scratch block. `expand_matches_generic_hkdf` in the
    /// tests checks it against [`Prk::expand`].
    pub(crate) fn derive(&self, info: &[u8; INFO_LEN]) -> RecordKey {
        let hmac = &self.record.0;
        let mut block = [0u8; BLOCK_LEN];
        let mut t1 = [0u32; 8];
        let mut t2 = [0u32; 8];

        // T(1) = HMAC(PRK, info || 0x01): inner hash over 64 + 23 bytes.
        put(&mut block, 0, info);
        put(&mut block, INFO_LEN, &[0x01, 0x80]);
        put(
            &mut block,
            56,
            &((BLOCK_LEN + INFO_LEN + 1) as u64 * 8).to_be_bytes(),
        );
        hmac_block(&hmac.inner, &hmac.outer, &mut block, &mut t1);

        // T(2) = HMAC(PRK, T(1) || info || 0x02): inner hash over 64 + 55 bytes,
        // whose padding exactly fills the block.
        block = [0u8; BLOCK_LEN];
        put_words(&mut block, 0, &t1);
        put(&mut block, 32, info);
        put(&mut block, 32 + INFO_LEN, &[0x02, 0x80]);
        put(
            &mut block,
            56,
            &((BLOCK_LEN + 32 + INFO_LEN + 1) as u64 * 8).to_be_bytes(),
        );
        hmac_block(&hmac.inner, &hmac.outer, &mut block, &mut t2);

        let mut out = RecordKey {
            key: [0; KEY_LEN],
            nonce: [0; NONCE_LEN],
            commitment: [0; COMMITMENT_LEN],
        };
        for (dst, word) in out.key.chunks_exact_mut(4).zip(&t1) {
            dst.copy_from_slice(&word.to_be_bytes());
        }
        // T(2)[..12] is the nonce (three words), T(2)[12..28] the commitment.
        let (nonce_words, rest) = t2.split_at(3);
        for (dst, word) in out.nonce.chunks_exact_mut(4).zip(nonce_words) {
            dst.copy_from_slice(&word.to_be_bytes());
        }
        for (dst, word) in out.commitment.chunks_exact_mut(4).zip(rest) {
            dst.copy_from_slice(&word.to_be_bytes());
        }
        zeroize::Zeroize::zeroize(&mut block);
        zeroize::Zeroize::zeroize(&mut t1);
        zeroize::Zeroize::zeroize(&mut t2);
        out
    }
}

/// Length of the HKDF `info` for a record: the sealed value's header.
pub(crate) const INFO_LEN: usize = 22;
const _: () = assert!(INFO_LEN == crate::format::HEADER_LEN);
// `derive` lays out T(2)'s inner block as T(1) || info || 0x02 || 0x80 before
// the 8-byte length: it must fit in one block.
const _: () = assert!(32 + INFO_LEN + 2 <= BLOCK_LEN - 8);

/// One HMAC output from keyed states, where `block` is the already padded
/// final inner block. Leaves the tag in `out` and garbage in `block`.
#[inline(always)]
fn hmac_block(inner: &[u32; 8], outer: &[u32; 8], block: &mut [u8; BLOCK_LEN], out: &mut [u32; 8]) {
    *out = *inner;
    sha2::block_api::compress256(out, std::slice::from_ref(block));
    *block = [0u8; BLOCK_LEN];
    put_words(block, 0, out);
    put(block, 32, &[0x80]);
    put(block, 56, &((BLOCK_LEN + 32) as u64 * 8).to_be_bytes());
    *out = *outer;
    sha2::block_api::compress256(out, std::slice::from_ref(block));
}

#[inline(always)]
fn put(block: &mut [u8; BLOCK_LEN], at: usize, bytes: &[u8]) {
    if let Some(dst) = block.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

#[inline(always)]
fn put_words(block: &mut [u8; BLOCK_LEN], at: usize, words: &[u32; 8]) {
    for (i, word) in words.iter().enumerate() {
        put(block, at + 4 * i, &word.to_be_bytes());
    }
}

/// Copies `src` into `dst` up to the shorter length (callers pass equal lengths).
fn copy(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    if let (Some(dst), Some(src)) = (dst.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
}

/// The HKDF output for one record: `key (32) || nonce (12) || commitment (16)`.
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub(crate) struct RecordKey {
    pub(crate) key: [u8; KEY_LEN],
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) commitment: [u8; COMMITMENT_LEN],
}

impl RecordKey {
    /// Constant-time comparison of a stored commitment with the derived one,
    /// as a [`subtle::Choice`] so that the caller need not branch on it.
    pub(crate) fn commitment_matches(&self, stored: &[u8; COMMITMENT_LEN]) -> subtle::Choice {
        self.commitment.as_slice().ct_eq(stored)
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
    let result =
        match algorithm {
            Algorithm::Aes256Gcm => Aes256Gcm::new(key.into()).decrypt_inout_detached(
                nonce.into(),
                aad,
                (&mut *buf).into(),
                tag.into(),
            ),
            Algorithm::ChaCha20Poly1305 => ChaCha20Poly1305::new(key.into())
                .decrypt_inout_detached(nonce.into(), aad, (&mut *buf).into(), tag.into()),
        };
    if result.is_err() {
        zeroize::Zeroize::zeroize(buf);
        return Err(());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;

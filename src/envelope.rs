//! Sealing and opening one value under a tenant key version (FORMAT.md
//! §"Sealing" and §"Opening"): the record key's derivation, the AEAD and the
//! key commitment. The byte layout itself is [`crate::format`]'s: this module
//! asks it for the header and for a value's parts.

use rand::Rng as _;

use crate::crypto::{self, TenantKeyDeriver};
use crate::error::{Error, Result};
use crate::format::{
    self, Algorithm, HEADER_LEN, MAX_PLAINTEXT_LEN, OVERHEAD, SALT_LEN, SealedValue,
};

/// A plaintext of at most [`MAX_PLAINTEXT_LEN`] bytes: FORMAT.md §"Sealing"
/// step 2, checked once where each entry point's order puts it (before the
/// key lookup), and the only way into [`seal_record`], so that no path can
/// skip it. No `Debug`: it is the plaintext.
#[derive(Clone, Copy)]
pub(crate) struct Plaintext<'a>(&'a [u8]);

impl<'a> Plaintext<'a> {
    /// # Errors
    ///
    /// [`Error::PlaintextTooLarge`].
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::PlaintextTooLarge {
                len: bytes.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        Ok(Self(bytes))
    }

    pub(crate) fn as_bytes(self) -> &'a [u8] {
        self.0
    }
}

/// Seals one value (FORMAT.md §"Sealing") under a fresh random salt.
pub(crate) fn seal_record(
    deriver: &TenantKeyDeriver,
    algorithm: Algorithm,
    key_version: u32,
    aad: &[u8],
    plaintext: Plaintext<'_>,
) -> Result<SealedValue> {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    seal_salted(deriver, algorithm, key_version, aad, plaintext, &salt)
}

/// Seals with a given salt: only the test-vector generator chooses one.
#[cfg(test)]
pub(crate) fn seal_with_salt(
    deriver: &TenantKeyDeriver,
    algorithm: Algorithm,
    key_version: u32,
    aad: &[u8],
    plaintext: &[u8],
    salt: &[u8; SALT_LEN],
) -> Result<SealedValue> {
    let plaintext = Plaintext::new(plaintext)?;
    seal_salted(deriver, algorithm, key_version, aad, plaintext, salt)
}

/// FORMAT.md §"Sealing" steps 4 to 7, under `salt` (step 3).
fn seal_salted(
    deriver: &TenantKeyDeriver,
    algorithm: Algorithm,
    key_version: u32,
    aad: &[u8],
    plaintext: Plaintext<'_>,
    salt: &[u8; SALT_LEN],
) -> Result<SealedValue> {
    let plaintext = plaintext.as_bytes();
    let header = format::header(algorithm, key_version, salt);
    let record_key = deriver.derive(&header);

    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&record_key.commitment);
    out.extend_from_slice(plaintext);
    let body_start = HEADER_LEN + record_key.commitment.len();
    let sealed = match out.split_at_mut_checked(body_start) {
        Some((_, body)) => {
            crypto::aead_seal(algorithm, &record_key.key, &record_key.nonce, aad, body)
        }
        None => Err(()),
    };
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(SealedValue::from_sealed_parts(out, algorithm, key_version))
        }
        Err(()) => {
            // The buffer may still hold plaintext.
            zeroize::Zeroize::zeroize(&mut out);
            Err(Error::PlaintextTooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            })
        }
    }
}

/// Opens one value (FORMAT.md §"Opening", steps 11 and 12): the commitment
/// check and the AEAD check both run on every call, and their results are
/// combined into the one opaque error.
///
/// The commitment's verdict is never branched on before decryption: when it
/// fails, one bit of the tag given to the AEAD is flipped (a constant-time
/// select), so the AEAD runs exactly its failure path. Every failure then
/// costs one derivation and one tag computation over the ciphertext, whichever
/// check failed, and the time to fail does not tell "sealed under this tenant
/// key" from "sealed under another".
pub(crate) fn open_record(
    deriver: &TenantKeyDeriver,
    sealed: &SealedValue,
    aad: &[u8],
) -> Result<Box<[u8]>> {
    use subtle::ConditionallySelectable as _;

    let parts = sealed
        .parts()
        .ok_or_else(|| Error::malformed("truncated"))?;
    let record_key = deriver.derive(parts.header);
    let committed = record_key.commitment_matches(parts.commitment);
    let mut tag = *parts.tag;
    if let Some(first) = tag.first_mut() {
        *first ^= u8::conditional_select(&1, &0, committed);
    }
    // An exact-size allocation: the plaintext is never copied again.
    let mut buf: Box<[u8]> = Box::from(parts.ciphertext);
    let authentic = crypto::aead_open(
        sealed.algorithm(),
        &record_key.key,
        &record_key.nonce,
        aad,
        &mut buf,
        &tag,
    )
    .is_ok();
    // With the tag spoiled, the AEAD accepts only with probability 2^-128;
    // the commitment is required all the same.
    if authentic && bool::from(committed) {
        Ok(buf)
    } else {
        zeroize::Zeroize::zeroize(&mut buf);
        Err(Error::OpenFailed)
    }
}

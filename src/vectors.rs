//! Generates and checks `tests/vectors/v1.json`, the published test vectors of
//! `docs/FORMAT.md`.
//!
//! The vectors are computed here, with fixed keys, salts and nonces, through the
//! same functions that seal, wrap and chain real values. `cargo test`
//! recomputes them and fails if one byte differs from the committed file. To
//! regenerate after an intended change (a new vector, or a new format version):
//! `FIELDSEAL_WRITE_VECTORS=1 cargo test --lib vectors`.
//!
//! `tests/vectors.rs` then checks every vector through the public API, and
//! through an implementation of the specification written from FORMAT.md
//! alone, together with deliberately faulty variants of it that must each
//! fail at least one vector.
//!
//! The file is ASCII: every other character is written as a JSON `\u` escape,
//! so that invisible characters (U+200B) and combining marks stay visible.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::audit::{AUDIT_MAC_LEN, AuditEntry, entry_mac, pruned_detail};
use crate::blind_index::{BlindIndex, Normalizer};
use crate::context::Context;
use crate::crypto::tests::{gcm_constants, gf_inv, gf_mul, gf_pow, ghash};
use crate::crypto::{HmacKey, TenantKeyDeriver, aead_open};
use crate::envelope::{Plaintext, seal_with_salt};
use crate::error::Error;
use crate::format::{Algorithm, MAX_PLAINTEXT_LEN, OVERHEAD, SealedValue};
use crate::provider::{WrapContext, wrap_with_nonce};
use crate::secret::{RootKey, TenantKey};
use crate::time::Timestamp;

// ---------------------------------------------------------------------------
// The key store the vectors are read against.

struct KeySpec {
    version: u32,
    state: &'static str,
    bytes: [u8; 32],
    /// Destroyed versions have no published key: their bytes only seal the
    /// vector values, which a reader must refuse before any cryptography.
    published: bool,
}

struct TenantSpec {
    tenant: &'static str,
    min_decryption_version: u32,
    shredded: bool,
    keys: Vec<KeySpec>,
}

fn key(version: u32, state: &'static str, bytes: &[u8; 32]) -> KeySpec {
    KeySpec {
        version,
        state,
        bytes: *bytes,
        published: state != "destroyed",
    }
}

fn tenants() -> Vec<TenantSpec> {
    vec![
        TenantSpec {
            tenant: "acme",
            min_decryption_version: 0,
            shredded: false,
            keys: vec![
                key(1, "active", b"fieldseal test vector: acme v1!!"),
                key(2, "active", b"fieldseal test vector: acme v2!!"),
            ],
        },
        TenantSpec {
            tenant: "globex",
            min_decryption_version: 0,
            shredded: false,
            keys: vec![key(1, "active", b"fieldseal test vector: globex v1")],
        },
        TenantSpec {
            tenant: ZURICH,
            min_decryption_version: 0,
            shredded: false,
            keys: vec![key(1, "active", b"fieldseal test vector: zurich v1")],
        },
        TenantSpec {
            tenant: "initech",
            min_decryption_version: 4,
            shredded: false,
            keys: vec![
                key(1, "destroyed", b"fieldseal test vector: initechv1"),
                key(2, "disabled", b"fieldseal test vector: initechv2"),
                key(3, "active", b"fieldseal test vector: initechv3"),
                key(4, "active", b"fieldseal test vector: initechv4"),
            ],
        },
        TenantSpec {
            tenant: "umbrella",
            min_decryption_version: 0,
            shredded: true,
            keys: vec![key(1, "destroyed", b"fieldseal test vector: umbrella1")],
        },
    ]
}

/// "zürich" in NFC (U+00FC).
const ZURICH: &str = "z\u{fc}rich";
/// The same name in NFD (u + U+0308): looks the same, and must be refused.
const ZURICH_NFD: &str = "zu\u{308}rich";

fn deriver(tenant: &str, version: u32) -> TenantKeyDeriver {
    let all = tenants();
    let k = all
        .iter()
        .filter(|t| t.tenant == tenant)
        .flat_map(|t| &t.keys)
        .find(|k| k.version == version)
        .expect("vector key exists");
    TenantKeyDeriver::new(&k.bytes)
}

fn tenants_json() -> Value {
    specs_json(&tenants())
}

fn specs_json(specs: &[TenantSpec]) -> Value {
    specs
        .iter()
        .map(|t| {
            let keys: Vec<Value> = t
                .keys
                .iter()
                .map(|k| {
                    let mut v = json!({ "version": k.version, "state": k.state });
                    if k.published {
                        v["key"] = json!(hex::encode(k.bytes));
                    }
                    v
                })
                .collect();
            json!({
                "tenant": t.tenant,
                "min_decryption_version": t.min_decryption_version,
                "shredded": t.shredded,
                "keys": keys,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Contexts, as a caller gives them (extras in the caller's order).

#[derive(Clone)]
struct Ctx {
    tenant: String,
    table: String,
    column: String,
    row: Option<String>,
    extras: Vec<(String, String)>,
}

impl Ctx {
    fn new(tenant: &str, table: &str, column: &str) -> Self {
        Self {
            tenant: tenant.into(),
            table: table.into(),
            column: column.into(),
            row: None,
            extras: Vec::new(),
        }
    }

    fn row(mut self, row: impl Into<String>) -> Self {
        self.row = Some(row.into());
        self
    }

    fn extra(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.extras.push((k.into(), v.into()));
        self
    }

    fn build(&self) -> Result<Context, Error> {
        let mut b = Context::builder(&self.tenant, &self.table, &self.column);
        if let Some(row) = &self.row {
            b = b.row(row);
        }
        for (k, v) in &self.extras {
            b = b.extra(k, v);
        }
        b.build()
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "tenant": self.tenant,
            "table": self.table,
            "column": self.column,
        });
        if let Some(row) = &self.row {
            v["row"] = json!(row);
        }
        if !self.extras.is_empty() {
            v["extras"] = json!(
                self.extras
                    .iter()
                    .map(|(k, v)| json!([k, v]))
                    .collect::<Vec<_>>()
            );
        }
        v
    }
}

fn ctx_row_42() -> Ctx {
    Ctx::new("acme", "integrations", "refresh_token").row("42")
}

fn ctx_extras() -> Ctx {
    // Given out of order: a writer must sort them.
    Ctx::new("acme", "integrations", "api_secret")
        .row("8f14e45f-ceea-467f-a8d6-8f5b8b2c1f6a")
        .extra("provider", "github")
        .extra("env", "production")
}

fn ctx_globex() -> Ctx {
    Ctx::new("globex", "integrations", "refresh_token").row("42")
}

fn ctx_unicode_extras() -> Ctx {
    // UTF-8 order: "env" < U+FF61 (ef bd a1) < U+1F600 (f0 9f 98 80).
    // UTF-16 order puts U+1F600 (d83d de00) before U+FF61: a writer that sorts
    // by UTF-16 code units, or not at all, seals a different AD.
    Ctx::new("acme", "integrations", "api_secret")
        .row("9")
        .extra("\u{1F600}", "grinning face")
        .extra("env", "staging")
        .extra("\u{FF61}", "halfwidth ideographic full stop")
}

fn ctx_longest() -> Ctx {
    // Every part but the tenant id at its longest, 16 extras, and an empty
    // extra value.
    let mut c = Ctx::new("acme", &"t".repeat(255), &"c".repeat(255)).row("r".repeat(1024));
    c = c.extra("k".repeat(255), "v".repeat(1024));
    c = c.extra("empty", "");
    for i in 0..14 {
        c = c.extra(format!("extra-{i:02}"), format!("value {i}"));
    }
    c
}

fn ctx_initech() -> Ctx {
    Ctx::new("initech", "integrations", "refresh_token").row("42")
}

fn ctx_umbrella() -> Ctx {
    Ctx::new("umbrella", "integrations", "refresh_token").row("42")
}

// ---------------------------------------------------------------------------
// Valid vectors.

struct Case {
    comment: &'static str,
    tenant: &'static str,
    version: u32,
    algorithm: Algorithm,
    ctx: Ctx,
    salt: [u8; 16],
    plaintext: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let case = |comment, tenant, version, algorithm, ctx, salt, plaintext: &[u8]| Case {
        comment,
        tenant,
        version,
        algorithm,
        ctx,
        salt,
        plaintext: plaintext.to_vec(),
    };
    use Algorithm::{Aes256Gcm as Aes, ChaCha20Poly1305 as ChaCha};
    vec![
        case(
            "OAuth refresh token, AES-256-GCM, with a row id",
            "acme",
            1,
            Aes,
            ctx_row_42(),
            [0x01; 16],
            b"1//0gLx9-example-refresh-token",
        ),
        case(
            "the same value and context under ChaCha20-Poly1305",
            "acme",
            1,
            ChaCha,
            ctx_row_42(),
            [0x02; 16],
            b"1//0gLx9-example-refresh-token",
        ),
        case(
            "empty plaintext, no row id",
            "acme",
            1,
            Aes,
            Ctx::new("acme", "settings", "webhook_secret"),
            *b"0123456789abcdef",
            b"",
        ),
        case(
            "key version 2, a UUID row id and two extra pairs given out of order",
            "acme",
            2,
            Aes,
            ctx_extras(),
            [0xff; 16],
            b"sk_live_51Hx-example-api-secret",
        ),
        case(
            "another tenant, ChaCha20-Poly1305, 100 bytes over several blocks",
            "globex",
            1,
            ChaCha,
            ctx_globex(),
            [0x5a; 16],
            &[0xa5; 100],
        ),
        case(
            "extras with non-ASCII keys, given out of order: sorted by UTF-8 bytes, \
             where UTF-16 order differs",
            "acme",
            2,
            Aes,
            ctx_unicode_extras(),
            [0x06; 16],
            b"whsec_example-webhook-secret",
        ),
        case(
            "every context part but the tenant id at its longest: table, column and an \
             extra key of 255 bytes, row id and an extra value of 1024 bytes, 16 extras, one \
             empty value",
            "acme",
            1,
            ChaCha,
            ctx_longest(),
            [0x07; 16],
            b"longest context",
        ),
        case(
            "a non-ASCII tenant id in NFC (z, U+00FC, rich)",
            ZURICH,
            1,
            Aes,
            Ctx::new(ZURICH, "integrations", "refresh_token").row("7"),
            [0x08; 16],
            "gr\u{fc}ezi-refresh-token".as_bytes(),
        ),
        case(
            "the tenant's primary version 4, at its minimum decryption version",
            "initech",
            4,
            Aes,
            ctx_initech(),
            [0x09; 16],
            b"initech-refresh-token",
        ),
    ]
}

/// A value that AES-GCM authenticates under two record keys: acme's and
/// globex's (both key version 1, same header), each with its own tenant's
/// context. Built by solving for the last ciphertext block in GF(2^128) so the
/// GHASH tags agree (the construction of Dodis et al. and Len et al.). Only the
/// key commitment tells the two keys apart. Returns the value and its plaintext
/// under acme's key.
fn two_key_value() -> (Vec<u8>, Vec<u8>) {
    let acme = deriver("acme", 1);
    let globex = deriver("globex", 1);
    let (ad1, ad2) = (ctx_row_42().build().unwrap(), ctx_globex().build().unwrap());
    let genuine = seal_with_salt(
        &acme,
        Algorithm::Aes256Gcm,
        1,
        ad1.associated_data(),
        &[0; 32],
        &[0x0a; 16],
    )
    .unwrap();
    let header: &[u8; 22] = genuine.as_bytes()[..22].try_into().unwrap();
    let (rk1, rk2) = (acme.derive(header), globex.derive(header));
    let (h1, s1) = gcm_constants(&rk1.key, &rk1.nonce);
    let (h2, s2) = gcm_constants(&rk2.key, &rk2.nonce);
    let mut ct = [0u8; 32];
    ct[..16].copy_from_slice(b"two-key block 1.");
    let p1 = ghash(h1, ad1.associated_data(), &ct) ^ s1;
    let p2 = ghash(h2, ad2.associated_data(), &ct) ^ s2;
    let free = gf_mul(p1 ^ p2, gf_inv(gf_pow(h1, 2) ^ gf_pow(h2, 2)));
    ct[16..].copy_from_slice(&free.to_be_bytes());
    let tag = (ghash(h1, ad1.associated_data(), &ct) ^ s1).to_be_bytes();
    assert_eq!(
        tag,
        (ghash(h2, ad2.associated_data(), &ct) ^ s2).to_be_bytes()
    );
    let mut plaintext = ct;
    aead_open(
        Algorithm::Aes256Gcm,
        &rk1.key,
        &rk1.nonce,
        ad1.associated_data(),
        &mut plaintext,
        &tag,
    )
    .unwrap();
    // Without the commitment, globex's key would accept it as well.
    let mut under_globex = ct;
    aead_open(
        Algorithm::Aes256Gcm,
        &rk2.key,
        &rk2.nonce,
        ad2.associated_data(),
        &mut under_globex,
        &tag,
    )
    .unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&rk1.commitment);
    bytes.extend_from_slice(&ct);
    bytes.extend_from_slice(&tag);
    (bytes, plaintext.to_vec())
}

fn valid_json(id: usize, case: &Case, value: &SealedValue) -> Value {
    let built = case.ctx.build().unwrap();
    let header: &[u8; 22] = value.as_bytes()[..22].try_into().unwrap();
    let record_key = deriver(case.tenant, case.version).derive(header);
    json!({
        "id": id,
        "comment": case.comment,
        "tenant_key": { "tenant": case.tenant, "version": case.version },
        "context": case.ctx.json(),
        "algorithm": value.algorithm().to_string(),
        "salt": hex::encode(case.salt),
        "plaintext": hex::encode(&case.plaintext),
        "associated_data": hex::encode(built.associated_data()),
        "record_key": hex::encode(record_key.key),
        "nonce": hex::encode(record_key.nonce),
        "commitment": hex::encode(record_key.commitment),
        "sealed": hex::encode(value.as_bytes()),
        "sealed_text": value.to_text(),
    })
}

// ---------------------------------------------------------------------------
// Invalid vectors: each names the error kind a reader must report.

enum Input {
    Bytes(Vec<u8>),
    Text(String),
}

struct Invalid {
    comment: &'static str,
    /// Index of the valid vector it is derived from, if any.
    of: Option<usize>,
    ctx: Ctx,
    input: Input,
    expect: &'static str,
}

fn invalid(sealed: &[(SealedValue, Ctx)]) -> Vec<Invalid> {
    let bytes = |i: usize, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = sealed[i].0.as_bytes().to_vec();
        f(&mut b);
        Input::Bytes(b)
    };
    let text = |i: usize, f: &dyn Fn(&str) -> String| Input::Text(f(&sealed[i].0.to_text()));
    let derived = |comment, of: usize, input, expect| Invalid {
        comment,
        of: Some(of),
        ctx: sealed[of].1.clone(),
        input,
        expect,
    };
    let with_ctx = |comment, of: usize, ctx: Ctx, expect| Invalid {
        comment,
        of: Some(of),
        ctx,
        input: Input::Bytes(sealed[of].0.as_bytes().to_vec()),
        expect,
    };
    let raw = |comment, raw: &[u8], expect| Invalid {
        comment,
        of: None,
        ctx: ctx_row_42(),
        input: Input::Bytes(raw.to_vec()),
        expect,
    };
    // A value for `ctx` under `version` of `tenant`, sealed with the vector
    // key (published or not).
    let sealed_under = |tenant, version: u32, ctx: &Ctx| {
        seal_with_salt(
            &deriver(tenant, version),
            Algorithm::Aes256Gcm,
            version,
            ctx.build().unwrap().associated_data(),
            b"a value the reader must refuse before any cryptography",
            &[0x0b; 16],
        )
        .unwrap()
        .into_bytes()
    };
    let under = |comment, tenant, version, ctx: Ctx, expect| Invalid {
        comment,
        of: None,
        input: Input::Bytes(sealed_under(tenant, version, &ctx)),
        ctx,
        expect,
    };
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    vec![
        derived(
            "format version 2 is not known to a v1 reader",
            0,
            bytes(0, &|b| b[0] = 0x02),
            "unsupported_version",
        ),
        derived(
            "format version 0",
            0,
            bytes(0, &|b| b[0] = 0x00),
            "unsupported_version",
        ),
        derived(
            "unknown algorithm id 3",
            0,
            bytes(0, &|b| b[1] = 0x03),
            "unsupported_algorithm",
        ),
        derived(
            "algorithm byte switched from AES-256-GCM to ChaCha20-Poly1305",
            0,
            bytes(0, &|b| b[1] = 0x02),
            "open_failed",
        ),
        derived(
            "algorithm byte switched from ChaCha20-Poly1305 to AES-256-GCM",
            1,
            bytes(1, &|b| b[1] = 0x01),
            "open_failed",
        ),
        derived(
            "key version 0 is reserved",
            0,
            bytes(0, &|b| b[2..6].copy_from_slice(&0u32.to_be_bytes())),
            "malformed",
        ),
        derived(
            "key version 9 does not exist",
            0,
            bytes(0, &|b| b[2..6].copy_from_slice(&9u32.to_be_bytes())),
            "unknown_key_version",
        ),
        derived(
            "key version changed from 2 to 1",
            3,
            bytes(3, &|b| b[2..6].copy_from_slice(&1u32.to_be_bytes())),
            "open_failed",
        ),
        derived(
            "one bit of the salt flipped",
            0,
            bytes(0, &|b| b[6] ^= 0x01),
            "open_failed",
        ),
        derived(
            "one bit of the key commitment flipped",
            0,
            bytes(0, &|b| b[22] ^= 0x80),
            "open_failed",
        ),
        derived(
            "one bit of the ciphertext flipped",
            0,
            bytes(0, &|b| b[38] ^= 0x01),
            "open_failed",
        ),
        derived(
            "one bit of the tag flipped",
            1,
            bytes(1, &|b| *b.last_mut().unwrap() ^= 0x01),
            "open_failed",
        ),
        derived(
            "last byte removed",
            0,
            bytes(0, &|b| {
                b.pop();
            }),
            "open_failed",
        ),
        derived(
            "one byte appended",
            0,
            bytes(0, &|b| b.push(0)),
            "open_failed",
        ),
        derived(
            "shorter than the 54-byte minimum",
            2,
            bytes(2, &|b| b.truncate(53)),
            "malformed",
        ),
        derived("empty input", 0, bytes(0, &|b| b.clear()), "malformed"),
        with_ctx(
            "opened with another row id",
            0,
            Ctx::new("acme", "integrations", "refresh_token").row("43"),
            "open_failed",
        ),
        with_ctx(
            "opened as another column",
            0,
            Ctx::new("acme", "integrations", "api_secret").row("42"),
            "open_failed",
        ),
        with_ctx(
            "opened as another table",
            0,
            Ctx::new("acme", "audit", "refresh_token").row("42"),
            "open_failed",
        ),
        with_ctx(
            "opened as another tenant (same key version)",
            0,
            ctx_globex(),
            "open_failed",
        ),
        with_ctx(
            "opened with an extra pair missing",
            3,
            Ctx::new("acme", "integrations", "api_secret")
                .row("8f14e45f-ceea-467f-a8d6-8f5b8b2c1f6a")
                .extra("provider", "github"),
            "open_failed",
        ),
        derived(
            "text form without its prefix",
            0,
            text(0, &|t| t.trim_start_matches("fs:").to_string()),
            "malformed",
        ),
        derived(
            "text form with an upper-case prefix",
            0,
            text(0, &|t| t.replacen("fs:", "FS:", 1)),
            "malformed",
        ),
        derived(
            "text form with a stray `=` appended (its body becomes 1 more than a multiple of 4)",
            2,
            text(2, &|t| format!("{t}=")),
            "malformed",
        ),
        derived(
            "text form in the standard base64 alphabet",
            3,
            text(3, &|t| t.replace('-', "+").replace('_', "/") + "+/"),
            "malformed",
        ),
        derived(
            "text form with non-zero trailing bits",
            3,
            // Vector 4 is 85 bytes, so its last character carries 4 unused
            // bits: set one of them.
            text(3, &|t| {
                let mut t = t.to_string();
                let last = t.pop().unwrap();
                let i = alphabet.find(last).unwrap();
                t.push(alphabet.as_bytes()[i | 1] as char);
                t
            }),
            "malformed",
        ),
        // --- Added with the reader's normative step order.
        with_ctx(
            "a value that authenticates under two tenant keys (vector 10), opened as the \
             second tenant: only the key commitment refuses it",
            9,
            ctx_globex(),
            "open_failed",
        ),
        raw(
            "two bytes: version 2 is reported although the input is shorter than a header",
            &[0x02, 0x01],
            "unsupported_version",
        ),
        raw("one byte 0xff", &[0xff], "unsupported_version"),
        raw("one byte: version 1 and nothing else", &[0x01], "malformed"),
        raw(
            "two bytes: algorithm 3 is reported although the input is shorter than a header",
            &[0x01, 0x03],
            "unsupported_algorithm",
        ),
        raw(
            "two bytes: a known version and algorithm, but truncated",
            &[0x01, 0x01],
            "malformed",
        ),
        raw(
            "six bytes naming key version 0: truncated",
            &[0x01, 0x01, 0x00, 0x00, 0x00, 0x00],
            "malformed",
        ),
        derived(
            "the text form given as binary: its first byte 0x66 ('f') is a reserved version",
            0,
            Input::Bytes(sealed[0].0.to_text().into_bytes()),
            "unsupported_version",
        ),
        derived(
            "text form whose body length is 1 more than a multiple of 4",
            0,
            text(0, &|t| format!("{t}A")),
            "malformed",
        ),
        derived(
            "text form with nothing after the prefix",
            0,
            Input::Text("fs:".into()),
            "malformed",
        ),
        derived(
            "text form with a line break inside",
            0,
            text(0, &|t| format!("{}\n{}", &t[..40], &t[40..])),
            "malformed",
        ),
        derived(
            "text form with a leading space",
            0,
            text(0, &|t| format!(" {t}")),
            "malformed",
        ),
        derived(
            "text form whose binary form names format version 2: the binary checks follow \
             the text checks",
            0,
            Input::Text({
                let mut b = sealed[0].0.as_bytes().to_vec();
                b[0] = 0x02;
                format!(
                    "fs:{}",
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
                )
            }),
            "unsupported_version",
        ),
        // --- Key states, in the reader's order.
        raw_ctx(
            "a tenant the key store does not know",
            Ctx::new("hooli", "integrations", "refresh_token").row("42"),
            sealed[0].0.as_bytes(),
            "unknown_tenant",
        ),
        under(
            "a shredded tenant, under its destroyed version 1",
            "umbrella",
            1,
            ctx_umbrella(),
            "tenant_shredded",
        ),
        Invalid {
            comment: "a shredded tenant, under a version it never had: shredded is reported first",
            of: None,
            ctx: ctx_umbrella(),
            input: {
                let mut b = sealed_under("umbrella", 1, &ctx_umbrella());
                b[2..6].copy_from_slice(&7u32.to_be_bytes());
                Input::Bytes(b)
            },
            expect: "tenant_shredded",
        },
        Invalid {
            comment: "a version above the tenant's highest (5 of 4)",
            of: Some(8),
            ctx: ctx_initech(),
            input: bytes(8, &|b| b[2..6].copy_from_slice(&5u32.to_be_bytes())),
            expect: "unknown_key_version",
        },
        under(
            "version 1 is destroyed and below the minimum decryption version 4: destroyed \
             is reported",
            "initech",
            1,
            ctx_initech(),
            "key_destroyed",
        ),
        under(
            "version 2 is disabled and below the minimum decryption version 4: disabled is \
             reported",
            "initech",
            2,
            ctx_initech(),
            "key_disabled",
        ),
        under(
            "version 3 is active but below the minimum decryption version 4",
            "initech",
            3,
            ctx_initech(),
            "below_minimum_version",
        ),
        // --- Text forms that a lenient base64 decoder would accept.
        derived(
            "text form with correct base64 padding `==` (vector 4 is 85 bytes, so its body \
             is 2 more than a multiple of 4)",
            3,
            text(3, &|t| {
                assert_eq!((t.len() - 3) % 4, 2);
                format!("{t}==")
            }),
            "malformed",
        ),
        derived(
            "text form with correct base64 padding `=` (vector 10's body is 3 more than a \
             multiple of 4)",
            9,
            text(9, &|t| {
                assert_eq!((t.len() - 3) % 4, 3);
                format!("{t}=")
            }),
            "malformed",
        ),
        derived(
            "text form with a trailing line feed",
            0,
            text(0, &|t| format!("{t}\n")),
            "malformed",
        ),
        derived(
            "text form with a trailing space",
            0,
            text(0, &|t| format!("{t} ")),
            "malformed",
        ),
    ]
}

fn raw_ctx(comment: &'static str, ctx: Ctx, bytes: &[u8], expect: &'static str) -> Invalid {
    Invalid {
        comment,
        of: None,
        ctx,
        input: Input::Bytes(bytes.to_vec()),
        expect,
    }
}

/// Contexts that break a rule of FORMAT.md §"Context rules": a reader refuses
/// each with `invalid_context` before it looks at the value (vector 1's), and a
/// writer refuses to seal with it.
fn invalid_contexts() -> Vec<(&'static str, Ctx)> {
    let base = ctx_row_42;
    let tenant = |t: &str| Ctx {
        tenant: t.into(),
        ..base()
    };
    let mut seventeen = base();
    for i in 0..17 {
        seventeen = seventeen.extra(format!("k{i:02}"), "v");
    }
    vec![
        ("empty tenant id", tenant("")),
        ("tenant id of 256 bytes", tenant(&"a".repeat(256))),
        ("tenant id with a trailing space", tenant("acme ")),
        ("tenant id with a leading space", tenant(" acme")),
        (
            "tenant id with a trailing U+3000 (White_Space)",
            tenant("acme\u{3000}"),
        ),
        ("tenant id with a NUL (Cc)", tenant("ac\u{0}me")),
        ("tenant id with a line feed (Cc)", tenant("ac\nme")),
        (
            "tenant id with an invisible U+200B ZERO WIDTH SPACE (Cf)",
            tenant("acme\u{200B}"),
        ),
        (
            "tenant id starting with U+FEFF (Cf, a byte order mark)",
            tenant("\u{FEFF}acme"),
        ),
        (
            "tenant id with U+202E RIGHT-TO-LEFT OVERRIDE (Cf)",
            tenant("ac\u{202E}me"),
        ),
        (
            "tenant id in NFD: the same name as the tenant with vector 8, decomposed",
            tenant(ZURICH_NFD),
        ),
        (
            "tenant id with the unassigned code point U+0378 (Cn)",
            tenant("acme\u{378}"),
        ),
        (
            "tenant id with the noncharacter U+FFFF (Cn)",
            tenant("acme\u{FFFF}"),
        ),
        (
            "empty table",
            Ctx {
                table: String::new(),
                ..base()
            },
        ),
        (
            "table of 256 bytes",
            Ctx {
                table: "t".repeat(256),
                ..base()
            },
        ),
        (
            "empty column",
            Ctx {
                column: String::new(),
                ..base()
            },
        ),
        (
            "column of 256 bytes",
            Ctx {
                column: "c".repeat(256),
                ..base()
            },
        ),
        (
            "empty row id (leave it out instead)",
            Ctx {
                row: Some(String::new()),
                ..base()
            },
        ),
        (
            "row id of 1025 bytes",
            Ctx {
                row: Some("r".repeat(1025)),
                ..base()
            },
        ),
        ("empty extra key", base().extra("", "v")),
        ("extra key of 256 bytes", base().extra("k".repeat(256), "v")),
        (
            "extra value of 1025 bytes",
            base().extra("k", "v".repeat(1025)),
        ),
        (
            "the same extra key twice",
            base().extra("env", "a").extra("env", "b"),
        ),
        ("17 extra pairs", seventeen),
    ]
}

/// Tenant ids that may not be created (FORMAT.md, tenant id rule 4).
fn invisible_tenant_ids() -> Vec<(&'static str, String)> {
    let tenant = |t: &str| t.to_string();
    vec![
        (
            "tenant id with U+FE0F VARIATION SELECTOR-16 (Mn, default-ignorable)",
            tenant("acme\u{FE0F}"),
        ),
        (
            "tenant id with U+034F COMBINING GRAPHEME JOINER (Mn, default-ignorable)",
            tenant("ac\u{34F}me"),
        ),
        (
            "tenant id with U+3164 HANGUL FILLER (Lo, default-ignorable)",
            tenant("acme\u{3164}"),
        ),
        (
            "tenant id with U+115F HANGUL CHOSEONG FILLER (Lo, default-ignorable)",
            tenant("acme\u{115F}"),
        ),
        (
            "tenant id with U+1160 HANGUL JUNGSEONG FILLER (Lo, default-ignorable)",
            tenant("acme\u{1160}"),
        ),
        (
            "tenant id with U+FFA0 HALFWIDTH HANGUL FILLER (Lo, default-ignorable)",
            tenant("acme\u{FFA0}"),
        ),
        (
            "tenant id with U+E0100 VARIATION SELECTOR-17 (Mn, default-ignorable)",
            tenant("acme\u{E0100}"),
        ),
        (
            "tenant id with U+2800 BRAILLE PATTERN BLANK (So, renders blank)",
            tenant("acme\u{2800}"),
        ),
    ]
}

// ---------------------------------------------------------------------------
// The length limits, described rather than written out (64 MiB).

const LARGE_FILL: u8 = 0x5a;

fn large(sealed: &[(SealedValue, Ctx)]) -> Vec<Value> {
    let (first, ctx) = &sealed[0];
    let prefix = &first.as_bytes()[..38];
    let padded = |len: usize| {
        let mut b = prefix.to_vec();
        b.resize(len, 0);
        b
    };
    let max = OVERHEAD + MAX_PLAINTEXT_LEN;
    let longest = SealedValue::from_bytes(padded(max)).unwrap();
    assert!(matches!(
        crate::envelope::open_record(
            &deriver("acme", 1),
            &longest,
            ctx.build().unwrap().associated_data()
        ),
        Err(Error::OpenFailed)
    ));
    assert!(matches!(
        SealedValue::from_bytes(padded(max + 1)),
        Err(Error::Malformed { .. })
    ));
    // No plaintext longer than the maximum reaches the envelope.
    let too_large = vec![LARGE_FILL; MAX_PLAINTEXT_LEN + 1];
    assert!(matches!(
        Plaintext::new(&too_large),
        Err(Error::PlaintextTooLarge { .. })
    ));
    vec![
        json!({
            "id": 301,
            "comment": "exactly the longest binary value (54 + 64 MiB bytes): vector 1's header and \
                        commitment, then zero bytes. It passes every length check, so a reader \
                        reaches the cryptography and fails there",
            "context": ctx.json(),
            "sealed_prefix": hex::encode(prefix),
            "zero_fill_to": max,
            "expect": "open_failed",
        }),
        json!({
            "id": 302,
            "comment": "one byte longer than the longest binary value",
            "context": ctx.json(),
            "sealed_prefix": hex::encode(prefix),
            "zero_fill_to": max + 1,
            "expect": "malformed",
        }),
        json!({
            "id": 303,
            "comment": "a writer refuses a plaintext one byte over 64 MiB",
            "tenant_key": { "tenant": "acme", "version": 1 },
            "context": ctx.json(),
            "algorithm": "AES-256-GCM",
            "plaintext_fill": { "byte": hex::encode([LARGE_FILL]), "len": MAX_PLAINTEXT_LEN + 1 },
            "expect": "plaintext_too_large",
        }),
        json!({
            "id": 304,
            "comment": "the same for a tenant the key store does not know: the length is \
                        checked before the key lookup",
            "tenant_key": { "tenant": "hooli", "version": 1 },
            "context": Ctx::new("hooli", "integrations", "refresh_token").row("42").json(),
            "algorithm": "AES-256-GCM",
            "plaintext_fill": { "byte": hex::encode([LARGE_FILL]), "len": MAX_PLAINTEXT_LEN + 1 },
            "expect": "plaintext_too_large",
        }),
    ]
}

// ---------------------------------------------------------------------------
// Wrapped keys (the local provider) and the audit chain.

const ROOT_ID: &str = "vector-root-1";
const ROOT_KEY: [u8; 32] = *b"fieldseal test vector: root key1";
const AUDIT_KEY: [u8; 32] = *b"fieldseal test vector: audit key";

fn wrap_ctx_json(ctx: &WrapContext<'_>) -> Value {
    let purpose = if ctx.is_audit_key() {
        "audit-key"
    } else {
        "tenant-key"
    };
    match ctx.store_id() {
        Some(store) => {
            json!({ "purpose": purpose, "tenant": ctx.tenant(), "version": ctx.version(), "store": store })
        }
        None => json!({ "purpose": purpose, "tenant": ctx.tenant(), "version": ctx.version() }),
    }
}

/// The key store id of the store-bound wrap vectors.
const STORE_ID: &str = "5f0d3c1a9b2e4f6071829304a5b6c7d8";

fn wrapped_keys() -> Value {
    let root = RootKey::from_bytes(&mut ROOT_KEY.clone());
    let key_of = |tenant: &str, version: u32| {
        tenants()
            .into_iter()
            .filter(|t| t.tenant == tenant)
            .flat_map(|t| t.keys)
            .find(|k| k.version == version)
            .unwrap()
            .bytes
    };
    let entries: Vec<(&str, WrapContext<'_>, [u8; 32], [u8; 12])> = vec![
        (
            "acme's tenant key version 1",
            WrapContext::tenant_key("acme", 1),
            key_of("acme", 1),
            *b"wrap nonce 1",
        ),
        (
            "the audit-chain key (purpose audit-key, empty tenant, version 1)",
            WrapContext::audit_key(1),
            AUDIT_KEY,
            *b"wrap nonce 2",
        ),
        (
            "a non-ASCII tenant id: the length prefix counts UTF-8 bytes",
            WrapContext::tenant_key(ZURICH, 1),
            key_of(ZURICH, 1),
            *b"wrap nonce 3",
        ),
        (
            "acme's tenant key version 1, bound to a key store (schema version 2): the \
             store id follows, length-prefixed",
            WrapContext::tenant_key("acme", 1).in_store(STORE_ID),
            key_of("acme", 1),
            *b"wrap nonce 4",
        ),
        (
            "the audit-chain key, bound to a key store",
            WrapContext::audit_key(1).in_store(STORE_ID),
            AUDIT_KEY,
            *b"wrap nonce 5",
        ),
    ];
    let mut valid = Vec::new();
    let mut wrapped_bytes = Vec::new();
    for (i, (comment, ctx, key, nonce)) in entries.iter().enumerate() {
        let tk = TenantKey::from_slice(key).unwrap();
        let wrapped = wrap_with_nonce(&root, nonce, &tk, ctx).unwrap();
        let fields: serde_json::Map<String, Value> = ctx
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        valid.push(json!({
            "id": 401 + i,
            "comment": comment,
            "root_key_id": ROOT_ID,
            "wrap_context": wrap_ctx_json(ctx),
            "wrap_aad": hex::encode(ctx.aad()),
            "kms_encryption_context": fields,
            "nonce": hex::encode(nonce),
            "key": hex::encode(key),
            "wrapped": hex::encode(&wrapped),
        }));
        wrapped_bytes.push(wrapped);
    }
    let acme = &wrapped_bytes[0];
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = acme.clone();
        f(&mut b);
        b
    };
    let invalid_cases: Vec<(&str, &str, WrapContext<'_>, Vec<u8>, &str)> = vec![
        (
            "unwrapped as acme's version 2",
            ROOT_ID,
            WrapContext::tenant_key("acme", 2),
            acme.clone(),
            "unwrap_failed",
        ),
        (
            "unwrapped as another tenant's version 1",
            ROOT_ID,
            WrapContext::tenant_key("globex", 1),
            acme.clone(),
            "unwrap_failed",
        ),
        (
            "unwrapped as the audit key",
            ROOT_ID,
            WrapContext::audit_key(1),
            acme.clone(),
            "unwrap_failed",
        ),
        (
            "the audit key's wrap (vector 402), unwrapped as acme's tenant key version 1",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1),
            wrapped_bytes[1].clone(),
            "unwrap_failed",
        ),
        (
            "leading byte 0x02: an unknown layout is refused, not guessed at",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1),
            edit(&|b| b[0] = 0x02),
            "unwrap_failed",
        ),
        (
            "truncated to 60 bytes",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1),
            edit(&|b| b.truncate(60)),
            "unwrap_failed",
        ),
        (
            "one byte appended (62 bytes)",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1),
            edit(&|b| b.push(0)),
            "unwrap_failed",
        ),
        (
            "one bit of the nonce flipped",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1),
            edit(&|b| b[1] ^= 0x01),
            "unwrap_failed",
        ),
        (
            "one bit of the tag flipped",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1),
            edit(&|b| b[60] ^= 0x80),
            "unwrap_failed",
        ),
        (
            "names a root key id the provider does not hold",
            "vector-root-2",
            WrapContext::tenant_key("acme", 1),
            acme.clone(),
            "root_key_not_configured",
        ),
        (
            "vector 404 (bound to a store) unwrapped for another store",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1).in_store("0000000000000000000000000000000a"),
            wrapped_bytes[3].clone(),
            "unwrap_failed",
        ),
        (
            "vector 404 (bound to a store) unwrapped without a store",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1),
            wrapped_bytes[3].clone(),
            "unwrap_failed",
        ),
        (
            "vector 401 (no store) unwrapped as bound to a store",
            ROOT_ID,
            WrapContext::tenant_key("acme", 1).in_store(STORE_ID),
            acme.clone(),
            "unwrap_failed",
        ),
        (
            "vector 405 (the audit key, bound to a store) unwrapped for another store",
            ROOT_ID,
            WrapContext::audit_key(1).in_store("0000000000000000000000000000000a"),
            wrapped_bytes[4].clone(),
            "unwrap_failed",
        ),
    ];
    let invalid: Vec<Value> = invalid_cases
        .iter()
        .enumerate()
        .map(|(i, (comment, root_id, ctx, bytes, expect))| {
            json!({
                "id": 421 + i,
                "comment": comment,
                "root_key_id": root_id,
                "wrap_context": wrap_ctx_json(ctx),
                "wrapped": hex::encode(bytes),
                "expect": expect,
            })
        })
        .collect();
    json!({
        "root_keys": [{ "id": ROOT_ID, "key": hex::encode(ROOT_KEY) }],
        "valid": valid,
        "invalid": invalid,
    })
}

fn audit() -> Value {
    let key = HmacKey::new(&AUDIT_KEY);
    let day = 86_400;
    let t0 = 1_767_225_600; // 2026-01-01T00:00:00Z
    let events: [(&str, &str, u32, &str, &str); 5] = [
        ("tenant.created", "acme", 1, "", ""),
        ("tenant_key.rotated", "acme", 2, "alice@ops", ""),
        ("tenant_key.destroyed", "acme", 1, "alice@ops", ""),
        (
            "key.rewrapped",
            "acme",
            2,
            "",
            "vector-root-1 -> vector-root-2",
        ),
        (
            "tenant.shredded",
            ZURICH,
            0,
            "dpo@example.com",
            "erasure request 42",
        ),
    ];
    let mut chain: Vec<AuditEntry> = Vec::new();
    for (i, (event, tenant, version, actor, detail)) in events.iter().enumerate() {
        let mut e = AuditEntry {
            seq: i as u64 + 1,
            at: Timestamp::from_unix_seconds(t0 + i as i64 * day),
            event: (*event).into(),
            tenant: (*tenant).into(),
            version: *version,
            actor: (*actor).into(),
            detail: (*detail).into(),
            mac: [0; AUDIT_MAC_LEN],
        };
        let prev = chain.last().map_or([0; AUDIT_MAC_LEN], |p| p.mac);
        e.mac = entry_mac(&key, &e, &prev);
        chain.push(e);
    }
    // Entries 1 and 2 pruned: the prune entry records entry 2's MAC.
    let mut pruned_entry = AuditEntry {
        seq: 6,
        at: Timestamp::from_unix_seconds(t0 + 5 * day),
        event: "audit.pruned".into(),
        tenant: String::new(),
        version: 0,
        actor: "retention-job".into(),
        detail: pruned_detail(&chain[1]),
        mac: [0; AUDIT_MAC_LEN],
    };
    pruned_entry.mac = entry_mac(&key, &pruned_entry, &chain[4].mac);
    let pruned: Vec<AuditEntry> = chain[2..]
        .iter()
        .cloned()
        .chain([pruned_entry.clone()])
        .collect();

    let edited = |f: &dyn Fn(&mut Vec<AuditEntry>)| {
        let mut c = chain.clone();
        f(&mut c);
        c
    };
    let cases: Vec<(&str, Vec<AuditEntry>, Option<u64>)> = vec![
        ("the chain as written", chain.clone(), None),
        (
            "entry 3's actor edited",
            edited(&|c| c[2].actor = "mallory".into()),
            Some(3),
        ),
        (
            "entry 1's time edited",
            edited(&|c| c[0].at = Timestamp::from_unix_seconds(t0 + 1)),
            Some(1),
        ),
        (
            "entry 5's tenant edited (the MAC covers UTF-8 bytes)",
            edited(&|c| c[4].tenant = ZURICH_NFD.into()),
            Some(5),
        ),
        (
            "entry 2 deleted",
            edited(&|c| {
                c.remove(1);
            }),
            Some(2),
        ),
        (
            "entries 2 and 3 swapped",
            edited(&|c| c.swap(1, 2)),
            Some(2),
        ),
        (
            "a forged entry inserted after entry 2, later entries renumbered",
            edited(&|c| {
                let mut forged = c[1].clone();
                forged.event = "tenant_key.enabled".into();
                forged.mac = c[1].mac;
                c.insert(2, forged);
                for (i, e) in c.iter_mut().enumerate() {
                    e.seq = i as u64 + 1;
                }
            }),
            Some(3),
        ),
        (
            "entry 1 deleted, with no audit.pruned entry to vouch for it",
            edited(&|c| {
                c.remove(0);
            }),
            Some(2),
        ),
        (
            "entries 1 and 2 pruned: entry 6 (audit.pruned) anchors entry 3",
            pruned.clone(),
            None,
        ),
        (
            "the pruned chain with its anchor MAC edited",
            {
                let mut c = pruned.clone();
                let last = c.len() - 1;
                let mut wrong = chain[1].clone();
                wrong.mac[0] ^= 1;
                c[last].detail = pruned_detail(&wrong);
                c
            },
            Some(3),
        ),
        (
            "the last entry deleted: a truncated tail still verifies; compare the head with \
             a copy kept elsewhere",
            edited(&|c| {
                c.pop();
            }),
            None,
        ),
        (
            "the anchor written with uppercase hexadecimal (entry 6's MAC recomputed over \
             it): not an anchor, so entries 1 and 2 are missing",
            {
                let mut c = pruned.clone();
                let last = c.len() - 1;
                c[last].detail = pruned_detail(&chain[1]).to_uppercase().replacen(
                    "THROUGH 2 ANCHOR",
                    "through 2 anchor",
                    1,
                );
                c[last].mac = entry_mac(&key, &c[last], &chain[4].mac);
                c
            },
            Some(3),
        ),
        (
            "the anchor's entry number written as `02` (entry 6's MAC recomputed over it)",
            {
                let mut c = pruned.clone();
                let last = c.len() - 1;
                c[last].detail = pruned_detail(&chain[1]).replacen("through 2", "through 02", 1);
                c[last].mac = entry_mac(&key, &c[last], &chain[4].mac);
                c
            },
            Some(3),
        ),
    ];
    let entry_json = |e: &AuditEntry| {
        json!({
            "seq": e.seq,
            "at": e.at.unix_seconds(),
            "event": e.event,
            "tenant": e.tenant,
            "version": e.version,
            "actor": e.actor,
            "detail": e.detail,
            "mac": hex::encode(e.mac),
        })
    };
    let cases: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (comment, entries, broken))| {
            let mut v = json!({
                "id": 501 + i,
                "comment": comment,
                "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
            });
            match broken {
                None => {
                    v["expect"] = json!("intact");
                    v["head"] = json!(hex::encode(entries.last().unwrap().mac));
                }
                Some(seq) => {
                    v["expect"] = json!("broken");
                    v["first_broken_seq"] = json!(seq);
                }
            }
            v
        })
        .collect();
    json!({
        "audit_key": hex::encode(AUDIT_KEY),
        "audit_key_wrapped_by": 402,
        "cases": cases,
    })
}

// ---------------------------------------------------------------------------

/// The valid vectors, and each one's value and context for deriving the
/// invalid ones.
fn valid() -> (Vec<Value>, Vec<(SealedValue, Ctx)>) {
    let mut sealed = Vec::new();
    let mut valid = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let value = seal_with_salt(
            &deriver(case.tenant, case.version),
            case.algorithm,
            case.version,
            case.ctx.build().unwrap().associated_data(),
            &case.plaintext,
            &case.salt,
        )
        .unwrap();
        valid.push(valid_json(i + 1, &case, &value));
        sealed.push((value, case.ctx));
    }
    let (two_key, plaintext) = two_key_value();
    let value = SealedValue::from_bytes(two_key).unwrap();
    let case = Case {
        comment: "a value that AES-GCM authenticates under acme's and globex's version-1 \
                  keys alike (each with its own context); it opens for acme, whose \
                  commitment it carries",
        tenant: "acme",
        version: 1,
        algorithm: Algorithm::Aes256Gcm,
        ctx: ctx_row_42(),
        salt: value.as_bytes()[6..22].try_into().unwrap(),
        plaintext,
    };
    valid.push(valid_json(valid.len() + 1, &case, &value));
    sealed.push((value, case.ctx));
    (valid, sealed)
}

fn build() -> Value {
    let (valid, sealed) = valid();
    let invalid_json: Vec<Value> = invalid(&sealed)
        .into_iter()
        .enumerate()
        .map(|(i, inv)| {
            let mut entry = json!({ "id": 101 + i, "comment": inv.comment });
            if let Some(of) = inv.of {
                entry["derived_from"] = json!(of + 1);
            }
            entry["context"] = inv.ctx.json();
            match inv.input {
                Input::Bytes(b) => entry["sealed"] = json!(hex::encode(b)),
                Input::Text(t) => entry["sealed_text"] = json!(t),
            }
            entry["expect"] = json!(inv.expect);
            entry
        })
        .collect();

    let mut contexts: Vec<Value> = invalid_contexts()
        .into_iter()
        .enumerate()
        .map(|(i, (comment, ctx))| {
            assert!(
                matches!(ctx.build(), Err(Error::InvalidContext { .. })),
                "{comment}"
            );
            json!({
                "id": 201 + i,
                "comment": comment,
                "context": ctx.json(),
                "sealed": hex::encode(sealed[0].0.as_bytes()),
                "expect": "invalid_context",
            })
        })
        .collect();
    // Step 1 comes before every check of the value: an invalid context with a
    // malformed value, or with one naming an unsupported version, is reported
    // as the invalid context.
    let empty_table = Ctx {
        table: String::new(),
        ..ctx_row_42()
    };
    for (comment, value) in [
        ("empty table, with an empty value", String::new()),
        (
            "empty table, with a value naming format version 2",
            "0201".to_string(),
        ),
    ] {
        contexts.push(json!({
            "id": 201 + contexts.len(),
            "comment": comment,
            "context": empty_table.json(),
            "sealed": value,
            "expect": "invalid_context",
        }));
    }

    // Rule 4 applies to creating a tenant: a context naming such an id
    // builds (a tenant from before the rule keeps opening), and creating it
    // is refused.
    let new_tenants: Vec<Value> = invisible_tenant_ids()
        .into_iter()
        .enumerate()
        .map(|(i, (comment, tenant))| {
            assert!(
                matches!(
                    crate::context::check_new_tenant(&tenant),
                    Err(Error::InvalidContext { .. })
                ),
                "{comment}"
            );
            assert!(crate::context::check_tenant(&tenant).is_ok(), "{comment}");
            json!({
                "id": 241 + i,
                "comment": comment,
                "tenant": tenant,
                "expect": "invalid_context",
            })
        })
        .collect();

    json!({
        "format": "fieldseal sealed value, format version 1 (docs/FORMAT.md)",
        "note": "Keys, salts and nonces are fixed for reproducibility; never reuse them. \
                 record_key, nonce and commitment are the HKDF-Expand output for each \
                 value, for implementers checking their derivation step by step. Extras \
                 are listed in the order a caller gives them, which is not always sorted. \
                 Strings are UTF-8; this file writes every non-ASCII character as a JSON \
                 \\u escape.",
        "tenants": tenants_json(),
        "valid": valid,
        "invalid": invalid_json,
        "invalid_contexts": contexts,
        "invalid_new_tenants": new_tenants,
        "large": large(&sealed),
        "wrapped_keys": wrapped_keys(),
        "audit_chain": audit(),
    })
}

/// Writes every non-ASCII character as a `\u` escape (a surrogate pair above
/// U+FFFF). Outside strings, JSON text is ASCII, so this touches strings only.
fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Compares `built` with the committed file `tests/vectors/<name>`, or writes
/// it there with `FIELDSEAL_WRITE_VECTORS=1`.
fn check_committed(name: &str, built: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let generated = escape_non_ascii(&serde_json::to_string_pretty(built).unwrap()) + "\n";
    if std::env::var_os("FIELDSEAL_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("tests/vectors/{name} is committed: {e}"));
    assert!(
        committed == generated,
        "the vectors changed: tests/vectors/{name} no longer matches what this build \
         computes (regenerate with FIELDSEAL_WRITE_VECTORS=1 only for an intended change)"
    );
    assert!(committed.is_ascii());
    let parsed: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(
        &parsed, built,
        "the escaped file reads back as the same JSON"
    );
}

#[test]
fn vectors_match_committed_file() {
    check_committed("v1.json", &build());
}

#[test]
fn every_valid_vector_parses_and_reencodes() {
    for v in valid().0 {
        let bytes = hex::decode(v["sealed"].as_str().unwrap()).unwrap();
        let text = v["sealed_text"].as_str().unwrap();
        let from_bytes = SealedValue::from_bytes(bytes.clone()).unwrap();
        let from_text = SealedValue::from_text(text).unwrap();
        assert_eq!(from_bytes, from_text);
        assert_eq!(from_text.as_bytes(), bytes);
        assert_eq!(from_bytes.to_text(), text);
    }
}

// ---------------------------------------------------------------------------
// Blind indexes: tests/vectors/blind_index.json (FORMAT.md §"Blind indexes").

/// The key store of the blind index vectors: v1.json's, plus a tenant whose
/// older versions cannot be searched.
fn index_tenants() -> Vec<TenantSpec> {
    let mut all = tenants();
    all.push(TenantSpec {
        tenant: "hooli",
        min_decryption_version: 0,
        shredded: false,
        keys: vec![
            key(1, "destroyed", b"fieldseal test vector: hooli v1!"),
            key(2, "disabled", b"fieldseal test vector: hooli v2!"),
            key(3, "active", b"fieldseal test vector: hooli v3!"),
        ],
    });
    all
}

fn index_tenants_json() -> Value {
    specs_json(&index_tenants())
}

fn index_key_bytes(tenant: &str, version: u32) -> [u8; 32] {
    index_tenants()
        .iter()
        .filter(|t| t.tenant == tenant)
        .flat_map(|t| &t.keys)
        .find(|k| k.version == version)
        .expect("vector key exists")
        .bytes
}

fn index_def(
    table: &str,
    column: &str,
    name: &str,
    normalizer: Normalizer,
    len: usize,
) -> BlindIndex {
    BlindIndex::builder(table, column, name)
        .normalizer(normalizer)
        .len(len)
        .build()
        .expect("vector index definition is valid")
}

fn index_def_json(index: &BlindIndex) -> Value {
    json!({
        "table": index.table(),
        "column": index.column(),
        "name": index.name(),
        "normalizer": index.normalizer().id(),
        "len": index.len(),
    })
}

/// One index value, step by step, from the specification's formulas; checked
/// against the implementation's own computation.
fn index_vector(
    id: usize,
    comment: &str,
    tenant: &str,
    version: u32,
    index: &BlindIndex,
    value: &[u8],
) -> Value {
    let tk = index_key_bytes(tenant, version);
    let iprk = HmacKey::new(crate::crypto::INDEX_PRK_SALT).mac(&[&tk]);
    let info = index.key_info(tenant);
    let ik = HmacKey::new(iprk.as_slice()).mac(&[&info, &[0x01]]);
    let normalized = index.normalize(value).expect("vector value normalises");
    let mac = HmacKey::new(ik.as_slice()).mac(&[&normalized]);
    let index_value = &mac[..index.len()];
    let implemented = index.compute(&TenantKeyDeriver::new(&tk), &info, &normalized, version);
    assert_eq!(implemented.as_bytes(), index_value, "vector {id}");
    let mut v = json!({
        "id": id,
        "comment": comment,
        "tenant": tenant,
        "key_version": version,
        "index": index_def_json(index),
    });
    match std::str::from_utf8(value) {
        Ok(text) => v["value"] = json!(text),
        Err(_) => v["value_hex"] = json!(hex::encode(value)),
    }
    v["normalized"] = json!(hex::encode(&*normalized));
    v["info"] = json!(hex::encode(&info));
    v["iprk"] = json!(hex::encode(iprk.as_slice()));
    v["index_key"] = json!(hex::encode(ik.as_slice()));
    v["index_value"] = json!(hex::encode(index_value));
    v
}

fn index_vectors() -> Vec<Value> {
    let email = index_def("users", "email", "email_idx", Normalizer::email(), 16);
    let fold32 = index_def("users", "name", "name_idx", Normalizer::case_fold(), 32);
    let tiny = index_def("users", "email", "email_tiny", Normalizer::exact(), 1);
    let trim = index_def(
        "accounts",
        "external_id",
        "external_id_idx",
        Normalizer::trim(),
        16,
    );
    let long = index_def(
        &"t".repeat(255),
        &"c".repeat(255),
        &"i".repeat(255),
        Normalizer::exact(),
        16,
    );
    let digits = Normalizer::custom("digits", |v| {
        Some(v.iter().copied().filter(u8::is_ascii_digit).collect())
    })
    .expect("valid name");
    let phone = index_def("users", "phone", "phone_idx", digits, 16);
    let cases: Vec<(&str, &str, u32, &BlindIndex, &[u8])> = vec![
        (
            "e-mail index under acme's primary (version 2)",
            "acme",
            2,
            &email,
            b" Alice@Example.COM. ",
        ),
        (
            "the same value under acme's version 1",
            "acme",
            1,
            &email,
            b"alice@example.com",
        ),
        (
            "the same value for another tenant",
            "globex",
            1,
            &email,
            b"alice@example.com",
        ),
        (
            "case-folded, 32 bytes: sharp s folds to ss",
            "acme",
            2,
            &fold32,
            "Stra\u{df}e".as_bytes(),
        ),
        (
            "case-folded, 32 bytes: equal to the previous",
            "acme",
            2,
            &fold32,
            b" STRASSE",
        ),
        (
            "one byte, exact, bytes that are not UTF-8",
            "acme",
            2,
            &tiny,
            b"\xff\x00\xfe",
        ),
        (
            "trimmed, non-ASCII tenant, ideographic space",
            ZURICH,
            1,
            &trim,
            " acct_42\u{3000}".as_bytes(),
        ),
        (
            "the longest definition: 255-byte table, column and name",
            "acme",
            2,
            &long,
            b"",
        ),
        (
            "a custom normaliser: its id is bound, its function is the application's",
            "acme",
            2,
            &phone,
            b"+1 (555) 010-9999",
        ),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (comment, tenant, version, index, value))| {
            index_vector(601 + i, comment, tenant, version, index, value)
        })
        .collect()
}

/// Searches: the index values a reader queries for, or why it refuses.
fn search_vectors() -> Vec<Value> {
    let email = index_def("users", "email", "email_idx", Normalizer::email(), 16);
    let value = "Bob@Example.com";
    let terms = |tenant: &str, versions: &[u32]| -> Vec<Value> {
        versions
            .iter()
            .map(|v| {
                let entry = index_vector(0, "", tenant, *v, &email, value.as_bytes());
                json!({ "key_version": v, "index_value": entry["index_value"] })
            })
            .collect()
    };
    vec![
        json!({
            "id": 651,
            "comment": "every version from the primary down, primary first",
            "tenant": "acme", "index": index_def_json(&email), "value": value,
            "terms": terms("acme", &[2, 1]),
        }),
        json!({
            "id": 652,
            "comment": "minimum decryption version 4: versions 1 to 3 are not searched",
            "tenant": "initech", "index": index_def_json(&email), "value": value,
            "terms": terms("initech", &[4]),
        }),
        json!({
            "id": 653,
            "comment": "version 2 disabled and version 1 destroyed, no minimum: refused; a partial search has version 3 and names the two it skipped",
            "tenant": "hooli", "index": index_def_json(&email), "value": value,
            "expect": "incomplete_search",
            "partial_terms": terms("hooli", &[3]),
            "partial_skipped": [
                { "key_version": 2, "expect": "key_disabled" },
                { "key_version": 1, "expect": "key_destroyed" },
            ],
        }),
        json!({
            "id": 654,
            "comment": "a shredded tenant",
            "tenant": "umbrella", "index": index_def_json(&email), "value": value,
            "expect": "tenant_shredded",
        }),
        json!({
            "id": 655,
            "comment": "a value the normaliser refuses",
            "tenant": "acme", "index": index_def_json(&email), "value": "bob.example.com",
            "expect": "not_indexable",
        }),
    ]
}

fn normalizer_vectors() -> Vec<Value> {
    let cases: Vec<(Normalizer, &[u8])> = vec![
        (Normalizer::exact(), b" Alice "),
        (Normalizer::exact(), b"\xff\xfe"),
        (Normalizer::exact(), b""),
        (Normalizer::trim(), " \t Alice\u{3000}\n".as_bytes()),
        (
            Normalizer::trim(),
            "\u{85}\u{a0}a  b\u{2029}\u{202f}".as_bytes(),
        ),
        (Normalizer::trim(), "\u{200b}a\u{200b}".as_bytes()),
        (Normalizer::trim(), b"\xff"),
        (Normalizer::case_fold(), " Stra\u{df}e ".as_bytes()),
        (Normalizer::case_fold(), "ZU\u{308}RICH".as_bytes()),
        (Normalizer::case_fold(), "\u{3a3}\u{391}\u{3a3}".as_bytes()),
        (Normalizer::case_fold(), "\u{130}stanbul".as_bytes()),
        (Normalizer::case_fold(), "\u{fb03}".as_bytes()),
        (Normalizer::case_fold(), "\u{212b}".as_bytes()),
        (Normalizer::case_fold(), "\u{1e9e}".as_bytes()),
        (Normalizer::case_fold(), b"\xc3"),
        (Normalizer::email(), b" Alice@Example.COM. "),
        (Normalizer::email(), b"Alice.Smith+tag@Gmail.com"),
        (Normalizer::email(), b"\"a@b\"@Example.com"),
        (
            Normalizer::email(),
            "J\u{fc}rgen@B\u{dc}CHER.example".as_bytes(),
        ),
        (Normalizer::email(), b"alice"),
        (Normalizer::email(), b"@example.com"),
        (Normalizer::email(), b"alice@"),
        (Normalizer::email(), b"alice@."),
        (Normalizer::email(), b"\xff@example.com"),
        (Normalizer::email(), "x@Stra\u{df}e.de".as_bytes()),
        (Normalizer::email(), b"x@STRASSE.de"),
        (
            Normalizer::email(),
            "J\u{dc}RGEN@xn--bcher-kva.example".as_bytes(),
        ),
        (Normalizer::email(), b"a@b..c"),
        (Normalizer::email(), b"a@b.c ."),
        (Normalizer::case_fold(), "a\u{378}".as_bytes()),
        (Normalizer::email(), "a@Example.com\u{3002}".as_bytes()),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (normalizer, input))| {
            let mut v = json!({ "id": 701 + i, "normalizer": normalizer.id() });
            match std::str::from_utf8(input) {
                Ok(text) => v["input"] = json!(text),
                Err(_) => v["input_hex"] = json!(hex::encode(input)),
            }
            match normalizer.normalize(input) {
                Ok(out) => {
                    use secrecy::ExposeSecret as _;
                    let out = out.expose_secret();
                    match std::str::from_utf8(out) {
                        Ok(text) => v["output"] = json!(text),
                        Err(_) => v["output_hex"] = json!(hex::encode(out)),
                    }
                }
                Err(e) => v["expect"] = json!(e.kind().as_str()),
            }
            v
        })
        .collect()
}

fn build_blind_index() -> Value {
    json!({
        "format": "fieldseal blind index values, format version 1 (docs/FORMAT.md, \"Blind indexes\")",
        "note": "Tenant keys are fixed for reproducibility; never reuse them. info, iprk and \
                 index_key are the intermediate values of each index value, for implementers \
                 checking their derivation step by step; normalized is N(value) in hex. \
                 Strings are UTF-8; this file writes every non-ASCII character as a JSON \
                 \\u escape.",
        "tenants": index_tenants_json(),
        "indexes": index_vectors(),
        "searches": search_vectors(),
        "normalizers": normalizer_vectors(),
    })
}

#[test]
fn blind_index_vectors_match_committed_file() {
    check_committed("blind_index.json", &build_blind_index());
}

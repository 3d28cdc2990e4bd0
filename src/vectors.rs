//! Generates and checks `tests/vectors/v1.json`, the published format test vectors.
//!
//! The vectors are computed here, with fixed tenant keys and fixed salts, through
//! the same functions that seal real values. `cargo test` recomputes them and
//! fails if one byte differs from the committed file. To regenerate after an
//! intended format change (which needs a new format version):
//! `FIELDSEAL_WRITE_VECTORS=1 cargo test --lib vectors`.
//!
//! `tests/vectors.rs` then opens every valid vector and checks every invalid
//! one through the public API only.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::context::Context;
use crate::crypto::RecordKeyDeriver;
use crate::format::{Algorithm, SealedValue};
use crate::keyring::seal_with_salt;

struct Key {
    tenant: &'static str,
    version: u32,
    bytes: [u8; 32],
}

const KEYS: [Key; 3] = [
    Key {
        tenant: "acme",
        version: 1,
        bytes: *b"fieldseal test vector: acme v1!!",
    },
    Key {
        tenant: "acme",
        version: 2,
        bytes: *b"fieldseal test vector: acme v2!!",
    },
    Key {
        tenant: "globex",
        version: 1,
        bytes: *b"fieldseal test vector: globex v1",
    },
];

struct Case {
    comment: &'static str,
    key: usize,
    algorithm: Algorithm,
    ctx: fn() -> Context,
    salt: [u8; 16],
    plaintext: &'static [u8],
}

fn ctx_row_42() -> Context {
    Context::builder("acme", "integrations", "refresh_token")
        .row(42)
        .build()
        .unwrap()
}

fn ctx_no_row() -> Context {
    Context::new("acme", "settings", "webhook_secret").unwrap()
}

fn ctx_extras() -> Context {
    Context::builder("acme", "integrations", "api_secret")
        .row("8f14e45f-ceea-467f-a8d6-8f5b8b2c1f6a")
        .extra("provider", "github")
        .extra("env", "production")
        .build()
        .unwrap()
}

fn ctx_globex() -> Context {
    Context::builder("globex", "integrations", "refresh_token")
        .row(42)
        .build()
        .unwrap()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            comment: "OAuth refresh token, AES-256-GCM, with a row id",
            key: 0,
            algorithm: Algorithm::Aes256Gcm,
            ctx: ctx_row_42,
            salt: [0x01; 16],
            plaintext: b"1//0gLx9-example-refresh-token",
        },
        Case {
            comment: "the same value and context under ChaCha20-Poly1305",
            key: 0,
            algorithm: Algorithm::ChaCha20Poly1305,
            ctx: ctx_row_42,
            salt: [0x02; 16],
            plaintext: b"1//0gLx9-example-refresh-token",
        },
        Case {
            comment: "empty plaintext, no row id",
            key: 0,
            algorithm: Algorithm::Aes256Gcm,
            ctx: ctx_no_row,
            salt: *b"0123456789abcdef",
            plaintext: b"",
        },
        Case {
            comment: "key version 2, a UUID row id and two extra pairs",
            key: 1,
            algorithm: Algorithm::Aes256Gcm,
            ctx: ctx_extras,
            salt: [0xff; 16],
            plaintext: b"sk_live_51Hx-example-api-secret",
        },
        Case {
            comment: "another tenant, ChaCha20-Poly1305, 100 bytes over several blocks",
            key: 2,
            algorithm: Algorithm::ChaCha20Poly1305,
            ctx: ctx_globex,
            salt: [0x5a; 16],
            plaintext: &[0xa5; 100],
        },
    ]
}

/// A mutation of a valid vector and the error kind a reader must report.
struct Invalid {
    comment: &'static str,
    of: usize,
    ctx: Option<fn() -> Context>,
    bytes: Option<fn(&mut Vec<u8>)>,
    text: Option<fn(&str) -> String>,
    expect: &'static str,
}

fn invalid() -> Vec<Invalid> {
    fn inv(comment: &'static str, of: usize, expect: &'static str) -> Invalid {
        Invalid {
            comment,
            of,
            ctx: None,
            bytes: None,
            text: None,
            expect,
        }
    }
    vec![
        Invalid {
            bytes: Some(|b| b[0] = 0x02),
            ..inv(
                "format version 2 is not known to a v1 reader",
                0,
                "unsupported_version",
            )
        },
        Invalid {
            bytes: Some(|b| b[0] = 0x00),
            ..inv("format version 0", 0, "unsupported_version")
        },
        Invalid {
            bytes: Some(|b| b[1] = 0x03),
            ..inv("unknown algorithm id 3", 0, "unsupported_algorithm")
        },
        Invalid {
            bytes: Some(|b| b[1] = 0x02),
            ..inv(
                "algorithm byte switched from AES-256-GCM to ChaCha20-Poly1305",
                0,
                "open_failed",
            )
        },
        Invalid {
            bytes: Some(|b| b[1] = 0x01),
            ..inv(
                "algorithm byte switched from ChaCha20-Poly1305 to AES-256-GCM",
                1,
                "open_failed",
            )
        },
        Invalid {
            bytes: Some(|b| b[2..6].copy_from_slice(&0u32.to_be_bytes())),
            ..inv("key version 0 is reserved", 0, "malformed")
        },
        Invalid {
            bytes: Some(|b| b[2..6].copy_from_slice(&9u32.to_be_bytes())),
            ..inv("key version 9 does not exist", 0, "unknown_key_version")
        },
        Invalid {
            bytes: Some(|b| b[2..6].copy_from_slice(&1u32.to_be_bytes())),
            ..inv("key version changed from 2 to 1", 3, "open_failed")
        },
        Invalid {
            bytes: Some(|b| b[6] ^= 0x01),
            ..inv("one bit of the salt flipped", 0, "open_failed")
        },
        Invalid {
            bytes: Some(|b| b[22] ^= 0x80),
            ..inv("one bit of the key commitment flipped", 0, "open_failed")
        },
        Invalid {
            bytes: Some(|b| b[38] ^= 0x01),
            ..inv("one bit of the ciphertext flipped", 0, "open_failed")
        },
        Invalid {
            bytes: Some(|b| *b.last_mut().unwrap() ^= 0x01),
            ..inv("one bit of the tag flipped", 1, "open_failed")
        },
        Invalid {
            bytes: Some(|b| b.truncate(b.len() - 1)),
            ..inv("last byte removed", 0, "open_failed")
        },
        Invalid {
            bytes: Some(|b| b.push(0)),
            ..inv("one byte appended", 0, "open_failed")
        },
        Invalid {
            bytes: Some(|b| b.truncate(53)),
            ..inv("shorter than the 54-byte minimum", 2, "malformed")
        },
        Invalid {
            bytes: Some(|b| b.clear()),
            ..inv("empty input", 0, "malformed")
        },
        Invalid {
            ctx: Some(|| {
                Context::builder("acme", "integrations", "refresh_token")
                    .row(43)
                    .build()
                    .unwrap()
            }),
            ..inv("opened with another row id", 0, "open_failed")
        },
        Invalid {
            ctx: Some(|| {
                Context::builder("acme", "integrations", "api_secret")
                    .row(42)
                    .build()
                    .unwrap()
            }),
            ..inv("opened as another column", 0, "open_failed")
        },
        Invalid {
            ctx: Some(|| {
                Context::builder("acme", "audit", "refresh_token")
                    .row(42)
                    .build()
                    .unwrap()
            }),
            ..inv("opened as another table", 0, "open_failed")
        },
        Invalid {
            ctx: Some(ctx_globex),
            ..inv(
                "opened as another tenant (same key version)",
                0,
                "open_failed",
            )
        },
        Invalid {
            ctx: Some(|| {
                Context::builder("acme", "integrations", "api_secret")
                    .row("8f14e45f-ceea-467f-a8d6-8f5b8b2c1f6a")
                    .extra("provider", "github")
                    .build()
                    .unwrap()
            }),
            ..inv("opened with an extra pair missing", 3, "open_failed")
        },
        Invalid {
            text: Some(|t| t.trim_start_matches("fs:").to_string()),
            ..inv("text form without its prefix", 0, "malformed")
        },
        Invalid {
            text: Some(|t| t.replacen("fs:", "FS:", 1)),
            ..inv("text form with an upper-case prefix", 0, "malformed")
        },
        Invalid {
            text: Some(|t| format!("{t}=")),
            ..inv("text form with base64 padding", 2, "malformed")
        },
        Invalid {
            text: Some(|t| t.replace('-', "+").replace('_', "/") + "+/"),
            ..inv("text form in the standard base64 alphabet", 3, "malformed")
        },
        Invalid {
            text: Some(|t| {
                // Vector 4 is 85 bytes, so its last character carries 4 unused
                // bits: set one of them.
                let mut t = t.to_string();
                let last = t.pop().unwrap();
                let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let i = alphabet.find(last).unwrap();
                t.push(alphabet.as_bytes()[i | 1] as char);
                t
            }),
            ..inv("text form with non-zero trailing bits", 3, "malformed")
        },
    ]
}

fn build() -> Value {
    let cases = cases();
    let mut sealed = Vec::new();
    let mut valid = Vec::new();
    for (id, case) in cases.iter().enumerate() {
        let key = &KEYS[case.key];
        let ctx = (case.ctx)();
        let deriver = RecordKeyDeriver::new(&key.bytes);
        let value = seal_with_salt(
            &deriver,
            case.algorithm,
            key.version,
            ctx.associated_data(),
            case.plaintext,
            &case.salt,
        )
        .unwrap();
        let header: &[u8; 22] = value.as_bytes()[..22].try_into().unwrap();
        let record_key = deriver.derive(header);
        valid.push(json!({
            "id": id + 1,
            "comment": case.comment,
            "tenant_key": { "tenant": key.tenant, "version": key.version },
            "context": context_json(&ctx),
            "algorithm": case.algorithm.to_string(),
            "salt": hex::encode(case.salt),
            "plaintext": hex::encode(case.plaintext),
            "associated_data": hex::encode(ctx.associated_data()),
            "record_key": hex::encode(record_key.key),
            "nonce": hex::encode(record_key.nonce),
            "commitment": hex::encode(record_key.commitment),
            "sealed": hex::encode(value.as_bytes()),
            "sealed_text": value.to_text(),
        }));
        sealed.push((value, ctx));
    }
    let mut invalid_json = Vec::new();
    for (i, inv) in invalid().iter().enumerate() {
        let (value, ctx) = &sealed[inv.of];
        let ctx = inv.ctx.map_or_else(|| ctx.clone(), |f| f());
        let mut entry = json!({
            "id": 101 + i,
            "comment": inv.comment,
            "derived_from": inv.of + 1,
            "context": context_json(&ctx),
            "expect": inv.expect,
        });
        if let Some(text) = inv.text {
            entry["sealed_text"] = json!(text(&value.to_text()));
        } else {
            let mut bytes = value.as_bytes().to_vec();
            if let Some(mutate) = inv.bytes {
                mutate(&mut bytes);
            }
            entry["sealed"] = json!(hex::encode(bytes));
        }
        invalid_json.push(entry);
    }
    json!({
        "format": "fieldseal sealed value, format version 1 (docs/FORMAT.md)",
        "note": "Keys and salts are fixed for reproducibility; never reuse them. \
                 record_key, nonce and commitment are the HKDF-Expand output for each \
                 value, for implementers checking their derivation step by step.",
        "tenant_keys": KEYS.iter().map(|k| json!({
            "tenant": k.tenant,
            "version": k.version,
            "key": hex::encode(k.bytes),
        })).collect::<Vec<_>>(),
        "valid": valid,
        "invalid": invalid_json,
    })
}

fn context_json(ctx: &Context) -> Value {
    let mut v = json!({
        "tenant": ctx.tenant(),
        "table": ctx.table(),
        "column": ctx.column(),
    });
    if let Some(row) = ctx.row() {
        v["row"] = json!(row);
    }
    let extras: serde_json::Map<String, Value> = ctx
        .extras()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    if !extras.is_empty() {
        v["extras"] = Value::Object(extras);
    }
    v
}

#[test]
fn vectors_match_committed_file() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1.json");
    let generated = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    if std::env::var_os("FIELDSEAL_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("tests/vectors/v1.json is committed");
    assert!(
        committed == generated,
        "the format changed: tests/vectors/v1.json no longer matches what this build seals"
    );
}

#[test]
fn every_valid_vector_parses_and_reencodes() {
    for v in build()["valid"].as_array().unwrap() {
        let bytes = hex::decode(v["sealed"].as_str().unwrap()).unwrap();
        let text = v["sealed_text"].as_str().unwrap();
        let from_bytes = SealedValue::from_bytes(bytes.clone()).unwrap();
        let from_text = SealedValue::from_text(text).unwrap();
        assert_eq!(from_bytes, from_text);
        assert_eq!(from_text.as_bytes(), bytes);
        assert_eq!(from_bytes.to_text(), text);
    }
}

//! Checks the published vectors (`tests/vectors/v1.json`) through the public
//! API: every valid value opens to its plaintext, every invalid input fails
//! with the error kind it names, the wrapped keys unwrap (or fail) under the
//! local provider, and the audit-chain cases verify as stated.
//!
//! `tests/mutants.rs` runs the same vectors through an implementation of
//! FORMAT.md written from the spec alone, and through faulty variants of it.

mod common;

use common::{PlainProvider, TamperStore, kind};
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Context, Error, LocalKeyProvider, RootKey, SealedValue, Sealer, Timestamp,
    audit::AuditEntry,
    provider::{KeyProvider, WrapContext, WrappedKey},
    store::{KeyRecord, KeyState, KeyStore, TenantRecord},
};
use serde_json::Value;

fn load() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/v1.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn hex_of(v: &Value) -> Vec<u8> {
    hex::decode(s(v)).unwrap()
}

/// Builds the context as a caller would: the extras in the listed order.
fn context(v: &Value) -> Result<Context, Error> {
    let mut b = Context::builder(s(&v["tenant"]), s(&v["table"]), s(&v["column"]));
    if let Some(row) = v["row"].as_str() {
        b = b.row(row);
    }
    for pair in v["extras"].as_array().into_iter().flatten() {
        b = b.extra(s(&pair[0]), s(&pair[1]));
    }
    b.build()
}

/// A sealer whose key store holds exactly the vectors' tenants, in their
/// states.
fn sealer(vectors: &Value) -> Sealer {
    let store = TamperStore::default();
    let at = Timestamp::from_unix_seconds(1_767_225_600);
    for t in vectors["tenants"].as_array().unwrap() {
        let keys = t["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                let state = KeyState::parse(s(&k["state"])).unwrap();
                KeyRecord::new(
                    k["version"].as_u64().unwrap() as u32,
                    state,
                    at,
                    k["key"]
                        .as_str()
                        .filter(|_| state != KeyState::Destroyed)
                        .map(|key| WrappedKey::new("plain", hex::decode(key).unwrap())),
                )
            })
            .collect();
        let mut record = TenantRecord::new(s(&t["tenant"]), 1);
        record.shredded_at = t["shredded"].as_bool().unwrap().then_some(at);
        record.min_decryption_version = t["min_decryption_version"].as_u64().unwrap() as u32;
        record.keys = keys;
        store.set_record(record);
    }
    Sealer::builder(PlainProvider, store)
        .create_tenants_on_first_use(false)
        .build()
}

fn parse(v: &Value) -> Result<SealedValue, Error> {
    match (v["sealed"].as_str(), v["sealed_text"].as_str()) {
        (Some(hex_bytes), _) => SealedValue::from_bytes(hex::decode(hex_bytes).unwrap()),
        (None, Some(text)) => SealedValue::from_text(text),
        _ => panic!("vector {} has no sealed value", v["id"]),
    }
}

/// What a reader reports for `v`: the context is built first, then the value
/// parsed, then opened.
async fn read(sealer: &Sealer, v: &Value) -> Result<Vec<u8>, Error> {
    let ctx = context(&v["context"])?;
    let sealed = parse(v)?;
    let opened = sealer.open(&ctx, &sealed).await?;
    Ok(opened.plaintext().expose_secret().to_vec())
}

#[tokio::test]
async fn valid_vectors_open() {
    let vectors = load();
    let sealer = sealer(&vectors);
    let valid = vectors["valid"].as_array().unwrap();
    assert!(valid.len() >= 10);
    for v in valid {
        let ctx = context(&v["context"]).unwrap();
        assert_eq!(
            ctx.associated_data(),
            hex_of(&v["associated_data"]),
            "vector {}",
            v["id"]
        );
        let from_bytes = SealedValue::from_bytes(hex_of(&v["sealed"])).unwrap();
        let from_text = SealedValue::from_text(s(&v["sealed_text"])).unwrap();
        assert_eq!(from_bytes, from_text, "vector {}", v["id"]);
        assert_eq!(from_bytes.algorithm().to_string(), s(&v["algorithm"]));
        assert_eq!(
            from_bytes.key_version() as u64,
            v["tenant_key"]["version"].as_u64().unwrap()
        );
        let opened = sealer.open(&ctx, &from_bytes).await.unwrap();
        assert_eq!(
            opened.plaintext().expose_secret(),
            &hex_of(&v["plaintext"])[..],
            "vector {}",
            v["id"]
        );
    }
}

#[tokio::test]
async fn invalid_vectors_fail_with_their_error() {
    let vectors = load();
    let sealer = sealer(&vectors);
    let invalid = vectors["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 45);
    for v in invalid {
        let err = read(&sealer, v)
            .await
            .expect_err(&format!("vector {} must not open", v["id"]));
        assert_eq!(
            kind(&err),
            s(&v["expect"]),
            "vector {} ({}): got {err}",
            v["id"],
            v["comment"]
        );
    }
}

#[tokio::test]
async fn invalid_contexts_are_refused_before_the_value_is_read() {
    let vectors = load();
    let sealer = sealer(&vectors);
    let cases = vectors["invalid_contexts"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for v in cases {
        let err = read(&sealer, v).await.unwrap_err();
        assert_eq!(kind(&err), "invalid_context", "vector {}: {err}", v["id"]);
        assert_eq!(s(&v["expect"]), "invalid_context");
    }
}

/// Rule 4 of the tenant id rules applies to creating a tenant: a context
/// naming such an id still builds (a tenant created before the rule keeps
/// opening its values), and creating it is refused, explicitly or on first
/// use.
#[tokio::test]
async fn invisible_tenant_ids_cannot_be_created() {
    let vectors = load();
    let cases = vectors["invalid_new_tenants"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for v in cases {
        let tenant = s(&v["tenant"]);
        let ctx = Context::builder(tenant, "integrations", "refresh_token")
            .row(42)
            .build()
            .unwrap_or_else(|e| panic!("vector {}: {e}", v["id"]));
        let sealer = common::sealer();
        let err = sealer.create_tenant(tenant).await.unwrap_err();
        assert_eq!(kind(&err), s(&v["expect"]), "vector {}: {err}", v["id"]);
        let err = sealer.seal(&ctx, b"x").await.unwrap_err();
        assert_eq!(kind(&err), s(&v["expect"]), "vector {}: {err}", v["id"]);
        assert!(sealer.admin().tenants().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn length_limits() {
    let vectors = load();
    let sealer = sealer(&vectors);
    for v in vectors["large"].as_array().unwrap() {
        let ctx = context(&v["context"]).unwrap();
        let result = if let Some(prefix) = v["sealed_prefix"].as_str() {
            let prefix = hex::decode(prefix).unwrap();
            let mut bytes = vec![0; v["zero_fill_to"].as_u64().unwrap() as usize];
            bytes[..prefix.len()].copy_from_slice(&prefix);
            match SealedValue::from_bytes(bytes) {
                Ok(sealed) => sealer.open(&ctx, &sealed).await.map(|_| ()),
                Err(e) => Err(e),
            }
        } else {
            let fill = &v["plaintext_fill"];
            let plaintext = vec![hex_of(&fill["byte"])[0]; fill["len"].as_u64().unwrap() as usize];
            sealer.seal(&ctx, &plaintext).await.map(|_| ())
        };
        let err = result.expect_err(&format!("vector {}", v["id"]));
        assert_eq!(kind(&err), s(&v["expect"]), "vector {}: {err}", v["id"]);
    }
}

fn wrap_context<'a>(v: &'a Value) -> WrapContext<'a> {
    let version = v["version"].as_u64().unwrap() as u32;
    let ctx = match s(&v["purpose"]) {
        "tenant-key" => WrapContext::tenant_key(s(&v["tenant"]), version),
        "audit-key" => WrapContext::audit_key(version),
        other => panic!("unknown purpose {other}"),
    };
    match v["store"].as_str() {
        Some(store) => ctx.in_store(store),
        None => ctx,
    }
}

fn vector_provider(vectors: &Value) -> LocalKeyProvider {
    let root = &vectors["wrapped_keys"]["root_keys"][0];
    let mut key: [u8; 32] = hex_of(&root["key"]).try_into().unwrap();
    LocalKeyProvider::new(s(&root["id"]), RootKey::from_bytes(&mut key)).unwrap()
}

#[tokio::test]
async fn wrapped_key_vectors() {
    let vectors = load();
    let provider = vector_provider(&vectors);
    let wrapped = &vectors["wrapped_keys"];
    for v in wrapped["valid"].as_array().unwrap() {
        let ctx = wrap_context(&v["wrap_context"]);
        assert_eq!(ctx.aad(), hex_of(&v["wrap_aad"]), "vector {}", v["id"]);
        let fields = ctx.fields();
        for (name, value) in &fields {
            assert_eq!(v["kms_encryption_context"][name], value.as_str());
        }
        assert_eq!(
            v["kms_encryption_context"].as_object().unwrap().len(),
            fields.len(),
            "vector {}: the encryption context has exactly these pairs",
            v["id"]
        );
        let w = WrappedKey::new(s(&v["root_key_id"]), hex_of(&v["wrapped"]));
        let key = provider.unwrap(&w, &ctx).await.unwrap();
        assert_eq!(
            &key.expose_secret()[..],
            hex_of(&v["key"]),
            "vector {}",
            v["id"]
        );
    }
    for v in wrapped["invalid"].as_array().unwrap() {
        let ctx = wrap_context(&v["wrap_context"]);
        let w = WrappedKey::new(s(&v["root_key_id"]), hex_of(&v["wrapped"]));
        let err = provider.unwrap(&w, &ctx).await.unwrap_err();
        assert_eq!(kind(&err), s(&v["expect"]), "vector {}: {err}", v["id"]);
    }
}

#[tokio::test]
async fn audit_chain_vectors() {
    let vectors = load();
    let audit = &vectors["audit_chain"];
    let wrapped_by = audit["audit_key_wrapped_by"].as_u64().unwrap();
    let audit_wrap = vectors["wrapped_keys"]["valid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"].as_u64() == Some(wrapped_by))
        .unwrap();
    assert_eq!(audit_wrap["key"], audit["audit_key"]);
    for case in audit["cases"].as_array().unwrap() {
        let entries: Vec<AuditEntry> = case["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let mut entry = AuditEntry::new(
                    e["seq"].as_u64().unwrap(),
                    Timestamp::from_unix_seconds(e["at"].as_i64().unwrap()),
                    s(&e["event"]),
                    hex_of(&e["mac"]).try_into().unwrap(),
                );
                entry.tenant = s(&e["tenant"]).into();
                entry.version = e["version"].as_u64().unwrap() as u32;
                entry.actor = s(&e["actor"]).into();
                entry.detail = s(&e["detail"]).into();
                entry
            })
            .collect();
        // The store holds the vector's wrapped audit key and reads back the
        // case's entries as its whole log.
        let store = TamperStore::default();
        let inserted = store
            .inner
            .insert_audit_key(WrappedKey::new(
                s(&audit_wrap["root_key_id"]),
                hex_of(&audit_wrap["wrapped"]),
            ))
            .await
            .unwrap();
        assert!(inserted);
        store.edit_audit(move |log| *log = entries.clone());
        let sealer = Sealer::builder(vector_provider(&vectors), store).build();
        let report = sealer.admin().verify_audit().await.unwrap();
        match s(&case["expect"]) {
            "intact" => {
                // The chain alone: the store holds none of the keys its
                // entries name (which verify_audit reports as mismatches).
                assert!(
                    report.broken.is_none(),
                    "case {}: {:?}",
                    case["id"],
                    report.broken
                );
                assert_eq!(report.head, s(&case["head"]), "case {}", case["id"]);
            }
            "broken" => {
                let broken = report
                    .broken
                    .unwrap_or_else(|| panic!("case {} must break", case["id"]));
                assert_eq!(
                    broken.seq,
                    case["first_broken_seq"].as_u64().unwrap(),
                    "case {} ({}): {}",
                    case["id"],
                    case["comment"],
                    broken.reason
                );
            }
            other => panic!("unknown expectation {other}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Blind indexes: tests/vectors/blind_index.json, through the public API and
// through the formulas of FORMAT.md §"Blind indexes" computed with RustCrypto's
// `hkdf` and `hmac` directly.

fn load_blind_index() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/blind_index.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn bytes_field(v: &Value, name: &str) -> Vec<u8> {
    match v[name].as_str() {
        Some(text) => text.as_bytes().to_vec(),
        None => hex_of(&v[format!("{name}_hex")]),
    }
}

fn normalizer(id: &str) -> fieldseal::blind_index::Normalizer {
    use fieldseal::blind_index::Normalizer;
    match id {
        "exact" => Normalizer::exact(),
        "trim" => Normalizer::trim(),
        "casefold" => Normalizer::case_fold(),
        "email" => Normalizer::email(),
        // The vectors' one custom normaliser keeps the ASCII digits.
        "custom:digits" => Normalizer::custom("digits", |v| {
            Some(v.iter().copied().filter(u8::is_ascii_digit).collect())
        })
        .unwrap(),
        other => panic!("unknown normaliser {other}"),
    }
}

fn blind_index(v: &Value) -> fieldseal::blind_index::BlindIndex {
    fieldseal::blind_index::BlindIndex::builder(s(&v["table"]), s(&v["column"]), s(&v["name"]))
        .normalizer(normalizer(s(&v["normalizer"])))
        .len(v["len"].as_u64().unwrap() as usize)
        .build()
        .unwrap()
}

fn tenant_key(vectors: &Value, tenant: &str, version: u64) -> Vec<u8> {
    let t = vectors["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == tenant)
        .unwrap();
    let k = t["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["version"] == version)
        .unwrap();
    hex_of(&k["key"])
}

#[test]
fn blind_index_vectors_follow_the_formulas() {
    use hmac::{KeyInit as _, Mac as _};
    let vectors = load_blind_index();
    let lp = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for v in vectors["indexes"].as_array().unwrap() {
        let def = &v["index"];
        let tenant = s(&v["tenant"]);
        let mut info = Vec::new();
        for part in [
            tenant,
            s(&def["table"]),
            s(&def["column"]),
            s(&def["name"]),
            s(&def["normalizer"]),
        ] {
            lp(&mut info, part);
        }
        info.push(def["len"].as_u64().unwrap() as u8);
        assert_eq!(hex::encode(&info), s(&v["info"]), "vector {}", v["id"]);

        let tk = tenant_key(&vectors, tenant, v["key_version"].as_u64().unwrap());
        let (iprk, hk) =
            hkdf::Hkdf::<sha2::Sha256>::extract(Some(b"fieldseal/v1/blind-index"), &tk);
        assert_eq!(hex::encode(iprk), s(&v["iprk"]), "vector {}", v["id"]);
        let mut ik = [0u8; 32];
        hk.expand(&info, &mut ik).unwrap();
        assert_eq!(hex::encode(ik), s(&v["index_key"]), "vector {}", v["id"]);

        let normalized = hex_of(&v["normalized"]);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&ik).unwrap();
        mac.update(&normalized);
        let full = mac.finalize().into_bytes();
        let len = def["len"].as_u64().unwrap() as usize;
        assert_eq!(
            hex::encode(&full[..len]),
            s(&v["index_value"]),
            "vector {}",
            v["id"]
        );

        // N(value) as the public normaliser computes it.
        let got = normalizer(s(&def["normalizer"]))
            .normalize(&bytes_field(v, "value"))
            .unwrap();
        assert_eq!(
            got.expose_secret(),
            normalized.as_slice(),
            "vector {}",
            v["id"]
        );
    }
}

#[tokio::test]
async fn blind_index_vectors_through_the_public_api() {
    let vectors = load_blind_index();
    let sealer = sealer(&vectors);
    for v in vectors["indexes"].as_array().unwrap() {
        let index = blind_index(&v["index"]);
        let handle = sealer.tenant(s(&v["tenant"])).await.unwrap();
        let search = handle.search(&index, &bytes_field(v, "value")).unwrap();
        let version = v["key_version"].as_u64().unwrap() as u32;
        let term = search
            .terms()
            .iter()
            .find(|t| t.key_version() == version)
            .unwrap_or_else(|| panic!("vector {}: no term for version {version}", v["id"]));
        assert_eq!(
            hex::encode(term.as_bytes()),
            s(&v["index_value"]),
            "vector {}",
            v["id"]
        );
        if version == handle.primary_version() {
            let written = handle
                .blind_index(&index, &bytes_field(v, "value"))
                .unwrap();
            assert_eq!(&written, term, "vector {}", v["id"]);
        }
    }

    let expected_terms = |list: &Value| -> Vec<(u32, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["key_version"].as_u64().unwrap() as u32,
                    s(&t["index_value"]).to_string(),
                )
            })
            .collect()
    };
    let got_terms = |search: &fieldseal::blind_index::Search| -> Vec<(u32, String)> {
        search
            .terms()
            .iter()
            .map(|t| (t.key_version(), hex::encode(t.as_bytes())))
            .collect()
    };
    for v in vectors["searches"].as_array().unwrap() {
        let index = blind_index(&v["index"]);
        let value = s(&v["value"]).as_bytes();
        let handle = sealer.tenant(s(&v["tenant"])).await;
        let outcome = handle.and_then(|h| h.search(&index, value).map(|search| (h, search)));
        match v["expect"].as_str() {
            None => {
                let (_, search) = outcome.unwrap();
                assert_eq!(
                    got_terms(&search),
                    expected_terms(&v["terms"]),
                    "vector {}",
                    v["id"]
                );
            }
            Some(expect) => {
                let err = outcome
                    .err()
                    .unwrap_or_else(|| panic!("vector {} searched", v["id"]));
                assert_eq!(kind(&err), expect, "vector {}: {err}", v["id"]);
                if v.get("partial_terms").is_some() {
                    let handle = sealer.tenant(s(&v["tenant"])).await.unwrap();
                    let partial = handle.search_partial(&index, value).unwrap();
                    assert_eq!(got_terms(&partial), expected_terms(&v["partial_terms"]));
                    let skipped: Vec<(u32, &str)> = v["partial_skipped"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|g| (g["key_version"].as_u64().unwrap() as u32, s(&g["expect"])))
                        .collect();
                    let got: Vec<(u32, &str)> = partial
                        .skipped()
                        .iter()
                        .map(|e| match e {
                            Error::KeyDisabled { version, .. }
                            | Error::KeyDestroyed { version, .. } => (*version, e.kind().as_str()),
                            other => panic!("unexpected skip {other}"),
                        })
                        .collect();
                    assert_eq!(got, skipped, "vector {}", v["id"]);
                }
            }
        }
    }

    for v in vectors["normalizers"].as_array().unwrap() {
        let got = normalizer(s(&v["normalizer"])).normalize(&bytes_field(v, "input"));
        match v["expect"].as_str() {
            None => assert_eq!(
                got.unwrap().expose_secret(),
                bytes_field(v, "output").as_slice(),
                "vector {}",
                v["id"]
            ),
            Some(expect) => assert_eq!(kind(&got.unwrap_err()), expect, "vector {}", v["id"]),
        }
    }
}

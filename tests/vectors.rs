//! Checks the published format vectors (`tests/vectors/v1.json`) through the
//! public API: every valid vector opens to its plaintext, every invalid one fails
//! with the error kind it names.

mod common;

use common::{PlainProvider, TamperStore, kind};
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Context, KeyRecord, KeyState, SealedValue, Sealer, TenantRecord, Timestamp, WrappedKey,
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

fn context(v: &Value) -> Context {
    let mut b = Context::builder(
        v["tenant"].as_str().unwrap(),
        v["table"].as_str().unwrap(),
        v["column"].as_str().unwrap(),
    );
    if let Some(row) = v["row"].as_str() {
        b = b.row(row);
    }
    if let Some(extras) = v["extras"].as_object() {
        for (k, val) in extras {
            b = b.extra(k, val.as_str().unwrap());
        }
    }
    b.build().unwrap()
}

/// A sealer whose store holds exactly the vectors' tenant keys.
async fn sealer(vectors: &Value) -> Sealer {
    let store = TamperStore::default();
    let mut records: Vec<TenantRecord> = Vec::new();
    for k in vectors["tenant_keys"].as_array().unwrap() {
        let tenant = k["tenant"].as_str().unwrap();
        let key = KeyRecord {
            version: k["version"].as_u64().unwrap() as u32,
            state: KeyState::Active,
            created_at: Timestamp::from_unix_seconds(0),
            state_changed_at: Timestamp::from_unix_seconds(0),
            wrapped: Some(WrappedKey::new(
                "plain",
                hex::decode(k["key"].as_str().unwrap()).unwrap(),
            )),
        };
        match records.iter_mut().find(|r| r.tenant == tenant) {
            Some(r) => r.keys.push(key),
            None => records.push(TenantRecord {
                tenant: tenant.to_string(),
                shredded_at: None,
                min_decryption_version: 0,
                generation: 1,
                keys: vec![key],
            }),
        }
    }
    for r in records {
        store.set_record(r);
    }
    Sealer::builder(PlainProvider, store).build()
}

fn parse(v: &Value) -> Result<SealedValue, fieldseal::Error> {
    match (v["sealed"].as_str(), v["sealed_text"].as_str()) {
        (Some(hex_bytes), _) => SealedValue::from_bytes(hex::decode(hex_bytes).unwrap()),
        (None, Some(text)) => SealedValue::from_text(text),
        _ => panic!("vector has no sealed value"),
    }
}

#[tokio::test]
async fn valid_vectors_open() {
    let vectors = load();
    let sealer = sealer(&vectors).await;
    let valid = vectors["valid"].as_array().unwrap();
    assert!(valid.len() >= 5);
    for v in valid {
        let ctx = context(&v["context"]);
        let plaintext = hex::decode(v["plaintext"].as_str().unwrap()).unwrap();
        let from_bytes =
            SealedValue::from_bytes(hex::decode(v["sealed"].as_str().unwrap()).unwrap()).unwrap();
        let from_text = SealedValue::from_text(v["sealed_text"].as_str().unwrap()).unwrap();
        assert_eq!(from_bytes, from_text, "vector {}", v["id"]);
        let opened = sealer.open(&ctx, &from_bytes).await.unwrap();
        assert_eq!(
            opened.plaintext().expose_secret(),
            &plaintext[..],
            "vector {}",
            v["id"]
        );
        assert_eq!(
            from_bytes.algorithm().to_string(),
            v["algorithm"].as_str().unwrap()
        );
    }
}

#[tokio::test]
async fn invalid_vectors_fail_with_their_error() {
    let vectors = load();
    let sealer = sealer(&vectors).await;
    let invalid = vectors["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 20);
    for v in invalid {
        let ctx = context(&v["context"]);
        let result = match parse(v) {
            Ok(sealed) => sealer.open(&ctx, &sealed).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = result.expect_err(&format!("vector {} must not open", v["id"]));
        assert_eq!(
            kind(&err),
            v["expect"].as_str().unwrap(),
            "vector {} ({}): got {err}",
            v["id"],
            v["comment"]
        );
    }
}

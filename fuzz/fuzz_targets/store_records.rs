//! Whatever a key store returns — any versions, states, times, wrapped bytes,
//! root key ids, and any audit log — loading keys, sealing, opening and
//! verifying the audit chain never panic.
#![no_main]

use arbitrary::Arbitrary;
use fieldseal::{
    Algorithm, SealedValue, Timestamp,
    audit::AuditEntry,
    provider::WrappedKey,
    store::{KeyRecord, KeyState, TenantRecord},
};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

#[derive(Debug, Arbitrary)]
struct Key {
    version: u32,
    state: u8,
    created: i64,
    changed: i64,
    wrapped: Option<(bool, Vec<u8>)>,
}

#[derive(Debug, Arbitrary)]
struct Entry {
    seq: u64,
    at: i64,
    event: String,
    version: u32,
    detail: String,
    mac: [u8; 32],
}

#[derive(Debug, Arbitrary)]
struct Input {
    keys: Vec<Key>,
    shredded: Option<i64>,
    min_version: u32,
    generation: u64,
    sealed: Vec<u8>,
    audit: Vec<Entry>,
}

fuzz_target!(|input: Input| {
    let mut record = TenantRecord::new(common::TENANT, input.generation);
    record.shredded_at = input.shredded.map(Timestamp::from_unix_seconds);
    record.min_decryption_version = input.min_version;
    record.keys = input
        .keys
        .into_iter()
        .map(|k| {
            let state = match k.state % 3 {
                0 => KeyState::Active,
                1 => KeyState::Disabled,
                _ => KeyState::Destroyed,
            };
            let wrapped = k.wrapped.map(|(copy, bytes)| {
                WrappedKey::new(if copy { "copy" } else { "elsewhere" }, bytes)
            });
            let mut key = KeyRecord::new(
                k.version,
                state,
                Timestamp::from_unix_seconds(k.created),
                wrapped,
            );
            key.state_changed_at = Timestamp::from_unix_seconds(k.changed);
            key
        })
        .collect();
    let audit = input
        .audit
        .into_iter()
        .map(|e| {
            let mut entry =
                AuditEntry::new(e.seq, Timestamp::from_unix_seconds(e.at), e.event, e.mac);
            entry.version = e.version;
            entry.detail = e.detail;
            entry
        })
        .collect();
    let store = common::FixedStore {
        record: Some(record),
        audit: std::sync::Mutex::new(audit),
    };
    let sealer = common::sealer(store, Algorithm::Aes256Gcm);
    let ctx = common::fixed_context();
    common::runtime().block_on(async {
        if let Ok(tenant) = sealer.tenant(common::TENANT).await {
            let _ = tenant.seal(&ctx, b"value");
        }
        if let Ok(value) = SealedValue::from_bytes(input.sealed) {
            let _ = sealer.open(&ctx, &value).await;
        }
        if let Ok(report) = sealer.admin().verify_audit().await {
            // Without the audit key, no fuzzed entry can verify.
            assert_eq!(report.entries, 0, "a forged audit entry verified");
        }
    });
});

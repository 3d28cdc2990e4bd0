//! Configuration parsers never panic and never echo their input into errors:
//! root keys from base64, root key ids, context fields, stored key states and
//! timestamps.
#![no_main]

use arbitrary::Arbitrary;
use fieldseal::{Context, LocalKeyProvider, RootKey, Timestamp, store::KeyState};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    key_text: String,
    key_id: String,
    tenant: String,
    table: String,
    column: String,
    row: String,
    state: String,
    time: i64,
}

fuzz_target!(|input: Input| {
    match RootKey::from_base64(&input.key_text) {
        Ok(key) => {
            let _ = LocalKeyProvider::new(input.key_id.clone(), key);
        }
        Err(err) => {
            // The message is one of two fixed sentences: it never carries the
            // input (which could be a real key with a typo).
            let message = err.to_string();
            assert!(
                message == "root key from base64 text: not valid standard base64"
                    || message
                        == "root key from base64 text: a root key is base64 of exactly 32 bytes",
                "unexpected message: {message}"
            );
        }
    }
    let _ = LocalKeyProvider::new(input.key_id, RootKey::from_bytes(&mut [1; 32]));
    let _ = Context::builder(input.tenant, input.table, input.column)
        .row(input.row)
        .build();
    if let Some(state) = KeyState::parse(&input.state) {
        assert_eq!(state.as_str(), input.state);
    }
    let _ = Timestamp::from_unix_seconds(input.time).to_string();
});

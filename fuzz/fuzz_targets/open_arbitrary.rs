//! Opening arbitrary bytes with a fixed tenant key and context never panics
//! and never succeeds. Inputs are also tried behind valid headers for both
//! algorithms, so that the fuzzer spends its time in the cryptography.
#![no_main]

use std::sync::OnceLock;

use fieldseal::{Algorithm, Context, SealedValue, TenantSealer};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn fixture() -> &'static (TenantSealer, Context) {
    static FIXTURE: OnceLock<(TenantSealer, Context)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        (
            common::tenant(Algorithm::Aes256Gcm),
            common::fixed_context(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (tenant, ctx) = fixture();
    let mut candidates = vec![data.to_vec()];
    for algorithm in [1u8, 2] {
        let mut with_header = vec![1, algorithm, 0, 0, 0, 1];
        with_header.extend_from_slice(data);
        candidates.push(with_header);
    }
    for bytes in candidates {
        if let Ok(value) = SealedValue::from_bytes(bytes) {
            assert!(tenant.open(ctx, &value).is_err(), "forged value opened");
        }
    }
});

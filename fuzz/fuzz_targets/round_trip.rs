//! Any plaintext, under any valid context and either algorithm, seals and opens
//! back to itself, through both the binary and the text form.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{Algorithm, Context, SealedValue, TenantSealer};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

#[derive(Debug, Arbitrary)]
struct Input {
    plaintext: Vec<u8>,
    table: String,
    column: String,
    row: Option<String>,
    extras: Vec<(String, String)>,
    chacha: bool,
}

fn tenants() -> &'static [TenantSealer; 2] {
    static TENANTS: OnceLock<[TenantSealer; 2]> = OnceLock::new();
    TENANTS.get_or_init(|| {
        [
            common::tenant(Algorithm::Aes256Gcm),
            common::tenant(Algorithm::ChaCha20Poly1305),
        ]
    })
}

fuzz_target!(|input: Input| {
    let mut builder = Context::builder(common::TENANT, input.table, input.column);
    if let Some(row) = input.row {
        builder = builder.row(row);
    }
    for (k, v) in input.extras {
        builder = builder.extra(k, v);
    }
    let Ok(ctx) = builder.build() else {
        return;
    };
    let tenant = &tenants()[usize::from(input.chacha)];
    let sealed = tenant.seal(&ctx, &input.plaintext).expect("seal");
    let parsed = SealedValue::from_text(&sealed.to_text()).expect("text form");
    let opened = tenant.open(&ctx, &parsed).expect("open");
    assert_eq!(opened.plaintext().expose_secret(), &input.plaintext[..]);
    assert!(!opened.is_stale());
});

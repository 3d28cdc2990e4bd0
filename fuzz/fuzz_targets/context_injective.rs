//! Context encoding is injective: two contexts encode to the same associated
//! data exactly when they are the same context.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use fieldseal::Context;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Fields {
    tenant: String,
    table: String,
    column: String,
    row: Option<String>,
    extras: Vec<(String, String)>,
}

fn build(f: Fields) -> Option<Context> {
    let mut b = Context::builder(f.tenant, f.table, f.column);
    if let Some(row) = f.row {
        b = b.row(row);
    }
    for (k, v) in f.extras {
        b = b.extra(k, v);
    }
    b.build().ok()
}

type Canonical<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    BTreeMap<&'a str, &'a str>,
);

fn canonical(c: &Context) -> Canonical<'_> {
    (
        c.tenant(),
        c.table(),
        c.column(),
        c.row(),
        c.extras().collect(),
    )
}

fuzz_target!(|pair: (Fields, Fields)| {
    let (Some(a), Some(b)) = (build(pair.0), build(pair.1)) else {
        return;
    };
    let same = canonical(&a) == canonical(&b);
    assert_eq!(a.associated_data() == b.associated_data(), same);
});

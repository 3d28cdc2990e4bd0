//! Context templates and batch sealing and opening: the template binds exactly
//! the builder's associated data, and a batch gives, row for row and in
//! order, the result one call per row gives (also on rayon's pool).

mod common;

use std::collections::BTreeMap;

use fieldseal::{
    Context, ContextTemplate, Error, ErrorKind, Opened, SealedValue, Sealer, TenantSealer,
};
use proptest::prelude::*;
use secrecy::ExposeSecret as _;

fn template(tenant: &str) -> ContextTemplate {
    Context::builder(tenant, "integrations", "refresh_token")
        .extra("provider", "github")
        .template()
        .unwrap()
}

/// A comparable summary of one result: the plaintext, version and staleness,
/// or the error's kind and message.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Opened(Vec<u8>, u32, bool),
    Failed(&'static str, String),
}

fn outcome(result: &Result<Opened, Error>) -> Outcome {
    match result {
        Ok(opened) => Outcome::Opened(
            opened.plaintext().expose_secret().to_vec(),
            opened.key_version(),
            opened.is_stale(),
        ),
        Err(err) => Outcome::Failed(err.kind().as_str(), err.to_string()),
    }
}

/// Asserts equal lists, naming the first row that differs.
#[track_caller]
fn assert_same(got: &[Outcome], want: &[Outcome], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("{what}: row {i} differs: {:?} != {:?}", got[i], want[i]);
    }
}

#[cfg(feature = "rayon")]
fn sealed_outcome(result: &Result<SealedValue, Error>) -> Result<(u32, usize), String> {
    result
        .as_ref()
        .map(|s| (s.key_version(), s.plaintext_len()))
        .map_err(|e| format!("{}: {e}", e.kind()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Acme with key versions 1 (destroyed), 2 (usable, stale) and 3 (primary),
/// and globex; returns acme's handle and a handle for globex.
async fn tenants(sealer: &Sealer) -> (TenantSealer, TenantSealer, Vec<SealedValue>) {
    let admin = sealer.admin();
    let tpl = template("acme");
    let mut by_version = Vec::new();
    for version in 1..=3u32 {
        let acme = sealer.tenant("acme").await.unwrap();
        assert_eq!(acme.primary_version(), version);
        by_version.push(acme.seal_row(&tpl, "v", b"under this version").unwrap());
        if version < 3 {
            admin.rotate("acme").await.unwrap();
        }
    }
    admin.destroy_version("acme", 1).await.unwrap();
    let acme = sealer.tenant("acme").await.unwrap();
    let globex = sealer.tenant("globex").await.unwrap();
    (acme, globex, by_version)
}

/// `n` rows of every kind a bulk read meets: good values under the primary
/// and under an older version, a destroyed version, bit flips, truncation, a
/// value copied from another row, from another column, from another tenant,
/// an unknown key version, and an empty row id.
fn mixed_rows(
    acme: &TenantSealer,
    globex: &TenantSealer,
    by_version: &[SealedValue],
    n: usize,
) -> Vec<(String, SealedValue)> {
    let tpl = template("acme");
    let other_column = Context::builder("acme", "integrations", "api_key")
        .extra("provider", "github")
        .template()
        .unwrap();
    let globex_tpl = template("globex");
    (0..n)
        .map(|i| {
            let row = format!("row-{i}");
            let plaintext = format!("secret of row {i}").into_bytes();
            let good = acme.seal_row(&tpl, &row, &plaintext).unwrap();
            let value = match i % 11 {
                0..=2 => good,
                3 => {
                    let mut bytes = good.into_bytes();
                    let at = i % bytes.len();
                    bytes[at] ^= 1 << (i % 8);
                    match SealedValue::from_bytes(bytes) {
                        Ok(v) => v,
                        // A flip in the header can make it unparseable: keep
                        // the row, with a value that is wrong in another way.
                        Err(_) => by_version[0].clone(),
                    }
                }
                4 => {
                    let mut bytes = good.into_bytes();
                    bytes.truncate(bytes.len() - 1);
                    SealedValue::from_bytes(bytes).unwrap()
                }
                5 => acme
                    .seal_row(&tpl, format!("row-{}", i + 1), &plaintext)
                    .unwrap(),
                6 => acme.seal_row(&other_column, &row, &plaintext).unwrap(),
                7 => globex.seal_row(&globex_tpl, &row, &plaintext).unwrap(),
                8 => by_version[i % 3].clone(),
                9 => {
                    let mut bytes = good.into_bytes();
                    bytes[2..6].copy_from_slice(&9u32.to_be_bytes());
                    SealedValue::from_bytes(bytes).unwrap()
                }
                _ => {
                    return (String::new(), good);
                }
            };
            let row = if i % 11 == 8 { "v".to_string() } else { row };
            (row, value)
        })
        .collect()
}

/// Every size a batch splits at (the parallel threshold and chunk, powers of
/// two) and every size up to 300, then 10,000.
fn sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..=300).collect();
    for p in 9..=13 {
        let p = 1usize << p;
        sizes.extend([p - 1, p, p + 1]);
    }
    sizes.extend([1000, 4095, 9_999, 10_000]);
    sizes
}

#[test]
fn batches_give_the_one_by_one_results_in_order() {
    let rt = runtime();
    let sealer = common::sealer();
    let (acme, globex, by_version) = rt.block_on(tenants(&sealer));
    let tpl = template("acme");
    let rows = mixed_rows(&acme, &globex, &by_version, 10_000);
    let expected: Vec<Outcome> = rows
        .iter()
        .map(|(row, sealed)| {
            // The reference: a full context built per row, or the builder's
            // refusal of an empty row id.
            let ctx = Context::builder("acme", "integrations", "refresh_token")
                .extra("provider", "github")
                .row(row)
                .build();
            match ctx {
                Ok(ctx) => outcome(&acme.open(&ctx, sealed)),
                // The template's words for the same refusal.
                Err(err) => {
                    assert_eq!(err.kind(), ErrorKind::InvalidContext);
                    let err = tpl.context(row).unwrap_err();
                    Outcome::Failed(err.kind().as_str(), err.to_string())
                }
            }
        })
        .collect();
    // Every kind of row is there.
    for kind in [
        "open_failed",
        "key_destroyed",
        "unknown_key_version",
        "invalid_context",
    ] {
        assert!(
            expected
                .iter()
                .any(|o| matches!(o, Outcome::Failed(k, _) if *k == kind)),
            "{kind}"
        );
    }
    assert!(
        expected
            .iter()
            .any(|o| matches!(o, Outcome::Opened(_, 2, true)))
    );
    assert!(
        expected
            .iter()
            .filter(|o| matches!(o, Outcome::Opened(_, 3, false)))
            .count()
            > 2_500
    );

    // Per row, lazily over references and over owned pairs.
    let per_row: Vec<Outcome> = rows
        .iter()
        .map(|(row, sealed)| outcome(&acme.open_row(&tpl, row, sealed)))
        .collect();
    assert_same(&per_row, &expected, "open_row");
    let lazy: Vec<Outcome> = acme.open_rows(&tpl, &rows).map(|r| outcome(&r)).collect();
    assert_same(&lazy, &expected, "open_rows over references");
    let owned: Vec<Outcome> = acme
        .open_rows(&tpl, rows.clone())
        .map(|r| outcome(&r))
        .collect();
    assert_same(&owned, &expected, "open_rows over pairs");

    for n in sizes() {
        let batch: Vec<Outcome> = acme
            .open_rows(&tpl, &rows[..n])
            .map(|r| outcome(&r))
            .collect();
        assert_same(&batch, &expected[..n], &format!("size {n}"));
    }
}

#[cfg(feature = "rayon")]
#[test]
fn parallel_batches_give_the_sequential_results() {
    let rt = runtime();
    let sealer = common::sealer();
    let (acme, globex, by_version) = rt.block_on(tenants(&sealer));
    let tpl = template("acme");
    let rows = mixed_rows(&acme, &globex, &by_version, 10_000);
    let expected: Vec<Outcome> = acme.open_rows(&tpl, &rows).map(|r| outcome(&r)).collect();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for n in sizes() {
            if threads != 2 && n % 7 != 0 && n < 10_000 {
                continue;
            }
            let parallel: Vec<Outcome> = pool
                .install(|| acme.par_open_rows(&tpl, &rows[..n]))
                .iter()
                .map(outcome)
                .collect();
            assert_same(
                &parallel,
                &expected[..n],
                &format!("size {n}, {threads} threads"),
            );
        }
    }

    // Sealing in parallel: every value opens to its plaintext, in order, and
    // a bad row fails alone.
    let mut plain: Vec<(String, Vec<u8>)> = (0..5_000)
        .map(|i| (format!("row-{i}"), format!("secret {i}").into_bytes()))
        .collect();
    plain[1234].0 = String::new();
    plain[4321].1 = Vec::new();
    let sealed = acme.par_seal_rows(&tpl, &plain);
    let sequential: Vec<_> = acme.seal_rows(&tpl, &plain).collect();
    assert_eq!(
        sealed.iter().map(sealed_outcome).collect::<Vec<_>>(),
        sequential.iter().map(sealed_outcome).collect::<Vec<_>>()
    );
    for (i, ((row, plaintext), result)) in plain.iter().zip(&sealed).enumerate() {
        if i == 1234 {
            assert_eq!(
                result.as_ref().unwrap_err().kind(),
                ErrorKind::InvalidContext
            );
            continue;
        }
        let opened = acme.open_row(&tpl, row, result.as_ref().unwrap()).unwrap();
        assert_eq!(opened.plaintext().expose_secret(), &plaintext[..]);
        assert_eq!(opened.key_version(), 3);
    }
    // Salts are fresh per value, also across threads.
    let distinct: std::collections::HashSet<&[u8]> = sealed
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|s| &s.as_bytes()[6..22])
        .collect();
    assert_eq!(distinct.len(), plain.len() - 1);
}

#[test]
fn template_values_and_context_values_open_each_other() {
    let rt = runtime();
    let sealer = common::sealer();
    let acme = rt.block_on(sealer.tenant("acme")).unwrap();
    let tpl = template("acme");
    let ctx = tpl.context(42).unwrap();
    let by_template = acme.seal_row(&tpl, 42, b"v").unwrap();
    let by_context = acme.seal(&ctx, b"v").unwrap();
    assert!(acme.open(&ctx, &by_template).is_ok());
    assert!(acme.open_row(&tpl, 42, &by_context).is_ok());
    assert!(acme.open_row(&tpl, "42", &by_context).is_ok());
    assert!(matches!(
        acme.open_row(&tpl, 43, &by_context),
        Err(Error::OpenFailed)
    ));
    // Through the async sealer too.
    assert!(rt.block_on(sealer.open(&ctx, &by_template)).is_ok());

    // Another tenant's template is refused before any cryptography.
    let globex = template("globex");
    assert!(matches!(
        acme.seal_row(&globex, 1, b"v"),
        Err(Error::TenantMismatch { .. })
    ));
    assert!(matches!(
        acme.open_row(&globex, 42, &by_template),
        Err(Error::TenantMismatch { .. })
    ));
    let results: Vec<_> = acme.open_rows(&globex, [(42, &by_template)]).collect();
    assert!(matches!(results[..], [Err(Error::TenantMismatch { .. })]));

    // After a shred, every row of a batch says so.
    rt.block_on(sealer.admin().shred_tenant("acme")).unwrap();
    let results: Vec<_> = acme
        .open_rows(&tpl, [(42, &by_template), (42, &by_context)])
        .collect();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::TenantShredded { .. })))
    );
    assert!(matches!(
        acme.seal_rows(&tpl, [(1, b"v")]).next(),
        Some(Err(Error::TenantShredded { .. }))
    ));
}

#[test]
fn template_refuses_what_the_builder_refuses() {
    assert!(matches!(
        Context::builder("acme", "t", "c").row(1).template(),
        Err(Error::InvalidContext { .. })
    ));
    for tenant in ["", "acme ", "ac\u{200B}me", "cafe\u{301}"] {
        assert!(Context::builder(tenant, "t", "c").template().is_err());
    }
    assert!(Context::builder("acme", "", "c").template().is_err());
    assert!(
        Context::builder("acme", "t", "c")
            .extra("k", "1")
            .extra("k", "2")
            .template()
            .is_err()
    );
    let tpl = Context::builder("acme", "t", "c").template().unwrap();
    assert!(matches!(tpl.context(""), Err(Error::InvalidContext { .. })));
    assert!(tpl.context("x".repeat(1024)).is_ok());
    let too_long = tpl.context("x".repeat(1025)).unwrap_err();
    assert!(too_long.to_string().contains("1024"), "{too_long}");

    let rt = runtime();
    let sealer = common::sealer();
    let acme = rt.block_on(sealer.tenant("acme")).unwrap();
    for row in [String::new(), "x".repeat(1025), "x".repeat(5000)] {
        assert!(matches!(
            acme.seal_row(&tpl, &row, b"v"),
            Err(Error::InvalidContext { .. })
        ));
    }
    // A Display that fails is an error, not a panic.
    struct Broken;
    impl std::fmt::Display for Broken {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            Err(std::fmt::Error)
        }
    }
    assert!(matches!(
        acme.seal_row(&tpl, Broken, b"v"),
        Err(Error::InvalidContext { .. })
    ));
    assert!(matches!(
        tpl.context(Broken),
        Err(Error::InvalidContext { .. })
    ));
    // A Display that ignores the refusal of a piece and writes on: the id it
    // meant is too long, and a shorter one is never bound in its place.
    struct Sloppy;
    impl std::fmt::Display for Sloppy {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("12")?;
            let _ = f.write_str(&"x".repeat(1100));
            f.write_str("3")
        }
    }
    let row_123 = acme.seal_row(&tpl, 123, b"v").unwrap();
    assert!(matches!(
        acme.seal_row(&tpl, Sloppy, b"v"),
        Err(Error::InvalidContext { .. })
    ));
    assert!(matches!(
        acme.open_row(&tpl, Sloppy, &row_123),
        Err(Error::InvalidContext { .. })
    ));
    // The row id is checked first, as the builder checks it before any key.
    let globex = Context::builder("globex", "t", "c").template().unwrap();
    assert!(matches!(
        acme.open_row(&globex, "", &row_123),
        Err(Error::InvalidContext { .. })
    ));
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,12}",
        "\\PC{1,40}",
        // Long enough to move the associated data off the stack.
        "[a-z]{200,255}",
    ]
}

fn tenant() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9-]{1,36}", "[a-zé漢😀 ]{1,20}"]
        .prop_filter("a valid tenant id", |t| Context::new(t, "t", "c").is_ok())
}

fn row() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9]{1,20}", "\\PC{1,40}", "[a-f0-9-]{300,1024}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The template's associated data is byte for byte the builder's.
    #[test]
    fn template_binds_the_builders_associated_data(
        tenant in tenant(),
        table in name(),
        column in name(),
        extras in proptest::collection::btree_map(name(), "\\PC{0,64}", 0..4),
        row in row(),
    ) {
        let builder = || {
            let mut b = Context::builder(tenant.as_str(), table.as_str(), column.as_str());
            for (k, v) in &extras {
                b = b.extra(k.as_str(), v.as_str());
            }
            b
        };
        let tpl = builder().template().unwrap();
        let built = builder().row(&row).build().unwrap();
        let from_template = tpl.context(&row).unwrap();
        prop_assert_eq!(from_template.associated_data(), built.associated_data());
        prop_assert_eq!(&from_template, &built);
        prop_assert_eq!(tpl.tenant(), built.tenant());
        let extras_seen: BTreeMap<&str, &str> = tpl.extras().collect();
        prop_assert_eq!(extras_seen, built.extras().collect::<BTreeMap<_, _>>());
    }

    /// Integers bind as their decimal text, as the builder binds them.
    #[test]
    fn integer_rows_bind_as_decimal_text(id in any::<i64>()) {
        let tpl = Context::builder("acme", "t", "c").template().unwrap();
        let built = Context::builder("acme", "t", "c").row(id).build().unwrap();
        prop_assert_eq!(tpl.context(id).unwrap(), built);
    }
}

#[cfg(feature = "rayon")]
#[test]
fn spawned_batches_give_the_sequential_results_and_resume_panics() {
    let rt = runtime();
    let sealer = common::sealer();
    let (acme, globex, by_version) = rt.block_on(tenants(&sealer));
    let tpl = template("acme");
    let rows = mixed_rows(&acme, &globex, &by_version, 3_000);
    let expected: Vec<Outcome> = acme.open_rows(&tpl, &rows).map(|r| outcome(&r)).collect();
    // Chunks handed over one by one, awaited in order.
    let pending: Vec<_> = rows
        .chunks(257)
        .map(|chunk| acme.spawn_open_rows(&tpl, chunk.to_vec()))
        .collect();
    let got: Vec<Outcome> = rt.block_on(async {
        let mut got = Vec::new();
        for chunk in pending {
            got.extend(chunk.await.iter().map(outcome));
        }
        got
    });
    assert_same(&got, &expected, "spawn_open_rows");

    let plain: Vec<(i64, String)> = (0..1_000).map(|i| (i, format!("secret {i}"))).collect();
    let sealed = rt.block_on(acme.spawn_seal_rows(&tpl, plain.clone()));
    for ((id, secret), sealed) in plain.iter().zip(sealed) {
        let opened = acme.open_row(&tpl, id, &sealed.unwrap()).unwrap();
        assert_eq!(opened.plaintext().expose_secret(), secret.as_bytes());
    }

    // A row id whose Display panics: the panic reaches the awaiting task.
    struct Panics;
    impl std::fmt::Display for Panics {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("row id display panicked")
        }
    }
    let good = acme.seal_row(&tpl, 1, b"v").unwrap();
    let future = acme.spawn_open_rows(&tpl, vec![(Panics, good)]);
    let joined = rt.block_on(async { tokio::spawn(future).await });
    assert!(joined.unwrap_err().is_panic());
}

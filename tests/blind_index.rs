//! Blind indexes without a database: index values per tenant, column, index
//! and version; searches across a rotation, refused when a version cannot be
//! searched; confirmation by opening; the normalisers; and what never shows
//! in `Debug` or errors.

mod common;

use fieldseal::secrecy::ExposeSecret as _;
use fieldseal::{
    Context, Error, ErrorKind, Sealer, TenantSealer,
    blind_index::{BlindIndex, IndexValue, Normalizer},
};
use proptest::prelude::*;

fn email_index() -> BlindIndex {
    BlindIndex::builder("users", "email", "email_idx")
        .normalizer(Normalizer::email())
        .build()
        .unwrap()
}

async fn tenant(sealer: &Sealer, id: &str) -> TenantSealer {
    sealer.tenant(id).await.unwrap()
}

#[tokio::test]
async fn index_values_are_per_tenant_column_index_and_definition() {
    let sealer = common::sealer();
    let (acme, globex) = (
        tenant(&sealer, "acme").await,
        tenant(&sealer, "globex").await,
    );
    let index = email_index();
    let value = b"alice@example.com";

    let a = acme.blind_index(&index, value).unwrap();
    assert_eq!(a.as_bytes().len(), 16);
    assert_eq!(a.key_version(), 1);
    // Deterministic for one tenant, index and version; normalised.
    assert_eq!(a, acme.blind_index(&index, b" Alice@EXAMPLE.com.").unwrap());
    // Never comparable across tenants.
    assert_ne!(
        a.as_bytes(),
        globex.blind_index(&index, value).unwrap().as_bytes()
    );

    // Any change to the definition gives unrelated values.
    let variants = [
        BlindIndex::builder("users", "backup_email", "email_idx"),
        BlindIndex::builder("people", "email", "email_idx"),
        BlindIndex::builder("users", "email", "email_idx2"),
    ];
    for builder in variants {
        let other = builder.normalizer(Normalizer::email()).build().unwrap();
        assert_ne!(
            a.as_bytes(),
            acme.blind_index(&other, value).unwrap().as_bytes()
        );
    }
    let case_fold = BlindIndex::builder("users", "email", "email_idx")
        .normalizer(Normalizer::case_fold())
        .build()
        .unwrap();
    assert_ne!(
        a.as_bytes(),
        acme.blind_index(&case_fold, value).unwrap().as_bytes()
    );
    // A longer index is not an extension of the shorter one.
    let long = BlindIndex::builder("users", "email", "email_idx")
        .normalizer(Normalizer::email())
        .len(32)
        .build()
        .unwrap();
    let long_value = acme.blind_index(&long, value).unwrap();
    assert_eq!(long_value.as_bytes().len(), 32);
    assert_ne!(&long_value.as_bytes()[..16], a.as_bytes());
}

#[tokio::test]
async fn searches_cover_every_version_through_a_rotation() {
    let sealer = common::sealer();
    let admin = sealer.admin();
    let index = email_index();
    let before = tenant(&sealer, "acme")
        .await
        .blind_index(&index, b"bob@example.com")
        .unwrap();

    admin.rotate("acme").await.unwrap();
    let acme = tenant(&sealer, "acme").await;
    let search = acme.search(&index, b"BOB@example.com").unwrap();
    let versions: Vec<u32> = search.terms().iter().map(IndexValue::key_version).collect();
    assert_eq!(versions, [2, 1], "primary first");
    // The row not yet re-sealed is still found by its version 1 value...
    assert_eq!(search.terms()[1], before);
    // ...and a re-sealed row by its version 2 value.
    let after = acme.blind_index(&index, b"bob@example.com").unwrap();
    assert_eq!(after.key_version(), 2);
    assert_eq!(search.terms()[0], after);
    assert_ne!(after.as_bytes(), before.as_bytes());
    assert_eq!(
        search.values(),
        vec![after.as_bytes().to_vec(), before.as_bytes().to_vec()]
    );

    // A third version: three values.
    admin.rotate("acme").await.unwrap();
    let acme = tenant(&sealer, "acme").await;
    assert_eq!(
        acme.search(&index, b"bob@example.com")
            .unwrap()
            .terms()
            .len(),
        3
    );
    // The minimum decryption version bounds the search.
    admin.set_min_decryption_version("acme", 2).await.unwrap();
    let acme = tenant(&sealer, "acme").await;
    let versions: Vec<u32> = acme
        .search(&index, b"bob@example.com")
        .unwrap()
        .terms()
        .iter()
        .map(IndexValue::key_version)
        .collect();
    assert_eq!(versions, [3, 2]);
}

#[tokio::test]
async fn a_version_that_cannot_be_searched_is_reported_not_skipped() {
    let sealer = common::sealer();
    let admin = sealer.admin();
    let index = email_index();
    tenant(&sealer, "acme").await;
    admin.rotate("acme").await.unwrap();
    admin.destroy_version("acme", 1).await.unwrap();

    let acme = tenant(&sealer, "acme").await;
    let err = acme.search(&index, b"carol@example.com").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompleteSearch);
    assert!(
        matches!(&err, Error::IncompleteSearch { tenant, index, version: 1, .. } if tenant == "acme" && index == "email_idx"),
        "{err:?}"
    );
    let message = err.to_string();
    for needle in [
        "email_idx",
        "acme",
        "version 1",
        "destroyed on 20",
        "set_min_decryption_version",
        "search_partial",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from: {message}"
        );
    }

    // The partial search says what it skipped.
    let partial = acme.search_partial(&index, b"carol@example.com").unwrap();
    assert_eq!(partial.terms().len(), 1);
    assert_eq!(partial.terms()[0].key_version(), 2);
    assert!(matches!(
        partial.skipped(),
        [Error::KeyDestroyed { version: 1, .. }]
    ));

    // Once no row can be under version 1, the minimum closes the gap.
    admin.set_min_decryption_version("acme", 2).await.unwrap();
    let acme = tenant(&sealer, "acme").await;
    let search = acme.search(&index, b"carol@example.com").unwrap();
    assert_eq!(search.terms().len(), 1);
    assert!(search.skipped().is_empty());

    // A disabled version is reported the same way.
    admin.rotate("acme").await.unwrap();
    admin.disable_version("acme", 2).await.unwrap();
    let acme = tenant(&sealer, "acme").await;
    let err = acme.search(&index, b"carol@example.com").unwrap_err();
    assert!(
        matches!(err, Error::IncompleteSearch { version: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("disabled"), "{err}");
    let partial = acme.search_partial(&index, b"carol@example.com").unwrap();
    assert!(matches!(
        partial.skipped(),
        [Error::KeyDisabled { version: 2, .. }]
    ));
    // Writing needs only the primary.
    assert_eq!(
        acme.blind_index(&index, b"carol@example.com")
            .unwrap()
            .key_version(),
        3
    );

    // A shredded tenant cannot be searched at all.
    admin.shred_tenant("acme").await.unwrap();
    assert!(matches!(
        acme.search_partial(&index, b"carol@example.com"),
        Err(Error::TenantShredded { .. })
    ));
    assert!(matches!(
        acme.blind_index(&index, b"carol@example.com"),
        Err(Error::TenantShredded { .. })
    ));
}

#[tokio::test]
async fn candidates_are_confirmed_by_opening() {
    let sealer = common::sealer();
    let acme = tenant(&sealer, "acme").await;
    // One-byte index values: among 4,000 values, about 16 share each one
    // (none sharing the searched one has odds of 2 in 10 million).
    let short = BlindIndex::builder("users", "email", "tiny")
        .normalizer(Normalizer::email())
        .len(1)
        .build()
        .unwrap();
    let template = Context::builder("acme", "users", "email")
        .template()
        .unwrap();
    let rows: Vec<(i64, String, fieldseal::SealedValue, IndexValue)> = (0..4000)
        .map(|id| {
            let email = format!("user{id}@example.com");
            let sealed = acme.seal_row(&template, id, email.as_bytes()).unwrap();
            let idx = acme.blind_index(&short, email.as_bytes()).unwrap();
            (id, email, sealed, idx)
        })
        .collect();

    let search = acme.search(&short, b"USER42@example.com").unwrap();
    let candidates: Vec<(i64, &fieldseal::SealedValue)> = rows
        .iter()
        .filter(|(_, _, _, idx)| search.terms().contains(idx))
        .map(|(id, _, sealed, _)| (*id, sealed))
        .collect();
    assert!(
        candidates.len() > 1,
        "a one-byte index collides among 4,000 values"
    );
    let found = acme.open_matches(&search, &template, candidates).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, 42);
    assert_eq!(
        found[0].1.plaintext().expose_secret(),
        b"user42@example.com"
    );

    // A candidate that does not open is an error, never dropped.
    let (_, _, other_row, _) = &rows[7];
    let err = acme
        .open_matches(&search, &template, [(42i64, other_row)])
        .unwrap_err();
    assert!(matches!(err, Error::OpenFailed), "{err:?}");

    // A search for another tenant is refused.
    let globex = tenant(&sealer, "globex").await;
    let theirs = globex.search(&short, b"user42@example.com").unwrap();
    assert!(matches!(
        acme.open_matches(
            &theirs,
            &template,
            Vec::<(i64, fieldseal::SealedValue)>::new()
        ),
        Err(Error::TenantMismatch { .. })
    ));
}

/// Normaliser behaviour, input by input (the vectors in
/// tests/vectors/blind_index.json carry the same table).
#[test]
fn normalisers_table() {
    type Case = (Normalizer, &'static [u8], Option<&'static [u8]>);
    let table: Vec<Case> = vec![
        (Normalizer::exact(), b" Alice ", Some(b" Alice ")),
        (Normalizer::exact(), b"\xff\xfe", Some(b"\xff\xfe")),
        (Normalizer::exact(), b"", Some(b"")),
        (
            Normalizer::trim(),
            " \t Alice\u{3000}\n".as_bytes(),
            Some(b"Alice"),
        ),
        (Normalizer::trim(), "a  b".as_bytes(), Some(b"a  b")),
        (Normalizer::trim(), b"\xff", None),
        (
            Normalizer::case_fold(),
            " Stra\u{df}e ".as_bytes(),
            Some(b"strasse"),
        ),
        (
            Normalizer::case_fold(),
            "STRASSE".as_bytes(),
            Some(b"strasse"),
        ),
        (
            Normalizer::case_fold(),
            "Z\u{fc}rich".as_bytes(),
            Some("z\u{fc}rich".as_bytes()),
        ),
        // NFD input: NFC before and after folding.
        (
            Normalizer::case_fold(),
            "ZU\u{308}RICH".as_bytes(),
            Some("z\u{fc}rich".as_bytes()),
        ),
        (
            Normalizer::case_fold(),
            "\u{3a3}\u{391}\u{3a3}".as_bytes(),
            Some("\u{3c3}\u{3b1}\u{3c3}".as_bytes()),
        ),
        (
            Normalizer::case_fold(),
            "\u{130}".as_bytes(),
            Some("i\u{307}".as_bytes()),
        ),
        (Normalizer::case_fold(), "\u{fb03}".as_bytes(), Some(b"ffi")),
        (Normalizer::case_fold(), b"\xc3", None),
        (
            Normalizer::email(),
            b" Alice@Example.COM. ",
            Some(b"alice@example.com"),
        ),
        (
            Normalizer::email(),
            b"Alice.Smith+tag@Gmail.com",
            Some(b"alice.smith+tag@gmail.com"),
        ),
        (
            Normalizer::email(),
            b"\"a@b\"@example.com",
            Some(b"\"a@b\"@example.com"),
        ),
        (Normalizer::email(), b"alice", None),
        (Normalizer::email(), b"@example.com", None),
        (Normalizer::email(), b"alice@", None),
        (Normalizer::email(), b"alice@.", None),
        (Normalizer::email(), b"\xff@example.com", None),
        // Two registrable domains stay two; IDN and xn-- forms are one.
        (
            Normalizer::email(),
            "x@Stra\u{df}e.de".as_bytes(),
            Some(b"x@xn--strae-oqa.de"),
        ),
        (Normalizer::email(), b"x@STRASSE.de", Some(b"x@strasse.de")),
        (
            Normalizer::email(),
            "J\u{fc}rgen@B\u{fc}cher.example".as_bytes(),
            Some("j\u{fc}rgen@xn--bcher-kva.example".as_bytes()),
        ),
        (
            Normalizer::email(),
            "J\u{dc}RGEN@example.com".as_bytes(),
            Some("j\u{dc}rgen@example.com".as_bytes()),
        ),
        (Normalizer::email(), b"a@b..c", None),
        (Normalizer::email(), b"a@b.c .", None),
        (Normalizer::case_fold(), "a\u{378}".as_bytes(), None),
        (
            Normalizer::trim(),
            "\u{200b}a\u{200b}".as_bytes(),
            Some("\u{200b}a\u{200b}".as_bytes()),
        ),
    ];
    for (normalizer, input, expected) in table {
        let got = normalizer.normalize(input);
        match expected {
            Some(want) => assert_eq!(
                got.unwrap_or_else(|e| panic!("{normalizer:?} {input:?}: {e}"))
                    .expose_secret(),
                want,
                "{normalizer:?} {input:?}"
            ),
            None => {
                let err = got.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NotIndexable);
                assert!(err.to_string().contains(normalizer.id()), "{err}");
            }
        }
    }
}

#[tokio::test]
async fn custom_normalisers_are_named_and_bound_by_name() {
    let digits = Normalizer::custom("digits", |v| {
        let out: Vec<u8> = v.iter().copied().filter(u8::is_ascii_digit).collect();
        (!out.is_empty()).then_some(out)
    })
    .unwrap();
    assert_eq!(digits.id(), "custom:digits");
    assert_eq!(
        digits
            .normalize(b"+1 (555) 010-9999")
            .unwrap()
            .expose_secret(),
        b"15550109999"
    );
    let err = digits.normalize(b"no digits").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotIndexable);
    assert!(!err.to_string().contains("no digits"), "{err}");
    assert!(Normalizer::custom("", |v| Some(v.to_vec())).is_err());
    assert!(Normalizer::custom(&"x".repeat(249), |v| Some(v.to_vec())).is_err());
    assert!(Normalizer::custom(&"x".repeat(248), |v| Some(v.to_vec())).is_ok());

    // The same function under another name gives other index values.
    let sealer = common::sealer();
    let acme = tenant(&sealer, "acme").await;
    let phone = |n: Normalizer| {
        BlindIndex::builder("users", "phone", "phone_idx")
            .normalizer(n)
            .build()
            .unwrap()
    };
    let same_fn = Normalizer::custom("digits2", |v| {
        Some(v.iter().copied().filter(u8::is_ascii_digit).collect())
    })
    .unwrap();
    let a = acme
        .blind_index(&phone(digits.clone()), b"555-0109")
        .unwrap();
    let b = acme.blind_index(&phone(same_fn), b"555-0109").unwrap();
    assert_ne!(a.as_bytes(), b.as_bytes());
    assert_eq!(a, acme.blind_index(&phone(digits), b"5550109").unwrap());
}

#[test]
fn definitions_are_checked() {
    let ok = |b: fieldseal::blind_index::BlindIndexBuilder| {
        b.build().map(|_| ()).map_err(|e| e.kind().as_str())
    };
    assert_eq!(ok(BlindIndex::builder("t", "c", "i")), Ok(()));
    assert_eq!(ok(BlindIndex::builder("", "c", "i")), Err("config"));
    assert_eq!(ok(BlindIndex::builder("t", "", "i")), Err("config"));
    assert_eq!(ok(BlindIndex::builder("t", "c", "")), Err("config"));
    assert_eq!(
        ok(BlindIndex::builder("t", "c", "i".repeat(256))),
        Err("config")
    );
    assert_eq!(ok(BlindIndex::builder("t", "c", "i".repeat(255))), Ok(()));
    assert_eq!(ok(BlindIndex::builder("t", "c", "i").len(0)), Err("config"));
    assert_eq!(
        ok(BlindIndex::builder("t", "c", "i").len(33)),
        Err("config")
    );
    assert_eq!(ok(BlindIndex::builder("t", "c", "i").len(1)), Ok(()));
    assert_eq!(ok(BlindIndex::builder("t", "c", "i").len(32)), Ok(()));
    let err = BlindIndex::builder("t", "c", "email_idx")
        .len(40)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("email_idx"), "{err}");
}

#[tokio::test]
async fn nothing_secret_in_debug_or_errors() {
    let sealer = common::sealer();
    let acme = tenant(&sealer, "acme").await;
    let index = email_index();
    let value = acme
        .blind_index(&index, b"secret.person@example.com")
        .unwrap();
    let hex: String = value
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let search = acme.search(&index, b"secret.person@example.com").unwrap();
    for shown in [
        format!("{value:?}"),
        format!("{search:?}"),
        format!("{index:?}"),
    ] {
        assert!(!shown.contains("secret.person"), "{shown}");
        assert!(!shown.contains(&hex), "{shown}");
        assert!(
            !shown.contains(&format!("{:?}", value.as_bytes())),
            "{shown}"
        );
    }
    let err = acme
        .search(&index, b"secret.person-at-example.com")
        .unwrap_err();
    assert!(!err.to_string().contains("secret.person"), "{err}");
    assert!(!format!("{err:?}").contains("secret.person"), "{err:?}");
}

fn case_variants(s: String) -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(any::<bool>(), s.chars().count()),
        0usize..3,
        0usize..3,
    )
        .prop_map(move |(upper, lead, trail)| {
            let body: String = s
                .chars()
                .zip(&upper)
                .map(|(c, u)| {
                    if *u {
                        c.to_uppercase().collect::<String>()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            format!("{}{body}{}", " ".repeat(lead), "\t".repeat(trail))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Inputs that normalise equally index equally; different normalised
    /// inputs give different full-length values.
    #[test]
    fn equal_normalised_inputs_index_equally(
        (base, variant) in "[a-z0-9\u{e0}-\u{ff}]{1,16}".prop_flat_map(|s| (Just(s.clone()), case_variants(s))),
        other in "[a-z0-9]{1,16}",
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let sealer = common::sealer();
        let acme = runtime.block_on(sealer.tenant("acme")).unwrap();
        let index = BlindIndex::builder("users", "name", "name_idx")
            .normalizer(Normalizer::case_fold())
            .len(32)
            .build()
            .unwrap();
        let a = acme.blind_index(&index, base.as_bytes()).unwrap();
        let b = acme.blind_index(&index, variant.as_bytes()).unwrap();
        prop_assert_eq!(&a, &b);
        let c = acme.blind_index(&index, other.as_bytes()).unwrap();
        let same = Normalizer::case_fold().normalize(base.as_bytes()).unwrap().expose_secret()
            == Normalizer::case_fold().normalize(other.as_bytes()).unwrap().expose_secret();
        prop_assert_eq!(a == c, same);
    }
}

#[tokio::test]
async fn a_checked_handle_sees_another_process_rotation() {
    let store = fieldseal::MemoryKeyStore::new();
    let here = Sealer::builder(common::local_provider(), store.clone()).build();
    let there = Sealer::builder(common::local_provider(), store).build();
    let index = email_index();
    assert_eq!(tenant(&here, "acme").await.primary_version(), 1);

    // Another process rotates and indexes a row under version 2.
    there.admin().rotate("acme").await.unwrap();
    let theirs = tenant(&there, "acme")
        .await
        .blind_index(&index, b"dave@example.com")
        .unwrap();
    assert_eq!(theirs.key_version(), 2);

    // The cached handle has not seen version 2: its search would miss the row.
    let cached = tenant(&here, "acme").await;
    assert!(
        !cached
            .search(&index, b"dave@example.com")
            .unwrap()
            .terms()
            .contains(&theirs)
    );
    // A checked handle has.
    let checked = here.tenant_checked("acme").await.unwrap();
    assert_eq!(checked.primary_version(), 2);
    assert!(
        checked
            .search(&index, b"dave@example.com")
            .unwrap()
            .terms()
            .contains(&theirs)
    );
    // And the cache now holds the reloaded keys.
    assert_eq!(tenant(&here, "acme").await.primary_version(), 2);
}

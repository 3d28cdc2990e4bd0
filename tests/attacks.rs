//! Attacks on sealed values and wrapped keys: every one must fail, and fail
//! with the right error.

mod common;

use std::collections::HashSet;

use common::{TamperStore, ctx, local_provider, sealer};
use fieldseal::{Context, Error, MemoryKeyStore, OVERHEAD, SealedValue, Sealer, store::KeyStore};
use secrecy::ExposeSecret;

async fn sealed_token() -> (Sealer, Context, SealedValue) {
    let sealer = sealer();
    let ctx = ctx("acme", 42);
    let sealed = sealer.seal(&ctx, b"1//0gLx-refresh-token").await.unwrap();
    (sealer, ctx, sealed)
}

/// Parses and opens; `Err` from either step.
async fn try_open(sealer: &Sealer, ctx: &Context, bytes: &[u8]) -> Result<(), Error> {
    let sealed = SealedValue::from_bytes(bytes)?;
    sealer.open(ctx, &sealed).await.map(|_| ())
}

#[tokio::test]
async fn every_single_bit_flip_fails() {
    let (sealer, ctx, sealed) = sealed_token().await;
    let bytes = sealed.as_bytes();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut tampered = bytes.to_vec();
            tampered[i] ^= 1 << bit;
            let err = try_open(&sealer, &ctx, &tampered).await.unwrap_err();
            match i {
                // Format version byte.
                0 => assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err}"),
                // Algorithm byte: 0x01 becomes 0x00, 0x03, 0x05, ... (unknown) or
                // ChaCha20-Poly1305 is never reached by one flip, but stay general.
                1 => assert!(
                    matches!(err, Error::UnsupportedAlgorithm { .. } | Error::OpenFailed),
                    "{err}"
                ),
                // Key version: another version, which this tenant does not have.
                2..=5 => assert!(
                    matches!(
                        err,
                        Error::UnknownKeyVersion { .. } | Error::Malformed { .. }
                    ),
                    "byte {i}: {err}"
                ),
                // Salt, commitment, ciphertext, tag: the one opaque error.
                _ => assert!(matches!(err, Error::OpenFailed), "byte {i}: {err}"),
            }
        }
    }
}

#[tokio::test]
async fn every_truncation_and_extension_fails() {
    let (sealer, ctx, sealed) = sealed_token().await;
    let bytes = sealed.as_bytes();
    for len in 0..bytes.len() {
        let err = try_open(&sealer, &ctx, &bytes[..len]).await.unwrap_err();
        if len < OVERHEAD {
            assert!(matches!(err, Error::Malformed { .. }), "len {len}: {err}");
        } else {
            assert!(matches!(err, Error::OpenFailed), "len {len}: {err}");
        }
    }
    for extra in [&[0u8][..], &[0xff; 16], &[0; 1000]] {
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(extra);
        assert!(matches!(
            try_open(&sealer, &ctx, &longer).await,
            Err(Error::OpenFailed)
        ));
    }
    // The text form, truncated character by character.
    let text = sealed.to_text();
    for len in 0..text.len() {
        let result = match SealedValue::from_text(&text[..len]) {
            Ok(v) => sealer.open(&ctx, &v).await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(result.is_err(), "text truncated to {len} opened");
    }
}

#[tokio::test]
async fn moved_ciphertexts_do_not_open() {
    let sealer = sealer();
    let original = ctx("acme", 42);
    let sealed = sealer.seal(&original, b"secret").await.unwrap();
    // Make sure the other tenant exists, with the same key version number.
    sealer.seal(&ctx("globex", 42), b"x").await.unwrap();

    let elsewhere = [
        ("another row", ctx("acme", 43)),
        (
            "another column",
            Context::builder("acme", "integrations", "api_secret")
                .row(42)
                .build()
                .unwrap(),
        ),
        (
            "another table",
            Context::builder("acme", "webhooks", "refresh_token")
                .row(42)
                .build()
                .unwrap(),
        ),
        ("another tenant", ctx("globex", 42)),
        (
            "no row id",
            Context::new("acme", "integrations", "refresh_token").unwrap(),
        ),
        (
            "an added extra",
            Context::builder("acme", "integrations", "refresh_token")
                .row(42)
                .extra("provider", "github")
                .build()
                .unwrap(),
        ),
    ];
    for (what, ctx) in elsewhere {
        let err = sealer.open(&ctx, &sealed).await.unwrap_err();
        assert!(matches!(err, Error::OpenFailed), "{what}: {err}");
    }
    // To a tenant that has no keys at all: a clear error, not a key creation.
    let err = sealer.open(&ctx("initech", 42), &sealed).await.unwrap_err();
    assert!(matches!(err, Error::UnknownTenant { .. }), "{err}");
    assert!(err.to_string().contains("initech"));
    assert!(matches!(
        sealer.open(&original, &sealed).await,
        Ok(opened) if !opened.is_stale()
    ));
}

#[tokio::test]
async fn swapped_rows_do_not_open() {
    let sealer = sealer();
    let (a, b) = (ctx("acme", 1), ctx("acme", 2));
    let sealed_a = sealer.seal(&a, b"token of row 1").await.unwrap();
    let sealed_b = sealer.seal(&b, b"token of row 2").await.unwrap();
    assert!(matches!(
        sealer.open(&a, &sealed_b).await,
        Err(Error::OpenFailed)
    ));
    assert!(matches!(
        sealer.open(&b, &sealed_a).await,
        Err(Error::OpenFailed)
    ));
}

#[tokio::test]
async fn version_and_algorithm_bytes_are_bound() {
    let (sealer, ctx, sealed) = sealed_token().await;
    let bytes = sealed.as_bytes();

    // Algorithm downgrade or confusion: AES-256-GCM relabelled as ChaCha20-Poly1305.
    let mut relabelled = bytes.to_vec();
    relabelled[1] = 0x02;
    assert!(matches!(
        try_open(&sealer, &ctx, &relabelled).await,
        Err(Error::OpenFailed)
    ));

    for version in [0u8, 2, 3, 0xff] {
        let mut v = bytes.to_vec();
        v[0] = version;
        assert!(matches!(
            try_open(&sealer, &ctx, &v).await,
            Err(Error::UnsupportedVersion { version: got }) if got == version
        ));
    }
    for alg in [0u8, 3, 0x80, 0xff] {
        let mut v = bytes.to_vec();
        v[1] = alg;
        let err = try_open(&sealer, &ctx, &v).await.unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedAlgorithm { id } if id == alg),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade fieldseal"));
    }
}

#[tokio::test]
async fn wrapped_key_moved_to_another_tenant_or_version_does_not_unwrap() {
    let store = TamperStore::default();
    let sealer = Sealer::builder(local_provider(), store.clone()).build();
    sealer.seal(&ctx("acme", 1), b"x").await.unwrap();
    sealer.seal(&ctx("mallory", 1), b"x").await.unwrap();
    let acme = store.load_tenant("acme").await.unwrap().unwrap();

    // An attacker with write access copies acme's wrapped key into mallory's
    // version 1...
    let mut mallory = store.load_tenant("mallory").await.unwrap().unwrap();
    mallory.keys[0].wrapped = acme.keys[0].wrapped.clone();
    store.set_record(mallory);
    let fresh = Sealer::builder(local_provider(), store.clone()).build();
    let err = fresh.tenant("mallory").await.unwrap_err();
    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
    assert!(err.to_string().contains("mallory"));

    // ...and into acme's own version 2.
    let mut two = acme.clone();
    let mut v2 = acme.keys[0].clone();
    v2.version = 2;
    two.keys.push(v2);
    store.set_record(two);
    let fresh = Sealer::builder(local_provider(), store).build();
    let err = fresh.tenant("acme").await.unwrap_err();
    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
    assert!(err.to_string().contains("version 2"));
}

#[tokio::test]
async fn a_wrong_root_key_is_a_clear_error() {
    let store = MemoryKeyStore::new();
    let sealer = Sealer::builder(local_provider(), store.clone()).build();
    let ctx = ctx("acme", 1);
    let sealed = sealer.seal(&ctx, b"x").await.unwrap();

    let same_id_other_key =
        fieldseal::LocalKeyProvider::new("test-root", fieldseal::RootKey::generate().unwrap())
            .unwrap();
    let wrong = Sealer::builder(same_id_other_key, store.clone()).build();
    let err = wrong.open(&ctx, &sealed).await.unwrap_err();
    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
    // Rotating with the wrong root key is refused before anything is written:
    // a new primary wrapped under it would be unreadable everywhere else.
    let err = wrong.admin().rotate("acme").await.unwrap_err();
    assert!(matches!(err, Error::UnwrapFailed { .. }), "{err}");
    assert_eq!(
        sealer
            .admin()
            .describe("acme")
            .await
            .unwrap()
            .latest_version(),
        1,
        "a refused rotation wrote a version"
    );
    let opened = sealer.open(&ctx, &sealed).await.unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"x");

    let other_id =
        fieldseal::LocalKeyProvider::new("another-root", fieldseal::RootKey::generate().unwrap())
            .unwrap();
    let wrong = Sealer::builder(other_id, store).build();
    let err = wrong.open(&ctx, &sealed).await.unwrap_err();
    assert!(
        matches!(err, Error::RootKeyNotConfigured { ref id } if id == "test-root"),
        "{err}"
    );
}

#[tokio::test]
async fn one_hundred_thousand_seals_are_distinct() {
    let sealer = sealer();
    let ctx = ctx("acme", 1);
    let tenant = sealer.tenant("acme").await.unwrap();
    let mut seen = HashSet::with_capacity(100_000);
    let mut salts = HashSet::with_capacity(100_000);
    for _ in 0..100_000 {
        let sealed = tenant.seal(&ctx, b"the same plaintext").unwrap();
        assert!(
            salts.insert(sealed.as_bytes()[6..22].to_vec()),
            "salt repeated"
        );
        assert!(seen.insert(sealed.into_bytes()), "sealed value repeated");
    }
}

#[tokio::test]
async fn no_panic_on_hostile_input() {
    let (sealer, ctx, _) = sealed_token().await;
    for text in [
        "",
        "fs:",
        "fs",
        "fs:=",
        "fs:AQ",
        "fs:AQE",
        "\u{0}",
        "fs:\u{1F600}",
    ] {
        assert!(SealedValue::from_text(text).is_err(), "{text:?}");
    }
    assert!(SealedValue::from_bytes(Vec::new()).is_err());

    // 10 MiB of input: a valid header, then noise.
    let mut big = vec![0x5au8; 10 << 20];
    big[..6].copy_from_slice(&[1, 1, 0, 0, 0, 1]);
    let err = try_open(&sealer, &ctx, &big).await.unwrap_err();
    assert!(matches!(err, Error::OpenFailed));
    let text = format!("fs:{}", "A".repeat(14 << 20));
    assert!(SealedValue::from_text(&text).is_err());
    // Beyond the size limit.
    let mut huge = vec![0u8; fieldseal::MAX_PLAINTEXT_LEN + OVERHEAD + 1];
    huge[..6].copy_from_slice(&[1, 1, 0, 0, 0, 1]);
    assert!(matches!(
        SealedValue::from_bytes(huge),
        Err(Error::Malformed { .. })
    ));
    let too_big = vec![0u8; fieldseal::MAX_PLAINTEXT_LEN + 1];
    assert!(matches!(
        sealer.seal(&ctx, &too_big).await,
        Err(Error::PlaintextTooLarge { .. })
    ));
    // 10 MiB of plaintext seals and opens.
    let plaintext = vec![7u8; 10 << 20];
    let sealed = sealer.seal(&ctx, &plaintext).await.unwrap();
    assert!(sealer.open(&ctx, &sealed).await.is_ok());
}

#[tokio::test]
async fn a_tenant_handle_refuses_other_tenants() {
    let sealer = sealer();
    let acme = sealer.tenant("acme").await.unwrap();
    let err = acme.seal(&ctx("globex", 1), b"x").unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err}");
    let sealed = sealer.seal(&ctx("globex", 1), b"x").await.unwrap();
    assert!(matches!(
        acme.open(&ctx("globex", 1), &sealed),
        Err(Error::TenantMismatch { .. })
    ));
}

#[tokio::test]
async fn invalid_tenant_ids_are_rejected() {
    let sealer = sealer();
    assert!(matches!(
        sealer.tenant("").await,
        Err(Error::InvalidContext { .. })
    ));
    assert!(matches!(
        sealer.tenant(&"x".repeat(256)).await,
        Err(Error::InvalidContext { .. })
    ));
}

#[tokio::test]
async fn tenants_are_not_created_when_disabled() {
    let sealer = Sealer::builder(local_provider(), MemoryKeyStore::new())
        .create_tenants_on_first_use(false)
        .build();
    let err = sealer.seal(&ctx("acme", 1), b"x").await.unwrap_err();
    assert!(matches!(err, Error::UnknownTenant { .. }), "{err}");
    sealer.create_tenant("acme").await.unwrap();
    sealer.create_tenant("acme").await.unwrap();
    assert!(sealer.seal(&ctx("acme", 1), b"x").await.is_ok());
}

//! Root keys in AWS KMS (against moto's KMS emulator, and a fault-injecting
//! endpoint for what moto does not do) and in a PKCS#11 token (SoftHSM2).
//!
//! The KMS tests read `FIELDSEAL_TEST_KMS_ENDPOINT`; the PKCS#11 tests read
//! `FIELDSEAL_TEST_PKCS11_MODULE`, `_TOKEN`, `_KEY` and `_PIN`. Without them a
//! test prints why it is skipped; with them, a broken service fails it.
//! `source .ci/key-services.sh` starts both and sets the variables.

mod common;
#[path = "common/db.rs"]
mod db;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use common::ctx;
use db::{server_url, with_postgres, with_sqlite};
use fieldseal::secrecy::{ExposeSecret, SecretString};
use fieldseal::{
    Error, LocalKeyProvider, RootKey, SealedValue, Sealer, async_trait,
    provider::{
        AwsKmsProvider, KeyProvider, Pkcs11Provider, ProviderChain, TenantKey, WrapContext,
        WrappedKey,
    },
    store::{KeyStatus, KeyStore},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KMS_ENDPOINT: &str = "FIELDSEAL_TEST_KMS_ENDPOINT";
const PKCS11_MODULE: &str = "FIELDSEAL_TEST_PKCS11_MODULE";

// --- AWS KMS helpers -----------------------------------------------------------

fn kms_endpoint() -> Option<String> {
    server_url(KMS_ENDPOINT)
}

async fn sdk_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "fieldseal-test",
            "fieldseal-test",
            None,
            None,
            "fieldseal-tests",
        ))
        .load()
        .await
}

/// A new symmetric key in the emulator; its ARN.
async fn create_kms_key(endpoint: &str) -> String {
    let client = aws_sdk_kms::Client::new(&sdk_config(endpoint, "us-east-1").await);
    let created = client
        .create_key()
        .description("fieldseal test root key")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{KMS_ENDPOINT} is set but KMS is unreachable: {e:?}"));
    created.key_metadata().unwrap().arn().unwrap().to_string()
}

async fn kms_provider(endpoint: &str, current: &str, previous: &[&str]) -> AwsKmsProvider {
    let mut builder = AwsKmsProvider::builder(current)
        .sdk_config(&sdk_config(endpoint, "us-east-1").await)
        .timeout(Duration::from_secs(20));
    for key in previous {
        builder = builder.previous(*key);
    }
    builder.build().await.unwrap()
}

// --- PKCS#11 helpers -----------------------------------------------------------

#[derive(Clone, Debug)]
struct Hsm {
    module: String,
    token: String,
    key: String,
    pin: String,
}

fn hsm() -> Option<Hsm> {
    let module = server_url(PKCS11_MODULE)?;
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{PKCS11_MODULE} is set, so {name} must be set too"))
    };
    Some(Hsm {
        module,
        token: var("FIELDSEAL_TEST_PKCS11_TOKEN"),
        key: var("FIELDSEAL_TEST_PKCS11_KEY"),
        pin: var("FIELDSEAL_TEST_PKCS11_PIN"),
    })
}

async fn hsm_provider(hsm: &Hsm, keys: &[&str]) -> Pkcs11Provider {
    let mut builder = Pkcs11Provider::builder(&hsm.module)
        .token(&hsm.token)
        .pin(SecretString::from(hsm.pin.clone()))
        .sessions(3);
    for key in keys {
        builder = builder.key(*key);
    }
    builder
        .build()
        .await
        .unwrap_or_else(|e| panic!("{PKCS11_MODULE} is set but the token is unusable: {e}"))
}

/// A logged-in read-write session on the test token, opened directly through
/// cryptoki (as an operator's tool would).
fn hsm_session(hsm: &Hsm) -> cryptoki::session::Session {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error as CkError, RvError};
    use cryptoki::session::UserType;

    let pkcs11 = Pkcs11::new(&hsm.module).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label().trim_end() == hsm.token)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let pin = cryptoki::types::AuthPin::from(hsm.pin.clone());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    session
}

/// Makes a new AES-256 key in the token with the given protection; returns
/// its label.
fn create_hsm_key(hsm: &Hsm, sensitive: bool, extractable: bool) -> String {
    let label = format!("test-key-{:016x}", rand::random::<u64>());
    create_hsm_key_labelled(hsm, &label, sensitive, extractable);
    label
}

fn create_hsm_key_labelled(hsm: &Hsm, label: &str, sensitive: bool, extractable: bool) {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;

    hsm_session(hsm)
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::ValueLen(32u64.into()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Sensitive(sensitive),
                Attribute::Extractable(extractable),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
}

/// Imports a known AES-256 value into the token (sensitive and not
/// extractable from now on, but it was once in the clear); returns its label.
fn import_hsm_key(hsm: &Hsm) -> String {
    use cryptoki::object::{Attribute, KeyType, ObjectClass};

    let label = format!("imported-key-{:016x}", rand::random::<u64>());
    hsm_session(hsm)
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Value(vec![0x42; 32]),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ])
        .unwrap();
    label
}

fn local(id: &str) -> LocalKeyProvider {
    LocalKeyProvider::new(id, RootKey::generate().unwrap()).unwrap()
}

// --- The suite every provider runs ---------------------------------------------

/// Every lifecycle operation through `old`, then a root key re-wrap to `new`
/// (whose current root key is another key of the same kind, with `old`'s key
/// still unwrapping), and an intact audit chain.
async fn lifecycle(
    old: Arc<dyn KeyProvider>,
    new: Arc<dyn KeyProvider>,
    store: impl KeyStore + Clone + 'static,
) {
    let sealer = Sealer::builder(Arc::clone(&old), store.clone()).build();
    let admin = sealer.admin().actor("provider-suite");
    let (c1, c2, g) = (ctx("acme", 1), ctx("acme", 2), ctx("globex", 1));
    let v1 = sealer.seal(&c1, b"one").await.unwrap();
    let v1_b = sealer.seal(&c2, b"two").await.unwrap();
    let globex = sealer.seal(&g, b"globex").await.unwrap();
    let record = admin.describe("acme").await.unwrap();
    let wrapped = record.keys[0].wrapped.as_ref().unwrap();
    assert_eq!(wrapped.root_key_id(), old.current_root_key_id());

    assert_eq!(admin.rotate("acme").await.unwrap().primary, 2);
    let v2 = sealer.reseal(&c1, &v1).await.unwrap().unwrap();
    assert_eq!(v2.key_version(), 2);

    // A cold sealer unwraps every version through the provider.
    let cold = Sealer::builder(Arc::clone(&old), store.clone()).build();
    for (c, value, text) in [
        (&c1, &v1, &b"one"[..]),
        (&c2, &v1_b, b"two"),
        (&c1, &v2, b"one"),
    ] {
        let opened = cold.open(c, value).await.unwrap();
        assert_eq!(opened.plaintext().expose_secret(), text);
    }

    admin.destroy_version("acme", 1).await.unwrap();
    admin.shred_tenant("globex").await.unwrap();
    let fresh = Sealer::builder(Arc::clone(&old), store.clone()).build();
    assert!(matches!(
        fresh.open(&c2, &v1_b).await,
        Err(Error::KeyDestroyed { version: 1, .. })
    ));
    assert!(matches!(
        fresh.open(&g, &globex).await,
        Err(Error::TenantShredded { .. })
    ));
    assert_eq!(admin.recreate_tenant("globex").await.unwrap(), 2);

    // Re-wrap everything under the new root key; the old provider can then go.
    let moved = Sealer::builder(Arc::clone(&new), store.clone()).build();
    let report = moved
        .admin()
        .rewrap_all(new.current_root_key_id())
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    // acme v2 and globex v2 (acme v1 was destroyed, globex v1 shredded), and
    // the audit-chain key.
    assert_eq!(report.rewrapped, 2, "{report:?}");
    assert!(report.audit_key_rewrapped, "{report:?}");
    let again = moved
        .admin()
        .rewrap_all(new.current_root_key_id())
        .await
        .unwrap();
    assert_eq!(again.rewrapped, 0, "{again:?}");
    for tenant in ["acme", "globex"] {
        let record = moved.admin().describe(tenant).await.unwrap();
        for key in &record.keys {
            if let Some(wrapped) = &key.wrapped {
                assert_eq!(wrapped.root_key_id(), new.current_root_key_id());
            }
        }
        assert_eq!(
            record.status(record.latest_version()),
            Some(KeyStatus::Primary)
        );
    }
    let opened = moved.open(&c1, &v2).await.unwrap();
    assert_eq!(opened.plaintext().expose_secret(), b"one");
    let report = moved.admin().verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
}

/// A wrapped key bound to one context unwraps under no other, and altered
/// bytes unwrap under none. Bits are flipped from `first_flip` on (moto reads
/// the first 36 bytes of its ciphertexts as a key id and answers a flip there
/// with AccessDenied, which is not what KMS does).
async fn binds_context(provider: &dyn KeyProvider, first_flip: usize) {
    let key = TenantKey::generate().unwrap();
    let ctx = WrapContext::tenant_key("acme", 1);
    let wrapped = provider.wrap(&key, &ctx).await.unwrap();
    let back = provider.unwrap(&wrapped, &ctx).await.unwrap();
    assert_eq!(back.expose_secret(), key.expose_secret());
    let again = provider.wrap(&key, &ctx).await.unwrap();
    assert_ne!(again.as_bytes(), wrapped.as_bytes(), "wraps are randomised");

    for other in [
        WrapContext::tenant_key("globex", 1),
        WrapContext::tenant_key("acme", 2),
        WrapContext::audit_key(1),
    ] {
        let err = provider.unwrap(&wrapped, &other).await.unwrap_err();
        assert!(
            matches!(err, Error::UnwrapFailed { .. }),
            "{other:?}: {err}"
        );
    }
    let bytes = wrapped.as_bytes();
    for i in [first_flip, first_flip + 1, bytes.len() / 2, bytes.len() - 1] {
        let mut flipped = bytes.to_vec();
        flipped[i] ^= 0x01;
        let altered = WrappedKey::new(wrapped.root_key_id(), flipped);
        let err = provider.unwrap(&altered, &ctx).await.unwrap_err();
        assert!(
            matches!(err, Error::UnwrapFailed { .. }),
            "bit flip at {i}: {err}"
        );
    }
    for len in [0, 1, bytes.len() - 1] {
        let cut = WrappedKey::new(wrapped.root_key_id(), bytes[..len].to_vec());
        let err = provider.unwrap(&cut, &ctx).await.unwrap_err();
        assert!(
            matches!(err, Error::UnwrapFailed { .. }),
            "truncated to {len}: {err}"
        );
    }
    let foreign = WrappedKey::new("some-other-root", bytes.to_vec());
    assert!(matches!(
        provider.unwrap(&foreign, &ctx).await,
        Err(Error::RootKeyNotConfigured { .. })
    ));
    for text in [
        format!("{wrapped:?}"),
        format!("{provider:?}"),
        format!("{:?}", provider.unwrap(&foreign, &ctx).await),
    ] {
        assert!(!text.contains(&hex::encode(key.expose_secret())), "{text}");
    }
}

/// A wrapped key copied into another tenant's row of the SQL key store does
/// not unwrap: the tenant's values stay closed to a fresh process.
async fn moved_row(
    provider: Arc<dyn KeyProvider>,
    pool: sqlx::SqlitePool,
    store: impl KeyStore + Clone + 'static,
) {
    let sealer = Sealer::builder(Arc::clone(&provider), store.clone()).build();
    sealer.seal(&ctx("acme", 1), b"acme").await.unwrap();
    let globex = sealer.seal(&ctx("globex", 1), b"globex").await.unwrap();
    let moved = sqlx::query(
        "UPDATE fieldseal_keys SET wrapped = (SELECT wrapped FROM fieldseal_keys \
         WHERE tenant = 'acme' AND version = 1) WHERE tenant = 'globex' AND version = 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(moved.rows_affected(), 1);
    let fresh = Sealer::builder(provider, store).build();
    let err = fresh.open(&ctx("globex", 1), &globex).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnwrapFailed { subject, .. } if subject.contains("globex")),
        "{err}"
    );
}

/// Root-key epochs through a provider that `build` makes afresh each time
/// (as a restarted process does): seal in epoch 1 and keep a copy of the key
/// rows (the backup); create epoch 2, re-wrap every key under it; retire
/// epoch 1 (marked unused, then destroyed once a one-second retention has
/// passed). The store opens everything; a provider built afterwards holds
/// only epoch 2, and unwraps no key of the backup. Returns epoch 1's key id
/// and the time the provider said it unwraps nothing from.
async fn epochs_cycle<S, F, Fut>(build: F, store: S) -> (String, fieldseal::Timestamp)
where
    S: KeyStore + Clone + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn KeyProvider>>,
{
    let first = build().await;
    let epoch1 = first.current_root_key_id().to_string();
    let sealer = Sealer::builder(Arc::clone(&first), store.clone()).build();
    let mut values = Vec::new();
    for (i, tenant) in ["acme", "globex", "initech"].into_iter().enumerate() {
        let c = ctx(tenant, i as i64);
        let value = sealer.seal(&c, tenant.as_bytes()).await.unwrap();
        values.push((c, value, tenant));
    }
    let backup = store.list_wrapped_keys(None, 1000).await.unwrap();
    assert!(
        backup
            .iter()
            .all(|k| k.key.wrapped.as_ref().unwrap().root_key_id() == epoch1)
    );

    let created = sealer.admin().create_root_key().await.unwrap();
    assert_ne!(created, epoch1);
    // This provider goes on wrapping under its key; a new one takes epoch 2.
    assert_eq!(first.current_root_key_id(), epoch1);
    let second = build().await;
    assert_eq!(second.current_root_key_id(), created);
    assert_eq!(
        second.root_key_ids(),
        vec![created.as_str(), epoch1.as_str()]
    );
    let moved = Sealer::builder(Arc::clone(&second), store.clone())
        .min_audit_retention(Duration::ZERO)
        .build();
    let report = moved.admin().rewrap_all(&created).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.rewrapped, 3);

    // The current key is never destroyed, a key this provider does not hold
    // neither.
    let err = second.destroy_root_key(&created).await.unwrap_err();
    assert!(err.to_string().contains("never destroyed"), "{err}");
    let err = second.destroy_root_key("no-such-key").await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");

    let retention = Duration::from_secs(1);
    let r = moved.admin().retire_root_keys(retention).await.unwrap();
    assert_eq!(r.marked_unused, vec![epoch1.clone()], "{r:?}");
    assert!(r.destroyed.is_empty(), "{r:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = moved.admin().retire_root_keys(retention).await.unwrap();
    assert_eq!(r.destroyed.len(), 1, "{r:?}");
    let (destroyed, from) = r.destroyed[0].clone();
    assert_eq!(destroyed, epoch1);

    let third = build().await;
    assert_eq!(third.root_key_ids(), vec![created.as_str()]);
    let live = Sealer::builder(Arc::clone(&third), store.clone()).build();
    for (c, value, tenant) in &values {
        let opened = live.open(c, value).await.unwrap();
        assert_eq!(opened.plaintext().expose_secret(), tenant.as_bytes());
    }
    assert!(live.admin().verify_audit().await.unwrap().is_intact());
    for stored in &backup {
        let wrapped = stored.key.wrapped.as_ref().unwrap();
        let wctx = WrapContext::tenant_key(&stored.tenant, stored.key.version);
        let err = third.unwrap(wrapped, &wctx).await.unwrap_err();
        assert!(matches!(err, Error::RootKeyNotConfigured { .. }), "{err}");
    }
    // A third epoch numbers on from the highest.
    let created3 = live.admin().create_root_key().await.unwrap();
    let fourth = build().await;
    assert_eq!(
        fourth.root_key_ids(),
        vec![created3.as_str(), created.as_str()]
    );
    (destroyed, from)
}

/// [`epochs_cycle`] on a fresh SQLite or PostgreSQL key store (`None`: no
/// PostgreSQL server configured).
async fn epochs_on<F, Fut>(build: F, postgres: bool) -> Option<(String, fieldseal::Timestamp)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Arc<dyn KeyProvider>> + Send,
{
    let out = Arc::new(std::sync::Mutex::new(None));
    let o = Arc::clone(&out);
    if postgres {
        with_postgres(|_, store| async move {
            let done = epochs_cycle(build, store).await;
            *o.lock().unwrap() = Some(done);
        })
        .await;
    } else {
        with_sqlite(|_, store| async move {
            let done = epochs_cycle(build, store).await;
            *o.lock().unwrap() = Some(done);
        })
        .await;
    }
    out.lock().unwrap().take()
}

// --- AWS KMS against the emulator ----------------------------------------------

async fn kms_epochs(endpoint: &str, name: &str) -> AwsKmsProvider {
    AwsKmsProvider::epochs(name)
        .sdk_config(&sdk_config(endpoint, "us-east-1").await)
        .timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap()
}

/// Epoch keys named by aliases: the first made by hand, the next by the
/// provider; the old one scheduled for deletion (moto keeps decrypting with
/// a key pending deletion, so the test asks KMS for its state and date) and
/// its alias removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_epochs_erase_old_backups() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let client = aws_sdk_kms::Client::new(&sdk_config(&endpoint, "us-east-1").await);
    for postgres in [false, true] {
        let name = format!("fieldseal-test-{:016x}", rand::random::<u64>());
        // No epoch yet: the error says how to make the first.
        let err = AwsKmsProvider::epochs(&name)
            .sdk_config(&sdk_config(&endpoint, "us-east-1").await)
            .build()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("alias/{name}-e1")),
            "{err}"
        );
        let first = create_kms_key(&endpoint).await;
        client
            .create_alias()
            .alias_name(format!("alias/{name}-e1"))
            .target_key_id(&first)
            .send()
            .await
            .unwrap();
        // Aliases of other names, or non-canonical epoch numbers, are not
        // epochs of this name.
        for other in [
            format!("{name}-e01"),
            format!("{name}x-e7"),
            format!("{name}-e2-x"),
        ] {
            let key = create_kms_key(&endpoint).await;
            client
                .create_alias()
                .alias_name(format!("alias/{other}"))
                .target_key_id(&key)
                .send()
                .await
                .unwrap();
        }
        let (e, n) = (endpoint.clone(), name.clone());
        let build = move || {
            let (e, n) = (e.clone(), n.clone());
            async move { Arc::new(kms_epochs(&e, &n).await) as Arc<dyn KeyProvider> }
        };
        let Some((destroyed, from)) = epochs_on(build, postgres).await else {
            continue;
        };
        assert_eq!(destroyed, first);
        let meta = client.describe_key().key_id(&first).send().await.unwrap();
        let meta = meta.key_metadata().unwrap();
        assert_eq!(
            meta.key_state(),
            Some(&aws_sdk_kms::types::KeyState::PendingDeletion)
        );
        let deletion = meta.deletion_date().unwrap().secs();
        assert_eq!(from.unix_seconds(), deletion);
        let week = fieldseal::Timestamp::now().unix_seconds() + 7 * 86_400;
        assert!((week - deletion).abs() < 600, "{from}");
        let aliases = client.list_aliases().key_id(&first).send().await.unwrap();
        assert!(aliases.aliases().is_empty(), "{aliases:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kms_lifecycle_on_sqlite_and_postgres() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let (a, b) = (
        create_kms_key(&endpoint).await,
        create_kms_key(&endpoint).await,
    );
    let old: Arc<dyn KeyProvider> = Arc::new(kms_provider(&endpoint, &a, &[]).await);
    let new: Arc<dyn KeyProvider> = Arc::new(kms_provider(&endpoint, &b, &[&a]).await);
    assert_eq!(
        old.current_root_key_id(),
        a,
        "the root key id is the key ARN"
    );
    let (o, n) = (Arc::clone(&old), Arc::clone(&new));
    with_sqlite(|_, store| lifecycle(o, n, store)).await;
    with_postgres(|_, store| lifecycle(old, new, store)).await;
}

#[tokio::test]
async fn kms_binds_the_wrap_context() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let arn = create_kms_key(&endpoint).await;
    let provider = Arc::new(kms_provider(&endpoint, &arn, &[]).await);
    binds_context(provider.as_ref(), 36).await;
    with_sqlite(|pool, store| moved_row(provider, pool, store)).await;
}

#[tokio::test]
async fn kms_keys_by_alias_resolve_to_their_arn() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let arn = create_kms_key(&endpoint).await;
    let client = aws_sdk_kms::Client::new(&sdk_config(&endpoint, "us-east-1").await);
    let alias = format!("alias/fieldseal-{:016x}", rand::random::<u64>());
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&arn)
        .send()
        .await
        .unwrap();
    let by_alias = kms_provider(&endpoint, &alias, &[]).await;
    assert_eq!(by_alias.current_root_key_id(), arn);
    let key_id = arn.rsplit('/').next().unwrap();
    let by_id = kms_provider(&endpoint, key_id, &[]).await;
    assert_eq!(by_id.current_root_key_id(), arn);
    // The same key twice is refused: it would look like two roots.
    let err = AwsKmsProvider::builder(&alias)
        .previous(&arn)
        .sdk_config(&sdk_config(&endpoint, "us-east-1").await)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("are the same key"), "{err}");
}

#[tokio::test]
async fn kms_configuration_errors_name_what_to_fix() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let config = sdk_config(&endpoint, "us-east-1").await;
    let build = |key: String, config: aws_config::SdkConfig| async move {
        AwsKmsProvider::builder(key)
            .sdk_config(&config)
            .build()
            .await
            .unwrap_err()
            .to_string()
    };

    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let err = build(missing.into(), config.clone()).await;
    assert!(err.contains("was not found in region us-east-1"), "{err}");
    assert!(err.contains(missing), "{err}");

    // The right key in the wrong region.
    let arn = create_kms_key(&endpoint).await;
    let key_id = arn.rsplit('/').next().unwrap().to_string();
    let err = build(key_id.clone(), sdk_config(&endpoint, "eu-west-3").await).await;
    assert!(err.contains("was not found in region eu-west-3"), "{err}");

    // A disabled key, and one scheduled for deletion (moto keeps both states).
    let client = aws_sdk_kms::Client::new(&config);
    let disabled = create_kms_key(&endpoint).await;
    let id = |arn: &str| arn.rsplit('/').next().unwrap().to_string();
    client
        .disable_key()
        .key_id(id(&disabled))
        .send()
        .await
        .unwrap();
    let err = build(disabled.clone(), config.clone()).await;
    assert!(err.contains("is Disabled"), "{err}");
    assert!(err.contains("enable-key"), "{err}");
    let doomed = create_kms_key(&endpoint).await;
    client
        .schedule_key_deletion()
        .key_id(id(&doomed))
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let err = build(doomed, config.clone()).await;
    assert!(err.contains("scheduled for deletion"), "{err}");

    // Not a root key id at all.
    let err = build("key with spaces".into(), config.clone()).await;
    assert!(err.contains("root key id"), "{err}");

    // Nothing listening: a connection error, not a hang.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = AwsKmsProvider::builder(&arn)
        .sdk_config(&config)
        .endpoint_url(format!("http://{closed}"))
        .max_attempts(1)
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("could not reach AWS KMS"), "{err}");

    // No region anywhere.
    let no_region = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .build();
    let err = AwsKmsProvider::builder(&arn)
        .sdk_config(&no_region)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("no AWS region"), "{err}");
}

/// Cold cache: 10,000 concurrent seals over 100 tenants cost exactly one
/// `Decrypt` per tenant, counted at the provider boundary; a second burst
/// within the cache's time to live costs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kms_calls_are_one_per_tenant_per_cache_lifetime() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let arn = create_kms_key(&endpoint).await;
    let kms = Arc::new(kms_provider(&endpoint, &arn, &[]).await);
    with_sqlite(|_, store| async move {
        let tenants: Vec<String> = (0..100).map(|i| format!("tenant-{i:03}")).collect();

        // Creation from cold: one Encrypt per tenant, however many seal at once.
        let creating = Counting::new(Arc::clone(&kms) as Arc<dyn KeyProvider>);
        let first = Sealer::builder(creating.clone(), store.clone()).build();
        burst(&first, &tenants).await;
        assert_eq!((creating.wraps(), creating.unwraps()), (100, 0));
        assert_eq!(creating.audit_key_calls(), 1, "the store's audit key, once");

        // Another process with a cold cache: one Decrypt per tenant.
        let counting = Counting::new(kms as Arc<dyn KeyProvider>);
        let cold = Sealer::builder(counting.clone(), store).build();
        burst(&cold, &tenants).await;
        assert_eq!((counting.wraps(), counting.unwraps()), (0, 100));
        assert_eq!(counting.audit_key_calls(), 0, "sealing needs no audit key");
        burst(&cold, &tenants).await;
        assert_eq!((counting.wraps(), counting.unwraps()), (0, 100));
    })
    .await;
}

/// 10,000 concurrent seals spread over `tenants`; every one must succeed.
async fn burst(sealer: &Sealer, tenants: &[String]) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10_000usize {
        let sealer = sealer.clone();
        let tenant = tenants[i % tenants.len()].clone();
        tasks.spawn(async move {
            let c = ctx(&tenant, i as i64);
            let sealed = sealer.seal(&c, b"refresh-token").await.unwrap();
            SealedValue::from_bytes(sealed.as_bytes()).unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Counts calls at the provider boundary: tenant key wraps (creations) and
/// unwraps, and calls for the store's audit-chain key apart.
#[derive(Clone, Debug)]
struct Counting {
    inner: Arc<dyn KeyProvider>,
    wraps: Arc<AtomicUsize>,
    unwraps: Arc<AtomicUsize>,
    audit: Arc<AtomicUsize>,
}

impl Counting {
    fn new(inner: Arc<dyn KeyProvider>) -> Self {
        Self {
            inner,
            wraps: Arc::default(),
            unwraps: Arc::default(),
            audit: Arc::default(),
        }
    }
    fn audit_key_calls(&self) -> usize {
        self.audit.load(Ordering::SeqCst)
    }
    fn count(&self, ctx: &WrapContext<'_>, tenant_keys: &AtomicUsize) {
        let counter = if ctx.is_audit_key() {
            &self.audit
        } else {
            tenant_keys
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    fn wraps(&self) -> usize {
        self.wraps.load(Ordering::SeqCst)
    }
    fn unwraps(&self) -> usize {
        self.unwraps.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyProvider for Counting {
    fn current_root_key_id(&self) -> &str {
        self.inner.current_root_key_id()
    }
    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        self.count(ctx, &self.wraps);
        self.inner.wrap(key, ctx).await
    }
    async fn unwrap(&self, w: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey, Error> {
        self.count(ctx, &self.unwraps);
        self.inner.unwrap(w, ctx).await
    }
}

// --- AWS KMS faults moto does not produce ---------------------------------------

/// What the fault-injecting endpoint answers to `Encrypt` and `Decrypt`
/// (`DescribeKey` always succeeds, so the provider builds).
#[derive(Clone, Copy, Debug)]
enum Fault {
    Error(u16, &'static str),
    Hang,
    /// A raw body with status 200.
    Body(&'static str),
}

const FAKE_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555";

/// A loopback HTTP endpoint that speaks just enough of the KMS JSON protocol
/// to inject `fault`; returns its URL and a count of non-DescribeKey requests.
async fn fault_endpoint(fault: Fault) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let calls = Arc::clone(&counted);
            tokio::spawn(async move {
                let Some((head, _)) = read_request(&mut socket).await else {
                    return;
                };
                let (status, body) = if head.contains("trentservice.describekey") {
                    (
                        200,
                        format!(
                            r#"{{"KeyMetadata":{{"Arn":"{FAKE_ARN}","KeyId":"11111111-2222-3333-4444-555555555555","Enabled":true,"KeyState":"Enabled","KeySpec":"SYMMETRIC_DEFAULT","KeyUsage":"ENCRYPT_DECRYPT"}}}}"#
                        ),
                    )
                } else {
                    calls.fetch_add(1, Ordering::SeqCst);
                    match fault {
                        Fault::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        Fault::Error(status, code) => (
                            status,
                            format!(r#"{{"__type":"{code}","message":"injected {code}"}}"#),
                        ),
                        Fault::Body(body) => (200, body.to_string()),
                    }
                };
                respond(&mut socket, status, &body).await;
            });
        }
    });
    (url, calls)
}

/// Reads one HTTP request: its head, lowercased, and the whole request as
/// sent (`None` if the peer closed first).
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head, then the body by its length.
    let head_end = loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(pos) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while request.len() < head_end + length {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&buf[..n]);
    }
    Some((head, request))
}

/// Answers with a KMS JSON body and closes the connection.
async fn respond(socket: &mut tokio::net::TcpStream, status: u16, body: &str) {
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

async fn faulty_provider(fault: Fault, attempts: u32) -> (AwsKmsProvider, Arc<AtomicUsize>) {
    let (url, calls) = fault_endpoint(fault).await;
    let provider = AwsKmsProvider::builder(FAKE_ARN)
        .sdk_config(&sdk_config(&url, "us-east-1").await)
        .max_attempts(attempts)
        .timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    (provider, calls)
}

/// A loopback proxy in front of KMS at `upstream` that answers `Encrypt`
/// and `Decrypt` with the error code in its switch while one is set (what
/// KMS answers for a disabled key, `DisabledException`, or one pending
/// deletion, `KMSInvalidStateException`: moto does not enforce key states)
/// and forwards every other request; returns its URL and the switch.
async fn switchable_kms(upstream: &str) -> (String, Arc<std::sync::Mutex<Option<&'static str>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let switch: Arc<std::sync::Mutex<Option<&'static str>>> = Arc::default();
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let set = Arc::clone(&switch);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (set, upstream) = (Arc::clone(&set), upstream.clone());
            tokio::spawn(async move {
                let Some((head, request)) = read_request(&mut socket).await else {
                    return;
                };
                let keyed =
                    head.contains("trentservice.encrypt") || head.contains("trentservice.decrypt");
                let fault = *set.lock().unwrap();
                if let Some(code) = fault.filter(|_| keyed) {
                    let body = format!(r#"{{"__type":"{code}","message":"injected {code}"}}"#);
                    respond(&mut socket, 400, &body).await;
                    return;
                }
                // Forward, one request per connection.
                let mut up = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                up.write_all(&request).await.unwrap();
                let mut reply = Vec::new();
                let mut buf = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = up.read(&mut buf).await.unwrap();
                    assert!(n > 0, "KMS closed the connection before its reply's head");
                    reply.extend_from_slice(&buf[..n]);
                    if let Some(pos) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&reply[..pos]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .expect("KMS replies with a content-length");
                        break (pos + 4, length);
                    }
                };
                while reply.len() < head_end + length {
                    let n = up.read(&mut buf).await.unwrap();
                    assert!(n > 0, "KMS closed the connection within its reply");
                    reply.extend_from_slice(&buf[..n]);
                }
                let status: u16 = String::from_utf8_lossy(&reply[..head_end])
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap();
                let body = String::from_utf8_lossy(&reply[head_end..head_end + length]);
                respond(&mut socket, status, &body).await;
            });
        }
    });
    (url, switch)
}

/// A provider for a tenant's own KMS key at `endpoint`: built without a
/// call, whatever the key's state.
async fn tenant_kms(endpoint: &str, arn: &str) -> AwsKmsProvider {
    AwsKmsProvider::tenant_key(arn)
        .sdk_config(&sdk_config(endpoint, "us-east-1").await)
        .timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap()
}

/// Tenants with root keys of their own, in one sealer: acme on its own KMS
/// key (behind the switch), globex on its own PKCS#11 key, initech on the
/// shared root key. acme's key disabled, enabled again, then scheduled for
/// deletion: acme's values stop, come back, and stop for good, with an
/// error naming acme and its key; globex and initech are never affected.
async fn kms_tenant_root_keys(endpoint: String, hsm: Hsm, store: impl KeyStore + Clone + 'static) {
    let acme_key = create_kms_key(&endpoint).await;
    let (proxy, switch) = switchable_kms(&endpoint).await;
    let globex_label = create_hsm_key(&hsm, true, false);
    let shared = Arc::new(local("shared-root"));
    let globex_hsm: Arc<dyn KeyProvider> = Arc::new(hsm_provider(&hsm, &[&globex_label]).await);
    let sealer = |ttl: Duration| {
        let (proxy, shared, globex) = (proxy.clone(), Arc::clone(&shared), Arc::clone(&globex_hsm));
        let (store, acme_key) = (store.clone(), acme_key.clone());
        async move {
            Sealer::builder(shared, store)
                .tenant_root_key("acme", tenant_kms(&proxy, &acme_key).await)
                .unwrap()
                .tenant_root_key("globex", globex)
                .unwrap()
                .cache_ttl(ttl)
                .build()
        }
    };
    let live = sealer(Duration::ZERO).await;
    let mut values = Vec::new();
    for tenant in ["acme", "globex", "initech"] {
        let value = live.seal(&ctx(tenant, 1), tenant.as_bytes()).await.unwrap();
        values.push((tenant, value));
    }
    let roots = |tenant: &'static str| {
        let live = live.clone();
        async move {
            let record = live.admin().describe(tenant).await.unwrap();
            record.keys[0]
                .wrapped
                .as_ref()
                .unwrap()
                .root_key_id()
                .to_string()
        }
    };
    assert_eq!(roots("acme").await, acme_key);
    assert_eq!(roots("globex").await, format!("pkcs11:{globex_label}"));
    assert_eq!(roots("initech").await, "shared-root");

    let check = |fault: Option<&'static str>, expected: &'static [&'static str]| {
        let (live, values, switch, acme_key) = (
            live.clone(),
            values.clone(),
            Arc::clone(&switch),
            acme_key.clone(),
        );
        async move {
            *switch.lock().unwrap() = fault;
            for (tenant, value) in &values {
                let opened = live.open(&ctx(tenant, 1), value).await;
                if *tenant != "acme" || fault.is_none() {
                    let opened = opened.unwrap_or_else(|e| panic!("{tenant}: {e}"));
                    assert_eq!(opened.plaintext().expose_secret(), tenant.as_bytes());
                    continue;
                }
                let err = opened.unwrap_err();
                assert!(
                    matches!(&err, Error::TenantRootKeyUnavailable { tenant, root_key_id, .. }
                        if tenant == "acme" && *root_key_id == acme_key),
                    "{err:?}"
                );
                let shown = err.to_string();
                for needle in expected {
                    assert!(shown.contains(needle), "{needle}: {shown}");
                }
                assert!(
                    shown.contains("tenant `acme`") && shown.contains(&acme_key),
                    "{shown}"
                );
            }
        }
    };
    // Disabled, then enabled again.
    check(Some("DisabledException"), &["is disabled", "enable-key"]).await;
    let err = live.seal(&ctx("acme", 2), b"x").await.unwrap_err();
    assert!(
        matches!(err, Error::TenantRootKeyUnavailable { .. }),
        "{err}"
    );
    check(None, &[]).await;
    // Scheduled for deletion: erased (moto still decrypts: the switch
    // answers as KMS does).
    let client = aws_sdk_kms::Client::new(&sdk_config(&endpoint, "us-east-1").await);
    // By key id: moto fails ScheduleKeyDeletion on an ARN.
    let key_id = acme_key.rsplit('/').next().unwrap();
    client
        .schedule_key_deletion()
        .key_id(key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    check(
        Some("KMSInvalidStateException"),
        &["pending deletion", "cancel-key-deletion"],
    )
    .await;
    // A fresh process, as after a restore, fares no better.
    let fresh = sealer(Duration::from_secs(300)).await;
    let err = fresh.open(&ctx("acme", 1), &values[0].1).await.unwrap_err();
    assert!(
        matches!(err, Error::TenantRootKeyUnavailable { .. }),
        "{err}"
    );
    fresh.open(&ctx("globex", 1), &values[1].1).await.unwrap();
    // Built without a call: against an endpoint where nothing listens.
    let offline = tenant_kms("http://127.0.0.1:9", &acme_key).await;
    assert_eq!(offline.current_root_key_id(), acme_key);
    // A tenant's own key is named by its ARN, alone.
    let bad = [
        "alias/acme",
        "arn:aws:kms:us-east-1:key/1234",
        "arn:aws:kms:us-east-1:111122223333:key/",
        "arn:aws:kms:us-east-1:111122223333:alias/acme",
        "arn:aws:kms:us-east-1:111122223333:key/1234:x",
        "arn:aws:kms::111122223333:key/1234",
    ];
    let cases = bad
        .iter()
        .map(|k| (*k, None))
        .chain([(acme_key.as_str(), Some(FAKE_ARN))]);
    for (key, previous) in cases {
        let mut builder =
            AwsKmsProvider::tenant_key(key).sdk_config(&sdk_config(&endpoint, "us-east-1").await);
        if let Some(previous) = previous {
            builder = builder.previous(previous);
        }
        let err = builder.build().await.unwrap_err();
        assert!(
            matches!(&err, Error::Config { reason } if reason.contains("key ARN")),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_root_keys_in_kms_and_pkcs11() {
    let (Some(endpoint), Some(hsm)) = (kms_endpoint(), hsm()) else {
        return;
    };
    let (e, h) = (endpoint.clone(), hsm.clone());
    with_sqlite(|_, store| kms_tenant_root_keys(e, h, store)).await;
    with_postgres(|_, store| kms_tenant_root_keys(endpoint, hsm, store)).await;
}

#[tokio::test]
async fn kms_faults_are_errors_a_person_can_act_on() {
    let key = TenantKey::generate().unwrap();
    let ctx = WrapContext::tenant_key("acme", 3);
    let wrapped = WrappedKey::new(FAKE_ARN, vec![7; 100]);
    let cases: [(Fault, &str, &[&str]); 6] = [
        (
            Fault::Error(400, "AccessDeniedException"),
            "AccessDeniedException",
            &["denied kms:Encrypt", FAKE_ARN, "kms:Decrypt"],
        ),
        (
            Fault::Error(400, "DisabledException"),
            "DisabledException",
            &["is disabled", "enable-key"],
        ),
        (
            Fault::Error(400, "KMSInvalidStateException"),
            "KMSInvalidStateException",
            &["pending deletion", "cancel-key-deletion"],
        ),
        (
            Fault::Error(400, "NotFoundException"),
            "NotFoundException",
            &["was not found in region us-east-1"],
        ),
        (
            Fault::Error(400, "UnrecognizedClientException"),
            "UnrecognizedClientException",
            &["rejected this process's credentials"],
        ),
        (
            Fault::Error(500, "KMSInternalException"),
            "KMSInternalException",
            &["retry later"],
        ),
    ];
    for (fault, code, expected) in cases {
        let (provider, _) = faulty_provider(fault, 1).await;
        let wrap = provider.wrap(&key, &ctx).await.unwrap_err();
        let unwrap = provider.unwrap(&wrapped, &ctx).await.unwrap_err();
        assert!(matches!(wrap, Error::Provider { .. }), "{code}: {wrap}");
        let (wrap, unwrap) = (wrap.to_string(), unwrap.to_string());
        // AccessDenied names the action of each call.
        let expected_unwrap: Vec<String> = expected
            .iter()
            .map(|e| e.replace("denied kms:Encrypt", "denied kms:Decrypt"))
            .collect();
        for needle in expected.iter().filter(|e| **e != "kms:Decrypt") {
            assert!(wrap.contains(needle), "{code}: {wrap}");
        }
        for needle in expected_unwrap
            .iter()
            .filter(|e| e.as_str() != "kms:Decrypt")
        {
            assert!(unwrap.contains(needle.as_str()), "{code}: {unwrap}");
        }
    }

    // A ciphertext under another key or context: "my key, but these bytes do not open".
    for code in ["InvalidCiphertextException", "IncorrectKeyException"] {
        let (provider, _) = faulty_provider(Fault::Error(400, code), 1).await;
        let err = provider.unwrap(&wrapped, &ctx).await.unwrap_err();
        assert!(
            matches!(&err, Error::UnwrapFailed { subject, root_key_id }
                if subject.contains("acme") && subject.contains('3') && root_key_id == FAKE_ARN),
            "{code}: {err}"
        );
    }
}

/// A Decrypt reply that fails to parse holds the key in its body: the error
/// keeps the cause, never the raw response, so no form of the key reaches
/// `Debug`. The same holds for every injected fault.
#[tokio::test]
async fn kms_errors_never_carry_the_response_body() {
    // base64 of 32 bytes of "MARKER-KEY-…", inside a body with a bad field type.
    const KEY: &[u8; 32] = b"MARKER-KEY-0123456789abcdefghijk";
    const BODY: &str =
        r#"{"KeyId": 12, "Plaintext": "TUFSS0VSLUtFWS0wMTIzNDU2Nzg5YWJjZGVmZ2hpams="}"#;
    let ctx = WrapContext::tenant_key("acme", 1);
    let wrapped = WrappedKey::new(FAKE_ARN, vec![7; 100]);
    let (provider, _) = faulty_provider(Fault::Body(BODY), 1).await;
    let err = provider.unwrap(&wrapped, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::Provider { .. }), "{err}");
    // The SDK could not read the reply (the path that used to keep it whole).
    assert!(err.to_string().contains("Decrypt on key"), "{err}");
    assert!(
        !err.to_string().contains("answered for another key"),
        "{err}"
    );
    let mut shown = format!("{err:?} {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        shown.push_str(&format!(" {cause:?} {cause}"));
        source = cause.source();
    }
    for form in [
        "TUFSS0VSLUtFWS0wMTIzNDU2Nzg5YWJjZGVmZ2hpams".to_string(),
        String::from_utf8_lossy(KEY).into_owned(),
        hex::encode(KEY),
        format!("{:?}", &KEY[..]),
    ] {
        assert!(
            !shown.contains(&form),
            "the key shows in the error: {shown}"
        );
    }
}

#[tokio::test]
async fn kms_throttling_is_retried_with_backoff_then_reported() {
    let key = TenantKey::generate().unwrap();
    let ctx = WrapContext::tenant_key("acme", 1);
    let (provider, calls) = faulty_provider(Fault::Error(400, "ThrottlingException"), 3).await;
    let err = provider.wrap(&key, &ctx).await.unwrap_err().to_string();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "every attempt reached KMS");
    assert!(err.contains("throttled Encrypt"), "{err}");
    assert!(err.contains("after 3 attempts"), "{err}");
}

#[tokio::test]
async fn kms_calls_end_within_the_timeout() {
    let key = TenantKey::generate().unwrap();
    let ctx = WrapContext::tenant_key("acme", 1);
    let (url, calls) = fault_endpoint(Fault::Hang).await;
    let provider = AwsKmsProvider::builder(FAKE_ARN)
        .sdk_config(&sdk_config(&url, "us-east-1").await)
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let err = provider.wrap(&key, &ctx).await.unwrap_err().to_string();
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert!(err.contains("did not finish within 2s"), "{err}");
    assert!(err.contains("AwsKmsProviderBuilder::timeout"), "{err}");
}

// --- PKCS#11 against SoftHSM2 ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pkcs11_lifecycle_on_sqlite_and_postgres() {
    let Some(hsm) = hsm() else {
        return;
    };
    let second = create_hsm_key(&hsm, true, false);
    let old: Arc<dyn KeyProvider> = Arc::new(hsm_provider(&hsm, &[&hsm.key]).await);
    let new: Arc<dyn KeyProvider> = Arc::new(hsm_provider(&hsm, &[&second, &hsm.key]).await);
    assert_eq!(old.current_root_key_id(), format!("pkcs11:{}", hsm.key));
    let (o, n) = (Arc::clone(&old), Arc::clone(&new));
    with_sqlite(|_, store| lifecycle(o, n, store)).await;
    with_postgres(|_, store| lifecycle(old, new, store)).await;
}

/// Epoch keys by label: the first made with the token's tools, the next
/// generated by the provider in the token, the old one destroyed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_epochs_erase_old_backups() {
    let Some(hsm) = hsm() else {
        return;
    };
    for postgres in [false, true] {
        let name = format!("epochs-{:016x}", rand::random::<u64>());
        let builder = || {
            Pkcs11Provider::builder(&hsm.module)
                .token(&hsm.token)
                .pin(SecretString::from(hsm.pin.clone()))
                .epochs(&name)
        };
        let err = builder().build().await.unwrap_err();
        assert!(err.to_string().contains(&format!("{name}-e1")), "{err}");
        let err = builder().key(&hsm.key).build().await.unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        // A key that can leave the token is refused as an epoch's key too.
        create_hsm_key_labelled(&hsm, &format!("{name}-e1"), true, true);
        let err = builder().build().await.unwrap_err();
        assert!(err.to_string().contains("can leave the token"), "{err}");
        let session = hsm_session(&hsm);
        for handle in session
            .find_objects(&[cryptoki::object::Attribute::Label(
                format!("{name}-e1").into_bytes(),
            )])
            .unwrap()
        {
            session.destroy_object(handle).unwrap();
        }
        drop(session);
        create_hsm_key_labelled(&hsm, &format!("{name}-e1"), true, false);
        let h = hsm.clone();
        let n = name.clone();
        let build = move || {
            let (h, n) = (h.clone(), n.clone());
            async move {
                let provider = Pkcs11Provider::builder(&h.module)
                    .token(&h.token)
                    .pin(SecretString::from(h.pin.clone()))
                    .epochs(&n)
                    .build()
                    .await
                    .unwrap();
                Arc::new(provider) as Arc<dyn KeyProvider>
            }
        };
        // A process started on epoch 1 and never restarted.
        let stale = builder().build().await.unwrap();
        let Some((destroyed, _)) = epochs_on(build, postgres).await else {
            continue;
        };
        assert_eq!(destroyed, format!("pkcs11:{name}-e1"));
        // It refuses to wrap under the destroyed key, whatever its handle
        // names now.
        let key = TenantKey::generate().unwrap();
        let err = stale
            .wrap(&key, &WrapContext::tenant_key("acme", 9))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Refused { .. }) && err.to_string().contains("restart"),
            "{err}"
        );
        // Gone from the token, as its own tools see it.
        let found = hsm_session(&hsm)
            .find_objects(&[cryptoki::object::Attribute::Label(
                format!("{name}-e1").into_bytes(),
            )])
            .unwrap();
        assert!(found.is_empty());
    }
}

#[tokio::test]
async fn pkcs11_binds_the_wrap_context() {
    let Some(hsm) = hsm() else {
        return;
    };
    let provider = Arc::new(hsm_provider(&hsm, &[&hsm.key]).await);
    binds_context(provider.as_ref(), 0).await;
    with_sqlite(|pool, store| moved_row(provider, pool, store)).await;
}

/// The wrapped form is the published layout (FORMAT.md §"Wrapped keys"):
/// `0x01 || IV || AES-256-GCM(key, IV, wrap_AD) || tag`. Checked both ways
/// against independent `C_Decrypt`/`C_Encrypt` calls that follow the spec,
/// since the root key itself can never be read.
#[tokio::test]
async fn pkcs11_wrapped_form_is_the_published_layout() {
    use cryptoki::mechanism::{Mechanism, aead::GcmParams};
    use cryptoki::object::Attribute;

    let Some(hsm) = hsm() else {
        return;
    };
    let provider = hsm_provider(&hsm, &[&hsm.key]).await;
    let session = hsm_session(&hsm);
    let root = session
        .find_objects(&[Attribute::Label(hsm.key.as_bytes().to_vec())])
        .unwrap()[0];
    let ctx = WrapContext::tenant_key("acme", 7);
    let aad = ctx.aad();

    // The provider's wrap, opened by hand.
    let key = TenantKey::generate().unwrap();
    let wrapped = provider.wrap(&key, &ctx).await.unwrap();
    let bytes = wrapped.as_bytes();
    assert_eq!((bytes.len(), bytes[0]), (61, 0x01));
    assert_eq!(wrapped.root_key_id(), format!("pkcs11:{}", hsm.key));
    let mut iv: [u8; 12] = bytes[1..13].try_into().unwrap();
    let params = GcmParams::new(&mut iv, &aad, 128u64.into()).unwrap();
    let opened = session
        .decrypt(&Mechanism::AesGcm(params), root, &bytes[13..])
        .unwrap();
    assert_eq!(opened, key.expose_secret());

    // A wrap made by hand, opened by the provider.
    let mut iv = *b"by-hand-iv-1";
    let params = GcmParams::new(&mut iv, &aad, 128u64.into()).unwrap();
    let sealed = session
        .encrypt(&Mechanism::AesGcm(params), root, key.expose_secret())
        .unwrap();
    let mut by_hand = vec![0x01];
    by_hand.extend_from_slice(b"by-hand-iv-1");
    by_hand.extend_from_slice(&sealed);
    let by_hand = WrappedKey::new(wrapped.root_key_id(), by_hand);
    let back = provider.unwrap(&by_hand, &ctx).await.unwrap();
    assert_eq!(back.expose_secret(), key.expose_secret());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pkcs11_serves_concurrent_calls_from_a_small_pool() {
    let Some(hsm) = hsm() else {
        return;
    };
    let provider = Arc::new(hsm_provider(&hsm, &[&hsm.key]).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let provider = Arc::clone(&provider);
        tasks.spawn(async move {
            let tenant = format!("t{}", i % 20);
            let ctx = WrapContext::tenant_key(&tenant, i + 1);
            let key = TenantKey::generate().unwrap();
            let wrapped = provider.wrap(&key, &ctx).await.unwrap();
            let back = provider.unwrap(&wrapped, &ctx).await.unwrap();
            assert_eq!(back.expose_secret(), key.expose_secret());
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn pkcs11_configuration_errors_name_what_to_fix() {
    let Some(hsm) = hsm() else {
        return;
    };
    let base = || {
        Pkcs11Provider::builder(&hsm.module)
            .token(&hsm.token)
            .pin(SecretString::from(hsm.pin.clone()))
    };
    let err = |r: Result<Pkcs11Provider, Error>| r.unwrap_err().to_string();

    let e = err(Pkcs11Provider::builder("/nonexistent/libpkcs11-module.so")
        .token(&hsm.token)
        .key(&hsm.key)
        .pin(SecretString::from(hsm.pin.clone()))
        .build()
        .await);
    assert!(
        e.contains("could not load the PKCS#11 module /nonexistent/libpkcs11-module.so"),
        "{e}"
    );

    let e = err(base().key("no-such-key").build().await);
    assert!(e.contains("no secret key labelled `no-such-key`"), "{e}");

    let e = err(base().token("no-such-token").key(&hsm.key).build().await);
    assert!(
        e.contains("no initialised token labelled `no-such-token`"),
        "{e}"
    );
    assert!(e.contains(&hsm.token), "the tokens found are listed: {e}");

    let e = err(base().build().await);
    assert!(e.contains("no key label"), "{e}");

    let e = err(Pkcs11Provider::builder(&hsm.module)
        .token(&hsm.token)
        .key(&hsm.key)
        .pin_from_env("FIELDSEAL_TEST_SURELY_UNSET_PIN")
        .build()
        .await);
    assert!(
        e.contains("FIELDSEAL_TEST_SURELY_UNSET_PIN, which is not set"),
        "{e}"
    );

    let e = err(base().key("has spaces").build().await);
    assert!(e.contains("cannot name a root key"), "{e}");

    // Keys that could leave the token are refused.
    let readable = create_hsm_key(&hsm, false, false);
    let e = err(base().key(&readable).build().await);
    assert!(e.contains("can leave the token"), "{e}");
    let exportable = create_hsm_key(&hsm, true, true);
    let e = err(base().key(&exportable).build().await);
    assert!(e.contains("can leave the token"), "{e}");
    // Imported in the clear once: sensitive now, but not always.
    let imported = import_hsm_key(&hsm);
    let e = err(base().key(&imported).build().await);
    assert!(e.contains("was once readable or extractable"), "{e}");
}

/// A wrong PIN is a clear error. PKCS#11 keeps one login per process and
/// token, and a token already logged in does not check a PIN again, so the
/// check runs in a process of its own (this test binary, re-run on one test).
#[tokio::test]
async fn pkcs11_wrong_pin_is_a_clear_error() {
    if hsm().is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "wrong_pin_in_a_fresh_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FIELDSEAL_TEST_FRESH_PROCESS", "1")
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{output}");
    assert!(output.contains("wrong PIN checked"), "{output}");
}

#[tokio::test]
#[ignore = "run by pkcs11_wrong_pin_is_a_clear_error in a process of its own"]
async fn wrong_pin_in_a_fresh_process() {
    if std::env::var_os("FIELDSEAL_TEST_FRESH_PROCESS").is_none() {
        return;
    }
    let hsm = hsm().expect("the parent test checked the variables");
    let err = Pkcs11Provider::builder(&hsm.module)
        .token(&hsm.token)
        .key(&hsm.key)
        .pin(SecretString::from("not-the-pin".to_string()))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    let text = err.to_string();
    let expected = format!("wrong user PIN for PKCS#11 token `{}`", hsm.token);
    assert!(text.contains(&expected), "{text}");
    assert!(!text.contains("not-the-pin"), "{text}");
    // The right PIN still works afterwards.
    hsm_provider(&hsm, &[&hsm.key]).await;
    println!("wrong PIN checked");
}

// --- Moving the root key between providers ------------------------------------

/// local → AWS KMS → PKCS#11 → local, with every value opening at every step,
/// through processes that hold only the providers they need.
async fn root_migration(endpoint: String, hsm: Hsm, store: impl KeyStore + Clone + 'static) {
    let kms_arn = create_kms_key(&endpoint).await;
    let kms: Arc<dyn KeyProvider> = Arc::new(kms_provider(&endpoint, &kms_arn, &[]).await);
    let token: Arc<dyn KeyProvider> = Arc::new(hsm_provider(&hsm, &[&hsm.key]).await);
    let first: Arc<dyn KeyProvider> = Arc::new(local("local-root-1"));
    let last: Arc<dyn KeyProvider> = Arc::new(local("local-root-2"));

    let mut sealed = Vec::new();
    let seal_some = |sealer: Sealer, step: usize| async move {
        let mut out = Vec::new();
        for tenant in ["acme", "globex", "initech"] {
            let c = ctx(tenant, step as i64);
            let text = format!("{tenant}-{step}");
            out.push((
                c.clone(),
                text.clone(),
                sealer.seal(&c, text.as_bytes()).await.unwrap(),
            ));
        }
        out
    };
    let check_all = |provider: Arc<dyn KeyProvider>, sealed: Vec<_>, store| async move {
        // A fresh process with only `provider`: every key must unwrap through it.
        let sealer = Sealer::builder(provider, store).build();
        for (c, text, value) in &sealed {
            let opened: fieldseal::Opened = sealer.open(c, value).await.unwrap();
            assert_eq!(opened.plaintext().expose_secret(), String::as_bytes(text));
        }
        sealed
    };

    let start = Sealer::builder(Arc::clone(&first), store.clone()).build();
    sealed.extend(seal_some(start, 0).await);

    let steps = [(&kms, &first), (&token, &kms), (&last, &token)];
    for (step, (to, from)) in steps.into_iter().enumerate() {
        let chain = ProviderChain::new(Arc::clone(to))
            .with_previous_shared(Arc::clone(from))
            .unwrap();
        let during = Sealer::builder(chain, store.clone()).build();
        // Values sealed mid-move open too.
        sealed.extend(seal_some(during.clone(), step + 1).await);
        let report = during
            .admin()
            .rewrap_all(to.current_root_key_id())
            .await
            .unwrap();
        assert!(report.is_complete(), "{report:?}");
        sealed = check_all(Arc::clone(to), sealed, store.clone()).await;
        let report = during.admin().verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
    }
    assert_eq!(sealed.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn root_key_moves_local_to_kms_to_hsm_to_local() {
    let (Some(endpoint), Some(hsm)) = (kms_endpoint(), hsm()) else {
        return;
    };
    let (e, h) = (endpoint.clone(), hsm.clone());
    with_sqlite(|_, store| root_migration(e, h, store)).await;
    with_postgres(|_, store| root_migration(endpoint, hsm, store)).await;
}

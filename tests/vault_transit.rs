//! Root keys in a Vault / OpenBao Transit engine, against a real OpenBao dev
//! server on loopback (`source .ci/key-services.sh` starts one and sets
//! `FIELDSEAL_TEST_VAULT_ADDR`, `_TOKEN` and `_MOUNT`; without them each test
//! prints why it is skipped).
//!
//! - the conformance kit;
//! - the lifecycle on SQLite and PostgreSQL: seal, start a new root-key epoch
//!   (`KeyAdmin::create_root_key` rotates the Transit key), re-wrap every
//!   tenant key under the new version, then retire the old version
//!   (`KeyAdmin::retire_root_keys` trims it away): a backup of the key store taken before the re-wrap no longer
//!   unwraps (the Transit version was its root key), the live store does;
//! - the wrap context is bound (Transit's associated data);
//! - errors name what to fix and never show the token.

mod common;
#[path = "common/db.rs"]
mod db;

use db::{server_url, with_postgres, with_sqlite};
use fieldseal::secrecy::{ExposeSecret, SecretString};
use fieldseal::{
    Error, Sealer,
    provider::{KeyProvider, TenantKey, VaultTransitProvider, WrapContext, WrappedKey},
    store::KeyStore,
    testing::check_key_provider,
};
use serde_json::json;

const VAULT_ADDR: &str = "FIELDSEAL_TEST_VAULT_ADDR";

/// The dev server: address, root token, Transit mount.
struct Vault {
    addr: String,
    token: String,
    mount: String,
    http: reqwest::Client,
}

impl Vault {
    fn from_env() -> Option<Self> {
        let addr = server_url(VAULT_ADDR)?;
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
        Some(Self {
            addr,
            token: var("FIELDSEAL_TEST_VAULT_TOKEN"),
            mount: var("FIELDSEAL_TEST_VAULT_MOUNT"),
            http: reqwest::Client::new(),
        })
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .http
            .post(format!("{}/v1/{}/{path}", self.addr, self.mount))
            .header("X-Vault-Token", &self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{VAULT_ADDR} is set but Vault is unreachable: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// A new Transit key of `kind`, with a random name.
    async fn new_key(&self, kind: &str) -> String {
        let name = format!("fieldseal-{:016x}", rand::random::<u64>());
        self.post(&format!("keys/{name}"), json!({ "type": kind }))
            .await;
        name
    }

    async fn provider(&self, key: &str) -> VaultTransitProvider {
        VaultTransitProvider::builder(&self.addr, key)
            .mount(&self.mount)
            .token(SecretString::from(self.token.clone()))
            .build()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_transit_conformance() {
    let Some(vault) = Vault::from_env() else {
        return;
    };
    let key = vault.new_key("aes256-gcm96").await;
    let provider = vault.provider(&key).await;
    assert_eq!(
        provider.current_root_key_id(),
        format!("transit:{}/{key}:v1", vault.mount)
    );
    check_key_provider(&provider).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_binds_the_wrap_context() {
    let Some(vault) = Vault::from_env() else {
        return;
    };
    let key = vault.new_key("aes256-gcm96").await;
    let provider = vault.provider(&key).await;
    let tenant_key = TenantKey::generate().unwrap();
    let ctx = WrapContext::tenant_key("acme", 1).in_store("store-a");
    let wrapped = provider.wrap(&tenant_key, &ctx).await.unwrap();
    assert!(
        std::str::from_utf8(wrapped.as_bytes())
            .unwrap()
            .starts_with("vault:v1:")
    );
    let back = provider.unwrap(&wrapped, &ctx).await.unwrap();
    assert_eq!(back.expose_secret(), tenant_key.expose_secret());
    for other in [
        WrapContext::tenant_key("acme", 2).in_store("store-a"),
        WrapContext::tenant_key("globex", 1).in_store("store-a"),
        WrapContext::tenant_key("acme", 1).in_store("store-b"),
        WrapContext::tenant_key("acme", 1),
        WrapContext::audit_key(1).in_store("store-a"),
    ] {
        let err = provider.unwrap(&wrapped, &other).await.unwrap_err();
        assert!(
            matches!(err, Error::UnwrapFailed { .. }),
            "{other:?}: {err}"
        );
    }
    // Bytes edited, a version prefix that does not match the id, another key.
    let edited = {
        let mut b = wrapped.as_bytes().to_vec();
        let last = b.len() - 2;
        b[last] = if b[last] == b'A' { b'B' } else { b'A' };
        WrappedKey::new(wrapped.root_key_id(), b)
    };
    assert!(matches!(
        provider.unwrap(&edited, &ctx).await.unwrap_err(),
        Error::UnwrapFailed { .. }
    ));
    let other_key = vault.new_key("aes256-gcm96").await;
    let other = vault.provider(&other_key).await;
    let moved = WrappedKey::new(other.current_root_key_id(), wrapped.as_bytes().to_vec());
    assert!(matches!(
        other.unwrap(&moved, &ctx).await.unwrap_err(),
        Error::UnwrapFailed { .. }
    ));
    let err = other.unwrap(&wrapped, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::RootKeyNotConfigured { .. }), "{err}");
}

/// Seal on a store, rotate the Transit key, re-wrap every tenant key under
/// the new version, trim the old one: the store opens everything, a copy of
/// its key rows from before the re-wrap opens nothing.
async fn epochs_erase_old_backups<S: KeyStore + Clone + 'static>(vault: &Vault, store: S) {
    let key = vault.new_key("aes256-gcm96").await;
    let v1 = vault.provider(&key).await;
    let sealer = Sealer::builder(v1, store.clone()).build();
    let mut values = Vec::new();
    for (i, tenant) in ["acme", "globex", "initech"].into_iter().enumerate() {
        let ctx = common::ctx(tenant, i as i64);
        let value = sealer
            .seal(&ctx, format!("secret of {tenant}").as_bytes())
            .await
            .unwrap();
        values.push((ctx, value, tenant));
    }
    let store_id = store
        .store_identity()
        .await
        .unwrap()
        .map(|i| i.id)
        .unwrap_or_default();
    // The "backup": every wrapped key as it is now, under version 1.
    let backup: Vec<_> = store.list_wrapped_keys(None, 1000).await.unwrap();
    assert!(backup.iter().all(|k| {
        k.key
            .wrapped
            .as_ref()
            .unwrap()
            .root_key_id()
            .ends_with(":v1")
    }));

    // A version made by hand that never wraps anything (v2), then a new
    // epoch: the provider rotates the Transit key (v3).
    vault.post(&format!("keys/{key}/rotate"), json!({})).await;
    let created = sealer.admin().create_root_key().await.unwrap();
    assert!(created.ends_with(":v3"), "{created}");
    let v2 = vault.provider(&key).await;
    assert_eq!(v2.current_root_key_id(), created);
    assert_eq!(v2.root_key_ids().len(), 3);
    let moved = Sealer::builder(v2, store.clone())
        .min_audit_retention(std::time::Duration::ZERO)
        .build();
    let report = moved.admin().rewrap_all(&created).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.rewrapped, 3);
    assert!(report.audit_key_rewrapped);

    // Retired: marked unused, then, once the retention has passed, trimmed
    // away in Vault.
    let retention = std::time::Duration::from_secs(1);
    // Both older versions are this store's (a Transit key serves one store),
    // the one its log never names too.
    let r = moved.admin().retire_root_keys(retention).await.unwrap();
    assert_eq!(r.marked_unused.len(), 2, "{r:?}");
    assert!(r.not_this_stores.is_empty(), "{r:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = moved.admin().retire_root_keys(retention).await.unwrap();
    assert_eq!(r.destroyed.len(), 2, "{r:?}");
    assert!(r.destroyed[0].0.ends_with(":v1"), "{r:?}");
    let v2_only = vault.provider(&key).await;
    assert_eq!(v2_only.root_key_ids().len(), 1);
    // The live store: every value opens.
    let live = Sealer::builder(v2_only, store.clone()).build();
    for (ctx, value, tenant) in &values {
        let opened = live.open(ctx, value).await.unwrap();
        assert_eq!(
            opened.plaintext().expose_secret(),
            format!("secret of {tenant}").as_bytes()
        );
    }
    assert!(live.admin().verify_audit().await.unwrap().is_intact());
    // The backup's wrapped keys: version 1 is gone from Vault.
    let provider = vault.provider(&key).await;
    for stored in &backup {
        let wrapped = stored.key.wrapped.clone().unwrap();
        let ctx = WrapContext::tenant_key(&stored.tenant, stored.key.version);
        let err = provider.unwrap(&wrapped, &ctx).await.unwrap_err();
        assert!(matches!(err, Error::RootKeyNotConfigured { .. }), "{err}");
        // Nor does Vault itself decrypt it, asked directly with the root token.
        let response = vault
            .http
            .post(format!("{}/v1/{}/decrypt/{key}", vault.addr, vault.mount))
            .header("X-Vault-Token", &vault.token)
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "ciphertext": std::str::from_utf8(wrapped.as_bytes()).unwrap(),
                    "associated_data": base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        ctx.in_store(&store_id).aad(),
                    ),
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert!(
            !response.status().is_success(),
            "a trimmed version still decrypts"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_epochs_on_sqlite() {
    let Some(vault) = Vault::from_env() else {
        return;
    };
    with_sqlite(|_, store| async move { epochs_erase_old_backups(&vault, store).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_epochs_on_postgres() {
    let Some(vault) = Vault::from_env() else {
        return;
    };
    with_postgres(|_, store| async move { epochs_erase_old_backups(&vault, store).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_errors_name_what_to_fix() {
    let Some(vault) = Vault::from_env() else {
        return;
    };
    let key = vault.new_key("aes256-gcm96").await;
    let build = |addr: &str, token: &str, key: &str| {
        VaultTransitProvider::builder(addr, key)
            .mount(&vault.mount)
            .token(SecretString::from(token.to_string()))
            .build()
    };
    // A token Vault does not know: refused, and never printed.
    let err = build(&vault.addr, "not-a-token-1234567890", &key)
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Provider { .. }), "{text}");
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(!text.contains("not-a-token"), "{text}");
    // No such key.
    let err = build(&vault.addr, &vault.token, "fieldseal-missing")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fieldseal-missing"), "{err}");
    // A key of a type that cannot bind associated data.
    let chacha = vault.new_key("chacha20-poly1305").await;
    let err = build(&vault.addr, &vault.token, &chacha).await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("aes256-gcm96"), "{err}");
    // Plain HTTP to a host other than loopback.
    let err = build("http://vault.example:8200", &vault.token, &key)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("https://"), "{err}");
    // Nothing secret in Debug.
    let provider = vault.provider(&key).await;
    let shown = format!("{provider:?}");
    assert!(!shown.contains(&vault.token), "{shown}");
    assert!(shown.contains(&key), "{shown}");
}

/// A tenant on a Transit key of its own (bring your own key): its owner
/// disallows the version that wraps the tenant's keys (raising the key's
/// minimum decryption version), allows it again, then deletes the key. The
/// tenant's values stop, come back and stop for good, with the error that
/// names the tenant and its key; the tenant on the shared root key goes on.
/// A ciphertext that does not authenticate is still an unwrap failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_on_its_own_transit_key() {
    let Some(vault) = Vault::from_env() else {
        return;
    };
    let key = vault.new_key("aes256-gcm96").await;
    let own = vault.provider(&key).await;
    let own_id = own.current_root_key_id().to_string();
    let shared =
        fieldseal::LocalKeyProvider::new("shared", fieldseal::RootKey::generate().unwrap())
            .unwrap();
    let sealer = Sealer::builder(shared, fieldseal::MemoryKeyStore::new())
        .tenant_root_key("acme", own)
        .unwrap()
        .cache_ttl(std::time::Duration::ZERO)
        .build();
    let acme = sealer
        .seal(&common::ctx("acme", 1), b"acme's")
        .await
        .unwrap();
    let globex = sealer
        .seal(&common::ctx("globex", 1), b"globex's")
        .await
        .unwrap();
    let record = sealer.admin().describe("acme").await.unwrap();
    let wrapped = record.keys[0].wrapped.clone().unwrap();
    assert_eq!(wrapped.root_key_id(), own_id);
    let check = |refused: Option<&'static str>| {
        let (sealer, acme, globex, own_id) =
            (sealer.clone(), acme.clone(), globex.clone(), own_id.clone());
        async move {
            let opened = sealer.open(&common::ctx("acme", 1), &acme).await;
            match refused {
                None => assert_eq!(opened.unwrap().plaintext().expose_secret(), b"acme's"),
                Some(why) => {
                    let err = opened.unwrap_err();
                    assert!(
                        matches!(&err, Error::TenantRootKeyUnavailable { tenant, root_key_id, .. }
                            if tenant == "acme" && *root_key_id == own_id),
                        "{err:?}"
                    );
                    assert!(err.to_string().contains(why), "{err}");
                }
            }
            let opened = sealer
                .open(&common::ctx("globex", 1), &globex)
                .await
                .unwrap();
            assert_eq!(opened.plaintext().expose_secret(), b"globex's");
        }
    };
    check(None).await;
    // Version 1 disallowed: revoked; allowed again: restored.
    vault.post(&format!("keys/{key}/rotate"), json!({})).await;
    vault
        .post(
            &format!("keys/{key}/config"),
            json!({ "min_decryption_version": 2 }),
        )
        .await;
    check(Some("HTTP 400")).await;
    vault
        .post(
            &format!("keys/{key}/config"),
            json!({ "min_decryption_version": 1 }),
        )
        .await;
    check(None).await;
    // A ciphertext that does not authenticate is the record's fault.
    let edited = {
        let mut b = wrapped.as_bytes().to_vec();
        let last = b.len() - 2;
        b[last] = if b[last] == b'A' { b'B' } else { b'A' };
        WrappedKey::new(wrapped.root_key_id(), b)
    };
    let provider = vault.provider(&key).await;
    let ctx = WrapContext::tenant_key("acme", 1);
    assert!(matches!(
        provider.unwrap(&edited, &ctx).await.unwrap_err(),
        Error::UnwrapFailed { .. }
    ));
    // Deleted: the tenant is erased.
    vault
        .post(
            &format!("keys/{key}/config"),
            json!({ "deletion_allowed": true }),
        )
        .await;
    let response = vault
        .http
        .delete(format!("{}/v1/{}/keys/{key}", vault.addr, vault.mount))
        .header("X-Vault-Token", &vault.token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    check(Some("not found")).await;
}

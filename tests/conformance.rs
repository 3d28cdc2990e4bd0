//! The conformance kit run on every provider and store in this crate: the
//! same public checks a third-party `KeyProvider` or `KeyStore` runs.
//!
//! The SQL stores run on SQLite always, and on PostgreSQL and MySQL/MariaDB
//! when `FIELDSEAL_TEST_POSTGRES_URL` / `FIELDSEAL_TEST_MYSQL_URL` are set;
//! AWS KMS when `FIELDSEAL_TEST_KMS_ENDPOINT` is set, PKCS#11 when
//! `FIELDSEAL_TEST_PKCS11_MODULE` (and its companions) are set.

mod common;
#[path = "common/db.rs"]
mod db;

use std::time::Duration;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use db::{server_url, with_mysql, with_postgres, with_sqlite};
use fieldseal::secrecy::SecretString;
use fieldseal::{
    LocalKeyProvider, MemoryKeyStore, RootKey,
    provider::{AwsKmsProvider, Pkcs11Provider, ProviderChain},
    testing::{check_key_provider, check_key_store},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store() {
    check_key_store(MemoryKeyStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store() {
    with_sqlite(|_, store| check_key_store(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store() {
    with_postgres(|_, store| check_key_store(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_store() {
    with_mysql(|_, store| check_key_store(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_provider() {
    let provider = LocalKeyProvider::new("root-1", RootKey::generate().unwrap())
        .unwrap()
        .with_previous("root-0", RootKey::generate().unwrap())
        .unwrap();
    check_key_provider(&provider).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_chain() {
    let chain = ProviderChain::new(
        LocalKeyProvider::new("root-new", RootKey::generate().unwrap()).unwrap(),
    )
    .with_previous(LocalKeyProvider::new("root-old", RootKey::generate().unwrap()).unwrap())
    .unwrap();
    check_key_provider(&chain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_kms_provider() {
    let Some(endpoint) = server_url("FIELDSEAL_TEST_KMS_ENDPOINT") else {
        return;
    };
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    let created = aws_sdk_kms::Client::new(&config)
        .create_key()
        .send()
        .await
        .unwrap_or_else(|e| panic!("the KMS emulator at {endpoint} is unreachable: {e:?}"));
    let arn = created.key_metadata().unwrap().arn().unwrap().to_string();
    let provider = AwsKmsProvider::builder(arn)
        .sdk_config(&config)
        .timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    check_key_provider(&provider).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pkcs11_provider() {
    let Some(module) = server_url("FIELDSEAL_TEST_PKCS11_MODULE") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let provider = Pkcs11Provider::builder(module)
        .token(var("FIELDSEAL_TEST_PKCS11_TOKEN"))
        .key(var("FIELDSEAL_TEST_PKCS11_KEY"))
        .pin(SecretString::from(var("FIELDSEAL_TEST_PKCS11_PIN")))
        .build()
        .await
        .unwrap();
    check_key_provider(&provider).await;
}

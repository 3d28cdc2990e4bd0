//! Moving a running deployment's root key from a key file into AWS KMS.
//!
//! A deployment has sealed credentials under a local root key. This example
//! moves the root key into KMS without touching a sealed value:
//!
//! 1. every process runs with `ProviderChain::new(kms).with_previous(local)`:
//!    new tenant keys are wrapped by KMS, old ones still unwrap locally;
//! 2. `rewrap_all` re-wraps every tenant key (and the audit key) under KMS;
//! 3. the local root key is retired: a process with only the KMS provider
//!    opens every value.
//!
//! ```sh
//! FIELDSEAL_KMS_KEY=alias/fieldseal-root AWS_REGION=eu-west-1 \
//!     cargo run --features aws-kms --example aws_kms
//! ```
//!
//! Credentials, region and endpoint come from the AWS SDK's usual sources
//! (`AWS_PROFILE`, `AWS_REGION`, a role, `AWS_ENDPOINT_URL` for an emulator).
//! The IAM identity needs `kms:DescribeKey`, `kms:Encrypt` and `kms:Decrypt` on
//! the key. The example's database is a temporary SQLite file, removed at the
//! end.

use std::process::ExitCode;

use fieldseal::secrecy::ExposeSecret;
use fieldseal::{
    Context, LocalKeyProvider, RootKey, SealedValue, Sealer, SqlKeyStore,
    provider::{AwsKmsProvider, KeyProvider, ProviderChain},
};
use sqlx::SqlitePool;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(key) = std::env::var("FIELDSEAL_KMS_KEY") else {
        eprintln!(
            "set FIELDSEAL_KMS_KEY to the KMS key to move the root key into (a key id, key ARN \
             or alias such as alias/fieldseal-root)"
        );
        return ExitCode::from(2);
    };
    let dir = std::env::temp_dir().join(format!("fieldseal-aws-kms-{}", std::process::id()));
    let outcome = run(&key, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn ctx(tenant: &str, row: i64) -> Result<Context, fieldseal::Error> {
    Context::builder(tenant, "integrations", "refresh_token")
        .row(row)
        .build()
}

async fn run(kms_key: &str, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
    let pool = SqlitePool::connect(&url).await?;
    let store = SqlKeyStore::new(pool.clone());
    store.migrate().await?;
    sqlx::query("CREATE TABLE integrations (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, refresh_token BLOB NOT NULL)")
        .execute(&pool)
        .await?;

    // Before: the deployment runs on a root key file.
    let local_root = RootKey::create_file(dir.join("root.key"))?;
    let local = LocalKeyProvider::new("local-root-1", local_root)?;
    let before = Sealer::builder(local, store.clone()).build();
    for (row, tenant) in (1..).zip(TENANTS) {
        let secret = format!("1//{tenant}-refresh-token");
        let sealed = before.seal(&ctx(tenant, row)?, secret.as_bytes()).await?;
        sqlx::query("INSERT INTO integrations (id, tenant, refresh_token) VALUES (?, ?, ?)")
            .bind(row)
            .bind(tenant)
            .bind(&sealed)
            .execute(&pool)
            .await?;
    }
    println!(
        "sealed {} credentials under the local root key",
        TENANTS.len()
    );

    // Step 1: KMS wraps from now on; the key file still unwraps.
    let kms = AwsKmsProvider::builder(kms_key).build().await?;
    let kms_id = kms.current_root_key_id().to_string();
    println!("AWS KMS key {kms_key} is {kms_id}");
    let local = LocalKeyProvider::new("local-root-1", RootKey::from_file(dir.join("root.key"))?)?;
    let during =
        Sealer::builder(ProviderChain::new(kms).with_previous(local)?, store.clone()).build();

    // Step 2: re-wrap every stored key under KMS (resumable; run until complete).
    let report = during.admin().actor("example").rewrap_all(&kms_id).await?;
    println!(
        "re-wrapped {} tenant keys and the audit key ({}) under KMS; complete: {}",
        report.rewrapped,
        if report.audit_key_rewrapped {
            "moved"
        } else {
            "already there"
        },
        report.is_complete()
    );
    if !report.is_complete() {
        return Err("the re-wrap did not complete; run it again".into());
    }

    // Step 3: a process that has only the KMS provider reads everything.
    let kms = AwsKmsProvider::builder(kms_key).build().await?;
    let after = Sealer::builder(kms, store).build();
    let rows: Vec<(i64, String, SealedValue)> =
        sqlx::query_as("SELECT id, tenant, refresh_token FROM integrations ORDER BY id")
            .fetch_all(&pool)
            .await?;
    for (row, tenant, sealed) in rows {
        let opened = after.open(&ctx(&tenant, row)?, &sealed).await?;
        let text = std::str::from_utf8(opened.plaintext().expose_secret())?;
        let record = after.admin().describe(&tenant).await?;
        let under = record
            .keys
            .iter()
            .filter_map(|k| k.wrapped.as_ref().map(|w| w.root_key_id().to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        let hint: String = text
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        println!(
            "row {row} ({tenant}): opened {} bytes ending …{hint}; tenant key under {under}",
            text.len()
        );
    }
    let audit = after.admin().verify_audit().await?;
    println!(
        "audit log: {} entries, intact: {}",
        audit.entries,
        audit.is_intact()
    );
    println!("the local root key file can now be destroyed");
    pool.close().await;
    Ok(())
}

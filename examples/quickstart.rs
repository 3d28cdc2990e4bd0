//! fieldseal in one minute: seal two tenants' credentials, open them, and watch
//! a copied value fail to open.
//!
//! Run: `cargo run --example quickstart`
//!
//! It keeps its files in `./fieldseal-quickstart/` (or `$FIELDSEAL_QUICKSTART_DIR`):
//! a root key file, created on the first run and reused after (never
//! overwritten).

use std::path::PathBuf;

use fieldseal::secrecy::ExposeSecret;
use fieldseal::{Context, Error, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let dir = std::env::var_os("FIELDSEAL_QUICKSTART_DIR")
        .map_or_else(|| PathBuf::from("fieldseal-quickstart"), PathBuf::from);
    std::fs::create_dir_all(&dir).map_err(|e| Error::RootKey {
        origin: dir.display().to_string(),
        reason: "cannot create the quickstart directory".into(),
        source: Some(e),
    })?;
    let key_path = dir.join("root.key");

    println!("fieldseal quickstart\n");
    let root_key = if key_path.exists() {
        println!("Root key: {} (existing file, loaded)", key_path.display());
        RootKey::from_file(&key_path)?
    } else {
        let key = RootKey::create_file(&key_path)?;
        println!("Root key: {} (new file, mode 0600)", key_path.display());
        key
    };
    println!("  The root key wraps each tenant's key; it never seals values itself.\n");

    let provider = LocalKeyProvider::new("quickstart-root", root_key)?;
    let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();

    // What an application stores: (tenant, table, column, row) -> secret.
    let secrets = [
        ("acme", 1, "refresh_token", "1//0gAcme-oauth-refresh-token"),
        ("acme", 1, "api_key", "sk_live_acme_51Hx9"),
        (
            "globex",
            7,
            "refresh_token",
            "1//0gGlobex-oauth-refresh-token",
        ),
        ("globex", 7, "api_key", "sk_live_globex_77Qa"),
    ];

    println!("1. Sealing (each tenant gets its own key on first use):");
    let mut sealed = Vec::new();
    for (tenant, row, column, secret) in secrets {
        let ctx = Context::builder(tenant, "integrations", column)
            .row(row)
            .build()?;
        let value = sealer.seal(&ctx, secret.as_bytes()).await?;
        println!(
            "   {tenant:<6} integrations.{column:<13} row {row}: {} bytes -> {} bytes",
            secret.len(),
            value.as_bytes().len()
        );
        println!("          {value}");
        sealed.push((ctx, value));
    }

    println!("\n2. Opening them again (same tenant, table, column and row):");
    for (ctx, value) in &sealed {
        let opened = sealer.open(ctx, value).await?;
        let text = opened.into_secret_string()?;
        println!(
            "   {:<6} {:<13} row {}: {}",
            ctx.tenant(),
            ctx.column(),
            ctx.row().unwrap_or("-"),
            text.expose_secret()
        );
    }

    println!("\n3. A value copied anywhere else does not open:");
    let (acme_ctx, acme_token) = &sealed[0];
    let attempts = [
        (
            "acme's refresh token, pasted into globex's row",
            Context::builder("globex", "integrations", "refresh_token")
                .row(7)
                .build()?,
        ),
        (
            "acme's refresh token, moved to acme's row 2",
            Context::builder("acme", "integrations", "refresh_token")
                .row(2)
                .build()?,
        ),
        (
            "acme's refresh token, read as acme's api_key",
            Context::builder("acme", "integrations", "api_key")
                .row(1)
                .build()?,
        ),
    ];
    for (what, ctx) in attempts {
        match sealer.open(&ctx, acme_token).await {
            Ok(_) => {
                println!("   {what}: OPENED (this must never happen)");
                std::process::exit(1);
            }
            Err(err) => println!("   {what}:\n      refused: {err}"),
        }
    }
    let original = sealer.open(acme_ctx, acme_token).await?;
    println!(
        "\n   ...while in its own place it still opens (sealed under key version {}).",
        original.key_version()
    );
    println!("\nDone. Delete {} to start over.", dir.display());
    Ok(())
}

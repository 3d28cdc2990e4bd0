//! fieldseal in one minute, on SQLite: an `integrations` table whose OAuth
//! refresh tokens and API secrets are sealed per tenant and per row.
//!
//! Run: `cargo run --example quickstart`
//!
//! Everything lives in `./fieldseal-quickstart/` (or `$FIELDSEAL_QUICKSTART_DIR`):
//! a root key file, created on the first run and reused after (never
//! overwritten), and a SQLite database holding both the wrapped tenant keys and
//! the application's rows.

use std::path::PathBuf;

use fieldseal::secrecy::ExposeSecret;
use fieldseal::{Context, Error, LocalKeyProvider, RootKey, SealedValue, Sealer, SqlKeyStore};
use sqlx::SqlitePool;

/// One row of the application's own table.
#[derive(sqlx::FromRow)]
struct Integration {
    id: i64,
    tenant: String,
    provider: String,
    refresh_token: SealedValue,
    api_secret: Option<SealedValue>,
}

/// Where a secret lives: the tenant, the table and column, and the row's id.
fn context(tenant: &str, column: &str, id: i64) -> Result<Context, Error> {
    Context::builder(tenant, "integrations", column)
        .row(id)
        .build()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("FIELDSEAL_QUICKSTART_DIR")
        .map_or_else(|| PathBuf::from("fieldseal-quickstart"), PathBuf::from);
    std::fs::create_dir_all(&dir)?;
    let key_path = dir.join("root.key");
    let db_path = dir.join("app.db");

    println!("fieldseal quickstart\n");
    let root_key = if key_path.exists() {
        println!("Root key:  {} (existing file, loaded)", key_path.display());
        RootKey::from_file(&key_path)?
    } else {
        let key = RootKey::create_file(&key_path)?;
        println!("Root key:  {} (new file, mode 0600)", key_path.display());
        key
    };
    println!(
        "Database:  {} (SQLite: wrapped tenant keys and the app's rows)",
        db_path.display()
    );
    println!("  The root key only wraps each tenant's key; values get keys of their own.\n");

    let pool = SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db_path.display())).await?;
    let store = SqlKeyStore::new(pool.clone());
    store.migrate().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS integrations (
             id INTEGER PRIMARY KEY,
             tenant TEXT NOT NULL,
             provider TEXT NOT NULL,
             refresh_token BLOB NOT NULL,
             api_secret BLOB
         )",
    )
    .execute(&pool)
    .await?;

    let provider = LocalKeyProvider::new("quickstart-root", root_key)?;
    let sealer = Sealer::builder(provider, store).build();

    // What the application stores, per tenant.
    let rows = [
        (
            1,
            "acme",
            "github",
            "1//0gAcme-oauth-refresh-token",
            Some("sk_live_acme_51Hx9"),
        ),
        (2, "acme", "slack", "xoxe-1-acme-refresh", None),
        (
            3,
            "globex",
            "github",
            "1//0gGlobex-oauth-refresh-token",
            Some("sk_live_globex_77Qa"),
        ),
    ];

    println!("1. Sealing and writing rows (each tenant gets its own key on first use):");
    for (id, tenant, provider, token, secret) in rows {
        let token_sealed = sealer
            .seal(&context(tenant, "refresh_token", id)?, token.as_bytes())
            .await?;
        let secret_sealed = match secret {
            Some(s) => Some(
                sealer
                    .seal(&context(tenant, "api_secret", id)?, s.as_bytes())
                    .await?,
            ),
            None => None,
        };
        println!(
            "   row {id} {tenant:<6} {provider:<6} refresh_token: {} bytes -> {} bytes sealed",
            token.len(),
            token_sealed.as_bytes().len()
        );
        println!("      as text: {token_sealed}");
        sqlx::query(
            "INSERT OR REPLACE INTO integrations (id, tenant, provider, refresh_token, api_secret)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(tenant)
        .bind(provider)
        .bind(token_sealed)
        .bind(secret_sealed)
        .execute(&pool)
        .await?;
    }

    println!("\n2. Reading them back and opening (same tenant, column and row):");
    let stored: Vec<Integration> = sqlx::query_as(
        "SELECT id, tenant, provider, refresh_token, api_secret FROM integrations ORDER BY id",
    )
    .fetch_all(&pool)
    .await?;
    for row in &stored {
        let token = sealer
            .open(
                &context(&row.tenant, "refresh_token", row.id)?,
                &row.refresh_token,
            )
            .await?
            .into_secret_string()?;
        let secret = match &row.api_secret {
            Some(s) => sealer
                .open(&context(&row.tenant, "api_secret", row.id)?, s)
                .await?
                .into_secret_string()?
                .expose_secret()
                .to_string(),
            None => "(none)".to_string(),
        };
        println!(
            "   row {} {:<6} {:<6} refresh_token = {}, api_secret = {secret}",
            row.id,
            row.tenant,
            row.provider,
            token.expose_secret()
        );
    }

    println!("\n3. A sealed value copied anywhere else does not open:");
    let acme = &stored[0];
    let attempts = [
        (
            "acme's token pasted into globex's row 3",
            context("globex", "refresh_token", 3)?,
        ),
        (
            "acme's token moved to acme's row 2",
            context("acme", "refresh_token", 2)?,
        ),
        (
            "acme's token read as its api_secret",
            context("acme", "api_secret", 1)?,
        ),
    ];
    for (what, ctx) in attempts {
        match sealer.open(&ctx, &acme.refresh_token).await {
            Ok(_) => {
                println!("   {what}: OPENED (this must never happen)");
                std::process::exit(1);
            }
            Err(err) => println!("   {what}:\n      refused: {err}"),
        }
    }
    let again = sealer
        .open(&context("acme", "refresh_token", 1)?, &acme.refresh_token)
        .await?;
    println!(
        "\n   In its own row it still opens (sealed under acme's key version {}).",
        again.key_version()
    );

    pool.close().await;

    // The rotation runner's configuration for this database (kept if it exists).
    let config_path = dir.join("fieldseal.toml");
    if !config_path.exists() {
        std::fs::write(&config_path, RUNNER_CONFIG)?;
    }
    println!(
        "\nDone. Run it again to reuse the key and rows; delete {} to start over.",
        dir.display()
    );
    println!(
        "Rotation: cargo run -p fieldseal-cli -- --config {} plan",
        config_path.display()
    );
    Ok(())
}

/// `fieldseal.toml` for the rotation runner (the `fieldseal` command line, `fieldseal-cli`): where the
/// database and the root key are, and the recipe the code above uses to build
/// each value's context. Relative paths are relative to this file.
const RUNNER_CONFIG: &str = r#"# The rotation runner's configuration for the quickstart's database.
# fieldseal --config <this file> <command>   (cargo run -p fieldseal-cli -- …)

[database]
url = "sqlite://app.db"

[root_key]
id = "quickstart-root"
file = "root.key"

[[tables]]
table = "integrations"
key = "id"
key_type = "integer"
tenant_column = "tenant"
# The application builds Context::builder(tenant, "integrations", column).row(id):
# the default recipe (the SQL names, and the primary key as the row id).
columns = [
    { column = "refresh_token", form = "binary" },
    { column = "api_secret", form = "binary" },
]
"#;

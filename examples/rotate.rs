//! The rotation runner: moves every sealed value of the quickstart's
//! `integrations` table to its tenant's primary key, then (optionally) destroys
//! the key versions no row uses any more.
//!
//! ```sh
//! cargo run --example quickstart                      # creates the database
//! cargo run --example rotate -- --rotate --dry-run    # rotate, then count
//! cargo run --example rotate -- --workers 4           # re-seal
//! cargo run --example rotate -- --destroy-old         # re-seal, then destroy
//! ```
//!
//! - **Batched**: rows are read in pages of `--batch` (keyset pagination on id).
//! - **Idempotent and resumable**: a value is re-sealed only if its header names
//!   an older key version (checked without decrypting), so a second run, or a
//!   run after an interruption, only does what is left.
//! - **Safe with several workers**: `--workers N` splits rows by `id % N`, and
//!   each write is a compare-and-swap (`WHERE id = ? AND column = <old value>`),
//!   so runners on several machines, or the application writing at the same
//!   time, never lose a value: a changed row is skipped and counted.
//! - **Dry run**: `--dry-run` counts what would change and writes nothing.
//! - **Destroys only unused versions**: `--destroy-old` destroys an old version
//!   only when no row uses it, and refuses while the primary is younger than
//!   the cache time to live (other processes may still seal under the old key;
//!   `--ttl SECONDS` if they use another time to live than the default 300).
//! - A value that fails to open is reported and left as it was.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fieldseal::{Context, LocalKeyProvider, RootKey, SealedValue, Sealer, SqlKeyStore, Timestamp};
use sqlx::SqlitePool;

const COLUMNS: [&str; 2] = ["refresh_token", "api_secret"];
/// The sealer's default cache time to live, which bounds how long other
/// processes may keep sealing under a rotated-out key (`--ttl` to change).
const CACHE_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct Options {
    dir: Option<PathBuf>,
    tenant: Option<String>,
    rotate: bool,
    batch: i64,
    workers: i64,
    dry_run: bool,
    destroy_old: bool,
    ttl: Duration,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        batch: 500,
        workers: 2,
        ttl: CACHE_TTL,
        ..Options::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--dir" => o.dir = Some(PathBuf::from(value("--dir")?)),
            "--tenant" => o.tenant = Some(value("--tenant")?),
            "--batch" => {
                o.batch = value("--batch")?
                    .parse()
                    .map_err(|_| "--batch takes a number")?
            }
            "--workers" => {
                o.workers = value("--workers")?
                    .parse()
                    .map_err(|_| "--workers takes a number")?
            }
            "--ttl" => {
                o.ttl =
                    Duration::from_secs(value("--ttl")?.parse().map_err(|_| "--ttl takes seconds")?)
            }
            "--rotate" => o.rotate = true,
            "--dry-run" => o.dry_run = true,
            "--destroy-old" => o.destroy_old = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.batch < 1 || o.workers < 1 {
        return Err("--batch and --workers must be at least 1".into());
    }
    Ok(o)
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    scanned: u64,
    current: u64,
    resealed: u64,
    skipped: u64,
    failed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.scanned += o.scanned;
        self.current += o.current;
        self.resealed += o.resealed;
        self.skipped += o.skipped;
        self.failed += o.failed;
    }
}

/// One worker: every row of `tenant` with `id % workers == worker`.
async fn work(
    pool: SqlitePool,
    sealer: Sealer,
    tenant: String,
    primary: u32,
    worker: i64,
    o: &Options,
) -> Result<Counts, Box<dyn std::error::Error + Send + Sync>> {
    let mut counts = Counts::default();
    let mut after = i64::MIN;
    loop {
        let rows: Vec<(i64, Option<SealedValue>, Option<SealedValue>)> = sqlx::query_as(
            "SELECT id, refresh_token, api_secret FROM integrations
             WHERE tenant = ? AND id > ? AND id % ? = ? ORDER BY id LIMIT ?",
        )
        .bind(&tenant)
        .bind(after)
        .bind(o.workers)
        .bind(worker)
        .bind(o.batch)
        .fetch_all(&pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        for (id, token, secret) in rows {
            for (column, value) in COLUMNS.into_iter().zip([token, secret]) {
                let Some(value) = value else { continue };
                counts.scanned += 1;
                if value.key_version() == primary {
                    counts.current += 1;
                    continue;
                }
                if o.dry_run {
                    counts.resealed += 1;
                    continue;
                }
                let ctx = Context::builder(tenant.as_str(), "integrations", column)
                    .row(id)
                    .build()?;
                match sealer.reseal(&ctx, &value).await {
                    Ok(Some(new)) => {
                        let sql = format!(
                            "UPDATE integrations SET {column} = ? WHERE id = ? AND {column} = ?"
                        );
                        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(new)
                            .bind(id)
                            .bind(&value)
                            .execute(&pool)
                            .await?;
                        if done.rows_affected() == 1 {
                            counts.resealed += 1;
                        } else {
                            counts.skipped += 1;
                        }
                    }
                    Ok(None) => counts.current += 1,
                    Err(err) => {
                        eprintln!("   row {id} {column}: left as it was: {err}");
                        counts.failed += 1;
                    }
                }
            }
        }
        println!(
            "   {tenant} worker {worker}: {} scanned, {} re-sealed{}, {} changed meanwhile, {} failed",
            counts.scanned,
            counts.resealed,
            if o.dry_run {
                " (dry run: would be)"
            } else {
                ""
            },
            counts.skipped,
            counts.failed
        );
    }
    Ok(counts)
}

/// How many values of `tenant` each key version still seals.
async fn versions_in_use(
    pool: &SqlitePool,
    tenant: &str,
) -> Result<BTreeMap<u32, u64>, sqlx::Error> {
    let rows: Vec<(Option<SealedValue>, Option<SealedValue>)> =
        sqlx::query_as("SELECT refresh_token, api_secret FROM integrations WHERE tenant = ?")
            .bind(tenant)
            .fetch_all(pool)
            .await?;
    let mut in_use = BTreeMap::new();
    for value in rows.into_iter().flat_map(|(a, b)| [a, b]).flatten() {
        *in_use.entry(value.key_version()).or_insert(0) += 1;
    }
    Ok(in_use)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let o = options().map_err(|e| format!("{e}\nusage: rotate [--dir DIR] [--tenant T] [--rotate] [--batch N] [--workers N] [--dry-run] [--destroy-old] [--ttl SECONDS]"))?;
    let dir = o
        .dir
        .clone()
        .or_else(|| std::env::var_os("FIELDSEAL_QUICKSTART_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("fieldseal-quickstart"));
    let db = dir.join("app.db");
    if !db.exists() {
        return Err(format!(
            "{} not found: run `cargo run --example quickstart` first",
            db.display()
        )
        .into());
    }
    let pool = SqlitePool::connect(&format!("sqlite://{}", db.display())).await?;
    let store = SqlKeyStore::new(pool.clone());
    let provider =
        LocalKeyProvider::new("quickstart-root", RootKey::from_file(dir.join("root.key"))?)?;
    let sealer = Sealer::builder(provider, store).build();
    let admin = sealer.admin().actor("rotation-runner");

    let tenants: Vec<String> = match &o.tenant {
        Some(t) => vec![t.clone()],
        None => {
            sqlx::query_scalar("SELECT DISTINCT tenant FROM integrations ORDER BY tenant")
                .fetch_all(&pool)
                .await?
        }
    };
    for tenant in tenants {
        if o.rotate && !o.dry_run {
            let r = admin.rotate(&tenant).await?;
            println!(
                "{tenant}: rotated, key version {} -> {}",
                r.previous, r.primary
            );
        }
        let record = admin.describe(&tenant).await?;
        let primary = record.latest_version();
        println!("{tenant}: primary key version {primary}; re-sealing older values");

        let mut tasks = Vec::new();
        for worker in 0..o.workers {
            let (pool, sealer, tenant) = (pool.clone(), sealer.clone(), tenant.clone());
            let o = Options {
                dir: None,
                tenant: None,
                ..o
            };
            tasks.push(tokio::spawn(async move {
                work(pool, sealer, tenant, primary, worker, &o).await
            }));
        }
        let mut total = Counts::default();
        for task in tasks {
            total += task.await??;
        }
        println!(
            "{tenant}: {} values, {} already current, {} re-sealed{}, {} changed meanwhile (run again), {} failed",
            total.scanned,
            total.current,
            total.resealed,
            if o.dry_run {
                " (dry run: would be)"
            } else {
                ""
            },
            total.skipped,
            total.failed
        );

        let in_use = versions_in_use(&pool, &tenant).await?;
        println!("{tenant}: values per key version now: {in_use:?}");
        if o.destroy_old && !o.dry_run {
            let primary_age = Timestamp::now().unix_seconds()
                - record
                    .keys
                    .last()
                    .map_or(0, |k| k.created_at.unix_seconds());
            if primary_age < o.ttl.as_secs() as i64 {
                println!(
                    "{tenant}: not destroying anything yet: the primary is {primary_age}s old, and \
                     other processes may seal under the old key for up to {}s after a rotation \
                     (their cache time to live; set it with --ttl)",
                    o.ttl.as_secs()
                );
                continue;
            }
            for key in record.keys.iter().filter(|k| k.version < primary) {
                let unused = !in_use.contains_key(&key.version);
                let destroyed = key.wrapped.is_none();
                if unused && !destroyed {
                    admin.destroy_version(&tenant, key.version).await?;
                    println!(
                        "{tenant}: destroyed key version {} (no row uses it)",
                        key.version
                    );
                }
            }
        }
    }
    pool.close().await;
    Ok(())
}

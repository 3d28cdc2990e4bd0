//! `fieldseal`: the rotation runner. A command-line front end over
//! [`fieldseal::jobs::SealedColumns`] and [`fieldseal::KeyAdmin`] for the sealed
//! columns described in a `fieldseal.toml`, on PostgreSQL, MySQL/MariaDB or
//! SQLite.
//!
//! ```sh
//! fieldseal --config fieldseal.toml check
//! fieldseal verify                 # the recipes match the application
//! fieldseal rotate --all --older-than 90d
//! fieldseal reseal --workers 4
//! fieldseal retire
//! ```
//!
//! Install it with `cargo install --path fieldseal-cli` (SQLite, PostgreSQL and
//! MySQL/MariaDB; add `--features aws-kms,pkcs11,vault-transit` for root keys
//! in a KMS, an HSM or Transit), or run it from a checkout with
//! `cargo run -p fieldseal-cli -- …`.
//!
//! Exit codes, so that `rotate`, `reseal` and `retire` can run unattended:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done: something was changed, or (for `check`, `plan`, `verify`) all is well |
//! | 1 | failed: a value did not open, a job left rows undone, the database or the key provider failed |
//! | 2 | the command line or the configuration is wrong; nothing was written |
//! | 3 | nothing to do: every value already under its primary, no tenant due, no version to destroy |
//!
//! `docs/OPERATIONS.md` has the runbooks; the configuration's keys are
//! described in `Config` (see `config.rs`) and in the quickstart's
//! `fieldseal.toml`.

mod config;
mod keys;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fieldseal::{
    Error, ErrorKind, Sealer, SqlKeyStore,
    audit::ShredLedger,
    jobs::{JobOptions, SealedColumns},
    provider::KeyProvider,
    store::{KeyStore, SqlDatabase},
};
use serde_json::{Value, json};

use crate::config::Config;
use crate::keys::{bind_root, erasure_report, replay, retire_root, rewrap_root, rotate, shred};
use crate::output::{Bars, output_plan, output_retire, plan_json, retire_json};

/// Exit code: done.
const DONE: u8 = 0;

/// Exit code: failed.
const FAILED: u8 = 1;

/// Exit code: bad command line or configuration.
const USAGE: u8 = 2;

/// Exit code: nothing to do.
const NOTHING: u8 = 3;

/// Rotate tenant keys, re-seal, migrate, verify and retire the sealed columns
/// of a database.
#[derive(Clone, Debug, Parser)]
#[command(name = "rotate", version, about)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "FIELDSEAL_CONFIG",
        default_value = "fieldseal.toml"
    )]
    config: PathBuf,
    /// Print a machine-readable report on stdout at the end.
    #[arg(long, global = true)]
    json: bool,
    /// No progress on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More log lines on stderr (`-v` info, `-vv` debug). `RUST_LOG` overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Debug, Subcommand)]
enum Command {
    /// Check that the configured tables, columns and key columns exist.
    Check,
    /// Create a new primary key version for tenants.
    Rotate {
        /// A tenant to rotate (repeat for several).
        #[arg(long = "tenant", required_unless_present = "all")]
        tenants: Vec<String>,
        /// Every tenant (with `--older-than`: every tenant whose primary is
        /// older than that).
        #[arg(long, conflicts_with = "tenants")]
        all: bool,
        /// Only tenants whose primary version is older than this (`90d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Report what would be rotated; create nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Count values per tenant, column and key version, and estimate the
    /// jobs' durations. Changes nothing: the timed sample's writes are rolled
    /// back (triggers on the table do fire).
    Plan {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Re-seal every value that is not under its tenant's primary version.
    Reseal(JobArgs),
    /// Seal plaintext: from each column's `migrate_from` source column, or in
    /// place for columns with `migrate_in_place`. Creates the key store's
    /// tables and each tenant's first key if missing (a dry run creates
    /// nothing and writes nothing).
    Migrate(JobArgs),
    /// Open every value (or a sample) and list the rows that do not open.
    Verify {
        #[command(flatten)]
        job: JobArgs,
        /// Open a random sample of this many rows per table.
        #[arg(long)]
        sample: Option<u64>,
    },
    /// Destroy the key versions no configured row uses any more.
    Retire {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Destroy nothing until the primary is this old: the cache time to
        /// live of every process that seals (default: `sealer.cache_ttl` from
        /// the configuration, else 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        min_primary_age: Option<Duration>,
        /// Report what would be destroyed; destroy nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also raise each tenant's minimum decryption version to its lowest
        /// version left once every older one is destroyed, so that blind index
        /// searches stop there. Only with every sealed column and blind index
        /// of the tenants in the configuration.
        #[arg(long)]
        raise_minimum: bool,
    },
    /// Re-wrap every tenant key (and the audit key) under the current root
    /// key, until all are.
    RewrapRoot,
    /// Move a tenant onto the root key of its own that
    /// `[tenant_root_keys.<tenant>]` gives: record the binding, then
    /// re-wrap each of its keys under it. Exit 0 if it re-wrapped one, 3 if
    /// every key already was, 1 if some changed meanwhile (run again).
    BindRoot {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Start a new root-key epoch: create a new root key in the provider
    /// (a local key directory's next file, a new Transit key version), then
    /// re-wrap every key under it as `rewrap-root` does. Restart the
    /// application afterwards so it wraps under the new key.
    RotateRoot,
    /// When a shredded tenant becomes unrecoverable from every backup: the
    /// root keys that may have wrapped its keys, what became of each, and
    /// the date (OPERATIONS.md, "Root-key epochs").
    ErasureReport {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The backup retention `retire-root` runs with, to say when the
        /// root keys marked unused can be destroyed.
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<Duration>,
    },
    /// Retire old root keys: mark those no live key is wrapped under, and
    /// destroy in the provider those marked at least --retention ago (your
    /// backup retention). Exit 0 if it marked or destroyed one, 3 if not.
    RetireRoot {
        /// How long backups are kept: a root key is destroyed only once every
        /// backup that can hold a key wrapped under it has expired (at least
        /// one day).
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Duration,
    },
    /// Erase a tenant: destroy every key version, so its values never open
    /// (and append it to the `shred_ledger` file, if configured). After
    /// restoring the database from a backup, `shred --replay LEDGER` erases
    /// again every tenant the ledger says was shredded.
    Shred {
        /// The tenant to erase.
        #[arg(long, required_unless_present = "replay", conflicts_with = "replay")]
        tenant: Option<String>,
        /// Replay this shred ledger over a restored database.
        #[arg(long, value_name = "LEDGER")]
        replay: Option<PathBuf>,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Options of the jobs that go over rows.
#[derive(Clone, Debug, Args)]
struct JobArgs {
    /// Only this tenant's rows.
    #[arg(long)]
    tenant: Option<String>,
    /// Rows per transaction (default: `jobs.batch`, else 500).
    #[arg(long)]
    batch: Option<usize>,
    /// Workers in this process (default: `jobs.workers`, else 2).
    #[arg(long)]
    workers: Option<usize>,
    /// Rows per second this process may look at.
    #[arg(long)]
    max_rows_per_sec: Option<u64>,
    /// How long a range stays claimed without progress (default: `jobs.lease`,
    /// else 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    lease: Option<Duration>,
    /// Count and check; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Why the runner stops early.
/// The root key `rotate-root` created in this process: its re-wrap goes to
/// that key, never to another the key source still lists as current.
static NEW_ROOT_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

const NOT_YET_CURRENT: &str = "the key source does not list the new root key as current yet:";

enum Failure {
    /// The configuration or the command line (exit 2).
    Usage(String),
    /// Anything else (exit 1).
    Failed(String),
}

/// The error and its causes (a database's own message, for one).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Config { .. } => Failure::Usage(chain(&e)),
            _ if e.kind() == ErrorKind::Schema => Failure::Failed(format!(
                "{} (the runner's `migrate` command creates the key store's tables, with the \
                 tenants' first keys)",
                chain(&e)
            )),
            _ => Failure::Failed(chain(&e)),
        }
    }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

type Outcome = Result<u8, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let outcome = runtime.block_on(async {
        let code = run(&cli).await?;
        if !matches!(cli.command, Command::RotateRoot) {
            return Ok(code);
        }
        // The new root key exists: a provider built now wraps under it, so
        // the re-wrap runs as `rewrap-root` with the configuration read anew.
        // A backend that lists keys eventually (KMS aliases) may show the old
        // one as current for a moment: wait for the new one, a few times.
        let mut rewrap = cli.clone();
        rewrap.command = Command::RewrapRoot;
        for attempt in 1.. {
            match run(&rewrap).await {
                Err(Failure::Failed(message))
                    if message.starts_with(NOT_YET_CURRENT) && attempt < 6 =>
                {
                    tokio::time::sleep(std::time::Duration::from_secs(2 * attempt)).await;
                }
                other => return other,
            }
        }
        Ok(FAILED)
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(USAGE)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(FAILED)
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run(cli: &Cli) -> Outcome {
    let config = Config::load(&cli.config)?;
    let url = config.database_url()?;
    // Every root key is checked (and KMS keys resolved) before the database
    // is touched.
    let provider = config
        .provider()
        .await
        .map_err(|e| Failure::Usage(chain(e.as_ref())))?;
    let tenant_roots = config
        .tenant_providers()
        .await
        .map_err(|e| Failure::Usage(chain(e.as_ref())))?;
    let shown = redact(&url);
    match url.split_once(':').map(|(scheme, _)| scheme) {
        #[cfg(feature = "postgres")]
        Some("postgres" | "postgresql") => {
            probe::<sqlx::PgConnection>(&url, &shown).await?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(pool_size(cli, &config))
                .acquire_timeout(Duration::from_secs(10))
                .connect(&url)
                .await
                .map_err(|e| unreachable_db(&shown, &e))?;
            let mut store = prefixed(SqlKeyStore::new(pool.clone()), &config)?;
            if let Some(schema) = &config.key_store.schema {
                store = store.with_schema(schema)?;
            }
            let sealer = sealer(
                cli,
                &config,
                Arc::clone(&provider),
                &tenant_roots,
                store.clone(),
            )?;
            run_on(cli, &config, &provider, pool, sealer, || async move {
                store.migrate().await
            })
            .await
        }
        #[cfg(feature = "mysql")]
        Some("mysql" | "mariadb") => {
            let url = url.replacen("mariadb://", "mysql://", 1);
            probe::<sqlx::MySqlConnection>(&url, &shown).await?;
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(pool_size(cli, &config))
                .acquire_timeout(Duration::from_secs(10))
                .connect(&url)
                .await
                .map_err(|e| unreachable_db(&shown, &e))?;
            let store = prefixed(SqlKeyStore::new(pool.clone()), &config)?;
            no_schema(&config)?;
            let sealer = sealer(
                cli,
                &config,
                Arc::clone(&provider),
                &tenant_roots,
                store.clone(),
            )?;
            run_on(cli, &config, &provider, pool, sealer, || async move {
                store.migrate().await
            })
            .await
        }
        #[cfg(feature = "sqlite")]
        Some("sqlite") => {
            // Never create the database: a runner pointed at a wrong path
            // must fail, not report an empty database.
            let options: sqlx::sqlite::SqliteConnectOptions = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .map_err(|e| Failure::Usage(format!("database url {shown}: {e}")))?
                .create_if_missing(false)
                .busy_timeout(Duration::from_secs(30));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(pool_size(cli, &config))
                .connect_with(options)
                .await
                .map_err(|e| unreachable_db(&shown, &e))?;
            let store = prefixed(SqlKeyStore::new(pool.clone()), &config)?;
            no_schema(&config)?;
            let sealer = sealer(
                cli,
                &config,
                Arc::clone(&provider),
                &tenant_roots,
                store.clone(),
            )?;
            run_on(cli, &config, &provider, pool, sealer, || async move {
                store.migrate().await
            })
            .await
        }
        _ => Err(Failure::Usage(format!(
            "database url {shown}: use postgres://, mysql:// or sqlite:// (PostgreSQL and \
             MySQL need this example built with --features postgres or --features mysql)"
        ))),
    }
}

fn pool_size(cli: &Cli, config: &Config) -> u32 {
    let workers = match &cli.command {
        Command::Reseal(j) | Command::Migrate(j) | Command::Verify { job: j, .. } => j.workers,
        _ => None,
    }
    .or(config.jobs.workers)
    .unwrap_or(2);
    u32::try_from(workers).unwrap_or(u32::MAX).saturating_add(2)
}

/// One connection first: a pool that cannot connect reports only that it
/// timed out, while a connection says why (refused, unknown host, password).
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
async fn probe<C: sqlx::Connection>(url: &str, shown: &str) -> Result<(), Failure> {
    let connect = C::connect(url);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(unreachable_db(shown, &e)),
        Err(_) => Err(Failure::Failed(format!(
            "cannot connect to the database {shown}: no answer within 10 seconds"
        ))),
    }
}

fn unreachable_db(shown: &str, e: &sqlx::Error) -> Failure {
    Failure::Failed(format!("cannot connect to the database {shown}: {e}"))
}

/// The URL without its password (and without query parameters, which may
/// hold one).
fn redact(url: &str) -> String {
    const UNPRINTABLE: &str = "(the configured URL: it is not printed, because its password \
                               could not be told apart)";
    match url::Url::parse(url) {
        // A raw `#`, `/` or `?` in a password makes the parser end the
        // authority early; the rest would be printed as path or fragment.
        Ok(parsed) if url.contains('@') && parsed.username().is_empty() => UNPRINTABLE.into(),
        Ok(parsed) if parsed.path().contains('@') || parsed.fragment().is_some() => {
            UNPRINTABLE.into()
        }
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query().is_some() {
                parsed.set_query(Some("…"));
            }
            parsed.to_string()
        }
        Err(_) => UNPRINTABLE.into(),
    }
}

fn is_migrate(cli: &Cli) -> bool {
    matches!(cli.command, Command::Migrate(_))
}

fn prefixed<DB: SqlDatabase>(
    store: SqlKeyStore<DB>,
    config: &Config,
) -> Result<SqlKeyStore<DB>, Failure> {
    match &config.key_store.table_prefix {
        Some(prefix) => store
            .with_table_prefix(prefix)
            .map_err(|e| Failure::Usage(format!("key_store.table_prefix: {e}"))),
        None => Ok(store),
    }
}

#[cfg_attr(not(any(feature = "mysql", feature = "sqlite")), allow(dead_code))]
fn no_schema(config: &Config) -> Result<(), Failure> {
    if config.key_store.schema.is_some() || config.jobs.schema.is_some() {
        return Err(Failure::Usage(
            "key_store.schema and jobs.schema: only PostgreSQL has schemas; remove them"
                .to_string(),
        ));
    }
    Ok(())
}

fn cache_ttl(config: &Config) -> Duration {
    config.sealer.cache_ttl.unwrap_or(Duration::from_secs(300))
}

fn sealer(
    cli: &Cli,
    config: &Config,
    provider: Arc<dyn KeyProvider>,
    tenant_roots: &[(String, Arc<dyn KeyProvider>)],
    store: impl KeyStore + 'static,
) -> Result<Sealer, Failure> {
    let mut builder = Sealer::builder(provider, store);
    for (tenant, own) in tenant_roots {
        builder = builder
            .tenant_root_key(tenant, Arc::clone(own))
            .map_err(|e| Failure::Usage(format!("tenant_root_keys.{tenant}: {e}")))?;
    }
    let builder = builder
        .algorithm(config.algorithm())
        .cache_ttl(cache_ttl(config))
        // Only `migrate` gives a tenant its first key: every other command
        // works on tenants that already have one.
        .create_tenants_on_first_use(is_migrate(cli));
    Ok(match &config.shred_ledger {
        Some(path) => builder.shred_ledger(ShredLedger::new(config.resolve(path))),
        None => builder,
    }
    .build())
}

/// Runs the command. `migrate_store` creates the key store's tables; only the
/// `migrate` command calls it.
async fn run_on<DB: SqlDatabase, F: Future<Output = fieldseal::Result<()>>>(
    cli: &Cli,
    config: &Config,
    provider: &Arc<dyn KeyProvider>,
    pool: sqlx::Pool<DB>,
    sealer: Sealer,
    migrate_store: impl FnOnce() -> F,
) -> Outcome {
    let cache_ttl = cache_ttl(config);
    match &cli.command {
        Command::Rotate {
            tenants,
            all,
            older_than,
            dry_run,
        } => return rotate(cli, &sealer, tenants, *all, *older_than, *dry_run).await,
        Command::RewrapRoot => {
            let current = provider.current_root_key_id();
            if let Some(created) = NEW_ROOT_KEY.get()
                && created != current
            {
                return Err(Failure::Failed(format!(
                    "{NOT_YET_CURRENT} {created} (a provider built now still takes {current} as \
                     current); run rewrap-root once the key source lists it"
                )));
            }
            return rewrap_root(cli, &sealer, current).await;
        }
        Command::RotateRoot => {
            let id = sealer
                .admin()
                .actor("rotate rotate-root (command line)")
                .create_root_key()
                .await?;
            let _ = NEW_ROOT_KEY.set(id.clone());
            if !cli.quiet {
                eprintln!("root key {id} created for a new epoch; re-wrapping every key under it");
            }
            return Ok(DONE);
        }
        Command::RetireRoot { retention } => return retire_root(cli, &sealer, *retention).await,
        Command::BindRoot { tenant } => return bind_root(cli, &sealer, tenant).await,
        Command::ErasureReport { tenant, retention } => {
            return erasure_report(cli, &sealer, tenant, *retention).await;
        }
        Command::Shred {
            tenant: Some(tenant),
            yes,
            ..
        } => return shred(cli, &sealer, tenant, *yes, config.shred_ledger.is_some()).await,
        Command::Shred {
            replay: Some(ledger),
            yes,
            ..
        } => return replay(cli, &sealer, ledger, *yes).await,
        _ => {}
    }

    let admin = sealer.admin().actor("rotate check (command line)");
    let mut columns = SealedColumns::new(pool, sealer, config.tables()?)?;
    if config.jobs.table_prefix.is_some() || config.jobs.schema.is_some() {
        let prefix = config.jobs.table_prefix.as_deref().unwrap_or("fieldseal_");
        columns = columns.with_job_tables(prefix, config.jobs.schema.as_deref())?;
    }
    columns.check().await?;
    if matches!(&cli.command, Command::Migrate(args) if !args.dry_run) {
        // Only once the configuration, the root key and the tables are known
        // good: a refused command writes nothing, nor does a dry run.
        migrate_store().await?;
    }
    let progress: Arc<dyn fieldseal::jobs::Progress> = Arc::new(Bars::new(cli.quiet));

    match &cli.command {
        Command::Check => {
            // The root keys must unwrap what the store holds: a key file with
            // another key under the right id fails here, not in a job.
            let (roots, unproven) = match admin.verify_root_keys().await {
                Ok(check) => (Some(check.keys_per_root), check.own_roots_unproven),
                Err(e) if e.kind() == ErrorKind::Schema => (None, Default::default()),
                Err(e) => return Err(e.into()),
            };
            for (root, why) in &unproven {
                eprintln!("warning: root key {root} not proven: {why}");
            }
            emit(
                cli,
                json!({
                    "command": "check",
                    "ok": true,
                    "keys_per_root": roots,
                    "own_roots_unproven": unproven,
                }),
                || {
                    println!("the configured tables, columns and keys exist");
                    match &roots {
                        None => println!(
                            "the key store has no tables yet (`migrate` creates them): no \
                             wrapped key to prove the root key against"
                        ),
                        Some(roots) if roots.is_empty() => {
                            println!("the key store holds no wrapped key yet");
                        }
                        Some(roots) => {
                            for (root, n) in roots {
                                if unproven.contains_key(root) {
                                    println!("root key {root}: {n} stored keys, not proven");
                                    continue;
                                }
                                println!(
                                    "root key {root} unwraps the {n} stored keys wrapped under it \
                                     (one unwrapped to prove it)"
                                );
                            }
                        }
                    }
                },
            );
            Ok(DONE)
        }
        Command::Plan { tenant } => {
            let mut options = JobOptions::default();
            options.tenant = tenant.clone();
            let plan = columns.plan(&options).await?;
            emit(cli, plan_json(&plan), || output_plan(&plan));
            Ok(DONE)
        }
        Command::Reseal(args) => {
            let report = columns
                .reseal(&job_options(config, args, &progress))
                .await?;
            finish_job(cli, "reseal", "re-sealed", &report)
        }
        Command::Migrate(args) => {
            let report = columns
                .migrate(&job_options(config, args, &progress))
                .await?;
            finish_job(cli, "migrate", "sealed", &report)
        }
        Command::Verify { job, sample } => {
            let mut options = job_options(config, job, &progress);
            options.sample = *sample;
            let report = columns.verify(&options).await?;
            let failed = report.totals().failed;
            emit(
                cli,
                json!({ "command": "verify", "report": output::job_json(&report) }),
                || output::print_verify(&report),
            );
            Ok(if failed == 0 { DONE } else { FAILED })
        }
        Command::Retire {
            tenant,
            min_primary_age,
            dry_run,
            raise_minimum,
        } => {
            let mut options = JobOptions::default();
            options.tenant = tenant.clone();
            options.dry_run = *dry_run;
            options.raise_min_decryption_version = *raise_minimum;
            options.min_primary_age = min_primary_age.unwrap_or(cache_ttl);
            let report = columns.retire(&options).await?;
            emit(cli, retire_json(&report), || output_retire(&report));
            let unreadable = report.tenants.values().any(|t| !t.unreadable.is_empty());
            let destroyed = report.tenants.values().any(|t| !t.destroyed.is_empty());
            Ok(if unreadable {
                FAILED
            } else if destroyed {
                DONE
            } else {
                NOTHING
            })
        }
        Command::Rotate { .. }
        | Command::RewrapRoot
        | Command::RotateRoot
        | Command::RetireRoot { .. }
        | Command::BindRoot { .. }
        | Command::ErasureReport { .. }
        | Command::Shred { .. } => Ok(DONE),
    }
}

fn job_options(
    config: &Config,
    args: &JobArgs,
    progress: &Arc<dyn fieldseal::jobs::Progress>,
) -> JobOptions {
    let mut options = JobOptions::default();
    options.tenant = args.tenant.clone();
    options.batch = args.batch.or(config.jobs.batch).unwrap_or(options.batch);
    options.workers = args
        .workers
        .or(config.jobs.workers)
        .unwrap_or(options.workers);
    options.max_rows_per_sec = args.max_rows_per_sec;
    options.dry_run = args.dry_run;
    options.lease = args.lease.or(config.jobs.lease).unwrap_or(options.lease);
    options.progress = Some(Arc::clone(progress));
    options
}

/// Prints `value` as JSON with `--json`, else runs `lines`.
fn emit(cli: &Cli, value: Value, lines: impl FnOnce()) {
    if cli.json {
        println!("{value:#}");
    } else {
        lines();
    }
}

/// Failed values. Those of shredded tenants are not among them: erased on
/// purpose, they are counted apart (`shredded`) by every command, and must not
/// turn every scheduled run red.
fn real_failures(report: &fieldseal::jobs::JobReport) -> u64 {
    report.totals().failed
}

fn finish_job(
    cli: &Cli,
    command: &str,
    verb: &str,
    report: &fieldseal::jobs::JobReport,
) -> Outcome {
    emit(
        cli,
        json!({ "command": command, "report": output::job_json(report) }),
        || output::print_job(verb, report),
    );
    let totals = report.totals();
    let complete = report.tables.iter().all(|t| t.complete || report.dry_run);
    Ok(if real_failures(report) > 0 || !complete {
        FAILED
    } else if totals.written == 0 {
        NOTHING
    } else {
        DONE
    })
}

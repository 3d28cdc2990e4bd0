//! The `fieldseal` command line as an operator runs it: a
//! `fieldseal.toml`, a database, and exit codes.
//!
//! - the unattended schedule (`rotate`, `reseal`, `retire`) on SQLite, with
//!   its "done", "nothing to do" and "failed" exit codes and `--json`;
//! - bad input, each refused with a message, a non-zero exit, and nothing
//!   written;
//! - `kill -9` of the runner at random moments of a `reseal` on PostgreSQL,
//!   rerun after each, then to completion (`FIELDSEAL_KILL_ROWS` rows, 50,000
//!   by default).

#[path = "../../tests/common/db.rs"]
mod db;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fieldseal::secrecy::ExposeSecret;
use fieldseal::{Context, LocalKeyProvider, RootKey, SealedValue, Sealer, SqlKeyStore};
use sha2::{Digest, Sha256};
use sqlx::{Row, SqlitePool};

/// Exit codes of the runner.
const DONE: i32 = 0;
const FAILED: i32 = 1;
const USAGE: i32 = 2;
const NOTHING: i32 = 3;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// The runner's executable, which cargo builds for these tests.
fn runner() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fieldseal"))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(config: &Path, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(runner())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("FIELDSEAL_CONFIG")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    eprintln!(
        "$ rotate {}\n  exit {}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    let mut log = OUTPUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    log.push_str(&run.stdout);
    log.push_str(&run.stderr);
    run
}

/// Everything every run of this test process printed.
static OUTPUT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn plaintext(id: i64, column: &str) -> Vec<u8> {
    format!("{column}-of-row-{id}-{}", "x".repeat((id % 97) as usize)).into_bytes()
}

fn tenant_of(id: i64) -> &'static str {
    TENANTS[(id % 3) as usize]
}

fn ctx(id: i64, column: &str) -> Context {
    Context::builder(tenant_of(id), "integrations", column)
        .row(id)
        .build()
        .unwrap()
}

const CONFIG: &str = r#"
[database]
url = "sqlite://app.db"

[root_key]
id = "cli-root"
file = "root.key"

[[tables]]
table = "integrations"
key = "id"
key_type = "integer"
tenant_column = "tenant"
columns = [
    { column = "refresh_token", form = "binary" },
    { column = "api_secret", form = "text" },
]
"#;

/// A SQLite application database with `rows` sealed rows, its root key file
/// and its `fieldseal.toml`.
struct App {
    dir: tempfile::TempDir,
    pool: SqlitePool,
    sealer: Sealer,
}

impl App {
    async fn new(rows: i64) -> App {
        let dir = tempfile::tempdir().unwrap();
        let key = RootKey::create_file(dir.path().join("root.key")).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
        let pool = SqlitePool::connect(&url).await.unwrap();
        let store = SqlKeyStore::new(pool.clone());
        store.migrate().await.unwrap();
        sqlx::query(
            "CREATE TABLE integrations (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, \
             refresh_token BLOB, api_secret TEXT)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let sealer = Sealer::builder(LocalKeyProvider::new("cli-root", key).unwrap(), store)
            .cache_ttl(Duration::from_millis(1))
            .build();
        for id in 0..rows {
            let token = sealer
                .seal(&ctx(id, "refresh_token"), &plaintext(id, "refresh_token"))
                .await
                .unwrap();
            let secret = sealer
                .seal(&ctx(id, "api_secret"), &plaintext(id, "api_secret"))
                .await
                .unwrap();
            sqlx::query("INSERT INTO integrations VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(tenant_of(id))
                .bind(token.as_bytes())
                .bind(if id % 10 == 0 {
                    None
                } else {
                    Some(secret.to_text())
                })
                .execute(&pool)
                .await
                .unwrap();
        }
        let app = App { dir, pool, sealer };
        app.write_config(CONFIG);
        app
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("fieldseal.toml")
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        run(&self.config(), args)
    }

    /// Every application row and key-store row (each prefixed with its
    /// table), to prove a refused command wrote nothing to either. (The job
    /// tables do record a refused job's run.)
    async fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sql in [
            "SELECT 'integrations', id, tenant, hex(refresh_token), api_secret FROM integrations \
             ORDER BY id",
            "SELECT 'keys', tenant, version, state, hex(wrapped) FROM fieldseal_keys \
             ORDER BY tenant, version",
        ] {
            for row in sqlx::query(sql).fetch_all(&self.pool).await.unwrap() {
                let cells: Vec<String> = (0..row.len())
                    .map(|i| {
                        row.try_get::<Option<String>, _>(i)
                            .map(|v| v.unwrap_or_default())
                            .or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string()))
                            .unwrap()
                    })
                    .collect();
                out.push(cells.join("|"));
            }
        }
        out
    }

    /// Opens every row with the application's own contexts; returns the key
    /// versions found.
    async fn check_all_open(&self) -> std::collections::BTreeSet<u32> {
        let mut versions = std::collections::BTreeSet::new();
        let rows: Vec<(i64, Vec<u8>, Option<String>)> =
            sqlx::query_as("SELECT id, refresh_token, api_secret FROM integrations ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .unwrap();
        for (id, token, secret) in rows {
            let token = SealedValue::from_bytes(token).unwrap();
            versions.insert(token.key_version());
            let opened = self
                .sealer
                .open(&ctx(id, "refresh_token"), &token)
                .await
                .unwrap();
            assert_eq!(
                opened.plaintext().expose_secret(),
                plaintext(id, "refresh_token").as_slice()
            );
            if let Some(secret) = secret {
                let secret = SealedValue::from_text(&secret).unwrap();
                versions.insert(secret.key_version());
                let opened = self
                    .sealer
                    .open(&ctx(id, "api_secret"), &secret)
                    .await
                    .unwrap();
                assert_eq!(
                    opened.plaintext().expose_secret(),
                    plaintext(id, "api_secret").as_slice()
                );
            }
        }
        versions
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unattended_schedule_tells_done_nothing_to_do_and_failed_apart() {
    let app = App::new(120).await;

    let r = app.run(&["check"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    let r = app.run(&["verify"]);
    assert_eq!(r.code, DONE);
    assert!(
        r.stdout
            .contains("240 values, 228 opened, 0 failed, 12 NULL"),
        "{}",
        r.stdout
    );

    // The cron line: rotate what is due, re-seal, retire.
    let r = app.run(&["rotate", "--all", "--older-than", "90d"]);
    assert_eq!(r.code, NOTHING, "nothing is 90 days old");
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, NOTHING, "every value is under its primary");
    assert!(
        job_rows(&app.pool).await.is_empty(),
        "a run with nothing to do recorded a job"
    );
    let r = app.run(&["retire", "--min-primary-age", "0s"]);
    assert_eq!(r.code, NOTHING, "no version to destroy");

    let r = app.run(&["rotate", "--all", "--dry-run"]);
    assert_eq!(r.code, DONE);
    assert!(r.stdout.contains("acme: would rotate primary version 1"));
    // Every primary is now over a second old: due under --older-than 1s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = app.run(&["--json", "rotate", "--all", "--older-than", "1s"]);
    assert_eq!(r.code, DONE);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["tenants"].as_array().unwrap().len(), 3);
    assert!(
        report["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["rotated"] == true && t["primary"] == 2)
    );

    let r = app.run(&["--json", "plan"]);
    assert_eq!(r.code, DONE);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["not_primary"], 228);

    // Retiring before re-sealing keeps version 1: rows use it.
    let r = app.run(&["retire", "--min-primary-age", "0s"]);
    assert_eq!(r.code, NOTHING);
    assert!(r.stdout.contains("kept key version 1"), "{}", r.stdout);

    let r = app.run(&["--json", "reseal", "--workers", "3", "--batch", "7"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let table = &report["report"]["tables"][0];
    assert_eq!(table["written"], 228);
    assert_eq!(table["complete"], true);
    assert_eq!(app.check_all_open().await, [2].into());

    let r = app.run(&["reseal"]);
    assert_eq!(r.code, NOTHING);
    // The primary is younger than the default cache time to live.
    let r = app.run(&["retire"]);
    assert_eq!(r.code, NOTHING);
    assert!(r.stdout.contains("younger than the cache time to live"));
    let r = app.run(&["retire", "--min-primary-age", "0s"]);
    assert_eq!(r.code, DONE);
    assert!(r.stdout.contains("acme: destroyed key version 1"));
    let r = app.run(&["retire", "--min-primary-age", "0s"]);
    assert_eq!(r.code, NOTHING);
    let r = app.run(&["verify", "--sample", "20"]);
    assert_eq!(r.code, DONE);

    // No run printed a secret (nor a prefix of one).
    let printed = OUTPUT.lock().unwrap().clone();
    assert!(printed.contains("acme"), "the log is collected");
    for id in 0..120 {
        for column in ["refresh_token", "api_secret"] {
            let p = String::from_utf8(plaintext(id, column)).unwrap();
            assert!(!printed.contains(&p[..p.len().min(20)]), "{p} was printed");
        }
    }

    // Erasing a tenant: refused without --yes, then every acme row fails to
    // open, and verify says so with the row ids.
    let r = app.run(&["shred", "--tenant", "acme"]);
    assert_eq!(r.code, USAGE);
    assert!(r.stderr.contains("--yes"));
    let r = app.run(&["shred", "--tenant", "acme", "--yes"]);
    assert_eq!(r.code, DONE);
    // Its 76 values (40 tokens, 36 secrets) are counted apart, the same by
    // plan, verify and reseal: erased on purpose, not failures.
    let r = app.run(&["--json", "plan"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["not_primary"], 0, "{}", r.stdout);
    assert!(
        plan["columns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["tenant"] == "acme")
            .all(|c| c["shredded"] == true)
    );
    let r = app.run(&["verify"]);
    assert_eq!(r.code, DONE, "{}", r.stdout);
    assert!(
        r.stdout.contains("76 values of shredded tenants"),
        "{}",
        r.stdout
    );
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, NOTHING, "{}", r.stdout);
    assert!(
        r.stdout.contains("76 values of shredded tenants"),
        "{}",
        r.stdout
    );
}

/// Job runs recorded in the application's database.
async fn job_rows(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar("SELECT id || ' run ' || run FROM fieldseal_jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

/// A first look at a database that has never seen fieldseal: `plan` needs no
/// key store and no earlier dry run, a dry run creates nothing, and runs
/// with nothing to do record no job.
#[tokio::test(flavor = "multi_thread")]
async fn plan_and_dry_runs_need_nothing_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    RootKey::create_file(dir.path().join("root.key")).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let pool = SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE integrations (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, \
         token_plain TEXT, refresh_token BLOB)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for id in 0..30i64 {
        sqlx::query("INSERT INTO integrations (id, tenant, token_plain) VALUES (?, ?, ?)")
            .bind(id)
            .bind(tenant_of(id))
            .bind(format!("plain-token-{id}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    let config = dir.path().join("fieldseal.toml");
    std::fs::write(
        &config,
        CONFIG.replace(
            "columns = [\n    { column = \"refresh_token\", form = \"binary\" },\n    \
             { column = \"api_secret\", form = \"text\" },\n]",
            "columns = [{ column = \"refresh_token\", form = \"binary\", migrate_from = \"token_plain\" }]",
        ),
    )
    .unwrap();
    let tables = || async {
        sqlx::query_scalar::<_, String>("SELECT name FROM sqlite_master ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let before = tables().await;
    let r = run(&config, &["plan"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    assert!(r.stdout.contains("migrate would seal 30"), "{}", r.stdout);
    let r = run(&config, &["migrate", "--dry-run"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    assert!(
        r.stdout.contains("30 sealed (dry run: would be)"),
        "{}",
        r.stdout
    );
    assert_eq!(tables().await, before, "a plan or a dry run created tables");
    let sealed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM integrations WHERE refresh_token IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(sealed, 0);

    let r = run(&config, &["migrate"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    assert_eq!(job_rows(&pool).await, vec!["migrate:integrations:* run 1"]);
    // Nothing left: exit 3, and no new job run.
    let r = run(&config, &["migrate"]);
    assert_eq!(r.code, NOTHING, "{}", r.stdout);
    let r = run(&config, &["reseal"]);
    assert_eq!(r.code, NOTHING, "{}", r.stdout);
    assert_eq!(job_rows(&pool).await, vec!["migrate:integrations:* run 1"]);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_a_message_and_nothing_written() {
    let app = App::new(30).await;
    // Give reseal something to do, so that "nothing written" means something.
    for t in TENANTS {
        app.sealer.admin().rotate(t).await.unwrap();
    }
    let before = app.snapshot().await;
    let unchanged = |what: &str, after: Vec<String>| {
        assert_eq!(before, after, "{what} wrote something");
    };

    // A malformed configuration names the key and the fix.
    app.write_config(&CONFIG.replace(r#"form = "text""#, r#"form = "txt""#));
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, USAGE);
    assert!(
        r.stderr.contains("tables[0].columns[1].form"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("binary") && r.stderr.contains("text"),
        "{}",
        r.stderr
    );
    unchanged("a malformed config", app.snapshot().await);

    app.write_config(&CONFIG.replace("key = \"id\"", "key = [\"tenant\", \"id\"]"));
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, USAGE);
    assert!(
        r.stderr.contains("tables[0].key: composite primary keys"),
        "{}",
        r.stderr
    );

    app.write_config(&CONFIG.replace("[database]", "[databse]"));
    let r = app.run(&["check"]);
    assert_eq!(r.code, USAGE);
    assert!(r.stderr.contains("databse"), "{}", r.stderr);

    // An unknown table, an unknown column.
    app.write_config(&CONFIG.replace("table = \"integrations\"", "table = \"integratons\""));
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, USAGE);
    assert!(r.stderr.contains("integratons"), "{}", r.stderr);
    unchanged("an unknown table", app.snapshot().await);

    app.write_config(&CONFIG.replace("\"api_secret\"", "\"api_secrets\""));
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, USAGE);
    assert!(r.stderr.contains("api_secrets"), "{}", r.stderr);
    unchanged("an unknown column", app.snapshot().await);

    // Migration reads plaintext from text columns only: a BLOB source is
    // refused before anything is created.
    app.write_config(&CONFIG.replace(
        "{ column = \"api_secret\", form = \"text\" }",
        "{ column = \"api_secret\", form = \"text\", migrate_from = \"refresh_token\" }",
    ));
    let r = app.run(&["migrate"]);
    assert_eq!(r.code, USAGE);
    assert!(
        r.stderr.contains("tables[0].columns[1].migrate_from"),
        "{}",
        r.stderr
    );
    unchanged("a migration from a binary column", app.snapshot().await);

    // An unreachable database, whose password never appears.
    app.write_config(&CONFIG.replace(
        "sqlite://app.db",
        "postgres://app:hunter2-secret@127.0.0.1:1/app",
    ));
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, FAILED);
    assert!(
        r.stderr.contains("cannot connect to the database"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("hunter2") && !r.stdout.contains("hunter2"));
    assert!(r.stderr.contains("app:***@127.0.0.1:1"), "{}", r.stderr);

    // A database file that does not exist is not created.
    app.write_config(&CONFIG.replace("sqlite://app.db", "sqlite://missing.db"));
    let r = app.run(&["check"]);
    assert_eq!(r.code, FAILED);
    assert!(!app.dir.path().join("missing.db").exists());

    // Root keys from two sources at once, or from a PKCS#11 module that does
    // not load: refused before the database is touched.
    app.write_config(&CONFIG.replace(
        "file = \"root.key\"",
        "file = \"root.key\"\nkms_key = \"alias/fieldseal-root\"",
    ));
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, USAGE);
    assert!(
        r.stderr.contains("root_key: give exactly one key source"),
        "{}",
        r.stderr
    );
    if cfg!(feature = "pkcs11") {
        app.write_config(&CONFIG.replace(
            "[root_key]\nid = \"cli-root\"\nfile = \"root.key\"",
            "[root_key]\npkcs11_module = \"/nonexistent/libpkcs11.so\"\npkcs11_token = \"t\"\n\
             pkcs11_key = \"k\"\npkcs11_pin_env = \"FIELDSEAL_TEST_SURELY_UNSET_PIN\"\n\
             [[root_key.previous]]\nid = \"cli-root\"\nfile = \"root.key\"",
        ));
        let r = app.run(&["rewrap-root"]);
        assert_eq!(r.code, USAGE);
        assert!(r.stderr.contains("root_key: "), "{}", r.stderr);
        assert!(
            r.stderr.contains("FIELDSEAL_TEST_SURELY_UNSET_PIN"),
            "{}",
            r.stderr
        );
    }
    unchanged(
        "a root key configuration that does not load",
        app.snapshot().await,
    );

    // A wrong root key (same id, other key): nothing opens, nothing is
    // written, no version is created.
    RootKey::create_file(app.dir.path().join("other.key")).unwrap();
    app.write_config(&CONFIG.replace("file = \"root.key\"", "file = \"other.key\""));
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, FAILED);
    assert!(
        r.stdout.contains("unwrap_failed") || r.stderr.contains("unwrap"),
        "{}",
        r.stdout
    );
    let r = app.run(&["rotate", "--all"]);
    assert_eq!(r.code, FAILED);
    // `check` proves the root key against a stored key; `rewrap-root` does
    // not take "already under cli-root" for an answer.
    let r = app.run(&["check"]);
    assert_eq!(r.code, FAILED, "{}", r.stdout);
    assert!(r.stderr.contains("root key `cli-root`"), "{}", r.stderr);
    assert!(r.stderr.contains("unwrap"), "{}", r.stderr);
    let r = app.run(&["rewrap-root"]);
    assert_eq!(r.code, FAILED, "{}", r.stdout);
    assert!(r.stderr.contains("unwrap"), "{}", r.stderr);
    unchanged("a wrong root key", app.snapshot().await);
    app.write_config(CONFIG);
    let r = app.run(&["check"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("root key cli-root unwraps the 7 stored keys wrapped under it"),
        "{}",
        r.stdout
    );

    // Migrating in place under a recipe the column's sealed values do not
    // open under would seal values the application cannot open: refused.
    app.write_config(&CONFIG.replace(
        "{ column = \"api_secret\", form = \"text\" }",
        "{ column = \"api_secret\", form = \"text\", migrate_in_place = true, \
         table_label = \"integration\" }",
    ));
    let r = app.run(&["migrate"]);
    assert_eq!(r.code, USAGE, "{}", r.stdout);
    assert!(r.stderr.contains("do not open"), "{}", r.stderr);
    unchanged("a migration under a wrong recipe", app.snapshot().await);

    // A context recipe that is not the application's: verify names the rows,
    // reseal refuses to write what it could not open.
    app.write_config(&CONFIG.replace(
        "{ column = \"refresh_token\", form = \"binary\" }",
        "{ column = \"refresh_token\", form = \"binary\", table_label = \"integration\" }",
    ));
    let r = app.run(&["verify"]);
    assert_eq!(r.code, FAILED);
    assert!(r.stdout.contains("30 failed"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("integrations.refresh_token key 0: open_failed"),
        "{}",
        r.stdout
    );
    let r = app.run(&["reseal"]);
    assert_eq!(r.code, FAILED);
    let after = app.snapshot().await;
    // api_secret (whose recipe is right) was re-sealed; refresh_token was not.
    let cells = |rows: &[String], n: usize| -> Vec<String> {
        rows.iter()
            .filter(|r| r.starts_with("integrations|"))
            .map(|r| r.split('|').nth(n).unwrap().to_string())
            .collect()
    };
    assert_eq!(cells(&before, 3).len(), 30);
    assert_eq!(
        cells(&before, 3),
        cells(&after, 3),
        "a value that did not open was written"
    );
    let resealed = cells(&before, 4)
        .iter()
        .zip(cells(&after, 4))
        .filter(|(b, a)| !b.is_empty() && **b != *a)
        .count();
    assert_eq!(
        resealed, 27,
        "api_secret values (3 of 30 are NULL) were re-sealed"
    );

    // Usage errors.
    app.write_config(CONFIG);
    let r = app.run(&["rotate"]);
    assert_eq!(r.code, USAGE, "rotate needs --tenant or --all");
    let r = app.run(&["reseal", "--batch", "0"]);
    assert_eq!(r.code, USAGE);
    let r = run(&app.dir.path().join("nowhere.toml"), &["check"]);
    assert_eq!(r.code, USAGE);
    assert!(r.stderr.contains("nowhere.toml"));
}

/// `kill -9` of the runner at random moments of a `reseal` on PostgreSQL,
/// rerun after each, then to completion.
#[tokio::test(flavor = "multi_thread")]
async fn reseal_survives_kill_9_on_postgres() {
    db::with_postgres(|pool, store| async move {
        let rows: i64 = std::env::var("FIELDSEAL_KILL_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50_000);
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = RootKey::create_file(dir.path().join("root.key")).unwrap();
        let sealer = Sealer::builder(LocalKeyProvider::new("cli-root", key).unwrap(), store)
            .cache_ttl(Duration::from_millis(1))
            .build();
        sqlx::query(
            "CREATE TABLE integrations (id BIGINT PRIMARY KEY, tenant TEXT NOT NULL, \
             refresh_token BYTEA NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let mut digests = Vec::with_capacity(rows as usize);
        let mut handles = Vec::new();
        for t in TENANTS {
            handles.push(sealer.tenant(t).await.unwrap());
        }
        for chunk in (0..rows).collect::<Vec<_>>().chunks(1000) {
            let (mut ids, mut tenants, mut values) = (Vec::new(), Vec::new(), Vec::new());
            for &id in chunk {
                let p = plaintext(id, "refresh_token");
                digests.push(Sha256::digest(&p));
                let sealed = handles[(id % 3) as usize]
                    .seal(&ctx(id, "refresh_token"), &p)
                    .unwrap();
                ids.push(id);
                tenants.push(tenant_of(id).to_string());
                values.push(sealed.as_bytes().to_vec());
            }
            sqlx::query(
                "INSERT INTO integrations SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bytea[])",
            )
            .bind(&ids)
            .bind(&tenants)
            .bind(&values)
            .execute(&pool)
            .await
            .unwrap();
        }
        for t in TENANTS {
            sealer.admin().rotate(t).await.unwrap();
        }
        let url = std::env::var(db::POSTGRES_URL).unwrap();
        let config = dir.path().join("fieldseal.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[database]
url = "{url}"

[root_key]
id = "cli-root"
file = "root.key"

[key_store]
schema = "{schema}"

[jobs]
schema = "{schema}"
lease = "2s"

[[tables]]
table = "{schema}.integrations"
key = "id"
key_type = "integer"
tenant_column = "tenant"
columns = [{{ column = "refresh_token", form = "binary" }}]
"#
            ),
        )
        .unwrap();
        let under_primary = || async {
            // Bytes 2..6 of a sealed value are its key version.
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM integrations WHERE substring(refresh_token from 3 for 4) = \
                 '\\x00000002'::bytea",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        };

        // Kill at random moments; each rerun resumes. Three of the five
        // kills come within 100 ms of the run's first committed batch (a kill
        // mid-job, however slow the machine is to start the runner); the
        // other two at any moment of its first half second (start-up, job
        // creation, waiting for the killed workers' leases).
        let mut kills = 0;
        let mut attempts = 0;
        let mut last = under_primary().await;
        assert_eq!(last, 0);
        let mut mid_job = 0;
        while kills < 5 {
            attempts += 1;
            assert!(attempts < 40, "the runner kept finishing before it could be killed");
            let mut child = Command::new(runner())
                .args(["--config"])
                .arg(&config)
                .args(["--quiet", "reseal", "--workers", "2", "--batch", "250"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            if kills == 1 || kills == 3 {
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 500)).await;
            } else {
                while child.try_wait().unwrap().is_none() && under_primary().await <= last {
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "the runner committed nothing in 120 s"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 100)).await;
            }
            let wait = started.elapsed();
            if let Some(status) = child.try_wait().unwrap() {
                // It ended before the kill: it must not have failed, and must
                // not have finished the job (the test needs five kills).
                assert!(
                    status.success() || status.code() == Some(NOTHING),
                    "the runner failed: {status}"
                );
                last = under_primary().await;
                assert!(
                    last < rows,
                    "the job completed within {:?} before five kills",
                    started.elapsed()
                );
                continue;
            }
            child.kill().unwrap(); // SIGKILL on Unix
            let status = child.wait().unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt as _;
                if status.signal() != Some(9) {
                    // It exited between try_wait and kill: not a kill.
                    assert!(status.success(), "the runner failed: {status}");
                    last = under_primary().await;
                    continue;
                }
            }
            kills += 1;
            // Mid-job: this run had committed rows, and rows were left.
            let now = under_primary().await;
            if last < now && now < rows {
                mid_job += 1;
            }
            eprintln!("kill {kills} after {wait:?}: {now} of {rows} rows under the primary");
            last = now;
        }
        assert!(last < rows, "the job finished before the last kill");
        assert!(
            mid_job >= 3,
            "only {mid_job} kills landed after their run had committed rows"
        );

        // Then to completion (it waits for the killed workers' leases).
        let r = run(&config, &["--json", "--quiet", "reseal", "--workers", "2"]);
        assert_eq!(r.code, DONE, "{}", r.stderr);
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let table = &report["report"]["tables"][0];
        assert_eq!(table["complete"], true);
        assert_eq!(table["failed"], 0);
        // It resumed the killed run rather than starting another.
        assert_eq!(table["job"]["run"], 1, "{table}");

        assert_eq!(under_primary().await, rows, "rows left under the old version");
        let state: String = sqlx::query_scalar(
            "SELECT state FROM fieldseal_jobs WHERE id LIKE 'reseal:%' ORDER BY run DESC LIMIT 1",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(state, "complete");
        // Every row opens, and its plaintext's SHA-256 is the original's.
        let mut stream: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, refresh_token FROM integrations ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(stream.len() as i64, rows);
        for (id, value) in stream.drain(..) {
            let sealed = SealedValue::from_bytes(value).unwrap();
            assert_eq!(sealed.key_version(), 2);
            let opened = sealer
                .open(&ctx(id, "refresh_token"), &sealed)
                .await
                .unwrap_or_else(|e| panic!("row {id} does not open: {e}"));
            assert_eq!(
                Sha256::digest(opened.plaintext().expose_secret()),
                digests[id as usize],
                "row {id}"
            );
        }
    })
    .await;
}

/// `shred` appends to the configured ledger; after the database is restored
/// from a backup taken before the shred, the tenant's values open again until
/// `shred --replay` erases it again (refused without `--yes`; a second run
/// has nothing to do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shred_replay_erases_again_after_a_restore() {
    let app = App::new(12).await;
    app.write_config(&format!("shred_ledger = \"shreds.ledger\"\n{CONFIG}"));
    let backup = app.dir.path().join("backup.db");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        backup.display()
    )))
    .execute(&app.pool)
    .await
    .unwrap();
    let r = app.run(&["shred", "--tenant", "acme", "--yes"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    assert!(!r.stderr.contains("no shred_ledger"), "{}", r.stderr);
    assert!(app.dir.path().join("shreds.ledger").exists());

    // The restore.
    app.pool.close().await;
    let db = app.dir.path().join("app.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&backup, &db).unwrap();
    let r = app.run(&["verify"]);
    assert_eq!(r.code, DONE, "{}", r.stdout);
    assert!(!r.stdout.contains("of shredded tenants"), "{}", r.stdout);

    let ledger = app.dir.path().join("shreds.ledger");
    let ledger = ledger.to_str().unwrap();
    let r = app.run(&["shred", "--replay", ledger]);
    assert_eq!(r.code, USAGE);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    let r = app.run(&["shred", "--replay", ledger, "--yes"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("tenant acme: shredded again"),
        "{}",
        r.stdout
    );
    let r = app.run(&["--json", "shred", "--replay", ledger, "--yes"]);
    assert_eq!(r.code, NOTHING, "{}", r.stdout);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["already"], 1, "{}", r.stdout);
    let r = app.run(&["verify"]);
    assert!(r.stdout.contains("of shredded tenants"), "{}", r.stdout);

    // Without a ledger, a shred says what a restore would do.
    app.write_config(CONFIG);
    let r = app.run(&["shred", "--tenant", "globex", "--yes"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    assert!(
        r.stderr.contains("no shred_ledger is configured"),
        "{}",
        r.stderr
    );
}

/// Root-key epochs from the command line: a key directory as the root key
/// source, `rotate-root` creates the next epoch's key file and re-wraps
/// every key under it, `retire-root` marks the old root keys unused and
/// waits out the retention before destroying any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_root_and_retire_root_run_the_epochs() {
    let app = App::new(9).await;
    let keys = app.dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    RootKey::create_file(keys.join("cli-root-e1.key")).unwrap();
    app.write_config(&CONFIG.replace(
        "[root_key]\nid = \"cli-root\"\nfile = \"root.key\"",
        "[root_key]\nid = \"cli-root\"\ndir = \"keys\"\n\
         [[root_key.previous]]\nid = \"cli-root\"\nfile = \"root.key\"",
    ));
    let r = app.run(&["rewrap-root"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("cli-root-e1"), "{}", r.stdout);

    let r = app.run(&["rotate-root"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert!(keys.join("cli-root-e2.key").exists());
    assert!(
        r.stdout.contains("under root key cli-root-e2"),
        "{}",
        r.stdout
    );

    let r = app.run(&["retire-root", "--retention", "1h"]);
    assert_eq!(r.code, FAILED, "{}", r.stderr);
    assert!(r.stderr.contains("the minimum is 86400s"), "{}", r.stderr);
    let r = app.run(&["--json", "retire-root", "--retention", "30d"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        report["marked_unused"],
        serde_json::json!(["cli-root", "cli-root-e1"]),
        "{}",
        r.stdout
    );
    let r = app.run(&["shred", "--tenant", "acme", "--yes"]);
    assert_eq!(r.code, DONE, "{}", r.stderr);
    let r = app.run(&[
        "--json",
        "erasure-report",
        "--tenant",
        "acme",
        "--retention",
        "30d",
    ]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(report["shredded_at"].is_string(), "{}", r.stdout);
    assert!(report["unrecoverable_from"].is_null(), "{}", r.stdout);
    let r = app.run(&["retire-root", "--retention", "30d"]);
    assert_eq!(r.code, NOTHING, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("destroyed by a run from"), "{}", r.stdout);
    assert!(keys.join("cli-root-e1.key").exists());
    let r = app.run(&["verify"]);
    assert_eq!(r.code, DONE, "{}", r.stdout);
}

/// Epochs from AWS KMS keys (`kms_epochs`, on the emulator): `rotate-root`
/// creates the next epoch's key and alias in KMS and re-wraps every key
/// under it; `retire-root` marks the old root keys unused.
#[cfg(feature = "aws-kms")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_root_creates_aws_kms_epoch_keys() {
    let Some(endpoint) = db::server_url("FIELDSEAL_TEST_KMS_ENDPOINT") else {
        return;
    };
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .load()
        .await;
    let kms = aws_sdk_kms::Client::new(&config);
    let first = kms.create_key().send().await.unwrap();
    let first = first.key_metadata().unwrap().arn().unwrap().to_string();
    let name = format!("cli-{:016x}", rand::random::<u64>());
    kms.create_alias()
        .alias_name(format!("alias/{name}-e1"))
        .target_key_id(&first)
        .send()
        .await
        .unwrap();
    let app = App::new(9).await;
    app.write_config(&CONFIG.replace(
        "[root_key]\nid = \"cli-root\"\nfile = \"root.key\"",
        &format!(
            "[root_key]\nkms_epochs = \"{name}\"\nkms_region = \"us-east-1\"\n\
             kms_endpoint = \"{endpoint}\"\n\
             [[root_key.previous]]\nid = \"cli-root\"\nfile = \"root.key\""
        ),
    ));
    let r = app.run(&["rewrap-root"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(&first), "{}", r.stdout);

    let r = app.run(&["rotate-root"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    let second = kms
        .describe_key()
        .key_id(format!("alias/{name}-e2"))
        .send()
        .await
        .unwrap();
    let second = second.key_metadata().unwrap().arn().unwrap().to_string();
    assert!(
        r.stdout.contains(&format!("under root key {second}")),
        "{}",
        r.stdout
    );
    let r = app.run(&["--json", "retire-root", "--retention", "1d"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut marked: Vec<String> = serde_json::from_value(report["marked_unused"].clone()).unwrap();
    marked.sort();
    assert_eq!(marked, vec![first, "cli-root".to_string()], "{}", r.stdout);
    let r = app.run(&["verify"]);
    assert_eq!(r.code, DONE, "{}", r.stdout);
}

/// Tenants with root keys of their own from the command line:
/// `[tenant_root_keys.<tenant>]` binds acme to its own key file;
/// `bind-root` moves acme's keys onto it, `rotate-root` moves the other
/// tenants' keys to the next epoch and leaves acme's; a runner configured
/// without the binding checks and re-wraps the rest and says what it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_root_keys_from_the_command_line() {
    let app = App::new(9).await;
    let keys = app.dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    RootKey::create_file(keys.join("cli-root-e1.key")).unwrap();
    RootKey::create_file(app.dir.path().join("acme.key")).unwrap();
    let unbound = CONFIG.replace(
        "[root_key]\nid = \"cli-root\"\nfile = \"root.key\"",
        "[root_key]\nid = \"cli-root\"\ndir = \"keys\"\n\
         [[root_key.previous]]\nid = \"cli-root\"\nfile = \"root.key\"",
    );
    let bound = unbound.replace(
        "[[tables]]",
        "[tenant_root_keys.acme]\nid = \"acme-own\"\nfile = \"acme.key\"\n\n[[tables]]",
    );
    let roots = |tenant: &'static str| {
        let sealer = app.sealer.clone();
        async move {
            let record = sealer.admin().describe(tenant).await.unwrap();
            record
                .keys
                .iter()
                .filter_map(|k| k.wrapped.as_ref().map(|w| w.root_key_id().to_string()))
                .collect::<Vec<_>>()
        }
    };

    app.write_config(&bound);
    let r = app.run(&["bind-root", "--tenant", "acme"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("1 keys re-wrapped under its own root key"),
        "{}",
        r.stdout
    );
    assert_eq!(roots("acme").await, ["acme-own"]);
    let r = app.run(&["bind-root", "--tenant", "acme"]);
    assert_eq!(r.code, NOTHING, "{}\n{}", r.stdout, r.stderr);
    let r = app.run(&["bind-root", "--tenant", "globex"]);
    assert_eq!(r.code, FAILED, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("tenant_root_key"), "{}", r.stderr);

    // An epoch: the others move, acme stays on its own key.
    let r = app.run(&["rotate-root"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(roots("acme").await, ["acme-own"]);
    assert_eq!(roots("globex").await, ["cli-root-e2"]);
    let r = app.run(&["check"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("not proven"), "{}", r.stderr);
    let r = app.run(&["verify"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);

    // Without the binding: acme's key is named, not proven, and left alone.
    app.write_config(&unbound);
    let r = app.run(&["check"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("root key acme-own not proven: tenant `acme`'s own root key"),
        "{}",
        r.stderr
    );
    RootKey::create_file(keys.join("cli-root-e3.key")).unwrap();
    let r = app.run(&["--json", "rewrap-root"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["complete"], true, "{}", r.stdout);
    assert_eq!(report["passes"][0]["own_root_keys"], 1, "{}", r.stdout);
    assert_eq!(roots("acme").await, ["acme-own"]);
    assert_eq!(roots("initech").await, ["cli-root-e3"]);

    // acme's key gone (its owner deleted it): the runner still starts,
    // says so, and serves the other tenants.
    app.write_config(&bound);
    std::fs::remove_file(app.dir.path().join("acme.key")).unwrap();
    let r = app.run(&["check"]);
    assert_eq!(r.code, DONE, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("tenant_root_keys.acme: its root key is unusable"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("root key acme-own not proven"),
        "{}",
        r.stderr
    );
    let r = app.run(&["rotate", "--all"]);
    assert_eq!(r.code, FAILED, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("acme: not rotated: tenant `acme`'s own root key `acme-own`"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("globex: rotated"), "{}", r.stdout);

    // A tenant's own key is one key.
    app.write_config(&bound.replace(
        "id = \"acme-own\"\nfile = \"acme.key\"",
        "id = \"acme-own\"\ndir = \"keys\"",
    ));
    let r = app.run(&["check"]);
    assert_eq!(r.code, USAGE, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("tenant_root_keys.acme: a tenant's own root key is one key"),
        "{}",
        r.stderr
    );
}

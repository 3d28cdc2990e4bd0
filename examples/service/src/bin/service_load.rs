//! `service_load`: a bounded load test of the example service, sealed
//! against the same service with plaintext columns, in one run.
//!
//! ```sh
//! cargo build --release -p fieldseal-example-service
//! FIELDSEAL_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     target/release/service_load
//! ```
//!
//! For each database (SQLite, and PostgreSQL when a URL is given), it starts
//! two services on loopback, each on a fresh database: `service` and
//! `service --plaintext-baseline`. It gives both the same tenants and
//! integrations, then alternates timed phases between them: `POST …/use`
//! (read a row, open two values, use them) and `PUT …` (seal three values,
//! upsert a row), `--rounds` times each, so that drift in the machine hits
//! both builds alike. A phase is `--concurrency` clients sending requests back
//! to back for `--seconds`. It reports throughput, p50/p99 latency and the
//! service's CPU time per request for each, the sealed build's ratio to the
//! plaintext one, and the sealed service's key store and provider calls. It
//! stops by itself: each database takes `2 endpoints × 2 builds × rounds ×
//! seconds` (48 s with the defaults) plus a few seconds of set-up.
//!
//! Exit codes: 0 when every request succeeded; 1 otherwise (the failures are
//! printed). Latency is reported, never asserted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::RngExt as _;
use serde_json::{Value, json};

/// Load-test the example service, sealed against plaintext.
#[derive(Debug, Parser)]
#[command(name = "service_load", about)]
struct Args {
    /// Databases to test: `sqlite`, `postgres`, or both (default: both when a
    /// PostgreSQL URL is set, else SQLite).
    #[arg(long, value_delimiter = ',')]
    databases: Vec<String>,
    /// PostgreSQL server for the `postgres` runs (a database on it, such as
    /// `postgres`); each service gets a fresh database, dropped afterwards.
    #[arg(long, env = "FIELDSEAL_TEST_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// Seconds per timed phase.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Phases per endpoint and build.
    #[arg(long, default_value_t = 12)]
    rounds: u32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Tenants, each with `--providers` integrations.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    tenants: u16,
    /// Integrations per tenant.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    providers: u16,
    /// The service executable (default: `service` beside this one).
    #[arg(long)]
    service: Option<PathBuf>,
}

const ADMIN_TOKEN: &str = "load-test-admin-token-0123456789abcdef";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Use,
    Put,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Self::Use => "POST …/use",
            Self::Put => "PUT …/integrations/{p}",
        }
    }
}

/// One running service and the tokens of its tenants.
struct Running {
    child: Child,
    base: String,
    tokens: Vec<String>,
    label: &'static str,
}

impl Running {
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    /// A service left behind by an error is killed (after `stop`, a no-op).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Latencies and failures of one build on one endpoint, over its phases.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    elapsed: Duration,
    /// CPU time the service process spent (Linux; zero elsewhere).
    service_cpu: Duration,
    failures: Vec<String>,
}

impl Tally {
    fn throughput(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The service's CPU time per request, in microseconds.
    fn cpu_per_request_us(&self) -> f64 {
        self.service_cpu.as_secs_f64() * 1e6 / (self.latencies_us.len().max(1) as f64)
    }

    fn percentile(&mut self, p: usize) -> f64 {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        if n == 0 {
            return f64::NAN;
        }
        f64::from(self.latencies_us[(n * p / 100).min(n - 1)]) / 1000.0
    }
}

fn random_secret(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}{tail}")
}

fn integration_body() -> Value {
    json!({
        "refresh_token": random_secret("1//0g", 100),
        "api_secret": random_secret("sk_live_", 40),
    })
}

fn provider_name(i: usize) -> String {
    format!("provider-{i}")
}

fn service_exe(args: &Args) -> Result<PathBuf, String> {
    let path = match &args.service {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name(format!("service{}", std::env::consts::EXE_SUFFIX)),
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it first, with \
             `cargo build --release -p fieldseal-example-service`",
            path.display()
        ))
    }
}

/// Starts a service and waits for its address.
fn start(
    exe: &Path,
    dir: &Path,
    database_url: Option<&str>,
    plaintext: bool,
) -> Result<(Child, String), String> {
    let log = std::fs::File::create(dir.join("service.log")).map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("FIELDSEAL_SERVICE_DIR", dir)
        .env("FIELDSEAL_SERVICE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env_remove("FIELDSEAL_ROOT_KEY_FILE")
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    if plaintext {
        command.arg("--plaintext-baseline");
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .map_err(|e| e.to_string())?;
    match line.trim().strip_prefix("listening on ") {
        Some(address) => Ok((child, address.to_string())),
        None => {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
            Err(format!("the service did not start:\n{log}"))
        }
    }
}

/// Creates the tenants and their integrations.
async fn populate(http: &reqwest::Client, base: &str, args: &Args) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    for t in 0..args.tenants {
        let tenant = format!("tenant-{t}");
        let response = http
            .post(format!("{base}/tenants/{tenant}/tokens"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        let token = body["token"]
            .as_str()
            .ok_or_else(|| format!("no token issued: {body}"))?
            .to_string();
        for p in 0..usize::from(args.providers) {
            let response = http
                .put(format!(
                    "{base}/tenants/{tenant}/integrations/{}",
                    provider_name(p)
                ))
                .bearer_auth(&token)
                .json(&integration_body())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("PUT failed: {}", response.status()));
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// The CPU time (user and system, all threads) a process has used so far,
/// from `/proc/<pid>/stat` (Linux; zero elsewhere). Clock ticks are taken as
/// 1/100 s, the Linux default.
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces), from field 3.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 here.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// One timed phase: `concurrency` clients send requests back to back.
async fn phase(
    http: &reqwest::Client,
    service: &Running,
    endpoint: Endpoint,
    args: &Args,
    seconds: f64,
    tally: &mut Tally,
) {
    let cpu_before = cpu_time(service.child.id());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tokens = Arc::new(service.tokens.clone());
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let http = http.clone();
        let base = service.base.clone();
        let tokens = Arc::clone(&tokens);
        let providers = usize::from(args.providers);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            while Instant::now() < deadline {
                let (t, p) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..tokens.len()),
                        rng.random_range(0..providers),
                    )
                };
                let path = format!(
                    "{base}/tenants/tenant-{t}/integrations/{}",
                    provider_name(p)
                );
                let request = match endpoint {
                    Endpoint::Use => http.post(format!("{path}/use")),
                    Endpoint::Put => http.put(path).json(&integration_body()),
                };
                let sent = Instant::now();
                let outcome = request.bearer_auth(&tokens[t]).send().await;
                let outcome = match outcome {
                    Ok(response) => {
                        let status = response.status();
                        match response.bytes().await {
                            Ok(_) if status.is_success() => Ok(()),
                            Ok(body) => {
                                Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                match outcome {
                    Ok(()) => latencies.push(micros),
                    Err(e) => failures.push(e),
                }
            }
            (latencies, failures)
        }));
    }
    for worker in workers {
        match worker.await {
            Ok((latencies, failures)) => {
                tally.latencies_us.extend(latencies);
                tally.failures.extend(failures);
            }
            Err(e) => tally.failures.push(format!("a client task failed: {e}")),
        }
    }
    tally.elapsed += started.elapsed();
    tally.service_cpu += cpu_time(service.child.id()).saturating_sub(cpu_before);
}

/// A fresh PostgreSQL database on the server, and its URL.
async fn create_database(server: &str) -> Result<(String, String), String> {
    let name = format!("fieldseal_load_{:016x}", rand::random::<u64>());
    let admin = sqlx::PgPool::connect(server)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .map_err(|e| e.to_string())?;
    admin.close().await;
    let mut url = url::Url::parse(server).map_err(|e| e.to_string())?;
    url.set_path(&name);
    Ok((name, url.to_string()))
}

async fn drop_database(server: &str, name: &str) {
    if let Ok(admin) = sqlx::PgPool::connect(server).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}

/// Runs both builds on one database; returns whether every request
/// succeeded.
async fn run_database(database: &str, args: &Args, exe: &Path) -> Result<bool, String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let mut running = Vec::new();
    let mut databases = Vec::new();
    let mut dirs = Vec::new();
    for (label, plaintext) in [("sealed", false), ("plaintext", true)] {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let url = if database == "postgres" {
            let server = args.postgres_url.as_deref().ok_or(
                "--databases postgres needs --postgres-url or FIELDSEAL_TEST_POSTGRES_URL",
            )?;
            let (name, url) = create_database(server).await?;
            databases.push(name);
            Some(url)
        } else {
            None
        };
        let (child, base) = start(exe, dir.path(), url.as_deref(), plaintext)?;
        running.push(Running {
            child,
            base,
            tokens: Vec::new(),
            label,
        });
        dirs.push(dir);
    }
    let outcome = measure(database, args, &http, &mut running).await;
    for service in running {
        service.stop();
    }
    if let Some(server) = &args.postgres_url {
        for name in &databases {
            drop_database(server, name).await;
        }
    }
    outcome
}

async fn measure(
    database: &str,
    args: &Args,
    http: &reqwest::Client,
    running: &mut [Running],
) -> Result<bool, String> {
    for service in running.iter_mut() {
        service.tokens = populate(http, &service.base, args).await?;
    }
    // Warm-up, not counted: connections, caches, the database's pages.
    for service in running.iter() {
        for endpoint in [Endpoint::Use, Endpoint::Put] {
            let mut scratch = Tally::default();
            phase(http, service, endpoint, args, 0.5, &mut scratch).await;
        }
    }
    let mut tallies: Vec<[Tally; 2]> = vec![Default::default(), Default::default()];
    for round in 0..args.rounds {
        for (e, endpoint) in [Endpoint::Use, Endpoint::Put].into_iter().enumerate() {
            // Alternate which build goes first.
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for b in order {
                phase(
                    http,
                    &running[b],
                    endpoint,
                    args,
                    args.seconds,
                    &mut tallies[e][b],
                )
                .await;
            }
        }
    }
    let mut ok = true;
    println!(
        "\n{database}: {} tenants × {} integrations, {} clients, {} rounds of {} s per endpoint and build\n",
        args.tenants, args.providers, args.concurrency, args.rounds, args.seconds
    );
    println!("| endpoint | build | requests | req/s | p50 ms | p99 ms | service CPU µs/req |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (e, endpoint) in [Endpoint::Use, Endpoint::Put].into_iter().enumerate() {
        let mut figures = Vec::new();
        for (b, service) in running.iter().enumerate() {
            let tally = &mut tallies[e][b];
            let (rps, p50, p99) = (
                tally.throughput(),
                tally.percentile(50),
                tally.percentile(99),
            );
            let cpu = tally.cpu_per_request_us();
            println!(
                "| `{}` | {} | {} | {rps:.0} | {p50:.2} | {p99:.2} | {cpu:.0} |",
                endpoint.name(),
                service.label,
                tally.latencies_us.len()
            );
            figures.push((rps, p99, cpu));
            if !tally.failures.is_empty() {
                ok = false;
                eprintln!(
                    "{database} {} {}: {} requests failed; the first: {}",
                    service.label,
                    endpoint.name(),
                    tally.failures.len(),
                    tally.failures[0]
                );
            }
        }
        let (sealed, plain) = (figures[0], figures[1]);
        println!(
            "| `{}` | **sealed / plaintext** | | **{:.2}×** | | **{:.2}×** | **{:.2}×** |",
            endpoint.name(),
            sealed.0 / plain.0,
            sealed.1 / plain.1,
            sealed.2 / plain.2
        );
    }
    // What the sealed service asked of its key store and root key over the
    // whole run: with the cache warm, almost nothing.
    if let Ok(response) = http
        .get(format!("{}/metrics", running[0].base))
        .send()
        .await
        && let Ok(text) = response.text().await
    {
        println!("\nThe sealed service's key store, provider and cache counters over the run:\n");
        for line in text.lines().filter(|line| {
            line.starts_with("fieldseal_store_calls_total")
                || line.starts_with("fieldseal_provider_calls_total")
                || line.starts_with("fieldseal_cache_")
                || line.starts_with("fieldseal_opens_total")
                || line.starts_with("fieldseal_seals_total")
        }) {
            println!("    {line}");
        }
    }
    Ok(ok)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; for figures, build both examples with --release");
    }
    let exe = match service_exe(&args) {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let databases = if args.databases.is_empty() {
        if args.postgres_url.is_some() {
            vec!["sqlite".to_string(), "postgres".to_string()]
        } else {
            vec!["sqlite".to_string()]
        }
    } else {
        args.databases.clone()
    };
    let mut ok = true;
    for database in &databases {
        if database != "sqlite" && database != "postgres" {
            eprintln!("error: unknown database {database:?}: use sqlite or postgres");
            return std::process::ExitCode::from(2);
        }
        match run_database(database, &args, &exe).await {
            Ok(all) => ok &= all,
            Err(e) => {
                eprintln!("error: {database}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

//! `service`: a multi-tenant HTTP service that keeps each tenant's OAuth
//! refresh tokens and API secrets sealed per row, observable through
//! Prometheus metrics and request logs that never show a secret.
//!
//! ```sh
//! export FIELDSEAL_SERVICE_ADMIN_TOKEN="$(head -c 32 /dev/urandom | base64)"
//! cargo run -p fieldseal-example-service --bin service   # SQLite in ./fieldseal-service/
//! DATABASE_URL=postgres://localhost/app \
//!     cargo run -p fieldseal-example-service --bin service
//! ```
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /tenants/{t}/tokens` | admin | creates the tenant (its first key) and issues an API token for it |
//! | `PUT /tenants/{t}/integrations/{provider}` | tenant | stores `{"refresh_token", "api_secret"}`, sealed for the row |
//! | `GET /tenants/{t}/integrations` | tenant | lists them with a hint (`…abcd`), never a secret |
//! | `POST /tenants/{t}/integrations/{provider}/use` | tenant | opens both server-side, uses them, returns only the outcome |
//! | `POST /tenants/{t}/rotate` | admin | a new key version for the tenant; rows re-seal as they are used |
//! | `DELETE /tenants/{t}` | admin | crypto-shreds the tenant: its rows say "erased" from then on |
//! | `GET /metrics` | anyone | Prometheus text (`fieldseal_*`, docs/OBSERVABILITY.md); serve it on an internal port in production |
//! | `GET /healthz` | anyone | the database answers |
//!
//! Callers authenticate with `Authorization: Bearer <token>`. Tenants are
//! never created by a request that names them: `create_tenants_on_first_use`
//! is off, and only the admin route creates one. An erased tenant's tokens
//! keep working, so that it can see that its integrations were erased; they
//! read nothing else. (Token expiry and revocation are left out of this
//! example.)
//!
//! Several replicas can share one PostgreSQL database: each re-checks a
//! tenant's keys every 5 seconds (`revalidate_after`), so an erasure or a
//! rotation made by one reaches the others within that time.
//!
//! Configuration (flags or environment):
//!
//! - `FIELDSEAL_SERVICE_ADMIN_TOKEN`: the admin token, at least 32 characters
//!   (required; read from the environment only, so that it is never on a
//!   command line).
//! - `DATABASE_URL`: a PostgreSQL URL; without it, SQLite in
//!   `$FIELDSEAL_SERVICE_DIR/app.db` (default `./fieldseal-service/`).
//! - `FIELDSEAL_ROOT_KEY_FILE`: the root key file, created if missing (never
//!   overwritten); default `$FIELDSEAL_SERVICE_DIR/root.key`. In production
//!   the root key lives in a KMS or HSM instead (`examples/aws_kms.rs`).
//! - `--listen` / `FIELDSEAL_SERVICE_LISTEN` (default `127.0.0.1:8080`); the
//!   first line on standard output is `listening on http://<address>`.
//! - `--header-timeout` / `FIELDSEAL_SERVICE_HEADER_TIMEOUT` (default `10s`):
//!   a client that has not sent a request's headers by then is cut off.
//! - `--max-connections` / `FIELDSEAL_SERVICE_MAX_CONNECTIONS` (default
//!   1024): connections open at once (see `serve.rs`).
//! - `--idle-timeout` / `FIELDSEAL_SERVICE_IDLE_TIMEOUT` (default `30s`): a
//!   connection that sends and receives nothing for that long is closed. At
//!   least the request timeout (a request being answered sends nothing
//!   either); every timeout is between 1 ms and 1 day.
//! - `--request-timeout` / `FIELDSEAL_SERVICE_REQUEST_TIMEOUT` (default
//!   `30s`): a request, body included, that takes longer gets 408.
//! - `RUST_LOG` (default `info`): logs go to standard error.
//!
//! `--plaintext-baseline` builds the same service with plaintext columns, for
//! the load test's comparison (`src/bin/service_load.rs`). Never use it for
//! anything else.

mod api;
mod db;
mod serve;
mod vault;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fieldseal::{LocalKeyProvider, RootKey, Sealer, SqlKeyStore};
use metrics_exporter_prometheus::PrometheusBuilder;
use sha2::{Digest, Sha256};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use zeroize::Zeroizing;

use crate::api::AppState;
use crate::db::Db;
use crate::vault::Vault;

/// A multi-tenant credentials service on fieldseal.
#[derive(Parser)]
#[command(name = "service", about)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(
        long,
        env = "FIELDSEAL_SERVICE_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// PostgreSQL URL; without it, SQLite in the service directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Directory for the SQLite database and the default root key file.
    #[arg(
        long,
        env = "FIELDSEAL_SERVICE_DIR",
        default_value = "fieldseal-service"
    )]
    dir: PathBuf,
    /// Root key file (created if missing, never overwritten).
    #[arg(long, env = "FIELDSEAL_ROOT_KEY_FILE")]
    root_key_file: Option<PathBuf>,
    /// How long a request's headers may take to arrive before the
    /// connection is closed (`10s`).
    #[arg(
        long,
        env = "FIELDSEAL_SERVICE_HEADER_TIMEOUT",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    header_timeout: Duration,
    /// Connections open at once; beyond it, new ones wait in the listen
    /// backlog.
    #[arg(
        long,
        env = "FIELDSEAL_SERVICE_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    max_connections: usize,
    /// How long a connection may send and receive nothing before it is
    /// closed (`30s`).
    #[arg(
        long,
        env = "FIELDSEAL_SERVICE_IDLE_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    idle_timeout: Duration,
    /// How long one request may take, body included (`30s`).
    #[arg(
        long,
        env = "FIELDSEAL_SERVICE_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    request_timeout: Duration,
    /// Store secrets in plaintext: the load test's baseline only.
    #[arg(long, hide = true)]
    plaintext_baseline: bool,
}

/// The environment variable that holds the admin token.
const ADMIN_TOKEN_ENV: &str = "FIELDSEAL_SERVICE_ADMIN_TOKEN";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    check_timeouts(&args)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // At DEBUG and below, a line as each span closes: fieldseal's provider,
    // store and admin spans with their duration (docs/OBSERVABILITY.md).
    let span_events = match filter.max_level_hint() {
        Some(level) if level >= LevelFilter::DEBUG => FmtSpan::CLOSE,
        _ => FmtSpan::NONE,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(span_events)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let admin_token = Zeroizing::new(std::env::var(ADMIN_TOKEN_ENV).unwrap_or_default());
    if admin_token.chars().count() < 32 {
        return Err(format!(
            "set {ADMIN_TOKEN_ENV} to a random string of at least 32 characters, for example \
             `export {ADMIN_TOKEN_ENV}=\"$(head -c 32 /dev/urandom | base64)\"`"
        )
        .into());
    }
    let admin_token_hash: [u8; 32] = Sha256::digest(admin_token.as_bytes()).into();
    drop(admin_token);

    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", args.dir.join("app.db").display()),
    };
    if args.database_url.is_some() && !db::is_postgres_url(&url) {
        return Err(
            "DATABASE_URL must be a PostgreSQL URL (postgres://…); without it, the \
                    service uses SQLite in its directory"
                .into(),
        );
    }
    let db = Db::connect(&url)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    db.migrate().await?;

    let vault = if args.plaintext_baseline {
        tracing::warn!(
            "--plaintext-baseline: secrets are stored IN PLAINTEXT (load-test baseline)"
        );
        Vault::Plaintext
    } else {
        let key_path = args
            .root_key_file
            .clone()
            .unwrap_or_else(|| args.dir.join("root.key"));
        let root_key = if key_path.exists() {
            RootKey::from_file(&key_path)?
        } else {
            tracing::info!(path = %key_path.display(), "creating a root key file");
            RootKey::create_file(&key_path)?
        };
        let provider = LocalKeyProvider::new("service-root", root_key)?;
        let builder = match &db {
            Db::Sqlite(pool) => {
                let store = SqlKeyStore::new(pool.clone());
                store.migrate().await?;
                Sealer::builder(provider, store)
            }
            Db::Postgres(pool) => {
                let store = SqlKeyStore::new(pool.clone());
                store.migrate().await?;
                Sealer::builder(provider, store)
            }
        };
        Vault::Sealed(
            builder
                .create_tenants_on_first_use(false)
                .revalidate_after(Duration::from_secs(5))
                .build(),
        )
    };

    let metrics = PrometheusBuilder::new().install_recorder()?;
    let state = Arc::new(AppState {
        db,
        vault,
        admin_token_hash,
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    println!("listening on http://{address}");
    tracing::info!(%address, database = state.db.kind(), "serving");
    let limits = serve::Limits {
        header_timeout: args.header_timeout,
        max_connections: args.max_connections,
        idle_timeout: args.idle_timeout,
    };
    let router = api::router(state).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        args.request_timeout,
    ));
    serve::serve(listener, router, limits, shutdown()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM: in-flight requests finish, then the
/// process exits.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Refuses timeouts the server cannot keep: zero, beyond a day (a deadline so
/// far off is a typo, and could overflow the clock), or an idle timeout
/// shorter than the request timeout (it would cut off requests still being
/// answered).
fn check_timeouts(args: &Args) -> Result<(), String> {
    let range = Duration::from_millis(1)..=Duration::from_secs(86_400);
    for (name, t) in [
        ("--header-timeout", args.header_timeout),
        ("--idle-timeout", args.idle_timeout),
        ("--request-timeout", args.request_timeout),
    ] {
        if !range.contains(&t) {
            return Err(format!(
                "{name}: {t:?} is out of range; use 1ms to 1day (for example 30s)"
            ));
        }
    }
    if args.idle_timeout < args.request_timeout {
        return Err(format!(
            "--idle-timeout ({:?}) is shorter than --request-timeout ({:?}): a request still \
             being answered would be cut off; raise it",
            args.idle_timeout, args.request_timeout
        ));
    }
    Ok(())
}

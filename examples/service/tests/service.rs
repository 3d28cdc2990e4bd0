//! The example service (`examples/service`) end to end, over loopback HTTP,
//! on SQLite and on PostgreSQL (`FIELDSEAL_TEST_POSTGRES_URL`):
//!
//! - the whole lifecycle: tokens, store, list, use, rotate (rows re-seal as
//!   they are used), erase;
//! - one tenant's token never reaches another tenant's rows (the API's
//!   wall), and a sealed value copied by someone with database access into
//!   another tenant's row, or another row of the same tenant, does not open
//!   (the context's wall, tested behind the first);
//! - after erasure the rows are still there, unreadable, and the API says
//!   "erased";
//! - no response and no line of the service's log (at TRACE, request logs
//!   included) holds a secret, an API token, the admin token or the root
//!   key, in raw, hex or base64 form.

#[path = "../../../tests/common/forms.rs"]
mod forms;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use fieldseal::{Context, Error, LocalKeyProvider, RootKey, SealedValue, Sealer, SqlKeyStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The service's executable, which cargo builds for these tests.
fn service_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_service"))
}

/// A random marker, recognisable in any output.
fn marker(what: &str) -> String {
    format!("{what}-MARKER-{:032x}", rand::random::<u128>())
}

/// A running service, its log (standard output and error, at TRACE), and
/// every response body it sent.
struct Service {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    http: reqwest::Client,
    responses: Mutex<Vec<String>>,
}

impl Service {
    fn start(dir: &Path, database_url: Option<&str>, admin_token: &str) -> Self {
        Self::start_with(dir, database_url, admin_token, &[])
    }

    fn start_with(
        dir: &Path,
        database_url: Option<&str>,
        admin_token: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(service_exe());
        command.envs(env.iter().copied());
        command
            .args(["--listen", "127.0.0.1:0"])
            .env("FIELDSEAL_SERVICE_DIR", dir)
            .env("FIELDSEAL_SERVICE_ADMIN_TOKEN", admin_token)
            .env("RUST_LOG", "trace")
            .env_remove("DATABASE_URL")
            .env_remove("FIELDSEAL_ROOT_KEY_FILE")
            .env_remove("FIELDSEAL_SERVICE_LISTEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        let mut child = command.spawn().expect("cannot start the service");
        let log = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out_log = Arc::clone(&log);
        let out = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if let Some(address) = line.strip_prefix("listening on ") {
                    let _ = address_tx.send(address.to_string());
                }
                let mut log = out_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let err_log = Arc::clone(&log);
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let mut reader = BufReader::new(stderr);
            let mut buf = [0u8; 8192];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                err_log.lock().unwrap().push_str(&text);
                text.clear();
            }
        });
        let base = match address_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the service did not start; its log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Self {
            child,
            base,
            log,
            readers: vec![out, err],
            http: reqwest::Client::new(),
            responses: Mutex::new(Vec::new()),
        }
    }

    /// Sends a request; returns the status and the JSON body (recorded for
    /// the secret scan).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        self.responses.lock().unwrap().push(text.clone());
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, None).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(token), Some(body))
            .await
    }

    async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    /// Stops the service with SIGTERM (a graceful shutdown) and returns its
    /// whole log.
    fn stop(mut self) -> (String, Vec<String>) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        assert!(
            exit.success(),
            "the service exited with {exit}; its log:\n{log}"
        );
        let responses = std::mem::take(&mut *self.responses.lock().unwrap());
        (log, responses)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Direct access to the service's database, for what an attacker with
/// write access to it would do.
enum Direct {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Direct {
    async fn columns(&self, tenant: &str, provider: &str) -> (i64, Vec<u8>, Vec<u8>, Vec<u8>) {
        const SQL: &str = "SELECT id, refresh_token, api_secret, secret_hint FROM integrations
                           WHERE tenant = $1 AND provider = $2";
        match self {
            Self::Sqlite(pool) => sqlx::query_as(SQL)
                .bind(tenant)
                .bind(provider)
                .fetch_one(pool)
                .await
                .unwrap(),
            Self::Postgres(pool) => sqlx::query_as(SQL)
                .bind(tenant)
                .bind(provider)
                .fetch_one(pool)
                .await
                .unwrap(),
        }
    }

    async fn overwrite(&self, id: i64, token: &[u8], secret: &[u8], hint: &[u8]) {
        const SQL: &str = "UPDATE integrations
                           SET refresh_token = $1, api_secret = $2, secret_hint = $3
                           WHERE id = $4";
        let rows = match self {
            Self::Sqlite(pool) => sqlx::query(SQL)
                .bind(token)
                .bind(secret)
                .bind(hint)
                .bind(id)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            Self::Postgres(pool) => sqlx::query(SQL)
                .bind(token)
                .bind(secret)
                .bind(hint)
                .bind(id)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
        };
        assert_eq!(rows, 1);
    }

    /// Opens a stored value with a sealer of the test's own on the service's
    /// key store and root key file: what a process holding every key would
    /// get.
    async fn open_with_keys(
        &self,
        root_key: &Path,
        tenant: &str,
        integration: &str,
        column: &str,
        id: i64,
        bytes: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let provider =
            LocalKeyProvider::new("service-root", RootKey::from_file(root_key).unwrap()).unwrap();
        let sealer = match self {
            Self::Sqlite(pool) => Sealer::builder(provider, SqlKeyStore::new(pool.clone())),
            Self::Postgres(pool) => Sealer::builder(provider, SqlKeyStore::new(pool.clone())),
        }
        .create_tenants_on_first_use(false)
        .build();
        let ctx = Context::builder(tenant, "integrations", column)
            .row(id)
            .extra("provider", integration)
            .build()
            .unwrap();
        let sealed = SealedValue::from_bytes(bytes)?;
        let opened = sealer.open(&ctx, &sealed).await?;
        use fieldseal::secrecy::ExposeSecret;
        Ok(opened.plaintext().expose_secret().to_vec())
    }

    /// Swaps the provider names of two of `tenant`'s rows.
    async fn swap_providers(&self, tenant: &str, a: &str, b: &str) {
        for (from, to) in [(a, "swap-tmp"), (b, a), ("swap-tmp", b)] {
            const SQL: &str =
                "UPDATE integrations SET provider = $1 WHERE tenant = $2 AND provider = $3";
            let rows = match self {
                Self::Sqlite(pool) => sqlx::query(SQL)
                    .bind(to)
                    .bind(tenant)
                    .bind(from)
                    .execute(pool)
                    .await
                    .unwrap()
                    .rows_affected(),
                Self::Postgres(pool) => sqlx::query(SQL)
                    .bind(to)
                    .bind(tenant)
                    .bind(from)
                    .execute(pool)
                    .await
                    .unwrap()
                    .rows_affected(),
            };
            assert_eq!(rows, 1);
        }
    }

    async fn close(self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// A tenant's integration as the test stores it.
struct Secrets {
    refresh_token: String,
    api_secret: String,
}

impl Secrets {
    fn new(tenant: &str, provider: &str) -> Self {
        Self {
            refresh_token: marker(&format!("rt-{tenant}-{provider}")),
            api_secret: marker(&format!("sk-{tenant}-{provider}")),
        }
    }

    fn body(&self) -> Value {
        json!({ "refresh_token": self.refresh_token, "api_secret": self.api_secret })
    }

    fn hint(&self) -> String {
        let tail: String = self
            .api_secret
            .chars()
            .skip(self.api_secret.len() - 4)
            .collect();
        format!("…{tail}")
    }
}

async fn lifecycle(dir: &Path, database_url: Option<&str>, direct: Direct) {
    let admin_token = marker("admin-token");
    let service = Service::start(dir, database_url, &admin_token);
    let mut secrets: Vec<String> = vec![admin_token.clone()];

    // Health, and the routes that need a token refuse requests without one.
    let (status, body) = service.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = service.get("/tenants/acme/integrations", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = service.post("/tenants/acme/tokens", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = service
        .post("/tenants/acme/tokens", Some("not-the-admin-token"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The admin creates two tenants, each with a token.
    let mut tokens = Vec::new();
    for tenant in ["acme", "globex"] {
        let (status, body) = service
            .post(&format!("/tenants/{tenant}/tokens"), Some(&admin_token))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let token = body["token"].as_str().unwrap().to_string();
        secrets.push(token.clone());
        tokens.push(token);
    }
    let (acme, globex) = (tokens[0].as_str(), tokens[1].as_str());
    // A tenant's token is not an admin token, and an unknown token is refused.
    let (status, _) = service.post("/tenants/acme/rotate", Some(acme)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = service
        .get("/tenants/acme/integrations", Some("fst_unknown"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Each tenant stores integrations.
    let stored = [
        ("acme", acme, "github", Secrets::new("acme", "github")),
        ("acme", acme, "slack", Secrets::new("acme", "slack")),
        ("globex", globex, "github", Secrets::new("globex", "github")),
    ];
    for (tenant, token, provider, s) in &stored {
        let (status, body) = service
            .put(
                &format!("/tenants/{tenant}/integrations/{provider}"),
                token,
                s.body(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["hint"], s.hint());
        assert_eq!(body["key_version"], 1);
        secrets.push(s.refresh_token.clone());
        secrets.push(s.api_secret.clone());
    }
    let (status, body) = service.get("/tenants/acme/integrations", Some(acme)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["integrations"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert_eq!(items[0]["provider"], "github");
    assert_eq!(items[0]["status"], "active");
    assert_eq!(items[0]["hint"], stored[0].3.hint());
    assert_eq!(items[1]["hint"], stored[1].3.hint());

    // Using an integration opens its secrets server-side and returns only the
    // outcome.
    let (status, body) = service
        .post("/tenants/acme/integrations/github/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["upstream_status"], 200);
    assert!(body.get("resealed").is_none(), "{body}");
    let (status, body) = service
        .post("/tenants/acme/integrations/jira/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Wall 1: acme's token never reaches globex's rows.
    let (status, body) = service
        .get("/tenants/globex/integrations", Some(acme))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = service
        .post("/tenants/globex/integrations/github/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let refused = Secrets::new("acme", "refused");
    secrets.push(refused.refresh_token.clone());
    secrets.push(refused.api_secret.clone());
    let (status, _) = service
        .put("/tenants/globex/integrations/github", acme, refused.body())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Refused bodies are never echoed: no token, a number where a string
    // belongs, a bare string.
    let (status, body) = service
        .call(
            reqwest::Method::PUT,
            "/tenants/acme/integrations/github",
            None,
            Some(refused.body()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    for bad in [
        json!({ "refresh_token": 7, "api_secret": refused.api_secret }),
        json!(refused.refresh_token),
        json!({ "refresh_token": refused.refresh_token }),
    ] {
        let (status, body) = service
            .put("/tenants/acme/integrations/github", acme, bad)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_body");
    }

    // Wall 2, on its own: someone with write access to the database copies
    // globex's sealed github secrets into acme's github row. The service
    // reads the row for acme, and the values do not open: their context
    // names globex and another row.
    let (acme_id, acme_token, acme_secret, acme_hint) = direct.columns("acme", "github").await;
    let (_, globex_token, globex_secret, globex_hint) = direct.columns("globex", "github").await;
    direct
        .overwrite(acme_id, &globex_token, &globex_secret, &globex_hint)
        .await;
    let (status, body) = service
        .post("/tenants/acme/integrations/github/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"], "credential_unreadable");
    let (status, body) = service.get("/tenants/acme/integrations", Some(acme)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["integrations"][0]["status"], "unreadable", "{body}");
    assert_eq!(body["integrations"][1]["status"], "active", "{body}");
    // The same within a tenant: acme's slack secrets in acme's github row.
    let (_, slack_token, slack_secret, slack_hint) = direct.columns("acme", "slack").await;
    direct
        .overwrite(acme_id, &slack_token, &slack_secret, &slack_hint)
        .await;
    let (status, body) = service
        .post("/tenants/acme/integrations/github/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"], "credential_unreadable");
    // And the row's own bytes open again.
    direct
        .overwrite(acme_id, &acme_token, &acme_secret, &acme_hint)
        .await;
    let (status, body) = service
        .post("/tenants/acme/integrations/github/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The provider names of two rows swapped: using "github" picks the row
    // that now says github, whose values were sealed for slack. They do not
    // open: the provider is in the context, so slack's credentials are never
    // sent to github.
    direct.swap_providers("acme", "github", "slack").await;
    for provider in ["github", "slack"] {
        let (status, body) = service
            .post(
                &format!("/tenants/acme/integrations/{provider}/use"),
                Some(acme),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{provider}: {body}"
        );
        assert_eq!(body["error"], "credential_unreadable");
    }
    direct.swap_providers("acme", "github", "slack").await;
    let (status, body) = service
        .post("/tenants/acme/integrations/github/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Rotation: a new primary; old rows keep working and move to the new key
    // as they are used.
    let (status, body) = service
        .post("/tenants/acme/rotate", Some(&admin_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["primary_version"], 2);
    let version_of = |bytes: &[u8]| SealedValue::from_bytes(bytes).unwrap().key_version();
    assert_eq!(version_of(&direct.columns("acme", "github").await.1), 1);
    let (status, body) = service
        .post("/tenants/acme/integrations/github/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["resealed"], true, "{body}");
    let (_, token, secret, hint) = direct.columns("acme", "github").await;
    assert_eq!(
        [version_of(&token), version_of(&secret), version_of(&hint)],
        [2, 2, 2]
    );
    assert_eq!(version_of(&direct.columns("acme", "slack").await.1), 1);
    let (status, body) = service
        .post("/tenants/acme/integrations/github/use", Some(acme))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("resealed").is_none(), "{body}");
    let (status, body) = service.get("/tenants/acme/integrations", Some(acme)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["integrations"][0]["hint"], stored[0].3.hint());
    assert_eq!(body["integrations"][1]["hint"], stored[1].3.hint());
    // A PUT after the rotation seals under the new primary.
    let (status, body) = service
        .put("/tenants/acme/integrations/slack", acme, stored[1].3.body())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key_version"], 2);

    // Metrics: fieldseal's counters, with no tenant label by default.
    let (status, body) = service.get("/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    for name in [
        "fieldseal_seals_total",
        "fieldseal_opens_total",
        "fieldseal_open_failures_total{kind=\"open_failed\"}",
        "fieldseal_cache_hits_total",
        "fieldseal_provider_calls_total{op=\"wrap\"",
        "fieldseal_store_calls_total{op=\"load_tenant\"",
        "fieldseal_admin_operations_total{op=\"rotate\",outcome=\"ok\"}",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(
        !text.contains("tenant="),
        "a tenant label without opt-in:\n{text}"
    );

    // Erasure: the rows stay, unreadable, and the API says "erased".
    let (status, body) = service.delete("/tenants/acme", &admin_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let erased_at = body["erased_at"].as_str().unwrap().to_string();
    let (status, body) = service.delete("/tenants/acme", &admin_token).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    let (status, body) = service.get("/tenants/acme/integrations", Some(acme)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["erased_at"], erased_at.as_str());
    let items = body["integrations"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["status"], "erased", "{body}");
        assert!(item.get("hint").is_none(), "{body}");
    }
    for provider in ["github", "slack"] {
        let (status, body) = service
            .post(
                &format!("/tenants/acme/integrations/{provider}/use"),
                Some(acme),
            )
            .await;
        assert_eq!(status, StatusCode::GONE, "{body}");
        assert_eq!(body["error"], "erased");
        assert!(body["message"].as_str().unwrap().contains(&erased_at));
    }
    let (status, body) = service
        .put(
            "/tenants/acme/integrations/github",
            acme,
            stored[0].3.body(),
        )
        .await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    // The bytes are still in the table, and even a process holding the root
    // key cannot open them.
    let (id, token, _, _) = direct.columns("acme", "github").await;
    let root_key = dir.join("root.key");
    let err = direct
        .open_with_keys(&root_key, "acme", "github", "refresh_token", id, &token)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantShredded { .. }), "{err}");
    // globex is untouched.
    let (id, token, _, _) = direct.columns("globex", "github").await;
    let opened = direct
        .open_with_keys(&root_key, "globex", "github", "refresh_token", id, &token)
        .await
        .unwrap();
    assert_eq!(opened, stored[2].3.refresh_token.as_bytes());
    let (status, body) = service
        .post("/tenants/globex/integrations/github/use", Some(globex))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    direct.close().await;

    let (log, responses) = service.stop();
    // The scan is not vacuous: the log holds the request lines, fieldseal's
    // spans and the shutdown.
    for expected in [
        "uri=/tenants/acme/integrations/github/use",
        "status=410",
        "fieldseal.provider",
        "fieldseal.store",
        "fieldseal.admin",
        "stopped",
    ] {
        assert!(log.contains(expected), "the log lacks {expected:?}");
    }
    let root_key_text = std::fs::read_to_string(&root_key).unwrap();
    let root = base64::engine::general_purpose::STANDARD
        .decode(root_key_text.trim())
        .unwrap();
    assert_eq!(root.len(), 32);
    let mut forbidden: Vec<(String, String)> = forms::secret_forms(&root)
        .into_iter()
        .map(|form| ("the root key".to_string(), form))
        .collect();
    for secret in &secrets {
        for form in forms::secret_forms(secret.as_bytes()) {
            forbidden.push((format!("secret {secret}"), form));
        }
    }
    for (what, form) in &forbidden {
        assert!(
            !log.contains(form.as_str()),
            "the log shows {what} as {form}"
        );
    }
    // At rest: the SQLite files hold no secret and no token, only sealed
    // values and token hashes.
    if database_url.is_none() {
        let mut files = Vec::new();
        for name in ["app.db", "app.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                files.extend(bytes);
            }
        }
        assert!(files.len() > 4096, "the database files are missing");
        for secret in &secrets {
            assert!(
                !files.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the database files hold {secret} in plaintext"
            );
        }
    }
    for response in &responses {
        for (what, form) in &forbidden {
            // A token is in the one response that issues it, and nowhere else.
            let issued = what.starts_with("secret fst_")
                && response.contains("\"token\"")
                && response.contains(&what["secret ".len()..]);
            assert!(
                issued || !response.contains(form.as_str()),
                "a response shows {what} as {form}: {response}"
            );
        }
    }
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Slow clients, many clients, and a client that announces a large body it
/// never sends: the service cuts off headers that take too long, holds at
/// most `max_connections` connections, and answers a request with a wrong
/// token without waiting for its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_unauthenticated_clients_hold_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let admin_token = marker("admin-token");
    let service = Service::start_with(
        dir.path(),
        None,
        &admin_token,
        &[
            ("FIELDSEAL_SERVICE_HEADER_TIMEOUT", "1s"),
            ("FIELDSEAL_SERVICE_IDLE_TIMEOUT", "1s"),
            ("FIELDSEAL_SERVICE_REQUEST_TIMEOUT", "1s"),
            ("FIELDSEAL_SERVICE_MAX_CONNECTIONS", "16"),
            ("RUST_LOG", "warn"),
        ],
    );
    let (status, _) = service
        .post("/tenants/acme/tokens", Some(&admin_token))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let address = service.base.trim_start_matches("http://").to_string();
    let pid = service.child.id();
    let baseline = open_fds(pid);
    assert!(baseline > 0, "cannot count the service's file descriptors");

    // 64 clients that start a request and never finish its headers.
    let mut slow = Vec::new();
    for _ in 0..64 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // The service holds at most 16 of them at any time, and cuts each off
    // once its headers are late.
    let started = std::time::Instant::now();
    let mut most = 0;
    let mut closed = 0;
    while closed < slow.len() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{closed} of {} slow clients were cut off",
            slow.len()
        );
        most = most.max(open_fds(pid).saturating_sub(baseline));
        closed = 0;
        for stream in &mut slow {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(5), stream.read(&mut byte)).await {
                Ok(Ok(0) | Err(_)) => closed += 1,
                // A 408 before closing is also a cut-off.
                Ok(Ok(_)) => closed += 1,
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most <= 16 + 2,
        "the service held {most} more descriptors than at rest"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut off too early"
    );
    let (status, body) = service.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A wrong token with a body announced and never sent: refused at once.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            b"PUT /tenants/acme/integrations/github HTTP/1.1\r\nHost: x\r\n\
              Authorization: Bearer fst_wrong\r\nContent-Type: application/json\r\n\
              Content-Length: 60000\r\n\r\n{\"refresh_token\": \"",
        )
        .await
        .unwrap();
    let mut response = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response))
        .await
        .expect("the service waited for the body of an unauthenticated request")
        .unwrap();
    let head = String::from_utf8_lossy(&response[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    // A kept-alive connection left idle after its request is closed.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = stream.read(&mut response).await.unwrap();
    assert!(String::from_utf8_lossy(&response[..n]).starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut response).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle kept-alive connection stayed open");
    drop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lifecycle_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    lifecycle(dir.path(), None, Direct::Sqlite(pool)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lifecycle_on_postgres() {
    const POSTGRES_URL: &str = "FIELDSEAL_TEST_POSTGRES_URL";
    let Some(url) = std::env::var(POSTGRES_URL).ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipping: {POSTGRES_URL} is not set (set it to a server URL to run this test)");
        return;
    };
    let admin = sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_URL} is set but the server is unreachable: {e}"));
    let name = format!("fieldseal_test_service_{:016x}", rand::random::<u64>());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let mut service_url = url::Url::parse(&url).unwrap();
    service_url.set_path(&name);
    let service_url = service_url.to_string();
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlx::PgPool::connect(&service_url).await.unwrap();
    let outcome = tokio::spawn({
        let dir = dir.path().to_path_buf();
        let service_url = service_url.clone();
        async move { lifecycle(&dir, Some(&service_url), Direct::Postgres(pool)).await }
    })
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Timeouts the server cannot keep are refused at start, naming the flag:
/// an idle timeout shorter than the request timeout (it would cut off a
/// request still being answered), zero, or one so far off it could overflow
/// the clock.
#[test]
fn timeouts_it_cannot_keep_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            &["--idle-timeout", "5s", "--request-timeout", "30s"][..],
            "shorter than --request-timeout",
        ),
        (&["--header-timeout", "0s"][..], "--header-timeout"),
        (&["--idle-timeout", "100000000days"][..], "--idle-timeout"),
    ] {
        let output = Command::new(service_exe())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("FIELDSEAL_SERVICE_DIR", dir.path())
            .env(
                "FIELDSEAL_SERVICE_ADMIN_TOKEN",
                "a-long-enough-admin-token-for-tests",
            )
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

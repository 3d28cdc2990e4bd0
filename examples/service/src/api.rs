//! The HTTP API: routes, authentication, and errors that never carry a secret.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fieldseal::secrecy::ExposeSecret;
use fieldseal::{Error, KeyAdmin};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::db::Db;
use crate::vault::{TenantVault, Vault};

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) db: Db,
    pub(crate) vault: Vault,
    /// SHA-256 of the admin token.
    pub(crate) admin_token_hash: [u8; 32],
    pub(crate) metrics: PrometheusHandle,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.db.kind())
            .finish_non_exhaustive()
    }
}

type Shared = State<Arc<AppState>>;

/// The largest request body read, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// The routes.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/tenants/{tenant}/integrations", get(list_integrations))
        .route(
            "/tenants/{tenant}/integrations/{provider}",
            put(put_integration),
        )
        .route(
            "/tenants/{tenant}/integrations/{provider}/use",
            post(use_integration),
        )
        .route("/tenants/{tenant}/tokens", post(issue_token))
        .route("/tenants/{tenant}/rotate", post(rotate_tenant))
        .route("/tenants/{tenant}", axum::routing::delete(erase_tenant))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        // Credentials are small; refuse large bodies before reading them.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // One log line per request: method, path, status and latency. The
        // default span records neither headers (bearer tokens) nor bodies.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// An error response: a stable code and a message for the caller. Neither
/// ever holds a secret: fieldseal's errors carry identifiers only.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.code, "message": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match &e {
            Error::TenantShredded {
                tenant,
                shredded_at,
                ..
            } => Self::new(
                StatusCode::GONE,
                "erased",
                format!(
                    "tenant {tenant} was erased on {shredded_at}: its credentials can never be \
                     read again"
                ),
            ),
            Error::UnknownTenant { tenant, .. } => Self::new(
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                format!("tenant {tenant} does not exist: an admin creates it by issuing a token"),
            ),
            // After `Sealer::open` has reloaded the tenant's keys, an unknown
            // version is one this key store never held: a foreign value.
            Error::OpenFailed
            | Error::UnknownKeyVersion { .. }
            | Error::Malformed { .. }
            | Error::UnsupportedVersion { .. }
            | Error::UnsupportedAlgorithm { .. } => {
                // A value that does not open where it is stored was altered or
                // moved: a security event for the operator, an opaque error
                // for the caller.
                tracing::error!(kind = e.kind().as_str(), error = %e, "stored credential does not open");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "credential_unreadable",
                    "the stored credential does not open for this tenant and row: it was altered \
                     or copied from elsewhere; store it again",
                )
            }
            Error::KeyDestroyed { .. }
            | Error::KeyDisabled { .. }
            | Error::BelowMinimumVersion { .. } => Self::new(
                StatusCode::CONFLICT,
                "credential_unavailable",
                e.to_string(),
            ),
            Error::InvalidContext { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_tenant", e.to_string())
            }
            Error::PlaintextTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            Error::TenantMismatch { .. } => {
                tracing::error!(kind = e.kind().as_str(), error = %e, "a tenant handle met another tenant");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
            _ => {
                tracing::error!(kind = e.kind().as_str(), error = %e, "key service failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "key_service_unavailable",
                    "the key service failed; retry later",
                )
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database failed; retry later",
        )
    }
}

type ApiResult = Result<Response, ApiError>;

/// Seconds since the Unix epoch.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send `Authorization: Bearer <token>`",
    )
}

impl AppState {
    /// Lets the request through only with the admin token.
    fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = bearer(headers).ok_or_else(unauthorized)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(hash.ct_eq(&self.admin_token_hash)) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs the admin token",
            ))
        }
    }

    /// Lets the request through only with a token of `tenant` itself. This is
    /// the first of two walls between tenants; the second is the sealed
    /// values' context, which names the tenant and the row.
    async fn require_tenant(&self, headers: &HeaderMap, tenant: &str) -> Result<(), ApiError> {
        let token = bearer(headers).ok_or_else(unauthorized)?;
        let hash = Sha256::digest(token.as_bytes());
        match self.db.token_tenant(&hash).await? {
            Some(owner) if owner == tenant => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token belongs to another tenant",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown token",
            )),
        }
    }
}

/// A provider name: lowercase letters, digits, `-` and `_`, 1 to 64 of them.
fn check_provider(provider: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&provider.len())
        && provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_provider",
            "a provider name is 1 to 64 of a-z, 0-9, - and _",
        ))
    }
}

/// The body of `PUT …/integrations/{provider}`. Zeroized when dropped.
///
/// (The request's raw bytes, buffered by the HTTP stack, are not: a process
/// that receives secrets over HTTP holds them briefly in buffers it does not
/// own. fieldseal's job starts at the seal.)
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct NewIntegration {
    refresh_token: String,
    api_secret: String,
}

impl std::fmt::Debug for NewIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewIntegration { .. }")
    }
}

/// The last four characters of a secret, for listings, or nothing when the
/// secret is too short to spare them.
fn hint_of(secret: &str) -> String {
    let chars = secret.chars().count();
    if chars < 16 {
        return String::new();
    }
    secret.chars().skip(chars - 4).collect()
}

/// `PUT /tenants/{t}/integrations/{provider}`: stores a refresh token and an
/// API secret, each sealed for its row.
async fn put_integration(
    State(state): Shared,
    Path((tenant, provider)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    // Authenticate before reading the body (the `Body` extractor reads
    // nothing: the bytes are read below, after the token is checked), and
    // never echo a parse error: serde's messages quote the input, which here
    // is a secret.
    state.require_tenant(&headers, &tenant).await?;
    check_provider(&provider)?;
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_body",
            format!("send at most {MAX_BODY} bytes"),
        )
    })?;
    let body: NewIntegration = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "send a JSON object with the strings refresh_token and api_secret",
        )
    })?;
    if body.refresh_token.is_empty() || body.api_secret.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_secret",
            "refresh_token and api_secret must not be empty",
        ));
    }
    let mut hint = hint_of(&body.api_secret);
    // Before the transaction: loads (or, on a cache miss, unwraps) the
    // tenant's key, so that sealing inside the transaction is synchronous.
    let keys = state.vault.tenant(&tenant).await?;
    state
        .db
        .upsert_integration(&tenant, &provider, now(), |id| {
            keys.seal(
                &tenant,
                &provider,
                id,
                body.refresh_token.as_bytes(),
                body.api_secret.as_bytes(),
                hint.as_bytes(),
            )
        })
        .await??;
    let key_version = match &keys {
        TenantVault::Sealed(keys) => Some(keys.primary_version()),
        TenantVault::Plaintext => None,
    };
    let response = json!({
        "provider": provider,
        "hint": format!("…{hint}"),
        "key_version": key_version,
    });
    hint.zeroize();
    Ok((StatusCode::OK, Json(response)).into_response())
}

/// `GET /tenants/{t}/integrations`: the tenant's integrations with a masked
/// hint; never a secret. After erasure, every row says so.
async fn list_integrations(
    State(state): Shared,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.require_tenant(&headers, &tenant).await?;
    let rows = state.db.integrations(&tenant).await?;
    let keys = match state.vault.tenant(&tenant).await {
        Ok(keys) => keys,
        Err(Error::TenantShredded { shredded_at, .. }) => {
            let items: Vec<Value> = rows
                .iter()
                .map(|row| json!({ "provider": row.provider, "status": "erased" }))
                .collect();
            let body = json!({
                "tenant": tenant,
                "erased_at": shredded_at.to_string(),
                "integrations": items,
            });
            return Ok(Json(body).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    drop(keys);
    let mut items: Vec<Value> = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(
            match state
                .vault
                .open_hint(&tenant, &row.provider, row.id, &row.secret_hint)
                .await
            {
                Ok(hint) => json!({
                    "provider": row.provider,
                    "status": "active",
                    "hint": format!("…{hint}"),
                    "updated_at": row.updated_at,
                }),
                // One bad row does not hide the others.
                Err(e) => {
                    let error = ApiError::from(e);
                    json!({
                        "provider": row.provider,
                        "status": "unreadable",
                        "error": error.code,
                        "message": error.message,
                    })
                }
            },
        );
    }
    Ok(Json(json!({ "tenant": tenant, "integrations": items })).into_response())
}

/// What the simulated OAuth provider answers to a refresh.
fn simulate_token_refresh(provider: &str, refresh_token: &[u8], client_secret: &[u8]) -> Value {
    // A real service would POST both to the provider's token endpoint here.
    // The simulation checks what the provider would and answers as it would,
    // without echoing anything it was sent.
    let accepted = !refresh_token.is_empty()
        && !client_secret.is_empty()
        && refresh_token.iter().all(u8::is_ascii_graphic);
    if accepted {
        json!({ "provider": provider, "upstream_status": 200, "access_token_expires_in": 3600 })
    } else {
        json!({ "provider": provider, "upstream_status": 400, "upstream_error": "invalid_grant" })
    }
}

/// `POST /tenants/{t}/integrations/{provider}/use`: opens the refresh token
/// and API secret server-side, uses them, and returns only the outcome.
async fn use_integration(
    State(state): Shared,
    Path((tenant, provider)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    state.require_tenant(&headers, &tenant).await?;
    check_provider(&provider)?;
    let row = state
        .db
        .integration(&tenant, &provider)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_integration",
                format!("tenant {tenant} has no {provider} integration"),
            )
        })?;
    let opened = state
        .vault
        .open(
            &tenant,
            &provider,
            row.id,
            &row.refresh_token,
            &row.api_secret,
            &row.secret_hint,
        )
        .await?;
    let mut outcome = simulate_token_refresh(
        &provider,
        opened.refresh_token.expose_secret(),
        opened.api_secret.expose_secret(),
    );
    // Rows move to the tenant's new key as they are used after a rotation;
    // the rotation runner (`fieldseal`, pointed at this table) moves
    // the rest, so that the old version can be retired.
    // The credentials were used already: a failed write-back is logged,
    // not returned as a failure that would invite a retry.
    if let Some(resealed) = &opened.resealed {
        let wrote = match state
            .db
            .replace_sealed(row.id, &row.refresh_token, resealed)
            .await
        {
            Ok(wrote) => wrote,
            Err(e) => {
                tracing::warn!(error = %e, "could not write back a re-sealed row");
                false
            }
        };
        outcome["resealed"] = json!(wrote);
    }
    Ok(Json(outcome).into_response())
}

/// `POST /tenants/{t}/tokens` (admin): creates the tenant if it is new and
/// issues an API token for it. The token is in this response only; the
/// service keeps its SHA-256.
async fn issue_token(
    State(state): Shared,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.require_admin(&headers)?;
    if let Vault::Sealed(sealer) = &state.vault {
        sealer.create_tenant(&tenant).await?;
    }
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    let token = format!("fst_{}", URL_SAFE_NO_PAD.encode(raw));
    raw.zeroize();
    let hash = Sha256::digest(token.as_bytes());
    state.db.insert_token(&hash, &tenant, now()).await?;
    tracing::info!(tenant, "issued an API token");
    let body = json!({ "tenant": tenant, "token": token });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn admin(state: &AppState) -> Result<KeyAdmin, ApiError> {
    match &state.vault {
        Vault::Sealed(sealer) => Ok(sealer.admin().actor("service-admin-api")),
        Vault::Plaintext => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "plaintext_baseline",
            "the plaintext baseline has no keys",
        )),
    }
}

/// `POST /tenants/{t}/rotate` (admin): a new primary key version for the
/// tenant. Old values keep opening; `use` re-seals them as it meets them.
async fn rotate_tenant(
    State(state): Shared,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.require_admin(&headers)?;
    let rotation = admin(&state)?.rotate(&tenant).await?;
    let body = json!({
        "tenant": tenant,
        "previous_version": rotation.previous,
        "primary_version": rotation.primary,
    });
    Ok(Json(body).into_response())
}

/// `DELETE /tenants/{t}` (admin): crypto-shreds the tenant. Its rows stay in
/// the table, and can never be opened again: the keys are gone.
async fn erase_tenant(
    State(state): Shared,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.require_admin(&headers)?;
    let erased_at = admin(&state)?.shred_tenant(&tenant).await?;
    let body = json!({ "tenant": tenant, "erased_at": erased_at.to_string() });
    Ok(Json(body).into_response())
}

/// `GET /metrics`: Prometheus text format (fieldseal's `fieldseal_*` metrics;
/// docs/OBSERVABILITY.md).
async fn render_metrics(State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: the database answers.
async fn healthz(State(state): Shared) -> ApiResult {
    state.db.ping().await?;
    Ok(Json(json!({ "status": "ok", "database": state.db.kind() })).into_response())
}

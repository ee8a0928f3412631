//! The enrollment and admin API: JSON over HTTP, bearer-token auth.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET  | `/health` | liveness and sync counters (no token needed) |
//! | POST | `/v1/numbers` | register a number (pending) |
//! | GET  | `/v1/numbers[?account=A]` | list |
//! | GET  | `/v1/numbers/{number}` | one number |
//! | GET  | `/v1/numbers/{number}/audit` | its audit log |
//! | POST | `/v1/numbers/{number}/revoke` | revoke (takes it off the fast path) |
//! | POST | `/v1/numbers/{number}/verification` | start a verification (`call`, `message`, `missed_call`) |
//! | POST | `/v1/numbers/{number}/verification/code` | submit a code received by message |

pub mod cli;
pub mod client;
pub mod error;
#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Context, bail};
use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, Request, State, rejection::*},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

pub use error::{ApiError, ErrorBody};

use crate::{
    registry::{Method, NumberRecord, PeerAddress, Registry, Store, service::Started},
    sync::SyncCounters,
    verify::Channel,
};

/// Where the token comes from when the config has none.
pub const TOKEN_ENV: &str = "FASTPATH_API_TOKEN";

/// The token the API requires: from the config, else the environment. Without one, the
/// API may only listen on loopback (then anyone on this host may use it).
pub fn resolve_token(
    listen: SocketAddr,
    configured: Option<&str>,
    env: Option<String>,
) -> anyhow::Result<Option<String>> {
    let token = configured
        .map(str::to_owned)
        .or(env)
        .filter(|t| !t.trim().is_empty());
    if let Some(t) = &token {
        if t.len() < 16 {
            bail!("api.token: at least 16 characters");
        }
    } else if !listen.ip().is_loopback() {
        bail!(
            "api: refusing to listen on {listen} without a token (set api.token or {TOKEN_ENV}, or listen on loopback)"
        );
    }
    Ok(token)
}

pub struct ApiState<S, C> {
    pub registry: Registry<S, C>,
    pub token: Option<Arc<str>>,
    pub sync: Option<Arc<SyncCounters>>,
}

impl<S, C> Clone for ApiState<S, C> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            token: self.token.clone(),
            sync: self.sync.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub number: String,
    pub account: String,
    pub peer: PeerAddress,
    #[serde(default = "yes")]
    pub opt_in: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub method: Method,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub code: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    account: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub routes: Option<u64>,
    pub peers: Option<u64>,
    pub updates: Option<u64>,
    pub reconciles: Option<u64>,
    pub repairs: Option<u64>,
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router<S: Store, C: Channel>(state: ApiState<S, C>) -> Router {
    let v1 = Router::new()
        .route("/v1/numbers", get(list::<S, C>).post(register::<S, C>))
        .route("/v1/numbers/{number}", get(show::<S, C>))
        .route("/v1/numbers/{number}/audit", get(audit::<S, C>))
        .route("/v1/numbers/{number}/revoke", post(revoke::<S, C>))
        .route("/v1/numbers/{number}/verification", post(start::<S, C>))
        .route(
            "/v1/numbers/{number}/verification/code",
            post(submit::<S, C>),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::<S, C>));
    Router::new()
        .route("/health", get(health::<S, C>))
        .merge(v1)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

/// Serves the API until `shutdown` resolves.
pub async fn serve<S: Store, C: Channel>(
    listener: tokio::net::TcpListener,
    state: ApiState<S, C>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("API server")
}

async fn auth<S: Store, C: Channel>(
    State(state): State<ApiState<S, C>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant time: the token is a secret.
        let ok = given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()));
        if !ok {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(request).await
}

async fn health<S: Store, C: Channel>(State(state): State<ApiState<S, C>>) -> Json<Health> {
    let c = state.sync.as_deref();
    let read = |f: fn(&SyncCounters) -> &std::sync::atomic::AtomicU64| {
        c.map(|c| f(c).load(Ordering::Relaxed))
    };
    Json(Health {
        status: "ok".into(),
        routes: read(|c| &c.routes),
        peers: read(|c| &c.peers),
        updates: read(|c| &c.updates),
        reconciles: read(|c| &c.reconciles),
        repairs: read(|c| &c.repairs),
    })
}

async fn register<S: Store, C: Channel>(
    State(state): State<ApiState<S, C>>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<NumberRecord>)> {
    let Json(req) = body?;
    let record = state
        .registry
        .register(&req.number, &req.account, req.peer, req.opt_in)
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn list<S: Store, C: Channel>(
    State(state): State<ApiState<S, C>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<NumberRecord>>> {
    let Query(q) = query?;
    Ok(Json(state.registry.list(q.account).await?))
}

async fn show<S: Store, C: Channel>(
    State(state): State<ApiState<S, C>>,
    number: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<NumberRecord>> {
    let Path(number) = number?;
    Ok(Json(state.registry.get(&number).await?))
}

async fn audit<S: Store, C: Channel>(
    State(state): State<ApiState<S, C>>,
    number: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<crate::registry::AuditEntry>>> {
    let Path(number) = number?;
    // 404 for a number that was never registered, rather than an empty log.
    state.registry.get(&number).await?;
    Ok(Json(state.registry.audit(&number).await?))
}

async fn revoke<S: Store, C: Channel>(
    State(state): State<ApiState<S, C>>,
    number: Result<Path<String>, PathRejection>,
    body: Result<Option<Json<RevokeRequest>>, JsonRejection>,
) -> ApiResult<Json<NumberRecord>> {
    let Path(number) = number?;
    let reason = body?
        .and_then(|Json(b)| b.reason)
        .unwrap_or_else(|| "revoked through the API".into());
    Ok(Json(state.registry.revoke(&number, &reason).await?))
}

async fn start<S: Store, C: Channel>(
    State(state): State<ApiState<S, C>>,
    number: Result<Path<String>, PathRejection>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let Path(number) = number?;
    let Json(req) = body?;
    let started = state
        .registry
        .start_verification(&number, req.method)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(started)))
}

async fn submit<S: Store, C: Channel>(
    State(state): State<ApiState<S, C>>,
    number: Result<Path<String>, PathRejection>,
    body: Result<Json<CodeRequest>, JsonRejection>,
) -> ApiResult<Json<NumberRecord>> {
    let Path(number) = number?;
    let Json(req) = body?;
    Ok(Json(state.registry.submit_code(&number, &req.code).await?))
}

//! The node's HTTP API (axum): dashboard, health, metrics, datasets, peers, OpenAPI.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | the dashboard: an HTML page (see [`crate::dashboard`]) |
//! | `GET /healthz` | `{"status":"ok","name":..,"version":..}` |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /api/datasets` | `{"datasets":[..]}`: name, table, columns, sha256, status, validated_at |
//! | `GET /api/datasets/{name}` | one dataset, or 404 `{"error":{"code":"unknown_dataset",..}}` |
//! | `GET /api/peers` | `{"peers":[..]}`: name, ed25519_public, tls_fingerprint, mpc_address, paired_at |
//! | `POST /api/pair` | complete a pairing invitation (see [`crate::pairing`]) |
//! | `GET /openapi.json` | the OpenAPI 3.0 description of these routes |
//!
//! Row data is never served, and neither are row counts or file paths (they
//! stay local: `concord dataset list`). Errors are JSON
//! `{"error":{"code":..,"message":..}}`.
//!
//! [`serve`] takes its listener and a shutdown future (after mini-redis'
//! `server::run`): when the future completes the server stops accepting,
//! lets in-flight requests finish, and returns.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_query::{ColumnType, Schema};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::dashboard::{self, DashboardView, EventView, PeerView};
use crate::pairing::{PairFields, PairReply, PairRequest};
use crate::store::{DatasetRecord, DatasetStatus, PeerRecord, Store};
use crate::NodeError;
use crate::{unhex, unix_now};

/// Shared state of the API.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    me: Option<PairFields>,
    version: String,
    store: Mutex<Store>,
    started: Instant,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl AppState {
    /// State for node `name` (version `version`) over `store`.
    pub fn new(name: &str, version: &str, store: Store) -> AppState {
        AppState::build(name, version, store, None)
    }

    /// State that also answers `POST /api/pair` with this node's public
    /// facts `me` (name, keys, MPC address).
    pub fn with_identity(version: &str, store: Store, me: PairFields) -> AppState {
        let name = me.name.clone();
        AppState::build(&name, version, store, Some(me))
    }

    fn build(name: &str, version: &str, store: Store, me: Option<PairFields>) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                me,
                name: name.to_owned(),
                version: version.to_owned(),
                store: Mutex::new(store),
                started: Instant::now(),
                requests: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Run `f` on the store (e.g. to re-validate datasets or log an event
    /// from outside a request). `None` if the store's lock is poisoned.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> Option<T> {
        self.inner.store.lock().ok().map(|mut s| f(&mut s))
    }

    fn store(&self) -> Result<MutexGuard<'_, Store>, ApiError> {
        self.inner.store.lock().map_err(|_| ApiError::internal("the store lock is poisoned".into()))
    }
}

/// An API error: HTTP status, stable code, message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn internal(message: String) -> ApiError {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        match e {
            NodeError::UnknownDataset(_) => {
                ApiError { status: StatusCode::NOT_FOUND, code: "unknown_dataset", message: e.to_string() }
            }
            NodeError::UnknownInvitation => {
                ApiError { status: StatusCode::NOT_FOUND, code: "unknown_invitation", message: e.to_string() }
            }
            NodeError::InvitationUsed { .. } => {
                ApiError { status: StatusCode::CONFLICT, code: "invitation_used", message: e.to_string() }
            }
            NodeError::InvitationExpired { .. } => {
                ApiError { status: StatusCode::GONE, code: "invitation_expired", message: e.to_string() }
            }
            NodeError::DuplicatePeer(_) => {
                ApiError { status: StatusCode::CONFLICT, code: "peer_exists", message: e.to_string() }
            }
            other => {
                tracing::error!(error = %other, "API request failed");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": { "code": self.code, "message": self.message } }))).into_response()
    }
}

/// The public view of a dataset.
#[derive(Debug, Serialize)]
struct DatasetView {
    name: String,
    table: String,
    max_rows: u64,
    min_group_size: Option<u64>,
    columns: Vec<Value>,
    sha256: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid_reason: Option<String>,
    validated_at: i64,
}

fn column_json(name: &str, ty: &ColumnType) -> Value {
    match ty {
        ColumnType::Int { min, max } => json!({ "name": name, "type": "int", "min": min, "max": max }),
        ColumnType::Decimal { scale, min, max } => {
            json!({ "name": name, "type": "decimal", "scale": scale, "min_scaled": min, "max_scaled": max })
        }
        ColumnType::Category { values } => json!({ "name": name, "type": "category", "values": values }),
    }
}

fn view(d: DatasetRecord) -> Result<DatasetView, ApiError> {
    let schema = Schema::from_toml(&d.schema_toml)
        .map_err(|e| ApiError::internal(format!("stored schema of dataset {:?} does not parse: {e}", d.name)))?;
    let (status, invalid_reason) = match d.status {
        DatasetStatus::Valid => ("valid", None),
        DatasetStatus::Invalid(r) => ("invalid", Some(r)),
    };
    Ok(DatasetView {
        name: d.name,
        table: schema.table,
        max_rows: schema.max_rows,
        min_group_size: schema.min_group_size,
        columns: schema.columns.iter().map(|c| column_json(&c.name, &c.ty)).collect(),
        sha256: d.file_sha256,
        status,
        invalid_reason,
        validated_at: d.validated_at,
    })
}

/// How many of the most recent events the dashboard shows.
const DASHBOARD_EVENTS: usize = 50;

/// The dashboard's view of what the store holds now. Peers' health is
/// `unknown` and there are no sessions until a source for them exists.
fn dashboard_view(state: &AppState) -> Result<DashboardView, ApiError> {
    let store = state.store()?;
    let peers = store
        .list_peers()?
        .into_iter()
        .map(|p| PeerView {
            name: p.name,
            address: p.address,
            health: "unknown".into(),
            last_seen: None,
            fingerprint: p.tls_fingerprint,
        })
        .collect();
    let datasets = store
        .list_datasets()?
        .into_iter()
        .map(|d| {
            // One unreadable schema must not take the whole page down.
            let (table, columns) = match Schema::from_toml(&d.schema_toml) {
                Ok(schema) => (schema.table, schema.columns.into_iter().map(|c| c.name).collect()),
                Err(_) => ("(unreadable schema)".to_owned(), Vec::new()),
            };
            let status = match d.status {
                DatasetStatus::Valid => "valid",
                DatasetStatus::Invalid(_) => "invalid",
            };
            dashboard::DatasetView {
                name: d.name,
                table,
                columns,
                status: status.into(),
                validated_at: Some(d.validated_at),
            }
        })
        .collect();
    let events = store
        .recent_events(DASHBOARD_EVENTS)?
        .into_iter()
        .map(|e| EventView { at: e.at, kind: e.kind, message: e.message })
        .collect();
    Ok(DashboardView {
        node: state.inner.name.clone(),
        version: state.inner.version.clone(),
        generated_at: unix_now(),
        peers,
        datasets,
        sessions: Vec::new(),
        events,
    })
}

/// `GET /`: the dashboard. No script may run and nothing is loaded from
/// elsewhere (a Content-Security-Policy backs up the escaping), and the page
/// is never cached, as it reloads itself.
async fn dashboard_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    let html = dashboard::render(&dashboard_view(&state)?);
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(html),
    )
        .into_response())
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "name": state.inner.name, "version": state.inner.version }))
}

async fn list_datasets(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let records = state.store()?.list_datasets()?;
    let views = records.into_iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "datasets": views })))
}

async fn get_dataset(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<DatasetView>, ApiError> {
    let Path(name) =
        name.map_err(|e| ApiError { status: StatusCode::BAD_REQUEST, code: "bad_request", message: e.body_text() })?;
    let record = state.store()?.get_dataset(&name)?;
    Ok(Json(view(record)?))
}

async fn list_peers(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let peers = state.store()?.list_peers()?;
    let peers: Vec<Value> = peers
        .into_iter()
        .map(|p| {
            json!({ "name": p.name, "ed25519_public": p.ed25519_public, "tls_fingerprint": p.tls_fingerprint,
                    "mpc_address": p.address, "paired_at": p.added_at })
        })
        .collect();
    Ok(Json(json!({ "peers": peers })))
}

fn bad_request(message: String) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, code: "bad_request", message }
}

/// `POST /api/pair`: complete a pairing started by `concord peer invite`.
async fn pair(
    State(state): State<AppState>,
    body: Result<Json<PairRequest>, JsonRejection>,
) -> Result<Json<PairReply>, ApiError> {
    let Json(req) = body.map_err(|e| bad_request(e.body_text()))?;
    let me = state.inner.me.clone().ok_or_else(|| ApiError::internal("this node cannot pair".into()))?;
    req.fields.check().map_err(bad_request)?;
    if req.expect_ed25519_public != me.ed25519_public || req.expect_tls_fingerprint != me.tls_fingerprint {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "identity_mismatch",
            message: "the invitation names another Ed25519 key or TLS fingerprint than this node's".into(),
        });
    }
    let mut store = state.store()?;
    let now = unix_now();
    let invitation = store.invitation(&req.invitation_id)?.ok_or(NodeError::UnknownInvitation)?;
    if let Some(used_at) = invitation.used_at {
        return Err(NodeError::InvitationUsed { used_at }.into());
    }
    if now >= invitation.expires_at {
        return Err(NodeError::InvitationExpired { expires_at: invitation.expires_at }.into());
    }
    let key: [u8; 32] = unhex(&invitation.mac_key)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| ApiError::internal("stored invitation key is corrupt".into()))?;
    if !req.fields.verify(&key, &req.invitation_id, false, &req.mac) {
        tracing::warn!(peer = %req.fields.name, "pairing request with a bad MAC refused");
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "bad_mac",
            message: "the request's MAC does not verify: the invitation's secret is wrong".into(),
        });
    }
    let peer = PeerRecord {
        name: req.fields.name.clone(),
        address: req.fields.mpc_address.clone(),
        api_address: String::new(),
        ed25519_public: req.fields.ed25519_public.clone(),
        tls_fingerprint: req.fields.tls_fingerprint.clone(),
        added_at: now,
    };
    store.accept_invitation(&req.invitation_id, now, &peer)?;
    drop(store);
    tracing::info!(peer = %peer.name, "paired");
    let mac = me.mac(&key, &req.invitation_id, true);
    Ok(Json(PairReply { fields: me, mac }))
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let datasets = state.store()?.count_datasets()?;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP concord_datasets Registered datasets.\n# TYPE concord_datasets gauge");
    let _ = writeln!(out, "concord_datasets {datasets}");
    let _ = writeln!(
        out,
        "# HELP concord_uptime_seconds Seconds since the node started.\n# TYPE concord_uptime_seconds gauge"
    );
    let _ = writeln!(out, "concord_uptime_seconds {}", state.inner.started.elapsed().as_secs());
    let _ = writeln!(
        out,
        "# HELP concord_http_requests_total HTTP requests answered, by route and status.\n\
         # TYPE concord_http_requests_total counter"
    );
    let requests = state.inner.requests.lock().map_err(|_| ApiError::internal("metrics lock poisoned".into()))?;
    for ((route, status), n) in requests.iter() {
        let _ = writeln!(out, "concord_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(openapi_document(&state.inner.version))
}

async fn not_found(request: Request) -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, code: "no_route", message: format!("no route {}", request.uri().path()) }
}

/// Count each answered request by matched route (known routes only, so a
/// scan of random paths cannot grow the table) and status.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let response = next.run(request).await;
    if let Ok(mut requests) = state.inner.requests.lock() {
        *requests.entry((route, response.status().as_u16())).or_insert(0) += 1;
    }
    response
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/api/datasets", get(list_datasets))
        .route("/api/datasets/{name}", get(get_dataset))
        .route("/api/peers", get(list_peers))
        .route("/api/pair", post(pair))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// Serve the API on `listener` until `shutdown` completes, then finish the
/// requests in flight and return.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP API listening");
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    tracing::info!("HTTP API stopped");
    Ok(())
}

/// The OpenAPI 3.0 document of the API.
pub fn openapi_document(version: &str) -> Value {
    let error = json!({ "description": "Error", "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Concord node API",
            "version": version,
            "description": "Dashboard, health, metrics, the datasets a Concord node offers, its peers and pairing. Row data, row counts and file paths are never served."
        },
        "paths": {
            "/": { "get": {
                "summary": "Dashboard: peers and their health, datasets, sessions, recent events (HTML, reloads every 2 s)",
                "responses": { "200": { "description": "The dashboard page", "content": { "text/html": {
                    "schema": { "type": "string" } } } },
                    "500": error }
            } },
            "/healthz": { "get": {
                "summary": "Liveness",
                "responses": { "200": { "description": "The node is up", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Health" } } } } }
            } },
            "/metrics": { "get": {
                "summary": "Prometheus metrics",
                "responses": { "200": { "description": "Prometheus text format", "content": { "text/plain": {
                    "schema": { "type": "string" } } } } }
            } },
            "/openapi.json": { "get": {
                "summary": "This document",
                "responses": { "200": { "description": "OpenAPI 3.0 document", "content": { "application/json": {
                    "schema": { "type": "object" } } } } }
            } },
            "/api/datasets": { "get": {
                "summary": "Registered datasets (public facts only)",
                "responses": { "200": { "description": "All datasets", "content": { "application/json": {
                    "schema": { "type": "object", "required": ["datasets"], "properties": {
                        "datasets": { "type": "array", "items": { "$ref": "#/components/schemas/Dataset" } } } } } } },
                    "500": error }
            } },
            "/api/peers": { "get": {
                "summary": "Paired peers (public facts only)",
                "responses": { "200": { "description": "All peers", "content": { "application/json": {
                    "schema": { "type": "object", "required": ["peers"], "properties": {
                        "peers": { "type": "array", "items": { "$ref": "#/components/schemas/Peer" } } } } } } },
                    "500": error }
            } },
            "/api/pair": { "post": {
                "summary": "Complete a one-time pairing invitation (created by `concord peer invite`)",
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/PairRequest" } } } },
                "responses": {
                    "200": { "description": "Paired: the inviting node's facts", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/PairReply" } } } },
                    "400": error, "401": error, "404": error, "409": error, "410": error, "500": error }
            } },
            "/api/datasets/{name}": { "get": {
                "summary": "One dataset",
                "parameters": [ { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": {
                    "200": { "description": "The dataset", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Dataset" } } } },
                    "400": error,
                    "404": error,
                    "500": error }
            } }
        },
        "components": { "schemas": {
            "Health": { "type": "object", "required": ["status", "name", "version"], "properties": {
                "status": { "type": "string", "enum": ["ok"] },
                "name": { "type": "string" },
                "version": { "type": "string" } } },
            "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                "type": "object", "required": ["code", "message"], "properties": {
                    "code": { "type": "string", "enum": ["unknown_dataset", "no_route", "bad_request", "internal",
                        "unknown_invitation", "invitation_used", "invitation_expired", "bad_mac", "peer_exists", "identity_mismatch"] },
                    "message": { "type": "string" } } } } },
            "Peer": { "type": "object",
                "required": ["name", "ed25519_public", "tls_fingerprint", "mpc_address", "paired_at"],
                "properties": {
                    "name": { "type": "string" },
                    "ed25519_public": { "type": "string" },
                    "tls_fingerprint": { "type": "string" },
                    "mpc_address": { "type": "string" },
                    "paired_at": { "type": "integer" } } },
            "PairRequest": { "type": "object",
                "required": ["invitation_id", "name", "ed25519_public", "tls_fingerprint", "mpc_address",
                    "expect_ed25519_public", "expect_tls_fingerprint", "mac"],
                "properties": {
                    "invitation_id": { "type": "string", "description": "SHA-256 of the invitation's secret, hex" },
                    "expect_ed25519_public": { "type": "string", "description": "the inviter's key, from the invitation" },
                    "expect_tls_fingerprint": { "type": "string", "description": "the inviter's fingerprint, from the invitation" },
                    "name": { "type": "string" },
                    "ed25519_public": { "type": "string" },
                    "tls_fingerprint": { "type": "string" },
                    "mpc_address": { "type": "string" },
                    "mac": { "type": "string", "description": "HMAC-SHA256, hex (see the pairing module)" } } },
            "PairReply": { "type": "object",
                "required": ["name", "ed25519_public", "tls_fingerprint", "mpc_address", "mac"],
                "properties": {
                    "name": { "type": "string" },
                    "ed25519_public": { "type": "string" },
                    "tls_fingerprint": { "type": "string" },
                    "mpc_address": { "type": "string" },
                    "mac": { "type": "string" } } },
            "Column": { "type": "object", "required": ["name", "type"], "properties": {
                "name": { "type": "string" },
                "type": { "type": "string", "enum": ["int", "decimal", "category"] },
                "min": { "type": "integer", "description": "int: smallest value" },
                "max": { "type": "integer", "description": "int: largest value" },
                "scale": { "type": "integer", "description": "decimal: digits after the point" },
                "min_scaled": { "type": "integer", "description": "decimal: smallest value times 10^scale" },
                "max_scaled": { "type": "integer", "description": "decimal: largest value times 10^scale" },
                "values": { "type": "array", "items": { "type": "string" }, "description": "category: the declared values" } } },
            "Dataset": { "type": "object",
                "required": ["name", "table", "max_rows", "columns", "sha256", "status", "validated_at"],
                "properties": {
                    "name": { "type": "string" },
                    "table": { "type": "string" },
                    "max_rows": { "type": "integer" },
                    "min_group_size": { "type": "integer", "nullable": true },
                    "columns": { "type": "array", "items": { "$ref": "#/components/schemas/Column" } },
                    "sha256": { "type": "string", "description": "SHA-256 of the data file, hex" },
                    "status": { "type": "string", "enum": ["valid", "invalid"] },
                    "invalid_reason": { "type": "string" },
                    "validated_at": { "type": "integer", "description": "Unix seconds of the last validation" } } }
        } }
    })
}

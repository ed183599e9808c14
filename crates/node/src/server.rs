//! The node's HTTP API (axum): dashboard, health, metrics, datasets, peers, pairing, sessions, OpenAPI.
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
//! | `POST /api/sessions` | submit a query as a session ([`crate::service::Service::submit`]) |
//! | `GET /api/sessions` | recent sessions |
//! | `GET /api/sessions/{id}?wait_ms=` | one session (long poll), with sealed results when done |
//! | `POST /api/sessions/{id}/cancel` | cancel a session this node coordinates |
//! | `GET /api/audit?limit=N` | the most recent audit entries and the signed head ([`crate::audit`]) |
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

use crate::dashboard::{self, DashboardView, EventView, PeerView, SessionView};
use crate::pairing::{PairFields, PairReply, PairRequest};
use crate::service::Service;
use crate::service::{parse_plan, ServiceError, SubmitRequest};
use crate::store::{DatasetRecord, DatasetStatus, PeerRecord, SessionRecord, Store};
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
    store: Arc<Mutex<Store>>,
    service: Option<Service>,
    started: Instant,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Token every form of the approvals page carries (against cross-site request forgery).
    csrf: String,
}

/// A fresh anti-forgery token: 16 bytes from the operating system, hex.
fn csrf_token() -> String {
    use rand_core::{OsRng, TryRngCore};
    let mut t = [0u8; 16];
    // A failing OS RNG leaves an all-zero token... refuse forms then instead.
    if OsRng.try_fill_bytes(&mut t).is_err() {
        return String::new();
    }
    crate::hex(&t)
}

impl AppState {
    /// The default privacy budget of this node (its service's, or the built-in default).
    pub fn default_budget(&self) -> f64 {
        self.inner.service.as_ref().map_or(crate::config::DEFAULT_BUDGET_RHO, |s| s.privacy().budget_rho)
    }

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

    /// State of a running node: pairing, sessions and the failure detector
    /// through `service`, which shares `store`.
    pub fn with_service(version: &str, store: Arc<Mutex<Store>>, me: PairFields, service: Service) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                name: me.name.clone(),
                me: Some(me),
                version: version.to_owned(),
                store,
                service: Some(service),
                started: Instant::now(),
                requests: Mutex::new(BTreeMap::new()),
                csrf: csrf_token(),
            }),
        }
    }

    /// The node service, if this server runs with one.
    pub(crate) fn node_service(&self) -> Option<&Service> {
        self.inner.service.as_ref()
    }

    fn service(&self) -> Result<&Service, ApiError> {
        self.inner.service.as_ref().ok_or_else(|| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "no_service",
            message: "this server runs without the node service".into(),
        })
    }

    fn build(name: &str, version: &str, store: Store, me: Option<PairFields>) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                me,
                name: name.to_owned(),
                version: version.to_owned(),
                store: Arc::new(Mutex::new(store)),
                service: None,
                started: Instant::now(),
                requests: Mutex::new(BTreeMap::new()),
                csrf: csrf_token(),
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
            NodeError::UnknownSession(_) => {
                ApiError { status: StatusCode::NOT_FOUND, code: "unknown_session", message: e.to_string() }
            }
            NodeError::UnknownPeer(_) => {
                ApiError { status: StatusCode::NOT_FOUND, code: "unknown_peer", message: e.to_string() }
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
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Every refusal reaches the log with the code and message the client sees.
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = self.code, message = %self.message, "API request failed");
        } else {
            tracing::warn!(status = self.status.as_u16(), code = self.code, message = %self.message, "API request refused");
        }
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

/// Sessions shown on the dashboard (most recent first).
const DASHBOARD_SESSIONS: usize = 20;

/// How many of the most recent events the dashboard shows.
const DASHBOARD_EVENTS: usize = 50;

/// The dashboard's view of what the store holds now. Peers' health is
/// `unknown` and there are no sessions until a source for them exists.
/// Sessions this node's operator may decide on: waiting for approval, or pending/running (veto).
fn approval_views(state: &AppState) -> Result<Vec<dashboard::ApprovalView>, ApiError> {
    let Some(service) = state.inner.service.as_ref() else { return Ok(Vec::new()) };
    let waiting: Vec<String> = service.pending_approvals()?.into_iter().map(|p| p.id).collect();
    let records = state.store()?.list_sessions(100)?;
    let mut out = Vec::new();
    for rec in records.into_iter().filter(|r| !r.state.is_terminal()) {
        let Ok(plan) = parse_plan(&rec) else { continue };
        let mut description =
            plan.spec.prepare().map(|p| p.describe()).unwrap_or_else(|e| vec![format!("(unplannable: {e})")]);
        if let Some(Some(line)) = state.with_store(|s| crate::approval::describe(&plan, s)) {
            description.push(line);
        }
        out.push(dashboard::ApprovalView {
            awaiting: waiting.contains(&rec.id),
            id: rec.id,
            state: rec.state.name().to_owned(),
            analyst: plan.analyst.clone(),
            coordinator: plan.coordinator.clone(),
            parties: plan.parties.iter().map(|p| p.name.clone()).collect(),
            description,
        });
    }
    Ok(out)
}

/// `GET /approvals`: the operator's page, with approve, reject and veto forms.
async fn approvals_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    let page = dashboard::ApprovalsPage {
        node: state.inner.name.clone(),
        csrf: state.inner.csrf.clone(),
        sessions: approval_views(&state)?,
        unlocks: unlock_views(&state)?,
    };
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(dashboard::render_approvals(&page)),
    )
        .into_response())
}

/// A form of the approvals page.
#[derive(serde::Deserialize)]
struct DecisionForm {
    csrf: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Unlock requests waiting for this node's operator (any requester, this node included).
fn unlock_views(state: &AppState) -> Result<Vec<dashboard::UnlockView>, ApiError> {
    let requests = crate::unlock::list_requests(&*state.store()?)?;
    Ok(requests
        .into_iter()
        .filter(|r| r.decision == "pending")
        .map(|r| dashboard::UnlockView {
            id: r.id,
            consortium: r.consortium,
            requester: r.requester,
            reason: r.reason,
            size: r.size,
            digest: r.digest,
            created_at: r.created_at,
        })
        .collect())
}

/// A form posted from the approvals page: its anti-forgery token must be this node's.
fn page_form(state: &AppState, body: &[u8]) -> Result<DecisionForm, ApiError> {
    let form: DecisionForm =
        serde_urlencoded::from_bytes(body).map_err(|e| bad_request(format!("the form is malformed: {e}")))?;
    let expected = state.inner.csrf.as_bytes();
    if expected.is_empty() || !bool::from(subtle::ConstantTimeEq::ct_eq(form.csrf.as_bytes(), expected)) {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "bad_csrf_token",
            message: "the form's token is not this node's (reload the approvals page)".into(),
        });
    }
    Ok(form)
}

/// `POST /ui/unlock-requests/{id}/{approve|reject}` (form): release this node's
/// decryption share, or refuse, from the page.
async fn decide_unlock_from_page(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Path((id, action)) = path.map_err(|e| bad_request(e.body_text()))?;
    let form = page_form(&state, &body)?;
    let decision = match action.as_str() {
        "approve" => crate::unlock::Decision::Approve,
        "reject" => crate::unlock::Decision::Reject,
        other => return Err(bad_request(format!("unknown decision {other:?}: expected approve or reject"))),
    };
    let reason = form.reason.filter(|r| !r.trim().is_empty());
    state.service()?.decide_unlock(&id, decision, "the dashboard", reason.as_deref()).await?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/approvals")]).into_response())
}

/// `POST /ui/sessions/{id}/{approve|veto}` (form): the operator's decision from the page.
async fn decide_from_page(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Path((id, action)) = path.map_err(|e| bad_request(e.body_text()))?;
    let form = page_form(&state, &body)?;
    let service = state.service()?;
    match action.as_str() {
        "approve" => service.approve(&id, "the dashboard").await?,
        "veto" => {
            let reason = form.reason.filter(|r| !r.trim().is_empty()).unwrap_or_else(|| "no reason given".into());
            service.veto(&id, "the dashboard", &reason).await?
        }
        other => return Err(bad_request(format!("unknown decision {other:?}: expected approve or veto"))),
    }
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/approvals")]).into_response())
}

fn dashboard_view(state: &AppState) -> Result<DashboardView, ApiError> {
    // Before the store's lock is taken below (the service takes it too).
    let approvals = approval_views(state)?;
    let unlocks = unlock_views(state)?;
    let health = state.inner.service.as_ref().map(Service::health).unwrap_or_default();
    let store = state.store()?;
    let peers = store
        .list_peers()?
        .into_iter()
        .map(|p| {
            let h = health.get(&p.name);
            let status = match (p.revoked_at, h) {
                (Some(_), _) => "revoked".to_owned(),
                (None, Some(h)) if !h.state.is_empty() => h.state.clone(),
                _ => "unknown".to_owned(),
            };
            PeerView {
                name: p.name,
                address: p.address,
                health: status,
                last_seen: h.and_then(|h| h.last_seen),
                fingerprint: p.tls_fingerprint,
            }
        })
        .collect();
    let sessions = store
        .list_sessions(DASHBOARD_SESSIONS)?
        .into_iter()
        .map(|r| {
            let (sql, parties) = match parse_plan(&r) {
                Ok(plan) => {
                    let sql = match plan.spec.privacy {
                        Some(p) if !plan.spec.sql.to_ascii_lowercase().contains("with privacy") => {
                            format!("{} [differential privacy: {p}, analyst {}]", plan.spec.sql, plan.analyst)
                        }
                        _ => plan.spec.sql,
                    };
                    (sql, plan.parties.into_iter().map(|p| p.name).collect())
                }
                Err(_) => ("(unreadable plan)".to_owned(), Vec::new()),
            };
            let progress = store.progress(&r.id).unwrap_or_default().into_iter().map(|p| (p.party, p.phase)).collect();
            SessionView {
                id: r.id,
                state: r.state.name().to_owned(),
                sql,
                parties,
                coordinator: r.coordinator,
                created_at: r.created_at,
                finished_at: r.finished_at,
                reason: r.reason,
                progress,
            }
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
    let budgets = store
        .list_budgets(state.default_budget())?
        .into_iter()
        .map(|b| {
            let v = budget_json(&b);
            let eps = v["remaining_epsilon_at_delta_1e-6"]
                .as_f64()
                .map_or_else(String::new, |e| format!(" ≈ ({e:.3}, 1e-6)-DP"));
            dashboard::BudgetView {
                remaining: format!("{:.4}{eps}", b.remaining()),
                spent: format!("{:.4}", b.spent),
                budget: format!("{:.4}", b.budget),
                analyst: b.analyst,
                dataset: b.dataset,
            }
        })
        .collect();
    let events = store
        .recent_events(DASHBOARD_EVENTS)?
        .into_iter()
        .map(|e| EventView { at: e.at, kind: e.kind, message: e.message })
        .collect();
    let audit_trail = crate::audit::dashboard_trail(&store, DASHBOARD_EVENTS)?;
    Ok(DashboardView {
        node: state.inner.name.clone(),
        version: state.inner.version.clone(),
        generated_at: unix_now(),
        peers,
        datasets,
        sessions,
        events,
        budgets,
        approvals,
        unlocks,
        // Audit trail (crate::audit).
        audit: audit_trail.0,
        audit_head: audit_trail.1,
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
    let health = state.inner.service.as_ref().map(Service::health).unwrap_or_default();
    let peers: Vec<Value> = peers
        .into_iter()
        .map(|p| {
            let h = health.get(&p.name);
            let status = if p.revoked_at.is_some() {
                "revoked"
            } else {
                h.map_or("unknown", |h| if h.state.is_empty() { "unknown" } else { h.state.as_str() })
            };
            json!({ "name": p.name, "ed25519_public": p.ed25519_public, "tls_fingerprint": p.tls_fingerprint,
                    "mpc_address": p.address, "paired_at": p.added_at, "revoked_at": p.revoked_at,
                    "health": status, "last_seen": h.and_then(|h| h.last_seen),
                    "heartbeats_missed": h.map_or(0, |h| h.missed_total) })
        })
        .collect();
    Ok(Json(json!({ "peers": peers })))
}

/// The JSON view of a budget.
pub fn budget_json(b: &crate::store::Budget) -> Value {
    let left = b.remaining();
    let eps = concord_session::privacy::epsilon_at_shown_delta(left);
    json!({ "analyst": b.analyst, "dataset": b.dataset, "budget_rho": b.budget, "spent_rho": b.spent,
            "remaining_rho": left, "remaining_epsilon_at_delta_1e-6": eps })
}

/// `GET /api/budgets`.
async fn list_budgets(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let default = state.default_budget();
    let budgets = state.store()?.list_budgets(default)?;
    Ok(Json(json!({ "default_rho": default, "budgets": budgets.iter().map(budget_json).collect::<Vec<_>>() })))
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
        revoked_at: None,
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
    let counts = state.store()?.session_counts()?;
    let _ =
        writeln!(out, "# HELP concord_sessions Sessions known to this node, by state.\n# TYPE concord_sessions gauge");
    for (st, n) in counts {
        let _ = writeln!(out, "concord_sessions{{state=\"{}\"}} {n}", st.name());
    }
    if let Some(svc) = &state.inner.service {
        let m = svc.metrics();
        let _ = writeln!(
            out,
            "# HELP concord_mpc_bytes_sent_total Protocol bytes this node sent in sessions (all peers).\n\
             # TYPE concord_mpc_bytes_sent_total counter\nconcord_mpc_bytes_sent_total {}",
            m.mpc_bytes_sent.load(std::sync::atomic::Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP concord_mpc_peer_bytes_sent_total Protocol payload bytes this node sent in sessions, per peer.\n\
             # TYPE concord_mpc_peer_bytes_sent_total counter"
        );
        if let Ok(per) = m.mpc_bytes_sent_to.lock() {
            for (peer, n) in per.iter() {
                let _ = writeln!(out, "concord_mpc_peer_bytes_sent_total{{peer=\"{}\"}} {n}", peer.replace('"', ""));
            }
        }
        let _ = writeln!(
            out,
            "# HELP concord_control_bytes_sent_total Control-channel bytes sent, per peer.\n\
             # TYPE concord_control_bytes_sent_total counter"
        );
        if let Ok(per) = m.control_bytes_sent.lock() {
            for (peer, n) in per.iter() {
                let _ = writeln!(out, "concord_control_bytes_sent_total{{peer=\"{}\"}} {n}", peer.replace('"', ""));
            }
        }
        let _ = writeln!(
            out,
            "# HELP concord_round_latency_seconds Mean time per protocol round of each finished session.\n\
             # TYPE concord_round_latency_seconds summary\nconcord_round_latency_seconds_sum {}\nconcord_round_latency_seconds_count {}",
            m.round_latency_us_sum.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
            m.round_latency_count.load(std::sync::atomic::Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP concord_heartbeat_misses_total Heartbeats a peer did not answer.\n# TYPE concord_heartbeat_misses_total counter"
        );
        for (peer, h) in svc.health() {
            let _ = writeln!(
                out,
                "concord_heartbeat_misses_total{{peer=\"{}\"}} {}",
                peer.replace('"', ""),
                h.missed_total
            );
            let up = u8::from(h.state == "up");
            let _ = writeln!(out, "concord_peer_up{{peer=\"{}\"}} {up}", peer.replace('"', ""));
        }
    }
    let requests = state.inner.requests.lock().map_err(|_| ApiError::internal("metrics lock poisoned".into()))?;
    for ((route, status), n) in requests.iter() {
        let _ = writeln!(out, "concord_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(crate::rekey::with_openapi(crate::unlock::with_openapi(crate::consortium::with_openapi(openapi_document(
        &state.inner.version,
    )))))
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

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let status = match e.code {
            "unknown_session" | "unknown_dataset" => StatusCode::NOT_FOUND,
            "unknown_peer" | "revoked_peer" | "bad_request" | "invalid_query" | "schema_mismatch"
            | "invalid_dataset" => StatusCode::BAD_REQUEST,
            "peer_down" | "peer_unreachable" => StatusCode::SERVICE_UNAVAILABLE,
            "peer_refused" | "bad_peer_reply" => StatusCode::BAD_GATEWAY,
            "not_coordinator" | "session_finished" | "not_awaiting_approval" => StatusCode::CONFLICT,
            "unsigned_request" | "request_refused" | "policy_denied" | "approvals_required" | "approval_missing"
            | "policy_error" => StatusCode::FORBIDDEN,
            "budget_exceeded" | "privacy_required" => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, code: e.code, message: e.message }
    }
}

/// The JSON view of one session.
fn session_json(store: &Store, rec: &SessionRecord) -> Result<Value, ApiError> {
    let plan = parse_plan(rec)?;
    let progress: Vec<Value> = store
        .progress(&rec.id)?
        .into_iter()
        .map(|p| json!({ "party": p.party, "phase": p.phase, "at": p.at }))
        .collect();
    let results: Vec<Value> = if rec.state == crate::store::SessionState::Done {
        store
            .results(&rec.id)?
            .into_iter()
            .map(|(i, env)| Ok(json!({ "party": i, "envelope": serde_json::from_str::<Value>(&env).map_err(|e| ApiError::internal(e.to_string()))? })))
            .collect::<Result<_, ApiError>>()?
    } else {
        Vec::new()
    };
    Ok(json!({
        "id": rec.id,
        "state": rec.state.name(),
        "reason": rec.reason,
        "coordinator": rec.coordinator,
        "dataset": plan.dataset,
        "sql": plan.spec.sql,
        "parties": plan.parties.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "finished_at": rec.finished_at,
        "progress": progress,
        "plan": plan,
        "results": results,
        "attestation": crate::consortium::attestation_json(store, &rec.id)?,
        "approval": crate::approval::approval_json(store, &rec.id)?,
    }))
}

async fn submit_session(
    State(state): State<AppState>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(req) = body.map_err(|e| bad_request(e.body_text()))?;
    let plan = state.service()?.submit(req).await?;
    let store = state.store()?;
    let rec = store.session(&plan.id)?;
    Ok((StatusCode::ACCEPTED, Json(session_json(&store, &rec)?)))
}

async fn list_sessions(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.store()?;
    let sessions = store.list_sessions(100)?;
    let views = sessions.iter().map(|r| session_json(&store, r)).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "sessions": views })))
}

/// `?wait_ms=N`: hold the answer until the session's state or progress changes (long poll, at most 30 s).
#[derive(serde::Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait_ms: Option<u64>,
}

async fn get_session(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<axum::extract::Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(|e| bad_request(e.body_text()))?;
    let axum::extract::Query(q) = query.map_err(|e| bad_request(e.body_text()))?;
    let view = || -> Result<Value, ApiError> {
        let store = state.store()?;
        let rec = store.session(&id)?;
        session_json(&store, &rec)
    };
    let first = view()?;
    let wait = std::time::Duration::from_millis(q.wait_ms.unwrap_or(0).min(30_000));
    let deadline = Instant::now() + wait;
    let terminal = |v: &Value| matches!(v["state"].as_str(), Some("done" | "failed" | "cancelled"));
    if terminal(&first) {
        return Ok(Json(first));
    }
    while Instant::now() < deadline {
        // A store read is a few microseconds; 10 ms keeps the long poll's added latency small.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let now = view()?;
        if now["state"] != first["state"] || now["progress"] != first["progress"] {
            return Ok(Json(now));
        }
    }
    Ok(Json(first))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel_session(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(|e| bad_request(e.body_text()))?;
    // The body is optional: empty, or {"reason": "..."}.
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("cancel body: {e}")))?
    };
    let reason = body.reason.unwrap_or_else(|| "by the analyst".into());
    state.service()?.cancel(&id, &reason).await?;
    let store = state.store()?;
    let rec = store.session(&id)?;
    Ok(Json(session_json(&store, &rec)?))
}

/// The JSON view of a session waiting for this operator's approval: the full plan in words.
fn approval_json(plan: &crate::service::SessionPlan, store: &Store) -> Value {
    let mut description =
        plan.spec.prepare().map(|p| p.describe()).unwrap_or_else(|e| vec![format!("(unplannable: {e})")]);
    description.extend(crate::approval::describe(plan, store));
    json!({
        "id": plan.id, "coordinator": plan.coordinator, "dataset": plan.dataset, "analyst": plan.analyst,
        "parties": plan.parties.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "signed_request": plan.request.as_ref().map(|r| r.request.hash_hex()),
        "description": description, "created_at": plan.created_at,
        "approval_consortium": plan.approval_consortium,
    })
}

/// `GET /api/approvals`: sessions waiting for this node's operator.
async fn list_approvals(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let plans = state.service()?.pending_approvals()?;
    let store = state.store()?;
    Ok(Json(json!({ "approvals": plans.iter().map(|p| approval_json(p, &store)).collect::<Vec<_>>() })))
}

/// `POST /api/sessions/{id}/approve|veto`: the operator's decision (body: optional `{"by", "reason"}`).
async fn decide_session(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let Path((id, action)) = path.map_err(|e| bad_request(e.body_text()))?;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("{action} body: {e}")))?
    };
    let by = body.by.unwrap_or_else(|| "the operator".into());
    let service = state.service()?;
    match action.as_str() {
        "approve" => service.approve(&id, &by).await?,
        "veto" | "reject" => {
            let reason = body.reason.unwrap_or_else(|| "no reason given".into());
            service.veto(&id, &by, &reason).await?
        }
        other => return Err(bad_request(format!("unknown decision {other:?}: expected approve, reject or veto"))),
    }
    let store = state.store()?;
    let rec = store.session(&id)?;
    Ok(Json(session_json(&store, &rec)?))
}

/// Every `POST /api/...` must be declared JSON: a web page cannot send
/// `application/json` to another origin without a CORS preflight, which this
/// API never grants, so a page the operator visits cannot submit, approve,
/// veto, cancel or release an unlock share through it. (The dashboard's own
/// forms post to `/ui/...` and carry an anti-forgery token instead.)
async fn json_posts_only(request: Request, next: Next) -> Response {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if request.method() == axum::http::Method::POST && request.uri().path().starts_with("/api/") && !json {
        return ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "json_required",
            message: "send this request with Content-Type: application/json".into(),
        }
        .into_response();
    }
    next.run(request).await
}

/// Body of an operator's decision.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    by: Option<String>,
    reason: Option<String>,
}

/// `GET /api/analysts`: the analysts registered here (public keys and roles).
async fn list_analysts(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let analysts = state.store()?.list_analysts()?;
    let v: Vec<Value> = analysts
        .into_iter()
        .map(|a| json!({ "name": a.name, "public_key": a.public_key, "role": a.role, "added_at": a.added_at, "revoked_at": a.revoked_at }))
        .collect();
    Ok(Json(json!({ "analysts": v })))
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
        .route("/api/budgets", get(list_budgets))
        .route("/api/approvals", get(list_approvals))
        .route("/approvals", get(approvals_page))
        .route("/ui/sessions/{id}/{decision}", post(decide_from_page))
        .route("/ui/unlock-requests/{id}/{decision}", post(decide_unlock_from_page))
        .route("/api/analysts", get(list_analysts))
        .route("/api/sessions/{id}/{decision}", post(decide_session))
        .route("/api/sessions", get(list_sessions).post(submit_session))
        .route("/api/sessions/{id}", get(get_session))
        .route("/api/sessions/{id}/cancel", post(cancel_session))
        .route("/api/consortia", get(crate::consortium::api_list).post(crate::consortium::api_create))
        .route("/api/consortia/{name}/refresh", post(crate::rekey::api_refresh))
        .route("/api/consortia/{name}/repair", post(crate::rekey::api_repair))
        .route("/api/audit", get(crate::audit::api_audit))
        .route("/api/audit/witness", get(crate::witness::api_witness))
        .route("/api/unlock-keys", get(crate::unlock::api_list_keys).post(crate::unlock::api_setup))
        .route(
            "/api/unlock-requests",
            get(crate::unlock::api_list_requests)
                .post(crate::unlock::api_request)
                .layer(axum::extract::DefaultBodyLimit::max(2 * crate::unlock::MAX_SEALED_FILE + 64 * 1024)),
        )
        .route("/api/unlock-requests/{id}", get(crate::unlock::api_get_request))
        .route("/api/unlock-requests/{id}/{decision}", post(crate::unlock::api_decide))
        .fallback(not_found)
        .layer(middleware::from_fn(json_posts_only))
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
    let mut doc = json!({
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
            "/api/budgets": { "get": {
                "summary": "Privacy budgets (zCDP rho) of the analysts who ran private queries here or have a budget set, per dataset, and the default",
                "responses": { "200": { "description": "Budgets", "content": { "application/json": {
                    "schema": { "type": "object", "required": ["default_rho", "budgets"], "properties": {
                        "default_rho": { "type": "number" },
                        "budgets": { "type": "array", "items": { "$ref": "#/components/schemas/Budget" } } } } } } },
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
            "/api/sessions": {
                "get": {
                    "summary": "The 100 most recent sessions this node knows",
                    "responses": { "200": { "description": "Sessions", "content": { "application/json": {
                        "schema": { "type": "object", "properties": { "sessions": { "type": "array",
                            "items": { "$ref": "#/components/schemas/Session" } } } } } } }, "500": error }
                },
                "post": {
                    "summary": "Submit a query as a session with other nodes (this node coordinates)",
                    "requestBody": { "required": true, "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/SubmitRequest" } } } },
                    "responses": {
                        "202": { "description": "Created (pending); poll it", "content": { "application/json": {
                            "schema": { "$ref": "#/components/schemas/Session" } } } },
                        "400": error, "404": error, "502": error, "503": error, "500": error }
                }
            },
            "/api/sessions/{id}": { "get": {
                "summary": "One session: state, reason, plan, progress; when done, the result shares sealed to the analyst",
                "parameters": [
                    { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "wait_ms", "in": "query", "required": false, "schema": { "type": "integer", "maximum": 30000 },
                      "description": "hold the answer until the state or progress changes (long poll)" } ],
                "responses": {
                    "200": { "description": "The session", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Session" } } } },
                    "400": error, "404": error, "500": error }
            } },
            "/api/sessions/{id}/cancel": { "post": {
                "summary": "Cancel a pending or running session (on its coordinator); every node records it with the reason",
                "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "requestBody": { "required": false, "content": { "application/json": {
                    "schema": { "type": "object", "properties": { "reason": { "type": "string" } } } } } },
                "responses": {
                    "200": { "description": "Cancelled", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Session" } } } },
                    "400": error, "404": error, "409": error, "500": error }
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
                        "unknown_invitation", "invitation_used", "invitation_expired", "bad_mac", "peer_exists", "identity_mismatch",
                        "unknown_session", "unknown_peer", "revoked_peer", "peer_down", "peer_unreachable", "peer_refused",
                        "schema_mismatch", "invalid_dataset", "invalid_query", "not_coordinator", "session_finished", "no_service",
                        "budget_exceeded", "privacy_required"] },
                    "message": { "type": "string" } } } } },
            "SubmitRequest": { "type": "object", "required": ["sql", "parties", "analyst_key"], "properties": {
                "sql": { "type": "string" },
                "parties": { "type": "array", "items": { "type": "string" }, "description": "node names, in party order" },
                "dataset": { "type": "string", "description": "default: the table after FROM" },
                "options": { "type": "object", "properties": {
                    "threshold": { "type": "integer" },
                    "scheme": { "type": "string", "enum": ["additive", "shamir"] },
                    "min_group_size": { "type": "integer" },
                    "input_check": { "type": "string", "enum": ["clamp", "reject", "off"] },
                    "reveal_final": { "type": "boolean" },
                    "order_method": { "type": "string", "enum": ["auto", "search", "sort"] },
                    "privacy": { "type": "object", "description": "differential privacy: exactly one of epsilon (discrete Laplace, pure DP) and rho (discrete Gaussian, zCDP); or WITH PRIVACY (...) after the query",
                        "properties": { "epsilon": { "type": "number" }, "rho": { "type": "number" } } } } },
                "analyst_key": { "type": "string", "description": "the analyst's X25519 public key for this session, 32 bytes hex" },
                "analyst": { "type": "string", "description": "the analyst's name (default anonymous): privacy budgets are kept per analyst and dataset" } } },
            "Budget": { "type": "object", "required": ["analyst", "dataset", "budget_rho", "spent_rho", "remaining_rho"], "properties": {
                "analyst": { "type": "string" }, "dataset": { "type": "string" },
                "budget_rho": { "type": "number" }, "spent_rho": { "type": "number" }, "remaining_rho": { "type": "number" },
                "remaining_epsilon_at_delta_1e-6": { "type": "number", "nullable": true } } },
            "Session": { "type": "object",
                "required": ["id", "state", "coordinator", "dataset", "sql", "parties", "created_at", "progress", "plan", "results"],
                "properties": {
                    "id": { "type": "string" },
                    "state": { "type": "string", "enum": ["pending", "running", "done", "failed", "cancelled"] },
                    "reason": { "type": "string", "nullable": true },
                    "coordinator": { "type": "string" },
                    "dataset": { "type": "string" },
                    "sql": { "type": "string" },
                    "parties": { "type": "array", "items": { "type": "string" } },
                    "created_at": { "type": "integer" },
                    "updated_at": { "type": "integer" },
                    "finished_at": { "type": "integer", "nullable": true },
                    "progress": { "type": "array", "items": { "type": "object", "properties": {
                        "party": { "type": "string" }, "phase": { "type": "string" }, "at": { "type": "integer" } } } },
                    "plan": { "type": "object", "description": "the session plan every party verified (see docs/WIRE_PROTOCOL.md)" },
                    "results": { "type": "array", "items": { "type": "object", "properties": {
                        "party": { "type": "integer" },
                        "envelope": { "type": "object", "properties": {
                            "ephemeral": { "type": "string" }, "ciphertext": { "type": "string" } } } } } } } },
            "Peer": { "type": "object",
                "required": ["name", "ed25519_public", "tls_fingerprint", "mpc_address", "paired_at"],
                "properties": {
                    "name": { "type": "string" },
                    "ed25519_public": { "type": "string" },
                    "tls_fingerprint": { "type": "string" },
                    "mpc_address": { "type": "string" },
                    "paired_at": { "type": "integer" },
                    "revoked_at": { "type": "integer", "nullable": true },
                    "health": { "type": "string", "enum": ["up", "suspected", "down", "unknown", "revoked"] },
                    "last_seen": { "type": "integer", "nullable": true },
                    "heartbeats_missed": { "type": "integer" } } },
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
    });
    crate::audit::add_openapi(&mut doc);
    crate::witness::add_openapi(&mut doc);
    crate::approval::add_openapi(&mut doc);
    doc
}

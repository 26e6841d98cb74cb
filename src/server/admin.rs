//! The admin view over HTTP (axum), meant for loopback: what the machine holds now, health, and
//! Prometheus counters. Read-only, except the opt-in clock control used by conformance tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::state::Shared;

/// One row of `GET /bindings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingView {
    /// `mcptt`, `mcvideo` or `mcdata`.
    pub service: String,
    /// The network-asserted IMPU.
    pub impu: String,
    /// The MC client ID.
    pub client_id: String,
    /// The MC service ID.
    pub mc_id: String,
    /// The token's `exp` (Unix seconds).
    pub token_exp: u64,
    /// The current SIP-ETag, if the binding came from a PUBLISH.
    pub etag: Option<String>,
    /// When the publication ends (Unix seconds).
    pub publication_expires: Option<u64>,
}

/// One row of `GET /registrations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationView {
    /// The registered IMPU.
    pub impu: String,
    /// When the registration ends (Unix seconds).
    pub expires_at: u64,
    /// The MC services whose feature tags the UE's REGISTER carried, if known.
    pub services: Option<Vec<String>>,
}

/// The binding table as the admin view shows it (also used by tests to compare with the model).
pub fn binding_views(machine: &mcx_model::Machine) -> Vec<BindingView> {
    machine
        .bindings()
        .map(|(k, b)| BindingView {
            service: k.service.name().to_owned(),
            impu: k.impu.to_string(),
            client_id: k.client_id.to_string(),
            mc_id: b.mc_id.to_string(),
            token_exp: b.token_exp.0,
            etag: b.publication.as_ref().map(|p| p.etag.to_string()),
            publication_expires: b.publication.as_ref().map(|p| p.expires_at.0),
        })
        .collect()
}

type AppState = (Arc<Mutex<Shared>>, bool);

/// The admin router over the shared state; `lab_controls` enables `POST /clock/advance` and
/// `POST /restart`.
pub fn router(shared: Arc<Mutex<Shared>>, lab_controls: bool) -> Router {
    Router::new()
        .route("/bindings", get(bindings))
        .route("/registrations", get(registrations))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/clock/advance", post(advance_clock))
        .route("/restart", post(restart))
        .with_state((shared, lab_controls))
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding the lock would be a bug; the state itself stays consistent because
    // the machine mutates only inside `handle`, so keep serving.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

async fn bindings(State((shared, _)): State<AppState>) -> Json<Vec<BindingView>> {
    Json(binding_views(&lock(&shared).machine))
}

async fn registrations(State((shared, _)): State<AppState>) -> Json<Vec<RegistrationView>> {
    let s = lock(&shared);
    Json(
        s.machine
            .registrations()
            .map(|(impu, r)| RegistrationView {
                impu: impu.to_string(),
                expires_at: r.expires_at.0,
                services: r
                    .services
                    .map(|set| set.iter().map(|s| s.name().to_owned()).collect()),
            })
            .collect(),
    )
}

async fn metrics(State((shared, _)): State<AppState>) -> impl IntoResponse {
    let s = lock(&shared);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP mcx_sip_requests_total SIP requests answered, by method and status."
    );
    let _ = writeln!(out, "# TYPE mcx_sip_requests_total counter");
    for ((method, status), n) in &s.metrics.requests {
        let _ = writeln!(
            out,
            "mcx_sip_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP mcx_token_rejections_total Access tokens refused, by reason."
    );
    let _ = writeln!(out, "# TYPE mcx_token_rejections_total counter");
    for (reason, n) in &s.metrics.token_rejections {
        let _ = writeln!(out, "mcx_token_rejections_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP mcx_binding_events_total Binding changes, by kind."
    );
    let _ = writeln!(out, "# TYPE mcx_binding_events_total counter");
    for (kind, n) in &s.metrics.binding_events {
        let _ = writeln!(out, "mcx_binding_events_total{{kind=\"{kind}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP mcx_sip_dropped_total SIP messages dropped without a response, by reason."
    );
    let _ = writeln!(out, "# TYPE mcx_sip_dropped_total counter");
    for (reason, n) in &s.metrics.dropped {
        let _ = writeln!(out, "mcx_sip_dropped_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP mcx_bindings Bindings held now.");
    let _ = writeln!(out, "# TYPE mcx_bindings gauge");
    let _ = writeln!(out, "mcx_bindings {}", s.machine.binding_count());
    let _ = writeln!(out, "# HELP mcx_registrations Registrations held now.");
    let _ = writeln!(out, "# TYPE mcx_registrations gauge");
    let _ = writeln!(
        out,
        "mcx_registrations {}",
        s.machine.registrations().count()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

async fn advance_clock(
    State((shared, allowed)): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    if !allowed {
        return (StatusCode::FORBIDDEN, LAB_CONTROLS_OFF.to_owned());
    }
    let Some(secs) = q.get("secs").and_then(|s| s.parse::<u64>().ok()) else {
        return (StatusCode::BAD_REQUEST, "need ?secs=N\n".to_owned());
    };
    let mut s = lock(&shared);
    s.clock.advance(secs);
    s.tick_if_due();
    (StatusCode::OK, format!("{}\n", s.clock.now()))
}

const LAB_CONTROLS_OFF: &str = "lab controls are off ([admin] lab_controls)\n";

async fn restart(State((shared, allowed)): State<AppState>) -> impl IntoResponse {
    if !allowed {
        return (StatusCode::FORBIDDEN, LAB_CONTROLS_OFF.to_owned());
    }
    let mut s = lock(&shared);
    let now = s.clock.now();
    s.step(now, mcx_model::Input::Restart);
    (StatusCode::OK, "restarted\n".to_owned())
}

//! The admin view over HTTP (axum), meant for loopback: what the machine holds now, health, and
//! Prometheus counters. Read-only, except the opt-in lab controls (clock, restart, fault
//! injection) used by conformance and supervision tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::pipeline::Pipeline;
use super::state::{Metrics, Shared};
use super::vitals::{counter, gauge, labelled, metric, Fault, Vitals};

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

/// What the admin handlers see.
#[derive(Clone)]
struct AppState {
    shared: Arc<Mutex<Shared>>,
    pipeline: Arc<Pipeline>,
    vitals: Arc<Vitals>,
    lab_controls: bool,
}

/// The admin router over the server's pipeline and vitals; `lab_controls` enables
/// `POST /clock/advance`, `POST /restart` and `POST /fault`.
pub fn router(pipeline: Arc<Pipeline>, vitals: Arc<Vitals>, lab_controls: bool) -> Router {
    Router::new()
        .route("/bindings", get(bindings))
        .route("/registrations", get(registrations))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/clock/advance", post(advance_clock))
        .route("/restart", post(restart))
        .route("/fault", post(fault))
        .with_state(AppState {
            shared: pipeline.shared(),
            pipeline,
            vitals,
            lab_controls,
        })
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding the lock would be a bug; the state itself stays consistent because
    // the machine mutates only inside `handle`, so keep serving.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

async fn bindings(State(app): State<AppState>) -> Json<Vec<BindingView>> {
    Json(binding_views(&lock(&app.shared).machine))
}

async fn registrations(State(app): State<AppState>) -> Json<Vec<RegistrationView>> {
    let s = lock(&app.shared);
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

/// `200 ok` while every listener (and the tick timer) runs, `503 unhealthy` while one is down
/// (stopped and waiting to be restarted); one line per listener with its restarts and caught
/// worker panics either way.
async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let (healthy, text) = app.vitals.health_report();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text)
}

/// What `/metrics` copies under the lock; formatted after the lock is released.
struct Snapshot {
    metrics: Metrics,
    bindings: usize,
    registrations: usize,
    transactions: usize,
    transaction_bytes: usize,
    transaction_evictions: u64,
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let snap = {
        let s = lock(&app.shared);
        Snapshot {
            metrics: s.metrics.clone(),
            bindings: s.machine.binding_count(),
            registrations: s.machine.registrations().count(),
            transactions: s.transactions.len(),
            transaction_bytes: s.transactions.bytes(),
            transaction_evictions: s.transactions.evictions(),
        }
    };
    let token = app.pipeline.validator().stats();
    let mut out = String::new();
    let shared_stats = lock(&app.shared).shared_store.as_ref().map(|db| {
        use std::sync::atomic::Ordering::Relaxed;
        let st = &db.stats;
        [
            (
                "mcx_store_commits_total",
                "Durable store commits (write transactions, each fsync'd).",
                st.commits.load(Relaxed),
            ),
            (
                "mcx_store_commit_micros_total",
                "Time spent in store commits, in microseconds.",
                st.commit_micros.load(Relaxed),
            ),
            (
                "mcx_store_attempts_total",
                "Shared store: inputs run (each re-run after a conflict counts).",
                st.attempts.load(Relaxed),
            ),
            (
                "mcx_store_conflicts_total",
                "Shared store: compare-and-set conflicts (rolled back, reloaded, re-run).",
                st.conflicts.load(Relaxed),
            ),
            (
                "mcx_store_reloaded_impus_total",
                "Shared store: IMPU aggregates replaced by a fresher row.",
                st.reloaded_impus.load(Relaxed),
            ),
            (
                "mcx_store_gave_up_total",
                "Shared store: inputs dropped after too many conflicts.",
                st.gave_up.load(Relaxed),
            ),
        ]
    });
    for (name, help, v) in shared_stats.into_iter().flatten() {
        metric(&mut out, name, help, v);
    }
    if let Some(store) = lock(&app.shared).store.clone() {
        use std::sync::atomic::Ordering::Relaxed;
        let st = store.stats();
        for (name, help, v) in [
            (
                "mcx_store_commits_total",
                "Durable store commits (write transactions, each fsync'd).",
                st.commits.load(Relaxed),
            ),
            (
                "mcx_store_batches_total",
                "Persist batches written (one per state-changing request or tick).",
                st.batches.load(Relaxed),
            ),
            (
                "mcx_store_commit_micros_total",
                "Time spent in store commits, in microseconds.",
                st.commit_micros.load(Relaxed),
            ),
            (
                "mcx_store_max_group",
                "The most batches one commit carried (group commit).",
                st.max_group.load(Relaxed),
            ),
            (
                "mcx_store_durable_seq",
                "The last durable sequence number.",
                store.durable().0,
            ),
        ] {
            metric(&mut out, name, help, v);
        }
    }
    let m = &snap.metrics;
    labelled(
        &mut out,
        "mcx_sip_requests_total",
        "SIP requests answered, by method (unknown methods: other) and status.",
        m.requests
            .iter()
            .map(|((method, status), n)| (format!("method=\"{method}\",status=\"{status}\""), *n)),
    );
    labelled(
        &mut out,
        "mcx_token_rejections_total",
        "Access tokens refused, by reason.",
        m.token_rejections.iter().map(by_label("reason")),
    );
    labelled(
        &mut out,
        "mcx_binding_events_total",
        "Binding changes, by kind.",
        m.binding_events.iter().map(by_label("kind")),
    );
    labelled(
        &mut out,
        "mcx_sip_dropped_total",
        "SIP messages dropped without a response, by reason.",
        m.dropped.iter().map(by_label("reason")),
    );
    gauge(
        &mut out,
        "mcx_bindings",
        "Bindings held now.",
        snap.bindings as u64,
    );
    gauge(
        &mut out,
        "mcx_registrations",
        "Registrations held now.",
        snap.registrations as u64,
    );
    gauge(
        &mut out,
        "mcx_transaction_cache_entries",
        "UDP transactions held for retransmissions now.",
        snap.transactions as u64,
    );
    gauge(
        &mut out,
        "mcx_transaction_cache_bytes",
        "Bytes the UDP transaction cache holds now (bounded by [sip] transaction_cache_bytes).",
        snap.transaction_bytes as u64,
    );
    counter(
        &mut out,
        "mcx_transaction_cache_evictions_total",
        "UDP transactions evicted before Timer J because the cache was full.",
        &[("", snap.transaction_evictions)],
    );
    counter(
        &mut out,
        "mcx_token_signature_checks_total",
        "Access-token signature verifications (cache hits perform none).",
        &[("", token.signature_checks)],
    );
    gauge(
        &mut out,
        "mcx_token_cache_entries",
        "Verified access tokens cached now.",
        token.cached_tokens as u64,
    );
    counter(
        &mut out,
        "mcx_jwks_fetches_total",
        "JWKS fetches from the IdMS URL (start, timer, unknown kid, on demand).",
        &[("", token.jwks_fetches)],
    );
    counter(
        &mut out,
        "mcx_jwks_fetch_failures_total",
        "JWKS fetches that failed (the last good key set is kept).",
        &[("", token.jwks_fetch_failures)],
    );
    gauge(
        &mut out,
        "mcx_jwks_keys",
        "Trusted IdMS signature keys now.",
        token.trusted_keys as u64,
    );
    app.vitals.write_metrics(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

async fn advance_clock(
    State(app): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    if !app.lab_controls {
        return (StatusCode::FORBIDDEN, LAB_CONTROLS_OFF.to_owned());
    }
    let Some(secs) = q.get("secs").and_then(|s| s.parse::<u64>().ok()) else {
        return (StatusCode::BAD_REQUEST, "need ?secs=N\n".to_owned());
    };
    let mut s = lock(&app.shared);
    s.clock.advance(secs);
    s.tick_if_due();
    (StatusCode::OK, format!("{}\n", s.clock.now()))
}

const LAB_CONTROLS_OFF: &str = "lab controls are off ([admin] lab_controls)\n";

async fn restart(State(app): State<AppState>) -> impl IntoResponse {
    if !app.lab_controls {
        return (StatusCode::FORBIDDEN, LAB_CONTROLS_OFF.to_owned());
    }
    let mut s = lock(&app.shared);
    let now = s.clock.now();
    s.step(now, mcx_model::Input::Restart);
    (StatusCode::OK, "restarted\n".to_owned())
}

/// `POST /fault?panic=worker|listener` (lab controls only): arms a panic for the next UDP
/// request a worker handles, or for the next UDP datagram's receive loop, to exercise the
/// supervision that `/healthz` and `/metrics` report ([`super::vitals::Faults`]).
async fn fault(
    State(app): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> impl IntoResponse {
    if !app.lab_controls {
        return (StatusCode::FORBIDDEN, LAB_CONTROLS_OFF.to_owned());
    }
    let fault = match q.get("panic").map(String::as_str) {
        Some("worker") => Fault::WorkerPanic,
        Some("listener") => Fault::ListenerPanic,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "need ?panic=worker or ?panic=listener\n".to_owned(),
            )
        }
    };
    app.vitals.faults.arm(fault);
    (StatusCode::OK, format!("armed {fault:?}\n"))
}

/// One Prometheus label set `label="key"` per map entry, for [`labelled`].
fn by_label<K: std::fmt::Display>(label: &'static str) -> impl Fn((&K, &u64)) -> (String, u64) {
    move |(k, n)| (format!("{label}=\"{k}\""), *n)
}

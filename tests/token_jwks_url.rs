//! The IdMS JWKS URL: fetched at start, re-fetched once (rate-limited) on an unknown `kid`,
//! refreshed on demand, and bounded in time. Served by axum on 127.0.0.1 only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use jsonwebtoken::Algorithm;
use mcx_authz::token::{
    LabIdms, MintRequest, TokenConfigError, Validator, ValidatorConfig, LAB_ISSUER,
};
use mcx_model::{TokenRejection, TokenVerdict, UnixTime};

const NOW: UnixTime = UnixTime(1_800_000_000);

#[derive(Clone, Default)]
struct Idms {
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks(State(s): State<Idms>) -> String {
    s.hits.fetch_add(1, Ordering::SeqCst);
    s.body.lock().unwrap().clone()
}

async fn jwks_slowly(State(s): State<Idms>) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    jwks(State(s)).await
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "{}"
}

/// Starts the fake IdMS; returns its base URL. The runtime lives as long as the returned value.
fn serve(idms: Idms) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/certs", get(jwks))
        .route("/slow", get(slow))
        .route("/slowcerts", get(jwks_slowly))
        .with_state(idms);
    rt.spawn(async move { axum::serve(listener, app).await });
    (rt, format!("http://{addr}"))
}

fn config(url: String) -> ValidatorConfig {
    ValidatorConfig {
        jwks_url: Some(url),
        issuer: Some(LAB_ISSUER.into()),
        jwks_refetch_interval_secs: 60,
        jwks_fetch_timeout_ms: 2000,
        ..ValidatorConfig::default()
    }
}

fn mint(lab: &LabIdms) -> String {
    lab.mint(&MintRequest::all_services("sip:alice@example.org", NOW))
        .unwrap()
}

#[test]
fn jwks_url_fetch_rotation_and_rate_limit() {
    let idms = Idms::default();
    let (lab1, lab2, lab3) = (
        LabIdms::ephemeral(&[Algorithm::ES256]).unwrap(),
        LabIdms::ephemeral(&[Algorithm::RS256]).unwrap(),
        LabIdms::ephemeral(&[Algorithm::EdDSA]).unwrap(),
    );
    *idms.body.lock().unwrap() = lab1.jwks().to_string();
    let (_rt, base) = serve(idms.clone());
    let v = Validator::new(config(format!("{base}/certs"))).unwrap();
    assert_eq!(idms.hits.load(Ordering::SeqCst), 1, "fetched at start");
    // One token string throughout (ECDSA signatures differ per mint): verified once, it is in
    // the verified-token cache.
    let token1 = mint(&lab1);
    assert!(matches!(
        v.validate(&token1, NOW),
        TokenVerdict::Verified(_)
    ));

    // The IdMS rotates to a new key: the first token naming it causes one re-fetch.
    *idms.body.lock().unwrap() = lab2.jwks().to_string();
    assert!(matches!(
        v.validate(&mint(&lab2), NOW),
        TokenVerdict::Verified(_)
    ));
    assert_eq!(idms.hits.load(Ordering::SeqCst), 2);
    // The old key was withdrawn: its tokens are refused, the cached one too (the cache is
    // emptied when a key goes away), and no second fetch within the interval.
    assert_eq!(
        v.validate(&token1, NOW),
        TokenVerdict::Rejected(TokenRejection::UnknownKey)
    );
    assert_eq!(
        v.validate(&mint(&lab1), NOW),
        TokenVerdict::Rejected(TokenRejection::UnknownKey)
    );
    assert_eq!(
        v.validate(&mint(&lab3), NOW.plus(59)),
        TokenVerdict::Rejected(TokenRejection::UnknownKey)
    );
    assert_eq!(idms.hits.load(Ordering::SeqCst), 2, "rate-limited");
    // After the interval, one more fetch (lab3 is still not published).
    assert_eq!(
        v.validate(&mint(&lab3), NOW.plus(60)),
        TokenVerdict::Rejected(TokenRejection::UnknownKey)
    );
    assert_eq!(idms.hits.load(Ordering::SeqCst), 3);

    // An explicit refresh ignores the rate limit; a broken document leaves the keys as they are.
    *idms.body.lock().unwrap() = "<html>oops</html>".into();
    assert!(matches!(v.refresh_keys(), Err(TokenConfigError::BadKey(_))));
    assert_eq!(idms.hits.load(Ordering::SeqCst), 4);
    assert!(matches!(
        v.validate(&mint(&lab2), NOW),
        TokenVerdict::Verified(_)
    ));
    *idms.body.lock().unwrap() = lab3.jwks().to_string();
    assert_eq!(v.refresh_keys().unwrap(), 1);
    assert!(matches!(
        v.validate(&mint(&lab3), NOW),
        TokenVerdict::Verified(_)
    ));
    assert_eq!(v.stats().jwks_fetches, 5);
}

#[test]
fn an_unreachable_or_slow_jwks_url_fails_start_up_within_the_timeout() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Validator::new(config(format!("http://127.0.0.1:{port}/certs"))).unwrap_err();
    assert!(matches!(err, TokenConfigError::Fetch { .. }), "{err}");

    let (_rt, base) = serve(Idms::default());
    let started = Instant::now();
    let err = Validator::new(ValidatorConfig {
        jwks_fetch_timeout_ms: 300,
        ..config(format!("{base}/slow"))
    })
    .unwrap_err();
    assert!(matches!(err, TokenConfigError::Fetch { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn jwks_is_refreshed_on_a_timer_and_the_last_good_keys_survive_an_idms_outage() {
    let idms = Idms::default();
    let (lab1, lab2) = (
        LabIdms::ephemeral(&[Algorithm::ES256]).unwrap(),
        LabIdms::ephemeral(&[Algorithm::ES256]).unwrap(),
    );
    *idms.body.lock().unwrap() = lab1.jwks().to_string();
    let (_rt, base) = serve(idms.clone());
    let v = Validator::new(ValidatorConfig {
        jwks_refresh_interval_secs: 1,
        // No unknown-kid re-fetch: only the timer may bring new keys here.
        jwks_refetch_interval_secs: 1_000_000,
        ..config(format!("{base}/certs"))
    })
    .unwrap();
    // The unknown-kid re-fetch is spent once, so that it cannot be what installs lab2 below.
    assert_eq!(
        v.validate(&mint(&lab2), NOW),
        TokenVerdict::Rejected(TokenRejection::UnknownKey)
    );
    let spent = idms.hits.load(Ordering::SeqCst);

    // The IdMS rotates: the timer fetches without any token asking for it.
    *idms.body.lock().unwrap() = lab2.jwks().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while idms.hits.load(Ordering::SeqCst) < spent + 1 {
        assert!(Instant::now() < deadline, "no timer fetch within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(
        v.validate(&mint(&lab2), NOW.plus(1)),
        TokenVerdict::Verified(_)
    ));

    // The IdMS goes down (serves garbage): fetches keep failing, the last good keys stay.
    *idms.body.lock().unwrap() = "<html>503</html>".into();
    let before = v.stats().jwks_fetch_failures;
    let deadline = Instant::now() + Duration::from_secs(10);
    while v.stats().jwks_fetch_failures < before + 2 {
        assert!(
            Instant::now() < deadline,
            "no failing timer fetches within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = v.stats();
    assert_eq!(stats.trusted_keys, 1, "{stats:?}");
    assert!(matches!(
        v.validate(&mint(&lab2), NOW.plus(2)),
        TokenVerdict::Verified(_)
    ));
    assert!(stats.jwks_fetches >= stats.jwks_fetch_failures + 2);
}

#[test]
fn an_unknown_kid_inside_a_runtime_fetches_off_the_runtime_threads() {
    // The server validates tokens on its runtime's worker threads: the re-fetch for an unknown
    // kid must run on the refresher thread while the runtime keeps serving other tasks.
    let idms = Idms::default();
    let (lab1, lab2) = (
        LabIdms::ephemeral(&[Algorithm::ES256]).unwrap(),
        LabIdms::ephemeral(&[Algorithm::ES256]).unwrap(),
    );
    *idms.body.lock().unwrap() = lab1.jwks().to_string();
    let (_rt, base) = serve(idms.clone());
    // The IdMS takes 300 ms to answer.
    let v = Arc::new(Validator::new(config(format!("{base}/slowcerts"))).unwrap());
    *idms.body.lock().unwrap() = lab2.jwks().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let token = mint(&lab2);
    let verdict = rt.block_on(async move {
        // A ticker on the same one-worker runtime must keep running during the fetch.
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                t.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let v2 = v.clone();
        let verdict = tokio::spawn(async move { v2.validate(&token, NOW) })
            .await
            .unwrap();
        ticker.abort();
        (verdict, ticks.load(Ordering::SeqCst))
    });
    assert!(
        matches!(verdict.0, TokenVerdict::Verified(_)),
        "{:?}",
        verdict.0
    );
    assert_eq!(idms.hits.load(Ordering::SeqCst), 2);
    // Had the fetch blocked the runtime's one worker, the ticker would have stood still for
    // 300 ms (a tick or two); it kept ticking.
    assert!(verdict.1 >= 10, "{} ticks during a 300 ms fetch", verdict.1);
}

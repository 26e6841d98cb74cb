//! Access-token validation: verifications per second per algorithm, cold (cache bypassed) and
//! cached, beside jsonwebtoken's own `decode` of the same token with a comparable `Validation`.
//!
//! Run: `cargo bench --bench token -- --warm-up-time 1 --measurement-time 3`
//! After criterion's report it prints the cold-path overhead ratio per algorithm, measured by
//! interleaved timing loops (validator cold ÷ jsonwebtoken::decode).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mcx_authz::token::lab::alg_name;
use mcx_authz::token::{LabIdms, MintRequest, Validator};
use mcx_model::{TokenVerdict, UnixTime};
use serde::Deserialize;

const ALGS: [Algorithm; 4] = [
    Algorithm::ES256,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];

/// The claims jsonwebtoken deserializes: the same fields the validator reads.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Claims {
    iss: Option<String>,
    exp: u64,
    iat: Option<u64>,
    jti: Option<String>,
    scope: Option<String>,
    mcptt_id: Option<String>,
    mcvideo_id: Option<String>,
    mcdata_id: Option<String>,
}

struct Case {
    alg: Algorithm,
    token: String,
    key: DecodingKey,
    validation: Validation,
}

fn now() -> UnixTime {
    UnixTime(jsonwebtoken::get_current_timestamp())
}

fn cases(lab: &LabIdms) -> Vec<Case> {
    ALGS.iter()
        .map(|&alg| {
            let mut r = MintRequest::all_services("sip:alice@example.org", now());
            r.alg = Some(alg);
            let token = lab.mint(&r).expect("mint");
            let jwk =
                serde_json::from_value(lab.key(alg).expect("key").jwk().clone()).expect("jwk");
            let key = DecodingKey::from_jwk(&jwk).expect("decoding key");
            let mut validation = Validation::new(alg);
            validation.leeway = 30;
            validation.set_issuer(&[lab.issuer()]);
            validation.validate_nbf = true;
            Case {
                alg,
                token,
                key,
                validation,
            }
        })
        .collect()
}

fn raw_decode(c: &Case) -> bool {
    jsonwebtoken::decode::<Claims>(&c.token, &c.key, &c.validation).is_ok()
}

fn bench(cr: &mut Criterion, validator: &Validator, cases: &[Case]) {
    for c in cases {
        let mut g = cr.benchmark_group(format!("token/{}", alg_name(c.alg)));
        g.throughput(Throughput::Elements(1));
        g.bench_function("jsonwebtoken_decode", |b| {
            b.iter(|| assert!(raw_decode(black_box(c))))
        });
        g.bench_function("validator_cold", |b| {
            b.iter(|| {
                assert!(matches!(
                    validator.validate_uncached(black_box(&c.token), now()),
                    TokenVerdict::Verified(_)
                ))
            })
        });
        g.bench_function("validator_cached", |b| {
            b.iter(|| {
                assert!(matches!(
                    validator.validate(black_box(&c.token), now()),
                    TokenVerdict::Verified(_)
                ))
            })
        });
        g.finish();
    }
}

/// Interleaved rounds of both paths, so drift on a shared machine hits them alike.
fn overhead(validator: &Validator, cases: &[Case]) {
    println!("\ncold-path overhead (validator without cache ÷ jsonwebtoken::decode, same token):");
    for c in cases {
        let n = match c.alg {
            Algorithm::ES256 => 400,
            _ => 1000,
        };
        let (mut raw, mut ours) = (0f64, 0f64);
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..n {
                black_box(raw_decode(black_box(c)));
            }
            raw += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..n {
                black_box(validator.validate_uncached(black_box(&c.token), now()));
            }
            ours += t.elapsed().as_secs_f64();
        }
        let per = |s: f64| s / (5 * n) as f64 * 1e6;
        println!(
            "  {:6} jsonwebtoken {:7.1} µs  validator {:7.1} µs  ratio {:.3}",
            alg_name(c.alg),
            per(raw),
            per(ours),
            ours / raw
        );
    }
}

fn main() {
    let lab = LabIdms::ephemeral(&ALGS).expect("lab");
    let validator = Validator::new(lab.validator_config()).expect("validator");
    let cases = cases(&lab);
    let mut cr = Criterion::default().configure_from_args();
    bench(&mut cr, &validator, &cases);
    cr.final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` does not: skip the timing loops there.
    if std::env::args().any(|a| a == "--bench") {
        overhead(&validator, &cases);
    }
}

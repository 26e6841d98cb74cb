//! TS 33.180 clause 9 cost beside the JWT verification: opening a protected `mcptt-info` body
//! (parse, F.1.4 key derivation, AES-128-GCM of token and client ID, re-serialization) and
//! verifying its XML signature part (parse, SHA-256 of the body, C14N of SignedInfo, F.1.4,
//! HMAC-SHA-256), each as a ratio to `jsonwebtoken::decode` of the same ES256 token.
//!
//! Run: `cargo bench --bench protection -- --warm-up-time 1 --measurement-time 3`
//! After criterion's report it prints the ratios from interleaved timing loops (5 rounds).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mcx_authz::protection::{clear_info, Protector, INFO_CONTENT_ID};
use mcx_authz::token::{LabIdms, MintRequest};
use mcx_model::{Service, UnixTime};
use mcx_sec::csk::{Csk, CskEntry, CskId, LabCskTable};
use mcx_sec::kdf::{CskKeys, KdfReading};
use mcx_sec::xmldsig::{self, MimePart};
use mcx_sec::xmlenc;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Claims {
    exp: u64,
    mcptt_id: Option<String>,
}

struct Case {
    token: String,
    key: DecodingKey,
    validation: Validation,
    table: LabCskTable,
    info: String,
    sig: String,
}

fn case() -> Case {
    let lab = LabIdms::ephemeral(&[Algorithm::ES256]).expect("lab");
    let mut r = MintRequest::all_services(
        "sip:alice@example.org",
        UnixTime(jsonwebtoken::get_current_timestamp()),
    );
    r.alg = Some(Algorithm::ES256);
    let token = lab.mint(&r).expect("mint");
    let jwk =
        serde_json::from_value(lab.key(Algorithm::ES256).expect("key").jwk().clone()).expect("jwk");
    let key = DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = 30;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let entry = CskEntry {
        id: CskId(0x2ddd5bf0),
        csk: Csk::from_hex("e06e651061835473 42d3e8a6ce2540a8").expect("csk"),
        mc_id: "sip:alice@example.org".into(),
    };
    let p = Protector::new(&entry, KdfReading::default()).expect("protector");
    let info = p
        .encrypt_info(
            Service::Mcptt,
            &clear_info(
                Service::Mcptt,
                &token,
                Some("urn:uuid:00000000-0000-0000-0000-000000000001"),
            ),
        )
        .expect("protect");
    let sig = p.sign(&[(INFO_CONTENT_ID, info.as_bytes())]);
    let mut table = LabCskTable::default();
    table.insert(entry).expect("table");
    Case {
        token,
        key,
        validation,
        table,
        info,
        sig,
    }
}

fn jwt(c: &Case) -> bool {
    jsonwebtoken::decode::<Claims>(&c.token, &c.key, &c.validation).is_ok()
}

fn decrypt(c: &Case) -> bool {
    let keys = CskKeys {
        store: &c.table,
        reading: KdfReading::default(),
    };
    xmlenc::reveal_info(c.info.as_bytes(), "mcptt", &keys).is_ok()
}

fn verify(c: &Case) -> bool {
    let keys = CskKeys {
        store: &c.table,
        reading: KdfReading::default(),
    };
    xmldsig::verify(
        c.sig.as_bytes(),
        &[MimePart {
            content_id: INFO_CONTENT_ID,
            body: c.info.as_bytes(),
        }],
        &keys,
    )
    .is_ok()
}

fn ratios(c: &Case) {
    let n = 2000;
    let (mut t_jwt, mut t_dec, mut t_sig) = (0f64, 0f64, 0f64);
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(jwt(black_box(c)));
        }
        t_jwt += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            black_box(decrypt(black_box(c)));
        }
        t_dec += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            black_box(verify(black_box(c)));
        }
        t_sig += t.elapsed().as_secs_f64();
    }
    let per = |s: f64| s / f64::from(5 * n) * 1e6;
    println!(
        "\nclause 9 cost beside one ES256 JWT verification (jsonwebtoken::decode), interleaved:"
    );
    println!("  JWT verify (ES256)        {:7.2} µs", per(t_jwt));
    println!(
        "  decrypt info (2 elements) {:7.2} µs  ratio {:.3}",
        per(t_dec),
        t_dec / t_jwt
    );
    println!(
        "  verify signature part     {:7.2} µs  ratio {:.3}",
        per(t_sig),
        t_sig / t_jwt
    );
    println!(
        "  protected total           {:7.2} µs  ratio {:.3} (JWT + decrypt + signature ÷ JWT)",
        per(t_jwt + t_dec + t_sig),
        (t_jwt + t_dec + t_sig) / t_jwt
    );
}

fn main() {
    let c = case();
    assert!(
        jwt(&c) && decrypt(&c) && verify(&c),
        "the bench case must pass"
    );
    let mut cr = Criterion::default().configure_from_args();
    {
        let mut g = cr.benchmark_group("clause9");
        g.throughput(Throughput::Elements(1));
        g.bench_function("jwt_es256_decode", |b| {
            b.iter(|| assert!(jwt(black_box(&c))))
        });
        g.bench_function("xmlenc_reveal_info", |b| {
            b.iter(|| assert!(decrypt(black_box(&c))))
        });
        g.bench_function("xmldsig_verify", |b| {
            b.iter(|| assert!(verify(black_box(&c))))
        });
        g.finish();
    }
    cr.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        ratios(&c);
    }
}

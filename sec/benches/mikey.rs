//! Costs of the CSK-upload check (TS 33.180 5.4) on the Streamwide CSK I_MESSAGE: the full
//! check (parse, ECCSI, SAKKE), the pairing and each primitive alone, and a refusal at each
//! stage that comes before the pairing. Prints the ratio of the full check to each refusal.
//!
//! `cargo bench -p mcx-sec --bench mikey`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use mcx_sec::csk_upload::{self, Receiver};
use mcx_sec::kms::{KmsCertificate, KmsKeySet};
use mcx_sec::mikey::{self, id_role, Payload};
use mcx_sec::uid::NTP_UNIX_OFFSET;
use mcx_sec::{eccsi, sakke};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
const T_UNIX: u64 = 0xec89_8da8 - NTP_UNIX_OFFSET;

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
}

fn bench(c: &mut Criterion) {
    let cert: KmsCertificate = toml::from_str(&read("streamwide/kms_init.toml")).unwrap();
    let gms_keys: KmsKeySet = toml::from_str(&read("streamwide/gms.toml")).unwrap();
    let alice_keys: KmsKeySet = toml::from_str(&read("streamwide/alice.toml")).unwrap();
    let gms = Receiver::new(&cert, &gms_keys).unwrap();
    let alice = Receiver::new(&cert, &alice_keys).unwrap();
    let certs = std::slice::from_ref(&cert);
    let csk = mikey::from_text(&read("test2_csk.b64")).unwrap();
    let gmk = mikey::from_text(&read("test1_gmk.b64")).unwrap();
    assert!(csk_upload::verify(&csk, T_UNIX, 30, certs, &gms).is_ok());

    let decoded = mikey::decode(&csk).unwrap();
    let m = &decoded.message;
    let sakke_data = m
        .find(|p| match p {
            Payload::Sakke(s) => Some(s.data.clone()),
            _ => None,
        })
        .unwrap();
    let idri = m.idr(id_role::INITIATOR_UID).unwrap().data.clone();
    let kpak = cert.kpak().unwrap();
    let sig = m.sign.as_ref().unwrap().signature.clone();
    let rsk = gms_keys.rsk().unwrap();
    let z = cert.sakke_public_key().unwrap();
    let uid = gms_keys.uid().unwrap();

    let mut bad_sig = csk.clone();
    bad_sig[30] ^= 1; // an octet of RAND
    let truncated = &csk[..csk.len() - 1];
    let mut no_rand = m.clone();
    no_rand.payloads.retain(|p| !matches!(p, Payload::Rand(_)));
    let no_rand = no_rand.encode().unwrap();

    let mut g = c.benchmark_group("mikey");
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(20);
    g.bench_function("full_check_parse_eccsi_sakke", |b| {
        b.iter(|| csk_upload::verify(&csk, T_UNIX, 30, certs, &gms).unwrap())
    });
    g.bench_function("pairing", |b| {
        b.iter(|| sakke::pairing_of(&sakke_data[..sakke::POINT_LEN], rsk.as_bytes()).unwrap())
    });
    g.bench_function("sakke_decapsulate", |b| {
        b.iter(|| sakke::decapsulate(&sakke_data, &uid, &rsk, &z).unwrap())
    });
    g.bench_function("eccsi_verify", |b| {
        b.iter(|| eccsi::verify(&kpak, &idri, decoded.signed, &sig).unwrap())
    });
    g.bench_function("parse", |b| b.iter(|| mikey::decode(&csk).unwrap()));
    g.sample_size(50);
    g.bench_function("refuse_parse", |b| {
        b.iter(|| csk_upload::verify(truncated, T_UNIX, 30, certs, &gms).unwrap_err())
    });
    g.bench_function("refuse_structure", |b| {
        b.iter(|| csk_upload::verify(&no_rand, T_UNIX, 30, certs, &gms).unwrap_err())
    });
    g.bench_function("refuse_timestamp", |b| {
        b.iter(|| csk_upload::verify(&csk, T_UNIX + 3600, 30, certs, &gms).unwrap_err())
    });
    g.bench_function("refuse_purpose", |b| {
        b.iter(|| csk_upload::verify(&gmk, T_UNIX, 30, certs, &alice).unwrap_err())
    });
    g.bench_function("refuse_unknown_kms", |b| {
        b.iter(|| csk_upload::verify(&csk, T_UNIX, 30, &[], &gms).unwrap_err())
    });
    g.bench_function("refuse_signature", |b| {
        b.iter(|| csk_upload::verify(&bad_sig, T_UNIX, 30, certs, &gms).unwrap_err())
    });
    g.bench_function("refuse_receiver", |b| {
        b.iter(|| csk_upload::verify(&csk, T_UNIX, 30, certs, &alice).unwrap_err())
    });
    g.finish();

    // Ratios, measured directly so they print in one table.
    let time = |f: &dyn Fn()| {
        let n = 20;
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed() / n
    };
    let full = time(&|| {
        csk_upload::verify(&csk, T_UNIX, 30, certs, &gms).unwrap();
    });
    println!("\nfull check: {full:?}");
    for (name, cost) in [
        (
            "parse",
            time(&|| {
                csk_upload::verify(truncated, T_UNIX, 30, certs, &gms).unwrap_err();
            }),
        ),
        (
            "structure",
            time(&|| {
                csk_upload::verify(&no_rand, T_UNIX, 30, certs, &gms).unwrap_err();
            }),
        ),
        (
            "timestamp",
            time(&|| {
                csk_upload::verify(&csk, T_UNIX + 3600, 30, certs, &gms).unwrap_err();
            }),
        ),
        (
            "purpose",
            time(&|| {
                csk_upload::verify(&gmk, T_UNIX, 30, certs, &alice).unwrap_err();
            }),
        ),
        (
            "unknown KMS",
            time(&|| {
                csk_upload::verify(&csk, T_UNIX, 30, &[], &gms).unwrap_err();
            }),
        ),
        (
            "signature",
            time(&|| {
                csk_upload::verify(&bad_sig, T_UNIX, 30, certs, &gms).unwrap_err();
            }),
        ),
        (
            "receiver",
            time(&|| {
                csk_upload::verify(&csk, T_UNIX, 30, certs, &alice).unwrap_err();
            }),
        ),
    ] {
        println!(
            "refusal at {name:<11} {cost:>12?}  full check / refusal = {:.0}x",
            full.as_secs_f64() / cost.as_secs_f64().max(1e-9)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The server's cost of a CSK upload carried in a PUBLISH (TS 33.180 5.4), as the shell runs it
//! (`mcx_authz::mikey`: the `application/mikey` part in base64 → `csk_upload::verify` with the
//! server's lab KMS material → the machine's `KeyUpload`, signer found among the token's MC
//! service IDs): one accepted upload, and a refusal at each stage before the pairing. Freshness
//! is the machine's (the shell's check has no T window), so a stale but validly signed upload
//! costs a full check: measured too.
//!
//! Run: `cargo bench --bench mikey_upload -- --warm-up-time 1 --measurement-time 4`
//! After criterion's report it prints each case's median over 15 runs and its ratio to the full
//! check.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use mcx_authz::mikey::{self, UploadReceiver};
use mcx_model::{KeyUpload, McId, ServiceSet, TokenId, UnixTime, VerifiedClaims};
use mcx_sec::csk::Csk;
use mcx_sec::csk_upload::{build, BuildParams};
use mcx_sec::kms::{KmsCertificate, KmsKeySet, KmsSecrets};

const ALICE: &str = "sip:alice@example.org";
const SERVER: &str = "sip:mcx.example.org";

struct Lab {
    receiver: UploadReceiver,
    foreign: UploadReceiver,
    cert: KmsCertificate,
    alice: KmsKeySet,
    now: u64,
    dir: std::path::PathBuf,
}

fn lab() -> Lab {
    let dir = std::env::temp_dir().join(format!("mcx-bench-mikey-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let now = 1_796_000_000;
    let (cert, secrets): (KmsCertificate, KmsSecrets) =
        mikey::init_community(&dir, "kms.mcx.example.org", 2_592_000, 0).expect("community");
    let own = mikey::provision(&dir, &cert, &secrets, SERVER, now).expect("server key set");
    let own: KmsKeySet = mikey::read_toml(&own).expect("read");
    let alice = mikey::provision(&dir, &cert, &secrets, ALICE, now).expect("alice");
    let alice: KmsKeySet = mikey::read_toml(&alice).expect("read");
    let receiver = UploadReceiver::new(vec![cert.clone()], &own, Some(&dir)).expect("receiver");
    // A server of another community: alice's KMS is unknown to it.
    let other = dir.join("other");
    let (ocert, osecrets) =
        mikey::init_community(&other, "kms.other.example", 2_592_000, 0).expect("other");
    let oown = mikey::provision(&other, &ocert, &osecrets, SERVER, now).expect("other key set");
    let oown: KmsKeySet = mikey::read_toml(&oown).expect("read");
    let foreign = UploadReceiver::new(vec![ocert], &oown, None).expect("foreign");
    Lab {
        receiver,
        foreign,
        cert,
        alice,
        now,
        dir,
    }
}

fn message(l: &Lab, csk_id: u32, t: u64, to: &str) -> String {
    let bytes = build(&BuildParams {
        csk: &Csk::new([0x5a; 16]),
        csk_id,
        rand: rand::random(),
        t_unix: t,
        initiator: (&l.cert, &l.alice),
        receiver: (to, &l.cert),
        j: rand::random(),
    })
    .expect("build");
    mcx_sec::mikey::base64_encode(&bytes)
}

fn claims() -> VerifiedClaims {
    VerifiedClaims {
        mcptt_id: Some(McId::new(ALICE)),
        mcvideo_id: None,
        mcdata_id: None,
        scopes: ServiceSet::ALL,
        exp: UnixTime(u64::MAX),
        token_id: TokenId::new("t"),
    }
}

/// What the shell does with one part: check it, and give the machine its `KeyUpload`.
fn shell(r: &UploadReceiver, part: &str, now: u64, c: &VerifiedClaims) -> KeyUpload {
    let checked = r.check(part.as_bytes(), now);
    checked.key_upload(r.certificates(), Some(c))
}

fn main() {
    let l = lab();
    let c = claims();
    let good = message(&l, 0x2123_4567, l.now, SERVER);
    let stale = message(&l, 0x2123_4568, l.now - 3600, SERVER);
    let gmk = message(&l, 0x0123_4567, l.now, SERVER);
    let not_ours = message(&l, 0x2123_4569, l.now, "sip:other.example.org");
    let mut forged = mcx_sec::mikey::from_text(&good).expect("b64");
    // An octet of the SAKKE payload: covered by the signature, so ECCSI runs and fails.
    let mid = forged.len() / 2;
    forged[mid] ^= 1;
    let forged = mcx_sec::mikey::base64_encode(&forged);
    let truncated = good[..good.len() / 2].to_owned();
    let cases: Vec<(&str, &UploadReceiver, &str, bool)> = vec![
        (
            "accepted (parse, ECCSI, SAKKE, signer)",
            &l.receiver,
            &good,
            true,
        ),
        (
            "stale but validly signed (machine refuses)",
            &l.receiver,
            &stale,
            true,
        ),
        (
            "refused: not base64 / not MIKEY",
            &l.receiver,
            "not a mikey message!",
            false,
        ),
        ("refused: parse (truncated)", &l.receiver, &truncated, false),
        ("refused: purpose (a GMK id)", &l.receiver, &gmk, false),
        ("refused: unknown KMS", &l.foreign, &good, false),
        ("refused: bad signature", &l.receiver, &forged, false),
        (
            "refused: not for this server",
            &l.receiver,
            &not_ours,
            false,
        ),
    ];
    for (name, r, part, ok) in &cases {
        let v = shell(r, part, l.now, &c);
        assert_eq!(
            matches!(v, KeyUpload::Verified { .. }),
            *ok,
            "{name}: {v:?}"
        );
    }
    let mut crit = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    {
        let mut g = crit.benchmark_group("csk_upload_in_publish");
        for (name, r, part, _) in &cases {
            g.bench_function(*name, |b| {
                b.iter(|| shell(black_box(r), black_box(part), l.now, &c))
            });
        }
        g.finish();
    }
    crit.final_summary();

    // Medians of 15 timed runs each (interleaved), and ratios to the accepted upload.
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..15 {
        for (i, (_, r, part, _)) in cases.iter().enumerate() {
            let reps = if i < 2 { 3 } else { 200 };
            let t = Instant::now();
            for _ in 0..reps {
                black_box(shell(r, part, l.now, &c));
            }
            times[i].push(t.elapsed().as_secs_f64() / f64::from(reps));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let full = median(&mut times[0].clone());
    println!("\nCSK upload in a PUBLISH, the shell's whole check (medians of 15, interleaved):");
    for (i, (name, ..)) in cases.iter().enumerate() {
        let m = median(&mut times[i]);
        let shown = if m >= 1e-3 {
            format!("{:8.2} ms", m * 1e3)
        } else {
            format!("{:8.2} µs", m * 1e6)
        };
        println!("  {name:<45} {shown}  full/this {:>9.1}", full / m);
    }
    let _ = std::fs::remove_dir_all(&l.dir);
}

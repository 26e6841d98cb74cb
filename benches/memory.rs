//! Memory benchmark: resident bytes per binding with 10^5 and 10^6 bindings in the machine (each
//! size in a fresh process), and growth after 10^6 register → bind → de-register cycles. Run with
//! `cargo bench --bench memory` (add `-- --quick` for 10^4/10^5). Prints a table; asserts only
//! that every churn PUBLISH binds.
//!
//! The machine is driven directly (the server holds exactly this state plus a bounded UDP
//! transaction cache), with realistic identifier sizes: IMPU `sip:user000123@ims.example.org`,
//! client ID `urn:uuid:…`, MC service ID `sip:user000123@mcx.example.org`, a 32-hex-digit jti,
//! a SIP-ETag like the server's (12 hex digits of prefix, a dot and a hex counter).

use std::time::Instant;

use mcx_model::*;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn register(impu: &Impu, expires: u32) -> Input {
    Input::ThirdPartyRegister(ThirdPartyRegister {
        target: RegisterTarget::Ours,
        impu: AssertedIdentity::Trusted(impu.clone()),
        expires: Some(expires),
        services: Some(ServiceSet::only(Service::Mcptt)),
        embedded: vec![],
    })
}

fn mc_id(i: u64) -> McId {
    McId::new(format!("sip:user{i:09}@mcx.example.org"))
}

/// The user's CSK (TS 33.180 5.4): post-CR every binding rests on one.
fn csk_id(i: u64) -> CskId {
    CskId::new(format!("{:08x}", i as u32))
}

fn authorize(impu: &Impu, i: u64, etag: u64) -> Input {
    let mc_id = mc_id(i);
    Input::Publish(Publish {
        target: PublishTarget::Service(Service::Mcptt),
        event: EventPackage::PocSettings,
        impu: AssertedIdentity::Trusted(impu.clone()),
        if_match: IfMatch::Absent,
        expires: Some(u32::MAX),
        body: PublishBody::Authorization(Authorization {
            token: TokenVerdict::Verified(VerifiedClaims {
                mcptt_id: Some(mc_id),
                mcvideo_id: None,
                mcdata_id: None,
                scopes: ServiceSet::only(Service::Mcptt),
                exp: UnixTime(2_000_000_000),
                token_id: TokenId::new(format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
            }),
            protection: Protection::Csk(csk_id(i)),
            client_id: ClientId::new(format!("urn:uuid:00000000-0000-4000-8000-{i:012}")),
            settings: Some(Settings {
                answer_mode_automatic: Some(true),
                ..Settings::default()
            }),
        }),
        key_upload: None,
        fresh_etag: ETag::new(format!("{:012x}.{etag:x}", 0x5eed_u64)),
    })
}

/// 1 when the PUBLISH's outputs end with its 200 (the binding is made), else 0.
fn authorized(out: Vec<Output>) -> u64 {
    match out.last() {
        Some(Output::Response(r)) if r.status() == 200 => 1,
        _ => 0,
    }
}

fn impu(i: u64) -> Impu {
    Impu::new(format!("sip:user{i:09}@ims.example.org"))
}

fn fill(n: u64) -> (Machine, f64) {
    let mut m = Machine::new(Variant::PostCr.policy());
    let now = UnixTime(1_800_000_000);
    let start = Instant::now();
    for i in 0..n {
        let impu = impu(i);
        m.handle(
            now,
            Input::ProvisionCsk {
                csk_id: csk_id(i),
                mc_id: mc_id(i),
            },
        );
        m.handle(now, register(&impu, 600));
        m.handle(now, authorize(&impu, i, i));
    }
    assert_eq!(m.binding_count() as u64, n);
    (m, start.elapsed().as_secs_f64())
}

/// One size, measured in this (fresh) process: prints its table row.
fn fill_and_report(n: u64) {
    let before = rss_bytes();
    let (m, secs) = fill(n);
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "{n:>10} {:>14.1} {per:>18.0} {:>22.0}",
        (after - before) as f64 / 1048576.0,
        n as f64 / secs
    );
    drop(m);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--fill") {
        let n = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--fill N");
        fill_and_report(n);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: &[u64] = if quick {
        &[10_000, 100_000]
    } else {
        &[100_000, 1_000_000]
    };
    println!(
        "mcx-model memory benchmark ({})",
        if quick { "quick" } else { "full" }
    );
    println!(
        "{:>10} {:>14} {:>18} {:>22}",
        "bindings", "RSS delta MiB", "bytes per binding", "register+bind per s"
    );
    // Each size in a fresh process: memory freed by an earlier, smaller fill stays resident in
    // the allocator and would be reused without showing in the RSS delta (it made the 10^6 figure
    // ≈ 70–100 B per binding too low before issue 15 item 3 found it).
    for &n in sizes {
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(["--fill", &n.to_string()])
            .output()
            .expect("child run");
        assert!(out.status.success(), "fill {n} failed: {out:?}");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    // Churn: a population of 10^4 live bindings, and 10^6 cycles of register → bind →
    // de-register over it. RSS is sampled after a warm-up and at the end.
    let cycles: u64 = if quick { 100_000 } else { 1_000_000 };
    let live = 10_000u64;
    let mut m = Machine::new(Variant::PostCr.policy());
    let now = UnixTime(1_800_000_000);
    // Each UE's CSK, as in `fill` (without it every PUBLISH was refused for an unknown CSK and
    // the churn bound nothing).
    for i in 0..live {
        m.handle(
            now,
            Input::ProvisionCsk {
                csk_id: csk_id(i),
                mc_id: mc_id(i),
            },
        );
    }
    let mut warm = 0;
    let mut bound = 0u64;
    let start = Instant::now();
    for c in 0..cycles {
        let i = c % live;
        let impu = impu(i);
        m.handle(now, register(&impu, 600));
        bound += authorized(m.handle(now, authorize(&impu, i, c)));
        m.handle(now, register(&impu, 0));
        m.handle(now, register(&impu, 600));
        bound += authorized(m.handle(now, authorize(&impu, i, c + cycles)));
        if c == cycles / 10 {
            warm = rss_bytes();
        }
    }
    let end = rss_bytes();
    assert_eq!(bound, 2 * cycles, "every churn PUBLISH binds");
    assert_eq!(m.binding_count() as u64, live);
    println!(
        "churn: {cycles} register/bind/de-register cycles over {live} UEs in {:.1} s; RSS after 10%: {:.1} MiB, at end: {:.1} MiB, growth {:+.1} MiB; bindings held {}",
        start.elapsed().as_secs_f64(),
        warm as f64 / 1048576.0,
        end as f64 / 1048576.0,
        (end as f64 - warm as f64) / 1048576.0,
        m.binding_count()
    );
}

//! Checker speed: `cargo run --release -p mcx-model --example checker_speed -- [variant] [ues]
//! [impus] [threads] [companions] [seconds] [companion budget]`
//! runs stateright's BFS over the variant's default configuration (with the
//! UE, IMPU and companion-UE counts given; `ues` alone keeps the default's companion UE) and prints unique states, seconds and unique states per second (stopping after `seconds`
//! if given: then the figures are of a partial run, and `done` says so).
//! For quick before/after comparisons of the model's representation without building the
//! server binary; `mcx-authz check` is the real thing (docs/benchmarks.md).

use std::time::Instant;

use mcx_model::{ModelConfig, Variant};
use stateright::{Checker, Model};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let variant: Variant = args
        .first()
        .map_or(Ok(Variant::PostCr), |v| v.parse())
        .expect("variant: post-cr, pre-cr or ct1-rel18");
    let mut cfg = ModelConfig::for_variant(variant);
    if let Some(n) = args.get(1) {
        cfg = cfg.with_ues(n.parse().expect("ues"));
    }
    if let Some(n) = args.get(4) {
        cfg.companions = n.parse().expect("companions");
    }
    if let Some(n) = args.get(2) {
        cfg.impus_per_ue = n.parse().expect("impus");
    }
    let threads = args.get(3).map_or(2, |n| n.parse().expect("threads"));
    if let Some(n) = args.get(6) {
        cfg.companion_budget = n.parse().expect("companion budget");
    }
    let timeout = args.get(5).map(|n| n.parse().expect("seconds"));
    let model = cfg.into_model();
    let start = Instant::now();
    let mut builder = model.checker().threads(threads);
    if let Some(secs) = timeout {
        builder = builder.timeout(std::time::Duration::from_secs(secs));
    }
    let checker = builder.spawn_bfs().join();
    let secs = start.elapsed().as_secs_f64();
    let unique = checker.unique_state_count();
    println!(
        "{variant}: {unique} unique states ({} generated), max depth {}, {secs:.2} s on {threads} threads, {:.0} unique states/s, {} discoveries, done {}",
        checker.state_count(),
        checker.max_depth(),
        unique as f64 / secs,
        checker.discoveries().len(),
        checker.is_done()
    );
}

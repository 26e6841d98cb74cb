//! The structural invariants of docs/ARCHITECTURE.md, checked: the machine's crate is pure (no
//! runtime, no SIP parser, no crypto), and the security crate is sans-IO (no runtime, no SIP,
//! no machine).

use std::process::Command;

/// The normal (non-dev) dependencies of `package`, by name, from `cargo tree`.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn assert_none_of(package: &str, forbidden: &[&str]) {
    let deps = dependencies(package);
    assert!(deps.iter().any(|d| d == package), "{deps:?}");
    let found: Vec<&String> = deps
        .iter()
        .filter(|d| {
            forbidden
                .iter()
                .any(|f| d.as_str() == *f || d.starts_with(&format!("{f}-")))
        })
        .collect();
    assert!(found.is_empty(), "{package} depends on {found:?}");
}

#[test]
fn the_model_crate_has_no_runtime_no_sip_parser_and_no_crypto() {
    assert_none_of(
        "mcx-model",
        &[
            "tokio",
            "mio",
            "axum",
            "jsonwebtoken",
            "aws-lc-rs",
            "aws-lc-sys",
            "ring",
            "rustls",
            "sha2",
            "hmac",
            "aes-gcm",
            "p256",
            "crypto-bigint",
            "quick-xml",
            "mcx-sec",
            "mcx-authz",
        ],
    );
}

#[test]
fn the_security_crate_is_sans_io() {
    assert_none_of(
        "mcx-sec",
        &[
            "tokio",
            "mio",
            "axum",
            "hyper",
            "socket2",
            "ureq",
            "mcx-model",
            "mcx-authz",
        ],
    );
}

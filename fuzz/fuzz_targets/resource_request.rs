//! cargo-fuzz target for what the KMS/CM/GM servers read from a request before any route sees
//! it: the path (`resource::path::segments`) and the `Authorization` header
//! (`resource::auth::bearer`). Invariants: no panic; an accepted path has only segments that
//! are neither dot segments nor hold a separator or control character, within the bounds.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run resource_request -- -max_total_time=600`

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcx_authz::resource::{auth, path};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (p, h) = data.split_at(split);
    if let Ok(p) = std::str::from_utf8(p) {
        if let Ok(segs) = path::segments(p) {
            assert!(p.len() <= path::MAX_PATH_BYTES && segs.len() <= path::MAX_SEGMENTS);
            for s in &segs {
                assert!(!s.is_empty() && s != "." && s != "..");
                assert!(!s.chars().any(|c| c == '/' || c == '\\' || c.is_control()));
            }
        }
    }
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(v) = axum::http::HeaderValue::from_bytes(h.get(1..).unwrap_or_default()) {
        headers.insert(axum::http::header::AUTHORIZATION, v);
    }
    if let auth::Bearer::Token(t) = auth::bearer(&headers) {
        assert!(!t.is_empty() && !t.contains(' '));
    }
});

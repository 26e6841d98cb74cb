//! cargo-fuzz target for the SIP edge: framing (datagram and stream), parsing, body extraction,
//! the adapter and response building, with the invariants of
//! `mcx_authz::sip::selfcheck::check_bytes` (the same path the bounded proptest in
//! `tests/sip_edge.rs` runs in CI).
//!
//! Long runs by hand: `cargo +nightly fuzz run sip_edge -- -max_total_time=3600`
//! (seed the corpus with `tests/fixtures/sip/*.sip`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mcx_authz::sip::selfcheck::check_bytes(data);
});

//! cargo-fuzz target for the MC info body readers (TS 24.379 F.1, TS 24.484 poc-settings) and the
//! message/sip and multipart splitters a PUBLISH or third-party REGISTER body goes through.
//!
//! The first byte picks the reader, the rest is the body. Invariants: nothing panics, a value
//! read out of a body is never longer than the body, and reading is deterministic.
//!
//! `fuzz/run.sh mcptt_info 600` (seed corpus: the XML parts of `tests/fixtures/sip/*.sip`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcx_authz::sip::body::{self, InfoValue};
use mcx_model::Service;

fn len(v: &Option<InfoValue>) -> usize {
    match v {
        Some(InfoValue::Plain(s)) => s.len(),
        Some(InfoValue::Protected(p)) => [&p.algorithm, &p.key_name, &p.cipher_value]
            .iter()
            .map(|x| x.as_ref().map_or(0, |s| s.len()))
            .max()
            .unwrap_or(0),
        None => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0..=2 => {
            let service = Service::ALL[(selector % 3) as usize];
            let first = body::read_info(service, body);
            if let Ok(info) = &first {
                assert_eq!(info.service, service);
                for v in [&info.access_token, &info.client_id, &info.request_uri] {
                    // Entity expansion is bounded: nothing grows beyond the body.
                    assert!(len(v) <= body.len(), "value longer than its body");
                }
            }
            assert_eq!(
                first.is_ok(),
                body::read_info(service, body).is_ok(),
                "non-deterministic"
            );
        }
        3 => {
            if let Ok(s) = body::read_poc_settings(body) {
                assert!(s.entity_id.map_or(0, |e| e.len()) <= body.len());
            }
        }
        4 => {
            let _ = body::read_message_sip(body);
        }
        _ => {
            // A Content-Type line, then the body: the multipart splitter.
            let split = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            let (ct, rest) = body.split_at(split);
            let Ok(ct) = std::str::from_utf8(ct) else {
                return;
            };
            if let Ok(parts) = body::parts(ct, rest) {
                for p in parts {
                    assert!(p.body.len() <= rest.len());
                }
            }
        }
    }
});

//! cargo-fuzz target for the TS 33.180 clause 9 openers of mcx-sec: `xmlenc::reveal_info` on
//! an MC info body and `xmldsig::verify` of a signature part, under a lab CSK table.
//! Invariants: no panic; a body that reveals is well-formed, names only the table's CSK, and
//! reveals again with nothing left to open.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run xmlenc -- -max_total_time=60`
//! (seed corpus: `fuzz/corpus/xmlenc/`, protected bodies written by `mcx-authz protect`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcx_sec::csk::{Csk, CskEntry, CskId, LabCskTable};
use mcx_sec::kdf::{CskKeys, KdfReading};
use mcx_sec::xmldsig::{self, MimePart};
use mcx_sec::xmlenc;

fuzz_target!(|data: &[u8]| {
    let mut table = LabCskTable::default();
    let _ = table.insert(CskEntry {
        id: CskId(0x2ddd5bf0),
        csk: Csk::new([0xe0; 16]),
        mc_id: "sip:alice@example.org".into(),
    });
    let keys = CskKeys {
        store: &table,
        reading: KdfReading::default(),
    };
    if let Ok(r) = xmlenc::reveal_info(data, "mcptt", &keys) {
        assert!(r.csk_id.is_none() || r.csk_id == Some(CskId(0x2ddd5bf0)));
        assert_eq!(r.opened.is_empty(), r.csk_id.is_none());
        // Escaping may grow the text past the size bound; within it, the body reads again.
        if r.xml.len() <= 32 * 1024 {
            let again = xmlenc::reveal_info(r.xml.as_bytes(), "mcptt", &keys)
                .expect("a revealed body parses again");
            assert!(again.opened.is_empty());
        }
    }
    let _ = xmldsig::verify(
        data,
        &[MimePart {
            content_id: "info@example.org",
            body: b"<mcpttinfo/>",
        }],
        &keys,
    );
});

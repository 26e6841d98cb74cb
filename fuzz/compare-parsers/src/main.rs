//! Runs the SIP fixture corpus (`tests/fixtures/sip/`) through the three parsing options of
//! issue 4 and prints one row per fixture (the evidence behind the choice in `docs/sip-edge.md`):
//!
//! * `edge`: our framing + in-house parser (what `src/sip/` ships);
//! * `rsip`: rsip 0.4.0 on the raw bytes;
//! * `rsip+norm`: rsip 0.4.0 after our framing and normalisation (folding undone, compact forms
//!   expanded, message re-serialised with the framed body);
//! * `rsipstack`: rsipstack 0.7.14's `sip` module on the raw bytes.
//!
//! Each cell is `ok` when the parser accepted the message **and** read the same Call-ID, CSeq
//! number, number of Via hops and body length as the edge; `ERR` when it refused it; `DIFF`
//! when it accepted it but read something else (a silent misparse).
//!
//! Run: `cd fuzz/compare-parsers && cargo run --release`.

#[path = "../../../src/sip/mod.rs"]
#[allow(dead_code, unused_imports)]
mod sip;

use std::collections::BTreeMap;

/// What a parser read from a message.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    call_id: String,
    cseq: u32,
    vias: usize,
    body: usize,
}

fn edge(bytes: &[u8]) -> Result<Option<Seen>, String> {
    let frame = sip::framing::frame_datagram(bytes).map_err(|e| e.to_string())?;
    match sip::parse::parse(&frame).map_err(|e| e.to_string())? {
        sip::parse::SipMessage::Request(r) => Ok(Some(Seen {
            call_id: r.call_id.clone(),
            cseq: r.cseq,
            vias: r.vias.len(),
            body: r.body.len(),
        })),
        sip::parse::SipMessage::Response(_) => Ok(None),
    }
}

fn count_vias(values: impl Iterator<Item = String>) -> usize {
    values.map(|v| sip::parse::split_commas(&v).len()).sum()
}

fn rsip_seen(msg: &rsip::SipMessage) -> Result<Seen, String> {
    use rsip::prelude::*;
    let call_id = msg
        .call_id_header()
        .map_err(|e| e.to_string())?
        .value()
        .to_owned();
    let cseq = msg
        .cseq_header()
        .map_err(|e| e.to_string())?
        .typed()
        .map_err(|e| e.to_string())?
        .seq;
    let vias = count_vias(msg.headers().iter().filter_map(|h| match h {
        rsip::Header::Via(v) => Some(v.value().to_owned()),
        _ => None,
    }));
    Ok(Seen {
        call_id,
        cseq,
        vias,
        body: msg.body().len(),
    })
}

fn rsip_raw(bytes: &[u8]) -> Result<Seen, String> {
    let msg = rsip::SipMessage::try_from(bytes).map_err(|e| e.to_string())?;
    rsip_seen(&msg)
}

/// Option (a): normalise with our framing and header tokenizer, then hand rsip a clean message.
fn rsip_normalised(bytes: &[u8]) -> Result<Seen, String> {
    let frame = sip::framing::frame_datagram(bytes).map_err(|e| e.to_string())?;
    let (start, rest) = frame.head.split_once("\r\n").unwrap_or((&frame.head, ""));
    let headers = sip::parse::header_lines(rest)?;
    let mut out = format!("{start}\r\n");
    for (n, v) in headers {
        if n == "Content-Length" {
            continue;
        }
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", frame.body.len()));
    let mut b = out.into_bytes();
    b.extend_from_slice(&frame.body);
    rsip_raw(&b)
}

fn rsipstack(bytes: &[u8]) -> Result<Seen, String> {
    use rsipstack::sip::prelude::*;
    let msg = rsipstack::sip::SipMessage::try_from(bytes).map_err(|e| e.to_string())?;
    let call_id = msg
        .call_id_header()
        .map_err(|e| e.to_string())?
        .value()
        .to_owned();
    let cseq = msg
        .cseq_header()
        .map_err(|e| e.to_string())?
        .typed()
        .map_err(|e| e.to_string())?
        .seq;
    let vias = count_vias(msg.headers().iter().filter_map(|h| match h {
        rsipstack::sip::Header::Via(v) => Some(v.value().to_owned()),
        _ => None,
    }));
    let body = match &msg {
        rsipstack::sip::SipMessage::Request(r) => r.body().len(),
        rsipstack::sip::SipMessage::Response(r) => r.body().len(),
    };
    Ok(Seen {
        call_id,
        cseq,
        vias,
        body,
    })
}

fn cell(edge: &Result<Option<Seen>, String>, other: Result<Seen, String>) -> String {
    match (edge, other) {
        (_, Err(e)) => format!("ERR ({})", e.chars().take(38).collect::<String>()),
        (Ok(Some(a)), Ok(b)) if *a == b => "ok".into(),
        (Ok(None), Ok(_)) => "ok (response)".into(),
        (Ok(Some(a)), Ok(b)) => format!("DIFF {b:?} vs {a:?}"),
        (Err(_), Ok(b)) => format!("accepted what the edge refuses: {b:?}"),
    }
}

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sip");
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("fixture dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "sip" || x == "tcp") {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&p).expect("read"));
        }
    }
    println!("| fixture | edge | rsip 0.4 | rsip 0.4 + normalising | rsipstack 0.7.14 |");
    println!("|---|---|---|---|---|");
    for (name, bytes) in &files {
        let e = edge(bytes);
        let edge_cell = match &e {
            Ok(Some(s)) => format!("ok (vias {}, body {})", s.vias, s.body),
            Ok(None) => "ok (response)".into(),
            Err(err) => format!("ERR ({err})"),
        };
        println!(
            "| {name} | {edge_cell} | {} | {} | {} |",
            cell(&e, rsip_raw(bytes)),
            cell(&e, rsip_normalised(bytes)),
            cell(&e, rsipstack(bytes)),
        );
    }
}

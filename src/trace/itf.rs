//! A model trace in the Informal Trace Format (ITF, Apalache ADR-015, as Quint writes it):
//! `{"#meta", "vars", "states"}`, one state per step with the step's fields as variables.
//! Integers are `{"#bigint": "N"}`, optional fields Quint-style variants (`{"tag": "Some",
//! "value": v}` / `{"tag": "None", "value": {"#tup": []}}`), lists JSON arrays (sequences),
//! the token a record. State 0 is the initial state (`action` = `"init"`).

use mcx_model::env::TokenFact;
use mcx_model::TraceStep;
use serde_json::{json, Value};

use super::TraceSource;

/// The state variables, in order.
pub const VARS: [&str; 21] = [
    "step",
    "time",
    "actor",
    "sender",
    "action",
    "request",
    "via",
    "impu",
    "client_id",
    "user",
    "mc_id",
    "service",
    "token",
    "if_match",
    "expires",
    "status",
    "outcome",
    "warning",
    "etag",
    "events",
    "text",
];

fn int(n: u64) -> Value {
    json!({ "#bigint": n.to_string() })
}

fn some(v: Value) -> Value {
    json!({ "tag": "Some", "value": v })
}

fn none() -> Value {
    json!({ "tag": "None", "value": { "#tup": [] } })
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map(|x| some(f(x))).unwrap_or_else(none)
}

fn token(t: &TokenFact) -> Value {
    json!({
        "id": t.id,
        "user": t.user,
        "kind": t.kind,
        "protected": t.protected,
        "exp": int(t.exp),
    })
}

fn kebab<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn state(index: usize, st: &TraceStep) -> Value {
    json!({
        "#meta": { "index": index },
        "step": int(st.step as u64),
        "time": int(u64::from(st.time)),
        "actor": st.actor,
        "sender": opt(st.sender.as_ref(), |s| json!(s)),
        "action": st.action,
        "request": kebab(&st.request),
        "via": opt(st.via.as_ref(), |s| json!(s)),
        "impu": opt(st.impu.as_ref(), |s| json!(s)),
        "client_id": opt(st.client_id.as_ref(), |s| json!(s)),
        "user": opt(st.user.as_ref(), |s| json!(s)),
        "mc_id": opt(st.mc_id.as_ref(), |s| json!(s)),
        "service": opt(st.service.as_ref(), |s| json!(s)),
        "token": opt(st.token.as_ref(), token),
        "if_match": opt(st.if_match.as_ref(), |s| json!(s)),
        "expires": opt(st.expires, |n| int(u64::from(n))),
        "status": opt(st.status, |n| int(u64::from(n))),
        "outcome": opt(st.outcome.as_ref(), |s| json!(s)),
        "warning": opt(st.warning.as_ref(), |s| json!(s)),
        "etag": opt(st.etag.as_ref(), |s| json!(s)),
        "events": st.events,
        "text": st.text,
    })
}

/// The ITF document of a trace. `time_base` (the Unix time of tick 0 in the replay) goes in the
/// metadata.
pub fn trace(src: &TraceSource, time_base: u64) -> Value {
    let mut states = vec![json!({
        "#meta": { "index": 0 },
        "step": int(0),
        "time": int(0),
        "actor": "",
        "sender": none(),
        "action": "init",
        "request": "init",
        "via": none(),
        "impu": none(),
        "client_id": none(),
        "user": none(),
        "mc_id": none(),
        "service": none(),
        "token": none(),
        "if_match": none(),
        "expires": none(),
        "status": none(),
        "outcome": none(),
        "warning": none(),
        "etag": none(),
        "events": [],
        "text": "initial state",
    })];
    states.extend(src.steps.iter().enumerate().map(|(i, st)| state(i + 1, st)));
    json!({
        "#meta": {
            "format": "ITF",
            "format-description": "https://apalache-mc.org/docs/adr/015adr-trace.html",
            "source": "mcx-authz trace",
            "description": src.title,
            "variant": src.config.variant.name(),
            "config": src.config,
            "time_base": time_base,
        },
        "vars": VARS,
        "states": states,
    })
}

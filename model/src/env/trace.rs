//! Traces in MCX terms: each step of a path as structured fields (for JSON and for the SIPp
//! scenario generator), as a numbered message list and as a Mermaid `sequenceDiagram`; and a
//! breadth-first search for the shortest path to a state.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use stateright::Model;

use crate::input::Input;
use crate::output::BindingEvent;

use super::{
    user_name, Body, EnvAction, EnvState, McxModel, Msg, Prot, Req, Sender, StepEffect, Tok,
};

/// What kind of request (or event) a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    /// REGISTER (third-party REGISTER at the server).
    Register,
    /// REGISTER without the MC service feature tags (MC service log-off, TS 24.379 7.1).
    RegisterWithoutMcTags,
    /// REGISTER with `Expires: 0`.
    Deregister,
    /// PUBLISH with a token.
    PublishAuth,
    /// Settings-only PUBLISH.
    PublishSettings,
    /// Body-less PUBLISH refresh.
    Refresh,
    /// PUBLISH `Expires: 0`.
    Remove,
    /// User log-on at the IdMS (a token is issued).
    LogOn,
    /// User log-off at the UE.
    LogOff,
    /// Time advances.
    Tick,
    /// The server restarts.
    Restart,
    /// The environment settles (liveness: only fair behaviour from here on).
    Settle,
}

/// A token as a trace shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFact {
    /// The `jti`.
    pub id: String,
    /// The user (A, B, …).
    pub user: String,
    /// valid / expired / wrong-scope / forged.
    pub kind: String,
    /// Protected per TS 33.180 clause 9.
    pub protected: bool,
    /// The `exp` claim (ticks).
    pub exp: u64,
    /// The CSK it is protected under (`ds:KeyName`), if protected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csk: Option<String>,
    /// The I_MESSAGE (TS 33.180 5.4) that travels with it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i_message: Option<String>,
}

/// One step of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    /// 1-based step number.
    pub step: usize,
    /// The time (ticks) when the step happens.
    pub time: u8,
    /// Who acts: `UE1`, `Attacker`, `SIP core` (delivering), `Clock`, `MCX server`.
    pub actor: String,
    /// For deliveries, who originally sent the request (`UE1`, `Attacker`).
    pub sender: Option<String>,
    /// `send`, `deliver`, `deliver-keep-copy`, `deliver-duplicate`, `attack` (attacker request sent
    /// and delivered in one step), `log-on`, `tick`,
    /// `restart`.
    pub action: String,
    /// The request kind.
    pub request: RequestKind,
    /// `sip-core` or `direct` (forged P-Asserted-Identity) for requests.
    pub via: Option<String>,
    /// The IMPU (P-Asserted-Identity or registered IMPU).
    pub impu: Option<String>,
    /// The MC client ID.
    pub client_id: Option<String>,
    /// The user the token or settings names.
    pub user: Option<String>,
    /// The MC service ID the token or settings names.
    pub mc_id: Option<String>,
    /// The service.
    pub service: Option<String>,
    /// The token carried.
    pub token: Option<TokenFact>,
    /// `SIP-If-Match`.
    pub if_match: Option<String>,
    /// `Expires`.
    pub expires: Option<u32>,
    /// Response status (deliveries only).
    pub status: Option<u16>,
    /// The machine's outcome label.
    pub outcome: Option<String>,
    /// Warning text (`399 mcx "101 service authorisation failed"`).
    pub warning: Option<String>,
    /// `SIP-ETag` of a 2xx.
    pub etag: Option<String>,
    /// Binding events (`bound sip:ue1-a@ims.example/mcptt/ue1-client -> sip:userA@mcptt.example`).
    pub events: Vec<String>,
    /// One line in words.
    pub text: String,
}

/// A path of the model rendered as steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The steps.
    pub steps: Vec<TraceStep>,
}

fn ue_name(n: u8) -> String {
    format!("UE{}", n + 1)
}

fn sender_name(s: Sender) -> String {
    match s {
        Sender::Ue(n) => ue_name(n),
        Sender::Attacker => "Attacker".into(),
    }
}

fn token_fact(m: &McxModel, t: &Tok, prot: Prot, service: u8) -> TokenFact {
    let (csk, i_message) = match prot {
        Prot::Clear => (None, None),
        Prot::Provisioned { user, impu } => {
            (Some(McxModel::csk(user, impu, service).to_string()), None)
        }
        Prot::Uploaded { csk, upload } => (
            Some(csk.csk_id().to_string()),
            upload.map(|t| {
                let signer = csk.signer.map_or_else(
                    || "the attacker".to_string(),
                    |u| format!("user {}", user_name(u)),
                );
                format!("{} (signed as {signer}, T={t})", csk.message_id())
            }),
        ),
    };
    TokenFact {
        id: t.id(),
        user: user_name(t.user).to_string(),
        kind: t.kind.name().into(),
        protected: prot.protected(),
        exp: t.exp(m.config().token_life),
        csk,
        i_message,
    }
}

fn event_text(e: &BindingEvent) -> String {
    match e {
        BindingEvent::Bound { key, mc_id } => format!(
            "bound {}/{}/{} -> {mc_id}",
            key.impu, key.service, key.client_id
        ),
        BindingEvent::Rebound { key, from, to } => format!(
            "rebound {}/{}/{} {from} -> {to}",
            key.impu, key.service, key.client_id
        ),
        BindingEvent::Unbound { key, mc_id, cause } => format!(
            "unbound {}/{}/{} (was {mc_id}, {})",
            key.impu,
            key.service,
            key.client_id,
            cause.label()
        ),
    }
}

fn request_kind(req: &Req) -> RequestKind {
    match req {
        Req::Register { expires: 0, .. } => RequestKind::Deregister,
        Req::Register { mc_tags: false, .. } => RequestKind::RegisterWithoutMcTags,
        Req::Register { .. } => RequestKind::Register,
        Req::Publish { expires: 0, .. } => RequestKind::Remove,
        Req::Publish {
            body: Body::Auth { .. },
            ..
        } => RequestKind::PublishAuth,
        Req::Publish {
            body: Body::Settings { .. },
            ..
        } => RequestKind::PublishSettings,
        Req::Publish { .. } => RequestKind::Refresh,
    }
}

fn blank(step: usize, time: u8, actor: String, action: &str, request: RequestKind) -> TraceStep {
    TraceStep {
        step,
        time,
        actor,
        sender: None,
        action: action.into(),
        request,
        via: None,
        impu: None,
        client_id: None,
        user: None,
        mc_id: None,
        service: None,
        token: None,
        if_match: None,
        expires: None,
        status: None,
        outcome: None,
        warning: None,
        etag: None,
        events: vec![],
        text: String::new(),
    }
}

/// Fills the request fields of a step from a message.
fn fill_request(m: &McxModel, st: &mut TraceStep, msg: &Msg) {
    st.sender = Some(sender_name(msg.from));
    st.client_id = Some(m.client(msg.from).to_string());
    match &msg.req {
        Req::Register {
            impu,
            expires,
            token,
            ..
        } => {
            st.via = Some("sip-core".into());
            st.impu = Some(m.impu(*impu).to_string());
            st.expires = Some(u32::from(*expires));
            if let Some(t) = token {
                st.user = Some(user_name(t.user).to_string());
                st.mc_id = Some(m.mc_id(t.user, 0).to_string());
                st.token = Some(token_fact(m, t, Prot::Clear, 0));
            }
        }
        Req::Publish {
            impu,
            trusted,
            service,
            if_match,
            expires,
            body,
        } => {
            st.via = Some(if *trusted { "sip-core" } else { "direct" }.into());
            st.impu = Some(m.impu(*impu).to_string());
            st.service = Some(m.service(*service).name().into());
            st.if_match = if_match.map(|n| McxModel::etag(n).to_string());
            st.expires = Some(u32::from(*expires));
            match body {
                Body::Auth { token, prot } => {
                    st.user = Some(user_name(token.user).to_string());
                    st.mc_id = Some(m.mc_id(token.user, *service).to_string());
                    st.token = Some(token_fact(m, token, *prot, *service));
                }
                Body::Settings { user } => {
                    st.user = Some(user_name(*user).to_string());
                    st.mc_id = Some(m.mc_id(*user, *service).to_string());
                }
                Body::Empty => {}
            }
        }
    }
}

fn request_text(st: &TraceStep) -> String {
    let mut t = match st.request {
        RequestKind::Register => "REGISTER".to_string(),
        RequestKind::RegisterWithoutMcTags => "REGISTER (no MC feature tag)".into(),
        RequestKind::Deregister => "REGISTER Expires: 0".into(),
        RequestKind::PublishAuth => "PUBLISH (token)".into(),
        RequestKind::PublishSettings => "PUBLISH (settings only)".into(),
        RequestKind::Refresh => "PUBLISH (refresh)".into(),
        RequestKind::Remove => "PUBLISH Expires: 0".into(),
        _ => String::new(),
    };
    if let Some(i) = &st.impu {
        let _ = write!(t, " {i}");
    }
    if let Some(tok) = &st.token {
        let prot = match &tok.csk {
            Some(k) => format!(", protected under {k}"),
            None if tok.protected => ", protected".into(),
            None => String::new(),
        };
        let _ = write!(t, " token {} ({}{prot})", tok.id, tok.kind);
        if let Some(i) = &tok.i_message {
            let _ = write!(t, " + I_MESSAGE {i}");
        }
    } else if st.request == RequestKind::PublishSettings {
        if let Some(id) = &st.mc_id {
            let _ = write!(t, " claims {id}");
        }
    }
    if let Some(e) = &st.if_match {
        let _ = write!(t, " If-Match {e}");
    }
    t
}

fn response_text(st: &TraceStep) -> String {
    let Some(status) = st.status else {
        return String::new();
    };
    let mut t = format!("{status} {}", st.outcome.as_deref().unwrap_or(""));
    if let Some(w) = &st.warning {
        let _ = write!(t, " ({w})");
    }
    if let Some(e) = &st.etag {
        let _ = write!(t, " ETag {e}");
    }
    t
}

impl McxModel {
    /// Describes one step in MCX terms, or `None` when the action is a no-op here.
    pub fn describe(&self, last: &EnvState, action: &EnvAction, n: usize) -> Option<TraceStep> {
        let (next, effect) = self.apply(last, action)?;
        let t = last.now;
        let mut st = match action {
            EnvAction::Register(ue)
            | EnvAction::Deregister(ue)
            | EnvAction::ChangeImpu(ue)
            | EnvAction::Authorize { ue, .. }
            | EnvAction::Settings { ue, .. }
            | EnvAction::Refresh { ue, .. }
            | EnvAction::Remove { ue, .. }
            | EnvAction::LogOff(ue) => {
                // Whatever the UE put on the wire in this step.
                let sent: Vec<&Msg> = next
                    .net
                    .iter()
                    .filter(|m| m.from == Sender::Ue(*ue) && !m.dup)
                    .filter(|m| {
                        let before = last.net.iter().filter(|x| x == m).count();
                        let after = next.net.iter().filter(|x| x == m).count();
                        after > before
                    })
                    .collect();
                let kind = match action {
                    EnvAction::LogOff(_) => RequestKind::LogOff,
                    _ => sent
                        .first()
                        .map(|m| request_kind(&m.req))
                        .unwrap_or(RequestKind::Register),
                };
                let mut st = blank(n, t, ue_name(*ue), "send", kind);
                if let Some(m) = sent.first() {
                    fill_request(self, &mut st, m);
                }
                let lines: Vec<String> = sent
                    .iter()
                    .map(|m| {
                        let mut x = blank(n, t, String::new(), "", request_kind(&m.req));
                        fill_request(self, &mut x, m);
                        request_text(&x)
                    })
                    .collect();
                st.text = match action {
                    EnvAction::LogOff(_) => {
                        let who = last.ues[usize::from(*ue)].user.map(user_name);
                        let mut s =
                            format!("{}: user {} logs off", ue_name(*ue), who.unwrap_or('?'));
                        if let Some(u) = who {
                            st.user = Some(u.to_string());
                        }
                        if !lines.is_empty() {
                            let _ = write!(s, "; sends {}", lines.join(", then "));
                        }
                        s
                    }
                    EnvAction::ChangeImpu(_) => {
                        format!("{} changes IMPU: {}", ue_name(*ue), lines.join(", then "))
                    }
                    _ => format!("{} → SIP core: {}", ue_name(*ue), lines.join(", ")),
                };
                st
            }
            EnvAction::LogOn { ue, user, kind } => {
                let mut st = blank(n, t, ue_name(*ue), "log-on", RequestKind::LogOn);
                let tok = Tok {
                    user: *user,
                    issued: t,
                    kind: *kind,
                };
                st.user = Some(user_name(*user).to_string());
                st.mc_id = Some(self.mc_id(*user, 0).to_string());
                st.client_id = Some(self.client(Sender::Ue(*ue)).to_string());
                st.token = Some(token_fact(self, &tok, Prot::Clear, 0));
                let switch = last.ues[usize::from(*ue)]
                    .user
                    .filter(|u| u != user)
                    .map(|u| format!(" (user switch from {})", user_name(u)))
                    .unwrap_or_default();
                st.text = format!(
                    "{}: user {} logs on{switch}; IdMS issues {} ({}, exp {})",
                    ue_name(*ue),
                    user_name(*user),
                    tok.id(),
                    kind.name(),
                    tok.exp(self.config().token_life)
                );
                st
            }
            EnvAction::Replay { .. }
            | EnvAction::Reprotect { .. }
            | EnvAction::ReplaySealed { .. }
            | EnvAction::ForgePai { .. } => {
                let m = self.attacker_msg(last, action)?;
                let mut st = blank(n, t, "Attacker".into(), "attack", request_kind(&m.req));
                fill_request(self, &mut st, &m);
                fill_response(&mut st, &effect);
                let how = match action {
                    EnvAction::Replay { .. } => {
                        "→ SIP core → MCX server: presents, from its own IMPU, a token it read in clear:"
                    }
                    EnvAction::Reprotect { .. } => {
                        "→ SIP core → MCX server: re-protects a token it read in clear under its own CSK (own I_MESSAGE), from its own IMPU:"
                    }
                    EnvAction::ReplaySealed {
                        strip_upload: false,
                        ..
                    } => "→ SIP core → MCX server: replays a captured protected PUBLISH whole, from its own IMPU:",
                    EnvAction::ReplaySealed { .. } => {
                        "→ SIP core → MCX server: replays a captured protected PUBLISH without its I_MESSAGE, from its own IMPU:"
                    }
                    _ => "→ MCX server (direct, forged P-Asserted-Identity):",
                };
                st.text = format!(
                    "Attacker {how} {} ⇒ {}",
                    request_text(&st),
                    response_text(&st)
                );
                st
            }
            EnvAction::Deliver { msg, keep_copy } => {
                let action = if msg.dup {
                    "deliver-duplicate"
                } else if *keep_copy {
                    "deliver-keep-copy"
                } else {
                    "deliver"
                };
                let actor = if msg.req_is_direct() {
                    sender_name(msg.from)
                } else {
                    "SIP core".into()
                };
                let mut st = blank(n, t, actor, action, request_kind(&msg.req));
                fill_request(self, &mut st, msg);
                fill_response(&mut st, &effect);
                let dup = if msg.dup {
                    " [duplicate]"
                } else if *keep_copy {
                    " [a copy stays in the network]"
                } else {
                    ""
                };
                st.text = format!(
                    "{} → MCX server: {}{dup} (from {}) ⇒ {}",
                    st.actor,
                    request_text(&st),
                    sender_name(msg.from),
                    response_text(&st)
                );
                st
            }
            EnvAction::AttackerRegister => {
                let m = self.attacker_msg(last, action)?;
                let mut st = blank(n, t, "Attacker".into(), "attack", request_kind(&m.req));
                fill_request(self, &mut st, &m);
                fill_response(&mut st, &effect);
                st.text = format!(
                    "Attacker → SIP core → MCX server: registers its own IMPU again: {} ⇒ {}",
                    request_text(&st),
                    response_text(&st)
                );
                st
            }
            EnvAction::Tick => {
                let mut st = blank(n, t, "Clock".into(), "tick", RequestKind::Tick);
                fill_response(&mut st, &effect);
                st.time = next.now;
                st.text = format!("time advances to {}", next.now);
                st
            }
            EnvAction::Restart => {
                let mut st = blank(n, t, "MCX server".into(), "restart", RequestKind::Restart);
                fill_response(&mut st, &effect);
                st.text = "the MCX server restarts".into();
                st
            }
            EnvAction::Crash => {
                let mut st = blank(n, t, "MCX server".into(), "crash", RequestKind::Restart);
                fill_response(&mut st, &effect);
                st.text = "the MCX server is killed (kill -9) and restarts from its store".into();
                st
            }
            EnvAction::Settle => {
                let mut st = blank(n, t, "Environment".into(), "settle", RequestKind::Settle);
                st.text = "the environment settles: from here on the network delivers everything, the UEs keep retrying, nothing else happens".into();
                st
            }
            EnvAction::BeginLogOn { ue, user } => {
                let mut st = blank(n, t, ue_name(*ue), "begin-log-on", RequestKind::LogOn);
                st.user = Some(user_name(*user).to_string());
                st.mc_id = Some(self.mc_id(*user, 0).to_string());
                st.client_id = Some(self.client(Sender::Ue(*ue)).to_string());
                st.text = format!(
                    "{}: user {} starts to log on (no token yet: the IdMS answers later)",
                    ue_name(*ue),
                    user_name(*user)
                );
                st
            }
        };
        if !st.events.is_empty() {
            let _ = write!(st.text, " [{}]", st.events.join("; "));
        }
        Some(st)
    }

    /// Renders a path (from the initial state) as a [`Trace`], after the set-up steps that
    /// build the initial state (the companion UEs' registration and first PUBLISH), numbered 0.
    pub fn trace(&self, actions: &[EnvAction]) -> Trace {
        let mut steps = Vec::new();
        let mut s = self.set_up(|s, a| {
            if let Some(mut st) = self.describe(s, a, 0) {
                st.text = format!("set-up: {}", st.text);
                steps.push(st);
            }
        });
        for (i, a) in actions.iter().enumerate() {
            if let Some(st) = self.describe(&s, a, i + 1) {
                steps.push(st);
            }
            match self.next_state(&s, a.clone()) {
                Some(n) => s = n,
                None => break,
            }
        }
        Trace { steps }
    }
}

impl Msg {
    fn req_is_direct(&self) -> bool {
        matches!(self.req, Req::Publish { trusted: false, .. })
    }
}

fn fill_response(st: &mut TraceStep, effect: &StepEffect) {
    if let Some(r) = &effect.response {
        st.status = Some(r.status());
        st.outcome = Some(r.outcome.label());
        st.warning = r.warning().map(|w| format!("399 mcx \"{}\"", w.text()));
        st.etag = r.etag.as_ref().map(|e| e.to_string());
    }
    st.events = effect.events.iter().map(event_text).collect();
    if let Some(Input::Tick) = effect.input {
        st.request = super::RequestKind::Tick;
    }
}

/// A one-line name for an action (Explorer).
pub fn format_action(m: &McxModel, a: &EnvAction) -> String {
    match a {
        EnvAction::Register(ue) => format!("{} REGISTER", ue_name(*ue)),
        EnvAction::Deregister(ue) => format!("{} de-REGISTER", ue_name(*ue)),
        EnvAction::ChangeImpu(ue) => format!("{} IMPU change", ue_name(*ue)),
        EnvAction::LogOn { ue, user, kind } => format!(
            "{} log on user {} ({} token)",
            ue_name(*ue),
            user_name(*user),
            kind.name()
        ),
        EnvAction::Authorize { ue, service } => {
            format!("{} PUBLISH token {}", ue_name(*ue), m.service(*service))
        }
        EnvAction::Settings { ue, service } => {
            format!("{} PUBLISH settings {}", ue_name(*ue), m.service(*service))
        }
        EnvAction::Refresh { ue, service } => {
            format!("{} PUBLISH refresh {}", ue_name(*ue), m.service(*service))
        }
        EnvAction::Remove { ue, service } => {
            format!("{} PUBLISH Expires:0 {}", ue_name(*ue), m.service(*service))
        }
        EnvAction::LogOff(ue) => format!("{} log off", ue_name(*ue)),
        EnvAction::Deliver { msg, keep_copy } => {
            let mut st = blank(0, 0, String::new(), "", request_kind(&msg.req));
            fill_request(m, &mut st, msg);
            format!(
                "deliver{} {} from {}",
                if msg.dup {
                    " duplicate"
                } else if *keep_copy {
                    " (keep copy)"
                } else {
                    ""
                },
                request_text(&st),
                sender_name(msg.from)
            )
        }
        EnvAction::Replay { token, service } => format!(
            "Attacker replays {} for {}",
            token.id(),
            m.service(*service)
        ),
        EnvAction::Reprotect { token, service } => format!(
            "Attacker re-protects {} under its own CSK for {}",
            token.id(),
            m.service(*service)
        ),
        EnvAction::ReplaySealed {
            sealed,
            strip_upload,
        } => format!(
            "Attacker replays the protected {} for {}{}",
            sealed.token.id(),
            m.service(sealed.service),
            if *strip_upload {
                " without its I_MESSAGE"
            } else {
                " whole"
            }
        ),
        EnvAction::ForgePai { impu } => {
            format!("Attacker PUBLISH direct, forged PAI {}", m.impu(*impu))
        }
        EnvAction::AttackerRegister => "Attacker re-REGISTER".into(),
        EnvAction::Tick => "tick".into(),
        EnvAction::Restart => "server restart".into(),
        EnvAction::Crash => "server kill -9 and restart from its store".into(),
        EnvAction::Settle => "settle (fair from here on)".into(),
        EnvAction::BeginLogOn { ue, user } => {
            format!(
                "{} user {} starts to log on",
                ue_name(*ue),
                user_name(*user)
            )
        }
    }
}

/// The state in MCX terms (Explorer).
pub fn format_state(m: &McxModel, s: &EnvState) -> String {
    let mut t = format!("time {}\n\nMCX server bindings:\n", s.now);
    for (k, b) in s.server.bindings() {
        let _ = writeln!(
            t,
            "  {} / {} / {} -> {}  token {} (exp {})  ETag {}",
            k.impu,
            k.service,
            k.client_id,
            b.mc_id,
            b.token_id,
            b.token_exp,
            b.publication
                .as_ref()
                .map(|p| format!("{} until {}", p.etag, p.expires_at))
                .unwrap_or_else(|| "- (REGISTER)".into())
        );
    }
    t.push_str("registrations:\n");
    for (i, r) in s.server.registrations() {
        let _ = writeln!(t, "  {i} until {}", r.expires_at);
    }
    t.push_str("UEs:\n");
    for (i, u) in s.ues.iter().enumerate() {
        let _ = writeln!(
            t,
            "  {} IMPU {} {} user {} token {} ETag {} pending {:?}",
            ue_name(i as u8),
            m.impu(m.ue_impu(i, u.impu)),
            if u.registered {
                "registered"
            } else {
                "unregistered"
            },
            u.user.map(user_name).unwrap_or('-'),
            u.token.map(|t| t.id()).unwrap_or_else(|| "-".into()),
            u.etags
                .iter()
                .map(|e| e.map(|n| format!("e{n}")).unwrap_or_else(|| "-".into()))
                .collect::<Vec<_>>()
                .join(","),
            u.pending
        );
    }
    t.push_str("in flight:\n");
    for msg in &s.net {
        let _ = writeln!(
            t,
            "  {}",
            format_action(
                m,
                &EnvAction::Deliver {
                    msg: msg.clone(),
                    keep_copy: false,
                }
            )
        );
    }
    if !s.captured.is_empty() {
        let ids: Vec<String> = s.captured.iter().map(Tok::id).collect();
        let _ = writeln!(t, "attacker saw: {}", ids.join(", "));
    }
    if !s.sealed.is_empty() {
        let ids: Vec<String> = s.sealed.iter().map(|x| x.token.id()).collect();
        let _ = writeln!(t, "attacker captured protected: {}", ids.join(", "));
    }
    t.push_str("CSKs at the server:\n");
    for (id, c) in s.server.csks() {
        let _ = writeln!(
            t,
            "  {id} -> {} at {}",
            c.mc_id,
            c.impu.as_ref().map_or("-".to_string(), |i| i.to_string())
        );
    }
    t
}

impl Trace {
    /// The numbered message trace.
    pub fn numbered(&self) -> String {
        let mut t = String::new();
        for st in &self.steps {
            let _ = writeln!(t, "{:>3}. [t={}] {}", st.step, st.time, st.text);
        }
        t
    }

    /// A Mermaid `sequenceDiagram`.
    pub fn mermaid(&self, ues: usize, attacker: bool) -> String {
        let mut t = String::from("sequenceDiagram\n");
        for i in 0..ues {
            let _ = writeln!(t, "    participant UE{} as UE{}", i + 1, i + 1);
        }
        if attacker {
            t.push_str("    participant ATT as Attacker\n");
        }
        t.push_str("    participant IDMS as IdMS\n");
        t.push_str("    participant CORE as SIP core\n");
        t.push_str("    participant MCX as MCX server\n");
        let lane = |name: &str| -> String {
            match name {
                "Attacker" => "ATT".into(),
                "SIP core" => "CORE".into(),
                "MCX server" => "MCX".into(),
                other => other.into(),
            }
        };
        for st in &self.steps {
            let req = sanitize(&request_text(st));
            match st.action.as_str() {
                "log-on" => {
                    let tok = st.token.as_ref().map(|x| x.id.as_str()).unwrap_or("");
                    let _ = writeln!(
                        t,
                        "    {}->>IDMS: {}. log on user {}",
                        lane(&st.actor),
                        st.step,
                        st.user.as_deref().unwrap_or("?")
                    );
                    let _ = writeln!(t, "    IDMS-->>{}: {}", lane(&st.actor), sanitize(tok));
                }
                "send" if st.request == RequestKind::LogOff && st.via.is_none() => {
                    let _ = writeln!(
                        t,
                        "    Note over {}: {}. user {} logs off",
                        lane(&st.actor),
                        st.step,
                        st.user.as_deref().unwrap_or("?")
                    );
                }
                "send" => {
                    let to = if st.via.as_deref() == Some("direct") {
                        "MCX"
                    } else {
                        "CORE"
                    };
                    let _ = writeln!(
                        t,
                        "    {}->>{to}: {}. {}",
                        lane(&st.actor),
                        st.step,
                        sanitize(
                            st.text
                                .split_once(" → SIP core: ")
                                .map_or(st.text.as_str(), |(_, r)| r)
                        )
                    );
                }
                "attack" => {
                    let direct = st.via.as_deref() == Some("direct");
                    if direct {
                        let _ = writeln!(
                            t,
                            "    ATT->>MCX: {}. {req} [forged P-Asserted-Identity]",
                            st.step
                        );
                        let _ = writeln!(t, "    MCX-->>ATT: {}", sanitize(&response_text(st)));
                    } else {
                        let _ = writeln!(t, "    ATT->>CORE: {}. {req} [attacker]", st.step);
                        let _ = writeln!(t, "    CORE->>MCX: {req}");
                        let mut resp = sanitize(&response_text(st));
                        if !st.events.is_empty() {
                            let _ = write!(resp, " / {}", sanitize(&st.events.join("; ")));
                        }
                        let _ = writeln!(t, "    MCX-->>CORE: {resp}");
                    }
                }
                a if a.starts_with("deliver") => {
                    let from = lane(&st.actor);
                    let extra = match a {
                        "deliver-duplicate" => " [duplicate]",
                        "deliver-keep-copy" => " [copy kept]",
                        _ => "",
                    };
                    let _ = writeln!(t, "    {from}->>MCX: {}. {req}{extra}", st.step);
                    let mut resp = sanitize(&response_text(st));
                    if !st.events.is_empty() {
                        let _ = write!(resp, " / {}", sanitize(&st.events.join("; ")));
                    }
                    let _ = writeln!(t, "    MCX-->>{from}: {resp}");
                }
                _ => {
                    let mut note = sanitize(&st.text);
                    if note.is_empty() {
                        note = st.action.clone();
                    }
                    let _ = writeln!(t, "    Note over MCX: {}. {note}", st.step);
                }
            }
        }
        t
    }
}

/// Mermaid treats `;` and `#` specially in messages.
fn sanitize(s: &str) -> String {
    s.replace(';', ",").replace('#', "").replace("->", "→")
}

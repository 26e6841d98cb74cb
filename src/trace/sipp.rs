//! The SIPp UAC scenario of a model trace. SIPp plays the SIP core: it sends each request the
//! model delivers as the S-CSCF's third-party REGISTER (TS 24.229 5.4.1.7, the UE's REGISTER in
//! a `message/sip` body with its MC feature tags and, for REGISTER-option clients, its token) or
//! as the PUBLISH the P-CSCF forwards with P-Asserted-Identity (TS 24.379 7.3), and checks the
//! response the model's machine gave: `<recv response>`, the TS 24.379 warning code (`Warning:
//! 399 host "NNN …"`) or its absence, and the SIP-ETag (captured as `$etag_eN` and sent back as
//! `SIP-If-Match`) or its absence.
//!
//! Fixed names (mcx-authz's embedded defaults, like `tests/sipp/`): PSI
//! `sip:<service>@mcx.example.org`, third-party REGISTER Request-URI `sip:mcx.example.org`,
//! S-CSCF `sip:scscf.ims.example.org`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{bail, Context};
use mcx_model::env::{RequestKind, Sender, Tok};
use mcx_model::{McxModel, Service, TraceStep};

use super::{check_impu, service_named, ReplayOptions, TraceSource};
use crate::sip::body::write::{self, info_content_type, InfoDoc, InfoField};

/// Where the third-party REGISTER goes (mcx-authz's default `server_uri`).
pub const SERVER_URI: &str = "sip:mcx.example.org";
/// The S-CSCF's URI in the third-party REGISTER.
pub const SCSCF_URI: &str = "sip:scscf.ims.example.org";
/// The host part of the participating-function PSIs (`sip:mcptt@mcx.example.org`).
pub const PSI_HOST: &str = "mcx.example.org";

/// What the scenario needs from the trace, worked out before rendering.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Tokens in CSV field order (the order they are first presented).
    pub tokens: Vec<Tok>,
    /// Steps delivered straight to the server with a forged P-Asserted-Identity.
    pub skipped_direct: Vec<usize>,
    /// Requests the scenario sends.
    pub requests: usize,
}

impl Plan {
    /// Checks the trace against the model's names and collects the tokens.
    pub fn new(model: &McxModel, steps: &[TraceStep]) -> anyhow::Result<Plan> {
        let mut tokens: Vec<Tok> = Vec::new();
        let mut skipped_direct = Vec::new();
        let mut requests = usize::from(model.config().attacker);
        for st in steps.iter().filter(|s| is_delivery(s)) {
            match st.via.as_deref() {
                Some("sip-core") => {}
                Some("direct") => {
                    skipped_direct.push(st.step);
                    continue;
                }
                other => bail!("step {}: delivery via {other:?}", st.step),
            }
            let impu = st
                .impu
                .as_deref()
                .with_context(|| format!("step {}: a delivery without an IMPU", st.step))?;
            check_impu(model, impu)?;
            if let Some(t) = &st.token {
                let tok = Tok::parse(&t.id)
                    .with_context(|| format!("step {}: token id {:?}", st.step, t.id))?;
                if !tokens.contains(&tok) {
                    tokens.push(tok);
                }
            }
            requests += 1;
        }
        Ok(Plan {
            tokens,
            skipped_direct,
            requests,
        })
    }

    fn field(&self, id: &str) -> anyhow::Result<usize> {
        let tok = Tok::parse(id).with_context(|| format!("token id {id:?}"))?;
        self.tokens
            .iter()
            .position(|t| *t == tok)
            .with_context(|| format!("token {id} not planned"))
    }
}

/// Whether a step is a request reaching the server (a delivery by the network, or the attacker's
/// request straight to the server): it has a route and a response.
pub fn is_delivery(st: &TraceStep) -> bool {
    st.via.is_some() && st.status.is_some()
}

/// Keeps an XML comment ASCII and free of `--`.
fn comment_text(s: &str) -> String {
    let mut t: String = s
        .replace('→', "->")
        .replace('⇒', "=>")
        .replace('…', "...")
        .chars()
        .map(|c| if c.is_ascii() && c != '\r' { c } else { '?' })
        .collect();
    while t.contains("--") {
        t = t.replace("--", "- -");
    }
    if t.ends_with('-') {
        t.push(' ');
    }
    t
}

/// Escapes an XML attribute value.
fn attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The TS 24.379 warning code in a model warning text (`399 mcx "101 service …"`); `None` for a
/// policy warning (`399 mcx "registration_required: …"`), which carries no MC code.
fn warning_code(w: &str) -> anyhow::Result<Option<u16>> {
    let text = w
        .split('"')
        .nth(1)
        .with_context(|| format!("warning {w:?} without a quoted text"))?;
    let first = text.split(' ').next().unwrap_or("");
    Ok((first.len() == 3).then(|| first.parse().ok()).flatten())
}

/// The SIPp variable holding the server's tag for model tag `eN`.
fn etag_var(tag: &str) -> String {
    format!("etag_{tag}")
}

/// The MC info body of `service` with a token or a request URI, and the MC client ID, all in
/// clear (`type="Normal"`), written by the edge's own writer.
fn info_xml(
    service: Service,
    token: Option<&str>,
    request_uri: Option<&str>,
    client: &str,
) -> String {
    let doc = InfoDoc {
        access_token: token.map(InfoField::Normal),
        request_uri: request_uri.map(InfoField::Normal),
        client_id: InfoField::Normal(client),
    };
    write::info_xml(service, &doc, "\n")
}

/// The embedded UE REGISTER's body when it carries no token: a token-less info body, so the
/// header block keeps its empty line (SIPp trims trailing blank lines).
const EMPTY_INFO: &str =
    "<mcpttinfo xmlns=\"urn:3gpp:ns:mcpttInfo:1.0\"><mcptt-Params/></mcpttinfo>";

/// A third-party REGISTER (TS 24.229 5.4.1.7) with the UE's REGISTER as `message/sip`.
///
/// [`Register::render`] and [`Publish::render`] write SIPp message templates: SIPp keywords
/// (`[branch]`, `[call_id]`, `[len]`, `[fieldN]`, …) stand where SIPp fills in values. The trace
/// replay hands them to SIPp; `mcx-authz load` ([`crate::load`]) fills them in itself, so both
/// send the same requests. The string fields may themselves be keywords (`[field0]`).
pub struct Register<'a> {
    /// CSeq number.
    pub cseq: usize,
    /// The registered IMPU (the To of the third-party REGISTER).
    pub impu: &'a str,
    /// Expires (0: de-registration).
    pub expires: u32,
    /// The services whose feature tags the UE's Contact carries (empty: MC service log-off).
    pub tags: &'a [Service],
    /// The token's CSV field, when the UE's REGISTER carries it (REGISTER option).
    pub token: Option<usize>,
    /// The services of the token bodies.
    pub services: &'a [Service],
    /// The MC client ID.
    pub client: &'a str,
}

impl Register<'_> {
    /// The SIPp message template.
    pub fn render(&self) -> String {
        let Register {
            cseq,
            impu,
            expires,
            tags,
            token,
            services,
            client,
        } = self;
        let tags: String = tags
            .iter()
            .map(|s| format!(";+{}", s.feature_tag()))
            .collect();
        let (ct, body, len) = match token {
            // The token from the CSV has a length known only at run time: the embedded REGISTER
            // then goes without Content-Length, its body running to the end (RFC 3261 18.3).
            Some(f) => {
                let parts: Vec<(String, String)> = services
                    .iter()
                    .map(|s| {
                        (
                            info_content_type(*s),
                            info_xml(*s, Some(&format!("[field{f}]")), None, client),
                        )
                    })
                    .collect();
                let refs: Vec<(&str, &str)> = parts
                    .iter()
                    .map(|(c, b)| (c.as_str(), b.as_str()))
                    .collect();
                (
                    "multipart/mixed;boundary=mcx-ue-boundary".to_owned(),
                    write::multipart("mcx-ue-boundary", &refs, "\n"),
                    None,
                )
            }
            None => (
                info_content_type(Service::Mcptt),
                EMPTY_INFO.to_owned(),
                Some(EMPTY_INFO.len()),
            ),
        };
        let len = len
            .map(|n| format!("Content-Length: {n}\n"))
            .unwrap_or_default();
        format!(
            "REGISTER {SERVER_URI} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <{SCSCF_URI}>;tag=[pid]scscf[call_number]
To: <{impu}>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <{SCSCF_URI}:5060>
Expires: {expires}
Content-Type: message/sip
Content-Length: [len]

REGISTER sip:ims.example SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ue-[call_number]-{cseq}
Max-Forwards: 70
From: <{impu}>;tag=ue[call_number]
To: <{impu}>
Call-ID: ue-{cseq}-[call_id]
CSeq: {cseq} REGISTER
Contact: <sip:ue@192.0.2.10:5060>{tags}
Expires: {expires}
Content-Type: {ct}
{len}
{body}
"
        )
    }
}

/// What a PUBLISH carries.
pub enum PublishBody<'a> {
    /// No body (a refresh or a removal).
    Empty,
    /// An MC info body with the access token of this CSV field, in clear, and poc-settings.
    Token(usize),
    /// An MC info body with this MC service ID as request URI, and poc-settings.
    Settings(&'a str),
    /// TS 33.180 clause 9: the protected info body (token and client ID encrypted) of CSV field
    /// `info`, Content-ID [`crate::protection::INFO_CONTENT_ID`], and its signature part of CSV
    /// field `signature`, as `mcx-authz token mint-csv --protect-csks` writes them.
    Protected {
        /// The CSV field of the protected info body.
        info: usize,
        /// The CSV field of its signature part.
        signature: usize,
    },
}

/// A PUBLISH `Event: poc-settings` as the P-CSCF forwards it (TS 24.379 7.3).
pub struct Publish<'a> {
    /// CSeq number.
    pub cseq: usize,
    /// The service whose PSI it is sent to.
    pub service: Service,
    /// The IMPU (From, To and P-Asserted-Identity).
    pub impu: &'a str,
    /// Expires.
    pub expires: u32,
    /// SIP-If-Match (RFC 3903), verbatim.
    pub if_match: Option<String>,
    /// The body.
    pub body: PublishBody<'a>,
    /// The MC client ID.
    pub client: &'a str,
}

impl Publish<'_> {
    /// The SIPp message template.
    pub fn render(&self) -> String {
        let p = self.service.name();
        let (cseq, impu, expires) = (self.cseq, self.impu, self.expires);
        let mut t = format!(
            "PUBLISH sip:{p}@{PSI_HOST} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <{impu}>;tag=[pid]ue[call_number]
To: <{impu}>
Call-ID: [call_id]
CSeq: {cseq} PUBLISH
P-Asserted-Identity: <{impu}>
Event: poc-settings
Expires: {expires}
Accept-Contact: *;+{};require;explicit
",
            self.service.feature_tag()
        );
        if let Some(v) = &self.if_match {
            let _ = writeln!(t, "SIP-If-Match: {v}");
        }
        // An info body in clear travels with the client's poc-settings.
        let with_settings = |info: String| {
            write::multipart(
                "mcx-boundary",
                &[
                    (&info_content_type(self.service), &info),
                    (
                        "application/poc-settings+xml",
                        &write::settings_xml(self.client, "\n"),
                    ),
                ],
                "\n",
            )
        };
        let parts = match self.body {
            PublishBody::Empty => None,
            PublishBody::Token(f) => Some(with_settings(info_xml(
                self.service,
                Some(&format!("[field{f}]")),
                None,
                self.client,
            ))),
            PublishBody::Settings(mc_id) => Some(with_settings(info_xml(
                self.service,
                None,
                Some(mc_id),
                self.client,
            ))),
            PublishBody::Protected { info, signature } => Some(format!(
                "--mcx-boundary\nContent-Type: {}\nContent-ID: <{}>\n\n[field{info}]\n--mcx-boundary\nContent-Type: {}\n\n[field{signature}]\n--mcx-boundary--",
                info_content_type(self.service),
                crate::protection::INFO_CONTENT_ID,
                crate::protection::signed_type(self.service),
            )),
        };
        match parts {
            None => t.push_str("Content-Length: 0\n\n"),
            Some(body) => {
                let _ = write!(
                    t,
                    "Content-Type: multipart/mixed;boundary=mcx-boundary\nContent-Length: [len]\n\n{body}\n"
                );
            }
        }
        t
    }
}

/// The scenario's XML.
struct Xml {
    out: String,
    cseq: usize,
    /// SIPp variables assigned so far (each must be used, hence a `<log>` per response).
    etags: BTreeSet<String>,
    timeout_ms: u64,
}

impl Xml {
    fn comment(&mut self, indent: &str, text: &str) {
        let _ = writeln!(self.out, "{indent}<!-- {} -->", comment_text(text));
    }

    fn send(&mut self, msg: &str) {
        let _ = write!(
            self.out,
            "  <send retrans=\"500\">\n    <![CDATA[\n\n{msg}\n    ]]>\n  </send>\n"
        );
    }

    /// The expected response of step `label`: status, warning code (or none), SIP-ETag (or none).
    fn expect(&mut self, label: &str, status: u16, warning: Option<u16>, etag: Option<&str>) {
        let n = self.cseq;
        let t = self.timeout_ms;
        let _ = writeln!(self.out, "  <recv response=\"100\" optional=\"true\"/>");
        let _ = writeln!(self.out, "  <recv response=\"{status}\" timeout=\"{t}\">");
        let _ = writeln!(self.out, "    <action>");
        let mut logged = Vec::new();
        match warning {
            Some(code) => {
                let _ = writeln!(
                    self.out,
                    "      <ereg regexp=\"{}\" search_in=\"hdr\" header=\"Warning:\" check_it=\"true\" assign_to=\"w{n}\"/>",
                    attr(&format!("^[ \\t]*399 [^ ]+ \"{code} "))
                );
                logged.push(format!("Warning:[$w{n}]"));
            }
            None => {
                let _ = writeln!(
                    self.out,
                    "      <ereg regexp=\"{}\" search_in=\"hdr\" header=\"Warning:\" check_it_inverse=\"true\" assign_to=\"nw{n}\"/>",
                    attr("^[ \\t]*399 [^ ]+ \"[0-9][0-9][0-9] ")
                );
                logged.push(format!("no MC Warning[$nw{n}]"));
            }
        }
        match etag {
            Some(tag) => {
                let var = etag_var(tag);
                let _ = writeln!(
                    self.out,
                    "      <ereg regexp=\"^[ \\t]*([^ \\t]+)[ \\t]*$\" search_in=\"hdr\" header=\"SIP-ETag:\" check_it=\"true\" assign_to=\"{var}_hdr,{var}\"/>"
                );
                logged.push(format!("SIP-ETag {tag} = [${var}] (hdr [${var}_hdr])"));
                self.etags.insert(tag.to_owned());
            }
            None => {
                let _ = writeln!(
                    self.out,
                    "      <ereg regexp=\".\" search_in=\"hdr\" header=\"SIP-ETag:\" check_it_inverse=\"true\" assign_to=\"ne{n}\"/>"
                );
                logged.push(format!("no SIP-ETag[$ne{n}]"));
            }
        }
        let _ = writeln!(
            self.out,
            "      <log message=\"{}\"/>",
            attr(&format!(
                "{label}: {status} as predicted; {}",
                logged.join("; ")
            ))
        );
        let _ = writeln!(self.out, "    </action>");
        let _ = writeln!(self.out, "  </recv>");
    }

    fn lab_call(&mut self, url: &str, settle_ms: u64) {
        let _ = writeln!(
            self.out,
            "  <nop>\n    <action>\n      <exec command=\"{}\"/>\n    </action>\n  </nop>",
            attr(&format!("curl -s -S -o /dev/null -X POST {url}"))
        );
        let _ = writeln!(self.out, "  <pause milliseconds=\"{settle_ms}\"/>");
    }
}

/// Renders the scenario.
pub fn render(
    model: &McxModel,
    plan: &Plan,
    src: &TraceSource,
    opts: &ReplayOptions,
) -> anyhow::Result<String> {
    let cfg = model.config();
    let services = cfg.services.clone();
    let mut x = Xml {
        out: String::new(),
        cseq: 0,
        etags: BTreeSet::new(),
        timeout_ms: opts.response_timeout_ms,
    };
    x.out.push_str("<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n");
    let fields: Vec<String> = plan
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("field{i} = {}", t.id()))
        .collect();
    let mut head = format!(
        "\n  Generated by `mcx-authz trace` from the model trace {}.\n  SIPp plays the SIP core (S-CSCF third-party REGISTER, P-CSCF PUBLISH with P-Asserted-Identity)\n  and checks at every step the response the model's machine gave: status, TS 24.379 Warning\n  code, SIP-ETag. Tokens: tokens.csv (-inf), {}.\n  Time base {} = model tick 0; one tick = one second. ",
        src.title,
        if fields.is_empty() {
            "none".to_owned()
        } else {
            fields.join(", ")
        },
        opts.time_base,
    );
    match &opts.clock_url {
        Some(u) => {
            let _ = write!(head, "Ticks and restarts: lab controls at {u}.");
        }
        None => {
            let _ = write!(head, "Ticks: pauses of {} ms.", opts.tick_ms);
        }
    }
    head.push_str(
        "\n  See README for the sipp command and server.toml for the server it assumes.\n",
    );
    x.comment("", &head);
    let _ = writeln!(
        x.out,
        "<scenario name=\"{}\">",
        attr(&comment_text(&format!("mcx-authz trace: {}", src.title)))
    );

    if cfg.attacker {
        // The model starts with the attacker registered at tick 0: its own IMS subscription.
        let impu = model.impu(model.attacker_impu()).to_string();
        let client = model.client(Sender::Attacker).to_string();
        x.cseq += 1;
        x.comment(
            "  ",
            &format!("set-up (model initial state): the attacker's own IMPU {impu} is registered"),
        );
        let msg = Register {
            cseq: x.cseq,
            impu: &impu,
            expires: 255,
            tags: &services,
            token: None,
            services: &services,
            client: &client,
        }
        .render();
        x.send(&msg);
        x.expect("set-up REGISTER", 200, None, None);
    }

    for st in &src.steps {
        let label = format!("step {} (t={})", st.step, st.time);
        match st.action.as_str() {
            _ if is_delivery(st) => {
                if st.via.as_deref() == Some("direct") {
                    x.comment(
                        "  ",
                        &format!(
                            "{label} NOT SENT: {} -- the attacker sends this straight to the MCX server with a forged P-Asserted-Identity from an untrusted address; SIPp's source is a trusted SIP core, so it cannot be sent from here. Sound to skip: the machine refuses untrusted identities, so the request changes no server state.",
                            st.text
                        ),
                    );
                    continue;
                }
                x.cseq += 1;
                x.comment("  ", &format!("{label} {}", st.text));
                let msg = request(plan, st, x.cseq, &x.etags, &services)?;
                x.send(&msg);
                let status = st
                    .status
                    .with_context(|| format!("step {}: a delivery without a response", st.step))?;
                let warning = st.warning.as_deref().map(warning_code).transpose()?.flatten();
                x.expect(&label, status, warning, st.etag.as_deref());
            }
            "tick" => {
                x.comment("  ", &format!("{label} {}", st.text));
                match &opts.clock_url {
                    Some(u) => x.lab_call(
                        &format!("{}/clock/advance?secs=1", u.trim_end_matches('/')),
                        opts.settle_ms,
                    ),
                    None => {
                        let _ = writeln!(x.out, "  <pause milliseconds=\"{}\"/>", opts.tick_ms);
                    }
                }
            }
            "restart" => match &opts.clock_url {
                Some(u) => {
                    x.comment("  ", &format!("{label} {}", st.text));
                    x.lab_call(&format!("{}/restart", u.trim_end_matches('/')), opts.settle_ms);
                }
                None => x.comment(
                    "  ",
                    &format!("{label} {} -- NOT REPLAYED: no --clock-url (lab controls); restart the server by hand here", st.text),
                ),
            },
            _ => x.comment("  ", &format!("{label} {}", st.text)),
        }
    }
    x.out
        .push_str("  <!-- Every response was the one the model predicts. -->\n");
    x.out
        .push_str("  <ResponseTimeRepartition value=\"10, 20, 50, 100, 200, 500, 1000\"/>\n");
    x.out.push_str("</scenario>\n");
    Ok(x.out)
}

/// The SIP request of a delivery step.
fn request(
    plan: &Plan,
    st: &TraceStep,
    cseq: usize,
    etags: &BTreeSet<String>,
    services: &[Service],
) -> anyhow::Result<String> {
    let impu = st.impu.as_deref().context("no IMPU")?;
    let client = st.client_id.as_deref().context("no MC client ID")?;
    let expires = st.expires.context("no Expires")?;
    let token = st.token.as_ref().map(|t| plan.field(&t.id)).transpose()?;
    Ok(match st.request {
        RequestKind::Register | RequestKind::RegisterWithoutMcTags | RequestKind::Deregister => {
            let mc_tags = st.request == RequestKind::Register;
            Register {
                cseq,
                impu,
                expires,
                tags: if mc_tags { services } else { &[] },
                token: token.filter(|_| mc_tags),
                services,
                client,
            }
            .render()
        }
        RequestKind::PublishAuth
        | RequestKind::PublishSettings
        | RequestKind::Refresh
        | RequestKind::Remove => {
            let service = service_named(st.service.as_deref().context("no service")?)?;
            let if_match = match st.if_match.as_deref() {
                None => None,
                Some(tag) if etags.contains(tag) => Some(format!("[${}]", etag_var(tag))),
                // Not issued in this replay (cannot happen for a model trace): a tag the server
                // never issued, which the model's machine would not know either.
                Some(tag) => Some(format!("never-issued-{tag}")),
            };
            let body = match st.request {
                RequestKind::PublishAuth => {
                    PublishBody::Token(token.context("PUBLISH with a token but no token")?)
                }
                RequestKind::PublishSettings => {
                    PublishBody::Settings(st.mc_id.as_deref().context("settings without MC ID")?)
                }
                _ => PublishBody::Empty,
            };
            Publish {
                cseq,
                service,
                impu,
                expires,
                if_match,
                body,
                client,
            }
            .render()
        }
        other => bail!("step {}: {other:?} is not a request", st.step),
    })
}

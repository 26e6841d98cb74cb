//! The edge translates and never decides (dossier S-2, issue 16 item 2): the machine input built
//! from a request depends only on
//! - the asserted identity, and only when the source is a trusted SIP core (P-Asserted-Identity
//!   of a PUBLISH, TS 24.379 7.3.2/7.3.3; the To of a third-party REGISTER, TS 24.229 5.4.1.7);
//! - the Request-URI's resource;
//! - Event, Expires and SIP-If-Match;
//! - the bodies' semantic content.
//!
//! The property builds a request from exactly those facts, writes it with any
//! [`Perturbation`] (From, To, Contact, extra P-Asserted-Identity values, P-Preferred-Identity,
//! Request-URI form, compact/folded/re-cased headers, whitespace, part order, unknown optional
//! parts, XML whitespace: `tests/common/perturb.rs`), and checks that the input is the one those
//! facts call for, and the same as for the request written plainly.

mod common;

use common::perturb::{perturbation, Context, Perturbation};
use common::*;
use mcx_authz::sip::adapter::{classify, Edge, EdgeConfig, EdgeContext};
use mcx_authz::sip::framing::frame_datagram;
use mcx_authz::sip::parse::{parse, SipMessage};
use mcx_model::{
    AssertedIdentity, ClientId, ETag, EventPackage, IfMatch, Impu, Input, McId, Protection,
    ProtectionFailure, PublishBody, PublishTarget, RegisterTarget, Service, ServiceSet, TokenId,
    TokenRejection, TokenVerdict, UnixTime, VerifiedClaims,
};
use proptest::prelude::*;

const IMPUS: [&str; 3] = [
    "sip:ue1-a@ims.example",
    "sip:ue2-a@ims.example",
    "sip:attacker@ims.example",
];
const CLIENTS: [&str; 2] = ["ue1-client", "ue2-client"];
const TOKENS: [&str; 3] = ["tok-1.good", "tok-2.good", "tok-3.bad"];

/// A deterministic stand-in for the JWT validator: `.good` tokens verify with their own id.
fn validator(t: &str) -> TokenVerdict {
    if t.ends_with(".good") {
        TokenVerdict::Verified(VerifiedClaims {
            mcptt_id: Some(McId::new("sip:alice@mcptt.example")),
            mcvideo_id: Some(McId::new("sip:alice@mcvideo.example")),
            mcdata_id: None,
            scopes: ServiceSet::ALL,
            exp: UnixTime(4_000_000_000),
            token_id: TokenId::new(t),
        })
    } else {
        TokenVerdict::Rejected(TokenRejection::BadSignature)
    }
}

/// The edge's translation of request bytes from a trusted (or untrusted) source.
fn translate(bytes: &[u8], trusted: bool) -> Input {
    let frame = frame_datagram(bytes).expect("frames");
    let req = match parse(&frame) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!(
            "does not parse as a request: {other:?}\n{}",
            String::from_utf8_lossy(bytes)
        ),
    };
    let mut validate = validator;
    // Every value here is in clear; a protected one would reach the opener.
    let mut open = |_: &mcx_authz::sip::Sealed<'_>| Err(ProtectionFailure::UnknownKey);
    let mut ctx = EdgeContext {
        config: &EdgeConfig::default(),
        trusted_source: trusted,
        validate: &mut validate,
        open: &mut open,
        key_transport: &mut |_: &[u8]| {},
        fresh_etag: ETag::new("fresh"),
    };
    match classify(&req, &mut ctx) {
        // Token bodies of a third-party REGISTER are per service and the machine reads them
        // per service, so their order in the body is not meaning: compare them in service order.
        Edge::Machine {
            input: Input::ThirdPartyRegister(mut r),
            ..
        } => {
            r.embedded.sort_by_key(|(s, _)| *s);
            Input::ThirdPartyRegister(r)
        }
        Edge::Machine { input, .. } => input,
        other => panic!(
            "not given to the machine: {other:?}\n{}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// The facts a request may carry that the machine is allowed to see.
#[derive(Clone, Debug)]
enum Facts {
    Publish {
        impu: usize,
        trusted: bool,
        service: Service,
        event: Option<&'static str>,
        expires: Option<u32>,
        if_match: Vec<String>,
        body: Body,
    },
    Register {
        impu: usize,
        expires: u32,
        mc_tags: bool,
        token: Option<usize>,
        client: usize,
    },
}

#[derive(Clone, Debug)]
enum Body {
    Empty,
    Auth { token: usize, client: usize },
    Settings { user: u8, client: usize },
}

fn facts() -> impl Strategy<Value = Facts> {
    let publish = (
        0..IMPUS.len(),
        any::<bool>(),
        prop_oneof![Just(Service::Mcptt), Just(Service::Mcvideo)],
        prop_oneof![
            Just(Some("poc-settings")),
            Just(Some("presence")),
            Just(None)
        ],
        prop_oneof![Just(None), Just(Some(0)), Just(Some(30)), Just(Some(600))],
        proptest::collection::vec("[a-z0-9]{1,8}", 0..3),
        prop_oneof![
            Just(Body::Empty),
            (0..TOKENS.len(), 0..CLIENTS.len())
                .prop_map(|(token, client)| Body::Auth { token, client }),
            (0..2u8, 0..CLIENTS.len()).prop_map(|(user, client)| Body::Settings { user, client }),
        ],
    )
        .prop_map(
            |(impu, trusted, service, event, expires, if_match, body)| Facts::Publish {
                impu,
                trusted,
                service,
                event,
                expires,
                if_match,
                body,
            },
        );
    let register = (
        0..IMPUS.len(),
        prop_oneof![Just(0u32), Just(6), Just(3600)],
        any::<bool>(),
        proptest::option::of(0..TOKENS.len()),
        0..CLIENTS.len(),
    )
        .prop_map(|(impu, expires, mc_tags, token, client)| Facts::Register {
            impu,
            expires,
            mc_tags,
            token,
            client,
        });
    prop_oneof![3 => publish, 1 => register]
}

fn mc_id(user: u8, service: Service) -> String {
    format!("sip:user{user}@{}.example", service.name())
}

impl Facts {
    fn impu(&self) -> &'static str {
        match self {
            Facts::Publish { impu, .. } | Facts::Register { impu, .. } => IMPUS[*impu],
        }
    }

    fn trusted(&self) -> bool {
        match self {
            Facts::Publish { trusted, .. } => *trusted,
            Facts::Register { .. } => true,
        }
    }

    /// The request, as the SIP core forwards it (or the attacker sends it).
    fn message(&self, p: &Perturbation) -> SipMsg {
        match self {
            Facts::Publish {
                service,
                event,
                expires,
                if_match,
                body,
                ..
            } => {
                let mut m = publish_to(*service, self.impu()).without("Event");
                if let Some(e) = event {
                    m = m.header("Event", e);
                }
                if let Some(x) = expires {
                    m = m.header("Expires", &x.to_string());
                }
                for t in if_match {
                    m = m.header("SIP-If-Match", t);
                }
                let info = match body {
                    Body::Empty => return m,
                    Body::Auth { token, client } => {
                        info_body(*service, Some(TOKENS[*token]), None, CLIENTS[*client])
                    }
                    Body::Settings { user, client } => info_body(
                        *service,
                        None,
                        Some(&mc_id(*user, *service)),
                        CLIENTS[*client],
                    ),
                };
                let client = match body {
                    Body::Auth { client, .. } | Body::Settings { client, .. } => CLIENTS[*client],
                    Body::Empty => unreachable!(),
                };
                m.parts(vec![
                    (info.0, info.1.into_bytes()),
                    (
                        "application/poc-settings+xml".into(),
                        settings_xml(client).into_bytes(),
                    ),
                ])
            }
            Facts::Register {
                expires,
                mc_tags,
                token,
                client,
                ..
            } => with_embedded(
                third_party_register(self.impu(), *expires),
                &[Service::Mcptt, Service::Mcvideo],
                *mc_tags,
                token.map(|t| TOKENS[t]),
                CLIENTS[*client],
                p,
            ),
        }
    }

    fn bytes(&self, p: &Perturbation) -> Vec<u8> {
        let ctx = Context {
            others: IMPUS
                .iter()
                .filter(|i| **i != self.impu())
                .map(|i| i.to_string())
                .collect(),
            trusted: self.trusted(),
        };
        self.message(p)
            .render(&"192.0.2.1:5060".parse().unwrap(), p, &ctx)
    }

    /// What the input must say, computed from the facts alone.
    fn check(&self, input: &Input) -> Result<(), TestCaseError> {
        let identity = if self.trusted() {
            AssertedIdentity::Trusted(Impu::new(self.impu()))
        } else {
            AssertedIdentity::Untrusted
        };
        match (self, input) {
            (
                Facts::Publish {
                    service,
                    event,
                    expires,
                    if_match,
                    body,
                    ..
                },
                Input::Publish(p),
            ) => {
                prop_assert_eq!(&p.impu, &identity);
                prop_assert_eq!(p.target, PublishTarget::Service(*service));
                prop_assert!(p.key_upload.is_none());
                let want_event = match event {
                    Some("poc-settings") => EventPackage::PocSettings,
                    Some(_) => EventPackage::Other,
                    None => EventPackage::Missing,
                };
                prop_assert_eq!(p.event, want_event);
                prop_assert_eq!(p.expires, *expires);
                let want_if_match = match &if_match[..] {
                    [] => IfMatch::Absent,
                    [one] => IfMatch::One(ETag::new(one.as_str())),
                    _ => IfMatch::Many,
                };
                prop_assert_eq!(&p.if_match, &want_if_match);
                match (body, &p.body) {
                    (Body::Empty, PublishBody::Empty) => {}
                    // From an untrusted source the edge reads no body (the machine refuses the
                    // identity first): nothing the sender wrote there reaches the machine.
                    (_, PublishBody::Empty) if !self.trusted() => {}
                    (Body::Auth { token, client }, PublishBody::Authorization(a)) => {
                        prop_assert_eq!(&a.token, &validator(TOKENS[*token]));
                        prop_assert_eq!(&a.protection, &Protection::Clear);
                        prop_assert_eq!(&a.client_id, &ClientId::new(CLIENTS[*client]));
                        prop_assert!(a.settings.is_some(), "the poc-settings part was read");
                    }
                    (
                        Body::Settings { user, client },
                        PublishBody::SettingsOnly {
                            claimed_mc_id,
                            client_id,
                            settings,
                        },
                    ) => {
                        prop_assert_eq!(claimed_mc_id, &McId::new(mc_id(*user, *service)));
                        prop_assert_eq!(client_id, &ClientId::new(CLIENTS[*client]));
                        prop_assert!(settings.is_some(), "the poc-settings part was read");
                    }
                    (want, got) => prop_assert!(false, "body {:?} became {:?}", want, got),
                }
            }
            (
                Facts::Register {
                    expires,
                    mc_tags,
                    token,
                    client,
                    ..
                },
                Input::ThirdPartyRegister(r),
            ) => {
                prop_assert_eq!(&r.impu, &identity);
                prop_assert_eq!(r.target, RegisterTarget::Ours);
                prop_assert_eq!(r.expires, Some(*expires));
                let services: ServiceSet = [Service::Mcptt, Service::Mcvideo].into_iter().collect();
                prop_assert_eq!(
                    r.services,
                    Some(if *mc_tags {
                        services
                    } else {
                        ServiceSet::EMPTY
                    })
                );
                match token {
                    None => prop_assert!(r.embedded.is_empty()),
                    Some(t) => {
                        prop_assert_eq!(r.embedded.len(), 2, "{:?}", r.embedded);
                        for (s, a) in &r.embedded {
                            prop_assert!(services.contains(*s));
                            prop_assert_eq!(&a.token, &validator(TOKENS[*t]));
                            prop_assert_eq!(&a.client_id, &ClientId::new(CLIENTS[*client]));
                        }
                    }
                }
            }
            (f, i) => prop_assert!(false, "{:?} became {:?}", f, i),
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// S-2 where it can fail: whatever else the request says, the input is what its facts say.
    #[test]
    fn input_depends_only_on_identity_resource_headers_and_body(
        f in facts(),
        p in perturbation(),
    ) {
        let plain = translate(&f.bytes(&Perturbation::default()), f.trusted());
        f.check(&plain)?;
        let perturbed = translate(&f.bytes(&p), f.trusted());
        prop_assert_eq!(&perturbed, &plain, "written as {}", p);
    }
}

/// The property is not vacuous: each fact it lets through does change the input.
#[test]
fn each_allowed_fact_changes_the_input() {
    let base = Facts::Publish {
        impu: 0,
        trusted: true,
        service: Service::Mcptt,
        event: Some("poc-settings"),
        expires: Some(600),
        if_match: vec![],
        body: Body::Auth {
            token: 0,
            client: 0,
        },
    };
    let input = |f: &Facts| translate(&f.bytes(&Perturbation::default()), f.trusted());
    let b = input(&base);
    let Facts::Publish {
        impu,
        trusted,
        service,
        event,
        expires,
        if_match,
        body,
    } = base.clone()
    else {
        unreachable!()
    };
    let variants = [
        Facts::Publish {
            impu: 1,
            trusted,
            service,
            event,
            expires,
            if_match: if_match.clone(),
            body: body.clone(),
        },
        Facts::Publish {
            impu,
            trusted: false,
            service,
            event,
            expires,
            if_match: if_match.clone(),
            body: body.clone(),
        },
        Facts::Publish {
            impu,
            trusted,
            service: Service::Mcvideo,
            event,
            expires,
            if_match: if_match.clone(),
            body: body.clone(),
        },
        Facts::Publish {
            impu,
            trusted,
            service,
            event: None,
            expires,
            if_match: if_match.clone(),
            body: body.clone(),
        },
        Facts::Publish {
            impu,
            trusted,
            service,
            event,
            expires: Some(60),
            if_match: if_match.clone(),
            body: body.clone(),
        },
        Facts::Publish {
            impu,
            trusted,
            service,
            event,
            expires,
            if_match: vec!["tag".into()],
            body: body.clone(),
        },
        Facts::Publish {
            impu,
            trusted,
            service,
            event,
            expires,
            if_match,
            body: Body::Auth {
                token: 1,
                client: 0,
            },
        },
    ];
    for v in &variants {
        assert_ne!(input(v), b, "{v:?} must change the input");
    }
}

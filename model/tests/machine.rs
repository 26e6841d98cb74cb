//! Unit tests of the sans-IO machine: one scenario per transition of dossier b.2, plus a table of
//! the outcome of every (state class, request class) pair.

use mcx_model::*;

const ALICE: &str = "sip:alice@example.org";
const BOB: &str = "sip:bob@example.org";
const IMPU1: &str = "sip:ue1@ims.example.org";
const IMPU2: &str = "sip:ue1-b@ims.example.org";
const CLIENT: &str = "urn:uuid:00000000-0000-0000-0000-00000000c001";

/// A machine plus a clock and an entity-tag counter, speaking in the spec's steps.
struct Harness {
    m: Machine,
    now: u64,
    etags: u32,
}

fn claims(user: &str, exp: u64, id: &str) -> VerifiedClaims {
    VerifiedClaims {
        mcptt_id: Some(McId::new(user)),
        mcvideo_id: Some(McId::new(user)),
        mcdata_id: None,
        scopes: [Service::Mcptt, Service::Mcvideo].into_iter().collect(),
        exp: UnixTime(exp),
        token_id: TokenId::new(id),
    }
}

fn valid(user: &str) -> TokenVerdict {
    TokenVerdict::Verified(claims(user, 10_000, &format!("jti-{user}")))
}

/// The CSK placeholder the harness turns into the lab CSK of the token's user on the IMPU of
/// the request (one provisioned CSK per user and device, TS 33.180 5.4).
const LAB_CSK: &str = "lab-csk";

fn auth(token: TokenVerdict) -> PublishBody {
    PublishBody::Authorization(Authorization {
        token,
        protection: Protection::Csk(CskId::new(LAB_CSK)),
        client_id: ClientId::new(CLIENT),
        settings: None,
    })
}

fn settings_only(user: &str) -> PublishBody {
    PublishBody::SettingsOnly {
        claimed_mc_id: McId::new(user),
        client_id: ClientId::new(CLIENT),
        settings: Some(Settings {
            answer_mode_automatic: Some(true),
            ..Settings::default()
        }),
    }
}

impl Harness {
    fn new(policy: Policy) -> Self {
        Harness {
            m: Machine::new(policy),
            now: 100,
            etags: 0,
        }
    }

    fn post_cr() -> Self {
        Harness::new(Variant::PostCr.policy())
    }

    fn register(&mut self, impu: &str, expires: u32) -> Vec<Output> {
        self.m.handle(
            UnixTime(self.now),
            Input::ThirdPartyRegister(ThirdPartyRegister {
                target: RegisterTarget::Ours,
                impu: AssertedIdentity::Trusted(Impu::new(impu)),
                expires: Some(expires),
                services: Some(ServiceSet::only(Service::Mcptt)),
                embedded: vec![],
            }),
        )
    }

    fn publish_with(
        &mut self,
        impu: AssertedIdentity,
        if_match: Option<&ETag>,
        expires: Option<u32>,
        body: PublishBody,
    ) -> (Response, Vec<BindingEvent>) {
        self.etags += 1;
        let body = self.with_lab_csk(&impu, body);
        let out = self.m.handle(
            UnixTime(self.now),
            Input::Publish(Publish {
                target: PublishTarget::Service(Service::Mcptt),
                event: EventPackage::PocSettings,
                impu,
                if_match: if_match.map_or(IfMatch::Absent, |t| IfMatch::One(t.clone())),
                expires,
                body,
                key_upload: None,
                fresh_etag: ETag::new(format!("e{}", self.etags)),
            }),
        );
        split(out)
    }

    /// Replaces the [`LAB_CSK`] placeholder by the provisioned CSK of the token's user on this
    /// IMPU, provisioning it first (as the server does from its `[[protection.csk]]` table).
    fn with_lab_csk(&mut self, impu: &AssertedIdentity, mut body: PublishBody) -> PublishBody {
        if let PublishBody::Authorization(a) = &mut body {
            if a.protection == Protection::Csk(CskId::new(LAB_CSK)) {
                let user = match &a.token {
                    TokenVerdict::Verified(c) => c.mcptt_id.clone(),
                    TokenVerdict::Rejected(_) => None,
                };
                let impu = match impu {
                    AssertedIdentity::Trusted(i) => i.to_string(),
                    _ => "-".into(),
                };
                let csk_id = CskId::new(format!(
                    "csk|{}|{impu}",
                    user.as_ref().map_or("-", McId::as_str)
                ));
                if let Some(mc_id) = user {
                    let out = self.m.handle(
                        UnixTime(self.now),
                        Input::ProvisionCsk {
                            csk_id: csk_id.clone(),
                            mc_id,
                        },
                    );
                    assert!(out.is_empty());
                }
                a.protection = Protection::Csk(csk_id);
            }
        }
        body
    }

    fn publish(
        &mut self,
        impu: &str,
        if_match: Option<&ETag>,
        expires: Option<u32>,
        body: PublishBody,
    ) -> (Response, Vec<BindingEvent>) {
        self.publish_with(
            AssertedIdentity::Trusted(Impu::new(impu)),
            if_match,
            expires,
            body,
        )
    }

    fn tick_to(&mut self, t: u64) -> Vec<BindingEvent> {
        self.now = t;
        let out = self.m.handle(UnixTime(t), Input::Tick);
        out.into_iter()
            .filter_map(|o| match o {
                Output::Binding(e) => Some(e),
                Output::Csk(_) => None,
                Output::Response(_) => panic!("Tick must not answer"),
            })
            .collect()
    }

    fn table(&self) -> Vec<(String, String)> {
        self.m
            .bindings()
            .map(|(k, b)| (k.impu.to_string(), b.mc_id.to_string()))
            .collect()
    }
}

fn split(out: Vec<Output>) -> (Response, Vec<BindingEvent>) {
    let mut events = Vec::new();
    let mut response = None;
    for o in out {
        match o {
            Output::Binding(e) => events.push(e),
            Output::Csk(_) => {}
            Output::Response(r) => {
                assert!(response.is_none(), "two responses to one request");
                response = Some(r);
            }
        }
    }
    (
        response.expect("a request gets exactly one response"),
        events,
    )
}

fn bound(h: &mut Harness) -> ETag {
    assert_eq!(h.register(IMPU1, 600).len(), 1);
    let (r, e) = h.publish(IMPU1, None, Some(u32::MAX), auth(valid(ALICE)));
    assert_eq!(r.outcome, Outcome::Authorized);
    assert!(matches!(&e[..], [BindingEvent::Bound { mc_id, .. }] if mc_id.as_str() == ALICE));
    r.etag.expect("2xx to PUBLISH carries SIP-ETag")
}

#[test]
fn publish_with_valid_token_binds_and_answers_etag() {
    let mut h = Harness::post_cr();
    let etag = bound(&mut h);
    assert_eq!(etag.as_str(), "e1");
    assert_eq!(h.table(), vec![(IMPU1.to_string(), ALICE.to_string())]);
}

#[test]
fn refused_token_is_403_101_and_changes_nothing() {
    for reason in [
        TokenRejection::Expired,
        TokenRejection::BadSignature,
        TokenRejection::WrongIssuer,
    ] {
        let mut h = Harness::post_cr();
        let etag = bound(&mut h);
        let before = h.m.clone();
        let (r, e) = h.publish(
            IMPU1,
            Some(&etag),
            Some(3600),
            auth(TokenVerdict::Rejected(reason)),
        );
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.warning(),
            Some(Warning::Mc(McWarning::ServiceAuthorisationFailed))
        );
        assert_eq!(r.warning().and_then(|w| w.mc_code()), Some(101));
        assert!(e.is_empty());
        assert_eq!(h.m, before, "S-7: a non-2xx changes nothing ({reason:?})");
    }
}

#[test]
fn scope_and_claim_are_checked_per_service() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600);
    let mut c = claims(ALICE, 10_000, "t1");
    c.scopes = ServiceSet::only(Service::Mcvideo);
    let (r, _) = h.publish(IMPU1, None, None, auth(TokenVerdict::Verified(c)));
    assert_eq!(
        r.outcome,
        Outcome::ServiceAuthorisationFailed(TokenRejection::MissingScope)
    );
    let mut c = claims(ALICE, 10_000, "t2");
    c.mcptt_id = None;
    let (r, _) = h.publish(IMPU1, None, None, auth(TokenVerdict::Verified(c)));
    assert_eq!(
        r.outcome,
        Outcome::ServiceAuthorisationFailed(TokenRejection::MissingMcId)
    );
    assert_eq!(h.m.binding_count(), 0);
}

#[test]
fn unprotected_token_refused_when_protection_required() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600);
    let body = PublishBody::Authorization(Authorization {
        token: valid(ALICE),
        protection: Protection::Clear,
        client_id: ClientId::new(CLIENT),
        settings: None,
    });
    let (r, _) = h.publish(IMPU1, None, None, body.clone());
    assert_eq!(
        r.outcome,
        Outcome::ServiceAuthorisationFailed(TokenRejection::Unprotected)
    );
    let mut h = Harness::new(Policy {
        token_protection: TokenProtection::Optional,
        ..Variant::PostCr.policy()
    });
    h.register(IMPU1, 600);
    assert_eq!(
        h.publish(IMPU1, None, None, body).0.outcome,
        Outcome::Authorized
    );
}

#[test]
fn user_switch_rebinds_and_drops_old_settings() {
    let mut h = Harness::post_cr();
    let etag = bound(&mut h);
    let (r, _) = h.publish(IMPU1, Some(&etag), None, settings_only(ALICE));
    assert_eq!(r.outcome, Outcome::SettingsUpdated);
    let (r, e) = h.publish(IMPU1, None, None, auth(valid(BOB)));
    assert_eq!(r.outcome, Outcome::Authorized);
    assert!(
        matches!(&e[..], [BindingEvent::Rebound { from, to, .. }] if from.as_str() == ALICE && to.as_str() == BOB)
    );
    let (_, b) = h.m.bindings().next().unwrap();
    assert_eq!(
        b.settings, None,
        "S-5: the old user's settings do not survive a switch"
    );
    // The old entity-tag is no longer current.
    assert_eq!(
        h.publish(IMPU1, Some(&etag), Some(3600), PublishBody::Empty)
            .0
            .outcome,
        Outcome::ConditionalRequestFailed
    );
}

#[test]
fn settings_only_never_binds_or_rebinds() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600);
    let (r, e) = h.publish(IMPU1, None, None, settings_only(ALICE));
    assert_eq!(
        (r.status(), r.warning()),
        (404, Some(Warning::Mc(McWarning::UserUnknown)))
    );
    assert!(e.is_empty());
    assert_eq!(h.m.binding_count(), 0);
    let etag = h
        .publish(IMPU1, None, None, auth(valid(ALICE)))
        .0
        .etag
        .unwrap();
    let (r, _) = h.publish(IMPU1, Some(&etag), None, settings_only(BOB));
    assert_eq!(
        r.outcome,
        Outcome::UserUnknown,
        "S-6: a settings PUBLISH naming another MC ID is refused"
    );
    assert_eq!(h.table(), vec![(IMPU1.to_string(), ALICE.to_string())]);
}

#[test]
fn refresh_issues_new_etag_and_stale_etag_gets_412() {
    let mut h = Harness::post_cr();
    let etag = bound(&mut h);
    let (r, _) = h.publish(IMPU1, Some(&etag), Some(3600), PublishBody::Empty);
    assert_eq!(r.outcome, Outcome::Refreshed);
    let fresh = r.etag.unwrap();
    assert_ne!(fresh, etag, "S-8: every 2xx carries a new entity-tag");
    assert_eq!(
        h.publish(IMPU1, Some(&etag), Some(3600), PublishBody::Empty)
            .0
            .outcome,
        Outcome::ConditionalRequestFailed
    );
    assert_eq!(
        h.publish(IMPU1, None, Some(3600), PublishBody::Empty)
            .0
            .status(),
        400
    );
    let (r, _) = h.publish(IMPU1, Some(&fresh), Some(3600), PublishBody::Empty);
    assert_eq!(r.outcome, Outcome::Refreshed);
}

#[test]
fn etag_of_another_impu_is_412() {
    let mut h = Harness::post_cr();
    let etag = bound(&mut h);
    h.register(IMPU2, 600);
    let (r, _) = h.publish(IMPU2, Some(&etag), Some(0), PublishBody::Empty);
    assert_eq!(r.outcome, Outcome::ConditionalRequestFailed);
    assert_eq!(h.m.binding_count(), 1);
}

#[test]
fn expires_zero_removes_binding_totally() {
    let mut h = Harness::post_cr();
    let etag = bound(&mut h);
    let (r, e) = h.publish(IMPU1, Some(&etag), Some(0), PublishBody::Empty);
    assert_eq!((r.outcome, r.expires), (Outcome::Removed, Some(0)));
    assert!(matches!(
        &e[..],
        [BindingEvent::Unbound {
            cause: UnbindCause::PublicationRemoved,
            ..
        }]
    ));
    assert_eq!(h.m.binding_count(), 0);
    assert_eq!(
        h.m.next_deadline(),
        Some(UnixTime(700)),
        "only the registration deadline is left"
    );
    assert_eq!(
        h.publish(IMPU1, Some(&etag), Some(3600), PublishBody::Empty)
            .0
            .outcome,
        Outcome::ConditionalRequestFailed
    );
}

#[test]
fn deregistration_unbinds_every_client_of_the_impu() {
    let mut h = Harness::post_cr();
    bound(&mut h);
    h.register(IMPU2, 600);
    h.publish(IMPU2, None, None, auth(valid(BOB)));
    let (r, e) = split(h.register(IMPU1, 0));
    assert_eq!(r.outcome, Outcome::Registered);
    assert!(matches!(
        &e[..],
        [BindingEvent::Unbound {
            cause: UnbindCause::Deregistered,
            ..
        }]
    ));
    assert_eq!(h.table(), vec![(IMPU2.to_string(), BOB.to_string())]);
    let (r, _) = h.publish(IMPU1, None, None, auth(valid(ALICE)));
    assert_eq!(
        r.outcome,
        Outcome::Forbidden(ForbiddenReason::NotRegistered),
        "S-3"
    );
}

#[test]
fn reregistration_without_feature_tag_is_service_log_off() {
    let mut h = Harness::post_cr();
    bound(&mut h);
    let out = h.m.handle(
        UnixTime(h.now),
        Input::ThirdPartyRegister(ThirdPartyRegister {
            target: RegisterTarget::Ours,
            impu: AssertedIdentity::Trusted(Impu::new(IMPU1)),
            expires: Some(600),
            services: Some(ServiceSet::only(Service::Mcdata)),
            embedded: vec![],
        }),
    );
    let (_, e) = split(out);
    assert!(matches!(
        &e[..],
        [BindingEvent::Unbound {
            cause: UnbindCause::ServiceLogOff,
            ..
        }]
    ));
}

#[test]
fn impu_change_keeps_or_moves_old_binding_per_policy() {
    for (policy, expect_old) in [
        (ImpuChange::KeepOldBinding, true),
        (ImpuChange::MoveBinding, false),
    ] {
        let mut h = Harness::new(Policy {
            impu_change: policy,
            ..Variant::PostCr.policy()
        });
        bound(&mut h);
        h.register(IMPU2, 600);
        let (r, _) = h.publish(IMPU2, None, None, auth(valid(ALICE)));
        assert_eq!(r.outcome, Outcome::Authorized);
        let impus: Vec<String> = h.table().into_iter().map(|(i, _)| i).collect();
        assert_eq!(impus.contains(&IMPU1.to_string()), expect_old, "{policy:?}");
        assert!(impus.contains(&IMPU2.to_string()));
    }
}

#[test]
fn untrusted_or_missing_identity_is_refused() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600);
    let (r, _) = h.publish_with(AssertedIdentity::Untrusted, None, None, auth(valid(ALICE)));
    assert_eq!(
        r.outcome,
        Outcome::Forbidden(ForbiddenReason::UntrustedSource)
    );
    let (r, _) = h.publish_with(AssertedIdentity::Missing, None, None, auth(valid(ALICE)));
    assert_eq!(
        r.outcome,
        Outcome::Forbidden(ForbiddenReason::NoAssertedIdentity)
    );
    assert_eq!(h.m.binding_count(), 0);
}

#[test]
fn rfc3903_steps_refuse_in_order() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600);
    let mut p = Publish {
        target: PublishTarget::NotOurs,
        event: EventPackage::Other,
        impu: AssertedIdentity::Untrusted,
        if_match: IfMatch::Many,
        expires: Some(5),
        body: PublishBody::UnsupportedMediaType,
        key_upload: None,
        fresh_etag: ETag::new("x"),
    };
    let mut step = |p: &Publish| {
        split(h.m.handle(UnixTime(100), Input::Publish(p.clone())))
            .0
            .outcome
    };
    assert_eq!(step(&p), Outcome::NotOurResource);
    p.target = PublishTarget::AmbiguousPsi;
    assert_eq!(step(&p), Outcome::BadRequest(BadRequest::AmbiguousPsi));
    p.target = PublishTarget::Service(Service::Mcptt);
    assert_eq!(step(&p), Outcome::BadEvent);
    p.event = EventPackage::PocSettings;
    assert_eq!(
        step(&p),
        Outcome::Forbidden(ForbiddenReason::UntrustedSource)
    );
    p.impu = AssertedIdentity::Trusted(Impu::new(IMPU1));
    assert!(matches!(step(&p), Outcome::BadRequest(_)));
    p.if_match = IfMatch::Absent;
    assert_eq!(step(&p), Outcome::IntervalTooBrief { min_expires: 60 });
    p.expires = Some(600);
    assert_eq!(step(&p), Outcome::UnsupportedMediaType);
    p.body = PublishBody::Malformed(MalformedBody::NoClientId);
    assert_eq!(
        step(&p),
        Outcome::BadRequest(BadRequest::Body(MalformedBody::NoClientId))
    );
}

#[test]
fn publication_and_registration_expire_on_tick() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600);
    let (r, _) = h.publish(IMPU1, None, Some(120), auth(valid(ALICE)));
    assert_eq!(r.expires, Some(120));
    assert_eq!(h.m.next_deadline(), Some(UnixTime(220)));
    assert!(h.tick_to(219).is_empty());
    let e = h.tick_to(220);
    assert!(matches!(
        &e[..],
        [BindingEvent::Unbound {
            cause: UnbindCause::PublicationExpired,
            ..
        }]
    ));
    h.publish(IMPU1, None, None, auth(valid(BOB)));
    let e = h.tick_to(700);
    assert!(matches!(
        &e[..],
        [BindingEvent::Unbound {
            cause: UnbindCause::RegistrationExpired,
            ..
        }]
    ));
    assert_eq!(h.m.next_deadline(), None);
    assert_eq!(h.m.registrations().count(), 0);
}

#[test]
fn token_expiry_ends_binding_only_under_end_binding_policy() {
    for (policy, ends) in [
        (TokenExpiry::KeepBinding, false),
        (TokenExpiry::EndBinding, true),
    ] {
        let mut h = Harness::new(Policy {
            token_expiry: policy,
            ..Variant::PostCr.policy()
        });
        h.register(IMPU1, 100_000);
        let short = TokenVerdict::Verified(claims(ALICE, 500, "short"));
        assert_eq!(
            h.publish(IMPU1, None, Some(u32::MAX), auth(short))
                .0
                .outcome,
            Outcome::Authorized
        );
        let e = h.tick_to(500);
        assert_eq!(!e.is_empty(), ends, "{policy:?}");
        if ends {
            assert!(matches!(
                &e[..],
                [BindingEvent::Unbound {
                    cause: UnbindCause::TokenExpired,
                    ..
                }]
            ));
        }
        assert_eq!(h.m.binding_count() == 0, ends);
    }
}

#[test]
fn failed_reauthorization_keeps_or_drops_per_policy() {
    for (policy, kept) in [
        (FailedReauthorization::KeepBinding, true),
        (FailedReauthorization::DropBinding, false),
    ] {
        let mut h = Harness::new(Policy {
            failed_reauthorization: policy,
            ..Variant::PostCr.policy()
        });
        bound(&mut h);
        let (r, _) = h.publish(
            IMPU1,
            None,
            None,
            auth(TokenVerdict::Rejected(TokenRejection::Expired)),
        );
        assert_eq!(r.status(), 403);
        assert_eq!(h.m.binding_count() == 1, kept, "{policy:?}");
    }
}

#[test]
fn device_limit_refuses_the_extra_client() {
    let mut h = Harness::new(Policy {
        max_devices_per_mc_id: Some(1),
        ..Variant::PostCr.policy()
    });
    bound(&mut h);
    h.register(IMPU2, 600);
    let second = PublishBody::Authorization(Authorization {
        token: valid(ALICE),
        protection: Protection::Csk(CskId::new(LAB_CSK)),
        client_id: ClientId::new("urn:uuid:second"),
        settings: None,
    });
    let (r, _) = h.publish(IMPU2, None, None, second);
    assert_eq!(
        r.outcome,
        Outcome::ServiceAuthorisationFailed(TokenRejection::DeviceLimit)
    );
    // Re-authorizing the already bound client is not an extra device.
    assert_eq!(
        h.publish(IMPU1, None, None, auth(valid(ALICE))).0.outcome,
        Outcome::Authorized
    );
}

#[test]
fn register_token_honoured_only_by_pre_cr_policies() {
    for variant in Variant::ALL {
        let mut h = Harness::new(variant.policy());
        let out = h.m.handle(
            UnixTime(100),
            Input::ThirdPartyRegister(ThirdPartyRegister {
                target: RegisterTarget::Ours,
                impu: AssertedIdentity::Trusted(Impu::new(IMPU1)),
                expires: Some(600),
                services: Some(ServiceSet::only(Service::Mcptt)),
                embedded: vec![(
                    Service::Mcptt,
                    Authorization {
                        token: valid(ALICE),
                        protection: Protection::Clear,
                        client_id: ClientId::new(CLIENT),
                        settings: None,
                    },
                )],
            }),
        );
        let (r, _) = split(out);
        assert_eq!(
            r.status(),
            200,
            "the S-CSCF's 200 never depends on the token (Q-2)"
        );
        let honoured = variant.policy().register_token == RegisterToken::Honour;
        assert_eq!(h.m.binding_count() == 1, honoured, "{variant}");
    }
}

#[test]
fn restart_forgets_everything() {
    let mut h = Harness::post_cr();
    let etag = bound(&mut h);
    let e: Vec<_> = h.m.handle(UnixTime(h.now), Input::Restart);
    assert!(matches!(
        &e[..],
        [Output::Binding(BindingEvent::Unbound {
            cause: UnbindCause::Restart,
            ..
        })]
    ));
    assert_eq!(h.m.next_deadline(), None);
    assert_eq!(h.m.registrations().count(), 0);
    h.register(IMPU1, 600);
    assert_eq!(
        h.publish(IMPU1, Some(&etag), Some(3600), PublishBody::Empty)
            .0
            .outcome,
        Outcome::ConditionalRequestFailed
    );
}

/// The outcome of every (state class, request class) pair, as one table: a change to any
/// transition shows up as a one-line diff here.
#[test]
fn transition_table() {
    type Setup = fn(&mut Harness) -> Option<ETag>;
    let states: [(&str, Setup); 4] = [
        ("S0 unregistered", |_| None),
        ("S1 registered", |h| {
            h.register(IMPU1, 600);
            None
        }),
        ("S2 bound alice", |h| Some(bound(h))),
        ("S2 bound, drop-binding", |h| Some(bound(h))),
    ];
    type Request = fn(&mut Harness, Option<&ETag>) -> Response;
    let requests: [(&str, Request); 9] = [
        ("auth alice", |h, _| {
            h.publish(IMPU1, None, None, auth(valid(ALICE))).0
        }),
        ("auth bob", |h, _| {
            h.publish(IMPU1, None, None, auth(valid(BOB))).0
        }),
        ("auth expired", |h, _| {
            h.publish(
                IMPU1,
                None,
                None,
                auth(TokenVerdict::Rejected(TokenRejection::Expired)),
            )
            .0
        }),
        ("settings alice +etag", |h, t| {
            h.publish(IMPU1, t, None, settings_only(ALICE)).0
        }),
        ("settings bob +etag", |h, t| {
            h.publish(IMPU1, t, None, settings_only(BOB)).0
        }),
        ("refresh +etag", |h, t| {
            h.publish(IMPU1, t, Some(3600), PublishBody::Empty).0
        }),
        ("remove +etag", |h, t| {
            h.publish(IMPU1, t, Some(0), PublishBody::Empty).0
        }),
        ("refresh stale", |h, _| {
            h.publish(
                IMPU1,
                Some(&ETag::new("stale")),
                Some(3600),
                PublishBody::Empty,
            )
            .0
        }),
        ("register 0", |h, _| split(h.register(IMPU1, 0)).0),
    ];
    let mut table = String::new();
    for (state, setup) in states {
        for (request, send) in requests {
            let mut h = if state.contains("drop-binding") {
                Harness::new(Policy {
                    failed_reauthorization: FailedReauthorization::DropBinding,
                    ..Variant::PostCr.policy()
                })
            } else {
                Harness::post_cr()
            };
            let etag = setup(&mut h);
            let r = send(&mut h, etag.as_ref());
            let after: Vec<String> = h.table().into_iter().map(|(_, m)| m).collect();
            table.push_str(&format!(
                "{state:26} | {request:22} | {:3} {:40} | {:?}\n",
                r.status(),
                r.outcome.label(),
                after
            ));
        }
    }
    let expected = "\
S0 unregistered            | auth alice             | 403 not_registered                           | []
S0 unregistered            | auth bob               | 403 not_registered                           | []
S0 unregistered            | auth expired           | 403 not_registered                           | []
S0 unregistered            | settings alice +etag   | 404 user_unknown                             | []
S0 unregistered            | settings bob +etag     | 404 user_unknown                             | []
S0 unregistered            | refresh +etag          | 400 bad_request                              | []
S0 unregistered            | remove +etag           | 400 bad_request                              | []
S0 unregistered            | refresh stale          | 412 conditional_request_failed               | []
S0 unregistered            | register 0             | 200 registered                               | []
S1 registered              | auth alice             | 200 authorized                               | [\"sip:alice@example.org\"]
S1 registered              | auth bob               | 200 authorized                               | [\"sip:bob@example.org\"]
S1 registered              | auth expired           | 403 token_expired                            | []
S1 registered              | settings alice +etag   | 404 user_unknown                             | []
S1 registered              | settings bob +etag     | 404 user_unknown                             | []
S1 registered              | refresh +etag          | 400 bad_request                              | []
S1 registered              | remove +etag           | 400 bad_request                              | []
S1 registered              | refresh stale          | 412 conditional_request_failed               | []
S1 registered              | register 0             | 200 registered                               | []
S2 bound alice             | auth alice             | 200 authorized                               | [\"sip:alice@example.org\"]
S2 bound alice             | auth bob               | 200 authorized                               | [\"sip:bob@example.org\"]
S2 bound alice             | auth expired           | 403 token_expired                            | [\"sip:alice@example.org\"]
S2 bound alice             | settings alice +etag   | 200 settings_updated                         | [\"sip:alice@example.org\"]
S2 bound alice             | settings bob +etag     | 404 user_unknown                             | [\"sip:alice@example.org\"]
S2 bound alice             | refresh +etag          | 200 refreshed                                | [\"sip:alice@example.org\"]
S2 bound alice             | remove +etag           | 200 removed                                  | []
S2 bound alice             | refresh stale          | 412 conditional_request_failed               | [\"sip:alice@example.org\"]
S2 bound alice             | register 0             | 200 registered                               | []
S2 bound, drop-binding     | auth alice             | 200 authorized                               | [\"sip:alice@example.org\"]
S2 bound, drop-binding     | auth bob               | 200 authorized                               | [\"sip:bob@example.org\"]
S2 bound, drop-binding     | auth expired           | 403 token_expired                            | []
S2 bound, drop-binding     | settings alice +etag   | 200 settings_updated                         | [\"sip:alice@example.org\"]
S2 bound, drop-binding     | settings bob +etag     | 404 user_unknown                             | [\"sip:alice@example.org\"]
S2 bound, drop-binding     | refresh +etag          | 200 refreshed                                | [\"sip:alice@example.org\"]
S2 bound, drop-binding     | remove +etag           | 200 removed                                  | []
S2 bound, drop-binding     | refresh stale          | 412 conditional_request_failed               | [\"sip:alice@example.org\"]
S2 bound, drop-binding     | register 0             | 200 registered                               | []
";
    assert_eq!(table, expected, "\nactual table:\n{table}");
}

#[test]
fn user_switch_by_register_token_drops_the_old_users_publication() {
    let mut h = Harness::new(Variant::PreCr.policy());
    let etag = bound(&mut h);
    let out = h.m.handle(
        UnixTime(h.now),
        Input::ThirdPartyRegister(ThirdPartyRegister {
            target: RegisterTarget::Ours,
            impu: AssertedIdentity::Trusted(Impu::new(IMPU1)),
            expires: Some(600),
            services: Some(ServiceSet::only(Service::Mcptt)),
            embedded: vec![(
                Service::Mcptt,
                Authorization {
                    token: valid(BOB),
                    protection: Protection::Clear,
                    client_id: ClientId::new(CLIENT),
                    settings: None,
                },
            )],
        }),
    );
    let (_, e) = split(out);
    assert!(matches!(&e[..], [BindingEvent::Rebound { .. }]));
    let (_, b) = h.m.bindings().next().unwrap();
    assert_eq!(
        b.publication, None,
        "S-5: alice's publication does not become bob's"
    );
    let (r, _) = h.publish(IMPU1, Some(&etag), Some(3600), PublishBody::Empty);
    assert_eq!(r.outcome, Outcome::ConditionalRequestFailed);
}

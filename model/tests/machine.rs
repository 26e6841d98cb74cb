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
    store: Image,
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
            store: Image::new(),
        }
    }

    /// Every input goes through here: the machine's [`Output::Persist`] batches are applied to
    /// a store image, which must then hold exactly what the machine holds (issue 13: nothing that
    /// must survive a crash is left out of a batch), and a response waits for the batch it
    /// observed. Returns the outputs without the batches.
    fn handle(&mut self, now: UnixTime, input: Input) -> Vec<Output> {
        let out = self.m.handle(now, input);
        let mut last = None;
        let mut rest = Vec::new();
        for o in out {
            match o {
                Output::Persist(p) => {
                    assert!(p.seq > self.store.seq(), "sequence numbers grow");
                    self.store.apply(&p);
                    last = Some(p.seq);
                }
                Output::Response(r) => {
                    if let Some(seq) = last {
                        assert_eq!(r.wait_for, seq, "a response waits for its own changes");
                    }
                    assert_eq!(r.wait_for, self.m.last_seq());
                    rest.push(Output::Response(r));
                }
                o => rest.push(o),
            }
        }
        let durable = |mut s: Snapshot| {
            s.seq = Seq::ZERO;
            s.token_owners.retain(|(_, _, t)| *t > now);
            s.key_messages.retain(|(_, t)| *t > now);
            s
        };
        assert_eq!(
            durable(self.store.snapshot()),
            durable(self.m.snapshot()),
            "the store image is the machine's state"
        );
        // And the machine loaded from the store answers alike from here on.
        let mut reloaded = Machine::new(self.m.policy().clone());
        reloaded.handle(now, Input::Load(Box::new(self.store.snapshot())));
        assert_eq!(
            reloaded.snapshot(),
            self.m.snapshot(),
            "Load restores the state"
        );
        rest
    }

    fn post_cr() -> Self {
        Harness::new(Variant::PostCr.policy())
    }

    fn register(&mut self, impu: &str, expires: u32) -> Vec<Output> {
        self.handle(
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
        let out = self.handle(
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
                    let out = self.handle(
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
        let out = self.handle(UnixTime(t), Input::Tick);
        out.into_iter()
            .filter_map(|o| match o {
                Output::Binding(e) => Some(e),
                Output::Csk(_) | Output::Persist(_) => None,
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
            Output::Csk(_) | Output::Persist(_) => {}
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
    let out = h.handle(
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
        split(h.handle(UnixTime(100), Input::Publish(p.clone())))
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
        let out = h.handle(
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
    let e: Vec<_> = h.handle(UnixTime(h.now), Input::Restart);
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
    let out = h.handle(
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

// ---------------------------------------------------------------------------------------------
// Issue 16: behaviours no earlier test pinned down (each was a surviving cargo-mutants mutant).

const IMPU3: &str = "sip:ue2@ims.example.org";
const CLIENT2: &str = "urn:uuid:00000000-0000-0000-0000-00000000c002";
const CLIENT3: &str = "urn:uuid:00000000-0000-0000-0000-00000000c003";

/// A third-party REGISTER of `impu` for MCPTT and MCVideo.
fn register_both(h: &mut Harness, impu: &str, expires: u32) {
    let out = h.handle(
        UnixTime(h.now),
        Input::ThirdPartyRegister(ThirdPartyRegister {
            target: RegisterTarget::Ours,
            impu: AssertedIdentity::Trusted(Impu::new(impu)),
            expires: Some(expires),
            services: Some([Service::Mcptt, Service::Mcvideo].into_iter().collect()),
            embedded: vec![],
        }),
    );
    assert_eq!(split(out).0.outcome, Outcome::Registered);
}

/// A PUBLISH authorizing `client` of `impu` for `service` with a fresh token of alice's (each
/// its own jti, so the replay window does not refuse it), protected under her lab CSK.
fn authorize(
    h: &mut Harness,
    impu: &str,
    service: Service,
    client: &str,
) -> (Response, Vec<BindingEvent>) {
    h.etags += 1;
    let identity = AssertedIdentity::Trusted(Impu::new(impu));
    let body = PublishBody::Authorization(Authorization {
        token: TokenVerdict::Verified(claims(ALICE, 10_000, &format!("jti-{}", h.etags))),
        protection: Protection::Csk(CskId::new(LAB_CSK)),
        client_id: ClientId::new(client),
        settings: None,
    });
    let body = h.with_lab_csk(&identity, body);
    let out = h.handle(
        UnixTime(h.now),
        Input::Publish(Publish {
            target: PublishTarget::Service(service),
            event: EventPackage::PocSettings,
            impu: identity,
            if_match: IfMatch::Absent,
            expires: None,
            body,
            key_upload: None,
            fresh_etag: ETag::new(format!("e{}", h.etags)),
        }),
    );
    split(out)
}

/// The binding keys, as (IMPU, service, client ID).
fn keys(h: &Harness) -> Vec<(String, Service, String)> {
    h.m.bindings()
        .map(|(k, _)| (k.impu.to_string(), k.service, k.client_id.to_string()))
        .collect()
}

/// RFC 3903 step 4: "If the requested duration is shorter than the minimum expiration interval
/// the ESC SHOULD reject the request with 423 (Interval Too Brief)". Shorter, not equal: an
/// Expires of exactly Min-Expires is accepted, and one second less is not.
#[test]
fn expires_equal_to_min_expires_is_accepted() {
    let mut h = Harness::post_cr();
    let min = h.m.policy().min_expires;
    assert_eq!(h.register(IMPU1, 600).len(), 1);
    let (r, _) = h.publish(IMPU1, None, Some(min - 1), auth(valid(ALICE)));
    assert_eq!(r.outcome, Outcome::IntervalTooBrief { min_expires: min });
    assert_eq!(h.m.binding_count(), 0);
    let (r, e) = h.publish(IMPU1, None, Some(min), auth(valid(ALICE)));
    assert_eq!(r.outcome, Outcome::Authorized);
    assert_eq!(r.expires, Some(min), "granted exactly as asked");
    assert!(matches!(&e[..], [BindingEvent::Bound { .. }]));
    // A refresh at exactly Min-Expires is accepted too.
    let etag = r.etag.unwrap();
    let (r, _) = h.publish(IMPU1, Some(&etag), Some(min), PublishBody::Empty);
    assert_eq!(r.outcome, Outcome::Refreshed);
}

/// When a registration and a binding's own deadline fall at the same instant, the registration
/// ends first, so the binding ends because its IMPU is no longer registered (TS 24.229: the
/// registration is what the SIP core asserted; S-3: no binding outlives it) and the event says
/// `registration_expired`, not `publication_expired`. Both are true at that instant; the rule
/// picks the cause that also explains every other binding of the IMPU ending at once.
#[test]
fn at_the_same_instant_registration_expiry_is_the_cause() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600); // registration ends at 700
    let (r, _) = h.publish(IMPU1, None, Some(600), auth(valid(ALICE))); // publication too
    assert_eq!(r.outcome, Outcome::Authorized);
    assert_eq!(h.m.next_deadline(), Some(UnixTime(700)));
    let e = h.tick_to(700);
    assert!(
        matches!(
            &e[..],
            [BindingEvent::Unbound {
                cause: UnbindCause::RegistrationExpired,
                ..
            }]
        ),
        "{e:?}"
    );
    assert_eq!(h.m.registrations().count(), 0);
}

/// A tick that comes late handles deadlines earliest first: a publication that ran out before
/// its IMPU's registration ended reports `publication_expired`, even though both deadlines have
/// passed by the time the machine looks.
#[test]
fn a_late_tick_ends_things_in_deadline_order() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600); // registration ends at 700
    let (r, _) = h.publish(IMPU1, None, Some(120), auth(valid(ALICE))); // publication at 220
    assert_eq!(r.outcome, Outcome::Authorized);
    let e = h.tick_to(1_000);
    assert!(
        matches!(
            &e[..],
            [BindingEvent::Unbound {
                cause: UnbindCause::PublicationExpired,
                ..
            }]
        ),
        "{e:?}"
    );
    assert_eq!(h.m.registrations().count(), 0, "the registration ended too");
    assert_eq!(h.m.next_deadline(), None);
}

/// The deadline index holds one entry per IMPU (its earliest deadline, issue 15); ending one
/// thing re-arms the IMPU with its next. A late tick still ends things across IMPUs in global
/// deadline order, not one IMPU's all before the next IMPU's.
#[test]
fn a_late_tick_interleaves_impus_in_deadline_order() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600); // ends at 700
    h.register(IMPU2, 200); // ends at 300
    let client = |id: &str| {
        PublishBody::Authorization(Authorization {
            token: valid(ALICE),
            protection: Protection::Csk(CskId::new(LAB_CSK)),
            client_id: ClientId::new(id),
            settings: None,
        })
    };
    let (r, _) = h.publish(IMPU1, None, Some(120), client("urn:uuid:a")); // ends at 220
    assert_eq!(r.outcome, Outcome::Authorized);
    let (r, _) = h.publish(IMPU1, None, Some(300), client("urn:uuid:b")); // ends at 400
    assert_eq!(r.outcome, Outcome::Authorized);
    let (r, _) = h.publish(IMPU2, None, Some(u32::MAX), client("urn:uuid:c"));
    assert_eq!(r.outcome, Outcome::Authorized);
    assert_eq!(h.m.binding_count(), 3);
    assert_eq!(h.m.next_deadline(), Some(UnixTime(220)));
    let e = h.tick_to(1_000);
    let ended: Vec<(&str, &str, UnbindCause)> = e
        .iter()
        .map(|e| match e {
            BindingEvent::Unbound { key, cause, .. } => {
                (key.impu.as_str(), key.client_id.as_str(), *cause)
            }
            other => panic!("only unbinding on a tick: {other:?}"),
        })
        .collect();
    assert_eq!(
        ended,
        [
            (IMPU1, "urn:uuid:a", UnbindCause::PublicationExpired),
            (IMPU2, "urn:uuid:c", UnbindCause::RegistrationExpired),
            (IMPU1, "urn:uuid:b", UnbindCause::PublicationExpired),
        ]
    );
    assert_eq!(h.m.binding_count(), 0);
    assert_eq!(h.m.registrations().count(), 0);
    assert_eq!(h.m.next_deadline(), None);
}

/// `impu_change = move-binding` (dossier Q-11): when a client's binding for a service appears
/// on a new IMPU, only that client's binding for that service leaves the old IMPU. The same
/// client's binding for another service stays, and so do other clients' bindings (on the old
/// IMPU or elsewhere), and the new binding itself.
#[test]
fn a_moved_binding_leaves_other_services_and_other_clients_alone() {
    let mut h = Harness::new(Policy {
        impu_change: ImpuChange::MoveBinding,
        ..Variant::PostCr.policy()
    });
    for impu in [IMPU1, IMPU2, IMPU3] {
        register_both(&mut h, impu, 600);
    }
    for (impu, service, client) in [
        (IMPU1, Service::Mcptt, CLIENT),
        (IMPU1, Service::Mcvideo, CLIENT),
        (IMPU1, Service::Mcptt, CLIENT2),
        (IMPU3, Service::Mcptt, CLIENT3),
    ] {
        let (r, _) = authorize(&mut h, impu, service, client);
        assert_eq!(r.outcome, Outcome::Authorized, "{impu} {service} {client}");
    }
    // CLIENT's MCPTT binding moves from IMPU1 to IMPU2.
    let (r, e) = authorize(&mut h, IMPU2, Service::Mcptt, CLIENT);
    assert_eq!(r.outcome, Outcome::Authorized);
    let unbound: Vec<_> = e
        .iter()
        .filter_map(|e| match e {
            BindingEvent::Unbound { key, cause, .. } => Some((
                key.impu.to_string(),
                key.service,
                key.client_id.to_string(),
                *cause,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        unbound,
        vec![(
            IMPU1.to_string(),
            Service::Mcptt,
            CLIENT.to_string(),
            UnbindCause::MovedToNewImpu
        )]
    );
    let mut expected = vec![
        (IMPU1.to_string(), Service::Mcvideo, CLIENT.to_string()),
        (IMPU1.to_string(), Service::Mcptt, CLIENT2.to_string()),
        (IMPU2.to_string(), Service::Mcptt, CLIENT.to_string()),
        (IMPU3.to_string(), Service::Mcptt, CLIENT3.to_string()),
    ];
    expected.sort();
    let mut got = keys(&h);
    got.sort();
    assert_eq!(got, expected);
}

/// The machine runs the policy it was given (the server's admin view and `check` report it).
#[test]
fn the_machine_reports_the_policy_it_was_given() {
    let policy = Policy {
        impu_change: ImpuChange::MoveBinding,
        max_devices_per_mc_id: Some(2),
        min_expires: 30,
        ..Variant::PreCr.policy()
    };
    assert_ne!(policy, Policy::default());
    let h = Harness::new(policy.clone());
    assert_eq!(h.m.policy(), &policy);
}

/// Issue 13: a crash loses nothing that was persisted. A machine loaded from the store holds
/// the binding (the client's SIP-ETag still refreshes it), the CSK tie and the registration,
/// with every deadline armed again; what ran out while the server was down ends at load, and
/// that end is persisted too.
#[test]
fn load_restores_bindings_and_rearms_deadlines() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600);
    let (r, _) = h.publish(IMPU1, None, Some(3600), auth(valid(ALICE)));
    assert_eq!(r.outcome, Outcome::Authorized);
    let etag = r.etag.unwrap();
    let stored = h.store.snapshot();
    assert_eq!(stored.seq, h.m.last_seq());
    assert!(!stored.csks.is_empty(), "the CSK tie is durable too");

    // Restart 10 s later: everything is back, and the client's ETag still names it.
    let mut back = Harness::post_cr();
    back.now = h.now + 10;
    back.store = h.store.clone();
    back.etags = h.etags;
    let out = back.handle(UnixTime(back.now), Input::Load(Box::new(stored.clone())));
    assert!(out.is_empty(), "nothing ran out: {out:?}");
    assert_eq!(back.table(), h.table());
    assert_eq!(back.m.last_seq(), stored.seq, "sequence numbers go on");
    assert_eq!(back.m.next_deadline(), h.m.next_deadline());
    let (r, _) = back.publish(IMPU1, Some(&etag), Some(3600), PublishBody::Empty);
    assert_eq!(r.outcome, Outcome::Refreshed);
    assert!(r.wait_for > stored.seq);

    // Restart after the registration ran out (600 s): the machine ends the binding at load.
    let mut late = Machine::new(Variant::PostCr.policy());
    let out = late.handle(UnixTime(h.now + 700), Input::Load(Box::new(stored)));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Binding(BindingEvent::Unbound {
            cause: UnbindCause::RegistrationExpired,
            ..
        })
    )));
    let deleted = out.iter().any(|o| {
        matches!(o, Output::Persist(p) if p.changes.iter().any(|c| matches!(c, Change::Impu { record: None, .. })))
    });
    assert!(deleted, "the expiry is persisted: {out:?}");
    assert_eq!(late.binding_count(), 0);
}

/// A refusal waits for the state it observed: no 403 or 412 goes out before a change it saw
/// is durable.
#[test]
fn every_response_waits_for_the_latest_batch() {
    let mut h = Harness::post_cr();
    h.register(IMPU1, 600);
    let seq = h.m.last_seq();
    assert!(seq > Seq::ZERO);
    let (r, _) = h.publish(
        IMPU1,
        Some(&ETag::new("nope")),
        Some(3600),
        PublishBody::Empty,
    );
    assert_eq!(r.outcome, Outcome::ConditionalRequestFailed);
    assert_eq!(
        r.wait_for, seq,
        "nothing changed, but it saw the registration"
    );
}

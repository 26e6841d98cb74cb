//! The decisions that used to be made at the edge and now live in the machine: CSK ties and
//! uploads (TS 33.180 5.4), protection (clause 9), the replay window (dossier Q-6), foreign
//! URIs and ambiguous PSIs, answers for unregistered IMPUs, restart recovery, and
//! policy warnings.

use mcx_model::*;

const ALICE: &str = "sip:alice@example.org";
const BOB: &str = "sip:bob@example.org";
const UE1: &str = "sip:ue1@ims.example.org";
const UE2: &str = "sip:ue2@ims.example.org";
const CLIENT: &str = "urn:uuid:c1";

fn claims(user: &str, jti: &str) -> TokenVerdict {
    TokenVerdict::Verified(VerifiedClaims {
        mcptt_id: Some(McId::new(user)),
        mcvideo_id: None,
        mcdata_id: None,
        scopes: ServiceSet::only(Service::Mcptt),
        exp: UnixTime(100_000),
        token_id: TokenId::new(jti),
    })
}

fn token(user: &str) -> TokenVerdict {
    claims(user, &format!("jti-{user}"))
}

/// A machine, a clock and an entity-tag counter.
struct M {
    m: Machine,
    now: u64,
    etags: u32,
}

/// What one request produced.
struct Step {
    response: Response,
    bindings: Vec<BindingEvent>,
    csks: Vec<CskEvent>,
    /// The changes this request made durable (issue 13).
    persisted: Vec<Change>,
}

impl M {
    fn new(policy: Policy) -> M {
        M {
            m: Machine::new(policy),
            now: 1_000,
            etags: 0,
        }
    }

    fn post_cr() -> M {
        M::new(Variant::PostCr.policy())
    }

    fn input(&mut self, input: Input) -> Step {
        let mut step = Step {
            response: Response {
                outcome: Outcome::Registered,
                etag: None,
                expires: None,
                wait_for: Seq::ZERO,
            },
            bindings: vec![],
            csks: vec![],
            persisted: vec![],
        };
        let mut answered = false;
        for o in self.m.handle(UnixTime(self.now), input) {
            match o {
                Output::Response(r) => {
                    step.response = r;
                    answered = true;
                }
                Output::Binding(e) => step.bindings.push(e),
                Output::Csk(e) => step.csks.push(e),
                Output::Persist(p) => step.persisted.extend(p.changes),
            }
        }
        assert!(answered, "a request gets a response");
        step
    }

    fn register(&mut self, impu: &str) -> Step {
        self.input(Input::ThirdPartyRegister(ThirdPartyRegister {
            target: RegisterTarget::Ours,
            impu: AssertedIdentity::Trusted(Impu::new(impu)),
            expires: Some(3600),
            services: None,
            embedded: vec![],
        }))
    }

    fn provision(&mut self, csk: &str, user: &str) {
        let out = self.m.handle(
            UnixTime(self.now),
            Input::ProvisionCsk {
                csk_id: CskId::new(csk),
                mc_id: McId::new(user),
            },
        );
        // Only the new CSK, persisted (issue 13).
        assert!(
            matches!(&out[..], [Output::Persist(p)] if p.changes.len() == 1),
            "{out:?}"
        );
    }

    fn publish(
        &mut self,
        identity: AssertedIdentity,
        if_match: Option<&ETag>,
        body: PublishBody,
        key_upload: Option<KeyUpload>,
    ) -> Step {
        self.etags += 1;
        let fresh_etag = ETag::new(format!("e{}", self.etags));
        self.input(Input::Publish(Publish {
            target: PublishTarget::Service(Service::Mcptt),
            event: EventPackage::PocSettings,
            impu: identity,
            if_match: if_match.map_or(IfMatch::Absent, |t| IfMatch::One(t.clone())),
            expires: Some(3600),
            body,
            key_upload: key_upload.map(Box::new),
            fresh_etag,
        }))
    }

    /// Logs off the publication `etag` of `impu` (Expires: 0, TS 24.379 7.3.5).
    fn log_off(&mut self, impu: &str, etag: ETag) -> Step {
        self.etags += 1;
        let fresh_etag = ETag::new(format!("off{}", self.etags));
        self.input(Input::Publish(Publish {
            target: PublishTarget::Service(Service::Mcptt),
            event: EventPackage::PocSettings,
            impu: trusted(impu),
            if_match: IfMatch::One(etag),
            expires: Some(0),
            body: PublishBody::Empty,
            key_upload: None,
            fresh_etag,
        }))
    }

    /// An initial PUBLISH from a trusted `impu` with `user`'s token under the CSK `csk_id`, which
    /// the same PUBLISH uploads (I_MESSAGE `message`, signed by `user`, sent at 1 000).
    fn authorize_uploading(&mut self, impu: &str, user: &str, csk_id: &str, message: &str) -> Step {
        self.publish(
            trusted(impu),
            None,
            auth(token(user), csk(csk_id)),
            Some(upload(csk_id, message, 1_000, Some(user))),
        )
    }

    /// An initial PUBLISH with `token` under `protection`, from a trusted `impu`.
    fn authorize(&mut self, impu: &str, token: TokenVerdict, protection: Protection) -> Step {
        self.publish(trusted(impu), None, auth(token, protection), None)
    }
}

fn trusted(impu: &str) -> AssertedIdentity {
    AssertedIdentity::Trusted(Impu::new(impu))
}

fn auth(token: TokenVerdict, protection: Protection) -> PublishBody {
    PublishBody::Authorization(Authorization {
        token,
        protection,
        client_id: ClientId::new(CLIENT),
        settings: None,
    })
}

fn csk(id: &str) -> Protection {
    Protection::Csk(CskId::new(id))
}

fn refused(step: &Step) -> TokenRejection {
    match step.response.outcome {
        Outcome::ServiceAuthorisationFailed(r) => {
            assert_eq!(step.response.status(), 403);
            assert_eq!(
                step.response.warning(),
                Some(Warning::Mc(McWarning::ServiceAuthorisationFailed))
            );
            assert!(step.bindings.is_empty() && step.csks.is_empty());
            r
        }
        ref other => panic!("not a 403/101: {other:?}"),
    }
}

fn upload(id: &str, message: &str, sent_at: u64, signer: Option<&str>) -> KeyUpload {
    KeyUpload::Verified {
        csk_id: CskId::new(id),
        message_id: KeyMessageId::new(message),
        sent_at: UnixTime(sent_at),
        signer: signer.map(McId::new),
    }
}

// ------------------------------------------------------------------------------ protection

#[test]
fn post_cr_requires_protection_and_refuses_failed_protection() {
    let mut m = M::post_cr();
    m.register(UE1);
    m.provision("k-alice", ALICE);
    let before = m.m.clone();
    assert_eq!(
        refused(&m.authorize(UE1, token(ALICE), Protection::Clear)),
        TokenRejection::Unprotected
    );
    for failure in [
        ProtectionFailure::UnknownKey,
        ProtectionFailure::Undecryptable,
        ProtectionFailure::WrongAlgorithm,
        ProtectionFailure::Malformed,
        ProtectionFailure::BadSignature,
        ProtectionFailure::NotSupported,
    ] {
        let s = m.authorize(UE1, token(ALICE), Protection::Failed(failure));
        assert_eq!(refused(&s), TokenRejection::BadProtection, "{failure:?}");
    }
    assert_eq!(m.m, before, "S-7: refusals change nothing");
    let s = m.authorize(UE1, token(ALICE), csk("k-alice"));
    assert_eq!(s.response.outcome, Outcome::Authorized);
}

#[test]
fn optional_takes_both_and_off_refuses_protected_tokens() {
    let mut policy = Variant::PostCr.policy();
    policy.token_protection = TokenProtection::Optional;
    let mut m = M::new(policy.clone());
    m.register(UE1);
    m.provision("k-alice", ALICE);
    assert_eq!(
        m.authorize(UE1, token(ALICE), Protection::Clear)
            .response
            .outcome,
        Outcome::Authorized
    );
    assert_eq!(
        m.authorize(UE1, token(ALICE), csk("k-alice"))
            .response
            .outcome,
        Outcome::Authorized
    );
    policy.token_protection = TokenProtection::Off;
    let mut m = M::new(policy);
    m.register(UE1);
    m.provision("k-alice", ALICE);
    assert_eq!(
        refused(&m.authorize(UE1, token(ALICE), csk("k-alice"))),
        TokenRejection::BadProtection
    );
    assert_eq!(
        m.authorize(UE1, token(ALICE), Protection::Clear)
            .response
            .outcome,
        Outcome::Authorized
    );
}

// ------------------------------------------------------------------------------ CSK ties

#[test]
fn a_provisioned_csk_opens_only_its_users_tokens_and_only_from_its_first_impu() {
    let mut m = M::post_cr();
    m.register(UE1);
    m.register(UE2);
    m.provision("k-alice", ALICE);
    assert_eq!(
        refused(&m.authorize(UE1, token(ALICE), csk("k-nobody"))),
        TokenRejection::UnknownCsk
    );
    // Bob's token protected under Alice's CSK (the attacker re-protects a token it read).
    assert_eq!(
        refused(&m.authorize(UE1, token(BOB), csk("k-alice"))),
        TokenRejection::CskOtherUser
    );
    assert_eq!(
        m.authorize(UE1, token(ALICE), csk("k-alice"))
            .response
            .outcome,
        Outcome::Authorized
    );
    // The same protected PUBLISH, captured and replayed from another registered IMPU.
    assert_eq!(
        refused(&m.authorize(UE2, token(ALICE), csk("k-alice"))),
        TokenRejection::CskOtherImpu
    );
    assert_eq!(m.m.binding_count(), 1);
}

#[test]
fn ignoring_the_tie_lets_a_captured_protected_publish_bind_another_impu() {
    // The ablation the model uses to show what TS 33.180 5.4 prevents.
    let mut policy = Variant::PostCr.policy();
    policy.csk_tie = CskTie::Ignored;
    let mut m = M::new(policy);
    m.register(UE1);
    m.register(UE2);
    m.provision("k-alice", ALICE);
    m.authorize(UE1, token(ALICE), csk("k-alice"));
    let s = m.authorize(UE2, token(ALICE), csk("k-alice"));
    assert_eq!(s.response.outcome, Outcome::Authorized);
    assert_eq!(m.m.binding_count(), 2);
    // Even another user's CSK opens the token then, and the binding still carries the token's
    // MC service ID (TS 24.379 7.3.3 step 5), never the CSK's user.
    m.provision("k-bob", BOB);
    m.register("sip:ue3@ims.example.org");
    let s = m.authorize("sip:ue3@ims.example.org", token(ALICE), csk("k-bob"));
    assert_eq!(s.response.outcome, Outcome::Authorized);
    let bound: Vec<&McId> = s
        .bindings
        .iter()
        .filter_map(|e| match e {
            BindingEvent::Bound { mc_id, .. } => Some(mc_id),
            _ => None,
        })
        .collect();
    assert_eq!(bound, [&McId::new(ALICE)]);
    let held: Vec<&McId> =
        m.m.bindings()
            .filter(|(k, _)| k.impu == Impu::new("sip:ue3@ims.example.org"))
            .map(|(_, b)| &b.mc_id)
            .collect();
    assert_eq!(
        held,
        [&McId::new(ALICE)],
        "the binding table, not only the event"
    );
}

// ------------------------------------------------------------------------------ CSK uploads

#[test]
fn an_uploaded_csk_is_tied_to_the_signer_and_the_impu_and_never_accepted_twice() {
    let mut m = M::post_cr();
    m.register(UE1);
    m.register(UE2);
    let body = || auth(token(ALICE), csk("2ddd5bf0"));
    let s = m.publish(
        trusted(UE1),
        None,
        body(),
        Some(upload("2ddd5bf0", "m1", 1_000, Some(ALICE))),
    );
    assert_eq!(s.response.outcome, Outcome::Authorized);
    assert_eq!(
        s.csks,
        vec![CskEvent::Accepted {
            csk_id: CskId::new("2ddd5bf0"),
            impu: Impu::new(UE1),
            mc_id: McId::new(ALICE),
        }]
    );
    // The whole PUBLISH replayed from UE2: the I_MESSAGE was seen (RFC 3830 replay).
    let replay = m.publish(
        trusted(UE2),
        None,
        body(),
        Some(upload("2ddd5bf0", "m1", 1_000, Some(ALICE))),
    );
    assert_eq!(refused(&replay), TokenRejection::KeyUploadReplayed);
    // The I_MESSAGE stripped: the CSK is tied to UE1.
    let stripped = m.publish(trusted(UE2), None, body(), None);
    assert_eq!(refused(&stripped), TokenRejection::CskOtherImpu);
    // A fresh upload that tries to take the CSK-ID over for Bob.
    let takeover = m.authorize_uploading(UE2, BOB, "2ddd5bf0", "m2");
    assert_eq!(refused(&takeover), TokenRejection::CskOtherUser);
    assert_eq!(m.m.binding_count(), 1);
}

#[test]
fn a_refused_publish_spends_its_i_message_so_nobody_else_can_use_it() {
    // Found by the model's attacker (docs/model-results-wave3.md): the victim's first PUBLISH
    // arrives before its third-party REGISTER and is refused; the attacker resends it whole from
    // its own registered IMPU. RFC 3830 5.4: the message was received, so it is a replay.
    let mut m = M::post_cr();
    m.register(UE2);
    let body = || auth(token(ALICE), csk("k1"));
    let first = m.publish(
        trusted(UE1),
        None,
        body(),
        Some(upload("k1", "m1", 1_000, Some(ALICE))),
    );
    assert_eq!(
        first.response.outcome,
        Outcome::Forbidden(ForbiddenReason::NotRegistered)
    );
    assert!(m.m.key_messages().any(|id| *id == KeyMessageId::new("m1")));
    // The spend is durable (issue 13): a server killed now and restarted from its store still
    // refuses the replay.
    let mut store = Image::new();
    for c in &first.persisted {
        store.apply_change(c);
    }
    let mut restarted = Machine::new(m.m.policy().clone());
    restarted.handle(UnixTime(m.now), Input::Load(Box::new(store.snapshot())));
    assert!(restarted
        .key_messages()
        .any(|id| *id == KeyMessageId::new("m1")));
    let replay = m.publish(
        trusted(UE2),
        None,
        body(),
        Some(upload("k1", "m1", 1_000, Some(ALICE))),
    );
    assert_eq!(refused(&replay), TokenRejection::KeyUploadReplayed);
    assert_eq!(m.m.binding_count(), 0);
    // An untrusted source spends nothing (it could burn a victim's message otherwise).
    let mut m = M::post_cr();
    m.register(UE1);
    let forged = m.publish(
        AssertedIdentity::Untrusted,
        None,
        body(),
        Some(upload("k1", "m1", 1_000, Some(ALICE))),
    );
    assert_eq!(forged.response.status(), 403);
    assert_eq!(m.m.key_messages().count(), 0);
    let ok = m.publish(
        trusted(UE1),
        None,
        body(),
        Some(upload("k1", "m1", 1_000, Some(ALICE))),
    );
    assert_eq!(ok.response.outcome, Outcome::Authorized);
}

#[test]
fn an_upload_must_be_fresh_verified_and_signed_by_the_tokens_user() {
    let mut m = M::post_cr();
    m.register(UE1);
    let body = || auth(token(ALICE), csk("k1"));
    let skew = Variant::PostCr.policy().key_upload_skew_secs;
    let cases = [
        (
            upload("k1", "a", 1_000 - skew - 1, Some(ALICE)),
            TokenRejection::KeyUploadStale,
        ),
        (
            upload("k1", "b", 1_000 + skew + 1, Some(ALICE)),
            TokenRejection::KeyUploadStale,
        ),
        (
            upload("k1", "c", 1_000, Some(BOB)),
            TokenRejection::KeyUploadWrongSigner,
        ),
        (
            upload("k1", "d", 1_000, None),
            TokenRejection::KeyUploadWrongSigner,
        ),
        (
            KeyUpload::Rejected(KeyUploadFailure::BadSignature),
            TokenRejection::KeyUploadRefused,
        ),
    ];
    let before = m.m.clone();
    for (u, want) in cases {
        let s = m.publish(trusted(UE1), None, body(), Some(u.clone()));
        assert_eq!(refused(&s), want, "{u:?}");
    }
    assert_eq!(m.m, before);
    // At the edge of the window it is still fresh.
    let s = m.publish(
        trusted(UE1),
        None,
        body(),
        Some(upload("k1", "e", 1_000 - skew, Some(ALICE))),
    );
    assert_eq!(s.response.outcome, Outcome::Authorized);
}

#[test]
fn a_user_switch_log_off_or_restart_drops_the_users_csk() {
    let mut m = M::post_cr();
    m.register(UE1);
    let s = m.authorize_uploading(UE1, ALICE, "ka", "m1");
    assert_eq!(s.response.outcome, Outcome::Authorized);
    // Bob logs on to the same client (CR 5.1.3.2.1): Alice's CSK goes.
    let s = m.authorize_uploading(UE1, BOB, "kb", "m2");
    assert!(matches!(s.bindings[..], [BindingEvent::Rebound { .. }]));
    assert_eq!(
        s.csks[0],
        CskEvent::Dropped {
            csk_id: CskId::new("ka"),
            cause: CskDropCause::UserSwitch
        }
    );
    // Alice's old protected PUBLISH, delivered late, opens nothing now.
    assert_eq!(
        refused(&m.authorize(UE1, token(ALICE), csk("ka"))),
        TokenRejection::UnknownCsk
    );
    // Bob logs off (Expires: 0, TS 24.379 7.3.5).
    let off = m.log_off(UE1, s.response.etag.clone().unwrap());
    assert_eq!(off.response.outcome, Outcome::Removed);
    assert_eq!(
        off.csks,
        vec![CskEvent::Dropped {
            csk_id: CskId::new("kb"),
            cause: CskDropCause::NoBindingLeft
        }]
    );
    // An uploaded CSK does not survive a restart; a provisioned one does.
    m.provision("kp", ALICE);
    m.authorize_uploading(UE1, ALICE, "kc", "m3");
    let out = m.m.handle(UnixTime(m.now), Input::Restart);
    assert!(out.contains(&Output::Csk(CskEvent::Dropped {
        csk_id: CskId::new("kc"),
        cause: CskDropCause::Restart
    })));
    let left: Vec<&CskId> = m.m.csks().map(|(id, _)| id).collect();
    assert_eq!(left, vec![&CskId::new("kp")]);
}

// ------------------------------------------------------------------------------ replay window

#[test]
fn the_replay_window_is_keyed_by_the_asserted_impu_and_recorded_only_on_a_binding() {
    let mut policy = Variant::PostCr.policy();
    policy.token_protection = TokenProtection::Optional;
    policy.replay_window_secs = 600;
    let mut m = M::new(policy.clone());
    m.register(UE1);
    m.register(UE2);
    let t = || claims(ALICE, "jti-1");
    // An untrusted sender presents the victim's token first: refused, and nothing recorded.
    let s = m.publish(
        AssertedIdentity::Untrusted,
        None,
        auth(t(), Protection::Clear),
        None,
    );
    assert_eq!(
        s.response.outcome,
        Outcome::Forbidden(ForbiddenReason::UntrustedSource)
    );
    // An unregistered IMPU presents it: refused by policy, nothing recorded.
    let s = m.authorize("sip:stranger@ims.example.org", t(), Protection::Clear);
    assert_eq!(
        s.response.outcome,
        Outcome::Forbidden(ForbiddenReason::NotRegistered)
    );
    // The rightful user binds, then re-presents (refresh) the same token: fine.
    assert_eq!(
        m.authorize(UE1, t(), Protection::Clear).response.outcome,
        Outcome::Authorized
    );
    m.now += 300;
    assert_eq!(
        m.authorize(UE1, t(), Protection::Clear).response.outcome,
        Outcome::Authorized
    );
    // Another IMPU within the window (last binding at +300: until +900).
    m.now += 300;
    assert_eq!(
        refused(&m.authorize(UE2, t(), Protection::Clear)),
        TokenRejection::Replayed
    );
    m.now += 299;
    assert_eq!(
        refused(&m.authorize(UE2, t(), Protection::Clear)),
        TokenRejection::Replayed
    );
    m.now += 1;
    assert_eq!(
        m.authorize(UE2, t(), Protection::Clear).response.outcome,
        Outcome::Authorized
    );
    // Without a window, IMPUs are not compared.
    policy.replay_window_secs = 0;
    let mut m = M::new(policy);
    m.register(UE1);
    m.register(UE2);
    m.authorize(UE1, t(), Protection::Clear);
    assert_eq!(
        m.authorize(UE2, t(), Protection::Clear).response.outcome,
        Outcome::Authorized
    );
}

#[test]
fn a_register_borne_token_and_the_same_ues_publish_are_not_a_replay() {
    // ct1-rel18: the UE's REGISTER carries the token, then its own PUBLISH presents it again.
    let mut policy = Variant::Ct1Rel18.policy();
    policy.replay_window_secs = 600;
    let mut m = M::new(policy);
    let s = m.input(Input::ThirdPartyRegister(ThirdPartyRegister {
        target: RegisterTarget::Ours,
        impu: trusted(UE1),
        expires: None,
        services: Some(ServiceSet::only(Service::Mcptt)),
        embedded: vec![(
            Service::Mcptt,
            Authorization {
                token: token(ALICE),
                protection: Protection::Clear,
                client_id: ClientId::new(CLIENT),
                settings: None,
            },
        )],
    }));
    assert_eq!(
        s.response.expires,
        Some(3600),
        "policy default_register_expires"
    );
    assert!(matches!(s.bindings[..], [BindingEvent::Bound { .. }]));
    assert_eq!(
        m.authorize(UE1, token(ALICE), Protection::Clear)
            .response
            .outcome,
        Outcome::Authorized
    );
}

// ------------------------------------------------------------------------------ answers

#[test]
fn from_an_untrusted_source_the_answer_does_not_depend_on_the_body() {
    // The edge does not read an untrusted body; this is why that is sound.
    let bodies = [
        PublishBody::Empty,
        auth(token(ALICE), Protection::Clear),
        auth(token(ALICE), csk("k")),
        PublishBody::SettingsOnly {
            claimed_mc_id: McId::new(ALICE),
            client_id: ClientId::new(CLIENT),
            settings: None,
        },
        PublishBody::UnsupportedMediaType,
        PublishBody::Malformed(MalformedBody::BadInfo),
    ];
    for policy in [Variant::PostCr, Variant::PreCr, Variant::Ct1Rel18] {
        let mut m = M::new(policy.policy());
        m.register(UE1);
        let before = m.m.clone();
        for body in &bodies {
            for upload in [None, Some(upload("k", "m", 1_000, Some(ALICE)))] {
                let s = m.publish(AssertedIdentity::Untrusted, None, body.clone(), upload);
                assert_eq!(
                    s.response.outcome,
                    Outcome::Forbidden(ForbiddenReason::UntrustedSource)
                );
            }
        }
        assert_eq!(m.m, before);
    }
}

#[test]
fn foreign_uris_and_ambiguous_psis_are_answered_by_the_machine() {
    let mut m = M::post_cr();
    let s = m.input(Input::ThirdPartyRegister(ThirdPartyRegister {
        target: RegisterTarget::NotOurs,
        impu: trusted(UE1),
        expires: Some(3600),
        services: None,
        embedded: vec![],
    }));
    assert_eq!(s.response.outcome, Outcome::NotOurResource);
    assert_eq!(s.response.status(), 404);
    assert_eq!(m.m.registrations().count(), 0);
    m.etags += 1;
    let s = m.input(Input::Publish(Publish {
        target: PublishTarget::AmbiguousPsi,
        event: EventPackage::PocSettings,
        impu: trusted(UE1),
        if_match: IfMatch::Absent,
        expires: None,
        body: PublishBody::Empty,
        key_upload: None,
        fresh_etag: ETag::new("x"),
    }));
    assert_eq!(s.response.status(), 400);
    assert_eq!(
        s.response.outcome.reason_phrase(),
        Some("Request-URI is a PSI shared by several MC services and nothing names one")
    );
}

#[test]
fn a_settings_only_publish_for_an_unbound_impu_is_404_141_registered_or_not() {
    // TS 24.379 7.3.4: "no MC service ID bound to this identity".
    for register in [false, true] {
        let mut m = M::post_cr();
        if register {
            m.register(UE1);
        }
        let s = m.publish(
            trusted(UE1),
            None,
            PublishBody::SettingsOnly {
                claimed_mc_id: McId::new(ALICE),
                client_id: ClientId::new(CLIENT),
                settings: None,
            },
            None,
        );
        assert_eq!(
            s.response.outcome,
            Outcome::UserUnknown,
            "registered: {register}"
        );
        assert_eq!(
            s.response.warning(),
            Some(Warning::Mc(McWarning::UserUnknown))
        );
    }
}

#[test]
fn a_token_from_an_unregistered_impu_gets_403_naming_the_policy() {
    let mut m = M::post_cr();
    m.provision("k", ALICE);
    let s = m.authorize(UE1, token(ALICE), csk("k"));
    assert_eq!(s.response.status(), 403);
    let w = s.response.warning().expect("a Warning saying why");
    assert_eq!(w.mc_code(), None);
    assert!(
        w.text().starts_with("registration_required"),
        "{}",
        w.text()
    );
}

#[test]
fn after_a_restart_a_refresh_gets_412_and_the_ue_recovers_by_publishing_again() {
    // Dossier Q-15: 412 tells the client to send an initial PUBLISH.
    let mut m = M::post_cr();
    m.register(UE1);
    m.provision("k", ALICE);
    let s = m.authorize(UE1, token(ALICE), csk("k"));
    let etag = s.response.etag.unwrap();
    m.m.handle(UnixTime(m.now), Input::Restart);
    let refresh = m.publish(trusted(UE1), Some(&etag), PublishBody::Empty, None);
    assert_eq!(refresh.response.outcome, Outcome::ConditionalRequestFailed);
    // The initial PUBLISH needs the registration the restart lost: the S-CSCF's next
    // third-party REGISTER restores it.
    assert_eq!(
        m.authorize(UE1, token(ALICE), csk("k")).response.outcome,
        Outcome::Forbidden(ForbiddenReason::NotRegistered)
    );
    m.register(UE1);
    assert_eq!(
        m.authorize(UE1, token(ALICE), csk("k")).response.outcome,
        Outcome::Authorized
    );
}

#[test]
fn a_new_upload_replaces_only_the_older_upload_of_the_same_impu_and_user() {
    let mut m = M::post_cr();
    m.register(UE1);
    m.register(UE2);
    // Alice's provisioned CSK, tied to UE1 by its first use.
    m.provision("kp", ALICE);
    let s = m.authorize(UE1, token(ALICE), csk("kp"));
    assert_eq!(s.response.outcome, Outcome::Authorized);
    let up = |m: &mut M, impu: &str, user: &str, id: &str, msg: &str| {
        let s = m.publish(
            trusted(impu),
            None,
            auth(token(user), csk(id)),
            Some(upload(id, msg, 1_000, Some(user))),
        );
        assert_eq!(s.response.outcome, Outcome::Authorized, "{id}");
        s
    };
    up(&mut m, UE1, ALICE, "k1", "m1");
    // Same user on another IMPU, and another user: other pairs.
    up(&mut m, UE2, ALICE, "k2", "m2");
    // Alice uploads again on UE1: only her older upload on UE1 goes.
    let s = up(&mut m, UE1, ALICE, "k3", "m3");
    assert!(s.csks.contains(&CskEvent::Dropped {
        csk_id: CskId::new("k1"),
        cause: CskDropCause::Replaced
    }));
    assert_eq!(
        s.csks
            .iter()
            .filter(|e| matches!(e, CskEvent::Dropped { .. }))
            .count(),
        1,
        "{:?}",
        s.csks
    );
    let left: Vec<&str> = m.m.csks().map(|(id, _)| id.as_str()).collect();
    assert_eq!(left, vec!["k2", "k3", "kp"]);
}

#[test]
fn the_replay_tables_count_what_they_hold_and_forgetting_dead_messages_keeps_the_rest() {
    // RFC 3830 5.4: the I_MESSAGE replay cache, as the metrics see it (`replay_entries`), and the
    // checker's canonicalization (`forget_key_messages`): forgetting messages that can never
    // arrive again keeps every other one, and those still lapse at their time.
    let mut m = M::new(Policy {
        replay_window_secs: 600,
        ..Variant::PostCr.policy()
    });
    assert_eq!(m.m.replay_entries(), (0, 0));
    // Two refused PUBLISHes (not registered) spend their I_MESSAGEs and own no token.
    for message in ["m1", "m2"] {
        let step = m.publish(
            trusted(UE1),
            None,
            auth(token(ALICE), csk("k1")),
            Some(upload("k1", message, 1_000, Some(ALICE))),
        );
        assert_eq!(step.response.status(), 403);
    }
    assert_eq!(m.m.replay_entries(), (2, 0));
    // With a replay window, a binding records its token's owner (dossier Q-6).
    m.register(UE2);
    let ok = m.authorize_uploading(UE2, ALICE, "k3", "m3");
    assert_eq!(ok.response.outcome, Outcome::Authorized);
    let (messages, owners) = m.m.replay_entries();
    assert_eq!(owners, 1);
    assert!(messages >= 2, "{messages}");
    let held = |m: &M| {
        let mut ids: Vec<String> =
            m.m.key_messages()
                .map(|id| id.as_str().to_owned())
                .collect();
        ids.sort();
        ids
    };
    let before = held(&m);
    m.m.forget_key_messages(|id| id.as_str() == "m1");
    let after = held(&m);
    assert!(!after.contains(&"m1".to_owned()), "{after:?}");
    assert_eq!(after.len(), before.len() - 1, "{before:?} -> {after:?}");
    assert_eq!(m.m.replay_entries().0, after.len());
    // What remains still lapses: a day later nothing of it is held.
    let later = UnixTime(m.now + 86_400);
    m.m.handle(later, Input::Tick);
    assert_eq!(m.m.key_messages().count(), 0, "{:?}", held(&m));
}

#[test]
fn a_lab_restart_forgets_the_replay_tables_in_the_store_too() {
    // `Input::Restart` loses the volatile state, and the store must lose it with it (issue 13):
    // with anything remembered (here one I_MESSAGE and one token owner) the restart journals
    // `ClearReplay`; with nothing remembered it journals none.
    let persisted = |out: Vec<Output>| -> Vec<Change> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Persist(p) => Some(p.changes),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let mut m = M::new(Policy {
        replay_window_secs: 600,
        ..Variant::PostCr.policy()
    });
    m.register(UE2);
    let ok = m.authorize_uploading(UE2, ALICE, "k3", "m3");
    assert_eq!(ok.response.outcome, Outcome::Authorized);
    assert_eq!(m.m.replay_entries(), (1, 1));
    let changes = persisted(m.m.handle(UnixTime(m.now), Input::Restart));
    assert!(changes.contains(&Change::ClearReplay), "{changes:?}");
    assert_eq!(m.m.replay_entries(), (0, 0));
    // Only one of the two tables holding something (no replay window: no token owners).
    let mut m = M::post_cr();
    m.register(UE2);
    m.authorize_uploading(UE2, ALICE, "k3", "m3");
    assert_eq!(m.m.replay_entries(), (1, 0));
    let changes = persisted(m.m.handle(UnixTime(m.now), Input::Restart));
    assert!(changes.contains(&Change::ClearReplay), "{changes:?}");
    let mut fresh = M::post_cr();
    let changes = persisted(fresh.m.handle(UnixTime(fresh.now), Input::Restart));
    assert!(!changes.contains(&Change::ClearReplay), "{changes:?}");
}

#[test]
fn a_csk_goes_only_with_the_last_binding_of_its_impu_and_user_and_a_provisioned_one_stays() {
    // TS 33.180 5.4: a CSK is tied to (IMPU, MC service ID). It is released when no binding of
    // that pair is left, not before (another client of the same user on the same IMPU still
    // uses it), and only its own (the same user's CSK tied to another IMPU stays). A
    // provisioned CSK stands for a device: the end of a binding leaves it.
    let held = |m: &M| -> Vec<String> {
        let mut ids: Vec<String> = m.m.csks().map(|(id, _)| id.as_str().to_owned()).collect();
        ids.sort();
        ids
    };
    let mut m = M::post_cr();
    m.register(UE1);
    m.register(UE2);
    let first = m.authorize_uploading(UE1, ALICE, "k1", "m1");
    assert_eq!(first.response.outcome, Outcome::Authorized);
    // A second client of Alice on UE1, under the same CSK.
    let second = m.publish(
        trusted(UE1),
        None,
        PublishBody::Authorization(Authorization {
            token: token(ALICE),
            protection: csk("k1"),
            client_id: ClientId::new("urn:uuid:c2"),
            settings: None,
        }),
        None,
    );
    assert_eq!(second.response.outcome, Outcome::Authorized);
    // Alice on UE2 with her own uploaded CSK.
    let other = m.authorize_uploading(UE2, ALICE, "k2", "m2");
    assert_eq!(other.response.outcome, Outcome::Authorized);
    assert_eq!(held(&m), ["k1", "k2"]);

    let off = m.log_off(UE1, first.response.etag.clone().unwrap());
    assert_eq!(off.response.outcome, Outcome::Removed);
    assert!(
        off.csks.is_empty(),
        "the second client still uses k1: {:?}",
        off.csks
    );
    assert_eq!(held(&m), ["k1", "k2"]);
    let off = m.log_off(UE1, second.response.etag.clone().unwrap());
    assert_eq!(
        off.csks,
        vec![CskEvent::Dropped {
            csk_id: CskId::new("k1"),
            cause: CskDropCause::NoBindingLeft
        }]
    );
    assert_eq!(held(&m), ["k2"], "Alice's CSK on UE2 is not UE1's");

    // A provisioned CSK outlives the binding that used it.
    let mut m = M::post_cr();
    m.register(UE1);
    m.provision("kp", ALICE);
    let bound = m.authorize(UE1, token(ALICE), csk("kp"));
    assert_eq!(bound.response.outcome, Outcome::Authorized);
    let off = m.log_off(UE1, bound.response.etag.clone().unwrap());
    assert_eq!(off.response.outcome, Outcome::Removed);
    assert!(off.csks.is_empty(), "{:?}", off.csks);
    assert_eq!(held(&m), ["kp"]);
}

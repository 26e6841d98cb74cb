//! The negative catalogue of access-token validation (one test per rejection reason, TS 33.180
//! B.11/B.12), positive tests per allowed algorithm, and the verified-token cache.

use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use mcx_authz::token::{
    LabIdms, LabKey, MintRequest, TokenConfigError, Validator, ValidatorConfig, LAB_ISSUER,
};
use mcx_model::{Service, ServiceSet, TokenRejection, TokenVerdict, UnixTime};
use serde_json::json;

/// 2027-01-15: a fixed "now" for every test.
const NOW: UnixTime = UnixTime(1_800_000_000);
const ALICE: &str = "sip:alice@example.org";

fn lab() -> LabIdms {
    LabIdms::ephemeral(&[Algorithm::ES256]).expect("lab")
}

fn validator(lab: &LabIdms) -> Validator {
    Validator::new(lab.validator_config()).expect("validator")
}

fn validator_with(lab: &LabIdms, f: impl FnOnce(&mut ValidatorConfig)) -> Validator {
    let mut cfg = lab.validator_config();
    f(&mut cfg);
    Validator::new(cfg).expect("validator")
}

fn req() -> MintRequest {
    MintRequest::all_services(ALICE, NOW)
}

fn rejected(v: &TokenVerdict) -> TokenRejection {
    match v {
        TokenVerdict::Rejected(r) => *r,
        TokenVerdict::Verified(c) => panic!("expected a rejection, got {c:?}"),
    }
}

fn es256(lab: &LabIdms) -> &LabKey {
    lab.key(Algorithm::ES256).expect("ES256 key")
}

/// Claims of a valid token at NOW, as JSON, for hand-built tokens.
fn claims() -> serde_json::Value {
    req().claims(LAB_ISSUER)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcx-token-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

// ---------------------------------------------------------------- positive

#[test]
fn a_minted_token_verifies_with_exactly_its_claims() {
    let lab = lab();
    let v = validator(&lab);
    let mut r = req();
    r.jti = Some("jti-1".into());
    r.mcdata_id = None;
    let t = lab.mint(&r).unwrap();
    let TokenVerdict::Verified(c) = v.validate(&t, NOW) else {
        panic!("not verified")
    };
    assert_eq!(c.mcptt_id.as_ref().map(|m| m.as_str()), Some(ALICE));
    assert_eq!(c.mcvideo_id.as_ref().map(|m| m.as_str()), Some(ALICE));
    assert_eq!(c.mcdata_id, None);
    assert_eq!(
        c.scopes,
        [Service::Mcptt, Service::Mcvideo]
            .into_iter()
            .collect::<ServiceSet>()
    );
    assert_eq!(c.exp, UnixTime(NOW.0 + 3600));
    assert_eq!(c.token_id.as_str(), "jti-1");
}

#[test]
fn token_id_is_the_sha256_of_the_token_without_jti() {
    let lab = lab();
    let v = validator(&lab);
    let mut r = req();
    r.no_jti = true;
    let t = lab.mint(&r).unwrap();
    let TokenVerdict::Verified(c) = v.validate(&t, NOW) else {
        panic!("not verified")
    };
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(c.token_id.as_str(), hex);
}

#[test]
fn every_default_algorithm_verifies() {
    let algs = [
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::EdDSA,
    ];
    let lab = LabIdms::ephemeral(&algs).unwrap();
    let v = validator(&lab);
    for alg in algs {
        let mut r = req();
        r.alg = Some(alg);
        let t = lab.mint(&r).unwrap();
        let verdict = v.validate(&t, NOW);
        assert!(
            matches!(&verdict, TokenVerdict::Verified(c) if c.scopes == ServiceSet::ALL),
            "{alg:?}: {verdict:?}"
        );
    }
    assert_eq!(v.signature_checks(), 4);
}

#[test]
fn a_pem_public_key_without_kid_is_trusted() {
    let lab = LabIdms::ephemeral(&[Algorithm::EdDSA]).unwrap();
    let key = lab.key(Algorithm::EdDSA).unwrap();
    let dir = temp_dir("pem");
    let pem = dir.join("idms.pub.pem");
    std::fs::write(&pem, key.public_pem()).unwrap();
    let v = Validator::new(ValidatorConfig {
        public_key_pem: Some(pem),
        issuer: Some(LAB_ISSUER.into()),
        ..ValidatorConfig::default()
    })
    .unwrap();
    let t = key
        .sign_jws(&json!({"alg": "EdDSA", "typ": "JWT"}), &claims())
        .unwrap();
    assert!(matches!(v.validate(&t, NOW), TokenVerdict::Verified(_)));
    // And the same for an HS256 token whose secret is that PEM: refused.
    let forged = hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(),
        key.public_pem().as_bytes(),
    );
    assert_eq!(
        rejected(&v.validate(&forged, NOW)),
        TokenRejection::AlgorithmNotAllowed
    );
}

#[test]
fn a_jwks_file_is_trusted() {
    let lab = lab();
    let dir = temp_dir("jwksfile");
    let f = dir.join("jwks.json");
    std::fs::write(&f, lab.jwks().to_string()).unwrap();
    let v = Validator::new(ValidatorConfig {
        jwks_file: Some(f),
        issuer: Some(LAB_ISSUER.into()),
        ..ValidatorConfig::default()
    })
    .unwrap();
    assert!(matches!(
        v.validate(&lab.mint(&req()).unwrap(), NOW),
        TokenVerdict::Verified(_)
    ));
}

#[test]
fn the_default_config_trusts_the_lab_idms_in_the_data_dir() {
    let dir = temp_dir("default");
    let v = Validator::new(ValidatorConfig {
        data_dir: dir.clone(),
        ..ValidatorConfig::default()
    })
    .unwrap();
    // The validator made the lab key on first use; mint with it.
    assert!(dir.join("idms-es256.pem").exists() && dir.join("jwks.json").exists());
    let lab = LabIdms::open_or_create(&dir).unwrap();
    assert!(matches!(
        v.validate(&lab.mint(&req()).unwrap(), NOW),
        TokenVerdict::Verified(_)
    ));
    // A real IdMS configured: the lab key is no longer trusted, and an issuer is required.
    let other = LabIdms::ephemeral(&[Algorithm::ES256]).unwrap();
    let err = Validator::new(ValidatorConfig {
        data_dir: dir.clone(),
        jwks_json: Some(other.jwks().to_string()),
        ..ValidatorConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, TokenConfigError::MissingIssuer), "{err}");
    let real = Validator::new(ValidatorConfig {
        data_dir: dir,
        jwks_json: Some(other.jwks().to_string()),
        issuer: Some(LAB_ISSUER.into()),
        ..ValidatorConfig::default()
    })
    .unwrap();
    assert_eq!(
        rejected(&real.validate(&lab.mint(&req()).unwrap(), NOW)),
        TokenRejection::UnknownKey
    );
}

#[test]
fn the_config_maps_from_a_toml_token_table() {
    let text = r#"
        [token]
        jwks_url = "https://idms.example.org/realms/mc/protocol/openid-connect/certs"
        issuer = "https://idms.example.org/realms/mc"
        audience = ["mcx-server"]
        algorithms = ["RS256", "ES256"]
        leeway_secs = 10
        accept_rel13_scope = true
        [token.scopes]
        mcptt = "3gpp:mc:ptt_service"
    "#;
    #[derive(serde::Deserialize)]
    struct File {
        token: ValidatorConfig,
    }
    let cfg: File = toml::from_str(text).unwrap();
    let cfg = cfg.token;
    assert_eq!(
        cfg.issuer.as_deref(),
        Some("https://idms.example.org/realms/mc")
    );
    assert_eq!(cfg.audience, ["mcx-server"]);
    assert_eq!(cfg.leeway_secs, 10);
    assert!(cfg.accept_rel13_scope);
    assert_eq!(cfg.scopes.mcvideo, "3gpp:mc:video_service");
    assert!(!cfg.trusts_lab());
    assert!(toml::from_str::<File>("[token]\nisuer = \"typo\"").is_err());
    // The replay window moved to the machine ([policy] replay_window_secs): an old config
    // that still sets it under [token] is refused, not silently ignored.
    assert!(toml::from_str::<File>("[token]\nreplay_window_secs = 600").is_err());
}

// ---------------------------------------------------------------- negative catalogue

#[test]
fn expired() {
    let lab = lab();
    let v = validator(&lab);
    let mut r = req();
    r.exp = Some(UnixTime(NOW.0 - 30)); // exactly the leeway ago
    assert_eq!(
        rejected(&v.validate(&lab.mint(&r).unwrap(), NOW)),
        TokenRejection::Expired
    );
    r.exp = Some(UnixTime(NOW.0 - 29)); // inside the leeway
    r.iat = Some(UnixTime(NOW.0 - 3600));
    assert!(matches!(
        v.validate(&lab.mint(&r).unwrap(), NOW),
        TokenVerdict::Verified(_)
    ));
}

#[test]
fn expired_in_2017_with_a_fixed_signature() {
    let jwks = include_str!("fixtures/token/expired-2017.jwt");
    let token = jwks.trim();
    let v = Validator::new(ValidatorConfig {
        jwks_json: Some(include_str!("fixtures/token/fixed-es256.jwks.json").into()),
        issuer: Some(LAB_ISSUER.into()),
        ..ValidatorConfig::default()
    })
    .unwrap();
    assert_eq!(rejected(&v.validate(token, NOW)), TokenRejection::Expired);
    // The signature itself is good: at its time (2017-03-01 00:01:40) the token was valid.
    assert!(matches!(
        v.validate(token, UnixTime(1_488_326_500)),
        TokenVerdict::Verified(_)
    ));
}

#[test]
fn not_yet_valid() {
    let lab = lab();
    let v = validator(&lab);
    let mut r = req();
    r.nbf = Some(UnixTime(NOW.0 + 31));
    assert_eq!(
        rejected(&v.validate(&lab.mint(&r).unwrap(), NOW)),
        TokenRejection::NotYetValid
    );
    let mut r = req();
    r.iat = Some(UnixTime(NOW.0 + 600));
    assert_eq!(
        rejected(&v.validate(&lab.mint(&r).unwrap(), NOW)),
        TokenRejection::NotYetValid
    );
    let mut r = req();
    r.nbf = Some(UnixTime(NOW.0 + 30)); // within the leeway
    assert!(matches!(
        v.validate(&lab.mint(&r).unwrap(), NOW),
        TokenVerdict::Verified(_)
    ));
}

#[test]
fn bad_signature_from_another_token() {
    let lab = lab();
    let v = validator(&lab);
    let a = lab.mint(&req()).unwrap();
    let mut r = req();
    r.mcptt_id = Some("sip:mallory@example.org".into());
    let b = lab.mint(&r).unwrap();
    // b's header and claims with a's (well-formed, same-key) signature.
    let forged = format!(
        "{}.{}",
        b.rsplit_once('.').unwrap().0,
        a.rsplit_once('.').unwrap().1
    );
    assert_eq!(
        rejected(&v.validate(&forged, NOW)),
        TokenRejection::BadSignature
    );
}

#[test]
fn bad_signature_from_another_key_with_the_trusted_kid() {
    let lab = lab();
    let v = validator(&lab);
    let other = LabKey::generate(Algorithm::ES256).unwrap();
    let t = other.sign_jws(&es256(&lab).header(), &claims()).unwrap();
    assert_eq!(rejected(&v.validate(&t, NOW)), TokenRejection::BadSignature);
}

#[test]
fn unknown_key() {
    let lab = lab();
    let v = validator(&lab);
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "no-such-key"});
    let t = es256(&lab).sign_jws(&header, &claims()).unwrap();
    assert_eq!(rejected(&v.validate(&t, NOW)), TokenRejection::UnknownKey);
    // Without a kid and with two ES256 keys trusted, the key is ambiguous: refused.
    let other = LabIdms::ephemeral(&[Algorithm::ES256]).unwrap();
    let mut keys = lab.jwks()["keys"].as_array().unwrap().clone();
    keys.extend(other.jwks()["keys"].as_array().unwrap().iter().cloned());
    let mut cfg = lab.validator_config();
    cfg.jwks_json = Some(json!({ "keys": keys }).to_string());
    let v2 = Validator::new(cfg).unwrap();
    let no_kid = json!({"alg": "ES256"});
    let t = es256(&lab).sign_jws(&no_kid, &claims()).unwrap();
    assert_eq!(rejected(&v2.validate(&t, NOW)), TokenRejection::UnknownKey);
    // With one key of the family, a token without kid is matched to it.
    assert!(matches!(v.validate(&t, NOW), TokenVerdict::Verified(_)));
}

#[test]
fn alg_none_is_never_accepted() {
    let lab = lab();
    let v = validator(&lab);
    for alg in ["none", "None", "NONE", ""] {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims().to_string());
        for t in [format!("{h}.{c}."), format!("{h}.{c}.AAAA")] {
            assert_eq!(
                rejected(&v.validate(&t, NOW)),
                TokenRejection::AlgorithmNotAllowed,
                "{alg}"
            );
        }
    }
    assert!(matches!(
        Validator::new(ValidatorConfig {
            algorithms: vec!["none".into()],
            ..lab.validator_config()
        }),
        Err(TokenConfigError::BadAlgorithm(_))
    ));
}

fn hs256(header: &serde_json::Value, claims: &serde_json::Value, secret: &[u8]) -> String {
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[test]
fn hs256_with_the_public_key_as_secret() {
    let lab = lab();
    let v = validator(&lab);
    let key = es256(&lab);
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()});
    // Every form of the public key an attacker might try as the HMAC secret.
    let jwk = key.jwk().to_string();
    let x = key.jwk()["x"].as_str().unwrap().to_owned();
    for secret in [
        key.public_pem().into_bytes(),
        jwk.into_bytes(),
        x.into_bytes(),
    ] {
        let t = hs256(&header, &claims(), &secret);
        assert_eq!(
            rejected(&v.validate(&t, NOW)),
            TokenRejection::AlgorithmNotAllowed
        );
    }
    assert!(matches!(
        Validator::new(ValidatorConfig {
            algorithms: vec!["HS256".into()],
            ..lab.validator_config()
        }),
        Err(TokenConfigError::BadAlgorithm(_))
    ));
    assert_eq!(v.signature_checks(), 0);
}

#[test]
fn algorithm_not_allowed_or_not_fitting_the_key() {
    let lab = LabIdms::ephemeral(&[Algorithm::ES256, Algorithm::RS256]).unwrap();
    // ES256 is not on this allow-list.
    let v = validator_with(&lab, |c| c.algorithms = vec!["RS256".into()]);
    let t = lab.mint(&req()).unwrap();
    assert_eq!(
        rejected(&v.validate(&t, NOW)),
        TokenRejection::AlgorithmNotAllowed
    );
    // RS256 in the header, naming the EC key: the alg does not fit the key.
    let v = validator(&lab);
    let rsa = lab.key(Algorithm::RS256).unwrap();
    let header = json!({"alg": "RS256", "kid": es256(&lab).kid()});
    let t = rsa.sign_jws(&header, &claims()).unwrap();
    assert_eq!(
        rejected(&v.validate(&t, NOW)),
        TokenRejection::AlgorithmNotAllowed
    );
    // PS256 in the header naming a key whose JWK pins RS256.
    let header = json!({"alg": "PS256", "kid": rsa.kid()});
    let t = rsa.sign_jws(&header, &claims()).unwrap();
    assert_eq!(
        rejected(&v.validate(&t, NOW)),
        TokenRejection::AlgorithmNotAllowed
    );
}

#[test]
fn wrong_issuer() {
    let lab = lab();
    let v = validator(&lab);
    let mut r = req();
    r.iss = Some("https://evil.example".into());
    assert_eq!(
        rejected(&v.validate(&lab.mint(&r).unwrap(), NOW)),
        TokenRejection::WrongIssuer
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    let t = es256(&lab).sign_jws(&es256(&lab).header(), &c).unwrap();
    assert_eq!(rejected(&v.validate(&t, NOW)), TokenRejection::WrongIssuer);
}

#[test]
fn wrong_audience() {
    let lab = lab();
    let v = validator_with(&lab, |c| c.audience = vec!["mcx.example.org".into()]);
    let mut r = req();
    r.aud = vec!["kms.example.org".into()];
    assert_eq!(
        rejected(&v.validate(&lab.mint(&r).unwrap(), NOW)),
        TokenRejection::WrongAudience
    );
    r.aud = vec![];
    assert_eq!(
        rejected(&v.validate(&lab.mint(&r).unwrap(), NOW)),
        TokenRejection::WrongAudience
    );
    r.aud = vec!["kms.example.org".into(), "mcx.example.org".into()];
    assert!(matches!(
        v.validate(&lab.mint(&r).unwrap(), NOW),
        TokenVerdict::Verified(_)
    ));
}

#[test]
fn missing_scope_and_the_rel13_scope() {
    let lab = lab();
    let v = validator(&lab);
    let mut r = req();
    r.scopes = Some(vec![
        "openid".into(),
        "3gpp:mc:ptt_key_management_service".into(),
    ]);
    assert_eq!(
        rejected(&v.validate(&lab.mint(&r).unwrap(), NOW)),
        TokenRejection::MissingScope
    );
    // Rel-13 scope, not enabled: no MC scope at all.
    r.scopes = Some(vec!["openid".into(), "3gpp:mcptt:ptt_server".into()]);
    let rel13 = lab.mint(&r).unwrap();
    assert_eq!(
        rejected(&v.validate(&rel13, NOW)),
        TokenRejection::MissingScope
    );
    // Enabled: it grants MCPTT only.
    let v13 = validator_with(&lab, |c| c.accept_rel13_scope = true);
    let verdict = v13.validate(&rel13, NOW);
    let TokenVerdict::Verified(c) = &verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(c.scopes, ServiceSet::only(Service::Mcptt));
    // The per-service check the machine makes, as `token verify --service` shows it.
    assert!(Validator::for_service(&verdict, Service::Mcptt).is_ok());
    assert_eq!(
        Validator::for_service(&verdict, Service::Mcvideo).unwrap_err(),
        TokenRejection::MissingScope
    );
    // The scope claim as an array (some IdMSs) works too.
    let mut c = claims();
    c["scope"] = json!(["openid", "3gpp:mc:data_service"]);
    let t = es256(&lab).sign_jws(&es256(&lab).header(), &c).unwrap();
    assert!(
        matches!(v.validate(&t, NOW), TokenVerdict::Verified(c) if c.scopes == ServiceSet::only(Service::Mcdata))
    );
}

#[test]
fn missing_mc_service_id_claim() {
    let lab = lab();
    let v = validator(&lab);
    let mut r = req();
    r.mcptt_id = None;
    r.mcvideo_id = None;
    r.mcdata_id = None;
    r.scopes = Some(vec!["3gpp:mc:ptt_service".into()]);
    assert_eq!(
        rejected(&v.validate(&lab.mint(&r).unwrap(), NOW)),
        TokenRejection::MissingMcId
    );
    // An MCVideo ID only, with the MCPTT scope: verified; the machine refuses it for MCPTT.
    r.mcvideo_id = Some(ALICE.into());
    let verdict = v.validate(&lab.mint(&r).unwrap(), NOW);
    assert_eq!(
        Validator::for_service(&verdict, Service::Mcptt).unwrap_err(),
        TokenRejection::MissingMcId
    );
}

#[test]
fn malformed() {
    let lab = lab();
    let v = validator(&lab);
    let key = es256(&lab);
    let good = lab.mint(&req()).unwrap();
    let (h, rest) = good.split_once('.').unwrap();
    let cases = [
        String::new(),
        "abc".into(),
        "a.b".into(),
        format!("{good}.AAAA"),
        format!("!!.{rest}"),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(r#"{"kid":"x"}"#)),
        format!("{h}.{rest}").replace('.', ".."),
    ];
    for t in &cases {
        assert_eq!(
            rejected(&v.validate(t, NOW)),
            TokenRejection::Malformed,
            "{t:?}"
        );
    }
    // Validly signed, but the payload is not a claims object, or its claims have wrong types,
    // or a `crit` header names an extension we do not understand, or `exp` is missing.
    let sign_raw = |header: &serde_json::Value, payload: &[u8]| {
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload)
        );
        format!(
            "{msg}.{}",
            URL_SAFE_NO_PAD.encode(key.sign(msg.as_bytes()).unwrap())
        )
    };
    let mut wrong_type = claims();
    wrong_type["mcptt_id"] = json!(42);
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut neg_exp = claims();
    neg_exp["exp"] = json!(-5);
    let mut crit_header = key.header();
    crit_header["crit"] = json!(["b64"]);
    let signed = [
        sign_raw(&key.header(), b"[1,2,3]"),
        sign_raw(&key.header(), b"\xff\xfe"),
        sign_raw(&key.header(), wrong_type.to_string().as_bytes()),
        sign_raw(&key.header(), no_exp.to_string().as_bytes()),
        sign_raw(&key.header(), neg_exp.to_string().as_bytes()),
        sign_raw(&crit_header, claims().to_string().as_bytes()),
    ];
    for t in &signed {
        assert_eq!(
            rejected(&v.validate(t, NOW)),
            TokenRejection::Malformed,
            "{t}"
        );
    }
}

#[test]
fn too_large() {
    let lab = lab();
    let v = validator_with(&lab, |c| c.max_token_bytes = 2048);
    let mut c = claims();
    c["padding"] = json!("x".repeat(2048));
    let t = es256(&lab).sign_jws(&es256(&lab).header(), &c).unwrap();
    assert_eq!(rejected(&v.validate(&t, NOW)), TokenRejection::TooLarge);
    assert_eq!(v.signature_checks(), 0, "refused before any crypto");
    // A large but allowed token passes.
    c["padding"] = json!("x".repeat(1000));
    let t = es256(&lab).sign_jws(&es256(&lab).header(), &c).unwrap();
    assert!(matches!(v.validate(&t, NOW), TokenVerdict::Verified(_)));
}

#[test]
fn every_machine_independent_reason_is_in_the_catalogue() {
    // The reasons above, one test each. The rest are the machine's own: protection and CSKs
    // (TS 33.180 clause 9, 5.4), the replay window (Q-6) and the device limit (Q-18); the
    // machine's tests cover them.
    let validator_reasons = TokenRejection::ALL
        .iter()
        .filter(|r| {
            !matches!(
                r,
                TokenRejection::Unprotected
                    | TokenRejection::DeviceLimit
                    | TokenRejection::Replayed
                    | TokenRejection::BadProtection
                    | TokenRejection::UnknownCsk
                    | TokenRejection::CskOtherUser
                    | TokenRejection::CskOtherImpu
                    | TokenRejection::KeyUploadRefused
                    | TokenRejection::KeyUploadReplayed
                    | TokenRejection::KeyUploadStale
                    | TokenRejection::KeyUploadWrongSigner
            )
        })
        .count();
    assert_eq!(validator_reasons, 11);
}

// ---------------------------------------------------------------- cache

#[test]
fn three_presentations_cost_one_signature_check() {
    let lab = lab();
    let v = validator(&lab);
    let t = lab.mint(&req()).unwrap();
    let verdicts: Vec<_> = (0..3).map(|_| v.validate(&t, NOW)).collect();
    assert!(verdicts
        .iter()
        .all(|x| matches!(x, TokenVerdict::Verified(_))));
    assert_eq!(verdicts[0], verdicts[2]);
    assert_eq!(v.signature_checks(), 1);
    assert_eq!(v.stats().cached_tokens, 1);
    // Whitespace around the token (from XML text) is the same token.
    assert!(matches!(
        v.validate(&format!("\n  {t}\n"), NOW),
        TokenVerdict::Verified(_)
    ));
    assert_eq!(v.signature_checks(), 1);
}

#[test]
fn cache_entries_are_dropped_at_the_tokens_expiry() {
    let lab = lab();
    let v = validator(&lab);
    let t = lab.mint(&req()).unwrap();
    assert!(matches!(v.validate(&t, NOW), TokenVerdict::Verified(_)));
    let expired_at = NOW.plus(3600 + 30);
    assert!(matches!(
        v.validate(&t, UnixTime(expired_at.0 - 1)),
        TokenVerdict::Verified(_)
    ));
    assert_eq!(
        rejected(&v.validate(&t, expired_at)),
        TokenRejection::Expired
    );
    assert_eq!(v.stats().cached_tokens, 0);
    assert_eq!(v.signature_checks(), 1);
    // Inserting another token also sweeps expired ones.
    let short = {
        let mut r = req();
        r.expires_in = Some(10);
        lab.mint(&r).unwrap()
    };
    assert!(matches!(v.validate(&short, NOW), TokenVerdict::Verified(_)));
    assert!(matches!(
        v.validate(&t, NOW.plus(100)),
        TokenVerdict::Verified(_)
    ));
    assert_eq!(v.stats().cached_tokens, 1);
}

#[test]
fn a_cached_token_is_still_not_valid_before_its_time() {
    let lab = lab();
    let v = validator(&lab);
    let t = lab.mint(&req()).unwrap();
    assert!(matches!(v.validate(&t, NOW), TokenVerdict::Verified(_)));
    assert_eq!(
        rejected(&v.validate(&t, UnixTime(NOW.0 - 31))),
        TokenRejection::NotYetValid
    );
}

#[test]
fn the_cache_is_bounded() {
    let lab = lab();
    let v = validator_with(&lab, |c| c.cache_max_entries = 3);
    let tokens: Vec<String> = (0..5u64)
        .map(|i| {
            let mut r = req();
            r.expires_in = Some(1000 + i);
            lab.mint(&r).unwrap()
        })
        .collect();
    for t in &tokens {
        assert!(matches!(v.validate(t, NOW), TokenVerdict::Verified(_)));
    }
    assert_eq!(v.stats().cached_tokens, 3);
    // The soonest-expiring were evicted; the latest three are still cached.
    let before = v.signature_checks();
    for t in &tokens[2..] {
        v.validate(t, NOW);
    }
    assert_eq!(v.signature_checks(), before);
    v.validate(&tokens[0], NOW);
    assert_eq!(v.signature_checks(), before + 1);
}

#[test]
fn the_validator_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Validator>();
    let lab = lab();
    let v = Arc::new(validator(&lab));
    let tokens: Arc<Vec<String>> = Arc::new((0..4).map(|_| lab.mint(&req()).unwrap()).collect());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (v, tokens) = (v.clone(), tokens.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    for t in tokens.iter() {
                        assert!(matches!(v.validate(t, NOW), TokenVerdict::Verified(_)));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Racing threads may each verify a token before it is cached, but never more.
    assert!(
        (4..=16).contains(&v.signature_checks()),
        "{}",
        v.signature_checks()
    );
}

#[test]
fn rejections_are_counted_by_reason() {
    let lab = lab();
    let v = validator(&lab);
    v.validate("abc", NOW);
    v.validate("abc", NOW);
    let mut r = req();
    r.iss = Some("x".into());
    v.validate(&lab.mint(&r).unwrap(), NOW);
    let s = v.stats();
    assert_eq!(s.rejections, vec![("wrong_issuer", 1), ("malformed", 2)]);
}

//! cargo-fuzz target for the access-token path (TS 33.180 B.11/B.12): the validator on arbitrary
//! bytes, and on arbitrary header and claims JSON *signed by a trusted key*, so that the claims
//! reader behind the signature check is reached too.
//!
//! Invariants: nothing panics; a token refused once is refused again (the verified-token cache
//! never turns a refusal into an acceptance); a verdict of `Verified` only ever comes from a
//! signed input; an accepted token's MC service IDs are non-empty.
//!
//! `fuzz/run.sh token 600`.

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use mcx_authz::token::{LabIdms, Validator};
use mcx_model::{TokenVerdict, UnixTime};

const NOW: UnixTime = UnixTime(1_800_000_000);

fn setup() -> &'static (LabIdms, Validator) {
    static S: OnceLock<(LabIdms, Validator)> = OnceLock::new();
    S.get_or_init(|| {
        let lab = LabIdms::ephemeral(&[Algorithm::ES256]).expect("lab key");
        let validator = Validator::new(lab.validator_config()).expect("validator");
        (lab, validator)
    })
}

fuzz_target!(|data: &[u8]| {
    let (lab, validator) = setup();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Arbitrary bytes as the token text: nothing here is signed by a trusted key.
        let token = String::from_utf8_lossy(rest);
        let verdict = validator.validate(&token, NOW);
        assert!(
            !matches!(verdict, TokenVerdict::Verified(_)),
            "an unsigned input was accepted"
        );
    } else {
        // `header \0 claims`, both as given, signed with the lab key.
        let split = rest.iter().position(|&b| b == 0).unwrap_or(0);
        let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
        let header: &[u8] = if header.is_empty() {
            br#"{"alg":"ES256","typ":"JWT"}"#
        } else {
            header
        };
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let sig = lab.keys()[0].sign(token.as_bytes()).expect("sign");
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        let first = validator.validate(&token, NOW);
        if let TokenVerdict::Verified(c) = &first {
            for id in [&c.mcptt_id, &c.mcvideo_id, &c.mcdata_id].into_iter().flatten() {
                assert!(!id.to_string().is_empty());
            }
        }
        let again = validator.validate(&token, NOW);
        assert_eq!(
            matches!(first, TokenVerdict::Verified(_)),
            matches!(again, TokenVerdict::Verified(_)),
            "the cache changed the verdict"
        );
    }
});

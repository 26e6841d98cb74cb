//! Random mutations of a valid token's bytes are never accepted (TS 33.180 B.11: the JWS
//! signature covers header and claims; anything else must be refused, and nothing panics).

use jsonwebtoken::Algorithm;
use mcx_authz::token::{LabIdms, MintRequest, Validator};
use mcx_model::{TokenVerdict, UnixTime};
use proptest::prelude::*;

const NOW: UnixTime = UnixTime(1_800_000_000);

/// One edit of the token's bytes.
#[derive(Clone, Debug)]
enum Edit {
    /// Replace the byte at (index mod len) with a value.
    Set(usize, u8),
    /// Flip one bit of the byte at (index mod len).
    Flip(usize, u8),
    /// Delete the byte at (index mod len).
    Delete(usize),
    /// Insert a byte at (index mod (len + 1)).
    Insert(usize, u8),
    /// Cut the token to (index mod len) bytes.
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    let n = bytes.len();
    match *e {
        Edit::Set(i, b) => bytes[i % n] = b,
        Edit::Flip(i, bit) => bytes[i % n] ^= 1 << bit,
        Edit::Delete(i) => {
            bytes.remove(i % n);
        }
        Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
        Edit::Truncate(i) => bytes.truncate(i % n),
    }
}

struct Fixture {
    validator: Validator,
    tokens: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let algs = [
            Algorithm::ES256,
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::EdDSA,
        ];
        let lab = LabIdms::ephemeral(&algs).unwrap();
        let validator = Validator::new(lab.validator_config()).unwrap();
        let tokens = algs
            .iter()
            .map(|a| {
                let mut r = MintRequest::all_services("sip:alice@example.org", NOW);
                r.alg = Some(*a);
                lab.mint(&r).unwrap()
            })
            .collect();
        Fixture { validator, tokens }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_tokens_are_never_accepted(which in 0usize..4, edits in prop::collection::vec(edit(), 1..4)) {
        let f = fixture();
        let original = &f.tokens[which];
        prop_assert!(matches!(f.validator.validate(original, NOW), TokenVerdict::Verified(_)));
        let mut bytes = original.as_bytes().to_vec();
        for e in &edits {
            if bytes.is_empty() {
                break;
            }
            apply(&mut bytes, e);
        }
        // A token only differing by surrounding whitespace is the same token.
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        prop_assume!(mutated.trim_ascii() != original.as_str());
        let verdict = f.validator.validate(&mutated, NOW);
        prop_assert!(matches!(verdict, TokenVerdict::Rejected(_)), "accepted {mutated:?}");
    }
}

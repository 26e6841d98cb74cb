//! The CSK-upload check against the Streamwide vectors, a lab round trip, one crafted message
//! per rejection stage, and mutated messages that must never panic.

use mcx_sec::csk_upload::{self, BuildParams, Csk, Receiver, UploadRejection};
use mcx_sec::kms::{self, decode_hex, encode_hex, KmsCertificate, KmsKeySet};
use mcx_sec::mikey::{self, id_role, Payload};
use mcx_sec::uid::NTP_UNIX_OFFSET;
use mcx_sec::{eccsi, sakke};
use sha2::{Digest, Sha256};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
}
fn cert() -> KmsCertificate {
    toml::from_str(&read("streamwide/kms_init.toml")).unwrap()
}
fn key_set(name: &str) -> KmsKeySet {
    toml::from_str(&read(&format!("streamwide/{name}.toml"))).unwrap()
}
fn message(name: &str) -> Vec<u8> {
    mikey::from_text(&read(name)).unwrap()
}
/// T of every Streamwide message: NTP 0xec898da8.
const T_UNIX: u64 = 0xec89_8da8 - NTP_UNIX_OFFSET;

#[test]
fn streamwide_csk_upload_verifies_and_decapsulates() {
    let cert = cert();
    let gms = Receiver::new(&cert, &key_set("gms")).unwrap();
    let up = csk_upload::verify(
        &message("test2_csk.b64"),
        T_UNIX + 20,
        30,
        std::slice::from_ref(&cert),
        &gms,
    )
    .unwrap();
    assert_eq!(
        encode_hex(up.csk.octets()),
        "e06e65106183547342d3e8a6ce2540a8"
    );
    assert_eq!(up.csk_id, 0x2ddd5bf0);
    assert_eq!(encode_hex(&up.rand), "4d13c41798b82de13b701a9697328edd");
    assert_eq!(up.t_unix, T_UNIX);
    assert_eq!(up.initiator_kms, "kms.mydev.streamwide.com");
    assert_eq!(encode_hex(&up.initiator_uid), key_set("alice").user_id);
    let mut h = Sha256::new();
    h.update(0x2ddd5bf0u32.to_be_bytes());
    h.update(&up.rand);
    assert_eq!(up.message_id, <[u8; 32]>::from(h.finalize()));
    // The shell maps IDRi back to an MC service ID with uid_for.
    let (alice, no) = csk_upload::uid_for("sip:alice@streamwide.com", &cert, T_UNIX).unwrap();
    assert_eq!((alice, no), (up.initiator_uid, 236));
    assert_eq!(format!("{:?}", up.csk), "Csk(<redacted>)");
}

/// Tests 1, 3 and 4 carry a GMK or a PCK, not a CSK: the upload check refuses them at the
/// purpose stage, and the primitives still verify and decapsulate them with the given keys.
#[test]
fn streamwide_gmk_and_pck_messages_verify_and_decapsulate() {
    let cert = cert();
    let kpak = cert.kpak().unwrap();
    let z = cert.sakke_public_key().unwrap();
    for (file, receiver, key) in [
        ("test1_gmk.b64", "alice", "07d1a1677ac36d8e81620484689b3c2d"),
        ("test3_pck.b64", "bob", "b4c96b703acd5c1bf7d4cc45068d9965"),
        (
            "test4_gmk_iwf.b64",
            "iwf",
            "07d1a1677ac36d8e81620484689b3c2d",
        ),
    ] {
        let bytes = message(file);
        let d = mikey::decode(&bytes).unwrap();
        let m = &d.message;
        let idri = &m.idr(id_role::INITIATOR_UID).unwrap().data;
        let sign = m.sign.as_ref().unwrap();
        eccsi::verify(&kpak, idri, d.signed, &sign.signature)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let ks = key_set(receiver);
        assert_eq!(
            m.idr(id_role::RESPONDER_UID).unwrap().data,
            ks.uid().unwrap()
        );
        let sakke_data = m
            .find(|p| match p {
                Payload::Sakke(s) => Some(s.data.clone()),
                _ => None,
            })
            .unwrap();
        let ssv =
            sakke::decapsulate(&sakke_data, &ks.uid().unwrap(), &ks.rsk().unwrap(), &z).unwrap();
        assert_eq!(encode_hex(&ssv[..]), key, "{file}");

        let r = Receiver::new(&cert, &ks).unwrap();
        let err =
            csk_upload::verify(&bytes, T_UNIX, 30, std::slice::from_ref(&cert), &r).unwrap_err();
        assert!(
            matches!(err, UploadRejection::NotCsk(0 | 1)),
            "{file}: {err}"
        );
    }
}

/// A deterministic "random" source for reproducible lab material.
fn fill_from(seed: &'static str) -> impl FnMut(&mut [u8]) {
    let mut counter = 0u64;
    move |out: &mut [u8]| {
        for chunk in out.chunks_mut(32) {
            let mut h = Sha256::new();
            h.update(seed);
            h.update(counter.to_be_bytes());
            counter += 1;
            let d = h.finalize();
            chunk.copy_from_slice(&d[..chunk.len()]);
        }
    }
}

struct Lab {
    cert: KmsCertificate,
    server: KmsKeySet,
    alice: KmsKeySet,
}

const NOW: u64 = 1_764_500_000; // 2025-11-30
const SERVER: &str = "sip:mcx-server@lab.example";

fn lab() -> Lab {
    let mut fill = fill_from("lab");
    let (cert, secrets) =
        kms::generate_community("kms.lab.example", 2_592_000, 0, &mut fill).unwrap();
    let no = cert.key_period_no(NOW).unwrap();
    let server = kms::provision(&cert, &secrets, SERVER, no, &mut fill).unwrap();
    let alice = kms::provision(&cert, &secrets, "sip:alice@lab.example", no, &mut fill).unwrap();
    // The issued keys validate against the community (RFC 6507 5.1.2, RFC 6508 6.1.2).
    alice
        .signing_key()
        .unwrap()
        .validate(&cert.kpak().unwrap(), &alice.uid().unwrap())
        .unwrap();
    server
        .rsk()
        .unwrap()
        .validate(&server.uid().unwrap(), &cert.sakke_public_key().unwrap())
        .unwrap();
    Lab {
        cert,
        server,
        alice,
    }
}

fn build(lab: &Lab, csk: &Csk, csk_id: u32, t: u64, receiver: &str) -> Vec<u8> {
    csk_upload::build(&BuildParams {
        csk,
        csk_id,
        rand: [7; 16],
        t_unix: t,
        initiator: (&lab.cert, &lab.alice),
        receiver: (receiver, &lab.cert),
        j: [9; 32],
    })
    .unwrap()
}

#[test]
fn lab_round_trip() {
    let lab = lab();
    let csk = Csk::new([0x5a; 16]);
    let bytes = build(&lab, &csk, 0x2123_4567, NOW, SERVER);
    let receiver = Receiver::new(&lab.cert, &lab.server).unwrap();
    let up =
        csk_upload::verify(&bytes, NOW, 30, std::slice::from_ref(&lab.cert), &receiver).unwrap();
    assert_eq!(up.csk, csk);
    assert_eq!(up.csk_id, 0x2123_4567);
    assert_eq!(up.initiator_uid, lab.alice.uid().unwrap());
    // And the key set files round-trip through TOML with the Annex D names.
    let text = toml::to_string(&lab.alice).unwrap();
    assert!(text.contains("UserSigningKeySSK"));
    let back: KmsKeySet = toml::from_str(&text).unwrap();
    assert_eq!(back, lab.alice);
}

/// Re-signs a (mutated) message as alice so that the signature stage passes.
fn resign(lab: &Lab, m: &mikey::Message) -> Vec<u8> {
    let mut to_sign = m
        .encode_to_be_signed(mikey::S_TYPE_ECCSI, Some(eccsi::SIGNATURE_LEN))
        .unwrap();
    let sig = lab
        .alice
        .signing_key()
        .unwrap()
        .sign_with(
            &lab.cert.kpak().unwrap(),
            &lab.alice.uid().unwrap(),
            &to_sign,
            &[3; 32],
        )
        .unwrap();
    to_sign.extend_from_slice(&sig);
    to_sign
}

#[test]
fn each_rejection_stage_is_reached_by_a_crafted_message() {
    let lab = lab();
    let csk = Csk::new([0x11; 16]);
    let certs = std::slice::from_ref(&lab.cert);
    let receiver = Receiver::new(&lab.cert, &lab.server).unwrap();
    let good = build(&lab, &csk, 0x2000_0001, NOW, SERVER);
    let check = |bytes: &[u8], now: u64| csk_upload::verify(bytes, now, 30, certs, &receiver);
    assert!(check(&good, NOW).is_ok());

    // parse
    let e = check(&good[..good.len() - 1], NOW).unwrap_err();
    assert_eq!(e.stage(), "parse", "{e}");
    // structure: no RAND
    let mut m = mikey::decode(&good).unwrap().message;
    m.payloads.retain(|p| !matches!(p, Payload::Rand(_)));
    let e = check(&resign(&lab, &m), NOW).unwrap_err();
    assert_eq!(e, UploadRejection::Structure("exactly one RAND"));
    // timestamp, both sides of the window
    for now in [NOW + 31, NOW - 31] {
        let e = check(&good, now).unwrap_err();
        assert!(matches!(e, UploadRejection::Stale { .. }), "{e}");
    }
    assert!(check(&good, NOW + 30).is_ok());
    // purpose: a GMK id
    let e = check(&build(&lab, &csk, 0x0000_0001, NOW, SERVER), NOW).unwrap_err();
    assert_eq!(e, UploadRejection::NotCsk(0));
    // signature: unknown KMS
    let e = csk_upload::verify(&good, NOW, 30, &[], &receiver).unwrap_err();
    assert_eq!(e, UploadRejection::UnknownKms("kms.lab.example".into()));
    // signature: a changed RAND octet
    let mut bad = good.clone();
    let rand_at = bad.windows(16).position(|w| w == [7; 16]).unwrap();
    bad[rand_at] ^= 1;
    assert_eq!(check(&bad, NOW).unwrap_err(), UploadRejection::BadSignature);
    // signature: signed by alice but claiming (IDRi) to be the server
    let mut m = mikey::decode(&good).unwrap().message;
    for p in &mut m.payloads {
        if let Payload::Idr(i) = p {
            if i.role == id_role::INITIATOR_UID {
                i.data = lab.server.uid().unwrap().to_vec();
            }
        }
    }
    assert_eq!(
        check(&resign(&lab, &m), NOW).unwrap_err(),
        UploadRejection::BadSignature
    );
    // receiver: encrypted to someone else
    let e = check(
        &build(&lab, &csk, 0x2000_0001, NOW, "sip:other@lab.example"),
        NOW,
    )
    .unwrap_err();
    assert_eq!(e, UploadRejection::NotForUs);
    // receiver: our key set is for the previous period
    let mut old = lab.server.clone();
    old.key_period_no -= 1;
    old.user_id = encode_hex(&mcx_sec::uid::mikey_sakke_uid(
        SERVER,
        &lab.cert.kms_uri,
        2_592_000,
        0,
        old.key_period_no,
    ));
    let stale_receiver = Receiver::new(&lab.cert, &old).unwrap();
    let e = csk_upload::verify(&good, NOW, 30, certs, &stale_receiver).unwrap_err();
    assert_eq!(e, UploadRejection::NoReceiverKey);
    // decapsulation: a validly signed message whose H was changed
    let mut m = mikey::decode(&good).unwrap().message;
    for p in &mut m.payloads {
        if let Payload::Sakke(s) = p {
            let last = s.data.len() - 1;
            s.data[last] ^= 1;
        }
    }
    let e = check(&resign(&lab, &m), NOW).unwrap_err();
    assert_eq!(
        e,
        UploadRejection::Decapsulation(sakke::SakkeError::Invalid)
    );
    assert_eq!(e.stage(), "decapsulation");
}

#[test]
fn hex_material_errors_are_named() {
    let mut ks = key_set("gms");
    ks.user_decrypt_key = "04zz".into();
    assert_eq!(
        Receiver::new(&cert(), &ks).unwrap_err(),
        kms::KmsError::Field("UserDecryptKey")
    );
    assert!(decode_hex(&cert().pub_auth_key).is_some());
}

mod mutations {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Flipped, cut or inserted octets never panic the parser or the check, and never
        /// yield a different CSK.
        #[test]
        fn mutated_messages_never_panic(
            flips in proptest::collection::vec((0usize..694, any::<u8>()), 0..4),
            cut in 0usize..700,
            insert in proptest::option::of((0usize..694, any::<u8>())),
        ) {
            let cert = cert();
            let gms = Receiver::new(&cert, &key_set("gms")).unwrap();
            let mut bytes = message("test2_csk.b64");
            for (at, x) in flips {
                bytes[at] ^= x;
            }
            if let Some((at, b)) = insert {
                bytes.insert(at, b);
            }
            bytes.truncate(cut.max(1));
            if let Ok(up) = csk_upload::verify(&bytes, T_UNIX, 30, &[cert], &gms) {
                prop_assert_eq!(encode_hex(up.csk.octets()), "e06e65106183547342d3e8a6ce2540a8");
            }
        }

        /// Arbitrary octets never panic the codec; what decodes re-encodes to itself.
        #[test]
        fn arbitrary_octets_decode_or_err(bytes in proptest::collection::vec(any::<u8>(), 0..2100)) {
            if let Ok(d) = mikey::decode(&bytes) {
                prop_assert_eq!(d.message.encode().unwrap(), bytes);
            }
        }
    }
}

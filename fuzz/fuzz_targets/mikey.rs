//! Fuzzes the MIKEY codec and the CSK-upload check (`mcx_sec::mikey`, `mcx_sec::csk_upload`):
//! no input may panic; whatever decodes must re-encode to the same octets; the upload check
//! (with the Streamwide vector material, at the vector's time) must refuse or accept without
//! panicking. Inputs are raw octets, or base64 text when they start with `mikey `.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcx_sec::csk_upload::{self, Receiver};
use mcx_sec::kms::{KmsCertificate, KmsKeySet};
use mcx_sec::mikey;

const T_UNIX: u64 = 0xec89_8da8 - mcx_sec::uid::NTP_UNIX_OFFSET;

fn material() -> &'static (KmsCertificate, Receiver) {
    static M: OnceLock<(KmsCertificate, Receiver)> = OnceLock::new();
    M.get_or_init(|| {
        let cert: KmsCertificate =
            toml::from_str(include_str!("../../sec/tests/vectors/streamwide/kms_init.toml"))
                .expect("vector certificate");
        let gms: KmsKeySet =
            toml::from_str(include_str!("../../sec/tests/vectors/streamwide/gms.toml"))
                .expect("vector key set");
        let r = Receiver::new(&cert, &gms).expect("vector receiver");
        (cert, r)
    })
}

fuzz_target!(|data: &[u8]| {
    let owned;
    let bytes = match std::str::from_utf8(data) {
        Ok(t) if t.starts_with("mikey ") => match mikey::from_text(t) {
            Some(b) => {
                owned = b;
                &owned[..]
            }
            None => return,
        },
        _ => data,
    };
    if let Ok(d) = mikey::decode(bytes) {
        assert_eq!(d.message.encode().expect("re-encode"), bytes);
    }
    let (cert, receiver) = material();
    let _ = csk_upload::verify(bytes, T_UNIX, 30, std::slice::from_ref(cert), receiver);
});

//! The MIKEY-SAKKE UID of TS 33.180 clause F.2.1 and the key period arithmetic behind it.
//!
//! `UID = SHA-256(S)`, `S = FC || P0 || L0 || ... || P5 || L5` (the TS 33.220 Annex B
//! key-derivation string) with FC = 0x00, P0 = `MIKEY-SAKKE-UID`, P1 = the user's URI,
//! P2 = the KMS URI, P3 = the key period length in seconds, P4 = the key period offset in
//! seconds, P5 = the current key period number; every `Li` is the length of `Pi` in two
//! octets. Integers are written big-endian in the fewest octets (0 is one octet `00`): the
//! reading that reproduces TS 33.180 F.2.1.2's worked example and all five Streamwide UID
//! vectors (the tests below).

use crate::kms::KmsCertificate;
use sha2::{Digest, Sha256};

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A MIKEY-SAKKE UID (32 octets).
pub type Uid = [u8; 32];

/// The UID of `uri` under the KMS `kms_uri` for key period `key_period_no`.
pub fn mikey_sakke_uid(
    uri: &str,
    kms_uri: &str,
    key_period: u64,
    key_period_offset: u64,
    key_period_no: u64,
) -> Uid {
    let mut h = Sha256::new();
    h.update([0x00]);
    for p in [
        b"MIKEY-SAKKE-UID".as_slice(),
        uri.as_bytes(),
        kms_uri.as_bytes(),
        &minimal_be(key_period),
        &minimal_be(key_period_offset),
        &minimal_be(key_period_no),
    ] {
        h.update(p);
        // A parameter longer than 65535 octets cannot be written; URIs here are bounded far
        // below that by the callers (MIKEY IDR lengths are 16-bit too), so saturate.
        h.update(u16::try_from(p.len()).unwrap_or(u16::MAX).to_be_bytes());
    }
    h.finalize().into()
}

fn minimal_be(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    bytes[skip..].to_vec()
}

/// The key period number in force at `ntp_seconds` (TS 33.180 F.2.1: periods count from
/// the NTP epoch, shifted by the offset). `None` if the period is 0 or the time precedes
/// the offset.
pub fn key_period_no(ntp_seconds: u64, key_period: u64, key_period_offset: u64) -> Option<u64> {
    if key_period == 0 {
        return None;
    }
    Some(ntp_seconds.checked_sub(key_period_offset)? / key_period)
}

/// NTP seconds for a Unix time.
pub fn unix_to_ntp(unix_seconds: u64) -> u64 {
    unix_seconds.saturating_add(NTP_UNIX_OFFSET)
}

/// The UID of `uri` under `kms` for the key period in force at `now_unix` (Unix seconds),
/// with that period number. This is how the shell maps an MC service ID to the IDRi of an
/// I_MESSAGE. `None` if the certificate's period is 0.
pub fn uid_for(uri: &str, kms: &KmsCertificate, now_unix: u64) -> Option<(Uid, u64)> {
    let no = key_period_no(
        unix_to_ntp(now_unix),
        kms.user_key_period,
        kms.user_key_offset,
    )?;
    Some((
        mikey_sakke_uid(
            uri,
            &kms.kms_uri,
            kms.user_key_period,
            kms.user_key_offset,
            no,
        ),
        no,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::{decode_hex, encode_hex};

    #[test]
    fn streamwide_uid_vectors() {
        let vectors = [
            (
                2_592_000,
                0,
                1,
                "74e2af803ab5d72841bbced0ce319ffe64f6fe23c88a2d258aabcf6ac5658ef4",
            ),
            (
                10,
                0,
                10,
                "94fb1a697c15d7e9d6b7062066affebda2d9e346e0090d67525c0c3ce666eafa",
            ),
            (
                25_920_000,
                100,
                1,
                "3c0ad8828cfae1ad1d08b27cc7b61258c6cfcd405081b68cd778f1e1c7f562a7",
            ),
            (
                25_920_000,
                100,
                2048,
                "c88b3fa5e36a08985d10f7b31a631b0265e8249f0312435e4984dbc3765c7f0c",
            ),
            (
                25_920_000,
                45_920_000,
                20_393_844,
                "8dc05540167345538475101514f4eabd384abd6ba665782abb312ecaf05934e1",
            ),
        ];
        for (period, offset, no, want) in vectors {
            let uid = mikey_sakke_uid(
                "sip:user@example.org",
                "kms.example.org",
                period,
                offset,
                no,
            );
            assert_eq!(
                encode_hex(&uid),
                want,
                "period {period} offset {offset} no {no}"
            );
        }
    }

    #[test]
    fn ts_33_180_f_2_1_2_worked_example() {
        // TIME = 3599719634 (NTP), period 2592000 s, offset 0 -> period 1388.
        assert_eq!(key_period_no(3_599_719_634, 2_592_000, 0), Some(1388));
        let uid = mikey_sakke_uid(
            "sip:user@example.org",
            "kms.example.org",
            2_592_000,
            0,
            1388,
        );
        // base64 OoH7FMOx0P5DycV3EE1VptgXiL/S8JdDxFV3RqWgNTs=
        assert_eq!(
            encode_hex(&uid),
            "3a81fb14c3b1d0fe43c9c577104d55a6d81788bfd2f09743c4557746a5a0353b"
        );
    }

    #[test]
    fn streamwide_key_set_user_ids_follow_from_the_certificate() {
        let cert = KmsCertificate {
            kms_uri: "kms.mydev.streamwide.com".into(),
            user_id_format: 2,
            user_key_period: 16_777_215,
            user_key_offset: 0,
            pub_enc_key: String::new(),
            pub_auth_key: String::new(),
        };
        // T of the Streamwide messages: NTP 0xec898da8 -> period 236.
        let now_unix = 0xec89_8da8 - NTP_UNIX_OFFSET;
        for (uri, id) in [
            (
                "gms@streamwide.com",
                "15a4d5b12856538d02d91fedbb766e6dd377b014c92e216666c8fb678608d20e",
            ),
            (
                "sip:alice@streamwide.com",
                "b5c452309219da6a3d805615548d6c1b0f4de45a6b48fb13d9a24d857fc03dc4",
            ),
            (
                "sip:bob@streamwide.com",
                "780851cda91a9c33f941cd3a2831697e2893264754e363f8a0cef827eb201a81",
            ),
        ] {
            let (uid, no) = uid_for(uri, &cert, now_unix).unwrap();
            assert_eq!(no, 236);
            assert_eq!(uid.to_vec(), decode_hex(id).unwrap(), "{uri}");
        }
        assert_eq!(key_period_no(5, 0, 0), None);
        assert_eq!(key_period_no(5, 10, 6), None);
    }
}

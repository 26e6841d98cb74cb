//! KMS material as TS 33.180 Annex D names it: the community's certificate (`KmsInit`,
//! `KmsCertificate`) and one user's key set (`KmsKeySet`).
//!
//! This is the one on-disk and on-the-wire format for the lab KMS (`mcx-authz kms`), the KMS
//! resource server (`/keymanagement/identity/v1`) and `mcx-authz mikey inspect`: TOML whose keys
//! are the Annex D element names, with octet strings as hex (spaces allowed), exactly as in the
//! published MIKEY-SAKKE test vectors. Secret fields are zeroized on drop.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A KMS community's public certificate (TS 33.180 D.2.2 `KmsCertificate`, D.3.2 `KmsInit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsCertificate {
    /// `KmsUri`: the KMS's identity, e.g. `kms.example.org`.
    #[serde(rename = "KmsUri")]
    pub kms_uri: String,
    /// `UserIdFormat`: 2 is the MIKEY-SAKKE UID of TS 33.180 F.2.1.
    #[serde(rename = "UserIdFormat", default = "user_id_format_2")]
    pub user_id_format: u8,
    /// `UserKeyPeriod`, in seconds.
    #[serde(rename = "UserKeyPeriod")]
    pub user_key_period: u64,
    /// `UserKeyOffset`, in seconds.
    #[serde(rename = "UserKeyOffset")]
    pub user_key_offset: u64,
    /// `PubEncKey`: the SAKKE public key Z = \[z\]P (RFC 6508), hex of the uncompressed point.
    #[serde(rename = "PubEncKey")]
    pub pub_enc_key: String,
    /// `PubAuthKey`: the ECCSI KMS public authentication key KPAK (RFC 6507), hex of the
    /// uncompressed P-256 point.
    #[serde(rename = "PubAuthKey")]
    pub pub_auth_key: String,
}

fn user_id_format_2() -> u8 {
    2
}

/// One user's key set for one key period (TS 33.180 D.3.3 `KmsKeySet`). The decryption and
/// signing keys are secret: the value is zeroized on drop and never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct KmsKeySet {
    /// `UserUri`: the identity the keys are for (an MC service ID, or a server's MDSI).
    #[serde(rename = "UserUri")]
    pub user_uri: String,
    /// `UserID`: the MIKEY-SAKKE UID (TS 33.180 F.2.1), hex.
    #[serde(rename = "UserID")]
    pub user_id: String,
    /// `KeyPeriodNo`.
    #[serde(rename = "KeyPeriodNo")]
    pub key_period_no: u64,
    /// `UserDecryptKey`: the SAKKE receiver secret key RSK (RFC 6508), hex. Secret.
    #[serde(rename = "UserDecryptKey")]
    pub user_decrypt_key: String,
    /// `UserSigningKeySSK`: the ECCSI secret signing key SSK (RFC 6507), hex. Secret.
    #[serde(rename = "UserSigningKeySSK")]
    pub user_signing_key_ssk: String,
    /// `UserPubTokenPVT`: the ECCSI public validation token PVT (RFC 6507), hex.
    #[serde(rename = "UserPubTokenPVT")]
    pub user_pub_token_pvt: String,
}

impl std::fmt::Debug for KmsKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKeySet")
            .field("user_uri", &self.user_uri)
            .field("user_id", &self.user_id)
            .field("key_period_no", &self.key_period_no)
            .field("user_decrypt_key", &"<secret>")
            .field("user_signing_key_ssk", &"<secret>")
            .field("user_pub_token_pvt", &self.user_pub_token_pvt)
            .finish()
    }
}

/// Decodes a hex octet string as the vector files and Annex D documents write it: case-free,
/// with spaces (and an optional `0x`) allowed. `None` on any other character or an odd length.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    digits
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Lower-case hex of `bytes`, no separators.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_refusals() {
        assert_eq!(
            decode_hex("e06e6510 61835473").unwrap(),
            [0xe0, 0x6e, 0x65, 0x10, 0x61, 0x83, 0x54, 0x73]
        );
        assert_eq!(encode_hex(&decode_hex("0x2DDD5BF0").unwrap()), "2ddd5bf0");
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn key_set_toml_uses_annex_d_names_and_hides_secrets() {
        let ks: KmsKeySet = from_json(
            r#"{"UserUri":"sip:alice@example.org","UserID":"b5","KeyPeriodNo":236,
               "UserDecryptKey":"04aa","UserSigningKeySSK":"a1be","UserPubTokenPVT":"0426"}"#,
        );
        assert_eq!(ks.key_period_no, 236);
        let shown = format!("{ks:?}");
        assert!(
            !shown.contains("a1be") && !shown.contains("04aa"),
            "{shown}"
        );
    }

    fn from_json<T: for<'de> Deserialize<'de>>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }
}

//! KMS material as TS 33.180 Annex D names it: the community's certificate (`KmsInit`,
//! `KmsCertificate`) and one user's key set (`KmsKeySet`).
//!
//! This is the one on-disk and on-the-wire format for the lab KMS (`mcx-authz kms`), the KMS
//! resource server (`/keymanagement/identity/v1`) and `mcx-authz mikey inspect`: TOML whose keys
//! are the Annex D element names, with octet strings as hex (spaces allowed), exactly as in the
//! published MIKEY-SAKKE test vectors. Secret fields are zeroized on drop.

use crate::{eccsi, sakke, uid};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

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

/// Why KMS material could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// A field is not hex of the right length or is not a valid key.
    #[error("{0}: not a valid value")]
    Field(&'static str),
    /// The key period is 0 or the offset is not below it (TS 33.180 F.2.1).
    #[error("key period 0, or offset not below the period")]
    Period,
}

impl KmsCertificate {
    /// The KPAK (`PubAuthKey`) as a validated P-256 point.
    pub fn kpak(&self) -> Result<[u8; eccsi::POINT_LEN], KmsError> {
        let b = decode_hex(&self.pub_auth_key).ok_or(KmsError::Field("PubAuthKey"))?;
        eccsi::parse_point(&b).map_err(|_| KmsError::Field("PubAuthKey"))?;
        b.try_into().map_err(|_| KmsError::Field("PubAuthKey"))
    }

    /// The SAKKE public key Z (`PubEncKey`), validated.
    pub fn sakke_public_key(&self) -> Result<sakke::PublicKey, KmsError> {
        let b = decode_hex(&self.pub_enc_key).ok_or(KmsError::Field("PubEncKey"))?;
        sakke::PublicKey::from_bytes(&b).map_err(|_| KmsError::Field("PubEncKey"))
    }

    /// The key period number in force at `now_unix`.
    pub fn key_period_no(&self, now_unix: u64) -> Option<u64> {
        uid::key_period_no(
            uid::unix_to_ntp(now_unix),
            self.user_key_period,
            self.user_key_offset,
        )
    }
}

impl KmsKeySet {
    /// The UID (`UserID`).
    pub fn uid(&self) -> Result<uid::Uid, KmsError> {
        decode_hex(&self.user_id)
            .and_then(|b| b.try_into().ok())
            .ok_or(KmsError::Field("UserID"))
    }

    /// The ECCSI signing key (`UserSigningKeySSK`, `UserPubTokenPVT`).
    pub fn signing_key(&self) -> Result<eccsi::SigningKey, KmsError> {
        let ssk = Zeroizing::new(
            decode_hex(&self.user_signing_key_ssk).ok_or(KmsError::Field("UserSigningKeySSK"))?,
        );
        let pvt = decode_hex(&self.user_pub_token_pvt).ok_or(KmsError::Field("UserPubTokenPVT"))?;
        eccsi::SigningKey::from_bytes(&ssk, &pvt).map_err(|e| match e {
            eccsi::EccsiError::BadPoint => KmsError::Field("UserPubTokenPVT"),
            _ => KmsError::Field("UserSigningKeySSK"),
        })
    }

    /// The SAKKE RSK (`UserDecryptKey`).
    pub fn rsk(&self) -> Result<sakke::ReceiverSecretKey, KmsError> {
        let b = Zeroizing::new(
            decode_hex(&self.user_decrypt_key).ok_or(KmsError::Field("UserDecryptKey"))?,
        );
        sakke::ReceiverSecretKey::from_bytes(&b).map_err(|_| KmsError::Field("UserDecryptKey"))
    }
}

/// The lab KMS's own secrets: the SAKKE master secret z and the ECCSI KSAK. Kept in a file
/// of mode 0600 beside the certificate; never served. Wiped on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct KmsSecrets {
    /// `KmsUri`, tying the secrets to their certificate.
    #[serde(rename = "KmsUri")]
    pub kms_uri: String,
    /// The SAKKE master secret z (RFC 6508 2.2), hex.
    #[serde(rename = "MasterSecret")]
    pub master_secret: String,
    /// The ECCSI KMS secret authentication key KSAK (RFC 6507 4.2), hex.
    #[serde(rename = "Ksak")]
    pub ksak: String,
}

impl std::fmt::Debug for KmsSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSecrets")
            .field("kms_uri", &self.kms_uri)
            .finish_non_exhaustive()
    }
}

/// Random octets from the caller (the crate has no randomness source of its own).
pub type Fill<'a> = &'a mut dyn FnMut(&mut [u8]);

/// Lab KMS: creates a community (TS 33.180 5.3, Annex D): SAKKE master secret z and
/// `Z = [z]P`, ECCSI KSAK and `KPAK = [KSAK]G`, with the key period and offset.
pub fn generate_community(
    kms_uri: &str,
    user_key_period: u64,
    user_key_offset: u64,
    fill: Fill<'_>,
) -> Result<(KmsCertificate, KmsSecrets), KmsError> {
    if user_key_period == 0 || user_key_offset >= user_key_period {
        return Err(KmsError::Period);
    }
    let mut z_bytes = Zeroizing::new([0u8; sakke::FP_LEN]);
    fill(&mut z_bytes[..]);
    let z =
        sakke::MasterSecret::from_random(&z_bytes).map_err(|_| KmsError::Field("MasterSecret"))?;
    let big_z = z
        .public_key()
        .map_err(|_| KmsError::Field("MasterSecret"))?;
    let mut ksak = Zeroizing::new([0u8; eccsi::N]);
    fill(&mut ksak[..]);
    let kpak = eccsi::kpak_of(&ksak).map_err(|_| KmsError::Field("Ksak"))?;
    let cert = KmsCertificate {
        kms_uri: kms_uri.to_string(),
        user_id_format: 2,
        user_key_period,
        user_key_offset,
        pub_enc_key: encode_hex(&big_z.to_bytes()),
        pub_auth_key: encode_hex(&kpak),
    };
    let secrets = KmsSecrets {
        kms_uri: kms_uri.to_string(),
        master_secret: encode_hex(z.as_bytes()),
        ksak: encode_hex(&ksak[..]),
    };
    Ok((cert, secrets))
}

/// Lab KMS: issues `uri`'s key set for key period `key_period_no` (TS 33.180 5.3): the UID
/// (F.2.1), the RSK `[(UID + z)^-1]P` (RFC 6508 6.1.1) and the ECCSI (SSK, PVT) for the UID
/// (RFC 6507 5.1.1).
pub fn provision(
    cert: &KmsCertificate,
    secrets: &KmsSecrets,
    uri: &str,
    key_period_no: u64,
    fill: Fill<'_>,
) -> Result<KmsKeySet, KmsError> {
    if secrets.kms_uri != cert.kms_uri {
        return Err(KmsError::Field("KmsUri"));
    }
    let uid = uid::mikey_sakke_uid(
        uri,
        &cert.kms_uri,
        cert.user_key_period,
        cert.user_key_offset,
        key_period_no,
    );
    let z_bytes: Zeroizing<[u8; sakke::FP_LEN]> = Zeroizing::new(
        decode_hex(&secrets.master_secret)
            .and_then(|b| b.try_into().ok())
            .ok_or(KmsError::Field("MasterSecret"))?,
    );
    let z =
        sakke::MasterSecret::from_random(&z_bytes).map_err(|_| KmsError::Field("MasterSecret"))?;
    let rsk = z
        .receiver_secret_key(&uid)
        .map_err(|_| KmsError::Field("MasterSecret"))?;
    let ksak: Zeroizing<[u8; eccsi::N]> = Zeroizing::new(
        decode_hex(&secrets.ksak)
            .and_then(|b| b.try_into().ok())
            .ok_or(KmsError::Field("Ksak"))?,
    );
    let mut v = Zeroizing::new([0u8; eccsi::N]);
    // A zero v (or SSK) has probability ~2^-256; a few draws, then give up.
    let mut key = None;
    for _ in 0..4 {
        fill(&mut v[..]);
        if let Ok(k) = eccsi::issue(&ksak, &uid, &v) {
            key = Some(k);
            break;
        }
    }
    let key = key.ok_or(KmsError::Field("Ksak"))?;
    Ok(KmsKeySet {
        user_uri: uri.to_string(),
        user_id: encode_hex(&uid),
        key_period_no,
        user_decrypt_key: encode_hex(rsk.as_bytes()),
        user_signing_key_ssk: encode_hex(key.ssk()),
        user_pub_token_pvt: encode_hex(key.pvt()),
    })
}

/// The lab KMS directory layout (default `./mcx-lab/kms/`), shared by `mcx-authz kms`, the
/// KMS resource server and `mikey inspect`: the public certificate, the KMS's own secrets
/// (mode 0600) and one key set per user URI (mode 0600).
pub mod layout {
    /// The community's certificate (`KmsCertificate`, TOML).
    pub const CERTIFICATE: &str = "certificate.toml";
    /// The KMS's secrets (`KmsSecrets`, TOML, mode 0600).
    pub const SECRETS: &str = "secrets.toml";
    /// The directory of key sets.
    pub const KEY_SETS: &str = "keysets";

    /// The file name of `uri`'s key set in [`KEY_SETS`]: the URI with every character other
    /// than ASCII letters, digits, `.`, `@`, `-` and `_` replaced by `_`, then `.toml`
    /// (`sip:alice@example.org` -> `sip_alice@example.org.toml`).
    pub fn key_set_file(uri: &str) -> String {
        let mut s: String = uri
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        s.push_str(".toml");
        s
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

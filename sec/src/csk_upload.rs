//! The MCX server's check of a CSK upload: a MIKEY-SAKKE I_MESSAGE (RFC 6509) by which an MC
//! client gives the server its client-server key (TS 33.180 5.4 and Annex E: the CSK is
//! encapsulated to the server's identity with SAKKE and signed with the user's identity with
//! ECCSI).
//!
//! Cheap checks first, because the pairing costs milliseconds (docs/mikey-sakke.md, Costs):
//!
//! 1. parse ([`crate::mikey`]): at most 2 KiB, strict chain, every length checked;
//! 2. structure: one T, one RAND, IDRi/IDRr/IDRkmsi, one SAKKE payload of parameter set 1 and
//!    the hashed-UID ID scheme, an ECCSI SIGN;
//! 3. T within the skew window around `now`;
//! 4. the CSB-ID purpose nibble is 2 (CSK; TS 33.180 5.4, the purpose tag of the key id);
//! 5. ECCSI verification (RFC 6507 5.2.2) against the KPAK of the KMS named in IDRkmsi; a KMS
//!    we do not know is refused;
//! 6. IDRr is the receiver's (our) UID for the current key period;
//! 7. only then SAKKE decapsulation (RFC 6508 6.2.2) with the receiver's RSK.
//!
//! What this module does not decide: whether the signer (IDRi) is the token's MC service ID,
//! and whether this message was seen before. Both are machine decisions
//! (`mcx_model`: the shell passes the [`CskUpload::message_id`], `t` and the MC service ID whose
//! UID equals [`CskUpload::initiator_uid`], found with [`uid_for`]).
//!
//! For `mcx_model::KeyUpload`: `csk_id` as 8 hex digits is the `CskId`, `message_id` in hex
//! the `KeyMessageId`, `t_unix` the `sent_at`; a rejection maps by [`UploadRejection::stage`]:
//! parse/structure -> `Malformed`, purpose -> `NotACsk`, [`UploadRejection::UnknownKms`] ->
//! `UnknownKms`, [`UploadRejection::BadSignature`] -> `BadSignature`, receiver ->
//! `NotForThisServer`, decapsulation -> `Undecryptable`. The timestamp stage is a cheap early
//! refusal (a stale or replayed flood costs no signature check); pass `skew_secs = u64::MAX`
//! to leave freshness entirely to the machine's own window on `sent_at`.

use crate::eccsi;
use crate::kms::{KmsCertificate, KmsError, KmsKeySet};
use crate::mikey::{self, id_role, Payload, Timestamp};
use crate::sakke::{self, SakkeError};
use crate::uid::{self, Uid, NTP_UNIX_OFFSET};
use sha2::{Digest, Sha256};

pub use crate::uid::uid_for;

/// The purpose tag of a CSK in the top nibble of its id (TS 33.180: 0 GMK, 1 PCK, 2 CSK ...).
pub const PURPOSE_CSK: u8 = 2;

/// The CSK an upload carries: the one 128-bit key type of the crate ([`crate::csk::Csk`],
/// zeroized, never printed), which the clause 9 key store then holds.
pub use crate::csk::Csk;

// SAKKE's SSV is the CSK itself (RFC 6509 2.1, TS 33.180 5.4).
const _: () = assert!(sakke::SSV_LEN == 16);

/// A verified and decapsulated CSK upload.
#[derive(Debug, Clone)]
pub struct CskUpload {
    /// The CSK-ID (the common header's CSB ID).
    pub csk_id: u32,
    /// The CSK.
    pub csk: Csk,
    /// RAND.
    pub rand: Vec<u8>,
    /// T, as Unix seconds.
    pub t_unix: u64,
    /// The initiator's UID (IDRi), which signed the message.
    pub initiator_uid: Uid,
    /// The initiator's KMS (IDRkmsi).
    pub initiator_kms: String,
    /// SHA-256(CSB-ID || RAND): what the machine keeps to refuse a replay.
    pub message_id: [u8; 32],
}

/// Where and why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadRejection {
    /// Stage 1: not a well-formed MIKEY SAKKE I_MESSAGE.
    #[error("parse: {0}")]
    Parse(#[from] mikey::MikeyError),
    /// Stage 2: a payload is missing, repeated or of an unsupported kind.
    #[error("structure: {0}")]
    Structure(&'static str),
    /// Stage 3: T is outside the skew window.
    #[error("timestamp: T {t_unix} is more than {skew_secs} s from now {now_unix}")]
    Stale {
        /// T as Unix seconds (0 if before 1970).
        t_unix: u64,
        /// Now.
        now_unix: u64,
        /// The window.
        skew_secs: u64,
    },
    /// Stage 4: the key is not a CSK.
    #[error("purpose: CSB-ID purpose tag {0}, not 2 (CSK)")]
    NotCsk(u8),
    /// Stage 5: IDRkmsi names a KMS we do not know.
    #[error("signature: unknown KMS {0:?}")]
    UnknownKms(String),
    /// Stage 5: the ECCSI signature does not verify.
    #[error("signature: ECCSI verification failed")]
    BadSignature,
    /// Stage 6: IDRr is not our UID for the current key period.
    #[error("receiver: IDRr is not this server's UID for the current key period")]
    NotForUs,
    /// Stage 6: our key set is not for the current key period.
    #[error("receiver: no key set for the current key period")]
    NoReceiverKey,
    /// Stage 7: SAKKE decapsulation failed.
    #[error("decapsulation: {0}")]
    Decapsulation(SakkeError),
}

impl UploadRejection {
    /// The stage's name, for logs and counters.
    pub fn stage(&self) -> &'static str {
        match self {
            UploadRejection::Parse(_) => "parse",
            UploadRejection::Structure(_) => "structure",
            UploadRejection::Stale { .. } => "timestamp",
            UploadRejection::NotCsk(_) => "purpose",
            UploadRejection::UnknownKms(_) | UploadRejection::BadSignature => "signature",
            UploadRejection::NotForUs | UploadRejection::NoReceiverKey => "receiver",
            UploadRejection::Decapsulation(_) => "decapsulation",
        }
    }
}

/// The receiver's (the server's) prepared key material: parsed once at start.
pub struct Receiver {
    uri: String,
    cert: KmsCertificate,
    decapsulator: sakke::Decapsulator,
    key_period_no: u64,
    uid: Uid,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("uri", &self.uri)
            .field("kms", &self.cert.kms_uri)
            .field("key_period_no", &self.key_period_no)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// From the receiver's KMS certificate and its key set (its MDSI's).
    pub fn new(cert: &KmsCertificate, key_set: &KmsKeySet) -> Result<Self, KmsError> {
        let uid = key_set.uid()?;
        let decapsulator =
            sakke::Decapsulator::new(&uid, key_set.rsk()?, &cert.sakke_public_key()?)
                .map_err(|_| KmsError::Field("UserDecryptKey"))?;
        Ok(Receiver {
            uri: key_set.user_uri.clone(),
            cert: cert.clone(),
            decapsulator,
            key_period_no: key_set.key_period_no,
            uid,
        })
    }

    /// The key that seals an uploaded CSK in the server's durable store
    /// ([`crate::csk_at_rest`]), derived from this receiver's RSK.
    pub fn storage_key(&self) -> crate::csk_at_rest::StorageKey {
        self.decapsulator.storage_key()
    }

    /// The receiver's URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

/// Checks a CSK upload addressed to `receiver`, signed by a user of one of `kms_certs`, at
/// `now_unix` with a T skew window of `skew_secs`. See the module docs for the order.
pub fn verify(
    bytes: &[u8],
    now_unix: u64,
    skew_secs: u64,
    kms_certs: &[KmsCertificate],
    receiver: &Receiver,
) -> Result<CskUpload, UploadRejection> {
    // 1. Parse.
    let decoded = mikey::decode(bytes)?;
    let m = &decoded.message;
    // 2. Structure.
    let one = |kind: u8, what: &'static str| -> Result<&Payload, UploadRejection> {
        let mut it = m.payloads.iter().filter(|p| payload_kind(p) == kind);
        match (it.next(), it.next()) {
            (Some(p), None) => Ok(p),
            (None, _) => Err(UploadRejection::Structure(what)),
            _ => Err(UploadRejection::Structure(what)),
        }
    };
    let t = match one(mikey::payload_type::T, "exactly one T")? {
        Payload::Timestamp(Timestamp::NtpUtc(v) | Timestamp::Ntp(v)) => v >> 32,
        _ => return Err(UploadRejection::Structure("T is not an NTP time")),
    };
    let rand = match one(mikey::payload_type::RAND, "exactly one RAND")? {
        Payload::Rand(r) if r.len() >= 16 => r.clone(),
        _ => return Err(UploadRejection::Structure("RAND shorter than 16 octets")),
    };
    let sakke_payload = match one(mikey::payload_type::SAKKE, "exactly one SAKKE")? {
        Payload::Sakke(s) => s,
        _ => return Err(UploadRejection::Structure("exactly one SAKKE")),
    };
    if sakke_payload.params != 1 || sakke_payload.id_scheme != 2 {
        return Err(UploadRejection::Structure(
            "SAKKE parameter set 1 with the hashed-UID ID scheme",
        ));
    }
    let sign = match &m.sign {
        Some(s) if s.s_type == mikey::S_TYPE_ECCSI => s,
        _ => return Err(UploadRejection::Structure("an ECCSI SIGN payload")),
    };
    let kmsi = m
        .idr(id_role::INITIATOR_KMS)
        .map_err(|_| UploadRejection::Structure("exactly one IDRkmsi"))?;
    let kmsi_uri = std::str::from_utf8(&kmsi.data)
        .map_err(|_| UploadRejection::Structure("IDRkmsi is not text"))?;
    let idri = initiator_or_responder(m, id_role::INITIATOR_UID, id_role::INITIATOR)?;
    let idrr = initiator_or_responder(m, id_role::RESPONDER_UID, id_role::RESPONDER)?;
    // 3. T within the window.
    let t_unix = t.saturating_sub(NTP_UNIX_OFFSET);
    if t < NTP_UNIX_OFFSET || t_unix.abs_diff(now_unix) > skew_secs {
        return Err(UploadRejection::Stale {
            t_unix,
            now_unix,
            skew_secs,
        });
    }
    // 4. Purpose tag.
    let purpose = (m.header.csb_id >> 28) as u8;
    if purpose != PURPOSE_CSK {
        return Err(UploadRejection::NotCsk(purpose));
    }
    // 5. ECCSI, against the KPAK of the initiator's KMS.
    let cert_i = kms_certs
        .iter()
        .find(|c| c.kms_uri == kmsi_uri)
        .ok_or_else(|| UploadRejection::UnknownKms(kmsi_uri.to_string()))?;
    let kpak = cert_i
        .kpak()
        .map_err(|_| UploadRejection::UnknownKms(kmsi_uri.to_string()))?;
    let initiator_uid = resolve_uid(&idri, cert_i, t_unix)?;
    eccsi::verify(&kpak, &initiator_uid, decoded.signed, &sign.signature)
        .map_err(|_| UploadRejection::BadSignature)?;
    // 6. IDRr is our UID now, and our key set is for that period.
    let (our_uid, _) =
        uid_for(&receiver.uri, &receiver.cert, now_unix).ok_or(UploadRejection::NoReceiverKey)?;
    if let Ok(kmsr) = m.idr(id_role::RESPONDER_KMS) {
        if kmsr.data != receiver.cert.kms_uri.as_bytes() {
            return Err(UploadRejection::NotForUs);
        }
    }
    if resolve_uid(&idrr, &receiver.cert, now_unix)? != our_uid {
        return Err(UploadRejection::NotForUs);
    }
    if receiver.uid != our_uid {
        return Err(UploadRejection::NoReceiverKey);
    }
    // 7. SAKKE.
    // (receiver.uid == our_uid here, which the decapsulator was prepared for.)
    let ssv = receiver
        .decapsulator
        .decapsulate(&sakke_payload.data)
        .map_err(UploadRejection::Decapsulation)?;
    let mut h = Sha256::new();
    h.update(m.header.csb_id.to_be_bytes());
    h.update(&rand);
    Ok(CskUpload {
        csk_id: m.header.csb_id,
        csk: Csk::new(*ssv),
        rand,
        t_unix,
        initiator_uid,
        initiator_kms: kmsi_uri.to_string(),
        message_id: h.finalize().into(),
    })
}

fn payload_kind(p: &Payload) -> u8 {
    match p {
        Payload::Timestamp(_) => mikey::payload_type::T,
        Payload::Rand(_) => mikey::payload_type::RAND,
        Payload::Idr(_) => mikey::payload_type::IDR,
        Payload::SecurityPolicy(_) => mikey::payload_type::SP,
        Payload::Sakke(_) => mikey::payload_type::SAKKE,
        Payload::GeneralExt(_) => mikey::payload_type::GENERAL_EXT,
    }
}

/// An identity as sent: a hashed UID (roles 8/9) or a URI (roles 1/2).
enum SentId {
    Uid(Uid),
    Uri(String),
}

fn initiator_or_responder(
    m: &mikey::Message,
    uid_role: u8,
    uri_role: u8,
) -> Result<SentId, UploadRejection> {
    match (m.idr(uid_role), m.idr(uri_role)) {
        (Ok(i), Err(0)) => i
            .data
            .as_slice()
            .try_into()
            .map(SentId::Uid)
            .map_err(|_| UploadRejection::Structure("a hashed UID IDR is not 32 octets")),
        (Err(0), Ok(i)) => std::str::from_utf8(&i.data)
            .map(|s| SentId::Uri(s.to_string()))
            .map_err(|_| UploadRejection::Structure("an IDR URI is not text")),
        _ => Err(UploadRejection::Structure(
            "exactly one IDRi and one IDRr (hashed UID or URI)",
        )),
    }
}

fn resolve_uid(id: &SentId, cert: &KmsCertificate, at_unix: u64) -> Result<Uid, UploadRejection> {
    match id {
        SentId::Uid(u) => Ok(*u),
        SentId::Uri(uri) => {
            uid_for(uri, cert, at_unix)
                .map(|(u, _)| u)
                .ok_or(UploadRejection::Structure(
                    "KMS certificate with key period 0",
                ))
        }
    }
}

/// What the lab builder needs to write a CSK upload.
pub struct BuildParams<'a> {
    /// The CSK to upload.
    pub csk: &'a Csk,
    /// Its id (the purpose nibble is not forced, so tests can write wrong ones).
    pub csk_id: u32,
    /// 16 random octets for RAND.
    pub rand: [u8; 16],
    /// T, as Unix seconds.
    pub t_unix: u64,
    /// The signer's KMS certificate and key set.
    pub initiator: (&'a KmsCertificate, &'a KmsKeySet),
    /// The receiver's URI (the server's MDSI) and KMS certificate.
    pub receiver: (&'a str, &'a KmsCertificate),
    /// 32 random octets for the ECCSI ephemeral j.
    pub j: [u8; 32],
}

/// Why a CSK upload could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Bad key material.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// SAKKE refused.
    #[error("SAKKE: {0}")]
    Sakke(SakkeError),
    /// ECCSI refused.
    #[error("ECCSI: {0}")]
    Eccsi(eccsi::EccsiError),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] mikey::EncodeError),
}

/// Writes a CSK I_MESSAGE (the layout the Streamwide CSK vector uses: HDR with a GENERIC-ID
/// map for CS ID 6, T, RAND, IDRi/IDRr as hashed UIDs, IDRkmsi, IDRkmsr, SAKKE, SIGN),
/// encrypted to the receiver and signed as the initiator. For lab tools and tests.
pub fn build(p: &BuildParams<'_>) -> Result<Vec<u8>, BuildError> {
    let (cert_i, keys_i) = p.initiator;
    let (receiver_uri, cert_r) = p.receiver;
    let initiator_uid = keys_i.uid()?;
    let signing = keys_i.signing_key()?;
    let kpak = cert_i.kpak()?;
    let (receiver_uid, _) = uid_for(receiver_uri, cert_r, p.t_unix).ok_or(KmsError::Period)?;
    let encapsulated =
        sakke::encapsulate(p.csk.octets(), &receiver_uid, &cert_r.sakke_public_key()?)
            .map_err(BuildError::Sakke)?;
    let idr = |role, data: &[u8]| {
        Payload::Idr(mikey::Idr {
            role,
            id_type: 1,
            data: data.to_vec(),
        })
    };
    let m = mikey::Message {
        header: mikey::Header {
            version: 1,
            data_type: mikey::DATA_TYPE_SAKKE,
            v: false,
            prf: 1,
            csb_id: p.csk_id,
            cs_map: mikey::CsIdMap::GenericId(vec![mikey::GenericCs {
                cs_id: 6,
                prot_type: 0,
                s: false,
                policies: vec![0],
                session_data: Vec::new(),
                spi: p.csk_id.to_be_bytes().to_vec(),
            }]),
        },
        payloads: vec![
            Payload::Timestamp(Timestamp::NtpUtc(uid::unix_to_ntp(p.t_unix) << 32)),
            Payload::Rand(p.rand.to_vec()),
            idr(id_role::INITIATOR_UID, &initiator_uid),
            idr(id_role::RESPONDER_UID, &receiver_uid),
            idr(id_role::INITIATOR_KMS, cert_i.kms_uri.as_bytes()),
            idr(id_role::RESPONDER_KMS, cert_r.kms_uri.as_bytes()),
            Payload::Sakke(mikey::Sakke {
                params: 1,
                id_scheme: 2,
                data: encapsulated.to_vec(),
            }),
        ],
        sign: None,
    };
    let to_sign = m.encode_to_be_signed(mikey::S_TYPE_ECCSI, Some(eccsi::SIGNATURE_LEN))?;
    let sig = signing
        .sign_with(&kpak, &initiator_uid, &to_sign, &p.j)
        .map_err(BuildError::Eccsi)?;
    let mut out = to_sign;
    out.extend_from_slice(&sig);
    Ok(out)
}

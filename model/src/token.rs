//! The token verdict: what the machine learns about an access token. The machine never sees a
//! JWT; the runtime's validator (or the model's IdMS) turns the token into a [`TokenVerdict`].

use serde::{Deserialize, Serialize};

use crate::ids::{McId, Service, ServiceSet, TokenId, UnixTime};

/// The outcome of validating one access token (TS 33.180 B.11, B.12).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenVerdict {
    /// Signature, issuer, audience and validity period checked; these are the claims.
    Verified(VerifiedClaims),
    /// The token was refused before any claim could be trusted.
    Rejected(TokenRejection),
}

/// Claims of a verified access token that service authorization uses (TS 33.180 B.2.2, c.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VerifiedClaims {
    /// MC service ID per service: the `mcptt_id`, `mcvideo_id` and `mcdata_id` claims.
    pub mcptt_id: Option<McId>,
    /// The `mcvideo_id` claim.
    pub mcvideo_id: Option<McId>,
    /// The `mcdata_id` claim.
    pub mcdata_id: Option<McId>,
    /// The services whose scope (`3gpp:mc:ptt_service`, …) the token grants.
    pub scopes: ServiceSet,
    /// The `exp` claim.
    pub exp: UnixTime,
    /// The `jti` claim, or a digest of the token when it has none.
    pub token_id: TokenId,
}

impl VerifiedClaims {
    /// The MC service ID claim for `service`.
    pub fn mc_id(&self, service: Service) -> Option<&McId> {
        match service {
            Service::Mcptt => self.mcptt_id.as_ref(),
            Service::Mcvideo => self.mcvideo_id.as_ref(),
            Service::Mcdata => self.mcdata_id.as_ref(),
        }
    }
}

/// Why a token (or its presentation) was refused. On the wire every reason becomes
/// `403 Forbidden` with `Warning: 399 <host> "101 service authorisation failed"` (TS 24.379 4.4);
/// the reason itself is only logged and counted, never sent (it would help an attacker).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    thiserror::Error,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenRejection {
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` (or `iat`) is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The JWS signature does not verify with the key named by the header.
    #[error("bad signature")]
    BadSignature,
    /// The `kid` names no trusted key.
    #[error("unknown signing key")]
    UnknownKey,
    /// The `alg` is not on the allow-list (`none` and HMAC never are).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// `iss` is not the configured IdMS.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name this server.
    #[error("wrong audience")]
    WrongAudience,
    /// The token does not grant the scope of the service it was presented for.
    #[error("missing scope for the service")]
    MissingScope,
    /// The token carries no MC service ID claim for the service it was presented for.
    #[error("missing MC service ID claim")]
    MissingMcId,
    /// Not a well-formed JWS compact serialization, or claims of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// Larger than the configured maximum.
    #[error("token too large")]
    TooLarge,
    /// Its `jti` was already seen inside the replay window.
    #[error("token replayed")]
    Replayed,
    /// Policy requires TS 33.180 clause 9 protection and the token came unprotected.
    #[error("token not protected as TS 33.180 clause 9 requires")]
    Unprotected,
    /// Binding it would exceed the per-MC-service-ID device limit (policy).
    #[error("device limit reached for this MC service ID")]
    DeviceLimit,
    /// Marked protected, but the protection could not be opened or verified (TS 33.180 clause 9).
    #[error("token protection could not be opened or verified")]
    BadProtection,
    /// Protected under a CSK the server does not hold.
    #[error("token protected under an unknown CSK")]
    UnknownCsk,
    /// Protected under a CSK tied to another MC service ID (TS 33.180 5.4).
    #[error("CSK belongs to another MC service ID")]
    CskOtherUser,
    /// Protected under a CSK tied to another IMPU (TS 33.180 5.4).
    #[error("CSK belongs to another IMPU")]
    CskOtherImpu,
    /// The MIKEY-SAKKE I_MESSAGE in the request failed a cryptographic or syntactic check.
    #[error("CSK upload refused")]
    KeyUploadRefused,
    /// The I_MESSAGE was seen before (RFC 3830 replay protection).
    #[error("CSK upload replayed")]
    KeyUploadReplayed,
    /// The I_MESSAGE's timestamp is outside the allowed clock skew.
    #[error("CSK upload not fresh")]
    KeyUploadStale,
    /// The I_MESSAGE was signed by another user than the token's MC service ID (IDRi ≠ UID).
    #[error("CSK upload signed by another user")]
    KeyUploadWrongSigner,
}

impl TokenRejection {
    /// Every reason, for metrics and catalogues.
    pub const ALL: [TokenRejection; 22] = [
        TokenRejection::Expired,
        TokenRejection::NotYetValid,
        TokenRejection::BadSignature,
        TokenRejection::UnknownKey,
        TokenRejection::AlgorithmNotAllowed,
        TokenRejection::WrongIssuer,
        TokenRejection::WrongAudience,
        TokenRejection::MissingScope,
        TokenRejection::MissingMcId,
        TokenRejection::Malformed,
        TokenRejection::TooLarge,
        TokenRejection::Replayed,
        TokenRejection::Unprotected,
        TokenRejection::DeviceLimit,
        TokenRejection::BadProtection,
        TokenRejection::UnknownCsk,
        TokenRejection::CskOtherUser,
        TokenRejection::CskOtherImpu,
        TokenRejection::KeyUploadRefused,
        TokenRejection::KeyUploadReplayed,
        TokenRejection::KeyUploadStale,
        TokenRejection::KeyUploadWrongSigner,
    ];

    /// A stable snake_case label (metrics, logs, JSON).
    pub fn label(self) -> &'static str {
        match self {
            TokenRejection::Expired => "expired",
            TokenRejection::NotYetValid => "not_yet_valid",
            TokenRejection::BadSignature => "bad_signature",
            TokenRejection::UnknownKey => "unknown_key",
            TokenRejection::AlgorithmNotAllowed => "algorithm_not_allowed",
            TokenRejection::WrongIssuer => "wrong_issuer",
            TokenRejection::WrongAudience => "wrong_audience",
            TokenRejection::MissingScope => "missing_scope",
            TokenRejection::MissingMcId => "missing_mc_id",
            TokenRejection::Malformed => "malformed",
            TokenRejection::TooLarge => "too_large",
            TokenRejection::Replayed => "replayed",
            TokenRejection::Unprotected => "unprotected",
            TokenRejection::DeviceLimit => "device_limit",
            TokenRejection::BadProtection => "bad_protection",
            TokenRejection::UnknownCsk => "unknown_csk",
            TokenRejection::CskOtherUser => "csk_other_user",
            TokenRejection::CskOtherImpu => "csk_other_impu",
            TokenRejection::KeyUploadRefused => "key_upload_refused",
            TokenRejection::KeyUploadReplayed => "key_upload_replayed",
            TokenRejection::KeyUploadStale => "key_upload_stale",
            TokenRejection::KeyUploadWrongSigner => "key_upload_wrong_signer",
        }
    }
}

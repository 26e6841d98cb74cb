//! What the machine is told: one [`Input`] per SIP request or clock event. The SIP edge in `src/`
//! builds these from parsed messages; the model builds them from its environment. Neither SIP
//! syntax nor JWTs reach the machine: identities arrive already classified as trusted or not,
//! tokens already turned into verdicts, fresh entity-tags already drawn.

use serde::{Deserialize, Serialize};

use crate::durable::{Reload, Snapshot};
use crate::ids::{ClientId, CskId, ETag, Impu, KeyMessageId, McId, Service, ServiceSet, UnixTime};
use crate::token::TokenVerdict;

/// One event for [`crate::Machine::handle`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Input {
    /// A third-party REGISTER from the S-CSCF (TS 24.229 5.4.1.7; TS 24.379 7.3.2).
    ThirdPartyRegister(ThirdPartyRegister),
    /// A PUBLISH for service authorization and/or service settings (TS 24.379 7.3.3–7.3.5;
    /// RFC 3903).
    Publish(Publish),
    /// The clock moved: end publications, registrations and (by policy) bindings whose time has
    /// come. Use [`crate::Machine::next_deadline`] to know when to send it.
    Tick,
    /// The server restarted: volatile state is lost (TS 24.379 gives the client 412 or 404/141
    /// to recover, dossier Q-15). Provisioned CSKs are configuration and survive.
    Restart,
    /// Start-up with a durable store (issue 13): the store's content replaces the machine's
    /// state; deadlines are armed again from `now`, and whatever ran out meanwhile ends at once.
    Load(Box<Snapshot>),
    /// Several instances on one store (issue 13): the store's current content for the keys
    /// listed replaces the machine's for them (an instance's cached state may be older than
    /// another instance's write; a compare-and-set conflict undoes this instance's own change).
    /// Not a decision: it emits nothing, persists nothing (what it carries is durable) and
    /// re-arms the deadlines of what it carries; whatever ran out ends at the next
    /// [`Input::Tick`].
    Reload(Box<Reload>),
    /// A CSK provisioned out of band for one MC service ID (the server's lab table of CSKs; in a
    /// deployment CSKs arrive by MIKEY-SAKKE, [`Publish::key_upload`]). The machine ties it to
    /// `mc_id` now and to the IMPU it is first used from (TS 33.180 5.4).
    ProvisionCsk {
        /// The key's identifier.
        csk_id: CskId,
        /// The MC service ID the key belongs to.
        mc_id: McId,
    },
}

/// Whether a request's Request-URI names a resource of this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterTarget {
    /// The server URI, or a PSI this server serves (TS 24.229 5.4.1.7: the iFC names it).
    Ours,
    /// Anything else (404).
    NotOurs,
}

/// The resource a PUBLISH's Request-URI names (RFC 3903 step 1; dossier Q-14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublishTarget {
    /// The participating-function PSI of this service.
    Service(Service),
    /// Not a PSI this server serves (404).
    NotOurs,
    /// A PSI shared by several services, and nothing in the request (info body type,
    /// `Accept-Contact`, `P-Preferred-Service`) names one of them (400).
    AmbiguousPsi,
}

/// The identity a request carries, as the SIP edge judged it.
///
/// Only the SIP core asserts identity (P-Asserted-Identity on PUBLISH, To of the third-party
/// REGISTER, TS 24.379 7.3.3–7.3.5). The edge decides whether the previous hop is a trusted SIP
/// core; the machine refuses everything that is not [`AssertedIdentity::Trusted`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssertedIdentity {
    /// Asserted by a trusted SIP core.
    Trusted(Impu),
    /// The request came from an address that is not a trusted SIP core; whatever it claims is
    /// ignored.
    Untrusted,
    /// From a trusted SIP core but without the asserted identity.
    Missing,
}

/// A third-party REGISTER (TS 24.229 5.4.1.7).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ThirdPartyRegister {
    /// Whether the Request-URI is ours.
    pub target: RegisterTarget,
    /// The registered IMPU (To header), as asserted by the S-CSCF.
    pub impu: AssertedIdentity,
    /// Granted registration duration in seconds (Contact `expires`, else `Expires`); 0 is a (user
    /// or network) de-registration; `None` when the request carries neither, and
    /// [`crate::Policy::default_register_expires`] applies (RFC 3261 10.2.1.1).
    pub expires: Option<u32>,
    /// The MC service feature tags the UE's own REGISTER carried (from the `message/sip` body).
    /// `None` when the S-CSCF did not include the UE's REGISTER, so the services are unknown and
    /// no service log-off can be inferred (dossier ).
    pub services: Option<ServiceSet>,
    /// Access tokens the UE put in its REGISTER (one `mcptt-info`-like body per service), as
    /// verdicts. Honoured only when [`crate::Policy::register_token`] says so.
    pub embedded: Vec<(Service, Authorization)>,
}

/// A PUBLISH (RFC 3903) with `Event` and body already classified.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Publish {
    /// The resource the Request-URI names (RFC 3903 step 1).
    pub target: PublishTarget,
    /// The `Event` header's package (RFC 3903 step 2).
    pub event: EventPackage,
    /// P-Asserted-Identity as judged by the edge.
    pub impu: AssertedIdentity,
    /// `SIP-If-Match` (RFC 3903 step 3).
    pub if_match: IfMatch,
    /// `Expires` in seconds, if present (RFC 3903 step 4).
    pub expires: Option<u32>,
    /// The body, classified.
    pub body: PublishBody,
    /// A MIKEY-SAKKE I_MESSAGE carrying a CSK (an `application/mikey` part, TS 33.180 5.4), as the
    /// shell verified it (boxed: most PUBLISHes carry none).
    pub key_upload: Option<Box<KeyUpload>>,
    /// A fresh entity-tag to issue if this request succeeds. The caller guarantees it was never
    /// issued before (RFC 3903 step 6).
    pub fresh_etag: ETag,
}

/// The `Event` header of a PUBLISH.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventPackage {
    /// `poc-settings` (RFC 4354; TS 24.379 7.3.3).
    PocSettings,
    /// Any other package.
    Other,
    /// No `Event` header.
    Missing,
}

/// `SIP-If-Match` of a PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IfMatch {
    /// No `SIP-If-Match`: an initial publication.
    Absent,
    /// Exactly one entity-tag.
    One(ETag),
    /// More than one entity-tag (RFC 3903 step 3: 400).
    Many,
}

/// A PUBLISH body, classified by the edge (TS 24.379 7.3.3 vs 7.3.4; RFC 3903 step 5).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublishBody {
    /// No body: a refresh or a removal.
    Empty,
    /// The info body carries an access token: service authorization (TS 24.379 7.3.3).
    Authorization(Authorization),
    /// The info body carries `<mcptt-request-uri>` and no token: settings only (TS 24.379 7.3.4).
    SettingsOnly {
        /// The MC service ID the client says it is (`<mcptt-request-uri>`); only ever compared
        /// with an existing binding, never bound.
        claimed_mc_id: McId,
        /// `<mcptt-client-id>`.
        client_id: ClientId,
        /// `application/poc-settings+xml`, if present.
        settings: Option<Settings>,
    },
    /// A body whose content type the `poc-settings` package does not take (415).
    UnsupportedMediaType,
    /// A body of the right type that could not be used (400), with the reason.
    Malformed(MalformedBody),
}

/// Why a PUBLISH body could not be used (400). The parser's own words go to the log; the reason
/// phrase on the wire is [`MalformedBody::text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedBody {
    /// A body without `Content-Type`.
    NoContentType,
    /// A `Content-Type` that is not a media type.
    BadContentType,
    /// A `multipart/*` body that cannot be split (no boundary, no closing delimiter, …).
    BadMultipart,
    /// The service's info body is not well-formed or breaks its limits (XML, depth, size).
    BadInfo,
    /// Two info bodies for the service.
    DuplicateInfo,
    /// The `application/poc-settings+xml` body is not usable.
    BadSettings,
    /// Two poc-settings bodies.
    DuplicateSettings,
    /// No info body for the service.
    NoInfo,
    /// The info body has no `<mcptt-client-id>` (or its video/data twin).
    NoClientId,
    /// The info body has neither an access token nor a request URI.
    NoTokenNorRequestUri,
    /// A protected `<mcptt-request-uri>` or client ID in a settings-only body could not be opened.
    UnreadableProtectedValue,
}

impl MalformedBody {
    /// The reason phrase of the 400.
    pub fn text(self) -> &'static str {
        match self {
            MalformedBody::NoContentType => "body without Content-Type",
            MalformedBody::BadContentType => "unreadable Content-Type",
            MalformedBody::BadMultipart => "unreadable multipart body",
            MalformedBody::BadInfo => "unreadable MC info body",
            MalformedBody::DuplicateInfo => "two MC info bodies for the service",
            MalformedBody::BadSettings => "unreadable poc-settings body",
            MalformedBody::DuplicateSettings => "two poc-settings bodies",
            MalformedBody::NoInfo => "no MC info body for the service",
            MalformedBody::NoClientId => "MC info body without client id",
            MalformedBody::NoTokenNorRequestUri => {
                "MC info body has neither an access token nor a request URI"
            }
            MalformedBody::UnreadableProtectedValue => "protected value cannot be opened",
        }
    }
}

/// How the access token arrived (TS 33.180 clause 9), as the shell found it. The shell opens
/// and checks the protection; the machine decides what it means under the policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protection {
    /// In clear (`type="Normal"` or no `type`).
    Clear,
    /// Decrypted (and, when signed, its signature verified) under the CSK this names.
    Csk(CskId),
    /// Marked protected but could not be opened or verified.
    Failed(ProtectionFailure),
}

/// Why a protected value could not be opened or verified (TS 33.180 clause 9; W3C xmlenc 1.1,
/// xmldsig). Each is answered 403 with Warning 101.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectionFailure {
    /// `ds:KeyName` names no CSK the server holds.
    UnknownKey,
    /// Authenticated decryption failed (wrong key, altered ciphertext or tag).
    Undecryptable,
    /// The `EncryptionMethod` or `SignatureMethod` is not the one clause 9 uses.
    WrongAlgorithm,
    /// `type="Encrypted"` without exactly one well-formed `EncryptedData`, bad base64, oversize.
    Malformed,
    /// The XML signature over the body does not verify.
    BadSignature,
    /// This server does not open protected values (`token_protection = off`).
    NotSupported,
}

/// A MIKEY-SAKKE I_MESSAGE (RFC 6509) carrying a CSK, as the shell found it after the
/// cryptographic checks (parse, timestamp read, ECCSI signature against the KMS, SAKKE
/// decapsulation with the server's key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyUpload {
    /// Parsed, signed by a known user and decapsulated.
    Verified {
        /// The CSK's identifier (CSB-ID).
        csk_id: CskId,
        /// The message's identity, for replay detection.
        message_id: KeyMessageId,
        /// The message's timestamp (MIKEY T payload), for freshness.
        sent_at: UnixTime,
        /// The MC service ID of the presented token whose MIKEY-SAKKE UID (TS 33.180 F.2.1) is
        /// the message's IDRi; `None` when it is none of them.
        signer: Option<McId>,
    },
    /// Refused by a cryptographic or syntactic check.
    Rejected(KeyUploadFailure),
}

/// Why the shell could not use an I_MESSAGE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyUploadFailure {
    /// Not a MIKEY-SAKKE I_MESSAGE (payload chain, lengths, size).
    Malformed,
    /// The CSB-ID's purpose tag is not "CSK".
    NotACsk,
    /// IDRkmsi names no KMS the server trusts.
    UnknownKms,
    /// The ECCSI signature does not verify.
    BadSignature,
    /// IDRr is not the server's UID for the current key period.
    NotForThisServer,
    /// SAKKE decapsulation failed.
    Undecryptable,
}

/// An access token presented for one service, with the client that presented it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Authorization {
    /// The validator's verdict on `<mcptt-access-token>` (or its video/data twin).
    pub token: TokenVerdict,
    /// How the token arrived (TS 33.180 clause 9: XML encryption and signature with CSK-derived
    /// keys).
    pub protection: Protection,
    /// `<mcptt-client-id>`.
    pub client_id: ClientId,
    /// `application/poc-settings+xml`, if present.
    pub settings: Option<Settings>,
}

/// A client's service settings from `application/poc-settings+xml` (RFC 4354; TS 24.379
/// 7.4.1.2.2), reduced to the fields the participating function acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Settings {
    /// `<answer-mode>`: `Some(true)` for automatic, `Some(false)` for manual.
    pub answer_mode_automatic: Option<bool>,
    /// `<selected-user-profile-index>`.
    pub user_profile_index: Option<u8>,
    /// `<multiplex-support>`.
    pub multiplex_support: Option<bool>,
}

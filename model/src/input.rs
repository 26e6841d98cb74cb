//! What the machine is told: one [`Input`] per SIP request or clock event. The SIP edge in `src/`
//! builds these from parsed messages; the model builds them from its environment. Neither SIP
//! syntax nor JWTs reach the machine: identities arrive already classified as trusted or not,
//! tokens already turned into verdicts, fresh entity-tags already drawn.

use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, ETag, Impu, McId, Service, ServiceSet};
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
    /// to recover, dossier Q-15).
    Restart,
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
    /// The registered IMPU (To header), as asserted by the S-CSCF.
    pub impu: AssertedIdentity,
    /// Granted registration duration in seconds; 0 is a (user or network) de-registration.
    pub expires: u32,
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
    /// The service whose participating-function PSI the Request-URI names; `None` when the
    /// Request-URI is not a resource this server serves (RFC 3903 step 1: 404).
    pub service: Option<Service>,
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
    Malformed(String),
}

/// An access token presented for one service, with the client that presented it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Authorization {
    /// The validator's verdict on `<mcptt-access-token>` (or its video/data twin).
    pub token: TokenVerdict,
    /// Whether the token arrived protected as TS 33.180 clause 9 defines (XML encryption and
    /// signature with CSK-derived keys).
    pub protected: bool,
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

//! What the machine answers: the final SIP response to each request and the binding events.
//! The runtime only carries these out; it decides nothing.

use serde::{Deserialize, Serialize};

use crate::durable::{Persist, Seq};
use crate::ids::{ClientId, CskId, ETag, Impu, McId, Service};
use crate::input::MalformedBody;
use crate::token::TokenRejection;

/// One effect of [`crate::Machine::handle`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Output {
    /// The final response to the request just handled (exactly one per request input).
    Response(Response),
    /// A binding was created, changed or removed.
    Binding(BindingEvent),
    /// A CSK was accepted or must be forgotten: the shell carries this out on its key store.
    Csk(CskEvent),
    /// Changes to make durable (issue 13): the driver writes them to its store and sends no
    /// response whose [`Response::wait_for`] is at or after `seq` before they are durable.
    Persist(Persist),
}

/// A change to the CSKs the server holds (TS 33.180 5.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CskEvent {
    /// The CSK uploaded in this request is now tied to (IMPU, MC service ID): keep it.
    Accepted {
        /// The key.
        csk_id: CskId,
        /// The IMPU it was uploaded from.
        impu: Impu,
        /// The MC service ID whose user signed the upload.
        mc_id: McId,
    },
    /// The CSK is no longer tied to anything: forget it (zeroize).
    Dropped {
        /// The key.
        csk_id: CskId,
        /// Why.
        cause: CskDropCause,
    },
}

/// Why a CSK was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CskDropCause {
    /// Its user has no binding left on its IMPU (log-off, de-registration, expiry).
    NoBindingLeft,
    /// Another user took over the client (user switch, CR 5.1.3.2.1).
    UserSwitch,
    /// A newer CSK was uploaded for the same (IMPU, MC service ID).
    Replaced,
    /// The server restarted.
    Restart,
}

/// The final response to a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Response {
    /// What happened; decides the status code and Warning.
    pub outcome: Outcome,
    /// `SIP-ETag` (2xx to PUBLISH only, RFC 3903 step 6).
    pub etag: Option<ETag>,
    /// `Expires`: the chosen publication or registration duration (2xx only).
    pub expires: Option<u32>,
    /// Issue 13: send this response only once every [`Persist`] up to this sequence number is
    /// durable (persist, then send). [`Seq::ZERO`]: nothing to wait for.
    #[serde(default)]
    pub wait_for: Seq,
}

impl Response {
    /// The SIP status code.
    pub fn status(&self) -> u16 {
        self.outcome.status()
    }

    /// The `Warning` this outcome carries, if any.
    pub fn warning(&self) -> Option<Warning> {
        self.outcome.warning()
    }
}

/// A `Warning: 399 <host> "<text>"` header (RFC 3261 20.43): the MC warnings of TS 24.379 4.4,
/// or the name of our own policy when only our policy refused (so a lab sees why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Warning {
    /// A TS 24.379 4.4 MC warning: the text is `"<code> <text>"`.
    Mc(McWarning),
    /// A refusal made by a policy of this server, not by a spec: the text names the policy.
    Policy(PolicyWarning),
}

impl Warning {
    /// The quoted warn-text.
    pub fn text(self) -> String {
        match self {
            Warning::Mc(w) => format!("{:03} {}", w.code(), w.text()),
            Warning::Policy(p) => p.text().to_owned(),
        }
    }

    /// The MC warning code, if this is an MC warning.
    pub fn mc_code(self) -> Option<u16> {
        match self {
            Warning::Mc(w) => Some(w.code()),
            Warning::Policy(_) => None,
        }
    }
}

/// A refusal that only a policy of this server makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolicyWarning {
    /// `registration_required`: the asserted IMPU has no third-party registration here.
    RegistrationRequired,
}

impl PolicyWarning {
    /// The warn-text: the policy's name and what it means.
    pub fn text(self) -> &'static str {
        match self {
            PolicyWarning::RegistrationRequired => {
                "registration_required: no third-party registration for this IMPU"
            }
        }
    }
}

/// The MC warning texts this machine sends, as `Warning: 399 <host> "<code> <text>"`
/// (TS 24.379 4.4.1/4.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum McWarning {
    /// `101 service authorisation failed` (TS 24.379 7.3.3).
    ServiceAuthorisationFailed,
    /// `141 user unknown to the participating function` (TS 24.379 7.3.4).
    UserUnknown,
}

impl McWarning {
    /// The three-digit MC warning code.
    pub fn code(self) -> u16 {
        match self {
            McWarning::ServiceAuthorisationFailed => 101,
            McWarning::UserUnknown => 141,
        }
    }

    /// The warning text after the code.
    pub fn text(self) -> &'static str {
        match self {
            McWarning::ServiceAuthorisationFailed => "service authorisation failed",
            McWarning::UserUnknown => "user unknown to the participating function",
        }
    }
}

/// The outcome of one request. Success variants map to 200; each refusal maps to exactly one
/// status code and Warning, in the manner of rustls mapping errors to alerts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Third-party REGISTER accepted (registration, refresh or de-registration).
    Registered,
    /// PUBLISH with a valid token: the binding is (re)established (TS 24.379 7.3.3).
    Authorized,
    /// Settings-only PUBLISH stored (TS 24.379 7.3.4).
    SettingsUpdated,
    /// Body-less PUBLISH refreshed the publication (RFC 3903 refresh).
    Refreshed,
    /// `Expires: 0`: publication and binding removed (TS 24.379 7.3.5; RFC 3903 remove).
    Removed,
    /// 400: the request breaks RFC 3903 or the body cannot be used.
    BadRequest(BadRequest),
    /// 403 with `101 service authorisation failed`: the token (or its presentation) was refused.
    ServiceAuthorisationFailed(TokenRejection),
    /// 403 without an MC warning: the identity was not asserted by a trusted SIP core, or the
    /// asserted IMPU is not registered.
    Forbidden(ForbiddenReason),
    /// 404 without warning: the Request-URI is not a PSI (PUBLISH, RFC 3903 step 1) or the server
    /// URI (third-party REGISTER) of this server.
    NotOurResource,
    /// 404 with `141 user unknown to the participating function` (TS 24.379 7.3.4).
    UserUnknown,
    /// 412: `SIP-If-Match` names no current publication of this IMPU and service (RFC 3903).
    ConditionalRequestFailed,
    /// 415: body type not for `poc-settings` (RFC 3903 step 5).
    UnsupportedMediaType,
    /// 423 with `Min-Expires` (RFC 3903 step 4).
    IntervalTooBrief {
        /// The `Min-Expires` value.
        min_expires: u32,
    },
    /// 489: `Event` missing or not `poc-settings` (RFC 3903 step 2).
    BadEvent,
}

/// Why a request got 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BadRequest {
    /// The body cannot be used.
    Body(MalformedBody),
    /// More than one entity-tag in `SIP-If-Match` (RFC 3903 step 3).
    ManyEntityTags,
    /// A PUBLISH without body and without `SIP-If-Match` (RFC 3903 step 5).
    NoBodyNoEntityTag,
    /// The Request-URI is a PSI shared by several services and nothing names one.
    AmbiguousPsi,
}

impl BadRequest {
    /// The reason phrase of the 400.
    pub fn text(self) -> &'static str {
        match self {
            BadRequest::Body(b) => b.text(),
            BadRequest::ManyEntityTags => "more than one entity-tag in SIP-If-Match",
            BadRequest::NoBodyNoEntityTag => "PUBLISH without body needs SIP-If-Match",
            BadRequest::AmbiguousPsi => {
                "Request-URI is a PSI shared by several MC services and nothing names one"
            }
        }
    }
}

/// Why a request got 403 without an MC warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ForbiddenReason {
    /// Not from a trusted SIP core: P-Asserted-Identity is not believed.
    UntrustedSource,
    /// From a trusted SIP core but without an asserted identity.
    NoAssertedIdentity,
    /// The asserted IMPU has no third-party registration here (policy `registration_required`).
    NotRegistered,
}

impl ForbiddenReason {
    /// A stable label.
    pub fn label(self) -> &'static str {
        match self {
            ForbiddenReason::UntrustedSource => "untrusted_source",
            ForbiddenReason::NoAssertedIdentity => "no_asserted_identity",
            ForbiddenReason::NotRegistered => "not_registered",
        }
    }
}

impl Outcome {
    /// The SIP status code.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Registered
            | Outcome::Authorized
            | Outcome::SettingsUpdated
            | Outcome::Refreshed
            | Outcome::Removed => 200,
            Outcome::BadRequest(_) => 400,
            Outcome::ServiceAuthorisationFailed(_) | Outcome::Forbidden(_) => 403,
            Outcome::NotOurResource | Outcome::UserUnknown => 404,
            Outcome::ConditionalRequestFailed => 412,
            Outcome::UnsupportedMediaType => 415,
            Outcome::IntervalTooBrief { .. } => 423,
            Outcome::BadEvent => 489,
        }
    }

    /// Whether this is a success (2xx).
    pub fn is_success(&self) -> bool {
        self.status() / 100 == 2
    }

    /// The `Warning` header, if any: the TS 24.379 MC warning, or the policy that refused.
    pub fn warning(&self) -> Option<Warning> {
        match self {
            Outcome::ServiceAuthorisationFailed(_) => {
                Some(Warning::Mc(McWarning::ServiceAuthorisationFailed))
            }
            Outcome::UserUnknown => Some(Warning::Mc(McWarning::UserUnknown)),
            Outcome::Forbidden(ForbiddenReason::NotRegistered) => {
                Some(Warning::Policy(PolicyWarning::RegistrationRequired))
            }
            _ => None,
        }
    }

    /// The reason phrase, where the default one would not say enough (400).
    pub fn reason_phrase(&self) -> Option<&'static str> {
        match self {
            Outcome::BadRequest(b) => Some(b.text()),
            _ => None,
        }
    }

    /// A stable label for logs and metrics (`authorized`, `token_expired`, …).
    pub fn label(&self) -> String {
        match self {
            Outcome::Registered => "registered".into(),
            Outcome::Authorized => "authorized".into(),
            Outcome::SettingsUpdated => "settings_updated".into(),
            Outcome::Refreshed => "refreshed".into(),
            Outcome::Removed => "removed".into(),
            Outcome::BadRequest(_) => "bad_request".into(),
            Outcome::ServiceAuthorisationFailed(r) => format!("token_{}", r.label()),
            Outcome::Forbidden(r) => r.label().into(),
            Outcome::NotOurResource => "not_our_resource".into(),
            Outcome::UserUnknown => "user_unknown".into(),
            Outcome::ConditionalRequestFailed => "conditional_request_failed".into(),
            Outcome::UnsupportedMediaType => "unsupported_media_type".into(),
            Outcome::IntervalTooBrief { .. } => "interval_too_brief".into(),
            Outcome::BadEvent => "bad_event".into(),
        }
    }
}

/// The key of a binding: one MC client of one IMPU for one service (dossier b.1). The MC
/// service ID is the binding's value, so a user switch on the same client changes the value,
/// never adds a second one (S-4).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BindingKey {
    /// The network-asserted IMPU (first, so that all bindings of one IMPU are adjacent).
    pub impu: Impu,
    /// The service.
    pub service: Service,
    /// The MC client ID.
    pub client_id: ClientId,
}

/// A change to the binding table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BindingEvent {
    /// A new IMPU ↔ MC service ID binding.
    Bound {
        /// Which binding.
        key: BindingKey,
        /// The MC service ID from the token.
        mc_id: McId,
    },
    /// The binding now maps to another MC service ID: a user switch on the same client.
    Rebound {
        /// Which binding.
        key: BindingKey,
        /// The previous MC service ID.
        from: McId,
        /// The new MC service ID.
        to: McId,
    },
    /// The binding is gone.
    Unbound {
        /// Which binding.
        key: BindingKey,
        /// The MC service ID it had.
        mc_id: McId,
        /// Why.
        cause: UnbindCause,
    },
}

/// Why a binding ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnbindCause {
    /// Third-party REGISTER with `Expires: 0`.
    Deregistered,
    /// The registration ran out without refresh.
    RegistrationExpired,
    /// Re-registration without the service's feature tag: MC service log-off (TS 24.379 7.1).
    ServiceLogOff,
    /// PUBLISH with `Expires: 0` (TS 24.379 7.3.5).
    PublicationRemoved,
    /// The publication ran out without refresh (RFC 3903 section 5).
    PublicationExpired,
    /// The token's `exp` passed (policy `token_expiry = end-binding`, dossier Q-4).
    TokenExpired,
    /// A PUBLISH with a refused token for an already bound client (policy
    /// `failed_reauthorization = drop-binding`, dossier Q-9).
    FailedReauthorization,
    /// The same client authorized under another IMPU (policy `impu_change = move-binding`,
    /// dossier Q-13).
    MovedToNewImpu,
    /// The server restarted and the binding was volatile.
    Restart,
}

impl UnbindCause {
    /// A stable label.
    pub fn label(self) -> &'static str {
        match self {
            UnbindCause::Deregistered => "deregistered",
            UnbindCause::RegistrationExpired => "registration_expired",
            UnbindCause::ServiceLogOff => "service_log_off",
            UnbindCause::PublicationRemoved => "publication_removed",
            UnbindCause::PublicationExpired => "publication_expired",
            UnbindCause::TokenExpired => "token_expired",
            UnbindCause::FailedReauthorization => "failed_reauthorization",
            UnbindCause::MovedToNewImpu => "moved_to_new_impu",
            UnbindCause::Restart => "restart",
        }
    }
}

//! Identifiers in the spec's words: IMPU, MC service ID, MC client ID, SIP-ETag, and the MC
//! services themselves. Each is a newtype so that an IMPU can never be passed where an MC service
//! ID is expected.
//!
//! Representation (issue 15: memory per binding, docs/benchmarks.md):
//! - The long identifiers (IMPU, MC service ID, MC client ID, token ID, I_MESSAGE ID) share their
//!   bytes behind one 8-byte pointer ([`ThinStr`]: a 4-byte reference count and a 2-byte length
//!   in front of the text), so cloning one into a binding, an index and an event costs a
//!   reference count, not an allocation. `Arc<str>` took a 16-byte handle and a 16-byte header.
//! - The SIP-ETags the server mints (at most 23 bytes until 2^40 tags) are inline (`SmolStr`,
//!   24 bytes, no allocation; a longer value falls back to a shared heap string).
//! - CSK IDs (eight hex digits) are inline in 16 bytes (`EcoString`, up to 15 bytes without
//!   allocation), the key of the CSK table.
//!
//! `SmolStr` for every identifier was tried and taken out: 24 bytes a handle, and the long
//! identifiers exceed 23 bytes, so they still allocated.

use std::fmt;

use ecow::EcoString;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::thin_str::{TaggedThinStr, ThinStr};

/// Seconds since the Unix epoch. The machine never reads a clock: the caller passes `now`.
///
/// Token `exp`/`iat`/`nbf` claims are in the same unit (RFC 7519 NumericDate), so a token verdict
/// and the machine's own deadlines compare directly.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// `self + secs`, saturating.
    pub fn plus(self, secs: u64) -> UnixTime {
        UnixTime(self.0.saturating_add(secs))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The MC services whose user service authorization this machine performs (TS 33.180 5.1.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// MCPTT (TS 24.379).
    Mcptt,
    /// MCVideo (TS 24.281).
    Mcvideo,
    /// MCData (TS 24.282).
    Mcdata,
}

impl Service {
    /// Every service, in a fixed order.
    pub const ALL: [Service; 3] = [Service::Mcptt, Service::Mcvideo, Service::Mcdata];

    /// The media feature tag a client puts in its Contact (TS 24.379 7.2.1; R-18a, c.6).
    pub fn feature_tag(self) -> &'static str {
        match self {
            Service::Mcptt => "g.3gpp.mcptt",
            Service::Mcvideo => "g.3gpp.mcvideo",
            Service::Mcdata => "g.3gpp.mcdata",
        }
    }

    /// The access-token scope that authorizes this service (TS 33.180 B.4.2.2).
    pub fn scope(self) -> &'static str {
        match self {
            Service::Mcptt => "3gpp:mc:ptt_service",
            Service::Mcvideo => "3gpp:mc:video_service",
            Service::Mcdata => "3gpp:mc:data_service",
        }
    }

    /// The access-token claim carrying this service's MC service ID (TS 33.180 B.2.2).
    pub fn id_claim(self) -> &'static str {
        match self {
            Service::Mcptt => "mcptt_id",
            Service::Mcvideo => "mcvideo_id",
            Service::Mcdata => "mcdata_id",
        }
    }

    /// Short lower-case name (`mcptt`, `mcvideo`, `mcdata`).
    pub fn name(self) -> &'static str {
        match self {
            Service::Mcptt => "mcptt",
            Service::Mcvideo => "mcvideo",
            Service::Mcdata => "mcdata",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Service::Mcptt => 1,
            Service::Mcvideo => 2,
            Service::Mcdata => 4,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of MC services (feature tags present in a REGISTER, scopes granted by a token).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ServiceSet(u8);

impl ServiceSet {
    /// No service.
    pub const EMPTY: ServiceSet = ServiceSet(0);
    /// MCPTT, MCVideo and MCData.
    pub const ALL: ServiceSet = ServiceSet(7);

    /// The set holding just `s`.
    pub fn only(s: Service) -> ServiceSet {
        ServiceSet(s.bit())
    }

    /// Adds `s`.
    pub fn insert(&mut self, s: Service) {
        self.0 |= s.bit();
    }

    /// Whether `s` is in the set.
    pub fn contains(self, s: Service) -> bool {
        self.0 & s.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The services in the set, in [`Service::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Service> {
        Service::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Service> for ServiceSet {
    fn from_iter<I: IntoIterator<Item = Service>>(iter: I) -> Self {
        let mut set = ServiceSet::EMPTY;
        for s in iter {
            set.insert(s);
        }
        set
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(ThinStr);

        impl $name {
            /// Wraps a string as this identifier.
            pub fn new(s: impl AsRef<str>) -> Self {
                $name(ThinStr::new(s.as_ref()))
            }

            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        string_id_common!($name);
    };
    (inline16; $(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(EcoString);

        impl $name {
            /// Wraps a string as this identifier (inline up to 15 bytes).
            pub fn new(s: impl AsRef<str>) -> Self {
                $name(EcoString::from(s.as_ref()))
            }

            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        string_id_common!($name);
    };
    (inline; $(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(SmolStr);

        impl $name {
            /// Wraps a string as this identifier (inline up to 23 bytes).
            pub fn new(s: impl AsRef<str>) -> Self {
                $name(SmolStr::new(s))
            }

            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        string_id_common!($name);
    };
}

macro_rules! string_id_common {
    ($name:ident) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::new(s)
            }
        }
    };
}

string_id!(
    /// IMS public user identity: the registered identity the SIP core asserts
    /// (P-Asserted-Identity on PUBLISH, To of the third-party REGISTER).
    Impu
);
/// An [`Impu`] and a tag below 4 in one 8-byte handle, for the deadline index (issue 15: its
/// entries take 16 bytes instead of 24). Equality, order and hash are those of (tag, IMPU).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TaggedImpu(TaggedThinStr);

impl TaggedImpu {
    /// `impu` with `tag` (below 4).
    pub(crate) fn new(impu: Impu, tag: u8) -> Self {
        TaggedImpu(TaggedThinStr::new(impu.0, tag))
    }

    /// The tag.
    pub(crate) fn tag(&self) -> u8 {
        self.0.tag()
    }

    /// The IMPU (a shared handle to the same string).
    pub(crate) fn impu(&self) -> Impu {
        Impu(self.0.thin())
    }
}

string_id!(
    /// MC service ID (MCPTT ID, MCVideo ID or MCData ID): a URI taken only from a verified
    /// access-token claim (`mcptt_id`, `mcvideo_id`, `mcdata_id`).
    McId
);
string_id!(
    /// MC service client ID (`<mcptt-client-id>`): the client's instance, one per device.
    ClientId
);
string_id!(inline;
    /// RFC 3903 entity-tag, sent as SIP-ETag and echoed in SIP-If-Match.
    ETag
);
string_id!(
    /// Identifies one access token: its `jti` when present, else a digest of the token.
    TokenId
);
string_id!(inline16;
    /// Client-server key identifier (TS 33.180 5.4): the CSB-ID of the MIKEY-SAKKE I_MESSAGE that
    /// carried the CSK, or a lab table entry's `csk_id`; eight hex digits. It names the key in
    /// `ds:KeyInfo/ds:KeyName` of a clause 9 protected element.
    CskId
);
string_id!(
    /// Identifies one MIKEY-SAKKE I_MESSAGE (RFC 6509): a digest of its CSB-ID and RAND, so the
    /// machine can refuse the same message twice (RFC 3830 5.4 replay protection).
    KeyMessageId
);

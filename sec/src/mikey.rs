//! The MIKEY codec for MIKEY-SAKKE I_MESSAGEs: RFC 3830 (common header, T, RAND, SP, SIGN,
//! GENERAL-EXT), RFC 6043 (IDR, the GENERIC-ID and EMPTY CS ID maps) and RFC 6509 (the SAKKE
//! data type and payload, ECCSI signatures), with the TS 33.180 Annex E uses: IDR roles 6-9
//! (KMS URIs, hashed UIDs), GENERAL-EXT type 6 (SAKKE-to-self, E.5) and type 7 (the key
//! parameters payload, E.6, carried opaque).
//!
//! Decoding is strict: the message is at most [`MAX_MESSAGE_LEN`] octets, it is a chain of
//! payloads linked by their next-payload fields from the common header to SIGN (or to a
//! next-payload of 0), every length field is checked against the octets that remain, and
//! nothing may follow the last payload. Payload types other than the ones above are refused;
//! GENERAL-EXT types other than 6 and 7 are kept opaque and otherwise ignored ("skipped").
//! Every error says where it happened. Nothing here panics on any input.

/// The largest I_MESSAGE accepted (a CSK upload is about 700 octets).
pub const MAX_MESSAGE_LEN: usize = 2048;
/// Common header data type of a SAKKE I_MESSAGE (RFC 6509 4.1).
pub const DATA_TYPE_SAKKE: u8 = 26;

/// Payload type numbers (RFC 3830 6.1, RFC 6043, RFC 6509).
pub mod payload_type {
    /// No further payload.
    pub const LAST: u8 = 0;
    /// SIGN (RFC 3830 6.5).
    pub const SIGN: u8 = 4;
    /// T, timestamp (RFC 3830 6.6).
    pub const T: u8 = 5;
    /// SP, security policy (RFC 3830 6.10).
    pub const SP: u8 = 10;
    /// RAND (RFC 3830 6.11).
    pub const RAND: u8 = 11;
    /// IDR (RFC 6043 6.6).
    pub const IDR: u8 = 14;
    /// GENERAL-EXT (RFC 3830 6.15).
    pub const GENERAL_EXT: u8 = 21;
    /// SAKKE (RFC 6509 4.2).
    pub const SAKKE: u8 = 26;
}

/// IDR roles (RFC 6043 6.6; 8 and 9 as TS 33.180 uses them for hashed UIDs).
pub mod id_role {
    /// IDRi: the initiator.
    pub const INITIATOR: u8 = 1;
    /// IDRr: the responder.
    pub const RESPONDER: u8 = 2;
    /// IDRkmsi: the initiator's KMS.
    pub const INITIATOR_KMS: u8 = 6;
    /// IDRkmsr: the responder's KMS.
    pub const RESPONDER_KMS: u8 = 7;
    /// IDRi carrying the initiator's MIKEY-SAKKE UID (hashed identity).
    pub const INITIATOR_UID: u8 = 8;
    /// IDRr carrying the responder's MIKEY-SAKKE UID (hashed identity).
    pub const RESPONDER_UID: u8 = 9;
}

/// GENERAL-EXT types used by TS 33.180.
pub mod general_ext_type {
    /// SAKKE-to-self (TS 33.180 E.5): a whole SAKKE payload encapsulated to the initiator.
    pub const SAKKE_TO_SELF: u8 = 6;
    /// The 3GPP key parameters payload (TS 33.180 E.6), encrypted; carried opaque here.
    pub const KEY_PARAMETERS: u8 = 7;
}

/// The ECCSI signature type in SIGN (RFC 6509 4.3).
pub const S_TYPE_ECCSI: u8 = 2;

/// The common header (RFC 3830 6.1, RFC 6043 6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Version, 1.
    pub version: u8,
    /// Data type; 26 for a SAKKE I_MESSAGE.
    pub data_type: u8,
    /// The V flag (verification message requested).
    pub v: bool,
    /// PRF function (7 bits; 1 is PRF-HMAC-SHA-256).
    pub prf: u8,
    /// CSB ID: for TS 33.180 the key's id (CSK-ID, GMK-ID, ...), purpose tag in the top
    /// nibble.
    pub csb_id: u32,
    /// The crypto session map.
    pub cs_map: CsIdMap,
}

/// CS ID map (RFC 3830 6.1.1 SRTP-ID, RFC 6043 6.1.1 GENERIC-ID and 6.1.2 EMPTY).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CsIdMap {
    /// Type 0: one entry per crypto session.
    SrtpId(Vec<SrtpCs>),
    /// Type 1: no map info; `cs_count` is the header's #CS.
    Empty {
        /// #CS as sent.
        cs_count: u8,
    },
    /// Type 2: one entry per crypto session.
    GenericId(Vec<GenericCs>),
}

/// One SRTP-ID map entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpCs {
    /// Policy_no_i.
    pub policy_no: u8,
    /// SSRC_i.
    pub ssrc: u32,
    /// ROC_i.
    pub roc: u32,
}

/// One GENERIC-ID map entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenericCs {
    /// CS ID (TS 33.180: 6 for the CSK's use within MCPTT ...).
    pub cs_id: u8,
    /// Prot type (0 SRTP).
    pub prot_type: u8,
    /// S flag.
    pub s: bool,
    /// The policy numbers (Ps).
    pub policies: Vec<u8>,
    /// Session data.
    pub session_data: Vec<u8>,
    /// SPI (TS 33.180: the key id(s)).
    pub spi: Vec<u8>,
}

/// A timestamp (RFC 3830 6.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timestamp {
    /// Type 0, NTP-UTC: 64-bit NTP time (seconds << 32 | fraction).
    NtpUtc(u64),
    /// Type 1, NTP: 64-bit NTP time.
    Ntp(u64),
    /// Type 2, COUNTER.
    Counter(u32),
}

impl Timestamp {
    /// NTP seconds for the NTP types.
    pub fn ntp_seconds(&self) -> Option<u64> {
        match self {
            Timestamp::NtpUtc(v) | Timestamp::Ntp(v) => Some(v >> 32),
            Timestamp::Counter(_) => None,
        }
    }
}

/// An IDR payload (RFC 6043 6.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idr {
    /// ID Role (see [`id_role`]).
    pub role: u8,
    /// ID Type (0 NAI, 1 URI, 2 byte string).
    pub id_type: u8,
    /// The identity octets.
    pub data: Vec<u8>,
}

/// One SP policy parameter (type, value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyParam {
    /// Parameter type.
    pub kind: u8,
    /// Value.
    pub value: Vec<u8>,
}

/// An SP payload (RFC 3830 6.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityPolicy {
    /// Policy no.
    pub policy_no: u8,
    /// Prot type (0 SRTP).
    pub prot_type: u8,
    /// The parameters.
    pub params: Vec<PolicyParam>,
}

/// A SAKKE payload (RFC 6509 4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sakke {
    /// SAKKE params (1: parameter set 1).
    pub params: u8,
    /// ID scheme (1: tel URI with monthly keys; 2: the 3GPP MCX hashed UID of TS 33.180).
    pub id_scheme: u8,
    /// Encapsulated Data: `R_(b,S)` (uncompressed) `|| H`.
    pub data: Vec<u8>,
}

/// A GENERAL-EXT payload (RFC 3830 6.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneralExt {
    /// Type (see [`general_ext_type`]).
    pub kind: u8,
    /// The data.
    pub data: Vec<u8>,
}

impl GeneralExt {
    /// The encapsulated SAKKE payload of a SAKKE-to-self extension (TS 33.180 E.5).
    pub fn sakke_to_self(&self) -> Option<Sakke> {
        if self.kind != general_ext_type::SAKKE_TO_SELF {
            return None;
        }
        let mut r = Reader::new(&self.data, 0);
        // The inner next-payload "shall be set to zero and ignored".
        let _ = r.u8("SAKKE-to-self next payload").ok()?;
        let s = read_sakke(&mut r).ok()?;
        r.is_empty().then_some(s)
    }
}

/// Payloads between the common header and SIGN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// T.
    Timestamp(Timestamp),
    /// RAND.
    Rand(Vec<u8>),
    /// IDR.
    Idr(Idr),
    /// SP.
    SecurityPolicy(SecurityPolicy),
    /// SAKKE.
    Sakke(Sakke),
    /// GENERAL-EXT.
    GeneralExt(GeneralExt),
}

impl Payload {
    fn type_code(&self) -> u8 {
        match self {
            Payload::Timestamp(_) => payload_type::T,
            Payload::Rand(_) => payload_type::RAND,
            Payload::Idr(_) => payload_type::IDR,
            Payload::SecurityPolicy(_) => payload_type::SP,
            Payload::Sakke(_) => payload_type::SAKKE,
            Payload::GeneralExt(_) => payload_type::GENERAL_EXT,
        }
    }
}

/// The SIGN payload (RFC 3830 6.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sign {
    /// S type (2: ECCSI).
    pub s_type: u8,
    /// The signature octets.
    pub signature: Vec<u8>,
}

/// A decoded (or to-be-encoded) MIKEY message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The common header.
    pub header: Header,
    /// The payloads, in order.
    pub payloads: Vec<Payload>,
    /// The SIGN payload, if the chain ended with one.
    pub sign: Option<Sign>,
}

/// A decoded message with the octets its signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The message.
    pub message: Message,
    /// The octets the SIGN payload's signature covers: the whole message except the
    /// signature field itself (RFC 3830 6.5), so SIGN's S type and length octets are
    /// included; the Streamwide CSK message verifies only under this reading. Empty if
    /// unsigned.
    pub signed: &'a [u8],
}

/// What was wrong with the octets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MikeyErrorKind {
    /// Over [`MAX_MESSAGE_LEN`].
    #[error("message longer than {MAX_MESSAGE_LEN} octets")]
    TooLong,
    /// A field runs past the end.
    #[error("truncated in {0}")]
    Truncated(&'static str),
    /// Version is not 1.
    #[error("version {0} (only 1)")]
    Version(u8),
    /// Not a SAKKE I_MESSAGE.
    #[error("data type {0} (only {DATA_TYPE_SAKKE}, SAKKE I_MESSAGE)")]
    DataType(u8),
    /// Unknown CS ID map type.
    #[error("CS ID map type {0} (0, 1 or 2)")]
    MapType(u8),
    /// A next-payload value this codec does not carry.
    #[error("payload type {0} not supported here")]
    PayloadType(u8),
    /// Unknown timestamp type.
    #[error("timestamp type {0}")]
    TimestampType(u8),
    /// A length field disagrees with its content.
    #[error("bad length in {0}")]
    Length(&'static str),
    /// Octets after the last payload.
    #[error("{0} octets after the last payload")]
    Trailing(usize),
}

/// A decoding error, with the offset where it was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("MIKEY: {kind} (at octet {offset})")]
pub struct MikeyError {
    /// Offset into the message.
    pub offset: usize,
    /// What.
    pub kind: MikeyErrorKind,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }
    fn err(&self, kind: MikeyErrorKind) -> MikeyError {
        MikeyError {
            offset: self.base + self.pos,
            kind,
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MikeyError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| self.err(MikeyErrorKind::Truncated(what)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, MikeyError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, MikeyError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, MikeyError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, MikeyError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

fn read_sakke(r: &mut Reader<'_>) -> Result<Sakke, MikeyError> {
    let params = r.u8("SAKKE params")?;
    let id_scheme = r.u8("SAKKE ID scheme")?;
    let len = r.u16("SAKKE data length")?;
    let data = r.take(len as usize, "SAKKE data")?.to_vec();
    Ok(Sakke {
        params,
        id_scheme,
        data,
    })
}

/// Decodes a MIKEY SAKKE I_MESSAGE.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, MikeyError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(MikeyError {
            offset: MAX_MESSAGE_LEN,
            kind: MikeyErrorKind::TooLong,
        });
    }
    let mut r = Reader::new(bytes, 0);
    let version = r.u8("HDR")?;
    if version != 1 {
        return Err(MikeyError {
            offset: 0,
            kind: MikeyErrorKind::Version(version),
        });
    }
    let data_type = r.u8("HDR")?;
    if data_type != DATA_TYPE_SAKKE {
        return Err(MikeyError {
            offset: 1,
            kind: MikeyErrorKind::DataType(data_type),
        });
    }
    let mut next = r.u8("HDR")?;
    let vprf = r.u8("HDR")?;
    let csb_id = r.u32("HDR CSB ID")?;
    let cs_count = r.u8("HDR #CS")?;
    let map_type = r.u8("HDR CS ID map type")?;
    let cs_map = match map_type {
        0 => {
            let mut v = Vec::new();
            for _ in 0..cs_count {
                v.push(SrtpCs {
                    policy_no: r.u8("SRTP-ID map")?,
                    ssrc: r.u32("SRTP-ID map")?,
                    roc: r.u32("SRTP-ID map")?,
                });
            }
            CsIdMap::SrtpId(v)
        }
        1 => CsIdMap::Empty { cs_count },
        2 => {
            let mut v = Vec::new();
            for _ in 0..cs_count {
                let cs_id = r.u8("GENERIC-ID map")?;
                let prot_type = r.u8("GENERIC-ID map")?;
                let sp = r.u8("GENERIC-ID map")?;
                let policies = r.take((sp & 0x7f) as usize, "GENERIC-ID Ps")?.to_vec();
                let sd_len = r.u16("GENERIC-ID session data length")?;
                let session_data = r.take(sd_len as usize, "GENERIC-ID session data")?.to_vec();
                let spi_len = r.u8("GENERIC-ID SPI length")?;
                let spi = r.take(spi_len as usize, "GENERIC-ID SPI")?.to_vec();
                v.push(GenericCs {
                    cs_id,
                    prot_type,
                    s: sp & 0x80 != 0,
                    policies,
                    session_data,
                    spi,
                });
            }
            CsIdMap::GenericId(v)
        }
        other => {
            return Err(MikeyError {
                offset: 9,
                kind: MikeyErrorKind::MapType(other),
            })
        }
    };
    let header = Header {
        version,
        data_type,
        v: vprf & 0x80 != 0,
        prf: vprf & 0x7f,
        csb_id,
        cs_map,
    };
    let mut payloads = Vec::new();
    loop {
        let start = r.pos;
        match next {
            payload_type::LAST => {
                if !r.is_empty() {
                    return Err(r.err(MikeyErrorKind::Trailing(r.remaining())));
                }
                return Ok(Decoded {
                    message: Message {
                        header,
                        payloads,
                        sign: None,
                    },
                    signed: &[],
                });
            }
            payload_type::SIGN => {
                let b = r.take(2, "SIGN")?;
                let s_type = b[0] >> 4;
                let len = (((b[0] & 0x0f) as usize) << 8) | b[1] as usize;
                let signed_end = r.pos;
                if r.remaining() != len {
                    return Err(if r.remaining() < len {
                        r.err(MikeyErrorKind::Truncated("SIGN signature"))
                    } else {
                        MikeyError {
                            offset: r.pos + len,
                            kind: MikeyErrorKind::Trailing(r.remaining() - len),
                        }
                    });
                }
                let signature = r.take(len, "SIGN signature")?.to_vec();
                return Ok(Decoded {
                    message: Message {
                        header,
                        payloads,
                        sign: Some(Sign { s_type, signature }),
                    },
                    signed: &bytes[..signed_end],
                });
            }
            payload_type::T => {
                next = r.u8("T")?;
                let kind = r.u8("T TS type")?;
                let ts = match kind {
                    0 => Timestamp::NtpUtc(r.u64("T TS value")?),
                    1 => Timestamp::Ntp(r.u64("T TS value")?),
                    2 => Timestamp::Counter(r.u32("T TS value")?),
                    other => {
                        return Err(MikeyError {
                            offset: start + 1,
                            kind: MikeyErrorKind::TimestampType(other),
                        })
                    }
                };
                payloads.push(Payload::Timestamp(ts));
            }
            payload_type::RAND => {
                next = r.u8("RAND")?;
                let len = r.u8("RAND length")?;
                if len == 0 {
                    return Err(MikeyError {
                        offset: start + 1,
                        kind: MikeyErrorKind::Length("RAND"),
                    });
                }
                payloads.push(Payload::Rand(r.take(len as usize, "RAND")?.to_vec()));
            }
            payload_type::IDR => {
                next = r.u8("IDR")?;
                let role = r.u8("IDR role")?;
                let id_type = r.u8("IDR type")?;
                let len = r.u16("IDR length")?;
                let data = r.take(len as usize, "IDR data")?.to_vec();
                payloads.push(Payload::Idr(Idr {
                    role,
                    id_type,
                    data,
                }));
            }
            payload_type::SP => {
                next = r.u8("SP")?;
                let policy_no = r.u8("SP policy no")?;
                let prot_type = r.u8("SP prot type")?;
                let len = r.u16("SP param length")?;
                let body = r.take(len as usize, "SP params")?;
                let mut pr = Reader::new(body, start + 5);
                let mut params = Vec::new();
                while !pr.is_empty() {
                    let kind = pr.u8("SP param type")?;
                    let plen = pr.u8("SP param length")?;
                    let value = pr.take(plen as usize, "SP param value")?.to_vec();
                    params.push(PolicyParam { kind, value });
                }
                payloads.push(Payload::SecurityPolicy(SecurityPolicy {
                    policy_no,
                    prot_type,
                    params,
                }));
            }
            payload_type::SAKKE => {
                next = r.u8("SAKKE")?;
                payloads.push(Payload::Sakke(read_sakke(&mut r)?));
            }
            payload_type::GENERAL_EXT => {
                next = r.u8("GENERAL-EXT")?;
                let kind = r.u8("GENERAL-EXT type")?;
                let len = r.u16("GENERAL-EXT length")?;
                let data = r.take(len as usize, "GENERAL-EXT data")?.to_vec();
                let ext = GeneralExt { kind, data };
                if kind == general_ext_type::SAKKE_TO_SELF && ext.sakke_to_self().is_none() {
                    return Err(MikeyError {
                        offset: start,
                        kind: MikeyErrorKind::Length("GENERAL-EXT SAKKE-to-self"),
                    });
                }
                payloads.push(Payload::GeneralExt(ext));
            }
            other => {
                return Err(MikeyError {
                    offset: start,
                    kind: MikeyErrorKind::PayloadType(other),
                })
            }
        }
    }
}

/// Why a message cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field's content is longer than its length field can say.
    #[error("{0} too long for its length field")]
    FieldTooLong(&'static str),
    /// The result would exceed [`MAX_MESSAGE_LEN`].
    #[error("message longer than {MAX_MESSAGE_LEN} octets")]
    TooLong,
}

fn len8(n: usize, what: &'static str) -> Result<u8, EncodeError> {
    u8::try_from(n).map_err(|_| EncodeError::FieldTooLong(what))
}

fn len16(n: usize, what: &'static str) -> Result<[u8; 2], EncodeError> {
    u16::try_from(n)
        .map(u16::to_be_bytes)
        .map_err(|_| EncodeError::FieldTooLong(what))
}

fn write_sakke(out: &mut Vec<u8>, s: &Sakke) -> Result<(), EncodeError> {
    out.push(s.params);
    out.push(s.id_scheme);
    out.extend_from_slice(&len16(s.data.len(), "SAKKE data")?);
    out.extend_from_slice(&s.data);
    Ok(())
}

impl Message {
    /// The octets a signature of `sig_len` octets covers: everything up to and including the
    /// SIGN payload's S type and length fields. With `sig_len` `None`, the whole unsigned
    /// message (the chain ends with next payload 0).
    pub fn encode_to_be_signed(
        &self,
        s_type: u8,
        sig_len: Option<usize>,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(1024);
        let h = &self.header;
        let after_last = if sig_len.is_some() {
            payload_type::SIGN
        } else {
            payload_type::LAST
        };
        let next_of = |i: usize| {
            self.payloads
                .get(i)
                .map(Payload::type_code)
                .unwrap_or(after_last)
        };
        out.push(h.version);
        out.push(h.data_type);
        out.push(next_of(0));
        out.push(if h.v { 0x80 } else { 0 } | (h.prf & 0x7f));
        out.extend_from_slice(&h.csb_id.to_be_bytes());
        match &h.cs_map {
            CsIdMap::SrtpId(v) => {
                out.push(len8(v.len(), "#CS")?);
                out.push(0);
                for cs in v {
                    out.push(cs.policy_no);
                    out.extend_from_slice(&cs.ssrc.to_be_bytes());
                    out.extend_from_slice(&cs.roc.to_be_bytes());
                }
            }
            CsIdMap::Empty { cs_count } => {
                out.push(*cs_count);
                out.push(1);
            }
            CsIdMap::GenericId(v) => {
                out.push(len8(v.len(), "#CS")?);
                out.push(2);
                for cs in v {
                    out.push(cs.cs_id);
                    out.push(cs.prot_type);
                    let np = len8(cs.policies.len(), "#P")?;
                    if np > 0x7f {
                        return Err(EncodeError::FieldTooLong("#P"));
                    }
                    out.push(if cs.s { 0x80 } else { 0 } | np);
                    out.extend_from_slice(&cs.policies);
                    out.extend_from_slice(&len16(cs.session_data.len(), "session data")?);
                    out.extend_from_slice(&cs.session_data);
                    out.push(len8(cs.spi.len(), "SPI")?);
                    out.extend_from_slice(&cs.spi);
                }
            }
        }
        for (i, p) in self.payloads.iter().enumerate() {
            let next = next_of(i + 1);
            out.push(next);
            match p {
                Payload::Timestamp(ts) => match ts {
                    Timestamp::NtpUtc(v) => {
                        out.push(0);
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                    Timestamp::Ntp(v) => {
                        out.push(1);
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                    Timestamp::Counter(v) => {
                        out.push(2);
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                },
                Payload::Rand(v) => {
                    out.push(len8(v.len(), "RAND")?);
                    out.extend_from_slice(v);
                }
                Payload::Idr(idr) => {
                    out.push(idr.role);
                    out.push(idr.id_type);
                    out.extend_from_slice(&len16(idr.data.len(), "IDR")?);
                    out.extend_from_slice(&idr.data);
                }
                Payload::SecurityPolicy(sp) => {
                    out.push(sp.policy_no);
                    out.push(sp.prot_type);
                    let mut body = Vec::new();
                    for p in &sp.params {
                        body.push(p.kind);
                        body.push(len8(p.value.len(), "SP param")?);
                        body.extend_from_slice(&p.value);
                    }
                    out.extend_from_slice(&len16(body.len(), "SP params")?);
                    out.extend_from_slice(&body);
                }
                Payload::Sakke(s) => write_sakke(&mut out, s)?,
                Payload::GeneralExt(g) => {
                    out.push(g.kind);
                    out.extend_from_slice(&len16(g.data.len(), "GENERAL-EXT")?);
                    out.extend_from_slice(&g.data);
                }
            }
            if out.len() > MAX_MESSAGE_LEN {
                return Err(EncodeError::TooLong);
            }
        }
        if let Some(n) = sig_len {
            if n > 0x0fff {
                return Err(EncodeError::FieldTooLong("SIGN"));
            }
            out.push(((s_type & 0x0f) << 4) | (n >> 8) as u8);
            out.push((n & 0xff) as u8);
        }
        if out.len() + sig_len.unwrap_or(0) > MAX_MESSAGE_LEN {
            return Err(EncodeError::TooLong);
        }
        Ok(out)
    }

    /// Encodes the whole message (with its SIGN payload if any).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match &self.sign {
            Some(s) => {
                let mut out = self.encode_to_be_signed(s.s_type, Some(s.signature.len()))?;
                out.extend_from_slice(&s.signature);
                Ok(out)
            }
            None => self.encode_to_be_signed(0, None),
        }
    }

    /// The first payload of a kind, by a selector.
    pub fn find<'a, T>(&'a self, f: impl Fn(&'a Payload) -> Option<T>) -> Option<T> {
        self.payloads.iter().find_map(f)
    }

    /// The IDR payload with `role`, if exactly one; `Err(n)` with the count otherwise.
    pub fn idr(&self, role: u8) -> Result<&Idr, usize> {
        let mut it = self.payloads.iter().filter_map(|p| match p {
            Payload::Idr(i) if i.role == role => Some(i),
            _ => None,
        });
        match (it.next(), it.next()) {
            (Some(i), None) => Ok(i),
            (None, _) => Err(0),
            (Some(_), Some(_)) => Err(2 + it.count()),
        }
    }

    /// The SAKKE-to-self payload, if any (TS 33.180 E.5).
    pub fn sakke_to_self(&self) -> Option<Sakke> {
        self.find(|p| match p {
            Payload::GeneralExt(g) => g.sakke_to_self(),
            _ => None,
        })
    }
}

/// Encodes a SAKKE payload as the data of a SAKKE-to-self GENERAL-EXT (inner next payload 0).
pub fn sakke_to_self_ext(s: &Sakke) -> Result<GeneralExt, EncodeError> {
    let mut data = vec![0u8];
    write_sakke(&mut data, s)?;
    Ok(GeneralExt {
        kind: general_ext_type::SAKKE_TO_SELF,
        data,
    })
}

/// Decodes the text form used in vector files and SIP bodies: base64, optionally after a
/// leading `mikey ` (and surrounding whitespace / line breaks).
pub fn from_text(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    let t = t.strip_prefix("mikey ").unwrap_or(t);
    let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > MAX_MESSAGE_LEN * 4 / 3 + 4 {
        return None;
    }
    base64_decode(&compact)
}

/// Standard base64 (with or without padding). A small decoder so `mcx-sec` stays dependency
/// light; bounded by the caller.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let n = chunk.len() - 1;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let acc = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(acc >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kms::encode_hex;

    pub(crate) const TEST1_GMK: &str = include_str!("../tests/vectors/test1_gmk.b64");
    pub(crate) const TEST2_CSK: &str = include_str!("../tests/vectors/test2_csk.b64");
    pub(crate) const TEST3_PCK: &str = include_str!("../tests/vectors/test3_pck.b64");
    pub(crate) const TEST4_IWF: &str = include_str!("../tests/vectors/test4_gmk_iwf.b64");

    #[test]
    fn streamwide_csk_message_decodes_payload_by_payload() {
        let bytes = from_text(TEST2_CSK).unwrap();
        assert_eq!(bytes.len(), 694);
        let d = decode(&bytes).unwrap();
        let m = &d.message;
        assert_eq!(m.header.csb_id, 0x2ddd5bf0);
        assert_eq!(m.header.prf, 1);
        match &m.header.cs_map {
            CsIdMap::GenericId(v) => {
                assert_eq!(v.len(), 1);
                assert_eq!(v[0].cs_id, 6);
                assert_eq!(v[0].spi, [0x2d, 0xdd, 0x5b, 0xf0]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            m.payloads[0],
            Payload::Timestamp(Timestamp::NtpUtc(0xec898da8_00000000))
        );
        assert_eq!(
            m.payloads[1],
            Payload::Rand(crate::kms::decode_hex("4d13c41798b82de13b701a9697328edd").unwrap())
        );
        assert_eq!(
            encode_hex(&m.idr(id_role::INITIATOR_UID).unwrap().data),
            "b5c452309219da6a3d805615548d6c1b0f4de45a6b48fb13d9a24d857fc03dc4"
        );
        assert_eq!(
            m.idr(id_role::INITIATOR_KMS).unwrap().data,
            b"kms.mydev.streamwide.com"
        );
        let sakke = m
            .find(|p| match p {
                Payload::Sakke(s) => Some(s),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (sakke.params, sakke.id_scheme, sakke.data.len()),
            (1, 2, 273)
        );
        let sign = m.sign.as_ref().unwrap();
        assert_eq!((sign.s_type, sign.signature.len()), (S_TYPE_ECCSI, 129));
        assert_eq!(d.signed.len(), bytes.len() - 129);
        // Encoding gives the same octets back.
        assert_eq!(m.encode().unwrap(), bytes);
    }

    #[test]
    fn all_streamwide_messages_round_trip() {
        for t in [TEST1_GMK, TEST2_CSK, TEST3_PCK, TEST4_IWF] {
            let bytes = from_text(t).unwrap();
            let d = decode(&bytes).unwrap();
            assert_eq!(d.message.encode().unwrap(), bytes);
        }
        // Test 3 has the EMPTY map with #CS 0, Test 4 an SRTP-ID map with two sessions.
        let t3 = decode(&from_text(TEST3_PCK).unwrap()).unwrap().message;
        assert_eq!(t3.header.cs_map, CsIdMap::Empty { cs_count: 0 });
        let t4 = decode(&from_text(TEST4_IWF).unwrap()).unwrap().message;
        assert!(
            matches!(&t4.header.cs_map, CsIdMap::SrtpId(v) if v.len() == 2 && v[0].ssrc == 0xcafebabe)
        );
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let bytes = from_text(TEST2_CSK).unwrap();
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn strictness_catalogue() {
        let bytes = from_text(TEST2_CSK).unwrap();
        let kind = |b: &[u8]| decode(b).unwrap_err().kind;
        // Trailing octet after SIGN.
        let mut v = bytes.clone();
        v.push(0);
        assert_eq!(kind(&v), MikeyErrorKind::Trailing(1));
        // Too long.
        assert_eq!(
            kind(&vec![1u8; MAX_MESSAGE_LEN + 1]),
            MikeyErrorKind::TooLong
        );
        // Version, data type.
        let mut v = bytes.clone();
        v[0] = 2;
        assert_eq!(kind(&v), MikeyErrorKind::Version(2));
        let mut v = bytes.clone();
        v[1] = 0;
        assert_eq!(kind(&v), MikeyErrorKind::DataType(0));
        // Map type.
        let mut v = bytes.clone();
        v[9] = 3;
        assert_eq!(kind(&v), MikeyErrorKind::MapType(3));
        // Header next-payload naming an unsupported payload (KEMAC = 1).
        let mut v = bytes.clone();
        v[2] = 1;
        assert_eq!(kind(&v), MikeyErrorKind::PayloadType(1));
        // T type 9.
        let mut v = bytes.clone();
        v[22] = 9;
        assert_eq!(kind(&v), MikeyErrorKind::TimestampType(9));
        // RAND length 0.
        let mut v = bytes.clone();
        v[32] = 0;
        assert_eq!(kind(&v), MikeyErrorKind::Length("RAND"));
        // SIGN length one short: the message then has a trailing octet.
        let mut v = bytes.clone();
        let at = bytes.len() - 130;
        v[at] -= 1;
        assert_eq!(kind(&v), MikeyErrorKind::Trailing(1));
        // A chain that ends (next payload 0) before SIGN leaves octets behind.
        let mut v = bytes.clone();
        v[2] = 0;
        assert!(matches!(kind(&v), MikeyErrorKind::Trailing(_)));
    }

    #[test]
    fn unknown_general_ext_types_are_skipped_and_sakke_to_self_is_parsed() {
        let bytes = from_text(TEST2_CSK).unwrap();
        let mut m = decode(&bytes).unwrap().message;
        let sakke = m.find(|p| match p {
            Payload::Sakke(s) => Some(s.clone()),
            _ => None,
        });
        let sakke = sakke.unwrap();
        m.payloads.push(Payload::GeneralExt(GeneralExt {
            kind: 200,
            data: vec![1, 2, 3],
        }));
        m.payloads
            .push(Payload::GeneralExt(sakke_to_self_ext(&sakke).unwrap()));
        let again = m.encode().unwrap();
        let d = decode(&again).unwrap();
        assert_eq!(d.message.sakke_to_self(), Some(sakke));
        assert_eq!(d.message, m);
    }

    #[test]
    fn base64_round_trip() {
        for n in 0..20 {
            let v: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&v)).unwrap(), v);
        }
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("ab!c"), None);
    }
}

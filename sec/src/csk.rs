//! Client-server keys (TS 33.180 5.4, 5.2.2): the CSK-ID, the CSK, and the key store the SIP
//! edge consults to open a protected `mcptt-info` body (TS 33.180 clause 9).
//!
//! A CSK is 128 bits; its CSK-ID is 32 bits whose 4 most significant bits are the purpose tag
//! `0010` (TS 33.180 5.2.2, E.6.11; RFC 6509 CSB-ID). The lab table here is the first
//! [`CskStore`]; the MIKEY-SAKKE upload (TS 33.180 5.4) is the next.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::Deserialize;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Most entries a lab table holds (it is config, but bounded all the same).
pub const MAX_LAB_CSKS: usize = 1 << 20;

/// Why a CSK-ID, a CSK or a table entry could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CskError {
    /// Not the expected number of hex digits (spaces allowed between them).
    #[error("{what} must be {digits} hex digits (spaces allowed), got {got:?}")]
    Hex {
        /// Which value.
        what: &'static str,
        /// How many digits it needs.
        digits: usize,
        /// What was given (never a secret: CSKs are not echoed).
        got: String,
    },
    /// A `KeyName` that is not base64 of 4 octets.
    #[error("KeyName {0:?} is not base64 of a 4-octet CSK-ID")]
    KeyName(String),
    /// The same CSK-ID twice in one table.
    #[error("CSK-ID {0} appears twice")]
    Duplicate(CskId),
    /// An entry without an MC service ID.
    #[error("CSK-ID {0}: mc_id is empty")]
    NoMcId(CskId),
    /// Too many entries.
    #[error("more than {MAX_LAB_CSKS} CSKs")]
    TooMany,
}

/// Parses `digits` hex digits, ignoring ASCII spaces (as the MIKEY-SAKKE vectors print them).
fn hex_octets<const N: usize>(
    s: &str,
    what: &'static str,
    secret: bool,
) -> Result<[u8; N], CskError> {
    let bad = || CskError::Hex {
        what,
        digits: 2 * N,
        got: if secret {
            "<redacted>".into()
        } else {
            s.chars().take(80).collect()
        },
    };
    let mut out = [0u8; N];
    let mut n = 0usize;
    let mut hi: Option<u8> = None;
    for c in s.chars() {
        if c == ' ' {
            continue;
        }
        let v = c.to_digit(16).ok_or_else(bad)? as u8;
        match hi.take() {
            None => hi = Some(v),
            Some(h) => {
                if n == N {
                    out.zeroize();
                    return Err(bad());
                }
                out[n] = (h << 4) | v;
                n += 1;
            }
        }
    }
    if n != N || hi.is_some() {
        out.zeroize();
        return Err(bad());
    }
    Ok(out)
}

/// A CSK-ID: 32 bits (TS 33.180 5.2.2). Displays as 8 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CskId(pub u32);

impl CskId {
    /// The 4 octets, big-endian.
    pub fn octets(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// `ds:KeyName` form: base64 of the 4 octets (TS 24.379 F.6, TS 36.579-1 5.5.13.1).
    pub fn key_name(self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.octets())
    }

    /// Reads a `ds:KeyName` (XML white space around and inside the base64 is ignored).
    pub fn from_key_name(s: &str) -> Result<CskId, CskError> {
        let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if compact.len() > 16 {
            return Err(CskError::KeyName(s.chars().take(40).collect()));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| CskError::KeyName(s.chars().take(40).collect()))?;
        let octets: [u8; 4] = raw
            .try_into()
            .map_err(|_| CskError::KeyName(s.chars().take(40).collect()))?;
        Ok(CskId(u32::from_be_bytes(octets)))
    }

    /// Whether the purpose tag (4 most significant bits) is `0010`, the CSK's (TS 33.180
    /// E.6.11). Not enforced on the lab table: labs may use any value.
    pub fn has_csk_purpose_tag(self) -> bool {
        self.0 >> 28 == 0b0010
    }
}

impl fmt::Display for CskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl FromStr for CskId {
    type Err = CskError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex_octets::<4>(s, "csk_id", false).map(|o| CskId(u32::from_be_bytes(o)))
    }
}

/// A 128-bit CSK. Secret: zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Csk([u8; 16]);

impl Csk {
    /// From 16 octets.
    pub fn new(octets: [u8; 16]) -> Csk {
        Csk(octets)
    }

    /// From 32 hex digits (spaces allowed). The error never echoes the value.
    pub fn from_hex(s: &str) -> Result<Csk, CskError> {
        hex_octets::<16>(s, "csk", true).map(Csk)
    }

    /// The key octets.
    pub fn octets(&self) -> &[u8; 16] {
        &self.0
    }

    /// 32 hex digits in two groups of 16, as the config example prints it.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(33);
        for (i, b) in self.0.iter().enumerate() {
            if i == 8 {
                s.push(' ');
            }
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Debug for Csk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Csk(<redacted>)")
    }
}

/// One CSK as the server holds it: the key and the MC service ID it was configured or uploaded
/// for (TS 33.180 5.4 ties IMPU, MC service ID and CSK; the IMPU tie is the machine's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CskEntry {
    /// CSK-ID.
    pub id: CskId,
    /// The key.
    pub csk: Csk,
    /// The MC service ID (URI) the CSK belongs to.
    pub mc_id: String,
}

/// Where the edge finds a CSK by its CSK-ID. Implementations hand out a copy that zeroizes
/// itself on drop.
pub trait CskStore {
    /// The CSK with this CSK-ID, if known.
    fn csk(&self, id: CskId) -> Option<CskEntry>;
}

/// A `[[protection.csk]]` entry of the server config, as written.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CskConfig {
    /// 8 hex digits.
    pub csk_id: String,
    /// 32 hex digits (spaces allowed). Secret.
    pub csk: String,
    /// MC service ID (URI).
    pub mc_id: String,
}

impl fmt::Debug for CskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CskConfig")
            .field("csk_id", &self.csk_id)
            .field("csk", &"<redacted>")
            .field("mc_id", &self.mc_id)
            .finish()
    }
}

impl Drop for CskConfig {
    fn drop(&mut self) {
        self.csk.zeroize();
    }
}

/// The lab table: CSKs from the server config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabCskTable {
    entries: BTreeMap<CskId, CskEntry>,
}

impl LabCskTable {
    /// Reads `[[protection.csk]]` entries; refuses bad hex, empty MC service IDs, duplicates.
    pub fn from_config(entries: &[CskConfig]) -> Result<LabCskTable, CskError> {
        if entries.len() > MAX_LAB_CSKS {
            return Err(CskError::TooMany);
        }
        let mut table = LabCskTable::default();
        for e in entries {
            let id: CskId = e.csk_id.parse()?;
            let csk = Csk::from_hex(&e.csk)?;
            let mc_id = e.mc_id.trim().to_owned();
            if mc_id.is_empty() {
                return Err(CskError::NoMcId(id));
            }
            if table.entries.contains_key(&id) {
                return Err(CskError::Duplicate(id));
            }
            table.entries.insert(id, CskEntry { id, csk, mc_id });
        }
        Ok(table)
    }

    /// Adds one entry (tests, tools). Refuses a duplicate CSK-ID.
    pub fn insert(&mut self, entry: CskEntry) -> Result<(), CskError> {
        if self.entries.len() >= MAX_LAB_CSKS {
            return Err(CskError::TooMany);
        }
        if self.entries.contains_key(&entry.id) {
            return Err(CskError::Duplicate(entry.id));
        }
        self.entries.insert(entry.id, entry);
        Ok(())
    }

    /// Removes (and so zeroizes) a CSK; whether it was there.
    pub fn remove(&mut self, id: CskId) -> bool {
        self.entries.remove(&id).is_some()
    }

    /// Number of CSKs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The (CSK-ID, MC service ID) ties, for feeding the machine at start.
    pub fn ties(&self) -> impl Iterator<Item = (CskId, &str)> {
        self.entries.values().map(|e| (e.id, e.mc_id.as_str()))
    }
}

impl CskStore for LabCskTable {
    fn csk(&self, id: CskId) -> Option<CskEntry> {
        self.entries.get(&id).cloned()
    }
}

/// A `[[protection.csk]]` TOML entry for a fresh CSK (what `mcx-authz csk new` prints).
pub fn config_entry(id: CskId, csk: &Csk, mc_id: &str) -> String {
    format!(
        "[[protection.csk]]\ncsk_id = \"{id}\"\ncsk = \"{}\"\nmc_id = {}\n",
        csk.to_hex(),
        toml_string(mc_id)
    )
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys_read_hex_with_spaces() {
        let id: CskId = "2ddd 5bf0".parse().unwrap();
        assert_eq!(id, CskId(0x2ddd5bf0));
        assert_eq!(id.to_string(), "2ddd5bf0");
        assert!(id.has_csk_purpose_tag());
        let k = Csk::from_hex("e06e651061835473 42d3e8a6ce2540a8").unwrap();
        assert_eq!(k.octets()[0], 0xe0);
        assert_eq!(k.octets()[15], 0xa8);
        assert_eq!(k.to_hex(), "e06e651061835473 42d3e8a6ce2540a8");
        for bad in ["2ddd5bf", "2ddd5bf00", "2ddd5bfg", ""] {
            assert!(bad.parse::<CskId>().is_err(), "{bad:?}");
        }
        let e = Csk::from_hex("e06e6510618354730").unwrap_err();
        assert!(
            !e.to_string().contains("e06e"),
            "a CSK is never echoed: {e}"
        );
    }

    #[test]
    fn key_name_is_base64_of_four_octets() {
        let id = CskId(0x2ddd5bf0);
        assert_eq!(id.key_name(), "Ld1b8A==");
        assert_eq!(CskId::from_key_name(" Ld1b\n8A== ").unwrap(), id);
        assert!(CskId::from_key_name("Ld1b8A").is_err());
        assert!(CskId::from_key_name("AAAAAAA=").is_err(), "5 octets");
        assert!(CskId::from_key_name("!!!!").is_err());
    }

    #[test]
    fn lab_table_reads_config_and_refuses_duplicates() {
        let cfg: Vec<CskConfig> = vec![CskConfig {
            csk_id: "2ddd5bf0".into(),
            csk: "e06e651061835473 42d3e8a6ce2540a8".into(),
            mc_id: "sip:alice@example.org".into(),
        }];
        let t = LabCskTable::from_config(&cfg).unwrap();
        assert_eq!(t.len(), 1);
        let e = t.csk(CskId(0x2ddd5bf0)).unwrap();
        assert_eq!(e.mc_id, "sip:alice@example.org");
        assert!(t.csk(CskId(1)).is_none());
        let twice = [cfg[0].clone(), cfg[0].clone()];
        assert_eq!(
            LabCskTable::from_config(&twice).unwrap_err(),
            CskError::Duplicate(CskId(0x2ddd5bf0))
        );
        let mut no_id = cfg[0].clone();
        no_id.mc_id = " ".into();
        assert!(matches!(
            LabCskTable::from_config(&[no_id]),
            Err(CskError::NoMcId(_))
        ));
        assert!(!format!("{:?}", cfg[0]).contains("e06e"));
        assert!(!format!("{e:?}").contains("e06e"));
    }

    #[test]
    fn config_entry_round_trips_through_the_parser() {
        let csk = Csk::new([7; 16]);
        let text = config_entry(CskId(0x21234567), &csk, "sip:a\"b@example.org");
        assert!(text.starts_with("[[protection.csk]]\n"));
        let line = |k: &str| {
            text.lines()
                .find(|l| l.starts_with(k))
                .unwrap()
                .split_once(" = ")
                .unwrap()
                .1
                .to_owned()
        };
        assert_eq!(line("csk_id"), "\"21234567\"");
        assert_eq!(line("mc_id"), "\"sip:a\\\"b@example.org\"");
        assert_eq!(Csk::from_hex(line("csk =").trim_matches('"')).unwrap(), csk);
    }
}

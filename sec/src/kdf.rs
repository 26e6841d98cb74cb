//! The key derivation of TS 33.180 Annex F.1.4 on the generic KDF of TS 33.220 Annex B.
//!
//! TS 33.220 B.2: `derived key = HMAC-SHA-256(Key, S)`, `S = FC || P0 || L0 || P1 || L1 || ...`,
//! each `Li` the length of `Pi` in octets as two octets, big-endian. TS 33.180 F.1.4 derives
//! the two XML keys from the XPK (here the CSK): FC `0x51` for signalling-plane
//! confidentiality (XML encryption), FC `0x52` for integrity (XML signature); for a 128-bit
//! XPK the keys are the 128 least significant bits of the 256-bit output.
//!
//! The parameter list is data ([`KdfReading`]) because the sources disagree:
//! - TS 33.180 F.1.4 (Rel-13 33.179 to Rel-17 33.180, as published) writes `P0 = MC service
//!   user ID, P1 = XPK-ID` ([`KdfReading::McIdAndXpkId`], the default here);
//! - TS 36.579-1 5.5.13.1 derives the signing key "according to F.1.4 with FC = 0x52,
//!   XPK-ID = CSK-ID" and names no user ID ([`KdfReading::XpkIdOnly`]: `P0 = XPK-ID`).
//!
//! F.1.4 also writes both lengths as the fixed "0x00 0x17" (dossier Q-8); 33.220 B.2 defines
//! `Li` as the length of `Pi`, which is what both readings use. The MC service ID is its URI's
//! UTF-8 octets as configured (or as the MIKEY IDRi names it); the XPK-ID is the CSK-ID's
//! 4 octets.

use aws_lc_rs::hmac;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::csk::{CskEntry, CskId, CskStore};

/// What a derived XML key is for (the FC value of TS 33.180 F.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// FC = 0x51: XML encryption (signalling-plane confidentiality).
    Confidentiality,
    /// FC = 0x52: XML signature (signalling-plane integrity).
    Integrity,
}

impl KeyPurpose {
    /// The FC octet.
    pub fn fc(self) -> u8 {
        match self {
            KeyPurpose::Confidentiality => 0x51,
            KeyPurpose::Integrity => 0x52,
        }
    }
}

/// Which parameters F.1.4 puts after FC (see the module docs).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum KdfReading {
    /// `P0 = MC service ID, P1 = XPK-ID` (TS 33.180 F.1.4 as written). Default.
    #[default]
    McIdAndXpkId,
    /// `P0 = XPK-ID` alone (TS 36.579-1 5.5.13.1).
    XpkIdOnly,
}

impl KdfReading {
    /// The parameter list `P0, P1, ...` for a CSK of `mc_id`.
    pub fn params<'a>(self, csk_id: &'a [u8; 4], mc_id: &'a str) -> Vec<&'a [u8]> {
        match self {
            KdfReading::McIdAndXpkId => vec![mc_id.as_bytes(), &csk_id[..]],
            KdfReading::XpkIdOnly => vec![&csk_id[..]],
        }
    }

    /// The name used in config and docs.
    pub fn name(self) -> &'static str {
        match self {
            KdfReading::McIdAndXpkId => "mc-id-and-xpk-id",
            KdfReading::XpkIdOnly => "xpk-id-only",
        }
    }
}

/// A parameter longer than the two-octet length field can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("KDF parameter P{0} is longer than 65535 octets")]
pub struct ParamTooLong(pub usize);

/// TS 33.220 B.2: `HMAC-SHA-256(key, FC || P0 || L0 || ...)`, all 256 bits.
pub fn kdf(key: &[u8], fc: u8, params: &[&[u8]]) -> Result<[u8; 32], ParamTooLong> {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    ctx.update(&[fc]);
    for (i, p) in params.iter().enumerate() {
        let len = u16::try_from(p.len()).map_err(|_| ParamTooLong(i))?;
        ctx.update(p);
        ctx.update(&len.to_be_bytes());
    }
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// A 128-bit XML key derived from a CSK. Secret: zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct XmlKey([u8; 16]);

impl XmlKey {
    /// From raw octets (tests and tools that hold a derived key, e.g. the xmlsec1 oracle).
    pub fn from_octets(octets: [u8; 16]) -> XmlKey {
        XmlKey(octets)
    }

    /// The key octets.
    pub fn octets(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Debug for XmlKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XmlKey(<redacted>)")
    }
}

/// TS 33.180 F.1.4: the XML key for `purpose` from `entry`'s CSK, under `reading`; the 128
/// least significant bits of the KDF output.
pub fn derive_xml_key(
    entry: &CskEntry,
    purpose: KeyPurpose,
    reading: KdfReading,
) -> Result<XmlKey, ParamTooLong> {
    let id = entry.id.octets();
    let mut full = kdf(
        entry.csk.octets(),
        purpose.fc(),
        &reading.params(&id, &entry.mc_id),
    )?;
    let mut key = [0u8; 16];
    key.copy_from_slice(&full[16..]);
    full.zeroize();
    Ok(XmlKey(key))
}

/// Finds the XML key named by a `KeyName` (the CSK-ID), or says it is unknown.
pub trait XmlKeys {
    /// The key for `purpose` under CSK `id`, or `None` when the CSK is unknown (or its MC
    /// service ID too long to derive with).
    fn xml_key(&self, id: CskId, purpose: KeyPurpose) -> Option<XmlKey>;
}

/// [`XmlKeys`] over a [`CskStore`] and a [`KdfReading`].
pub struct CskKeys<'a, S: CskStore + ?Sized> {
    /// The store.
    pub store: &'a S,
    /// The F.1.4 reading.
    pub reading: KdfReading,
}

impl<S: CskStore + ?Sized> XmlKeys for CskKeys<'_, S> {
    fn xml_key(&self, id: CskId, purpose: KeyPurpose) -> Option<XmlKey> {
        let entry = self.store.csk(id)?;
        derive_xml_key(&entry, purpose, self.reading).ok()
    }
}

/// [`XmlKeys`] holding already-derived keys for one CSK-ID (tools, tests, the xmlsec1 oracle).
pub struct FixedKeys {
    /// The CSK-ID the keys answer for.
    pub id: CskId,
    /// FC 0x51 key.
    pub confidentiality: XmlKey,
    /// FC 0x52 key.
    pub integrity: XmlKey,
}

impl XmlKeys for FixedKeys {
    fn xml_key(&self, id: CskId, purpose: KeyPurpose) -> Option<XmlKey> {
        (id == self.id).then(|| match purpose {
            KeyPurpose::Confidentiality => self.confidentiality.clone(),
            KeyPurpose::Integrity => self.integrity.clone(),
        })
    }
}

impl FixedKeys {
    /// Both keys of `entry` under `reading`.
    pub fn derive(entry: &CskEntry, reading: KdfReading) -> Result<FixedKeys, ParamTooLong> {
        Ok(FixedKeys {
            id: entry.id,
            confidentiality: derive_xml_key(entry, KeyPurpose::Confidentiality, reading)?,
            integrity: derive_xml_key(entry, KeyPurpose::Integrity, reading)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csk::Csk;

    fn alice() -> CskEntry {
        CskEntry {
            id: CskId(0x2ddd5bf0),
            csk: Csk::from_hex("e06e651061835473 42d3e8a6ce2540a8").unwrap(),
            mc_id: "sip:alice@example.org".into(),
        }
    }

    #[test]
    fn the_input_string_is_fc_then_each_parameter_and_its_length() {
        // S for the default reading, written out by hand.
        let mut s = vec![0x51];
        s.extend_from_slice(b"sip:alice@example.org");
        s.extend_from_slice(&[0x00, 21]);
        s.extend_from_slice(&[0x2d, 0xdd, 0x5b, 0xf0]);
        s.extend_from_slice(&[0x00, 0x04]);
        let e = alice();
        let want = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, e.csk.octets()), &s);
        let got = kdf(
            e.csk.octets(),
            0x51,
            &KdfReading::McIdAndXpkId.params(&e.id.octets(), &e.mc_id),
        )
        .unwrap();
        assert_eq!(&got[..], want.as_ref());
        let k = derive_xml_key(&e, KeyPurpose::Confidentiality, KdfReading::McIdAndXpkId).unwrap();
        assert_eq!(k.octets(), &got[16..], "128 least significant bits");
    }

    #[test]
    fn readings_and_purposes_give_different_keys() {
        let e = alice();
        let keys: Vec<[u8; 16]> = [
            (KeyPurpose::Confidentiality, KdfReading::McIdAndXpkId),
            (KeyPurpose::Integrity, KdfReading::McIdAndXpkId),
            (KeyPurpose::Confidentiality, KdfReading::XpkIdOnly),
            (KeyPurpose::Integrity, KdfReading::XpkIdOnly),
        ]
        .iter()
        .map(|&(p, r)| *derive_xml_key(&e, p, r).unwrap().octets())
        .collect();
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j]);
            }
        }
    }

    #[test]
    fn a_parameter_over_65535_octets_is_refused() {
        let long = vec![b'a'; 65_536];
        assert_eq!(kdf(&[0; 16], 0x51, &[&long]).unwrap_err(), ParamTooLong(0));
    }

    /// Oracle: OpenSSL's HMAC over the same S gives the same 256 bits. Fails when `openssl`
    /// is missing (`apt-get install -y openssl`).
    #[test]
    fn openssl_computes_the_same_kdf() {
        let e = alice();
        for (reading, purpose) in [
            (KdfReading::McIdAndXpkId, KeyPurpose::Confidentiality),
            (KdfReading::XpkIdOnly, KeyPurpose::Integrity),
        ] {
            let id = e.id.octets();
            let params = reading.params(&id, &e.mc_id);
            let mut s = vec![purpose.fc()];
            for p in &params {
                s.extend_from_slice(p);
                s.extend_from_slice(&(p.len() as u16).to_be_bytes());
            }
            let dir = std::env::temp_dir().join(format!("mcx-sec-kdf-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let input = dir.join("s.bin");
            std::fs::write(&input, &s).unwrap();
            let hexkey: String = e.csk.octets().iter().map(|b| format!("{b:02x}")).collect();
            let out = std::process::Command::new("openssl")
                .args(["mac", "-digest", "SHA256", "-macopt"])
                .arg(format!("hexkey:{hexkey}"))
                .arg("-in")
                .arg(&input)
                .arg("HMAC")
                .output()
                .expect("openssl is required for this oracle test: apt-get install -y openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs = String::from_utf8(out.stdout).unwrap().trim().to_lowercase();
            let ours: String = kdf(e.csk.octets(), purpose.fc(), &params)
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(ours, theirs);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

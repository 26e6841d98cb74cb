//! An uploaded CSK at rest (issue 13): the server keeps every CSK a user uploaded with
//! MIKEY-SAKKE (TS 33.180 5.4) in its durable store, so that a restart does not turn the user's
//! next protected PUBLISH into 403. The key is never written in the clear: it is sealed with
//! AES-256-GCM under a storage key derived from the server's own SAKKE receiver secret key (RSK),
//! the secret that let the server learn the CSK in the first place. The additional data binds
//! the sealed key to its CSK-ID and to the MC service ID it is tied to, so a row moved to another
//! tie (or a key swapped between rows) does not open.
//!
//! Format (45 octets): version `0x01` ‖ 96-bit nonce ‖ ciphertext (16) ‖ tag (16). The nonce is
//! passed in (sans-IO: the caller draws it from the system's CSPRNG); a random 96-bit nonce per
//! seal keeps the GCM nonce-reuse bound far away for the number of CSKs a server holds.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use crate::csk::{Csk, CskEntry, CskId};

/// The sealed form's version octet.
const VERSION: u8 = 1;
/// The sealed form's length.
pub const SEALED_LEN: usize = 1 + 12 + 16 + 16;
/// HKDF salt and info (domain separation from every other use of the RSK).
const SALT: &[u8] = b"mcx-authz";
const INFO: &[u8] = b"csk at rest v1";

/// Why a sealed CSK did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AtRestError {
    /// Not 45 octets, or an unknown version.
    #[error("not a sealed CSK (length or version)")]
    Malformed,
    /// The tag did not verify: another storage key (the server's RSK changed), or the row was
    /// altered or moved to another tie.
    #[error(
        "the sealed CSK does not open under this server's key for this CSK-ID and MC service ID"
    )]
    Unopenable,
}

/// The storage key: HKDF-SHA-256 of the server's RSK. Zeroized on drop (aws-lc-rs zeroizes
/// its own key schedule).
pub struct StorageKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageKey").finish_non_exhaustive()
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl StorageKey {
    /// Derives the storage key from a secret's octets (the server's RSK).
    pub fn derive(secret: &[u8]) -> StorageKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
        let mut octets = Zeroizing::new([0u8; 32]);
        prk.expand(&[INFO], Len32)
            .and_then(|okm| okm.fill(&mut octets[..]))
            .expect("HKDF-SHA-256 expands to 32 octets");
        let key = UnboundKey::new(&AES_256_GCM, &octets[..]).expect("a 32-octet AES-256 key");
        StorageKey {
            key: LessSafeKey::new(key),
        }
    }

    /// Seals `entry`'s key, bound to its CSK-ID and MC service ID, with `nonce` (fresh from a
    /// CSPRNG for every seal).
    pub fn seal(&self, entry: &CskEntry, nonce: [u8; 12]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let mut body = Zeroizing::new(entry.csk.octets().to_vec());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(entry.id, &entry.mc_id)),
                &mut body[..],
            )
            .expect("AES-256-GCM seals 16 octets");
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a sealed key for the tie (`id`, `mc_id`).
    pub fn open(&self, id: CskId, mc_id: &str, sealed: &[u8]) -> Result<Csk, AtRestError> {
        if sealed.len() != SEALED_LEN || sealed[0] != VERSION {
            return Err(AtRestError::Malformed);
        }
        let nonce: [u8; 12] = sealed[1..13]
            .try_into()
            .map_err(|_| AtRestError::Malformed)?;
        let mut body = Zeroizing::new(sealed[13..].to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(id, mc_id)),
                &mut body[..],
            )
            .map_err(|_| AtRestError::Unopenable)?;
        let octets: [u8; 16] = plain[..].try_into().map_err(|_| AtRestError::Malformed)?;
        Ok(Csk::new(octets))
    }
}

fn aad(id: CskId, mc_id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(4 + mc_id.len());
    a.extend_from_slice(&id.octets());
    a.extend_from_slice(mc_id.as_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> CskEntry {
        CskEntry {
            id: CskId(0x2000_0042),
            csk: Csk::new([0x5a; 16]),
            mc_id: "sip:alice@example.org".into(),
        }
    }

    #[test]
    fn a_sealed_csk_opens_under_the_same_key_and_tie_only() {
        let k = StorageKey::derive(b"the server's RSK octets");
        let e = entry();
        let sealed = k.seal(&e, [7; 12]);
        assert_eq!(sealed.len(), SEALED_LEN);
        assert!(
            !sealed.windows(16).any(|w| w == e.csk.octets()),
            "the key is not in the clear"
        );
        assert_eq!(k.open(e.id, &e.mc_id, &sealed).unwrap(), e.csk);
        // Another tie: another CSK-ID, another MC service ID.
        assert_eq!(
            k.open(CskId(0x2000_0043), &e.mc_id, &sealed),
            Err(AtRestError::Unopenable)
        );
        assert_eq!(
            k.open(e.id, "sip:bob@example.org", &sealed),
            Err(AtRestError::Unopenable)
        );
        // Another server key (the RSK changed).
        let other = StorageKey::derive(b"another RSK");
        assert_eq!(
            other.open(e.id, &e.mc_id, &sealed),
            Err(AtRestError::Unopenable)
        );
    }

    #[test]
    fn any_altered_octet_or_length_is_refused() {
        let k = StorageKey::derive(b"rsk");
        let e = entry();
        let sealed = k.seal(&e, [1; 12]);
        for i in 0..sealed.len() {
            let mut s = sealed.clone();
            s[i] ^= 0x01;
            let expected = if i == 0 {
                AtRestError::Malformed
            } else {
                AtRestError::Unopenable
            };
            assert_eq!(k.open(e.id, &e.mc_id, &s), Err(expected), "octet {i}");
        }
        assert_eq!(
            k.open(e.id, &e.mc_id, &sealed[..SEALED_LEN - 1]),
            Err(AtRestError::Malformed)
        );
        assert_eq!(k.open(e.id, &e.mc_id, &[]), Err(AtRestError::Malformed));
    }

    #[test]
    fn two_seals_of_one_key_differ_with_their_nonces() {
        let k = StorageKey::derive(b"rsk");
        let e = entry();
        assert_ne!(k.seal(&e, [1; 12]), k.seal(&e, [2; 12]));
    }
}

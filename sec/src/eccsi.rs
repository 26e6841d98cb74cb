//! ECCSI (RFC 6507) on NIST P-256, as MIKEY-SAKKE (RFC 6509) uses it: the SIGN payload of an
//! I_MESSAGE is `r || s || PVT`, verified against the KMS public authentication key (KPAK)
//! and the signer's identifier (the MIKEY-SAKKE UID of TS 33.180 F.2.1).
//!
//! Group and scalar arithmetic is RustCrypto's `p256` (constant-time field and scalar
//! arithmetic, constant-time scalar multiplication). Verification handles only public
//! values. Signing (for the lab tools) uses the secret SSK and the ephemeral `j` only through
//! `p256`'s constant-time operations; both are wiped after use.

use p256::elliptic_curve::group::Group;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::{Field, PrimeField};
use p256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Octets of one P-256 field element or scalar (N in RFC 6507).
pub const N: usize = 32;
/// Octets of an uncompressed point `04 || x || y`.
pub const POINT_LEN: usize = 1 + 2 * N;
/// Octets of an ECCSI signature `r || s || PVT`.
pub const SIGNATURE_LEN: usize = 2 * N + POINT_LEN;

/// Why an ECCSI operation refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EccsiError {
    /// A point is not `04 || x || y` on P-256 (KPAK or PVT).
    #[error("not an uncompressed P-256 point")]
    BadPoint,
    /// The signature is not 129 octets.
    #[error("signature is not r || s || PVT (129 octets)")]
    BadLength,
    /// The signature does not verify (RFC 6507 5.2.2 step 6).
    #[error("signature does not verify")]
    Invalid,
    /// A secret scalar is zero or out of range.
    #[error("secret key out of range")]
    BadKey,
}

/// Parses an uncompressed P-256 point, refusing the identity and points off the curve.
pub fn parse_point(bytes: &[u8]) -> Result<AffinePoint, EccsiError> {
    if bytes.len() != POINT_LEN || bytes[0] != 0x04 {
        return Err(EccsiError::BadPoint);
    }
    let x = FieldBytes::try_from(&bytes[1..1 + N]).map_err(|_| EccsiError::BadPoint)?;
    let y = FieldBytes::try_from(&bytes[1 + N..]).map_err(|_| EccsiError::BadPoint)?;
    Option::<AffinePoint>::from(AffinePoint::from_coordinates(&x, &y)).ok_or(EccsiError::BadPoint)
}

/// `04 || x || y` of a point (the identity has no such form: `None`).
pub fn encode_point(p: &ProjectivePoint) -> Option<[u8; POINT_LEN]> {
    if bool::from(p.is_identity()) {
        return None;
    }
    let a = p.to_affine();
    let mut out = [0u8; POINT_LEN];
    out[0] = 0x04;
    out[1..1 + N].copy_from_slice(&a.x());
    out[1 + N..].copy_from_slice(&a.y());
    Some(out)
}

fn generator_bytes() -> [u8; POINT_LEN] {
    encode_point(&ProjectivePoint::GENERATOR).unwrap_or([0; POINT_LEN])
}

/// `HS = hash(G || KPAK || ID || PVT)` (RFC 6507 5.1.1 step 4, 5.2.2 step 2).
pub fn hs(kpak: &[u8; POINT_LEN], id: &[u8], pvt: &[u8; POINT_LEN]) -> [u8; N] {
    let mut h = Sha256::new();
    h.update(generator_bytes());
    h.update(kpak);
    h.update(id);
    h.update(pvt);
    h.finalize().into()
}

fn he(hs: &[u8; N], r: &[u8], message: &[u8]) -> [u8; N] {
    let mut h = Sha256::new();
    h.update(hs);
    h.update(r);
    h.update(message);
    h.finalize().into()
}

fn reduce(bytes: &[u8; N]) -> Scalar {
    <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(*bytes))
}

/// Verifies an ECCSI signature (RFC 6507 5.2.2) of `message` by identifier `id` under `kpak`.
/// All inputs are public.
pub fn verify(
    kpak: &[u8; POINT_LEN],
    id: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), EccsiError> {
    if signature.len() != SIGNATURE_LEN {
        return Err(EccsiError::BadLength);
    }
    let (r, rest) = signature.split_at(N);
    let (s, pvt) = rest.split_at(N);
    let mut pvt_arr = [0u8; POINT_LEN];
    pvt_arr.copy_from_slice(pvt);
    // Step 1: PVT (and KPAK) lie on the curve.
    let pvt_point = parse_point(pvt)?;
    let kpak_point = parse_point(kpak)?;
    // Steps 2-3.
    let hs = hs(kpak, id, &pvt_arr);
    let he = he(&hs, r, message);
    let mut r_arr = [0u8; N];
    r_arr.copy_from_slice(r);
    let mut s_arr = [0u8; N];
    s_arr.copy_from_slice(s);
    let s_scalar = reduce(&s_arr);
    if bool::from(s_scalar.is_zero()) {
        return Err(EccsiError::Invalid);
    }
    // Step 4: Y = [HS]PVT + KPAK.
    let y = ProjectivePoint::from(pvt_point) * reduce(&hs) + ProjectivePoint::from(kpak_point);
    // Step 5: J = [s]([HE]G + [r]Y).
    let j = (ProjectivePoint::GENERATOR * reduce(&he) + y * reduce(&r_arr)) * s_scalar;
    // Step 6: Jx != 0 and Jx = r.
    if bool::from(j.is_identity()) {
        return Err(EccsiError::Invalid);
    }
    let jx = j.to_affine().x();
    if jx.as_slice() == r && jx.iter().any(|b| *b != 0) {
        Ok(())
    } else {
        Err(EccsiError::Invalid)
    }
}

/// A user's ECCSI signing material: the secret SSK and the public PVT (RFC 6507 5.1.1).
/// The SSK is wiped on drop.
#[derive(Clone)]
pub struct SigningKey {
    ssk: Zeroizing<[u8; N]>,
    pvt: [u8; POINT_LEN],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("ssk", &"<secret>")
            .field("pvt", &crate::kms::encode_hex(&self.pvt))
            .finish()
    }
}

impl SigningKey {
    /// From the Annex D `UserSigningKeySSK` and `UserPubTokenPVT` octets.
    pub fn from_bytes(ssk: &[u8], pvt: &[u8]) -> Result<Self, EccsiError> {
        parse_point(pvt)?;
        let mut ssk_arr = Zeroizing::new([0u8; N]);
        if ssk.len() != N {
            return Err(EccsiError::BadKey);
        }
        ssk_arr.copy_from_slice(ssk);
        let scalar = Option::<Scalar>::from(Scalar::from_repr(FieldBytes::from(*ssk_arr)))
            .ok_or(EccsiError::BadKey)?;
        if bool::from(scalar.is_zero()) {
            return Err(EccsiError::BadKey);
        }
        let mut pvt_arr = [0u8; POINT_LEN];
        pvt_arr.copy_from_slice(pvt);
        Ok(SigningKey {
            ssk: ssk_arr,
            pvt: pvt_arr,
        })
    }

    /// The SSK octets (secret).
    pub fn ssk(&self) -> &[u8; N] {
        &self.ssk
    }

    /// The PVT octets.
    pub fn pvt(&self) -> &[u8; POINT_LEN] {
        &self.pvt
    }

    fn ssk_scalar(&self) -> Result<Scalar, EccsiError> {
        Option::<Scalar>::from(Scalar::from_repr(FieldBytes::from(*self.ssk)))
            .ok_or(EccsiError::BadKey)
    }

    /// Checks the key against the KMS (RFC 6507 5.1.2): `[SSK]G = KPAK + [HS]PVT`.
    pub fn validate(&self, kpak: &[u8; POINT_LEN], id: &[u8]) -> Result<(), EccsiError> {
        let kpak_point = parse_point(kpak)?;
        let pvt_point = parse_point(&self.pvt)?;
        let hs = hs(kpak, id, &self.pvt);
        let lhs = ProjectivePoint::GENERATOR * self.ssk_scalar()?;
        let rhs =
            ProjectivePoint::from(kpak_point) + ProjectivePoint::from(pvt_point) * reduce(&hs);
        if lhs == rhs {
            Ok(())
        } else {
            Err(EccsiError::BadKey)
        }
    }

    /// Signs `message` (RFC 6507 5.2.1) with the ephemeral `j` (32 random octets, reduced
    /// mod q; refused if zero). Returns `r || s || PVT`.
    pub fn sign_with(
        &self,
        kpak: &[u8; POINT_LEN],
        id: &[u8],
        message: &[u8],
        j: &[u8; N],
    ) -> Result<[u8; SIGNATURE_LEN], EccsiError> {
        let mut j = reduce(j);
        if bool::from(j.is_zero()) {
            return Err(EccsiError::BadKey);
        }
        // Step 2: J = [j]G, r = Jx.
        let big_j = (ProjectivePoint::GENERATOR * j).to_affine();
        let r: [u8; N] = big_j.x().into();
        // Step 3.
        let hs = hs(kpak, id, &self.pvt);
        let he = he(&hs, &r, message);
        // Step 4: HE + r * SSK must be non-zero.
        let mut ssk = self.ssk_scalar()?;
        let mut t = reduce(&he) + reduce(&r) * ssk;
        let inv = Option::<Scalar>::from(t.invert());
        // Step 5: s' = (HE + r*SSK)^-1 * j; for P-256, s' always fits N octets (step 6).
        let result = match inv {
            Some(inv) => {
                let s = inv * j;
                let mut out = [0u8; SIGNATURE_LEN];
                out[..N].copy_from_slice(&r);
                out[N..2 * N].copy_from_slice(&s.to_repr());
                out[2 * N..].copy_from_slice(&self.pvt);
                Ok(out)
            }
            None => Err(EccsiError::BadKey),
        };
        j.zeroize();
        ssk.zeroize();
        t.zeroize();
        result
    }
}

/// KMS side (lab): derives a user's (SSK, PVT) from the KSAK and the ephemeral `v`
/// (RFC 6507 5.1.1). `ksak` and `v` are 32 octets, reduced mod q; zero is refused.
pub fn issue(ksak: &[u8; N], id: &[u8], v: &[u8; N]) -> Result<SigningKey, EccsiError> {
    let mut ksak_s = reduce(ksak);
    let mut v_s = reduce(v);
    if bool::from(ksak_s.is_zero() | v_s.is_zero()) {
        return Err(EccsiError::BadKey);
    }
    let kpak = kpak_of(ksak)?;
    let pvt = encode_point(&(ProjectivePoint::GENERATOR * v_s)).ok_or(EccsiError::BadKey)?;
    let hs = hs(&kpak, id, &pvt);
    let mut ssk = ksak_s + reduce(&hs) * v_s;
    let out = Zeroizing::new(<[u8; N]>::from(ssk.to_repr()));
    ksak_s.zeroize();
    v_s.zeroize();
    ssk.zeroize();
    if out.iter().all(|b| *b == 0) {
        return Err(EccsiError::BadKey);
    }
    Ok(SigningKey { ssk: out, pvt })
}

/// KPAK = \[KSAK\]G (RFC 6507 4.2).
pub fn kpak_of(ksak: &[u8; N]) -> Result<[u8; POINT_LEN], EccsiError> {
    let mut k = reduce(ksak);
    let p = ProjectivePoint::GENERATOR * k;
    k.zeroize();
    encode_point(&p).ok_or(EccsiError::BadKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::decode_hex;

    fn hex<const L: usize>(s: &str) -> [u8; L] {
        decode_hex(s).unwrap().try_into().unwrap()
    }

    fn scalar_hex(v: u32) -> [u8; N] {
        let mut out = [0u8; N];
        out[N - 4..].copy_from_slice(&v.to_be_bytes());
        out
    }

    const ID: &[u8] = b"2011-02\0tel:+447700900123\0";
    const KPAK: &str = "0450D4670BDE75244F28D2838A0D25558A7A72686D4522D4C8273FB6442AEBFA93\
                        DBDD37551AFD263B5DFD617F3960C65A8C298850FF99F20366DCE7D4367217F4";
    const PVT: &str = "04758A142779BE89E829E71984CB40EF758CC4AD775FC5B9A3E1C8ED52F6FA36D9\
                       A79D247692F4EDA3A6BDAB77D6AA6474A464AE4934663C5265BA7018BA091F79";
    const SSK: &str = "23F374AE1F4033F3E9DBDDAAEF20F4CF0B86BBD5A138A5AE9E7E006B34489A0D";
    const SIG_RS: &str = "269D4C8FDEB66A74E4EF8C0D5DCC597DDFE6029C2AFFC4936008CD2CC1045D81\
                          E09B528D0EF8D6DF1AA3ECBF80110CFCEC9FC68252CEBB679F4134846940CCFD";

    /// RFC 6507 Appendix A: KSAK 0x12345 -> KPAK; v 0x23456 -> PVT, HS, SSK; j 0x34567
    /// signs "message\0" to the published (r, s); the signature verifies.
    #[test]
    fn rfc6507_appendix_a() {
        let kpak: [u8; POINT_LEN] = hex(KPAK);
        assert_eq!(kpak_of(&scalar_hex(0x12345)).unwrap(), kpak);
        let key = issue(&scalar_hex(0x12345), ID, &scalar_hex(0x23456)).unwrap();
        assert_eq!(key.pvt, hex::<POINT_LEN>(PVT));
        assert_eq!(*key.ssk, hex::<N>(SSK));
        assert_eq!(
            hs(&kpak, ID, &key.pvt),
            hex::<N>("490F3FEBBC1C902F6289723D7F8CBF79DB88930849D19F38F0295B5C276C14D1")
        );
        key.validate(&kpak, ID).unwrap();
        assert_eq!(
            key.validate(&kpak, b"someone else"),
            Err(EccsiError::BadKey)
        );

        let sig = key
            .sign_with(&kpak, ID, b"message\0", &scalar_hex(0x34567))
            .unwrap();
        assert_eq!(crate::kms::encode_hex(&sig[..2 * N]), SIG_RS.to_lowercase());
        assert_eq!(&sig[2 * N..], &key.pvt[..]);
        verify(&kpak, ID, b"message\0", &sig).unwrap();

        // Any change to message, identifier, r or s is refused.
        assert_eq!(
            verify(&kpak, ID, b"message\x01", &sig),
            Err(EccsiError::Invalid)
        );
        assert_eq!(
            verify(&kpak, b"2011-02\0tel:+447700900124\0", b"message\0", &sig),
            Err(EccsiError::Invalid)
        );
        for i in [0, 31, 32, 63] {
            let mut bad = sig;
            bad[i] ^= 1;
            assert_eq!(
                verify(&kpak, ID, b"message\0", &bad),
                Err(EccsiError::Invalid),
                "{i}"
            );
        }
        let mut bad = sig;
        bad[100] ^= 1;
        assert_eq!(
            verify(&kpak, ID, b"message\0", &bad),
            Err(EccsiError::BadPoint)
        );
        assert_eq!(
            verify(&kpak, ID, b"message\0", &sig[..128]),
            Err(EccsiError::BadLength)
        );
    }

    #[test]
    fn zero_s_and_bad_points_are_refused() {
        let kpak: [u8; POINT_LEN] = hex(KPAK);
        let mut sig = [0u8; SIGNATURE_LEN];
        sig[2 * N..].copy_from_slice(&hex::<POINT_LEN>(PVT));
        assert_eq!(verify(&kpak, ID, b"m", &sig), Err(EccsiError::Invalid));
        assert_eq!(parse_point(&[0u8; POINT_LEN]), Err(EccsiError::BadPoint));
        assert_eq!(
            SigningKey::from_bytes(&[0u8; N], &hex::<POINT_LEN>(PVT)).unwrap_err(),
            EccsiError::BadKey
        );
    }
}

//! SAKKE (RFC 6508) with parameter set 1 of RFC 6509 Appendix A: the 1024-bit prime p, the
//! supersingular curve `E: y^2 = x^3 - 3x` over F_p, the point P of prime order q with
//! `p + 1 = 4q`, `g = <P, P>`, SHA-256 and n = 128.
//!
//! The pairing `<R, Q>` is the reduced Tate-Lichtenbaum pairing of RFC 6508 3.2: a Miller
//! loop over the bits of q - 1 on R (projective, Jacobian coordinates, so no inversion in
//! the loop), with each line evaluated at the distortion image `(-Qx, i*Qy)` in
//! `F_p^2 = F_p[i]/(i^2 + 1)`; every factor that lies in F_p (line denominators, vertical
//! lines, projective scalings) is dropped because the result lives in `PF_p`, the quotient of
//! F_p^2* by F_p*; the final power is `(p + 1)/q = 4`, and an element `a + i*b` of PF_p is
//! written as the single F_p element `b/a` (RFC 6508 2.1).
//!
//! # Constant time
//!
//! All field arithmetic is `crypto-bigint`'s fixed-size Montgomery arithmetic
//! (`ConstMontyForm<_, 16>`): additions, multiplications, the inversion (Bernstein-Yang
//! safegcd) and the selections run in time independent of the values. On top of it:
//!
//! - **Decapsulation** (the server's path, [`decapsulate`]) handles three secrets: the RSK
//!   `K_(b,S)`, the pairing value `w`, and what follows from it (the SSV and `r`). The
//!   Miller loop's control flow depends only on the bits of q - 1 (public constants); the
//!   point C that it doubles and adds is a multiple of `R_(b,S)`, which comes from the
//!   message and is public; the RSK coordinates enter only through constant-time
//!   multiplications into the line values. The final power is a fixed squaring chain, the
//!   conversion to `b/a` a constant-time inversion. `r` is secret (it is derived from the
//!   SSV), so the re-encapsulation check `[r]([b]P + Z) = R_(b,S)` uses a constant-time
//!   scalar multiplication: a fixed 1023-step double-and-add-always ladder over `r + q` or
//!   `r + 2q` (chosen in constant time so that the top bit is always at the same position),
//!   with the result picked by constant-time selection. The final comparison with `R_(b,S)`
//!   reveals only accept/refuse, which is public anyway.
//! - The RSK is parsed and validated once, when the key set is loaded (with a constant-time
//!   range check and curve equation), and kept as field elements.
//! - **Not constant time, and why it need not be**: the structure of parsing and validating
//!   points from the message or from the KMS certificate (public), `[b]P` for the receiver identifier b
//!   (public), HashToIntegerRange's hashing (SHA-256, constant time in the data) and its
//!   reductions (constant-time Montgomery conversion), and the branch on whether
//!   decapsulation succeeded (public outcome). Encapsulation ([`encapsulate`], lab tools)
//!   uses the same constant-time ladder for `[r]` and a constant-time square-and-multiply
//!   for `g^r`.
//! - Points that are on the curve but not of order q can drive the Miller loop into the
//!   exceptional cases of the formulas (a zero Z); the result is then garbage, never a
//!   panic, and the re-encapsulation check refuses the message.
//!
//! Secrets (RSK, SSV, master secret) are zeroized on drop; intermediate field elements that
//! derive from them are wiped where they are held in named variables.

use crypto_bigint::modular::ConstMontyForm;
use crypto_bigint::{const_monty_params, Choice, CtSelect, U1024};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const_monty_params!(
    PMod,
    U1024,
    "997ABB1F0A563FDA65C61198DAD0657A416C0CE19CB48261BE9AE358B3E01A2E\
     F40AAB27E2FC0F1B228730D531A59CB0E791B39FF7C88A19356D27F4A666A6D0\
     E26C6487326B4CD4512AC5CD65681CE1B6AFF4A831852A82A7CF3C521C3C09AA\
     9F94D6AF56971F1FFCE3E82389857DB080C5DF10AC7ACE87666D807AFEA85FEB",
    "p of SAKKE parameter set 1 (RFC 6509 Appendix A)"
);
const_monty_params!(
    QMod,
    U1024,
    "265EAEC7C2958FF69971846636B4195E905B0338672D20986FA6B8D62CF8068B\
     BD02AAC9F8BF03C6C8A1CC354C69672C39E46CE7FDF222864D5B49FD2999A9B4\
     389B1921CC9AD335144AB173595A07386DABFD2A0C614AA0A9F3CF14870F026A\
     A7E535ABD5A5C7C7FF38FA08E2615F6C203177C42B1EB3A1D99B601EBFAA17FB",
    "q of SAKKE parameter set 1 (RFC 6509 Appendix A)"
);

type Fp = ConstMontyForm<PMod, { U1024::LIMBS }>;
type Fq = ConstMontyForm<QMod, { U1024::LIMBS }>;

const P_HEX: &str = "997ABB1F0A563FDA65C61198DAD0657A416C0CE19CB48261BE9AE358B3E01A2E\
     F40AAB27E2FC0F1B228730D531A59CB0E791B39FF7C88A19356D27F4A666A6D0\
     E26C6487326B4CD4512AC5CD65681CE1B6AFF4A831852A82A7CF3C521C3C09AA\
     9F94D6AF56971F1FFCE3E82389857DB080C5DF10AC7ACE87666D807AFEA85FEB";
const Q_HEX: &str = "265EAEC7C2958FF69971846636B4195E905B0338672D20986FA6B8D62CF8068B\
     BD02AAC9F8BF03C6C8A1CC354C69672C39E46CE7FDF222864D5B49FD2999A9B4\
     389B1921CC9AD335144AB173595A07386DABFD2A0C614AA0A9F3CF14870F026A\
     A7E535ABD5A5C7C7FF38FA08E2615F6C203177C42B1EB3A1D99B601EBFAA17FB";
const PX_HEX: &str = "53FC09EE332C29AD0A7990053ED9B52A2B1A2FD60AEC69C698B2F204B6FF7CBF\
     B5EDB6C0F6CE2308AB10DB9030B09E1043D5F22CDB9DFA55718BD9E7406CE890\
     9760AF765DD5BCCB337C86548B72F2E1A702C3397A60DE74A7C1514DBA66910D\
     D5CFB4CC80728D87EE9163A5B63F73EC80EC46C4967E0979880DC8ABEAE63895";
const PY_HEX: &str = "0A8249063F6009F1F9F1F0533634A135D3E82016029906963D778D821E141178\
     F5EA69F4654EC2B9E7F7F5E5F0DE55F66B598CCF9A140B2E416CFF0CA9E032B9\
     70DAE117AD547C6CCAD696B5B7652FE0AC6F1E80164AA989492D979FC5A4D5F2\
     13515AD7E9CB99A980BDAD5AD5BB4636ADB9B5706A67DCDE75573FD71BEF16D7";
/// `g = <P, P>` (RFC 6509 Appendix A), in the `b/a` form of PF_p.
pub const G_HEX: &str = "66FC2A432B6EA392148F15867D623068C6A87BD1FB94C41E27FABE658E015A87\
     371E94744C96FEDA449AE9563F8BC446CBFDA85D5D00EF577072DA8F541721BE\
     EE0FAED1828EAB90B99DFB0138C7843355DF0460B4A9FD74B4F1A32BCAFA1FFA\
     D682C033A7942BCCE3720F20B9B7B0403C8CAE87B7A0042ACDE0FAB36461EA46";

/// Octets of an F_p element.
pub const FP_LEN: usize = 128;
/// Octets of an uncompressed point `04 || x || y`.
pub const POINT_LEN: usize = 1 + 2 * FP_LEN;
/// Octets of the SSV (n = 128 bits).
pub const SSV_LEN: usize = 16;
/// Octets of the Encapsulated Data `R_(b,S) || H`.
pub const ENCAPSULATED_LEN: usize = POINT_LEN + SSV_LEN;

/// Why a SAKKE operation refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SakkeError {
    /// A point is not `04 || x || y` on E(F_p) with coordinates below p.
    #[error("not a point of the SAKKE curve")]
    BadPoint,
    /// The Encapsulated Data is not `R_(b,S) || H` (273 octets).
    #[error("encapsulated data is not 273 octets")]
    BadLength,
    /// The re-encapsulation check failed (RFC 6508 6.2.2 step 5): wrong key or forged data.
    #[error("decapsulation check failed")]
    Invalid,
    /// A secret is zero or degenerate.
    #[error("secret out of range")]
    BadKey,
}

#[derive(Clone, Copy)]
struct Fp2 {
    a: Fp,
    b: Fp,
}

impl Fp2 {
    fn one() -> Self {
        Fp2 {
            a: Fp::ONE,
            b: Fp::ZERO,
        }
    }
    fn mul(&self, o: &Fp2) -> Fp2 {
        let ac = self.a.mul(&o.a);
        let bd = self.b.mul(&o.b);
        let cross = self.a.add(&self.b).mul(&o.a.add(&o.b));
        Fp2 {
            a: ac.sub(&bd),
            b: cross.sub(&ac).sub(&bd),
        }
    }
    fn square(&self) -> Fp2 {
        let ab = self.a.mul(&self.b);
        Fp2 {
            a: self.a.add(&self.b).mul(&self.a.sub(&self.b)),
            b: ab.double(),
        }
    }
    fn select(&self, other: &Fp2, choice: Choice) -> Fp2 {
        Fp2 {
            a: self.a.ct_select(&other.a, choice),
            b: self.b.ct_select(&other.b, choice),
        }
    }
    /// The PF_p representative `b/a` (RFC 6508 2.1); `None` if a = 0.
    fn to_pfp(self) -> Option<Fp> {
        Option::<Fp>::from(self.a.invert()).map(|ai| self.b.mul(&ai))
    }
}

impl Zeroize for Fp2 {
    fn zeroize(&mut self) {
        self.a.zeroize();
        self.b.zeroize();
    }
}

/// An affine point of E(F_p).
#[derive(Clone, Copy)]
struct Affine {
    x: Fp,
    y: Fp,
}

/// A Jacobian point (x = X/Z^2, y = Y/Z^3).
#[derive(Clone, Copy)]
struct Jacobian {
    x: Fp,
    y: Fp,
    z: Fp,
}

fn fp_hex(s: &str) -> Fp {
    Fp::new(&U1024::from_be_hex(s))
}

fn generator() -> Affine {
    Affine {
        x: fp_hex(PX_HEX),
        y: fp_hex(PY_HEX),
    }
}

fn three() -> Fp {
    Fp::ONE.double().add(&Fp::ONE)
}

fn on_curve(p: &Affine) -> bool {
    let rhs = p.x.square().mul(&p.x).sub(&three().mul(&p.x));
    bool::from(p.y.square().ct_eq(&rhs))
}

use crypto_bigint::ctutils::CtLt as _;
use crypto_bigint::CtEq;

fn fp_from_bytes(bytes: &[u8]) -> Option<Fp> {
    if bytes.len() != FP_LEN {
        return None;
    }
    // Canonical only: below p (a constant-time comparison: an RSK passes through here).
    let v = U1024::from_be_slice(bytes);
    if !bool::from(v.ct_lt(&U1024::from_be_hex(P_HEX))) {
        return None;
    }
    Some(Fp::new(&v))
}

fn fp_to_bytes(v: &Fp) -> [u8; FP_LEN] {
    let mut out = [0u8; FP_LEN];
    out.copy_from_slice(v.retrieve().to_be_bytes().as_ref());
    out
}

fn parse_point(bytes: &[u8]) -> Result<Affine, SakkeError> {
    if bytes.len() != POINT_LEN || bytes[0] != 0x04 {
        return Err(SakkeError::BadPoint);
    }
    let x = fp_from_bytes(&bytes[1..1 + FP_LEN]).ok_or(SakkeError::BadPoint)?;
    let y = fp_from_bytes(&bytes[1 + FP_LEN..]).ok_or(SakkeError::BadPoint)?;
    let p = Affine { x, y };
    if on_curve(&p) {
        Ok(p)
    } else {
        Err(SakkeError::BadPoint)
    }
}

fn encode_point(p: &Affine) -> [u8; POINT_LEN] {
    let mut out = [0u8; POINT_LEN];
    out[0] = 0x04;
    out[1..1 + FP_LEN].copy_from_slice(&fp_to_bytes(&p.x));
    out[1 + FP_LEN..].copy_from_slice(&fp_to_bytes(&p.y));
    out
}

impl Jacobian {
    fn from_affine(p: &Affine) -> Self {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fp::ONE,
        }
    }

    /// Doubling with a = -3; also returns the tangent line at the old point evaluated at
    /// the distortion image of `q`, up to an F_p factor.
    fn double_with_line(&self, q: Option<&Affine>) -> (Jacobian, Option<Fp2>) {
        let (x, y, z) = (&self.x, &self.y, &self.z);
        let zz = z.square();
        let m = three().mul(&x.sub(&zz)).mul(&x.add(&zz));
        let yy = y.square();
        let s = x.mul(&yy).double().double();
        let x3 = m.square().sub(&s.double());
        let yyyy8 = yy.square().double().double().double();
        let y3 = m.mul(&s.sub(&x3)).sub(&yyyy8);
        let z3 = y.mul(z).double();
        let line = q.map(|q| Fp2 {
            a: m.mul(&q.x.mul(&zz).add(x)).sub(&yy.double()),
            b: z3.mul(&zz).mul(&q.y),
        });
        (
            Jacobian {
                x: x3,
                y: y3,
                z: z3,
            },
            line,
        )
    }

    /// Mixed addition self + r (r affine); also returns the line through them evaluated at
    /// the distortion image of `q`, up to an F_p factor.
    fn add_with_line(&self, r: &Affine, q: Option<&Affine>) -> (Jacobian, Option<Fp2>) {
        let (x, y, z) = (&self.x, &self.y, &self.z);
        let zz = z.square();
        let u2 = r.x.mul(&zz);
        let s2 = r.y.mul(&zz).mul(z);
        let h = u2.sub(x);
        let rr = s2.sub(y);
        let hh = h.square();
        let hhh = hh.mul(&h);
        let v = x.mul(&hh);
        let x3 = rr.square().sub(&hhh).sub(&v.double());
        let y3 = rr.mul(&v.sub(&x3)).sub(&y.mul(&hhh));
        let z3 = z.mul(&h);
        let line = q.map(|q| Fp2 {
            a: rr.mul(&q.x.add(&r.x)).sub(&r.y.mul(&z3)),
            b: z3.mul(&q.y),
        });
        (
            Jacobian {
                x: x3,
                y: y3,
                z: z3,
            },
            line,
        )
    }

    fn select(&self, other: &Jacobian, choice: Choice) -> Jacobian {
        Jacobian {
            x: self.x.ct_select(&other.x, choice),
            y: self.y.ct_select(&other.y, choice),
            z: self.z.ct_select(&other.z, choice),
        }
    }

    fn to_affine(self) -> Option<Affine> {
        let zi = Option::<Fp>::from(self.z.invert())?;
        let zi2 = zi.square();
        Some(Affine {
            x: self.x.mul(&zi2),
            y: self.y.mul(&zi2).mul(&zi),
        })
    }

    /// Whether this point equals the affine `p`, without an inversion.
    fn equals(&self, p: &Affine) -> bool {
        let zz = self.z.square();
        let zero_z = self.z.ct_eq(&Fp::ZERO);
        let ex = self.x.ct_eq(&p.x.mul(&zz));
        let ey = self.y.ct_eq(&p.y.mul(&zz).mul(&self.z));
        bool::from(!zero_z & ex & ey)
    }
}

fn q_uint() -> U1024 {
    U1024::from_be_hex(Q_HEX)
}

/// Bit length of q: 1022.
const Q_BITS: u32 = 1022;

/// `[k]B` for a secret k < q, in constant time (see the module docs). B must have order q.
fn mul_ct(base: &Affine, k: &U1024) -> Jacobian {
    let q = q_uint();
    // k' = k + q, or k + 2q, whichever has bit Q_BITS set (exactly one does for k < q).
    let k1 = k.wrapping_add(&q);
    let k2 = k1.wrapping_add(&q);
    let mut kk = k2.ct_select(&k1, k1.bit(Q_BITS));
    let mut acc = Jacobian::from_affine(base);
    for i in (0..Q_BITS).rev() {
        acc = acc.double_with_line(None).0;
        let sum = acc.add_with_line(base, None).0;
        acc = acc.select(&sum, kk.bit(i));
    }
    kk.zeroize();
    acc
}

/// `[k]B` for a public k (variable time), k > 0.
fn mul_vartime(base: &Affine, k: &U1024) -> Option<Jacobian> {
    let bits = k.bit_width_vartime();
    if bits == 0 {
        return None;
    }
    let mut acc = Jacobian::from_affine(base);
    for i in (0..bits - 1).rev() {
        acc = acc.double_with_line(None).0;
        if k.bit_vartime(i) {
            acc = acc.add_with_line(base, None).0;
        }
    }
    Some(acc)
}

/// The Miller value of the Tate pairing on R at the distortion image of Q, up to F_p*.
fn miller(r: &Affine, q: &Affine) -> Fp2 {
    let qm1 = q_uint().wrapping_sub(&U1024::ONE);
    let mut v = Fp2::one();
    let mut c = Jacobian::from_affine(r);
    for i in (0..qm1.bit_width_vartime() - 1).rev() {
        let (c2, l) = c.double_with_line(Some(q));
        v = v.square().mul(&l.unwrap_or_else(Fp2::one));
        c = c2;
        if qm1.bit_vartime(i) {
            let (c3, l) = c.add_with_line(r, Some(q));
            v = v.mul(&l.unwrap_or_else(Fp2::one));
            c = c3;
        }
    }
    v
}

/// `<R, Q>` in the `b/a` form of PF_p; `None` only for degenerate inputs.
fn pairing(r: &Affine, q: &Affine) -> Option<Fp> {
    let mut v = miller(r, q);
    // Final power (p + 1)/q = 4 in PF_p.
    let mut w = v.square().square();
    let out = w.to_pfp();
    v.zeroize();
    w.zeroize();
    out
}

/// `g^r` in PF_p (g = 1 + i*g_repr), constant time in r.
fn pfp_pow_ct(g: &Fp, r: &U1024) -> Option<Fp> {
    let base = Fp2 { a: Fp::ONE, b: *g };
    let mut acc = Fp2::one();
    for i in (0..1024).rev() {
        acc = acc.square();
        let m = acc.mul(&base);
        acc = acc.select(&m, r.bit(i));
    }
    let out = acc.to_pfp();
    acc.zeroize();
    out
}

/// HashToIntegerRange(s, n, SHA-256) of RFC 6508 5.1 for n = q.
fn hash_to_q(s: &[u8]) -> U1024 {
    let v = hash_blocks::<4>(s);
    Fq::new(&U1024::from_be_slice(&v[..])).retrieve()
}

/// HashToIntegerRange(s, 2^128, SHA-256): one block, its low 16 octets.
fn hash_to_ssv_range(s: &[u8]) -> Zeroizing<[u8; SSV_LEN]> {
    let v = hash_blocks::<1>(s);
    let mut out = Zeroizing::new([0u8; SSV_LEN]);
    out.copy_from_slice(&v[32 - SSV_LEN..]);
    out
}

/// `v_1 || ... || v_L` of RFC 6508 5.1 steps 1-5, L = ceil(lg(n)/256).
fn hash_blocks<const L: usize>(s: &[u8]) -> Zeroizing<Vec<u8>> {
    let a: [u8; 32] = Sha256::digest(s).into();
    let mut h = [0u8; 32];
    let mut out = Zeroizing::new(Vec::with_capacity(32 * L));
    for _ in 0..L {
        h = Sha256::digest(h).into();
        let mut hasher = Sha256::new();
        hasher.update(h);
        hasher.update(a);
        out.extend_from_slice(&hasher.finalize());
    }
    out
}

/// An identifier as an integer mod q (`b` in `[b]P`), public.
fn id_scalar(id: &[u8]) -> Option<U1024> {
    if id.len() > FP_LEN {
        return None;
    }
    let mut buf = [0u8; FP_LEN];
    buf[FP_LEN - id.len()..].copy_from_slice(id);
    Some(Fq::new(&U1024::from_be_slice(&buf)).retrieve())
}

/// `[b]P + Z`, public.
fn receiver_base(id: &[u8], z: &Affine) -> Result<Affine, SakkeError> {
    let b = id_scalar(id).ok_or(SakkeError::BadKey)?;
    let bp = mul_vartime(&generator(), &b).ok_or(SakkeError::BadKey)?;
    let sum = bp.add_with_line(z, None).0;
    sum.to_affine().ok_or(SakkeError::BadKey)
}

/// The pairing `<R, Q>` of two encoded points of E(F_p), in the `b/a` form of PF_p
/// (128 octets). Public API for tests and benchmarks; Q may be secret (an RSK).
pub fn pairing_of(r: &[u8], q: &[u8]) -> Result<[u8; FP_LEN], SakkeError> {
    let r = parse_point(r)?;
    let mut q = parse_point(q)?;
    let w = pairing(&r, &q);
    q.x.zeroize();
    q.y.zeroize();
    let mut w = w.ok_or(SakkeError::Invalid)?;
    let out = fp_to_bytes(&w);
    w.zeroize();
    Ok(out)
}

/// A KMS public key `Z = [z]P` (the `PubEncKey` of Annex D), validated.
#[derive(Clone)]
pub struct PublicKey {
    z: Affine,
    bytes: [u8; POINT_LEN],
}

impl PublicKey {
    /// Parses and validates `04 || x || y`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SakkeError> {
        let z = parse_point(bytes)?;
        let mut b = [0u8; POINT_LEN];
        b.copy_from_slice(bytes);
        Ok(PublicKey { z, bytes: b })
    }
    /// The encoded point.
    pub fn to_bytes(&self) -> [u8; POINT_LEN] {
        self.bytes
    }
}

/// A Receiver Secret Key `K_(b,S)` (Annex D `UserDecryptKey`), parsed and validated once.
/// Wiped on drop.
#[derive(Clone)]
pub struct ReceiverSecretKey {
    bytes: Box<[u8; POINT_LEN]>,
    point: Affine,
}

impl Zeroize for ReceiverSecretKey {
    fn zeroize(&mut self) {
        self.bytes.zeroize();
        self.point.x.zeroize();
        self.point.y.zeroize();
    }
}

impl Drop for ReceiverSecretKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for ReceiverSecretKey {}

impl std::fmt::Debug for ReceiverSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiverSecretKey(<secret>)")
    }
}

impl ReceiverSecretKey {
    /// Parses and validates the point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SakkeError> {
        let point = parse_point(bytes)?;
        let mut b = Box::new([0u8; POINT_LEN]);
        b.copy_from_slice(bytes);
        Ok(ReceiverSecretKey { bytes: b, point })
    }
    /// The octets (secret).
    pub fn as_bytes(&self) -> &[u8; POINT_LEN] {
        &self.bytes
    }
    /// Checks `<[b]P + Z, K_(b,S)> = g` (RFC 6508 6.1.2), as a receiver does on
    /// provisioning.
    pub fn validate(&self, id: &[u8], kms: &PublicKey) -> Result<(), SakkeError> {
        let base = receiver_base(id, &kms.z)?;
        let g = pairing(&base, &self.point).ok_or(SakkeError::Invalid)?;
        if bool::from(g.ct_eq(&fp_hex(G_HEX))) {
            Ok(())
        } else {
            Err(SakkeError::Invalid)
        }
    }
}

/// The SSV (n = 128 bits). Wiped on drop.
pub type Ssv = Zeroizing<[u8; SSV_LEN]>;

/// A receiver ready to decapsulate: its identifier b, its RSK, and `[b]P + Z` computed once
/// (a server decapsulates many messages to one identifier per key period).
#[derive(Clone)]
pub struct Decapsulator {
    id: Vec<u8>,
    rsk: ReceiverSecretKey,
    base: Affine,
}

impl std::fmt::Debug for Decapsulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decapsulator").finish_non_exhaustive()
    }
}

impl Decapsulator {
    /// Prepares decapsulation for the identifier `id` under the KMS key.
    pub fn new(id: &[u8], rsk: ReceiverSecretKey, kms: &PublicKey) -> Result<Self, SakkeError> {
        Ok(Decapsulator {
            id: id.to_vec(),
            base: receiver_base(id, &kms.z)?,
            rsk,
        })
    }

    /// Decapsulates (RFC 6508 6.2.2) `R_(b,S) || H`.
    pub fn decapsulate(&self, encapsulated: &[u8]) -> Result<Ssv, SakkeError> {
        decapsulate_with(encapsulated, &self.id, &self.rsk, &self.base)
    }

    /// The key that seals what this receiver learnt for storage at rest (HKDF of the RSK:
    /// [`crate::csk_at_rest`]).
    pub fn storage_key(&self) -> crate::csk_at_rest::StorageKey {
        crate::csk_at_rest::StorageKey::derive(&self.rsk.bytes[..])
    }
}

/// Decapsulates (RFC 6508 6.2.2): the receiver `id` (b) with its RSK and its KMS's public
/// key recovers the SSV from `R_(b,S) || H`, or refuses.
pub fn decapsulate(
    encapsulated: &[u8],
    id: &[u8],
    rsk: &ReceiverSecretKey,
    kms: &PublicKey,
) -> Result<Ssv, SakkeError> {
    if encapsulated.len() != ENCAPSULATED_LEN {
        return Err(SakkeError::BadLength);
    }
    parse_point(&encapsulated[..POINT_LEN])?;
    let base = receiver_base(id, &kms.z)?;
    decapsulate_with(encapsulated, id, rsk, &base)
}

fn decapsulate_with(
    encapsulated: &[u8],
    id: &[u8],
    rsk: &ReceiverSecretKey,
    base: &Affine,
) -> Result<Ssv, SakkeError> {
    if encapsulated.len() != ENCAPSULATED_LEN {
        return Err(SakkeError::BadLength);
    }
    // Step 1: parse R_(b,S) (public) and H.
    let r_point = parse_point(&encapsulated[..POINT_LEN])?;
    let h = &encapsulated[POINT_LEN..];
    // Step 2: w = <R_(b,S), K_(b,S)>.
    let w = pairing(&r_point, &rsk.point);
    let mut w = w.ok_or(SakkeError::Invalid)?;
    let mut w_bytes = Zeroizing::new(fp_to_bytes(&w));
    w.zeroize();
    // Step 3: SSV = H XOR HashToIntegerRange(w, 2^n).
    let mask = hash_to_ssv_range(&w_bytes[..]);
    w_bytes.zeroize();
    let mut ssv: Ssv = Zeroizing::new([0u8; SSV_LEN]);
    for i in 0..SSV_LEN {
        ssv[i] = h[i] ^ mask[i];
    }
    // Steps 4-5: r = HashToIntegerRange(SSV || b, q); [r]([b]P + Z) must be R_(b,S).
    let mut r = hash_to_q(&[&ssv[..], id].concat());
    let test = mul_ct(base, &r);
    r.zeroize();
    if test.equals(&r_point) {
        Ok(ssv)
    } else {
        Err(SakkeError::Invalid)
    }
}

/// Encapsulates `ssv` to the receiver `id` under the KMS key (RFC 6508 6.2.1). Returns
/// `R_(b,S) || H`. For the lab tools and tests.
pub fn encapsulate(
    ssv: &[u8; SSV_LEN],
    id: &[u8],
    kms: &PublicKey,
) -> Result<[u8; ENCAPSULATED_LEN], SakkeError> {
    // Step 1: r = HashToIntegerRange(SSV || b, q).
    let mut r = hash_to_q(&[&ssv[..], id].concat());
    if bool::from(r.ct_eq(&U1024::ZERO)) {
        return Err(SakkeError::BadKey);
    }
    // Step 2: R_(b,S) = [r]([b]P + Z).
    let base = receiver_base(id, &kms.z)?;
    let big_r = mul_ct(&base, &r).to_affine().ok_or(SakkeError::BadKey)?;
    // Step 3: H = SSV XOR HashToIntegerRange(g^r, 2^n).
    let gr = pfp_pow_ct(&fp_hex(G_HEX), &r);
    r.zeroize();
    let mut gr = gr.ok_or(SakkeError::BadKey)?;
    let gr_bytes = Zeroizing::new(fp_to_bytes(&gr));
    gr.zeroize();
    let mask = hash_to_ssv_range(&gr_bytes[..]);
    let mut out = [0u8; ENCAPSULATED_LEN];
    out[..POINT_LEN].copy_from_slice(&encode_point(&big_r));
    for i in 0..SSV_LEN {
        out[POINT_LEN + i] = ssv[i] ^ mask[i];
    }
    Ok(out)
}

/// A KMS master secret z (lab KMS). Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret {
    z: [u8; FP_LEN],
}

impl MasterSecret {
    /// From random octets, reduced mod q; refused if zero.
    pub fn from_random(bytes: &[u8; FP_LEN]) -> Result<Self, SakkeError> {
        let mut z = Fq::new(&U1024::from_be_slice(bytes)).retrieve();
        if bool::from(z.ct_eq(&U1024::ZERO)) {
            return Err(SakkeError::BadKey);
        }
        let mut out = [0u8; FP_LEN];
        out.copy_from_slice(z.to_be_bytes().as_ref());
        z.zeroize();
        Ok(MasterSecret { z: out })
    }

    /// The octets (secret).
    pub fn as_bytes(&self) -> &[u8; FP_LEN] {
        &self.z
    }

    fn scalar(&self) -> U1024 {
        U1024::from_be_slice(&self.z)
    }

    /// `Z = [z]P` (RFC 6508 2.2).
    pub fn public_key(&self) -> Result<PublicKey, SakkeError> {
        let mut z = self.scalar();
        let pt = mul_ct(&generator(), &z).to_affine();
        z.zeroize();
        let pt = pt.ok_or(SakkeError::BadKey)?;
        Ok(PublicKey {
            z: pt,
            bytes: encode_point(&pt),
        })
    }

    /// `K_(b,S) = [(b + z)^-1]P` (RFC 6508 6.1.1).
    pub fn receiver_secret_key(&self, id: &[u8]) -> Result<ReceiverSecretKey, SakkeError> {
        let b = id_scalar(id).ok_or(SakkeError::BadKey)?;
        let mut z = self.scalar();
        let mut sum = Fq::new(&b).add(&Fq::new(&z));
        z.zeroize();
        let inv = Option::<Fq>::from(sum.invert());
        sum.zeroize();
        let mut k = inv.ok_or(SakkeError::BadKey)?.retrieve();
        let pt = mul_ct(&generator(), &k).to_affine();
        k.zeroize();
        let pt = pt.ok_or(SakkeError::BadKey)?;
        Ok(ReceiverSecretKey {
            bytes: Box::new(encode_point(&pt)),
            point: pt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::{decode_hex, encode_hex};

    const ID: &[u8] = b"2011-02\0tel:+447700900123\0";
    const Z_MASTER: &str = "AFF429D35F84B110D094803B3595A6E2998BC99F";
    const ZX: &str = "5958EF1B1679BF099B3A030DF255AA6A23C1D8F143D4D23F753E69BD27A832F3\
        8CB4AD53DDEF4260B0FE8BB45C4C1FF510EFFE300367A37B61F701D914AEF097\
        24825FA0707D61A6DFF4FBD7273566CDDE352A0B04B7C16A78309BE640697DE7\
        47613A5FC195E8B9F328852A579DB8F99B1D0034479EA9C5595F47C4B2F54FF2";
    const ZY: &str = "1508D37514DCF7A8E143A6058C09A6BF2C9858CA37C258065AE6BF7532BC8B5B\
        63383866E0753C5AC0E72709F8445F2E6178E065857E0EDA10F68206B63505ED\
        87E534FB2831FF957FB7DC619DAE61301EEACC2FDA3680EA4999258A833CEA8F\
        C67C6D19487FB449059F26CC8AAB655AB58B7CC796E24E9A394095754F5F8BAE";
    const SSV: &str = "123456789ABCDEF0123456789ABCDEF0";
    const R: &str = "13EE3E1B8DAC5DB168B1CEB32F0566A4C273693F78BAFFA2A2EE6A686E6BD90F\
        8206CCAB84E7F42ED39BD4FB131012ECCA2ECD2119414560C17CAB46B956A80F\
        58A3302EB3E2C9A228FBA7ED34D8ACA2392DA1FFB0B17B2320AE09AAEDFD0235\
        F6FE0EB65337A63F9CC97728B8E5AD0460FADE144369AA5B2166213247712096";
    const RBX: &str = "44E8AD44AB8592A6A5A3DDCA5CF896C718043606A01D650DEF37A01F37C228C3\
        32FC317354E2C274D4DAF8AD001054C76CE57971C6F4486D5723043261C506EB\
        F5BE438F53DE04F067C776E0DD3B71A6290133283725A532F21AF145126DC1D7\
        77ECC27BE50835BD28098B8A73D9F801D893793A41FF5C49B87E79F2BE4D56CE";
    const RBY: &str = "557E134AD85BB1D4B9CE4F8BE4B08A12BABF55B1D6F1D7A638019EA28E15AB1C\
        9F76375FDD1210D4F4351B9A009486B7F3ED46C965DED2D80DADE4F38C6721D5\
        2C3AD103A10EBD2959248B4EF006836BF097448E6107C9EDEE9FB704823DF199\
        F832C905AE45F8A247A072D8EF729EABC5E27574B07739B34BE74A532F747B86";
    const GR: &str = "7D2A8438E6291C649B6579EB3B79EAE948B1DE9E5F7D1F4070A08F8DB6B3C515\
        6F2201AFFBB5CB9D82AA3EC0D0398B89ABC78A13A760C0BF3F77E63D0DF3F1A3\
        41A41B8811DF197FD6CD0F003125606F4F109F400F7292A10D255E3C0EBCCB42\
        53FB182C68F09CF6CD9C4A53DA6C74AD007AF36B8BCA979D5895E282F483FCD6";
    const MASK: &str = "9BD4EA1E801D37E62AD2FAB0D4F5BBF7";
    const H: &str = "89E0BC661AA1E91638E6ACC84E496507";
    const KBX: &str = "93AF67E5007BA6E6A80DA793DA300FA4B52D0A74E25E6E7B2B3D6EE9D18A9B5C\
        5023597BD82D8062D34019563BA1D25C0DC56B7B979D74AA50F29FBF11CC2C93\
        F5DFCA615E609279F6175CEADB00B58C6BEE1E7A2A47C4F0C456F05259A6FA94\
        A634A40DAE1DF593D4FECF688D5FC678BE7EFC6DF3D6835325B83B2C6E69036B";
    const KBY: &str = "155F0A27241094B04BFB0BDFAC6C670A65C325D39A069F03659D44CA27D3BE8D\
        F311172B554160181CBE94A2A783320CED590BC42644702CF371271E496BF20F\
        588B78A1BC01ECBB6559934BDD2FB65D2884318A33D1A42ADF5E33CC5800280B\
        28356497F87135BAB9612A17260424409AC15FEE996B744C332151235DECB0F5";

    fn point(x: &str, y: &str) -> Vec<u8> {
        let mut v = vec![4u8];
        v.extend(decode_hex(x).unwrap());
        v.extend(decode_hex(y).unwrap());
        v
    }

    fn master() -> MasterSecret {
        let mut buf = [0u8; FP_LEN];
        let z = decode_hex(Z_MASTER).unwrap();
        buf[FP_LEN - z.len()..].copy_from_slice(&z);
        MasterSecret::from_random(&buf).unwrap()
    }

    #[test]
    fn parameter_set_1_is_consistent() {
        // p = 4q - 1, P on the curve, [q]P = O (the ladder would need q < q, so check
        // [q-1]P = -P instead).
        let p = U1024::from_be_hex(P_HEX);
        assert_eq!(
            q_uint()
                .wrapping_mul(&U1024::from_u8(4))
                .wrapping_sub(&U1024::ONE),
            p
        );
        assert_eq!(q_uint().bit_width_vartime(), Q_BITS);
        let g = generator();
        assert!(on_curve(&g));
        let qm1 = q_uint().wrapping_sub(&U1024::ONE);
        let neg = mul_vartime(&g, &qm1).unwrap().to_affine().unwrap();
        assert_eq!(fp_to_bytes(&neg.x), fp_to_bytes(&g.x));
        assert_eq!(fp_to_bytes(&neg.y), fp_to_bytes(&g.y.neg()));
        let ct = mul_ct(&g, &qm1).to_affine().unwrap();
        assert_eq!(encode_point(&ct), encode_point(&neg));
    }

    /// RFC 6509 Appendix A: g = <P, P>.
    #[test]
    fn pairing_of_p_with_itself_is_g() {
        let g = pairing(&generator(), &generator()).unwrap();
        assert_eq!(encode_hex(&fp_to_bytes(&g)), G_HEX.to_lowercase());
    }

    /// RFC 6508 Appendix A, KMS side: Z = [z]P and the RSK of the identifier.
    #[test]
    fn rfc6508_kms_vectors() {
        let m = master();
        assert_eq!(m.public_key().unwrap().to_bytes().to_vec(), point(ZX, ZY));
        let rsk = m.receiver_secret_key(ID).unwrap();
        assert_eq!(rsk.as_bytes().to_vec(), point(KBX, KBY));
        rsk.validate(ID, &m.public_key().unwrap()).unwrap();
        assert_eq!(
            rsk.validate(b"someone else", &m.public_key().unwrap()),
            Err(SakkeError::Invalid)
        );
    }

    /// RFC 6508 Appendix A, sender and receiver: r, g^r, the mask, the Encapsulated Data,
    /// and decapsulation back to the SSV.
    #[test]
    fn rfc6508_exchange_vectors() {
        let ssv: [u8; SSV_LEN] = decode_hex(SSV).unwrap().try_into().unwrap();
        let r = hash_to_q(&[&ssv[..], ID].concat());
        assert_eq!(encode_hex(r.to_be_bytes().as_ref()), R.to_lowercase());
        let gr = pfp_pow_ct(&fp_hex(G_HEX), &r).unwrap();
        assert_eq!(encode_hex(&fp_to_bytes(&gr)), GR.to_lowercase());
        assert_eq!(
            encode_hex(&hash_to_ssv_range(&fp_to_bytes(&gr))[..]),
            MASK.to_lowercase()
        );

        let kms = PublicKey::from_bytes(&point(ZX, ZY)).unwrap();
        let enc = encapsulate(&ssv, ID, &kms).unwrap();
        assert_eq!(enc[..POINT_LEN].to_vec(), point(RBX, RBY));
        assert_eq!(encode_hex(&enc[POINT_LEN..]), H.to_lowercase());

        // The pairing itself: <R_(b,S), K_(b,S)> = g^r.
        let w = pairing(
            &parse_point(&point(RBX, RBY)).unwrap(),
            &parse_point(&point(KBX, KBY)).unwrap(),
        )
        .unwrap();
        assert_eq!(encode_hex(&fp_to_bytes(&w)), GR.to_lowercase());

        let rsk = ReceiverSecretKey::from_bytes(&point(KBX, KBY)).unwrap();
        let got = decapsulate(&enc, ID, &rsk, &kms).unwrap();
        assert_eq!(*got, ssv);

        // A flipped bit of H, or the wrong identifier, is refused by the step 5 check.
        let mut bad = enc;
        bad[POINT_LEN] ^= 1;
        assert_eq!(decapsulate(&bad, ID, &rsk, &kms), Err(SakkeError::Invalid));
        assert_eq!(
            decapsulate(&enc, b"other", &rsk, &kms),
            Err(SakkeError::Invalid)
        );
        // A point off the curve is refused before any pairing.
        let mut bad = enc;
        bad[5] ^= 1;
        assert_eq!(decapsulate(&bad, ID, &rsk, &kms), Err(SakkeError::BadPoint));
        assert_eq!(
            decapsulate(&enc[..272], ID, &rsk, &kms),
            Err(SakkeError::BadLength)
        );
    }
}

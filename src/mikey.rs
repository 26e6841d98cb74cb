//! TS 33.180 5.4 in the shell: the CSK upload that arrives as an `application/mikey` part of a
//! PUBLISH (a MIKEY-SAKKE I_MESSAGE, RFC 6509), and the lab KMS material the server needs to
//! read it (its MDSI key set and the KMS certificates it trusts).
//!
//! The crypto is `mcx_sec::csk_upload`'s; this module only translates: the part's octets to a
//! [`CskUpload`] or a typed refusal, the refusal to the machine's [`KeyUploadFailure`], and the
//! I_MESSAGE's initiator (IDRi) to the token's MC service ID whose MIKEY-SAKKE UID (TS 33.180
//! F.2.1) it is. Whether the upload is fresh, new, signed by the token's user and tied to the
//! IMPU is the machine's decision (`Publish::key_upload`); so is every response.
//!
//! Freshness: the check runs with no T window of its own (`skew = u64::MAX`), so the machine's
//! `key_upload_skew_secs` is the only one (docs/mikey-sakke.md, "On the wire").

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::Context as _;
use mcx_model::{KeyMessageId, KeyUpload, KeyUploadFailure, UnixTime, VerifiedClaims};
use mcx_sec::csk::{CskEntry, CskId};
use mcx_sec::csk_upload::{self, CskUpload, Receiver, UploadRejection};
use mcx_sec::kms::{self, layout, KmsCertificate, KmsKeySet, KmsSecrets};
use mcx_sec::mikey;

/// Largest `application/mikey` part read (base64 of the 2 KiB message limit, with slack).
pub const MAX_PART_LEN: usize = 4096;

/// Most key-set files the UID directory reads.
const MAX_DIRECTORY: usize = 10_000;

/// Largest key-set file read.
const MAX_FILE: u64 = 64 * 1024;

/// The lab KMS defaults (`mcx-authz kms init` uses the same).
pub mod lab {
    /// `KmsUri`.
    pub const KMS_URI: &str = "kms.mcx.example.org";
    /// `UserKeyPeriod` (30 days).
    pub const KEY_PERIOD: u64 = 2_592_000;
    /// `UserKeyOffset`.
    pub const KEY_OFFSET: u64 = 0;
}

/// The octets of an `application/mikey` part: the binary message (RFC 3830 10.1; it starts with
/// the version octet 1), or its base64 (as SIPp CSVs and the vector files carry it; an optional
/// leading `mikey `, whitespace ignored). `None` if it is neither, or too long.
pub fn part_octets(part: &[u8]) -> Option<Vec<u8>> {
    if part.len() > MAX_PART_LEN {
        return None;
    }
    if part.first() == Some(&1) {
        return Some(part.to_vec());
    }
    mikey::from_text(std::str::from_utf8(part).ok()?)
}

/// The machine's name for a refusal (`mcx_sec::csk_upload` module docs).
pub fn failure(r: &UploadRejection) -> KeyUploadFailure {
    match r {
        UploadRejection::Parse(_) | UploadRejection::Structure(_) => KeyUploadFailure::Malformed,
        // Not produced with skew u64::MAX; a T before 1970 is malformed for us.
        UploadRejection::Stale { .. } => KeyUploadFailure::Malformed,
        UploadRejection::NotCsk(_) => KeyUploadFailure::NotACsk,
        UploadRejection::UnknownKms(_) => KeyUploadFailure::UnknownKms,
        UploadRejection::BadSignature => KeyUploadFailure::BadSignature,
        UploadRejection::NotForUs | UploadRejection::NoReceiverKey => {
            KeyUploadFailure::NotForThisServer
        }
        UploadRejection::Decapsulation(_) => KeyUploadFailure::Undecryptable,
    }
}

/// The server's side of CSK uploads: the KMS certificates it trusts, its own MDSI key set, and
/// a directory from MIKEY-SAKKE UIDs to MC service IDs (read from the lab KMS's key sets) so
/// that a CSK whose IDRi is a hashed UID can be used to open the token of the same request
/// under the F.1.4 `mc-id-and-xpk-id` reading (which needs the MC service ID before the token
/// is open; dossier Q-7).
pub struct UploadReceiver {
    certs: Vec<KmsCertificate>,
    receiver: Receiver,
    key_sets: Option<PathBuf>,
    directory: Mutex<Directory>,
}

#[derive(Default)]
struct Directory {
    uris: Vec<String>,
    mtime: Option<SystemTime>,
}

impl std::fmt::Debug for UploadReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadReceiver")
            .field(
                "kms",
                &self.certs.iter().map(|c| &c.kms_uri).collect::<Vec<_>>(),
            )
            .field("receiver", &self.receiver)
            .finish_non_exhaustive()
    }
}

/// One request's upload, checked.
pub struct Checked {
    /// The check's verdict.
    pub result: Result<CskUpload, UploadRejection>,
    /// The MC service ID IDRi names, when known (sent as a URI, or found in the directory):
    /// what the F.1.4 KDF takes to open the same request's token with this CSK.
    pub initiator_uri: Option<String>,
}

impl UploadReceiver {
    /// From trusted KMS certificates (the first is the server's own community), the server's
    /// key set, and the lab KMS directory whose `keysets/` name the users.
    pub fn new(
        certs: Vec<KmsCertificate>,
        own: &KmsKeySet,
        kms_dir: Option<&Path>,
    ) -> anyhow::Result<UploadReceiver> {
        let cert = certs.first().context("no KMS certificate")?;
        let receiver = Receiver::new(cert, own).context("the server's key set")?;
        let r = UploadReceiver {
            certs,
            receiver,
            key_sets: kms_dir.map(|d| d.join(layout::KEY_SETS)),
            directory: Mutex::new(Directory::default()),
        };
        r.reload_directory();
        Ok(r)
    }

    /// The server's identity (its MDSI), which uploads are encrypted to.
    pub fn identity(&self) -> &str {
        self.receiver.uri()
    }

    /// The key that seals accepted uploads for the durable store (derived from the server's
    /// RSK: [`mcx_sec::csk_at_rest`]).
    pub fn storage_key(&self) -> mcx_sec::csk_at_rest::StorageKey {
        self.receiver.storage_key()
    }

    /// The KMS certificates trusted.
    pub fn certificates(&self) -> &[KmsCertificate] {
        &self.certs
    }

    /// Checks one `application/mikey` part at `now` (Unix seconds).
    pub fn check(&self, part: &[u8], now: u64) -> Checked {
        let Some(bytes) = part_octets(part) else {
            return Checked {
                result: Err(UploadRejection::Structure(
                    "the application/mikey part is neither a MIKEY message nor its base64",
                )),
                initiator_uri: None,
            };
        };
        let result = csk_upload::verify(&bytes, now, u64::MAX, &self.certs, &self.receiver);
        let initiator_uri = match &result {
            Ok(u) => self.initiator_uri(&bytes, u),
            Err(_) => None,
        };
        Checked {
            result,
            initiator_uri,
        }
    }

    /// IDRi as a URI, else the known user whose UID (at T, under IDRkmsi) it is.
    fn initiator_uri(&self, bytes: &[u8], u: &CskUpload) -> Option<String> {
        let cert = self.certs.iter().find(|c| c.kms_uri == u.initiator_kms)?;
        if let Ok(d) = mikey::decode(bytes) {
            if let Ok(idr) = d.message.idr(mikey::id_role::INITIATOR) {
                return std::str::from_utf8(&idr.data).ok().map(str::to_owned);
            }
        }
        let find = |uris: &[String]| {
            uris.iter()
                .find(|uri| {
                    csk_upload::uid_for(uri, cert, u.t_unix)
                        .is_some_and(|(uid, _)| uid == u.initiator_uid)
                })
                .cloned()
        };
        let found = find(&self.lock().uris);
        found.or_else(|| {
            // A user provisioned since the last read: read again when the key-set directory
            // changed (one stat per miss; only validly signed uploads get here).
            if self.directory_mtime() != self.lock().mtime {
                self.reload_directory();
                find(&self.lock().uris)
            } else {
                None
            }
        })
    }

    fn directory_mtime(&self) -> Option<SystemTime> {
        let dir = self.key_sets.as_ref()?;
        std::fs::metadata(dir).and_then(|m| m.modified()).ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reload_directory(&self) {
        let Some(dir) = &self.key_sets else { return };
        // Before listing: a file added meanwhile makes the next miss read again.
        let mtime = self.directory_mtime();
        let mut uris = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten().take(MAX_DIRECTORY) {
                let path = e.path();
                if path.extension().is_none_or(|x| x != "toml")
                    || e.metadata().map_or(true, |m| m.len() > MAX_FILE)
                {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                if let Ok(ks) = toml::from_str::<KmsKeySet>(&text) {
                    if ks.user_uri != self.receiver.uri() {
                        uris.push(ks.user_uri.clone());
                    }
                }
            }
        }
        uris.sort();
        uris.dedup();
        let mut d = self.lock();
        d.uris = uris;
        d.mtime = mtime;
    }
}

impl Checked {
    /// The machine's view of this upload, given the KMS certificates trusted and the token's
    /// verified claims (if the token verified): the signer is the MC service ID among the
    /// claims whose UID, under IDRkmsi at T, is IDRi; `None` if none is.
    pub fn key_upload(
        &self,
        certs: &[KmsCertificate],
        claims: Option<&VerifiedClaims>,
    ) -> KeyUpload {
        let u = match &self.result {
            Ok(u) => u,
            Err(r) => return KeyUpload::Rejected(failure(r)),
        };
        let cert = certs.iter().find(|c| c.kms_uri == u.initiator_kms);
        let signer = claims.zip(cert).and_then(|(c, cert)| {
            [&c.mcptt_id, &c.mcvideo_id, &c.mcdata_id]
                .into_iter()
                .flatten()
                .find(|mc_id| {
                    csk_upload::uid_for(mc_id.as_str(), cert, u.t_unix)
                        .is_some_and(|(uid, _)| uid == u.initiator_uid)
                })
                .cloned()
        });
        KeyUpload::Verified {
            csk_id: mcx_model::CskId::new(CskId(u.csk_id).to_string()),
            message_id: KeyMessageId::new(kms::encode_hex(&u.message_id)),
            sent_at: UnixTime(u.t_unix),
            signer,
        }
    }

    /// The uploaded CSK as an entry the opener can use (`mc_id` is IDRi's URI when known,
    /// else empty: enough under the `xpk-id-only` reading).
    pub fn entry(&self) -> Option<CskEntry> {
        let u = self.result.as_ref().ok()?;
        Some(CskEntry {
            id: CskId(u.csk_id),
            csk: u.csk.clone(),
            mc_id: self.initiator_uri.clone().unwrap_or_default(),
        })
    }

    /// Why the upload was refused, for the log.
    pub fn reason(&self) -> Option<String> {
        self.result.as_ref().err().map(|r| r.to_string())
    }
}

/// What one request carried: no upload, one (checked), or more than one (refused unread: one
/// PUBLISH uploads one CSK).
#[derive(Default)]
pub enum Pending {
    /// No `application/mikey` part.
    #[default]
    None,
    /// One part, checked.
    One(Box<Checked>),
    /// More than one part.
    Many,
}

impl Pending {
    /// Records one `application/mikey` part (checked by `receiver`, or refused when the server
    /// has no MIKEY material).
    pub fn receive(&mut self, receiver: Option<&UploadReceiver>, part: &[u8], now: u64) {
        *self = match self {
            Pending::None => Pending::One(Box::new(match receiver {
                Some(r) => r.check(part, now),
                None => Checked {
                    result: Err(UploadRejection::UnknownKms(
                        "(this server has no MIKEY-SAKKE key material)".into(),
                    )),
                    initiator_uri: None,
                },
            })),
            _ => Pending::Many,
        };
    }

    /// The CSK the same request's protected values may be opened with.
    pub fn entry(&self) -> Option<CskEntry> {
        match self {
            Pending::One(c) => c.entry(),
            _ => None,
        }
    }
}

/// The lab KMS material of `dir` for the server `identity`: the community's certificate (plus
/// any in `certcache/`), and the server's key set for the key period of `now`. With `create`,
/// a missing community is created as `mcx-authz kms init` would, and a missing or outdated
/// server key set is issued from the community's secrets as `mcx-authz kms provision` would.
pub fn open_lab(
    dir: &Path,
    identity: &str,
    create: bool,
    now: u64,
) -> anyhow::Result<(Vec<KmsCertificate>, KmsKeySet)> {
    let cert_path = dir.join(layout::CERTIFICATE);
    if !cert_path.exists() {
        anyhow::ensure!(
            create,
            "no KMS community in {} (run `mcx-authz kms init --dir {}`)",
            dir.display(),
            dir.display()
        );
        let (cert, secrets) = init_community(dir, lab::KMS_URI, lab::KEY_PERIOD, lab::KEY_OFFSET)?;
        provision(dir, &cert, &secrets, identity, now)?;
        tracing::info!(dir = %dir.display(), kms = %cert.kms_uri, %identity, "created a lab KMS community and the server's key set");
    }
    let cert: KmsCertificate = read_toml(&cert_path)?;
    let ks_path = dir
        .join(layout::KEY_SETS)
        .join(layout::key_set_file(identity));
    let current = cert.key_period_no(now);
    let existing: Option<KmsKeySet> = ks_path.exists().then(|| read_toml(&ks_path)).transpose()?;
    let key_set = match existing {
        Some(ks) if Some(ks.key_period_no) == current && ks.user_uri == identity => ks,
        other => {
            let secrets_path = dir.join(layout::SECRETS);
            anyhow::ensure!(
                create && secrets_path.exists(),
                "no key set for {identity} in the current key period in {} (run `mcx-authz kms provision --dir {} --uri {identity}`)",
                dir.display(),
                dir.display()
            );
            let secrets: KmsSecrets = read_toml(&secrets_path)?;
            let path = provision(dir, &cert, &secrets, identity, now)?;
            tracing::info!(path = %path.display(), had = other.is_some(), "issued the server's key set for the current key period");
            read_toml(&path)?
        }
    };
    let mut certs = vec![cert];
    if let Ok(entries) = std::fs::read_dir(dir.join("certcache")) {
        for e in entries.flatten().take(64) {
            if e.path().extension().is_some_and(|x| x == "toml") {
                let c: KmsCertificate = read_toml(&e.path())?;
                if certs.iter().all(|k| k.kms_uri != c.kms_uri) {
                    certs.push(c);
                }
            }
        }
    }
    Ok((certs, key_set))
}

/// Creates a KMS community in `dir` (`certificate.toml`, `secrets.toml` 0600).
pub fn init_community(
    dir: &Path,
    kms_uri: &str,
    key_period: u64,
    key_offset: u64,
) -> anyhow::Result<(KmsCertificate, KmsSecrets)> {
    std::fs::create_dir_all(dir.join(layout::KEY_SETS))
        .with_context(|| format!("create {}", dir.display()))?;
    let (cert, secrets) = kms::generate_community(kms_uri, key_period, key_offset, &mut os_random)
        .context("generate the community")?;
    write_private(
        &dir.join(layout::SECRETS),
        &toml::to_string(&secrets).context("encode secrets")?,
    )?;
    let cert_path = dir.join(layout::CERTIFICATE);
    std::fs::write(
        &cert_path,
        toml::to_string(&cert).context("encode certificate")?,
    )
    .with_context(|| format!("write {}", cert_path.display()))?;
    Ok((cert, secrets))
}

/// Issues `uri`'s key set for the key period of `now` into `dir/keysets/` (0600).
pub fn provision(
    dir: &Path,
    cert: &KmsCertificate,
    secrets: &KmsSecrets,
    uri: &str,
    now: u64,
) -> anyhow::Result<PathBuf> {
    let no = cert
        .key_period_no(now)
        .context("the certificate's key period is 0 or after now")?;
    let ks: KmsKeySet =
        kms::provision(cert, secrets, uri, no, &mut os_random).context("issue the key set")?;
    let keysets = dir.join(layout::KEY_SETS);
    std::fs::create_dir_all(&keysets).with_context(|| format!("create {}", keysets.display()))?;
    let path = keysets.join(layout::key_set_file(uri));
    write_private(&path, &toml::to_string(&ks).context("encode key set")?)?;
    Ok(path)
}

/// Reads a TOML file into `T`.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Fills `buf` from the OS random source (aws-lc-rs).
pub fn os_random(buf: &mut [u8]) {
    // A failing OS RNG is not survivable for key generation.
    aws_lc_rs::rand::fill(buf).expect("the OS random source");
}

/// Writes a secret file with mode 0600.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode through open(); force 0600.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// A lab client's CSK upload: a fresh CSK (purpose tag 2, TS 33.180 E.6.11), and the I_MESSAGE
/// carrying it, signed as `from` (its key set in the lab KMS `dir`) and encrypted to `to`.
pub fn lab_upload(
    dir: &Path,
    from: &str,
    to: &str,
    now: u64,
) -> anyhow::Result<(CskId, mcx_sec::csk::Csk, Vec<u8>)> {
    let cert: KmsCertificate = read_toml(&dir.join(layout::CERTIFICATE))?;
    let keys: KmsKeySet = read_toml(&dir.join(layout::KEY_SETS).join(layout::key_set_file(from)))
        .with_context(|| {
        format!("no key set for {from} (mcx-authz kms provision --uri {from})")
    })?;
    upload_with(&cert, &keys, to, now)
}

/// [`lab_upload`] with the material at hand (e.g. fetched from the KMS over HTTP).
pub fn upload_with(
    cert: &KmsCertificate,
    keys: &KmsKeySet,
    to: &str,
    now: u64,
) -> anyhow::Result<(CskId, mcx_sec::csk::Csk, Vec<u8>)> {
    let mut key = zeroize::Zeroizing::new([0u8; 16]);
    os_random(&mut key[..]);
    let csk = mcx_sec::csk::Csk::new(*key);
    let mut id = [0u8; 4];
    os_random(&mut id);
    let csk_id = CskId((u32::from_be_bytes(id) & 0x0fff_ffff) | 0x2000_0000);
    let mut rand = [0u8; 16];
    os_random(&mut rand);
    let mut j = zeroize::Zeroizing::new([0u8; 32]);
    os_random(&mut j[..]);
    let message = csk_upload::build(&csk_upload::BuildParams {
        csk: &csk,
        csk_id: csk_id.0,
        rand,
        t_unix: now,
        initiator: (cert, keys),
        receiver: (to, cert),
        j: *j,
    })?;
    Ok((csk_id, csk, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcx_model::{ServiceSet, TokenId};

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sec/tests/vectors");
    /// T of the Streamwide messages: NTP 0xec898da8.
    const T_UNIX: u64 = 0xec89_8da8 - mcx_sec::uid::NTP_UNIX_OFFSET;
    const ALICE: &str = "sip:alice@streamwide.com";

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
    }

    fn cert() -> KmsCertificate {
        toml::from_str(&read("streamwide/kms_init.toml")).unwrap()
    }

    fn key_set(name: &str) -> KmsKeySet {
        toml::from_str(&read(&format!("streamwide/{name}.toml"))).unwrap()
    }

    fn claims(mc_id: &str) -> VerifiedClaims {
        VerifiedClaims {
            mcptt_id: Some(McId::new(mc_id)),
            mcvideo_id: None,
            mcdata_id: None,
            scopes: ServiceSet::ALL,
            exp: UnixTime(T_UNIX + 3600),
            token_id: TokenId::new("t"),
        }
    }

    use mcx_model::McId;

    #[test]
    fn part_octets_reads_binary_and_base64_and_refuses_the_rest() {
        let bin = [1u8, 26, 0, 0];
        assert_eq!(part_octets(&bin), Some(bin.to_vec()));
        assert_eq!(part_octets(b"mikey AQIDBA=="), Some(vec![1, 2, 3, 4]));
        assert_eq!(part_octets(b"AQID\r\nBA=="), Some(vec![1, 2, 3, 4]));
        assert_eq!(part_octets(b"not base64!"), None);
        assert_eq!(part_octets(&[0xff, 0xfe]), None);
        assert_eq!(part_octets(&vec![b'A'; MAX_PART_LEN + 1]), None);
    }

    /// The Streamwide CSK upload (to the GMS's identity) as the shell hands it to the machine:
    /// the CSK-ID, the message id, T, and the signer found among the token's MC service IDs.
    #[test]
    fn streamwide_upload_reaches_the_machine_with_its_signer() {
        let dir = std::env::temp_dir().join(format!("mcx-mikey-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(layout::KEY_SETS)).unwrap();
        std::fs::write(
            dir.join(layout::KEY_SETS).join("alice.toml"),
            read("streamwide/alice.toml"),
        )
        .unwrap();
        let r = UploadReceiver::new(vec![cert()], &key_set("gms"), Some(&dir)).unwrap();
        let part = read("test2_csk.b64");
        let checked = r.check(part.as_bytes(), T_UNIX + 20);
        assert!(checked.result.is_ok(), "{:?}", checked.reason());
        // IDRi is a hashed UID: the directory names alice, whose MC service ID the KDF takes.
        assert_eq!(checked.initiator_uri.as_deref(), Some(ALICE));
        let entry = checked.entry().unwrap();
        assert_eq!((entry.id, entry.mc_id.as_str()), (CskId(0x2ddd5bf0), ALICE));
        match checked.key_upload(r.certificates(), Some(&claims(ALICE))) {
            KeyUpload::Verified {
                csk_id,
                message_id,
                sent_at,
                signer,
            } => {
                assert_eq!(csk_id.as_str(), "2ddd5bf0");
                assert_eq!(message_id.as_str().len(), 64);
                assert_eq!(sent_at, UnixTime(T_UNIX));
                assert_eq!(signer, Some(McId::new(ALICE)));
            }
            other => panic!("{other:?}"),
        }
        // Another user's token, or none: no signer (the machine refuses).
        for c in [Some(claims("sip:bob@streamwide.com")), None] {
            let KeyUpload::Verified { signer, .. } =
                checked.key_upload(r.certificates(), c.as_ref())
            else {
                panic!()
            };
            assert_eq!(signer, None);
        }
        // Without the directory, the CSK is still usable under the xpk-id-only reading.
        let bare = UploadReceiver::new(vec![cert()], &key_set("gms"), None).unwrap();
        let checked = bare.check(part.as_bytes(), T_UNIX + 20);
        assert_eq!(checked.initiator_uri, None);
        assert_eq!(checked.entry().unwrap().mc_id, "");
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]
        /// Bytes from the network: any part, binary or text, gets a typed answer and never a
        /// panic; only the vector message verifies.
        #[test]
        fn any_part_gets_an_answer(part in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            let r = receiver();
            let c = r.check(&part, T_UNIX);
            proptest::prop_assert!(c.result.is_err());
            let _ = c.key_upload(r.certificates(), None);
        }

        /// The vector message with one octet changed is refused, or still yields the vector's CSK
        /// (octets outside the signed and encapsulated data do not exist: every change is caught).
        #[test]
        fn a_mutated_upload_never_yields_another_csk(i in 0usize..694, x in 1u8..=255) {
            let r = receiver();
            let mut bytes = mcx_sec::mikey::from_text(&read("test2_csk.b64")).unwrap();
            bytes[i] ^= x;
            let c = r.check(&bytes, T_UNIX + 20);
            if let Ok(u) = &c.result {
                proptest::prop_assert_eq!(kms::encode_hex(u.csk.octets()), "e06e65106183547342d3e8a6ce2540a8");
            }
        }
    }

    fn receiver() -> &'static UploadReceiver {
        static R: std::sync::OnceLock<UploadReceiver> = std::sync::OnceLock::new();
        R.get_or_init(|| UploadReceiver::new(vec![cert()], &key_set("gms"), None).unwrap())
    }

    #[test]
    fn refusals_map_to_the_machines_failures() {
        let r = UploadReceiver::new(vec![cert()], &key_set("gms"), None).unwrap();
        let gmk = read("test1_gmk.b64");
        let cases: [(&[u8], KeyUploadFailure); 3] = [
            (b"garbage!", KeyUploadFailure::Malformed),
            (b"AQID", KeyUploadFailure::Malformed),
            (gmk.as_bytes(), KeyUploadFailure::NotACsk),
        ];
        for (part, want) in cases {
            let c = r.check(part, T_UNIX);
            assert_eq!(
                c.key_upload(r.certificates(), None),
                KeyUpload::Rejected(want)
            );
            assert!(c.entry().is_none() && c.reason().is_some());
        }
        // Bob's key set is not the receiver of the CSK message: not for this server.
        let bob = UploadReceiver::new(vec![cert()], &key_set("bob"), None).unwrap();
        let c = bob.check(read("test2_csk.b64").as_bytes(), T_UNIX);
        assert_eq!(
            c.key_upload(bob.certificates(), None),
            KeyUpload::Rejected(KeyUploadFailure::NotForThisServer)
        );
        // Two parts in one request: refused unread; none, nothing.
        let mut p = Pending::None;
        assert!(p.entry().is_none());
        p.receive(Some(&r), read("test2_csk.b64").as_bytes(), T_UNIX);
        assert!(p.entry().is_some());
        p.receive(Some(&r), read("test2_csk.b64").as_bytes(), T_UNIX);
        assert!(matches!(p, Pending::Many) && p.entry().is_none());
        let mut none = Pending::None;
        none.receive(None, b"AQID", T_UNIX);
        let Pending::One(c) = none else { panic!() };
        assert_eq!(
            c.key_upload(&[], None),
            KeyUpload::Rejected(KeyUploadFailure::UnknownKms)
        );
    }
}

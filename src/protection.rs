//! TS 33.180 clause 9 in the shell: writing protected MC info bodies (the `protect` and
//! `csk` commands, `token mint-csv --protect`, tests) on top of `mcx-sec`.
//!
//! The crypto is `mcx_sec`'s; this module only chooses the MIME layout: the info body with
//! `<{svc}-access-token>` and `<{svc}-client-id>` encrypted (XML encryption, FC 0x51 key) and,
//! when signed, a `multipart/mixed` of the info part (with a `Content-ID`) and an
//! `application/vnd.3gpp.{svc}-signed+xml` part holding its XML signature (FC 0x52 key).

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mcx_model::Service;
use mcx_sec::csk::{Csk, CskEntry, CskId};
use mcx_sec::kdf::{FixedKeys, KdfReading};
use mcx_sec::xmldsig::{self, MimePart};
use mcx_sec::xmlenc::{self, PlaintextForm};

/// The Content-ID the info part gets in a signed body (without angle brackets).
pub const INFO_CONTENT_ID: &str = "info@mcx-authz.lab";
/// The boundary of a signed body.
pub const BOUNDARY: &str = "mcx-clause9-boundary";

/// A fresh CSK-ID (purpose tag `0010`, TS 33.180 E.6.11, then 28 random bits) and CSK.
pub fn new_csk() -> (CskId, Csk) {
    let id = CskId((rand::random::<u32>() & 0x0fff_ffff) | 0x2000_0000);
    (id, Csk::new(rand::random::<[u8; 16]>()))
}

/// The namespace of an MC info body.
pub fn info_namespace(service: Service) -> &'static str {
    match service {
        Service::Mcptt => "urn:3gpp:ns:mcpttInfo:1.0",
        Service::Mcvideo => "urn:3gpp:ns:mcvideoInfo:1.0",
        Service::Mcdata => "urn:3gpp:ns:mcdataInfo:1.0",
    }
}

/// The media type of an MC info body.
pub fn info_type(service: Service) -> String {
    format!("application/vnd.3gpp.{}-info+xml", service.name())
}

/// The media type of a signature part.
pub fn signed_type(service: Service) -> String {
    format!("application/vnd.3gpp.{}-signed+xml", service.name())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An MC info body in clear (TS 24.379 F.1) with the token and, if given, the client ID; one
/// line, no XML declaration.
pub fn clear_info(service: Service, token: &str, client_id: Option<&str>) -> String {
    let p = service.name();
    let mut inner = format!(
        "<{p}-access-token type=\"Normal\"><{p}String>{}</{p}String></{p}-access-token>",
        escape(token)
    );
    if let Some(c) = client_id {
        inner.push_str(&format!(
            "<{p}-client-id type=\"Normal\"><{p}String>{}</{p}String></{p}-client-id>",
            escape(c)
        ));
    }
    format!(
        "<{p}info xmlns=\"{}\"><{p}-Params>{inner}</{p}-Params></{p}info>",
        info_namespace(service)
    )
}

/// The MC service ID claim of `service` in a token, read without verifying it (the CLI's
/// default for the F.1.4 `P0` when no `--mc-id` is given).
pub fn unverified_mc_id(token: &str, service: Service) -> anyhow::Result<String> {
    let payload = token
        .split('.')
        .nth(1)
        .context("the token is not a JWS compact serialization")?;
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(payload)
            .context("token payload is not base64url")?,
    )
    .context("token payload is not JSON")?;
    claims
        .get(service.id_claim())
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "the token has no {} claim; give --mc-id",
                service.id_claim()
            )
        })
}

/// Writes protected info bodies under one CSK.
pub struct Protector {
    id: CskId,
    keys: FixedKeys,
    /// The plaintext form written.
    pub form: PlaintextForm,
}

impl Protector {
    /// Derives both XML keys of `entry` under `reading`.
    pub fn new(entry: &CskEntry, reading: KdfReading) -> anyhow::Result<Protector> {
        Ok(Protector {
            id: entry.id,
            keys: FixedKeys::derive(entry, reading)
                .context("MC service ID too long for the KDF")?,
            form: PlaintextForm::ValueElement,
        })
    }

    /// The CSK-ID.
    pub fn csk_id(&self) -> CskId {
        self.id
    }

    /// `info` (an MC info body of `service`) with its access token and client ID encrypted.
    pub fn encrypt_info(&self, service: Service, info: &str) -> anyhow::Result<String> {
        let p = service.name();
        let token = format!("{p}-access-token");
        let client = format!("{p}-client-id");
        let out = xmlenc::protect_info(
            info.as_bytes(),
            p,
            &[token.as_str(), client.as_str()],
            self.form,
            self.id,
            &self.keys.confidentiality,
            &mut || rand::random::<[u8; 12]>(),
        )?;
        Ok(out)
    }

    /// The signature part over `parts` (Content-ID, content).
    pub fn sign(&self, parts: &[(&str, &[u8])]) -> String {
        let parts: Vec<MimePart<'_>> = parts
            .iter()
            .map(|(content_id, body)| MimePart { content_id, body })
            .collect();
        xmldsig::sign(&parts, self.id, &self.keys.integrity)
    }

    /// A `multipart/mixed` of `info` (Content-ID [`INFO_CONTENT_ID`]) and its signature part:
    /// (Content-Type value, body). The digest input is the info part's content octets.
    pub fn signed_multipart(&self, service: Service, info: &str) -> (String, String) {
        let sig = self.sign(&[(INFO_CONTENT_ID, info.as_bytes())]);
        let body = format!(
            "--{BOUNDARY}\r\nContent-Type: {}\r\nContent-ID: <{INFO_CONTENT_ID}>\r\n\r\n{info}\r\n--{BOUNDARY}\r\nContent-Type: {}\r\n\r\n{sig}\r\n--{BOUNDARY}--\r\n",
            info_type(service),
            signed_type(service),
        );
        (format!("multipart/mixed;boundary={BOUNDARY}"), body)
    }
}

/// The media type of a CSK upload part (TS 33.180 5.4; RFC 3830 10.1).
pub const MIKEY_TYPE: &str = "application/mikey";

/// A PUBLISH body that uploads a CSK and uses it at once (TS 33.180 5.4 and clause 9): a
/// `multipart/mixed` of the `application/mikey` part (the I_MESSAGE in base64, with
/// `Content-Transfer-Encoding: base64`), the protected info part (Content-ID
/// [`INFO_CONTENT_ID`]) and, when given, its signature part. (Content-Type value, body).
pub fn upload_multipart(
    service: Service,
    mikey_base64: &str,
    info: &str,
    signature: Option<&str>,
) -> (String, String) {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Type: {MIKEY_TYPE}\r\nContent-Transfer-Encoding: base64\r\n\r\n{mikey_base64}\r\n--{BOUNDARY}\r\nContent-Type: {}\r\nContent-ID: <{INFO_CONTENT_ID}>\r\n\r\n{info}\r\n",
        info_type(service)
    );
    if let Some(sig) = signature {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Type: {}\r\n\r\n{sig}\r\n",
            signed_type(service)
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    (format!("multipart/mixed;boundary={BOUNDARY}"), body)
}

/// The server's CSKs (TS 33.180 5.4) and the F.1.4 reading: what the SIP edge's opener uses.
/// The lab table of the config, plus the CSKs users uploaded (MIKEY-SAKKE, [`crate::mikey`])
/// once the machine accepted them; a CSK the machine drops is forgotten (zeroized) here too.
#[derive(Debug, Default)]
pub struct KeyStore {
    table: std::sync::RwLock<mcx_sec::csk::LabCskTable>,
    reading: KdfReading,
    uploads: Option<crate::mikey::UploadReceiver>,
    /// The CSK uploaded with the request the machine is handling now (set and cleared while
    /// the shared state is locked, so it is one request's): [`KeyStore::accept`] keeps it.
    staged: std::sync::Mutex<Option<CskEntry>>,
    /// Seals accepted uploads for the durable store (issue 13); with the upload receiver.
    at_rest: Option<mcx_sec::csk_at_rest::StorageKey>,
    /// Uploads accepted by the step in progress, sealed, for the store batch of that step.
    sealed: std::sync::Mutex<Vec<crate::store::SealedCsk>>,
}

/// Clears [`KeyStore`]'s staged upload when dropped.
pub struct Staged<'a>(&'a KeyStore);

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        *self.0.staged_slot() = None;
    }
}

/// Why a protected value failed, as the machine sees it, from `mcx-sec`'s typed error.
fn enc_failure(e: &xmlenc::XmlEncError) -> mcx_model::ProtectionFailure {
    use mcx_model::ProtectionFailure as F;
    use xmlenc::XmlEncError as E;
    match e {
        E::UnknownKeyName(_) => F::UnknownKey,
        E::Decrypt => F::Undecryptable,
        E::WrongAlgorithm(_) | E::UnsupportedType(_) => F::WrongAlgorithm,
        _ => F::Malformed,
    }
}

fn dsig_failure(e: &xmldsig::XmlDsigError) -> mcx_model::ProtectionFailure {
    use mcx_model::ProtectionFailure as F;
    use xmldsig::XmlDsigError as E;
    match e {
        E::UnknownKeyName(_) => F::UnknownKey,
        E::WrongSignatureMethod(_) | E::WrongDigestMethod(_) | E::WrongCanonicalization(_) => {
            F::WrongAlgorithm
        }
        _ => F::BadSignature,
    }
}

impl KeyStore {
    /// A store over `table` with `reading`.
    pub fn new(table: mcx_sec::csk::LabCskTable, reading: KdfReading) -> KeyStore {
        KeyStore {
            table: std::sync::RwLock::new(table),
            reading,
            uploads: None,
            staged: std::sync::Mutex::new(None),
            at_rest: None,
            sealed: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The same store, reading CSK uploads with `uploads` (TS 33.180 5.4).
    pub fn with_uploads(mut self, uploads: crate::mikey::UploadReceiver) -> KeyStore {
        self.at_rest = Some(uploads.storage_key());
        self.uploads = Some(uploads);
        self
    }

    /// The uploads accepted since the last call, sealed: the store writes them with the batch
    /// that ties them, so a 2xx never acknowledges a CSK a crash could lose (issue 13).
    pub fn take_sealed(&self) -> Vec<crate::store::SealedCsk> {
        std::mem::take(&mut *self.sealed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back the uploaded CSKs a restarted server finds in its store: each sealed key is
    /// opened for the tie the machine's snapshot holds (TS 33.180 5.4: CSK-ID, MC service ID).
    /// A key without a tie is left alone (the tie is what the machine checks); a key that does
    /// not open (the server's RSK changed, or the row was altered) stops the start: nothing is
    /// silently dropped. Without upload material (MIKEY-SAKKE off) nothing can be opened, and
    /// the count is returned for the caller to warn about. Returns (restored, not openable for
    /// want of a key).
    pub fn restore(
        &self,
        ties: &[(mcx_model::CskId, mcx_model::Csk)],
        sealed: &[crate::store::SealedCsk],
    ) -> anyhow::Result<(usize, usize)> {
        let Some(key) = &self.at_rest else {
            return Ok((0, sealed.len()));
        };
        let mut restored = 0;
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        for s in sealed {
            let Some((_, tie)) = ties.iter().find(|(id, _)| *id == s.csk_id) else {
                continue;
            };
            let id: CskId = s
                .csk_id
                .as_str()
                .parse()
                .map_err(|e| anyhow::anyhow!("stored CSK-ID {:?}: {e}", s.csk_id.as_str()))?;
            let mc_id = tie.mc_id.as_str();
            let csk = key.open(id, mc_id, &s.sealed).map_err(|e| {
                anyhow::anyhow!(
                    "stored CSK {id} (MC service ID {mc_id}): {e}; the store was written by a server with another MIKEY-SAKKE key set, or altered. Inspect it with `mcx-authz store check`"
                )
            })?;
            if mcx_sec::csk::CskStore::csk(&*table, id).is_some() {
                // A `[[protection.csk]]` of the config has this CSK-ID: the config's wins.
                continue;
            }
            table
                .insert(CskEntry {
                    id,
                    csk,
                    mc_id: mc_id.to_owned(),
                })
                .map_err(|e| anyhow::anyhow!("restoring CSK {id}: {e}"))?;
            restored += 1;
        }
        Ok((restored, 0))
    }

    /// What reads CSK uploads, if the server has MIKEY-SAKKE material.
    pub fn uploads(&self) -> Option<&crate::mikey::UploadReceiver> {
        self.uploads.as_ref()
    }

    fn staged_slot(&self) -> std::sync::MutexGuard<'_, Option<CskEntry>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `entry`, the CSK uploaded with the request about to be given to the machine, until
    /// the guard drops; call it with the shared state locked, around the machine's step.
    pub fn stage(&self, entry: CskEntry) -> Staged<'_> {
        *self.staged_slot() = Some(entry);
        Staged(self)
    }

    /// The machine accepted the upload of CSK `id` for `mc_id` (`CskEvent::Accepted`): keep
    /// the staged key under that tie, replacing any older key of that CSK-ID. Whether it was
    /// there to keep.
    pub fn accept(&self, id: &mcx_model::CskId, mc_id: &mcx_model::McId) -> bool {
        let Ok(id) = id.as_str().parse::<CskId>() else {
            return false;
        };
        let Some(mut entry) = self.staged_slot().take_if(|e| e.id == id) else {
            return false;
        };
        entry.mc_id = mc_id.as_str().to_owned();
        if let Some(key) = &self.at_rest {
            let sealed = key.seal(&entry, rand::random::<[u8; 12]>());
            self.sealed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(crate::store::SealedCsk {
                    csk_id: mcx_model::CskId::new(id.to_string()),
                    sealed,
                });
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        table.remove(id);
        table.insert(entry).is_ok()
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, mcx_sec::csk::LabCskTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The F.1.4 reading in use.
    pub fn reading(&self) -> KdfReading {
        self.reading
    }

    /// Number of CSKs held.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether no CSK is held.
    pub fn is_empty(&self) -> bool {
        self.table().is_empty()
    }

    /// The machine inputs that tie each CSK to its MC service ID (fed once at start).
    pub fn provisioning(&self) -> Vec<mcx_model::Input> {
        self.table()
            .ties()
            .map(|(id, mc_id)| mcx_model::Input::ProvisionCsk {
                csk_id: mcx_model::CskId::new(id.to_string()),
                mc_id: mcx_model::McId::new(mc_id),
            })
            .collect()
    }

    /// Forgets (zeroizes) a CSK the machine dropped.
    pub fn forget(&self, id: &mcx_model::CskId) {
        if let Ok(id) = id.as_str().parse::<CskId>() {
            self.table
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
    }

    /// Opens one protected value for the SIP edge: decrypts the element (XML encryption, FC
    /// 0x51 key) and, when the message has a signature part, verifies it (FC 0x52 key): it must
    /// cover the info body and be made with the same CSK. The reason of a failure is logged; the
    /// machine gets its kind and refuses (403/101).
    pub fn open(
        &self,
        s: &crate::sip::Sealed<'_>,
    ) -> Result<(String, mcx_model::CskId), mcx_model::ProtectionFailure> {
        self.open_with(s, None)
    }

    /// [`KeyStore::open`], also trying `uploaded`: the CSK uploaded in the same request (TS
    /// 33.180 5.4: it arrives with the first token it protects). Whether it may be used is the
    /// machine's decision, from the CSK-ID this reports.
    pub fn open_with(
        &self,
        s: &crate::sip::Sealed<'_>,
        uploaded: Option<&CskEntry>,
    ) -> Result<(String, mcx_model::CskId), mcx_model::ProtectionFailure> {
        let result = self.open_inner(s, uploaded);
        if let Err((failure, reason)) = &result {
            tracing::info!(element = s.element, ?failure, reason, "protection failed");
        }
        result.map_err(|(f, _)| f)
    }

    fn open_inner(
        &self,
        s: &crate::sip::Sealed<'_>,
        uploaded: Option<&CskEntry>,
    ) -> Result<(String, mcx_model::CskId), (mcx_model::ProtectionFailure, String)> {
        use mcx_model::ProtectionFailure as F;
        let table = self.table();
        let store = WithUpload {
            table: &table,
            uploaded,
        };
        let keys = mcx_sec::kdf::CskKeys {
            store: &store,
            reading: self.reading,
        };
        let opened = xmlenc::open_in_body(s.info_body, s.service.name(), s.element, &keys)
            .map_err(|e| (enc_failure(&e), e.to_string()))?;
        match s.signatures {
            [] => {}
            [sig] => {
                let parts: Vec<MimePart<'_>> = s
                    .parts
                    .iter()
                    .map(|(content_id, body)| MimePart { content_id, body })
                    .collect();
                let v = xmldsig::verify(sig, &parts, &keys)
                    .map_err(|e| (dsig_failure(&e), e.to_string()))?;
                let covered = s
                    .info_content_id
                    .is_some_and(|cid| v.covered.iter().any(|c| c == cid));
                if !covered {
                    return Err((
                        F::BadSignature,
                        "the signature does not cover the info body".into(),
                    ));
                }
                if v.csk_id != opened.csk_id {
                    return Err((
                        F::BadSignature,
                        format!(
                            "signed under CSK {} but encrypted under {}",
                            v.csk_id, opened.csk_id
                        ),
                    ));
                }
            }
            _ => return Err((F::BadSignature, "more than one signature part".into())),
        }
        Ok((
            opened.value,
            mcx_model::CskId::new(opened.csk_id.to_string()),
        ))
    }
}

/// The key table with one request's uploaded CSK in front of it.
struct WithUpload<'a> {
    table: &'a mcx_sec::csk::LabCskTable,
    uploaded: Option<&'a CskEntry>,
}

impl mcx_sec::csk::CskStore for WithUpload<'_> {
    fn csk(&self, id: CskId) -> Option<CskEntry> {
        match self.uploaded {
            Some(e) if e.id == id => Some(e.clone()),
            _ => self.table.csk(id),
        }
    }
}

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

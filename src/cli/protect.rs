//! `mcx-authz csk new` and `mcx-authz protect`: lab tooling for TS 33.180 clause 9.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use mcx_model::Service;
use mcx_sec::csk::{config_entry, Csk, CskEntry, CskId};
use mcx_sec::kdf::KdfReading;
use mcx_sec::xmlenc::PlaintextForm;

use crate::protection::{self, Protector};

/// Arguments of `mcx-authz csk`.
#[derive(Debug, clap::Args)]
pub struct CskArgs {
    #[command(subcommand)]
    command: CskCommand,
}

#[derive(Debug, Subcommand)]
enum CskCommand {
    /// Print a fresh CSK-ID and CSK as a `[[protection.csk]]` entry for the server config.
    New {
        /// The MC service ID (URI) the CSK belongs to, e.g. sip:alice@example.org.
        #[arg(long)]
        mc_id: String,
    },
}

/// Runs `mcx-authz csk`.
pub fn run_csk(args: CskArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CskCommand::New { mc_id } => {
            anyhow::ensure!(!mc_id.trim().is_empty(), "--mc-id is empty");
            let (id, csk) = protection::new_csk();
            print!("{}", config_entry(id, &csk, mc_id.trim()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The F.1.4 parameter reading on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KdfArg {
    /// P0 = MC service ID, P1 = XPK-ID (TS 33.180 F.1.4 as written; the default).
    McIdAndXpkId,
    /// P0 = XPK-ID alone (TS 36.579-1 5.5.13.1).
    XpkIdOnly,
}

impl From<KdfArg> for KdfReading {
    fn from(k: KdfArg) -> Self {
        match k {
            KdfArg::McIdAndXpkId => KdfReading::McIdAndXpkId,
            KdfArg::XpkIdOnly => KdfReading::XpkIdOnly,
        }
    }
}

/// The plaintext form on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormArg {
    /// `<mcpttString>value</mcpttString>` (xmlenc `#Content` of the element).
    ValueElement,
    /// The value alone.
    Bare,
}

/// Arguments of `mcx-authz protect`.
#[derive(Debug, clap::Args)]
pub struct ProtectArgs {
    /// CSK-ID, 8 hex digits (not with --mikey).
    #[arg(long, required_unless_present = "mikey", conflicts_with = "mikey")]
    csk_id: Option<String>,
    /// CSK, 32 hex digits (spaces allowed; not with --mikey).
    #[arg(long, required_unless_present = "mikey", conflicts_with = "mikey")]
    csk: Option<String>,
    /// TS 33.180 5.4 CSK upload: generate a CSK, write the MIKEY-SAKKE I_MESSAGE that carries it
    /// (signed as the token's user, with the key set of the lab KMS in --kms-dir, and encrypted
    /// to --to), encrypt with it, and print the whole multipart body with the
    /// `application/mikey` part.
    #[arg(long)]
    mikey: bool,
    /// The lab KMS directory (with --mikey).
    #[arg(long, default_value = super::kms::DEFAULT_KMS_DIR)]
    kms_dir: std::path::PathBuf,
    /// The MCX server's identity the CSK is encrypted to (with --mikey).
    #[arg(long, default_value = super::kms::DEFAULT_SERVER_URI)]
    to: String,
    /// Unix time for the I_MESSAGE's T and key period (with --mikey; default: the clock).
    #[arg(long)]
    now: Option<u64>,
    /// Print one JSON object: `csk_id`, `csk`, `info` (the protected info body), `signature`
    /// (with --sign), `mikey` (base64, with --mikey), `content_type` and `body` (the whole body).
    #[arg(long)]
    json: bool,
    /// The access token (JWT).
    #[arg(long)]
    token: String,
    /// The MC client ID (e.g. urn:uuid:...), encrypted too.
    #[arg(long)]
    client_id: Option<String>,
    /// Print the whole multipart body (MIME entity: Content-Type line, empty line, body) with
    /// the XML signature part.
    #[arg(long)]
    sign: bool,
    /// The MC service.
    #[arg(long, value_enum, default_value = "mcptt")]
    service: ServiceArg,
    /// The MC service ID for the KDF (default: the token's `<svc>_id` claim, unverified).
    #[arg(long)]
    mc_id: Option<String>,
    /// Which TS 33.180 F.1.4 parameters the KDF uses.
    #[arg(long, value_enum, default_value = "mc-id-and-xpk-id")]
    kdf: KdfArg,
    /// The plaintext form of the encrypted values.
    #[arg(long, value_enum, default_value = "value-element")]
    form: FormArg,
}

/// An MC service on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ServiceArg {
    /// MCPTT.
    Mcptt,
    /// MCVideo.
    Mcvideo,
    /// MCData.
    Mcdata,
}

impl From<ServiceArg> for Service {
    fn from(s: ServiceArg) -> Service {
        match s {
            ServiceArg::Mcptt => Service::Mcptt,
            ServiceArg::Mcvideo => Service::Mcvideo,
            ServiceArg::Mcdata => Service::Mcdata,
        }
    }
}

/// Runs `mcx-authz protect`.
pub fn run_protect(a: ProtectArgs) -> anyhow::Result<ExitCode> {
    let service: Service = a.service.into();
    let token = a.token.trim();
    let mc_id = match &a.mc_id {
        Some(m) => m.clone(),
        None => protection::unverified_mc_id(token, service)?,
    };
    // With --mikey, a fresh CSK and the I_MESSAGE that uploads it, signed as the MC service ID.
    let (id, csk, mikey) = if a.mikey {
        let now = a.now.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        let (id, csk, message) = crate::mikey::lab_upload(&a.kms_dir, &mc_id, &a.to, now)?;
        (id, csk, Some(mcx_sec::mikey::base64_encode(&message)))
    } else {
        let (Some(id), Some(csk)) = (&a.csk_id, &a.csk) else {
            anyhow::bail!("--csk-id and --csk, or --mikey");
        };
        (id.parse::<CskId>()?, Csk::from_hex(csk)?, None)
    };
    let csk_hex = csk.to_hex();
    let mut p = Protector::new(&CskEntry { id, csk, mc_id }, a.kdf.into())?;
    p.form = match a.form {
        FormArg::ValueElement => PlaintextForm::ValueElement,
        FormArg::Bare => PlaintextForm::Bare,
    };
    let info = protection::clear_info(service, token, a.client_id.as_deref());
    let protected = p.encrypt_info(service, &info)?;
    let signature = a
        .sign
        .then(|| p.sign(&[(protection::INFO_CONTENT_ID, protected.as_bytes())]));
    let whole = match (&mikey, a.sign) {
        (Some(m), _) => Some(protection::upload_multipart(
            service,
            m,
            &protected,
            signature.as_deref(),
        )),
        (None, true) => Some(p.signed_multipart(service, &protected)),
        (None, false) => None,
    };
    if a.json {
        let (content_type, body) = whole
            .clone()
            .unwrap_or_else(|| (protection::info_type(service), protected.clone()));
        let out = serde_json::json!({
            "csk_id": id.to_string(),
            "csk": csk_hex,
            "info": protected,
            "signature": signature,
            "mikey": mikey,
            "content_type": content_type,
            "body": body,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if let Some((ct, body)) = whole {
        print!("Content-Type: {ct}\r\n\r\n{body}");
    } else {
        println!("{protected}");
    }
    Ok(ExitCode::SUCCESS)
}

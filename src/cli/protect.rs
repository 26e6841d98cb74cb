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
    /// CSK-ID, 8 hex digits.
    #[arg(long)]
    csk_id: String,
    /// CSK, 32 hex digits (spaces allowed).
    #[arg(long)]
    csk: String,
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
    let id: CskId = a.csk_id.parse()?;
    let csk = Csk::from_hex(&a.csk)?;
    let mc_id = match a.mc_id {
        Some(m) => m,
        None => protection::unverified_mc_id(a.token.trim(), service)?,
    };
    let mut p = Protector::new(&CskEntry { id, csk, mc_id }, a.kdf.into())?;
    p.form = match a.form {
        FormArg::ValueElement => PlaintextForm::ValueElement,
        FormArg::Bare => PlaintextForm::Bare,
    };
    let info = protection::clear_info(service, a.token.trim(), a.client_id.as_deref());
    let protected = p.encrypt_info(service, &info)?;
    if a.sign {
        let (ct, body) = p.signed_multipart(service, &protected);
        print!("Content-Type: {ct}\r\n\r\n{body}");
    } else {
        println!("{protected}");
    }
    Ok(ExitCode::SUCCESS)
}

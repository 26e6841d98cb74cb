//! `mcx-authz tls-lab-certs`: a lab CA, a server certificate for the SIP over TLS listener and a
//! client certificate for the SIP core (rcgen; [`crate::server::tls::lab_certificates`]).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::server::tls::{fingerprint, lab_certificates};

/// Arguments of `mcx-authz tls-lab-certs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write ca.pem, server.pem, server.key, client.pem and client.key into.
    #[arg(long, default_value = "./mcx-lab/tls")]
    pub out: PathBuf,
    /// DNS names of the server certificate (127.0.0.1 and ::1 are always added).
    #[arg(long = "server-name", default_value = "mcx.example.org")]
    pub server_names: Vec<String>,
    /// DNS name of the client (SIP core) certificate.
    #[arg(long, default_value = "core.ims.example.org")]
    pub client_name: String,
}

/// Writes the certificates and prints the `[[sip.tls]]` table that uses them.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let lab = lab_certificates(&args.server_names, &args.client_name)?;
    for p in lab.write(&args.out)? {
        println!("wrote {}", p.display());
    }
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(lab.client_cert.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'_>| fingerprint(&c))?;
    let hex: Vec<String> = der.iter().map(|b| format!("{b:02x}")).collect();
    let d = args.out.display();
    println!(
        "\n[[sip.tls]]\nlisten = \"127.0.0.1:5061\"\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.pem\"\ntrusted_client_names = [\"{}\"]\n# or: trusted_client_sha256 = [\"{}\"]",
        args.client_name,
        hex.join(":")
    );
    Ok(ExitCode::SUCCESS)
}

//! `mcx-authz mikey inspect`: prints every payload of a MIKEY-SAKKE I_MESSAGE (RFC 6509) and,
//! given the receiver's KMS certificate and key set (TOML with the TS 33.180 Annex D names),
//! the ECCSI verdict, the key id and the decapsulated key.
//!
//! The signer's identity is the message's IDRi (a hashed UID, or a URI turned into a UID with
//! the certificate's key period at T); its KMS (IDRkmsi) must be the certificate's. The key is
//! decapsulated with the key set's RSK for its UserID, whatever the time: this is a tool, not
//! the server's upload check (`mcx_sec::csk_upload`).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use mcx_sec::kms::{encode_hex, KmsCertificate, KmsKeySet};
use mcx_sec::mikey::{self, id_role, CsIdMap, Payload, Timestamp};
use mcx_sec::uid::NTP_UNIX_OFFSET;
use mcx_sec::{eccsi, sakke};
use serde_json::{json, Value};

use super::kms::read_toml;

/// Arguments of `mcx-authz mikey`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print an I_MESSAGE's payloads; with key material, verify and decapsulate it.
    Inspect {
        /// The receiver's KMS certificate (TOML: KmsUri, UserKeyPeriod, UserKeyOffset,
        /// PubEncKey, PubAuthKey).
        #[arg(long, requires = "key_set")]
        kms_init: Option<PathBuf>,
        /// The receiver's key set (TOML: UserUri, UserID, KeyPeriodNo, UserDecryptKey,
        /// UserSigningKeySSK, UserPubTokenPVT).
        #[arg(long, requires = "kms_init")]
        key_set: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// The message in base64 (a leading `mikey ` is accepted), or `-` for stdin.
        message: String,
    },
    /// Lab client: generate a CSK and write its upload I_MESSAGE, signed as `--from` and
    /// encrypted to `--to`, from the lab KMS's material. Prints JSON: csk, csk_id, message.
    MakeCsk {
        /// The lab KMS directory.
        #[arg(long, default_value = super::kms::DEFAULT_KMS_DIR)]
        dir: PathBuf,
        /// The signer (its key set must have been provisioned).
        #[arg(long)]
        from: String,
        /// The receiver (the MCX server's identity).
        #[arg(long, default_value = super::kms::DEFAULT_SERVER_URI)]
        to: String,
        /// Unix time for T and the key period (default: the clock).
        #[arg(long)]
        now: Option<u64>,
    },
}

/// Runs `mcx-authz mikey`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Inspect {
            kms_init,
            key_set,
            json,
            message,
        } => {
            let text = if message == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .take(64 * 1024)
                    .read_to_string(&mut s)
                    .context("read stdin")?;
                s
            } else {
                message
            };
            let bytes =
                mikey::from_text(&text).context("not base64 (optionally after `mikey `)")?;
            let decoded = mikey::decode(&bytes)?;
            let mut out = describe(&decoded.message);
            let mut ok = true;
            if let (Some(c), Some(k)) = (kms_init, key_set) {
                let cert: KmsCertificate = read_toml(&c)?;
                let keys: KmsKeySet = read_toml(&k)?;
                ok = check(&decoded, &cert, &keys, &mut out)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_text(&out);
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::MakeCsk { dir, from, to, now } => make_csk(&dir, &from, &to, now),
    }
}

fn make_csk(
    dir: &std::path::Path,
    from: &str,
    to: &str,
    now: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let now = now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let (csk_id, csk, message) = crate::mikey::lab_upload(dir, from, to, now)?;
    let out = json!({
        "csk": encode_hex(csk.octets()),
        "csk_id": csk_id.to_string(),
        "message": format!("mikey {}", mikey::base64_encode(&message)),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn ntp_json(v: u64) -> Value {
    let secs = v >> 32;
    json!({ "ntp": format!("{v:016x}"), "unix": secs.checked_sub(NTP_UNIX_OFFSET) })
}

fn describe(m: &mikey::Message) -> Value {
    let h = &m.header;
    let cs_map = match &h.cs_map {
        CsIdMap::SrtpId(v) => json!({ "type": "SRTP-ID", "sessions": v.iter().map(|c| json!({
            "policy_no": c.policy_no, "ssrc": format!("{:08x}", c.ssrc), "roc": c.roc })).collect::<Vec<_>>() }),
        CsIdMap::Empty { cs_count } => json!({ "type": "EMPTY", "cs_count": cs_count }),
        CsIdMap::GenericId(v) => json!({ "type": "GENERIC-ID", "sessions": v.iter().map(|c| json!({
            "cs_id": c.cs_id, "prot_type": c.prot_type, "s": c.s, "policies": c.policies,
            "session_data": encode_hex(&c.session_data), "spi": encode_hex(&c.spi) })).collect::<Vec<_>>() }),
    };
    let payloads: Vec<Value> = m
        .payloads
        .iter()
        .map(|p| match p {
            Payload::Timestamp(Timestamp::NtpUtc(v)) => {
                json!({ "payload": "T", "type": "NTP-UTC", "value": ntp_json(*v) })
            }
            Payload::Timestamp(Timestamp::Ntp(v)) => {
                json!({ "payload": "T", "type": "NTP", "value": ntp_json(*v) })
            }
            Payload::Timestamp(Timestamp::Counter(v)) => {
                json!({ "payload": "T", "type": "COUNTER", "value": v })
            }
            Payload::Rand(r) => json!({ "payload": "RAND", "value": encode_hex(r) }),
            Payload::Idr(i) => json!({
                "payload": "IDR",
                "role": i.role,
                "role_name": role_name(i.role),
                "id_type": i.id_type,
                "value": encode_hex(&i.data),
                "text": std::str::from_utf8(&i.data).ok().filter(|s| s.chars().all(|c| !c.is_control())),
            }),
            Payload::SecurityPolicy(sp) => json!({
                "payload": "SP",
                "policy_no": sp.policy_no,
                "prot_type": sp.prot_type,
                "params": sp.params.iter().map(|p| json!({ "type": p.kind, "value": encode_hex(&p.value) })).collect::<Vec<_>>(),
            }),
            Payload::Sakke(s) => json!({
                "payload": "SAKKE",
                "params": s.params,
                "id_scheme": s.id_scheme,
                "data": encode_hex(&s.data),
            }),
            Payload::GeneralExt(g) => json!({
                "payload": "GENERAL-EXT",
                "type": g.kind,
                "type_name": match g.kind {
                    mikey::general_ext_type::SAKKE_TO_SELF => "SAKKE-to-self",
                    mikey::general_ext_type::KEY_PARAMETERS => "key parameters (encrypted)",
                    _ => "unknown (skipped)",
                },
                "data": encode_hex(&g.data),
            }),
        })
        .collect();
    json!({
        "header": {
            "version": h.version,
            "data_type": h.data_type,
            "v": h.v,
            "prf": h.prf,
            "csb_id": format!("{:08x}", h.csb_id),
            "purpose": h.csb_id >> 28,
            "cs_map": cs_map,
        },
        "payloads": payloads,
        "sign": m.sign.as_ref().map(|s| json!({ "s_type": s.s_type, "bytes": encode_hex(&s.signature) })),
    })
}

fn role_name(role: u8) -> &'static str {
    match role {
        id_role::INITIATOR => "IDRi",
        id_role::RESPONDER => "IDRr",
        3 => "IDRkms",
        4 => "IDRpsk",
        5 => "IDRapp",
        id_role::INITIATOR_KMS => "IDRkmsi",
        id_role::RESPONDER_KMS => "IDRkmsr",
        id_role::INITIATOR_UID => "IDRi (UID)",
        id_role::RESPONDER_UID => "IDRr (UID)",
        _ => "unknown",
    }
}

/// Verifies and decapsulates with the receiver's material; records the results in `out`.
fn check(
    d: &mikey::Decoded<'_>,
    cert: &KmsCertificate,
    keys: &KmsKeySet,
    out: &mut Value,
) -> anyhow::Result<bool> {
    let m = &d.message;
    out["key_id"] = json!(format!("{:08x}", m.header.csb_id));
    // Signature: IDRi's UID under the certificate's KPAK.
    let signature: Result<(), String> = (|| {
        let sign = m.sign.as_ref().ok_or("no SIGN payload")?;
        if sign.s_type != mikey::S_TYPE_ECCSI {
            return Err(format!("S type {} is not ECCSI", sign.s_type));
        }
        if let Ok(k) = m.idr(id_role::INITIATOR_KMS) {
            if k.data != cert.kms_uri.as_bytes() {
                return Err("IDRkmsi is not this certificate's KmsUri".into());
            }
        }
        let uid = initiator_uid(m, cert)?;
        let kpak = cert.kpak().map_err(|e| e.to_string())?;
        eccsi::verify(&kpak, &uid, d.signed, &sign.signature).map_err(|e| e.to_string())
    })();
    out["signature"] = json!(if signature.is_ok() {
        "valid"
    } else {
        "invalid"
    });
    if let Err(e) = &signature {
        out["signature_error"] = json!(e);
    }
    // Key: the SAKKE payload decapsulated with the key set.
    let key: anyhow::Result<String> = (|| {
        let data = m
            .find(|p| match p {
                Payload::Sakke(s) => Some(s.data.clone()),
                _ => None,
            })
            .context("no SAKKE payload")?;
        let uid = keys.uid()?;
        if let Ok(r) = m.idr(id_role::RESPONDER_UID) {
            if r.data != uid {
                bail!("IDRr is not the key set's UserID");
            }
        }
        let ssv = sakke::decapsulate(&data, &uid, &keys.rsk()?, &cert.sakke_public_key()?)?;
        Ok(encode_hex(&ssv[..]))
    })();
    match &key {
        Ok(k) => out["key"] = json!(k),
        Err(e) => out["key_error"] = json!(format!("{e:#}")),
    }
    Ok(signature.is_ok() && key.is_ok())
}

fn initiator_uid(m: &mikey::Message, cert: &KmsCertificate) -> Result<Vec<u8>, String> {
    if let Ok(i) = m.idr(id_role::INITIATOR_UID) {
        return Ok(i.data.clone());
    }
    let i = m.idr(id_role::INITIATOR).map_err(|_| "no single IDRi")?;
    let uri = std::str::from_utf8(&i.data).map_err(|_| "IDRi is not text")?;
    let t = m
        .find(|p| match p {
            Payload::Timestamp(t) => t.ntp_seconds(),
            _ => None,
        })
        .ok_or("no NTP timestamp to find the key period")?;
    mcx_sec::uid::uid_for(uri, cert, t.saturating_sub(NTP_UNIX_OFFSET))
        .map(|(u, _)| u.to_vec())
        .ok_or_else(|| "certificate key period is 0".to_string())
}

fn print_text(v: &Value) {
    let h = &v["header"];
    println!(
        "HDR  version {} data type {} V {} PRF {} CSB-ID {} (purpose {})",
        h["version"],
        h["data_type"],
        h["v"],
        h["prf"],
        str_of(&h["csb_id"]),
        h["purpose"]
    );
    println!("     CS ID map {}", h["cs_map"]);
    for p in v["payloads"].as_array().into_iter().flatten() {
        let name = str_of(&p["payload"]);
        let rest: Vec<String> = p
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| *k != "payload" && !v.is_null())
            .map(|(k, v)| format!("{k}={}", str_of(v)))
            .collect();
        println!("{name:<4} {}", rest.join(" "));
    }
    if let Some(s) = v["sign"].as_object() {
        println!("SIGN s_type={} bytes={}", s["s_type"], str_of(&s["bytes"]));
    }
    for k in ["signature", "signature_error", "key_id", "key", "key_error"] {
        if !v[k].is_null() {
            println!("{k}: {}", str_of(&v[k]));
        }
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

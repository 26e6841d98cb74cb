//! The KMS of TS 33.180 Annex D (step C-2 of figure 5.1.3.1-1), serving the lab KMS material.
//!
//! Requests (D.2): `POST …/keymanagement/identity/v1/init`, `…/keyprov`,
//! `…/keyprov/<url-encoded MC service ID>[/<NTP-UTC 64-bit time, hex>]` and `…/certcache[/<n>]`;
//! the POST body may be empty and is not read (the token, not a `KmsRequest` body, says who is
//! asking). Responses (D.3) are a `KmsResponse` in `urn:3gpp:ns:mcsecKMSInterface:1.0`,
//! `Content-Type: application/xml`, holding `KmsInit`, `KmsKeyProv` or `KmsCertCache`; errors
//! hold a `KmsError` (`ErrorCode`, `ErrorMsg`) instead of the `KmsMessage`.
//!
//! The material is the lab KMS's (`mcx-authz kms init/provision`), in the Annex D TOML of
//! [`mcx_sec::kms`]: `<data_dir>/kms/certificate.toml` and one key set per file in
//! `<data_dir>/kms/keysets/*.toml`, looked up by `UserUri` and `KeyPeriodNo`. A user without
//! material gets a `KmsError`, never an invented key. Files are read per request, so newly
//! provisioned key sets are served without a restart.

use std::path::{Path, PathBuf};

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use mcx_sec::kms::{KmsCertificate, KmsKeySet};

use super::auth::{Access, Authorized, Identity, ServerKind, Target};
use super::{esc, read_bounded, Ctx, Request, Route};

/// The Annex D XML namespace.
pub const NAMESPACE: &str = "urn:3gpp:ns:mcsecKMSInterface:1.0";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Largest material file read.
const MAX_FILE: u64 = 64 * 1024;

/// Most key-set files looked at.
const MAX_KEY_SET_FILES: usize = 100_000;

const ROOT: [&str; 3] = ["keymanagement", "identity", "v1"];

fn under_root(segs: &[String]) -> Option<&[String]> {
    (segs.len() > ROOT.len() && segs.iter().zip(ROOT).all(|(a, b)| a == b))
        .then(|| &segs[ROOT.len()..])
}

/// The KMS routes. All need a key-management scope; the identity is the token's own MC service
/// IDs (and, on `keyprov/<id>`, that one).
pub fn routes() -> Vec<Route> {
    let access = Access::Bearer(ServerKind::Kms, Identity::OwnIds);
    vec![
        Route {
            name: "kms-init",
            method: Method::POST,
            matcher: |s| match under_root(s)? {
                [init] if init == "init" => Some(Target::default()),
                _ => None,
            },
            access,
            handler: init,
        },
        Route {
            name: "kms-keyprov",
            method: Method::POST,
            matcher: |s| match under_root(s)? {
                [k] if k == "keyprov" => Some(Target::default()),
                [k, user, rest @ ..] if k == "keyprov" && rest.len() <= 1 => Some(Target {
                    user: Some(user.clone()),
                    rest: rest.to_vec(),
                    ..Target::default()
                }),
                _ => None,
            },
            access,
            handler: keyprov,
        },
        Route {
            name: "kms-certcache",
            method: Method::POST,
            matcher: |s| match under_root(s)? {
                [c, rest @ ..] if c == "certcache" && rest.len() <= 1 => Some(Target {
                    rest: rest.to_vec(),
                    ..Target::default()
                }),
                _ => None,
            },
            access,
            handler: certcache,
        },
    ]
}

fn kms_dir(ctx: &Ctx) -> PathBuf {
    ctx.data_dir().join("kms")
}

/// Reads `<dir>/certificate.toml`.
pub fn load_certificate(dir: &Path) -> Result<Option<KmsCertificate>, String> {
    let path = dir.join("certificate.toml");
    let Some(bytes) = read_bounded(&path, MAX_FILE).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads every `<dir>/keysets/*.toml` that holds a key set (others are logged and skipped).
pub fn load_key_sets(dir: &Path) -> Vec<KmsKeySet> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("keysets")) else {
        return out;
    };
    for entry in entries.flatten().take(MAX_KEY_SET_FILES) {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let parsed = read_bounded(&path, MAX_FILE)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|t| toml::from_str::<KmsKeySet>(&t));
        match parsed {
            Some(Ok(ks)) => out.push(ks),
            Some(Err(e)) => tracing::warn!(file = %path.display(), error = %e, "not a KmsKeySet"),
            None => tracing::warn!(file = %path.display(), "unreadable key-set file"),
        }
    }
    out
}

/// The key period a time falls in (TS 33.180 F.2.1): `floor((t - UserKeyOffset) / UserKeyPeriod)`,
/// `t` in NTP seconds. `None` before the offset or with a zero period.
pub fn key_period_no(cert: &KmsCertificate, ntp_secs: u64) -> Option<u64> {
    ntp_secs
        .checked_sub(cert.user_key_offset)?
        .checked_div(cert.user_key_period)
}

/// Parses the `<NTP time hex>` segment: a 64-bit NTP-UTC timestamp (RFC 5905), 16 hex digits;
/// returns its seconds.
pub fn parse_ntp_hex(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().map(|v| v >> 32)
}

/// `xs:dateTime` (UTC, seconds) of a Unix time.
pub fn xs_datetime(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil-from-days (H. Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn envelope(ctx: &Ctx, user_uri: &str, kms_uri: &str, uri: &Uri, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <KmsResponse xmlns=\"{NAMESPACE}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" Version=\"1.1.0\">\n\
         <UserUri>{}</UserUri>\n<KmsUri>{}</KmsUri>\n<Time>{}</Time>\n<ClientReqUrl>{}</ClientReqUrl>\n{inner}</KmsResponse>\n",
        esc(user_uri),
        esc(kms_uri),
        xs_datetime(ctx.now().0),
        esc(&uri.to_string()),
    )
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    resp
}

/// A `KmsResponse` carrying a `KmsError` (ErrorCode = the HTTP status), for `user` (empty when
/// the request was refused before anyone was known).
pub fn error_response(ctx: &Ctx, user: &str, status: StatusCode, msg: &str, uri: &Uri) -> Response {
    let kms_uri = load_certificate(&kms_dir(ctx))
        .ok()
        .flatten()
        .map(|c| c.kms_uri.clone())
        .unwrap_or_default();
    let inner = format!(
        "<KmsError>\n<ErrorCode>{}</ErrorCode>\n<ErrorMsg>{}</ErrorMsg>\n</KmsError>\n",
        status.as_u16(),
        esc(msg)
    );
    xml_response(status, envelope(ctx, user, &kms_uri, uri, &inner))
}

fn certificate_xml(cert: &KmsCertificate, role: &str) -> String {
    format!(
        "<KmsCertificate Version=\"1.1.0\" Role=\"{}\">\n<KmsUri>{}</KmsUri>\n<Revoked>false</Revoked>\n\
         <UserIdFormat>{}</UserIdFormat>\n<UserKeyPeriod>{}</UserKeyPeriod>\n<UserKeyOffset>{}</UserKeyOffset>\n\
         <PubEncKey>{}</PubEncKey>\n<PubAuthKey>{}</PubAuthKey>\n</KmsCertificate>\n",
        esc(role),
        esc(&cert.kms_uri),
        cert.user_id_format,
        cert.user_key_period,
        cert.user_key_offset,
        esc(&hex_clean(&cert.pub_enc_key)),
        esc(&hex_clean(&cert.pub_auth_key)),
    )
}

fn key_set_xml(kms_uri: &str, ks: &KmsKeySet) -> String {
    format!(
        "<KmsKeySet Version=\"1.1.0\">\n<KmsUri>{}</KmsUri>\n<UserUri>{}</UserUri>\n<UserID>{}</UserID>\n\
         <KeyPeriodNo>{}</KeyPeriodNo>\n<Revoked>false</Revoked>\n\
         <UserDecryptKey xsi:type=\"EncKeyContentType\">{}</UserDecryptKey>\n\
         <UserSigningKeySSK xsi:type=\"EncKeyContentType\">{}</UserSigningKeySSK>\n\
         <UserPubTokenPVT xsi:type=\"EncKeyContentType\">{}</UserPubTokenPVT>\n</KmsKeySet>\n",
        esc(kms_uri),
        esc(&ks.user_uri),
        esc(&hex_clean(&ks.user_id)),
        ks.key_period_no,
        esc(&hex_clean(&ks.user_decrypt_key)),
        esc(&hex_clean(&ks.user_signing_key_ssk)),
        esc(&hex_clean(&ks.user_pub_token_pvt)),
    )
}

/// Hex as the material files may write it (spaces, `0x`), as one lower-case run.
fn hex_clean(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    s.chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn community(ctx: &Ctx, user: &str, uri: &Uri) -> Result<KmsCertificate, Box<Response>> {
    match load_certificate(&kms_dir(ctx)) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(Box::new(error_response(
            ctx,
            user,
            StatusCode::SERVICE_UNAVAILABLE,
            "this KMS has no community yet (mcx-authz kms init)",
            uri,
        ))),
        Err(e) => {
            tracing::error!(error = %e, "KMS certificate unreadable");
            Err(Box::new(error_response(
                ctx,
                user,
                StatusCode::INTERNAL_SERVER_ERROR,
                "KMS certificate unreadable",
                uri,
            )))
        }
    }
}

fn first_id(a: &Authorized) -> &str {
    a.ids().first().map_or("", |(_, id)| id.as_str())
}

/// `POST …/init` → `KmsInit` (D.3.2): the community's root certificate.
fn init(ctx: &Ctx, a: &Authorized, _: &Target, req: &Request) -> Response {
    let cert = match community(ctx, first_id(a), &req.uri) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let inner = format!(
        "<KmsMessage>\n<KmsInit>\n{}</KmsInit>\n</KmsMessage>\n",
        certificate_xml(&cert, "Root")
    );
    xml_response(
        StatusCode::OK,
        envelope(ctx, first_id(a), &cert.kms_uri, &req.uri, &inner),
    )
}

/// `POST …/keyprov[/<id>[/<time>]]` → `KmsKeyProv` (D.3.3): for each MC service ID the request
/// may act for, its key set for the current key period and, when a time is given, for that
/// time's period. An ID with no key set in any of those periods makes the whole answer a
/// `KmsError` (404).
fn keyprov(ctx: &Ctx, a: &Authorized, target: &Target, req: &Request) -> Response {
    let cert = match community(ctx, first_id(a), &req.uri) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let now_ntp = ctx.now().0.saturating_add(NTP_UNIX_OFFSET);
    let mut periods: Vec<u64> = key_period_no(&cert, now_ntp).into_iter().collect();
    if let Some(t) = target.rest.first() {
        let Some(secs) = parse_ntp_hex(t) else {
            return error_response(
                ctx,
                first_id(a),
                StatusCode::BAD_REQUEST,
                "the requested time is not a 64-bit NTP timestamp in 16 hex digits",
                &req.uri,
            );
        };
        match key_period_no(&cert, secs) {
            Some(p) if !periods.contains(&p) => periods.push(p),
            Some(_) => {}
            None => {
                return error_response(
                    ctx,
                    first_id(a),
                    StatusCode::BAD_REQUEST,
                    "the requested time is before the community's UserKeyOffset",
                    &req.uri,
                )
            }
        }
    }
    let sets = load_key_sets(&kms_dir(ctx));
    let mut body = String::new();
    let mut missing = Vec::new();
    for (_, id) in a.ids() {
        let mut found = false;
        for p in &periods {
            if let Some(ks) = sets
                .iter()
                .find(|k| k.user_uri == id.as_str() && k.key_period_no == *p)
            {
                body.push_str(&key_set_xml(&cert.kms_uri, ks));
                found = true;
            }
        }
        if !found {
            missing.push(id.as_str());
        }
    }
    if !missing.is_empty() {
        let periods: Vec<String> = periods.iter().map(u64::to_string).collect();
        return error_response(
            ctx,
            first_id(a),
            StatusCode::NOT_FOUND,
            &format!(
                "no key set for {} in key period {} (mcx-authz kms provision)",
                missing.join(", "),
                periods.join(", ")
            ),
            &req.uri,
        );
    }
    let inner = format!("<KmsMessage>\n<KmsKeyProv>\n{body}</KmsKeyProv>\n</KmsMessage>\n");
    xml_response(
        StatusCode::OK,
        envelope(ctx, first_id(a), &cert.kms_uri, &req.uri, &inner),
    )
}

/// `POST …/certcache[/<n>]` → `KmsCertCache` (D.3.4): the certificates of the communities this
/// KMS trusts: its own, and any in `<data_dir>/kms/certcache/*.toml`.
fn certcache(ctx: &Ctx, a: &Authorized, _: &Target, req: &Request) -> Response {
    let cert = match community(ctx, first_id(a), &req.uri) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut certs = certificate_xml(&cert, "Root");
    if let Ok(entries) = std::fs::read_dir(kms_dir(ctx).join("certcache")) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).take(1000).collect();
        paths.sort();
        for p in paths {
            let parsed = read_bounded(&p, MAX_FILE)
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| toml::from_str::<KmsCertificate>(&t).ok());
            if let Some(c) = parsed {
                certs.push_str(&certificate_xml(&c, "External"));
            }
        }
    }
    let inner = format!(
        "<KmsMessage>\n<KmsCertCache CacheNum=\"1\">\n{certs}</KmsCertCache>\n</KmsMessage>\n"
    );
    xml_response(
        StatusCode::OK,
        envelope(ctx, first_id(a), &cert.kms_uri, &req.uri, &inner),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_time_and_key_periods() {
        // TS 33.179 D.2 example: 23 Feb 2014 08:39:14 UTC.
        let secs = parse_ntp_hex("D6B4323200000000").unwrap();
        assert_eq!(xs_datetime(secs - NTP_UNIX_OFFSET), "2014-02-23T08:39:14Z");
        assert_eq!(parse_ntp_hex("D6B43232"), None);
        assert_eq!(parse_ntp_hex("D6B432320000000g"), None);
        let cert = KmsCertificate {
            kms_uri: "kms.example.org".into(),
            user_id_format: 2,
            user_key_period: 16_777_215,
            user_key_offset: 0,
            pub_enc_key: String::new(),
            pub_auth_key: String::new(),
        };
        assert_eq!(key_period_no(&cert, 236 * 16_777_215), Some(236));
        assert_eq!(key_period_no(&cert, 237 * 16_777_215 - 1), Some(236));
        let zero = KmsCertificate {
            user_key_period: 0,
            ..cert.clone()
        };
        assert_eq!(key_period_no(&zero, 5), None);
        assert_eq!(xs_datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(xs_datetime(951_782_400), "2000-02-29T00:00:00Z");
    }
}

//! The configuration management server of TS 24.484 (step C-4 of figure 5.1.3.1-1): XCAP
//! (RFC 4825) GET of the documents an MC client fetches before it registers.
//!
//! - User profiles (24.484 8.3, 9.3, 10.3):
//!   `/xcap-root/org.3gpp.{mcptt,mcvideo,mcdata}.user-profile/users/<MC service ID>/<document>`,
//!   only to the user the path names (the token's MC service ID for that service), with the
//!   service's config-management scope.
//! - Service configuration (24.484 8.4 and its MCVideo/MCData equivalents):
//!   `/xcap-root/org.3gpp.{mcptt,mcvideo,mcdata}.service-config/global/<document>`, to any
//!   user with the service's config-management scope.
//! - The MCS UE initial configuration (24.484 7.2):
//!   `/xcap-root/org.3gpp.mcptt.ue-init-config/global/<document>`, without a token: the UE
//!   needs it before it can reach the IdMS.
//!
//! Documents come from `<data_dir>/cm/<AUID>/users/<MC service ID>/<document>` and
//! `<data_dir>/cm/<AUID>/global/<document>`. A user with no stored document gets a generated
//! minimal profile (`<svc>-user-profile-<index>.xml`), and the global documents have generated
//! defaults, so a fresh lab serves every client. Every answer has a strong ETag; `If-None-Match`
//! gives 304. Node selectors (`~~`) are not supported (404).

use std::path::PathBuf;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use mcx_model::Service;

use super::auth::{Access, Authorized, Identity, ServerKind, Target};
use super::{esc, read_bounded, text, xcap_document, Ctx, Request, Route};

/// Largest document served.
const MAX_DOC: u64 = 1024 * 1024;

/// The XCAP root every AUID is under.
pub const XCAP_ROOT: &str = "xcap-root";

/// The UE initial configuration's AUID.
pub const UE_INIT_AUID: &str = "org.3gpp.mcptt.ue-init-config";

/// The document name of the generated UE initial configuration.
pub const UE_INIT_DOC: &str = "mcptt-ue-init-config.xml";

/// The document name of the generated service configuration.
pub const SERVICE_CONFIG_DOC: &str = "service-config.xml";

fn word(s: Service) -> &'static str {
    match s {
        Service::Mcptt => "mcptt",
        Service::Mcvideo => "mcvideo",
        Service::Mcdata => "mcdata",
    }
}

/// `org.3gpp.<svc>.user-profile`.
pub fn profile_auid(s: Service) -> String {
    format!("org.3gpp.{}.user-profile", word(s))
}

/// `org.3gpp.<svc>.service-config`.
pub fn service_config_auid(s: Service) -> String {
    format!("org.3gpp.{}.service-config", word(s))
}

fn service_of(auid: &str, suffix: &str) -> Option<Service> {
    Service::ALL
        .into_iter()
        .find(|s| auid == format!("org.3gpp.{}.{suffix}", word(*s)))
}

/// The CM routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            name: "cm-user-profile",
            method: Method::GET,
            matcher: |s| match s {
                [root, auid, users, user, doc] if root == XCAP_ROOT && users == "users" => {
                    Some(Target {
                        service: Some(service_of(auid, "user-profile")?),
                        user: Some(user.clone()),
                        rest: vec![doc.clone()],
                        ..Target::default()
                    })
                }
                _ => None,
            },
            access: Access::Bearer(ServerKind::Cm, Identity::PathUser),
            handler: user_profile,
        },
        Route {
            name: "cm-service-config",
            method: Method::GET,
            matcher: |s| match s {
                [root, auid, global, doc] if root == XCAP_ROOT && global == "global" => {
                    Some(Target {
                        service: Some(service_of(auid, "service-config")?),
                        rest: vec![doc.clone()],
                        ..Target::default()
                    })
                }
                _ => None,
            },
            access: Access::Bearer(ServerKind::Cm, Identity::AnyUser),
            handler: service_config,
        },
        Route {
            name: "cm-ue-init-config",
            method: Method::GET,
            matcher: |s| match s {
                [root, auid, global, doc]
                    if root == XCAP_ROOT && auid == UE_INIT_AUID && global == "global" =>
                {
                    Some(Target {
                        rest: vec![doc.clone()],
                        ..Target::default()
                    })
                }
                _ => None,
            },
            access: Access::Public,
            handler: ue_init_config,
        },
    ]
}

fn cm_dir(ctx: &Ctx) -> PathBuf {
    ctx.data_dir().join("cm")
}

/// Serves the stored document at `path`, or `default` when there is none.
fn serve(req: &Request, path: PathBuf, content_type: &str, default: Option<String>) -> Response {
    match read_bounded(&path, MAX_DOC) {
        Ok(Some(bytes)) => xcap_document(&req.headers, content_type, bytes),
        Ok(None) => match default {
            Some(doc) => xcap_document(&req.headers, content_type, doc.into_bytes()),
            None => text(StatusCode::NOT_FOUND, "no such document\n"),
        },
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "CM document unreadable");
            text(StatusCode::INTERNAL_SERVER_ERROR, "document unreadable\n")
        }
    }
}

/// The profile index of `<svc>-user-profile-<index>.xml`.
fn profile_index(service: Service, doc: &str) -> Option<u32> {
    doc.strip_prefix(&format!("{}-user-profile-", word(service)))?
        .strip_suffix(".xml")?
        .parse()
        .ok()
}

/// A minimal user profile shaped as the schema's root (24.484 8.3.2, 9.3.2, 10.3.2): the XUI-URI,
/// the profile index, a status, a profile name and the user's own ID in `<Common>`.
pub fn default_profile(service: Service, mc_id: &str, index: u32) -> String {
    let w = word(service);
    let id_element = match service {
        Service::Mcptt => "MCPTTUserID",
        Service::Mcvideo => "MCVideoUserID",
        Service::Mcdata => "MCDataUserID",
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <{w}-user-profile xmlns=\"urn:3gpp:{w}:user-profile:1.0\" XUI-URI=\"{id}\" user-profile-index=\"{index}\">\n\
         <Name>{id}</Name>\n<Status>true</Status>\n<ProfileName>{w}-user-profile-{index}</ProfileName>\n\
         <Common index=\"0\">\n<{id_element}>\n<uri-entry>{id}</uri-entry>\n</{id_element}>\n</Common>\n\
         </{w}-user-profile>\n",
        id = esc(mc_id),
    )
}

/// `GET …/org.3gpp.<svc>.user-profile/users/<MC service ID>/<document>`.
fn user_profile(ctx: &Ctx, a: &Authorized, target: &Target, req: &Request) -> Response {
    let (Some(service), Some(doc)) = (target.service, target.rest.first()) else {
        return text(StatusCode::NOT_FOUND, "no such document\n");
    };
    // The decision matched the path's user to the token: serve exactly that user's tree.
    let Some((_, mc_id)) = a.ids().first() else {
        return text(StatusCode::FORBIDDEN, "no MC service ID\n");
    };
    let user_dir = cm_dir(ctx)
        .join(profile_auid(service))
        .join("users")
        .join(mc_id.as_str());
    let has_stored = std::fs::read_dir(&user_dir).is_ok_and(|mut d| d.next().is_some());
    let default = match (has_stored, profile_index(service, doc)) {
        (false, Some(i)) => Some(default_profile(service, mc_id.as_str(), i)),
        _ => None,
    };
    let ct = format!("application/vnd.3gpp.{}-user-profile+xml", word(service));
    serve(req, user_dir.join(doc), &ct, default)
}

/// `GET …/org.3gpp.<svc>.service-config/global/<document>`.
fn service_config(ctx: &Ctx, _: &Authorized, target: &Target, req: &Request) -> Response {
    let (Some(service), Some(doc)) = (target.service, target.rest.first()) else {
        return text(StatusCode::NOT_FOUND, "no such document\n");
    };
    let w = word(service);
    let default = (doc == SERVICE_CONFIG_DOC).then(|| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <service-configuration-info xmlns=\"urn:3gpp:{w}:service-config:1.0\">\n\
             <service-configuration-params domain=\"lab\">\n</service-configuration-params>\n\
             </service-configuration-info>\n"
        )
    });
    let path = cm_dir(ctx)
        .join(service_config_auid(service))
        .join("global")
        .join(doc);
    let ct = format!("application/vnd.3gpp.{w}-service-config+xml");
    serve(req, path, &ct, default)
}

/// `GET …/org.3gpp.mcptt.ue-init-config/global/<document>`: no token (24.484 7.2).
fn ue_init_config(ctx: &Ctx, _: &Authorized, target: &Target, req: &Request) -> Response {
    let Some(doc) = target.rest.first() else {
        return text(StatusCode::NOT_FOUND, "no such document\n");
    };
    let default = (doc == UE_INIT_DOC).then(|| {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <mcptt-UE-initial-configuration xmlns=\"urn:3gpp:mcptt:mcpttUEinitialConfig:1.0\" domain=\"lab\">\n\
         <Name>mcx-authz lab</Name>\n</mcptt-UE-initial-configuration>\n"
            .to_owned()
    });
    let path = cm_dir(ctx).join(UE_INIT_AUID).join("global").join(doc);
    serve(
        req,
        path,
        "application/vnd.3gpp.mcptt-ue-init-config+xml",
        default,
    )
}

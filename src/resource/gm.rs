//! The group management server of TS 24.481 (step C-5 of figure 5.1.3.1-1): XCAP GET of group
//! documents (AUID `org.openmobilealliance.groups`, OMA XDM group usage).
//!
//! - By group ID: `/xcap-root/org.openmobilealliance.groups/global/byGroupID/<group ID>`;
//! - through the user's tree: `/xcap-root/org.openmobilealliance.groups/users/<MC service ID>/<group ID>`
//!   (the XUI must be one of the token's MC service IDs).
//!
//! Either way the document goes only to a member of the group or to a user authorized for it
//! (one of the token's MC service IDs, for a service whose group-management scope the token
//! holds); an unknown group is refused like a group the user is not in (403), so the server is
//! no oracle for group IDs. The lab groups live in `<data_dir>/gm/groups.toml`
//! (`mcx-authz groups add`), read per request. Answers carry an ETag; `If-None-Match` → 304.

use std::path::{Path, PathBuf};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::auth::{Access, Authorized, Identity, ServerKind, Target};
use super::{esc, read_bounded, text, xcap_document, Ctx, Request, Route};

/// The AUID of group documents.
pub const AUID: &str = "org.openmobilealliance.groups";

/// Largest groups file read.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// Most groups kept from the file.
pub const MAX_GROUPS: usize = 10_000;

/// One lab group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The MC group ID (a SIP URI).
    pub id: String,
    /// `<display-name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The members' MC service IDs.
    #[serde(default)]
    pub members: Vec<String>,
    /// Users authorized for the group without being members (e.g. dispatchers, the group's
    /// administrator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized: Vec<String>,
}

/// The groups file: `[[group]]` tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsFile {
    /// The groups.
    #[serde(default, rename = "group")]
    pub groups: Vec<Group>,
}

/// `<data_dir>/gm/groups.toml`.
pub fn groups_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gm").join("groups.toml")
}

/// Reads the groups file (none: no groups).
pub fn read_groups(data_dir: &Path) -> anyhow::Result<GroupsFile> {
    let path = groups_path(data_dir);
    let Some(bytes) = read_bounded(&path, MAX_FILE)? else {
        return Ok(GroupsFile::default());
    };
    let text = String::from_utf8(bytes)?;
    let mut file: GroupsFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    file.groups.truncate(MAX_GROUPS);
    Ok(file)
}

/// The groups, or none (logged) when the file is unreadable.
pub fn load_groups(data_dir: &Path) -> Vec<Group> {
    match read_groups(data_dir) {
        Ok(f) => f.groups,
        Err(e) => {
            tracing::error!(error = %e, "groups file unreadable: serving no groups");
            Vec::new()
        }
    }
}

/// Adds `group` (or replaces the group with its ID) and writes the file.
pub fn add_group(data_dir: &Path, group: Group) -> anyhow::Result<()> {
    let mut file = read_groups(data_dir)?;
    file.groups.retain(|g| g.id != group.id);
    if file.groups.len() >= MAX_GROUPS {
        anyhow::bail!("the lab holds at most {MAX_GROUPS} groups");
    }
    file.groups.push(group);
    let path = groups_path(data_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, toml::to_string_pretty(&file)?)?;
    Ok(())
}

/// The group document (OMA XDM group usage, `urn:oma:xml:poc:list-service`).
pub fn group_document(g: &Group) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<group xmlns=\"urn:oma:xml:poc:list-service\">\n");
    out.push_str(&format!("<list-service uri=\"{}\">\n", esc(&g.id)));
    if let Some(name) = &g.display_name {
        out.push_str(&format!(
            "<display-name xml:lang=\"en\">{}</display-name>\n",
            esc(name)
        ));
    }
    out.push_str("<list>\n");
    for m in &g.members {
        out.push_str(&format!("<entry uri=\"{}\"/>\n", esc(m)));
    }
    out.push_str("</list>\n</list-service>\n</group>\n");
    out
}

/// The GM routes.
pub fn routes() -> Vec<Route> {
    let access = Access::Bearer(ServerKind::Gm, Identity::GroupMember);
    vec![
        Route {
            name: "gm-group-by-id",
            method: Method::GET,
            matcher: |s| match s {
                [root, auid, global, by, group]
                    if root == super::cm::XCAP_ROOT
                        && auid == AUID
                        && global == "global"
                        && by == "byGroupID" =>
                {
                    Some(Target {
                        group: Some(group.clone()),
                        ..Target::default()
                    })
                }
                _ => None,
            },
            access,
            handler: group,
        },
        Route {
            name: "gm-group-in-user-tree",
            method: Method::GET,
            matcher: |s| match s {
                [root, auid, users, user, group]
                    if root == super::cm::XCAP_ROOT && auid == AUID && users == "users" =>
                {
                    Some(Target {
                        user: Some(user.clone()),
                        group: Some(group.clone()),
                        ..Target::default()
                    })
                }
                _ => None,
            },
            access,
            handler: group,
        },
    ]
}

/// The group document, to a member or authorized user (checked before this is called).
fn group(ctx: &Ctx, _: &Authorized, target: &Target, req: &Request) -> Response {
    let Some(id) = &target.group else {
        return text(StatusCode::NOT_FOUND, "no such group\n");
    };
    match load_groups(ctx.data_dir())
        .into_iter()
        .find(|g| g.id == *id)
    {
        Some(g) => xcap_document(
            &req.headers,
            "application/vnd.oma.poc.groups+xml",
            group_document(&g).into_bytes(),
        ),
        // Removed between the decision and now.
        None => text(StatusCode::NOT_FOUND, "no such group\n"),
    }
}

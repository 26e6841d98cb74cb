//! The tokens a trace presents, minted afresh by the lab IdMS: `iat`/`exp` from the model's
//! ticks, `jti` = the model's token id, the user's MC service IDs as claims (TS 33.180 B.4).

use anyhow::{bail, Context};
use mcx_model::env::{Tok, TokenKind};
use mcx_model::{McxModel, Service, UnixTime};

use crate::token::{LabIdms, LabKey, MintRequest};

/// The scope a wrongly scoped token carries instead of the MC service scopes: key management only
/// (TS 33.180 B.4.2.2).
pub const WRONG_SCOPE: &str = "3gpp:mc:ptt_key_management_service";

/// One minted token: the model's token and its JWT.
#[derive(Clone, Debug)]
pub struct Minted {
    /// The model's token.
    pub tok: Tok,
    /// The compact JWS.
    pub jwt: String,
}

/// The claims of model token `tok` with tick 0 at `time_base`.
pub fn mint_request(model: &McxModel, tok: &Tok, time_base: u64) -> MintRequest {
    let cfg = model.config();
    let id = |s: Service| {
        cfg.services
            .iter()
            .position(|x| *x == s)
            .map(|i| model.mc_id(tok.user, i as u8).to_string())
    };
    MintRequest {
        mcptt_id: id(Service::Mcptt),
        mcvideo_id: id(Service::Mcvideo),
        mcdata_id: id(Service::Mcdata),
        scopes: Some(match tok.kind {
            TokenKind::WrongScope => vec![WRONG_SCOPE.into()],
            _ => Service::ALL.iter().map(|s| s.scope().to_owned()).collect(),
        }),
        iat: Some(UnixTime(time_base + u64::from(tok.issued))),
        exp: Some(UnixTime(time_base + tok.exp(cfg.token_life))),
        jti: Some(tok.id()),
        ..MintRequest::default()
    }
}

/// Mints every token: genuine ones with the lab's first key, forged ones with a throw-away key of
/// the same algorithm under the lab key's `kid` (so only the signature gives them away).
pub fn mint_all(
    model: &McxModel,
    lab: &LabIdms,
    toks: &[Tok],
    time_base: u64,
) -> anyhow::Result<Vec<Minted>> {
    let key = lab
        .keys()
        .first()
        .context("the lab IdMS has no key (run `mcx-authz token keygen`)")?;
    let mut forger: Option<LabKey> = None;
    let mut out = Vec::new();
    for tok in toks {
        let req = mint_request(model, tok, time_base);
        let jwt = if tok.kind == TokenKind::Forged {
            if forger.is_none() {
                forger = Some(LabKey::generate(key.alg()).context("throw-away key")?);
            }
            let f = forger.as_ref().expect("just made");
            f.sign_jws(&key.header(), &req.claims(lab.issuer()))
                .context("signing the forged token")?
        } else {
            lab.mint(&req).context("minting")?
        };
        out.push(Minted { tok: *tok, jwt });
    }
    Ok(out)
}

/// The SIPp `-inf` file: `SEQUENTIAL`, then the tokens on one `;`-separated line (`[field0]` is
/// the first). A trace without tokens gets one placeholder field, since SIPp wants a line.
pub fn csv(minted: &[Minted]) -> anyhow::Result<String> {
    for m in minted {
        if m.jwt.contains([';', '\n', '\r']) {
            bail!("token {} holds a CSV separator", m.tok.id());
        }
    }
    let line = if minted.is_empty() {
        "no-tokens".to_owned()
    } else {
        minted
            .iter()
            .map(|m| m.jwt.as_str())
            .collect::<Vec<_>>()
            .join(";")
    };
    Ok(format!("SEQUENTIAL\n{line}\n"))
}

//! The IdMS and the validator: abstract access tokens ([`Tok`]) as the IdMS issues them at a
//! log-on (TS 33.180 B.4), and the verdict the server's validator reaches on one at delivery time
//! (TS 33.180 B.11/B.12 reduced to genuine / expired / claims).

use serde::{Deserialize, Serialize};

use crate::ids::{Service, ServiceSet, TokenId, UnixTime};
use crate::token::{TokenRejection, TokenVerdict, VerifiedClaims};

use super::{McxModel, TokenKind};

/// An abstract access token as the IdMS issued it (or the attacker made it up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tok {
    /// The user it was issued to (index; user 0 is "A").
    pub user: u8,
    /// The tick it was issued at.
    pub issued: u8,
    /// Valid, expired, wrongly scoped or forged.
    pub kind: TokenKind,
}

impl Tok {
    /// The `exp` claim in ticks.
    pub fn exp(&self, token_life: u8) -> u64 {
        match self.kind {
            TokenKind::Expired => u64::from(self.issued),
            _ => u64::from(self.issued) + u64::from(token_life),
        }
    }

    /// The `jti`: `tok-A-t0-valid`.
    pub fn id(&self) -> String {
        format!(
            "tok-{}-t{}-{}",
            user_name(self.user),
            self.issued,
            self.kind.name()
        )
    }

    /// [`Tok::id`] as the validator's [`TokenId`], formatted inline (no heap: the checker
    /// validates a token at every delivery).
    pub fn token_id(&self) -> TokenId {
        TokenId::new(format!(
            "tok-{}-t{}-{}",
            user_name(self.user),
            self.issued,
            self.kind.name()
        ))
    }

    /// Parses [`Tok::id`].
    pub fn parse(id: &str) -> Option<Tok> {
        let rest = id.strip_prefix("tok-")?;
        let mut parts = rest.splitn(3, '-');
        let user = parts.next()?;
        let issued = parts.next()?.strip_prefix('t')?.parse().ok()?;
        let kind = match parts.next()? {
            "valid" => TokenKind::Valid,
            "expired" => TokenKind::Expired,
            "wrong-scope" => TokenKind::WrongScope,
            "forged" => TokenKind::Forged,
            _ => return None,
        };
        let [c] = user.as_bytes() else { return None };
        Some(Tok {
            user: c.checked_sub(b'A')?,
            issued,
            kind,
        })
    }
}

/// The user's display name: A, B, C, D.
pub fn user_name(user: u8) -> char {
    char::from(b'A' + user)
}

impl McxModel {
    /// The model's validator: what the server's validator says of `tok` at time `now`.
    pub(super) fn validate(&self, tok: Tok, now: u8) -> TokenVerdict {
        // The model's validator: TS 33.180 B.11/B.12 reduced to genuine / expired / claims.
        if tok.kind == TokenKind::Forged {
            return TokenVerdict::Rejected(TokenRejection::BadSignature);
        }
        let exp = tok.exp(self.cfg.token_life);
        if exp <= u64::from(now) {
            return TokenVerdict::Rejected(TokenRejection::Expired);
        }
        let id = |s: Service| {
            self.cfg
                .services
                .iter()
                .position(|x| *x == s)
                .map(|i| self.mc_id(tok.user, i as u8).clone())
        };
        TokenVerdict::Verified(VerifiedClaims {
            mcptt_id: id(Service::Mcptt),
            mcvideo_id: id(Service::Mcvideo),
            mcdata_id: id(Service::Mcdata),
            scopes: if tok.kind == TokenKind::WrongScope {
                ServiceSet::EMPTY
            } else {
                ServiceSet::ALL
            },
            exp: UnixTime(exp),
            token_id: tok.token_id(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inline_token_id_is_the_jti() {
        for kind in [
            TokenKind::Valid,
            TokenKind::Expired,
            TokenKind::WrongScope,
            TokenKind::Forged,
        ] {
            let t = Tok {
                user: 1,
                issued: 2,
                kind,
            };
            assert_eq!(t.token_id().as_str(), t.id());
            assert_eq!(Tok::parse(t.token_id().as_str()), Some(t));
        }
    }
}

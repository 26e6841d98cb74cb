//! The verified-token cache: a plain data structure driven by the caller's `now`; the validator
//! wraps it in a mutex. (The `jti` replay window is the machine's: `Policy::replay_window_secs`.)

use std::collections::{BTreeSet, HashMap};

use mcx_model::VerifiedClaims;

/// SHA-256 of a token's bytes: the cache key.
pub(crate) type TokenDigest = [u8; 32];

/// One verified token.
#[derive(Clone, Debug)]
pub(crate) struct CachedToken {
    /// The verified claims.
    pub claims: VerifiedClaims,
    /// First second at which the token is expired (`exp` + leeway).
    pub expired_at: u64,
    /// First second at which the token is valid (`max(nbf, iat)` − leeway), if it has either.
    pub valid_from: Option<u64>,
}

/// Verified tokens keyed by the SHA-256 of the token, bounded in size, each dropped when its
/// token expires (TS 33.180 B.12: validity ends at `exp`). One token presented for MCPTT,
/// MCVideo and MCData, or presented again on refresh, costs one signature check.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    max: usize,
    map: HashMap<TokenDigest, CachedToken>,
    /// `(expired_at, digest)`, so the soonest-expiring entry is first.
    by_expiry: BTreeSet<(u64, TokenDigest)>,
}

/// What a cache lookup found.
pub(crate) enum Lookup {
    /// Not cached.
    Miss,
    /// Cached and still within its validity at `now`.
    Hit(CachedToken),
    /// Cached but expired at `now` (the entry is dropped).
    Expired,
    /// Cached but `now` is before its validity starts.
    NotYetValid,
}

impl VerifiedCache {
    /// An empty cache holding at most `max` tokens (0 turns the cache off).
    pub fn new(max: usize) -> VerifiedCache {
        VerifiedCache {
            max,
            map: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Looks `digest` up at `now`.
    pub fn get(&mut self, digest: &TokenDigest, now: u64) -> Lookup {
        let Some(entry) = self.map.get(digest) else {
            return Lookup::Miss;
        };
        if now >= entry.expired_at {
            let at = entry.expired_at;
            self.map.remove(digest);
            self.by_expiry.remove(&(at, *digest));
            return Lookup::Expired;
        }
        if entry.valid_from.is_some_and(|from| now < from) {
            return Lookup::NotYetValid;
        }
        Lookup::Hit(entry.clone())
    }

    /// Drops every entry expired at `now`.
    pub fn sweep(&mut self, now: u64) {
        while let Some(&(at, digest)) = self.by_expiry.first() {
            if at > now {
                break;
            }
            self.by_expiry.pop_first();
            self.map.remove(&digest);
        }
    }

    /// Caches a verified token; when full, the entry closest to expiry makes room.
    pub fn insert(&mut self, digest: TokenDigest, entry: CachedToken, now: u64) {
        if self.max == 0 {
            return;
        }
        self.sweep(now);
        if let Some(old) = self.map.remove(&digest) {
            self.by_expiry.remove(&(old.expired_at, digest));
        }
        while self.map.len() >= self.max {
            match self.by_expiry.pop_first() {
                Some((_, d)) => {
                    self.map.remove(&d);
                }
                None => break,
            }
        }
        self.by_expiry.insert((entry.expired_at, digest));
        self.map.insert(digest, entry);
    }

    /// Empties the cache (the trusted key set changed).
    pub fn clear(&mut self) {
        self.map.clear();
        self.by_expiry.clear();
    }
}

//! [`Shared`]: a state part that successor states share until one of them changes it.
//!
//! The model checker clones the whole [`super::EnvState`] for every successor it generates and
//! hashes every successor to find out whether it is new. Most steps (a UE action, a request put
//! on the network, a refused request) leave the server's [`crate::Machine`] and its durable
//! store as they were, yet a plain clone copies every B-tree of both and a plain hash walks every
//! identifier in them. Behind a [`Shared`] a clone is one reference count, the step that changes
//! the part copies it once ([`Shared::make_mut`], copy on write), and its hash is computed once
//! when the step ends ([`Shared::seal`]) and then reused by every state that shares the part.
//!
//! Equality still compares the contents, so two states are equal exactly when they were before;
//! the fingerprint hashes a 64-bit digest of the part instead of its contents, which keeps equal
//! states equal in the fingerprint (the unique-state counts do not change).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A copy-on-write, hash-caching handle on a state part (see the module docs).
#[derive(Clone)]
pub struct Shared<T> {
    inner: Arc<T>,
    /// Digest of `inner` (aHash with fixed keys); `None` after
    /// [`Shared::make_mut`] until [`Shared::seal`].
    digest: Option<u64>,
}

impl<T: Hash> Shared<T> {
    /// Wraps `value`, sealed.
    pub fn new(value: T) -> Self {
        let mut s = Shared {
            inner: Arc::new(value),
            digest: None,
        };
        s.seal();
        s
    }

    /// Computes the digest if a change left it unknown.
    pub fn seal(&mut self) {
        if self.digest.is_none() {
            self.digest = Some(digest(&*self.inner));
        }
    }

    /// The digest the fingerprint hashes (computed now if a change left it unknown).
    pub fn digest(&self) -> u64 {
        self.digest.unwrap_or_else(|| digest(&*self.inner))
    }

    /// Whether `self` and `other` are the very same part (not merely equal).
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<T: Clone> Shared<T> {
    /// The part, to change: copied first if another state shares it.
    pub fn make_mut(&mut self) -> &mut T {
        self.digest = None;
        Arc::make_mut(&mut self.inner)
    }
}

fn digest<T: Hash>(value: &T) -> u64 {
    // Fixed keys: the same part gets the same digest in every thread of one run.
    ahash::RandomState::with_seeds(0x6d63, 0x782d, 0x6175, 0x74687a).hash_one(value)
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return true;
        }
        if let (Some(a), Some(b)) = (self.digest, other.digest) {
            if a != b {
                return false;
            }
        }
        *self.inner == *other.inner
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: Hash> Hash for Shared<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest.unwrap_or_else(|| digest(&*self.inner)));
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de> + Hash> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_copies_once_and_leaves_the_sharer_alone() {
        let a = Shared::new(vec![1, 2, 3]);
        let mut b = a.clone();
        assert!(a.same(&b));
        b.make_mut().push(4);
        b.seal();
        assert!(!a.same(&b));
        assert_eq!(*a, vec![1, 2, 3]);
        assert_eq!(*b, vec![1, 2, 3, 4]);
        assert_ne!(a, b);
        assert_ne!(digest_of(&a), digest_of(&b));
    }

    #[test]
    fn equal_contents_are_equal_and_hash_alike_whether_sealed_or_not() {
        let a = Shared::new(vec![1, 2]);
        let mut b = Shared::new(vec![1]);
        b.make_mut().push(2);
        // Not sealed yet: the hash is computed on the fly, the same as the sealed one.
        assert_eq!(a, b);
        assert_eq!(digest_of(&a), digest_of(&b));
        b.seal();
        assert_eq!(a, b);
        assert_eq!(digest_of(&a), digest_of(&b));
    }

    fn digest_of<T: Hash>(x: &Shared<T>) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        x.hash(&mut h);
        h.finish()
    }
}

//! A shared, immutable string behind one 8-byte pointer, with a 6-byte header (issue 15: memory
//! per binding).
//!
//! `Arc<str>` costs a 16-byte handle (pointer and length) and a 16-byte header (strong and weak
//! counts) in front of the bytes. The machine holds four long identifiers per binding (IMPU, MC
//! service ID, MC client ID, token ID), and each handle sits in B-tree nodes and binding entries,
//! so both halves count. [`ThinStr`] keeps one pointer in the handle and puts a 4-byte reference
//! count and a 2-byte length in front of the bytes: a 33-byte IMPU takes a 39-byte allocation
//! instead of 49 (56 with `Arc`'s alignment padding).
//!
//! Layout of the allocation (alignment 8):
//! - bytes 0..4: the reference count (`AtomicU32`);
//! - bytes 4..6: the length, when it is below `0xFFFF` (then the text starts at byte 6);
//! - otherwise `0xFFFF` there, the length as a `u64` at bytes 8..16, and the text from byte 16.
//!
//! A clone increments the count, except when the count has reached `MAX_SHARED`: then the clone
//! is a fresh copy, so the count can never overflow (content equality makes the two
//! indistinguishable). Equality, order and hash are the text's, as for `Arc<str>`.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::ManuallyDrop;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// Lengths below this are held in the 2-byte field.
const LONG: usize = 0xFFFF;
/// Where the text starts for a short string.
const SHORT_HEADER: usize = 6;
/// Where the text starts for a long one.
const LONG_HEADER: usize = 16;
/// The allocation's alignment: enough for the count and the long length, and for the tag
/// bits of [`TaggedThinStr`] (checked below at compile time).
const ALIGN: usize = 8;
/// Beyond this many handles to one allocation, a clone copies instead of sharing.
const MAX_SHARED: u32 = u32::MAX / 2;

/// A shared, immutable UTF-8 string behind one pointer (see the module docs).
pub(crate) struct ThinStr {
    ptr: NonNull<u8>,
}

// SAFETY: the text is immutable after construction and the count is atomic, as for `Arc<str>`.
unsafe impl Send for ThinStr {}
// SAFETY: as above.
unsafe impl Sync for ThinStr {}

impl ThinStr {
    /// A new allocation holding a copy of `s`.
    pub(crate) fn new(s: &str) -> Self {
        let len = s.len();
        let header = if len < LONG {
            SHORT_HEADER
        } else {
            LONG_HEADER
        };
        let layout = layout(header, len);
        // SAFETY: `layout` has a non-zero size (at least the header); every write below stays
        // within it: the count at 0..4, the short length at 4..6, the long length at 8..16
        // (8-aligned, since the allocation is), and `len` bytes of text from `header`.
        unsafe {
            let p = alloc(layout);
            let Some(ptr) = NonNull::new(p) else {
                handle_alloc_error(layout)
            };
            p.cast::<AtomicU32>().write(AtomicU32::new(1));
            if len < LONG {
                p.add(4).cast::<u16>().write(len as u16);
            } else {
                p.add(4).cast::<u16>().write(LONG as u16);
                p.add(8).cast::<u64>().write(len as u64);
            }
            std::ptr::copy_nonoverlapping(s.as_ptr(), p.add(header), len);
            ThinStr { ptr }
        }
    }

    fn count(&self) -> &AtomicU32 {
        // SAFETY: this handle keeps the allocation alive.
        unsafe { count(self.ptr) }
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // SAFETY: this handle keeps the allocation alive for the borrow.
        unsafe { text(self.ptr) }
    }
}

/// The reference count of the allocation at `ptr`.
///
/// SAFETY: `ptr` is a live allocation made by [`ThinStr::new`], alive for `'a`.
unsafe fn count<'a>(ptr: NonNull<u8>) -> &'a AtomicU32 {
    unsafe { &*ptr.as_ptr().cast::<AtomicU32>() }
}

/// The header size and the text's length of the allocation at `ptr`.
///
/// SAFETY: as for [`count`]. Bytes 4..6 (and, for a long string, 8..16) were written by `new`
/// and are never written again.
unsafe fn header_and_len(ptr: NonNull<u8>) -> (usize, usize) {
    let p = ptr.as_ptr();
    unsafe {
        let short = usize::from(p.add(4).cast::<u16>().read());
        if short < LONG {
            (SHORT_HEADER, short)
        } else {
            (LONG_HEADER, p.add(8).cast::<u64>().read() as usize)
        }
    }
}

/// The text of the allocation at `ptr`.
///
/// SAFETY: as for [`count`]; `new` copied `len` bytes of a `str` to `header`, never written
/// again.
unsafe fn text<'a>(ptr: NonNull<u8>) -> &'a str {
    unsafe {
        let (header, len) = header_and_len(ptr);
        std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr.as_ptr().add(header), len))
    }
}

fn layout(header: usize, len: usize) -> Layout {
    // A `str` is at most `isize::MAX` bytes, so this fails only for lengths no `str` has.
    Layout::from_size_align(header.saturating_add(len), ALIGN).expect("string too long")
}

impl Clone for ThinStr {
    fn clone(&self) -> Self {
        if self.count().load(Ordering::Relaxed) >= MAX_SHARED {
            return ThinStr::new(self.as_str());
        }
        // Relaxed as in `Arc::clone`: a new handle is made from an existing one. Concurrent
        // clones can pass `MAX_SHARED` by at most the number of threads, far below `u32::MAX`.
        self.count().fetch_add(1, Ordering::Relaxed);
        ThinStr { ptr: self.ptr }
    }
}

impl Drop for ThinStr {
    fn drop(&mut self) {
        if self.count().fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // As in `Arc::drop`: every other handle's use happens before the free.
        fence(Ordering::Acquire);
        // SAFETY: the allocation is alive until the `dealloc` below.
        let (header, len) = unsafe { header_and_len(self.ptr) };
        // SAFETY: this was the last handle; the layout is the one `new` allocated with.
        unsafe { dealloc(self.ptr.as_ptr(), layout(header, len)) }
    }
}

impl PartialEq for ThinStr {
    fn eq(&self, other: &Self) -> bool {
        self.ptr == other.ptr || self.as_str() == other.as_str()
    }
}

impl Eq for ThinStr {}

impl PartialOrd for ThinStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ThinStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.ptr == other.ptr {
            return std::cmp::Ordering::Equal;
        }
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for ThinStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for ThinStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl serde::Serialize for ThinStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ThinStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = ThinStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ThinStr, E> {
                Ok(ThinStr::new(v))
            }
        }
        d.deserialize_str(Text)
    }
}

/// Values a [`TaggedThinStr`] can carry beside its string.
pub(crate) const TAGS: u8 = 4;

/// A [`ThinStr`] and a tag below [`TAGS`] in one 8-byte pointer: the allocation is 8-aligned,
/// so the two low bits of its address are free. Equality, order and hash are those of the pair
/// (tag, text). For the deadline index (issue 15: 16 bytes an entry instead of 24).
pub(crate) struct TaggedThinStr {
    ptr: NonNull<u8>,
}

// SAFETY: as for `ThinStr`, which this is with a tag.
unsafe impl Send for TaggedThinStr {}
// SAFETY: as above.
unsafe impl Sync for TaggedThinStr {}

const TAG_MASK: usize = (TAGS - 1) as usize;
const _: () = assert!(
    TAGS.is_power_of_two()
        && TAG_MASK < ALIGN
        && ALIGN >= std::mem::align_of::<AtomicU32>()
        && ALIGN >= std::mem::align_of::<u64>()
);

impl TaggedThinStr {
    /// `s` with `tag` (below [`TAGS`]).
    pub(crate) fn new(s: ThinStr, tag: u8) -> Self {
        assert!(tag < TAGS, "tag {tag} out of range");
        let s = ManuallyDrop::new(s);
        debug_assert_eq!(
            s.ptr.addr().get() & TAG_MASK,
            0,
            "allocations are 8-aligned"
        );
        TaggedThinStr {
            // The address stays non-zero: only low bits are set.
            ptr: s.ptr.map_addr(|a| a | usize::from(tag)),
        }
    }

    /// The tag.
    pub(crate) fn tag(&self) -> u8 {
        (self.ptr.addr().get() & TAG_MASK) as u8
    }

    /// The allocation's own pointer, without the tag.
    fn untagged(&self) -> NonNull<u8> {
        // The untagged address is the allocation's, which is non-zero.
        self.ptr
            .map_addr(|a| NonZeroUsize::new(a.get() & !TAG_MASK).unwrap_or(a))
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // SAFETY: this handle keeps the allocation alive for the borrow.
        unsafe { text(self.untagged()) }
    }

    /// A handle to the string, without the tag.
    pub(crate) fn thin(&self) -> ThinStr {
        // Borrow this handle's reference as a `ThinStr` without taking it, and clone that.
        let borrowed = ManuallyDrop::new(ThinStr {
            ptr: self.untagged(),
        });
        (*borrowed).clone()
    }
}

impl Clone for TaggedThinStr {
    fn clone(&self) -> Self {
        TaggedThinStr::new(self.thin(), self.tag())
    }
}

impl Drop for TaggedThinStr {
    fn drop(&mut self) {
        // Give this handle's reference back through `ThinStr`'s drop.
        drop(ThinStr {
            ptr: self.untagged(),
        });
    }
}

impl PartialEq for TaggedThinStr {
    fn eq(&self, other: &Self) -> bool {
        self.ptr == other.ptr || (self.tag(), self.as_str()) == (other.tag(), other.as_str())
    }
}

impl Eq for TaggedThinStr {}

impl PartialOrd for TaggedThinStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TaggedThinStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.ptr == other.ptr {
            return std::cmp::Ordering::Equal;
        }
        (self.tag(), self.as_str()).cmp(&(other.tag(), other.as_str()))
    }
}

impl Hash for TaggedThinStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.tag().hash(state);
        self.as_str().hash(state);
    }
}

impl fmt::Debug for TaggedThinStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("")
            .field(&self.tag())
            .field(&self.as_str())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of<T: Hash + ?Sized>(t: &T) -> u64 {
        let mut h = DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn holds_the_text_of_every_length_class() {
        let long = "x".repeat(LONG + 3);
        let boundary = "y".repeat(LONG - 1);
        let exact = "z".repeat(LONG);
        for s in [
            "",
            "a",
            "sip:user000000123@ims.example.org",
            "é∂ƒ",
            &boundary,
            &exact,
            &long,
        ] {
            let t = ThinStr::new(s);
            assert_eq!(t.as_str(), s);
            let c = t.clone();
            drop(t);
            assert_eq!(c.as_str(), s, "a clone outlives the original");
        }
    }

    #[test]
    fn equality_order_and_hash_are_the_texts() {
        let a = ThinStr::new("sip:a@example.org");
        let a2 = ThinStr::new("sip:a@example.org");
        let b = ThinStr::new("sip:b@example.org");
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert!(a < b && b > a2);
        assert_eq!(a.cmp(&a.clone()), std::cmp::Ordering::Equal);
        assert_eq!(hash_of(&a), hash_of(&a2));
        assert_eq!(hash_of(&a), hash_of("sip:a@example.org"));
        assert_eq!(
            hash_of(&a),
            hash_of(&std::sync::Arc::<str>::from("sip:a@example.org"))
        );
        assert_eq!(format!("{a:?}"), "\"sip:a@example.org\"");
        // Order agrees with `str`'s, prefixes included.
        let mut v: Vec<ThinStr> = ["b", "ab", "a", "", "ba"].map(ThinStr::new).into();
        v.sort();
        let texts: Vec<&str> = v.iter().map(ThinStr::as_str).collect();
        assert_eq!(texts, ["", "a", "ab", "b", "ba"]);
    }

    #[test]
    fn clones_share_until_the_cap_then_copy() {
        let a = ThinStr::new("shared");
        let b = a.clone();
        assert_eq!(a.ptr, b.ptr, "a clone shares the allocation");
        assert_eq!(a.count().load(Ordering::Relaxed), 2);
        drop(b);
        assert_eq!(a.count().load(Ordering::Relaxed), 1);
        // At the cap a clone is a copy: the count never grows past it.
        a.count().store(MAX_SHARED, Ordering::Relaxed);
        let c = a.clone();
        assert_ne!(a.ptr, c.ptr);
        assert_eq!(a, c);
        assert_eq!(a.count().load(Ordering::Relaxed), MAX_SHARED);
        assert_eq!(c.count().load(Ordering::Relaxed), 1);
        a.count().store(1, Ordering::Relaxed);
    }

    #[test]
    fn clones_and_drops_across_threads_free_once() {
        let a = ThinStr::new("sip:user000000123@ims.example.org");
        std::thread::scope(|s| {
            for _ in 0..4 {
                let a = &a;
                s.spawn(move || {
                    for _ in 0..10_000 {
                        let c = a.clone();
                        assert_eq!(c.as_str(), "sip:user000000123@ims.example.org");
                    }
                });
            }
        });
        assert_eq!(a.count().load(Ordering::Relaxed), 1);
    }

    #[test]
    fn round_trips_through_serde_as_a_plain_string() {
        let a = ThinStr::new("urn:uuid:00000000-0000-4000-8000-000000000123");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"urn:uuid:00000000-0000-4000-8000-000000000123\"");
        let back: ThinStr = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        // An escaped string (not borrowable from the input) too.
        let back: ThinStr = serde_json::from_str("\"a\\\"b\"").unwrap();
        assert_eq!(back.as_str(), "a\"b");
        assert!(serde_json::from_str::<ThinStr>("3").is_err());
    }

    #[test]
    fn a_handle_is_one_pointer_and_option_costs_nothing() {
        assert_eq!(std::mem::size_of::<ThinStr>(), 8);
        assert_eq!(std::mem::size_of::<Option<ThinStr>>(), 8);
    }

    #[test]
    fn a_tag_rides_in_the_pointer_and_orders_before_the_text() {
        assert_eq!(std::mem::size_of::<TaggedThinStr>(), 8);
        let a = ThinStr::new("sip:b@example.org");
        let tagged: Vec<TaggedThinStr> = (0..TAGS)
            .map(|t| TaggedThinStr::new(a.clone(), t))
            .collect();
        assert_eq!(a.count().load(Ordering::Relaxed), 1 + u32::from(TAGS));
        for (t, x) in tagged.iter().enumerate() {
            assert_eq!(usize::from(x.tag()), t);
            assert_eq!(x.as_str(), "sip:b@example.org");
            assert_eq!(x.thin(), a);
            assert_eq!(x.clone(), *x);
            assert_eq!(hash_of(&x.clone()), hash_of(x));
        }
        // (tag, text) order: a lower tag first whatever the text.
        let z = TaggedThinStr::new(ThinStr::new("sip:a@example.org"), 1);
        assert!(tagged[0] < z && z < tagged[1]);
        assert!(TaggedThinStr::new(ThinStr::new("sip:a@example.org"), 1) == z);
        assert_ne!(tagged[0], tagged[1]);
        drop(tagged);
        drop(z);
        assert_eq!(
            a.count().load(Ordering::Relaxed),
            1,
            "every tagged handle gave its count back"
        );
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_tag_beyond_the_spare_bits_is_refused() {
        let _ = TaggedThinStr::new(ThinStr::new("x"), TAGS);
    }
}

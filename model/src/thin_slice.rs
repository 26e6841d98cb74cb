//! An owned slice behind one 8-byte pointer, its length stored in front of the items (issue 15:
//! memory per binding).
//!
//! Each IMPU's entry holds its bindings in a slice of exactly their number. `Box<[T]>` is a
//! 16-byte handle (pointer and length) in the IMPU table's B-tree nodes, eleven slots a leaf;
//! [`ThinSlice`] is 8 bytes there and puts the length in the allocation, where glibc's 16-byte
//! rounding already left room for it (one binding: 96 bytes of item, 104 with the length, the
//! same 112-byte chunk). An empty slice allocates nothing.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// An owned, fixed-length slice of `T` behind one pointer (see the module docs).
pub(crate) struct ThinSlice<T> {
    /// The allocation: the length (`usize`) at offset 0, the items from [`ThinSlice::items`].
    /// `None` when empty.
    ptr: Option<NonNull<u8>>,
    _items: PhantomData<T>,
}

// SAFETY: a `ThinSlice<T>` owns its items as a `Box<[T]>` does.
unsafe impl<T: Send> Send for ThinSlice<T> {}
// SAFETY: as above; `&ThinSlice<T>` gives only `&T`.
unsafe impl<T: Sync> Sync for ThinSlice<T> {}

impl<T> ThinSlice<T> {
    /// The allocation for `n` items and where the first item is.
    fn layout(n: usize) -> (Layout, usize) {
        Layout::new::<usize>()
            .extend(Layout::array::<T>(n).expect("slice too long"))
            .map(|(l, offset)| (l.pad_to_align(), offset))
            .expect("slice too long")
    }

    /// The items of `v`, in an allocation of exactly their number.
    pub(crate) fn from_vec(mut v: Vec<T>) -> Self {
        let n = v.len();
        if n == 0 {
            return ThinSlice::default();
        }
        let (layout, offset) = Self::layout(n);
        // SAFETY: `layout` has a non-zero size (the length alone is 8 bytes). The length is
        // written at offset 0 (`usize`-aligned, as the layout is), the `n` items moved to
        // `offset` (`T`-aligned by `Layout::extend`); `v` then forgets them (`set_len(0)`), so
        // each item has exactly one owner.
        unsafe {
            let p = alloc(layout);
            let Some(ptr) = NonNull::new(p) else {
                handle_alloc_error(layout)
            };
            p.cast::<usize>().write(n);
            std::ptr::copy_nonoverlapping(v.as_ptr(), p.add(offset).cast::<T>(), n);
            v.set_len(0);
            ThinSlice {
                ptr: Some(ptr),
                _items: PhantomData,
            }
        }
    }

    /// The items as a vector (one allocation of `n` plus `extra` items), freeing this one.
    pub(crate) fn into_vec(self, extra: usize) -> Vec<T> {
        let n = self.len();
        // Checked: a wrapped sum would give a vector too small for the `n` items copied below.
        // Allocated while `self` still owns its items, so a panic here drops them.
        let mut v = Vec::with_capacity(n.checked_add(extra).expect("capacity overflow"));
        let this = std::mem::ManuallyDrop::new(self);
        let Some(ptr) = this.ptr else {
            return v;
        };
        let (layout, offset) = Self::layout(n);
        // SAFETY: the `n` items are moved out into `v` (whose capacity holds them) and the
        // allocation is freed without dropping them; `this` is never dropped.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr().add(offset).cast::<T>(), v.as_mut_ptr(), n);
            v.set_len(n);
            dealloc(ptr.as_ptr(), layout);
        }
        v
    }

    /// The number of items.
    pub(crate) fn len(&self) -> usize {
        match self.ptr {
            // SAFETY: the allocation starts with its length, written by `from_vec`.
            Some(p) => unsafe { p.as_ptr().cast::<usize>().read() },
            None => 0,
        }
    }

    /// Whether there is no item.
    pub(crate) fn is_empty(&self) -> bool {
        self.ptr.is_none()
    }

    /// The items.
    pub(crate) fn as_slice(&self) -> &[T] {
        match self.ptr {
            // SAFETY: `from_vec` put `len()` initialized items at the layout's offset; they live
            // as long as `self` and are shared only through `&self`.
            Some(p) => unsafe {
                let (_, offset) = Self::layout(self.len());
                std::slice::from_raw_parts(p.as_ptr().add(offset).cast::<T>(), self.len())
            },
            None => &[],
        }
    }

    /// The items, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        match self.ptr {
            // SAFETY: as in `as_slice`, with `&mut self` for exclusive access.
            Some(p) => unsafe {
                let n = self.len();
                let (_, offset) = Self::layout(n);
                std::slice::from_raw_parts_mut(p.as_ptr().add(offset).cast::<T>(), n)
            },
            None => &mut [],
        }
    }

    /// The items, by reference.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }
}

impl<T> Default for ThinSlice<T> {
    fn default() -> Self {
        ThinSlice {
            ptr: None,
            _items: PhantomData,
        }
    }
}

impl<T> Drop for ThinSlice<T> {
    fn drop(&mut self) {
        let Some(ptr) = self.ptr.take() else {
            return;
        };
        /// Frees the allocation when dropped, also when an item's drop panics.
        struct Free(NonNull<u8>, Layout);
        impl Drop for Free {
            fn drop(&mut self) {
                // SAFETY: the allocation was made by `from_vec` with this layout, and its
                // items have been dropped in place.
                unsafe { dealloc(self.0.as_ptr(), self.1) }
            }
        }
        // SAFETY: the allocation starts with its length, written by `from_vec`.
        let n = unsafe { ptr.as_ptr().cast::<usize>().read() };
        let (layout, offset) = Self::layout(n);
        let _free = Free(ptr, layout);
        // SAFETY: the `n` items at `offset` are initialized and owned by this slice alone
        // (`self.ptr` is now `None`, so nothing reads them again); each is dropped once.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                ptr.as_ptr().add(offset).cast::<T>(),
                n,
            ))
        }
    }
}

impl<T: Clone> Clone for ThinSlice<T> {
    fn clone(&self) -> Self {
        ThinSlice::from_vec(self.as_slice().to_vec())
    }
}

impl<T: PartialEq> PartialEq for ThinSlice<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Eq> Eq for ThinSlice<T> {}

impl<T: Hash> Hash for ThinSlice<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl<T: fmt::Debug> fmt::Debug for ThinSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl<T: serde::Serialize> serde::Serialize for ThinSlice<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ThinSlice<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(ThinSlice::from_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn holds_moves_and_gives_back_its_items() {
        let empty: ThinSlice<String> = ThinSlice::from_vec(vec![]);
        assert!(empty.is_empty() && empty.as_slice().is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(std::mem::size_of::<ThinSlice<String>>(), 8);
        let mut s = ThinSlice::from_vec(vec!["a".to_string(), "b".to_string()]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.as_slice(), ["a", "b"]);
        s.as_mut_slice()[1] = "c".to_string();
        assert_eq!(s.iter().cloned().collect::<Vec<_>>(), ["a", "c"]);
        let c = s.clone();
        assert_eq!(c, s);
        let mut v = s.into_vec(1);
        assert!(v.capacity() >= 3);
        v.insert(1, "x".to_string());
        let s = ThinSlice::from_vec(v);
        assert_eq!(s.as_slice(), ["a", "x", "c"]);
        assert_ne!(s, c);
        assert_eq!(format!("{s:?}"), r#"["a", "x", "c"]"#);
        assert_eq!(
            ThinSlice::<String>::default().into_vec(0),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_item_is_dropped_exactly_once() {
        let item = Rc::new(());
        let s = ThinSlice::from_vec(vec![item.clone(), item.clone(), item.clone()]);
        assert_eq!(Rc::strong_count(&item), 4);
        let c = s.clone();
        assert_eq!(Rc::strong_count(&item), 7);
        drop(s);
        assert_eq!(Rc::strong_count(&item), 4);
        let v = c.into_vec(0);
        assert_eq!(Rc::strong_count(&item), 4, "moved out, not dropped");
        drop(v);
        assert_eq!(Rc::strong_count(&item), 1);
    }

    #[test]
    #[should_panic(expected = "capacity overflow")]
    fn a_capacity_past_usize_panics_instead_of_overflowing() {
        let s = ThinSlice::from_vec(vec!["a".to_string(), "b".to_string()]);
        let _ = s.into_vec(usize::MAX - 1);
    }

    #[test]
    fn an_item_whose_drop_panics_still_frees_the_others_and_the_allocation() {
        struct Bomb {
            _item: Rc<()>,
            panics: bool,
        }
        impl Drop for Bomb {
            fn drop(&mut self) {
                if self.panics {
                    panic!("bomb");
                }
            }
        }
        let item = Rc::new(());
        let bomb = |panics| Bomb {
            _item: item.clone(),
            panics,
        };
        let s = ThinSlice::from_vec(vec![bomb(false), bomb(true), bomb(false)]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(s)));
        assert!(r.is_err());
        assert_eq!(Rc::strong_count(&item), 1, "every item was dropped");
    }

    #[test]
    fn items_of_any_alignment() {
        #[derive(Clone, Debug, PartialEq)]
        #[repr(align(32))]
        struct Wide(u8);
        let s = ThinSlice::from_vec(vec![Wide(1), Wide(2)]);
        assert_eq!(s.as_slice(), [Wide(1), Wide(2)]);
        assert_eq!(s.as_slice().as_ptr() as usize % 32, 0);
        let b = ThinSlice::from_vec(vec![1u8, 2, 3]);
        assert_eq!(b.as_slice(), [1, 2, 3]);
    }

    #[test]
    fn equality_hash_and_serde_are_the_slices() {
        use std::collections::hash_map::DefaultHasher;
        let h = |x: &dyn Fn(&mut DefaultHasher)| {
            let mut s = DefaultHasher::new();
            x(&mut s);
            s.finish()
        };
        let s = ThinSlice::from_vec(vec![1u32, 2]);
        assert_eq!(h(&|st| s.hash(st)), h(&|st| [1u32, 2][..].hash(st)));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "[1,2]");
        let back: ThinSlice<u32> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let none: ThinSlice<u32> = serde_json::from_str("[]").unwrap();
        assert!(none.is_empty());
    }
}

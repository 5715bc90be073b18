//! [`Buffer`]: owned bytes whose crate-allocated memory is aligned for O_DIRECT.

use std::{
    alloc::{self, Layout},
    fmt, io,
    ops::{Deref, DerefMut},
    ptr::{self, NonNull},
    slice,
};

/// The alignment of every buffer the crate allocates: a page, which satisfies the memory
/// alignment O_DIRECT asks of any device (logical blocks are at most 4 KiB).
pub const ALIGNMENT: usize = 4096;

/// Owned bytes handed to and returned by operations.
///
/// A `Buffer` made by the crate (reads, [`Buffer::zeroed`], the `From<&[u8]>` family) is
/// aligned to [`ALIGNMENT`], so it can be used with O_DIRECT as is. A `Buffer` made from a
/// `Vec<u8>` keeps the vector without copying; when such memory is not aligned and the
/// descriptor is O_DIRECT, the crate bounces it through aligned memory itself.
pub struct Buffer {
    repr: Repr,
}

enum Repr {
    /// Memory from `alloc(Layout(size, ALIGNMENT))` (or the cache of such blocks);
    /// `len <= cap <= size`, `[0, len)` initialised. `cap` is what was asked for,
    /// `size` what was allocated.
    Aligned {
        ptr: NonNull<u8>,
        len: usize,
        cap: usize,
        size: usize,
    },
    Vec(Vec<u8>),
}

// SAFETY: a `Buffer` uniquely owns its memory (no aliasing pointers escape except through
// `&self`/`&mut self` borrows), exactly like a `Vec<u8>`, which is Send and Sync.
unsafe impl Send for Buffer {}
// SAFETY: as above: shared references only give `&[u8]`.
unsafe impl Sync for Buffer {}

fn too_large(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("buffer of {len} bytes is too large to allocate"),
    )
}

impl Buffer {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Buffer {
        Buffer {
            repr: Repr::Vec(Vec::new()),
        }
    }

    /// `len` zero bytes, aligned to [`ALIGNMENT`].
    ///
    /// # Panics
    /// Like `vec![0; len]`, if the memory cannot be had; [`Buffer::try_zeroed`] reports it.
    pub fn zeroed(len: usize) -> Buffer {
        Self::try_zeroed(len).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `len` zero bytes, aligned to [`ALIGNMENT`], or an error of kind `InvalidInput` when
    /// so much memory cannot be had.
    ///
    /// # Errors
    /// `InvalidInput` when `len` exceeds `isize::MAX` or the allocator refuses it.
    pub fn try_zeroed(len: usize) -> io::Result<Buffer> {
        let mut b = Self::alloc(len, true)?;
        if let Repr::Aligned { len: l, .. } = &mut b.repr {
            *l = len;
        }
        Ok(b)
    }

    /// An empty buffer with room for `cap` bytes, aligned to [`ALIGNMENT`]: what
    /// [`File::read_at_into`](crate::File::read_at_into) fills.
    ///
    /// ```
    /// let b = caio::Buffer::with_capacity(4096);
    /// assert_eq!((b.len(), b.capacity()), (0, 4096));
    /// assert!(b.is_aligned_to(caio::ALIGNMENT));
    /// ```
    ///
    /// # Panics
    /// Like `Vec::with_capacity`, if the memory cannot be had.
    pub fn with_capacity(cap: usize) -> Buffer {
        Self::with_capacity_aligned(cap).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An aligned buffer with room for `cap` bytes and length 0 (crate use: reads).
    pub(crate) fn with_capacity_aligned(cap: usize) -> io::Result<Buffer> {
        Self::alloc(cap, false)
    }

    fn alloc(cap: usize, zero: bool) -> io::Result<Buffer> {
        if cap == 0 {
            return Ok(Buffer::new());
        }
        let Some((class, size)) = size_class(cap) else {
            return Self::alloc_fresh(cap, cap, zero);
        };
        match cache::take(class) {
            Some(ptr) => {
                if zero {
                    // SAFETY: a cached block is `size` writable bytes we own.
                    unsafe { ptr::write_bytes(ptr.as_ptr(), 0, size) };
                }
                Ok(Self::aligned(ptr, cap, size))
            }
            None => Self::alloc_fresh(cap, size, zero),
        }
    }

    fn alloc_fresh(cap: usize, size: usize, zero: bool) -> io::Result<Buffer> {
        let layout = Layout::from_size_align(size, ALIGNMENT).map_err(|_| too_large(cap))?;
        // SAFETY: `layout` has a non-zero size (size >= cap > 0).
        let raw = unsafe {
            if zero {
                alloc::alloc_zeroed(layout)
            } else {
                alloc::alloc(layout)
            }
        };
        let ptr = NonNull::new(raw).ok_or_else(|| too_large(cap))?;
        Ok(Self::aligned(ptr, cap, size))
    }

    /// An empty buffer over an aligned block of `size >= cap` bytes.
    fn aligned(ptr: NonNull<u8>, cap: usize, size: usize) -> Buffer {
        Buffer {
            repr: Repr::Aligned {
                ptr,
                len: 0,
                cap,
                size,
            },
        }
    }

    /// The bytes as a `Vec<u8>` (without copying when the buffer was made from one).
    pub fn into_vec(mut self) -> Vec<u8> {
        match &mut self.repr {
            Repr::Vec(v) => std::mem::take(v),
            Repr::Aligned { .. } => self.as_ref().to_vec(),
        }
    }

    /// How many bytes fit without reallocating.
    pub fn capacity(&self) -> usize {
        match &self.repr {
            Repr::Aligned { cap, .. } => *cap,
            Repr::Vec(v) => v.capacity(),
        }
    }

    /// Whether the start of the bytes is aligned to `align` (a power of two).
    pub fn is_aligned_to(&self, align: usize) -> bool {
        (self.as_ptr() as usize) % align.max(1) == 0
    }

    /// Shortens the buffer to `len` bytes; no effect when it is not longer.
    pub fn truncate(&mut self, len: usize) {
        match &mut self.repr {
            Repr::Aligned { len: l, .. } => *l = (*l).min(len),
            Repr::Vec(v) => v.truncate(len),
        }
    }

    /// Appends as much of `data` as fits in the spare capacity (`capacity - len`) and
    /// returns how much: unlike `Vec`'s, it never reallocates, so a reused buffer keeps its
    /// memory (and its alignment).
    ///
    /// ```
    /// let mut b = caio::Buffer::with_capacity(4);
    /// assert_eq!(b.extend_from_slice(b"abcdef"), 4);
    /// assert_eq!(&b[..], b"abcd");
    /// ```
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let (dst, room) = self.spare_ptr();
        let n = room.min(data.len());
        // SAFETY: `dst` has `room >= n` writable bytes owned by `self`, disjoint from `data`
        // (which `&mut self` cannot alias); they are written before `advance(n)`.
        unsafe {
            ptr::copy_nonoverlapping(data.as_ptr(), dst, n);
            self.advance(n);
        }
        n
    }

    /// Empties the buffer, keeping its memory.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Pointer to the start of the spare capacity (`capacity - len` bytes), for the kernel
    /// or a worker to fill.
    pub(crate) fn spare_ptr(&mut self) -> (*mut u8, usize) {
        match &mut self.repr {
            Repr::Aligned { ptr, len, cap, .. } => {
                // SAFETY: `len <= cap`, so the result stays inside (or one past) the allocation.
                (unsafe { ptr.as_ptr().add(*len) }, *cap - *len)
            }
            Repr::Vec(v) => {
                let spare = v.spare_capacity_mut();
                (spare.as_mut_ptr().cast(), spare.len())
            }
        }
    }

    /// Marks `n` more bytes of the spare capacity as initialised.
    ///
    /// # Safety
    /// The first `n` bytes at [`Buffer::spare_ptr`] must have been written, and
    /// `n <= capacity - len`.
    pub(crate) unsafe fn advance(&mut self, n: usize) {
        match &mut self.repr {
            Repr::Aligned { len, cap, .. } => {
                debug_assert!(*len + n <= *cap);
                *len += n;
            }
            Repr::Vec(v) => {
                let new = v.len() + n;
                // SAFETY: the caller wrote these bytes, within capacity.
                unsafe { v.set_len(new) }
            }
        }
    }
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer::new()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Repr::Aligned { ptr, size, .. } = self.repr {
            if matches!(size_class(size), Some((class, s)) if s == size && cache::give(class, ptr))
            {
                return;
            }
            // SAFETY: allocated in `alloc_fresh` with exactly this layout, freed once.
            unsafe {
                alloc::dealloc(
                    ptr.as_ptr(),
                    Layout::from_size_align_unchecked(size, ALIGNMENT),
                )
            }
        }
    }
}

/// Capacities up to 1 MiB are rounded up to a power of two from 4 KiB, and freed blocks
/// of those sizes are kept for reuse (at most 4 MiB per size): aligned allocation is slow
/// in most allocators, and an I/O loop frees and allocates the same sizes all the time.
const CLASSES: usize = 9; // 4 KiB ..= 1 MiB

fn size_class(cap: usize) -> Option<(usize, usize)> {
    let size = cap.max(ALIGNMENT).checked_next_power_of_two()?;
    let class = (size.trailing_zeros() - ALIGNMENT.trailing_zeros()) as usize;
    (class < CLASSES).then_some((class, size))
}

mod cache {
    use std::{
        ptr::NonNull,
        sync::{Mutex, MutexGuard, TryLockError},
    };

    use super::CLASSES;

    /// At most this many bytes are kept per size class.
    const BYTES_PER_CLASS: usize = 4 << 20;

    struct Block(NonNull<u8>);
    // SAFETY: a cached block is owned by the cache alone; no reference to it exists.
    unsafe impl Send for Block {}

    static CACHE: [Mutex<Vec<Block>>; CLASSES] = [const { Mutex::new(Vec::new()) }; CLASSES];

    /// The class's blocks, unless another thread has them now: a cache may be passed by.
    /// Never waiting also keeps a child after `fork()` from waiting forever on a lock a
    /// thread of its parent held at that instant.
    fn class(class: usize) -> Option<MutexGuard<'static, Vec<Block>>> {
        match CACHE[class].try_lock() {
            Ok(g) => Some(g),
            // Push and pop leave the vector valid whatever panicked: poison carries nothing.
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn limit(class: usize) -> usize {
        BYTES_PER_CLASS >> (class + 12)
    }

    pub(super) fn take(c: usize) -> Option<NonNull<u8>> {
        class(c)?.pop().map(|b| b.0)
    }

    /// Keeps `ptr` (a block of this class's size); false when the class is full.
    pub(super) fn give(c: usize, ptr: NonNull<u8>) -> bool {
        let Some(mut v) = class(c) else {
            return false;
        };
        if v.len() >= limit(c) {
            return false;
        }
        if v.capacity() == 0 {
            v.reserve_exact(limit(c));
        }
        v.push(Block(ptr));
        true
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.repr {
            // SAFETY: `[0, len)` is initialised and owned by `self`.
            Repr::Aligned { ptr, len, .. } => unsafe { slice::from_raw_parts(ptr.as_ptr(), *len) },
            Repr::Vec(v) => v,
        }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.repr {
            // SAFETY: `[0, len)` is initialised and uniquely borrowed through `&mut self`.
            Repr::Aligned { ptr, len, .. } => unsafe {
                slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
            Repr::Vec(v) => v,
        }
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for Buffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Self {
        Buffer::from(&self[..])
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 32;
        let mut d = f.debug_struct("Buffer");
        d.field("len", &self.len());
        if self.len() <= SHOWN {
            d.field("bytes", &&self[..]);
        } else {
            d.field("head", &&self[..SHOWN]);
        }
        d.finish()
    }
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Eq for Buffer {}

impl PartialEq<[u8]> for Buffer {
    fn eq(&self, other: &[u8]) -> bool {
        self[..] == *other
    }
}

impl PartialEq<&[u8]> for Buffer {
    fn eq(&self, other: &&[u8]) -> bool {
        self[..] == **other
    }
}

impl PartialEq<Vec<u8>> for Buffer {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self[..] == other[..]
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Self {
        Buffer { repr: Repr::Vec(v) }
    }
}

impl From<&[u8]> for Buffer {
    /// Copies into aligned memory.
    fn from(s: &[u8]) -> Self {
        let mut b = Buffer::alloc(s.len(), false).unwrap_or_else(|e| panic!("{e}"));
        let (dst, room) = b.spare_ptr();
        debug_assert!(room >= s.len());
        // SAFETY: `dst` has room for `s.len()` bytes and does not overlap `s`.
        unsafe {
            ptr::copy_nonoverlapping(s.as_ptr(), dst, s.len());
            b.advance(s.len());
        }
        b
    }
}

impl<const N: usize> From<&[u8; N]> for Buffer {
    fn from(s: &[u8; N]) -> Self {
        Buffer::from(&s[..])
    }
}

impl From<&str> for Buffer {
    fn from(s: &str) -> Self {
        Buffer::from(s.as_bytes())
    }
}

impl From<String> for Buffer {
    fn from(s: String) -> Self {
        Buffer::from(s.into_bytes())
    }
}

impl From<&String> for Buffer {
    fn from(s: &String) -> Self {
        Buffer::from(s.as_bytes())
    }
}

impl From<&Vec<u8>> for Buffer {
    fn from(v: &Vec<u8>) -> Self {
        Buffer::from(&v[..])
    }
}

impl From<Buffer> for Vec<u8> {
    fn from(b: Buffer) -> Vec<u8> {
        b.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_to_powers_of_two() {
        assert_eq!(size_class(1), Some((0, 4096)));
        assert_eq!(size_class(4096), Some((0, 4096)));
        assert_eq!(size_class(4097), Some((1, 8192)));
        assert_eq!(size_class(1 << 20), Some((8, 1 << 20)));
        assert_eq!(size_class((1 << 20) + 1), None);
        assert_eq!(size_class(usize::MAX), None);
    }

    #[test]
    fn recycled_blocks_are_zeroed_when_asked() {
        for _ in 0..3 {
            let mut b = Buffer::zeroed(5000);
            assert_eq!((b.len(), b.capacity()), (5000, 5000));
            assert!(b.iter().all(|&x| x == 0));
            b.fill(0xEE);
        }
        let mut b = Buffer::with_capacity_aligned(100).unwrap();
        assert!(b.capacity() == 100 && b.is_empty());
        let (_, room) = b.spare_ptr();
        assert_eq!(room, b.capacity());
    }

    #[test]
    fn crate_allocations_are_aligned() {
        for len in [1, 17, 4096, 65537] {
            assert!(Buffer::zeroed(len).is_aligned_to(ALIGNMENT));
            assert!(Buffer::from(&vec![7u8; len][..]).is_aligned_to(ALIGNMENT));
            assert!(Buffer::with_capacity_aligned(len)
                .unwrap()
                .is_aligned_to(ALIGNMENT));
        }
    }

    #[test]
    fn conversions_keep_bytes() {
        assert_eq!(&Buffer::from("héllo")[..], "héllo".as_bytes());
        assert_eq!(&Buffer::from(String::from("x"))[..], b"x");
        assert_eq!(&Buffer::from(b"abc")[..], b"abc");
        let v = vec![1u8, 2, 3];
        let p = v.as_ptr();
        let b = Buffer::from(v);
        let back = b.into_vec();
        assert_eq!(back.as_ptr(), p, "a Vec goes in and out without copying");
        assert_eq!(Buffer::from(&b"xyz"[..]).into_vec(), b"xyz");
        assert_eq!(Buffer::zeroed(3), Buffer::from(vec![0, 0, 0]));
        assert_eq!(Buffer::zeroed(0).len(), 0);
        assert_eq!(Buffer::new(), Buffer::from(Vec::new()));
    }

    #[test]
    fn clone_is_deep_and_equal() {
        let mut a = Buffer::from(vec![1u8; 100]);
        let b = a.clone();
        a[0] = 9;
        assert_ne!(a, b);
        assert_eq!(b[0], 1);
        assert!(b.is_aligned_to(ALIGNMENT));
    }

    #[test]
    fn absurd_sizes_are_errors() {
        for len in [usize::MAX, isize::MAX as usize, usize::MAX / 2 + 1] {
            let e = Buffer::try_zeroed(len).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(Buffer::with_capacity_aligned(len).is_err());
        }
    }

    #[test]
    fn spare_and_advance() {
        let mut b = Buffer::with_capacity_aligned(8).unwrap();
        let (p, room) = b.spare_ptr();
        assert_eq!(room, 8);
        // SAFETY: 3 bytes within capacity are written before `advance(3)`.
        unsafe {
            ptr::write_bytes(p, 5, 3);
            b.advance(3);
        }
        assert_eq!(&b[..], &[5, 5, 5]);
        b.truncate(1);
        assert_eq!(&b[..], &[5]);
        assert!(format!("{b:?}").contains("len: 1"));
    }
}

//! The module's allocator: Redis's own (so the module's memory counts in
//! `used_memory` and `maxmemory` governs it), wrapped to count the bytes the
//! module holds, for `module_bytes` in `SYNC.STATUS` and `INFO pgsync`.
//!
//! The count is of the bytes asked for (`Layout::size`), not of what the
//! allocator rounds them up to: exact for the module's own data, and one relaxed
//! atomic add or subtract per call, cheap enough for every allocation.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The live bytes of the module's global allocator.
static MODULE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// An allocator that counts the live bytes it hands out in `live`.
pub struct Counting<A: 'static> {
    inner: A,
    live: &'static AtomicUsize,
}

impl<A> Counting<A> {
    /// The module's global allocator: `inner`, counted in [`module_bytes`]
    /// (unit tests use the system allocator uncounted).
    #[cfg(not(test))]
    pub const fn global(inner: A) -> Self {
        Counting { inner, live: &MODULE_BYTES }
    }

    /// `inner`, counted in `live` (for unit tests, whose allocations are not the module's).
    #[cfg(test)]
    pub const fn counted_in(inner: A, live: &'static AtomicUsize) -> Self {
        Counting { inner, live }
    }
}

/// Bytes the module holds right now (its heap: queue, batches, buffers).
pub fn module_bytes() -> usize {
    MODULE_BYTES.load(Ordering::Relaxed)
}

// SAFETY: every call is forwarded unchanged to `inner`, which upholds the
// contract; the wrapper only counts, after a successful call.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = self.inner.alloc(layout);
        if !ptr.is_null() {
            self.live.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = self.inner.alloc_zeroed(layout);
        if !ptr.is_null() {
            self.live.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.inner.dealloc(ptr, layout);
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = self.inner.realloc(ptr, layout, new_size);
        if !new.is_null() {
            // On failure the old block stays allocated, and counted.
            if new_size >= layout.size() {
                self.live.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                self.live.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

/// The unit tests' global allocator: the system one, counting per thread the
/// bytes each thread holds (allocated minus freed), so that a test can measure
/// what a structure it builds costs while other tests run on other threads.
#[cfg(test)]
pub mod per_thread {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        // `const`: reading it never allocates, so the allocator may use it.
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    /// Bytes this thread allocated and has not freed (negative when it freed
    /// others' blocks).
    pub fn live() -> isize {
        LIVE.with(Cell::get)
    }

    /// What `build` built, and the bytes it left allocated on this thread.
    pub fn heap_of<T>(build: impl FnOnce() -> T) -> (T, isize) {
        let before = live();
        let built = build();
        (built, live() - before)
    }

    fn count(delta: isize) {
        // During a thread's teardown the counter may be gone: skip the count.
        let _ = LIVE.try_with(|live| live.set(live.get() + delta));
    }

    /// The system allocator, counted per thread in [`live`].
    pub struct PerThread;

    // SAFETY: every call is forwarded unchanged to `System`; the wrapper only counts.
    unsafe impl GlobalAlloc for PerThread {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let ptr = System.alloc(layout);
            if !ptr.is_null() {
                count(layout.size() as isize);
            }
            ptr
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let ptr = System.alloc_zeroed(layout);
            if !ptr.is_null() {
                count(layout.size() as isize);
            }
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout);
            count(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let new = System.realloc(ptr, layout, new_size);
            if !new.is_null() {
                count(new_size as isize - layout.size() as isize);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Counting;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn counts_live_bytes_through_alloc_realloc_and_dealloc() {
        static LIVE: AtomicUsize = AtomicUsize::new(0);
        let counting = Counting::counted_in(System, &LIVE);
        let layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: each block is freed once, with the layout it has at that time.
        unsafe {
            let a = counting.alloc(layout);
            let b = counting.alloc_zeroed(layout);
            assert_eq!(LIVE.load(Ordering::Relaxed), 200);
            let a = counting.realloc(a, layout, 1000);
            assert_eq!(LIVE.load(Ordering::Relaxed), 1100);
            let a = counting.realloc(a, Layout::from_size_align(1000, 8).unwrap(), 10);
            assert_eq!(LIVE.load(Ordering::Relaxed), 110);
            counting.dealloc(a, Layout::from_size_align(10, 8).unwrap());
            counting.dealloc(b, layout);
        }
        assert_eq!(LIVE.load(Ordering::Relaxed), 0);
    }
}

//! Allocation counting for the hot-path test: in test builds a counting global
//! allocator tallies, per thread, the heap allocations made by our code and, apart,
//! those made inside str0m (a call made under [`foreign`]). The test thread's counts
//! are its own, so tests running in parallel do not disturb them. In other builds
//! [`foreign`] is a no-op and nothing is counted.

/// While the returned guard lives, this thread's allocations count as str0m's.
#[cfg(not(test))]
#[inline(always)]
pub(super) fn foreign() -> Foreign {
    Foreign
}

#[cfg(not(test))]
pub(super) struct Foreign;

#[cfg(test)]
pub(super) use counting::{Counts, counts, foreign};

#[cfg(test)]
#[allow(unsafe_code)] // a GlobalAlloc impl; it only forwards to the system allocator
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static OURS: Cell<u64> = const { Cell::new(0) };
        static THEIRS: Cell<u64> = const { Cell::new(0) };
        static IN_FOREIGN: Cell<bool> = const { Cell::new(false) };
    }

    struct Counting;

    fn count() {
        let foreign = IN_FOREIGN.try_with(Cell::get).unwrap_or(false);
        let cell = if foreign { &THEIRS } else { &OURS };
        let _ = cell.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: every call is forwarded unchanged to `System`; counting touches only
    // const-initialised thread-locals, which never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// This thread's allocations so far.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Counts {
        pub(crate) ours: u64,
        pub(crate) str0m: u64,
    }

    pub(crate) fn counts() -> Counts {
        Counts { ours: OURS.with(Cell::get), str0m: THEIRS.with(Cell::get) }
    }

    pub(crate) struct Foreign(bool);

    pub(crate) fn foreign() -> Foreign {
        Foreign(IN_FOREIGN.with(|f| f.replace(true)))
    }

    impl Drop for Foreign {
        fn drop(&mut self) {
            IN_FOREIGN.with(|f| f.set(self.0));
        }
    }
}

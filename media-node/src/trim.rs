//! Returning freed memory to the kernel after a burst of connections.
//!
//! glibc's allocator gives memory back to the kernel only from the top of a heap, so the
//! buffers of 10,000 connections that have all closed stay resident, scattered among
//! the chunks still in use (bench/held_connections.py: 10.4 MiB before, 150.5 MiB after
//! they closed, 242 MiB after four rounds; `MALLOC_ARENA_MAX=1` gives the same). None
//! of it is leaked: `malloc_trim(0)`, which releases every free page inside the heaps
//! too, brings the node back to 11.9 MiB. The signaling server calls [`trim`] when its
//! load drops, at least half of its connections closed ([`Trimmer`]), so the RSS a
//! memory limit sees follows the load.
//! This is the only `unsafe` in media-node.

use std::time::Duration;

/// How often the signaling server looks at its connection count.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// Fewer closed connections than this are never worth a trim.
const AFTER_CLOSED: usize = 16;

/// Decides when the connections that closed since the last look make a trim worth it.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    peak: usize,
}

impl Trimmer {
    /// One more connection is open: `open` in all.
    pub(crate) fn opened(&mut self, open: usize) {
        self.peak = self.peak.max(open);
    }

    /// The periodic look, with `open` connections now: true when the load has dropped
    /// (at least half of the peak since the last look has closed, and more than a few),
    /// so the freed memory should go back. The peak starts again here.
    pub(crate) fn look(&mut self, open: usize) -> bool {
        let closed = self.peak.saturating_sub(open);
        let peak = std::mem::replace(&mut self.peak, open);
        closed >= AFTER_CLOSED && closed * 2 >= peak
    }
}

/// Release the allocator's free memory to the kernel; false where that is not supported.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn trim() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim has no preconditions: it takes the allocator's own locks and
    // only returns pages that hold no allocation.
    unsafe { malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_many_closed_connections_only() {
        let mut t = Trimmer::default();
        for open in 1..=1500 {
            t.opened(open);
        }
        assert!(!t.look(1000), "a third of the peak closed: the load goes on");
        assert!(!t.look(1000), "none closed since the last look");
        t.opened(1001);
        assert!(t.look(300), "701 of 1001 closed");
        assert!(!t.look(290), "only 10 closed");
        t.opened(40);
        assert!(t.look(0), "the last 40 closed");
    }

    #[test]
    fn freed_memory_goes_back_to_the_kernel() {
        // 64 MiB in small blocks; three of every four freed, the fourth kept, so the free
        // runs sit between live blocks where free() itself never returns them.
        let mut blocks: Vec<Vec<u8>> = (0..16 * 1024).map(|i| vec![i as u8; 4096]).collect();
        let mut i = 0;
        blocks.retain(|_| {
            i += 1;
            i % 4 == 0
        });
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(trim(), "glibc released the free runs");
        }
        assert_eq!(blocks.len(), 4096);
    }
}

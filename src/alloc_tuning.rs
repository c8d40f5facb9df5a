//! Keep freed memory in the process between iterations.
//!
//! A training iteration builds a tape of tens of MB and drops it; glibc's malloc then trims the
//! freed heap back to the OS and the next iteration pays a page fault plus a kernel page-clear per
//! 4 KiB again (measured: ~15 % of an iteration). Raising the trim and mmap thresholds keeps those
//! pages mapped. This changes no value computed, only where memory comes from.
//!
//! The thresholds govern only the main arena. The trainer's shard threads would each get an
//! arena of their own, whose heaps glibc caps at 64 MiB, so their larger buffers (an LGCP shard's
//! [B/2, T, D] states are 96 MB) were mmapped and unmapped every iteration regardless: on LGCP,
//! 1.40 M page faults over a 4-iteration run, 13 % of a profile in the kernel's page clearing.
//! One arena for all threads brings that to 0.62 M (the first touch of the heap).

/// Raise glibc's trim/mmap thresholds once per process (no-op elsewhere).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            const M_ARENA_MAX: i32 = -8;
            // SAFETY: mallopt only changes allocator tuning parameters; called before the
            // training threads allocate (so none has an arena of its own yet), with documented
            // parameter codes from <malloc.h>.
            unsafe {
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
                mallopt(M_MMAP_THRESHOLD, 1 << 30);
                mallopt(M_ARENA_MAX, 1);
            }
        });
    }
}

/// Give freed memory back to the OS now (glibc `malloc_trim`): called between training, whose
/// tapes [`keep_freed_memory`] keeps mapped, and the final evaluation, whose exact-W2 cost matrix
/// (n² f64, 32 MB at n = 2000) would otherwise stack on top of them in the peak RSS.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe {
            malloc_trim(0);
        }
    }
}

//! audit-service's global allocator, mimalloc, and the option it sets in
//! code rather than through the environment, so that every way of running
//! the service gets it.

pub use mimalloc::MiMalloc;

/// mimalloc v3 gives freed memory back to the system 1 s after it is freed
/// (`purge_delay`). Under batch ingest, 64 clients of 100 events a request,
/// that second of garbage was a third of the peak: 70-89 MiB peak RSS
/// against 57-59 MiB with 10 ms, on SQLite and on PostgreSQL, at the same
/// rate within noise. Giving it back at once (0) took another 2.5-3.5 MiB
/// off the peak (batch ingest with the transparency log on: 62.6-62.9 MiB
/// with 10 ms, 58.8-59.5 with 0; off: 55.3-55.9 against 52.6-53.5), again
/// at the same rate, and no slower on the single-event sink in alternated
/// runs. `MIMALLOC_PURGE_DELAY` still wins.
///
/// Call it first thing in `main`, before any other thread runs: mimalloc's
/// options are not meant to change under a running thread.
pub fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: stores a number mimalloc reads; the caller runs it before
        // any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS)
        };
    }
}

const PURGE_DELAY_MS: std::ffi::c_long = 0;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t`, which the
/// bindings do not name (test `the_option_number_is_purge_delay`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[cfg(test)]
mod tests {
    use super::*;

    /// Of the options around it, only `purge_delay` defaults to 1,000: a
    /// mimalloc whose numbering moved fails here, not in production. Where
    /// `MIMALLOC_PURGE_DELAY` is set, mimalloc holds that value instead.
    #[test]
    fn the_option_number_is_purge_delay() {
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1000);
        // SAFETY: reads a number.
        #[allow(unsafe_code)]
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, expected);
    }
}

//! Crash points: where the tests kill a process at an exact step of a protocol.
//!
//! `crash::point("writeback.intent_recorded")` does nothing unless the binary was built with the
//! `crash-points` feature (only the end-to-end test crate turns it on, so `cargo build
//! --workspace`, which the tests run, has it, and a release build of a service has not) and
//! `PIPELINE_CRASH_AT` names that point. Then the process aborts on the spot, as `kill -9` would
//! between two steps: no destructor runs, no lease is released, nothing more is sent.

/// Aborts the process here when `PIPELINE_CRASH_AT` is `name` (with the `crash-points` feature).
pub fn point(name: &str) {
    #[cfg(feature = "crash-points")]
    if std::env::var("PIPELINE_CRASH_AT").is_ok_and(|at| at == name) {
        eprintln!("PIPELINE_CRASH_AT={name}: aborting here");
        std::process::abort();
    }
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}

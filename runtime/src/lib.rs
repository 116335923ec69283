//! Service plumbing shared by the binaries: logging, NATS connection and stream setup,
//! durable consumers, idle detection and shutdown signals. Stage logic lives in the stage crates.

pub mod batch;
pub mod crash;
pub mod durable;
pub mod health;
pub mod lease;
pub mod nats;
pub mod retry;
pub mod service;
pub mod telemetry;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` gives one JSON object
/// per line for log collectors.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once a stop was asked for (long retries give up then).
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Listens for SIGINT/SIGTERM from now on, on its own task, so a stop is noticed even while the
/// service is busy (a long retry, a start-up query). Call once, early in `main`'s runtime.
pub fn install_shutdown_handler() {
    tokio::spawn(shutdown_signal_twice());
}

/// Resolves once a stop was asked for (after [`install_shutdown_handler`]).
pub async fn stopped() {
    while !shutting_down() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Selects rustls's `ring` provider for every TLS connection of the process (NATS over TLS,
/// HTTPS to Qoo10, ClickHouse and webhooks). Needed because the workspace enables rustls with
/// more than one provider feature across crates, so rustls cannot pick one itself. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sleeps `d`, or less if a stop is asked for meanwhile (for backoff between retries).
pub async fn sleep_unless_stopping(d: std::time::Duration) {
    let end = tokio::time::Instant::now() + d;
    while !shutting_down() {
        let now = tokio::time::Instant::now();
        if now >= end {
            return;
        }
        tokio::time::sleep((end - now).min(std::time::Duration::from_millis(100))).await;
    }
}

/// Resolves on SIGINT or SIGTERM; from then on, a second signal ends the process at once
/// (exit 130) while the first one lets the work in flight finish.
pub async fn shutdown_signal_twice() {
    shutdown_signal().await;
    SHUTTING_DOWN.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("stopping: finishing the batch in flight (a second signal exits at once)");
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

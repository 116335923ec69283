//! What stands between the alert center and the rest of the network: when a token is required,
//! which `Host` names it answers, the headers on every answer, and the sign-in's throttle.
//!
//! The center can acknowledge alerts and, for write-back shops, set 発送予定日 on Qoo10. So:
//! - a token is required whenever a shop has write-back or the listener is not on loopback (the
//!   sink refuses to start otherwise, naming `sink.http_token`);
//! - a request for a `Host` the center does not serve is refused (421): a DNS-rebinding page
//!   reaches a loopback listener with the attacker's name in `Host`, which the same-origin check
//!   alone (`Origin` equal to `Host`) would let through;
//! - every answer forbids framing, sniffing, referrers and anything but its own inline styles;
//! - sign-in failures are counted per client address: after [`MAX_FAILURES`] within
//!   [`FAILURE_WINDOW`], further attempts get 429 until the window ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use schemas::config::PipelineConfig;

/// Sign-in failures allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// How long the sign-in cookie lasts (the page asks for the token again after it).
pub const COOKIE_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// The headers every answer of the center carries.
pub const HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    // Not `no-referrer`: with it a browser sends `Origin: null` on the page's own form posts.
    ("referrer-policy", "same-origin"),
];

pub fn add_headers(headers: &mut HeaderMap) {
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// The host part of an address or `Host` header (`127.0.0.1:9466` → `127.0.0.1`, `[::1]:80` →
/// `[::1]`), lower-cased.
pub fn host_name(text: &str) -> String {
    let t = text.trim();
    let host = if t.starts_with('[') {
        t.split_inclusive(']').next().unwrap_or(t)
    } else {
        match t.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => t,
        }
    };
    host.to_ascii_lowercase()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of a URL (`https://center.example.jp:8443/x` → `center.example.jp`).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    (!authority.is_empty()).then(|| host_name(authority))
}

/// The `Host` names the center answers: its listen address (a loopback or wildcard one also as
/// `localhost`, `127.0.0.1` and `[::1]`), `page_url`'s host, and `[sink] http_hosts`.
pub fn allowed_hosts(listen: &str, page_url: &str, extra: &[String]) -> Vec<String> {
    let mut hosts = vec![host_name(listen)];
    let listen_host = host_name(listen);
    if is_loopback(&listen_host) || listen_host == "0.0.0.0" || listen_host == "[::]" {
        hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
    }
    hosts.extend(url_host(page_url));
    hosts.extend(extra.iter().map(|h| host_name(h)));
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Why the center must not start as configured: (key, reason), or `None`.
pub fn exposure_problem(config: &PipelineConfig, listen: &str) -> Option<(String, String)> {
    if config.sink.http_token().is_some() {
        return None;
    }
    if let Some(shop) = config.shops.iter().find(|s| s.writeback) {
        let reason = format!(
            "required: shop {:?} has writeback = true, and the alert center's 発送予定日 fix reaches Qoo10",
            shop.id
        );
        return Some(("sink.http_token".into(), reason));
    }
    let host = host_name(listen);
    (!is_loopback(&host))
        .then(|| ("sink.http_token".into(), format!("required: the alert center listens on {listen}, beyond loopback")))
}

/// Failed sign-ins per client address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// `Some(wait)` while `client` must not try again.
    pub fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().expect("throttle");
        let (n, since) = failures.get(&client)?;
        let left = FAILURE_WINDOW.checked_sub(now.duration_since(*since)).filter(|l| !l.is_zero())?;
        (*n >= MAX_FAILURES).then_some(left)
    }

    pub fn failed(&self, client: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().expect("throttle");
        // Forget windows that ended (the map stays as small as the clients that try lately).
        failures.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
        let entry = failures.entry(client).or_insert((0, now));
        entry.0 += 1;
    }

    pub fn succeeded(&self, client: IpAddr) {
        self.failures.lock().expect("throttle").remove(&client);
    }
}

/// The sign-in cookie: HttpOnly, SameSite=Strict, `Secure` when the page is served over https,
/// for [`COOKIE_MAX_AGE`] (`value` empty: the sign-out, which ends it at once).
pub fn cookie(name: &str, value: &str, secure: bool) -> String {
    let age = if value.is_empty() { 0 } else { COOKIE_MAX_AGE.as_secs() };
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={age}{secure}")
}

/// The `Host` header of a request, as [`host_name`] gives it.
pub fn request_host(headers: &HeaderMap) -> Option<String> {
    headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(host_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> PipelineConfig {
        PipelineConfig::from_text(text, "pipeline.toml").unwrap()
    }

    #[test]
    fn a_token_is_required_for_write_back_or_beyond_loopback() {
        let wb = "[[shops]]\nid = \"a\"\nwriteback = true\n";
        let (key, why) = exposure_problem(&config(wb), "127.0.0.1:9466").expect("write-back needs a token");
        assert_eq!(key, "sink.http_token");
        assert!(why.contains("\"a\" has writeback = true"), "{why}");
        let open = exposure_problem(&config(""), "0.0.0.0:9466").expect("beyond loopback needs a token");
        assert!(open.1.contains("0.0.0.0:9466"), "{open:?}");
        assert!(exposure_problem(&config(""), "127.0.0.1:9466").is_none(), "read-only on loopback");
        assert!(exposure_problem(&config(""), "[::1]:9466").is_none());
        assert!(exposure_problem(&config("[sink]\nhttp_token = \"t-1\"\n"), "0.0.0.0:9466").is_none());
    }

    #[test]
    fn hosts_are_the_listen_address_the_page_url_and_the_configured_ones() {
        let hosts = allowed_hosts("127.0.0.1:9466", "https://Center.Example.jp:8443/x", &["ops.example.jp".into()]);
        assert_eq!(hosts, ["127.0.0.1", "[::1]", "center.example.jp", "localhost", "ops.example.jp"]);
        assert_eq!(allowed_hosts("10.0.0.5:9466", "http://10.0.0.5:9466/", &[]), ["10.0.0.5"]);
        assert_eq!(host_name("[::1]:9466"), "[::1]");
        assert_eq!(host_name("evil.example:80"), "evil.example");
        assert!(!allowed_hosts("127.0.0.1:9466", "http://127.0.0.1:9466/", &[]).contains(&"rebind.example".into()));
    }

    #[test]
    fn sign_in_failures_are_throttled_per_client_for_a_window() {
        let t = Throttle::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(t.blocked(a, start).is_none());
            t.failed(a, start);
        }
        assert!(t.blocked(a, start).is_some(), "blocked after {MAX_FAILURES} failures");
        assert!(t.blocked(b, start).is_none(), "another client is not");
        assert!(t.blocked(a, start + FAILURE_WINDOW).is_none(), "the window ends");
        t.succeeded(a);
        assert!(t.blocked(a, start).is_none());
    }

    #[test]
    fn the_cookie_expires_and_is_secure_over_https() {
        let c = cookie("c", "tok", true);
        assert!(c.contains("HttpOnly; SameSite=Strict; Path=/; Max-Age=43200; Secure"), "{c}");
        assert!(!cookie("c", "tok", false).contains("Secure"));
        assert!(cookie("c", "", false).contains("Max-Age=0"), "sign-out");
    }
}

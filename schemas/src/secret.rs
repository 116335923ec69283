//! Secrets (passwords, API keys, certification keys) that can never be printed by accident.

use std::fmt;

/// A secret string. `Debug` and `Display` print `<redacted>`; the only way to the value is
/// [`Secret::expose`], which makes each use visible in review.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Never log it, never put it in an error.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Serialized as `<redacted>`: printing a configuration never prints its secrets.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret as a configuration gives it: inline, as an environment variable's name, or as a
/// file's path (`<name>`, `<name>_env`, `<name>_file`). Exactly one may be set.
#[derive(Debug, Clone, Copy)]
pub struct SecretRef<'a> {
    /// The dotted key (`nats.password`), for errors.
    pub name: &'a str,
    pub value: Option<&'a Secret>,
    pub env: Option<&'a str>,
    pub file: Option<&'a std::path::Path>,
}

impl SecretRef<'_> {
    /// The secret (`None` when none of the three is set), or the key at fault and why.
    pub fn resolve(self) -> Result<Option<Secret>, (String, String)> {
        let name = self.name;
        let set = self.value.is_some() as u8 + self.env.is_some() as u8 + self.file.is_some() as u8;
        if set > 1 {
            return Err((name.to_owned(), format!("set only one of {name}, {name}_env, {name}_file")));
        }
        if let Some(v) = self.value {
            return Ok(Some(v.clone()));
        }
        if let Some(var) = self.env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                _ => Err((format!("{name}_env"), format!("environment variable {var} is not set"))),
            };
        }
        let Some(path) = self.file else { return Ok(None) };
        match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim_end_matches(['\n', '\r'])))),
            Ok(_) => Err((format!("{name}_file"), format!("{} is empty", path.display()))),
            Err(e) => Err((format!("{name}_file"), format!("cannot read {}: {e}", path.display()))),
        }
    }
}

/// Replaces every occurrence of each secret in `text` (and its URL-encoded form) with `<redacted>`.
/// Used on error texts that come from libraries which may echo a request URL back.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.is_empty() {
            continue;
        }
        out = out.replace(s.expose(), "<redacted>");
        let encoded = url_encode(s.expose());
        if encoded != s.expose() {
            out = out.replace(&encoded, "<redacted>");
        }
    }
    out
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn scrub_removes_plain_and_url_encoded_forms() {
        let s = Secret::new("a b/c");
        let text = "GET /x?pwd=a%20b%2Fc failed; also a b/c";
        assert_eq!(scrub(text, &[&s]), "GET /x?pwd=<redacted> failed; also <redacted>");
    }
}

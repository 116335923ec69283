//! User info in a URL (`nats://user:password@host`), taken out when the configuration is loaded.
//! A validated configuration never holds a URL with credentials, so nothing that logs, shows or
//! serializes a URL later (errors, `--print-config`, `Debug`, the status page) can leak one.

/// Credentials written in a URL: `user:password@` (password percent-decoded) or `token@`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub user: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for UserInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserInfo(***)")
    }
}

/// Where the authority of `url` starts and ends (after `scheme://`, before the path).
fn authority(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    Some((start, end))
}

/// `url` without its user info, and the user info if it had any.
pub fn split(url: &str) -> (String, Option<UserInfo>) {
    let Some((start, end)) = authority(url) else { return (url.to_owned(), None) };
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else { return (url.to_owned(), None) };
    let (user, password) = match url[start..at].split_once(':') {
        Some((u, p)) => (decode(u), Some(decode(p))),
        None => (decode(&url[start..at]), None),
    };
    (format!("{}{}", &url[..start], &url[at + 1..]), Some(UserInfo { user, password }))
}

/// `url` as it may be shown: user info replaced by `***`.
pub fn redact(url: &str) -> String {
    match split(url) {
        (_, None) => url.to_owned(),
        (_, Some(_)) => {
            let (start, end) = authority(url).expect("a URL with user info has an authority");
            let at = url[start..end].rfind('@').expect("user info ends at @") + start;
            format!("{}***{}", &url[..start], &url[at..])
        }
    }
}

/// Percent-decoding (`p%40ss` → `p@ss`); anything malformed is kept as written.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%').then(|| s.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_split_off_and_redacted() {
        let (url, info) = split("nats://app:p%40ss@10.0.0.1:4222");
        assert_eq!(url, "nats://10.0.0.1:4222");
        assert_eq!(info, Some(UserInfo { user: "app".into(), password: Some("p@ss".into()) }));
        assert_eq!(split("nats://s3cr3t@h:4222").1, Some(UserInfo { user: "s3cr3t".into(), password: None }));
        assert_eq!(split("http://h:8123/?a=b@c"), ("http://h:8123/?a=b@c".into(), None));
        assert_eq!(split("not a url"), ("not a url".into(), None));
        assert_eq!(redact("https://u:pw@ch.example:8443/x"), "https://***@ch.example:8443/x");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
        assert!(!format!("{:?}", split("nats://u:pw@h").1).contains("pw"));
    }
}

//! Secrets that cannot leak by accident: a URL whose password (or token) is replaced by `***`
//! whenever it is displayed, logged, serialised or debug-printed, and a string that never shows.

use std::fmt;

/// A URL that may carry credentials (`rtsp://user:pass@cam/…`, `nats://token@host`). Only
/// [`RedactedUrl::expose`] gives the real text, for the one call that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    pub fn new(url: impl Into<String>) -> RedactedUrl {
        RedactedUrl(url.into())
    }

    /// The URL with credentials, for connecting. Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its password: user names stay, passwords and tokens become `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// The URL with `user`/`password` put in (what a camera's `username` / `password_file`
    /// give), for connecting.
    pub fn with_credentials(&self, user: &str, password: &str) -> RedactedUrl {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                let _ = u.set_username(user);
                let _ = u.set_password(Some(password));
                RedactedUrl(u.to_string())
            }
            Err(_) => self.clone(),
        }
    }

    pub fn has_credentials(&self) -> bool {
        url::Url::parse(&self.0).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
    }
}

/// Replaces the password (or a user part that is a bare token, as NATS allows) of a URL with
/// `***`; text that is not a URL is returned with anything between `://` and `@` replaced.
pub fn redact(s: &str) -> String {
    if let Ok(mut u) = url::Url::parse(s) {
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
        } else if !u.username().is_empty() && (u.scheme().starts_with("nats") || u.scheme().starts_with("tls")) {
            let _ = u.set_username("***");
        }
        // credentials in a query (e.g. ?token=…, ?password=…)
        let pairs: Vec<(String, String)> = u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        if pairs.iter().any(|(k, _)| is_secret_key(k)) {
            let q: Vec<String> = pairs
                .iter()
                .map(|(k, v)| if is_secret_key(k) { format!("{k}=***") } else { format!("{k}={v}") })
                .collect();
            u.set_query(Some(&q.join("&")));
        }
        return u.to_string();
    }
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}***{}", &s[..a + 3], &s[b..]),
        _ => s.to_string(),
    }
}

/// The user name of a URL with a password (`nats://alice:pw@host` → `alice`); `None` without one
/// (a bare `nats://token@host` user part is a token, not a name).
pub fn url_user(s: &str) -> Option<String> {
    let u = url::Url::parse(s).ok()?;
    (u.password().is_some() && !u.username().is_empty()).then(|| u.username().to_string())
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["password", "passwd", "pass", "pwd", "token", "secret", "key", "auth", "signature"].iter().any(|s| k.contains(s))
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl serde::Serialize for RedactedUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> serde::Deserialize<'de> for RedactedUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RedactedUrl, D::Error> {
        Ok(RedactedUrl(String::deserialize(d)?))
    }
}

impl schemars::JsonSchema for RedactedUrl {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Url".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "uri" })
    }
}

/// A secret string (password, token, key): `***` whenever shown.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Largest secret file (password, token, seed, `.creds`) read.
pub const SECRET_FILE_MAX: u64 = 64 << 10;

/// A secret from the first line of a file (bounded, regular files only) or from an environment
/// variable; `None` when neither is given. Errors name the file or variable, never the value.
pub fn read_secret(file: Option<&std::path::Path>, env: Option<&str>) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    if let Some(p) = file {
        let t = super::fsx::read_text(p, SECRET_FILE_MAX)?;
        let line = t.lines().next().unwrap_or("").trim().to_string();
        if line.is_empty() {
            anyhow::bail!("{}: empty", p.display());
        }
        return Ok(Some(line));
    }
    if let Some(v) = env {
        return std::env::var(v).map(Some).with_context(|| format!("environment variable {v} is not set"));
    }
    Ok(None)
}

/// Chooses rustls's crypto provider (ring) for the process, once. Both ring and aws-lc-rs are
/// compiled in through dependencies, and rustls refuses to guess between them.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        let u = RedactedUrl::new("rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/101");
        assert_eq!(u.to_string(), "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&u).unwrap().contains("hunter2"));
        assert_eq!(u.expose(), "rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/101");
        assert_eq!(redact("nats://s3cr3t-token@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
        assert_eq!(redact("nats://bob:pw@127.0.0.1:4222"), "nats://bob:***@127.0.0.1:4222");
        assert_eq!(redact("https://h/x?token=abc&y=1"), "https://h/x?token=***&y=1");
        assert_eq!(redact("rtsp://cam/plain"), "rtsp://cam/plain");
        let c = RedactedUrl::new("rtsp://cam:554/live").with_credentials("ops", "p@ss:word");
        assert!(c.expose().contains("ops:p%40ss%3Aword@cam"), "{}", c.expose());
        assert_eq!(c.to_string(), "rtsp://ops:***@cam:554/live");
        assert_eq!(Secret::new("x").to_string(), "***");
    }
}

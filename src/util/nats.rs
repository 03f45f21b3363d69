//! Connecting to NATS: the URL(s) and `[publish.auth]` ([`NatsAuth`]: user and password, token,
//! nkey seed, `.creds` file, TLS with a CA file and a client certificate) become async-nats
//! connect options. Credentials in a URL (`nats://user:password@host`, `nats://token@host`) are
//! moved into the options, so the address async-nats is given (and may print) has none; secrets in
//! files or environment variables are read at connect time and never shown. TLS uses rustls with
//! the crypto provider chosen once for the process, so a `tls://` URL never panics.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::{RedactedUrl, read_secret};

/// `[publish.auth]`: how workers, the review service and `vigil check` authenticate to NATS and
/// secure the connection. At most one of: user + password, token, nkey seed, `.creds` file (or
/// credentials in the URL). Paths are relative to the pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// User name (with `password_file` or `password_env`).
    #[schemars(length(max = 256))]
    pub user: Option<String>,
    /// File whose first line is the user's password (keep it mode 0600).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the user's password.
    #[schemars(length(max = 128))]
    pub password_env: Option<String>,
    /// File whose first line is the server's authorization token.
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the authorization token.
    #[schemars(length(max = 128))]
    pub token_env: Option<String>,
    /// File holding a user nkey seed (`SU…`, from `nk -gen user`).
    pub nkey_seed_file: Option<PathBuf>,
    /// Credentials file (`.creds`: a user JWT and its nkey seed, from `nsc`).
    pub creds_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) that signed the server's certificate (beside the
    /// system roots).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a connection without TLS even for `nats://` URLs (a `tls://` URL always requires
    /// it).
    pub tls_required: bool,
}

impl NatsAuth {
    /// The auth with relative paths resolved by `resolve`.
    pub fn resolved(&self, resolve: impl Fn(&Path) -> PathBuf) -> NatsAuth {
        let r = |p: &Option<PathBuf>| p.as_deref().map(&resolve);
        NatsAuth {
            password_file: r(&self.password_file),
            token_file: r(&self.token_file),
            nkey_seed_file: r(&self.nkey_seed_file),
            creds_file: r(&self.creds_file),
            tls_ca_file: r(&self.tls_ca_file),
            tls_cert_file: r(&self.tls_cert_file),
            tls_key_file: r(&self.tls_key_file),
            ..self.clone()
        }
    }

    /// Problems as `(key under publish.auth, problem)`: methods that exclude each other, a
    /// password without a user, a certificate without its key, files that are not there,
    /// environment variables that are not set.
    pub fn check(&self, url_has_credentials: bool) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let password = self.password_file.is_some() || self.password_env.is_some();
        let token = self.token_file.is_some() || self.token_env.is_some();
        let methods: Vec<&str> = [
            (password || self.user.is_some(), "user + password"),
            (token, "token"),
            (self.nkey_seed_file.is_some(), "nkey_seed_file"),
            (self.creds_file.is_some(), "creds_file"),
            (url_has_credentials, "credentials in nats_url"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
        if methods.len() > 1 {
            out.push(("", format!("choose one way to authenticate, not {}", methods.join(" and "))));
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            out.push(("password_env", "give password_file or password_env, not both".into()));
        }
        if self.token_file.is_some() && self.token_env.is_some() {
            out.push(("token_env", "give token_file or token_env, not both".into()));
        }
        if password != self.user.is_some() {
            out.push(("user", "a user needs a password (password_file or password_env) and a password a user".into()));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            out.push(("tls_key_file", "a client certificate needs its key (tls_cert_file and tls_key_file)".into()));
        }
        for (key, p) in [
            ("password_file", &self.password_file),
            ("token_file", &self.token_file),
            ("nkey_seed_file", &self.nkey_seed_file),
            ("creds_file", &self.creds_file),
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ] {
            if let Some(p) = p
                && !p.is_file()
            {
                out.push((key, format!("{} is not a file", p.display())));
            }
        }
        for (key, v) in [("password_env", &self.password_env), ("token_env", &self.token_env)] {
            if let Some(v) = v
                && std::env::var_os(v).is_none()
            {
                out.push((key, format!("environment variable {v} is not set")));
            }
        }
        out
    }

    /// How this authenticates, for logs and `vigil check` (no secret).
    pub fn method(&self) -> &'static str {
        if self.user.is_some() {
            "user + password"
        } else if self.token_file.is_some() || self.token_env.is_some() {
            "token"
        } else if self.nkey_seed_file.is_some() {
            "nkey"
        } else if self.creds_file.is_some() {
            "creds file"
        } else {
            "none"
        }
    }
}

/// Where NATS is and how to authenticate to it: the URL(s) of `publish.nats_url` (comma-separated
/// for a cluster, possibly with credentials) and `[publish.auth]` with its paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub url: RedactedUrl,
    pub auth: NatsAuth,
}

impl Endpoint {
    pub fn new(url: &str, auth: NatsAuth) -> Endpoint {
        Endpoint { url: RedactedUrl::new(url), auth }
    }

    /// A URL alone (credentials, if any, in it).
    pub fn plain(url: &str) -> Endpoint {
        Endpoint::new(url, NatsAuth::default())
    }

    /// The server URLs of the comma-separated list, credentials included.
    fn urls(&self) -> impl Iterator<Item = &str> {
        self.url.expose().split(',').map(str::trim).filter(|u| !u.is_empty())
    }

    /// Whether a URL carries credentials (then `[publish.auth]` may not name a method too).
    pub fn url_has_credentials(&self) -> bool {
        self.urls().any(|u| RedactedUrl::new(u).has_credentials())
    }

    /// The user name connected as, when there is one (not a token): from `[publish.auth]` or
    /// the URL.
    pub fn user(&self) -> Option<String> {
        self.auth.user.clone().or_else(|| self.urls().find_map(super::secret::url_user))
    }

    /// The URL(s) as they may be shown.
    pub fn shown(&self) -> String {
        self.urls().map(super::secret::redact).collect::<Vec<_>>().join(",")
    }

    /// Connect options with every credential and TLS setting, and the server list without
    /// credentials. Errors name the file or variable that could not be read, never a secret.
    pub fn options(&self) -> Result<(async_nats::ConnectOptions, Vec<String>)> {
        super::secret::install_crypto_provider();
        let mut opts = async_nats::ConnectOptions::new();
        let mut bare = Vec::new();
        let mut tls = self.auth.tls_required;
        for raw in self.urls() {
            let Ok(mut u) = url::Url::parse(raw) else {
                bare.push(raw.to_string());
                continue;
            };
            tls |= u.scheme() == "tls" || u.scheme() == "wss";
            let user = percent(u.username());
            let password = u.password().map(percent);
            opts = match (user.is_empty(), password) {
                (false, Some(p)) => opts.user_and_password(user, p),
                (false, None) => opts.token(user),
                (true, Some(p)) => opts.token(p),
                (true, None) => opts,
            };
            let _ = u.set_username("");
            let _ = u.set_password(None);
            bare.push(u.to_string());
        }
        let a = &self.auth;
        if let Some(user) = &a.user {
            let pw = read_secret(a.password_file.as_deref(), a.password_env.as_deref())?
                .context("a NATS user needs a password")?;
            opts = opts.user_and_password(user.clone(), pw);
        }
        if let Some(t) = read_secret(a.token_file.as_deref(), a.token_env.as_deref())? {
            opts = opts.token(t);
        }
        if let Some(f) = &a.nkey_seed_file {
            let seed = read_secret(Some(f), None)?.unwrap_or_default();
            nkeys::KeyPair::from_seed(&seed).map_err(|e| anyhow::anyhow!("{}: not an nkey seed ({e})", f.display()))?;
            opts = opts.nkey(seed);
        }
        if let Some(f) = &a.creds_file {
            let text = super::fsx::read_text(f, super::secret::SECRET_FILE_MAX)?;
            opts = opts
                .credentials(&text)
                .map_err(|e| anyhow::anyhow!("{}: not a NATS credentials file ({})", f.display(), e.kind()))?;
        }
        if let Some(ca) = &a.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone());
            tls = true;
        }
        if let (Some(c), Some(k)) = (&a.tls_cert_file, &a.tls_key_file) {
            opts = opts.add_client_certificate(c.clone(), k.clone());
            tls = true;
        }
        Ok((opts.require_tls(tls), bare))
    }

    /// A plain connection (tools, `vigil check`, tests), failing after 5 s.
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let (opts, bare) = self.options()?;
        opts.connection_timeout(std::time::Duration::from_secs(5))
            .connect(bare.as_slice())
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {}: {}", self.shown(), describe(&e)))
    }
}

/// The current entries of a KV bucket whose keys start with `prefix` (deletes included: their
/// operation says so), in key order.
pub async fn kv_entries(
    kv: &async_nats::jetstream::kv::Store,
    prefix: &str,
) -> Result<Vec<async_nats::jetstream::kv::Entry>> {
    use futures::StreamExt;
    let mut keys: Vec<String> = Vec::new();
    let mut list = kv.keys().await.context("KV keys")?;
    while let Some(k) = list.next().await {
        let k = k.context("KV keys")?;
        if k.starts_with(prefix) {
            keys.push(k);
        }
    }
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        if let Some(e) = kv.entry(&k).await.context("KV entry")? {
            out.push(e);
        }
    }
    Ok(out)
}

/// A connect error in plain words: authentication and TLS failures say so.
pub fn describe(e: &async_nats::ConnectError) -> String {
    use async_nats::ConnectErrorKind as K;
    let text = super::secret::redact(&e.to_string());
    match e.kind() {
        K::AuthorizationViolation => format!("authentication refused by the server ({text})"),
        K::Tls => format!("TLS failed ({text})"),
        _ if text.contains("certificate") || text.contains("handshake") => format!("TLS failed ({text})"),
        K::TimedOut => format!("timed out ({text})"),
        _ => text,
    }
}

fn percent(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Connects to a URL with the credentials it carries (tools and tests).
pub async fn connect(url: &str) -> Result<async_nats::Client> {
    Endpoint::plain(url).connect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_move_out_of_the_url() {
        let bare = |u: &str| Endpoint::plain(u).options().unwrap().1;
        assert_eq!(bare("nats://alice:p%40ss@127.0.0.1:4222"), ["nats://127.0.0.1:4222"]);
        assert_eq!(bare("nats://tok3n@127.0.0.1:4222"), ["nats://127.0.0.1:4222"]);
        assert_eq!(bare("tls://h:4443"), ["tls://h:4443"]);
        assert_eq!(bare("nats://a:b@h1:4222, nats://h2:4222"), ["nats://h1:4222", "nats://h2:4222"]);
        assert_eq!(percent("p%40ss"), "p@ss");
        assert_eq!(Endpoint::plain("nats://a:s3cret@h:1,nats://t0k@h:2").shown(), "nats://a:***@h:1,nats://***@h:2");
    }

    #[test]
    fn auth_methods_are_checked_and_secrets_read_from_files_and_the_environment() {
        let d = tempfile::tempdir().unwrap();
        let pw = d.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let a = NatsAuth { user: Some("vigil".into()), password_file: Some(pw.clone()), ..Default::default() };
        assert!(a.check(false).is_empty(), "{:?}", a.check(false));
        assert_eq!(a.method(), "user + password");
        assert!(Endpoint::new("nats://h:4222", a.clone()).options().is_ok());
        // two methods, or one with the URL's credentials
        let both = NatsAuth { token_env: Some("VIGIL_TEST_UNSET_TOKEN".into()), ..a.clone() };
        let problems: Vec<String> = both.check(false).into_iter().map(|(_, p)| p).collect();
        assert!(problems.iter().any(|p| p.contains("not user + password and token")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("VIGIL_TEST_UNSET_TOKEN is not set")), "{problems:?}");
        assert!(!a.check(true).is_empty());
        // a user without a password, a certificate without its key, a missing file
        let half =
            NatsAuth { user: Some("x".into()), tls_cert_file: Some(d.path().join("nope.pem")), ..Default::default() };
        let keys: Vec<&str> = half.check(false).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["user", "tls_key_file", "tls_cert_file"]);
        // a seed file that is not a seed is named, its content is not shown
        std::fs::write(d.path().join("seed"), "not-a-seed-xyz\n").unwrap();
        let bad = NatsAuth { nkey_seed_file: Some(d.path().join("seed")), ..Default::default() };
        let e = Endpoint::new("nats://h:4222", bad).options().unwrap_err().to_string();
        assert!(e.contains("seed: not an nkey seed") && !e.contains("not-a-seed-xyz"), "{e}");
        // a creds file that is not one
        std::fs::write(d.path().join("x.creds"), "hello").unwrap();
        let bad = NatsAuth { creds_file: Some(d.path().join("x.creds")), ..Default::default() };
        let e = Endpoint::new("nats://h:4222", bad).options().unwrap_err().to_string();
        assert!(e.contains("x.creds: not a NATS credentials file"), "{e}");
        // relative paths follow the pipeline file
        let r =
            NatsAuth { password_file: Some("secrets/pw".into()), ..Default::default() }.resolved(|p| d.path().join(p));
        assert_eq!(r.password_file.unwrap(), d.path().join("secrets/pw"));
    }
}

//! Connecting to NATS with the credentials a URL carries (`nats://user:password@host`,
//! `nats://token@host`): async-nats takes them from options, not from the URL, so they are
//! moved there, and the address it is given (and may print) has none. TLS (`tls://`) uses
//! rustls with the crypto provider chosen once for the process.

/// Connect options with the URL's credentials, and the URL without them.
pub fn options(url: &str) -> (async_nats::ConnectOptions, String) {
    super::secret::install_crypto_provider();
    let Ok(mut u) = url::Url::parse(url) else {
        return (async_nats::ConnectOptions::new(), url.to_string());
    };
    let user = percent(u.username());
    let password = u.password().map(percent);
    let opts = match (user.is_empty(), password) {
        (false, Some(p)) => async_nats::ConnectOptions::with_user_and_password(user, p),
        (false, None) => async_nats::ConnectOptions::with_token(user),
        (true, Some(p)) => async_nats::ConnectOptions::with_token(p),
        (true, None) => async_nats::ConnectOptions::new(),
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    (opts, u.to_string())
}

fn percent(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Connects with the URL's credentials (a plain connection: tools and tests).
pub async fn connect(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let (opts, bare) = options(url);
    opts.connection_timeout(std::time::Duration::from_secs(5)).connect(bare).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_move_out_of_the_url() {
        assert_eq!(super::options("nats://alice:p%40ss@127.0.0.1:4222").1, "nats://127.0.0.1:4222");
        assert_eq!(super::options("nats://tok3n@127.0.0.1:4222").1, "nats://127.0.0.1:4222");
        assert_eq!(super::options("tls://h:4443").1, "tls://h:4443");
        assert_eq!(super::percent("p%40ss"), "p@ss");
    }
}

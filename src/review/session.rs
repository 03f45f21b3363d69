//! Login sessions, kept in the store so that every instance knows them: a random token in an
//! HttpOnly, SameSite=Strict cookie; the store holds `review/sessions/<SHA-256 of the token>.json`
//! (never the token itself) with its user, expiry and CSRF token; logout writes a `.revoked`
//! marker beside it (a store with Object Lock may refuse deletes). Login failures are counted per
//! account and per client address over 15 minutes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::Store;

pub const COOKIE: &str = "vigil_session";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub user: String,
    pub created_utc: String,
    pub expires_utc: String,
    pub csrf: String,
    pub client: String,
}

pub struct Sessions {
    store: Store,
    hours: f64,
}

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn key(token: &str) -> String {
    format!("review/sessions/{}.json", crate::util::sha256_hex(token.as_bytes()))
}

/// A token is 43 characters of base64url (anything else is not one of ours).
fn plausible(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl Sessions {
    pub fn new(store: Store, hours: f64) -> Sessions {
        Sessions { store, hours }
    }

    /// A new session for `user`; returns its token.
    pub async fn create(&self, user: &str, client: &str) -> Result<(String, Session)> {
        let token = random_token();
        let now = chrono::Utc::now();
        let s = Session {
            user: user.into(),
            created_utc: crate::util::rfc3339(now),
            expires_utc: crate::util::rfc3339(now + chrono::Duration::seconds((self.hours * 3600.0) as i64)),
            csrf: random_token(),
            client: client.into(),
        };
        self.store.put_new(&key(&token), Bytes::from(serde_json::to_vec(&s)?)).await?;
        Ok((token, s))
    }

    /// The session of a token, if it exists, has not expired and was not ended.
    pub async fn get(&self, token: &str) -> Result<Option<Session>> {
        if !plausible(token) {
            return Ok(None);
        }
        let k = key(token);
        let Ok(bytes) = self.store.get(&k).await else { return Ok(None) };
        if self.store.exists(&k.replace(".json", ".revoked")).await? {
            return Ok(None);
        }
        let Ok(s) = serde_json::from_slice::<Session>(&bytes) else { return Ok(None) };
        let live = crate::util::time::parse_rfc3339(&s.expires_utc).is_ok_and(|t| t > chrono::Utc::now());
        Ok(live.then_some(s))
    }

    /// Ends a session (logout).
    pub async fn end(&self, token: &str) -> Result<()> {
        if plausible(token) {
            let k = key(token).replace(".json", ".revoked");
            if !self.store.exists(&k).await? {
                self.store.put_new(&k, Bytes::from_static(b"{}")).await?;
            }
        }
        Ok(())
    }
}

/// Failed logins per account and per client address in the last 15 minutes.
pub struct LoginLimiter {
    max: u32,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    /// Attempts refused while locked out, per (account, address), since the one that was logged.
    refused: Mutex<HashMap<String, u64>>,
}

const WINDOW: Duration = Duration::from_secs(15 * 60);

impl LoginLimiter {
    pub fn new(max: u32) -> LoginLimiter {
        LoginLimiter { max, failures: Mutex::new(HashMap::new()), refused: Mutex::new(HashMap::new()) }
    }

    fn count(&self, k: &str) -> u32 {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let v = m.entry(k.into()).or_default();
        v.retain(|t| t.elapsed() < WINDOW);
        v.len() as u32
    }

    /// Whether another attempt for `user` from `client` may be tried now (an address gets four
    /// times the account's allowance: several officers share an office's address).
    pub fn allowed(&self, user: &str, client: &str) -> bool {
        self.count(&format!("user:{user}")) < self.max && self.count(&format!("addr:{client}")) < self.max * 4
    }

    pub fn failed(&self, user: &str, client: &str) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in [format!("user:{user}"), format!("addr:{client}")] {
            m.entry(k).or_default().push(Instant::now());
        }
    }

    /// Counts an attempt refused while locked out; true for the first of a lockout, which is
    /// logged (the rest are counted, and logged as one entry when the lockout ends, so a flood of
    /// attempts cannot flood the signed log).
    pub fn refused(&self, user: &str, client: &str) -> bool {
        let mut m = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 100_000 {
            m.clear();
        }
        match m.get_mut(&format!("{user}|{client}")) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                m.insert(format!("{user}|{client}"), 0);
                true
            }
        }
    }

    /// The attempts refused after the logged one, once the lockout has ended (then forgotten).
    pub fn take_refused(&self, user: &str, client: &str) -> u64 {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).remove(&format!("{user}|{client}")).unwrap_or(0)
    }

    pub fn succeeded(&self, user: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&format!("user:{user}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_ends_at_its_expiry_and_at_logout() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().to_str().unwrap(), &Default::default()).unwrap();
        // one second long
        let s = Sessions::new(store.clone(), 1.0 / 3600.0);
        let (token, made) = s.create("alice", "127.0.0.1").await.unwrap();
        assert_eq!(s.get(&token).await.unwrap().map(|x| x.csrf), Some(made.csrf));
        // the store holds the token's hash, never the token
        let keys = store.list("review/sessions/").await.unwrap();
        assert!(keys.len() == 1 && !keys[0].contains(&token), "{keys:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(s.get(&token).await.unwrap().is_none(), "expired");
        // logout
        let long = Sessions::new(store, 8.0);
        let (t2, _) = long.create("bob", "127.0.0.1").await.unwrap();
        assert!(long.get(&t2).await.unwrap().is_some());
        long.end(&t2).await.unwrap();
        assert!(long.get(&t2).await.unwrap().is_none(), "ended by logout");
        // not a token of ours
        assert!(long.get("../../evidence").await.unwrap().is_none());
    }

    #[test]
    fn login_failures_are_limited_per_account_and_per_address() {
        let l = LoginLimiter::new(2);
        assert!(l.allowed("alice", "10.0.0.1"));
        l.failed("alice", "10.0.0.1");
        l.failed("alice", "10.0.0.1");
        assert!(!l.allowed("alice", "10.0.0.2"), "the account is limited from any address");
        assert!(l.allowed("bob", "10.0.0.1"), "another account from the same address still may");
        for u in ["c", "d", "e", "f", "g", "h"] {
            l.failed(u, "10.0.0.1");
        }
        assert!(!l.allowed("zed", "10.0.0.1"), "the address is limited after 4x the allowance");
        l.succeeded("alice");
        assert!(l.allowed("alice", "10.0.0.3"));
        // refusals while locked out: the first is logged, the rest counted
        assert!(l.refused("zed", "10.0.0.1"));
        assert!(!l.refused("zed", "10.0.0.1") && !l.refused("zed", "10.0.0.1"));
        assert_eq!(l.take_refused("zed", "10.0.0.1"), 2);
        assert_eq!(l.take_refused("zed", "10.0.0.1"), 0);
    }
}

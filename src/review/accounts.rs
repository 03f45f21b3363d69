//! Review accounts: `vigil review user add | disable | list`. One TOML file (`[review] users`),
//! mode 0600, written atomically; passwords as argon2id PHC strings, never stored or logged in
//! clear. The officer id is the law-enforcement certificate number written into every decision.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::util::fsx;

pub use crate::evidence::review::Role;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Law-enforcement certificate number (reviewers: required).
    pub officer_id: String,
    /// argon2id PHC string.
    pub password: String,
    #[serde(default)]
    pub disabled: bool,
    pub created_utc: String,
    /// Sessions begun before this time (UTC) are ended: set when the password or the role
    /// changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_after: Option<String>,
}

impl User {
    /// Whether a session begun at `created_utc` still stands for this account.
    pub fn session_valid(&self, created_utc: &str) -> bool {
        self.sessions_after.as_deref().is_none_or(|after| created_utc >= after)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    #[serde(default)]
    pub users: Vec<User>,
}

/// A name: 1-32 characters of `a-z 0-9 . _ -`.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
}

/// An officer id: printable, at most 64 characters, nothing invisible (no zero-width space or
/// bidi control that would make two ids look alike).
pub fn valid_officer_id(s: &str) -> bool {
    s.chars().count() <= 64 && s.chars().all(|c| !c.is_control() && !crate::util::text::is_invisible(c))
}

pub fn hash_password(pw: &str) -> Result<String> {
    use argon2::password_hash::PasswordHasher;
    let h = argon2::Argon2::default().hash_password(pw.as_bytes()).map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(h.to_string())
}

/// Whether `pw` matches the PHC string (constant-time inside argon2).
pub fn check_password(phc: &str, pw: &str) -> bool {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    PasswordHash::new(phc).is_ok_and(|h| argon2::Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
}

/// A hash of a random password with the default parameters, made once (at the service's start,
/// [`warm`]): what an unknown user name is checked against.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let mut b = [0u8; 24];
        getrandom::getrandom(&mut b).expect("randomness");
        hash_password(&hex::encode(b)).expect("argon2")
    })
}

/// Makes the hash unknown names are checked against, so the first unknown name costs what
/// every later one does.
pub fn warm() {
    dummy_hash();
}

impl Accounts {
    /// Reads the accounts file (none yet: no accounts).
    pub fn load(path: &Path) -> Result<Accounts> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(Accounts::default());
        }
        let text = fsx::read_text(path, fsx::limits::USERS)?;
        let a: Accounts =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("accounts file {}: {}", path.display(), e.message()))?;
        a.check_unique().map_err(|e| anyhow::anyhow!("accounts file {}: {e}", path.display()))?;
        Ok(a)
    }

    /// No two accounts (disabled ones included) share an officer id once normalised (case,
    /// full-width forms, invisible characters: [`crate::util::text::normalize_id`]): the
    /// two-officer rule counts officers by it.
    pub fn check_unique(&self) -> Result<()> {
        let mut seen: std::collections::BTreeMap<String, &str> = Default::default();
        for u in self.users.iter().filter(|u| !u.officer_id.trim().is_empty()) {
            if let Some(other) = seen.insert(crate::util::text::normalize_id(&u.officer_id), &u.name) {
                bail!(
                    "accounts {other:?} and {:?} have the same officer id {:?} (compared without case, width and invisible characters): one officer, one account",
                    u.name,
                    crate::util::printable(&u.officer_id, 64)
                );
            }
        }
        Ok(())
    }

    /// Writes the file atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("{}", d.display()))?;
        }
        let text = toml::to_string_pretty(self)?;
        fsx::write_atomic(path, text.as_bytes())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Adds an account.
    pub fn add(&mut self, name: &str, role: Role, officer_id: &str, password: &str) -> Result<()> {
        if !valid_name(name) {
            bail!("user name {name:?}: 1-32 characters of a-z 0-9 . _ -");
        }
        if self.get(name).is_some() {
            bail!("user {name:?} exists already");
        }
        if !valid_officer_id(officer_id) {
            bail!("officer id: printable text of at most 64 characters, nothing invisible");
        }
        let norm = crate::util::text::normalize_id(officer_id);
        if let Some(u) =
            self.users.iter().find(|u| !norm.is_empty() && crate::util::text::normalize_id(&u.officer_id) == norm)
        {
            bail!(
                "officer id {:?} is already account {:?}'s{} (ids are compared without case, width and invisible characters): one officer, one account",
                crate::util::printable(officer_id, 64),
                u.name,
                if u.disabled { " (disabled)" } else { "" }
            );
        }
        if role == Role::Reviewer && officer_id.trim().is_empty() {
            bail!("a reviewer needs --officer-id (the law-enforcement certificate number written into every decision)");
        }
        let n = password.chars().count();
        if !(8..=1024).contains(&n) {
            bail!("the password must have 8 to 1024 characters");
        }
        self.users.push(User {
            name: name.into(),
            role,
            officer_id: officer_id.trim().into(),
            password: hash_password(password)?,
            disabled: false,
            created_utc: crate::util::rfc3339(chrono::Utc::now()),
            sessions_after: None,
        });
        Ok(())
    }

    /// Sets a new password (`vigil review user passwd`).
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<()> {
        let n = password.chars().count();
        if !(8..=1024).contains(&n) {
            bail!("the password must have 8 to 1024 characters");
        }
        let hash = hash_password(password)?;
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(u) => {
                u.password = hash;
                u.sessions_after = Some(crate::util::rfc3339(chrono::Utc::now()));
                Ok(())
            }
            None => bail!("no user {name:?}"),
        }
    }

    /// Changes an account's role (`vigil review user role`); a reviewer needs an officer id.
    pub fn set_role(&mut self, name: &str, role: Role) -> Result<()> {
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(u) if role == Role::Reviewer && u.officer_id.trim().is_empty() => {
                bail!("user {name:?} has no officer id; a reviewer needs one (add the account again with --officer-id)")
            }
            Some(u) => {
                u.role = role;
                u.sessions_after = Some(crate::util::rfc3339(chrono::Utc::now()));
                Ok(())
            }
            None => bail!("no user {name:?}"),
        }
    }

    pub fn disable(&mut self, name: &str) -> Result<()> {
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(u) => {
                u.disabled = true;
                Ok(())
            }
            None => bail!("no user {name:?}"),
        }
    }

    /// The account if `name` and `password` match an enabled one. An unknown name costs the same
    /// argon2 work as a known one, so answer times do not tell which names exist.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<&User> {
        match self.get(name) {
            Some(u) => (check_password(&u.password, password) && !u.disabled).then_some(u),
            None => {
                check_password(dummy_hash(), password);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_round_trip_with_hashed_passwords_and_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.toml");
        let mut a = Accounts::default();
        a.add("alice", Role::Reviewer, "JS-001", "correct horse").unwrap();
        assert!(a.add("alice", Role::Auditor, "", "whatever12").is_err());
        assert!(a.add("bob", Role::Reviewer, "", "whatever12").is_err(), "a reviewer needs an officer id");
        assert!(a.add("Bob!", Role::Auditor, "", "whatever12").is_err());
        assert!(a.add("carol", Role::Auditor, "", "short").is_err());
        a.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("correct horse") && text.contains("$argon2id$"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let mut b = Accounts::load(&p).unwrap();
        assert!(b.authenticate("alice", "correct horse").is_some());
        assert!(b.authenticate("alice", "wrong").is_none());
        b.disable("alice").unwrap();
        assert!(b.authenticate("alice", "correct horse").is_none(), "disabled");
        // one officer, one account: case, width and invisible characters do not make a new id
        for id in ["js-001", "JS-001\u{200b}", "ＪＳ－００１"] {
            let e = b.add("mallory", Role::Reviewer, id, "whatever12").unwrap_err().to_string();
            assert!(
                e.contains("already account \"alice\"'s (disabled)") || e.contains("nothing invisible"),
                "{id:?}: {e}"
            );
        }
        b.set_password("alice", "another horse").unwrap();
        b.set_role("alice", Role::Auditor).unwrap();
        assert_eq!(b.get("alice").unwrap().role, Role::Auditor);
        assert!(check_password(&b.get("alice").unwrap().password, "another horse"));
        assert!(b.set_role("nobody", Role::Auditor).is_err());
    }
}

//! Review accounts: `vigil review user add | disable | list`. One TOML file (`[review] users`),
//! mode 0600, written atomically; passwords as argon2id PHC strings, never stored or logged in
//! clear. The officer id is the law-enforcement certificate number written into every decision.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::util::fsx;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reviews candidates and decides (two reviewers make an item approved evidence).
    Reviewer,
    /// Reads everything, the access log included; never decides.
    Auditor,
    /// Reads; sees accounts.
    Admin,
    /// The ops console: cameras, masks and zones, thresholds.
    Ops,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Ops => "ops",
        }
    }
}

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

/// An officer id: printable, at most 64 characters.
pub fn valid_officer_id(s: &str) -> bool {
    s.chars().count() <= 64 && s.chars().all(|c| !c.is_control())
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

impl Accounts {
    /// Reads the accounts file (none yet: no accounts).
    pub fn load(path: &Path) -> Result<Accounts> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(Accounts::default());
        }
        let text = fsx::read_text(path, fsx::limits::USERS)?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("accounts file {}: {}", path.display(), e.message()))
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
            bail!("officer id: printable text of at most 64 characters");
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
        });
        Ok(())
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

    /// The account if `name` and `password` match an enabled one.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<&User> {
        let u = self.get(name)?;
        (!u.disabled && check_password(&u.password, password)).then_some(u)
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
    }
}

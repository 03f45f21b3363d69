//! NATS subjects (DESIGN.md §5), as a type: every subject vigil publishes on is built here.

use std::fmt;

/// Where a message goes. `site` and `camera` are validated ids (`[A-Za-z0-9_-]`), so a subject
/// never contains a `.`, `*` or `>` from outside.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `vigil.evidence.<site>.<camera>`: an evidence candidate.
    Evidence { site: String, camera: String },
    /// `vigil.health.<site>.<camera>`: a camera (or `worker`) condition started or ended.
    Health { site: String, camera: String },
    /// `vigil.chain.<site>.<camera>`: a signed chain checkpoint.
    Chain { site: String, camera: String },
    /// `vigil.review.<site>.<camera>`: a review decision.
    Review { site: String, camera: String },
    /// `vigil.audit.<site>.<camera>`: a rule change applied or rejected (`_pipeline` for the file).
    Audit { site: String, camera: String },
    /// `vigil.access.<site>.log`: the review service's signed access-log head (`camera` is `log`).
    Access { site: String, camera: String },
}

/// The subjects of the stream (`vigil.>`).
pub const ALL: &str = "vigil.>";

/// Live status reports go outside the stream (`vigil-live.`): core NATS, nothing kept.
const STATUS_PREFIX: &str = "vigil-live.status";

/// `vigil-live.status.<site>.<worker>`: a worker's periodic status report. The worker id (a host
/// name, perhaps with dots) is reduced to subject-safe characters.
pub fn status(site: &str, worker: &str) -> String {
    let w: String =
        worker.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{STATUS_PREFIX}.{site}.{w}")
}

/// `vigil-live.snapshot.<site>.<camera>`: request/reply for a recent frame of a camera (the ops
/// console's picture to draw masks on), answered by the worker that runs it. Restrict who may
/// publish here with NATS permissions: an unmasked view is one request away.
pub fn snapshot(site: &str, camera: &str) -> String {
    format!("vigil-live.snapshot.{site}.{camera}")
}

/// Every worker's status reports of `site`.
pub fn status_filter(site: &str) -> String {
    format!("{STATUS_PREFIX}.{site}.*")
}

impl Subject {
    pub fn evidence(site: &str, camera: &str) -> Subject {
        Subject::Evidence { site: site.into(), camera: camera.into() }
    }
    pub fn health(site: &str, camera: &str) -> Subject {
        Subject::Health { site: site.into(), camera: camera.into() }
    }
    pub fn chain(site: &str, camera: &str) -> Subject {
        Subject::Chain { site: site.into(), camera: camera.into() }
    }
    pub fn review(site: &str, camera: &str) -> Subject {
        Subject::Review { site: site.into(), camera: camera.into() }
    }
    pub fn audit(site: &str, camera: &str) -> Subject {
        Subject::Audit { site: site.into(), camera: camera.into() }
    }
    pub fn access(site: &str) -> Subject {
        Subject::Access { site: site.into(), camera: "log".into() }
    }

    fn parts(&self) -> (&'static str, &str, &str) {
        match self {
            Subject::Evidence { site, camera } => ("evidence", site, camera),
            Subject::Health { site, camera } => ("health", site, camera),
            Subject::Chain { site, camera } => ("chain", site, camera),
            Subject::Review { site, camera } => ("review", site, camera),
            Subject::Audit { site, camera } => ("audit", site, camera),
            Subject::Access { site, camera } => ("access", site, camera),
        }
    }

    pub fn is_evidence(&self) -> bool {
        matches!(self, Subject::Evidence { .. })
    }

    /// A filter over one kind for a site, `camera` `None` for all: `vigil.audit.<site>.*`.
    pub fn filter(kind: &str, site: &str, camera: Option<&str>) -> String {
        format!("vigil.{kind}.{site}.{}", camera.unwrap_or("*"))
    }

    /// Parses `vigil.<kind>.<site>.<camera>`.
    pub fn parse(s: &str) -> Option<Subject> {
        let mut p = s.split('.');
        let (v, kind, site, camera) = (p.next()?, p.next()?, p.next()?, p.next()?);
        if v != "vigil" || p.next().is_some() || site.is_empty() || camera.is_empty() {
            return None;
        }
        let (site, camera) = (site.to_string(), camera.to_string());
        Some(match kind {
            "evidence" => Subject::Evidence { site, camera },
            "health" => Subject::Health { site, camera },
            "chain" => Subject::Chain { site, camera },
            "review" => Subject::Review { site, camera },
            "audit" => Subject::Audit { site, camera },
            "access" => Subject::Access { site, camera },
            _ => return None,
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, site, camera) = self.parts();
        write!(f, "vigil.{kind}.{site}.{camera}")
    }
}

impl serde::Serialize for Subject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Subject, D::Error> {
        let s = String::deserialize(d)?;
        Subject::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a vigil subject")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let s = Subject::evidence("site-a", "cam1");
        assert_eq!(s.to_string(), "vigil.evidence.site-a.cam1");
        assert_eq!(Subject::parse("vigil.evidence.site-a.cam1"), Some(s.clone()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"vigil.evidence.site-a.cam1\"");
        assert_eq!(Subject::parse("vigil.bogus.a.b"), None);
        assert_eq!(Subject::parse("vigil.audit.a.b.c"), None);
        assert_eq!(Subject::filter("audit", "s", None), "vigil.audit.s.*");
    }
}

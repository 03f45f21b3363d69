//! Cluster: several workers share a site's cameras through leases in a NATS KV bucket, so that
//! each camera is run by exactly one worker at a time and a dead worker's cameras move on.
//!
//! - [`lease`] is the mechanism (the bucket, its keys and values, create / renew / release, the
//!   watched view, `vigil cluster status`);
//! - [`share`] is the policy (which cameras to claim or let go: fair share, load, joining workers);
//! - [`run`] is the manager: each tick it renews this worker's presence and leases, fences the
//!   cameras it could not renew in time, carries out the policy's moves by starting and stopping
//!   cameras ([`super::CameraKit`]), and on shutdown stops them and hands every lease over.
//!
//! **Fencing.** A holder renews every third of the TTL (at most every 2 s). A lease it could not renew is given up
//! locally at `last successful renewal sent + TTL − margin` (margin: a fifth of the TTL, at least
//! 1 s): the camera is stopped then, before the server can expire the value and another worker
//! can create it. A renewal refused because someone else wrote the key stops the camera at once.
//! Chain checkpoints come only from the current holder. Evidence positions are reserved create-only in the store ([`crate::evidence::chain`]), so even
//! two workers forced onto one camera cannot write two items at one position.

pub mod lease;
pub mod member;
pub mod share;
pub mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::CameraKit;
use crate::config::Pipeline;
use crate::evidence::LeaseFacts;
use crate::evidence::chain::Chains;
use crate::ingest::CameraEnd;
use crate::telemetry::{CameraStats, Condition, Event};
use crate::util::nats::Endpoint;

/// The leases this worker holds now, shared with the evidence stage (each violation records the
/// one it fired under) and the checkpoint task (it checkpoints only cameras held now: while it
/// holds a camera, this worker's chain head is the store's; after a hand-over it may be behind,
/// and a checkpoint from it would be the newest one with an older head).
#[derive(Default)]
pub struct LeaseBook {
    held: parking_lot::Mutex<BTreeMap<String, LeaseFacts>>,
}

impl LeaseBook {
    pub fn get(&self, camera: &str) -> Option<LeaseFacts> {
        self.held.lock().get(camera).cloned()
    }

    fn set(&self, camera: &str, f: LeaseFacts) {
        self.held.lock().insert(camera.into(), f);
    }

    fn remove(&self, camera: &str) {
        self.held.lock().remove(camera);
    }

    /// Cameras whose lease this worker holds now.
    pub fn held(&self) -> BTreeSet<String> {
        self.held.lock().keys().cloned().collect()
    }
}

/// The lease timings derived from the TTL.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: Duration,
    /// Between two renewals: a third of the TTL, but early enough that a lease leader's election
    /// (4-9 s in nats-server) after a renewal still ends before the lease's deadline: at most
    /// `ttl − margin − 10 s`, and never under 2 s. TTL 15 s (the default): 2 s; 60 s: 20 s — a
    /// district with many cameras trades failover time for KV writes (`vigil cluster simulate`).
    pub renew: Duration,
    /// Before expiry, when an unrenewed lease is given up.
    pub margin: Duration,
    /// Between two looks at the bucket.
    pub tick: Duration,
}

impl Timing {
    pub fn of(ttl: Duration) -> Timing {
        let margin = (ttl / 5).max(Duration::from_secs(1));
        let election = ttl.saturating_sub(margin).saturating_sub(Duration::from_secs(10)).max(Duration::from_secs(2));
        Timing { ttl, renew: (ttl / 3).min(election), margin, tick: (ttl / 4).min(Duration::from_secs(1)) }
    }
}

/// The fence: a thread that stops a camera the moment its lease's local deadline passes,
/// whatever the manager is waiting for (a renewal that hangs on a cut connection must not delay
/// it).
/// Per camera: when its lease is given up, and the flag that stops it.
type Deadlines = Arc<parking_lot::Mutex<BTreeMap<String, (Instant, Arc<AtomicBool>)>>>;

struct Fence {
    deadlines: Deadlines,
    done: Arc<AtomicBool>,
}

impl Fence {
    fn start(worker: String) -> Fence {
        let deadlines: Deadlines = Default::default();
        let done: Arc<AtomicBool> = Default::default();
        let (d, stop) = (deadlines.clone(), done.clone());
        let _ = std::thread::Builder::new().name("lease-fence".into()).spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                for (cam, (deadline, flag)) in d.lock().iter() {
                    if now >= *deadline && !flag.swap(true, Ordering::SeqCst) {
                        tracing::warn!(camera = %cam, worker = %worker, "cluster: fenced: lease not renewed in time; camera stopped before the lease can expire");
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Fence { deadlines, done }
    }

    fn set(&self, camera: &str, deadline: Instant, stop: Arc<AtomicBool>) {
        self.deadlines.lock().insert(camera.into(), (deadline, stop));
    }

    fn remove(&self, camera: &str) {
        self.deadlines.lock().remove(camera);
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

fn lease_event(camera: &str, active: bool, detail: &str) {
    Event::Health { camera, condition: Condition::Lease, active, detail, lasted: None }.emit();
}

/// Runs this worker's share of the pipeline's cameras until `shutdown`; returns how each camera
/// it ran ended.
pub async fn run(
    p: &Pipeline,
    nats: Endpoint,
    kit: &CameraKit,
    book: Arc<LeaseBook>,
    chains: Arc<Chains>,
    shutdown: Arc<AtomicBool>,
) -> Result<Vec<(String, CameraEnd, Arc<CameraStats>)>> {
    let raw = &p.settings;
    let ttl = raw.cluster.lease_ttl();
    let host = member::Cameras { p, kit };
    let settings = member::Settings {
        site: raw.site.id.clone(),
        me: p.worker_id(),
        bucket: raw.cluster.bucket.clone(),
        max_cameras: raw.cluster.max_cameras,
        replicas: raw.publish.replicas,
        cameras: p.cameras.iter().map(|c| c.id.clone()).collect(),
    };
    let Some(m) = member::Member::join(settings, &host, nats, ttl, &shutdown).await? else { return Ok(Vec::new()) };
    m.with_book(book).with_chains(chains).run(&shutdown).await
}

fn facts<C>(bucket: &str, h: &member::Held<C>, me: &str) -> LeaseFacts {
    LeaseFacts {
        bucket: bucket.into(),
        key: h.key.clone(),
        worker: me.into(),
        acquired_revision: h.acquired_revision,
        revision: h.revision,
        acquired_utc: h.acquired_utc.clone(),
    }
}

#[cfg(test)]
mod timing_tests {
    use super::*;

    #[test]
    fn renewals_leave_room_for_a_leader_election_and_scale_with_the_ttl() {
        let s = |x: f64| Duration::from_secs_f64(x);
        assert_eq!(Timing::of(s(6.0)).renew, s(2.0));
        assert_eq!(Timing::of(s(15.0)).renew, s(2.0), "the default keeps its 2 s");
        assert_eq!(Timing::of(s(30.0)).renew, s(10.0));
        assert_eq!(Timing::of(s(60.0)).renew, s(20.0));
        for ttl in [6.0, 15.0, 30.0, 60.0, 120.0] {
            let t = Timing::of(s(ttl));
            assert!(t.renew + s(9.0) <= t.ttl - t.margin || t.renew == s(2.0), "{ttl}: {t:?}");
        }
    }
}

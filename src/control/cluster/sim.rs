//! `vigil cluster simulate`: a district without video. Many members ([`super::member::Member`],
//! the protocol `vigil run` runs) in one process share many cameras that run nothing, over a real
//! NATS JetStream: how long until every camera has a holder, how many KV writes the leases cost,
//! how long until a killed worker's cameras run elsewhere, what a lost leader does. One line of
//! JSON per second, then a summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::member::{Counters, Ended, Host, Hosted, Member, Settings};
use crate::util::nats::Endpoint;

/// A camera that runs nothing: only its stop flag.
pub struct NoCamera(Arc<AtomicBool>);

impl Hosted for NoCamera {
    fn stop_flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
    fn load(&self) -> (u64, u64) {
        (0, 0)
    }
    fn finished(&self) -> bool {
        false
    }
    fn request_stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    async fn stop(self) -> Option<Ended> {
        None
    }
}

/// Starts nothing.
pub struct Nothing;

impl Host for Nothing {
    type Cam = NoCamera;
    fn start(&self, _camera: &str) -> Result<NoCamera> {
        Ok(NoCamera(Arc::default()))
    }
}

static NOTHING: Nothing = Nothing;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    pub nats: Endpoint,
    pub cameras: usize,
    pub workers: usize,
    pub ttl: Duration,
    pub max_cameras: usize,
    pub replicas: usize,
    pub site: String,
    pub bucket: String,
}

struct Running {
    id: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
    shutdown: Arc<AtomicBool>,
}

/// Members running in this process.
pub struct Simulation {
    members: Vec<Running>,
}

/// One second of the simulation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// Leases held (summed over the live members).
    pub held: u64,
    pub members: usize,
    pub writes_per_s: f64,
    pub failed_per_s: f64,
}

impl Simulation {
    /// Starts `workers` members, each on its own NATS connection.
    pub async fn start(o: &Options) -> Result<Simulation> {
        let cameras: Vec<String> = (0..o.cameras).map(|i| format!("cam{i:05}")).collect();
        let mut members = Vec::new();
        for w in 0..o.workers {
            let id = format!("sim-w{w:03}");
            let client = o.nats.connect().await?;
            let (kv, ttl) = super::lease::bucket(client, &o.bucket, o.ttl, o.replicas).await?;
            let settings = Settings {
                site: o.site.clone(),
                me: id.clone(),
                bucket: o.bucket.clone(),
                max_cameras: o.max_cameras,
                replicas: o.replicas,
                cameras: cameras.clone(),
            };
            let m = Member::over(settings, &NOTHING, kv, ttl);
            let counters = m.counters.clone();
            let shutdown = Arc::new(AtomicBool::new(false));
            let sd = shutdown.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = m.run(&sd).await {
                    tracing::error!(error = format!("{e:#}"), "simulated member failed");
                }
            });
            members.push(Running { id, counters, task, shutdown });
        }
        Ok(Simulation { members })
    }

    /// (leases held, KV writes so far, failed writes so far) over the live members.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.members.iter().fold((0, 0, 0), |a, m| {
            (
                a.0 + m.counters.held.load(Ordering::Relaxed),
                a.1 + m.counters.writes.load(Ordering::Relaxed),
                a.2 + m.counters.failed.load(Ordering::Relaxed),
            )
        })
    }

    /// Kills `n` members at once, as `kill -9` would: no hand-over, their leases expire.
    pub fn kill(&mut self, n: usize) -> Vec<String> {
        let gone: Vec<Running> = self.members.drain(..n.min(self.members.len())).collect();
        gone.into_iter()
            .map(|m| {
                m.task.abort();
                m.id
            })
            .collect()
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Stops every member (each hands its leases over).
    pub async fn stop(self) {
        for m in &self.members {
            m.shutdown.store(true, Ordering::SeqCst);
        }
        for m in self.members {
            let _ = m.task.await;
        }
    }
}

/// The run's figures.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub cameras: usize,
    pub workers: usize,
    pub lease_ttl_s: f64,
    /// From start until every camera had a holder.
    pub spread_s: Option<f64>,
    /// KV writes per second once spread (presence, renewals, claims, releases), mean.
    pub steady_writes_per_s: Option<f64>,
    pub killed: Vec<String>,
    /// From the kill until every camera had a holder again.
    pub failover_s: Option<f64>,
    /// The longest stretch with fewer holders than cameras after the spread (a lost leader
    /// shows here), seconds.
    pub longest_gap_s: f64,
    pub failed_writes: u64,
}

/// Runs a simulation for `seconds`, killing `kill` members `kill_at` s after every camera first had
/// a holder (the steady stretch before the kill is then as long on a loaded machine as on an idle
/// one); calls `each` with every second's sample.
pub async fn run(
    o: &Options,
    seconds: f64,
    kill: usize,
    kill_at: f64,
    mut each: impl FnMut(&Sample),
) -> Result<Summary> {
    let started = Instant::now();
    let mut sim = Simulation::start(o).await?;
    let mut s =
        Summary { cameras: o.cameras, workers: o.workers, lease_ttl_s: o.ttl.as_secs_f64(), ..Default::default() };
    let mut last = (0u64, 0u64);
    let mut killed_at: Option<f64> = None;
    let mut steady: Vec<f64> = Vec::new();
    let mut gap_since: Option<f64> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        let (held, writes, failed) = sim.totals();
        let sample = Sample {
            t_s: (t * 10.0).round() / 10.0,
            held,
            members: sim.members(),
            writes_per_s: writes.saturating_sub(last.0) as f64,
            failed_per_s: failed.saturating_sub(last.1) as f64,
        };
        last = (writes, failed);
        each(&sample);
        let full = held as usize >= o.cameras;
        if full && s.spread_s.is_none() {
            s.spread_s = Some(t);
        }
        if s.spread_s.is_some() && killed_at.is_none() && full {
            steady.push(sample.writes_per_s);
        }
        if let Some(k) = killed_at
            && full
            && s.failover_s.is_none()
        {
            s.failover_s = Some(t - k);
        }
        if s.spread_s.is_some() {
            match (full, gap_since) {
                (false, None) => gap_since = Some(t),
                (true, Some(g)) => {
                    s.longest_gap_s = s.longest_gap_s.max(t - g);
                    gap_since = None;
                }
                _ => {}
            }
        }
        if kill > 0 && killed_at.is_none() && s.spread_s.is_some_and(|spread| t >= spread + kill_at) {
            s.killed = sim.kill(kill);
            killed_at = Some(t);
        }
        if t >= seconds {
            break;
        }
    }
    // the first few steady seconds still settle; the mean is over the rest
    let settled: Vec<f64> = steady.iter().skip(steady.len() / 4).copied().collect();
    if !settled.is_empty() {
        s.steady_writes_per_s = Some(settled.iter().sum::<f64>() / settled.len() as f64);
    }
    s.failed_writes = sim.totals().2;
    sim.stop().await;
    Ok(s)
}

//! Policy: which cameras this worker claims or lets go, from what it sees of the lease bucket.
//! Pure (no I/O): the manager ([`super`]) gathers a [`Situation`] each tick and carries out the
//! [`Move`]s through the lease mechanism ([`super::lease`]).
//!
//! - **Fair share.** With `n` cameras and `w` live workers, a worker holds up to `ceil(n / w)`
//!   (and never more than `max_cameras`). Free cameras are tried in an order of its own (a hash of
//!   worker and camera, "rendezvous" order), so workers starting together reach for different
//!   cameras.
//! - **Load.** A worker that is dropping frames leaves a free camera to the others for
//!   `patience` (the lease TTL); after that it takes it anyway: a camera nobody runs is worse than
//!   one analysed with drops. A camera free for twice that is taken by any worker below
//!   `max_cameras`, above its fair share or not.
//! - **Joining workers.** When a live worker holds fewer than `floor(n / w)` and nothing is free,
//!   the worker holding the most (the first by id among equals) lets one camera go; it does not
//!   take back a camera it let go for `patience`, so the newcomer gets it. One camera per tick, so
//!   each camera is interrupted once, for about one tick plus its start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the worker sees at one tick.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub me: &'a str,
    /// The pipeline's cameras.
    pub cameras: &'a [String],
    /// Live leases: camera → worker (this one's included).
    pub holders: &'a BTreeMap<String, String>,
    /// Live workers (presence keys), this one included.
    pub workers: &'a BTreeSet<String>,
    /// Free cameras: for how long they have been seen free.
    pub free_for: &'a BTreeMap<String, Duration>,
    /// Cameras this worker must not claim now (it let them go a moment ago, or they ended here).
    pub not_now: &'a BTreeSet<String>,
    pub max_cameras: usize,
    /// This worker dropped frames lately.
    pub dropping: bool,
    /// How long a dropping worker leaves a free camera to others (the lease TTL).
    pub patience: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    Claim(String),
    Release(String),
}

/// The order in which `worker` prefers cameras: highest first (FNV-1a of both names).
pub fn preference(worker: &str, camera: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in worker.bytes().chain([0u8]).chain(camera.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The moves of this tick.
pub fn decide(s: &Situation) -> Vec<Move> {
    let n = s.cameras.len();
    let mut live: BTreeSet<&str> = s.workers.iter().map(String::as_str).collect();
    live.insert(s.me);
    live.extend(s.holders.values().map(String::as_str));
    let w = live.len().max(1);
    let (floor, ceil) = (n / w, n.div_ceil(w));
    let cap = ceil.min(s.max_cameras);
    let held = |worker: &str| s.holders.values().filter(|h| *h == worker).count();
    let mut mine = held(s.me);
    let mut moves = Vec::new();

    let mut free: Vec<&String> =
        s.cameras.iter().filter(|c| !s.holders.contains_key(*c) && !s.not_now.contains(*c)).collect();
    free.sort_by_key(|c| std::cmp::Reverse(preference(s.me, c)));
    for c in &free {
        let waited = s.free_for.get(*c).copied().unwrap_or_default();
        let fair = mine < cap && (!s.dropping || waited >= s.patience);
        let orphan = mine < s.max_cameras && waited >= s.patience * 2;
        if fair || orphan {
            moves.push(Move::Claim((*c).clone()));
            mine += 1;
        }
    }
    if !moves.is_empty() || !free.is_empty() {
        return moves;
    }
    // nothing free: give one camera to a worker below its share
    let mut mine_list: Vec<&String> = s.holders.iter().filter(|(_, h)| *h == s.me).map(|(c, _)| c).collect();
    mine_list.sort_by_key(|c| preference(s.me, c));
    let Some(least_liked) = mine_list.first() else { return moves };
    let most = live.iter().map(|l| held(l)).max().unwrap_or(0);
    let first_of_most = live.iter().find(|l| held(l) == most).copied();
    let someone_short = live.iter().any(|l| held(l) < floor);
    if mine > ceil || (someone_short && mine > floor && mine == most && first_of_most == Some(s.me)) {
        moves.push(Move::Release((*least_liked).clone()));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cams(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("cam{i}")).collect()
    }

    struct World {
        cameras: Vec<String>,
        holders: BTreeMap<String, String>,
        workers: BTreeSet<String>,
    }

    impl World {
        fn new(n: usize, workers: &[&str]) -> World {
            World {
                cameras: cams(n),
                holders: BTreeMap::new(),
                workers: workers.iter().map(|w| w.to_string()).collect(),
            }
        }

        /// One tick of every worker in turn, moves applied as the KV would (a claim of a held
        /// camera fails).
        fn tick(&mut self, max: usize, waited: Duration) -> usize {
            let mut changes = 0;
            let workers: Vec<String> = self.workers.iter().cloned().collect();
            for me in &workers {
                let free_for = self
                    .cameras
                    .iter()
                    .filter(|c| !self.holders.contains_key(*c))
                    .map(|c| (c.clone(), waited))
                    .collect();
                let s = Situation {
                    me,
                    cameras: &self.cameras,
                    holders: &self.holders,
                    workers: &self.workers,
                    free_for: &free_for,
                    not_now: &BTreeSet::new(),
                    max_cameras: max,
                    dropping: false,
                    patience: Duration::from_secs(10),
                };
                for m in decide(&s) {
                    match m {
                        Move::Claim(c) if !self.holders.contains_key(&c) => {
                            self.holders.insert(c, me.clone());
                            changes += 1;
                        }
                        Move::Claim(_) => {}
                        Move::Release(c) => {
                            self.holders.remove(&c);
                            changes += 1;
                        }
                    }
                }
            }
            changes
        }

        fn counts(&self) -> Vec<usize> {
            self.workers.iter().map(|w| self.holders.values().filter(|h| *h == w).count()).collect()
        }
    }

    #[test]
    fn six_cameras_spread_two_each_over_three_workers_and_every_camera_has_one_holder() {
        let mut w = World::new(6, &["w1", "w2", "w3"]);
        for _ in 0..5 {
            w.tick(32, Duration::ZERO);
        }
        assert_eq!(w.counts(), vec![2, 2, 2]);
        assert_eq!(w.holders.len(), 6);
        assert_eq!(w.tick(32, Duration::ZERO), 0, "settled: nothing moves");
    }

    #[test]
    fn a_dead_workers_cameras_go_to_the_others_and_a_fourth_worker_gets_a_share() {
        let mut w = World::new(6, &["w1", "w2", "w3"]);
        for _ in 0..5 {
            w.tick(32, Duration::ZERO);
        }
        // w2 dies: its leases expire, its presence too
        w.workers.remove("w2");
        w.holders.retain(|_, h| h != "w2");
        w.tick(32, Duration::ZERO);
        assert_eq!(w.counts(), vec![3, 3]);
        // a fourth worker joins: it gets cameras, each camera moves at most once
        w.workers.insert("w4".into());
        let mut moved = 0;
        for _ in 0..10 {
            moved += w.tick(32, Duration::ZERO);
        }
        let c = w.counts();
        assert!(c.iter().all(|&n| (1..=2).contains(&n)), "{c:?}");
        assert_eq!(c.iter().sum::<usize>(), 6);
        assert!(moved <= 4, "{moved} moves (a release and a claim per camera handed over)");
    }

    #[test]
    fn max_cameras_caps_a_worker_and_a_dropping_worker_leaves_free_cameras_to_others_for_a_while() {
        let mut w = World::new(6, &["w1"]);
        w.tick(4, Duration::ZERO);
        assert_eq!(w.counts(), vec![4], "max_cameras");
        let free_for: BTreeMap<String, Duration> = [("cam9".to_string(), Duration::from_secs(1))].into();
        let cameras = vec!["cam9".to_string()];
        let workers: BTreeSet<String> = ["w1".to_string(), "w2".to_string()].into();
        let mut s = Situation {
            me: "w1",
            cameras: &cameras,
            holders: &BTreeMap::new(),
            workers: &workers,
            free_for: &free_for,
            not_now: &BTreeSet::new(),
            max_cameras: 8,
            dropping: true,
            patience: Duration::from_secs(10),
        };
        assert!(decide(&s).is_empty(), "dropping: leave it to w2 first");
        let later: BTreeMap<String, Duration> = [("cam9".to_string(), Duration::from_secs(11))].into();
        s.free_for = &later;
        assert_eq!(decide(&s), vec![Move::Claim("cam9".into())], "nobody took it: take it anyway");
        let not_now: BTreeSet<String> = ["cam9".to_string()].into();
        s.not_now = &not_now;
        assert!(decide(&s).is_empty(), "a camera let go a moment ago is not taken back");
    }
}

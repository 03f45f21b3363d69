//! Capped exponential backoff with jitter, for every retry loop (camera reconnects, store
//! uploads, broker publishes).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubles up to `max`; each wait adds up to `jitter` so that many
    /// retrying clients do not move in step.
    pub fn new(initial: Duration, max: Duration, jitter: Duration) -> Backoff {
        Backoff { initial, max, jitter, next: initial.min(max) }
    }

    /// The wait before the next attempt (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base + self.jitter_now()
    }

    /// After a success: start again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }

    fn jitter_now(&self) -> Duration {
        let ms = self.jitter.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        Duration::from_millis(u64::from_le_bytes(b) % ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1), Duration::ZERO);
        let w: Vec<u64> = (0..5).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(w, vec![200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(200));
        let mut j = Backoff::new(Duration::from_millis(100), Duration::from_millis(100), Duration::from_millis(50));
        for _ in 0..20 {
            let w = j.next_wait();
            assert!(w >= Duration::from_millis(100) && w < Duration::from_millis(150), "{w:?}");
        }
    }
}

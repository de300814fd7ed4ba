//! The reassignment throttle, Kafka's `leader.replication.throttled.rate`:
//! a cap, in bytes per second, on the log a leader sends to the replicas a
//! reassignment is adding while they catch up, shared by every partition
//! this broker leads, so moving data does not take the disk and network
//! clients need. Replicas already in the group are never throttled.
//!
//! A token bucket that may run into debt: an AppendEntries to a throttled
//! replica carries the entries the credit covers (at least one, when the
//! bucket is not in debt), so the average stays at the rate whatever the
//! size of the entries; the rest goes in the next one. Raft hears a partial
//! success, never an error, so a throttled replica is not backed off from
//! nor logged as failing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;

use super::GroupId;

/// At most this much credit builds up while nothing is sent.
const BURST: Duration = Duration::from_millis(200);

pub struct CatchUpThrottle {
    /// Bytes per second; 0: unlimited. A dynamic config: changes at run time.
    rate: AtomicU64,
    state: Mutex<State>,
}

/// 0 or `i64::MAX` (Kafka's default) means no throttle.
fn limit(rate: u64) -> u64 {
    if rate >= i64::MAX as u64 { 0 } else { rate }
}

struct State {
    throttled: HashSet<(GroupId, u64)>,
    /// Bytes that may be sent now; negative: debt.
    tokens: f64,
    refilled: Instant,
}

impl CatchUpThrottle {
    /// `rate` in bytes per second; 0 or `i64::MAX` (Kafka's default) means
    /// no throttle.
    pub fn new(rate: u64) -> Self {
        Self {
            rate: AtomicU64::new(limit(rate)),
            state: Mutex::new(State {
                throttled: HashSet::new(),
                tokens: 0.0,
                refilled: Instant::now(),
            }),
        }
    }

    /// Changes the rate (a dynamic broker config was set or removed).
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(limit(rate), Ordering::Relaxed);
    }

    /// Bytes per second; `None`: unlimited.
    pub fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|&r| r > 0)
    }

    /// Throttles what `group` sends to `targets` (replicas catching up).
    pub fn throttle(&self, group: GroupId, targets: impl IntoIterator<Item = u64>) {
        let mut s = self.state.lock();
        s.throttled.extend(targets.into_iter().map(|t| (group, t)));
    }

    /// Stops throttling `group` (its new replicas are voters, or it stopped).
    pub fn release(&self, group: GroupId) {
        self.state.lock().throttled.retain(|(g, _)| *g != group);
    }

    pub fn applies(&self, group: GroupId, target: u64) -> bool {
        self.rate().is_some() && self.state.lock().throttled.contains(&(group, target))
    }

    /// How many of the entries of `sizes` (bytes each) may go now, taking
    /// their bytes: while there is credit, one more; none when in debt
    /// (then, how long until there is credit).
    fn try_take(&self, sizes: &[usize]) -> Result<usize, Duration> {
        let Some(rate) = self.rate() else {
            return Ok(sizes.len());
        };
        let rate = rate as f64;
        let mut s = self.state.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(s.refilled).as_secs_f64();
        s.refilled = now;
        s.tokens = (s.tokens + elapsed * rate).min(rate * BURST.as_secs_f64());
        if s.tokens < 0.0 {
            return Err(Duration::from_secs_f64(-s.tokens / rate));
        }
        let mut n = 0;
        for &size in sizes {
            if s.tokens < 0.0 {
                break;
            }
            s.tokens -= size as f64;
            n += 1;
        }
        Ok(n)
    }

    /// Waits, at most `budget`, until some of the entries of `sizes` may
    /// go; returns how many (0 when the budget ran out first, so one call
    /// never outlives Raft's deadline for it).
    pub async fn admit(&self, sizes: &[usize], budget: Duration) -> usize {
        let started = Instant::now();
        loop {
            match self.try_take(sizes) {
                Ok(n) => return n,
                Err(wait) => {
                    let left = budget.saturating_sub(started.elapsed());
                    if wait > left {
                        tokio::time::sleep(left).await;
                        return 0;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn gid() -> GroupId {
        GroupId::Partition {
            topic_id: Uuid::nil(),
            partition: 0,
        }
    }

    #[test]
    fn only_marked_replicas_of_a_rated_throttle_are_throttled() {
        let t = CatchUpThrottle::new(1000);
        assert!(!t.applies(gid(), 4));
        t.throttle(gid(), [4]);
        assert!(t.applies(gid(), 4));
        assert!(!t.applies(gid(), 5));
        t.release(gid());
        assert!(!t.applies(gid(), 4));
        let unlimited = CatchUpThrottle::new(i64::MAX as u64);
        unlimited.throttle(gid(), [4]);
        assert!(!unlimited.applies(gid(), 4));
    }

    #[tokio::test(start_paused = true)]
    async fn entries_average_out_at_the_rate() {
        let t = CatchUpThrottle::new(1_000_000);
        let start = Instant::now();
        let mut sent = 0usize;
        // 4 MB in entries of 100 kB offered 32 at a time, at 1 MB/s: about
        // 4 s (the first entry goes at once).
        let mut left = 40;
        while left > 0 {
            let sizes = vec![100_000; left.min(32)];
            let n = t.admit(&sizes, Duration::from_millis(150)).await;
            sent += n * 100_000;
            left -= n;
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = (sent - 100_000) as f64 / secs;
        assert!(
            (900_000.0..=1_100_000.0).contains(&rate),
            "rate {rate} over {secs} s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_larger_than_the_credit_goes_alone_and_the_next_waits_its_turn() {
        let t = CatchUpThrottle::new(1_000_000);
        assert_eq!(
            t.admit(&[2_000_000, 10], Duration::from_millis(150)).await,
            1
        );
        let start = Instant::now();
        assert_eq!(t.admit(&[10], Duration::from_millis(150)).await, 0);
        assert!(start.elapsed() <= Duration::from_millis(160));
    }

    #[test]
    fn without_a_rate_everything_goes() {
        let t = CatchUpThrottle::new(0);
        assert_eq!(t.try_take(&[usize::MAX, 5, 7]), Ok(3));
    }
}

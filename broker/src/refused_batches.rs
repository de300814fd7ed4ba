//! Idempotent batches this broker refused before writing them, so that a
//! later batch of the same producer is not written past the gap.
//!
//! A producer sends several requests to a partition at once (librdkafka:
//! up to five). When the first is refused and a later one, a moment later,
//! is not, the later batch must not be written. For a producer the
//! partition knows, the sequence check refuses it. For one it does not know
//! (its very first batch to the partition was the refused one) any sequence
//! is accepted, as in Kafka for a producer whose state expired, and
//! librdkafka, seeing a later batch acknowledged, counts the refused one as
//! persisted ("implicit ack"): an acknowledged message that is not in the
//! log. So the later batch is refused as a sequence gap
//! (NOT_LEADER_OR_FOLLOWER, see [`crate::producer_state`]): the client
//! resends in order, the refused batch first.
//!
//! A refusal can come from anywhere before the write: a topic this broker
//! does not list yet, a replica that does not lead yet or has no group yet,
//! too few replicas in sync, a leader stepping aside. So the memory is the
//! broker's, keyed by the partition as the client named it, and every
//! pre-write refusal of the produce path is remembered. A batch that was
//! proposed and then timed out is not: it may still commit, and the batch
//! after it is in sequence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use skiff_log::batch::BatchHeader;

use crate::errors::{BrokerError, Result};
use crate::producer_state::is_ahead;

/// Refusals remembered at most; past this the oldest go first.
const MAX: usize = 10_000;

/// How long a refusal is remembered at most. The batches it protects
/// against were already on their way when it was answered, and reach the
/// broker on the same connection right after it. A stale memory would
/// instead refuse, much later, a producer whose state expired in the
/// meantime, at the sequence librdkafka expects to be acknowledged next:
/// fatal for it.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    epoch: i16,
    /// The lowest first sequence refused.
    seq: i32,
    at: Instant,
}

type Key = (i32, i64);

#[derive(Debug)]
pub struct RefusedBatches {
    /// Per topic name, per (partition, producer id).
    refused: Mutex<HashMap<String, HashMap<Key, Refusal>>>,
    /// Entries in `refused`, read without the lock: nearly always 0.
    len: AtomicUsize,
    lifetime: Duration,
}

impl RefusedBatches {
    /// A memory whose refusals last `lifetime` (at most
    /// [`REMEMBERED_FOR`]; a partition that forgets idle producers sooner
    /// must not remember refusals longer than it remembers producers).
    pub fn new(lifetime: Duration) -> Self {
        Self {
            refused: Mutex::default(),
            len: AtomicUsize::new(0),
            lifetime: lifetime.min(REMEMBERED_FOR),
        }
    }

    /// `h` was refused on (`topic`, `partition`) without being written.
    pub fn remember(&self, topic: &str, partition: i32, h: &BatchHeader, now: Instant) {
        if !h.has_producer_id() {
            return;
        }
        let fresh = Refusal {
            epoch: h.producer_epoch,
            seq: h.base_sequence,
            at: now,
        };
        let mut refused = self.refused.lock();
        let key = (partition, h.producer_id);
        if let Some(r) = refused.get_mut(topic).and_then(|t| t.get_mut(&key)) {
            let live = now.saturating_duration_since(r.at) < self.lifetime;
            match h.producer_epoch.cmp(&r.epoch) {
                // A fenced epoch's batch says nothing about the current one.
                std::cmp::Ordering::Less if live => {}
                std::cmp::Ordering::Equal if live => {
                    // The earlier of the two, across the wrap to 0.
                    if is_ahead(h.base_sequence, r.seq) {
                        r.seq = h.base_sequence;
                    }
                    r.at = now;
                }
                _ => *r = fresh,
            }
            return;
        }
        if self.len.load(Ordering::Relaxed) >= MAX {
            self.make_room(&mut refused, now);
        }
        refused
            .entry(topic.to_string())
            .or_default()
            .insert(key, fresh);
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the refusals past their lifetime, then, if none was, the
    /// oldest one.
    fn make_room(&self, refused: &mut HashMap<String, HashMap<Key, Refusal>>, now: Instant) {
        let mut dropped = 0;
        for partitions in refused.values_mut() {
            partitions.retain(|_, r| {
                let keep = now.saturating_duration_since(r.at) < self.lifetime;
                dropped += usize::from(!keep);
                keep
            });
        }
        if dropped == 0 {
            let oldest = refused
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |(k, r)| (r.at, t, *k)))
                .min_by_key(|(at, _, _)| *at)
                .map(|(_, t, k)| (t.clone(), k));
            if let Some((t, k)) = oldest
                && let Some(ps) = refused.get_mut(&t)
            {
                ps.remove(&k);
                dropped = 1;
            }
        }
        refused.retain(|_, ps| !ps.is_empty());
        self.len.fetch_sub(dropped, Ordering::Relaxed);
    }

    /// Refuses `h` if it would be written past a refused batch of its
    /// producer; a resend of the refused batch (or of an earlier one) or a
    /// new epoch ends the memory. Only for a producer the partition's log
    /// does not know (`known`, asked without the memory's lock and only
    /// when there is a refusal to weigh): once it has batches in the log
    /// (written here or through another leader), the sequence check sees
    /// any gap.
    ///
    /// # Errors
    /// `SequenceGap`.
    pub fn check(
        &self,
        topic: &str,
        partition: i32,
        h: &BatchHeader,
        now: Instant,
        known: impl FnOnce() -> bool,
    ) -> Result<()> {
        if self.len.load(Ordering::Relaxed) == 0 || !h.has_producer_id() {
            return Ok(());
        }
        let key = (partition, h.producer_id);
        let Some(r) = self
            .refused
            .lock()
            .get(topic)
            .and_then(|t| t.get(&key))
            .copied()
        else {
            return Ok(());
        };
        let passes = now.saturating_duration_since(r.at) >= self.lifetime
            || h.producer_epoch > r.epoch
            || (h.producer_epoch == r.epoch && !is_ahead(r.seq, h.base_sequence));
        if passes || known() {
            self.forget(topic, key, r);
            return Ok(());
        }
        if h.producer_epoch == r.epoch {
            return Err(BrokerError::SequenceGap(format!(
                "producer {} epoch {}: a batch at sequence {} follows the one at {}, which was refused and not written; resend in order",
                h.producer_id, r.epoch, h.base_sequence, r.seq
            )));
        }
        // A fenced epoch: the partition's own checks answer it.
        Ok(())
    }

    /// Forgets `seen`, unless a refusal came in since it was read.
    fn forget(&self, topic: &str, key: Key, seen: Refusal) {
        let mut refused = self.refused.lock();
        let Some(partitions) = refused.get_mut(topic) else {
            return;
        };
        if partitions.get(&key) != Some(&seen) {
            return;
        }
        partitions.remove(&key);
        if partitions.is_empty() {
            refused.remove(topic);
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer_state::test_support::header;

    fn memory() -> RefusedBatches {
        RefusedBatches::new(REMEMBERED_FOR)
    }

    #[test]
    fn a_batch_past_one_refused_unwritten_is_out_of_order_until_the_resend() {
        let r = memory();
        let t0 = Instant::now();
        let check = |p: i32, h: BatchHeader, known: bool| r.check("t", p, &h, t0, || known);
        // A new producer's first batch is refused (say, its topic is not
        // listed here yet); its second, a moment later, must not be written.
        r.remember("t", 0, &header(7, 0, 0, 2), t0);
        assert!(matches!(
            check(0, header(7, 0, 2, 3), false),
            Err(BrokerError::SequenceGap(_))
        ));
        // Another producer, partition or topic is not concerned.
        assert!(check(0, header(8, 0, 5, 1), false).is_ok());
        assert!(check(1, header(7, 0, 5, 1), false).is_ok());
        assert!(r.check("u", 0, &header(7, 0, 5, 1), t0, || false).is_ok());
        // The resend of the refused batch goes, and so does what follows.
        assert!(check(0, header(7, 0, 0, 2), false).is_ok());
        assert!(check(0, header(7, 0, 2, 3), false).is_ok());
        assert_eq!(r.len.load(Ordering::Relaxed), 0);
        // A new epoch starts afresh.
        r.remember("t", 0, &header(7, 0, 5, 1), t0);
        assert!(check(0, header(7, 1, 0, 1), false).is_ok());
        assert!(check(0, header(7, 0, 9, 1), false).is_ok());
        // Two refusals: the lowest sequence counts.
        r.remember("t", 0, &header(7, 0, 12, 1), t0);
        r.remember("t", 0, &header(7, 0, 10, 2), t0);
        assert!(check(0, header(7, 0, 11, 1), false).is_err());
        assert!(check(0, header(7, 0, 10, 2), false).is_ok());
        // Once the log knows the producer (the refused batch was written
        // through another leader, say), the memory is dropped: the
        // sequence check sees gaps from there.
        r.remember("t", 0, &header(7, 0, 20, 1), t0);
        assert!(check(0, header(7, 0, 30, 1), true).is_ok());
        assert!(check(0, header(7, 0, 30, 1), false).is_ok());
        // Batches without a producer id are never remembered.
        r.remember("t", 0, &header(-1, -1, -1, 1), t0);
        assert!(check(0, header(-1, -1, 4, 1), false).is_ok());
        assert_eq!(r.len.load(Ordering::Relaxed), 0);
        assert!(r.refused.lock().is_empty());
    }

    #[test]
    fn sequences_near_the_wrap_to_zero_keep_their_order() {
        let r = memory();
        let t0 = Instant::now();
        r.remember("t", 0, &header(7, 0, i32::MAX - 1, 5), t0);
        // Sequence 3 follows the refused batch (after i32::MAX comes 0).
        assert!(r.check("t", 0, &header(7, 0, 3, 1), t0, || false).is_err());
        // A refusal further on keeps the earlier one.
        r.remember("t", 0, &header(7, 0, 3, 1), t0);
        assert!(r.check("t", 0, &header(7, 0, 1, 1), t0, || false).is_err());
        // The resend of the refused batch goes.
        assert!(
            r.check("t", 0, &header(7, 0, i32::MAX - 1, 5), t0, || false)
                .is_ok()
        );
    }

    #[test]
    fn a_fenced_epoch_neither_replaces_nor_ends_the_memory() {
        let r = memory();
        let t0 = Instant::now();
        r.remember("t", 0, &header(7, 3, 4, 1), t0);
        // A batch of the previous epoch, still in flight, refused too.
        r.remember("t", 0, &header(7, 2, 0, 1), t0);
        assert!(r.check("t", 0, &header(7, 2, 9, 1), t0, || false).is_ok());
        assert!(matches!(
            r.check("t", 0, &header(7, 3, 5, 1), t0, || false),
            Err(BrokerError::SequenceGap(_))
        ));
    }

    #[test]
    fn a_refusal_is_forgotten_after_its_lifetime() {
        let t0 = Instant::now();
        for lifetime in [REMEMBERED_FOR, Duration::from_secs(5)] {
            let r = RefusedBatches::new(lifetime);
            r.remember("t", 0, &header(7, 0, 0, 1), t0);
            let soon = t0 + lifetime - Duration::from_millis(1);
            assert!(
                r.check("t", 0, &header(7, 0, 1, 1), soon, || false)
                    .is_err()
            );
            let later = t0 + lifetime;
            assert!(
                r.check("t", 0, &header(7, 0, 1, 1), later, || false)
                    .is_ok()
            );
            assert_eq!(r.len.load(Ordering::Relaxed), 0);
            assert!(r.refused.lock().is_empty());
        }
        // Never longer than REMEMBERED_FOR.
        let r = RefusedBatches::new(Duration::from_secs(86_400));
        r.remember("t", 0, &header(7, 0, 0, 1), t0);
        let later = t0 + REMEMBERED_FOR;
        assert!(
            r.check("t", 0, &header(7, 0, 1, 1), later, || false)
                .is_ok()
        );
    }

    #[test]
    fn a_full_memory_drops_the_expired_then_the_oldest_refusal() {
        let r = memory();
        let t0 = Instant::now();
        let at = |i: i64| t0 + Duration::from_millis(i as u64);
        for pid in 0..MAX as i64 {
            r.remember("t", 0, &header(pid, 0, 3, 1), at(pid));
        }
        // One more: the oldest (pid 0) goes, every other stays.
        r.remember("t", 1, &header(1, 0, 3, 1), at(MAX as i64));
        assert_eq!(r.len.load(Ordering::Relaxed), MAX);
        let now = at(MAX as i64);
        assert!(r.check("t", 0, &header(0, 0, 4, 1), now, || false).is_ok());
        for pid in [1, MAX as i64 / 2, MAX as i64 - 1] {
            assert!(
                r.check("t", 0, &header(pid, 0, 4, 1), now, || false)
                    .is_err()
            );
        }
        assert!(r.check("t", 1, &header(1, 0, 4, 1), now, || false).is_err());
        // Past their lifetime, all of the old ones make room at once.
        let much_later = at(MAX as i64) + REMEMBERED_FOR;
        r.remember("t", 2, &header(1, 0, 3, 1), much_later);
        assert_eq!(r.len.load(Ordering::Relaxed), 1);
        assert!(
            r.check("t", 2, &header(1, 0, 4, 1), much_later, || false)
                .is_err()
        );
    }
}

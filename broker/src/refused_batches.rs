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
//! log. So the later batch gets OUT_OF_ORDER_SEQUENCE_NUMBER, which
//! librdkafka answers by resending from the refused batch, under a bumped
//! epoch from sequence 0 ("skipped sequence numbers").
//!
//! A refusal can come from anywhere before the write: a topic this broker
//! does not list yet, a replica that does not lead yet or has no group yet,
//! too few replicas in sync, a leader stepping aside. So the memory is the
//! broker's, keyed by the partition as the client named it, and every
//! pre-write refusal of the produce path is remembered. A batch that was
//! proposed and then timed out is not: it may still commit, and the batch
//! after it is in sequence.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use skiff_log::batch::BatchHeader;

use crate::errors::{BrokerError, Result};

/// Refusals remembered at most; past this the memory starts afresh.
const MAX: usize = 10_000;

/// How long a refusal is remembered. The batches it protects against were
/// already on their way when it was answered, and reach the broker on the
/// same connection right after it; a stale memory would instead refuse,
/// much later, a producer whose state expired in the meantime (which
/// librdkafka treats as fatal).
pub const REMEMBERED_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Refusal {
    epoch: i16,
    /// The lowest first sequence refused.
    seq: i32,
    at: Instant,
}

/// Per topic (as the client named it: name, or topic id), per (partition,
/// producer id).
#[derive(Debug, Default)]
pub struct RefusedBatches {
    refused: HashMap<String, HashMap<(i32, i64), Refusal>>,
    len: usize,
}

impl RefusedBatches {
    /// `h` was refused on (`topic`, `partition`) without being written.
    pub fn remember(&mut self, topic: &str, partition: i32, h: &BatchHeader, now: Instant) {
        if !h.has_producer_id() {
            return;
        }
        if self.len >= MAX {
            self.refused.clear();
            self.len = 0;
        }
        let fresh = Refusal {
            epoch: h.producer_epoch,
            seq: h.base_sequence,
            at: now,
        };
        let partitions = self.refused.entry(topic.to_string()).or_default();
        match partitions.get_mut(&(partition, h.producer_id)) {
            Some(r) if r.epoch == h.producer_epoch && now.duration_since(r.at) < REMEMBERED_FOR => {
                r.seq = r.seq.min(h.base_sequence);
                r.at = now;
            }
            Some(r) => *r = fresh,
            None => {
                partitions.insert((partition, h.producer_id), fresh);
                self.len += 1;
            }
        }
    }

    /// Refuses `h` if it would be written past a refused batch of its
    /// producer; a resend of the refused batch (or of an earlier one) or a
    /// new epoch ends the memory. Only for a producer the partition's log
    /// does not know (`known`, asked only when there is a refusal to
    /// weigh): once it has batches in the log (written here or through
    /// another leader), the sequence check sees any gap.
    ///
    /// # Errors
    /// `OutOfOrderSequence`.
    pub fn check(
        &mut self,
        topic: &str,
        partition: i32,
        h: &BatchHeader,
        now: Instant,
        known: impl FnOnce() -> bool,
    ) -> Result<()> {
        if self.len == 0 || !h.has_producer_id() {
            return Ok(());
        }
        let Some(partitions) = self.refused.get_mut(topic) else {
            return Ok(());
        };
        let key = (partition, h.producer_id);
        let Some(&r) = partitions.get(&key) else {
            return Ok(());
        };
        let forget = now.duration_since(r.at) >= REMEMBERED_FOR
            || known()
            || h.producer_epoch > r.epoch
            || (h.producer_epoch == r.epoch && h.base_sequence <= r.seq);
        if forget {
            partitions.remove(&key);
            self.len -= 1;
            if partitions.is_empty() {
                self.refused.remove(topic);
            }
            return Ok(());
        }
        if h.producer_epoch == r.epoch {
            return Err(BrokerError::OutOfOrderSequence(format!(
                "producer {} epoch {}: a batch at sequence {} follows the one at {}, which was refused and not written",
                h.producer_id, r.epoch, h.base_sequence, r.seq
            )));
        }
        // An older epoch: the partition's own checks answer it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer_state::test_support::header;

    #[test]
    fn a_batch_past_one_refused_unwritten_is_out_of_order_until_the_resend() {
        let mut r = RefusedBatches::default();
        let t0 = Instant::now();
        let check = |r: &mut RefusedBatches, p: i32, h: BatchHeader, known: bool| {
            r.check("t", p, &h, t0, || known)
        };
        // A new producer's first batch is refused (say, its topic is not
        // listed here yet); its second, a moment later, must not be written.
        r.remember("t", 0, &header(7, 0, 0, 2), t0);
        assert!(matches!(
            check(&mut r, 0, header(7, 0, 2, 3), false),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
        // Another producer, partition or topic is not concerned.
        assert!(check(&mut r, 0, header(8, 0, 5, 1), false).is_ok());
        assert!(check(&mut r, 1, header(7, 0, 5, 1), false).is_ok());
        assert!(r.check("u", 0, &header(7, 0, 5, 1), t0, || false).is_ok());
        // The resend of the refused batch goes, and so does what follows.
        assert!(check(&mut r, 0, header(7, 0, 0, 2), false).is_ok());
        assert!(check(&mut r, 0, header(7, 0, 2, 3), false).is_ok());
        assert_eq!(r.len, 0);
        // A new epoch starts afresh.
        r.remember("t", 0, &header(7, 0, 5, 1), t0);
        assert!(check(&mut r, 0, header(7, 1, 0, 1), false).is_ok());
        assert!(check(&mut r, 0, header(7, 0, 9, 1), false).is_ok());
        // Two refusals: the lowest sequence counts.
        r.remember("t", 0, &header(7, 0, 12, 1), t0);
        r.remember("t", 0, &header(7, 0, 10, 2), t0);
        assert!(check(&mut r, 0, header(7, 0, 11, 1), false).is_err());
        assert!(check(&mut r, 0, header(7, 0, 10, 2), false).is_ok());
        // Once the log knows the producer (the refused batch was written
        // through another leader, say), the memory is dropped: the
        // sequence check sees gaps from there.
        r.remember("t", 0, &header(7, 0, 20, 1), t0);
        assert!(check(&mut r, 0, header(7, 0, 30, 1), true).is_ok());
        assert!(check(&mut r, 0, header(7, 0, 30, 1), false).is_ok());
        // Batches without a producer id are never remembered.
        r.remember("t", 0, &header(-1, -1, -1, 1), t0);
        assert!(check(&mut r, 0, header(-1, -1, 4, 1), false).is_ok());
        assert_eq!(r.len, 0);
    }

    #[test]
    fn a_refusal_is_forgotten_after_a_while() {
        let mut r = RefusedBatches::default();
        let t0 = Instant::now();
        r.remember("t", 0, &header(7, 0, 0, 1), t0);
        let soon = t0 + REMEMBERED_FOR - Duration::from_millis(1);
        assert!(
            r.check("t", 0, &header(7, 0, 1, 1), soon, || false)
                .is_err()
        );
        let later = t0 + REMEMBERED_FOR;
        assert!(
            r.check("t", 0, &header(7, 0, 1, 1), later, || false)
                .is_ok()
        );
        assert_eq!(r.len, 0);
        assert!(r.refused.is_empty());
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut r = RefusedBatches::default();
        let t0 = Instant::now();
        for pid in 0..MAX as i64 + 5 {
            r.remember("t", 0, &header(pid, 0, 3, 1), t0);
        }
        assert!(r.len <= MAX);
        assert!(r.len >= 5);
    }
}

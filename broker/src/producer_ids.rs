//! Producer ids for InitProducerId: allocation from a durable counter, and
//! the epoch bump of KIP-360.
//!
//! Ids are reserved in blocks of [`BLOCK_SIZE`]: the end of the block is
//! written (and flushed) to the metadata store before the first id of it is
//! handed out, so an InitProducerId is usually no disk write, and after a
//! crash allocation resumes at the stored end — the unused rest of the last
//! block is skipped, never reused. Kafka's controller hands out blocks of
//! 1000 the same way.
//!
//! A client that passes its current producer id and epoch (InitProducerId
//! v3+, as librdkafka does after an error that needs one) gets the same id
//! with the next epoch, so its partitions restart its sequences at 0 and any
//! batch of the old epoch still in flight is fenced with
//! `INVALID_PRODUCER_EPOCH`. A retry of a bump whose answer was lost gets the
//! same answer again; an epoch older than that is `PRODUCER_FENCED`. An
//! exhausted epoch, or an id this broker never issued, gets a fresh id at
//! epoch 0.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::cluster::meta_store::MetaStore;
use crate::errors::{BrokerError, Result};

/// Ids reserved per durable write.
pub const BLOCK_SIZE: i64 = 1000;

/// Kafka treats an epoch at `i16::MAX - 1` or above as exhausted.
const LAST_EPOCH: i16 = i16::MAX - 1;

#[derive(Debug)]
struct Block {
    next: i64,
    end: i64,
}

/// The epochs a bump handed out for one producer id.
#[derive(Debug, Clone, Copy)]
struct Bumped {
    epoch: i16,
    previous: i16,
    at_ms: i64,
}

pub struct ProducerIds {
    block: Mutex<Block>,
    /// Producer ids whose epoch was bumped here, for retries and fencing.
    /// In memory only: after a restart a bump is accepted from any epoch,
    /// and the partitions still fence older epochs.
    bumped: Mutex<HashMap<i64, Bumped>>,
}

/// A producer id and epoch to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub epoch: i16,
}

impl ProducerIds {
    /// Resumes after the last block recorded in `store`.
    ///
    /// # Errors
    /// The store failing to read.
    pub fn open(store: &MetaStore) -> anyhow::Result<Self> {
        let end = store.producer_id_block_end()?;
        Ok(Self {
            block: Mutex::new(Block { next: end, end }),
            bumped: Mutex::new(HashMap::new()),
        })
    }

    /// A new producer id. Blocking: may flush the store.
    ///
    /// # Errors
    /// `Storage` if the next block cannot be recorded.
    pub fn allocate(&self, store: &MetaStore) -> Result<i64> {
        let mut b = self.block.lock();
        if b.next >= b.end {
            let (start, end) = store
                .reserve_producer_ids(BLOCK_SIZE)
                .map_err(|e| BrokerError::Storage(e.to_string()))?;
            b.next = start;
            b.end = end;
        }
        let id = b.next;
        b.next += 1;
        Ok(id)
    }

    /// Whether this broker may have issued `producer_id`.
    fn issued(&self, producer_id: i64) -> bool {
        producer_id >= 0 && producer_id < self.block.lock().next
    }

    /// InitProducerId without a transactional id: a fresh id at epoch 0, or,
    /// when the client passes its current id and epoch, the epoch bump.
    /// Blocking: may flush the store.
    ///
    /// # Errors
    /// `InvalidRequest` when only one of id and epoch is set;
    /// `ProducerFenced` for an epoch older than the last bump's;
    /// `Storage` when a new block cannot be recorded.
    pub fn init(
        &self,
        store: &MetaStore,
        current: Option<ProducerIdAndEpoch>,
        now_ms: i64,
    ) -> Result<ProducerIdAndEpoch> {
        let fresh = |ids: &Self| -> Result<ProducerIdAndEpoch> {
            Ok(ProducerIdAndEpoch {
                producer_id: ids.allocate(store)?,
                epoch: 0,
            })
        };
        let Some(cur) = current else {
            return fresh(self);
        };
        if !self.issued(cur.producer_id) || cur.epoch < 0 {
            return fresh(self);
        }
        let mut bumped = self.bumped.lock();
        if let Some(b) = bumped.get(&cur.producer_id).copied() {
            if cur.epoch == b.previous {
                // A retry of the bump we already answered.
                return Ok(ProducerIdAndEpoch {
                    producer_id: cur.producer_id,
                    epoch: b.epoch,
                });
            }
            if cur.epoch < b.previous {
                return Err(BrokerError::ProducerFenced(format!(
                    "producer {} epoch {} is older than its current epoch {}",
                    cur.producer_id, cur.epoch, b.epoch
                )));
            }
        }
        if cur.epoch >= LAST_EPOCH {
            bumped.remove(&cur.producer_id);
            drop(bumped);
            return fresh(self);
        }
        let epoch = cur.epoch + 1;
        bumped.insert(
            cur.producer_id,
            Bumped {
                epoch,
                previous: cur.epoch,
                at_ms: now_ms,
            },
        );
        Ok(ProducerIdAndEpoch {
            producer_id: cur.producer_id,
            epoch,
        })
    }

    /// Forgets bumps older than `max_idle_ms`.
    pub fn expire(&self, now_ms: i64, max_idle_ms: i64) {
        self.bumped
            .lock()
            .retain(|_, b| now_ms.saturating_sub(b.at_ms) < max_idle_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pe(producer_id: i64, epoch: i16) -> ProducerIdAndEpoch {
        ProducerIdAndEpoch { producer_id, epoch }
    }

    #[test]
    fn ids_are_never_reused_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("store");
        let ids = ProducerIds::open(&store).expect("open");
        let first: Vec<i64> = (0..3).map(|_| ids.allocate(&store).expect("id")).collect();
        assert_eq!(first, vec![0, 1, 2]);
        assert_eq!(store.producer_id_block_end().expect("read"), BLOCK_SIZE);
        // A crash: the rest of the block is skipped.
        let ids = ProducerIds::open(&store).expect("reopen");
        assert_eq!(ids.allocate(&store).expect("id"), BLOCK_SIZE);
        for _ in 1..BLOCK_SIZE {
            ids.allocate(&store).expect("id");
        }
        assert_eq!(ids.allocate(&store).expect("id"), 2 * BLOCK_SIZE);
        assert_eq!(store.producer_id_block_end().expect("read"), 3 * BLOCK_SIZE);
    }

    #[test]
    fn a_bump_keeps_the_id_retries_repeat_and_older_epochs_are_fenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("store");
        let ids = ProducerIds::open(&store).expect("open");
        let p = ids.init(&store, None, 0).expect("init");
        assert_eq!(p, pe(0, 0));
        assert_eq!(ids.init(&store, Some(p), 0).expect("bump"), pe(0, 1));
        // The same request again (the answer was lost): the same answer.
        assert_eq!(ids.init(&store, Some(p), 0).expect("retry"), pe(0, 1));
        assert_eq!(ids.init(&store, Some(pe(0, 1)), 0).expect("bump"), pe(0, 2));
        assert!(matches!(
            ids.init(&store, Some(pe(0, 0)), 0),
            Err(BrokerError::ProducerFenced(_))
        ));
        // An id never issued, or an exhausted epoch: a fresh id.
        assert_eq!(
            ids.init(&store, Some(pe(999, 3)), 0).expect("new"),
            pe(1, 0)
        );
        assert_eq!(
            ids.init(&store, Some(pe(1, LAST_EPOCH)), 0).expect("new"),
            pe(2, 0)
        );
    }
}

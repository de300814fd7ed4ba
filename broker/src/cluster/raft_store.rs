//! The metadata group's openraft storage in sled: the log (key: index,
//! big-endian), the vote and committed id, and the state machine, which is
//! small enough to be written whole after every applied batch. A snapshot is
//! that same serialized state, so compaction is cheap and a broker that
//! comes back with an empty disk is brought up to date by one install.

// openraft's traits dictate `StorageError` as the error type; the helpers
// return it too rather than converting at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::meta_state::{FencingExtension, MetaCommand, MetaResponse, MetaState, StateExtensions};

impl crate::rpc::client::PayloadSize for MetaCommand {
    /// Metadata is never throttled: its size does not matter.
    fn payload_size(&self) -> usize {
        0
    }
}

openraft::declare_raft_types!(
    /// The metadata group's types.
    pub MetaTypes:
        D = MetaCommand,
        R = MetaResponse,
        NodeId = u64,
        Node = BasicNode,
);

type SErr = StorageError<u64>;

fn read_err(e: impl std::fmt::Display) -> SErr {
    StorageIOError::read(AnyError::error(e)).into()
}

fn write_err(e: impl std::fmt::Display) -> SErr {
    StorageIOError::write(AnyError::error(e)).into()
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, SErr> {
    postcard::to_stdvec(v).map_err(write_err)
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, SErr> {
    postcard::from_bytes(b).map_err(read_err)
}

/// The stored form of [`Applied`]: its encoding, then the state's
/// extensions in the order they were added ([`StateExtensions`],
/// [`FencingExtension`]).
fn enc_applied(a: &Applied) -> Result<Vec<u8>, SErr> {
    let mut bytes = enc(a)?;
    bytes.extend(enc(&a.state.extensions())?);
    bytes.extend(enc(&a.state.fencing())?);
    Ok(bytes)
}

/// Reads what [`enc_applied`] wrote, or an [`Applied`] stored before some
/// or all of the extensions existed.
fn dec_applied(b: &[u8]) -> Result<Applied, SErr> {
    let (mut a, rest): (Applied, &[u8]) = postcard::take_from_bytes(b).map_err(read_err)?;
    if rest.is_empty() {
        return Ok(a);
    }
    let (ext, rest): (StateExtensions, &[u8]) =
        postcard::take_from_bytes(rest).map_err(read_err)?;
    a.state.set_extensions(ext);
    if !rest.is_empty() {
        a.state.set_fencing(dec::<FencingExtension>(rest)?);
    }
    Ok(a)
}

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const APPLIED: &str = "applied";
const SNAPSHOT: &str = "snapshot";

/// The log and hard state.
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    /// # Errors
    /// sled failing to open its trees.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
        })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SErr> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => dec(&v).map(Some),
        }
    }

    async fn put<T: Serialize>(&self, key: &str, v: &T) -> Result<(), SErr> {
        self.meta.insert(key, enc(v)?).map_err(write_err)?;
        self.meta.flush_async().await.map_err(write_err)?;
        Ok(())
    }
}

impl RaftLogReader<MetaTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<MetaTypes>>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(read_err)?;
            let idx = u64::from_be_bytes(<[u8; 8]>::try_from(k.as_ref()).map_err(read_err)?);
            if !range.contains(&idx) {
                break;
            }
            out.push(dec(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<MetaTypes> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<MetaTypes>, SErr> {
        let last_purged_log_id: Option<LogId<u64>> = self.get(PURGED)?;
        let last = match self.log.last().map_err(read_err)? {
            Some((_, v)) => Some(dec::<Entry<MetaTypes>>(&v)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SErr> {
        self.put(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SErr> {
        self.get(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SErr> {
        self.put(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SErr> {
        Ok(self.get::<Option<LogId<u64>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<MetaTypes>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<MetaTypes>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&e.log_id.index.to_be_bytes(), enc(&e)?);
        }
        let res = match self.log.apply_batch(batch) {
            Ok(()) => self.log.flush_async().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let res = res.map_err(std::io::Error::other);
        let out = res.as_ref().map(|_| ()).map_err(write_err);
        callback.log_io_completed(res);
        out
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        self.remove_range(log_id.index..).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        self.put(PURGED, &log_id).await?;
        self.remove_range(..=log_id.index).await
    }
}

impl LogStore {
    async fn remove_range(&self, range: impl RangeBounds<u64>) -> Result<(), SErr> {
        let mut batch = sled::Batch::default();
        for item in self.log.iter().keys() {
            let k = item.map_err(read_err)?;
            let idx = u64::from_be_bytes(<[u8; 8]>::try_from(k.as_ref()).map_err(read_err)?);
            if range.contains(&idx) {
                batch.remove(k);
            }
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        self.log.flush_async().await.map_err(write_err)?;
        Ok(())
    }
}

/// What the state machine persists, and what a snapshot carries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: MetaState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The last applied log id and the membership it carries.
type AppliedId = (Option<LogId<u64>>, StoredMembership<u64, BasicNode>);

/// The state machine: the replicated [`MetaState`] every reader shares.
#[derive(Clone)]
pub struct StateMachine {
    tree: sled::Tree,
    state: Arc<RwLock<MetaState>>,
    applied: Arc<RwLock<AppliedId>>,
    /// The last applied index, for read-your-writes waits and watchers.
    notify: watch::Sender<u64>,
}

impl StateMachine {
    /// Loads the persisted state.
    ///
    /// # Errors
    /// sled failing, or an undecodable record.
    pub fn open(db: &sled::Db) -> Result<Self, SErr> {
        let tree = db.open_tree("raft_sm").map_err(read_err)?;
        let applied: Applied = match tree.get(APPLIED).map_err(read_err)? {
            Some(v) => dec_applied(&v)?,
            None => Applied::default(),
        };
        let idx = applied.last_applied.map_or(0, |l| l.index);
        Ok(Self {
            tree,
            state: Arc::new(RwLock::new(applied.state)),
            applied: Arc::new(RwLock::new((applied.last_applied, applied.membership))),
            notify: watch::Sender::new(idx),
        })
    }

    pub fn state(&self) -> Arc<RwLock<MetaState>> {
        self.state.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn snapshot_bytes(&self) -> Result<(Applied, Vec<u8>), SErr> {
        let (last_applied, membership) = self.applied.read().clone();
        let a = Applied {
            last_applied,
            membership,
            state: self.state.read().clone(),
        };
        let bytes = enc_applied(&a)?;
        Ok((a, bytes))
    }

    async fn persist(&self) -> Result<(), SErr> {
        let (_, bytes) = self.snapshot_bytes()?;
        self.tree.insert(APPLIED, bytes).map_err(write_err)?;
        self.tree.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    fn publish(&self) {
        let idx = self.applied.read().0.map_or(0, |l| l.index);
        self.notify.send_replace(idx);
    }
}

impl RaftSnapshotBuilder<MetaTypes> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaTypes>, SErr> {
        let (a, data) = self.snapshot_bytes()?;
        let snapshot_id = match a.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: a.last_applied,
            last_membership: a.membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.tree
            .insert(SNAPSHOT, enc(&stored)?)
            .map_err(write_err)?;
        self.tree.flush_async().await.map_err(write_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<MetaTypes> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), SErr> {
        Ok(self.applied.read().clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, SErr>
    where
        I: IntoIterator<Item = Entry<MetaTypes>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        {
            let mut state = self.state.write();
            let mut applied = self.applied.write();
            for e in entries {
                applied.0 = Some(e.log_id);
                out.push(match e.payload {
                    EntryPayload::Blank => MetaResponse::Ok,
                    EntryPayload::Normal(cmd) => state.apply(cmd),
                    EntryPayload::Membership(m) => {
                        applied.1 = StoredMembership::new(Some(e.log_id), m);
                        MetaResponse::Ok
                    }
                });
            }
        }
        self.persist().await?;
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let a = dec_applied(&data)?;
        *self.state.write() = a.state;
        *self.applied.write() = (meta.last_log_id, meta.last_membership.clone());
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.tree
            .insert(SNAPSHOT, enc(&stored)?)
            .map_err(write_err)?;
        self.persist().await?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MetaTypes>>, SErr> {
        match self.tree.get(SNAPSHOT).map_err(read_err)? {
            None => Ok(None),
            Some(v) => {
                let s: StoredSnapshot = dec(&v)?;
                Ok(Some(Snapshot {
                    meta: s.meta,
                    snapshot: Box::new(Cursor::new(s.data)),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::meta_state::{Fence, Reassignment};

    #[test]
    fn a_state_stored_before_its_extensions_still_decodes_and_a_new_one_keeps_them() {
        let mut a = Applied::default();
        a.state.producer_id_block_end = 7;
        let old = enc(&a).unwrap();
        let back = dec_applied(&old).unwrap();
        assert_eq!(back.state, a.state);

        a.state
            .reassignments
            .entry(uuid::Uuid::nil())
            .or_default()
            .insert(
                3,
                Reassignment {
                    original: vec![1, 2, 3],
                    target: vec![1, 2, 4],
                    abandoned: Vec::new(),
                },
            );
        let new = enc_applied(&a).unwrap();
        let back = dec_applied(&new).unwrap();
        assert_eq!(back.state.reassignments, a.state.reassignments);
        assert_eq!(back.state.producer_id_block_end, 7);
    }

    #[test]
    fn a_state_stored_before_fencing_still_decodes_and_a_new_one_keeps_its_fences() {
        let mut a = Applied::default();
        a.state
            .reassignments
            .entry(uuid::Uuid::nil())
            .or_default()
            .insert(
                1,
                Reassignment {
                    original: vec![1, 2],
                    target: vec![2, 3],
                    abandoned: Vec::new(),
                },
            );
        // What a broker of the previous release stored.
        let mut old = enc(&a).unwrap();
        old.extend(enc(&a.state.extensions()).unwrap());
        let back = dec_applied(&old).unwrap();
        assert_eq!(back.state, a.state);

        a.state.fenced.insert(2, Fence::Unresponsive);
        a.state.fenced.insert(3, Fence::ShuttingDown);
        let back = dec_applied(&enc_applied(&a).unwrap()).unwrap();
        assert_eq!(back.state, a.state);
    }
}

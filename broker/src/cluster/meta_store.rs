//! Durable broker metadata in sled: the cluster id, topics (id, partition
//! count, config overrides) and dynamic broker configs. Every change is
//! flushed before it is acknowledged, so a created topic survives a crash.
//!
//! This is the single-node stand-in for the metadata Raft group: the same
//! records will become that group's state machine.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::auth::scram::{ScramCredential, ScramMechanism};

#[derive(Debug, Error)]
pub enum MetaStoreError {
    #[error("metadata store: {0}")]
    Sled(#[from] sled::Error),
    #[error("metadata record {key:?} is unreadable: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("metadata record {0:?} is corrupt")]
    Corrupt(&'static str),
}

/// A topic as the metadata store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic-level config overrides.
    pub configs: BTreeMap<String, String>,
}

pub struct MetaStore {
    db: sled::Db,
}

const TOPIC_PREFIX: &str = "topic/";
const CLUSTER_ID: &str = "cluster_id";
const BROKER_CONFIG: &str = "broker_config/";
const PRODUCER_ID_BLOCK_END: &str = "producer_id_block_end";

impl MetaStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// sled failing to open the directory.
    pub fn open(dir: &Path) -> Result<Self, MetaStoreError> {
        // Every write is flushed explicitly before it is acknowledged; without
        // the background flusher thread, dropping the store releases its lock
        // at once, so a reopen (a restart, a test) never races it.
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .flush_every_ms(None)
            .open()?;
        Ok(Self { db })
    }

    /// The stored cluster id, or `wanted` (or a fresh random one) stored now.
    pub fn cluster_id(&self, wanted: Option<&str>) -> Result<String, MetaStoreError> {
        if let Some(v) = self.db.get(CLUSTER_ID)? {
            return Ok(String::from_utf8_lossy(&v).into_owned());
        }
        let id = wanted.map(str::to_string).unwrap_or_else(|| {
            // Kafka cluster ids are 22-character base64 of a UUID; any opaque
            // string works for clients, a UUID without dashes is readable.
            Uuid::new_v4().simple().to_string()
        });
        self.db.insert(CLUSTER_ID, id.as_bytes())?;
        self.db.flush()?;
        Ok(id)
    }

    pub fn topics(&self) -> Result<Vec<TopicRecord>, MetaStoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(TOPIC_PREFIX) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|source| MetaStoreError::Decode { key, source })?,
            );
        }
        Ok(out)
    }

    pub fn put_topic(&self, topic: &TopicRecord) -> Result<(), MetaStoreError> {
        // A TopicRecord always serializes: it has only strings and numbers.
        let v = serde_json::to_vec(topic).unwrap_or_default();
        self.db.insert(format!("{TOPIC_PREFIX}{}", topic.name), v)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn delete_topic(&self, name: &str) -> Result<(), MetaStoreError> {
        self.db.remove(format!("{TOPIC_PREFIX}{name}"))?;
        self.db.flush()?;
        Ok(())
    }

    /// Dynamic broker-level config overrides (broker-level names) of one
    /// scope: a broker id, or `default` for the cluster-wide defaults.
    pub fn broker_config(&self, scope: &str) -> Result<BTreeMap<String, String>, MetaStoreError> {
        let key = format!("{BROKER_CONFIG}{scope}");
        match self.db.get(&key)? {
            None => Ok(BTreeMap::new()),
            Some(v) => {
                serde_json::from_slice(&v).map_err(|source| MetaStoreError::Decode { key, source })
            }
        }
    }

    pub fn put_broker_config(
        &self,
        scope: &str,
        cfg: &BTreeMap<String, String>,
    ) -> Result<(), MetaStoreError> {
        let v = serde_json::to_vec(cfg).unwrap_or_default();
        self.db.insert(format!("{BROKER_CONFIG}{scope}"), v)?;
        self.db.flush()?;
        Ok(())
    }
}

impl MetaStore {
    /// The end (exclusive) of the last producer id block handed out: every
    /// id below it may have been used. 0 before the first block.
    pub fn producer_id_block_end(&self) -> Result<i64, MetaStoreError> {
        match self.db.get(PRODUCER_ID_BLOCK_END)? {
            None => Ok(0),
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(i64::from_be_bytes)
                .map_err(|_| MetaStoreError::Corrupt(PRODUCER_ID_BLOCK_END)),
        }
    }

    /// Records a new block end, durably, before any id of the block is used.
    pub fn put_producer_id_block_end(&self, end: i64) -> Result<(), MetaStoreError> {
        self.db.insert(PRODUCER_ID_BLOCK_END, &end.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}

const SCRAM_PREFIX: &str = "scram/";

/// SCRAM credentials, one record per (user, mechanism), key
/// `scram/<user>\0<mechanism>` so one user's records sit together.
impl MetaStore {
    fn scram_key(user: &str, mech: ScramMechanism) -> String {
        format!("{SCRAM_PREFIX}{user}\0{}", mech.name())
    }

    pub fn put_scram_credential(
        &self,
        user: &str,
        mech: ScramMechanism,
        cred: &ScramCredential,
    ) -> Result<(), MetaStoreError> {
        let v = serde_json::to_vec(cred).unwrap_or_default();
        self.db.insert(Self::scram_key(user, mech), v)?;
        self.db.flush()?;
        Ok(())
    }

    /// Removes a credential; false when there was none.
    pub fn delete_scram_credential(
        &self,
        user: &str,
        mech: ScramMechanism,
    ) -> Result<bool, MetaStoreError> {
        let old = self.db.remove(Self::scram_key(user, mech))?;
        self.db.flush()?;
        Ok(old.is_some())
    }

    pub fn scram_credential(
        &self,
        user: &str,
        mech: ScramMechanism,
    ) -> Result<Option<ScramCredential>, MetaStoreError> {
        let key = Self::scram_key(user, mech);
        match self.db.get(&key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|source| MetaStoreError::Decode { key, source }),
        }
    }

    /// One user's credentials, by mechanism.
    pub fn scram_credentials_of(
        &self,
        user: &str,
    ) -> Result<Vec<(ScramMechanism, ScramCredential)>, MetaStoreError> {
        let mut out = Vec::new();
        for mech in ScramMechanism::ALL {
            if let Some(c) = self.scram_credential(user, mech)? {
                out.push((mech, c));
            }
        }
        Ok(out)
    }

    /// Every user with at least one credential, sorted.
    pub fn scram_users(&self) -> Result<Vec<String>, MetaStoreError> {
        let mut out: Vec<String> = Vec::new();
        for item in self.db.scan_prefix(SCRAM_PREFIX) {
            let (k, _) = item?;
            let key = String::from_utf8_lossy(&k[SCRAM_PREFIX.len()..]).into_owned();
            if let Some((user, _)) = key.rsplit_once('\0')
                && out.last().is_none_or(|l| l != user)
            {
                out.push(user.to_string());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_configs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rec = TopicRecord {
            name: "a.b".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            replication_factor: 1,
            configs: [("retention.ms".to_string(), "5".to_string())].into(),
        };
        let id;
        {
            let s = MetaStore::open(dir.path()).unwrap();
            id = s.cluster_id(None).unwrap();
            s.put_topic(&rec).unwrap();
            s.put_broker_config(
                "0",
                &[("log.retention.ms".to_string(), "9".to_string())].into(),
            )
            .unwrap();
        }
        let s = MetaStore::open(dir.path()).unwrap();
        assert_eq!(s.cluster_id(Some("other")).unwrap(), id);
        assert_eq!(s.topics().unwrap(), vec![rec]);
        assert_eq!(s.broker_config("0").unwrap()["log.retention.ms"], "9");
        assert!(s.broker_config("default").unwrap().is_empty());
        s.delete_topic("a.b").unwrap();
        assert!(s.topics().unwrap().is_empty());
    }

    #[test]
    fn scram_credentials_by_user_and_mechanism() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path()).unwrap();
        let c = ScramCredential::from_password(ScramMechanism::Sha256, b"pw", b"salt", 4096);
        s.put_scram_credential("a/b", ScramMechanism::Sha256, &c)
            .unwrap();
        s.put_scram_credential("a/b", ScramMechanism::Sha512, &c)
            .unwrap();
        s.put_scram_credential("z", ScramMechanism::Sha512, &c)
            .unwrap();
        assert_eq!(s.scram_users().unwrap(), vec!["a/b", "z"]);
        assert_eq!(
            s.scram_credential("a/b", ScramMechanism::Sha256).unwrap(),
            Some(c)
        );
        assert!(
            s.delete_scram_credential("z", ScramMechanism::Sha512)
                .unwrap()
        );
        assert!(
            !s.delete_scram_credential("z", ScramMechanism::Sha512)
                .unwrap()
        );
        assert_eq!(s.scram_users().unwrap(), vec!["a/b"]);
    }
}

//! Durable broker metadata in sled: the cluster id, topics (id, partition
//! count, config overrides) and dynamic broker configs. Every change is
//! flushed before it is acknowledged, so a created topic survives a crash.
//!
//! With `controller.quorum.voters` set, a [`MetadataGroup`] is attached:
//! reads then come from the local replica of the replicated state and writes
//! go through the metadata Raft group (forwarded to its leader), with the
//! same method signatures, so callers do not care which mode runs. The sled
//! database still holds the cluster id and the Raft group's own storage.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::meta_state::{MetaCommand, MetaResponse};
use super::metadata_group::MetadataGroup;
use crate::acl::AclBinding;
use crate::auth::scram::{ScramCredential, ScramMechanism};
use crate::quota::{QuotaEntity, QuotaValues};

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
    #[error("{0}")]
    Replication(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("topic {0:?} does not exist")]
    NoSuchTopic(String),
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
    /// Replicas of each partition, preferred leader first. Empty on a
    /// single broker: it holds every partition.
    /// During a reassignment: the target first, then the replicas leaving.
    #[serde(default)]
    pub assignments: Vec<Vec<i32>>,
}

pub struct MetaStore {
    db: sled::Db,
    group: OnceLock<Arc<MetadataGroup>>,
}

const TOPIC_PREFIX: &str = "topic/";

const CLUSTER_ID: &str = "cluster_id";
const BROKER_CONFIG: &str = "broker_config/";
const PRODUCER_ID_BLOCK_END: &str = "producer_id_block_end";

/// How long [`MetaStore::open`] waits for sled's lock of a just-dropped handle.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// sled reports a held directory lock only as an I/O error carrying the
/// `WouldBlock` of `flock` in its message.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

impl MetaStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// sled failing to open the directory.
    pub fn open(dir: &Path) -> Result<Self, MetaStoreError> {
        // Every write is flushed explicitly before it is acknowledged, so the
        // background flusher thread is not needed.
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .flush_every_ms(None);
        // sled's I/O thread pool can still hold the previous handle of this
        // directory for a moment after it is dropped (a reopen in the same
        // process: a test, a restarted component), so a held file lock is
        // retried briefly. Another process holding it is still an error.
        let deadline = std::time::Instant::now() + LOCK_RETRY;
        let db = loop {
            match config.open() {
                Err(e) if is_lock_held(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        Ok(Self {
            db,
            group: OnceLock::new(),
        })
    }

    /// The sled database (the metadata Raft group keeps its storage in it).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Switches reads and writes to the replicated metadata.
    pub fn attach(&self, group: Arc<MetadataGroup>) {
        let _ = self.group.set(group);
    }

    pub fn group(&self) -> Option<&Arc<MetadataGroup>> {
        self.group.get()
    }

    fn replicate(g: &MetadataGroup, cmd: MetaCommand) -> Result<MetaResponse, MetaStoreError> {
        match g.write_blocking(cmd) {
            Ok(MetaResponse::Refused(e)) => Err(MetaStoreError::Replication(e)),
            Ok(r) => Ok(r),
            Err(e) => Err(MetaStoreError::Replication(e.to_string())),
        }
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
        // In a cluster every topic is in the replicated metadata; a record in
        // the local store is a single broker's (or an older version's local
        // `__consumer_offsets`, which the replicated one replaces).
        if let Some(g) = self.group() {
            return Ok(g.state().topics.values().cloned().collect());
        }
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

    /// Creates a topic: refused when the name is taken in the cluster.
    pub fn create_topic(&self, topic: &TopicRecord) -> Result<(), MetaStoreError> {
        let Some(g) = self.group() else {
            return self.put_topic(topic);
        };
        match Self::replicate(g, MetaCommand::CreateTopic(topic.clone()))? {
            MetaResponse::TopicExists => Err(MetaStoreError::TopicExists(topic.name.clone())),
            _ => Ok(()),
        }
    }

    /// Replaces a topic's record (partitions, configs).
    pub fn put_topic(&self, topic: &TopicRecord) -> Result<(), MetaStoreError> {
        if let Some(g) = self.group() {
            return match Self::replicate(g, MetaCommand::UpdateTopic(topic.clone()))? {
                MetaResponse::NoSuchTopic => Err(MetaStoreError::NoSuchTopic(topic.name.clone())),
                _ => Ok(()),
            };
        }
        // A TopicRecord always serializes: it has only strings and numbers.
        let v = serde_json::to_vec(topic).unwrap_or_default();
        self.db.insert(format!("{TOPIC_PREFIX}{}", topic.name), v)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn delete_topic(&self, name: &str) -> Result<(), MetaStoreError> {
        if let Some(g) = self.group() {
            Self::replicate(
                g,
                MetaCommand::DeleteTopic {
                    name: name.to_string(),
                },
            )?;
            return Ok(());
        }
        self.db.remove(format!("{TOPIC_PREFIX}{name}"))?;
        self.db.flush()?;
        Ok(())
    }

    /// Dynamic broker-level config overrides (broker-level names) of one
    /// scope: a broker id, or `default` for the cluster-wide defaults.
    pub fn broker_config(&self, scope: &str) -> Result<BTreeMap<String, String>, MetaStoreError> {
        if let Some(g) = self.group() {
            return Ok(g
                .state()
                .broker_configs
                .get(scope)
                .cloned()
                .unwrap_or_default());
        }
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
        if let Some(g) = self.group() {
            Self::replicate(
                g,
                MetaCommand::SetBrokerConfig {
                    scope: scope.to_string(),
                    configs: cfg.clone(),
                },
            )?;
            return Ok(());
        }
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
        if let Some(g) = self.group() {
            return Ok(g.state().producer_id_block_end);
        }
        match self.db.get(PRODUCER_ID_BLOCK_END)? {
            None => Ok(0),
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(i64::from_be_bytes)
                .map_err(|_| MetaStoreError::Corrupt(PRODUCER_ID_BLOCK_END)),
        }
    }

    /// Reserves the next `size` producer ids for this broker, durably (and
    /// cluster-wide: no other broker gets any of them): `(start, end)`.
    pub fn reserve_producer_ids(&self, size: i64) -> Result<(i64, i64), MetaStoreError> {
        if let Some(g) = self.group() {
            return match Self::replicate(g, MetaCommand::AllocateProducerIds { size })? {
                MetaResponse::ProducerIdBlock { start, end } => Ok((start, end)),
                other => Err(MetaStoreError::Replication(format!(
                    "unexpected answer {other:?}"
                ))),
            };
        }
        let start = self.producer_id_block_end()?;
        let end = start
            .checked_add(size)
            .ok_or_else(|| MetaStoreError::Replication("producer ids are exhausted".into()))?;
        self.put_producer_id_block_end(end)?;
        Ok((start, end))
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
        if let Some(g) = self.group() {
            Self::replicate(
                g,
                MetaCommand::PutScram {
                    user: user.to_string(),
                    mechanism: mech.name().to_string(),
                    credential: cred.clone(),
                },
            )?;
            return Ok(());
        }
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
        if let Some(g) = self.group() {
            let r = Self::replicate(
                g,
                MetaCommand::DeleteScram {
                    user: user.to_string(),
                    mechanism: mech.name().to_string(),
                },
            )?;
            return Ok(r == MetaResponse::Removed(true));
        }
        let old = self.db.remove(Self::scram_key(user, mech))?;
        self.db.flush()?;
        Ok(old.is_some())
    }

    pub fn scram_credential(
        &self,
        user: &str,
        mech: ScramMechanism,
    ) -> Result<Option<ScramCredential>, MetaStoreError> {
        if let Some(g) = self.group() {
            return Ok(g
                .state()
                .scram
                .get(user)
                .and_then(|m| m.get(mech.name()))
                .cloned());
        }
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
        if let Some(g) = self.group() {
            return Ok(g.state().scram.keys().cloned().collect());
        }
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

const ACL_PREFIX: &str = "acl/";

/// ACLs, one record per binding; the key is the binding's JSON, so an
/// identical binding is stored once.
impl MetaStore {
    fn acl_key(acl: &AclBinding) -> String {
        // An AclBinding always serializes: enums and strings.
        format!(
            "{ACL_PREFIX}{}",
            serde_json::to_string(acl).unwrap_or_default()
        )
    }

    /// Stores `acls` in one flush.
    pub fn put_acls(&self, acls: &[AclBinding]) -> Result<(), MetaStoreError> {
        if let Some(g) = self.group() {
            Self::replicate(g, MetaCommand::PutAcls(acls.to_vec()))?;
            return Ok(());
        }
        for acl in acls {
            let v = serde_json::to_vec(acl).unwrap_or_default();
            self.db.insert(Self::acl_key(acl), v)?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Removes `acls` in one flush.
    pub fn delete_acls(&self, acls: &[AclBinding]) -> Result<(), MetaStoreError> {
        if let Some(g) = self.group() {
            Self::replicate(g, MetaCommand::DeleteAcls(acls.to_vec()))?;
            return Ok(());
        }
        for acl in acls {
            self.db.remove(Self::acl_key(acl))?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub fn acls(&self) -> Result<Vec<AclBinding>, MetaStoreError> {
        if let Some(g) = self.group() {
            return Ok(g.state().acls.iter().cloned().collect());
        }
        let mut out = Vec::new();
        for item in self.db.scan_prefix(ACL_PREFIX) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|source| MetaStoreError::Decode { key, source })?,
            );
        }
        Ok(out)
    }
}

const QUOTA_PREFIX: &str = "quota/";

/// Client and tenant quotas, one record per entity (its JSON is the key).
impl MetaStore {
    fn quota_key(entity: &QuotaEntity) -> String {
        format!(
            "{QUOTA_PREFIX}{}",
            serde_json::to_string(entity).unwrap_or_default()
        )
    }

    /// Replaces the quotas of each entity in one flush; an entity with no
    /// values left is removed.
    pub fn put_quotas(&self, entries: &[(QuotaEntity, QuotaValues)]) -> Result<(), MetaStoreError> {
        if let Some(g) = self.group() {
            Self::replicate(g, MetaCommand::PutQuotas(entries.to_vec()))?;
            return Ok(());
        }
        for (entity, values) in entries {
            let key = Self::quota_key(entity);
            if values.is_empty() {
                self.db.remove(key)?;
            } else {
                let v = serde_json::to_vec(&(entity, values)).unwrap_or_default();
                self.db.insert(key, v)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    pub fn quotas(&self) -> Result<Vec<(QuotaEntity, QuotaValues)>, MetaStoreError> {
        if let Some(g) = self.group() {
            let state = g.state();
            return Ok(state
                .quotas
                .iter()
                .map(|(e, v)| (e.clone(), v.clone()))
                .collect());
        }
        let mut out = Vec::new();
        for item in self.db.scan_prefix(QUOTA_PREFIX) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|source| MetaStoreError::Decode { key, source })?,
            );
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
            assignments: Vec::new(),
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

    #[test]
    fn acls_and_quotas_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let acl = AclBinding::from_wire(2, "team-a.", 4, "User:a", "*", 3, 3).unwrap();
        let other = AclBinding::from_wire(3, "g", 3, "User:b", "*", 3, 2).unwrap();
        let entity = QuotaEntity::user(Some("alice"));
        let values: QuotaValues = [("producer_byte_rate".to_string(), 1024.0)].into();
        {
            let s = MetaStore::open(dir.path()).unwrap();
            s.put_acls(&[acl.clone(), other.clone(), acl.clone()])
                .unwrap();
            s.put_quotas(&[(entity.clone(), values.clone())]).unwrap();
        }
        let s = MetaStore::open(dir.path()).unwrap();
        let mut got = s.acls().unwrap();
        got.sort();
        let mut want = vec![acl.clone(), other.clone()];
        want.sort();
        assert_eq!(got, want);
        s.delete_acls(&[acl]).unwrap();
        assert_eq!(s.acls().unwrap(), vec![other]);
        assert_eq!(s.quotas().unwrap(), vec![(entity.clone(), values)]);
        s.put_quotas(&[(entity, QuotaValues::new())]).unwrap();
        assert!(s.quotas().unwrap().is_empty());
    }
}

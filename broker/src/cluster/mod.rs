//! Cluster metadata. With one broker it is local and durable (sled); the
//! same records become the metadata Raft group's state machine later.

pub mod meta_store;
pub mod topic_table;

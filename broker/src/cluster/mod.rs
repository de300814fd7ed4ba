//! Cluster metadata. On a single broker it is local and durable (sled); with
//! `controller.quorum.voters` it is the metadata Raft group's replicated
//! state ([`metadata_group`]), read through the same [`meta_store`] API.

pub mod assignment;
pub mod fencing;
pub mod meta_state;
pub mod meta_store;
pub mod metadata_group;
pub mod node;
pub mod raft_store;
pub mod routing;
pub mod topic_table;

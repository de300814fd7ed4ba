//! `skiff-balance`: the partition balancer of Skiff, a pure planner.
//!
//! Given the brokers (with racks, some possibly draining) and the
//! partitions (replicas in order, leader, size), [`plan`] answers the
//! fewest replica-list changes that
//!
//! - keep every partition's replication factor, never two replicas on one
//!   broker, never two in one rack while another rack could take one;
//! - move every replica off draining brokers (and off brokers the
//!   partitions name but the cluster does not list);
//! - bring replicas, preferred leaders (first replicas) and bytes per
//!   broker within a [`Tolerance`] of even, preferring reorders (no data
//!   copied) for leaders.
//!
//! No I/O, no clocks, no hash-order iteration: one input gives one plan,
//! and planning the planned assignment again gives no moves. Executing a
//! plan (AlterPartitionReassignments) is the caller's business.
//!
//! - [`model`]: inputs, options and the plan;
//! - [`planner`]: the algorithm, pass by pass.

pub mod model;
pub mod planner;

pub use model::{
    Balance, BalanceError, Broker, BrokerLoad, Load, Move, MoveKind, Options, Partition, Plan,
    Summary, Tolerance,
};
pub use planner::{apply, plan};

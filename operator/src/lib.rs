//! `skiff-operator`: the Kubernetes operator of Skiff.
//!
//! - [`render`]: a `KafkaCluster` → the Kubernetes objects that run it;
//! - [`tenancy`]: which Topics, Users and Quotas a cluster accepts;
//! - [`roll`]: which broker a roll restarts next;
//! - [`admin`]: a small Kafka Admin client;
//! - [`converge`]: Topic/User/Quota specs → Admin API calls;
//! - [`pki`]: the cluster CA and the broker and user certificates it issues;
//! - [`rebalance`]: `skiff-operator rebalance`, the balancer's plan of a
//!   live cluster;
//! - [`controllers`]: the kube-rs controllers and their shared context;
//! - [`runtime`]: leader election, metrics, health endpoints.

pub mod admin;
pub mod controllers;
pub mod converge;
pub mod oneshot;
pub mod pki;
pub mod rebalance;
pub mod render;
pub mod roll;
pub mod runtime;
pub mod scale;
pub mod tenancy;

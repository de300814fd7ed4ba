//! `skiff-operator`: the Kubernetes operator of Skiff.
//!
//! What exists today is the pure half: functions from a `KafkaCluster` to the
//! Kubernetes objects that run it ([`render`]), the tenancy rules that decide
//! which Topics, Users and Quotas a cluster accepts ([`tenancy`]), and the
//! choice of the next broker to restart in a roll ([`roll`]). No controller
//! calls them yet; see the binary.

pub mod render;
pub mod roll;
pub mod tenancy;

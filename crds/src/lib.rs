//! Rust types of Skiff's custom resources (`KafkaCluster`, `Topic`, `User`,
//! `Quota`, group `skiff.dev`, version `v1alpha1`). Not written yet.

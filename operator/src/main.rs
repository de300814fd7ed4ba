//! `skiff-operator`: the Kubernetes operator. The renderers, tenancy rules
//! and roll ordering exist as a library (`skiff_operator`); no controller
//! runs them against a cluster yet, so the binary says so instead of
//! pretending to reconcile.

fn main() -> std::process::ExitCode {
    eprintln!(
        "skiff-operator: no controller yet (the KafkaCluster renderers and tenancy rules exist as a library); see README.md for what Skiff ships today"
    );
    std::process::ExitCode::from(2)
}

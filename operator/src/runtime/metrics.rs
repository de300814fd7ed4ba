//! The operator's Prometheus metrics.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Reconcile counters and durations per controller, and leadership.
pub struct Metrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    pub leader: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    ///
    /// # Panics
    /// Never in practice: the metric names are static and distinct.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "skiff_operator_reconciles_total",
                "Reconciles run, per controller.",
            ),
            &["controller"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "skiff_operator_reconcile_errors_total",
                "Reconciles that failed, per controller and reason.",
            ),
            &["controller", "reason"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "skiff_operator_reconcile_duration_seconds",
                "Time one reconcile took, per controller.",
            )
            .buckets(vec![
                0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["controller"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "skiff_operator_leader",
            "1 while this replica holds the leader Lease and runs the controllers.",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
        }
    }

    /// Records one reconcile.
    pub fn observe(&self, controller: &str, took: Duration, error: Option<&str>) {
        self.reconciles.with_label_values(&[controller]).inc();
        self.duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
        if let Some(reason) = error {
            self.errors.with_label_values(&[controller, reason]).inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let enc = prometheus::TextEncoder::new();
        if let Err(e) = enc.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_errors_and_durations_are_exported_per_controller() {
        let m = Metrics::new();
        m.observe("topic", Duration::from_millis(20), None);
        m.observe(
            "topic",
            Duration::from_millis(20),
            Some("ClusterUnreachable"),
        );
        let text = m.render();
        assert!(
            text.contains(r#"skiff_operator_reconciles_total{controller="topic"} 2"#),
            "{text}"
        );
        assert!(text.contains(
            r#"skiff_operator_reconcile_errors_total{controller="topic",reason="ClusterUnreachable"} 1"#
        ));
        assert!(
            text.contains(
                r#"skiff_operator_reconcile_duration_seconds_count{controller="topic"} 2"#
            )
        );
    }
}

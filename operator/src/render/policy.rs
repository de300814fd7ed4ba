//! PodDisruptionBudget, ServiceAccount, HorizontalPodAutoscaler.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_crds::KafkaCluster;

use super::{RenderError, identity, names, owned_meta, selector_labels};

/// PodDisruptionBudget `<name>`: at most one broker voluntarily down at a
/// time (drains, node upgrades), the same budget the operator's own rolls
/// keep.
///
/// # Errors
/// A KafkaCluster without name, namespace or uid.
pub fn pod_disruption_budget(kc: &KafkaCluster) -> Result<PodDisruptionBudget, RenderError> {
    let (cluster, _) = identity(kc)?;
    Ok(PodDisruptionBudget {
        metadata: owned_meta(kc, cluster.to_string())?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// ServiceAccount `<name>-broker`. Brokers do not call the Kubernetes API,
/// so no token is mounted.
///
/// # Errors
/// A KafkaCluster without name, namespace or uid.
pub fn service_account(kc: &KafkaCluster) -> Result<ServiceAccount, RenderError> {
    let (cluster, _) = identity(kc)?;
    Ok(ServiceAccount {
        metadata: owned_meta(kc, names::service_account(cluster))?,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

/// HorizontalPodAutoscaler `<name>` when `spec.autoscaling` is set. It scales
/// the KafkaCluster through its `/scale` subresource, not the StatefulSet, so
/// every change goes through the operator's add/drain sequence. Scale-down
/// is slow on purpose (an hour's stabilization, one broker per ten minutes):
/// removing a broker moves its data.
///
/// # Errors
/// A KafkaCluster without name, namespace or uid.
pub fn horizontal_pod_autoscaler(
    kc: &KafkaCluster,
) -> Result<Option<HorizontalPodAutoscaler>, RenderError> {
    let Some(a) = &kc.spec.autoscaling else {
        return Ok(None);
    };
    let (cluster, _) = identity(kc)?;
    let metrics = if a.metrics.is_empty() {
        vec![MetricSpec {
            type_: "Resource".to_string(),
            resource: Some(ResourceMetricSource {
                name: "cpu".to_string(),
                target: MetricTarget {
                    type_: "Utilization".to_string(),
                    average_utilization: Some(70),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        }]
    } else {
        a.metrics.clone()
    };
    let one_pod_per = |seconds: i32, window: i32| HPAScalingRules {
        stabilization_window_seconds: Some(window),
        select_policy: Some("Min".to_string()),
        policies: Some(vec![HPAScalingPolicy {
            type_: "Pods".to_string(),
            value: 1,
            period_seconds: seconds,
        }]),
        ..HPAScalingRules::default()
    };
    Ok(Some(HorizontalPodAutoscaler {
        metadata: owned_meta(kc, cluster.to_string())?,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(format!("{}/{}", skiff_crds::GROUP, skiff_crds::VERSION)),
                kind: "KafkaCluster".to_string(),
                name: cluster.to_string(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_up: Some(one_pod_per(300, 300)),
                scale_down: Some(one_pod_per(600, 3600)),
            }),
        }),
        ..HorizontalPodAutoscaler::default()
    }))
}

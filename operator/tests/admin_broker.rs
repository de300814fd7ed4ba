//! Topic, User and Quota convergence against a real skiff-broker process:
//! the admin calls are real.

// Shared with controllers_mock.rs; this crate does not use every helper.
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use skiff_operator::admin::requests::{AclBinding, ConfigChange, acl};
use skiff_operator::admin::{AdminClient, AdminError};
use skiff_operator::converge::{
    TopicTarget, converge_quota, converge_topic, converge_user, delete_user,
};
use skiff_operator::tenancy::QuotaEntity;

#[tokio::test]
async fn topic_is_created_grown_corrected_refused_a_shrink_and_deleted() {
    let broker = support::Broker::start().await;
    let mut admin = AdminClient::connect(&broker.bootstrap)
        .await
        .expect("connect");
    let mut target = TopicTarget {
        name: "team-a.orders".into(),
        partitions: 2,
        replication_factor: None,
        config: BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]),
    };

    let o = converge_topic(&mut admin, &target).await.expect("create");
    assert!(o.created);
    assert_eq!(o.info.partitions, 2);
    assert!(!o.info.topic_id.is_empty());
    assert_eq!(
        admin.topic_configs("team-a.orders").await.expect("configs"),
        target.config
    );

    // Converged: a second pass changes nothing.
    let o = converge_topic(&mut admin, &target).await.expect("steady");
    assert!(!o.created && o.grown_from.is_none() && o.config_changes.is_empty());

    // Drift by hand is corrected: a changed value and an extra one.
    admin
        .alter_topic_config(
            "team-a.orders",
            &[
                ConfigChange::Set("retention.ms".into(), "1000".into()),
                ConfigChange::Set("retention.bytes".into(), "1048576".into()),
            ],
        )
        .await
        .expect("drift");
    let o = converge_topic(&mut admin, &target).await.expect("correct");
    assert_eq!(o.config_changes.len(), 2, "{:?}", o.config_changes);
    assert_eq!(
        admin.topic_configs("team-a.orders").await.expect("configs"),
        target.config
    );

    // Grow.
    target.partitions = 5;
    let o = converge_topic(&mut admin, &target).await.expect("grow");
    assert_eq!(o.grown_from, Some(2));
    assert_eq!(o.info.partitions, 5);

    // Shrink: refused, nothing changes.
    target.partitions = 3;
    let o = converge_topic(&mut admin, &target).await.expect("shrink");
    assert!(o.shrink_refused);
    assert_eq!(o.info.partitions, 5);

    // Invalid config: Kafka's refusal comes back as an error, not a panic.
    let bad = TopicTarget {
        name: "bad".into(),
        partitions: 1,
        replication_factor: None,
        config: BTreeMap::from([("retention.ms".to_string(), "-7".to_string())]),
    };
    let e = converge_topic(&mut admin, &bad).await.expect_err("invalid");
    assert!(matches!(e, AdminError::Kafka { .. }), "{e}");

    // The roll's safety check reads min.insync.replicas per topic.
    let min = admin
        .min_insync_replicas(&["team-a.orders".to_string()])
        .await
        .expect("min isr");
    assert_eq!(min.get("team-a.orders"), Some(&1));
    let info = admin.cluster_info().await.expect("cluster");
    assert_eq!(info.brokers, vec![0]);
    assert_eq!(info.under_replicated_partitions, 0);
    assert_eq!(
        info.partitions
            .iter()
            .filter(|p| p.topic == "team-a.orders")
            .count(),
        5
    );

    admin.delete_topic("team-a.orders").await.expect("delete");
    assert!(
        admin
            .describe_topic("team-a.orders")
            .await
            .expect("md")
            .is_none()
    );
    // Deleting again is fine (a finalizer may run twice).
    admin
        .delete_topic("team-a.orders")
        .await
        .expect("delete twice");
}

#[tokio::test]
async fn user_credential_is_set_restored_after_deletion_and_removed() {
    let broker = support::Broker::start().await;
    let mut admin = AdminClient::connect(&broker.bootstrap)
        .await
        .expect("connect");
    let none = BTreeSet::new();

    let o = converge_user(&mut admin, "team-a.alice", "pw-1", true, &none)
        .await
        .expect("set");
    assert!(o.credential_set);
    assert!(o.acl_error.is_none(), "{:?}", o.acl_error);
    assert!(
        admin
            .has_scram_sha512("team-a.alice")
            .await
            .expect("describe")
    );

    // Steady: the credential exists, nothing is sent.
    let o = converge_user(&mut admin, "team-a.alice", "pw-1", false, &none)
        .await
        .expect("steady");
    assert!(!o.credential_set);

    // Deleted by hand: restored.
    admin
        .delete_scram_sha512("team-a.alice")
        .await
        .expect("drift");
    assert!(
        !admin
            .has_scram_sha512("team-a.alice")
            .await
            .expect("describe")
    );
    let o = converge_user(&mut admin, "team-a.alice", "pw-1", false, &none)
        .await
        .expect("restore");
    assert!(o.credential_set);

    // ACLs: this broker has no ACL API yet; the credential part still
    // happens and the error names the missing API.
    let acls = BTreeSet::from([AclBinding {
        resource_type: acl::RESOURCE_TOPIC,
        resource_name: "team-a.".into(),
        pattern_type: acl::PATTERN_PREFIXED,
        principal: "User:team-a.alice".into(),
        host: "*".into(),
        operation: 3,
        permission_type: acl::PERMISSION_ALLOW,
    }]);
    let o = converge_user(&mut admin, "team-a.alice", "pw-1", false, &acls)
        .await
        .expect("acls");
    let err = o.acl_error.expect("the broker has no ACL API");
    assert!(err.to_string().contains("DescribeAcls"), "{err}");

    delete_user(&mut admin, "team-a.alice")
        .await
        .expect("delete");
    assert!(
        !admin
            .has_scram_sha512("team-a.alice")
            .await
            .expect("describe")
    );
}

#[tokio::test]
async fn quota_on_a_broker_without_quota_apis_reports_the_missing_api() {
    let broker = support::Broker::start().await;
    let mut admin = AdminClient::connect(&broker.bootstrap)
        .await
        .expect("connect");
    let values = BTreeMap::from([("producer_byte_rate".to_string(), 1024.0)]);
    match converge_quota(&mut admin, &QuotaEntity::Tenant("team-a.".into()), &values).await {
        Err(AdminError::Unsupported { api, .. }) => assert_eq!(api, "AlterClientQuotas"),
        // Once the broker implements quotas this must succeed.
        Ok(()) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_as_such() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let e = AdminClient::connect(&format!("127.0.0.1:{port}"))
        .await
        .expect_err("nothing listens");
    assert!(e.is_unreachable());
    assert_eq!(e.reason(), "ClusterUnreachable");
}

#[tokio::test]
async fn the_operator_authenticates_with_scram_sha512_and_a_wrong_password_is_refused() {
    use skiff_operator::admin::AdminCredentials;
    let broker = support::Broker::start_scram("admin-secret").await;
    let good = AdminCredentials {
        username: "admin".into(),
        password: "admin-secret".into(),
    };
    let mut admin = AdminClient::connect_with(&broker.bootstrap, Some(&good))
        .await
        .expect("authenticated");
    let o = converge_topic(
        &mut admin,
        &TopicTarget {
            name: "over-sasl".into(),
            partitions: 1,
            replication_factor: None,
            config: BTreeMap::new(),
        },
    )
    .await
    .expect("admin calls after SASL");
    assert!(o.created);

    let bad = AdminCredentials {
        username: "admin".into(),
        password: "wrong".into(),
    };
    let e = AdminClient::connect_with(&broker.bootstrap, Some(&bad))
        .await
        .expect_err("wrong password");
    assert_eq!(e.reason(), "AdminAuthenticationFailed", "{e}");
    assert!(!e.to_string().contains("wrong"), "the password leaked: {e}");

    // Without SASL no admin call gets through.
    if let Ok(mut anon) = AdminClient::connect(&broker.bootstrap).await {
        assert!(
            anon.cluster_info().await.is_err(),
            "an unauthenticated Metadata was answered"
        );
    }
}

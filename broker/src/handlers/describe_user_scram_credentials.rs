//! DescribeUserScramCredentials (v0): which SCRAM mechanisms (and iteration
//! counts) each user has. Never salts or keys.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let resp = DescribeUserScramCredentialsResponse::default();
    let principal = ctx.session.lock().principal.clone();
    let allowed = if ctx.broker.authorizer.enabled {
        ctx.authorize_cluster(crate::acl::Operation::Describe)
    } else {
        ctx.broker.security.may_manage_credentials(&principal)
    };
    if !allowed {
        super::count_error(
            ctx,
            "DescribeUserScramCredentials",
            "cluster_authorization_failed",
        );
        // As Kafka does: the error at the top and once per requested user.
        // librdkafka expects a result for each user it asked about and
        // crashes (confluent-kafka 2.16) when they are missing.
        let message = StrBytes::from_static_str("only super users may describe SCRAM credentials");
        let code = ResponseError::ClusterAuthorizationFailed.code();
        let results = req
            .users
            .unwrap_or_default()
            .into_iter()
            .map(|u| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(u.name)
                    .with_error_code(code)
                    .with_error_message(Some(message.clone()))
            })
            .collect();
        return resp
            .with_error_code(code)
            .with_error_message(Some(message))
            .with_results(results);
    }
    let store = ctx.broker.topics.store();
    let fail = |e: &dyn std::fmt::Display| {
        DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::UnknownServerError.code())
            .with_error_message(Some(StrBytes::from_string(e.to_string())))
    };
    // Null or empty: every user.
    let (names, explicit) = match req.users.filter(|u| !u.is_empty()) {
        Some(users) => (
            users
                .into_iter()
                .map(|u| u.name.to_string())
                .collect::<Vec<_>>(),
            true,
        ),
        None => match store.scram_users() {
            Ok(all) => (all, false),
            Err(e) => return fail(&e),
        },
    };
    let mut results = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let result = DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(name.clone()));
        if names[..i].contains(name) {
            continue;
        }
        if explicit && names[i + 1..].contains(name) {
            results.push(
                result
                    .with_error_code(ResponseError::DuplicateResource.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Cannot describe SCRAM credentials for the same user twice in a single request",
                    ))),
            );
            continue;
        }
        let creds = match store.scram_credentials_of(name) {
            Ok(c) => c,
            Err(e) => return fail(&e),
        };
        if creds.is_empty() {
            results.push(
                result
                    .with_error_code(ResponseError::ResourceNotFound.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Attempt to describe a user credential that does not exist",
                    ))),
            );
            continue;
        }
        results.push(
            result.with_credential_infos(
                creds
                    .into_iter()
                    .map(|(mech, c)| {
                        CredentialInfo::default()
                            .with_mechanism(mech.kafka_type())
                            .with_iterations(c.iterations as i32)
                    })
                    .collect(),
            ),
        );
    }
    resp.with_results(results)
}

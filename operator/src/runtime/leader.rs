//! Leader election with a `coordination.k8s.io/v1` Lease: only the replica
//! holding the Lease runs the controllers, so two operator replicas are
//! safe. Updates use the Lease's resourceVersion (a conflict means another
//! replica won); a leader that cannot renew before the Lease would expire
//! stops, and the process exits so that it never acts as a stale leader.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

/// How long a Lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and others look.
pub const RETRY_PERIOD: Duration = Duration::from_secs(4);

/// What a replica does with the Lease as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Lease: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Its holder let it expire: take it over.
    TakeOver,
    /// Someone else holds it.
    Follow,
}

/// The decision for `me` given the Lease at `now`.
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() == Some(me) {
        return Decision::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(
        spec.lease_duration_seconds
            .unwrap_or(LEASE_DURATION.as_secs() as i32),
    ));
    let renewed = spec.renew_time.map(|t| t.0);
    match (spec.holder_identity.as_deref(), renewed) {
        (None | Some(""), _) | (_, None) => Decision::TakeOver,
        (Some(_), Some(r)) if r + duration < now => Decision::TakeOver,
        _ => Decision::Follow,
    }
}

/// The Lease `me` leaves behind when it stops while holding it: no holder,
/// so another replica takes it over at its next look instead of waiting
/// for it to expire (client-go's `ReleaseOnCancel`). `None` when `me` does
/// not hold it.
pub fn released(lease: &Lease, me: &str) -> Option<Lease> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(me) {
        return None;
    }
    let mut lease = lease.clone();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    Some(lease)
}

/// One replica's view of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, me: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            me: me.to_string(),
        }
    }

    /// One round: returns whether this replica holds the Lease afterwards.
    ///
    /// # Errors
    /// API errors other than a lost race.
    pub async fn try_once(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref(), &self.me, now);
        let mut lease = match decision {
            Decision::Follow => return Ok(false),
            Decision::Create => Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec::default()),
            },
            Decision::Renew | Decision::TakeOver => current.clone().unwrap_or_default(),
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if decision != Decision::Renew {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.me.clone());
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.renew_time = Some(MicroTime(now));
        let result = match decision {
            Decision::Create => self.api.create(&PostParams::default(), &lease).await,
            // replace() sends the resourceVersion we read: a concurrent
            // writer makes this fail with 409 instead of both winning.
            _ => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_once().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the Lease")
                }
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Gives the Lease up if this replica holds it (at shutdown), so a
    /// standby leads within its retry period. Best effort: an error only
    /// means the standby waits for the Lease to expire.
    pub async fn release(&self) {
        let released = match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => released(&lease, &self.me),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "leader election: cannot read the Lease to release it");
                None
            }
        };
        let Some(lease) = released else { return };
        // The resourceVersion read: a replica that took over meanwhile wins.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("leader election: released the Lease"),
            Err(e) => tracing::warn!(error = %e, "leader election: cannot release the Lease"),
        }
    }

    /// Renews the Lease until it is lost: returns when another replica took
    /// it or when renewal failed for longer than the Lease lasts (minus a
    /// margin), so this replica stops before anyone else may start.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        let deadline = LEASE_DURATION - RETRY_PERIOD;
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.try_once().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!("leader election: another replica holds the Lease");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot renew the Lease");
                    if last_ok.elapsed() >= deadline {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: Option<i64>) -> Lease {
        let now = Timestamp::now();
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                renew_time: renewed_secs_ago.map(|s| MicroTime(now - SignedDuration::from_secs(s))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_created_renewed_followed_or_taken_over() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), Some(3))), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), Some(3))), "a", now),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), Some(60))), "a", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, None)), "a", now),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_released_lease_is_taken_over_at_once_and_only_the_holder_releases() {
        let held = lease(Some("a"), Some(1));
        assert!(released(&held, "b").is_none());
        let free = released(&held, "a").unwrap();
        assert_eq!(
            decide(Some(&free), "b", Timestamp::now()),
            Decision::TakeOver
        );
    }
}

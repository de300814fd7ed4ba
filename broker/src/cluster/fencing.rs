//! Broker fencing (KRaft's `broker.session.timeout.ms`): the metadata
//! leader fences a broker it has heard nothing from for the session timeout
//! and lifts the fence when the broker answers again; a stopping broker
//! fences itself. Fenced brokers are left out of Metadata, so clients stop
//! picking a broker that is gone (see [`super::meta_state::Fence`]).
//!
//! Liveness is what the leader's RPC pool saw: every member of the metadata
//! group, voter or learner, gets the leader's heartbeats, and any answer
//! counts (openraft 0.9 reports no per-follower heartbeat times).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::meta_state::{Fence, MetaCommand, MetaState};
use super::metadata_group::MetadataGroup;

/// How often the leader looks.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The fence changes the metadata leader `me` should write: fence a broker
/// silent for `timeout`, lift an [`Fence::Unresponsive`] fence from one
/// heard within it. A leader of less than `timeout` fences nobody: it has
/// not been sending heartbeats long enough to know. `last_heard` answers,
/// for a broker id, how long ago any of its addresses last replied.
pub fn decide(
    state: &MetaState,
    me: i32,
    led_for: Duration,
    timeout: Duration,
    last_heard: impl Fn(i32) -> Option<Duration>,
) -> Vec<(i32, Option<Fence>)> {
    let mut changes = Vec::new();
    for &id in state.brokers.keys() {
        let fence = state.fenced.get(&id).copied();
        let heard = id == me || last_heard(id).is_some_and(|d| d < timeout);
        match fence {
            Some(Fence::Unresponsive) if heard => changes.push((id, None)),
            None if !heard && led_for >= timeout => {
                changes.push((id, Some(Fence::Unresponsive)));
            }
            _ => {}
        }
    }
    changes
}

/// While this broker leads the metadata group, fences and unfences the
/// others by [`decide`]. Runs until the task is dropped.
pub async fn run(group: Arc<MetadataGroup>, timeout: Duration) {
    let me = i32::try_from(group.node_id()).unwrap_or(-1);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<Instant> = None;
    loop {
        tick.tick().await;
        if group.leader() != Some(group.node_id()) {
            leading_since = None;
            continue;
        }
        let led_for = leading_since.get_or_insert_with(Instant::now).elapsed();
        // A broker's address in the group's membership (a voter's comes
        // from `controller.quorum.voters`) and the one it registered may be
        // spelled differently: either answering counts.
        let member_addrs: Vec<(u64, String)> = group
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let changes = {
            let state = group.state();
            let pool = group.pool();
            decide(&state, me, led_for, timeout, |id| {
                let registered = state.brokers.get(&id).map(|b| b.rpc_addr.as_str());
                let member = member_addrs
                    .iter()
                    .find(|(m, _)| u64::try_from(id).ok() == Some(*m))
                    .map(|(_, a)| a.as_str());
                [registered, member]
                    .into_iter()
                    .flatten()
                    .filter_map(|a| pool.since_last_reply(a))
                    .min()
            })
        };
        if changes.is_empty() {
            continue;
        }
        for (id, fence) in &changes {
            match fence {
                Some(_) => warn!(
                    node_id = id,
                    timeout_ms = timeout.as_millis() as u64,
                    "fencing a broker that has not answered within broker.session.timeout.ms"
                ),
                None => info!(node_id = id, "a fenced broker answers again: unfenced"),
            }
        }
        if let Err(e) = group.write(MetaCommand::SetFences(changes)).await {
            warn!(error = %e, "writing broker fences failed; retrying");
        }
    }
}

/// A stopping broker's last word (controlled shutdown): fence itself, so
/// the others stop naming it to clients at once instead of after the
/// session timeout. Best effort within `wait`.
pub async fn fence_self(group: &MetadataGroup, wait: Duration) {
    let me = i32::try_from(group.node_id()).unwrap_or(-1);
    let cmd = MetaCommand::SetFences(vec![(me, Some(Fence::ShuttingDown))]);
    match tokio::time::timeout(wait, group.write(cmd)).await {
        Ok(Ok(_)) => info!("controlled shutdown: fenced in the cluster metadata"),
        Ok(Err(e)) => warn!(error = %e, "controlled shutdown: fencing this broker failed"),
        Err(_) => warn!("controlled shutdown: fencing this broker timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::meta_state::BrokerRegistration;

    fn state(ids: &[i32]) -> MetaState {
        let mut st = MetaState::default();
        for &id in ids {
            st.apply(MetaCommand::RegisterBroker(BrokerRegistration {
                node_id: id,
                rpc_addr: format!("127.0.0.1:{id}"),
                rack: None,
                endpoints: Vec::new(),
            }));
        }
        st
    }

    const T: Duration = Duration::from_secs(9);

    #[test]
    fn a_silent_broker_is_fenced_once_the_leader_has_led_long_enough() {
        let st = state(&[1, 2, 3]);
        let heard = |id| match id {
            2 => Some(Duration::from_secs(10)),
            3 => None,
            _ => Some(Duration::ZERO),
        };
        assert!(decide(&st, 1, Duration::from_secs(3), T, heard).is_empty());
        assert_eq!(
            decide(&st, 1, T, T, heard),
            vec![
                (2, Some(Fence::Unresponsive)),
                (3, Some(Fence::Unresponsive))
            ]
        );
    }

    #[test]
    fn an_answering_broker_is_unfenced_but_a_stopping_one_is_not() {
        let mut st = state(&[1, 2, 3]);
        st.apply(MetaCommand::SetFences(vec![
            (1, Some(Fence::Unresponsive)),
            (2, Some(Fence::Unresponsive)),
            (3, Some(Fence::ShuttingDown)),
        ]));
        let recent = |_| Some(Duration::from_millis(200));
        // The leader itself (fenced by a previous leader) is alive.
        assert_eq!(
            decide(&st, 1, Duration::ZERO, T, recent),
            vec![(1, None), (2, None)]
        );
        // Still silent: nothing changes.
        assert_eq!(
            decide(&st, 1, T, T, |id| (id == 1).then_some(Duration::ZERO)),
            vec![(1, None)]
        );
    }
}

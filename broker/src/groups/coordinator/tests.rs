//! State machine tests on tokio's paused clock: timers fire when the test
//! advances time, never by sleeping.

use super::*;

const DELAY: Duration = Duration::from_millis(300);
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn coordinator() -> Arc<Coordinator> {
    let counter = IntCounter::new("rebalances", "test").unwrap();
    Coordinator::new(
        GroupConfig {
            initial_rebalance_delay: DELAY,
            min_session_timeout: Duration::from_millis(1000),
            max_session_timeout: Duration::from_millis(60_000),
        },
        counter,
    )
}

fn join_params(member: &str, protocols: &[&str]) -> JoinParams {
    JoinParams {
        group_id: "g".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

/// Lets spawned timer tasks and the paused clock run until `rx` resolves.
async fn wait<T>(rx: oneshot::Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), rx)
        .await
        .expect("answer within ten minutes of virtual time")
        .expect("sender kept")
}

/// Joins with the MEMBER_ID_REQUIRED handshake; returns the second join's receiver.
async fn join_new(c: &Arc<Coordinator>, protocols: &[&str]) -> oneshot::Receiver<JoinOutcome> {
    let first = wait(c.join(join_params("", protocols))).await;
    let Err(BrokerError::MemberIdRequired(id)) = first else {
        panic!("expected MEMBER_ID_REQUIRED, got {first:?}");
    };
    c.join(join_params(&id, protocols))
}

fn sync(
    c: &Coordinator,
    j: &Joined,
    assignments: Vec<(String, Bytes)>,
) -> oneshot::Receiver<SyncOutcome> {
    c.sync(SyncParams {
        group_id: "g".into(),
        generation: j.generation,
        member_id: j.member_id.clone(),
        instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: j.protocol_name.clone(),
        assignments,
    })
}

#[tokio::test(start_paused = true)]
async fn first_join_of_a_new_group_completes_after_the_initial_delay() {
    let c = coordinator();
    let start = Instant::now();
    let j = wait(join_new(&c, &["range"]).await).await.unwrap();
    let waited = start.elapsed();
    assert!(waited >= DELAY && waited < DELAY * 2, "waited {waited:?}");
    assert_eq!(j.generation, 1);
    assert_eq!(j.leader, j.member_id);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(j.members.len(), 1);
    let s = wait(sync(
        &c,
        &j,
        vec![(j.member_id.clone(), Bytes::from_static(b"a1"))],
    ))
    .await
    .unwrap();
    assert_eq!(s.assignment, Bytes::from_static(b"a1"));
    assert_eq!(c.state("g"), Some(GroupState::Stable));
    c.heartbeat("g", 1, &j.member_id, None).unwrap();
}

#[tokio::test(start_paused = true)]
async fn leader_gets_all_metadata_and_sync_distributes_assignments() {
    let c = coordinator();
    let a = join_new(&c, &["range", "roundrobin"]).await;
    let b = join_new(&c, &["roundrobin", "range"]).await;
    let (a, b) = (wait(a).await.unwrap(), wait(b).await.unwrap());
    assert_eq!(a.generation, b.generation);
    let (leader, follower) = if a.member_id == a.leader {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(leader.members.len(), 2);
    assert!(follower.members.is_empty());
    // One vote each: the leader's preference breaks the tie.
    assert_eq!(leader.protocol_name.as_deref(), Some("range"));
    assert!(
        leader
            .members
            .iter()
            .all(|(_, _, m)| m == &Bytes::from_static(b"meta-range"))
    );
    let f_sync = sync(&c, &follower, vec![]);
    let l_sync = sync(
        &c,
        &leader,
        vec![
            (leader.member_id.clone(), Bytes::from_static(b"L")),
            (follower.member_id.clone(), Bytes::from_static(b"F")),
        ],
    );
    assert_eq!(
        wait(l_sync).await.unwrap().assignment,
        Bytes::from_static(b"L")
    );
    assert_eq!(
        wait(f_sync).await.unwrap().assignment,
        Bytes::from_static(b"F")
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_session_starts_a_rebalance_and_survivors_rejoin() {
    let c = coordinator();
    let a = join_new(&c, &["range"]).await;
    let b = join_new(&c, &["range"]).await;
    let (a, b) = (wait(a).await.unwrap(), wait(b).await.unwrap());
    let leader = if a.member_id == a.leader {
        a.clone()
    } else {
        b.clone()
    };
    let other = if a.member_id == a.leader { b } else { a };
    let (s1, s2) = (sync(&c, &leader, vec![]), sync(&c, &other, vec![]));
    wait(s1).await.unwrap();
    wait(s2).await.unwrap();
    // Only the leader keeps heartbeating.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(SESSION_MS as u64 / 3)).await;
        let r = c.heartbeat("g", leader.generation, &leader.member_id, None);
        if r.is_err() {
            assert!(matches!(r, Err(BrokerError::RebalanceInProgress)), "{r:?}");
            break;
        }
    }
    assert_eq!(c.state("g"), Some(GroupState::PreparingRebalance));
    let again = wait(c.join(join_params(&leader.member_id, &["range"])))
        .await
        .unwrap();
    assert_eq!(again.generation, leader.generation + 1);
    assert_eq!(again.members.len(), 1);
    assert!(matches!(
        c.heartbeat("g", again.generation, &other.member_id, None),
        Err(BrokerError::UnknownMemberId)
    ));
    assert!(matches!(
        c.heartbeat("g", leader.generation, &leader.member_id, None),
        Err(BrokerError::IllegalGeneration { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_member_that_does_not_rejoin_is_dropped_after_the_rebalance_timeout() {
    let c = coordinator();
    let a = join_new(&c, &["range"]).await;
    let b = join_new(&c, &["range"]).await;
    let (a, b) = (wait(a).await.unwrap(), wait(b).await.unwrap());
    let (s1, s2) = (sync(&c, &a, vec![]), sync(&c, &b, vec![]));
    wait(s1).await.unwrap();
    wait(s2).await.unwrap();
    // A third member triggers a rebalance; `b` keeps heartbeating but never rejoins.
    let third = join_new(&c, &["range"]).await;
    let rejoin = c.join(join_params(&a.member_id, &["range"]));
    let hb = {
        let c = c.clone();
        let b = b.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                match c.heartbeat("g", b.generation, &b.member_id, None) {
                    Ok(()) | Err(BrokerError::RebalanceInProgress) => {}
                    Err(_) => break,
                }
            }
        })
    };
    let start = Instant::now();
    let a2 = wait(rejoin).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(REBALANCE_MS as u64 - 100));
    assert_eq!(a2.generation, a.generation + 1);
    let t = wait(third).await.unwrap();
    assert_eq!(t.generation, a2.generation);
    let leader = if a2.leader == a2.member_id { &a2 } else { &t };
    assert_eq!(leader.members.len(), 2, "b was removed");
    hb.abort();
}

#[tokio::test(start_paused = true)]
async fn static_member_rejoin_keeps_the_assignment_and_fences_the_old_id() {
    let c = coordinator();
    let mut p = join_params("", &["range"]);
    p.instance_id = Some("i-1".into());
    let mut q = join_params("", &["range"]);
    q.instance_id = Some("i-2".into());
    // Static members skip MEMBER_ID_REQUIRED.
    let (a, b) = (c.join(p.clone()), c.join(q));
    let (a, b) = (wait(a).await.unwrap(), wait(b).await.unwrap());
    let follower = if a.leader == a.member_id {
        b
    } else {
        a.clone()
    };
    let leader = if a.leader == a.member_id {
        a
    } else {
        follower.clone()
    };
    let fs = sync(&c, &follower, vec![]);
    let ls = sync(
        &c,
        &leader,
        vec![(follower.member_id.clone(), Bytes::from_static(b"F"))],
    );
    wait(ls).await.unwrap();
    wait(fs).await.unwrap();

    let mut again = join_params("", &["range"]);
    again.instance_id = follower_instance(&c, &follower.member_id);
    let rejoined = wait(c.join(again.clone())).await.unwrap();
    assert_ne!(rejoined.member_id, follower.member_id);
    assert_eq!(rejoined.generation, follower.generation, "no rebalance");
    assert_eq!(c.state("g"), Some(GroupState::Stable));
    let s = c.sync(SyncParams {
        group_id: "g".into(),
        generation: rejoined.generation,
        member_id: rejoined.member_id.clone(),
        instance_id: again.instance_id.clone(),
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    });
    assert_eq!(wait(s).await.unwrap().assignment, Bytes::from_static(b"F"));
    assert!(matches!(
        c.heartbeat(
            "g",
            follower.generation,
            &follower.member_id,
            again.instance_id.as_deref()
        ),
        Err(BrokerError::FencedInstanceId)
    ));
}

#[tokio::test(start_paused = true)]
async fn static_leader_rejoin_does_not_rebalance_either() {
    let c = coordinator();
    let mut p = join_params("", &["range"]);
    p.instance_id = Some("lead".into());
    let j = wait(c.join(p.clone())).await.unwrap();
    wait(sync(
        &c,
        &j,
        vec![(j.member_id.clone(), Bytes::from_static(b"A"))],
    ))
    .await
    .unwrap();
    let again = wait(c.join(p.clone())).await.unwrap();
    assert_eq!(again.generation, j.generation);
    assert_eq!(again.leader, again.member_id);
    assert!(again.members.is_empty() && !again.skip_assignment);
    p.supports_skip_assignment = true;
    let v9 = wait(c.join(p)).await.unwrap();
    assert!(v9.skip_assignment && v9.members.len() == 1);
    assert_eq!(c.state("g"), Some(GroupState::Stable));
    let s = wait(sync(&c, &v9, vec![])).await.unwrap();
    assert_eq!(s.assignment, Bytes::from_static(b"A"));
}

fn follower_instance(c: &Coordinator, member_id: &str) -> Option<String> {
    c.describe("g")?
        .members
        .into_iter()
        .find(|m| m.member_id == member_id)?
        .instance_id
}

#[tokio::test(start_paused = true)]
async fn incompatible_protocols_are_refused_and_leave_empties_the_group() {
    let c = coordinator();
    let a = wait(join_new(&c, &["range"]).await).await.unwrap();
    let r = wait(c.join(join_params("", &["sticky"]))).await;
    assert!(
        matches!(r, Err(BrokerError::InconsistentGroupProtocol(_))),
        "{r:?}"
    );
    let mut other_type = join_params("", &["range"]);
    other_type.protocol_type = "connect".into();
    let r = wait(c.join(other_type)).await;
    assert!(
        matches!(r, Err(BrokerError::InconsistentGroupProtocol(_))),
        "{r:?}"
    );
    let left = c.leave("g", &[(a.member_id.clone(), None), ("nobody".into(), None)]);
    assert!(left[0].is_ok());
    assert!(matches!(left[1], Err(BrokerError::UnknownMemberId)));
    // Let the rebalance without members complete.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(c.state("g"), Some(GroupState::Empty));
    assert_eq!(c.begin_delete("g").map(|v| v.len()).ok(), Some(0));
    c.finish_delete("g", true);
    assert!(c.describe("g").is_none());
}

#[tokio::test(start_paused = true)]
async fn commits_check_membership_and_generation() {
    let c = coordinator();
    // Simple commits (assign()-based consumers) create the group.
    c.check_commit("solo", -1, "", None).unwrap();
    assert!(matches!(
        c.check_commit("", -1, "", None),
        Err(BrokerError::InvalidGroupId(_))
    ));
    let j = wait(join_new(&c, &["range"]).await).await.unwrap();
    assert!(matches!(
        c.check_commit("g", j.generation, &j.member_id, None),
        Err(BrokerError::RebalanceInProgress)
    ));
    wait(sync(&c, &j, vec![])).await.unwrap();
    c.check_commit("g", j.generation, &j.member_id, None)
        .unwrap();
    assert!(matches!(
        c.check_commit("g", j.generation + 1, &j.member_id, None),
        Err(BrokerError::IllegalGeneration { .. })
    ));
    assert!(matches!(
        c.check_commit("g", -1, "", None),
        Err(BrokerError::UnknownMemberId)
    ));
    assert!(matches!(
        c.begin_delete("g"),
        Err(BrokerError::NonEmptyGroup(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_pending_member_id_is_forgotten_after_the_session_timeout() {
    let c = coordinator();
    let first = wait(c.join(join_params("", &["range"]))).await;
    let Err(BrokerError::MemberIdRequired(id)) = first else {
        panic!("{first:?}");
    };
    tokio::time::sleep(Duration::from_millis(SESSION_MS as u64 + 10)).await;
    let r = wait(c.join(join_params(&id, &["range"]))).await;
    assert!(matches!(r, Err(BrokerError::UnknownMemberId)), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stored_stable_group_carries_on_at_its_next_coordinator() {
    let c = coordinator();
    let mut changes = c.take_changes().expect("first taker");
    let a = join_new(&c, &["range"]).await;
    let b = join_new(&c, &["range"]).await;
    let (a, b) = (wait(a).await.unwrap(), wait(b).await.unwrap());
    let (leader, follower) = if a.member_id == a.leader {
        (a, b)
    } else {
        (b, a)
    };
    let f_sync = sync(&c, &follower, vec![]);
    let l_sync = sync(
        &c,
        &leader,
        vec![
            (leader.member_id.clone(), Bytes::from_static(b"to-leader")),
            (
                follower.member_id.clone(),
                Bytes::from_static(b"to-follower"),
            ),
        ],
    );
    wait(l_sync).await.unwrap();
    wait(f_sync).await.unwrap();
    // Stable: the group is reported changed, and its record says it all.
    assert_eq!(changes.try_recv().as_deref(), Ok("g"));
    let record = c.group_record("g").expect("a Stable group has a record");
    assert_eq!(record.generation, leader.generation);
    assert_eq!(record.leader.as_deref(), Some(leader.member_id.as_str()));
    assert_eq!(record.members.len(), 2);
    // Through the log's encoding, as the next coordinator reads it.
    let stored = super::super::log_format::decode_group_value(
        &super::super::log_format::group_value(&record),
    )
    .unwrap();

    let next = coordinator();
    // A replay can name the same members in many records.
    next.restore_group("g", Some(stored.clone()));
    next.restore_group("g", Some(stored));
    next.finish_restore();
    assert_eq!(next.state("g"), Some(GroupState::Stable));
    // Both members heartbeat on, with the generation they had.
    next.heartbeat("g", leader.generation, &leader.member_id, None)
        .unwrap();
    next.heartbeat("g", follower.generation, &follower.member_id, None)
        .unwrap();
    let s = wait(sync(&next, &follower, vec![])).await.unwrap();
    assert_eq!(s.assignment, Bytes::from_static(b"to-follower"));
    let d = next.describe("g").unwrap();
    assert_eq!(d.protocol, "range");
    assert!(
        d.members
            .iter()
            .all(|m| m.metadata == Bytes::from_static(b"meta-range"))
    );
    // A stranger is still a stranger.
    assert!(matches!(
        next.heartbeat("g", leader.generation, "someone-else", None),
        Err(BrokerError::UnknownMemberId)
    ));

    // A member that never shows up again expires: the group rebalances
    // and, with nobody rejoining, ends Empty (and is stored so).
    let mut next_changes = next.take_changes().unwrap();
    tokio::time::advance(Duration::from_millis(SESSION_MS as u64 / 2)).await;
    next.heartbeat("g", leader.generation, &leader.member_id, None)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(SESSION_MS as u64)).await;
    assert!(matches!(
        next.heartbeat("g", leader.generation, &follower.member_id, None),
        Err(BrokerError::UnknownMemberId)
    ));
    tokio::time::sleep(Duration::from_millis(REBALANCE_MS as u64 * 2)).await;
    assert_eq!(next.state("g"), Some(GroupState::Empty));
    assert_eq!(next_changes.try_recv().as_deref(), Ok("g"));
    let empty = next.group_record("g").unwrap();
    assert!(empty.members.is_empty());
    assert!(empty.generation > leader.generation);

    // A tombstone removes the group.
    next.restore_group("g", None);
    assert_eq!(next.state("g"), None);
}

#[tokio::test(start_paused = true)]
async fn a_record_older_than_the_group_neither_fences_nor_reuses_a_generation() {
    let c = coordinator();
    let j = wait(join_new(&c, &["range"]).await).await.unwrap();
    wait(sync(
        &c,
        &j,
        vec![(j.member_id.clone(), Bytes::from_static(b"a"))],
    ))
    .await
    .unwrap();
    let mut record = c.group_record("g").unwrap();
    // As if the static member had rejoined under a newer id, and the
    // coordinator had moved before that was stored: the record still
    // names the old id for the instance.
    record.members[0].instance_id = Some("pod-0".into());
    let next = coordinator();
    next.restore_group("g", Some(record));
    next.finish_restore();
    // The member, under its newer id and a newer generation, is told to
    // rejoin, not fenced for good.
    assert!(matches!(
        next.heartbeat("g", j.generation + 1, "newer-id", Some("pod-0")),
        Err(BrokerError::UnknownMemberId)
    ));
    // Once the recorded owner is heard from, another id is fenced again.
    next.heartbeat("g", j.generation, &j.member_id, Some("pod-0"))
        .unwrap();
    assert!(matches!(
        next.heartbeat("g", j.generation, "newer-id", Some("pod-0")),
        Err(BrokerError::FencedInstanceId)
    ));
    // A member that claims a generation the record does not know...
    assert!(matches!(
        next.heartbeat("g", j.generation + 1, &j.member_id, Some("pod-0")),
        Err(BrokerError::IllegalGeneration { .. })
    ));
    // ...makes the next generation come after it.
    let mut again = join_params(&j.member_id, &["range"]);
    again.instance_id = Some("pod-0".into());
    again.protocols = vec![("range".into(), Bytes::from_static(b"new-subscription"))];
    let rejoined = wait(next.join(again)).await.unwrap();
    assert_eq!(rejoined.generation, j.generation + 2);
}

use super::*;

fn vals(k: &str, v: f64) -> QuotaValues {
    [(k.to_string(), v)].into()
}

fn entity(user: Option<Option<&str>>, client: Option<Option<&str>>) -> QuotaEntity {
    QuotaEntity {
        user: user.map(EntityName::from_wire),
        client_id: client.map(EntityName::from_wire),
        tenant: None,
    }
}

#[test]
fn precedence_is_kafkas() {
    // Each level in Kafka's order, most specific first; removing the
    // winner exposes the next one.
    let levels = [
        (
            entity(Some(Some("alice")), Some(Some("app"))),
            1.0,
            "alice",
            "app",
        ),
        (entity(Some(Some("alice")), Some(None)), 2.0, "alice", "app"),
        (entity(Some(Some("alice")), None), 3.0, "alice", ""),
        (entity(Some(None), Some(Some("app"))), 4.0, "alice", "app"),
        (entity(Some(None), Some(None)), 5.0, "alice", "app"),
        (entity(Some(None), None), 6.0, "alice", ""),
        (entity(None, Some(Some("app"))), 7.0, "", "app"),
        (entity(None, Some(None)), 8.0, "", "app"),
    ];
    let mut cfg = QuotaConfig::new(
        levels
            .iter()
            .map(|(e, v, _, _)| (e.clone(), vals(PRODUCER_BYTE_RATE, *v))),
    );
    for (e, v, mu, mc) in &levels {
        let (got, key) = cfg.resolve(QuotaKind::Produce, "alice", "app").unwrap();
        assert_eq!(got, *v, "{e}");
        assert_eq!(
            key,
            MeterKey::Client {
                kind: QuotaKind::Produce,
                user: mu.to_string(),
                client_id: mc.to_string()
            }
        );
        cfg.set(e.clone(), QuotaValues::new());
    }
    assert!(cfg.resolve(QuotaKind::Produce, "alice", "app").is_none());
}

#[test]
fn resolution_is_per_quota_key() {
    let cfg = QuotaConfig::new([
        (
            QuotaEntity::user(Some("alice")),
            vals(PRODUCER_BYTE_RATE, 10.0),
        ),
        (QuotaEntity::user(None), vals(CONSUMER_BYTE_RATE, 20.0)),
    ]);
    assert_eq!(
        cfg.resolve(QuotaKind::Produce, "alice", "x").unwrap().0,
        10.0
    );
    assert_eq!(cfg.resolve(QuotaKind::Fetch, "alice", "x").unwrap().0, 20.0);
    assert!(cfg.resolve(QuotaKind::Produce, "bob", "x").is_none());
    assert!(cfg.resolve(QuotaKind::Request, "alice", "x").is_none());
}

#[test]
fn tenants_match_by_longest_prefix() {
    let cfg = QuotaConfig::new([
        (
            QuotaEntity::tenant("team-a."),
            vals(PRODUCER_BYTE_RATE, 1.0),
        ),
        (
            QuotaEntity::tenant("team-a.ops."),
            vals(PRODUCER_BYTE_RATE, 2.0),
        ),
    ]);
    assert_eq!(cfg.tenant_of("team-a.alice"), Some("team-a."));
    assert_eq!(cfg.tenant_of("team-a.ops.bob"), Some("team-a.ops."));
    assert_eq!(cfg.tenant_of("team-b.x"), None);
    assert_eq!(
        cfg.resolve_tenant(QuotaKind::Produce, "team-a.ops.bob")
            .unwrap()
            .0,
        2.0
    );
    assert!(
        cfg.resolve_tenant(QuotaKind::Fetch, "team-a.alice")
            .is_none()
    );
}

#[test]
fn entities_from_the_wire() {
    let e = QuotaEntity::from_wire([("user", Some("a")), ("client-id", None)]).unwrap();
    assert_eq!(e, entity(Some(Some("a")), Some(None)));
    assert_eq!(e.to_string(), "user=a,client-id=<default>");
    assert!(QuotaEntity::from_wire([]).is_err());
    assert!(QuotaEntity::from_wire([("user", Some("a")), ("user", Some("b"))]).is_err());
    assert!(QuotaEntity::from_wire([("ip", Some("1.2.3.4"))]).is_err());
    assert!(QuotaEntity::from_wire([("bogus", Some("x"))]).is_err());
    assert!(QuotaEntity::from_wire([("tenant", None)]).is_err());
    assert!(QuotaEntity::from_wire([("tenant", Some("t.")), ("user", Some("a"))]).is_err());
    assert_eq!(
        QuotaEntity::from_wire([("tenant", Some("t."))]).unwrap(),
        QuotaEntity::tenant("t.")
    );
    assert!(validate_value(PRODUCER_BYTE_RATE, 1.0).is_ok());
    assert!(validate_value(PRODUCER_BYTE_RATE, 0.0).is_err());
    assert!(validate_value(PRODUCER_BYTE_RATE, f64::NAN).is_err());
    assert!(validate_value("bogus_rate", 1.0).is_err());
}

#[test]
fn filters_exact_default_specified_strict() {
    let a = entity(Some(Some("a")), None);
    let d = entity(Some(None), None);
    let ac = entity(Some(Some("a")), Some(Some("c")));
    let t = QuotaEntity::tenant("t.");
    let f = |parts: Vec<(&str, i8, Option<&str>)>, strict| {
        QuotaFilter::from_wire(parts, strict).unwrap()
    };
    let exact = f(vec![("user", 0, Some("a"))], false);
    assert!(exact.matches(&a) && exact.matches(&ac) && !exact.matches(&d));
    let exact_strict = f(vec![("user", 0, Some("a"))], true);
    assert!(exact_strict.matches(&a) && !exact_strict.matches(&ac));
    let default = f(vec![("user", 1, None)], false);
    assert!(default.matches(&d) && !default.matches(&a));
    let any = f(vec![("user", 2, None)], false);
    assert!(any.matches(&a) && any.matches(&ac) && !any.matches(&d) && !any.matches(&t));
    let tenant = f(vec![("tenant", 2, None)], true);
    assert!(tenant.matches(&t) && !tenant.matches(&a));
    let everything = f(vec![], false);
    assert!(everything.matches(&a) && everything.matches(&t));
    assert!(QuotaFilter::from_wire(vec![("user", 0, None)], false).is_err());
    assert!(QuotaFilter::from_wire(vec![("user", 7, None)], false).is_err());
    assert!(QuotaFilter::from_wire(vec![("nope", 1, None)], false).is_err());
    assert!(QuotaFilter::from_wire(vec![("user", 1, None), ("user", 2, None)], false).is_err());
}

#[test]
fn rate_is_over_the_real_span_of_at_least_one_window() {
    let t0 = Instant::now();
    let mut r = Rate::new(Duration::from_secs(1), 11);
    r.record(t0, 100.0);
    // A fresh burst counts over one window, not ten.
    assert!((r.rate(t0) - 100.0).abs() < 1e-9);
    assert!((r.rate(t0 + Duration::from_secs(4)) - 25.0).abs() < 1e-9);
    // After the horizon the burst is forgotten.
    assert_eq!(r.rate(t0 + Duration::from_secs(12)), 0.0);
}

#[test]
fn throttle_brings_the_rate_back_to_the_quota() {
    let t0 = Instant::now();
    let mut r = Rate::new(Duration::from_secs(1), 11);
    r.record(t0, 20.0);
    // 20 in a 1 s span against a quota of 10/s: wait 1 s, after which
    // 20 over 2 s is the quota.
    assert_eq!(r.throttle(t0, 10.0), Duration::from_secs(1));
    assert_eq!(
        r.throttle(t0 + Duration::from_secs(2), 10.0),
        Duration::ZERO
    );
    assert_eq!(r.throttle(t0, 20.0), Duration::ZERO);
    // Steady traffic at the quota (10 a second, the quota allowing for the
    // one extra event a window's edge can hold) is never throttled.
    let mut r = Rate::new(Duration::from_secs(1), 11);
    for i in 0..30 {
        let t = t0 + Duration::from_millis(100 * i);
        r.record(t, 1.0);
        assert_eq!(r.throttle(t, 11.0), Duration::ZERO);
    }
}

#[test]
fn a_tenant_quota_sums_its_principals() {
    let q = Quotas::new(
        QuotaConfig::new([(
            QuotaEntity::tenant("team-a."),
            vals(PRODUCER_BYTE_RATE, 100.0),
        )]),
        Duration::from_secs(1),
        11,
    );
    let t0 = Instant::now();
    let a = Client {
        user: "team-a.alice",
        client_id: "p",
    };
    let b = Client {
        user: "team-a.bob",
        client_id: "p",
    };
    let other = Client {
        user: "team-b.carol",
        client_id: "p",
    };
    // 100 bytes each: alone each is at the quota (100 in 1 s), together twice it.
    assert_eq!(
        q.record(QuotaKind::Produce, a, 100.0, t0).time,
        Duration::ZERO
    );
    let t = q.record(QuotaKind::Produce, b, 100.0, t0);
    assert_eq!(t.time, Duration::from_secs(1));
    assert_eq!(t.tenant.as_deref(), Some("team-a."));
    assert_eq!(
        q.record(QuotaKind::Produce, other, 1e9, t0),
        Throttle::default()
    );
}

#[test]
fn request_percentage_is_time_per_second() {
    let q = Quotas::new(
        QuotaConfig::new([(QuotaEntity::user(None), vals(REQUEST_PERCENTAGE, 10.0))]),
        Duration::from_secs(1),
        11,
    );
    let t0 = Instant::now();
    let c = Client {
        user: "u",
        client_id: "",
    };
    // 10% of a thread is 100 ms per second.
    assert_eq!(
        q.record(QuotaKind::Request, c, 100.0, t0).time,
        Duration::ZERO
    );
    assert!(q.record(QuotaKind::Request, c, 1.0, t0).time > Duration::ZERO);
}

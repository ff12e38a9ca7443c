use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

fn v6(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn client_is_limited_after_n_failures_and_the_user_elsewhere_is_not() {
    let l = LoginLimiter::new(Limits::default());
    let t0 = Instant::now();
    for i in 0..5 {
        assert!(
            l.attempt("victim@x", ip(1), false, t0).is_ok(),
            "attempt {i}"
        );
    }
    let wait = l.attempt("victim@x", ip(1), false, t0).unwrap_err();
    assert!(wait > Duration::from_secs(14 * 60) && wait <= Duration::from_secs(15 * 60));
    assert!(l.attempt("other@x", ip(1), false, t0).is_err());
    assert!(l.attempt("victim@x", ip(2), false, t0).is_ok());
}

#[test]
fn ipv6_clients_are_keyed_by_their_64() {
    assert_eq!(client_key(v6("2001:db8:1:2:aaaa::1")), v6("2001:db8:1:2::"));
    assert_eq!(client_key(v6("::ffff:192.0.2.7")), ip(7));
    let l = LoginLimiter::new(Limits::default());
    let t0 = Instant::now();
    for i in 0..5u16 {
        let addr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i));
        assert!(l.attempt("a", addr, false, t0).is_ok(), "attempt {i}");
    }
    assert!(
        l.attempt("a", v6("2001:db8:1:2:ffff:ffff:ffff:ffff"), false, t0)
            .is_err()
    );
    assert!(l.attempt("a", v6("2001:db8:1:3::1"), false, t0).is_ok());
}

#[test]
fn parallel_attempts_cannot_all_pass_before_a_failure_is_recorded() {
    let l = LoginLimiter::new(Limits::default());
    let t0 = Instant::now();
    let passed = (0..50)
        .filter(|_| l.attempt("a", ip(1), false, t0).is_ok())
        .count();
    assert_eq!(passed, 5);
}

#[test]
fn refunded_attempts_do_not_count() {
    let l = LoginLimiter::new(Limits {
        per_client: 2,
        ..Limits::default()
    });
    let t0 = Instant::now();
    for i in 0..30 {
        let at = t0 + Duration::from_secs(i);
        assert!(l.attempt("a", ip(1), false, at).is_ok(), "attempt {i}");
        l.refund("a", ip(1), at);
    }
}

#[test]
fn spread_attack_slows_unknown_clients_and_never_locks_out_known_ones() {
    let l = LoginLimiter::new(Limits::default());
    let t0 = Instant::now();
    l.succeeded("op", ip(100), t0);
    // 20 failures from 4 addresses, as fast as allowed.
    let mut t = t0;
    let mut failures = 0;
    for round in 0..5 {
        for a in 1..=4 {
            match l.attempt("op", ip(a), false, t) {
                Ok(()) => failures += 1,
                Err(wait) => {
                    t += wait;
                    assert!(l.attempt("op", ip(a), false, t).is_ok(), "{round}/{a}");
                    failures += 1;
                }
            }
        }
    }
    assert_eq!(failures, 20);
    // The known client and a client with a session log in at once.
    assert!(l.attempt("op", ip(100), false, t).is_ok());
    assert!(l.attempt("op", ip(200), true, t).is_ok());
    // A new client waits, at most delay_max: a delay, not a wall.
    let wait = l.attempt("op", ip(201), false, t).unwrap_err();
    assert!(wait <= Limits::default().delay_max, "{wait:?}");
    assert!(l.attempt("op", ip(201), false, t + wait).is_ok());
}

#[test]
fn account_delays_grow_and_stop_at_the_cap() {
    let l = LoginLimiter::new(Limits::default());
    let t0 = Instant::now();
    for a in 0..10 {
        assert!(l.attempt("op", ip(a), false, t0).is_ok());
    }
    let mut t = t0;
    let mut waits = Vec::new();
    for a in 10..20 {
        match l.attempt("op", ip(a), false, t) {
            Ok(()) => waits.push(Duration::ZERO),
            Err(w) => {
                waits.push(w);
                t += w;
                assert!(l.attempt("op", ip(a), false, t).is_ok());
            }
        }
    }
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
}

#[test]
fn success_resets_the_account_and_not_another() {
    let l = LoginLimiter::new(Limits {
        per_client: 3,
        ..Limits::default()
    });
    let t0 = Instant::now();
    for _ in 0..2 {
        assert!(l.attempt("victim", ip(1), false, t0).is_ok());
    }
    assert!(l.attempt("mine", ip(1), false, t0).is_ok());
    l.succeeded("mine", ip(1), t0);
    assert!(l.attempt("victim", ip(1), false, t0).is_ok());
    assert!(l.attempt("victim", ip(1), false, t0).is_err());
}

#[test]
fn password_changes_are_limited_per_session_and_per_account() {
    let c = ChangeLimiter::default();
    let (user, s1, s2, s3) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let t0 = Instant::now();
    for _ in 0..5 {
        assert!(c.attempt(s1, user, t0).is_ok());
    }
    assert!(c.attempt(s1, user, t0).is_err(), "per session");
    for _ in 0..5 {
        assert!(c.attempt(s2, user, t0).is_ok());
    }
    assert!(c.attempt(s3, user, t0).is_err(), "per account");
    c.refund(s2, user, t0);
    assert!(c.attempt(s3, user, t0).is_ok());
}

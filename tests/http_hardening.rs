//! API hardening (root): a login limiter that cannot lock the operator out, rate-limited password
//! changes, sessions that stay revoked through a PostgreSQL outage, one case rule for emails.

mod common;
mod support;

use common::api::{Api, Client, OPERATOR, PASSWORD, client_from};
use common::*;
use meshwg::http::session::SessionPolicy;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `n` failed logins for the operator, `per` from each of the addresses `198.51.100.<first>…`;
/// returns how many got through (401) and the longest Retry-After of those refused (429).
async fn spread_attack(api: &Api, first: u8, addresses: u8, per: usize) -> (usize, u64) {
    let (mut failed, mut longest) = (0, 0);
    for _ in 0..per {
        for a in first..first + addresses {
            let from = addr(&format!("198.51.100.{a}:1"));
            let r = api.try_login(OPERATOR, "a wrong guess", from).await;
            match r.status.as_u16() {
                401 => failed += 1,
                429 => {
                    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                    longest = longest.max(wait);
                }
                s => panic!("{s}: {:?}", r.body),
            }
        }
    }
    (failed, longest)
}

async fn login_with(api: &Api, cookie_of: &Client, from: &str) -> u16 {
    let body = json!({"email": OPERATOR, "password": PASSWORD});
    api.send(
        "POST",
        "/api/v1/auth/login",
        Some(cookie_of),
        Some(&body),
        addr(from),
        &[],
    )
    .await
    .status
    .as_u16()
}

#[test]
fn api_login_spread_attack_never_locks_out_the_operator() {
    run(|h| async move {
        // Delays long enough that none runs out while the test goes on.
        let api = Api::with(&h, |c| {
            c.login_limits.delay_first = Duration::from_secs(30);
            c.login_limits.delay_max = Duration::from_secs(60);
        })
        .await;
        let home = addr("203.0.113.9:1");
        // The operator has logged in from home before; that browser keeps its session cookie.
        let earlier = client_from(&api.try_login(OPERATOR, PASSWORD, home).await);
        let op = api.operator().await;
        let org = api.org(&op, "Acme", "10.20.0.0/16").await;
        let stranger = api
            .user(&op, org["id"].as_str().unwrap(), "s@acme.test", "admin")
            .await;

        // 20 failures from 4 addresses, 5 each (the per-address limit): today's recipe for
        // locking the operator out everywhere for 15 minutes.
        let (failed, longest) = spread_attack(&api, 1, 4, 5).await;
        assert!(failed >= 10, "{failed} failures got through");
        assert!(longest <= 60, "a wall of {longest} s, not a delay");
        // A new address presenting the earlier session's cookie: at once.
        assert_eq!(login_with(&api, &earlier, "192.0.2.77:1").await, 200);

        // Again, and the operator logs in from home: at once.
        spread_attack(&api, 10, 4, 3).await;
        assert_eq!(api.try_login(OPERATOR, PASSWORD, home).await.status, 200);

        // Again: an unknown client waits a delay, never the old 15-minute wall; somebody else's
        // session proves nothing about this account.
        spread_attack(&api, 20, 4, 3).await;
        for status in [
            login_with(&api, &stranger, "192.0.2.78:1").await,
            api.try_login(OPERATOR, PASSWORD, addr("192.0.2.79:1"))
                .await
                .status
                .as_u16(),
        ] {
            assert_eq!(status, 429);
        }
        let r = api
            .try_login(OPERATOR, PASSWORD, addr("192.0.2.79:1"))
            .await;
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    });
}

#[test]
fn api_login_limits_ipv6_clients_per_64() {
    run(|h| async move {
        let api = Api::new(&h).await;
        for i in 1..=5 {
            let from = addr(&format!("[2001:db8:7:1::{i}]:1"));
            assert_eq!(api.try_login(OPERATOR, "nope nope", from).await.status, 401);
        }
        // Another address of the same /64 is the same client.
        let r = api
            .try_login(OPERATOR, PASSWORD, addr("[2001:db8:7:1:ffff::1]:1"))
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited"));
        // The neighbouring /64 is not.
        let r = api
            .try_login(OPERATOR, PASSWORD, addr("[2001:db8:7:2::1]:1"))
            .await;
        assert_eq!(r.status, 200);
    });
}

#[test]
fn api_password_change_is_rate_limited_per_session_and_account() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let sessions = [
            api.operator().await,
            api.operator().await,
            api.operator().await,
        ];
        let change = |who: usize, current: &'static str| {
            let (api, who) = (api.clone(), sessions[who].clone());
            async move {
                let body = json!({"current_password": current, "new_password": "a new password!"});
                api.call("POST", "/api/v1/auth/password", Some(&who), Some(body))
                    .await
            }
        };
        for _ in 0..5 {
            assert_eq!(change(0, "wrong password").await.status, 403);
        }
        // The sixth try of that session is refused before hashing, even with the right password.
        let r = change(0, PASSWORD).await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited"));
        assert!(r.headers.contains_key("retry-after"));
        // Another session has its own five, and then the account has had ten.
        for _ in 0..5 {
            assert_eq!(change(1, "wrong password").await.status, 403);
        }
        assert_eq!(change(2, PASSWORD).await.status, 429);
        // Login is not what was limited.
        assert_eq!(
            api.try_login(OPERATOR, PASSWORD, addr("192.0.2.1:1"))
                .await
                .status,
            200
        );
    });
}

#[test]
fn api_session_ended_elsewhere_stays_ended_through_a_database_outage() {
    run(|mut h| async move {
        let pg = support::Cluster::start_new(&h.world.prefix);
        support::use_cluster(&mut h, &pg).await;
        // Reads always ask PostgreSQL first, so only the outage fallback decides.
        let confirm = |stale_max| {
            move |c: &mut meshwg::http::ApiConfig| {
                c.sessions = SessionPolicy {
                    fresh: Duration::ZERO,
                    stale_max,
                }
            }
        };
        let strict = Api::with(&h, confirm(Duration::ZERO)).await;
        let lenient = Api::with(&h, confirm(Duration::from_secs(3600))).await;
        let op = strict.operator().await;
        let op2 = lenient.operator().await;
        for (api, who) in [(&strict, &op), (&lenient, &op2)] {
            let r = api.call("GET", "/api/v1/auth/me", Some(who), None).await;
            assert_eq!(r.status, 200, "confirmed (and cached) by PostgreSQL");
        }
        // `meshwg admin` in another process resets the password: every session of the operator
        // ends in PostgreSQL, which this controller cannot hear about.
        let out = support::meshwg(
            &pg.url("meshwg"),
            &["admin", "--email", OPERATOR, "--password-stdin"],
            "another long password\n",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.stop();
        // A session confirmed longer ago than stale_max does not come back.
        let r = strict.call("GET", "/api/v1/auth/me", Some(&op), None).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (503, "unavailable"),
            "{:?}",
            r.body
        );
        // Within stale_max a cached session still reads (the documented window), but writes never
        // ride on the cache.
        let r = lenient
            .call("GET", "/api/v1/auth/me", Some(&op2), None)
            .await;
        assert_eq!(r.status, 200);
        let r = lenient
            .call("POST", "/api/v1/auth/logout", Some(&op2), None)
            .await;
        assert_eq!(r.status, 503);
        pg.start();
        for (api, who) in [(&strict, &op), (&lenient, &op2)] {
            let r = api.call("GET", "/api/v1/auth/me", Some(who), None).await;
            assert_eq!(r.status, 401, "ended for good once PostgreSQL answers");
        }
        h.ctl.shutdown().await;
    });
}

#[test]
fn api_email_case_is_one_rule_in_rust_and_sql() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "Nordic", "10.30.0.0/16").await;
        let id = org["id"].as_str().unwrap();
        api.user(&op, id, "Åsa@x.se", "admin").await;
        // The database runs under the C locale, where lower() leaves Å alone.
        let ctype: String = h
            .pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT datctype FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(ctype, "C");
        for spelling in ["Åsa@x.se", "åsa@x.se", "ÅSA@X.SE", " åsa@X.se "] {
            let r = api
                .try_login(spelling, PASSWORD, addr("192.0.2.40:1"))
                .await;
            assert_eq!(r.status, 200, "{spelling}: {:?}", r.body);
            assert_eq!(r.body["user"]["email"], "Åsa@x.se", "shown as written");
        }
        // The same address in another case is the same account.
        let r = api
            .call(
                "POST",
                &format!("/api/v1/orgs/{id}/users"),
                Some(&op),
                Some(json!({"email": "åsa@x.se", "password": PASSWORD, "role": "member"})),
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (409, "conflict"),
            "{:?}",
            r.body
        );
        // `meshwg admin` follows the same rule.
        let url = database_url(&h.world.db_name);
        let args = ["admin", "--email", "Örjan@x.se", "--password-stdin"];
        let out = support::meshwg(&url, &args, &format!("{PASSWORD}\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let args = ["admin", "--email", "ÖRJAN@x.se", "--password-stdin"];
        let out = support::meshwg(&url, &args, &format!("{PASSWORD}\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let operators: i64 = h
            .pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM users WHERE role = 'operator'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(operators, 2, "one operator from Api::new, one Örjan");
        let r = api
            .try_login("örjan@x.se", PASSWORD, addr("192.0.2.41:1"))
            .await;
        assert_eq!(r.status, 200);
    });
}

#[test]
fn api_login_with_a_control_character_in_the_email_is_a_client_error() {
    // Found by scripts/fuzz-api.sh: a NUL reached PostgreSQL, which refuses it: a 500.
    run(|h| async move {
        let api = Api::new(&h).await;
        for email in ["\u{0}op@x.test", "op\u{10}@x.test", &"a".repeat(2000)] {
            let r = api.try_login(email, PASSWORD, addr("192.0.2.50:1")).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (400, "validation"),
                "{email:?}"
            );
        }
        // And the limiter did not count them.
        let r = api
            .try_login(OPERATOR, PASSWORD, addr("192.0.2.50:1"))
            .await;
        assert_eq!(r.status, 200);
    });
}

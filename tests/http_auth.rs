//! API authentication and transport rules (root: the API runs on the real controller core).

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::api::{Api, OPERATOR, PASSWORD, client_from};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::net::SocketAddr;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn api_auth_flow_cookies_csrf_logout() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let r = api.try_login(OPERATOR, PASSWORD, addr("192.0.2.1:1")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["user"]["email"], OPERATOR);
        assert_eq!(r.body["user"]["role"], "operator");
        assert!(r.body["user"]["org_id"].is_null());
        let cookies: Vec<&str> = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let session = cookies
            .iter()
            .find(|c| c.starts_with("__Host-meshwg_session="))
            .expect("session cookie, __Host- prefixed since COOKIE_SECURE is on");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
            assert!(session.contains(attr), "{attr} in {session}");
        }
        assert!(
            !session.contains("Domain"),
            "__Host- cookies carry no Domain"
        );
        let csrf = cookies
            .iter()
            .find(|c| c.starts_with("__Host-meshwg_csrf="))
            .expect("csrf cookie");
        assert!(
            !csrf.contains("HttpOnly"),
            "the CSRF cookie is readable by the page"
        );
        assert!(csrf.contains(r.body["csrf_token"].as_str().unwrap()));
        let op = client_from(&r);

        // Wrong password, unknown user: the same 401.
        for (email, pw) in [
            (OPERATOR, "wrong password!"),
            ("nobody@example.com", PASSWORD),
        ] {
            let r = api.try_login(email, pw, addr("192.0.2.2:1")).await;
            assert_eq!((r.status.as_u16(), r.code()), (401, "invalid_credentials"));
        }
        // Me, then a write without and with a wrong CSRF header.
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&op), None)
                .await
                .body["user"]["email"],
            OPERATOR
        );
        let mut no_csrf = op.clone();
        no_csrf.csrf = String::new();
        let r = api
            .call(
                "POST",
                "/api/v1/orgs",
                Some(&no_csrf),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "csrf"));
        let mut wrong = op.clone();
        wrong.csrf = "A".repeat(43);
        let r = api
            .call(
                "POST",
                "/api/v1/orgs",
                Some(&wrong),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "csrf"));
        // Another session's token is not this session's token.
        let other = api.operator().await;
        let mut swapped = op.clone();
        swapped.csrf = other.csrf.clone();
        let r = api
            .call(
                "POST",
                "/api/v1/orgs",
                Some(&swapped),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(r.status, 403);
        assert_eq!(
            h.pool
                .get()
                .await
                .unwrap()
                .query_one("SELECT count(*) FROM orgs", &[])
                .await
                .unwrap()
                .get::<_, i64>(0),
            0
        );
        // No session at all.
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", None, None).await.status,
            401
        );

        // Logout ends the session server-side: the same cookie is refused afterwards.
        let r = api
            .call("POST", "/api/v1/auth/logout", Some(&op), None)
            .await;
        assert_eq!(r.status, 204);
        assert!(
            r.headers
                .get_all("set-cookie")
                .iter()
                .all(|c| c.to_str().unwrap().contains("Max-Age=0"))
        );
        let r = api.call("GET", "/api/v1/auth/me", Some(&op), None).await;
        assert_eq!((r.status.as_u16(), r.code()), (401, "unauthorized"));
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&other), None)
                .await
                .status,
            200
        );
    });
}

#[test]
fn api_login_rate_limit_spares_the_real_user_elsewhere() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let attacker = addr("198.51.100.7:5555");
        for i in 0..5 {
            let r = api
                .try_login(OPERATOR, &format!("guess number {i}"), attacker)
                .await;
            assert_eq!(r.status, 401, "failure {i}");
        }
        let r = api.try_login(OPERATOR, "guess number 6", attacker).await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited"));
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry), "Retry-After {retry}");
        // Even the right password from the attacker's address waits.
        assert_eq!(
            api.try_login(OPERATOR, PASSWORD, attacker).await.status,
            429
        );
        // The real user, elsewhere, logs in.
        assert_eq!(
            api.try_login(OPERATOR, PASSWORD, addr("203.0.113.9:1"))
                .await
                .status,
            200
        );
        // Behind a trusted proxy the forwarded address counts, not the proxy's.
        let proxy = addr("10.9.9.9:443");
        let forwarded = |from: SocketAddr, client: &'static str, password: &'static str| {
            let api = api.clone();
            async move {
                let body = json!({"email": OPERATOR, "password": password});
                api.send(
                    "POST",
                    "/api/v1/auth/login",
                    None,
                    Some(&body),
                    from,
                    &[("x-forwarded-for", client)],
                )
                .await
                .status
            }
        };
        for _ in 0..5 {
            assert_eq!(
                forwarded(proxy, "203.0.113.50", "nope nope nope").await,
                401
            );
        }
        assert_eq!(forwarded(proxy, "203.0.113.50", PASSWORD).await, 429);
        assert_eq!(forwarded(proxy, "203.0.113.51", PASSWORD).await, 200);
        // An untrusted peer cannot choose its address.
        assert_eq!(forwarded(attacker, "203.0.113.77", PASSWORD).await, 429);

        // A burst of parallel guesses (all hashing at once) gets no more than the limit through.
        let burst = addr("198.51.100.99:1");
        let guesses = (0..20).map(|i| {
            let api = api.clone();
            async move {
                api.try_login(OPERATOR, &format!("parallel guess {i}"), burst)
                    .await
                    .status
                    .as_u16()
            }
        });
        let mut statuses = futures_util::future::join_all(guesses).await;
        statuses.sort();
        assert_eq!(
            statuses.iter().filter(|s| **s == 401).count(),
            5,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            15,
            "{statuses:?}"
        );
    });
}

#[test]
fn api_sessions_die_on_password_change_and_user_or_org_deletion() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "Acme", "10.20.0.0/16").await;
        let org_id = org["id"].as_str().unwrap();
        let admin = api.user(&op, org_id, "admin@acme.test", "admin").await;
        let admin2 = api.login("admin@acme.test", PASSWORD).await;

        // Password change: this session lives, the other dies, the old password is gone.
        let body =
            json!({"current_password": "not the password", "new_password": "a brand new password"});
        let r = api
            .call("POST", "/api/v1/auth/password", Some(&admin), Some(body))
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "wrong_password"));
        let body = json!({"current_password": PASSWORD, "new_password": "short"});
        assert_eq!(
            api.call("POST", "/api/v1/auth/password", Some(&admin), Some(body))
                .await
                .status,
            400
        );
        let body = json!({"current_password": PASSWORD, "new_password": "a brand new password"});
        assert_eq!(
            api.call("POST", "/api/v1/auth/password", Some(&admin), Some(body))
                .await
                .status,
            204
        );
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&admin), None)
                .await
                .status,
            200
        );
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&admin2), None)
                .await
                .status,
            401
        );
        assert_eq!(
            api.try_login("admin@acme.test", PASSWORD, addr("192.0.2.30:1"))
                .await
                .status,
            401
        );
        assert_eq!(
            api.try_login(
                "admin@acme.test",
                "a brand new password",
                addr("192.0.2.30:1")
            )
            .await
            .status,
            200
        );

        // User deletion ends that user's sessions at once.
        let member = api.user(&op, org_id, "member@acme.test", "member").await;
        let member_id = member.user["id"].as_str().unwrap();
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&member), None)
                .await
                .status,
            200
        );
        let r = api
            .call(
                "DELETE",
                &format!("/api/v1/orgs/{org_id}/users/{member_id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, 204);
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&member), None)
                .await
                .status,
            401
        );

        // Org deletion ends the sessions of everybody in it.
        assert_eq!(
            api.call("DELETE", &format!("/api/v1/orgs/{org_id}"), Some(&op), None)
                .await
                .status,
            204
        );
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&admin), None)
                .await
                .status,
            401
        );
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&op), None)
                .await
                .status,
            200
        );
    });
}

#[test]
fn api_forged_tokens_are_refused() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "Acme", "10.20.0.0/16").await;
        let org_id = org["id"].as_str().unwrap();
        let member = api.user(&op, org_id, "m@acme.test", "member").await;
        let token = member
            .cookie
            .split("; ")
            .find_map(|c| c.strip_prefix("__Host-meshwg_session="))
            .unwrap()
            .to_string();
        let (head, rest) = token.split_once('.').unwrap();
        let (body, sig) = rest.split_once('.').unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&B64.decode(body).unwrap()).unwrap();
        let secret = common::api::jwt_secret();
        let sign = |c: &serde_json::Value, key: &[u8]| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                c,
                &EncodingKey::from_secret(key),
            )
            .unwrap()
        };
        let edit = |k: &str, v: serde_json::Value| {
            let mut c = claims.clone();
            c[k] = v;
            c
        };
        let none = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let edited_role = B64.encode(serde_json::to_vec(&edit("role", json!("operator"))).unwrap());
        let edited_org =
            B64.encode(serde_json::to_vec(&edit("org", json!(uuid::Uuid::new_v4()))).unwrap());
        let forged = vec![
            ("alg none", format!("{none}.{body}.")),
            ("stripped signature", format!("{head}.{body}.")),
            ("no signature part", format!("{head}.{body}")),
            (
                "other key",
                sign(&claims, b"some-other-secret-some-other-secret-!!"),
            ),
            (
                "expired",
                sign(
                    &edit("exp", json!(chrono::Utc::now().timestamp() - 120)),
                    secret.expose(),
                ),
            ),
            (
                "wrong aud",
                sign(&edit("aud", json!("other-api")), secret.expose()),
            ),
            (
                "wrong iss",
                sign(&edit("iss", json!("evil")), secret.expose()),
            ),
            (
                "wrong typ",
                sign(&edit("typ", json!("refresh")), secret.expose()),
            ),
            ("edited role", format!("{head}.{edited_role}.{sig}")),
            ("edited org", format!("{head}.{edited_org}.{sig}")),
            // Properly signed, but claiming operator: the session says member.
            (
                "re-signed role",
                sign(&edit("role", json!("operator")), secret.expose()),
            ),
            (
                "re-signed org",
                sign(&edit("org", json!(uuid::Uuid::new_v4())), secret.expose()),
            ),
            (
                "unknown session",
                sign(&edit("sid", json!(uuid::Uuid::new_v4())), secret.expose()),
            ),
            ("garbage", "not.a.jwt".to_string()),
        ];
        for (what, t) in forged {
            let mut c = member.clone();
            c.cookie = format!("__Host-meshwg_session={t}");
            let r = api.call("GET", "/api/v1/auth/me", Some(&c), None).await;
            assert_eq!(r.status, 401, "{what}");
            let r = api.call("GET", "/api/v1/orgs", Some(&c), None).await;
            assert_eq!(r.status, 401, "{what}");
        }
        assert_eq!(
            api.call("GET", "/api/v1/auth/me", Some(&member), None)
                .await
                .status,
            200,
            "the real token still works"
        );
        // ... but not under the unprefixed name a sibling subdomain or plain-HTTP page could set.
        let mut planted = member.clone();
        planted.cookie = format!("meshwg_session={token}");
        let r = api
            .call("GET", "/api/v1/auth/me", Some(&planted), None)
            .await;
        assert_eq!(r.status, 401, "unprefixed session cookie");
    });
}

#[test]
fn api_transport_rules_limits_content_type_methods_docs_health() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        // 413: declared and streamed.
        let big = vec![b'a'; 64 * 1024 + 1];
        let r = api
            .raw(
                warp::test::request()
                    .method("POST")
                    .path("/api/v1/auth/login")
                    .header("content-type", "application/json")
                    .body(big.clone()),
            )
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (413, "payload_too_large"));
        let mut huge_name = json!({"name": "x".repeat(70_000)});
        let r = api
            .call("POST", "/api/v1/orgs", Some(&op), Some(huge_name.take()))
            .await;
        assert_eq!(r.status, 413);
        // A login with a megabyte password is refused before hashing (the body limit first).
        let r = api
            .try_login(OPERATOR, &"p".repeat(2000), addr("192.0.2.3:1"))
            .await;
        assert_eq!(r.status, 400);
        // 415.
        let r = api
            .raw(
                warp::test::request()
                    .method("POST")
                    .path("/api/v1/orgs")
                    .header("cookie", &op.cookie)
                    .header("x-csrf-token", &op.csrf)
                    .header("content-type", "text/plain")
                    .body("name=x"),
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (415, "unsupported_media_type")
        );
        // 405 with Allow, 404 for unknown paths, JSON everywhere.
        let r = api.call("PUT", "/api/v1/orgs", Some(&op), None).await;
        assert_eq!(r.status, 405);
        assert!(r.headers["allow"].to_str().unwrap().contains("POST"));
        let r = api.call("GET", "/api/v1/nothing", Some(&op), None).await;
        assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
        assert_eq!(r.headers["content-type"], "application/json");
        // Malformed JSON and unknown fields.
        let r = api
            .raw(
                warp::test::request()
                    .method("POST")
                    .path("/api/v1/orgs")
                    .header("cookie", &op.cookie)
                    .header("x-csrf-token", &op.csrf)
                    .header("content-type", "application/json")
                    .body("{\"name\": "),
            )
            .await;
        assert_eq!(r.status, 400);
        let r = api
            .call(
                "POST",
                "/api/v1/orgs",
                Some(&op),
                Some(json!({"name": "x", "listen_port": 1})),
            )
            .await;
        assert_eq!(r.status, 400);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("listen_port")
        );
        // Health, readiness and the OpenAPI document (true to the routes).
        assert_eq!(
            api.call("GET", "/healthz", None, None).await.body["status"],
            "ok"
        );
        assert_eq!(
            api.call("GET", "/readyz", None, None).await.body["status"],
            "ready"
        );
        let doc = api
            .call("GET", "/api/v1/openapi.json", None, None)
            .await
            .body;
        assert_eq!(doc, meshwg::http::openapi::document(true));
        for route in meshwg::http::router::ROUTES {
            assert!(doc["paths"][route.path][route.method.as_str().to_lowercase()].is_object());
        }
    });
}

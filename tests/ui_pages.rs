//! The dashboard's pages through the real router (root: a real controller, kernel and
//! PostgreSQL behind it), without a browser: the session and CSRF checks in the API's order,
//! the security headers on every page, escaping, a member's forged write, another tenant's ids.
//! The browser drives the same pages in `ui_browser.rs`.

mod common;

use common::api::{Api, Client, OPERATOR, PASSWORD};
use common::*;
use meshwg::http::ui::page::CSP;
use serde_json::{Value, json};
use std::time::Duration;
use warp::http::StatusCode;

const XSS: &str = "\"><img src=x onerror=alert(1)></script>";

/// A page request as a browser on this origin sends it.
async fn get(api: &Api, path: &str, who: Option<&Client>) -> common::api::Reply {
    let mut r = warp::test::request()
        .method("GET")
        .path(path)
        .header("host", "localhost")
        .remote_addr("192.0.2.30:40000".parse().unwrap());
    if let Some(c) = who {
        r = r.header("cookie", &c.cookie);
    }
    api.raw(r).await
}

/// A form post from this origin (`site` is the `Sec-Fetch-Site` a browser would send).
async fn post(
    api: &Api,
    path: &str,
    who: Option<&Client>,
    fields: &[(&str, &str)],
    site: &str,
) -> common::api::Reply {
    let mut r = warp::test::request()
        .method("POST")
        .path(path)
        .header("host", "localhost")
        .header("sec-fetch-site", site)
        .header("content-type", "application/x-www-form-urlencoded")
        .remote_addr("192.0.2.30:40000".parse().unwrap())
        .body(serde_urlencoded::to_string(fields).unwrap());
    if let Some(c) = who {
        r = r.header("cookie", &c.cookie);
    }
    api.raw(r).await
}

fn text(r: &common::api::Reply) -> String {
    String::from_utf8_lossy(&r.raw).into_owned()
}

fn location(r: &common::api::Reply) -> String {
    r.headers["location"].to_str().unwrap().to_string()
}

/// A machine as the API shows it.
async fn machine_json(api: &Api, who: &Client, org: &str, id: &str) -> serde_json::Value {
    let path = format!("/api/v1/orgs/{org}/machines/{id}");
    api.call("GET", &path, Some(who), None).await.body
}

/// The headers every page carries, and nothing inline a strict CSP would block.
fn assert_page(r: &common::api::Reply, authed: bool) {
    let h = &r.headers;
    assert_eq!(h["content-security-policy"], CSP);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cross-origin-opener-policy"], "same-origin");
    assert_eq!(h["cross-origin-resource-policy"], "same-origin");
    if authed {
        assert_eq!(h["cache-control"], "no-store");
    }
    let body = text(r);
    for bad in [" style=", "<style", "javascript:", " hx-on", " onclick="] {
        assert!(!body.contains(bad), "{bad} in {body}");
    }
    for tag in body.split("<script").skip(1) {
        assert!(tag.trim_start().starts_with("src="), "inline script: {tag}");
    }
}

#[test]
fn ui_signs_in_renders_every_page_with_its_headers_and_escapes_names() {
    run(|h| async move {
        let api = Api::new(&h).await;
        // No session: to the login page, coming back afterwards.
        let r = get(&api, "/orgs/x/machines", None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(location(&r), "/login?next=%2Forgs%2Fx%2Fmachines");
        let r = get(&api, "/login", None).await;
        assert_eq!(r.status, 200);
        assert_page(&r, true);

        // A login form posted from another site is refused; a wrong password says only that.
        let creds = [("email", OPERATOR), ("password", PASSWORD), ("next", "")];
        let r = post(&api, "/login", None, &creds, "cross-site").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let wrong = [("email", OPERATOR), ("password", "wrong guess")];
        let r = post(&api, "/login", None, &wrong, "same-origin").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(text(&r).contains("Wrong email or password."));

        // The API's limiter: a client that keeps guessing gets 429 with the wait in words.
        let mut limited = None;
        for _ in 0..10 {
            let r = api
                .raw(
                    warp::test::request()
                        .method("POST")
                        .path("/login")
                        .header("host", "localhost")
                        .header("sec-fetch-site", "same-origin")
                        .header("content-type", "application/x-www-form-urlencoded")
                        .remote_addr("198.51.100.7:1".parse().unwrap())
                        .body("email=someone%40example.com&password=guess-guess"),
                )
                .await;
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                limited = Some(r);
                break;
            }
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
        let r = limited.expect("the login form is rate limited");
        assert!(r.headers.contains_key("retry-after"));
        assert!(text(&r).contains("Too many failed sign-ins. Try again in"));

        // `next` only ever leads to a local path.
        let evil = [
            ("email", OPERATOR),
            ("password", PASSWORD),
            ("next", "//evil.example/"),
        ];
        let r = post(&api, "/login", None, &evil, "same-origin").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(location(&r), "/operator");
        let cookies: Vec<&str> = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let session = cookies
            .iter()
            .find(|c| c.starts_with("__Host-meshwg_session="))
            .expect("session cookie");
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(session.contains(attr), "{attr} missing: {session}");
        }
        let op = api.operator().await;

        // The operator makes an org in the console.
        let r = post(
            &api,
            "/operator/orgs",
            Some(&op),
            &[
                ("csrf_token", &op.csrf),
                ("name", "Acme"),
                ("cidr", "10.100.0.0/16"),
            ],
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
        let org_path = location(&r);
        let org = org_path.trim_start_matches("/orgs/").to_string();

        // Writes need the session's CSRF token and a form body.
        let form = [("name", "laptop"), ("tags", "staff")];
        let r = post(
            &api,
            &format!("{org_path}/machines"),
            Some(&op),
            &form,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let wrong = [("csrf_token", "nope"), ("name", "laptop")];
        let r = post(
            &api,
            &format!("{org_path}/machines"),
            Some(&op),
            &wrong,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = api
            .raw(
                warp::test::request()
                    .method("POST")
                    .path(&format!("{org_path}/machines"))
                    .header("cookie", &op.cookie)
                    .header("sec-fetch-site", "same-origin")
                    .header("x-csrf-token", &op.csrf)
                    .header("content-type", "application/json")
                    .body(r#"{"name":"laptop"}"#),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let listed = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/machines"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(listed.body["machines"].as_array().unwrap().len(), 0);

        // A machine named like an attack: its config is shown once and the name stays text.
        let form = [
            ("csrf_token", op.csrf.as_str()),
            ("name", XSS),
            ("tags", "staff ops"),
        ];
        let r = post(
            &api,
            &format!("{org_path}/machines"),
            Some(&op),
            &form,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", text(&r));
        assert_page(&r, true);
        let body = text(&r);
        assert!(body.contains("[Interface]") && body.contains("PrivateKey "));
        assert!(body.contains("<svg"), "QR code inline");
        assert!(body.contains("data:text/plain;charset=utf-8;base64,"));
        assert!(!body.contains("<img src=x") && !body.contains("</script>\""));
        let machine = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/machines"),
                Some(&op),
                None,
            )
            .await
            .body["machines"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();

        // A form posted from another site is refused even with the right token.
        let form = [("csrf_token", op.csrf.as_str()), ("name", "from-elsewhere")];
        let r = post(
            &api,
            &format!("{org_path}/machines"),
            Some(&op),
            &form,
            "cross-site",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let listed = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/machines"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(listed.body["machines"].as_array().unwrap().len(), 1);
        // The machine's page tells its history; the console shows the host.
        let r = get(&api, &format!("{org_path}/machines/{machine}"), Some(&op)).await;
        assert!(text(&r).contains(">machine.create<"), "{}", text(&r));
        assert!(text(&r).contains("waiting for the first handshake"));
        let r = get(&api, "/operator", Some(&op)).await;
        assert!(
            text(&r).contains("PostgreSQL</dt><dd>reachable ("),
            "{}",
            text(&r)
        );
        // The host panel says what `doctor` says: the backend and the limits.
        let backend = backend().name();
        assert!(text(&r).contains(&format!("WireGuard backend</dt><dd>{backend}<")));
        assert!(text(&r).contains("open files limit"), "{}", text(&r));

        // A policy through the form, then every page renders with its headers.
        let form = [
            ("csrf_token", op.csrf.as_str()),
            ("name", XSS),
            ("action", "deny"),
            ("src", "tag:staff"),
            ("dst", "any"),
            ("protocol", "tcp"),
            ("ports", "22"),
        ];
        let r = post(
            &api,
            &format!("{org_path}/policies"),
            Some(&op),
            &form,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
        for path in [
            "/operator".to_string(),
            org_path.clone(),
            format!("{org_path}/machines"),
            format!("{org_path}/machines/new"),
            format!("{org_path}/machines/{machine}"),
            format!("{org_path}/policies"),
            format!("{org_path}/users"),
            format!("{org_path}/audit"),
            format!("{org_path}/timeline"),
            format!("{org_path}/settings"),
            format!("{org_path}/explain"),
            format!("{org_path}/explain?src={machine}&dst_addr=10.100.0.9&proto=tcp&port=22"),
            "/account".to_string(),
        ] {
            let r = get(&api, &path, Some(&op)).await;
            assert_eq!(r.status, 200, "{path}: {}", text(&r));
            assert_page(&r, true);
            let body = text(&r);
            assert!(
                !body.contains("<img src=x"),
                "{path} renders the name as markup"
            );
            if path.ends_with("/machines") || path.ends_with("/policies") {
                assert!(body.contains("&#34;&#62;&#60;img src=x"), "{path}: {body}");
            }
        }
        // The overview's live invariants: each promise holds, with the kernel detail for the
        // operator.
        let r = get(&api, &org_path, Some(&op)).await;
        let body = text(&r);
        assert!(
            body.contains("FORWARD policy DROP with the single jump to MWG-ACL"),
            "{body}"
        );
        assert_eq!(body.matches("</span>holds</td>").count(), 7, "{body}");
        assert!(body.contains("<th scope=\"col\">Kernel</th>"));
        // Its poll gets the panel alone.
        let r = api
            .raw(
                warp::test::request()
                    .method("GET")
                    .path(&org_path)
                    .header("host", "localhost")
                    .header("hx-request", "true")
                    .header("cookie", &op.cookie),
            )
            .await;
        assert_eq!(r.status, 200);
        let body = text(&r);
        assert!(body.starts_with("<div id=\"invariants-panel\""), "{body}");
        assert!(!body.contains("Top talkers"));
        let r = get(&api, &format!("{org_path}/policies"), Some(&op)).await;
        let body = text(&r);
        assert!(
            body.contains("tag staff") && body.contains(">default<"),
            "{body}"
        );
        // Explain: the deny on ssh from staff decides, row by row, with a fix that pre-fills
        // the policy form; a bad question is a 400 page that says why.
        let r = get(
            &api,
            &format!("{org_path}/explain?src={machine}&dst_addr=10.100.0.9&proto=tcp&port=22"),
            Some(&op),
        )
        .await;
        let body = text(&r);
        assert!(body.contains("Not reachable"), "{body}");
        assert!(body.contains("id=\"trace-forward\"") && body.contains("id=\"trace-reply\""));
        assert!(body.contains("carries tag staff"), "{body}");
        assert!(body.contains("denied by policy #1"), "{body}");
        let fix = body
            .split("id=\"explain-fix\" href=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a fix link")
            .replace("&#38;", "&")
            .replace("&amp;", "&")
            .replace("&#47;", "/");
        let fix = fix.split('#').next().unwrap().to_string();
        assert!(
            fix.contains("prefill=1") && fix.contains("priority=99"),
            "{fix}"
        );
        let r = get(&api, &fix, Some(&op)).await;
        let body = text(&r);
        assert!(body.contains("value=\"10.100.0.9/32\""), "{body}");
        assert!(body.contains("value=\"99\""), "{body}");
        let r = get(
            &api,
            &format!("{org_path}/explain?src={machine}&dst_addr=10.200.0.9&proto=tcp&port=22"),
            Some(&op),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_page(&r, true);
        assert!(text(&r).contains("outside the org network"), "{}", text(&r));
        // Watch this path: three go, back to the question with the panel; a fourth says why.
        let watch_form = [
            ("csrf_token", op.csrf.as_str()),
            ("src", machine.as_str()),
            ("src_addr", ""),
            ("dst", ""),
            ("dst_addr", "10.100.0.9"),
            ("proto", "tcp"),
            ("port", "22"),
        ];
        let mut back = String::new();
        for _ in 0..3 {
            let r = post(
                &api,
                &format!("{org_path}/watch"),
                Some(&op),
                &watch_form,
                "same-origin",
            )
            .await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
            back = location(&r);
            assert!(back.starts_with(&format!("{org_path}/explain?src={machine}")));
        }
        let r = get(&api, &back, Some(&op)).await;
        assert_page(&r, true);
        let body = text(&r);
        assert_eq!(
            body.matches("<td data-label=\"Path\">").count(),
            3,
            "{body}"
        );
        assert!(body.contains("deny by policy #1") && body.contains("hx-trigger=\"every 2s\""));
        let r = post(
            &api,
            &format!("{org_path}/watch"),
            Some(&op),
            &watch_form,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_page(&r, true);
        assert!(
            text(&r).contains("Not watched: an org has at most 3 watches"),
            "{}",
            text(&r)
        );
        // The panel alone for htmx's poll.
        let r = api
            .raw(
                warp::test::request()
                    .method("GET")
                    .path(&format!(
                        "{org_path}/explain?src={machine}&dst_addr=10.100.0.9&proto=tcp&port=22"
                    ))
                    .header("cookie", &op.cookie)
                    .header("hx-request", "true"),
            )
            .await;
        assert_eq!(r.status, 200);
        assert!(
            text(&r).starts_with("<div id=\"watch-panel\""),
            "{}",
            text(&r)
        );

        // Assets are served under their hashed names only, for a year.
        let css = body
            .split("href=\"")
            .find_map(|s| s.strip_prefix("/assets/").and_then(|s| s.split('"').next()))
            .unwrap();
        let r = get(&api, &format!("/assets/{css}"), None).await;
        assert_eq!(r.status, 200);
        assert!(
            r.headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );

        // Sign out ends the session.
        let r = post(
            &api,
            "/logout",
            Some(&op),
            &[("csrf_token", &op.csrf)],
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        let r = get(&api, "/operator", Some(&op)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert!(location(&r).starts_with("/login"));
    });
}

#[test]
fn ui_rotating_a_key_asks_shows_the_new_config_once_and_waits_for_its_handshake() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Rotor", "10.100.0.0/16").await;
        let m = api.machine(&admin, &org, "laptop").await;
        let id = m["machine"]["id"].as_str().unwrap();
        let old_key = m["machine"]["public_key"].as_str().unwrap().to_string();
        let page = format!("/orgs/{org}/machines/{id}");
        let r = get(&api, &page, Some(&admin)).await;
        let body = text(&r);
        assert!(body.contains("Rotate laptop's key"), "{body}");
        assert!(body.contains("laptop's current config stops working"));
        let key_now = || async {
            machine_json(&api, &admin, &org, id).await["public_key"]
                .as_str()
                .unwrap()
                .to_string()
        };

        // Without the confirmation nothing happens; the page says why.
        let path = format!("{page}/rotate-key");
        let r = post(
            &api,
            &path,
            Some(&admin),
            &[("csrf_token", &admin.csrf)],
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", text(&r));
        assert!(text(&r).contains("tick the box"));
        assert_eq!(key_now().await, old_key);
        // Nor without the CSRF token.
        let r = post(
            &api,
            &path,
            Some(&admin),
            &[("confirm", "yes")],
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(key_now().await, old_key);

        // Confirmed: the new config once, never cached, with its QR code.
        let form = [("csrf_token", admin.csrf.as_str()), ("confirm", "yes")];
        let r = post(&api, &path, Some(&admin), &form, "same-origin").await;
        assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
        assert_page(&r, true);
        let body = text(&r);
        assert!(
            body.contains("New key for laptop") && body.contains("The old config no longer works")
        );
        assert!(
            body.contains("[Interface]") && body.contains("PrivateKey ") && body.contains("<svg")
        );
        assert!(
            body.contains(&format!("href=\"{page}\">I saved it")),
            "{body}"
        );
        let new_key = key_now().await;
        assert_ne!(new_key, old_key);
        let r = get(&api, &page, Some(&admin)).await;
        assert!(text(&r).contains("waiting for the first handshake with the new key"));
        assert!(text(&r).contains(">machine.rotate_key<"));

        // A key the machine made itself: back to the machine page, no config.
        let own = meshwg::keys::PrivateKey::generate()
            .public_key()
            .to_base64();
        let form = [
            ("csrf_token", admin.csrf.as_str()),
            ("confirm", "yes"),
            ("public_key", own.as_str()),
        ];
        let r = post(&api, &path, Some(&admin), &form, "same-origin").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
        assert_eq!(location(&r), page);
        assert_eq!(key_now().await, own);
        // The same key again is refused on the page.
        let r = post(&api, &path, Some(&admin), &form, "same-origin").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", text(&r));
        assert!(text(&r).contains("already the machine"));
    });
}

#[test]
fn ui_bulk_actions_confirm_with_the_count_and_names_then_change_all_or_nothing() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Bulk", "10.100.0.0/16").await;
        let mut ids = Vec::new();
        for name in ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", XSS] {
            let m = api.machine(&admin, &org, name).await;
            ids.push(m["machine"]["id"].as_str().unwrap().to_string());
        }
        let list = format!("/orgs/{org}/machines");
        let r = get(&api, &list, Some(&admin)).await;
        let body = text(&r);
        assert!(body.contains("<form id=\"bulk\""), "{body}");
        assert!(body.contains(&format!("name=\"ids\" value=\"{}\" form=\"bulk\"", ids[0])));
        let member = api.user(&admin, &org, "member@bulk.test", "member").await;
        let r = get(&api, &list, Some(&member)).await;
        assert!(!text(&r).contains("form=\"bulk\""), "a member gets boxes");
        let tags_of = |i: usize| {
            let (api, admin, org, id) = (api.clone(), admin.clone(), org.clone(), ids[i].clone());
            async move { machine_json(&api, &admin, &org, &id).await["tags"].clone() }
        };

        // Review: the count and the first names (escaped), nothing changed yet.
        let path = format!("{list}/batch");
        let mut form: Vec<(&str, &str)> = vec![
            ("csrf_token", &admin.csrf),
            ("action", "tag_add"),
            ("tag", "lab"),
        ];
        for id in &ids {
            form.push(("ids", id));
        }
        let r = post(&api, &path, Some(&admin), &form, "same-origin").await;
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_page(&r, true);
        let body = text(&r);
        assert!(body.contains("Add tag lab to 7 machines?"), "{body}");
        assert!(
            body.contains("7 selected: alpha, bravo, charlie, delta, echo and 2 more."),
            "{body}"
        );
        assert_eq!(tags_of(0).await, serde_json::json!([]));
        // Applied.
        form.push(("step", "apply"));
        let r = post(&api, &path, Some(&admin), &form, "same-origin").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
        assert_eq!(location(&r), list);
        assert_eq!(tags_of(6).await, serde_json::json!(["lab"]));

        // A delete needs the count typed; a wrong count changes nothing.
        let mut del: Vec<(&str, &str)> = vec![
            ("csrf_token", &admin.csrf),
            ("action", "delete"),
            ("tag", "ignored"),
        ];
        del.push(("ids", &ids[0]));
        del.push(("ids", &ids[1]));
        let r = post(&api, &path, Some(&admin), &del, "same-origin").await;
        assert_eq!(r.status, 200);
        let body = text(&r);
        assert!(
            body.contains("Delete 2 machines?")
                && body.contains("Type <strong>2</strong> to confirm"),
            "{body}"
        );
        del.push(("step", "apply"));
        del.push(("confirm", "7"));
        let r = post(&api, &path, Some(&admin), &del, "same-origin").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(text(&r).contains("type 2 to delete these machines"));
        assert_eq!(tags_of(0).await, serde_json::json!(["lab"]));
        // A member's forged post and a foreign id change nothing either.
        let mut forged = del.clone();
        forged[0] = ("csrf_token", &member.csrf);
        let r = post(&api, &path, Some(&member), &forged, "same-origin").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let (other, other_admin) = api.org_with_admin(&op, "Elsewhere", "10.100.0.0/16").await;
        let theirs = api.machine(&other_admin, &other, "theirs").await;
        let theirs = theirs["machine"]["id"].as_str().unwrap().to_string();
        let mut foreign = del.clone();
        foreign.retain(|(k, _)| *k != "confirm");
        foreign.push(("ids", &theirs));
        foreign.push(("confirm", "3"));
        let r = post(&api, &path, Some(&admin), &foreign, "same-origin").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", text(&r));
        assert_eq!(tags_of(0).await, serde_json::json!(["lab"]));
        // The right count deletes both.
        del.retain(|(k, _)| *k != "confirm");
        del.push(("confirm", "2"));
        let r = post(&api, &path, Some(&admin), &del, "same-origin").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
        let r = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{org}/machines"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.body["machines"].as_array().unwrap().len(), 5);
    });
}

#[test]
fn ui_members_cannot_write_and_other_tenants_are_not_found() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (a, admin_a) = api.org_with_admin(&op, "Alpha", "10.100.0.0/16").await;
        let (b, admin_b) = api.org_with_admin(&op, "Beta", "10.100.0.0/16").await;
        let member = api.user(&admin_a, &a, "member@alpha.test", "member").await;
        let mb = api.machine(&admin_b, &b, "beta-box").await;
        let mb = mb["machine"]["id"].as_str().unwrap();

        // A member sees no write controls ...
        for path in ["machines", "policies", "users", "settings", "explain"] {
            let r = get(&api, &format!("/orgs/{a}/{path}"), Some(&member)).await;
            assert_eq!(r.status, 200);
            let body = text(&r);
            for control in [
                "Add machine",
                "Create policy",
                "Add user",
                ">Save<",
                "Watch this path",
            ] {
                assert!(!body.contains(control), "{control} on {path}");
            }
        }
        // ... and a forged write gets 403 with nothing changed.
        let forged = [
            ("csrf_token", member.csrf.as_str()),
            ("src_addr", "10.100.0.2"),
            ("dst_addr", "10.100.0.3"),
            ("proto", "icmp"),
        ];
        let r = post(
            &api,
            &format!("/orgs/{a}/watch"),
            Some(&member),
            &forged,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let forged = [("csrf_token", member.csrf.as_str()), ("name", "sneaky")];
        let r = post(
            &api,
            &format!("/orgs/{a}/machines"),
            Some(&member),
            &forged,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let forged = [
            ("csrf_token", member.csrf.as_str()),
            ("name", "Renamed"),
            ("default_action", "deny"),
        ];
        let r = post(
            &api,
            &format!("/orgs/{a}/settings"),
            Some(&member),
            &forged,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let listed = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{a}/machines"),
                Some(&admin_a),
                None,
            )
            .await;
        assert_eq!(listed.body["machines"].as_array().unwrap().len(), 0);
        let org = api
            .call("GET", &format!("/api/v1/orgs/{a}"), Some(&admin_a), None)
            .await;
        assert_eq!(org.body["name"], "Alpha");
        assert_eq!(org.body["default_action"], "allow");

        // Another tenant's pages and ids are simply not found, also for writes.
        for path in [
            format!("/orgs/{b}"),
            format!("/orgs/{b}/machines"),
            format!("/orgs/{b}/machines/{mb}"),
            format!("/orgs/{a}/machines/{mb}"),
            format!("/orgs/{b}/policies"),
            format!("/orgs/{b}/audit"),
            format!("/orgs/{b}/explain"),
            format!("/orgs/{b}/explain?src={mb}&dst_addr=10.100.0.9&proto=icmp"),
            "/orgs/not-an-id/machines".to_string(),
        ] {
            let r = get(&api, &path, Some(&admin_a)).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
            assert_page(&r, true);
            assert!(text(&r).contains("There is nothing here"));
        }
        let del = [
            ("csrf_token", admin_a.csrf.as_str()),
            ("confirm", "beta-box"),
        ];
        let r = post(
            &api,
            &format!("/orgs/{b}/machines/{mb}/delete"),
            Some(&admin_a),
            &del,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let listed = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{b}/machines"),
                Some(&admin_b),
                None,
            )
            .await;
        assert_eq!(listed.body["machines"].as_array().unwrap().len(), 1);
        // The operator console is the operator's.
        let r = get(&api, "/operator", Some(&admin_a)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);

        // The member changes their password on the account page (the current one is checked).
        let wrong = [
            ("csrf_token", member.csrf.as_str()),
            ("current_password", "not it at all"),
            ("new_password", "a new long password"),
        ];
        let r = post(
            &api,
            "/account/password",
            Some(&member),
            &wrong,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(text(&r).contains("current_password is wrong"));
        let right = [
            ("csrf_token", member.csrf.as_str()),
            ("current_password", PASSWORD),
            ("new_password", "a new long password"),
        ];
        let r = post(
            &api,
            "/account/password",
            Some(&member),
            &right,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(location(&r), "/account?changed=1");
        let r = api
            .try_login(
                "member@alpha.test",
                "a new long password",
                "192.0.2.40:1".parse().unwrap(),
            )
            .await;
        assert_eq!(r.status, 200);

        // The admin deletes the member: their session ends at once.
        let users = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{a}/users"),
                Some(&admin_a),
                None,
            )
            .await;
        let member_id = users.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["email"] == "member@alpha.test")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let del = [("csrf_token", admin_a.csrf.as_str())];
        let r = post(
            &api,
            &format!("/orgs/{a}/users/{member_id}/delete"),
            Some(&admin_a),
            &del,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        let r = get(&api, &format!("/orgs/{a}"), Some(&member)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert!(location(&r).starts_with("/login?next="));

        // The operator deletes an org from its settings, only with its name typed.
        let del = [("csrf_token", op.csrf.as_str()), ("confirm", "beta")];
        let r = post(
            &api,
            &format!("/orgs/{b}/delete"),
            Some(&op),
            &del,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = get(&api, &format!("/orgs/{b}/settings"), Some(&op)).await;
        assert_eq!(r.status, 200, "still there");
        let forged = [("csrf_token", admin_b.csrf.as_str()), ("confirm", "Beta")];
        let r = post(
            &api,
            &format!("/orgs/{b}/delete"),
            Some(&admin_b),
            &forged,
            "same-origin",
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "only the operator deletes orgs"
        );
        let del = [("csrf_token", op.csrf.as_str()), ("confirm", "Beta")];
        let r = post(
            &api,
            &format!("/orgs/{b}/delete"),
            Some(&op),
            &del,
            "same-origin",
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
        assert_eq!(location(&r), "/operator");
        let r = get(&api, &format!("/orgs/{b}"), Some(&op)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    });
}

/// The `data-machine` names of a machines page, in order.
fn machine_names(r: &common::api::Reply) -> Vec<String> {
    text(r)
        .split("data-machine=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().replace("&#61;", "="))
        .collect()
}

#[test]
fn ui_machines_filter_sort_and_export_and_the_audit_log_filters_and_exports() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Acme", "10.100.0.0/16").await;
        let (other, _) = api.org_with_admin(&op, "Other", "10.100.0.0/16").await;
        for (name, tags) in [
            ("alpha", vec!["staff"]),
            ("beta", vec!["ci", "staff"]),
            ("=evil", vec![]),
        ] {
            let r = api
                .call(
                    "POST",
                    &format!("/api/v1/orgs/{org}/machines"),
                    Some(&admin),
                    Some(serde_json::json!({"name": name, "tags": tags})),
                )
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        let base = format!("/orgs/{org}/machines");

        // The filter grammar and the sort live in the URL.
        let r = get(
            &api,
            &format!("{base}?q=tag%3Astaff+-tag%3Aci"),
            Some(&admin),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(machine_names(&r), ["alpha"]);
        let r = get(&api, &format!("{base}?sort=name&dir=desc"), Some(&admin)).await;
        assert_eq!(machine_names(&r), ["beta", "alpha", "=evil"]);
        assert!(text(&r).contains("aria-sort=\"descending\""));
        let r = get(
            &api,
            &format!("{base}?q=is%3Anever+name%3AAL"),
            Some(&admin),
        )
        .await;
        assert_eq!(machine_names(&r), ["alpha"]);
        let r = get(&api, &format!("{base}?q=is%3Asleepy"), Some(&admin)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_page(&r, true);

        // Exports of the current filter: CSV (no cell a spreadsheet would run) and JSON.
        let r = get(
            &api,
            &format!("{base}/export.csv?q=tag%3Astaff"),
            Some(&admin),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "text/csv; charset=utf-8");
        assert_eq!(r.headers["cache-control"], "no-store");
        assert!(
            r.headers["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment")
        );
        let csv = text(&r);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("name,address,tags,status"));
        assert_eq!(lines.len(), 3, "{csv}");
        let r = get(&api, &format!("{base}/export.csv"), Some(&admin)).await;
        assert!(text(&r).contains("\"'=evil\""), "{}", text(&r));
        let r = get(&api, &format!("{base}/export.json?sort=name"), Some(&admin)).await;
        let v: serde_json::Value = serde_json::from_slice(&r.raw).unwrap();
        let names: Vec<&str> = v["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["=evil", "alpha", "beta"]);
        let r = get(
            &api,
            &format!("/orgs/{other}/machines/export.csv"),
            Some(&admin),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        // htmx's poll gets the table alone, tagged; unchanged, it is a 304.
        let poll = |path: String, tag: Option<String>| {
            let api = api.clone();
            let cookie = admin.cookie.clone();
            async move {
                let mut r = warp::test::request()
                    .method("GET")
                    .path(&path)
                    .header("cookie", cookie)
                    .header("hx-request", "true");
                if let Some(t) = tag {
                    r = r.header("if-none-match", t);
                }
                api.raw(r).await
            }
        };
        for path in [format!("{base}?sort=name"), format!("/orgs/{org}/policies")] {
            let r = poll(path.clone(), None).await;
            assert_eq!(r.status, 200);
            let body = text(&r);
            assert!(
                body.starts_with("<div id=") && !body.contains("<html"),
                "{body}"
            );
            let tag = r.headers["etag"].to_str().unwrap().to_string();
            let r = poll(path.clone(), Some(tag.clone())).await;
            assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{path}");
            assert_eq!(r.headers["etag"].to_str().unwrap(), tag);
            assert!(r.raw.is_empty());
        }

        // The audit log filters by action prefix, actor and target, and exports what it shows.
        let audit = format!("/orgs/{org}/audit");
        let r = get(&api, &format!("{audit}?action=machine."), Some(&admin)).await;
        assert_eq!(r.status, 200);
        assert_eq!(text(&r).matches(">machine.create<").count(), 3);
        assert!(!text(&r).contains(">user.create<"));
        let r = get(
            &api,
            &format!("{audit}?actor=nobody%40example.com"),
            Some(&admin),
        )
        .await;
        assert!(text(&r).contains("Nothing recorded that matches"));
        let r = get(
            &api,
            &format!("{audit}/export.jsonl?action=machine.create"),
            Some(&admin),
        )
        .await;
        assert_eq!(r.status, 200);
        let entries: Vec<serde_json::Value> = text(&r)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(|e| e["action"] == "machine.create"));
        let target = entries[0]["target_id"].as_str().unwrap();
        let r = get(
            &api,
            &format!("{audit}/export.csv?target={target}"),
            Some(&admin),
        )
        .await;
        let csv = text(&r);
        assert_eq!(csv.lines().count(), 2, "{csv}");
        assert!(csv.starts_with("id,at,actor,action,target_type,target_id,detail"));
        let r = get(
            &api,
            &format!("/orgs/{other}/audit/export.jsonl"),
            Some(&admin),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    });
}

#[test]
fn ui_the_amber_banner_asks_until_the_hub_confirmed_the_change() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (a, admin) = api.org_with_admin(&op, "Amber", "10.100.0.0/16").await;
        let (b, _) = api.org_with_admin(&op, "Other", "10.100.0.0/16").await;
        api.machine(&admin, &a, "box").await;
        let at = chrono::Utc::now().timestamp_millis();

        // The page a not-confirmed change leads to carries the banner, polling its org.
        let r = get(
            &api,
            &format!("/orgs/{a}/machines?saved=unconfirmed&at={at}"),
            Some(&admin),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_page(&r, true);
        let poll = format!("hx-get=\"/orgs/{a}/confirmed?at={at}\"");
        assert!(text(&r).contains(&poll), "{}", text(&r));

        // No reconcile since the change (one made an hour from now): still the banner,
        // polling on.
        let later = at + 3_600_000;
        let r = get(
            &api,
            &format!("/orgs/{a}/confirmed?at={later}"),
            Some(&admin),
        )
        .await;
        assert_eq!(r.status, 200);
        let body = text(&r);
        assert!(body.contains(&format!("hx-get=\"/orgs/{a}/confirmed?at={later}\"")));
        assert!(body.contains("has not confirmed it yet"), "{body}");

        // A reconcile succeeds after it: the confirmation, which polls no more.
        api.machine(&admin, &a, "another").await;
        eventually(Duration::from_secs(20), "confirmation", || async {
            let r = get(&api, &format!("/orgs/{a}/confirmed?at={at}"), Some(&admin)).await;
            let body = text(&r);
            (r.status == 200 && body.contains("Confirmed") && !body.contains("hx-get"))
                .then_some(())
        })
        .await;

        // Another tenant's banner is not there to ask about.
        let r = get(&api, &format!("/orgs/{b}/confirmed?at={at}"), Some(&admin)).await;
        assert_eq!(r.status, 404);
    });
}

async fn add_policy(api: &Api, who: &Client, org: &str, body: serde_json::Value) -> String {
    let path = format!("/api/v1/orgs/{org}/policies");
    let r = api.call("POST", &path, Some(who), Some(body)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// The policies' meaning without a change: the static analysis in the API and as badges on the
/// policies page, the dry-run preview of a change (nothing written), and the matrix.
#[test]
fn ui_policy_analysis_preview_and_matrix() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let (org, admin) = api.org_with_admin(&op, "Insight", "10.100.0.0/16").await;
        let base = format!("/api/v1/orgs/{org}");
        let mut machines = Vec::new();
        for (name, tags) in [
            ("web1", vec!["web"]),
            ("web2", vec!["web"]),
            ("db1", vec!["db"]),
        ] {
            let r = api
                .call(
                    "POST",
                    &format!("{base}/machines"),
                    Some(&admin),
                    Some(serde_json::json!({"name": name, "tags": tags})),
                )
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
            machines.push(r.body["machine"]["id"].as_str().unwrap().to_string());
        }
        let policy = |body: serde_json::Value| add_policy(&api, &admin, &org, body);
        let deny = policy(serde_json::json!({"priority": 10, "action": "deny", "src": {"tag": "web"}, "dst": {"tag": "db"}})).await;
        let ssh = policy(serde_json::json!({"priority": 20, "action": "allow", "src": {"tag": "web"}, "dst": {"tag": "db"}, "protocol": "tcp", "ports": "22"})).await;
        let ghost = policy(serde_json::json!({"priority": 30, "action": "deny", "src": {"tag": "ghost"}, "dst": "any"})).await;

        let r = api
            .call(
                "GET",
                &format!("{base}/policies/analysis"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["complete"], true);
        let findings = r.body["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert_eq!(findings[0]["policy"]["id"], ssh.as_str());
        assert_eq!(findings[0]["kind"], "shadowed");
        assert_eq!(findings[0]["by"][0]["id"], deny.as_str());
        assert_eq!(findings[0]["by"][0]["number"], 1);
        assert_eq!(findings[1]["policy"]["id"], ghost.as_str());
        assert_eq!(findings[1]["kind"], "matches_nothing");
        let page = get(&api, &format!("/orgs/{org}/policies"), Some(&admin)).await;
        assert_page(&page, true);
        let body = text(&page);
        assert!(body.contains("⚠ shadowed by #1"), "{body}");
        assert!(body.contains("⚠ matches no current machine"), "{body}");
        // The short history: once sampled, each row has an SVG sparkline (attributes only,
        // a <title>, its numbers as a table) and, with no packet counted, "never hit since".
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let body = loop {
            let page = get(&api, &format!("/orgs/{org}/policies"), Some(&admin)).await;
            assert_page(&page, true);
            let body = text(&page);
            if body.matches("<svg class=\"spark\"").count() >= 4 {
                break body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no sparklines: {body}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let ghost_row = body
            .split(&format!("data-policy=\"{ghost}\""))
            .nth(1)
            .and_then(|r| r.split("</details>").next())
            .unwrap();
        assert!(
            ghost_row.contains("<span class=\"badge hit\">never hit since 20"),
            "{ghost_row}"
        );
        assert!(ghost_row.contains("role=\"img\""), "{ghost_row}");
        assert!(
            ghost_row.contains("<title>Packets per step, last "),
            "{ghost_row}"
        );
        assert!(
            ghost_row.contains("<summary>Packets as a table</summary>"),
            "{ghost_row}"
        );
        assert!(ghost_row.contains("0 in every step"), "{ghost_row}");
        assert!(!body.contains(" style="), "no inline style (CSP)");
        // The default row has its own.
        let default_row = body.rsplit("<tr class=\"implicit\">").next().unwrap();
        assert!(default_row.contains("never hit since"), "{default_row}");
        let m = get(
            &api,
            &format!("/orgs/{org}/machines/{}", machines[0]),
            Some(&admin),
        )
        .await;
        assert_page(&m, true);
        let mbody = text(&m);
        assert!(
            mbody.contains("<title>Bytes the hub received per step"),
            "{mbody}"
        );
        assert!(
            mbody.contains("<summary>Bytes sent as a table</summary>"),
            "{mbody}"
        );
        // A preview says what a change would do and writes nothing.
        let audit_before = api
            .call("GET", &format!("{base}/audit"), Some(&admin), None)
            .await
            .body;
        let preview_path = format!("{base}/policies/preview");
        let preview =
            |body: serde_json::Value| api.call("POST", &preview_path, Some(&admin), Some(body));
        let r = preview(serde_json::json!({"op": "delete", "id": deny})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(
            r.body["flipped_pairs"], 4,
            "web→db, and db→web whose replies the deny drops"
        );
        assert_eq!(r.body["rules"]["removed"].as_array().unwrap().len(), 1);
        assert!(
            r.body["rules"]["removed"][0]
                .as_str()
                .unwrap()
                .contains(&deny)
        );
        let flips = r.body["flips"].as_array().unwrap();
        assert!(
            flips
                .iter()
                .all(|f| f["from"] == "deny" && f["to"] == "allow" && f["pairs"] == 4)
        );
        assert!(flips.iter().any(|f| f["label"] == "tcp/22"), "{flips:?}");
        assert_eq!(flips[0]["sample"][0]["dst"]["name"], "db1");
        let r = preview(serde_json::json!({"op": "create", "policy": {"action": "deny", "src": {"tag": "web"}, "dst": {"tag": "web"}, "protocol": "icmp"}})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let line = r.body["line"].as_str().unwrap();
        assert!(
            line.starts_with("-A MWG-ACL -p icmp -m set --match-set") && line.ends_with("-j DROP"),
            "{line}"
        );
        assert_eq!(r.body["flips"][0]["label"], "icmp");
        assert_eq!(r.body["flips"][0]["pairs"], 2, "web1→web2 and web2→web1");
        let r = preview(serde_json::json!({"op": "update", "id": ssh, "changes": {"priority": 5}}))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["flips"][0]["label"], "tcp/22");
        assert_eq!(r.body["flips"][0]["to"], "allow");
        assert_eq!(r.body["rules"]["reordered"], true);
        let r = preview(serde_json::json!({"op": "default", "action": "deny"})).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body["flipped_pairs"], 2,
            "web1↔web2: the rest is denied already: {:?}",
            r.body
        );
        // Bad input is the same 400 the change itself would get; unknown ids are 404.
        for (body, status) in [
            (
                serde_json::json!({"op": "create", "policy": {"action": "deny", "src": {"cidr": "192.168.0.0/24"}, "dst": "any"}}),
                400,
            ),
            (
                serde_json::json!({"op": "create", "policy": {"action": "deny", "src": "any", "dst": "any", "protocol": "icmp", "ports": "22"}}),
                400,
            ),
            (
                serde_json::json!({"op": "update", "id": ssh, "changes": {"priority": -1}}),
                400,
            ),
            (
                serde_json::json!({"op": "update", "id": machines[0], "changes": {}}),
                404,
            ),
            (serde_json::json!({"op": "delete"}), 400),
            (serde_json::json!({"op": "rename", "id": ssh}), 400),
            (serde_json::json!({"op": "default", "action": "maybe"}), 400),
        ] {
            let r = preview(body.clone()).await;
            assert_eq!(r.status, status, "{body}: {:?}", r.body);
            assert!(r.body["error"]["code"].is_string());
        }
        let r = api
            .call("GET", &format!("{base}/policies"), Some(&admin), None)
            .await;
        assert_eq!(
            r.body["policies"].as_array().unwrap().len(),
            3,
            "nothing written"
        );
        let org_now = api.call("GET", &base, Some(&admin), None).await;
        assert_eq!(org_now.body["default_action"], "allow");
        let audit_after = api
            .call("GET", &format!("{base}/audit"), Some(&admin), None)
            .await
            .body;
        assert_eq!(audit_before, audit_after, "no audit entry either");

        // The form's live preview and the settings' default switch, as htmx posts them.
        let form = [
            ("csrf_token", admin.csrf.as_str()),
            ("action", "deny"),
            ("src", "tag:web"),
            ("dst", "any"),
            ("protocol", "tcp"),
            ("ports", "5432"),
        ];
        let path = format!("/orgs/{org}/policies/preview");
        let r = post(&api, &path, Some(&admin), &form, "same-origin").await;
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_page(&r, true);
        let body = text(&r);
        assert!(body.contains("--dport 5432"), "{body}");
        assert!(body.contains("tcp/5432"), "{body}");
        let mut bad = form.to_vec();
        bad[5] = ("ports", "70000");
        let r = post(&api, &path, Some(&admin), &bad, "same-origin").await;
        assert_eq!(r.status, 200);
        assert!(text(&r).contains("Not yet a valid policy"), "{}", text(&r));
        let edit = [
            ("csrf_token", admin.csrf.as_str()),
            ("id", ssh.as_str()),
            ("action", "allow"),
            ("src", "tag:web"),
            ("dst", "tag:db"),
            ("protocol", "tcp"),
            ("ports", "22"),
            ("priority", "5"),
        ];
        let r = post(&api, &path, Some(&admin), &edit, "same-origin").await;
        assert!(text(&r).contains(&format!("mwg:{ssh}")), "{}", text(&r));
        let page = get(&api, &format!("/orgs/{org}/policies/{ssh}"), Some(&admin)).await;
        assert!(text(&page).contains(&format!("name=\"id\" value=\"{ssh}\"")));
        assert!(
            text(&page)
                .contains("hx-trigger=\"input changed delay:500ms, change delay:500ms, load\"")
        );
        assert!(
            text(&page).contains("⚠ shadowed by #1"),
            "the policy's own page too"
        );
        let r = post(
            &api,
            &format!("/orgs/{org}/settings/preview"),
            Some(&admin),
            &[
                ("csrf_token", admin.csrf.as_str()),
                ("default_action", "deny"),
            ],
            "same-origin",
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            text(&r).contains("2 machine pairs would change verdict"),
            "{}",
            text(&r)
        );
        let r = post(&api, &path, Some(&admin), &form, "cross-site").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);

        // The matrix: rows connect to columns, by the ordered chain (replies included).
        let r = api
            .call(
                "GET",
                &format!("{base}/matrix?proto=tcp&port=22"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let labels: Vec<&str> = r.body["axis"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["web1", "web2", "db1"]);
        let verdicts: Vec<Vec<Value>> = r.body["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["verdict"].clone())
                    .collect()
            })
            .collect();
        let (a, d, n) = (json!("allow"), json!("deny"), Value::Null);
        assert_eq!(
            verdicts,
            [
                [n.clone(), a.clone(), d.clone()],
                [a.clone(), n.clone(), d.clone()],
                [d.clone(), d.clone(), n.clone()],
            ],
            "web→db denied, and db→web by its replies"
        );
        assert_eq!(r.body["cells"][0][2]["src"], "10.100.0.2");
        assert_eq!(r.body["cells"][0][2]["dst"], "10.100.0.4");
        let r = api
            .call("GET", &format!("{base}/matrix?by=tag"), Some(&admin), None)
            .await;
        assert_eq!(r.body["by"], "tag");
        assert_eq!(r.body["axis"][0]["label"], "db");
        assert_eq!(r.body["axis"][1]["machines"], 2);
        assert_eq!(
            r.body["cells"][0][0]["verdict"],
            Value::Null,
            "db has one machine"
        );
        assert_eq!(r.body["cells"][1][1]["verdict"], "allow");
        assert_eq!(r.body["cells"][1][0]["verdict"], "deny");
        for bad in [
            "proto=tcp",
            "proto=icmp&port=22",
            "proto=tcp&port=0",
            "proto=sctp",
            "by=rack",
        ] {
            let r = api
                .call("GET", &format!("{base}/matrix?{bad}"), Some(&admin), None)
                .await;
            assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        }
        let page = get(
            &api,
            &format!("/orgs/{org}/matrix?proto=tcp&port=22"),
            Some(&admin),
        )
        .await;
        assert_eq!(page.status, 200);
        assert_page(&page, true);
        let body = text(&page);
        assert!(
            body.contains("tcp/22: can the row connect to the column?"),
            "{body}"
        );
        assert!(body.contains(&format!("href=\"/orgs/{org}/explain?src=10.100.0.2&#38;dst=10.100.0.4&#38;proto=tcp&#38;port=22\"")), "{body}");
        assert!(
            body.contains("✗ deny") && body.contains("✓ allow"),
            "{body}"
        );
        assert!(
            body.contains(&format!("href=\"/orgs/{org}/matrix\"")),
            "in the navigation"
        );
        let page = get(&api, &format!("/orgs/{org}/matrix?proto=tcp"), Some(&admin)).await;
        assert_eq!(page.status, 400);
        assert!(text(&page).contains("tcp and udp need a port"));

        // Another tenant's analysis is not there.
        let (other, stranger) = api.org_with_admin(&op, "Elsewhere", "10.100.0.0/16").await;
        let r = api
            .call(
                "GET",
                &format!("{base}/policies/analysis"),
                Some(&stranger),
                None,
            )
            .await;
        assert_eq!(r.status, 404);
        let _ = (other, machines);
    });
}

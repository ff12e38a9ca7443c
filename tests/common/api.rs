//! A client for the API under test: the real router, driven through `warp::test` (no socket),
//! on top of the harness's controller and kernel.

use super::Harness;
use meshwg::http::{ApiConfig, App, routes};
use meshwg::secret::Secret;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};

pub const OPERATOR: &str = "operator@example.com";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone)]
pub struct Api {
    pub app: Arc<App>,
    filter: BoxedFilter<(meshwg::http::Response,)>,
}

/// A logged-in client: its cookie header and CSRF token.
#[derive(Clone, Debug)]
pub struct Client {
    pub cookie: String,
    pub csrf: String,
    pub user: Value,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: bytes::Bytes,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub fn jwt_secret() -> Secret<Vec<u8>> {
    Secret::new(b"test-jwt-secret-test-jwt-secret-0123456789".to_vec())
}

impl Api {
    pub async fn new(h: &Harness) -> Api {
        Api::with(h, |_| {}).await
    }

    /// [`Api::new`] with changes to the test configuration.
    pub async fn with(h: &Harness, change: impl FnOnce(&mut ApiConfig)) -> Api {
        let mut config = ApiConfig::new(jwt_secret(), true, super::ENDPOINT.to_string());
        config.trusted_proxies = vec!["10.9.9.9".parse().unwrap()];
        change(&mut config);
        let app = App::new(h.ctl.clone(), config);
        let hash =
            meshwg::auth::password::hash_blocking(&Secret::new(PASSWORD.to_string())).unwrap();
        meshwg::db::users::upsert_operator(&h.pool, OPERATOR, &hash)
            .await
            .unwrap();
        let filter = routes(app.clone()).boxed();
        Api { app, filter }
    }

    /// Sends a request from `from` (client address) and returns status, headers and JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        who: Option<&Client>,
        body: Option<&Value>,
        from: SocketAddr,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut r = warp::test::request()
            .method(method)
            .path(path)
            .remote_addr(from);
        if let Some(c) = who {
            r = r
                .header("cookie", &c.cookie)
                .header("x-csrf-token", &c.csrf);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).unwrap());
        }
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        self.raw(r).await
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        who: Option<&Client>,
        body: Option<Value>,
    ) -> Reply {
        self.send(
            method,
            path,
            who,
            body.as_ref(),
            "192.0.2.10:40000".parse().unwrap(),
            &[],
        )
        .await
    }

    /// A raw request builder for cases `call` cannot express.
    pub async fn raw(&self, r: warp::test::RequestBuilder) -> Reply {
        let resp = r.reply(&self.filter).await;
        let raw = resp.body().clone();
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            raw,
        }
    }

    pub async fn try_login(&self, email: &str, password: &str, from: SocketAddr) -> Reply {
        let body = serde_json::json!({"email": email, "password": password});
        self.send("POST", "/api/v1/auth/login", None, Some(&body), from, &[])
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Client {
        let r = self
            .try_login(email, password, "192.0.2.20:40000".parse().unwrap())
            .await;
        assert_eq!(r.status, 200, "login {email}: {:?}", r.body);
        client_from(&r)
    }

    pub async fn operator(&self) -> Client {
        self.login(OPERATOR, PASSWORD).await
    }

    /// Creates an org as `who`; returns its JSON.
    pub async fn org(&self, who: &Client, name: &str, cidr: &str) -> Value {
        let r = self
            .call(
                "POST",
                "/api/v1/orgs",
                Some(who),
                Some(serde_json::json!({"name": name, "cidr": cidr})),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    /// An org made by `op` and its first admin (`admin@<name, lowercase>.test`), logged in:
    /// the org's id and the admin.
    pub async fn org_with_admin(&self, op: &Client, name: &str, cidr: &str) -> (String, Client) {
        let org = self.org(op, name, cidr).await;
        let id = org["id"].as_str().unwrap().to_string();
        let email = format!("admin@{}.test", name.to_lowercase().replace(' ', "-"));
        let admin = self.user(op, &id, &email, "admin").await;
        (id, admin)
    }

    /// Creates a user in `org` and logs them in.
    pub async fn user(&self, who: &Client, org: &str, email: &str, role: &str) -> Client {
        let r = self
            .call(
                "POST",
                &format!("/api/v1/orgs/{org}/users"),
                Some(who),
                Some(serde_json::json!({"email": email, "password": PASSWORD, "role": role})),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        self.login(email, PASSWORD).await
    }

    pub async fn machine(&self, who: &Client, org: &str, name: &str) -> Value {
        let r = self
            .call(
                "POST",
                &format!("/api/v1/orgs/{org}/machines"),
                Some(who),
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }
}

/// The session cookie and CSRF token a successful login set.
pub fn client_from(r: &Reply) -> Client {
    let mut cookies = Vec::new();
    for v in r.headers.get_all("set-cookie") {
        let v = v.to_str().unwrap();
        cookies.push(v.split(';').next().unwrap().to_string());
    }
    Client {
        cookie: cookies.join("; "),
        csrf: r.body["csrf_token"].as_str().unwrap().to_string(),
        user: r.body["user"].clone(),
    }
}

//! The dashboard in a real browser (root): Debian's Chromium driven over WebDriver (fantoccini
//! → `chromedriver --port=<free>`, started here inside the test's controller-host namespace and
//! killed by its process group at the end) against the real server on a loopback socket there.
//! The browser acts, the kernel confirms:
//!
//! ```text
//!  <p>-host namespace: meshwg (UI + API on 127.0.0.1:<port>) ── chromedriver ── chromium
//!    └─ tenant hub <p>-<kid> ── wg ── <p>-c1 "laptop", <p>-c2 "phone" (wg-quick, configs read
//!                                     out of the page)
//! ```
//!
//! Cookies are exactly as in production (`__Host-`, Secure, HttpOnly, SameSite=Strict): Chromium
//! treats `http://localhost` as a secure origin, and the first phase asserts it kept them.
//! Without Chromium the test fails (CI installs it with scripts/deps.sh); it never skips.
//! Fallback if WebDriver ever breaks: Python Playwright with `executable_path=/usr/bin/chromium`.

mod common;

use common::api::{Api, OPERATOR, PASSWORD};
use common::*;
use fantoccini::key::Key;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use meshwg::secret::Secret;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const XSS: &str = "\"><img src=x onerror=alert(1)></script>";
const AXE: &str = include_str!("assets/axe-4.14.1.min.js");
const ADMIN: &str = "admin@acme.test";

/// chromedriver (and the browsers it starts, in its process group), killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(h: &Harness) -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: scripts/deps.sh installs chromium and chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(h.world.tmp.join("chromedriver.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &h.world.host_ns, CHROMEDRIVER])
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this test started; no memory is involved.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

async fn connect(h: &Harness, d: &Driver) -> Browser {
    let profile = h.world.tmp.join("chromium-profile");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{}", d.port);
    let start = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                eprintln!("waiting for chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("chromedriver: {e}"),
        }
    }
}

/// The browser and where the dashboard is.
struct Ui {
    b: Browser,
    base: String,
    shots: PathBuf,
}

impl Ui {
    async fn go(&self, path: &str) {
        self.b.goto(&format!("{}{path}", self.base)).await.unwrap();
        self.clean(path).await;
    }

    /// The element, waiting for it to appear (a page may still be loading).
    async fn el(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .b
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let page = self.b.source().await.unwrap_or_default();
                panic!("{css} at {}: {e}\n{page}", self.path().await)
            }
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.el(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn js(&self, script: &str) -> Value {
        self.b.execute(script, vec![]).await.unwrap()
    }

    async fn path(&self) -> String {
        self.b.current_url().await.unwrap().path().to_string()
    }

    async fn text(&self, css: &str) -> String {
        self.el(css).await.text().await.unwrap()
    }

    /// No CSP violation and no script error on the page so far (app.js collects both).
    async fn clean(&self, at: &str) {
        let errors = self
            .js("return window.meshwgErrors ? window.meshwgErrors : ['app.js did not run']")
            .await;
        assert_eq!(errors, json!([]), "CSP violations or JS errors at {at}");
    }

    /// Presses Tab until the focused element matches `css` (the keyboard reaches it), and
    /// checks that focus is visible there.
    async fn tab_to(&self, css: &str) {
        for _ in 0..80 {
            let found = self
                .b
                .execute(
                    "return document.activeElement && document.activeElement.matches(arguments[0])",
                    vec![json!(css)],
                )
                .await
                .unwrap();
            if found == json!(true) {
                let outline = self
                    .js("return getComputedStyle(document.activeElement).outlineStyle")
                    .await;
                assert_ne!(outline, json!("none"), "focus not visible on {css}");
                return;
            }
            self.key(Key::Tab).await;
        }
        panic!("Tab never reached {css}");
    }

    async fn key(&self, k: Key) {
        self.b
            .active_element()
            .await
            .unwrap()
            .send_keys(&k)
            .await
            .unwrap();
    }

    async fn keys(&self, text: &str) {
        self.b
            .active_element()
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Waits for a navigation (the path changes to one satisfying `ok`).
    async fn arrive(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let p = self.path().await;
            if ok(&p) {
                self.clean(&p).await;
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what}: still at {p}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// axe-core on the page in light, dark and high contrast, at desktop and phone size;
    /// screenshots of each.
    /// Waits (refreshing) until the page shows a history sparkline.
    async fn wait_spark(&self, name: &str) {
        let start = Instant::now();
        while self
            .js("return document.querySelectorAll('svg.spark').length")
            .await
            == json!(0)
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no sparkline on {name}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.b.refresh().await.unwrap();
        }
    }

    async fn audit(&self, name: &str) {
        for (w, hgt) in [(1280, 800), (390, 844)] {
            self.b.set_window_size(w, hgt).await.unwrap();
            for theme in ["light", "dark", "contrast"] {
                self.b
                    .execute(
                        "document.documentElement.setAttribute('data-theme', arguments[0])",
                        vec![json!(theme)],
                    )
                    .await
                    .unwrap();
                let shot = self.b.screenshot().await.unwrap();
                std::fs::write(self.shots.join(format!("{name}-{theme}-{w}.png")), shot).unwrap();
                if self.js("return typeof window.axe").await != json!("object") {
                    self.b.execute(AXE, vec![]).await.unwrap();
                }
                let found = self
                    .b
                    .execute_async(
                        "const done = arguments[arguments.length - 1];
                         axe.run(document, {runOnly: {type: 'tag',
                           values: ['wcag2a', 'wcag2aa', 'wcag21aa', 'wcag22aa']}})
                           .then(r => done(r.violations.map(v => v.id + ' (' + v.impact + '): ' +
                             v.nodes.map(n => n.target.join(' ')).join(' | '))),
                                 e => done(['axe failed: ' + e]));",
                        vec![],
                    )
                    .await
                    .unwrap();
                assert_eq!(found, json!([]), "axe on {name}, {theme}, {w}px");
            }
        }
        self.b.set_window_size(1280, 800).await.unwrap();
        self.js("document.documentElement.setAttribute('data-theme', 'system')")
            .await;
        self.clean(name).await;
    }

    /// Waits until the element's text contains `needle` (across page loads).
    async fn wait_text(&self, css: &str, needle: &str) {
        let start = Instant::now();
        loop {
            let found = self
                .b
                .execute(
                    "const e = document.querySelector(arguments[0]);
                     return !!e && e.innerText.includes(arguments[1]);",
                    vec![json!(css), json!(needle)],
                )
                .await;
            if found.ok() == Some(json!(true)) {
                self.clean(css).await;
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{css} never showed {needle}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the machines table's row for `name`.
    async fn machine_row(&self, name: &str) -> Option<String> {
        let v = self
            .b
            .execute(
                "const r = [...document.querySelectorAll('#machines tbody tr')]
                   .find(r => r.dataset.machine === arguments[0]);
                 return r ? r.innerText : null;",
                vec![json!(name)],
            )
            .await
            .unwrap();
        v.as_str().map(str::to_string)
    }

    /// Adds a machine with the mouse; returns its config as the page shows it.
    async fn add_machine(&self, org: &str, name: &str) -> String {
        self.go(&format!("/orgs/{org}/machines/new")).await;
        self.fill("#m-name", name).await;
        self.el("form[action$='/machines'] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        self.el("#config").await;
        self.clean("config page").await;
        self.text("#config").await
    }

    /// The packets counter of the first (user) policy row on the policies page.
    async fn first_policy_packets(&self) -> u64 {
        self.text("tr[data-policy] td.packets")
            .await
            .trim()
            .parse()
            .unwrap()
    }
}

#[test]
fn ui_browser_end_to_end() {
    run(|h| async move {
        let api = Api::new(&h).await;
        let addr = h.serve_api(api.app.clone()).await;
        let driver = Driver::start(&h);
        let b = connect(&h, &driver).await;
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-shots");
        std::fs::create_dir_all(&shots).unwrap();
        let ui = Ui {
            b,
            base: format!("http://localhost:{}", addr.port()),
            shots,
        };
        phases(&h, &api, &ui).await;
        ui.b.close().await.unwrap();
        drop(driver);
    });
}

async fn phases(h: &Harness, api: &Api, ui: &Ui) {
    // Sign in as the operator; the session cookies arrive as production sets them.
    ui.go("/").await;
    assert_eq!(ui.path().await, "/login");
    ui.audit("login").await;
    // Negative control: axe does see a violation when there is one (grey on white, set
    // through the CSSOM, which the CSP allows).
    let seen =
        ui.b.execute_async(
            "const done = arguments[arguments.length - 1];
             const p = document.createElement('p'); p.textContent = 'faint';
             p.style.color = '#dddddd'; p.style.background = '#ffffff';
             document.querySelector('main').append(p);
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2aa']}})
               .then(r => { p.remove(); done(r.violations.map(v => v.id)); });",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        seen,
        json!(["color-contrast"]),
        "axe must catch the control"
    );
    ui.fill("#email", OPERATOR).await;
    ui.fill("#password", PASSWORD).await;
    ui.el("form[action='/login'] button")
        .await
        .click()
        .await
        .unwrap();
    ui.arrive("operator console", |p| p == "/operator").await;
    let session =
        ui.b.get_named_cookie("__Host-meshwg_session")
            .await
            .expect("Chromium kept the __Host- session cookie on http://localhost");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(
        session.same_site().map(|s| s.to_string()),
        Some("Strict".to_string())
    );
    assert_eq!(
        ui.js("return document.cookie.includes('meshwg_session')")
            .await,
        json!(false),
        "the session cookie is not readable by scripts"
    );

    // The operator creates the org and its admin in the browser.
    ui.fill("#org-name", "Acme").await;
    ui.el("#org-cidr").await.clear().await.unwrap();
    ui.fill("#org-cidr", "10.100.0.0/16").await;
    ui.el("form[action='/operator/orgs'] button")
        .await
        .click()
        .await
        .unwrap();
    let org_path = ui.arrive("org overview", |p| p.starts_with("/orgs/")).await;
    let org = org_path.trim_start_matches("/orgs/").to_string();
    ui.go("/operator").await;
    ui.audit("operator").await;
    ui.go(&format!("/orgs/{org}/users")).await;
    ui.fill("#u-email", ADMIN).await;
    ui.el("#u-role")
        .await
        .select_by_value("admin")
        .await
        .unwrap();
    ui.fill("#u-password", PASSWORD).await;
    ui.el("form[action$='/users'] button")
        .await
        .click()
        .await
        .unwrap();
    ui.wait_text("#users", ADMIN).await;
    ui.el("form[action='/logout'] button")
        .await
        .click()
        .await
        .unwrap();
    ui.arrive("signed out", |p| p == "/login").await;

    // (h) Keyboard only: sign in as the admin, add a machine, leave its config page.
    ui.js("document.body.focus()").await;
    ui.tab_to("#email").await;
    ui.keys(ADMIN).await;
    ui.tab_to("#password").await;
    ui.keys(PASSWORD).await;
    ui.key(Key::Enter).await;
    ui.arrive("admin's org", |p| p == org_path).await;
    ui.tab_to(&format!("nav a[href='/orgs/{org}/machines']"))
        .await;
    ui.key(Key::Enter).await;
    ui.arrive("machines", |p| p.ends_with("/machines")).await;
    ui.tab_to("a[href$='/machines/new']").await;
    ui.key(Key::Enter).await;
    ui.arrive("add machine", |p| p.ends_with("/machines/new"))
        .await;
    ui.tab_to("#m-name").await;
    ui.keys("laptop").await;
    ui.tab_to("#m-tags").await;
    ui.keys("staff").await;
    ui.key(Key::Enter).await;
    ui.el("#config").await;
    ui.clean("config page").await;
    ui.audit("machine-created").await;
    let laptop_conf = ui.text("#config").await;
    assert!(laptop_conf.contains("PrivateKey"), "{laptop_conf}");
    assert!(
        !ui.b
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("PrivateKey")
    );
    ui.tab_to("#saved").await;
    ui.key(Key::Enter).await;
    let laptop_path = ui
        .arrive("machine page", |p| {
            p.contains("/machines/") && !p.ends_with("/machines")
        })
        .await;

    // (e) Back to the config page: no private key comes back.
    ui.js("history.back()").await;
    // Back at the address of the form's answer (restored from the back/forward cache, or
    // Chromium's "confirm resubmission" page, since the answer was never stored).
    let machines_path = format!("/orgs/{org}/machines");
    let start = Instant::now();
    while ui.path().await != machines_path {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "history.back() went nowhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("back at: {}", ui.js("return document.title").await);
    let html =
        ui.b.execute("return document.documentElement.outerHTML", vec![])
            .await
            .unwrap();
    let html = html.as_str().unwrap_or_default();
    assert!(!html.contains("PrivateKey"), "the key came back: {html}");
    let key_line = laptop_conf
        .lines()
        .find(|l| l.starts_with("PrivateKey"))
        .unwrap();
    let key = key_line.split('=').nth(1).unwrap().trim();
    assert!(!html.contains(key));
    ui.go(&laptop_path).await;
    ui.wait_spark("machine").await;
    ui.audit("machine").await;

    // (a) The config read out of the page brings the machine up; the list turns it online
    // by itself (htmx refresh, no reload).
    let vm1 = h.client(1, &Secret::new(laptop_conf.clone()));
    ui.go(&format!("/orgs/{org}/machines")).await;
    let start = Instant::now();
    loop {
        let _ = vm1.ping("10.100.0.1", 1);
        let row = ui.machine_row("laptop").await.unwrap_or_default();
        if row.contains("online") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "laptop never shown online: {row}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ui.clean("machines after refresh").await;

    // A second machine, and traffic between the two through the hub.
    let phone_conf = ui.add_machine(&org, "phone").await;
    let vm2 = h.client(2, &Secret::new(phone_conf));
    let phone_addr = "10.100.0.3";
    eventually(Duration::from_secs(30), "laptop pings phone", || async {
        vm1.ping(phone_addr, 1).then_some(())
    })
    .await;
    ui.go(&format!("/orgs/{org}/machines")).await;
    ui.audit("machines").await;
    ui.go(&format!("/orgs/{org}/machines/new")).await;
    ui.audit("machine-new").await;

    // Keyboard only: rotate phone's key on its page; the new config is shown once, the old
    // one stops, and the page waits for the new key's first handshake, then shows it online.
    ui.go(&format!("/orgs/{org}/machines")).await;
    let phone_path = ui
        .js("return [...document.querySelectorAll('#machines tbody tr')]
               .find(r => r.dataset.machine === 'phone').querySelector('a').getAttribute('href')")
        .await;
    let phone_path = phone_path.as_str().unwrap().to_string();
    ui.go(&phone_path).await;
    ui.js("document.body.focus()").await;
    ui.tab_to("#r-confirm").await;
    ui.key(Key::Space).await;
    ui.tab_to("#rotate").await;
    ui.key(Key::Enter).await;
    ui.wait_text("h1", "New key for phone").await;
    ui.audit("machine-rotated").await;
    let rotated_conf = ui.text("#config").await;
    assert!(rotated_conf.contains("PrivateKey"), "{rotated_conf}");
    ui.tab_to("#saved").await;
    ui.key(Key::Enter).await;
    ui.arrive("phone's page", |p| p == phone_path).await;
    ui.wait_text(
        "#machine-status",
        "waiting for the first handshake with the new key",
    )
    .await;
    ui.audit("machine-rotated-waiting").await;
    assert!(!vm1.ping(phone_addr, 2), "phone's old config still answers");
    drop(vm2);
    let vm3 = h.client(3, &Secret::new(rotated_conf));
    eventually(
        Duration::from_secs(30),
        "laptop pings phone's new key",
        || async { vm1.ping(phone_addr, 1).then_some(()) },
    )
    .await;
    ui.wait_text("#machine-status", "online").await;
    let _ = vm3;

    // (h, b) Keyboard only: a deny policy laptop → phone for icmp.
    ui.go(&org_path).await;
    ui.js("document.body.focus()").await;
    ui.tab_to(&format!("nav a[href='/orgs/{org}/policies']"))
        .await;
    ui.key(Key::Enter).await;
    ui.arrive("policies", |p| p.ends_with("/policies")).await;
    ui.tab_to("#p-name").await;
    ui.keys("no ping to phone").await;
    ui.tab_to("input[name=action][value=allow]").await;
    ui.key(Key::Right).await;
    ui.tab_to("#p-src").await;
    ui.key(Key::Down).await;
    ui.tab_to("#p-dst").await;
    ui.key(Key::Down).await;
    ui.key(Key::Down).await;
    ui.tab_to("#p-proto").await;
    for _ in 0..3 {
        ui.key(Key::Down).await;
    }
    let chosen = ui
        .js(
            "const f = document.querySelector('form[action$=\"/policies\"]');
             return [f.action.value, f.src.selectedOptions[0].text, f.dst.selectedOptions[0].text,
                     f.protocol.value];",
        )
        .await;
    assert_eq!(
        chosen,
        json!([
            "deny",
            "machine laptop (10.100.0.2)",
            "machine phone (10.100.0.3)",
            "icmp"
        ])
    );
    ui.tab_to("form[action$='/policies'] button[type=submit]")
        .await;
    ui.key(Key::Enter).await;
    ui.wait_text("#policies", "no ping to phone").await;
    let before = ui.first_policy_packets().await;
    const SENT: u64 = 5;
    assert!(
        !vm1.ping(phone_addr, SENT as u32),
        "the deny policy let pings through"
    );
    let start = Instant::now();
    loop {
        ui.b.refresh().await.unwrap();
        ui.clean("policies").await;
        let now = ui.first_policy_packets().await;
        if now >= before + SENT {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "counter {before} → {now}, sent {SENT}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The audit covers the rows' sparklines, badges and their tables (one opened).
    ui.wait_spark("policies").await;
    ui.js("document.querySelector('#policies details.spark-table').open = true")
        .await;
    assert!(
        ui.js("return document.querySelector('#policies .badge.hit').textContent")
            .await
            .as_str()
            .is_some_and(|t| t.starts_with("last hit") || t.starts_with("never hit since")),
    );
    ui.audit("policies").await;

    // (h) Keyboard only: Explain says why laptop cannot ping phone, row by row, and the
    // kernel agrees (the pings above were dropped).
    ui.go(&org_path).await;
    ui.js("document.body.focus()").await;
    ui.tab_to(&format!("nav a[href='/orgs/{org}/explain']"))
        .await;
    ui.key(Key::Enter).await;
    ui.arrive("explain", |p| p.ends_with("/explain")).await;
    ui.tab_to("#x-src").await;
    ui.key(Key::Down).await;
    ui.tab_to("#x-dst").await;
    ui.key(Key::Down).await;
    ui.key(Key::Down).await;
    ui.tab_to("#x-proto").await;
    ui.key(Key::Down).await;
    ui.key(Key::Down).await;
    ui.tab_to("#explain-form button[type=submit]").await;
    ui.key(Key::Enter).await;
    ui.wait_text("#explain-answer", "Not reachable").await;
    let verdict = ui.text("#explain-answer .verdict").await;
    assert!(
        verdict.contains("laptop (10.100.0.2) cannot reach phone (10.100.0.3) over icmp")
            && verdict.contains("denied by policy #1 (no ping to phone)"),
        "{verdict}"
    );
    let row = ui.text("#trace-forward tr.decided").await;
    assert!(
        row.contains("machine laptop") && row.contains("deny here"),
        "{row}"
    );
    assert!(ui.text("#explain-facts").await.contains("exactly its /32"));
    ui.audit("explain").await;
    // The answer itself (below the form) for the reviewer: verdict, both traces, the facts.
    let shot = ui.el("#explain-answer").await.screenshot().await.unwrap();
    std::fs::write(ui.shots.join("explain-answer-1280.png"), shot).unwrap();
    // (h) Keyboard only: watch this path; the panel counts the pings that reach the hub
    // (and are dropped there) by itself, every 2 s.
    ui.tab_to("#watch-button").await;
    ui.key(Key::Enter).await;
    ui.wait_text("#watches", "deny by policy #1").await;
    assert!(
        !vm1.ping(phone_addr, SENT as u32),
        "still denied while watched"
    );
    let start = Instant::now();
    loop {
        // Read in one step: the poll may swap the panel between a lookup and a read.
        let counted: u64 = ui
            .js(
                "const e = document.querySelector('#watches .watch-packets');
                 return e ? e.innerText : '0';",
            )
            .await
            .as_str()
            .unwrap_or("0")
            .trim()
            .parse()
            .unwrap();
        if counted >= SENT {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the watch panel shows {counted}, sent {SENT}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ui.clean("watch panel").await;
    ui.audit("explain-watch").await;
    let shot = ui.el("#watch-panel").await.screenshot().await.unwrap();
    std::fs::write(ui.shots.join("explain-watch-panel-1280.png"), shot).unwrap();
    // The other way round the first packet passes, but the deny drops its echo reply: the
    // reply direction decides, and the kernel agrees.
    ui.go(&format!(
        "/orgs/{org}/explain?src_addr={phone_addr}&dst_addr=10.100.0.2&proto=icmp"
    ))
    .await;
    let verdict = ui.text("#explain-answer .verdict").await;
    assert!(verdict.contains("but the reply is denied"), "{verdict}");
    assert!(!vm3.ping("10.100.0.2", 2), "echo replies are dropped");
    // The fix pre-fills an allow above the deny in the policy form (not saved here).
    ui.js("document.body.focus()").await;
    ui.tab_to("#explain-fix").await;
    ui.key(Key::Enter).await;
    ui.arrive("policy form", |p| p.ends_with("/policies")).await;
    let filled = ui
        .js(
            "const f = document.querySelector('form[action$=\"/policies\"]');
             return [f.action.value, f.src.selectedOptions[0].text, f.dst.selectedOptions[0].text,
                     f.protocol.value, f.priority.value];",
        )
        .await;
    assert_eq!(
        filled,
        json!([
            "allow",
            "machine laptop (10.100.0.2)",
            "machine phone (10.100.0.3)",
            "icmp",
            "99"
        ])
    );

    // The overview names the rule that dropped them, with the kernel's count, and the
    // machines whose bytes went through the hub.
    ui.go(&org_path).await;
    assert_eq!(
        ui.text("#drops tbody tr:first-child td:first-child").await,
        "no ping to phone"
    );
    let dropped: u64 = ui
        .text("#drops tbody tr:first-child td:nth-child(2)")
        .await
        .parse()
        .unwrap();
    assert!(
        dropped >= SENT,
        "overview shows {dropped} dropped, sent {SENT}"
    );
    assert!(ui.text("#talkers").await.contains("laptop"));

    // (c) A machine named like an attack is text everywhere.
    ui.add_machine(&org, XSS).await;
    ui.go(&format!("/orgs/{org}/machines")).await;
    assert_eq!(ui.js("return document.images.length").await, json!(0));
    assert!(ui.machine_row(XSS).await.unwrap().contains(XSS));
    assert!(ui.b.get_alert_text().await.is_err(), "a script ran");
    ui.clean("xss").await;

    // (d) Another tenant's pages are the 404 page.
    let op = api.operator().await;
    let (other, other_admin) = api.org_with_admin(&op, "Other", "10.100.0.0/16").await;
    let theirs = api.machine(&other_admin, &other, "theirs").await;
    let theirs = theirs["machine"]["id"].as_str().unwrap();
    for path in [
        format!("/orgs/{other}"),
        format!("/orgs/{other}/machines"),
        format!("/orgs/{other}/machines/{theirs}"),
        format!("/orgs/{org}/machines/{theirs}"),
        format!("/orgs/{other}/policies"),
        format!("/orgs/{other}/settings"),
    ] {
        ui.go(&path).await;
        assert_eq!(ui.text("h1").await, "Not found", "{path}");
    }
    ui.audit("not-found").await;

    // The header's theme menu: the server sets the chosen theme on the next page.
    ui.go(&format!("/orgs/{org}/machines")).await;
    ui.el("#theme-menu")
        .await
        .select_by_value("dark")
        .await
        .unwrap();
    ui.el("form[action='/theme'] button")
        .await
        .click()
        .await
        .unwrap();
    let start = Instant::now();
    while ui
        .js("return document.documentElement.getAttribute('data-theme')")
        .await
        != json!("dark")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "theme not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ui.path().await, format!("/orgs/{org}/machines"));
    ui.clean("theme").await;

    // A policy's own page.
    ui.go(&format!("/orgs/{org}/policies")).await;
    let href = ui
        .js("return document.querySelector('tr[data-policy] td a').getAttribute('href')")
        .await;
    ui.go(href.as_str().unwrap()).await;
    assert_eq!(
        ui.el("#p-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("no ping to phone")
    );
    ui.audit("policy").await;

    // The policy form previews as you type (htmx, debounced): the rendered rule line and the
    // pairs whose connections would flip, before anything is saved.
    ui.go(&format!("/orgs/{org}/policies")).await;
    let rows = ui
        .js("return document.querySelectorAll('tr[data-policy]').length")
        .await;
    ui.el("input[name=action][value=deny]")
        .await
        .click()
        .await
        .unwrap();
    ui.el("#p-proto")
        .await
        .select_by_value("tcp")
        .await
        .unwrap();
    ui.fill("#p-ports", "2222").await;
    ui.wait_text("#rule-line", "--dport 2222").await;
    ui.wait_text("#preview-flips", "tcp/2222").await;
    ui.wait_text("#preview-flips", "laptop → phone").await;
    // Back and forth between the radios: each choice previews again.
    for (action, needle) in [("allow", "No connection"), ("deny", "6 machine pairs")] {
        ui.el(&format!("input[name=action][value={action}]"))
            .await
            .click()
            .await
            .unwrap();
        ui.wait_text("#preview-summary", needle).await;
    }
    assert!(ui.path().await.ends_with("/policies"), "still on the form");
    ui.js("document.getElementById('policy-preview').scrollIntoView()")
        .await;
    ui.audit("policy-preview").await;
    ui.go(&format!("/orgs/{org}/policies")).await;
    assert_eq!(
        ui.js("return document.querySelectorAll('tr[data-policy]').length")
            .await,
        rows,
        "the preview saved nothing"
    );
    // The settings page shows what switching the default would do, before saving.
    ui.go(&format!("/orgs/{org}/settings")).await;
    ui.el("input[name=default_action][value=deny]")
        .await
        .click()
        .await
        .unwrap();
    ui.wait_text("#default-preview", "would change verdict")
        .await;
    ui.audit("settings-preview").await;

    // The matrix: laptop cannot ping phone (the deny made above), each cell opens Explain.
    ui.go(&format!("/orgs/{org}/matrix")).await;
    ui.wait_text("#matrix", "✗ deny").await;
    let href = ui
        .js("return document.querySelector('#matrix td.cell-deny a').getAttribute('href')")
        .await;
    assert!(
        href.as_str().unwrap().starts_with(&format!(
            "/orgs/{org}/explain?src=10.100.0.2&dst=10.100.0.3&proto=icmp"
        )),
        "{href}"
    );
    ui.audit("matrix").await;
    ui.go(&format!("/orgs/{org}/matrix?proto=tcp&port=22&by=tag"))
        .await;
    ui.audit("matrix-tags").await;
    // Keyboard only: tick laptop and phone on the list, add a tag to both after the
    // confirmation that names them; then delete the attack-named machine, typing the count.
    // First, "select every machine shown" ticks and unticks every box.
    ui.go(&format!("/orgs/{org}/machines")).await;
    let ticked = "return [...document.querySelectorAll('input[form=bulk]')].map(b => b.checked)";
    ui.el("[data-select-all]").await.click().await.unwrap();
    let all = ui.js(ticked).await;
    assert!(all.as_array().unwrap().iter().all(|b| b == true), "{all}");
    ui.el("[data-select-all]").await.click().await.unwrap();
    let none = ui.js(ticked).await;
    assert!(
        none.as_array().unwrap().iter().all(|b| b == false),
        "{none}"
    );
    ui.js("document.body.focus()").await;
    ui.tab_to("tr[data-machine='laptop'] input[type=checkbox]")
        .await;
    ui.key(Key::Space).await;
    ui.tab_to("tr[data-machine='phone'] input[type=checkbox]")
        .await;
    ui.key(Key::Space).await;
    ui.js("document.body.focus()").await;
    ui.tab_to("#b-tag").await;
    ui.keys("lab").await;
    ui.tab_to("#bulk-review").await;
    ui.key(Key::Enter).await;
    ui.wait_text("h1", "Add tag lab to 2 machines?").await;
    assert!(ui.text("#batch-names").await.contains("laptop, phone"));
    ui.audit("machines-bulk-confirm").await;
    ui.tab_to("#batch-apply").await;
    ui.key(Key::Enter).await;
    ui.arrive("machines", |p| p.ends_with("/machines")).await;
    ui.wait_text("tr[data-machine='laptop']", "lab").await;
    assert!(ui.machine_row("phone").await.unwrap().contains("lab"));
    ui.js(&format!(
        "[...document.querySelectorAll('#machines tbody tr')].find(r => r.dataset.machine === {}).querySelector('input').click()",
        json!(XSS)
    ))
    .await;
    ui.el("#b-action")
        .await
        .select_by_value("delete")
        .await
        .unwrap();
    ui.el("#bulk-review").await.click().await.unwrap();
    ui.wait_text("h1", "Delete 1 machine?").await;
    ui.fill("#b-confirm", "1").await;
    ui.el("#batch-apply").await.click().await.unwrap();
    ui.arrive("machines", |p| p.ends_with("/machines")).await;
    assert!(
        ui.machine_row(XSS).await.is_none(),
        "the machine was not deleted"
    );

    // The timeline shows a repair of drift made by hand, live (no reload).
    let names = h.names(&h.org_row(&org).await);
    ui.go(&format!("/orgs/{org}/timeline")).await;
    ns(&names.netns, &["iptables", "-F", "MWG-ACL"]);
    ui.wait_text("#timeline", "firewall rules restored").await;
    ui.audit("timeline").await;
    // The overview's invariants: all hold, the flushed chain shown as broken and repaired.
    ui.go(&org_path).await;
    ui.wait_text("#invariants", "holds").await;
    let forward = ui
        .js("return [...document.querySelectorAll('#invariants tbody tr')][0].innerText")
        .await;
    assert!(
        forward.as_str().unwrap().contains("ago"),
        "the flushed chain is not shown as repaired: {forward}"
    );

    // Every other page passes axe and is shot.
    for (name, path) in [
        ("overview", org_path.clone()),
        ("users", format!("/orgs/{org}/users")),
        ("audit", format!("/orgs/{org}/audit")),
        ("settings", format!("/orgs/{org}/settings")),
        ("account", "/account".to_string()),
    ] {
        ui.go(&path).await;
        ui.audit(name).await;
    }
}

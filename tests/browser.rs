//! The console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver), against `serve --demo --no-worker` on each store, clicking
//! through the specification's manual validation pass as an operator would.
//!
//! Every page the tests reach is checked with axe-core (no violation of impact
//! "serious" or "critical") and saved as a 1280×800 screenshot under
//! `target/tmp/browser-screenshots/<test>/` (printed at the end of each test),
//! so a reviewer can look at what an operator sees.
//!
//! Needs Debian's `chromium` and `chromium-driver` and axe-core from npm;
//! `.ci/browser-deps` installs all three (CI runs it). Without them these tests
//! fail, naming what is missing; they never skip. `DG_CHROMIUM`,
//! `DG_CHROMEDRIVER` and `DG_AXE_CORE` point at other copies.
//!
//! The demo runs without the built-in worker, so nothing moves unless a test
//! moves it: the worker steps are this test's own calls to the worker API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::serve;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use serve::Serve;

/// How long a page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// An installed program: `$var` if set, else `name` on the `PATH`.
fn program(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH (or set {var}): the browser tests need Debian's \
                 chromium and chromium-driver; run .ci/browser-deps"
            )
        })
}

/// axe-core's browser build, as `.ci/browser-deps` installs it.
fn axe_source() -> String {
    let path = std::env::var_os("DG_AXE_CORE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/node/node_modules/axe-core/axe.min.js"),
        PathBuf::from,
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core not found at {} ({e}): run .ci/browser-deps (npm ci in .ci/node)",
            path.display()
        )
    })
}

/// What `serve --demo` printed: its users' tokens and the ids behind its links.
struct Demo {
    /// The sealing key's file, kept as long as the demo serves.
    _secrets_key: tempfile::TempPath,
    banner: String,
    base: String,
    operator: String,
    readonly: String,
    other_user: String,
}

impl Demo {
    fn parse(banner: String, secrets_key: tempfile::TempPath) -> Self {
        let base = banner
            .lines()
            .find_map(|line| line.strip_prefix("Console: "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|url| url.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| panic!("no console URL in:\n{banner}"));
        let tokens: Vec<String> = banner
            .lines()
            .filter_map(|line| line.trim().strip_prefix("token: "))
            .map(str::to_owned)
            .collect();
        let [operator, readonly, other_user] = <[String; 3]>::try_from(tokens)
            .unwrap_or_else(|_| panic!("three tokens expected in:\n{banner}"));
        Self {
            _secrets_key: secrets_key,
            banner,
            base,
            operator,
            readonly,
            other_user,
        }
    }

    /// The sign-in link printed for the user called `name`.
    fn sign_in_link(&self, name: &str) -> String {
        let mut lines = self.banner.lines();
        lines
            .find(|line| line.trim().starts_with(&format!("{name} (")))
            .and_then(|_| lines.next())
            .and_then(|line| line.trim().strip_prefix("sign in: "))
            .unwrap_or_else(|| panic!("no sign-in link for {name} in:\n{}", self.banner))
            .to_owned()
    }

    /// The path of the first link in the banner whose line starts with `label`
    /// (after indentation), e.g. `tenant("Contoso")` → `/tenants/…`.
    fn link(&self, label: &str) -> String {
        self.banner
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .and_then(|line| line.split_whitespace().find(|w| w.starts_with(&self.base)))
            .map(|url| url[self.base.len()..].to_owned())
            .unwrap_or_else(|| panic!("no link for {label:?} in:\n{}", self.banner))
    }
}

/// A chromedriver process and one browser session through it.
struct Browser {
    client: Client,
    driver: Child,
    base: String,
    axe: String,
    shots: PathBuf,
    taken: usize,
}

impl Browser {
    async fn open(base: &str, test: &str) -> Self {
        let mut driver = Command::new(program("DG_CHROMEDRIVER", "chromedriver"))
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut lines = BufReader::new(driver.stdout.take().expect("stdout")).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split_once("started successfully on port ")
                    .map(|(_, port)| port.trim_end_matches('.').to_owned())
            })
            .expect("chromedriver did not say which port it listens on");
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        let chromium = program("DG_CHROMIUM", "chromium");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,800", "--lang=en-US"],
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        // The viewport, not the window, is 1280×800: what an operator's screen shows.
        let chrome = client
            .execute("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];", vec![])
            .await
            .expect("the window's own size");
        let extra = |i: usize| u32::try_from(chrome[i].as_u64().unwrap_or(0)).unwrap_or(0);
        client
            .set_window_size(1280 + extra(0), 800 + extra(1))
            .await
            .expect("resize the window");
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("browser-screenshots")
            .join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            client,
            driver,
            base: base.to_owned(),
            axe: axe_source(),
            shots,
            taken: 0,
        }
    }

    async fn close(mut self) {
        self.client
            .clone()
            .close()
            .await
            .expect("close the session");
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        eprintln!("screenshots: {}", self.shots.display());
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The path of the page now shown (without scheme, host and port).
    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn goto(&self, path: &str) {
        self.goto_url(&format!("{}{path}", self.base)).await;
    }

    async fn goto_url(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    }

    /// Waits until `script` (a JavaScript expression) is true on the page.
    async fn until(&self, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            if self.js(&format!("return Boolean({script});")).await == json!(true) {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "waited {PATIENCE:?} for {what} on {}:\n{}",
                self.path().await,
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `act` (which makes the browser load another page: a click, a
    /// submit) and waits until the new document has loaded.
    async fn loads<F: std::future::Future>(&self, act: F) -> F::Output {
        self.js("document.documentElement.dataset.before = 'yes'; return true;")
            .await;
        let out = act.await;
        self.until(
            "the next page",
            "!document.documentElement.dataset.before && document.readyState === 'complete'",
        )
        .await;
        out
    }

    /// Clicks the button or link whose visible text is `text` and waits for the
    /// page it leads to.
    async fn click(&self, text: &str) {
        let target = self.button(text).await;
        self.loads(target.click())
            .await
            .unwrap_or_else(|e| panic!("click {text:?}: {e}"));
    }

    async fn button(&self, text: &str) -> fantoccini::elements::Element {
        let xpath = format!(
            "//*[self::button or self::a][normalize-space(.)={}]",
            xpath_literal(text)
        );
        match self.client.find(Locator::XPath(&xpath)).await {
            Ok(element) => element,
            Err(_) => panic!("no button or link {text:?} on:\n{}", self.text().await),
        }
    }

    async fn buttons(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css("button")).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
    }

    async fn text(&self) -> String {
        match self
            .js("return document.body ? document.body.innerText : '';")
            .await
        {
            Value::String(text) => text,
            other => other.to_string(),
        }
    }

    async fn css_text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap(),
            Err(_) => panic!("no {css} on:\n{}", self.text().await),
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// The page as an operator meets it: axe-core finds no serious or critical
    /// violation, and a screenshot is saved as `NN-name.png`.
    async fn look(&mut self, name: &str) {
        self.js(&format!("{}\nreturn true;", self.axe)).await;
        let violations = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                   .then((r) => done(r.violations
                     .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                     .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                                    nodes: v.nodes.map((n) => n.target.join(' ')) }))))
                   .catch((e) => done([{ id: 'axe-error', help: String(e) }]));",
                vec![],
            )
            .await
            .expect("axe-core ran");
        assert_eq!(
            violations,
            json!([]),
            "accessibility violations on {name} ({})",
            self.path().await
        );
        self.taken += 1;
        let png = self.client.screenshot().await.expect("a screenshot");
        assert_eq!(&png[1..4], b"PNG");
        let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
        assert_eq!(
            (size(16), size(20)),
            (1280, 800),
            "screenshots are 1280×800"
        );
        let file = self.shots.join(format!("{:02}-{name}.png", self.taken));
        std::fs::write(&file, png).unwrap();
    }
}

/// `text` as an XPath string literal.
fn xpath_literal(text: &str) -> String {
    if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

/// A demo on `url` and a browser signed out, for the test named `test`.
async fn demo(url: &str, test: &str) -> (Serve, Demo, Browser) {
    // A sealing key of its own, so secrets can be stored on PostgreSQL too.
    let key = tempfile::NamedTempFile::new()
        .expect("a key file")
        .into_temp_path();
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).expect("the key");
    let key_flag = key.to_str().expect("a UTF-8 temp path").to_owned();
    let (dispatcher, banner) =
        Serve::start_demo(url, &["--no-worker", "--secrets-key-file", &key_flag]);
    let demo = Demo::parse(banner, key);
    let browser = Browser::open(&demo.base, test).await;
    (dispatcher, demo, browser)
}

/// Signs in with `token` from the sign-in page the console sends a visitor to.
async fn sign_in(browser: &mut Browser, token: &str, name: &str) {
    browser.goto("/operations").await;
    assert!(
        browser.path().await.starts_with("/sign-in"),
        "a visitor is sent to sign in"
    );
    browser.fill("#token", token).await;
    browser.click("Sign in").await;
    assert_eq!(browser.path().await, "/operations");
    assert!(
        browser
            .text()
            .await
            .contains(&format!("Signed in as {name}")),
        "{}",
        browser.text().await
    );
}

/// Ids of the runs in `status`, as the admin sees them through the API.
fn runs(dispatcher: &Serve, status: &str) -> Vec<String> {
    let (code, body) = dispatcher.call(
        "GET",
        &format!("/v1/operations?status={status}&limit=200"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_str().unwrap().to_owned())
        .collect()
}

/// On a restore page: ticks the confirmation, executes, says yes in the
/// dialog; the start is accepted. Returns the restore's run.
async fn confirm_restore(browser: &Browser) -> String {
    browser
        .client
        .find(Locator::Css("input[name=confirm]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .button("Execute restore")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the confirmation dialog",
            "document.querySelector('dialog[open]')",
        )
        .await;
    browser.click("Yes, go ahead").await;
    assert_eq!(browser.css_text(".outcome .badge").await, "Accepted");
    run_link(browser).await
}

/// The run id at the end of the result page's "Open the run" link.
async fn run_link(browser: &Browser) -> String {
    let link = browser.button("Open the run").await;
    let href = link.attr("href").await.unwrap().expect("href");
    href.rsplit('/').next().unwrap().to_owned()
}

/// Starts the operation labelled `label` from the tenant page at `tenant` and
/// checks the result page: the outcome's word, and a run link unless blocked.
async fn start_from_tenant(
    browser: &mut Browser,
    tenant: &str,
    label: &str,
    word: &str,
) -> Option<String> {
    browser.goto(tenant).await;
    browser.click(&format!("Start {label}")).await;
    assert_eq!(
        browser.css_text(".outcome .badge").await,
        word,
        "{}",
        browser.text().await
    );
    let text = browser.text().await;
    assert!(text.contains(&format!("({})", label.to_lowercase())) || !text.is_empty());
    if word == "Blocked" {
        assert!(browser
            .client
            .find(Locator::LinkText("Open the run"))
            .await
            .is_err());
        assert!(
            text.contains("Why:") && text.contains("Next step:"),
            "{text}"
        );
        None
    } else {
        Some(run_link(browser).await)
    }
}

/// One worker step through the API (the demo runs without a built-in worker).
fn worker(dispatcher: &Serve, path: &str, body: Value) -> Value {
    let (code, reply) = dispatcher.call("POST", path, Some(body));
    assert_eq!(code, 200, "POST {path}: {reply}");
    reply
}

/// The manual validation pass, clicked through by the demo operator.
async fn manual_pass(url: &str, test: &str) {
    let (dispatcher, demo, mut browser) = demo(url, test).await;
    // The banner's sign-in link: the token rides in the fragment (never sent
    // to the server), fills the field and leaves the address bar.
    let link = demo.sign_in_link("Dana");
    browser.goto_url(&link).await;
    browser
        .until(
            "the link fills the token",
            "document.getElementById('token').value.length > 0",
        )
        .await;
    let filled = browser
        .js("return document.getElementById('token').value")
        .await;
    assert_eq!(filled, Value::from(demo.operator.clone()));
    let address = browser.client.current_url().await.unwrap();
    assert_eq!(address.fragment(), None, "the token leaves the address bar");
    assert!(browser.text().await.contains("press Sign in"));
    browser.look("sign-in-link").await;

    // Another user's link opened while this page shows /sign-in changes only the
    // URL's fragment: the browser does not load the page again (the marker set here
    // survives), and the field takes the new token all the same.
    browser
        .js("document.documentElement.dataset.sameDocument = 'yes'; return true;")
        .await;
    browser.goto_url(&demo.sign_in_link("Robin")).await;
    browser
        .until(
            "the second link fills its token",
            &format!(
                "document.getElementById('token').value === {}",
                json!(demo.readonly)
            ),
        )
        .await;
    assert_eq!(
        browser
            .js("return document.documentElement.dataset.sameDocument || null")
            .await,
        json!("yes"),
        "the second link reloaded the page; the fragment change went unheard"
    );
    let address = browser.client.current_url().await.unwrap();
    assert_eq!(
        address.fragment(),
        None,
        "the second token leaves the address bar"
    );
    browser.look("sign-in-link-again").await;
    browser.goto_url(&link).await;
    browser
        .until(
            "Dana's link fills her token again",
            &format!(
                "document.getElementById('token').value === {}",
                json!(demo.operator)
            ),
        )
        .await;
    browser.click("Sign in").await;
    assert_eq!(browser.path().await, "/operations");
    assert!(browser.text().await.contains("Signed in as Dana"));
    browser.click("Sign out").await;

    sign_in(&mut browser, &demo.operator, "Dana").await;
    browser.look("operations").await;

    // 1. The four outcomes from tenant start surfaces.
    let contoso = demo.link("Contoso");
    let queued_before = runs(&dispatcher, "queued");
    browser.goto(&contoso).await;
    browser.look("tenant").await;
    let accepted = start_from_tenant(&mut browser, &contoso, "Inventory sync", "Accepted")
        .await
        .unwrap();
    browser.look("accepted").await;
    assert_eq!(
        runs(&dispatcher, "queued"),
        [vec![accepted.clone()], queued_before.clone()].concat()
    );

    let wingtip = demo.link("Wingtip");
    let deduped = start_from_tenant(&mut browser, &wingtip, "Inventory sync", "Deduped")
        .await
        .unwrap();
    browser.look("deduped").await;
    let busy = start_from_tenant(
        &mut browser,
        &wingtip,
        "Directory groups sync",
        "Scope busy",
    )
    .await
    .unwrap();
    browser.look("scope-busy").await;
    assert_eq!(
        deduped, busy,
        "both point at the run holding Wingtip's default"
    );
    let (_, held) = dispatcher.call("GET", &format!("/v1/operations/{deduped}"), None);
    assert_eq!(
        (held["operation"].as_str(), held["status"].as_str()),
        (Some("inventory.sync"), Some("running"))
    );

    let litware = demo.link("Litware");
    start_from_tenant(&mut browser, &litware, "Inventory sync", "Blocked").await;
    assert!(
        browser.text().await.contains("consent"),
        "{}",
        browser.text().await
    );
    browser.look("blocked").await;
    let fabrikam = demo.link("Fabrikam");
    start_from_tenant(&mut browser, &fabrikam, "Inventory sync", "Blocked").await;
    browser.look("blocked-no-default").await;
    assert_eq!(
        runs(&dispatcher, "queued").len(),
        queued_before.len() + 1,
        "blocked starts queue nothing"
    );

    // 2. A connection surface: an explicit start on Fabrikam's usable connection.
    let explicit = demo.link("connection \"Fabrikam Graph");
    // Its secret handed over through the API: the page shows its metadata only.
    let secret = "browser-test-secret-not-to-be-shown";
    let (status, stored) = dispatcher.call(
        "PUT",
        &format!(
            "/v1/provider-connections/{}/secret",
            explicit.trim_start_matches("/connections/")
        ),
        Some(json!({
            "directory_tenant_id": "fabrikam.onmicrosoft.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": secret,
            "expires_at": "2099-01-01T00:00:00Z",
        })),
    );
    assert_eq!(status, 200, "{stored}");
    // The admin's own read waits for its write, so this instance's views hold the
    // secret before the operator's page is rendered (consistency is per session).
    let (status, _) = dispatcher.call(
        "GET",
        &format!(
            "/v1/provider-connections/{}",
            explicit.trim_start_matches("/connections/")
        ),
        None,
    );
    assert_eq!(status, 200);
    browser.goto(&explicit).await;
    let page = browser.text().await;
    assert!(
        page.contains(stored["secret"]["fingerprint"].as_str().unwrap()) && !page.contains(secret),
        "{page}"
    );
    browser.look("connection").await;
    browser.click("Start Directory roles sync").await;
    assert_eq!(browser.css_text(".outcome .badge").await, "Accepted");
    let explicit_run = run_link(&browser).await;
    let (_, run) = dispatcher.call("GET", &format!("/v1/operations/{explicit_run}"), None);
    assert_eq!(
        format!(
            "/connections/{}",
            run["provider_connection"]["id"].as_str().unwrap()
        ),
        explicit,
        "the run names the connection chosen at click time"
    );

    // 5. Run detail, and a status change appearing without a reload.
    browser.goto(&format!("/operations/{accepted}")).await;
    assert_eq!(browser.css_text(".outcome .badge").await, "Queued");
    browser
        .until(
            "the live stream",
            "document.body.dataset.liveState === 'connected'",
        )
        .await;
    browser.js("window.sameDocument = true; return true;").await;
    let claimed = worker(
        &dispatcher,
        "/v1/worker/claim",
        json!({"worker_id": "browser-test", "operations": ["inventory.sync"]}),
    );
    assert_eq!(claimed["run"]["id"], json!(accepted));
    browser
        .until(
            "the run shown running",
            "document.querySelector('.outcome .badge').textContent.trim() === 'Running'",
        )
        .await;
    worker(
        &dispatcher,
        &format!("/v1/worker/runs/{accepted}/complete"),
        json!({"worker_id": "browser-test", "status": "succeeded"}),
    );
    browser
        .until(
            "the run shown succeeded",
            "document.querySelector('.outcome .badge').textContent.trim() === 'Succeeded'",
        )
        .await;
    assert_eq!(
        browser.js("return window.sameDocument === true;").await,
        json!(true),
        "no reload"
    );
    assert!(
        browser
            .text()
            .await
            .contains("Claimed by worker browser-test"),
        "{}",
        browser.text().await
    );
    browser.look("run-succeeded-live").await;

    let failed = demo.link("Failed run");
    browser.goto(&failed).await;
    assert_eq!(browser.css_text(".outcome .badge").await, "Failed");
    let text = browser.text().await;
    assert!(
        text.contains("Why:") && text.contains("Next step:") && text.contains("credentials"),
        "{text}"
    );
    browser.look("run-failed").await;

    // 3. Restore: prepared, refused without confirmation, executed with it.
    browser.goto(&contoso).await;
    browser.click("Restore from a backup…").await;
    browser.look("restore-form").await;
    browser.fill("#backup_ref", "backup-2026-12-01").await;
    browser.click("Prepare the restore run").await;
    let restore = browser.path().await;
    assert!(restore.starts_with("/restore-runs/"), "{restore}");
    assert!(browser.text().await.contains("backup-2026-12-01"));
    browser.look("restore-preview").await;
    browser
        .button("Execute restore")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the confirmation dialog",
            "document.querySelector('dialog[open]')",
        )
        .await;
    browser.look("restore-dialog").await;
    browser.button("Go back").await.click().await.unwrap();
    browser
        .until("the dialog closed", "!document.querySelector('dialog')")
        .await;
    assert_eq!(browser.path().await, restore, "going back submits nothing");
    browser
        .button("Execute restore")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the confirmation dialog",
            "document.querySelector('dialog[open]')",
        )
        .await;
    browser.click("Yes, go ahead").await;
    let text = browser.text().await;
    assert!(
        text.contains("confirm"),
        "the unticked box is refused: {text}"
    );
    browser.look("restore-unconfirmed").await;
    assert_eq!(
        runs(&dispatcher, "queued").len(),
        queued_before.len() + 1,
        "an unconfirmed restore queues nothing"
    );
    browser.goto(&restore).await;
    let restore_run = confirm_restore(&browser).await;
    browser.look("restore-accepted").await;
    let (_, run) = dispatcher.call("GET", &format!("/v1/operations/{restore_run}"), None);
    assert_eq!(
        (run["operation"].as_str(), run["status"].as_str()),
        (Some("restore.execute"), Some("queued"))
    );

    // 4. Onboarding: verification, then bootstrap one step at a time.
    let northwind = demo.link("Northwind");
    browser.goto(&format!("{northwind}/onboarding")).await;
    browser.look("onboarding").await;
    browser.click("Verify the provider").await;
    assert_eq!(browser.css_text(".outcome .badge").await, "Accepted");
    let verify = run_link(&browser).await;
    browser.look("onboarding-verify").await;
    browser.goto(&format!("{northwind}/onboarding")).await;
    let queued = runs(&dispatcher, "queued").len();
    browser.click(&bootstrap_label(&browser).await).await;
    assert_eq!(
        browser.css_text(".outcome .badge").await,
        "Scope busy",
        "verification holds the connection"
    );
    assert_eq!(
        runs(&dispatcher, "queued").len(),
        queued,
        "a busy bootstrap leaves nothing queued"
    );
    worker(
        &dispatcher,
        "/v1/worker/claim",
        json!({"worker_id": "browser-test", "operations": ["provider.verify"]}),
    );
    worker(
        &dispatcher,
        &format!("/v1/worker/runs/{verify}/complete"),
        json!({"worker_id": "browser-test", "status": "succeeded"}),
    );
    browser.goto(&format!("{northwind}/onboarding")).await;
    browser.click(&bootstrap_label(&browser).await).await;
    assert_eq!(browser.css_text(".outcome .badge").await, "Accepted");
    browser.goto(&format!("{northwind}/onboarding")).await;
    let text = browser.text().await;
    assert!(
        text.contains("Follow-up") && text.contains("Inventory sync is under way"),
        "{text}"
    );
    assert!(
        !browser
            .buttons()
            .await
            .iter()
            .any(|b| b.starts_with("Bootstrap")),
        "nothing more to admit while a step runs"
    );
    browser.look("onboarding-follow-up").await;

    // The rest of what an operator reads, then sign-out.
    browser.goto(&format!("{contoso}/decisions")).await;
    browser.look("decisions").await;
    browser.goto("/notifications").await;
    browser.look("notifications").await;
    browser.goto("/tenants").await;
    browser.look("tenants").await;
    browser.click("Sign out").await;
    assert!(browser.path().await.starts_with("/sign-in"));
    browser.goto("/operations").await;
    assert!(
        browser.path().await.starts_with("/sign-in"),
        "signed out for good"
    );
    browser.close().await;
    dispatcher.terminate();
}

/// The text of the onboarding page's bootstrap button.
async fn bootstrap_label(browser: &Browser) -> String {
    browser
        .buttons()
        .await
        .into_iter()
        .find(|text| text.starts_with("Bootstrap: admit"))
        .unwrap_or_else(|| panic!("no bootstrap button"))
}

/// Isolation, roles and forged posts: a non-member's 404 is the unknown id's,
/// a readonly member is offered no start, a post without the session's CSRF
/// token or from another origin is refused and writes nothing.
async fn isolation_and_forgery(url: &str, test: &str) {
    let (dispatcher, demo, mut browser) = demo(url, test).await;
    let contoso = demo.link("Contoso");

    sign_in(&mut browser, &demo.other_user, "Riley").await;
    browser.goto(&contoso).await;
    let foreign = browser.text().await;
    browser.look("not-found-foreign").await;
    browser
        .goto(&format!("/tenants/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(
        browser.text().await,
        foreign,
        "a foreign tenant reads as an unknown one"
    );
    browser.goto(&demo.link("Failed run")).await;
    let foreign_run = browser.text().await;
    browser
        .goto(&format!("/operations/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(
        browser.text().await,
        foreign_run,
        "a foreign run reads as an unknown one"
    );
    browser.click("Sign out").await;

    sign_in(&mut browser, &demo.readonly, "Robin").await;
    browser.goto(&contoso).await;
    let starts: Vec<String> = browser
        .buttons()
        .await
        .into_iter()
        .filter(|b| b.starts_with("Start"))
        .collect();
    assert!(starts.is_empty(), "a readonly member is offered {starts:?}");
    assert!(browser.text().await.contains("does not allow starting"));
    browser.look("tenant-readonly").await;
    browser.click("Sign out").await;

    sign_in(&mut browser, &demo.operator, "Dana").await;
    let events = event_count(url).await;
    browser.goto(&contoso).await;
    browser.js("document.querySelectorAll('input[name=csrf]').forEach((i) => { i.value = 'forged'; }); return true;").await;
    browser.click("Start Inventory sync").await;
    let text = browser.text().await;
    assert!(text.contains("security token"), "{text}");
    browser.look("csrf-refused").await;
    assert_eq!(
        event_count(url).await,
        events,
        "a refused post writes nothing"
    );

    // Another site's page posting to the console: the cookie stays home
    // (SameSite=Strict) and the Origin is not the console's.
    let tenant = contoso.trim_start_matches("/tenants/");
    let forged = format!(
        "<!doctype html><html lang=en><title>elsewhere</title><form method=post action='{}/tenants/{tenant}/start'>\
         <input type=hidden name=operation value=inventory.sync><button>Win a prize</button></form></html>",
        demo.base
    );
    browser
        .goto_url(&format!("data:text/html,{}", urlencode(&forged)))
        .await;
    browser.click("Win a prize").await;
    let text = browser.text().await;
    assert!(
        text.contains("Sign in again") && !text.contains("Accepted"),
        "{text}"
    );
    browser.look("cross-site-refused").await;
    assert_eq!(
        event_count(url).await,
        events,
        "a cross-site post writes nothing"
    );
    browser.close().await;
    dispatcher.terminate();
}

/// A restore through the console against Graph (the test kit's fake), with the
/// built-in worker: a snapshot, drift and deletions, the snapshot picked on the
/// restore page, its preview (counts first, then what changes), the
/// confirmation, and the run's page showing what it restored.
async fn restore_from_a_snapshot(url: &str, test: &str) {
    use testkit::graph_fake::{FakeKind, GraphFake};
    const CLIENT_ID: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    const DIRECTORY: &str = "contoso.onmicrosoft.com";
    const SECRET: &str = "browser~Restore.secret_0123456789";
    let configuration = |id: &str, name: &str, password: bool, length: u64| {
        json!({"@odata.type": "#microsoft.graph.windows10GeneralConfiguration", "id": id,
               "displayName": name, "version": 1, "lastModifiedDateTime": "2024-03-01T10:00:00Z",
               "passwordRequired": password, "passwordMinimumLength": length})
    };
    let policy = |id: &str, name: &str| {
        json!({"@odata.type": "#microsoft.graph.windows10CompliancePolicy", "id": id,
               "displayName": name, "version": 1, "bitLockerEnabled": true})
    };
    let fake = std::sync::Arc::new(GraphFake::start().await);
    fake.accept_app(DIRECTORY, CLIENT_ID, SECRET);
    for (id, name) in [
        ("c1", "Windows baseline"),
        ("c2", "Kiosk lockdown"),
        ("c3", "Developer laptops"),
        ("c4", "Shared PCs"),
    ] {
        fake.put(
            FakeKind::DeviceConfiguration,
            configuration(id, name, true, 12),
        );
    }
    fake.put(
        FakeKind::CompliancePolicy,
        policy("p1", "Require BitLocker"),
    );
    fake.put(
        FakeKind::CompliancePolicy,
        policy("p2", "Minimum OS version"),
    );
    let key = tempfile::NamedTempFile::new()
        .expect("a key file")
        .into_temp_path();
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).expect("the key");
    let (url, base, authority, key_flag) = (
        url.to_owned(),
        fake.base_url(),
        fake.authority_url(),
        key.to_str().unwrap().to_owned(),
    );
    let seen = fake.clone();
    let (server, tenant, token, snapshot) = tokio::task::spawn_blocking(move || {
        let fake = seen;
        let server = Serve::start_with(
            &url,
            &[
                "--provider",
                "graph",
                "--graph-base-url",
                &base,
                "--graph-authority-url",
                &authority,
                "--secrets-key-file",
                &key_flag,
            ],
        );
        let workspace = serve::workspace(&server);
        let tenant = server.post(
            "/v1/admin/tenants",
            json!({"workspace_id": workspace, "name": "Contoso"}),
        )["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let connection = server.post(
            &format!("/v1/tenants/{tenant}/provider-connections"),
            json!({"display_name": "Contoso Graph", "provider": "microsoft_graph", "make_default": true}),
        )["id"]
            .as_str()
            .unwrap()
            .to_owned();
        server.post(
            &format!("/v1/provider-connections/{connection}/consent"),
            json!({"granted": true}),
        );
        let (status, stored) = server.call(
            "PUT",
            &format!("/v1/provider-connections/{connection}/secret"),
            Some(json!({"directory_tenant_id": DIRECTORY, "client_id": CLIENT_ID,
                        "client_secret": SECRET, "expires_at": null})),
        );
        assert_eq!(status, 200, "{stored}");
        let user = server.post("/v1/admin/users", json!({"name": "Dana Operator"}));
        let (status, body) = server.call(
            "PUT",
            &format!("/v1/admin/tenants/{tenant}/members/{}", user["id"].as_str().unwrap()),
            Some(json!({"role": "operator"})),
        );
        assert_eq!(status, 204, "{body}");
        let snapshot = server.run_to_end(&tenant, "inventory.sync");
        assert_eq!(snapshot["status"], "succeeded", "{snapshot}");
        // Drift since the snapshot: two settings changed on one configuration,
        // a configuration and a policy deleted, a configuration added.
        fake.put(
            FakeKind::DeviceConfiguration,
            configuration("c1", "Windows baseline", false, 6),
        );
        fake.remove(FakeKind::DeviceConfiguration, "c2");
        fake.remove(FakeKind::CompliancePolicy, "p1");
        fake.put(
            FakeKind::DeviceConfiguration,
            configuration("c5", "Pilot ring (added later)", true, 12),
        );
        let latest = server.run_to_end(&tenant, "inventory.sync");
        assert_eq!(latest["status"], "succeeded", "{latest}");
        (
            server,
            tenant,
            user["token"].as_str().unwrap().to_owned(),
            snapshot["id"].as_str().unwrap().to_owned(),
        )
    })
    .await
    .unwrap();

    let mut browser = Browser::open(&format!("http://{}", server.address), test).await;
    sign_in(&mut browser, &token, "Dana Operator").await;
    browser.goto(&format!("/tenants/{tenant}")).await;
    // The tenant page's inventory panel after two inventory syncs: per kind,
    // what is there, what went, and what the last sync changed.
    let text = browser.text().await;
    for expected in [
        "What the syncs found",
        "Device configuration",
        "Compliance policy",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    browser.look("tenant-inventory").await;
    browser.click("Restore from a backup…").await;
    assert!(
        browser.text().await.contains("Snapshots of this tenant"),
        "{}",
        browser.text().await
    );
    browser.look("restore-snapshots").await;
    // The older snapshot: the one taken before the drift.
    let pick =
        format!("//form[input[@name='backup_ref' and @value='inventory:{snapshot}']]//button");
    let button = browser.client.find(Locator::XPath(&pick)).await.unwrap();
    browser.loads(button.click()).await.unwrap();
    assert!(browser.path().await.starts_with("/restore-runs/"));
    let text = browser.text().await;
    for expected in [
        "1 to write back",
        "2 to create again",
        "3 unchanged",
        "1 left alone",
        "passwordMinimumLength, passwordRequired",
        "Kiosk lockdown",
        "Require BitLocker",
        "Assignments are not restored",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    let position = |needle: &str| text.find(needle).unwrap();
    assert!(position("to write back") < position("What changes"));
    assert!(position("What changes") < position("I have read the preview"));
    browser.look("restore-snapshot-preview").await;
    let restore_run = confirm_restore(&browser).await;
    browser.goto(&format!("/operations/{restore_run}")).await;
    browser
        .until(
            "the restore shown succeeded",
            "document.querySelector('.outcome .badge').textContent.trim() === 'Succeeded' \
             && document.body.innerText.includes('What it restored')",
        )
        .await;
    let text = browser.text().await;
    for expected in [
        "1 written back",
        "2 created again",
        "3 unchanged",
        "0 refused",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    browser.look("restore-done").await;
    assert_eq!(
        fake.object(FakeKind::DeviceConfiguration, "c1").unwrap()["passwordMinimumLength"],
        12
    );
    assert_eq!(
        fake.count(FakeKind::DeviceConfiguration),
        5,
        "c2 back, c5 left alone"
    );
    assert_eq!(fake.count(FakeKind::CompliancePolicy), 2);
    browser.close().await;
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
}

/// Events in the store, but for the demo worker's lease extensions.
async fn event_count(url: &str) -> i64 {
    // The demo worker keeps its held runs alive with lease extensions while
    // the test runs: those are the only events nobody in the test causes.
    const SQL: &str = "SELECT count(*) FROM events WHERE event_type <> 'RunLeaseExtended'";
    let database = dispatch_gate::write::store::Database::open_existing(url, 1)
        .await
        .unwrap();
    let count: i64 = match &database {
        dispatch_gate::write::store::Database::Postgres(pool) => {
            sqlx::query_scalar(SQL).fetch_one(pool).await
        }
        dispatch_gate::write::store::Database::Sqlite(pool) => {
            sqlx::query_scalar(SQL).fetch_one(pool).await
        }
    }
    .unwrap();
    database.close().await;
    count
}

/// `text` percent-encoded for a `data:` URL.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_clicks_through_the_manual_validation_pass_on_sqlite() {
    let (_dir, url) = testkit::fresh_sqlite_url();
    manual_pass(&url, "manual-pass-sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_clicks_through_the_manual_validation_pass_on_postgres() {
    let url = testkit::fresh_postgres_database().await;
    manual_pass(&url, "manual-pass-postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation_roles_and_forged_posts_in_the_browser_on_sqlite() {
    let (_dir, url) = testkit::fresh_sqlite_url();
    isolation_and_forgery(&url, "isolation-sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation_roles_and_forged_posts_in_the_browser_on_postgres() {
    let url = testkit::fresh_postgres_database().await;
    isolation_and_forgery(&url, "isolation-postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_restores_a_drifted_tenant_from_a_snapshot_on_sqlite() {
    let (_dir, url) = testkit::fresh_sqlite_url();
    restore_from_a_snapshot(&url, "restore-sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_restores_a_drifted_tenant_from_a_snapshot_on_postgres() {
    let url = testkit::fresh_postgres_database().await;
    restore_from_a_snapshot(&url, "restore-postgres").await;
}

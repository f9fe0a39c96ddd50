//! The login and consent pages in a real browser: headless Chromium, driven through
//! chromedriver's W3C WebDriver API (<https://www.w3.org/TR/webdriver2/>) over HTTP, signs a
//! practitioner in with a password and a TOTP code, picks the patient, allows, and lands on the
//! app's callback with a code the app can exchange; a second run denies. The pages must also
//! label every field, so that screen readers and password managers find them.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test fails and says so; `HEARTH_BROWSER_TEST=skip` skips it on purpose.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, PASSWORD};
use hearth::auth::accounts::{self, Client, ClientKind};
use hearth::auth::policy::Role;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope,
    TokenResponse, TokenUrl,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_backends!(start = start_secured; sign_in_and_consent_in_chromium);

/// A chromedriver process and one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session; `None` when the
    /// operator asked to skip browser tests.
    async fn open() -> Option<Browser> {
        if std::env::var("HEARTH_BROWSER_TEST").as_deref() == Ok("skip") {
            eprintln!("skipped: HEARTH_BROWSER_TEST=skip");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the browser test needs chromedriver on PATH ({e}): install Debian's \
                     `chromium` and `chromium-driver` packages (.ci/run does), or set \
                     HEARTH_BROWSER_TEST=skip"
                )
            });
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let mut options = json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run"]});
        if let Some(b) = binary {
            options["binary"] = json!(b);
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}});
        // chromedriver takes a moment to listen.
        for _ in 0..100 {
            if let Ok(r) = browser
                .http
                .post(format!("{}/session", browser.base))
                .json(&caps)
                .send()
                .await
            {
                let v: Value = r.json().await.unwrap();
                let id = v["value"]["sessionId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("chromedriver opened no session: {v}"));
                browser.base = format!("{}/session/{id}", browser.base);
                // A click that submits a form returns before the next page has loaded: let
                // element look-ups wait for it.
                browser
                    .command(
                        reqwest::Method::POST,
                        "/timeouts",
                        Some(json!({"implicit": 10_000})),
                    )
                    .await;
                return Some(browser);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer within 10 s");
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let v: Value = r.send().await.unwrap().json().await.unwrap();
        assert!(v["value"]["error"].is_null(), "WebDriver {path}: {v}");
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        let v = self
            .command(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    async fn script(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Every visible field has a `<label for>`, and the page declares its language.
    async fn assert_accessible(&self) {
        let unlabelled = self
            .script(
                "return [...document.querySelectorAll('input:not([type=hidden])')]\
                 .filter(i => !i.id || !document.querySelector(`label[for=\"${i.id}\"]`))\
                 .map(i => i.name)",
            )
            .await;
        assert_eq!(unlabelled, json!([]), "fields without a label");
        assert_eq!(
            self.script("return document.documentElement.lang").await,
            "en"
        );
    }
}

/// The app's redirect target: answers the browser and hands over the callback's query.
async fn callback_listener() -> (String, tokio::sync::mpsc::Receiver<HashMap<String, String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callback", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 27\r\nconnection: close\r\n\r\n<p id=\"done\">Signed in</p>\n")
                .await;
            if let Some((_, query)) = target.split_once('?') {
                let params = form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
                let _ = tx.send(params).await;
            }
        }
    });
    (url, rx)
}

async fn sign_in_and_consent_in_chromium(s: &Server) {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let (redirect, mut callbacks) = callback_listener().await;
    s.auth
        .put_client(&Client {
            client_id: "app".into(),
            name: "Clinic Notes".into(),
            kind: ClientKind::Public,
            secret_hash: None,
            redirect_uris: vec![redirect.clone()],
            scope: "launch/patient openid fhirUser patient/*.rs user/*.rs".into(),
            jwks: None,
        })
        .await
        .unwrap();
    // Data is seeded through an operator's backend client, as `hearth token` does.
    let ops = s.system_token().await;
    let created: Value = s
        .client
        .post(s.url("/Patient"))
        .bearer_auth(&ops)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "name": [{"family": "Chen"}]}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let patient = created["id"].as_str().unwrap().to_string();
    let secret = accounts::new_totp_secret();
    s.auth
        .add_user(&common::account(
            "drjones",
            Role::Practitioner,
            Some("Practitioner/7"),
            Some(secret.clone()),
        ))
        .await
        .unwrap();

    let app = BasicClient::new(ClientId::new("app".into()))
        .set_auth_uri(AuthUrl::new(format!("{}/auth/authorize", s.root)).unwrap())
        .set_token_uri(TokenUrl::new(format!("{}/auth/token", s.root)).unwrap())
        .set_redirect_uri(RedirectUrl::new(redirect.clone()).unwrap());
    let authorize = |challenge| {
        app.authorize_url(CsrfToken::new_random)
            .add_scopes(
                ["launch/patient", "openid", "fhirUser", "patient/*.rs"]
                    .map(|s| Scope::new(s.into())),
            )
            .add_extra_param("aud", s.base.clone())
            .set_pkce_challenge(challenge)
            .url()
    };

    // A wrong password: the page says so, without saying which part was wrong.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = authorize(challenge);
    browser.go(url.as_str()).await;
    browser.assert_accessible().await;
    browser.type_into("#username", "drjones").await;
    browser.type_into("#password", "Wrong horse 9!!").await;
    browser.type_into("#totp", "000000").await;
    browser.click("#sign-in").await;
    assert!(browser
        .text("#error")
        .await
        .contains("user name, password or code is wrong"));

    // The right password and the current TOTP code lead to the consent page.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    browser.type_into("#username", "drjones").await;
    browser.type_into("#password", PASSWORD).await;
    browser
        .type_into("#totp", &accounts::totp_code(&secret, now).unwrap())
        .await;
    browser.click("#sign-in").await;
    // (#scopes is on the consent page only: finding it waits for that page.)
    let scopes = browser.text("#scopes").await;
    assert_eq!(browser.text("h1").await, "Allow Clinic Notes?");
    assert!(
        scopes.contains("See all kinds of records of the selected patient"),
        "plain words: {scopes}"
    );
    browser.assert_accessible().await;
    // A practitioner asking for launch/patient picks the patient; a wrong id is refused.
    browser.type_into("#patient", "no-such-patient").await;
    browser.click("#allow").await;
    assert!(browser.text("#error").await.contains("existing patient"));
    browser.type_into("#patient", &patient).await;
    browser.click("#allow").await;

    let params = tokio::time::timeout(Duration::from_secs(10), callbacks.recv())
        .await
        .expect("the browser reached the app's callback")
        .unwrap();
    assert_eq!(params.get("state"), Some(state.secret()));
    assert_eq!(browser.text("#done").await, "Signed in");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = app
        .exchange_code(AuthorizationCode::new(params["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&|req: oauth2::HttpRequest| {
            let http = http.clone();
            async move {
                let (parts, body) = req.into_parts();
                let r = http
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await?;
                let mut built = axum::http::Response::builder().status(r.status());
                for (k, v) in r.headers() {
                    built = built.header(k, v);
                }
                Ok::<_, reqwest::Error>(built.body(r.bytes().await?.to_vec()).unwrap())
            }
        })
        .await
        .expect("the code from the browser is exchanged");
    let read = s
        .client
        .get(s.url(&format!("/Patient/{patient}")))
        .bearer_auth(token.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the picked patient is readable");

    // Denying sends the user back to the app with access_denied. The browser holds no session
    // with Hearth: each authorization asks for a sign-in again (here a patient's, without TOTP).
    s.auth
        .add_user(&common::account(
            "chen",
            Role::Patient,
            Some(&format!("Patient/{patient}")),
            None,
        ))
        .await
        .unwrap();
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = authorize(challenge);
    browser.go(url.as_str()).await;
    browser.type_into("#username", "chen").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    // A patient's own record is the launch patient: nothing to pick.
    browser.find("#scopes").await;
    assert!(browser.text("main").await.contains(&patient));
    browser.click("#deny").await;
    let params = tokio::time::timeout(Duration::from_secs(10), callbacks.recv())
        .await
        .expect("the browser reached the app's callback")
        .unwrap();
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("access_denied")
    );
    assert_eq!(params.get("state"), Some(state.secret()));
    browser.command(reqwest::Method::DELETE, "", None).await;
}

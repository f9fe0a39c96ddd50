//! SMART on FHIR over HTTP, on both backends, with authorization on as `hearth serve` runs
//! it by default: discovery, the standalone and EHR launches with PKCE (driven by the
//! `oauth2` crate as a real app would), refresh, backend services with signed assertions,
//! introspection, revocation, key rotation, and the scope-enforcement matrix including the
//! paths by which a patient-scoped token could leak another patient's data.
//! <https://hl7.org/fhir/smart-app-launch/>

mod common;

use std::collections::HashMap;

use base64::Engine;
use common::{expect_outcome, Server, PASSWORD};
use hearth::auth::accounts::{self, Client, ClientKind, User};
use hearth::auth::policy::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, RefreshToken,
    Scope, TokenResponse, TokenUrl,
};
use serde_json::{json, Value};

on_both_backends!(
    start = start_secured;
    discovery_and_bearer_tokens,
    standalone_patient_launch,
    practitioner_login_totp_lockout_and_ehr_launch,
    backend_services,
    enforcement_matrix,
    patient_scoped_tokens_cannot_leak,
    bad_authorize_requests,
    key_rotation_keeps_tokens_valid,
);

const APP_REDIRECT: &str = "http://app.example/callback";

fn user(name: &str, role: Role, fhir_user: Option<&str>) -> User {
    let totp =
        matches!(role, Role::Practitioner | Role::Administrator).then(accounts::new_totp_secret);
    common::account(name, role, fhir_user, totp)
}

async fn register_app(s: &Server) {
    s.auth
        .put_client(&Client {
            client_id: "app".into(),
            name: "Appointments App".into(),
            kind: ClientKind::Public,
            secret_hash: None,
            redirect_uris: vec![APP_REDIRECT.into()],
            scope:
                "launch launch/patient openid fhirUser offline_access patient/*.cruds user/*.cruds"
                    .into(),
            jwks: None,
        })
        .await
        .unwrap();
}

/// A FHIR request with a bearer token (and a JSON body for writes).
async fn call(
    s: &Server,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut r = s.client.request(method, s.url(path)).bearer_auth(token);
    if let Some(body) = body {
        r = r
            .header("content-type", "application/fhir+json")
            .body(body.to_string());
    }
    r.send().await.unwrap()
}

async fn get(s: &Server, token: &str, path: &str) -> reqwest::Response {
    call(s, reqwest::Method::GET, token, path, None).await
}

async fn post(s: &Server, token: &str, path: &str, body: &Value) -> reqwest::Response {
    call(s, reqwest::Method::POST, token, path, Some(body)).await
}

async fn put(s: &Server, token: &str, path: &str, body: &Value) -> reqwest::Response {
    call(s, reqwest::Method::PUT, token, path, Some(body)).await
}

/// What `/auth/introspect` says of `token`, asked with the bearer token `caller`.
async fn introspect(s: &Server, caller: &str, token: &str) -> Value {
    s.client
        .post(format!("{}/auth/introspect", s.root))
        .bearer_auth(caller)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", token)]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn create(s: &Server, token: &str, body: Value) -> String {
    let t = body["resourceType"].as_str().unwrap().to_string();
    let r = post(s, token, &format!("/{t}"), &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| {
                    Some(format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str()?,
                        e["resource"]["id"].as_str()?
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An HTTP client that does not follow redirects (the app reads them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The hidden `request` field of a login or consent page.
fn hidden_request(html: &str) -> String {
    let at = html
        .find("name=\"request\" value=\"")
        .expect("a request field");
    let rest = &html[at + 22..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn post_form(c: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    c.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The `oauth2` crate's async HTTP client, over reqwest.
async fn oauth_http(request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = browser()
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut built = axum::http::Response::builder().status(response.status());
    for (k, v) in response.headers() {
        built = built.header(k, v);
    }
    Ok(built.body(response.bytes().await?.to_vec()).unwrap())
}

type App = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn app(s: &Server) -> App {
    let config_issuer = format!("{}/auth", s.root);
    BasicClient::new(ClientId::new("app".into()))
        .set_auth_uri(AuthUrl::new(format!("{config_issuer}/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(format!("{config_issuer}/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(APP_REDIRECT.into()).unwrap())
}

/// What came back to the app's redirect URI.
fn callback(location: &str) -> HashMap<String, String> {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Runs the authorize request, login and consent as a user would; answers the PKCE
/// verifier and the callback parameters.
async fn launch(
    s: &Server,
    scopes: &str,
    username: &str,
    totp: Option<&str>,
    extra: &[(&str, &str)],
    patient_pick: Option<&str>,
) -> (oauth2::PkceCodeVerifier, HashMap<String, String>, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let client = app(s);
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_extra_param("aud", s.base.clone())
        .set_pkce_challenge(challenge);
    for scope in scopes.split_whitespace() {
        request = request.add_scope(Scope::new(scope.into()));
    }
    for (k, v) in extra {
        request = request.add_extra_param(*k, *v);
    }
    let (url, state) = request.url();
    let b = browser();
    let login = b.get(url.as_str()).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let html = login.text().await.unwrap();
    assert!(html.contains("Appointments App"), "{html}");
    let req = hidden_request(&html);
    let consent = post_form(
        &b,
        &format!("{}/auth/login", s.root),
        form(&[
            ("request", &req),
            ("username", username),
            ("password", PASSWORD),
            ("totp", totp.unwrap_or("")),
        ]),
    )
    .await;
    let status = consent.status();
    let html = consent.text().await.unwrap();
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Allow"), "{html}");
    let mut answer = vec![("request", req.as_str()), ("decision", "allow")];
    if let Some(p) = patient_pick {
        answer.push(("patient", p));
    }
    let back = post_form(&b, &format!("{}/auth/consent", s.root), form(&answer)).await;
    assert_eq!(back.status(), 303);
    let location = back.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(APP_REDIRECT), "{location}");
    let params = callback(&location);
    assert_eq!(
        params.get("state"),
        Some(state.secret()),
        "state comes back"
    );
    (verifier, params, html)
}

async fn token_form(s: &Server, body: String) -> (u16, Value) {
    let r = post_form(&browser(), &format!("{}/auth/token", s.root), body).await;
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store");
    (status, r.json().await.unwrap())
}

// ----- The tests -----

async fn discovery_and_bearer_tokens(s: &Server) {
    let c: Value = s
        .client
        .get(s.url("/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(c["token_endpoint"], format!("{}/auth/token", s.root));
    for cap in [
        "launch-standalone",
        "launch-ehr",
        "client-confidential-asymmetric",
        "permission-v2",
        "sso-openid-connect",
    ] {
        assert!(
            c["capabilities"].as_array().unwrap().contains(&json!(cap)),
            "{cap}"
        );
    }
    // The CapabilityStatement is public and says where to authorize.
    let meta: Value = s.get("/metadata").await.json().await.unwrap();
    let security = &meta["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &security["extension"][0]["extension"];
    assert!(uris
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["url"] == "token" && e["valueUri"] == format!("{}/auth/token", s.root)));
    // No token: 401 with a challenge and an OperationOutcome.
    let r = s.get("/Patient").await;
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    expect_outcome(r, 401).await;
    // Forged, tampered and alg=none tokens: 401 invalid_token.
    let good = s.system_token().await;
    assert_eq!(get(s, &good, "/Patient").await.status(), 200);
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("system/*.cruds user/*.cruds");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let foreign_key = EncodingKey::from_secret(b"guess");
    let hs = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &foreign_key).unwrap();
    for bad in [tampered, none, hs, "garbage".to_string()] {
        let r = get(s, &bad, "/Patient").await;
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        expect_outcome(r, 401).await;
    }
    // The JWKS publishes the signing key.
    let jwks: Value = s
        .client
        .get(format!("{}/auth/jwks", s.root))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(jwks["keys"][0].get("d").is_none(), "never the private part");
}

async fn standalone_patient_launch(s: &Server) {
    register_app(s).await;
    let admin = s.system_token().await;
    let me = create(
        s,
        &admin,
        json!({"resourceType": "Patient", "name": [{"family": "Me"}]}),
    )
    .await;
    s.auth
        .add_user(&user("pat", Role::Patient, Some(&format!("Patient/{me}"))))
        .await
        .unwrap();

    let (verifier, params, consent_html) = launch(
        s,
        "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Appointment.cruds",
        "pat",
        None,
        &[],
        None,
    )
    .await;
    assert!(
        consent_html
            .contains("See, create, change, delete Appointment records of the selected patient"),
        "{consent_html}"
    );
    let code = params["code"].clone();
    // A wrong PKCE verifier is refused, and that spends the code.
    let (status, body) = token_form(
        s,
        form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", APP_REDIRECT),
            ("client_id", "app"),
            ("code_verifier", &"x".repeat(50)),
        ]),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Again, properly, through the oauth2 crate.
    let (verifier2, params2, _) = launch(
        s,
        "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Appointment.cruds",
        "pat",
        None,
        &[],
        None,
    )
    .await;
    drop(verifier);
    let code = AuthorizationCode::new(params2["code"].clone());
    let token = app(s)
        .exchange_code(code.clone())
        .set_pkce_verifier(verifier2)
        .request_async(&oauth_http)
        .await
        .expect("the code exchange succeeds");
    let access = token.access_token().secret().clone();
    let granted: Vec<String> = token
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(
        granted.contains(&"patient/Appointment.cruds".to_string()),
        "{granted:?}"
    );
    assert_eq!(token.expires_in().unwrap().as_secs(), 900);

    // A code is good once.
    let reuse = app(s)
        .exchange_code(code)
        .set_pkce_verifier(oauth2::PkceCodeVerifier::new("y".repeat(43)))
        .request_async(&oauth_http)
        .await;
    assert!(reuse.is_err());

    // The token reads the patient's own record, and only theirs.
    let mine = get(s, &access, &format!("/Patient/{me}")).await;
    assert_eq!(mine.status(), 200);
    let other = create(
        s,
        &admin,
        json!({"resourceType": "Patient", "name": [{"family": "Other"}]}),
    )
    .await;
    expect_outcome(get(s, &access, &format!("/Patient/{other}")).await, 403).await;
    let all: Value = get(s, &access, "/Patient").await.json().await.unwrap();
    assert_eq!(ids(&all), vec![format!("Patient/{me}")]);
    // Not granted: Observation.
    expect_outcome(get(s, &access, "/Observation").await, 403).await;

    // The patient books an appointment for themselves, not for someone else.
    let booking = json!({"resourceType": "Appointment", "status": "booked",
        "participant": [{"actor": {"reference": format!("Patient/{me}")}, "status": "accepted"}]});
    assert_eq!(
        post(s, &access, "/Appointment", &booking).await.status(),
        201
    );
    let for_other = json!({"resourceType": "Appointment", "status": "booked",
        "participant": [{"actor": {"reference": format!("Patient/{other}")}, "status": "accepted"}]});
    expect_outcome(post(s, &access, "/Appointment", &for_other).await, 403).await;

    // Introspection tells the context.
    let intro = introspect(s, &access, &access).await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["patient"], me.as_str());
    assert_eq!(intro["fhirUser"], format!("{}/Patient/{me}", s.base));

    // Refresh rotates: the old refresh token is spent.
    let refresh = token.refresh_token().unwrap().clone();
    let refreshed = app(s)
        .exchange_refresh_token(&refresh)
        .request_async(&oauth_http)
        .await
        .expect("refresh works");
    assert!(refreshed.refresh_token().is_some());
    assert!(app(s)
        .exchange_refresh_token(&RefreshToken::new(refresh.secret().clone()))
        .request_async(&oauth_http)
        .await
        .is_err());

    // Revoking the access token ends it at once.
    let revoke = post_form(
        &browser(),
        &format!("{}/auth/revoke", s.root),
        form(&[("token", &access), ("client_id", "app")]),
    )
    .await;
    assert_eq!(revoke.status(), 200);
    let r = get(s, &access, &format!("/Patient/{me}")).await;
    assert_eq!(r.status(), 401);
    let intro = introspect(s, refreshed.access_token().secret(), &access).await;
    assert_eq!(intro, json!({"active": false}));

    // A revocation by a client that is not registered is refused, and audited too.
    let ghost = post_form(
        &browser(),
        &format!("{}/auth/revoke", s.root),
        form(&[("token", &access), ("client_id", "ghost")]),
    )
    .await;
    assert_eq!(ghost.status(), 401);
    let live_refresh = refreshed.refresh_token().unwrap().secret();
    let revoked = post_form(
        &browser(),
        &format!("{}/auth/revoke", s.root),
        form(&[("token", live_refresh), ("client_id", "app")]),
    )
    .await;
    assert_eq!(revoked.status(), 200);

    // The trail. Both consents (BALP AuthZconsent) are in the patient's trail, with what
    // was allowed.
    let consents = audited(
        s,
        &admin,
        &format!("subtype={AUTHZ}%7CAuthZ-Consent&patient={me}"),
        "pat",
        2,
    )
    .await;
    assert_eq!(consents.len(), 2);
    for c in &consents {
        assert_eq!(c["type"]["code"], "110113", "{c}");
        assert_eq!(c["outcome"], "0");
        assert_eq!(c["agent"][1]["who"]["identifier"]["value"], "app");
        assert_eq!(c["entity"][0]["what"]["reference"], format!("Patient/{me}"));
        let desc = c["outcomeDesc"].as_str().unwrap();
        assert!(desc.contains("patient/Appointment.cruds"), "{desc}");
    }
    // The revocations (DICOM Logout) name the app that revoked; the refused one names no
    // client (an unknown id may be anything). Stored in order: once the second is found,
    // the first is there.
    let logouts = audited(s, &admin, &format!("subtype={DCM}%7C110123"), "app", 2).await;
    assert_eq!(logouts.len(), 2, "{logouts:?}");
    assert!(logouts.iter().all(|e| e["outcome"] == "0"));
    let refused: Value = get(
        s,
        &admin,
        &format!("AuditEvent?subtype={DCM}%7C110123&outcome=4"),
    )
    .await
    .json()
    .await
    .unwrap();
    let refused = &refused["entry"][0]["resource"];
    assert_eq!(refused["outcomeDesc"], "invalid_client", "{refused}");
    assert!(refused["agent"][0]["who"].is_null(), "{refused}");
    // Both introspections (IHE IUA ITI-102) name the user and app whose token asked, and
    // what was answered; never the token asked about.
    let asked = audited(
        s,
        &admin,
        "subtype=urn:ihe:event-type-code%7CITI-102",
        "pat",
        2,
    )
    .await;
    let answers: Vec<&Value> = asked.iter().map(|e| &e["outcomeDesc"]).collect();
    assert_eq!(answers.len(), 2, "{asked:?}");
    assert!(
        answers.contains(&&json!("the token is active")),
        "{answers:?}"
    );
    assert!(
        answers.contains(&&json!("the token is not active")),
        "{answers:?}"
    );
    for e in logouts.iter().chain(&asked) {
        let text = e.to_string();
        assert!(!text.contains(&access) && !text.contains(live_refresh));
        let roles: Vec<&Value> = e["entity"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| &x["role"]["code"])
            .collect();
        assert!(roles.contains(&&json!("13")), "the endpoint: {e}");
    }
    // The active answer disclosed the token's patient context, so it names the patient as
    // an entity; the inactive one disclosed nothing. (Both are in the patient's trail
    // anyway: the patient's own app asked.)
    for e in &asked {
        let entities = e["entity"].as_array().unwrap();
        let patient = entities.iter().find(|x| x["role"]["code"] == "1");
        if e["outcomeDesc"] == "the token is active" {
            let patient = patient.expect("the disclosed patient");
            assert_eq!(patient["what"]["reference"], format!("Patient/{me}"));
        } else {
            assert!(patient.is_none(), "{e}");
        }
    }
}

const AUTHZ: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";

async fn practitioner_login_totp_lockout_and_ehr_launch(s: &Server) {
    register_app(s).await;
    let admin = s.system_token().await;
    let p = create(
        s,
        &admin,
        json!({"resourceType": "Patient", "name": [{"family": "P"}]}),
    )
    .await;
    let dr = user("drwho", Role::Practitioner, Some("Practitioner/d1"));
    let secret = dr.totp_secret.clone().unwrap();
    s.auth.add_user(&dr).await.unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };

    // The EHR records a launch context; the app opens with it.
    let launch_ctx: Value = s
        .client
        .post(format!("{}/auth/launch", s.root))
        .bearer_auth(&admin)
        .json(&json!({"patient": p}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let launch_id = launch_ctx["launch"].as_str().unwrap().to_string();
    let code_now = accounts::totp_code(&secret, now()).unwrap();
    let (verifier, params, _) = launch(
        s,
        "launch openid fhirUser patient/Patient.rs user/Patient.rs",
        "drwho",
        Some(&code_now),
        &[("launch", &launch_id)],
        None,
    )
    .await;
    let token = app(s)
        .exchange_code(AuthorizationCode::new(params["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&oauth_http)
        .await
        .unwrap();
    let access = token.access_token().secret().clone();
    let intro = introspect(s, &access, &access).await;
    assert_eq!(intro["patient"], p.as_str(), "the EHR launch's patient");

    // Refused launch requests: no token, a body that is not JSON, a patient not here, and a
    // patient's token (patients cannot create launch contexts).
    let post_launch = |token: Option<String>, body: &'static str| {
        let request = s.client.post(format!("{}/auth/launch", s.root)).body(body);
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    assert_eq!(post_launch(None, r#"{"patient": "x"}"#).await.status(), 401);
    let malformed = post_launch(Some(admin.clone()), "{not json").await;
    assert_eq!(malformed.status(), 400);
    let malformed: Value = malformed.json().await.unwrap();
    assert_eq!(malformed["error"], "invalid_request");
    let unknown = post_launch(Some(admin.clone()), r#"{"patient": "nobody-here"}"#).await;
    assert_eq!(unknown.status(), 400);
    s.auth
        .add_user(&user("pip", Role::Patient, Some(&format!("Patient/{p}"))))
        .await
        .unwrap();
    let minted = s.auth.mint("app", Some("pip"), "patient/*.rs", None).await;
    let pip = minted.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let by_patient = post_launch(Some(pip), r#"{"patient": "x"}"#).await;
    assert_eq!(by_patient.status(), 403);
    // Each request is an AuditEvent (BALP AuthZ-Role): the launch names its patient, so it is
    // in that patient's trail; the refusals are minor failures.
    let launches = audited(
        s,
        &admin,
        &format!("subtype={AUTHZ}%7CAuthZ-Role&patient={p}&outcome=0"),
        "ops",
        1,
    )
    .await;
    assert_eq!(launches.len(), 1, "{launches:?}");
    assert_eq!(launches[0]["type"]["code"], "110113");
    assert_eq!(launches[0]["entity"][1]["role"]["code"], "13");
    assert!(
        !launches[0].to_string().contains(&launch_id),
        "never the launch value"
    );
    let refused = audited(
        s,
        &admin,
        &format!("subtype={AUTHZ}%7CAuthZ-Role&outcome=4"),
        "ops",
        2,
    )
    .await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    let mine = audited(
        s,
        &admin,
        &format!("subtype={AUTHZ}%7CAuthZ-Role&agent=Patient/{p}"),
        "pip",
        1,
    )
    .await;
    assert_eq!(mine[0]["outcome"], "4", "the patient's attempt: {mine:?}");
    let all: Value = get(
        s,
        &admin,
        &format!("AuditEvent?subtype={AUTHZ}%7CAuthZ-Role&outcome=4"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(all["total"], 4, "the request without a token too: {all}");
    // The practitioner's app asked about its token, and the answer disclosed the launch
    // patient: that introspection is in the patient's trail.
    let disclosed = audited(
        s,
        &admin,
        &format!("subtype=urn:ihe:event-type-code%7CITI-102&patient={p}"),
        "drwho",
        1,
    )
    .await;
    assert_eq!(disclosed.len(), 1, "{disclosed:?}");
    assert_eq!(
        disclosed[0]["entity"][0]["what"]["reference"],
        format!("Patient/{p}")
    );
    // It disclosed the token's user too: named as a User entity, so the introspection is
    // found by that practitioner as `entity` (not only as the agent who asked).
    let user = &disclosed[0]["entity"][1];
    assert_eq!(user["what"]["reference"], "Practitioner/d1", "{user}");
    assert_eq!(user["role"]["code"], "6", "{user}");
    let as_entity = audited(
        s,
        &admin,
        "subtype=urn:ihe:event-type-code%7CITI-102&entity=Practitioner/d1",
        "drwho",
        1,
    )
    .await;
    assert_eq!(as_entity, disclosed);
    // The same TOTP code is not accepted twice.
    let b = browser();
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let (url, _) = app(s)
        .authorize_url(CsrfToken::new_random)
        .add_extra_param("aud", s.base.clone())
        .add_scope(Scope::new("user/Patient.rs".into()))
        .set_pkce_challenge(challenge)
        .url();
    let html = b
        .get(url.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let req = hidden_request(&html);
    let login = |password: &'static str, totp: String| {
        let b = b.clone();
        let req = req.clone();
        let url = format!("{}/auth/login", s.root);
        async move {
            post_form(
                &b,
                &url,
                form(&[
                    ("request", &req),
                    ("username", "drwho"),
                    ("password", password),
                    ("totp", &totp),
                ]),
            )
            .await
        }
    };
    let replay = login(PASSWORD, code_now.clone()).await;
    assert_eq!(replay.status(), 401, "a TOTP code is good once");
    // No code: refused. Then four more failures lock the account...
    assert_eq!(login(PASSWORD, String::new()).await.status(), 401);
    for _ in 0..3 {
        assert_eq!(
            login("Wrong password 1!", String::new()).await.status(),
            401
        );
    }
    // ...so that even the right password and a fresh code are refused.
    let fresh = accounts::totp_code(&secret, now() + 30).unwrap();
    let fresh_again = fresh.clone();
    let locked = login(PASSWORD, fresh).await;
    assert_eq!(locked.status(), 401);
    assert!(locked.text().await.unwrap().contains("locked"));
    // `hearth user enable` unlocks.
    assert!(s.auth.set_user_disabled("drwho", false).await.unwrap());
    assert_eq!(login(PASSWORD, fresh_again).await.status(), 200);

    // Every attempt was audited (DICOM User Authentication / Login), the refused ones too:
    // two sign-ins, six refusals, each naming the user and the app.
    let mine = audited(
        s,
        &admin,
        "subtype=http://dicom.nema.org/resources/ontology/DCM%7C110122",
        "drwho",
        8,
    )
    .await;
    assert!(mine
        .iter()
        .all(|r| r["agent"][0]["who"]["reference"] == "Practitioner/d1"
            && r["agent"][1]["who"]["identifier"]["value"] == "app"));
    let outcomes: Vec<&Value> = mine.iter().map(|r| &r["outcome"]).collect();
    let refused = outcomes.iter().filter(|o| **o == "4").count();
    assert_eq!((outcomes.len(), refused), (8, 6), "{outcomes:?}");
    // The code exchange's token request names the user it was issued for and the app.
    let tokens: Value = get(
        s,
        &admin,
        "AuditEvent?subtype=urn:ihe:event-type-code%7CITI-71&agent=Practitioner/d1",
    )
    .await
    .json()
    .await
    .unwrap();
    let issued = &tokens["entry"][0]["resource"];
    assert_eq!(issued["outcome"], "0", "{tokens}");
    assert_eq!(issued["agent"][0]["who"]["identifier"]["value"], "drwho");
    assert_eq!(issued["agent"][1]["who"]["identifier"]["value"], "app");
}

/// The AuditEvents matching `query` whose first agent is `who` (by identifier), once there
/// are at least `n` of them (they are stored a moment after the request), or after 5 s.
async fn audited(s: &Server, token: &str, query: &str, who: &str, n: usize) -> Vec<Value> {
    let mut mine = Vec::new();
    for _ in 0..100 {
        let found: Value = get(s, token, &format!("AuditEvent?{query}&_count=200"))
            .await
            .json()
            .await
            .unwrap();
        mine = found["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"].clone())
            .filter(|r| r["agent"][0]["who"]["identifier"]["value"] == who)
            .collect();
        if mine.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    mine
}

/// A backend service's key pair: the private key to sign with, the public JWK to register.
fn service_key(alg: Algorithm, kid: &str) -> (EncodingKey, Value) {
    let key = match alg {
        Algorithm::ES384 => {
            use p384::pkcs8::EncodePrivateKey;
            let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
            EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes())
        }
        _ => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let secret = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
            EncodingKey::from_rsa_der(secret.to_pkcs1_der().unwrap().as_bytes())
        }
    };
    let mut jwk =
        serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap())
            .unwrap();
    jwk["kid"] = json!(kid);
    (key, jwk)
}

fn assertion(
    s: &Server,
    key: &EncodingKey,
    alg: Algorithm,
    kid: &str,
    client: &str,
    jti: &str,
    aud: Option<&str>,
) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    header.typ = Some("JWT".into());
    let token_url = format!("{}/auth/token", s.root);
    let claims = json!({
        "iss": client, "sub": client, "aud": aud.unwrap_or(&token_url),
        "exp": now + 240, "jti": jti,
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

async fn backend_services(s: &Server) {
    let (es, es_jwk) = service_key(Algorithm::ES384, "es-1");
    let (rs, rs_jwk) = service_key(Algorithm::RS384, "rs-1");
    s.auth
        .put_client(&Client {
            client_id: "engine".into(),
            name: "Integration engine".into(),
            kind: ClientKind::ConfidentialAsymmetric,
            secret_hash: None,
            redirect_uris: vec![],
            scope: "system/Patient.rs system/Appointment.cruds".into(),
            jwks: Some(json!({"keys": [es_jwk, rs_jwk]})),
        })
        .await
        .unwrap();
    let grant = |a: String, scope: &'static str| {
        form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &a),
        ])
    };
    for (key, alg, kid) in [
        (&es, Algorithm::ES384, "es-1"),
        (&rs, Algorithm::RS384, "rs-1"),
    ] {
        let a = assertion(
            s,
            key,
            alg,
            kid,
            "engine",
            &uuid::Uuid::new_v4().to_string(),
            None,
        );
        let (status, body) = token_form(
            s,
            grant(a.clone(), "system/Patient.rs system/Observation.rs"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["scope"], "system/Patient.rs",
            "only what the client is registered for"
        );
        assert!(body.get("refresh_token").is_none());
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(get(s, token, "/Patient").await.status(), 200);
        expect_outcome(
            post(s, token, "/Patient", &json!({"resourceType": "Patient"})).await,
            403,
        )
        .await;
        // The same assertion again: a replay.
        let (status, body) = token_form(s, grant(a, "system/Patient.rs")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
    }
    // Wrong audience, unknown key, unregistered scope.
    let a = assertion(
        s,
        &es,
        Algorithm::ES384,
        "es-1",
        "engine",
        "j-aud",
        Some("http://elsewhere/token"),
    );
    assert_eq!(token_form(s, grant(a, "system/Patient.rs")).await.0, 401);
    let (other, _) = service_key(Algorithm::ES384, "es-1");
    let a = assertion(s, &other, Algorithm::ES384, "es-1", "engine", "j-key", None);
    assert_eq!(token_form(s, grant(a, "system/Patient.rs")).await.0, 401);
    let a = assertion(s, &es, Algorithm::ES384, "es-1", "engine", "j-scope", None);
    let (status, body) = token_form(s, grant(a, "system/Observation.rs")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // A public client cannot use client_credentials; an unknown grant type is named.
    register_app(s).await;
    let (status, body) = token_form(
        s,
        form(&[("grant_type", "client_credentials"), ("client_id", "app")]),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let (_, body) = token_form(s, form(&[("grant_type", "password"), ("client_id", "app")])).await;
    assert_eq!(body["error"], "unsupported_grant_type");

    // Every token request was audited (BALP IHE.IUA.71), naming the client its assertion
    // claimed: two tokens issued to the engine, five refusals (two replays, the wrong
    // audience, the unknown key, the unregistered scope).
    let admin = s.system_token().await;
    let engine = audited(
        s,
        &admin,
        "subtype=urn:ihe:event-type-code%7CITI-71",
        "engine",
        7,
    )
    .await;
    let outcome = |o: &str| engine.iter().filter(|r| r["outcome"] == o).count();
    assert_eq!((engine.len(), outcome("0"), outcome("4")), (7, 2, 5));
    assert!(engine.iter().any(|r| r["outcomeDesc"] == "invalid_client"));
    assert!(engine
        .iter()
        .all(|r| r["agent"].as_array().unwrap().len() == 2
            && r["agent"][0]["type"]["coding"][0]["code"] == "110150"));
}

/// Each role and scope form against each interaction on the seven core types.
async fn enforcement_matrix(s: &Server) {
    register_app(s).await;
    let admin = s.system_token().await;
    let me = create(
        s,
        &admin,
        json!({"resourceType": "Patient", "name": [{"family": "Me"}]}),
    )
    .await;
    s.auth
        .add_user(&user("pat", Role::Patient, Some(&format!("Patient/{me}"))))
        .await
        .unwrap();
    s.auth
        .add_user(&user("doc", Role::Practitioner, Some("Practitioner/d1")))
        .await
        .unwrap();
    s.auth
        .add_user(&user("boss", Role::Administrator, None))
        .await
        .unwrap();
    let core = [
        "Patient",
        "Practitioner",
        "Schedule",
        "Slot",
        "Appointment",
        "MedicationRequest",
        "AuditEvent",
    ];
    let mint = |u: Option<&'static str>, scope: &'static str, patient: Option<String>| {
        let auth = s.auth.clone();
        async move {
            let t = auth
                .mint("app", u, scope, patient.as_deref())
                .await
                .unwrap();
            t["access_token"].as_str().unwrap().to_string()
        }
    };
    let patient_all = mint(Some("pat"), "patient/*.cruds", None).await;
    let doc_all = mint(Some("doc"), "user/*.cruds", None).await;
    let doc_read = mint(Some("doc"), "user/*.rs", None).await;
    let boss = mint(Some("boss"), "user/*.cruds", None).await;
    let v1 = mint(Some("doc"), "user/Patient.read", None).await;
    for t in core {
        let search =
            |token: String| async move { get(s, &token, &format!("/{t}")).await.status().as_u16() };
        // Search: the administrator everything; the practitioner all but AuditEvent; the
        // patient all but AuditEvent (confined to their compartment).
        assert_eq!(search(boss.clone()).await, 200, "admin searches {t}");
        let clinical = if t == "AuditEvent" { 403 } else { 200 };
        assert_eq!(
            search(doc_all.clone()).await,
            clinical,
            "practitioner searches {t}"
        );
        assert_eq!(
            search(patient_all.clone()).await,
            clinical,
            "patient searches {t}"
        );
        assert_eq!(
            search(v1.clone()).await,
            if t == "Patient" { 200 } else { 403 },
            "v1 read scope on {t}"
        );
    }
    // Writes: practitioners write prescriptions; read-only scopes and patients cannot.
    let rx = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "Amoxicillin"}, "subject": {"reference": format!("Patient/{me}")}});
    assert_eq!(
        post(s, &doc_all, "/MedicationRequest", &rx).await.status(),
        201
    );
    expect_outcome(post(s, &doc_read, "/MedicationRequest", &rx).await, 403).await;
    expect_outcome(post(s, &patient_all, "/MedicationRequest", &rx).await, 403).await;
    // Patients cannot delete; practitioners cannot touch AuditEvent; admins can.
    let appt = create(
        s,
        &admin,
        json!({"resourceType": "Appointment", "status": "booked",
        "participant": [{"actor": {"reference": format!("Patient/{me}")}, "status": "accepted"}]}),
    )
    .await;
    let del = |token: String, path: String| async move {
        s.client
            .delete(s.url(&path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        del(patient_all.clone(), format!("/Appointment/{appt}")).await,
        403
    );
    let audit = json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}});
    expect_outcome(post(s, &doc_all, "/AuditEvent", &audit).await, 403).await;
    // A patient updates their own appointment (cancels it).
    let mut cancelled: Value = get(s, &patient_all, &format!("/Appointment/{appt}"))
        .await
        .json()
        .await
        .unwrap();
    cancelled["status"] = json!("cancelled");
    assert_eq!(
        put(s, &patient_all, &format!("/Appointment/{appt}"), &cancelled)
            .await
            .status(),
        200
    );
    // Bundles: each entry is checked as if it came alone.
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{me}")}},
        {"request": {"method": "POST", "url": "MedicationRequest"}, "resource": rx},
    ]});
    let r: Value = post(s, &patient_all, "", &bundle)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["entry"][0]["response"]["status"], "200 OK");
    assert!(
        r["entry"][1]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("403"),
        "{r}"
    );
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "MedicationRequest"}, "resource": rx},
    ]});
    expect_outcome(post(s, &patient_all, "", &tx).await, 403).await;
    // SMART v2 query restrictions.
    let lab = json!({"resourceType": "Observation", "status": "final", "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"text": "Hb"}, "subject": {"reference": format!("Patient/{me}")}});
    let vital = json!({"resourceType": "Observation", "status": "final", "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"text": "BP"}, "subject": {"reference": format!("Patient/{me}")}});
    let lab_id = create(s, &admin, lab).await;
    let vital_id = create(s, &admin, vital).await;
    let labs_only = mint(Some("doc"), "user/Observation.rs?category=laboratory", None).await;
    let found: Value = get(s, &labs_only, "/Observation")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&found), vec![format!("Observation/{lab_id}")]);
    assert_eq!(
        get(s, &labs_only, &format!("/Observation/{vital_id}"))
            .await
            .status(),
        403
    );
    assert_eq!(
        get(s, &labs_only, &format!("/Observation/{lab_id}"))
            .await
            .status(),
        200
    );
}

/// A patient-scoped token sees one patient's data through every path a search offers.
async fn patient_scoped_tokens_cannot_leak(s: &Server) {
    register_app(s).await;
    let admin = s.system_token().await;
    let me = create(
        s,
        &admin,
        json!({"resourceType": "Patient", "name": [{"family": "Same"}]}),
    )
    .await;
    let other = create(
        s,
        &admin,
        json!({"resourceType": "Patient", "name": [{"family": "Same"}]}),
    )
    .await;
    s.auth
        .add_user(&user("doc", Role::Practitioner, Some("Practitioner/d1")))
        .await
        .unwrap();
    let dr = create(
        s,
        &admin,
        json!({"resourceType": "Practitioner", "name": [{"family": "Doc"}]}),
    )
    .await;
    let mut appts = HashMap::new();
    for p in [&me, &other] {
        let id = create(
            s,
            &admin,
            json!({"resourceType": "Appointment", "status": "booked", "participant": [
            {"actor": {"reference": format!("Patient/{p}")}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{dr}")}, "status": "accepted"}]}),
        )
        .await;
        appts.insert(p.clone(), id);
    }
    // A practitioner's app launched for `me` with patient/ scopes.
    let t = s
        .auth
        .mint("app", Some("doc"), "patient/*.rs", Some(&me))
        .await
        .unwrap();
    let token = t["access_token"].as_str().unwrap().to_string();
    let search = |q: &'static str| {
        let token = token.clone();
        async move {
            let r = get(s, &token, q).await;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 200, "{q}: {body}");
            let mut found = ids(&body);
            found.sort();
            found
        }
    };
    let mine = format!("Appointment/{}", appts[&me]);
    let practitioner = format!("Practitioner/{dr}");
    assert_eq!(search("/Appointment").await, vec![mine.clone()]);
    // _include pulls in the practitioner (not patient data) and my record only.
    let inc = search("/Appointment?_include=Appointment:actor").await;
    assert!(!inc.contains(&format!("Patient/{other}")), "{inc:?}");
    assert!(
        inc.contains(&practitioner) && inc.contains(&format!("Patient/{me}")),
        "{inc:?}"
    );
    // _revinclude from the practitioner shows only my appointment.
    let rev = search("/Practitioner?_revinclude=Appointment:actor").await;
    assert!(
        rev.contains(&mine) && !rev.contains(&format!("Appointment/{}", appts[&other])),
        "{rev:?}"
    );
    // Chaining into Patient: both patients are called Same, only mine counts.
    assert_eq!(
        search("/Appointment?actor:Patient.family=Same").await,
        vec![mine.clone()]
    );
    // _has from Practitioner through the other patient's appointment finds nothing.
    let has = format!("/Practitioner?_has:Appointment:actor:patient={other}");
    let r: Value = get(s, &token, &has).await.json().await.unwrap();
    assert!(ids(&r).is_empty(), "{r}");
    // Compartment search of the other patient: empty; their history: refused; their record: 403.
    let r: Value = get(s, &token, &format!("/Patient/{other}/Appointment"))
        .await
        .json()
        .await
        .unwrap();
    assert!(ids(&r).is_empty(), "{r}");
    expect_outcome(get(s, &token, "/Appointment/_history").await, 403).await;
    expect_outcome(
        get(s, &token, &format!("/Patient/{other}/_history")).await,
        403,
    )
    .await;
    let h: Value = get(s, &token, &format!("/Patient/{me}/_history"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["entry"].as_array().unwrap().len(), 1);
    expect_outcome(
        get(s, &token, &format!("/Appointment/{}", appts[&other])).await,
        403,
    )
    .await;
    // System search over several types: refused for a confined token.
    expect_outcome(get(s, &token, "/?_type=Patient,Appointment").await, 403).await;
    // A batch read of the other patient's appointment: 403 in its entry.
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Appointment/{}", appts[&other])}},
        {"request": {"method": "GET", "url": "Appointment?status=booked"}}]});
    let r: Value = post(s, &token, "", &bundle).await.json().await.unwrap();
    assert!(
        r["entry"][0]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("403"),
        "{r}"
    );
    assert_eq!(ids(&r["entry"][1]["resource"]), vec![mine]);
}

async fn bad_authorize_requests(s: &Server) {
    register_app(s).await;
    let b = browser();
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let base = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", APP_REDIRECT),
            ("scope", "patient/*.rs launch/patient"),
            ("state", "s1"),
            ("aud", s.base.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                pairs.push((k, v));
            }
        }
        format!("{}/auth/authorize?{}", s.root, form(&pairs))
    };
    // An unregistered redirect URI is never redirected to.
    let r = b
        .get(base(&[("redirect_uri", "http://evil.example/cb")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not registered"));
    let r = b
        .get(base(&[("client_id", "nobody")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The others go back to the app with the OAuth2 error.
    for (extra, error) in [
        (vec![("aud", "http://elsewhere/fhir")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "system/*.rs")], "invalid_scope"),
        (vec![("launch", "no-such-launch")], "invalid_request"),
    ] {
        let r = b.get(base(&extra)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{extra:?}");
        let params = callback(r.headers()["location"].to_str().unwrap());
        assert_eq!(
            params.get("error").map(String::as_str),
            Some(error),
            "{extra:?}"
        );
        assert_eq!(params["state"], "s1");
    }
    // Wrong password: the page says so, without saying which part was wrong.
    let html = b.get(base(&[])).send().await.unwrap().text().await.unwrap();
    let req = hidden_request(&html);
    let r = post_form(
        &b,
        &format!("{}/auth/login", s.root),
        form(&[("request", &req), ("username", "nobody"), ("password", "x")]),
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("user name, password or code is wrong"));
    // Denying consent sends access_denied.
    s.auth
        .add_user(&user("pat", Role::Patient, Some("Patient/x")))
        .await
        .unwrap();
    let r = post_form(
        &b,
        &format!("{}/auth/login", s.root),
        form(&[
            ("request", &req),
            ("username", "pat"),
            ("password", PASSWORD),
        ]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = post_form(
        &b,
        &format!("{}/auth/consent", s.root),
        form(&[("request", &req), ("decision", "deny")]),
    )
    .await;
    let params = callback(r.headers()["location"].to_str().unwrap());
    assert_eq!(params["error"], "access_denied");
    // The refusal is in the patient's trail.
    let admin = s.system_token().await;
    let declined = audited(
        s,
        &admin,
        &format!("subtype={AUTHZ}%7CAuthZ-Consent&patient=x&outcome=4"),
        "pat",
        1,
    )
    .await;
    assert_eq!(declined.len(), 1);
    assert_eq!(declined[0]["outcomeDesc"], "the user declined the app");
    // The sign-in with a name no account has names no user (what was typed may be anything,
    // a password included): its first agent is the app.
    let unknown = audited(
        s,
        &admin,
        &format!("subtype={DCM}%7C110122&outcome=4"),
        "app",
        1,
    )
    .await;
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0]["outcomeDesc"], "no account has this user name");
    assert!(!unknown[0].to_string().contains("nobody"));
}

async fn key_rotation_keeps_tokens_valid(s: &Server) {
    let before = s.system_token().await;
    let kid_before = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();
    let new_kid = s.auth.rotate_keys().await.unwrap();
    assert_ne!(kid_before, new_kid);
    assert_eq!(
        get(s, &before, "/Patient").await.status(),
        200,
        "old tokens stay valid"
    );
    let after = s.system_token().await;
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(),
        new_kid
    );
    assert_eq!(get(s, &after, "/Patient").await.status(), 200);
    let jwks: Value = s
        .client
        .get(format!("{}/auth/jwks", s.root))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(kids.contains(&kid_before.as_str()) && kids.contains(&new_kid.as_str()));
}

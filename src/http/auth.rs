//! The authorization server over HTTP, and the authentication of FHIR requests. The flows
//! themselves are `auth::server`'s; this file reads forms, renders the login and consent
//! pages, and writes OAuth2 JSON. <https://hl7.org/fhir/smart-app-launch/app-launch.html>

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde_json::{json, Value};

use super::AppState;
use crate::audit::event::Kind;
use crate::audit::{Agent, Event};
use crate::auth::login::{AuthorizeError, AuthorizeParams, ConsentView, Decision, SignIn};
use crate::auth::policy::{Principal, Role};
use crate::auth::token::{basic_credentials, OAuthError};
use crate::auth::Access;
use crate::fhir::outcome::{operation_outcome, Issue, IssueType};
use crate::store::ResourceStore;

/// Puts an [`Access`] on every FHIR request: `Open` under `--auth off`, otherwise the
/// verified bearer token's principal, or a 401 with `WWW-Authenticate` (RFC 6750 section 3).
/// The CapabilityStatement and the SMART configuration are public.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let fhir = path == "/fhir" || path.starts_with("/fhir/");
    let public = path == "/fhir/metadata" || path == "/fhir/.well-known/smart-configuration";
    if !state.enforce_auth {
        request.extensions_mut().insert(Access::Open);
        return next.run(request).await;
    }
    if !fhir || public {
        return next.run(request).await;
    }
    let token = bearer(request.headers());
    let Some(token) = token else {
        return unauthorized(
            None,
            "this request needs an access token (Authorization: Bearer)",
        );
    };
    match state.auth.authenticate(&token).await {
        Ok(principal) => {
            let access = Access::Token(Arc::new(principal));
            request.extensions_mut().insert(access.clone());
            let mut response = next.run(request).await;
            // The audit layer, outside this one, names who asked.
            response.extensions_mut().insert(access);
            response
        }
        Err(why) => unauthorized(Some("invalid_token"), &why),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn unauthorized(error: Option<&str>, why: &str) -> Response {
    let mut challenge = "Bearer realm=\"hearth\"".to_string();
    if let Some(e) = error {
        let safe: String = why
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        challenge.push_str(&format!(", error=\"{e}\", error_description=\"{safe}\""));
    }
    let body = operation_outcome(&[Issue::error(IssueType::Security, why)]);
    let mut response = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        headers.insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// `GET [base]/.well-known/smart-configuration`.
/// <https://hl7.org/fhir/smart-app-launch/conformance.html>
pub async fn smart_configuration(State(state): State<AppState>) -> Response {
    let issuer = &state.auth.settings.issuer;
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": [
            "openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access",
            "patient/*.cruds", "patient/*.rs", "user/*.cruds", "user/*.rs", "system/*.cruds", "system/*.rs",
            "patient/*.read", "patient/*.write", "patient/*.*", "user/*.read", "user/*.write", "user/*.*",
            "system/*.read", "system/*.write", "system/*.*"
        ],
        "capabilities": [
            "launch-standalone", "launch-ehr", "authorize-post",
            "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
            "context-standalone-patient", "context-ehr-patient", "context-banner",
            "permission-patient", "permission-user", "permission-offline", "permission-online",
            "permission-v1", "permission-v2", "sso-openid-connect"
        ],
    });
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// `GET /auth/jwks`: the public keys that verify Hearth's tokens.
pub async fn jwks(State(state): State<AppState>) -> Response {
    axum::Json(state.auth.keys.jwks()).into_response()
}

/// `GET /auth/authorize` (and `POST`, `authorize-post`): checks the request and shows the
/// login page.
pub async fn authorize_get(
    State(state): State<AppState>,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    authorize(&state, p).await
}

pub async fn authorize_post(
    State(state): State<AppState>,
    Form(p): Form<AuthorizeParams>,
) -> Response {
    authorize(&state, p).await
}

async fn authorize(state: &AppState, p: AuthorizeParams) -> Response {
    match state.auth.authorize(&p).await {
        Ok(request) => {
            let name = match state.auth.pending(&request).await {
                Ok(Some(p)) => p.client_name,
                _ => String::new(),
            };
            page(StatusCode::OK, &login_page(&request, &name, None))
        }
        Err(AuthorizeError::Page(message)) => page(StatusCode::BAD_REQUEST, &error_page(&message)),
        Err(AuthorizeError::Redirect(url)) => Redirect::to(&url).into_response(),
    }
}

/// `POST /auth/login`: the login form. Success shows the consent page. Every attempt on a
/// live sign-in is audited, refused or not.
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let request = get("request");
    let result = state
        .auth
        .login(request, get("username"), get("password"), get("totp"))
        .await;
    let name = match state.auth.pending(request).await {
        Ok(Some(p)) => p,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                &error_page("this sign-in has expired; start again from the app"),
            )
        }
    };
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    audit_sign_in(&state, &name.client_id, peer, &result).await;
    match result {
        Ok(SignIn { refusal: None, .. }) => match state.auth.consent_view(&name).await {
            Ok(Some(view)) => page(StatusCode::OK, &consent_page(request, &view, None)),
            _ => page(StatusCode::BAD_REQUEST, &error_page("sign in first")),
        },
        Ok(SignIn {
            refusal: Some(message),
            ..
        }) => page(
            StatusCode::UNAUTHORIZED,
            &login_page(request, &name.client_name, Some(&message)),
        ),
        Err(e) => page(StatusCode::SERVICE_UNAVAILABLE, &error_page(e.message())),
    }
}

/// Records a sign-in attempt as an AuditEvent. The user is named only when the name is an
/// account's: what was typed for an unknown one may be anything, a password included.
async fn audit_sign_in(
    state: &AppState,
    client_id: &str,
    peer: Option<SocketAddr>,
    result: &crate::error::Result<SignIn>,
) {
    if !state.audit.enabled() {
        return;
    }
    let (status, user, description) = match result {
        Ok(SignIn {
            user,
            refusal: None,
        }) => (200, user.as_ref(), None),
        Ok(SignIn {
            user: None,
            refusal: Some(_),
        }) => (401, None, Some("no account has this user name".to_string())),
        Ok(SignIn {
            user: Some(user),
            refusal: Some(message),
        }) => (401, Some(user), Some(message.clone())),
        Err(_) => (503, None, None),
    };
    let mut event = Event::login(
        status,
        Agent {
            fhir_user: user.and_then(|u| u.fhir_user.clone()),
            subject: user.map(|u| u.username.clone()),
            client_id: Some(client_id.to_string()),
            address: peer.map(|a| a.ip().to_string()),
        },
    );
    event.description = description;
    state.audit.record(event).await;
}

/// `POST /auth/consent`: allow or deny; back to the app either way. Every decision is
/// audited.
pub async fn consent(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| form.get(k).map(String::as_str);
    let request = get("request").unwrap_or("");
    let approve = get("decision") == Some("allow");
    match state.auth.consent(request, approve, get("patient")).await {
        Ok(Ok(decision)) => {
            let peer = peer.map(|Extension(ConnectInfo(a))| a);
            audit_consent(&state, &decision, peer).await;
            Redirect::to(&decision.redirect).into_response()
        }
        Ok(Err(message)) => match state.auth.pending(request).await {
            Ok(Some(p)) => match state.auth.consent_view(&p).await {
                Ok(Some(view)) => page(
                    StatusCode::BAD_REQUEST,
                    &consent_page(request, &view, Some(&message)),
                ),
                _ => page(StatusCode::BAD_REQUEST, &error_page(&message)),
            },
            _ => page(StatusCode::BAD_REQUEST, &error_page(&message)),
        },
        Err(e) => page(StatusCode::SERVICE_UNAVAILABLE, &error_page(e.message())),
    }
}

/// Records a consent decision (BALP AuthZconsent): the user and the app as agents, the
/// patient in context as an entity, the scopes granted (or the refusal) as `outcomeDesc`.
async fn audit_consent(state: &AppState, decision: &Decision, peer: Option<SocketAddr>) {
    if !state.audit.enabled() {
        return;
    }
    let agent = Agent {
        fhir_user: decision.fhir_user.clone(),
        subject: Some(decision.username.clone()),
        client_id: Some(decision.client_id.clone()),
        address: peer.map(|a| a.ip().to_string()),
    };
    let mut event = Event::consent(decision.granted.is_some(), agent, decision.patient.clone());
    event.description = Some(match &decision.granted {
        Some(scope) => format!("the user allowed the app: {scope}"),
        None => "the user declined the app".to_string(),
    });
    state.audit.record(event).await;
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials)
}

fn oauth_json(result: Result<Value, OAuthError>) -> Response {
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => {
            tracing::info!(error = e.error, "token endpoint refused a request");
            (
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                e.body(),
            )
        }
    };
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// `POST /auth/token`. Every request is audited, refused or not.
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let basic = basic(&headers);
    let claimed = basic.as_ref().map(|(id, _)| id.clone());
    let result = state.auth.token(&form, basic).await;
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    audit_token(&state, &form, claimed, peer, &result).await;
    oauth_json(result)
}

/// Records a token request (BALP IHE.IUA.71). The issued token says who got it; a refused
/// request names the client only if the id it claims (form, Basic credentials or the
/// subject of its assertion) is a registered client. No secret, code or token is recorded.
async fn audit_token(
    state: &AppState,
    form: &HashMap<String, String>,
    basic_id: Option<String>,
    peer: Option<SocketAddr>,
    result: &Result<Value, OAuthError>,
) {
    if !state.audit.enabled() {
        return;
    }
    let address = peer.map(|a| a.ip().to_string());
    // Reading the issued token back costs nothing extra: it fills the verified-token cache
    // that the client's first request would fill anyway.
    let issued = match result {
        Ok(body) => match body["access_token"].as_str() {
            Some(token) => state.auth.authenticate(token).await.ok(),
            None => None,
        },
        Err(_) => None,
    };
    let (status, agent, description) = match (result, issued) {
        (Ok(_), Some(p)) => (200, principal_agent(p, address), None),
        (Ok(_), None) => (
            200,
            Agent {
                address,
                ..Agent::default()
            },
            None,
        ),
        (Err(e), _) => {
            let agent = Agent {
                client_id: registered_client(state, form, basic_id).await,
                address,
                ..Agent::default()
            };
            (e.status, agent, Some(e.error.to_string()))
        }
    };
    let mut event = Event::token(status, agent, &state.auth.settings.token_url());
    event.description = description;
    state.audit.record(event).await;
}

/// The `sub` a client assertion (a JWT) claims, unverified: only to name the client in the
/// audit trail when it is a registered one.
fn assertion_subject(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

/// `POST /auth/introspect` (RFC 7662). Every request is audited (IHE IUA ITI-102).
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let bearer = bearer(&headers);
    let basic = basic(&headers).filter(|_| bearer.is_none());
    let claimed = basic.as_ref().map(|(id, _)| id.clone());
    let result = state.auth.introspect(&form, basic, bearer.as_deref()).await;
    let (caller, answer, disclosed) = match &result {
        Ok(i) => {
            let caller = match &i.caller {
                Some(p) => Caller::Token(p.clone()),
                None => Caller::Client(claimed),
            };
            let words = match i.answer["active"].as_bool() {
                Some(true) => "the token is active",
                _ => "the token is not active",
            };
            // An active token's user and patient context were disclosed to the caller: the
            // event names them, so it is in that patient's (and that user's) trail. A
            // patient's own token names the patient once.
            let own = i.patient.as_ref().map(|p| format!("Patient/{p}"));
            let user = i.user.clone().filter(|u| Some(u) != own.as_ref());
            (caller, Ok(Some(words)), (user, i.patient.clone()))
        }
        // A refused bearer token is not a caller.
        Err(e) => (Caller::Client(claimed), Err(e), (None, None)),
    };
    let url = format!("{}/introspect", state.auth.settings.issuer);
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    let asked = Asked {
        caller,
        peer,
        answer,
        user: disclosed.0,
        patient: disclosed.1,
    };
    audit_oauth(&state, Kind::Introspect, &url, &form, asked).await;
    oauth_json(result.map(|i| i.answer))
}

/// `POST /auth/revoke` (RFC 7009). Every request is audited.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let basic = basic(&headers);
    let claimed = basic.as_ref().map(|(id, _)| id.clone());
    let result = state.auth.revoke(&form, basic).await;
    let url = format!("{}/revoke", state.auth.settings.issuer);
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    let answer = result.as_ref().map(|_| None);
    let caller = Caller::Client(claimed);
    let asked = Asked {
        caller,
        peer,
        answer,
        user: None,
        patient: None,
    };
    audit_oauth(&state, Kind::Revoke, &url, &form, asked).await;
    match result {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => oauth_json(Err(e)),
    }
}

/// Who called an OAuth endpoint.
enum Caller {
    /// The holder of a valid access token (introspection may be asked with one).
    Token(Principal),
    /// A client, by the id its Basic credentials claim (the form's `client_id` and the
    /// subject of a client assertion are looked at too).
    Client(Option<String>),
}

/// What an introspection or revocation asked and was answered.
struct Asked<'a> {
    caller: Caller,
    peer: Option<SocketAddr>,
    /// Words for `outcomeDesc`, or the OAuth error.
    answer: std::result::Result<Option<&'a str>, &'a OAuthError>,
    /// The user (`Practitioner/7`) and patient context of the token asked about, if the
    /// answer disclosed them.
    user: Option<String>,
    patient: Option<String>,
}

/// Records an introspection or revocation: the caller as the Application agent (and its
/// user, for a user's token), the endpoint as the entity, the user and patient the answer
/// disclosed, and what was answered (or the OAuth error) as `outcomeDesc`. Never the
/// token asked about.
async fn audit_oauth(
    state: &AppState,
    kind: Kind,
    url: &str,
    form: &HashMap<String, String>,
    asked: Asked<'_>,
) {
    if !state.audit.enabled() {
        return;
    }
    let Asked {
        caller,
        peer,
        answer,
        user,
        patient,
    } = asked;
    let address = peer.map(|a| a.ip().to_string());
    let agent = match caller {
        Caller::Token(p) => principal_agent(p, address),
        Caller::Client(basic_id) => Agent {
            client_id: registered_client(state, form, basic_id).await,
            address,
            ..Agent::default()
        },
    };
    let (status, description) = match answer {
        Ok(words) => (200, words),
        Err(e) => (e.status, Some(e.error)),
    };
    let mut event = Event::oauth(kind, status, agent, url);
    event.description = description.map(str::to_string);
    event.patients = patient.into_iter().collect();
    event.users = user.into_iter().collect();
    state.audit.record(event).await;
}

/// The agent of a verified token: its user (not for a backend service's own token) and
/// its client.
fn principal_agent(p: Principal, address: Option<String>) -> Agent {
    let user = p.role != Role::System;
    Agent {
        fhir_user: p.fhir_user.filter(|_| user),
        subject: user.then_some(p.subject),
        client_id: Some(p.client_id),
        address,
    }
}

/// The client id a request claims (form, Basic credentials, or the unverified `sub` of its
/// assertion), if it is a registered client's: only registered ids are recorded, since an
/// unknown one may be anything.
async fn registered_client(
    state: &AppState,
    form: &HashMap<String, String>,
    basic_id: Option<String>,
) -> Option<String> {
    let claimed = form.get("client_id").cloned().or(basic_id).or_else(|| {
        form.get("client_assertion")
            .and_then(|a| assertion_subject(a))
    })?;
    match state.auth.client(&claimed).await {
        Ok(Some(_)) => Some(claimed),
        _ => None,
    }
}

/// `POST /auth/launch` `{"patient": "123"}`: an EHR (a practitioner, administrator or backend
/// service token) records a launch context and gets the `launch` value to open an app with
/// (SMART EHR launch). Every request is audited ([`Kind::Launch`]), refusals too; the event
/// never holds the `launch` value.
/// <https://hl7.org/fhir/smart-app-launch/app-launch.html#launch-app-ehr-launch>
pub async fn launch(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: axum::body::Bytes,
) -> Response {
    let address = peer.map(|Extension(ConnectInfo(a))| a.ip().to_string());
    let (agent, patient, result) = launch_context(&state, &headers, &body, address).await;
    if state.audit.enabled() {
        let url = format!("{}/launch", state.auth.settings.issuer);
        let (status, description) = match &result {
            Ok(_) => (200, "launch context created".to_string()),
            Err(LaunchRefusal::NoToken(why)) => (401, why.to_string()),
            Err(LaunchRefusal::BadToken(why)) => (401, why.clone()),
            Err(LaunchRefusal::OAuth(e)) => (e.status, e.description.clone()),
        };
        let mut event = Event::launch(status, agent, patient, &url);
        event.description = Some(description);
        state.audit.record(event).await;
    }
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(LaunchRefusal::NoToken(why)) => unauthorized(None, why),
        Err(LaunchRefusal::BadToken(why)) => unauthorized(Some("invalid_token"), &why),
        Err(LaunchRefusal::OAuth(e)) => oauth_json(Err(e)),
    }
}

/// Why `/auth/launch` refused.
enum LaunchRefusal {
    NoToken(&'static str),
    BadToken(String),
    OAuth(OAuthError),
}

/// Checks a launch request and creates its context; answers who asked (for the audit), the
/// patient named (a valid id, existing or not), and the answer.
async fn launch_context(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    address: Option<String>,
) -> (
    Agent,
    Option<String>,
    std::result::Result<Value, LaunchRefusal>,
) {
    let anonymous = Agent {
        address: address.clone(),
        ..Agent::default()
    };
    let Some(token) = bearer(headers) else {
        let why = "creating a launch context needs an access token";
        return (anonymous, None, Err(LaunchRefusal::NoToken(why)));
    };
    let principal = match state.auth.authenticate(&token).await {
        Ok(p) => p,
        Err(why) => return (anonymous, None, Err(LaunchRefusal::BadToken(why))),
    };
    let refuse = |status: u16, error: &'static str, description: String| {
        Err(LaunchRefusal::OAuth(OAuthError {
            status,
            error,
            description,
        }))
    };
    let is_patient = principal.role == Role::Patient;
    let agent = principal_agent(principal, address);
    if is_patient {
        let why = "patients cannot create launch contexts".to_string();
        return (agent, None, refuse(403, "insufficient_scope", why));
    }
    let named = serde_json::from_slice::<Value>(body).ok().and_then(|b| {
        b["patient"]
            .as_str()
            .map(|p| p.trim_start_matches("Patient/").to_string())
    });
    let Some(patient) = named.filter(|p| crate::fhir::id::is_valid_id(p)) else {
        let why = "the body is JSON naming the launch patient: {\"patient\": \"<id>\"}";
        return (agent, None, refuse(400, "invalid_request", why.to_string()));
    };
    let result = match state.store.read("Patient", &patient).await {
        Ok(Some(found)) if !found.is_deleted() => match state.auth.create_launch(&patient).await {
            Ok(launch) => Ok(json!({"launch": launch, "patient": patient})),
            Err(e) => Err(LaunchRefusal::OAuth(e.into())),
        },
        Ok(_) => refuse(
            400,
            "invalid_request",
            format!("there is no Patient/{patient} here"),
        ),
        Err(e) => Err(LaunchRefusal::OAuth(e.into())),
    };
    (agent, Some(patient), result)
}

// ----- Pages -----

fn page(status: StatusCode, html: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ],
        html.to_string(),
    )
        .into_response()
}

/// HTML text escaping.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Hearth</title>
<style>
body{{font:1.05rem/1.5 system-ui,sans-serif;max-width:30rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}}
label{{display:block;margin-top:1rem;font-weight:600}} input{{font:inherit;width:100%;padding:.5rem;box-sizing:border-box}}
button{{font:inherit;margin-top:1.2rem;padding:.6rem 1.2rem}} [role=alert]{{color:#a00000;font-weight:600}}
li{{margin:.3rem 0}} :focus{{outline:3px solid #1f5fbf}}
</style></head><body><main>
{body}
</main></body></html>"#,
        title = esc(title),
    )
}

fn login_page(request: &str, client_name: &str, error: Option<&str>) -> String {
    let alert = error
        .map(|e| format!(r#"<p role="alert" id="error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    layout(
        "Sign in",
        &format!(
            r#"<h1>Sign in</h1>
<p><strong>{app}</strong> asks to connect to your health records.</p>
{alert}
<form method="post" action="/auth/login">
<input type="hidden" name="request" value="{request}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="totp">One-time code <small>(practitioners and administrators)</small></label>
<input id="totp" name="totp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{{6}}">
<button type="submit" id="sign-in">Sign in</button>
</form>"#,
            app = esc(client_name),
            request = esc(request),
        ),
    )
}

fn consent_page(request: &str, view: &ConsentView, error: Option<&str>) -> String {
    let alert = error
        .map(|e| format!(r#"<p role="alert" id="error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let items: String = view
        .scopes
        .iter()
        .map(|s| format!("<li>{}</li>", esc(s)))
        .collect();
    let patient = if view.needs_patient {
        r#"<label for="patient">Patient id (the record this app will work on)</label>
<input id="patient" name="patient" required>"#
            .to_string()
    } else {
        match &view.patient {
            Some(p) => format!("<p>Patient record: <strong>{}</strong></p>", esc(p)),
            None => String::new(),
        }
    };
    layout(
        "Allow access",
        &format!(
            r#"<h1>Allow {app}?</h1>
{alert}
<p><strong>{app}</strong> will be able to:</p>
<ul id="scopes">{items}</ul>
<form method="post" action="/auth/consent">
<input type="hidden" name="request" value="{request}">
{patient}
<button type="submit" name="decision" value="allow" id="allow">Allow</button>
<button type="submit" name="decision" value="deny" id="deny" formnovalidate>Deny</button>
</form>"#,
            app = esc(&view.client_name),
            request = esc(request),
        ),
    )
}

fn error_page(message: &str) -> String {
    layout(
        "Cannot sign in",
        &format!(
            r#"<h1>Cannot sign in</h1><p role="alert" id="error">{}</p>"#,
            esc(message)
        ),
    )
}

//! Hearth as its own SMART on FHIR authorization server: the authorization code flow with
//! PKCE and a login and consent in between, refresh tokens that rotate, client credentials
//! with signed assertions for backend services, introspection and revocation.
//! <https://hl7.org/fhir/smart-app-launch/app-launch.html>,
//! <https://hl7.org/fhir/smart-app-launch/backend-services.html>,
//! <https://www.rfc-editor.org/rfc/rfc6749>, RFC 7636 (PKCE), RFC 7009, RFC 7662.
//!
//! What is stored (`store::auth`): users, clients and signing keys; pending logins, codes
//! and refresh tokens (by their SHA-256, never the secret itself); assertion ids until they
//! expire; revoked access-token ids until the tokens expire.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::accounts::{self, Client, ClientKind, User};
use super::keys::{KeyRing, Refused, SigningKey};
use super::policy::{Principal, Role};
use super::scope::{self, Scope};
use crate::error::Result;
use crate::store::auth::Kind;
use crate::store::Store;

/// The lifetimes and limits of the authorization server (from `Config`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The FHIR base URL: the `aud` apps ask for and access tokens carry.
    pub fhir_base: String,
    /// Where the endpoints are: `<origin>/auth`; also the tokens' `iss`.
    pub issuer: String,
    pub access_token_seconds: i64,
    pub refresh_token_seconds: i64,
    /// `online_access` refresh tokens last as long as a working day's sign-in.
    pub online_refresh_seconds: i64,
    pub key_rotation_seconds: i64,
    pub max_failed_logins: u32,
    pub lockout_seconds: i64,
}

impl Settings {
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }
}

/// How long a login may sit between the authorize request and the consent.
const PENDING_SECONDS: i64 = 600;
/// Authorization codes are good for one minute (RFC 6749 section 4.1.2 recommends at most 10).
const CODE_SECONDS: i64 = 60;
/// The furthest in the future a client assertion may expire (SMART Backend Services).
const MAX_ASSERTION_SECONDS: i64 = 300;

/// An OAuth2 error response. <https://www.rfc-editor.org/rfc/rfc6749#section-5.2>
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        let status = if error == "invalid_client" { 401 } else { 400 };
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

impl From<crate::Error> for OAuthError {
    fn from(e: crate::Error) -> OAuthError {
        OAuthError {
            status: if e.kind == crate::error::ErrorKind::Unavailable {
                503
            } else {
                500
            },
            error: "server_error",
            description: e.message().to_string(),
        }
    }
}

type OAuthResult<T> = std::result::Result<T, OAuthError>;

/// What an authorization code or refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Grant {
    client_id: String,
    /// The signed-in user, absent for backend services.
    username: Option<String>,
    role: Role,
    fhir_user: Option<String>,
    /// The granted scopes, space-separated as requested.
    scope: String,
    patient: Option<String>,
    nonce: Option<String>,
}

/// The claims of Hearth's access tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    pub client_id: String,
    pub role: Role,
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

/// A login between the authorize request and the consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: String,
    code_challenge: String,
    nonce: Option<String>,
    /// The EHR launch context's patient.
    launch_patient: Option<String>,
    /// Set once the user has signed in.
    pub username: Option<String>,
}

/// Why an authorize request failed: shown to the user when the redirect URI cannot be
/// trusted, otherwise sent back to the app.
#[derive(Debug)]
pub enum AuthorizeError {
    Page(String),
    Redirect(String),
}

/// The parameters of the authorize request (query or form).
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub launch: Option<String>,
    pub nonce: Option<String>,
}

/// What the consent page shows.
pub struct ConsentView {
    pub client_name: String,
    /// Each granted scope in plain words.
    pub scopes: Vec<String>,
    /// A practitioner asked for `launch/patient` without an EHR launch: pick one.
    pub needs_patient: bool,
    pub patient: Option<String>,
}

pub struct AuthServer {
    store: Store,
    pub settings: Settings,
    pub keys: KeyRing,
    /// Revoked access tokens (`jti` → expiry), refreshed from the database.
    revoked: RwLock<HashMap<String, i64>>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// 256 random bits, URL-safe.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How secrets are stored: their SHA-256, hex.
fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// PKCE S256: BASE64URL(SHA256(verifier)) == challenge. RFC 7636 section 4.6.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    valid_verifier && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

/// The requested scopes this client may be given, as their original strings. System scopes
/// only ever go to backend services, and user scopes never do.
fn grantable(requested: &str, client: &Client, backend: bool) -> Vec<String> {
    let allowed = scope::parse_list(&client.scope).unwrap_or_default();
    requested
        .split_whitespace()
        .filter(|raw| {
            let Ok(s) = scope::parse(raw) else {
                return false;
            };
            match &s {
                Scope::Resource(r) => {
                    (r.context == scope::Context::System) == backend
                        && allowed.iter().any(|a| match a {
                            Scope::Resource(a) => a.covers(r),
                            _ => false,
                        })
                }
                // Identity and launch context go to any user-facing app; offline and online
                // access only to those registered for them.
                other => {
                    !backend
                        && (allowed.contains(other)
                            || !matches!(other, Scope::OfflineAccess | Scope::OnlineAccess))
                }
            }
        })
        .map(str::to_string)
        .collect()
}

impl AuthServer {
    /// Loads the signing keys (making the first one, or a new one when the newest is due for
    /// rotation) and the revocation list.
    pub async fn start(store: Store, settings: Settings) -> Result<AuthServer> {
        let server = AuthServer {
            store,
            settings,
            keys: KeyRing::default(),
            revoked: RwLock::new(HashMap::new()),
        };
        server.maintain().await?;
        Ok(server)
    }

    /// The periodic upkeep: rotate the signing key when due, reload keys and revocations
    /// (another instance may have changed them), forget what has expired.
    pub async fn maintain(&self) -> Result<()> {
        self.store.auth_purge_expired().await?;
        self.load_keys().await?;
        let due = self
            .keys
            .newest_created()
            .is_none_or(|c| now() - c >= self.settings.key_rotation_seconds);
        if due {
            self.rotate_keys().await?;
        }
        let revoked = self
            .store
            .auth_list(Kind::Revoked)
            .await?
            .into_iter()
            .map(|(jti, body)| (jti, body["exp"].as_i64().unwrap_or(0)))
            .collect();
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = revoked;
        Ok(())
    }

    async fn load_keys(&self) -> Result<()> {
        let keys = self
            .store
            .auth_list(Kind::SigningKey)
            .await?
            .iter()
            .filter_map(|(_, body)| SigningKey::from_stored(body))
            .collect();
        self.keys.set(keys);
        Ok(())
    }

    /// Makes a new signing key, which signs from now on; older keys stay published until
    /// the tokens they signed have expired.
    pub async fn rotate_keys(&self) -> Result<String> {
        // Strictly newer than the newest, even within the same second.
        let created = now().max(self.keys.newest_created().map_or(0, |c| c + 1));
        let (key, stored) = SigningKey::generate(created);
        // Trusted for a rotation period plus a day after the next key takes over.
        let expires = created + 2 * self.settings.key_rotation_seconds + 86_400;
        self.store
            .auth_put(Kind::SigningKey, &key.kid, &stored, Some(expires))
            .await?;
        self.load_keys().await?;
        Ok(key.kid)
    }

    // ----- Bearer tokens on FHIR requests -----

    /// Verifies a bearer token: signature by one of Hearth's keys, audience, issuer, expiry,
    /// not revoked. The reason of a refusal is for the `WWW-Authenticate` header.
    pub async fn authenticate(&self, token: &str) -> std::result::Result<Principal, String> {
        let claims = self.verify_access_token(token, true).await?;
        let scopes = scope::parse_list(&claims.scope).map_err(|e| e.to_string())?;
        Ok(Principal {
            subject: claims.sub,
            role: claims.role,
            fhir_user: claims.fhir_user,
            client_id: claims.client_id,
            scopes,
            patient: claims.patient,
        })
    }

    async fn verify_access_token(
        &self,
        token: &str,
        check_expiry: bool,
    ) -> std::result::Result<AccessClaims, String> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[&self.settings.fhir_base]);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = check_expiry;
        validation.leeway = 0;
        let claims = match self.keys.verify::<AccessClaims>(token, validation.clone()) {
            // Another instance may have rotated the key: look again once.
            Err(Refused::UnknownKey) => {
                self.load_keys()
                    .await
                    .map_err(|e| e.message().to_string())?;
                self.keys.verify::<AccessClaims>(token, validation)
            }
            other => other,
        }
        .map_err(|r| match r {
            Refused::UnknownKey => "the token is signed by an unknown key".to_string(),
            Refused::Invalid(why) => format!("the token is not valid: {why}"),
        })?;
        if self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&claims.jti)
        {
            return Err("the token has been revoked".into());
        }
        Ok(claims)
    }

    fn issue_access_token(&self, grant: &Grant, subject: &str) -> (String, AccessClaims) {
        let iat = now();
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: subject.to_string(),
            aud: self.settings.fhir_base.clone(),
            exp: iat + self.settings.access_token_seconds,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: grant.scope.clone(),
            client_id: grant.client_id.clone(),
            role: grant.role,
            fhir_user: grant.fhir_user.clone(),
            patient: grant.patient.clone(),
        };
        (self.keys.sign(&claims), claims)
    }

    /// Mints a token without a login, for an operator on the server's machine
    /// (`hearth token`): for a user, or for a client alone as a backend service.
    pub async fn mint(
        &self,
        client_id: &str,
        username: Option<&str>,
        scope: &str,
        patient: Option<&str>,
    ) -> Result<Value> {
        let client = self
            .client(client_id)
            .await?
            .ok_or_else(|| crate::Error::bad_request(format!("no client '{client_id}'")))?;
        let (role, fhir_user, own_patient) = match username {
            Some(u) => {
                let user = self
                    .user(u)
                    .await?
                    .ok_or_else(|| crate::Error::bad_request(format!("no user '{u}'")))?;
                (user.role, user.fhir_user.clone(), user.own_patient())
            }
            None => (Role::System, None, None),
        };
        let granted = grantable(scope, &client, username.is_none());
        if granted.is_empty() {
            return Err(crate::Error::bad_request(format!(
                "client '{client_id}' is not registered for any of the scopes '{scope}'"
            )));
        }
        let grant = Grant {
            client_id: client_id.to_string(),
            username: username.map(str::to_string),
            role,
            fhir_user,
            scope: granted.join(" "),
            patient: own_patient.or(patient.map(str::to_string)),
            nonce: None,
        };
        self.token_response(&grant, false)
            .await
            .map_err(|e| crate::Error::bad_request(e.description))
    }

    // ----- Accounts -----

    pub async fn user(&self, username: &str) -> Result<Option<User>> {
        Ok(self
            .store
            .auth_get(Kind::User, username)
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    pub async fn client(&self, client_id: &str) -> Result<Option<Client>> {
        Ok(self
            .store
            .auth_get(Kind::Client, client_id)
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn save_user(&self, user: &User) -> Result<()> {
        let body = serde_json::to_value(user).expect("a User serialises");
        self.store
            .auth_put(Kind::User, &user.username, &body, None)
            .await
    }

    /// Adds a user; false if the name is taken.
    pub async fn add_user(&self, user: &User) -> Result<bool> {
        let body = serde_json::to_value(user).expect("a User serialises");
        self.store
            .auth_insert(Kind::User, &user.username, &body, None)
            .await
    }

    pub async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<bool> {
        match self.user(username).await? {
            Some(mut u) => {
                u.disabled = disabled;
                u.failed_logins = 0;
                u.locked_until = None;
                self.save_user(&u).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        Ok(self
            .store
            .auth_list(Kind::User)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_value(v).ok())
            .collect())
    }

    /// Registers or replaces a client.
    pub async fn put_client(&self, client: &Client) -> Result<()> {
        let body = serde_json::to_value(client).expect("a Client serialises");
        self.store
            .auth_put(Kind::Client, &client.client_id, &body, None)
            .await
    }

    pub async fn remove_client(&self, client_id: &str) -> Result<bool> {
        self.store.auth_delete(Kind::Client, client_id).await
    }

    pub async fn clients(&self) -> Result<Vec<Client>> {
        Ok(self
            .store
            .auth_list(Kind::Client)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_value(v).ok())
            .collect())
    }

    /// Records an EHR launch context; the app names it with `launch=<id>`.
    pub async fn create_launch(&self, patient: &str) -> Result<String> {
        let id = random_secret();
        self.store
            .auth_put(
                Kind::Launch,
                &digest(&id),
                &json!({"patient": patient}),
                Some(now() + PENDING_SECONDS),
            )
            .await?;
        Ok(id)
    }

    // ----- The authorization code flow -----

    /// Checks an authorize request and records it as a pending login; answers its id.
    pub async fn authorize(
        &self,
        p: &AuthorizeParams,
    ) -> std::result::Result<String, AuthorizeError> {
        let page = |m: &str| AuthorizeError::Page(m.to_string());
        let client_id = p
            .client_id
            .as_deref()
            .ok_or_else(|| page("client_id is missing"))?;
        let client = self
            .client(client_id)
            .await
            .map_err(|e| page(&e.message().to_string()))?
            .ok_or_else(|| page("this application is not registered"))?;
        let redirect_uri = p
            .redirect_uri
            .as_deref()
            .ok_or_else(|| page("redirect_uri is missing"))?;
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
            return Err(page(
                "the redirect_uri is not registered for this application",
            ));
        }
        // From here on errors go back to the app. RFC 6749 section 4.1.2.1.
        let back = |error: &str, description: &str| {
            AuthorizeError::Redirect(redirect_with(
                redirect_uri,
                &[
                    ("error", error),
                    ("error_description", description),
                    ("state", p.state.as_deref().unwrap_or("")),
                ],
            ))
        };
        if p.response_type.as_deref() != Some("code") {
            return Err(back(
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        let Some(state) = p.state.as_deref().filter(|s| !s.is_empty()) else {
            return Err(back("invalid_request", "state is required"));
        };
        if p.aud.as_deref().map(|a| a.trim_end_matches('/'))
            != Some(self.settings.fhir_base.as_str())
        {
            return Err(back(
                "invalid_request",
                "aud must be this server's FHIR base URL",
            ));
        }
        let challenge = match (
            p.code_challenge.as_deref(),
            p.code_challenge_method.as_deref(),
        ) {
            (Some(c), Some("S256")) if c.len() == 43 => c,
            _ => {
                return Err(back(
                    "invalid_request",
                    "PKCE is required: code_challenge with code_challenge_method=S256",
                ))
            }
        };
        let requested = p.scope.as_deref().unwrap_or("");
        if let Err(e) = scope::parse_list(requested) {
            return Err(back("invalid_scope", &e.to_string()));
        }
        let granted = grantable(requested, &client, false);
        let useful = granted
            .iter()
            .any(|s| matches!(scope::parse(s), Ok(Scope::Resource(_)) | Ok(Scope::OpenId)));
        if !useful {
            return Err(back(
                "invalid_scope",
                "none of the requested scopes is registered for this application",
            ));
        }
        let launch_patient = match p.launch.as_deref() {
            None => None,
            Some(launch) => {
                let ctx = self
                    .store
                    .auth_get(Kind::Launch, &digest(launch))
                    .await
                    .map_err(|e| page(&e.message().to_string()))?;
                match ctx {
                    Some(c) => c["patient"].as_str().map(str::to_string),
                    None => return Err(back("invalid_request", "unknown or expired launch")),
                }
            }
        };
        let pending = Pending {
            client_id: client_id.to_string(),
            client_name: client.name.clone(),
            redirect_uri: redirect_uri.to_string(),
            scope: granted.join(" "),
            state: state.to_string(),
            code_challenge: challenge.to_string(),
            nonce: p.nonce.clone(),
            launch_patient,
            username: None,
        };
        let id = random_secret();
        self.store
            .auth_put(
                Kind::Pending,
                &digest(&id),
                &serde_json::to_value(&pending).expect("Pending serialises"),
                Some(now() + PENDING_SECONDS),
            )
            .await
            .map_err(|e| page(&e.message().to_string()))?;
        Ok(id)
    }

    pub async fn pending(&self, id: &str) -> Result<Option<Pending>> {
        Ok(self
            .store
            .auth_get(Kind::Pending, &digest(id))
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Signs the user in to a pending login. The error is what the login page says: the
    /// same words whatever was wrong, except for a locked account.
    pub async fn login(
        &self,
        pending_id: &str,
        username: &str,
        password: &str,
        totp: &str,
    ) -> Result<std::result::Result<(), String>> {
        let Some(mut pending) = self.pending(pending_id).await? else {
            return Ok(Err(
                "this sign-in has expired; start again from the app".into()
            ));
        };
        let wrong = || Ok(Err("the user name, password or code is wrong".to_string()));
        let Some(mut user) = self.user(username).await? else {
            // Spend the same time as a real check so that names cannot be probed.
            accounts::verify_secret(&accounts::hash_secret("x"), password);
            return wrong();
        };
        let t = now();
        if user.locked_until.is_some_and(|until| until > t) {
            return Ok(Err(
                "this account is locked after too many failed sign-ins; try again later".into(),
            ));
        }
        let mut ok = !user.disabled && accounts::verify_secret(&user.password_hash, password);
        if ok && user.needs_totp() {
            let step = user
                .totp_secret
                .as_deref()
                .and_then(|s| accounts::totp_step(s, totp, t as u64));
            ok = match step {
                Some(step) if user.totp_last_step.is_none_or(|last| step > last) => {
                    user.totp_last_step = Some(step);
                    true
                }
                _ => false,
            };
        }
        if !ok {
            user.failed_logins += 1;
            if user.failed_logins >= self.settings.max_failed_logins {
                user.locked_until = Some(t + self.settings.lockout_seconds);
                user.failed_logins = 0;
                tracing::warn!("an account was locked after repeated failed sign-ins");
            }
            self.save_user(&user).await?;
            return wrong();
        }
        user.failed_logins = 0;
        user.locked_until = None;
        self.save_user(&user).await?;
        pending.username = Some(user.username.clone());
        self.store
            .auth_put(
                Kind::Pending,
                &digest(pending_id),
                &serde_json::to_value(&pending).expect("Pending serialises"),
                Some(t + PENDING_SECONDS),
            )
            .await?;
        Ok(Ok(()))
    }

    /// What the consent page of a signed-in pending login shows.
    pub async fn consent_view(&self, pending: &Pending) -> Result<Option<ConsentView>> {
        let Some(user) = self.user(pending.username.as_deref().unwrap_or("")).await? else {
            return Ok(None);
        };
        let scopes = scope::parse_list(&pending.scope).unwrap_or_default();
        let wants_patient = scopes.contains(&Scope::LaunchPatient);
        let patient = user.own_patient().or(pending.launch_patient.clone());
        let mut words: Vec<String> = scopes
            .iter()
            .filter_map(|s| match s {
                Scope::Resource(r) => Some(r.describe()),
                Scope::OpenId | Scope::FhirUser => Some("Know who you are".to_string()),
                Scope::OfflineAccess => {
                    Some("Keep access after you close the app, until you revoke it".to_string())
                }
                Scope::OnlineAccess => Some("Keep access while you are signed in".to_string()),
                _ => None,
            })
            .collect();
        words.dedup();
        Ok(Some(ConsentView {
            client_name: pending.client_name.clone(),
            scopes: words,
            needs_patient: wants_patient && patient.is_none(),
            patient,
        }))
    }

    /// The user's answer on the consent page: the redirect back to the app, with a code or
    /// with `access_denied`. `Err` is a message for the page (a patient to pick).
    pub async fn consent(
        &self,
        pending_id: &str,
        approve: bool,
        picked_patient: Option<&str>,
    ) -> Result<std::result::Result<String, String>> {
        let taken = self
            .store
            .auth_take(Kind::Pending, &digest(pending_id))
            .await?;
        let Some(pending) = taken.and_then(|v| serde_json::from_value::<Pending>(v).ok()) else {
            return Ok(Err(
                "this sign-in has expired; start again from the app".into()
            ));
        };
        let signed_in = match pending.username.as_deref() {
            Some(u) => self.user(u).await?.filter(|u| !u.disabled),
            None => None,
        };
        let Some(user) = signed_in else {
            return Ok(Err("sign in first".into()));
        };
        if !approve {
            return Ok(Ok(redirect_with(
                &pending.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the user declined"),
                    ("state", &pending.state),
                ],
            )));
        }
        let scopes = scope::parse_list(&pending.scope).unwrap_or_default();
        let mut patient = user.own_patient().or(pending.launch_patient.clone());
        if scopes.contains(&Scope::LaunchPatient) && patient.is_none() {
            let picked = picked_patient
                .map(|p| p.trim().trim_start_matches("Patient/"))
                .filter(|p| crate::fhir::id::is_valid_id(p));
            let exists = match picked {
                Some(p) => {
                    use crate::store::ResourceStore;
                    self.store
                        .read("Patient", p)
                        .await?
                        .is_some_and(|v| !v.is_deleted())
                }
                None => false,
            };
            if !exists {
                // Put the login back so that the user can pick again.
                self.store
                    .auth_put(
                        Kind::Pending,
                        &digest(pending_id),
                        &serde_json::to_value(&pending).expect("Pending serialises"),
                        Some(now() + PENDING_SECONDS),
                    )
                    .await?;
                return Ok(Err("choose an existing patient".into()));
            }
            patient = picked.map(str::to_string);
        }
        let grant = Grant {
            client_id: pending.client_id.clone(),
            username: Some(user.username.clone()),
            role: user.role,
            fhir_user: user.fhir_user.clone(),
            scope: pending.scope.clone(),
            patient,
            nonce: pending.nonce.clone(),
        };
        let code = random_secret();
        self.store
            .auth_put(
                Kind::Code,
                &digest(&code),
                &json!({
                    "grant": grant,
                    "redirect_uri": pending.redirect_uri,
                    "code_challenge": pending.code_challenge,
                }),
                Some(now() + CODE_SECONDS),
            )
            .await?;
        Ok(Ok(redirect_with(
            &pending.redirect_uri,
            &[("code", &code), ("state", &pending.state)],
        )))
    }

    // ----- The token endpoint -----

    /// `POST /auth/token`. `basic` is the client's HTTP Basic credentials, if sent.
    pub async fn token(
        &self,
        form: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> OAuthResult<Value> {
        let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
        match get("grant_type") {
            Some("authorization_code") => {
                let client = self.authenticate_client(form, basic).await?;
                let code = get("code")
                    .ok_or_else(|| OAuthError::new("invalid_request", "code is missing"))?;
                let stored = self
                    .store
                    .auth_take(Kind::Code, &digest(code))
                    .await?
                    .ok_or_else(|| {
                        OAuthError::new(
                            "invalid_grant",
                            "the code is unknown, expired or already used",
                        )
                    })?;
                let grant: Grant = serde_json::from_value(stored["grant"].clone())
                    .map_err(|_| OAuthError::new("invalid_grant", "the code is damaged"))?;
                if grant.client_id != client.client_id {
                    return Err(OAuthError::new(
                        "invalid_grant",
                        "the code was issued to another client",
                    ));
                }
                if get("redirect_uri") != stored["redirect_uri"].as_str() {
                    return Err(OAuthError::new(
                        "invalid_grant",
                        "redirect_uri differs from the authorize request's",
                    ));
                }
                let challenge = stored["code_challenge"].as_str().unwrap_or("");
                if !get("code_verifier").is_some_and(|v| pkce_matches(v, challenge)) {
                    return Err(OAuthError::new(
                        "invalid_grant",
                        "the PKCE code_verifier does not match the code_challenge",
                    ));
                }
                self.token_response(&grant, true).await
            }
            Some("refresh_token") => {
                let client = self.authenticate_client(form, basic).await?;
                let token = get("refresh_token").ok_or_else(|| {
                    OAuthError::new("invalid_request", "refresh_token is missing")
                })?;
                let stored = self
                    .store
                    .auth_take(Kind::Refresh, &digest(token))
                    .await?
                    .ok_or_else(|| {
                        OAuthError::new(
                            "invalid_grant",
                            "the refresh token is unknown, expired, revoked or already used",
                        )
                    })?;
                let mut grant: Grant = serde_json::from_value(stored["grant"].clone())
                    .map_err(|_| OAuthError::new("invalid_grant", "the token is damaged"))?;
                if grant.client_id != client.client_id {
                    return Err(OAuthError::new(
                        "invalid_grant",
                        "the refresh token was issued to another client",
                    ));
                }
                if let Some(u) = &grant.username {
                    if !self.user(u).await?.is_some_and(|u| !u.disabled) {
                        return Err(OAuthError::new("invalid_grant", "the user is disabled"));
                    }
                }
                // A refresh may narrow the scopes, never widen them. RFC 6749 section 6.
                if let Some(asked) = get("scope") {
                    let had: Vec<&str> = grant.scope.split_whitespace().collect();
                    if let Some(extra) = asked.split_whitespace().find(|s| !had.contains(s)) {
                        return Err(OAuthError::new(
                            "invalid_scope",
                            format!("'{extra}' was not granted originally"),
                        ));
                    }
                    grant.scope = asked.split_whitespace().collect::<Vec<_>>().join(" ");
                }
                grant.nonce = None;
                self.token_response(&grant, true).await
            }
            Some("client_credentials") => {
                let client = self.authenticate_client(form, basic).await?;
                if client.kind != ClientKind::ConfidentialAsymmetric {
                    return Err(OAuthError::new(
                        "unauthorized_client",
                        "client_credentials is for backend services that sign a client assertion",
                    ));
                }
                let requested = get("scope").unwrap_or("");
                scope::parse_list(requested)
                    .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
                let granted = grantable(requested, &client, true);
                if granted.is_empty() {
                    return Err(OAuthError::new(
                        "invalid_scope",
                        "none of the requested system scopes is registered for this client",
                    ));
                }
                let grant = Grant {
                    client_id: client.client_id.clone(),
                    username: None,
                    role: Role::System,
                    fhir_user: None,
                    scope: granted.join(" "),
                    patient: None,
                    nonce: None,
                };
                self.token_response(&grant, false).await
            }
            Some(other) => Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant_type '{other}' is not supported"),
            )),
            None => Err(OAuthError::new("invalid_request", "grant_type is missing")),
        }
    }

    async fn token_response(&self, grant: &Grant, may_refresh: bool) -> OAuthResult<Value> {
        let subject = grant.username.clone().unwrap_or(grant.client_id.clone());
        let (access, claims) = self.issue_access_token(grant, &subject);
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.settings.access_token_seconds,
            "scope": grant.scope,
        });
        let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
        if let Some(p) = &grant.patient {
            body["patient"] = json!(p);
            body["need_patient_banner"] = json!(grant.role != Role::Patient);
        }
        let offline = scopes.contains(&"offline_access");
        if may_refresh && (offline || scopes.contains(&"online_access")) {
            let refresh = random_secret();
            let lifetime = if offline {
                self.settings.refresh_token_seconds
            } else {
                self.settings.online_refresh_seconds
            };
            self.store
                .auth_put(
                    Kind::Refresh,
                    &digest(&refresh),
                    &json!({"grant": grant, "exp": now() + lifetime}),
                    Some(now() + lifetime),
                )
                .await?;
            body["refresh_token"] = json!(refresh);
        }
        if scopes.contains(&"openid")
            && (scopes.contains(&"fhirUser") || scopes.contains(&"profile"))
        {
            if let Some(fhir_user) = &grant.fhir_user {
                let mut id = json!({
                    "iss": self.settings.issuer,
                    "sub": subject,
                    "aud": grant.client_id,
                    "exp": claims.exp,
                    "iat": claims.iat,
                    "fhirUser": format!("{}/{fhir_user}", self.settings.fhir_base),
                });
                if let Some(n) = &grant.nonce {
                    id["nonce"] = json!(n);
                }
                body["id_token"] = json!(self.keys.sign(&id));
            }
        }
        Ok(body)
    }

    /// Client authentication at the token, introspection and revocation endpoints:
    /// `private_key_jwt` for asymmetric clients, Basic or form secret for symmetric ones,
    /// the `client_id` alone for public ones.
    async fn authenticate_client(
        &self,
        form: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> OAuthResult<Client> {
        let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
        if let Some(assertion) = get("client_assertion") {
            if get("client_assertion_type")
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return Err(OAuthError::new(
                    "invalid_request",
                    "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
            }
            return self.verify_assertion(assertion).await;
        }
        let (client_id, secret) = match basic {
            Some((id, secret)) => (id, Some(secret)),
            None => (
                get("client_id")
                    .ok_or_else(|| OAuthError::new("invalid_client", "client_id is missing"))?
                    .to_string(),
                get("client_secret").map(str::to_string),
            ),
        };
        let client = self
            .client(&client_id)
            .await?
            .ok_or_else(|| OAuthError::new("invalid_client", "unknown client"))?;
        match client.kind {
            ClientKind::Public => Ok(client),
            ClientKind::ConfidentialSymmetric => {
                let ok = match (&client.secret_hash, secret) {
                    (Some(hash), Some(secret)) => accounts::verify_secret(hash, &secret),
                    _ => false,
                };
                if ok {
                    Ok(client)
                } else {
                    Err(OAuthError::new(
                        "invalid_client",
                        "client authentication failed",
                    ))
                }
            }
            ClientKind::ConfidentialAsymmetric => Err(OAuthError::new(
                "invalid_client",
                "this client authenticates with a signed client_assertion",
            )),
        }
    }

    /// A `private_key_jwt` client assertion: RS384 or ES384, signed by a key of the client's
    /// registered JWKS, `iss` = `sub` = client id, `aud` = the token URL, expiring within five
    /// minutes, with a `jti` never seen before.
    /// <https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html>
    async fn verify_assertion(&self, assertion: &str) -> OAuthResult<Client> {
        let refuse = |why: &str| OAuthError::new("invalid_client", why.to_string());
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| refuse("the client assertion is not a JWT"))?;
        if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
            return Err(refuse("client assertions are signed with RS384 or ES384"));
        }
        let unverified: Value = {
            let payload = assertion.split('.').nth(1).unwrap_or("");
            URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| refuse("the client assertion's claims are not JSON"))?
        };
        let client_id = unverified["iss"]
            .as_str()
            .ok_or_else(|| refuse("the client assertion has no iss"))?;
        let client = self
            .client(client_id)
            .await?
            .filter(|c| c.kind == ClientKind::ConfidentialAsymmetric)
            .ok_or_else(|| refuse("unknown client"))?;
        let jwks: jsonwebtoken::jwk::JwkSet = client
            .jwks
            .clone()
            .and_then(|j| serde_json::from_value(j).ok())
            .ok_or_else(|| refuse("the client has no usable JWKS"))?;
        let candidates: Vec<&jsonwebtoken::jwk::Jwk> = match &header.kid {
            Some(kid) => jwks.find(kid).into_iter().collect(),
            None => jwks.keys.iter().collect(),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[self.settings.token_url()]);
        validation.set_issuer(&[client_id]);
        validation.sub = Some(client_id.to_string());
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.leeway = 0;
        let claims: Value = candidates
            .iter()
            .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
            .find_map(|key| jsonwebtoken::decode::<Value>(assertion, &key, &validation).ok())
            .map(|d| d.claims)
            .ok_or_else(|| {
                refuse("the client assertion's signature, audience, issuer or expiry is wrong")
            })?;
        let exp = claims["exp"].as_i64().unwrap_or(0);
        if exp > now() + MAX_ASSERTION_SECONDS {
            return Err(refuse("a client assertion expires within five minutes"));
        }
        let jti = claims["jti"]
            .as_str()
            .filter(|j| !j.is_empty())
            .ok_or_else(|| refuse("the client assertion has no jti"))?;
        let fresh = self
            .store
            .auth_insert(
                Kind::AssertionId,
                &digest(&format!("{client_id} {jti}")),
                &json!({}),
                Some(exp + 1),
            )
            .await?;
        if !fresh {
            tracing::warn!("a replayed client assertion was refused");
            return Err(refuse(
                "this client assertion was already used (jti replay)",
            ));
        }
        Ok(client)
    }

    // ----- Introspection and revocation -----

    /// `POST /auth/introspect` (RFC 7662). The caller must be an authenticated client or
    /// hold a valid access token; `Err` means it is neither.
    pub async fn introspect(
        &self,
        form: &HashMap<String, String>,
        basic: Option<(String, String)>,
        bearer: Option<&str>,
    ) -> OAuthResult<Value> {
        let caller_ok = match bearer {
            Some(t) => self.authenticate(t).await.is_ok(),
            None => self
                .authenticate_client(form, basic)
                .await
                .is_ok_and(|c| c.kind != ClientKind::Public),
        };
        if !caller_ok {
            return Err(OAuthError::new(
                "invalid_client",
                "introspection needs client authentication or a bearer token",
            ));
        }
        let token = form.get("token").map(String::as_str).unwrap_or("");
        if let Ok(c) = self.verify_access_token(token, true).await {
            let mut body = json!({
                "active": true,
                "scope": c.scope,
                "client_id": c.client_id,
                "sub": c.sub,
                "exp": c.exp,
                "iat": c.iat,
                "iss": c.iss,
                "aud": c.aud,
                "token_type": "Bearer",
            });
            if let Some(p) = c.patient {
                body["patient"] = json!(p);
            }
            if let Some(u) = c.fhir_user {
                body["fhirUser"] = json!(format!("{}/{u}", self.settings.fhir_base));
            }
            return Ok(body);
        }
        if let Some(r) = self.store.auth_get(Kind::Refresh, &digest(token)).await? {
            return Ok(json!({
                "active": true,
                "scope": r["grant"]["scope"],
                "client_id": r["grant"]["client_id"],
                "exp": r["exp"],
                "token_type": "refresh_token",
            }));
        }
        Ok(json!({"active": false}))
    }

    /// `POST /auth/revoke` (RFC 7009): a refresh token is deleted, an access token's id is
    /// refused from now on. Unknown tokens are not an error.
    pub async fn revoke(
        &self,
        form: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> OAuthResult<()> {
        let client = self.authenticate_client(form, basic).await?;
        let token = form.get("token").map(String::as_str).unwrap_or("");
        if let Some(r) = self.store.auth_get(Kind::Refresh, &digest(token)).await? {
            if r["grant"]["client_id"] == client.client_id.as_str() {
                self.store
                    .auth_delete(Kind::Refresh, &digest(token))
                    .await?;
            }
            return Ok(());
        }
        if let Ok(c) = self.verify_access_token(token, false).await {
            if c.client_id == client.client_id && c.exp > now() {
                self.store
                    .auth_put(Kind::Revoked, &c.jti, &json!({"exp": c.exp}), Some(c.exp))
                    .await?;
                self.revoked
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(c.jti, c.exp);
            }
        }
        Ok(())
    }
}

/// `uri` with these query parameters added.
fn redirect_with(uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", ser.finish())
}

/// `Authorization: Basic base64(id:secret)` (RFC 6749 section 2.3.1: both parts
/// form-urlencoded).
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!pkce_matches("short", "x"));
    }

    fn client(scope: &str) -> Client {
        Client {
            client_id: "app".into(),
            name: "App".into(),
            kind: ClientKind::Public,
            secret_hash: None,
            redirect_uris: vec![],
            scope: scope.into(),
            jwks: None,
        }
    }

    #[test]
    fn grants_only_what_the_client_is_registered_for() {
        let c = client("patient/*.rs openid fhirUser offline_access launch/patient");
        assert_eq!(
            grantable(
                "patient/Observation.rs patient/Patient.cruds user/*.rs openid fhirUser launch/patient system/*.rs",
                &c,
                false
            ),
            vec!["patient/Observation.rs", "openid", "fhirUser", "launch/patient"]
        );
        let svc = client("system/*.rs");
        assert_eq!(
            grantable(
                "system/Patient.rs system/Patient.c patient/*.rs",
                &svc,
                true
            ),
            vec!["system/Patient.rs"]
        );
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let h = format!("Basic {}", STANDARD.encode("my%20app:s%3Acret"));
        assert_eq!(
            basic_credentials(&h),
            Some(("my app".to_string(), "s:cret".to_string()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
    }

    #[test]
    fn redirects_keep_existing_queries() {
        assert_eq!(
            redirect_with("https://app/cb?x=1", &[("code", "a b"), ("state", "s")]),
            "https://app/cb?x=1&code=a+b&state=s"
        );
    }
}

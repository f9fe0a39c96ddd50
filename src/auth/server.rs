//! Hearth as its own SMART on FHIR authorization server. This file holds its state (settings,
//! signing keys, revocations), the access tokens it issues and checks, and the accounts; the
//! flows are in `login` (authorize, sign-in, consent), `token` (grants, introspection,
//! revocation) and `assertion` (backend services' signed client assertions).
//! <https://hl7.org/fhir/smart-app-launch/app-launch.html>,
//! <https://hl7.org/fhir/smart-app-launch/backend-services.html>,
//! <https://www.rfc-editor.org/rfc/rfc6749>, RFC 7636 (PKCE), RFC 7009, RFC 7662.
//!
//! What is stored (`store::auth`): users, clients and signing keys; pending logins, codes
//! and refresh tokens (by their SHA-256, never the secret itself); assertion ids until they
//! expire; revoked access-token ids until the tokens expire.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::accounts::{Client, User};
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

/// What an authorization code or refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Grant {
    pub(super) client_id: String,
    /// The signed-in user, absent for backend services.
    pub(super) username: Option<String>,
    pub(super) role: Role,
    pub(super) fhir_user: Option<String>,
    /// The granted scopes, space-separated as requested.
    pub(super) scope: String,
    pub(super) patient: Option<String>,
    pub(super) nonce: Option<String>,
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

pub struct AuthServer {
    pub(super) store: Store,
    pub settings: Settings,
    pub keys: KeyRing,
    /// Revoked access tokens (`jti` → expiry), refreshed from the database.
    pub(super) revoked: RwLock<HashMap<String, i64>>,
    /// Tokens whose signature was verified already: the principal, its expiry and `jti`.
    /// Verifying an ES256 signature costs more than a whole read; a client sends the same
    /// token for its whole lifetime.
    verified: RwLock<HashMap<String, (Principal, i64, String)>>,
}

/// The most verified tokens remembered (the cache is emptied when full).
const VERIFIED_TOKENS: usize = 10_000;

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// 256 random bits, URL-safe.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How secrets are stored: their SHA-256, hex.
pub(super) fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The requested scopes this client may be given, as their original strings. System scopes
/// only ever go to backend services, and user scopes never do.
pub(super) fn grantable(requested: &str, client: &Client, backend: bool) -> Vec<String> {
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
            verified: RwLock::new(HashMap::new()),
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
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        if let Some((principal, exp, jti)) = remembered {
            if exp <= now() {
                return Err("the token has expired".into());
            }
            if self.is_revoked(&jti) {
                return Err("the token has been revoked".into());
            }
            return Ok(principal);
        }
        let claims = self.verify_access_token(token, true).await?;
        let scopes = scope::parse_list(&claims.scope).map_err(|e| e.to_string())?;
        let principal = Principal {
            subject: claims.sub,
            role: claims.role,
            fhir_user: claims.fhir_user,
            client_id: claims.client_id,
            scopes,
            patient: claims.patient,
        };
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(
            token.to_string(),
            (principal.clone(), claims.exp, claims.jti),
        );
        Ok(principal)
    }

    fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(jti)
    }

    pub(super) async fn verify_access_token(
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
        if self.is_revoked(&claims.jti) {
            return Err("the token has been revoked".into());
        }
        Ok(claims)
    }

    pub(super) fn issue_access_token(
        &self,
        grant: &Grant,
        subject: &str,
    ) -> (String, AccessClaims) {
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

    pub(super) async fn save_user(&self, user: &User) -> Result<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::accounts::ClientKind;

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
}

//! The token endpoint's grants (authorization code with PKCE, rotating refresh tokens,
//! client credentials), client authentication, introspection and revocation.
//! <https://www.rfc-editor.org/rfc/rfc6749#section-4.1.3>, RFC 7636 (PKCE), RFC 7662, RFC 7009,
//! <https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-access-token>.

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::accounts::{self, Client, ClientKind};
use super::policy::{Principal, Role};
use super::scope;
use super::server::{digest, grantable, now, random_secret, AuthServer, Grant};
use crate::store::auth::Kind;

/// An OAuth2 error response. <https://www.rfc-editor.org/rfc/rfc6749#section-5.2>
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub(super) fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
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

pub(super) type OAuthResult<T> = std::result::Result<T, OAuthError>;

/// PKCE S256: BASE64URL(SHA256(verifier)) == challenge. RFC 7636 section 4.6.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    valid_verifier && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

impl AuthServer {
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
                    if self.user(u).await?.is_none_or(|u| u.disabled) {
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

    pub(super) async fn token_response(
        &self,
        grant: &Grant,
        may_refresh: bool,
    ) -> OAuthResult<Value> {
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

    // ----- Introspection and revocation -----

    /// `POST /auth/introspect` (RFC 7662). The caller must be an authenticated client or
    /// hold a valid access token; `Err` means it is neither.
    pub async fn introspect(
        &self,
        form: &HashMap<String, String>,
        basic: Option<(String, String)>,
        bearer: Option<&str>,
    ) -> OAuthResult<Introspection> {
        let refused = || {
            OAuthError::new(
                "invalid_client",
                "introspection needs client authentication or a bearer token",
            )
        };
        let caller = match bearer {
            Some(t) => Some(self.authenticate(t).await.map_err(|_| refused())?),
            None => {
                self.authenticate_client(form, basic)
                    .await
                    .ok()
                    .filter(|c| c.kind != ClientKind::Public)
                    .ok_or_else(refused)?;
                None
            }
        };
        let answer = |answer: Value| Introspection {
            answer,
            caller: caller.clone(),
            user: None,
            patient: None,
        };
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
            if let Some(p) = &c.patient {
                body["patient"] = json!(p);
            }
            if let Some(u) = &c.fhir_user {
                body["fhirUser"] = json!(format!("{}/{u}", self.settings.fhir_base));
            }
            return Ok(Introspection {
                user: c.fhir_user,
                patient: c.patient,
                ..answer(body)
            });
        }
        if let Some(r) = self.store.auth_get(Kind::Refresh, &digest(token)).await? {
            return Ok(answer(json!({
                "active": true,
                "scope": r["grant"]["scope"],
                "client_id": r["grant"]["client_id"],
                "exp": r["exp"],
                "token_type": "refresh_token",
            })));
        }
        Ok(answer(json!({"active": false})))
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

/// An introspection's answer (RFC 7662), with what the audit trail records of it.
#[derive(Debug)]
pub struct Introspection {
    /// The JSON answer.
    pub answer: Value,
    /// The caller, when it asked with a bearer token (verified once, here).
    pub caller: Option<Principal>,
    /// What an active access token's answer disclosed: its user (`fhirUser`, as
    /// `Practitioner/7`) and its patient context.
    pub user: Option<String>,
    pub patient: Option<String>,
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

    #[test]
    fn basic_credentials_are_decoded() {
        let h = format!("Basic {}", STANDARD.encode("my%20app:s%3Acret"));
        assert_eq!(
            basic_credentials(&h),
            Some(("my app".to_string(), "s:cret".to_string()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
    }
}

//! The authorization code flow up to the code: the authorize request, the login (password,
//! TOTP, lockout) and the consent, and EHR launch contexts.
//! <https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code>,
//! RFC 6749 section 4.1.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::accounts::{self, User};
use super::scope::{self, Scope};
use super::server::{digest, grantable, now, random_secret, AuthServer, Grant};
use crate::error::Result;
use crate::store::auth::Kind;

/// How long a login may sit between the authorize request and the consent.
const PENDING_SECONDS: i64 = 600;
/// Authorization codes are good for one minute (RFC 6749 section 4.1.2 recommends at most 10).
const CODE_SECONDS: i64 = 60;

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

/// A sign-in attempt: the account the typed name belongs to, if any (for the audit trail),
/// and why it was refused, if it was (for the login page).
#[derive(Debug)]
pub struct SignIn {
    pub user: Option<User>,
    pub refusal: Option<String>,
}

/// A user's answer on the consent page: where to send the browser, and who decided what
/// (for the audit trail).
#[derive(Debug)]
pub struct Decision {
    /// Back to the app, with a code or with `access_denied`.
    pub redirect: String,
    pub client_id: String,
    pub username: String,
    pub fhir_user: Option<String>,
    /// The scopes granted; `None` when the user declined.
    pub granted: Option<String>,
    /// The patient in context (the user's own, the EHR launch's, or the one picked).
    pub patient: Option<String>,
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

impl AuthServer {
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
            .map_err(|e| page(e.message()))?
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
                    .map_err(|e| page(e.message()))?;
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
            .map_err(|e| page(e.message()))?;
        Ok(id)
    }

    pub async fn pending(&self, id: &str) -> Result<Option<Pending>> {
        Ok(self
            .store
            .auth_get(Kind::Pending, &digest(id))
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Signs the user in to a pending login. The refusal is what the login page says: the
    /// same words whatever was wrong, except for a locked account.
    pub async fn login(
        &self,
        pending_id: &str,
        username: &str,
        password: &str,
        totp: &str,
    ) -> Result<SignIn> {
        let refused = |user: Option<User>, why: &str| {
            Ok(SignIn {
                user,
                refusal: Some(why.to_string()),
            })
        };
        let Some(mut pending) = self.pending(pending_id).await? else {
            return refused(None, "this sign-in has expired; start again from the app");
        };
        let wrong = "the user name, password or code is wrong";
        let Some(mut user) = self.user(username).await? else {
            // Spend the same time as a real check so that names cannot be probed.
            accounts::verify_secret(&accounts::hash_secret("x"), password);
            return refused(None, wrong);
        };
        let t = now();
        if user.locked_until.is_some_and(|until| until > t) {
            let locked = "this account is locked after too many failed sign-ins; try again later";
            return refused(Some(user), locked);
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
            return refused(Some(user), wrong);
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
        Ok(SignIn {
            user: Some(user),
            refusal: None,
        })
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
    /// with `access_denied`, and what was decided. `Err` is a message for the page (a
    /// patient to pick).
    pub async fn consent(
        &self,
        pending_id: &str,
        approve: bool,
        picked_patient: Option<&str>,
    ) -> Result<std::result::Result<Decision, String>> {
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
        let mut patient = user.own_patient().or(pending.launch_patient.clone());
        let decided = |redirect: String, granted: Option<String>, patient: Option<String>| {
            Ok(Ok(Decision {
                redirect,
                client_id: pending.client_id.clone(),
                username: user.username.clone(),
                fhir_user: user.fhir_user.clone(),
                granted,
                patient,
            }))
        };
        if !approve {
            let back = redirect_with(
                &pending.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the user declined"),
                    ("state", &pending.state),
                ],
            );
            return decided(back, None, patient);
        }
        let scopes = scope::parse_list(&pending.scope).unwrap_or_default();
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
            patient: patient.clone(),
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
        let back = redirect_with(
            &pending.redirect_uri,
            &[("code", &code), ("state", &pending.state)],
        );
        decided(back, Some(pending.scope.clone()), patient)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_existing_queries() {
        assert_eq!(
            redirect_with("https://app/cb?x=1", &[("code", "a b"), ("state", "s")]),
            "https://app/cb?x=1&code=a+b&state=s"
        );
    }
}

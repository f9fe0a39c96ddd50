//! Users and clients of Hearth's authorization server, and the rules for their secrets:
//! passwords of at least 12 characters mixing classes, hashed with Argon2id; a TOTP second
//! factor (RFC 6238) for practitioners and administrators; client secrets hashed like
//! passwords.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use super::policy::Role;

/// A person who signs in at the authorize endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    /// `Patient/123`, `Practitioner/7`: the user's own FHIR resource.
    pub fhir_user: Option<String>,
    /// Base32 TOTP secret; required for practitioners and administrators.
    pub totp_secret: Option<String>,
    /// The TOTP time step last accepted: a code is good once (RFC 6238 section 5.2).
    #[serde(default)]
    pub totp_last_step: Option<u64>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub failed_logins: u32,
    /// Unix seconds until which sign-in is refused after too many failures.
    #[serde(default)]
    pub locked_until: Option<i64>,
}

impl User {
    /// The patient whose compartment a patient user is confined to.
    pub fn own_patient(&self) -> Option<String> {
        self.fhir_user
            .as_deref()
            .and_then(|r| r.strip_prefix("Patient/"))
            .map(str::to_string)
    }

    pub fn needs_totp(&self) -> bool {
        matches!(self.role, Role::Practitioner | Role::Administrator)
    }
}

/// How a client authenticates at the token endpoint.
/// <https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html>
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// A browser or native app: no secret, PKCE only.
    Public,
    /// `client_secret_basic` / `client_secret_post`.
    ConfidentialSymmetric,
    /// `private_key_jwt` with keys from its JWKS (backend services).
    ConfidentialAsymmetric,
}

/// A registered application.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub kind: ClientKind,
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The scopes this client may ever be granted (space-separated SMART scopes; a
    /// resource scope here also covers narrower requests).
    pub scope: String,
    /// The public keys of an asymmetric client, a JWK Set.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
}

/// Why a password is refused.
pub fn check_password_policy(password: &str) -> Result<(), String> {
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if password.chars().count() < 12 {
        Err("a password has at least 12 characters".into())
    } else if classes < 3 {
        Err("a password mixes at least three of: lower case, upper case, digits, symbols".into())
    } else {
        Ok(())
    }
}

/// An Argon2id PHC string of `secret` with a fresh salt.
pub fn hash_secret(secret: &str) -> String {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .expect("Argon2id with default parameters hashes any input")
        .to_string()
}

/// Whether `secret` is the one `hash` was made from (constant time).
pub fn verify_secret(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A fresh TOTP secret, base32 as authenticator apps take it.
pub fn new_totp_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    totp_rs::Secret::from(bytes.to_vec()).to_base32()
}

fn totp(secret: &str) -> Option<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret).ok()?;
    totp_rs::Builder::new().with_secret(secret).build().ok()
}

/// The time step a 6-digit TOTP code is good for at `unix_time` (one step of clock skew
/// either way), if it is good.
pub fn totp_step(secret: &str, code: &str, unix_time: u64) -> Option<u64> {
    totp(secret)?.check(code.trim(), unix_time)
}

/// The current code for `secret` (for `hearth user add` to show, and for tests).
pub fn totp_code(secret: &str, unix_time: u64) -> Option<String> {
    Some(totp(secret)?.generate(unix_time).to_string())
}

/// `otpauth://` URI for authenticator apps.
pub fn totp_uri(secret: &str, username: &str) -> String {
    let enc = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    format!(
        "otpauth://totp/Hearth:{}?secret={secret}&issuer=Hearth&algorithm=SHA1&digits=6&period=30",
        enc(username)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(check_password_policy("short1A!").is_err());
        assert!(check_password_policy("alllowercaseletters").is_err());
        assert!(check_password_policy("Correct horse 9").is_ok());
        assert!(check_password_policy("correct-horse-battery-9").is_ok());
    }

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("Correct horse 9");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_secret(&h, "Correct horse 9"));
        assert!(!verify_secret(&h, "Correct horse 8"));
        assert!(!verify_secret("not a hash", "x"));
    }

    #[test]
    fn totp_codes_check_within_one_step() {
        let s = new_totp_secret();
        let code = totp_code(&s, 1_000_000).unwrap();
        assert_eq!(code.len(), 6);
        assert_eq!(totp_step(&s, &code, 1_000_000), Some(1_000_000 / 30));
        assert!(totp_step(&s, &code, 1_000_000 + 31).is_some());
        assert!(totp_step(&s, &code, 1_000_000 + 300).is_none());
    }
}

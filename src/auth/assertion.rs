//! Client authentication by a signed assertion (`private_key_jwt`), as SMART Backend
//! Services require. <https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html>,
//! RFC 7523.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use super::accounts::{Client, ClientKind};
use super::server::{digest, now, AuthServer};
use super::token::{OAuthError, OAuthResult};
use crate::store::auth::Kind;

/// The furthest in the future a client assertion may expire (SMART Backend Services).
const MAX_ASSERTION_SECONDS: i64 = 300;

impl AuthServer {
    /// A `private_key_jwt` client assertion: RS384 or ES384, signed by a key of the client's
    /// registered JWKS, `iss` = `sub` = client id, `aud` = the token URL, expiring within five
    /// minutes, with a `jti` never seen before.
    /// <https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html>
    pub(super) async fn verify_assertion(&self, assertion: &str) -> OAuthResult<Client> {
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
}

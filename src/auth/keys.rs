//! The keys Hearth signs its tokens with: ES256 (P-256), published as a JWKS, rotated
//! without breaking tokens already issued (an old key stays published and trusted until every
//! token it signed has expired). <https://www.rfc-editor.org/rfc/rfc7517>

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::EncodePrivateKey;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// One signing key.
pub struct SigningKey {
    pub kid: String,
    /// Unix seconds.
    pub created: i64,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: Jwk,
}

impl SigningKey {
    /// A fresh key: the key and the JSON it is stored as (the private key as PKCS#8 DER).
    pub fn generate(created: i64) -> (SigningKey, Value) {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let der = secret
            .to_pkcs8_der()
            .expect("a P-256 key always encodes as PKCS#8");
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let stored = json!({
            "kid": kid,
            "created": created,
            "pkcs8": STANDARD.encode(der.as_bytes()),
        });
        let key = SigningKey::from_stored(&stored).expect("a key just generated loads");
        (key, stored)
    }

    /// Loads a key as `generate` stored it.
    pub fn from_stored(stored: &Value) -> Option<SigningKey> {
        let der = STANDARD.decode(stored["pkcs8"].as_str()?).ok()?;
        let encoding = EncodingKey::from_ec_der(&der);
        let mut public = Jwk::from_encoding_key(&encoding, Algorithm::ES256).ok()?;
        let kid = stored["kid"].as_str()?.to_string();
        public.common.key_id = Some(kid.clone());
        public.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&public).ok()?;
        Some(SigningKey {
            kid,
            created: stored["created"].as_i64()?,
            encoding,
            decoding,
            public,
        })
    }
}

/// The keys in use, newest first. The newest signs; all verify.
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<Vec<Arc<SigningKey>>>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Signed by a key Hearth does not know (or no longer trusts).
    UnknownKey,
    /// Expired, forged, `alg=none`, wrong audience...: the library's reason.
    Invalid(String),
}

impl KeyRing {
    /// Replaces the keys (newest first after sorting).
    pub fn set(&self, mut keys: Vec<SigningKey>) {
        keys.sort_by(|a, b| b.created.cmp(&a.created).then(b.kid.cmp(&a.kid)));
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) =
            keys.into_iter().map(Arc::new).collect();
    }

    fn newest(&self) -> Option<Arc<SigningKey>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
    }

    /// When the newest key was made, if there is one.
    pub fn newest_created(&self) -> Option<i64> {
        self.newest().map(|k| k.created)
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.find(kid).is_some()
    }

    fn find(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
    }

    /// Signs `claims` with the newest key as a compact JWS.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let key = self
            .newest()
            .expect("the key ring is loaded before serving");
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("ES256 signing cannot fail")
    }

    /// Verifies a token Hearth signed. `validation` says which claims must hold; only ES256
    /// is ever accepted, whatever the token's header claims.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        mut validation: Validation,
    ) -> Result<T, Refused> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Refused::Invalid(e.to_string()))?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.find(kid))
            .ok_or(Refused::UnknownKey)?;
        validation.algorithms = vec![Algorithm::ES256];
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| Refused::Invalid(e.to_string()))
    }

    /// The public keys as a JWK Set.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|k| serde_json::to_value(&k.public).ok())
            .map(|mut k| {
                k["alg"] = json!("ES256");
                k
            })
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    #[test]
    fn old_keys_still_verify_after_rotation() {
        let ring = KeyRing::default();
        let (old, stored_old) = SigningKey::generate(1);
        ring.set(vec![old]);
        let claims = Claims {
            sub: "a".into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
        };
        let token = ring.sign(&claims);
        let (new, _) = SigningKey::generate(2);
        let new_kid = new.kid.clone();
        ring.set(vec![SigningKey::from_stored(&stored_old).unwrap(), new]);
        let mut v = Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        assert_eq!(ring.verify::<Claims>(&token, v.clone()).unwrap(), claims);
        let fresh = ring.sign(&claims);
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some(new_kid.as_str())
        );
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        // Dropping the old key makes its tokens unknown.
        let (other, _) = SigningKey::generate(3);
        ring.set(vec![other]);
        assert_eq!(ring.verify::<Claims>(&token, v), Err(Refused::UnknownKey));
    }

    #[test]
    fn alg_none_and_tampering_are_refused() {
        let ring = KeyRing::default();
        ring.set(vec![SigningKey::generate(1).0]);
        let token = ring.sign(&Claims {
            sub: "a".into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
        });
        let mut v = Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        let parts: Vec<&str> = token.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        let none_header = json!({"alg": "none", "kid": header["kid"]});
        let forged = format!("{}.{}.", b64.encode(none_header.to_string()), parts[1]);
        assert!(ring.verify::<Claims>(&forged, v.clone()).is_err());
        let other_claims = b64.encode(r#"{"sub":"admin","exp":99999999999}"#);
        let tampered = format!("{}.{}.{}", parts[0], other_claims, parts[2]);
        assert!(matches!(
            ring.verify::<Claims>(&tampered, v),
            Err(Refused::Invalid(_))
        ));
    }
}

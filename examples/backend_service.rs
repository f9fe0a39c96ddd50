//! A SMART backend service: authenticates to a running Hearth with a signed client assertion
//! (`private_key_jwt`, ES384) under the `client_credentials` grant and runs one search with the
//! system token it gets. The first run makes the service's key and prints its public JWK Set
//! for registration.
//! <https://hl7.org/fhir/smart-app-launch/backend-services.html>
//!
//! ```text
//! cargo run --example backend_service -- --key service-key.der --print-jwks > service.jwks
//! hearth client add integration --kind confidential-asymmetric --jwks-file service.jwks --scope 'system/*.rs'
//! cargo run --example backend_service -- --key service-key.der --client-id integration \
//!     --search 'Patient?_count=10'
//! ```

use std::path::PathBuf;

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Parser)]
struct Args {
    /// The FHIR base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/fhir")]
    base: String,
    /// The service's P-384 private key (PKCS#8 DER); made on first use.
    #[arg(long, default_value = "service-key.der")]
    key: PathBuf,
    /// Print the public JWK Set to register with `hearth client add --jwks-file`, and stop.
    #[arg(long)]
    print_jwks: bool,
    /// The client id the service is registered under.
    #[arg(long, default_value = "integration")]
    client_id: String,
    /// The system scopes to ask for.
    #[arg(long, default_value = "system/*.rs")]
    scope: String,
    /// What to read with the token: a search or a read, relative to the base.
    #[arg(long, default_value = "Patient?_count=10")]
    search: String,
}

/// The service's key, made (readable by its owner only) when the file does not exist yet.
fn load_or_make_key(path: &PathBuf) -> Result<p384::SecretKey, Box<dyn std::error::Error>> {
    if path.exists() {
        return Ok(p384::SecretKey::from_pkcs8_der(&std::fs::read(path)?)?);
    }
    let key = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let der = key.to_pkcs8_der()?;
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        options.open(path)?.write_all(der.as_bytes())?;
    }
    eprintln!("made a new P-384 key in {}", path.display());
    Ok(key)
}

/// The public JWK of the key, with a `kid` derived from it (so rotations get new ids).
fn public_jwk(key: &EncodingKey) -> Result<Value, Box<dyn std::error::Error>> {
    let mut jwk = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(
        key,
        Algorithm::ES384,
    )?)?;
    let thumb = Sha256::digest(format!("{}{}", jwk["x"], jwk["y"]).as_bytes());
    let kid: String = thumb[..8].iter().map(|b| format!("{b:02x}")).collect();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    Ok(jwk)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let secret = load_or_make_key(&args.key)?;
    let key = EncodingKey::from_ec_der(secret.to_pkcs8_der()?.as_bytes());
    let jwk = public_jwk(&key)?;
    if args.print_jwks {
        println!("{}", serde_json::to_string_pretty(&json!({"keys": [jwk]}))?);
        return Ok(());
    }
    let base = args.base.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();

    // 1. Discovery: where the token endpoint is.
    let config: Value = http
        .get(format!("{base}/.well-known/smart-configuration"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token_url = config["token_endpoint"]
        .as_str()
        .ok_or("the smart-configuration has no token_endpoint")?
        .to_string();

    // 2. The client assertion: iss = sub = client id, aud = the token URL, five minutes at
    //    most, a fresh jti.
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::ES384);
    header.kid = jwk["kid"].as_str().map(str::to_string);
    let claims = json!({
        "iss": args.client_id, "sub": args.client_id, "aud": token_url,
        "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
    });
    let assertion = jsonwebtoken::encode(&header, &claims, &key)?;

    // 3. The token request.
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("scope", args.scope.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ])
        .finish();
    let response = http
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    let status = response.status();
    let token: Value = response.json().await?;
    if !status.is_success() {
        return Err(format!(
            "token request refused ({status}): {} {}",
            token["error"], token["error_description"]
        )
        .into());
    }
    let access = token["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_string();
    println!(
        "token for {} granted '{}' for {} s",
        args.client_id,
        token["scope"].as_str().unwrap_or(""),
        token["expires_in"]
    );

    // 4. The work.
    let response = http
        .get(format!("{base}/{}", args.search.trim_start_matches('/')))
        .bearer_auth(&access)
        .header("accept", "application/fhir+json")
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    println!("GET {} -> {status}", args.search);
    match body["resourceType"].as_str() {
        Some("Bundle") => {
            let entries = body["entry"].as_array().cloned().unwrap_or_default();
            println!(
                "{} entr{} (total {})",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" },
                body["total"]
            );
            for e in entries {
                println!("  {}", e["fullUrl"].as_str().unwrap_or(""));
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(&body)?),
    }
    Ok(())
}

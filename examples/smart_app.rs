//! A SMART on FHIR app in a terminal: a standalone launch with PKCE against a running Hearth,
//! then the signed-in patient's appointments. It discovers the endpoints from
//! `.well-known/smart-configuration`, prints the sign-in address for a browser, receives the
//! redirect on a local port, exchanges the code and reads `Appointment?patient=`.
//! <https://hl7.org/fhir/smart-app-launch/app-launch.html>
//!
//! ```text
//! hearth client add smart-demo --kind public --redirect-uri http://127.0.0.1:8765/callback \
//!     --scope 'launch/patient openid fhirUser patient/Patient.rs patient/Appointment.rs'
//! HEARTH_NEW_PASSWORD='Correct horse 9!' hearth user add alice --role patient --fhir-user Patient/123
//! cargo run --example smart_app -- --base http://127.0.0.1:8080/fhir --client-id smart-demo
//! ```

use clap::Parser;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, ExtraTokenFields, PkceCodeChallenge,
    RedirectUrl, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// The FHIR base URL (the `aud` the app asks for).
    #[arg(long, default_value = "http://127.0.0.1:8080/fhir")]
    base: String,
    /// The app's registered client id.
    #[arg(long, default_value = "smart-demo")]
    client_id: String,
    /// The local port of the registered redirect URI `http://127.0.0.1:<port>/callback`.
    #[arg(long, default_value_t = 8765)]
    port: u16,
}

/// The SMART additions to the token response. <https://hl7.org/fhir/smart-app-launch/app-launch.html#response-5>
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SmartFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}
impl ExtraTokenFields for SmartFields {}

type SmartToken = StandardTokenResponse<SmartFields, BasicTokenType>;

/// oauth2's HTTP hook, on reqwest; redirects are not followed (RFC 6749 section 3.1.2.5).
async fn send(request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut built = axum::http::Response::builder().status(response.status());
    for (k, v) in response.headers() {
        built = built.header(k, v);
    }
    Ok(built
        .body(response.bytes().await?.to_vec())
        .expect("a response rebuilt from a valid one"))
}

/// Waits for the browser's redirect to `/callback` and answers it; returns its query.
async fn receive_callback(port: u16) -> Result<Vec<(String, String)>, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut socket, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = socket.read(&mut buf).await?;
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let target = head.split_whitespace().nth(1).unwrap_or("");
        let Some(query) = target.strip_prefix("/callback?") else {
            socket
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        };
        let params = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let page = "<!doctype html><title>Signed in</title><p>You can close this tab.</p>";
        socket
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                )
                .as_bytes(),
            )
            .await?;
        return Ok(params);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let base = args.base.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();

    // 1. Discovery.
    let config: Value = http
        .get(format!("{base}/.well-known/smart-configuration"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let endpoint = |k: &str| {
        config[k]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("the smart-configuration has no {k}"))
    };

    // 2. The authorize request, with PKCE S256 and the FHIR base as `aud`.
    let redirect = format!("http://127.0.0.1:{}/callback", args.port);
    let client = oauth2::Client::<
        BasicErrorResponse,
        SmartToken,
        BasicTokenIntrospectionResponse,
        StandardRevocableToken,
        BasicRevocationErrorResponse,
    >::new(ClientId::new(args.client_id.clone()))
    .set_auth_uri(AuthUrl::new(endpoint("authorization_endpoint")?)?)
    .set_token_uri(TokenUrl::new(endpoint("token_endpoint")?)?)
    .set_redirect_uri(RedirectUrl::new(redirect)?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(
            [
                "launch/patient",
                "openid",
                "fhirUser",
                "patient/Patient.rs",
                "patient/Appointment.rs",
            ]
            .map(|s| Scope::new(s.to_string())),
        )
        .add_extra_param("aud", base.clone())
        .set_pkce_challenge(challenge)
        .url();
    println!("Open this address in a browser and sign in:\n\n  {url}\n");

    // 3. The redirect back, then the code exchange.
    let params = receive_callback(args.port).await?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("state").as_deref() != Some(state.secret().as_str()) {
        return Err("the callback's state does not match the request's".into());
    }
    if let Some(error) = get("error") {
        return Err(format!(
            "authorization refused: {error} ({})",
            get("error_description").unwrap_or_default()
        )
        .into());
    }
    let code = get("code").ok_or("the callback has no code")?;
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await?;
    let patient = token
        .extra_fields()
        .patient
        .clone()
        .ok_or("the token response has no patient")?;
    let scopes: Vec<String> = token
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    println!(
        "Signed in; patient {patient}; granted: {}",
        scopes.join(" ")
    );

    // 4. The patient's appointments, soonest first.
    let bundle: Value = http
        .get(format!("{base}/Appointment"))
        .query(&[("patient", patient.as_str()), ("_sort", "date")])
        .bearer_auth(token.access_token().secret())
        .header("accept", "application/fhir+json")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    println!("{} appointment(s):", entries.len());
    for e in entries {
        let a = &e["resource"];
        println!(
            "  {}  {:<10} {}",
            a["start"].as_str().unwrap_or("(no start)"),
            a["status"].as_str().unwrap_or(""),
            a["description"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

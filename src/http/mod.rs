//! The HTTP room: axum routes, extraction, content negotiation, rendering, and errors as
//! OperationOutcome. No SQL and no business rules live here.

pub mod audit;
pub mod auth;
pub mod bundle;
pub mod capability;
pub mod find;
pub mod format;
pub mod guard;
pub mod history;
pub mod metrics;
pub mod ops;
pub mod reply;
pub mod request;
pub mod rest;
pub mod scheduling;
pub mod search;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

use crate::error::{Error, ErrorKind};
use crate::fhir::outcome::IssueType;
use crate::fhir::validate::Validator;
use crate::store::Store;
use request::FhirRequest;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub store: Store,
    pub base_url: String,
    pub max_body_bytes: usize,
    pub validator: &'static Validator,
    pub metrics: metrics::Metrics,
    /// Rebuilt when custom SearchParameters change what search supports.
    pub capability: std::sync::RwLock<serde_json::Value>,
    /// When the server started, the CapabilityStatement's date.
    pub started: String,
    /// `Prefer: handling=lenient` unless the client says otherwise.
    pub lenient_by_default: bool,
    pub max_bundle_entries: usize,
    /// The longest `Appointment/$find` window, in days.
    pub find_max_days: i64,
    pub auth: std::sync::Arc<crate::auth::server::AuthServer>,
    pub audit: std::sync::Arc<crate::audit::AuditLog>,
    /// False only under `--auth off`.
    pub enforce_auth: bool,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

/// All routes: the FHIR API under `/fhir`, operations endpoints at the root.
pub fn router(state: AppState) -> Router {
    use axum::routing::get as g;
    let fhir = Router::new()
        .route("/", g(search::system_get).post(bundle::process))
        .route("/_search", post(search::system_post))
        .route("/metadata", g(capability::metadata))
        .route(
            "/.well-known/smart-configuration",
            g(auth::smart_configuration),
        )
        .route("/_history", g(history::system))
        .route(
            "/{type}",
            post(rest::create)
                .get(search::type_get)
                .put(rest::conditional_update)
                .delete(rest::conditional_delete),
        )
        .route("/{type}/_search", post(search::type_post))
        .route("/{type}/$find", g(find::find).post(find::find))
        .route("/{type}/$book", post(scheduling::book))
        .route("/{type}/_history", g(history::type_level))
        .route(
            "/{type}/{id}",
            g(rest::read)
                .put(rest::update)
                .delete(rest::delete)
                .patch(rest::patch),
        )
        .route("/{type}/{id}/_history", g(history::instance))
        .route(
            "/{type}/{id}/{compartment_type}",
            g(search::compartment).post(scheduling::instance_operation),
        )
        .route("/{type}/{id}/_history/{vid}", g(rest::vread))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/fhir", fhir)
        // `[base]/?...` as many clients write the system search.
        .route("/fhir/", get(search::system_get).post(bundle::process))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route(
            "/auth/authorize",
            get(auth::authorize_get).post(auth::authorize_post),
        )
        .route("/auth/login", post(auth::login))
        .route("/auth/consent", post(auth::consent))
        .route("/auth/token", post(auth::token))
        .route("/auth/introspect", post(auth::introspect))
        .route("/auth/revoke", post(auth::revoke))
        .route("/auth/launch", post(auth::launch))
        .route("/auth/jwks", get(auth::jwks))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(req: FhirRequest) -> Response {
    req.respond(Err(Error::not_found(
        "there is no FHIR endpoint at this path",
    )))
}

async fn method_not_allowed(req: FhirRequest) -> Response {
    req.respond(Err(Error::new(
        ErrorKind::MethodNotAllowed,
        IssueType::NotSupported,
        "this HTTP method is not supported at this path",
    )))
}

/// Gives each request an id, a tracing span and a metrics sample. Logs carry the route
/// template and status only: never a concrete path or query, which can hold PHI.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let interaction = metrics::interaction(request.method(), route.as_deref());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(crate::fhir::id::new_time_ordered_id);
    let span =
        tracing::info_span!("request", id = %request_id, method = %request.method(), interaction);
    request
        .extensions_mut()
        .insert(audit::RequestId(request_id.clone()));
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();
    state.metrics.record(interaction, status.as_u16(), elapsed);
    span.in_scope(|| {
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(
                status = status.as_u16(),
                ms = elapsed.as_secs_f64() * 1e3,
                "answered"
            );
        } else {
            tracing::info!(
                status = status.as_u16(),
                ms = elapsed.as_secs_f64() * 1e3,
                "answered"
            );
        }
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

//! Hearth's one error type. Every failure, whatever room it starts in, ends as an [`Error`]:
//! a kind (which the HTTP layer maps to a status) and the OperationOutcome issues that explain
//! it to the client. See <https://hl7.org/fhir/R4/operationoutcome.html>.

use crate::fhir::outcome::{Issue, IssueType};

/// What went wrong, in terms of the FHIR RESTful API rather than HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is malformed (syntax, parameters, headers): 400.
    BadRequest,
    /// The resource is well-formed JSON/XML but not a valid R4 resource: 400.
    Invalid,
    /// The access token does not permit this: 403.
    Forbidden,
    /// No such resource or endpoint: 404.
    NotFound,
    /// The resource existed and was deleted: 410.
    Gone,
    /// The method is not allowed on this resource: 405.
    MethodNotAllowed,
    /// The `Accept` header or `_format` asks for a format Hearth cannot produce: 406.
    NotAcceptable,
    /// A concurrent change won the race: 409.
    Conflict,
    /// `If-Match` named a version that is not the current one: 412.
    PreconditionFailed,
    /// The body is larger than the configured limit: 413.
    PayloadTooLarge,
    /// The body's media type is not one Hearth reads: 415.
    UnsupportedMediaType,
    /// Valid FHIR, but the business rules refuse it: 422.
    Unprocessable,
    /// The interaction exists in FHIR but Hearth does not implement it (yet): 501.
    NotImplemented,
    /// The database cannot be reached: 503. The server keeps running.
    Unavailable,
    /// A defect in Hearth: 500. Never caused by client input.
    Internal,
}

/// An error with its explanation for the client.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub issues: Vec<Issue>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Error {
            kind,
            issues: vec![Issue::error(code, diagnostics)],
        }
    }

    pub fn with_issues(kind: ErrorKind, issues: Vec<Issue>) -> Self {
        Error { kind, issues }
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, IssueType::Invalid, diagnostics)
    }

    pub fn invalid(diagnostics: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, IssueType::Structure, diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, IssueType::NotFound, diagnostics)
    }

    pub fn gone(diagnostics: impl Into<String>) -> Self {
        Self::new(ErrorKind::Gone, IssueType::Deleted, diagnostics)
    }

    pub fn precondition_failed(diagnostics: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::PreconditionFailed,
            IssueType::Conflict,
            diagnostics,
        )
    }

    pub fn conflict(diagnostics: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, IssueType::Conflict, diagnostics)
    }

    pub fn not_implemented(diagnostics: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::NotImplemented,
            IssueType::NotSupported,
            diagnostics,
        )
    }

    pub fn unavailable(diagnostics: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, IssueType::Transient, diagnostics)
    }

    pub fn internal(diagnostics: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, IssueType::Exception, diagnostics)
    }

    /// The first issue's diagnostics, for logs and tests.
    /// 403: the caller's token or role does not permit this.
    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Error::new(ErrorKind::Forbidden, IssueType::Forbidden, diagnostics)
    }

    pub fn message(&self) -> &str {
        self.issues
            .first()
            .and_then(|i| i.diagnostics.as_deref())
            .unwrap_or("")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message())
    }
}

impl std::error::Error for Error {}

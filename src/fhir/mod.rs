//! Knowledge of FHIR R4 itself: resource types, ids, dates, validation, formats and
//! OperationOutcome. Nothing here knows about HTTP or databases.

pub mod datetime;
pub mod id;
pub mod meta;
pub mod outcome;
pub mod patch;
pub mod resource_type;
pub mod summary;
pub mod validate;
pub mod xhtml;
pub mod xml;

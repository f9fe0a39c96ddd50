//! FHIR search, as pure code: the SearchParameter registry, value extraction from resources
//! into index rows, and query parsing into a typed AST. The SQL for that AST lives in
//! `store/`. <https://hl7.org/fhir/R4/search.html>

pub mod compartment;
pub mod fhirpath;
pub mod index;
pub mod model;
pub mod query;
pub mod registry;
pub mod text;

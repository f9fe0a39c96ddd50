//! SMART on FHIR authorization. This first part is pure: scopes (`scope`) and the policy that
//! turns a principal's scopes and role into allow / deny / narrow (`policy`). The
//! authorization server (discovery, authorize and token endpoints, clients, users) and the
//! enforcement in `http/` build on them. <https://hl7.org/fhir/smart-app-launch/>

pub mod policy;
pub mod scope;

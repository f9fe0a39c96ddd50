//! The audit trail: an AuditEvent for every access to the FHIR API (`event`), written without
//! ever dropping one (`log`: writes' events commit with the write, reads' events go through a
//! buffered writer that applies backpressure), linked into a hash chain that shows tampering
//! (`chain`), stored packed (`pack`), and kept for a retention period.
//! <https://hl7.org/fhir/R4/auditevent.html>, <https://profiles.ihe.net/ITI/BALP/>

pub mod chain;
pub mod event;
pub mod log;
pub mod pack;

pub use event::{Action, Agent, Event};
pub use log::{AuditLog, AuditSettings};

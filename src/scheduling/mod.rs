//! Scheduling rules: which Slots an Appointment holds, and what booking, cancelling and
//! rescheduling change (`booking`). Pure code: the HTTP layer reads the resources and the
//! store writes the result in one transaction.
//! <https://hl7.org/fhir/R4/appointment.html>, <https://hl7.org/fhir/R4/slot.html>

pub mod availability;
pub mod booking;
pub mod find;

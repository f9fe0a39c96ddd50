//! The one place that decides whether a principal may do something: allow, deny, or allow
//! narrowed to one patient's compartment. A token's power is the intersection of its scopes
//! and its user's role. <https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html>

use super::scope::{Context, Interaction, ResourceScope, Scope};

/// Who the user is in the system Hearth serves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees their own compartment only.
    Patient,
    /// Clinical data of patients, their own schedules, prescriptions.
    Practitioner,
    /// User and client management, audit reading; everything.
    Administrator,
    /// A backend service (client credentials); limited by its scopes alone.
    System,
}

/// Who is asking: from a verified access token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// `Patient/123`, `Practitioner/7`... for users.
    pub fhir_user: Option<String>,
    pub client_id: String,
    pub scopes: Vec<Scope>,
    /// The launch patient (`launch/patient`), or the patient user's own record.
    pub patient: Option<String>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Limits),
    Deny(String),
}

/// What an allowed request is narrowed to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// Only this patient's compartment.
    pub patient: Option<String>,
    /// Only resources matching these search parameters (SMART v2 scope queries).
    pub query: Vec<(String, String)>,
}

impl Decision {
    /// Allowed with no narrowing.
    pub fn allow() -> Decision {
        Decision::Allow(Limits::default())
    }
}

/// Resource types a practitioner may not touch through clinical scopes.
const ADMINISTRATIVE: [&str; 1] = ["AuditEvent"];

fn role_permits(role: Role, resource_type: &str, interaction: Interaction) -> bool {
    match role {
        Role::Administrator | Role::System => true,
        Role::Practitioner => !ADMINISTRATIVE.contains(&resource_type),
        // A patient reads their own record and books or cancels their own appointments.
        Role::Patient => {
            matches!(interaction, Interaction::Read | Interaction::Search)
                && !ADMINISTRATIVE.contains(&resource_type)
                || (resource_type == "Appointment"
                    && matches!(interaction, Interaction::Create | Interaction::Update))
        }
    }
}

/// Decides `interaction` on `resource_type` for `principal`.
pub fn decide(principal: &Principal, resource_type: &str, interaction: Interaction) -> Decision {
    if !role_permits(principal.role, resource_type, interaction) {
        return Decision::Deny(format!(
            "the {:?} role may not {interaction:?} {resource_type}",
            principal.role
        ));
    }
    let granting: Vec<&ResourceScope> = principal
        .scopes
        .iter()
        .filter_map(|s| match s {
            Scope::Resource(r) if r.permits(resource_type, interaction) => Some(r),
            _ => None,
        })
        .filter(|r| match (r.context, principal.role) {
            // system/ scopes are for backend services, user/ and patient/ for users.
            (Context::System, Role::System) => true,
            (Context::System, _) | (_, Role::System) => false,
            _ => true,
        })
        .collect();
    if granting.is_empty() {
        return Decision::Deny(format!(
            "no granted scope permits {interaction:?} on {resource_type}"
        ));
    }
    // A patient user is always narrowed to their record; so is a token whose only granting
    // scopes are patient/ ones. A user/ or system/ scope without a query lifts the narrowing.
    let needs_patient =
        principal.role == Role::Patient || granting.iter().all(|r| r.context == Context::Patient);
    let patient = if needs_patient {
        match &principal.patient {
            Some(p) => Some(p.clone()),
            None => return Decision::Deny("a patient/ scope needs a launch patient".into()),
        }
    } else {
        None
    };
    let applicable: Vec<&&ResourceScope> = granting
        .iter()
        .filter(|r| needs_patient || r.context != Context::Patient)
        .collect();
    // The least restrictive query of the applicable scopes: none if any has none.
    let query = if applicable.iter().any(|r| r.query.is_empty()) {
        Vec::new()
    } else {
        applicable
            .first()
            .map(|r| r.query.clone())
            .unwrap_or_default()
    };
    Decision::Allow(Limits { patient, query })
}

#[cfg(test)]
mod tests {
    use super::super::scope::parse_list;
    use super::*;

    fn principal(role: Role, scopes: &str, patient: Option<&str>) -> Principal {
        Principal {
            subject: "u1".into(),
            role,
            fhir_user: None,
            client_id: "app".into(),
            scopes: parse_list(scopes).unwrap(),
            patient: patient.map(str::to_string),
        }
    }

    #[test]
    fn patient_scopes_narrow_to_the_launch_patient() {
        let p = principal(Role::Practitioner, "patient/Observation.rs", Some("p1"));
        assert_eq!(
            decide(&p, "Observation", Interaction::Search),
            Decision::Allow(Limits {
                patient: Some("p1".into()),
                query: vec![]
            })
        );
        assert!(matches!(
            decide(&p, "Observation", Interaction::Create),
            Decision::Deny(_)
        ));
        assert!(matches!(
            decide(&p, "Patient", Interaction::Read),
            Decision::Deny(_)
        ));
        let no_launch = principal(Role::Practitioner, "patient/Observation.rs", None);
        assert!(matches!(
            decide(&no_launch, "Observation", Interaction::Read),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn roles_cap_scopes() {
        // A patient user with user/*.cruds still only reads their own compartment.
        let p = principal(Role::Patient, "user/*.cruds", Some("me"));
        assert!(matches!(
            decide(&p, "Observation", Interaction::Read),
            Decision::Allow(Limits {
                patient: Some(_),
                ..
            })
        ));
        assert!(matches!(
            decide(&p, "Observation", Interaction::Delete),
            Decision::Deny(_)
        ));
        assert!(matches!(
            decide(&p, "AuditEvent", Interaction::Search),
            Decision::Deny(_)
        ));
        let dr = principal(Role::Practitioner, "user/*.cruds", None);
        assert_eq!(
            decide(&dr, "MedicationRequest", Interaction::Create),
            Decision::allow()
        );
        assert!(matches!(
            decide(&dr, "AuditEvent", Interaction::Read),
            Decision::Deny(_)
        ));
        let admin = principal(Role::Administrator, "user/AuditEvent.rs", None);
        assert_eq!(
            decide(&admin, "AuditEvent", Interaction::Search),
            Decision::allow()
        );
    }

    #[test]
    fn system_scopes_are_for_backend_services() {
        let svc = principal(Role::System, "system/*.rs", None);
        assert_eq!(
            decide(&svc, "Patient", Interaction::Search),
            Decision::allow()
        );
        assert!(matches!(
            decide(&svc, "Patient", Interaction::Create),
            Decision::Deny(_)
        ));
        let user = principal(Role::Practitioner, "system/*.cruds", None);
        assert!(matches!(
            decide(&user, "Patient", Interaction::Read),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn v2_queries_restrict() {
        let p = principal(
            Role::Practitioner,
            "patient/Observation.rs?category=laboratory",
            Some("p1"),
        );
        assert_eq!(
            decide(&p, "Observation", Interaction::Search),
            Decision::Allow(Limits {
                patient: Some("p1".into()),
                query: vec![("category".into(), "laboratory".into())]
            })
        );
        let u = principal(
            Role::Practitioner,
            "user/Observation.rs?category=vital-signs",
            None,
        );
        assert_eq!(
            decide(&u, "Observation", Interaction::Read),
            Decision::Allow(Limits {
                patient: None,
                query: vec![("category".into(), "vital-signs".into())]
            })
        );
    }
}

//! SMART on FHIR scopes, v1 and v2, parsed into what they permit.
//! <https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html>
//!
//! `patient/Observation.read` (v1) and `patient/Observation.rs` (v2) both permit reading and
//! searching Observations in the launch patient's compartment; `user/*.cruds` permits
//! everything the user's role allows; `system/Patient.rs?identifier=x|` narrows a permission
//! to resources matching a query.

use std::fmt;

/// Whose data a resource scope is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// The launch patient's compartment.
    Patient,
    /// What the signed-in user may see.
    User,
    /// A backend service, no user.
    System,
}

/// The interactions a resource scope can permit (SMART v2's `c r u d s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

/// A set of interactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    pub create: bool,
    pub read: bool,
    pub update: bool,
    pub delete: bool,
    pub search: bool,
}

impl Permissions {
    pub fn allows(self, i: Interaction) -> bool {
        match i {
            Interaction::Create => self.create,
            Interaction::Read => self.read,
            Interaction::Update => self.update,
            Interaction::Delete => self.delete,
            Interaction::Search => self.search,
        }
    }

    /// SMART v2 letters, which must appear in the order `c r u d s`, each at most once.
    fn from_v2(letters: &str) -> Option<Permissions> {
        let mut p = Permissions::default();
        let mut last = 0;
        for ch in letters.chars() {
            let rank = "cruds".find(ch)? + 1;
            if rank <= last {
                return None;
            }
            last = rank;
            match ch {
                'c' => p.create = true,
                'r' => p.read = true,
                'u' => p.update = true,
                'd' => p.delete = true,
                _ => p.search = true,
            }
        }
        (last > 0).then_some(p)
    }

    /// SMART v1: `read` (read and search), `write` (create, update, delete), `*` (all).
    fn from_v1(word: &str) -> Option<Permissions> {
        let read = Permissions {
            read: true,
            search: true,
            ..Permissions::default()
        };
        let write = Permissions {
            create: true,
            update: true,
            delete: true,
            ..Permissions::default()
        };
        match word {
            "read" => Some(read),
            "write" => Some(write),
            "*" => Some(Permissions {
                create: true,
                read: true,
                update: true,
                delete: true,
                search: true,
            }),
            _ => None,
        }
    }
}

/// `context/Type.permissions[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: Context,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    pub permissions: Permissions,
    /// SMART v2 query restrictions (`?category=laboratory`), as search parameters.
    pub query: Vec<(String, String)>,
}

impl ResourceScope {
    /// Whether this scope permits `interaction` on `resource_type`.
    pub fn permits(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
            && self.permissions.allows(interaction)
    }
}

impl ResourceScope {
    /// Whether granting this scope would also grant `other` (a client registered for
    /// `patient/*.rs` may be given `patient/Observation.rs`).
    pub fn covers(&self, other: &ResourceScope) -> bool {
        let p = &self.permissions;
        let q = &other.permissions;
        self.context == other.context
            && (self.resource_type.is_none() || self.resource_type == other.resource_type)
            && (p.create || !q.create)
            && (p.read || !q.read)
            && (p.update || !q.update)
            && (p.delete || !q.delete)
            && (p.search || !q.search)
            && (self.query.is_empty() || self.query == other.query)
    }

    /// The scope in plain words, for the consent page.
    pub fn describe(&self) -> String {
        let p = &self.permissions;
        let verbs: Vec<&str> = [
            (p.read || p.search, "see"),
            (p.create, "create"),
            (p.update, "change"),
            (p.delete, "delete"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, v)| *v)
        .collect();
        let what = match &self.resource_type {
            Some(t) => format!("{t} records"),
            None => "all kinds of records".to_string(),
        };
        let whose = match self.context {
            Context::Patient => "of the selected patient",
            Context::User => "that you have access to",
            Context::System => "of every patient (no user present)",
        };
        let mut text = format!("{} {what} {whose}", verbs.join(", "));
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text.push_str(&format!(", only where {}", q.join(" and ")));
        }
        let mut chars = text.chars();
        match chars.next() {
            Some(c) => c.to_uppercase().chain(chars).collect(),
            None => text,
        }
    }
}

/// One granted scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Resource(ResourceScope),
    OpenId,
    FhirUser,
    Launch,
    LaunchPatient,
    LaunchEncounter,
    OfflineAccess,
    OnlineAccess,
}

/// Why a scope string is not one Hearth grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidScope(pub String);

impl fmt::Display for InvalidScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a valid SMART scope", self.0)
    }
}

/// Parses one scope.
pub fn parse(scope: &str) -> Result<Scope, InvalidScope> {
    let invalid = || InvalidScope(scope.to_string());
    match scope {
        "openid" => return Ok(Scope::OpenId),
        "fhirUser" | "profile" => return Ok(Scope::FhirUser),
        "launch" => return Ok(Scope::Launch),
        "launch/patient" => return Ok(Scope::LaunchPatient),
        "launch/encounter" => return Ok(Scope::LaunchEncounter),
        "offline_access" => return Ok(Scope::OfflineAccess),
        "online_access" => return Ok(Scope::OnlineAccess),
        _ => {}
    }
    let (context, rest) = scope.split_once('/').ok_or_else(invalid)?;
    let context = match context {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        _ => return Err(invalid()),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (resource_type, perms) = rest.split_once('.').ok_or_else(invalid)?;
    let resource_type = match resource_type {
        "*" => None,
        t if crate::fhir::resource_type::is_resource_type(t) => Some(t.to_string()),
        _ => return Err(invalid()),
    };
    let (permissions, v2) = match Permissions::from_v1(perms) {
        Some(p) => (p, false),
        None => (Permissions::from_v2(perms).ok_or_else(invalid)?, true),
    };
    let query: Vec<(String, String)> = match query {
        // Query restrictions are a SMART v2 feature.
        Some(_) if !v2 => return Err(invalid()),
        Some(q) => form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        None => Vec::new(),
    };
    Ok(Scope::Resource(ResourceScope {
        context,
        resource_type,
        permissions,
        query,
    }))
}

/// Parses a space-separated scope list (the OAuth2 `scope` parameter).
pub fn parse_list(scopes: &str) -> Result<Vec<Scope>, InvalidScope> {
    scopes.split_whitespace().map(parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(s: &str) -> ResourceScope {
        match parse(s).unwrap() {
            Scope::Resource(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_scopes() {
        let r = resource("patient/Observation.read");
        assert_eq!(r.context, Context::Patient);
        assert!(r.permits("Observation", Interaction::Read));
        assert!(r.permits("Observation", Interaction::Search));
        assert!(!r.permits("Observation", Interaction::Create));
        assert!(!r.permits("Patient", Interaction::Read));
        let w = resource("user/*.write");
        assert!(
            w.permits("Patient", Interaction::Update) && !w.permits("Patient", Interaction::Read)
        );
        let all = resource("system/*.*");
        assert!(all.permits("AuditEvent", Interaction::Delete));
    }

    #[test]
    fn v2_scopes_and_queries() {
        let r = resource("patient/Appointment.rs");
        assert!(
            r.permits("Appointment", Interaction::Search)
                && !r.permits("Appointment", Interaction::Update)
        );
        let c = resource("user/Patient.cruds");
        assert!(c.permits("Patient", Interaction::Delete));
        let q = resource("patient/Observation.rs?category=laboratory");
        assert_eq!(
            q.query,
            vec![("category".to_string(), "laboratory".to_string())]
        );
        // Out of order, repeated, unknown letters, empty.
        for bad in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.x",
            "patient/Observation.",
            "patient/Banana.rs",
            "doctor/Observation.rs",
            "patient/Observation.read?category=x",
            "Observation.read",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn launch_and_identity_scopes() {
        let list =
            parse_list("openid fhirUser launch/patient offline_access patient/*.rs").unwrap();
        assert_eq!(list.len(), 5);
        assert_eq!(list[0], Scope::OpenId);
        assert_eq!(list[2], Scope::LaunchPatient);
    }
}

//! The AuditEvent of one RESTful interaction (or of a sign-in, see [`Kind`]), shaped as the IHE
//! Basic Audit Log Patterns implementation guide describes it on R4: `type` rest with the
//! interaction as `subtype`, the user, the client application (with its network address) and
//! this server as agents,
//! this server as `source`, and as entities the resources touched, the query of a search and
//! every patient whose data was disclosed or changed.
//! <https://hl7.org/fhir/R4/auditevent.html>,
//! <https://profiles.ihe.net/ITI/BALP/content.html>

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

use crate::store::audit_events::{normalise, AuditRecord, AuditRef};

/// `AuditEvent.action`. <https://hl7.org/fhir/R4/valueset-audit-event-action.html>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

impl Action {
    pub fn code(self) -> &'static str {
        match self {
            Action::Create => "C",
            Action::Read => "R",
            Action::Update => "U",
            Action::Delete => "D",
            Action::Execute => "E",
        }
    }

    /// The action a RESTful interaction (a `restful-interaction` code) performs.
    pub fn of(interaction: &str) -> Action {
        match interaction {
            "create" => Action::Create,
            "update" | "patch" => Action::Update,
            "delete" => Action::Delete,
            "read" | "vread" | "history-instance" | "history-type" | "history-system"
            | "search-type" | "search-system" | "capabilities" => Action::Read,
            _ => Action::Execute,
        }
    }
}

/// Who acted: the user (if any), the client application and where the request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agent {
    /// The user's FHIR resource, `Practitioner/7` (the token's `fhirUser`).
    pub fhir_user: Option<String>,
    /// The token's subject: a user name, or the client id of a backend service.
    pub subject: Option<String>,
    pub client_id: Option<String>,
    /// The client's IP address.
    pub address: Option<String>,
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A RESTful interaction: `type` rest, the interaction as `subtype` (BALP).
    Rest,
    /// A user signing in at the authorization server: `type` DICOM 110114 User
    /// Authentication, `subtype` 110122 Login, as IHE ATNA records it.
    /// <https://profiles.ihe.net/ITI/TF/Volume2/ITI-20.html>
    Login,
    /// A token request at the token endpoint, as BALP's IHE.IUA.71 profile (Get Access Token)
    /// shapes it: the client as an Application agent, the request's URL as a Security
    /// Resource entity. <https://profiles.ihe.net/ITI/BALP/StructureDefinition-IHE.IUA.71.html>
    Token,
    /// A token introspection (RFC 7662), as IHE IUA's ITI-102 (Introspect Token) names it,
    /// shaped like [`Kind::Token`]: the resource server that asked is the Application agent.
    /// <https://profiles.ihe.net/ITI/IUA/index.html>
    Introspect,
    /// A token revocation (RFC 7009): the client ends its access, so DICOM 110114 User
    /// Authentication with `subtype` 110123 Logout, shaped like [`Kind::Token`].
    Revoke,
    /// The user's answer on the consent page, allow or deny: an authorization decision as
    /// BALP's IHE.BasicAudit.AuthZconsent profile records it (`type` DICOM 110113 Security
    /// Alert, `subtype` AuthZ-Consent), with the patient in context as an entity so that it
    /// shows in that patient's trail.
    /// <https://profiles.ihe.net/ITI/BALP/StructureDefinition-IHE.BasicAudit.AuthZconsent.html>
    Consent,
    /// An EHR creating a SMART EHR-launch context for a patient at `/auth/launch`: an
    /// authorization decision made on the caller's role alone (patients may not), so `type`
    /// DICOM 110113 Security Alert with BALP's `subtype` AuthZ-Role, the EHR's user and app
    /// as agents, the patient and the endpoint's URL as entities: the patient's trail shows
    /// who opened an app on their chart. <https://hl7.org/fhir/smart-app-launch/app-launch.html#launch-app-ehr-launch>
    Launch,
}

impl Kind {
    /// The kinds recorded at the authorization server's OAuth endpoints: the client is an
    /// Application agent and the endpoint's URL a Security Resource entity.
    fn at_oauth_endpoint(self) -> bool {
        matches!(
            self,
            Kind::Token | Kind::Introspect | Kind::Revoke | Kind::Launch
        )
    }
}

/// One interaction to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    /// The `restful-interaction` code: `read`, `search-type`, `create`, `transaction`...
    pub interaction: String,
    pub action: Action,
    /// The HTTP status of the answer: 2xx and 3xx are successes, 4xx minor failures
    /// (refusals, bad requests), 5xx serious ones.
    pub status: u16,
    pub agent: Agent,
    /// The resources touched, as references (`Observation/9` or `Observation/9/_history/2`).
    pub entities: Vec<String>,
    /// The query string of a search, as the client sent it.
    pub query: Option<String>,
    /// The ids of the patients whose data the interaction disclosed or changed.
    pub patients: Vec<String>,
    /// The users (`Practitioner/7`) whose identity the interaction disclosed: the user of a
    /// token an introspection answered about (the caller is an agent instead).
    pub users: Vec<String>,
    /// The request's `X-Request-Id`, to correlate with the server's logs.
    pub request_id: Option<String>,
    /// Words for `outcomeDesc` (failures say their HTTP status without them).
    pub description: Option<String>,
}

impl Event {
    pub fn new(interaction: &str, status: u16, agent: Agent) -> Event {
        Event {
            kind: Kind::Rest,
            interaction: interaction.to_string(),
            action: Action::of(interaction),
            status,
            agent,
            entities: Vec::new(),
            query: None,
            patients: Vec::new(),
            users: Vec::new(),
            request_id: None,
            description: None,
        }
    }

    /// A sign-in at the login page: `status` 200 when it succeeded, 401 when it was refused.
    pub fn login(status: u16, agent: Agent) -> Event {
        Event {
            kind: Kind::Login,
            action: Action::Execute,
            ..Event::new("login", status, agent)
        }
    }

    /// A request at the token endpoint `url`: 200 when a token was issued, else the OAuth
    /// error's status.
    pub fn token(status: u16, agent: Agent, url: &str) -> Event {
        Event::oauth(Kind::Token, status, agent, url)
    }

    /// A request at the OAuth endpoint `url` of `kind` (token, introspection, revocation):
    /// 200 when it was answered, else the OAuth error's status.
    pub fn oauth(kind: Kind, status: u16, agent: Agent, url: &str) -> Event {
        let name = match kind {
            Kind::Introspect => "introspect",
            Kind::Revoke => "revoke",
            _ => "token",
        };
        Event {
            kind,
            action: Action::Execute,
            query: Some(url.to_string()),
            ..Event::new(name, status, agent)
        }
    }

    /// The user's answer on the consent page: `allowed`, or declined (recorded as a refusal,
    /// status 403); `patient` is the patient in context, if any.
    pub fn consent(allowed: bool, agent: Agent, patient: Option<String>) -> Event {
        Event {
            kind: Kind::Consent,
            action: Action::Execute,
            patients: patient.into_iter().collect(),
            ..Event::new("consent", if allowed { 200 } else { 403 }, agent)
        }
    }

    /// A request at `url` (`/auth/launch`) to create a launch context for `patient`: 200 when
    /// it was created, else the refusal's status.
    pub fn launch(status: u16, agent: Agent, patient: Option<String>, url: &str) -> Event {
        Event {
            kind: Kind::Launch,
            action: Action::Execute,
            query: Some(url.to_string()),
            patients: patient.into_iter().collect(),
            ..Event::new("launch", status, agent)
        }
    }

    /// `AuditEvent.type` and `subtype`.
    fn codings(&self) -> (json::Coding<'_>, json::Coding<'_>) {
        match self.kind {
            Kind::Rest => (
                json::Coding::new(EVENT_TYPE, "rest", "Restful Operation"),
                json::Coding::new(INTERACTION, &self.interaction, &self.interaction),
            ),
            Kind::Login => (
                json::Coding::new(DCM, "110114", "User Authentication"),
                json::Coding::new(DCM, "110122", "Login"),
            ),
            Kind::Token => (
                json::Coding::new(DCM, "110114", "User Authentication"),
                json::Coding::new("urn:ihe:event-type-code", "ITI-71", "Get Access Token"),
            ),
            Kind::Introspect => (
                json::Coding::new(DCM, "110114", "User Authentication"),
                json::Coding::new("urn:ihe:event-type-code", "ITI-102", "Introspect Token"),
            ),
            Kind::Revoke => (
                json::Coding::new(DCM, "110114", "User Authentication"),
                json::Coding::new(DCM, "110123", "Logout"),
            ),
            Kind::Consent => (
                json::Coding::new(DCM, "110113", "Security Alert"),
                json::Coding::new(
                    AUTHZ,
                    "AuthZ-Consent",
                    "Authorization Decision using Roles and Consent",
                ),
            ),
            Kind::Launch => (
                json::Coding::new(DCM, "110113", "Security Alert"),
                json::Coding::new(
                    AUTHZ,
                    "AuthZ-Role",
                    "Authorization Decision using only Roles",
                ),
            ),
        }
    }

    /// `AuditEvent.outcome`: 0 success, 4 minor failure, 8 serious failure.
    fn outcome(&self) -> &'static str {
        match self.status {
            0..=399 => "0",
            400..=499 => "4",
            _ => "8",
        }
    }

    /// The AuditEvent as it is stored: its text, written straight from the event (no JSON
    /// tree), with a fresh id; and its search columns, taken from the event too (a unit test
    /// checks them against what the generic index extraction finds in the text).
    pub fn record(&self, server: &str, recorded: DateTime<Utc>) -> AuditRecord {
        let id = crate::fhir::id::new_time_ordered_id();
        let last_updated = Utc::now().trunc_subsecs(6);
        let users = format!("{server}/auth/users");
        let clients = format!("{server}/auth/clients");
        let recorded_text = recorded.to_rfc3339_opts(SecondsFormat::Millis, true);

        let mut agent = Vec::with_capacity(3);
        if self.agent.fhir_user.is_some() || self.agent.subject.is_some() {
            agent.push(json::Agent {
                kind: json::Codeable::of(
                    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "IRCP",
                    "information recipient",
                ),
                who: Some(json::Who {
                    reference: self.agent.fhir_user.as_deref(),
                    identifier: self.agent.subject.as_deref().map(|value| json::Identifier {
                        system: Some(&users),
                        value,
                    }),
                    display: None,
                }),
                requestor: true,
                network: None,
            });
        }
        agent.push(json::Agent {
            kind: match self.kind {
                Kind::Token | Kind::Introspect | Kind::Revoke | Kind::Consent | Kind::Launch => {
                    json::Codeable::of(DCM, "110150", "Application")
                }
                Kind::Rest | Kind::Login => json::Codeable::of(DCM, "110153", "Source Role ID"),
            },
            who: self.agent.client_id.as_deref().map(|value| json::Who {
                reference: None,
                identifier: Some(json::Identifier {
                    system: Some(&clients),
                    value,
                }),
                display: None,
            }),
            requestor: agent.is_empty(),
            network: self
                .agent
                .address
                .as_deref()
                .map(|address| json::Network { address, kind: "2" }),
        });
        agent.push(json::Agent {
            kind: json::Codeable::of(DCM, "110152", "Destination Role ID"),
            who: Some(json::Who {
                reference: None,
                identifier: None,
                display: Some("Hearth"),
            }),
            requestor: false,
            network: Some(json::Network {
                address: server,
                kind: "5",
            }),
        });

        let patients: Vec<String> = self
            .patients
            .iter()
            .map(|p| format!("Patient/{p}"))
            .collect();
        let mut entity =
            Vec::with_capacity(patients.len() + self.users.len() + self.entities.len() + 2);
        // The patients, the users and the resources the interaction touched, each with the
        // `type` and `role` that say which of the three it is.
        let named = [
            (&patients, ("1", "Person"), ("1", "Patient")),
            (&self.users, ("1", "Person"), ("6", "User")),
            (
                &self.entities,
                ("2", "System Object"),
                ("4", "Domain Resource"),
            ),
        ];
        for (references, (kind, kind_name), (role, role_name)) in named {
            for reference in references {
                entity.push(json::Entity {
                    what: Some(json::What::Reference { reference }),
                    kind: json::Coding::new(ENTITY_TYPE, kind, kind_name),
                    role: Some(json::Coding::new(ROLE, role, role_name)),
                    query: None,
                });
            }
        }
        // BALP's transaction entity: the request id, to find the server's log lines.
        if let Some(value) = &self.request_id {
            entity.push(json::Entity {
                what: Some(json::What::Identifier {
                    identifier: json::Identifier {
                        system: None,
                        value,
                    },
                }),
                kind: json::Coding::new(
                    "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
                    "XrequestId",
                    "X-Request-Id",
                ),
                role: None,
                query: None,
            });
        }
        if let Some(q) = &self.query {
            entity.push(json::Entity {
                what: None,
                kind: json::Coding::new(ENTITY_TYPE, "2", "System Object"),
                role: Some(if self.kind.at_oauth_endpoint() {
                    // IHE.IUA.71's token-request: the URL requested.
                    json::Coding::new(ROLE, "13", "Security Resource")
                } else {
                    json::Coding::new(ROLE, "24", "Query")
                }),
                query: Some(STANDARD.encode(q.as_bytes())),
            });
        }
        let outcome_desc = match &self.description {
            Some(d) => Some(d.clone()),
            None if self.status >= 400 => Some(format!("HTTP {}", self.status)),
            None => None,
        };
        let last_updated_text = crate::fhir::datetime::format_instant(last_updated);
        let (type_coding, subtype_coding) = self.codings();
        let (type_system, type_code) = (type_coding.system, type_coding.code);
        let (subtype_system, subtype_code) = (subtype_coding.system, subtype_coding.code);
        let event = json::AuditEvent {
            resource_type: "AuditEvent",
            id: &id,
            meta: json::Meta {
                version_id: "1",
                last_updated: &last_updated_text,
            },
            kind: type_coding,
            subtype: [subtype_coding],
            action: self.action.code(),
            recorded: &recorded_text,
            outcome: self.outcome(),
            outcome_desc: outcome_desc.as_deref(),
            agent,
            source: json::Source {
                site: server,
                observer: json::Who {
                    reference: None,
                    identifier: None,
                    display: Some("Hearth"),
                },
                kind: [json::Coding::new(
                    "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "4",
                    "Application Server",
                )],
            },
            entity,
        };
        // Written into a buffer of about its size (a read's event is 1.85 kB, each further
        // entity ~0.25 kB) instead of one that grows from 128 bytes.
        let mut text = Vec::with_capacity(1536 + 256 * event.entity.len());
        let body = match serde_json::to_writer(&mut text, &event) {
            Ok(()) => String::from_utf8(text).unwrap_or_default(),
            Err(_) => String::new(),
        };

        let mut refs = Vec::with_capacity(8);
        let reference = |param: &'static str, r: &str| {
            let (kind, rest) = r.split_once('/')?;
            let id = rest.split('/').next()?;
            Some(AuditRef {
                param,
                system: Some(kind.to_string()),
                value: id.to_string(),
            })
        };
        let token = |param: &'static str, system: Option<&str>, value: &str| AuditRef {
            param,
            system: system.map(str::to_string),
            value: value.to_string(),
        };
        if let Some(user) = &self.agent.fhir_user {
            refs.extend(reference("agent", user));
            if user.starts_with("Patient/") {
                refs.extend(reference("patient", user));
            }
        }
        if let Some(subject) = &self.agent.subject {
            refs.push(token("agent:identifier", Some(&users), subject));
        }
        if let Some(client) = &self.agent.client_id {
            refs.push(token("agent:identifier", Some(&clients), client));
        }
        // A Patient entity is a patient too; `normalise` keeps one row for both.
        for r in patients.iter().chain(&self.users).chain(&self.entities) {
            refs.extend(reference("entity", r));
        }
        if let Some(id) = &self.request_id {
            refs.push(token("entity:identifier", None, id));
        }
        refs.push(token("subtype", Some(subtype_system), subtype_code));
        let refs = normalise(refs);
        let lo = recorded.timestamp_millis() * 1000;
        AuditRecord {
            id,
            recorded: (lo, lo + 1000),
            last_updated,
            type_system: Some(type_system.to_string()),
            type_code: Some(type_code.to_string()),
            action: Some(self.action.code().to_string()),
            outcome: Some(self.outcome().to_string()),
            body,
            refs,
        }
    }
}

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const AUTHZ: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType";

/// The JSON shape of the AuditEvents Hearth writes, borrowed from the event.
mod json {
    use serde::Serialize;

    #[derive(Serialize)]
    pub struct Coding<'a> {
        pub system: &'a str,
        pub code: &'a str,
        pub display: &'a str,
    }

    impl<'a> Coding<'a> {
        pub fn new(system: &'a str, code: &'a str, display: &'a str) -> Coding<'a> {
            Coding {
                system,
                code,
                display,
            }
        }
    }

    #[derive(Serialize)]
    pub struct Codeable<'a> {
        pub coding: [Coding<'a>; 1],
    }

    impl<'a> Codeable<'a> {
        pub fn of(system: &'a str, code: &'a str, display: &'a str) -> Codeable<'a> {
            Codeable {
                coding: [Coding::new(system, code, display)],
            }
        }
    }

    #[derive(Serialize)]
    pub struct Identifier<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub system: Option<&'a str>,
        pub value: &'a str,
    }

    #[derive(Serialize)]
    pub struct Who<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub reference: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub identifier: Option<Identifier<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub display: Option<&'a str>,
    }

    #[derive(Serialize)]
    pub struct Network<'a> {
        pub address: &'a str,
        #[serde(rename = "type")]
        pub kind: &'a str,
    }

    #[derive(Serialize)]
    pub struct Agent<'a> {
        #[serde(rename = "type")]
        pub kind: Codeable<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub who: Option<Who<'a>>,
        pub requestor: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub network: Option<Network<'a>>,
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    pub enum What<'a> {
        Reference { reference: &'a str },
        Identifier { identifier: Identifier<'a> },
    }

    #[derive(Serialize)]
    pub struct Entity<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub what: Option<What<'a>>,
        #[serde(rename = "type")]
        pub kind: Coding<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub role: Option<Coding<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub query: Option<String>,
    }

    #[derive(Serialize)]
    pub struct Source<'a> {
        pub site: &'a str,
        pub observer: Who<'a>,
        #[serde(rename = "type")]
        pub kind: [Coding<'a>; 1],
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Meta<'a> {
        pub version_id: &'a str,
        pub last_updated: &'a str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AuditEvent<'a> {
        pub resource_type: &'a str,
        pub id: &'a str,
        pub meta: Meta<'a>,
        #[serde(rename = "type")]
        pub kind: Coding<'a>,
        pub subtype: [Coding<'a>; 1],
        pub action: &'a str,
        pub recorded: &'a str,
        pub outcome: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub outcome_desc: Option<&'a str>,
        pub agent: Vec<Agent<'a>>,
        pub source: Source<'a>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub entity: Vec<Entity<'a>>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::registry::Registry;
    use crate::store::audit_events::record_of;
    use crate::store::Indexer;
    use serde_json::Value;

    /// A practitioner signed in to an app.
    fn drjones() -> Agent {
        Agent {
            fhir_user: Some("Practitioner/7".into()),
            subject: Some("drjones".into()),
            client_id: Some("app".into()),
            address: Some("10.0.0.5".into()),
        }
    }

    fn search_event() -> Event {
        let mut e = Event::new("search-type", 200, drjones());
        e.query = Some("Observation?code=1234-5".into());
        e.patients = vec!["p1".into(), "p2".into()];
        e.entities = vec!["Observation/o1/_history/3".into()];
        e.request_id = Some("r-1".into());
        e
    }

    fn resource(e: &Event) -> Value {
        serde_json::from_str(&e.record("http://h/fhir", Utc::now()).body).unwrap()
    }

    #[test]
    fn a_search_names_its_query_and_every_patient() {
        let v = resource(&search_event());
        assert_eq!(v["resourceType"], "AuditEvent");
        assert_eq!(v["meta"]["versionId"], "1");
        assert_eq!(v["action"], "R");
        assert_eq!(v["outcome"], "0");
        assert_eq!(v["subtype"][0]["code"], "search-type");
        let entities = v["entity"].as_array().unwrap();
        assert_eq!(entities.len(), 5);
        assert_eq!(entities[0]["what"]["reference"], "Patient/p1");
        assert_eq!(entities[1]["what"]["reference"], "Patient/p2");
        assert_eq!(
            entities[2]["what"]["reference"],
            "Observation/o1/_history/3"
        );
        assert_eq!(entities[3]["what"]["identifier"]["value"], "r-1");
        assert_eq!(
            STANDARD
                .decode(entities[4]["query"].as_str().unwrap())
                .unwrap(),
            b"Observation?code=1234-5"
        );
        let agents = v["agent"].as_array().unwrap();
        assert_eq!(agents[0]["who"]["reference"], "Practitioner/7");
        assert_eq!(agents[0]["requestor"], true);
        assert_eq!(agents[1]["network"]["address"], "10.0.0.5");
        assert_eq!(agents[1]["who"]["identifier"]["value"], "app");
        assert_eq!(agents[1]["requestor"], false);
    }

    /// The search columns written straight from the event are those the generic index
    /// extraction finds in its text, so client-sent and Hearth-written events search alike.
    #[test]
    fn the_search_columns_match_what_the_index_extraction_finds() {
        let indexer = Indexer::new(Registry::r4().clone(), "http://h/fhir".into());
        let mut patient_reads = search_event();
        patient_reads.agent.fhir_user = Some("Patient/p9".into());
        for e in [
            search_event(),
            patient_reads,
            Event::new("read", 401, Agent::default()),
            sign_in(),
            token_request(),
            consent(),
            Event::oauth(Kind::Introspect, 200, drjones(), "http://h/auth/introspect"),
            introspection_disclosing(),
            Event::oauth(Kind::Revoke, 401, Agent::default(), "http://h/auth/revoke"),
            ehr_launch(),
        ] {
            let direct = e.record("http://h/fhir", Utc::now());
            let body: Value = serde_json::from_str(&direct.body).unwrap();
            let generic = record_of(&indexer, &body, direct.body.clone(), direct.last_updated);
            assert_eq!(direct, generic);
        }
    }

    #[test]
    fn refusals_are_minor_failures_and_anonymous_requests_still_have_a_requestor() {
        let e = Event::new("read", 401, Agent::default());
        let v = resource(&e);
        assert_eq!(v["outcome"], "4");
        assert_eq!(v["outcomeDesc"], "HTTP 401");
        assert_eq!(v["agent"][0]["requestor"], true);
        assert!(v.get("entity").is_none());
        assert_eq!(Event::new("x", 503, Agent::default()).outcome(), "8");
    }

    fn sign_in() -> Event {
        let mut e = Event::login(401, drjones());
        e.description = Some("the user name, password or code is wrong".into());
        e
    }

    #[test]
    fn a_sign_in_is_a_user_authentication_event() {
        let v = resource(&sign_in());
        assert_eq!(v["type"]["system"], DCM);
        assert_eq!(v["type"]["code"], "110114");
        assert_eq!(v["subtype"][0]["code"], "110122");
        assert_eq!(v["action"], "E");
        assert_eq!(v["outcome"], "4");
        assert_eq!(v["outcomeDesc"], "the user name, password or code is wrong");
        assert_eq!(v["agent"][0]["who"]["reference"], "Practitioner/7");
        assert_eq!(v["agent"][1]["network"]["address"], "10.0.0.5");
        assert!(v.get("entity").is_none());
    }

    fn token_request() -> Event {
        let service = Agent {
            client_id: Some("engine".into()),
            address: Some("10.0.0.9".into()),
            ..Agent::default()
        };
        Event::token(200, service, "http://h/auth/token")
    }

    #[test]
    fn a_token_request_follows_balp_iua_71() {
        let v = resource(&token_request());
        assert_eq!(v["type"]["code"], "110114");
        assert_eq!(v["subtype"][0]["system"], "urn:ihe:event-type-code");
        assert_eq!(v["subtype"][0]["code"], "ITI-71");
        assert_eq!(v["outcome"], "0");
        let client = &v["agent"][0];
        assert_eq!(client["type"]["coding"][0]["code"], "110150");
        assert_eq!(client["who"]["identifier"]["value"], "engine");
        assert_eq!(client["requestor"], true);
        assert_eq!(client["network"]["address"], "10.0.0.9");
        assert_eq!(v["agent"][1]["type"]["coding"][0]["code"], "110152");
        let entity = v["entity"].as_array().unwrap();
        assert_eq!(entity.len(), 1);
        assert_eq!(entity[0]["role"]["code"], "13");
        let url = STANDARD
            .decode(entity[0]["query"].as_str().unwrap())
            .unwrap();
        assert_eq!(url, b"http://h/auth/token");
    }

    fn consent() -> Event {
        Event::consent(false, drjones(), Some("p1".into()))
    }

    #[test]
    fn a_consent_decision_follows_balp_authz_consent() {
        let v = resource(&consent());
        assert_eq!(v["type"]["code"], "110113");
        assert_eq!(v["subtype"][0]["code"], "AuthZ-Consent");
        assert_eq!(v["action"], "E");
        assert_eq!(v["outcome"], "4", "declined");
        assert_eq!(v["agent"][0]["who"]["reference"], "Practitioner/7");
        assert_eq!(v["agent"][1]["type"]["coding"][0]["code"], "110150");
        assert_eq!(v["entity"][0]["what"]["reference"], "Patient/p1");
        assert_eq!(v["entity"][0]["role"]["code"], "1");
        let allowed = resource(&Event::consent(true, drjones(), None));
        assert_eq!(allowed["outcome"], "0");
        assert!(allowed.get("entity").is_none());
    }

    fn ehr_launch() -> Event {
        Event::launch(200, drjones(), Some("p1".into()), "http://h/auth/launch")
    }

    #[test]
    fn a_launch_context_is_a_role_based_authorization_decision() {
        let v = resource(&ehr_launch());
        assert_eq!(v["type"]["code"], "110113");
        assert_eq!(v["subtype"][0]["code"], "AuthZ-Role");
        assert_eq!(v["action"], "E");
        assert_eq!(v["outcome"], "0");
        assert_eq!(v["agent"][0]["who"]["reference"], "Practitioner/7");
        assert_eq!(v["agent"][1]["type"]["coding"][0]["code"], "110150");
        let entity = v["entity"].as_array().unwrap();
        assert_eq!(entity.len(), 2);
        assert_eq!(entity[0]["what"]["reference"], "Patient/p1");
        assert_eq!(entity[1]["role"]["code"], "13");
        let refused = resource(&Event::launch(403, drjones(), None, "http://h/auth/launch"));
        assert_eq!(refused["outcome"], "4");
        assert_eq!(refused["entity"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn introspection_and_revocation_are_recorded_like_token_requests() {
        let v = resource(&Event::oauth(
            Kind::Introspect,
            200,
            drjones(),
            "http://h/auth/introspect",
        ));
        assert_eq!(v["subtype"][0]["code"], "ITI-102");
        assert_eq!(v["agent"][1]["type"]["coding"][0]["code"], "110150");
        assert_eq!(v["entity"][0]["role"]["code"], "13");
        let v = resource(&Event::oauth(
            Kind::Revoke,
            200,
            Agent::default(),
            "http://h/auth/revoke",
        ));
        assert_eq!(v["subtype"][0]["code"], "110123");
        assert_eq!(v["action"], "E");
    }

    /// An introspection whose answer disclosed the token's user and patient context.
    fn introspection_disclosing() -> Event {
        let mut e = Event::oauth(Kind::Introspect, 200, drjones(), "http://h/auth/introspect");
        e.users = vec!["Practitioner/8".into()];
        e.patients = vec!["p1".into()];
        e
    }

    #[test]
    fn an_introspection_names_the_user_and_patient_it_disclosed() {
        let v = resource(&introspection_disclosing());
        let entity = v["entity"].as_array().unwrap();
        assert_eq!(entity.len(), 3, "{v}");
        assert_eq!(entity[0]["what"]["reference"], "Patient/p1");
        assert_eq!(entity[0]["role"]["code"], "1");
        assert_eq!(entity[1]["what"]["reference"], "Practitioner/8");
        assert_eq!(entity[1]["type"]["code"], "1");
        assert_eq!(entity[1]["role"]["code"], "6");
        assert_eq!(entity[2]["role"]["code"], "13");
        let refs = introspection_disclosing()
            .record("http://h/fhir", Utc::now())
            .refs;
        let entities: Vec<&str> = refs
            .iter()
            .filter(|r| r.param == "entity")
            .map(|r| r.value.as_str())
            .collect();
        assert_eq!(entities, ["p1", "8"]);
    }

    #[test]
    fn actions_follow_the_interaction() {
        assert_eq!(Action::of("patch"), Action::Update);
        assert_eq!(Action::of("history-type"), Action::Read);
        assert_eq!(Action::of("transaction"), Action::Execute);
        assert_eq!(Action::of("create"), Action::Create);
    }
}

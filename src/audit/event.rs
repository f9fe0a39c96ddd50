//! The AuditEvent of one RESTful interaction, shaped as the IHE Basic Audit Log Patterns
//! implementation guide describes it on R4: `type` rest with the interaction as `subtype`,
//! the user, the client application (with its network address) and this server as agents,
//! this server as `source`, and as entities the resources touched, the query of a search and
//! every patient whose data was disclosed or changed.
//! <https://hl7.org/fhir/R4/auditevent.html>,
//! <https://profiles.ihe.net/ITI/BALP/content.html>

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

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

/// One interaction to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
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
    /// The request's `X-Request-Id`, to correlate with the server's logs.
    pub request_id: Option<String>,
    /// Words for `outcomeDesc` (failures say their HTTP status without them).
    pub description: Option<String>,
}

impl Event {
    pub fn new(interaction: &str, status: u16, agent: Agent) -> Event {
        Event {
            interaction: interaction.to_string(),
            action: Action::of(interaction),
            status,
            agent,
            entities: Vec::new(),
            query: None,
            patients: Vec::new(),
            request_id: None,
            description: None,
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

    /// The AuditEvent resource (without an id: the store gives it one).
    pub fn to_resource(&self, server: &str, recorded: DateTime<Utc>) -> Value {
        let coding = |system: &str, code: &str, display: &str| json!({"system": system, "code": code, "display": display});
        const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
        const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
        const ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";

        let mut agents = Vec::new();
        if self.agent.fhir_user.is_some() || self.agent.subject.is_some() {
            let mut who = json!({});
            if let Some(u) = &self.agent.fhir_user {
                who["reference"] = json!(u);
            }
            if let Some(s) = &self.agent.subject {
                who["identifier"] = json!({"system": format!("{server}/auth/users"), "value": s});
            }
            agents.push(json!({
                "type": {"coding": [coding(
                    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "IRCP",
                    "information recipient",
                )]},
                "who": who,
                "requestor": true,
            }));
        }
        let mut client = json!({
            "type": {"coding": [coding(DCM, "110153", "Source Role ID")]},
            "requestor": agents.is_empty(),
        });
        if let Some(c) = &self.agent.client_id {
            client["who"] =
                json!({"identifier": {"system": format!("{server}/auth/clients"), "value": c}});
        }
        if let Some(a) = &self.agent.address {
            client["network"] = json!({"address": a, "type": "2"});
        }
        agents.push(client);
        agents.push(json!({
            "type": {"coding": [coding(DCM, "110152", "Destination Role ID")]},
            "who": {"display": "Hearth"},
            "requestor": false,
            "network": {"address": server, "type": "5"},
        }));

        let mut entities: Vec<Value> = self
            .patients
            .iter()
            .map(|p| {
                json!({
                    "what": {"reference": format!("Patient/{p}")},
                    "type": coding(ENTITY_TYPE, "1", "Person"),
                    "role": coding(ROLE, "1", "Patient"),
                })
            })
            .collect();
        entities.extend(self.entities.iter().map(|e| {
            json!({
                "what": {"reference": e},
                "type": coding(ENTITY_TYPE, "2", "System Object"),
                "role": coding(ROLE, "4", "Domain Resource"),
            })
        }));
        // BALP's transaction entity: the request id, to find the server's log lines.
        if let Some(id) = &self.request_id {
            entities.push(json!({
                "what": {"identifier": {"value": id}},
                "type": coding(
                    "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
                    "XrequestId",
                    "X-Request-Id",
                ),
            }));
        }
        if let Some(q) = &self.query {
            entities.push(json!({
                "type": coding(ENTITY_TYPE, "2", "System Object"),
                "role": coding(ROLE, "24", "Query"),
                "query": STANDARD.encode(q.as_bytes()),
            }));
        }

        let mut event = json!({
            "resourceType": "AuditEvent",
            "type": coding(
                "http://terminology.hl7.org/CodeSystem/audit-event-type",
                "rest",
                "Restful Operation",
            ),
            "subtype": [coding("http://hl7.org/fhir/restful-interaction", &self.interaction, &self.interaction)],
            "action": self.action.code(),
            "recorded": recorded.to_rfc3339_opts(SecondsFormat::Millis, true),
            "outcome": self.outcome(),
            "agent": agents,
            "source": {
                "site": server,
                "observer": {"display": "Hearth"},
                "type": [coding(
                    "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "4",
                    "Application Server",
                )],
            },
        });
        match &self.description {
            Some(d) => event["outcomeDesc"] = json!(d),
            None if self.status >= 400 => {
                event["outcomeDesc"] = json!(format!("HTTP {}", self.status))
            }
            None => {}
        }
        if !entities.is_empty() {
            event["entity"] = json!(entities);
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_event() -> Event {
        let mut e = Event::new(
            "search-type",
            200,
            Agent {
                fhir_user: Some("Practitioner/7".into()),
                subject: Some("drjones".into()),
                client_id: Some("app".into()),
                address: Some("10.0.0.5".into()),
            },
        );
        e.query = Some("Observation?code=1234-5".into());
        e.patients = vec!["p1".into(), "p2".into()];
        e.request_id = Some("r-1".into());
        e
    }

    #[test]
    fn a_search_names_its_query_and_every_patient() {
        let v = search_event().to_resource("http://h/fhir", Utc::now());
        assert_eq!(v["action"], "R");
        assert_eq!(v["outcome"], "0");
        assert_eq!(v["subtype"][0]["code"], "search-type");
        let entities = v["entity"].as_array().unwrap();
        assert_eq!(entities.len(), 4);
        assert_eq!(entities[2]["what"]["identifier"]["value"], "r-1");
        assert_eq!(entities[0]["what"]["reference"], "Patient/p1");
        assert_eq!(entities[1]["what"]["reference"], "Patient/p2");
        assert_eq!(
            STANDARD
                .decode(entities[3]["query"].as_str().unwrap())
                .unwrap(),
            b"Observation?code=1234-5"
        );
        let agents = v["agent"].as_array().unwrap();
        assert_eq!(agents[0]["who"]["reference"], "Practitioner/7");
        assert_eq!(agents[0]["requestor"], true);
        assert_eq!(agents[1]["network"]["address"], "10.0.0.5");
        assert_eq!(agents[1]["who"]["identifier"]["value"], "app");
    }

    #[test]
    fn refusals_are_minor_failures_and_anonymous_requests_still_have_a_requestor() {
        let e = Event::new("read", 401, Agent::default());
        let v = e.to_resource("http://h/fhir", Utc::now());
        assert_eq!(v["outcome"], "4");
        assert_eq!(v["outcomeDesc"], "HTTP 401");
        assert_eq!(v["agent"][0]["requestor"], true);
        assert!(v.get("entity").is_none());
        assert_eq!(Event::new("x", 503, Agent::default()).outcome(), "8");
    }

    #[test]
    fn actions_follow_the_interaction() {
        assert_eq!(Action::of("patch"), Action::Update);
        assert_eq!(Action::of("history-type"), Action::Read);
        assert_eq!(Action::of("transaction"), Action::Execute);
        assert_eq!(Action::of("create"), Action::Create);
    }
}

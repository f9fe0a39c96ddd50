//! Applies the policy's answer (`auth::Access::decide`) to each kind of request: a search is
//! confined to what the token may see (its matches and whatever its chains, `_has`,
//! includes and revincludes touch), a read or write is refused if the resource is outside
//! the token's reach. The decision itself is `auth::policy`'s alone.
//! <https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html>

use serde_json::Value;

use super::AppState;
use crate::auth::scope::Interaction;
use crate::auth::Access;
use crate::error::{Error, Result};
use crate::search::compartment;
use crate::search::query::{self, Filter, Search};
use crate::store::{HistoryScope, ResourceStore, Version};

/// Confines a parsed search to what `access` may search; refuses it (403) when a type it
/// looks at may not be searched at all.
pub fn search(state: &AppState, access: &Access, search: &mut Search) -> Result<()> {
    if matches!(access, Access::Open) {
        return Ok(());
    }
    let types = if search.types.is_empty() {
        vec![search.resource_type.clone()]
    } else {
        search.types.clone()
    };
    for f in &search.filters {
        for t in referenced_types(f) {
            access.decide(&t, Interaction::Search)?;
        }
    }
    let registry = state.store.indexer().registry();
    let mut limits = Vec::new();
    for t in &types {
        limits.push(access.decide(t, Interaction::Search)?);
    }
    let narrowed = limits
        .iter()
        .any(|l| l.patient.is_some() || !l.query.is_empty());
    if !narrowed {
        return Ok(());
    }
    if types.len() > 1 {
        return Err(Error::forbidden(
            "this token is limited to part of the data: search one resource type at a time",
        ));
    }
    let limits = &limits[0];
    if let Some(patient) = &limits.patient {
        compartment::confine_to_patient(search, &registry, patient);
    }
    if !limits.query.is_empty() {
        let restriction = query::parse(
            &registry,
            &state.base_url,
            &search.resource_type,
            &limits.query,
            false,
        )
        .map_err(|e| {
            Error::forbidden(format!(
                "the scope's query cannot be applied: {}",
                e.message
            ))
        })?;
        search.filters.extend(restriction.filters);
    }
    Ok(())
}

/// The types a chain or `_has` filter looks into.
fn referenced_types(f: &Filter) -> Vec<String> {
    match f {
        Filter::Chain { targets, .. } => targets
            .iter()
            .flat_map(|(t, inner)| {
                let mut v = vec![t.clone()];
                v.extend(referenced_types(inner));
                v
            })
            .collect(),
        Filter::Has {
            source_type, inner, ..
        } => {
            let mut v = vec![source_type.clone()];
            v.extend(referenced_types(inner));
            v
        }
        Filter::AnyOf(fs) | Filter::AllOf(fs) => fs.iter().flat_map(referenced_types).collect(),
        Filter::Ids(_) | Filter::Match { .. } | Filter::Missing { .. } => Vec::new(),
    }
}

/// Whether `access` may see this stored resource, decided in memory: used for included
/// resources and history entries, which are dropped when not. A scope with a query
/// restriction cannot be checked here, so its resources are not shown this way.
pub fn visible(state: &AppState, access: &Access, v: &Version) -> bool {
    let Ok(limits) = access.decide(&v.resource_type, Interaction::Read) else {
        return false;
    };
    if !limits.query.is_empty() {
        return false;
    }
    match (&limits.patient, &v.body) {
        (None, _) => true,
        (Some(patient), Some(body)) => {
            in_compartment(state, &v.resource_type, &v.id, body, patient)
        }
        // A deletion shows nothing but the id.
        (Some(_), None) => compartment::links("Patient", &v.resource_type).is_none(),
    }
}

fn in_compartment(
    state: &AppState,
    resource_type: &str,
    id: &str,
    body: &Value,
    patient: &str,
) -> bool {
    let rows = state.store.indexer().rows(body);
    compartment::visible_to_patient(resource_type, id, &rows, patient)
}

/// A read or vread: 403 unless the resource is within the token's reach.
pub async fn read(state: &AppState, access: &Access, v: &Version) -> Result<()> {
    let limits = access.decide(&v.resource_type, Interaction::Read)?;
    if let (Some(patient), Some(body)) = (&limits.patient, &v.body) {
        if !in_compartment(state, &v.resource_type, &v.id, body, patient) {
            return Err(outside(&v.resource_type));
        }
    }
    if !limits.query.is_empty() {
        let mut params = limits.query.clone();
        params.push(("_id".into(), v.id.clone()));
        let registry = state.store.indexer().registry();
        let check = query::parse(&registry, &state.base_url, &v.resource_type, &params, false)
            .map_err(|e| {
                Error::forbidden(format!(
                    "the scope's query cannot be applied: {}",
                    e.message
                ))
            })?;
        if state.store.matches(&check, 1).await?.is_empty() {
            return Err(Error::forbidden(format!(
                "this {} is outside what the token's scope query allows",
                v.resource_type
            )));
        }
    }
    Ok(())
}

/// A create, update, patch or delete of `resource_type`/`id`: the token must permit the
/// interaction, and a patient-confined token must leave the resource (before and after) in
/// the patient's compartment. Writes under a scope with a query restriction are refused.
pub async fn write(
    state: &AppState,
    access: &Access,
    resource_type: &str,
    id: Option<&str>,
    interaction: Interaction,
    new_body: Option<&Value>,
) -> Result<()> {
    let limits = access.decide(resource_type, interaction)?;
    if !limits.query.is_empty() {
        return Err(Error::forbidden(
            "writes are not allowed under a scope with a query restriction",
        ));
    }
    let Some(patient) = &limits.patient else {
        return Ok(());
    };
    if let Some(body) = new_body {
        let new_id = body["id"].as_str().or(id).unwrap_or("");
        if !in_compartment(state, resource_type, new_id, body, patient) {
            return Err(outside(resource_type));
        }
    }
    if let (Some(id), Interaction::Update | Interaction::Delete) = (id, interaction) {
        if let Some(current) = state.store.read(resource_type, id).await? {
            if let Some(body) = &current.body {
                if !in_compartment(state, resource_type, id, body, patient) {
                    return Err(outside(resource_type));
                }
            }
        }
    }
    Ok(())
}

/// History: of one resource, the versions the token may see; of a type or the whole
/// system, only for a token that may read all of it (a history cannot be confined to a
/// compartment: old versions may have belonged elsewhere).
pub fn history(state: &AppState, access: &Access, scope: &HistoryScope) -> Result<()> {
    let _ = state;
    let unrestricted = |t: &str| -> Result<bool> {
        let limits = access.decide(t, Interaction::Read)?;
        Ok(limits.query.is_empty()
            && (limits.patient.is_none()
                || compartment::links("Patient", t).is_none() && t != "Patient"))
    };
    let whole = |t: &str| -> Result<()> {
        if unrestricted(t)? {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "this token may see only part of {t}: ask for one resource's history, or search"
            )))
        }
    };
    match scope {
        HistoryScope::Instance(t, _) => access.decide(t, Interaction::Read).map(|_| ()),
        HistoryScope::Type(t) => whole(t),
        HistoryScope::System => {
            if matches!(access, Access::Open) {
                return Ok(());
            }
            crate::fhir::resource_type::RESOURCE_TYPES
                .iter()
                .try_for_each(|t| whole(t))
        }
    }
}

fn outside(resource_type: &str) -> Error {
    Error::forbidden(format!(
        "this {resource_type} is outside the patient compartment the token is limited to"
    ))
}

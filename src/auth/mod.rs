//! SMART on FHIR authorization: scopes (`scope`), the policy that turns a principal's scopes
//! and role into allow / deny / narrow (`policy`), and Hearth's own authorization server
//! (`server`, with its `keys` and `accounts`; the flows in `login`, `token` and `assertion`).
//! <https://hl7.org/fhir/smart-app-launch/>

pub mod accounts;
mod assertion;
pub mod keys;
pub mod login;
pub mod policy;
pub mod scope;
pub mod server;
pub mod token;

use std::sync::Arc;

use crate::error::{Error, Result};
use policy::{Decision, Limits, Principal};
use scope::Interaction;

/// Who is asking, as the HTTP layer established it before any handler runs.
#[derive(Debug, Clone)]
pub enum Access {
    /// Authorization is off (`--auth off`): everything is allowed.
    Open,
    /// A verified access token.
    Token(Arc<Principal>),
    /// Nothing established who is asking (a route outside the authentication layer):
    /// everything is refused.
    Anonymous,
}

impl Access {
    /// The policy's answer for `interaction` on `resource_type`: the limits to apply, or a
    /// 403 saying why not.
    pub fn decide(&self, resource_type: &str, interaction: Interaction) -> Result<Limits> {
        match self {
            Access::Open => Ok(Limits::default()),
            Access::Token(p) => match policy::decide(p, resource_type, interaction) {
                Decision::Allow(limits) => Ok(limits),
                Decision::Deny(why) => Err(Error::forbidden(why)),
            },
            Access::Anonymous => Err(Error::forbidden("no access token was presented")),
        }
    }

    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Access::Open | Access::Anonymous => None,
            Access::Token(p) => Some(p),
        }
    }
}

//! Tamper evidence: each sealed AuditEvent is linked to its predecessor by
//! `hash = SHA-256(prev_hash "\n" stored_text)`, so changing, removing or reordering a stored
//! event breaks every later link. Purging the oldest events (retention) moves the start of the
//! chain; the first remaining link's `prev` is then the anchor.

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::audit::Link;
use crate::store::Store;

/// The hash of a link. <https://doi.org/10.6028/NIST.FIPS.180-4> (SHA-256), hex.
pub fn link_hash(prev: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks one link against the hash the previous link ended with (`None` for the first
/// link present); answers why it is broken.
pub fn check(expected_prev: Option<&str>, link: &Link) -> std::result::Result<(), String> {
    if let Some(p) = expected_prev {
        if link.prev != p {
            return Err("it does not follow the previous link (an event before it was removed or reordered)".into());
        }
    }
    let Some(body) = &link.body else {
        return Err("its AuditEvent is missing (deleted behind Hearth's back)".into());
    };
    if link_hash(&link.prev, body) != link.hash {
        return Err("its AuditEvent was changed after it was recorded".into());
    }
    Ok(())
}

/// What `hearth audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Links checked.
    pub links: i64,
    /// The first broken link: its position and why.
    pub broken: Option<(i64, String)>,
    /// Where the chain starts (after a purge, the hash it starts from).
    pub first_seq: Option<i64>,
    pub anchor: Option<String>,
    /// AuditEvents not in the chain at all (inserted behind Hearth's back).
    pub outside: i64,
}

/// Seals what is queued, then walks the whole chain in order.
pub async fn verify(store: &Store) -> Result<Report> {
    let mut known = std::collections::HashMap::new();
    while store.audit_seal(1000, link_hash, &mut known).await?.len() == 1000 {}
    let state = store.audit_state().await?;
    let mut report = Report {
        links: 0,
        broken: None,
        first_seq: None,
        anchor: None,
        outside: state.outside,
    };
    let mut after = 0;
    let mut prev: Option<String> = None;
    loop {
        let links = store.audit_links(after, 1000).await?;
        if links.is_empty() {
            return Ok(report);
        }
        for link in &links {
            if report.first_seq.is_none() {
                report.first_seq = Some(link.seq);
                report.anchor = Some(link.prev.clone()).filter(|p| !p.is_empty());
            }
            report.links += 1;
            if let Err(why) = check(prev.as_deref(), link) {
                report.broken = Some((link.seq, why));
                return Ok(report);
            }
            prev = Some(link.hash.clone());
            after = link.seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(bodies: &[&str]) -> Vec<Link> {
        let mut prev = String::new();
        bodies
            .iter()
            .enumerate()
            .map(|(n, b)| {
                let hash = link_hash(&prev, b);
                let link = Link {
                    seq: n as i64 + 1,
                    key: n as i64 + 10,
                    prev: prev.clone(),
                    hash: hash.clone(),
                    body: Some(b.to_string()),
                };
                prev = hash;
                link
            })
            .collect()
    }

    fn first_break(links: &[Link]) -> Option<i64> {
        let mut prev: Option<String> = None;
        for l in links {
            if check(prev.as_deref(), l).is_err() {
                return Some(l.seq);
            }
            prev = Some(l.hash.clone());
        }
        None
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(first_break(&chain(&["a", "b", "c"])), None);
    }

    #[test]
    fn a_changed_removed_or_missing_event_breaks_the_chain_there() {
        let mut changed = chain(&["a", "b", "c"]);
        changed[1].body = Some("B".into());
        assert_eq!(first_break(&changed), Some(2));

        let mut removed = chain(&["a", "b", "c"]);
        removed.remove(1);
        assert_eq!(first_break(&removed), Some(3));

        let mut missing = chain(&["a", "b", "c"]);
        missing[2].body = None;
        assert_eq!(first_break(&missing), Some(3));

        // Rewriting a hash to match a changed body still breaks the next link.
        let mut forged = chain(&["a", "b", "c"]);
        forged[1].body = Some("B".into());
        forged[1].hash = link_hash(&forged[1].prev, "B");
        assert_eq!(first_break(&forged), Some(3));
    }
}

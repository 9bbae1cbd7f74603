//! Mesh identity: the downstream mTLS peer's SPIFFE URI SAN mapped to a principal.

use crate::policy::{Principal, SpiffeMapping};
use crate::refusal::Refusal;

/// Maps a peer's SPIFFE id to a principal; the first matching mapping wins.
pub fn authenticate<'p>(mappings: &'p [SpiffeMapping], peer: Option<&str>) -> Result<&'p Principal, Refusal> {
    let id = peer.filter(|id| id.starts_with("spiffe://")).ok_or(Refusal::MeshIdentityMissing)?;
    mappings.iter().find(|m| m.id.matches(id)).map(|m| &m.principal).ok_or(Refusal::UnknownMeshIdentity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::Glob;

    #[test]
    fn maps_known_ids_and_refuses_others() {
        let m = vec![SpiffeMapping {
            id: Glob::new("spiffe://cluster.local/ns/prod/sa/*").unwrap(),
            principal: Principal { app: Some("chatbot".into()), ..Default::default() },
        }];
        assert_eq!(authenticate(&m, Some("spiffe://cluster.local/ns/prod/sa/web")).unwrap().app.as_deref(), Some("chatbot"));
        assert_eq!(authenticate(&m, Some("spiffe://cluster.local/ns/dev/sa/web")), Err(Refusal::UnknownMeshIdentity));
        assert_eq!(authenticate(&m, None), Err(Refusal::MeshIdentityMissing));
        // A DNS or other URI SAN is not a SPIFFE identity.
        assert_eq!(authenticate(&m, Some("https://example.com")), Err(Refusal::MeshIdentityMissing));
    }
}

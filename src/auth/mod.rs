//! Who is calling and what they may do. A bearer token becomes a [`Principal`] (tenant, user,
//! delegated or application permissions); each Graph operation names the [`Access`] it needs
//! and [`Principal::authorize`] decides, answering Graph's 401/403.

pub mod dev;
pub mod jwt;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::error::{GraphError, GraphResult};
use crate::model::TenantId;

pub const READ_ALL: &str = "DeviceManagementConfiguration.Read.All";
pub const READ_WRITE_ALL: &str = "DeviceManagementConfiguration.ReadWrite.All";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A user signed in to an app: permissions in `scp`.
    Delegated,
    /// An app acting as itself: permissions in `roles`.
    Application,
}

#[derive(Clone, Debug)]
pub struct Principal {
    pub tenant: TenantId,
    pub kind: TokenKind,
    pub object_id: Option<String>,
    pub user_principal_name: Option<String>,
    pub app_id: Option<String>,
    /// `scp` (delegated) or `roles` (application), lower-cased for comparison.
    pub permissions: HashSet<String>,
    pub groups: Vec<String>,
}

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `Read.All` or `ReadWrite.All`, delegated or application.
    Read,
    /// `ReadWrite.All`, delegated or application.
    Write,
    /// Like `Read`/`Write`, but application tokens are not supported (the singleton).
    DelegatedRead,
    DelegatedWrite,
}

impl Principal {
    fn has(&self, permission: &str) -> bool {
        self.permissions.contains(&permission.to_ascii_lowercase())
    }

    pub fn authorize(&self, access: Access) -> GraphResult<()> {
        let (write, delegated_only) = match access {
            Access::Read => (false, false),
            Access::Write => (true, false),
            Access::DelegatedRead => (false, true),
            Access::DelegatedWrite => (true, true),
        };
        if delegated_only && self.kind == TokenKind::Application {
            return Err(GraphError::Forbidden(format!(
                "Application permissions are not supported for this operation; call it with a delegated (user) token that has {}.",
                if write {
                    READ_WRITE_ALL.to_string()
                } else {
                    format!("{READ_ALL} or {READ_WRITE_ALL}")
                }
            )));
        }
        let kind = match self.kind {
            TokenKind::Delegated => "delegated",
            TokenKind::Application => "application",
        };
        if write {
            if self.has(READ_WRITE_ALL) {
                return Ok(());
            }
            return Err(GraphError::Forbidden(format!(
                "Insufficient privileges to complete the operation: it requires the {kind} permission {READ_WRITE_ALL}."
            )));
        }
        if self.has(READ_ALL) || self.has(READ_WRITE_ALL) {
            return Ok(());
        }
        Err(GraphError::Forbidden(format!(
            "Insufficient privileges to complete the operation: it requires the {kind} permission {READ_ALL} or {READ_WRITE_ALL}."
        )))
    }
}

/// Remembers tokens that verified, until they expire, so a client sending the same token on
/// every request pays for the signature check once. Keyed by the whole token (never a hash that
/// could collide); only successes are kept; bounded (it starts over when full). Entries carry
/// the key-set generation they were verified under: when the keys change (jwt mode), it starts
/// over, so a token signed by a key that was dropped is not accepted from the cache.
#[derive(Default)]
pub struct VerifiedTokens {
    map: RwLock<CachedTokens>,
}

#[derive(Default)]
struct CachedTokens {
    generation: u64,
    /// foldhash (randomly seeded per process) rather than SipHash: the key is a whole token,
    /// hashed on every request.
    tokens: HashMap<String, (Arc<Principal>, i64), foldhash::fast::RandomState>,
}

const MAX_CACHED_TOKENS: usize = 10_000;

impl VerifiedTokens {
    pub fn get_or_verify(
        &self,
        token: &str,
        now: i64,
        verify: impl FnOnce(&str) -> GraphResult<(Principal, i64)>,
    ) -> GraphResult<Arc<Principal>> {
        if let Some(principal) = self.get(token, now, 0) {
            return Ok(principal);
        }
        let (principal, exp) = verify(token)?;
        let principal = Arc::new(principal);
        self.insert(token, &principal, exp, now, 0);
        Ok(principal)
    }

    /// A cached principal for `token`, if it verified under key generation `generation` and has
    /// not expired.
    pub fn get(&self, token: &str, now: i64, generation: u64) -> Option<Arc<Principal>> {
        let map = self.map.read().ok()?;
        if map.generation != generation {
            return None;
        }
        map.tokens
            .get(token)
            .filter(|(_, exp)| now < *exp)
            .map(|(p, _)| p.clone())
    }

    /// Remembers a token verified under key generation `generation`, valid until `exp`.
    pub fn insert(
        &self,
        token: &str,
        principal: &Arc<Principal>,
        exp: i64,
        now: i64,
        generation: u64,
    ) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if map.generation != generation {
            if generation < map.generation {
                return; // verified under keys that have since been replaced
            }
            map.generation = generation;
            map.tokens.clear();
        }
        if map.tokens.len() >= MAX_CACHED_TOKENS {
            map.tokens.retain(|_, (_, e)| now < *e);
            if map.tokens.len() >= MAX_CACHED_TOKENS {
                map.tokens.clear();
            }
        }
        map.tokens
            .insert(token.to_string(), (principal.clone(), exp));
    }
}

/// Extracts the bearer token from an `Authorization` header value.
pub fn bearer_token(header: Option<&http::HeaderValue>) -> GraphResult<&str> {
    let Some(value) = header else {
        return Err(GraphError::InvalidToken("Access token is empty.".into()));
    };
    let value = value.to_str().map_err(|_| {
        GraphError::InvalidToken("The Authorization header is not valid ASCII.".into())
    })?;
    let mut parts = value.splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let token = parts.next().unwrap_or_default().trim();
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(GraphError::InvalidToken(
            "The Authorization header must use the Bearer scheme.".into(),
        ));
    }
    if token.is_empty() {
        return Err(GraphError::InvalidToken("Access token is empty.".into()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(kind: TokenKind, perms: &[&str]) -> Principal {
        Principal {
            tenant: TenantId::parse("t").unwrap(),
            kind,
            object_id: None,
            user_principal_name: None,
            app_id: None,
            permissions: perms.iter().map(|p| p.to_ascii_lowercase()).collect(),
            groups: vec![],
        }
    }

    #[test]
    fn verified_tokens_expire_and_failures_are_not_kept() {
        let cache = VerifiedTokens::default();
        let ok = |_: &str| Ok((principal(TokenKind::Delegated, &[READ_ALL]), 100));
        assert!(cache.get_or_verify("t", 50, ok).is_ok());
        // A hit does not verify again...
        assert!(
            cache
                .get_or_verify("t", 99, |_| panic!("verified twice"))
                .is_ok()
        );
        // ...but an expired entry does, and the failure is not cached.
        let expired = |_: &str| Err(GraphError::InvalidToken("expired".into()));
        assert!(cache.get_or_verify("t", 100, expired).is_err());
        assert!(cache.get_or_verify("u", 1, expired).is_err());
        assert!(cache.get_or_verify("u", 1, ok).is_ok());
        // A new key generation starts over; an entry from an older one is not kept.
        let p = Arc::new(principal(TokenKind::Delegated, &[READ_ALL]));
        assert!(cache.get("u", 1, 0).is_some());
        assert!(cache.get("u", 1, 1).is_none());
        cache.insert("v", &p, 100, 1, 1);
        assert!(cache.get("v", 1, 1).is_some());
        assert!(cache.get("u", 1, 1).is_none());
        cache.insert("w", &p, 100, 1, 0);
        assert!(cache.get("w", 1, 1).is_none());
    }

    #[test]
    fn permission_table() {
        use Access::*;
        use TokenKind::*;
        let cases = [
            (Delegated, vec![], Read, false),
            (Delegated, vec![READ_ALL], Read, true),
            (Delegated, vec![READ_ALL], Write, false),
            (Delegated, vec![READ_WRITE_ALL], Write, true),
            (Delegated, vec![READ_WRITE_ALL], Read, true),
            (Application, vec![READ_ALL], Read, true),
            (Application, vec![READ_WRITE_ALL], Write, true),
            (Application, vec![READ_WRITE_ALL], DelegatedRead, false),
            (Application, vec![READ_WRITE_ALL], DelegatedWrite, false),
            (Delegated, vec![READ_ALL], DelegatedRead, true),
            (Delegated, vec![READ_ALL], DelegatedWrite, false),
            (Delegated, vec!["User.Read"], Read, false),
        ];
        for (kind, perms, access, ok) in cases {
            assert_eq!(
                principal(kind, &perms).authorize(access).is_ok(),
                ok,
                "{kind:?} {perms:?} {access:?}"
            );
        }
    }
}

//! `dev` identity mode: HS256 tokens signed with a secret generated once in the data directory.
//! `cirrus token` mints them; the server verifies them. Claims follow Entra ID's v1 access tokens
//! (`tid`, `oid`, `upn`, `scp` / `roles`, `groups`, `idtyp`) so the production mode reads the same.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::{Principal, TokenKind};
use crate::error::{GraphError, GraphResult};
use crate::model::TenantId;

pub const SECRET_FILE: &str = "dev-token-secret";
pub const AUDIENCE: &str = "https://graph.microsoft.com";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    /// The client app in v2 tokens (`appid` in v1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idtyp: Option<String>,
}

/// The HS256 key of a data directory.
#[derive(Clone)]
pub struct DevKey {
    secret: Vec<u8>,
}

impl DevKey {
    /// Reads the data directory's secret, generating it on first use. The file is created
    /// atomically (written aside, then hard-linked into place) so two processes starting at
    /// once agree on one secret.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let path = data_dir.join(SECRET_FILE);
        if !path.exists() {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let tmp: PathBuf = data_dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
            {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(hex.as_bytes())?;
                f.sync_all()?;
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            }
            // Losing the race to another process is fine: its secret wins.
            let _ = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let secret = text.trim().as_bytes().to_vec();
        anyhow::ensure!(
            secret.len() >= 32,
            "{} is too short to be a signing secret",
            path.display()
        );
        Ok(Self { secret })
    }

    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.secret),
        )?)
    }

    /// Verifies a token (signature, expiry with no leeway, audience) and reads its claims;
    /// returns the principal and the token's expiry (Unix seconds).
    pub fn verify(&self, token: &str) -> GraphResult<(Principal, i64)> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(GraphError::InvalidToken(format!(
                "The access token is larger than {MAX_TOKEN_LEN} bytes."
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_audience(&[AUDIENCE, "00000003-0000-0000-c000-000000000000"]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &validation)
            .map_err(|e| {
                GraphError::InvalidToken(
                    match e.kind() {
                        ErrorKind::ExpiredSignature => "Access token has expired or is not yet valid: the token is expired.",
                        ErrorKind::ImmatureSignature => "Access token has expired or is not yet valid: the token is not valid yet (nbf).",
                        ErrorKind::InvalidSignature => "Access token validation failure: the signature is invalid.",
                        ErrorKind::InvalidAlgorithm => "Access token validation failure: the token's algorithm is not accepted (dev mode accepts HS256 only).",
                        ErrorKind::InvalidAudience => "Access token validation failure: invalid audience.",
                        ErrorKind::MissingRequiredClaim(_) => "Access token validation failure: a required claim (exp, aud) is missing.",
                        _ => "CompactToken parsing failed: the access token is malformed.",
                    }
                    .to_string(),
                )
            })?;
        let exp = data.claims.exp;
        Ok((principal_from_claims(data.claims)?, exp))
    }
}

/// Maps Entra-style claims to a principal. Delegated vs application: `idtyp` when present
/// (Entra sets `app` on app-only tokens), else `scp` present → delegated, `roles` only → application.
pub fn principal_from_claims(c: Claims) -> GraphResult<Principal> {
    let tid = c.tid.as_deref().ok_or_else(|| {
        GraphError::InvalidToken(
            "Access token validation failure: the token has no 'tid' (tenant) claim.".into(),
        )
    })?;
    let tenant = TenantId::parse(tid).ok_or_else(|| {
        GraphError::InvalidToken(
            "Access token validation failure: the 'tid' claim is not a valid tenant id.".into(),
        )
    })?;
    let kind = match c.idtyp.as_deref() {
        Some("app") => TokenKind::Application,
        Some(_) => TokenKind::Delegated,
        None if c.scp.is_some() => TokenKind::Delegated,
        None if c.roles.is_some() => TokenKind::Application,
        None => TokenKind::Delegated,
    };
    let permissions: HashSet<String> = match kind {
        TokenKind::Delegated => c
            .scp
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect(),
        TokenKind::Application => c
            .roles
            .unwrap_or_default()
            .iter()
            .map(|r| r.to_ascii_lowercase())
            .collect(),
    };
    Ok(Principal {
        tenant,
        kind,
        object_id: c.oid,
        user_principal_name: c.upn.or(c.preferred_username),
        app_id: c.appid.or(c.azp),
        permissions,
        groups: c.groups.unwrap_or_default(),
    })
}

/// What `cirrus token` asks for.
pub struct TokenRequest {
    pub tenant: String,
    pub user: Option<String>,
    pub upn: Option<String>,
    pub scopes: Option<String>,
    pub roles: Option<String>,
    pub groups: Option<String>,
    pub expires_in: i64,
}

pub const DEV_APP_ID: &str = "c1a5c1a5-0000-4000-8000-00000000c1a5";

pub fn claims_for(req: &TokenRequest, now: i64) -> anyhow::Result<Claims> {
    anyhow::ensure!(
        TenantId::parse(&req.tenant).is_some(),
        "--tenant must be a GUID or a short name of letters, digits, '-', '_' and '.'"
    );
    let split = |s: &Option<String>| {
        s.as_deref()
            .map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    };
    let application = req.roles.is_some() && req.scopes.is_none();
    let (scp, roles, idtyp) = if application {
        (None, split(&req.roles), "app")
    } else {
        let scp = req
            .scopes
            .clone()
            .unwrap_or_else(|| super::READ_WRITE_ALL.to_string());
        (Some(scp), split(&req.roles), "user")
    };
    let oid = if application {
        None
    } else {
        Some(
            req.user
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        )
    };
    Ok(Claims {
        aud: Some(AUDIENCE.into()),
        iss: Some(format!("https://sts.windows.net/{}/", req.tenant)),
        iat: Some(now),
        nbf: Some(now.min(now + req.expires_in)),
        exp: now + req.expires_in,
        tid: Some(req.tenant.clone()),
        upn: if application { None } else { req.upn.clone() },
        oid,
        appid: Some(DEV_APP_ID.into()),
        scp,
        roles,
        groups: split(&req.groups),
        idtyp: Some(idtyp.into()),
        preferred_username: None,
        azp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DevKey {
        DevKey {
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        }
    }

    fn req() -> TokenRequest {
        TokenRequest {
            tenant: "contoso".into(),
            user: None,
            upn: None,
            scopes: None,
            roles: None,
            groups: None,
            expires_in: 3600,
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn round_trip_delegated_default() {
        let token = key().mint(&claims_for(&req(), now()).unwrap()).unwrap();
        let (p, _) = key().verify(&token).unwrap();
        assert_eq!(p.kind, TokenKind::Delegated);
        assert_eq!(p.tenant.as_str(), "contoso");
        assert!(
            p.permissions
                .contains(&super::super::READ_WRITE_ALL.to_ascii_lowercase())
        );
    }

    #[test]
    fn roles_make_application_token() {
        let r = TokenRequest {
            roles: Some(super::super::READ_ALL.into()),
            ..req()
        };
        let (p, _) = key()
            .verify(&key().mint(&claims_for(&r, now()).unwrap()).unwrap())
            .unwrap();
        assert_eq!(p.kind, TokenKind::Application);
    }

    #[test]
    fn expired_and_forged_tokens_are_refused() {
        let r = TokenRequest {
            expires_in: -5,
            ..req()
        };
        let token = key().mint(&claims_for(&r, now()).unwrap()).unwrap();
        assert!(
            key()
                .verify(&token)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
        let other = DevKey {
            secret: b"another-secret-another-secret-xx".to_vec(),
        };
        let forged = other.mint(&claims_for(&req(), now()).unwrap()).unwrap();
        assert!(
            key()
                .verify(&forged)
                .unwrap_err()
                .to_string()
                .contains("signature")
        );
        assert!(key().verify("not.a.token").is_err());
    }
}

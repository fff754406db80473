//! `jwt` identity mode (production): RS256/ES256 access tokens issued by an identity provider
//! (Microsoft Entra ID first), verified against a JSON Web Key Set read from a URL or a file.
//!
//! * The algorithm comes from the key (JWK `alg`, else `kty`/`crv`), never from the token
//!   header; `alg: none` and every HMAC token are refused before any key is looked up.
//! * Keys are cached. A token naming an unknown `kid` triggers one refresh; concurrent requests
//!   wait for the same refresh instead of starting their own, and refreshes for unknown `kid`s
//!   are rate-limited so a stream of forged `kid`s cannot hammer the key endpoint. A failed
//!   refresh (endpoint down, garbage, no usable keys) keeps the cached keys.
//! * `iss` must match one of the configured patterns, with `{tenantid}` standing for the
//!   token's own `tid`; `aud` must be one of the configured audiences; `exp`/`nbf` with 5 min
//!   of clock skew.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::Principal;
use super::dev::{Claims, MAX_TOKEN_LEN, principal_from_claims};
use crate::error::{GraphError, GraphResult};

/// Entra ID's v1 and v2 issuers.
pub const DEFAULT_ISSUERS: [&str; 2] = [
    "https://sts.windows.net/{tenantid}/",
    "https://login.microsoftonline.com/{tenantid}/v2.0",
];
/// Microsoft Graph's audience, as a URI (v1 tokens) and as an app id (v2 tokens).
pub const DEFAULT_AUDIENCES: [&str; 2] = [
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
];
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 300;
/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    Url(String),
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(u) => write!(f, "{u}"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub keys: KeySource,
    /// Accepted issuers; `{tenantid}` stands for the token's `tid`.
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    /// At most one refresh for unknown `kid`s per this interval.
    pub min_refresh_interval: Duration,
    /// Background refresh period (`None`: only on unknown `kid`s).
    pub refresh_interval: Option<Duration>,
    /// How long one fetch of the key URL may take.
    pub fetch_timeout: Duration,
}

impl JwtConfig {
    /// Entra defaults (issuers, audiences), refresh at most every 30 s, hourly in the background.
    pub fn new(keys: KeySource) -> Self {
        Self {
            keys,
            issuers: DEFAULT_ISSUERS.iter().map(|s| s.to_string()).collect(),
            audiences: DEFAULT_AUDIENCES.iter().map(|s| s.to_string()).collect(),
            min_refresh_interval: Duration::from_secs(30),
            refresh_interval: Some(Duration::from_secs(3600)),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The usable signing keys of one JWKS, by `kid`.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<Key>>,
    /// The accepted keys' JSON, to tell whether a refresh changed anything.
    fingerprint: String,
}

/// Parses a JWKS, keeping the RS256 and ES256 (P-256) signing keys that have a `kid`. Other keys
/// (HMAC `oct` keys, encryption keys, other curves) are skipped; a set with no usable key is an error.
fn parse_jwks(bytes: &[u8]) -> anyhow::Result<KeySet> {
    let doc: Value = serde_json::from_slice(bytes).context("the key set is not JSON")?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .context("the key set has no \"keys\" array")?;
    let mut set = KeySet::default();
    let mut accepted = Vec::new();
    for jwk in keys {
        let s = |name: &str| jwk.get(name).and_then(Value::as_str);
        let Some(kid) = s("kid") else { continue };
        if s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let parsed = match (s("kty"), s("alg")) {
            (Some("RSA"), None | Some("RS256")) => match (s("n"), s("e")) {
                (Some(n), Some(e)) => DecodingKey::from_rsa_components(n, e)
                    .ok()
                    .map(|key| (Algorithm::RS256, key)),
                _ => None,
            },
            (Some("EC"), None | Some("ES256")) if s("crv") == Some("P-256") => {
                match (s("x"), s("y")) {
                    (Some(x), Some(y)) => DecodingKey::from_ec_components(x, y)
                        .ok()
                        .map(|key| (Algorithm::ES256, key)),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((algorithm, key)) = parsed else {
            tracing::debug!(
                kid,
                "skipping a JWKS key that is not an RS256/ES256 signing key"
            );
            continue;
        };
        set.keys
            .insert(kid.to_string(), Arc::new(Key { algorithm, key }));
        accepted.push(jwk.clone());
    }
    anyhow::ensure!(
        !set.keys.is_empty(),
        "the key set has no usable RS256/ES256 signing key with a kid"
    );
    accepted.sort_by_key(|k| k.to_string());
    set.fingerprint = serde_json::to_string(&accepted).unwrap_or_default();
    Ok(set)
}

/// Token-controlled text for a message (and so a header): printable ASCII only, at most `max` chars.
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

fn invalid(msg: impl std::fmt::Display) -> GraphError {
    GraphError::InvalidToken(format!("Access token validation failure: {msg}"))
}

fn malformed() -> GraphError {
    GraphError::InvalidToken("CompactToken parsing failed: the access token is malformed.".into())
}

/// The `alg` and `kid` of a token's header (and the header), read without trusting anything else.
fn header_of(token: &str) -> GraphResult<(String, Option<String>, Value)> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed())?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?
        .to_string();
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((alg, kid, header))
}

/// Entra signs access tokens for Microsoft Graph over a header whose `nonce` is the hex SHA-256
/// of the `nonce` it sends; this is the token as it was signed (`None` without a `nonce`).
fn with_hashed_nonce(token: &str, header: &Value) -> Option<String> {
    use sha2::Digest as _;
    let nonce = header.get("nonce")?.as_str()?;
    let hashed: String = sha2::Sha256::digest(nonce.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut header = header.clone();
    header["nonce"] = Value::String(hashed);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_string(&header).ok()?);
    let (_, rest) = token.split_once('.')?;
    Some(format!("{encoded}.{rest}"))
}

/// Why jsonwebtoken refused a token, in the words of the `WWW-Authenticate` description.
fn explain(
    e: &jsonwebtoken::errors::Error,
    alg: &str,
    key: Algorithm,
    audiences: &[String],
) -> GraphError {
    match e.kind() {
        ErrorKind::InvalidSignature => invalid("the signature is invalid."),
        ErrorKind::InvalidAlgorithm => invalid(format!(
            "the token's algorithm '{alg}' does not match its signing key ({key:?})."
        )),
        ErrorKind::ExpiredSignature => GraphError::InvalidToken(
            "Access token has expired or is not yet valid: the token is expired.".into(),
        ),
        ErrorKind::ImmatureSignature => GraphError::InvalidToken(
            "Access token has expired or is not yet valid: the token is not valid yet (nbf)."
                .into(),
        ),
        ErrorKind::InvalidAudience => invalid(format!(
            "invalid audience (accepted: {}).",
            audiences.join(", ")
        )),
        ErrorKind::MissingRequiredClaim(c) => {
            invalid(format!("the required claim '{c}' is missing."))
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => malformed(),
        _ => invalid("the signature could not be verified."),
    }
}

/// Does `iss` match `pattern` for tenant `tid`?
fn issuer_matches(pattern: &str, iss: &str, tid: &str) -> bool {
    if pattern.contains(TENANT_PLACEHOLDER) {
        pattern.replace(TENANT_PLACEHOLDER, tid) == iss
    } else {
        pattern == iss
    }
}

pub struct JwtVerifier {
    config: JwtConfig,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped whenever the key set changes (so verified-token caches can start over).
    generation: AtomicU64,
    /// Fetch attempts so far; lets a request that waited for a refresh see that one happened.
    attempts: AtomicU64,
    /// Held for the whole of a refresh; the time of the last attempt (for the rate limit).
    refresh: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

impl JwtVerifier {
    /// Loads the keys and, when configured, starts the background refresh. A key file that
    /// cannot be read is an error; a key URL that cannot be fetched is logged and retried on
    /// the first token (and by the background refresh).
    pub async fn start(config: JwtConfig) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(
            !config.issuers.is_empty(),
            "jwt mode needs at least one issuer"
        );
        anyhow::ensure!(
            !config.audiences.is_empty(),
            "jwt mode needs at least one audience"
        );
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .build()
            .context("building the JWKS HTTP client")?;
        let verifier = Arc::new(Self {
            config,
            keys: RwLock::new(Arc::new(KeySet::default())),
            generation: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            refresh: tokio::sync::Mutex::new(None),
            http,
        });
        {
            let mut last = verifier.refresh.lock().await;
            *last = Some(Instant::now());
            match (&verifier.config.keys, verifier.reload().await) {
                (_, Ok(())) => {}
                (KeySource::File(p), Err(e)) => {
                    return Err(e.context(format!("loading the JWKS file {}", p.display())));
                }
                (KeySource::Url(u), Err(e)) => tracing::warn!(
                    url = %u,
                    error = %format!("{e:#}"),
                    "could not fetch the JWKS at start-up; every token is refused until it can be fetched"
                ),
            }
        }
        if let Some(period) = verifier.config.refresh_interval {
            let weak = Arc::downgrade(&verifier);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(v) = weak.upgrade() else { break };
                    let mut last = v.refresh.lock().await;
                    *last = Some(Instant::now());
                    if let Err(e) = v.reload().await {
                        tracing::warn!(error = %format!("{e:#}"), "periodic JWKS refresh failed; keeping the cached keys");
                    }
                }
            });
        }
        Ok(verifier)
    }

    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// Changes whenever the key set changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// How many times the keys were fetched (or the fetch was tried).
    pub fn fetch_attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    async fn fetch(&self) -> anyhow::Result<Vec<u8>> {
        match &self.config.keys {
            KeySource::File(path) => Ok(tokio::fs::read(path).await?),
            KeySource::Url(url) => {
                let mut res = self.http.get(url).send().await?.error_for_status()?;
                let mut body = Vec::new();
                while let Some(chunk) = res.chunk().await? {
                    body.extend_from_slice(&chunk);
                    anyhow::ensure!(
                        body.len() <= MAX_JWKS_BYTES,
                        "the key set is larger than {MAX_JWKS_BYTES} bytes"
                    );
                }
                Ok(body)
            }
        }
    }

    /// Fetches and installs the key set. Call with `refresh` held. On failure the cached keys stay.
    async fn reload(&self) -> anyhow::Result<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let set = parse_jwks(&self.fetch().await?)?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.fingerprint != set.fingerprint {
            tracing::info!(keys = set.keys.len(), source = %self.config.keys, "JWKS loaded");
            *keys = Arc::new(set);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// One refresh for an unknown `kid`: shared by every request that asks while it runs, and at
    /// most one per `min_refresh_interval`.
    async fn refresh_for_unknown_kid(&self) {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut last = self.refresh.lock().await;
        if self.attempts.load(Ordering::SeqCst) != seen {
            return; // someone refreshed while this request waited
        }
        if let Some(t) = *last
            && t.elapsed() < self.config.min_refresh_interval
        {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.reload().await {
            tracing::warn!(source = %self.config.keys, error = %format!("{e:#}"), "JWKS refresh failed; keeping the cached keys");
        }
    }

    fn key(&self, kid: &str) -> Option<Arc<Key>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.keys.get(kid).cloned()
    }

    /// Verifies a token; returns the principal and the token's expiry (Unix seconds).
    pub async fn verify(&self, token: &str) -> GraphResult<(Principal, i64)> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(GraphError::InvalidToken(format!(
                "Access token validation failure: the access token is larger than {MAX_TOKEN_LEN} bytes."
            )));
        }
        let (alg, kid, header) = header_of(token)?;
        match alg.as_str() {
            "RS256" | "ES256" => {}
            a if a.eq_ignore_ascii_case("none") => {
                return Err(invalid("unsigned tokens (alg 'none') are never accepted."));
            }
            a if a.to_ascii_uppercase().starts_with("HS") => {
                return Err(invalid(format!(
                    "HMAC-signed tokens (alg '{}') are not accepted in jwt mode; tokens must be signed by the identity provider with RS256 or ES256.",
                    printable(a, 16)
                )));
            }
            a => {
                return Err(invalid(format!(
                    "the token's algorithm '{}' is not accepted (RS256 or ES256 only).",
                    printable(a, 16)
                )));
            }
        }
        let kid = kid.ok_or_else(|| invalid("the token header has no 'kid' (key id)."))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh_for_unknown_kid().await;
                self.key(&kid).ok_or_else(|| {
                    invalid(format!(
                        "the signing key '{}' is not in the identity provider's key set.",
                        printable(&kid, 64)
                    ))
                })?
            }
        };

        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&self.config.audiences);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let decode = |t: &str| {
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(t, &key.key, &validation)
        };
        let data = match decode(token) {
            Err(e) if *e.kind() == ErrorKind::InvalidSignature => {
                match with_hashed_nonce(token, &header) {
                    Some(signed) => decode(&signed),
                    None => Err(e),
                }
            }
            other => other,
        }
        .map_err(|e| explain(&e, &alg, key.algorithm, &self.config.audiences))?;
        let mut claims = data.claims;
        // `aud` (a string or an array) was checked above; the principal does not need it.
        claims.remove("aud");
        let claims: Claims = serde_json::from_value(Value::Object(claims))
            .map_err(|_| invalid("the token's claims do not have the expected types."))?;
        let tid = claims
            .tid
            .clone()
            .ok_or_else(|| invalid("the token has no 'tid' (tenant) claim."))?;
        let iss = claims.iss.clone().unwrap_or_default();
        if !self
            .config
            .issuers
            .iter()
            .any(|p| issuer_matches(p, &iss, &tid))
        {
            return Err(invalid(format!(
                "the issuer '{}' is not accepted for tenant '{}'.",
                printable(&iss, 200),
                printable(&tid, 64)
            )));
        }
        let exp = claims.exp;
        Ok((principal_from_claims(claims)?, exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const TENANT: &str = "11111111-2222-3333-4444-555555555555";

    /// A fixed P-256 test key (private scalar), so the unit tests need no key generation.
    fn ec_key() -> (EncodingKey, Value) {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let der = secret.to_pkcs8_der().unwrap();
        let point = secret.public_key().to_encoded_point(false);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())});
        (EncodingKey::from_ec_der(der.as_bytes()), jwk)
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims() -> Value {
        json!({
            "aud": "https://graph.microsoft.com",
            "iss": format!("https://sts.windows.net/{TENANT}/"),
            "iat": now(), "nbf": now(), "exp": now() + 3600,
            "tid": TENANT, "oid": "u1", "upn": "a@b.example",
            "scp": "DeviceManagementConfiguration.Read.All", "ver": "1.0",
        })
    }

    fn sign(kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &ec_key().0).unwrap()
    }

    async fn verifier() -> (Arc<JwtVerifier>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, json!({"keys": [ec_key().1]}).to_string()).unwrap();
        let mut cfg = JwtConfig::new(KeySource::File(path));
        cfg.refresh_interval = None;
        (JwtVerifier::start(cfg).await.unwrap(), dir)
    }

    async fn refusal(v: &JwtVerifier, token: &str) -> String {
        match v.verify(token).await {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn issuer_placeholder_is_the_tokens_tenant() {
        let p = DEFAULT_ISSUERS[1];
        assert!(issuer_matches(
            p,
            "https://login.microsoftonline.com/a/v2.0",
            "a"
        ));
        assert!(!issuer_matches(
            p,
            "https://login.microsoftonline.com/b/v2.0",
            "a"
        ));
        assert!(issuer_matches("https://fixed/", "https://fixed/", "a"));
    }

    #[test]
    fn jwks_keeps_only_signing_keys() {
        let (_, ec) = ec_key();
        let set = parse_jwks(
            json!({"keys": [
                ec,
                {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
                {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
                {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
                {"kty": "RSA", "kid": "rs", "n": "AQAB", "e": "AQAB"},
            ]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let mut kids: Vec<_> = set.keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["ec1", "rs"]);
        assert_eq!(set.keys["ec1"].algorithm, Algorithm::ES256);
        assert_eq!(set.keys["rs"].algorithm, Algorithm::RS256);
        assert!(parse_jwks(br#"{"keys": [{"kty": "oct", "kid": "h", "k": "AA"}]}"#).is_err());
        assert!(parse_jwks(b"nope").is_err());
    }

    #[tokio::test]
    async fn accepts_a_good_token_and_reads_entra_claims() {
        let (v, _dir) = verifier().await;
        let (p, exp) = v.verify(&sign("ec1", &claims())).await.unwrap();
        assert_eq!(p.tenant.as_str(), TENANT);
        assert_eq!(p.kind, super::super::TokenKind::Delegated);
        assert_eq!(p.user_principal_name.as_deref(), Some("a@b.example"));
        assert!(exp > now());
        // v2 token: preferred_username, idtyp app with roles, azp.
        let mut c = claims();
        c["iss"] = json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
        c["aud"] = json!("00000003-0000-0000-c000-000000000000");
        c["idtyp"] = json!("app");
        c["roles"] = json!(["DeviceManagementConfiguration.ReadWrite.All"]);
        c.as_object_mut().unwrap().remove("scp");
        let (p, _) = v.verify(&sign("ec1", &c)).await.unwrap();
        assert_eq!(p.kind, super::super::TokenKind::Application);
    }

    #[tokio::test]
    async fn refusals_say_why() {
        let (v, _dir) = verifier().await;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let payload = b64(&claims().to_string());
        let none = format!("{}.{payload}.", b64(r#"{"alg":"none","kid":"ec1"}"#));
        assert!(refusal(&v, &none).await.contains("'none'"));
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(refusal(&v, &hs).await.contains("HMAC"));
        assert!(refusal(&v, "abc").await.contains("malformed"));
        assert!(refusal(&v, "a.b.c").await.contains("malformed"));
        assert!(
            refusal(&v, &"x".repeat(MAX_TOKEN_LEN + 1))
                .await
                .contains("larger")
        );
        let good = sign("ec1", &claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let other = b64(&json!({"tid": "evil"}).to_string());
        parts[1] = &other;
        assert!(refusal(&v, &parts.join(".")).await.contains("signature"));
        assert!(
            refusal(&v, &sign("nope", &claims()))
                .await
                .contains("'nope'")
        );

        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims();
            f(&mut c);
            sign("ec1", &c)
        };
        let t = with(&|c| c["exp"] = json!(now() - 301));
        assert!(refusal(&v, &t).await.contains("expired"));
        let t = with(&|c| c["exp"] = json!(now() - 200));
        assert!(v.verify(&t).await.is_ok(), "within the 5 min skew");
        let t = with(&|c| c["nbf"] = json!(now() + 400));
        assert!(refusal(&v, &t).await.contains("not valid yet"));
        let t = with(&|c| c["aud"] = json!("api://other"));
        assert!(refusal(&v, &t).await.contains("audience"));
        let t = with(&|c| c["iss"] = json!("https://sts.windows.net/other/"));
        assert!(refusal(&v, &t).await.contains("issuer"));
        let t = with(&|c| {
            c.as_object_mut().unwrap().remove("tid");
        });
        assert!(refusal(&v, &t).await.contains("'tid'"));
        // The key decides the algorithm: an ES256 key does not verify a token that says RS256.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec1".into());
        let es = jsonwebtoken::encode(&header, &claims(), &ec_key().0).unwrap();
        let rs_header = b64(r#"{"alg":"RS256","kid":"ec1","typ":"JWT"}"#);
        let forged = format!("{rs_header}.{}", es.split_once('.').unwrap().1);
        assert!(refusal(&v, &forged).await.contains("does not match"));
    }

    #[tokio::test]
    async fn entra_graph_tokens_with_a_header_nonce_verify() {
        use sha2::Digest as _;
        let (v, _dir) = verifier().await;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let nonce = "AbCdEf-nonce_123";
        let hashed: String = sha2::Sha256::digest(nonce.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let header = |n: &str| {
            format!(r#"{{"typ":"JWT","nonce":"{n}","alg":"ES256","x5t":"x","kid":"ec1"}}"#)
        };
        let payload = b64(&claims().to_string());
        let signed = format!("{}.{payload}", b64(&header(&hashed)));
        let sig =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &ec_key().0, Algorithm::ES256).unwrap();
        // As Entra sends it: the original nonce in the header.
        let sent = format!("{}.{payload}.{sig}", b64(&header(nonce)));
        assert!(v.verify(&sent).await.is_ok());
        // A different nonce does not verify.
        let other = format!("{}.{payload}.{sig}", b64(&header("other")));
        assert!(refusal(&v, &other).await.contains("signature"));
    }

    #[tokio::test]
    async fn unknown_kids_refresh_at_most_once_per_interval() {
        let (v, _dir) = verifier().await;
        assert_eq!(v.fetch_attempts(), 1);
        for _ in 0..5 {
            refusal(&v, &sign("nope", &claims())).await;
        }
        // The start-up load was less than 30 s ago: no refresh at all.
        assert_eq!(v.fetch_attempts(), 1);
        *v.refresh.lock().await = None;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let v = v.clone();
                tokio::spawn(async move { v.verify(&sign("nope", &claims())).await.is_err() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(
            v.fetch_attempts(),
            2,
            "concurrent requests share one refresh"
        );
    }
}

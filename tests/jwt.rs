//! `--auth jwt`: tokens signed by test RSA and P-256 keys, served as a JWKS by a local HTTP
//! server that the tests can rotate and take down.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const TENANT_A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const TENANT_B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A signing key and its public JWK.
#[derive(Clone)]
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key's bytes (what an HS256-with-public-key forgery would use as the secret).
    public_bytes: Vec<u8>,
}

/// RSA key generation is slow in debug builds: two keys per test binary, shared.
fn rsa_private(i: usize) -> &'static rsa::RsaPrivateKey {
    static KEYS: OnceLock<Vec<rsa::RsaPrivateKey>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..2)
            .map(|_| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
            .collect()
    })[i]
}

fn rsa_key(kid: &str, i: usize) -> TestKey {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let private = rsa_private(i);
    let der = private.to_pkcs1_der().unwrap();
    let n = private.n().to_bytes_be();
    let e = private.e().to_bytes_be();
    TestKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({"kty": "RSA", "use": "sig", "kid": kid, "n": b64(&n), "e": b64(&e)}),
        public_bytes: n,
    }
}

fn ec_key(kid: &str) -> TestKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::EncodePrivateKey as _;
    let secret = loop {
        if let Ok(k) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            break k;
        }
    };
    let der = secret.to_pkcs8_der().unwrap();
    let point = secret.public_key().to_encoded_point(false);
    TestKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        jwk: json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid,
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
        public_bytes: point.as_bytes().to_vec(),
    }
}

/// A delegated Entra v1 access token's claims for tenant `tid` (ReadWrite.All).
fn claims(tid: &str) -> Value {
    json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now(), "nbf": now(), "exp": now() + 3600,
        "tid": tid,
        "oid": uuid::Uuid::new_v4().to_string(),
        "upn": "admin@contoso.example",
        "appid": "11111111-2222-3333-4444-555555555555",
        "scp": format!("{READ_WRITE_ALL} User.Read"),
        "ver": "1.0",
    })
}

/// An Entra v2 application (app-only) token's claims.
fn app_claims(tid: &str, roles: &[&str]) -> Value {
    json!({
        "aud": "00000003-0000-0000-c000-000000000000",
        "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
        "iat": now(), "nbf": now(), "exp": now() + 3600,
        "tid": tid,
        "oid": uuid::Uuid::new_v4().to_string(),
        "azp": "11111111-2222-3333-4444-555555555555",
        "idtyp": "app",
        "roles": roles,
        "ver": "2.0",
    })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn with(c: Value, f: impl FnOnce(&mut Value)) -> Value {
    let mut c = c;
    f(&mut c);
    c
}

/// A local identity provider's key endpoint: serves `keys` as a JWKS at `/keys`, counts fetches,
/// and answers 503 while `down`.
struct Idp {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    async fn start(keys: &[&TestKey]) -> Idp {
        let keys = Arc::new(Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let hits = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (k, h, d) = (keys.clone(), hits.clone(), down.clone());
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let (k, h, d) = (k.clone(), h.clone(), d.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    if d.load(Ordering::SeqCst) {
                        return Err(http::StatusCode::SERVICE_UNAVAILABLE);
                    }
                    let keys = k.lock().unwrap().clone();
                    Ok(axum::Json(json!({ "keys": keys })))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Idp {
            url,
            keys,
            hits,
            down,
            task,
        }
    }

    fn set_keys(&self, keys: &[&TestKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn jwt_server(idp: &Idp, extra: &[&str]) -> Server {
    let mut args = vec!["--auth", "jwt", "--jwks-url", &idp.url];
    args.extend_from_slice(extra);
    Server::start_with(&args).await
}

/// Asserts a 401 whose `WWW-Authenticate` error_description contains `why`.
fn assert_refused(r: &Res, why: &str) {
    r.assert_error(401, "InvalidAuthenticationToken");
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(
        www.starts_with("Bearer ") && www.contains("error=\"invalid_token\""),
        "{www}"
    );
    assert!(
        www.contains(why),
        "expected {why:?} in WWW-Authenticate: {www}"
    );
}

async fn rs256_and_es256_tokens_from_the_jwks_are_accepted() {
    let (rsa, ec) = (rsa_key("rsa-1", 0), ec_key("ec-1"));
    let idp = Idp::start(&[&rsa, &ec]).await;
    let s = jwt_server(&idp, &[]).await;

    // RS256, Entra v1 delegated token: full access.
    let t = sign(&rsa, &claims(TENANT_A));
    let created = s.create_windows(&t, "from rsa").await;
    let id = id_of(&created);
    assert_eq!(s.get("/officeConfiguration", &t).await.status, 200);

    // ES256, v2 application token with ReadWrite.All: collection reads and writes work, the
    // singleton (delegated only) does not.
    let app = sign(&ec, &app_claims(TENANT_A, &[READ_WRITE_ALL]));
    let r = s.get(&cfg(&id), &app).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("/officeConfiguration", &app).await;
    r.assert_error(403, "Forbidden");

    // A Read.All application token cannot write: 403 naming the permission.
    let read = sign(&ec, &app_claims(TENANT_A, &[READ_ALL]));
    let r = s.delete(&cfg(&id), &read).await;
    let msg = r.assert_error(403, "Forbidden");
    assert!(msg.contains(READ_WRITE_ALL), "{msg}");

    // Tenant B (a valid token of its own tenant) sees nothing of tenant A.
    let b = sign(&rsa, &claims(TENANT_B));
    s.get(&cfg(&id), &b)
        .await
        .assert_error(404, "ResourceNotFound");
    let list = s.get(CONFIGS, &b).await.json();
    assert_eq!(list["value"], json!([]));
}

async fn every_refusal_is_a_401_that_says_why() {
    let (rsa, ec) = (rsa_key("rsa-1", 0), ec_key("ec-1"));
    let idp = Idp::start(&[&rsa, &ec]).await;
    let s = jwt_server(&idp, &[]).await;
    let get = |t: Option<String>| {
        let s = &s;
        async move {
            s.send(reqwest::Method::GET, CONFIGS, t.as_deref(), None)
                .await
        }
    };

    assert_refused(&get(None).await, "empty");
    assert_refused(&get(Some("not-a-jwt".into())).await, "malformed");
    assert_refused(&get(Some("a.b.c".into())).await, "malformed");

    let payload = b64(claims(TENANT_A).to_string().as_bytes());
    let none = format!(
        "{}.{payload}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#)
    );
    assert_refused(&get(Some(none)).await, "alg 'none'");

    // The server's own dev-mode token (HS256) is refused in jwt mode...
    assert_refused(&get(Some(s.token(TENANT_A))).await, "HMAC");
    // ...and so is the classic forgery: HS256 keyed with the RSA public key, naming its kid.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let forged = jsonwebtoken::encode(
        &h,
        &claims(TENANT_A),
        &EncodingKey::from_secret(&rsa.public_bytes),
    )
    .unwrap();
    assert_refused(&get(Some(forged)).await, "HMAC");
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("ec-1".into());
    let forged = jsonwebtoken::encode(
        &h,
        &claims(TENANT_A),
        &EncodingKey::from_secret(&ec.public_bytes),
    )
    .unwrap();
    assert_refused(&get(Some(forged)).await, "HMAC");

    // Bad signature: a valid token's payload swapped for another tenant's.
    let good = sign(&rsa, &claims(TENANT_A));
    let other = sign(&rsa, &claims(TENANT_B));
    let (h1, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let p2 = other.split('.').nth(1).unwrap();
    assert_refused(
        &get(Some(format!("{h1}.{p2}.{sig}"))).await,
        "signature is invalid",
    );
    // Signed by a key that is not in the set, under a kid that is.
    let stranger = TestKey {
        kid: "rsa-1".into(),
        ..rsa_key("x", 1)
    };
    assert_refused(
        &get(Some(sign(&stranger, &claims(TENANT_A)))).await,
        "signature is invalid",
    );
    // A header claiming RS256 over an ES256 key: the key decides, so it is refused.
    let es = sign(&ec, &claims(TENANT_A));
    let rs_header = b64(br#"{"alg":"RS256","typ":"JWT","kid":"ec-1"}"#);
    let confused = format!("{rs_header}.{}", es.split_once('.').unwrap().1);
    assert_refused(&get(Some(confused)).await, "does not match");

    // Unknown kid (after the refresh it triggers).
    let unknown = TestKey {
        kid: "nobody".into(),
        ..rsa.clone()
    };
    assert_refused(
        &get(Some(sign(&unknown, &claims(TENANT_A)))).await,
        "not in the identity provider",
    );

    // Time: expired beyond the 5 min skew, not yet valid beyond it; within the skew is fine.
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| c["exp"] = json!(now() - 360)),
    );
    assert_refused(&get(Some(t)).await, "expired");
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| c["nbf"] = json!(now() + 600)),
    );
    assert_refused(&get(Some(t)).await, "not valid yet");
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| c["exp"] = json!(now() - 60)),
    );
    assert_eq!(get(Some(t)).await.status, 200, "within the skew");

    // Issuer: unknown, and the right pattern for another tenant than the token's tid.
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| {
            c["iss"] = json!("https://evil.example/")
        }),
    );
    assert_refused(&get(Some(t)).await, "issuer");
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| {
            c["iss"] = json!(format!("https://sts.windows.net/{TENANT_B}/"))
        }),
    );
    assert_refused(&get(Some(t)).await, "issuer");
    let t = sign(
        &ec,
        &with(app_claims(TENANT_A, &[READ_ALL]), |c| {
            c["iss"] = json!(format!("https://login.microsoftonline.com/{TENANT_B}/v2.0"))
        }),
    );
    assert_refused(&get(Some(t)).await, "issuer");
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
    );
    assert_refused(&get(Some(t)).await, "'iss'");

    // Audience.
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| c["aud"] = json!("api://someone-else")),
    );
    assert_refused(&get(Some(t)).await, "audience");
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
    );
    assert_refused(&get(Some(t)).await, "'aud'");

    // No tid.
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| {
            c.as_object_mut().unwrap().remove("tid");
        }),
    );
    assert_refused(&get(Some(t)).await, "'tid'");

    // Oversized (a validly signed token with > 16 KiB of claims).
    let t = sign(
        &rsa,
        &with(claims(TENANT_A), |c| {
            c["groups"] = json!(
                (0..500)
                    .map(|_| uuid::Uuid::new_v4().to_string())
                    .collect::<Vec<_>>()
            )
        }),
    );
    assert!(t.len() > 16 * 1024);
    assert_refused(&get(Some(t)).await, "larger than");

    // And a good token still works after all of that.
    assert_eq!(get(Some(good)).await.status, 200);
}

async fn configured_issuer_and_audience_replace_the_defaults() {
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&ec]).await;
    let s = jwt_server(
        &idp,
        &[
            "--issuer",
            "https://idp.example/{tenantid}",
            "--issuer",
            "https://fixed.example/",
            "--audience",
            "api://cirrus",
        ],
    )
    .await;
    let c = |iss: &str, aud: &str| {
        with(claims(TENANT_A), |c| {
            c["iss"] = json!(iss);
            c["aud"] = json!(aud);
        })
    };
    let ok = sign(
        &ec,
        &c(&format!("https://idp.example/{TENANT_A}"), "api://cirrus"),
    );
    assert_eq!(s.get(CONFIGS, &ok).await.status, 200);
    let ok = sign(&ec, &c("https://fixed.example/", "api://cirrus"));
    assert_eq!(s.get(CONFIGS, &ok).await.status, 200);
    let t = sign(
        &ec,
        &c(&format!("https://idp.example/{TENANT_B}"), "api://cirrus"),
    );
    assert_refused(&s.get(CONFIGS, &t).await, "issuer");
    // The Entra defaults are no longer accepted.
    let t = sign(
        &ec,
        &c(
            &format!("https://sts.windows.net/{TENANT_A}/"),
            "api://cirrus",
        ),
    );
    assert_refused(&s.get(CONFIGS, &t).await, "issuer");
    let t = sign(
        &ec,
        &c(
            &format!("https://idp.example/{TENANT_A}"),
            "https://graph.microsoft.com",
        ),
    );
    assert_refused(&s.get(CONFIGS, &t).await, "audience");
}

async fn key_rotation_new_kid_after_one_refresh_old_kid_refused() {
    let (k1, k2) = (rsa_key("k1", 0), ec_key("k2"));
    let idp = Idp::start(&[&k1]).await;
    let s = jwt_server(&idp, &["--jwks-min-refresh-secs", "0.3"]).await;
    let old = sign(&k1, &claims(TENANT_A));
    assert_eq!(s.get(CONFIGS, &old).await.status, 200);
    let fetched = idp.hits();
    assert_eq!(fetched, 1, "keys fetched once at start-up");

    // The provider rolls its keys: k2 appears, k1 is dropped.
    idp.set_keys(&[&k2]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = sign(&k2, &claims(TENANT_A));
    assert_eq!(s.get(CONFIGS, &new).await.status, 200);
    assert_eq!(idp.hits(), fetched + 1, "one refresh for the new kid");
    assert_eq!(s.get(CONFIGS, &new).await.status, 200);
    assert_eq!(idp.hits(), fetched + 1, "the new key is cached");

    // k1 is gone: a fresh k1 token is refused, and so is the one verified before the rotation.
    let fresh_old = sign(&k1, &claims(TENANT_A));
    assert_refused(
        &s.get(CONFIGS, &fresh_old).await,
        "not in the identity provider",
    );
    assert_refused(&s.get(CONFIGS, &old).await, "not in the identity provider");
}

async fn a_stream_of_unknown_kids_does_not_hammer_the_key_endpoint() {
    let k1 = rsa_key("k1", 0);
    let idp = Idp::start(&[&k1]).await;
    // Default rate limit: at most one refresh for unknown kids per 30 s.
    let s = jwt_server(&idp, &[]).await;
    let tokens: Vec<String> = (0..40)
        .map(|i| {
            let k = TestKey {
                kid: format!("bogus-{i}"),
                ..k1.clone()
            };
            sign(&k, &claims(TENANT_A))
        })
        .collect();
    let results = futures::future::join_all(tokens.iter().map(|t| s.get(CONFIGS, t))).await;
    for r in &results {
        assert_refused(r, "not in the identity provider");
    }
    assert!(idp.hits() <= 2, "{} fetches", idp.hits());
    // Good tokens are unaffected.
    assert_eq!(
        s.get(CONFIGS, &sign(&k1, &claims(TENANT_A))).await.status,
        200
    );

    // With a short interval, concurrent unknown kids still share one refresh.
    let idp = Idp::start(&[&k1]).await;
    let s = jwt_server(&idp, &["--jwks-min-refresh-secs", "0.2"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = idp.hits();
    let results = futures::future::join_all(tokens.iter().map(|t| s.get(CONFIGS, t))).await;
    assert!(results.iter().all(|r| r.status == 401));
    assert!(
        idp.hits() - before <= 2,
        "{} fetches for 40 concurrent unknown kids",
        idp.hits() - before
    );
}

async fn cached_keys_keep_working_while_the_key_endpoint_is_down() {
    let (k1, k2) = (rsa_key("k1", 0), ec_key("k2"));
    let idp = Idp::start(&[&k1]).await;
    let s = jwt_server(
        &idp,
        &[
            "--jwks-min-refresh-secs",
            "0.1",
            "--jwks-refresh-secs",
            "0.2",
        ],
    )
    .await;
    assert_eq!(
        s.get(CONFIGS, &sign(&k1, &claims(TENANT_A))).await.status,
        200
    );

    idp.down.store(true, Ordering::SeqCst);
    idp.set_keys(&[&k2]);
    // Background refreshes and an unknown-kid refresh fail; the cached k1 keeps working.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let hits = idp.hits();
    assert!(hits >= 2, "background refresh ran ({hits} fetches)");
    assert_refused(
        &s.get(CONFIGS, &sign(&k2, &claims(TENANT_A))).await,
        "not in the identity provider",
    );
    let r = s.get(CONFIGS, &sign(&k1, &claims(TENANT_A))).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Back up: the background refresh picks up k2 (and drops k1).
    idp.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.get(CONFIGS, &sign(&k2, &claims(TENANT_A))).await.status,
        200
    );
    assert_refused(
        &s.get(CONFIGS, &sign(&k1, &claims(TENANT_A))).await,
        "not in the identity provider",
    );
}

async fn keys_from_a_jwks_file() {
    let (rsa, ec) = (rsa_key("r", 0), ec_key("e"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        json!({"keys": [rsa.jwk, ec.jwk, {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}).to_string(),
    )
    .unwrap();
    let s = Server::start_with(&["--auth", "jwt", "--jwks-file", path.to_str().unwrap()]).await;
    assert_eq!(
        s.get(CONFIGS, &sign(&rsa, &claims(TENANT_A))).await.status,
        200
    );
    let app = sign(&ec, &app_claims(TENANT_A, &[READ_ALL]));
    assert_eq!(s.get(CONFIGS, &app).await.status, 200);
    // The oct key in the file is ignored: an HS256 token naming it is refused.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("h".into());
    let t =
        jsonwebtoken::encode(&h, &claims(TENANT_A), &EncodingKey::from_secret(b"secret")).unwrap();
    assert_refused(&s.get(CONFIGS, &t).await, "HMAC");
}

/// `--auth jwt` without keys, or with a key file that holds none, does not start.
#[tokio::test]
async fn jwt_mode_needs_usable_keys_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("jwks.json");
    std::fs::write(&bad, r#"{"keys": [{"kty": "oct", "kid": "h", "k": "AA"}]}"#).unwrap();
    let data = dir.path().join("data");
    for args in [
        vec!["--auth", "jwt"],
        vec!["--auth", "jwt", "--jwks-file", bad.to_str().unwrap()],
        vec!["--jwks-file", bad.to_str().unwrap()],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cirrus"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("jwks") || err.contains("JWKS") || err.contains("key set"),
            "{args:?}: {err}"
        );
    }
}

engine_tests!(
    rs256_and_es256_tokens_from_the_jwks_are_accepted,
    every_refusal_is_a_401_that_says_why,
    configured_issuer_and_audience_replace_the_defaults,
    key_rotation_new_kid_after_one_refresh_old_kid_refused,
    a_stream_of_unknown_kids_does_not_hammer_the_key_endpoint,
    cached_keys_keep_working_while_the_key_endpoint_is_down,
    keys_from_a_jwks_file,
);

/// The `CIRRUS_*` variables configure jwt mode like the flags (lists comma-separated).
#[tokio::test]
async fn jwt_mode_from_environment_variables() {
    use std::io::BufRead as _;
    let ec = ec_key("e");
    let idp = Idp::start(&[&ec]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cirrus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .env("CIRRUS_AUTH", "jwt")
        .env("CIRRUS_JWKS_URL", &idp.url)
        .env(
            "CIRRUS_ISSUER",
            "https://a.example/{tenantid}, https://b.example/",
        )
        .env("CIRRUS_AUDIENCE", "api://one,api://two")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines[0].starts_with("cirrus listening on http://127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!(
            "identity: jwt (keys from {}; issuers https://a.example/{{tenantid}}, https://b.example/; audiences api://one, api://two)",
            idp.url
        )
    );
    assert_eq!(idp.hits(), 1, "keys fetched at start-up");
}

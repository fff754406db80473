//! Identity and permissions: 401 for missing/bad tokens, 403 per the permission table, and
//! tenant isolation.
#[macro_use]
mod common;

use base64::Engine as _;
use cirrus::auth::dev::{DevKey, TokenRequest, claims_for};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const G1: &str = "aaaaaaaa-0000-4000-8000-000000000001";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Every operation of the family.
#[derive(Clone, Copy, Debug)]
enum Op {
    GetSingleton,
    PatchSingleton,
    ListConfigurations,
    CreateConfiguration,
    GetConfiguration,
    PatchConfiguration,
    DeleteConfiguration,
    ListAssignments,
    CreateAssignment,
    GetAssignment,
    PatchAssignment,
    DeleteAssignment,
    Assign,
    AssignQualified,
    UpdatePriorities,
    GetPolicyPayload,
    GetUserPreferencePayloadValue,
    PutPolicyPayload,
    PutUserPreferencePayloadValue,
}

const ALL_OPS: [Op; 19] = [
    Op::GetSingleton,
    Op::PatchSingleton,
    Op::ListConfigurations,
    Op::CreateConfiguration,
    Op::GetConfiguration,
    Op::PatchConfiguration,
    Op::DeleteConfiguration,
    Op::ListAssignments,
    Op::CreateAssignment,
    Op::GetAssignment,
    Op::PatchAssignment,
    Op::DeleteAssignment,
    Op::Assign,
    Op::AssignQualified,
    Op::UpdatePriorities,
    Op::GetPolicyPayload,
    Op::GetUserPreferencePayloadValue,
    Op::PutPolicyPayload,
    Op::PutUserPreferencePayloadValue,
];

impl Op {
    fn is_write(self) -> bool {
        !matches!(
            self,
            Op::GetSingleton
                | Op::ListConfigurations
                | Op::GetConfiguration
                | Op::ListAssignments
                | Op::GetAssignment
                | Op::GetPolicyPayload
                | Op::GetUserPreferencePayloadValue
        )
    }

    fn is_singleton(self) -> bool {
        matches!(self, Op::GetSingleton | Op::PatchSingleton)
    }

    /// The status of a successful call.
    fn success(self) -> u16 {
        match self {
            Op::CreateConfiguration | Op::CreateAssignment => 201,
            Op::PatchSingleton
            | Op::PatchConfiguration
            | Op::DeleteConfiguration
            | Op::PatchAssignment
            | Op::DeleteAssignment
            | Op::UpdatePriorities
            | Op::PutPolicyPayload
            | Op::PutUserPreferencePayloadValue => 204,
            _ => 200,
        }
    }
}

/// A configuration with payloads and one assignment, made by an administrator.
struct Fixture {
    config: String,
    assignment: String,
    priority: i64,
}

async fn fixture(s: &Server, admin: &str) -> Fixture {
    let c = s
        .create(
            admin,
            json!({
                "@odata.type": WINDOWS,
                "displayName": "fixture",
                "policyPayload": b64(r#"{"p":1}"#),
                "userPreferencePayload": b64(r#"{"u":1}"#),
                "assignments": [{"target": group_target(G1)}],
            }),
        )
        .await;
    Fixture {
        config: id_of(&c),
        assignment: id_of(&c["assignments"][0]),
        priority: c["priority"].as_i64().unwrap(),
    }
}

async fn call(s: &Server, f: &Fixture, op: Op, token: Option<&str>) -> Res {
    let c = cfg(&f.config);
    let a = format!("{c}/assignments/{}", f.assignment);
    let fresh_group = uuid::Uuid::new_v4().to_string();
    let (method, path, body): (Method, String, Option<Value>) = match op {
        Op::GetSingleton => (Method::GET, "/officeConfiguration".into(), None),
        Op::PatchSingleton => (
            Method::PATCH,
            "/officeConfiguration".into(),
            Some(
                json!({"tenantUserCheckinSummary": {"succeededUserCount": 1, "failedUserCount": 1}}),
            ),
        ),
        Op::ListConfigurations => (Method::GET, CONFIGS.into(), None),
        Op::CreateConfiguration => (
            Method::POST,
            CONFIGS.into(),
            Some(json!({"@odata.type": SECURITY, "displayName": "new"})),
        ),
        Op::GetConfiguration => (Method::GET, c.clone(), None),
        Op::PatchConfiguration => (
            Method::PATCH,
            c.clone(),
            Some(json!({"displayName": "patched"})),
        ),
        Op::DeleteConfiguration => (Method::DELETE, c.clone(), None),
        Op::ListAssignments => (Method::GET, format!("{c}/assignments"), None),
        Op::CreateAssignment => (
            Method::POST,
            format!("{c}/assignments"),
            Some(json!({"target": group_target(&fresh_group)})),
        ),
        Op::GetAssignment => (Method::GET, a, None),
        Op::PatchAssignment => (
            Method::PATCH,
            a,
            Some(json!({"target": group_target(&fresh_group)})),
        ),
        Op::DeleteAssignment => (Method::DELETE, a, None),
        Op::Assign => (
            Method::POST,
            format!("{c}/assign"),
            Some(
                json!({"officeConfigurationAssignments": [{"target": group_target(&fresh_group)}]}),
            ),
        ),
        Op::AssignQualified => (
            Method::POST,
            format!("{c}/microsoft.graph.assign"),
            Some(json!({"officeConfigurationAssignments": []})),
        ),
        Op::UpdatePriorities => (
            Method::POST,
            format!("{CONFIGS}/updatePriorities"),
            Some(json!({
                "officeConfigurationPolicyIds": [f.config],
                "officeConfigurationPriorities": [f.priority + 100_000],
            })),
        ),
        Op::GetPolicyPayload => (Method::GET, format!("{c}/policyPayload"), None),
        Op::GetUserPreferencePayloadValue => (
            Method::GET,
            format!("{c}/userPreferencePayload/$value"),
            None,
        ),
        Op::PutPolicyPayload => (
            Method::PUT,
            format!("{c}/policyPayload"),
            Some(json!({"new": true})),
        ),
        Op::PutUserPreferencePayloadValue => (
            Method::PUT,
            format!("{c}/userPreferencePayload/$value"),
            Some(json!({"new": true})),
        ),
    };
    s.send(method, &path, token, body).await
}

fn assert_401(r: &Res, what: &str) -> String {
    let msg = r.assert_error(401, "InvalidAuthenticationToken");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate is {challenge:?}"
    );
    msg
}

async fn missing_or_bad_tokens_are_401_everywhere() {
    let s = Server::start().await;
    let admin = s.token("contoso");
    let f = fixture(&s, &admin).await;
    let snap = s.snapshot(&admin).await;

    let expired = s.token_with(TokenRequest {
        expires_in: -10,
        ..request("contoso")
    });
    let other_dir = tempfile::tempdir().unwrap();
    let foreign_key = DevKey::load_or_create(other_dir.path()).unwrap();
    let forged = foreign_key
        .mint(&claims_for(&request("contoso"), now()).unwrap())
        .unwrap();
    let mut claims = claims_for(&request("contoso"), now()).unwrap();
    claims.aud = Some("https://management.azure.com".into());
    let wrong_audience = s.mint(&claims);
    let mut claims = claims_for(&request("contoso"), now()).unwrap();
    claims.nbf = Some(now() + 3600);
    let not_yet_valid = s.mint(&claims);
    let mut claims = claims_for(&request("contoso"), now()).unwrap();
    claims.tid = None;
    let no_tenant = s.mint(&claims);
    // alg=none with the right claims.
    let enc = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        enc(json!({"alg": "none", "typ": "JWT"})),
        enc(serde_json::to_value(claims_for(&request("contoso"), now()).unwrap()).unwrap())
    );
    // A valid token with its signature stripped.
    let valid = s.token("contoso");
    let stripped = valid.rsplit_once('.').unwrap().0.to_string() + ".";

    let cases: Vec<(&str, Option<String>, Option<&str>)> = vec![
        ("no header", None, None),
        ("empty bearer", Some("Bearer ".into()), None),
        (
            "malformed",
            Some("Bearer not-a-token".into()),
            Some("malformed"),
        ),
        ("three garbage parts", Some("Bearer a.b.c".into()), None),
        (
            "basic scheme",
            Some("Basic dXNlcjpwYXNz".into()),
            Some("Bearer"),
        ),
        (
            "expired",
            Some(format!("Bearer {expired}")),
            Some("expired"),
        ),
        (
            "foreign key",
            Some(format!("Bearer {forged}")),
            Some("signature"),
        ),
        (
            "wrong audience",
            Some(format!("Bearer {wrong_audience}")),
            Some("audience"),
        ),
        (
            "not yet valid",
            Some(format!("Bearer {not_yet_valid}")),
            Some("not valid yet"),
        ),
        ("no tid", Some(format!("Bearer {no_tenant}")), Some("tid")),
        ("alg none", Some(format!("Bearer {unsigned}")), None),
        (
            "signature stripped",
            Some(format!("Bearer {stripped}")),
            None,
        ),
    ];
    for (what, header, needle) in &cases {
        let mut rb = s.req(Method::GET, CONFIGS, None);
        if let Some(h) = header {
            rb = rb.header("authorization", h);
        }
        let msg = assert_401(&Server::finish(rb).await, what);
        if let Some(n) = needle {
            assert!(msg.contains(n), "{what}: {msg}");
        }
    }
    // Every operation, and paths that do not exist, refuse before revealing anything.
    for op in ALL_OPS {
        assert_401(&call(&s, &f, op, None).await, &format!("{op:?}"));
        assert_401(
            &call(&s, &f, op, Some(&expired)).await,
            &format!("{op:?} expired"),
        );
        assert_401(
            &call(&s, &f, op, Some(&forged)).await,
            &format!("{op:?} forged"),
        );
    }
    assert_401(
        &s.send(Method::GET, "/nothingHere", None, None).await,
        "unknown path",
    );
    assert_eq!(s.snapshot(&admin).await, snap);
}

async fn permission_table() {
    let s = Server::start().await;
    // (label, scopes, roles, has read, has write, application)
    let tokens = [
        (
            "delegated none",
            Some("openid User.Read"),
            None,
            false,
            false,
            false,
        ),
        (
            "delegated Read.All",
            Some("openid DeviceManagementConfiguration.Read.All"),
            None,
            true,
            false,
            false,
        ),
        (
            "delegated ReadWrite.All",
            Some(READ_WRITE_ALL),
            None,
            true,
            true,
            false,
        ),
        (
            "application none",
            None,
            Some("User.Read.All"),
            false,
            false,
            true,
        ),
        (
            "application Read.All",
            None,
            Some(READ_ALL),
            true,
            false,
            true,
        ),
        (
            "application ReadWrite.All",
            None,
            Some(READ_WRITE_ALL),
            true,
            true,
            true,
        ),
    ];
    for (n, (label, scopes, roles, read, write, application)) in tokens.into_iter().enumerate() {
        for op in ALL_OPS {
            // A tenant per case keeps snapshots small and cases independent.
            let tenant = format!("perm-{n}-{op:?}");
            let admin = s.token(&tenant);
            let token = s.token_with(TokenRequest {
                scopes: scopes.map(String::from),
                roles: roles.map(String::from),
                ..request(&tenant)
            });
            let f = fixture(&s, &admin).await;
            let snap = s.snapshot(&admin).await;
            let allowed =
                !(application && op.is_singleton()) && if op.is_write() { write } else { read };
            let r = call(&s, &f, op, Some(&token)).await;
            if allowed {
                assert_eq!(
                    r.status.as_u16(),
                    op.success(),
                    "{label} {op:?} should be allowed: {}",
                    r.text
                );
                if op.is_write() {
                    assert_ne!(
                        s.snapshot(&admin).await,
                        snap,
                        "{label} {op:?} succeeded but changed nothing"
                    );
                }
            } else {
                let msg = r.assert_error(403, "Forbidden");
                if application && op.is_singleton() {
                    assert!(msg.contains("Application"), "{label} {op:?}: {msg}");
                } else {
                    let needed = if op.is_write() {
                        READ_WRITE_ALL
                    } else {
                        READ_ALL
                    };
                    assert!(msg.contains(needed), "{label} {op:?}: {msg}");
                }
                assert_eq!(
                    s.snapshot(&admin).await,
                    snap,
                    "{label} {op:?} was refused but changed data"
                );
            }
        }
    }
}

async fn tenants_are_isolated() {
    let s = Server::start().await;
    let a = s.token("tenant-a");
    let b = s.token("tenant-b");
    let f = fixture(&s, &a).await;
    s.patch(
        "/officeConfiguration",
        &a,
        json!({"tenantUserCheckinSummary": {"succeededUserCount": 9, "failedUserCount": 0}}),
    )
    .await;
    let snap_a = s.snapshot(&a).await;

    // B sees nothing of A.
    assert_eq!(s.get(CONFIGS, &b).await.json()["value"], json!([]));
    let b_single = s.get("/officeConfiguration", &b).await.json();
    assert_ne!(id_of(&b_single), id_of(&snap_a["singleton"]));
    assert_eq!(
        b_single["tenantUserCheckinSummary"]["succeededUserCount"],
        0
    );

    // Every per-configuration operation on A's ids is a 404 for B.
    for op in ALL_OPS {
        if matches!(
            op,
            Op::GetSingleton
                | Op::PatchSingleton
                | Op::ListConfigurations
                | Op::CreateConfiguration
        ) {
            continue;
        }
        call(&s, &f, op, Some(&b))
            .await
            .assert_error(404, "ResourceNotFound");
    }
    assert_eq!(s.snapshot(&a).await, snap_a, "B changed A's data");

    // B's writes to its own space do not touch A: same priority, own singleton.
    let bc = s
        .create(
            &b,
            json!({"@odata.type": WINDOWS, "priority": f.priority, "displayName": "B's"}),
        )
        .await;
    assert_eq!(bc["priority"], f.priority);
    s.patch(
        "/officeConfiguration",
        &b,
        json!({"tenantUserCheckinSummary": {"succeededUserCount": 1, "failedUserCount": 1}}),
    )
    .await;
    // Even B's updatePriorities naming A's id alongside its own is refused whole.
    s.post(
        &format!("{CONFIGS}/updatePriorities"),
        &b,
        json!({"officeConfigurationPolicyIds": [id_of(&bc), f.config], "officeConfigurationPriorities": [50, 51]}),
    )
    .await
    .assert_error(404, "ResourceNotFound");
    assert_eq!(s.snapshot(&a).await, snap_a, "B changed A's data");
    assert_eq!(
        s.get(&cfg(&id_of(&bc)), &b).await.json()["priority"],
        f.priority
    );
    s.get(&cfg(&id_of(&bc)), &a)
        .await
        .assert_error(404, "ResourceNotFound");
    let list_b = s.get(CONFIGS, &b).await.json();
    assert_eq!(list_b["value"].as_array().unwrap().len(), 1);

    // Each tenant's singleton id is stable.
    assert_eq!(
        id_of(&s.get("/officeConfiguration", &b).await.json()),
        id_of(&b_single)
    );
    assert_eq!(
        id_of(&s.get("/officeConfiguration", &a).await.json()),
        id_of(&snap_a["singleton"])
    );
}

engine_tests!(
    missing_or_bad_tokens_are_401_everywhere,
    permission_table,
    tenants_are_isolated,
);

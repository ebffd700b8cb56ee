//! Every documented operation × every kind of credential (issue 7, "Prove the failure modes"):
//! no credential but the ones entitled to completes an operation on another principal's data,
//! and fields a caller may not set (`system_id`, `user_id`, `usage`, `key_id`, …) in bodies are
//! refused or ignored.
//!
//! The operations come from the live `/openapi.json`; path parameters are filled with ids of
//! the victim's resources (a conversation of (drillquiz, victim), its whole-number alias, an API
//! key of drillquiz, a provider key of another user). Each (operation, credential) is sent naming
//! the victim (`system_id`/`user_id`/`userId`/`user` in query and body), naming nobody, and
//! naming the caller itself (when it has an identity), always pointing at the victim's resources
//! by id; then a streamed turn and a replay of the victim's `Idempotency-Key`. Afterwards the
//! victim's messages, conversations, model choice, profile and keys must be exactly as before.
//! `MATRIX_VERBOSE=1` prints every cell.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, TestApp, openai_env, spawn_app};
use switchboard_kit::Env;
use switchboard_test_support::{MockUpstream, db};

const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-matrix-secret";
const ADMIN_TOKEN: &str = "admin-token-for-matrix-0123456789";
const ENCRYPTION_KEY: &str = "8f3a1c9e7b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";
const PASSWORD: &str = "Passw0rdX";
/// Text only the victim's messages hold: seeing it in an answer is seeing the victim's data.
const DRILLQUIZ_SECRET: &str = "victim-secret-drillquiz-7f3a";
const DEFAULT_SECRET: &str = "victim-secret-default-91c2";
const VICTIM_EMAIL: &str = "victim-7f3a@drillquiz.example";
const INTRUDER_TEXT: &str = "intruder text";
const VICTIM_IDEMPOTENCY_KEY: &str = "victim-turn-0001";

fn env(database_url: &str, upstream: &str) -> Env {
    openai_env(database_url, upstream)
        .with("CHAT_GATEWAY_JWT_SECRET", JWT_SECRET)
        .with("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .with("SWITCHBOARD_ENCRYPTION_KEY", ENCRYPTION_KEY)
        .with("SWITCHBOARD_RATE_LIMIT_LOGIN", "off")
        .with("SWITCHBOARD_RATE_LIMIT_API", "off")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT", "off")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    GarbageKey,
    /// The victim's identity in a JWT signed with another secret.
    ForgedJwt,
    /// The victim's identity in a JWT with `"alg": "none"`.
    UnsignedJwt,
    ClientKey,
    ClientKeyOfVictimsTenant,
    ClientKeyOfAnotherTenant,
    UserJwt,
    ChatTokenOfAnotherUser,
    ServiceKeyOfAnotherTenant,
    AdminToken,
    StaticServiceKey,
}

#[derive(Debug, Clone)]
enum Presented {
    Nothing,
    ApiKey(String),
    Bearer(String),
    Admin(String),
}

#[derive(Debug, Clone)]
struct Credential {
    kind: Kind,
    presented: Presented,
    /// The user id it acts as (or, for a service key of another tenant, the user it names
    /// there): what the "self" variant names.
    own_user: Option<String>,
}

/// Anyone may call these.
const PUBLIC: &[&str] = &[
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
    "GET /redoc",
    "GET /api/health",
    "POST /register",
    "POST /token",
    "POST /api/v1/users/join",
    "POST /api/v1/users/login",
    // Pages: the history page without a key is a form asking for one; the chat page answers
    // only a `?token=` (refused here: the matrix sends credentials in headers).
    "GET /cache",
    "GET /widget.js",
    "GET /assets/{file}",
];

/// What the admin token alone may do.
const ADMIN_OPS: &[&str] = &[
    "POST /api-keys",
    "GET /api-keys",
    "DELETE /api-keys/{api_key}",
    "POST /api-keys/{id}/rotate",
    "GET /v1/usage",
    "GET /v1/budgets",
    "PUT /v1/budgets",
    "DELETE /v1/budgets/{id}",
];

/// A credential acting only as itself may complete these whatever the request names: they
/// read no stored data, or only the caller's own, and ignore ids in the request.
const OWN_DATA: &[&str] = &[
    "GET /v1/models",
    "POST /v1/chat/completions",
    "GET /users/me",
    "POST /chat/simple",
    "GET /chat/history",
    "GET /api/v1/conversations",
    "GET /api/v1/conversations/",
    "POST /api/v1/conversations",
    "POST /api/v1/conversations/",
    "GET /api/v1/keys",
    "GET /api/v1/keys/",
    "POST /api/v1/keys",
    "POST /api/v1/keys/",
    "POST /api/v1/users/logout",
    // Lists only the budgets that apply to the caller.
    "GET /v1/budgets",
];

/// …and these when the request names the caller itself (naming the victim must be refused).
const OWN_DATA_WHEN_NAMING_ITSELF: &[&str] = &[
    "GET /models",
    "GET /model",
    "POST /model",
    "POST /query",
    "GET /history",
    "DELETE /history",
    "GET /v1/conversations",
    "GET /v1/cache/conversations",
    "GET /v1/chat-token",
    "GET /v1/usage",
    "POST /api/users",
    "GET /api/users",
    "POST /api/conversations",
    "GET /api/conversations",
];

/// A service key of another tenant (cointutor) acts in its own tenant: seed 001's family names
/// users without a tenant, so `userId=victim` there is cointutor's user `victim`, not ours.
const OWN_TENANT: &[&str] =
    &["GET /v1/models", "POST /v1/chat/completions", "POST /api/conversations", "GET /api/conversations"];

/// …and these when the request names no other tenant.
const OWN_TENANT_WHEN_NAMING_ITSELF: &[&str] = &[
    "GET /models",
    "GET /model",
    "POST /model",
    "POST /query",
    "GET /history",
    "DELETE /history",
    "GET /v1/conversations",
    "GET /v1/cache/conversations",
    "GET /v1/chat-token",
    "GET /v1/usage",
    "GET /v1/budgets",
    "POST /v1/sync",
    "POST /api/users",
    "GET /api/users",
];

/// May `kind` get a 2xx for `op`? `named`: the request names the victim's principal (else
/// it names the caller itself, or nobody).
fn may_succeed(kind: Kind, op: &str, named: bool) -> bool {
    match kind {
        Kind::None | Kind::GarbageKey | Kind::ForgedJwt | Kind::UnsignedJwt => false,
        Kind::AdminToken => ADMIN_OPS.contains(&op),
        Kind::StaticServiceKey => true,
        Kind::ClientKey
        | Kind::ClientKeyOfVictimsTenant
        | Kind::ClientKeyOfAnotherTenant
        | Kind::UserJwt
        | Kind::ChatTokenOfAnotherUser => {
            OWN_DATA.contains(&op) || (!named && OWN_DATA_WHEN_NAMING_ITSELF.contains(&op))
        }
        Kind::ServiceKeyOfAnotherTenant => {
            OWN_TENANT.contains(&op) || (!named && OWN_TENANT_WHEN_NAMING_ITSELF.contains(&op))
        }
    }
}

/// The static service key's reads of the victim that must succeed and show the victim's data:
/// proof the matrix's requests reach the data the others are refused.
const STATIC_KEY_READS: &[(&str, &str)] = &[
    ("GET /v1/conversations", DRILLQUIZ_SECRET),
    ("GET /v1/conversations/{id}/messages", DRILLQUIZ_SECRET),
    ("GET /v1/cache/conversations", DRILLQUIZ_SECRET),
    ("GET /v1/cache/conversations/{id}/messages", DRILLQUIZ_SECRET),
    ("GET /history", DRILLQUIZ_SECRET),
    ("GET /model", "gpt-test-mini"),
    ("GET /api/users", VICTIM_EMAIL),
    ("GET /api/conversations", DEFAULT_SECRET),
    ("GET /api/conversations/{id}/messages", DEFAULT_SECRET),
];

/// The victim's resources.
struct Victim {
    /// (drillquiz, victim)'s conversation.
    conversation: String,
    /// Its whole-number alias.
    number: u64,
    /// (default, victim)'s conversation (seed 001's family acts in `default` for the static key).
    default_conversation: String,
    default_number: u64,
    /// An API key of drillquiz.
    key_id: String,
    /// A provider key of another signed-in user, and that user's token.
    provider_key: String,
    provider_key_owner: String,
}

impl Victim {
    fn markers(&self) -> [&str; 5] {
        [DRILLQUIZ_SECRET, DEFAULT_SECRET, VICTIM_EMAIL, &self.conversation, &self.default_conversation]
    }

    /// `template` with its parameters filled with the victim's ids.
    fn fill(&self, template: &str) -> String {
        let filled = if template.starts_with("/v1/") {
            template.replace("{id}", &self.conversation)
        } else if template.starts_with("/api/v1/conversations/") {
            template.replace("{pk}", &self.number.to_string())
        } else if template.starts_with("/api/v1/keys/") {
            template.replace("{pk}", &self.provider_key)
        } else if template.starts_with("/api/conversations/") {
            template.replace("{id}", &self.default_number.to_string())
        } else if template.starts_with("/api-keys/") {
            template.replace("{api_key}", &self.key_id).replace("{id}", &self.key_id)
        } else if template.starts_with("/assets/") {
            // The pages' files hold no one's data.
            template.replace("{file}", "chat.js")
        } else {
            template.to_owned()
        };
        assert!(!filled.contains('{'), "no victim id to fill {template} with: add one to Victim::fill");
        filled
    }
}

async fn send(app: &TestApp, credential: &Credential, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, format!("{}{path}", app.http)).timeout(Duration::from_secs(10));
    request = match &credential.presented {
        Presented::Nothing => request,
        Presented::ApiKey(key) => request.header("X-API-Key", key),
        Presented::Bearer(token) => request.bearer_auth(token),
        Presented::Admin(token) => request.header("X-Admin-Token", token),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

async fn service_get(app: &TestApp, path: &str) -> Value {
    let answer = app.get(path).await;
    assert_eq!(answer.status(), 200, "{path}");
    answer.json().await.unwrap()
}

async fn issue_key(app: &TestApp, body: Value) -> (String, String) {
    let answer = app
        .client
        .post(format!("{}/api-keys", app.http))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let key: Value = answer.json().await.unwrap();
    (key["api_key"].as_str().unwrap().to_owned(), key["key_id"].as_str().unwrap().to_owned())
}

async fn sign_in(app: &TestApp, username: &str) -> String {
    let join = json!({"username": username, "password": PASSWORD});
    let joined = app.client.post(format!("{}/api/v1/users/join", app.http)).json(&join).send().await.unwrap();
    assert_eq!(joined.status(), 201);
    let login: Value = app
        .client
        .post(format!("{}/api/v1/users/login", app.http))
        .json(&join)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["data"]["token"].as_str().unwrap().to_owned()
}

/// The victim's stored messages, as `(role, content)`, read with the static service key.
async fn messages_of(app: &TestApp, conversation: &str) -> Vec<(String, String)> {
    let page = service_get(app, &format!("/v1/conversations/{conversation}/messages")).await;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect()
}

/// The victim's state that no intruder may change.
async fn victim_state(app: &TestApp, victim: &Victim) -> Value {
    let keys = app
        .client
        .get(format!("{}/api-keys?include_inactive=true", app.http))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let victims_keys: Vec<Value> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["client_name"] == "victim-widget")
        .map(|k| json!([k["key_id"], k["revoked_at"]]))
        .collect();
    let provider_keys: Value = app
        .client
        .get(format!("{}/api/v1/keys/", app.http))
        .bearer_auth(&victim.provider_key_owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = |page: Value| page["data"].as_array().unwrap().iter().map(|c| c["id"].clone()).collect::<Vec<_>>();
    json!({
        "drillquiz messages": messages_of(app, &victim.conversation).await,
        "default messages": messages_of(app, &victim.default_conversation).await,
        "drillquiz conversations": ids(service_get(app, "/v1/conversations?system_id=drillquiz&user_id=victim").await),
        "default conversations": ids(service_get(app, "/v1/conversations?system_id=default&user_id=victim").await),
        "model": service_get(app, "/model?system_id=drillquiz&user_id=victim").await["model"],
        "profile": service_get(app, "/api/users?userId=victim&systemId=drillquiz").await["data"],
        "api keys": victims_keys,
        "provider keys": provider_keys["data"],
    })
}

/// Whom a request names in its `system_id`/`user_id`/`userId`/`user` fields (query and body).
#[derive(Debug, Clone, Copy)]
enum Naming<'a> {
    /// The victim, (drillquiz, victim).
    Victim,
    /// The caller's own user id (no tenant).
    Itself(&'a str),
    /// Nobody: a service key then reads by resource id alone.
    Nobody,
}

/// A request body with every field a route of ours reads; the victim's conversations are named
/// by id whoever `naming` names.
fn body(victim: &Victim, naming: Naming) -> Value {
    let mut body = json!({
        "message": INTRUDER_TEXT, "payload": INTRUDER_TEXT, "input": INTRUDER_TEXT,
        "conversation_id": victim.conversation, "conversationId": victim.number,
        "model": "gpt-test", "messages": [{"role": "user", "content": INTRUDER_TEXT}],
        "title": "intruder", "client_name": "intruder", "name": "intruder", "email": "intruder@example.com",
        "api_key": "sk-intruder-0000", "kind": "open_ai", "scope": "service",
        // Fields no caller sets.
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "key_id": victim.key_id,
        "model_cost": 0, "origin": "https://evil.example",
    });
    let fields = body.as_object_mut().unwrap();
    match naming {
        Naming::Victim => {
            for (field, value) in [
                ("system_id", "drillquiz"),
                ("systemId", "drillquiz"),
                ("user_id", "victim"),
                ("userId", "victim"),
                ("user", "victim"),
            ] {
                fields.insert(field.into(), value.into());
            }
        }
        Naming::Itself(user) => {
            for field in ["user_id", "userId", "user"] {
                fields.insert(field.into(), user.into());
            }
        }
        Naming::Nobody => {}
    }
    body
}

fn query(naming: Naming) -> String {
    match naming {
        Naming::Victim => "?system_id=drillquiz&systemId=drillquiz&user_id=victim&userId=victim".to_owned(),
        Naming::Itself(user) => format!("?user_id={user}&userId={user}"),
        Naming::Nobody => String::new(),
    }
}

/// Turns that reach a conversation other ways than the matrix's plain JSON request: streamed
/// (another RPC), and replaying the victim's `Idempotency-Key` (its stored answer). Each is
/// `(what, Some(violation))` when it got at the victim's conversation.
async fn probes(app: &TestApp, credential: &Credential, victim: &Victim) -> Vec<(&'static str, u16, Option<String>)> {
    let mut cells = Vec::new();
    let own = body(victim, credential.own_user.as_deref().map_or(Naming::Nobody, Naming::Itself));
    let mut streamed = own.clone();
    streamed["stream"] = json!(true);
    let (status, text) = send(app, credential, "POST", "/v1/chat", Some(streamed)).await;
    let reached = (200..300).contains(&status) && text.contains("event: start");
    cells.push(("POST /v1/chat streamed into the victim's conversation", status, reached.then(|| text.clone())));

    // The victim's very request, under the victim's key, as the caller itself.
    let mut replay = json!({"message": DRILLQUIZ_SECRET});
    if let Some(user) = &credential.own_user {
        replay["user_id"] = json!(user);
    }
    let mut request =
        app.client.post(format!("{}/v1/chat", app.http)).header("Idempotency-Key", VICTIM_IDEMPOTENCY_KEY);
    request = match &credential.presented {
        Presented::Nothing => request,
        Presented::ApiKey(key) => request.header("X-API-Key", key),
        Presented::Bearer(token) => request.bearer_auth(token),
        Presented::Admin(token) => request.header("X-Admin-Token", token),
    };
    let answer = request.json(&replay).send().await.unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    let reached = (200..300).contains(&status) && text.contains(&victim.conversation);
    cells.push(("POST /v1/chat replaying the victim's Idempotency-Key", status, reached.then(|| text.clone())));
    cells
}

/// Whether `text` is a list whose every item names `system_id` as its tenant.
fn only_tenant(text: &str, system_id: &str) -> bool {
    let listed = serde_json::from_str::<Value>(text).ok().and_then(|v| v["data"].as_array().cloned());
    listed.is_some_and(|items| items.iter().all(|item| item["system_id"] == system_id))
}

#[tokio::test]
async fn no_credential_reaches_another_principals_data_on_any_route() {
    let started = Instant::now();
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(env(&test_db.url, &upstream.base_url())).await;

    // The victim: (drillquiz, victim), with a conversation, a model choice, a profile and a key.
    let chat = app
        .client
        .post(format!("{}/v1/chat", app.http))
        .header("X-API-Key", SERVICE_KEY)
        .header("Idempotency-Key", VICTIM_IDEMPOTENCY_KEY)
        .json(&json!({"system_id": "drillquiz", "user_id": "victim", "message": DRILLQUIZ_SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let conversation = chat.json::<Value>().await.unwrap()["conversation_id"].as_str().unwrap().to_owned();
    let (drillquiz_service, _) =
        issue_key(&app, json!({"client_name": "quiz-backend", "scope": "service", "system_id": "drillquiz"})).await;
    let listed: Value = app
        .client
        .get(format!("{}/api/conversations?userId=victim", app.http))
        .header("X-API-Key", &drillquiz_service)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let number = listed["data"][0]["id"].as_u64().unwrap();
    let chat = app.post("/api/chat", json!({"userId": "victim", "message": DEFAULT_SECRET})).await;
    assert_eq!(chat.status(), 200);
    let default_number = chat.json::<Value>().await.unwrap()["data"]["conversationId"].as_u64().unwrap();
    let listed = service_get(&app, "/v1/conversations?system_id=default&user_id=victim").await;
    let default_conversation = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let set = app.post("/model?system_id=drillquiz&user_id=victim", json!({"model": "gpt-test-mini"})).await;
    assert_eq!(set.status(), 200);
    let profile = json!({"userId": "victim", "systemId": "drillquiz", "name": "Victim", "email": VICTIM_EMAIL});
    assert_eq!(app.post("/api/users", profile).await.status(), 200);
    let (_, key_id) = issue_key(&app, json!({"client_name": "victim-widget", "system_id": "drillquiz"})).await;
    let provider_key_owner = sign_in(&app, "card_owner").await;
    let added: Value = app
        .client
        .post(format!("{}/api/v1/keys/", app.http))
        .bearer_auth(&provider_key_owner)
        .json(&json!({"name": "card", "api_key": "sk-victim-card-1234"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let provider_key = added["data"]["pk"].as_str().unwrap().to_owned();
    let victim =
        Victim { conversation, number, default_conversation, default_number, key_id, provider_key, provider_key_owner };

    // The intruders, then the credentials entitled to the victim's data.
    let (client, client_id) = issue_key(&app, json!({"client_name": "intruder"})).await;
    let (same_tenant, same_tenant_id) =
        issue_key(&app, json!({"client_name": "intruder-dq", "system_id": "drillquiz"})).await;
    let (other_tenant, other_tenant_id) =
        issue_key(&app, json!({"client_name": "intruder-ct", "system_id": "cointutor"})).await;
    let (cointutor_service, _) =
        issue_key(&app, json!({"client_name": "ct-backend", "scope": "service", "system_id": "cointutor"})).await;
    let jwt = sign_in(&app, "mallory").await;
    let chat_token = service_get(&app, "/v1/chat-token?system_id=drillquiz&user_id=other").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The chat token's claims, made the victim's.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(chat_token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    claims["user_id"] = json!("victim");
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-0123456789abcdef-0123456789"),
    )
    .unwrap();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let credential = |kind, presented, own_user: Option<String>| Credential { kind, presented, own_user };
    let credentials = [
        credential(Kind::None, Presented::Nothing, None),
        credential(Kind::GarbageKey, Presented::ApiKey("sb_0123456789ab_not-a-real-secret-at-all".into()), None),
        credential(Kind::ForgedJwt, Presented::Bearer(forged.clone()), None),
        credential(Kind::UnsignedJwt, Presented::Bearer(unsigned.clone()), None),
        credential(Kind::ClientKey, Presented::ApiKey(client), Some(format!("key_{client_id}"))),
        credential(
            Kind::ClientKeyOfVictimsTenant,
            Presented::ApiKey(same_tenant),
            Some(format!("key_{same_tenant_id}")),
        ),
        credential(
            Kind::ClientKeyOfAnotherTenant,
            Presented::ApiKey(other_tenant),
            Some(format!("key_{other_tenant_id}")),
        ),
        credential(Kind::UserJwt, Presented::Bearer(jwt), Some("user:mallory".into())),
        credential(Kind::ChatTokenOfAnotherUser, Presented::Bearer(chat_token), Some("other".into())),
        credential(Kind::ServiceKeyOfAnotherTenant, Presented::ApiKey(cointutor_service), Some("victim".into())),
        credential(Kind::AdminToken, Presented::Admin(ADMIN_TOKEN.into()), None),
        credential(Kind::StaticServiceKey, Presented::ApiKey(SERVICE_KEY.into()), None),
    ];

    // Every documented operation; logout last (it revokes the token it is sent with).
    let spec: Value = app.client.get(format!("{}/openapi.json", app.http)).send().await.unwrap().json().await.unwrap();
    let mut operations = Vec::new();
    for (template, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(operation) = item.get(method) {
                let form = operation["requestBody"]["content"].get("application/x-www-form-urlencoded").is_some();
                let has_body = operation.get("requestBody").is_some();
                operations.push((method.to_uppercase(), template.clone(), has_body, form));
            }
        }
    }
    operations.sort_by_key(|(_, template, ..)| template.ends_with("/logout"));
    assert!(operations.len() > 30, "{operations:?}");
    let documented: BTreeSet<String> = operations.iter().map(|(m, t, ..)| format!("{m} {t}")).collect();
    for op in PUBLIC.iter().chain(ADMIN_OPS).chain(OWN_DATA).chain(OWN_DATA_WHEN_NAMING_ITSELF).chain(OWN_TENANT) {
        assert!(documented.contains(*op), "{op} is allowed here but is not in /openapi.json");
    }

    let before = victim_state(&app, &victim).await;
    // `MATRIX_VERBOSE=1` prints every cell.
    let verbose = std::env::var_os("MATRIX_VERBOSE").is_some();
    let (mut sent, mut public, mut own, mut allowed, mut refused) = (0, 0, 0, 0, 0);
    let mut violations = Vec::new();
    let mut server_errors = Vec::new();
    let mut checked_state = false;
    for credential in &credentials {
        if credential.kind == Kind::AdminToken && !checked_state {
            // Before the credentials that may change the victim's things.
            assert_eq!(victim_state(&app, &victim).await, before, "an intruder changed the victim's data");
            checked_state = true;
        }
        // The probes send the victim's own message as the caller's: they run after the routes
        // (which would see it in the caller's own listings), before logging out revokes the token.
        let mut probed = matches!(credential.kind, Kind::StaticServiceKey | Kind::AdminToken);
        let mut variants = vec![Naming::Victim, Naming::Nobody];
        variants.extend(credential.own_user.as_deref().map(Naming::Itself));
        for (method, template, has_body, form) in &operations {
            let op = format!("{method} {template}");
            if template.ends_with("/logout") && !probed {
                probed = true;
                for (probe, status, violation) in probes(&app, credential, &victim).await {
                    sent += 1;
                    if (200..300).contains(&status) {
                        allowed += 1;
                        own += 1;
                    } else {
                        refused += 1;
                    }
                    if let Some(text) = violation {
                        violations.push(format!("{:?} {probe} → {status}: {text}", credential.kind));
                    }
                }
            }
            let is_public = PUBLIC.contains(&op.as_str());
            for naming in variants.iter().copied() {
                let named = matches!(naming, Naming::Victim);
                if is_public && !named {
                    continue;
                }
                // The static key is entitled to the victim: it only reads, so the victim's data
                // stays as it was for the checks after the matrix.
                if credential.kind == Kind::StaticServiceKey && method != "GET" {
                    continue;
                }
                let path = format!("{}{}", victim.fill(template), query(naming));
                let body = match (has_body, form, is_public) {
                    (false, ..) => None,
                    // Signing up or in is public; an empty body is refused before any hashing.
                    (true, true, _) | (true, _, true) => Some(json!({})),
                    (true, false, false) => Some(body(&victim, naming)),
                };
                let (status, text) = send(&app, credential, method, &path, body).await;
                sent += 1;
                if verbose {
                    println!("{:?} {method} {path} → {status} {:.160}", credential.kind, text.replace('\n', " "));
                }
                if status >= 500 {
                    server_errors.push(format!("{:?} {op} → {status}: {text}", credential.kind));
                }
                if !(200..300).contains(&status) {
                    refused += 1;
                    continue;
                }
                allowed += 1;
                if is_public {
                    public += 1;
                    continue;
                }
                let cell = format!("{:?} {op} (naming {naming:?}) → {status}", credential.kind);
                if !may_succeed(credential.kind, &op, named) {
                    violations.push(format!("{cell}: {text}"));
                    continue;
                }
                if matches!(credential.kind, Kind::StaticServiceKey | Kind::AdminToken) {
                    continue;
                }
                own += 1;
                if credential.kind == Kind::ServiceKeyOfAnotherTenant && only_tenant(&text, "cointutor") {
                    // A tenant-wide listing of its own tenant, where the probes of cointutor's
                    // credentials sent the victim's words as their own.
                    continue;
                }
                if let Some(marker) = victim.markers().into_iter().find(|m| text.contains(m)) {
                    violations.push(format!("{cell} shows the victim's {marker:?}: {text}"));
                }
                if op == "GET /v1/chat-token" {
                    // A minted token is for the caller itself, never the victim.
                    let token = serde_json::from_str::<Value>(&text).unwrap()["token"].as_str().unwrap().to_owned();
                    let me = app.client.get(format!("{}/users/me", app.http)).bearer_auth(token).send().await.unwrap();
                    let me: Value = me.json().await.unwrap();
                    if me["system_id"] == "drillquiz" && me["username"] == "victim" {
                        violations.push(format!("{cell} minted a token for the victim"));
                    }
                }
            }
        }
        assert!(probed, "the probes run before the logout route");
        if credential.kind == Kind::StaticServiceKey {
            for (op, marker) in STATIC_KEY_READS {
                let (method, template) = op.split_once(' ').unwrap();
                let path = format!("{}{}", victim.fill(template), query(Naming::Victim));
                let (status, text) = send(&app, credential, method, &path, None).await;
                assert_eq!(status, 200, "the static service key reads the victim with {op}: {text}");
                assert!(text.contains(marker), "{op} does not show the victim's data: {text}");
            }
        }
    }

    // Nothing was appended, created or changed for the victim by anyone.
    let after = victim_state(&app, &victim).await;
    let mut unchanged = before.clone();
    // The admin token may revoke and rotate the victim's key: that is what it is for.
    unchanged["api keys"] = after["api keys"].clone();
    assert_eq!(after, unchanged, "the victim's data changed during the matrix");
    let expected = vec![
        ("user".to_owned(), DRILLQUIZ_SECRET.to_owned()),
        ("assistant".to_owned(), format!("upstream reply to: {DRILLQUIZ_SECRET}")),
    ];
    assert_eq!(messages_of(&app, &victim.conversation).await, expected);

    println!(
        "authorization matrix: {} operations × {} credential kinds = {sent} requests (naming the victim, \
         nobody, and itself where it has an identity; + streamed and idempotent-replay probes); 2xx: {allowed} (public {public}, \
         caller's own data {own}, static service key/admin {}), refused: {refused}, violations: {}, 5xx: {}, {:.1} s",
        operations.len(),
        credentials.len(),
        allowed - public - own,
        violations.len(),
        server_errors.len(),
        started.elapsed().as_secs_f64()
    );
    for error in &server_errors {
        println!("  5xx: {error}");
    }
    assert!(violations.is_empty(), "unauthorized 2xx:\n{}", violations.join("\n"));
    app.stop().await;
}

/// Usage as an answer reports it.
fn usage_of(value: &Value) -> (u64, u64) {
    let field = |names: [&str; 2]| names.iter().find_map(|n| value[*n].as_u64()).unwrap();
    (field(["prompt_tokens", "promptTokens"]), field(["completion_tokens", "completionTokens"]))
}

/// What the mock upstream reported for the last call it got (see `MockUpstream`): prompt
/// tokens are the words it was sent, completion tokens the words of its answer.
fn reported(upstream: &MockUpstream) -> (u64, u64) {
    let request = upstream.requests().last().cloned().unwrap();
    let words = |text: &str| text.split_whitespace().count() as u64;
    let prompt = request["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).map(words).sum();
    let last = request["messages"].as_array().unwrap().iter().rev().find(|m| m["role"] == "user").unwrap();
    (prompt, words(&format!("upstream reply to: {}", last["content"].as_str().unwrap())))
}

#[tokio::test]
async fn fields_a_caller_may_not_set_are_refused_or_ignored() {
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let app = spawn_app(env(&test_db.url, &upstream.base_url())).await;
    let (client, client_id) = issue_key(&app, json!({"client_name": "mass-assigner"})).await;
    let as_client = |path: &str, body: Value| {
        app.client.post(format!("{}{path}", app.http)).header("X-API-Key", &client).json(&body).send()
    };

    // Naming another principal in the body is refused.
    for body in [
        json!({"system_id": "drillquiz", "user_id": "victim", "message": "hi"}),
        json!({"system_id": "drillquiz", "message": "hi"}),
        json!({"user_id": "victim", "message": "hi"}),
    ] {
        let answer = as_client("/v1/chat", body.clone()).await.unwrap();
        assert_eq!(answer.status(), 403, "{body}");
    }
    let answer = as_client("/api/chat", json!({"userId": "victim", "message": "hi"})).await.unwrap();
    assert_eq!(answer.status(), 403);
    assert_eq!(upstream.calls(), 0, "a refused turn reached the model");

    // Accounting fields are the server's: whatever a body says is ignored.
    const FORGED_KEY: &str = "f0f0f0f0f0f0";
    let forged = json!({
        "usage": {"prompt_tokens": 999_999, "completion_tokens": 999_999, "total_tokens": 1_999_998},
        "key_id": FORGED_KEY, "keyId": FORGED_KEY, "model_cost": 0, "cost_micros": 0, "cost_usd": 0,
        "origin": "forged", "status": "complete", "role": "system", "id": "forged-id", "number": 1,
        "created_at": "2000-01-01T00:00:00Z",
    });
    let with_forged = |fields: Value| {
        let mut body = forged.clone();
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        body
    };

    // POST /v1/chat with a client key.
    let answer = as_client("/v1/chat", with_forged(json!({"message": "count these four words"}))).await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    let expected = reported(&upstream);
    assert_eq!(usage_of(&answer["usage"]), expected, "{answer}");
    let conversation = answer["conversation_id"].as_str().unwrap();
    let message_id = answer["message_id"].as_str().unwrap().to_owned();
    let listed: Value = app
        .client
        .get(format!("{}/v1/conversations/{conversation}/messages", app.http))
        .header("X-API-Key", &client)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = listed["data"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{listed}");
    assert_eq!(messages[0]["role"], "user");
    assert_ne!(messages[0]["id"], "forged-id");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(usage_of(&messages[1]["usage"]), expected, "{listed}");

    // POST /api/chat with the service key.
    let answer = app.post("/api/chat", with_forged(json!({"userId": "mass-user", "message": "two words"}))).await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    let expected_api = reported(&upstream);
    assert_eq!(usage_of(&answer["data"]["usage"]), expected_api, "{answer}");
    let number = answer["data"]["conversationId"].as_u64().unwrap();
    let listed: Value =
        app.get(&format!("/api/conversations/{number}/messages?userId=mass-user")).await.json().await.unwrap();
    let reply = &listed["data"]["messages"][1];
    assert_eq!(reply["role"], "assistant", "{listed}");
    assert_eq!(usage_of(&reply["metadata"]["usage"]), expected_api, "{listed}");

    // POST /v1/chat/completions with the client key, naming someone else besides.
    let answer = as_client(
        "/v1/chat/completions",
        with_forged(json!({"model": "gpt-test", "messages": [{"role": "user", "content": "three words here"}],
                           "user": "victim", "system_id": "drillquiz", "user_id": "victim"})),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    let expected_completion = reported(&upstream);
    assert_eq!(usage_of(&answer["usage"]), expected_completion, "{answer}");

    // What was stored: the caller's real key and principal, the upstream's usage.
    let pool = sqlx::SqlitePool::connect(&test_db.url).await.unwrap();
    // Usage records and the LLM proxy's rollups are written in batches, off the request path.
    let deadline = Instant::now() + Duration::from_secs(5);
    let record = loop {
        let record = sqlx::query_as::<_, (String, String, String, i64, i64)>(
            "SELECT system_id, user_id, key_id, prompt_tokens, completion_tokens FROM usage_records \
             WHERE message_id = $1",
        )
        .bind(&message_id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        match record {
            Some(record) => break record,
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            None => panic!("no usage record of the turn was written"),
        }
    };
    let principal = format!("key_{client_id}");
    assert_eq!((record.1.as_str(), record.2.as_str()), (principal.as_str(), client_id.as_str()), "{record:?}");
    assert_eq!((record.3 as u64, record.4 as u64), expected, "{record:?}");
    let rollups = loop {
        let rows = sqlx::query_as::<_, (String, String, String, i64, i64, i64)>(
            "SELECT system_id, user_id, key_id, requests, prompt_tokens, completion_tokens FROM usage_rollups",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        if rows.iter().map(|r| r.3).sum::<i64>() >= 3 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(rollups.iter().all(|r| r.2 != FORGED_KEY && r.1 != "victim"), "{rollups:?}");
    let of_client: Vec<_> = rollups.iter().filter(|r| r.2 == client_id).collect();
    assert!(of_client.iter().all(|r| r.1 == principal), "{rollups:?}");
    let (requests, prompt, completion) =
        of_client.iter().fold((0, 0, 0), |(n, p, c), r| (n + r.3, p + r.4 as u64, c + r.5 as u64));
    assert_eq!(requests, 2, "the client key's turn and completion: {rollups:?}");
    assert_eq!((prompt, completion), (expected.0 + expected_completion.0, expected.1 + expected_completion.1));
    println!(
        "mass assignment: 4 bodies naming another principal refused (403); forged usage/key_id/cost ignored on \
         /v1/chat, /api/chat, /v1/chat/completions"
    );
    app.stop().await;
}

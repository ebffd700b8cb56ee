//! Starts every Switchboard component on loopback port 0, as the launcher does, and hands
//! tests typed clients. Settings are injected; the process environment is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard_kit::Env;
use switchboard_kit::grpc::Channel;
use switchboard_kit::revocation::Hub;
use switchboard_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use switchboard_proto::llm::v1::llm_service_client::LlmServiceClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The static service key every test app accepts.
pub const SERVICE_KEY: &str = "test-service-key-0123456789";
/// The admin token of apps started with [`with_admin`].
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// `env` with key management on, under [`ADMIN_TOKEN`].
pub fn with_admin(env: Env) -> Env {
    env.with("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
}

/// A running Switchboard.
pub struct TestApp {
    /// Gateway base URL, e.g. `http://127.0.0.1:40123`.
    pub http: String,
    /// Auth gRPC port.
    pub auth_port: u16,
    /// Conversations gRPC port.
    pub conversations_port: u16,
    /// LLM proxy gRPC port.
    pub llm_port: u16,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The settings every component got, with the actual service addresses.
    pub env: Env,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The settings a test app starts with: `DATABASE_URL` and the service key; add more with
/// [`Env::with`].
pub fn base_env(database_url: &str) -> Env {
    Env::from_pairs([
        ("DATABASE_URL", database_url),
        ("CHAT_GATEWAY_API_KEY", SERVICE_KEY),
        ("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:0"),
        ("SWITCHBOARD_AUTH_ADDR", "127.0.0.1:0"),
        ("SWITCHBOARD_CONVERSATIONS_ADDR", "127.0.0.1:0"),
        ("SWITCHBOARD_LLM_ADDR", "127.0.0.1:0"),
    ])
}

/// [`base_env`] with an OpenAI-compatible upstream serving `gpt-test`, the default model.
pub fn openai_env(database_url: &str, upstream_base_url: &str) -> Env {
    base_env(database_url)
        .with("OPENAI_BASE_URL", upstream_base_url)
        .with("OPENAI_API_KEY", "sk-upstream-secret")
        .with("SWITCHBOARD_DEFAULT_MODEL", "gpt-test")
}

fn spawn<F>(
    stop: &watch::Receiver<bool>,
    name: &'static str,
    run: impl FnOnce(watch::Receiver<bool>) -> F,
) -> JoinHandle<()>
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let fut = run(stop.clone());
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            panic!("{name} failed: {e}");
        }
    })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Starts auth, LLM proxy, conversations and gateway with `env`, each on a free port.
pub async fn spawn_app(env: Env) -> TestApp {
    let (stop, rx) = watch::channel(false);
    // Each app is its own deployment unit: apps share revocations only through Redis.
    let hub = Hub::default();
    use switchboard_auth as auth;
    use switchboard_conversations as conversations;
    use switchboard_gateway as gateway;
    use switchboard_llm_proxy as llm;
    let auth = auth::Application::build(auth::Settings::from_env(&env).unwrap(), &hub).await.unwrap();
    let env = env.with("SWITCHBOARD_AUTH_ADDR", format!("127.0.0.1:{}", auth.port()));
    let llm = llm::Application::build(llm::Settings::from_env(&env).unwrap(), &hub).await.unwrap();
    let (auth_port, llm_port) = (auth.port(), llm.port());
    let env = env.with("SWITCHBOARD_LLM_ADDR", format!("127.0.0.1:{llm_port}"));
    let conversations =
        conversations::Application::build(conversations::Settings::from_env(&env).unwrap(), &hub).await.unwrap();
    let conversations_port = conversations.port();
    let env = env.with("SWITCHBOARD_CONVERSATIONS_ADDR", format!("127.0.0.1:{conversations_port}"));
    let gateway = gateway::Application::build(gateway::Settings::from_env(&env).unwrap(), &hub).await.unwrap();
    let http = format!("http://127.0.0.1:{}", gateway.port());
    let tasks = vec![
        spawn(&rx, "auth", |rx| async move { auth.run_until_stopped(stopped(rx)).await.map_err(|e| e.to_string()) }),
        spawn(
            &rx,
            "llm-proxy",
            |rx| async move { llm.run_until_stopped(stopped(rx)).await.map_err(|e| e.to_string()) },
        ),
        spawn(&rx, "conversations", |rx| async move {
            conversations.run_until_stopped(stopped(rx)).await.map_err(|e| e.to_string())
        }),
        spawn(
            &rx,
            "gateway",
            |rx| async move { gateway.run_until_stopped(stopped(rx)).await.map_err(|e| e.to_string()) },
        ),
    ];
    let client = switchboard_test_support::http().timeout(Duration::from_secs(30)).build().unwrap();
    TestApp { http, auth_port, conversations_port, llm_port, client, env, stop, tasks }
}

impl TestApp {
    /// `POST {path}` with a JSON body and the service key.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.http))
            .header("X-API-Key", SERVICE_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET {path}` with the service key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.http)).header("X-API-Key", SERVICE_KEY).send().await.unwrap()
    }

    /// Issues an API key (`POST /api-keys` with [`ADMIN_TOKEN`]); the answer, with the key
    /// in `api_key` and its id in `key_id`.
    pub async fn issue_key(&self, body: serde_json::Value) -> serde_json::Value {
        let answer = self
            .client
            .post(format!("{}/api-keys", self.http))
            .header("X-Admin-Token", ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "issuing a key");
        answer.json().await.unwrap()
    }

    /// A client key named `client_name`: `(plaintext, key id)`.
    pub async fn client_key(&self, client_name: &str) -> (String, String) {
        let key = self.issue_key(serde_json::json!({"client_name": client_name})).await;
        (key["api_key"].as_str().unwrap().to_owned(), key["key_id"].as_str().unwrap().to_owned())
    }

    /// Signs `username` up in tenant `system_id` (`POST /register`).
    pub async fn register(&self, username: &str, password: &str, system_id: &str) -> reqwest::Response {
        let body = serde_json::json!({"username": username, "password": password, "system_id": system_id});
        self.client.post(format!("{}/register", self.http)).json(&body).send().await.unwrap()
    }

    /// Logs `username` in (`POST /token`, the OAuth2 password flow): the access token.
    pub async fn login(&self, username: &str, password: &str, system_id: &str) -> String {
        let answer = self
            .client
            .post(format!("{}/token", self.http))
            .form(&[("username", username), ("password", password), ("system_id", system_id)])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "login of {username}");
        answer.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    /// A gRPC client of the conversation service.
    pub async fn conversations(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::new(grpc_channel(self.conversations_port))
    }

    /// A gRPC client of the LLM proxy.
    pub async fn llm(&self) -> LlmServiceClient<Channel> {
        LlmServiceClient::new(grpc_channel(self.llm_port))
    }

    /// Stops every component gracefully and waits until they have.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// A second gateway in front of an app's services, as another replica would be: its own
/// caches and revocation hub, sharing only what `env` says (e.g. `REDIS_URL`).
pub struct ExtraGateway {
    /// Base URL.
    pub http: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestApp {
    /// Starts another gateway replica against this app's services.
    pub async fn extra_gateway(&self) -> ExtraGateway {
        let settings =
            switchboard_gateway::Settings::from_env(&self.env.clone().with("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:0"))
                .unwrap();
        let gateway = switchboard_gateway::Application::build(settings, &Hub::default()).await.unwrap();
        let http = format!("http://127.0.0.1:{}", gateway.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gateway
                .run_until_stopped(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        ExtraGateway { http, stop: Some(stop), task }
    }
}

impl ExtraGateway {
    /// Stops it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The Redis the tests share (`SWITCHBOARD_TEST_REDIS_URL`, default local), checked to answer:
/// a Redis test fails when there is none, it is never skipped.
pub async fn redis_url() -> String {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url.as_str()).unwrap();
    let reachable = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(3), reachable).await {
        Ok(Ok(_)) => url,
        other => panic!("Redis is required for this test and does not answer at {url}: {other:?}"),
    }
}

/// [`base_env`] sharing the test Redis under a prefix of its own, so tests do not meet.
pub async fn redis_env(database_url: &str) -> Env {
    let prefix = format!("sbtest-{}", uuid_simple());
    base_env(database_url).with("REDIS_URL", redis_url().await).with("SWITCHBOARD_REDIS_PREFIX", prefix)
}

fn uuid_simple() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{nanos:x}{:x}", std::process::id())
}

/// A channel to a gRPC port on loopback.
pub fn grpc_channel(port: u16) -> Channel {
    switchboard_kit::grpc::channel(&format!("127.0.0.1:{port}")).unwrap()
}

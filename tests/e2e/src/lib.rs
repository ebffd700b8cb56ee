//! Starts every Switchboard component on loopback port 0, as the launcher does, and hands
//! tests typed clients. Settings are injected; the process environment is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard_kit::Env;
use switchboard_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use switchboard_proto::llm::v1::llm_service_client::LlmServiceClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The static service key every test app accepts.
pub const SERVICE_KEY: &str = "test-service-key-0123456789";

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
    let auth = switchboard_auth::Application::build(switchboard_auth::Settings::from_env(&env).unwrap()).await.unwrap();
    let env = env.with("SWITCHBOARD_AUTH_ADDR", format!("127.0.0.1:{}", auth.port()));
    let llm = switchboard_llm_proxy::Application::build(switchboard_llm_proxy::Settings::from_env(&env).unwrap())
        .await
        .unwrap();
    let (auth_port, llm_port) = (auth.port(), llm.port());
    let env = env.with("SWITCHBOARD_LLM_ADDR", format!("127.0.0.1:{llm_port}"));
    let conversations =
        switchboard_conversations::Application::build(switchboard_conversations::Settings::from_env(&env).unwrap())
            .await
            .unwrap();
    let conversations_port = conversations.port();
    let env = env.with("SWITCHBOARD_CONVERSATIONS_ADDR", format!("127.0.0.1:{conversations_port}"));
    let gateway =
        switchboard_gateway::Application::build(switchboard_gateway::Settings::from_env(&env).unwrap()).await.unwrap();
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
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    TestApp { http, auth_port, conversations_port, llm_port, client, stop, tasks }
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

/// A channel to a gRPC port on loopback.
pub fn grpc_channel(port: u16) -> Channel {
    switchboard_kit::grpc::channel(&format!("127.0.0.1:{port}")).unwrap()
}

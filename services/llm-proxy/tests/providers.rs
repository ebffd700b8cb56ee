//! The model choice store on both backends, and the OpenAI-compatible provider against a
//! real mock upstream server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use secrecy::SecretString;
use switchboard_kit::db::Db;
use switchboard_llm_proxy::MIGRATIONS;
use switchboard_llm_proxy::providers::openai::OpenAi;
use switchboard_llm_proxy::providers::{ChatMessage, CompletionRequest, ProviderError, Role};
use switchboard_llm_proxy::resilience::RetryPolicy;
use switchboard_llm_proxy::store::{ModelChoiceStore, SqlStore};
use switchboard_test_support::MockUpstream;
use switchboard_test_support::db::{self, TestDb};

async fn model_choice_is_per_principal_and_overwritten(test_db: TestDb) {
    let db = Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
    db.migrate(&MIGRATIONS).await.unwrap();
    let store = SqlStore::new(db);
    assert_eq!(store.get("default", "key_a").await.unwrap(), None);
    store.set("default", "key_a", "mock").await.unwrap();
    store.set("default", "key_a", "gpt-test").await.unwrap();
    store.set("default", "key_b", "mock").await.unwrap();
    assert_eq!(store.get("default", "key_a").await.unwrap().as_deref(), Some("gpt-test"));
    assert_eq!(store.get("default", "key_b").await.unwrap().as_deref(), Some("mock"));
    assert_eq!(store.get("other", "key_a").await.unwrap(), None);
}

#[tokio::test]
async fn model_choice_on_sqlite() {
    model_choice_is_per_principal_and_overwritten(db::sqlite()).await;
}

#[tokio::test]
async fn model_choice_on_postgres() {
    model_choice_is_per_principal_and_overwritten(db::postgres().await).await;
}

fn request(text: &str) -> CompletionRequest {
    CompletionRequest {
        model: "gpt-test".into(),
        messages: vec![
            ChatMessage { role: Role::System, content: "be brief".into() },
            ChatMessage { role: Role::User, content: text.into() },
        ],
        temperature: Some(0.5),
        max_tokens: Some(64),
        system_id: "drillquiz".into(),
        user_id: "u1".into(),
        lang: String::new(),
        upstream_conversation_id: String::new(),
    }
}

#[tokio::test]
async fn openai_provider_sends_the_wire_format_and_reads_the_answer() {
    let upstream = MockUpstream::start().await;
    let provider = OpenAi::new(
        upstream.base_url(),
        Some(SecretString::from("sk-test")),
        Duration::from_secs(5),
        RetryPolicy::default(),
    )
    .unwrap();
    let out = provider.complete(&request("hello")).await.unwrap();
    assert_eq!(out.content, "upstream reply to: hello");
    assert_eq!(out.finish_reason, "stop");
    assert_eq!(out.usage.prompt_tokens, 3);
    assert_eq!(out.usage.completion_tokens, 4);
    let sent = &upstream.requests()[0];
    assert_eq!(sent["model"], "gpt-test");
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(upstream.authorizations()[0].as_deref(), Some("Bearer sk-test"));
}

#[tokio::test]
async fn openai_provider_classifies_failures() {
    let upstream = MockUpstream::start().await;
    let no_retries = RetryPolicy { max_retries: 0, ..RetryPolicy::default() };
    let provider = OpenAi::new(upstream.base_url(), None, Duration::from_millis(300), no_retries).unwrap();

    upstream.fail_next(&[429]);
    match provider.complete(&request("x")).await {
        Err(ProviderError::Status { status: 429, message, .. }) => assert_eq!(message, "mock failure 429"),
        other => panic!("expected a 429, got {other:?}"),
    }
    assert!(upstream.authorizations()[0].is_none(), "no key configured, none sent");

    upstream.set_delay(Duration::from_secs(2));
    assert!(matches!(provider.complete(&request("x")).await, Err(ProviderError::Timeout)));

    let nowhere = OpenAi::new("http://127.0.0.1:9/v1".into(), None, Duration::from_secs(2), no_retries).unwrap();
    assert!(matches!(nowhere.complete(&request("x")).await, Err(ProviderError::Connect(_))));
}

#[tokio::test]
async fn openai_provider_retries_throttling_and_server_errors() {
    let upstream = MockUpstream::start().await;
    let fast = RetryPolicy { base_delay: Duration::from_millis(5), ..RetryPolicy::default() };
    let provider = OpenAi::new(upstream.base_url(), None, Duration::from_secs(5), fast).unwrap();
    upstream.fail_next(&[503, 503]);
    let out = provider.complete(&request("again")).await.unwrap();
    assert_eq!(out.content, "upstream reply to: again");
    assert_eq!(upstream.calls(), 3, "two failures, one success");

    upstream.fail_next(&[400]);
    assert!(matches!(provider.complete(&request("x")).await, Err(ProviderError::Status { status: 400, .. })));
    assert_eq!(upstream.calls(), 4, "client errors are not retried");
}

async fn provider_keys_are_kept_per_owner_with_their_usage(test_db: TestDb) {
    use switchboard_llm_proxy::store::{KeyUsage, ProviderKeyStore, StoredProviderKey};
    let db = Db::connect(&test_db.url, "DATABASE_URL").await.unwrap();
    db.migrate(&MIGRATIONS).await.unwrap();
    let sql = SqlStore::new(db);
    let store: &dyn ProviderKeyStore = &sql;
    let key = |id: &str, user: &str, at: i64| StoredProviderKey {
        id: id.into(),
        system_id: "default".into(),
        user_id: user.into(),
        provider: "openai".into(),
        label: "card".into(),
        sealed: "00ff".into(),
        last_four: "1234".into(),
        created_at: at,
        requests: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_micros: 0,
        last_used_at: None,
    };
    store.insert(&key("k1", "alice", 1)).await.unwrap();
    store.insert(&key("k2", "alice", 2)).await.unwrap();
    store.insert(&key("k3", "bob", 3)).await.unwrap();
    assert_eq!(store.newest("default", "alice", "openai").await.unwrap().unwrap().id, "k2");
    assert_eq!(store.list("default", "alice").await.unwrap().len(), 2);
    assert!(store.get("default", "alice", "k3").await.unwrap().is_none(), "bob's key is not alice's");
    let usage = KeyUsage { requests: 2, prompt_tokens: 10, completion_tokens: 5, cost_micros: 7, last_used_at: 50 };
    store.add_usage(&[("k2".into(), usage), ("k2".into(), KeyUsage { last_used_at: 40, ..usage })]).await.unwrap();
    let k2 = store.get("default", "alice", "k2").await.unwrap().unwrap();
    assert_eq!(
        (k2.requests, k2.prompt_tokens, k2.completion_tokens, k2.cost_micros, k2.last_used_at),
        (4, 20, 10, 14, Some(50))
    );
    assert!(!store.delete("default", "bob", "k2").await.unwrap());
    assert!(store.delete("default", "alice", "k2").await.unwrap());
    assert_eq!(store.newest("default", "alice", "openai").await.unwrap().unwrap().id, "k1");
}

#[tokio::test]
async fn provider_keys_on_sqlite() {
    provider_keys_are_kept_per_owner_with_their_usage(db::sqlite()).await;
}

#[tokio::test]
async fn provider_keys_on_postgres() {
    provider_keys_are_kept_per_owner_with_their_usage(db::postgres().await).await;
}

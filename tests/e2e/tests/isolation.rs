//! Tenant isolation, as a property: for random principals and ids, another principal's
//! conversation is answered exactly like a missing one, over REST and over gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{Value, json};
use switchboard_e2e::{SERVICE_KEY, TestApp, base_env, grpc_channel, spawn_app};
use switchboard_proto::conversation::v1 as pb;
use switchboard_proto::conversation::v1::conversation_service_client::ConversationServiceClient;

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());

static APP: LazyLock<TestApp> = LazyLock::new(|| {
    let test_db = Box::leak(Box::new(switchboard_test_support::db::sqlite()));
    let env = base_env(&test_db.url)
        .with("SWITCHBOARD_RATE_LIMIT_CHAT", "off")
        .with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off")
        .with("SWITCHBOARD_RATE_LIMIT_API", "off")
        .with("SWITCHBOARD_RATE_LIMIT_API_PRINCIPAL", "off");
    RUNTIME.block_on(spawn_app(env))
});

fn principal() -> impl Strategy<Value = (String, String)> {
    ("[a-z][a-z0-9_]{0,11}", "[A-Za-z0-9_.@-]{1,20}")
}

fn grpc_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-api-key", SERVICE_KEY.parse().unwrap());
    request
}

async fn check(owner: (String, String), intruder: (String, String), bogus: String) {
    let app = &*APP;
    let created: Value = app
        .post("/v1/chat", json!({"system_id": owner.0, "user_id": owner.1, "message": "private"}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["conversation_id"].as_str().expect("the owner's turn succeeds").to_owned();
    let query = |p: &(String, String)| format!("system_id={}&user_id={}", urlencode(&p.0), urlencode(&p.1));

    // REST: reading theirs looks exactly like reading nothing.
    let theirs = app.get(&format!("/v1/conversations/{id}/messages?{}", query(&intruder))).await;
    let missing = app.get(&format!("/v1/conversations/{}/messages?{}", urlencode(&bogus), query(&intruder))).await;
    assert_eq!(theirs.status(), 404);
    assert_eq!(missing.status(), 404);
    assert_eq!(theirs.text().await.unwrap(), missing.text().await.unwrap());
    let listed: Value = app.get(&format!("/v1/conversations?{}", query(&intruder))).await.json().await.unwrap();
    assert!(listed["data"].as_array().unwrap().iter().all(|c| c["id"] != id.as_str()));
    let hijack = app
        .post(
            "/v1/chat",
            json!({"system_id": intruder.0, "user_id": intruder.1, "message": "x", "conversation_id": id}),
        )
        .await;
    assert_eq!(hijack.status(), 404);

    // gRPC: NOT_FOUND, with the same message as a missing id.
    let mut grpc = ConversationServiceClient::new(grpc_channel(app.conversations_port));
    let as_intruder = pb::Principal { system_id: intruder.0.clone(), user_id: intruder.1.clone() };
    let get = |conversation_id: String| {
        grpc_request(pb::GetConversationRequest { principal: Some(as_intruder.clone()), conversation_id, number: 0 })
    };
    let theirs = grpc.get_conversation(get(id.clone())).await.unwrap_err();
    let missing = grpc.get_conversation(get(bogus.clone())).await.unwrap_err();
    assert_eq!(theirs.code(), tonic::Code::NotFound);
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(theirs.message(), missing.message());

    // The owner still sees it, untouched.
    let mine: Value =
        app.get(&format!("/v1/conversations/{id}/messages?{}", query(&owner))).await.json().await.unwrap();
    assert_eq!(mine["data"].as_array().unwrap().len(), 2);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn another_principals_conversation_is_indistinguishable_from_a_missing_one(
        owner in principal(),
        intruder in principal(),
        bogus in "[0-9a-f-]{8,36}",
    ) {
        prop_assume!(owner != intruder);
        LazyLock::force(&APP);
        RUNTIME.block_on(check(owner, intruder, bogus));
    }
}

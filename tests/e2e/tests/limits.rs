//! Long conversations stay readable and keep working: pages and prompts are bounded in bytes,
//! below gRPC's 4 MiB message limit, however long each message is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_e2e::{openai_env, spawn_app};
use switchboard_test_support::{MockUpstream, db};

#[tokio::test]
async fn a_history_of_long_messages_is_read_in_pages_and_every_turn_still_works() {
    // The upstream's model has no known context window: nothing trims the prompt by tokens.
    let upstream = MockUpstream::start().await;
    let test_db = db::sqlite();
    let env = openai_env(&test_db.url, &upstream.base_url()).with("SWITCHBOARD_RATE_LIMIT_CHAT_PRINCIPAL", "off");
    let app = spawn_app(env).await;
    // Three bytes a character, 31 990 characters: ~96 kB a message, ~192 kB a turn with its echo.
    let long = "가".repeat(31_990);
    let mut conversation_id = String::new();
    for i in 0..30 {
        let mut body = json!({"system_id": "drillquiz", "user_id": "writer", "message": format!("{i} {long}")});
        if !conversation_id.is_empty() {
            body["conversation_id"] = json!(conversation_id);
        }
        let answer = app.post("/v1/chat", body).await;
        assert_eq!(answer.status(), 200, "turn {i}: {}", answer.text().await.unwrap());
        conversation_id = answer.json::<Value>().await.unwrap()["conversation_id"].as_str().unwrap().to_owned();
    }
    // ~5.8 MB of history: one page of 500 would not fit a gRPC message, nor would a prompt of
    // the last 50 messages.
    let mut seen = 0;
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/conversations/{conversation_id}/messages?limit=500&cursor={c}"),
            None => format!("/v1/conversations/{conversation_id}/messages?limit=500"),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());
        let page: Value = page.json().await.unwrap();
        seen += page["data"].as_array().unwrap().len();
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, 60, "every message is readable");
    assert!(pages > 1, "the history came in more than one page");

    // Seed 000's /history answers the running conversation in one array: bounded too.
    let history = app.get("/history?system_id=drillquiz&user_id=writer").await;
    assert_eq!(history.status(), 200);
    let body = history.bytes().await.unwrap();
    let items: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert!(!items.is_empty() && items.len() < 60, "{} of 60 messages in one answer", items.len());
    assert!(body.len() < 5 * 1024 * 1024, "{} bytes in one answer", body.len());
    app.stop().await;
}

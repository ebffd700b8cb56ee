//! CORS: off unless `SWITCHBOARD_CORS_ORIGINS` lists origins, and then only for those.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use switchboard_e2e::{SERVICE_KEY, TestApp, base_env, spawn_app};
use switchboard_test_support::db;

const ALLOWED: &str = "https://app.example.com";

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, format!("{}/v1/chat", app.http))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "x-api-key, content-type")
        .send()
        .await
        .unwrap()
}

async fn simple_get(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/v1/conversations?system_id=drillquiz&user_id=u", app.http))
        .header("Origin", origin)
        .header("X-API-Key", SERVICE_KEY)
        .send()
        .await
        .unwrap()
}

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response.headers().keys().map(|k| k.as_str().to_owned()).filter(|k| k.starts_with("access-control-")).collect()
}

#[tokio::test]
async fn a_listed_origin_passes_preflight_and_a_foreign_one_gets_no_cors_headers() {
    let test_db = db::sqlite();
    let app =
        spawn_app(base_env(&test_db.url).with("SWITCHBOARD_CORS_ORIGINS", format!("{ALLOWED}, http://localhost:3000")))
            .await;

    let allowed = preflight(&app, ALLOWED).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let header = |name: &str| allowed.headers().get(name).map(|v| v.to_str().unwrap().to_lowercase());
    assert_eq!(header("access-control-allow-origin").as_deref(), Some(ALLOWED));
    assert!(header("access-control-allow-methods").unwrap().contains("post"));
    let allowed_headers = header("access-control-allow-headers").unwrap();
    assert!(allowed_headers.contains("x-api-key") && allowed_headers.contains("content-type"), "{allowed_headers}");
    let answer = simple_get(&app, "http://localhost:3000").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["access-control-allow-origin"], "http://localhost:3000");
    let exposed = answer.headers()["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    assert!(exposed.contains("retry-after") && exposed.contains("ratelimit"), "{exposed}");

    for foreign in ["https://evil.example.com", "https://app.example.com.evil.com", "null"] {
        let refused = preflight(&app, foreign).await;
        assert!(refused.headers().get("access-control-allow-origin").is_none(), "{foreign}");
        let answer = simple_get(&app, foreign).await;
        assert!(answer.headers().get("access-control-allow-origin").is_none(), "{foreign}");
    }
    app.stop().await;
}

#[tokio::test]
async fn without_the_setting_no_response_carries_cors_headers() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let preflight = preflight(&app, ALLOWED).await;
    assert!(!preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(cors_headers(&preflight), Vec::<String>::new());
    let answer = simple_get(&app, ALLOWED).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(cors_headers(&answer), Vec::<String>::new());
    app.stop().await;
}

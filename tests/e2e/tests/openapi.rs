//! `/openapi.json` against the router: every documented operation is served, and nothing is
//! served that is not documented. The router's own view is read from `/metrics`, whose `route`
//! label is the route template that matched (or `unmatched`), so a route added without its
//! `#[utoipa::path]` shows up there and not in the document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;
use switchboard_e2e::{TestApp, base_env, spawn_app};
use switchboard_test_support::db;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Paths the product serves or has served (SPEC §3), probed besides the documented ones so an
/// undocumented route there is caught even when its path is in no document.
const KNOWN_PATHS: [&str; 24] = [
    "/chat",
    "/chat-api",
    "/cache",
    "/widget.js",
    "/chat/simple",
    "/chat/history",
    "/api/chat",
    "/api/users",
    "/api/conversations",
    "/api/conversations/1/messages",
    "/api/health",
    "/api/v1/conversations/",
    "/api/v1/conversations/1/messages",
    "/api/v1/messages/",
    "/api/v1/keys/1/statics/",
    "/v1/chat/completions/",
    "/v1/embeddings",
    "/v1/completions",
    "/docs/",
    "/redoc/",
    "/openapi.yaml",
    "/health",
    "/",
    "/api-keys/1",
];

/// Paths the gateway's source registers without `routes!` (plain `.route("…")` calls), which
/// the document cannot know about by construction.
fn plainly_routed_paths() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                for call in [".route(\"", ".route_service(\"", ".nest(\"", ".nest_service(\""] {
                    for (i, _) in source.match_indices(call) {
                        let rest = &source[i + call.len()..];
                        found.insert(concrete(&rest[..rest.find('"').unwrap()].replace("{*", "{")));
                    }
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway/src"), &mut found);
    found
}

async fn spec(app: &TestApp) -> Value {
    let answer = app.client.get(format!("{}/openapi.json", app.http)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

/// `(METHOD, path template)` of every documented operation.
fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                operations.insert((method.to_owned(), path.clone()));
            }
        }
    }
    operations
}

/// A concrete path for a template: every `{param}` becomes `1`.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push('1');
            }
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// `(METHOD, route template)` the router matched, by status, from the request counters.
fn matched(metrics: &str) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..start + line[start..].find('"')?].to_owned())
    };
    let mut routes: BTreeMap<_, BTreeSet<u16>> = BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("switchboard_http_requests_total{")) {
        let (method, route, status) =
            (label(line, "method").unwrap(), label(line, "route").unwrap(), label(line, "status").unwrap());
        routes.entry((method, route)).or_default().insert(status.parse().unwrap());
    }
    routes
}

#[tokio::test]
async fn the_router_serves_exactly_the_operations_in_openapi_json() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url).with("SWITCHBOARD_RATE_LIMIT_LOGIN", "off")).await;
    let documented = documented(&spec(&app).await);
    assert!(documented.len() > 30, "{documented:?}");

    // Every documented path with every method, trailing slash added and removed, the known
    // paths and the plainly routed ones; no credentials, so nothing is changed.
    let mut paths: BTreeSet<String> = KNOWN_PATHS.iter().map(|p| (*p).to_owned()).collect();
    let plain = plainly_routed_paths();
    assert!(plain.contains("/docs/1"), "the source scan finds the plain routes: {plain:?}");
    paths.extend(plain);
    for (_, template) in &documented {
        let path = concrete(template);
        paths.insert(match path.strip_suffix('/') {
            Some(bare) if !bare.is_empty() => bare.to_owned(),
            _ => format!("{path}/"),
        });
        paths.insert(path);
    }
    for path in &paths {
        for method in METHODS {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            app.client.request(method, format!("{}{path}", app.http)).send().await.unwrap();
        }
    }

    let metrics = app.client.get(format!("{}/metrics", app.http)).send().await.unwrap().text().await.unwrap();
    let mut served = BTreeSet::new();
    for ((method, route), statuses) in matched(&metrics) {
        // 405: the path is routed, not the method. `{*rest}`: OpenAPI has no catch-all
        // parameter; such routes serve only static files and 404s (checked below).
        if route == "unmatched" || statuses.iter().all(|s| *s == 405) {
            continue;
        }
        if route.contains("{*") {
            assert!(
                statuses.iter().all(|s| *s == 404) || route.starts_with("/docs/"),
                "{method} {route} answers {statuses:?}: an undocumented catch-all may only 404 or serve doc assets"
            );
            continue;
        }
        served.insert((method, route));
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in /openapi.json: {undocumented:?}");
    assert!(unserved.is_empty(), "in /openapi.json but not served: {unserved:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_document_is_openapi_3_1_importable_as_a_custom_gpt_action() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    let spec = spec(&app).await;
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec["servers"][0]["url"], app.http.as_str(), "an Action calls the server it imported from");
    let behind_proxy: Value = app
        .client
        .get(format!("{}/openapi.json", app.http))
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "switchboard.example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(behind_proxy["servers"][0]["url"], "https://switchboard.example.com");

    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["ApiKeyAuth"]["type"], "apiKey");
    assert_eq!(schemes["ApiKeyAuth"]["in"], "header");
    assert_eq!(schemes["ApiKeyAuth"]["name"], "X-API-Key");
    assert_eq!(schemes["BearerAuth"]["type"], "http");
    assert_eq!(schemes["BearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["OAuth2PasswordBearer"]["type"], "oauth2");
    assert_eq!(schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"], "/token");

    // Seed 000's operationIds, on its routes.
    let operation = |method: &str, path: &str| spec["paths"][path][method]["operationId"].as_str().map(str::to_owned);
    for (method, path, id) in [
        ("post", "/api-keys", "createApiKey"),
        ("delete", "/api-keys/{api_key}", "revokeApiKey"),
        ("get", "/models", "getModels"),
        ("get", "/model", "getCurrentModel"),
        ("post", "/model", "setModel"),
        ("post", "/query", "query"),
        ("get", "/history", "getHistory"),
        ("delete", "/history", "clearHistory"),
    ] {
        assert_eq!(operation(method, path).as_deref(), Some(id), "{method} {path}");
    }

    // Every operation has a unique id, a summary, a success response with a schema, and its
    // family's error body as the default response.
    let mut ids = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
            assert!(op["summary"].is_string() || op["description"].is_string(), "{method} {path} is not described");
            let (status, success) =
                op["responses"].as_object().unwrap().iter().find(|(s, _)| s.starts_with('2')).unwrap();
            assert!(
                success["content"].as_object().is_some_and(|c| c.values().all(|m| m["schema"].is_object())),
                "{method} {path} {status} has no schema"
            );
            // A page's errors are pages; every other error is its family's JSON body.
            let default = &op["responses"]["default"]["content"];
            if ["/chat", "/chat-api", "/cache"].contains(&path.as_str()) {
                assert_eq!(default["text/html"]["schema"]["type"], "string", "{method} {path}");
            } else {
                assert!(default["application/json"]["schema"]["$ref"].is_string(), "{method} {path}");
            }
            assert_eq!(op["tags"].as_array().map(Vec::len), Some(1), "{method} {path} belongs to one family");
        }
    }
    let shapes = |path: &str, method: &str| {
        spec["paths"][path][method]["responses"]["default"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(shapes("/query", "post"), "ClassicError");
    assert_eq!(shapes("/api/users", "post"), "EnvelopeError");
    assert_eq!(shapes("/api/v1/users/join", "post"), "EnvelopeWithErrorsError");
    assert_eq!(shapes("/v1/chat", "post"), "FastApiError");
    assert_eq!(shapes("/v1/chat/completions", "post"), "OpenAiError");
    app.stop().await;
}

#[tokio::test]
async fn swagger_ui_and_redoc_load_nothing_from_another_host() {
    let test_db = db::sqlite();
    let app = spawn_app(base_env(&test_db.url)).await;
    for page in ["/docs", "/redoc"] {
        let answer = app.client.get(format!("{}{page}", app.http)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{page}");
        let csp = answer.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.starts_with("default-src 'self'") && !csp.contains("http"), "{page}: {csp}");
        assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let html = answer.text().await.unwrap();
        // Every script, style and icon is a path on this server, and is there.
        for attr in ["src=\"", "href=\""] {
            for (i, _) in html.match_indices(attr) {
                let url = &html[i + attr.len()..];
                let url = &url[..url.find('"').unwrap()];
                assert!(!url.contains("//"), "{page} loads {url}");
                if url.ends_with('/') {
                    continue; // <base href="/docs/">
                }
                let absolute = match url.strip_prefix("./") {
                    Some(file) => format!("/docs/{file}"),
                    None if url.starts_with('/') => url.to_owned(),
                    None => format!("/docs/{url}"),
                };
                let asset = app.client.get(format!("{}{absolute}", app.http)).send().await.unwrap();
                assert_eq!(asset.status(), 200, "{page} needs {absolute}");
            }
        }
    }
    let initializer =
        app.client.get(format!("{}/docs/swagger-initializer.js", app.http)).send().await.unwrap().text().await.unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    assert!(initializer.contains("\"validatorUrl\": \"none\""), "no spec validator from swagger.io: {initializer}");
    app.stop().await;
}

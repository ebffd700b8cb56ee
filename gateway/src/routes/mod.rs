//! The HTTP surface, one module per API family. A family's `router()` declares its routes, each
//! with the rate-limit group it counts against, and hands them to [`Family::serve`], which
//! attaches the family's error dialect and documents every operation in the OpenAPI document
//! (its tag, its error body). Adding a route is one line in its family's `router()` and a
//! `#[utoipa::path]` on its handler: the router and `/openapi.json` come from the same
//! declaration (`utoipa_axum::routes!`).
//!
//! A route's path tells its file: `/v1/chat` is `routes/v1/chat.rs`, `/v1/budgets/{id}` is
//! `routes/v1/budgets.rs`, `/api/v1/users/join` is `routes/api/v1/users.rs`, `/api-keys` is
//! `routes/api_keys.rs`, `/register` is `routes/users.rs`, the page `/chat` is `routes/pages/chat.rs`. A family with a path prefix has its
//! `router()` in that prefix's `mod.rs`; the others in the file named below.
//!
//! | family | router | paths | errors |
//! |---|---|---|---|
//! | seed 000 | `classic::router` | `/api-keys*`, `/models`, `/model`, `/query`, `/history` | `{"error": "..."}` |
//! | seed 001 | `api::router` | `/api/*` but `/api/v1/*` | `{success, message, data, error}` |
//! | seed 002 | `users::router` | `/register`, `/token`, `/users/me`, `/chat/*` | FastAPI `{"detail": ...}` |
//! | seed 003 (canonical) | `v1::router` | `/v1/*` but the OpenAI paths (with `/v1/usage`, `/v1/budgets*`) | FastAPI `{"detail": ...}` |
//! | seed 004 | `api::v1::router` | `/api/v1/*` | `{success, message, data, errors}` |
//! | OpenAI | `openai::router` | `/v1/chat/completions`, `/v1/models` | `{"error": {message, type, param, code}}` |
//! | ops | `health::router`, `docs::router` | `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`, `/redoc` | FastAPI |
//! | pages | `pages::router` | `/chat`, `/chat-api`, `/cache`, `/widget.js`, `/assets/{file}` | an HTML page in the reader's language |

mod api;
mod api_keys;
mod chat;
mod classic;
mod docs;
mod health;
mod openai;
mod pages;
mod users;
mod v1;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method, header};
use axum::routing::{MethodRouter, any};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};

use crate::Settings;
use crate::error::{ApiError, Dialect};
use crate::ratelimit::Group;
use crate::state::AppState;

/// The span of a request: method and route template, never the raw path or query, which
/// can hold credentials (`/api-keys/{api_key}`, `?token=`). When traces are exported it is
/// the request's server span, continuing the caller's `traceparent` if one came.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
    if !switchboard_kit::telemetry::exporting() {
        return tracing::debug_span!("request", method = %request.method(), route);
    }
    let span = tracing::info_span!(
        target: "switchboard::http",
        "request",
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    switchboard_kit::telemetry::continue_trace(&span, request.headers());
    span
}

/// Records the answer's status on the request's span.
fn record_status(
    response: &axum::http::Response<axum::body::Body>,
    _latency: std::time::Duration,
    span: &tracing::Span,
) {
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
}

/// Every family's routes and the OpenAPI document describing them.
fn api(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(health::router())
        .merge(classic::router(state))
        .merge(api::router(state))
        .merge(users::router(state))
        .merge(v1::router(state))
        .merge(api::v1::router(state))
        .merge(openai::router(state))
        .merge(pages::router(state))
}

/// Every route, with CORS, body limit, metrics and tracing.
pub fn router(state: AppState, settings: &Settings) -> Router {
    let (api, spec) = api(&state).split_for_parts();
    let not_found = not_found_route(&state).with_state(state.clone());
    let router = api
        .merge(docs::router(spec))
        .fallback_service(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        // A request that has not produced its answer by then (a body trickling in, a stuck
        // dependency) gets 408; a stream already answering is not cut.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ));
    let router = match cors(&settings.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(TraceLayer::new_for_http().make_span_with(request_span).on_response(record_status)).with_state(state)
}

/// The CORS policy: only the configured origins, and none (no CORS headers at all) by default.
fn cors(origins: &[axum::http::HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Unknown paths (and, per family, unknown paths under its prefix), counting against the API
/// quota as any authenticated call does.
fn not_found_route(state: &AppState) -> MethodRouter<AppState> {
    async fn not_found() -> ApiError {
        ApiError::not_found("Not Found")
    }
    any(not_found).layer(axum::middleware::from_fn_with_state((state.clone(), Group::Api), crate::ratelimit::enforce))
}

/// `route`, counting against `group`'s per-credential quota.
fn limited(route: MethodRouter<AppState>, state: &AppState, group: Group) -> MethodRouter<AppState> {
    route.route_layer(axum::middleware::from_fn_with_state((state.clone(), group), crate::ratelimit::enforce))
}

/// What a route declaration can say besides its handler.
pub(crate) trait RouteExt: Sized {
    /// The route counts against `group`'s per-credential (or per-address) quota; a route
    /// without it (probes, documentation) has none.
    fn limit(self, state: &AppState, group: Group) -> Self;
    /// The route is also served without its trailing slash (a Django-style path such as
    /// `/api/v1/keys/` answers `/api/v1/keys` too), documented as its own operation.
    fn slash_twin(self) -> Self;
}

impl RouteExt for UtoipaMethodRouter<AppState> {
    fn limit(self, state: &AppState, group: Group) -> Self {
        self.map(|route| limited(route, state, group))
    }

    fn slash_twin(self) -> Self {
        let (schemas, mut paths, route) = self;
        let twins: Vec<_> = paths
            .paths
            .iter()
            .filter(|(path, _)| path.len() > 1 && path.ends_with('/'))
            .map(|(path, item)| {
                let mut item = item.clone();
                for operation in operations(&mut item) {
                    operation.operation_id = operation.operation_id.take().map(|id| format!("{id}NoSlash"));
                    let note = format!("The same operation as `{path}`, without the trailing slash.");
                    operation.description = Some(match operation.description.take() {
                        Some(description) => format!("{description}\n\n{note}"),
                        None => note,
                    });
                }
                (path.trim_end_matches('/').to_owned(), item)
            })
            .collect();
        paths.paths.extend(twins);
        (schemas, paths, route)
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.options, &mut item.head, &mut item.patch]
        .into_iter()
        .filter_map(Option::as_mut)
}

/// An API family: routes that answer errors in one dialect, grouped under one OpenAPI tag.
pub(crate) struct Family {
    /// OpenAPI tag of every operation (described in `openapi::base`).
    pub tag: &'static str,
    /// How errors are written.
    pub dialect: Dialect,
}

impl Family {
    /// The family's routes, their errors rendered in its dialect, every operation tagged and
    /// documented with its error body as the `default` response.
    pub fn serve<S: Clone + Send + Sync + 'static>(self, routes: OpenApiRouter<S>) -> OpenApiRouter<S> {
        let Self { tag, dialect } = self;
        let mut routes = if dialect == Dialect::FastApi {
            routes
        } else {
            routes.layer(axum::middleware::from_fn(move |request, next| dialect.render_errors(request, next)))
        };
        document(routes.get_openapi_mut(), tag, dialect);
        routes
    }
}

fn document(spec: &mut OpenApi, tag: &str, dialect: Dialect) {
    let (schema_name, _) = dialect.schema();
    for item in spec.paths.paths.values_mut() {
        for operation in operations(item) {
            operation.tags = Some(vec![tag.to_owned()]);
            operation.responses.responses.entry("default".to_owned()).or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description("An error, in this API's error shape.")
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new()
                                .schema(Some(RefOr::<utoipa::openapi::schema::Schema>::Ref(Ref::from_schema_name(
                                    schema_name.clone(),
                                ))))
                                .build(),
                        )
                        .build(),
                )
            });
        }
    }
}

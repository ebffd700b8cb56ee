//! What the OpenAPI 3.1 document (`/openapi.json`) says about the API as a whole: its title,
//! security schemes, tags and error bodies. Operations are declared next to their handlers
//! (`#[utoipa::path]`) and registered with their routes (`utoipa_axum::routes!`), so the
//! document and the router come from the same declaration; `routes::Family` adds each
//! family's tag and error body. `servers` is filled per request from the `Host` the client
//! used (`routes::docs`), which is what a custom-GPT Action imports.

use serde::{Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::Dialect;

/// Operations that need no credential say `security(())`; the others accept any of these.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "A multi-tenant LLM chat gateway: every conversation stored durably, each turn \
            routed to a model. One credential works everywhere: `X-API-Key` (a service key or an \
            issued key), `Authorization: Bearer` (a key or a JWT from `/token`), or `?token=`. \
            Each API family keeps the request, response and error shapes its clients know."
    ),
    modifiers(&Components),
    security(("ApiKeyAuth" = []), ("BearerAuth" = []), ("OAuth2PasswordBearer" = [])),
    tags(
        (name = "chat", description = "The canonical API (seed 003's shape): chat turns as JSON or \
            Server-Sent Events, conversations, history sync, chat-page tokens. FastAPI errors."),
        (name = "openai", description = "OpenAI-compatible: any OpenAI SDK works against `/v1`. \
            OpenAI's error shape."),
        (name = "classic", description = "Seed 000: API keys, and one running conversation and \
            model choice per client key. Errors are `{\"error\": \"...\"}`."),
        (name = "gpts", description = "Seed 001, for custom-GPT Actions: camelCase fields, integer \
            ids, every answer in the `{success, message, data}` envelope."),
        (name = "accounts", description = "Seed 002: sign-up, OAuth2 password login, the signed-in \
            user and their simple chat. FastAPI errors."),
        (name = "chatbot", description = "Seed 004: accounts, conversations and the provider keys a \
            user brings, in the `{success, message, data, errors}` envelope."),
        (name = "ops", description = "Health, readiness, Prometheus metrics and this documentation."),
    )
)]
struct ApiDoc;

/// The document before any operation is added.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Security schemes and the error bodies every family refers to.
struct Components;

impl Modify for Components {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "ApiKeyAuth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A static service key (`CHAT_GATEWAY_API_KEY`) or an issued key (`sb_…`).",
            ))),
        );
        components.add_security_scheme(
            "BearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A JWT (`/token`, `/api/v1/users/login`, `/v1/chat-token`) or an API key."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "OAuth2PasswordBearer",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new("/token", Scopes::new()))],
                "Sign in with a username and password at `/token` (form-encoded).",
            )),
        );
        components.add_security_scheme(
            "AdminToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Token",
                "The admin credential (`SWITCHBOARD_ADMIN_TOKEN`), for key management.",
            ))),
        );
        components.schemas.extend(Dialect::referenced_schemas());
    }
}

/// A field that is always `null` (`data` of an answer without data), documented as such.
#[derive(Debug, Clone, Copy, Default)]
pub struct Null;

impl Serialize for Null {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_none()
    }
}

impl PartialSchema for Null {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Null).into()
    }
}

impl ToSchema for Null {}

/// One Server-Sent Event of a streamed answer, as a client's parser hands it over.
#[derive(ToSchema)]
#[allow(dead_code)] // Documents the stream; axum's `Event` writes the real ones.
pub struct ServerSentEvent {
    /// The event's name (`start`, `delta`, `done`, `error` for `/v1/chat`; none for OpenAI's chunks).
    event: Option<String>,
    /// Its payload: a JSON object (or `[DONE]`, OpenAI's last event).
    data: String,
    /// Unused.
    id: Option<String>,
    /// Unused.
    retry: Option<u64>,
}

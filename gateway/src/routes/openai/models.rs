//! `GET /v1/models`: the catalogue as OpenAI's model list.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use switchboard_proto::llm::v1 as pb;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// OpenAI's `list` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    object: &'static str,
    /// The models.
    data: Vec<ModelObject>,
}

/// OpenAI's `model` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelObject {
    /// A name to ask for: a model id or one of its aliases.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// Always 0.
    created: i64,
    /// Its provider (`openai`, `dify`, `mock`).
    owned_by: String,
}

/// Lists the models (aliases included, as names a client may ask for).
#[utoipa::path(get, path = "/v1/models", operation_id = "listModels",
    responses((status = 200, description = "The models.", body = ModelList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<ModelList>, ApiError> {
    let answer = state.llm.clone().list_models(caller.request(pb::ListModelsRequest::default())).await?.into_inner();
    let data = answer
        .models
        .into_iter()
        .flat_map(|m| {
            let owner = m.provider;
            std::iter::once(m.id).chain(m.aliases).map(move |id| ModelObject {
                id,
                object: "model",
                created: 0,
                owned_by: owner.clone(),
            })
        })
        .collect();
    Ok(Json(ModelList { object: "list", data }))
}

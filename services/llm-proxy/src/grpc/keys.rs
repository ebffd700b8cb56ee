//! Provider keys users bring: adding (validated first), listing, deleting, statistics, and
//! serving a principal's completions with their own key.

use secrecy::SecretString;
use switchboard_proto::llm::v1 as pb;
use tonic::{Request, Response, Status};

use super::{LlmGrpc, principal};
use crate::catalogue::ModelEntry;
use crate::error::LlmError;
use crate::providers::openai::OpenAi;
use crate::providers::{Provider, ProviderError};
use crate::sealing::Sealer;
use crate::store::StoredProviderKey;

impl LlmGrpc {
    fn sealer(&self) -> Result<&Sealer, Status> {
        self.sealer
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("provider keys are off: set SWITCHBOARD_ENCRYPTION_KEY"))
    }

    /// `entry`, served with the principal's own provider key when they brought one.
    pub(super) async fn with_user_key(
        &self,
        who: &(String, String),
        mut entry: ModelEntry,
    ) -> Result<(ModelEntry, Option<String>), Status> {
        let (Some(sealer), Provider::OpenAi(openai)) = (&self.sealer, &entry.provider) else {
            return Ok((entry, None));
        };
        let Some(key) = self.keys.newest(&who.0, &who.1, "openai").await.map_err(LlmError::from)? else {
            return Ok((entry, None));
        };
        let secret = sealer.open(&key.sealed, &seal_context(&key.id, &who.0, &who.1)).map_err(|e| {
            tracing::error!(key_id = %key.id, "{e}");
            Status::failed_precondition(e.to_string())
        })?;
        entry.provider = Provider::OpenAi(openai.with_key(SecretString::from(secret)));
        Ok((entry, Some(key.id)))
    }

    /// A client to validate keys with: the configured upstream, or OpenAI itself.
    fn validator(&self) -> Result<OpenAi, LlmError> {
        match self.catalogue.openai() {
            Some(openai) => Ok(openai.clone()),
            None => Ok(OpenAi::new(
                crate::settings::DEFAULT_OPENAI_BASE_URL.to_owned(),
                None,
                self.upstream_timeout,
                crate::resilience::RetryPolicy { max_retries: 0, ..Default::default() },
            )?),
        }
    }

    pub(super) async fn add_key(
        &self,
        request: Request<pb::AddProviderKeyRequest>,
    ) -> Result<Response<pb::AddProviderKeyResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let sealer = self.sealer()?;
        let req = request.into_inner();
        let provider = req.provider.trim().to_ascii_lowercase();
        if provider != "openai" {
            return Err(LlmError::InvalidArgument {
                field: "provider",
                reason: "only \"openai\" keys can be validated".into(),
            }
            .into());
        }
        let secret = req.secret.trim().to_owned();
        if secret.len() < 8 || secret.len() > 512 || secret.chars().any(char::is_whitespace) {
            return Err(
                LlmError::InvalidArgument { field: "secret", reason: "is not a plausible API key".into() }.into()
            );
        }
        let label = req.label.trim();
        let label = if label.is_empty() { "my key" } else { label };
        if label.chars().count() > 100 {
            return Err(
                LlmError::InvalidArgument { field: "label", reason: "must be at most 100 characters".into() }.into()
            );
        }
        // Validated against the provider before it is kept.
        match self.validator()?.with_key(SecretString::from(secret.clone())).list_models().await {
            Ok(_) => {}
            Err(ProviderError::Status { status: 401 | 403, .. }) => {
                return Err(LlmError::InvalidArgument {
                    field: "secret",
                    reason: "the provider refused this key".into(),
                }
                .into());
            }
            Err(e) => return Err(LlmError::from(e).into()),
        }
        let id = uuid::Uuid::now_v7().to_string();
        let key = StoredProviderKey {
            sealed: sealer.seal(&secret, &seal_context(&id, &who.0, &who.1)),
            last_four: crate::sealing::last_four(&secret),
            id,
            system_id: who.0.clone(),
            user_id: who.1.clone(),
            provider,
            label: label.to_owned(),
            created_at: switchboard_kit::time::now_ms(),
            requests: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_micros: 0,
            last_used_at: None,
        };
        self.keys.insert(&key).await.map_err(LlmError::from)?;
        tracing::info!(key_id = %key.id, "provider key added");
        Ok(Response::new(pb::AddProviderKeyResponse { key: Some(provider_key_pb(&key)) }))
    }

    pub(super) async fn list_keys(
        &self,
        request: Request<pb::ListProviderKeysRequest>,
    ) -> Result<Response<pb::ListProviderKeysResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let keys = self.keys.list(&who.0, &who.1).await.map_err(LlmError::from)?;
        Ok(Response::new(pb::ListProviderKeysResponse { keys: keys.iter().map(provider_key_pb).collect() }))
    }

    pub(super) async fn delete_key(
        &self,
        request: Request<pb::DeleteProviderKeyRequest>,
    ) -> Result<Response<pb::DeleteProviderKeyResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        if !self.keys.delete(&who.0, &who.1, request.get_ref().id.trim()).await.map_err(LlmError::from)? {
            return Err(Status::not_found("provider key not found"));
        }
        Ok(Response::new(pb::DeleteProviderKeyResponse {}))
    }

    pub(super) async fn key_stats(
        &self,
        request: Request<pb::GetProviderKeyStatsRequest>,
    ) -> Result<Response<pb::GetProviderKeyStatsResponse>, Status> {
        let who = principal(&request, request.get_ref().principal.as_ref())?;
        let key = self
            .keys
            .get(&who.0, &who.1, request.get_ref().id.trim())
            .await
            .map_err(LlmError::from)?
            .ok_or_else(|| Status::not_found("provider key not found"))?;
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Response::new(pb::GetProviderKeyStatsResponse {
            key: Some(provider_key_pb(&key)),
            requests: count(key.requests),
            prompt_tokens: count(key.prompt_tokens),
            completion_tokens: count(key.completion_tokens),
            cost_micros: count(key.cost_micros),
            last_used_at: key.last_used_at.map(switchboard_kit::time::to_timestamp),
        }))
    }
}

/// What a sealed key is bound to: its row and owner.
fn seal_context(id: &str, system_id: &str, user_id: &str) -> String {
    format!("{id}:{system_id}:{user_id}")
}

fn provider_key_pb(k: &StoredProviderKey) -> pb::ProviderKey {
    pb::ProviderKey {
        id: k.id.clone(),
        provider: k.provider.clone(),
        label: k.label.clone(),
        last_four: k.last_four.clone(),
        created_at: Some(switchboard_kit::time::to_timestamp(k.created_at)),
    }
}

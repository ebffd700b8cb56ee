//! Credential verification shared by the gateway and the gRPC services: who a credential
//! is ([`Caller`]), a cache of the auth service's answers that forgets revoked credentials
//! within a second ([`Verifier`]), and a tower layer that does this for gRPC servers
//! ([`GrpcAuthLayer`]).

use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::grpc::Channel;
use sha2::{Digest, Sha256};
use switchboard_proto::auth::v1 as pb;
use switchboard_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::expiring::ExpiringMap;
use crate::revocation::{Hub, Revocation};

/// Largest number of cached verdicts; the cache is emptied when it would grow beyond.
const CACHE_CAPACITY: usize = 50_000;
/// Longest a credential check waits for the auth service: a hung one must not hang every
/// request behind it.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A credential as presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `X-API-Key`.
    ApiKey(String),
    /// `Authorization: Bearer` — an API key or a JWT.
    Bearer(String),
    /// `?token=` on pages: a JWT.
    Jwt(String),
    /// `x-admin-token`: the operator's token (`SWITCHBOARD_ADMIN_TOKEN`), acting for every
    /// tenant as a service key does.
    Admin(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ApiKey(_) => "ApiKey(…)",
            Self::Bearer(_) => "Bearer(…)",
            Self::Jwt(_) => "Jwt(…)",
            Self::Admin(_) => "Admin(…)",
        })
    }
}

/// Why no credential could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// Nothing was presented.
    Missing,
    /// `Authorization` is not `Bearer <token>`.
    MalformedAuthorization,
}

impl Credential {
    /// Reads `x-api-key`, then `authorization: Bearer`, from HTTP headers or gRPC metadata
    /// (the same thing on the wire).
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Self, CredentialError> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
        if let Some(key) = get("x-api-key") {
            return Ok(Self::ApiKey(key.to_owned()));
        }
        if let Some(auth) = get("authorization") {
            let (scheme, token) = auth.split_once(' ').ok_or(CredentialError::MalformedAuthorization)?;
            let token = token.trim();
            if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
                return Err(CredentialError::MalformedAuthorization);
            }
            return Ok(Self::Bearer(token.to_owned()));
        }
        Err(CredentialError::Missing)
    }

    /// The secret text.
    pub fn secret(&self) -> &str {
        match self {
            Self::ApiKey(s) | Self::Bearer(s) | Self::Jwt(s) | Self::Admin(s) => s,
        }
    }

    /// How the auth service should read the credential.
    pub fn kind(&self) -> pb::CredentialKind {
        match self {
            Self::ApiKey(_) => pb::CredentialKind::ApiKey,
            Self::Bearer(_) | Self::Admin(_) => pb::CredentialKind::Unspecified,
            Self::Jwt(_) => pb::CredentialKind::Jwt,
        }
    }

    /// Adds the credential to outgoing gRPC metadata, so the next service can verify it too.
    pub fn write_to(&self, metadata: &mut MetadataMap) {
        let (key, value) = match self {
            Self::ApiKey(k) => ("x-api-key", k.clone()),
            Self::Bearer(t) | Self::Jwt(t) => ("authorization", format!("Bearer {t}")),
            Self::Admin(t) => ("x-admin-token", t.clone()),
        };
        if let Ok(value) = MetadataValue::try_from(value) {
            metadata.insert(key, value);
        }
    }

    fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update([self.kind() as u8]);
        hasher.update(self.secret().as_bytes());
        hasher.finalize().into()
    }
}

/// Who a verified credential is, and whom it may act for.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Tenant of the credential; empty for static service keys of every tenant.
    pub system_id: String,
    /// User of a client credential; empty for service keys.
    pub user_id: String,
    /// Service keys act for any user of their tenants.
    pub service: bool,
    /// Tenants the credential may act for; empty for every tenant.
    pub allowed_system_ids: Vec<String>,
    /// Public id of the API key (for usage records), empty otherwise.
    pub key_id: String,
    /// The credential, to forward on internal calls.
    pub credential: Credential,
    revocation_id: String,
    valid_until: Option<Instant>,
}

/// Why a caller may not act for a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActAsError {
    /// A service key named no user (or no tenant): the field is missing.
    Missing(&'static str),
    /// The credential may not act for this principal.
    Forbidden(String),
}

impl Caller {
    /// The principal `(system_id, user_id)` this caller acts for. Service keys must name a
    /// user (and a tenant, unless bound to one) within their tenants; client credentials act
    /// as themselves and may not name anyone else.
    pub fn act_as(&self, system_id: Option<&str>, user_id: Option<&str>) -> Result<(String, String), ActAsError> {
        let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let (system_id, user_id) = (given(system_id), given(user_id));
        if !self.service {
            let other_system = system_id.as_ref().is_some_and(|s| *s != self.system_id);
            let other_user = user_id.as_ref().is_some_and(|u| *u != self.user_id);
            if other_system || other_user {
                return Err(ActAsError::Forbidden(
                    "this credential can only act for its own system_id and user_id".into(),
                ));
            }
            return Ok((self.system_id.clone(), self.user_id.clone()));
        }
        let system_id = system_id
            .or_else(|| Some(self.system_id.clone()).filter(|s| !s.is_empty()))
            .ok_or(ActAsError::Missing("system_id"))?;
        let user_id = user_id.ok_or(ActAsError::Missing("user_id"))?;
        if crate::principal::is_reserved(&user_id) {
            return Err(ActAsError::Forbidden(format!(
                "user_id {user_id:?} is reserved: it names a signed-in user or an API key, which act only for themselves"
            )));
        }
        if !self.allowed_system_ids.is_empty() && !self.allowed_system_ids.contains(&system_id) {
            return Err(ActAsError::Forbidden(format!("system_id {system_id:?} is not allowed for this credential")));
        }
        Ok((system_id, user_id))
    }

    /// The principal this caller acts for when a gRPC request names `(system_id, user_id)`
    /// (either may be empty: see [`Self::act_as`]). Use exactly the pair returned: it is the
    /// one that was checked.
    pub fn check(&self, system_id: &str, user_id: &str) -> Result<(String, String), Status> {
        match self.act_as(Some(system_id), Some(user_id)) {
            Ok(principal) => Ok(principal),
            Err(ActAsError::Missing(field)) => Err(crate::grpc::invalid_field(field, format!("{field}: is required"))),
            Err(ActAsError::Forbidden(reason)) => Err(Status::permission_denied(reason)),
        }
    }

    /// What a rate limit counts this caller as: its key id, its token id, or its principal,
    /// never the bytes the credential arrived in (which a caller can vary at will).
    pub fn limit_key(&self) -> String {
        if !self.key_id.is_empty() {
            format!("key:{}", self.key_id)
        } else if !self.revocation_id.is_empty() {
            format!("jti:{}", self.revocation_id)
        } else if !self.user_id.is_empty() {
            format!("p:{}:{}", self.system_id, self.user_id)
        } else {
            // A static service key: the secret itself identifies it.
            let mut hasher = Sha256::new();
            hasher.update(self.credential.secret().as_bytes());
            format!("static:{}", hex::encode(&hasher.finalize()[..16]))
        }
    }

    /// The operator, by the admin token: a service caller of every tenant.
    pub fn admin(token: String) -> Self {
        Self {
            system_id: String::new(),
            user_id: String::new(),
            service: true,
            allowed_system_ids: Vec::new(),
            key_id: String::new(),
            credential: Credential::Admin(token),
            revocation_id: String::new(),
            valid_until: None,
        }
    }

    /// Whether this is the operator's admin token.
    pub fn is_admin(&self) -> bool {
        matches!(self.credential, Credential::Admin(_))
    }

    /// Whether the caller may see and manage everything of `system_id` (the admin token, or
    /// a service key serving that tenant).
    pub fn serves(&self, system_id: &str) -> bool {
        self.service && (self.allowed_system_ids.is_empty() || self.allowed_system_ids.iter().any(|s| s == system_id))
    }

    /// The caller an auth service answer describes.
    pub fn from_answer(answer: pb::AuthenticateResponse, credential: Credential) -> Self {
        let principal = answer.principal.unwrap_or_default();
        let valid_until = answer.expires_at.map(|t| {
            let ms = crate::time::from_timestamp(&t) - crate::time::now_ms();
            Instant::now() + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        });
        Self {
            system_id: principal.system_id,
            user_id: principal.user_id,
            service: answer.scope == pb::KeyScope::Service as i32,
            allowed_system_ids: answer.allowed_system_ids,
            key_id: answer.key_id,
            credential,
            revocation_id: answer.revocation_id,
            valid_until,
        }
    }
}

/// The caller a gRPC request was verified as (set by [`GrpcAuthLayer`]).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Caller>().ok_or_else(|| Status::unauthenticated("invalid or missing credential"))
}

/// Verified callers by their credential's digest.
type Cache = ExpiringMap<[u8; 32], Caller>;

/// Where and how a component verifies credentials.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// `SWITCHBOARD_AUTH_ADDR`: the auth service.
    pub auth_addr: String,
    /// `SWITCHBOARD_AUTH_CACHE_SECS`: how long a verified credential is trusted without asking
    /// again. Default 60 s with Redis (revocations are pushed), 1 s without (a replica in
    /// another process learns of a revocation when its entry expires).
    pub cache_ttl: Duration,
    /// `REDIS_URL`: revocations arrive through Redis.
    pub redis: Option<crate::redis::RedisSettings>,
    /// `SWITCHBOARD_ADMIN_TOKEN`: calls carrying it as `x-admin-token` act for every tenant.
    pub admin_token: Option<secrecy::SecretString>,
}

impl VerifierSettings {
    /// Reads the settings, naming the variable at fault on error.
    pub fn from_env(env: &crate::Env, default_auth_addr: &str) -> Result<Self, crate::ConfigError> {
        let redis = crate::redis::RedisSettings::from_env(env)?;
        let default_ttl = if redis.is_some() { 60 } else { 1 };
        let ttl: u64 = env.parse_or("SWITCHBOARD_AUTH_CACHE_SECS", default_ttl)?;
        if ttl > 3600 {
            return Err(crate::ConfigError::invalid("SWITCHBOARD_AUTH_CACHE_SECS", "must be at most 3600"));
        }
        Ok(Self {
            auth_addr: env.get_or("SWITCHBOARD_AUTH_ADDR", default_auth_addr).to_owned(),
            cache_ttl: Duration::from_secs(ttl),
            redis,
            admin_token: env.secret("SWITCHBOARD_ADMIN_TOKEN"),
        })
    }
}

/// Why a verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// The auth address is unusable.
    #[error("SWITCHBOARD_AUTH_ADDR: {0}")]
    AuthAddr(#[from] tonic::transport::Error),
    /// The Redis URL is unusable.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The calls to the auth service under way, by credential digest, each shared by every check
/// of that credential that arrives while it runs.
type InFlight = std::sync::Mutex<
    std::collections::HashMap<[u8; 32], futures::future::Shared<futures::future::BoxFuture<'static, Verdict>>>,
>;

/// What the auth service said of a credential.
type Verdict = Result<Caller, Status>;

/// Verifies credentials with the auth service, caching positive answers for `ttl` (never
/// past the credential's own expiry) and dropping them as soon as a revocation is announced.
/// Checks of one credential that miss the cache together (the first requests, or every request
/// under way when its entry expires) share one call to the auth service instead of making one
/// each; the call runs to its end even if the check that started it is given up.
#[derive(Clone)]
pub struct Verifier {
    auth: AuthServiceClient<Channel>,
    cache: Arc<Cache>,
    in_flight: Arc<InFlight>,
    ttl: Duration,
    admin_token: Option<Arc<secrecy::SecretString>>,
    lookups: crate::metrics::CacheLookups,
}

impl Verifier {
    /// A verifier asking the auth service behind `channel`, forgetting what `hub` revokes.
    pub fn new(channel: Channel, ttl: Duration, hub: &Hub) -> Self {
        let cache = Arc::new(Cache::new(CACHE_CAPACITY));
        tokio::spawn(evict_on_revocation(Arc::downgrade(&cache), hub.subscribe()));
        Self {
            auth: AuthServiceClient::new(channel),
            cache,
            in_flight: Arc::default(),
            ttl,
            admin_token: None,
            lookups: Default::default(),
        }
    }

    /// Counts cache hits and misses as the `credentials` cache of `family`.
    pub fn with_metrics(mut self, family: &crate::metrics::CacheFamily) -> Self {
        self.lookups = crate::metrics::CacheLookups::of(family, "credentials");
        self
    }

    /// Accepts `token` as the admin credential (`x-admin-token`).
    pub fn with_admin_token(mut self, token: Option<secrecy::SecretString>) -> Self {
        self.admin_token = token.map(Arc::new);
        self
    }

    /// The operator, when `presented` is the admin token (compared in constant time).
    /// PERMISSION_DENIED otherwise, or when no admin token is configured.
    pub fn admin(&self, presented: &str) -> Result<Caller, Status> {
        use secrecy::ExposeSecret;
        use subtle::ConstantTimeEq;
        let Some(token) = &self.admin_token else {
            return Err(Status::permission_denied("the admin token is off: set SWITCHBOARD_ADMIN_TOKEN"));
        };
        let (expected, presented) = (token.expose_secret().as_bytes(), presented.trim().as_bytes());
        if expected.len() == presented.len() && bool::from(expected.ct_eq(presented)) {
            Ok(Caller::admin(token.expose_secret().to_owned()))
        } else {
            Err(Status::permission_denied("the admin token is missing or wrong"))
        }
    }

    /// A verifier for `settings`; with Redis, `hub` also relays revocations announced there
    /// by the auth service of any replica.
    pub fn from_settings(settings: &VerifierSettings, hub: &Hub) -> Result<Self, VerifierError> {
        let channel = crate::grpc::channel(&settings.auth_addr)?;
        if let Some(redis) = &settings.redis {
            hub.relay_from(&crate::redis::Redis::new(redis)?);
        }
        Ok(Self::new(channel, settings.cache_ttl, hub).with_admin_token(settings.admin_token.clone()))
    }

    /// Who `credential` is. `UNAUTHENTICATED` when unknown, expired or revoked; `UNAVAILABLE`
    /// when the auth service does not answer within [`AUTH_TIMEOUT`].
    pub async fn verify(&self, credential: &Credential) -> Result<Caller, Status> {
        use futures::FutureExt as _;
        use tracing::Instrument as _;
        let digest = credential.digest();
        let cached = self.cache.get(&digest);
        self.lookups.record(cached.is_some());
        if let Some(caller) = cached {
            return Ok(caller);
        }
        let call = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A call that ended since the look-up above has filled the cache (before leaving
            // `in_flight`, so a check always finds one or the other).
            if let Some(caller) = self.cache.get(&digest) {
                return Ok(caller);
            }
            in_flight
                .entry(digest)
                .or_insert_with(|| {
                    let (this, credential) = (self.clone(), credential.clone());
                    // In the span of the check that starts it, so the call joins that trace.
                    let call = tokio::spawn(
                        async move {
                            let verdict = this.ask(credential, digest).await;
                            this.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&digest);
                            verdict
                        }
                        .in_current_span(),
                    );
                    async move { call.await.unwrap_or_else(|e| Err(Status::internal(format!("credential check: {e}")))) }
                        .boxed()
                        .shared()
                })
                .clone()
        };
        call.await
    }

    /// Asks the auth service who `credential` is, and caches a positive answer.
    async fn ask(&self, credential: Credential, digest: [u8; 32]) -> Verdict {
        let now = Instant::now();
        let mut request = tonic::Request::new(pb::AuthenticateRequest {
            kind: credential.kind() as i32,
            credential: credential.secret().to_owned(),
        });
        request.set_timeout(AUTH_TIMEOUT);
        // Enforced here too: a server that never answers the HTTP/2 handshake never sees it.
        let answer = tokio::time::timeout(AUTH_TIMEOUT, self.auth.clone().authenticate(request))
            .await
            .map_err(|_| Status::unavailable("the auth service did not answer in time"))?
            .map_err(|status| match status.code() {
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    Status::unavailable("the auth service did not answer in time")
                }
                _ => status,
            })?
            .into_inner();
        let caller = Caller::from_answer(answer, credential);
        let until = caller.valid_until.map_or(now + self.ttl, |v| v.min(now + self.ttl));
        self.cache.insert(digest, caller.clone(), until);
        Ok(caller)
    }
}

async fn evict_on_revocation(cache: Weak<Cache>, mut revocations: tokio::sync::broadcast::Receiver<Revocation>) {
    loop {
        let event = match revocations.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Revocation::All,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(cache) = cache.upgrade() else { return };
        match event {
            Revocation::All => cache.clear(),
            Revocation::One(id) => cache.retain(|caller| caller.revocation_id != id),
        }
    }
}

/// Verifies the credential of every gRPC call except health checks and reflection, and
/// puts the [`Caller`] in the request's extensions. Without a verifier it lets calls pass.
#[derive(Clone)]
pub struct GrpcAuthLayer {
    verifier: Option<Verifier>,
}

impl GrpcAuthLayer {
    /// A layer using `verifier`; `None` disables verification (the auth service itself).
    pub fn new(verifier: Option<Verifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth { inner, verifier: self.verifier.clone() }
    }
}

/// The service [`GrpcAuthLayer`] makes.
#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    verifier: Option<Verifier>,
}

fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = match &self.verifier {
            Some(v) if !is_public(request.uri().path()) => v.clone(),
            _ => return Box::pin(inner.call(request)),
        };
        Box::pin(async move {
            if let Some(presented) = request.headers().get("x-admin-token") {
                return match verifier.admin(presented.to_str().unwrap_or_default()) {
                    Ok(caller) => {
                        request.extensions_mut().insert(caller);
                        inner.call(request).await
                    }
                    Err(status) => Ok(status.into_http()),
                };
            }
            let credential = match Credential::from_headers(request.headers()) {
                Ok(c) => c,
                Err(_) => return Ok(Status::unauthenticated("invalid or missing credential").into_http()),
            };
            match verifier.verify(&credential).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(service: bool, system: &str, user: &str, allowed: &[&str]) -> Caller {
        Caller {
            system_id: system.into(),
            user_id: user.into(),
            service,
            allowed_system_ids: allowed.iter().map(|s| (*s).to_owned()).collect(),
            key_id: String::new(),
            credential: Credential::ApiKey("k".into()),
            revocation_id: String::new(),
            valid_until: None,
        }
    }

    #[test]
    fn client_credentials_act_only_as_themselves() {
        let c = caller(false, "drillquiz", "alice", &["drillquiz"]);
        assert_eq!(c.act_as(None, None).unwrap(), ("drillquiz".into(), "alice".into()));
        assert_eq!(c.act_as(Some("drillquiz"), Some("alice")).unwrap(), ("drillquiz".into(), "alice".into()));
        assert!(matches!(c.act_as(Some("drillquiz"), Some("bob")), Err(ActAsError::Forbidden(_))));
        assert!(matches!(c.act_as(Some("cointutor"), None), Err(ActAsError::Forbidden(_))));
    }

    #[test]
    fn service_keys_act_for_users_of_their_tenants() {
        let any = caller(true, "", "", &[]);
        assert_eq!(any.act_as(Some("x"), Some("u")).unwrap(), ("x".into(), "u".into()));
        assert_eq!(any.act_as(Some("x"), None), Err(ActAsError::Missing("user_id")));
        assert_eq!(any.act_as(None, Some("u")), Err(ActAsError::Missing("system_id")));
        let bound = caller(true, "drillquiz", "", &["drillquiz"]);
        assert_eq!(bound.act_as(None, Some("u")).unwrap(), ("drillquiz".into(), "u".into()));
        assert!(matches!(bound.act_as(Some("cointutor"), Some("u")), Err(ActAsError::Forbidden(_))));
        // Identities Switchboard made act only for themselves.
        assert!(matches!(any.act_as(Some("x"), Some("user:alice")), Err(ActAsError::Forbidden(_))));
        assert!(matches!(bound.act_as(None, Some("key_0123456789ab")), Err(ActAsError::Forbidden(_))));
    }

    #[test]
    fn credentials_are_read_from_headers_and_never_printed() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(Credential::from_headers(&headers), Err(CredentialError::Missing));
        headers.insert("authorization", http::HeaderValue::from_static("Basic abc"));
        assert_eq!(Credential::from_headers(&headers), Err(CredentialError::MalformedAuthorization));
        headers.insert("authorization", http::HeaderValue::from_static("bearer tok"));
        assert_eq!(Credential::from_headers(&headers), Ok(Credential::Bearer("tok".into())));
        headers.insert("x-api-key", http::HeaderValue::from_static("secret-key"));
        let c = Credential::from_headers(&headers).unwrap();
        assert_eq!(c, Credential::ApiKey("secret-key".into()));
        assert!(!format!("{c:?}").contains("secret-key"));
    }
}

//! The credential verifier against a real auth server on loopback, one that counts the
//! `Authenticate` calls it answers and takes its time over each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard_kit::auth::{Credential, Verifier};
use switchboard_kit::revocation::Hub;
use switchboard_proto::auth::v1 as pb;
use switchboard_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use tonic::{Request, Response, Status};

/// Answers `Authenticate` after [`SLOW`]: a key `good` is a service key, anything else is
/// refused. Every other RPC is unimplemented.
struct CountingAuth {
    calls: Arc<AtomicUsize>,
}

const SLOW: Duration = Duration::from_millis(300);

type Answer<T> = Result<Response<T>, Status>;

fn unimplemented<T>() -> Answer<T> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl AuthService for CountingAuth {
    async fn authenticate(&self, request: Request<pb::AuthenticateRequest>) -> Answer<pb::AuthenticateResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(SLOW).await;
        if request.into_inner().credential != "good" {
            return Err(Status::unauthenticated("unknown key"));
        }
        Ok(Response::new(pb::AuthenticateResponse { scope: pb::KeyScope::Service as i32, ..Default::default() }))
    }
    async fn create_api_key(&self, _: Request<pb::CreateApiKeyRequest>) -> Answer<pb::CreateApiKeyResponse> {
        unimplemented()
    }
    async fn list_api_keys(&self, _: Request<pb::ListApiKeysRequest>) -> Answer<pb::ListApiKeysResponse> {
        unimplemented()
    }
    async fn revoke_api_key(&self, _: Request<pb::RevokeApiKeyRequest>) -> Answer<pb::RevokeApiKeyResponse> {
        unimplemented()
    }
    async fn rotate_api_key(&self, _: Request<pb::RotateApiKeyRequest>) -> Answer<pb::RotateApiKeyResponse> {
        unimplemented()
    }
    async fn register_user(&self, _: Request<pb::RegisterUserRequest>) -> Answer<pb::RegisterUserResponse> {
        unimplemented()
    }
    async fn login(&self, _: Request<pb::LoginRequest>) -> Answer<pb::LoginResponse> {
        unimplemented()
    }
    async fn logout(&self, _: Request<pb::LogoutRequest>) -> Answer<pb::LogoutResponse> {
        unimplemented()
    }
    async fn upsert_profile(&self, _: Request<pb::UpsertProfileRequest>) -> Answer<pb::UpsertProfileResponse> {
        unimplemented()
    }
    async fn get_profile(&self, _: Request<pb::GetProfileRequest>) -> Answer<pb::GetProfileResponse> {
        unimplemented()
    }
    async fn issue_chat_token(&self, _: Request<pb::IssueChatTokenRequest>) -> Answer<pb::IssueChatTokenResponse> {
        unimplemented()
    }
}

/// A verifier (cache for `ttl`) in front of a counting auth server; the server's call count.
async fn verifier(ttl: Duration) -> (Verifier, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AuthServiceServer::new(CountingAuth { calls: calls.clone() });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = switchboard_kit::grpc::channel(&addr.to_string()).unwrap();
    (Verifier::new(channel, ttl, &Hub::default()), calls)
}

#[tokio::test]
async fn concurrent_checks_of_one_credential_share_one_call_to_the_auth_service() {
    let (verifier, calls) = verifier(Duration::from_secs(60)).await;
    let checks = (0..50).map(|_| {
        let verifier = verifier.clone();
        async move { verifier.verify(&Credential::ApiKey("good".into())).await }
    });
    let answers = futures::future::join_all(checks).await;
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|caller| caller.service)));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "50 checks at once, one call");
    verifier.verify(&Credential::ApiKey("good".into())).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "then the cache answers");
}

#[tokio::test]
async fn a_refusal_is_shared_by_the_checks_waiting_for_it_but_not_remembered() {
    let (verifier, calls) = verifier(Duration::from_secs(60)).await;
    let checks = (0..20).map(|_| {
        let verifier = verifier.clone();
        async move { verifier.verify(&Credential::ApiKey("bad".into())).await }
    });
    let answers = futures::future::join_all(checks).await;
    assert!(answers.iter().all(|a| a.as_ref().is_err_and(|s| s.code() == tonic::Code::Unauthenticated)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(verifier.verify(&Credential::ApiKey("bad".into())).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "a refusal is asked again: the key may have been issued since");
}

#[tokio::test]
async fn a_check_whose_caller_gives_up_still_answers_the_others() {
    let (verifier, calls) = verifier(Duration::from_secs(60)).await;
    let check =
        |verifier: Verifier| tokio::spawn(async move { verifier.verify(&Credential::ApiKey("good".into())).await });
    let impatient = check(verifier.clone());
    tokio::time::sleep(SLOW / 3).await;
    let patient = check(verifier.clone());
    tokio::time::sleep(SLOW / 3).await;
    impatient.abort();
    assert!(patient.await.unwrap().unwrap().service);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the patient check joined the first call");
}

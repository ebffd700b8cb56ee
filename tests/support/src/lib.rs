//! Test support shared by the services' and the end-to-end tests.
//!
//! [`MockUpstream`] is a real HTTP server on loopback speaking the OpenAI chat-completions
//! wire format (JSON and SSE), with knobs for delay, failures and cut streams; [`MockDify`]
//! speaks Dify's chat-app API and keeps conversations as Dify does; [`db`] makes
//! fresh SQLite and PostgreSQL databases; [`stack`] runs the real binary, one process per
//! component.

pub mod db;
mod dify;
mod openai;
pub mod stack;

pub use dify::MockDify;
pub use openai::MockUpstream;

/// Serves `app` on a free loopback port until the returned sender is dropped.
pub(crate) async fn serve(app: axum::Router, what: &str) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve_on("127.0.0.1:0", app, what).await
}

/// Serves `app` on `addr` until the returned sender is dropped.
pub(crate) async fn serve_on(
    addr: &str,
    app: axum::Router,
    what: &str,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => panic!("{what} cannot bind loopback: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("{what} has no address: {e}"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (addr, stop)
}

/// An HTTP client builder for tests, with ring installed as TLS's crypto provider first (as
/// the LLM proxy does), which reqwest needs before its first client.
pub fn http() -> reqwest::ClientBuilder {
    switchboard_kit::net::install_tls_provider();
    reqwest::Client::builder()
}

/// Waits until the gateway at `base` answers `/readyz` with 200, failing the test after 20 s.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    let started = std::time::Instant::now();
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "switchboard did not become ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

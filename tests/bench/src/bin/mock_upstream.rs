//! The mock OpenAI-compatible upstream as a process of its own, for `make bench`: the load it
//! takes then counts in neither the harness nor Switchboard. `mock-upstream [ADDR]` (default
//! `127.0.0.1:0`) prints its base URL on the first line of stdout and serves until killed.

use std::io::Write;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let mock = switchboard_test_support::MockUpstream::start_on(&addr).await;
    mock.forget_requests();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", mock.base_url());
    let _ = out.flush();
    std::future::pending::<()>().await;
}

//! Background work that runs on a beat until told to stop, then once more, so nothing
//! gathered in memory is lost at shutdown.

use std::future::Future;
use std::time::Duration;

/// Runs `work` every `every` until `stop` resolves, then a last time.
pub async fn until_stopped<F, Fut>(every: Duration, stop: impl Future<Output = ()>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => work().await,
            () = &mut stop => break,
        }
    }
    work().await;
}

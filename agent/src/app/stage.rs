//! A stage of the running agent: tasks that start together and stop
//! together, on one token. The shutdown order (`lifecycle`) is then a list
//! of stages stopped one after another, each awaited before the next.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Tasks stopped by one token; `T` is what each returns.
pub struct Stage<T = ()> {
    name: &'static str,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<T>>,
}

impl<T: Send + 'static> Stage<T> {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// Spawns the task `start` makes from the stage's token.
    pub fn spawn<F>(&mut self, start: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(start(self.stop.clone())));
    }

    /// Stops the stage's tasks and waits for them; what they returned, in
    /// the order they were spawned. A second call returns nothing more.
    pub async fn stop(&mut self) -> Vec<T> {
        self.stop.cancel();
        let mut returned = Vec::with_capacity(self.tasks.len());
        for task in self.tasks.drain(..) {
            match task.await {
                Ok(value) => returned.push(value),
                Err(error) => tracing::warn!(stage = self.name, %error, "task failed"),
            }
        }
        returned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stage_stops_its_tasks_and_returns_what_they_returned() {
        let mut stage = Stage::new("test");
        for n in 0..3 {
            stage.spawn(|stop| async move {
                stop.cancelled().await;
                n
            });
        }
        assert_eq!(stage.stop().await, [0, 1, 2]);
        assert!(stage.stop().await.is_empty());
    }
}

//! One queue for every classifier request, batched by token budget (as
//! text-embeddings-inference does): a request that finds the encoder idle runs at once,
//! those that arrive while a pass runs share the next one, prompts go before responses,
//! a request past its deadline is answered with an error instead of being scored late,
//! and the queue holds a bounded number of tokens.
//!
//! Callers tokenise on their own thread (`submit`), so the worker only packs and runs
//! the encoder; every head is scored in that one pass.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{InferError, Model, TextScores, Window};

/// Batching limits.
#[derive(Clone, Copy, Debug)]
pub struct BatcherConfig {
    /// Tokens per encoder pass (a single larger request still runs, alone).
    pub max_batch_tokens: usize,
    /// How long the oldest request may wait for others before its batch runs. Zero by
    /// default: waiting for company costs every request at low load (two passes per
    /// exchange), while under load requests gather anyway during the pass before theirs.
    pub max_wait: Duration,
    /// Tokens the queue may hold; more is refused (bounded memory).
    pub max_queue_tokens: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig { max_batch_tokens: 16_384, max_wait: Duration::ZERO, max_queue_tokens: 1 << 20 }
    }
}

/// Which side of the exchange a request audits; prompts are scored first because a
/// user is waiting on the upstream behind them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A prompt (pre-request).
    Prompt,
    /// A response (post-response).
    Response,
}

/// Why a request was not scored.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The queue is full.
    #[error("classifier queue full ({queued} tokens queued, limit {limit})")]
    QueueFull {
        /// Tokens queued.
        queued: usize,
        /// The limit.
        limit: usize,
    },
    /// The deadline passed before the request was scored.
    #[error("classifier deadline passed after {waited:?} waiting")]
    Expired {
        /// Time spent queued.
        waited: Duration,
    },
    /// Tokenising failed (on the caller's thread).
    #[error(transparent)]
    Model(#[from] InferError),
    /// Running the batch failed; every request in it gets the message.
    #[error("classifier failed: {0}")]
    Failed(String),
    /// The worker is gone (shut down).
    #[error("classifier worker stopped")]
    Stopped,
}

struct Request {
    windows: Vec<Vec<Window>>,
    tokens: usize,
    enqueued: Instant,
    deadline: Instant,
    reply: mpsc::Sender<Result<Vec<TextScores>, BatchError>>,
}

#[derive(Default)]
struct Queue {
    prompts: VecDeque<Request>,
    responses: VecDeque<Request>,
    tokens: usize,
    stopped: bool,
}

/// Counters for `status` and the benchmark.
#[derive(Default)]
pub struct BatcherStats {
    /// Encoder passes.
    pub batches: AtomicU64,
    /// Requests scored.
    pub requests: AtomicU64,
    /// Windows scored.
    pub windows: AtomicU64,
    /// Tokens scored.
    pub tokens: AtomicU64,
    /// Requests answered `Expired`.
    pub expired: AtomicU64,
    /// Requests refused `QueueFull`.
    pub rejected: AtomicU64,
    /// Sum of queue waits, in microseconds.
    pub wait_us: AtomicU64,
    /// Longest queue wait, in microseconds.
    pub max_wait_us: AtomicU64,
}

/// A pending answer.
pub struct Ticket {
    rx: mpsc::Receiver<Result<Vec<TextScores>, BatchError>>,
    enqueued: Instant,
    deadline: Instant,
    stats: Arc<BatcherStats>,
}

impl Ticket {
    /// Blocks until the request is scored, refused or expired, and no longer than its
    /// deadline: a request whose batch is still running then is abandoned (the batch
    /// finishes for the others; this answer is dropped) and answered `Expired`.
    pub fn wait(self) -> Result<Vec<TextScores>, BatchError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
                Err(BatchError::Expired { waited: self.enqueued.elapsed() })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(BatchError::Stopped),
        }
    }
}

/// The queue and its worker thread.
pub struct Batcher {
    model: Arc<Model>,
    config: BatcherConfig,
    queue: Arc<(Mutex<Queue>, Condvar)>,
    /// Counters.
    pub stats: Arc<BatcherStats>,
}

impl Batcher {
    /// Starts the worker.
    pub fn start(model: Arc<Model>, config: BatcherConfig) -> std::io::Result<Batcher> {
        let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let stats = Arc::new(BatcherStats::default());
        let (m, q, s) = (model.clone(), queue.clone(), stats.clone());
        std::thread::Builder::new().name("lucid-classify".into()).spawn(move || worker(&m, config, &q, &s))?;
        Ok(Batcher { model, config, queue, stats })
    }

    /// The model the batcher runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Tokenises `texts` on the calling thread and queues them.
    pub fn submit(&self, texts: &[&str], priority: Priority, deadline: Instant) -> Result<Ticket, BatchError> {
        let windows = texts.iter().map(|t| self.model.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
        let tokens = windows.iter().flatten().map(|w| w.ids.len()).sum();
        let (tx, rx) = mpsc::channel();
        let (lock, cv) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
        if q.stopped {
            return Err(BatchError::Stopped);
        }
        if q.tokens + tokens > self.config.max_queue_tokens {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(BatchError::QueueFull { queued: q.tokens, limit: self.config.max_queue_tokens });
        }
        q.tokens += tokens;
        let r = Request { windows, tokens, enqueued: Instant::now(), deadline, reply: tx };
        match priority {
            Priority::Prompt => q.prompts.push_back(r),
            Priority::Response => q.responses.push_back(r),
        }
        cv.notify_one();
        Ok(Ticket { rx, enqueued: Instant::now(), deadline, stats: self.stats.clone() })
    }

    /// Scores and waits (a convenience over `submit` + `wait`).
    pub fn score(&self, texts: &[&str], priority: Priority, deadline: Instant) -> Result<Vec<TextScores>, BatchError> {
        self.submit(texts, priority, deadline)?.wait()
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        let (lock, cv) = &*self.queue;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stopped = true;
        cv.notify_all();
    }
}

/// Takes the next batch: expired requests out (returned separately), then prompts
/// before responses, first come first served, until the token budget is reached. The
/// first request always goes in, however large.
fn take_batch(q: &mut Queue, budget: usize, now: Instant) -> (Vec<Request>, Vec<Request>) {
    let mut expired = Vec::new();
    for side in [&mut q.prompts, &mut q.responses] {
        let mut keep = VecDeque::with_capacity(side.len());
        for r in side.drain(..) {
            if r.deadline <= now {
                expired.push(r);
            } else {
                keep.push_back(r);
            }
        }
        *side = keep;
    }
    let mut batch = Vec::new();
    let mut tokens = 0;
    'fill: for side in [&mut q.prompts, &mut q.responses] {
        while let Some(next) = side.front() {
            if !batch.is_empty() && tokens + next.tokens > budget {
                break 'fill;
            }
            tokens += next.tokens;
            if let Some(r) = side.pop_front() {
                batch.push(r);
            }
        }
    }
    q.tokens -= batch.iter().chain(&expired).map(|r| r.tokens).sum::<usize>();
    (batch, expired)
}

fn worker(model: &Model, config: BatcherConfig, queue: &(Mutex<Queue>, Condvar), stats: &BatcherStats) {
    let (lock, cv) = queue;
    loop {
        let (batch, expired) = {
            let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
            // Wait for work, then for company up to the oldest request's wait window.
            loop {
                if q.stopped {
                    return;
                }
                let oldest = q.prompts.front().into_iter().chain(q.responses.front()).map(|r| r.enqueued).min();
                match oldest {
                    None => q = cv.wait(q).unwrap_or_else(|p| p.into_inner()),
                    Some(t) => {
                        let due = t + config.max_wait;
                        let now = Instant::now();
                        if q.tokens >= config.max_batch_tokens || now >= due {
                            break;
                        }
                        q = cv.wait_timeout(q, due - now).unwrap_or_else(|p| p.into_inner()).0;
                    }
                }
            }
            take_batch(&mut q, config.max_batch_tokens, Instant::now())
        };
        let now = Instant::now();
        for r in expired {
            // Counted here only if the caller still waits (else its ticket counted it).
            if r.reply.send(Err(BatchError::Expired { waited: now - r.enqueued })).is_ok() {
                stats.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        if batch.is_empty() {
            continue;
        }
        for r in &batch {
            let waited = (now - r.enqueued).as_micros() as u64;
            stats.wait_us.fetch_add(waited, Ordering::Relaxed);
            stats.max_wait_us.fetch_max(waited, Ordering::Relaxed);
        }
        let mut batch = batch;
        let counts: Vec<usize> = batch.iter().map(|r| r.windows.len()).collect();
        let texts: Vec<Vec<Window>> = batch.iter_mut().flat_map(|r| std::mem::take(&mut r.windows)).collect();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.windows.fetch_add(texts.iter().map(Vec::len).sum::<usize>() as u64, Ordering::Relaxed);
        stats.tokens.fetch_add(batch.iter().map(|r| r.tokens as u64).sum(), Ordering::Relaxed);
        // A panic in the model must not take the worker with it: callers would wait on
        // their tickets forever.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.score_windows(&texts)));
        match run {
            Ok(Ok(scores)) => {
                let mut scores = scores.into_iter();
                for (r, n) in batch.into_iter().zip(counts) {
                    let mine: Vec<TextScores> = scores.by_ref().take(n).collect();
                    let _ = r.reply.send(Ok(mine));
                }
            }
            failed => {
                let msg = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the model panicked".to_string(),
                };
                tracing::error!(error = %msg, requests = batch.len(), "classifier batch failed");
                for r in batch {
                    let _ = r.reply.send(Err(BatchError::Failed(msg.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tokens: usize, deadline: Instant) -> (Request, mpsc::Receiver<Result<Vec<TextScores>, BatchError>>) {
        let (tx, rx) = mpsc::channel();
        (Request { windows: vec![vec![Window { ids: vec![0; tokens], ..Window::default() }]], tokens, enqueued: Instant::now(), deadline, reply: tx }, rx)
    }

    #[test]
    fn prompts_first_within_budget_and_expired_requests_leave() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut q = Queue::default();
        let mut keep = Vec::new();
        for (side, tokens, deadline) in [(1, 100, later), (0, 300, later), (1, 50, now), (0, 200, later), (0, 600, later)] {
            let (r, rx) = request(tokens, deadline);
            keep.push(rx);
            q.tokens += tokens;
            if side == 0 { q.prompts.push_back(r) } else { q.responses.push_back(r) }
        }
        let (batch, expired) = take_batch(&mut q, 600, now);
        assert_eq!(expired.iter().map(|r| r.tokens).collect::<Vec<_>>(), [50]);
        // Prompts first (300, 200); the 600-token prompt does not fit; responses wait.
        assert_eq!(batch.iter().map(|r| r.tokens).collect::<Vec<_>>(), [300, 200]);
        assert_eq!(q.tokens, 700);
        // A request larger than the budget still runs, alone.
        let (batch, _) = take_batch(&mut q, 100, now);
        assert_eq!(batch.iter().map(|r| r.tokens).collect::<Vec<_>>(), [600]);
        let (batch, _) = take_batch(&mut q, 100, now);
        assert_eq!(batch.iter().map(|r| r.tokens).collect::<Vec<_>>(), [100]);
        assert_eq!(q.tokens, 0);
    }
}

//! A few threads for the slow work the event loop must not wait on: a
//! network attachment runs a chain of CNI plugins (each a process, most of
//! them taking the host's xtables lock), tens of milliseconds at best.
//! Bounded, so that 200 workloads appearing at once queue for four threads
//! instead of forking 200 plugin chains that then fight for one lock.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs queued or running.
    outstanding: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// A job was queued, or the pool closed.
    work: Condvar,
    /// `outstanding` reached zero.
    idle: Condvar,
}

pub struct Workers {
    limit: usize,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// At most `limit` threads, started only when there is work for them.
    pub fn new(limit: usize) -> Self {
        Workers { limit: limit.max(1), shared: Arc::default(), threads: Vec::new() }
    }

    pub fn submit(&mut self, job: impl FnOnce() + Send + 'static) {
        let outstanding = {
            let mut q = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.jobs.push_back(Box::new(job));
            q.outstanding += 1;
            q.outstanding
        };
        self.shared.work.notify_one();
        if self.threads.len() < self.limit && self.threads.len() < outstanding {
            let shared = self.shared.clone();
            match std::thread::Builder::new().spawn(move || work(&shared)) {
                Ok(thread) => self.threads.push(thread),
                // The host is out of threads: the ones there are take the
                // job; with none, it runs here, slow but never lost.
                Err(e) if self.threads.is_empty() => {
                    tracing::warn!(error = %e, "cannot start a worker thread; running the job on the event loop");
                    run_one(&self.shared);
                }
                Err(_) => {}
            }
        }
    }

    /// Waits until every job submitted so far has run.
    pub fn settle(&self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        while q.outstanding > 0 {
            q = self.shared.idle.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared.work.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
        };
        finish(shared, job);
    }
}

/// Runs the next queued job, if any, on the calling thread.
fn run_one(shared: &Shared) {
    let job = shared.queue.lock().unwrap_or_else(PoisonError::into_inner).jobs.pop_front();
    if let Some(job) = job {
        finish(shared, job);
    }
}

fn finish(shared: &Shared, job: Job) {
    // A job that panics is a bug reported on stderr; the pool, and the
    // count `settle` waits on, go on.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    q.outstanding -= 1;
    if q.outstanding == 0 {
        shared.idle.notify_all();
    }
}

impl Drop for Workers {
    /// Runs what is queued, then ends the threads.
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long a blocking job waits before it asks for a thread again.
const THREAD_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// Set while `blocking` asks tokio for a thread: its panic there for
    /// want of one is caught and said once in the log, not printed by the
    /// panic hook at every try.
    static SPAWNING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What tokio's `spawn_blocking` panics with when no thread can be started.
const NO_THREAD: &str = "OS can't spawn worker thread";

/// Installs, once, a panic hook that passes every panic to the one before
/// but tokio's for want of a thread while `SPAWNING` (any other panic
/// there is printed, and ends the task as it would have).
fn quiet_spawn_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !(SPAWNING.get() && no_thread(info.payload())) {
                before(info);
            }
        }));
    });
}

/// Whether a panic's payload is tokio's for want of a thread.
fn no_thread(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
    text.is_some_and(|t| t.starts_with(NO_THREAD))
}

/// `tokio::task::spawn_blocking`, which panics where no thread can be had
/// (the host out of processes or threads, and none of tokio's idle), made
/// to wait instead: a thread is asked for again every `THREAD_PAUSE`
/// until one starts. A panic there would end the task that asked: a
/// sandbox's end never heard, or the event loop itself. `f` runs once,
/// on whichever of the tasks queued gets a thread first (tokio queues
/// the task before it finds it can start no thread), and its result is
/// this future's. An error: `f` panicked.
pub async fn blocking<F, T>(f: F) -> Result<T, tokio::sync::oneshot::error::RecvError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let (result, answer) = tokio::sync::oneshot::channel();
    // Where `f` waits until a thread takes it: the task of a spawn that
    // panicked may still run later, and takes it then (the others find
    // nothing to do).
    let slot = Arc::new(Mutex::new(Some((f, result))));
    quiet_spawn_panics();
    loop {
        let taken = slot.clone();
        SPAWNING.set(true);
        let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The one place it is called: its panic is caught here.
            #[allow(clippy::disallowed_methods)]
            tokio::task::spawn_blocking(move || {
                let job = taken.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some((f, result)) = job {
                    let _ = result.send(f());
                }
            })
        }));
        SPAWNING.set(false);
        match spawned {
            Err(payload) if !no_thread(&*payload) => std::panic::resume_unwind(payload),
            Err(_) => {}
            Ok(_) => {
                if SAID.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!("threads can be started again");
                }
                break;
            }
        }
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(
                "no thread can be started (the host is out of processes or threads): the work that needs one waits, and is tried again every second"
            );
        }
        tokio::time::sleep(THREAD_PAUSE).await;
        // Taken meanwhile by a task queued before.
        if slot.lock().unwrap_or_else(PoisonError::into_inner).is_none() {
            break;
        }
    }
    answer.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Only tokio's panic for want of a thread is kept quiet and tried
    /// again; any other is passed on.
    #[test]
    fn only_tokios_panic_for_want_of_a_thread_is_taken_for_one() {
        let payload = |text: &str| std::panic::catch_unwind(|| panic!("{text}")).unwrap_err();
        assert!(no_thread(&*payload("OS can't spawn worker thread: Resource temporarily unavailable (os error 11)")));
        assert!(no_thread(&*std::panic::catch_unwind(|| std::panic::panic_any(NO_THREAD)).unwrap_err()));
        assert!(!no_thread(&*payload("must be called from the context of a Tokio 1.x runtime")));
    }

    #[test]
    fn never_more_than_the_limit_at_once_and_settle_waits_for_all() {
        let mut pool = Workers::new(3);
        let (running, most, done) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for _ in 0..20 {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            pool.submit(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        pool.settle();
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert!(most.load(Ordering::SeqCst) <= 3, "{} at once", most.load(Ordering::SeqCst));
        assert_eq!(pool.threads.len(), 3);
    }

    #[test]
    fn a_panicking_job_neither_kills_the_pool_nor_hangs_settle() {
        let mut pool = Workers::new(1);
        let done = Arc::new(AtomicUsize::new(0));
        pool.submit(|| panic!("a bug in a job"));
        let d = done.clone();
        pool.submit(move || {
            d.fetch_add(1, Ordering::SeqCst);
        });
        pool.settle();
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dropping_the_pool_runs_what_was_queued() {
        let done = Arc::new(AtomicUsize::new(0));
        {
            let mut pool = Workers::new(2);
            for _ in 0..10 {
                let d = done.clone();
                pool.submit(move || {
                    d.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
        assert_eq!(done.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn no_thread_until_there_is_work() {
        let pool = Workers::new(4);
        pool.settle();
        assert!(pool.threads.is_empty());
    }
}

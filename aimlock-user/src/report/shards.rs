//! Threads that each own a value and run, in the order given, the jobs sent to it.
//!
//! The report keeps each lock's lines on one of these threads from the read to the fold (a
//! lock's thread is picked by its inode number), so that the memory of a line is taken and given
//! back by one thread. The allocator then serves each thread from an arena of its own, without a
//! lock: lines stored by one thread and folded by the jobs of a shared pool were freed by every
//! job into the storing thread's arena, and the jobs spent a third of the fold waiting on it.

use std::{
    sync::{Arc, mpsc},
    thread::{self, JoinHandle},
};

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Threads that each own an `S`.
pub struct Shards<S> {
    workers: Vec<Worker<S>>,
}

struct Worker<S> {
    jobs: Option<mpsc::Sender<Job<S>>>,
    thread: Option<JoinHandle<()>>,
}

impl<S: Default + 'static> Shards<S> {
    /// Starts `count` threads, each with an `S::default()`.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let (jobs, queue) = mpsc::channel::<Job<S>>();
            let thread = thread::Builder::new()
                .name(format!("aimlock-shard-{index}"))
                .spawn(move || {
                    let mut owned = S::default();
                    for job in queue {
                        job(&mut owned);
                    }
                })?;
            workers.push(Worker {
                jobs: Some(jobs),
                thread: Some(thread),
            });
        }
        Ok(Self { workers })
    }

    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Gives shard `index` a job, to run after those given to it before.
    pub fn send(&self, index: usize, job: impl FnOnce(&mut S) + Send + 'static) {
        let sent = self.workers[index]
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(Box::new(job)).is_ok());
        assert!(sent, "shard thread {index} has stopped: a job panicked");
    }

    /// Runs `job` on every shard, after the jobs given before, and returns what each gave, in
    /// shard order.
    pub fn each<R: Send + 'static>(
        &self,
        job: impl Fn(usize, &mut S) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let job = Arc::new(job);
        let (done, answers) = mpsc::channel();
        for index in 0..self.count() {
            let (job, done) = (Arc::clone(&job), done.clone());
            self.send(index, move |owned| {
                // The receiver waits for every answer; it cannot have gone.
                let _ = done.send((index, job(index, owned)));
            });
        }
        drop(done);
        let mut told: Vec<Option<R>> = (0..self.count()).map(|_| None).collect();
        for (index, answer) in answers {
            told[index] = Some(answer);
        }
        told.into_iter()
            .enumerate()
            .map(|(index, answer)| {
                answer.unwrap_or_else(|| panic!("shard thread {index} has stopped: a job panicked"))
            })
            .collect()
    }
}

impl<S> Drop for Shards<S> {
    fn drop(&mut self) {
        // Every queue is closed first, so that the threads finish together.
        for worker in &mut self.workers {
            worker.jobs = None;
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take()
                && thread.join().is_err()
                && !thread::panicking()
            {
                panic!("a shard thread panicked");
            }
        }
    }
}

impl<S> std::fmt::Debug for Shards<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shards({})", self.workers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shard_runs_its_jobs_in_order_on_its_own_value() {
        let shards: Shards<Vec<usize>> = Shards::start(3).unwrap();
        for job in 0..30 {
            shards.send(job % 3, move |owned| owned.push(job));
        }
        let told = shards.each(|index, owned| (index, std::mem::take(owned)));
        for (index, (shard, jobs)) in told.into_iter().enumerate() {
            assert_eq!(shard, index);
            assert_eq!(jobs, (index..30).step_by(3).collect::<Vec<_>>());
        }
    }
}

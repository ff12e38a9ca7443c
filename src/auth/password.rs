//! Passwords: Argon2id with OWASP's minimum parameters (19 MiB, t=2, p=1), hashed off the async
//! workers, on low-priority threads, with a cap on concurrent hashes so that a login flood
//! cannot starve the API.

use crate::secret::Secret;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("password must be {MIN_LEN} to {MAX_LEN} bytes long")]
    Length,
    #[error("password hashing failed")]
    Hash,
    #[error("too many password checks in progress")]
    Busy,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Length rule: 8–1024 bytes, never truncated.
pub fn check_length(password: &str) -> Result<(), PasswordError> {
    if (MIN_LEN..=MAX_LEN).contains(&password.len()) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
}

/// Hashes synchronously (for the admin command and for tests).
pub fn hash_blocking(password: &Secret<String>) -> Result<String, PasswordError> {
    check_length(password.expose())?;
    argon2()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Verifies synchronously; a malformed stored hash never matches.
pub fn verify_blocking(password: &Secret<String>, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    argon2()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok()
}

/// Runs hashes on threads of their own, at most `limit` at a time; callers beyond that wait a
/// bounded time and then get [`PasswordError::Busy`]. The threads run at the lowest CPU priority
/// (nice 19): a flood of logins takes what the API leaves, never the API's share.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Hasher {
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..limit {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    // SAFETY: setpriority on this thread (who = its tid) has no preconditions.
                    unsafe {
                        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19)
                    };
                    // Ends when every Hasher (every sender) is gone.
                    loop {
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            // A panicking job answers its caller with an error (its reply
                            // channel is dropped) and leaves the thread serving.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            jobs,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| PasswordError::Busy)?
        .map_err(|_| PasswordError::Busy)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _ = tx.send(f());
        });
        self.jobs.send(job).map_err(|_| PasswordError::Hash)?;
        rx.await.map_err(|_| PasswordError::Hash)
    }

    pub async fn hash(&self, password: Secret<String>) -> Result<String, PasswordError> {
        check_length(password.expose())?;
        self.run(move || hash_blocking(&password)).await?
    }

    pub async fn verify(
        &self,
        password: Secret<String>,
        phc: String,
    ) -> Result<bool, PasswordError> {
        self.run(move || verify_blocking(&password, &phc)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_owasp_and_verifies() {
        let pw = Secret::new("correct horse battery".to_string());
        let h = hash_blocking(&pw).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking(&pw, &h));
        assert!(!verify_blocking(
            &Secret::new("correct horse battery!".into()),
            &h
        ));
        assert!(!verify_blocking(&pw, "not a hash"));
    }

    #[test]
    fn length_limits_without_truncation() {
        assert_eq!(check_length("1234567"), Err(PasswordError::Length));
        assert_eq!(check_length(&"x".repeat(1025)), Err(PasswordError::Length));
        let long = "y".repeat(1024);
        let h = hash_blocking(&Secret::new(long.clone())).unwrap();
        let mut other = long.clone();
        other.replace_range(1023.., "z");
        assert!(
            !verify_blocking(&Secret::new(other), &h),
            "last byte counts"
        );
    }
}

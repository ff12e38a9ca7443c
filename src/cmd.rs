//! The one way MeshWG runs external programs: an argument vector (never a shell string), logged at
//! debug, stderr captured into a typed error, a timeout, and optionally inside a tenant's network
//! namespace.
//!
//! Namespace-bound commands are forked from a fresh OS thread that joined the namespace with
//! `setns` (never a tokio worker, which is shared): a child inherits the namespace of the thread
//! that forks it. Standard input may carry secrets (a private key for `wg set`), so it is never
//! logged.

use crate::secret::Secret;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// The `PATH` every child process gets.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("network namespace {0} does not exist")]
    NoNetns(String),
    #[error("could not enter network namespace {netns}: {source}")]
    Setns { netns: String, source: io::Error },
    #[error("{cmd}: could not start: {source}")]
    Spawn { cmd: String, source: io::Error },
    #[error("{cmd}: failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{cmd}: no answer within {timeout:?}")]
    Timeout { cmd: String, timeout: Duration },
}

/// The captured result of a command that ran to completion.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    stdin: Option<Secret<Vec<u8>>>,
    netns: Option<String>,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            netns: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Bytes fed to standard input. Treated as secret: never logged.
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(Secret::new(bytes));
        self
    }

    /// Run the program inside the named network namespace.
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_owned());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line as logged and reported in errors (no stdin).
    pub fn display(&self) -> String {
        let mut s = String::new();
        if let Some(ns) = &self.netns {
            s.push_str(&format!("[netns {ns}] "));
        }
        s.push_str(&self.program.to_string_lossy());
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Runs to completion and returns stdout; a non-zero exit is a [`CmdError::Failed`].
    pub async fn run(self) -> Result<String, CmdError> {
        let cmd = self.display();
        let out = self.output().await?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(CmdError::Failed {
                cmd,
                status: out.status,
                stderr: out.stderr,
            })
        }
    }

    /// Runs to completion and returns whatever happened, without judging the exit status.
    pub async fn output(self) -> Result<Output, CmdError> {
        let shown = self.display();
        tracing::debug!(cmd = %shown, "exec");
        let mut command = tokio::process::Command::new(&self.program);
        // Children get a clean environment: the controller's holds ENCRYPTION_KEY and friends.
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", SAFE_PATH)
            .env("LC_ALL", "C")
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = match &self.netns {
            None => command.spawn(),
            Some(ns) => {
                let runtime = tokio::runtime::Handle::current();
                in_netns(ns, move || {
                    let _guard = runtime.enter();
                    command.spawn()
                })
                .await?
            }
        };
        let mut child = spawned.map_err(|source| CmdError::Spawn {
            cmd: shown.clone(),
            source,
        })?;
        let timeout = self.timeout;
        let work = async {
            if let (Some(input), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
                // A program that exits early closes its end; its exit status tells the story.
                let _ = pipe.write_all(input.expose()).await;
                drop(pipe);
            }
            child.wait_with_output().await
        };
        let out = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| CmdError::Timeout {
                cmd: shown.clone(),
                timeout,
            })?
            .map_err(|source| CmdError::Spawn {
                cmd: shown.clone(),
                source,
            })?;
        let stderr = truncate(String::from_utf8_lossy(&out.stderr).trim());
        Ok(Output {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 600;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Runs `f` on a fresh OS thread that joined the network namespace `/run/netns/<name>`.
///
/// The thread ends when `f` returns, so no pooled thread is ever left in a tenant namespace
/// (which would also keep a deleted namespace alive).
pub async fn in_netns<T, F>(name: &str, f: F) -> Result<T, CmdError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = std::path::Path::new(NETNS_DIR).join(name);
    let netns = name.to_owned();
    let (tx, rx) = oneshot::channel();
    let spawn = std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || {
            let entered = File::open(&path).and_then(|file| {
                // SAFETY: setns on a valid fd only changes this (fresh, private) thread's namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
            let _ = tx.send(entered.map(|()| f()));
        });
    if let Err(source) = spawn {
        return Err(CmdError::Setns { netns, source });
    }
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Err(CmdError::NoNetns(netns)),
        Ok(Err(source)) => Err(CmdError::Setns { netns, source }),
        Err(_) => Err(CmdError::Setns {
            netns,
            source: io::Error::other("namespace thread panicked"),
        }),
    }
}

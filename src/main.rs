use clap::{Parser, Subcommand};
use meshwg::config::{self, Config};
use meshwg::secret::Secret;
use std::io::BufRead;
use std::process::ExitCode;

/// MeshWG: self-hosted, multi-tenant, hub-and-spoke WireGuard controller.
///
/// Configuration comes from the environment (see deploy/meshwg.env.example).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: API, metrics and one actor per tenant.
    Serve {
        /// Remove every kernel object with KERNEL_PREFIX that this database does not own, also
        /// another installation's, and make the prefix this installation's. For an operator who
        /// pointed the controller at a new database on purpose; never needed otherwise.
        #[arg(long)]
        remove_unowned: bool,
    },
    /// Apply database migrations and exit (needs DATABASE_URL).
    Migrate,
    /// Print what this host offers and which backend WG_BACKEND=auto picks.
    Doctor,
    /// Check that ENCRYPTION_KEY opens every org's sealed hub key (exit 1 if any does not).
    VerifyKeys,
    /// Create the operator account, or reset its password (and end its sessions).
    Admin {
        /// The operator's email address.
        #[arg(long)]
        email: String,
        /// Read the new password from the first line of standard input (else ADMIN_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints one line and exits non-zero: for configuration errors, before anything is touched.
fn refuse(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("meshwg: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = config::process_env;
    // Validate before starting a runtime, logging or touching anything.
    let serve_config = match &cli.command {
        Command::Serve { .. } => match Config::from_env(&env) {
            Ok(c) => Some(c),
            Err(e) => return refuse(e),
        },
        _ => None,
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return refuse(e),
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { remove_unowned } => {
                let orphans = if remove_unowned {
                    meshwg::installation::Orphans::RemoveUnowned
                } else {
                    meshwg::installation::Orphans::Careful
                };
                let config = serve_config.expect("validated above");
                match meshwg::serve::run(config, orphans).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => refuse(format!("{e:#}")),
                }
            }
            Command::Migrate => {
                let pool = match pool_from_env(&env) {
                    Ok(p) => p,
                    Err(code) => return code,
                };
                match meshwg::db::migrate(&pool).await {
                    Ok(n) => {
                        println!("applied {n} migration(s)");
                        ExitCode::SUCCESS
                    }
                    Err(e) => refuse(e),
                }
            }
            Command::Doctor => {
                if meshwg::doctor::run(&env).await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Command::Admin {
                email,
                password_stdin,
            } => admin(&env, &email, password_stdin).await,
            Command::VerifyKeys => verify_keys(&env).await,
        }
    })
}

/// The pool for `DATABASE_URL`, or the one-line refusal.
fn pool_from_env(env: config::Lookup<'_>) -> Result<meshwg::db::Pool, ExitCode> {
    let url = config::database_url(env).map_err(refuse)?;
    meshwg::db::pool(&url).map_err(refuse)
}

async fn verify_keys(env: config::Lookup<'_>) -> ExitCode {
    let key = match config::encryption_key(env) {
        Ok(k) => k,
        Err(e) => return refuse(e),
    };
    let pool = match pool_from_env(env) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let orgs = match meshwg::db::orgs::list(&pool).await {
        Ok(o) => o,
        Err(e) => return refuse(e),
    };
    let cipher = meshwg::crypto::HubKeyCipher::new(&key);
    let mut bad = 0;
    for org in &orgs {
        match cipher.open(org.id, &org.sealed_key) {
            Ok(k) if k.public_key() == org.hub_public_key => {
                println!("ok    {} {}", org.id, org.hub_public_key)
            }
            Ok(_) => {
                bad += 1;
                println!("FAIL  {} opens, but not to the stored public key", org.id);
            }
            Err(e) => {
                bad += 1;
                println!("FAIL  {} {e}", org.id);
            }
        }
    }
    println!("{} org(s), {bad} failed", orgs.len());
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn admin(env: config::Lookup<'_>, email: &str, password_stdin: bool) -> ExitCode {
    let password = if password_stdin {
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).is_err() {
            return refuse("could not read the password from standard input");
        }
        Secret::new(line.trim_end_matches(['\r', '\n']).to_string())
    } else {
        match env("ADMIN_PASSWORD") {
            Some(p) => Secret::new(p),
            None => return refuse("ADMIN_PASSWORD: missing (or use --password-stdin)"),
        }
    };
    if !email.contains('@') || email.len() > 254 || email.chars().any(char::is_control) {
        return refuse("--email: not an email address");
    }
    let hash = match meshwg::auth::password::hash_blocking(&password) {
        Ok(h) => h,
        Err(e) => return refuse(e),
    };
    let pool = match pool_from_env(env) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(e) = meshwg::db::migrate(&pool).await {
        return refuse(e);
    }
    match meshwg::db::users::upsert_operator(&pool, email, &hash).await {
        Ok(id) => {
            println!("operator {email} ready (id {id}); any previous sessions ended");
            ExitCode::SUCCESS
        }
        Err(e) => refuse(e),
    }
}

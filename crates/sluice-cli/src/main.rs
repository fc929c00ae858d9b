//! The `sluice` binary: parses the command line and hands off to the faces. No logic of its own.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

mod doctor_cmd;
mod models_cmd;
mod spend_cmd;

// mimalloc instead of glibc's allocator: requests allocate many small objects (headers, JSON
// values, strings), and the profile of a batch run spent a fifth of its instructions in glibc
// malloc/free. It is linked in place of `malloc` (the crate's `override` feature) and reached
// through std's `System` allocator, which asks for an aligned block only when the alignment
// needs one; the crate's `#[global_allocator]` adapter asks `mi_malloc_aligned` for every block,
// and mimalloc 3 over-allocates for any size that is not a power of two (a tenth of a gateway
// request's allocations, ~2k instructions per request). Named here so that it is linked.
extern crate mimalloc;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version = env!("SLUICE_VERSION_LINE"),
    about = "A traffic controller for OpenAI-compatible LLM APIs"
)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the OpenAI-compatible upstream simulator (rate limits, faults, streaming).
    Mock {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: SocketAddr,
        /// Scenario file (TOML, or JSON when it ends in .json).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Start, send one chat request to itself, print the exchange and exit.
        #[arg(long)]
        demo: bool,
    },
    /// Run the OpenAI-compatible gateway: point any SDK's base_url here.
    Serve {
        /// Gateway configuration (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides the file); port 0 picks a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve against a built-in upstream instead of the configured one.
        #[arg(long, value_enum)]
        upstream: Option<Upstream>,
    },
    /// Run a file of requests (OpenAI Batch format) durably: resumable, never duplicated.
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// The model registry: status, days to shutdown, replacement, prices.
    Models {
        /// Your registry file, extending or overriding the shipped one.
        #[arg(long, global = true)]
        registry: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: Option<ModelsCommand>,
    },
    /// Spend from the cost ledger, by key, model or day.
    Spend(spend_cmd::SpendArgs),
    /// Diagnose an endpoint and key: DNS, TCP, TLS, first byte, key, limits, model.
    /// Exit code: 0 healthy, 1 degraded, 2 broken.
    Doctor(doctor_cmd::DoctorArgs),
    /// Print shell completions: `sluice completions bash > ~/.local/share/bash-completion/completions/sluice`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this command line's definition.
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Scan JSONL request files and configs for models; exit 1 when one is retired or shuts
    /// down within the warning window.
    Check {
        files: Vec<PathBuf>,
        /// Fail for models shutting down within this many days.
        #[arg(long, default_value_t = 30)]
        warn_days: i64,
        /// Also ask this upstream's `GET /models` and fail for every model it does not list.
        #[arg(long)]
        base_url: Option<String>,
        /// The variable holding the upstream's API key (with --base-url).
        #[arg(long, default_value = "OPENAI_API_KEY", requires = "base_url")]
        api_key_env: String,
        /// Fail (exit 1) for models the registry does not know, too.
        #[arg(long)]
        strict: bool,
    },
    /// Fetch a registry file (URL or path), validate it and store it in the data directory as
    /// the layer between the shipped registry and your own file.
    Update {
        /// `https://…` or a file path.
        #[arg(long)]
        from: String,
    },
}

// Parsed once per process: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// Run (or resume) a job.
    Run(RunArgs),
    /// Show how far a job got.
    Status {
        input: PathBuf,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[arg(long)]
        errors: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Upstream {
    /// The built-in simulator with a realistic paid tier: no key needed.
    Mock,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProgressArg {
    Auto,
    Bar,
    Log,
    Off,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Input file: one `{"custom_id","method","url","body"}` request per line.
    input: PathBuf,
    /// Output file (default: INPUT.out.jsonl).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Errors file (default: INPUT.errors.jsonl).
    #[arg(long)]
    errors: Option<PathBuf>,
    /// Journal directory (default: .sluice/ beside the input).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// API base URL (default: OPENAI_BASE_URL, else the public API).
    #[arg(long, conflicts_with = "upstream")]
    base_url: Option<String>,
    /// Run against a built-in upstream instead of a URL.
    #[arg(long, value_enum)]
    upstream: Option<Upstream>,
    /// Read the upstreams from this file, in the gateway's format: its `[[upstreams]]` (several
    /// upstreams, by model, priority and weight, with failover), or its `[upstream]` base_url
    /// and keys.
    #[arg(long, conflicts_with_all = ["upstream", "base_url"])]
    config: Option<PathBuf>,
    /// Environment variable holding an API key (default OPENAI_API_KEY). Repeat it to spread
    /// the job over several keys.
    #[arg(long)]
    api_key_env: Vec<String>,
    /// File with one API key per line, re-read when it changes (a rotated secret).
    #[arg(long)]
    keys_file: Option<PathBuf>,
    /// Requests in flight at most (at least 1).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Requests per minute allowed (default: learned from the upstream's headers). At least 1:
    /// leave it out for no limit of sluice's own.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rpm: Option<u64>,
    /// Tokens per minute allowed (default: learned from the upstream's headers). At least 1.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    tpm: Option<u64>,
    /// Stop before spending more than this many US dollars (the whole job, across runs).
    #[arg(long)]
    budget_usd: Option<String>,
    /// Hard limit on this job's spend per UTC day, in USD, counted in the ledger (so it holds
    /// across runs); the job stops (exit 3) and resumes the next day or with a higher limit.
    #[arg(long)]
    budget_per_day: Option<String>,
    /// The same per UTC month.
    #[arg(long)]
    budget_per_month: Option<String>,
    /// Attempts per request (at least 1).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Also write the final summary as JSON here.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Share rate limits with other processes through Redis (redis://host:port).
    #[arg(long)]
    state_url: Option<String>,
    /// The upstream gives the unused part of `max_tokens` back when an answer ends (some
    /// self-hosted servers): settle reservations to usage at once. By default whole
    /// reservations are kept, as OpenAI's limits do, and eased only where the upstream's
    /// `x-ratelimit-remaining-tokens` shows the room.
    #[arg(long)]
    upstream_refunds: bool,
    /// How the upstream's rate limiter counts a prompt: `characters` (about four a token, as
    /// OpenAI's limiter estimates), `tokenizer` (exactly), or `larger` (not known: the larger
    /// of the two, safe against either; the default). Told the rule, sluice reserves exactly
    /// what the upstream takes.
    #[arg(long, default_value = "larger", value_parser = sluice::admission::PromptCount::parse)]
    prompt_count: sluice::admission::PromptCount,
    /// How far above its steady rate the upstream lets a burst go, as refill time (e.g. `10s`
    /// for a limiter that counts over 10-second windows). Default 1s: OpenAI enforces its
    /// per-minute limits over short windows, so a longer burst draws 429s there.
    #[arg(long, value_parser = humantime::parse_duration)]
    burst: Option<std::time::Duration>,
    /// Progress display.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressArg,
    /// Your model registry file (prices, lifecycle), extending the shipped one.
    #[arg(long)]
    registry: Option<PathBuf>,
    /// How often to check the upstream's model list against the models of the input (at start,
    /// then this often; `0s` turns it off). A model it does not list raises `model_unavailable`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    models_check_every: Duration,
    /// Requests for a model past its shutdown date: refuse them (to the errors file), send
    /// them to the registry's replacement, or send them as written.
    #[arg(long, value_enum, default_value = "reject")]
    on_retired: OnRetiredArg,
    /// Cost ledger file, or `off` (default: SLUICE_LEDGER, else ~/.local/share/sluice/ledger.db);
    /// the job's spend is recorded as `job:NAME` (the input's file stem).
    #[arg(long)]
    ledger: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnRetiredArg {
    Reject,
    Substitute,
    Allow,
}

/// Exit codes, documented in the README.
pub(crate) mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const BUDGET: u8 = 3;
    pub const INTERRUPTED: u8 = 4;
    pub const STOPPED: u8 = 5;
}

fn init_logs(format: &str, default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: escape codes in a log file or a pipe are noise.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(|| LogWriter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `bytes` to stdout; a reader that stopped early (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> Result<(), Fail> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fail(exit::FAILURE, format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Log lines to stderr, with a running progress bar taken off the screen while each is written
/// (and redrawn below it), so a line is never torn by a redraw nor left under a stale frame.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sluice_batch::suspend_progress(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn load_scenario(path: Option<&PathBuf>) -> Result<sluice_mock::Scenario, String> {
    let Some(path) = path else {
        return Ok(sluice_mock::Scenario::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read scenario {}: {e}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        sluice_mock::Scenario::from_json(&text)
    } else {
        sluice_mock::Scenario::from_toml(&text)
    };
    parsed.map_err(|e| format!("{}: {e}", path.display()))
}

/// An error with the exit code it should produce.
pub(crate) struct Fail(pub u8, pub String);

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail(exit::FAILURE, s)
    }
}

/// Stop signals: the first flips the watch (stop admitting, drain); the second exits at once
/// (the files and the journal are consistent at every moment, so that is safe).
fn stop_signals() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_signal().await;
            count += 1;
            if count == 1 {
                eprintln!("\nsluice: stopping — finishing requests in flight (press Ctrl-C again to exit now)");
                let _ = tx.send(true);
            } else {
                eprintln!("sluice: exiting now; run the same command again to resume");
                std::process::exit(130);
            }
        }
    });
    rx
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--upstream mock`: the simulator in-process with the realistic paid tier of
/// `examples/mock/`, alive as long as the returned server.
async fn builtin_mock() -> Result<sluice_mock::MockServer, Fail> {
    let scenario = sluice_mock::Scenario::from_toml(include_str!(
        "../../../examples/mock/realistic-tier.toml"
    ))
    .map_err(|e| format!("built-in scenario: {e}"))?;
    let mock = sluice_mock::MockServer::start(scenario)
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    eprintln!(
        "sluice: using the built-in simulator at {}",
        mock.base_url()
    );
    Ok(mock)
}

/// `sluice batch run`: the flags as the batch runner's settings, its outcome as an exit code.
async fn batch_run(a: RunArgs) -> Result<(), Fail> {
    use sluice::keypool::KeySpec;

    let dollars = |flag: &str, v: &Option<String>| -> Result<Option<u64>, Fail> {
        v.as_ref()
            .map(|s| {
                sluice::pricing::parse_dollars(s).ok_or_else(|| {
                    Fail(
                        exit::USAGE,
                        format!("{flag}: {s:?} is not an amount of dollars"),
                    )
                })
            })
            .transpose()
    };
    let mut settings = sluice_batch::EngineSettings {
        base_url: a.base_url.clone(),
        keys: a.api_key_env.iter().cloned().map(KeySpec::Env).collect(),
        rpm: a.rpm,
        tpm: a.tpm,
        state_url: a.state_url.clone(),
        registry: a.registry.clone(),
        on_retired: match a.on_retired {
            OnRetiredArg::Reject => sluice::model_policy::OnRetired::Reject,
            OnRetiredArg::Substitute => sluice::model_policy::OnRetired::Substitute,
            OnRetiredArg::Allow => sluice::model_policy::OnRetired::Allow,
        },
        ledger: match a.ledger.as_deref() {
            None => sluice::spend::LedgerSetting::Default,
            Some(v) => sluice::spend::LedgerSetting::parse(v)
                .map_err(|e| Fail(exit::USAGE, format!("--ledger: {e}")))?,
        },
        budget_per_day: dollars("--budget-per-day", &a.budget_per_day)?,
        budget_per_month: dollars("--budget-per-month", &a.budget_per_month)?,
        upstream_refunds: a.upstream_refunds,
        prompt_count: a.prompt_count,
        burst: a.burst,
        ..Default::default()
    };
    if let Some(path) = &a.keys_file {
        settings.keys.push(KeySpec::KeysFile(path.clone()));
    }
    if let Some(path) = &a.config {
        let file = sluice_gateway::GatewayConfig::load(path).map_err(|e| Fail(exit::USAGE, e))?;
        if !settings.keys.is_empty() && (!file.upstreams.is_empty() || !file.keys.is_empty()) {
            return Err(Fail(
                exit::USAGE,
                format!("--api-key-env / --keys-file and the keys of {} both name keys: give them in one place", path.display()),
            ));
        }
        settings.upstreams = file.upstreams;
        settings.base_url = file.base_url;
        if settings.keys.is_empty() {
            settings.keys = file.keys;
        }
    }
    let mut cfg = sluice_batch::BatchConfig::new(&a.input);
    cfg.output = a.output.clone();
    cfg.errors = a.errors.clone();
    cfg.state_dir = a.state_dir.clone();
    cfg.window = usize::try_from(a.concurrency).unwrap_or(usize::MAX);
    cfg.budget = dollars("--budget-usd", &a.budget_usd)?;
    cfg.max_attempts = a.max_attempts.max(1);
    cfg.summary_json = a.summary_json.clone();
    cfg.models_check_every = Some(a.models_check_every).filter(|d| !d.is_zero());
    cfg.progress = match a.progress {
        ProgressArg::Auto => sluice_batch::ProgressMode::Auto,
        ProgressArg::Bar => sluice_batch::ProgressMode::Bar,
        ProgressArg::Log => sluice_batch::ProgressMode::Log,
        ProgressArg::Off => sluice_batch::ProgressMode::Off,
    };
    // An input that cannot be read is a usage error (exit 2), found before anything starts.
    if let Err(e) = std::fs::File::open(&a.input) {
        return Err(Fail(
            exit::USAGE,
            format!("cannot read the input {}: {e}", a.input.display()),
        ));
    }
    // The built-in simulator, when asked for, lives as long as the job.
    let mut _mock = None;
    if let Some(Upstream::Mock) = a.upstream {
        let mock = builtin_mock().await?;
        settings.base_url = Some(mock.base_url());
        settings.keys = vec![KeySpec::Value("sk-sluice-mock-local".into())];
        _mock = Some(mock);
    }
    let report = sluice_batch::run(&settings, cfg, stop_signals())
        .await
        .map_err(|e| match e {
            sluice_batch::BatchError::Duplicates(m) | sluice_batch::BatchError::Config(m) => {
                Fail(exit::USAGE, m)
            }
            other => Fail(exit::FAILURE, other.to_string()),
        })?;
    print!("{}", report.summary.table());
    match report.outcome {
        sluice_batch::Outcome::Completed => Ok(()),
        sluice_batch::Outcome::BudgetReached => Err(Fail(
            exit::BUDGET,
            match &a.budget_usd {
                Some(b) => format!(
                    "budget reached: {} spent of {b} (or a per-day/month budget); raise it and run the same command again to continue",
                    sluice::pricing::dollars(report.summary.job_cost_nanos),
                ),
                None => format!(
                    "a per-day/month budget is reached ({} spent by this job in all); run the same command again in the next period or with a higher limit",
                    sluice::pricing::dollars(report.summary.job_cost_nanos),
                ),
            },
        )),
        sluice_batch::Outcome::Interrupted => Err(Fail(
            exit::INTERRUPTED,
            "interrupted: run the same command again to resume where it stopped".into(),
        )),
        sluice_batch::Outcome::Stopped(reason) => Err(Fail(
            exit::STOPPED,
            format!("{reason}\nfix it and run the same command again to continue"),
        )),
    }
}

async fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    upstream: Option<Upstream>,
) -> Result<(), Fail> {
    let mut cfg = match &config {
        Some(p) => sluice_gateway::GatewayConfig::load(p).map_err(|e| Fail(exit::USAGE, e))?,
        None => sluice_gateway::GatewayConfig::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    let mut _mock = None;
    if let Some(Upstream::Mock) = upstream {
        let mock = builtin_mock().await?;
        cfg.base_url = Some(mock.base_url());
        cfg.keys = vec![sluice_gateway::KeySpec::Value(
            "sk-sluice-mock-local".into(),
        )];
        _mock = Some(mock);
    }
    let cfg_listen_port = cfg.listen;
    let gateway = sluice_gateway::Gateway::start(cfg)
        .await
        .map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    // First line of stdout, so scripts can read the address when port 0 was asked for.
    println!("sluice serve listening on {}", gateway.base_url());
    if let Some(path) = config {
        tokio::spawn(gateway.reloader().watch_file(path, cfg_listen_port));
    }
    wait_signal().await;
    eprintln!("sluice: draining requests in flight");
    gateway.shutdown().await;
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Fail> {
    match cli.command {
        Command::Mock {
            listen,
            config,
            demo,
        } => {
            let scenario = load_scenario(config.as_ref()).map_err(|e| Fail(exit::USAGE, e))?;
            if demo {
                let listen = SocketAddr::from(([127, 0, 0, 1], 0));
                let mock = sluice_mock::MockServer::bind(listen, scenario)
                    .await
                    .map_err(|e| format!("cannot listen: {e}"))?;
                let out = sluice_mock::demo::exchange(mock.addr())
                    .await
                    .map_err(|e| format!("demo request failed: {e}"))?;
                println!("{out}");
                return Ok(());
            }
            let mock = sluice_mock::MockServer::bind(listen, scenario)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            // First line of stdout, so scripts can read the address when port 0 was asked for.
            println!("sluice mock listening on {}", mock.base_url());
            tracing::info!(base_url = %mock.base_url(), "mock ready; Ctrl-C to stop");
            wait_signal().await;
            mock.shutdown();
            Ok(())
        }
        Command::Serve {
            config,
            listen,
            upstream,
        } => serve(config, listen, upstream).await,
        Command::Models {
            registry,
            json,
            command,
        } => match command {
            None => models_cmd::list(registry.as_ref(), json),
            Some(ModelsCommand::Check {
                files,
                warn_days,
                base_url,
                api_key_env,
                strict,
            }) => {
                let upstream = base_url.map(|url| models_cmd::Upstream {
                    base_url: url,
                    api_key_env,
                });
                let opts = models_cmd::CheckOptions {
                    warn_days,
                    json,
                    strict,
                    upstream,
                };
                models_cmd::check(&files, registry.as_ref(), opts).await
            }
            Some(ModelsCommand::Update { from }) => models_cmd::update(&from, json).await,
        },
        Command::Spend(args) => spend_cmd::spend(args).await,
        // Written whole from memory: clap_complete panics on a failed write (a closed pipe).
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut text);
            print_bytes(&text)
        }
        // The plain version: the page is committed (packaging/), and must not change per commit.
        Command::Manpage => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command().version(env!("CARGO_PKG_VERSION")))
                .render(&mut text)
                .map_err(|e| Fail(exit::FAILURE, format!("cannot render the man page: {e}")))?;
            print_bytes(&text)
        }
        Command::Doctor(args) => {
            let code = doctor_cmd::doctor(args).await?;
            if code == 0 {
                Ok(())
            } else {
                Err(Fail(code, String::new()))
            }
        }
        Command::Batch { command } => match command {
            BatchCommand::Run(a) => batch_run(a).await,
            BatchCommand::Status {
                input,
                state_dir,
                output,
                errors,
            } => {
                let mut cfg = sluice_batch::BatchConfig::new(input);
                cfg.state_dir = state_dir;
                cfg.output = output;
                cfg.errors = errors;
                let text =
                    sluice_batch::status(&cfg).map_err(|e| Fail(exit::USAGE, e.to_string()))?;
                print!("{text}");
                Ok(())
            }
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The gateway logs a line per request; the other commands only what needs a look.
    let default = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logs(&cli.log_format, default);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("sluice: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

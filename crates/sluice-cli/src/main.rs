//! The `sluice` binary: parses the command line and hands off to the faces. No logic of its own.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A traffic controller for OpenAI-compatible LLM APIs"
)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

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
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
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

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Mock {
            listen,
            config,
            demo,
        } => {
            let scenario = load_scenario(config.as_ref())?;
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
            let _ = tokio::signal::ctrl_c().await;
            mock.shutdown();
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
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
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(2)
        }
    }
}

//! The `azflow` binary: command line, logging and exit codes only.

use std::process::ExitCode;

use azflow::{
    EXIT_CONFIG,
    commands::{self, run::RunError, topology::TopologyCmdError},
    config::{Cli, Command},
    logging,
};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match logging::LogFormat::parse(&cli.log_format) {
        Ok(format) => logging::init(format),
        Err(e) => return config_error(&e.to_string()),
    }
    match cli.command {
        Command::Topology(args) => match commands::topology::run(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(TopologyCmdError::Config(msg)) => config_error(&msg),
            Err(e) => {
                eprintln!("azflow: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let cfg = match args.validate() {
                Ok(c) => c,
                Err(e) => return config_error(&e.to_string()),
            };
            block_on(commands::run::run(cfg))
        }
        Command::Check(args) => match commands::check::run(&args) {
            Ok(report) => {
                print!("{report}");
                if report.all_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(commands::check::CheckError::Config(msg)) => config_error(&msg),
            Err(e) => {
                eprintln!("azflow: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Top(args) => match commands::top::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(commands::top::TopError::Config(msg)) => config_error(&msg),
            Err(e) => {
                eprintln!("azflow: top: {e}");
                ExitCode::FAILURE
            }
        },
        Command::BenchBaseline { cgroup } => block_on(commands::bench_baseline::run(&cgroup)),
        Command::Uninstall { pin_path } => match azflow::ebpf::pin::remove_all(&pin_path) {
            Ok(removed) if removed.is_empty() => {
                println!("nothing pinned under {}", pin_path.display());
                ExitCode::SUCCESS
            }
            Ok(removed) => {
                for d in removed {
                    println!("removed {} (its links detached, its maps freed)", d.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("azflow: uninstall: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn block_on(task: impl Future<Output = Result<(), RunError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("azflow: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(msg)) => config_error(&msg),
        Err(e) => {
            eprintln!("azflow: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(msg: &str) -> ExitCode {
    // One line per problem, each already naming its file/flag and the fix.
    for line in msg.lines() {
        eprintln!("azflow: {line}");
    }
    ExitCode::from(EXIT_CONFIG)
}

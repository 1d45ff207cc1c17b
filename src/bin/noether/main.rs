//! The `noether` command: parses arguments, dispatches to one library entry point per subcommand, prints.
//! Exit codes: 0 = ok, 1 = a check failed (e.g. a `reproduce` claim not met), 2 = error.

/// `println!` that returns a broken pipe as an error (main turns it into exit code 0) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

mod analyze;
mod arch;
mod common;
mod data;
mod progress;
mod reproduce;
mod sharpness;
mod sweep;
mod symmetries;
mod teleport;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Noise geometry of SGD under parameter symmetries.
#[derive(Parser, Debug)]
#[command(name = "noether", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: common::Global,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only add noise
enum Command {
    /// Train a model from a TOML config (GD, SGD, SDE or gradient flow) and log every symmetry's charge.
    #[command(allow_negative_numbers = true)]
    Train(train::Args),
    /// List the exact exponential symmetries of a model file, with their charges.
    #[command(allow_negative_numbers = true)]
    Symmetries(symmetries::Args),
    /// Per-symmetry noise diagnostics: Tr[AΣ], predicted dC/dt, noise equilibria.
    #[command(allow_negative_numbers = true)]
    Analyze(analyze::Args),
    /// Move a model to its noise equilibrium without changing the function it computes.
    #[command(allow_negative_numbers = true)]
    Teleport(teleport::Args),
    /// Hessian top eigenvalues and trace, optionally along a symmetry orbit.
    #[command(allow_negative_numbers = true)]
    Sharpness(sharpness::Args),
    /// Reproduce the paper's experiments with figures and a pass/fail report.
    #[command(allow_negative_numbers = true)]
    Reproduce(reproduce::Args),
    /// Convert data files: `noether data idx IMAGES LABELS --out D.safetensors` (MNIST-format IDX).
    Data(data::Args),
    /// Run a grid of training runs from a sweep file, locally or as a SLURM job array; `status`, `collect`.
    Sweep(sweep::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(a, &cli.global),
        Command::Symmetries(a) => symmetries::run(a, &cli.global),
        Command::Analyze(a) => analyze::run(a, &cli.global),
        Command::Teleport(a) => teleport::run(a, &cli.global),
        Command::Sharpness(a) => sharpness::run(a, &cli.global),
        Command::Reproduce(a) => reproduce::run(a, &cli.global),
        Command::Data(a) => data::run(a),
        Command::Sweep(a) => sweep::run(a, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let broken = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(broken)
                    || c.downcast_ref::<serde_json::Error>()
                        .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
                    || matches!(c.downcast_ref::<noether::Error>(), Some(noether::Error::Io { reason, .. }) if broken(reason))
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

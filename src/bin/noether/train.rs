//! `noether train` (being built).

use crate::common::Global;
use std::process::ExitCode;

/// Arguments of `noether train`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`noether train` is not built yet")
}

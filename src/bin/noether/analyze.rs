//! `noether analyze` (being built).

use crate::common::Global;
use std::process::ExitCode;

/// Arguments of `noether analyze`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`noether analyze` is not built yet")
}

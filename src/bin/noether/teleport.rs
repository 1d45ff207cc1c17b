//! `noether teleport` (being built).

use crate::common::Global;
use std::process::ExitCode;

/// Arguments of `noether teleport`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`noether teleport` is not built yet")
}

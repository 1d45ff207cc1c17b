//! The one progress-bar factory: bars go to stderr, hidden when stderr is not a terminal or under --quiet.
#![allow(dead_code)]

use crate::common::{Global, Style};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar of `len` steps with a message, styled per `--style`.
pub fn bar(len: u64, msg: impl Into<String>, global: &Global) -> ProgressBar {
    let hidden = global.quiet
        || global.style == Style::None
        || (global.style == Style::Auto && !std::io::stderr().is_terminal());
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if hidden { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    let template = match global.style {
        Style::Basic => "{msg} [{bar:40}] {pos}/{len}",
        _ => "{msg} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} ({per_sec}, eta {eta})",
    };
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.into());
    pb
}

//! The README's console blocks are real: every `$ noether …` command in them runs (in a scratch folder that
//! sees the repository's `tests/` and `examples/`), exits 0, and prints every output line the README shows, in
//! order (`...` elides lines; run times and round-off-level numbers below 1e-12 are not compared).

use crate::cli::{stderr, tmp};
use std::path::Path;
use std::process::Command;

/// One README command and the output lines shown under it.
struct Example {
    args: Vec<String>,
    shown: Vec<String>,
}

/// The `$ noether …` commands of every ```console block, with `\` continuations joined.
fn examples(readme: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_console = false;
    let mut continued = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            let words: Vec<String> = cmd.split_whitespace().map(String::from).collect();
            assert_eq!(words[0], "noether", "README console commands run noether: {line}");
            out.push(Example { args: words[1..].to_vec(), shown: vec![] });
            continued = line.ends_with('\\');
        } else if continued {
            out.last_mut().unwrap().args.extend(line.split_whitespace().map(String::from));
            continued = line.ends_with('\\');
        } else if let Some(e) = out.last_mut() {
            e.shown.push(line.to_string());
        }
        if let Some(e) = out.last_mut() {
            e.args.retain(|a| a != "\\");
        }
    }
    out
}

/// Tokens of a line, with run times (`0.08 s`) and round-off-level numbers masked.
fn normalise(line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let core = w.trim_end_matches([',', ';', ')']);
            let v: Option<f64> = core.parse().ok();
            if v.is_some() && words.get(i + 1).is_some_and(|n| n.starts_with("s:")) {
                "<time>".to_string()
            } else if v.is_some_and(|v| v != 0.0 && v.abs() < 1e-12) {
                "<round-off>".to_string()
            } else {
                w.to_string()
            }
        })
        .collect()
}

#[test]
fn readme_console_blocks_match_real_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let examples = examples(&readme);
    assert!(examples.len() >= 5, "found {} README commands", examples.len());
    let dir = tmp("readme");
    for sub in ["tests", "examples"] {
        std::os::unix::fs::symlink(root.join(sub), dir.join(sub)).unwrap();
    }
    for e in &examples {
        let o = Command::new(env!("CARGO_BIN_EXE_noether")).args(&e.args).current_dir(&dir).output().unwrap();
        assert!(
            o.status.success(),
            "noether {}: exit {:?}\n{}",
            e.args.join(" "),
            o.status.code(),
            stderr(&o)
        );
        let actual: Vec<Vec<String>> = String::from_utf8_lossy(&o.stdout).lines().map(normalise).collect();
        let mut at = 0;
        for shown in e.shown.iter().filter(|l| l.trim() != "..." && !l.trim().is_empty()) {
            let want = normalise(shown);
            match actual[at..].iter().position(|a| *a == want) {
                Some(i) => at += i + 1,
                None => panic!(
                    "noether {}: the README shows\n  {shown}\nbut the run printed (from line {at}):\n{}",
                    e.args.join(" "),
                    String::from_utf8_lossy(&o.stdout)
                ),
            }
        }
    }
}

//! `noether reproduce --quick` end to end: the report, figures and per-run configs are written, and the
//! configs an experiment writes run again with `noether train`.

use crate::cli::{noether, stderr, tmp};
use std::path::Path;

fn assert_experiment_folder(dir: &Path) {
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    let ext =
        |e: &str| files.iter().filter(|p| p.extension().is_some_and(|x| x == e)).cloned().collect::<Vec<_>>();
    let (png, svg) = (ext("png"), ext("svg"));
    assert!(
        !png.is_empty() && png.len() == svg.len(),
        "{}: {} png, {} svg",
        dir.display(),
        png.len(),
        svg.len()
    );
    for p in png.iter().chain(&svg) {
        assert!(std::fs::metadata(p).unwrap().len() > 1000, "{} is (nearly) empty", p.display());
    }
    assert!(
        dir.join("metrics.csv").exists() && dir.join("summary.json").exists(),
        "{}: no metrics/summary",
        dir.display()
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(!summary["results"]["checks"].as_array().unwrap().is_empty(), "{}: no checks", dir.display());
}

/// The configs an experiment wrote are complete `noether train` configs.
fn assert_configs_run(dir: &Path) {
    let tomls: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(!tomls.is_empty(), "{}: no run configs", dir.display());
    let out = dir.join("rerun");
    let o = noether(&[
        "train",
        &tomls[0].display().to_string(),
        "--steps",
        "3",
        "--out",
        &out.display().to_string(),
        "-q",
    ]);
    assert!(o.status.success(), "{}: {}", tomls[0].display(), stderr(&o));
}

#[test]
fn quick_noether_flow_and_fig2_end_to_end_pass_and_write_the_report() {
    let out = tmp("reproduce-fig2");
    let names = ["noether-flow", "fig2-matrix-factorization"];
    let mut args = vec!["reproduce", "--quick", "--jobs", "2", "-q", "--out"];
    let o_s = out.display().to_string();
    args.push(&o_s);
    args.extend(names);
    let o = noether(&args);
    assert!(matches!(o.status.code(), Some(0) | Some(1)), "exit {:?}: {}", o.status.code(), stderr(&o));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for n in names {
        assert!(md.contains(n) && html.contains(n), "{n} missing from the report");
        assert_experiment_folder(&out.join(n));
        assert_configs_run(&out.join(n));
    }
    assert!(html.contains("data:image/png;base64,"), "figures are embedded in the HTML report");
    assert!(!md.contains("FAIL"));
}

#[test]
fn unknown_experiment_is_a_clear_error() {
    let o = noether(&[
        "reproduce",
        "fig99",
        "--quick",
        "-q",
        "--out",
        &tmp("reproduce-bad").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("fig2-matrix-factorization"),
        "the error lists the experiments: {}",
        stderr(&o)
    );
}

/// Every other experiment in quick mode: runs without error (exit 0, or 1 when a claim is not met) and writes its
/// section, figures and metrics. Relaxation end to end: its three
/// limits η/S → 0 (κ ratio, λ∞, λ's spread) are in its summary, each as an order row and a limit row, and pass.
#[test]
fn quick_smoke_test_of_every_experiment() {
    let out = tmp("reproduce-all");
    let list = noether(&["reproduce", "--list"]);
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|n| n != "fig2-matrix-factorization" && n != "noether-flow")
        .collect();
    assert!(!names.is_empty());
    let o_s = out.display().to_string();
    let mut args: Vec<&str> = vec!["reproduce", "--quick", "--jobs", "2", "-q", "--out", &o_s];
    args.extend(names.iter().map(|s| s.as_str()));
    let o = noether(&args);
    assert!(matches!(o.status.code(), Some(0) | Some(1)), "exit {:?}: {}", o.status.code(), stderr(&o));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!md.contains("stopped with an error"), "{md}");
    for n in &names {
        assert!(md.contains(n.as_str()), "{n} missing from the report");
        assert_experiment_folder(&out.join(n));
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("relaxation/summary.json")).unwrap()).unwrap();
    let checks = summary["results"]["checks"].as_array().unwrap();
    let limits: Vec<&serde_json::Value> =
        checks.iter().filter(|c| c["claim"].as_str().unwrap().contains("→ 0")).collect();
    assert_eq!(limits.len(), 6, "three limits, an order row and a limit row each: {checks:#?}");
    for c in &limits {
        assert_eq!(c["outcome"], "pass", "{c:#}");
        assert!(!c["tests"].as_str().unwrap().is_empty(), "{c:#}");
    }
    let finite = checks.iter().filter(|c| c["claim"].as_str().unwrap().starts_with("finite η/S")).count();
    assert!(finite >= 5, "the finite-η/S rows are reported: {checks:#?}");
    assert!(
        checks
            .iter()
            .filter(|c| c["claim"].as_str().unwrap().starts_with("finite η/S"))
            .all(|c| c["outcome"] == "measured"),
        "finite-η/S rows are measurements, not checks"
    );
    assert!(out.join("relaxation/limits.png").exists() && out.join("relaxation/limits.svg").exists());
}

//! The README's quick start can be copied as it is: its Rust blocks hide no lines (rustdoc's
//! `# ` lines show in the README as they are), and it says which crates and features to add
//! for what the blocks use. (The blocks themselves run as doc tests: see `src/lib.rs`.)

use std::path::Path;

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of `text` whose info string is `lang`, each as its lines.
fn blocks<'a>(text: &'a str, lang: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) if info.trim() == lang => current = Some(Vec::new()),
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some(block), None) => block.push(line),
            _ => {}
        }
    }
    out
}

#[test]
fn rust_blocks_hide_no_lines() {
    let text = readme();
    let rust = blocks(&text, "rust");
    assert!(!rust.is_empty(), "the README has a quick start in Rust");
    for block in &rust {
        for line in block {
            assert!(
                !(line.starts_with("# ") || *line == "#"),
                "a hidden doc-test line shows in the README as it is: {line:?}"
            );
        }
    }
}

#[test]
fn the_quick_start_says_what_to_add() {
    let text = readme();
    let sh: Vec<&str> = blocks(&text, "sh").into_iter().flatten().collect();
    let add = |krate: &str| -> Vec<String> {
        sh.iter()
            .filter_map(|l| l.split('#').next())
            .filter(|l| l.trim_start().starts_with(&format!("cargo add {krate}")))
            .flat_map(|l| {
                l.split_once("--features")
                    .map(|(_, f)| {
                        f.split(|c: char| c == ',' || c.is_whitespace())
                            .filter(|f| !f.is_empty())
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    };
    assert!(
        sh.iter()
            .any(|l| l.trim_start().starts_with("cargo add qupid")),
        "a `cargo add qupid` line"
    );
    let rust = blocks(&text, "rust");
    let code: Vec<&str> = rust.iter().flatten().copied().collect();
    let tokio = add("tokio");
    if code.iter().any(|l| l.contains("#[tokio::main]")) {
        for feature in ["macros", "rt-multi-thread"] {
            assert!(
                tokio.iter().any(|f| f == feature),
                "#[tokio::main] needs tokio's {feature} feature: {tokio:?}"
            );
        }
    }
    // Every ledger a block names needs its feature on the qupid line that adds it.
    for (ledger, feature) in [
        ("SqliteLedger", "sqlite"),
        ("RedisLedger", "redis"),
        ("PostgresLedger", "postgres"),
    ] {
        if code.iter().any(|l| l.contains(ledger)) {
            let qupid = add("qupid");
            assert!(
                qupid.iter().any(|f| f == feature || f == "full"),
                "{ledger} needs qupid's {feature} feature: {qupid:?}"
            );
        }
    }
}

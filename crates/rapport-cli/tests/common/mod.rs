//! What the command-line test files share: running the binary and reading what it wrote.
#![allow(dead_code)] // each test file uses its own part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `rapport --workspace ws args…` with no key from the environment.
pub fn rapport(ws: &Path, args: &[&str]) -> Output {
    rapport_with(ws, args, &[])
}

/// As [`rapport`], with extra environment variables.
pub fn rapport_with(ws: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .env_remove("RAPPORT_KEY")
        .env_remove("RAPPORT_ENGINE")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every file and folder under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Writes `text` as `dir/name`, making the folder if needed.
pub fn write(dir: &Path, name: &str, text: impl AsRef<str>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text.as_ref()).unwrap();
}

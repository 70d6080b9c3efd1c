//! Build script of sluice-bench: records the git commit the binary is built
//! from in `SLUICE_BENCH_BUILD_COMMIT` (empty when git or the repository is
//! not available). The JSON summary falls back to it when `git rev-parse
//! HEAD` cannot run at run time (a binary copied to another machine).
//!
//! Cargo reruns this script when HEAD or the current branch's ref changes,
//! so the recorded commit is never older than the tree that was compiled.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A path git names (`--git-path`), made absolute.
fn git_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git(dir, &["rev-parse", "--git-path", name])?);
    Some(if path.is_absolute() {
        path
    } else {
        dir.join(path)
    })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git(&manifest_dir, &["rev-parse", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=SLUICE_BENCH_BUILD_COMMIT={commit}");
    // Watch only files that exist: Cargo reruns a script whose watched path
    // is missing on every build.
    let mut watched = Vec::new();
    watched.extend(git_path(&manifest_dir, "HEAD"));
    watched.extend(git_path(&manifest_dir, "packed-refs"));
    if let Some(branch) = git(&manifest_dir, &["symbolic-ref", "-q", "HEAD"])
        && let Some(reference) = git_path(&manifest_dir, &branch)
    {
        // A packed branch has no loose file until its next commit creates
        // one in this directory.
        watched.extend(if reference.exists() {
            Some(reference)
        } else {
            reference.parent().map(Path::to_path_buf)
        });
    }
    for path in watched.iter().filter(|path| path.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

//! The build script of both binaries (`build = "../ops/build/git_commit.rs"` in their
//! manifests): records the git commit the binary is built from in `FARMHAND_GIT_COMMIT`
//! for `--version`: the `FARMHAND_GIT_COMMIT` environment variable if set (container builds
//! have no `.git`), else `git rev-parse --short HEAD`, else "unknown". Only std, so it adds
//! no build dependency.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let commit = std::env::var("FARMHAND_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FARMHAND_GIT_COMMIT={}", commit.trim());
    println!("cargo:rerun-if-env-changed=FARMHAND_GIT_COMMIT");
    // Rebuild when HEAD moves: HEAD itself (branch switch), the branch's ref (commit) and
    // packed-refs (gc). Paths that do not exist are skipped: cargo would rerun every build.
    // (Cargo rebuilds when this script itself changes.)
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = git(&["rev-parse", "--git-path", name]).map(PathBuf::from) {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// The trimmed stdout of a successful `git` call.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

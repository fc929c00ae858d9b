//! The commit the binary is built from, for `sluice --version`: `SLUICE_BUILD_COMMIT` when set
//! (a build from a source archive), else `git rev-parse`, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_BUILD_COMMIT");
    let commit = std::env::var("SLUICE_BUILD_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            let c = git(&["rev-parse", "--short=12", "HEAD"])?;
            // Uncommitted changes to tracked files: say so, the commit alone would mislead.
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            Some(if dirty { format!("{c}-dirty") } else { c })
        })
        .unwrap_or_else(|| "unknown".to_string());
    // A new commit (or a checkout of another branch) rebuilds this; `git commit` moves HEAD's
    // ref, `git checkout` moves HEAD itself.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{r}");
        }
    }
    println!(
        "cargo:rustc-env=SLUICE_VERSION_LINE={} (commit {commit})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}

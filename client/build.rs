//! Links `telemetry-emit` as a static PIE on Linux with glibc (issue #18),
//! leaving every other binary as it is.
//!
//! A CLI runs the shim for every event, and a dynamically linked shim
//! spends most of its start-up in the dynamic loader before `main`
//! (loading libc and libgcc_s, relocating them and looking up their
//! symbols: 240,000 of its 280,000 instructions, 25 system calls and 30
//! page faults). Linked statically it starts with none of that. The shim
//! needs nothing from glibc that only works dynamically (no NSS, no
//! iconv, no dlopen).
//!
//! Rust links statically with `-C target-feature=+crt-static`, but that is
//! a flag for a whole build (the daemon, the tests) and cannot be set for
//! one binary from Cargo. So the shim gets the same result from its link
//! arguments alone: `-static-pie`, and a directory searched before the
//! system's where each library Rust names (`-lc`, `-lgcc_s`, `-lm`, ...)
//! is a linker script naming the static archive the compiler has (`libc.a`,
//! and `libgcc_eh.a` + `libgcc.a` for `libgcc_s`). Where something is
//! missing (no static glibc installed, a cross build, another OS), or with
//! `TELEMETRY_EMIT_LINK=dynamic`, the shim is linked like the rest.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to `dynamic` to link the shim like the other binaries.
const LINK_VAR: &str = "TELEMETRY_EMIT_LINK";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={LINK_VAR}");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    if var(LINK_VAR) == "dynamic" {
        return;
    }
    if var("TARGET") != var("HOST") {
        // The archives would have to come from the cross compiler.
        println!("cargo:warning=telemetry-emit is linked dynamically: static linking is set up for native builds only");
        return;
    }
    let dir = PathBuf::from(var("OUT_DIR")).join("static-libs");
    if let Err(why) = static_libs(&dir) {
        println!("cargo:warning=telemetry-emit is linked dynamically: {why}");
        return;
    }
    println!("cargo:rustc-link-arg-bin=telemetry-emit=-static-pie");
    println!(
        "cargo:rustc-link-arg-bin=telemetry-emit=-L{}",
        dir.display()
    );
}

/// Where the C compiler (the linker driver Rust uses on Linux) finds
/// `name`, if it has it.
fn find(name: &str) -> Result<PathBuf, String> {
    let out = Command::new("cc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Not found: cc prints the bare name back.
    if out.status.success() && path.is_absolute() && path.exists() {
        // Found again after a compiler or glibc upgrade moves it.
        println!("cargo:rerun-if-changed={}", path.display());
        Ok(path)
    } else {
        Err(format!(
            "cc has no {name} (install glibc's static libraries, e.g. libc6-dev, or set {LINK_VAR}=dynamic)"
        ))
    }
}

/// The linker scripts that make `-lNAME` find static archives.
fn static_libs(dir: &Path) -> Result<(), String> {
    // The start file of a static PIE: without it -static-pie cannot work.
    find("rcrt1.o")?;
    let libc = find("libc.a")?;
    let eh = find("libgcc_eh.a")?;
    let gcc = find("libgcc.a")?;
    let mut scripts = vec![
        // A group: GNU ld, unlike lld, needs libc and libgcc searched again
        // for what each needs from the other.
        (
            "libc.a".to_string(),
            format!("GROUP ( {} {} {} )", show(&libc), show(&eh), show(&gcc)),
        ),
        // The unwinder, which Rust's standard library links as libgcc_s.
        (
            "libgcc_s.a".to_string(),
            format!("INPUT ( {} {} )", show(&eh), show(&gcc)),
        ),
    ];
    // The rest Rust names (all but libm empty since glibc 2.34).
    for lib in ["m", "rt", "pthread", "dl", "util"] {
        let name = format!("lib{lib}.a");
        let archive = find(&name)?;
        scripts.push((name, format!("INPUT ( {} )", show(&archive))));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, text) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, format!("{text}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// A path in a linker script (quoted: it may hold spaces).
fn show(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

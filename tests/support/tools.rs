//! Finding the external programs that the real-client tests drive: Feldera's CLI `fda`, and
//! Debian's `chromium` and `chromedriver`.
//!
//! Each finder returns the program's path, or `None` after printing one `SKIPPED: …` line that
//! says how to install it — unless `PIPELINE_GATEWAY_REQUIRE_TOOLS=1` (set by `.ci/run`), which
//! turns the skip into a panic, so CI can never pass by skipping. It only finds programs; it
//! neither installs nor runs them (`.ci/run` installs, the tests run).

use std::path::{Path, PathBuf};

/// Set to `1` to make a missing tool a failure instead of a skip.
pub const REQUIRE_TOOLS_ENV: &str = "PIPELINE_GATEWAY_REQUIRE_TOOLS";
/// Path of the `fda` binary to use, overriding the search.
pub const FDA_ENV: &str = "PIPELINE_GATEWAY_FDA";
/// How to install the `fda` version `.ci/run` installs (the last one that builds with this
/// toolchain).
const FDA_INSTALL: &str = "cargo install fda --version 0.349.0 --locked \
     --root \"$HOME/.cache/pipeline-gateway/fda\" (or run .ci/run)";
const CHROMIUM_INSTALL: &str = "apt-get install chromium chromium-driver (or run .ci/run)";

/// Feldera's CLI: `$PIPELINE_GATEWAY_FDA`, else `$HOME/.cache/pipeline-gateway/fda/bin/fda`
/// (where `.ci/run` installs it), else `fda` on `PATH`.
pub fn fda() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(FDA_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Some(path);
        }
        return missing(
            &format!("{FDA_ENV}={} is not an executable file", path.display()),
            FDA_INSTALL,
        );
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/pipeline-gateway/fda/bin/fda"))
        .filter(|path| is_executable(path));
    cached
        .or_else(|| on_path("fda"))
        .or_else(|| missing("Feldera's CLI `fda` is not installed", FDA_INSTALL))
}

/// Debian's Chromium: `/usr/bin/chromium`, else `chromium` on `PATH`.
pub fn chromium() -> Option<PathBuf> {
    system_program("chromium").or_else(|| missing("`chromium` is not installed", CHROMIUM_INSTALL))
}

/// Debian's ChromeDriver (package `chromium-driver`): `/usr/bin/chromedriver`, else
/// `chromedriver` on `PATH`.
pub fn chromedriver() -> Option<PathBuf> {
    system_program("chromedriver")
        .or_else(|| missing("`chromedriver` is not installed", CHROMIUM_INSTALL))
}

/// Whether a missing tool must fail the test.
pub fn tools_required() -> bool {
    std::env::var(REQUIRE_TOOLS_ENV).as_deref() == Ok("1")
}

fn system_program(name: &str) -> Option<PathBuf> {
    let usr_bin = Path::new("/usr/bin").join(name);
    if is_executable(&usr_bin) {
        return Some(usr_bin);
    }
    on_path(name)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Panics when tools are required; otherwise prints why the caller skips and returns `None`.
fn missing(problem: &str, install: &str) -> Option<PathBuf> {
    if tools_required() {
        panic!("{REQUIRE_TOOLS_ENV}=1 but {problem}: {install}");
    }
    eprintln!("SKIPPED: {problem}; install it with: {install}");
    None
}

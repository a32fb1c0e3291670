//! A real headless Chromium for tests, driven through the W3C WebDriver protocol: Debian's
//! `chromedriver` and `chromium`, spoken to with the `fantoccini` crate.
//!
//! [`Browser::start`] finds both programs (`support::tools`: a missing one skips the test with a
//! `SKIPPED:` line, or fails it under `PIPELINE_GATEWAY_REQUIRE_TOOLS=1`), starts `chromedriver`
//! on a free 127.0.0.1 port in a process group of its own, polls its `/status` until it says
//! ready (with a deadline), and opens one session of headless Chromium with a fresh, empty
//! profile and no background networking (the machine's network is closed; Chromium's own
//! update, sync and metrics connections would only be refused). As root Chromium needs
//! `--no-sandbox`.
//!
//! Nothing outlives a [`Browser`]: [`Browser::close`] ends the session (Chromium quits) and then
//! the driver; dropping it instead (a failed assertion, a panic) SIGKILLs the driver's whole
//! process group, which holds Chromium and all its helpers. Chromium's crash reporter leaves the
//! group but exits by itself when the browser is gone; it writes only under the temporary
//! profile directory (`XDG_CONFIG_HOME` points there), which is deleted with the `Browser`.
//!
//! Waiting is always polling with a deadline ([`Browser::wait_for_text`]), never a sleep.
//! Screenshots of a test go to [`artifacts_dir`] (`target/browser-artifacts/`, kept by CI).
//! This module knows nothing about the gateway: it only drives a browser.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::tools;

/// How long `chromedriver` may take to say it is ready.
const DRIVER_READY_DEADLINE: Duration = Duration::from_secs(20);
/// How often a condition is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Chromium's flags: headless, no sandbox (tests run as root), no GPU, and none of the
/// connections Chromium makes on its own (QUIC probes, component updates, sync, metrics).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
];

/// Where tests keep screenshots: `$CARGO_TARGET_DIR/browser-artifacts`, else
/// `target/browser-artifacts` in the checkout. Created if missing.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A `chromedriver` child process, leader of its own process group; the group is killed on drop.
struct Driver {
    /// `None` once killed and reaped: its pid (the group's id) may then belong to anyone.
    child: Option<Child>,
    /// The process group: the driver's pid, since it leads its group.
    group: i32,
    port: u16,
}

impl Driver {
    fn new(child: Child, port: u16) -> Driver {
        let group = i32::try_from(child.id()).expect("a pid fits in pid_t");
        Driver {
            child: Some(child),
            group,
            port,
        }
    }

    /// Whether the driver process has exited by itself (e.g. its port was taken).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))))
    }

    /// SIGKILLs the whole group (driver, Chromium, helpers) once, then reaps the driver.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) only sends a signal. The negative pid names the process group led by
        // our own child, which is not reaped yet (that happens below, once), so its pid — the
        // group's id — cannot have been reused by anyone else.
        unsafe {
            libc::kill(-self.group, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One headless Chromium session. See the module documentation.
pub struct Browser {
    client: Option<Client>,
    // Declared before `profile`: fields drop in order, so the processes die before their
    // profile directory is deleted.
    driver: Driver,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session; `None` when either program is
    /// missing and tools are not required. Panics when they are installed but do not start.
    pub async fn start() -> Option<Browser> {
        let chromium = tools::chromium()?;
        let chromedriver = tools::chromedriver()?;
        let profile = tempfile::Builder::new()
            .prefix("pipeline-gateway-chromium-")
            .tempdir()
            .expect("temporary profile directory");
        let driver = start_driver(&chromedriver, profile.path()).await;

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!(
            "--user-data-dir={}",
            profile.path().join("user-data").display()
        ));
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let url = format!("http://127.0.0.1:{}", driver.port);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver did not open a Chromium session: {e}\n{}",
                    driver_log(profile.path())
                )
            });
        Some(Browser {
            client: Some(client),
            driver,
            profile,
        })
    }

    /// The WebDriver client, for anything this wrapper does not offer.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until close()")
    }

    /// Navigates to `url` and waits for the page to load (its `load` event).
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// Polls the text of the first element matching `css` until `predicate` holds, and returns
    /// it. Past `deadline` it panics with the last text seen (or that no element matched) and
    /// saves a screenshot of the page to [`artifacts_dir`].
    pub async fn wait_for_text(
        &self,
        css: &str,
        predicate: impl Fn(&str) -> bool,
        deadline: Duration,
    ) -> String {
        let end = Instant::now() + deadline;
        let mut last = String::from("(no element matched)");
        loop {
            if let Ok(element) = self.client().find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if predicate(&text) {
                        return text;
                    }
                    last = format!("{text:?}");
                }
            }
            if Instant::now() >= end {
                let name: String = css
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let shot = artifacts_dir().join(format!("timeout-{name}.png"));
                self.screenshot(&shot).await;
                let body = match self.client().find(Locator::Css("body")).await {
                    Ok(body) => body.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!(
                    "`{css}` did not show the expected text within {deadline:?}; last: {last}\n\
                     page text:\n{body}\nscreenshot: {}",
                    shot.display()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Saves a PNG screenshot of the viewport to `path` (parent directories created).
    pub async fn screenshot(&self, path: &Path) {
        let png = self
            .client()
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// The process group holding `chromedriver`, Chromium and its helpers.
    pub fn process_group(&self) -> i32 {
        self.driver.group
    }

    /// The temporary directory holding the profile and the driver's log.
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// Ends the session (Chromium quits), then stops the driver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            // Chromium is killed with the driver's group anyway; a failed goodbye is no error.
            let _ = client.close().await;
        }
        self.driver.kill();
    }
}

/// Live (not zombie) processes that belong to process group `group` or whose command line
/// mentions `marker`, as `(pid, command line)`. Lets a test prove nothing outlived a browser.
pub fn live_processes(group: i32, marker: &Path) -> Vec<(u32, String)> {
    let marker = marker.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, pgrp, ...
        let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if *state == "Z" || *state == "X" {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
            .unwrap_or_default();
        if pgrp.parse::<i32>().ok() == Some(group) || cmdline.contains(marker.as_ref()) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Starts `chromedriver` on a free port (trying again if another process took the port first)
/// and waits until its `/status` says ready.
async fn start_driver(program: &Path, profile: &Path) -> Driver {
    let log = profile.join("chromedriver.log");
    for _ in 0..3 {
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            // Chromium's crash reporter and caches write under these: keep them in the profile.
            .env("XDG_CONFIG_HOME", profile.join("config"))
            .env("XDG_CACHE_HOME", profile.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut driver = Driver::new(child, port);
        if wait_until_ready(&mut driver).await {
            return driver;
        }
    }
    panic!(
        "chromedriver did not become ready on a free port within {DRIVER_READY_DEADLINE:?} \
         (3 tries)\n{}",
        driver_log(profile)
    );
}

/// Polls `GET /status` until `value.ready` is true; false when the driver exits (port taken)
/// or the deadline passes.
async fn wait_until_ready(driver: &mut Driver) -> bool {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(HttpConnector::new());
    let url: http::Uri = format!("http://127.0.0.1:{}/status", driver.port)
        .parse()
        .expect("status URL");
    let end = Instant::now() + DRIVER_READY_DEADLINE;
    while Instant::now() < end {
        if driver.exited() {
            return false;
        }
        if let Ok(response) = client.get(url.clone()).await {
            if let Ok(body) = response.into_body().collect().await {
                let status: Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
                if status["value"]["ready"] == true {
                    return true;
                }
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    false
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The end of the driver's log, for failure messages.
fn driver_log(profile: &Path) -> String {
    let text = std::fs::read_to_string(profile.join("chromedriver.log")).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("chromedriver log (last lines):\n{}", tail.join("\n"))
}

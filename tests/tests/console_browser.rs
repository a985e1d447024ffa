//! The operator console in a real browser: Debian's chromium, driven by npm
//! `playwright-core` (`console/test/browser.mjs`), against a whole stack (simulator, plane,
//! agent). Sign-in and a wrong key, the fleet and modems, an allocation appearing without
//! reload and its release, a modem going offline live, a marketplace key refused the admin
//! pages by the server, a seller key seeing its own boxes only, the cookie's flags, the CSP, no request off the loopback host, no
//! browser console error; screenshots land in `target/console-screenshots/`.
//!
//! Needs `chromium` and `console/node_modules` (`npm ci` in `console/`): without them the
//! test says so and passes, unless `FARMHAND_REQUIRE_BROWSER=1` (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{Stack, StackOptions};
use std::path::{Path, PathBuf};

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let console = root.join("console");
    let missing = [
        (
            PathBuf::from(CHROMIUM),
            "chromium (apt-get install chromium)",
        ),
        (
            console.join("node_modules/playwright-core"),
            "playwright-core (npm ci in console/)",
        ),
    ]
    .into_iter()
    .find(|(path, _)| !path.exists());
    if let Some((_, what)) = missing {
        let reason = format!("skipping the browser test: {what} is not installed");
        assert!(
            std::env::var("FARMHAND_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "{reason} (FARMHAND_REQUIRE_BROWSER=1)"
        );
        eprintln!("{reason}");
        return;
    }
    let stack = Stack::start(StackOptions {
        modems: 2,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(2).await.unwrap();
    let shots = root.join("target/console-screenshots");
    let out = tokio::process::Command::new("node")
        .arg(console.join("test/browser.mjs"))
        .current_dir(&console)
        .env("PLANE_URL", &stack.plane_url)
        .env("ADMIN_KEY", &stack.admin_key)
        .env("MARKET_KEY", &stack.market_key)
        .env("SIM_URL", stack.sim.base_url())
        .env("IMEI", &stack.sim.imeis()[0])
        .env("CHROMIUM", CHROMIUM)
        .env("SCREENSHOTS", &shots)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser checks failed:\n{stdout}\n{stderr}"
    );
    for shot in [
        "fleet.png",
        "allocations.png",
        "health.png",
        "fleet-phone.png",
        "seller.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot} was not written");
    }
}

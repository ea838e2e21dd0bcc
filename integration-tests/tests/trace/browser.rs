//! The `/diagnostics` page in a real browser (Debian's Chromium through ChromeDriver): a trace id
//! in the address opens its waterfall with the spans of all three services, and telemetry that
//! looks like markup stays text. Skips with a reason when the browser is missing, unless
//! `REQUIRE_BROWSER=1` (CI), where that is a failure. `DIAGNOSTICS_SCREENSHOT=<file.png>` saves
//! what the page shows, for the README.

use std::{path::PathBuf, process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{
    diagnostics::{ALL, Window},
    harness::http,
};

/// How long the page may take to show what the test waits for.
const PAGE_DEADLINE: Duration = Duration::from_secs(20);

/// Chromium and ChromeDriver, or why the test cannot run.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .find(|candidate| candidate.is_file())
            })
        })
    };
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("no chromium on PATH (Debian: apt-get install chromium chromium-driver)")?;
    let driver =
        find(&["chromedriver"]).ok_or("no chromedriver on PATH (Debian: chromium-driver)")?;
    Ok((chromium, driver))
}

/// A WebDriver session on a headless Chromium; the driver process is killed on drop.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start(chromium: &std::path::Path, driver: &std::path::Path) -> Self {
        let port = foundry::testing::closed_address().port();
        let driver = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"],
            }),
        );
        let address = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + PAGE_DEADLINE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&address)
                .await
            {
                Ok(client) => break client,
                Err(error) if std::time::Instant::now() >= deadline => {
                    panic!("no WebDriver session at {address}: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Self {
            client,
            _driver: driver,
        }
    }

    /// Opens `url` and waits until `script` (a JavaScript expression) is true.
    async fn open_until(&self, url: &str, script: &str) {
        self.client.goto(url).await.expect("the page loads");
        self.wait_until(script).await;
    }

    /// Waits until `script` (a JavaScript expression) is true on the page as it is.
    async fn wait_until(&self, script: &str) {
        let url = self.client.current_url().await.expect("a page is open");
        let deadline = std::time::Instant::now() + PAGE_DEADLINE;
        loop {
            let ready = self
                .client
                .execute(&format!("return Boolean({script});"), Vec::new())
                .await
                .expect("the script runs");
            if ready == Value::Bool(true) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{url}: `{script}` never held; the page shows:\n{}",
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the waterfall's row of the span named `name`, which shows its details.
    async fn select_span(&self, name: &str) {
        let script = format!(
            "[...document.querySelectorAll('#waterfall .row')].find(r => r.textContent.includes('{name}')).click();"
        );
        self.client
            .execute(&script, Vec::new())
            .await
            .expect("a span is selected");
    }

    async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(&format!("return {script};"), Vec::new())
            .await
            .expect("the script runs")
    }

    async fn text(&self, selector: &str) -> String {
        match self.client.find(Locator::Css(selector)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// Sends `export` (OTLP/JSON spans) to Apollo's receiver.
async fn store(window: &Window, export: &Value) {
    let stored = http()
        .post(format!("{}/v1/traces", window.serve.url))
        .header("content-type", "application/json")
        .body(export.to_string())
        .send()
        .await
        .expect("the export is sent");
    assert!(stored.status().is_success());
}

#[tokio::test]
async fn the_page_opens_a_trace_of_three_services_and_shows_markup_as_text() {
    let (chromium, driver) = match browser() {
        Ok(found) => found,
        Err(reason) if std::env::var("REQUIRE_BROWSER").is_ok_and(|value| value == "1") => {
            panic!("REQUIRE_BROWSER=1 but {reason}")
        }
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };

    // Arrange: a real plan's trace, and one whose telemetry is made of markup.
    let window = Window::start(&[("APOLLO_JAEGER_URL", "http://jaeger.example:16686")]).await;
    let trace_id = window.plan().await.trace_id();
    let spans = window.trace(&trace_id, &ALL).await.spans.len();
    let hostile = "ab".repeat(16);
    let markup = r#"<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>"#;
    let export = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": markup}}]},
        "scopeSpans": [{"spans": [{
            "traceId": hostile, "spanId": "ab".repeat(8), "name": markup, "kind": 2,
            "startTimeUnixNano": "1000000", "endTimeUnixNano": "2000000",
            "attributes": [{"key": markup, "value": {"stringValue": markup}}],
            "events": [{"name": markup, "timeUnixNano": "1500000"}],
            "status": {"code": 2, "message": markup},
        }]}],
    }]});
    store(&window, &export).await;
    let browser = Browser::start(&chromium, &driver).await;

    // Act
    browser
        .open_until(
            &format!("{}/diagnostics?trace={trace_id}", window.serve.url),
            &format!("document.querySelectorAll('#waterfall .row').length === {spans}"),
        )
        .await;

    // Assert
    let services = browser
        .eval("[...new Set([...document.querySelectorAll('#waterfall .row')].map(r => r.dataset.service))].sort()")
        .await;
    assert_eq!(services, json!(["apollo", "hermes", "sophia"]));
    assert!(browser.text("#waterfall").await.contains("apollo.command"));
    assert!(browser.text("#trace-title").await.contains(&trace_id));
    assert_eq!(
        browser
            .eval("document.querySelector('#trace-links a').href")
            .await,
        json!(format!("http://jaeger.example:16686/trace/{trace_id}"))
    );
    if let Some(path) = std::env::var_os("DIAGNOSTICS_SCREENSHOT") {
        // The RED table comes with the telemetry message of a fresh connection.
        browser
            .open_until(
                &format!("{}/diagnostics?trace={trace_id}", window.serve.url),
                "document.querySelectorAll('#red tbody tr').length > 0 && document.querySelectorAll('#waterfall .row').length > 0",
            )
            .await;
        browser.select_span("sophia.plan").await;
        let png = browser.client.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).expect("the screenshot is written");
    }

    // Act: the trace made of markup, its span selected so that its attributes show.
    browser
        .open_until(
            &format!("{}/diagnostics?trace={hostile}", window.serve.url),
            "document.querySelectorAll('#waterfall .row').length === 1",
        )
        .await;
    browser
        .client
        .find(Locator::Css("#waterfall .row"))
        .await
        .expect("the row")
        .click()
        .await
        .expect("the row is clicked");

    // Assert: every value is there as text, and none became an element or ran.
    let details = browser.text("#span-details").await;
    assert!(details.contains(markup), "{details}");
    assert!(browser.text("#waterfall").await.contains(markup));
    assert_eq!(
        browser
            .eval("document.querySelectorAll('img').length + document.querySelectorAll('script:not([src])').length")
            .await,
        json!(0)
    );
    assert_eq!(
        browser.eval("window.pwned === undefined").await,
        json!(true)
    );

    // Act: a trace whose spans' parents form loops (one its own parent, two each other's).
    let looped = "d1".repeat(16);
    let span = |id: &str, parent: &str| {
        json!({
            "traceId": looped, "spanId": id.repeat(8), "parentSpanId": parent.repeat(8),
            "name": format!("looped.{id}"), "kind": 2,
            "startTimeUnixNano": "1000000", "endTimeUnixNano": "2000000",
        })
    };
    let export = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sophia"}}]},
        "scopeSpans": [{"spans": [span("d2", "d2"), span("d3", "d4"), span("d4", "d3")]}],
    }]});
    store(&window, &export).await;

    // Assert: every span has its row.
    browser
        .open_until(
            &format!("{}/diagnostics?trace={looped}", window.serve.url),
            "document.querySelectorAll('#waterfall .row').length === 3",
        )
        .await;

    // Act: a span-name filter, then two traces live, only the second with a span of that name.
    browser
        .open_until(
            &format!("{}/diagnostics", window.serve.url),
            "document.querySelectorAll('#traces li').length > 0 && document.getElementById('connection').textContent === 'live'",
        )
        .await;
    browser
        .eval("(() => { const input = document.getElementById('filter-name'); input.value = 'filtered.span'; input.dispatchEvent(new Event('change')); return true; })()")
        .await;
    browser
        .wait_until("document.querySelectorAll('#traces li').length === 0")
        .await;
    let (other, named) = ("c1".repeat(16), "c2".repeat(16));
    for (trace_id, name) in [(&other, "other.span"), (&named, "filtered.span")] {
        let export = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sophia"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": trace_id, "spanId": "c3".repeat(8), "name": name, "kind": 2,
                "startTimeUnixNano": "1000000", "endTimeUnixNano": "2000000",
            }]}],
        }]});
        store(&window, &export).await;
    }

    // Assert: the list shows the trace with that span, and not the other one.
    browser
        .wait_until(&format!(
            "document.querySelector('#traces li[data-trace-id=\"{named}\"]') !== null"
        ))
        .await;
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('#traces li')].map(item => item.dataset.traceId)")
            .await,
        json!([named])
    );
    let _ = browser.client.close().await;
}

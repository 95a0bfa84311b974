//! The status page and the redirect in a real headless Chromium, against the
//! real roomgate binary and stand-in Jitsi servers on 127.0.0.1.
//!
//! One browser session serves the whole test: Chromium starts slowly on a
//! small machine. Screenshots go to `target/screenshots/` (a CI artifact).

use std::path::PathBuf;
use std::time::Duration;

use crate::support::webdriver::Browser;
use crate::support::*;
use serde_json::json;

/// Bound on anything the page should show by itself (probe detection plus
/// the page's 5 s refresh), generous for a busy machine.
const PAGE_BOUND: Duration = Duration::from_secs(40);

fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp; keep the pictures beside it.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("screenshots"))
        .expect("target dir");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

/// Saves a screenshot of the whole page at `width` CSS pixels.
async fn save_page(browser: &Browser, width: u32, name: &str) -> PathBuf {
    browser.resize(width, 900).await;
    // The window is taller than its viewport by the browser's own frame.
    let size = browser
        .eval(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
            json!([]),
        )
        .await;
    let page = size[0].as_u64().unwrap_or(900).clamp(400, 6000);
    let frame = size[1].as_u64().unwrap_or(0).min(400);
    browser.resize(width, (page + frame) as u32).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

fn routes_yaml(primary: &str, backup: &str) -> String {
    format!(
        "site:
  title: Chaosdorf VirtualSpace
  links:
    - {{ label: Jitsi-Handbuch, url: 'https://jitsi.github.io/handbook/' }}
  intro: Das Chaosdorf existiert auch im virtuellen Raum! Klicke auf einen der Links, um den jeweiligen Raum zu betreten.
  notice: Bitte beachte unsere Jitsiquette!
servers:
  primary:
    url: {primary}
    label: Chaosdorf
    check: {FAST_CHECK}
  backup:
    url: {backup}
    label: Freifunk München
    check: {FAST_CHECK}
defaults:
  servers: [primary, backup]
rooms:
  Lounge:
    description: Die Lounge ist der allgemeine Treffpunkt zum Ankommen, Quatschen und Kennenlernen.
    aliases: [treff]
  Hackcenter:
    description: Im Hackcenter finden die Gruppentreffen statt.
  Cave:
    description: Die Cave ist das Hinterzimmer für ausgelagerte Gespräche.
  Freitagsfoo:
    description: Falls mal der Jitsi-Server ausfällt, finden wir uns hier wieder.
    servers: [backup]
"
    )
}

/// Console entries that are errors.
fn errors(console: &[(String, String)]) -> Vec<String> {
    console
        .iter()
        .filter(|(level, _)| level == "SEVERE" || level == "ERROR")
        .map(|(level, msg)| format!("{level}: {msg}"))
        .collect()
}

/// WCAG 2 contrast ratios of the page's text against what is behind it;
/// returns the pairs below 4.5:1 (AA for normal text).
const LOW_CONTRAST: &str = r#"
function rgb(c) { var m = c.match(/[\d.]+/g).map(Number); return m.slice(0, 3).concat([m.length > 3 ? m[3] : 1]); }
function lum(c) {
  var v = c.slice(0, 3).map(function (x) { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
  return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
}
function background(el) {
  for (; el; el = el.parentElement) {
    var c = rgb(getComputedStyle(el).backgroundColor);
    if (c[3] > 0) return c;
  }
  return [255, 255, 255, 1];
}
var low = [];
var sel = 'h1, h2, h3, p, a, dt, dd, code, button, .badge, .notice, .alert, .ok, footer, .target, .aliases, .desc';
document.querySelectorAll(sel).forEach(function (el) {
  if (!el.offsetParent || !el.textContent.trim()) return;
  var fg = rgb(getComputedStyle(el).color), bg = background(el);
  var a = lum(fg), b = lum(bg);
  var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) low.push(el.tagName + '.' + el.className + ' "' + el.textContent.trim().slice(0, 30) + '" ' + ratio.toFixed(2));
});
return low;
"#;

const STATE_OF: &str = "return document.querySelector('[data-server=\"' + arguments[0] + '\"] [data-field=\"state\"]').textContent;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_and_redirects_in_chromium() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "routes.yaml",
        &routes_yaml(&primary.url(), &backup.url()),
    );
    let gate = GateProcess::start(&config, dir.path()).await;
    wait_state(&gate.url("/status.json"), "primary", "up", PAGE_BOUND).await;
    wait_state(&gate.url("/status.json"), "backup", "up", PAGE_BOUND).await;

    // The page renders every room and server, with style and script at work
    // (both are only allowed by their CSP hashes).
    browser.goto(&gate.url("/")).await;
    browser
        .eval(
            "window.__csp = []; window.__loaded = 'once';
             document.addEventListener('securitypolicyviolation',
               function (e) { window.__csp.push(e.violatedDirective + ' ' + e.blockedURI); });",
            json!([]),
        )
        .await;
    let page = browser
        .eval(
            "return {
               title: document.title,
               rooms: Array.from(document.querySelectorAll('[data-room]')).map(e => e.dataset.room),
               servers: Array.from(document.querySelectorAll('[data-server]')).map(e => e.dataset.server),
               states: Array.from(document.querySelectorAll('[data-server] [data-field=state]')).map(e => e.textContent),
               short: document.querySelector('[data-room=Lounge] [data-field=short]').textContent,
               copyVisible: !document.querySelector('[data-room=Lounge] [data-field=copy]').hidden,
               qr: document.querySelector('[data-room=Lounge] a[href*=qr]').href,
               alertHidden: document.getElementById('alert').hidden,
               allUpShown: !document.getElementById('all-up').hidden,
               cardRadius: getComputedStyle(document.querySelector('.card')).borderTopLeftRadius,
               landmarks: ['header', 'main', 'footer'].every(t => document.querySelector(t)),
               h1: document.querySelector('h1').textContent,
             };",
            json!([]),
        )
        .await;
    assert_eq!(page["title"], "Chaosdorf VirtualSpace", "{page}");
    assert_eq!(page["h1"], "Chaosdorf VirtualSpace", "{page}");
    assert_eq!(
        page["rooms"],
        json!(["Lounge", "Hackcenter", "Cave", "Freitagsfoo"]),
        "{page}"
    );
    assert_eq!(page["servers"], json!(["primary", "backup"]), "{page}");
    assert_eq!(page["states"], json!(["up", "up"]), "{page}");
    assert_eq!(page["short"], gate.url("/Lounge"), "{page}");
    assert_eq!(page["copyVisible"], true, "the script did not run: {page}");
    assert_eq!(page["qr"], gate.url("/_/qr/Lounge.svg"), "{page}");
    assert_eq!(page["alertHidden"], true, "{page}");
    assert_eq!(page["allUpShown"], true, "{page}");
    assert_eq!(
        page["cardRadius"], "8px",
        "the stylesheet did not apply: {page}"
    );
    assert_eq!(page["landmarks"], true, "{page}");
    let words = browser
        .eval(
            "return {
               lang: document.documentElement.lang,
               rooms: document.getElementById('rooms-heading').textContent,
               copy: document.querySelector('[data-room=Lounge] [data-field=copy]').textContent,
               link: document.querySelector('header .links a').href,
             };",
            json!([]),
        )
        .await;
    assert_eq!(
        words,
        json!({ "lang": "en", "rooms": "Rooms", "copy": "Copy link",
                "link": "https://jitsi.github.io/handbook/" })
    );

    // Keyboard: the first Tab reaches the skip link, which shows itself
    // with a focus outline.
    browser.press("\u{E004}").await;
    let focus = browser
        .eval(
            "var el = document.activeElement, s = getComputedStyle(el), r = el.getBoundingClientRect();
             return { cls: el.className, outline: s.outlineStyle, visible: r.left >= 0 && r.width > 0 };",
            json!([]),
        )
        .await;
    assert_eq!(focus["cls"], "skip", "{focus}");
    assert_eq!(focus["outline"], "solid", "{focus}");
    assert_eq!(focus["visible"], true, "{focus}");
    browser
        .eval("document.activeElement.blur();", json!([]))
        .await;

    let low = browser.eval(LOW_CONTRAST, json!([])).await;
    assert_eq!(low, json!([]), "low contrast (light)");
    save_page(&browser, 1280, "status-page.png").await;
    save_page(&browser, 390, "status-page-phone.png").await;
    let dark = json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] });
    browser.cdp("Emulation.setEmulatedMedia", dark).await;
    let low = browser.eval(LOW_CONTRAST, json!([])).await;
    assert_eq!(low, json!([]), "low contrast (dark)");
    save_page(&browser, 390, "status-page-phone-dark.png").await;
    let light = json!({ "features": [{ "name": "prefers-color-scheme", "value": "light" }] });
    browser.cdp("Emulation.setEmulatedMedia", light).await;
    browser.resize(1280, 900).await;

    // A server goes down: the page shows it without a reload.
    primary.set_mode(Mode::BoshDown).await;
    let shown = browser
        .wait_until(
            "var s = document.querySelector('[data-server=primary] [data-field=state]');
             var b = document.querySelector('[data-room=Lounge] [data-field=backup]');
             return s.textContent === 'down' && !document.getElementById('alert').hidden && !b.hidden
               && document.getElementById('all-up').hidden;",
            PAGE_BOUND,
        )
        .await;
    let state = browser.eval(STATE_OF, json!(["primary"])).await;
    assert!(
        shown,
        "the page did not show primary down; state shown: {state}"
    );
    let after = browser
        .eval(
            "return {
               loaded: window.__loaded,
               alert: document.getElementById('alert').textContent,
               lounge: document.querySelector('[data-room=Lounge] [data-field=server]').textContent,
               target: document.querySelector('[data-room=Lounge] [data-field=target]').href,
               error: document.querySelector('[data-server=primary] [data-field=error]').textContent,
               csp: window.__csp,
             };",
            json!([]),
        )
        .await;
    assert_eq!(after["loaded"], "once", "the page was reloaded: {after}");
    let alert = after["alert"].as_str().unwrap_or("");
    assert!(alert.contains("Chaosdorf"), "{after}");
    assert!(alert.contains("Rooms with a backup server"), "{after}");
    assert_eq!(after["lounge"], "Freifunk München", "{after}");
    assert_eq!(
        after["target"],
        format!("{}/Lounge", backup.url()),
        "{after}"
    );
    assert!(
        after["error"].as_str().unwrap_or("").contains("502"),
        "{after}"
    );
    assert_eq!(after["csp"], json!([]), "CSP violations: {after}");
    let low = browser.eval(LOW_CONTRAST, json!([])).await;
    assert_eq!(low, json!([]), "low contrast (server down)");
    save_page(&browser, 1280, "status-page-server-down.png").await;
    browser.resize(1280, 900).await;

    // Nothing went wrong in the console: no errors, no CSP reports.
    let console = browser.console().await;
    let errs = errors(&console);
    assert!(errs.is_empty(), "console errors: {errs:#?}");
    assert!(
        !console
            .iter()
            .any(|(_, m)| m.contains("Content Security Policy")),
        "CSP messages: {console:#?}"
    );

    // The redirect keeps the user's fragment: Chromium lands on the backup
    // (the primary is down) with `#config...` intact.
    browser
        .goto(&gate.url("/Lounge#config.startWithVideoMuted=true"))
        .await;
    assert_eq!(
        browser.current_url().await,
        format!("{}/Lounge#config.startWithVideoMuted=true", backup.url())
    );
    // And on the primary once it is back.
    primary.set_mode(Mode::Healthy).await;
    wait_state(&gate.url("/status.json"), "primary", "up", PAGE_BOUND).await;
    browser
        .goto(&gate.url("/treff#config.startWithVideoMuted=true"))
        .await;
    assert_eq!(
        browser.current_url().await,
        format!("{}/Lounge#config.startWithVideoMuted=true", primary.url())
    );

    // The gateway goes away: the open page keeps what it knew and says
    // that it is stale.
    browser.goto(&gate.url("/")).await;
    let mut gate = gate;
    gate.signal("TERM");
    assert!(
        gate.wait_exit(PAGE_BOUND).await.is_some(),
        "roomgate did not stop"
    );
    let stale = browser
        .wait_until(
            "var u = document.getElementById('updated');
             return u.classList.contains('stale') && u.textContent.indexOf('did not answer') >= 0
               && document.querySelectorAll('[data-room]').length === 4;",
            PAGE_BOUND,
        )
        .await;
    assert!(stale, "the page did not mark itself stale");
    browser.quit().await;
}

/// What the German page shows: its own words, read by a script.
const GERMAN_WORDS: &str = "return {
  lang: document.documentElement.lang,
  rooms: document.getElementById('rooms-heading').textContent,
  servers: document.getElementById('servers-heading').textContent,
  copy: document.querySelector('[data-room=Lounge] [data-field=copy]').textContent,
  qr: document.querySelector('[data-room=Lounge] a[href*=qr]').textContent,
  goesTo: document.querySelector('[data-room=Lounge] .now').firstChild.textContent.trim(),
  states: Array.from(document.querySelectorAll('[data-server] [data-field=state]')).map(e => e.textContent),
  allUp: document.getElementById('all-up').textContent,
  updated: document.getElementById('updated').textContent,
  lastCheck: document.querySelector('[data-server=primary] [data-field=last-check]').textContent,
  link: document.querySelector('header .links a').textContent,
};";

/// The same page with `site.lang: de`: every word of the page's own is
/// German, also those the script writes when it refreshes, and the banner
/// says the truth when a room has no server left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_german() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let primary = StandIn::http(Mode::Healthy).await;
    let backup = StandIn::http(Mode::Healthy).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        routes_yaml(&primary.url(), &backup.url()).replacen("site:\n", "site:\n  lang: de\n", 1);
    let config = write_file(dir.path(), "routes.yaml", &yaml);
    let gate = GateProcess::start(&config, dir.path()).await;
    wait_state(&gate.url("/status.json"), "primary", "up", PAGE_BOUND).await;
    wait_state(&gate.url("/status.json"), "backup", "up", PAGE_BOUND).await;

    browser.goto(&gate.url("/")).await;
    let words = browser.eval(GERMAN_WORDS, json!([])).await;
    assert_eq!(words["lang"], "de", "{words}");
    assert_eq!(words["rooms"], "Räume", "{words}");
    assert_eq!(words["servers"], "Server", "{words}");
    assert_eq!(words["copy"], "Link kopieren", "{words}");
    assert_eq!(words["qr"], "QR-Code", "{words}");
    assert_eq!(words["goesTo"], "Führt zu:", "{words}");
    assert_eq!(
        words["states"],
        json!(["erreichbar", "erreichbar"]),
        "{words}"
    );
    assert_eq!(words["allUp"], "Alle Server sind erreichbar.", "{words}");
    assert_eq!(words["link"], "Jitsi-Handbuch", "{words}");
    // Rendered by roomgate: "vor 0 s" or so.
    let last_check = words["lastCheck"].as_str().unwrap_or("");
    assert!(last_check.starts_with("vor "), "{words}");

    // After a refresh from status.json the script wrote the footer's time,
    // in German too (it said "gerade eben" until then).
    let refreshed = browser
        .wait_until(
            "return /^vor \\d+ (s|min)$/.test(document.getElementById('updated').textContent);",
            PAGE_BOUND,
        )
        .await;
    let words = browser.eval(GERMAN_WORDS, json!([])).await;
    assert!(
        refreshed,
        "no German relative time after a refresh: {words}"
    );
    assert!(
        words["lastCheck"]
            .as_str()
            .unwrap_or("")
            .starts_with("vor "),
        "{words}"
    );
    save_page(&browser, 1280, "status-page-de.png").await;

    // One server down: its rooms move, the banner says so.
    primary.set_mode(Mode::BoshDown).await;
    let moved = browser
        .wait_until(
            "var a = document.getElementById('alert');
             return !a.hidden && !a.querySelector('[data-field=moved]').hidden
               && a.querySelector('[data-field=stranded]').hidden
               && document.querySelector('[data-server=primary] [data-field=state]').textContent === 'ausgefallen';",
            PAGE_BOUND,
        )
        .await;
    let alert = browser
        .eval(
            "return document.getElementById('alert').textContent;",
            json!([]),
        )
        .await;
    assert!(moved, "the banner did not show the move: {alert}");
    assert!(
        alert
            .as_str()
            .unwrap_or("")
            .contains("Server ausgefallen: Chaosdorf."),
        "{alert}"
    );

    // Every server down: no room has a backup left, and the banner does not
    // promise one; it names the rooms instead.
    backup.set_mode(Mode::BoshDown).await;
    let stranded = browser
        .wait_until(
            "var a = document.getElementById('alert');
             return a.querySelector('[data-field=moved]').hidden
               && !a.querySelector('[data-field=stranded]').hidden
               && a.querySelector('[data-field=down-list]').textContent === 'Chaosdorf, Freifunk München';",
            PAGE_BOUND,
        )
        .await;
    let shown = browser
        .eval(
            "var a = document.getElementById('alert');
             return Array.from(a.childNodes).filter(n => !n.hidden).map(n => n.textContent).join('').replace(/\\s+/g, ' ').trim();",
            json!([]),
        )
        .await;
    assert!(stranded, "the banner still promised a backup: {shown}");
    assert_eq!(
        shown,
        "Server ausgefallen: Chaosdorf, Freifunk München. \
         Kein Server erreichbar für: Lounge, Hackcenter, Cave, Freitagsfoo.",
    );
    save_page(&browser, 1280, "status-page-de-all-down.png").await;
    // The same, rendered by roomgate rather than the script.
    browser.goto(&gate.url("/")).await;
    let reloaded = browser
        .eval(
            "var a = document.getElementById('alert');
             return [a.querySelector('[data-field=moved]').hidden, a.querySelector('[data-field=stranded]').hidden];",
            json!([]),
        )
        .await;
    assert_eq!(reloaded, json!([true, false]));

    let errs = errors(&browser.console().await);
    assert!(errs.is_empty(), "console errors: {errs:#?}");

    // The 404 page speaks German as well.
    browser.goto(&gate.url("/Nirgendwo")).await;
    let not_found = browser
        .eval(
            "return [document.documentElement.lang, document.querySelector('h1').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(not_found, json!(["de", "Diesen Raum gibt es nicht"]));
    browser.quit().await;
}

//! The graphical web client (R20): plain HTML, CSS and JavaScript (ES modules under
//! `assets/web/js/`, no build step) embedded in the binary and served on the HTTP listener
//! at `/`. The page speaks the native protocol over the WebSocket at `/ws` like any other
//! client; nothing here touches the service.
//!
//! Two libraries are vendored under `assets/web/vendor/` (`scripts/vendor-web.sh`:
//! markdown-it and DOMPurify, pinned versions): served at their versioned names with
//! long-lived caching, since a name's content never changes.
//!
//! Every response carries strict security headers: the Content-Security-Policy allows
//! scripts, styles and images from this origin only and connections to this origin
//! (including its WebSocket), and forbids framing, plugins and inline code.

use std::borrow::Cow;

use axum::extract::Path;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

const INDEX_HTML: &str = include_str!("../assets/web/index.html");
const APP_CSS: &str = include_str!("../assets/web/app.css");
const ICON_SVG: &str = include_str!("../assets/web/icon.svg");

/// The installable app (issue 15): the web app manifest, the service worker, the offline
/// screen it shows when the server cannot be reached, and the app icons (PNGs made from
/// `icon.svg` by `scripts/web-icons.sh`).
const MANIFEST: &str = include_str!("../assets/web/manifest.webmanifest");
const SERVICE_WORKER: &str = include_str!("../assets/web/sw.js");
const OFFLINE_HTML: &str = include_str!("../assets/web/offline.html");
const OFFLINE_JS: &str = include_str!("../assets/web/offline.js");
const ICONS: &[(&str, &[u8])] = &[
    ("icon-192.png", include_bytes!("../assets/web/icon-192.png")),
    ("icon-512.png", include_bytes!("../assets/web/icon-512.png")),
    (
        "icon-maskable-512.png",
        include_bytes!("../assets/web/icon-maskable-512.png"),
    ),
];

/// Where the service worker has its cache's version written in.
const SHELL_VERSION_MARK: &str = "__SALON_SHELL_VERSION__";

/// The web client's ES modules (`assets/web/js/`), by the name they are served at
/// (`/js/NAME`); `index.html` loads `main.js`, which imports the rest. No build step: the
/// browser resolves the imports, each a relative `./NAME.js`.
const MODULES: &[(&str, &str)] = &[
    ("admin.js", include_str!("../assets/web/js/admin.js")),
    ("auth.js", include_str!("../assets/web/js/auth.js")),
    ("channels.js", include_str!("../assets/web/js/channels.js")),
    ("compose.js", include_str!("../assets/web/js/compose.js")),
    (
        "conversation.js",
        include_str!("../assets/web/js/conversation.js"),
    ),
    ("dom.js", include_str!("../assets/web/js/dom.js")),
    ("drafts.js", include_str!("../assets/web/js/drafts.js")),
    ("events.js", include_str!("../assets/web/js/events.js")),
    ("files.js", include_str!("../assets/web/js/files.js")),
    ("format.js", include_str!("../assets/web/js/format.js")),
    ("layout.js", include_str!("../assets/web/js/layout.js")),
    ("main.js", include_str!("../assets/web/js/main.js")),
    ("markdown.js", include_str!("../assets/web/js/markdown.js")),
    (
        "messaging.js",
        include_str!("../assets/web/js/messaging.js"),
    ),
    ("net.js", include_str!("../assets/web/js/net.js")),
    ("notify.js", include_str!("../assets/web/js/notify.js")),
    ("people.js", include_str!("../assets/web/js/people.js")),
    ("pwa.js", include_str!("../assets/web/js/pwa.js")),
    (
        "readstate.js",
        include_str!("../assets/web/js/readstate.js"),
    ),
    ("rooms.js", include_str!("../assets/web/js/rooms.js")),
    ("search.js", include_str!("../assets/web/js/search.js")),
    ("session.js", include_str!("../assets/web/js/session.js")),
    ("state.js", include_str!("../assets/web/js/state.js")),
    ("thread.js", include_str!("../assets/web/js/thread.js")),
    ("toast.js", include_str!("../assets/web/js/toast.js")),
    ("typing.js", include_str!("../assets/web/js/typing.js")),
];

/// The interface's icons (`assets/web/icons/`), by the name they are served at
/// (`/icons/NAME`): app.css draws each as a mask over the text colour (`.icon-NAME`).
const UI_ICONS: &[(&str, &str)] = &[
    ("bell.svg", include_str!("../assets/web/icons/bell.svg")),
    ("clip.svg", include_str!("../assets/web/icons/clip.svg")),
    ("file.svg", include_str!("../assets/web/icons/file.svg")),
    ("lock.svg", include_str!("../assets/web/icons/lock.svg")),
    ("pencil.svg", include_str!("../assets/web/icons/pencil.svg")),
    ("reply.svg", include_str!("../assets/web/icons/reply.svg")),
    ("search.svg", include_str!("../assets/web/icons/search.svg")),
    ("smile.svg", include_str!("../assets/web/icons/smile.svg")),
    ("trash.svg", include_str!("../assets/web/icons/trash.svg")),
];

/// The vendored libraries, by the name they are served at (`/vendor/NAME`). The version is
/// part of the name, so a response may be cached for a year.
const VENDOR: &[(&str, &str)] = &[
    (
        "markdown-it-15.0.3.min.js",
        include_str!("../assets/web/vendor/markdown-it-15.0.3.min.js"),
    ),
    (
        "purify-3.4.18.min.js",
        include_str!("../assets/web/vendor/purify-3.4.18.min.js"),
    ),
];

/// The web client's routes; merged into the HTTP router next to `/ws`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/js/{name}", get(module))
        .route("/app.css", get(app_css))
        .route("/icon.svg", get(icon_svg))
        .route("/icons/{name}", get(ui_icon))
        .route("/vendor/{name}", get(vendor))
        .route("/manifest.webmanifest", get(manifest))
        .route("/sw.js", get(service_worker))
        .route("/offline.html", get(offline_html))
        .route("/offline.js", get(offline_js))
        .route("/icon-192.png", get(icon_png))
        .route("/icon-512.png", get(icon_png))
        .route("/icon-maskable-512.png", get(icon_png))
}

async fn vendor(headers: HeaderMap, Path(name): Path<String>) -> Response {
    match VENDOR.iter().find(|(n, _)| *n == name) {
        Some((_, body)) => {
            let mut response = asset(
                &headers,
                "text/javascript; charset=utf-8",
                Cow::Borrowed(body),
            );
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn index(headers: HeaderMap) -> Response {
    asset(
        &headers,
        "text/html; charset=utf-8",
        body("index.html", INDEX_HTML),
    )
}

/// Asset `name` of `table` (served from `dir/` of the web directory), or a 404.
fn from_table(
    headers: &HeaderMap,
    table: &[(&str, &'static str)],
    dir: &str,
    name: &str,
    content_type: &'static str,
) -> Response {
    match table.iter().find(|(n, _)| *n == name) {
        Some((n, embedded)) => asset(headers, content_type, body(&format!("{dir}/{n}"), embedded)),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn module(headers: HeaderMap, Path(name): Path<String>) -> Response {
    let kind = "text/javascript; charset=utf-8";
    from_table(&headers, MODULES, "js", &name, kind)
}

async fn app_css(headers: HeaderMap) -> Response {
    asset(
        &headers,
        "text/css; charset=utf-8",
        body("app.css", APP_CSS),
    )
}

async fn icon_svg(headers: HeaderMap) -> Response {
    asset(&headers, "image/svg+xml", body("icon.svg", ICON_SVG))
}

async fn ui_icon(headers: HeaderMap, Path(name): Path<String>) -> Response {
    from_table(&headers, UI_ICONS, "icons", &name, "image/svg+xml")
}

async fn manifest(headers: HeaderMap) -> Response {
    let text = body("manifest.webmanifest", MANIFEST);
    asset(&headers, "application/manifest+json", text)
}

/// The service worker, with the version of the offline screen it caches written in: a
/// digest of the screen's files and of the worker itself, so that a build that changes
/// any of them is a new worker, which replaces the cached copies.
async fn service_worker(headers: HeaderMap) -> Response {
    let worker = body("sw.js", SERVICE_WORKER);
    let mut digest = Sha256::new();
    for part in [
        worker.as_ref(),
        body("offline.html", OFFLINE_HTML).as_ref(),
        body("offline.js", OFFLINE_JS).as_ref(),
        body("app.css", APP_CSS).as_ref(),
        body("icon.svg", ICON_SVG).as_ref(),
    ] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    let version: String = digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let worker = worker.replace(SHELL_VERSION_MARK, &version);
    asset(
        &headers,
        "text/javascript; charset=utf-8",
        Cow::Owned(worker),
    )
}

async fn offline_html(headers: HeaderMap) -> Response {
    let text = body("offline.html", OFFLINE_HTML);
    asset(&headers, "text/html; charset=utf-8", text)
}

async fn offline_js(headers: HeaderMap) -> Response {
    let text = body("offline.js", OFFLINE_JS);
    asset(&headers, "text/javascript; charset=utf-8", text)
}

async fn icon_png(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let name = uri.path().trim_start_matches('/');
    let Some((_, png)) = ICONS.iter().find(|(n, _)| *n == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = (StatusCode::OK, *png).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in security_headers(&headers) {
        out.insert(name, value);
    }
    response
}

/// For developing the web client only: when `SALON_WEB_DIR` names a directory (the
/// source's `crates/server/assets/web`), the assets are read from it at each request
/// instead of the copies built into the binary, so an edit shows at the next reload with
/// no rebuild. Only the names in this file's tables are read (`relative` never comes from
/// the request), and a file missing there falls back to the built-in copy.
fn web_dir() -> Option<&'static std::path::Path> {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("SALON_WEB_DIR").map(std::path::PathBuf::from)?;
        tracing::warn!(dir = %dir.display(), "SALON_WEB_DIR is set: serving the web client from this directory (development only)");
        Some(dir)
    })
    .as_deref()
}

/// An asset's text: the built-in copy, or the development directory's (see [`web_dir`]).
fn body(relative: &str, embedded: &'static str) -> Cow<'static, str> {
    match web_dir().map(|dir| std::fs::read_to_string(dir.join(relative))) {
        Some(Ok(text)) => Cow::Owned(text),
        _ => Cow::Borrowed(embedded),
    }
}

fn asset(request: &HeaderMap, content_type: &'static str, body: Cow<'static, str>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary: always revalidate rather than serve stale code.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in security_headers(request) {
        headers.insert(name, value);
    }
    response
}

/// The security headers of every web client response.
fn security_headers(request: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let csp = content_security_policy(request.get(header::HOST));
    let csp =
        HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static(BASE_CSP_FALLBACK));
    vec![
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
        ),
    ]
}

const BASE_CSP_FALLBACK: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob:; connect-src 'self'; manifest-src 'self'; worker-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `img-src blob:` is for the favicon with the unread count, drawn on a canvas by the page
/// (a `blob:` URL can only be made by a script of this origin).
///
/// `'self'` covers the page's own WebSocket in current browsers (CSP level 3); older ones
/// need the `ws:`/`wss:` origin spelled out, which is taken from the `Host` header only
/// when it is a plain `host[:port]`.
fn content_security_policy(host: Option<&HeaderValue>) -> String {
    let host = host
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_plain_host(h));
    let connect = match host {
        Some(h) => format!("connect-src 'self' ws://{h} wss://{h}"),
        None => "connect-src 'self'".to_owned(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; {connect}; \
         manifest-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// A host name, IPv4 address or bracketed IPv6 address, with an optional port: nothing
/// that could end a CSP directive or smuggle in another source.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_exactly_the_vendored_libraries_served() {
        for (name, body) in VENDOR {
            assert!(
                INDEX_HTML.contains(&format!("<script src=\"/vendor/{name}\" defer></script>")),
                "index.html does not load {name}"
            );
            // The Content-Security-Policy has no 'unsafe-eval'.
            assert!(
                !body.contains("eval(") && !body.contains("new Function("),
                "{name}"
            );
        }
        assert_eq!(INDEX_HTML.matches("src=\"/vendor/").count(), VENDOR.len());
    }

    /// The names of the modules in `assets/web/js/`, read from the directory.
    fn module_files() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/web/js");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("assets/web/js")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".js"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_module_file_is_served_and_nothing_else() {
        let mut served: Vec<String> = MODULES.iter().map(|(n, _)| (*n).to_owned()).collect();
        served.sort();
        let files = module_files();
        assert!(!files.is_empty());
        assert_eq!(served, files, "MODULES and assets/web/js/ differ");
        for (name, body) in MODULES {
            // The Content-Security-Policy has no 'unsafe-eval'.
            assert!(
                !body.contains("eval(") && !body.contains("new Function("),
                "{name}"
            );
        }
    }

    #[test]
    fn every_import_names_a_served_module() {
        let mut imports = 0;
        for (name, body) in MODULES {
            for (at, _) in body.match_indices(" from '") {
                let rest = &body[at + " from '".len()..];
                let target = &rest[..rest.find('\'').expect("closing quote")];
                let target = target
                    .strip_prefix("./")
                    .unwrap_or_else(|| panic!("{name} imports {target}: not ./NAME.js"));
                assert!(
                    MODULES.iter().any(|(n, _)| *n == target),
                    "{name} imports {target}, which is not served"
                );
                imports += 1;
            }
            // Every import is a static `import ... from './x.js'` the test above can see.
            assert!(!body.contains("import("), "{name} has a dynamic import");
        }
        assert!(imports > MODULES.len(), "too few imports found");
    }

    #[test]
    fn the_page_loads_main_js_as_a_module() {
        assert!(INDEX_HTML.contains("<script type=\"module\" src=\"/js/main.js\"></script>"));
        assert_eq!(INDEX_HTML.matches("<script").count(), VENDOR.len() + 1);
        assert!(MODULES.iter().any(|(n, _)| *n == "main.js"));
    }

    /// app.css draws exactly the interface icons that are served, each an SVG.
    #[test]
    fn the_stylesheet_draws_the_served_icons() {
        let mut drawn: Vec<&str> = APP_CSS
            .split("mask-image: url(/icons/")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
            .collect();
        drawn.sort_unstable();
        drawn.dedup();
        let served: Vec<&str> = UI_ICONS.iter().map(|(n, _)| *n).collect();
        assert_eq!(drawn, served);
        for (name, svg) in UI_ICONS {
            assert!(
                svg.starts_with("<svg ") && svg.contains("viewBox="),
                "{name}"
            );
            assert!(!svg.contains("<script"), "{name}");
        }
    }

    /// The manifest names only icons that are served, at their real sizes, and the service
    /// worker caches only the offline screen's files, all served.
    #[test]
    fn the_installable_app_names_only_what_is_served() {
        let manifest: serde_json::Value = serde_json::from_str(MANIFEST).expect("manifest JSON");
        assert_eq!(manifest["start_url"], "/");
        assert_eq!(manifest["display"], "standalone");
        let icons = manifest["icons"].as_array().expect("icons");
        let mut pngs = 0;
        for icon in icons {
            let src = icon["src"].as_str().expect("src");
            let name = src.strip_prefix('/').expect("absolute");
            if name == "icon.svg" {
                continue;
            }
            let (_, png) = ICONS
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{src} is not served"));
            // The PNG header's width and height (IHDR) are the sizes the manifest says.
            assert_eq!(&png[1..4], b"PNG");
            let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
            let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
            assert_eq!(icon["sizes"], format!("{width}x{height}"), "{src}");
            pngs += 1;
        }
        assert_eq!(pngs, ICONS.len());
        assert!(icons
            .iter()
            .any(|i| i["sizes"] == "512x512" && i["purpose"] == "maskable"));

        assert_eq!(SERVICE_WORKER.matches(SHELL_VERSION_MARK).count(), 1);
        let shell = SERVICE_WORKER
            .lines()
            .find(|l| l.starts_with("const SHELL = "))
            .expect("SHELL");
        let listed: Vec<&str> = shell.split('\'').skip(1).step_by(2).collect();
        assert_eq!(
            listed,
            ["/offline.html", "/offline.js", "/app.css", "/icon.svg"]
        );
        assert!(!SERVICE_WORKER.contains("/api") || SERVICE_WORKER.contains("never API data"));
        assert!(!OFFLINE_HTML.contains("<script>") && !OFFLINE_HTML.contains("style="));
        assert!(INDEX_HTML.contains("<link rel=\"manifest\" href=\"/manifest.webmanifest\">"));
    }

    #[test]
    fn csp_names_the_websocket_origin_of_a_plain_host() {
        let host = HeaderValue::from_static("127.0.0.1:8080");
        let csp = content_security_policy(Some(&host));
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(csp.contains("script-src 'self';"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("worker-src 'self';"));
    }

    #[test]
    fn csp_ignores_a_host_header_that_is_not_a_plain_host() {
        let host = HeaderValue::from_static("evil.example; script-src *");
        let csp = content_security_policy(Some(&host));
        assert!(csp.contains("connect-src 'self';"));
        assert!(!csp.contains("evil"));
        assert!(content_security_policy(None).contains("connect-src 'self';"));
    }
}

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

const INDEX_HTML: &str = include_str!("../assets/web/index.html");
const APP_CSS: &str = include_str!("../assets/web/app.css");
const ICON_SVG: &str = include_str!("../assets/web/icon.svg");

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
        .route("/vendor/{name}", get(vendor))
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

async fn module(headers: HeaderMap, Path(name): Path<String>) -> Response {
    match MODULES.iter().find(|(n, _)| *n == name) {
        Some((n, embedded)) => asset(
            &headers,
            "text/javascript; charset=utf-8",
            body(&format!("js/{n}"), embedded),
        ),
        None => StatusCode::NOT_FOUND.into_response(),
    }
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
     img-src 'self' blob:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

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
         manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
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

    #[test]
    fn csp_names_the_websocket_origin_of_a_plain_host() {
        let host = HeaderValue::from_static("127.0.0.1:8080");
        let csp = content_security_policy(Some(&host));
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(csp.contains("script-src 'self';"));
        assert!(csp.contains("frame-ancestors 'none'"));
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

//! The HTTP listener: hyper serves each connection directly (not `axum::serve`) so that
//! reading a request's headers has a deadline (`http_header_timeout_ms`, against
//! slowloris), and the WebSocket handshake too; the router is axum's (`/ws`, `/healthz`,
//! `/readyz`, the web client). Also the plaintext listener that only redirects to HTTPS,
//! and what an origin is.
//!
//! **Origin.** `/ws` refuses (403, before the upgrade) a handshake whose `Origin` is
//! neither the server's own (the `Host` header's, with the scheme served) nor listed in
//! `allowed_origins`; a handshake without `Origin` (not a browser) is accepted.
//!
//! **Host.** Over plain HTTP, a request whose `Host` is not an IP address, `localhost`
//! or a name in `allowed_hosts` is refused (421) before any route: otherwise a web page
//! whose own name was pointed at this server (DNS rebinding) would be "the server's own
//! origin" and could use it from an employee's browser. With TLS the certificate already
//! refuses other names. `/healthz` and `/readyz` answer any name (probes).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::handshake::{tls_handshake, tls_timeout};
use super::ws::ws_upgrade;
use super::{Permit, Shared};

/// Most bytes an HTTP connection buffers (a request's headers must fit; hyper's default
/// is ~400 KiB).
const HTTP_MAX_BUFFER: usize = 64 * 1024;

/// How long an HTTP connection that is not a WebSocket may take to finish its requests
/// in progress once the server stops.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(super::files::routes())
        .merge(crate::web::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            refuse_other_hosts,
        ))
        .with_state(shared)
}

/// Refuses a plain HTTP request naming a host this server does not answer to (see the
/// module's "Host").
async fn refuse_other_hosts(
    State(shared): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz");
    // RFC 9112, 3.2: an HTTP/1.1 request without `Host`, or with more than one, is
    // answered 400 (a proxy and this server could otherwise read different names).
    let hosts = request.headers().get_all(header::HOST).iter().count();
    let required = request.version() == axum::http::Version::HTTP_11;
    if !probe && (hosts > 1 || (hosts == 0 && required)) {
        return (
            StatusCode::BAD_REQUEST,
            "A request names its host in exactly one Host header.\n",
        )
            .into_response();
    }
    if shared.tls.is_none() && !probe {
        let allowed = &shared.service.config.allowed_hosts;
        // An HTTP/1.0 request without `Host` comes from no browser.
        let named = request
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or(""))
            .into_iter()
            .chain(request.uri().authority().map(|a| a.as_str()));
        for host in named {
            if !host_allowed(host, allowed) {
                tracing::debug!(host, "refused a request for another host name");
                let message = format!(
                    "This server does not answer to the name {:?}. If it is yours, add it \
                     to allowed_hosts in the server's configuration.\n",
                    host.chars().take(100).collect::<String>()
                );
                return (StatusCode::MISDIRECTED_REQUEST, message).into_response();
            }
        }
    }
    next.run(request).await
}

/// Whether a plain HTTP request's `Host` (`name[:port]`) names this server: an IP
/// address, `localhost` or a name under it (browsers resolve those to the machine
/// itself, never through DNS), or a name in `allowed` (case and a final dot ignored).
pub(super) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    let name = authority.host();
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || allowed
            .iter()
            .any(|a| a.trim_end_matches('.').eq_ignore_ascii_case(&name))
}

/// An address that names nothing: a JSON refusal under `/api/`, as the API's others.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/api/") {
        super::files::api_not_found()
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

/// How long `/readyz` waits for the database (capped by the database timeout).
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// `/readyz`: `200 ready` when the server is not shutting down and the database answers
/// a cheap query within [`READINESS_TIMEOUT`]; otherwise `503` with the reason.
async fn readyz(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    let service = &shared.service;
    if service.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    let limit = READINESS_TIMEOUT.min(
        Duration::from_millis(service.config.limits.database_timeout_ms)
            .max(Duration::from_millis(1)),
    );
    let probe = async {
        let _one_at_a_time = shared.readiness.lock().await;
        service.store.ping(limit).await
    };
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok(())) if !service.is_shutting_down() => (StatusCode::OK, "ready\n"),
        Ok(Ok(())) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness probe: the database did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// The connection's permit, in every request's extensions: `/ws` takes it into the
/// WebSocket session; otherwise it is dropped with the connection.
#[derive(Clone)]
pub(super) struct PermitSlot(pub(super) Arc<Mutex<Option<Permit>>>);

/// Whether the request came over TLS (in every request's extensions).
#[derive(Clone, Copy)]
pub(super) struct Secure(pub(super) bool);

/// An accepted HTTP connection: the TLS handshake first when TLS is on.
pub(super) async fn https_or_http(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Shared,
    permit: Permit,
    router: Router,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    match shared.tls.clone() {
        None => http_connection(stream, peer, shared, permit, router, stop, false).await,
        Some(tls) => {
            let message = "This port speaks HTTPS: use https:// (and wss:// for /ws).\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{message}",
                message.len()
            );
            let limit = tls_timeout(&shared);
            let Some(stream) =
                tls_handshake(stream, peer, &tls.http, limit, answer.as_bytes()).await
            else {
                return;
            };
            http_connection(stream, peer, shared, permit, router, stop, true).await
        }
    }
}

/// Serves one HTTP/1.1 connection until it closes, upgrades to a WebSocket, or the
/// server stops.
pub(super) async fn http_connection<S>(
    stream: S,
    peer: SocketAddr,
    shared: Shared,
    permit: Permit,
    router: Router,
    stop: CancellationToken,
    secure: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = PermitSlot(Arc::new(Mutex::new(Some(permit))));
    let inner = TowerToHyperService::new(router);
    let hsts = match shared.service.config.tls.hsts_max_age_secs {
        0 => None,
        age => HeaderValue::from_str(&format!("max-age={age}")).ok(),
    }
    .filter(|_| secure);
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            request.extensions_mut().insert(Secure(secure));
            let response = hyper::service::Service::call(&inner, request);
            let hsts = hsts.clone();
            async move {
                let mut response = response.await?;
                if let Some(hsts) = hsts {
                    response
                        .headers_mut()
                        .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    let timeout = Duration::from_millis(shared.service.config.limits.http_header_timeout_ms);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(HTTP_MAX_BUFFER)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            // Requests in progress finish; an idle keep-alive connection closes now.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(HTTP_SHUTDOWN_GRACE, connection).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}

/// The redirect listener's only answer: `308` to the same host and path over HTTPS.
pub(super) fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: axum::http::Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(host_without_port);
        let Some(host) = host else {
            return (
                StatusCode::BAD_REQUEST,
                "this address redirects to HTTPS; a Host header is needed\n",
            )
                .into_response();
        };
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        match HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
            Ok(location) => {
                let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
                response.headers_mut().insert(header::LOCATION, location);
                response
            }
            Err(_) => (StatusCode::BAD_REQUEST, "bad request\n").into_response(),
        }
    })
}

/// `host[:port]` → `host` (IPv6 in brackets kept), if it is a plain host name or address.
fn host_without_port(host: &str) -> Option<&str> {
    let valid = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    };
    let name = if host.starts_with('[') {
        &host[..host.find(']')? + 1]
    } else {
        host.split(':').next()?
    };
    valid(name).then_some(name)
}

/// `scheme://host[:port]`, lower-case, without the scheme's default port or a trailing
/// `/`; `None` if it is not such an origin (e.g. `null`, or one with a path).
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let name = host_without_port(rest)?;
    let port = &rest[name.len()..];
    if !(port.is_empty()
        || (port.len() > 1
            && port.starts_with(':')
            && port[1..].bytes().all(|b| b.is_ascii_digit())))
    {
        return None;
    }
    let port = if port == default_port { "" } else { port };
    Some(format!("{scheme}://{name}{port}"))
}

/// Whether a WebSocket handshake's `Origin` may open a session: the server's own origin
/// (`Host` with the scheme served) or one listed in `allowed_origins`.
pub(super) fn origin_allowed(
    origin: &HeaderValue,
    host: Option<&HeaderValue>,
    secure: bool,
    allowed: &[String],
) -> bool {
    let Some(origin) = origin.to_str().ok().and_then(normalize_origin) else {
        return false;
    };
    let scheme = if secure { "https" } else { "http" };
    let own = host
        .and_then(|h| h.to_str().ok())
        .and_then(|h| normalize_origin(&format!("{scheme}://{h}")));
    own.as_deref() == Some(origin.as_str())
        || allowed
            .iter()
            .any(|a| normalize_origin(a).as_deref() == Some(origin.as_str()))
}

//! The files HTTP API (issue 14), on the HTTP listener beside `/ws`:
//!
//! - `POST /api/files?name=…` stores the raw body as a file of the token's user;
//! - `GET /api/files/{id}` serves a file, `GET /api/files/{id}/preview` an image's
//!   thumbnail;
//! - `DELETE /api/files/{id}` removes an upload no message carries yet.
//!
//! Every request carries `Authorization: Bearer <session token>` (`Welcome.token`),
//! which a browser never sends on its own, so there is no cookie and no cross-site
//! request forgery to guard against. Who may read a file is checked on every request
//! (`Store::readable_file`); anyone else, like an unknown id, gets 404. Responses are
//! served so that nothing can run: `nosniff`, a CSP of `default-src 'none'; sandbox`,
//! and `Content-Disposition: attachment` for everything but image previews (thumbnails
//! the server made itself); a full-size image too is an attachment (the web client reads
//! it with the token into a `blob:` URL, where the header plays no part).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::Shared;
use crate::live::Identity;
use crate::service::UploadError;
use crate::store::{FileRow, PendingRemoval};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/files", post(upload).fallback(method_not_allowed))
        .route(
            "/api/files/{id}",
            get(download).delete(remove).fallback(method_not_allowed),
        )
        .route(
            "/api/files/{id}/preview",
            get(preview).fallback(method_not_allowed),
        )
}

/// A method the route does not serve, answered like every other refusal of the API.
async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "files are uploaded with POST /api/files, read with GET /api/files/{id} and \
         removed before a message carries them with DELETE /api/files/{id}",
    )
}

/// A path under `/api/` that names nothing.
pub(super) fn api_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "there is nothing at this address",
    )
}

/// Types of the previews served `inline` (the server made these bytes itself).
const INLINE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "code": code, "message": message.into() });
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The body is not read: the connection cannot carry another request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "there is no such file")
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the server cannot serve files right now; try again later",
    )
}

/// The user of the request's bearer token, or the response refusing it.
async fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Identity, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110, 11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty() && t.len() <= 256);
    let refused = || {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the session token as `Authorization: Bearer <token>`; this one is \
             missing, unknown or expired",
        )
    };
    let Some(token) = token else {
        return Err(refused());
    };
    match shared.service.user_by_token(token).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(refused()),
        Err(e) => {
            tracing::warn!(error = %e, "files: token look-up failed");
            Err(unavailable())
        }
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    #[serde(default)]
    name: Option<String>,
}

async fn upload(
    State(shared): State<Shared>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let me = match authenticate(&shared, &headers).await {
        Ok(me) => me,
        Err(refused) => return refused,
    };
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the query may hold one `name`, the file's name",
        );
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let service = &shared.service;
    let max = service.config.limits.upload_max_bytes;
    let result = match service.admit_upload(&me, announced).await {
        Ok(()) => {
            let name = query.name.as_deref().unwrap_or("");
            service.upload(&me, name, body.into_data_stream()).await
        }
        Err(e @ (UploadError::Quota { .. } | UploadError::TooManyPending { .. }))
            if announced.is_none_or(|n| n <= max) =>
        {
            let idle =
                std::time::Duration::from_millis(service.config.limits.upload_idle_timeout_ms);
            drain(body, max, idle, DRAIN_WAIT).await;
            Err(e)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(row) => {
            tracing::debug!(user = me.id, file = row.id, size = row.size, "file stored");
            let mut response =
                (StatusCode::CREATED, axum::Json(row.to_attachment())).into_response();
            response.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        Err(e) => upload_refused(e),
    }
}

/// How long a refused upload's body is read for, at most (see [`drain`]).
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops the body of an upload refused before it was read (a user's quota or
/// pending uploads; never one over the size limit, which is refused unread), at most
/// `max` bytes for at most `total` ([`DRAIN_WAIT`]), and no longer once the client sends
/// nothing for `idle` (`upload_idle_timeout_ms`), so that the client, still sending it,
/// reads the refusal: a connection closed with data unread is reset by the kernel, and a
/// browser then reports the connection lost instead of the answer.
async fn drain(body: Body, max: u64, idle: std::time::Duration, total: std::time::Duration) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    let _ = tokio::time::timeout(total, async {
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout(idle, stream.next()).await {
            read += chunk.len() as u64;
            if read > max {
                return;
            }
        }
    })
    .await;
}

fn upload_refused(e: UploadError) -> Response {
    let message = e.to_string();
    match e {
        UploadError::TooLarge { .. } => {
            error(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large", message)
        }
        UploadError::Quota { .. } => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "quota_exceeded",
            format!("{message}; delete messages with files to make room"),
        ),
        UploadError::TooManyPending { .. } => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_pending_uploads",
            message,
        ),
        UploadError::UnreadableImage => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_image",
            message,
        ),
        UploadError::Interrupted => error(StatusCode::BAD_REQUEST, "interrupted", message),
        UploadError::TooSlow { .. } => error(StatusCode::REQUEST_TIMEOUT, "too_slow", message),
        UploadError::StorageFull => {
            tracing::warn!("files: an upload was refused, the file storage is full");
            error(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the server's file storage is full; nothing was stored",
            )
        }
        UploadError::Io(e) => {
            tracing::warn!(error = %e, "files: an upload could not be stored");
            unavailable()
        }
        UploadError::Service(e) => {
            tracing::warn!(error = %e, "files: an upload could not be recorded");
            unavailable()
        }
    }
}

async fn download(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(shared, id, headers, false).await
}

async fn preview(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(shared, id, headers, true).await
}

/// Removes an upload of the token's user that no message carries yet (taken off a
/// message before it was sent): `204`; `409 file_attached` once a message carries it
/// (it goes with its messages); `404` for anything else, as for a file one cannot read.
async fn remove(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let me = match authenticate(&shared, &headers).await {
        Ok(me) => me,
        Err(refused) => return refused,
    };
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    match shared.service.remove_upload(&me, id).await {
        Ok(PendingRemoval::Removed(_)) => {
            tracing::debug!(user = me.id, file = id, "upload removed");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(PendingRemoval::Attached) => error(
            StatusCode::CONFLICT,
            "file_attached",
            "a message carries this file: it is removed when its messages are deleted",
        ),
        Ok(PendingRemoval::Unknown) => not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "files: an upload could not be removed");
            unavailable()
        }
    }
}

async fn serve(shared: Shared, id: String, headers: HeaderMap, preview: bool) -> Response {
    let me = match authenticate(&shared, &headers).await {
        Ok(me) => me,
        Err(refused) => return refused,
    };
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let row = match shared.service.store.readable_file(id, me.id).await {
        Ok(Some(row)) => row,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "files: look-up failed");
            return unavailable();
        }
    };
    let (sha, mime) = if preview {
        let Some(sha) = row.preview_sha256.clone() else {
            return not_found();
        };
        (sha, preview_type(&row))
    } else {
        (row.sha256.clone(), row.mime.clone())
    };
    let file = match shared.service.files.blobs.read(&sha).await {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!(error = %e, file = row.id, "files: a stored file cannot be read");
            return unavailable();
        }
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    let inline = preview && INLINE_TYPES.contains(&mime.as_str());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(length) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Ok(disposition) = HeaderValue::from_str(&content_disposition(&row, inline, preview)) {
        h.insert(header::CONTENT_DISPOSITION, disposition);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A preview's type: what `media::process` made (JPEG for a JPEG, PNG otherwise).
fn preview_type(row: &FileRow) -> String {
    if row.mime == "image/jpeg" {
        "image/jpeg".into()
    } else {
        "image/png".into()
    }
}

/// `inline` or `attachment`, with the name as RFC 6266 wants it: an ASCII fallback and
/// the UTF-8 name percent-encoded (RFC 8187).
fn content_disposition(row: &FileRow, inline: bool, preview: bool) -> String {
    let kind = if inline { "inline" } else { "attachment" };
    let name = if preview {
        format!("preview-{}", row.name)
    } else {
        row.name.clone()
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A body that sends `chunk` bytes every `every`, without end, and counts what it sent.
    fn trickle(
        chunk: usize,
        every: Duration,
    ) -> (Body, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let stream = futures_util::stream::unfold((), move |()| {
            let counter = counter.clone();
            async move {
                tokio::time::sleep(every).await;
                counter.fetch_add(chunk as u64, std::sync::atomic::Ordering::Relaxed);
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![0u8; chunk])),
                    (),
                ))
            }
        });
        (Body::from_stream(stream), sent)
    }

    #[tokio::test]
    async fn a_drain_stops_at_its_total_time_while_the_client_keeps_sending() {
        // A client that sends a little, often enough never to be idle, and never ends.
        let (body, sent) = trickle(10, Duration::from_millis(20));
        let started = Instant::now();
        drain(
            body,
            1 << 30,
            Duration::from_secs(5),
            Duration::from_millis(400),
        )
        .await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_secs(4), "the drain went on: {took:?}");
        assert!(sent.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn a_drain_stops_once_it_has_read_more_than_the_upload_limit() {
        // A client that sends as fast as it can: the drain stops past `max` bytes,
        // long before its total time.
        let (body, sent) = trickle(1024, Duration::ZERO);
        let started = Instant::now();
        drain(
            body,
            64 * 1024,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!((64 * 1024..=66 * 1024).contains(&sent), "read {sent} bytes");
    }

    #[test]
    fn a_disposition_names_the_file_safely() {
        let row = FileRow {
            id: 1,
            uploader_id: 1,
            sha256: String::new(),
            size: 1,
            mime: "text/plain".into(),
            name: "plan \"é\".txt".into(),
            width: None,
            height: None,
            preview_sha256: None,
            created_at: 0,
        };
        assert_eq!(
            content_disposition(&row, false, false),
            "attachment; filename=\"plan ___.txt\"; filename*=UTF-8''plan%20%22%C3%A9%22.txt"
        );
    }
}

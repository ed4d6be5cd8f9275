//! What an uploaded file is, decided from its bytes alone (never its name or the
//! upload's `Content-Type`), and, for an image, what is served instead of it: the image
//! decoded and encoded again (so EXIF, GPS coordinates and any other metadata or trailing
//! bytes are never served) and a thumbnail. Decoding is bounded: `image::Limits` on the
//! size in pixels and the memory a decoder may take (decompression bombs), and the caller
//! runs it on the blocking pool behind a semaphore.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// Largest width or height of an image that gets a preview; larger ones are stored as
/// plain downloads.
pub const MAX_IMAGE_SIDE: u32 = 12_000;
/// Most memory one decoder may allocate.
pub const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;
/// A preview fits in this square.
pub const PREVIEW_SIDE: u32 = 320;

/// An image as it will be stored and served.
#[derive(Debug)]
pub struct Image {
    /// The image encoded again (JPEG stays JPEG; PNG, GIF and WebP become PNG).
    pub full: Vec<u8>,
    pub mime: &'static str,
    pub preview: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Whether the first bytes are an image format served inline (PNG, JPEG, GIF, WebP).
pub fn image_format(head: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(head).ok()? {
        f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) => {
            Some(f)
        }
        _ => None,
    }
}

/// The type of a file that is not a served image, from its first bytes: what `infer`
/// recognises, except anything a browser could run or render as a document (HTML, SVG,
/// XML, scripts), which is `application/octet-stream`; UTF-8 text it does not
/// recognise is `text/plain`. Always served as an attachment anyway.
pub fn sniff_other(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        let mime = kind.mime_type();
        let active = ["html", "xml", "svg", "script", "javascript"]
            .iter()
            .any(|word| mime.contains(word));
        return if active || mime.starts_with("text/") || mime.starts_with("image/") {
            // An image type here is one not served inline (or one that failed to
            // decode): a download like any other.
            "application/octet-stream".to_owned()
        } else {
            mime.to_owned()
        };
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // Cut in the middle of a character at the end of the sniffed bytes.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    let markup = {
        let start = String::from_utf8_lossy(&head[..head.len().min(512)]).to_lowercase();
        let start = start.trim_start();
        start.starts_with('<') || start.contains("<html") || start.contains("<script")
    };
    if text && !head.contains(&0) && !markup && !head.is_empty() {
        "text/plain; charset=utf-8".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// Decodes an image (turned upright as its EXIF orientation says), encodes it again and
/// makes its preview. `None` if it cannot be decoded within the limits: it is then
/// stored as a plain download.
pub fn process(bytes: &[u8], format: ImageFormat) -> Option<Image> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().ok()?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).ok()?;
    if let Some(orientation) = orientation {
        img.apply_orientation(orientation);
    }
    let (width, height) = (img.width(), img.height());
    let jpeg = format == ImageFormat::Jpeg;
    let full = encode(&img, jpeg, 90)?;
    let thumb = if width > PREVIEW_SIDE || height > PREVIEW_SIDE {
        img.thumbnail(PREVIEW_SIDE, PREVIEW_SIDE)
    } else {
        img
    };
    let preview = encode(&thumb, jpeg, 80)?;
    Some(Image {
        full,
        mime: if jpeg { "image/jpeg" } else { "image/png" },
        preview,
        width,
        height,
    })
}

fn encode(img: &DynamicImage, jpeg: bool, quality: u8) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if jpeg {
        let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
        rgb.write_with_encoder(encoder).ok()?;
    } else {
        img.write_to(Cursor::new(&mut out), ImageFormat::Png).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = DynamicImage::new_rgb8(width, height);
        let mut out = Vec::new();
        img.write_to(Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn an_image_is_reencoded_with_a_smaller_preview() {
        let bytes = png(800, 400);
        let format = image_format(&bytes).unwrap();
        let image = process(&bytes, format).unwrap();
        assert_eq!(
            (image.width, image.height, image.mime),
            (800, 400, "image/png")
        );
        let preview = image::load_from_memory(&image.preview).unwrap();
        assert_eq!((preview.width(), preview.height()), (320, 160));
    }

    #[test]
    fn markup_is_never_an_image_nor_text() {
        let html = b"<!DOCTYPE html><html><script>alert(1)</script></html>";
        assert!(image_format(html).is_none());
        assert_eq!(sniff_other(html), "application/octet-stream");
        assert_eq!(sniff_other(b"just notes\n"), "text/plain; charset=utf-8");
        assert_eq!(sniff_other(b"%PDF-1.7\n"), "application/pdf");
    }

    #[test]
    fn a_truncated_image_is_not_processed() {
        let bytes = png(64, 64);
        let format = image_format(&bytes).unwrap();
        assert!(process(&bytes[..bytes.len() / 2], format).is_none());
    }
}

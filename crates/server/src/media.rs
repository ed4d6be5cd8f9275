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
/// Most memory one decoder may allocate for its own work (`image::Limits`).
pub const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;
/// Largest decoded image (its pixels, in memory) that is decoded: 160 MiB is a 50
/// megapixel photo in 8-bit RGB, or 41 megapixels in 8-bit RGBA. `image::Limits` does
/// not bound the decoded image itself when the decoder is driven directly, as here (for
/// its orientation), so it is checked before decoding. Re-encoding may make one or two
/// more copies of it (turned upright, converted to 8-bit RGB for JPEG): one decoder
/// holds at most about three times this.
pub const MAX_DECODED_BYTES: u64 = 160 * 1024 * 1024;
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
        // Leading white space and a byte-order mark hide nothing: the 512 bytes looked
        // at start after them.
        let text = String::from_utf8_lossy(head);
        let text = text.trim_start_matches(|c: char| c == '\u{feff}' || c.is_whitespace());
        let start: String = text.chars().take(512).collect::<String>().to_lowercase();
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
    process_within(bytes, format, MAX_DECODED_BYTES)
}

/// [`process`], decoding only an image of at most `max_decoded` bytes once decoded.
fn process_within(bytes: &[u8], format: ImageFormat, max_decoded: u64) -> Option<Image> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().ok()?;
    if decoder.total_bytes() > max_decoded {
        return None;
    }
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

/// What is stored and served for an upload whose first bytes are an image.
#[derive(Debug)]
pub enum Prepared {
    /// Decoded: served re-encoded (or, when that came out over `max_full` bytes, as
    /// uploaded with its metadata taken out), with a preview.
    Image(Image),
    /// Too large to decode within the limits: a download, as uploaded with its
    /// metadata taken out.
    Download(Vec<u8>),
    /// Neither decoded nor readable as its container (damaged, or a GIF too large to
    /// decode): refused, since its metadata could not be taken out.
    Unreadable,
}

/// Prepares an uploaded image (see [`Prepared`]); `max_full` is the largest file
/// stored (the upload limit: re-encoding can make an image several times larger than
/// it came, a lossy WebP becoming a PNG, a 1-bit scan an 8-bit one).
pub fn prepare(bytes: Vec<u8>, format: ImageFormat, max_full: u64) -> Prepared {
    match process(&bytes, format) {
        Some(mut image) => {
            if image.full.len() as u64 > max_full {
                match strip_metadata(bytes, format) {
                    Some(stripped) => {
                        image.full = stripped;
                        image.mime = match format {
                            ImageFormat::Png => "image/png",
                            ImageFormat::Jpeg => "image/jpeg",
                            _ => "image/webp",
                        };
                    }
                    None => return Prepared::Unreadable,
                }
            }
            Prepared::Image(image)
        }
        None => match strip_metadata(bytes, format) {
            Some(stripped) => Prepared::Download(stripped),
            None => Prepared::Unreadable,
        },
    }
}

/// PNG chunks kept when an image's metadata is taken out without decoding it: those
/// that draw the image (with APNG's animation), its colours and its pixel size. Text
/// (`tEXt`, `zTXt`, `iTXt`, where XMP lives), `eXIf`, `tIME` and anything unknown go.
const PNG_KEPT: [&[u8; 4]; 19] = [
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
    b"cICP", b"mDCV", b"cLLI", b"bKGD", b"hIST", b"pHYs", b"acTL", b"fcTL", b"fdAT",
];

/// The WebP chunks kept when its metadata is taken out (the container's own, the image,
/// its alpha, animation and colour profile).
const WEBP_KEPT: [[u8; 4]; 7] = [
    *b"VP8X", *b"VP8 ", *b"VP8L", *b"ALPH", *b"ANIM", *b"ANMF", *b"ICCP",
];

/// An image as uploaded, without the metadata its container carries, read with
/// `img-parts` (no decoding: any size): PNG keeps [`PNG_KEPT`]; JPEG loses every APPn
/// segment but JFIF (APP0, not its JFXX extension), ICC profiles (APP2) and Adobe's
/// (APP14), each recognised by its content, its comments, and whatever follows the end
/// of the image (MPF's extra pictures, appended data); WebP keeps [`WEBP_KEPT`]. `None`
/// for a container it cannot read, or a GIF.
pub fn strip_metadata(bytes: Vec<u8>, format: ImageFormat) -> Option<Vec<u8>> {
    use img_parts::{jpeg::Jpeg, png::Png, webp::WebP, ImageEXIF};
    let bytes = bytes::Bytes::from(bytes);
    let mut out = Vec::with_capacity(bytes.len());
    match format {
        ImageFormat::Png => {
            let mut png = Png::from_bytes(bytes).ok()?;
            png.chunks_mut()
                .retain(|chunk| PNG_KEPT.contains(&&chunk.kind()));
            png.encoder().write_to(&mut out).ok()?;
        }
        ImageFormat::Jpeg => {
            let mut jpeg = Jpeg::from_bytes(bytes).ok()?;
            jpeg.segments_mut()
                .retain(|segment| match segment.marker() {
                    // JFIF itself, not its extension (JFXX: a thumbnail of the image as
                    // it was before any crop), and Adobe's colour transform, by content.
                    0xE0 => segment.contents().starts_with(b"JFIF\0"),
                    0xEE => segment.contents().starts_with(b"Adobe"),
                    0xE2 => segment.contents().starts_with(b"ICC_PROFILE\0"),
                    0xE1..=0xEF | 0xFE => false,
                    _ => true,
                });
            // The scan's data runs to the end of the file as read: cut it after the
            // first end-of-image marker (0xFF is never followed by 0xD9 inside it).
            let header = 2 + jpeg.segments().iter().map(|s| s.len()).sum::<usize>();
            jpeg.encoder().write_to(&mut out).ok()?;
            if let Some(end) = out
                .get(header..)?
                .windows(2)
                .position(|pair| pair == [0xFF, 0xD9])
            {
                out.truncate(header + end + 2);
            }
        }
        ImageFormat::WebP => {
            let mut webp = WebP::from_bytes(bytes).ok()?;
            // Only the chunks that draw the image and its colours: EXIF, XMP and any
            // unknown chunk go.
            webp.chunks_mut()
                .retain(|chunk| WEBP_KEPT.contains(&chunk.id()));
            // Also sets the header's flags to the chunks left.
            webp.set_exif(None);
            webp.encoder().write_to(&mut out).ok()?;
        }
        _ => return None,
    }
    Some(out)
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
    fn an_image_larger_than_the_bound_once_decoded_is_not_decoded() {
        // 800 × 400 in 8-bit RGB: 960,000 bytes once decoded.
        let bytes = png(800, 400);
        assert!(process_within(&bytes, ImageFormat::Png, 960_000).is_some());
        assert!(process_within(&bytes, ImageFormat::Png, 959_999).is_none());
        // The bound allows a 50-megapixel photo in 8-bit RGB, not 12,000 × 12,000.
        const { assert!(50_000_000 * 3 <= MAX_DECODED_BYTES) };
        const { assert!(12_000 * 12_000 * 3 > MAX_DECODED_BYTES) };
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
        let svg =
            "\u{feff}<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
        assert_eq!(sniff_other(svg.as_bytes()), "application/octet-stream");
        assert_eq!(sniff_other(b"%PDF-1.7\n"), "application/pdf");
        // Markup after more white space than the bytes first looked at.
        let padded = format!("{}{}", " \n\t".repeat(300), &svg[3..]);
        assert_eq!(sniff_other(padded.as_bytes()), "application/octet-stream");
    }

    #[test]
    fn a_truncated_image_is_not_processed() {
        let bytes = png(64, 64);
        let format = image_format(&bytes).unwrap();
        assert!(process(&bytes[..bytes.len() / 2], format).is_none());
    }

    const SECRET: &[u8] = b"GPSLatitude 48.8584 SECRET";

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// `image` in `format`, with [`SECRET`] in its metadata (and, for JPEG, after its
    /// end as well).
    fn with_secret(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        use img_parts::{jpeg::Jpeg, png::Png, png::PngChunk, webp::WebP, ImageEXIF};
        let mut plain = Vec::new();
        img.write_to(Cursor::new(&mut plain), format).unwrap();
        let plain = bytes::Bytes::from(plain);
        let exif = bytes::Bytes::from_static(SECRET);
        let mut out = Vec::new();
        match format {
            ImageFormat::Png => {
                let mut png = Png::from_bytes(plain).unwrap();
                let at = png.chunks().len() - 1;
                let text = [b"Comment\0".as_slice(), SECRET].concat();
                png.chunks_mut()
                    .insert(at, PngChunk::new(*b"tEXt", text.into()));
                png.set_exif(Some(exif));
                png.encoder().write_to(&mut out).unwrap();
            }
            ImageFormat::Jpeg => {
                let mut jpeg = Jpeg::from_bytes(plain).unwrap();
                jpeg.set_exif(Some(exif));
                // An APP0 that is not JFIF (JFXX: a thumbnail) and an APP14 that is not
                // Adobe's, in the kept markers.
                for (marker, tag) in [(0xE0, b"JFXX\0".as_slice()), (0xEE, b"Other")] {
                    let contents = [tag, SECRET].concat();
                    jpeg.segments_mut().insert(
                        1,
                        img_parts::jpeg::JpegSegment::new_with_contents(marker, contents.into()),
                    );
                }
                jpeg.encoder().write_to(&mut out).unwrap();
                out.extend_from_slice(b"appended: ");
                out.extend_from_slice(SECRET);
            }
            _ => {
                let mut webp = WebP::from_bytes(plain).unwrap();
                webp.set_exif(Some(exif));
                // A chunk no decoder knows.
                webp.chunks_mut().push(img_parts::riff::RiffChunk::new(
                    *b"GPS ",
                    img_parts::riff::RiffContent::Data(bytes::Bytes::from_static(SECRET)),
                ));
                webp.encoder().write_to(&mut out).unwrap();
            }
        }
        assert!(contains(&out, SECRET));
        out
    }

    #[test]
    fn metadata_is_taken_out_of_an_image_without_decoding_it() {
        let img = DynamicImage::new_rgb8(40, 30);
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP] {
            let bytes = with_secret(&img, format);
            let stripped = strip_metadata(bytes, format).unwrap();
            assert!(!contains(&stripped, SECRET), "{format:?} kept its metadata");
            let again = image::load_from_memory_with_format(&stripped, format).unwrap();
            assert_eq!((again.width(), again.height()), (40, 30), "{format:?}");
        }
        assert!(strip_metadata(b"GIF89a".to_vec(), ImageFormat::Gif).is_none());
        assert!(strip_metadata(b"\x89PNG\r\n\x1a\nbroken".to_vec(), ImageFormat::Png).is_none());
    }

    #[test]
    fn an_image_too_large_to_decode_is_a_download_without_its_metadata() {
        let img = DynamicImage::new_luma8(MAX_IMAGE_SIDE + 1, 2);
        let bytes = with_secret(&img, ImageFormat::Png);
        let Prepared::Download(stored) = prepare(bytes, ImageFormat::Png, u64::MAX) else {
            panic!("an image over the decoding limits was decoded");
        };
        assert!(!contains(&stored, SECRET));
        let again = img_parts::png::Png::from_bytes(stored.into()).unwrap();
        assert_eq!(again.dimensions(), Some((MAX_IMAGE_SIDE + 1, 2)));
    }

    #[test]
    fn an_image_that_grows_past_the_limit_when_encoded_again_is_kept_as_it_came() {
        // Noise at JPEG quality 10: encoded again at 90, several times the size.
        let mut state = 0x2545_f491_u32;
        let noise = image::RgbImage::from_fn(300, 300, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
        });
        let mut bytes = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 10);
        DynamicImage::ImageRgb8(noise)
            .write_with_encoder(encoder)
            .unwrap();
        let bytes = with_secret(&image::load_from_memory(&bytes).unwrap(), ImageFormat::Jpeg);
        let reencoded = process(&bytes, ImageFormat::Jpeg).unwrap().full.len();
        let limit = bytes.len() as u64 + 1;
        assert!(reencoded as u64 > limit, "{reencoded} vs {}", bytes.len());
        let Prepared::Image(image) = prepare(bytes, ImageFormat::Jpeg, limit) else {
            panic!("not prepared as an image");
        };
        assert!(image.full.len() as u64 <= limit);
        assert!(!contains(&image.full, SECRET));
        assert_eq!(
            (image.width, image.height, image.mime),
            (300, 300, "image/jpeg")
        );
        assert!(!image.preview.is_empty());
    }
}

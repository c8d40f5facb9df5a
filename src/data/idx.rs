//! MNIST IDX files, gzip-compressed (as distributed) or raw.
//!
//! Layout after gunzip: big-endian u32 header fields, then u8 data.
//! - images: magic 2051 (`0x00000803`: u8 data, 3 dimensions), count n, rows, cols, then
//!   `n·rows·cols` pixels, image by image, each row-major; data at byte 16.
//! - labels: magic 2049 (`0x00000801`: u8 data, 1 dimension), count n, then n labels; data at
//!   byte 8. Labels must be digits 0..=9 (the readers are for MNIST; anything else is an error
//!   here rather than an out-of-range class index downstream).
//!
//! The data must be exactly as long as the header says (shorter: truncated; longer: trailing
//! bytes). For gzip input the header is read first from the start of the stream, the size it
//! implies is checked against [`MAX_DECOMPRESSED_BYTES`] and against what the compressed bytes
//! could possibly hold ([`MAX_DEFLATE_RATIO`]), and the stream is then decompressed with exactly
//! that cap (plus one byte to detect "longer"), so a zip bomb or a lying header is an error and
//! never a large allocation.

use super::{
    gunzip, gunzip_prefix, invalid, is_gzip, Cursor, DataError, Format, MAX_DECOMPRESSED_BYTES,
    MAX_DEFLATE_RATIO,
};
use std::path::Path;

/// Magic number of an IDX file of u8 images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// `n` images of `rows × cols` u8 pixels, image-major then row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    /// `n·rows·cols` values, 0 = background, 255 = full ink.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// Image `i`'s pixels, row-major; `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let len = self.image_len();
        let start = i.checked_mul(len)?;
        self.pixels.get(start..start.checked_add(len)?)
    }

    /// All pixels as `f32 = u8 / 255` (what the VAE experiment feeds the network), `[n, rows·cols]`.
    pub fn to_f32(&self) -> Vec<f32> {
        self.pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
    }
}

/// `n` class labels, each a digit 0..=9.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub labels: Vec<u8>,
}

impl Labels {
    /// How many labels of each digit 0..=9.
    pub fn histogram(&self) -> [usize; 10] {
        let mut h = [0usize; 10];
        for &l in &self.labels {
            if let Some(c) = h.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
        h
    }
}

fn err(what: impl Into<String>) -> DataError {
    invalid(Format::Idx, what)
}

/// Read an IDX image file (`.gz` or raw).
pub fn load_images(path: &Path) -> Result<Images, DataError> {
    let bytes = super::read_file(path)?;
    decode_images(&bytes).map_err(|e| e.in_file(path))
}

/// Read an IDX label file (`.gz` or raw).
pub fn load_labels(path: &Path) -> Result<Labels, DataError> {
    let bytes = super::read_file(path)?;
    decode_labels(&bytes).map_err(|e| e.in_file(path))
}

/// Decode an IDX image file; gzip-compressed input (magic `1f 8b`) is decompressed first.
pub fn decode_images(bytes: &[u8]) -> Result<Images, DataError> {
    let raw = maybe_gunzip(bytes, IMAGES_HEADER, |h| {
        images_header(h).map(|(_, total)| total)
    })?;
    decode_images_raw(&raw)
}

/// Decode an IDX label file; gzip-compressed input (magic `1f 8b`) is decompressed first.
pub fn decode_labels(bytes: &[u8]) -> Result<Labels, DataError> {
    let raw = maybe_gunzip(bytes, LABELS_HEADER, |h| {
        labels_header(h).map(|(_, total)| total)
    })?;
    decode_labels_raw(&raw)
}

/// Decode an uncompressed IDX image file.
pub fn decode_images_raw(bytes: &[u8]) -> Result<Images, DataError> {
    let ((n, rows, cols), total) = images_header(bytes)?;
    let data = exact_body(bytes, IMAGES_HEADER, total)?;
    Ok(Images {
        n,
        rows,
        cols,
        pixels: data.to_vec(),
    })
}

/// Decode an uncompressed IDX label file.
pub fn decode_labels_raw(bytes: &[u8]) -> Result<Labels, DataError> {
    let (_, total) = labels_header(bytes)?;
    let data = exact_body(bytes, LABELS_HEADER, total)?;
    if let Some((i, l)) = data.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(err(format!("label {l} at index {i} is not a digit 0..9")));
    }
    Ok(Labels {
        labels: data.to_vec(),
    })
}

/// Gunzip `bytes` if they are gzip: read `header_len` bytes first, let `total_len` compute the
/// whole file's size from them, check it, then decompress with exactly that cap.
fn maybe_gunzip(
    bytes: &[u8],
    header_len: usize,
    total_len: impl Fn(&[u8]) -> Result<usize, DataError>,
) -> Result<std::borrow::Cow<'_, [u8]>, DataError> {
    if !is_gzip(bytes) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let head = gunzip_prefix(bytes, header_len)?;
    let total = total_len(&head)?;
    if total > MAX_DECOMPRESSED_BYTES {
        return Err(err(format!(
            "header implies {total} bytes, more than the {MAX_DECOMPRESSED_BYTES}-byte limit"
        )));
    }
    let possible = bytes.len().saturating_mul(MAX_DEFLATE_RATIO);
    if total > possible {
        return Err(err(format!(
            "header implies {total} bytes but {} gzip bytes can hold at most {possible}",
            bytes.len()
        )));
    }
    // One byte of slack over the header's size, so that "longer than the header says" is
    // reported as such by `exact_body` rather than as a gzip error.
    let raw = gunzip(bytes, total + 1)?;
    Ok(std::borrow::Cow::Owned(raw))
}

/// The data after a header of `header_len` bytes, which must be exactly `total - header_len`.
fn exact_body(bytes: &[u8], header_len: usize, total: usize) -> Result<&[u8], DataError> {
    let need = total.saturating_sub(header_len);
    let data = bytes.get(header_len..).unwrap_or_default();
    if data.len() < need {
        return Err(err(format!(
            "header says {need} data bytes but only {} follow (truncated)",
            data.len()
        )));
    }
    if data.len() > need {
        return Err(err(format!(
            "header says {need} data bytes but {} follow (trailing bytes)",
            data.len()
        )));
    }
    Ok(data)
}

fn magic_name(magic: u32) -> String {
    match magic {
        IMAGES_MAGIC => "an image file (magic 2051)".into(),
        LABELS_MAGIC => "a label file (magic 2049)".into(),
        m if m >> 16 == 0 => format!("an IDX file of another type (magic {m:#010x})"),
        m => format!("not IDX (magic {m:#010x})"),
    }
}

/// Parse an image header: ((n, rows, cols), total file size). Does not need the data.
fn images_header(bytes: &[u8]) -> Result<((usize, usize, usize), usize), DataError> {
    let mut c = Cursor::new(bytes);
    let mut u32_be = |what: &str| {
        c.array::<4>()
            .map(u32::from_be_bytes)
            .ok_or_else(|| err(format!("truncated in the header, before {what}")))
    };
    let magic = u32_be("the magic number")?;
    if magic != IMAGES_MAGIC {
        return Err(err(format!(
            "expected an image file (magic 2051), found {}",
            magic_name(magic)
        )));
    }
    let n = u32_be("the image count")? as usize;
    let rows = u32_be("the row count")? as usize;
    let cols = u32_be("the column count")? as usize;
    if rows == 0 || cols == 0 {
        return Err(err(format!("images of {rows}×{cols} pixels are empty")));
    }
    let total = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .and_then(|v| v.checked_add(IMAGES_HEADER))
        .ok_or_else(|| err(format!("{n} images of {rows}×{cols} do not fit in memory")))?;
    Ok(((n, rows, cols), total))
}

/// Parse a label header: (n, total file size).
fn labels_header(bytes: &[u8]) -> Result<(usize, usize), DataError> {
    let mut c = Cursor::new(bytes);
    let magic = c
        .array::<4>()
        .map(u32::from_be_bytes)
        .ok_or_else(|| err("truncated in the header, before the magic number"))?;
    if magic != LABELS_MAGIC {
        return Err(err(format!(
            "expected a label file (magic 2049), found {}",
            magic_name(magic)
        )));
    }
    let n = c
        .array::<4>()
        .map(u32::from_be_bytes)
        .ok_or_else(|| err("truncated in the header, before the label count"))?
        as usize;
    let total = n
        .checked_add(LABELS_HEADER)
        .ok_or_else(|| err(format!("{n} labels do not fit in memory")))?;
    Ok((n, total))
}

/// Encode images as a raw (uncompressed) IDX file; for tests and fixtures.
///
/// # Panics
/// If `pixels.len() != n·rows·cols` or a dimension exceeds u32.
pub fn encode_images_raw(images: &Images) -> Vec<u8> {
    assert_eq!(images.pixels.len(), images.n * images.rows * images.cols);
    let mut out = Vec::with_capacity(IMAGES_HEADER + images.pixels.len());
    for v in [IMAGES_MAGIC as usize, images.n, images.rows, images.cols] {
        out.extend_from_slice(
            &u32::try_from(v)
                .expect("IDX dimensions are u32")
                .to_be_bytes(),
        );
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encode labels as a raw (uncompressed) IDX file; for tests and fixtures.
///
/// # Panics
/// If there are more than `u32::MAX` labels.
pub fn encode_labels_raw(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LABELS_HEADER + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    let n = u32::try_from(labels.len()).expect("IDX counts are u32");
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn sample() -> Images {
        Images {
            n: 3,
            rows: 2,
            cols: 4,
            pixels: (0..24).map(|i| i * 10).collect(),
        }
    }

    #[test]
    fn round_trips_raw_and_gzip() {
        let raw = encode_images_raw(&sample());
        assert_eq!(decode_images(&raw).unwrap(), sample());
        assert_eq!(decode_images(&gzip(&raw)).unwrap(), sample());
        assert_eq!(sample().image(1).unwrap(), &sample().pixels[8..16]);
        assert_eq!(sample().image(3), None);
        let labels = encode_labels_raw(&[7, 2, 1, 0, 9]);
        let l = decode_labels(&gzip(&labels)).unwrap();
        assert_eq!(l.labels, vec![7, 2, 1, 0, 9]);
        assert_eq!(l.histogram(), [1, 1, 1, 0, 0, 0, 0, 1, 0, 1]);
    }

    fn msg(r: Result<impl std::fmt::Debug, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn errors_are_clear() {
        let raw = encode_images_raw(&sample());
        assert!(msg(decode_images(&raw[..20])).contains("only 4 follow (truncated)"));
        let mut long = raw.clone();
        long.push(0);
        assert!(msg(decode_images(&long)).contains("trailing"));
        assert!(msg(decode_images(&gzip(&long))).contains("trailing"));
        assert!(msg(decode_images(&gzip(&raw[..20]))).contains("truncated"));
        assert!(msg(decode_images(&raw[..10])).contains("before the row count"));
        let labels = encode_labels_raw(&[1, 2]);
        assert!(msg(decode_images(&labels)).contains("a label file"));
        assert!(msg(decode_labels(&raw)).contains("an image file"));
        assert!(msg(decode_labels(&encode_labels_raw(&[3, 10]))).contains("label 10 at index 1"));
        // A header claiming 2^32-1 images of 2^32-1 × 2^32-1 pixels.
        let mut huge = IMAGES_MAGIC.to_be_bytes().to_vec();
        for _ in 0..3 {
            huge.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        assert!(msg(decode_images(&huge)).contains("do not fit"));
        // A gzip whose header claims 60000 images but holds a few bytes.
        let mut lying = IMAGES_MAGIC.to_be_bytes().to_vec();
        for v in [60_000u32, 28, 28] {
            lying.extend_from_slice(&v.to_be_bytes());
        }
        assert!(msg(decode_images(&gzip(&lying))).contains("can hold at most"));
    }

    #[test]
    fn zip_bomb_is_an_error() {
        // 200 MB of zeros behind an honest-looking label header for 10 labels.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&encode_labels_raw(&[0; 10])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 300_000);
        let m = msg(decode_labels(&bomb));
        assert!(m.contains("more than 19 bytes"), "{m}");
    }
}

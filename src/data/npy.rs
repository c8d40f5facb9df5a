//! NumPy `.npy` files, format versions 1.0, 2.0 and 3.0, read into f32; and an f32 writer.
//!
//! Layout: magic `\x93NUMPY`, major and minor version bytes, the header length (little-endian
//! u16 for 1.0, u32 for 2.0/3.0), the header — a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (400, 784), }` padded with spaces and
//! ended by `\n` — then the data.
//!
//! What [`decode`] accepts, and why:
//! - **dtypes.** `'<f4'` is read exactly. The others are converted to f32 only where that is
//!   exact or clearly defined: `'|u1'` (0..=255, exact), `'<i8'` (exact for |v| ≤ 2²⁴, larger
//!   values are an error rather than a silent rounding), `'<f8'` (rounded to the nearest f32;
//!   NaN and ±inf are kept, a finite value beyond f32's range is an error rather than a silent
//!   inf). Big-endian (`'>f4'`), other dtypes and structured dtypes are refused by name.
//! - **order.** C (row-major) only: `fortran_order: True` is refused unless the array has at
//!   most one dimension larger than 1, where both orders are the same bytes.
//! - **header.** ASCII only (NumPy writes ASCII for the dtypes above; 3.0's UTF-8 matters only for
//!   structured field names); exactly the three keys `descr`, `fortran_order`, `shape`, each
//!   once; shape a tuple (`()`, `(3,)`, `(3, 4)`; a trailing `L` as old Python 2 NumPy wrote is
//!   accepted) of at most [`MAX_NDIM`] dimensions. Padding and alignment are not checked.
//! - **size.** The element count is computed without overflow and the data must be exactly
//!   `count × itemsize` bytes: fewer is a truncated file, more is trailing garbage. Nothing is
//!   allocated before that check, so a header claiming (2⁶², 2⁶²) is an error, not an abort.

use super::{invalid, shape_str, Cursor, DataError, Format};
use std::path::Path;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// NumPy aligns the start of the data to this many bytes when writing.
const ALIGN: usize = 64;
/// The most dimensions a shape may have (NumPy 1.x's `NPY_MAXDIMS`).
pub const MAX_NDIM: usize = 32;

/// A decoded array: C-order values and their shape. `data.len()` is the product of `shape`
/// (1 for a 0-d array).
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NpyArray {
    /// Number of elements, the product of the shape.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The element types [`decode`] understands (see the module docs for the conversions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `'<f4'`: little-endian f32 (read exactly).
    F4,
    /// `'<f8'`: little-endian f64 (rounded to f32).
    F8,
    /// `'|u1'`: u8 (exact).
    U1,
    /// `'<i8'`: little-endian i64 (exact up to 2²⁴ in magnitude).
    I8,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::F8 | Dtype::I8 => 8,
            Dtype::U1 => 1,
        }
    }

    /// The `descr` string NumPy writes.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F4 => "<f4",
            Dtype::F8 => "<f8",
            Dtype::U1 => "|u1",
            Dtype::I8 => "<i8",
        }
    }

    fn from_descr(descr: &str) -> Result<Self, DataError> {
        Ok(match descr {
            "<f4" => Dtype::F4,
            "<f8" => Dtype::F8,
            "|u1" => Dtype::U1,
            "<i8" => Dtype::I8,
            d if d.starts_with('>') => {
                return Err(err(format!(
                    "big-endian dtype '{d}' is not supported (save as little-endian)"
                )))
            }
            d => {
                return Err(err(format!(
                    "dtype '{d}' is not supported (supported: '<f4', '<f8', '|u1', '<i8')"
                )))
            }
        })
    }
}

/// The parsed header dict.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub dtype: Dtype,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
}

fn err(what: impl Into<String>) -> DataError {
    invalid(Format::Npy, what)
}

/// Read a `.npy` file.
pub fn load(path: &Path) -> Result<NpyArray, DataError> {
    let bytes = super::read_file(path)?;
    decode(&bytes).map_err(|e| e.in_file(path))
}

/// Decode the bytes of a `.npy` file into f32 (see the module docs for what is accepted).
pub fn decode(bytes: &[u8]) -> Result<NpyArray, DataError> {
    let (header, body) = split(bytes)?;
    let count = element_count(&header.shape)?;
    let (got, shape, dtype) = (body.len(), shape_str(&header.shape), header.dtype.descr());
    match count.checked_mul(header.dtype.size()) {
        Some(need) if need == got => {}
        Some(need) if got > need => {
            return Err(err(format!(
                "header says shape {shape} of '{dtype}' but {got} data bytes follow, expected {need} (trailing bytes)"
            )))
        }
        Some(need) => {
            return Err(err(format!(
                "header says shape {shape} of '{dtype}' but {got} data bytes follow, need {need}"
            )))
        }
        None => {
            return Err(err(format!(
                "shape {shape} of '{dtype}' has more bytes than fit in memory"
            )))
        }
    }
    let data = match header.dtype {
        Dtype::F4 => body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::U1 => body.iter().map(|&b| f32::from(b)).collect(),
        Dtype::F8 => body
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| {
                let v = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                let r = v as f32;
                if v.is_finite() && !r.is_finite() {
                    Err(err(format!(
                        "'<f8' element {i} = {v:e} is outside the f32 range"
                    )))
                } else {
                    Ok(r)
                }
            })
            .collect::<Result<_, _>>()?,
        Dtype::I8 => body
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| {
                let v = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                if v.unsigned_abs() > 1 << 24 {
                    Err(err(format!(
                        "'<i8' element {i} = {v} is not exactly representable as f32 (|v| > 2^24)"
                    )))
                } else {
                    Ok(v as f32)
                }
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(NpyArray {
        shape: header.shape,
        data,
    })
}

/// Product of the dimensions, or an error when it overflows usize.
fn element_count(shape: &[usize]) -> Result<usize, DataError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            err(format!(
                "shape {} has more elements than fit in memory",
                shape_str(shape)
            ))
        })
}

/// Check magic and version, parse the header, and return it with the bytes after it.
pub fn split(bytes: &[u8]) -> Result<(Header, &[u8]), DataError> {
    let mut c = Cursor::new(bytes);
    match c.take(MAGIC.len()) {
        Some(m) if m == MAGIC => {}
        _ => return Err(err("not an npy file (no \\x93NUMPY magic)")),
    }
    let [major, minor] = c
        .array::<2>()
        .ok_or_else(|| err("truncated before the version bytes"))?;
    let header_len = match (major, minor) {
        (1, 0) => c.array::<2>().map(|b| usize::from(u16::from_le_bytes(b))),
        (2, 0) | (3, 0) => c
            .array::<4>()
            .and_then(|b| usize::try_from(u32::from_le_bytes(b)).ok()),
        _ => {
            return Err(err(format!(
                "format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)"
            )))
        }
    }
    .ok_or_else(|| err("truncated inside the header length"))?;
    let available = c.rest.len();
    let text = c.take(header_len).ok_or_else(|| {
        err(format!(
            "header length says {header_len} bytes but only {available} follow"
        ))
    })?;
    let header = parse_header(text)?;
    Ok((header, c.rest))
}

/// Parse the header dict (the bytes between the length field and the data).
pub fn parse_header(text: &[u8]) -> Result<Header, DataError> {
    if let Some(pos) = text.iter().position(|b| !b.is_ascii()) {
        return Err(err(format!("header byte {pos} is not ASCII")));
    }
    let mut p = Parser { s: text, pos: 0 };
    p.skip_ws();
    p.expect(b'{', "header does not start with a dict '{'")?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.skip_ws();
        p.expect(b':', "expected ':' after a key")?;
        p.skip_ws();
        let seen = match key {
            "descr" => {
                if p.peek() == Some(b'[') {
                    return Err(err("structured dtypes (a list 'descr') are not supported"));
                }
                descr.replace(p.string()?.to_string()).is_some()
            }
            "fortran_order" => fortran.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            other => return Err(err(format!("unexpected key '{other}' in the header"))),
        };
        if seen {
            return Err(err(format!("key '{key}' appears twice in the header")));
        }
        p.skip_ws();
        if p.eat(b',') {
            continue;
        }
        p.skip_ws();
        p.expect(b'}', "expected ',' or '}' after a value")?;
        break;
    }
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(err(format!(
            "unexpected text after the header dict at byte {}",
            p.pos
        )));
    }
    let descr = descr.ok_or_else(|| err("header has no 'descr'"))?;
    let fortran_order = fortran.ok_or_else(|| err("header has no 'fortran_order'"))?;
    let shape = shape.ok_or_else(|| err("header has no 'shape'"))?;
    let dtype = Dtype::from_descr(&descr)?;
    if fortran_order && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(err(format!(
            "fortran_order True (column-major) is not supported for shape {}; save in C order",
            shape_str(&shape)
        )));
    }
    Ok(Header {
        dtype,
        fortran_order,
        shape,
    })
}

/// A tiny parser for the Python-literal subset NumPy headers use. No recursion.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), DataError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(err(format!("{what} (at header byte {})", self.pos)))
        }
    }

    /// A quoted string without escapes: `'...'` or `"..."`.
    fn string(&mut self) -> Result<&'a str, DataError> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(err(format!(
                    "expected a quoted string at header byte {start}"
                )))
            }
        };
        self.pos += 1;
        let body_start = self.pos;
        loop {
            match self.peek() {
                None | Some(b'\n') => {
                    return Err(err(format!("unterminated string at header byte {start}")))
                }
                Some(b'\\') => {
                    return Err(err(format!(
                        "escapes in header strings are not supported (header byte {})",
                        self.pos
                    )))
                }
                Some(q) if q == quote => break,
                Some(_) => self.pos += 1,
            }
        }
        let body = self.s.get(body_start..self.pos).unwrap_or_default();
        self.pos += 1;
        // The whole header was checked to be ASCII, so this cannot fail; still no unwrap.
        std::str::from_utf8(body).map_err(|_| err("header string is not UTF-8"))
    }

    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    fn boolean(&mut self) -> Result<bool, DataError> {
        let at = self.pos;
        match self.word() {
            b"True" => Ok(true),
            b"False" => Ok(false),
            w => Err(err(format!(
                "fortran_order must be True or False, found '{}' at header byte {at}",
                String::from_utf8_lossy(w)
            ))),
        }
    }

    /// A tuple of non-negative integers: `()`, `(3,)`, `(3, 4)`, `(3, 4,)`.
    fn tuple(&mut self) -> Result<Vec<usize>, DataError> {
        self.expect(b'(', "shape must be a tuple '(...)'")?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            // Here we are just after '(' or a ',', so ')' closes `()` or `(3,)`.
            if self.eat(b')') {
                return Ok(dims);
            }
            if dims.len() == MAX_NDIM {
                return Err(err(format!("shape has more than {MAX_NDIM} dimensions")));
            }
            dims.push(self.integer()?);
            self.skip_ws();
            if self.eat(b',') {
                continue;
            }
            self.skip_ws();
            self.expect(b')', "expected ',' or ')' in the shape")?;
            if dims.len() == 1 {
                return Err(err(
                    "shape '(n)' is an integer, not a tuple; a 1-d shape is written '(n,)'",
                ));
            }
            return Ok(dims);
        }
    }

    fn integer(&mut self) -> Result<usize, DataError> {
        let at = self.pos;
        let digits = self.word();
        // Python 2 NumPy wrote long integers as `3L`.
        let digits = digits.strip_suffix(b"L").unwrap_or(digits);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(err(format!(
                "shape entry '{}' at header byte {at} is not a non-negative integer",
                String::from_utf8_lossy(digits)
            )));
        }
        digits
            .iter()
            .try_fold(0usize, |acc, &d| {
                acc.checked_mul(10)?.checked_add(usize::from(d - b'0'))
            })
            .ok_or_else(|| {
                err(format!(
                    "shape entry {} at header byte {at} does not fit in usize",
                    String::from_utf8_lossy(digits)
                ))
            })
    }
}

/// Encode a row-major `[rows, cols]` f32 array as a complete `.npy` file (version 1.0, `'<f4'`,
/// C order, data aligned to 64 bytes as NumPy writes it).
///
/// # Panics
/// If `data.len() != rows * cols` (a caller bug).
pub fn encode_f32(rows: usize, cols: usize, data: &[f32]) -> Vec<u8> {
    encode(&[rows, cols], data)
}

/// Encode an f32 array of any shape as a complete `.npy` file: version 1.0 (2.0 only if the
/// header does not fit a u16 length), `'<f4'`, C order, data aligned to 64 bytes.
///
/// # Panics
/// If `data.len()` is not the product of `shape` (a caller bug).
pub fn encode(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    assert_eq!(
        count,
        Some(data.len()),
        "npy: data length {} does not match shape {}",
        data.len(),
        shape_str(shape)
    );
    let mut out = header_f32(shape);
    out.reserve(4 * data.len());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Everything before the data: magic, version, header length and the padded header dict.
fn header_f32(shape: &[usize]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}",
        shape_str(shape)
    );
    // Version 1.0 has a 2-byte length, 2.0 a 4-byte one.
    let fits_v1 = 10 + dict.len() + 1 + ALIGN <= usize::from(u16::MAX);
    let preamble = MAGIC.len() + 2 + if fits_v1 { 2 } else { 4 };
    // Pad with spaces so that preamble + header (ending in '\n') is a multiple of ALIGN.
    let unpadded = preamble + dict.len() + 1;
    let pad = unpadded.div_ceil(ALIGN) * ALIGN - unpadded;
    let header_len = dict.len() + pad + 1;

    let mut out = Vec::with_capacity(preamble + header_len);
    out.extend_from_slice(MAGIC);
    if fits_v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(version: (u8, u8), dict: &str, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version.0, version.1]);
        let text = format!("{dict}\n");
        if version.0 == 1 {
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn round_trip_bitwise() {
        let data = [
            -1.5,
            0.0,
            f32::MIN_POSITIVE,
            3.25e7,
            f32::NAN,
            -0.0,
            1e-30,
            f32::INFINITY,
        ];
        let bytes = encode_f32(4, 2, &data);
        assert_eq!(
            (10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]]))) % 64,
            0
        );
        let a = decode(&bytes).unwrap();
        assert_eq!(a.shape, vec![4, 2]);
        for (x, y) in data.iter().zip(&a.data) {
            assert_eq!(x.to_bits(), y.to_bits());
        }
        for shape in [vec![], vec![0], vec![3], vec![2, 0, 5], vec![1, 2, 1, 3]] {
            let n = shape.iter().product::<usize>();
            let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            assert_eq!(
                decode(&encode(&shape, &v)).unwrap(),
                NpyArray { shape, data: v }
            );
        }
    }

    #[test]
    fn header_matches_the_harness_writer() {
        // Same bytes as harness/npy.rs writes: 128-byte header for a short 2-D shape.
        let bytes = encode_f32(3, 2, &[0.0; 6]);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let text = std::str::from_utf8(&bytes[10..128]).unwrap();
        assert_eq!(
            text.trim_end(),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }"
        );
        assert_eq!(bytes.len(), 128 + 24);
    }

    #[test]
    fn versions_and_dtypes() {
        let d = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        let body: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for v in [(1, 0), (2, 0), (3, 0)] {
            assert_eq!(
                decode(&with_header(v, d, &body)).unwrap().data,
                vec![1.0, 2.0]
            );
        }
        let f8: Vec<u8> = [0.1f64, -3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = decode(&with_header(
            (1, 0),
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2,)}",
            &f8,
        ))
        .unwrap();
        assert_eq!(a.data, vec![0.1f32, -3.0]);
        let a = decode(&with_header(
            (1, 0),
            "{\"shape\": (1L, 3L), \"fortran_order\": False, \"descr\": \"|u1\"}",
            &[0, 7, 255],
        ))
        .unwrap();
        assert_eq!((a.shape, a.data), (vec![1, 3], vec![0.0, 7.0, 255.0]));
        let i8: Vec<u8> = [-5i64, 1 << 24]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = decode(&with_header(
            (1, 0),
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2,)}",
            &i8,
        ))
        .unwrap();
        assert_eq!(a.data, vec![-5.0, 16_777_216.0]);
        // 0-d array.
        let a = decode(&with_header(
            (1, 0),
            "{'descr': '<f4', 'fortran_order': False, 'shape': ()}",
            &2.5f32.to_le_bytes(),
        ))
        .unwrap();
        assert_eq!((a.shape, a.data), (vec![], vec![2.5]));
    }

    fn msg(bytes: &[u8]) -> String {
        decode(bytes).unwrap_err().to_string()
    }

    #[test]
    fn clear_errors() {
        let body = [0u8; 40];
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
            &body,
        ));
        assert_eq!(
            m,
            "npy: header says shape (3, 4) of '<f4' but 40 data bytes follow, need 48"
        );
        let m = msg(&with_header((1, 0), "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", &body));
        assert!(m.contains("more elements than fit in memory"), "{m}");
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }",
            &[0; 48],
        ));
        assert!(m.contains("fortran_order True"), "{m}");
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }",
            &[0; 12],
        ));
        assert!(m.contains("big-endian"), "{m}");
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }",
            &[0; 6],
        ));
        assert!(m.contains("'<f2' is not supported"), "{m}");
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3), }",
            &[0; 12],
        ));
        assert!(m.contains("not a tuple"), "{m}");
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}",
            &[0; 12],
        ));
        assert!(m.contains("unexpected key 'x'"), "{m}");
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,)}",
            &[0; 12],
        ));
        assert!(m.contains("twice"), "{m}");
        let m = msg(&with_header((4, 0), "{}", &[]));
        assert!(m.contains("version 4.0"), "{m}");
        assert!(msg(b"\x93NUMPY\x01\x00\xff\xff{").contains("only 1 follow"));
        assert!(msg(b"PK\x03\x04").contains("magic"));
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        ));
        assert!(m.contains("trailing"), "{m}");
        let big: Vec<u8> = (1i64 << 25).to_le_bytes().to_vec();
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<i8', 'fortran_order': False, 'shape': (1,)}",
            &big,
        ));
        assert!(m.contains("2^24"), "{m}");
        let m = msg(&with_header(
            (1, 0),
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1,)}",
            &1e300f64.to_le_bytes(),
        ));
        assert!(m.contains("f32 range"), "{m}");
    }

    #[test]
    fn fortran_order_is_fine_for_vectors() {
        let a = decode(&with_header(
            (1, 0),
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2, 1), }",
            &[0; 8],
        ))
        .unwrap();
        assert_eq!(a.shape, vec![1, 2, 1]);
    }
}

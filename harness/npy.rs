//! A minimal NumPy `.npy` (format version 1.0) writer for `[n, D]` f32 arrays.
//!
//! Layout: the magic `\x93NUMPY`, version bytes `1 0`, a little-endian u16 header length, then
//! the header — a Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (n, D), }`
//! padded with spaces and ended by `\n` so that the data starts at a multiple of 64 bytes (what
//! NumPy itself writes) — then the n·D values as little-endian f32 in C (row-major) order.

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Bytes before the header text: magic, 2 version bytes, 2 length bytes.
const PREAMBLE: usize = MAGIC.len() + 2 + 2;
/// NumPy aligns the start of the data to this many bytes.
const ALIGN: usize = 64;

/// Encode a row-major `[rows, cols]` f32 array as a complete `.npy` file.
///
/// Panics if `data.len() != rows * cols` (a caller bug, checked before calling).
pub fn encode_f32(rows: usize, cols: usize, data: &[f32]) -> Vec<u8> {
    assert_eq!(
        data.len(),
        rows * cols,
        "npy: data length does not match shape ({rows}, {cols})"
    );
    let mut out = header_f32(rows, cols);
    out.reserve(4 * data.len());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Everything before the data: magic, version, header length and the padded header dict.
fn header_f32(rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad with spaces so that PREAMBLE + header (ending in '\n') is a multiple of ALIGN.
    let unpadded = PREAMBLE + dict.len() + 1;
    let pad = unpadded.div_ceil(ALIGN) * ALIGN - unpadded;
    let header_len = dict.len() + pad + 1;
    // Version 1.0 stores the header length in a u16; a 2-D shape is always far below that.
    let header_len_u16 = u16::try_from(header_len).expect("npy header fits in a u16");

    let mut out = Vec::with_capacity(PREAMBLE + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len_u16.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// Decode a `.npy` file written by [`encode_f32`]: `(rows, cols, data)`. Only the subset this
/// module writes is understood (v1.0, `<f4`, C order, 2-D); used by the tests.
#[cfg(test)]
pub fn decode_f32(bytes: &[u8]) -> Result<(usize, usize, Vec<f32>), String> {
    if bytes.len() < PREAMBLE || &bytes[..6] != MAGIC {
        return Err("not an npy file".into());
    }
    if bytes[6..8] != [1, 0] {
        return Err(format!("unsupported version {}.{}", bytes[6], bytes[7]));
    }
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[PREAMBLE..PREAMBLE + header_len])
        .map_err(|e| format!("header is not UTF-8: {e}"))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(format!("unsupported header {header:?}"));
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("no shape in {header:?}"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| format!("bad shape {shape:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!("not 2-D: {shape:?}"));
    };
    let body = &bytes[PREAMBLE + header_len..];
    if body.len() != 4 * rows * cols {
        return Err(format!(
            "{} data bytes for shape ({rows}, {cols})",
            body.len()
        ));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((rows, cols, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_exact() {
        let bytes = encode_f32(3, 2, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let data_start = PREAMBLE + header_len;
        assert_eq!(
            data_start % 64,
            0,
            "data must start at a multiple of 64 bytes"
        );
        // 10 preamble bytes + a 60-character dict + '\n' spill past 64: NumPy also writes 128.
        assert_eq!(data_start, 128);
        let header = std::str::from_utf8(&bytes[PREAMBLE..data_start]).unwrap();
        assert!(header.ends_with('\n'));
        assert_eq!(
            header.trim_end(),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }"
        );
        // Only spaces between the dict and the newline.
        let pad = &header[header.find('}').unwrap() + 1..header.len() - 1];
        assert!(pad.bytes().all(|b| b == b' '));
        assert_eq!(bytes.len(), data_start + 6 * 4);
        assert_eq!(
            &bytes[data_start + 4..data_start + 8],
            &1.0f32.to_le_bytes()
        );
    }

    #[test]
    fn alignment_holds_for_long_shapes() {
        // Shapes with many digits push the header past the first 64-byte block.
        for (rows, cols) in [
            (0, 0),
            (1, 1),
            (2000, 32),
            (123_456_789, 1),
            (10_000_000_000, 70),
        ] {
            let h = header_f32(rows, cols);
            assert_eq!(h.len() % 64, 0, "shape ({rows}, {cols})");
            let header_len = u16::from_le_bytes([h[8], h[9]]) as usize;
            assert_eq!(PREAMBLE + header_len, h.len());
            assert_eq!(*h.last().unwrap(), b'\n');
        }
        assert_eq!(header_f32(10_000_000_000, 70).len(), 128);
    }

    #[test]
    fn round_trip() {
        let data: Vec<f32> = vec![
            -1.5,
            0.0,
            f32::MIN_POSITIVE,
            3.25e7,
            f32::NAN,
            -0.0,
            1.0e-30,
            f32::INFINITY,
        ];
        let bytes = encode_f32(4, 2, &data);
        let (rows, cols, back) = decode_f32(&bytes).unwrap();
        assert_eq!((rows, cols), (4, 2));
        assert_eq!(back.len(), data.len());
        for (a, b) in data.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}

//! A small strict CSV reader for numeric tables, and the two tables the experiments use:
//! `digits/digits.csv.gz` ([`decode_digits`]) and `lgcp/pines.csv` ([`decode_pines`]).
//!
//! [`parse_table`] rules (strict on purpose: a data file that does not follow them is more
//! likely the wrong file than a dialect worth guessing):
//! - UTF-8 text, lines ended by `\n` (a `\r` before it is dropped, so CRLF works); the last line
//!   may lack its newline; an empty line anywhere else is an error.
//! - Fields are separated by `,`. A field is either unquoted (no `"` inside) or wholly quoted
//!   `"..."` with `""` for a literal quote; quoted fields cannot span lines. No whitespace is
//!   trimmed: `1, 2` is an error (`' 2'` is not a number).
//! - With `header: true` the first line is a header of names (quoted or not); it fixes the column
//!   count. Otherwise the first data line does. Every line must have that many fields, or the
//!   error names the line.
//! - Every data field, quoted or not, is a decimal number as Rust's `f64::from_str` reads it.
//!   NaN and ±inf (`nan`, `inf`, and overflowing literals such as `1e999`) are **rejected**
//!   unless `allow_non_finite` is set.
//!
//! Errors give the 1-based line (counting the header) and field.
//!
//! Either table may be given gzip-compressed (magic `1f 8b`); the text is capped at
//! [`MAX_CSV_BYTES`] after decompression.

use super::{gunzip, invalid, is_gzip, DataError, Format};
use std::borrow::Cow;
use std::path::Path;

/// The largest CSV text accepted after decompression (16 MiB; `digits.csv` is 264,712 bytes).
pub const MAX_CSV_BYTES: usize = 16 << 20;
/// Feature columns of the digits table (an 8×8 image, row-major).
pub const DIGITS_FEATURES: usize = 64;
/// Largest feature value of the digits table (a count of on-pixels in a 4×4 block).
pub const DIGITS_MAX_FEATURE: f64 = 16.0;

/// How [`parse_table`] reads a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsvOptions {
    /// The first line is a header of column names.
    pub header: bool,
    /// Accept NaN and ±inf values (rejected by default).
    pub allow_non_finite: bool,
}

/// A numeric table: `rows × cols` values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub header: Option<Vec<String>>,
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f64>,
}

impl Table {
    /// Row `i`, `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[f64]> {
        let start = i.checked_mul(self.cols)?;
        self.values.get(start..start.checked_add(self.cols)?)
    }
}

/// Parse a numeric CSV table (see the module docs for the rules).
pub fn parse_table(bytes: &[u8], opts: &CsvOptions) -> Result<Table, DataError> {
    parse_as(bytes, opts, Format::Csv)
}

/// Read a numeric CSV table (gzip-compressed or plain).
pub fn load_table(path: &Path, opts: &CsvOptions) -> Result<Table, DataError> {
    let bytes = super::read_file(path)?;
    let text = maybe_gunzip(&bytes).map_err(|e| e.in_file(path))?;
    parse_table(&text, opts).map_err(|e| e.in_file(path))
}

fn maybe_gunzip(bytes: &[u8]) -> Result<Cow<'_, [u8]>, DataError> {
    if is_gzip(bytes) {
        gunzip(bytes, MAX_CSV_BYTES).map(Cow::Owned)
    } else if bytes.len() > MAX_CSV_BYTES {
        Err(invalid(
            Format::Csv,
            format!(
                "{} bytes is more than the {MAX_CSV_BYTES}-byte limit for CSV text",
                bytes.len()
            ),
        ))
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

fn parse_as(bytes: &[u8], opts: &CsvOptions, format: Format) -> Result<Table, DataError> {
    let err = |what: String| invalid(format, what);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes
            .get(..at)
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        err(format!("line {line}: not UTF-8 text (byte {at})"))
    })?;
    if text.is_empty() {
        return Err(err("the file is empty".into()));
    }
    // A final '\n' ends the last line; it does not start an empty one.
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = body
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let mut header = None;
    let mut cols = None;
    if opts.header {
        if let Some((no, line)) = lines.next() {
            let names: Vec<String> = split_fields(line, no, format)?
                .into_iter()
                .map(Cow::into_owned)
                .collect();
            cols = Some(names.len());
            header = Some(names);
        }
    }
    let mut values = Vec::new();
    let mut rows = 0usize;
    for (no, line) in lines {
        if line.is_empty() {
            return Err(err(format!("line {no} is empty")));
        }
        let fields = split_fields(line, no, format)?;
        let expect = *cols.get_or_insert(fields.len());
        if fields.len() != expect {
            let from = if header.is_some() {
                "the header"
            } else {
                "line 1"
            };
            return Err(err(format!(
                "line {no} has {} fields, expected {expect} (as {from} has)",
                fields.len()
            )));
        }
        for (j, f) in fields.iter().enumerate() {
            let v: f64 = f.parse().map_err(|_| {
                err(format!(
                    "line {no}, field {}: '{}' is not a number",
                    j + 1,
                    truncate(f)
                ))
            })?;
            if !v.is_finite() && !opts.allow_non_finite {
                return Err(err(format!(
                    "line {no}, field {}: '{}' is not finite (NaN/inf are not accepted)",
                    j + 1,
                    truncate(f)
                )));
            }
            values.push(v);
        }
        rows += 1;
    }
    Ok(Table {
        header,
        rows,
        cols: cols.unwrap_or(0),
        values,
    })
}

/// At most 40 characters of a field, for error messages.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Split one line into fields, unquoting quoted ones.
fn split_fields(line: &str, no: usize, format: Format) -> Result<Vec<Cow<'_, str>>, DataError> {
    let err = |what: String| invalid(format, format!("line {no}, {what}"));
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let field_no = fields.len() + 1;
        if let Some(after_quote) = rest.strip_prefix('"') {
            // Quoted: runs to the next lone '"'; "" is a literal quote.
            let mut value = String::new();
            let mut tail = after_quote;
            loop {
                let Some(q) = tail.find('"') else {
                    return Err(err(format!("field {field_no}: unterminated quote")));
                };
                value.push_str(tail.get(..q).unwrap_or_default());
                tail = tail.get(q + 1..).unwrap_or_default();
                if let Some(t) = tail.strip_prefix('"') {
                    value.push('"');
                    tail = t;
                } else {
                    break;
                }
            }
            fields.push(Cow::Owned(value));
            if tail.is_empty() {
                return Ok(fields);
            }
            match tail.strip_prefix(',') {
                Some(t) => rest = t,
                None => {
                    return Err(err(format!(
                        "field {field_no}: text after the closing quote"
                    )))
                }
            }
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let field = rest.get(..end).unwrap_or_default();
            if field.contains('"') {
                return Err(err(format!(
                    "field {field_no}: a quote inside an unquoted field"
                )));
            }
            fields.push(Cow::Borrowed(field));
            match rest.get(end..).and_then(|t| t.strip_prefix(',')) {
                Some(t) => rest = t,
                None => return Ok(fields),
            }
        }
    }
}

/// The digits table: `n` 8×8 images with features 0..=16 and labels 0..=9.
#[derive(Clone, Debug, PartialEq)]
pub struct Digits {
    /// `[n, 64]`, row-major images, integer values 0..=16.
    pub features: Vec<f32>,
    /// `[n]`, digits 0..=9.
    pub labels: Vec<u8>,
}

impl Digits {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images (never true for a decoded file).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`'s 64 features, `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let start = i.checked_mul(DIGITS_FEATURES)?;
        self.features
            .get(start..start.checked_add(DIGITS_FEATURES)?)
    }
}

/// Read `digits.csv.gz` (or its uncompressed text).
pub fn load_digits(path: &Path) -> Result<Digits, DataError> {
    let bytes = super::read_file(path)?;
    decode_digits(&bytes).map_err(|e| e.in_file(path))
}

/// Decode the digits table: no header, 65 integer columns per line (64 features 0..=16, then
/// the label 0..=9), at least one line. Gzip-compressed or plain text.
pub fn decode_digits(bytes: &[u8]) -> Result<Digits, DataError> {
    let err = |what: String| invalid(Format::Digits, what);
    let text = maybe_gunzip(bytes)?;
    let t = parse_as(&text, &CsvOptions::default(), Format::Digits)?;
    if t.cols != DIGITS_FEATURES + 1 {
        return Err(err(format!(
            "{} columns, expected {} (64 features and a label)",
            t.cols,
            DIGITS_FEATURES + 1
        )));
    }
    if t.rows == 0 {
        return Err(err("no rows".into()));
    }
    let mut features = Vec::with_capacity(t.rows * DIGITS_FEATURES);
    let mut labels = Vec::with_capacity(t.rows);
    for (i, row) in t.values.chunks_exact(t.cols).enumerate() {
        let (feats, label) = row.split_at(DIGITS_FEATURES);
        for (j, &v) in feats.iter().enumerate() {
            if !(v.fract() == 0.0 && (0.0..=DIGITS_MAX_FEATURE).contains(&v)) {
                return Err(err(format!(
                    "line {}, field {}: feature {v} is not an integer 0..=16",
                    i + 1,
                    j + 1
                )));
            }
            features.push(v as f32);
        }
        let l = label.first().copied().unwrap_or(f64::NAN);
        if !(l.fract() == 0.0 && (0.0..=9.0).contains(&l)) {
            return Err(err(format!(
                "line {}, field 65: label {l} is not a digit 0..9",
                i + 1
            )));
        }
        labels.push(l as u8);
    }
    Ok(Digits { features, labels })
}

/// Read `pines.csv` (or a gzip of it).
pub fn load_pines(path: &Path) -> Result<Vec<[f64; 2]>, DataError> {
    let bytes = super::read_file(path)?;
    decode_pines(&bytes).map_err(|e| e.in_file(path))
}

/// Decode the pines point pattern: a header `"","data_x","data_y"` (an R row-name column, whose
/// values are ignored, then x and y) or just `data_x,data_y`; then at least one row; every
/// point inside the unit square `[0, 1]²`. Returns the (x, y) points in file order.
pub fn decode_pines(bytes: &[u8]) -> Result<Vec<[f64; 2]>, DataError> {
    let err = |what: String| invalid(Format::Pines, what);
    let text = maybe_gunzip(bytes)?;
    let opts = CsvOptions {
        header: true,
        ..CsvOptions::default()
    };
    let t = parse_as(&text, &opts, Format::Pines)?;
    let names: Vec<&str> = t.header.iter().flatten().map(String::as_str).collect();
    let skip = match names.as_slice() {
        ["", "data_x", "data_y"] => 1,
        ["data_x", "data_y"] => 0,
        other => {
            return Err(err(format!(
                "header {other:?} is not [\"\", \"data_x\", \"data_y\"] or [\"data_x\", \"data_y\"]"
            )))
        }
    };
    if t.rows == 0 {
        return Err(err("no points".into()));
    }
    t.values
        .chunks_exact(t.cols)
        .enumerate()
        .map(|(i, row)| match row.get(skip..) {
            Some(&[x, y]) if (0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y) => Ok([x, y]),
            _ => Err(err(format!(
                "line {}: point {:?} is not inside the unit square [0, 1]²",
                i + 2,
                row.get(skip..).unwrap_or_default()
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<T: std::fmt::Debug>(r: Result<T, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn parses_quoted_and_plain() {
        let t = parse_table(
            b"a,\"b\"\"q\"\n1,2.5\r\n\"3\",-4e1",
            &CsvOptions {
                header: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(t.header, Some(vec!["a".into(), "b\"q".into()]));
        assert_eq!((t.rows, t.cols), (2, 2));
        assert_eq!(t.values, vec![1.0, 2.5, 3.0, -40.0]);
        assert_eq!(t.row(1), Some(&[3.0, -40.0][..]));
        assert_eq!(t.row(2), None);
        let t = parse_table(b"1\n", &CsvOptions::default()).unwrap();
        assert_eq!(t.values, vec![1.0]);
        // Header only: zero rows.
        let t = parse_table(
            b"x,y\n",
            &CsvOptions {
                header: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((t.rows, t.cols), (0, 2));
    }

    #[test]
    fn strict_errors_name_the_line() {
        let o = CsvOptions::default();
        assert_eq!(
            msg(parse_table(b"1,2\n3\n", &o)),
            "csv: line 2 has 1 fields, expected 2 (as line 1 has)"
        );
        assert!(msg(parse_table(b"1,2\n\n3,4\n", &o)).contains("line 2 is empty"));
        assert!(
            msg(parse_table(b"1,2\n3, 4\n", &o)).contains("line 2, field 2: ' 4' is not a number")
        );
        assert!(msg(parse_table(b"1,nan\n", &o)).contains("not finite"));
        assert!(msg(parse_table(b"1e999\n", &o)).contains("not finite"));
        assert!(msg(parse_table(b"\"1\n", &o)).contains("unterminated quote"));
        assert!(msg(parse_table(b"\"1\"x\n", &o)).contains("after the closing quote"));
        assert!(msg(parse_table(b"1\"\n", &o)).contains("quote inside"));
        assert!(msg(parse_table(b"1\n\xff\n", &o)).contains("line 2: not UTF-8"));
        assert!(msg(parse_table(b"", &o)).contains("empty"));
        let lax = CsvOptions {
            allow_non_finite: true,
            ..o
        };
        let t = parse_table(b"nan,inf,-inf\n", &lax).unwrap();
        assert!(t.values[0].is_nan() && t.values[1] == f64::INFINITY);
    }

    #[test]
    fn digits_and_pines_shapes() {
        let mut line: Vec<String> = (0..64).map(|i| (i % 17).to_string()).collect();
        line.push("7".into());
        let text = format!("{}\n", line.join(","));
        let d = decode_digits(text.as_bytes()).unwrap();
        assert_eq!((d.len(), d.labels[0]), (1, 7));
        assert_eq!(d.image(0).unwrap()[16], 16.0);
        let bad = text.replace(",7\n", ",10\n");
        assert!(msg(decode_digits(bad.as_bytes())).contains("label 10"));
        assert!(msg(decode_digits(b"1,2\n")).contains("2 columns, expected 65"));

        let p = decode_pines(b"\"\",\"data_x\",\"data_y\"\n\"1\",0.25,1\n\"2\",0,0.5\n").unwrap();
        assert_eq!(p, vec![[0.25, 1.0], [0.0, 0.5]]);
        assert_eq!(
            decode_pines(b"data_x,data_y\n0.5,0.5\n").unwrap(),
            vec![[0.5, 0.5]]
        );
        assert!(msg(decode_pines(b"data_x,data_y\n0.5,1.5\n")).contains("line 2: point [0.5, 1.5]"));
        assert!(msg(decode_pines(b"x,y\n0.5,0.5\n")).contains("header"));
        assert!(msg(decode_pines(b"data_x,data_y\n")).contains("no points"));
    }
}

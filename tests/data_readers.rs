//! The data readers on the real files in the project's `data/` folder (a copy of
//! `shared/data`): checksums, shapes and the known values `data/README.md` states. A missing
//! folder is a failure, not a skip.

use diffusion_samplers::data::{checksum, csv, idx, npy};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    let dir = diffusion_samplers::data::project_dir();
    assert!(
        dir.join(checksum::SUMS_FILE).is_file(),
        "the data folder {} (with its SHA256SUMS) is missing: the project ships its data files",
        dir.display()
    );
    dir
}

#[test]
fn every_file_matches_sha256sums() {
    let dir = data_dir();
    assert_eq!(checksum::verify_all(&dir).unwrap(), 18);
    checksum::verify(&dir, "lgcp/pines.csv").unwrap();
    assert!(matches!(
        checksum::verify(&dir, "nope.bin"),
        Err(diffusion_samplers::data::DataError::NotListed { .. })
    ));
}

#[test]
fn vae_weights_have_the_readme_shapes() {
    let dir = data_dir().join("vae_mnist_bce");
    let expect: [(&str, &[usize]); 10] = [
        ("fc1.weight", &[400, 784]),
        ("fc1.bias", &[400]),
        ("fc21.weight", &[20, 400]),
        ("fc21.bias", &[20]),
        ("fc22.weight", &[20, 400]),
        ("fc22.bias", &[20]),
        ("fc3.weight", &[400, 20]),
        ("fc3.bias", &[400]),
        ("fc4.weight", &[784, 400]),
        ("fc4.bias", &[784]),
    ];
    for (name, shape) in expect {
        let path = dir.join(format!("{name}.npy"));
        let bytes = std::fs::read(&path).unwrap();
        let a = npy::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.shape, shape, "{name}");
        assert_eq!(a.data.len(), shape.iter().product::<usize>(), "{name}");
        assert!(
            a.data.iter().all(|v| v.is_finite()),
            "{name}: all values are finite"
        );
        // Header is 128 bytes (v1.0) and the payload is the raw f32 storage.
        assert_eq!(bytes.len(), 128 + 4 * a.data.len(), "{name}");
        assert_eq!(&bytes[6..8], &[1, 0], "{name}: version 1.0");
        // Our writer produces the same file byte for byte for the 2-D weights.
        if let [rows, cols] = shape {
            assert_eq!(npy::encode_f32(*rows, *cols, &a.data), bytes, "{name}");
        } else {
            assert_eq!(npy::encode(shape, &a.data), bytes, "{name}");
        }
        assert_eq!(npy::load(&path).unwrap(), a);
    }
}

#[test]
fn mnist_test_set_counts_and_first_label() {
    let dir = data_dir().join("mnist");
    let images = idx::load_images(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!((images.n, images.rows, images.cols), (10_000, 28, 28));
    assert_eq!(images.pixels.len(), 7_840_000);
    let labels = idx::load_labels(&dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(labels.labels.len(), 10_000);
    assert_eq!(labels.labels[0], 7, "the first test label is 7");
    assert_eq!(
        labels.histogram(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    // The uncompressed IDX bytes are the canonical ones (README's sha256 of the raw files).
    let raw_images = idx::encode_images_raw(&images);
    assert_eq!(
        checksum::sha256_hex(&raw_images),
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    );
    assert_eq!(
        checksum::sha256_hex(&idx::encode_labels_raw(&labels.labels)),
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    );
    // The raw form decodes to the same thing.
    assert_eq!(idx::decode_images(&raw_images).unwrap(), images);

    // mnist_evaluation_subset.npy is exactly the first 100 test images as f32(u8) / 255.
    let subset = npy::load(&data_dir().join("vae_mnist_bce/mnist_evaluation_subset.npy")).unwrap();
    assert_eq!(subset.shape, vec![100, 1, 28, 28]);
    let first100: Vec<f32> = images.to_f32()[..100 * 784].to_vec();
    assert!(
        subset
            .data
            .iter()
            .zip(&first100)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "evaluation subset = first 100 test images / 255, bit for bit"
    );
}

#[test]
fn mnist_training_set_counts() {
    let dir = data_dir().join("mnist");
    let images = idx::load_images(&dir.join("train-images-idx3-ubyte.gz")).unwrap();
    assert_eq!((images.n, images.rows, images.cols), (60_000, 28, 28));
    assert_eq!(
        checksum::sha256_hex(&idx::encode_images_raw(&images)),
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    );
    let labels = idx::load_labels(&dir.join("train-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(
        labels.histogram(),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    // Swapping the files is caught by the magic number.
    let e = idx::load_labels(&dir.join("t10k-images-idx3-ubyte.gz"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t10k-images-idx3-ubyte.gz") && e.contains("an image file"),
        "{e}"
    );
}

#[test]
fn digits_table() {
    let d = csv::load_digits(&data_dir().join("digits/digits.csv.gz")).unwrap();
    assert_eq!(d.len(), 1797);
    assert_eq!(d.features.len(), 1797 * 64);
    let mut counts = [0usize; 10];
    for &l in &d.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    // First row of the file (sklearn's load_digits().data[0]), a zero.
    assert_eq!(
        &d.image(0).unwrap()[..8],
        &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(d.labels[0], 0);
    assert!(d.features.iter().all(|&v| (0.0..=16.0).contains(&v)));
}

#[test]
fn pines_points() {
    let p = csv::load_pines(&data_dir().join("lgcp/pines.csv")).unwrap();
    assert_eq!(p.len(), 126);
    assert_eq!(p[0], [0.3006125, 0.89297642]);
    let (xs, ys): (Vec<f64>, Vec<f64>) = p.iter().map(|&[x, y]| (x, y)).unzip();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // The README rounds the ranges (the file writes e.g. 0.00518349999999996).
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(min(&xs), 0.0051835) && close(max(&xs), 0.9881354));
    assert!(close(min(&ys), 0.0032581) && close(max(&ys), 0.9995128));
    // The README's binning on the 40 × 40 grid: 111 non-empty bins, at most 3 points in one.
    let mut bins = vec![0u32; 1600];
    for &[x, y] in &p {
        let r = ((40.0 * x).floor() as usize).min(39);
        let c = ((40.0 * y).floor() as usize).min(39);
        bins[r * 40 + c] += 1;
    }
    assert_eq!(bins.iter().filter(|&&b| b > 0).count(), 111);
    assert_eq!(bins.iter().copied().max(), Some(3));
    assert_eq!(bins.iter().filter(|&&b| b == 2).count(), 9);
}

#[test]
fn vae_test_vectors_file_is_there() {
    let path = data_dir().join("vae_mnist_bce/test_vectors.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(v["mu"].as_array().map(Vec::len), Some(20));
    assert_eq!(v["logvar"].as_array().map(Vec::len), Some(20));
    let log_r0 = v["log_r_at_zero"]["log_r"].as_f64().unwrap();
    assert!((log_r0 - -270.52673876362974).abs() < 1e-9);
}

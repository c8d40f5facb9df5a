//! PNG figures of a run: `samples.png` (final samples over the target's log-density) and
//! `curve.png` (training loss and log Z against the iteration).
//!
//! Figures are drawn with `plotters`' bitmap backend. The pixels depend only on the inputs and on
//! the machine's fonts (text goes through fontconfig), which is why the manifest lists figures
//! without digesting them. Each PNG is rendered into a temporary file beside its final name and
//! renamed into place, so a folder never holds a half-written figure.
//!
//! Figures are a by-product: a figure that cannot be drawn (no usable font on the machine, any
//! `plotters` error or panic) is reported on stderr and left out of the list, and the run keeps
//! its results. Only failing to sync or rename a drawn file is an error ([`CliError`]).

use crate::error::CliError;
use diffusion_samplers::config::{ExperimentConfig, FunnelVariant, Method, TargetConfig};
use diffusion_samplers::energies::Energy;
use diffusion_samplers::train::{build_energy, CurveRow, EvalRow};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fs;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// File names of the figures.
pub const SAMPLES_PNG: &str = "samples.png";
pub const CURVE_PNG: &str = "curve.png";

const SAMPLES_SIZE: (u32, u32) = (800, 800);
const CURVE_SIZE: (u32, u32) = (800, 600);
/// Cells per side of the log-density grid.
const GRID: usize = 200;
/// The shading covers this many nats below the grid's maximum log-density…
const SHADE_NATS: f64 = 20.0;
/// …in bands of this many nats (the band edges read as contour lines).
const BAND_NATS: f64 = 2.0;

type Root<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Write the run's figures into `dir`; returns the file names written.
///
/// `samples.png` is skipped when there are no samples (a failed run); `curve.png` when training
/// recorded no iteration and no evaluation; either when it cannot be drawn (warning on stderr).
pub fn write_figures(
    dir: &Path,
    cfg: &ExperimentConfig,
    curve: &[CurveRow],
    evals: &[EvalRow],
    samples: Option<(&[f32], usize)>,
) -> Result<Vec<String>, CliError> {
    // The RTB toy's samples are shaded by the posterior p_9 rather than by the ratio r.
    let energy: Box<dyn diffusion_samplers::energies::Energy> = match cfg.target {
        diffusion_samplers::config::TargetConfig::Gmm25To9 => {
            Box::new(diffusion_samplers::energies::reweighted_gmm::NineModeTarget::default())
        }
        _ => build_energy(cfg).map_err(|e| CliError::usage(e.to_string()))?,
    };
    let mut written = Vec::new();
    if let Some((x, d)) = samples.filter(|(x, d)| *d >= 2 && x.len() >= *d) {
        let drawn = render(dir, SAMPLES_PNG, SAMPLES_SIZE, |root| {
            if matches!(cfg.target, TargetConfig::Digits { .. }) {
                draw_digit_grid(root, cfg, x, d)
            } else {
                draw_samples(root, cfg, energy.as_ref(), x, d)
            }
        })?;
        if drawn {
            written.push(SAMPLES_PNG.to_string());
        }
    }
    if !curve.is_empty() || !evals.is_empty() {
        let drawn = render(dir, CURVE_PNG, CURVE_SIZE, |root| {
            draw_curve(root, cfg, energy.as_ref(), curve, evals)
        })?;
        if drawn {
            written.push(CURVE_PNG.to_string());
        }
    }
    Ok(written)
}

/// Draw into `dir/.<stem>.tmp.png` (the extension picks the encoder), then rename to `name`.
/// Returns whether the figure was written: a drawing failure is a warning, not an error.
fn render(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    draw: impl FnOnce(&Root<'_>) -> DrawResult,
) -> Result<bool, CliError> {
    let dst = dir.join(name);
    let stem = name.strip_suffix(".png").unwrap_or(name);
    let tmp = dir.join(format!(".{stem}.tmp.png"));
    let outcome = catch_unwind(AssertUnwindSafe(|| -> DrawResult {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        draw(&root)?;
        root.present()?;
        Ok(())
    }));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(format!(
            "plotters panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    };
    if let Some(msg) = failure {
        let _ = fs::remove_file(&tmp);
        eprintln!(
            "warning: {}",
            CliError::io("draw", &dst, std::io::Error::other(msg))
        );
        eprintln!("warning: the run is kept without {name}");
        return Ok(false);
    }
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| CliError::io("sync", &tmp, e))?;
    fs::rename(&tmp, &dst).map_err(|e| CliError::io("rename into place", &dst, e))?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// samples.png

/// The region worth showing for the target's first two coordinates: (x0 range, x1 range).
fn target_box(cfg: &ExperimentConfig) -> (Range<f64>, Range<f64>) {
    match &cfg.target {
        TargetConfig::Gmm25 | TargetConfig::Gmm25To9 => (-14.0..14.0, -14.0..14.0),
        // Pixels in [−1, 1].
        TargetConfig::Digits { .. } => (-1.2..1.2, -1.2..1.2),
        TargetConfig::Gaussian { mean, std } => {
            let around = |m: f64| (m - 4.0 * std)..(m + 4.0 * std);
            (around(mean[0]), around(*mean.get(1).unwrap_or(&0.0)))
        }
        TargetConfig::Gmm9 => (-8.0..8.0, -8.0..8.0),
        // Pair (a, b): the a-wells sit near ±1.7, b ~ N(0, 1).
        TargetConfig::ManyWell { .. } => (-3.0..3.0, -4.0..4.0),
        // x0 ~ N(0, s²); x1 | x0 ~ N(0, e^{x0}).
        TargetConfig::Funnel { variant, .. } => match variant {
            FunnelVariant::Hard => (-10.0..10.0, -10.0..10.0),
            FunnelVariant::Easy => (-4.0..4.0, -6.0..6.0),
        },
        // Log-intensities around the prior mean μ₀ ≈ 3.9 (prior std √1.91 ≈ 1.4).
        TargetConfig::Lgcp => (-2.0..10.0, -2.0..10.0),
        // Latents near the N(0, I) prior, the posterior of evaluation image 0.
        TargetConfig::Vae { .. } => (-4.0..4.0, -4.0..4.0),
        // Actions of all test states together: the behaviour circle (radius 0.5) and beyond.
        TargetConfig::Bandit { .. } => (-1.5..1.5, -1.5..1.5),
        // One pre-tanh torque (no samples figure is drawn for d = 1).
        TargetConfig::Pendulum { .. } => (-3.0..3.0, -3.0..3.0),
    }
}

/// `base` widened to cover `values`, but never beyond four half-widths either side of its
/// centre (one stray sample must not shrink the target to a dot); then padded by 3 %.
fn view_range(base: &Range<f64>, values: impl Iterator<Item = f64>) -> Range<f64> {
    let (mut lo, mut hi) = (base.start, base.end);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let (c, h) = (0.5 * (base.start + base.end), 0.5 * (base.end - base.start));
    let (lo, hi) = (lo.max(c - 4.0 * h), hi.min(c + 4.0 * h));
    let pad = 0.03 * (hi - lo);
    (lo - pad)..(hi + pad)
}

/// An axis label: at most 3 decimals, trailing zeros dropped (`10`, `2.5`, `-0.125`).
fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A light-to-dark blue ramp for t ∈ [0, 1].
fn shade(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [
        (239, 243, 255),
        (189, 215, 238),
        (107, 174, 214),
        (49, 130, 189),
        (8, 69, 148),
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + f * (b as f64 - a as f64)).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// log R on a GRID × GRID cell-centred grid over `xr` × `yr`, varying the first two coordinates
/// of a D-vector whose other coordinates are 0. Row-major, y outer.
fn log_density_grid(energy: &dyn Energy, d: usize, xr: &Range<f64>, yr: &Range<f64>) -> Vec<f64> {
    let mut x = vec![0f32; d];
    let mut out = Vec::with_capacity(GRID * GRID);
    for j in 0..GRID {
        x[1] = (yr.start + (j as f64 + 0.5) * (yr.end - yr.start) / GRID as f64) as f32;
        for i in 0..GRID {
            x[0] = (xr.start + (i as f64 + 0.5) * (xr.end - xr.start) / GRID as f64) as f32;
            out.push(energy.log_reward_row(&x));
        }
    }
    out
}

/// The first 100 samples of an image target as a 10 × 10 grid of 8 × 8 grey images
/// (pixel −1 white, +1 black, as the digits are drawn).
fn draw_digit_grid(root: &Root<'_>, cfg: &ExperimentConfig, x: &[f32], d: usize) -> DrawResult {
    root.fill(&WHITE)?;
    let side = (d as f64).sqrt() as usize;
    let n = (x.len() / d).min(100);
    let title = format!("final samples (first {n}, {side} × {side} images)");
    let sub = match &cfg.paper {
        Some(p) => format!(
            "{}, {}, row \"{}\" · seed {}",
            p.paper, p.table, p.row, cfg.seed
        ),
        None => format!("seed {}", cfg.seed),
    };
    let area = root.titled(&title, ("sans-serif", 22))?;
    let area = area.titled(&sub, ("sans-serif", 15))?;
    let (w, h) = area.dim_in_pixel();
    let cell = (w.min(h) as usize / 10).max(side);
    let px = (cell - 2) / side;
    for (k, img) in x.chunks_exact(d).take(n).enumerate() {
        let (gx, gy) = ((k % 10) * cell, (k / 10) * cell);
        for (p, &v) in img.iter().enumerate() {
            let level = (255.0 * (1.0 - (v.clamp(-1.0, 1.0) + 1.0) / 2.0)).round() as u8;
            let (cx, cy) = ((gx + (p % side) * px) as i32, (gy + (p / side) * px) as i32);
            area.draw(&Rectangle::new(
                [(cx, cy), (cx + px as i32, cy + px as i32)],
                RGBColor(level, level, level).filled(),
            ))?;
        }
    }
    Ok(())
}

fn draw_samples(
    root: &Root<'_>,
    cfg: &ExperimentConfig,
    energy: &dyn Energy,
    x: &[f32],
    d: usize,
) -> DrawResult {
    root.fill(&WHITE)?;
    let n = x.len() / d;
    let pts: Vec<(f64, f64)> = x
        .chunks_exact(d)
        .map(|r| (r[0] as f64, r[1] as f64))
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    let (bx, by) = target_box(cfg);
    let mut xr = view_range(&bx, pts.iter().map(|p| p.0));
    let mut yr = view_range(&by, pts.iter().map(|p| p.1));
    if d == 2 {
        // A 2-D target is drawn with equal scales on both axes.
        let span = (xr.end - xr.start).max(yr.end - yr.start);
        let (cx, cy) = (0.5 * (xr.start + xr.end), 0.5 * (yr.start + yr.end));
        xr = (cx - 0.5 * span)..(cx + 0.5 * span);
        yr = (cy - 0.5 * span)..(cy + 0.5 * span);
    }
    let inside = |p: &&(f64, f64)| xr.contains(&p.0) && yr.contains(&p.1);
    let shown: Vec<(f64, f64)> = pts.iter().filter(inside).copied().collect();

    // The density of (x0, x1) is known exactly for 2-D targets, and for Manywell, whose pairs
    // are independent: log R with the other coordinates at 0 is the pair's log-density plus a
    // constant. The funnel's (x0, x1) marginal is not a slice of log R, so it gets no shading.
    let shaded = d == 2 || matches!(cfg.target, TargetConfig::ManyWell { .. });

    let pair = if d > 2 { ", coordinates (x0, x1)" } else { "" };
    let title = format!("{} (d = {d}): final samples{pair}", energy.name());
    let mut sub = match &cfg.paper {
        Some(p) => format!(
            "{}, {}, row \"{}\" · seed {}",
            p.paper, p.table, p.row, cfg.seed
        ),
        None => format!("seed {}", cfg.seed),
    };
    sub.push_str(&format!(" · {n} samples"));
    if shown.len() < n {
        sub.push_str(&format!(" ({} outside the view)", n - shown.len()));
    }
    if shaded {
        sub.push_str(&format!(" · shading: log R, {BAND_NATS}-nat bands"));
    }
    let area = root.titled(&title, ("sans-serif", 22))?;
    let area = area.titled(&sub, ("sans-serif", 15))?;

    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(xr.clone(), yr.clone())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc("x0")
        .y_desc("x1")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    if shaded {
        let grid = log_density_grid(energy, d, &xr, &yr);
        let max = grid
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        if max.is_finite() {
            let bands = (SHADE_NATS / BAND_NATS).round() as usize;
            let (cw, ch) = (
                (xr.end - xr.start) / GRID as f64,
                (yr.end - yr.start) / GRID as f64,
            );
            let cells = grid.iter().enumerate().filter_map(|(k, &v)| {
                let below = max - v; // ≥ 0, NaN for NaN
                if below.is_nan() || below >= SHADE_NATS {
                    return None;
                }
                // Band 0 is the top band (darkest).
                let band = ((below / BAND_NATS).floor() as usize).min(bands - 1);
                let t = 1.0 - band as f64 / (bands - 1) as f64;
                let (i, j) = (k % GRID, k / GRID);
                let x0 = xr.start + i as f64 * cw;
                let y0 = yr.start + j as f64 * ch;
                Some(Rectangle::new(
                    [(x0, y0), (x0 + cw, y0 + ch)],
                    shade(0.1 + 0.9 * t).filled(),
                ))
            });
            chart.draw_series(cells)?;
        }
    }
    let dot = RGBColor(215, 48, 39).mix(0.75).filled();
    chart.draw_series(shown.iter().map(|&p| Circle::new(p, 2, dot)))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// curve.png

/// A y range for `(iteration, value)` points that follows the second half of training: early
/// transients (a log Ẑ of −10⁴ at iteration 0) may not squash the converged part into a line.
/// Points beyond it are drawn on the panel's edge.
fn robust_range(points: &[(f64, f64)], last_iter: f64) -> Range<f64> {
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    if finite.is_empty() {
        return 0.0..1.0;
    }
    let bounds = |it: &mut dyn Iterator<Item = f64>| {
        it.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
    };
    let (amin, amax) = bounds(&mut finite.iter().map(|p| p.1));
    let late: Vec<f64> = finite
        .iter()
        .filter(|p| p.0 >= 0.5 * last_iter)
        .map(|p| p.1)
        .collect();
    let (lmin, lmax) = if late.is_empty() {
        (amin, amax)
    } else {
        bounds(&mut late.iter().copied())
    };
    let reach = 2.0 * (lmax - lmin).max(1.0);
    let (lo, hi) = (amin.max(lmin - reach), amax.min(lmax + reach));
    let pad = 0.06 * (hi - lo).max(1e-9);
    (lo - pad)..(hi + pad)
}

/// Centred moving mean over `window` points (shorter at the ends).
fn moving_mean(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for p in points {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + p.1);
    }
    (0..points.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            (points[i].0, (prefix[b] - prefix[a]) / (b - a) as f64)
        })
        .collect()
}

const RAW: RGBColor = RGBColor(158, 188, 218);
const SMOOTH: RGBColor = RGBColor(8, 69, 148);
const LOGZ: RGBColor = RGBColor(35, 139, 69);
const EVAL: RGBColor = RGBColor(33, 113, 181);
const EVAL_RW: RGBColor = RGBColor(215, 48, 39);
/// Width of the legend column right of the panels.
const LEGEND_W: u32 = 175;

/// How a legend entry is drawn.
enum Mark {
    Line(RGBColor, u32),
    Dashed(RGBColor),
    Dot(RGBColor),
    Triangle(RGBColor),
}

/// A legend in its own area (never over the data): one entry per line from the top.
fn draw_legend(area: &Root<'_>, entries: &[(String, Mark)]) -> DrawResult {
    let font = ("sans-serif", 14).into_font();
    for (k, (label, mark)) in entries.iter().enumerate() {
        let y = 24 + 24 * k as i32;
        match *mark {
            Mark::Line(c, w) => {
                area.draw(&PathElement::new(vec![(6, y), (32, y)], c.stroke_width(w)))?
            }
            Mark::Dashed(c) => {
                for x in [6, 17, 28] {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 6, y)],
                        c.stroke_width(1),
                    ))?;
                }
            }
            Mark::Dot(c) => area.draw(&Circle::new((19, y), 4, c.filled()))?,
            Mark::Triangle(c) => area.draw(&TriangleMarker::new((19, y), 6, c.filled()))?,
        }
        area.draw(&Text::new(label.clone(), (40, y - 8), font.clone()))?;
    }
    Ok(())
}

fn draw_curve(
    root: &Root<'_>,
    cfg: &ExperimentConfig,
    energy: &dyn Energy,
    curve: &[CurveRow],
    evals: &[EvalRow],
) -> DrawResult {
    root.fill(&WHITE)?;
    let title = match &cfg.paper {
        Some(p) => format!(
            "{}: training, {} row \"{}\" (seed {})",
            energy.name(),
            p.table,
            p.row,
            cfg.seed
        ),
        None => format!("{}: training (seed {})", energy.name(), cfg.seed),
    };
    let area = root.titled(&title, ("sans-serif", 20))?;
    let (w, h) = area.dim_in_pixel();
    let (plots, legends) = area.split_horizontally(w.saturating_sub(LEGEND_W));
    let (top, bottom) = plots.split_vertically(h / 2);
    let (legend_top, legend_bottom) = legends.split_vertically(h / 2);

    let last = curve
        .iter()
        .map(|r| r.iteration)
        .chain(evals.iter().map(|r| r.iteration))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    // A little room right of the last iteration, so its markers are drawn whole.
    let xr = 0.0..last * 1.02;

    // Top panel: the loss, raw and smoothed.
    let loss: Vec<(f64, f64)> = curve
        .iter()
        .map(|r| (r.iteration as f64, r.loss))
        .filter(|p| p.1.is_finite())
        .collect();
    let window = (loss.len() / 50).max(1) | 1;
    let smooth = (window > 1).then(|| moving_mean(&loss, window));
    let smooth = smooth.as_deref();
    let positive = !loss.is_empty() && loss.iter().all(|p| p.1 > 0.0);
    if positive {
        let (lo, hi) = loss.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        // Whole decades: plotters labels a log axis only at powers of 10 and their multiples.
        let yr = 10f64.powf(lo.log10().floor())..10f64.powf(hi.log10().ceil());
        loss_panel(
            &top,
            xr.clone(),
            yr.log_scale(),
            &loss,
            smooth,
            "loss (log scale)",
        )?;
    } else {
        let yr = robust_range(&loss, last);
        loss_panel(&top, xr.clone(), yr, &loss, smooth, "loss")?;
    }
    let mut entries = vec![("loss".to_string(), Mark::Line(RAW, 2))];
    if window > 1 {
        entries.push((format!("moving mean ({window})"), Mark::Line(SMOOTH, 2)));
    }
    draw_legend(&legend_top, &entries)?;

    // Bottom panel: log Z (learned or batch estimate) and the periodic evaluations.
    let log_z: Vec<(f64, f64)> = curve
        .iter()
        .map(|r| (r.iteration as f64, r.log_z))
        .filter(|p| p.1.is_finite())
        .collect();
    let est: Vec<(f64, f64)> = evals
        .iter()
        .map(|r| (r.iteration as f64, r.log_z))
        .filter(|p| p.1.is_finite())
        .collect();
    let est_rw: Vec<(f64, f64)> = evals
        .iter()
        .map(|r| (r.iteration as f64, r.log_z_rw))
        .filter(|p| p.1.is_finite())
        .collect();
    let truth = energy.log_z().filter(|v| v.is_finite());
    let mut all: Vec<(f64, f64)> = log_z.iter().chain(&est).chain(&est_rw).copied().collect();
    if let Some(t) = truth {
        all.push((last, t));
    }
    let yr = robust_range(&all, last);
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(38)
        .y_label_area_size(62)
        .build_cartesian_2d(xr.clone(), yr)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc("iteration")
        .y_desc("log Z")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    let learned = match cfg.train.method {
        Method::Tb | Method::Rtb => "learned log Z",
        Method::Mle
        | Method::EpsMse
        | Method::Guidance
        | Method::Resample
        | Method::Dps
        | Method::LgdMc => "log Z (not trained)",
        Method::RlKl | Method::RlKlPaper | Method::Ddpo | Method::Dpok => "batch ELBO",
        Method::SubTb | Method::Db => "learned log F(x₀, 0)",
        Method::VarGrad | Method::Pis => "batch log Z",
    };
    let mut entries = vec![(learned.to_string(), Mark::Line(LOGZ, 2))];
    chart.draw_series(LineSeries::new(log_z.iter().copied(), LOGZ.stroke_width(2)))?;
    if let Some(t) = truth {
        chart.draw_series(DashedLineSeries::new(
            [(0.0, t), (last, t)],
            8,
            5,
            BLACK.stroke_width(1),
        ))?;
        entries.push((format!("true log Z ({})", tick(t)), Mark::Dashed(BLACK)));
    }
    chart.draw_series(est.iter().map(|&p| Circle::new(p, 4, EVAL.filled())))?;
    chart.draw_series(
        est_rw
            .iter()
            .map(|&p| TriangleMarker::new(p, 6, EVAL_RW.filled())),
    )?;
    entries.push(("eval log Ẑ".to_string(), Mark::Dot(EVAL)));
    entries.push(("eval log Ẑ (RW)".to_string(), Mark::Triangle(EVAL_RW)));
    draw_legend(&legend_bottom, &entries)?;
    Ok(())
}

fn loss_panel<Y>(
    area: &Root<'_>,
    xr: Range<f64>,
    yr: Y,
    raw: &[(f64, f64)],
    smooth: Option<&[(f64, f64)]>,
    desc: &str,
) -> DrawResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(38)
        .y_label_area_size(62)
        .build_cartesian_2d(xr, yr)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc("iteration")
        .y_desc(desc)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    chart.draw_series(LineSeries::new(raw.iter().copied(), RAW.stroke_width(1)))?;
    if let Some(smooth) = smooth {
        chart.draw_series(LineSeries::new(
            smooth.iter().copied(),
            SMOOTH.stroke_width(2),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_range_covers_box_and_caps_outliers() {
        let r = view_range(&(-1.0..1.0), [0.5, 3.0].into_iter());
        assert!(r.start < -1.0 && r.end > 3.0);
        let r = view_range(&(-1.0..1.0), [1e9].into_iter());
        assert!(r.end < 4.5, "{r:?}");
    }

    #[test]
    fn robust_range_follows_late_values() {
        let mut pts: Vec<(f64, f64)> = vec![(0.0, -1e4)];
        pts.extend((1..=100).map(|i| (i as f64, 1.0 + 0.01 * i as f64)));
        let r = robust_range(&pts, 100.0);
        assert!(r.start > -10.0 && r.end < 10.0, "{r:?}");
        assert!(r.start < 1.5 && r.end > 2.0, "{r:?}");
    }

    #[test]
    fn moving_mean_is_centred() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, i as f64)).collect();
        let m = moving_mean(&pts, 3);
        assert_eq!(m[0].1, 0.5);
        assert_eq!(m[2].1, 2.0);
        assert_eq!(m[4].1, 3.5);
    }

    #[test]
    fn shade_ends() {
        assert_eq!(shade(0.0), RGBColor(239, 243, 255));
        assert_eq!(shade(1.0), RGBColor(8, 69, 148));
    }
}

//! Training progress on stderr: iteration/total, loss, log Z, ETA.
//!
//! At most one line per second *and* per whole percent, so a 25,000-iteration run prints about a
//! hundred lines whatever its speed; a heartbeat line every 10 s covers runs where 1 % takes
//! longer than that. The first and the last iteration are always shown. On a terminal the line is
//! rewritten in place (`\r`); in a log it is one line per update. `-q` turns it all off.

use diffusion_samplers::train::Progress;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const MIN_INTERVAL: Duration = Duration::from_secs(1);
const HEARTBEAT: Duration = Duration::from_secs(10);

pub struct Reporter {
    quiet: bool,
    tty: bool,
    label: &'static str,
    start: Instant,
    last_line: Option<(Instant, usize)>,
    /// Iterations already done when this process started: a resumed run's first report is its
    /// checkpoint's iteration + 1, and only the iterations since count toward the rate.
    done_before: Option<usize>,
    open_line: bool,
}

impl Reporter {
    /// `label` prefixes each line ("train", "replay").
    pub fn new(label: &'static str, quiet: bool) -> Self {
        Reporter {
            quiet,
            tty: std::io::stderr().is_terminal(),
            label,
            start: Instant::now(),
            last_line: None,
            done_before: None,
            open_line: false,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        let now = Instant::now();
        let done_before = *self
            .done_before
            .get_or_insert(p.iteration.saturating_sub(1));
        let total = p.total.max(1);
        let percent = p.iteration.min(total) * 100 / total;
        let show = match self.last_line {
            None => true,
            // `train::run` reports completed iterations, 1..=total: always show the last.
            _ if p.iteration >= p.total => true,
            Some((t, pct)) => {
                let dt = now.duration_since(t);
                (dt >= MIN_INTERVAL && percent > pct) || dt >= HEARTBEAT
            }
        };
        if !show {
            return;
        }
        self.last_line = Some((now, percent));
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let eta = eta_seconds(elapsed, done_before, p.iteration, p.total)
            .map_or_else(|| "?".to_string(), format_duration);
        let line = format!(
            "{}: iter {}/{} ({percent:>3}%)  loss {:<11.5e}  log Z {:<+10.4}  elapsed {}  ETA {}",
            self.label,
            p.iteration,
            p.total,
            p.loss,
            p.log_z,
            format_duration(elapsed),
            eta
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            self.open_line = true;
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// End a line left open on a terminal.
    pub fn finish(&mut self) {
        if self.open_line {
            eprintln!();
            self.open_line = false;
        }
    }
}

/// Seconds left at the rate of this process: `elapsed` seconds for the iterations after
/// `done_before` up to `iteration`. None before this process has completed one.
fn eta_seconds(elapsed: f64, done_before: usize, iteration: usize, total: usize) -> Option<f64> {
    let here = iteration.checked_sub(done_before).filter(|&n| n > 0)?;
    Some(elapsed / here as f64 * total.saturating_sub(iteration) as f64)
}

/// `42s`, `3m07s`, `2h05m`.
pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".to_string();
    }
    let s = secs.round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::{eta_seconds, format_duration};

    #[test]
    fn eta_counts_only_this_process_iterations() {
        // Fresh run: 10 s for 100 of 1000 iterations leaves 90 s.
        assert_eq!(eta_seconds(10.0, 0, 100, 1000), Some(90.0));
        // Resumed at 500: 10 s for 100 more (600 of 1000) leaves 40 s, not 400/600·10.
        assert_eq!(eta_seconds(10.0, 500, 600, 1000), Some(40.0));
        assert_eq!(eta_seconds(10.0, 500, 500, 1000), None);
        assert_eq!(eta_seconds(10.0, 0, 1000, 1000), Some(0.0));
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(4.4), "4s");
        assert_eq!(format_duration(187.0), "3m07s");
        assert_eq!(format_duration(7500.0), "2h05m");
        assert_eq!(format_duration(f64::NAN), "?");
    }
}

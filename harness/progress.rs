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
            open_line: false,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        let now = Instant::now();
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
        let eta = if p.iteration > 0 {
            let per_iter = elapsed / p.iteration as f64;
            format_duration(per_iter * p.total.saturating_sub(p.iteration) as f64)
        } else {
            "?".to_string()
        };
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
    use super::format_duration;

    #[test]
    fn durations() {
        assert_eq!(format_duration(4.4), "4s");
        assert_eq!(format_duration(187.0), "3m07s");
        assert_eq!(format_duration(7500.0), "2h05m");
        assert_eq!(format_duration(f64::NAN), "?");
    }
}

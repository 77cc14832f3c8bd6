//! liveup's messages on stderr, by level, through the `log` facade:
//! `liveup -q` shows warnings and errors only; the default adds what
//! liveup is doing (`info`: a guest clock set, a migration agent's
//! progress); `-v` adds details (`debug`: each upgrade step as it is
//! reached, each restore step with its time); `-vv` everything (`trace`).
//! Each message is one line, "liveup: ..." ("liveup: warning: ..." for
//! warnings). Errors that end liveup are printed by `main` whatever the
//! level. Results (reports, tables, JSON) go to stdout and are never
//! filtered.

use log::{Level, LevelFilter, Metadata, Record};

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            eprintln!("{}", line(r.level(), &r.args().to_string()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// The filter for `-v` given `verbose` times, or `-q`.
pub fn filter(verbose: u8, quiet: bool) -> LevelFilter {
    match (quiet, verbose) {
        (true, _) => LevelFilter::Warn,
        (false, 0) => LevelFilter::Info,
        (false, 1) => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Install the logger (once; a second call only sets the level).
pub fn init(verbose: u8, quiet: bool) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(filter(verbose, quiet));
}

/// One message as printed.
fn line(level: Level, msg: &str) -> String {
    match level {
        Level::Error => format!("liveup: error: {msg}"),
        Level::Warn => format!("liveup: warning: {msg}"),
        _ => format!("liveup: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_keeps_warnings_verbose_adds_details() {
        assert_eq!(filter(0, true), LevelFilter::Warn);
        assert_eq!(filter(0, false), LevelFilter::Info);
        assert_eq!(filter(1, false), LevelFilter::Debug);
        assert_eq!(filter(3, false), LevelFilter::Trace);
        assert!(Level::Warn <= filter(0, true) && Level::Info > filter(0, true));
        assert!(Level::Debug > filter(0, false) && Level::Debug <= filter(1, false));
    }

    #[test]
    fn lines_name_liveup_and_mark_warnings() {
        assert_eq!(line(Level::Info, "x"), "liveup: x");
        assert_eq!(line(Level::Warn, "x"), "liveup: warning: x");
        assert_eq!(line(Level::Error, "x"), "liveup: error: x");
    }
}

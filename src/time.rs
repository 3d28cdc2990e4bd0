//! A UTC timestamp with one-second precision, printed as RFC 3339.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time, in whole seconds since the Unix epoch (UTC).
///
/// Key stores keep times as plain integers so that every database holds them the
/// same way; `Display` prints RFC 3339 (`2026-11-22T21:43:56Z`) for error messages
/// and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `secs` seconds after 1970-01-01T00:00:00Z.
    pub const fn from_unix_seconds(secs: i64) -> Self {
        Self(secs)
    }

    /// Seconds since 1970-01-01T00:00:00Z.
    pub const fn unix_seconds(self) -> i64 {
        self.0
    }

    /// The current time from the system clock.
    pub fn now() -> Self {
        let secs = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
        };
        Self(secs)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Civil-from-days (proleptic Gregorian calendar), after H. Hinnant's
        // public-domain description of the algorithm.
        let days = self.0.div_euclid(86_400);
        let secs_of_day = self.0.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs_of_day / 3_600,
            secs_of_day % 3_600 / 60,
            secs_of_day % 60
        )
    }
}

/// A clock a test sets by hand (feature `testing`), for
/// [`SealerBuilder::clock`](crate::SealerBuilder::clock): the times of audit
/// entries and key versions, and the retention checks of
/// [`KeyAdmin`](crate::KeyAdmin), read it instead of the system clock, so a
/// test can run days of epochs, shreds and retentions in moments. Clones
/// share one time.
///
/// # Security
///
/// For tests only: a sealer on a clock someone else sets writes audit
/// entries with those times and lets retentions pass at will.
#[cfg(feature = "testing")]
#[derive(Clone, Debug)]
pub struct ManualClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

#[cfg(feature = "testing")]
impl ManualClock {
    /// A clock that reads `start` until it is set or advanced.
    pub fn new(start: Timestamp) -> Self {
        Self(std::sync::Arc::new(start.0.into()))
    }

    /// The time it reads.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Moves it forward by `by` (whole seconds).
    pub fn advance(&self, by: std::time::Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        let _ = self.0.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |t| Some(t.saturating_add(secs)),
        );
    }
}

/// Where a sealer reads the time.
#[derive(Clone, Debug, Default)]
pub(crate) enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A test's clock.
    #[cfg(feature = "testing")]
    Manual(ManualClock),
}

impl Clock {
    pub(crate) fn now(&self) -> Timestamp {
        match self {
            Self::System => Timestamp::now(),
            #[cfg(feature = "testing")]
            Self::Manual(clock) => clock.now(),
        }
    }

    /// A time a provider gave on the system clock ("from now", "in 7
    /// days"), on this clock: as far after this clock's now as it is after
    /// the system's.
    pub(crate) fn on_this_clock(&self, at: Timestamp) -> Timestamp {
        match self {
            Self::System => at,
            #[cfg(feature = "testing")]
            Self::Manual(clock) => {
                let ahead = at.0.saturating_sub(Timestamp::now().0).max(0);
                Timestamp(clock.now().0.saturating_add(ahead))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(
            Timestamp::from_unix_seconds(0).to_string(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix_seconds(1_795_383_836).to_string(),
            "2026-11-22T21:43:56Z"
        );
        assert_eq!(
            Timestamp::from_unix_seconds(951_782_400).to_string(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix_seconds(-1).to_string(),
            "1969-12-31T23:59:59Z"
        );
    }
}

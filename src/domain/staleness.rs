//! When an active run counts as stale: after its type's stale limit without any change
//! (creation, start or progress). The default limit is three times the type's expected
//! duration; configuration may override it per type.

use std::time::Duration;

use super::catalog::RunType;

/// How many expected durations of silence make a run stale, by default.
const DEFAULT_FACTOR: u32 = 3;

/// A stale limit for every type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleLimits {
    limits: Vec<(RunType, Duration)>,
}

impl Default for StaleLimits {
    fn default() -> StaleLimits {
        StaleLimits { limits: RunType::ALL.iter().map(|t| (*t, t.spec().expected * DEFAULT_FACTOR)).collect() }
    }
}

impl StaleLimits {
    /// Parses overrides such as `inventory_sync=45m,restore_execute=4h` over the defaults.
    pub fn parse(overrides: &str) -> Result<StaleLimits, String> {
        let mut limits = StaleLimits::default();
        for entry in overrides.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, duration) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}` is not `type=duration` (e.g. inventory_sync=45m)"))?;
            let run_type = RunType::resolve(name.trim()).map_err(|e| e.to_string())?;
            let duration = humantime::parse_duration(duration.trim())
                .map_err(|e| format!("`{}` is not a duration such as 45m or 4h: {e}", duration.trim()))?;
            if duration < Duration::from_secs(1) {
                return Err(format!("the stale limit of {run_type} must be at least 1s"));
            }
            limits.set(run_type, duration);
        }
        Ok(limits)
    }

    fn set(&mut self, run_type: RunType, limit: Duration) {
        if let Some(entry) = self.limits.iter_mut().find(|(t, _)| *t == run_type) {
            entry.1 = limit;
        }
    }

    pub fn limit(&self, run_type: RunType) -> Duration {
        self.limits.iter().find(|(t, _)| *t == run_type).map(|(_, d)| *d).expect("every type has a limit")
    }

    pub fn iter(&self) -> impl Iterator<Item = (RunType, Duration)> + '_ {
        self.limits.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_three_expected_durations() {
        let limits = StaleLimits::default();
        assert_eq!(limits.limit(RunType::RestoreExecute), Duration::from_secs(3 * 60 * 60));
        assert_eq!(limits.limit(RunType::ProviderConnectionVerify), Duration::from_secs(15 * 60));
    }

    #[test]
    fn overrides_replace_only_the_named_types() {
        let limits = StaleLimits::parse("inventory_sync=45m, restore_execute=4h").unwrap();
        assert_eq!(limits.limit(RunType::InventorySync), Duration::from_secs(45 * 60));
        assert_eq!(limits.limit(RunType::RestoreExecute), Duration::from_secs(4 * 3600));
        assert_eq!(limits.limit(RunType::PolicySync), StaleLimits::default().limit(RunType::PolicySync));
    }

    #[test]
    fn bad_overrides_say_what_is_wrong() {
        for bad in ["inventory_sync", "inventory.sync=1h", "nope=1h", "inventory_sync=soon", "inventory_sync=0s"] {
            assert!(StaleLimits::parse(bad).is_err(), "{bad}");
        }
    }
}

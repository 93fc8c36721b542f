//! `builtin_interfaces`: time stamps and durations.

use serde::{Deserialize, Serialize};

use super::ros_message;

/// `builtin_interfaces/msg/Time`: seconds and nanoseconds since the epoch (or sim start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}
ros_message!(Time, "builtin_interfaces", "Time");

impl Time {
    /// Wall-clock now (what ROS uses without `/clock`).
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            sec: d.as_secs().min(i32::MAX as u64) as i32,
            nanosec: d.subsec_nanos(),
        }
    }

    /// Nanoseconds since the epoch (negative seconds clamp at zero).
    pub fn as_nanos(&self) -> u128 {
        (self.sec.max(0) as u128) * 1_000_000_000 + self.nanosec as u128
    }

    pub fn from_nanos(ns: u128) -> Self {
        Time {
            sec: (ns / 1_000_000_000).min(i32::MAX as u128) as i32,
            nanosec: (ns % 1_000_000_000) as u32,
        }
    }
}

/// `builtin_interfaces/msg/Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duration {
    pub sec: i32,
    pub nanosec: u32,
}
ros_message!(Duration, "builtin_interfaces", "Duration");

impl Duration {
    pub fn from_secs_f64(s: f64) -> Self {
        let s = if s.is_finite() { s.max(0.0) } else { 0.0 };
        let whole = s.floor();
        Duration {
            sec: whole.min(i32::MAX as f64) as i32,
            nanosec: ((s - whole) * 1e9).round().min(999_999_999.0) as u32,
        }
    }

    pub fn as_secs_f64(&self) -> f64 {
        self.sec as f64 + self.nanosec as f64 * 1e-9
    }
}

//! `diagnostic_msgs`: the bridge's counters on `/diagnostics`.

use serde::{Deserialize, Serialize};

use super::{ros_message, Header};

/// `diagnostic_msgs/msg/KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}
ros_message!(KeyValue, "diagnostic_msgs", "KeyValue");

/// `diagnostic_msgs/msg/DiagnosticStatus`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticStatus {
    /// [`DiagnosticStatus::OK`], `WARN`, `ERROR` or `STALE` (ROS `byte`, an octet).
    pub level: u8,
    pub name: String,
    pub message: String,
    pub hardware_id: String,
    pub values: Vec<KeyValue>,
}
ros_message!(DiagnosticStatus, "diagnostic_msgs", "DiagnosticStatus");

impl DiagnosticStatus {
    pub const OK: u8 = 0;
    pub const WARN: u8 = 1;
    pub const ERROR: u8 = 2;
    pub const STALE: u8 = 3;
}

/// `diagnostic_msgs/msg/DiagnosticArray`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticArray {
    pub header: Header,
    pub status: Vec<DiagnosticStatus>,
}
ros_message!(DiagnosticArray, "diagnostic_msgs", "DiagnosticArray");

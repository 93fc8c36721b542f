//! The bridge's settings: `config/default.toml` built in, a user file merged over it, then
//! `--set section.key=value` overrides. Errors name the file (or `--set`) and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::RecordSection;
use crate::safety::Limits;
use crate::transport::Qos;

/// The built-in defaults (also the documented example).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("invalid config {source_name}: {cause}")]
    Invalid { source_name: String, cause: String },
    #[error("--set {arg:?}: {cause}")]
    Override { arg: String, cause: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    pub rate_hz: f64,
    pub period_s: f64,
    pub watchdog_timeout_s: f64,
    pub instruction_timeout_s: f64,
    pub model_deadline_s: f64,
    pub require_new_frames: bool,
    /// Cameras of a policy whose cameras are not `front` and `wrist`, as `NAME=TOPIC`
    /// (NAME: the last part of the policy's camera key); empty: front and wrist on
    /// `topics.front_image` / `topics.wrist_image` and their compressed topics.
    pub cameras: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MotionOutput {
    Twist,
    JointTrajectory,
    /// `std_msgs/Float64MultiArray` of joint positions on `topics.forward_command`
    /// (ros2_control's forward command controller).
    ForwardCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GripperOutput {
    Float64MultiArray,
    GripperCommand,
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub motion: MotionOutput,
    pub twist_frame_id: String,
    pub gripper: GripperOutput,
    pub gripper_open_position: f64,
    pub gripper_closed_position: f64,
    pub gripper_max_effort: f64,
}

impl OutputSection {
    /// Controller position for a closure in [0, 1].
    pub fn gripper_position(&self, closure: f64) -> f64 {
        let c = closure.clamp(0.0, 1.0);
        self.gripper_open_position + c * (self.gripper_closed_position - self.gripper_open_position)
    }

    /// Closure in [0, 1] for a controller position (inverse of [`Self::gripper_position`]).
    pub fn gripper_closure(&self, position: f64) -> f64 {
        let span = self.gripper_closed_position - self.gripper_open_position;
        if span == 0.0 || !position.is_finite() {
            return 0.0;
        }
        ((position - self.gripper_open_position) / span).clamp(0.0, 1.0)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsSection {
    pub front_image: String,
    pub front_compressed: String,
    pub wrist_image: String,
    pub wrist_compressed: String,
    pub instruction: String,
    pub joint_states: String,
    pub estop: String,
    pub estop_reset: String,
    pub twist: String,
    pub joint_trajectory: String,
    pub gripper: String,
    pub action_tokens: String,
    pub subtask: String,
    pub diagnostics: String,
    pub success: String,
    pub episode: String,
    pub forward_command: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QosSection {
    pub image_depth: u32,
    pub command_depth: u32,
    pub instruction_depth: u32,
    pub joint_state_depth: u32,
}

impl QosSection {
    pub fn images(&self) -> Qos {
        Qos::sensor_data(self.image_depth)
    }
    pub fn commands(&self) -> Qos {
        Qos::reliable(self.command_depth)
    }
    pub fn instruction(&self) -> Qos {
        Qos::latched(self.instruction_depth)
    }
    pub fn joint_states(&self) -> Qos {
        Qos::sensor_data(self.joint_state_depth)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotSection {
    pub urdf: String,
    pub tip_link: String,
}

/// Everything in `default.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    pub node: NodeSection,
    pub control: ControlSection,
    pub output: OutputSection,
    pub topics: TopicsSection,
    pub qos: QosSection,
    pub robot: RobotSection,
    pub limits: Limits,
    pub record: RecordSection,
}

impl BridgeConfig {
    /// Built-in defaults, then `file` (if any) merged over them, then each `key=value`.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Invalid {
                source_name: "built-in default.toml".into(),
                cause: e.to_string(),
            })?;
        let mut source = "built-in default.toml".to_string();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })?;
            let user: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                source_name: path.display().to_string(),
                cause: e.to_string(),
            })?;
            merge(&mut table, user, "").map_err(|cause| ConfigError::Invalid {
                source_name: path.display().to_string(),
                cause,
            })?;
            source = path.display().to_string();
        }
        for arg in overrides {
            apply_override(&mut table, arg)?;
        }
        let with_sets = if overrides.is_empty() {
            source
        } else {
            format!("{source} with --set overrides")
        };
        let config: BridgeConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    source_name: with_sets.clone(),
                    cause: e.to_string(),
                })?;
        config.validate().map_err(|cause| ConfigError::Invalid {
            source_name: with_sets,
            cause,
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        let c = &self.control;
        for (name, v) in [
            ("control.rate_hz", c.rate_hz),
            ("control.period_s", c.period_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} = {v} must be positive and finite"));
            }
        }
        for (name, v) in [
            ("control.watchdog_timeout_s", c.watchdog_timeout_s),
            ("control.instruction_timeout_s", c.instruction_timeout_s),
            ("control.model_deadline_s", c.model_deadline_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} = {v} must be finite and non-negative"));
            }
        }
        if c.watchdog_timeout_s == 0.0 {
            return Err("control.watchdog_timeout_s must be positive".into());
        }
        let o = &self.output;
        for (name, v) in [
            ("output.gripper_open_position", o.gripper_open_position),
            ("output.gripper_closed_position", o.gripper_closed_position),
            ("output.gripper_max_effort", o.gripper_max_effort),
        ] {
            if !v.is_finite() {
                return Err(format!("{name} = {v} must be finite"));
            }
        }
        for (name, topic) in self.topic_list() {
            check_topic(&format!("topics.{name}"), topic)?;
        }
        self.limits.validate()?;
        self.record.validate()?;
        for (name, topic) in self.record.camera_topics()? {
            check_topic(&format!("record.cameras entry {name}"), &topic)?;
        }
        for (name, topics) in self.camera_topics()? {
            for topic in topics {
                check_topic(&format!("control.cameras entry {name}"), &topic)?;
            }
        }
        Ok(())
    }

    /// The bridge's cameras as (name, topics): `control.cameras` (one topic each, raw or
    /// `…/compressed`), or by default `front` and `wrist` each on its raw and compressed topic.
    pub fn camera_topics(&self) -> Result<Vec<(String, Vec<String>)>, String> {
        let listed = parse_cameras("control.cameras", &self.control.cameras)?;
        if !listed.is_empty() {
            return Ok(listed.into_iter().map(|(n, t)| (n, vec![t])).collect());
        }
        let t = &self.topics;
        Ok(vec![
            (
                "front".into(),
                vec![t.front_image.clone(), t.front_compressed.clone()],
            ),
            (
                "wrist".into(),
                vec![t.wrist_image.clone(), t.wrist_compressed.clone()],
            ),
        ])
    }

    fn topic_list(&self) -> Vec<(&'static str, &str)> {
        let t = &self.topics;
        vec![
            ("front_image", &t.front_image),
            ("front_compressed", &t.front_compressed),
            ("wrist_image", &t.wrist_image),
            ("wrist_compressed", &t.wrist_compressed),
            ("instruction", &t.instruction),
            ("joint_states", &t.joint_states),
            ("estop", &t.estop),
            ("estop_reset", &t.estop_reset),
            ("twist", &t.twist),
            ("joint_trajectory", &t.joint_trajectory),
            ("gripper", &t.gripper),
            ("action_tokens", &t.action_tokens),
            ("subtask", &t.subtask),
            ("diagnostics", &t.diagnostics),
            ("success", &t.success),
            ("episode", &t.episode),
            ("forward_command", &t.forward_command),
        ]
    }

    pub fn loop_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.control.rate_hz)
    }

    pub fn watchdog_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.control.watchdog_timeout_s)
    }

    pub fn instruction_timeout(&self) -> Option<Duration> {
        (self.control.instruction_timeout_s > 0.0)
            .then(|| Duration::from_secs_f64(self.control.instruction_timeout_s))
    }

    pub fn model_deadline(&self) -> Duration {
        if self.control.model_deadline_s > 0.0 {
            Duration::from_secs_f64(self.control.model_deadline_s)
        } else {
            self.loop_period()
        }
    }

    /// The robot model: the configured URDF or the built-in arm.
    pub fn robot(&self) -> Result<vla_kinematics::RobotDescription, String> {
        if self.robot.urdf.is_empty() {
            vla_kinematics::RobotDescription::default_arm().map_err(|e| e.to_string())
        } else {
            vla_kinematics::RobotDescription::from_file(
                Path::new(&self.robot.urdf),
                Some(&self.robot.tip_link),
            )
            .map_err(|e| format!("robot.urdf = {:?}: {e}", self.robot.urdf))
        }
    }
}

/// A camera list of `NAME=TOPIC` entries (`key` names the config field in errors).
pub fn parse_cameras(key: &str, entries: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in entries {
        let Some((name, topic)) = entry.split_once('=') else {
            return Err(format!(
                "{key} entry {entry:?} is not NAME=TOPIC (e.g. front=/camera/image_raw)"
            ));
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(format!(
                "{key} entry {entry:?}: a camera name is ASCII letters, digits, '_', '-' or '.'"
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("{key} names {name:?} twice"));
        }
        out.push((name.to_string(), topic.to_string()));
    }
    Ok(out)
}

/// A topic must be an absolute ROS name.
fn check_topic(what: &str, topic: &str) -> Result<(), String> {
    if !topic.starts_with('/') || topic.ends_with('/') || topic.contains("//") {
        return Err(format!(
            "{what} = {topic:?} must be an absolute ROS name like /a/b"
        ));
    }
    Ok(())
}

/// Merge `over` into `base`; keys must already exist (so typos are caught with their path).
fn merge(base: &mut toml::Table, over: toml::Table, prefix: &str) -> Result<(), String> {
    for (k, v) in over {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &path)?,
            (Some(slot), v) => *slot = v,
            (None, _) => return Err(format!("unknown field {path}")),
        }
    }
    Ok(())
}

fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let err = |cause: String| ConfigError::Override {
        arg: arg.to_string(),
        cause,
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| err("expected section.key=value".into()))?;
    let key = key.trim();
    // A TOML value when it parses as one (numbers, booleans, arrays), else a plain string.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("empty key".into()))?;
    let mut node = table;
    for p in parts {
        node = match node.get_mut(p) {
            Some(toml::Value::Table(t)) => t,
            _ => return Err(err(format!("unknown section {p:?}"))),
        };
    }
    match node.get_mut(last) {
        Some(slot) if !slot.is_table() => {
            *slot = value;
            Ok(())
        }
        _ => Err(err(format!("unknown field {key:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let c = BridgeConfig::load(None, &[]).expect("defaults");
        assert_eq!(c.topics.twist, "/servo_node/delta_twist_cmds");
        assert_eq!(c.output.motion, MotionOutput::Twist);
        assert!((c.control.watchdog_timeout_s - 0.2).abs() < 1e-12);
        assert!((c.output.gripper_position(1.0) - 0.0).abs() < 1e-12);
        assert!((c.output.gripper_closure(0.04)).abs() < 1e-12);
    }

    #[test]
    fn overrides_apply_and_errors_name_the_field() {
        let c = BridgeConfig::load(
            None,
            &[
                "control.rate_hz=5".into(),
                "output.motion=joint_trajectory".into(),
                "limits.workspace=[[0,0,0],[1,1,1]]".into(),
                "topics.twist=/my/twist".into(),
            ],
        )
        .expect("overrides");
        assert_eq!(c.control.rate_hz, 5.0);
        assert_eq!(c.output.motion, MotionOutput::JointTrajectory);
        assert_eq!(c.topics.twist, "/my/twist");
        let e = BridgeConfig::load(None, &["control.rate=5".into()]).expect_err("typo");
        assert!(e.to_string().contains("control.rate"), "{e}");
        let e = BridgeConfig::load(None, &["limits.max_linear_speed=-1".into()]).expect_err("neg");
        assert!(e.to_string().contains("limits.max_linear_speed"), "{e}");
        let e = BridgeConfig::load(None, &["topics.twist=no_slash".into()]).expect_err("name");
        assert!(e.to_string().contains("topics.twist"), "{e}");
    }

    #[test]
    fn file_errors_name_the_file_and_field() {
        let dir = std::env::temp_dir().join(format!("vla-ros-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[control]\nrate_hz = \"fast\"\n").expect("write");
        let e = BridgeConfig::load(Some(&path), &[]).expect_err("bad type");
        let s = e.to_string();
        assert!(s.contains("bad.toml") && s.contains("rate_hz"), "{s}");
        std::fs::write(&path, "[control]\nspeed = 1\n").expect("write");
        let s = BridgeConfig::load(Some(&path), &[])
            .expect_err("unknown")
            .to_string();
        assert!(s.contains("bad.toml") && s.contains("control.speed"), "{s}");
        std::fs::write(&path, "[output]\nmotion = \"joint_trajectory\"\n").expect("write");
        let c = BridgeConfig::load(Some(&path), &[]).expect("partial file");
        assert_eq!(c.output.motion, MotionOutput::JointTrajectory);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

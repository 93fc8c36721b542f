//! Which dataset features a policy reads and writes: the feature mapping.
//!
//! A LeRobot dataset names its cameras, its state and its action as its robot has them (an
//! SO-100's `observation.images.laptop` and `observation.images.phone`, six `*.pos` joint
//! positions as state and action; this stack's simulator's `front` and `wrist` cameras, a
//! 13-number state and a 7-number end-effector delta). The mapping says which image features
//! are the model's cameras (in its camera order), what the state and action entries are, what
//! kind of action it is and which dimension, if any, is a gripper. It travels in the run's
//! `config.json`, so `vla act`, `vla eval` and the bridge know what a checkpoint reads and
//! what its numbers mean without being told again.
//!
//! **Inference** ([`FeatureMapping::infer`]), when a dataset leaves no doubt:
//! - cameras: every image or video feature, when there are one or two, in the order of their
//!   keys, except that a `front` camera comes first and a `wrist` camera second (this stack's
//!   order). Sorted keys, not `meta/info.json`'s order, so every reader infers the same order.
//!   Three or more need `--camera KEY` flags.
//! - state `observation.state`, action `action` (LeRobot's names; both required).
//! - the action space: the simulator's entry names are an end-effector delta; an action whose
//!   names are the state's names (a leader arm's joint positions, as LeRobot records them),
//!   or all end in `.pos`, is absolute joint positions; anything else is `other`.
//! - the gripper: the end-effector delta's last entry, else the one entry whose name
//!   contains `gripper`, else none.

use serde::{Deserialize, Serialize};
use vla_datasets::DatasetInfo;

use crate::error::{Result, VlaError};

/// LeRobot's state and action feature keys, the ones a policy reads.
pub const STATE_KEY: &str = "observation.state";
pub const ACTION_KEY: &str = "action";

/// What an action's numbers command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionSpace {
    /// This stack's end-effector delta and gripper ([`vla_core::Action`]).
    EndEffectorDelta,
    /// Absolute joint positions (a leader arm's, a trajectory controller's target).
    JointPositions,
    /// Anything else: executed by nobody in this stack, but trained and returned by `act`.
    Other,
}

/// The features a policy reads and writes (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureMapping {
    /// Image (or video) feature keys, in the model's camera order.
    pub cameras: Vec<String>,
    /// Names of the state entries (`observation.state`).
    pub state_names: Vec<String>,
    /// Names of the action entries (`action`).
    pub action_names: Vec<String>,
    pub action_space: ActionSpace,
    /// The action dimension that opens and closes a gripper, if any.
    pub gripper_dim: Option<usize>,
}

impl Default for FeatureMapping {
    /// The simulator's features: what every run before mappings existed was trained on.
    fn default() -> Self {
        FeatureMapping {
            cameras: vec![
                "observation.images.front".into(),
                "observation.images.wrist".into(),
            ],
            state_names: vla_core::STATE_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            action_names: vla_core::action::ACTION_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            action_space: ActionSpace::EndEffectorDelta,
            gripper_dim: Some(vla_core::ACTION_DIM - 1),
        }
    }
}

/// Overrides of the inferred mapping, from the command line or a config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MappingOverrides {
    /// Camera feature keys in order (`--camera`); empty: inferred.
    pub cameras: Vec<String>,
    pub action_space: Option<ActionSpace>,
    /// `Some(None)`: no gripper; `Some(Some(i))`: dimension `i`.
    pub gripper_dim: Option<Option<usize>>,
}

impl FeatureMapping {
    /// The simulator's layout: the model's grounding targets, relative targets and the
    /// simulator's evaluation apply only to it.
    pub fn is_simulator_layout(&self) -> bool {
        self == &FeatureMapping::default()
    }

    pub fn state_dim(&self) -> usize {
        self.state_names.len()
    }

    pub fn action_dim(&self) -> usize {
        self.action_names.len()
    }

    /// The mapping of a dataset by the documented rule, with `overrides`; errors name the
    /// dataset and what is ambiguous or missing.
    pub fn infer(info: &DatasetInfo, source: &str, overrides: &MappingOverrides) -> Result<Self> {
        let err = |m: String| VlaError::Input(format!("dataset {source}: {m}"));
        let images = info.camera_keys();
        let cameras: Vec<String> = if overrides.cameras.is_empty() {
            let mut keys = images.clone();
            match keys.len() {
                0 => {
                    return Err(err(
                        "no image or video feature: a policy needs a camera".into()
                    ))
                }
                1 | 2 => {}
                n => {
                    return Err(err(format!(
                        "{n} cameras ({}): say which the policy reads, in order, with --camera KEY",
                        keys.join(", ")
                    )))
                }
            }
            // This stack's order: front, then wrist.
            keys.sort_by_key(|k| match k.rsplit('.').next() {
                Some("front") => 0,
                Some("wrist") => 1,
                _ => 2,
            });
            keys
        } else {
            for k in &overrides.cameras {
                if !images.contains(k) {
                    return Err(err(format!(
                        "--camera {k}: no such image or video feature (has {})",
                        images.join(", ")
                    )));
                }
            }
            overrides.cameras.clone()
        };
        let names = |key: &str| -> Result<Vec<String>> {
            let f = info.features.get(key).ok_or_else(|| {
                err(format!(
                    "no {key:?} feature (has {})",
                    info.features.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let n = f.numel();
            if f.dtype != "float32" && f.dtype != "float64" {
                return Err(err(format!("{key:?} is {}, not float32", f.dtype)));
            }
            let listed: Vec<String> = match &f.names {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                // {"motors": [...]}, as some older datasets write it.
                serde_json::Value::Object(o) => o
                    .values()
                    .filter_map(|v| v.as_array())
                    .flatten()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            Ok(if listed.len() == n {
                listed
            } else {
                (0..n).map(|i| format!("{key}.{i}")).collect()
            })
        };
        let state_names = names(STATE_KEY)?;
        let action_names = names(ACTION_KEY)?;
        if state_names.is_empty() || action_names.is_empty() {
            return Err(err(
                "the state and the action need at least one entry".into()
            ));
        }
        let simulator = FeatureMapping::default();
        let action_space =
            overrides
                .action_space
                .unwrap_or(if action_names == simulator.action_names {
                    ActionSpace::EndEffectorDelta
                } else if action_names == state_names
                    || action_names.iter().all(|n| n.ends_with(".pos"))
                {
                    ActionSpace::JointPositions
                } else {
                    ActionSpace::Other
                });
        let gripper_dim = match overrides.gripper_dim {
            Some(g) => g,
            None if action_space == ActionSpace::EndEffectorDelta => Some(action_names.len() - 1),
            None => {
                let found: Vec<usize> = action_names
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.to_ascii_lowercase().contains("gripper"))
                    .map(|(i, _)| i)
                    .collect();
                (found.len() == 1).then(|| found[0])
            }
        };
        if let Some(g) = gripper_dim {
            if g >= action_names.len() {
                return Err(err(format!(
                    "gripper dimension {g} is outside the action's {} entries",
                    action_names.len()
                )));
            }
        }
        if action_space == ActionSpace::EndEffectorDelta
            && action_names.len() != vla_core::ACTION_DIM
        {
            return Err(err(format!(
                "an end-effector delta has {} entries ({}), not {}",
                vla_core::ACTION_DIM,
                vla_core::action::ACTION_NAMES.join(", "),
                action_names.len()
            )));
        }
        Ok(FeatureMapping {
            cameras,
            state_names,
            action_names,
            action_space,
            gripper_dim,
        })
    }

    /// Check that another dataset of the same training run has these features.
    pub fn check(&self, info: &DatasetInfo, source: &str) -> Result<()> {
        let theirs = FeatureMapping::infer(
            info,
            source,
            &MappingOverrides {
                cameras: self.cameras.clone(),
                action_space: Some(self.action_space),
                gripper_dim: Some(self.gripper_dim),
            },
        )?;
        if theirs.state_names != self.state_names || theirs.action_names != self.action_names {
            return Err(VlaError::Input(format!(
                "dataset {source}: its state [{}] and action [{}] differ from the first \
                 dataset's [{}] and [{}]",
                theirs.state_names.join(", "),
                theirs.action_names.join(", "),
                self.state_names.join(", "),
                self.action_names.join(", ")
            )));
        }
        Ok(())
    }
}

impl FeatureMapping {
    /// Fit a model config (and the training's grounding targets) to these features: the
    /// number of cameras, the state and action sizes, the gripper. Off the simulator's layout,
    /// what reads the simulator's geometry is switched off: the grounding heads' targets
    /// (grasp and release points taken from the end effector's position in the state, projected
    /// through the simulator's cameras), the relative targets and the subgoal gate that build on
    /// them, and proprioception restricted to the simulator's state entries. Returns what was
    /// changed, for the log.
    pub fn fit_config(
        &self,
        model: &mut crate::config::VlaConfig,
        grounding: &mut crate::train::data::GroundingTargets,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        let mut note = |what: &str, from: String, to: String| {
            if from != to {
                changed.push(format!("{what}: {from} -> {to}"));
            }
        };
        let v = &mut model.vision;
        note(
            "vision.num_cameras",
            v.num_cameras.to_string(),
            self.cameras.len().to_string(),
        );
        v.num_cameras = self.cameras.len();
        let a = &mut model.action;
        note(
            "action.state_dim",
            a.state_dim.to_string(),
            self.state_dim().to_string(),
        );
        a.state_dim = self.state_dim();
        note(
            "action.action_dim",
            a.action_dim.to_string(),
            self.action_dim().to_string(),
        );
        a.action_dim = self.action_dim();
        note(
            "action.gripper_dim",
            format!("{:?}", a.gripper_dim),
            format!("{:?}", self.gripper_dim),
        );
        a.gripper_dim = self.gripper_dim;
        if !self.is_simulator_layout() {
            for (what, weight) in [
                ("action.target_aux_weight", &mut a.target_aux_weight),
                ("action.subgoal_weight", &mut a.subgoal_weight),
                ("train.grounding.map_weight", &mut grounding.map_weight),
                (
                    "train.grounding.wrist_map_weight",
                    &mut grounding.wrist_map_weight,
                ),
            ] {
                note(what, weight.to_string(), "0".into());
                *weight = 0.0;
            }
            note(
                "action.relative_targets",
                a.relative_targets.to_string(),
                "false".into(),
            );
            a.relative_targets = false;
            if !a.proprio_indices.is_empty() {
                note(
                    "action.proprio_indices",
                    format!("{:?}", a.proprio_indices),
                    "[] (the whole state)".into(),
                );
                a.proprio_indices.clear();
            }
        }
        model.features = self.clone();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(features: serde_json::Value) -> DatasetInfo {
        serde_json::from_value(serde_json::json!({
            "codebase_version": "v3.0",
            "total_episodes": 1, "total_frames": 1, "total_tasks": 1, "fps": 30,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "features": features,
        }))
        .expect("info")
    }

    fn so100() -> DatasetInfo {
        let joints = [
            "shoulder_pan.pos",
            "shoulder_lift.pos",
            "elbow_flex.pos",
            "wrist_flex.pos",
            "wrist_roll.pos",
            "gripper.pos",
        ];
        info(serde_json::json!({
            "observation.images.laptop": {"dtype": "video", "shape": [480, 640, 3], "names": ["height", "width", "channels"]},
            "observation.images.phone": {"dtype": "video", "shape": [480, 640, 3], "names": ["height", "width", "channels"]},
            "observation.state": {"dtype": "float32", "shape": [6], "names": joints},
            "action": {"dtype": "float32", "shape": [6], "names": joints},
        }))
    }

    #[test]
    fn an_so100_dataset_maps_to_joint_positions_with_a_gripper() {
        let m = FeatureMapping::infer(&so100(), "so100", &MappingOverrides::default())
            .expect("inferred");
        assert_eq!(
            m.cameras,
            ["observation.images.laptop", "observation.images.phone"]
        );
        assert_eq!(m.action_space, ActionSpace::JointPositions);
        assert_eq!(m.gripper_dim, Some(5));
        assert_eq!(m.state_dim(), 6);
        assert!(!m.is_simulator_layout());
    }

    #[test]
    fn the_simulators_dataset_maps_to_its_own_layout() {
        let names = |n: &[&str]| serde_json::json!(n);
        let i = info(serde_json::json!({
            "observation.images.wrist": {"dtype": "image", "shape": [64, 64, 3]},
            "observation.images.front": {"dtype": "image", "shape": [64, 64, 3]},
            "observation.state": {"dtype": "float32", "shape": [13], "names": names(&vla_core::STATE_NAMES)},
            "action": {"dtype": "float32", "shape": [7], "names": names(&vla_core::action::ACTION_NAMES)},
        }));
        let m = FeatureMapping::infer(&i, "sim", &MappingOverrides::default()).expect("inferred");
        assert!(m.is_simulator_layout(), "{m:?}");
    }

    #[test]
    fn ambiguity_and_absence_are_errors_naming_the_dataset() {
        let mut i = so100();
        let cam = i.features["observation.images.phone"].clone();
        i.features.insert("observation.images.top".into(), cam);
        let e = FeatureMapping::infer(&i, "three", &MappingOverrides::default())
            .expect_err("three cameras");
        assert!(
            e.to_string().contains("three") && e.to_string().contains("--camera"),
            "{e}"
        );
        let m = FeatureMapping::infer(
            &i,
            "three",
            &MappingOverrides {
                cameras: vec!["observation.images.top".into()],
                ..Default::default()
            },
        )
        .expect("one camera chosen");
        assert_eq!(m.cameras, ["observation.images.top"]);
        let e = FeatureMapping::infer(
            &i,
            "three",
            &MappingOverrides {
                cameras: vec!["observation.images.side".into()],
                ..Default::default()
            },
        )
        .expect_err("unknown camera");
        assert!(e.to_string().contains("observation.images.side"), "{e}");
        let mut i = so100();
        i.features.remove("action");
        let e = FeatureMapping::infer(&i, "noact", &MappingOverrides::default())
            .expect_err("no action");
        assert!(e.to_string().contains("\"action\""), "{e}");
    }
}

//! Training data: LeRobot v3.0 episodes held in memory as tensors, split by episode, turned
//! into augmented [`VlaBatch`]es.
//!
//! Everything a batch needs is decoded once at load time (images as one `u8` tensor,
//! prompts tokenised once per task string), so a training step costs an `index_select` and
//! the augmentation, not PNG decoding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use vla_datasets::Dataset;

use crate::action_tokenizer::ActionTokenizer;
use crate::error::{Result, VlaError};
use crate::model::{left_pad, right_pad, VlaBatch, VlaModel};
use crate::policy::image_to_tensor;
use crate::train::frames::FrameStore;

use crate::features::FeatureMapping;
use crate::text_tokenizer::TextTokenizer;

/// Image augmentation applied to training batches (never to validation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Random shift: pad by this many pixels (edge replicate) and crop back at a random
    /// offset, per image (DrQ-style).
    pub shift_px: i64,
    /// Brightness factor drawn from `[1 - b, 1 + b]` per sample.
    pub brightness: f64,
    /// Contrast factor drawn from `[1 - c, 1 + c]` per sample.
    pub contrast: f64,
    /// Per-channel gain drawn from `[1 - s, 1 + s]` per sample (a cheap hue/saturation jitter).
    pub channel_gain: f64,
    /// Share of robot frames whose instruction gets made-up words around it (0 = off): one
    /// to three random lowercase "words" of 2–7 letters before it, after it, or both, so
    /// "pick up the red cube" may read "qzu pick up the red cube vopexa". A user's "please
    /// lift the …" adds words a policy never saw; this teaches the action not to hinge on
    /// the instruction's length or on where its words sit. Vision-language examples keep
    /// their questions as they are.
    pub extra_words: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            shift_px: 6,
            brightness: 0.15,
            contrast: 0.15,
            channel_gain: 0.05,
            extra_words: 0.0,
        }
    }
}

impl AugmentConfig {
    /// `instruction` with made-up words around it, drawn from `rng`, with probability
    /// `extra_words`; otherwise `None` (the instruction as it is) and no draw beyond the coin.
    /// Off (0) takes no draw at all, so configs without the words train as they did before.
    pub fn add_words(&self, instruction: &str, rng: &mut ChaCha8Rng) -> Option<String> {
        // `> 0.0` is false for NaN too (validation refuses it; a hand-built config may not).
        let on = self.extra_words > 0.0;
        if !on || !rng.random_bool(self.extra_words.min(1.0)) {
            return None;
        }
        let words = |rng: &mut ChaCha8Rng| -> Vec<String> {
            (0..rng.random_range(1..=3usize))
                .map(|_| {
                    (0..rng.random_range(2..=7usize))
                        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                        .collect()
                })
                .collect()
        };
        // 0: before, 1: after, 2: both.
        let side = rng.random_range(0..3u8);
        let mut parts = if side != 1 { words(rng) } else { Vec::new() };
        parts.push(instruction.to_string());
        if side != 0 {
            parts.extend(words(rng));
        }
        Some(parts.join(" "))
    }
}

/// Where the auxiliary grounding targets come from in the images: the cameras' poses, to
/// project the demonstration's grasp and release points into them, and the weights of the
/// heat-map losses that ask the grounding heads to look there (0 = off). The default
/// cameras are the simulator's (`vla_sim::CameraConfig::default`; a test keeps them equal).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroundingTargets {
    pub front_camera: vla_core::CameraView,
    /// Heat-map loss of the front camera.
    pub map_weight: f64,
    /// The wrist camera, in the tool frame: its view follows each frame's end-effector pose.
    pub wrist_camera: MountedCamera,
    /// Heat-map loss of the wrist camera, where the object is ~10× larger than in the front
    /// view: the fine alignment the front camera's 4-pixel stem cells cannot give.
    pub wrist_map_weight: f64,
}

impl Default for GroundingTargets {
    fn default() -> Self {
        GroundingTargets {
            front_camera: vla_core::CameraView::look_at([1.12, 0.0, 0.62], [0.42, 0.0, 0.0], 45.0),
            map_weight: 0.0,
            wrist_camera: MountedCamera {
                eye: [0.09, 0.0, -0.08],
                target: [0.0, 0.0, 0.10],
                fov_y_deg: 75.0,
            },
            wrist_map_weight: 0.0,
        }
    }
}

/// A camera fixed to the tool, as `vla_sim::CameraConfig`'s wrist camera: eye and target in
/// the tool frame (tool Z out of the gripper), vertical field of view.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountedCamera {
    pub eye: [f32; 3],
    pub target: [f32; 3],
    pub fov_y_deg: f32,
}

impl MountedCamera {
    /// Its view in a state vector's end-effector pose (`None` for a state too short).
    pub fn view(&self, state: &[f32]) -> Option<vla_core::CameraView> {
        use vla_core::StateLayout;
        let p = state.get(StateLayout::EE_POSITION)?;
        let r = state.get(StateLayout::EE_RPY)?;
        Some(vla_core::CameraView::mounted(
            [p[0], p[1], p[2]],
            [r[0], r[1], r[2]],
            self.eye,
            self.target,
            self.fov_y_deg,
        ))
    }
}

/// Auxiliary targets are given only while the end effector is at least this far (m) from
/// the spot: once the gripper is over the object, a readout that tracks the gripper would
/// predict the grasp without ever finding the object the instruction names (measured: the
/// heat maps settled on the gripper and the image's top edge, not on objects).
pub const MIN_TARGET_DISTANCE: f32 = 0.08;

/// What the gripper is heading for in a frame of a demonstration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subgoal {
    /// The next event is grasp (head 0) or release (head 1): the gripper is fetching the
    /// object, or carrying it to the bin or base.
    Head(usize),
    /// Holding the object with nothing after (`pick`'s lift).
    Hold,
    /// After the last release, or a dataset without end-effector state.
    Unknown,
}

impl Subgoal {
    /// The gate's class for a model with `heads` grounding heads (`Hold` is the last), or
    /// -1 for no label (`Unknown`, or a head the model lacks).
    pub fn class(self, heads: usize) -> i64 {
        match self {
            Subgoal::Head(h) if h < heads => h as i64,
            Subgoal::Hold => heads as i64,
            _ => -1,
        }
    }
}

/// Where the end effector will be at an episode's next grasp or release.
#[derive(Clone, Copy, Debug)]
struct EventTarget {
    /// End-effector (x, y, z) at the event.
    position: [f32; 3],
    /// The end effector is at least [`MIN_TARGET_DISTANCE`] from it (horizontally).
    far: bool,
}

/// Frames of one or more datasets, decoded into tensors.
pub struct TrainingData {
    /// `[N, 2, 3, S, S]` u8, in memory or memory-mapped.
    images: FrameStore,
    /// `[N, state_dim]` f32.
    states: Tensor,
    /// Continuous actions, one row per frame.
    actions: Vec<Vec<f32>>,
    /// The frame that follows each frame in its episode (`None` for an episode's last):
    /// where a chunk's future actions come from, and where they stop.
    next_frame: Vec<Option<usize>>,
    /// Index into `tasks` per frame.
    frame_task: Vec<usize>,
    /// Index into `subtasks` per frame (`None`: the dataset records no sub-task).
    frame_subtask: Vec<Option<usize>>,
    /// Distinct sub-task sentences.
    subtasks: Vec<String>,
    /// Per frame: the end-effector (x, y, z) where the gripper next closes, i.e. where the
    /// grasp happens (while it is closed: where it is, holding the object), and where it
    /// next opens at least [`MIN_TARGET_DISTANCE`] from the close before that opening,
    /// where the release happens (targets of the auxiliary grounding losses; `None` once
    /// passed).
    targets: Vec<[Option<EventTarget>; 2]>,
    /// Per frame: what the gripper is heading for (the subgoal gate's labels).
    subgoals: Vec<Subgoal>,
    /// Distinct task strings (instructions).
    tasks: Vec<String>,
    /// Frame indices of the training and validation episodes.
    train: Vec<usize>,
    val: Vec<usize>,
    /// Episodes per side, for reporting.
    train_episodes: usize,
    val_episodes: usize,
    sources: Vec<PathBuf>,
}

// SAFETY: `TrainingData`'s tensors are written once, at load, and only read afterwards
// (`index_select`), which libtorch allows from several threads at once; everything else in it
// is plain data. The prefetch thread (`train::batches`) shares it with the training thread.
unsafe impl Sync for TrainingData {}

impl std::fmt::Debug for TrainingData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingData")
            .field("frames", &self.actions.len())
            .field("train_frames", &self.train.len())
            .field("val_frames", &self.val.len())
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// What was loaded, for logs and reports.
#[derive(Clone, Debug, Serialize)]
pub struct DataSummary {
    pub sources: Vec<PathBuf>,
    pub frames: usize,
    pub train_frames: usize,
    pub val_frames: usize,
    pub train_episodes: usize,
    pub val_episodes: usize,
    pub tasks: usize,
    /// The decoded frames exceeded the memory budget and are memory-mapped from disk.
    #[serde(default)]
    pub frames_mapped: bool,
}

impl TrainingData {
    /// Loads every frame of `dirs`, resizing images to `image_size`, and splits each dataset
    /// by episode (`val_fraction` of its episodes, seeded). `on_progress(done, total)` is called
    /// as frames are decoded. The decoded frames stay in memory when they take at most half
    /// the memory available, else they are memory-mapped from disk (see [`FrameStore`]).
    pub fn load(
        dirs: &[PathBuf],
        features: &FeatureMapping,
        image_size: u32,
        val_fraction: f64,
        seed: u64,
        on_progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_with_budget(
            dirs,
            features,
            image_size,
            val_fraction,
            seed,
            crate::train::frames::default_budget(),
            on_progress,
        )
    }

    /// As [`Self::load`], holding at most `budget` bytes of decoded frames in memory.
    pub fn load_with_budget(
        dirs: &[PathBuf],
        features: &FeatureMapping,
        image_size: u32,
        val_fraction: f64,
        seed: u64,
        budget: u64,
        on_progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        if dirs.is_empty() {
            return Err(VlaError::Input("no dataset given (--data DIR)".into()));
        }
        let datasets: Vec<Dataset> = dirs
            .iter()
            .map(|d| {
                Dataset::open(d)
                    .map_err(|e| VlaError::Input(format!("dataset {}: {e}", d.display())))
            })
            .collect::<Result<_>>()?;
        let total: usize = datasets.iter().map(Dataset::len).sum();
        if total == 0 {
            return Err(VlaError::Input("the datasets hold no frames".into()));
        }
        let s = i64::from(image_size);
        let cameras = &features.cameras;
        let mut store = FrameStore::new(total, [cameras.len() as i64, 3, s, s], budget)?;
        let mut row = 0usize;
        let mut states: Vec<f32> = Vec::with_capacity(total * features.state_dim());
        let mut actions = Vec::with_capacity(total);
        let mut frame_task = Vec::with_capacity(total);
        let mut frame_subtask = Vec::with_capacity(total);
        let mut subtask_ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut subtasks = Vec::new();
        let mut targets: Vec<[Option<EventTarget>; 2]> = Vec::with_capacity(total);
        let mut subgoals: Vec<Subgoal> = Vec::with_capacity(total);
        let mut next_frame: Vec<Option<usize>> = Vec::with_capacity(total);
        let mut task_ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut tasks = Vec::new();
        let (mut train, mut val) = (Vec::new(), Vec::new());
        let (mut train_episodes, mut val_episodes) = (0, 0);
        let mut state_dim = None;
        for (ds, dir) in datasets.iter().zip(dirs) {
            check_features(ds, dir, features)?;
            let (tr, va) = ds.split_episodes(val_fraction, seed);
            train_episodes += tr.len();
            val_episodes += va.len();
            let offset = actions.len();
            train.extend(ds.episode_frames(&tr).into_iter().map(|i| i + offset));
            val.extend(ds.episode_frames(&va).into_iter().map(|i| i + offset));
            let indices: Vec<usize> = (0..ds.len()).collect();
            for chunk in indices.chunks(512) {
                let frames = ds
                    .frames(chunk)
                    .map_err(|e| VlaError::Input(format!("dataset {}: {e}", dir.display())))?;
                for f in frames {
                    let cams: Vec<Tensor> = cameras
                        .iter()
                        .map(|k| {
                            f.images
                                .get(k)
                                .map(|img| image_to_tensor(img, image_size))
                                .ok_or_else(|| {
                                    VlaError::Input(format!(
                                        "dataset {}: frame {} has no image {k}",
                                        dir.display(),
                                        f.index
                                    ))
                                })
                        })
                        .collect::<Result<_>>()?;
                    store.set(row, &Tensor::stack(&cams, 0));
                    row += 1;
                    if *state_dim.get_or_insert(f.state.len()) != f.state.len()
                        || f.state.len() != features.state_dim()
                        || f.action.len() != features.action_dim()
                    {
                        return Err(VlaError::Input(format!(
                            "dataset {}: frame {} has {} state and {} action values, the \
                             features {} and {}",
                            dir.display(),
                            f.index,
                            f.state.len(),
                            f.action.len(),
                            features.state_dim(),
                            features.action_dim()
                        )));
                    }
                    if f.action.iter().chain(&f.state).any(|v| !v.is_finite()) {
                        return Err(VlaError::Input(format!(
                            "dataset {}: frame {} has a non-finite state or action",
                            dir.display(),
                            f.index
                        )));
                    }
                    states.extend_from_slice(&f.state);
                    actions.push(f.action);
                    let next = tasks.len();
                    let id = *task_ids.entry(f.task.clone()).or_insert(next);
                    if id == next {
                        tasks.push(f.task);
                    }
                    frame_task.push(id);
                    frame_subtask.push(f.subtask.map(|s| {
                        let next = subtasks.len();
                        let id = *subtask_ids.entry(s.clone()).or_insert(next);
                        if id == next {
                            subtasks.push(s);
                        }
                        id
                    }));
                }
                on_progress(actions.len(), total);
            }
            targets.resize(actions.len(), [None; 2]);
            subgoals.resize(actions.len(), Subgoal::Unknown);
            next_frame.resize(actions.len(), None);
            let sd = state_dim.unwrap_or(0);
            let xy = vla_core::StateLayout::EE_POSITION.start;
            for episode in tr.iter().chain(&va) {
                let frames: Vec<usize> = ds
                    .episode_frames(&[*episode])
                    .into_iter()
                    .map(|i| i + offset)
                    .collect();
                for pair in frames.windows(2) {
                    next_frame[pair[0]] = Some(pair[1]);
                }
                // Grasps and releases are read from the simulator's gripper command and
                // end-effector position; other robots' frames get no grounding labels.
                let Some(gripper) = features
                    .gripper_dim
                    .filter(|_| features.is_simulator_layout())
                else {
                    continue;
                };
                if sd <= xy + 2 {
                    continue;
                }
                let closed = |i: usize| actions[i].get(gripper).is_some_and(|g| *g > 0.5);
                // Where each close and each opening after a close start. A grasp that
                // missed is lifted, opened beside the object and retried (more often when a
                // policy drives in DAgger): that opening is no release. A release happens
                // away from where its grasp closed (at a bin, on a base object).
                let onsets = |want: bool| -> Vec<usize> {
                    (0..frames.len())
                        .filter(|&k| {
                            let before = k > 0 && closed(frames[k - 1]);
                            closed(frames[k]) == want && before != want
                        })
                        .collect()
                };
                let closes = onsets(true);
                let horizontal = |a: usize, b: usize| {
                    let (a, b) = (frames[a] * sd + xy, frames[b] * sd + xy);
                    (states[a] - states[b]).hypot(states[a + 1] - states[b + 1])
                };
                let releases: Vec<usize> = onsets(false)
                    .into_iter()
                    .filter(|&open| {
                        closes
                            .iter()
                            .rev()
                            .find(|&&c| c < open)
                            .is_some_and(|&c| horizontal(open, c) >= MIN_TARGET_DISTANCE)
                    })
                    .collect();
                // The end effector's (x, y, z) in frame `i`.
                let ee_at = |i: usize| {
                    let at = i * sd + xy;
                    [states[at], states[at + 1], states[at + 2]]
                };
                // Every frame aims at the next event of each kind.
                for (head, events) in [(0, &closes), (1, &releases)] {
                    let mut start = 0;
                    for &end in events {
                        let position = ee_at(frames[end]);
                        for &i in &frames[start..end] {
                            // Near the spot, where the gripper is in the image already says
                            // where the spot is; only frames farther away teach grounding
                            // by regression.
                            let ee = ee_at(i);
                            let d = (ee[0] - position[0]).hypot(ee[1] - position[1]);
                            targets[i][head] = Some(EventTarget {
                                position,
                                far: d >= MIN_TARGET_DISTANCE,
                            });
                        }
                        start = end;
                    }
                }
                // While the fingers are closed, the object head 0's sentence names is in
                // them: head 0 is taught to find it there, not at the next grasp (which in
                // `sort` is another object, one the sentence does not name).
                for &i in frames.iter().filter(|&&i| closed(i)) {
                    targets[i][0] = Some(EventTarget {
                        position: ee_at(i),
                        far: false,
                    });
                }
                let mut events: Vec<(usize, usize)> = closes
                    .iter()
                    .map(|&k| (k, 0))
                    .chain(releases.iter().map(|&k| (k, 1)))
                    .collect();
                events.sort_unstable();
                let mut next = events.iter().peekable();
                let mut last = None;
                for (k, &i) in frames.iter().enumerate() {
                    while let Some(&&(at, kind)) = next.peek() {
                        if at >= k {
                            break;
                        }
                        last = Some(kind);
                        next.next();
                    }
                    subgoals[i] = match (next.peek(), last) {
                        (Some(&&(_, head)), _) => Subgoal::Head(head),
                        (None, Some(0)) => Subgoal::Hold,
                        (None, _) => Subgoal::Unknown,
                    };
                }
            }
        }
        let state_dim = state_dim.unwrap_or(0) as i64;
        Ok(TrainingData {
            targets,
            subgoals,
            next_frame,
            images: store,
            states: Tensor::from_slice(&states).view([actions.len() as i64, state_dim]),
            actions,
            frame_task,
            frame_subtask,
            subtasks,
            tasks,
            train,
            val,
            train_episodes,
            val_episodes,
            sources: dirs.to_vec(),
        })
    }

    pub fn summary(&self) -> DataSummary {
        DataSummary {
            sources: self.sources.clone(),
            frames: self.actions.len(),
            train_frames: self.train.len(),
            val_frames: self.val.len(),
            train_episodes: self.train_episodes,
            val_episodes: self.val_episodes,
            tasks: self.tasks.len(),
            frames_mapped: self.images.is_mapped(),
        }
    }

    /// Distinct instructions in the data.
    pub fn tasks(&self) -> &[String] {
        &self.tasks
    }

    /// Distinct sub-task sentences in the data (empty when no dataset records them).
    pub fn subtasks(&self) -> &[String] {
        &self.subtasks
    }

    /// The sub-task sentence of a frame, if its dataset records them.
    pub fn subtask(&self, frame: usize) -> Option<&str> {
        self.frame_subtask
            .get(frame)
            .copied()
            .flatten()
            .and_then(|i| self.subtasks.get(i))
            .map(String::as_str)
    }

    /// Training-episode actions and states (for normalisation statistics).
    pub fn train_actions_and_states(&self) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let states = Vec::<f32>::try_from(
            self.states
                .index_select(0, &index_tensor(&self.train))
                .flatten(0, 1),
        )
        .unwrap_or_default();
        let dim = self.states.size().get(1).copied().unwrap_or(1).max(1) as usize;
        (
            self.train
                .iter()
                .map(|&i| self.actions[i].clone())
                .collect(),
            states.chunks(dim).map(<[f32]>::to_vec).collect(),
        )
    }

    pub fn train_indices(&self) -> &[usize] {
        &self.train
    }

    pub fn val_indices(&self) -> &[usize] {
        &self.val
    }

    pub fn action(&self, index: usize) -> &[f32] {
        &self.actions[index]
    }

    /// The actions of frames `frame`, `frame + 1`, …, `frame + k − 1` of its episode (the
    /// targets of a chunk of `k`) and, per slot, whether it lies past the episode's end
    /// (LeRobot's `action_is_pad`). A padded slot repeats the episode's last action, as
    /// LeRobot pads: a valid action to encode, though the loss never reads it.
    pub fn future_actions(&self, frame: usize, k: usize) -> (Vec<&[f32]>, Vec<bool>) {
        let mut actions = Vec::with_capacity(k);
        let mut pad = Vec::with_capacity(k);
        let mut at = Some(frame);
        let mut last = frame;
        for _ in 0..k {
            match at {
                Some(i) => {
                    last = i;
                    actions.push(self.actions[i].as_slice());
                    pad.push(false);
                    at = self.next_frame.get(i).copied().flatten();
                }
                None => {
                    actions.push(self.actions[last].as_slice());
                    pad.push(true);
                }
            }
        }
        (actions, pad)
    }

    /// Auxiliary targets of the given frames for `heads` grounding heads: `[B, H, 2]`
    /// end-effector (x, y) where the episode will next grasp (head 0) and release (head 1),
    /// and the `[B, H]` mask of those that exist (none for heads ≥ 2, none once passed, none
    /// while the end effector is within [`MIN_TARGET_DISTANCE`] of the spot).
    pub fn target_locations(&self, indices: &[usize], heads: usize) -> (Tensor, Tensor) {
        let mut xy = Vec::with_capacity(indices.len() * heads * 2);
        let mut mask = Vec::with_capacity(indices.len() * heads);
        for &i in indices {
            for head in 0..heads {
                let t = self.target(i, head).filter(|t| t.far);
                let p = t.map_or([0.0; 3], |t| t.position);
                xy.extend_from_slice(&p[..2]);
                mask.push(if t.is_some() { 1.0f32 } else { 0.0 });
            }
        }
        let (b, h) = (indices.len() as i64, heads as i64);
        (
            Tensor::from_slice(&xy).view([b, h, 2]),
            Tensor::from_slice(&mask).view([b, h]),
        )
    }

    /// The subgoal gate's labels `[B]` (i64) for a model with `heads` grounding heads: the
    /// class of each frame's [`Subgoal`] (`Head(h)` is `h`, `Hold` is `heads`), -1 where
    /// none is known.
    pub fn subgoal_labels(&self, indices: &[usize], heads: usize) -> Tensor {
        let labels: Vec<i64> = indices
            .iter()
            .map(|&i| self.subgoal(i).class(heads))
            .collect();
        Tensor::from_slice(&labels)
    }

    /// What frame `frame` heads for.
    pub fn subgoal(&self, frame: usize) -> Subgoal {
        self.subgoals
            .get(frame)
            .copied()
            .unwrap_or(Subgoal::Unknown)
    }

    /// The table (x, y) of a frame's next grasp (head 0) or release (head 1), and whether
    /// the end effector is still at least [`MIN_TARGET_DISTANCE`] from it.
    pub fn target_xy(&self, frame: usize, head: usize) -> Option<([f32; 2], bool)> {
        self.target(frame, head)
            .map(|t| ([t.position[0], t.position[1]], t.far))
    }

    fn target(&self, frame: usize, head: usize) -> Option<EventTarget> {
        self.targets
            .get(frame)
            .and_then(|t| t.get(head).copied().flatten())
    }

    /// Where the next grasp or the held object (head 0) and the release (head 1) appear in
    /// the front camera: `[B, H, 2]` (x, y) in `[0, 1]` of the image (x right, y down) and
    /// the `[B, H]` mask of those that exist and project into the image.
    pub fn target_pixels(
        &self,
        indices: &[usize],
        heads: usize,
        camera: &vla_core::CameraView,
    ) -> (Tensor, Tensor) {
        self.target_pixels_in(indices, heads, &vec![Some(*camera); indices.len()])
    }

    /// [`Self::target_pixels`] in the wrist camera, whose view follows each frame's
    /// end-effector pose.
    pub fn wrist_target_pixels(
        &self,
        indices: &[usize],
        heads: usize,
        camera: &MountedCamera,
    ) -> (Tensor, Tensor) {
        // The batch's states in one copy from the tensor, then one view per frame.
        let dim = self.states.size().get(1).copied().unwrap_or(1).max(1) as usize;
        let states = self.states.index_select(0, &index_tensor(indices));
        let states = Vec::<f32>::try_from(states.flatten(0, -1)).unwrap_or_default();
        let mut views: Vec<_> = states.chunks(dim).map(|s| camera.view(s)).collect();
        views.resize(indices.len(), None);
        self.target_pixels_in(indices, heads, &views)
    }

    /// Projections of the frames' targets through `views` (one per index; `None`: no view).
    fn target_pixels_in(
        &self,
        indices: &[usize],
        heads: usize,
        views: &[Option<vla_core::CameraView>],
    ) -> (Tensor, Tensor) {
        let mut xy = Vec::with_capacity(indices.len() * heads * 2);
        let mut mask = Vec::with_capacity(indices.len() * heads);
        for (&i, view) in indices.iter().zip(views) {
            for head in 0..heads {
                let px = self
                    .target(i, head)
                    .zip(view.as_ref())
                    .and_then(|(t, camera)| camera.project(t.position))
                    .filter(|p| p.iter().all(|v| (0.0..=1.0).contains(v)));
                xy.extend_from_slice(&px.unwrap_or([0.0, 0.0]));
                mask.push(if px.is_some() { 1.0f32 } else { 0.0 });
            }
        }
        let (b, h) = (indices.len() as i64, heads as i64);
        (
            Tensor::from_slice(&xy).view([b, h, 2]),
            Tensor::from_slice(&mask).view([b, h]),
        )
    }

    /// Builds a batch of the given frames; augments images when `augment` is given, with
    /// parameters drawn from one generator per frame so a seed reproduces a run.
    pub fn batch(
        &self,
        indices: &[usize],
        collate: &Collate,
        tokenizer: &TextTokenizer,
        prompts: &PromptCache,
        mut augment: Option<(&AugmentConfig, &mut [ChaCha8Rng])>,
    ) -> Result<VlaBatch> {
        let idx = index_tensor(indices);
        let images = self.images.tensor().index_select(0, &idx);
        let images = match augment.as_mut() {
            Some((cfg, rngs)) => augment_images(&images, cfg, rngs),
            None => images,
        };
        let k = collate.chunk_size.max(1);
        let (action_tokens, action_is_pad) = if k == 1 {
            let actions: Vec<&[f32]> = indices
                .iter()
                .map(|&i| self.actions[i].as_slice())
                .collect();
            (collate.encode(&actions)?, None)
        } else {
            let mut actions = Vec::with_capacity(indices.len() * k);
            let mut pad = Vec::with_capacity(indices.len() * k);
            for &i in indices {
                let (a, p) = self.future_actions(i, k);
                actions.extend(a);
                pad.extend(p);
            }
            let b = indices.len() as i64;
            let tokens = collate.encode(&actions)?.view([b, -1]);
            let pad = Tensor::from_slice(&pad).view([b, k as i64]);
            (tokens, Some(pad))
        };
        let prompt_rows: Vec<Vec<i64>> = indices
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let task = self.frame_task[i];
                // Each sample's words from its own generator, after its images' draws; an
                // instruction left as it is keeps its cached ids.
                let words = (augment.as_mut())
                    .and_then(|(cfg, rngs)| cfg.add_words(&self.tasks[task], &mut rngs[k]));
                match words {
                    Some(text) => tokenizer.encode_prompt(&text),
                    None => Ok(prompts.ids(task).to_vec()),
                }
            })
            .collect::<Result<_>>()?;
        let (prompt_ids, prompt_mask) = left_pad(&prompt_rows, tokenizer.pad_id());
        let subtask = if collate.plan {
            let rows = indices
                .iter()
                .map(|&i| {
                    self.frame_subtask[i]
                        .map(|s| prompts.subtask_ids(s).to_vec())
                        .ok_or_else(|| {
                            VlaError::Input(format!(
                                "frame {i} has no sub-task, but the model decodes one (plan.weight > 0): collect the data again with a `vla collect` that records `subtask_index`"
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            Some(right_pad(&rows, tokenizer.pad_id()))
        } else {
            None
        };
        Ok(VlaBatch {
            images,
            state: Some(self.states.index_select(0, &idx)),
            prompt_ids,
            prompt_mask,
            action_tokens,
            action_is_pad,
            subtask,
        })
    }
}

/// What turning frames into a batch needs of the model: its action tokenizer and shapes.
/// Plain data, no tensors, so batches can be assembled on another thread; action tokens are
/// encoded on the host (never through the model's device).
#[derive(Clone, Debug)]
pub struct Collate {
    action_tokenizer: ActionTokenizer,
    action_dim: usize,
    chunk_size: usize,
    /// The model decodes a sub-task first: batches carry each frame's.
    plan: bool,
}

impl Collate {
    pub fn of(model: &VlaModel) -> Self {
        let cfg = model.config();
        Collate {
            action_tokenizer: model.action_tokenizer().clone(),
            action_dim: cfg.action.action_dim,
            chunk_size: cfg.action.chunk_size,
            plan: cfg.plan.enabled(),
        }
    }

    /// `[n, action_dim]` i64 token ids of `actions`, on the host.
    fn encode<A: AsRef<[f32]>>(&self, actions: &[A]) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(actions.len() * self.action_dim);
        for a in actions {
            ids.extend(self.action_tokenizer.encode(a.as_ref())?);
        }
        Ok(Tensor::from_slice(&ids).view([actions.len() as i64, self.action_dim as i64]))
    }
}

/// Prompt token ids per task string and sub-task ids per sub-task sentence, encoded once.
#[derive(Debug)]
pub struct PromptCache {
    ids: Vec<Vec<i64>>,
    subtask_ids: Vec<Vec<i64>>,
}

impl PromptCache {
    pub fn new(data: &TrainingData, tokenizer: &TextTokenizer) -> Result<Self> {
        Ok(PromptCache {
            ids: data
                .tasks
                .iter()
                .map(|t| tokenizer.encode_prompt(t))
                .collect::<Result<_>>()?,
            subtask_ids: data
                .subtasks
                .iter()
                .map(|t| tokenizer.encode_subtask(t))
                .collect::<Result<_>>()?,
        })
    }

    fn ids(&self, task: usize) -> &[i64] {
        &self.ids[task]
    }

    fn subtask_ids(&self, subtask: usize) -> &[i64] {
        &self.subtask_ids[subtask]
    }
}

fn index_tensor(indices: &[usize]) -> Tensor {
    let v: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_slice(&v)
}

fn check_features(ds: &Dataset, dir: &Path, features: &FeatureMapping) -> Result<()> {
    for key in &features.cameras {
        if !ds.image_keys().iter().any(|k| k == key) {
            return Err(VlaError::Input(format!(
                "dataset {}: no image feature {key:?} (has {:?})",
                dir.display(),
                ds.image_keys()
            )));
        }
    }
    Ok(())
}

/// `[B, C, 3, H, W]` u8 → augmented float in `[0, 1]`. Sample `i` draws its crop, brightness,
/// contrast and channel gains from `rngs[i]` alone, so a sample is augmented the same whether
/// it is built in one batch or in a data-parallel rank's slice of it.
pub(crate) fn augment_images(
    images: &Tensor,
    cfg: &AugmentConfig,
    rngs: &mut [ChaCha8Rng],
) -> Tensor {
    let size = images.size();
    let (b, c, h, w) = (size[0], size[1], size[3], size[4]);
    debug_assert_eq!(rngs.len() as i64, b, "one generator per sample");
    let mut x = images.to_kind(Kind::Float) / 255.0;
    let p = cfg.shift_px;
    let mut crops = Vec::with_capacity((b * c) as usize);
    let (mut brightness, mut contrast) = (Vec::new(), Vec::new());
    let mut gain = Vec::with_capacity((b * 3) as usize);
    let jitter = |rng: &mut ChaCha8Rng, range: f64| 1.0 + rng.random_range(-range..=range) as f32;
    for rng in rngs.iter_mut() {
        for _ in 0..c {
            if p > 0 {
                crops.push((rng.random_range(0..=2 * p), rng.random_range(0..=2 * p)));
            }
        }
        brightness.push(jitter(rng, cfg.brightness));
        contrast.push(jitter(rng, cfg.contrast));
        for _ in 0..3 {
            gain.push(jitter(rng, cfg.channel_gain));
        }
    }
    if p > 0 {
        let padded = x.view([b * c, 3, h, w]).replication_pad2d([p, p, p, p]);
        let crops: Vec<Tensor> = crops
            .iter()
            .enumerate()
            .map(|(i, &(dy, dx))| padded.get(i as i64).narrow(1, dy, h).narrow(2, dx, w))
            .collect();
        x = Tensor::stack(&crops, 0).view([b, c, 3, h, w]);
    }
    let brightness = Tensor::from_slice(&brightness).view([b, 1, 1, 1, 1]);
    let contrast = Tensor::from_slice(&contrast).view([b, 1, 1, 1, 1]);
    let gain = Tensor::from_slice(&gain).view([b, 1, 3, 1, 1]);
    let mean = x.mean_dim([2i64, 3, 4].as_slice(), true, Kind::Float);
    (((x - &mean) * contrast + mean) * brightness * gain).clamp(0.0, 1.0)
}

/// Deterministic per-step generator: the batch and augmentation of step `step` depend only
/// on the run seed and the step, so a resumed run draws exactly what the original would have.
pub fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step as u64 + 1);
    rng
}

/// The generators of samples `positions` of step `step`'s global batch: the step's stream at
/// word offsets far past what drawing the batch's indices uses, one 2^32-word window each.
pub fn sample_rngs(seed: u64, step: usize, positions: std::ops::Range<usize>) -> Vec<ChaCha8Rng> {
    positions
        .map(|i| {
            let mut rng = step_rng(seed, step);
            rng.set_word_pos(((i as u128) + 1) << 32);
            rng
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augmentation_keeps_shape_and_range_and_is_seeded() {
        crate::test_setup();
        let images = crate::model::rng_locked(|| {
            Tensor::randint(256, [4, 2, 3, 32, 32], (Kind::Uint8, tch::Device::Cpu))
        });
        let cfg = AugmentConfig::default();
        let a = augment_images(&images, &cfg, &mut sample_rngs(3, 7, 0..4));
        let b = augment_images(&images, &cfg, &mut sample_rngs(3, 7, 0..4));
        let c = augment_images(&images, &cfg, &mut sample_rngs(3, 8, 0..4));
        assert_eq!(a.size(), [4, 2, 3, 32, 32]);
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        assert!(a.max().double_value(&[]) <= 1.0 && a.min().double_value(&[]) >= 0.0);
        // A data-parallel rank building samples 2..4 alone augments them as the whole batch did.
        let tail = augment_images(&images.narrow(0, 2, 2), &cfg, &mut sample_rngs(3, 7, 2..4));
        assert!(tail.equal(&a.narrow(0, 2, 2)));
    }
    #[test]
    fn extra_words_surround_the_instruction_and_are_seeded() {
        let instruction = "pick up the red cube";
        let mut cfg = AugmentConfig::default();
        // Off by default: no draw changes the text.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(cfg.add_words(instruction, &mut rng), None);
        cfg.extra_words = 1.0;
        // The text a sample reads: the instruction as it is when no words were added.
        let draw_at = |cfg: &AugmentConfig, seed: u64| {
            cfg.add_words(instruction, &mut ChaCha8Rng::seed_from_u64(seed))
                .unwrap_or_else(|| instruction.to_string())
        };
        let draw = |seed: u64| draw_at(&cfg, seed);
        let (mut before, mut after) = (0, 0);
        for seed in 0..200 {
            let text = draw(seed);
            assert_eq!(text, draw(seed), "the same generator, the same words");
            let at = text
                .find(instruction)
                .expect("the instruction is kept whole");
            let (pre, post) = (&text[..at], &text[at + instruction.len()..]);
            before += usize::from(!pre.is_empty());
            after += usize::from(!post.is_empty());
            assert!(
                !(pre.is_empty() && post.is_empty()),
                "{text:?}: no word added"
            );
            for word in pre.split_whitespace().chain(post.split_whitespace()) {
                assert!(
                    (2..=7).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_lowercase()),
                    "{word:?} in {text:?}"
                );
            }
            assert!(pre.split_whitespace().count() <= 3 && post.split_whitespace().count() <= 3);
        }
        // Both sides are used (each side in about two thirds of the draws).
        assert!(
            before > 100 && after > 100,
            "before {before}, after {after} of 200"
        );
        // At share 0.5, about half of the instructions change.
        let half = AugmentConfig {
            extra_words: 0.5,
            ..cfg.clone()
        };
        let changed = (0..400)
            .filter(|&seed| draw_at(&half, seed) != instruction)
            .count();
        assert!((150..250).contains(&changed), "{changed} of 400 changed");
    }

    /// Two episodes of 4 and 2 frames; frame i's action is `[i/10, 0, …, gripper]`.
    fn two_episodes(image_size: i64) -> TrainingData {
        let n = 6;
        let actions: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let mut a = vec![0.0f32; 7];
                a[0] = i as f32 / 10.0;
                a[6] = (i % 2) as f32;
                a
            })
            .collect();
        TrainingData {
            images: FrameStore::resident(Tensor::zeros(
                [n as i64, 2, 3, image_size, image_size],
                (Kind::Uint8, tch::Device::Cpu),
            )),
            states: Tensor::zeros([n as i64, 13], (Kind::Float, tch::Device::Cpu)),
            actions,
            next_frame: vec![Some(1), Some(2), Some(3), None, Some(5), None],
            frame_task: vec![0; n],
            frame_subtask: vec![None; n],
            subtasks: Vec::new(),
            targets: vec![[None; 2]; n],
            subgoals: vec![Subgoal::Unknown; n],
            tasks: vec!["pick up the red cube".into()],
            train: (0..n).collect(),
            val: Vec::new(),
            train_episodes: 2,
            val_episodes: 0,
            sources: Vec::new(),
        }
    }

    #[test]
    fn chunk_targets_stop_at_the_episodes_end() {
        crate::test_setup();
        let data = two_episodes(16);
        let first =
            |frames: &[usize]| -> Vec<f32> { frames.iter().map(|&i| i as f32 / 10.0).collect() };
        for (frame, want, pad) in [
            (0, first(&[0, 1, 2]), [false, false, false]),
            (2, first(&[2, 3, 3]), [false, false, true]),
            (3, first(&[3, 3, 3]), [false, true, true]),
            // The next episode starts afresh: frame 3 never leaks into it, nor 4 into 3.
            (4, first(&[4, 5, 5]), [false, false, true]),
        ] {
            let (actions, is_pad) = data.future_actions(frame, 3);
            let got: Vec<f32> = actions.iter().map(|a| a[0]).collect();
            assert_eq!(got, want, "frame {frame}");
            assert_eq!(is_pad, pad, "frame {frame}");
        }
        // Through a batch: tokens of the three actions one after the other, and the mask.
        let cfg = crate::config::VlaConfig::test_tiny_chunk(3);
        let stats = crate::action_tokenizer::NormStats::unit(&cfg);
        let model = VlaModel::new(cfg, stats, tch::Device::Cpu, 0).expect("valid config");
        let tokenizer = TextTokenizer::train_for_instructions(&data.tasks, 300).expect("tokenizer");
        let prompts = PromptCache::new(&data, &tokenizer).expect("prompts");
        let batch = data
            .batch(&[2, 5], &Collate::of(&model), &tokenizer, &prompts, None)
            .expect("batch");
        let expected: Vec<&[f32]> = [2, 3, 3, 5, 5, 5].iter().map(|&i| data.action(i)).collect();
        let tokens = model
            .encode_actions(&expected)
            .expect("tokens")
            .view([2, 21]);
        assert!(batch.action_tokens.equal(&tokens));
        let pad = Tensor::from_slice(&[false, false, true, false, true, true]).view([2, 3]);
        assert!(batch.action_is_pad.expect("a chunk's pad mask").equal(&pad));
        // The one-action model's batch is what it always was: no mask, frame t's action.
        let one = VlaModel::new(
            crate::config::VlaConfig::test_tiny(),
            crate::action_tokenizer::NormStats::unit(&crate::config::VlaConfig::test_tiny()),
            tch::Device::Cpu,
            0,
        )
        .expect("valid config");
        let batch = data
            .batch(&[2, 5], &Collate::of(&one), &tokenizer, &prompts, None)
            .expect("batch");
        assert!(batch.action_is_pad.is_none());
        let own = one
            .encode_actions(&[data.action(2), data.action(5)])
            .expect("tokens");
        assert!(batch.action_tokens.equal(&own));
    }
}

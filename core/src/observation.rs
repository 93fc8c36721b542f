//! What a policy sees: camera images, proprioception and the instruction.

pub use image::RgbImage;

/// Length of the proprioceptive state vector (see [`STATE_NAMES`]).
pub const STATE_DIM: usize = 13;

/// Names of the state vector entries, in order: six arm joint angles (rad), the gripper
/// opening (distance between the finger pads, m), the end-effector position (m, base frame)
/// and its orientation as roll/pitch/yaw (rad, base frame).
pub const STATE_NAMES: [&str; STATE_DIM] = [
    "joint_1",
    "joint_2",
    "joint_3",
    "joint_4",
    "joint_5",
    "joint_6",
    "gripper_opening",
    "ee_x",
    "ee_y",
    "ee_z",
    "ee_roll",
    "ee_pitch",
    "ee_yaw",
];

/// Index ranges into the state vector.
pub struct StateLayout;

impl StateLayout {
    pub const JOINTS: std::ops::Range<usize> = 0..6;
    pub const GRIPPER: usize = 6;
    pub const EE_POSITION: std::ops::Range<usize> = 7..10;
    pub const EE_RPY: std::ops::Range<usize> = 10..13;
}

/// One observation, exactly paired with the physical state it shows.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Front (scene) camera, RGB8.
    pub front: RgbImage,
    /// Wrist camera, RGB8.
    pub wrist: RgbImage,
    /// Optional depth of the front camera in metres, row-major.
    pub front_depth: Option<Vec<f32>>,
    /// Proprioception, laid out as [`STATE_NAMES`].
    pub state: [f32; STATE_DIM],
    /// The natural-language instruction of the episode.
    pub instruction: String,
}

//! The safety layer: a [`CommandSink`] trait for whatever executes commands (a MoveIt Servo
//! publisher, a joint trajectory publisher, the simulator, a test recorder) and decorators
//! that wrap any sink and enforce one limit each. Decorators compose, so a deployment picks
//! its chain in one place (see [`SafetyChain`]) and every limit is tested on its own.
//!
//! Every decorator passes commands inward and returns what was finally *executed*, so
//! stateful limits (acceleration, gripper rate) measure against what the robot really got,
//! e.g. ramping up from zero after an emergency stop.

mod kinematics;
mod limits;
mod watchdog;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use kinematics::{ArmModel, IkJointSink, JointStateFk, SharedJoints, ToolPosition};
pub use limits::{
    FiniteGuard, GripperRateLimit, JointLimits, JointSpeedLimit, SpeedLimit, WorkspaceBox,
};
pub use watchdog::{EmergencyStop, EstopHandle, Freshness, Watchdog};

/// Tool velocity in the base frame: m/s and rad/s (MoveIt Servo's twist).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Twist {
    pub linear: [f64; 3],
    pub angular: [f64; 3],
}

impl Twist {
    pub const ZERO: Twist = Twist {
        linear: [0.0; 3],
        angular: [0.0; 3],
    };

    pub fn is_finite(&self) -> bool {
        self.linear
            .iter()
            .chain(&self.angular)
            .all(|v| v.is_finite())
    }

    pub fn is_zero(&self) -> bool {
        self.linear.iter().chain(&self.angular).all(|v| *v == 0.0)
    }

    pub fn scaled(&self, s: f64) -> Twist {
        Twist {
            linear: self.linear.map(|v| v * s),
            angular: self.angular.map(|v| v * s),
        }
    }
}

/// What to do with the arm for one control period.
#[derive(Clone, Debug, PartialEq)]
pub enum Motion {
    /// Tool twist; [`Twist::ZERO`] means stop and hold.
    Twist(Twist),
    /// Joint positions (chain order, rad) to reach after `duration` seconds.
    Joints { positions: Vec<f64>, duration: f64 },
}

/// One control period's command.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub motion: Motion,
    /// Gripper closure in [0, 1] (1 = closed, the policy's convention); `None` keeps it.
    pub gripper: Option<f64>,
}

impl Command {
    /// Zero twist, gripper kept: what every safety stop sends.
    pub fn stop() -> Self {
        Command {
            motion: Motion::Twist(Twist::ZERO),
            gripper: None,
        }
    }

    pub fn twist(t: Twist, gripper: Option<f64>) -> Self {
        Command {
            motion: Motion::Twist(t),
            gripper,
        }
    }

    /// Whether this command asks for no arm motion.
    pub fn is_stop(&self) -> bool {
        matches!(&self.motion, Motion::Twist(t) if t.is_zero())
    }
}

/// Why a command could not be executed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("cannot send the command: {0}")]
    Output(String),
}

/// Anything that executes commands. Returns the command actually executed.
pub trait CommandSink: Send {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError>;
}

impl<S: CommandSink + ?Sized> CommandSink for Box<S> {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError> {
        (**self).send(cmd)
    }
}

/// Counts of every intervention, shared by all decorators of a chain (and the diagnostics).
#[derive(Debug, Default)]
pub struct Interventions {
    pub nonfinite: AtomicU64,
    pub estop: AtomicU64,
    pub watchdog: AtomicU64,
    pub speed: AtomicU64,
    pub acceleration: AtomicU64,
    pub workspace: AtomicU64,
    pub joint_limits: AtomicU64,
    pub gripper: AtomicU64,
}

impl Interventions {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (name, count) pairs, for diagnostics and reports.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("nonfinite", g(&self.nonfinite)),
            ("estop", g(&self.estop)),
            ("watchdog", g(&self.watchdog)),
            ("speed", g(&self.speed)),
            ("acceleration", g(&self.acceleration)),
            ("workspace", g(&self.workspace)),
            ("joint_limits", g(&self.joint_limits)),
            ("gripper", g(&self.gripper)),
        ]
    }

    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|(_, n)| n).sum()
    }
}

/// The limits of the standard chain (units: m, rad, s).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_linear_speed: f64,
    pub max_angular_speed: f64,
    pub max_linear_acceleration: f64,
    pub max_angular_acceleration: f64,
    /// Tool centre point box in the base frame: [[xmin, ymin, zmin], [xmax, ymax, zmax]].
    pub workspace: [[f64; 3]; 2],
    /// Stay this far inside the URDF joint limits (rad).
    pub joint_margin: f64,
    /// Largest joint speed of a joint-space command (rad/s; each joint's URDF velocity
    /// limit applies too).
    pub max_joint_speed: f64,
    /// Largest change of a joint's speed per second (rad/s²).
    pub max_joint_acceleration: f64,
    /// Largest gripper closure change per second (closure is 0..1).
    pub max_gripper_rate: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_linear_speed: 0.3,
            max_angular_speed: 1.5,
            max_linear_acceleration: 3.0,
            max_angular_acceleration: 15.0,
            workspace: [[0.15, -0.45, 0.012], [0.80, 0.45, 0.55]],
            joint_margin: 0.01,
            max_joint_speed: 2.0,
            max_joint_acceleration: 20.0,
            max_gripper_rate: 10.0,
        }
    }
}

impl Limits {
    /// Every limit must be a positive finite number and the box non-empty.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("max_linear_speed", self.max_linear_speed),
            ("max_angular_speed", self.max_angular_speed),
            ("max_linear_acceleration", self.max_linear_acceleration),
            ("max_angular_acceleration", self.max_angular_acceleration),
            ("max_gripper_rate", self.max_gripper_rate),
            ("max_joint_speed", self.max_joint_speed),
            ("max_joint_acceleration", self.max_joint_acceleration),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("limits.{name} = {v} must be positive and finite"));
            }
        }
        if !(self.joint_margin.is_finite() && self.joint_margin >= 0.0) {
            return Err(format!(
                "limits.joint_margin = {} must be finite and non-negative",
                self.joint_margin
            ));
        }
        let [lo, hi] = self.workspace;
        for a in 0..3 {
            if !(lo[a].is_finite() && hi[a].is_finite() && lo[a] < hi[a]) {
                return Err(format!(
                    "limits.workspace axis {a}: min {} must be below max {}",
                    lo[a], hi[a]
                ));
            }
        }
        Ok(())
    }
}

/// Handles to the state a standard chain reads (shared with the node that fills them).
#[derive(Clone)]
pub struct SafetyInputs {
    pub arm: Arc<ArmModel>,
    pub joints: SharedJoints,
    pub freshness: Freshness,
    pub estop: EstopHandle,
    pub counts: Arc<Interventions>,
}

/// The standard chain, outermost first: non-finite guard → speed and acceleration (tool
/// twists) → joint speed and acceleration (joint targets) → workspace box → joint limits →
/// gripper rate → watchdog → emergency stop → `output`. Stops (watchdog, e-stop) sit
/// innermost so they are immediate and always win. A twist and a joint target go through
/// the same chain; each limit checks the motion it understands (the box checks a joint
/// target by forward kinematics).
pub struct SafetyChain;

impl SafetyChain {
    #[allow(clippy::new_ret_no_self)]
    pub fn new<S: CommandSink + 'static>(
        output: S,
        limits: &Limits,
        period: f64,
        watchdog_timeout: std::time::Duration,
        instruction_timeout: Option<std::time::Duration>,
        inputs: &SafetyInputs,
    ) -> Box<dyn CommandSink> {
        let c = inputs.counts.clone();
        let estop = EmergencyStop::new(output, inputs.estop.clone(), c.clone());
        let dog = Watchdog::new(
            estop,
            inputs.freshness.clone(),
            watchdog_timeout,
            instruction_timeout,
            c.clone(),
        );
        let grip = GripperRateLimit::new(dog, limits.max_gripper_rate, period, c.clone());
        let joints = JointLimits::new(
            grip,
            inputs.arm.clone(),
            inputs.joints.clone(),
            limits.joint_margin,
            period,
            c.clone(),
        );
        let fk = JointStateFk::new(inputs.arm.clone(), inputs.joints.clone());
        let ws = WorkspaceBox::new(joints, Box::new(fk), limits.workspace, period, c.clone());
        let joint_speed = JointSpeedLimit::new(
            ws,
            inputs.arm.clone(),
            inputs.joints.clone(),
            limits,
            period,
            c.clone(),
        );
        let speed = SpeedLimit::new(joint_speed, limits, period, c.clone());
        Box::new(FiniteGuard::new(speed, c))
    }
}

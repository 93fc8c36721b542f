//! The robot's arm for the safety layer: URDF chain, joint names, and the latest measured
//! joints (from `JointState`), with forward kinematics and IK from `vla-kinematics`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use nalgebra::{Isometry3, Translation3, UnitQuaternion, Vector3};
use vla_kinematics::RobotDescription;
use vla_kinematics::{IkSettings, KinematicChain};

use super::{Command, CommandSink, Motion, SinkError};
use crate::msg::JointState;

/// The arm as the URDF describes it.
#[derive(Clone, Debug)]
pub struct ArmModel {
    pub chain: KinematicChain,
    /// Driven finger joint and its travel (closed, open) in metres, if there is a gripper.
    pub gripper_joint: Option<(String, f64, f64)>,
}

/// Measured arm state, in chain order.
#[derive(Clone, Debug, PartialEq)]
pub struct JointSnapshot {
    pub positions: Vec<f64>,
    /// Driven finger travel (m), when the message carried it.
    pub finger: Option<f64>,
    /// Every joint of the message with a finite position (a joint-space policy's state).
    pub named: Vec<(String, f64)>,
    pub received: Instant,
}

/// The latest measured joints, written by the `/joint_states` subscription.
pub type SharedJoints = Arc<Mutex<Option<JointSnapshot>>>;

impl ArmModel {
    pub fn from_description(d: &RobotDescription) -> Self {
        ArmModel {
            chain: d.chain.clone(),
            gripper_joint: d
                .gripper
                .as_ref()
                .map(|g| (g.driver_joint.clone(), g.lower, g.upper)),
        }
    }

    pub fn joint_names(&self) -> Vec<String> {
        self.chain.joints.iter().map(|j| j.name.clone()).collect()
    }

    /// Pick the chain's joints out of a `JointState` (any order, extra joints ignored).
    pub fn snapshot(&self, msg: &JointState) -> Result<JointSnapshot, String> {
        if msg.position.len() != msg.name.len() {
            return Err(format!(
                "JointState has {} names but {} positions",
                msg.name.len(),
                msg.position.len()
            ));
        }
        let find = |name: &str| -> Option<f64> {
            msg.name
                .iter()
                .position(|n| n == name)
                .map(|i| msg.position[i])
        };
        let mut positions = Vec::with_capacity(self.chain.dof());
        for j in &self.chain.joints {
            let v = find(&j.name).ok_or_else(|| format!("JointState lacks joint {:?}", j.name))?;
            if !v.is_finite() {
                return Err(format!("JointState position of {:?} is {v}", j.name));
            }
            positions.push(v);
        }
        let finger = self
            .gripper_joint
            .as_ref()
            .and_then(|(name, _, _)| find(name))
            .filter(|v| v.is_finite());
        let named = msg
            .name
            .iter()
            .zip(&msg.position)
            .filter(|(_, v)| v.is_finite())
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        Ok(JointSnapshot {
            positions,
            finger,
            named,
            received: Instant::now(),
        })
    }

    pub fn tool_pose(&self, q: &[f64]) -> Isometry3<f64> {
        self.chain.forward(q)
    }
}

/// Where the tool centre point is now.
pub trait ToolPosition: Send {
    fn tool_position(&self) -> Option<[f64; 3]>;
    /// Where the tool would be at joint positions `q` (chain order), to check a joint
    /// target; `None` when this source has no kinematics (a joint target is then held).
    fn tool_position_at(&self, _q: &[f64]) -> Option<[f64; 3]> {
        None
    }
    /// The measured joints behind [`ToolPosition::tool_position`], if known.
    fn joints(&self) -> Option<Vec<f64>> {
        None
    }
}

/// Tool position by forward kinematics of the latest `JointState`.
pub struct JointStateFk {
    arm: Arc<ArmModel>,
    joints: SharedJoints,
}

impl JointStateFk {
    pub fn new(arm: Arc<ArmModel>, joints: SharedJoints) -> Self {
        JointStateFk { arm, joints }
    }
}

impl ToolPosition for JointStateFk {
    fn tool_position(&self) -> Option<[f64; 3]> {
        self.tool_position_at(&self.joints()?)
    }

    fn tool_position_at(&self, q: &[f64]) -> Option<[f64; 3]> {
        if q.len() != self.arm.chain.dof() {
            return None;
        }
        let t = self.arm.tool_pose(q).translation.vector;
        Some([t.x, t.y, t.z])
    }

    fn joints(&self) -> Option<Vec<f64>> {
        let guard = self.joints.lock().ok()?;
        guard.as_ref().map(|s| s.positions.clone())
    }
}

/// Turns twists into joint targets by damped least squares IK on the same URDF, for
/// ros2_control's joint trajectory controller. Deltas accumulate on the last *commanded*
/// joints (as the simulator's controller does) so a zero twist (every safety stop) holds
/// exactly still. Joint targets (a joint-space policy's) pass through and become the
/// commanded joints a later stop holds.
pub struct IkJointSink<S> {
    inner: S,
    arm: Arc<ArmModel>,
    joints: SharedJoints,
    period: f64,
    settings: IkSettings,
    commanded: Option<(Vec<f64>, Instant)>,
}

impl<S: CommandSink> IkJointSink<S> {
    pub fn new(inner: S, arm: Arc<ArmModel>, joints: SharedJoints, period: f64) -> Self {
        IkJointSink {
            inner,
            arm,
            joints,
            period,
            settings: IkSettings {
                restarts: 2,
                ..IkSettings::default()
            },
            commanded: None,
        }
    }

    fn base(&self) -> Option<Vec<f64>> {
        let measured = self
            .joints
            .lock()
            .ok()?
            .as_ref()
            .map(|s| s.positions.clone());
        match &self.commanded {
            // Re-anchor on the measurement when commands paused for a while.
            Some((q, at)) if at.elapsed().as_secs_f64() < 5.0 * self.period => Some(q.clone()),
            _ => measured,
        }
    }
}

impl<S: CommandSink> CommandSink for IkJointSink<S> {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError> {
        let Motion::Twist(t) = cmd.motion else {
            let done = self.inner.send(cmd)?;
            if let Motion::Joints { positions, .. } = &done.motion {
                self.commanded = Some((positions.clone(), Instant::now()));
            }
            return Ok(done);
        };
        let Some(q0) = self.base() else {
            // No joint state yet: nothing to hold, send nothing but the gripper.
            return self.inner.send(Command::stop());
        };
        let positions = if t.is_zero() {
            q0
        } else {
            let current = self.arm.tool_pose(&q0);
            let dt = self.period;
            let dp = Vector3::from(t.linear) * dt;
            let dr = Vector3::from(t.angular) * dt;
            let rotation = UnitQuaternion::from_scaled_axis(dr) * current.rotation;
            let target = Isometry3::from_parts(
                Translation3::from(current.translation.vector + dp),
                rotation,
            );
            match self.arm.chain.inverse(&target, &q0, &self.settings) {
                // A far-off best effort could jump anywhere: hold instead.
                Ok(sol) if sol.converged || sol.position_error < 1e-3 => sol.joints,
                Ok(sol) => {
                    tracing::debug!(error = sol.position_error, "IK did not converge, holding");
                    q0
                }
                Err(e) => return Err(SinkError::Output(format!("IK: {e}"))),
            }
        };
        self.commanded = Some((positions.clone(), Instant::now()));
        self.inner.send(Command {
            motion: Motion::Joints {
                positions,
                duration: self.period,
            },
            gripper: cmd.gripper,
        })
    }
}

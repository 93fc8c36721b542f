//! Turning actions into motor targets: end-effector delta pose through IK, or joint positions.

use nalgebra::{Isometry3, Translation3, UnitQuaternion, Vector3};
use serde::{Deserialize, Serialize};
use vla_core::Action;

use crate::cell::Cell;
use crate::kinematics::IkSettings;

/// How the 7 action numbers are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlMode {
    /// `[dx, dy, dz, droll, dpitch, dyaw, gripper]`: tool delta pose in the base frame per step.
    #[default]
    EeDeltaPose,
    /// `[q1 … q6, gripper]`: absolute arm joint targets (rad).
    JointPosition,
}

/// What happened to one action on its way to the motors; counted into `info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// The action contained NaN or infinity and was replaced by "hold still".
    pub rejected_nonfinite: bool,
    /// Translation or rotation exceeded the speed limit and was scaled down.
    pub clamped_speed: bool,
    /// The target left the workspace box and was clamped.
    pub clamped_workspace: bool,
    /// IK did not converge; the closest reachable pose was used.
    pub ik_failed: bool,
    /// Joint targets were limited by joint speed or position limits.
    pub clamped_joints: bool,
    /// The commanded target was re-anchored on the measured pose (after a collision).
    pub reanchored: bool,
}

/// Running totals of [`ActionReport`] over an episode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterventionCounts {
    pub rejected_nonfinite: u32,
    pub clamped_speed: u32,
    pub clamped_workspace: u32,
    pub ik_failed: u32,
    pub clamped_joints: u32,
    pub reanchored: u32,
}

impl InterventionCounts {
    pub fn add(&mut self, r: &ActionReport) {
        self.rejected_nonfinite += r.rejected_nonfinite as u32;
        self.clamped_speed += r.clamped_speed as u32;
        self.clamped_workspace += r.clamped_workspace as u32;
        self.ik_failed += r.ik_failed as u32;
        self.clamped_joints += r.clamped_joints as u32;
        self.reanchored += r.reanchored as u32;
    }
}

/// Commanded state of the arm between control steps.
#[derive(Clone, Debug)]
pub struct Controller {
    pub mode: ControlMode,
    /// Commanded tool pose; deltas accumulate on it so that a zero action holds still
    /// exactly instead of drifting down with gravity sag.
    pub target: Isometry3<f64>,
    /// Commanded joint positions (the last IK solution).
    pub joint_command: Vec<f64>,
    pub gripper_closed: bool,
    /// Finger travel commanded now (ramps towards open or closed).
    pub finger_command: f64,
    pub ik: IkSettings,
}

impl Controller {
    pub fn new(cell: &Cell, mode: ControlMode) -> Self {
        let q = cell.robot.joint_positions(&cell.world);
        let target = cell.robot.description.chain.forward(&q);
        let open = cell.robot.finger_range().1;
        Controller {
            mode,
            target,
            joint_command: q,
            gripper_closed: false,
            finger_command: cell.robot.finger_position(&cell.world).max(0.0).min(open),
            ik: IkSettings {
                restarts: 2,
                ..IkSettings::default()
            },
        }
    }

    /// Run one control step: read the action, set motor targets and advance the physics
    /// by `substeps` steps, interpolating joint targets with a velocity feed-forward.
    pub fn step(&mut self, cell: &mut Cell, action: &Action) -> ActionReport {
        let mut report = ActionReport::default();
        let action = if action.validate().is_err() {
            report.rejected_nonfinite = true;
            // Hold still, keep the gripper as it is.
            let g = if self.gripper_closed { 1.0 } else { 0.0 };
            Action::new([0.0; 3], [0.0; 3], g)
        } else {
            *action
        };
        let chain = cell.robot.description.chain.clone();
        let control_dt = cell.config.control_dt();
        let start = self.joint_command.clone();
        let mut goal = match self.mode {
            ControlMode::EeDeltaPose => self.ee_goal(cell, &action, &mut report),
            ControlMode::JointPosition => action.0[..chain.dof().min(6)]
                .iter()
                .map(|v| *v as f64)
                .chain(start.iter().skip(6).copied())
                .collect(),
        };
        // Joint limits and joint speed limits.
        for (i, joint) in chain.joints.iter().enumerate() {
            let max_delta = joint.max_velocity * control_dt;
            let limited = goal[i]
                .clamp(start[i] - max_delta, start[i] + max_delta)
                .clamp(joint.lower, joint.upper);
            if (limited - goal[i]).abs() > 1e-9 {
                report.clamped_joints = true;
            }
            goal[i] = limited;
        }
        if self.mode == ControlMode::JointPosition {
            self.target = chain.forward(&goal);
        }
        self.gripper_closed = action.gripper_closed();
        let (close, open) = cell.robot.finger_range();
        let finger_goal = if self.gripper_closed { close } else { open };

        let substeps = cell.config.substeps();
        let velocity: Vec<f64> = goal
            .iter()
            .zip(&start)
            .map(|(g, s)| (g - s) / control_dt)
            .collect();
        let dt = cell.config.physics_dt();
        let finger_step = cell.robot.gains.finger_speed as f64 * dt;
        for k in 1..=substeps {
            let alpha = k as f64 / substeps as f64;
            let q: Vec<f64> = start
                .iter()
                .zip(&goal)
                .map(|(s, g)| s + (g - s) * alpha)
                .collect();
            cell.robot.set_arm_targets(&mut cell.world, &q, &velocity);
            let diff = finger_goal - self.finger_command;
            let finger_velocity = if diff.abs() > 1e-12 {
                self.finger_command += diff.clamp(-finger_step, finger_step);
                diff.signum() * cell.robot.gains.finger_speed as f64
            } else {
                0.0
            };
            cell.robot
                .set_finger_target(&mut cell.world, self.finger_command, finger_velocity);
            cell.step_physics();
        }
        self.joint_command = goal;
        report
    }

    fn ee_goal(&mut self, cell: &Cell, action: &Action, report: &mut ActionReport) -> Vec<f64> {
        let config = &cell.config;
        let control_dt = config.control_dt();
        let measured = cell.tcp_pose();
        if (measured.translation.vector - self.target.translation.vector).norm()
            > config.reanchor_distance
        {
            self.target = measured;
            report.reanchored = true;
        }
        let mut dp = Vector3::from(action.delta_position().map(|v| v as f64));
        let mut dr = Vector3::from(action.delta_rotation().map(|v| v as f64));
        let max_lin = config.max_ee_speed * control_dt;
        let max_ang = config.max_ee_angular_speed * control_dt;
        if dp.norm() > max_lin {
            dp *= max_lin / dp.norm();
            report.clamped_speed = true;
        }
        if dr.norm() > max_ang {
            dr *= max_ang / dr.norm();
            report.clamped_speed = true;
        }
        let mut position = self.target.translation.vector + dp;
        let [lo, hi] = config.workspace;
        for axis in 0..3 {
            let clamped = position[axis].clamp(lo[axis], hi[axis]);
            if (clamped - position[axis]).abs() > 1e-12 {
                report.clamped_workspace = true;
            }
            position[axis] = clamped;
        }
        let rotation = UnitQuaternion::from_euler_angles(dr.x, dr.y, dr.z) * self.target.rotation;
        let target = Isometry3::from_parts(Translation3::from(position), rotation);
        let chain = &cell.robot.description.chain;
        match chain.inverse(&target, &self.joint_command, &self.ik) {
            Ok(solution) => {
                if !solution.converged {
                    report.ik_failed = true;
                }
                // Keep the commanded pose consistent with what the joints can do.
                self.target = if solution.converged {
                    target
                } else {
                    chain.forward(&solution.joints)
                };
                solution.joints
            }
            Err(_) => {
                report.ik_failed = true;
                self.joint_command.clone()
            }
        }
    }
}

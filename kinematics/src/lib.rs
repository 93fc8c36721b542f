//! A robot arm without a physics engine: its description read from a URDF ([`RobotDescription`]:
//! the serial chain to the tool centre point and the gripper), forward kinematics, Jacobian and
//! damped least squares IK.
//!
//! Its own crate, free of rapier and bevy, because both sides need it: the simulator builds
//! and controls its arm with it, and the ROS 2 bridge runs the same forward kinematics
//! (workspace limits, the policy's state from `JointState`) and IK (joint trajectories) on a
//! real robot's URDF — so a robot's build of the bridge does not need the simulator.
//! Math in f64: the IK iterates hundreds of times and f32 round-off shows at the 0.1 mm level.

mod urdf;

use nalgebra::{Isometry3, Matrix6, Point3, Translation3, Unit, UnitQuaternion, Vector3, Vector6};

pub use urdf::{GripperDescription, RobotDescription, DEFAULT_TIP_LINK, DEFAULT_URDF};

/// Errors name the URDF (file or source) or the input, and the cause.
#[derive(Debug, thiserror::Error)]
pub enum KinematicsError {
    #[error("cannot read URDF {path}: {cause}")]
    UrdfRead {
        path: std::path::PathBuf,
        cause: String,
    },
    #[error("URDF {source_name}: {cause}")]
    UrdfInvalid { source_name: String, cause: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// One actuated revolute joint of the chain, in URDF terms.
#[derive(Clone, Debug)]
pub struct ChainJoint {
    pub name: String,
    /// Pose of the joint frame in the parent link frame (URDF `<origin>`).
    pub origin: Isometry3<f64>,
    /// Rotation axis in the joint frame (URDF `<axis>`), unit length.
    pub axis: Unit<Vector3<f64>>,
    pub lower: f64,
    pub upper: f64,
    /// Maximum speed from the URDF `<limit velocity>`, rad/s.
    pub max_velocity: f64,
    /// Maximum effort from the URDF `<limit effort>`, N·m.
    pub max_effort: f64,
}

/// The arm from its base link to the tool centre point.
#[derive(Clone, Debug)]
pub struct KinematicChain {
    pub base_link: String,
    pub tip_link: String,
    pub joints: Vec<ChainJoint>,
    /// Fixed transforms after each joint up to the next joint; `fixed_after[i]` follows joint `i`.
    /// `fixed_before` precedes the first joint (fixed joints between base and joint 0).
    pub fixed_before: Isometry3<f64>,
    pub fixed_after: Vec<Isometry3<f64>>,
}

/// World axis and origin of each joint, as used by the Jacobian.
type JointFrames = Vec<(Vector3<f64>, Point3<f64>)>;

/// Settings of the damped least squares solver (defaults measured to converge on this arm;
/// rapier's own defaults — damping 1, 10 iterations — do not).
#[derive(Clone, Copy, Debug)]
pub struct IkSettings {
    pub damping: f64,
    pub max_iterations: usize,
    pub position_tolerance: f64,
    pub rotation_tolerance: f64,
    /// Largest joint change per iteration (rad), keeps steps inside the linear regime.
    pub max_step: f64,
    /// Extra random restarts when the first solve from the current pose fails.
    pub restarts: usize,
}

impl Default for IkSettings {
    fn default() -> Self {
        IkSettings {
            damping: 0.02,
            max_iterations: 200,
            position_tolerance: 1e-4,
            rotation_tolerance: 1e-3,
            max_step: 0.2,
            restarts: 8,
        }
    }
}

/// Outcome of an IK solve: the best joint vector found (always within limits) and its error.
#[derive(Clone, Debug)]
pub struct IkSolution {
    pub joints: Vec<f64>,
    pub position_error: f64,
    pub rotation_error: f64,
    pub converged: bool,
}

impl KinematicChain {
    pub fn dof(&self) -> usize {
        self.joints.len()
    }

    /// Clamp a joint vector into the URDF limits.
    pub fn clamp_to_limits(&self, q: &mut [f64]) {
        for (value, joint) in q.iter_mut().zip(&self.joints) {
            *value = value.clamp(joint.lower, joint.upper);
        }
    }

    /// Pose of the tool centre point in the base frame.
    pub fn forward(&self, q: &[f64]) -> Isometry3<f64> {
        self.forward_with_frames(q).0
    }

    /// Tip pose plus, for each joint, its world axis and origin (for the Jacobian).
    fn forward_with_frames(&self, q: &[f64]) -> (Isometry3<f64>, JointFrames) {
        let mut pose = self.fixed_before;
        let mut frames = Vec::with_capacity(self.joints.len());
        for (i, joint) in self.joints.iter().enumerate() {
            pose *= joint.origin;
            let axis_world = pose.rotation * joint.axis.into_inner();
            frames.push((axis_world, Point3::from(pose.translation.vector)));
            let angle = q.get(i).copied().unwrap_or(0.0);
            pose *= UnitQuaternion::from_axis_angle(&joint.axis, angle);
            pose *= self.fixed_after[i];
        }
        (pose, frames)
    }

    /// Geometric Jacobian (linear rows first, then angular) of the tip in the base frame.
    pub fn jacobian(&self, q: &[f64]) -> (Isometry3<f64>, nalgebra::DMatrix<f64>) {
        let (tip, frames) = self.forward_with_frames(q);
        let p = Point3::from(tip.translation.vector);
        let mut j = nalgebra::DMatrix::<f64>::zeros(6, self.joints.len());
        for (col, (axis, origin)) in frames.iter().enumerate() {
            let lin = axis.cross(&(p - origin));
            for r in 0..3 {
                j[(r, col)] = lin[r];
                j[(r + 3, col)] = axis[r];
            }
        }
        (tip, j)
    }

    /// Solve for joints that put the tip at `target`, starting from `seed`.
    ///
    /// Damped least squares with per-iteration step limits and joint-limit clamping; when the
    /// first attempt does not converge it restarts from deterministic perturbations of the seed
    /// and keeps the best answer, because DLS never leaves a local minimum by itself.
    pub fn inverse(
        &self,
        target: &Isometry3<f64>,
        seed: &[f64],
        settings: &IkSettings,
    ) -> Result<IkSolution, KinematicsError> {
        if seed.len() != self.dof() {
            return Err(KinematicsError::InvalidInput(format!(
                "IK seed has {} joints, the chain has {}",
                seed.len(),
                self.dof()
            )));
        }
        if !target.translation.vector.iter().all(|v| v.is_finite())
            || !target.rotation.coords.iter().all(|v| v.is_finite())
        {
            return Err(KinematicsError::InvalidInput(
                "IK target is not finite".into(),
            ));
        }
        let mut best = self.solve_from(target, seed, settings);
        let mut attempt = 0;
        while !best.converged && attempt < settings.restarts {
            attempt += 1;
            // Deterministic perturbation: same target and seed give the same answer.
            let mut start = seed.to_vec();
            for (i, (value, joint)) in start.iter_mut().zip(&self.joints).enumerate() {
                let phase = ((attempt * 7 + i * 13) % 17) as f64 / 17.0 - 0.5;
                let span = (joint.upper - joint.lower).min(2.0 * std::f64::consts::PI);
                *value += phase * span * 0.5 * (attempt as f64 / settings.restarts as f64);
            }
            self.clamp_to_limits(&mut start);
            let candidate = self.solve_from(target, &start, settings);
            if candidate.cost() < best.cost() {
                best = candidate;
            }
        }
        Ok(best)
    }

    fn solve_from(&self, target: &Isometry3<f64>, seed: &[f64], s: &IkSettings) -> IkSolution {
        let n = self.dof();
        let mut q = seed.to_vec();
        self.clamp_to_limits(&mut q);
        let lambda2 = s.damping * s.damping;
        let mut result = IkSolution {
            joints: q.clone(),
            position_error: f64::INFINITY,
            rotation_error: f64::INFINITY,
            converged: false,
        };
        for _ in 0..s.max_iterations {
            let (tip, j) = self.jacobian(&q);
            let (err, pos_err, rot_err) = pose_error(&tip, target);
            result.joints.copy_from_slice(&q);
            result.position_error = pos_err;
            result.rotation_error = rot_err;
            if pos_err < s.position_tolerance && rot_err < s.rotation_tolerance {
                result.converged = true;
                return result;
            }
            // dq = J^T (J J^T + λ² I)^-1 e  (6×6 solve, cheap for any number of joints)
            let jjt: Matrix6<f64> = (&j * j.transpose()).fixed_view::<6, 6>(0, 0).into_owned()
                + Matrix6::identity() * lambda2;
            let Some(chol) = jjt.cholesky() else { break };
            let y = chol.solve(&err);
            let mut dq = j.transpose() * nalgebra::DVector::from_column_slice(y.as_slice());
            let largest = dq.amax();
            if largest > s.max_step {
                dq *= s.max_step / largest;
            }
            for i in 0..n {
                q[i] += dq[i];
            }
            self.clamp_to_limits(&mut q);
        }
        let tip = self.forward(&q);
        let (_, pos_err, rot_err) = pose_error(&tip, target);
        if pos_err + rot_err < result.position_error + result.rotation_error {
            result.joints.copy_from_slice(&q);
            result.position_error = pos_err;
            result.rotation_error = rot_err;
        }
        result.converged = result.position_error < s.position_tolerance
            && result.rotation_error < s.rotation_tolerance;
        result
    }
}

impl IkSolution {
    /// Scalar cost to compare attempts: metres plus radians scaled to a 10 cm lever.
    fn cost(&self) -> f64 {
        self.position_error + 0.1 * self.rotation_error
    }
}

/// Twist error from `current` to `target` (linear, then rotation vector), with norms.
pub fn pose_error(current: &Isometry3<f64>, target: &Isometry3<f64>) -> (Vector6<f64>, f64, f64) {
    let dp = target.translation.vector - current.translation.vector;
    let dr = (target.rotation * current.rotation.inverse()).scaled_axis();
    let err = Vector6::new(dp.x, dp.y, dp.z, dr.x, dr.y, dr.z);
    (err, dp.norm(), dr.norm())
}

/// URDF `<origin xyz rpy>` to an isometry (URDF rpy is extrinsic X, then Y, then Z).
pub fn urdf_origin(xyz: [f64; 3], rpy: [f64; 3]) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(xyz[0], xyz[1], xyz[2]),
        UnitQuaternion::from_euler_angles(rpy[0], rpy[1], rpy[2]),
    )
}

/// Roll/pitch/yaw (extrinsic XYZ, as URDF and ROS use) of a rotation.
pub fn rpy(rotation: &UnitQuaternion<f64>) -> [f64; 3] {
    let (r, p, y) = rotation.euler_angles();
    [r, p, y]
}

/// Tool orientation pointing straight down (tool Z = −world Z), fingers closing along the
/// world Y axis rotated by `yaw` about the vertical.
pub fn tool_down(yaw: f64) -> UnitQuaternion<f64> {
    UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw)
        * UnitQuaternion::from_axis_angle(&Vector3::y_axis(), std::f64::consts::PI)
}

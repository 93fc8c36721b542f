//! The robot inside rapier: a fixed-root multibody driven by joint motors.
//!
//! Arm joints are force-limited position motors with a velocity feed-forward (the target
//! velocity), so the damping term does not cap joint speed. The two fingers are coupled by a
//! `MultibodyDofCoupling` (a mimic joint): without it both finger motors sit at their force
//! limit and the finger–object–finger stack drifts sideways during a carry (see
//! `shared/notes/rapier-grasping.md`).

use rapier3d::dynamics::{
    JointAxis, MotorModel, MultibodyDofCoupling, MultibodyJointHandle, RigidBodyHandle,
};
use rapier3d::geometry::ColliderHandle;
use rapier3d::pipeline::PhysicsWorld;
use rapier3d_urdf::{UrdfLoaderOptions, UrdfMultibodyOptions, UrdfRobot};
use serde::{Deserialize, Serialize};

use crate::error::SimError;
use vla_kinematics::RobotDescription;

/// Motor gains; defaults measured to settle within about a millimetre under gravity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct MotorGains {
    pub arm_stiffness: f32,
    pub arm_damping: f32,
    pub finger_stiffness: f32,
    pub finger_damping: f32,
    /// Squeeze force of each finger when closed on an object (N).
    pub grip_force: f32,
    /// Finger speed when opening or closing (m/s).
    pub finger_speed: f32,
}

impl Default for MotorGains {
    fn default() -> Self {
        MotorGains {
            arm_stiffness: 1.0e5,
            arm_damping: 2.0e3,
            finger_stiffness: 2.0e3,
            finger_damping: 50.0,
            grip_force: 20.0,
            finger_speed: 0.15,
        }
    }
}

/// Handles of one robot in a physics world.
#[derive(Clone, Debug)]
pub struct Robot {
    pub description: RobotDescription,
    /// Multibody joint handles of the arm joints, in chain order.
    arm_joints: Vec<MultibodyJointHandle>,
    finger_joints: Option<[MultibodyJointHandle; 2]>,
    /// Rigid bodies of every link, with the URDF link name.
    pub links: Vec<(String, RigidBodyHandle)>,
    /// Colliders of the two finger links (for "touching both fingers" checks).
    pub finger_colliders: [Vec<ColliderHandle>; 2],
    /// Display colour of each link (from its URDF material), aligned with `links`.
    pub link_colors: Vec<[f32; 4]>,
    pub gains: MotorGains,
}

impl Robot {
    /// Build the articulation from the description's URDF at the world origin (base fixed).
    pub fn insert(
        world: &mut PhysicsWorld,
        description: RobotDescription,
        gains: MotorGains,
        friction: f32,
    ) -> Result<Robot, SimError> {
        let invalid = |cause: String| SimError::UrdfInvalid {
            source_name: description.source.clone(),
            cause,
        };
        let options = UrdfLoaderOptions {
            make_roots_fixed: true,
            // A sleeping multibody ignores new motor targets: the arm must never sleep.
            rigid_body_blueprint: rapier3d::dynamics::RigidBodyBuilder::dynamic().can_sleep(false),
            collider_blueprint: rapier3d::geometry::ColliderBuilder::default()
                .density(0.0)
                .friction(friction),
            ..Default::default()
        };
        let (urdf_robot, parsed) =
            UrdfRobot::from_str(&description.urdf_text, options, &description.mesh_dir)
                .map_err(|e| invalid(e.to_string()))?;
        let link_names: Vec<String> = urdf_robot
            .links
            .iter()
            .map(|l| parsed.links[l.urdf_link_index].name.clone())
            .collect();
        let joint_names: Vec<String> = urdf_robot
            .joints
            .iter()
            .map(|j| parsed.joints[j.urdf_joint_index].name.clone())
            .collect();
        let handles = urdf_robot.insert_using_multibody_joints(
            &mut world.bodies,
            &mut world.colliders,
            &mut world.multibody_joints,
            UrdfMultibodyOptions::DISABLE_SELF_CONTACTS,
        );
        let find_joint = |name: &str| -> Result<MultibodyJointHandle, SimError> {
            joint_names
                .iter()
                .position(|n| n == name)
                .and_then(|i| handles.joints[i].joint)
                .ok_or_else(|| invalid(format!("joint {name} did not become a multibody joint")))
        };
        let arm_joints = description
            .chain
            .joints
            .iter()
            .map(|j| find_joint(&j.name))
            .collect::<Result<Vec<_>, _>>()?;
        let finger_joints = match &description.gripper {
            Some(g) => Some([find_joint(&g.driver_joint)?, find_joint(&g.follower_joint)?]),
            None => None,
        };
        let links: Vec<(String, RigidBodyHandle)> = link_names
            .iter()
            .cloned()
            .zip(handles.links.iter().map(|l| l.body))
            .collect();
        let mut finger_colliders: [Vec<ColliderHandle>; 2] = [Vec::new(), Vec::new()];
        if let Some(g) = &description.gripper {
            for (slot, joint_name) in [&g.driver_joint, &g.follower_joint].iter().enumerate() {
                let child = parsed
                    .joints
                    .iter()
                    .find(|j| &j.name == *joint_name)
                    .map(|j| j.child.link.clone())
                    .unwrap_or_default();
                if let Some(i) = link_names.iter().position(|n| *n == child) {
                    finger_colliders[slot] = handles.links[i]
                        .colliders
                        .iter()
                        .map(|c| c.handle)
                        .collect();
                }
            }
        }
        let link_colors = link_names
            .iter()
            .map(|name| link_color(&parsed, name))
            .collect();
        let mut robot = Robot {
            description,
            arm_joints,
            finger_joints,
            links,
            finger_colliders,
            link_colors,
            gains,
        };
        robot.configure_motors(world)?;
        Ok(robot)
    }

    fn configure_motors(&mut self, world: &mut PhysicsWorld) -> Result<(), SimError> {
        for (i, handle) in self.arm_joints.iter().enumerate() {
            let effort = self.description.chain.joints[i].max_effort as f32;
            let (mb, link) = world
                .multibody_joints
                .get_mut(*handle)
                .ok_or_else(|| SimError::InvalidInput("arm joint vanished".into()))?;
            if let Some(link) = mb.link_mut(link) {
                let data = &mut link.joint.data;
                data.set_motor_model(JointAxis::AngX, MotorModel::ForceBased);
                data.set_motor(
                    JointAxis::AngX,
                    0.0,
                    0.0,
                    self.gains.arm_stiffness,
                    self.gains.arm_damping,
                );
                data.set_motor_max_force(JointAxis::AngX, effort);
            }
        }
        if let (Some([driver, follower]), Some(g)) = (self.finger_joints, &self.description.gripper)
        {
            let (mb, driver_link) = world
                .multibody_joints
                .get_mut(driver)
                .ok_or_else(|| SimError::InvalidInput("finger joint vanished".into()))?;
            let _ = mb;
            let follower_link = world
                .multibody_joints
                .get(follower)
                .map(|(_, l)| l)
                .ok_or_else(|| SimError::InvalidInput("finger joint vanished".into()))?;
            let (mb, _) = world
                .multibody_joints
                .get_mut(driver)
                .ok_or_else(|| SimError::InvalidInput("finger joint vanished".into()))?;
            for link_id in [driver_link, follower_link] {
                if let Some(link) = mb.link_mut(link_id) {
                    let data = &mut link.joint.data;
                    data.set_motor_model(JointAxis::LinX, MotorModel::ForceBased);
                    data.set_motor(
                        JointAxis::LinX,
                        g.upper as f32,
                        0.0,
                        self.gains.finger_stiffness,
                        self.gains.finger_damping,
                    );
                    data.set_motor_max_force(JointAxis::LinX, self.gains.grip_force);
                }
            }
            mb.add_dof_coupling(MultibodyDofCoupling {
                link1: driver_link,
                dof1: 0,
                axis1: 0,
                link2: follower_link,
                dof2: 0,
                axis2: 0,
                coeff: g.multiplier as f32,
                offset: g.offset as f32,
            });
        }
        Ok(())
    }

    /// Finger travel when (closed, fully open), in metres; zero without a gripper.
    pub fn finger_range(&self) -> (f64, f64) {
        self.description
            .gripper
            .as_ref()
            .map(|g| (g.lower, g.upper))
            .unwrap_or((0.0, 0.0))
    }

    pub fn dof(&self) -> usize {
        self.arm_joints.len()
    }

    /// Measured arm joint angles (rad).
    pub fn joint_positions(&self, world: &PhysicsWorld) -> Vec<f64> {
        self.arm_joints
            .iter()
            .map(|h| {
                world
                    .multibody_joints
                    .get(*h)
                    .and_then(|(mb, id)| mb.link(id))
                    .map(|l| l.joint.coords()[3] as f64)
                    .unwrap_or(0.0)
            })
            .collect()
    }

    /// Finger travel of the driven finger (m): 0 closed, `upper` fully open.
    pub fn finger_position(&self, world: &PhysicsWorld) -> f64 {
        self.finger_joints
            .and_then(|[driver, _]| world.multibody_joints.get(driver))
            .and_then(|(mb, id)| mb.link(id))
            .map(|l| l.joint.coords()[0] as f64)
            .unwrap_or(0.0)
    }

    /// Distance between the finger pads' inner faces is `2·travel + closed gap`; the
    /// opening reported in observations is twice the finger travel.
    pub fn gripper_opening(&self, world: &PhysicsWorld) -> f64 {
        2.0 * self.finger_position(world)
    }

    /// Command arm joint targets with a velocity feed-forward.
    pub fn set_arm_targets(&self, world: &mut PhysicsWorld, positions: &[f64], velocities: &[f64]) {
        for (i, handle) in self.arm_joints.iter().enumerate() {
            if let Some((mb, id)) = world.multibody_joints.get_mut(*handle) {
                if let Some(link) = mb.link_mut(id) {
                    link.joint.data.set_motor(
                        JointAxis::AngX,
                        positions[i] as f32,
                        velocities.get(i).copied().unwrap_or(0.0) as f32,
                        self.gains.arm_stiffness,
                        self.gains.arm_damping,
                    );
                }
            }
        }
    }

    /// Command the fingers towards a travel target (m) at the configured speed and force.
    pub fn set_finger_target(&self, world: &mut PhysicsWorld, travel: f64, velocity: f64) {
        let Some([driver, follower]) = self.finger_joints else {
            return;
        };
        for handle in [driver, follower] {
            if let Some((mb, id)) = world.multibody_joints.get_mut(handle) {
                if let Some(link) = mb.link_mut(id) {
                    link.joint.data.set_motor(
                        JointAxis::LinX,
                        travel as f32,
                        velocity as f32,
                        self.gains.finger_stiffness,
                        self.gains.finger_damping,
                    );
                }
            }
        }
    }

    /// Teleport the arm to a joint configuration with zero velocity (episode reset only,
    /// before any object is touched).
    pub fn reset_joints(&self, world: &mut PhysicsWorld, q: &[f64], finger_travel: f64) {
        let mut handles: Vec<(MultibodyJointHandle, usize, f32)> = self
            .arm_joints
            .iter()
            .zip(q)
            .map(|(h, v)| (*h, 3usize, *v as f32))
            .collect();
        if let Some([d, f]) = self.finger_joints {
            handles.push((d, 0, finger_travel as f32));
            handles.push((f, 0, finger_travel as f32));
        }
        let mut root = None;
        for (handle, axis, value) in handles {
            if let Some((mb, id)) = world.multibody_joints.get_mut(handle) {
                if let Some(link) = mb.link_mut(id) {
                    let current = link.joint.coords()[axis];
                    let delta = value - current;
                    let mut disp = [0.0f32; 1];
                    disp[0] = delta;
                    link.joint.apply_displacement(&disp);
                }
                root = Some(handle);
            }
        }
        if let Some(handle) = root {
            if let Some((mb, _)) = world.multibody_joints.get_mut(handle) {
                mb.generalized_velocity_mut().fill(0.0);
                mb.forward_kinematics(&world.bodies, false);
                mb.update_rigid_bodies(&mut world.bodies, false);
            }
        }
        self.set_arm_targets(world, q, &vec![0.0; q.len()]);
        self.set_finger_target(world, finger_travel, 0.0);
    }

    /// World pose of a link's rigid body, by URDF link name.
    pub fn link_body(&self, name: &str) -> Option<RigidBodyHandle> {
        self.links.iter().find(|(n, _)| n == name).map(|(_, h)| *h)
    }
}

/// The colour of a link's first visual: inline `<color>` or a named top-level material.
fn link_color(robot: &rapier3d_urdf::urdf_rs::Robot, link: &str) -> [f32; 4] {
    let fallback = [0.7, 0.7, 0.72, 1.0];
    let Some(material) = robot
        .links
        .iter()
        .find(|l| l.name == link)
        .and_then(|l| l.visual.first())
        .and_then(|v| v.material.as_ref())
    else {
        return fallback;
    };
    let rgba = material.color.as_ref().map(|c| c.rgba).or_else(|| {
        robot
            .materials
            .iter()
            .find(|m| m.name == material.name)
            .and_then(|m| m.color.as_ref())
            .map(|c| c.rgba)
    });
    rgba.map(|c| [c[0] as f32, c[1] as f32, c[2] as f32, c[3] as f32])
        .unwrap_or(fallback)
}

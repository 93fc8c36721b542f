//! The robot cell: a rapier world with a table, the robot, objects and bins.

use nalgebra::{Isometry3, Quaternion, Translation3, UnitQuaternion, Vector3};
use rapier3d::dynamics::{
    CoefficientCombineRule, RigidBodyBuilder, RigidBodyHandle, SpringCoefficients,
};
use rapier3d::geometry::{ColliderBuilder, ColliderHandle};
use rapier3d::math::{Pose, Vector};
use rapier3d::pipeline::PhysicsWorld;
use serde::{Deserialize, Serialize};

use crate::config::SimConfig;
use crate::error::SimError;
use crate::robot::Robot;
use crate::scene::{ObjectKind, ObjectSpec, ReceptacleSpec};
use vla_kinematics::RobotDescription;

/// Height of the table surface in the world frame. The robot base stands on it at the origin.
pub const TABLE_TOP_Z: f64 = 0.0;
/// Table half extents and centre (x, y) in the base frame.
pub const TABLE_HALF: [f32; 3] = [0.55, 0.75, 0.025];
pub const TABLE_CENTER: [f32; 2] = [0.40, 0.0];

/// A graspable object in the world.
#[derive(Clone, Debug)]
pub struct SimObject {
    pub spec: ObjectSpec,
    pub body: RigidBodyHandle,
    pub collider: ColliderHandle,
}

/// A bin in the world (static).
#[derive(Clone, Debug)]
pub struct SimReceptacle {
    pub spec: ReceptacleSpec,
    /// Centre of the floor on the table (x, y) and yaw.
    pub position: [f32; 2],
    pub yaw: f32,
    pub colliders: Vec<ColliderHandle>,
}

/// Poses of every object, for digests and datasets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObjectState {
    pub label: String,
    pub translation: [f32; 3],
    pub rotation: [f32; 4],
}

pub struct Cell {
    pub world: PhysicsWorld,
    pub robot: Robot,
    pub table: ColliderHandle,
    pub objects: Vec<SimObject>,
    pub receptacles: Vec<SimReceptacle>,
    pub config: SimConfig,
    /// Simulated time since reset (s).
    pub time: f64,
}

pub(crate) fn iso_from_pose(p: &Pose) -> Isometry3<f64> {
    let t = p.translation;
    let r = p.rotation;
    Isometry3::from_parts(
        Translation3::new(t.x as f64, t.y as f64, t.z as f64),
        UnitQuaternion::from_quaternion(Quaternion::new(
            r.w as f64, r.x as f64, r.y as f64, r.z as f64,
        )),
    )
}

/// Convert to the plain pose type shared across crates.
pub fn core_pose(iso: &Isometry3<f64>) -> vla_core::Pose {
    let t = iso.translation.vector;
    let q = iso.rotation.quaternion();
    vla_core::Pose {
        translation: [t.x as f32, t.y as f32, t.z as f32],
        rotation: [q.i as f32, q.j as f32, q.k as f32, q.w as f32],
    }
}

impl Cell {
    /// An empty cell: table and robot, no objects. The arm starts at the zero configuration;
    /// call [`Cell::set_robot_joints`] to place it.
    pub fn new(config: SimConfig, description: RobotDescription) -> Result<Cell, SimError> {
        config.validate().map_err(SimError::InvalidInput)?;
        let mut world = PhysicsWorld::new();
        world.gravity = Vector::new(0.0, 0.0, -9.81);
        let params = &mut world.integration_parameters;
        params.dt = config.physics_dt() as f32;
        params.contact_softness =
            SpringCoefficients::new(config.contact_frequency, config.contact_damping_ratio);
        params.static_contact_softness = SpringCoefficients::new(
            config.static_contact_frequency,
            config.contact_damping_ratio,
        );
        params.num_solver_iterations = config.solver_iterations.max(1);

        let table = world.colliders.insert(
            ColliderBuilder::cuboid(TABLE_HALF[0], TABLE_HALF[1], TABLE_HALF[2])
                .translation(Vector::new(
                    TABLE_CENTER[0],
                    TABLE_CENTER[1],
                    TABLE_TOP_Z as f32 - TABLE_HALF[2],
                ))
                .friction(config.friction)
                .build(),
        );
        let robot = Robot::insert(&mut world, description, config.gains, config.friction)?;
        Ok(Cell {
            world,
            robot,
            table,
            objects: Vec::new(),
            receptacles: Vec::new(),
            config,
            time: 0.0,
        })
    }

    /// Put an object on the table at (x, y) with a yaw, resting on its base.
    pub fn add_object(&mut self, spec: ObjectSpec, x: f32, y: f32, yaw: f32) -> usize {
        let z = spec.height * 0.5 + TABLE_TOP_Z as f32 + 0.0005;
        let body = RigidBodyBuilder::dynamic()
            .pose(Pose::from_parts(
                Vector::new(x, y, z),
                rapier3d::math::Rotation::from_rotation_z(yaw),
            ))
            .angular_damping(if spec.kind == ObjectKind::Ball {
                1.5
            } else {
                0.2
            })
            .linear_damping(0.05)
            .ccd_enabled(true)
            .build();
        let body = self.world.bodies.insert(body);
        let builder = match spec.kind {
            ObjectKind::Cube => {
                let h = spec.size * 0.5;
                ColliderBuilder::cuboid(h, h, spec.height * 0.5)
            }
            // rapier's cylinder axis is local Y: turn it upright about X.
            ObjectKind::Cylinder => ColliderBuilder::cylinder(spec.height * 0.5, spec.size * 0.5)
                .rotation(Vector::new(std::f32::consts::FRAC_PI_2, 0.0, 0.0)),
            ObjectKind::Ball => ColliderBuilder::ball(spec.size * 0.5),
        };
        let collider = builder
            .mass(spec.mass)
            .friction(spec.friction)
            .friction_combine_rule(CoefficientCombineRule::Average)
            .build();
        let collider =
            self.world
                .colliders
                .insert_with_parent(collider, body, &mut self.world.bodies);
        self.objects.push(SimObject {
            spec,
            body,
            collider,
        });
        self.objects.len() - 1
    }

    /// Put a bin on the table, its floor centred at (x, y).
    pub fn add_receptacle(&mut self, spec: ReceptacleSpec, x: f32, y: f32, yaw: f32) -> usize {
        let mut colliders = Vec::new();
        let frame = Pose::from_parts(
            Vector::new(x, y, TABLE_TOP_Z as f32),
            rapier3d::math::Rotation::from_rotation_z(yaw),
        );
        for (center, half) in receptacle_parts(&spec) {
            let local = Pose::from_translation(Vector::new(center[0], center[1], center[2]));
            let collider = ColliderBuilder::cuboid(half[0], half[1], half[2])
                .position(frame * local)
                .friction(self.config.friction)
                .build();
            colliders.push(self.world.colliders.insert(collider));
        }
        self.receptacles.push(SimReceptacle {
            spec,
            position: [x, y],
            yaw,
            colliders,
        });
        self.receptacles.len() - 1
    }

    /// Advance the physics by one step.
    pub fn step_physics(&mut self) {
        self.world.step();
        self.time += self.config.physics_dt();
    }

    pub fn object_pose(&self, index: usize) -> Isometry3<f64> {
        self.world
            .bodies
            .get(self.objects[index].body)
            .map(|b| iso_from_pose(b.position()))
            .unwrap_or_else(Isometry3::identity)
    }

    /// Linear speed of an object (m/s).
    pub fn object_speed(&self, index: usize) -> f64 {
        self.world
            .bodies
            .get(self.objects[index].body)
            .map(|b| b.linvel().length() as f64)
            .unwrap_or(0.0)
    }

    /// Height of the object's lowest point above the table (m).
    pub fn object_bottom_height(&self, index: usize) -> f64 {
        self.object_pose(index).translation.vector.z
            - self.objects[index].spec.height as f64 * 0.5
            - TABLE_TOP_Z
    }

    /// Measured tool-centre-point pose in the base (= world) frame.
    pub fn tcp_pose(&self) -> Isometry3<f64> {
        let q = self.robot.joint_positions(&self.world);
        self.robot.description.chain.forward(&q)
    }

    /// Whether two colliders touch now. Rapier 0.36 recycles a touching pair's contacts until
    /// the bodies' relative pose has drifted 5 cm (`contact_recycling`, on by default, a solver
    /// speed-up), so its contact pairs alone said that fingers raised 5 cm off a released block
    /// still touched it: a block a policy stacked that way never counted as let go. A contact
    /// the narrow phase reports must also hold for the shapes where they are now.
    fn colliders_touch(&self, a: ColliderHandle, b: ColliderHandle) -> bool {
        let active = self
            .world
            .narrow_phase
            .contact_pair(a, b)
            .is_some_and(|p| p.has_any_active_contact());
        if !active {
            return false;
        }
        let (Some(ca), Some(cb)) = (self.world.colliders.get(a), self.world.colliders.get(b))
        else {
            return false;
        };
        let prediction = self.world.integration_parameters.prediction_distance();
        rapier3d::parry::query::contact(
            ca.position(),
            ca.shape(),
            cb.position(),
            cb.shape(),
            prediction,
        )
        .is_ok_and(|c| c.is_some())
    }

    /// Whether an object touches finger 0 or 1.
    pub fn touches_finger(&self, object: usize, finger: usize) -> bool {
        let c = self.objects[object].collider;
        self.robot.finger_colliders[finger]
            .iter()
            .any(|f| self.colliders_touch(c, *f))
    }

    /// Held between both fingers.
    pub fn is_grasped(&self, object: usize) -> bool {
        self.touches_finger(object, 0) && self.touches_finger(object, 1)
    }

    /// Touching either finger.
    pub fn touches_gripper(&self, object: usize) -> bool {
        self.touches_finger(object, 0) || self.touches_finger(object, 1)
    }

    pub fn objects_touch(&self, a: usize, b: usize) -> bool {
        self.colliders_touch(self.objects[a].collider, self.objects[b].collider)
    }

    pub fn touches_table(&self, object: usize) -> bool {
        self.colliders_touch(self.objects[object].collider, self.table)
    }

    /// Object centre inside the bin's inner footprint and below the wall top.
    pub fn object_in_receptacle(&self, object: usize, receptacle: usize) -> bool {
        let p = self.object_pose(object).translation.vector;
        let r = &self.receptacles[receptacle];
        let (s, c) = (r.yaw as f64).sin_cos();
        let dx = p.x - r.position[0] as f64;
        let dy = p.y - r.position[1] as f64;
        let lx = c * dx + s * dy;
        let ly = -s * dx + c * dy;
        lx.abs() <= r.spec.inner_half[0] as f64
            && ly.abs() <= r.spec.inner_half[1] as f64
            && p.z
                < TABLE_TOP_Z + r.spec.wall_height as f64 + self.objects[object].spec.height as f64
    }

    /// Poses of all objects (for digests and logs).
    pub fn object_states(&self) -> Vec<ObjectState> {
        (0..self.objects.len())
            .map(|i| {
                let p = core_pose(&self.object_pose(i));
                ObjectState {
                    label: self.objects[i].spec.label(),
                    translation: p.translation,
                    rotation: p.rotation,
                }
            })
            .collect()
    }

    /// The state vector of [`vla_core::STATE_NAMES`].
    pub fn proprio_state(&self) -> [f32; vla_core::STATE_DIM] {
        let q = self.robot.joint_positions(&self.world);
        let tcp = self.robot.description.chain.forward(&q);
        let mut s = [0.0f32; vla_core::STATE_DIM];
        for (i, v) in q.iter().take(6).enumerate() {
            s[i] = *v as f32;
        }
        s[6] = self.robot.gripper_opening(&self.world) as f32;
        let t = tcp.translation.vector;
        s[7] = t.x as f32;
        s[8] = t.y as f32;
        s[9] = t.z as f32;
        let rpy = crate::kinematics::rpy(&tcp.rotation);
        s[10] = rpy[0] as f32;
        s[11] = rpy[1] as f32;
        s[12] = rpy[2] as f32;
        s
    }

    /// Body pose by handle, as an isometry.
    pub fn body_pose(&self, body: RigidBodyHandle) -> Option<Isometry3<f64>> {
        self.world
            .bodies
            .get(body)
            .map(|b| iso_from_pose(b.position()))
    }

    /// Collider pose in the world (for rendering static and attached shapes).
    pub fn collider_pose(&self, collider: ColliderHandle) -> Option<Isometry3<f64>> {
        self.world
            .colliders
            .get(collider)
            .map(|c| iso_from_pose(c.position()))
    }

    /// Unit vector along the world Z axis, for clarity at call sites.
    pub fn up() -> Vector3<f64> {
        Vector3::z()
    }
}

/// Floor and four walls of a bin in its own frame: (centre, half extents).
pub fn receptacle_parts(spec: &ReceptacleSpec) -> Vec<([f32; 3], [f32; 3])> {
    let [ix, iy] = spec.inner_half;
    let t = spec.wall_thickness;
    let h = spec.wall_height;
    let floor_t = 0.004;
    vec![
        ([0.0, 0.0, floor_t * 0.5], [ix + t, iy + t, floor_t * 0.5]),
        ([ix + t * 0.5, 0.0, h * 0.5], [t * 0.5, iy + t, h * 0.5]),
        ([-(ix + t * 0.5), 0.0, h * 0.5], [t * 0.5, iy + t, h * 0.5]),
        ([0.0, iy + t * 0.5, h * 0.5], [ix, t * 0.5, h * 0.5]),
        ([0.0, -(iy + t * 0.5), h * 0.5], [ix, t * 0.5, h * 0.5]),
    ]
}

impl Cell {
    /// Place the arm at the home pose (tool pointing down at `config.home_position`), gripper
    /// open, and return a controller holding that pose.
    pub fn home(
        &mut self,
        mode: crate::controller::ControlMode,
    ) -> Result<crate::Controller, SimError> {
        let chain = self.robot.description.chain.clone();
        let [x, y, z] = self.config.home_position;
        let target = Isometry3::from_parts(
            Translation3::new(x, y, z),
            crate::kinematics::tool_down(0.0),
        );
        let settings = crate::kinematics::IkSettings::default();
        let seed: Vec<f64> = self
            .config
            .home_seed
            .iter()
            .copied()
            .take(chain.dof())
            .chain(std::iter::repeat(0.0))
            .take(chain.dof())
            .collect();
        let solution = chain.inverse(&target, &seed, &settings)?;
        if !solution.converged {
            return Err(SimError::InvalidInput(format!(
                "home pose {:?} is not reachable (IK error {:.4} m)",
                self.config.home_position, solution.position_error
            )));
        }
        let open = self.robot.finger_range().1;
        self.robot
            .reset_joints(&mut self.world, &solution.joints, open);
        Ok(crate::Controller::new(self, mode))
    }
}

//! Mirroring the rapier world into the renderer's plain scene description.
//!
//! Visuals come from the colliders themselves, so what the cameras show is exactly what the
//! physics simulates.

use rapier3d::geometry::{Collider, ShapeType};
use vla_render::{Body, CameraView, Shape, Visual};

use crate::cell::{core_pose, iso_from_pose, Cell};

/// What is drawn for each body, and where its pose comes from each frame.
#[derive(Clone, Debug)]
pub enum PoseSource {
    Fixed(vla_core::Pose),
    Body(rapier3d::dynamics::RigidBodyHandle),
}

pub fn collider_visual(
    collider: &Collider,
    color: [f32; 4],
    local: vla_core::Pose,
) -> Option<Visual> {
    let shape = collider.shape();
    let s = match shape.shape_type() {
        ShapeType::Cuboid => {
            let c = shape.as_cuboid()?;
            Shape::Cuboid {
                half_extents: [c.half_extents.x, c.half_extents.y, c.half_extents.z],
            }
        }
        ShapeType::Cylinder => {
            let c = shape.as_cylinder()?;
            Shape::Cylinder {
                radius: c.radius,
                half_height: c.half_height,
            }
        }
        ShapeType::Ball => Shape::Sphere {
            radius: shape.as_ball()?.radius,
        },
        ShapeType::Capsule => {
            let c = shape.as_capsule()?;
            Shape::Capsule {
                radius: c.radius,
                half_height: c.half_height(),
            }
        }
        _ => return None,
    };
    Some(Visual::new(s, color).with_local(local))
}

/// Build the scene bodies of a cell, with colours for objects and bins given by the caller
/// (so domain randomization can shade them), and the pose source of each body.
pub fn scene_bodies(
    cell: &Cell,
    table_rgb: [f32; 3],
    object_rgb: &[[f32; 3]],
    bin_rgb: &[[f32; 3]],
) -> (Vec<Body>, Vec<PoseSource>) {
    let mut bodies = Vec::new();
    let mut sources = Vec::new();
    let rgba = |c: [f32; 3]| [c[0], c[1], c[2], 1.0];
    // Table (static collider, no parent).
    if let Some(c) = cell.world.colliders.get(cell.table) {
        let pose = core_pose(&iso_from_pose(c.position()));
        if let Some(v) = collider_visual(c, rgba(table_rgb), vla_core::Pose::IDENTITY) {
            bodies.push(Body {
                visuals: vec![v],
                pose,
            });
            sources.push(PoseSource::Fixed(pose));
        }
    }
    for (i, r) in cell.receptacles.iter().enumerate() {
        let color = rgba(bin_rgb.get(i).copied().unwrap_or(r.spec.rgb));
        let mut visuals = Vec::new();
        for h in &r.colliders {
            if let Some(c) = cell.world.colliders.get(*h) {
                let local = core_pose(&iso_from_pose(c.position()));
                visuals.extend(collider_visual(c, color, local));
            }
        }
        bodies.push(Body {
            visuals,
            pose: vla_core::Pose::IDENTITY,
        });
        sources.push(PoseSource::Fixed(vla_core::Pose::IDENTITY));
    }
    for (i, (_, handle)) in cell.robot.links.iter().enumerate() {
        let Some(body) = cell.world.bodies.get(*handle) else {
            continue;
        };
        let color = cell
            .robot
            .link_colors
            .get(i)
            .copied()
            .unwrap_or([0.7, 0.7, 0.7, 1.0]);
        let visuals = body
            .colliders()
            .iter()
            .filter_map(|h| cell.world.colliders.get(*h))
            .filter_map(|c| {
                let local = c
                    .position_wrt_parent()
                    .map(|p| core_pose(&iso_from_pose(p)))
                    .unwrap_or_default();
                collider_visual(c, color, local)
            })
            .collect();
        bodies.push(Body {
            visuals,
            pose: core_pose(&iso_from_pose(body.position())),
        });
        sources.push(PoseSource::Body(*handle));
    }
    for (i, o) in cell.objects.iter().enumerate() {
        let color = rgba(object_rgb.get(i).copied().unwrap_or(o.spec.rgb));
        let Some(c) = cell.world.colliders.get(o.collider) else {
            continue;
        };
        let local = c
            .position_wrt_parent()
            .map(|p| core_pose(&iso_from_pose(p)))
            .unwrap_or_default();
        let visuals = collider_visual(c, color, local).into_iter().collect();
        let pose = cell
            .body_pose(o.body)
            .map(|p| core_pose(&p))
            .unwrap_or_default();
        bodies.push(Body { visuals, pose });
        sources.push(PoseSource::Body(o.body));
    }
    (bodies, sources)
}

/// Current poses for the bodies returned by [`scene_bodies`].
pub fn scene_poses(cell: &Cell, sources: &[PoseSource]) -> Vec<vla_core::Pose> {
    sources
        .iter()
        .map(|s| match s {
            PoseSource::Fixed(p) => *p,
            PoseSource::Body(h) => cell
                .body_pose(*h)
                .map(|p| core_pose(&p))
                .unwrap_or_default(),
        })
        .collect()
}

/// Camera placement, in the base frame.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CameraConfig {
    pub front_eye: [f32; 3],
    pub front_target: [f32; 3],
    pub front_fov_deg: f32,
    /// Wrist camera in the tool frame (tool Z points out of the gripper).
    pub wrist_eye: [f32; 3],
    pub wrist_target: [f32; 3],
    pub wrist_fov_deg: f32,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            front_eye: [1.12, 0.0, 0.62],
            front_target: [0.42, 0.0, 0.0],
            front_fov_deg: 45.0,
            wrist_eye: [0.09, 0.0, -0.08],
            wrist_target: [0.0, 0.0, 0.10],
            wrist_fov_deg: 75.0,
        }
    }
}

impl CameraConfig {
    pub fn front(&self, jitter: [f32; 3]) -> CameraView {
        let eye = [
            self.front_eye[0] + jitter[0],
            self.front_eye[1] + jitter[1],
            self.front_eye[2] + jitter[2],
        ];
        CameraView::look_at(eye, self.front_target, self.front_fov_deg)
    }

    /// The wrist camera follows the measured tool pose.
    pub fn wrist(&self, cell: &Cell) -> CameraView {
        let tcp = cell.tcp_pose();
        let p = |v: [f32; 3]| {
            let w = tcp * nalgebra::Point3::new(v[0] as f64, v[1] as f64, v[2] as f64);
            [w.x as f32, w.y as f32, w.z as f32]
        };
        let up = tcp.rotation * nalgebra::Vector3::x();
        CameraView {
            eye: p(self.wrist_eye),
            target: p(self.wrist_target),
            up: [-up.x as f32, -up.y as f32, -up.z as f32],
            fov_y_deg: self.wrist_fov_deg,
        }
    }
}

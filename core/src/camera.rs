//! Pinhole cameras as the renderer uses them, and projection of world points into their
//! images (for supervision that needs to know where a known object appears).

use serde::{Deserialize, Serialize};

/// A pinhole camera in the world frame (Z-up, metres), given as look-at so that both fixed
/// cameras and wrist cameras (computed from the gripper pose) are easy to express.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraView {
    /// Optical centre.
    pub eye: [f32; 3],
    /// A point the optical axis passes through.
    pub target: [f32; 3],
    /// Approximate image-up direction (need not be orthogonal to the view direction).
    pub up: [f32; 3],
    /// Vertical field of view in degrees, in (0, 180).
    pub fov_y_deg: f32,
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn normalize(a: [f32; 3]) -> Option<[f32; 3]> {
    let n = dot(a, a).sqrt();
    (n > 1e-9 && n.is_finite()).then(|| [a[0] / n, a[1] / n, a[2] / n])
}

impl CameraView {
    /// Camera at `eye` looking at `target` with world +Z as image up.
    pub fn look_at(eye: [f32; 3], target: [f32; 3], fov_y_deg: f32) -> Self {
        CameraView {
            eye,
            target,
            up: [0.0, 0.0, 1.0],
            fov_y_deg,
        }
    }

    /// A camera fixed to a moving frame, as the wrist camera to the tool: `eye` and `target`
    /// in that frame, whose pose is `position` and roll/pitch/yaw `rpy` (extrinsic X, Y, Z:
    /// the state vector's `ee_*` entries). Image up is the frame's −X axis, as the
    /// simulator mounts its wrist camera.
    pub fn mounted(
        position: [f32; 3],
        rpy: [f32; 3],
        eye: [f32; 3],
        target: [f32; 3],
        fov_y_deg: f32,
    ) -> Self {
        let [r, p, y] = rpy;
        let (sr, cr, sp, cp, sy, cy) = (r.sin(), r.cos(), p.sin(), p.cos(), y.sin(), y.cos());
        // R = Rz(yaw) · Ry(pitch) · Rx(roll), rows.
        let m = [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ];
        let rotate = |v: [f32; 3]| [dot(m[0], v), dot(m[1], v), dot(m[2], v)];
        let place = |v: [f32; 3]| {
            let w = rotate(v);
            [position[0] + w[0], position[1] + w[1], position[2] + w[2]]
        };
        let x = rotate([1.0, 0.0, 0.0]);
        CameraView {
            eye: place(eye),
            target: place(target),
            up: [-x[0], -x[1], -x[2]],
            fov_y_deg,
        }
    }

    /// Where world point `p` appears in a square image: `[x, y]` in `[0, 1]` (x to the
    /// right, y down, (0, 0) the top-left corner of the top-left pixel), or `None` when it
    /// is behind the camera or the view is degenerate. Points outside the field of view
    /// give values outside `[0, 1]`.
    pub fn project(&self, p: [f32; 3]) -> Option<[f32; 2]> {
        let forward = normalize(sub(self.target, self.eye))?;
        let right = normalize(cross(forward, self.up))?;
        let up = cross(right, forward);
        let d = sub(p, self.eye);
        let depth = dot(d, forward);
        if depth <= 1e-6 {
            return None;
        }
        let half = (self.fov_y_deg.to_radians() * 0.5).tan();
        let x = dot(d, right) / (depth * half);
        let y = dot(d, up) / (depth * half);
        Some([(x + 1.0) * 0.5, (1.0 - y) * 0.5])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_puts_the_target_in_the_centre_and_up_at_the_top() {
        let cam = CameraView::look_at([1.0, 0.0, 1.0], [0.0, 0.0, 0.0], 60.0);
        let c = cam.project([0.0, 0.0, 0.0]).unwrap();
        assert!((c[0] - 0.5).abs() < 1e-6 && (c[1] - 0.5).abs() < 1e-6);
        // Higher in the world is higher in the image (smaller y).
        assert!(cam.project([0.0, 0.0, 0.1]).unwrap()[1] < 0.5);
        // Looking along -x with +z up, right = forward × up = +y (as bevy's `looking_to`).
        assert!(cam.project([0.0, 0.1, 0.0]).unwrap()[0] > 0.5);
        // Behind the camera: nothing.
        assert!(cam.project([2.0, 0.0, 2.0]).is_none());
        // The edge of the vertical field of view is the image edge.
        let edge = CameraView::look_at([0.0, 0.0, 1.0], [1.0, 0.0, 1.0], 90.0)
            .project([1.0, 0.0, 2.0])
            .unwrap();
        assert!(edge[1].abs() < 1e-6, "{edge:?}");
    }

    #[test]
    fn a_mounted_camera_follows_its_frame() {
        // Identity pose: the mount points are the world points.
        let cam = CameraView::mounted([0.0; 3], [0.0; 3], [1.0, 2.0, 3.0], [0.0, 0.0, 1.0], 60.0);
        assert_eq!(
            (cam.eye, cam.target, cam.up),
            ([1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0])
        );
        // Yaw by 90°: the frame's X is world Y; then translated.
        let cam = CameraView::mounted(
            [0.5, 0.0, 0.2],
            [0.0, 0.0, std::f32::consts::FRAC_PI_2],
            [0.1, 0.0, 0.0],
            [0.0, 0.0, 0.1],
            60.0,
        );
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(cam.eye, [0.5, 0.1, 0.2]), "{:?}", cam.eye);
        assert!(close(cam.target, [0.5, 0.0, 0.3]), "{:?}", cam.target);
        assert!(close(cam.up, [0.0, -1.0, 0.0]), "{:?}", cam.up);
        // Roll by 180° (tool pointing down): the frame's Z is world −Z.
        let down = CameraView::mounted(
            [0.0; 3],
            [std::f32::consts::PI, 0.0, 0.0],
            [0.0; 3],
            [0.0, 0.0, 1.0],
            60.0,
        );
        assert!(close(down.target, [0.0, 0.0, -1.0]), "{:?}", down.target);
    }
}
